"""The cgroup v2 driver: one directory in the unified hierarchy.

Controllers reach a cgroup only when every ancestor lists them in its
cgroup.subtree_control, so :meth:`V2Cgroup.create` enables them on the way
down. The core files (cgroup.procs, cgroup.freeze, cgroup.kill,
cgroup.events) work even where no controller is available, as on the
cgroup2 mount of a hybrid host.
"""

from __future__ import annotations

import os

from . import (
    FREEZE_TIMEOUT,
    KILL_TIMEOUT,
    SIGKILL,
    V2_CONTROLLERS,
    Cgroup,
    CgroupError,
    _parse_limit,
    _pids_in,
    _read_optional,
    _wait_until,
    _write,
    check_swap,
    parse_keyed,
    shares_to_weight,
    weight_to_shares,
)

TYPE_CHECKING = False  # typing costs an import on the hot path
if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Any
if TYPE_CHECKING:
    from ._stats import Stats


def _parse_cpu_max(text: str) -> tuple[int, int]:
    """cpu.max "max 100000" / "20000 100000" -> (quota, period), quota -1 = unlimited."""
    parts = text.split()
    quota = -1 if parts[0] == "max" else int(parts[0])
    period = int(parts[1]) if len(parts) > 1 else 100000
    return quota, period


class V2Cgroup(Cgroup):
    """A cgroup at ``root``/``name`` in a cgroup2 hierarchy."""

    version = 2

    def __init__(self, root: str, name: str) -> None:
        super().__init__(root, name)
        self.path = os.path.join(root, self.name)
        # Why enabling a controller failed during create(), for apply()'s error.
        self._enable_errors: dict[str, str] = {}

    def _dirs(self) -> list[str]:
        return [self.path]

    can_rename = False

    def _with_name(self, name: str) -> V2Cgroup:
        return V2Cgroup(self.root, name)

    def _f(self, filename: str) -> str:
        return os.path.join(self.path, filename)

    # --- life cycle

    def create(self) -> None:
        """Make the cgroup and missing parents; enable cpu, cpuset, memory and pids
        (those the hierarchy offers) on every level above it. Fine if it exists.

        A controller the kernel refuses to enable (for instance because a
        process sits in an ancestor other than the root) is not an error
        here: :meth:`apply` reports it if a limit needs it.
        """
        made: list[str] = []
        path = self.root
        try:
            for part in self.name.split("/"):
                self._enable_controllers(path)
                path = os.path.join(path, part)
                try:
                    os.mkdir(path, 0o755)
                    made.append(path)
                except FileExistsError:
                    pass
                except OSError as err:
                    raise CgroupError(f"cgroup: cannot create {path}: {err.strerror}", path) from None
        except BaseException:
            for directory in reversed(made):
                try:
                    os.rmdir(directory)
                except OSError:
                    pass
            raise

    def _enable_controllers(self, path: str) -> None:
        available = self._get(os.path.join(path, "cgroup.controllers")).split()
        control = os.path.join(path, "cgroup.subtree_control")
        enabled = self._get(control).split()
        missing = [c for c in V2_CONTROLLERS if c in available and c not in enabled]
        if not missing:
            return
        try:
            self._put(control, " ".join("+" + c for c in missing))
            return
        except CgroupError:
            pass
        # One at a time, so that one refusal does not cost the others.
        for controller in missing:
            try:
                self._put(control, "+" + controller)
            except CgroupError as err:
                self._enable_errors[controller] = str(err)

    def exists(self) -> bool:
        """True if the cgroup's directory exists."""
        return os.path.isdir(self.path)

    def add_process(self, pid: int) -> None:
        """Move ``pid`` into the cgroup."""
        try:
            _write(self._f("cgroup.procs"), str(pid))
        except OSError as err:
            raise CgroupError(
                f"cgroup: cannot move process {pid} into {self.path}: {err.strerror}",
                self.path,
            ) from None

    def procs(self) -> list[int]:
        """Pids in the cgroup itself, sorted."""
        return sorted(_pids_in(self.path))

    def paths(self) -> dict[str, str]:
        """{"unified": this cgroup's directory}."""
        return {"unified": self.path}

    # --- limits

    def _available(self) -> list[str]:
        return self._get(self._f("cgroup.controllers")).split()

    def _require(self, controllers: Iterable[str]) -> None:
        available = self._available()
        for controller in controllers:
            if controller in available:
                continue
            why = self._enable_errors.get(controller)
            listed = " ".join(available) or "none"
            raise CgroupError(
                f"cgroup: the {controller} controller is not available to {self.name} "
                + (f"({why})" if why else f"(its cgroup.controllers lists: {listed})"),
                self._f("cgroup.controllers"),
            )

    def _apply(self, wanted: dict[str, dict[str, Any]]) -> None:
        cpu = wanted.get("cpu", {})
        for key in ("mems", "cpus"):
            if key in cpu:
                self._set_cpu_list(self._f(f"cpuset.{key}"), cpu[key])
        if "memory" in wanted:
            self._apply_memory(wanted["memory"])
        if "shares" in cpu:
            self._set(self._f("cpu.weight"), str(shares_to_weight(cpu["shares"])))
        if "quota" in cpu or "period" in cpu:
            # cpu.max holds both numbers; keep the one not given.
            current_quota, current_period = _parse_cpu_max(self._get(self._f("cpu.max")))
            quota = cpu.get("quota", current_quota)
            period = cpu.get("period", current_period)
            value = f"{'max' if quota == -1 else quota} {period}"
            self._set(self._f("cpu.max"), value, lambda t: _parse_cpu_max(t) == (quota, period))
        if "pids" in wanted:
            limit = wanted["pids"]["limit"]
            self._set(self._f("pids.max"), "max" if limit <= 0 else str(limit))

    def _apply_devices(self, rules: list[dict[str, Any]]) -> None:
        from . import ebpf

        fd = self._open_dir()
        try:
            ebpf.replace(fd, ebpf.assemble(rules))
        except OSError as err:
            raise CgroupError(
                f"cgroup: cannot attach the device rules (eBPF) to {self.path}: {err.strerror}", self.path
            ) from None
        finally:
            os.close(fd)

    def read_devices(self) -> list[dict[str, Any]] | None:
        """The rules of the device program hako attached (None if there is another or none)."""
        from . import ebpf

        if not self.exists():
            return None
        fd = self._open_dir()
        try:
            ids = ebpf.attached(fd)
            if len(ids) != 1:
                return None
            return ebpf.disassemble(ebpf.instructions(ids[0]))
        except OSError:
            return None  # no bpf(2) here, or the program went meanwhile
        finally:
            os.close(fd)

    def _open_dir(self) -> int:
        try:
            return os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as err:
            raise CgroupError(f"cgroup: cannot open {self.path}: {err.strerror}", self.path) from None

    def _apply_memory(self, memory: dict[str, int]) -> None:
        limit = memory.get("limit")
        swap = memory.get("swap")
        swap_file = self._f("memory.swap.max")
        if swap is not None and not os.path.exists(swap_file):
            # No swap accounting in this kernel: like Docker, limit memory alone.
            swap = None
        if swap is not None:
            check_swap(swap, limit if limit is not None else self._memory_max())
        if limit is not None:
            self._set_memory(self._f("memory.max"), limit, "max")
        if swap is not None:
            # v2 limits swap alone, OCI gives memory+swap.
            effective = limit if limit is not None else self._memory_max()
            self._set_memory(swap_file, -1 if swap == -1 else swap - effective, "max")

    def _memory_max(self) -> int:
        return _parse_limit(self._get(self._f("memory.max")))

    def read_resources(self) -> dict[str, dict[str, Any]]:
        """The limits in force, in OCI ``linux.resources`` shape (-1 = unlimited).

        ``cpu.shares`` is derived from cpu.weight (see ``weight_to_shares``).
        """
        available = self._available()
        resources: dict[str, dict[str, Any]] = {}
        if "memory" in available:
            limit = self._memory_max()
            memory = {"limit": limit}
            swap = _read_optional(self._f("memory.swap.max"))
            if swap is not None:
                swap_only = _parse_limit(swap)
                memory["swap"] = -1 if swap_only == -1 or limit == -1 else limit + swap_only
            resources["memory"] = memory
        cpu: dict[str, Any] = {}
        if "cpu" in available:
            cpu["shares"] = weight_to_shares(int(self._get(self._f("cpu.weight"))))
            cpu["quota"], cpu["period"] = _parse_cpu_max(self._get(self._f("cpu.max")))
        if "cpuset" in available:
            cpu["cpus"] = self._get(self._f("cpuset.cpus")).strip()
            cpu["mems"] = self._get(self._f("cpuset.mems")).strip()
        if cpu:
            resources["cpu"] = cpu
        if "pids" in available:
            resources["pids"] = {"limit": _parse_limit(self._get(self._f("pids.max")))}
        devices = self.read_devices()
        if devices is not None:
            resources["devices"] = devices
        return resources

    # --- statistics

    def _optional_int(self, filename: str) -> int | None:
        text = _read_optional(self._f(filename))
        return None if text is None else _parse_limit(text)

    def stats(self) -> Stats:
        """Usage counters from memory.*, cpu.stat and pids.* (where present)."""
        from ._stats import Stats

        if not self.exists():
            raise CgroupError(f"cgroup: {self.name} does not exist", self.path)
        stats = Stats()
        stats.memory_usage = self._optional_int("memory.current") or 0
        limit = self._optional_int("memory.max")
        stats.memory_limit = -1 if limit is None else limit
        stats.memory_max_usage = self._optional_int("memory.peak")
        events_text = _read_optional(self._f("memory.events"))
        if events_text is not None:
            events = parse_keyed(events_text)
            stats.oom_kills = events.get("oom_kill", 0)
            # the count of times usage reached memory.max: v1's failcnt
            stats.memory_failcnt = events.get("max", 0)
        cpu = parse_keyed(_read_optional(self._f("cpu.stat")) or "")
        stats.cpu_usage_ns = cpu.get("usage_usec", 0) * 1000
        stats.nr_periods = cpu.get("nr_periods", 0)
        stats.nr_throttled = cpu.get("nr_throttled", 0)
        stats.throttled_ns = cpu.get("throttled_usec", 0) * 1000
        stats.pids_current = self._optional_int("pids.current") or 0
        pids_limit = self._optional_int("pids.max")
        stats.pids_limit = -1 if pids_limit is None else pids_limit
        return stats

    # --- freezer

    def _freeze_file(self) -> str:
        path = self._f("cgroup.freeze")
        if not os.path.exists(path):
            raise CgroupError(f"cgroup: this kernel has no cgroup v2 freezer ({path} is missing)", path)
        return path

    def _events_frozen(self) -> bool:
        return parse_keyed(self._get(self._f("cgroup.events"))).get("frozen") == 1

    def freeze(self) -> None:
        """Write cgroup.freeze=1 and wait until cgroup.events says "frozen 1" (at most ~5 s).

        On timeout the cgroup is thawed again and CgroupError raised.
        """
        freeze_file = self._freeze_file()
        self._put(freeze_file, "1")
        if not _wait_until(self._events_frozen, FREEZE_TIMEOUT):
            self._put(freeze_file, "0")
            raise CgroupError(f"cgroup: {self.name} did not freeze within {FREEZE_TIMEOUT:g} s", freeze_file)

    def thaw(self) -> None:
        """Write cgroup.freeze=0 and wait until cgroup.events says "frozen 0"."""
        self._put(self._freeze_file(), "0")
        if not _wait_until(lambda: not self._events_frozen(), FREEZE_TIMEOUT):
            raise CgroupError(f"cgroup: {self.name} did not thaw (is a parent cgroup frozen?)", self.path)

    def frozen(self) -> bool:
        """True if cgroup.events says "frozen 1"; False without a freezer or a cgroup."""
        text = _read_optional(self._f("cgroup.events"))
        return text is not None and parse_keyed(text).get("frozen") == 1

    def _can_freeze(self, signum: int) -> bool:
        # Only worth it against forks racing a SIGKILL; frozen v2 tasks still die of it.
        return signum == SIGKILL and os.path.exists(self._f("cgroup.freeze"))

    def kill_all(self, signum: int = SIGKILL) -> None:
        """Send ``signum`` to every process in the cgroup and those nested in it.

        SIGKILL goes through cgroup.kill where the kernel has it (5.14+),
        which reaches every process at once, forks in flight included;
        otherwise the processes are signalled one by one.
        """
        kill_file = self._f("cgroup.kill")
        if signum == SIGKILL and os.path.exists(kill_file):
            self._put(kill_file, "1")
            if _wait_until(lambda: not self._tree_pids(), KILL_TIMEOUT):
                # Like the v1 driver, leave no frozen empty cgroup behind: a
                # process added to it later would freeze on arrival.
                if self.frozen():
                    self.thaw()
                return
        super().kill_all(signum)


__all__ = ["V2Cgroup"]
