"""The device face's registrar: a woken app registers here as `sip:<instance id>@<gateway>`.

    registrar = DeviceRegistrar(realm, credentials, clock=time.monotonic)
    registrar.on_registered = callback      # callback(binding, first) after each 200
    registrar.on_push_params = callback     # callback(instance_id, PushParams) (RFC 8599)
    await registrar.register(request, transaction)
    registrar.binding(instance_id)          # the live DeviceBinding, or None

Authentication is SIP digest (RFC 3261 22, RFC 8760): username = the instance id, the
password = the instance secret, which the gateway only has as HA1 hashes (MD5 and
SHA-256) under `realm`; `credentials(instance_id)` returns them (a coroutine, None for an
unknown instance). Both algorithms are offered, SHA-256 first, with qop=auth. Nonces are
stateless (issue time and an HMAC under a per-process key) and live `nonce_ttl` seconds;
an expired one is answered with `stale=true`. A wrong answer gets 403, so a bad secret is
not retried for ever.

A binding is the Contact of the REGISTER and the flow it came on: requests for the
device go on that flow (the device is usually behind NAT and reachable only through the
connection, or the UDP source address, it opened). The flow is held (`acquire`) while the
binding lives. `pn-provider`, `pn-prid` and `pn-param` Contact parameters (RFC 8599) are
reported to `on_push_params` so that the instance's push target follows the app's.

Depends on the message model, digest helpers, transaction helpers and `gateway.errors`;
never on instances, the store or calls (they are reached through the callbacks).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple

from gateway.errors import ParseError, TransportError
from gateway.sip.digest import response_value
from gateway.sip.fields import Challenge
from gateway.sip.message import SipUri
from gateway.sip.transaction import build_response

log = logging.getLogger(__name__)

Credentials = Callable[[str], Awaitable[tuple[str, str] | None]]


class PushParams(NamedTuple):
    """RFC 8599 Contact parameters: which push service, the device's token there, and
    the service-specific parameter (APNs: "<team id>.<topic>")."""

    provider: str
    prid: str
    param: str | None


class DeviceBinding:
    __slots__ = ("instance_id", "contact", "flow", "expires_at", "registered_at")

    def __init__(self, instance_id: str, contact: SipUri, flow: Any, expires_at: float,
                 registered_at: float):
        self.instance_id = instance_id
        self.contact = contact
        self.flow = flow
        self.expires_at = expires_at
        self.registered_at = registered_at

    def __repr__(self) -> str:
        return f"<DeviceBinding {self.instance_id} {self.flow!r}>"


class DeviceRegistrar:
    def __init__(self, realm: str, credentials: Credentials, *, max_expires: int = 3600,
                 nonce_ttl: float = 300.0, clock: Callable[[], float] = time.monotonic,
                 user_agent: str = "sip-push-gateway"):
        self.realm = realm
        self.credentials = credentials
        self.max_expires = max_expires
        self.nonce_ttl = nonce_ttl
        self.clock = clock
        self.user_agent = user_agent
        self._key = secrets.token_bytes(32)
        self._bindings: dict[str, DeviceBinding] = {}
        self.on_registered: Callable[[DeviceBinding, bool], None] = lambda binding, first: None
        self.on_push_params: Callable[[str, PushParams], None] = lambda instance_id, params: None

    # -- bindings -------------------------------------------------------------------------

    def binding(self, instance_id: str) -> DeviceBinding | None:
        binding = self._bindings.get(instance_id)
        if binding is None:
            return None
        if binding.flow.closed or binding.expires_at <= self.clock():
            self._drop(instance_id)
            return None
        return binding

    def forget(self, instance_id: str) -> None:
        """The instance is gone (erased, expired): its device binding goes too."""
        self._drop(instance_id)

    def _drop(self, instance_id: str) -> None:
        binding = self._bindings.pop(instance_id, None)
        if binding is not None and not binding.flow.closed:
            binding.flow.release()

    def _bind(self, instance_id: str, contact: SipUri, flow: Any, expires: int) -> DeviceBinding:
        now = self.clock()
        old = self._bindings.get(instance_id)
        binding = DeviceBinding(instance_id, contact, flow, now + expires, now)
        if old is None or old.flow is not flow:
            flow.acquire()  # kept open (and kept alive) while the device is bound through it
            if old is not None and not old.flow.closed:
                old.flow.release()
        self._bindings[instance_id] = binding
        return binding

    # -- REGISTER -------------------------------------------------------------------------

    async def register(self, request: Any, tx: Any) -> None:
        try:
            instance_id = request.to.uri.user or ""
            answer = await self._register(request, tx, instance_id)
        except ParseError as exc:
            answer = (400, f"Bad Request ({exc})"[:120], [])
        status, reason, extra = answer
        self._respond(tx, status, reason, extra)

    async def _register(self, request, tx, instance_id: str) -> tuple[int, str, list]:
        credentials = self._credentials(request)
        if credentials is None:
            return self._challenge(stale=False)
        params = credentials.params
        if params.get("username") != instance_id or params.get("realm") != self.realm:
            return 403, "Forbidden", []
        fresh = self._nonce_fresh(params.get("nonce", ""))
        if fresh is None:
            return 403, "Forbidden", []  # not a nonce of ours
        hashes = await self.credentials(instance_id) if instance_id else None
        if hashes is None or not self._answer_ok(request, params, hashes):
            log.info("device REGISTER with a wrong secret for %s", instance_id[:8])
            return 403, "Forbidden", []
        if not fresh:
            return self._challenge(stale=True)
        return self._update(request, tx, instance_id)

    def _update(self, request, tx, instance_id: str) -> tuple[int, str, list]:
        contacts = request.contacts
        if not contacts:  # a query: list the binding
            binding = self.binding(instance_id)
            return 200, "OK", self._contact_fields(binding)
        if contacts[0].wildcard:
            if request.expires != 0:
                return 400, "Bad Request (Contact * needs Expires: 0)", []
            self._drop(instance_id)
            return 200, "OK", []
        contact = contacts[0]
        expires = contact.expires
        if expires is None:
            expires = request.expires if request.expires is not None else self.max_expires
        expires = min(expires, self.max_expires)
        if expires == 0:
            self._drop(instance_id)
            return 200, "OK", []
        first = self.binding(instance_id) is None
        binding = self._bind(instance_id, contact.uri, tx.flow, expires)
        push = _push_params(contact.uri)
        if push is not None:
            self._notify(self.on_push_params, instance_id, push)
        self._notify(self.on_registered, binding, first)
        return 200, "OK", self._contact_fields(binding)

    def _contact_fields(self, binding: DeviceBinding | None) -> list:
        if binding is None:
            return []
        left = max(0, int(binding.expires_at - self.clock()))
        return [("Contact", f"<{binding.contact}>;expires={left}")]

    @staticmethod
    def _notify(callback, *args) -> None:
        try:
            callback(*args)
        except Exception:  # noqa: BLE001 - a listener's bug must not fail the REGISTER
            log.exception("device registrar listener failed")

    # -- digest ---------------------------------------------------------------------------

    @staticmethod
    def _credentials(request) -> Challenge | None:
        for value in request.headers.fields("Authorization"):
            for item in Challenge.parse_all(value, "Authorization"):
                if item.scheme.lower() == "digest":
                    return item
        return None

    def _challenge(self, stale: bool) -> tuple[int, str, list]:
        nonce = self._new_nonce()
        fields = []
        for algorithm in ("SHA-256", "MD5"):
            value = (f'Digest realm="{self.realm}", nonce="{nonce}", qop="auth", '
                     f'algorithm={algorithm}')
            if stale:
                value += ", stale=true"
            fields.append(("WWW-Authenticate", value))
        return 401, "Unauthorized", fields

    def _new_nonce(self) -> str:
        stamp = f"{int(self.clock() * 1000):x}"
        return f"{stamp}.{self._sign(stamp)}"

    def _sign(self, stamp: str) -> str:
        return hmac.new(self._key, stamp.encode(), hashlib.sha256).hexdigest()[:32]

    def _nonce_fresh(self, nonce: str) -> bool | None:
        """True: ours and fresh; False: ours but expired; None: not ours."""
        stamp, _, mac = nonce.partition(".")
        if not mac or not hmac.compare_digest(mac, self._sign(stamp)):
            return None
        try:
            issued = int(stamp, 16) / 1000
        except ValueError:
            return None
        return self.clock() - issued <= self.nonce_ttl

    def _answer_ok(self, request, params: dict, hashes: tuple[str, str]) -> bool:
        algorithm = params.get("algorithm", "MD5").upper()
        if algorithm not in ("MD5", "SHA-256"):
            return False  # the -sess variants would need the plaintext-free HA1 per nonce too
        ha1 = hashes[0] if algorithm == "MD5" else hashes[1]
        qop = params.get("qop")
        if qop not in (None, "auth"):
            return False
        expected = response_value(algorithm, ha1, params.get("nonce", ""), params.get("nc", ""),
                                  params.get("cnonce", ""), qop, request.method,
                                  params.get("uri", ""))
        return hmac.compare_digest(expected, params.get("response", "").lower())

    # -- answers --------------------------------------------------------------------------

    def _respond(self, tx, status: int, reason: str, extra: list) -> None:
        response = build_response(tx.request, status, reason)
        if response.to_tag is None:
            response.headers.set("To", f"{tx.request.get('To')};tag={self._sign('to')[:12]}")
        for name, value in extra:
            response.headers.add(name, value)
        response.headers.add("Server", self.user_agent)
        try:
            tx.respond(response)
        except TransportError as exc:
            log.info("could not answer REGISTER: %s", exc)


def _push_params(uri: SipUri) -> PushParams | None:
    provider, prid = uri.param("pn-provider"), uri.param("pn-prid")
    if not provider or not prid:
        return None
    return PushParams(provider.lower(), prid, uri.param("pn-param"))
