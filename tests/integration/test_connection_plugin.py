"""The hako connection plugin (connection_plugins/hako.py) run by ansible-playbook against real containers.

A Debian container (python3) takes modules, file copies both ways, another
remote user and become; a busybox one (no python3) takes raw; a stopped and a
missing container give the connection's own error. One run holds them all, as
plays of one playbook: a run costs seconds.
"""

from __future__ import annotations

import json
import os
import stat

import pytest

from ..conftest import hako
from .ansible_runs import BIN, COMMAND, FAKE_SSH, HAKO_COMMAND, HAKO_ENV, run_plays, task_output

if not (BIN / "ansible-playbook").exists():
    pytest.skip("ansible-playbook is not installed beside this Python", allow_module_level=True)
if os.geteuid() != 0:
    pytest.skip("the tests make containers: run as root", allow_module_level=True)

CONNECTION = {"ansible_connection": "hako", "ansible_hako_command": HAKO_COMMAND}


def play(name: str, hosts: str, tasks: list[dict], **variables) -> dict:
    return {
        "name": name,
        "hosts": hosts,
        "gather_facts": False,
        "vars": {**CONNECTION, **variables},
        "tasks": tasks,
    }


def in_container(name: str, *command: str) -> str:
    return hako("exec", name, *command).stdout


def test_tasks_run_and_files_travel_inside_containers(tmp_path, containers, debian_image) -> None:
    prefix = f"conn{os.getpid()}"
    deb, bb, off = f"{prefix}-deb", f"{prefix}-bb", f"{prefix}-off"
    containers += [deb, bb, off]
    hako("run", "-d", "--name", deb, debian_image, *COMMAND)
    hako("run", "-d", "--name", bb, "busybox", *COMMAND)
    hako("create", "--name", off, "busybox", *COMMAND)
    blob = tmp_path / "blob.bin"
    blob.write_bytes(os.urandom(200_000) + b"\0\n\xff")
    fetched = tmp_path / "fetched.bin"
    # Symlinks in the container to a path that exists on the host as well:
    # files must travel to and from the container's copy of it.
    hostside = tmp_path / "hostside"
    hostside.mkdir()
    (hostside / "marker").write_text("host\n")
    link_setup = f"mkdir -p {hostside} && echo container > {hostside}/marker && ln -s {hostside} /tmp/linkdir"
    hako("exec", deb, "sh", "-c", f"{link_setup} && ln -s {hostside}/marker /tmp/link")
    plays = [
        play(
            "a learner's container configured through the connection",
            deb,
            [
                {"name": "user made", "ansible.builtin.user": {"name": "learner", "shell": "/bin/sh"}},
                {"name": "id as root", "ansible.builtin.command": "id -un", "register": "r"},
                {
                    "name": "exercise copied",
                    "ansible.builtin.copy": {
                        "content": "Find the PID namespace of this shell.\n",
                        "dest": "/home/learner/exercise.txt",
                        "owner": "learner",
                        "mode": "0640",
                    },
                },
                {
                    "name": "blob copied",
                    "ansible.builtin.copy": {"src": str(blob), "dest": "/tmp/blob", "mode": "0600"},
                },
                {
                    "name": "blob fetched",
                    "ansible.builtin.fetch": {"src": "/tmp/blob", "dest": str(fetched), "flat": True},
                },
                {
                    "name": "fetched through a symlink",
                    "ansible.builtin.fetch": {
                        "src": "/tmp/link",
                        "dest": str(tmp_path / "link"),
                        "flat": True,
                    },
                },
                {
                    "name": "copied through a symlinked directory",
                    "ansible.builtin.copy": {
                        "content": "in\n",
                        "dest": "/tmp/linkdir/new.txt",
                        "mode": "0644",
                    },
                },
                {"name": "id as remote user", "ansible.builtin.command": "id -un", "remote_user": "learner"},
                {
                    "name": "copied as remote user",
                    "ansible.builtin.copy": {
                        "content": "mine\n",
                        "dest": "/home/learner/own.txt",
                        "mode": "0600",
                    },
                    "remote_user": "learner",
                },
                {
                    "name": "unknown remote user",
                    "ansible.builtin.raw": "true",
                    "remote_user": "nosuchuser",
                    "ignore_unreachable": True,
                },
                {
                    "name": "id with become",
                    "ansible.builtin.command": "id -un",
                    "become": True,
                    "become_method": "su",
                    "become_user": "learner",
                },
            ],
        ),
        play(
            "an image without python3",
            bb,
            [{"name": "raw in busybox", "ansible.builtin.raw": "cat /proc/1/cmdline"}],
        ),
        play(
            "containers that cannot be reached",
            f"{off},{prefix}-missing",
            [{"name": "raw unreachable", "ansible.builtin.raw": "true", "ignore_unreachable": True}],
        ),
    ]
    # The containers are named in a host list; the play reaches each with the hako connection.
    inventory = f"{deb},{bb},{off},{prefix}-missing,"
    r, out = run_plays(tmp_path, plays, inventory, "-vvv")

    # Modules (pipelined: no file put for them) as root and as the remote user.
    assert r["id as root"]["stdout"] == "root"
    assert "PUT " not in task_output(out, "id as root")
    assert f"EXEC {HAKO_COMMAND} exec -i {deb} /bin/sh -c" in task_output(out, "id as root")
    assert r["id as remote user"]["stdout"] == "learner"
    assert f"exec -i -u learner {deb}" in task_output(out, "id as remote user")
    assert r["id with become"]["stdout"] == "learner"

    # put_file: content, mode and owner as the container sees them.
    assert in_container(deb, "cat", "/home/learner/exercise.txt") == "Find the PID namespace of this shell.\n"
    assert in_container(deb, "stat", "-c", "%U %a", "/home/learner/exercise.txt").split() == [
        "learner",
        "640",
    ]
    assert in_container(deb, "stat", "-c", "%U %a", "/home/learner/own.txt").split() == ["learner", "600"]
    assert in_container(deb, "stat", "-c", "%a %s", "/tmp/blob").split() == ["600", str(blob.stat().st_size)]
    assert in_container(deb, "sha1sum", "/tmp/blob").split()[0] == r["blob copied"]["checksum"]
    assert r["blob copied"]["changed"] and r["blob fetched"]["changed"]
    # fetch_file: the same bytes back on the controller.
    assert fetched.read_bytes() == blob.read_bytes()
    assert stat.S_ISREG(fetched.stat().st_mode)

    # Symlinks resolve inside the container, never on the host.
    assert (tmp_path / "link").read_text() == "container\n"
    assert in_container(deb, "cat", f"{hostside}/new.txt") == "in\n"
    assert sorted(p.name for p in hostside.iterdir()) == ["marker"]
    assert (hostside / "marker").read_text() == "host\n"

    assert r["raw in busybox"]["stdout"].replace("\0", " ").split()[:2] == ["sh", "-c"]

    assert r["unknown remote user"]["_status"] == "unreachable"
    assert (
        f"hako container {deb}: invalid value for user: 'nosuchuser'"
        " (no such user in the container's /etc/passwd)" in r["unknown remote user"]["msg"]
    )
    assert r["raw unreachable"]["_status"] == "unreachable"
    messages = out.count(f"hako container {off} is not running (status created)")
    assert messages >= 1, out[-3000:]
    assert f"hako container {prefix}-missing does not exist" in out


def test_a_container_on_a_lab_host_is_reached_through_ssh(tmp_path, containers, debian_image) -> None:
    name = f"conn{os.getpid()}-ssh"
    containers.append(name)
    hako("run", "-d", "--name", name, debian_image, *COMMAND)
    ssh = tmp_path / "ssh"
    ssh.write_text(FAKE_SSH)
    ssh.chmod(0o755)
    fetched = tmp_path / "motd"
    tasks = [
        {"name": "raw over ssh", "ansible.builtin.raw": "hostname; echo $HOME"},
        {
            "name": "copy over ssh",
            "ansible.builtin.copy": {"content": "lab 1\n", "dest": "/etc/motd", "mode": "0644"},
        },
        {
            "name": "fetch over ssh",
            "ansible.builtin.fetch": {"src": "/etc/motd", "dest": str(fetched), "flat": True},
        },
        {"name": "command over ssh", "ansible.builtin.command": "cat /etc/motd"},
    ]
    variables = {
        "hako_host": "learner@lab1.invalid",
        "ansible_hako_ssh_command": str(ssh),
        "ansible_hako_ssh_args": "-p 2222",
        # The lab host's hako state is not the controller's environment: set for the command there.
        "ansible_hako_env": {k: os.environ[k] for k in HAKO_ENV},
    }
    r, _ = run_plays(tmp_path, [play("a container on a lab host", name, tasks, **variables)], f"{name},")

    hostname = json.loads(hako("inspect", name).stdout)[0]["Config"]["Hostname"]
    assert r["raw over ssh"]["stdout"].split() == [hostname, "/root"]
    assert r["command over ssh"]["stdout"] == "lab 1"
    assert fetched.read_text() == "lab 1\n"
    assert in_container(name, "stat", "-c", "%a", "/etc/motd").strip() == "644"
    calls = (tmp_path / "ssh.log").read_text().splitlines()
    assert calls and all(
        c.startswith("-p 2222 -o BatchMode=yes -- learner@lab1.invalid env HAKO_") for c in calls
    )
    assert any(f"hako exec -i {name} /bin/sh -c" in c for c in calls)
