"""Logs never carry passwords, secrets, API keys or full push tokens."""

from __future__ import annotations

import logging

from gateway.redact import shorten_token

from .harness import APP_KEY, PASSWORD, app_auth, create_body


def test_shorten_token():
    assert shorten_token("abcdef0123456789xyz") == "abcdef...(19)"
    assert shorten_token("") == shorten_token(None) == "-"


async def test_a_whole_lifecycle_logs_no_secret(gw, caplog):
    caplog.set_level(logging.DEBUG)
    token = create_body()["push"][0]["token"]
    resp = await gw.client.post("/v1/instances", json=create_body(), headers=app_auth())
    inst = await resp.json()
    auth = {"Authorization": f"Bearer {inst['secret']}"}
    url = f"/v1/instances/{inst['id']}"
    await gw.client.patch(url, json={"account": {"password": "another-pw-5150"}}, headers=auth)
    await gw.client.put(url + "/mode", json={"mode": "foreground"}, headers=auth)
    await gw.client.post(url + "/refresh", headers=auth)
    await gw.client.get(url, headers={"Authorization": "Bearer wrong-secret-123456"})
    await gw.client.delete(url, headers=auth)
    text = caplog.text
    assert inst["id"] in text  # the log does say which instance
    assert shorten_token(token) in text
    for secret in (PASSWORD, "another-pw-5150", inst["secret"], APP_KEY, token, "wrong-secret-123456"):
        assert secret not in text
