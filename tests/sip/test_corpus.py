"""Real-world messages on both parser twins, checked against the facts in their INDEX.tsv.

`corpus/shared/` is the project's corpus of messages from deployed PBXs and phones (a copy
of /work/shared/corpus); `corpus/captured/` holds messages captured from Kamailio 5.6 and
pjsua2 2.15 by `corpus/capture.py`. Both INDEX.tsv files use the same columns; the "key
facts" column (`start="..."; Call-ID=...; CSeq=...; Via count=...; top Via "..." branch=...;
From tag=...; Contact bindings=N [...]; www-authenticate: ...; <header>=...; body=N bytes`)
is parsed here and every fact is checked on the parsed message. `valid=no` messages must
raise ParseError, from the parser or from `check()`.
"""

import csv
import re
from pathlib import Path

import pytest

from gateway.errors import ParseError

CORPUS = Path(__file__).parent / "corpus"
_FACT_START = re.compile(
    r'start="|(Call-ID|CSeq)=|Via count=|top Via "|(From|To) tag=|Contact bindings=|body=|'
    r"www-authenticate: |(server|date|content-type|user-agent|expires|min-expires|reason|"
    r"feature-caps|supported|allow)=")


def index_rows():
    rows = []
    for index in sorted(CORPUS.glob("*/INDEX.tsv")):
        with index.open(newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f, delimiter="\t"):
                rows.append(pytest.param(index.parent / row["file"], row, id=row["file"]))
    return rows


def split_facts(text: str) -> list[str]:
    """The facts of the column, re-joining the values that themselves contain "; "."""
    facts: list[str] = []
    for part in text.split(" || notes:")[0].split("; "):
        if facts and not _FACT_START.match(part):
            facts[-1] += "; " + part
        else:
            facts.append(part)
    return facts


def test_facts_are_split_where_values_allow():
    facts = split_facts('start="SIP/2.0 200 OK"; content-type=multipart/mixed; boundary=x; '
                        "body=3 bytes || notes: a; b")
    assert facts == ['start="SIP/2.0 200 OK"', "content-type=multipart/mixed; boundary=x",
                     "body=3 bytes"]


def check_fact(msg, data: bytes, fact: str) -> None:
    if fact.startswith('start="'):
        assert data.split(b"\r\n", 1)[0].decode() == fact[7:-1]
    elif fact.startswith("Call-ID="):
        assert msg.call_id == fact[8:]
    elif fact.startswith("CSeq="):
        number, method = fact[5:].split(" ")
        assert msg.cseq == (int(number), method)
    elif fact.startswith("Via count="):
        assert len(msg.via) == int(fact[10:])
    elif fact.startswith('top Via "'):
        check_top_via(msg, fact[9:])
    elif fact.startswith(("From tag=", "To tag=")):
        side, _, tag = fact.partition(" tag=")
        expected = None if tag == "(none)" else tag
        if side == "From":
            assert msg.from_tag == msg.from_.tag == expected
        else:
            assert msg.to_tag == msg.to.tag == expected
    elif fact.startswith("Contact bindings="):
        check_contacts(msg, fact[17:])
    elif fact.startswith("body="):
        size = int(fact[5:].split(" ")[0])
        assert len(msg.body) == msg.content_length == size
    elif fact.startswith("www-authenticate: "):
        pass  # checked all together in check_challenges
    else:
        name, _, value = fact.partition("=")
        assert msg.get(name) == value, name
        if name == "expires":
            assert msg.expires == int(value)


def check_top_via(msg, text: str) -> None:
    sent, _, params = text.partition('"')
    top = msg.via[0]
    port = "" if top.port is None else f":{top.port}"
    assert f"{top.protocol}/{top.transport} {top.host}{port}" == sent
    words = params.replace("rport(no value)", "rport()").split()
    for word in words:
        if word == "rport()":
            assert top.has_rport and top.rport is None
        else:
            name, _, value = word.partition("=")
            if name == "rport":
                assert top.rport == int(value)
            else:
                assert top.params[name] == value, name
    assert msg.branch == top.branch
    if not any(w.startswith("rport") for w in words):
        assert not top.has_rport


def check_contacts(msg, text: str) -> None:
    count, _, listing = text.partition(" [")
    assert len(msg.contacts) == int(count)
    for contact, item in zip(msg.contacts, listing.rstrip("]").split(" | "), strict=True):
        uri, _, expires = item.rpartition(" expires=")
        assert str(contact.uri).startswith(uri.rstrip("…"))
        assert contact.expires == (None if expires == "-" else int(expires))


def check_challenges(msg, facts: list[str]) -> None:
    expected = [f[len("www-authenticate: "):] for f in facts
                if f.startswith("www-authenticate: ")]
    assert len(msg.www_authenticate) == len(expected)
    for challenge, text in zip(msg.www_authenticate, expected, strict=True):
        scheme, _, params = text.partition(" ")
        assert challenge.scheme == scheme
        for item in params.split(", "):
            name, _, value = item.partition("=")
            assert challenge.params[name] == value, name


@pytest.mark.parametrize(("path", "row"), index_rows())
def test_corpus_message(twin, path, row):
    data = path.read_bytes()
    if row["valid"] == "no":
        with pytest.raises(ParseError):
            twin.parse_message(data).check()
        return
    msg = twin.parse_message(data)
    msg.check()
    facts = split_facts(row["key facts"])
    for fact in facts:
        check_fact(msg, data, fact)
    check_challenges(msg, facts)


@pytest.mark.parametrize(("path", "row"), index_rows())
def test_corpus_message_survives_encode(twin, path, row):
    """encode() of a parsed message parses back to the same fields and body."""
    if row["valid"] == "no":
        return
    msg = twin.parse_message(path.read_bytes())
    again = twin.parse_message(msg.encode())
    assert list(again.headers) == list(msg.headers)
    assert again.body == msg.body


def test_every_corpus_file_is_indexed():
    for folder in (p for p in CORPUS.iterdir() if p.is_dir()):
        listed = {row["file"] for row in csv.DictReader(
            (folder / "INDEX.tsv").open(encoding="utf-8"), delimiter="\t")}
        assert {p.name for p in folder.glob("*.sip")} == listed, folder
