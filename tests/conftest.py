"""Fixtures shared by every test: a private hako state, the hako command, leak checks.

Integration tests run as root against the real kernel. Each test session gets
its own HAKO_ROOT, HAKO_RUN and cgroup parent, so nothing it does touches a
real installation, and every test is followed by a check that nothing hako
made is left on the machine: no container, cgroup, mount, loop device, network
device, firewall rule, process or run-state.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
HAKO = [str(REPO / "bin" / "hako")]

# The package under test, importable as `hako` (as bin/hako does it).
if str(REPO / "module_utils") not in sys.path:
    sys.path.insert(0, str(REPO / "module_utils"))
CGROUP_ROOT = Path("/sys/fs/cgroup")


def hako(*args: str, check: bool = True, timeout: float = 60, input: str | None = None, env=None):
    """Run the hako command; with ``check``, a non-zero exit fails the test with its stderr."""
    result = subprocess.run(
        [*HAKO, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        input=input,
        env=env,
    )
    if check and result.returncode != 0:
        pytest.fail(f"hako {' '.join(args)} exited {result.returncode}: {result.stderr.strip()}")
    return result


# The supervisor keeps one spare for the next start (see supervisor.py): a
# process named hako-spare (hako-middle while it is being made) waiting in a
# cgroup made ahead. It is the supervisor's, not a container's, and goes with
# it (checked when the session ends).
SPARE_COMMS = ("hako-spare", "hako-middle")


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def _is_spare(cgroup: Path) -> bool:
    try:
        pids = [int(p) for p in (cgroup / "cgroup.procs").read_text().split()]
    except OSError:
        return False
    return bool(pids) and all(_comm(pid) in SPARE_COMMS for pid in pids)


def cgroup_dirs(parent: str, spares: bool = False) -> list[Path]:
    """Every cgroup directory below ``parent`` in every mounted hierarchy."""
    found = []
    for hierarchy in CGROUP_ROOT.iterdir():
        base = hierarchy / parent
        if base.is_dir():
            found += [p for p in base.iterdir() if p.is_dir()]
    if spares:
        return found
    # A spare sits in a cgroup of its own in every hierarchy; the hierarchies
    # that list processes tell which directories those are.
    spare_names = {p.name for p in found if _is_spare(p)}
    return [p for p in found if p.name not in spare_names]


def host_links() -> set[str]:
    return set(os.listdir("/sys/class/net"))


def hako_mounts(root: str) -> list[str]:
    """Mounts below ``root``, and mounts anywhere of a loop device backed by a file below it."""
    devices = [f"/dev/{name}" for name in hako_loop_devices(root)]
    with open("/proc/self/mountinfo") as f:
        return [line for line in f if root in line or any(f" {dev} " in line for dev in devices)]


def hako_loop_devices(root: str) -> list[str]:
    """Loop devices (loopN) backed by a file below ``root`` (a size-limited writable layer)."""
    root = os.path.realpath(root) + os.sep
    found = []
    for entry in Path("/sys/block").glob("loop*"):
        try:
            backing = (entry / "loop" / "backing_file").read_text().strip()
        except OSError:
            continue  # not attached
        if backing.startswith(root):
            found.append(entry.name)
    return sorted(found)


def processes_in(parent: str, spares: bool = False) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cgroup") as f:
                text = f.read()
        except OSError:
            continue
        if f"/{parent}/" in text and (spares or _comm(int(entry)) not in SPARE_COMMS):
            pids.append(int(entry))
    return pids


@pytest.fixture(scope="session", autouse=True)
def hako_env():
    """A private state for the session, the busybox image built once, all removed at the end."""
    base = tempfile.mkdtemp(prefix="hako-test-", dir="/var/tmp")
    # A user namespace's root (an unprivileged host uid) must reach its layers.
    os.chmod(base, 0o711)
    parent = f"hako-test-{os.getpid()}"
    saved = {
        k: os.environ.get(k) for k in ("HAKO_ROOT", "HAKO_RUN", "HAKO_CGROUP_PARENT", "HAKO_DEFAULT_NETWORK")
    }
    os.environ.update(
        HAKO_ROOT=os.path.join(base, "root"),
        HAKO_RUN=os.path.join(base, "run"),
        HAKO_CGROUP_PARENT=parent,
        # Containers that name no network get only lo, unless a test asks for the default network.
        HAKO_DEFAULT_NETWORK="none",
    )
    forwarding = ip_forward() if os.geteuid() == 0 else None
    try:
        if os.geteuid() == 0:
            hako("image", "build", "busybox")
        yield {"base": base, "root": os.environ["HAKO_ROOT"], "run": os.environ["HAKO_RUN"], "parent": parent}
    finally:
        stop_supervisor(os.environ["HAKO_RUN"])
        if forwarding is not None and ip_forward() != forwarding:
            ip_forward(forwarding)  # also after module-wide fixtures (see no_leftovers)
        left = processes_in(parent, spares=True), cgroup_dirs(parent, spares=True)
        for pid in left[0]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for hierarchy in CGROUP_ROOT.iterdir():
            for path in sorted((hierarchy / parent).glob("**/"), key=lambda p: -len(p.parts)):
                with contextlib.suppress(OSError):
                    path.rmdir()
        shutil.rmtree(base, ignore_errors=True)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    if left[0] or left[1]:
        pytest.fail(f"the stopped supervisor left processes {left[0]} and cgroups {left[1]}")


def stop_supervisor(run_dir: str) -> None:
    """End the session's supervisor (it would exit by itself once idle)."""
    try:
        with open(os.path.join(run_dir, "supervisor.pid")) as f:
            pid = int(f.read())
    except (FileNotFoundError, ValueError):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and os.path.exists(f"/proc/{pid}"):
        time.sleep(0.02)


# What the peers the tests run (podman, skopeo: their blob-info cache, run
# state and network config) make outside the directories given to them.
PEER_GLOBAL_PATHS = ("/var/lib/containers", "/run/containers", "/run/libpod", "/var/lib/cni")


@pytest.fixture(scope="session", autouse=True)
def no_peer_leftovers():
    """Remove at the end what podman and skopeo made on the machine during the session."""
    present = {p for p in PEER_GLOBAL_PATHS if os.path.lexists(p)}
    yield
    for path in PEER_GLOBAL_PATHS:
        if path not in present and os.path.lexists(path):
            shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(autouse=True)
def no_leftovers(request, hako_env):
    """After each test (and its own clean-up), nothing hako made may remain."""
    # The VM stage changes nothing on this machine but its own run directories,
    # which its fixtures check; the checks below would only see other checkouts' tests.
    if os.geteuid() != 0 or {"unit", "vm"} & set(request.node.nodeid.split("/")):
        yield
        return
    links_before, rules_before, forwarding = host_links(), firewall_rules(), ip_forward()
    yield
    if ip_forward() != forwarding:
        # hako turns forwarding on for NAT and leaves it on, as Docker does;
        # put it back, for other checkouts' tests on this machine.
        ip_forward(forwarding)
    # The supervisor reports an exit before it removes the cgroup and a --rm
    # container's files: give that a moment before calling anything a leak.
    deadline = time.monotonic() + 5
    while True:
        problems = leftovers(hako_env, links_before, rules_before)
        if not problems or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    if problems:
        containers = Path(hako_env["root"], "containers")
        for entry in containers.iterdir() if containers.is_dir() else []:
            hako("rm", "-f", entry.name, check=False)
        pytest.fail("left behind: " + "; ".join(problems))


def firewall_rules() -> set[str]:
    """Lines of the firewall that name hako (its table, chains, tagged rules), without counters.

    One `nft` call; its view includes iptables-nft's rules (as chains HAKO-*).
    """
    if shutil.which("nft"):
        command = ["nft", "-s", "list", "ruleset"]
    elif shutil.which("iptables-save"):
        command = ["iptables-save"]
    else:
        return set()
    out = subprocess.run(command, capture_output=True, text=True).stdout
    return {line.strip() for line in out.splitlines() if "hako" in line.lower()}


def ip_forward(value: str | None = None) -> str:
    with open("/proc/sys/net/ipv4/ip_forward", "r+" if value else "r") as f:
        if value:
            f.write(value)
            return value
        return f.read().strip()


def leftovers(hako_env: dict, links_before: set[str], rules_before: set[str] = frozenset()) -> list[str]:
    """What hako made that is still on the machine, as readable lines."""
    problems = []
    containers = Path(hako_env["root"], "containers")
    left = [p.name for p in containers.iterdir()] if containers.is_dir() else []
    if left:
        problems.append(f"containers: {left}")
    for kind in ("containers", "locks"):
        states = Path(hako_env["run"], kind)
        if states.is_dir() and any(states.iterdir()):
            problems.append(f"{kind} in HAKO_RUN: {[p.name for p in states.iterdir()]}")
    if cgroup_dirs(hako_env["parent"]):
        problems.append(f"cgroups: {[str(p) for p in cgroup_dirs(hako_env['parent'])]}")
    if hako_mounts(hako_env["root"]):
        problems.append(f"mounts: {hako_mounts(hako_env['root'])}")
    if hako_loop_devices(hako_env["root"]):
        problems.append(f"loop devices: {hako_loop_devices(hako_env['root'])}")
    new_links = host_links() - links_before
    if new_links:
        problems.append(f"network devices: {sorted(new_links)}")
    rules = firewall_rules() - rules_before
    if rules:
        problems.append(f"firewall rules: {sorted(rules)}")
    procs = processes_in(hako_env["parent"])
    if procs:
        problems.append(f"processes: {procs}")
    return problems


@pytest.fixture
def containers():
    """Names of containers a test makes; all are removed (forcibly) when it ends."""
    made: list[str] = []
    yield made
    for name in made:
        hako("rm", "-f", name, check=False)


@pytest.fixture
def networks():
    """Names of networks a test makes; all are removed (forcibly) when it ends."""
    made: list[str] = []
    yield made
    for name in made:
        hako("network", "rm", "-f", name, check=False)


@pytest.fixture
def run_detached(containers):
    """Start a detached container and return (name, pid of its init)."""
    counter = iter(range(1000))

    def start(*args: str, name: str | None = None) -> tuple[str, int]:
        name = name or f"t{os.getpid()}-{next(counter)}"
        containers.append(name)
        hako("run", "-d", "--name", name, *args)
        return name, container_pid(name)

    return start


def container_pid(name: str) -> int:
    import json

    info = json.loads(hako("inspect", name).stdout)[0]
    return info["State"]["Pid"]


def ns_inode(pid: int | str, kind: str) -> int:
    return os.stat(f"/proc/{pid}/ns/{kind}").st_ino


def wait_for(predicate, timeout: float = 10, interval: float = 0.05):
    """Poll until ``predicate()`` is truthy; return its value or fail."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {getattr(predicate, '__name__', predicate)}")
        time.sleep(interval)


class Terminal:
    """A pseudo-terminal running a hako command, for -it tests."""

    def __init__(self, *args: str) -> None:
        self.master, slave = os.openpty()
        self.proc = subprocess.Popen(
            [*HAKO, *args], stdin=slave, stdout=slave, stderr=slave, start_new_session=True
        )
        os.close(slave)
        self.output = b""

    def send(self, text: str) -> None:
        os.write(self.master, text.encode())

    def expect(self, text: str, timeout: float = 10) -> str:
        deadline = time.monotonic() + timeout
        while text.encode() not in self.output:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                pytest.fail(f"terminal never showed {text!r}; it showed {self.output[-500:]!r}")
            ready, _, _ = select.select([self.master], [], [], remaining)
            if ready:
                try:
                    chunk = os.read(self.master, 4096)
                except OSError:
                    chunk = b""
                if not chunk:
                    if text.encode() not in self.output:
                        pytest.fail(f"terminal closed before showing {text!r}: {self.output[-500:]!r}")
                    break
                self.output += chunk
        return self.output.decode(errors="replace")

    def wait(self, timeout: float = 20) -> int:
        code = self.proc.wait(timeout)
        return code

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        with contextlib.suppress(OSError):
            os.close(self.master)


@pytest.fixture
def terminal():
    made: list[Terminal] = []

    def open_terminal(*args: str) -> Terminal:
        t = Terminal(*args)
        made.append(t)
        return t

    yield open_terminal
    for t in made:
        t.close()


# A Debian image (hako image build debian) --------------------------------------
# Built once per session. The .debs debootstrap downloads are kept in
# .cache/debootstrap, and the built image (its layer blob and config) in
# .cache/images under a name that changes with the builder's source, so a later
# session in the same checkout (a second pytest run in CI) restores it without
# downloading or building again.
DEBIAN_IMAGE = "debian:bookworm"
DEBIAN_INCLUDE = "iproute2,procps,python3"
DEBIAN_CACHE = REPO / ".cache"


def debian_build_env(**extra: str) -> dict:
    """The environment for a `hako image build debian` that uses the repository's .deb cache."""
    env = dict(os.environ, HAKO_DEBOOTSTRAP_CACHE=str(DEBIAN_CACHE / "debootstrap"))
    env.update(extra)
    return env


@pytest.fixture(scope="session")
def debian_image(hako_env) -> str:
    """debian:bookworm (minbase with iproute2 and procps) in the session's store; its reference."""
    import hashlib
    import json

    from hako.images.store import ImageStore

    if os.geteuid() != 0:
        pytest.skip("building an image needs root")
    builder = (REPO / "module_utils" / "hako" / "images" / "debootstrap.py").read_bytes()
    stamp = hashlib.sha256(builder + DEBIAN_INCLUDE.encode()).hexdigest()[:16]
    saved = DEBIAN_CACHE / "images" / f"debian-bookworm-{stamp}"
    images = ImageStore()
    if (saved / "config.json").is_file():
        config = (saved / "config.json").read_bytes()
        info = json.loads((saved / "layer.json").read_text())
        with open(saved / "layer.tar.gz", "rb") as blob:
            images.unpack_layer(blob, info["diff_id"], info["digest"], info["media_type"])
        from hako.images.debootstrap import META_KEY, BuildOptions

        # As the build leaves it: the builder's record of the build, which
        # its cache trusts (never the image's labels).
        meta = {META_KEY: BuildOptions(include=DEBIAN_INCLUDE).key()}
        images.add_image_config(config, "sha256:" + hashlib.sha256(config).hexdigest(), DEBIAN_IMAGE, meta)
        return DEBIAN_IMAGE
    hako("image", "build", "debian", "--include", DEBIAN_INCLUDE, timeout=1800, env=debian_build_env())
    image = images.get(DEBIAN_IMAGE)
    info = images.layer_info(image.diff_ids()[0])
    partial = saved.with_name(f"{saved.name}.{os.getpid()}.tmp")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    shutil.copyfile(images.blob_path(info["digest"]), partial / "layer.tar.gz")
    (partial / "layer.json").write_text(json.dumps(info))
    config_path = Path(images.root, "configs", image.id.split(":", 1)[1] + ".json")
    shutil.copyfile(config_path, partial / "config.json")
    for old in saved.parent.glob("debian-bookworm-*"):
        if old != partial:
            shutil.rmtree(old, ignore_errors=True)
    partial.rename(saved)
    return DEBIAN_IMAGE
