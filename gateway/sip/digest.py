"""Digest authentication, client side (RFC 7616 as used by SIP, RFC 8760; RFC 3261 22).

One `DigestClient` per account. It answers 401 (WWW-Authenticate -> Authorization) and 407
(Proxy-Authenticate -> Proxy-Authorization) challenges:

    digest = DigestClient("alice", password_source)
    digest.challenged(response)            # raises AuthError when it cannot or must not retry
    name, value = digest.authorization("REGISTER", "sip:example.com")

- Algorithms MD5, MD5-sess, SHA-256, SHA-256-sess; among several challenges the strongest
  usable one is chosen (SHA-256 before MD5). qop=auth is used when offered (auth-int alone
  is not supported), with a fresh cnonce per challenge and nc counting up.
- The nonce is reused for later requests (refreshes) until the server answers with a new
  challenge: `stale=true` (or a different nonce) is a retry, the same nonce again means our
  credentials were rejected.
- The password is never kept: `password_source()` is called when a realm (or algorithm)
  is first met, HA1 is computed and kept, and the password dropped.

Depends on `gateway.errors`, `gateway.sip.ids` (cnonces) and the message model's
`Challenge` only (duck-typed responses with `.status`, `.www_authenticate`,
`.proxy_authenticate`); nothing above.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from gateway.errors import AuthError
from gateway.sip.ids import random_hex

#: supported algorithms, strongest first
ALGORITHMS = ("SHA-256", "SHA-256-sess", "MD5", "MD5-sess")
_HASHES = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}


def _hash(algorithm: str, text: str) -> str:
    return _HASHES[algorithm.removesuffix("-sess")](text.encode("utf-8")).hexdigest()


def ha1(algorithm: str, username: str, realm: str, password: str) -> str:
    """H(username:realm:password) with the algorithm's hash (-sess applied per nonce)."""
    return _hash(algorithm, f"{username}:{realm}:{password}")


def response_value(algorithm: str, ha1_value: str, nonce: str, nc: str, cnonce: str,
                   qop: str | None, method: str, uri: str) -> str:
    """The `response` parameter (RFC 7616 3.4.1; RFC 2069 form when there is no qop)."""
    if algorithm.endswith("-sess"):
        ha1_value = _hash(algorithm, f"{ha1_value}:{nonce}:{cnonce}")
    ha2 = _hash(algorithm, f"{method}:{uri}")
    if qop:
        return _hash(algorithm, f"{ha1_value}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")
    return _hash(algorithm, f"{ha1_value}:{nonce}:{ha2}")


def _quote(value: str) -> str:
    if "\\" in value or '"' in value:
        value = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{value}"'


class _Session:
    """What one accepted challenge leaves behind for the requests that follow."""

    __slots__ = ("header", "realm", "nonce", "opaque", "algorithm", "algorithm_given", "qop",
                 "cnonce", "nc", "answered")

    def __init__(self, header: str, challenge, algorithm: str, qop: str | None):
        params = challenge.params
        self.header = header
        self.realm = params.get("realm", "")
        self.nonce = params.get("nonce", "")
        self.opaque = params.get("opaque")
        self.algorithm = algorithm
        self.algorithm_given = "algorithm" in params
        self.qop = qop
        self.cnonce = random_hex(8)
        self.nc = 0
        self.answered = False  # credentials were sent for this nonce


def pick(challenges: list, header: str) -> tuple[object, str, str | None] | None:
    """The strongest usable Digest challenge: (challenge, algorithm, qop), or None."""
    best = None
    for challenge in challenges:
        if challenge.scheme.lower() != "digest" or not challenge.params.get("nonce"):
            continue
        algorithm = _algorithm(challenge.params.get("algorithm", "MD5"))
        if algorithm is None:
            continue
        qops = challenge.params.get("qop")
        if qops is None:
            qop = None
        else:
            offered = {q.strip().lower() for q in qops.split(",")}
            if "auth" not in offered:
                continue  # auth-int only: we would have to hash bodies we do not send
            qop = "auth"
        rank = ALGORITHMS.index(algorithm)
        if best is None or rank < best[0]:
            best = (rank, challenge, algorithm, qop)
    return None if best is None else best[1:]


_BY_NAME = {known.lower(): known for known in ALGORITHMS}


def _algorithm(name: str) -> str | None:
    return _BY_NAME.get(name.strip().lower())


class DigestClient:
    """Digest credentials of one account; see the module docstring."""

    __slots__ = ("username", "_password_source", "_ha1", "_session")

    def __init__(self, username: str, password_source: Callable[[], str]):
        self.username = username
        self._password_source = password_source
        self._ha1: dict[tuple[str, str], str] = {}  # (realm, hash) -> HA1
        self._session: _Session | None = None

    @property
    def algorithm(self) -> str | None:
        """The algorithm of the challenge in use (for the doctor and the logs)."""
        return self._session.algorithm if self._session else None

    @property
    def realm(self) -> str | None:
        return self._session.realm if self._session else None

    def forget_nonce(self) -> None:
        """Start over with the next challenge (HA1 stays)."""
        self._session = None

    def challenged(self, response) -> None:
        """Take a 401 or 407. Returns when the request is worth sending again with
        credentials; raises AuthError when no challenge is usable or when the server
        rejected the credentials we sent for this nonce."""
        if response.status == 401:
            header, challenges = "Authorization", response.www_authenticate
        elif response.status == 407:
            header, challenges = "Proxy-Authorization", response.proxy_authenticate
        else:
            raise ValueError(f"not a challenge: {response.status}")
        chosen = pick(challenges, header)
        if chosen is None:
            schemes = ", ".join(sorted({c.scheme for c in challenges})) or "none"
            raise AuthError(f"no usable digest challenge in the {response.status} "
                            f"(offered: {schemes}; supported: Digest {', '.join(ALGORITHMS)} "
                            "with qop auth or none)", status=response.status)
        challenge, algorithm, qop = chosen
        previous = self._session
        stale = challenge.params.get("stale", "").lower() == "true"
        if (previous is not None and previous.answered and not stale
                and previous.realm == challenge.params.get("realm", "")
                and (previous.nonce == challenge.params.get("nonce") or previous.nc == 1)):
            # our answer was refused without the nonce being stale: for the same nonce, or
            # for a nonce we had just been given (a reused nonce may simply have expired)
            raise AuthError("credentials rejected", status=response.status)
        self._session = _Session(header, challenge, algorithm, qop)
        self._remember_ha1(self._session)

    def _remember_ha1(self, session: _Session) -> None:
        key = (session.realm, session.algorithm.removesuffix("-sess"))
        if key not in self._ha1:
            password = self._password_source()
            self._ha1[key] = ha1(key[1], self.username, session.realm, password)
            del password

    def authorization(self, method: str, uri: str) -> tuple[str, str] | None:
        """The (header name, value) answering the current challenge for a request, or
        None before any challenge. Each call counts one more use of the nonce."""
        session = self._session
        if session is None:
            return None
        session.nc += 1
        session.answered = True
        nc = f"{session.nc:08x}"
        key = (session.realm, session.algorithm.removesuffix("-sess"))
        digest = response_value(session.algorithm, self._ha1[key], session.nonce, nc,
                                session.cnonce, session.qop, method, uri)
        parts = [f"Digest username={_quote(self.username)}", f"realm={_quote(session.realm)}",
                 f"nonce={_quote(session.nonce)}", f"uri={_quote(uri)}",
                 f"response={_quote(digest)}"]
        if session.algorithm_given or session.algorithm != "MD5":
            parts.append(f"algorithm={session.algorithm}")
        if session.opaque is not None:
            parts.append(f"opaque={_quote(session.opaque)}")
        if session.qop:
            parts += [f"qop={session.qop}", f"nc={nc}", f"cnonce={_quote(session.cnonce)}"]
        return session.header, ", ".join(parts)
