"""The pure parts of the hako inventory and connection plugins: filters, names, facts, groups, commands."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("ansible.plugins.inventory")
from ansible.errors import AnsibleError

REPO = Path(__file__).resolve().parent.parent.parent


def load(kind: str):
    spec = importlib.util.spec_from_file_location(f"hako_{kind}_plugin", REPO / f"{kind}_plugins" / "hako.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


inventory = load("inventory")
connection = load("connection")


@pytest.mark.parametrize(
    ("filters", "parsed"),
    [
        ([], []),
        (
            [{"include": "hako_lab == 'linuc'"}, {"exclude": True}],
            [("include", "hako_lab == 'linuc'"), ("exclude", True)],
        ),
    ],
)
def test_filters_parse_to_pairs(filters, parsed) -> None:
    assert inventory.parse_filters(filters) == parsed


@pytest.mark.parametrize(
    ("filters", "message"),
    [
        ({"include": True}, "invalid value for filters: {'include': True} (expected a list)"),
        (
            [{"keep": True}],
            "invalid value for filters[0]: {'keep': True} (expected one key, include or exclude)",
        ),
        (
            [{"include": True}, {"include": True, "exclude": False}],
            "invalid value for filters[1]: {'include': True, 'exclude': False} (expected one key",
        ),
        ([{"exclude": 3}], "invalid value for filters[0].exclude: 3 (expected a conditional or a boolean)"),
    ],
)
def test_bad_filters_fail_naming_the_item(filters, message) -> None:
    with pytest.raises(AnsibleError) as failed:
        inventory.parse_filters(filters)
    assert message in str(failed.value)


@pytest.mark.parametrize(
    ("filters", "kept"),
    [
        ([], True),  # no filter: every container
        ([("exclude", True)], False),
        ([("include", "lab"), ("exclude", True)], True),  # the first that holds decides
        ([("include", "other"), ("exclude", True)], False),
        ([("exclude", "lab"), ("include", True)], False),
        ([("include", "other")], True),  # none holds: kept
        ([("include", False), ("exclude", "lab")], False),
    ],
)
def test_the_first_filter_that_holds_decides(filters, kept) -> None:
    assert inventory.passes(filters, lambda test: test == "lab") is kept


@pytest.mark.parametrize(
    ("container", "lab_host", "name"),
    [
        ("linuc-alice", "localhost", "linuc-alice"),
        ("linuc-alice", "127.0.0.1", "linuc-alice"),
        ("linuc-alice", "lab1.example.org", "linuc-alice.lab1.example.org"),
        ("linuc-alice", "root@lab1.example.org", "linuc-alice.lab1.example.org"),
    ],
)
def test_host_names_qualify_containers_of_other_lab_hosts(container, lab_host, name) -> None:
    assert inventory.host_name(container, lab_host) == name


RECORD = {
    "Id": "a" * 64,
    "Name": "linuc-alice",
    "Image": "sha256:" + "b" * 64,
    "ImageName": "busybox",
    "State": {"Status": "running"},
    "Config": {"Labels": {"hako.lab": "linuc", "hako.learner": "alice", "course": "l2"}},
    "NetworkSettings": {
        "Networks": {"lab": {"IPAddress": "10.213.1.2"}, "back": {"IPAddress": "10.214.0.2"}}
    },
}


def test_facts_come_from_the_inspect_record() -> None:
    assert inventory.container_facts(RECORD) == {
        "hako_id": "a" * 64,
        "hako_name": "linuc-alice",
        "hako_image": "busybox",
        "hako_labels": {"hako.lab": "linuc", "hako.learner": "alice", "course": "l2"},
        "hako_status": "running",
        "hako_ip": "10.213.1.2",
        "hako_lab": "linuc",
        "hako_learner": "alice",
    }
    bare = {"Id": "c" * 64, "Name": "x", "Image": "sha256:d", "State": {"Status": "exited"}, "Config": {}}
    facts = inventory.container_facts(bare)
    assert (facts["hako_image"], facts["hako_ip"], facts["hako_labels"], facts["hako_lab"]) == (
        "sha256:d",
        None,
        {},
        None,
    )


def test_default_groups_by_status_lab_host_lab_and_learner() -> None:
    facts = inventory.container_facts(RECORD)
    assert inventory.default_groups(facts, "root@lab1") == [
        "hako_running",
        "hako_host_lab1",
        "hako_lab_linuc",
        "hako_learner_alice",
    ]
    facts.update(hako_lab=None, hako_learner=None, hako_status="created")
    assert inventory.default_groups(facts, "localhost") == ["hako_created", "hako_host_localhost"]


def test_hako_runs_here_or_through_ssh_with_its_environment() -> None:
    argv = connection.hako_argv
    assert argv("hako", None, {"HAKO_ROOT": "/x"}, ["ps", "-a"], "ssh", "") == ["hako", "ps", "-a"]
    assert argv("python3 -m hako", "localhost", {}, ["ps"], "ssh", "") == ["python3", "-m", "hako", "ps"]
    env = {"HAKO_RUN": "/r", "HAKO_ROOT": "/a b"}
    assert argv("hako", "root@lab1", env, ["exec", "c1", "sh", "-c", "echo $HOME"], "ssh", "-p 2222") == [
        *("ssh", "-p", "2222", "-o", "BatchMode=yes", "--", "root@lab1"),
        "env 'HAKO_ROOT=/a b' HAKO_RUN=/r hako exec c1 sh -c 'echo $HOME'",
    ]
    with pytest.raises(AnsibleError, match="invalid value for hako_command: ''"):
        argv(" ", None, {}, ["ps"], "ssh", "")
