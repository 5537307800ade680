"""The modules in library/ run by ansible-playbook against this machine (connection local).

Each test writes one playbook and runs it once: a run costs seconds, so the
steps of a scenario are tasks of one play, and their results (recorded by
callback_plugins/hako_record.py, keyed by task name) are checked afterwards.
The modules read the session's HAKO_ROOT, HAKO_RUN and HAKO_CGROUP_PARENT,
which each play passes on with ``environment``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ..conftest import REPO, cgroup_dirs, hako
from .ansible_runs import BIN, COMMAND, HAKO_ENV, run_plays

if not (BIN / "ansible-playbook").exists():
    pytest.skip("ansible-playbook is not installed beside this Python", allow_module_level=True)
if os.geteuid() != 0:
    pytest.skip("the modules make containers: run as root", allow_module_level=True)

MIB = 1 << 20


def run_playbook(tmp_path: Path, tasks: list[dict], *args: str, expect_rc: int = 0) -> dict[str, dict]:
    """Run one play of ``tasks`` on localhost; the recorded result of each task, by name."""
    play = {
        "name": "hako modules under test",
        "hosts": "localhost",
        "gather_facts": False,
        "vars": {"ansible_connection": "local", "ansible_python_interpreter": "/usr/bin/python3"},
        "environment": {k: os.environ[k] for k in HAKO_ENV},
        "tasks": tasks,
    }
    inventory = str(REPO / "inventory" / "local.yml")
    remote = str(tmp_path / "remote")
    results, _ = run_plays(
        tmp_path, [play], inventory, *args, expect_rc=expect_rc, ANSIBLE_REMOTE_TEMP=remote
    )
    return results


def task(title: str, module: str, register: str | None = None, /, **options) -> dict:
    """A task; ``_``-prefixed keywords (``_check_mode``, ``_diff``, ``_ignore_errors``) are task keywords."""
    keywords = {k[1:]: options.pop(k) for k in list(options) if k.startswith("_")}
    if register:
        keywords["register"] = register
    return {"name": title, module: options, **keywords}


def read_limits(name: str, registered: str) -> dict:
    """A task (no module run) reading the memory and pids limits from the container's cgroup files."""
    cg = f"{registered}.container.Cgroup"
    memory = (
        f"(({cg}.Paths.memory ~ '/memory.limit_in_bytes') if {cg}.Version == 1"
        f" else ({cg}.Paths.unified ~ '/memory.max'))"
    )
    pids = f"(({cg}.Paths.pids if {cg}.Version == 1 else {cg}.Paths.unified) ~ '/pids.max')"
    return {
        "name": name,
        "ansible.builtin.set_fact": {
            "limits_read": {
                "memory": f"{{{{ lookup('ansible.builtin.file', {memory}) }}}}",
                "pids": f"{{{{ lookup('ansible.builtin.file', {pids}) }}}}",
            }
        },
    }


def container_names(hako_env: dict) -> list[str]:
    names = Path(hako_env["root"], "names")
    return sorted(p.name for p in names.iterdir() if not p.name.startswith(".")) if names.is_dir() else []


# --------------------------------------------------------------------------


def test_every_state_transition_and_idempotent_reruns(tmp_path, containers, hako_env) -> None:
    containers.append("life")
    c = {"name": "life", "image": "busybox", "command": COMMAND, "memory": "64m"}
    tasks = [
        task("absent, not there", "hako_container", name="life", state="absent"),
        task("present", "hako_container", state="present", **c),
        task("present again", "hako_container", state="present", **c),
        task("started", "hako_container", state="started", **c),
        task("started again", "hako_container", state="started", **c),
        task("stopped", "hako_container", state="stopped", **c),
        task("stopped again", "hako_container", state="stopped", **c),
        task("restarted from stopped", "hako_container", state="restarted", **c),
        task("restarted while running", "hako_container", state="restarted", **c),
        task("present leaves it running", "hako_container", state="present", **c),
        task("absent", "hako_container", name="life", state="absent"),
        task("absent again", "hako_container", name="life", state="absent"),
    ]
    r = run_playbook(tmp_path, tasks)

    expected = {
        "absent, not there": (False, []),
        "present": (True, ["create"]),
        "present again": (False, []),
        "started": (True, ["start"]),
        "started again": (False, []),
        "stopped": (True, ["stop"]),
        "stopped again": (False, []),
        "restarted from stopped": (True, ["start"]),
        "restarted while running": (True, ["restart"]),
        "present leaves it running": (False, []),
        "absent": (True, ["remove"]),
        "absent again": (False, []),
    }
    assert {name: (r[name]["changed"], r[name]["actions"]) for name in expected} == expected
    states = {name: r[name]["container"].get("State", {}).get("Status") for name in expected}
    assert states["present"] == "created"
    assert states["started"] == states["restarted while running"] == "running"
    assert states["stopped"] == states["stopped again"] == "exited"
    assert states["absent"] is None and r["absent"]["container"] == {}
    # One container all along: created once, its process new on each (re)start.
    ids = {r[name]["container"]["Id"] for name in expected if r[name]["container"]}
    assert len(ids) == 1
    pids = [r[name]["container"]["State"]["Pid"] for name in ("started", "restarted while running")]
    assert pids[0] != pids[1]
    assert r["started"]["container"]["HostConfig"]["Limits"]["memory"] == 64 * MIB
    assert container_names(hako_env) == []


def test_limits_change_in_place_and_other_differences_recreate(tmp_path, containers) -> None:
    containers.append("limits")
    # A second image: busybox committed with one more file.
    hako("create", "--name", "limits-base", "busybox", "true")
    hako("commit", "limits-base", "busybox-plus:1")
    hako("rm", "limits-base")
    before = {"name": "limits", "command": COMMAND, "memory": "64m", "pids_limit": 50}
    bigger = {**before, "memory": "128m", "pids_limit": 100}
    v2 = {**bigger, "command": [*COMMAND[:2], COMMAND[2] + " # v2"]}
    tasks = [
        task("start", "hako_container", "start", image="busybox", **before),
        task(
            "update in check mode",
            "hako_container",
            "check",
            _check_mode=True,
            **{**before, "memory": "128m"},
        ),
        read_limits("read after check mode", "check"),
        {"name": "keep", "ansible.builtin.set_fact": {"after_check": "{{ limits_read }}"}},
        task("update", "hako_container", "update", image="busybox", _diff=True, **bigger),
        read_limits("read after update", "update"),
        task("update again", "hako_container", **bigger),
        task("restart policy", "hako_container", restart_policy="always", **bigger),
        task("new command", "hako_container", _diff=True, **v2),
        task("new image", "hako_container", image="busybox-plus:1", **v2),
        task("new image again", "hako_container", image="busybox-plus:1", **v2),
        task("forced", "hako_container", recreate=True, **v2),
        task("remove", "hako_container", name="limits", state="absent"),
    ]
    try:
        r = run_playbook(tmp_path, tasks)
    finally:
        hako("rmi", "busybox-plus:1", check=False)

    start = r["start"]["container"]
    assert r["start"]["actions"] == ["create", "start"]
    # Check mode: predicted, and the cgroup still has the old limit.
    assert (r["update in check mode"]["changed"], r["update in check mode"]["actions"]) == (
        True,
        ["update memory"],
    )
    assert r["update in check mode"]["container"]["HostConfig"]["Limits"]["memory"] == 64 * MIB
    after_check = r["keep"]["ansible_facts"]["after_check"]
    assert int(after_check["memory"]) == 64 * MIB and after_check["pids"] == "50"
    # In place: the same process, the cgroup files show the new limits.
    update = r["update"]
    assert update["actions"] == ["update memory", "update pids_limit"]
    assert update["container"]["Id"] == start["Id"]
    assert update["container"]["State"]["Pid"] == start["State"]["Pid"]
    limits_read = r["read after update"]["ansible_facts"]["limits_read"]
    assert int(limits_read["memory"]) == 128 * MIB and limits_read["pids"] == "100"
    assert update["container"]["Cgroup"]["Resources"]["memory"]["limit"] == 128 * MIB
    assert update["diff"]["before"]["memory"] == 64 * MIB and update["diff"]["after"]["memory"] == 128 * MIB
    assert update["diff"]["before"]["pids_limit"] == 50 and update["diff"]["after"]["pids_limit"] == 100
    assert update["diff"]["before"]["state"] == update["diff"]["after"]["state"] == "running"
    assert (r["update again"]["changed"], r["update again"]["actions"]) == (False, [])
    policy = r["restart policy"]
    assert policy["actions"] == ["update restart_policy"]
    assert policy["container"]["HostConfig"]["RestartPolicy"] == "always"
    assert policy["container"]["State"]["Pid"] == start["State"]["Pid"]
    # Anything else: a new container, started again, with what the task asked for.
    recreated = r["new command"]
    assert recreated["actions"] == ["recreate", "start"]
    assert recreated["container"]["Id"] != start["Id"]
    assert recreated["container"]["State"]["Running"]
    assert recreated["container"]["HostConfig"]["RestartPolicy"] == "no"  # not asked for this time
    assert recreated["diff"]["before"]["command"] == COMMAND
    assert recreated["diff"]["after"]["command"][2].endswith("# v2")
    image = r["new image"]
    assert image["actions"] == ["recreate", "start"]
    assert image["container"]["ImageName"] == "busybox-plus:1"
    assert image["container"]["Image"] != start["Image"]
    assert (r["new image again"]["changed"], r["new image again"]["actions"]) == (False, [])
    forced = r["forced"]
    assert forced["actions"] == ["recreate", "start"]
    assert forced["container"]["Id"] != image["container"]["Id"]
    # Recreated without an image named: the same image as before.
    assert forced["container"]["Image"] == image["container"]["Image"]
    assert r["remove"]["actions"] == ["remove"]


def test_check_mode_changes_nothing_and_diff_mode_shows_the_plan(tmp_path, containers, hako_env) -> None:
    containers.extend(["dry", "dry1", "dry2"])
    runtime_copies = Path(hako_env["run"], "ansible")
    copies_before = sorted(runtime_copies.iterdir()) if runtime_copies.is_dir() else []
    tasks = [
        task("create", "hako_container", name="dry", image="busybox", command=COMMAND, memory="64m"),
        task(
            "many",
            "hako_containers",
            containers=[
                {"name": "dry1", "image": "busybox", "command": COMMAND},
                {"name": "dry2", "image": "busybox", "command": COMMAND, "state": "present"},
            ],
        ),
        task("exec", "hako_exec", container="dry", command="touch /made"),
        task("absent", "hako_container", name="dry", state="absent"),
        task("info", "hako_container_info", name=["dry", "dry1"]),
    ]
    r = run_playbook(tmp_path, tasks, "--check", "--diff")

    assert (r["create"]["changed"], r["create"]["actions"]) == (True, ["create", "start"])
    assert r["create"]["container"] == {}
    assert r["create"]["diff"]["before"] == {"state": "absent"}
    assert r["create"]["diff"]["after"]["state"] == "running"
    assert r["create"]["diff"]["after"]["memory"] == 64 * MIB
    assert [e["actions"] for e in r["many"]["results"]] == [["create", "start"], ["create"]]
    assert r["many"]["diff"]["after"]["dry2"]["state"] == "stopped"
    assert r["exec"]["_status"] == "skipped" and r["exec"]["cmd"] == ["touch", "/made"]
    assert (r["absent"]["changed"], r["absent"]["actions"]) == (False, [])
    assert r["info"]["missing"] == ["dry", "dry1"] and not r["info"]["exists"]
    # Nothing was made: no container, no cgroup, not even the supervisor's copy of the runtime.
    assert container_names(hako_env) == []
    assert not Path(hako_env["root"], "containers").is_dir() or not any(
        Path(hako_env["root"], "containers").iterdir()
    )
    assert cgroup_dirs(hako_env["parent"]) == []
    assert (sorted(runtime_copies.iterdir()) if runtime_copies.is_dir() else []) == copies_before


def test_bad_arguments_fail_with_one_message_naming_the_option(tmp_path, containers, hako_env) -> None:
    containers.extend(["bad", "bad2"])
    ok = {"image": "busybox", "command": COMMAND}
    failing = {
        "memory": task("memory", "hako_container", name="bad", memory="lots", **ok),
        "memory_swap": task(
            "memory_swap", "hako_container", name="bad", memory="64m", memory_swap="32m", **ok
        ),
        "restart_policy": task(
            "restart_policy", "hako_container", name="bad", restart_policy="sometimes", **ok
        ),
        "namespaces": task("namespaces", "hako_container", name="bad", namespaces={"pid": "nearby"}, **ok),
        "comparisons": task(
            "comparisons", "hako_container", name="bad", comparisons={"colour": "strict"}, **ok
        ),
        "name": task("name", "hako_container", name="../etc", **ok),
        "image": task("image", "hako_container", name="bad", image="no-such-image", command=COMMAND),
        "bogus": task("bogus", "hako_container", name="bad", bogus=1, **ok),
        "cpus": task("cpus", "hako_container", name="bad", cpus="many", **ok),
        "containers[1]": task(
            "containers[1]",
            "hako_containers",
            containers=[{"name": "bad", **ok}, {"name": "bad2", "pids_limit": 0, **ok}],
        ),
        "exec container": task("exec container", "hako_exec", container="bad", command="true"),
        "exec command": task("exec command", "hako_exec", container="bad"),
    }
    tasks = [dict(t, ignore_errors=True) for t in failing.values()]
    tasks.append(task("no image to create", "hako_container", name="bad", _ignore_errors=True))
    # A check run takes a missing image as one an earlier task (hako_image) would make.
    tasks.append(
        task(
            "image, check mode",
            "hako_container",
            name="bad",
            image="no-such-image",
            command=COMMAND,
            _check_mode=True,
        )
    )
    r = run_playbook(tmp_path, tasks)
    assert r["image, check mode"]["_status"] == "changed"
    assert r["image, check mode"]["actions"] == ["create", "start"]

    messages = {name: r[name]["msg"] for name in [*failing, "no image to create"]}
    assert all(r[name]["_status"] == "failed" for name in messages), messages
    for option in ("memory", "memory_swap", "restart_policy", "namespaces", "comparisons", "name", "image"):
        assert messages[option].startswith(f"invalid value for {option}:"), messages[option]
    assert "'lots'" in messages["memory"]
    assert "at least the memory limit" in messages["memory_swap"]
    assert "colour" in messages["comparisons"]
    assert "no such image" in messages["image"]
    assert "bogus" in messages["bogus"] and "Unsupported parameters" in messages["bogus"]
    assert "cpus" in messages["cpus"]
    assert messages["containers[1]"].startswith("containers[1] (bad2): invalid value for pids_limit")
    assert "no such container: bad" in messages["exec container"]
    assert "command" in messages["exec command"] and "argv" in messages["exec command"]
    assert messages["no image to create"] == "image is required to create container bad"
    assert all("\n" not in m for m in messages.values())
    # Every item was checked before anything changed: not even the good one was made.
    assert container_names(hako_env) == []


def test_many_containers_in_one_task_info_exec_and_purge(tmp_path, containers, hako_env) -> None:
    names = [f"learner{i}" for i in range(1, 6)]
    containers.extend(names)
    lab = [
        {
            "name": n,
            "image": "busybox",
            "command": COMMAND,
            "memory": "64m",
            "pids_limit": 20 + i,
            "labels": {"lab": "t", "seat": str(i)},
        }
        for i, n in enumerate(names, 1)
    ]
    changed_lab = [dict(lab[0], memory="96m"), dict(lab[1], state="stopped"), *lab[2:]]
    tasks = [
        task("converge five", "hako_containers", containers=lab),
        task("converge five again", "hako_containers", containers=lab),
        task("change two", "hako_containers", _diff=True, containers=changed_lab),
        task("info of the lab", "hako_container_info", labels={"lab": "t"}),
        task("info of two", "hako_container_info", name=["learner1", "learner2", "nobody"], stats=False),
        task(
            "exec",
            "hako_exec",
            container="learner1",
            user="1000",
            chdir="/tmp",
            env={"GREETING": "hi"},
            argv=["sh", "-c", "echo $GREETING; pwd; id -u; echo oops >&2; echo"],
        ),
        task(
            "exec failing", "hako_exec", container="learner1", command="sh -c 'exit 3'", _ignore_errors=True
        ),
        task("exec stopped", "hako_exec", container="learner2", command="true", _ignore_errors=True),
        task(
            "keep three", "hako_containers", purge_label="lab=t", force_kill=True, containers=changed_lab[:3]
        ),
        task(
            "remove all",
            "hako_containers",
            state="absent",
            force_kill=True,
            containers=[{"name": n} for n in names[:3]],
        ),
    ]
    r = run_playbook(tmp_path, tasks)

    first = r["converge five"]
    assert first["changed"] and [e["actions"] for e in first["results"]] == [["create", "start"]] * 5
    assert [e["container"]["HostConfig"]["Limits"]["pids_limit"] for e in first["results"]] == [
        21,
        22,
        23,
        24,
        25,
    ]
    again = r["converge five again"]
    assert not again["changed"] and [e["actions"] for e in again["results"]] == [[]] * 5
    change = r["change two"]
    assert [e["actions"] for e in change["results"]] == [["update memory"], ["stop"], [], [], []]
    assert change["diff"]["before"]["learner1"]["memory"] == 64 * MIB
    assert change["diff"]["after"]["learner1"]["memory"] == 96 * MIB
    assert change["diff"]["after"]["learner2"]["state"] == "stopped"

    lab_info = r["info of the lab"]["containers"]
    assert sorted(c["Name"] for c in lab_info) == names
    running = {c["Name"]: c for c in lab_info if c["State"]["Running"]}
    assert sorted(running) == ["learner1", *names[2:]]
    assert running["learner1"]["Stats"]["memory_limit"] == 96 * MIB
    assert running["learner3"]["Stats"]["pids_current"] >= 1
    assert running["learner3"]["Namespaces"]["pid"]["host"] is False
    two = r["info of two"]
    assert [c["Name"] for c in two["containers"]] == ["learner1", "learner2"]
    assert two["missing"] == ["nobody"] and two["exists"] is False
    assert all("Stats" not in c for c in two["containers"])

    exec_ = r["exec"]
    assert (exec_["changed"], exec_["rc"]) == (True, 0)
    assert exec_["stdout_lines"] == ["hi", "/tmp", "1000"]
    assert exec_["stderr"] == "oops"
    assert (r["exec failing"]["_status"], r["exec failing"]["rc"]) == ("failed", 3)
    assert r["exec failing"]["msg"] == "non-zero return code"
    assert "not running" in r["exec stopped"]["msg"]

    keep = r["keep three"]
    assert {e["name"]: e["actions"] for e in keep["results"]} == {
        "learner1": [],
        "learner2": [],
        "learner3": [],
        "learner4": ["remove"],
        "learner5": ["remove"],
    }
    assert [e["actions"] for e in r["remove all"]["results"]] == [["remove"]] * 3
    assert container_names(hako_env) == []
