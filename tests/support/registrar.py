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

import re
import subprocess
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
        modparams = [f'modparam("ctl", "binrpc", "unix:{self.socket}")',
                     f'modparam("auth", "nonce_expire", {nonce_expire})',
                     f'modparam("registrar", "min_expires", {min_expires})',
                     f'modparam("registrar", "max_expires", {max_expires})',
                     'modparam("registrar", "default_expires", 60)']
        if algorithm != "MD5":
            modparams.append(f'modparam("auth", "algorithm", "{algorithm}")')
        config = KamailioConfig(extra_modules=("auth", "ctl", "kex"),
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

    def all_contacts(self) -> dict[str, list[str]]:
        """Every AOR with its Contact URIs, from one `ul.dump`."""
        out = self.kamcmd("ul.dump", timeout=120)
        table: dict[str, list[str]] = {}
        aor = None
        for line in out.splitlines():
            line = line.strip()
            if line.startswith("AoR:"):
                aor = line.split(":", 1)[1].strip()
                table.setdefault(aor, [])
            elif line.startswith("Address:") and aor is not None:
                table[aor].append(line.split(":", 1)[1].strip())
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
