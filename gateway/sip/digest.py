"""Digest authentication, client side (RFC 7616 as used by SIP, RFC 8760; RFC 3261 22).

One `DigestClient` per account. It answers 401 (WWW-Authenticate -> Authorization) and 407
(Proxy-Authenticate -> Proxy-Authorization) challenges:

    digest = DigestClient("alice", password_source)
    digest.challenged(response)            # raises AuthError when it cannot or must not retry
    name, value = digest.authorization("REGISTER", "sip:example.com")

- Algorithms MD5, MD5-sess, SHA-256, SHA-256-sess; among several challenges the strongest
  usable one is chosen (SHA-256 before MD5). qop=auth is used when offered (auth-int alone
  is not supported), with a fresh cnonce per challenge and nc counting up. The cnonce is
  drawn at random (`gateway.sip.ids`) when a nonce is taken and kept with it: every
  request answered with that nonce carries it (what -sess's A1 is made of), the next
  nonce gets another. Drawing 8 bytes from the pool costs a tenth of hashing them.
- The nonce is reused for later requests (refreshes) until the server answers with a new
  challenge: `stale=true` (or a different nonce) is a retry, the same nonce again means our
  credentials were rejected.
- The password is never kept: `password_source()` is called when a realm (or algorithm)
  is first met, HA1 is computed and kept (raw bytes, for the realm in use), and the
  password dropped.
- One client per registered instance, so its state is small: the parts of a challenge
  that every account of a registrar hears alike (realm, opaque, algorithm, qop) are one
  shared object; the nonce stays per account (another account's nonce is not ours to
  use: a registrar may bind it to the client, and its nc to one counter).

`DigestClient` is the compiled twin (`_ext/digest.pyx`) when it is built, picked at the
end of this module through `gateway._accel`. Depends on `gateway.errors`,
`gateway.sip.ids` and the message model's `Challenge` only (duck-typed responses with
`.status`, `.www_authenticate`, `.proxy_authenticate`); nothing above.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from gateway import _accel
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


class _Challenge:
    """What an accepted challenge says that every account of a registrar hears alike:
    realm, opaque, algorithm, qop and the header to answer in. One object per distinct
    set of values (`_shared_challenge`), whatever the number of accounts; the nonce and
    its count stay with each account."""

    __slots__ = ("header", "realm", "opaque", "algorithm", "algorithm_given", "qop", "ha1_key")

    def __init__(self, header: str, realm: str, opaque: str | None, algorithm: str,
                 algorithm_given: bool, qop: str | None):
        self.header = header
        self.realm = realm
        self.opaque = opaque
        self.algorithm = algorithm
        self.algorithm_given = algorithm_given
        self.qop = qop
        self.ha1_key = (realm, algorithm.removesuffix("-sess"))  # what HA1 depends on


#: the values of a challenge -> its one shared _Challenge; bounded, so a registrar sending
#: a different opaque each time only stops the sharing
_CHALLENGES: dict[tuple, _Challenge] = {}


def _shared_challenge(header: str, params: dict, algorithm: str, qop: str | None) -> _Challenge:
    values = (header, params.get("realm", ""), params.get("opaque"), algorithm,
              "algorithm" in params, qop)
    found = _CHALLENGES.get(values)
    if found is None:
        found = _Challenge(*values)
        if len(_CHALLENGES) < 10_000:
            _CHALLENGES[values] = found
    return found


def pick(challenges: list, header: str) -> tuple[object, str, str | None] | None:
    """The strongest usable Digest challenge: (challenge, algorithm, qop), or None."""
    best = None
    for challenge in challenges:
        if challenge.scheme.lower() != "digest":
            continue
        chosen = usable(challenge.params)
        if chosen is None:
            continue
        rank = ALGORITHMS.index(chosen[0])
        if best is None or rank < best[0]:
            best = (rank, challenge) + chosen
    return None if best is None else best[1:]


def usable(params: dict) -> tuple[str, str | None] | None:
    """(algorithm, qop) to answer a Digest challenge with these params (lower-case names,
    unquoted values), or None when we cannot answer it."""
    if not params.get("nonce"):
        return None
    algorithm = _algorithm(params.get("algorithm", "MD5"))
    if algorithm is None:
        return None
    qops = params.get("qop")
    if qops is None:
        return algorithm, None
    if "auth" not in {q.strip().lower() for q in qops.split(",")}:
        return None  # auth-int only: we would have to hash bodies we do not send
    return algorithm, "auth"


_BY_NAME = {known.lower(): known for known in ALGORITHMS}


def _algorithm(name: str) -> str | None:
    return _BY_NAME.get(name.strip().lower())


class DigestClient:
    """Digest credentials of one account; see the module docstring. Kept small (one per
    registered instance): HA1 as raw bytes for the one realm and hash in use (another
    realm opens the password again), the challenge's shared parts by reference, and per
    account only the nonce, its count and its cnonce."""

    __slots__ = ("username", "password_source", "_ha1", "_ha1_key", "_challenge", "_nonce",
                 "_nc", "_cnonce")

    def __init__(self, username: str, password_source: Callable[[], str]):
        self.username = username
        self.password_source = password_source
        self._ha1: bytes | None = None  # H(username:realm:password), raw digest
        self._ha1_key: tuple[str, str] | None = None  # the (realm, hash) of _ha1
        self._challenge: _Challenge | None = None
        self._nonce = ""
        self._nc = 0  # requests answered with this nonce (0: none yet)
        self._cnonce = ""  # RFC 7616 3.4: 16 hex digits, drawn with the nonce

    @property
    def algorithm(self) -> str | None:
        """The algorithm of the challenge in use (for the doctor and the logs)."""
        return self._challenge.algorithm if self._challenge else None

    @property
    def realm(self) -> str | None:
        return self._challenge.realm if self._challenge else None

    def forget_nonce(self) -> None:
        """Start over with the next challenge (HA1 stays)."""
        self._challenge = None
        self._nonce = ""
        self._nc = 0
        self._cnonce = ""

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
        self.accept(response.status, header, challenge.params, algorithm, qop)

    def accept(self, status: int, header: str, params: dict, algorithm: str,
               qop: str | None) -> None:
        """Take one usable Digest challenge (its params, and `usable(params)`) of a 401
        or 407 answered in `header`: what `challenged()` does once it has picked one, for
        callers that read the challenge themselves. Raises AuthError when the server
        rejected the credentials we sent for this nonce."""
        previous = self._challenge
        stale = params.get("stale", "").lower() == "true"
        if (previous is not None and self._nc > 0 and not stale
                and previous.realm == params.get("realm", "")
                and (self._nonce == params.get("nonce") or self._nc == 1)):
            # our answer was refused without the nonce being stale: for the same nonce, or
            # for a nonce we had just been given (a reused nonce may simply have expired)
            raise AuthError("credentials rejected", status=status)
        shared = _shared_challenge(header, params, algorithm, qop)
        if self._ha1_key != shared.ha1_key:
            password = self.password_source()
            self._ha1 = bytes.fromhex(ha1(shared.ha1_key[1], self.username, shared.realm, password))
            self._ha1_key = shared.ha1_key
            del password
        self._challenge = shared
        self._nonce = params.get("nonce", "")
        self._nc = 0
        self._cnonce = random_hex(8)

    def authorization(self, method: str, uri: str) -> tuple[str, str] | None:
        """The (header name, value) answering the current challenge for a request, or
        None before any challenge. Each call counts one more use of the nonce."""
        shared = self._challenge
        if shared is None:
            return None
        self._nc += 1
        nc = f"{self._nc:08x}"
        cnonce = self._cnonce
        digest = response_value(shared.algorithm, self._ha1.hex(), self._nonce, nc,
                                cnonce, shared.qop, method, uri)
        parts = [f"Digest username={_quote(self.username)}", f"realm={_quote(shared.realm)}",
                 f"nonce={_quote(self._nonce)}", f"uri={_quote(uri)}",
                 f"response={_quote(digest)}"]
        if shared.algorithm_given or shared.algorithm != "MD5":
            parts.append(f"algorithm={shared.algorithm}")
        if shared.opaque is not None:
            parts.append(f"opaque={_quote(shared.opaque)}")
        if shared.qop:
            parts += [f"qop={shared.qop}", f"nc={nc}", f"cnonce={_quote(cnonce)}"]
        return shared.header, ", ".join(parts)


#: the Python twin, by its own name: `DigestClient` is the compiled one (`_ext/digest.pyx`,
#: the same fields and these methods, made without a Python frame and read directly by
#: the compiled REGISTER wire) when it is built
PythonDigestClient = DigestClient
DigestClient = _accel.load("_digest", "sip.digest").DigestClient  # type: ignore[misc]
