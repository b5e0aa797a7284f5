"""Sustained registrations per second, REGISTER / 401 / REGISTER with credentials / 200,
against one Kamailio (digest auth on, 2 UDP workers, no per-request log, the tlsf allocator
rather than the Debian build's debugging default), 50 registrations
in flight: our engine (parser, transactions, timer wheel, digest, registration client)
against SIPp running the equivalent scenario (bench/scenarios/register_digest.xml).

The engine runs on uvloop, as `sip-push-gateway run` does (`uvloop.run`; before
2026-11-29 this bench ran it on the stock asyncio loop), and registers its instances as
the gateway's restart ramp does (`RegistrationContext.ramp`; before 2026-11-29 a
coroutine per registration awaited the client's exchange). Its exchanges take the
registration client's wire path (`gateway.sip.regwire`, compiled as `gateway._regwire`
when built: `wire_path` in `extra_info` says which) and its common cycle (start, end,
refresh, state report, the ramp's next start: `gateway.sip.regcycle`, compiled as
`gateway._regcycle`: `registration_cycle` says which), over the transport's batched UDP
socket (`gateway.sip.udpsock`; `udp_socket` says which; GATEWAY_UDP_SOCKET=loop measures
uvloop's datagram transport instead).
Each figure is reported next to SIPp's from the same run, in `extra_info` and on stdout:
registrations per second, CPU seconds per registration (user + system of the process doing
the registering; Kamailio's CPU is not counted for either), and their ratios; and
Kamailio's own CPU per registration in each run, which bounds what two cores can do.
Each run has a Kamailio of its own, started empty (before 2026-11-29 they shared one, and
the engine, measured second, met SIPp's 20,000 bindings in the location table).
"""

from __future__ import annotations

import asyncio
import os
import resource
import shutil
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import uvloop

from gateway import _accel
from gateway.app import tune_gc
from gateway.sip import transport
from gateway.sip.endpoint import SipEndpoint
from gateway.sip.pacing import Pacer
from gateway.sip.registration import (RegistrationClient, RegistrationContext,
                                      RegistrationSettings)
from gateway.timers import TimerWheel
from tests.support.cpu import group_times
from tests.support.kamailio import kamailio_binary
from tests.support.registrar import AuthRegistrar

COUNT = int(os.environ.get("REGISTRATION_BENCH_COUNT", "20000"))
IN_FLIGHT = 50
SCENARIO = Path(__file__).parent / "scenarios" / "register_digest.xml"

pytestmark = pytest.mark.skipif(kamailio_binary() is None or shutil.which("sipp") is None,
                                reason="needs kamailio and sipp (tests/apt-packages.txt)")


@contextmanager
def fresh_registrar(workdir: Path):
    kam = AuthRegistrar(workdir, shm_mb=512, debug=0)
    kam.config.memory_manager = "tlsf"  # a loaded registrar's allocator, not the debugging qm
    kam.start()
    try:
        yield kam
    finally:
        kam.stop()


@pytest.fixture
def registrar(tmp_path_factory):
    """A Kamailio of its own for each run: its CPU per registration grows with its
    location table (about 60 us empty, 90 us after 80,000 registrations), so a run after
    another one would pay for the first one's bindings."""
    with fresh_registrar(tmp_path_factory.mktemp("kamailio")) as kam:
        yield kam


@pytest.fixture(scope="module")
def results():
    return {}


def run_sipp(kam, workdir: Path, count: int, prefix: str) -> tuple[float, float, int]:
    users = workdir / f"{prefix}.csv"
    lines = ["SEQUENTIAL"] + [f"{prefix}{n};[authentication username={prefix}{n} "
                               f"password={kam.password(f'{prefix}{n}')}]" for n in range(count)]
    users.write_text("\n".join(lines) + "\n")
    command = ["sipp", f"127.0.0.1:{kam.udp_port}", "-sf", str(SCENARIO), "-inf", str(users),
               "-m", str(count), "-l", str(IN_FLIGHT), "-r", "100000", "-rp", "1000",
               "-t", "u1", "-i", "127.0.0.1", "-nostdin", "-timeout", "120s",
               "-trace_err", "-error_file", str(workdir / f"{prefix}-errors.log")]
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               cwd=workdir)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    return wall, usage.ru_utime + usage.ru_stime, process.returncode


async def run_engine(kam, count: int, prefix: str) -> tuple[float, float, int]:
    """`count` instances registered the way a restarted gateway registers its stored
    ones: a client each, started by `RegistrationContext.ramp` with `IN_FLIGHT` first
    exchanges under way at once (no pacing), each staying registered (its refresh on
    the wheel). Building the clients is part of the measured CPU; writing their
    accounts' texts is not (before 2026-11-29 it was: about 2 us per registration),
    as writing SIPp's `-inf` file is not part of SIPp's. The state report is a count
    (the gateway's writes the state to its store, which this bench leaves out)."""
    wheel = TimerWheel()
    endpoint = SipEndpoint(wheel)
    await endpoint.listen("udp", "127.0.0.1", 0)
    pacer = Pacer(wheel, 1e9, 1_000_000, 1e9, 1_000_000)  # no pacing: as fast as it goes
    registrar = f"sip:127.0.0.1:{kam.udp_port};transport=udp"
    accounts = [(f"{prefix}{n}", f"gw{n}", f"urn:uuid:00000000-0000-4000-8000-{n:012d}",
                 f"sip:{prefix}{n}@{kam.domain}") for n in range(count)]
    outcomes = {"registered": 0, "failed": 0}
    finished = asyncio.get_running_loop().create_future()

    def report(client, state, error, until):
        outcomes["registered" if state == "registered" else "failed"] += 1
        if outcomes["registered"] + outcomes["failed"] == count and not finished.done():
            finished.set_result(None)

    ctx = RegistrationContext(endpoint, pacer, RegistrationSettings(),
                              max_in_flight=IN_FLIGHT, report=report)
    tune_gc()  # as `sip-push-gateway run` does once started
    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    clients = []
    for user, token, urn, aor in accounts:
        clients.append(RegistrationClient(
            ctx, key=user, token=token, instance_urn=urn, aor=aor, username=user,
            password_source=lambda user=user: kam.password(user), registrar=registrar))
    await ctx.ramp(clients, IN_FLIGHT)
    await asyncio.wait_for(finished, 120)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    for client in clients:
        client.close()
    await endpoint.close()
    wheel.close()
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, outcomes["failed"]


def kamailio_seconds(kam) -> float:
    """CPU seconds (user + system) of every Kamailio process so far."""
    return sum(u + s for u, s in group_times(kam.process.pid).values())


def measured(kam, run) -> tuple[float, float, int, float]:
    """`run()`'s (wall, cpu, code or failures) and Kamailio's CPU seconds meanwhile."""
    before = kamailio_seconds(kam)
    wall, cpu, code = run()
    return wall, cpu, code, kamailio_seconds(kam) - before


@pytest.mark.benchmark(group="registration")
def test_sipp_registrations(benchmark, registrar, results, tmp_path):
    wall, cpu, code, kam_cpu = benchmark.pedantic(
        measured, args=(registrar, lambda: run_sipp(registrar, tmp_path, COUNT, "sipp")),
        rounds=1, iterations=1)
    assert code == 0, (tmp_path / "sipp-errors.log").read_text()[-2000:] \
        if (tmp_path / "sipp-errors.log").exists() else code
    results["sipp"] = (COUNT / wall, cpu / COUNT)
    benchmark.extra_info.update(registrations_per_s=COUNT / wall,
                                cpu_us_per_registration=1e6 * cpu / COUNT,
                                kamailio_cpu_us_per_registration=1e6 * kam_cpu / COUNT)
    print(f"\nSIPp: {COUNT / wall:.0f} registrations/s, {1e6 * cpu / COUNT:.1f} us CPU each; "
          f"Kamailio {1e6 * kam_cpu / COUNT:.1f} us each")


@pytest.mark.benchmark(group="registration")
def test_engine_registrations(benchmark, registrar, results, tmp_path):
    if "sipp" not in results:  # run alone: measure the baseline first (on a registrar
        (tmp_path / "baseline").mkdir()  # as fresh as the engine's)
        with fresh_registrar(tmp_path / "baseline") as kam:
            wall, cpu, code = run_sipp(kam, tmp_path, COUNT, "sipp")
        assert code == 0
        results["sipp"] = (COUNT / wall, cpu / COUNT)
    wall, cpu, failures, kam_cpu = benchmark.pedantic(
        measured, args=(registrar, lambda: uvloop.run(run_engine(registrar, COUNT, "gw"))),
        rounds=1, iterations=1)
    assert failures == 0
    rate, cpu_each = COUNT / wall, cpu / COUNT
    sipp_rate, sipp_cpu = results["sipp"]
    benchmark.extra_info.update(
        registrations_per_s=rate, cpu_us_per_registration=1e6 * cpu_each,
        sipp_registrations_per_s=sipp_rate, sipp_cpu_us_per_registration=1e6 * sipp_cpu,
        throughput_ratio_vs_sipp=rate / sipp_rate, cpu_ratio_vs_sipp=cpu_each / sipp_cpu,
        kamailio_cpu_us_per_registration=1e6 * kam_cpu / COUNT,
        wire_path=_accel.chosen.get("_regwire", "?"),
        registration_cycle=_accel.chosen.get("_regcycle", "?"),
        udp_socket=f"batched ({_accel.chosen.get('_udpsock', '?')})" if transport.BATCHED_UDP
        else "uvloop")
    print(f"\nengine: {rate:.0f} registrations/s, {1e6 * cpu_each:.1f} us CPU each; "
          f"SIPp: {sipp_rate:.0f}/s, {1e6 * sipp_cpu:.1f} us; throughput x{rate / sipp_rate:.2f}, "
          f"CPU per registration x{cpu_each / sipp_cpu:.2f}; Kamailio {1e6 * kam_cpu / COUNT:.1f} us each")
