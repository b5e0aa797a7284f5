"""Logs never carry a password, secret or digest response, and tokens only shortened."""

import json
import logging

import pytest

from gateway import logs
from gateway.redact import redact_field, scrub, shorten_token

PASSWORD = "hunter2-Very-Secret"
TOKEN = "a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6e7f8a9b0c1d2e3f4a5b6c7d8e9f0a1b2"


@pytest.fixture(params=["text", "json"])
def captured(request, tmp_path):
    path = tmp_path / "log"
    logs.setup("debug", request.param, str(path))
    yield path
    logging.getLogger().handlers.clear()


def test_fields_are_redacted_by_name(captured):
    log = logs.get_logger("t")
    log.info("created", id="abc", password=PASSWORD, secret="s3cr3t-value", push_token=TOKEN)
    text = captured.read_text()
    assert PASSWORD not in text and "s3cr3t-value" not in text and TOKEN not in text
    assert "a1b2c3...(64)" in text and "abc" in text


def test_free_text_is_scrubbed(captured):
    log = logs.get_logger("t")
    log.warning(
        'sent Authorization: Digest username="u", response="6629fae49393a05397450978507c4ef1"'
        f' and "password": "{PASSWORD}"'
    )
    text = captured.read_text()
    assert "6629fae49393a05397450978507c4ef1" not in text and PASSWORD not in text


def test_json_lines_are_json(tmp_path):
    path = tmp_path / "log"
    logs.setup("info", "json", str(path))
    try:
        logs.get_logger("t").info("hello", n=3, ok=True)
    finally:
        logging.getLogger().handlers.clear()
    entry = json.loads(path.read_text())
    assert entry["msg"] == "hello" and entry["n"] == 3 and entry["ok"] is True


def test_helpers():
    assert shorten_token(TOKEN) == "a1b2c3...(64)"
    assert shorten_token(None) == "-"
    assert redact_field("registered", True) is True
    assert redact_field("auth_password", "x") == "<redacted>"
    assert "Bearer abcdef..." in scrub("Authorization2 Bearer abcdefghijklmnop")
    assert "password=<redacted>" in scrub("password=abc&x=1")

