"""The cgroup package's pure logic, and the v2 driver against a directory tree
shaped like a cgroup2 hierarchy (plain files where the kernel has its own)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hako import cgroups
from hako.cgroups import (
    CgroupError,
    detect_mode,
    detect_mode_from_mountinfo,
    open_cgroup,
    parse_cpu_list,
    parse_keyed,
    parse_mountinfo,
    shares_to_weight,
    v1_hierarchies_from_mountinfo,
    weight_to_shares,
)
from hako.cgroups.v1 import V1Cgroup
from hako.cgroups.v2 import V2Cgroup
from hako.errors import HakoError, InvalidValue

# --------------------------------------------------------------------------
# shares <-> weight


@pytest.mark.parametrize(
    ("shares", "weight"),
    [
        (2, 1),
        (1024, 39),
        (262144, 10000),
        (0, 1),  # below the v1 range: clamped
        (1, 1),
        (10**9, 10000),  # above it: clamped
        (512, 20),
        (4096, 157),
    ],
)
def test_shares_to_weight(shares: int, weight: int) -> None:
    assert shares_to_weight(shares) == weight


@pytest.mark.parametrize("weight", [1, 2, 39, 100, 5000, 9999, 10000])
def test_weight_to_shares_round_trips(weight: int) -> None:
    shares = weight_to_shares(weight)
    assert 2 <= shares <= 262144
    assert shares_to_weight(shares) == weight
    # the smallest such shares value
    assert shares == 2 or shares_to_weight(shares - 1) == weight - 1


# --------------------------------------------------------------------------
# parsing of kernel files

CPU_STAT_V1 = """nr_periods 15
nr_throttled 12
throttled_time 1234567
nr_bursts 0
burst_time 0
"""

CPU_STAT_V2 = """usage_usec 2500
user_usec 2000
system_usec 500
nr_periods 7
nr_throttled 3
throttled_usec 42
"""

OOM_CONTROL = """oom_kill_disable 0
under_oom 0
oom_kill 2
"""

MEMORY_STAT = """cache 135168
rss 413696
total_rss 413696
hierarchical_memory_limit 33554432
"""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            CPU_STAT_V1,
            {
                "nr_periods": 15,
                "nr_throttled": 12,
                "throttled_time": 1234567,
                "nr_bursts": 0,
                "burst_time": 0,
            },
        ),
        (
            CPU_STAT_V2,
            {
                "usage_usec": 2500,
                "user_usec": 2000,
                "system_usec": 500,
                "nr_periods": 7,
                "nr_throttled": 3,
                "throttled_usec": 42,
            },
        ),
        (OOM_CONTROL, {"oom_kill_disable": 0, "under_oom": 0, "oom_kill": 2}),
        (
            MEMORY_STAT,
            {
                "cache": 135168,
                "rss": 413696,
                "total_rss": 413696,
                "hierarchical_memory_limit": 33554432,
            },
        ),
        ("populated 1\nfrozen 0\n", {"populated": 1, "frozen": 0}),
        ("", {}),
        ("odd line with words\nkey notanumber\nok 5\n", {"ok": 5}),
    ],
)
def test_parse_keyed(text: str, expected: dict[str, int]) -> None:
    assert parse_keyed(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", ()),
        ("\n", ()),
        ("0", ((0, 0),)),
        ("0-1", ((0, 1),)),
        ("0,1", ((0, 1),)),
        ("0-1\n", ((0, 1),)),
        ("3,0-1", ((0, 1), (3, 3))),
        ("0-3,2-5,7", ((0, 5), (7, 7))),
    ],
)
def test_parse_cpu_list(text: str, expected: tuple[tuple[int, int], ...]) -> None:
    assert parse_cpu_list(text) == expected


@pytest.mark.parametrize("text", ["a", "1-", "3-1", "-1", "+1", "1_0", "0-1,x"])
def test_parse_cpu_list_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_cpu_list(text)


# --------------------------------------------------------------------------
# mode detection from mountinfo text

HYBRID = """\
23 1 0:21 / /sys rw,nosuid - sysfs sysfs rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""

LEGACY_COMOUNTED = """\
31 23 0:28 / /sys/fs/cgroup ro,nosuid shared:9 - tmpfs tmpfs ro,mode=755
34 31 0:31 / /sys/fs/cgroup/cpu,cpuacct rw shared:15 - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw shared:16 - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/pids rw shared:17 master:3 - cgroup cgroup rw,pids
"""

UNIFIED = """\
22 1 0:20 / /proc rw - proc proc rw
26 23 0:23 / /sys/fs/cgroup rw,nosuid,nodev,noexec shared:9 - cgroup2 cgroup2 rw,nsdelegate
"""

# A tmpfs mounted over a cgroup2 mount hides it (some container setups).
HIDDEN = UNIFIED + "90 26 0:50 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n"

ESCAPED = "50 1 0:40 / /mnt/my\\040cgroups rw - cgroup2 cgroup2 rw\n"


@pytest.mark.parametrize(
    ("text", "root", "mode"),
    [
        (HYBRID, "/sys/fs/cgroup", "hybrid"),
        (LEGACY_COMOUNTED, "/sys/fs/cgroup", "legacy"),
        (UNIFIED, "/sys/fs/cgroup", "unified"),
        (UNIFIED, "/sys/fs/cgroup/", "unified"),
        (HIDDEN, "/sys/fs/cgroup", None),
        (HYBRID, "/elsewhere", None),
        ("", "/sys/fs/cgroup", None),
        (ESCAPED, "/mnt/my cgroups", "unified"),
        (HYBRID.replace("cgroup2 cgroup2", "tmpfs tmpfs"), "/sys/fs/cgroup", "legacy"),
    ],
)
def test_detect_mode_from_mountinfo(text: str, root: str, mode: str | None) -> None:
    assert detect_mode_from_mountinfo(text, root) == mode


def test_parse_mountinfo_optional_fields() -> None:
    mounts = parse_mountinfo(LEGACY_COMOUNTED)
    assert mounts[1] == ("/sys/fs/cgroup/cpu,cpuacct", "cgroup", ("rw", "cpu", "cpuacct"))
    assert mounts[3] == ("/sys/fs/cgroup/pids", "cgroup", ("rw", "pids"))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            HYBRID,
            {
                "cpu": "/sys/fs/cgroup/cpu",
                "cpuacct": "/sys/fs/cgroup/cpuacct",
                "memory": "/sys/fs/cgroup/memory",
            },
        ),
        (
            LEGACY_COMOUNTED,
            {
                "cpu": "/sys/fs/cgroup/cpu,cpuacct",
                "cpuacct": "/sys/fs/cgroup/cpu,cpuacct",
                "memory": "/sys/fs/cgroup/memory",
                "pids": "/sys/fs/cgroup/pids",
            },
        ),
        (UNIFIED, {}),
    ],
)
def test_v1_hierarchies_from_mountinfo(text: str, expected: dict[str, str]) -> None:
    assert v1_hierarchies_from_mountinfo(text, "/sys/fs/cgroup") == expected


# --------------------------------------------------------------------------
# mode detection and v1 hierarchies from a directory tree


def test_detect_mode_from_tree(tmp_path: Path) -> None:
    with pytest.raises(CgroupError, match="no cgroup filesystem"):
        detect_mode(str(tmp_path))
    (tmp_path / "memory").mkdir()
    assert detect_mode(str(tmp_path)) == "legacy"
    (tmp_path / "unified").mkdir()
    (tmp_path / "unified" / "cgroup.controllers").write_text("")
    assert detect_mode(str(tmp_path)) == "hybrid"
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "cgroup.controllers").write_text("cpu memory\n")
    assert detect_mode(str(v2)) == "unified"


def test_open_cgroup_picks_driver(tmp_path: Path) -> None:
    assert isinstance(open_cgroup("hako/a", "unified", str(tmp_path)), V2Cgroup)
    (tmp_path / "memory").mkdir()
    for mode in ("hybrid", "legacy", None):
        cg = open_cgroup("hako/a", mode, str(tmp_path))
        assert isinstance(cg, V1Cgroup)
        assert cg.version == 1
    with pytest.raises(InvalidValue):
        open_cgroup("hako/a", "v3", str(tmp_path))


@pytest.mark.parametrize("name", ["", "/abs", "a/../b", "a//b", "a/", ".", "a\0b"])
def test_bad_names(tmp_path: Path, name: str) -> None:
    with pytest.raises(InvalidValue):
        V2Cgroup(str(tmp_path), name)


def test_v1_comounted_tree_is_created_once(tmp_path: Path) -> None:
    # cpu and cpuacct co-mounted, with the usual symlinks beside them
    (tmp_path / "cpu,cpuacct").mkdir()
    (tmp_path / "cpu").symlink_to("cpu,cpuacct")
    (tmp_path / "cpuacct").symlink_to("cpu,cpuacct")
    (tmp_path / "memory").mkdir()
    (tmp_path / "systemd").mkdir()  # a named hierarchy: not ours
    (tmp_path / "unified").mkdir()
    cg = V1Cgroup(str(tmp_path), "hako/x")
    both = str(tmp_path / "cpu,cpuacct" / "hako" / "x")
    assert cg.paths() == {
        "cpu": both,
        "cpuacct": both,
        "memory": str(tmp_path / "memory" / "hako" / "x"),
    }
    assert not cg.exists()
    cg.create()
    cg.create()  # idempotent
    assert cg.exists()
    assert sorted(os.listdir(tmp_path / "cpu,cpuacct" / "hako")) == ["x"]
    assert not (tmp_path / "systemd" / "hako").exists()
    assert not (tmp_path / "unified" / "hako").exists()


def test_v1_missing_controller(tmp_path: Path) -> None:
    (tmp_path / "memory").mkdir()
    cg = V1Cgroup(str(tmp_path), "hako/x")
    with pytest.raises(CgroupError, match="pids controller"):
        cg.apply({"pids": {"limit": 10}})


# --------------------------------------------------------------------------
# input checking

BAD_RESOURCES = [
    ("not a dict", "linux.resources"),
    ({"memory": 5}, "linux.resources.memory"),
    ({"memory": {"limit": "64m"}}, "linux.resources.memory.limit"),
    ({"memory": {"limit": True}}, "linux.resources.memory.limit"),
    ({"memory": {"limit": -2}}, "linux.resources.memory.limit"),
    ({"memory": {"reservation": 1}}, "linux.resources.memory.reservation"),
    ({"cpu": {"cpus": 3}}, "linux.resources.cpu.cpus"),
    ({"cpu": {"mems": "0-"}}, "linux.resources.cpu.mems"),
    ({"memory": {"limit": 100, "swap": 50}}, "linux.resources.memory.swap"),
    ({"memory": {"limit": -1, "swap": 50}}, "linux.resources.memory.swap"),
]


@pytest.mark.parametrize(("resources", "field"), BAD_RESOURCES)
def test_bad_resources(v2tree: Path, resources: object, field: str) -> None:
    cg = V2Cgroup(str(v2tree), "hako/x")
    with pytest.raises(InvalidValue) as caught:
        cg.apply(resources)  # type: ignore[arg-type]
    assert caught.value.field == field
    assert isinstance(caught.value, HakoError)


def test_errors_are_hako_errors() -> None:
    assert issubclass(CgroupError, HakoError)


# --------------------------------------------------------------------------
# the v2 driver against an imitation cgroup2 tree

LEAF_FILES = {
    "cgroup.controllers": "cpuset cpu memory pids\n",
    "cgroup.subtree_control": "\n",
    "cgroup.procs": "",
    "cgroup.events": "populated 0\nfrozen 0\n",
    "cgroup.freeze": "0\n",
    "memory.max": "max\n",
    "memory.swap.max": "max\n",
    "memory.current": "1048576\n",
    "memory.peak": "2097152\n",
    "memory.events": "low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\n",
    "cpu.max": "max 100000\n",
    "cpu.weight": "100\n",
    "cpu.stat": CPU_STAT_V2,
    "cpuset.cpus": "\n",
    "cpuset.mems": "\n",
    "pids.max": "max\n",
    "pids.current": "3\n",
}


@pytest.fixture
def v2tree(tmp_path: Path) -> Path:
    """root/ and root/hako/ as parents, root/hako/x as a cgroup with its files."""
    root = tmp_path / "cg2"
    for directory in (root, root / "hako"):
        directory.mkdir()
        (directory / "cgroup.controllers").write_text("cpuset cpu io memory hugetlb pids\n")
        (directory / "cgroup.subtree_control").write_text("\n")
    leaf = root / "hako" / "x"
    leaf.mkdir()
    for name, text in LEAF_FILES.items():
        (leaf / name).write_text(text)
    return root


def read(path: Path) -> str:
    return path.read_text().strip()


def test_v2_create_enables_controllers(v2tree: Path) -> None:
    cg = V2Cgroup(str(v2tree), "hako/x")
    assert cg.exists()
    cg.create()
    # every level above the cgroup, only the controllers hako uses (no io, hugetlb)
    for level in (v2tree, v2tree / "hako"):
        assert read(level / "cgroup.subtree_control") == "+cpu +cpuset +memory +pids"
    assert read(v2tree / "hako" / "x" / "cgroup.subtree_control") == ""


def test_v2_create_skips_enabled(v2tree: Path) -> None:
    (v2tree / "cgroup.subtree_control").write_text("cpuset cpu memory pids\n")
    V2Cgroup(str(v2tree), "hako/x").create()
    assert read(v2tree / "cgroup.subtree_control") == "cpuset cpu memory pids"


RESOURCES = {
    "memory": {"limit": 64 << 20, "swap": 96 << 20},
    "cpu": {"shares": 1024, "quota": 20000, "period": 100000, "cpus": "0", "mems": "0"},
    "pids": {"limit": 50},
}


def test_v2_apply_and_read_back(v2tree: Path) -> None:
    cg = V2Cgroup(str(v2tree), "hako/x")
    cg.apply(RESOURCES)
    leaf = v2tree / "hako" / "x"
    assert read(leaf / "memory.max") == str(64 << 20)
    assert read(leaf / "memory.swap.max") == str(32 << 20)  # swap alone, not memory+swap
    assert read(leaf / "cpu.max") == "20000 100000"
    assert read(leaf / "cpu.weight") == "39"
    assert read(leaf / "pids.max") == "50"
    got = cg.read_resources()
    expected = {
        "memory": {"limit": 64 << 20, "swap": 96 << 20},
        "cpu": {
            "shares": weight_to_shares(39),
            "quota": 20000,
            "period": 100000,
            "cpus": "0",
            "mems": "0",
        },
        "pids": {"limit": 50},
    }
    assert got == expected
    assert shares_to_weight(got["cpu"]["shares"]) == shares_to_weight(1024)


def test_v2_unlimited_is_max(v2tree: Path) -> None:
    cg = V2Cgroup(str(v2tree), "hako/x")
    cg.apply(RESOURCES)
    cg.apply({"memory": {"limit": -1, "swap": -1}, "cpu": {"quota": -1}, "pids": {"limit": -1}})
    leaf = v2tree / "hako" / "x"
    for name, value in [
        ("memory.max", "max"),
        ("memory.swap.max", "max"),
        ("cpu.max", "max 100000"),
        ("pids.max", "max"),
    ]:
        assert read(leaf / name) == value
    got = cg.read_resources()
    assert got["memory"] == {"limit": -1, "swap": -1}
    assert (got["cpu"]["quota"], got["pids"]["limit"]) == (-1, -1)


@pytest.mark.parametrize("limit", [0, -1, -5])
def test_v2_pids_not_positive_is_max(v2tree: Path, limit: int) -> None:
    V2Cgroup(str(v2tree), "hako/x").apply({"pids": {"limit": limit}})
    assert read(v2tree / "hako" / "x" / "pids.max") == "max"


def test_v2_partial_updates_keep_the_rest(v2tree: Path) -> None:
    cg = V2Cgroup(str(v2tree), "hako/x")
    cg.apply(RESOURCES)
    cg.apply({"cpu": {"period": 50000}})
    assert read(v2tree / "hako" / "x" / "cpu.max") == "20000 50000"
    # swap alone is computed against the memory limit in force
    cg.apply({"memory": {"swap": 80 << 20}})
    assert read(v2tree / "hako" / "x" / "memory.swap.max") == str(16 << 20)
    assert cg.read_resources()["memory"] == {"limit": 64 << 20, "swap": 80 << 20}


def test_v2_readback_mismatch(v2tree: Path) -> None:
    # /dev/null takes every write and reads back nothing, like a kernel
    # that accepts a value and then ignores it
    leaf = v2tree / "hako" / "x" / "pids.max"
    os.remove(leaf)
    os.symlink("/dev/null", leaf)
    cg = V2Cgroup(str(v2tree), "hako/x")
    with pytest.raises(CgroupError) as caught:
        cg.apply({"pids": {"limit": 50}})
    message = str(caught.value)
    assert "pids.max=50" in message
    assert "\n" not in message


def test_v2_refused_write(v2tree: Path) -> None:
    leaf = v2tree / "hako" / "x" / "cpu.weight"
    os.remove(leaf)
    leaf.mkdir()  # writing to it fails with EISDIR, as a refused write fails
    cg = V2Cgroup(str(v2tree), "hako/x")
    with pytest.raises(CgroupError, match=r"kernel refused cpu.weight=39: Is a directory"):
        cg.apply({"cpu": {"shares": 1024}})


@pytest.mark.parametrize(
    ("resources", "controller"),
    [
        ({"memory": {"limit": 1 << 30}}, "memory"),
        ({"cpu": {"shares": 512}}, "cpu"),
        ({"cpu": {"cpus": "0"}}, "cpuset"),
        ({"pids": {"limit": 5}}, "pids"),
    ],
)
def test_v2_missing_controller(v2tree: Path, resources: dict, controller: str) -> None:
    leaf = v2tree / "hako" / "x"
    (leaf / "cgroup.controllers").write_text("\n")
    before = {name: read(leaf / name) for name in LEAF_FILES}
    with pytest.raises(CgroupError, match=f"the {controller} controller is not available"):
        V2Cgroup(str(v2tree), "hako/x").apply(resources)
    assert {name: read(leaf / name) for name in LEAF_FILES} == before


def test_v2_nothing_written_before_a_missing_controller(v2tree: Path) -> None:
    leaf = v2tree / "hako" / "x"
    (leaf / "cgroup.controllers").write_text("memory\n")
    with pytest.raises(CgroupError, match="pids controller"):
        V2Cgroup(str(v2tree), "hako/x").apply({"memory": {"limit": 1 << 30}, "pids": {"limit": 5}})
    assert read(leaf / "memory.max") == "max"


def test_v2_stats(v2tree: Path) -> None:
    (v2tree / "hako" / "x" / "memory.max").write_text("33554432\n")
    stats = V2Cgroup(str(v2tree), "hako/x").stats()
    assert stats == cgroups.Stats(
        memory_usage=1048576,
        memory_limit=33554432,
        memory_max_usage=2097152,
        oom_kills=1,
        memory_failcnt=4,
        cpu_usage_ns=2500000,
        nr_periods=7,
        nr_throttled=3,
        throttled_ns=42000,
        pids_current=3,
        pids_limit=-1,
    )


def test_v2_stats_without_controllers(v2tree: Path) -> None:
    leaf = v2tree / "hako" / "x"
    for name in LEAF_FILES:
        if name.split(".")[0] in ("memory", "pids"):
            os.remove(leaf / name)
    (leaf / "cpu.stat").write_text("usage_usec 7\nuser_usec 5\nsystem_usec 2\n")
    stats = V2Cgroup(str(v2tree), "hako/x").stats()
    assert (stats.memory_usage, stats.memory_limit, stats.memory_max_usage) == (0, -1, None)
    assert (stats.pids_current, stats.pids_limit, stats.oom_kills) == (0, -1, 0)
    assert (stats.cpu_usage_ns, stats.nr_throttled) == (7000, 0)


def test_v2_frozen_reads_events(v2tree: Path) -> None:
    cg = V2Cgroup(str(v2tree), "hako/x")
    assert not cg.frozen()
    (v2tree / "hako" / "x" / "cgroup.events").write_text("populated 1\nfrozen 1\n")
    assert cg.frozen()


def test_v2_paths_and_procs(v2tree: Path) -> None:
    (v2tree / "hako" / "x" / "cgroup.procs").write_text("12\n7\n")
    cg = V2Cgroup(str(v2tree), "hako/x")
    assert cg.paths() == {"unified": str(v2tree / "hako" / "x")}
    assert cg.procs() == [7, 12]


def test_stats_fields_in_order_with_their_defaults() -> None:
    stats = cgroups.Stats(oom_kills=2)
    assert stats.oom_kills == 2 and stats.memory_limit == -1 and stats.memory_failcnt is None
    assert list(stats.as_dict()) == [
        "memory_usage",
        "memory_limit",
        "memory_max_usage",
        "oom_kills",
        "memory_failcnt",
        "cpu_usage_ns",
        "nr_periods",
        "nr_throttled",
        "throttled_ns",
        "pids_current",
        "pids_limit",
    ]
