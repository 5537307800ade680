#!/usr/bin/env python3
"""What the default security profile costs a container start.

``hako run --rm busybox true`` with the full default profile (14 capabilities,
no_new_privs, the seccomp filter, masked and read-only paths, the device
rules) against ``--privileged`` (every capability, no filter, nothing masked,
every host device) and against a start with every part lifted but the device
rules (``--cap-add ALL --security-opt seccomp=unconfined --security-opt
no-new-privileges=false --security-opt systempaths=unconfined``), which
costs what privileged costs minus its device nodes. The kinds take turns in
blocks of 5 after 3 warm-ups; medians. Target: default <= 10% slower than
--privileged. Podman (Debian's, with runc) does the same, default against
--privileged, in the same run, for its ratio.

Run as root:  python3 bench/bench_security.py [--runs N] [--no-podman] [--out FILE]

Everything lives in a private temporary directory (HAKO_ROOT, HAKO_RUN,
podman's storage, runc's state) under the cgroup parents ``hako-bench-sec``
and ``hako-bench-sec-podman``; it is removed at the end, also after a
failure or Ctrl-C, and the script exits non-zero if anything is left.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import benchlib

REPO = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
HAKO = os.path.join(REPO, "bin", "hako")
CGROUP_PARENT = "hako-bench-sec"
PODMAN_PARENT = "hako-bench-sec-podman"
CGROUP_PARENTS = (CGROUP_PARENT, PODMAN_PARENT)
PODMAN_IMAGE = "localhost/hako-bench/busybox:latest"
BLOCK = 5
WARMUPS = 3
TARGET = 1.10
LIFTED = [
    "--cap-add",
    "ALL",
    "--security-opt",
    "seccomp=unconfined",
    "--security-opt",
    "no-new-privileges=false",
    "--security-opt",
    "systempaths=unconfined",
]
GLOBAL_PATHS = ("/var/lib/containers", "/run/containers", "/run/libpod", "/etc/containers/networks")
BEGIN, END = "<!-- bench_security:begin -->", "<!-- bench_security:end -->"


def log(message: str) -> None:
    print(f"bench_security: {message}", file=sys.stderr, flush=True)


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        # Short: podman refuses a runroot path longer than 50 characters.
        self.tmp = os.path.realpath(tempfile.mkdtemp(prefix="hako-bs.", dir="/var/tmp"))
        os.chmod(self.tmp, 0o711)
        self.root = os.path.join(self.tmp, "root")
        self.podman_dir = os.path.join(self.tmp, "podman")
        self.env = dict(
            os.environ,
            HAKO_ROOT=self.root,
            HAKO_RUN=os.path.join(self.tmp, "run"),
            HAKO_CGROUP_PARENT=CGROUP_PARENT,
            HAKO_DEFAULT_NETWORK="none",
            CONTAINERS_CONF=os.path.join(self.podman_dir, "containers.conf"),
            CONTAINERS_STORAGE_CONF=os.path.join(self.podman_dir, "storage.conf"),
        )
        self.present_before = {p for p in GLOBAL_PATHS if os.path.lexists(p)}
        self.podman_used = False

    def hako(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return benchlib.run([HAKO, *args], self.env, timeout)

    def podman_argv(self) -> list[str]:
        """podman with runc, runc's state in the private directory."""
        return [
            "podman",
            "--runtime",
            "runc",
            "--runtime-flag",
            "root=" + os.path.join(self.podman_dir, "runc"),
        ]

    def podman(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        self.podman_used = True
        return benchlib.run([*self.podman_argv(), *args], self.env, timeout)

    def setup(self) -> None:
        self.hako("image", "build", "busybox")
        if self.args.no_podman:
            return
        benchlib.write_podman_config(
            self.podman_dir, self.env["CONTAINERS_CONF"], self.env["CONTAINERS_STORAGE_CONF"]
        )
        tarball = os.path.join(self.tmp, "busybox.tar")
        self.hako("export", "-o", tarball, self.hako("create", "busybox", "true").stdout.strip())
        self.hako("rm", "-f", *self.hako("ps", "-aq").stdout.split())
        self.podman("import", tarball, PODMAN_IMAGE)
        os.unlink(tarball)

    def starts(self) -> dict[str, list[float]]:
        base = ["run", "--rm"]
        kinds = {
            "hako default": [HAKO, *base],
            "hako --privileged": [HAKO, *base, "--privileged"],
            "hako, all lifted but devices": [HAKO, *base, *LIFTED],
        }
        if not self.args.no_podman:
            podman = [*self.podman_argv(), *base, "--network", "none", "--cgroup-parent", PODMAN_PARENT]
            kinds["podman default"] = podman
            kinds["podman --privileged"] = [*podman, "--privileged"]
        times: dict[str, list[float]] = {kind: [] for kind in kinds}

        def once(kind: str) -> float:
            image = PODMAN_IMAGE if kind.startswith("podman") else "busybox"
            started = time.perf_counter()
            benchlib.run([*kinds[kind], image, "true"], self.env, 120)
            return time.perf_counter() - started

        for _ in range(WARMUPS):
            for kind in kinds:
                once(kind)
        while len(times["hako default"]) < self.args.runs:
            for kind in kinds:
                for _ in range(BLOCK):
                    times[kind].append(once(kind))
        return times

    def cleanup(self) -> list[str]:
        attempt = benchlib.Cleanup()
        problems = attempt.problems

        if os.path.isdir(os.path.join(self.root, "containers")):
            attempt(
                "hako rm", lambda: [self.hako("rm", "-f", c) for c in self.hako("ps", "-aq").stdout.split()]
            )
        if self.podman_used:
            attempt("podman rm", self.podman, "rm", "-af", "-t", "0")
            attempt("podman rmi", self.podman, "rmi", "-af")
        attempt("processes", benchlib.end_processes, self.tmp, CGROUP_PARENTS, log)
        attempt("mounts", benchlib.unmount_below, self.tmp)
        attempt("temporary directory", shutil.rmtree, self.tmp)
        attempt("cgroups", benchlib.remove_cgroups, CGROUP_PARENTS)
        for path in GLOBAL_PATHS:
            if path not in self.present_before and os.path.lexists(path):
                attempt(path, shutil.rmtree, path)
        found = [f"process {benchlib.describe(p)}" for p in benchlib.our_processes(self.tmp, CGROUP_PARENTS)]
        found += [f"cgroup {d}" for d in benchlib.cgroups_below(CGROUP_PARENTS)]
        if os.path.lexists(self.tmp):
            found.append(self.tmp)
        return problems + [f"left behind: {f}" for f in found]


def median_ms(values: list[float]) -> float:
    return statistics.median(values) * 1000


def report(args, times: dict[str, list[float]]) -> str:
    medians = {kind: median_ms(values) for kind, values in times.items()}
    ratio = medians["hako default"] / medians["hako --privileged"]
    lifted = medians["hako default"] / medians["hako, all lifted but devices"]
    rev = benchlib.first_line(["git", "-C", REPO, "rev-parse", "--short", "HEAD"])
    podman = benchlib.first_line(["podman", "--version"])
    lines = [
        f"Command: `python3 bench/bench_security.py --runs {args.runs}"
        f"{' --no-podman' if args.no_podman else ''}`  ",
        f"Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}  ",
        f"Machine: {os.cpu_count()} cores ({benchlib.cpu_model()}), Linux {platform.release()}, "
        f"{benchlib.os_name()}, {benchlib.cgroup_mode()}; load average "
        f"{os.getloadavg()[0]:.2f} at the end  ",
        f"Versions: hako {rev} on {benchlib.first_line(['/usr/bin/python3', '--version'])}; {podman} "
        f"({benchlib.first_line(['runc', '--version'])})",
        "",
        f"`run --rm busybox true`, {args.runs} runs each, the kinds taking turns in blocks of {BLOCK} "
        f"after {WARMUPS} warm-ups:",
        "",
        "| start | median | min | max |",
        "| --- | ---: | ---: | ---: |",
    ]
    for kind, values in times.items():
        lines.append(
            f"| {kind} | {medians[kind]:.1f} ms | {min(values) * 1000:.1f} ms | {max(values) * 1000:.1f} ms |"
        )
    lines += [
        "",
        f"- hako's default profile against `--privileged`: **{ratio:.3f}×** ({(ratio - 1) * 100:+.1f}%); "
        f"target <= {TARGET:.2f}×: **{'met' if ratio <= TARGET else 'not met'}**.",
        f"- against every part lifted but the device rules (no device nodes to make, unlike "
        f"`--privileged`): {lifted:.3f}× ({(lifted - 1) * 100:+.1f}%).",
    ]
    if "podman default" in medians:
        peer = medians["podman default"] / medians["podman --privileged"]
        lines.append(
            f"- Podman's default against its `--privileged`: {peer:.3f}× ({(peer - 1) * 100:+.1f}%)."
        )
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=30, help="timed starts per kind (default 30)")
    parser.add_argument("--no-podman", action="store_true", help="leave Podman out")
    parser.add_argument("--out", help="also write the report into this file, between its markers")
    args = parser.parse_args(argv)
    if args.runs < BLOCK:
        parser.error(f"--runs at least {BLOCK}")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("bench_security: run as root", file=sys.stderr)
        return 2
    bench = Bench(args)

    def work() -> str:
        log(f"private state in {bench.tmp}")
        bench.setup()
        log("timing starts")
        return report(args, bench.starts())

    return benchlib.main("bench_security", work, bench.cleanup, args.out, BEGIN, END)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
