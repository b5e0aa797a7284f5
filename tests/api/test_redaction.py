"""Logs never carry passwords, secrets, API keys or full push tokens."""

from __future__ import annotations

import io
import logging

from gateway.logs import TextFormatter
from gateway.redact import shorten_token

from .harness import APP_KEY, PASSWORD, app_auth, create_body


def test_shorten_token():
    assert shorten_token("abcdef0123456789xyz") == "abcdef...(19)"
    assert shorten_token("") == shorten_token(None) == "-"


async def test_a_whole_lifecycle_logs_no_secret(gw, caplog):
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(TextFormatter())  # the gateway's own log format
    root = logging.getLogger()
    root.addHandler(handler)
    caplog.set_level(logging.DEBUG)
    token = create_body()["push"][0]["token"]
    try:
        resp = await gw.client.post("/v1/instances", json=create_body(), headers=app_auth())
        inst = await resp.json()
        auth = {"Authorization": f"Bearer {inst['secret']}"}
        url = f"/v1/instances/{inst['id']}"
        await gw.client.patch(url, json={"account": {"password": "another-pw-5150"}}, headers=auth)
        await gw.client.put(url + "/mode", json={"mode": "foreground"}, headers=auth)
        await gw.client.post(url + "/refresh", headers=auth)
        await gw.client.get(url, headers={"Authorization": "Bearer wrong-secret-123456"})
        await gw.client.delete(url, headers=auth)
    finally:
        root.removeHandler(handler)
    # what the gateway writes, and what its records carry before any formatter scrubs them
    written = out.getvalue()
    raw = "\n".join(f"{r.getMessage()} {getattr(r, 'fields', '')}" for r in caplog.records)
    assert inst["id"] in written and f"id={inst['id']}" in written  # it says which instance
    assert shorten_token(token) in written
    for text in (written, raw):
        for secret in (PASSWORD, "another-pw-5150", inst["secret"], APP_KEY, token, "wrong-secret-123456"):
            assert secret not in text
