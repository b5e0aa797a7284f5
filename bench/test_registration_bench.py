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
SIPp and the engine run in turn, `REGISTRATION_BENCH_PAIRS` times each (9; 3 with QUICK=1;
5 before 2026-11-29).
Each figure is the median of its runs, reported next to SIPp's from the same runs, in
`extra_info` and on stdout:
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
from statistics import median

import pytest
import uvloop

from bench.quick import QUICK
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
PAIRS = int(os.environ.get("REGISTRATION_BENCH_PAIRS", "3" if QUICK else "9"))
IN_FLIGHT = 50
SCENARIO = Path(__file__).parent / "scenarios" / "register_digest.xml"

pytestmark = pytest.mark.skipif(kamailio_binary() is None or shutil.which("sipp") is None,
                                reason="needs kamailio and sipp (tests/apt-packages.txt)")


@contextmanager
def fresh_registrar(workdir: Path):
    """A Kamailio of its own for each run: its CPU per registration grows with its
    location table (about 60 us empty, 90 us after 80,000 registrations), so a run after
    another one would pay for the first one's bindings."""
    workdir.mkdir(parents=True, exist_ok=True)
    kam = AuthRegistrar(workdir, shm_mb=512, debug=0)
    kam.config.memory_manager = "tlsf"  # a loaded registrar's allocator, not the debugging qm
    kam.start()
    try:
        yield kam
    finally:
        kam.stop()


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


def one_pair(workdir: Path, count: int, n: int) -> dict:
    """SIPp's run, then the engine's, each against a Kamailio of its own."""
    with fresh_registrar(workdir / f"kamailio-sipp-{n}") as kam:
        wall, cpu, code, kam_cpu = measured(kam, lambda: run_sipp(kam, workdir, count, "sipp"))
    errors = workdir / "sipp-errors.log"
    assert code == 0, errors.read_text()[-2000:] if errors.exists() else code
    sipp = (count / wall, 1e6 * cpu / count, 1e6 * kam_cpu / count)
    with fresh_registrar(workdir / f"kamailio-engine-{n}") as kam:
        wall, cpu, failures, kam_cpu = measured(
            kam, lambda: uvloop.run(run_engine(kam, count, "gw")))
    assert failures == 0
    engine = (count / wall, 1e6 * cpu / count, 1e6 * kam_cpu / count)
    return {"sipp": sipp, "engine": engine}


@pytest.mark.benchmark(group="registration")
def test_engine_registrations(benchmark, tmp_path):
    """`PAIRS` runs of SIPp and of the engine, alternated (SIPp's CPU per registration
    moves between 55 and 85 us from one run to the next on this machine, with the load
    the other benchmarks leave; before 2026-11-29 one run of each was compared). Each
    figure is the median over the runs, each ratio the median of the pairs' ratios; every
    run's figures are in `extra_info` too. Nine pairs rather than five: 20 pairs on
    2026-11-29 had CPU ratios from 0.39 to 0.53, and the median of five moved from 0.41
    to 0.51 between four runs of the same build."""
    pairs = []
    benchmark.pedantic(lambda: pairs.append(one_pair(tmp_path, COUNT, len(pairs))),
                       rounds=PAIRS, iterations=1)
    sipp = [pair["sipp"] for pair in pairs]
    engine = [pair["engine"] for pair in pairs]
    figures = {"registrations_per_s": median(e[0] for e in engine),
               "cpu_us_per_registration": median(e[1] for e in engine),
               "kamailio_cpu_us_per_registration": median(e[2] for e in engine),
               "sipp_registrations_per_s": median(s[0] for s in sipp),
               "sipp_cpu_us_per_registration": median(s[1] for s in sipp),
               "sipp_kamailio_cpu_us_per_registration": median(s[2] for s in sipp),
               "throughput_ratio_vs_sipp": median(e[0] / s[0] for e, s in zip(engine, sipp)),
               "cpu_ratio_vs_sipp": median(e[1] / s[1] for e, s in zip(engine, sipp))}
    runs = {"pairs": len(pairs), "registrations_per_run": COUNT,
            "cpu_us_runs": [round(e[1], 1) for e in engine],
            "sipp_cpu_us_runs": [round(s[1], 1) for s in sipp],
            "cpu_ratio_runs": [round(e[1] / s[1], 3) for e, s in zip(engine, sipp)],
            "throughput_ratio_runs": [round(e[0] / s[0], 2) for e, s in zip(engine, sipp)]}
    benchmark.extra_info.update(
        figures, **runs,
        wire_path=_accel.chosen.get("_regwire", "?"),
        registration_cycle=_accel.chosen.get("_regcycle", "?"),
        udp_socket=f"batched ({_accel.chosen.get('_udpsock', '?')})" if transport.BATCHED_UDP
        else "uvloop")
    f = figures
    print(f"\nengine: {f['registrations_per_s']:.0f} registrations/s, "
          f"{f['cpu_us_per_registration']:.1f} us CPU each; SIPp: {f['sipp_registrations_per_s']:.0f}/s, "
          f"{f['sipp_cpu_us_per_registration']:.1f} us (medians of {len(pairs)} alternated runs); "
          f"throughput x{f['throughput_ratio_vs_sipp']:.2f}, CPU per registration "
          f"x{f['cpu_ratio_vs_sipp']:.2f} (per pair: {runs['cpu_ratio_runs']}); Kamailio "
          f"{f['kamailio_cpu_us_per_registration']:.1f} us each (SIPp's runs "
          f"{f['sipp_kamailio_cpu_us_per_registration']:.1f})")
