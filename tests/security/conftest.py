"""Fixtures of the escape catalogue: the host side, the engines, and the outcomes seen.

Outcomes are kept per (engine, attempt) for the session, so the comparison
test reuses what the per-attempt tests ran. With ``HAKO_SECURITY_RESULTS``
set to a path, the session writes them there as JSON (report.py reads it).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.conftest import hako

from .runner import REPO, Hako, Host, Outcome, Podman, run_attempt

ENGINES = {
    "hako": lambda: Hako(),
    "hako-privileged": lambda: Hako(("--privileged",)),
}


@pytest.fixture(scope="session")
def host():
    if os.geteuid() != 0:
        pytest.skip("the catalogue runs containers as root")
    with Host() as made:
        yield made


@pytest.fixture(scope="session")
def podman(debian_image):
    """debian:bookworm in a private Podman store; any failure to get there fails the tests that use it."""
    engine = Podman()
    try:
        with tempfile.TemporaryDirectory(prefix="hako-catalogue-image-", dir="/var/tmp") as tmp:
            archive = os.path.join(tmp, "debian.tar")
            hako("image", "save", "-o", archive, debian_image, timeout=300)
            engine.load(archive)
        probe = engine.run([], ["true"])
        if probe.returncode != 0:
            raise RuntimeError(f"podman cannot run a container here: {probe.stderr.strip()}")
    except Exception as e:
        engine.close()
        pytest.fail(f"Podman is not usable for the catalogue: {e}")
    yield engine
    engine.close()


class Outcomes:
    def __init__(self, request, host: Host) -> None:
        self.request = request
        self.host = host
        self.seen: dict[str, dict[str, dict]] = {}
        self.engines: dict = {}

    def engine(self, key: str):
        if key not in self.engines:
            self.engines[key] = self.request.getfixturevalue("podman") if key == "podman" else ENGINES[key]()
        return self.engines[key]

    def get(self, key: str, attempt, admin: bool = False) -> Outcome:
        runs = self.seen.setdefault(key, {})
        if attempt.id not in runs:
            outcome = run_attempt(self.engine(key), attempt, self.host, admin=admin)
            runs[attempt.id] = outcome.as_dict()
        return Outcome(**runs[attempt.id])


def versions() -> dict:
    def first_line(*command: str) -> str:
        try:
            out = subprocess.run(command, capture_output=True, text=True, timeout=30).stdout
            return out.strip().splitlines()[0] if out.strip() else ""
        except OSError:
            return ""

    return {
        "kernel": platform.release(),
        "machine": platform.machine(),
        "podman": first_line("podman", "--version"),
        "runc": first_line("runc", "--version"),
        "hako": first_line("git", "-C", str(REPO), "describe", "--always", "--dirty"),
    }


@pytest.fixture(scope="session")
def outcomes(request, host, debian_image):
    seen = Outcomes(request, host)
    yield seen
    out = os.environ.get("HAKO_SECURITY_RESULTS")
    if out:
        Path(out).write_text(json.dumps({"versions": versions(), "outcomes": seen.seen}, indent=1))
