"""The escape catalogue against hako's default profile, hako --privileged and Podman.

- In a default hako container every attempt is blocked, with its expected error.
- Under ``--privileged`` the attempts that are legitimate admin tasks succeed,
  which shows the checks that block them by default are real.
- The same attempts run in a default Podman container (runc); hako blocks at
  least everything Podman blocks.

docs/SECURITY.md shows the outcomes side by side (tests/security/report.py).
"""

from __future__ import annotations

import re

import pytest

from .catalogue import ATTEMPTS, Attempt

ADMIN = [a for a in ATTEMPTS if a.admin]


def describe(attempt: Attempt, outcome) -> str:
    return f"{attempt.id} ({attempt.tries}): {outcome.kind}: {outcome.message}"


def test_catalogue_is_complete():
    ids = [a.id for a in ATTEMPTS]
    assert len(ids) >= 30 and len(set(ids)) == len(ids)
    for attempt in ATTEMPTS:
        re.compile(attempt.expect)
        assert attempt.title and attempt.tries and attempt.script.strip()
    assert len(ADMIN) >= 10


@pytest.mark.parametrize("attempt", ATTEMPTS, ids=[a.id for a in ATTEMPTS])
def test_hako_default_blocks(attempt, outcomes):
    outcome = outcomes.get("hako", attempt)
    if outcome.kind == "absent" and attempt.absent_ok:
        return
    assert outcome.kind == "blocked", describe(attempt, outcome)
    assert re.search(attempt.expect, outcome.message), (
        f"{describe(attempt, outcome)}; expected /{attempt.expect}/"
    )


@pytest.mark.parametrize("attempt", ADMIN, ids=[a.id for a in ADMIN])
def test_privileged_lets_the_admin_task_succeed(attempt, outcomes):
    outcome = outcomes.get("hako-privileged", attempt, admin=True)
    assert outcome.kind == "succeeded", describe(attempt, outcome)


@pytest.mark.parametrize("attempt", ATTEMPTS, ids=[a.id for a in ATTEMPTS])
def test_podman_runs_the_attempt(attempt, outcomes):
    outcome = outcomes.get("podman", attempt)
    if outcome.kind == "error" and attempt.podman_refuses:
        # An option Podman takes only on some hosts: its refusal here is recorded.
        assert re.search(attempt.podman_refuses, outcome.message), describe(attempt, outcome)
        return
    assert outcome.kind in ("blocked", "succeeded", "absent"), describe(attempt, outcome)


def test_hako_blocks_everything_podman_blocks(outcomes):
    missed = []
    for attempt in ATTEMPTS:
        theirs = outcomes.get("podman", attempt)
        ours = outcomes.get("hako", attempt)
        if theirs.kind == "blocked" and ours.kind not in ("blocked", "absent"):
            missed.append(f"{attempt.id}: podman {theirs.message}; hako {ours.kind}: {ours.message}")
    assert not missed, "Podman blocks what hako does not:\n" + "\n".join(missed)
