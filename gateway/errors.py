"""One exception hierarchy for the whole gateway, split by who is at fault.

- `PeerError`: the remote side sent something wrong. It carries the status to answer with
  (a SIP status for SIP peers, an HTTP status for API clients).
- `ConfigError`: the operator's configuration is wrong. Also a `ValueError`.
- `TransientError`: a failure that may go away; it carries how long to wait before retrying.

Both twins of every accelerated module raise these, never their own types. This module
depends on nothing else in the gateway.
"""

from __future__ import annotations


class GatewayError(Exception):
    """Base of every error the gateway raises on purpose."""


class PeerError(GatewayError):
    """The remote peer is at fault; `status` and `reason` say what to answer."""

    status: int = 400
    reason: str = "Bad Request"

    def __init__(self, message: str, *, status: int | None = None, reason: str | None = None):
        super().__init__(message)
        if status is not None:
            self.status = status
        if reason is not None:
            self.reason = reason


class ParseError(PeerError):
    """A malformed SIP message. `reason` is the phrase for the 400 response, when one can
    be sent (a request whose Via and CSeq were readable). The parser sets `raw` to the
    offending bytes when it knows them (for `gateway.sip.message.reply_fields`)."""

    raw: bytes | None = None


class ApiError(PeerError):
    """An HTTP API request that cannot be served. `code` is the stable machine-readable
    error code; `status` the HTTP status."""

    code: str = "bad_request"

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message, status=status, reason=code)
        self.code = code


class ConfigError(GatewayError, ValueError):
    """The operator's configuration is wrong. The message names the file and the key path."""


class TransientError(GatewayError):
    """A failure worth retrying after `retry_after` seconds (None: the caller's backoff)."""

    def __init__(self, message: str, *, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class TransportError(TransientError):
    """A SIP flow could not be opened, broke, or timed out."""


class TransactionTimeout(TransientError):
    """A SIP client transaction got no final response (timer B or F fired)."""


class SealError(ConfigError):
    """A sealed (encrypted) value cannot be opened: the key file is not the one it was
    sealed with, or the value belongs to another instance or was altered."""


class AuthError(PeerError):
    """A digest challenge we cannot answer (no usable scheme or algorithm), or our
    credentials were rejected. `status` is the 401 or 407 that said so."""

    status = 401
    reason = "Unauthorized"


class PayloadTooLarge(GatewayError, ValueError):
    """A push payload does not fit the push service's size limit."""

    def __init__(self, size: int, limit: int, service: str):
        super().__init__(f"{service} payload of {size} bytes exceeds the limit of {limit}")
        self.size = size
        self.limit = limit
