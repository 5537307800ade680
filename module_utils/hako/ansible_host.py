"""What the host role's modules do: install the hako runtime for learners, and read the host's facts.

The runtime a learner's ``hako`` command runs is this very package, as the
module that installs it received it from Ansible: so the CLI on a lab host and
the modules that manage its containers are always the same code.
"""

from __future__ import annotations

import os
import platform
import sys

from . import __version__, store

# The commands the learner's CLI loads on demand: importing them here is what
# makes Ansible ship them with the module.
from . import cli as _cli  # noqa: F401
from . import commands as _commands  # noqa: F401
from . import image_commands as _image_commands  # noqa: F401
from . import supervisor as _supervisor  # noqa: F401
from .errors import HakoError
from .network import ifaddr as _ifaddr  # noqa: F401  (the whole runtime, though the CLI does not use it)
from .package import PACKAGE, files_digest, package_files, tree_files, write_package

LAUNCHER = """#!{python} -IS
# The hako command, installed by Ansible (role hako_host): runs the package
# under {lib} on the host's own Python, isolated from the environment (-I)
# and without site-packages (-S).
import sys

sys.path.insert(0, {lib!r})

from hako.cli import main  # noqa: E402

sys.exit(main())
"""


class Install:
    """The runtime under ``prefix``: ``lib/hako/hako/`` (the package) and ``bin/hako`` (the launcher)."""

    def __init__(self, prefix: str, python: str | None = None) -> None:
        if not os.path.isabs(prefix) or ".." in prefix.split("/"):
            raise HakoError(f"invalid value for prefix: {prefix!r} is not an absolute path")
        self.prefix = os.path.normpath(prefix)
        self.lib = os.path.join(self.prefix, "lib", "hako")
        self.bin = os.path.join(self.prefix, "bin", "hako")
        self.python = python or sys.executable
        self.launcher = LAUNCHER.format(python=self.python, lib=self.lib).encode()

    def installed(self) -> dict:
        """The installed package's version and digest (None when absent), and the launcher's state."""
        files = tree_files(os.path.join(self.lib, PACKAGE))
        launcher = None
        try:
            with open(self.bin, "rb") as f:
                launcher = f.read()
        except FileNotFoundError:
            pass
        return {
            "digest": files_digest(files) if files else None,
            "version": _version_of(files.get("__init__.py")),
            "launcher": launcher,
        }

    def converge(self, state: str, check_mode: bool) -> dict:
        """Make the install match ``state`` (present or absent); what changed, before and after."""
        files = package_files() if state == "present" else {}
        wanted = {
            "digest": files_digest(files) if files else None,
            "version": __version__ if files else None,
            "launcher": self.launcher if files else None,
        }
        current = self.installed()
        changed = current != wanted
        if changed and not check_mode:
            if state == "present":
                write_package(files, self.lib)
                _write_executable(self.bin, self.launcher)
            else:
                _remove(self.bin)
                store.remove_tree(self.lib)

        def shown(facts: dict) -> dict:
            return {
                "version": facts["version"],
                "digest": facts["digest"],
                "launcher": facts["launcher"] is not None,
            }

        return {
            "changed": changed,
            "diff": {"before": shown(current), "after": shown(wanted)},
            "version": wanted["version"],
            "command": self.bin,
            "lib": self.lib,
        }


def _version_of(init: bytes | None) -> str | None:
    if init is None:
        return None
    for line in init.decode(errors="replace").splitlines():
        if line.startswith("__version__"):
            return line.split("=", 1)[1].strip().strip("\"'")
    return None


def _write_executable(path: str, data: bytes) -> None:
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    temporary = f"{path}.{os.getpid()}.tmp"
    try:
        with open(temporary, "wb") as f:
            f.write(data)
        os.chmod(temporary, 0o755)
        os.rename(temporary, path)
    finally:
        _remove(temporary)


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


# Facts ------------------------------------------------------------------------


def host_facts(sysctl_keys: list[str]) -> dict:
    """What the roles decide by: cgroup mode, kernel features, init system, sysctl values."""
    from .cgroups import detect_mode
    from .linux import NAMESPACES

    try:
        cgroup_mode = detect_mode()
    except HakoError:
        cgroup_mode = "none"
    return {
        "cgroup_mode": cgroup_mode,
        "cgroup_v2_controllers": _words("/sys/fs/cgroup/cgroup.controllers")
        or _words("/sys/fs/cgroup/unified/cgroup.controllers"),
        "cgroup_v1_controllers": _v1_controllers(),
        "systemd": os.path.isdir("/run/systemd/system"),
        "overlayfs": _overlayfs(),
        "namespaces": sorted(
            kind for kind, (_f, name) in NAMESPACES.items() if os.path.exists(f"/proc/self/ns/{name}")
        ),
        "kernel": platform.release(),
        "architecture": platform.machine(),
        "python": sys.executable,
        "python_version": platform.python_version(),
        "sysctl": {key: _sysctl(key) for key in sysctl_keys},
        "root": store.root_dir(),
        "run": store.run_dir(),
    }


def _words(path: str) -> list[str]:
    try:
        with open(path) as f:
            return f.read().split()
    except OSError:
        return []


def _v1_controllers() -> list[str]:
    try:
        with open("/proc/cgroups") as f:
            rows = [line.split() for line in f if not line.startswith("#")]
    except OSError:
        return []
    from .cgroups import find_v1_hierarchies

    mounted = find_v1_hierarchies()
    return sorted(row[0] for row in rows if row and row[0] in mounted)


def _filesystems() -> set[str]:
    try:
        with open("/proc/filesystems") as f:
            return {line.split()[-1] for line in f if line.strip()}
    except OSError:
        return set()


def _overlayfs() -> bool:
    """overlayfs is registered, or its module is there for the first mount to load (a stock
    Debian or RHEL kernel before any container ran)."""
    if "overlay" in _filesystems():
        return True
    release = platform.release()
    for index in ("modules.dep", "modules.builtin"):
        try:
            with open(f"/lib/modules/{release}/{index}") as f:
                if any(line.split(":", 1)[0].rsplit("/", 1)[-1].startswith("overlay.ko") for line in f):
                    return True
        except OSError:
            continue
    return False


def _sysctl(key: str) -> str | None:
    if not key or key.startswith(".") or ".." in key or "/" in key:
        raise HakoError(f"invalid value for sysctl: {key!r} is not a sysctl name")
    try:
        with open("/proc/sys/" + key.replace(".", "/")) as f:
            return " ".join(f.read().split())
    except OSError:
        return None


# Taking hako's state away -------------------------------------------------------


def purge_state(check_mode: bool, wait: float = 10.0) -> dict:
    """Remove HAKO_ROOT, HAKO_RUN and the parent cgroup, once no container is left.

    Refuses (naming them) while containers exist: those belong to a lab's
    teardown, which stops them properly. The supervisor exits by itself once
    idle; it is asked to if it takes longer than a moment.
    """
    from .engine import Engine

    engine = Engine()
    names = sorted(record["name"] for record, _status in engine.list())
    if names:
        raise HakoError(f"cannot remove hako's state: containers remain ({', '.join(names)})")
    from .cgroups import open_cgroup

    cgroup_dirs = [path for path in open_cgroup(engine.cgroup_parent, engine.cgroup_mode()).paths().values()]
    removed = [path for path in (engine.root, engine.run, *cgroup_dirs) if os.path.isdir(path)]
    networks = engine.networks().list()
    bridges = [n for n in networks if os.path.exists(f"/sys/class/net/{n['bridge']}")]
    removed += [f"bridge {n['bridge']} (network {n['name']})" for n in bridges]
    if removed and not check_mode:
        _wait_for_supervisor(engine.run, wait)
        for network in networks:
            engine.remove_network(network["name"], force=True)
        # The cgroups first: one still in use fails the task with the state kept.
        for path in sorted(set(cgroup_dirs), key=len, reverse=True):
            try:
                os.rmdir(path)
            except FileNotFoundError:
                pass
            except OSError as e:
                raise HakoError(f"cannot remove hako's cgroup {path}: {e.strerror}") from None
        for path in (engine.root, engine.run):
            store.remove_tree(path)
    return {"changed": bool(removed), "removed": removed}


def _wait_for_supervisor(run_dir: str, wait: float) -> None:
    import signal
    import time

    pid_file = os.path.join(run_dir, "supervisor.pid")
    deadline = time.monotonic() + wait
    asked = False
    while os.path.exists(pid_file):
        if time.monotonic() > deadline:
            raise HakoError(f"the supervisor ({pid_file}) did not exit")
        if not asked and time.monotonic() > deadline - wait / 2:
            try:
                with open(pid_file) as f:
                    os.kill(int(f.read()), signal.SIGTERM)
            except (OSError, ValueError):
                pass
            asked = True
        time.sleep(0.05)
