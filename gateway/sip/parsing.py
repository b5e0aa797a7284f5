"""The one place that picks the SIP parser twin: the Cython `gateway._sipparse` when it is
built, else the pure-Python `gateway.sip.parser` (GATEWAY_NO_EXTENSIONS=1 forces Python).

Everything else in the gateway imports `parse_message` and `StreamParser` from here.
"""

from gateway import _accel
from gateway.sip.message import KEEPALIVE_PING, KEEPALIVE_PONG, Keepalive, ParseLimits

_twin = _accel.load("_sipparse", "sip.parser")

parse_message = _twin.parse_message
StreamParser = _twin.StreamParser
#: "cython" or "python"
IMPLEMENTATION = _accel.chosen["_sipparse"]

__all__ = ["parse_message", "StreamParser", "IMPLEMENTATION", "ParseLimits", "Keepalive",
           "KEEPALIVE_PING", "KEEPALIVE_PONG"]
