"""Runs SIPp (Debian package `sip-tester`) scenarios against a SIP peer on loopback.

    result = await run_sipp("tests/calls/sipp/fork.xml", ("127.0.0.1", 5060),
                            service="gw1234", local_ip="127.0.0.1")
    assert result.returncode == 0, result.output

SIPp runs in the background of the test's loop (asyncio subprocess), UDP, one call
unless `calls` says otherwise, bounded by `timeout` (a scenario that hangs fails).
Extra arguments (rates, stats files) go in `extra`.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from dataclasses import dataclass

from tests.support.placement import start_on
from tests.support.processes import need_program


@dataclass
class SippResult:
    returncode: int
    output: str


def sipp_binary() -> str | None:
    return shutil.which("sipp")


def need_sipp() -> str:
    return need_program(sipp_binary(), "sipp is not installed (sip-tester in tests/apt-packages.txt)")


async def run_sipp(scenario: str, target: tuple[str, int], *, service: str, local_ip: str = "127.0.0.1",
                   calls: int = 1, rate: float | None = None, timeout: float = 20.0,
                   extra: tuple[str, ...] = (), nice: int = 0,
                   cpus: set[int] | None = None) -> SippResult:
    """`nice`: SIPp at a lower scheduling priority; `cpus`: the cores it may run on (a
    load bench's placement of its peers, `tests.support.placement`)."""
    binary = need_sipp()
    workdir = tempfile.mkdtemp(prefix="sipp-")
    command = [binary, f"{target[0]}:{target[1]}", "-sf", os.path.abspath(scenario), "-s", service,
               "-i", local_ip, "-bind_local", "-p", "0", "-m", str(calls), "-t", "u1",
               "-nostdin", "-timeout", f"{int(timeout)}s", "-timeout_error", "-trace_err",
               "-recv_timeout", str(int(timeout * 1000)), *extra]
    if rate is not None:
        command += ["-r", str(rate), "-rp", "1000"]
    process = await asyncio.create_subprocess_exec(
        *command, cwd=workdir, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        preexec_fn=start_on(cpus, nice))
    try:
        out, _ = await asyncio.wait_for(process.communicate(), timeout + 10)
    except asyncio.TimeoutError:
        process.kill()
        out, _ = await process.communicate()
    text = out.decode(errors="replace")[-3000:]
    for name in os.listdir(workdir):
        if name.endswith("_errors.log"):
            with open(os.path.join(workdir, name), errors="replace") as f:
                text += "\n" + f.read()[-3000:]
    shutil.rmtree(workdir, ignore_errors=True)
    return SippResult(process.returncode, text)
