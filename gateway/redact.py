"""Redaction of secrets for logs and traces.

Logs may say *which* token or key is concerned, never enough of it to use it. This module
depends on nothing else in the gateway, so any layer may use it.
"""

from __future__ import annotations

_SHOWN = 6


def shorten_token(token: str | bytes | None) -> str:
    """A push token (or any credential) as its first 6 characters and its length.

    >>> shorten_token("abcdef0123456789")
    'abcdef...(16)'

    Tokens of 12 characters or less show no characters at all: half of a short secret is
    too much of it.
    """
    if token is None:
        return "<none>"
    if isinstance(token, bytes):
        token = token.decode("utf-8", "replace")
    if len(token) <= 2 * _SHOWN:
        return f"...({len(token)})"
    return f"{token[:_SHOWN]}...({len(token)})"
