"""Where a registered instance's memory goes: a tracemalloc walk of a gateway holding N.

    python -m bench.scenarios.memory --instances 5000 [--expires 30] [--top 30] [--rss]

The capacity scenario gives one figure (resident memory per instance above the empty
process); this gives its breakdown. On loopback only, bounded, stopping by itself:

1. starts Kamailio with digest auth (as the capacity scenario does) and bulk-loads N
   instances into a store from a child process (bench.scenarios.capacity's loader);
2. starts tracing allocations (tracemalloc, one frame), then the real `gateway.app.Gateway`
   on that store, waits until every instance is registered and then one refresh cycle
   more (so what a refresh keeps, a saved challenge for instance, is in);
3. collects garbage and prints the bytes still held per instance, by allocation site
   (file:line, with the objects per instance) and by module, and their total.

With `--rss` it traces nothing and says where the resident memory went instead: growth
per instance of the resident set, of the memory Python's small-object allocator holds
(its blocks in use, its free blocks and pools: fragmentation), and of the malloc heaps
(the main one and the threads' arenas), from /proc/self/smaps and
`sys._debugmallocstats()`.

Tracing slows the gateway down a lot: keep N in the thousands. The sum per instance is
what Python allocated and still holds; the capacity scenario's RSS figure adds the
allocator's fragmentation on top. Depends on gateway.app, bench.scenarios.capacity and
tests/support; nothing depends on it.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

from bench.scenarios.capacity import config_text, progress


async def walk(args) -> dict:
    from gateway import config as gwconfig
    from gateway.app import Gateway, tune_gc
    from tests.support.registrar import AuthRegistrar

    # stopped by a signal, still stop Kamailio (the finally below)
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, asyncio.current_task().cancel)
    work = Path(tempfile.mkdtemp(prefix="memory-"))
    kam = AuthRegistrar(work / "kamailio", shm_mb=args.shm, children=2, debug=0,
                        max_expires=3600, nonce_expire=max(300, args.expires * 4))
    kam.start()
    try:
        text = config_text(work / "state", kam.ca_file, args.rate, 50)
        config_file = work / "gateway.toml"
        config_file.write_text(text)
        config = gwconfig.parse(text, str(config_file))
        registrar = f"sip:127.0.0.1:{kam.udp_port};transport=udp"
        progress(f"bulk-loading {args.instances:,} instances")
        subprocess.run([sys.executable, "-m", "bench.scenarios.capacity", "--load", str(config_file),
                        "--instances", str(args.instances), "--registrar", registrar,
                        "--domain", kam.domain, "--expires", str(args.expires)],
                       check=True, timeout=args.instances / 50 + 120)

        # the empty gateway first: what a start allocates once (imports, caches, pools)
        # is not per instance
        empty = Gateway(gwconfig.parse(config_text(work / "empty", kam.ca_file, args.rate, 50),
                                       "empty.toml"))
        await empty.start()
        await asyncio.sleep(1.0)
        await empty.stop()
        del empty
        gc.collect()
        if args.rss:
            heap0 = heap_figures()
        else:
            tracemalloc.start(1)
            before = tracemalloc.take_snapshot()

        gateway = Gateway(config)
        await gateway.start()
        tune_gc()
        clients = gateway.registrations.clients
        bound = time.monotonic() + args.instances / args.rate * 6 + 120
        while time.monotonic() < bound:
            if len(clients) == args.instances and all(c.state == "registered" for c in clients.values()):
                break
            await asyncio.sleep(1.0)
        else:
            raise RuntimeError("not every instance registered in time")
        progress(f"all {args.instances:,} registered; holding one refresh cycle ({args.expires} s)")
        await asyncio.sleep(args.expires)
        gc.collect()
        if args.rss:
            heap1 = heap_figures()
        else:
            after = tracemalloc.take_snapshot()
        registered = sum(1 for c in clients.values() if c.state == "registered")
        await gateway.stop()
    finally:
        kam.stop()
    n = args.instances
    if args.rss:
        return {"instances": n, "registered_at_end": registered,
                "bytes_per_instance": {k: round((heap1[k] - heap0[k]) / n) for k in heap1}}
    tracemalloc.stop()
    filters = [tracemalloc.Filter(False, tracemalloc.__file__)]
    after, before = after.filter_traces(filters), before.filter_traces(filters)
    by_line = after.compare_to(before, "lineno")
    by_file = after.compare_to(before, "filename")
    total = sum(s.size_diff for s in by_line)
    return {
        "instances": n,
        "registered_at_end": registered,
        "traced_bytes_per_instance": round(total / n),
        "by_module": [(_short(s.traceback[0].filename), round(s.size_diff / n))
                      for s in by_file[:args.top] if s.size_diff > 0],
        "by_line": [(f"{_short(s.traceback[0].filename)}:{s.traceback[0].lineno}",
                     round(s.size_diff / n, 1), round(s.count_diff / n, 2))
                    for s in by_line[:args.top] if s.size_diff > 0],
    }


def heap_figures() -> dict[str, int]:
    """Resident bytes of this process by kind (smaps), and what pymalloc holds."""
    figures = {"rss": 0, "rss_main_heap": 0, "rss_other_anonymous": 0}
    with open("/proc/self/smaps") as f:
        name = ""
        for line in f:
            first = line.split(None, 1)[0]
            if "-" in first and not first.endswith(":"):  # a mapping's header line
                parts = line.split()
                name = parts[5] if len(parts) > 5 else ""
            elif first == "Rss:":
                kb = int(line.split()[1]) * 1024
                figures["rss"] += kb
                if name == "[heap]":
                    figures["rss_main_heap"] += kb
                elif not name:
                    figures["rss_other_anonymous"] += kb
    # the allocator's own account (printed on the C stderr: read back from a file)
    with tempfile.TemporaryFile("w+") as out:
        saved = os.dup(2)
        try:
            os.dup2(out.fileno(), 2)
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        out.seek(0)
        text = out.read()
    for key, label in (("pymalloc_arena_bytes", "bytes/arena"),
                       ("pymalloc_used_blocks", "# bytes in allocated blocks"),
                       ("pymalloc_free_blocks", "# bytes in available blocks")):
        for line in text.splitlines():
            if label in line:
                figures[key] = int(line.split("=")[1].replace(",", ""))
                break
    return figures


def _short(filename: str) -> str:
    for marker in ("/gateway/", "/site-packages/", "/lib/python3"):
        if marker in filename:
            return filename[filename.index(marker) + 1:]
    return filename


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--instances", type=int, default=5000)
    parser.add_argument("--expires", type=int, default=30, help="REGISTER expiry asked for (s)")
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--shm", type=int, default=256, help="Kamailio -m (MB)")
    parser.add_argument("--top", type=int, default=30, help="allocation sites to list")
    parser.add_argument("--rss", action="store_true",
                        help="no tracing: where the resident memory went (smaps, pymalloc)")
    parser.add_argument("--out", help="also write the result here (JSON)")
    args = parser.parse_args(argv)
    if args.instances / (args.expires * 0.9) > args.rate * 0.9:
        parser.error(f"{args.instances} instances refreshing every {args.expires * 0.9:.0f} s "
                     f"need more than 90 % of --rate {args.rate:.0f}/s: raise --expires")

    import uvloop

    from tests.support.kamailio import kamailio_binary

    if kamailio_binary() is None:
        print("kamailio is not installed", file=sys.stderr)
        return 1
    result = uvloop.run(walk(args))
    text = json.dumps(result, indent=1)
    if args.out:
        Path(args.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
