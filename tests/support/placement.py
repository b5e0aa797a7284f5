"""Where a load bench's processes run on the machine's cores.

On a two-core machine the gateway under test and its peers (SIPp, Kamailio, the push
emulator) take turns on the same cores, unlike a deployment where the provider's proxy
and Apple's servers run on other machines. A bench can keep them apart:

    pin_process(os.getpid(), {0})          # every thread of this process on core 0
    pin_group(kamailio_pgid, {1})          # every process (and thread) of a group on core 1
    preexec = start_on(cpus={1}, nice=0)   # for a peer started later (subprocess preexec_fn)
    unpin_process(os.getpid())             # back to every core

Linux only; depends on nothing of the gateway.
"""

from __future__ import annotations

import os
from typing import Callable

from tests.support.cpu import group_times


def every_cpu() -> set[int]:
    return set(range(os.cpu_count() or 1))


def pin_process(pid: int, cpus: set[int]) -> None:
    """Every thread of process `pid` on `cpus` (threads it starts later inherit the
    affinity of the thread that starts them)."""
    try:
        threads = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return  # gone meanwhile
    for tid in threads:
        try:
            os.sched_setaffinity(int(tid), cpus)
        except ProcessLookupError:
            pass  # a thread that ended meanwhile


def unpin_process(pid: int) -> None:
    pin_process(pid, every_cpu())


def pin_group(pgid: int, cpus: set[int]) -> None:
    """Every process of process group `pgid`, every thread of each, on `cpus`."""
    for pid in group_times(pgid):
        pin_process(pid, cpus)


def start_on(cpus: set[int] | None = None, nice: int = 0) -> Callable[[], None] | None:
    """A subprocess `preexec_fn` starting a peer on `cpus` at `nice` (None: nothing to do)."""
    if not cpus and not nice:
        return None

    def preexec() -> None:
        if cpus:
            os.sched_setaffinity(0, cpus)
        if nice:
            os.nice(nice)
    return preexec
