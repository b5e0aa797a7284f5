"""A UDP socket read and written in batches, under the transport layer's UDP flows.

uvloop's datagram transport reads one datagram per system call and hands each to a
Python protocol method; this socket is read straight off the loop (`loop.add_reader`):
each wake-up reads until the socket is empty (`ROUNDS` batches of `BATCH` datagrams at
most), gives each datagram to `hook(data, addr)` (the registration wire path) and what
the hook does not take to `receive(data, addr)`; what the handlers send meanwhile leaves
together once the batch is handled, before the next one is read. Outside a batch
`sendto` sends at once. A send the kernel has no room for waits for the socket to be
writable, in order; a failed read or send is reported to `error(exc)` (ICMP errors and
the like: the transaction timers deal with the loss), and the other datagrams go on.

    sock = BatchedDatagramSocket(bound_socket, receive, error, loop)
    sock.hook = wire.datagram              # optional
    sock.sendto(data, ("192.0.2.1", 5060))
    sock.close()

`sock.pin(addr)` gives a peer that gets many datagrams (a registrar) a socket of its own,
connected to it and bound to this socket's address and port (SO_REUSEPORT, set on this
socket only then, after its own bind, so a second gateway on the port still fails to
bind): the kernel finds the route once instead of for every datagram (about 0.5 us of
the 4 to 5 a datagram costs on loopback here), and since a connected socket wins the
peer's datagrams from the unconnected one, what the peer sends arrives there, read and
handed on as this socket's are (same hook, same receiver, same source address). What
anyone else sends still arrives here. A connected socket hears of the ICMP errors its
sends caused: the next read or send reports one (`error(exc)`); a send it failed is
tried once more, since the error was an earlier datagram's.

`sock.stamp_arrivals()` asks the kernel to stamp each datagram's arrival; while one is
handled, `sock.received_at` is its stamp (wall clock, seconds): how long it waited in the
socket while the loop was busy (the call bench reads it; SIOCGSTAMP would give the last
datagram of the batch, not the one being handled).

Addresses are those of Python's socket module: (host, port) for IPv4, (host, port,
flowinfo, scope_id) for IPv6. This is the pure-Python twin of `_ext/udpsock.pyx`
(recvmmsg/sendmmsg there; recvfrom until EAGAIN and sendto here); `gateway.sip.transport`
picks one through `gateway._accel`. Depends on nothing of the gateway.
"""

from __future__ import annotations

import errno
import socket
import struct
from collections import deque

#: datagrams read before what the handlers sent goes out
BATCH = 64
#: batches read per wake-up at most (until the socket is empty): then the loop's other
#: callbacks get their turn
ROUNDS = 8
_MAX = 65536
#: linux/asm-generic/socket.h: SO_TIMESTAMPNS (a struct timespec per datagram), which
#: Python's socket module does not name
SO_TIMESTAMPNS = 35
_STAMP_SPACE = socket.CMSG_SPACE(16)
#: peers pinned at most (a socket each); more are sent to from this socket as before
MAX_PINNED = 64


def numeric_sockaddr(family: int, addr: tuple) -> tuple:
    """`addr` as the kernel will take it: (host, port) or (host, port, flowinfo,
    scope_id), the scope of a link-local `fe80::1%eth0` resolved; ValueError for anything
    but an IP address of `family` (no name is looked up)."""
    try:
        infos = socket.getaddrinfo(addr[0], addr[1], family, socket.SOCK_DGRAM, 0,
                                   socket.AI_NUMERICHOST)
    except (OSError, UnicodeError, TypeError, ValueError, IndexError):
        raise ValueError(f"{addr!r} is not an address of the socket's family") from None
    found = infos[0][4]
    if family == socket.AF_INET6 and len(addr) > 2:  # given explicitly: they stand
        found = found[:2] + tuple(addr[2:4]) + found[2 + len(addr[2:4]):]
    return found


def peer_socket(sock: socket.socket, found: tuple, stamping: bool):
    """A non-blocking socket bound where `sock` is and connected to `found` (a numeric
    sockaddr), the two sharing the port (SO_REUSEPORT, set on `sock` only now); None
    when the kernel refuses."""
    peer = None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        peer = socket.socket(sock.family, socket.SOCK_DGRAM)
        if sock.family == socket.AF_INET6:
            peer.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY,
                            sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY))
        peer.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        # (the kernel reports twice what was asked for)
        peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF,
                        sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) // 2)
        if stamping:
            peer.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        peer.bind(sock.getsockname())
        peer.connect(found)
        peer.setblocking(False)
    except (OSError, AttributeError):  # (AttributeError: no SO_REUSEPORT here)
        if peer is not None:
            peer.close()
        return None
    return peer


def _arrival(ancillary) -> float:
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= 16:
            seconds, nanos = struct.unpack("qq", data[:16])
            return seconds + nanos / 1e9
    return 0.0


class BatchedDatagramSocket:
    """One bound, non-blocking UDP socket on the loop; see the module docstring."""

    def __init__(self, sock: socket.socket, receive, error, loop):
        self.sock = sock
        self.loop = loop
        self.hook = None
        self.receive = receive
        self.error = error
        self._queue: deque = deque()
        self._checked: set = set()  # destinations known to be addresses of our family
        self._pinned: dict = {}  # destination as given -> its connected socket, or None
        self._batching = self._flushing = self._closed = False
        self._writing = -1  # the descriptor waited on to be writable, if any
        self._stamping = False
        self.received_at = 0.0
        sock.setblocking(False)
        loop.add_reader(sock.fileno(), self._readable)

    def get_extra_info(self, name, default=None):
        if name == "socket":
            return self.sock
        if name == "sockname":
            return self.sock.getsockname()
        return default

    def stamp_arrivals(self) -> None:
        """From now on `received_at` is the kernel's arrival stamp of the datagram being
        handled."""
        for sock in self._sockets():
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self._stamping = True

    def pin(self, addr) -> bool:
        """Send to `addr` through a socket of its own (see the module docstring); True
        once it has one. False when it cannot (`MAX_PINNED` peers already, or the kernel
        refused): datagrams to `addr` then go from this socket, as before."""
        if addr in self._pinned:
            return self._pinned[addr] is not None
        found = numeric_sockaddr(self.sock.family, addr)
        if self._closed or len(self._pinned) >= MAX_PINNED:
            return False
        peer = self._pinned[addr] = peer_socket(self.sock, found, self._stamping)
        if peer is None:
            return False
        self.loop.add_reader(peer.fileno(), self._readable, peer)
        return True

    def _sockets(self) -> list:
        return [self.sock] + [peer for peer in self._pinned.values() if peer is not None]

    def is_closing(self) -> bool:
        return self._closed

    def close(self) -> None:
        if self._closed:
            return
        self._flush()
        self._closed = True
        self._wait_writable(-1)
        self._queue.clear()
        for sock in self._sockets():
            self.loop.remove_reader(sock.fileno())
            sock.close()

    # -- reading ----------------------------------------------------------------------

    def _readable(self, sock: socket.socket | None = None) -> None:
        """Reads this socket, or `sock`, a pinned peer's."""
        if self._closed:
            return
        sock = sock or self.sock
        self._batching = True
        try:
            for count in range(1, BATCH * ROUNDS + 1):
                try:
                    if self._stamping:
                        data, ancillary, _, addr = sock.recvmsg(_MAX, _STAMP_SPACE)
                        self.received_at = _arrival(ancillary)
                    else:
                        data, addr = sock.recvfrom(_MAX)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError as exc:
                    self.error(exc)
                    break
                self._deliver(data, addr)
                if self._closed:
                    break
                if count % BATCH == 0 and self._queue:
                    self._flush()  # a batch's answers, before the next one is read
        finally:
            self._batching = False
            if self._queue:
                self._flush()

    def _deliver(self, data: bytes, addr) -> None:
        hook = self.hook
        try:
            if hook is None or not hook(data, addr):
                self.receive(data, addr)
        except Exception as exc:  # noqa: BLE001 - as the loop does for a protocol
            self.loop.call_exception_handler({
                "message": "datagram handler failed", "exception": exc, "transport": self})

    # -- writing ----------------------------------------------------------------------

    def sendto(self, data, addr) -> None:
        """Send one datagram to addr (an IP address and port): at once, or with the
        others of the batch being handled, or once the socket is writable again."""
        if self._closed:
            return
        if addr not in self._checked:
            numeric_sockaddr(self.sock.family, addr)
            if len(self._checked) < 1024:
                self._checked.add(addr)
        self._queue.append((bytes(data), addr, self._pinned.get(addr)))
        if not (self._batching or self._writing >= 0 or self._flushing):
            self._flush()

    def _writable(self) -> None:
        self._flush()

    def _wait_writable(self, fd: int) -> None:
        """Wait for `fd` to be writable (-1: for nothing)."""
        if fd != self._writing:
            if self._writing >= 0:
                self.loop.remove_writer(self._writing)
            if fd >= 0:
                self.loop.add_writer(fd, self._writable)
            self._writing = fd

    def _flush(self) -> None:
        self._flushing = True
        try:
            queue = self._queue
            retried = False
            while queue:
                data, addr, peer = queue[0]
                try:
                    if peer is None:
                        self.sock.sendto(data, addr)
                    else:
                        peer.send(data)
                except InterruptedError:
                    continue
                except BlockingIOError:  # the rest goes once the kernel has room
                    self._wait_writable((peer or self.sock).fileno())
                    return
                except OSError as exc:
                    self.error(exc)
                    if peer is not None and exc.errno == errno.ECONNREFUSED and not retried:
                        retried = True  # an earlier datagram's ICMP error: this one again
                        continue
                    queue.popleft()  # reported and dropped; the others go on
                    retried = False
                    continue
                queue.popleft()
                retried = False
            self._wait_writable(-1)
        finally:
            self._flushing = False
