"""CPU time spent by the processes of a load test, read from /proc and getrusage, so a
benchmark can say where a crowded machine's cores went.

    before = process_times(pid)             # (user, system) seconds of a process so far
    group = group_times(pgid)               # {pid: (user, system)} of every process in a group
    busy = MachineClock()                   # ... load ...
    busy.fraction()                         # share of all cores busy since it was made

Linux only; reads nothing but /proc and getrusage. Depends on nothing of the gateway.
"""

from __future__ import annotations

import os
import resource
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (which may hold spaces):
    [0] state, [2] process group, [11] utime, [12] stime (in clock ticks)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:  # gone meanwhile
        return None


def process_times(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of every thread of process `pid` so far (0 if gone)."""
    fields = _stat_fields(pid)
    return (0.0, 0.0) if fields is None else (int(fields[11]) / _TICK, int(fields[12]) / _TICK)


def process_seconds(pid: int) -> float:
    """User + system CPU seconds of every thread of process `pid` so far (0 if gone)."""
    return sum(process_times(pid))


def group_times(pgid: int) -> dict[int, tuple[float, float]]:
    """{pid: (user, system) seconds} of every live process whose process group is `pgid`
    (a launcher that starts its peer with start_new_session: its children share the group)."""
    out = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields is not None and int(fields[2]) == pgid:
            out[int(entry.name)] = (int(fields[11]) / _TICK, int(fields[12]) / _TICK)
    return out


def self_times() -> tuple[float, float]:
    """(user, system) seconds of this process, every thread (the loop and any other)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


def children_times() -> tuple[float, float]:
    """(user, system) seconds of this process's children that have been waited for: a
    child that ran and exited in between (SIPp) is the difference of two readings."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime, usage.ru_stime


def _machine_ticks() -> tuple[int, int]:
    """(busy, total) clock ticks of all cores since boot, from /proc/stat's "cpu" line."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    total = sum(values[:8])  # guest time is already inside user
    return total - idle, total


class MachineClock:
    """How busy all the machine's cores were between its creation and `fraction()`:
    ours and anybody else's (the machine is shared), so that ours can be set against it."""

    def __init__(self):
        self._busy, self._total = _machine_ticks()

    def fraction(self) -> float:
        busy, total = _machine_ticks()
        return (busy - self._busy) / max(1, total - self._total)

    def busy_seconds(self) -> float:
        busy, _ = _machine_ticks()
        return (busy - self._busy) / _TICK
