"""An APNs provider-API emulator: HTTP/2 over TLS on loopback, checking what Apple checks.

It speaks the wire protocol (h2 server on asyncio, trustme certificates, ALPN h2) and
validates, in the order Apple's table suggests: method, path, duplicate headers, apns-id,
priority, expiration, collapse id, push type, topic, authentication (ES256 provider token
verified with PyJWT against the registered public key -- an implementation independent of
ours -- with iat age, team binding per connection and the 20-minute token update rule;
or a client certificate), the device registry (environment and topic per token),
payload emptiness and size (4096, 5120 for VoIP).

Like APNs, it allows one stream per connection until the first request with a valid
token, then raises MAX_CONCURRENT_STREAMS. Tests can script any error from Apple's table
for a token (`script`), mark tokens unregistered (410 with a timestamp), delay or hold
answers, send GOAWAY, drop connections, and read every request (`requests`, each with
the monotonic time of the read that ended it).

Cheap enough to sit next to the gateway in a load test (about 0.55 ms of CPU per push
at 1000/s, from 0.65): a request is checked and answered within the read that ended it
(a task only while a test holds or delays answers), everything one read brought goes
out in one write, and our own fixed answer headers skip h2's outbound validation. h2
still validates and normalises every header the client sends (turning that off would
save another ~8 %, and would stop checking our client's framing).
"""

from __future__ import annotations

import asyncio
import collections
import re
import ssl
import time
import uuid
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
import jwt
import msgspec
import trustme

from tests.support.push_tls import server_context

PUSH_TYPES = {"alert", "background", "voip", "location", "complication", "fileprovider", "mdm", "liveactivity", "pushtotalk"}
# Our answers' headers: fixed, built once; h2 neither validates nor normalises them (see
# _Protocol.connection_made), but it still checks every header the client sends.
_OK = (":status", "200")
_JSON = ("content-type", "application/json")
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


@dataclass
class Device:
    topic: str  # the bundle id, or "<bundle>.voip" for a PushKit token
    environment: str = "production"


@dataclass
class Received:
    token: str
    headers: dict[str, str]
    body: bytes
    status: int
    reason: str
    connection: int  # index of the connection it came on
    arrived: float = 0.0  # time.monotonic() when the read that ended it was handled


@dataclass
class _Conn:
    index: int
    h2: h2.connection.H2Connection
    transport: asyncio.Transport
    team: str | None = None
    token: str | None = None
    token_since: float = 0.0
    authorized: bool = False
    claims: dict | None = None  # of `token`, once verified
    client_cert: bool = False
    client_names: tuple = ()  # subject alternative names of the client certificate
    streams: dict = field(default_factory=dict)


class ApnsEmulator:
    def __init__(
        self,
        ca: trustme.CA,
        *,
        environment: str = "production",
        keys: dict[str, tuple[str, bytes]] | None = None,
        client_ca: trustme.CA | None = None,
        max_streams: int = 1000,
        clock=time.time,
    ):
        """`keys`: key id -> (team id, public key PEM), for token auth. `client_ca`: accept
        client certificates it issued (certificate auth)."""
        self.ca = ca
        self.environment = environment
        self.keys = keys or {}
        self.client_ca = client_ca
        self.max_streams = max_streams
        self.clock = clock
        self.devices: dict[str, Device] = {}
        self.unregistered: dict[str, int] = {}  # token -> ms timestamp
        self.scripted: dict[str, collections.deque] = collections.defaultdict(collections.deque)
        self.requests: list[Received] = []
        self.arrivals: list[str] = []  # device tokens in the order their requests arrived
        self.delay = 0.0
        self.hold: asyncio.Event | None = None  # when set to an unset Event, answers wait for it
        self.in_flight = 0
        self.max_in_flight = 0
        self.pings = 0
        self.mute = False  # when set, incoming bytes are ignored (a silently dead path)
        self.connections: list[_Conn] = []
        self._server: asyncio.AbstractServer | None = None
        self.url = ""

    # --- control -------------------------------------------------------------------------

    def register(self, token: str, topic: str, environment: str | None = None) -> str:
        self.devices[token] = Device(topic, environment or self.environment)
        return token

    def script(self, token: str, *answers: tuple[int, str] | tuple[int, str, dict]) -> None:
        """The next answers for `token`, in order, before normal processing resumes."""
        self.scripted[token].extend(answers)

    def delivered(self) -> list[Received]:
        return [r for r in self.requests if r.status == 200]

    async def start(self) -> str:
        context = server_context(self.ca, ["h2"])
        if self.client_ca is not None:
            context.verify_mode = ssl.CERT_OPTIONAL
            self.client_ca.configure_trust(context)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Protocol(self), "127.0.0.1", 0, ssl=context)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"https://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        for conn in self.connections:
            conn.transport.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def goaway(self, reason: str = "Shutdown", last_stream_id: int | None = None) -> None:
        """GOAWAY with `{"reason": ...}` on every connection, then close them as APNs does.
        (h2 cannot answer streams after a GOAWAY, so nothing in flight is answered.)"""
        for conn in self.connections:
            if not conn.transport.is_closing():
                data = msgspec.json.encode({"reason": reason})
                conn.h2.close_connection(error_code=0, additional_data=data, last_stream_id=last_stream_id)
                conn.transport.write(conn.h2.data_to_send())
                conn.transport.close()

    def drop_connections(self) -> None:
        for conn in self.connections:
            conn.transport.abort()

    # --- requests ------------------------------------------------------------------------

    async def _answer_later(self, conn: _Conn, stream_id: int, headers: list, body: bytes,
                            arrived: float) -> None:
        """The slow path, when a test holds or delays answers: one task per request."""
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.hold is not None:
                await self.hold.wait()
            if self.delay:
                await asyncio.sleep(self.delay)
        finally:
            self.in_flight -= 1
        self._answer(conn, stream_id, headers, body, arrived)
        if not conn.transport.is_closing():
            conn.transport.write(conn.h2.data_to_send())

    def _answer(self, conn: _Conn, stream_id: int, headers: list, body: bytes, arrived: float) -> None:
        """Check the request and queue its answer in h2 (the caller writes it out, once
        for everything one read brought)."""
        values = dict(headers)
        status, reason, extra = self._check(conn, headers, values, body)
        token = values.get(":path", "").removeprefix("/3/device/")
        self.requests.append(Received(token, values, body, status, reason, conn.index, arrived))
        if conn.transport.is_closing():
            return
        apns_id = values.get("apns-id") or str(uuid.uuid4())
        try:
            if status == 200:
                conn.h2.send_headers(stream_id, [_OK, ("apns-id", apns_id)], end_stream=True)
            else:
                response = [(":status", str(status)), ("apns-id", apns_id)]
                response += [(k, str(v)) for k, v in extra.items() if k != "timestamp"]
                error = {"reason": reason}
                if "timestamp" in extra:
                    error["timestamp"] = extra["timestamp"]
                conn.h2.send_headers(stream_id, response + [_JSON])
                conn.h2.send_data(stream_id, msgspec.json.encode(error), end_stream=True)
            if not conn.authorized and self.client_ca is None and status != 403:
                conn.authorized = True  # APNs lifts the one-stream limit after a valid token
                conn.h2.update_settings({h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: self.max_streams})
        except h2.exceptions.H2Error:  # the client reset the stream or went away meanwhile
            return

    def _check(self, conn: _Conn, headers: list, h: dict, body: bytes) -> tuple[int, str, dict]:
        if h.get(":method") != "POST":
            return 405, "MethodNotAllowed", {}
        path = h.get(":path", "")
        if not path.startswith("/3/device/"):
            return 404, "BadPath", {}
        token = path.removeprefix("/3/device/")
        if not token:
            return 400, "MissingDeviceToken", {}
        if len(h) != len(headers):
            return 400, "DuplicateHeaders", {}
        if "apns-id" in h and not _UUID.match(h["apns-id"]):
            return 400, "BadMessageId", {}
        priority = h.get("apns-priority", "10")
        if priority not in ("1", "5", "10"):
            return 400, "BadPriority", {}
        if "apns-expiration" in h and not h["apns-expiration"].isdigit():
            return 400, "BadExpirationDate", {}
        if len(h.get("apns-collapse-id", "").encode()) > 64:
            return 400, "BadCollapseId", {}
        push_type = h.get("apns-push-type", "")
        if push_type not in PUSH_TYPES:
            return 400, "InvalidPushType", {}
        if push_type == "background" and priority == "10":
            return 400, "BadPriority", {}
        topic = h.get("apns-topic", "")
        if not topic:
            return 400, "MissingTopic", {}
        if (push_type == "voip") != topic.endswith(".voip"):
            return 400, "TopicDisallowed", {}
        auth = self._check_auth(conn, h.get("authorization"))
        if auth is not None:
            return auth
        if self.scripted.get(token):
            status, reason, *extra = self.scripted[token].popleft()
            return status, reason, (extra[0] if extra else {})
        device = self.devices.get(token)
        if device is None or device.environment != self.environment:
            return 400, "BadDeviceToken", {}
        if device.topic != topic:
            return 400, "DeviceTokenNotForTopic", {}
        if not body:
            return 400, "PayloadEmpty", {}
        if len(body) > (5120 if push_type == "voip" else 4096):
            return 413, "PayloadTooLarge", {}
        if token in self.unregistered:
            return 410, "Unregistered", {"timestamp": self.unregistered[token]}
        return 200, "", {}

    def _check_auth(self, conn: _Conn, authorization: str | None):
        if self.client_ca is not None and conn.client_cert:
            return None  # certificate auth: APNs ignores the authorization header
        if not authorization or not authorization.startswith("bearer "):
            return 403, "MissingProviderToken", {}
        token = authorization.removeprefix("bearer ")
        now = self.clock()
        if token == conn.token and conn.claims is not None:
            # verified on this connection already (APNs caches a token per connection)
            if now - conn.claims["iat"] > 3600:
                return 403, "ExpiredProviderToken", {}
            return None
        try:
            header = jwt.get_unverified_header(token)
            team, public_pem = self.keys[header.get("kid", "")]
            claims = jwt.decode(
                token,
                public_pem,
                algorithms=["ES256"],
                options={"verify_iat": False, "verify_exp": False, "verify_nbf": False, "require": ["iat", "iss"]},
            )
        except (jwt.PyJWTError, KeyError):
            return 403, "InvalidProviderToken", {}
        if claims["iss"] != team or (conn.team is not None and conn.team != team):
            return 403, "InvalidProviderToken", {}
        if now - claims["iat"] > 3600:
            return 403, "ExpiredProviderToken", {}
        if conn.token != token:
            if conn.token is not None and now - conn.token_since < 20 * 60:
                return 429, "TooManyProviderTokenUpdates", {}
            conn.token, conn.token_since = token, now
        conn.team, conn.claims = team, claims
        return None


class _Protocol(asyncio.Protocol):
    def __init__(self, emulator: ApnsEmulator):
        self.emulator = emulator
        self.conn: _Conn | None = None

    def connection_made(self, transport) -> None:
        em = self.emulator
        # The client's headers are validated and normalised by h2 (what checks our
        # client's framing); our own answers are constants, not worth h2's checks.
        config = h2.config.H2Configuration(client_side=False, header_encoding="utf-8",
                                           validate_outbound_headers=False,
                                           normalize_outbound_headers=False)
        conn = _Conn(len(em.connections), h2.connection.H2Connection(config), transport)
        peer = transport.get_extra_info("peercert") or {}
        conn.client_cert = bool(peer)
        conn.client_names = tuple(value for _, value in peer.get("subjectAltName", ()))
        # Token auth: one stream until a valid token has been seen, as APNs does.
        streams = em.max_streams if em.client_ca is not None else 1
        conn.h2.local_settings = h2.settings.Settings(
            client=False, initial_values={h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: streams}
        )
        conn.h2.initiate_connection()
        transport.write(conn.h2.data_to_send())
        em.connections.append(conn)
        self.conn = conn

    def data_received(self, data: bytes) -> None:
        em, conn = self.emulator, self.conn
        if em.mute:
            return
        arrived = time.monotonic()
        try:
            events = conn.h2.receive_data(data)
        except Exception:
            conn.transport.close()
            return
        streams = conn.streams
        for event in events:
            kind = type(event)
            if kind is _DATA:
                conn.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                if event.stream_id in streams:
                    streams[event.stream_id][1].extend(event.data)
            elif kind is _ENDED:
                headers, body = streams.pop(event.stream_id, ([], b""))
                path = next((value for name, value in headers if name == ":path"), "")
                em.arrivals.append(path.removeprefix("/3/device/"))
                if em.hold is None and not em.delay:
                    em._answer(conn, event.stream_id, headers, bytes(body), arrived)
                else:
                    asyncio.ensure_future(em._answer_later(conn, event.stream_id, headers, bytes(body), arrived))
            elif kind is _REQUEST:
                streams[event.stream_id] = (event.headers, bytearray())
            elif kind is h2.events.StreamReset:
                streams.pop(event.stream_id, None)
            elif kind is h2.events.PingReceived:
                em.pings += 1  # h2 has queued the ACK
        # everything this read brought is answered in one write
        conn.transport.write(conn.h2.data_to_send())


_REQUEST, _DATA, _ENDED = h2.events.RequestReceived, h2.events.DataReceived, h2.events.StreamEnded
