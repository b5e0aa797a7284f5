"""A UDP "registrar" that answers each request with the next response of a script, for
the answers Kamailio cannot be made to give on cue (423, 3xx, 403, 503 with Retry-After,
responses copied from real PBXs).

    registrar = await ScriptedRegistrar([response_bytes, ...]).start()
    ... registrar.port, registrar.requests (parsed), registrar.close()

Each scripted response gets the request's Via, From, To (with a tag), Call-ID and CSeq;
`{contact}` in a script entry is replaced by the request's Contact. When the script runs
out, the last entry is used again.
"""

from __future__ import annotations

import asyncio

from gateway.sip.parsing import parse_message


class ScriptedRegistrar(asyncio.DatagramProtocol):
    def __init__(self, script: list[bytes]):
        self.script = list(script)
        self.requests = []
        self.transport = None
        self.port = 0

    async def start(self) -> "ScriptedRegistrar":
        loop = asyncio.get_running_loop()
        self.transport, _ = await loop.create_datagram_endpoint(lambda: self,
                                                                local_addr=("127.0.0.1", 0))
        self.port = self.transport.get_extra_info("sockname")[1]
        return self

    def datagram_received(self, data: bytes, addr) -> None:
        if not data.strip():
            return  # a keepalive
        request = parse_message(data)
        self.requests.append(request)
        entry = self.script[min(len(self.requests) - 1, len(self.script) - 1)]
        contact = request.get("Contact") or ""
        response = parse_message(entry.replace(b"{contact}", contact.encode()))
        for name in ("Via", "From", "To", "Call-ID", "CSeq"):
            response.headers.remove(name)
        response.headers.add("Via", request.headers.get_all("Via")[0])
        response.headers.add("From", request.get("From"))
        response.headers.add("To", request.get("To") + ";tag=scripted")
        response.headers.add("Call-ID", request.call_id)
        response.headers.add("CSeq", request.get("CSeq"))
        self.transport.sendto(response.encode(), addr)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def response(status: int, reason: str, *headers: str) -> bytes:
    lines = [f"SIP/2.0 {status} {reason}", "Via: SIP/2.0/UDP x;branch=z9hG4bKs",
             "From: <sip:x@y>;tag=a", "To: <sip:x@y>", "Call-ID: s", "CSeq: 1 REGISTER",
             *headers, "Content-Length: 0", "", ""]
    return "\r\n".join(lines).encode()
