"""ctypes bindings for the Linux system calls a container needs.

Everything a container's first process calls after it has changed its root
must already be imported: the host's Python library is out of reach by then.
That is why the imports here are all at the top.

Every binding raises ``OSError`` whose message names the call and its
arguments, so a failure deep in container setup still says what the kernel
refused (``mount('proc', '/proc', 'proc') failed: Operation not permitted``).
"""

from __future__ import annotations

import _socket
import errno
import fcntl
import os
import struct

# Namespace flags (linux/sched.h).
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

# The OCI runtime-spec namespace names, their clone flag and /proc/PID/ns entry.
NAMESPACES = {
    "user": (CLONE_NEWUSER, "user"),
    "mount": (CLONE_NEWNS, "mnt"),
    "pid": (CLONE_NEWPID, "pid"),
    "network": (CLONE_NEWNET, "net"),
    "ipc": (CLONE_NEWIPC, "ipc"),
    "uts": (CLONE_NEWUTS, "uts"),
    "cgroup": (CLONE_NEWCGROUP, "cgroup"),
}

# mount(2) flags.
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_SYNCHRONOUS = 16
MS_REMOUNT = 32
MS_MANDLOCK = 64
MS_DIRSYNC = 128
MS_NOSYMFOLLOW = 256
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_BIND = 4096
MS_MOVE = 8192
MS_REC = 16384
MS_SILENT = 32768
MS_UNBINDABLE = 1 << 17
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MS_RELATIME = 1 << 21
MS_STRICTATIME = 1 << 24

MNT_DETACH = 2

# prctl(2) options.
PR_SET_PDEATHSIG = 1
PR_SET_NAME = 15
PR_SET_NO_NEW_PRIVS = 38
PR_SET_CHILD_SUBREAPER = 36
PR_SET_DUMPABLE = 4
PR_SET_KEEPCAPS = 8
PR_SET_SECCOMP = 22
PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_RAISE = 2
PR_CAP_AMBIENT_CLEAR_ALL = 4
SECCOMP_MODE_FILTER = 2

# Capabilities by number (linux/capability.h); a kernel knows those up to
# /proc/sys/kernel/cap_last_cap.
CAPABILITIES = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
)
CAPABILITY_NUMBERS = {name: number for number, name in enumerate(CAPABILITIES)}
_CAP_VERSION_3 = 0x20080522

# ioctl requests for terminals.
TIOCSCTTY = 0x540E


def _check(result: int, call: str) -> int:
    if result == -1:
        err = _errno()
        raise OSError(err, f"{call} failed: {os.strerror(err)}")
    return result


def _fs(value: str | bytes | None) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    return os.fsencode(value)


_LIBC = None


def libc():
    """The C library with argument types set, loaded on first use.

    ctypes costs milliseconds to import, and `hako ps` needs no system call
    of these. A process that will change its root must call this first: the
    runtime does so on import (runtime/process.py).
    """
    global _LIBC
    if _LIBC is None:
        import ctypes

        lib = ctypes.CDLL(None, use_errno=True)
        lib.unshare.argtypes = [ctypes.c_int]
        lib.setns.argtypes = [ctypes.c_int, ctypes.c_int]
        lib.mount.argtypes = [
            ctypes.c_char_p,
            ctypes.c_char_p,
            ctypes.c_char_p,
            ctypes.c_ulong,
            ctypes.c_char_p,
        ]
        lib.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
        lib.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
        lib.syscall.restype = ctypes.c_long
        _LIBC = lib
    return _LIBC


def _errno() -> int:
    import ctypes

    return ctypes.get_errno()


def unshare(flags: int) -> None:
    """Move the calling process into new namespaces of the given kinds."""
    _check(libc().unshare(flags), f"unshare({flags:#x})")


def setns(fd: int, nstype: int = 0) -> None:
    """Join the namespace that ``fd`` (an open /proc/PID/ns/* file) refers to."""
    _check(libc().setns(fd, nstype), f"setns({fd}, {nstype:#x})")


def mount(
    source: str | None,
    target: str,
    fstype: str | None = None,
    flags: int = 0,
    data: str | None = None,
) -> None:
    """mount(2); ``source`` and ``fstype`` may be None for remounts and propagation changes."""
    result = libc().mount(_fs(source), _fs(target), _fs(fstype), flags, _fs(data))
    if result == -1:
        err = _errno()
        raise OSError(
            err,
            f"mount({source!r}, {target!r}, {fstype!r}, {flags:#x}, {data!r}) failed: {os.strerror(err)}",
        )


def umount2(target: str, flags: int = 0) -> None:
    _check(libc().umount2(_fs(target), flags), f"umount2({target!r}, {flags})")


def pivot_root(new_root: str, put_old: str) -> None:
    # glibc has no wrapper: call the system call by number.
    result = libc().syscall(_SYS_PIVOT_ROOT, _fs(new_root), _fs(put_old))
    _check(result, f"pivot_root({new_root!r}, {put_old!r})")


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    return _check(libc().prctl(option, arg2, arg3, arg4, arg5), f"prctl({option}, {arg2})")


def set_child_subreaper() -> None:
    """Make orphaned descendants reparent to this process, so it can reap them."""
    prctl(PR_SET_CHILD_SUBREAPER, 1)


def set_parent_death_signal(signum: int) -> None:
    prctl(PR_SET_PDEATHSIG, signum)


def set_no_new_privs() -> None:
    prctl(PR_SET_NO_NEW_PRIVS, 1)


def last_capability() -> int:
    """The highest capability number this kernel knows."""
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return min(int(f.read()), len(CAPABILITIES) - 1)
    except (OSError, ValueError):
        return CAPABILITY_NUMBERS["CAP_AUDIT_READ"]


def bounding_capabilities() -> list[str]:
    """The capabilities in this process's bounding set: all that a process it starts can hold."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapBnd:"):
                mask = int(line.split()[1], 16)
                return [name for number, name in enumerate(CAPABILITIES) if mask & (1 << number)]
    return list(CAPABILITIES[: last_capability() + 1])


def _cap_mask(names) -> int:
    mask = 0
    for name in names:
        number = CAPABILITY_NUMBERS.get(name)
        if number is not None:
            mask |= 1 << number
    return mask


def drop_bounding_except(keep) -> None:
    """Remove from the bounding set every capability the kernel knows that ``keep`` does not name."""
    kept = _cap_mask(keep)
    for number in range(64):
        held = libc().prctl(PR_CAPBSET_READ, number, 0, 0, 0)
        if held == -1:
            break  # past the kernel's last capability
        if held and not kept & (1 << number):
            prctl(PR_CAPBSET_DROP, number)


def keep_capabilities(on: bool) -> None:
    """Keep the permitted set across a change of uid away from 0 (PR_SET_KEEPCAPS)."""
    prctl(PR_SET_KEEPCAPS, int(on))


def set_capabilities(effective, permitted, inheritable, ambient=()) -> None:
    """capset(2) the three sets by name, then make the ambient set exactly ``ambient``."""
    import ctypes

    masks = [_cap_mask(names) for names in (effective, permitted, inheritable)]
    header = (ctypes.c_uint32 * 2)(_CAP_VERSION_3, 0)
    data = (ctypes.c_uint32 * 6)()
    for word in range(2):
        for index, mask in enumerate(masks):
            data[word * 3 + index] = (mask >> (32 * word)) & 0xFFFFFFFF
    _check(libc().syscall(_SYSCALLS["capset"], header, data), "capset")
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
    for name in ambient:
        number = CAPABILITY_NUMBERS.get(name)
        if number is not None:
            prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, number)


def load_seccomp(program: bytes) -> None:
    """Install a seccomp filter: ``program`` is classic BPF, 8 bytes an instruction."""
    import ctypes

    if not program or len(program) % 8:
        raise OSError(errno.EINVAL, f"seccomp: a filter of {len(program)} bytes is not a BPF program")
    buffer = ctypes.create_string_buffer(program, len(program))
    # struct sock_fprog { unsigned short len; struct sock_filter *filter; }
    fprog = struct.pack(
        "HxxxxxxQ" if struct.calcsize("P") == 8 else "HxxI", len(program) // 8, ctypes.addressof(buffer)
    )
    holder = ctypes.create_string_buffer(fprog, len(fprog))
    _check(
        libc().prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(holder), 0, 0),
        "prctl(PR_SET_SECCOMP)",
    )


def set_process_name(name: str) -> None:
    """Set the name shown by ps and /proc/PID/comm (15 bytes at most)."""
    import ctypes

    buffer = ctypes.create_string_buffer(name.encode()[:15])
    libc().prctl(PR_SET_NAME, ctypes.addressof(buffer), 0, 0, 0)


def _machine_syscalls() -> dict[str, int]:
    machine = os.uname().machine
    if machine == "x86_64":
        return {"pivot_root": 155, "mount_setattr": 442, "capset": 126}
    if machine in ("aarch64", "arm64", "riscv64", "loongarch64"):
        # The generic system call table.
        return {"pivot_root": 41, "mount_setattr": 442, "capset": 91}
    raise OSError(f"unsupported machine architecture: {machine}")


_SYSCALLS = _machine_syscalls()
_SYS_PIVOT_ROOT = _SYSCALLS["pivot_root"]

AT_FDCWD = -100
AT_RECURSIVE = 0x8000
MOUNT_ATTR_RDONLY = 0x1


def make_tree_read_only(path: str) -> None:
    """Make the mount at ``path`` and every mount below it read-only.

    A read-only remount of a recursive bind reaches only its top mount;
    mount_setattr(AT_RECURSIVE) (Linux 5.12) reaches them all. Older
    kernels get a remount of each submount, found in /proc/self/mountinfo.
    """
    import ctypes

    attr = struct.pack("QQQQ", MOUNT_ATTR_RDONLY, 0, 0, 0)
    buffer = ctypes.create_string_buffer(attr, len(attr))
    result = libc().syscall(
        _SYSCALLS["mount_setattr"], AT_FDCWD, _fs(path), AT_RECURSIVE, buffer, ctypes.c_size_t(len(attr))
    )
    if result == 0:
        return
    err = _errno()
    if err != errno.ENOSYS:
        raise OSError(err, f"mount_setattr({path!r}, AT_RECURSIVE, RDONLY) failed: {os.strerror(err)}")
    prefix = path.rstrip("/") + "/"
    with open("/proc/self/mountinfo") as f:
        targets = [line.split()[4] for line in f]
    for target in [path] + [t for t in targets if t.startswith(prefix)]:
        kept = os.statvfs(target).f_flag & (MS_NOSUID | MS_NODEV | MS_NOEXEC)
        mount(None, target, None, MS_BIND | MS_REMOUNT | MS_RDONLY | kept)


SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1


def set_link_up(name: str) -> None:
    """Bring a network interface up with the classic ioctl (no netlink library needed)."""
    sock = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM)
    try:
        request = struct.pack("16sH14s", name.encode(), 0, b"")
        flags = struct.unpack("16sH14s", fcntl.ioctl(sock, SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack("16sH14s", name.encode(), flags | IFF_UP, b""))
    finally:
        sock.close()


def exit_code(status: int) -> int:
    """A wait status as a shell would report it: the code, or 128 + the signal."""
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def _stat_fields(pid: int) -> list[bytes] | None:
    """The fields of /proc/PID/stat after the command name, or None if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name may hold spaces and parentheses: split after the last ')'.
    return data[data.rindex(b")") + 2 :].split()


def process_start_time(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat: with the PID it names one process for its whole life.

    Returns None when no process has that PID.
    """
    fields = _stat_fields(pid)
    return int(fields[19]) if fields else None


def process_alive(pid: int, start_time: int) -> bool:
    """Whether ``pid`` is still the process that started at ``start_time``, and not a zombie."""
    fields = _stat_fields(pid)
    return bool(fields) and int(fields[19]) == start_time and fields[0] != b"Z"
