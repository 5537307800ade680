"""The usage counters of one cgroup, the same for both cgroup versions."""

from __future__ import annotations

_FIELDS = {
    # Bytes charged now (v1 memory.usage_in_bytes, v2 memory.current).
    "memory_usage": 0,
    "memory_limit": -1,
    # Peak bytes charged (v1 memory.max_usage_in_bytes, v2 memory.peak); None if unknown.
    "memory_max_usage": None,
    # Processes the OOM killer killed here ("oom_kill" in memory.oom_control / memory.events).
    "oom_kills": 0,
    # Times a charge hit the limit (v1 memory.failcnt plus memory.memsw.failcnt,
    # v2 the "max" count of memory.events).
    "memory_failcnt": None,
    "cpu_usage_ns": 0,
    "nr_periods": 0,
    "nr_throttled": 0,
    "throttled_ns": 0,
    "pids_current": 0,
    "pids_limit": -1,
}


class Stats:
    """Usage counters of a cgroup; -1 in a limit means unlimited.

    Defaults stand for a controller the host does not have. A plain class:
    the dataclasses module costs more to import than a container start.
    """

    __slots__ = tuple(_FIELDS)

    def __init__(self, **values: object) -> None:
        unknown = set(values) - set(_FIELDS)
        if unknown:
            raise TypeError(f"unknown Stats fields: {sorted(unknown)}")
        for name, default in _FIELDS.items():
            setattr(self, name, values.get(name, default))

    def as_dict(self) -> dict:
        return {name: getattr(self, name) for name in _FIELDS}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Stats) and self.as_dict() == other.as_dict()

    def __repr__(self) -> str:
        return f"Stats({', '.join(f'{k}={v!r}' for k, v in self.as_dict().items())})"
