"""Structured logging that cannot leak a credential.

Use `log = get_logger(__name__)` and `log.info("instance created", id=..., app=...)`: each
line is a message plus key=value fields, as text or as one JSON object per line.

Redaction happens twice, because a leaked password is the one bug we cannot take back:
- by field name: values of fields named like a password, secret, key or response are
  replaced by "<redacted>"; fields named like a token are shortened to their first 6
  characters and their length;
- by pattern, over the whole formatted line: digest `response=`, `Authorization:` header
  values, `password=`/`"password": ` and bearer tokens.

Depends on nothing else in the gateway but `gateway.redact`.
"""

from __future__ import annotations

import json
import logging
import sys
import time

from gateway.redact import redact_field, scrub

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


class Logger:
    """A thin wrapper over `logging.Logger` that takes structured fields as keywords."""

    __slots__ = ("_log",)

    def __init__(self, name: str):
        self._log = logging.getLogger(name)

    def _emit(self, level: int, msg: str, fields: dict, exc_info=None) -> None:
        if self._log.isEnabledFor(level):
            self._log.log(level, msg, extra={"fields": fields}, exc_info=exc_info, stacklevel=3)

    def debug(self, msg: str, **fields) -> None:
        self._emit(logging.DEBUG, msg, fields)

    def info(self, msg: str, **fields) -> None:
        self._emit(logging.INFO, msg, fields)

    def warning(self, msg: str, **fields) -> None:
        self._emit(logging.WARNING, msg, fields)

    def error(self, msg: str, **fields) -> None:
        self._emit(logging.ERROR, msg, fields)

    def exception(self, msg: str, **fields) -> None:
        self._emit(logging.ERROR, msg, fields, exc_info=True)

    def is_enabled(self, level: int) -> bool:
        return self._log.isEnabledFor(level)


def get_logger(name: str) -> Logger:
    return Logger(name)


def _fields(record: logging.LogRecord) -> dict:
    return {key: redact_field(key, value) for key, value in getattr(record, "fields", {}).items()}


def _text_value(value) -> str:
    text = str(value)
    if not text or any(c in text for c in ' "='):
        return json.dumps(text)
    return text


class TextFormatter(logging.Formatter):
    """`2026-11-28T15:00:00.123Z INFO gateway.api instance created id=abc app=demo`"""

    def __init__(self):
        super().__init__(TEXT_FORMAT)

    def formatTime(self, record, datefmt=None):
        t = time.gmtime(record.created)
        return time.strftime("%Y-%m-%dT%H:%M:%S", t) + f".{int(record.msecs):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = _fields(record)
        if fields:
            extra = " ".join(f"{k}={_text_value(v)}" for k, v in fields.items())
            head, sep, tail = line.partition("\n")  # keep a traceback below the fields
            line = f"{head} {extra}{sep}{tail}"
        return scrub(line)


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log shippers."""

    def format(self, record: logging.LogRecord) -> str:
        # Scrub each string before encoding, so that a pattern never cuts through JSON.
        entry = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            **_fields(record),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        entry = {k: scrub(v) if isinstance(v, str) else v for k, v in entry.items()}
        return json.dumps(entry, default=lambda v: scrub(str(v)))


def setup(level: str = "info", format: str = "text", file: str = "") -> None:
    """Configure the root logger once, from the [logging] config section."""
    handler: logging.Handler
    handler = logging.FileHandler(file) if file else logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if format == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Libraries log request lines with full URLs and headers; keep them quiet.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
