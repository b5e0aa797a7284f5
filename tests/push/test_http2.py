"""The HTTP/2 client pool on a real TLS socket (the APNs emulator as server): concurrent
streams within the server's changing limit, flow control, GOAWAY, connection loss and
timeouts."""

from __future__ import annotations

import asyncio

import pytest

from gateway.errors import TransientError
from gateway.push.base import tls_context
from gateway.push.http2 import Http2Pool

from .conftest import BUNDLE, KEY_ID, TEAM

TOKEN = "ef" * 32


@pytest.fixture
async def pool(apns, ca_file):
    pool = Http2Pool(apns.url, tls_context(ca_file, alpn=["h2"]))
    yield pool
    await pool.close()


@pytest.fixture
def headers(apns_credentials, clock):
    from gateway.push.apns import ProviderToken

    token = ProviderToken(apns_credentials.key_file, KEY_ID, TEAM, clock=clock)
    apns_headers = [
        ("apns-push-type", "alert"),
        ("apns-topic", BUNDLE),
        ("authorization", f"bearer {token.value()}"),
    ]
    return apns_headers


async def send(pool, headers, body=b'{"aps":{}}', timeout=5.0):
    return await pool.request("POST", f"/3/device/{TOKEN}", headers, body, timeout=timeout)


async def test_many_streams_on_one_connection_within_the_servers_limit(apns, pool, headers):
    apns.register(TOKEN, BUNDLE)
    apns.max_streams = 7
    apns.hold = asyncio.Event()
    tasks = [asyncio.ensure_future(send(pool, headers)) for _ in range(40)]
    while apns.in_flight < 1:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)
    # APNs allows one stream until a request with a valid token has been answered
    assert apns.in_flight == 1
    apns.hold.set()
    apns.hold = asyncio.Event()  # the requests that come next wait again
    while apns.in_flight < 7:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)
    assert apns.in_flight == 7  # the raised limit is used, and honoured
    apns.hold.set()
    apns.hold = None
    answers = await asyncio.gather(*tasks)
    assert [a.status for a in answers] == [200] * 40
    assert apns.max_in_flight == 7 and len(apns.connections) == 1 and pool.connects == 1


async def test_a_body_larger_than_the_flow_control_window_gets_through(apns, pool, headers):
    apns.register(TOKEN, BUNDLE)
    body = b'{"aps":{},"x":"' + b"y" * 200_000 + b'"}'
    answer = await send(pool, headers, body)
    # the emulator got all of it (and, like APNs, finds it too large)
    assert (answer.status, answer.body) == (413, b'{"reason":"PayloadTooLarge"}')
    assert apns.requests[0].body == body


async def test_goaway_refused_streams_move_to_a_new_connection(apns, pool, headers):
    apns.register(TOKEN, BUNDLE)
    assert (await send(pool, headers)).status == 200  # stream 1, and the limit is lifted
    apns.hold = asyncio.Event()
    tasks = [asyncio.ensure_future(send(pool, headers)) for _ in range(5)]  # streams 3..11
    while apns.in_flight < 5:
        await asyncio.sleep(0.01)
    # Streams 3 and 5 may have been processed: they fail (the service retries them).
    # Streams 7 to 11 were not: the pool resends them on a new connection at once.
    apns.goaway("Shutdown", last_stream_id=5)
    apns.hold.set()
    answers = await asyncio.gather(*tasks, return_exceptions=True)
    assert [type(a).__name__ for a in answers[:2]] == ["TransientError"] * 2
    assert [a.status for a in answers[2:]] == [200] * 3
    assert len(apns.connections) == 2 and pool.connects == 2
    assert sum(1 for r in apns.requests if r.connection == 1) == 3
    assert pool.connections[0].goaway_reason is None  # the new one



async def test_connection_loss_fails_the_streams_in_flight_then_reconnects(apns, pool, headers):
    apns.register(TOKEN, BUNDLE)
    assert (await send(pool, headers)).status == 200
    apns.hold = asyncio.Event()
    tasks = [asyncio.ensure_future(send(pool, headers)) for _ in range(3)]
    while apns.in_flight < 3:
        await asyncio.sleep(0.01)
    apns.drop_connections()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(r, TransientError) and "lost" in str(r) for r in results)
    apns.hold.set()
    apns.hold = None
    assert (await send(pool, headers)).status == 200
    assert pool.connects == 2


async def test_a_request_that_times_out_is_reset_and_frees_its_stream(apns, pool, headers):
    apns.register(TOKEN, BUNDLE)
    assert (await send(pool, headers)).status == 200
    apns.delay = 0.5
    with pytest.raises(TransientError, match="no answer"):
        await send(pool, headers, timeout=0.1)
    conn = pool.connections[0]
    assert conn.in_flight == 0
    apns.delay = 0
    assert (await send(pool, headers)).status == 200
    assert pool.connects == 1


async def test_recycle_drains_and_opens_a_new_connection(apns, pool, headers):
    apns.register(TOKEN, BUNDLE)
    assert (await send(pool, headers)).status == 200
    apns.hold = asyncio.Event()
    slow = asyncio.ensure_future(send(pool, headers))
    while apns.in_flight < 1:
        await asyncio.sleep(0.01)
    pool.recycle()
    apns.hold.set()
    apns.hold = None
    assert (await slow).status == 200  # the draining connection finished its stream
    assert (await send(pool, headers)).status == 200
    assert [r.connection for r in apns.requests] == [0, 0, 1]


def test_only_https_urls():
    with pytest.raises(ValueError, match="https"):
        Http2Pool("http://127.0.0.1:80", tls_context())


async def test_an_idle_connection_is_pinged_and_a_silent_one_replaced(apns, ca_file, headers):
    apns.register(TOKEN, BUNDLE)
    pool = Http2Pool(apns.url, tls_context(ca_file, alpn=["h2"]), ping_after=0.1, connect_timeout=0.2)
    try:
        assert (await send(pool, headers)).status == 200
        await asyncio.sleep(0.45)
        conn = pool.connections[0]
        assert conn.pings >= 2 and apns.pings == conn.pings  # answered: the connection stays
        apns.mute = True  # the path dies without a FIN, as behind a NAT that forgot us
        await asyncio.sleep(0.5)
        assert pool.connections == []
        apns.mute = False
        assert (await send(pool, headers)).status == 200
        assert pool.connects == 2
    finally:
        await pool.close()


async def test_a_server_that_does_not_speak_http2_fails_fast(fcm, ca_file):
    # The FCM emulator is an HTTP/1.1 server (aiohttp).
    pool = Http2Pool(fcm.url, tls_context(ca_file, alpn=["h2"]), connect_timeout=5)
    try:
        async with asyncio.timeout(3):
            with pytest.raises(TransientError, match="cannot connect"):
                await pool.request("POST", "/token", [], b"x", timeout=1)
    finally:
        await pool.close()


async def test_waiting_requests_get_streams_in_the_order_they_came(apns, pool, headers):
    apns.register(TOKEN, BUNDLE)
    assert (await send(pool, headers)).status == 200
    apns.max_streams = 3
    pool.connections[0].close()  # the next connection gets the 3-stream limit at once
    tokens = [f"{i:064x}" for i in range(30)]
    for token in tokens:
        apns.register(token, BUNDLE)
    apns.delay = 0.002  # answers come back in bursts while 27 requests wait
    answers = await asyncio.gather(
        *(pool.request("POST", f"/3/device/{t}", headers, b'{"aps":{}}', timeout=5) for t in tokens)
    )
    assert [a.status for a in answers] == [200] * 30
    assert apns.arrivals[-30:] == tokens and apns.max_in_flight == 3


async def test_requests_not_urgent_leave_together_and_before_the_next_urgent_one(apns, pool, headers):
    apns.register(TOKEN, BUNDLE)
    await send(pool, headers)  # the connection is open, its stream limit known
    conn = pool.connections[0]
    writes: list[bytes] = []
    transport = conn._transport
    write = transport.write

    def counted(data):
        writes.append(bytes(data))
        write(data)

    # the transport's writes are counted (and still made): what leaves, and in how many
    conn._transport = type("Counted", (), {"write": staticmethod(counted),
                                           "is_closing": transport.is_closing})()
    try:
        path = f"/3/device/{TOKEN}"
        held = [pool.start("POST", path, headers, b'{"aps":{}}', timeout=5.0, urgent=False)
                for _ in range(3)]
        assert writes == []  # nothing written yet: they wait for the loop's next turn
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert len(writes) == 1  # all three in one write
        more = [pool.start("POST", path, headers, b'{"aps":{}}', timeout=5.0, urgent=False)]
        more.append(pool.start("POST", path, headers, b'{"aps":{}}', timeout=5.0))
        assert len(writes) == 2  # the urgent one took the held one along, in order
        answers = await asyncio.gather(*held, *more)
    finally:
        conn._transport = transport
    assert [a.status for a in answers] == [200] * 5
    assert len(apns.requests) == 6
