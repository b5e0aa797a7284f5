"""What a call's push reads from the INVITE (the caller's display name and URI, the
callee's URI, the Request-URI's user), through the field parsers (`from_`, `to`, `uri`:
the baseline) and through the plain-shape matches (`addr_texts`, `uri_user`), in the same
run. The INVITE is SIPp's as the call bench sends it, parsed by the twin `gateway._accel`
picks; each round parses it again, so that no parsed field is cached from a round
before. The `matched` benchmark's extra_info holds the ratio (best of 25 interleaved
batches), printed with -s:

    python -m pytest bench/test_call_fields_bench.py --benchmark-only -s
"""

from __future__ import annotations

import time

import pytest

from gateway.sip.parsing import IMPLEMENTATION, parse_message

INVITE = (
    b"INVITE sip:gw-5f2c9a0e1b7d4c3a@127.0.0.1:5080;transport=udp SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK1a2b.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5061;received=127.0.0.1;branch=z9hG4bK-17-4242-inv\r\n"
    b'From: "Load" <sip:load@127.0.0.1:5061>;tag=4242Load17\r\n'
    b"To: <sip:user0017@127.0.0.1:5060>\r\n"
    b"Call-ID: 17-4242@127.0.0.1\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Contact: <sip:load@127.0.0.1:5061>\r\n"
    b"Max-Forwards: 69\r\n"
    b"Content-Length: 0\r\n\r\n"
)


def parsed_fields(request):
    caller = request.from_
    return caller.display_name, str(caller.uri), str(request.to.uri), request.uri.user


def matched_fields(request):
    name, uri = request.addr_texts("From")
    return name, uri, request.addr_texts("To")[1], request.uri_user


def _round(fields):
    return fields(parse_message(INVITE))


def _best(variants, batches=25, n=400):
    """Best thread time of a round per variant, the variants' batches interleaved."""
    best = [float("inf")] * len(variants)
    for _ in range(batches):
        for i, fields in enumerate(variants):
            start = time.thread_time()
            for _ in range(n):
                _round(fields)
            best[i] = min(best[i], (time.thread_time() - start) / n)
    return best


def test_the_matches_give_what_the_parsers_give():
    assert _round(matched_fields) == _round(parsed_fields) == (
        "Load", "sip:load@127.0.0.1:5061", "sip:user0017@127.0.0.1:5060", "gw-5f2c9a0e1b7d4c3a")


@pytest.mark.benchmark(group="call-push-fields")
def test_parsed(benchmark):
    benchmark(_round, parsed_fields)


@pytest.mark.benchmark(group="call-push-fields")
def test_matched(benchmark):
    benchmark(_round, matched_fields)
    floor, parsed, matched = _best([lambda r: r, parsed_fields, matched_fields])
    benchmark.extra_info.update({
        "parser": IMPLEMENTATION,
        "round_parse_only_us": round(floor * 1e6, 2),  # the INVITE's parse, in every round
        "round_parsed_us": round(parsed * 1e6, 2),
        "round_matched_us": round(matched * 1e6, 2),
        "fields_saved_us": round((parsed - matched) * 1e6, 2),
        "ratio_parsed_to_matched_round": round(parsed / matched, 2),
    })
    print(benchmark.extra_info)
