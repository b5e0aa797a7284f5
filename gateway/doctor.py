"""`sip-push-gateway doctor`: is it the account or the gateway?

Registers one account once with pjsua2 (an independent SIP stack, in its own process:
`gateway.pjsua_probe`) and once with the gateway's own engine (a `RegistrationClient` on
a client-only endpoint, in this process's event loop), unregisters both, and prints the
two results side by side:

                       pjsua2            gateway
    status             200 OK            200 OK
    granted expiry     60 s              60 s
    round trip         4.1 ms            3.2 ms
    challenge          MD5               MD5

Both failing the same way points at the account (wrong password: 401/403 for both); only
the gateway failing points at the gateway. Exit status: 0 when the gateway registered,
1 otherwise. Nothing here prints the password.

Depends on the config, the SIP endpoint and registration client; pjsua2 only through the
subprocess.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass

from gateway.config import Config
from gateway.errors import AuthError, ConfigError, ParseError, PeerError, TransientError


@dataclass
class Account:
    aor: str
    username: str
    password: str
    registrar: str
    outbound_proxy: str = ""
    expires: int = 60


@dataclass
class Outcome:
    status: int | None = None
    reason: str = ""
    expires: int | None = None
    rtt_ms: float | None = None
    algorithm: str | None = None
    error: str | None = None

    @property
    def registered(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


def _transport(uri: str) -> str:
    lowered = uri.lower()
    if lowered.startswith("sips:") or "transport=tls" in lowered:
        return "tls"
    return "tcp" if "transport=tcp" in lowered else "udp"


def with_pjsua(account: Account, config: Config, timeout: float = 15.0) -> Outcome:
    """One registration by pjsua2, in a child process (blocking: call it from a thread)."""
    request = {"aor": account.aor, "registrar": account.registrar,
               "username": account.username, "password": account.password,
               "proxy": account.outbound_proxy, "expires": account.expires,
               "transport": _transport(account.outbound_proxy or account.registrar),
               "ca_file": config.sip.tls_ca_file, "verify": config.sip.tls_verify,
               "timeout": timeout - 3}
    try:
        done = subprocess.run([sys.executable, "-m", "gateway.pjsua_probe"],
                              input=json.dumps(request), capture_output=True, text=True,
                              timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Outcome(error=f"pjsua2 did not finish: {exc}")
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if not lines:
        return Outcome(error=f"pjsua2 failed (exit {done.returncode}): {done.stderr[-300:]}")
    data = json.loads(lines[-1])
    return Outcome(status=data.get("status"), reason=data.get("reason") or "",
                   expires=data.get("expires"), rtt_ms=data.get("rtt_ms"),
                   algorithm=data.get("algorithm"), error=data.get("error"))


async def with_engine(account: Account, config: Config) -> Outcome:
    """One registration by the gateway's engine, then its unregistration."""
    from gateway.app import provider_face
    from gateway.sip.pacing import Pacer
    from gateway.sip.registration import (RegisterFailed, RegistrationClient,
                                          RegistrationContext, RegistrationSettings)
    from gateway.timers import TimerWheel

    wheel = TimerWheel()
    endpoint = provider_face(config, wheel)  # client only: no listener
    ctx = RegistrationContext(endpoint, Pacer(wheel, 1000, 10, 1000, 10), RegistrationSettings(),
                              public_address=config.sip.public_address)
    outcome = Outcome()
    client = None
    try:
        client = RegistrationClient(
            ctx, key="doctor", token="doctor" + secrets.token_hex(6),
            instance_urn=f"urn:uuid:{uuid.uuid4()}", aor=account.aor,
            username=account.username, password_source=lambda: account.password,
            registrar=account.registrar, outbound_proxy=account.outbound_proxy or None,
            expires=account.expires)
        started = time.monotonic()
        try:
            outcome.expires = await client._exchange(account.expires)
            outcome.status, outcome.reason = 200, "OK"
        except AuthError as exc:
            outcome.status, outcome.reason = exc.status, str(exc)
        except RegisterFailed as exc:
            outcome.status, outcome.reason = exc.status, exc.reason
        except (TransientError, ParseError, PeerError, ConfigError) as exc:
            outcome.error = str(exc) + (f": {exc.__cause__}" if exc.__cause__ else "")
        outcome.rtt_ms = (time.monotonic() - started) * 1000
        outcome.algorithm = client.digest.algorithm
        if outcome.registered:
            try:
                await client._exchange(0)
            except (TransientError, PeerError) as exc:
                outcome.error = f"registered, but unregistering failed: {exc}"
    except ConfigError as exc:
        outcome.error = str(exc)
    finally:
        if client is not None:
            ctx.unbind(client)
        await endpoint.close()
        wheel.close()
    return outcome


def _cells(outcome: Outcome) -> list[str]:
    if outcome.status is None:
        return [f"failed: {outcome.error}", "-", "-", outcome.algorithm or "-"]
    return [f"{outcome.status} {outcome.reason}".strip(),
            f"{outcome.expires} s" if outcome.expires is not None else "-",
            f"{outcome.rtt_ms:.1f} ms" if outcome.rtt_ms is not None else "-",
            outcome.algorithm or "none"]


def report(account: Account, pjsua: Outcome, engine: Outcome) -> str:
    rows = ["status", "granted expiry", "round trip", "challenge"]
    left, right = _cells(pjsua), _cells(engine)
    width = max(len(c) for c in left + ["pjsua2"]) + 2
    lines = [f"account {account.aor} at {account.registrar}"
             + (f" via {account.outbound_proxy}" if account.outbound_proxy else ""),
             f"{'':18}{'pjsua2':{width}}gateway"]
    lines += [f"{name:18}{a:{width}}{b}" for name, a, b in zip(rows, left, right)]
    if engine.error and engine.status is not None:
        lines.append(f"note: {engine.error}")
    lines.append(verdict(pjsua, engine))
    return "\n".join(lines)


def verdict(pjsua: Outcome, engine: Outcome) -> str:
    if engine.registered and pjsua.registered:
        return "verdict: both registered; the account and the gateway work"
    if engine.registered:
        return "verdict: the gateway registered; pjsua2 did not (see its status)"
    if pjsua.registered:
        return "verdict: pjsua2 registered but the gateway did not: a gateway problem"
    if pjsua.status in (401, 403, 404, 407) and engine.status in (401, 403, 404, 407):
        return "verdict: both were refused: an account problem (username, password, domain)"
    return "verdict: neither registered: check the registrar address and the network"


def run(account: Account, config: Config) -> int:
    async def both():
        # one after the other, so that neither's round trip includes the other's work;
        # pjsua2 runs in its own process, waited for from a thread
        pjsua = await asyncio.get_running_loop().run_in_executor(None, with_pjsua, account,
                                                                 config)
        return pjsua, await with_engine(account, config)

    pjsua, engine = asyncio.run(both())
    print(report(account, pjsua, engine))
    return 0 if engine.registered else 1
