"""hako_runtime and hako_host_info run by ansible-playbook on this machine.

hako_runtime installs the package the module was shipped with (only the files
Ansible sends with it) into a prefix under the test's directory, and takes
hako's state away; the state it purges is always a private one made by the
test, never the session's. hako_host_info's facts are compared with what the
machine says.
"""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from ..conftest import CGROUP_ROOT, REPO, hako, processes_in, stop_supervisor
from .test_ansible_modules import COMMAND, run_playbook, task

PACKAGE = REPO / "module_utils" / "hako"
PYTHON = "/usr/bin/python3"  # the play's ansible_python_interpreter
STATE_VARS = ("HAKO_ROOT", "HAKO_RUN", "HAKO_CGROUP_PARENT")


def cli_needs(name: str) -> bool:
    """Whether the hako command may import this file of the package: all but the
    Ansible side of hako (ansible_*.py: Ansible ships a module what that module
    imports, so some of them come along) and ``python -m hako`` (__main__.py)."""
    return not (name.startswith("ansible_") or name == "__main__.py")


def repo_files() -> dict[str, bytes]:
    """The package's .py files in the repository, by path inside it."""
    return {
        str(path.relative_to(PACKAGE)): path.read_bytes()
        for path in PACKAGE.rglob("*.py")
        if "__pycache__" not in path.parts
    }


def tree_files(root: Path) -> dict[str, bytes]:
    return {str(path.relative_to(root)): path.read_bytes() for path in root.rglob("*") if path.is_file()}


def version() -> str:
    from hako import __version__

    return __version__


@contextlib.contextmanager
def environment(values: dict[str, str]):
    """os.environ with ``values`` for a while (run_playbook passes HAKO_* on to the play)."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def parent_cgroups(parent: str) -> list[Path]:
    return [hierarchy / parent for hierarchy in CGROUP_ROOT.iterdir() if (hierarchy / parent).exists()]


@pytest.fixture
def private_state(tmp_path):
    """A hako state of the test's own (root, run directory, cgroup parent), all removed at the end."""
    base = tmp_path / "state"
    env = {
        "HAKO_ROOT": str(base / "root"),
        "HAKO_RUN": str(base / "run"),
        "HAKO_CGROUP_PARENT": f"hako-purge-{os.getpid()}",
    }
    yield env
    hako_env = dict(os.environ, **env)
    if Path(env["HAKO_ROOT"], "containers").is_dir():
        for entry in Path(env["HAKO_ROOT"], "containers").iterdir():
            hako("rm", "-f", entry.name, check=False, env=hako_env)
    stop_supervisor(env["HAKO_RUN"])
    for pid in processes_in(env["HAKO_CGROUP_PARENT"], spares=True):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    # A cgroup is removable once its killed processes are gone.
    deadline = time.monotonic() + 10
    while processes_in(env["HAKO_CGROUP_PARENT"], spares=True) and time.monotonic() < deadline:
        time.sleep(0.05)
    for top in parent_cgroups(env["HAKO_CGROUP_PARENT"]):
        for path in sorted(top.glob("**/"), key=lambda p: -len(p.parts)):
            with contextlib.suppress(OSError):
                path.rmdir()
    shutil.rmtree(base, ignore_errors=True)


# hako_runtime -------------------------------------------------------------------


def test_runtime_installs_the_shipped_package_and_a_launcher_repairs_changes_and_removes_them(
    tmp_path, containers
) -> None:
    containers.append("rt-listed")
    hako("create", "--name", "rt-listed", "busybox", *COMMAND)
    prefix = tmp_path / "prefix"
    lib, command = prefix / "lib" / "hako", prefix / "bin" / "hako"
    changed_file = lib / "hako" / "cli.py"
    installed = tmp_path / "installed"
    runtime = {"prefix": str(prefix)}
    tasks = [
        task("install", "hako_runtime", _diff=True, **runtime),
        task("install again", "hako_runtime", **runtime),
        {
            "name": "copy what was installed",
            "ansible.builtin.command": {"argv": ["cp", "-a", str(prefix), str(installed)]},
        },
        task("version", "ansible.builtin.command", "version", argv=[str(command), "version"]),
        task("ps", "ansible.builtin.command", "ps", argv=[str(command), "ps", "-a"]),
        task("change a file", "ansible.builtin.lineinfile", path=str(changed_file), line="# changed by hand"),
        task("install in check mode", "hako_runtime", _check_mode=True, _diff=True, **runtime),
        task("read after check mode", "ansible.builtin.slurp", src=str(changed_file)),
        task("repair", "hako_runtime", _diff=True, **runtime),
        task("read after repair", "ansible.builtin.slurp", src=str(changed_file)),
        task("absent in check mode", "hako_runtime", _check_mode=True, state="absent", **runtime),
        task("after absent in check mode", "ansible.builtin.stat", path=str(command)),
        task("absent", "hako_runtime", _diff=True, state="absent", **runtime),
        task("absent again", "hako_runtime", state="absent", **runtime),
    ]
    r = run_playbook(tmp_path, tasks)

    first = r["install"]
    assert (first["changed"], first["version"], first["command"], first["lib"]) == (
        True,
        version(),
        str(command),
        str(lib),
    )
    assert first["diff"]["before"] == {"version": None, "digest": None, "launcher": False}
    assert first["diff"]["after"]["version"] == version() and first["diff"]["after"]["launcher"] is True
    assert r["install again"]["changed"] is False

    # The package as installed: every file the CLI may import, byte for byte as in the
    # repository. Left out: what Ansible did not ship with hako_runtime (ansible_verify.py,
    # ansible_container.py, __main__.py), never a file the CLI needs.
    package = tree_files(installed / "lib" / "hako" / "hako")
    repo = repo_files()
    assert package == {name: data for name, data in repo.items() if name in package}
    assert not [name for name in repo if name not in package and cli_needs(name)]
    assert {"ansible_host.py", "__init__.py", "cli.py", "engine/__init__.py", "images/store.py"} <= set(
        package
    )
    assert {"ansible_verify.py", "__main__.py"}.isdisjoint(package)
    assert {oct(p.stat().st_mode & 0o777) for p in (installed / "lib" / "hako" / "hako").rglob("*.py")} == {
        "0o644"
    }
    launcher = installed / "bin" / "hako"
    assert launcher.read_text().splitlines()[0] == f"#!{PYTHON} -IS"
    assert launcher.stat().st_mode & 0o777 == 0o755
    # It runs the installed package, on the host's Python, against the state in the environment.
    assert r["version"]["stdout"] == f"hako {version()}"
    listing = r["ps"]["stdout_lines"]
    assert listing[0].split()[:2] == ["CONTAINER", "ID"]
    assert [line.split()[-1] for line in listing[1:]] == ["rt-listed"]

    # A file changed by hand: reported, left alone in check mode, put back otherwise.
    check = r["install in check mode"]
    assert check["changed"] is True
    assert check["diff"]["before"]["digest"] != check["diff"]["after"]["digest"]
    assert base64.b64decode(r["read after check mode"]["content"]).endswith(b"# changed by hand\n")
    repair = r["repair"]
    assert repair["changed"] is True
    assert repair["diff"]["before"]["digest"] == check["diff"]["before"]["digest"]
    assert repair["diff"]["after"] == first["diff"]["after"]
    assert repair["diff"]["before"]["version"] == repair["diff"]["after"]["version"] == version()
    assert base64.b64decode(r["read after repair"]["content"]) == repo["cli.py"]

    assert r["absent in check mode"]["changed"] is True
    assert r["after absent in check mode"]["stat"]["exists"] is True
    absent = r["absent"]
    assert absent["changed"] is True and absent["version"] is None
    assert absent["diff"]["after"] == {"version": None, "digest": None, "launcher": False}
    assert r["absent again"]["changed"] is False
    assert not command.exists() and not lib.exists()


def test_purge_state_refuses_while_a_container_exists_then_removes_root_run_and_cgroups(
    tmp_path, private_state
) -> None:
    prefix = tmp_path / "prefix"
    root, run, parent = (private_state[k] for k in STATE_VARS)
    purge = {"prefix": str(prefix), "state": "absent", "purge_state": True}
    tasks = [
        task("image", "hako_image", name="busybox", source="build"),
        task("install", "hako_runtime", prefix=str(prefix)),
        task("container", "hako_container", name="pc1", image="busybox", command=COMMAND),
        task("purge while a container exists", "hako_runtime", _ignore_errors=True, **purge),
        task("install kept", "hako_runtime", _check_mode=True, prefix=str(prefix)),
        task("root kept", "ansible.builtin.stat", path=root),
        task(
            "purge without state absent",
            "hako_runtime",
            _ignore_errors=True,
            prefix=str(prefix),
            purge_state=True,
        ),
        task("remove the container", "hako_container", name="pc1", state="absent"),
        task("purge in check mode", "hako_runtime", _check_mode=True, **purge),
        task("root after check mode", "ansible.builtin.stat", path=root),
        task("purge", "hako_runtime", **purge),
        task("purge again", "hako_runtime", **purge),
    ]
    with environment(private_state):
        r = run_playbook(tmp_path, tasks)

    assert r["container"]["container"]["State"]["Running"] is True
    refused = r["purge while a container exists"]
    assert refused["_status"] == "failed"
    assert refused["msg"] == "cannot remove hako's state: containers remain (pc1)"
    assert r["install kept"]["changed"] is False
    assert r["root kept"]["stat"]["exists"] is True
    refused = r["purge without state absent"]
    assert refused["_status"] == "failed"
    assert refused["msg"] == "invalid value for purge_state: true needs state=absent"

    # The parent of the container's cgroup in each hierarchy: what purging removes.
    cgroups = sorted({str(Path(p).parent) for p in r["container"]["container"]["Cgroup"]["Paths"].values()})
    assert all(Path(p).name == parent for p in cgroups)
    predicted = r["purge in check mode"]
    assert predicted["changed"] is True
    assert predicted["removed"][:2] == [root, run]
    assert sorted(predicted["removed"][2:]) == cgroups
    assert r["root after check mode"]["stat"]["exists"] is True

    purged = r["purge"]
    assert purged["changed"] is True and purged["removed"] == predicted["removed"]
    assert (r["purge again"]["changed"], r["purge again"]["removed"]) == (False, [])
    assert not os.path.lexists(root) and not os.path.lexists(run)
    assert parent_cgroups(parent) == []
    assert processes_in(parent, spares=True) == []
    assert not prefix.joinpath("bin", "hako").exists()


# hako_host_info ------------------------------------------------------------------


def mounted_v1_controllers() -> set[str]:
    """The v1 controllers this machine has mounted, from /proc/self/mounts."""
    with open("/proc/cgroups") as f:
        known = {line.split()[0] for line in f if not line.startswith("#")}
    mounted = set()
    with open("/proc/self/mounts") as f:
        for line in f:
            _source, _target, fstype, options, *_ = line.split()
            if fstype == "cgroup":
                mounted |= set(options.split(",")) & known
    return mounted


def test_host_info_reports_what_the_machine_says(tmp_path) -> None:
    from hako.cgroups import detect_mode

    tasks = [
        task(
            "facts", "hako_host_info", "facts", sysctl=["user.max_user_namespaces", "kernel.no_such_setting"]
        ),
        task("in check mode", "hako_host_info", _check_mode=True),
        task("path as a sysctl", "hako_host_info", _ignore_errors=True, sysctl=["../etc/passwd"]),
        task("slashes in a sysctl", "hako_host_info", _ignore_errors=True, sysctl=["kernel/hostname"]),
    ]
    r = run_playbook(tmp_path, tasks)

    facts = r["facts"]["ansible_facts"]["hako_host"]
    assert r["facts"]["changed"] is False
    assert facts["cgroup_mode"] == detect_mode()
    assert facts["sysctl"] == {
        "user.max_user_namespaces": Path("/proc/sys/user/max_user_namespaces").read_text().strip(),
        "kernel.no_such_setting": None,
    }
    assert {"pid", "network", "mount", "ipc", "uts", "user", "cgroup"} <= set(facts["namespaces"])
    kinds = {
        "user": "user",
        "mount": "mnt",
        "pid": "pid",
        "network": "net",
        "ipc": "ipc",
        "uts": "uts",
        "cgroup": "cgroup",
    }
    assert facts["namespaces"] == sorted(
        k for k, proc in kinds.items() if os.path.exists(f"/proc/self/ns/{proc}")
    )
    assert "overlay" in Path("/proc/filesystems").read_text().split()  # hako's containers need it
    assert facts["overlayfs"] is True
    assert facts["systemd"] is os.path.isdir("/run/systemd/system")
    assert set(facts["cgroup_v1_controllers"]) == mounted_v1_controllers()
    v2 = [CGROUP_ROOT / "cgroup.controllers", CGROUP_ROOT / "unified" / "cgroup.controllers"]
    v2_controllers = [p.read_text().split() for p in v2 if p.exists()]
    assert facts["cgroup_v2_controllers"] == next((c for c in v2_controllers if c), [])
    uname = os.uname()
    assert (facts["kernel"], facts["architecture"]) == (uname.release, uname.machine)
    assert facts["python"] == PYTHON
    python_version = subprocess.run(
        [PYTHON, "-c", "import platform; print(platform.python_version())"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert facts["python_version"] == python_version.stdout.strip()

    assert r["in check mode"]["_status"] == "ok"
    assert r["in check mode"]["ansible_facts"]["hako_host"]["cgroup_mode"] == detect_mode()
    for title, name in (("path as a sysctl", "../etc/passwd"), ("slashes in a sysctl", "kernel/hostname")):
        assert r[title]["_status"] == "failed"
        assert r[title]["msg"] == f"invalid value for sysctl: {name!r} is not a sysctl name"
