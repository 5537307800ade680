"""hako_containers' links: a topology (containers and their wires) converged in one task."""

from __future__ import annotations

from ..conftest import hako
from .test_ansible_modules import COMMAND, run_playbook, task

NODES = ["al-1", "al-2", "al-3"]


def line(rate: str | None = "10mbit", second: bool = True) -> list[dict]:
    links = [{"a": "al-1:eth1", "b": "al-2:eth1", "ip_a": "10.214.201.1/30", "ip_b": "10.214.201.2/30"}]
    if rate:
        links[0]["rate"] = rate
    if second:
        links.append(
            {"a": "al-2:eth2", "b": "al-3:eth1", "ip_a": "10.214.201.5/30", "ip_b": "10.214.201.6/30"}
        )
    return links


def converge(title: str, links: list[dict], **keywords) -> dict:
    containers = [{"name": name, "image": "busybox", "command": COMMAND} for name in NODES]
    return task(title, "hako_containers", containers=containers, links=links, **keywords)


def test_a_line_of_three_comes_up_linked_reruns_unchanged_and_follows_the_declaration(tmp_path, containers):
    containers.extend(NODES)
    r = run_playbook(
        tmp_path,
        [
            converge("predict", line(), _check_mode=True),
            converge("up", line()),
            task(
                "ping across the first link",
                "hako_exec",
                container="al-1",
                command="ping -c 1 -W 2 10.214.201.2",
            ),
            task(
                "ping across the second", "hako_exec", container="al-3", command="ping -c 1 -W 2 10.214.201.5"
            ),
            converge("again", line()),
            converge("new rate", line(rate="5mbit")),
            converge("one link fewer", line(rate="5mbit", second=False)),
        ],
    )
    assert r["predict"]["links"] == {
        "changed": True,
        "create": ["al-1:eth1 - al-2:eth1", "al-2:eth2 - al-3:eth1"],
        "recreate": [],
        "remove": [],
    }
    up = r["up"]
    assert up["changed"] and up["links"]["create"] == r["predict"]["links"]["create"]
    assert r["ping across the first link"]["rc"] == 0 and r["ping across the second"]["rc"] == 0
    assert r["again"]["changed"] is False and r["again"]["links"]["changed"] is False
    assert r["new rate"]["links"]["recreate"] == ["al-1:eth1 - al-2:eth1"]
    assert r["one link fewer"]["links"]["remove"] == ["al-2:eth2 - al-3:eth1"]
    listed = hako("link", "ls").stdout
    assert "al-1:eth1" in listed and "al-3:eth1" not in listed
    assert "eth1" not in hako("exec", "al-3", "ls", "/sys/class/net").stdout.split()


def test_bad_links_fail_in_one_line_before_anything_is_made(tmp_path, containers):
    containers.extend(NODES)
    bad = {
        "no interface": [{"a": "al-1", "b": "al-2:eth1"}],
        "bad address": [{"a": "al-1:eth1", "b": "al-2:eth1", "ip_a": "10.214.1.300/30"}],
        "twice": [{"a": "al-1:eth1", "b": "al-2:eth1"}, {"a": "al-2:eth1", "b": "al-1:eth1"}],
        "bad rate": [{"a": "al-1:eth1", "b": "al-2:eth1", "rate": "fast"}],
    }
    r = run_playbook(tmp_path, [converge(title, links, _ignore_errors=True) for title, links in bad.items()])
    messages = {title: r[title]["msg"] for title in bad}
    assert all(r[title]["_status"] == "failed" for title in bad)
    assert all(m.startswith("invalid value for links[") and "\n" not in m for m in messages.values()), (
        messages
    )
    assert "declared twice" in messages["twice"]
    assert "rate" in messages["bad rate"]
    assert hako("ps", "-a", "-q").stdout == ""  # checked before any container was made


def test_a_container_made_again_gets_its_links_back_in_the_same_task(tmp_path, containers):
    containers.extend(NODES)
    changed = [{"name": name, "image": "busybox", "command": COMMAND} for name in NODES]
    changed[1]["env"] = {"REMADE": "1"}  # al-2 is made again: its links go with its old record
    r = run_playbook(
        tmp_path,
        [
            converge("up", line(rate=None)),
            task("al-2 remade", "hako_containers", containers=changed, links=line(rate=None)),
            task("across al-2", "hako_exec", container="al-1", command="ping -c 1 -W 2 10.214.201.2"),
        ],
    )
    remade = r["al-2 remade"]
    assert [e["actions"] for e in remade["results"] if e["name"] == "al-2"] == [["recreate", "start"]]
    assert remade["links"]["create"] == ["al-1:eth1 - al-2:eth1", "al-2:eth2 - al-3:eth1"]
    assert r["across al-2"]["rc"] == 0
