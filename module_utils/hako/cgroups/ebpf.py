"""Device rules on cgroup v2: an eBPF program the kernel runs on every device access.

cgroup v2 has no devices controller. Instead a program of type
BPF_PROG_TYPE_CGROUP_DEVICE, attached to the cgroup, is asked about each
open or mknod of a device node by a process in it (or in a cgroup below),
and answers 1 (allow) or 0 (deny). The program is assembled here from the
rules, in the OCI ``linux.resources.devices`` order where a later rule
overrides an earlier one, so the last rule that matches decides:

    r2 = ctx->access_type & 0xffff   device type (1 block, 2 char)
    r3 = ctx->access_type >> 16      access asked for (1 mknod, 2 read, 4 write)
    r4 = ctx->major, r5 = ctx->minor
    for each rule, last first:
        if the type, access, major or minor does not match: next rule
        return rule.allow
    return the verdict of the last catch-all rule (allow if there is none)

``disassemble`` turns the kernel's copy of an attached program back into
rules, which is how the v2 driver reads its rules back.
"""

from __future__ import annotations

import errno
import os
import struct
import sys

from .. import linux

# bpf(2) commands, program and attach types, flags (linux/bpf.h).
BPF_PROG_LOAD = 5
BPF_PROG_ATTACH = 8
BPF_PROG_DETACH = 9
BPF_PROG_GET_FD_BY_ID = 13
BPF_OBJ_GET_INFO_BY_FD = 15
BPF_PROG_QUERY = 16
BPF_PROG_TYPE_CGROUP_DEVICE = 15
BPF_CGROUP_DEVICE = 6
BPF_F_ALLOW_MULTI = 2

# struct bpf_cgroup_dev_ctx: the type and access bits.
DEV_BLOCK = 1
DEV_CHAR = 2
ACCESS_MKNOD = 1
ACCESS_READ = 2
ACCESS_WRITE = 4
TYPES = {"b": DEV_BLOCK, "c": DEV_CHAR}
ACCESS_BITS = {"m": ACCESS_MKNOD, "r": ACCESS_READ, "w": ACCESS_WRITE}

# Opcodes used (class | op | source).
LDX_W = 0x61  # dst = *(u32 *)(src + off)
AND32_K = 0x54
RSH32_K = 0x74
MOV32_K = 0xB4
MOV32_X = 0xBC
JNE_K = 0x55
JNE_X = 0x5D
EXIT = 0x95

# The bpf(2) system call's number differs between architectures.
_SYS_BPF = {
    "x86_64": 321,
    "aarch64": 280,
    "arm64": 280,
    "riscv64": 280,
    "loongarch64": 280,
    "i386": 357,
    "i686": 357,
    "armv7l": 386,
    "ppc64le": 361,
    "s390x": 351,
}

# An instruction: (opcode, dst register, src register, offset, immediate).
PROLOGUE = (
    (LDX_W, 2, 1, 0, 0),
    (AND32_K, 2, 0, 0, 0xFFFF),
    (LDX_W, 3, 1, 0, 0),
    (RSH32_K, 3, 0, 0, 16),
    (LDX_W, 4, 1, 4, 0),
    (LDX_W, 5, 1, 8, 0),
)


def _mask(access: str) -> int:
    return sum(ACCESS_BITS[c] for c in access)


def is_catch_all(rule: dict) -> bool:
    """A rule about every device and every access: it overrides all rules before it."""
    return rule["type"] == "a" and rule["major"] is None and rule["minor"] is None and rule["access"] == "rwm"


def assemble(rules: list[dict]) -> list[tuple[int, int, int, int, int]]:
    """The program of checked rules (see cgroups.normalize_devices), as instruction tuples."""
    default, rest = True, rules
    for index, rule in enumerate(rules):
        if is_catch_all(rule):
            # Indexes are the whole list's: the rules after the last catch-all remain.
            default, rest = rule["allow"], rules[index + 1 :]
    program = list(PROLOGUE)
    for rule in reversed(rest):
        checks = []
        if rule["type"] != "a":
            checks.append((JNE_K, 2, 0, None, TYPES[rule["type"]]))
        if rule["access"] != "rwm":
            # the access asked for must lie within the rule's: (r3 & mask) == r3
            mask = _mask(rule["access"])
            checks += [(MOV32_X, 1, 3, 0, 0), (AND32_K, 1, 0, 0, mask), (JNE_X, 1, 3, None, 0)]
        if rule["major"] is not None:
            checks.append((JNE_K, 4, 0, None, rule["major"]))
        if rule["minor"] is not None:
            checks.append((JNE_K, 5, 0, None, rule["minor"]))
        block = checks + [(MOV32_K, 0, 0, 0, int(rule["allow"])), (EXIT, 0, 0, 0, 0)]
        # an unmet check jumps past the block, to the next rule
        for pc, (code, dst, src, off, imm) in enumerate(block):
            program.append((code, dst, src, len(block) - pc - 1 if off is None else off, imm))
    program += [(MOV32_K, 0, 0, 0, int(default)), (EXIT, 0, 0, 0, 0)]
    return program


def encode(program: list[tuple[int, int, int, int, int]]) -> bytes:
    """struct bpf_insn[] in this machine's byte order."""
    little = sys.byteorder == "little"
    return b"".join(
        struct.pack("=BBhi", code, (src << 4 | dst) if little else (dst << 4 | src), off, imm)
        for code, dst, src, off, imm in program
    )


def decode(data: bytes) -> list[tuple[int, int, int, int, int]]:
    little = sys.byteorder == "little"
    program = []
    for offset in range(0, len(data) - len(data) % 8, 8):
        code, regs, off, imm = struct.unpack_from("=BBhi", data, offset)
        dst, src = (regs & 15, regs >> 4) if little else (regs >> 4, regs & 15)
        program.append((code, dst, src, off, imm))
    return program


def disassemble(program: list[tuple[int, int, int, int, int]]) -> list[dict] | None:
    """The rules a program made by ``assemble`` enforces; None for any other program."""
    if tuple(program[: len(PROLOGUE)]) != PROLOGUE:
        return None
    names = {v: k for k, v in TYPES.items()}
    blocks: list[dict] = []
    rule: dict = {"type": "a", "major": None, "minor": None, "access": "rwm"}
    pc = len(PROLOGUE)
    while pc < len(program):
        code, dst, src, off, imm = program[pc]
        if code == JNE_K and dst == 2 and imm in names:
            rule["type"] = names[imm]
        elif code == MOV32_X and pc + 2 < len(program) and program[pc + 2][:3] == (JNE_X, 1, 3):
            mask = program[pc + 1][4]
            rule["access"] = "".join(c for c in "rwm" if ACCESS_BITS[c] & mask)
            pc += 2
        elif code == JNE_K and dst == 4:
            rule["major"] = imm
        elif code == JNE_K and dst == 5:
            rule["minor"] = imm
        elif code == MOV32_K and dst == 0 and pc + 1 < len(program) and program[pc + 1][0] == EXIT:
            blocks.append({"allow": bool(imm), **rule})
            rule = {"type": "a", "major": None, "minor": None, "access": "rwm"}
            pc += 1
        else:
            return None
        pc += 1
    if not blocks or not is_catch_all(blocks[-1]):
        return None
    # the last block is the default: a catch-all that comes first
    return [blocks[-1], *reversed(blocks[:-1])]


# --------------------------------------------------------------------------
# The kernel side


def _bpf(command: int, attr: bytearray) -> int:
    import ctypes

    number = _SYS_BPF.get(os.uname().machine)
    if number is None:
        raise OSError(errno.ENOSYS, f"bpf: unknown system call number on {os.uname().machine}")
    buffer = (ctypes.c_char * len(attr)).from_buffer(attr)
    size = ctypes.c_long(len(attr))
    result = linux.libc().syscall(ctypes.c_long(number), ctypes.c_long(command), buffer, size)
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return result


def _address(buffer) -> int:
    """The address of a ctypes buffer or of a bytearray's bytes (which must then stay alive)."""
    import ctypes

    if isinstance(buffer, bytearray):
        buffer = (ctypes.c_char * len(buffer)).from_buffer(buffer)
    return ctypes.addressof(buffer)


def load(program: list[tuple[int, int, int, int, int]]) -> int:
    """Load a device program; its file descriptor. The verifier's log is in the error."""
    import ctypes

    code = ctypes.create_string_buffer(encode(program))
    license = ctypes.create_string_buffer(b"GPL")
    log = ctypes.create_string_buffer(1 << 16)
    for log_level in (0, 1):
        attr = bytearray(
            struct.pack(
                "=IIQQIIQII16sII",
                BPF_PROG_TYPE_CGROUP_DEVICE,
                len(program),
                _address(code),
                _address(license),
                log_level,
                len(log) if log_level else 0,
                _address(log) if log_level else 0,
                0,
                0,
                b"hako_devices",
                0,
                0,
            )
        )
        try:
            return _bpf(BPF_PROG_LOAD, attr)
        except OSError as e:
            if log_level or e.errno not in (errno.EINVAL, errno.EACCES):
                why = log.value.decode(errors="replace").strip().splitlines()
                raise OSError(e.errno, f"{e.strerror}{': ' + why[-1] if why else ''}") from None
    raise AssertionError("unreachable")


def attached(cgroup_fd: int) -> list[int]:
    """IDs of the device programs attached to the cgroup itself (not those inherited)."""
    import ctypes

    ids = (ctypes.c_uint32 * 64)()
    attr = bytearray(struct.pack("=IIIIQI4x", cgroup_fd, BPF_CGROUP_DEVICE, 0, 0, _address(ids), len(ids)))
    _bpf(BPF_PROG_QUERY, attr)
    count = struct.unpack_from("=I", attr, 24)[0]
    return list(ids[:count])


def _prog_fd(prog_id: int) -> int:
    return _bpf(BPF_PROG_GET_FD_BY_ID, bytearray(struct.pack("=III", prog_id, 0, 0)))


def _attach_attr(cgroup_fd: int, prog_fd: int, flags: int) -> bytearray:
    return bytearray(struct.pack("=IIIII", cgroup_fd, prog_fd, BPF_CGROUP_DEVICE, flags, 0))


def replace(cgroup_fd: int, program: list[tuple[int, int, int, int, int]]) -> None:
    """Attach ``program`` to the cgroup, then detach the device programs attached before.

    While both are attached a device must pass both, so there is no moment
    when the cgroup is less restricted than under either set of rules.
    """
    old = attached(cgroup_fd)
    prog_fd = load(program)
    try:
        _bpf(BPF_PROG_ATTACH, _attach_attr(cgroup_fd, prog_fd, BPF_F_ALLOW_MULTI))
    finally:
        os.close(prog_fd)
    for prog_id in old:
        detach(cgroup_fd, prog_id)


def detach(cgroup_fd: int, prog_id: int) -> None:
    """Detach the program with ID ``prog_id`` from the cgroup; fine if it has gone."""
    try:
        fd = _prog_fd(prog_id)
    except FileNotFoundError:
        return
    try:
        _bpf(BPF_PROG_DETACH, _attach_attr(cgroup_fd, fd, 0))
    except FileNotFoundError:
        pass
    finally:
        os.close(fd)


def instructions(prog_id: int) -> list[tuple[int, int, int, int, int]]:
    """The kernel's copy (after verification) of a loaded program's instructions."""
    import ctypes

    fd = _prog_fd(prog_id)
    try:
        info = bytearray(40)  # struct bpf_prog_info as far as xlated_prog_insns
        _bpf(BPF_OBJ_GET_INFO_BY_FD, bytearray(struct.pack("=IIQ", fd, len(info), _address(info))))
        length = struct.unpack_from("=I", info, 20)[0]
        code = ctypes.create_string_buffer(length)
        info = bytearray(40)
        struct.pack_into("=I", info, 20, length)
        struct.pack_into("=Q", info, 32, _address(code))
        _bpf(BPF_OBJ_GET_INFO_BY_FD, bytearray(struct.pack("=IIQ", fd, len(info), _address(info))))
        return decode(code.raw[:length])
    finally:
        os.close(fd)
