"""One registration with pjsua2 (an independent SIP stack), for `sip-push-gateway doctor`.

Run as a separate process (`python -m gateway.pjsua_probe`), never inside the gateway's
loop: pjsua2 has its own threads and aborts the whole process on some errors (a ninth
account, for one). It reads the account as JSON on stdin (the password never appears on
a command line) and writes one JSON result on stdout:

    {"status": 200, "reason": "OK", "expires": 60, "rtt_ms": 3.1, "algorithm": "MD5",
     "challenges": [401], "error": null}

It registers once, waits for the outcome, unregisters, and exits. Depends on pjsua2 only.
"""

from __future__ import annotations

import json
import re
import sys
import time

_CHALLENGE = re.compile(r"^SIP/2\.0 (401|407) ", re.M)
_ALGORITHM = re.compile(r"^(?:WWW|Proxy)-Authenticate:.*?\balgorithm=\"?([\w-]+)", re.M | re.I)
_DIGEST = re.compile(r"^(?:WWW|Proxy)-Authenticate:\s*Digest", re.M | re.I)


def probe(account: dict) -> dict:
    import pjsua2 as pj

    messages: list[str] = []

    class Collector(pj.LogWriter):
        def write(self, entry):
            messages.append(entry.msg)

    class Account(pj.Account):
        def __init__(self):
            super().__init__()
            self.result = None
            self.started = 0.0

        def onRegState(self, prm):
            if self.result is None:
                self.result = {"status": prm.code, "reason": prm.reason,
                               "expires": prm.expiration if 200 <= prm.code < 300 else None,
                               "rtt_ms": (time.monotonic() - self.started) * 1000}
            elif prm.code and self.result.get("unregistered") is None:
                self.result["unregistered"] = prm.code

    endpoint = pj.Endpoint()
    endpoint.libCreate()
    config = pj.EpConfig()
    config.uaConfig.threadCnt = 0
    config.uaConfig.mainThreadOnly = True
    config.uaConfig.userAgent = "sip-push-gateway doctor (pjsua2)"
    writer = Collector()
    config.logConfig.writer = writer
    config.logConfig.level = 5
    config.logConfig.consoleLevel = 5
    config.logConfig.msgLogging = 1
    config.medConfig.noVad = True
    endpoint.libInit(config)
    transport = account.get("transport", "udp")
    kinds = {"udp": pj.PJSIP_TRANSPORT_UDP, "tcp": pj.PJSIP_TRANSPORT_TCP,
             "tls": pj.PJSIP_TRANSPORT_TLS}
    transport_config = pj.TransportConfig()
    if transport == "tls":
        transport_config.tlsConfig.CaListFile = account.get("ca_file") or ""
        transport_config.tlsConfig.verifyServer = bool(account.get("verify", True))
    endpoint.transportCreate(kinds[transport], transport_config)
    endpoint.audDevManager().setNullDev()
    endpoint.libStart()

    acc_config = pj.AccountConfig()
    acc_config.idUri = account["aor"]
    acc_config.regConfig.registrarUri = account["registrar"]
    acc_config.regConfig.timeoutSec = int(account.get("expires", 60))
    acc_config.regConfig.retryIntervalSec = 0  # once: the doctor reports, it does not insist
    if account.get("proxy"):
        acc_config.sipConfig.proxies.append(account["proxy"])
    acc_config.sipConfig.authCreds.append(
        pj.AuthCredInfo("digest", "*", account["username"], 0, account["password"]))
    acc = Account()
    acc.started = time.monotonic()
    deadline = acc.started + float(account.get("timeout", 10.0))
    try:
        acc.create(acc_config)
        while acc.result is None and time.monotonic() < deadline:
            endpoint.libHandleEvents(10)
        result = acc.result or {"status": 408, "reason": "no answer (pjsua2 timeout)",
                                "expires": None, "rtt_ms": None}
        if 200 <= result["status"] < 300:
            acc.setRegistration(False)
            stop = time.monotonic() + 3.0
            while "unregistered" not in result and time.monotonic() < stop:
                endpoint.libHandleEvents(10)
    finally:
        acc.shutdown()
        endpoint.libDestroy()
    text = "\n".join(messages)
    result["challenges"] = [int(code) for code in _CHALLENGE.findall(text)]
    algorithms = _ALGORITHM.findall(text)
    result["algorithm"] = algorithms[0].upper() if algorithms else (
        "MD5" if _DIGEST.search(text) else None)  # RFC 2617: no algorithm means MD5
    result["error"] = None
    return result


def main() -> int:
    try:
        account = json.loads(sys.stdin.read())
        result = probe(account)
    except Exception as exc:  # noqa: BLE001 - reported to the doctor as data
        result = {"status": None, "reason": None, "expires": None, "rtt_ms": None,
                  "algorithm": None, "challenges": [], "error": f"{type(exc).__name__}: {exc}"}
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
