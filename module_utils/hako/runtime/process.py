"""Making the container's processes: namespaces, the double fork, and exec.

A container (or an exec into one) is started in three steps, each its own
process, because a process cannot move itself into a new PID namespace:

    parent  -- creates the cgroup, forks the middle process, writes the
               user namespace's ID maps, and reaps what it made
    middle  -- joins existing namespaces (setns), unshares the new ones,
               forks the init and exits at once
    init    -- the first process inside every namespace (PID 1 of a new
               PID namespace): builds the root filesystem, then executes
               the user's command

The children run after the root has changed, where the host's Python
library is out of reach: every module they use is imported at the top.

The parent is a child subreaper, so the init is reparented to it when the
middle process exits, and the parent is the one that collects its exit
status. Parent and children talk over a SOCK_SEQPACKET socket pair: JSON
messages, file descriptors (a terminal's master side) alongside. The
children's end is close-on-exec, so end of file after the last message means
the command was executed; an error is sent as a message before exiting.
"""

from __future__ import annotations

import _signal as signal  # the C module: `signal` imports enum (see lean.py)
import _socket
import errno
import fcntl
import os
import resource
import stat
import struct

from .. import lean, linux
from ..errors import CommandNotExecutable, CommandNotFound, HakoError, InvalidValue
from . import rootfs as rootfs_setup
from . import spec

# The longest a parent waits for one message from a child during a start.
SETUP_TIMEOUT = 30.0

# Load the C library now: the children use it after they have changed root.
linux.libc()

# nsenter's order: the user namespace first (it grants the capabilities the
# other setns calls need), the mount namespace late (it changes the root).
_JOIN_ORDER = ("user", "cgroup", "ipc", "uts", "network", "pid", "mount")


class Channel:
    """One end of the parent/child socket pair."""

    def __init__(self, sock) -> None:
        self.sock = sock

    @classmethod
    def pair(cls) -> tuple[Channel, Channel]:
        a, b = lean.socketpair()
        return cls(a), cls(b)

    def send(self, message: dict, fds: tuple[int, ...] = ()) -> None:
        lean.send_fds(self.sock, lean.dumps(message).encode(), fds)

    def recv(self, size: int = 65536) -> tuple[dict | None, list[int]]:
        """The next message and any descriptors with it; (None, []) at end of file."""
        try:
            data, fds = lean.recv_fds(self.sock, size)
        except _socket.timeout:
            raise HakoError(f"container setup did not answer within {SETUP_TIMEOUT:g} s") from None
        if not data:
            return None, fds
        return lean.loads(data), fds

    def expect(self, key: str) -> dict:
        """Receive a message that must carry ``key``; a child's error becomes an exception."""
        message, _fds = self.recv()
        if message is None:
            raise HakoError(f"container setup ended unexpectedly (waiting for {key})")
        raise_child_error(message)
        if key not in message:
            raise HakoError(f"container setup: unexpected message {message!r}")
        return message

    def close(self) -> None:
        self.sock.close()

    def bound(self) -> Channel:
        """Limit how long the parent waits for any one message: a stuck child must not stall it."""
        self.sock.settimeout(SETUP_TIMEOUT)
        return self


def raise_child_error(message: dict) -> None:
    if "error" not in message:
        return
    err = message.get("errno")
    if message.get("stage") == "exec":
        if err == errno.ENOENT:
            raise CommandNotFound(message["error"])
        if err in (errno.EACCES, errno.ENOEXEC, errno.EISDIR, errno.EPERM):
            raise CommandNotExecutable(message["error"])
    raise HakoError(message["error"])


class Stdio:
    """What the process's standard streams are connected to.

    With ``terminal`` set, a new pseudo-terminal is made inside the
    container and its master side is handed back; the descriptors are then
    unused. (Plain classes here: importing dataclasses costs more than
    starting a container.)
    """

    __slots__ = ("stdin", "stdout", "stderr", "terminal")

    def __init__(
        self,
        stdin: int | None = None,
        stdout: int | None = None,
        stderr: int | None = None,
        terminal: bool = False,
    ) -> None:
        self.stdin = stdin
        self.stdout = stdout
        self.stderr = stderr
        self.terminal = terminal


class Spawned:
    """A process made inside a container, as its parent sees it."""

    __slots__ = ("pid", "start_time", "console", "channel", "reaped")

    def __init__(self, pid: int, start_time: int, console: int | None, channel: Channel) -> None:
        self.pid = pid
        self.start_time = start_time
        self.console = console
        self.channel = channel
        self.reaped = False

    def abort(self) -> None:
        """Undo a start that failed half-way: the process, its terminal, the channel."""
        if not self.reaped:
            kill_and_reap(self.pid)
            self.reaped = True
        if self.console is not None:
            os.close(self.console)
            self.console = None
        self.channel.close()


def _child_main(channel: Channel, body) -> None:
    """Run ``body`` in a forked child; report any failure to the parent; never return."""
    code = 1
    try:
        body()
        code = 0
    except BaseException as e:  # noqa: BLE001 - everything must reach the parent
        try:
            stage = getattr(e, "hako_stage", "setup")
            message = {"error": _describe(e), "stage": stage}
            if isinstance(e, OSError):
                message["errno"] = e.errno
            channel.send(message)
        except OSError:
            pass
    finally:
        os._exit(code)


def _describe(e: BaseException) -> str:
    if isinstance(e, OSError) and e.strerror:
        return f"{e.strerror}: {e.filename!r}" if e.filename else e.strerror
    return str(e) or type(e).__name__


def _write_id_maps(pid: int, config: dict) -> None:
    linux_conf = config.get("linux", {})
    for kind, key in (("uid", "uidMappings"), ("gid", "gidMappings")):
        lines = "".join(f"{m['containerID']} {m['hostID']} {m['size']}\n" for m in linux_conf.get(key, []))
        if not lines:
            raise HakoError(f"linux.{key} is required with a new user namespace")
        with open(f"/proc/{pid}/{kind}_map", "w") as f:
            f.write(lines)


def _reset_signals() -> None:
    # Python ignores SIGPIPE and SIGXFSZ; exec keeps ignored signals ignored.
    for sig in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT, signal.SIGTERM, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, set())


def _open_console(channel: Channel) -> int:
    """Make a pseudo-terminal in the container's devpts; send the master to the parent."""
    master = os.open("/dev/ptmx", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    _unlockpt(master)
    slave_name = _ptsname(master)
    slave = os.open(slave_name, os.O_RDWR | os.O_NOCTTY)
    channel.send({"console": slave_name}, (master,))
    os.close(master)
    return slave


def _unlockpt(fd: int) -> None:
    TIOCSPTLCK = 0x40045431
    fcntl.ioctl(fd, TIOCSPTLCK, struct.pack("i", 0))


def _ptsname(fd: int) -> str:
    TIOCGPTN = 0x80045430
    number = struct.unpack("i", fcntl.ioctl(fd, TIOCGPTN, b"\0\0\0\0"))[0]
    return f"/dev/pts/{number}"


def _attach_stdio(stdio: Stdio, channel: Channel) -> None:
    if stdio.terminal:
        slave = _open_console(channel)
        fcntl.ioctl(slave, linux.TIOCSCTTY, 0)
        fds = (slave, slave, slave)
    else:
        null = None
        fds = []
        for fd in (stdio.stdin, stdio.stdout, stdio.stderr):
            if fd is None:
                if null is None:
                    null = os.open("/dev/null", os.O_RDWR)
                fd = null
            fds.append(fd)
    # dup2 each to a fresh number first, so that descriptors already at 0-2
    # are not overwritten before they are copied.
    copies = [os.dup(fd) for fd in fds]
    for target, fd in enumerate(copies):
        os.dup2(fd, target, inheritable=True)
        os.close(fd)


def _set_user(user: dict) -> None:
    """Become process.user; names ("username", "groupname", "additionalGroups") are looked up inside.

    A user given by name also gets the groups the container's /etc/group
    lists it in, as at a login.
    """
    uid = user.get("uid", 0)
    gid = user.get("gid", 0)
    groups = list(user.get("additionalGids", []))
    if user.get("username"):
        name = user["username"]
        entry = _account("passwd", name)
        uid, gid = _number(entry, 2, "user", name), _number(entry, 3, "user", name)
        groups += [_number(fields, 2, "group", fields[0]) for fields in _member_of(name)]
    if user.get("groupname"):
        gid = _number(_account("group", user["groupname"]), 2, "group", user["groupname"])
    for name in user.get("additionalGroups", []):
        groups.append(_number(_account("group", name, "group-add"), 2, "group-add", name))
    os.setgroups(sorted(set(groups)))
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)


def _default_home(process: dict) -> None:
    """Set HOME, when the config does not, to the user's home in the container's /etc/passwd ("/" if none).

    As runc and Docker do, for run and exec alike: shells expand ``~`` with
    it, and tools that keep files under it (Ansible's remote temporary
    directory among them) need it. Read before a late seccomp filter.
    """
    env = process.setdefault("env", [])
    if any(entry.startswith("HOME=") for entry in env):
        return
    home, uid = "/", str(os.getuid())
    try:
        entries = _entries("passwd", uid, "user")
    except InvalidValue:
        entries = []
    for fields in entries:
        if len(fields) > 5 and fields[2] == uid and fields[5]:
            home = fields[5]
            break
    env.append(f"HOME={home}")


def _member_of(name: str) -> list[list[str]]:
    """The container's /etc/group lines that list ``name`` as a member (none if it has no such file)."""
    try:
        lines = _entries("group", name, "user")
    except InvalidValue:
        return []
    return [fields for fields in lines if len(fields) > 3 and name in fields[3].split(",")]


def _account(filename: str, name: str, field: str = "") -> list[str]:
    """The line of the container's /etc/passwd or /etc/group for ``name`` (``field`` names it in errors)."""
    kind = "user" if filename == "passwd" else "group"
    for fields in _entries(filename, name, field or kind):
        if fields[0] == name:
            return fields
    raise InvalidValue(field or kind, name, f"no such {kind} in the container's /etc/{filename}")


def _entries(filename: str, name: str, field: str) -> list[list[str]]:
    """The lines of the container's /etc/passwd or /etc/group, split in fields.

    This runs inside the container, after its root changed: the file is the
    container's own, and whatever it holds can only fail this one start.
    It must be a regular file (a FIFO would block the start). ``name`` is
    the one looked for and ``field`` the option that named it, for the error.
    """
    try:
        fd = os.open(f"/etc/{filename}", os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        why = f"cannot read the container's /etc/{filename}: {e.strerror}"
        raise InvalidValue(field, name, why) from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise InvalidValue(field, name, f"the container's /etc/{filename} is not a regular file")
        data = os.read(fd, 1 << 20)
    finally:
        os.close(fd)
    return [line.split(":") for line in data.decode(errors="replace").splitlines()]


def _number(fields: list[str], index: int, field: str, name: str) -> int:
    try:
        return int(fields[index])
    except (IndexError, ValueError):
        raise InvalidValue(field, name, "its entry has no valid number") from None


def _exec(process: dict, channel: Channel) -> None:
    """Close what the command must not inherit and execute it."""
    keep = channel.sock.fileno()
    os.closerange(3, keep)
    os.closerange(keep + 1, 65536)
    env = dict(e.split("=", 1) for e in process.get("env", []) if "=" in e)
    args = process["args"]
    try:
        _execvpe(args[0], args, env)
    except OSError as e:
        e.hako_stage = "exec"
        e.filename = None
        if e.errno == errno.ENOENT:
            e.strerror = f"exec: {args[0]!r}: executable file not found in $PATH"
        else:
            e.strerror = f"exec: {args[0]!r}: {e.strerror}"
        raise


def _execvpe(name: str, args: list[str], env: dict[str, str]) -> None:
    """execvpe with the container's PATH.

    os.execvpe would import the warnings module, which the container's root
    does not have. The rules are the shell's: a name with a slash is run as
    is; otherwise each PATH entry is tried, and a permission error found on
    the way is reported if nothing runs.
    """
    if "/" in name:
        os.execve(name, args, env)
    denied = None
    for directory in env.get("PATH", spec.DEFAULT_PATH).split(":"):
        try:
            os.execve(os.path.join(directory or ".", name), args, env)
        except (FileNotFoundError, NotADirectoryError):
            continue
        except PermissionError as e:
            denied = denied or e
    if denied is not None:
        raise denied
    raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT))


def _prepare_process(
    process: dict, stdio: Stdio, channel: Channel, make_cwd: bool = False, seccomp: bytes = b""
) -> None:
    """What every process started in a container does just before exec.

    The order is the one privileges allow: the bounding set is cut while
    CAP_SETPCAP is still held; the user is changed keeping the permitted
    set, then the sets are made what the config says; no_new_privs; the
    seccomp filter last, so it needs to allow only what follows it (signal
    resets, the parent's messages, execve). Without no_new_privs the kernel
    takes a filter only from a holder of CAP_SYS_ADMIN: then it goes first.
    """
    os.setsid()
    _attach_stdio(stdio, channel)
    for limit in process.get("rlimits", []):
        name = limit["type"].replace("RLIMIT_", "")
        resource.setrlimit(getattr(resource, "RLIMIT_" + name), (limit["soft"], limit["hard"]))
    capabilities = process.get("capabilities")
    no_new_privileges = bool(process.get("noNewPrivileges"))
    if capabilities is not None:
        linux.drop_bounding_except(capabilities.get("bounding", []))
    if seccomp and not no_new_privileges:
        linux.load_seccomp(seccomp)
    cwd = process.get("cwd", "/")
    try:
        if make_cwd and not os.path.isdir(cwd):
            # As Docker does for `run -w`: a missing working directory is
            # made (by root, before the process becomes its user).
            os.makedirs(cwd, 0o755)
        if capabilities is not None:
            linux.keep_capabilities(True)
        _set_user(process.get("user", {}))
        os.chdir(cwd)
    except OSError as e:
        raise InvalidValue("workdir", cwd, e.strerror) from None
    _default_home(process)
    if capabilities is not None:
        linux.keep_capabilities(False)
        effective = capabilities.get("effective", [])
        permitted = capabilities.get("permitted", [])
        inheritable = capabilities.get("inheritable", [])
        ambient = capabilities.get("ambient", [])
        if os.getuid() != 0:
            # A user other than root holds only its ambient capabilities: with
            # the config's sets held up to exec, a file capability binary run
            # as the command would keep them, no_new_privs notwithstanding
            # (it caps the new set at the old permitted one).
            effective = permitted = [n for n in permitted if n in ambient]
            inheritable = [n for n in inheritable if n in ambient]
        linux.set_capabilities(effective, permitted, inheritable, ambient)
    if no_new_privileges:
        linux.set_no_new_privs()
        if seccomp:
            linux.load_seccomp(seccomp)
    _reset_signals()


def _open_join_fds(config: dict) -> dict[str, int]:
    """Open the namespaces to join by path now, before any of them changes our view."""
    fds = {}
    for ns in spec.namespaces(config):
        if ns.get("path"):
            kind = ns["type"]
            try:
                fds[kind] = os.open(ns["path"], os.O_RDONLY | os.O_CLOEXEC)
            except OSError as e:
                raise HakoError(f"namespace {kind} path {ns['path']!r}: {e.strerror}") from None
    return fds


def _join(fds: dict[str, int]) -> None:
    for kind in _JOIN_ORDER:
        fd = fds.get(kind)
        if fd is None:
            continue
        flag, proc_name = linux.NAMESPACES[kind]
        # Joining the namespace one is already in is a no-op for most kinds
        # but an error for user namespaces: skip it.
        if os.fstat(fd).st_ino != os.stat(f"/proc/self/ns/{proc_name}").st_ino:
            linux.setns(fd, flag)
        os.close(fd)


def _new_flags(config: dict) -> int:
    flags = 0
    for ns in spec.namespaces(config):
        if not ns.get("path"):
            flags |= linux.NAMESPACES[ns["type"]][0]
    return flags


def _open_process_namespaces(pid: int, start_time: int | None = None) -> dict[str, int]:
    """Open every namespace of process ``pid``, to join them.

    With ``start_time``, the process must still be the one that started
    then once they are open: a pid reused meanwhile is refused.
    """
    fds = {}
    for kind in _JOIN_ORDER:
        try:
            fds[kind] = os.open(f"/proc/{pid}/ns/{linux.NAMESPACES[kind][1]}", os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            break
    else:
        if start_time is None or linux.process_start_time(pid) == start_time:
            return fds
    for fd in fds.values():
        os.close(fd)
    raise HakoError(f"container process {pid} is not running")


# The namespaces of a default container (all private but the user namespace):
# a spare can make them ahead of time.
DEFAULT_FLAGS = (
    linux.CLONE_NEWNS
    | linux.CLONE_NEWUTS
    | linux.CLONE_NEWIPC
    | linux.CLONE_NEWNET
    | linux.CLONE_NEWPID
    | linux.CLONE_NEWCGROUP
)


class Middle:
    """A forked middle process, waiting for the job that says what to start.

    Forking it ahead of time, into a cgroup made ahead of time, takes the
    slowest step of a start off its path: on cgroup v1 moving a process into
    a cgroup waits for an RCU grace period (5-15 ms here), and the middle
    process moves itself while its parent goes on. A *prepared* one goes
    further: it also makes the default namespaces and forks the container's
    init, which then waits for the job itself (``pid`` becomes the init's).
    """

    __slots__ = ("pid", "channel", "cgroup", "placed", "prepared")

    def __init__(self, pid: int, channel: Channel, cgroup) -> None:
        self.pid = pid
        self.channel = channel
        self.cgroup = cgroup
        self.placed = False
        self.prepared = 0  # the namespaces made ahead, once placed

    def wait_placed(self) -> None:
        """Block until the process is in its cgroup (and, if prepared, the init is waiting)."""
        if not self.placed:
            message = self.channel.expect("placed")
            self.placed = True
            if message.get("prepared"):
                # The middle has exited; the init is reparented to us.
                _reap(self.pid)
                self.pid = message["pid"]
                self.prepared = message["prepared"]

    def fits(self, config: dict) -> bool:
        """Whether a prepared middle's namespaces are the ones ``config`` wants."""
        return not any(ns.get("path") for ns in spec.namespaces(config)) and (
            _new_flags(config) == self.prepared
        )

    def discard(self, remove_cgroup: bool = True) -> None:
        """Kill what waits (once) and, by default, remove its cgroup."""
        self.channel.close()
        if self.pid is not None:
            kill_and_reap(self.pid)
            self.pid = None
        if remove_cgroup and self.cgroup is not None:
            self.cgroup.remove()
            self.cgroup = None


def fork_middle(cgroup=None, prepare: int = 0, stage: dict | None = None) -> Middle:
    """Fork a middle process that moves itself into ``cgroup`` (if given) and waits for a job.

    With ``prepare`` (namespace flags, DEFAULT_FLAGS), it makes those
    namespaces and the container's init ahead as well; with ``stage``
    ({"staging": directory, "plan": default mounts}, see rootfs.stage_mounts)
    the init also mounts a default container's /proc, /dev and /sys ahead.
    """
    linux.set_child_subreaper()
    parent_end, child_end = Channel.pair()
    pid = os.fork()
    if pid == 0:
        parent_end.close()
        _child_main(child_end, lambda: _middle_main(child_end, cgroup, prepare, stage))
    child_end.close()
    return Middle(pid, parent_end.bound(), cgroup)


def _middle_main(channel: Channel, cgroup, prepare: int = 0, stage: dict | None = None) -> None:
    linux.set_parent_death_signal(signal.SIGKILL)
    linux.set_process_name("hako-middle")
    if cgroup is not None:
        cgroup.add_process(os.getpid())
    if prepare:
        linux.unshare(prepare)
        init = os.fork()
        if init == 0:
            _child_main(channel, lambda: _prepared_init_main(channel, prepare, stage))
        channel.send({"placed": True, "prepared": prepare, "pid": init})
        return
    channel.send({"placed": True})
    job, fds = channel.recv(_JOB_SIZE)
    if not job or not job.get("go"):
        os._exit(0)
    stdio = _stdio_from_job(job["stdio"], fds)
    if job["kind"] == "init":
        config = job["config"]
        new_flags = _new_flags(config)
        _join(_open_join_fds(config))
        premounted = bool(new_flags & linux.CLONE_NEWUSER and new_flags & linux.CLONE_NEWNS)
        if premounted:
            _mount_root_as_host(job["bundle"], config)

        def body() -> None:
            seccomp = bytes.fromhex(job.get("seccomp", ""))
            _init_main(
                job["bundle"], config, new_flags, stdio, channel, premounted=premounted, seccomp=seccomp
            )

    else:
        new_flags = 0
        # Not to be ptraced by the container's processes while it enters
        # their namespaces with more than they hold (as runc does); execve
        # makes the command dumpable again.
        linux.prctl(linux.PR_SET_DUMPABLE, 0)
        _join(_open_process_namespaces(job["pid"], job.get("start_time")))

        def body() -> None:
            _prepare_process(job["process"], stdio, channel, seccomp=bytes.fromhex(job.get("seccomp", "")))
            _exec(job["process"], channel)

    if new_flags:
        linux.unshare(new_flags)
    if new_flags & linux.CLONE_NEWUSER:
        channel.send({"userns": True})
        channel.expect("mapped")
        os.setresgid(0, 0, 0)
        os.setresuid(0, 0, 0)
        os.setgroups([])
    final = os.fork()
    if final == 0:
        _child_main(channel, body)
    channel.send({"pid": final})


def _mount_root_as_host(bundle: str, config: dict) -> None:
    """Mount the root filesystem and the volumes before entering a new user namespace.

    overlayfs records deletions and opaque directories in trusted.* extended
    attributes, which only the host's root may write: an overlay mounted from
    inside the user namespace cannot delete a file of a lower layer. Mounted
    here (in a mount namespace of the host's user namespace), it acts with the
    host root's credentials; the container's own mount namespace, made with
    its user namespace, gets a copy of it.
    """
    linux.unshare(linux.CLONE_NEWNS)
    linux.mount(None, "/", None, linux.MS_REC | linux.MS_PRIVATE)
    rootfs = spec.rootfs_path(bundle, config)
    rootfs_setup.mount_root(bundle, config, rootfs)
    rootfs_setup.premount_binds(rootfs, config)


def _prepared_init_main(channel: Channel, flags: int, stage: dict | None) -> None:
    """A container's init made ahead, in its namespaces: wait for the job, then set up."""
    linux.set_process_name("hako-spare")
    staged = None
    if stage is not None:
        try:
            rootfs_setup.stage_mounts(stage["staging"], stage["plan"])
            staged = (stage["staging"], stage["plan"])
        except OSError:
            staged = None  # the job then mounts everything itself
    job, fds = channel.recv(_JOB_SIZE)
    if not job or not job.get("go"):
        os._exit(0)
    config = job["config"]
    if staged is not None and not rootfs_setup.fits_staged(config, staged[1]):
        staged = None
    stdio = _stdio_from_job(job["stdio"], fds)
    seccomp = bytes.fromhex(job.get("seccomp", ""))
    _init_main(job["bundle"], config, flags, stdio, channel, staged, seccomp=seccomp)


def _init_main(
    bundle: str,
    config: dict,
    new_flags: int,
    stdio: Stdio,
    channel: Channel,
    staged: tuple | None = None,
    premounted: bool = False,
    seccomp: bytes = b"",
) -> None:
    """The container's first process: root filesystem, host name, loopback, then wait for start."""
    rootfs = spec.rootfs_path(bundle, config)
    if new_flags & linux.CLONE_NEWNS:
        rootfs_setup.enter_rootfs(bundle, config, rootfs, staged, premounted)
    else:
        os.chroot(rootfs)
        os.chdir("/")
    hostname = config.get("hostname")
    if hostname and new_flags & linux.CLONE_NEWUTS:
        _socket.sethostname(hostname)
    if new_flags & linux.CLONE_NEWNET:
        linux.set_link_up("lo")
    _prepare_process(config["process"], stdio, channel, make_cwd=True, seccomp=seccomp)
    channel.send({"ready": True})
    message, _ = channel.recv()
    if not message or not message.get("start"):
        os._exit(1)
    _exec(config["process"], channel)


# A job carries the whole config.json.
_JOB_SIZE = 1 << 20


def _stdio_job(stdio: Stdio) -> tuple[dict, list[int]]:
    """Stdio as a job field plus the descriptors that travel with it."""
    fds: list[int] = []
    slots = []
    for fd in (stdio.stdin, stdio.stdout, stdio.stderr):
        if fd is None:
            slots.append(None)
        else:
            if fd not in fds:
                fds.append(fd)
            slots.append(fds.index(fd))
    return {"terminal": stdio.terminal, "slots": slots}, fds


def _stdio_from_job(field: dict, fds: list[int]) -> Stdio:
    slots = [None if i is None else fds[i] for i in field["slots"]]
    return Stdio(slots[0], slots[1], slots[2], field["terminal"])


def spawn_init(bundle: str, config: dict, stdio: Stdio, cgroup, middle: Middle | None = None) -> Spawned:
    """Create the container's namespaces and init; it waits at exec until ``start``.

    ``cgroup`` (a created cgroups.Cgroup, or None) receives the processes;
    ``middle``, if given, is a middle process already placed in it. On any
    failure every process made here is killed and reaped before the error is
    raised.
    """
    job = {"kind": "init", "bundle": bundle, "config": config, "seccomp": _seccomp_job(config)}
    userns = bool(_new_flags(config) & linux.CLONE_NEWUSER)
    terminal = bool(config["process"].get("terminal"))
    return _run_job(middle or fork_middle(cgroup), job, stdio, config, userns, terminal, wait_ready=True)


def spawn_exec(
    pid: int,
    config: dict,
    process: dict,
    stdio: Stdio,
    cgroup,
    start_time: int | None = None,
    seccomp: dict | None = None,
) -> Spawned:
    """Start ``process`` (an OCI process object) inside the namespaces of container init ``pid``.

    ``seccomp`` (OCI linux.seccomp) is the exec's filter; by default the container's.
    """
    if seccomp is None:
        seccomp = config.get("linux", {}).get("seccomp")
    job = {"kind": "exec", "pid": pid, "start_time": start_time, "process": process}
    job["seccomp"] = _seccomp_job({"linux": {"seccomp": seccomp}})
    terminal = bool(process.get("terminal"))
    return _run_job(fork_middle(cgroup), job, stdio, config, False, terminal, wait_ready=False)


def _seccomp_job(config: dict) -> str:
    """The job field of a config's seccomp filter: the compiled program, in hex ("" for none)."""
    wanted = config.get("linux", {}).get("seccomp")
    if not wanted:
        return ""
    from . import seccomp

    return seccomp.program(wanted).hex()


def _run_job(
    middle: Middle, job: dict, stdio: Stdio, config: dict, userns: bool, terminal: bool, wait_ready: bool
) -> Spawned:
    """Hand ``middle`` its job and follow the start; from here on this owns its processes."""
    channel = middle.channel
    final_pid = None
    early = None
    ready = False
    middle.wait_placed()
    middle_pid, middle.pid = middle.pid, None
    try:
        job["stdio"], fds = _stdio_job(stdio)
        if middle.prepared:
            if not middle.fits(config) or job["kind"] != "init":
                raise HakoError("internal: a prepared process cannot run this job")
            final_pid, middle_pid = middle_pid, None
            channel.send({"go": True, **job}, tuple(fds))
        else:
            channel.send({"go": True, **job}, tuple(fds))
            if userns:
                channel.expect("userns")
                _write_id_maps(middle_pid, config)
                channel.send({"mapped": True})
            # The process's own messages (its terminal, then "ready") can
            # overtake the middle's report of its pid: both write to this channel.
            while final_pid is None:
                message, fds = channel.recv()
                if message is not None and early is None and terminal and "console" in message:
                    early = message, fds
                    continue
                if message is not None and not ready and wait_ready and "ready" in message:
                    ready = True
                    continue
                if message is None or "pid" not in message:
                    raise_child_error(message or {})
                    raise HakoError(f"container setup: unexpected message {message!r} (waiting for pid)")
                final_pid = message["pid"]
            _reap(middle_pid)
            middle_pid = None
        console = None
        start_time = linux.process_start_time(final_pid)
        if terminal:
            message, fds = early or channel.recv()
            if message is None or "console" not in message:
                raise_child_error(message or {})
                raise HakoError("container setup ended before its terminal was made")
            console = fds[0]
        if wait_ready and not ready:
            channel.expect("ready")
        return Spawned(final_pid, start_time or 0, console, channel)
    except BaseException:
        for pid in (middle_pid, final_pid):
            if pid:
                kill_and_reap(pid)
        channel.close()
        raise


def _reap(pid: int) -> int:
    while True:
        try:
            _, status = os.waitpid(pid, 0)
            return status
        except ChildProcessError:
            return 0
        except InterruptedError:
            continue


def kill_and_reap(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    _reap(pid)


def start(spawned: Spawned) -> None:
    """Release a container init waiting at exec; raise if its command cannot run."""
    spawned.channel.send({"start": True})
    finish(spawned)


def finish(spawned: Spawned) -> None:
    """Wait until the process has executed its command (end of file) or failed."""
    try:
        message, _ = spawned.channel.recv()
        if message is not None:
            raise_child_error(message)
    except BaseException:
        _reap(spawned.pid)
        spawned.reaped = True
        raise
    finally:
        spawned.channel.close()


exit_code = linux.exit_code
