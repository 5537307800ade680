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
import struct

from .. import lean, linux
from ..errors import CommandNotExecutable, CommandNotFound, HakoError
from . import rootfs as rootfs_setup
from . import spec

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

    def recv(self) -> tuple[dict | None, list[int]]:
        """The next message and any descriptors with it; (None, []) at end of file."""
        data, fds = lean.recv_fds(self.sock)
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

    __slots__ = ("pid", "start_time", "console", "channel")

    def __init__(self, pid: int, start_time: int, console: int | None, channel: Channel) -> None:
        self.pid = pid
        self.start_time = start_time
        self.console = console
        self.channel = channel


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
    os.setgroups(list(user.get("additionalGids", [])))
    gid = user.get("gid", 0)
    uid = user.get("uid", 0)
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)


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


DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


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
    for directory in env.get("PATH", DEFAULT_PATH).split(":"):
        try:
            os.execve(os.path.join(directory or ".", name), args, env)
        except (FileNotFoundError, NotADirectoryError):
            continue
        except PermissionError as e:
            denied = denied or e
    if denied is not None:
        raise denied
    raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT))


def _prepare_process(process: dict, stdio: Stdio, channel: Channel) -> None:
    """What every process started in a container does just before exec."""
    os.setsid()
    _attach_stdio(stdio, channel)
    for limit in process.get("rlimits", []):
        name = limit["type"].replace("RLIMIT_", "")
        resource.setrlimit(getattr(resource, "RLIMIT_" + name), (limit["soft"], limit["hard"]))
    _set_user(process.get("user", {}))
    cwd = process.get("cwd", "/")
    try:
        os.chdir(cwd)
    except OSError as e:
        raise HakoError(f"process.cwd {cwd!r}: {e.strerror}") from None
    if process.get("noNewPrivileges"):
        linux.set_no_new_privs()
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


def spawn_init(bundle: str, config: dict, stdio: Stdio, cgroup) -> Spawned:
    """Create the container's namespaces and init; it waits at exec until ``start``.

    ``cgroup`` (a created cgroups.Cgroup, or None) receives the processes.
    On any failure every process made here is killed and reaped before the
    error is raised.
    """
    rootfs = spec.rootfs_path(bundle, config)
    new_flags = 0
    for ns in spec.namespaces(config):
        if not ns.get("path"):
            new_flags |= linux.NAMESPACES[ns["type"]][0]
    join_fds = _open_join_fds(config)
    hostname = config.get("hostname")

    def init_body(channel: Channel) -> None:
        if new_flags & linux.CLONE_NEWNS:
            rootfs_setup.enter_rootfs(bundle, config, rootfs)
        else:
            os.chroot(rootfs)
            os.chdir("/")
        if hostname and new_flags & linux.CLONE_NEWUTS:
            _socket.sethostname(hostname)
        if new_flags & linux.CLONE_NEWNET:
            linux.set_link_up("lo")
        _prepare_process(config["process"], stdio, channel)
        channel.send({"ready": True})
        message, _ = channel.recv()
        if not message or not message.get("start"):
            os._exit(1)
        _exec(config["process"], channel)

    def middle_setup() -> None:
        _join(join_fds)
        if new_flags:
            linux.unshare(new_flags)

    terminal = bool(config["process"].get("terminal"))
    return _spawn(config, new_flags, middle_setup, init_body, cgroup, terminal, wait_ready=True)


def spawn_exec(pid: int, config: dict, process: dict, stdio: Stdio, cgroup) -> Spawned:
    """Start ``process`` (an OCI process object) inside the namespaces of container init ``pid``."""
    join_fds = {}
    for kind in _JOIN_ORDER:
        proc_name = linux.NAMESPACES[kind][1]
        try:
            join_fds[kind] = os.open(f"/proc/{pid}/ns/{proc_name}", os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            for fd in join_fds.values():
                os.close(fd)
            raise HakoError(f"container process {pid} is not running") from None

    def exec_body(channel: Channel) -> None:
        _prepare_process(process, stdio, channel)
        _exec(process, channel)

    terminal = bool(process.get("terminal"))
    return _spawn(config, 0, lambda: _join(join_fds), exec_body, cgroup, terminal, wait_ready=False)


def _spawn(config, new_flags, middle_setup, final_body, cgroup, terminal: bool, wait_ready: bool) -> Spawned:
    linux.set_child_subreaper()
    parent_end, child_end = Channel.pair()
    middle = os.fork()
    if middle == 0:
        parent_end.close()

        def middle_body() -> None:
            linux.set_parent_death_signal(signal.SIGKILL)
            message, _ = child_end.recv()
            if not message or not message.get("go"):
                os._exit(1)
            middle_setup()
            if new_flags & linux.CLONE_NEWUSER:
                child_end.send({"userns": True})
                child_end.expect("mapped")
                os.setresgid(0, 0, 0)
                os.setresuid(0, 0, 0)
                os.setgroups([])
            final = os.fork()
            if final == 0:
                _child_main(child_end, lambda: final_body(child_end))
            child_end.send({"pid": final})

        _child_main(child_end, middle_body)

    child_end.close()
    final_pid = None
    try:
        if cgroup is not None:
            cgroup.add_process(middle)
        parent_end.send({"go": True})
        message = parent_end.expect("pid") if not new_flags & linux.CLONE_NEWUSER else None
        if message is None:
            parent_end.expect("userns")
            _write_id_maps(middle, config)
            parent_end.send({"mapped": True})
            message = parent_end.expect("pid")
        final_pid = message["pid"]
        _reap(middle)
        middle = None
        console = None
        start_time = linux.process_start_time(final_pid)
        if terminal:
            message, fds = parent_end.recv()
            if message is None or "console" not in message:
                raise_child_error(message or {})
                raise HakoError("container setup ended before its terminal was made")
            console = fds[0]
        if wait_ready:
            parent_end.expect("ready")
        return Spawned(final_pid, start_time or 0, console, parent_end)
    except BaseException:
        for pid in (middle, final_pid):
            if pid:
                kill_and_reap(pid)
        parent_end.close()
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
        raise
    finally:
        spawned.channel.close()


def exit_code(status: int) -> int:
    """A wait status as a shell would report it: the code, or 128 + the signal."""
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)
