"""Device rules without a kernel: --device parsing, the default rules, the v1 writes, the eBPF program.

The eBPF program is run by a small interpreter of the instructions hako
emits, on every kind of access to every device a rule names, and the
verdicts are compared with the rules' meaning (the last matching rule wins).
"""

from __future__ import annotations

import itertools
import os
import stat
import sys

import pytest
from hako.cgroups import ebpf, normalize_devices
from hako.cgroups.v1 import device_writes, expected_device_list, parse_device_list
from hako.devices import DEFAULT_NODES, default_rules, docker_devices, host_nodes, oci_devices, parse_device
from hako.errors import InvalidValue
from hako.options import ContainerOptions, validate

# --------------------------------------------------------------------------
# --device


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("/dev/null", {"host": "/dev/null", "container": "/dev/null", "access": "rwm"}),
        ("/dev/null:/dev/n0", {"host": "/dev/null", "container": "/dev/n0", "access": "rwm"}),
        ("/dev/null:r", {"host": "/dev/null", "container": "/dev/null", "access": "r"}),
        ("/dev/null:/dev/x/n:mw", {"host": "/dev/null", "container": "/dev/x/n", "access": "wm"}),
        ("/dev/null:/dev//n/:rw", {"host": "/dev/null", "container": "/dev/n", "access": "rw"}),
    ],
)
def test_parse_device(spec: str, expected: dict) -> None:
    assert parse_device(spec) == expected


@pytest.mark.parametrize(
    ("spec", "why"),
    [
        ("", "expected /dev/host"),
        ("dev/null", "'dev/null' is not absolute"),
        ("/dev/null:dev/n", "permissions are made of r, w and m"),
        ("/dev/null:dev/n:rw", "'dev/n' is not absolute"),
        ("/dev/null:/dev/n:", "permissions are made of r, w and m"),
        ("/dev/null:rx", "permissions are made of r, w and m"),
        ("/dev/null:/dev/n:rr", "each at most once"),
        ("/dev/null:/dev/n:r:w", "expected /dev/host"),
        ("/dev/null:/", "must name a file"),
        ("/dev/hako-none", "/dev/hako-none: no such file or directory"),
        ("/etc/hostname", "/etc/hostname is not a character or block device"),
        ("/dev", "/dev is not a character or block device"),
    ],
)
def test_parse_device_refuses(spec: str, why: str) -> None:
    with pytest.raises(InvalidValue) as caught:
        parse_device(spec)
    message = str(caught.value)
    assert message.startswith(f"invalid value for device: {spec!r}")
    assert why in message
    assert "\n" not in message


def test_validate_keeps_parsed_devices_and_refuses_a_path_twice() -> None:
    record = validate(ContainerOptions("busybox", devices=["/dev/zero:/dev/z:r"]))
    assert record["devices"] == [{"host": "/dev/zero", "container": "/dev/z", "access": "r"}]
    assert validate(ContainerOptions("busybox"))["devices"] == []
    with pytest.raises(InvalidValue, match="named twice"):
        validate(ContainerOptions("busybox", devices=["/dev/zero:/dev/z", "/dev/null:/dev/z"]))


def test_docker_devices() -> None:
    assert docker_devices([{"host": "/dev/zero", "container": "/dev/z", "access": "r"}]) == [
        {"PathOnHost": "/dev/zero", "PathInContainer": "/dev/z", "CgroupPermissions": "r"}
    ]


# --------------------------------------------------------------------------
# The rules and nodes of a container


def test_default_rules_deny_all_then_allow_mknod_and_the_standard_nodes() -> None:
    rules = default_rules()
    assert rules[:3] == [
        {"allow": False, "access": "rwm"},
        {"allow": True, "type": "c", "access": "m"},
        {"allow": True, "type": "b", "access": "m"},
    ]
    allowed = {(r["type"], r["major"], r.get("minor")) for r in rules[3:] if r["access"] == "rwm"}
    assert allowed == {
        ("c", 1, 3),
        ("c", 1, 5),
        ("c", 1, 7),
        ("c", 1, 8),
        ("c", 1, 9),
        ("c", 5, 0),
        ("c", 5, 1),
        ("c", 5, 2),
        ("c", 136, None),
    }
    assert all(r["allow"] for r in rules[1:])
    assert normalize_devices(rules)  # in the shape the cgroup drivers take


def test_oci_devices_of_a_passed_device() -> None:
    st = os.stat("/dev/zero")
    nodes, rules = oci_devices([{"host": "/dev/zero", "container": "/dev/z0", "access": "r"}])
    assert nodes == [
        {
            "path": "/dev/z0",
            "type": "c",
            "major": 1,
            "minor": 5,
            "fileMode": stat.S_IMODE(st.st_mode),
            "uid": st.st_uid,
            "gid": st.st_gid,
        }
    ]
    # its access replaces the default's for the same device
    assert rules[-1] == {"allow": True, "type": "c", "major": 1, "minor": 5, "access": "r"}
    assert [r for r in rules if r.get("major") == 1 and r.get("minor") == 5] == [rules[-1]]
    assert len(rules) == len(default_rules())


def test_oci_devices_of_a_default_container() -> None:
    assert oci_devices([]) == ([], default_rules())


def test_a_device_gone_by_start_is_refused() -> None:
    with pytest.raises(InvalidValue, match="no such file"):
        oci_devices([{"host": "/dev/hako-gone", "container": "/dev/g", "access": "rwm"}])


def test_privileged_allows_all_and_copies_the_host_nodes() -> None:
    nodes, rules = oci_devices([], privileged=True)
    assert rules == [{"allow": True, "access": "rwm"}]
    assert nodes == host_nodes()


def test_host_nodes_walks_dev_but_not_its_own_trees(tmp_path) -> None:
    # A /dev imitation: nodes made with mknod need the host's root.
    if os.geteuid() != 0:
        pytest.skip("mknod needs root")
    for sub in ("net", "pts", "shm", "mqueue", "mapper"):
        (tmp_path / sub).mkdir()
    os.mknod(tmp_path / "sda", stat.S_IFBLK | 0o660, os.makedev(8, 0))
    os.mknod(tmp_path / "net" / "tun", stat.S_IFCHR | 0o666, os.makedev(10, 200))
    os.mknod(tmp_path / "pts" / "0", stat.S_IFCHR | 0o620, os.makedev(136, 0))
    os.mknod(tmp_path / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    os.mknod(tmp_path / "mapper" / "control", stat.S_IFCHR | 0o600, os.makedev(10, 236))
    for node in ("sda", "net/tun", "mapper/control"):
        os.chmod(tmp_path / node, {"sda": 0o660, "net/tun": 0o666}.get(node, 0o600))
    (tmp_path / "stdin").symlink_to("/proc/self/fd/0")
    (tmp_path / "regular").write_text("")
    found = [(n["path"], n["type"], n["major"], n["minor"], n["fileMode"]) for n in host_nodes(str(tmp_path))]
    assert found == [
        ("/dev/sda", "b", 8, 0, 0o660),
        ("/dev/mapper/control", "c", 10, 236, 0o600),
        ("/dev/net/tun", "c", 10, 200, 0o666),
    ]


def test_default_nodes_are_the_standard_ones() -> None:
    assert [path for *_numbers, path in DEFAULT_NODES][:6] == [
        "/dev/null",
        "/dev/zero",
        "/dev/full",
        "/dev/random",
        "/dev/urandom",
        "/dev/tty",
    ]


# --------------------------------------------------------------------------
# normalize_devices


def test_normalize_devices_fills_every_key() -> None:
    assert normalize_devices(
        [{"allow": False}, {"allow": True, "type": "c", "major": 1, "minor": -1, "access": "mr"}]
    ) == [
        {"allow": False, "type": "a", "major": None, "minor": None, "access": "rwm"},
        {"allow": True, "type": "c", "major": 1, "minor": None, "access": "rm"},
    ]


@pytest.mark.parametrize(
    ("rules", "field"),
    [
        ({"allow": True}, "linux.resources.devices"),
        ([{"type": "c"}], "linux.resources.devices"),
        ([{"allow": "yes"}], "linux.resources.devices"),
        ([{"allow": True, "type": "x"}], "linux.resources.devices.type"),
        ([{"allow": True, "major": -2}], "linux.resources.devices.major"),
        ([{"allow": True, "minor": 1 << 20}], "linux.resources.devices.minor"),
        ([{"allow": True, "major": True}], "linux.resources.devices.major"),
        ([{"allow": True, "access": "rx"}], "linux.resources.devices.access"),
    ],
)
def test_normalize_devices_refuses(rules, field: str) -> None:
    with pytest.raises(InvalidValue) as caught:
        normalize_devices(rules)
    assert caught.value.field == field


# --------------------------------------------------------------------------
# cgroup v1


def test_v1_writes_of_the_default_rules() -> None:
    rules = normalize_devices(default_rules())
    writes = device_writes(rules)
    assert writes[:3] == [("devices.deny", "a"), ("devices.allow", "c *:* m"), ("devices.allow", "b *:* m")]
    assert ("devices.allow", "c 136:* rwm") in writes
    assert expected_device_list(writes) == {line for _file, line in writes[1:]}
    assert parse_device_list("\n".join(line for _f, line in writes[1:]) + "\n") == rules


def test_v1_writes_reset_to_allow_without_a_catch_all_and_split_type_a() -> None:
    rules = normalize_devices([{"allow": False, "major": 1, "minor": 3, "access": "w"}])
    writes = device_writes(rules)
    assert writes == [("devices.allow", "a"), ("devices.deny", "b 1:3 w"), ("devices.deny", "c 1:3 w")]
    assert expected_device_list(writes) == {"a *:* rwm"}
    assert parse_device_list("a *:* rwm\n") == normalize_devices([{"allow": True}])


def test_v1_expected_list_merges_and_subtracts_as_the_kernel_does() -> None:
    rules = normalize_devices(
        [
            {"allow": False},
            {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "r"},
            {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "w"},
            {"allow": True, "type": "c", "major": 1, "minor": 5, "access": "rw"},
            {"allow": False, "type": "c", "major": 1, "minor": 5, "access": "rw"},
            {"allow": True, "type": "b", "major": 8, "access": "m"},
            {"allow": False, "type": "b", "major": 8, "access": "r"},
        ]
    )
    assert expected_device_list(device_writes(rules)) == {"c 1:3 rw", "b 8:* m"}


# --------------------------------------------------------------------------
# cgroup v2: the eBPF program, run by a small interpreter


def run_program(program, kind: int, access: int, major: int, minor: int) -> int:
    """Interpret the instructions hako emits on one bpf_cgroup_dev_ctx; the verdict."""
    ctx = {0: kind | access << 16, 4: major, 8: minor}
    regs = [0] * 11
    pc = 0
    mask32 = 0xFFFFFFFF
    for _step in range(10000):
        code, dst, src, off, imm = program[pc]
        pc += 1
        if code == ebpf.LDX_W:
            assert src == 1, "loads only from the context"
            regs[dst] = ctx[off]
        elif code == ebpf.AND32_K:
            regs[dst] = regs[dst] & imm & mask32
        elif code == ebpf.RSH32_K:
            regs[dst] = (regs[dst] & mask32) >> imm
        elif code == ebpf.MOV32_K:
            regs[dst] = imm & mask32
        elif code == ebpf.MOV32_X:
            regs[dst] = regs[src] & mask32
        elif code == ebpf.JNE_K:
            if regs[dst] != imm:
                pc += off
        elif code == ebpf.JNE_X:
            if regs[dst] != regs[src]:
                pc += off
        elif code == ebpf.EXIT:
            return regs[0]
        else:
            raise AssertionError(f"unknown opcode {code:#x}")
        assert 0 <= pc < len(program), "jumped out of the program"
    raise AssertionError("no exit")


def meaning(rules: list[dict], kind: str, access: str, major: int, minor: int) -> bool:
    """What the rules say: the last one that covers the request decides; allow if none does."""
    verdict = True
    for rule in rules:
        if (
            rule["type"] in ("a", kind)
            and set(access) <= set(rule["access"])
            and rule["major"] in (None, major)
            and rule["minor"] in (None, minor)
        ):
            verdict = rule["allow"]
    return verdict


RULE_SETS = [
    default_rules(),
    [*default_rules(), {"allow": True, "type": "b", "major": 8, "minor": 0, "access": "r"}],
    [{"allow": True}],
    [{"allow": False}],
    [],
    [{"allow": False, "type": "c", "major": 1, "access": "w"}],
    [
        {"allow": False},
        {"allow": True, "major": 1},
        {"allow": False, "type": "c", "major": 1, "minor": 5, "access": "w"},
    ],
    [
        {"allow": True, "type": "c", "major": 1, "minor": 3},
        {"allow": False},
        {"allow": True, "type": "b", "access": "rw"},
    ],
    # Two catch-alls: what follows the second still counts.
    [
        {"allow": False},
        {"allow": True, "type": "c", "major": 1, "minor": 3},
        {"allow": True},
        {"allow": False, "type": "c", "major": 1, "minor": 3},
        {"allow": False, "type": "b", "major": 7},
    ],
]


@pytest.mark.parametrize("rules", RULE_SETS)
def test_the_program_decides_as_the_rules_say(rules: list[dict]) -> None:
    checked = normalize_devices(rules)
    program = ebpf.assemble(checked)
    numbers = {(r["major"] or 0, r["minor"] or 0) for r in checked} | {
        (1, 3),
        (1, 5),
        (8, 0),
        (136, 4),
        (7, 7),
    }
    accesses = ["".join(c) for n in (1, 2, 3) for c in itertools.combinations("rwm", n)]
    for (major, minor), kind, access in itertools.product(numbers, ("b", "c"), accesses):
        bits = sum(ebpf.ACCESS_BITS[c] for c in access)
        got = run_program(program, ebpf.TYPES[kind], bits, major, minor)
        assert got == int(meaning(checked, kind, access, major, minor)), (kind, major, minor, access)


def test_the_program_of_the_default_rules() -> None:
    program = ebpf.assemble(normalize_devices(default_rules()))
    assert program[: len(ebpf.PROLOGUE)] == list(ebpf.PROLOGUE)
    assert program[-2:] == [(ebpf.MOV32_K, 0, 0, 0, 0), (ebpf.EXIT, 0, 0, 0, 0)]  # deny the rest
    assert all(off >= 0 for _code, _dst, _src, off, _imm in program)  # forward jumps only
    null = ebpf.TYPES["c"], ebpf.ACCESS_READ | ebpf.ACCESS_WRITE, 1, 3
    assert run_program(program, *null) == 1
    assert run_program(program, ebpf.TYPES["b"], ebpf.ACCESS_READ, 8, 0) == 0
    assert run_program(program, ebpf.TYPES["b"], ebpf.ACCESS_MKNOD, 8, 0) == 1
    assert run_program(program, ebpf.TYPES["c"], ebpf.ACCESS_READ, 1, 1) == 0


@pytest.mark.parametrize("rules", RULE_SETS)
def test_disassemble_gives_the_rules_back(rules: list[dict]) -> None:
    checked = normalize_devices(rules)
    program = ebpf.assemble(checked)
    assert ebpf.decode(ebpf.encode(program)) == program
    back = ebpf.disassemble(program)
    # the same verdicts, from the rules after the last catch-all, behind one
    assert ebpf.assemble(back) == program
    assert ebpf.is_catch_all(back[0])


def test_disassemble_refuses_a_program_it_did_not_make() -> None:
    assert ebpf.disassemble([(ebpf.MOV32_K, 0, 0, 0, 1), (ebpf.EXIT, 0, 0, 0, 0)]) is None
    assert ebpf.disassemble([*ebpf.PROLOGUE, (0x07, 1, 0, 0, 1)]) is None


def test_encoding_is_eight_bytes_an_instruction() -> None:
    program = ebpf.assemble(normalize_devices(default_rules()))
    data = ebpf.encode(program)
    assert len(data) == 8 * len(program)
    if sys.byteorder == "little":
        # ldx r2, [r1 + 0]: opcode, then src in the high nibble and dst in the low one
        assert data[:8] == bytes([0x61, 0x12, 0, 0, 0, 0, 0, 0])
