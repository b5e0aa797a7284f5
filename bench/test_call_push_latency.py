"""INVITE to push: how long from an INVITE arriving at the gateway to its call push
arriving at APNs, at 100 and at 500 calls per second.

Setup: SIPp calls through Kamailio (the provider's proxy and registrar, digest auth on)
to instances the gateway registered there; the gateway (in this process, uvloop) pushes
over HTTP/2 + TLS to the APNs emulator, which runs in a process of its own and notes when
each request arrived (CLOCK_MONOTONIC, time.monotonic() here: one clock for every process
on the machine; when the request's last bytes were handed to the emulator's code, before
its checks; the arrivals are fetched after the load, so nothing of the emulator runs in
the gateway's loop meanwhile). The emulator is the Node.js one
(tests/support/apns_node: nghttp2, the provider token's ES256 signature verified and
cached per connection, topic, push type, payload checked as APNs does), which costs a
fraction of the Python h2 one (CALL_BENCH_APNS=python, for comparison: about 0.55 ms of
CPU per push, a third of the machine at 500 calls/s, where Apple's servers take none of
the gateway's cores). Each
call: INVITE, 180 Alerting-Device, 180 Push-Notification-Sent, then CANCEL, 487 (which
also sends a missed-call push: real load).

- subject: the INVITE's datagram arriving in the gateway's UDP socket (the kernel's
  receive timestamp, SO_TIMESTAMPNS per datagram from the batched socket, read when `TransportLayer._datagram` gets it: time spent
  queued while the loop was busy counts; the call's Call-ID known once the handler sees
  the request) -> the push request's last byte read by the emulator, per Call-ID;
- the gateway's own part, issue 7's figure: the same arrival -> the APNs provider starting
  to send that push (`ApnsProvider.start` -- the request framed and written before it
  returns -- or, when no stream was free at once, `ApnsProvider.send` entered); also from
  the loop's read of the datagram (`read_to_send`), which leaves the queueing out;
- baseline, same run, same rate: a CallPush handed straight to the gateway's
  PushService (no SIP; `notify_now`, the call push's own path) -> the emulator; so the
  ratio says what the SIP side adds.

Figures in extra_info: p50/p99 (ms) of both, their ratios, calls lost, the loop's lag,
the garbage collector's pauses (per call, longest, how many and how many of the older
generations), and the loop thread's CPU time per
call against per direct push (time.thread_time(): a crowded machine's preemption does
not count there, unlike in the latencies). And the CPU budget of the SIP load, per call
(`CpuBudget`: /proc and getrusage, user + system, the system part apart): the gateway's
whole process, the emulator, Kamailio (all of it and by kind of process: udp workers,
timers, tcp, other), SIPp, their sum, and the whole machine's busy time and share of its
cores (anybody's: what exceeds our sum is the kernel's unbilled network work and
whatever else shares the machine).

The peers run as a production deployment would: the emulator checks everything APNs
checks without per-request overhead of its own, Kamailio with a worker per core and its
production allocator, SIPp with its default timers. A diagnostic, never the default:
CALL_BENCH_PEERS_NICE=10 runs SIPp, Kamailio and the emulator at that nice value, a
stand-in for peers on other machines (how much of the p99 is the peers competing for the
two cores); the figures say `peers_nice` and `apns_emulator`. Run with
`python -m pytest bench/test_call_push_latency.py --benchmark-only -s`; with
`BENCH_PROFILE=DIR` the loop is profiled (cProfile) during the SIP load, the stats go to
DIR/invite-RATE.prof and the top functions are printed (the profiler slows the loop:
latencies of such a run are not figures).

Each rate runs twice: "shared", the gateway, Kamailio, SIPp and the emulator taking turns
on the machine's two cores (the figures of that crowd), and "split", the gateway's process
on one core and the peers on the other (`tests.support.placement`), as in a deployment
where the provider's proxy and Apple's servers are other machines. The figures say which
(`placement`).
"""

from __future__ import annotations

import asyncio
import cProfile
import fcntl
import gc
import os
import pstats
import re
import secrets
import statistics
import struct
import time
from pathlib import Path

import pytest
import uvloop

from bench.quick import QUICK
from gateway.app import tune_gc
from gateway.push.apns import ApnsProvider
from gateway.push.payloads import CallPush
from gateway.sip.transport import TransportLayer
from tests.support.apns_nodejs import NodeApns, node_binary, public_pem
from tests.support.apns_remote import RemoteApns
from tests.support.cpu import MachineClock, children_times, group_times, self_times
from tests.support.kamailio import kamailio_binary
from tests.support.placement import every_cpu, pin_group, pin_process, unpin_process
from tests.support.sipp import run_sipp, sipp_binary
from tests.support.testbed import BUNDLE, KEY_ID, TEAM, Testbed

SCENARIO = Path(__file__).parent / "sipp" / "call_cancel.xml"
SIOCGSTAMP = 0x8906  # linux/sockios.h: the last received datagram's kernel timestamp
USERS = 20
# The APNs emulator of the load: "node" (tests/support/apns_node, nghttp2: a peer costing
# about what one on another machine would) or "python" (the h2 emulator, for comparison)
EMULATOR = os.environ.get("CALL_BENCH_APNS", "node")
# A diagnostic, never the default: SIPp, Kamailio and the emulator at this nice value, a
# stand-in for peers on other machines (how much of the p99 is the peers taking the cores)
PEERS_NICE = int(os.environ.get("CALL_BENCH_PEERS_NICE", "0"))
# Where the processes run. "shared": anywhere, the gateway taking turns with its peers on
# the same cores. "split": the gateway's process on the first core, SIPp, Kamailio and
# the emulator on the others, as in a deployment where the provider's proxy and Apple's
# servers are other machines (the kernel's work for a datagram still runs on the core of
# whoever sends it).
PLACEMENTS = ("shared", "split")
GATEWAY_CPUS = {min(every_cpu())}
PEER_CPUS = every_cpu() - GATEWAY_CPUS or None
DURATION = {100: 5.0, 500: 3.0} if QUICK else {100: 10.0, 500: 6.0}  # seconds of load per rate

pytestmark = pytest.mark.skipif(
    kamailio_binary() is None or sipp_binary() is None or (EMULATOR == "node" and node_binary() is None),
    reason="needs kamailio, sipp and nodejs (tests/apt-packages.txt)")


def percentile(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def sipp_count(line: str, output: str) -> int | None:
    """A cumulative counter of SIPp's last statistics screen ("Failed call", ...)."""
    found = re.findall(rf"{line}\s*\|\s*\d+\s*\|\s*(\d+)", output)
    return int(found[-1]) if found else None


def udp_drops(ports: dict[str, int]) -> dict[str, int]:
    """Datagrams the kernel dropped so far at the UDP sockets bound to `ports` on
    127.0.0.1 ({name: port}; /proc/net/udp's last column), and "machine": every UDP
    socket's receive-buffer overflows (/proc/net/snmp RcvbufErrors, anybody's, SIPp's
    short-lived socket included)."""
    wanted = {f"0100007F:{port:04X}": name for name, port in ports.items()}
    out = dict.fromkeys(ports, 0)
    for line in Path("/proc/net/udp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] in wanted:
            out[wanted[fields[1]]] += int(fields[-1])
    snmp = [line.split() for line in Path("/proc/net/snmp").read_text().splitlines() if line.startswith("Udp:")]
    out["machine"] = int(snmp[1][snmp[0].index("RcvbufErrors")])
    return out


def kernel_arrival(sock) -> float | None:
    """When the kernel received the datagram just read from `sock` (wall clock), so that
    time spent queued in the socket while the loop was busy counts too; None until the
    kernel stamps that socket's datagrams (the first call turns it on). The batched
    socket reads many datagrams at once, so it keeps each one's own stamp
    (`received_at`); uvloop's transport (GATEWAY_UDP_SOCKET=loop) reads one at a time,
    so SIOCGSTAMP's "last datagram read" is this one."""
    transport = sock.transport
    if transport is None:
        return None
    if hasattr(transport, "stamp_arrivals"):
        if not transport.received_at:
            transport.stamp_arrivals()
            return None
        return transport.received_at
    try:
        raw = fcntl.ioctl(transport.get_extra_info("socket").fileno(), SIOCGSTAMP, bytes(16))
    except OSError:
        return None
    seconds, micros = struct.unpack("qq", raw)
    return seconds + micros / 1e6


async def _lag_probe(lags: list[float], every: float = 0.005) -> None:
    """How late the gateway's loop wakes from a 5 ms sleep: stalls of the loop itself
    (and of the process, on a crowded machine) during the load."""
    while True:
        started = time.monotonic()
        await asyncio.sleep(every)
        lags.append(time.monotonic() - started - every)


def kamailio_roles(psx: str) -> dict[int, str]:
    """pid -> what that Kamailio process does ("udp", "timer", "tcp", "other"), from
    `kamcmd core.psx` (entries of IDX, PID and DSC lines)."""
    roles = {}
    for pid, description in re.findall(r"PID:\s*(\d+)\s*DSC:\s*([^\n]*)", psx):
        kind = description.split()[0] if description else "other"
        roles[int(pid)] = kind if kind in ("udp", "timer", "slow", "secondary", "tcp") else "other"
        if roles[int(pid)] in ("slow", "secondary"):
            roles[int(pid)] = "timer"
    return roles


def loop_thread_waits() -> tuple[float, int]:
    """(seconds spent runnable but waiting for a core, involuntary context switches) of
    the calling thread so far, from /proc/thread-self (schedstat, status): how long the
    loop waited while others -- the peers, anybody -- had the cores."""
    waited = int(Path("/proc/thread-self/schedstat").read_text().split()[1]) / 1e9
    status = Path("/proc/thread-self/status").read_text()
    preempted = int(re.search(r"nonvoluntary_ctxt_switches:\s*(\d+)", status).group(1))
    return waited, preempted


class CpuBudget:
    """CPU seconds, (user, system), of every process of the bench over the load: the
    gateway's whole process (its loop thread's total apart), the emulator, each kind of
    Kamailio process, SIPp (a child reaped during the load), and the whole machine's
    busy time (anybody's)."""

    def __init__(self, bed: Testbed, apns: RemoteApns):
        self.kam_pgid = bed.kam.process.pid
        self.roles = kamailio_roles(bed.kam.kamcmd("core.psx"))
        self.apns = apns

    def reading(self) -> dict:
        kam: dict[str, tuple[float, float]] = {}
        for pid, (user, system) in group_times(self.kam_pgid).items():
            role = "kamailio_" + self.roles.get(pid, "other")
            was = kam.get(role, (0.0, 0.0))
            kam[role] = (was[0] + user, was[1] + system)
        return {"loop": (time.thread_time(), 0.0), "gateway": self_times(), "sipp": children_times(),
                "emulator": self.apns.cpu_times(), **kam}

    def start(self) -> None:
        self.machine = MachineClock()
        self.wall = time.monotonic()
        self.before = self.reading()
        self.waits = loop_thread_waits()

    def stop(self) -> dict:
        """{name: (user, system) seconds spent} plus "kamailio" (every process of it),
        "machine_busy" (seconds), "machine_busy_fraction" and "wall" (seconds)."""
        after = self.reading()
        spent = {}
        for name, (user, system) in after.items():
            was = self.before.get(name, (0.0, 0.0))  # a Kamailio process born meanwhile
            spent[name] = (user - was[0], system - was[1])
        kam = [v for k, v in spent.items() if k.startswith("kamailio_")]
        spent["kamailio"] = (sum(u for u, _ in kam), sum(s for _, s in kam))
        spent["machine_busy"] = self.machine.busy_seconds()
        spent["machine_busy_fraction"] = self.machine.fraction()
        spent["wall"] = time.monotonic() - self.wall
        waited, preempted = loop_thread_waits()
        spent["loop_waited"] = waited - self.waits[0]
        spent["loop_preempted"] = preempted - self.waits[1]
        return spent


async def scenario(tmp_path: Path, rate: int, placement: str = "shared") -> dict:
    tokens = {f"user{i}": (secrets.token_hex(32), secrets.token_hex(32)) for i in range(USERS)}
    # Kamailio as a proxy under load runs: a worker per core, the production allocator
    # (its default, qm, is the debugging one: 0.9 -> 0.5 ms of its CPU per call)
    bed = Testbed(tmp_path, t1=60.0, log_level="warning", kam_children=2, kam_shm_mb=128,
                  kam_memory="tlsf")
    registry = {}
    for voip, alert in tokens.values():
        registry[voip] = BUNDLE + ".voip"
        registry[alert] = BUNDLE
    direct = secrets.token_hex(32)
    registry[direct] = BUNDLE + ".voip"
    split = placement == "split" and PEER_CPUS is not None
    peer_cpus = PEER_CPUS if split else None
    if EMULATOR == "python":
        apns = await RemoteApns.start(tmp_path / "apns", bed.key_file, TEAM, KEY_ID, registry)
        if PEERS_NICE:
            os.setpriority(os.PRIO_PROCESS, apns.process.pid, PEERS_NICE)  # one thread
        if split:
            pin_process(apns.process.pid, PEER_CPUS)
    else:
        apns = await NodeApns.start(tmp_path / "apns", keys={KEY_ID: (TEAM, public_pem(bed.key_file))},
                                    devices=registry, nice=PEERS_NICE, cpus=peer_cpus)
    try:
        await bed.start(apns_url=apns.url, push_ca=apns.ca_file)
        if PEERS_NICE:
            # every process (and thread) of Kamailio's group
            os.setpriority(os.PRIO_PGRP, bed.kam.process.pid, PEERS_NICE)
        if split:
            pin_group(bed.kam.process.pid, PEER_CPUS)
            pin_process(os.getpid(), GATEWAY_CPUS)  # every thread of the gateway's process
        instances = [await bed.create_instance(user, tokens=tokens[user]) for user in tokens]
        gateway = bed.gateway
        arrived: dict[str, float] = {}  # Call-ID -> the INVITE's arrival in the kernel
        read_at: dict[str, float] = {}  # Call-ID -> when the gateway's loop read it
        handler = gateway.provider_face.on_request
        datagram = TransportLayer._datagram
        received = [0.0, 0.0]  # the datagram being handled: kernel arrival, loop's read
        wall_to_monotonic = time.monotonic() - time.time()

        def stamped_datagram(layer, sock, data, remote):
            read = time.monotonic()
            kernel = kernel_arrival(sock)
            received[0] = read if kernel is None else kernel + wall_to_monotonic
            received[1] = read
            datagram(layer, sock, data, remote)

        def stamped(request, tx):
            # UDP: the handler runs inside the datagram's own call, so received[0] is
            # this INVITE's arrival
            if request.method == "INVITE" and request.to_tag is None:
                arrived[request.call_id] = received[0]
                read_at[request.call_id] = received[1]
            handler(request, tx)

        TransportLayer._datagram = stamped_datagram
        gateway.provider_face.on_request = stamped
        leaving: dict[str, float] = {}
        send, start = ApnsProvider.send, ApnsProvider.start

        def stamp(notification):
            if notification.kind == "call":
                leaving.setdefault(notification.payload.call_id, time.monotonic())

        async def timed_send(provider, target, notification):
            stamp(notification)
            return await send(provider, target, notification)

        def timed_start(provider, target, notification):
            stamp(notification)
            return start(provider, target, notification)

        ApnsProvider.send, ApnsProvider.start = timed_send, timed_start
        users = tmp_path / "users.csv"
        users.write_text("SEQUENTIAL\n" + "".join(f"{i['user']};{bed.kam.domain};\n" for i in instances))
        kam = ("127.0.0.1", bed.kam.udp_port)

        # warm up: connections to APNs, Kamailio's transactions, the code paths
        await run_sipp(str(SCENARIO), kam, service="x", calls=50, rate=50, timeout=30,
                       extra=("-inf", str(users)), nice=PEERS_NICE, cpus=peer_cpus)
        arrived.clear()
        read_at.clear()
        # as `gateway.app.serve` runs the gateway: start-up's objects frozen, a larger
        # young generation (here the frozen heap is pytest's too)
        thresholds = gc.get_threshold()
        tune_gc()

        calls = int(rate * DURATION[rate])
        lags: list[float] = []
        probe = asyncio.ensure_future(_lag_probe(lags))
        pauses: list[float] = []  # the collector's pauses during the load
        generations: list[int] = []  # ... and which generation each collected
        gc_started = [0.0]

        def collecting(phase, info):
            if phase == "start":
                gc_started[0] = time.perf_counter()
            else:
                pauses.append(time.perf_counter() - gc_started[0])
                generations.append(info["generation"])

        gc.callbacks.append(collecting)
        profile_dir = os.environ.get("BENCH_PROFILE")
        # CPU time, not wall time: a crowded machine preempting the loop must not show up
        # as the cost of whatever was running then
        profiler = cProfile.Profile(time.thread_time) if profile_dir else None
        budget = CpuBudget(bed, apns)
        drop_ports = {"gateway": bed.provider_udp, "kamailio": bed.kam.udp_port}
        drops = udp_drops(drop_ports)
        budget.start()
        if profiler is not None:
            profiler.enable()
        # a call whose message was lost (a provisional answer is never retransmitted)
        # fails after 5 s instead of holding SIPp, and the load window, for 60
        # SIPp's socket buffers as large as the gateway's (4 MiB): a SIPp that waits for a
        # core (niced, or on a crowded machine) queues its answers instead of losing them
        result = await run_sipp(str(SCENARIO), kam, service="x", calls=calls, rate=rate,
                                timeout=60, extra=("-inf", str(users), "-l", "5000",
                                                   "-recv_timeout", "5000", "-buff_size", "4194304"),
                                nice=PEERS_NICE, cpus=peer_cpus)
        if profiler is not None:
            profiler.disable()
        spent = budget.stop()
        drops = {k: v - drops[k] for k, v in udp_drops(drop_ports).items()}
        gc.callbacks.remove(collecting)
        probe.cancel()
        TransportLayer._datagram = datagram
        if profiler is not None:
            out = Path(profile_dir) / f"invite-{rate}.prof"
            out.parent.mkdir(parents=True, exist_ok=True)
            profiler.dump_stats(str(out))
            pstats.Stats(str(out)).sort_stats("tottime").print_stats(30)
        await asyncio.sleep(1.0)
        pushed = await apns.arrivals("call")
        sip = [pushed[c] - t for c, t in arrived.items() if c in pushed]
        inside = [leaving[c] - t for c, t in arrived.items() if c in leaving]
        after_read = [leaving[c] - t for c, t in read_at.items() if c in leaving]
        ApnsProvider.send, ApnsProvider.start = send, start

        # baseline: the same number of call pushes at the same rate, without SIP
        record = await gateway.instances.get(instances[0]["id"])
        record = record.__class__(**{**{f: getattr(record, f) for f in record.__struct_fields__},
                                     "push": [p for p in record.push if p.usage == "call"]})
        sent: dict[str, float] = {}
        tasks = []
        cpu = time.thread_time()
        start = time.monotonic()
        for n in range(calls):
            delay = start + n / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            call_id = f"direct-{n}"
            payload = CallPush(instance=record.id, call_id=call_id, caller_uri="sip:load@x",
                               callee="sip:user@x", push_id=call_id, connect="sip:127.0.0.1",
                               expires_at=time.time() + 60)
            sent[call_id] = time.monotonic()
            tasks.append(gateway.push.notify_now(record, payload))
        await asyncio.gather(*tasks)
        direct_cpu = time.thread_time() - cpu
        await asyncio.sleep(0.5)
        pushed = await apns.arrivals("call")
        direct_latency = [pushed[c] - t for c, t in sent.items() if c in pushed]
        return {"drops": drops, "spent": spent, "sip_cpu": spent["loop"][0] / calls, "direct_cpu": direct_cpu / calls, "lags": lags, "sip": sip, "inside": inside, "after_read": after_read, "direct": direct_latency, "calls": calls, "invites": len(arrived),
                "gc": pauses, "gc_generations": generations, "sipp_rc": result.returncode, "sipp_output": result.output}
    finally:
        if "thresholds" in locals():
            gc.unfreeze()
            gc.set_threshold(*thresholds)
        unpin_process(os.getpid())
        await bed.stop()
        await apns.stop()


@pytest.mark.slow
@pytest.mark.benchmark(group="invite-to-push")
@pytest.mark.parametrize("placement", PLACEMENTS)
@pytest.mark.parametrize("rate", [100, 500])
def test_invite_to_push_latency(benchmark, tmp_path, rate, placement):
    if placement == "split" and PEER_CPUS is None:
        pytest.skip("one core: nowhere else to put the peers")
    outcome = {}

    def run():
        outcome.update(uvloop.run(scenario(tmp_path, rate, placement)))

    benchmark.pedantic(run, rounds=1, iterations=1)
    sip, direct = outcome["sip"], outcome["direct"]
    assert sip and direct, outcome
    figures = {
        "rate_calls_per_s": rate,
        "apns_emulator": EMULATOR,
        "peers_nice": PEERS_NICE,
        "placement": placement,
        "calls_sent": outcome["calls"],
        "invites_seen": outcome["invites"],
        "pushed": len(sip),
        "sipp_exit": outcome["sipp_rc"],
        "sipp_failed_calls": sipp_count("Failed call", outcome["sipp_output"]),
        # UDP datagrams lost to full receive buffers during the load (a lost CANCEL
        # is retransmitted after 0.5, 1, 2 s...; a lost 180 never is)
        "udp_drops_gateway": outcome["drops"]["gateway"],
        "udp_drops_kamailio": outcome["drops"]["kamailio"],
        "udp_rcvbuf_errors_machine": outcome["drops"]["machine"],
        "invite_to_push_p50_ms": round(percentile(sip, 50) * 1000, 3),
        "invite_to_push_p99_ms": round(percentile(sip, 99) * 1000, 3),
        "invite_to_send_p50_ms": round(percentile(outcome["inside"], 50) * 1000, 3),
        "invite_to_send_p99_ms": round(percentile(outcome["inside"], 99) * 1000, 3),
        "read_to_send_p50_ms": round(percentile(outcome["after_read"], 50) * 1000, 3),
        "read_to_send_p99_ms": round(percentile(outcome["after_read"], 99) * 1000, 3),
        "loop_lag_p50_ms": round(percentile(outcome["lags"], 50) * 1000, 3),
        "loop_lag_p99_ms": round(percentile(outcome["lags"], 99) * 1000, 3),
        "direct_push_p50_ms": round(percentile(direct, 50) * 1000, 3),
        "direct_push_p99_ms": round(percentile(direct, 99) * 1000, 3),
    }
    # CPU time of the gateway's loop thread per call, which preemption on a crowded
    # machine does not inflate: a whole call (INVITE, 100, 180s, call push, CANCEL, 487,
    # missed-call push) against one direct call push
    figures["loop_cpu_per_call_ms"] = round(outcome["sip_cpu"] * 1000, 3)
    figures["loop_cpu_per_direct_push_ms"] = round(outcome["direct_cpu"] * 1000, 3)
    figures["cpu_ratio_call_to_push"] = round(outcome["sip_cpu"] / outcome["direct_cpu"], 2)
    # where the machine's two cores went during the load, per call: the gateway's process
    # (its loop and any other thread, plus this bench's stamping), the peers (the
    # emulator: two pushes per call; Kamailio by kind of process; SIPp), and the whole
    # machine's busy time, whose remainder is the kernel's softirq work nobody is billed
    # for and whatever else shares the machine. The emulator near 1000 ms per second of
    # load is saturated and its arrival times say more about it than about the gateway.
    spent, calls = outcome["spent"], outcome["calls"]
    names = {"gateway": "gateway_process", "emulator": "emulator", "kamailio": "kamailio", "sipp": "sipp"}
    names.update((k, k) for k in spent if k.startswith("kamailio_"))
    for name, label in names.items():
        user, system = spent[name]
        figures[f"{label}_cpu_per_call_ms"] = round((user + system) * 1000 / calls, 3)
        if name in ("gateway", "emulator", "kamailio", "sipp"):
            figures[f"{label}_system_cpu_per_call_ms"] = round(system * 1000 / calls, 3)
    ours = sum(sum(spent[name]) for name in ("gateway", "emulator", "kamailio", "sipp"))
    figures["bench_processes_cpu_per_call_ms"] = round(ours * 1000 / calls, 3)
    figures["machine_busy_per_call_ms"] = round(spent["machine_busy"] * 1000 / calls, 3)
    figures["machine_busy_fraction"] = round(spent["machine_busy_fraction"], 3)
    figures["load_seconds"] = round(spent["wall"], 2)
    # the loop runnable but without a core (the kernel's run-queue wait of its thread):
    # what the other processes on the two cores cost the gateway's latency
    figures["loop_runqueue_wait_per_call_ms"] = round(spent["loop_waited"] * 1000 / calls, 3)
    figures["loop_runqueue_wait_fraction"] = round(spent["loop_waited"] / spent["wall"], 3)
    figures["loop_preemptions"] = spent["loop_preempted"]
    pauses = outcome["gc"]
    figures["gc_ms_per_call"] = round(sum(pauses) * 1000 / outcome["calls"], 3)
    figures["gc_pause_max_ms"] = round(max(pauses, default=0.0) * 1000, 3)
    figures["gc_collections"] = len(pauses)
    figures["gc_collections_older"] = sum(1 for g in outcome["gc_generations"] if g > 0)
    figures["p50_ratio_to_direct"] = round(figures["invite_to_push_p50_ms"] / figures["direct_push_p50_ms"], 2)
    figures["p99_ratio_to_direct"] = round(figures["invite_to_push_p99_ms"] / figures["direct_push_p99_ms"], 2)
    benchmark.extra_info.update(figures)
    print(f"\n{figures}\nload average: {os.getloadavg()}")
    if outcome["sipp_rc"] != 0:
        print(f"SIPp's last words:\n{outcome['sipp_output'][-600:]}")
