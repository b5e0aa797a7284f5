"""The SIP parser twins against each other and against httptools (llhttp), same run.

Two real messages captured from Kamailio 5.6 and pjsua2 2.15 (tests/sip/corpus/captured/):
a 574-byte Kamailio `200 OK` to a REGISTER and a 905-byte pjsua2 INVITE with SDP. The
httptools baseline parses an HTTP/1.1 response of exactly the same size: the same header
lines and body under an `HTTP/1.1 200 K...` status line as long as the SIP start line.
It runs twice: with the callbacks a user needs to get the header names, values and body
into Python (`httptools`), and with none (`httptools-bare`, the C floor: llhttp
tokenizing only).

Each group has the four implementations side by side. The `c` benchmark also times all
of them in the same test (best of 25 interleaved batches) and stores the ratios in its
extra_info (goals: py/c >= 10, c/httptools <= 1.5), printed with -s:

    python -m pytest bench/test_sipparse_bench.py --benchmark-only -s
"""

from __future__ import annotations

import gc
import time
from pathlib import Path

import httptools
import pytest

from bench.quick import QUICK
from gateway.sip import parser as py_twin

try:
    from gateway import _sipparse as c_twin
except ImportError:  # pragma: no cover - the extension is not built
    c_twin = None

CAPTURED = Path(__file__).parent.parent / "tests" / "sip" / "corpus" / "captured"
MESSAGES = {
    "register-200": (CAPTURED / "kamailio-200-register-pn.sip").read_bytes(),
    "invite": (CAPTURED / "pjsua2-invite.sip").read_bytes(),
}


def http_twin(sip: bytes) -> bytes:
    """An HTTP response with the SIP message's header lines and body, of the same size."""
    start, rest = sip.split(b"\r\n", 1)
    status = b"HTTP/1.1 200 "
    return status + b"K" * (len(start) - len(status)) + b"\r\n" + rest


class HeaderCollector:
    """What a user of httptools needs at the least: every header and the body in Python."""

    __slots__ = ("headers", "body")

    def __init__(self):
        self.headers = []
        self.body = b""

    def on_header(self, name, value):
        self.headers.append((name, value))

    def on_body(self, body):
        self.body += body


def parse_http(data: bytes):
    collector = HeaderCollector()
    httptools.HttpResponseParser(collector).feed_data(data)
    return collector


class NoCallbacks:
    __slots__ = ()


def parse_http_bare(data: bytes):
    httptools.HttpResponseParser(NoCallbacks()).feed_data(data)


def implementations():
    impls = {"py": py_twin.parse_message, "httptools": parse_http,
             "httptools-bare": parse_http_bare}
    if c_twin is not None:
        impls["c"] = c_twin.parse_message
    return impls


def inputs(name: str, impl: str) -> bytes:
    return http_twin(MESSAGES[name]) if impl.startswith("httptools") else MESSAGES[name]


def per_call(impls: dict, name: str, batch: int = 500, rounds: int = 5 if QUICK else 25) -> dict:
    """Best time per call of each implementation over `rounds` batches of `batch` calls.

    The implementations take turns within each round, so that a noisy neighbour on the
    machine slows them alike and the best rounds are comparable."""
    best = dict.fromkeys(impls, float("inf"))
    for _ in range(rounds):
        for key, fn in impls.items():
            data = inputs(name, key)
            gc.collect()
            start = time.perf_counter()
            for _ in range(batch):
                fn(data)
            best[key] = min(best[key], (time.perf_counter() - start) / batch)
    return best


def test_inputs_are_what_they_claim():
    for sip in MESSAGES.values():
        http = http_twin(sip)
        assert len(http) == len(sip)
        collected = parse_http(http)
        message = py_twin.parse_message(sip)
        assert len(collected.headers) == len(message.headers)
        assert collected.body == message.body
    assert len(MESSAGES["register-200"]) == 574 and len(MESSAGES["invite"]) == 905


@pytest.mark.parametrize("name", list(MESSAGES))
@pytest.mark.parametrize("impl", ["py", "c", "httptools", "httptools-bare"])
def test_parse(benchmark, name, impl):
    impls = implementations()
    if impl not in impls:
        pytest.skip("gateway._sipparse is not built")
    benchmark.group = f"sipparse-{name}"
    data = inputs(name, impl)
    benchmark(impls[impl], data)
    if impl != "c":
        return
    times = per_call(impls, name)
    figures = {
        "bytes": len(data),
        "c_us": times["c"] * 1e6,
        "py_over_c": times["py"] / times["c"],
        "c_over_httptools": times["c"] / times["httptools"],
        "c_over_httptools_bare": times["c"] / times["httptools-bare"],
    }
    benchmark.extra_info.update(figures)
    print(f"\n{name}: " + ", ".join(f"{k}={v:.3g}" for k, v in figures.items()))
