"""Captures real SIP messages from Kamailio 5.6 and pjsua2 2.15 into corpus/captured/.

    python tests/sip/corpus/capture.py [OUTPUT_DIR]

Starts Kamailio on a free UDP port of 127.0.0.1 (registrar with digest authentication by
`pv_auth_check`, record-routing proxy for INVITE), then one pjsua2 endpoint with two
accounts: alice registers (REGISTER, 401, REGISTER with Authorization, 200), bob calls
alice through Kamailio (INVITE, the INVITE Kamailio relays, 180, 200) and hangs up. Every
message pjsua2 sends or receives is taken byte for byte from its message log (the log
writer gets the packet text with its CRLFs) and written as one file per message. The
INDEX.tsv next to the files is written by hand from what was captured.

A tool, not a test: run by hand when the stacks change. Needs kamailio and pjsua2.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pjsua2 as pj

KAMAILIO_CFG = """#!KAMAILIO
debug=1
log_stderror=yes
children=1
auto_aliases=no
listen=udp:127.0.0.1:{port}
alias="127.0.0.1:{port}"
mpath="/usr/lib/x86_64-linux-gnu/kamailio/modules"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
loadmodule "auth.so"
modparam("usrloc", "db_mode", 0)

request_route {{
    if (!mf_process_maxfwd_header("10")) {{
        sl_send_reply("483", "Too Many Hops");
        exit;
    }}
    force_rport();
    if (is_method("REGISTER")) {{
        if (!pv_auth_check("$fd", "secret", "0", "1")) {{
            auth_challenge("$fd", "1");
            exit;
        }}
        consume_credentials();
        save("location");
        exit;
    }}
    if (has_totag()) {{
        if (loose_route()) {{
            t_relay();
            exit;
        }}
        if (is_method("ACK") && t_check_trans()) {{
            t_relay();
        }}
        exit;
    }}
    if (is_method("INVITE")) {{
        record_route();
    }}
    if (!lookup("location")) {{
        sl_send_reply("404", "Not Found");
        exit;
    }}
    t_relay();
}}
"""

_DUMP = re.compile(
    r"(?P<dir>TX|RX) (?P<size>\d+) bytes (?P<kind>Request|Response) msg (?P<what>\S+) .*?:\r?\n",
    re.S)


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class MessageLog(pj.LogWriter):
    """Keeps every SIP message pjsua2 logs, as (direction, packet bytes)."""

    def __init__(self):
        super().__init__()
        self.messages: list[tuple[str, str, bytes]] = []

    def write(self, entry):
        text = entry.msg
        match = _DUMP.search(text)
        if match and "--end msg--" in text:
            # the packet follows the header line; the log adds a newline after it
            packet = text[match.end() :].encode("utf-8")[: int(match["size"])]
            self.messages.append((match["dir"], match["what"], packet))


class Alice(pj.Account):
    def __init__(self):
        super().__init__()
        self.calls = []

    def onIncomingCall(self, prm):
        call = pj.Call(self, prm.callId)
        self.calls.append(call)
        op = pj.CallOpParam()
        op.statusCode = 180
        call.answer(op)
        op.statusCode = 200
        call.answer(op)


def account(ep_port: int, user: str, kam_port: int) -> pj.AccountConfig:
    cfg = pj.AccountConfig()
    cfg.idUri = f"sip:{user}@127.0.0.1:{kam_port}"
    cfg.regConfig.registrarUri = f"sip:127.0.0.1:{kam_port}"
    cfg.sipConfig.authCreds.append(pj.AuthCredInfo("digest", "*", user, 0, "secret"))
    if user == "alice":
        # as a push-capable mobile softphone registers: RFC 8599 pn-* URI parameters
        # (a made-up token, not a real device's)
        cfg.sipConfig.contactUriParams = (
            ";pn-provider=apns;pn-param=ABCD1234.com.example.voip"
            ";pn-prid=4b1f0d3a2c9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a")
    return cfg


def pump(ep: pj.Endpoint, seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        ep.libHandleEvents(20)


def capture(out: Path) -> list[Path]:
    port = free_udp_port()
    work = Path(tempfile.mkdtemp(prefix="capture-"))
    (work / "kamailio.cfg").write_text(KAMAILIO_CFG.format(port=port))
    kamailio = subprocess.Popen(
        ["kamailio", "-f", str(work / "kamailio.cfg"), "-DD", "-E", "-m", "32", "-M", "4",
         "-P", str(work / "kamailio.pid"), "-Y", str(work)],
        stdout=subprocess.DEVNULL, stderr=open(work / "kamailio.log", "w"), start_new_session=True)
    log = MessageLog()
    ep = pj.Endpoint()
    try:
        time.sleep(1.0)
        ep.libCreate()
        cfg = pj.EpConfig()
        cfg.uaConfig.threadCnt = 0
        cfg.uaConfig.mainThreadOnly = True
        cfg.logConfig.writer = log
        cfg.logConfig.level = 5
        cfg.logConfig.consoleLevel = 5  # the writer gets what the console would
        cfg.logConfig.msgLogging = True
        cfg.medConfig.hasIoqueue = True
        ep.libInit(cfg)
        transport = pj.TransportConfig()
        transport.port = free_udp_port()
        transport.boundAddress = "127.0.0.1"
        ep.transportCreate(pj.PJSIP_TRANSPORT_UDP, transport)
        ep.libStart()
        ep.audDevManager().setNullDev()
        # a narrowband-only softphone: G.711 and DTMF events, the usual mobile offer
        for codec in ep.codecEnum2():
            if not codec.codecId.startswith(("PCMU/", "PCMA/")):
                ep.codecSetPriority(codec.codecId, 0)
        alice = Alice()
        alice.create(account(transport.port, "alice", port))
        pump(ep, 2.0)
        bob = pj.Account()
        bob.create(account(transport.port, "bob", port))
        pump(ep, 2.0)
        call = pj.Call(bob)
        call.makeCall(f"sip:alice@127.0.0.1:{port}", pj.CallOpParam(True))
        pump(ep, 3.0)
        call.hangup(pj.CallOpParam(True))
        pump(ep, 2.0)
        del call, alice, bob
    finally:
        ep.libDestroy()
        os.killpg(kamailio.pid, signal.SIGTERM)
        kamailio.wait(10)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for n, (direction, what, packet) in enumerate(log.messages, 1):
        name = f"raw-{n:02d}-{direction.lower()}-{what.replace('/', '-')}.sip"
        (out / name).write_bytes(packet)
        written.append(out / name)
    return written


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent / "captured")
    for path in capture(target):
        print(path, path.stat().st_size)
