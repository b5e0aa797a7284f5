"""The Node.js APNs emulator (`tests/support/apns_node/emulator.mjs`) in a process of its
own, for load: an independent HTTP/2 implementation (nghttp2) checking what APNs checks
at about two thirds of the Python emulator's CPU per push, so that the peer takes less of
the cores the gateway is measured on.

    apns = await NodeApns.start(workdir, keys={KEY_ID: (TEAM, public_pem)},
                                devices={token: topic, ...})
    ... apns.url, apns.ca_file ...
    records = await apns.records()       # every request answered so far, in order
    arrivals = await apns.arrivals()     # {call id: arrival} of the call pushes delivered
    await apns.stop()

A record is a dict: "t" (arrival, time.monotonic() seconds: node's hrtime is the same
CLOCK_MONOTONIC), "status", "reason", "token", "push_type", "topic", "apns_id",
"payload" (the JSON body of an accepted push, else None). The emulator keeps them in
memory and writes them only when asked, so nothing crosses to the measured process
while a load runs. Needs the Debian package `nodejs` (tests/apt-packages.txt), no npm
package. Depends on nothing of the gateway.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path

import trustme
from cryptography.hazmat.primitives import serialization

from tests.support.cpu import process_times
from tests.support.placement import start_on
from tests.support.processes import need_program

SCRIPT = Path(__file__).parent / "apns_node" / "emulator.mjs"


def node_binary() -> str | None:
    return shutil.which("node") or shutil.which("nodejs")


def need_node() -> str:
    """The node binary; the calling test is skipped without it (failed on CI)."""
    return need_program(node_binary(), "node is not installed (nodejs in tests/apt-packages.txt)")


def public_pem(key_file: str | Path) -> str:
    """The public key PEM of a provider's private key file (Apple's .p8, PKCS#8 PEM)."""
    key = serialization.load_pem_private_key(Path(key_file).read_bytes(), None)
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo).decode()


class NodeApns:
    def __init__(self, process: asyncio.subprocess.Process, url: str, ca_file: str):
        self.process = process
        self.url = url
        self.ca_file = ca_file
        self.lines: list[dict] = []  # every record fetched so far

    @classmethod
    async def start(cls, workdir: str | Path, *, keys: dict[str, tuple[str, str | bytes]],
                    devices: dict[str, str], environment: str = "production",
                    unregistered: dict[str, int] | None = None, max_streams: int = 1000,
                    ca: trustme.CA | None = None, nice: int = 0,
                    cpus: set[int] | None = None) -> NodeApns:
        """`keys`: key id -> (team id, public key PEM); `devices`: token -> topic (or
        {"topic", "environment"}); `unregistered`: token -> ms timestamp of its 410;
        `nice`: a lower scheduling priority for the whole process (every thread); `cpus`:
        the cores it may run on."""
        binary = need_node()
        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        ca = ca or trustme.CA()
        ca.cert_pem.write_to_path(str(workdir / "ca.pem"))
        leaf = ca.issue_cert("127.0.0.1", "localhost")
        leaf.private_key_pem.write_to_path(str(workdir / "server.key"))
        (workdir / "server.pem").write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
        config = {
            "host": "127.0.0.1", "port": 0, "cert": str(workdir / "server.pem"),
            "key": str(workdir / "server.key"), "environment": environment,
            "keys": {kid: [team, pem.decode() if isinstance(pem, bytes) else pem]
                     for kid, (team, pem) in keys.items()},
            "devices": devices, "unregistered": unregistered or {}, "max_streams": max_streams,
        }
        (workdir / "config.json").write_text(json.dumps(config))
        # V8's collector on the main thread: no helper threads woken at each collection
        # to take a core from the gateway (5 % less CPU per push at 100 calls/s, and the
        # gateway's loop waited less for a core in those runs)
        process = await asyncio.create_subprocess_exec(
            binary, "--single-threaded-gc", str(SCRIPT), str(workdir / "config.json"),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            start_new_session=True, limit=1 << 24,
            preexec_fn=start_on(cpus, nice))
        line = await asyncio.wait_for(process.stdout.readline(), 30)
        if not line.startswith(b"url "):
            process.kill()
            await process.wait()
            raise RuntimeError(f"the Node.js APNs emulator did not start: {line!r}")
        return cls(process, line.split()[1].decode(), str(workdir / "ca.pem"))

    async def records(self) -> list[dict]:
        """Every request answered so far (those fetched before included), in order."""
        self.process.stdin.write(b"dump\n")
        await self.process.stdin.drain()
        while True:
            line = await asyncio.wait_for(self.process.stdout.readline(), 30)
            if not line:
                raise RuntimeError("the Node.js APNs emulator went away")
            if line == b"end\n":
                return self.lines
            item = json.loads(line)
            item["t"] = int(item["t"]) / 1e9  # ns of CLOCK_MONOTONIC -> time.monotonic()
            self.lines.append(item)

    async def arrivals(self, kind: str = "call") -> dict[str, float]:
        """call id -> arrival (monotonic seconds) of the pushes of `kind` answered 200."""
        out = {}
        for item in await self.records():
            gateway = (item["payload"] or {}).get("gateway", {}) if item["status"] == 200 else {}
            if gateway.get("type") == kind:
                out[gateway["call_id"]] = item["t"]
        return out

    def cpu_times(self) -> tuple[float, float]:
        """The emulator process's (user, system) CPU seconds so far, every thread."""
        return process_times(self.process.pid)

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.stdin.close()  # it exits when its control input closes
            try:
                await asyncio.wait_for(self.process.wait(), 5)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
