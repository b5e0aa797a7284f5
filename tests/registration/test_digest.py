"""Digest answers (RFC 7616 / 8760, RFC 3261 22) against RFC vectors and the 401s real
registrars sent (tests/sip/corpus/shared): algorithm choice, qop, nc, stale nonces,
rejected credentials, and challenges nobody can answer. Every test runs on both twins
of `DigestClient` (the Python class and the compiled `gateway._digest` one)."""

import re
from pathlib import Path

import pytest

from gateway.errors import AuthError
from gateway.sip.digest import ha1, pick, response_value
from gateway.sip.fields import Challenge
from gateway.sip.parsing import parse_message
from tests.twins import load_both

# the Python twin is `PythonDigestClient` (the module's `DigestClient` is the compiled one
# when built)
TWINS = [pytest.param(getattr(p.values[0], "PythonDigestClient", p.values[0].DigestClient), id=p.id)
         for p in load_both("_digest", "sip.digest")]
DigestClient = None  # each test's twin (`twin` below)


@pytest.fixture(autouse=True, params=TWINS)
def twin(request, monkeypatch):
    monkeypatch.setitem(globals(), "DigestClient", request.param)
    return request.param

CORPUS = Path(__file__).parents[1] / "sip" / "corpus" / "shared"


def corpus(name: str):
    return parse_message((CORPUS / name).read_bytes())


def params(header_value: str) -> dict:
    return Challenge.parse_all(header_value, "Authorization")[0].params


def challenge(text: str, status: int = 401):
    name = "WWW-Authenticate" if status == 401 else "Proxy-Authenticate"
    reason = "Unauthorized" if status == 401 else "Proxy Authentication Required"
    return parse_message(
        f"SIP/2.0 {status} {reason}\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKx\r\n"
        f"From: <sip:a@b>;tag=1\r\nTo: <sip:a@b>;tag=2\r\nCall-ID: c\r\nCSeq: 1 REGISTER\r\n"
        f"{name}: {text}\r\nContent-Length: 0\r\n\r\n".encode())


class Passwords:
    """A password source that counts how often the password was needed."""

    def __init__(self, password="secret"):
        self.password, self.calls = password, 0

    def __call__(self):
        self.calls += 1
        return self.password


@pytest.mark.parametrize("algorithm, expected", [
    ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
    ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
])
def test_rfc7616_vectors(algorithm, expected):
    h = ha1(algorithm, "Mufasa", "http-auth@example.org", "Circle of Life")
    got = response_value(algorithm, h, "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
                         "00000001", "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ", "auth",
                         "GET", "/dir/index.html")
    assert got == expected


def test_flexisip_challenge_qop_and_opaque():
    source = Passwords()
    digest = DigestClient("gbi", source)
    digest.challenged(corpus("04-flexisip-401-tls-qop-opaque.sip"))
    name, value = digest.authorization("REGISTER", "sip:sip.linphone.org")
    p = params(value)
    assert name == "Authorization"
    assert p["realm"] == "sip.linphone.org" and p["nonce"] == "WR5i2QAAAAA9uY8IAADQ03f3p94AAAAA"
    assert p["opaque"] == "+GNywA==" and p["qop"] == "auth" and p["nc"] == "00000001"
    assert p["algorithm"] == "MD5"
    expected = response_value("MD5", ha1("MD5", "gbi", "sip.linphone.org", "secret"),
                              p["nonce"], "00000001", p["cnonce"], "auth", "REGISTER",
                              "sip:sip.linphone.org")
    assert p["response"] == expected
    # the nonce is used again for the refresh, with the next nc and the same cnonce
    _, again = digest.authorization("REGISTER", "sip:sip.linphone.org")
    assert params(again)["nc"] == "00000002" and params(again)["cnonce"] == p["cnonce"]
    assert source.calls == 1  # only HA1 is kept: the password was read once


def test_each_nonce_gets_a_cnonce_of_its_own_drawn_at_random():
    """RFC 7616 3.4: the cnonce stays with its nonce (-sess's A1 is made of the first
    one) and is unpredictable: another nonce, or another account answering the same
    nonce, gets another; a forgotten nonce forgets its cnonce."""
    first, second = DigestClient("alice", Passwords()), DigestClient("alice", Passwords())
    assert first._cnonce == ""
    seen = []
    for digest in (first, second):
        digest.challenged(challenge('Digest realm="r", nonce="n1", qop="auth"'))
        _, value = digest.authorization("REGISTER", "sip:r")
        seen.append(params(value)["cnonce"])
    first.challenged(challenge('Digest realm="r", nonce="n2", qop="auth", stale=true'))
    _, value = first.authorization("REGISTER", "sip:r")
    seen.append(params(value)["cnonce"])
    assert all(re.fullmatch(r"[0-9a-f]{16}", c) for c in seen) and len(set(seen)) == 3
    assert first._cnonce == seen[2]
    first.forget_nonce()
    assert first._cnonce == ""


def test_cirpack_challenge_without_qop_and_stale_false_is_rfc2069_style():
    digest = DigestClient("0033532176", Passwords())
    digest.challenged(corpus("05-cirpack-ovh-401-stale-false.sip"))
    _, value = digest.authorization("REGISTER", "sip:sip.ovh.net")
    p = params(value)
    assert "qop" not in p and "nc" not in p and "cnonce" not in p
    assert p["response"] == response_value("MD5", ha1("MD5", "0033532176", "sip.ovh.net", "secret"),
                                           p["nonce"], "", "", None, "REGISTER", "sip:sip.ovh.net")


def test_lync_challenges_are_refused_clearly():
    digest = DigestClient("test2", Passwords())
    with pytest.raises(AuthError) as caught:
        digest.challenged(corpus("12-lync2013-401-three-challenges.sip"))
    message = str(caught.value)
    assert "no usable digest challenge" in message
    assert "Kerberos" in message and "NTLM" in message and "TLS-DSK" in message
    assert digest.authorization("REGISTER", "sip:x") is None


def test_strongest_algorithm_wins():
    response = challenge('Digest realm="r", nonce="n1", algorithm=MD5, qop="auth", '
                         'Digest realm="r", nonce="n2", algorithm=SHA-256, qop="auth"')
    digest = DigestClient("u", Passwords())
    digest.challenged(response)
    assert digest.algorithm == "SHA-256"
    assert params(digest.authorization("REGISTER", "sip:r")[1])["nonce"] == "n2"


def test_unsupported_algorithms_and_auth_int_only_are_skipped():
    assert pick(challenge('Digest realm="r", nonce="n", algorithm=SHA-512-256').www_authenticate,
                "Authorization") is None
    assert pick(challenge('Digest realm="r", nonce="n", qop="auth-int"').www_authenticate,
                "Authorization") is None
    chosen = pick(challenge('Digest realm="r", nonce="n", qop="auth-int,auth"').www_authenticate,
                  "Authorization")
    assert chosen is not None and chosen[2] == "auth"


def test_proxy_challenge_gets_proxy_authorization():
    digest = DigestClient("u", Passwords())
    digest.challenged(challenge('Digest realm="p", nonce="n", qop="auth"', status=407))
    name, _ = digest.authorization("REGISTER", "sip:r")
    assert name == "Proxy-Authorization"


def test_same_nonce_again_means_rejected_but_stale_means_retry():
    source = Passwords()
    digest = DigestClient("u", source)
    digest.challenged(challenge('Digest realm="r", nonce="n1", qop="auth"'))
    digest.authorization("REGISTER", "sip:r")
    digest.authorization("REGISTER", "sip:r")  # a refresh reusing n1 (nc 2)
    # the registrar forgot n1 (a restart): a new nonce for a reused one is not a rejection
    digest.challenged(challenge('Digest realm="r", nonce="n2", qop="auth"'))
    _, value = digest.authorization("REGISTER", "sip:r")
    assert params(value)["nonce"] == "n2" and params(value)["nc"] == "00000001"
    # stale=true: retry with the new nonce
    digest.challenged(challenge('Digest realm="r", nonce="n3", qop="auth", stale=true'))
    digest.authorization("REGISTER", "sip:r")
    # a fresh nonce refused right after our first answer to it: the password is wrong
    with pytest.raises(AuthError, match="rejected"):
        digest.challenged(challenge('Digest realm="r", nonce="n4", qop="auth"'))
    assert source.calls == 1


def test_same_nonce_rechallenged_is_rejected():
    digest = DigestClient("u", Passwords())
    digest.challenged(challenge('Digest realm="r", nonce="n1", qop="auth"'))
    digest.authorization("REGISTER", "sip:r")
    digest.authorization("REGISTER", "sip:r")
    with pytest.raises(AuthError, match="rejected"):
        digest.challenged(challenge('Digest realm="r", nonce="n1", qop="auth"'))


def test_username_and_uri_are_quoted():
    digest = DigestClient('we"ird\\user', Passwords())
    digest.challenged(challenge('Digest realm="r", nonce="n"'))
    _, value = digest.authorization("REGISTER", "sip:r")
    assert params(value)["username"] == 'we"ird\\user'


def test_both_twins_keep_the_same_fields_in_the_same_room():
    import sys

    from gateway.sip import digest

    clients = [cls("alice", lambda: "pw") for cls in (digest.PythonDigestClient, DigestClient)]
    for client in clients:
        client.accept(401, "Authorization", {"realm": "r", "nonce": "n", "qop": "auth"},
                      "MD5", "auth")
        client.authorization("REGISTER", "sip:r")
    fields = ("username", "_ha1", "_ha1_key", "_challenge", "_nonce", "_nc")
    assert [getattr(clients[0], f) for f in fields] == [getattr(clients[1], f) for f in fields]
    assert all(re.fullmatch(r"[0-9a-f]{16}", c._cnonce) for c in clients)
    # (the compiled client keeps its cnonce's 16 digits in place, the twin a string)
    assert sys.getsizeof(clients[1]) <= sys.getsizeof(clients[0]) + sys.getsizeof(
        clients[0]._cnonce)
    assert not hasattr(clients[1], "__dict__")
