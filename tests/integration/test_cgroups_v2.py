"""The cgroup v2 driver against the real kernel (as root).

On a hybrid host it runs on the cgroup2 mount at /sys/fs/cgroup/unified,
which has the core files (cgroup.procs, cgroup.freeze, cgroup.kill,
cgroup.events) but no controllers; on a unified host on /sys/fs/cgroup.
Each test works in <root>/hako-test/<random> and removes it, and the
hako-test parent, even when it fails.
"""

from __future__ import annotations

import errno
import glob
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Callable

import pytest
from hako.cgroups import V2_CONTROLLERS, CgroupError, detect_mode
from hako.cgroups.v2 import V2Cgroup

PARENT = "hako-test"


def _v2_root() -> str | None:
    try:
        mode = detect_mode("/sys/fs/cgroup")
    except CgroupError:
        return None
    if mode == "unified":
        return "/sys/fs/cgroup"
    if mode == "hybrid":
        return "/sys/fs/cgroup/unified"
    return None


ROOT = _v2_root() or "/sys/fs/cgroup/unified"

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(_v2_root() is None, reason="needs a cgroup2 mount"),
]


def leftovers() -> list[str]:
    return glob.glob(f"/sys/fs/cgroup/*/{PARENT}") + glob.glob(f"/sys/fs/cgroup/{PARENT}")


@pytest.fixture
def cg() -> Iterator[V2Cgroup]:
    group = V2Cgroup(ROOT, f"{PARENT}/{secrets.token_hex(8)}")
    try:
        yield group
    finally:
        try:
            group.remove()
        finally:
            try:
                os.rmdir(os.path.join(ROOT, PARENT))
            except FileNotFoundError:
                pass
            except OSError as err:
                # left in place for the leftovers check to report
                assert err.errno in (errno.ENOTEMPTY, errno.EBUSY), err
    assert not leftovers()


Spawn = Callable[..., subprocess.Popen]


@pytest.fixture
def spawn(cg: V2Cgroup) -> Iterator[Spawn]:
    """Start processes that are killed and reaped even if the test fails."""
    started: list[subprocess.Popen] = []

    def start(*argv: str, stdin: int | None = None) -> subprocess.Popen:
        proc = subprocess.Popen(argv, stdin=stdin)
        started.append(proc)
        return proc

    try:
        yield start
    finally:
        try:
            # first, as a frozen process cannot die of SIGKILL before it is thawed
            cg.remove()
        finally:
            for proc in started:
                if proc.poll() is None:
                    proc.kill()
                proc.wait(timeout=10)


BUSY = (sys.executable, "-c", "while True: pass")
SLEEP = ("sleep", "600")


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def unified_path(pid: int) -> str:
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        if line.startswith("0::"):
            return line[3:]
    raise AssertionError(f"process {pid} is in no cgroup2 cgroup")


def test_create_with_nothing_to_enable(cg: V2Cgroup) -> None:
    control = Path(ROOT, "cgroup.subtree_control")
    before = control.read_text()
    available = Path(ROOT, "cgroup.controllers").read_text().split()
    assert not cg.exists()
    cg.create()
    cg.create()
    assert cg.exists()
    assert cg.paths() == {"unified": os.path.join(ROOT, cg.name)}
    if not set(available) & set(V2_CONTROLLERS):
        # nothing hako uses is offered here, so nothing was enabled
        assert control.read_text() == before
    else:
        enabled = Path(ROOT, PARENT, "cgroup.subtree_control").read_text().split()
        assert set(enabled) == set(available) & set(V2_CONTROLLERS)


def test_read_resources_lists_only_present_controllers(cg: V2Cgroup) -> None:
    cg.create()
    available = set(Path(cg.path, "cgroup.controllers").read_text().split())
    got = cg.read_resources()
    assert ("memory" in got) == ("memory" in available)
    assert ("pids" in got) == ("pids" in available)


def test_missing_controller_is_named(cg: V2Cgroup) -> None:
    cg.create()
    available = Path(cg.path, "cgroup.controllers").read_text().split()
    for controller, resources in [
        ("memory", {"memory": {"limit": 64 << 20}}),
        ("pids", {"pids": {"limit": 10}}),
        ("cpu", {"cpu": {"quota": 20000, "period": 100000}}),
        ("cpuset", {"cpu": {"cpus": "0"}}),
    ]:
        if controller in available:
            continue
        with pytest.raises(CgroupError, match=f"the {controller} controller is not available"):
            cg.apply(resources)
        break
    else:
        pytest.skip("every controller hako uses is available here")


def test_process_life_cycle(cg: V2Cgroup, spawn: Spawn) -> None:
    cg.create()
    proc = spawn(*BUSY)
    cg.add_process(proc.pid)
    assert cg.procs() == [proc.pid]
    assert unified_path(proc.pid) == "/" + cg.name

    cg.freeze()
    assert cg.frozen()
    ticks = cpu_ticks(proc.pid)
    time.sleep(0.3)
    assert cpu_ticks(proc.pid) == ticks
    assert proc.poll() is None

    cg.thaw()
    assert not cg.frozen()
    time.sleep(0.3)
    assert cpu_ticks(proc.pid) > ticks
    # usage_usec is a core cpu.stat key, there even without the cpu controller
    assert cg.stats().cpu_usage_ns > 0

    assert os.path.exists(os.path.join(cg.path, "cgroup.kill"))
    cg.kill_all()
    assert proc.wait(timeout=5) == -9
    assert cg.procs() == []
    cg.remove()
    assert not cg.exists()


def test_kill_all_of_a_frozen_cgroup(cg: V2Cgroup, spawn: Spawn) -> None:
    cg.create()
    # The shell waits for a line, so that it forks only once it is in the cgroup.
    script = "read go; for i in 1 2 3; do sleep 600 & done; wait"
    proc = spawn("sh", "-c", script, stdin=subprocess.PIPE)
    cg.add_process(proc.pid)
    proc.stdin.write(b"go\n")  # type: ignore[union-attr]
    proc.stdin.close()  # type: ignore[union-attr]
    deadline = time.monotonic() + 5
    while len(cg.procs()) < 4 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(cg.procs()) == 4
    cg.freeze()
    cg.kill_all()
    assert cg.procs() == []
    assert proc.wait(timeout=5) == -9
    assert not cg.frozen()  # a process added later must not freeze on arrival


def test_other_signals_go_one_by_one(cg: V2Cgroup, spawn: Spawn) -> None:
    cg.create()
    proc = spawn(*SLEEP)
    cg.add_process(proc.pid)
    cg.kill_all(15)
    assert proc.wait(timeout=5) == -15


def test_remove_takes_processes_and_nested_cgroups(cg: V2Cgroup, spawn: Spawn) -> None:
    cg.create()
    nested = os.path.join(cg.path, "inner")
    os.mkdir(nested)
    proc = spawn(*SLEEP)
    with open(os.path.join(nested, "cgroup.procs"), "w") as procs:
        procs.write(str(proc.pid))
    assert cg.procs() == []  # only the cgroup's own processes
    cg.remove()
    assert proc.wait(timeout=5) == -9
    assert not os.path.exists(cg.path)
    cg.remove()  # nothing left: still fine


def test_stats_and_errors_on_a_missing_cgroup(cg: V2Cgroup, spawn: Spawn) -> None:
    with pytest.raises(CgroupError, match="does not exist"):
        cg.stats()
    proc = spawn(*SLEEP)
    with pytest.raises(CgroupError, match=f"cannot move process {proc.pid}"):
        cg.add_process(proc.pid)
    assert cg.procs() == []
    assert not cg.frozen()


def test_rename_is_refused_clearly(cg: V2Cgroup) -> None:
    # The kernel refuses to rename cgroup2 directories (EPERM); the driver says so first.
    cg.create()
    assert not cg.can_rename
    with pytest.raises(CgroupError, match="cannot rename"):
        cg.rename(f"{PARENT}/{secrets.token_hex(8)}")
    assert cg.exists()
    with pytest.raises(PermissionError):
        os.rename(cg.path, os.path.join(ROOT, PARENT, "other"))
