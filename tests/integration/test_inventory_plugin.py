"""The hako inventory plugin (inventory_plugins/hako.py) over real containers, read by ansible-inventory
and used by ansible-playbook.

A lab of three learners' containers (labelled as the hako_lab role labels
them) and one container outside it: the inventory lists the lab, grouped by
lab, learner, status and label, with its filters applied, and a play on the
lab's group reaches each container through the hako connection, on this
machine and through a stand-in ssh as if on another lab host.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from ..conftest import REPO, hako
from .ansible_runs import BIN, COMMAND, FAKE_SSH, HAKO_COMMAND, HAKO_ENV, ansible_env, run_plays

if not (BIN / "ansible-inventory").exists():
    pytest.skip("ansible-inventory is not installed beside this Python", allow_module_level=True)
if os.geteuid() != 0:
    pytest.skip("the tests make containers: run as root", allow_module_level=True)


def write_inventory(path, **config) -> str:
    path.write_text(json.dumps({"plugin": "hako", "hako_command": HAKO_COMMAND, **config}, indent=1))
    return str(path)


def inventory_list(tmp_path, *sources: str, expect_rc: int = 0, **env: str) -> dict:
    args = [a for source in sources for a in ("-i", source)]
    proc = subprocess.run(
        [str(BIN / "ansible-inventory"), *args, "--list"],
        env=ansible_env(tmp_path, ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED="1", **env),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == expect_rc, proc.stderr[-3000:]
    return plain(json.loads(proc.stdout)) if expect_rc == 0 else {"stderr": proc.stderr}


def plain(value):
    """The listing without its marks of untrusted strings (``{"__ansible_unsafe": "text"}``)."""
    if isinstance(value, dict):
        if set(value) == {"__ansible_unsafe"}:
            return value["__ansible_unsafe"]
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def members(listing: dict, group: str) -> list[str]:
    return sorted(listing.get(group, {}).get("hosts", []))


@pytest.fixture
def lab(containers, debian_image) -> dict:
    """A lab: alice (Debian, python3) and bob (busybox) running, carol made but not started; one more."""
    lab = f"inv{os.getpid()}"
    made = {
        "alice": ("run", "-d", debian_image),
        "bob": ("run", "-d", "busybox"),
        "carol": ("create", "busybox"),
    }
    for learner, start in made.items():
        name = f"{lab}-{learner}"
        containers.append(name)
        labels = ["-l", f"hako.lab={lab}", "-l", f"hako.learner={learner}", "-l", "course=linuc"]
        hako(*start[:-1], "--name", name, *labels, start[-1], *COMMAND)
    containers.append(f"{lab}-other")
    hako("run", "-d", "--name", f"{lab}-other", "busybox", *COMMAND)
    return {"name": lab, **{learner: f"{lab}-{learner}" for learner in made}, "other": f"{lab}-other"}


def test_containers_are_listed_grouped_and_filtered(tmp_path, lab) -> None:
    source = write_inventory(
        tmp_path / "lab.hako.yml",
        filters=[{"include": f"hako_lab == '{lab['name']}'"}, {"exclude": True}],
        keyed_groups=[{"key": "hako_labels", "prefix": "label"}],
        groups={"with_python": "hako_image is match('debian')"},
        compose={"learner_upper": "hako_learner | upper"},
    )
    listing = inventory_list(tmp_path, source)
    learners = sorted(lab[k] for k in ("alice", "bob", "carol"))
    hostvars = listing["_meta"]["hostvars"]
    assert sorted(hostvars) == learners  # the container outside the lab is filtered out
    assert members(listing, f"hako_lab_{lab['name']}") == learners
    assert members(listing, "hako_learner_alice") == [lab["alice"]]
    assert members(listing, "hako_running") == sorted([lab["alice"], lab["bob"]])
    assert members(listing, "hako_created") == [lab["carol"]]
    assert members(listing, "hako_host_localhost") == learners
    assert members(listing, "label_course_linuc") == learners
    assert members(listing, "label_hako_learner_bob") == [lab["bob"]]
    assert members(listing, "with_python") == [lab["alice"]]

    alice = hostvars[lab["alice"]]
    record = json.loads(hako("inspect", lab["alice"]).stdout)[0]
    assert alice["ansible_connection"] == "hako" and alice["ansible_host"] == lab["alice"]
    assert alice["ansible_hako_command"] == HAKO_COMMAND and "hako_host" not in alice
    assert alice["hako_id"] == record["Id"] and alice["hako_image"] == "debian:bookworm"
    assert alice["hako_labels"] == {"hako.lab": lab["name"], "hako.learner": "alice", "course": "linuc"}
    assert (alice["hako_status"], alice["hako_lab"], alice["hako_learner"]) == (
        "running",
        lab["name"],
        "alice",
    )
    assert alice["hako_ip"] is None  # no network: only lo
    assert alice["learner_upper"] == "ALICE"

    # The example in inventory/ (hako on PATH): the lab, not the container outside it.
    shipped = inventory_list(tmp_path, str(REPO / "inventory" / "lab.hako.yml"))
    assert members(shipped, f"hako_lab_{lab['name']}") == learners
    assert lab["other"] not in shipped["_meta"]["hostvars"]

    # A bad filter fails the source with one line naming it.
    bad = write_inventory(tmp_path / "bad.hako.yml", filters=[{"keep": True}])
    failed = inventory_list(tmp_path, bad, expect_rc=1)
    assert (
        "invalid value for filters[0]: {'keep': True} (expected one key, include or exclude)"
        in failed["stderr"]
    )


def test_a_play_reaches_the_listed_containers_here_and_through_ssh(tmp_path, lab) -> None:
    running_lab = [{"exclude": "hako_status != 'running'"}, {"include": f"hako_lab == '{lab['name']}'"}]
    local = write_inventory(tmp_path / "local.hako.yml", filters=[*running_lab, {"exclude": True}])
    ssh = tmp_path / "ssh"
    ssh.write_text(FAKE_SSH)
    ssh.chmod(0o755)
    remote = write_inventory(
        tmp_path / "remote.hako.yml",
        hosts=["root@lab1.invalid"],
        ssh_command=str(ssh),
        # The lab host's hako state, set for the command there (a login does not carry ours).
        hako_env={k: os.environ[k] for k in HAKO_ENV},
        filters=[*running_lab, {"exclude": True}],
    )
    listing = inventory_list(tmp_path, local, remote)
    remote_alice, remote_bob = f"{lab['alice']}.lab1.invalid", f"{lab['bob']}.lab1.invalid"
    assert members(listing, f"hako_lab_{lab['name']}") == sorted(
        [lab["alice"], lab["bob"], remote_alice, remote_bob]
    )
    assert listing["_meta"]["hostvars"][remote_bob]["hako_host"] == "root@lab1.invalid"
    assert members(listing, "hako_host_lab1_invalid") == sorted([remote_alice, remote_bob])

    plays = [
        {
            "name": "every running container of the lab",
            "hosts": f"hako_lab_{lab['name']}",
            "gather_facts": False,
            "tasks": [
                {"name": "learner's hostname", "ansible.builtin.raw": "hostname", "register": "raw_out"}
            ],
        },
        {
            "name": "the containers with python3",
            "hosts": "hako_learner_alice",
            "gather_facts": False,
            "tasks": [{"name": "a module", "ansible.builtin.command": "cat /proc/1/cmdline"}],
        },
    ]
    r, out = run_plays(tmp_path, plays, local, "-i", remote)
    assert r["a module"]["stdout"].replace("\0", " ").split()[:2] == ["sh", "-c"]
    # Four hosts reached (two containers, two ways); ssh carried the remote two.
    recap = out[out.index("PLAY RECAP") :]
    for host in (lab["alice"], lab["bob"], remote_alice, remote_bob):
        assert f"{host} " in recap and "unreachable=0    failed=0" in recap.split(host, 1)[1].splitlines()[0]
    calls = (tmp_path / "ssh.log").read_text()
    assert f"exec -i {lab['bob']} /bin/sh -c" in calls
