"""Type stub of the Cython parser twin (built from _ext/sipparse.pyx); same names and
behaviour as gateway/sip/parser.py. Import both through gateway.sip.parsing."""

from gateway.sip.message import KEEPALIVE_PING as KEEPALIVE_PING
from gateway.sip.message import KEEPALIVE_PONG as KEEPALIVE_PONG
from gateway.sip.message import Keepalive, Request, Response
from gateway.sip.message import ParseLimits as ParseLimits

def parse_message(
    data: bytes | bytearray | memoryview, limits: ParseLimits | None = None
) -> Request | Response | Keepalive: ...

class StreamParser:
    def __init__(self, limits: ParseLimits | None = None) -> None: ...
    @property
    def failed(self) -> bool: ...
    @property
    def buffered(self) -> int: ...
    def feed(
        self, data: bytes | bytearray | memoryview
    ) -> list[Request | Response | Keepalive]: ...
