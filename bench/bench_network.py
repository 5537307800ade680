#!/usr/bin/env python3
"""Benchmarks of networking: what a network adds to a container start, and a topology's bring-up.

1. The cost of networking: ``hako run --rm --network NET busybox true`` (a
   bridge network) against ``hako run --rm --network none busybox true``, the
   two taking turns in blocks of 5 after 3 warm-ups; the medians and their
   difference (target: a network adds <= 30 ms).
2. A 20-node linear topology (``--nodes``): 20 busybox containers and 19
   links between neighbours, each a /30 with addresses, from one
   ``hako_containers`` task (one module call) in one ``ansible-playbook``
   run, from nothing to all running and wired (target <= 5 s); checked by a
   ping across the first and the last link. ``--rounds`` rounds, everything
   removed between them (not timed); the median. For reference, the same
   playbook run again with nothing to change.

Run as root:  python3 bench/bench_network.py [--runs N] [--nodes N] [--rounds N] [--out FILE]

Everything lives in a private temporary directory (HAKO_ROOT, HAKO_RUN,
Ansible's files) under the cgroup parent ``hako-bench-net``; it is removed at
the end, also after a failure or Ctrl-C, and the script exits non-zero if
anything is left. The networks are 10.213.254.0/24 and 10.214.0.0/16 /30s,
with no route to anywhere else.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import benchlib
from benchlib import BenchError

REPO = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
HAKO = os.path.join(REPO, "bin", "hako")
CGROUP_PARENT = "hako-bench-net"
CGROUP_PARENTS = (CGROUP_PARENT,)
NETWORK = "benchnet"
SUBNET = "10.213.254.0/24"
BLOCK = 5
WARMUPS = 3
COMMAND = ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"]
BEGIN, END = "<!-- bench_network:begin -->", "<!-- bench_network:end -->"


def log(message: str) -> None:
    print(f"bench_network: {message}", file=sys.stderr, flush=True)


def ansible_playbook() -> str:
    path = os.path.join(REPO, ".venv", "bin", "ansible-playbook")
    if not os.access(path, os.X_OK):
        raise BenchError("no .venv/bin/ansible-playbook: run scripts/setup first")
    return path


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tmp = os.path.realpath(tempfile.mkdtemp(prefix="hako-bn.", dir="/var/tmp"))
        os.chmod(self.tmp, 0o711)
        self.root = os.path.join(self.tmp, "root")
        self.env = dict(
            os.environ,
            HAKO_ROOT=self.root,
            HAKO_RUN=os.path.join(self.tmp, "run"),
            HAKO_CGROUP_PARENT=CGROUP_PARENT,
            HAKO_DEFAULT_NETWORK="none",
            ANSIBLE_CONFIG=os.path.join(REPO, "ansible.cfg"),
            ANSIBLE_HOME=os.path.join(self.tmp, "ansible", "home"),
            ANSIBLE_LOCAL_TEMP=os.path.join(self.tmp, "ansible", "local"),
            ANSIBLE_REMOTE_TEMP=os.path.join(self.tmp, "ansible", "remote"),
            ANSIBLE_NOCOLOR="1",
            ANSIBLE_RETRY_FILES_ENABLED="0",
        )
        self.links_before = set(os.listdir("/sys/class/net"))

    def hako(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return benchlib.run([HAKO, *args], self.env, timeout)

    # 1. The cost of networking ----------------------------------------------------------
    def start_cost(self) -> dict:
        self.hako("network", "create", NETWORK, "--subnet", SUBNET)
        kinds = {"none": ["--network", "none"], "bridge": ["--network", NETWORK]}
        times: dict[str, list[float]] = {kind: [] for kind in kinds}

        def once(kind: str) -> float:
            started = time.perf_counter()
            self.hako("run", "--rm", *kinds[kind], "busybox", "true")
            return time.perf_counter() - started

        for _ in range(WARMUPS):
            for kind in kinds:
                once(kind)
        while len(times["bridge"]) < self.args.runs:
            for kind in kinds:
                for _ in range(BLOCK):
                    times[kind].append(once(kind))
        left = json.loads(self.hako("network", "inspect", NETWORK).stdout)[0]["Containers"]
        if left:
            raise BenchError(f"addresses left on {NETWORK} after --rm runs: {left}")
        self.hako("network", "rm", NETWORK)
        return {kind: sorted(values) for kind, values in times.items()}

    # 2. A linear topology ----------------------------------------------------------------
    def topology_playbook(self) -> str:
        nodes = [f"bn-{i:02d}" for i in range(1, self.args.nodes + 1)]
        containers = [{"name": n, "image": "busybox", "command": COMMAND} for n in nodes]
        links = []
        for i in range(len(nodes) - 1):
            base = i * 4  # a /30 per link: 10.214.<hi>.<lo>
            a, b = f"10.214.{base // 256}.{base % 256 + 1}/30", f"10.214.{base // 256}.{base % 256 + 2}/30"
            links.append({"a": f"{nodes[i]}:right", "b": f"{nodes[i + 1]}:left", "ip_a": a, "ip_b": b})
        play = {
            "name": "a linear topology",
            "hosts": "localhost",
            "gather_facts": False,
            "vars": {"ansible_connection": "local", "ansible_python_interpreter": "/usr/bin/python3"},
            "environment": {k: self.env[k] for k in ("HAKO_ROOT", "HAKO_RUN", "HAKO_CGROUP_PARENT")},
            "tasks": [
                {
                    "name": "containers and links",
                    "hako_containers": {"containers": containers, "links": links},
                    "register": "result",
                },
                {"name": "summary", "ansible.builtin.debug": {"msg": "{{ result.links }}"}},
            ],
        }
        path = os.path.join(self.tmp, "topology.yml")
        with open(path, "w") as f:
            json.dump([play], f)
        inventory = os.path.join(self.tmp, "inventory.yml")
        with open(inventory, "w") as f:
            f.write("all:\n  hosts:\n    localhost:\n")
        self.nodes, self.last_link = nodes, links[-1]
        return path

    def playbook(self, path: str) -> tuple[float, str]:
        argv = [ansible_playbook(), "-i", os.path.join(self.tmp, "inventory.yml"), path]
        started = time.perf_counter()
        proc = subprocess.run(argv, env=self.env, cwd=REPO, capture_output=True, text=True, timeout=600)
        elapsed = time.perf_counter() - started
        if proc.returncode != 0:
            raise BenchError(f"ansible-playbook exited {proc.returncode}:\n{proc.stdout[-3000:]}")
        return elapsed, proc.stdout

    def topology(self) -> dict:
        path = self.topology_playbook()
        first, rerun = [], []
        for round_number in range(self.args.rounds):
            log(f"topology round {round_number + 1}/{self.args.rounds}")
            elapsed, out = self.playbook(path)
            if "changed=1" not in out:
                raise BenchError(f"the first run changed nothing:\n{out[-2000:]}")
            # Wired: a ping across the first and the last link.
            self.hako("exec", self.nodes[0], "ping", "-c", "1", "-W", "2", "10.214.0.2")
            last_b = self.last_link["ip_b"].split("/")[0]
            self.hako("exec", self.nodes[-2], "ping", "-c", "1", "-W", "2", last_b)
            ups = json.loads(self.hako("inspect", *self.nodes).stdout)
            if not all(c["State"]["Running"] for c in ups):
                raise BenchError("not every node runs")
            first.append(elapsed)
            elapsed, out = self.playbook(path)
            if "changed=0" not in out:
                raise BenchError(f"the rerun changed something:\n{out[-2000:]}")
            rerun.append(elapsed)
            self.remove_containers()
        return {"first": first, "rerun": rerun}

    def remove_containers(self) -> None:
        ids = self.hako("ps", "-aq").stdout.split()
        if ids:
            self.hako("rm", "-f", *ids, timeout=300)

    # Clean-up ---------------------------------------------------------------------------
    def cleanup(self) -> list[str]:
        attempt = benchlib.Cleanup()
        problems = attempt.problems

        if os.path.isdir(os.path.join(self.root, "containers")):
            attempt("hako rm", self.remove_containers)
        if os.path.isdir(os.path.join(self.root, "networks")):
            attempt("hako network rm", lambda: self.hako("network", "prune"))
        attempt("processes", benchlib.end_processes, self.tmp, CGROUP_PARENTS, log)
        attempt("mounts", benchlib.unmount_below, self.tmp)
        attempt("temporary directory", shutil.rmtree, self.tmp)
        attempt("cgroups", benchlib.remove_cgroups, CGROUP_PARENTS)
        found = [f"process {benchlib.describe(p)}" for p in benchlib.our_processes(self.tmp, CGROUP_PARENTS)]
        found += [f"cgroup {d}" for d in benchlib.cgroups_below(CGROUP_PARENTS)]
        found += [f"interface {n}" for n in sorted(set(os.listdir("/sys/class/net")) - self.links_before)]
        if os.path.lexists(self.tmp):
            found.append(f"{self.tmp}")
        return problems + [f"left behind: {f}" for f in found]


def median_ms(values: list[float]) -> float:
    return statistics.median(values) * 1000


def report(args, cost: dict, topology: dict) -> str:
    none, bridge = median_ms(cost["none"]), median_ms(cost["bridge"])
    added = bridge - none
    first, rerun = statistics.median(topology["first"]), statistics.median(topology["rerun"])
    rev = benchlib.first_line(["git", "-C", REPO, "rev-parse", "--short", "HEAD"])
    lines = [
        f"Command: `python3 bench/bench_network.py --runs {args.runs} --nodes {args.nodes} "
        f"--rounds {args.rounds}`  ",
        f"Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}  ",
        f"Machine: {os.cpu_count()} cores ({benchlib.cpu_model()}), Linux {platform.release()}, "
        f"{benchlib.os_name()}, {benchlib.cgroup_mode()}; load average "
        f"{os.getloadavg()[0]:.2f} at the end  ",
        f"Versions: hako {rev} on {benchlib.first_line(['/usr/bin/python3', '--version'])}",
        "",
        f"**The cost of networking**: `hako run --rm busybox true`, {args.runs} runs each, taking turns "
        f"in blocks of {BLOCK} after {WARMUPS} warm-ups.",
        "",
        "| network | median | min | max |",
        "| --- | ---: | ---: | ---: |",
        f"| `--network none` (lo only) | {none:.1f} ms | {min(cost['none']) * 1000:.1f} ms "
        f"| {max(cost['none']) * 1000:.1f} ms |",
        f"| `--network {NETWORK}` (a bridge: veth, address, route, /etc/hosts) | {bridge:.1f} ms "
        f"| {min(cost['bridge']) * 1000:.1f} ms | {max(cost['bridge']) * 1000:.1f} ms |",
        f"| what the network adds | {added:.1f} ms | | |",
        "",
        f"**A {args.nodes}-node linear topology** ({args.nodes} containers, {args.nodes - 1} links, "
        f"a /30 each), one `hako_containers` task in one `ansible-playbook` run, {args.rounds} rounds:",
        "",
        "| run | median | runs (s) |",
        "| --- | ---: | --- |",
        f"| from nothing to all running and wired | {first:.2f} s | "
        f"{', '.join(f'{v:.2f}' for v in topology['first'])} |",
        f"| again, nothing to change (`changed=0`) | {rerun:.2f} s | "
        f"{', '.join(f'{v:.2f}' for v in topology['rerun'])} |",
        "",
        "Targets:",
        "",
        f"- a network adds <= 30 ms to a start: **{'met' if added <= 30 else 'not met'}** ({added:.1f} ms).",
        f"- the {args.nodes}-node topology is up in <= 5 s: **{'met' if first <= 5 else 'not met'}** "
        f"({first:.2f} s, Ansible's own start included).",
    ]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=30, help="timed starts per kind (default 30)")
    parser.add_argument("--nodes", type=int, default=20, help="nodes of the linear topology (default 20)")
    parser.add_argument("--rounds", type=int, default=3, help="topology rounds (default 3)")
    parser.add_argument("--out", help="also write the report into this file, between its markers")
    args = parser.parse_args(argv)
    if args.nodes < 2 or args.nodes > 200 or args.runs < BLOCK or args.rounds < 1:
        parser.error("--nodes 2-200, --runs at least 5, --rounds at least 1")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("bench_network: run as root", file=sys.stderr)
        return 2
    bench = Bench(args)

    def work() -> str:
        log(f"private state in {bench.tmp}")
        bench.hako("image", "build", "busybox")
        log("the cost of networking")
        cost = bench.start_cost()
        log("the topology")
        return report(args, cost, bench.topology())

    return benchlib.main("bench_network", work, bench.cleanup, args.out, BEGIN, END)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
