#!/usr/bin/env python3
"""Ansible: one playbook converging N containers, hako_containers next to a podman_container loop.

Both sides converge the same N containers on localhost (default 50): ``sleep
3600`` from the same busybox root filesystem, 64 MiB of memory, one label,
running. Each side's playbook runs twice per round and both runs are timed
(wall time of ``ansible-playbook``):

1. the first run, which creates and starts all N;
2. the no-change rerun, which must report ``changed=0`` (the benchmark fails
   if it does not).

The hako side is one ``hako_containers`` task run with the repository's
ansible.cfg (its library/ and module_utils/); the podman side is a loop of N
``containers.podman.podman_container`` tasks run by a virtualenv with PyPI's
``ansible`` package (which carries that collection), made on first use under
the repository's .cache/ (``--venv``). For reference, three playbooks that
make no container: one ``debug`` task (the fixed cost of ``ansible-playbook``),
one ``ping`` task (that and one module run) and ``ping`` in a loop of N
(Ansible's own cost of a loop). After each round everything is removed (not
timed), so that every first run starts with no container and no hako
supervisor. Targets: hako at least 10 times faster than the podman loop, and
hako's rerun under 3 s.

Run as root:  python3 bench/bench_ansible.py [--runs N] [--containers N] [--venv DIR] [--out FILE]

Everything but that virtualenv lives in a private temporary directory (HAKO_ROOT, HAKO_RUN,
podman's root, runroot, runc state and configuration, Ansible's temporary
files) and the cgroup parents ``hako-bench-ansible`` and
``hako-bench-ansible-podman``; all of it is removed at the end, also after a
failure or Ctrl-C, and the script exits non-zero if anything is left.
"""

from __future__ import annotations

import argparse
import datetime
import glob
import json
import os
import platform
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

import benchlib
from benchlib import BenchError

REPO = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
PYTHON = "/usr/bin/python3"  # the targets' interpreter, and the podman venv's base
HAKO_CGROUP_PARENT = "hako-bench-ansible"
PODMAN_CGROUP_PARENT = "hako-bench-ansible-podman"
CGROUP_PARENTS = (HAKO_CGROUP_PARENT, PODMAN_CGROUP_PARENT)
PODMAN_IMAGE = "localhost/hako-bench/busybox:latest"
COMMAND = ["sleep", "3600"]
MEMORY = "64m"
MEMORY_BYTES = 64 * 1024 * 1024
LABELS = {"bench": "ansible"}
HAKO_TARGET_RATIO = 10.0
RERUN_TARGET_SECONDS = 3.0

# Paths outside the temporary directory that podman creates on first use whatever
# --root/--runroot say; removed at the end if they were not there before.
GLOBAL_PATHS = (
    "/var/lib/containers",
    "/run/containers",
    "/run/libpod",
    "/run/netns",
    "/etc/containers/networks",
    "/var/lib/cni",
)
# runc's default state directory: podman is given another, and nothing may appear here.
RUNC_DEFAULT_ROOT = "/run/runc"

# command -> Debian package; `scripts/setup --peers` installs them.
REQUIRED = {"podman": "podman", "conmon": "conmon", "runc": "runc", "busybox": "busybox-static", "tar": "tar"}


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


# /proc ----------------------------------------------------------------------------------


def _cgroup_paths(pid: int) -> dict[str, str]:
    """Controller (``""`` for the v2 hierarchy) -> the process's cgroup path."""
    paths = {}
    for line in (benchlib.read_file(f"/proc/{pid}/cgroup") or "").splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(",") if controllers else [""]:
            paths[controller] = path
    return paths


def our_processes(top: str) -> list[int]:
    return benchlib.our_processes(top, CGROUP_PARENTS)


def memory_limit(pid: int) -> int | None:
    """The memory limit of a process's cgroup as the kernel holds it, in bytes (None: no limit)."""
    paths = _cgroup_paths(pid)
    if "memory" in paths:
        path = os.path.join(benchlib.CGROUP_FS, "memory", paths["memory"][1:], "memory.limit_in_bytes")
    else:
        path = os.path.join(benchlib.CGROUP_FS, paths.get("", "/")[1:], "memory.max")
    value = benchlib.read_file(path)
    if value is None:
        raise BenchError(f"cannot read the memory limit of process {pid}")
    value = value.strip()
    return None if value == "max" or int(value) >= 1 << 62 else int(value)


# The benchmark's private state ---------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        # Short: podman refuses a runroot path longer than 50 characters.
        self.tmp = os.path.realpath(tempfile.mkdtemp(prefix="hako-ba.", dir="/var/tmp"))
        os.chmod(self.tmp, 0o711)
        self.present_before = {p for p in GLOBAL_PATHS if os.path.lexists(p)}
        self.runc_before = set(os.listdir(RUNC_DEFAULT_ROOT)) if os.path.isdir(RUNC_DEFAULT_ROOT) else None
        self.hako_root = os.path.join(self.tmp, "hako", "root")
        self.hako_run = os.path.join(self.tmp, "hako", "run")
        self.podman_dir = os.path.join(self.tmp, "podman")
        self.podman_wrapper = os.path.join(self.podman_dir, "bin", "podman")
        self.logs = os.path.join(self.tmp, "logs")
        self.hako_env = {
            "HAKO_ROOT": self.hako_root,
            "HAKO_RUN": self.hako_run,
            "HAKO_CGROUP_PARENT": HAKO_CGROUP_PARENT,
            # No network, as podman's side (netns none).
            "HAKO_DEFAULT_NETWORK": "none",
        }
        self.podman_env = {
            "CONTAINERS_CONF": os.path.join(self.podman_dir, "containers.conf"),
            "CONTAINERS_STORAGE_CONF": os.path.join(self.podman_dir, "storage.conf"),
        }
        self.env = dict(os.environ, **self.hako_env, **self.podman_env)
        # Ansible keeps nothing in ~/.ansible: its home and temporary files are here.
        ansible_dir = os.path.join(self.tmp, "ansible")
        self.env.update(
            ANSIBLE_HOME=os.path.join(ansible_dir, "home"),
            ANSIBLE_LOCAL_TEMP=os.path.join(ansible_dir, "local"),
            ANSIBLE_REMOTE_TEMP=os.path.join(ansible_dir, "remote"),
            ANSIBLE_NOCOLOR="1",
            ANSIBLE_RETRY_FILES_ENABLED="0",
        )
        self.hako_used = False
        self.podman_used = False
        self.playbook_count = 0

    # Running things ---------------------------------------------------------------------
    def hako(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        self.hako_used = True
        return benchlib.run([os.path.join(REPO, "bin", "hako"), *args], self.env, timeout)

    def podman(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        self.podman_used = True
        return benchlib.run([self.podman_wrapper, *args], self.env, timeout)

    def playbook(self, side: str, ansible_playbook: str, config: str, playbook: str) -> tuple[float, str]:
        """Run one playbook; its wall time and its output (kept in a file, not a pipe)."""
        self.playbook_count += 1
        out = os.path.join(self.logs, f"{self.playbook_count:03d}-{side}.log")
        argv = [ansible_playbook, "-i", os.path.join(self.tmp, "inventory.yml"), playbook]
        env = dict(self.env, ANSIBLE_CONFIG=config)
        timeout = 300 + 10 * self.args.containers
        with open(out, "w", encoding="utf-8") as f:
            started = time.perf_counter()
            try:
                proc = subprocess.run(
                    argv, env=env, cwd=REPO, stdout=f, stderr=subprocess.STDOUT, timeout=timeout
                )
            except subprocess.TimeoutExpired:
                raise BenchError(
                    f"{side}: ansible-playbook timed out after {timeout} s (see {out})"
                ) from None
            elapsed = time.perf_counter() - started
        text = benchlib.read_file(out) or ""
        if proc.returncode != 0:
            raise BenchError(f"{side}: ansible-playbook exited {proc.returncode}:\n{text[-3000:]}")
        return elapsed, text

    # Set-up -----------------------------------------------------------------------------
    def setup(self) -> None:
        log(f"private state in {self.tmp}")
        for path in (self.hako_root, self.hako_run, self.logs, os.path.dirname(self.podman_wrapper)):
            os.makedirs(path, exist_ok=True)
        for key in ("ANSIBLE_HOME", "ANSIBLE_LOCAL_TEMP", "ANSIBLE_REMOTE_TEMP"):
            os.makedirs(self.env[key], exist_ok=True)
        with open(os.path.join(self.tmp, "inventory.yml"), "w", encoding="utf-8") as f:
            f.write(
                "all:\n  hosts:\n    localhost:\n      ansible_connection: local\n"
                f"      ansible_python_interpreter: {PYTHON}\n"
            )
        self.hako("image", "build", "busybox")
        layers = os.path.join(self.hako_root, "images", "layers")
        found = [d for d in glob.glob(os.path.join(layers, "*", "fs")) if os.path.isdir(d)]
        if len(found) != 1:
            raise BenchError(f"expected one layer in {layers}, found {len(found)}")
        self._write_podman_config()
        tarball = os.path.join(self.tmp, "rootfs.tar")
        benchlib.run(["tar", "-C", found[0], "-cf", tarball, "."], self.env, 300)
        self.podman("import", tarball, PODMAN_IMAGE)
        os.unlink(tarball)

    def _write_podman_config(self) -> None:
        d = self.podman_dir
        benchlib.write_podman_config(
            d, self.podman_env["CONTAINERS_CONF"], self.podman_env["CONTAINERS_STORAGE_CONF"]
        )
        # The podman the module runs (its `executable`): private storage, and runc's
        # state in a directory of its own instead of /run/runc.
        argv = ["/usr/bin/podman", "--root", os.path.join(d, "root"), "--runroot", os.path.join(d, "runroot")]
        argv += ["--runtime-flag", "root=" + os.path.join(d, "runc")]
        with open(self.podman_wrapper, "w", encoding="utf-8") as f:
            f.write(f'#!/bin/sh\nexec {shlex.join(argv)} "$@"\n')
        os.chmod(self.podman_wrapper, 0o755)

    # Between rounds (not timed) ---------------------------------------------------------
    def remove_hako_containers(self) -> None:
        ids = self.hako("ps", "-aq").stdout.split()
        if ids:
            self.hako("rm", "-f", *ids, timeout=600)

    def remove_podman_containers(self) -> None:
        self.podman("rm", "-af", "-t", "0", timeout=900)

    def wait_quiet(self, what: str, seconds: float = 30) -> None:
        """Wait until no process of ours is left (hako's supervisor leaves 1 s after its last container)."""
        deadline = time.monotonic() + seconds
        while our_processes(self.tmp):
            if time.monotonic() > deadline:
                left = ", ".join(benchlib.describe(p) for p in our_processes(self.tmp))
                raise BenchError(f"after removing the {what} containers, still running: {left}")
            time.sleep(0.1)

    def reset_hako(self) -> None:
        """No container, no supervisor and no copy of the module's package: as after a reboot."""
        self.remove_hako_containers()
        self.wait_quiet("hako")
        shutil.rmtree(os.path.join(self.hako_run, "ansible"), ignore_errors=True)

    def reset_podman(self) -> None:
        self.remove_podman_containers()
        self.wait_quiet("podman")

    # Clean-up ---------------------------------------------------------------------------
    def cleanup(self) -> list[str]:
        """Remove everything this run made; what could not be removed."""
        attempt = benchlib.Cleanup()
        problems = attempt.problems

        if self.hako_used and os.path.isdir(os.path.join(self.hako_root, "containers")):
            attempt("hako rm", self.remove_hako_containers)
        if self.podman_used:
            attempt("podman rm", self.remove_podman_containers)
            attempt("podman rmi", self.podman, "rmi", "-af")
        attempt("processes", benchlib.end_processes, self.tmp, CGROUP_PARENTS, log)
        attempt("mounts", benchlib.unmount_below, self.tmp)
        attempt("temporary directory", shutil.rmtree, self.tmp)
        attempt("cgroups", benchlib.remove_cgroups, CGROUP_PARENTS)
        for path in GLOBAL_PATHS:
            if path not in self.present_before and os.path.lexists(path):
                attempt(path, shutil.rmtree, path)
        return problems + self.leftovers()

    def leftovers(self) -> list[str]:
        found = [f"process {benchlib.describe(pid)} is still running" for pid in our_processes(self.tmp)]
        if os.path.lexists(self.tmp):
            found.append(f"{self.tmp} is still there")
        found += [f"mount {m} is still there" for m in benchlib.mounts_below(self.tmp)]
        found += [f"cgroup {d} is still there" for d in benchlib.cgroups_below(CGROUP_PARENTS)]
        for path in GLOBAL_PATHS:
            if path not in self.present_before and os.path.lexists(path):
                found.append(f"{path} was made by this run and is still there")
        if self.runc_before is None and os.path.lexists(RUNC_DEFAULT_ROOT):
            found.append(f"{RUNC_DEFAULT_ROOT} was made by this run")
        elif os.path.isdir(RUNC_DEFAULT_ROOT):
            new = set(os.listdir(RUNC_DEFAULT_ROOT)) - self.runc_before
            found += [f"{RUNC_DEFAULT_ROOT}/{name} was made by this run" for name in sorted(new)]
        return found


# The playbooks ---------------------------------------------------------------------------


def container_names(n: int) -> list[str]:
    width = len(str(n - 1))
    return [f"hba-{i:0{width}d}" for i in range(n)]


def write_playbooks(bench: Bench, names: list[str]) -> dict[str, str]:
    """The hako, podman and reference playbooks (JSON is YAML); their paths."""
    hako_task = {
        "name": f"Converge {len(names)} containers",
        "hako_containers": {
            "containers": [
                {"name": name, "image": "busybox", "command": COMMAND, "memory": MEMORY, "labels": LABELS}
                for name in names
            ]
        },
    }
    podman_task = {
        "name": f"Converge {len(names)} containers",
        "containers.podman.podman_container": {
            "name": "{{ item }}",
            "image": PODMAN_IMAGE,
            "command": COMMAND,
            "memory": MEMORY,
            "labels": LABELS,
            "state": "started",
            "cgroup_parent": f"/{PODMAN_CGROUP_PARENT}",
            "executable": bench.podman_wrapper,
        },
        "loop": names,
    }
    plays = {
        "hako": {"environment": bench.hako_env, "tasks": [hako_task]},
        "podman": {"environment": bench.podman_env, "tasks": [podman_task]},
        "debug": {"tasks": [{"name": "No module run", "ansible.builtin.debug": {"msg": "-"}}]},
        "ping": {"tasks": [{"name": "One module run", "ansible.builtin.ping": {}}]},
        "ping-loop": {
            "tasks": [{"name": "A loop of module runs", "ansible.builtin.ping": {}, "loop": names}]
        },
    }
    paths = {}
    for side, play in plays.items():
        paths[side] = os.path.join(bench.tmp, f"{side}.yml")
        with open(paths[side], "w", encoding="utf-8") as f:
            json.dump([{"name": side, "hosts": "localhost", "gather_facts": False, **play}], f, indent=1)
    return paths


def write_podman_ansible_cfg(bench: Bench) -> str:
    """The podman side's ansible.cfg: Ansible's defaults, the interpreter named (not a pyenv shim)."""
    path = os.path.join(bench.tmp, "ansible-podman.cfg")
    with open(path, "w", encoding="utf-8") as f:
        f.write(f"[defaults]\ninterpreter_python = {PYTHON}\nstdout_callback = default\n")
    return path


RECAP = re.compile(r"^localhost\s*:\s*(.*)$", re.MULTILINE)


def recap(output: str) -> dict[str, int]:
    """The PLAY RECAP counters of localhost (ok, changed, failed, ...)."""
    found = RECAP.findall(output)
    if not found:
        raise BenchError(f"no PLAY RECAP in the output:\n{output[-3000:]}")
    return {key: int(value) for key, value in re.findall(r"(\w+)=(\d+)", found[-1])}


def check_recap(side: str, phase: str, output: str, changed: int) -> None:
    counts = recap(output)
    bad = {k: counts.get(k, 0) for k in ("failed", "unreachable") if counts.get(k, 0)}
    if bad or counts.get("changed", 0) != changed:
        raise BenchError(
            f"{side} {phase}: expected changed={changed} and no failure, the recap says "
            f"{' '.join(f'{k}={v}' for k, v in counts.items())}:\n{output[-3000:]}"
        )


def check_running(bench: Bench, side: str, names: list[str]) -> None:
    """Every container runs, with the label and (read from its cgroup) the memory limit."""
    inspected = json.loads((bench.hako if side == "hako" else bench.podman)("inspect", *names).stdout)
    found = {c["Name"]: (c["State"]["Pid"], c["Config"]["Labels"] or {}) for c in inspected}
    problems = []
    for name in names:
        pid, labels = found.get(name, (0, {}))
        st = benchlib.proc_stat(pid) if pid else None
        if st is None or st[1] in ("Z", "X"):
            problems.append(f"{name} is not running")
        elif any(labels.get(k) != v for k, v in LABELS.items()):
            problems.append(f"{name} has labels {labels}")
        elif memory_limit(pid) != MEMORY_BYTES:
            problems.append(f"{name}'s memory limit is {memory_limit(pid)} bytes")
    if problems:
        raise BenchError(f"{side}: after the first run, " + "; ".join(problems[:5]))


# Measuring --------------------------------------------------------------------------------


class Side:
    def __init__(self, key: str, ansible_playbook: str, config: str, playbook: str) -> None:
        self.key = key
        self.ansible_playbook = ansible_playbook
        self.config = config
        self.playbook = playbook
        self.first: list[float] = []
        self.rerun: list[float] = []


def measure_round(bench: Bench, side: Side, names: list[str]) -> None:
    elapsed, output = bench.playbook(side.key, side.ansible_playbook, side.config, side.playbook)
    check_recap(side.key, "first run", output, changed=1)
    check_running(bench, side.key, names)
    side.first.append(elapsed)
    elapsed, output = bench.playbook(side.key, side.ansible_playbook, side.config, side.playbook)
    check_recap(side.key, "no-change rerun", output, changed=0)
    side.rerun.append(elapsed)
    log(f"{side.key}: first run {side.first[-1]:.2f} s, no-change rerun {side.rerun[-1]:.2f} s")
    (bench.reset_hako if side.key == "hako" else bench.reset_podman)()


# Report ---------------------------------------------------------------------------------------


def hako_version() -> str:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", REPO, *args], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        ).stdout.strip()

    rev = git("rev-parse", "--short", "HEAD")
    if not rev:
        return f"at {REPO} (not a git checkout)"
    if git("status", "--porcelain", "--", "bin", "module_utils", "library", "ansible.cfg"):
        rev += " with uncommitted changes"
    return rev


def podman_venv_versions(venv: str) -> str:
    code = "import importlib.metadata as m; print(m.version('ansible'), m.version('ansible-core'))"
    ansible, core = benchlib.first_line([os.path.join(venv, "bin", "python"), "-c", code]).split()[:2]
    manifest = podman_collection(venv)
    with open(os.path.join(manifest, "MANIFEST.json"), encoding="utf-8") as f:
        collection = json.load(f)["collection_info"]["version"]
    return f"ansible {ansible} (ansible-core {core}, containers.podman {collection})"


def machine(args: argparse.Namespace) -> dict:
    return {
        "host": f"{os.cpu_count()} cores ({benchlib.cpu_model()}), Linux {platform.release()}, "
        f"{benchlib.os_name()}, {benchlib.cgroup_mode()}",
        "hako": hako_version(),
        "hako_ansible": benchlib.first_line([args.ansible_playbook, "--version"]),
        "podman_ansible": podman_venv_versions(args.venv),
        "podman": benchlib.first_line(["podman", "--version"]),
        "conmon": benchlib.first_line(["conmon", "--version"]),
        "runc": benchlib.first_line(["runc", "--version"]),
        "python": benchlib.first_line([PYTHON, "--version"]),
    }


def _s(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} s"


def _all(values: list[float]) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


def _verdict(ok: bool) -> str:
    return "**met**" if ok else "**not met**"


def report(args, when, info, load, hako: Side, podman: Side, references: dict[str, list[float]]) -> str:
    n = args.containers
    first_ratio = statistics.median(podman.first) / statistics.median(hako.first)
    rerun_ratio = statistics.median(podman.rerun) / statistics.median(hako.rerun)
    hako_rerun = statistics.median(hako.rerun)
    lines = [
        f"Command: `{args.command_line}`  ",
        f"Date: {when:%Y-%m-%d %H:%M} UTC  ",
        f"Machine: {info['host']}; load average {load[0]:.2f} at the start, {load[1]:.2f} at the end  ",
        f"Versions: hako {info['hako']}, run by {info['hako_ansible']}; podman's side run by "
        f"{info['podman_ansible']}; {info['podman']}; {info['conmon']}; {info['runc'].split(' commit')[0]}; "
        f"{info['python']} on the target",
        "",
        f"Wall time of `ansible-playbook` converging {n} containers on localhost, median of "
        f"{args.runs} {'round' if args.runs == 1 else 'rounds'} (every run listed); everything was removed "
        "between rounds (not timed).",
        "",
        "| playbook | first run: all created and started | no-change rerun (`changed=0`) "
        "| first runs (s) | reruns (s) |",
        "| --- | ---: | ---: | --- | --- |",
        f"| hako: one `hako_containers` task | {_s(hako.first)} | {_s(hako.rerun)} "
        f"| {_all(hako.first)} | {_all(hako.rerun)} |",
        f"| podman: `containers.podman.podman_container` in a loop of {n} | {_s(podman.first)} "
        f"| {_s(podman.rerun)} | {_all(podman.first)} | {_all(podman.rerun)} |",
        f"| podman / hako | {first_ratio:.1f}× | {rerun_ratio:.1f}× | | |",
        "",
        "For reference, Ansible alone (no container):",
        "",
        "| playbook | median | runs (s) |",
        "| --- | ---: | --- |",
        f"| one `ansible.builtin.debug` task, no module run (as hako's side runs) "
        f"| {_s(references['debug'])} | {_all(references['debug'])} |",
        f"| one `ansible.builtin.ping` task (as hako's side runs) | {_s(references['ping'])} "
        f"| {_all(references['ping'])} |",
        f"| `ansible.builtin.ping` in a loop of {n} (as podman's side runs) | {_s(references['ping-loop'])} "
        f"| {_all(references['ping-loop'])} |",
        "",
        f"Each container: `{shlex.join(COMMAND)}` from the same busybox root filesystem (hako's "
        f"`busybox` image; podman imports its layer as `{PODMAN_IMAGE}`), memory {MEMORY}, "
        f"label `bench=ansible`, state started. The first runs were checked: every container running, "
        "with the label and a 64 MiB limit read from its memory cgroup.",
        "",
        "- hako: the repository's ansible.cfg (library/, module_utils/, pipelining); "
        "the play's `environment` sets "
        f"`HAKO_ROOT=$TMP/hako/root HAKO_RUN=$TMP/hako/run HAKO_CGROUP_PARENT={HAKO_CGROUP_PARENT} "
        "HAKO_DEFAULT_NETWORK=none`. "
        "Each first run starts with no supervisor and no copy of the module's package in `$HAKO_RUN`.",
        "- podman: Ansible's defaults (no pipelining); the task sets `executable` to a wrapper "
        "running `podman --root "
        "$TMP/podman/root --runroot $TMP/podman/runroot --runtime-flag root=$TMP/podman/runc` and "
        f"`cgroup_parent: /{PODMAN_CGROUP_PARENT}`; the play's `environment` sets `CONTAINERS_CONF` "
        "(cgroupfs, file events logger, netns none, runtime runc) and `CONTAINERS_STORAGE_CONF` (overlay).",
        "- Both: connection local, `ansible_python_interpreter` /usr/bin/python3, "
        "no fact gathering; $TMP is a fresh temporary directory.",
        "",
        "Targets:",
        "",
        f"- hako ≥ {HAKO_TARGET_RATIO:.0f}× faster than the podman loop: first run "
        f"{_verdict(first_ratio >= HAKO_TARGET_RATIO)} ({first_ratio:.1f}×), no-change rerun "
        f"{_verdict(rerun_ratio >= HAKO_TARGET_RATIO)} ({rerun_ratio:.1f}×).",
        f"- hako's no-change rerun under {RERUN_TARGET_SECONDS:.0f} s: "
        f"{_verdict(hako_rerun < RERUN_TARGET_SECONDS)} ({hako_rerun:.2f} s).",
    ]
    if n != 50:
        lines.append(f"- The targets are stated for 50 containers; this run had {n}.")
    return "\n".join(lines) + "\n"


BEGIN = "<!-- bench_ansible:begin -->"
END = "<!-- bench_ansible:end -->"


# Main -------------------------------------------------------------------------------------------


def podman_collection(venv: str) -> str:
    """The containers.podman collection in the venv's site-packages ('' if missing)."""
    pattern = os.path.join(
        venv, "lib", "python3*", "site-packages", "ansible_collections", "containers", "podman"
    )
    found = [d for d in glob.glob(pattern) if os.path.isfile(os.path.join(d, "MANIFEST.json"))]
    return found[0] if found else ""


def ensure_podman_venv(venv: str) -> None:
    """A virtualenv with PyPI's ansible package (which carries containers.podman), made once."""
    if os.access(os.path.join(venv, "bin", "ansible-playbook"), os.X_OK) and podman_collection(venv):
        return
    log(f"making {venv}: a virtualenv with the ansible package (containers.podman)")
    if not os.path.exists(os.path.join(venv, "bin", "python")):
        subprocess.run([PYTHON, "-m", "venv", venv], check=True)
    pip = [os.path.join(venv, "bin", "pip"), "install", "-q", "--disable-pip-version-check", "ansible"]
    if subprocess.run(pip).returncode != 0 or not podman_collection(venv):
        raise SystemExit(f"bench_ansible: could not install the ansible package into {venv}")


def check_machine(args: argparse.Namespace) -> None:
    if os.geteuid() != 0:
        raise SystemExit("bench_ansible: run as root (containers, cgroups)")
    missing = sorted({pkg for cmd, pkg in REQUIRED.items() if shutil.which(cmd) is None})
    if missing:
        raise SystemExit(
            f"bench_ansible: missing {', '.join(missing)}: run `scripts/setup --peers` (as root)"
        )
    if not os.access(PYTHON, os.X_OK):
        raise SystemExit(f"bench_ansible: {PYTHON} is missing")
    if not args.ansible_playbook or not os.access(args.ansible_playbook, os.X_OK):
        raise SystemExit(
            "bench_ansible: no ansible-playbook for the hako side: run scripts/setup (.venv), "
            "put one on PATH or give --ansible-playbook"
        )


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=3, help="rounds (first run and rerun per side; default 3)")
    p.add_argument("--containers", type=int, default=50, help="containers per playbook (default 50)")
    p.add_argument(
        "--out", help="also write the Markdown report to this file (between its markers if it has them)"
    )
    p.add_argument(
        "--venv",
        default=os.path.join(REPO, ".cache", "bench-ansible-venv"),
        help="virtualenv with the ansible package for the podman side, made if missing "
        "(default .cache/bench-ansible-venv)",
    )
    default_playbook = os.path.join(REPO, ".venv", "bin", "ansible-playbook")
    if not os.path.exists(default_playbook):
        default_playbook = shutil.which("ansible-playbook") or ""
    p.add_argument(
        "--ansible-playbook",
        default=default_playbook,
        help="ansible-playbook for the hako side (default: .venv's, else the one on PATH)",
    )
    args = p.parse_args(argv)
    if args.runs < 1 or args.containers < 1:
        p.error("--runs and --containers must be at least 1")
    args.venv = os.path.abspath(args.venv)
    args.ansible_playbook = os.path.abspath(args.ansible_playbook) if args.ansible_playbook else ""
    args.command_line = shlex.join(["python3", "bench/bench_ansible.py", *argv])
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    check_machine(args)
    _lock = benchlib.start_alone(__file__, "bench_ansible", CGROUP_PARENTS)  # held until exit
    ensure_podman_venv(args.venv)
    when = datetime.datetime.now(datetime.timezone.utc)
    load_start = os.getloadavg()[0]
    bench = Bench(args)
    text = None
    code = 0
    try:
        info = machine(args)
        bench.setup()
        names = container_names(args.containers)
        playbooks = write_playbooks(bench, names)
        hako_cfg = os.path.join(REPO, "ansible.cfg")
        hako = Side("hako", args.ansible_playbook, hako_cfg, playbooks["hako"])
        podman_playbook = os.path.join(args.venv, "bin", "ansible-playbook")
        podman = Side("podman", podman_playbook, write_podman_ansible_cfg(bench), playbooks["podman"])
        references: dict[str, list[float]] = {"debug": [], "ping": [], "ping-loop": []}
        for round_ in range(args.runs):
            log(f"round {round_ + 1} of {args.runs}: {args.containers} containers per playbook")
            for side in (hako, podman) if round_ % 2 == 0 else (podman, hako):
                measure_round(bench, side, names)
            for key, side in (("debug", hako), ("ping", hako), ("ping-loop", podman)):
                elapsed, output = bench.playbook(key, side.ansible_playbook, side.config, playbooks[key])
                check_recap(key, "reference", output, changed=0)
                references[key].append(elapsed)
            log("reference: " + ", ".join(f"{key} {times[-1]:.2f} s" for key, times in references.items()))
        text = report(args, when, info, (load_start, os.getloadavg()[0]), hako, podman, references)
    except BenchError as e:
        log(f"FAILED: {e}")
        code = 1
    except KeyboardInterrupt:
        log("interrupted")
        code = 130
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)  # the clean-up runs to its end
        problems = benchlib.clean_up(bench.cleanup, log)
    if text is not None:
        print(text, end="")
        if args.out:
            benchlib.write_section(args.out, text, BEGIN, END)
            log(f"wrote {args.out}")
    return code or (1 if problems else 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
