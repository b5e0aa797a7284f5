"""What a stateful proxy does to messages it relays (RFC 3261 section 16), as pure
functions over the message model.

    out = forward(request, via=..., record_route=[...], uri=..., ours=is_ours)
    up = strip_via(response)

`forward` copies a request for the next hop: our Via on top (a fresh branch), Max-Forwards
decremented (`TooManyHops` at zero), the Route entries that name us popped (loose
routing, 16.4), a strict-routing predecessor's Request-URI restored from the last Route
(16.4), Record-Route entries of ours added on top (16.6 step 4; a proxy between two
networks adds one per side, "double record-routing", so each side sees the address it
can reach), and the Request-URI replaced when the proxy retargets (the held INVITE goes
to the device's Contact).

`next_hop` says where a request goes after that: the top Route if any, else the
Request-URI.

Depends on the message model (`gateway.sip.message`) and the transaction module's
`new_branch`; nothing above.
"""

from __future__ import annotations

from collections.abc import Callable

from gateway.errors import PeerError
from gateway.sip.message import Request, Response, SipUri
from gateway.sip.transaction import new_branch

_HOP_BY_HOP = frozenset({"via", "route", "record-route", "max-forwards", "content-length"})


class TooManyHops(PeerError):
    """Max-Forwards reached zero (answer 483)."""

    status = 483
    reason = "Too Many Hops"


def forward(request: Request, *, via: str, ours: Callable[[SipUri], bool],
            record_route: list[str] = (), uri: SipUri | str | None = None,
            branch: str | None = None) -> Request:
    """The request as it leaves for the next hop. `via` is "SIP/2.0/UDP host:port";
    `ours(uri)` tells our own Route entries; `record_route` are our Record-Route values
    (topmost first), added only to dialog-creating requests by the caller's choice."""
    hops = request.max_forwards
    if hops is not None and hops <= 0:
        raise TooManyHops("Max-Forwards reached zero")
    target = request.uri_text
    routes = list(request.routes)
    if routes and ours(request.uri):
        # a strict router put us in the Request-URI: the real target is the last Route
        target, routes = str(routes[-1].uri), routes[:-1]
    while routes and ours(routes[0].uri):
        routes.pop(0)
    if uri is not None:
        target = str(uri)
    headers = [("Via", f"{via};branch={branch or new_branch()}")]
    headers += [("Via", value) for value in request.headers.fields("Via")]
    headers.append(("Max-Forwards", str(70 if hops is None else hops - 1)))
    headers += [("Record-Route", value) for value in record_route]
    headers += [("Record-Route", value) for value in request.headers.fields("Record-Route")]
    headers += [("Route", str(route)) for route in routes]
    headers += [(name, value) for name, value in request.headers if name.lower() not in _HOP_BY_HOP]
    return Request(request.method, target, headers, request.body)


def strip_via(response: Response) -> Response:
    """The response for the previous hop: our (top) Via removed."""
    vias = response.headers.get_all("Via")[1:]
    headers = [("Via", value) for value in vias]
    headers += [(name, value) for name, value in response.headers
                if name.lower() not in ("via", "content-length")]
    return Response(response.status, response.reason, headers, response.body)


def next_hop(request: Request) -> SipUri:
    """Where a forwarded request goes: its top Route, else its Request-URI."""
    routes = request.routes
    return routes[0].uri if routes else request.uri
