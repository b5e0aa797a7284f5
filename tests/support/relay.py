"""Relays that sit between the gateway and a real peer, to lose, delay or cut traffic.

UdpRelay: the gateway sends to the relay's port; the relay forwards each datagram to the
peer from one socket per client, and the peer's answers back. It records when each
datagram arrived in each direction (`to_peer`, `to_client`: lists of (time, first line))
and drops those a rule says to drop (`drop_to_client(first_line) -> bool`, same for
`drop_to_peer`).

TcpRelay: accepts connections and pipes each to the peer. `freeze()` stops forwarding
while keeping every socket open (a peer that vanished behind a NAT); `cut()` closes all
connections (a peer that crashed or reset them).

Both run in the test's event loop, on loopback only.
"""

from __future__ import annotations

import asyncio
import time
from typing import Callable


def first_line(data: bytes) -> str:
    return data.split(b"\r\n", 1)[0].decode("utf-8", "replace")


class _PeerSide(asyncio.DatagramProtocol):
    def __init__(self, relay: "UdpRelay", client: tuple):
        self.relay = relay
        self.client = client
        self.transport = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        self.relay._from_peer(self.client, data)


class UdpRelay(asyncio.DatagramProtocol):
    def __init__(self, peer: tuple[str, int]):
        self.peer = peer
        self.port = 0
        self.to_peer: list[tuple[float, str]] = []
        self.to_client: list[tuple[float, str]] = []
        self.dropped: list[tuple[float, str]] = []
        self.drop_to_client: Callable[[str], bool] = lambda line: False
        self.drop_to_peer: Callable[[str], bool] = lambda line: False
        self._transport = None
        self._sides: dict[tuple, _PeerSide] = {}
        self._pending: dict[tuple, list[bytes]] = {}

    async def start(self) -> "UdpRelay":
        loop = asyncio.get_running_loop()
        self._transport, _ = await loop.create_datagram_endpoint(
            lambda: self, local_addr=("127.0.0.1", 0))
        self.port = self._transport.get_extra_info("sockname")[1]
        return self

    def close(self) -> None:
        for side in self._sides.values():
            if side.transport is not None:
                side.transport.close()
        if self._transport is not None:
            self._transport.close()

    def datagram_received(self, data: bytes, addr) -> None:
        line = first_line(data)
        now = time.monotonic()
        if self.drop_to_peer(line):
            self.dropped.append((now, line))
            return
        self.to_peer.append((now, line))
        side = self._sides.get(addr)
        if side is None:
            side = _PeerSide(self, addr)
            self._sides[addr] = side
            self._pending[addr] = [data]
            asyncio.get_running_loop().create_task(self._open(side))
        elif side.transport is None:
            self._pending[addr].append(data)
        else:
            side.transport.sendto(data, self.peer)

    async def _open(self, side: _PeerSide) -> None:
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(lambda: side, local_addr=("127.0.0.1", 0))
        for data in self._pending.pop(side.client):
            side.transport.sendto(data, self.peer)

    def _from_peer(self, client: tuple, data: bytes) -> None:
        line = first_line(data)
        now = time.monotonic()
        if self.drop_to_client(line):
            self.dropped.append((now, line))
            return
        self.to_client.append((now, line))
        self._transport.sendto(data, client)


class TcpRelay:
    def __init__(self, peer: tuple[str, int]):
        self.peer = peer
        self.port = 0
        self.frozen = False
        self.accepted = 0
        self._server: asyncio.AbstractServer | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self._tasks: set[asyncio.Task] = set()

    async def start(self) -> "TcpRelay":
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _serve(self, reader, writer) -> None:
        self.accepted += 1
        try:
            peer_reader, peer_writer = await asyncio.open_connection(*self.peer)
        except OSError:
            writer.close()
            return
        self._writers += [writer, peer_writer]
        for source, sink in ((reader, peer_writer), (peer_reader, writer)):
            task = asyncio.get_running_loop().create_task(self._pipe(source, sink))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(self, reader, writer) -> None:
        try:
            while data := await reader.read(65536):
                if not self.frozen:  # frozen: swallow, like a black hole
                    writer.write(data)
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    def freeze(self) -> None:
        self.frozen = True

    def cut(self) -> None:
        for writer in self._writers:
            writer.close()
        self._writers.clear()

    async def close(self) -> None:
        self.cut()
        for task in list(self._tasks):
            task.cancel()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
