#!/usr/bin/env python3
"""Pull time from a local registry: `hako pull` next to `skopeo copy` and `podman pull`, same image.

The image is a Debian bookworm minbase root filesystem (``debootstrap
--variant=minbase``, from the apt mirror this host uses, without the package
lists and downloaded packages, as Debian's own images) in one gzipped layer,
pushed by skopeo into a ``docker-registry`` on 127.0.0.1. Each run pulls it
into an empty place of its own:

* ``hako pull --insecure`` into an empty ``HAKO_ROOT`` (download, verify,
  unpack into the layer store);
* ``skopeo copy docker://... oci:DIR`` (download and verify; blobs stay
  compressed, nothing is unpacked);
* ``podman pull`` with a private ``--root``/``--runroot`` (download, verify,
  unpack into containers/storage; overlay driver unless ``--podman-driver``).

For reference, ``tar -xzf`` of the same blob (already on disk) shows what
unpacking alone costs on this machine's filesystem. The tools take turns, one
run each per round, after one warm-up round; the report gives each one's
median, min and max and the ratio of its median to hako's, as a Markdown
table.

Run as root:  python3 bench/bench_pull.py [--runs 5] [--podman-driver overlay|vfs] [--out FILE]

The rootfs tarball and the OCI layout made of it are kept in bench/.cache/
(git-ignored); everything else lives in a temporary directory that is removed
at the end, with the registry, also after a failure or Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gzip
import hashlib
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
CACHE = os.path.join(REPO, "bench", ".cache")
ROOTFS_TAR = os.path.join(CACHE, "debian-bookworm-minbase.tar")
LAYOUT = os.path.join(CACHE, "debian-bookworm-minbase.oci")
NAME = "bench/debian"
TAG = "bookworm"
# Made by podman or skopeo outside the directories given to them; removed if they were not there before.
GLOBAL_PATHS = ("/var/lib/containers", "/run/containers", "/run/libpod", "/var/lib/cni")
REQUIRED = {
    "docker-registry": "docker-registry",
    "skopeo": "skopeo",
    "podman": "podman",
    "debootstrap": "debootstrap",
}


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def run(argv: list[str], env: dict | None = None, timeout: float = 1800) -> subprocess.CompletedProcess:
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise SystemExit(
            f"bench: {' '.join(argv)} exited {result.returncode}: {result.stderr.strip()[-2000:]}"
        )
    return result


# The image ------------------------------------------------------------------------
def apt_mirror() -> str:
    """The Debian mirror this host's apt uses (sources.list or deb822 .sources)."""
    candidates = ["/etc/apt/sources.list"]
    directory = "/etc/apt/sources.list.d"
    if os.path.isdir(directory):
        candidates += [os.path.join(directory, n) for n in sorted(os.listdir(directory))]
    for path in candidates:
        if not path.endswith((".list", ".sources")):
            continue
        try:
            with open(path) as f:
                text = f.read()
        except OSError:
            continue
        for line in text.splitlines():
            words = line.split()
            if not words or line.lstrip().startswith("#") or "security" in line:
                continue
            if words[0] == "URIs:" and len(words) > 1:
                return words[1]
            if words[0] == "deb":
                urls = [w for w in words[1:] if "://" in w]
                if urls:
                    return urls[0]
    return "http://deb.debian.org/debian"


def ensure_rootfs_tarball() -> None:
    if os.path.exists(ROOTFS_TAR):
        return
    os.makedirs(CACHE, exist_ok=True)
    mirror = apt_mirror()
    target = tempfile.mkdtemp(prefix="hako-bench-rootfs-", dir="/var/tmp")
    try:
        log(f"debootstrap --variant=minbase bookworm from {mirror} (a few minutes, once)")
        run(["debootstrap", "--variant=minbase", "bookworm", target, mirror], timeout=3600)
        # As Debian's own container images are made: without the downloaded
        # packages and package lists (80 MB that no container needs).
        for directory in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for name in os.listdir(os.path.join(target, directory)):
                path = os.path.join(target, directory, name)
                if os.path.isfile(path) and name != "lock":
                    os.unlink(path)
        partial = ROOTFS_TAR + ".part"
        run(["tar", "--numeric-owner", "--xattrs", "-C", target, "-cf", partial, "."])
        os.rename(partial, ROOTFS_TAR)
    finally:
        _unmount_below(target)
        shutil.rmtree(target, ignore_errors=True)


def _sha256_file(path: str) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
    return "sha256:" + h.hexdigest(), size


def ensure_layout() -> dict:
    """An OCI layout of one gzipped layer made of the rootfs tarball; what it holds."""
    stamp = os.path.join(LAYOUT, "made-from")
    source = f"{os.path.getsize(ROOTFS_TAR)} {os.path.getmtime(ROOTFS_TAR)}"
    info_path = os.path.join(LAYOUT, "bench.json")
    if os.path.exists(stamp) and open(stamp).read() == source:
        with open(info_path) as f:
            return json.load(f)
    log("making the OCI layout (gzip of the rootfs tarball, once)")
    shutil.rmtree(LAYOUT, ignore_errors=True)
    blobs = os.path.join(LAYOUT, "blobs", "sha256")
    os.makedirs(blobs)

    def put(data: bytes) -> dict:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        with open(os.path.join(blobs, digest[7:]), "wb") as f:
            f.write(data)
        return {"digest": digest, "size": len(data)}

    diff_id, tar_size = _sha256_file(ROOTFS_TAR)
    staged = os.path.join(blobs, "layer.tmp")
    with open(ROOTFS_TAR, "rb") as src, open(staged, "wb") as raw:
        with gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6, mtime=0) as out:
            shutil.copyfileobj(src, out, 1 << 20)
    digest, size = _sha256_file(staged)
    os.rename(staged, os.path.join(blobs, digest[7:]))
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine)
    config = {
        "architecture": arch,
        "os": "linux",
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["bash"],
        },
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created_by": "debootstrap --variant=minbase bookworm"}],
    }
    config_desc = {
        "mediaType": "application/vnd.oci.image.config.v1+json",
        **put(json.dumps(config).encode()),
    }
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config_desc,
        "layers": [
            {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest, "size": size}
        ],
    }
    manifest_desc = {
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        **put(json.dumps(manifest).encode()),
    }
    manifest_desc["annotations"] = {"org.opencontainers.image.ref.name": TAG}
    with open(os.path.join(LAYOUT, "index.json"), "w") as f:
        json.dump({"schemaVersion": 2, "manifests": [manifest_desc]}, f)
    with open(os.path.join(LAYOUT, "oci-layout"), "w") as f:
        f.write('{"imageLayoutVersion": "1.0.0"}')
    entries = int(run(["sh", "-c", f"tar -tf {ROOTFS_TAR} | wc -l"]).stdout)
    info = {"compressed": size, "uncompressed": tar_size, "entries": entries}
    with open(info_path, "w") as f:
        json.dump(info, f)
    with open(stamp, "w") as f:
        f.write(source)
    return info


# The registry -----------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tmp = os.path.realpath(tempfile.mkdtemp(prefix="hako-bench-pull-", dir="/var/tmp"))
        # podman wants a runroot path of at most 50 characters.
        self.short = tempfile.mkdtemp(prefix="hbp-", dir="/tmp")
        self.present = {p for p in GLOBAL_PATHS if os.path.lexists(p)}
        self.registry: subprocess.Popen | None = None
        self.host = f"127.0.0.1:{free_port()}"
        self.reference = f"{self.host}/{NAME}:{TAG}"
        self.podman_env = dict(
            os.environ,
            CONTAINERS_CONF=os.path.join(self.tmp, "containers.conf"),
            CONTAINERS_STORAGE_CONF=os.path.join(self.tmp, "storage.conf"),
        )
        self.counter = 0
        with open(os.path.join(LAYOUT, "index.json")) as f:
            manifest_digest = json.load(f)["manifests"][0]["digest"]
        with open(os.path.join(LAYOUT, "blobs", "sha256", manifest_digest[7:])) as f:
            layer_digest = json.load(f)["layers"][0]["digest"]
        self.blob = os.path.join(LAYOUT, "blobs", "sha256", layer_digest[7:])

    def start_registry(self) -> None:
        config = os.path.join(self.tmp, "registry.yml")
        with open(config, "w") as f:
            f.write(
                "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n"
                f"storage:\n  filesystem:\n    rootdirectory: {self.tmp}/registry\n"
                f"http:\n  addr: {self.host}\n  secret: hako-bench\n"
            )
        log_file = open(
            os.path.join(self.tmp, "registry.log"), "wb"
        )  # the registry's, closed here once it has it
        self.registry = subprocess.Popen(
            ["docker-registry", "serve", config],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log_file.close()
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError), socket.create_connection(self.host.split(":"), timeout=1):
                return
            if self.registry.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("bench: docker-registry did not start")
            time.sleep(0.05)

    def write_podman_config(self) -> None:
        tmpdir = os.path.join(self.tmp, "podman-tmp")
        os.makedirs(tmpdir)
        with open(self.podman_env["CONTAINERS_CONF"], "w") as f:
            f.write(
                '[containers]\nnetns = "none"\n'
                f'[engine]\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\ntmp_dir = "{tmpdir}"\n'
                f'image_copy_tmp_dir = "{tmpdir}"\n'
                f'[network]\nnetwork_config_dir = "{self.tmp}/networks"\n'
            )
        with open(self.podman_env["CONTAINERS_STORAGE_CONF"], "w") as f:
            # Each run gives --root and --runroot; these only satisfy podman's check of the file.
            f.write(
                f'[storage]\ndriver = "{self.args.podman_driver}"\n'
                f'graphroot = "{self.short}/root"\nrunroot = "{self.short}/run"\n'
            )

    # One pull each ------------------------------------------------------------------
    def pull(self, tool: str) -> float:
        """Time one pull into a fresh place, then remove that place (not timed)."""
        self.counter += 1
        where = os.path.join(self.tmp if tool != "podman" else self.short, f"{tool}-{self.counter}")
        os.makedirs(where)
        env = None
        if tool == "hako":
            env = dict(os.environ, HAKO_ROOT=where, HAKO_RUN=os.path.join(where, "run"))
            argv = [self.args.hako, "pull", "--insecure", "--quiet", self.reference]
        elif tool == "skopeo":
            argv = ["skopeo", "copy", "--quiet", "--src-tls-verify=false", f"docker://{self.reference}",
                    f"oci:{where}/layout:{TAG}"]  # fmt: skip
        elif tool == "tar":
            argv = ["tar", "--numeric-owner", "-xzf", self.blob, "-C", where]
        else:
            env = self.podman_env
            argv = self.podman_argv(where) + ["pull", "--quiet", "--tls-verify=false", self.reference]
        start = time.perf_counter()
        run(argv, env=env)
        elapsed = time.perf_counter() - start
        if tool == "podman":
            subprocess.run(
                self.podman_argv(where) + ["rmi", "-af"], env=env, capture_output=True, timeout=600
            )
        _unmount_below(where)
        shutil.rmtree(where)
        return elapsed

    def podman_argv(self, where: str) -> list[str]:
        return ["podman", "--root", f"{where}/root", "--runroot", f"{where}/run",
                "--storage-driver", self.args.podman_driver]  # fmt: skip

    def cleanup(self) -> list[str]:
        problems = []
        if self.registry is not None and self.registry.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.registry.pid, signal.SIGTERM)
            try:
                self.registry.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.registry.pid, signal.SIGKILL)
                self.registry.wait(10)
        for path in (self.tmp, self.short):
            _unmount_below(path)
            shutil.rmtree(path, ignore_errors=True)
            if os.path.exists(path):
                problems.append(f"could not remove {path}")
        for path in GLOBAL_PATHS:
            if path not in self.present and os.path.lexists(path):
                shutil.rmtree(path, ignore_errors=True)
        return problems


def _unmount_below(path: str) -> None:
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    for point in sorted((p for p in points if p == path or p.startswith(path + "/")), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True)


# Report ----------------------------------------------------------------------------------
def version(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout.strip().splitlines()
        return out[0] if out else "?"
    except OSError:
        return "?"


def report(args, info: dict, times: dict[str, list[float]]) -> str:
    hako_median = statistics.median(times["hako"])
    mib = 1024 * 1024
    lines = [
        f"Pull of a Debian bookworm minbase image (one gzipped layer: {info['compressed'] / mib:.1f} MiB, "
        f"{info['uncompressed'] / mib:.1f} MiB of tar, {info['entries']} entries) from docker-registry on "
        f"127.0.0.1, into an empty store each time; {args.runs} runs per tool after one warm-up round, "
        "the tools taking turns.",
        "",
        "| tool | what it does | median (s) | min (s) | max (s) | median / hako's |",
        "|---|---|---:|---:|---:|---:|",
    ]
    what = {
        "hako": "download, verify, unpack into the layer store",
        "skopeo": "download, verify into an OCI layout (no unpacking)",
        "podman": f"download, verify, unpack into containers/storage ({args.podman_driver})",
        "tar": "reference: `tar -xzf` of the blob on disk (unpacking alone, no registry)",
    }
    for tool in ("hako", "skopeo", "podman", "tar"):
        t = times[tool]
        median = statistics.median(t)
        ratio = median / hako_median
        lines.append(f"| {tool} | {what[tool]} | {median:.2f} | {min(t):.2f} | {max(t):.2f} | {ratio:.2f}x |")
    lines += [
        "",
        f"Host: {platform.machine()}, {os.cpu_count()} CPUs, kernel {platform.release()}, "
        f"{datetime.date.today().isoformat()}. Versions: {version(['podman', '--version'])}; "
        f"{version(['skopeo', '--version'])}; hako on {version(['/usr/bin/python3', '--version'])}.",
        "",
        f"Command: `python3 bench/bench_pull.py --runs {args.runs} --podman-driver {args.podman_driver}`",
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=5, help="measured runs per tool (default 5)")
    parser.add_argument("--podman-driver", default="overlay", choices=("overlay", "vfs"))
    parser.add_argument("--hako", default=os.path.join(REPO, "bin", "hako"), help="the hako command to time")
    parser.add_argument("--tools", default="hako,skopeo,podman,tar", help=argparse.SUPPRESS)
    parser.add_argument("--out", help="also write the report to this file")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench: run as root")
    missing = [pkg for cmd, pkg in REQUIRED.items() if shutil.which(cmd) is None]
    if missing:
        raise SystemExit(f"bench: missing {', '.join(missing)} (scripts/setup installs them)")
    ensure_rootfs_tarball()
    info = ensure_layout()
    bench = Bench(args)
    tools = args.tools.split(",")
    times: dict[str, list[float]] = {t: [] for t in tools}
    try:
        bench.start_registry()
        bench.write_podman_config()
        run(["skopeo", "copy", "--quiet", "--dest-tls-verify=false", f"oci:{LAYOUT}:{TAG}",
             f"docker://{bench.reference}"])  # fmt: skip
        for round_ in range(args.runs + 1):
            order = tools[round_ % len(tools) :] + tools[: round_ % len(tools)]
            for tool in order:
                elapsed = bench.pull(tool)
                if round_:
                    times[tool].append(elapsed)
                log(f"{'warm-up' if not round_ else f'run {round_}'}: {tool} {elapsed:.2f} s")
    finally:
        problems = bench.cleanup()
    if set(tools) == {"hako", "skopeo", "podman", "tar"}:
        text = report(args, info, times)
    else:
        text = "\n".join(f"{t}: median {statistics.median(v):.2f} s  {v}" for t, v in times.items()) + "\n"
    print(text, end="")
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    for problem in problems:
        log(problem)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
