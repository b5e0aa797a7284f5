"""The Node.js APNs emulator of the call bench (tests/support/apns_node), driven for real:
by the gateway's APNs client, whose outcomes must be those it gets from the Python
emulator, and by an independent client (the `h2` library over a TLS socket) that sends
what our client never would, to see each rejection come with APNs's status and reason."""

from __future__ import annotations

import json
import socket
import ssl
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import h2.config
import h2.connection
import h2.events
import h2.settings
import jwt
import pytest
import pytest_asyncio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.config import ApnsCredentials
from gateway.push.apns import ApnsProvider
from gateway.push.base import Notification
from gateway.push.payloads import MissedCallPush
from gateway.store.records import PushTarget
from tests.support.apns_emulator import ApnsEmulator
from tests.support.apns_nodejs import NodeApns, need_node

from .conftest import BUNDLE, KEY_ID, TEAM, call_payload, write_ec_key

VOIP = "ab" * 32
ALERT = "cd" * 32
GONE = "ef" * 32  # unregistered: 410
SANDBOX = "0a" * 32  # a development token, not valid on this (production) host
GONE_SINCE = 1_625_475_525_573
OTHER_TEAM, OTHER_KID = "TEAM654321", "KEY7654321"
MAX_STREAMS = 50
DEVICES = {VOIP: BUNDLE + ".voip", ALERT: BUNDLE, GONE: BUNDLE + ".voip",
           SANDBOX: {"topic": BUNDLE + ".voip", "environment": "sandbox"}}


# One emulator for the module (starting one costs more than most of these tests): every
# test opens connections of its own, and the connection is what APNs keeps state on.
ON_THE_MODULE_LOOP = pytest.mark.asyncio(loop_scope="module")


@pytest.fixture(scope="module")
def apns_key(tmp_path_factory):
    """The provider's key (file, public PEM), for the whole module."""
    path = tmp_path_factory.mktemp("keys") / "AuthKey.p8"
    return str(path), write_ec_key(path)


@pytest.fixture(scope="module")
def other_key(tmp_path_factory):
    """A second team's key, registered with the emulator too."""
    path = tmp_path_factory.mktemp("keys") / "Other.p8"
    return str(path), write_ec_key(path)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def node(ca, apns_key, other_key, tmp_path_factory):
    need_node()
    emulator = await NodeApns.start(tmp_path_factory.mktemp("node"),
                                    keys={KEY_ID: (TEAM, apns_key[1]), OTHER_KID: (OTHER_TEAM, other_key[1])},
                                    devices=DEVICES, unregistered={GONE: GONE_SINCE},
                                    max_streams=MAX_STREAMS, ca=ca)
    yield emulator
    await emulator.stop()


def provider_for(url: str, ca_file: str, key_file: str, clock=time.time) -> ApnsProvider:
    creds = ApnsCredentials(topic=BUNDLE, team_id=TEAM, key_id=KEY_ID, key_file=key_file,
                            production_url=url, sandbox_url=url)
    return ApnsProvider(creds, ca_file=ca_file, clock=clock)


def call_push(call_id: str = "call-1@pbx") -> Notification:
    return Notification(call_payload(time.time() + 60, call_id=call_id), time.time() + 60)


def missed_push() -> Notification:
    missed = MissedCallPush(instance="i", call_id="c", caller_uri="sip:b@x", reason="cancelled")
    return Notification(missed, time.time() + 600, "m:i")


# --- the gateway's client ----------------------------------------------------------------

@ON_THE_MODULE_LOOP
async def test_the_gateways_pushes_are_accepted_and_recorded_on_the_monotonic_clock(node, apns_key):
    provider = provider_for(node.url, node.ca_file, apns_key[0])
    seen = len(await node.records())
    try:
        before = time.monotonic()
        call = await provider.send(PushTarget("apns", "call", token=VOIP), call_push("c-1"))
        after = time.monotonic()
        missed = await provider.send(PushTarget("apns", "other", token=ALERT), missed_push())
    finally:
        await provider.close()
    assert (call.outcome, missed.outcome) == ("delivered", "delivered")
    first, second = (await node.records())[seen:]
    assert before < first["t"] < after  # node's hrtime is Python's time.monotonic()
    assert (first["status"], first["token"], first["push_type"], first["topic"]) == (
        200, VOIP, "voip", BUNDLE + ".voip")
    assert first["payload"]["gateway"]["call_id"] == "c-1"
    assert (second["push_type"], second["topic"], second["payload"]["gateway"]["type"]) == (
        "alert", BUNDLE, "missed_call")
    assert (await node.arrivals("call"))["c-1"] == first["t"]


# (what the gateway sends, how) -> the same outcome from both emulators
SITUATIONS = {
    "call push": ("call", VOIP, {}),
    "missed call push": ("other", ALERT, {}),
    "voip push to an alert token": ("call", ALERT, {}),
    "unknown token": ("call", "12" * 32, {}),
    "sandbox token on production": ("call", SANDBOX, {}),
    "unregistered token": ("call", GONE, {}),
    "token an hour and a bit old": ("call", VOIP, {"clock": lambda: time.time() - 3700}),
    "token of an unknown key": ("call", VOIP, {"foreign_key": True}),
}


@ON_THE_MODULE_LOOP
@pytest.mark.parametrize("situation", list(SITUATIONS))
async def test_the_gateway_gets_the_same_outcomes_as_from_the_python_emulator(
        situation, node, ca, ca_file, apns_key, other_key):
    usage, token, how = SITUATIONS[situation]
    python = ApnsEmulator(ca, keys={KEY_ID: (TEAM, apns_key[1])})
    for device, topic in DEVICES.items():
        if isinstance(topic, dict):
            python.register(device, topic["topic"], topic["environment"])
        else:
            python.register(device, topic)
    python.unregistered[GONE] = GONE_SINCE
    await python.start()
    key_file = other_key[0] if how.get("foreign_key") else apns_key[0]
    results = []
    try:
        for url, trusted in ((python.url, ca_file), (node.url, node.ca_file)):
            provider = provider_for(url, trusted, key_file, how.get("clock", time.time))
            try:
                note = call_push() if usage == "call" else missed_push()
                result = await provider.send(PushTarget("apns", usage, token=token), note)
            finally:
                await provider.close()
            results.append((result.outcome, result.reason, result.status))
    finally:
        await python.stop()
    assert results[0] == results[1]


# --- an independent client ---------------------------------------------------------------

class H2Client:
    """HTTP/2 with the `h2` library over a blocking TLS socket: no code of the gateway."""

    def __init__(self, url: str, ca_file: str, alpn: tuple[str, ...] = ("h2",)):
        parts = urlsplit(url)
        context = ssl.create_default_context(cafile=ca_file)
        context.set_alpn_protocols(list(alpn))
        raw = socket.create_connection((parts.hostname, parts.port), timeout=5)
        self.sock = context.wrap_socket(raw, server_hostname=parts.hostname)
        self.authority = parts.netloc
        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True,
                                                                       header_encoding="utf-8"))
        self.h2.initiate_connection()
        self.sock.sendall(self.h2.data_to_send())
        self.max_streams = None
        while self.max_streams is None:  # the server's first SETTINGS
            self._read()

    def _read(self) -> list:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("closed by the emulator")
        events = self.h2.receive_data(data)
        for event in events:
            if isinstance(event, h2.events.RemoteSettingsChanged):
                setting = event.changed_settings.get(h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS)
                if setting is not None:
                    self.max_streams = setting.new_value
        self.sock.sendall(self.h2.data_to_send())
        return events

    def request(self, headers: list[tuple[str, str]], body: bytes = b"") -> tuple[int, dict, bytes]:
        stream = self.h2.get_next_available_stream_id()
        self.h2.send_headers(stream, headers, end_stream=not body)
        if body:
            self.h2.send_data(stream, body, end_stream=True)
        self.sock.sendall(self.h2.data_to_send())
        answer, data = {}, b""
        while True:
            for event in self._read():
                if getattr(event, "stream_id", None) != stream:
                    continue
                if isinstance(event, h2.events.ResponseReceived):
                    answer = dict(event.headers)
                elif isinstance(event, h2.events.DataReceived):
                    data += event.data
                    self.h2.acknowledge_received_data(event.flow_controlled_length, stream)
                elif isinstance(event, (h2.events.StreamEnded, h2.events.StreamReset)):
                    self.sock.sendall(self.h2.data_to_send())
                    return int(answer.get(":status", 0)), answer, data

    def close(self) -> None:
        self.sock.close()


def sign(key_file: str, *, kid: str = KEY_ID, iss: str = TEAM, iat: float | None = None,
         algorithm: str = "ES256") -> str:
    private = Path(key_file).read_bytes() if algorithm == "ES256" else "a shared secret, long enough for HS256"
    claims = {"iss": iss, "iat": int(time.time() if iat is None else iat)}
    return jwt.encode(claims, private, algorithm=algorithm, headers={"kid": kid})


def request(url: str, token: str = VOIP, **overrides) -> list[tuple[str, str]]:
    """A voip push's headers; an override of None drops that header."""
    headers = {":method": "POST", ":scheme": "https", ":authority": urlsplit(url).netloc,
               ":path": f"/3/device/{token}", "apns-push-type": "voip",
               "apns-topic": BUNDLE + ".voip", "apns-priority": "10", "apns-expiration": "0",
               "apns-id": str(uuid.uuid4())}
    headers.update(overrides)
    return [(name, value) for name, value in headers.items() if value is not None]


def json_of(size: int) -> bytes:
    """A JSON object of exactly `size` bytes."""
    bare = b'{"aps":{},"pad":""}'
    return bare[:-2] + b"x" * (size - len(bare)) + b'"}'


PAYLOAD = b'{"aps":{"alert":"hi"}}'


def test_an_accepted_push_is_a_bare_200_echoing_the_apns_id(node, apns_key):
    client = H2Client(node.url, node.ca_file)
    try:
        auth = "bearer " + sign(apns_key[0])
        headers = request(node.url, authorization=auth)
        status, answer, body = client.request(headers, PAYLOAD)
        assert (status, body, answer.get("content-type")) == (200, b"", None)
        assert answer["apns-id"] == dict(headers)["apns-id"]
        # without an apns-id, APNs makes one up
        status, answer, _ = client.request(request(node.url, authorization=auth, **{"apns-id": None}), PAYLOAD)
        assert status == 200 and uuid.UUID(answer["apns-id"]).version == 4
    finally:
        client.close()


def _foreign_signature(tmp_path) -> str:
    """A token naming our key id, signed by another key."""
    stranger = tmp_path / "Stranger.p8"
    stranger.write_bytes(ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return sign(str(stranger))


# name -> (headers' overrides (given the key file and tmp_path), body, status, reason)
REJECTIONS = {
    "no authorization": (lambda k, t: {"authorization": None}, PAYLOAD, 403, "MissingProviderToken"),
    "not a JWT": (lambda k, t: {"authorization": "bearer abc.def"}, PAYLOAD, 403, "InvalidProviderToken"),
    "bad signature": (lambda k, t: {"authorization": "bearer " + _foreign_signature(t)}, PAYLOAD,
                      403, "InvalidProviderToken"),
    "expired iat": (lambda k, t: {"authorization": "bearer " + sign(k, iat=time.time() - 3700)}, PAYLOAD,
                    403, "ExpiredProviderToken"),
    "iat in the future": (lambda k, t: {"authorization": "bearer " + sign(k, iat=time.time() + 600)},
                          PAYLOAD, 403, "InvalidProviderToken"),
    "wrong team": (lambda k, t: {"authorization": "bearer " + sign(k, iss=OTHER_TEAM)}, PAYLOAD,
                   403, "InvalidProviderToken"),
    "unknown kid": (lambda k, t: {"authorization": "bearer " + sign(k, kid="KEY0000000")}, PAYLOAD,
                    403, "InvalidProviderToken"),
    "not ES256": (lambda k, t: {"authorization": "bearer " + sign(k, algorithm="HS256")}, PAYLOAD,
                  403, "InvalidProviderToken"),
    "wrong topic": (lambda k, t: {":path": f"/3/device/{ALERT}"}, PAYLOAD, 400, "DeviceTokenNotForTopic"),
    "voip to a bundle topic": (lambda k, t: {"apns-topic": BUNDLE}, PAYLOAD, 400, "TopicDisallowed"),
    "no topic": (lambda k, t: {"apns-topic": None}, PAYLOAD, 400, "MissingTopic"),
    "unknown push type": (lambda k, t: {"apns-push-type": "ring"}, PAYLOAD, 400, "InvalidPushType"),
    "priority 7": (lambda k, t: {"apns-priority": "7"}, PAYLOAD, 400, "BadPriority"),
    "background at priority 10": (lambda k, t: {":path": f"/3/device/{ALERT}", "apns-topic": BUNDLE,
                                                "apns-push-type": "background"}, PAYLOAD, 400, "BadPriority"),
    "expiration not a number": (lambda k, t: {"apns-expiration": "soon"}, PAYLOAD, 400, "BadExpirationDate"),
    "apns-id not a UUID": (lambda k, t: {"apns-id": "push-1"}, PAYLOAD, 400, "BadMessageId"),
    "collapse id of 65 bytes": (lambda k, t: {"apns-collapse-id": "c" * 65}, PAYLOAD, 400, "BadCollapseId"),
    "oversized voip payload": (lambda k, t: {}, json_of(5121), 413, "PayloadTooLarge"),
    "oversized alert payload": (lambda k, t: {":path": f"/3/device/{ALERT}", "apns-topic": BUNDLE,
                                              "apns-push-type": "alert"}, json_of(4097), 413, "PayloadTooLarge"),
    "empty payload": (lambda k, t: {}, b"", 400, "PayloadEmpty"),
    "bad JSON": (lambda k, t: {}, b'{"aps":', 400, "BadPayload"),
    "JSON but not an object": (lambda k, t: {}, b"[1, 2]", 400, "BadPayload"),
    "bad path": (lambda k, t: {":path": f"/3/devices/{VOIP}"}, PAYLOAD, 404, "BadPath"),
    "no device token": (lambda k, t: {":path": "/3/device/"}, PAYLOAD, 400, "MissingDeviceToken"),
    "GET": (lambda k, t: {":method": "GET"}, b"", 405, "MethodNotAllowed"),
    "unknown device token": (lambda k, t: {":path": "/3/device/" + "12" * 32}, PAYLOAD, 400, "BadDeviceToken"),
    "token not hex": (lambda k, t: {":path": "/3/device/" + "zz" * 32}, PAYLOAD, 400, "BadDeviceToken"),
    "sandbox token on production": (lambda k, t: {":path": f"/3/device/{SANDBOX}"}, PAYLOAD,
                                    400, "BadDeviceToken"),
    "unregistered token": (lambda k, t: {":path": f"/3/device/{GONE}"}, PAYLOAD, 410, "Unregistered"),
}


@pytest.mark.parametrize("case", list(REJECTIONS))
def test_each_rejection_has_apples_status_and_reason(case, node, apns_key, tmp_path):
    overrides, body, status, reason = REJECTIONS[case]
    headers = request(node.url, authorization="bearer " + sign(apns_key[0]))
    headers = [(n, v) for n, v in dict(headers, **overrides(apns_key[0], tmp_path)).items() if v is not None]
    client = H2Client(node.url, node.ca_file)
    try:
        got, answer, data = client.request(headers, body)
    finally:
        client.close()
    error = json.loads(data)
    assert (got, error["reason"]) == (status, reason)
    assert answer["content-type"] == "application/json" and "apns-id" in answer
    if status == 410:
        assert error["timestamp"] == GONE_SINCE


def test_payloads_at_the_limits_and_repeated_headers(node, apns_key):
    client = H2Client(node.url, node.ca_file)
    try:
        auth = "bearer " + sign(apns_key[0])
        assert client.request(request(node.url, authorization=auth), json_of(5120))[0] == 200
        alert = request(node.url, ALERT, authorization=auth, **{"apns-push-type": "alert", "apns-topic": BUNDLE})
        assert client.request(alert, json_of(4096))[0] == 200
        twice = request(node.url, authorization=auth) + [("apns-topic", BUNDLE + ".voip")]
        status, _, data = client.request(twice, PAYLOAD)
        assert (status, json.loads(data)) == (400, {"reason": "DuplicateHeaders"})
    finally:
        client.close()


def test_one_stream_until_a_valid_token_then_more(node, apns_key):
    client = H2Client(node.url, node.ca_file)
    try:
        assert client.max_streams == 1
        assert client.request(request(node.url, authorization="bearer x.y.z"), PAYLOAD)[0] == 403
        assert client.max_streams == 1
        assert client.request(request(node.url, authorization="bearer " + sign(apns_key[0])), PAYLOAD)[0] == 200
        while client.max_streams == 1:  # the new SETTINGS may come after the answer
            client._read()
        assert client.max_streams == MAX_STREAMS
    finally:
        client.close()


def test_a_connection_keeps_its_token_for_20_minutes_and_its_team(node, apns_key, other_key):
    first = "bearer " + sign(apns_key[0], iat=time.time() - 10)
    newer = "bearer " + sign(apns_key[0])
    client = H2Client(node.url, node.ca_file)
    try:
        assert client.request(request(node.url, authorization=first), PAYLOAD)[0] == 200
        assert client.request(request(node.url, authorization=first), PAYLOAD)[0] == 200  # cached
        status, _, data = client.request(request(node.url, authorization=newer), PAYLOAD)
        assert (status, json.loads(data)["reason"]) == (429, "TooManyProviderTokenUpdates")
        other = "bearer " + sign(other_key[0], kid=OTHER_KID, iss=OTHER_TEAM)
        status, _, data = client.request(request(node.url, authorization=other), PAYLOAD)
        assert (status, json.loads(data)["reason"]) == (403, "InvalidProviderToken")
    finally:
        client.close()
    fresh = H2Client(node.url, node.ca_file)  # a new connection takes the new token
    try:
        assert fresh.request(request(node.url, authorization=newer), PAYLOAD)[0] == 200
    finally:
        fresh.close()


def test_no_http2_without_alpn_h2(node):
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        H2Client(node.url, node.ca_file, alpn=("http/1.1",))


@ON_THE_MODULE_LOOP
async def test_records_say_what_was_refused_and_arrivals_only_what_was_delivered(node, apns_key):
    seen = len(await node.records())
    client = H2Client(node.url, node.ca_file)
    try:
        auth = "bearer " + sign(apns_key[0])
        body = json.dumps({"aps": {}, "gateway": {"type": "call", "call_id": "x-1"}}).encode()
        assert client.request(request(node.url, authorization=auth), body)[0] == 200
        refused = body.replace(b"x-1", b"x-2")
        assert client.request(request(node.url, authorization=auth, **{"apns-topic": BUNDLE}), refused)[0] == 400
    finally:
        client.close()
    arrivals = await node.arrivals("call")
    assert arrivals["x-1"] == pytest.approx(time.monotonic(), abs=5) and "x-2" not in arrivals
    accepted, refused = node.lines[seen:]
    assert (accepted["status"], refused["status"], refused["reason"]) == (200, 400, "TopicDisallowed")
    assert refused["payload"] is None
