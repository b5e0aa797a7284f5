"""Alternated A/B runs of the registration bench's engine, for changes too small for one
run of bench/test_registration_bench.py to show on a shared machine.

    flock /work/bench.lock python bench/ab_registration.py \
        before=/tmp/base after=.  loop=.:GATEWAY_UDP_SOCKET=loop

Each NAME=TREE[:VAR=VALUE,...] is a checkout (built in place) whose own
`bench/test_registration_bench.run_engine` registers N instances (env N, default 20000)
in a fresh process, against a fresh Kamailio (the registrar's CPU per registration grows
with its location table, so runs sharing one would favour the first), PAIRS times
(default 3) in turn. Prints per run: registrations per second, the engine's CPU per
registration, Kamailio's. Needs kamailio (tests/apt-packages.txt); run it from a
checkout's root (for tests.support).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

# the child: one tree's run_engine against the Kamailio given in the environment
CHILD = """
import json, os, sys
sys.path.insert(0, os.getcwd())
import uvloop
import bench.test_registration_bench as bench
from tests.support.registrar import AuthRegistrar

class Registrar:
    udp_port = int(os.environ["AB_PORT"])
    domain = os.environ["AB_DOMAIN"]
    password = staticmethod(AuthRegistrar.password)

print(json.dumps(uvloop.run(bench.run_engine(Registrar(), int(os.environ["N"]), "ab"))))
"""


def main(args: list[str]) -> None:
    sys.path.insert(0, os.getcwd())
    from bench.test_registration_bench import fresh_registrar, kamailio_seconds

    variants = []
    for arg in args:
        name, _, rest = arg.partition("=")
        tree, _, extra = rest.partition(":")
        variants.append((name, str(Path(tree).resolve()),
                         dict(item.split("=", 1) for item in extra.split(",") if item)))
    if not variants:
        sys.exit(__doc__)
    count = int(os.environ.get("N", "20000"))
    for _ in range(int(os.environ.get("PAIRS", "3"))):
        for name, tree, extra in variants:
            with fresh_registrar(Path(tempfile.mkdtemp())) as kam:
                before = kamailio_seconds(kam)
                env = dict(os.environ, AB_PORT=str(kam.udp_port), AB_DOMAIN=kam.domain,
                           N=str(count), **extra)
                done = subprocess.run([sys.executable, "-c", CHILD], cwd=tree, env=env,
                                      capture_output=True, text=True)
                kam_cpu = kamailio_seconds(kam) - before
            if done.returncode:
                print(f"{name}: failed\n{done.stderr[-2000:]}")
                continue
            wall, cpu, failures = json.loads(done.stdout.strip().splitlines()[-1])
            print(f"{name:10} {count / wall:7.0f}/s  {1e6 * cpu / count:6.1f} us CPU each  "
                  f"Kamailio {1e6 * kam_cpu / count:6.1f} us  failures {failures}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
