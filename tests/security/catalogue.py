"""The escape catalogue: what a learner who is root in a default container may try.

Each attempt is a small Python script run inside a container of
debian:bookworm (``python3 -c PROGRAM ARGS``). It makes the raw system call or
file operation and ends by printing one line:

- ``BLOCKED: <errno> (<text>) from <call>`` when the kernel refused it (the
  harness prints this for any ``OSError``), or ``BLOCKED: <reason>`` for a
  refusal that is not an errno (a masked file reads empty, an OOM kill);
- ``SUCCEEDED: <what>`` when the attempt worked;
- ``ABSENT: <what>`` when this kernel has no such thing to attack (no
  /proc/kcore, no /proc/sysrq-trigger), so the attempt says nothing here.

Every script is harmless to the host even where it is not blocked: calls that
would change the host are made with an argument the kernel checks only after
the permission check (``reboot`` with a wrong magic number, ``kexec_load`` with
too many segments, ``adjtimex`` with an out-of-range tick, ``swapon`` of a
missing file), so "got past the permission check" is the escape and nothing
happens; settings are written back with the value they already have; devices
are only read; resource attempts are bounded (200 forks, 256 MiB of memory,
80 MiB of disk).

``admin`` marks the legitimate administration tasks that ``--privileged``
must let succeed (each safe for the host: a tmpfs, its own UTS namespace's
hostname, 512 bytes read from a disk, its own keyrings, a nested PID namespace
for reboot); ``admin_script`` replaces the script there when the blocked
attempt is not itself a safe admin task.

The host side of an attempt (a process of the host to find, a second
learner's container, a read-only volume, a listening socket...) comes in
``ARGS``, made by the runner (runner.py).
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass

# The harness around every script --------------------------------------------------
PRELUDE = r'''
import ctypes, errno, json, os, platform, signal, socket, stat, struct, sys, time

ARGS = json.loads(sys.argv[1])
libc = ctypes.CDLL(None, use_errno=True)
# System call numbers: x86_64, aarch64.
_NR = {
    "ptrace": (101, 117), "syslog": (103, 116), "adjtimex": (159, 171), "settimeofday": (164, 170),
    "mount": (165, 40), "umount2": (166, 39), "swapon": (167, 224), "reboot": (169, 142),
    "init_module": (175, 105), "kexec_load": (246, 104), "add_key": (248, 217), "keyctl": (250, 219),
    "unshare": (272, 97), "perf_event_open": (298, 241), "name_to_handle_at": (303, 264),
    "open_by_handle_at": (304, 265), "finit_module": (313, 273), "bpf": (321, 280),
}
MS_REMOUNT, MS_BIND, MNT_DETACH = 32, 4096, 2
CLONE_NEWUSER, CLONE_NEWPID = 0x10000000, 0x20000000


def _arg(a):
    if a is None:
        return ctypes.c_void_p(None)
    if isinstance(a, int):
        return ctypes.c_long(a)
    return a


def sys_(name, *args, label=None):
    nr = _NR[name][0 if platform.machine() == "x86_64" else 1]
    result = libc.syscall(ctypes.c_long(nr), *[_arg(a) for a in args])
    if result == -1:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e), label or name)
    return result


def step(label, fn, *args):
    """fn(*args), its OSError naming ``label``."""
    try:
        return fn(*args)
    except OSError as e:
        raise OSError(e.errno, e.strerror, label) from None


def succeeded(what):
    print("SUCCEEDED:", what)
    sys.exit(0)


def blocked(what):
    print("BLOCKED:", what)
    sys.exit(0)


def absent(what):
    print("ABSENT:", what)
    sys.exit(0)


def past_permission_check(name, *args, label=None):
    """A call made with a deliberately invalid argument that the kernel checks after the permission."""
    try:
        sys_(name, *args, label=label)
    except OSError as e:
        if e.errno in (errno.EPERM, errno.EACCES, errno.ENOSYS):
            raise
        succeeded(f"{label or name} got past the permission check (the kernel then refused only the"
                  f" deliberately invalid argument: {errno.errorcode[e.errno]})")
    succeeded(f"{label or name} succeeded")


def is_mountpoint(path):
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == path for line in f)


def writable(path):
    return not os.statvfs(path).f_flag & os.ST_RDONLY


def masked_read(path, what):
    """Blocked if ``path`` is covered (masked) or refused; succeeded if it shows the host's ``what``."""
    if not os.path.exists(path):
        absent(f"this kernel has no {path}")
    covered = os.stat(path).st_dev != os.stat("/proc").st_dev
    with open(path, "rb") as f:
        data = f.read(4096)
    if covered and not data:
        blocked(f"masked: {path} is covered by another file and reads 0 bytes")
    succeeded(f"read {len(data)} bytes of {what} from {path}" + ("" if data else " (not masked, empty now)"))


def write_back(path):
    """Write a kernel setting's own value back to it (harmless where it is allowed)."""
    if not os.path.exists(path):
        absent(f"this kernel has no {path}")
    with open(path) as f:
        value = f.read()
    with open(path, "w") as f:
        f.write(value)
    succeeded(f"wrote {path} (its own value, {value.strip()!r}, back)")
'''

HARNESS = r"""
try:
    attempt()
except OSError as e:
    name = errno.errorcode.get(e.errno, str(e.errno))
    print(f"BLOCKED: {name} ({e.strerror}) from {e.filename}")
except Exception as e:
    print(f"ERROR: {type(e).__name__}: {e}")
    sys.exit(3)
"""


def program(script: str) -> str:
    """The full Python program for one attempt's script."""
    return (
        PRELUDE
        + "\n\ndef attempt():\n"
        + textwrap.indent(textwrap.dedent(script).strip(), "    ")
        + "\n"
        + HARNESS
    )


@dataclass(frozen=True)
class Attempt:
    id: str
    title: str
    tries: str  # what it does, in a line
    script: str
    expect: str  # a regular expression the BLOCKED line must match
    options: tuple[str, ...] = ()  # run options; {volume} is the host directory
    needs: tuple[str, ...] = ()  # "other": a second learner's container
    admin: str = ""  # what --privileged must let it do (empty: not an admin task)
    admin_script: str = ""
    absent_ok: bool = False  # the target may not exist on every kernel
    podman_refuses: str = ""  # Podman's error for an option it does not take here (a regular expression)


EPERM = r"^EPERM \(Operation not permitted\)"
EROFS = r"^EROFS \(Read-only file system\)"
ESRCH = r"^ESRCH \(No such process\)"

ATTEMPTS: tuple[Attempt, ...] = (
    # Processes -----------------------------------------------------------------------
    Attempt(
        "see-host-process",
        "See a host process",
        "look through /proc for a process of the host, then signal 0 to its host pid",
        """
        # (reversed in ARGS, so that this script's own command line does not hold it)
        marker = ARGS["sentinel_marker_reversed"][::-1].encode()
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/cmdline", "rb") as f:
                        if marker in f.read():
                            succeeded(f"sees the host's process {ARGS['sentinel_pid']} as /proc/{entry}")
                except OSError:
                    pass
        step(f"kill({ARGS['sentinel_pid']}, 0)", os.kill, ARGS["sentinel_pid"], 0)
        succeeded(f"a process answers to the host pid {ARGS['sentinel_pid']}")
        """,
        ESRCH,
    ),
    Attempt(
        "signal-host-process",
        "Signal a host process",
        "kill(SIGUSR1) to the host pid of a host process",
        """
        step(f"kill({ARGS['sentinel_pid']}, SIGUSR1)", os.kill, ARGS["sentinel_pid"], signal.SIGUSR1)
        succeeded(f"signalled the host's process {ARGS['sentinel_pid']}")
        """,
        ESRCH,
    ),
    Attempt(
        "ptrace-host-process",
        "ptrace a process outside",
        "PTRACE_SEIZE the host pid of a host process",
        """
        PTRACE_SEIZE = 0x4206
        pid = ARGS["sentinel_pid"]
        sys_("ptrace", PTRACE_SEIZE, pid, None, None, label=f"ptrace(SEIZE, {pid})")
        succeeded(f"attached to the host's process {pid} with ptrace")
        """,
        ESRCH,
    ),
    Attempt(
        "signal-other-container",
        "Signal another learner's container",
        "kill(SIGKILL) to the host pid of another container's init",
        """
        step(f"kill({ARGS['other_pid']}, SIGKILL)", os.kill, ARGS["other_pid"], signal.SIGKILL)
        succeeded(f"killed the other container's init (host pid {ARGS['other_pid']})")
        """,
        ESRCH,
        needs=("other",),
    ),
    # Mounts -------------------------------------------------------------------------
    Attempt(
        "mount-tmpfs",
        "Mount anything",
        "mount a tmpfs on /mnt",
        """
        sys_("mount", b"none", b"/mnt", b"tmpfs", 0, b"size=1m", label="mount tmpfs on /mnt")
        with open("/mnt/probe", "w") as f:
            f.write("x")
        sys_("umount2", b"/mnt", 0)
        succeeded("mounted a tmpfs on /mnt and wrote to it")
        """,
        EPERM,
        admin="mounts a tmpfs",
    ),
    Attempt(
        "mount-cgroup",
        "Mount a cgroup hierarchy (release_agent)",
        "mount a new cgroup v1 hierarchy, whose release_agent runs a host command",
        """
        os.makedirs("/tmp/cg", exist_ok=True)
        sys_("mount", b"cgroup", b"/tmp/cg", b"cgroup", 0, b"none,name=hakoprobe", label="mount cgroup (v1)")
        agent = os.path.exists("/tmp/cg/release_agent")
        sys_("umount2", b"/tmp/cg", 0)
        succeeded(f"mounted a cgroup v1 hierarchy (release_agent {'present' if agent else 'absent'})")
        """,
        EPERM,
    ),
    Attempt(
        "remount-root-rw",
        "Remount / writable",
        "with --read-only: remount / read-write and write to it",
        """
        try:
            open("/probe", "w").close()
            succeeded("/ was writable without a remount")
        except OSError as e:
            if e.errno != errno.EROFS:
                raise
        sys_("mount", None, b"/", None, MS_REMOUNT | MS_BIND, None, label="mount -o remount,bind,rw /")
        step("write /probe", lambda: open("/probe", "w").close())
        os.unlink("/probe")
        succeeded("remounted / read-write and wrote to it")
        """,
        EPERM,
        options=("--read-only",),
        admin="remounts its own read-only root read-write",
    ),
    Attempt(
        "remount-proc-sys-rw",
        "Remount /proc/sys writable",
        "remount the read-only /proc/sys read-write",
        """
        if is_mountpoint("/proc/sys"):
            flags = MS_REMOUNT | MS_BIND | 2 | 4 | 8  # nosuid, nodev, noexec kept
            sys_("mount", None, b"/proc/sys", None, flags, None, label="mount -o remount,bind,rw /proc/sys")
        if not writable("/proc/sys"):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), "/proc/sys after the remount")
        succeeded("/proc/sys is writable")
        """,
        EPERM,
        admin="has a writable /proc/sys (nothing is written)",
    ),
    Attempt(
        "umount-proc-sys",
        "Unmount /proc/sys's cover",
        "unmount the read-only mount over /proc/sys to reach the writable proc below",
        """
        sys_("umount2", b"/proc/sys", MNT_DETACH, label="umount /proc/sys")
        succeeded(f"unmounted /proc/sys; it is now {'writable' if writable('/proc/sys') else 'read-only'}")
        """,
        EPERM,
    ),
    # Kernel settings ---------------------------------------------------------------------
    Attempt(
        "write-core-pattern",
        "Write /proc/sys/kernel/core_pattern",
        "write kernel.core_pattern (a '|program' there runs on the host as root); its own value back",
        'write_back("/proc/sys/kernel/core_pattern")',
        EROFS,
    ),
    Attempt(
        "write-proc-hostname",
        "Write /proc/sys/kernel/hostname",
        "write kernel.hostname through /proc/sys; its own value back",
        'write_back("/proc/sys/kernel/hostname")',
        EROFS,
    ),
    Attempt(
        "sysrq-trigger",
        "Write /proc/sysrq-trigger",
        "open /proc/sysrq-trigger for writing (nothing is written: any letter there acts on the host)",
        """
        path = "/proc/sysrq-trigger"
        if not os.path.exists(path):
            absent(f"this kernel has no {path}")
        os.close(os.open(path, os.O_WRONLY))
        succeeded(f"opened {path} for writing")
        """,
        EROFS,
        absent_ok=True,
    ),
    Attempt(
        "write-sysfs",
        "Write /sys",
        "write a kernel setting in /sys (uevent_helper, else ksm/run); its own value back",
        """
        for path in ("/sys/kernel/uevent_helper", "/sys/kernel/mm/ksm/run"):
            if os.path.exists(path):
                write_back(path)
        absent("no /sys/kernel/uevent_helper or /sys/kernel/mm/ksm/run on this kernel")
        """,
        EROFS,
    ),
    Attempt(
        "write-cgroupfs",
        "Write the cgroup filesystem",
        "write its pid into a cgroup.procs under /sys/fs/cgroup (moving itself out of its limits)",
        """
        import glob
        found = sorted(glob.glob("/sys/fs/cgroup/*/cgroup.procs") + glob.glob("/sys/fs/cgroup/cgroup.procs"))
        if not found:
            raise OSError(errno.ENOENT, "no cgroup filesystem in the container", "/sys/fs/cgroup")
        with step(f"open {found[0]} for writing", open, found[0], "w") as f:
            f.write(str(os.getpid()))
        succeeded(f"wrote its pid into {found[0]}")
        """,
        EROFS,
    ),
    # Reading the kernel ---------------------------------------------------------------------
    Attempt(
        "read-kcore",
        "Read /proc/kcore",
        "read the kernel's memory image",
        'masked_read("/proc/kcore", "the kernel\'s memory")',
        r"^masked|^EPERM",
        absent_ok=True,
    ),
    Attempt(
        "read-keys",
        "Read /proc/keys",
        "read the kernel's list of keys (not namespaced)",
        'masked_read("/proc/keys", "the keys of the kernel")',
        r"^masked",
    ),
    Attempt(
        "read-timer-list",
        "Read /proc/timer_list",
        "read the host's timers (names and pids of host processes)",
        'masked_read("/proc/timer_list", "the host\'s timers")',
        r"^masked",
    ),
    Attempt(
        "read-kernel-log",
        "Read the kernel log",
        "syslog(SYSLOG_ACTION_READ_ALL), as dmesg does",
        """
        buf = ctypes.create_string_buffer(4096)
        n = sys_("syslog", 3, buf, 4096, label="syslog(READ_ALL)")
        succeeded(f"read {n} bytes of the host's kernel log")
        """,
        EPERM,
        admin="reads the kernel log (dmesg)",
    ),
    # Devices -----------------------------------------------------------------------------
    Attempt(
        "mknod-host-disk",
        "mknod a host disk and read it",
        "mknod a block device of the host and read its first 512 bytes",
        """
        major, minor = ARGS["disk"]
        path = "/tmp/hostdisk"
        device = os.makedev(major, minor)
        step(f"mknod {path} b {major} {minor}", os.mknod, path, stat.S_IFBLK | 0o600, device)
        fd = step(f"open {path} (the host's disk {major}:{minor})", os.open, path, os.O_RDONLY)
        data = os.read(fd, 512)
        first = data.split(bytes([10]))[0].decode(errors="replace")
        seen = f" ({first!r})" if first.startswith("hako") else ""
        succeeded(f"read {len(data)} bytes of the host's disk {major}:{minor}{seen}")
        """,
        EPERM,
        admin="makes the disk's node and reads 512 bytes of it",
    ),
    Attempt(
        "mknod-kmsg",
        "mknod /dev/kmsg and read it",
        "mknod /dev/kmsg (char 1:11) and read a record of the host's kernel log",
        """
        path = "/tmp/kmsg"
        step(f"mknod {path} c 1 11", os.mknod, path, stat.S_IFCHR | 0o600, os.makedev(1, 11))
        fd = step(f"open {path} (/dev/kmsg)", os.open, path, os.O_RDONLY | os.O_NONBLOCK)
        try:
            data = os.read(fd, 8192)
        except BlockingIOError:
            data = b""
        succeeded(f"opened /dev/kmsg and read {len(data)} bytes of the host's kernel log")
        """,
        EPERM,
        admin="makes /dev/kmsg and reads a record",
    ),
    # The kernel itself ---------------------------------------------------------------------
    Attempt(
        "load-module",
        "Load a kernel module",
        "init_module() with an empty image",
        'past_permission_check("init_module", b"", 0, b"", label="init_module")',
        EPERM,
    ),
    Attempt(
        "load-module-fd",
        "Load a kernel module from a file",
        "finit_module() of /dev/null",
        """
        fd = os.open("/dev/null", os.O_RDONLY)
        past_permission_check("finit_module", fd, b"", 0, label="finit_module")
        """,
        EPERM,
    ),
    Attempt(
        "kexec",
        "kexec a new kernel",
        "kexec_load() with more segments than the kernel allows",
        'past_permission_check("kexec_load", 0, 17, None, 0, label="kexec_load")',
        EPERM,
    ),
    Attempt(
        "reboot",
        "Reboot the host",
        "reboot() with a wrong second magic number",
        """
        past_permission_check("reboot", 0xFEE1DEAD, 0, 0x4321FEDC, None, label="reboot")
        """,
        EPERM,
        admin="reboot(POWER_OFF) in a nested PID namespace ends only that namespace",
        admin_script="""
        sys_("unshare", CLONE_NEWPID, label="unshare(CLONE_NEWPID)")
        pid = os.fork()
        if pid == 0:
            # In the new namespace this process is its init: only there does reboot() end just it.
            if os.getpid() != 1:
                os._exit(3)
            try:
                sys_("reboot", 0xFEE1DEAD, 672274793, 0x4321FEDC, None)
            except OSError as e:
                os._exit(100 + e.errno)
            os._exit(4)
        _, status = os.waitpid(pid, 0)
        if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGINT:
            succeeded("reboot(POWER_OFF) ended only its own PID namespace (its init died of SIGINT)")
        code = os.WEXITSTATUS(status)
        if code > 100:
            raise OSError(code - 100, os.strerror(code - 100), "reboot in a nested PID namespace")
        raise RuntimeError(f"the nested init ended with status {status}")
        """,
    ),
    Attempt(
        "set-clock",
        "Set the clock",
        "settimeofday() of the kernel's timezone, to the value it has",
        """
        class Timezone(ctypes.Structure):
            _fields_ = [("minuteswest", ctypes.c_int), ("dsttime", ctypes.c_int)]
        tv, tz = (ctypes.c_long * 2)(), Timezone()
        libc.gettimeofday(tv, ctypes.byref(tz))
        if tz.minuteswest or tz.dsttime:
            # The kernel's first settimeofday() of a timezone that is not UTC warps the clock.
            raise RuntimeError("refusing: the kernel's timezone is not UTC")
        sys_("settimeofday", None, ctypes.byref(tz), label="settimeofday")
        succeeded("set the kernel's timezone (to the value it had)")
        """,
        EPERM,
    ),
    Attempt(
        "adjust-clock",
        "Adjust the clock",
        "adjtimex(ADJ_TICK) with an out-of-range tick",
        """
        class Timex(ctypes.Structure):
            _fields_ = [("modes", ctypes.c_uint), ("offset", ctypes.c_long), ("freq", ctypes.c_long),
                        ("maxerror", ctypes.c_long), ("esterror", ctypes.c_long), ("status", ctypes.c_int),
                        ("constant", ctypes.c_long), ("precision", ctypes.c_long),
                        ("tolerance", ctypes.c_long), ("time", ctypes.c_long * 2), ("tick", ctypes.c_long),
                        ("rest", ctypes.c_byte * 160)]
        tx = Timex(modes=0x4000, tick=1)  # ADJ_TICK; the kernel takes 9000..11000
        past_permission_check("adjtimex", ctypes.byref(tx), label="adjtimex(ADJ_TICK)")
        """,
        EPERM,
    ),
    Attempt(
        "swapon",
        "Turn on swap",
        "swapon() of a missing file",
        'past_permission_check("swapon", b"/nonexistent-swap", 0, label="swapon")',
        EPERM,
    ),
    Attempt(
        "raise-priority",
        "Take CPU priority over the host",
        "setpriority() to nice -20, ahead of every host process",
        """
        step("setpriority(PRIO_PROCESS, 0, -20)", os.setpriority, os.PRIO_PROCESS, 0, -20)
        got = os.getpriority(os.PRIO_PROCESS, 0)
        os.setpriority(os.PRIO_PROCESS, 0, 0)
        succeeded(f"ran at nice {got}")
        """,
        r"^EACCES \(Permission denied\)",
        admin="runs at nice -20",
    ),
    Attempt(
        "sethostname",
        "Change the host's hostname",
        "sethostname() (the runner checks the host's name after)",
        """
        step("sethostname", socket.sethostname, "escaped-learner")
        succeeded(f"changed its hostname to {socket.gethostname()} (the host's: {ARGS['host_hostname']})")
        """,
        EPERM,
        admin="changes the hostname of its own UTS namespace; the host's stays",
    ),
    # Network and IPC -------------------------------------------------------------------------
    Attempt(
        "host-interfaces",
        "Reach the host's network interfaces",
        "look for the host's interfaces, bind a socket to the host's address",
        """
        seen = sorted(set(os.listdir("/sys/class/net")) & (set(ARGS["host_ifaces"]) - {"lo"}))
        if seen:
            succeeded(f"sees the host's interfaces {seen}")
        addr = ARGS["host_addrs"][0]
        s = socket.socket(socket.AF_INET6 if ":" in addr else socket.AF_INET, socket.SOCK_DGRAM)
        step(f"bind to the host's address {addr}", s.bind, (addr, 0))
        succeeded(f"bound a socket to the host's address {addr}")
        """,
        r"^EADDRNOTAVAIL",
    ),
    Attempt(
        "host-loopback",
        "Reach a service on the host's loopback",
        "connect to a port listening on the host's 127.0.0.1",
        """
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(5)
        step(f"connect 127.0.0.1:{ARGS['loopback_port']}", s.connect, ("127.0.0.1", ARGS["loopback_port"]))
        succeeded(f"connected to the host's 127.0.0.1:{ARGS['loopback_port']}")
        """,
        r"^ECONNREFUSED",
    ),
    Attempt(
        "host-abstract-socket",
        "Reach a host abstract socket",
        "connect to an abstract unix socket of the host (as containerd-shim's)",
        """
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        name = "\\0" + ARGS["abstract_socket"]
        step(f"connect @{ARGS['abstract_socket']}", s.connect, name)
        succeeded(f"connected to the host's abstract socket @{ARGS['abstract_socket']}")
        """,
        r"^ECONNREFUSED",
    ),
    Attempt(
        "host-ipc",
        "Reach the host's System V IPC",
        "msgget() of a message queue the host made",
        """
        key = ARGS["ipc_key"]
        q = libc.msgget(ctypes.c_int(key), 0)
        if q == -1:
            e = ctypes.get_errno()
            raise OSError(e, os.strerror(e), f"msgget({key:#x})")
        succeeded(f"opened the host's message queue {key:#x}")
        """,
        r"^ENOENT",
    ),
    # Filesystems ---------------------------------------------------------------------------
    Attempt(
        "open-by-handle",
        "open_by_handle_at (the shocker escape)",
        "open a file by its handle, which bypasses the container's mounts for any inode of that filesystem",
        """
        class FileHandle(ctypes.Structure):
            _fields_ = [("handle_bytes", ctypes.c_uint), ("handle_type", ctypes.c_int),
                        ("f_handle", ctypes.c_ubyte * 128)]
        fh, mount_id, target = FileHandle(handle_bytes=128), ctypes.c_int(), None
        for path in ("/etc/hosts", "/etc/resolv.conf", "/dev/null", "/"):
            try:
                sys_("name_to_handle_at", -100, path.encode(), ctypes.byref(fh), ctypes.byref(mount_id), 0)
                target = path
                break
            except OSError:
                continue
        if target is None:  # as shocker: ext4's root directory, inode 2
            fh, target = FileHandle(handle_bytes=8, handle_type=1), "/"
            fh.f_handle[0] = 2
        mount_fd = os.open(target, os.O_RDONLY)
        label = f"open_by_handle_at({target})"
        sys_("open_by_handle_at", mount_fd, ctypes.byref(fh), os.O_RDONLY, label=label)
        succeeded(f"opened {target} by its file handle: any inode of its filesystem opens the same way")
        """,
        EPERM,
    ),
    Attempt(
        "chroot-escape",
        "chroot escape with a retained fd",
        "chroot into a subdirectory with an fd kept on /, fchdir out, climb '..', chroot('.')",
        """
        os.makedirs("/tmp/jail", exist_ok=True)
        fd = os.open("/", os.O_RDONLY)
        step("chroot /tmp/jail", os.chroot, "/tmp/jail")
        os.fchdir(fd)
        for _ in range(64):
            os.chdir("..")
        os.chroot(".")
        step(f"stat {ARGS['marker_file']} (a file of the host)", os.stat, ARGS["marker_file"])
        succeeded(f"broke out to the host's root: {ARGS['marker_file']} is there")
        """,
        r"^ENOENT .* \(a file of the host\)",
    ),
    Attempt(
        "inherited-fd",
        "Use a descriptor inherited from the runtime",
        "climb '..' from every inherited directory descriptor (as runc's CVE-2024-21626) to a host file",
        """
        fds = [int(n) for n in os.listdir("/proc/self/fd")]
        found = []
        for n in sorted(fds):
            if n <= 2:
                continue
            try:
                found.append(f"{n}->{os.readlink(f'/proc/self/fd/{n}')}")
                if not stat.S_ISDIR(os.fstat(n).st_mode):
                    continue
            except OSError:
                continue
            path = f"/proc/self/fd/{n}" + "/.." * 64 + ARGS["marker_file"]
            if os.path.exists(path):
                succeeded(f"reached the host's {ARGS['marker_file']} through fd {found[-1]}")
        raise OSError(errno.ENOENT, os.strerror(errno.ENOENT),
                      f"the host's file through inherited descriptors {found or 'none'}")
        """,
        r"^ENOENT",
    ),
    Attempt(
        "ro-volume-write",
        "Write through a read-only bind mount",
        "with -v HOSTDIR:/data:ro: create a file in /data",
        """
        step("create /data/escaped", lambda: open("/data/escaped", "w").close())
        succeeded("created /data/escaped in the host's directory")
        """,
        EROFS,
        options=("-v", "{volume}:/data:ro"),
    ),
    Attempt(
        "ro-volume-remount",
        "Remount a read-only bind mount writable",
        "with -v HOSTDIR:/data:ro: remount /data read-write and create a file",
        """
        flags = MS_REMOUNT | MS_BIND
        sys_("mount", None, b"/data", None, flags, None, label="mount -o remount,bind,rw /data")
        step("create /data/escaped", lambda: open("/data/escaped", "w").close())
        succeeded("remounted /data read-write and created a file in the host's directory")
        """,
        EPERM,
        options=("-v", "{volume}:/data:ro"),
    ),
    # Namespaces and kernel interfaces --------------------------------------------------------
    Attempt(
        "unshare-userns",
        "Unshare a new user namespace",
        "unshare(CLONE_NEWUSER), where it would be root with every capability",
        """
        sys_("unshare", CLONE_NEWUSER, label="unshare(CLONE_NEWUSER)")
        succeeded("made a new user namespace")
        """,
        EPERM,
        admin="makes a user namespace",
    ),
    Attempt(
        "keyctl",
        "keyctl",
        "keyctl(JOIN_SESSION_KEYRING): the kernel's keyrings are not namespaced",
        """
        serial = sys_("keyctl", 1, b"hako-catalogue", label="keyctl(JOIN_SESSION_KEYRING)")
        succeeded(f"joined a new session keyring ({serial})")
        """,
        EPERM,
        admin="joins a session keyring of its own",
    ),
    Attempt(
        "add-key",
        "add_key",
        "add_key() of a user key to its process keyring",
        """
        serial = sys_("add_key", b"user", b"hako-catalogue", b"probe", 5, -2, label="add_key")
        succeeded(f"added a key ({serial}) to its process keyring")
        """,
        EPERM,
        admin="adds a key to its own process keyring",
    ),
    Attempt(
        "bpf",
        "bpf",
        "bpf(BPF_MAP_CREATE) of a one-entry array map",
        """
        attr = (ctypes.c_uint32 * 30)()
        attr[0], attr[1], attr[2], attr[3] = 2, 4, 4, 1  # BPF_MAP_TYPE_ARRAY, key 4, value 4, 1 entry
        fd = sys_("bpf", 0, attr, ctypes.sizeof(attr), label="bpf(BPF_MAP_CREATE)")
        succeeded(f"created a BPF map (fd {fd})")
        """,
        EPERM,
        admin="creates a BPF map",
    ),
    Attempt(
        "perf-event-open",
        "perf_event_open",
        "perf_event_open() of its own CPU clock, user space only (what the sysctl allows anybody)",
        """
        attr = (ctypes.c_uint8 * 128)()
        struct.pack_into("<IIQ", attr, 0, 1, 64, 0)  # PERF_TYPE_SOFTWARE, size VER0, CPU_CLOCK
        struct.pack_into("<Q", attr, 40, 1 | 1 << 5 | 1 << 6)  # disabled, exclude_kernel, exclude_hv
        fd = sys_("perf_event_open", attr, 0, -1, -1, 0, label="perf_event_open")
        succeeded(f"opened a perf event (fd {fd})")
        """,
        EPERM,
        admin="opens a perf event on itself",
    ),
    # Users ---------------------------------------------------------------------------------
    Attempt(
        "setuid-binary",
        "setuid binary under no_new_privs",
        "as uid 1000, run a setuid-root copy of id",
        """
        import shutil
        shutil.copy("/usr/bin/id", "/tmp/id-setuid")
        os.chown("/tmp/id-setuid", 0, 0)
        os.chmod("/tmp/id-setuid", 0o4755)
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                os.dup2(w, 1)
                os.setgroups([])
                os.setgid(1000)
                os.setuid(1000)
                os.execv("/tmp/id-setuid", ["id", "-u"])
            finally:
                os._exit(127)
        os.close(w)
        euid = os.read(r, 100).decode().strip()
        os.waitpid(pid, 0)
        with open("/proc/self/status") as f:
            nnp = [line.split()[1] for line in f if line.startswith("NoNewPrivs:")][0]
        if euid == "0":
            succeeded(f"uid 1000 ran a setuid-root binary and got euid 0 (NoNewPrivs: {nnp})")
        blocked(f"uid 1000 ran a setuid-root binary and kept euid {euid or '?'} (NoNewPrivs: {nnp})")
        """,
        r"^uid 1000 ran a setuid-root binary and kept euid 1000 \(NoNewPrivs: 1\)",
    ),
    Attempt(
        "user-become-root",
        "A --user process becomes root",
        "with --user 1000: setuid(0)",
        """
        step("setuid(0)", os.setuid, 0)
        succeeded(f"became uid {os.getuid()}")
        """,
        EPERM,
        options=("--user", "1000"),
    ),
    Attempt(
        "user-read-shadow",
        "A --user process reads /etc/shadow",
        "with --user 1000: read /etc/shadow",
        """
        with step("open /etc/shadow", open, "/etc/shadow") as f:
            succeeded(f"read {len(f.read())} bytes of /etc/shadow")
        """,
        r"^EACCES",
        options=("--user", "1000"),
    ),
    # Resources -----------------------------------------------------------------------------
    Attempt(
        "fork-bomb",
        "Exhaust the host's pids",
        "with --pids-limit 50: fork up to 200 processes",
        """
        children = []
        try:
            for _ in range(200):
                pid = step(f"fork after {len(children)} processes", os.fork)
                if pid == 0:
                    signal.pause()
                    os._exit(0)
                children.append(pid)
            succeeded(f"forked {len(children)} processes past a limit of 50")
        finally:
            for pid in children:
                os.kill(pid, signal.SIGKILL)
            for pid in children:
                os.waitpid(pid, 0)
        """,
        r"^EAGAIN .* from fork after 4\d processes",
        options=("--pids-limit", "50"),
    ),
    Attempt(
        "memory-hog",
        "Exhaust the host's memory",
        "with --memory 32m: a child allocates up to 256 MiB",
        """
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            hold = []
            for _ in range(256):
                block = bytearray(1 << 20)
                block[::4096] = b"\\1" * 256
                hold.append(block)
                os.write(w, b".")
            os._exit(0)
        os.close(w)
        mib = 0
        while True:
            chunk = os.read(r, 4096)
            if not chunk:
                break
            mib += len(chunk)
        _, status = os.waitpid(pid, 0)
        if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL:
            blocked(f"OOM: the allocating process was killed (SIGKILL) at {mib} MiB; its parent lives on")
        if mib >= 256:
            succeeded(f"allocated {mib} MiB under a 32 MiB limit")
        raise RuntimeError(f"the allocating process ended with status {status} at {mib} MiB")
        """,
        r"^OOM: the allocating process was killed \(SIGKILL\) at [1-3]?\d MiB",
        options=("--memory", "32m"),
    ),
    Attempt(
        "disk-fill",
        "Fill the host's disk",
        "with --storage-opt size=16m: write up to 80 MiB into its writable layer",
        """
        path, mib = "/var/tmp/fill", 0
        chunk = b"\\xa5" * (1 << 20)
        try:
            with open(path, "wb", buffering=0) as f:
                for _ in range(80):
                    step(f"write after {mib} MiB", f.write, chunk)
                    mib += 1
                step(f"fsync after {mib} MiB", os.fsync, f.fileno())
            succeeded(f"wrote {mib} MiB into its writable layer under a 16 MiB limit")
        finally:
            if os.path.exists(path):
                os.unlink(path)
        """,
        r"^(ENOSPC|EDQUOT) .* after (\d|1[0-6]) MiB",
        options=("--storage-opt", "size=16m"),
        podman_refuses=r"overlay\.size .*only supported for backingFS XFS",
    ),
)


def by_id(attempt_id: str) -> Attempt:
    for attempt in ATTEMPTS:
        if attempt.id == attempt_id:
            return attempt
    raise KeyError(attempt_id)
