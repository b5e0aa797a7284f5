"""SIP phones for tests: pjsua2 in a helper process, driven over stdin/stdout.

pjsua2 allows one `Endpoint` per process, at most 8 accounts, and calls back on its own
threads; so it runs in a child process (`python -m tests.support.phone`) with its
callbacks polled on that process's main thread (threadCnt 0, libHandleEvents). The test
side is `Phone`:

    phone = await Phone.start(ca_file=...)            # UDP and TLS transports on loopback
    await phone.account("bob", "sip:bob@example.org", registrar="sip:127.0.0.1:5060",
                        user="bob", password="pw-bob", proxy="sip:127.0.0.1:5060;lr")
    await phone.expect("reg_state", account="bob", code=200)
    await phone.send("call", account="bob", to="sip:alice@example.org")
    event = await phone.expect("call_state", account="bob", state="CONFIRMED")
    await phone.send("hangup", account="bob")
    await phone.stop()

Commands are JSON lines (`{"cmd": ..., ...}`); events come back as JSON lines
(`{"event": "reg_state" | "incoming_call" | "call_state" | "media_state" | "message" |
"im_status" | "error", ...}`); "hold", "unhold" and "update" send a re-INVITE or UPDATE. Media uses the null audio device.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import sys
import threading
import time


# --- the test side ---------------------------------------------------------------------------


class Phone:
    def __init__(self, process: asyncio.subprocess.Process):
        self.process = process
        self.events: list[dict] = []
        self._changed = asyncio.Event()
        self._reader = asyncio.ensure_future(self._read())

    @classmethod
    async def start(cls, ca_file: str = "", log_level: int = 0) -> "Phone":
        env = dict(os.environ, PHONE_CA_FILE=ca_file, PHONE_LOG_LEVEL=str(log_level))
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.support.phone", stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, env=env,
            cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
        phone = cls(process)
        await phone.expect("ready", timeout=20)
        return phone

    async def _read(self) -> None:
        while True:
            line = await self.process.stdout.readline()
            if not line:
                break
            try:
                event = json.loads(line)
            except ValueError:
                continue  # pjsua prints to stdout at times; events are the JSON lines
            if isinstance(event, dict) and "event" in event:
                self.events.append(event)
                self._changed.set()
        self._changed.set()

    async def send(self, cmd: str, **args) -> None:
        self.process.stdin.write((json.dumps({"cmd": cmd, **args}) + "\n").encode())
        await self.process.stdin.drain()

    async def account(self, name: str, id_uri: str, *, registrar: str, user: str,
                      password: str, proxy: str = "", auto_answer: int = 0) -> None:
        await self.send("account", name=name, id_uri=id_uri, registrar=registrar, user=user,
                        password=password, proxy=proxy, auto_answer=auto_answer)

    def find(self, kind: str, **match) -> dict | None:
        for event in self.events:
            if event["event"] == kind and all(event.get(k) == v for k, v in match.items()):
                return event
        return None

    async def expect(self, kind: str, timeout: float = 10.0, **match) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            event = self.find(kind, **match)
            if event is not None:
                return event
            left = deadline - time.monotonic()
            if left <= 0 or self.process.returncode is not None:
                raise AssertionError(f"no {kind} {match} within {timeout}s; got {self.events[-12:]}")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), left)
            except asyncio.TimeoutError:
                pass

    async def stop(self) -> None:
        if self.process.returncode is None:
            try:
                await self.send("quit")
                await asyncio.wait_for(self.process.wait(), 10)
            except (asyncio.TimeoutError, ConnectionError):
                self.process.kill()
                await self.process.wait()
        self._reader.cancel()


# --- the pjsua2 side (runs in the child process) -------------------------------------------


def _emit(**event) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def main() -> None:  # pragma: no cover - runs in the child
    import pjsua2 as pj

    class Call(pj.Call):
        def __init__(self, account, call_id=pj.PJSUA_INVALID_ID):
            super().__init__(account, call_id)
            self.name = account.name

        def onCallState(self, prm):
            info = self.getInfo()
            _emit(event="call_state", account=self.name, state=info.stateText,
                  code=info.lastStatusCode, reason=info.lastReason)
            if info.state == pj.PJSIP_INV_STATE_DISCONNECTED:
                account = accounts.get(self.name)
                if account is not None and account.call is self:
                    account.call = None

        def onCallMediaState(self, prm):
            info = self.getInfo()
            names = {pj.PJSUA_CALL_MEDIA_ACTIVE: "active", pj.PJSUA_CALL_MEDIA_LOCAL_HOLD: "local_hold",
                     pj.PJSUA_CALL_MEDIA_REMOTE_HOLD: "remote_hold", pj.PJSUA_CALL_MEDIA_NONE: "none",
                     pj.PJSUA_CALL_MEDIA_ERROR: "error"}
            for media in info.media:
                if media.type == pj.PJMEDIA_TYPE_AUDIO:
                    _emit(event="media_state", account=self.name, status=names.get(media.status, str(media.status)))

    class Account(pj.Account):
        def __init__(self, name, auto_answer):
            super().__init__()
            self.name = name
            self.auto_answer = auto_answer
            self.call = None
            self.buddies = []

        def onRegState(self, prm):
            _emit(event="reg_state", account=self.name, code=prm.code, expiration=prm.expiration)

        def onIncomingCall(self, prm):
            call = Call(self, prm.callId)
            self.call = call
            info = call.getInfo()
            _emit(event="incoming_call", account=self.name, remote=info.remoteUri,
                  call_id=info.callIdString)
            if self.auto_answer:
                op = pj.CallOpParam()
                op.statusCode = self.auto_answer
                call.answer(op)

        def onInstantMessage(self, prm):
            _emit(event="message", account=self.name, sender=prm.fromUri, body=prm.msgBody,
                  content_type=prm.contentType)

        def onInstantMessageStatus(self, prm):
            _emit(event="im_status", account=self.name, code=prm.code, reason=prm.reason,
                  to=prm.toUri)

    ep = pj.Endpoint()
    ep.libCreate()
    config = pj.EpConfig()
    config.uaConfig.threadCnt = 0
    config.uaConfig.mainThreadOnly = True
    config.uaConfig.userAgent = "test-phone"
    config.logConfig.level = int(os.environ.get("PHONE_LOG_LEVEL", "0"))
    config.logConfig.consoleLevel = config.logConfig.level
    config.medConfig.noVad = True
    ep.libInit(config)
    udp = pj.TransportConfig()
    udp.boundAddress = "127.0.0.1"
    udp.port = 0
    ep.transportCreate(pj.PJSIP_TRANSPORT_UDP, udp)
    tcp = pj.TransportConfig()
    tcp.boundAddress = "127.0.0.1"
    ep.transportCreate(pj.PJSIP_TRANSPORT_TCP, tcp)
    tls = pj.TransportConfig()
    tls.boundAddress = "127.0.0.1"
    tls.tlsConfig.verifyServer = False
    if os.environ.get("PHONE_CA_FILE"):
        tls.tlsConfig.CaListFile = os.environ["PHONE_CA_FILE"]
    tls.tlsConfig.method = pj.PJSIP_TLSV1_2_METHOD
    ep.transportCreate(pj.PJSIP_TRANSPORT_TLS, tls)
    ep.libStart()
    ep.audDevManager().setNullDev()

    accounts: dict[str, Account] = {}
    commands: queue.Queue = queue.Queue()

    def read_stdin():
        for line in sys.stdin:
            commands.put(line)
        commands.put(None)

    threading.Thread(target=read_stdin, daemon=True).start()
    _emit(event="ready")

    def handle(cmd: dict) -> bool:
        kind = cmd.get("cmd")
        if kind == "quit":
            return False
        if kind == "account":
            acfg = pj.AccountConfig()
            acfg.idUri = cmd["id_uri"]
            acfg.regConfig.registrarUri = cmd["registrar"]
            acfg.regConfig.timeoutSec = 300
            acfg.sipConfig.authCreds.append(pj.AuthCredInfo("digest", "*", cmd["user"], 0, cmd["password"]))
            if cmd.get("proxy"):
                acfg.sipConfig.proxies.append(cmd["proxy"])
            acfg.natConfig.sipOutboundUse = 0
            acfg.natConfig.contactRewriteUse = 0
            acfg.natConfig.viaRewriteUse = 0
            acfg.mediaConfig.transportConfig.boundAddress = "127.0.0.1"
            account = Account(cmd["name"], int(cmd.get("auto_answer") or 0))
            account.create(acfg)
            accounts[cmd["name"]] = account
        elif kind == "call":
            account = accounts[cmd["account"]]
            call = Call(account)
            account.call = call
            call.makeCall(cmd["to"], pj.CallOpParam(True))
        elif kind == "answer":
            op = pj.CallOpParam()
            op.statusCode = int(cmd.get("code", 200))
            accounts[cmd["account"]].call.answer(op)
        elif kind == "hangup":
            call = accounts[cmd["account"]].call
            if call is not None:
                op = pj.CallOpParam()
                op.statusCode = int(cmd.get("code", 603))
                call.hangup(op)
        elif kind == "hold":
            accounts[cmd["account"]].call.setHold(pj.CallOpParam(True))
        elif kind == "unhold":
            op = pj.CallOpParam(True)
            op.opt.flag = pj.PJSUA_CALL_UNHOLD
            accounts[cmd["account"]].call.reinvite(op)
        elif kind == "update":
            accounts[cmd["account"]].call.update(pj.CallOpParam(True))
        elif kind == "message":
            account = accounts[cmd["account"]]
            bcfg = pj.BuddyConfig()
            bcfg.uri = cmd["to"]
            bcfg.subscribe = False
            buddy = pj.Buddy()
            buddy.create(account, bcfg)
            account.buddies.append(buddy)
            prm = pj.SendInstantMessageParam()
            prm.content = cmd["body"]
            if cmd.get("content_type"):
                prm.contentType = cmd["content_type"]
            buddy.sendInstantMessage(prm)
        elif kind == "unregister":
            accounts[cmd["account"]].setRegistration(False)
        else:
            _emit(event="error", message=f"unknown command {kind!r}")
        return True

    running = True
    while running:
        ep.libHandleEvents(10)
        while True:
            try:
                line = commands.get_nowait()
            except queue.Empty:
                break
            if line is None:
                running = False
                break
            try:
                running = handle(json.loads(line))
            except Exception as exc:  # report, keep the phone alive
                _emit(event="error", message=repr(exc))
            if not running:
                break
    ep.hangupAllCalls()
    for _ in range(20):
        ep.libHandleEvents(10)
    for account in accounts.values():
        account.shutdown()
    ep.libDestroy()


if __name__ == "__main__":
    main()
