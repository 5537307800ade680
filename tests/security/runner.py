"""Run the catalogue's attempts in a container engine and tell what happened.

Two engines: hako (``bin/hako run --rm``, default or with extra options such as
``--privileged``) and Podman (rootful, Debian's podman with runc, its storage
in a private temporary root). The host side of the attempts (a host process
to find, sockets listening on the host, a message queue, a read-only volume)
is a ``Host``, made once and removed at the end; after each attempt it is
checked that the host did not change (hostname, core_pattern, the host
process not signalled, the volume not written).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import re
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

from .catalogue import Attempt, program

REPO = Path(__file__).resolve().parent.parent.parent
HAKO = [str(REPO / "bin" / "hako")]
IMAGE = "debian:bookworm"
RUN_TIMEOUT = 120


@dataclass
class Outcome:
    """What one attempt did in one engine.

    kind: "blocked" (refused, ``message`` says how), "succeeded" (the attempt
    worked), "absent" (nothing to attack on this kernel) or "error" (the
    attempt did not run to its end: ``message`` has the engine's error).
    """

    kind: str
    message: str
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return asdict(self)


def parse(result: subprocess.CompletedProcess, engine: str) -> Outcome:
    for line in reversed(result.stdout.splitlines()):
        for prefix, kind in (("BLOCKED: ", "blocked"), ("SUCCEEDED: ", "succeeded"), ("ABSENT: ", "absent")):
            if line.startswith(prefix):
                return Outcome(kind, line[len(prefix) :].strip())
    tail = (result.stderr.strip() or result.stdout.strip()).splitlines()[-3:]
    return Outcome("error", f"{engine} exited {result.returncode}: {' | '.join(tail) or '(no output)'}")


# The host side ----------------------------------------------------------------------------
SENTINEL = """
import signal, sys, time
def note(*_):
    with open(sys.argv[2], "a") as f:
        f.write("signalled\\n")
signal.signal(signal.SIGUSR1, note)
while True:
    time.sleep(3600)
"""

IPC_CREAT, IPC_RMID = 0o1000, 0


class Host:
    """What the attempts look for on the host; made on enter, removed on exit."""

    def __enter__(self) -> Host:
        self.tag = uuid.uuid4().hex[:12]
        self.dir = Path(tempfile.mkdtemp(prefix="hako-catalogue-", dir="/tmp"))
        os.chmod(self.dir, 0o755)
        self.marker_file = self.dir / "host-only-marker"
        self.marker_file.write_text("only the host has this file\n")
        self.volume = self.dir / "volume"
        self.volume.mkdir()
        (self.volume / "data.txt").write_text("the host's data\n")
        self.signalled = self.dir / "sentinel-signalled"
        self.sentinel_marker = f"hako-catalogue-sentinel-{self.tag}"
        self.sentinel = subprocess.Popen(
            [sys.executable, "-c", SENTINEL, self.sentinel_marker, str(self.signalled)],
            stdin=subprocess.DEVNULL,
        )
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(8)
        self.abstract_name = f"hako-catalogue-{self.tag}"
        self.abstract = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.abstract.bind("\0" + self.abstract_name)
        self.abstract.listen(8)
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.ipc_key = int(self.tag[:7], 16) | 0x10000000
        self.ipc_queue = self.libc.msgget(ctypes.c_int(self.ipc_key), IPC_CREAT | 0o600)
        if self.ipc_queue == -1:
            raise OSError(ctypes.get_errno(), "msgget")
        self.hostname = socket.gethostname()
        self.loop, self.disk = self.make_disk()
        return self

    def make_disk(self) -> tuple[str | None, list[int]]:
        """A block device of the host for the attempts to read: a loop device over a file of its own.

        (A real disk would do as well where the host's root may read it; on
        some machines not even that root may open the disk it runs from.)
        """
        image = self.dir / "disk.img"
        with open(image, "wb") as f:
            f.write(b"hako-catalogue: the host's disk\n".ljust(1 << 20, b"\0"))
        made = subprocess.run(
            ["losetup", "--find", "--show", "--read-only", str(image)], capture_output=True, text=True
        )
        if made.returncode != 0:
            return None, host_disk()
        loop = made.stdout.strip()
        rdev = os.stat(loop).st_rdev
        return loop, [os.major(rdev), os.minor(rdev)]

    def __exit__(self, *exc) -> None:
        if self.loop:
            subprocess.run(["losetup", "--detach", self.loop], capture_output=True)
        self.sentinel.kill()
        self.sentinel.wait()
        self.listener.close()
        self.abstract.close()
        self.libc.msgctl(self.ipc_queue, IPC_RMID, None)
        shutil.rmtree(self.dir, ignore_errors=True)

    def args(self) -> dict:
        return {
            "sentinel_pid": self.sentinel.pid,
            "sentinel_marker_reversed": self.sentinel_marker[::-1],
            "marker_file": str(self.marker_file),
            "host_ifaces": sorted(os.listdir("/sys/class/net")),
            "host_addrs": host_addresses(),
            "loopback_port": self.listener.getsockname()[1],
            "abstract_socket": self.abstract_name,
            "ipc_key": self.ipc_key,
            "disk": self.disk,
            "host_hostname": self.hostname,
        }

    def snapshot(self) -> dict:
        return {
            "hostname": socket.gethostname(),
            "core_pattern": Path("/proc/sys/kernel/core_pattern").read_text(),
            "host process": "alive" if self.sentinel.poll() is None else "dead",
            "host process signalled": self.signalled.exists(),
            "volume": sorted(p.name for p in self.volume.iterdir()),
        }

    def changes(self, before: dict) -> list[str]:
        time.sleep(0.01)  # a signal's handler runs
        after = self.snapshot()
        return [f"{key}: {before[key]!r} -> {after[key]!r}" for key in before if before[key] != after[key]]

    def restore(self) -> None:
        """Undo what an escaped attempt changed that later attempts look at."""
        with contextlib.suppress(FileNotFoundError):
            self.signalled.unlink()
        for path in self.volume.iterdir():
            if path.name != "data.txt":
                path.unlink()


def host_addresses() -> list[str]:
    """The host's own addresses outside loopback (only bound to, never sent to)."""
    out = subprocess.run(["ip", "-j", "addr", "show"], capture_output=True, text=True, check=True).stdout
    addrs = []
    for link in json.loads(out):
        for info in link.get("addr_info", []):
            if link["ifname"] != "lo" and info.get("scope") == "global":
                addrs.append(info["local"])
    return addrs or ["192.0.2.254"]


def host_disk() -> list[int]:
    """major, minor of the host's first disk (/proc/partitions)."""
    with open("/proc/partitions") as f:
        for line in f.read().splitlines()[2:]:
            major, minor, _, name = line.split()
            if not re.match(r"(loop|ram|zram|sr|nbd)\d", name):
                return [int(major), int(minor)]
    st = os.stat("/")
    return [os.major(st.st_dev), os.minor(st.st_dev)]


# The engines ---------------------------------------------------------------------------
class Hako:
    """``hako run --rm [extra] [attempt options] IMAGE python3 -c ...``."""

    name = "hako"

    def __init__(self, extra: tuple[str, ...] = ()) -> None:
        self.extra = tuple(extra)
        self.label = "hako " + " ".join(self.extra) if self.extra else "hako default"

    def run(self, options: list[str], argv: list[str]) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*HAKO, "run", "--rm", *self.extra, *options, IMAGE, *argv],
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT,
            stdin=subprocess.DEVNULL,
        )

    def start_other(self) -> tuple[str, int]:
        name = f"catalogue-other-{uuid.uuid4().hex[:8]}"
        started = subprocess.run(
            [*HAKO, "run", "-d", "--name", name, IMAGE, "sleep", "600"], capture_output=True, text=True
        )
        if started.returncode != 0:
            raise RuntimeError(f"hako could not start the other container: {started.stderr.strip()}")
        info = json.loads(subprocess.run([*HAKO, "inspect", name], capture_output=True, text=True).stdout)
        return name, int(info[0]["State"]["Pid"])

    def remove_other(self, name: str) -> None:
        subprocess.run([*HAKO, "rm", "-f", name], capture_output=True)


class Podman:
    """Rootful Podman with runc, its storage in a private root (unmounted and removed by ``close``)."""

    name = "podman"
    label = "podman default"

    def __init__(self) -> None:
        # Podman wants a short runroot (at most 50 characters).
        self.base = Path(tempfile.mkdtemp(prefix="hako-podman-", dir="/tmp"))
        self.runc_root_existed = os.path.lexists("/run/runc")
        # Podman's cgroupfs manager puts containers under libpod_parent in every hierarchy.
        self.cgroups_before = set(Path("/sys/fs/cgroup").glob("*/libpod_parent"))
        nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        conf = self.base / "containers.conf"
        # As MACHINE-NOTES says for this host: cgroupfs, events to a file, no
        # network, ulimits that runc may set here.
        conf.write_text(
            '[engine]\ncgroup_manager="cgroupfs"\nevents_logger="file"\n'
            f'[containers]\nnetns="none"\ndefault_ulimits=["nofile={min(nofile, 1024)}:{min(nofile, 1024)}",'
            '"nproc=4096:4096"]\n'
        )
        self.env = dict(os.environ, CONTAINERS_CONF=str(conf))
        self.command = [
            "podman",
            "--root",
            str(self.base / "root"),
            "--runroot",
            str(self.base / "run"),
            # overlay (as hako uses): a run takes ~0.2 s where vfs, copying the image, takes ~3 s.
            "--storage-driver",
            "overlay",
        ]
        self.image = IMAGE

    def podman(self, *args: str, timeout: float = RUN_TIMEOUT) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*self.command, *args],
            capture_output=True,
            text=True,
            env=self.env,
            cwd=self.base,  # conmon writes a file named "oom" into its working directory
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )

    def load(self, archive: str) -> None:
        loaded = self.podman("load", "-q", "-i", archive)
        if loaded.returncode != 0:
            raise RuntimeError(f"podman load failed: {loaded.stderr.strip()}")
        self.image = loaded.stdout.strip().splitlines()[-1].split(": ", 1)[1]

    def run(self, options: list[str], argv: list[str]) -> subprocess.CompletedProcess:
        return self.podman(
            "run", "--rm", "--runtime", "runc", "--network", "none", *options, self.image, *argv
        )

    def start_other(self) -> tuple[str, int]:
        name = f"catalogue-other-{uuid.uuid4().hex[:8]}"
        started = self.podman("run", "-d", "--runtime", "runc", "--name", name, self.image, "sleep", "600")
        if started.returncode != 0:
            raise RuntimeError(f"podman could not start the other container: {started.stderr.strip()}")
        pid = self.podman("inspect", "--format", "{{.State.Pid}}", name).stdout.strip()
        return name, int(pid)

    def remove_other(self, name: str) -> None:
        self.podman("rm", "-f", "-t", "0", name)

    def close(self) -> None:
        self.podman("rm", "-a", "-f", "-t", "0")
        # The overlay driver's own mounts (its root bind-mounted on itself).
        with open("/proc/self/mountinfo") as f:
            points = [line.split()[4] for line in f if line.split()[4].startswith(f"{self.base}/")]
        for point in sorted(points, key=len, reverse=True):
            subprocess.run(["umount", "-l", point], capture_output=True)
        shutil.rmtree(self.base, ignore_errors=True)
        for parent in set(Path("/sys/fs/cgroup").glob("*/libpod_parent")) - self.cgroups_before:
            for path in sorted(parent.glob("**/"), key=lambda p: -len(p.parts)):
                with contextlib.suppress(OSError):
                    path.rmdir()
        if not self.runc_root_existed:
            with contextlib.suppress(OSError):
                os.rmdir("/run/runc")  # only if runc left it empty


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def run_attempt(engine, attempt: Attempt, host: Host, admin: bool = False) -> Outcome:
    """Run one attempt in ``engine``; with ``admin``, its admin script (if it has one)."""
    options = [o.format(volume=host.volume) for o in attempt.options]
    script = attempt.admin_script if admin and attempt.admin_script else attempt.script
    args = host.args()
    other = None
    if "other" in attempt.needs:
        other = engine.start_other()
        args["other_pid"] = other[1]
    before = host.snapshot()
    started = time.monotonic()
    try:
        result = engine.run(options, ["python3", "-c", program(script), json.dumps(args)])
        outcome = parse(result, engine.label)
        outcome.seconds = round(time.monotonic() - started, 3)
        if other is not None and not alive(other[1]):
            outcome = Outcome(
                "succeeded", f"the other container's init died ({outcome.message})", outcome.seconds
            )
    finally:
        if other is not None:
            engine.remove_other(other[0])
    changed = host.changes(before)
    if changed:
        host.restore()
        outcome = Outcome(
            "succeeded", f"changed the host: {'; '.join(changed)} ({outcome.message})", outcome.seconds
        )
    return outcome
