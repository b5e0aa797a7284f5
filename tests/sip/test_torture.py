"""RFC 4475 torture messages on both parser twins (files in tests/sip/torture/).

Every file has an expectation below: "ok" (parses, and `check()` finds nothing wrong), or
the stage that must raise `ParseError` ("parse": `parse_message()`; "check": a field the
model parses on first access) with the status and a word of the reason.
"""

from pathlib import Path

import pytest

from gateway.errors import ParseError

TORTURE = Path(__file__).parent / "torture"

OK = "ok"
EXPECTED = {
    # 3.1.1 valid messages
    "wsinv": OK, "intmeth": OK, "esc01": OK, "escnull": OK, "esc02": OK, "lwsdisp": OK,
    "longreq": OK, "dblreq": OK, "semiuri": OK, "transports": OK, "mpart01": OK,
    "unreason": OK, "noreason": OK,
    # 3.1.2 invalid messages
    "badinv01": ("parse", 400, "Via"),              # ;;,;,, in the top Via
    "clerr": ("parse", 400, "Content-Length"),      # 9999 on a datagram of 154 octets
    "ncl": ("parse", 400, "Content-Length"),        # -999
    "scalar02": ("parse", 400, "CSeq"),             # CSeq 36893488147419103232
    "scalarlg": ("parse", 400, "CSeq"),             # CSeq 9292394834772304023312
    "quotbal": ("parse", 400, "quoted"),            # To: "Mr. J. User <sip:...>
    "ltgtruri": ("parse", 400, "Request-URI"),      # INVITE <sip:...> SIP/2.0
    "lwsruri": ("parse", 400, "request line"),      # sip:user@example.com; lr
    "lwsstart": ("parse", 400, "request line"),     # two SP between elements
    "trws": ("parse", 400, "request line"),         # SP after SIP/2.0
    "escruri": ("parse", 400, "Request-URI"),       # ?Route= in the Request-URI
    "baddate": ("check", 400, "Date"),              # EST instead of GMT
    "regbadct": ("check", 400, "Contact"),          # addr-spec Contact with ?headers
    "badaspec": ("check", 400, "To"),               # < sip:t.watson@example.org >
    "baddn": ("check", 400, "display name"),        # From: Bell, Alexander <...>
    "badvers": ("parse", 505, "Version"),           # SIP/7.0
    "mismatch01": ("parse", 400, "CSeq method"),    # OPTIONS with CSeq INVITE
    "mismatch02": ("parse", 400, "CSeq method"),    # NEWMETHOD with CSeq INVITE
    "bigcode": ("parse", 400, "status code"),       # SIP/2.0 4294967301
    # 3.2 transaction layer: a branch of only the magic cookie is syntactically fine
    "badbranch": OK,
    # 3.3 application layer
    "insuf": ("parse", 400, "missing Call-ID"),     # no Call-ID, From, To
    "unkscm": OK, "novelsc": OK, "unksm2": OK,      # 416 / URI schemes: above us
    "bext01": OK, "invut": OK, "regaut01": OK,      # 420 / 415 / auth: above us
    "multi01": ("parse", 400, "more than one"),     # two CSeq, Call-ID, From, To
    "mcl01": ("parse", 400, "more than one Content-Length"),
    "bcast": OK, "zeromf": OK, "cparam01": OK, "cparam02": OK, "regescrt": OK, "sdp01": OK,
    # 3.4 backward compatibility (RFC 2543 syntax: no branch, no Content-Length)
    "inv2543": OK,
}


def load(name: str) -> bytes:
    return (TORTURE / f"{name}.sip").read_bytes()


def test_every_file_has_an_expectation():
    assert {p.stem for p in TORTURE.glob("*.sip")} == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_torture_message(twin, name):
    expected = EXPECTED[name]
    if expected == OK:
        twin.parse_message(load(name)).check()
        return
    stage, status, words = expected
    if stage == "parse":
        with pytest.raises(ParseError) as caught:
            twin.parse_message(load(name))
    else:
        message = twin.parse_message(load(name))
        with pytest.raises(ParseError) as caught:
            message.check()
    assert caught.value.status == status
    assert words in caught.value.reason


def test_wsinv_values(twin):
    msg = twin.parse_message(load("wsinv"))
    assert msg.method == "INVITE"
    assert msg.uri.user == "vivekg" and msg.uri.params == {"unknownparam": None}
    assert msg.to.tag == msg.to_tag == "1918181833n"
    assert msg.from_.display_name == 'J Rosenberg \\"'
    assert msg.from_tag == "98asjd8"
    assert msg.max_forwards == 68
    assert msg.cseq == (9, "INVITE")
    assert [(v.transport, v.host, v.branch) for v in msg.via] == [
        ("UDP", "192.0.2.2", "390skdjuw"),
        ("TCP", "spindle.example.com", "z9hG4bK9ikj8"),
        ("UDP", "192.168.255.111", "z9hG4bK30239"),
    ]
    assert msg.branch == "390skdjuw"
    assert msg.get("Subject") == ""
    assert msg.get("newfangledheader") == "newfangled value continued newfangled value"
    assert msg.get("UnknownHeaderWithUnusualValue") == ";;,,;;,;"
    (contact,) = msg.contacts
    assert contact.display_name == 'Quoted string ""'
    assert contact.params == {"newparam": "newvalue", "secondparam": None, "q": "0.33"}
    assert msg.routes[0].uri.params["unknownwith"] == "value"
    assert len(msg.body) == msg.content_length == 150


def test_intmeth_values(twin):
    msg = twin.parse_message(load("intmeth"))
    assert msg.method == "!interesting-Method0123456789_*+`.%indeed'~"
    assert msg.uri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert msg.uri.password == "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"
    assert msg.to.display_name == "BEL:\x07 NUL:\x00 DEL:\x7f"
    assert msg.from_.display_name == "token1~` token2'+_ token3*%!.-"
    assert msg.from_.params["fromparam''~+*_!.-%"] == '"работающий"'
    assert msg.from_tag == "_token~1'+`*%!-."
    assert msg.call_id == "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{"
    assert msg.get("extensionHeader-!.%*+_`'~") == "\ufeff大停電"


def test_escaped_uris_are_kept_escaped(twin):
    msg = twin.parse_message(load("esc01"))
    assert msg.uri.user == "sips%3Auser%40example.com" and msg.uri.host == "example.net"
    assert str(msg.contacts[0].uri) == (
        "sip:cal%6Cer@host5.example.net;%6C%72;n%61me=v%61lue%25%34%31")
    semi = twin.parse_message(load("semiuri"))
    assert semi.uri.user == "user;par=u%40example.net"
    assert semi.get_all("Accept")[-1] == "message/sipfrag" and len(semi.get_all("Accept")) == 6


def test_percent_method_and_header_names(twin):
    msg = twin.parse_message(load("esc02"))
    assert msg.method == "RE%47IST%45R" == msg.cseq.method
    assert [c.uri.host for c in msg.contacts] == ["host1.example.com", "host3.example.com"]
    assert msg.get("C%6Fntact") == "<sip:alias2@host2.example.com>"


def test_long_values(twin):
    msg = twin.parse_message(load("longreq"))
    assert len(msg.via) == 34
    assert msg.via[0].host == "sip33.example.com" and msg.via[-1].received == "192.0.2.5"
    assert msg.branch is None  # the top Via has no branch
    assert msg.from_tag == "12" + "982" * 50 + "424"


def test_extra_octets_after_a_datagram_are_ignored(twin):
    msg = twin.parse_message(load("dblreq"))
    assert msg.method == "REGISTER" and msg.body == b"" and msg.content_length == 0


def test_transports_and_reasons(twin):
    msg = twin.parse_message(load("transports"))
    assert [v.transport for v in msg.via] == ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]
    assert twin.parse_message(load("noreason")).reason == ""
    unusual = twin.parse_message(load("unreason"))
    assert unusual.status == 200
    assert unusual.reason == "= 2**3 * 5**2 но сто девяносто девять - простое"


def test_binary_multipart_body(twin):
    msg = twin.parse_message(load("mpart01"))
    assert len(msg.body) == 553 and b"\x00" in msg.body
    assert msg.body.endswith(b"--7a9cbec02ceef655--\r\n")


def test_rfc2543_request_without_branch_or_length(twin):
    msg = twin.parse_message(load("inv2543"))
    assert msg.branch is None and msg.via[0].host == "iftgw.example.com"
    assert msg.max_forwards is None
    assert msg.body.endswith(b"m=audio 49217 RTP/AVP 0\r\n")
    assert msg.record_routes[0].uri.param("maddr") == "ss1.example.com"


def test_unknown_schemes_stay_opaque(twin):
    msg = twin.parse_message(load("unksm2"))
    assert msg.to.uri.scheme == "isbn" and str(msg.to.uri) == "isbn:2983792873"
    assert str(msg.contacts[0].uri) == "name:John_Smith"
    assert twin.parse_message(load("unkscm")).uri.opaque == "totallyopaquecontent"
