"""hako's default seccomp profile, in Docker's profile format.

The rule is Docker's: every system call is refused with EPERM unless it is
named here. What an ordinary program needs is allowed outright; what only an
administrator needs is allowed only to a container holding the capability
that the kernel would check anyway (so `--cap-add SYS_TIME` lets
clock_settime through; a new namespace, a user namespace too, takes
CAP_SYS_ADMIN); what no container should do is never allowed, whatever its
capabilities: load a kernel, use the kernel's keyrings, swap (swap is the
host's), userfaultfd (a favourite tool of kernel exploits). The lists are
grouped by purpose so that a reader can audit them.
"""

from __future__ import annotations

# Files, directories and descriptors.
_FILES = """
access chdir chmod chown chown32 close close_range copy_file_range creat dup dup2 dup3
faccessat faccessat2 fadvise64 fadvise64_64 fallocate fchdir fchmod fchmodat fchmodat2 fchown
fchown32 fchownat fcntl fcntl64 fdatasync fgetxattr flistxattr flock fremovexattr fsetxattr fstat
fstat64 fstatat64 fstatfs fstatfs64 fsync ftruncate ftruncate64 futimesat getcwd getdents
getdents64 getxattr inotify_add_watch inotify_init inotify_init1 inotify_rm_watch ioctl lchown
lchown32 lgetxattr link linkat listxattr llistxattr _llseek lremovexattr lseek lsetxattr lstat
lstat64 mkdir mkdirat mknod mknodat newfstatat open openat openat2 pipe pipe2 pread64 preadv
preadv2 pwrite64 pwritev pwritev2 read readahead readlink readlinkat readv removexattr rename
renameat renameat2 rmdir sendfile sendfile64 setxattr splice stat stat64 statfs statfs64 statx
symlink symlinkat sync sync_file_range syncfs tee truncate truncate64 umask unlink unlinkat utime
utimensat utimensat_time64 utimes vmsplice write writev fanotify_mark memfd_create name_to_handle_at
"""

# Memory.
_MEMORY = """
brk madvise membarrier mincore mlock mlock2 mlockall mmap mmap2 mprotect mremap msync munlock
munlockall munmap pkey_alloc pkey_free pkey_mprotect remap_file_pages map_shadow_stack
memfd_secret cachestat
"""

# Processes, threads, signals, credentials and scheduling.
_PROCESSES = """
capget capset execve execveat exit exit_group fork getcpu getegid getegid32 geteuid
geteuid32 getgid getgid32 getgroups getgroups32 getitimer getpgid getpgrp getpid getppid
getpriority getresgid getresgid32 getresuid getresuid32 getrlimit get_robust_list getrusage
getsid get_thread_area gettid getuid getuid32 ioprio_get ioprio_set kill pause pidfd_open
pidfd_send_signal prctl prlimit64 process_mrelease process_vm_readv process_vm_writev ptrace
restart_syscall rseq rt_sigaction
rt_sigpending rt_sigprocmask rt_sigqueueinfo rt_sigreturn rt_sigsuspend rt_sigtimedwait
rt_sigtimedwait_time64 rt_tgsigqueueinfo sched_getaffinity sched_getattr sched_getparam
sched_get_priority_max sched_get_priority_min sched_getscheduler sched_rr_get_interval
sched_rr_get_interval_time64 sched_setaffinity sched_setattr sched_setparam sched_setscheduler
sched_yield seccomp setfsgid setfsgid32 setfsuid setfsuid32 setgid setgid32 setgroups
setgroups32 setitimer setpgid setpriority setregid setregid32 setresgid setresgid32 setresuid
setresuid32 setreuid setreuid32 setrlimit set_robust_list setsid set_thread_area
set_tid_address setuid setuid32 sigaltstack signalfd signalfd4 sigprocmask sigreturn tgkill
tkill ugetrlimit uname vfork wait4 waitid waitpid landlock_add_rule landlock_create_ruleset
landlock_restrict_self sysinfo times
"""

# Waiting, polling, time (reading it) and timers.
_EVENTS = """
alarm clock_getres clock_getres_time64 clock_gettime clock_gettime64 clock_nanosleep
clock_nanosleep_time64 epoll_create epoll_create1 epoll_ctl epoll_ctl_old epoll_pwait
epoll_pwait2 epoll_wait epoll_wait_old eventfd eventfd2 futex futex_requeue futex_time64
futex_wait futex_waitv futex_wake gettimeofday nanosleep _newselect poll ppoll ppoll_time64
pselect6 pselect6_time64 select time timer_create timer_delete timer_getoverrun timer_gettime
timer_gettime64 timer_settime timer_settime64 timerfd_create timerfd_gettime timerfd_gettime64
timerfd_settime timerfd_settime64 io_cancel io_destroy io_getevents io_pgetevents
io_pgetevents_time64 io_setup io_submit getrandom adjtimex clock_adjtime clock_adjtime64
"""

# Sockets and System V / POSIX IPC (private to the container's namespaces).
_IPC = """
accept accept4 bind connect getpeername getsockname getsockopt listen recv recvfrom recvmmsg
recvmmsg_time64 recvmsg send sendmmsg sendmsg sendto setsockopt shutdown socketcall socketpair
ipc mq_getsetattr mq_notify mq_open mq_timedreceive mq_timedreceive_time64 mq_timedsend
mq_timedsend_time64 mq_unlink msgctl msgget msgrcv msgsnd semctl semget semop semtimedop
semtimedop_time64 shmat shmctl shmdt shmget
"""

# Allowed only to a container that holds the capability named.
_BY_CAPABILITY = {
    "CAP_SYS_ADMIN": """
        bpf clone fanotify_init fsconfig fsmount fsopen fspick lookup_dcookie mount mount_setattr
        move_mount open_tree perf_event_open pivot_root quotactl quotactl_fd setdomainname
        sethostname setns syslog umount umount2 unshare
    """,
    "CAP_SYS_BOOT": "reboot",
    "CAP_SYS_CHROOT": "chroot",
    "CAP_SYS_MODULE": "delete_module init_module finit_module",
    "CAP_SYS_PACCT": "acct",
    "CAP_SYS_PTRACE": "kcmp pidfd_getfd process_madvise",
    "CAP_SYS_RAWIO": "iopl ioperm",
    "CAP_SYS_TIME": "settimeofday stime clock_settime clock_settime64",
    "CAP_SYS_TTY_CONFIG": "vhangup",
    "CAP_SYS_NICE": "get_mempolicy mbind set_mempolicy set_mempolicy_home_node move_pages",
    "CAP_SYSLOG": "syslog",
    "CAP_BPF": "bpf",
    "CAP_PERFMON": "perf_event_open",
    "CAP_DAC_READ_SEARCH": "open_by_handle_at",
}

# Per architecture.
_BY_ARCH = {
    "SCMP_ARCH_X86_64": "arch_prctl modify_ldt",
    "SCMP_ARCH_X86": "arch_prctl modify_ldt",
    "SCMP_ARCH_X32": "arch_prctl modify_ldt",
    "SCMP_ARCH_AARCH64": "sync_file_range2",
    "SCMP_ARCH_ARM": "arm_fadvise64_64 arm_sync_file_range sync_file_range2 breakpoint cacheflush set_tls",
}

# clone may make a thread or a process, not a namespace, without CAP_SYS_ADMIN.
_NAMESPACE_FLAGS = 0x7E020000  # CLONE_NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET
# personality(2) values programs use: Linux, with or without address
# randomisation disabled or 32-bit layout, and the query 0xffffffff.
_PERSONALITIES = (0x0, 0x8, 0x20000, 0x20008, 0xFFFFFFFF)
_AF_VSOCK = 40
_EPERM = 1
_ENOSYS = 38


def _names(text: str) -> list[str]:
    return sorted(set(text.split()))


def default_profile() -> dict:
    """The default profile as a Docker-format document (a fresh copy each call)."""
    allowed = _names(_FILES + _MEMORY + _PROCESSES + _EVENTS + _IPC)
    syscalls: list[dict] = [{"names": allowed, "action": "SCMP_ACT_ALLOW"}]
    syscalls.append(
        {
            "names": ["socket"],
            "action": "SCMP_ACT_ALLOW",
            "args": [{"index": 0, "value": _AF_VSOCK, "op": "SCMP_CMP_NE"}],
        }
    )
    for value in _PERSONALITIES:
        syscalls.append(
            {
                "names": ["personality"],
                "action": "SCMP_ACT_ALLOW",
                "args": [{"index": 0, "value": value, "op": "SCMP_CMP_EQ"}],
            }
        )
    # (On s390 the flags are clone's second argument.)
    for index, arches in (
        (0, {"excludes": ["SCMP_ARCH_S390", "SCMP_ARCH_S390X"]}),
        (1, {"includes": ["SCMP_ARCH_S390", "SCMP_ARCH_S390X"]}),
    ):
        rule = {
            "names": ["clone"],
            "action": "SCMP_ACT_ALLOW",
            "args": [{"index": index, "value": _NAMESPACE_FLAGS, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}],
            "excludes": {"caps": ["CAP_SYS_ADMIN"]},
        }
        if "excludes" in arches:
            rule["excludes"]["arches"] = arches["excludes"]
        else:
            rule["includes"] = {"arches": arches["includes"]}
        syscalls.append(rule)
    # clone3 passes its flags in memory, out of a filter's sight: without
    # CAP_SYS_ADMIN it says "not implemented", and the C library falls back
    # to clone, whose flags the rule above checks.
    syscalls.append(
        {
            "names": ["clone3"],
            "action": "SCMP_ACT_ERRNO",
            "errnoRet": _ENOSYS,
            "excludes": {"caps": ["CAP_SYS_ADMIN"]},
        }
    )
    syscalls.append(
        {"names": ["clone3"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_ADMIN"]}}
    )
    for capability, names in _BY_CAPABILITY.items():
        syscalls.append(
            {"names": _names(names), "action": "SCMP_ACT_ALLOW", "includes": {"caps": [capability]}}
        )
    for arch, names in _BY_ARCH.items():
        syscalls.append({"names": _names(names), "action": "SCMP_ACT_ALLOW", "includes": {"arches": [arch]}})
    return {
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": _EPERM,
        "archMap": [
            {"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]},
            {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": ["SCMP_ARCH_ARM"]},
        ],
        "syscalls": syscalls,
    }
