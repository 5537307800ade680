"""The usage counters of one cgroup, the same for both cgroup versions.

Kept apart from the package ``__init__`` so that only callers that read
statistics pay for importing ``dataclasses``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Stats:
    """Usage counters of a cgroup; -1 in a limit means unlimited.

    Defaults stand for a controller the host does not have.
    """

    memory_usage: int = 0
    """Bytes charged now (v1 memory.usage_in_bytes, v2 memory.current)."""
    memory_limit: int = -1
    memory_max_usage: int | None = None
    """Peak bytes charged (v1 memory.max_usage_in_bytes, v2 memory.peak); None if unknown."""
    oom_kills: int = 0
    """Processes the OOM killer killed here ("oom_kill" in memory.oom_control / memory.events)."""
    memory_failcnt: int | None = None
    """Times a charge hit the limit (v1 memory.failcnt plus memory.memsw.failcnt,
    v2 the "max" count of memory.events)."""
    cpu_usage_ns: int = 0
    nr_periods: int = 0
    nr_throttled: int = 0
    throttled_ns: int = 0
    pids_current: int = 0
    pids_limit: int = -1
