"""What may be shown of a credential: nothing of a password, secret or digest response,
and only a prefix and the length of a push token.

Used by the logs, the CLI and the SIP traces. Depends on nothing else in the gateway.
"""

from __future__ import annotations

import re

REDACTED = "<redacted>"

_SECRET_NAMES = re.compile(r"pass|secret|response|credential|api_?key|ha1|authorization|cnonce", re.I)
_TOKEN_NAMES = re.compile(r"token|prid|endpoint|p256dh|^auth$", re.I)

_PATTERNS = [
    # digest: response="...", and the whole value after Authorization headers
    (re.compile(r'(\bresponse\s*=\s*)("[^"]*"|[^\s,;]+)', re.I), r"\1" + f'"{REDACTED}"'),
    (re.compile(r"((?:proxy-)?authorization\s*:\s*)([^\r\n]+)", re.I), r"\1" + REDACTED),
    (re.compile(r"(\bbearer\s+)([A-Za-z0-9._~+/=-]{6})[A-Za-z0-9._~+/=-]*", re.I), r"\1\2..."),
    # password=..., "password": "...", secret=...
    (re.compile(r'((?:password|secret)"?\s*[:=]\s*)([^\s",;&]+)', re.I), r"\1" + REDACTED),
    (re.compile(r'((?:password|secret)"?\s*[:=]\s*")((?:[^"\\]|\\.)*)"', re.I), r'\1' + REDACTED + '"'),
]


def shorten_token(token: str | None) -> str:
    """A push token as it may appear in a log: first 6 characters and the length."""
    if not token:
        return "-"
    return f"{token[:6]}...({len(token)})"


def redact_field(name: str, value):
    """The value of a structured log field, redacted by the field's name."""
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if _SECRET_NAMES.search(name):
        return REDACTED
    if _TOKEN_NAMES.search(name):
        return shorten_token(str(value))
    return value


def scrub(text: str) -> str:
    """Remove credentials that slipped into free text (a last line of defence)."""
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text
