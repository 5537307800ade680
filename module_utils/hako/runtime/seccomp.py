"""OCI ``linux.seccomp`` compiled into a BPF program with libseccomp.

The parent compiles (libseccomp's Python binding: python3-seccomp on Debian,
or PyPI's pyseccomp); the container's process, past its change of root where
no library can be loaded, only hands the bytes to the kernel
(linux.load_seccomp). Programs are kept by their source text, so a
supervisor compiles the default profile once for all the containers it starts.
"""

from __future__ import annotations

import os

from ..errors import HakoError

_PROGRAMS: dict[str, bytes] = {}
# What libseccomp's resolve_syscall gives for a name it does not know (__NR_SCMP_ERROR).
_UNKNOWN = -1
_MAX_PROGRAMS = 32


def binding():
    """libseccomp's Python binding."""
    from ..syslib import system_module

    return system_module(
        ("seccomp", "pyseccomp"),
        "seccomp",
        "the seccomp filter needs libseccomp's Python binding (Debian: apt-get install python3-seccomp; "
        "RHEL: python3-libseccomp), or run with --security-opt seccomp=unconfined",
    )


def program(config: dict) -> bytes:
    """The BPF program of OCI ``config`` (linux.seccomp), compiled once per distinct config."""
    from .. import lean

    key = lean.dumps(config)
    found = _PROGRAMS.get(key)
    if found is None:
        found = compile_filter(config)
        if len(_PROGRAMS) >= _MAX_PROGRAMS:
            _PROGRAMS.clear()
        _PROGRAMS[key] = found
    return found


def _action(lib, name: str, errno_ret: int | None):
    if name == "SCMP_ACT_ALLOW":
        return lib.ALLOW
    if name == "SCMP_ACT_ERRNO":
        return lib.ERRNO(1 if errno_ret is None else errno_ret)
    if name in ("SCMP_ACT_KILL", "SCMP_ACT_KILL_THREAD"):
        return lib.KILL
    if name == "SCMP_ACT_KILL_PROCESS":
        return lib.KILL_PROCESS
    if name == "SCMP_ACT_TRAP":
        return lib.TRAP
    if name == "SCMP_ACT_LOG":
        return lib.LOG
    if name == "SCMP_ACT_TRACE":
        return lib.TRACE(1 if errno_ret is None else errno_ret)
    raise HakoError(f"seccomp: unknown action {name!r}")


_OPERATORS = {
    "SCMP_CMP_NE": "NE",
    "SCMP_CMP_LT": "LT",
    "SCMP_CMP_LE": "LE",
    "SCMP_CMP_EQ": "EQ",
    "SCMP_CMP_GE": "GE",
    "SCMP_CMP_GT": "GT",
    "SCMP_CMP_MASKED_EQ": "MASKED_EQ",
}


def _resolve(lib, name: str) -> int | None:
    """The native number of system call ``name`` (negative for another architecture's), _UNKNOWN
    if libseccomp knows no such call, None if this binding cannot tell."""
    resolve = getattr(lib, "resolve_syscall", None)
    if resolve is None:
        return None
    try:
        return resolve(lib.Arch.NATIVE, name)
    except ValueError:
        return _UNKNOWN


def compile_filter(config: dict) -> bytes:
    """Compile OCI ``linux.seccomp`` for the host's architecture and those the config adds."""
    lib = binding()
    default = _action(lib, config["defaultAction"], config.get("defaultErrnoRet"))
    flt = lib.SyscallFilter(default)
    # The process loads the program itself (after no_new_privs where asked).
    flt.set_attr(lib.Attr.CTL_NNP, 0)
    native = lib.system_arch()
    for name in config.get("architectures") or []:
        arch = getattr(lib.Arch, name.replace("SCMP_ARCH_", ""), None)
        if arch is None:
            continue  # an architecture this libseccomp does not know cannot run here either
        if arch != native and not flt.exist_arch(arch):
            flt.add_arch(arch)
    for index, rule in enumerate(config.get("syscalls") or []):
        action = _action(lib, rule["action"], rule.get("errnoRet"))
        if action == default:
            continue  # libseccomp refuses a rule that repeats the default
        args = [
            lib.Arg(a["index"], getattr(lib, _OPERATORS[a["op"]]), a.get("value", 0), a.get("valueTwo", 0))
            for a in rule.get("args") or []
        ]
        for name in rule["names"]:
            number = _resolve(lib, name)
            if number == _UNKNOWN:
                # A name this libseccomp does not know (a newer kernel's
                # call): the default action decides it.
                continue
            try:
                flt.add_rule(action, name, *args)
            except RuntimeError as e:
                if number is None:
                    continue  # a binding that cannot tell an unknown name from a bad rule
                # Anything else (an errno out of range, arguments libseccomp
                # cannot combine) must not silently drop a rule: with an
                # allowing default that would lift what the rule refuses.
                raise HakoError(
                    f"seccomp: syscalls[{index}] ({rule['action']} {name}) cannot be compiled: {e}"
                ) from None
    fd = os.memfd_create("hako-seccomp", os.MFD_CLOEXEC)
    with os.fdopen(fd, "w+b") as out:
        flt.export_bpf(out)
        out.flush()
        out.seek(0)
        return out.read()
