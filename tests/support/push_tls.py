"""TLS for the push emulators: one loopback server certificate per test CA, issued once
(issuing costs more than a whole emulator test)."""

from __future__ import annotations

import ssl
import weakref

import trustme

# Keyed by the CA object itself: an id() could be reused by a later CA.
_issued: weakref.WeakKeyDictionary[trustme.CA, trustme.LeafCert] = weakref.WeakKeyDictionary()


def server_context(ca: trustme.CA, alpn: list[str] | None = None) -> ssl.SSLContext:
    cert = _issued.get(ca)
    if cert is None:
        cert = _issued[ca] = ca.issue_cert("127.0.0.1", "localhost")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    if alpn:
        context.set_alpn_protocols(alpn)
    return context
