"""The APNs emulator in a process of its own, for load tests: its loop does not share the
gateway's, and it notes when each request arrived (time.monotonic(), which is the same
clock in every process of the machine).

    remote = await RemoteApns.start(workdir, key_file, tokens={token: topic, ...})
    ... remote.url, remote.ca_file ...
    arrivals = await remote.arrivals()    # [(payload dict, arrival), ...] so far
    await remote.stop()

The child (`python -m tests.support.apns_remote WORKDIR KEY_FILE TEAM KEY_ID`) reads
the tokens to register from WORKDIR/tokens.json, writes its CA to WORKDIR/ca.pem, prints
"url <url>" when it listens, and one JSON line per answered request: the `gateway` part
of the payload and the arrival time (a stream's end, before the emulator's checks).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path


class RemoteApns:
    def __init__(self, process, url: str, ca_file: str):
        self.process = process
        self.url = url
        self.ca_file = ca_file
        self.lines: list[dict] = []
        self._reader = asyncio.ensure_future(self._read())

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
            limit=1 << 20)
        line = await asyncio.wait_for(process.stdout.readline(), 30)
        if not line.startswith(b"url "):
            raise RuntimeError(f"APNs emulator did not start: {line!r}")
        return cls(process, line.split()[1].decode(), str(workdir / "ca.pem"))

    async def _read(self) -> None:
        while True:
            line = await self.process.stdout.readline()
            if not line:
                return
            self.lines.append(json.loads(line))

    def arrivals(self, kind: str = "call") -> dict[str, float]:
        """call id -> arrival (monotonic seconds) of the pushes of `kind` seen so far."""
        return {item["payload"]["call_id"]: item["t"] for item in self.lines
                if item["payload"].get("type") == kind and item["status"] == 200}

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.terminate()
            await self.process.wait()
        self._reader.cancel()


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
    ca.cert_pem.write_to_path(os.path.join(workdir, "ca.pem"))
    out = sys.stdout

    class Timed(ApnsEmulator):
        async def _answer(self, conn, stream_id, headers, body):
            arrived = time.monotonic()
            await super()._answer(conn, stream_id, headers, body)
            try:
                payload = msgspec.json.decode(body).get("gateway", {})
            except msgspec.DecodeError:
                payload = {}
            out.write(json.dumps({"payload": payload, "t": arrived, "status": self.requests[-1].status}) + "\n")
            out.flush()

    async def serve():
        emulator = Timed(ca, keys={key_id: (team, public)}, max_streams=1000)
        for token, topic in json.loads(Path(workdir, "tokens.json").read_text()).items():
            emulator.register(token, topic)
        url = await emulator.start()
        out.write(f"url {url}\n")
        out.flush()
        await asyncio.Event().wait()

    uvloop.run(serve())


if __name__ == "__main__":
    main()
