"""Control groups for hako containers: one interface, one driver per kernel interface.

``open_cgroup(name)`` finds out how the host mounts cgroups and returns a
:class:`Cgroup` backed by cgroup v1 (one hierarchy per controller, see
``v1.py``) or cgroup v2 (one unified tree, see ``v2.py``). Limits are given in
the shape of the OCI runtime spec's ``linux.resources``, so the runtime can
pass ``config.json`` values through unchanged. Every value written is read
back, because the kernel may clamp or round a value without failing the
write, and a limit that silently differs from the one asked for is worse
than an error.

This package sits on the start-up path of ``hako run``: the drivers are
imported only when a cgroup is opened, :class:`Stats` only when it is used,
and no module is imported for type annotations alone.
"""

from __future__ import annotations

import abc
import errno
import os
import time

from ..errors import HakoError, InvalidValue

TYPE_CHECKING = False  # typing costs an import on the hot path
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping
    from typing import Any

    from ._stats import Stats

__all__ = [
    "DEFAULT_ROOT",
    "Cgroup",
    "CgroupError",
    "Stats",
    "detect_mode",
    "detect_mode_from_mountinfo",
    "open_cgroup",
    "parse_cpu_list",
    "parse_keyed",
    "shares_to_weight",
    "v1_hierarchies_from_mountinfo",
    "weight_to_shares",
]

DEFAULT_ROOT = "/sys/fs/cgroup"
MODES = ("unified", "hybrid", "legacy")

# The v1 controllers hako places a container in. Named hierarchies such as
# name=systemd and controllers hako never limits (net_cls, perf_event, ...)
# are left alone.
V1_CONTROLLERS = ("cpu", "cpuacct", "cpuset", "memory", "pids", "freezer", "devices", "blkio")

# The v2 controllers hako enables for its cgroups.
V2_CONTROLLERS = ("cpu", "cpuset", "memory", "pids")

# The controller each supported OCI linux.resources key needs.
RESOURCE_CONTROLLERS = {
    ("memory", "limit"): "memory",
    ("memory", "swap"): "memory",
    ("cpu", "shares"): "cpu",
    ("cpu", "quota"): "cpu",
    ("cpu", "period"): "cpu",
    ("cpu", "cpus"): "cpuset",
    ("cpu", "mems"): "cpuset",
    ("pids", "limit"): "pids",
}
_STRING_KEYS = (("cpu", "cpus"), ("cpu", "mems"))

SIGKILL = 9  # os.kill takes ints; importing signal would pull in enum (~5 ms)

FREEZE_TIMEOUT = 5.0
KILL_TIMEOUT = 5.0
RMDIR_TIMEOUT = 2.0

# Memory limits at or above this are the kernel's "no limit" (v1 reports
# PAGE_COUNTER_MAX pages, 9223372036854771712 with 4 KiB pages).
_UNLIMITED_FLOOR = 1 << 62


class CgroupError(HakoError):
    """The kernel refused a cgroup operation, or a value did not hold.

    ``path`` is the file or directory concerned, when there is one.
    """

    def __init__(self, message: str, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


def __getattr__(name: str) -> Any:
    # Stats lives in its own module, imported when first used.
    if name == "Stats":
        from ._stats import Stats

        return Stats
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --------------------------------------------------------------------------
# Pure helpers (no file access; unit-tested on sample text)


def shares_to_weight(shares: int) -> int:
    """Convert v1 ``cpu.shares`` (2..262144) to v2 ``cpu.weight`` (1..10000).

    This is the mapping runc, crun and systemd use, so a ``--cpu-shares``
    value means the same under every runtime.
    """
    weight = 1 + ((shares - 2) * 9999) // 262142
    return min(max(weight, 1), 10000)


def weight_to_shares(weight: int) -> int:
    """The smallest ``cpu.shares`` value that ``shares_to_weight`` maps to ``weight``.

    The forward mapping is many-to-one, so the original shares cannot be
    recovered; this choice makes ``shares_to_weight(weight_to_shares(w)) == w``,
    which is what comparing a desired limit with a read-back one needs.
    """
    weight = min(max(weight, 1), 10000)
    # ceiling division without floats
    return 2 + -(-(weight - 1) * 262142 // 9999)


def parse_keyed(text: str) -> dict[str, int]:
    """Parse the ``key value`` lines of cpu.stat, memory.stat, memory.events,
    memory.oom_control and cgroup.events; lines of any other shape are skipped."""
    values: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2:
            try:
                values[parts[0]] = int(parts[1])
            except ValueError:
                pass
    return values


def _is_number(text: str) -> bool:
    # int() would also take " 1", "+1" and "1_0", which no kernel list has
    return text.isascii() and text.isdigit()


def parse_cpu_list(text: str) -> tuple[tuple[int, int], ...]:
    """Parse a kernel CPU or memory-node list such as ``"0-3,5"`` into merged ranges.

    Two lists that select the same CPUs give the same result (``"0,1"`` and
    ``"0-1"`` both give ``((0, 1),)``), which is how a written cpuset is
    compared with the kernel's canonical read-back. Raises ``ValueError``.
    """
    ranges = []
    for part in text.strip().split(","):
        part = part.strip()
        if not part:
            continue
        low, dash, high = part.partition("-")
        if not _is_number(low) or (dash and not _is_number(high)):
            raise ValueError(f"not a CPU list: {text!r}")
        first = int(low)
        last = int(high) if dash else first
        if last < first:
            raise ValueError(f"not a CPU list: {text!r}")
        ranges.append((first, last))
    ranges.sort()
    merged: list[tuple[int, int]] = []
    for first, last in ranges:
        if merged and first <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], last))
        else:
            merged.append((first, last))
    return tuple(merged)


def _parse_limit(text: str) -> int:
    """A limit as the kernel prints it ("max", -1 or a huge number for none) -> int, -1 = none."""
    text = text.strip()
    if text == "max":
        return -1
    value = int(text)
    return -1 if value >= _UNLIMITED_FLOOR else value


def _unescape(field: str) -> str:
    # mountinfo writes space, tab, newline and backslash in paths as \ooo
    if "\\" not in field:
        return field
    out = []
    i = 0
    while i < len(field):
        digits = field[i + 1 : i + 4]
        if field[i] == "\\" and len(digits) == 3 and all(c in "01234567" for c in digits):
            out.append(chr(int(digits, 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def parse_mountinfo(text: str) -> list[tuple[str, str, tuple[str, ...]]]:
    """Parse /proc/self/mountinfo into (mount point, fs type, super options), in order."""
    mounts = []
    for line in text.splitlines():
        fields = line.split(" ")
        try:
            # optional fields come between field 6 and the "-" separator
            sep = fields.index("-", 6)
        except ValueError:
            continue
        if len(fields) < sep + 2:
            continue
        options = tuple(fields[sep + 3].split(",")) if len(fields) > sep + 3 else ()
        mounts.append((_unescape(fields[4]), fields[sep + 1], options))
    return mounts


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _visible_cgroup_mounts(text: str, root: str) -> list[tuple[str, str, tuple[str, ...]]]:
    """The cgroup and cgroup2 mounts at or below ``root`` that nothing mounted later hides."""
    root = os.path.normpath(root)
    visible: dict[str, tuple[str, tuple[str, ...]]] = {}
    for mountpoint, fstype, options in parse_mountinfo(text):
        if mountpoint != "/":
            # a later mount at or above a cgroup mount point hides that mount
            for hidden in [m for m in visible if _under(m, mountpoint)]:
                del visible[hidden]
        if fstype in ("cgroup", "cgroup2") and _under(mountpoint, root):
            visible[mountpoint] = (fstype, options)
    return [(m, fstype, options) for m, (fstype, options) in visible.items()]


def detect_mode_from_mountinfo(text: str, root: str = DEFAULT_ROOT) -> str | None:
    """The cgroup mode that mountinfo ``text`` shows for ``root``, or None if it shows none.

    "unified": cgroup2 is mounted at root. "hybrid": v1 hierarchies below root
    and cgroup2 at root/unified. "legacy": v1 hierarchies only.
    """
    root = os.path.normpath(root)
    v1_found = v2_unified = False
    for mountpoint, fstype, _options in _visible_cgroup_mounts(text, root):
        if fstype == "cgroup2":
            if mountpoint == root:
                return "unified"
            if mountpoint == os.path.join(root, "unified"):
                v2_unified = True
        else:
            v1_found = True
    if v1_found:
        return "hybrid" if v2_unified else "legacy"
    return None


def v1_hierarchies_from_mountinfo(text: str, root: str = DEFAULT_ROOT) -> dict[str, str]:
    """Map each mounted v1 controller hako uses to its hierarchy's mount point.

    Co-mounted controllers ("cpu,cpuacct") map to the same mount point, which
    is how the driver knows to create their directory only once.
    """
    hierarchies: dict[str, str] = {}
    for mountpoint, fstype, options in _visible_cgroup_mounts(text, root):
        if fstype != "cgroup":
            continue
        for option in options:
            if option in V1_CONTROLLERS:
                hierarchies.setdefault(option, mountpoint)
    return hierarchies


# --------------------------------------------------------------------------
# Probing the host


def _mountinfo() -> str:
    try:
        return _read("/proc/self/mountinfo")
    except OSError:
        return ""


def detect_mode(root: str = DEFAULT_ROOT) -> str:
    """Return "unified", "hybrid" or "legacy" for the cgroup mounts at ``root``.

    The mount table decides for a real cgroup mount. A ``root`` that the
    mount table does not know (a directory tree imitating one, in tests) is
    judged by its files: cgroup.controllers at the top means unified; v1
    hierarchy directories mean legacy, or hybrid beside a "unified" one.
    """
    real = os.path.realpath(root)
    mode = detect_mode_from_mountinfo(_mountinfo(), real)
    if mode is not None:
        return mode
    if os.path.isfile(os.path.join(real, "cgroup.controllers")):
        return "unified"
    if _v1_hierarchies_from_dirs(real):
        if os.path.isfile(os.path.join(real, "unified", "cgroup.controllers")):
            return "hybrid"
        return "legacy"
    raise CgroupError(f"cgroup: no cgroup filesystem is mounted at {root}", root)


def _v1_hierarchies_from_dirs(root: str) -> dict[str, str]:
    # Each subdirectory is one hierarchy named after its controllers
    # ("memory", "cpu,cpuacct"); symlinks to a co-mounted one ("cpu") resolve
    # to the same real directory, so nothing is counted twice.
    hierarchies: dict[str, str] = {}
    try:
        names = sorted(os.listdir(root))
    except OSError:
        return hierarchies
    for entry in names:
        path = os.path.join(root, entry)
        if not os.path.isdir(path):
            continue
        for controller in entry.split(","):
            if controller in V1_CONTROLLERS:
                hierarchies.setdefault(controller, os.path.realpath(path))
    return hierarchies


def find_v1_hierarchies(root: str = DEFAULT_ROOT) -> dict[str, str]:
    """Controller -> mount directory of every v1 hierarchy hako uses under ``root``.

    Read from /proc/self/mountinfo (the fs type and super options say what
    is really mounted, whatever the directories are called); for a ``root``
    that holds no cgroup mount, each subdirectory counts as one hierarchy.
    """
    real = os.path.realpath(root)
    text = _mountinfo()
    if _visible_cgroup_mounts(text, real):
        # A long-lived process (the supervisor) opens a cgroup per start:
        # parse the same mount table once.
        key = (real, text)
        if key not in _HIERARCHY_CACHE:
            _HIERARCHY_CACHE.clear()
            _HIERARCHY_CACHE[key] = v1_hierarchies_from_mountinfo(text, real)
        return dict(_HIERARCHY_CACHE[key])
    return _v1_hierarchies_from_dirs(real)


_HIERARCHY_CACHE: dict[tuple[str, str], dict[str, str]] = {}


def open_cgroup(name: str, mode: str | None = None, root: str = DEFAULT_ROOT) -> Cgroup:
    """Return the driver for cgroup ``name`` (relative to ``root``, e.g. "hako/<id>").

    ``mode`` is what :func:`detect_mode` returns; None probes the host.
    Nothing is created: call :meth:`Cgroup.create` for that.
    """
    if mode is None:
        mode = detect_mode(root)
    if mode == "unified":
        from .v2 import V2Cgroup

        return V2Cgroup(root, name)
    if mode in ("hybrid", "legacy"):
        from .v1 import V1Cgroup

        return V1Cgroup(root, name)
    raise InvalidValue("cgroup mode", mode, "expected unified, hybrid or legacy")


# --------------------------------------------------------------------------
# File access


def _read(path: str) -> str:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = []
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks).decode("utf-8", "replace")


def _write(path: str, value: str) -> None:
    # One write(2) call: cgroup files parse each write as a whole value.
    # No O_CREAT, so a missing controller file is an error, not a new file.
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def _read_optional(path: str) -> str | None:
    """The file's text, or None if it does not exist (a feature this kernel lacks)."""
    try:
        return _read(path)
    except FileNotFoundError:
        return None


def _wait_until(predicate: Callable[[], bool], timeout: float) -> bool:
    """Poll ``predicate`` with a growing interval until it holds or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    delay = 0.001
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def _rmdir_tree(path: str) -> None:
    """Remove a cgroup directory and any cgroups nested in it, deepest first."""
    try:
        subdirs = [e.path for e in os.scandir(path) if e.is_dir(follow_symlinks=False)]
    except FileNotFoundError:
        return
    except OSError as err:
        raise CgroupError(f"cgroup: cannot list {path}: {err.strerror}", path) from None
    for subdir in subdirs:
        _rmdir_tree(subdir)
    # The kernel keeps a cgroup busy for a moment after its last task exits.
    deadline = time.monotonic() + RMDIR_TIMEOUT
    delay = 0.005
    while True:
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError as err:
            if err.errno != errno.EBUSY or time.monotonic() >= deadline:
                raise CgroupError(f"cgroup: cannot remove {path}: {err.strerror}", path) from None
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def _pids_in(directory: str) -> set[int]:
    text = _read_optional(os.path.join(directory, "cgroup.procs"))
    if not text:
        return set()
    return {int(line) for line in text.split()}


def _pids_in_tree(directory: str) -> set[int]:
    pids = _pids_in(directory)
    try:
        subdirs = [e.path for e in os.scandir(directory) if e.is_dir(follow_symlinks=False)]
    except OSError:
        return pids
    for subdir in subdirs:
        pids |= _pids_in_tree(subdir)
    return pids


# --------------------------------------------------------------------------
# Input checking


def _check_name(name: object) -> str:
    if not isinstance(name, str) or not name:
        raise InvalidValue("cgroup name", name, "expected a relative path such as hako/<id>")
    if name.startswith("/") or "\0" in name:
        raise InvalidValue("cgroup name", name, "must be a relative path")
    if any(part in ("", ".", "..") for part in name.split("/")):
        raise InvalidValue("cgroup name", name, "empty, '.' and '..' components are not allowed")
    return name


def normalize_resources(resources: object) -> dict[str, dict[str, Any]]:
    """Check an OCI ``linux.resources`` mapping and keep the keys hako applies.

    Keys set to None count as absent. Devices are checked by
    ``normalize_devices``; other top-level keys (blockIO, hugepageLimits,
    ...) belong to other parts of the runtime and are ignored; an
    unsupported key inside memory, cpu or pids is refused rather than
    silently dropped, so nobody believes a limit holds that does not.
    """
    if not isinstance(resources, dict):
        raise InvalidValue("linux.resources", resources, "expected a mapping")
    wanted: dict[str, dict[str, Any]] = {}
    for section in ("memory", "cpu", "pids"):
        given = resources.get(section)
        if given is None:
            continue
        field = f"linux.resources.{section}"
        if not isinstance(given, dict):
            raise InvalidValue(field, given, "expected a mapping")
        for key, value in given.items():
            if value is None:
                continue
            if (section, key) not in RESOURCE_CONTROLLERS:
                raise InvalidValue(f"{field}.{key}", value, "not supported by hako")
            if (section, key) in _STRING_KEYS:
                if not isinstance(value, str):
                    raise InvalidValue(f"{field}.{key}", value, "expected a list such as 0-1,3")
                try:
                    parse_cpu_list(value)
                except ValueError:
                    raise InvalidValue(f"{field}.{key}", value, "expected a list such as 0-1,3") from None
            elif not isinstance(value, int) or isinstance(value, bool):
                raise InvalidValue(f"{field}.{key}", value, "expected an integer")
            elif value < -1 and (section, key) != ("pids", "limit"):
                raise InvalidValue(f"{field}.{key}", value, "expected -1 (unlimited) or more")
            wanted.setdefault(section, {})[key] = value
    return wanted


DEVICE_TYPES = ("a", "b", "c")


def normalize_devices(rules: object) -> list[dict[str, Any]]:
    """Check OCI ``linux.resources.devices`` rules; each comes back with every key.

    {"allow": bool, "type": "a"|"b"|"c", "major": int|None, "minor": int|None,
    "access": "rwm" in that order}: a missing type is "a" (any), a missing
    (or -1) major or minor any number, a missing access "rwm". Later rules
    override earlier ones.
    """
    field = "linux.resources.devices"
    if not isinstance(rules, list):
        raise InvalidValue(field, rules, "expected a list of rules")
    checked = []
    for rule in rules:
        if not isinstance(rule, dict) or not isinstance(rule.get("allow"), bool):
            raise InvalidValue(field, rule, "each rule needs allow: true or false")
        kind = rule.get("type") or "a"
        if kind not in DEVICE_TYPES:
            raise InvalidValue(f"{field}.type", kind, "expected a (all), b (block) or c (char)")
        numbers = {}
        for key, top in (("major", 1 << 12), ("minor", 1 << 20)):
            value = rule.get(key)
            if value is None or value == -1:
                numbers[key] = None
            elif isinstance(value, int) and not isinstance(value, bool) and 0 <= value < top:
                numbers[key] = value
            else:
                raise InvalidValue(f"{field}.{key}", value, f"expected -1 (any) or 0 to {top - 1}")
        access = rule.get("access") or "rwm"
        if not isinstance(access, str) or not set(access) <= set("rwm"):
            raise InvalidValue(f"{field}.access", access, "expected letters of r, w and m")
        access = "".join(c for c in "rwm" if c in access)
        checked.append({"allow": rule["allow"], "type": kind, **numbers, "access": access})
    return checked


def check_swap(swap: int, limit: int) -> None:
    """Refuse a memory+swap limit the kernel could not honour next to ``limit``.

    OCI's memory.swap is memory plus swap (Docker's --memory-swap), so it
    cannot be below the memory limit, and it means nothing without one.
    """
    if swap == -1:
        return
    if limit == -1:
        raise InvalidValue("linux.resources.memory.swap", swap, "a swap limit needs a memory limit")
    if swap < limit:
        raise InvalidValue(
            "linux.resources.memory.swap",
            swap,
            f"memory+swap must be -1 or at least the memory limit ({limit})",
        )


# --------------------------------------------------------------------------
# The interface


class Cgroup(abc.ABC):
    """One container's cgroup, in every hierarchy the host's cgroup version uses.

    ``name`` is relative to the cgroup mount (``root``), e.g. "hako/<id>".
    Creating an object touches nothing; :meth:`create` makes the directories.
    """

    version: int = 0

    def __init__(self, root: str, name: str) -> None:
        self.root = root
        self.name = _check_name(name)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.root!r}, {self.name!r})"

    # --- file helpers turning OSError into one-line CgroupErrors

    @staticmethod
    def _get(path: str) -> str:
        try:
            return _read(path)
        except OSError as err:
            raise CgroupError(f"cgroup: cannot read {path}: {err.strerror}", path) from None

    @staticmethod
    def _put(path: str, value: str) -> None:
        try:
            _write(path, value)
        except OSError as err:
            name = os.path.basename(path)
            if err.errno == errno.ENOENT:
                raise CgroupError(
                    f"cgroup: cannot write {name}={value}: {path} does not exist", path
                ) from None
            raise CgroupError(f"cgroup: kernel refused {name}={value}: {err.strerror}", path) from None

    def _set(self, path: str, value: str, same: Callable[[str], bool] | None = None) -> None:
        """Write ``value`` and read it back; ``same`` judges the read-back text
        (default: equal to ``value`` once stripped)."""
        self._put(path, value)
        got = self._get(path).strip()
        if not (same(got) if same is not None else got == value):
            raise CgroupError(
                f"cgroup: {os.path.basename(path)}={value} did not hold: the kernel reports {got!r}",
                path,
            )

    def _set_memory(self, path: str, value: int, unlimited: str) -> None:
        # The kernel keeps whole pages, so a limit reads back rounded down.
        page = os.sysconf("SC_PAGE_SIZE")
        expect = -1 if value == -1 else value - value % page
        self._set(path, unlimited if value == -1 else str(value), lambda t: _parse_limit(t) == expect)

    def _set_cpu_list(self, path: str, value: str) -> None:
        want = parse_cpu_list(value)
        self._set(path, value, lambda t: parse_cpu_list(t) == want)

    # --- the operations

    @abc.abstractmethod
    def create(self) -> None:
        """Make the cgroup (and missing parents) in every hierarchy; fine if it exists."""

    @abc.abstractmethod
    def exists(self) -> bool:
        """True if the cgroup's directory exists (in any hierarchy, for v1)."""

    def apply(self, resources: Mapping[str, Any]) -> None:
        """Write the limits in ``resources`` (OCI ``linux.resources`` shape).

        Only keys present are written; -1 means unlimited. Every value is
        read back. ``devices`` (rules, see normalize_devices) replace the
        device rules in force; without it they are left as they are.
        Raises :class:`CgroupError` naming the file and value when
        the kernel refuses a write or reports a different value, and naming
        the controller when the host lacks it (checked before anything is
        written). Raises ``InvalidValue`` for malformed input.
        """
        wanted = normalize_resources(resources)
        devices = resources.get("devices")
        rules = None if devices is None else normalize_devices(devices)
        needed = []
        for section, values in wanted.items():
            for key in values:
                controller = RESOURCE_CONTROLLERS[(section, key)]
                if controller not in needed:
                    needed.append(controller)
        if rules is not None and self.device_controller:
            needed.append(self.device_controller)
        self._require(needed)
        self._apply(wanted)
        if rules is not None:
            self._apply_devices(rules)

    @abc.abstractmethod
    def _require(self, controllers: Iterable[str]) -> None:
        """Raise CgroupError naming the first controller the host lacks."""

    @abc.abstractmethod
    def _apply(self, wanted: dict[str, dict[str, Any]]) -> None:
        """Write checked resources."""

    # The controller device rules need (None: they need none, as on v2).
    device_controller: str | None = None

    @abc.abstractmethod
    def _apply_devices(self, rules: list[dict[str, Any]]) -> None:
        """Replace the device rules with checked ones (see normalize_devices)."""

    @abc.abstractmethod
    def read_devices(self) -> list[dict[str, Any]] | None:
        """The device rules in force, as normalize_devices gives them; None if unknown."""

    @abc.abstractmethod
    def read_resources(self) -> dict[str, dict[str, Any]]:
        """The limits in force, in the shape ``apply`` takes (-1 = unlimited).

        Sections for controllers the host lacks are left out.
        """

    @abc.abstractmethod
    def add_process(self, pid: int) -> None:
        """Move process ``pid`` (all its threads) into the cgroup, in every hierarchy."""

    @abc.abstractmethod
    def procs(self) -> list[int]:
        """The pids in the cgroup itself (not in nested cgroups), sorted."""

    @abc.abstractmethod
    def stats(self) -> Stats:
        """Usage counters; fields for controllers the host lacks keep their defaults."""

    @abc.abstractmethod
    def freeze(self) -> None:
        """Freeze every process and wait (at most ~5 s) until the kernel reports it frozen."""

    @abc.abstractmethod
    def thaw(self) -> None:
        """Let frozen processes run again."""

    @abc.abstractmethod
    def frozen(self) -> bool:
        """True if the kernel reports the cgroup frozen."""

    @abc.abstractmethod
    def paths(self) -> dict[str, str]:
        """Controller (or "unified") -> absolute directory of this cgroup."""

    @abc.abstractmethod
    def _dirs(self) -> list[str]:
        """This cgroup's directory in each hierarchy, once each."""

    def _tree_pids(self) -> set[int]:
        """Pids in the cgroup and in any cgroup nested in it, in every hierarchy."""
        pids: set[int] = set()
        for directory in self._dirs():
            pids |= _pids_in_tree(directory)
        pids.discard(os.getpid())  # never signal or wait for the caller itself
        return pids

    def _can_freeze(self, signum: int) -> bool:
        """Whether kill_all should freeze the cgroup while it signals."""
        return False

    def kill_all(self, signum: int = SIGKILL) -> None:
        """Send ``signum`` to every process in the cgroup and the cgroups nested in it.

        The cgroup is frozen while the signals go out, where the driver can,
        so that a process forking in a loop cannot outrun them. For SIGKILL
        this repeats until the cgroup is empty (bounded; CgroupError if
        processes survive) and leaves the cgroup thawed; other signals are
        sent once and a cgroup that was frozen stays frozen.
        """
        deadline = time.monotonic() + KILL_TIMEOUT
        while True:
            pids = self._tree_pids()
            if not pids:
                return
            froze = False
            if self._can_freeze(signum) and not self.frozen():
                try:
                    self.freeze()
                    froze = True
                except CgroupError:
                    pass  # freeze() has thawed again; signal the running processes anyway
                pids = self._tree_pids()  # forks that raced the freeze are included now
            for pid in pids:
                try:
                    os.kill(pid, signum)
                except ProcessLookupError:
                    pass
            # A killed task that is frozen may not die until it is thawed.
            if froze or (signum == SIGKILL and self._can_freeze(signum) and self.frozen()):
                self.thaw()
            if signum != SIGKILL:
                return
            if _wait_until(lambda: not self._tree_pids(), 0.5):
                return
            if time.monotonic() >= deadline:
                left = sorted(self._tree_pids())
                raise CgroupError(
                    f"cgroup: processes {left} in {self.name} survived SIGKILL", self._dirs()[0]
                )

    # cgroup v1 directories can be renamed; cgroup v2 refuses (EPERM).
    can_rename = True

    @abc.abstractmethod
    def _with_name(self, name: str) -> Cgroup:
        """The same kind of cgroup, in the same hierarchies, under another name."""

    def rename(self, name: str) -> Cgroup:
        """Rename this cgroup (processes and limits stay) and return it under its new name.

        Renaming is how a process placed in a cgroup ahead of time becomes a
        container's: it costs no migration. The new name must share the
        parent. On failure, directories already renamed are renamed back.
        """
        if not self.can_rename:
            raise CgroupError(f"cgroup: cgroup v{self.version} cannot rename {self.name}")
        renamed = self._with_name(name)
        done: list[tuple[str, str]] = []
        try:
            for old, new in zip(self._dirs(), renamed._dirs()):
                os.rename(old, new)
                done.append((old, new))
        except OSError as err:
            for old, new in reversed(done):
                os.rename(new, old)
            raise CgroupError(f"cgroup: cannot rename {self.name} to {name}: {err.strerror}") from None
        return renamed

    def remove(self) -> None:
        """Kill what runs in the cgroup and remove its directories (nested cgroups too).

        Missing directories are fine; the parent ("hako") stays.
        """
        self.kill_all(SIGKILL)
        for directory in self._dirs():
            _rmdir_tree(directory)
