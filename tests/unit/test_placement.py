"""The load benches' placement of processes on cores (tests/support/placement.py):
every thread of a process moves, a peer started with `start_on` starts there, and a
process group moves whole."""

import os
import subprocess
import sys
import time

import pytest

from tests.support.placement import every_cpu, pin_group, pin_process, start_on, unpin_process

pytestmark = pytest.mark.skipif(len(every_cpu()) < 2, reason="needs two cores")

# a child with three threads that sleeps until killed
THREADED = ("import threading, time\n"
            "for _ in range(2): threading.Thread(target=time.sleep, args=(60,), daemon=True).start()\n"
            "print('ready', flush=True); time.sleep(60)\n")


def affinities(pid: int) -> list[set[int]]:
    return [os.sched_getaffinity(int(tid)) for tid in os.listdir(f"/proc/{pid}/task")]


@pytest.fixture
def child():
    process = subprocess.Popen([sys.executable, "-c", THREADED], stdout=subprocess.PIPE,
                               start_new_session=True)
    assert process.stdout.readline() == b"ready\n"
    yield process
    process.kill()
    process.wait()


def test_pin_process_moves_every_thread(child):
    last = {max(every_cpu())}
    pin_process(child.pid, last)
    assert len(affinities(child.pid)) == 3
    assert all(cpus == last for cpus in affinities(child.pid))
    unpin_process(child.pid)
    assert all(cpus == every_cpu() for cpus in affinities(child.pid))


def test_pin_group_moves_every_process_of_the_group(child):
    grandchild = subprocess.Popen(["sleep", "60"])  # in our group, not the child's
    try:
        pin_group(child.pid, {0})
        assert all(cpus == {0} for cpus in affinities(child.pid))
        assert os.sched_getaffinity(grandchild.pid) == every_cpu()
    finally:
        grandchild.kill()
        grandchild.wait()


def test_start_on_starts_a_peer_on_its_cores_at_its_nice():
    preexec = start_on({0}, nice=5)
    process = subprocess.Popen(["sleep", "60"], preexec_fn=preexec)
    try:
        time.sleep(0.05)
        assert os.sched_getaffinity(process.pid) == {0}
        assert os.getpriority(os.PRIO_PROCESS, process.pid) == min(19, os.getpriority(os.PRIO_PROCESS, 0) + 5)
    finally:
        process.kill()
        process.wait()
    assert start_on() is None
