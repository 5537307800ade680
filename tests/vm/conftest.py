"""The VM stage: real guests (x86_64, arm64; systemd, cgroup v2) booted under qemu.

One guest per architecture, one after the other (two at once under TCG on two
cores is slower): the ``guest`` fixture builds or reuses its image, boots it
on a throwaway overlay, yields it to every test of that architecture and
stops it by its PID at the end, also when a test fails or the run is
interrupted; its run directory (overlay, key, inventory, logs) goes with it.

HAKO_SKIP_VM=1 skips the stage (said in the summary); HAKO_VM_ARCHES picks
the guests (default "x86_64 arm64"). Without qemu, debootstrap or ssh the
stage fails: scripts/setup installs them.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time
from pathlib import Path

import pytest

from . import guest as images
from .qemu import Guest

ARCHES = os.environ.get("HAKO_VM_ARCHES", "x86_64 arm64").split()
SKIP = os.environ.get("HAKO_SKIP_VM") == "1"
TOOLS = {
    "x86_64": ("qemu-system-x86_64", "qemu-img", "debootstrap", "ssh", "ssh-keygen", "mkfs.ext4"),
    "arm64": (
        "qemu-system-aarch64",
        "qemu-img",
        "debootstrap",
        "ssh",
        "ssh-keygen",
        "mkfs.ext4",
        "update-binfmts",
    ),
}

# What the summary prints: per architecture, facts and each check's outcome.
RECORDS: dict[str, dict] = {}


def pytest_collection_modifyitems(config, items):
    if not SKIP:
        return
    mark = pytest.mark.skip(reason="HAKO_SKIP_VM=1: the VM stage is skipped")
    for item in items:
        if "/vm/" in str(item.fspath):
            item.add_marker(mark)


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


@pytest.fixture(scope="module", params=ARCHES)
def guest(request):
    arch = request.param
    if os.geteuid() != 0:
        pytest.skip("the VM stage builds images with debootstrap: run as root")
    missing = [t for t in TOOLS[arch] if not shutil.which(t, path=f"/usr/sbin:/sbin:{os.environ['PATH']}")]
    if missing:
        pytest.fail(f"the {arch} guest cannot run: {', '.join(missing)} missing (run scripts/setup)")
    record = RECORDS.setdefault(arch, {"checks": {}, "facts": {}})
    found = images.cached(arch)
    started = time.monotonic()
    image = images.image(arch, log=lambda line: None)
    record["facts"]["image"] = (
        f"cached ({image.directory.name})"
        if found
        else f"built in {time.monotonic() - started:.0f} s ({image.directory.name})"
    )
    run_dir = Path(tempfile.mkdtemp(prefix=f"hako-vm-{arch}-", dir="/tmp"))
    machine = Guest(image, run_dir)
    # A CI timeout's SIGTERM must still stop the guest: turn it into an interrupt.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        machine.start()
        record["facts"]["boot to SSH"] = f"{machine.boot_seconds[0]:.0f} s"
        yield machine
    finally:
        try:
            machine.stop()
        finally:
            signal.signal(signal.SIGTERM, previous)
            shutil.rmtree(run_dir, ignore_errors=True)
    assert machine.pid() is None, f"the {arch} guest's qemu is still running"


@pytest.fixture
def record(guest):
    """Facts for the summary of this guest."""
    return RECORDS[guest.arch]["facts"]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    callspec = getattr(item, "callspec", None)
    arch = callspec.params.get("guest") if callspec else None
    if arch is None or "/vm/" not in str(item.fspath):
        return
    checks = RECORDS.setdefault(arch, {"checks": {}, "facts": {}})["checks"]
    name = item.originalname.removeprefix("test_").replace("_", " ")
    if report.when == "call" or (report.when == "setup" and not report.passed):
        checks[name] = "skipped" if report.skipped else ("passed" if report.passed else "FAILED")
    elif report.when == "teardown" and report.failed:
        checks[name] = "FAILED (teardown)"


def pytest_terminal_summary(terminalreporter):
    if not RECORDS:
        if SKIP:
            terminalreporter.write_sep("=", "VM stage skipped (HAKO_SKIP_VM=1)")
        return
    terminalreporter.write_sep("=", "VM guests")
    for arch, record in RECORDS.items():
        terminalreporter.write_line(f"{arch}:")
        for key, value in record["facts"].items():
            terminalreporter.write_line(f"  {key:<28} {value}")
        for name, outcome in record["checks"].items():
            terminalreporter.write_line(f"  [{outcome}] {name}")
