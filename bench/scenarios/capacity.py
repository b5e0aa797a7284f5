"""Capacity and restart storm: N instances registered with a local Kamailio over UDP.

    python -m bench.scenarios.capacity --out bench/results/capacity.json [--quick]

What it does, on loopback only, bounded in time and traffic, stopping by itself:

1. starts Kamailio as a registrar with digest auth on (tests/support/registrar.py, usrloc
   db_mode 0, shared memory raised to `--shm` MB);
2. starts the real `gateway.app.Gateway` once on an EMPTY store and reads this process's
   resident memory: the "empty process" figure;
3. bulk-loads N instances straight into the store from a child process (the device API
   would only add HTTP time; the child keeps the loader's allocations out of our RSS);
4. starts the gateway on that store, then `gateway.app.tune_gc()` as `serve` does (`--gc
   default` leaves Python's thresholds), and waits until every instance is registered
   (the ramp, paced at the configured rate); notes the collector's pauses from here on;
5. holds for `--cycles` refresh cycles of a short expiry: samples how many instances are not
   registered, the gateway's CPU share (this process's utime+stime over wall time) and
   Kamailio's, timer lateness from a probe timer on the gateway's own wheel;
6. checks every instance's Contact against Kamailio's location table (ul.dump);
7. restart storm: stops the gateway (bindings stay in Kamailio), starts a new one on the
   same store and times until all N are registered again, then checks the table again.

The gateway runs in this process so that its CPU and memory are this process's; the driver
only sleeps and samples (every 10 s) while the figures are taken. Where the memory per
instance goes (by allocation site, or split into Python's allocator and the heaps) is
`bench.scenarios.memory`'s job. Depends on gateway.app,
tests/support (Kamailio launcher, record factory); nothing depends on it.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONFIG = """
state_dir = "{state}"
[device_api]
host = "127.0.0.1"
port = {api_port}
plain_http = true
[admin]
host = "127.0.0.1"
port = {admin_port}
[sip]
t1 = 0.5
t2 = 4.0
keepalive_interval = 30.0
tls_ca_file = "{ca_file}"
[sip.provider_face]
host = "127.0.0.1"
udp_port = {udp_port}
tcp_port = 0
tls_port = 0
[sip.device_face]
udp_port = 0
tcp_port = 0
tls_port = 0
[sip.registration]
rate = {rate}
burst = {burst}
per_registrar_rate = {rate}
per_registrar_burst = {burst}
retry_base = 2.0
retry_max = 30.0
[store]
path = "{state}/gw.db"
key_file = "{state}/store.key"
[logging]
level = "warning"
[[apps]]
id = "demo"
api_key_hashes = ["{key_hash}"]
[apps.webpush]
vapid_key_file = "{state}/vapid.pem"
"""


def config_text(state: Path, ca_file: str, rate: float, burst: int) -> str:
    from gateway import config as gwconfig
    from tests.support.ports import free_port

    return CONFIG.format(state=state, api_port=free_port(), admin_port=free_port(),
                         udp_port=free_port(socket.SOCK_DGRAM), ca_file=ca_file, rate=rate,
                         burst=burst, key_hash=gwconfig.api_key_hash("capacity-key-0123456789"))


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def session_cpu_seconds(sid: int) -> float:
    """utime+stime of every process in session `sid` (Kamailio runs in its own)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid:  # field 6 (session) counted from after the comm
            total += int(fields[11]) + int(fields[12])
    return total / tick


def kamailio_stats(kam) -> dict[str, int]:
    """Kamailio's own counters since its start: REGISTERs it accepted (a retransmitted
    REGISTER is accepted again) and contacts it dropped because they expired (a
    registration that lapsed: the gateway refreshed too late)."""
    found = {}
    for group in ("registrar:", "usrloc:"):
        for line in kam.kamcmd("stats.get_statistics", group).splitlines():
            key, _, value = line.partition(" = ")
            if key.strip() in ("registrar:accepted_regs", "usrloc:location_expires",
                               "usrloc:location_contacts") and value.strip().isdigit():
                found[key.strip()] = int(value)
    return found


# --- the bulk load, in a child process ---------------------------------------------------


async def bulk_load(config_file: str, count: int, registrar: str, domain: str, expires: int) -> None:
    from gateway import config as gwconfig
    from gateway.store import open_store
    from tests.support.instances import make_instance

    config = gwconfig.parse(Path(config_file).read_text(), config_file)
    store = open_store(config.store.path, config.store.key_file)
    await store.open()
    try:
        chunk = 500  # puts in flight at once: the store's writer batches them
        for start in range(0, count, chunk):
            await asyncio.gather(*(store.put_instance(make_instance(
                store.secret_box, n, id=f"cap-{n:06d}", password=f"pw-c{n}", aor=f"sip:c{n}@{domain}",
                auth_username=f"c{n}", registrar=registrar, reg_expires=expires, app_id="demo",
                device_id=f"dev-{n:06d}", registered_until=None))
                for n in range(start, min(start + chunk, count))))
    finally:
        await store.close()


# --- the scenario ---------------------------------------------------------------------------


class Scenario:
    def __init__(self, args):
        self.args = args
        self.result: dict = {"instances": args.instances, "expires_s": args.expires,
                             "refresh_cycles": args.cycles, "rate_per_s": args.rate,
                             "kamailio_shm_mb": args.shm, "transport": "udp", "digest_auth": True,
                             "gc": args.gc,
                             "creation": "bulk-loaded into the store by a child process (not through the API)"}
        self.work = Path(tempfile.mkdtemp(prefix="capacity-"))

    def clients(self, gateway) -> dict:
        return gateway.registrations.clients

    @staticmethod
    def count_outcomes(gateway) -> dict[str, int]:
        """REGISTER exchanges by outcome (a refresh is one exchange: REGISTER, 401,
        REGISTER with credentials, 200), through the registration service's metrics hook."""
        outcomes: dict[str, int] = {}

        def note(outcome: str, rtt: float) -> None:
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
            RTTS.append(rtt)

        gateway.registrations.on_register_result = note
        return outcomes

    def not_registered(self, gateway) -> int:
        return sum(1 for c in self.clients(gateway).values() if c.state != "registered")

    def errors(self, gateway) -> dict[str, int]:
        """The instances not registered, by state and last error (what went wrong)."""
        found: dict[str, int] = {}
        for c in self.clients(gateway).values():
            if c.state != "registered":
                key = f"{c.state}: {c.last_error}" if c.last_error else c.state
                found[key] = found.get(key, 0) + 1
        return dict(sorted(found.items(), key=lambda item: -item[1])[:8])

    async def wait_all_registered(self, gateway, bound: float) -> float | None:
        started = shown = time.monotonic()
        while time.monotonic() - started < bound:
            down = self.not_registered(gateway)
            if len(self.clients(gateway)) == self.args.instances and not down:
                return time.monotonic() - started
            if time.monotonic() - shown >= 30:
                shown = time.monotonic()
                progress(f"{self.args.instances - down:,} of {self.args.instances:,} registered "
                         f"after {shown - started:.0f} s")
            await asyncio.sleep(0.5)
        return None

    async def missing_in_table(self, kam, gateway) -> int:
        from gateway.registrations import contact_token

        # ul.dump of 100,000 contacts takes Kamailio minutes on a busy machine
        table = await asyncio.to_thread(kam.all_contacts, 60.0 + self.args.instances / 200)
        bound = {}
        for aor, uris in table.items():
            bound[aor.split("@")[0]] = " ".join(uris)
        missing = 0
        for n in range(self.args.instances):
            if contact_token(f"cap-{n:06d}") not in bound.get(f"c{n}", ""):
                missing += 1
        self.result.setdefault("kamailio_table_contacts", []).append(sum(len(u) for u in table.values()))
        return missing

    async def empty_gateway_rss(self, ca_file: str) -> int:
        from gateway import config as gwconfig
        from gateway.app import Gateway

        state = self.work / "empty"
        config = gwconfig.parse(config_text(state, ca_file, self.args.rate, self.args.burst), "empty.toml")
        gateway = Gateway(config)
        await gateway.start()
        await asyncio.sleep(2.0)
        gc.collect()
        rss = rss_bytes()
        await gateway.stop()
        return rss

    async def run(self) -> dict:
        from gateway import config as gwconfig
        from gateway.app import Gateway, tune_gc
        from tests.support.registrar import AuthRegistrar

        args, res = self.args, self.result
        kam = AuthRegistrar(self.work / "kamailio", shm_mb=args.shm, children=4, debug=0,
                            max_expires=max(3600, args.expires), nonce_expire=max(300, args.expires * 2))
        kam.start()
        try:
            res["empty_process_rss_mb"] = round((empty := await self.empty_gateway_rss(kam.ca_file)) / 2**20, 1)

            state = self.work / "state"
            text = config_text(state, kam.ca_file, args.rate, args.burst)
            config_file = self.work / "gateway.toml"
            config_file.write_text(text)
            config = gwconfig.parse(text, str(config_file))
            registrar = f"sip:127.0.0.1:{kam.udp_port};transport=udp"
            progress(f"bulk-loading {args.instances:,} instances")
            t0 = time.monotonic()
            subprocess.run([sys.executable, "-m", "bench.scenarios.capacity", "--load", str(config_file),
                            "--instances", str(args.instances), "--registrar", registrar,
                            "--domain", kam.domain, "--expires", str(args.expires)],
                           check=True, timeout=args.instances / 50 + 120)
            res["bulk_load_s"] = round(time.monotonic() - t0, 1)

            # --- ramp ----------------------------------------------------------------
            progress("starting the gateway: ramp")
            gateway = Gateway(config)
            started = time.monotonic()
            await gateway.start()
            if args.gc == "tuned":
                tune_gc()  # what `serve` does once the gateway has started
            pauses = GcPauses()
            outcomes = self.count_outcomes(gateway)
            ramp_bound = args.instances / args.rate * 4 + 60
            took = await self.wait_all_registered(gateway, ramp_bound)
            # from the start call, so the gateway's own start (reading the store) counts
            took = time.monotonic() - started if took is not None else None
            res["ramp_s"] = None if took is None else round(took, 1)
            res["ramp_registrations_per_s"] = round(args.instances / took, 1) if took else None
            res["ramp_not_registered_at_end"] = self.not_registered(gateway)
            res["ramp_not_registered_why"] = self.errors(gateway)
            res["ramp_outcomes"] = dict(outcomes)
            res["ramp_gc_pauses"] = pauses.summary()
            res["ramp_exchange_ms_p50_p99"] = [round(1e3 * percentile(RTTS, p), 1) for p in (50, 99)]
            RTTS.clear()

            # --- hold for N refresh cycles ------------------------------------------------
            lateness: list[float] = []
            loop = asyncio.get_running_loop()
            probe_interval = 0.1

            def probe(_arg):
                lateness.append(loop.time() - handle.when)
                gateway.wheel.reschedule(handle, probe_interval)

            handle = gateway.wheel.call_later(probe_interval, probe, None)
            refresh_period = args.expires * 0.9
            hold = refresh_period * args.cycles + 5
            outcomes.clear()
            cpu0, kcpu0, wall0 = sum(os.times()[:2]), session_cpu_seconds(kam.process.pid), time.monotonic()
            worst = 0
            samples = []
            while time.monotonic() - wall0 < hold:
                await asyncio.sleep(10.0)
                down = self.not_registered(gateway)
                samples.append(down)
                if down > worst or "hold_worst_sample_why" not in res:
                    res["hold_worst_sample_why"] = self.errors(gateway)
                worst = max(worst, down)
                if len(samples) % 6 == 0:
                    progress(f"holding: {time.monotonic() - wall0:.0f} of {hold:.0f} s, {down} not registered")
            wall = time.monotonic() - wall0
            cpu, kcpu = sum(os.times()[:2]) - cpu0, session_cpu_seconds(kam.process.pid) - kcpu0
            sent = sum(outcomes.values())
            res["hold_outcomes"] = dict(outcomes)
            res["hold_gc_pauses"] = pauses.summary()
            pauses.close()
            handle.cancel()
            gc.collect()
            rss = rss_bytes()
            res.update(
                hold_s=round(wall, 1),
                refreshes_in_hold=sent,
                refreshes_per_s=round(sent / wall, 1),
                gateway_cpu_share_pct=round(100 * cpu / wall, 1),
                kamailio_cpu_share_pct=round(100 * kcpu / wall, 1),
                gateway_cpu_us_per_refresh=round(1e6 * cpu / sent, 1) if sent else None,
                kamailio_cpu_us_per_refresh=round(1e6 * kcpu / sent, 1) if sent else None,
                hold_max_not_registered=worst,
                hold_mean_not_registered=round(statistics.fmean(samples), 1) if samples else None,
                rss_mb=round(rss / 2**20, 1),
                rss_bytes_per_instance=round((rss - empty) / args.instances),
                timer_probes=len(lateness),
                timer_lateness_p50_ms=round(1e3 * percentile(lateness, 50), 2),
                timer_lateness_p99_ms=round(1e3 * percentile(lateness, 99), 2),
                timer_lateness_max_ms=round(1e3 * max(lateness), 2) if lateness else None,
            )
            try:
                res["lost_after_hold"] = await self.missing_in_table(kam, gateway)
            except RuntimeError as exc:  # the table could not be read: say so, go on to the storm
                res["not_measured"] = f"location table after the hold: {exc}"
            res["kamailio_after_hold"] = kamailio_stats(kam)

            # --- restart storm ----------------------------------------------------------
            progress("restart storm")
            await gateway.stop()
            gateway = Gateway(config)
            started = time.monotonic()
            await gateway.start()
            if args.gc == "tuned":
                tune_gc()
            outcomes = self.count_outcomes(gateway)
            took = await self.wait_all_registered(gateway, args.instances / args.rate * 4 + 60)
            took = time.monotonic() - started if took is not None else None
            res["storm_s"] = None if took is None else round(took, 1)
            res["storm_registrations_per_s"] = round(args.instances / took, 1) if took else None
            res["storm_not_registered_at_end"] = self.not_registered(gateway)
            res["storm_not_registered_why"] = self.errors(gateway)
            res["storm_outcomes"] = dict(outcomes)
            res["lost_after_storm"] = await self.missing_in_table(kam, gateway)
            res["kamailio_after_storm"] = kamailio_stats(kam)
            await gateway.stop()
        finally:
            kam.stop()
        return res


RTTS: list[float] = []


class GcPauses:
    """How long the cyclic garbage collector stopped the loop, per generation (a full
    collection walks every tracked object: with 100,000 instances, a stall)."""

    def __init__(self):
        self.started = 0.0
        self.pauses: dict[int, list[float]] = {0: [], 1: [], 2: []}
        gc.callbacks.append(self._note)

    def _note(self, phase: str, info: dict) -> None:
        if phase == "start":
            self.started = time.perf_counter()
        else:
            self.pauses[info["generation"]].append(time.perf_counter() - self.started)

    def summary(self) -> dict:
        found = {f"gen{g}": {"collections": len(p), "max_ms": round(1e3 * max(p), 1),
                             "total_s": round(sum(p), 2)}
                 for g, p in self.pauses.items() if p}
        for p in self.pauses.values():
            p.clear()
        return found

    def close(self) -> None:
        gc.callbacks.remove(self._note)


def progress(text: str) -> None:
    print(f"capacity: {text}", file=sys.stderr, flush=True)


def percentile(values: list[float], pct: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * pct / 100))]


def main(argv: list[str] | None = None) -> int:
    quick = os.environ.get("QUICK") == "1"
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--instances", type=int, default=5000 if quick else 100_000)
    parser.add_argument("--expires", type=int, default=30 if quick else 300,
                        help="REGISTER expiry asked for (s): short, so that refreshes happen")
    parser.add_argument("--cycles", type=int, default=3, help="refresh cycles to hold")
    parser.add_argument("--rate", type=float, default=500.0, help="sip.registration.rate (/s)")
    parser.add_argument("--burst", type=int, default=50)
    parser.add_argument("--shm", type=int, default=256 if quick else 1024, help="Kamailio -m (MB)")
    parser.add_argument("--gc", choices=("tuned", "default"), default="tuned",
                        help="tuned: gateway.app.tune_gc() after the start, as `serve` does; "
                             "default: Python's thresholds (to see what the tuning is worth)")
    parser.add_argument("--out", default="bench/results/capacity.json")
    parser.add_argument("--load", help=argparse.SUPPRESS)  # child: bulk-load this config's store
    parser.add_argument("--registrar", help=argparse.SUPPRESS)
    parser.add_argument("--domain", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.load:
        asyncio.run(bulk_load(args.load, args.instances, args.registrar, args.domain, args.expires))
        return 0

    import uvloop

    from tests.support.kamailio import kamailio_binary

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if kamailio_binary() is None:
        out.write_text(json.dumps({"not_measured": "kamailio is not installed"}))
        return 0
    scenario = Scenario(args)
    started = time.monotonic()
    try:
        result = uvloop.run(scenario.run())
    except Exception as exc:  # noqa: BLE001 - the report says why instead of a figure
        result = dict(scenario.result, not_measured=f"scenario failed: {type(exc).__name__}: {exc}")
    result["wall_s"] = round(time.monotonic() - started, 1)
    result["loadavg_end"] = os.getloadavg()
    result["python"] = platform.python_version()
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
