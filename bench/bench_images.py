#!/usr/bin/env python3
"""Benchmarks of images: what a container costs to create, by image size, and on disk.

1. Create time: ``hako create IMAGE true`` (then ``hako rm``, not timed) from the
   busybox image (a few MiB) and from a debootstrap Debian image (~130 MiB),
   taking turns in blocks; the medians and their ratio. A container's root is an
   overlay of the image's layers, so the ratio should be about 1 (target <= 1.2).
2. Disk per idle container: the blocks allocated below
   ``$HAKO_ROOT/containers/<id>`` (``du -sx``) after ``hako create`` of an idle
   ``sleep``, and again once ``hako start`` has it running (target <= 64 KiB),
   with the files that take them.

Podman's equivalents are measured too when podman is installed (``--no-podman``
skips them): ``podman create`` / ``podman rm`` of the same two root filesystems
imported as images, and the container's own storage (``overlay-containers/<id>``
and its ``overlay/<layer>`` directory).

Run as root:  python3 bench/bench_images.py [--runs N] [--cache-dir DIR] [--no-podman]

Everything lives in a private temporary directory (HAKO_ROOT, HAKO_RUN, podman's
root and runroot) and the cgroup parent ``hako-bench-images``; all of it is
removed at the end, also after a failure or Ctrl-C. The Debian image is built
with the .debs kept in the repository's .cache/debootstrap (``--cache-dir``), so
only the first run downloads them.
"""

from __future__ import annotations

import argparse
import contextlib
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

REPO = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
HAKO = [os.path.join(REPO, "bin", "hako")]
CGROUP_PARENT = "hako-bench-images"
BLOCK = 5
WARMUPS = 3
KIB = 1024
# Paths outside the temporary directory that podman creates on first use whatever
# --root/--runroot say; removed at the end if they were not there before.
PODMAN_GLOBAL_PATHS = (
    "/var/lib/containers",
    "/run/containers",
    "/run/libpod",
    "/run/runc",
    "/etc/containers/networks",
    "/var/lib/cni",
)


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


class BenchError(Exception):
    pass


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tmp = tempfile.mkdtemp(prefix="hako-bench-images-", dir="/var/tmp")
        os.chmod(self.tmp, 0o711)
        self.podman_dir = os.path.join(self.tmp, "podman")
        self.env = dict(
            os.environ,
            HAKO_ROOT=os.path.join(self.tmp, "root"),
            HAKO_RUN=os.path.join(self.tmp, "run"),
            HAKO_CGROUP_PARENT=CGROUP_PARENT,
            HAKO_DEFAULT_NETWORK="none",  # as podman's containers (netns none)
            CONTAINERS_CONF=os.path.join(self.podman_dir, "containers.conf"),
            CONTAINERS_STORAGE_CONF=os.path.join(self.podman_dir, "storage.conf"),
        )
        self.global_before = {p for p in PODMAN_GLOBAL_PATHS if os.path.exists(p)}
        self.podman_used = False

    def run(self, argv: list[str], timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run(argv, capture_output=True, text=True, env=self.env, timeout=timeout)
        if check and result.returncode != 0:
            raise BenchError(f"{shlex.join(argv)} exited {result.returncode}: {result.stderr.strip()[-800:]}")
        return result

    def hako(self, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
        return self.run([*HAKO, *args], timeout=timeout, check=check)

    def podman(self, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
        self.podman_used = True
        argv = ["podman", "--root", os.path.join(self.podman_dir, "root")]
        argv += ["--runroot", os.path.join(self.podman_dir, "runroot"), *args]
        return self.run(argv, timeout=timeout, check=check)

    def container_dir(self, cid: str) -> str:
        return os.path.join(self.env["HAKO_ROOT"], "containers", cid)

    # Set-up ----------------------------------------------------------------------------
    def build_images(self) -> dict:
        log("building the busybox image")
        self.hako("image", "build", "busybox")
        log("building the Debian image (debootstrap)")
        started = time.monotonic()
        argv = ["image", "build", "debian", "--cache-dir", self.args.cache_dir]
        self.hako(*argv, timeout=3600)
        build_seconds = time.monotonic() - started
        sizes = {}
        for image in ("busybox:latest", "debian:bookworm"):
            info = json.loads(self.hako("image", "inspect", image).stdout)[0]
            sizes[image] = info["Size"]
        return {"sizes": sizes, "debian_build_s": build_seconds}

    def setup_podman(self) -> None:
        os.makedirs(os.path.join(self.podman_dir, "tmp"))
        q = json.dumps
        with open(self.env["CONTAINERS_CONF"], "w") as f:
            f.write(
                '[containers]\nnetns = "none"\ndefault_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]\n'
                '\n[engine]\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\nruntime = "runc"\n'
                f"tmp_dir = {q(os.path.join(self.podman_dir, 'tmp'))}\n"
                f"image_copy_tmp_dir = {q(os.path.join(self.podman_dir, 'tmp'))}\n"
                f"\n[network]\nnetwork_config_dir = {q(os.path.join(self.podman_dir, 'networks'))}\n"
            )
        with open(self.env["CONTAINERS_STORAGE_CONF"], "w") as f:
            f.write(
                '[storage]\ndriver = "overlay"\n'
                f"graphroot = {q(os.path.join(self.podman_dir, 'root'))}\n"
                f"runroot = {q(os.path.join(self.podman_dir, 'runroot'))}\n"
            )
        for image, name in (("busybox:latest", "busybox"), ("debian:bookworm", "debian")):
            info = json.loads(self.hako("image", "inspect", image).stdout)[0]
            layer = os.path.join(
                self.env["HAKO_ROOT"],
                "images",
                "layers",
                info["rootfs"]["diff_ids"][0].split(":", 1)[1],
                "fs",
            )
            tarball = os.path.join(self.tmp, f"{name}.tar")
            subprocess.run(["tar", "-C", layer, "-cf", tarball, "."], check=True)
            log(f"podman import {name}")
            self.podman(
                "import", "--change", "CMD=/bin/sh", tarball, f"localhost/bench/{name}:latest", timeout=600
            )
            os.unlink(tarball)

    # Clean-up --------------------------------------------------------------------------
    def cleanup(self) -> list[str]:
        problems = []

        def attempt(what: str, fn, *a, **kw) -> None:
            try:
                fn(*a, **kw)
            except Exception as e:  # noqa: BLE001 - clean-up goes on whatever fails
                problems.append(f"{what}: {e}")

        for cid in self._hako_containers():
            attempt(f"hako rm {cid[:12]}", self.hako, "rm", "-f", cid)
        if self.podman_used:
            attempt("podman rm", self.podman, "rm", "-af", "-t", "0", timeout=600)
            attempt("podman rmi", self.podman, "rmi", "-af", timeout=300)
        attempt("supervisor", self._stop_supervisor)
        attempt("mounts", self._unmount_below, self.tmp)
        attempt("temporary directory", shutil.rmtree, self.tmp)
        for path in PODMAN_GLOBAL_PATHS:
            if path not in self.global_before and os.path.exists(path):
                attempt(path, shutil.rmtree, path)
        for hierarchy in os.listdir("/sys/fs/cgroup"):
            top = os.path.join("/sys/fs/cgroup", hierarchy, CGROUP_PARENT)
            for directory, _dirs, _files in sorted(os.walk(top), key=lambda w: -w[0].count("/")):
                with contextlib.suppress(OSError):
                    os.rmdir(directory)
        left = self._mounts_below(self.tmp)
        if left:
            problems.append(f"mounts left: {left}")
        return problems

    def _hako_containers(self) -> list[str]:
        try:
            return os.listdir(os.path.join(self.env["HAKO_ROOT"], "containers"))
        except FileNotFoundError:
            return []

    def _stop_supervisor(self) -> None:
        path = os.path.join(self.env["HAKO_RUN"], "supervisor.pid")
        try:
            with open(path) as f:
                pid = int(f.read())
        except (FileNotFoundError, ValueError):
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and os.path.exists(f"/proc/{pid}"):
            time.sleep(0.02)

    @staticmethod
    def _mounts_below(top: str) -> list[str]:
        with open("/proc/self/mountinfo") as f:
            return [line.split()[4] for line in f if line.split()[4].startswith(top)]

    def _unmount_below(self, top: str) -> None:
        for target in sorted(self._mounts_below(top), key=len, reverse=True):
            subprocess.run(["umount", "-l", target], check=False)


# Measuring ---------------------------------------------------------------------------------
def du_bytes(path: str) -> int:
    """Bytes allocated below ``path`` on its own file system (``du -sx``; a running root is skipped)."""
    out = subprocess.run(["du", "-sx", "--block-size=1", path], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[0])


def file_costs(path: str) -> list[tuple[str, int, int]]:
    """(relative path, allocated bytes, apparent size) of each entry below ``path``, biggest first."""
    top_dev = os.lstat(path).st_dev
    rows, seen = [], set()
    for directory, dirs, files in os.walk(path):
        dirs[:] = [d for d in dirs if os.lstat(os.path.join(directory, d)).st_dev == top_dev]
        for name in [*dirs, *files]:
            full = os.path.join(directory, name)
            st = os.lstat(full)
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            rows.append((os.path.relpath(full, path), st.st_blocks * 512, st.st_size))
    rows.sort(key=lambda r: -r[1])
    return rows


def bench_create(bench: Bench, images: dict[str, str], kind: str, runs: int) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {name: [] for name in images}
    for image in images.values():
        _timed_block(bench, kind, image, WARMUPS)
    done = 0
    while done < runs:
        block = min(BLOCK, runs - done)
        for name, image in images.items():
            samples[name] += _timed_block(bench, kind, image, block)
        done += block
    return samples


def _timed_block(bench: Bench, kind: str, image: str, n: int) -> list[float]:
    out = []
    for _ in range(n):
        run = bench.hako if kind == "hako" else bench.podman
        started = time.perf_counter()
        cid = run("create", image, "true").stdout.strip()
        out.append(time.perf_counter() - started)
        run("rm", cid)
    return out


def bench_disk_hako(bench: Bench, image: str) -> dict:
    name = f"idle-{image.split(':')[0]}"
    cid = bench.hako("create", "--name", name, image, "sleep", "3600").stdout.strip()
    directory = bench.container_dir(cid)
    try:
        created = du_bytes(directory), file_costs(directory)
        bench.hako("start", name)
        started = du_bytes(directory), file_costs(directory)
        state = os.path.join(bench.env["HAKO_RUN"], "containers", cid + ".json")
        run_state = os.path.getsize(state) if os.path.exists(state) else 0
    finally:
        bench.hako("rm", "-f", name)
    return {"created": created, "started": started, "run_state": run_state}


def bench_disk_podman(bench: Bench, image: str) -> dict:
    cid = bench.podman(
        "create", "--name", f"idle-{image.split('/')[-1].split(':')[0]}", image, "sleep", "3600"
    )
    cid = cid.stdout.strip()
    try:

        def measure() -> tuple[int, list]:
            upper = bench.podman("inspect", "--format", "{{.GraphDriver.Data.UpperDir}}", cid).stdout.strip()
            dirs = [os.path.join(bench.podman_dir, "root", "overlay-containers", cid), os.path.dirname(upper)]
            total = sum(du_bytes(d) for d in dirs)
            rows = []
            for d in dirs:
                prefix = os.path.relpath(d, os.path.join(bench.podman_dir, "root"))
                rows += [(os.path.join(prefix, p), a, s) for p, a, s in file_costs(d)]
            rows.sort(key=lambda r: -r[1])
            return total, rows

        created = measure()
        bench.podman("start", cid)
        started = measure()
    finally:
        bench.podman("rm", "-f", "-t", "0", cid)
    return {"created": created, "started": started}


# Reporting -------------------------------------------------------------------------------------
def _ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:.1f} ms"


def _kib(n: int) -> str:
    return f"{n / KIB:.0f} KiB"


def _short(path: str) -> str:
    """A path with its 64-hex-digit IDs cut to 12."""
    return "/".join(
        p[:12] if len(p) == 64 and all(c in "0123456789abcdef" for c in p) else p for p in path.split("/")
    )


def _top(rows: list, n: int = 6) -> str:
    shown = [f"{_short(path)} {_kib(alloc)}" for path, alloc, _size in rows if alloc]
    more = f" and {len(shown) - n} more" if len(shown) > n else ""
    return ", ".join(shown[:n]) + more


def report(command: str, info: dict, create: dict, disk: dict, runs: int) -> str:
    sizes = info["sizes"]
    lines = [
        "## Images: create time and disk per container",
        "",
        f"`{command}` on {platform.node()} ({platform.machine()}, kernel {platform.release()}, "
        f"{os.cpu_count()} CPUs), {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. "
        f"busybox image {sizes['busybox:latest'] / KIB / KIB:.1f} MiB, "
        f"Debian bookworm minbase {sizes['debian:bookworm'] / KIB / KIB:.1f} MiB "
        f"(built in {info['debian_build_s']:.0f} s).",
        "",
        f"Create time: median of {runs} runs per image (after {WARMUPS} warm-ups), images taking turns "
        f"in blocks of {BLOCK}.",
        "",
        "| tool | busybox | Debian | Debian / busybox | target |",
        "|---|---|---|---|---|",
    ]
    for kind, samples in create.items():
        ratio = statistics.median(samples["debian"]) / statistics.median(samples["busybox"])
        target = "≤ 1.2 " + ("met" if ratio <= 1.2 else "missed") if kind == "hako" else ""
        lines.append(
            f"| {kind} create | {_ms(samples['busybox'])} | {_ms(samples['debian'])} "
            f"| {ratio:.2f} | {target} |"
        )
    lines += [
        "",
        "Disk per idle container (allocated blocks, `du -sx`; the mounted root of a running container "
        "is not counted):",
        "",
        "| tool | image | after create | after start (idle `sleep`) | target | what takes it (after start) |",
        "|---|---|---|---|---|---|",
    ]
    for (kind, image), result in disk.items():
        after_create, after_start = result["created"][0], result["started"][0]
        target = ""
        if kind == "hako":
            target = "≤ 64 KiB " + ("met" if max(after_create, after_start) <= 64 * KIB else "missed")
        lines.append(
            f"| {kind} | {image} | {_kib(after_create)} | {_kib(after_start)} | {target} | "
            f"{_top(result['started'][1])} |"
        )
    hako_states = [r["run_state"] for (k, _), r in disk.items() if k == "hako"]
    if hako_states:
        lines += [
            "",
            f"hako also keeps {max(hako_states)} bytes of run state per running container "
            "in HAKO_RUN (tmpfs).",
        ]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=30, help="timed creates per image and tool (default 30)")
    parser.add_argument(
        "--cache-dir",
        default=os.path.join(REPO, ".cache", "debootstrap"),
        help="where debootstrap keeps its .debs (default .cache/debootstrap)",
    )
    parser.add_argument("--no-podman", action="store_true", help="measure hako only")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("bench_images.py: run it as root", file=sys.stderr)
        return 2
    command = shlex.join(["python3", "bench/bench_images.py", *argv])
    with_podman = not args.no_podman and shutil.which("podman") is not None
    bench = Bench(args)

    def terminate(signum, _frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminate)
    code = 0
    try:
        info = bench.build_images()
        create: dict[str, dict[str, list[float]]] = {}
        disk: dict[tuple[str, str], dict] = {}
        log(f"hako create: {args.runs} runs per image")
        create["hako"] = bench_create(
            bench, {"busybox": "busybox:latest", "debian": "debian:bookworm"}, "hako", args.runs
        )
        for image in ("busybox:latest", "debian:bookworm"):
            log(f"hako disk: {image}")
            disk[("hako", image)] = bench_disk_hako(bench, image)
        if with_podman:
            bench.setup_podman()
            images = {"busybox": "localhost/bench/busybox:latest", "debian": "localhost/bench/debian:latest"}
            log(f"podman create: {args.runs} runs per image")
            create["podman"] = bench_create(bench, images, "podman", args.runs)
            for name, image in images.items():
                log(f"podman disk: {name}")
                disk[("podman", image.split("/")[-1])] = bench_disk_podman(bench, image)
        print(report(command, info, create, disk, args.runs))
    except KeyboardInterrupt:
        log("interrupted")
        code = 130
    except BenchError as e:
        log(str(e))
        code = 1
    finally:
        log("cleaning up")
        problems = bench.cleanup()
        for problem in problems:
            log(f"left behind: {problem}")
        if problems:
            code = code or 1
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
