"""A Kamailio registrar with digest authentication on, and a reader of its location table.

    kam = AuthRegistrar(tmp_path, algorithm="MD5").start()
    kam.password("alice")          # the password Kamailio expects for user alice
    kam.contacts("alice")          # Contact URIs bound to alice, read with kamcmd
    kam.auth_failures("alice")     # how many answers with a wrong password it saw
    kam.registers("alice")         # how many REGISTER requests it saw for alice
    kam.restart()                  # a registrar restart forgets every binding

Every user's password is "pw-" + its user name (the cfg computes it, pv_www_authenticate
checks it), the realm is the To domain. A request_hook can make it answer 503 etc.
Built on tests/support/kamailio.py through its auth_route and config hooks; kamcmd talks
to the ctl module over a unix socket in the work directory.
"""

from __future__ import annotations

import json
import os
import re
import select
import subprocess
import time
import uuid
from pathlib import Path

from tests.support.kamailio import Kamailio, KamailioConfig

AUTH_ROUTE = """
    xlog("L_NOTICE", "REGISTER-SEEN $fU\\n");
    $var(pw) = "pw-" + $au;
    if (!pv_www_authenticate("$td", "$var(pw)", "0")) {
        $var(rc) = $rc;
        xlog("L_NOTICE", "AUTH-RESULT $var(rc) $au\\n");
        www_challenge("$td", "1");
        exit;
    }
    consume_credentials();
"""


class AuthRegistrar(Kamailio):
    def __init__(self, workdir: Path, *, algorithm: str = "MD5", request_hook: str = "",
                 shm_mb: int = 64, children: int = 2, nonce_expire: int = 300,
                 min_expires: int = 1, max_expires: int = 3600, debug: int = 2):
        self.socket = Path(workdir) / "ctl.sock"
        self.fifo = Path(workdir) / "rpc.fifo"
        modparams = [f'modparam("ctl", "binrpc", "unix:{self.socket}")',
                     f'modparam("jsonrpcs", "fifo_name", "{self.fifo}")',
                     f'modparam("jsonrpcs", "fifo_reply_dir", "{Path(workdir)}/")',
                     'modparam("jsonrpcs", "transport", 2)',
                     f'modparam("auth", "nonce_expire", {nonce_expire})',
                     f'modparam("registrar", "min_expires", {min_expires})',
                     f'modparam("registrar", "max_expires", {max_expires})',
                     'modparam("registrar", "default_expires", 60)']
        if algorithm != "MD5":
            modparams.append(f'modparam("auth", "algorithm", "{algorithm}")')
        config = KamailioConfig(extra_modules=("auth", "ctl", "kex", "jsonrpcs"),
                                modparams="\n".join(modparams), auth_route=AUTH_ROUTE,
                                request_hook=request_hook, shm_mb=shm_mb, children=children,
                                debug=debug)
        super().__init__(workdir, config)
        self._log_offset = 0

    @staticmethod
    def password(user: str) -> str:
        return "pw-" + user

    def kamcmd(self, *args: str, timeout: float = 30.0) -> str:
        result = subprocess.run(["kamcmd", "-s", f"unix:{self.socket}", *args],
                                capture_output=True, text=True, timeout=timeout)
        return result.stdout + result.stderr

    def contacts(self, user: str) -> list[str]:
        """The Contact URIs bound to `user` now (empty when none)."""
        out = self.kamcmd("ul.lookup", "location", user)
        return re.findall(r"Address:\s*(\S+)", out)

    def rpc(self, method: str, *params, timeout: float = 60.0) -> object:
        """A JSON-RPC call through the jsonrpcs FIFO (no reply size limit, unlike the
        binrpc socket kamcmd uses, which refuses a 20,000-contact ul.dump)."""
        reply_name = f"reply{uuid.uuid4().hex}"  # jsonrpcs refuses names with "-" or "."
        reply = self.workdir / reply_name
        os.mkfifo(reply)
        fd = os.open(reply, os.O_RDONLY | os.O_NONBLOCK)
        chunks: list[bytes] = []
        try:
            request = json.dumps({"jsonrpc": "2.0", "method": method, "params": list(params),
                                  "reply_name": reply_name, "id": 1})
            with open(self.fifo, "w") as fifo:
                fifo.write(request + "\n")
            deadline = time.monotonic() + timeout
            writer_seen = False
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RuntimeError(f"{method}: no reply within {timeout}s")
                ready, _, _ = select.select([fd], [], [], min(left, 0.2))
                if not ready:
                    continue
                data = os.read(fd, 1 << 20)
                if data:
                    chunks.append(data)
                    writer_seen = True
                elif writer_seen:
                    break  # EOF: Kamailio closed its end
                else:
                    time.sleep(0.01)  # no writer yet: EOF before Kamailio opened it
        finally:
            os.close(fd)
            reply.unlink(missing_ok=True)
        message = json.loads(b"".join(chunks))
        if "error" in message:
            raise RuntimeError(f"{method}: {message['error']}")
        return message["result"]

    def all_contacts(self, timeout: float = 60.0) -> dict[str, list[str]]:
        """Every AOR with its Contact URIs, from one `ul.dump`."""
        result = self.rpc("ul.dump", timeout=timeout)
        table: dict[str, list[str]] = {}
        for domain in result.get("Domains", []):
            for entry in domain.get("Domain", {}).get("AoRs", []):
                info = entry.get("Info", {})
                table[info.get("AoR")] = [c["Contact"]["Address"]
                                          for c in info.get("Contacts", [])]
        return table

    def _log(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def auth_failures(self, user: str) -> int:
        """Answers with a wrong password (pv_www_authenticate returned -2) for `user`."""
        return len(re.findall(rf"AUTH-RESULT -2 {re.escape(user)}\b", self._log()))

    def registers(self, user: str) -> int:
        return len(re.findall(rf"REGISTER-SEEN {re.escape(user)}\b", self._log()))

    def restart(self) -> None:
        self.stop()
        self.start()
