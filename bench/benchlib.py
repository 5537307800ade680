"""What the benchmarks share: their processes, mounts and cgroups, podman's private set-up, the report.

Each benchmark keeps its state in a temporary directory of its own and its
containers under cgroup parents of its own; these functions find what it
made there, end and remove it, and tell whether anything is left. Imported
by the scripts beside it (``python3 bench/SCRIPT.py`` puts bench/ on the path).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shlex
import signal
import subprocess
import sys
import time

CGROUP_FS = "/sys/fs/cgroup"


class BenchError(Exception):
    pass


def run(
    argv: list[str], env: dict, timeout: float, check: bool = True, **kwargs
) -> subprocess.CompletedProcess:
    """Run a command (output captured unless told otherwise); with ``check``, a failure is a BenchError."""
    kwargs.setdefault("stdout", subprocess.PIPE)
    kwargs.setdefault("stderr", subprocess.PIPE)
    try:
        proc = subprocess.run(argv, env=env, timeout=timeout, text=True, **kwargs)
    except subprocess.TimeoutExpired:
        raise BenchError(f"timed out after {timeout:.0f} s: {shlex.join(argv)}") from None
    if check and proc.returncode != 0:
        err = (proc.stderr or proc.stdout or "").strip()[-2000:]
        raise BenchError(f"exit {proc.returncode}: {shlex.join(argv)}\n{err}")
    return proc


class Cleanup:
    """Clean-up steps that go on whatever fails: call with (what, fn, *args); ``problems`` lists failures."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def __call__(self, what: str, fn, *args, **kwargs) -> None:
        try:
            fn(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - clean-up goes on whatever fails
            self.problems.append(f"{what}: {e}")


def main(name: str, work, cleanup, out: str | None, begin: str, end: str) -> int:
    """Run ``work()`` (the report's text), then ``cleanup()`` (what is left); print and write the report.

    A failure or Ctrl-C still cleans up; the exit status is 1 if the work
    failed or anything is left.
    """
    text = None
    try:
        text = work()
    except (BenchError, KeyboardInterrupt) as e:
        print(f"{name}: {e or 'interrupted'}", file=sys.stderr)
    finally:
        problems = cleanup()
    for problem in problems:
        print(f"{name}: {problem}", file=sys.stderr)
    if text is None or problems:
        return 1
    print(text)
    if out:
        write_section(out, text, begin, end)
    return 0


def read_file(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return None


def first_line(argv: list[str]) -> str:
    """The first line a command prints (a version), or ``?``."""
    try:
        out = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=60)
        return out.stdout.strip().splitlines()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        return "?"


def cpu_model() -> str:
    cpuinfo = read_file("/proc/cpuinfo") or ""
    return next(
        (ln.split(":", 1)[1].strip() for ln in cpuinfo.splitlines() if ln.startswith("model name")), "?"
    )


def os_name() -> str:
    """The distribution's PRETTY_NAME from /etc/os-release."""
    return next(
        (
            ln.split("=", 1)[1].strip('"')
            for ln in (read_file("/etc/os-release") or "").splitlines()
            if ln.startswith("PRETTY_NAME=")
        ),
        "?",
    )


def start_alone(script: str, name: str, parents: tuple[str, ...]):
    """Start a benchmark: one run at a time (runs would share the cgroup parents), none while
    processes are in its cgroups; SIGTERM and SIGHUP end it through its clean-up. The lock to hold."""
    lock = open(os.path.realpath(script), "rb")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise SystemExit(f"{name}: another run of this benchmark is in progress") from None
    busy = [p for p in pids() if in_cgroups(p, parents)]
    if busy:
        raise SystemExit(
            f"{name}: processes {busy} are in a {' or '.join(parents)} cgroup already; not starting"
        )

    def terminate(signum, _frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGHUP, terminate)
    return lock


def clean_up(cleanup, log) -> list[str]:
    """Run a benchmark's clean-up (which returns what is left) and say what it left behind."""
    log("cleaning up")
    problems = cleanup()
    for problem in problems:
        log(f"NOT CLEAN: {problem}")
    if not problems:
        log("cleanup: nothing left behind")
    return problems


# Processes ------------------------------------------------------------------------


def pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def proc_stat(pid: int) -> tuple[str, str, int] | None:
    """(comm, state, ppid) of a process, or None if it is gone."""
    data = read_file(f"/proc/{pid}/stat")
    if not data:
        return None
    comm = data[data.index("(") + 1 : data.rindex(")")]
    fields = data[data.rindex(")") + 2 :].split()
    return comm, fields[0], int(fields[1])


def describe(pid: int) -> str:
    st = proc_stat(pid)
    return f"{pid} ({st[0] if st else '?'})"


def in_cgroups(pid: int, parents: tuple[str, ...]) -> bool:
    """Whether a process is in one of the cgroups ``parents`` (top-level names) or below them."""
    for line in (read_file(f"/proc/{pid}/cgroup") or "").splitlines():
        path = line.split(":", 2)[-1]
        if any(path == "/" + parent or path.startswith(f"/{parent}/") for parent in parents):
            return True
    return False


def uses_dir(pid: int, top: str) -> bool:
    """Whether a process names ``top`` on its command line or holds a file below it."""
    cmdline = (read_file(f"/proc/{pid}/cmdline") or "").replace("\0", " ")
    if top in cmdline:
        return True
    links = [f"/proc/{pid}/cwd", f"/proc/{pid}/root"]
    with contextlib.suppress(OSError):
        links += [f"/proc/{pid}/fd/{fd}" for fd in os.listdir(f"/proc/{pid}/fd")]
    for link in links:
        with contextlib.suppress(OSError):
            if os.readlink(link).startswith(top + "/"):
                return True
    return False


def our_processes(top: str, parents: tuple[str, ...]) -> list[int]:
    """Live processes a benchmark made: in its cgroups, or using its temporary directory."""
    found = []
    for pid in pids():
        if pid == os.getpid():
            continue
        st = proc_stat(pid)
        if st is None or st[1] in ("Z", "X"):  # a zombie holds no memory and cannot be killed
            continue
        if in_cgroups(pid, parents) or uses_dir(pid, top):
            found.append(pid)
    return found


def end_processes(top: str, parents: tuple[str, ...], log) -> None:
    """Wait up to 10 s for a benchmark's processes to leave by themselves, then kill what is left."""
    deadline = time.monotonic() + 10
    while our_processes(top, parents) and time.monotonic() < deadline:
        time.sleep(0.2)
    for _ in range(3):
        left = our_processes(top, parents)
        if not left:
            return
        log(f"killing leftover processes: {', '.join(describe(p) for p in left)}")
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.5)


# Mounts and cgroups -----------------------------------------------------------------


def mounts_below(top: str) -> list[str]:
    points = []
    for line in (read_file("/proc/self/mountinfo") or "").splitlines():
        point = line.split()[4].replace("\\040", " ").replace("\\011", "\t").replace("\\134", "\\")
        if point == top or point.startswith(top + "/"):
            points.append(point)
    return points


def unmount_below(top: str) -> None:
    for point in sorted(mounts_below(top), key=len, reverse=True):
        if subprocess.run(["umount", point], stderr=subprocess.DEVNULL).returncode != 0:
            subprocess.run(["umount", "-l", point], check=True)


def cgroups_below(parents: tuple[str, ...]) -> list[str]:
    """The cgroup directories of ``parents`` in every hierarchy, children first."""
    found = []
    for hierarchy in sorted(os.listdir(CGROUP_FS)):
        for parent in parents:
            top = os.path.join(CGROUP_FS, hierarchy, parent)
            if os.path.isdir(top):
                found += [d for d, _, _ in os.walk(top, topdown=False)]
    return found


def remove_cgroups(parents: tuple[str, ...]) -> None:
    for _ in range(5):
        left = []
        for directory in cgroups_below(parents):
            try:
                os.rmdir(directory)
            except OSError:
                left.append(directory)
        if not left:
            return
        for directory in left:
            for pid in (read_file(os.path.join(directory, "cgroup.procs")) or "").split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
        time.sleep(0.5)
    raise RuntimeError(f"cgroups still there: {', '.join(cgroups_below(parents))}")


def cgroup_mode() -> str:
    if os.path.exists(os.path.join(CGROUP_FS, "cgroup.controllers")):
        return "cgroup v2 (unified)"
    unified = os.path.join(CGROUP_FS, "unified")
    if os.path.exists(os.path.join(unified, "cgroup.controllers")):
        controllers = (read_file(os.path.join(unified, "cgroup.controllers")) or "").split()
        inside = f"controllers: {' '.join(controllers)}" if controllers else "no controllers"
        return f"cgroup v1-hybrid (v1 controllers; v2 at {unified} with {inside})"
    return "cgroup v1"


# Podman ----------------------------------------------------------------------------


def write_podman_config(podman_dir: str, containers_conf: str, storage_conf: str) -> None:
    """A containers.conf and storage.conf keeping podman in ``podman_dir`` (cgroupfs, no network)."""

    def q(path: str) -> str:
        return json.dumps(path)

    tmpdir = os.path.join(podman_dir, "tmp")
    os.makedirs(tmpdir, exist_ok=True)
    with open(containers_conf, "w", encoding="utf-8") as f:
        f.write(
            "[containers]\n"
            'netns = "none"\n'
            'default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]\n'
            "\n[engine]\n"
            'cgroup_manager = "cgroupfs"\n'
            'events_logger = "file"\n'
            'runtime = "runc"\n'
            f"tmp_dir = {q(tmpdir)}\n"
            f"image_copy_tmp_dir = {q(tmpdir)}\n"
            "\n[network]\n"
            f"network_config_dir = {q(os.path.join(podman_dir, 'networks'))}\n"
        )
    with open(storage_conf, "w", encoding="utf-8") as f:
        f.write(
            "[storage]\n"
            'driver = "overlay"\n'
            f"graphroot = {q(os.path.join(podman_dir, 'root'))}\n"
            f"runroot = {q(os.path.join(podman_dir, 'runroot'))}\n"
        )


# The report ------------------------------------------------------------------------


def write_section(path: str, text: str, begin: str, end: str) -> None:
    """Write a report to ``path``: between its ``begin`` and ``end`` markers if it has them, else whole."""
    section = f"{begin}\n{text}{end}\n"
    old = read_file(path)
    if old and begin in old and end in old:
        head, rest = old.split(begin, 1)
        tail = rest.split(end, 1)[1].lstrip("\n")
        new = head + section + ("\n" + tail if tail else "")
    else:
        new = text
    with open(path, "w", encoding="utf-8") as f:
        f.write(new)
