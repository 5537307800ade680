"""The cgroup v1 driver: one directory per hierarchy (memory, cpu, pids, ...).

Used on "legacy" hosts and on "hybrid" ones, where the v1 hierarchies hold
every controller and the cgroup2 mount at root/unified holds none.
"""

from __future__ import annotations

import os

from . import (
    FREEZE_TIMEOUT,
    Cgroup,
    CgroupError,
    _parse_limit,
    _pids_in,
    _read_optional,
    _wait_until,
    _write,
    check_swap,
    find_v1_hierarchies,
    parse_keyed,
)

TYPE_CHECKING = False  # typing costs an import on the hot path
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping
    from typing import Any
if TYPE_CHECKING:
    from ._stats import Stats


def _number(value: int | None) -> str:
    return "*" if value is None else str(value)


def device_writes(rules: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(file, line) writes that put checked device rules in force, in order.

    The rules replace those in force: the writes begin with a reset ("a" to
    devices.allow, or to devices.deny from the last catch-all rule on). The
    kernel takes one rule per write, and "a" only for all devices at once,
    so any other rule for type "a" becomes one for "b" and one for "c".
    """
    from .ebpf import is_catch_all

    start, allow = 0, True
    for index, rule in enumerate(rules):
        if is_catch_all(rule):
            start, allow = index + 1, rule["allow"]
    writes = [("devices.allow" if allow else "devices.deny", "a")]
    for rule in rules[start:]:
        target = "devices.allow" if rule["allow"] else "devices.deny"
        numbers = f"{_number(rule['major'])}:{_number(rule['minor'])}"
        for kind in ("b", "c") if rule["type"] == "a" else (rule["type"],):
            writes.append((target, f"{kind} {numbers} {rule['access']}"))
    return writes


def expected_device_list(writes: list[tuple[str, str]]) -> set[str]:
    """What devices.list shows after ``writes`` (see device_writes), as the kernel keeps it.

    With everything allowed it shows "a *:* rwm" alone; otherwise one line per
    allowed type and numbers, access merged (a deny takes access away from
    the exact same entry only).
    """
    allow_all = True
    granted: dict[str, set[str]] = {}
    for target, line in writes:
        if line == "a":
            allow_all, granted = target == "devices.allow", {}
            continue
        key, _, access = line.rpartition(" ")
        if allow_all:
            continue  # exceptions to allow-all are not listed
        if target == "devices.allow":
            granted.setdefault(key, set()).update(access)
        elif key in granted:
            granted[key] -= set(access)
            if not granted[key]:
                del granted[key]
    if allow_all:
        return {"a *:* rwm"}
    return {f"{key} {''.join(c for c in 'rwm' if c in access)}" for key, access in granted.items()}


def parse_device_list(text: str) -> list[dict[str, Any]]:
    """devices.list -> rules (a deny-all first unless everything is allowed)."""
    lines = [line.split() for line in text.splitlines() if line.strip()]
    rules = []
    for kind, numbers, access in lines:
        major, _, minor = numbers.partition(":")
        rules.append(
            {
                "allow": True,
                "type": kind,
                "major": None if major == "*" else int(major),
                "minor": None if minor == "*" else int(minor),
                "access": access,
            }
        )
    if rules[:1] == [{"allow": True, "type": "a", "major": None, "minor": None, "access": "rwm"}]:
        return rules[:1]
    return [{"allow": False, "type": "a", "major": None, "minor": None, "access": "rwm"}, *rules]


class V1Cgroup(Cgroup):
    """A cgroup in each mounted v1 hierarchy hako uses.

    ``hierarchies`` (controller -> mount directory) overrides what is found
    under ``root``; co-mounted controllers share one directory and it is
    created, filled and removed once.
    """

    version = 1

    def __init__(self, root: str, name: str, hierarchies: Mapping[str, str] | None = None) -> None:
        super().__init__(root, name)
        if hierarchies is None:
            hierarchies = find_v1_hierarchies(root)
        self._mounts = dict(hierarchies)
        self._by_controller = {c: os.path.join(m, self.name) for c, m in hierarchies.items()}
        grouped: dict[str, list[str]] = {}
        for controller, mount in hierarchies.items():
            grouped.setdefault(mount, []).append(controller)
        # (mount directory, controllers in that hierarchy), once per hierarchy
        self._hierarchies = [(mount, tuple(ctrls)) for mount, ctrls in grouped.items()]

    def _dirs(self) -> list[str]:
        return [os.path.join(mount, self.name) for mount, _ctrls in self._hierarchies]

    def _with_name(self, name: str) -> V1Cgroup:
        return V1Cgroup(self.root, name, self._mounts)

    def _file(self, controller: str, filename: str) -> str:
        directory = self._by_controller.get(controller)
        if directory is None:
            raise CgroupError(
                f"cgroup: the {controller} controller is not available on this host "
                f"(no v1 hierarchy for it under {self.root})"
            )
        return os.path.join(directory, filename)

    def _require(self, controllers: Iterable[str]) -> None:
        for controller in controllers:
            self._file(controller, "")

    # --- life cycle

    def create(self) -> None:
        """Make the cgroup in every hierarchy, parents included; fine if it exists.

        A new v1 cpuset cgroup starts with no CPUs and no memory nodes, and
        the kernel refuses to add a process to it, so each empty level gets
        its parent's. If anything fails, the directories made here are
        removed again.
        """
        made: list[str] = []
        try:
            for mount, controllers in self._hierarchies:
                path = mount
                for part in self.name.split("/"):
                    path = os.path.join(path, part)
                    try:
                        os.mkdir(path, 0o755)
                        made.append(path)
                    except FileExistsError:
                        pass
                    except OSError as err:
                        raise CgroupError(f"cgroup: cannot create {path}: {err.strerror}", path) from None
                    if "cpuset" in controllers:
                        self._seed_cpuset(path)
        except BaseException:
            for path in reversed(made):
                try:
                    os.rmdir(path)
                except OSError:
                    pass
            raise

    def _seed_cpuset(self, path: str) -> None:
        parent = os.path.dirname(path)
        for filename in ("cpuset.cpus", "cpuset.mems"):
            own = os.path.join(path, filename)
            if self._get(own).strip():
                continue
            self._set_cpu_list(own, self._get(os.path.join(parent, filename)).strip())

    def exists(self) -> bool:
        """True if the cgroup's directory exists in any of its hierarchies."""
        return any(os.path.isdir(d) for d in self._dirs())

    def add_process(self, pid: int) -> None:
        """Move ``pid`` into the cgroup in every hierarchy."""
        for directory in self._dirs():
            try:
                _write(os.path.join(directory, "cgroup.procs"), str(pid))
            except OSError as err:
                raise CgroupError(
                    f"cgroup: cannot move process {pid} into {directory}: {err.strerror}",
                    directory,
                ) from None

    def procs(self) -> list[int]:
        """Pids in the cgroup in any of its hierarchies, sorted."""
        pids: set[int] = set()
        for directory in self._dirs():
            pids |= _pids_in(directory)
        return sorted(pids)

    def paths(self) -> dict[str, str]:
        """Controller -> this cgroup's directory (co-mounted controllers share one)."""
        return dict(sorted(self._by_controller.items()))

    # --- limits

    def _apply(self, wanted: dict[str, dict[str, Any]]) -> None:
        cpu = wanted.get("cpu", {})
        for key in ("mems", "cpus"):
            if key in cpu:
                self._set_cpu_list(self._file("cpuset", f"cpuset.{key}"), cpu[key])
        if "memory" in wanted:
            self._apply_memory(wanted["memory"])
        if "shares" in cpu:
            self._set(self._file("cpu", "cpu.shares"), str(cpu["shares"]))
        self._apply_bandwidth(cpu.get("quota"), cpu.get("period"))
        if "pids" in wanted:
            limit = wanted["pids"]["limit"]
            self._set(self._file("pids", "pids.max"), "max" if limit <= 0 else str(limit))

    device_controller = "devices"

    def _apply_devices(self, rules: list[dict[str, Any]]) -> None:
        writes = device_writes(rules)
        for filename, line in writes:
            self._put(self._file("devices", filename), line)
        list_file = self._file("devices", "devices.list")
        got = {line for line in self._get(list_file).splitlines() if line}
        want = expected_device_list(writes)
        if got != want:
            raise CgroupError(
                f"cgroup: the device rules did not hold: devices.list shows {', '.join(sorted(got))}, "
                f"not {', '.join(sorted(want))}",
                list_file,
            )

    def read_devices(self) -> list[dict[str, Any]] | None:
        if "devices" not in self._by_controller:
            return None
        return parse_device_list(self._get(self._file("devices", "devices.list")))

    def _apply_memory(self, memory: dict[str, int]) -> None:
        limit_file = self._file("memory", "memory.limit_in_bytes")
        memsw_file = self._file("memory", "memory.memsw.limit_in_bytes")
        limit = memory.get("limit")
        swap = memory.get("swap")
        has_memsw = os.path.exists(memsw_file)
        if not has_memsw:
            # No swap accounting in this kernel: like Docker, limit memory alone.
            swap = None
        elif limit == -1 and swap is None:
            # Lifting the memory limit must lift memory+swap too, or the old
            # memory+swap limit would keep holding the container.
            swap = -1
        if swap is not None:
            check_swap(swap, limit if limit is not None else self._memory_limit(limit_file))
        if limit is None:
            if swap is not None:
                self._set_memory(memsw_file, swap, "-1")
            return
        # The kernel insists on memory+swap >= memory at every moment, so a
        # limit that rises above the current memory+swap limit has to wait
        # until memory+swap has been raised, and a falling one goes first.
        current_memsw = self._memory_limit(memsw_file) if has_memsw else -1
        if swap is None:
            if current_memsw != -1 and limit > current_memsw:
                raise CgroupError(
                    f"cgroup: memory.limit_in_bytes={limit} would exceed the memory+swap "
                    f"limit {current_memsw}: set memory.swap as well",
                    limit_file,
                )
            self._set_memory(limit_file, limit, "-1")
            return
        if limit == -1 or (current_memsw != -1 and limit > current_memsw):
            self._set_memory(memsw_file, swap, "-1")
            self._set_memory(limit_file, limit, "-1")
        else:
            self._set_memory(limit_file, limit, "-1")
            self._set_memory(memsw_file, swap, "-1")

    def _memory_limit(self, path: str) -> int:
        return _parse_limit(self._get(path))

    def _apply_bandwidth(self, quota: int | None, period: int | None) -> None:
        quota_file = self._file("cpu", "cpu.cfs_quota_us") if quota is not None else ""
        if period is not None:
            period_file = self._file("cpu", "cpu.cfs_period_us")
            try:
                self._set(period_file, str(period))
            except CgroupError:
                if quota is None:
                    raise
                # The kernel checks quota/period against the parent's, so a
                # new period may only fit once the new quota is in place.
                self._set(quota_file, str(quota))
                self._set(period_file, str(period))
                return
        if quota is not None:
            self._set(quota_file, str(quota))

    def read_resources(self) -> dict[str, dict[str, Any]]:
        """The limits in force, in OCI ``linux.resources`` shape (-1 = unlimited)."""
        resources: dict[str, dict[str, Any]] = {}
        if "memory" in self._by_controller:
            memory = {"limit": self._memory_limit(self._file("memory", "memory.limit_in_bytes"))}
            memsw = _read_optional(self._file("memory", "memory.memsw.limit_in_bytes"))
            if memsw is not None:
                memory["swap"] = _parse_limit(memsw)
            resources["memory"] = memory
        cpu: dict[str, Any] = {}
        if "cpu" in self._by_controller:
            cpu["shares"] = int(self._get(self._file("cpu", "cpu.shares")))
            cpu["quota"] = int(self._get(self._file("cpu", "cpu.cfs_quota_us")))
            cpu["period"] = int(self._get(self._file("cpu", "cpu.cfs_period_us")))
        if "cpuset" in self._by_controller:
            cpu["cpus"] = self._get(self._file("cpuset", "cpuset.cpus")).strip()
            cpu["mems"] = self._get(self._file("cpuset", "cpuset.mems")).strip()
        if cpu:
            resources["cpu"] = cpu
        if "pids" in self._by_controller:
            resources["pids"] = {"limit": _parse_limit(self._get(self._file("pids", "pids.max")))}
        devices = self.read_devices()
        if devices is not None:
            resources["devices"] = devices
        return resources

    # --- statistics

    def _optional(self, controller: str, filename: str) -> str | None:
        directory = self._by_controller.get(controller)
        if directory is None:
            return None
        return _read_optional(os.path.join(directory, filename))

    def _optional_int(self, controller: str, filename: str) -> int | None:
        text = self._optional(controller, filename)
        return None if text is None else _parse_limit(text)

    def stats(self) -> Stats:
        """Usage counters from the memory, cpuacct, cpu and pids hierarchies."""
        from ._stats import Stats

        if not self.exists():
            raise CgroupError(f"cgroup: {self.name} does not exist", self._dirs()[0])
        stats = Stats()
        stats.memory_usage = self._optional_int("memory", "memory.usage_in_bytes") or 0
        limit = self._optional_int("memory", "memory.limit_in_bytes")
        stats.memory_limit = -1 if limit is None else limit
        stats.memory_max_usage = self._optional_int("memory", "memory.max_usage_in_bytes")
        # A charge that fails stops at the first counter over its limit, and
        # memory+swap is checked first, so hits on either limit count.
        failcnt = self._optional_int("memory", "memory.failcnt")
        if failcnt is not None:
            failcnt += self._optional_int("memory", "memory.memsw.failcnt") or 0
        stats.memory_failcnt = failcnt
        oom = parse_keyed(self._optional("memory", "memory.oom_control") or "")
        stats.oom_kills = oom.get("oom_kill", 0)
        stats.cpu_usage_ns = self._optional_int("cpuacct", "cpuacct.usage") or 0
        cpu = parse_keyed(self._optional("cpu", "cpu.stat") or "")
        stats.nr_periods = cpu.get("nr_periods", 0)
        stats.nr_throttled = cpu.get("nr_throttled", 0)
        stats.throttled_ns = cpu.get("throttled_time", 0)
        stats.pids_current = self._optional_int("pids", "pids.current") or 0
        pids_limit = self._optional_int("pids", "pids.max")
        stats.pids_limit = -1 if pids_limit is None else pids_limit
        return stats

    # --- freezer

    def _state_file(self) -> str:
        return self._file("freezer", "freezer.state")

    def freeze(self) -> None:
        """Freeze the cgroup and wait until freezer.state reads FROZEN (at most ~5 s).

        On timeout the cgroup is thawed again and CgroupError raised.
        """
        state_file = self._state_file()
        self._put(state_file, "FROZEN")

        def is_frozen() -> bool:
            if self._get(state_file).strip() == "FROZEN":
                return True
            # Tasks that could not be frozen yet are retried on each write.
            self._put(state_file, "FROZEN")
            return False

        if not _wait_until(is_frozen, FREEZE_TIMEOUT):
            state = self._get(state_file).strip()
            self._put(state_file, "THAWED")
            raise CgroupError(
                f"cgroup: {self.name} did not freeze within {FREEZE_TIMEOUT:g} s (freezer.state {state})",
                state_file,
            )

    def thaw(self) -> None:
        """Let the cgroup's processes run again."""
        state_file = self._state_file()
        self._put(state_file, "THAWED")
        if not _wait_until(lambda: self._get(state_file).strip() == "THAWED", FREEZE_TIMEOUT):
            raise CgroupError(f"cgroup: {self.name} did not thaw (is a parent cgroup frozen?)", state_file)

    def frozen(self) -> bool:
        """True if freezer.state reads FROZEN; False without a freezer or a cgroup."""
        text = self._optional("freezer", "freezer.state")
        return text is not None and text.strip() == "FROZEN"

    def _can_freeze(self, signum: int) -> bool:
        directory = self._by_controller.get("freezer")
        return directory is not None and os.path.isdir(directory)


__all__ = ["V1Cgroup"]
