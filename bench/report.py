"""Writes bench/report.md from one `make bench` run: every figure next to the baseline
measured in the same run, and the machine it ran on.

    python bench/report.py --benchmarks bench/results/benchmarks.json \
        --junit bench/results/junit.xml --capacity bench/results/capacity.json \
        --out bench/report.md

Inputs: pytest-benchmark's JSON (figures and ratios in each benchmark's extra_info), the
JUnit XML of the same pytest run (why a benchmark was skipped or failed), the capacity
scenario's JSON. A figure whose benchmark did not run appears as "not measured: <why>",
never as a number. Reads files only; depends on no gateway module.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Callable

# Where each benchmark lives, for "not measured" when its file is absent from this tree.
OWNERS = {
    "test_call_push_latency": "bench/test_call_push_latency.py (issue 7, branch `calls`)",
    "test_registration_bench": "bench/test_registration_bench.py (issue 5, branch `registration`)",
    "test_metrics_bench": "bench/test_metrics_bench.py (issue 8, branch `observability`)",
}


class Run:
    """The benchmarks of one run, found by a part of their pytest node id."""

    def __init__(self, benchmarks: dict | None, junit: dict[str, str]):
        self.benchmarks = (benchmarks or {}).get("benchmarks", [])
        self.junit = junit

    def find(self, pattern: str) -> dict | None:
        for bench in self.benchmarks:
            if re.search(pattern, bench["fullname"]):
                return bench
        return None

    def why_missing(self, pattern: str) -> str:
        for node, outcome in self.junit.items():
            if re.search(pattern, node):
                return outcome
        if not self.benchmarks and not self.junit:
            return "the pytest-benchmark run left no results"
        module = pattern.split("::")[0].split("/")[-1].replace(".py", "")
        for name, owner in OWNERS.items():
            if name in module and not Path(__file__).with_name(name + ".py").exists():
                return f"{owner} is not merged into this tree"
        return "the benchmark did not run (not collected)"


def read_junit(path: Path) -> dict[str, str]:
    """node id -> "skipped: reason" / "failed: message" for every test that did not pass."""
    outcomes: dict[str, str] = {}
    if not path.exists():
        return outcomes
    for case in ET.parse(path).getroot().iter("testcase"):
        node = case.get("classname", "").replace(".", "/") + ".py::" + case.get("name", "")
        for tag in ("skipped", "failure", "error"):
            element = case.find(tag)
            if element is not None:
                message = (element.get("message") or element.text or "").strip().splitlines()
                text = message[0] if message else tag
                outcomes[node] = f"{'skipped' if tag == 'skipped' else 'failed'}: {text[:160]}"
    return outcomes


def fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        value = f"{value:,.3g}" if abs(value) < 100 else f"{value:,.0f}"
    elif isinstance(value, int):
        value = f"{value:,}"
    return f"{value} {unit}".strip()


Row = tuple[str, str, str, str, str]  # figure, subject, baseline, ratio, goal


PLACEMENT_LABELS = {"shared": "gateway and peers sharing both cores",
                    "split": "peers on the other core"}


def call_run_label(name: str) -> str:
    """" at 500 calls/s, peers on the other core" for `...latency[500-split]`."""
    if "[" not in name:
        return ""
    rate, _, placement = name.rsplit("[", 1)[1].rstrip("]").partition("-")
    where = PLACEMENT_LABELS.get(placement, placement)
    return f" at {rate} calls/s" + (f", {where}" if where else "")


def rows_from(run: Run, pattern: str, figure: str, goal: str,
              build: Callable[[dict, dict], tuple[str, str, str]]) -> Row:
    bench = run.find(pattern)
    if bench is None:
        return (figure, f"not measured: {run.why_missing(pattern)}", "", "", goal)
    try:
        subject, baseline, ratio = build(bench["extra_info"], bench["stats"])
    except (KeyError, ZeroDivisionError, TypeError) as exc:
        return (figure, f"not measured: figure {exc} missing from the benchmark's output", "", "", goal)
    return (figure, subject, baseline, ratio, goal)


def median_of(run: Run, pattern: str) -> float:
    bench = run.find(pattern)
    if bench is None:
        raise KeyError(pattern)
    return bench["stats"]["median"]


def benchmark_rows(run: Run) -> list[Row]:
    rows: list[Row] = []
    for name, label in (("register-200", "574 B REGISTER 200"), ("invite", "905 B INVITE with SDP")):
        pattern = rf"test_parse\[{name}-c\]|test_parse\[c-{name}\]"
        rows.append(rows_from(run, pattern, f"SIP parser (Cython), {label}: vs Python twin", "py/c >= 10",
                              lambda e, s: (fmt(e["c_us"], "µs"), fmt(e["c_us"] * e["py_over_c"], "µs (Python twin)"),
                                            f"{e['py_over_c']:.1f}x faster")))
        rows.append(rows_from(run, pattern, f"SIP parser (Cython), {label}: vs httptools", "c/httptools <= 1.5",
                              lambda e, s: (fmt(e["c_us"], "µs"),
                                            fmt(e["c_us"] / e["c_over_httptools"], "µs (httptools, same size HTTP)"),
                                            f"{e['c_over_httptools']:.2f}x the time")))
    # (test, figure, goal, subject key, unit, baseline key stem, fraction or speedup key stem)
    for test, figure, goal, key, unit, stem, ratio, word in (
        ("schedule_and_cancel_a_million", "Timer wheel: schedule + cancel (1M)", ">= 10x call_later",
         "wheel_ns_per_pair", "ns/pair", "{}_ns_per_pair", "speedup_vs_{}", "x faster"),
        ("memory_per_pending_timer", "Timer wheel: memory per pending timer", "<= 1/3 of a TimerHandle",
         "wheel_bytes", "B", "{}_timerhandle_bytes", "fraction_of_{}", " of it"),
        ("fire_a_million_due_timers", "Timer wheel: 1M due timers fired", "(reference)",
         "wheel_fired_per_second", "/s", "{}_fired_per_second", "speedup_vs_{}", "x faster"),
    ):
        rows.append(rows_from(run, rf"test_timers_bench.py::test_{test}\[c\]", figure, goal,
                              lambda e, s, key=key, unit=unit, stem=stem, ratio=ratio, word=word: (
                                  fmt(e[key], unit),
                                  "; ".join(fmt(e[stem.format(loop)], f"{unit} ({loop})") for loop in ("uvloop", "asyncio")),
                                  " / ".join(f"{e[ratio.format(loop)]:.2f}{word}" for loop in ("uvloop", "asyncio"))
                                  + " (uvloop / asyncio)")))
    for kind in ("decode", "encode"):
        rows.append(rows_from(run, rf"test_api_codec.py::test_{kind}_msgspec",
                              f"API codec: {kind} (msgspec vs json)", "(reference)",
                              lambda e, s, kind=kind: (fmt(s["median"] * 1e6, "µs"),
                                                       fmt(median_of(run, rf"test_{kind}_stdlib_json") * 1e6, "µs (json)"),
                                                       f"{e['ratio_vs_stdlib_json']:.2f}x json's speed")))
    rows.append(rows_from(run, r"test_api_http.py::test_create_instance", "API: POST /v1/instances over HTTP",
                          "(reference)",
                          lambda e, s: (fmt(e["requests_per_second"], "req/s"),
                                        fmt(run.find(r"test_trivial_aiohttp_endpoint")["extra_info"]["requests_per_second"],
                                            "req/s (trivial aiohttp endpoint)"),
                                        f"{e['ratio_vs_trivial_endpoint']:.2f}x")))
    rows.append(rows_from(run, r"test_store_bench.py::test_batched_writes", "Store: batched writes",
                          "(reference)",
                          lambda e, s: (fmt(e["batched_writes_per_s"], "writes/s"),
                                        fmt(e["single_commit_writes_per_s"], "writes/s (one commit each)"),
                                        f"{e['speedup_vs_single_commit']:.1f}x")))
    for rtt, label in (("loopback", "loopback emulator"), ("rtt20ms", "emulator answering in 20 ms")):
        rows.append(rows_from(run, rf"test_apns_pushes_per_second_on_one_connection\[{rtt}\]",
                              f"Push: APNs pushes/s on one HTTP/2 connection ({label})", "(reference: bare h2)",
                              lambda e, s: (fmt(e["pushes_per_second"], "/s"),
                                            fmt(e["raw_h2_pushes_per_second"], "/s (bare h2 client)") + "; "
                                            + fmt(e["sequential_pushes_per_second"], "/s (one at a time)"),
                                            f"{e['ratio_vs_raw_h2']:.2f}x bare h2, "
                                            f"{e['ratio_vs_sequential']:.1f}x sequential")))
    rows.append(rows_from(run, r"test_registration_bench.py::test_engine_registrations",
                          "Registrations/s, digest auth (engine vs SIPp; medians of alternated runs)", ">= 2x SIPp (issue 5)",
                          lambda e, s: (fmt(e["registrations_per_s"], "/s"),
                                        fmt(e["sipp_registrations_per_s"], "/s (SIPp)"),
                                        f"{e['throughput_ratio_vs_sipp']:.2f}x")))
    rows.append(rows_from(run, r"test_registration_bench.py::test_engine_registrations",
                          "CPU per registration (engine vs SIPp; medians of alternated runs)",
                          "<= 0.5x SIPp (issue 5)",
                          lambda e, s: (fmt(e["cpu_us_per_registration"], "µs"),
                                        fmt(e["sipp_cpu_us_per_registration"], "µs (SIPp)"),
                                        f"{e['cpu_ratio_vs_sipp']:.2f}x (per pair: "
                                        + ", ".join(f"{r:.2f}" for r in e["cpu_ratio_runs"]) + ")")))
    rows.append(rows_from(run, r"test_registration_bench.py::test_engine_registrations",
                          "Kamailio's CPU per registration (engine's runs vs SIPp's runs)",
                          "(reference: what bounds two cores)",
                          lambda e, s: (fmt(e["kamailio_cpu_us_per_registration"], "µs"),
                                        fmt(e["sipp_kamailio_cpu_us_per_registration"], "µs (SIPp's runs)"),
                                        "")))
    calls = [b["fullname"] for b in run.benchmarks if "test_invite_to_push_latency" in b["fullname"]]
    for name in calls or [r"test_call_push_latency.py::test_invite_to_push_latency"]:
        rate = call_run_label(name)
        rows.append(rows_from(run, re.escape(name) if calls else name,
                              f"INVITE arriving to call push leaving, p50 / p99{rate} (SIPp via Kamailio)",
                              "p99 <= 5 ms (issue 7)",
                              lambda e, s: (fmt(e["invite_to_send_p50_ms"], "ms") + " / " + fmt(e["invite_to_send_p99_ms"], "ms")
                                            + " (from the kernel's receive stamp)",
                                            fmt(e["read_to_send_p50_ms"], "ms") + " / " + fmt(e["read_to_send_p99_ms"], "ms")
                                            + f" from the loop's read; loop lag p99 {fmt(e['loop_lag_p99_ms'], 'ms')}, "
                                            + f"longest GC pause {fmt(e['gc_pause_max_ms'], 'ms')}",
                                            f"{e['loop_cpu_per_call_ms']:.2f} ms loop CPU per call")))
        rows.append(rows_from(run, re.escape(name) if calls else name,
                              f"INVITE arriving to call push at the APNs emulator, p50 / p99{rate}",
                              "(reference: includes the emulator's own loop)",
                              lambda e, s: (fmt(e["invite_to_push_p50_ms"], "ms") + " / " + fmt(e["invite_to_push_p99_ms"], "ms")
                                            + f" ({fmt(e.get('pushed'))} of {fmt(e.get('calls_sent'))} pushed)",
                                            fmt(e["direct_push_p50_ms"], "ms") + " / " + fmt(e["direct_push_p99_ms"], "ms")
                                            + " (same pushes sent directly)",
                                            f"{e['p50_ratio_to_direct']:.2f}x / {e['p99_ratio_to_direct']:.2f}x")))
        rows.append(rows_from(run, re.escape(name) if calls else name,
                              f"CPU per call by process{rate}: gateway process; APNs emulator, Kamailio, SIPp",
                              "(reference: where the two cores went)",
                              lambda e, s: (fmt(e["gateway_process_cpu_per_call_ms"], "ms"),
                                            fmt(e["emulator_cpu_per_call_ms"], "ms")
                                            + f" ({e.get('apns_emulator', 'python')}), "
                                            + fmt(e["kamailio_cpu_per_call_ms"], "ms") + ", "
                                            + fmt(e["sipp_cpu_per_call_ms"], "ms"),
                                            f"machine {e['machine_busy_fraction'] * 100:.0f} % busy"
                                            + (f"; loop waited {fmt(e['loop_runqueue_wait_per_call_ms'], 'ms')}"
                                               " per call for a core" if "loop_runqueue_wait_per_call_ms" in e else ""))))
    rows.append(rows_from(run, r"test_metrics_bench.py::test_register_path_with_metrics",
                          "Metrics overhead on the REGISTER path", "<= 5 %",
                          lambda e, s: (fmt(e["interleaved_us_metered_min"], "µs/registration"),
                                        fmt(e["interleaved_us_plain_min"], "µs (metrics off)"),
                                        f"+{e['overhead_pct_paired']:.1f} % paired, "
                                        f"+{e['modelled_overhead_pct']:.1f} % modelled")))
    rows.append(rows_from(run, r"test_metrics_bench.py::test_gateway_recorders",
                          "Metric recorders vs prometheus-client", "< 1x",
                          lambda e, s: (fmt(e["ns_per_inc_and_observe"], "ns"),
                                        fmt(run.find(r"test_prometheus_client_counter_and_histogram")["extra_info"]
                                            ["ns_per_inc_and_observe"], "ns (prometheus-client)"),
                                        f"{e['ratio_to_prometheus_client']:.2f}x the time")))
    return rows


def capacity_rows(cap: dict | None) -> list[Row]:
    label = "Capacity"
    if cap is None:
        return [(label, "not measured: the capacity scenario did not run", "", "", "")]
    if "not_measured" in cap and "hold_s" not in cap:
        return [(label, f"not measured: {cap['not_measured']}", "", "", "")]
    why = f"not measured: {cap.get('not_measured', 'the scenario did not get there')}"
    n = cap["instances"]
    rows: list[Row] = []
    lost_hold = cap.get("lost_after_hold")
    rows.append((f"Capacity: {n:,} instances, UDP, expiry {cap['expires_s']} s, "
                 f"{cap['refresh_cycles']} refresh cycles: registrations lost",
                 (f"{fmt(lost_hold)} missing from Kamailio's table" if lost_hold is not None
                  else f"table check {why}") + "; at most "
                 f"{fmt(cap.get('hold_max_not_registered'))} not registered at any sample "
                 f"(mean {fmt(cap.get('hold_mean_not_registered'))})"
                 + (f"; why at the worst sample: {cap['hold_worst_sample_why']}"
                    if cap.get("hold_max_not_registered") and cap.get("hold_worst_sample_why") else ""),
                 f"{fmt(n)} expected", "", "0"))
    kam = cap.get("kamailio_after_hold")
    if kam:
        rows.append(("Capacity: contacts Kamailio dropped as expired (lapsed registrations), ramp + hold",
                     fmt(kam.get("usrloc:location_expires")),
                     f"{fmt(kam.get('registrar:accepted_regs'))} REGISTERs accepted by Kamailio", "", "0"))
    rows.append(("Capacity: initial ramp",
                 (fmt(cap.get("ramp_s"), "s") + f" ({fmt(cap.get('ramp_registrations_per_s'))}/s)"
                  if cap.get("ramp_s") else f"not all registered within the bound: "
                  f"{fmt(cap.get('ramp_not_registered_at_end'))} left ({cap.get('ramp_not_registered_why')}); "
                  f"outcomes {cap.get('ramp_outcomes')}"),
                 fmt(n / cap["rate_per_s"], "s at the configured rate"),
                 f"{n / cap['rate_per_s'] / cap['ramp_s']:.2f}x the configured rate" if cap.get("ramp_s") else "n/a", ""))
    rows.append(("Capacity: gateway CPU share at steady state",
                 fmt(cap.get("gateway_cpu_share_pct"), "% of one core") + f" at {fmt(cap.get('refreshes_per_s'))} REGISTER exchanges/s (refreshes and retries)",
                 fmt(cap.get("kamailio_cpu_share_pct"), "% (Kamailio, same refreshes)"),
                 f"{cap['gateway_cpu_share_pct'] / cap['kamailio_cpu_share_pct']:.1f}x Kamailio"
                 if cap.get("kamailio_cpu_share_pct") else "n/a", ""))
    rows.append(("Capacity: CPU per REGISTER exchange (REGISTER/401/REGISTER/200)",
                 fmt(cap.get("gateway_cpu_us_per_refresh"), "µs"),
                 fmt(cap.get("kamailio_cpu_us_per_refresh"), "µs (Kamailio)"),
                 f"{cap['gateway_cpu_us_per_refresh'] / cap['kamailio_cpu_us_per_refresh']:.1f}x"
                 if cap.get("kamailio_cpu_us_per_refresh") and cap.get("gateway_cpu_us_per_refresh") else "n/a",
                 "(reference)"))
    rows.append(("Capacity: resident memory per instance above the empty gateway",
                 fmt(cap.get("rss_bytes_per_instance"), "B"),
                 fmt(cap.get("empty_process_rss_mb"), "MB (empty gateway)") + "; " + fmt(cap.get("rss_mb"), "MB loaded"),
                 "", "<= 2048 B"))
    rows.append(("Capacity: timer lateness p99 (probe on the gateway's wheel, 0.1 s)",
                 fmt(cap.get("timer_lateness_p99_ms"), "ms") + f" (p50 {fmt(cap.get('timer_lateness_p50_ms'))}, "
                 f"max {fmt(cap.get('timer_lateness_max_ms'))})",
                 "10 ms wheel tick", f"{cap['timer_lateness_p99_ms'] / 10:.1f} ticks"
                 if cap.get("timer_lateness_p99_ms") is not None else "n/a", ""))
    for phase in ("ramp", "hold"):
        pauses = cap.get(f"{phase}_gc_pauses")
        if pauses is not None:
            longest = max((p["max_ms"] for p in pauses.values()), default=0.0)
            rows.append((f"Capacity: cyclic GC pauses during the {phase} ({cap.get('gc', 'tuned')} thresholds)",
                         f"longest {fmt(longest, 'ms')}; " + (", ".join(
                             f"{g}: {p['collections']} taking {p['total_s']} s" for g, p in pauses.items())
                             or "no collection"),
                         "", "", "(reference)"))
    storm = cap.get("storm_s")
    if "storm_not_registered_at_end" not in cap:
        rows.append(("Restart storm: all re-registered after a gateway restart", why, "", "", "0 lost"))
        return rows
    rows.append(("Restart storm: all re-registered after a gateway restart",
                 fmt(storm, "s") + f" ({fmt(cap.get('storm_registrations_per_s'))}/s), "
                 f"{fmt(cap.get('lost_after_storm'))} lost",
                 fmt(n / cap["rate_per_s"], "s at the configured rate"),
                 f"{n / cap['rate_per_s'] / storm:.2f}x the configured rate" if storm else "did not finish", "0 lost"))
    return rows


def machine() -> list[tuple[str, str]]:
    def first(command: list[str]) -> str:
        if shutil.which(command[0]) is None:
            return "not installed"
        try:
            out = subprocess.run(command, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"unknown ({exc})"
        lines = (out.stdout + out.stderr).strip().splitlines()
        return lines[0].strip() if lines else "unknown"

    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem_kb = int(f.readline().split()[1])
    versions = []
    for dist in ("uvloop", "msgspec", "Cython", "httptools", "aiohttp", "prometheus-client", "pytest-benchmark"):
        try:
            from importlib.metadata import version

            versions.append(f"{dist} {version(dist)}")
        except Exception:  # noqa: BLE001 - a missing package is reported as such
            versions.append(f"{dist} not installed")
    commit = first(["git", "rev-parse", "--short", "HEAD"])
    return [
        ("CPU", f"{cpu}, {os.cpu_count()} logical cores"),
        ("Memory", f"{mem_kb / 2**20:.1f} GiB"),
        ("Kernel", platform.release()),
        ("Python", f"{platform.python_implementation()} {platform.python_version()}"),
        ("Kamailio", first(["kamailio", "-v"])),
        ("SIPp", first(["sipp", "-v"])),
        ("Packages", ", ".join(versions)),
        ("Commit", commit),
        ("Load average at report time (1/5/15 min)", " / ".join(f"{x:.2f}" for x in os.getloadavg())),
    ]


def render(rows: list[Row], cap_rows: list[Row], env: list[tuple[str, str]], run: Run, meta: dict) -> str:
    out = ["# Benchmark report", "",
           f"Generated {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} by `{meta['command']}`.",
           "Every figure sits next to a baseline measured in the same run on the same machine; "
           "read ratios, not absolute numbers, across machines.", ""]
    if meta.get("load_start"):
        out.append(f"Load average when the run started: {meta['load_start']} "
                   "(the machine is shared: other work competes for its cores).")
        out.append("")
    out += ["## Figures", "", "| Figure | Measured | Baseline (same run) | Ratio | Goal |", "|---|---|---|---|---|"]
    for row in rows + cap_rows:
        out.append("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |")
    out += ["", "## Machine", "", "| | |", "|---|---|"]
    out += [f"| {k} | {v} |" for k, v in env]
    if run.benchmarks:
        out += ["", "## Every benchmark of the run", "",
                "Median per round from pytest-benchmark, and everything the benchmark put in `extra_info`.", "",
                "| Benchmark | Median | extra_info |", "|---|---|---|"]
        for bench in run.benchmarks:
            info = ", ".join(f"{k}={fmt(v)}" for k, v in bench.get("extra_info", {}).items())
            out.append(f"| `{bench['fullname'].split('/')[-1]}` | {bench['stats']['median'] * 1e3:.4g} ms | {info} |")
    not_passed = {k: v for k, v in run.junit.items()}
    if not_passed:
        out += ["", "## Benchmarks that did not pass", ""]
        out += [f"- `{k}`: {v}" for k, v in sorted(not_passed.items())]
    return "\n".join(out) + "\n"


def load_json(path: Path) -> dict | None:
    if not path.exists() or path.stat().st_size == 0:
        return None
    return json.loads(path.read_text())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="write bench/report.md")
    parser.add_argument("--benchmarks", default="bench/results/benchmarks.json")
    parser.add_argument("--junit", default="bench/results/junit.xml")
    parser.add_argument("--capacity", default="bench/results/capacity.json")
    parser.add_argument("--out", default="bench/report.md")
    parser.add_argument("--command", default="make bench")
    parser.add_argument("--load-start", default="")
    args = parser.parse_args(argv)
    run = Run(load_json(Path(args.benchmarks)), read_junit(Path(args.junit)))
    text = render(benchmark_rows(run), capacity_rows(load_json(Path(args.capacity))), machine(), run,
                  {"command": args.command, "load_start": args.load_start})
    Path(args.out).write_text(text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
