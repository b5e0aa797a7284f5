"""The APNs emulator in a process of its own, for load tests: its loop does not share the
gateway's, and it notes when each request arrived (time.monotonic(), which is the same
clock in every process of the machine).

    remote = await RemoteApns.start(workdir, key_file, team, key_id, tokens={token: topic, ...})
    ... remote.url, remote.ca_file ...
    arrivals = await remote.arrivals("call")   # {call id: arrival} of the pushes so far
    await remote.stop()

The child (`python -m tests.support.apns_remote WORKDIR KEY_FILE TEAM KEY_ID`) reads
the tokens to register from WORKDIR/tokens.json, writes its CA to WORKDIR/ca.pem, prints
"url <url>" when it listens. A request's arrival is when the emulator's loop read the
bytes that end it (before its HTTP/2 parsing and its checks, which a busy emulator would
otherwise add to the figure). It keeps what it saw in memory and prints it only when
asked (SIGUSR1: one JSON line per answered request -- the `gateway` part of the payload,
the arrival, the status -- then "end"): nothing crosses to the gateway's process, whose
loop is what is measured, while the load runs.
"""

from __future__ import annotations

import asyncio
import gc
import json
import signal
import sys
from pathlib import Path

from tests.support.cpu import process_times


class RemoteApns:
    def __init__(self, process, url: str, ca_file: str):
        self.process = process
        self.url = url
        self.ca_file = ca_file
        self.lines: list[dict] = []

    @classmethod
    async def start(cls, workdir: Path, key_file: Path, team: str, key_id: str,
                    tokens: dict[str, str]) -> "RemoteApns":
        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "tokens.json").write_text(json.dumps(tokens))
        root = Path(__file__).resolve().parents[2]
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.support.apns_remote", str(workdir), str(key_file), team, key_id,
            stdout=asyncio.subprocess.PIPE, stdin=asyncio.subprocess.DEVNULL, cwd=str(root),
            limit=1 << 24)
        line = await asyncio.wait_for(process.stdout.readline(), 30)
        if not line.startswith(b"url "):
            raise RuntimeError(f"APNs emulator did not start: {line!r}")
        return cls(process, line.split()[1].decode(), str(workdir / "ca.pem"))

    async def arrivals(self, kind: str = "call") -> dict[str, float]:
        """call id -> arrival (monotonic seconds) of the pushes of `kind` answered 200 so far."""
        self.process.send_signal(signal.SIGUSR1)
        while True:
            line = await asyncio.wait_for(self.process.stdout.readline(), 30)
            if not line or line == b"end\n":
                break
            self.lines.append(json.loads(line))
        return {item["payload"]["call_id"]: item["t"] for item in self.lines
                if item["payload"].get("type") == kind and item["status"] == 200}

    def cpu_times(self) -> tuple[float, float]:
        """The emulator process's (user, system) CPU seconds so far, from /proc."""
        return process_times(self.process.pid)

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.terminate()
            await self.process.wait()


def main() -> None:  # pragma: no cover - runs in the child
    import msgspec
    import trustme
    import uvloop
    from cryptography.hazmat.primitives import serialization

    from tests.support.apns_emulator import ApnsEmulator

    workdir, key_file, team, key_id = sys.argv[1:5]
    key = serialization.load_pem_private_key(Path(key_file).read_bytes(), None)
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(Path(workdir, "ca.pem")))
    out = sys.stdout
    emulator = ApnsEmulator(ca, keys={key_id: (team, public)}, max_streams=1000)

    def dump() -> None:
        for received in emulator.requests:
            try:
                payload = msgspec.json.decode(received.body).get("gateway", {})
            except msgspec.DecodeError:
                payload = {}
            out.write(json.dumps({"payload": payload, "t": received.arrived, "status": received.status}) + "\n")
        emulator.requests.clear()
        out.write("end\n")
        out.flush()

    async def serve():
        for token, topic in json.loads(Path(workdir, "tokens.json").read_text()).items():
            emulator.register(token, topic)
        url = await emulator.start()
        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, dump)
        # h2 makes many short-lived objects per request (frames, events, header tuples)
        # and the emulator keeps every request until asked: a young generation of 20,000
        # collects rarely, start-up's objects frozen out of every collection (about 7 %
        # of the emulator's CPU at 1000 pushes/s)
        gc.freeze()
        gc.set_threshold(20_000, 20, 1000)
        out.write(f"url {url}\n")
        out.flush()
        await asyncio.Event().wait()

    uvloop.run(serve())


if __name__ == "__main__":
    main()
