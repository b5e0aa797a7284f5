"""A small authoritative DNS server for tests: UDP on loopback, answers from a dict.

    server = DnsServer({("example.test", "NAPTR"): [(60, '10 50 "s" "SIP+D2U" "" _sip._udp.example.test.')],
                        ("_sip._udp.example.test", "SRV"): [(60, "10 10 5060 sip1.example.test.")],
                        ("sip1.example.test", "A"): [(60, "127.0.0.1")]})
    await server.start(); ...; server.close()

Records are given in zone-file text. Names absent from the dict get NXDOMAIN; a name
present with other types gets an empty NOERROR answer. `queries` counts what was asked
(to check the resolver's cache), `silent` lists (name, type) pairs never answered (to
check timeouts). Runs inside the test's own event loop.
"""

from __future__ import annotations

import asyncio
from collections import Counter

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset


def _key(name: str, rdtype: str) -> tuple[str, str]:
    return (name.lower().rstrip(".") + ".", rdtype.upper())


class DnsServer(asyncio.DatagramProtocol):
    def __init__(self, records: dict[tuple[str, str], list[tuple[int, str]]],
                 host: str = "127.0.0.1"):
        self.records = {_key(*k): v for k, v in records.items()}
        self.host = host
        self.port = 0
        self.queries: Counter[tuple[str, str]] = Counter()
        self.silent: set[tuple[str, str]] = set()
        self._transport: asyncio.DatagramTransport | None = None

    def set(self, name: str, rdtype: str, records: list[tuple[int, str]]) -> None:
        self.records[_key(name, rdtype)] = records

    async def start(self) -> "DnsServer":
        loop = asyncio.get_running_loop()
        self._transport, _ = await loop.create_datagram_endpoint(
            lambda: self, local_addr=(self.host, 0))
        self.port = self._transport.get_extra_info("sockname")[1]
        return self

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def datagram_received(self, data: bytes, addr) -> None:
        try:
            query = dns.message.from_wire(data)
        except Exception:  # noqa: BLE001 - a test server ignores garbage
            return
        question = query.question[0]
        key = _key(question.name.to_text(), dns.rdatatype.to_text(question.rdtype))
        self.queries[key] += 1
        if key in self.silent:
            return
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        names = {name for name, _ in self.records}
        if key[0] not in names:
            response.set_rcode(dns.rcode.NXDOMAIN)
        for ttl, text in self.records.get(key, []):
            rdata = dns.rdata.from_text(dns.rdataclass.IN, question.rdtype, text)
            rrset = response.find_rrset(response.answer, question.name, dns.rdataclass.IN,
                                        question.rdtype, create=True)
            rrset.add(rdata, ttl)
        self._transport.sendto(response.to_wire(), addr)

