"""The commands a learner runs most import only what they use (DESIGN.md: fast paths stay lean)."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.conftest import REPO

# Slow to import (re, hashlib, tarfile...) or only for other commands.
HEAVY = (
    "tarfile",
    "re",
    "json",
    "hashlib",
    "argparse",
    "threading",
    "hako.images.layers",
    "hako.images.registry",
    "hako.images.archive",
    "hako.images.debootstrap",
    # Networking: only networked commands may pay for it.
    "pyroute2",
    "ipaddress",
    "hako.network",
    "hako.network.netlink",
    "hako.network.firewall",
)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


@pytest.mark.parametrize(
    "argv",
    [
        ["ps", "-a"],
        ["images"],
        ["run", "--rm", "busybox", "true"],
        ["run", "--rm", "--network", "none", "busybox", "true"],
    ],
)
def test_a_common_command_imports_nothing_heavy(argv) -> None:
    code = (
        f"import sys; sys.path.insert(0, {str(REPO / 'module_utils')!r}); sys.argv = ['hako', *{argv!r}]\n"
        "from hako.cli import main\n"
        "code = main()\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules)); sys.exit(code)\n"
    )
    result = subprocess.run(
        ["/usr/bin/python3", "-IS", "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"
