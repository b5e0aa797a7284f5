"""The batched UDP socket (`gateway.sip.udpsock` and its compiled twin `gateway._udpsock`):
every datagram reaches the hook or the receiver with its source address, replies sent
while a batch is handled leave together and arrive, errors are reported and the rest goes
on, over IPv4 and IPv6 on loopback."""

import asyncio
import socket
import time

import pytest

from tests.twins import load_both

TWINS = load_both("_udpsock", "sip.udpsock")


def _has_ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


class Recorder:
    def __init__(self):
        self.got = []
        self.errors = []

    def receive(self, data, addr):
        self.got.append((data, addr))

    def error(self, exc):
        self.errors.append(exc)


def bound(family=socket.AF_INET, host="127.0.0.1"):
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.bind((host, 0))
    return sock


def drained(peer, got, sources=False):
    """`got`, with every datagram waiting at the non-blocking socket `peer` added (with
    its source address: `sources`)."""
    while True:
        try:
            data, source = peer.recvfrom(100)
        except BlockingIOError:
            return got
        got.append((data, source) if sources else data)


async def until(predicate, timeout=3.0):
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        await asyncio.sleep(0.005)
    return predicate()


@pytest.mark.parametrize("mod", TWINS)
async def test_the_hook_is_the_one_set_last(mod):
    """The compiled socket calls a wire's `datagram` hook from C (`DatagramTaker`):
    whatever the hook is set to next (another taker's, a function, None) is what takes
    the datagrams after."""
    base = getattr(mod, "DatagramTaker", object)

    class Taker(base):
        def __init__(self, name):
            self.name = name

        def datagram(self, data, addr):
            taken.append((self.name, data))
            return data.startswith(b"t")

    loop = asyncio.get_running_loop()
    rec = Recorder()
    taken = []
    sock = mod.BatchedDatagramSocket(bound(), rec.receive, rec.error, loop)
    peer = bound()
    first, second = Taker("first"), Taker("second")
    hooks = [first.datagram, lambda data, addr: taken.append(("function", data)) or True,
             second.datagram, None, first.datagram]
    events = 0  # what each datagram leaves: a call of the hook, a receive, or both
    try:
        for n, hook in enumerate(hooks):
            sock.hook = hook
            assert sock.hook is hook
            for data in (b"t%d" % n, b"x%d" % n):
                peer.sendto(data, sock.get_extra_info("sockname"))
                events += 2 if isinstance(getattr(hook, "__self__", None), Taker) \
                    and data.startswith(b"x") else 1
                assert await until(lambda: len(taken) + len(rec.got) == events)
        assert taken == [("first", b"t0"), ("first", b"x0"), ("function", b"t1"),
                         ("function", b"x1"), ("second", b"t2"), ("second", b"x2"),
                         ("first", b"t4"), ("first", b"x4")]
        assert [d for d, _ in rec.got] == [b"x0", b"x2", b"t3", b"x3", b"x4"]
    finally:
        sock.close()
        peer.close()


@pytest.mark.parametrize("mod", TWINS)
@pytest.mark.parametrize("family,host", [
    (socket.AF_INET, "127.0.0.1"),
    pytest.param(socket.AF_INET6, "::1", marks=pytest.mark.skipif(not _has_ipv6(),
                                                                   reason="no IPv6 loopback"))])
async def test_a_burst_reaches_hook_and_receiver_with_its_addresses(mod, family, host):
    loop = asyncio.get_running_loop()
    rec = Recorder()
    sock = mod.BatchedDatagramSocket(bound(family, host), rec.receive, rec.error, loop)
    hooked = []
    sock.hook = lambda data, addr: data.startswith(b"hook") and not hooked.append((data, addr))
    peer = bound(family, host)
    peer.setblocking(False)
    try:
        target = sock.get_extra_info("sockname")
        # more than one batch, queued while the loop does not run
        for n in range(150):
            peer.sendto((b"hook %d" if n % 3 == 0 else b"data %d") % n, target)
        assert await until(lambda: len(rec.got) + len(hooked) == 150)
        assert [d for d, _ in hooked] == [b"hook %d" % n for n in range(0, 150, 3)]
        assert [d for d, _ in rec.got] == [b"data %d" % n for n in range(150) if n % 3]
        source = peer.getsockname()
        # the addresses Python's socket module gives (4 fields for IPv6)
        assert {a for _, a in rec.got + hooked} == {source}
        assert not rec.errors
    finally:
        sock.close()
        peer.close()
    assert sock.is_closing()


@pytest.mark.parametrize("mod", TWINS)
async def test_replies_sent_while_a_batch_is_handled_all_arrive_in_order(mod):
    loop = asyncio.get_running_loop()
    rec = Recorder()
    sock = mod.BatchedDatagramSocket(bound(), rec.receive, rec.error, loop)
    sock.hook = lambda data, addr: sock.sendto(b"re: " + data, addr) or True
    peer = bound()
    peer.setblocking(False)
    got = []
    try:
        for n in range(100):
            peer.sendto(b"%d" % n, sock.get_extra_info("sockname"))
        assert await until(lambda: len(drained(peer, got)) == 100)
        assert got == [b"re: %d" % n for n in range(100)]
        # outside a batch: at once
        sock.sendto(b"now", peer.getsockname())
        assert await until(lambda: drained(peer, got)[-1] == b"now")
    finally:
        sock.close()
        peer.close()


@pytest.mark.parametrize("mod", TWINS)
async def test_a_datagram_arriving_while_a_batch_is_handled_is_read_in_the_same_wake_up(mod):
    """The registrar's next answer, arriving while the last one is handled, is read
    before the loop's other callbacks run (not after a turn through epoll_wait); the
    compiled socket has sent the first batch's reply by then."""
    loop = asyncio.get_running_loop()
    rec = Recorder()
    sock = mod.BatchedDatagramSocket(bound(), rec.receive, rec.error, loop)
    peer, other = bound(), bound()
    peer.setblocking(False)
    events, sent_before = [], []  # (sent_before: what had left when "second" came)

    def hook(data, addr):
        events.append(data)
        sock.sendto(b"re: " + data, peer.getsockname())
        if data == b"first":
            loop.call_soon(events.append, "the loop's turn")
            other.sendto(b"second", sock.get_extra_info("sockname"))  # queued at once
        else:
            drained(peer, sent_before)
        return True

    sock.hook = hook
    try:
        peer.sendto(b"first", sock.get_extra_info("sockname"))
        assert await until(lambda: len(events) == 3)
        assert events == [b"first", b"second", "the loop's turn"]
        replies = sent_before.copy()
        if mod.__name__ == "gateway._udpsock":  # (the twin sends every BATCH reads)
            assert sent_before == [b"re: first"]
        assert await until(lambda: b"re: second" in drained(peer, replies))
        assert replies == [b"re: first", b"re: second"]
        assert rec.got == [] and rec.errors == []
    finally:
        sock.close()
        peer.close()
        other.close()


@pytest.mark.parametrize("mod", TWINS)
async def test_a_pinned_peer_is_sent_to_and_heard_from_on_the_same_port(mod):
    """Datagrams to a pinned peer leave from the socket's own address and port, those
    to anyone else too, in a batch mixing the two; what either sends back reaches the
    hook with its address, and what the hook answers arrives."""
    loop = asyncio.get_running_loop()
    rec = Recorder()
    sock = mod.BatchedDatagramSocket(bound(), rec.receive, rec.error, loop)
    here = sock.get_extra_info("sockname")
    registrar, other = bound(), bound()
    for peer in (registrar, other):
        peer.setblocking(False)
    sock.hook = lambda data, addr: sock.sendto(b"re: " + data, addr) or True
    try:
        assert sock.pin(registrar.getsockname())
        assert sock.pin(registrar.getsockname())  # (once is enough)
        for n in range(40):  # answered in batches, the two destinations interleaved
            (registrar if n % 2 else other).sendto(b"%d" % n, here)
        got = {registrar: [], other: []}
        assert await until(lambda: sum(len(drained(p, g)) for p, g in got.items()) == 40)
        assert got[registrar] == [b"re: %d" % n for n in range(1, 40, 2)]
        assert got[other] == [b"re: %d" % n for n in range(0, 40, 2)]
        for peer in (registrar, other):  # outside a batch: at once
            sock.sendto(b"direct", peer.getsockname())
            got[peer] = []
            assert await until(lambda: drained(peer, got[peer], sources=True) != [])
            assert got[peer] == [(b"direct", here)]
        assert rec.errors == []
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as plain:
            with pytest.raises(OSError):  # the port is still ours alone for a plain bind
                plain.bind(here)
    finally:
        sock.close()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as plain:
        plain.bind(here)  # closed with the socket: the pinned peer's socket too
    registrar.close()
    other.close()


@pytest.mark.parametrize("mod", TWINS)
async def test_a_pinned_peer_that_went_away_is_reported_and_nothing_else_is_lost(mod):
    """A pinned peer's socket is connected: it hears of the ICMP port unreachable an
    unconnected one never hears of (reported), and a send that finds that earlier
    error waiting is tried again, so the peer back on its port gets it."""
    loop = asyncio.get_running_loop()
    rec = Recorder()
    sock = mod.BatchedDatagramSocket(bound(), rec.receive, rec.error, loop)
    gone = bound()
    address = gone.getsockname()
    gone.close()
    try:
        assert sock.pin(address)
        sock.sendto(b"to nobody", address)  # its ICMP error now waits at the socket
        back = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        back.bind(address)  # (before the loop has read that error)
        back.setblocking(False)
        for n in range(3):
            sock.sendto(b"%d" % n, address)  # the first finds the error: sent again
        got = []
        assert await until(lambda: len(drained(back, got)) == 3)
        assert got == [b"0", b"1", b"2"]
        assert [type(e) for e in rec.errors] == [ConnectionRefusedError]
        back.close()
    finally:
        sock.close()


@pytest.mark.parametrize("mod", TWINS)
async def test_pinning_is_bounded_and_checks_the_address(mod, monkeypatch):
    loop = asyncio.get_running_loop()
    rec = Recorder()
    sock = mod.BatchedDatagramSocket(bound(), rec.receive, rec.error, loop)
    peers = [bound() for _ in range(3)]
    monkeypatch.setattr(mod, "MAX_PINNED", 2)
    try:
        assert [sock.pin(p.getsockname()) for p in peers] == [True, True, False]
        with pytest.raises(ValueError):
            sock.pin(("::1", 5060))  # another family than the socket's
        for p in peers:  # the third goes from the socket itself, as before
            p.setblocking(False)
            sock.sendto(b"hello", p.getsockname())
        got = {p: [] for p in peers}
        assert await until(lambda: all(drained(p, got[p], sources=True) for p in peers))
        assert all(got[p] == [(b"hello", sock.get_extra_info("sockname"))] for p in peers)
    finally:
        sock.close()
        for p in peers:
            p.close()


@pytest.mark.parametrize("mod", TWINS)
async def test_errors_are_reported_and_the_socket_goes_on(mod):
    loop = asyncio.get_running_loop()
    rec = Recorder()
    sock = mod.BatchedDatagramSocket(bound(), rec.receive, rec.error, loop)
    try:
        with pytest.raises(ValueError):
            sock.sendto(b"x", ("not an address", 5060))
        with pytest.raises(ValueError):
            sock.sendto(b"x", ("::1", 5060))  # another family than the socket's
        sock.sendto(b"x" * 70_000, ("127.0.0.1", 9))  # too long for a datagram: EMSGSIZE
        assert len(rec.errors) == 1 and isinstance(rec.errors[0], OSError)
        # (an unconnected socket hears of no ICMP port unreachable: nothing to report)
        # and datagrams still arrive
        peer = bound()
        peer.sendto(b"still here", sock.get_extra_info("sockname"))
        assert await until(lambda: rec.got and rec.got[-1][0] == b"still here")
        peer.close()
    finally:
        sock.close()
    sock.sendto(b"after close", ("127.0.0.1", 9))  # dropped, as a closed transport drops it


@pytest.mark.skipif(not _has_ipv6(), reason="no IPv6 loopback")
@pytest.mark.parametrize("mod", TWINS)
async def test_ipv6_destinations_with_a_scope_or_flow_info(mod):
    loop = asyncio.get_running_loop()
    rec = Recorder()
    sock = mod.BatchedDatagramSocket(bound(socket.AF_INET6, "::1"), rec.receive, rec.error, loop)
    peer = bound(socket.AF_INET6, "::1")
    peer.setblocking(False)
    port = peer.getsockname()[1]
    try:
        for addr in (("::1", port), ("::1", port, 0, 0), ("0:0::1", port)):
            sock.sendto(b"to %r" % (addr,), addr)
        got = []
        assert await until(lambda: len(drained(peer, got)) == 3)
        assert not rec.errors
        assert mod.numeric_sockaddr(socket.AF_INET6, ("fe80::1%1", 5060))[3] == 1
    finally:
        sock.close()
        peer.close()


@pytest.mark.parametrize("mod", TWINS)
async def test_a_failing_handler_is_reported_to_the_loop_and_the_batch_goes_on(mod):
    loop = asyncio.get_running_loop()
    rec = Recorder()
    reported = []
    loop.set_exception_handler(lambda _loop, context: reported.append(context["exception"]))
    sock = mod.BatchedDatagramSocket(bound(), rec.receive, rec.error, loop)

    def hook(data, addr):
        if data == b"boom":
            raise RuntimeError("a bug")
        return False

    sock.hook = hook
    peer = bound()
    try:
        for data in (b"one", b"boom", b"two"):
            peer.sendto(data, sock.get_extra_info("sockname"))
        assert await until(lambda: len(rec.got) == 2)
        assert [d for d, _ in rec.got] == [b"one", b"two"]
        assert len(reported) == 1 and isinstance(reported[0], RuntimeError)
    finally:
        loop.set_exception_handler(None)
        sock.close()
        peer.close()


@pytest.mark.parametrize("mod", TWINS)
async def test_each_datagram_of_a_batch_has_its_own_arrival_stamp(mod):
    """Two datagrams sent 50 ms apart while the loop is blocked are read in one batch;
    each is handled with its own kernel stamp, not the batch's last."""
    loop = asyncio.get_running_loop()
    stamps = []
    sock = mod.BatchedDatagramSocket(bound(), lambda data, addr: stamps.append(
        (data, sock.received_at, time.time())), lambda exc: None, loop)
    sock.stamp_arrivals()
    port = sock.sock.getsockname()[1]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
        # the kernel turns arrival stamping on a moment later (deferred work); until
        # then a datagram is stamped when it is read: wait until one waited stamped
        for _ in range(100):
            peer.sendto(b"primer", ("127.0.0.1", port))
            time.sleep(0.01)
            assert await until(lambda: stamps)
            _, stamped, handled = stamps.pop()
            if handled - stamped >= 0.005:
                break
        before = time.time()
        peer.sendto(b"first", ("127.0.0.1", port))
        time.sleep(0.05)  # the loop is blocked: both wait in the socket
        peer.sendto(b"second", ("127.0.0.1", port))
        assert await until(lambda: len(stamps) == 2)
    sock.close()
    (first, at1, handled1), (second, at2, _) = stamps
    assert (first, second) == (b"first", b"second")
    assert before - 0.01 <= at1 < at2 <= handled1
    assert at2 - at1 >= 0.04


@pytest.mark.parametrize("mod", TWINS)
async def test_stamping_asked_for_in_the_middle_of_a_batch_leaves_the_batch_whole(mod):
    """A handler turning arrival stamps on while a batch is being handled: the rest of
    the batch still arrives whole, from its source, and later datagrams as well."""
    loop = asyncio.get_running_loop()
    rec = Recorder()
    sock = mod.BatchedDatagramSocket(bound(), rec.receive, rec.error, loop)
    sock.hook = lambda data, addr: data == b"0 " * 100 and sock.stamp_arrivals()
    peer = bound()
    peer.setblocking(False)
    try:
        target = sock.get_extra_info("sockname")
        for n in range(40):  # read in one batch (the loop does not run meanwhile)
            peer.sendto(b"%d " % n * 100, target)
        assert await until(lambda: len(rec.got) == 40)
        for n in range(40, 80):
            peer.sendto(b"%d " % n * 100, target)
        assert await until(lambda: len(rec.got) == 80)
        assert [d for d, _ in rec.got] == [b"%d " % n * 100 for n in range(80)]
        assert {a for _, a in rec.got} == {peer.getsockname()}
        assert not rec.errors
    finally:
        sock.close()
        peer.close()
