#!/usr/bin/env python3
"""Benchmarks: hako next to runc, podman and a bare unshare on the same rootfs.

1. Start time: one container running ``true``, with the same limits (64 MiB memory,
   50 pids, half a CPU) and private namespaces, timed over several runs.
2. Memory per idle container: N detached ``sleep 3600`` containers; the PSS of
   every process that exists only to supervise them (hako's one
   ``hako-supervisor``, podman's ``conmon`` per container).

Run as root:  python3 bench/run_bench.py [--runs N] [--containers N] [--out FILE]

Everything lives in a private temporary directory and the cgroup parent
``hako-bench``; all of it is removed at the end, even after a failure or Ctrl-C.
The peers are installed by ``scripts/setup --peers``, never by this script.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

import benchlib
from benchlib import (
    BenchError,
    cgroup_mode,
    cgroups_below,
    clean_up,
    cpu_model,
    describe,
    end_processes,
    first_line,
    mounts_below,
    os_name,
    proc_stat,
    read_file,
    remove_cgroups,
    start_alone,
    unmount_below,
    write_podman_config,
    write_section,
)

REPO = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
PYTHON = "/usr/bin/python3"
CGROUP_PARENT = "hako-bench"
PODMAN_IMAGE = "localhost/hako-bench/busybox:latest"
LIMITS = ["--memory", "64m", "--pids-limit", "50", "--cpus", "0.5"]
WARMUPS = 3
BLOCK = 5  # runs of one runtime in a row before the next runtime's turn
MIB = 1024 * 1024

# Paths outside the temporary directory that podman or runc create on first use
# whatever --root/--runroot say. Removed at the end if they were not there before.
GLOBAL_PATHS = (
    "/var/lib/containers",
    "/run/containers",
    "/run/libpod",
    "/run/runc",
    "/run/netns",
    "/etc/containers/networks",
    "/var/lib/cni",
)

# command -> Debian package; `scripts/setup --peers` installs them.
REQUIRED = {
    "runc": "runc",
    "podman": "podman",
    "conmon": "conmon",
    "unshare": "util-linux",
    "chroot": "coreutils",
    "tar": "tar",
    "busybox": "busybox-static",
}


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


# /proc ---------------------------------------------------------------------------


def memory_kib(pid: int) -> tuple[int, int]:
    """(PSS, RSS) in KiB from /proc/PID/smaps_rollup."""
    values = {}
    for line in (read_file(f"/proc/{pid}/smaps_rollup") or "").splitlines():
        key, _, rest = line.partition(":")
        if key in ("Pss", "Rss"):
            values[key] = int(rest.split()[0])
    if "Pss" not in values:
        raise BenchError(f"no smaps_rollup for pid {pid}")
    return values["Pss"], values["Rss"]


def our_processes(top: str) -> list[int]:
    """Live processes this benchmark made: in its cgroups, or using its temporary directory."""
    return benchlib.our_processes(top, (CGROUP_PARENT,))


def _pid_ns(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None


# Commands ------------------------------------------------------------------------


class Bench:
    """The private state of one benchmark run and the commands that use it."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tmp = os.path.realpath(tempfile.mkdtemp(prefix="hako-bench."))
        os.chmod(self.tmp, 0o711)
        self.hako_root = os.path.join(self.tmp, "hako", "root")
        self.hako_run = os.path.join(self.tmp, "hako", "run")
        self.podman_dir = os.path.join(self.tmp, "podman")
        self.runc_state = os.path.join(self.tmp, "runc", "state")
        self.bundle = os.path.join(self.tmp, "runc", "bundle")
        self.rootfs = os.path.join(self.bundle, "rootfs")
        self.present_before = {p for p in GLOBAL_PATHS if os.path.lexists(p)}
        self.env = dict(os.environ)
        self.env.update(
            HAKO_ROOT=self.hako_root,
            HAKO_RUN=self.hako_run,
            HAKO_CGROUP_PARENT=CGROUP_PARENT,
            HAKO_DEFAULT_NETWORK="none",  # as runc's and podman's containers: lo only
            CONTAINERS_CONF=os.path.join(self.podman_dir, "containers.conf"),
            CONTAINERS_STORAGE_CONF=os.path.join(self.podman_dir, "storage.conf"),
        )
        self.run_counter = 0

    # Running things -------------------------------------------------------------
    def run(
        self, argv: list[str], timeout: float = 120, check: bool = True, **kwargs
    ) -> subprocess.CompletedProcess:
        return benchlib.run(argv, self.env, timeout, check, **kwargs)

    def hako(self, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
        return self.run([self.args.hako, *args], timeout=timeout, check=check)

    def podman_argv(self, *args: str) -> list[str]:
        return [
            "podman",
            "--root",
            os.path.join(self.podman_dir, "root"),
            "--runroot",
            os.path.join(self.podman_dir, "runroot"),
            *args,
        ]

    def podman(self, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
        return self.run(self.podman_argv(*args), timeout=timeout, check=check)

    def runc_argv(self, *args: str) -> list[str]:
        return ["runc", "--root", self.runc_state, *args]

    def next_runc_id(self) -> str:
        self.run_counter += 1
        return f"hb{os.getpid()}-{self.run_counter}"

    # Setup ----------------------------------------------------------------------
    def setup(self) -> None:
        log(f"private state in {self.tmp}")
        if self.args.rev:
            # A commit of this repository, exported as it is, whatever the work tree holds.
            source = os.path.join(self.tmp, "hako-src")
            os.makedirs(source)
            archive = subprocess.Popen(
                ["git", "-C", REPO, "archive", "--format=tar", self.args.rev, "bin", "module_utils"],
                stdout=subprocess.PIPE,
            )
            self.run(["tar", "-x", "-C", source], stdin=archive.stdout)
            archive.stdout.close()
            if archive.wait() != 0:
                raise BenchError(f"git archive {self.args.rev} failed")
            self.args.hako = os.path.join(source, "bin", "hako")
        for path in (self.hako_root, self.hako_run, self.podman_dir, self.runc_state):
            os.makedirs(path, exist_ok=True)
        self.hako("image", "build", "busybox", timeout=300)
        layers = os.path.join(self.hako_root, "images", "layers")
        found = sorted(os.path.join(layers, d, "fs") for d in os.listdir(layers))
        found = [d for d in found if os.path.isdir(d)]
        if len(found) != 1:
            raise BenchError(f"expected one layer in {layers}, found {len(found)}")
        layer = found[0]
        # runc and unshare: a copy of hako's layer; podman: the same files imported as an image.
        os.makedirs(self.bundle)
        self.run(["cp", "-a", layer, self.rootfs])
        self._write_runc_config()
        tarball = os.path.join(self.tmp, "rootfs.tar")
        self.run(["tar", "-C", layer, "-cf", tarball, "."])
        write_podman_config(self.podman_dir, self.env["CONTAINERS_CONF"], self.env["CONTAINERS_STORAGE_CONF"])
        self.podman("import", tarball, PODMAN_IMAGE, timeout=300)
        os.unlink(tarball)

    def _write_runc_config(self) -> None:
        self.run(["runc", "spec", "--bundle", self.bundle])
        path = os.path.join(self.bundle, "config.json")
        with open(path, encoding="utf-8") as f:
            spec = json.load(f)
        spec["process"]["terminal"] = False
        spec["process"]["args"] = ["true"]
        linux = spec["linux"]
        have = {ns["type"] for ns in linux["namespaces"]}
        for kind in ("pid", "network", "ipc", "uts", "mount", "cgroup"):
            if kind not in have:
                linux["namespaces"].append({"type": kind})
        linux.setdefault("resources", {}).update(
            memory={"limit": 64 * MIB}, pids={"limit": 50}, cpu={"quota": 50000, "period": 100000}
        )
        linux["cgroupsPath"] = f"/{CGROUP_PARENT}/runc"
        with open(path, "w", encoding="utf-8") as f:
            json.dump(spec, f, indent=1)

    # Cleanup --------------------------------------------------------------------
    def cleanup(self) -> list[str]:
        """Remove everything this run made; returns what could not be removed."""
        attempt = benchlib.Cleanup()
        problems = attempt.problems

        if os.path.isdir(os.path.join(self.hako_root, "containers")):
            attempt("hako rm", self._remove_hako_containers)
        if os.path.exists(os.path.join(self.podman_dir, "root")):
            attempt("podman rm", self.podman, "rm", "-af", "-t", "0", timeout=900)
            attempt("podman rmi", self.podman, "rmi", "-af", timeout=300)
        if os.path.isdir(self.runc_state):
            attempt("runc delete", self._remove_runc_containers)
        attempt("processes", end_processes, self.tmp, (CGROUP_PARENT,), log)
        attempt("mounts", unmount_below, self.tmp)
        attempt("temporary directory", shutil.rmtree, self.tmp)
        attempt("cgroups", remove_cgroups, (CGROUP_PARENT,))
        for path in GLOBAL_PATHS:
            if path not in self.present_before and os.path.lexists(path):
                attempt(path, shutil.rmtree, path)
        problems += self.leftovers()
        return problems

    def _remove_hako_containers(self) -> None:
        ids = self.hako("ps", "-aq", timeout=60).stdout.split()
        if ids:
            self.hako("rm", "-f", *ids, timeout=600)

    def _remove_runc_containers(self) -> None:
        listed = self.run(self.runc_argv("list", "-q"), timeout=60, check=False).stdout.split()
        for cid in listed:
            self.run(self.runc_argv("delete", "--force", cid), timeout=60, check=False)

    def leftovers(self) -> list[str]:
        found = []
        for pid in our_processes(self.tmp):
            found.append(f"process {describe(pid)} is still running")
        if os.path.lexists(self.tmp):
            found.append(f"{self.tmp} is still there")
        found += [f"mount {m} is still there" for m in mounts_below(self.tmp)]
        found += [f"cgroup {d} is still there" for d in cgroups_below((CGROUP_PARENT,))]
        for path in GLOBAL_PATHS:
            if path not in self.present_before and os.path.lexists(path):
                found.append(f"{path} was made by this run and is still there")
        return found


# Start time --------------------------------------------------------------------


class Starter:
    """One way of starting a container running `true`."""

    def __init__(self, key: str, label: str, argv) -> None:
        self.key = key
        self.label = label
        self.argv = argv  # list[str], or a function of a unique run ID returning one
        self.times: list[float] = []
        self.error: str | None = None

    def command(self, run_id: str) -> list[str]:
        return self.argv(run_id) if callable(self.argv) else self.argv

    def shown(self, bench: Bench) -> str:
        """The command as the report shows it: $TMP for the temporary directory."""
        argv = self.command("ID")
        if argv[0] == bench.args.hako:
            argv = ["hako", *argv[1:]]
        return shlex.join(argv).replace(bench.tmp, "$TMP")


def starters(bench: Bench) -> list[Starter]:
    podman_run = bench.podman_argv(
        "run", "--rm", "--network", "none", "--cgroup-parent", f"/{CGROUP_PARENT}/podman", *LIMITS
    )
    return [
        Starter("hako", "hako", [bench.args.hako, "run", "--rm", *LIMITS, "busybox", "true"]),
        Starter("runc", "runc", lambda run_id: bench.runc_argv("run", "--bundle", bench.bundle, run_id)),
        Starter("podman", "podman (runc, cgroupfs)", [*podman_run, PODMAN_IMAGE, "true"]),
        Starter(
            "unshare",
            "unshare + chroot (floor)",
            ["unshare", "-fpmiun", "--mount-proc", "chroot", bench.rootfs, "true"],
        ),
        # Not a container: the start of the interpreter hako runs on, as bin/hako starts it.
        Starter("python", "python3 -IS, no container (reference)", [PYTHON, "-IS", "-c", "pass"]),
    ]


def _hyperfine_block(bench: Bench, starter: Starter, runs: int, warmups: int) -> list[float]:
    """`runs` timed runs (after `warmups` untimed ones) of one command under hyperfine -N."""
    out = os.path.join(bench.tmp, "hyperfine.json")
    argv = ["hyperfine", "-N", "--style", "none", "--export-json", out]
    if callable(starter.argv):
        # A new container ID each run: one hyperfine parameter value per run, warm-ups dropped.
        ids = [bench.next_runc_id() for _ in range(warmups + runs)]
        argv += ["--runs", "1", "-L", "id", ",".join(ids), shlex.join(starter.command("{id}"))]
    else:
        argv += ["--runs", str(runs), "--warmup", str(warmups), shlex.join(starter.command(""))]
    bench.run(argv, timeout=60 + 30 * (runs + warmups))
    with open(out, encoding="utf-8") as f:
        results = json.load(f)["results"]
    os.unlink(out)
    times = [t for r in results for t in r["times"]]
    return times[warmups:] if callable(starter.argv) else times


def _loop_block(bench: Bench, starter: Starter, runs: int, warmups: int) -> list[float]:
    """The same without hyperfine: fork, exec and wait timed with perf_counter."""
    times = []
    for i in range(warmups + runs):
        argv = starter.command(bench.next_runc_id())
        t0 = time.perf_counter()
        proc = subprocess.run(
            argv, env=bench.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=60
        )
        elapsed = time.perf_counter() - t0
        if proc.returncode != 0:
            raise BenchError(f"exit {proc.returncode}: {shlex.join(argv)}\n{proc.stderr.decode()[-2000:]}")
        if i >= warmups:
            times.append(elapsed)
    return times


def _why(bench: Bench, starter: Starter) -> str:
    """Run a failed command once more, to tell in the report how it fails."""
    try:
        proc = bench.run(starter.command(bench.next_runc_id()), timeout=60, check=False)
    except BenchError as e:
        return str(e).splitlines()[0]
    lines = (proc.stderr or proc.stdout or "").strip().splitlines()
    return f"exit {proc.returncode}: {lines[-1] if lines else 'no output'}"


def bench_start(bench: Bench, runs: int, use_hyperfine: bool) -> list[Starter]:
    all_starters = starters(bench)
    measure = _hyperfine_block if use_hyperfine else _loop_block
    done = 0
    block = 0
    while done < runs:
        size = min(BLOCK, runs - done)
        # Blocks of each runtime in turn, the order rotated each round, so a burst of
        # other load on the machine does not land on one runtime only.
        order = all_starters[block % len(all_starters) :] + all_starters[: block % len(all_starters)]
        for starter in order:
            if starter.error:
                continue
            try:
                starter.times += measure(bench, starter, size, WARMUPS if block == 0 else 0)
            except BenchError as e:
                log(f"{starter.key} failed: {e}")
                starter.error = _why(bench, starter)
        done += size
        block += 1
        log(f"start time: {done}/{runs} runs of each")
    return all_starters


# Memory --------------------------------------------------------------------------


class IdleResult:
    def __init__(self, label: str) -> None:
        self.label = label
        self.wanted = 0
        self.started = 0
        self.start_seconds = 0.0
        self.supervisors: dict[str, int] = {}  # comm -> count
        self.pss_kib = 0
        self.rss_kib = 0
        self.container_pss_kib: int | None = None
        self.container_rss_kib: int | None = None
        self.note: str | None = None
        self.error: str | None = None
        self.command = ""  # how one container is started, as the report shows it


# hako's supervisor keeps a spare container init ready for the next start, in
# a PID namespace of its own: it exists only to serve, so it counts.
SPARE_COMMS = ("hako-spare", "hako-middle")


def _supervising(bench: Bench) -> list[int]:
    """Our processes outside any container's PID namespace (and hako's spare): those that only supervise."""
    host_ns = _pid_ns(os.getpid())
    return [
        pid
        for pid in our_processes(bench.tmp)
        if _pid_ns(pid) == host_ns or (proc_stat(pid) or ("",))[0] in SPARE_COMMS
    ]


def _measure_idle(bench: Bench, result: IdleResult, start_one, container_pid, remove_all) -> None:
    n = bench.args.containers
    result.wanted = n
    t0 = time.monotonic()
    try:
        for i in range(n):
            if time.monotonic() - t0 > bench.args.budget:
                result.note = (
                    f"only {result.started} of {n} started within the {bench.args.budget:.0f} s budget"
                )
                log(f"{result.label}: {result.note}")
                break
            start_one(f"hb-idle-{i}")
            result.started += 1
            if (i + 1) % 25 == 0:
                log(f"{result.label}: {i + 1}/{n} idle containers")
        result.start_seconds = time.monotonic() - t0
        time.sleep(1.0)  # let the last start settle
        pids = _supervising(bench)
        for pid in pids:
            st = proc_stat(pid)
            pss, rss = memory_kib(pid)
            result.pss_kib += pss
            result.rss_kib += rss
            name = st[0] if st else "?"
            result.supervisors[name] = result.supervisors.get(name, 0) + 1
        if result.started:
            pid = container_pid("hb-idle-0")
            result.container_pss_kib, result.container_rss_kib = memory_kib(pid)
    finally:
        log(f"{result.label}: removing {result.started} idle containers")
        remove_all()
        deadline = time.monotonic() + 15
        while our_processes(bench.tmp) and time.monotonic() < deadline:
            time.sleep(0.2)


def bench_idle_hako(bench: Bench) -> IdleResult:
    result = IdleResult("hako")

    def start_one(name: str) -> None:
        bench.hako("run", "-d", "--name", name, "busybox", "sleep", "3600", timeout=60)

    result.command = "hako run -d --name NAME busybox sleep 3600"

    def container_pid(name: str) -> int:
        return int(json.loads(bench.hako("inspect", name).stdout)[0]["State"]["Pid"])

    def remove_all() -> None:
        ids = bench.hako("ps", "-aq").stdout.split()
        if ids:
            bench.hako("rm", "-f", *ids, timeout=600)

    try:
        _measure_idle(bench, result, start_one, container_pid, remove_all)
        if result.started and "hako-supervisor" not in result.supervisors:
            result.note = "no process named hako-supervisor was found"
    except BenchError as e:
        result.error = str(e).splitlines()[0]
        log(f"hako idle: {e}")
    return result


def bench_idle_podman(bench: Bench) -> IdleResult:
    result = IdleResult("podman")
    run = bench.podman_argv("run", "-d", "--network", "none", "--cgroup-parent", f"/{CGROUP_PARENT}/podman")

    def start_one(name: str) -> None:
        bench.run([*run, "--name", name, PODMAN_IMAGE, "sleep", "3600"], timeout=60)

    result.command = shlex.join([*run, "--name", "NAME", PODMAN_IMAGE, "sleep", "3600"]).replace(
        bench.tmp, "$TMP"
    )

    def container_pid(name: str) -> int:
        return int(bench.podman("inspect", "--format", "{{.State.Pid}}", name).stdout.strip())

    def remove_all() -> None:
        bench.podman("rm", "-af", "-t", "0", timeout=900)

    try:
        _measure_idle(bench, result, start_one, container_pid, remove_all)
    except BenchError as e:
        result.error = str(e).splitlines()[0]
        log(f"podman idle: {e}")
    return result


def bare_python_kib() -> tuple[int, int]:
    proc = subprocess.Popen([PYTHON, "-c", "import time; time.sleep(99)"])
    try:
        time.sleep(0.5)
        return memory_kib(proc.pid)
    finally:
        proc.kill()
        proc.wait()


# Report --------------------------------------------------------------------------


def hako_version(hako: str, rev: str | None) -> str:
    """The commit of the checkout ``hako`` belongs to, and whether its code has local changes."""
    checkout = os.path.dirname(os.path.dirname(os.path.realpath(hako)))

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", checkout, *args], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        ).stdout.strip()

    if rev:
        return f"{rev[:12]} (committed code, exported by --rev)"

    rev = git("rev-parse", "--short", "HEAD") if os.path.exists(os.path.join(checkout, ".git")) else ""
    if not rev:
        return f"at {checkout} (not a git checkout)"
    if git("status", "--porcelain", "--", "bin", "module_utils"):
        rev += " with uncommitted changes in bin/ or module_utils/"
    return rev


def machine(hako: str, rev: str | None) -> dict:
    meminfo = read_file("/proc/meminfo") or ""
    mem_kib = next((int(ln.split()[1]) for ln in meminfo.splitlines() if ln.startswith("MemTotal:")), 0)
    return {
        "cpus": os.cpu_count(),
        "model": cpu_model(),
        "mem_gib": mem_kib / MIB,
        "kernel": platform.release(),
        "os": os_name(),
        "cgroups": cgroup_mode(),
        "hako": hako_version(hako, rev),
        "runc": first_line(["runc", "--version"]),
        "podman": first_line(["podman", "--version"]),
        "conmon": first_line(["conmon", "--version"]),
        "hyperfine": first_line(["hyperfine", "--version"]) if shutil.which("hyperfine") else None,
        "python": first_line([PYTHON, "--version"]),
    }


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def _cell(text: str | None) -> str:
    return (text or "").replace("|", "\\|").replace("\n", " ")


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def _mib(kib: float) -> str:
    return f"{kib / 1024:.2f}"


def report(bench, when, info, load, start, idle, python_mem, timer) -> str:
    args = bench.args
    lines = []
    add = lines.append
    add(f"Command: `{args.command_line}`  ")
    add(f"Date: {when:%Y-%m-%d %H:%M} UTC  ")
    add(
        f"Machine: {info['cpus']} cores ({info['model']}), {info['mem_gib']:.0f} GiB RAM, "
        f"Linux {info['kernel']}, {info['os']}, {info['cgroups']}; "
        f"load average {load[0]:.2f} at the start, {load[1]:.2f} at the end  "
    )
    add(
        f"Versions: hako {info['hako']}; {info['runc']}; {info['podman']}; {info['conmon']}; "
        f"{info['python']} (hako's interpreter)" + (f"; {info['hyperfine']}" if info["hyperfine"] else "")
    )
    add("")

    # Start time
    by_key = {s.key: s for s in start}
    runc = by_key["runc"]
    runc_median = statistics.median(runc.times) if runc.times else None
    add(f"### Start time: one container running `true` ({_n(args.runs, 'run')} each, {WARMUPS} warm-ups)")
    add("")
    add(
        f"Wall time per start, timed by {timer}; the runtimes took turns in blocks of "
        f"{_n(min(BLOCK, args.runs), 'run')}."
    )
    add("")
    add("| runtime | median ms | mean ms | min ms | max ms | median vs runc |")
    add("| --- | ---: | ---: | ---: | ---: | ---: |")
    for s in start:
        if not s.times:
            add(f"| {s.label} | failed: {_cell(s.error)} | | | | |")
            continue
        median = statistics.median(s.times)
        ratio = f"{median / runc_median:.2f}×" if runc_median else "–"
        add(
            f"| {s.label} | {_ms(median)} | {_ms(statistics.mean(s.times))} | {_ms(min(s.times))} "
            f"| {_ms(max(s.times))} | {ratio} |"
        )
    add("")
    add("Commands (all on the same busybox rootfs, built by `hako image build busybox`):")
    add("")
    for s in start:
        add(f"- {s.label}: `{s.shown(bench)}`")
    add(
        "- hako's default namespaces are mount, PID, IPC, UTS, network and cgroup; the runc bundle is "
        '`runc spec` with those six namespaces, `terminal: false`, args `["true"]` and the same limits '
        "(memory 64 MiB, pids 50, CPU quota 50000/100000), everything else as `runc spec` makes it."
    )
    add(
        "- hako runs with `HAKO_ROOT=$TMP/hako/root HAKO_RUN=$TMP/hako/run "
        f"HAKO_CGROUP_PARENT={CGROUP_PARENT} HAKO_DEFAULT_NETWORK=none`; "
        "podman with `CONTAINERS_CONF=$TMP/podman/containers.conf` (cgroupfs, file events logger, "
        "netns none, runtime runc); $TMP is a fresh temporary directory."
    )
    add("")

    # Memory
    add(f"### Memory per idle container: {args.containers} × `sleep 3600`, detached")
    add("")
    add(
        "PSS from `/proc/PID/smaps_rollup` of every process that exists only to supervise the containers "
        "(the benchmark's processes outside the containers' PID namespaces once all have started)."
    )
    add("")
    add(
        "| runtime | containers | supervising processes | PSS total MiB | PSS per container MiB "
        "| RSS total MiB | time to start all |"
    )
    add("| --- | ---: | --- | ---: | ---: | ---: | ---: |")
    for r in idle:
        if r.error:
            add(f"| {r.label} | {r.started} | failed: {_cell(r.error)} | | | | |")
            continue
        procs = ", ".join(f"{count} × {name}" for name, count in sorted(r.supervisors.items())) or "none"
        per = _mib(r.pss_kib / r.started) if r.started else "–"
        add(
            f"| {r.label} | {r.started} | {procs} | {_mib(r.pss_kib)} | {per} | {_mib(r.rss_kib)} "
            f"| {r.start_seconds:.1f} s |"
        )
    add("")
    for r in idle:
        add(f"- {r.label}: `{r.command}`" + (f"; {r.note}" if r.note else ""))
    add("")
    add("For reference, single processes:")
    add("")
    add("| process | PSS MiB | RSS MiB |")
    add("| --- | ---: | ---: |")
    add(
        f"| bare `python3 -c 'import time; time.sleep(99)'` | {_mib(python_mem[0])} | {_mib(python_mem[1])} |"
    )
    for r in idle:
        if r.container_pss_kib is not None:
            add(
                f"| one {r.label} container's own `sleep` (while all {r.started} run) "
                f"| {_mib(r.container_pss_kib)} | {_mib(r.container_rss_kib)} |"
            )
    add("")

    # Targets
    add("### Targets")
    add("")
    hako = by_key["hako"]
    if hako.times and runc_median:
        median = statistics.median(hako.times)
        diff = median - runc_median
        if diff <= 0:
            verdict = f"**met**: hako's median {_ms(median)} ms, runc's {_ms(runc_median)} ms"
        else:
            verdict = (
                f"**not met**: hako's median is {_ms(median)} ms, runc's {_ms(runc_median)} ms; "
                f"hako is {_ms(diff)} ms ({median / runc_median:.1f}×) slower"
            )
    else:
        verdict = "**not measured** (a run failed, see above)"
    add(f"- `hako run` ≤ runc's time: {verdict}.")
    hako_idle = next(r for r in idle if r.label == "hako")
    if hako_idle.error or not hako_idle.started:
        verdict = "**not measured** (see above)"
    else:
        per = hako_idle.pss_kib / hako_idle.started / 1024
        if hako_idle.started == 100:
            met = "**met**" if per <= 0.5 else "**not met**"
            verdict = f"{met}: {per:.2f} MiB per container at 100 containers"
        else:
            verdict = (
                f"**not evaluated**: {per:.2f} MiB per container at {hako_idle.started} containers; "
                "the target is stated for 100 (`--containers 100`)"
            )
    add(f"- ≤ 0.5 MiB PSS per idle container at 100 containers: {verdict}.")
    return "\n".join(lines) + "\n"


BEGIN = "<!-- run_bench:begin -->"
END = "<!-- run_bench:end -->"


# Main ----------------------------------------------------------------------------


def check_machine(hako: str, no_hyperfine: bool) -> bool:
    if os.geteuid() != 0:
        raise SystemExit("run_bench: run as root (containers, cgroups, other runtimes)")
    if not os.access(hako, os.X_OK):
        raise SystemExit(f"run_bench: {hako} is missing or not executable")
    missing = sorted({pkg for cmd, pkg in REQUIRED.items() if shutil.which(cmd) is None})
    if missing:
        raise SystemExit(
            f"run_bench: missing {', '.join(missing)}: "
            "run `scripts/setup --peers` (as root) to install the peers"
        )
    if no_hyperfine:
        return False
    if shutil.which("hyperfine") is None:
        log("hyperfine is missing (`scripts/setup --peers` installs it): timing with a perf_counter loop")
        return False
    return True


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=20, help="timed starts per runtime (default 20)")
    p.add_argument("--containers", type=int, default=100, help="idle containers per runtime (default 100)")
    p.add_argument("--out", help="also write the Markdown report to this file")
    p.add_argument(
        "--budget",
        type=float,
        default=600,
        help="seconds allowed for starting the idle containers of one runtime (default 600)",
    )
    p.add_argument("--no-hyperfine", action="store_true", help="time with a perf_counter loop")
    which = p.add_mutually_exclusive_group()
    which.add_argument(
        "--hako",
        default=os.path.join(REPO, "bin", "hako"),
        help="the hako command to measure (default: bin/hako of this checkout)",
    )
    which.add_argument(
        "--rev", help="measure hako as committed at this git revision of this repository (e.g. HEAD)"
    )
    args = p.parse_args(argv)
    args.hako = os.path.abspath(args.hako)
    if args.rev:
        # Resolved now: HEAD may move while the benchmark runs.
        resolved = subprocess.run(
            ["git", "-C", REPO, "rev-parse", "--verify", "--quiet", args.rev + "^{commit}"],
            stdout=subprocess.PIPE,
            text=True,
        ).stdout.strip()
        if not resolved:
            p.error(f"--rev {args.rev}: no such commit in {REPO}")
        args.rev = resolved
    if args.runs < 1 or args.containers < 1:
        p.error("--runs and --containers must be at least 1")
    args.command_line = shlex.join(["python3", "bench/run_bench.py", *argv])
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    use_hyperfine = check_machine(args.hako, args.no_hyperfine)
    _lock = start_alone(__file__, "run_bench", (CGROUP_PARENT,))  # held until exit

    when = datetime.datetime.now(datetime.timezone.utc)
    load_start = os.getloadavg()[0]
    bench = Bench(args)  # notes which global paths exist before any peer runs
    problems: list[str] = []
    text = None
    try:
        info = machine(args.hako, args.rev)
        bench.setup()
        log(f"start time: {args.runs} runs each after {WARMUPS} warm-ups")
        start = bench_start(bench, args.runs, use_hyperfine)
        python_mem = bare_python_kib()
        log(f"memory: {args.containers} idle hako containers")
        idle = [bench_idle_hako(bench)]
        log(f"memory: {args.containers} idle podman containers")
        idle.append(bench_idle_podman(bench))
        timer = "hyperfine -N" if use_hyperfine else "a perf_counter loop around fork/exec/wait"
        text = report(bench, when, info, (load_start, os.getloadavg()[0]), start, idle, python_mem, timer)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        problems = clean_up(bench.cleanup, log)
    print(text, end="")
    if args.out:
        write_section(args.out, text, BEGIN, END)
        log(f"wrote {args.out}")
    return 1 if problems else 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except BenchError as e:
        sys.exit(f"run_bench: {e}")
