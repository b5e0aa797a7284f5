"""Starts a real Kamailio on loopback for tests: UDP, TCP and TLS on free ports.

    kam = Kamailio(tmp_path)          # or Kamailio(tmp_path, KamailioConfig(...))
    kam.start()                       # returns once it answers SIP over UDP
    ... kam.udp_port, kam.tcp_port, kam.tls_port, kam.ca_file, kam.domain ...
    kam.stop()

The generated kamailio.cfg loads sl, tm, registrar, usrloc (db_mode 0, memory only) and
tls with certificates from `trustme` (the CA is `kam.ca`, its PEM `kam.ca_file`; the
server certificate names 127.0.0.1, localhost and `kam.domain`). Its request route:
- OPTIONS to the server itself (no user part): `200 OK`, statelessly;
- REGISTER: `route(AUTH)` (empty unless `KamailioConfig.auth_route` fills it), then
  `save("location")`;
- anything else: `lookup("location")` and `t_relay()`, or a stateful `404` when the user
  is not registered (so tm retransmits the 404 over UDP until it gets an ACK);
- `KamailioConfig.request_hook` runs first, for tests that need special answers.
Other engineers extend it through `KamailioConfig` (extra modules, modparams, routes),
e.g. digest authentication with the auth module.

Kamailio runs in the foreground (-DD -E) in its own session, with its own pid file and
temp dir and small memory (-m 64 -M 8 unless `shm_mb` says otherwise; the allocator
`memory_manager`); `stop()` ends that process group only.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import trustme

from tests.support.ports import free_port
from tests.support.processes import log_tail, need_program, stop_group

MODULE_DIRS = ("/usr/lib/x86_64-linux-gnu/kamailio/modules", "/usr/lib/kamailio/modules",
               "/usr/local/lib64/kamailio/modules", "/usr/local/lib/kamailio/modules")
BASE_MODULES = ("corex", "tm", "sl", "pv", "maxfwd", "textops", "siputils", "xlog",
                "usrloc", "registrar", "tls")


def kamailio_binary() -> str | None:
    return shutil.which("kamailio") or next(
        (p for p in ("/usr/sbin/kamailio", "/usr/local/sbin/kamailio") if os.path.exists(p)),
        None)


def need_kamailio() -> None:
    """Skip the calling test when Kamailio is missing; fail it on CI, where it must be."""
    need_program(kamailio_binary(), "kamailio is not installed (apt-get install kamailio "
                 "kamailio-tls-modules; tests/apt-packages.txt)")


@dataclass
class KamailioConfig:
    """What a test adds to the base configuration (all Kamailio cfg text)."""

    extra_modules: tuple[str, ...] = ()      # module names, e.g. ("auth",)
    modparams: str = ""                      # modparam(...) lines
    globals: str = ""                        # core parameters
    auth_route: str = ""                     # body of route[AUTH], run for REGISTER
    request_hook: str = ""                   # runs first in request_route
    routes: str = ""                         # extra route[...] blocks
    debug: int = 2
    shm_mb: int = 64                         # shared memory (-m); raise it for big location tables
    children: int = 2                        # UDP worker processes
    # Kamailio's allocator for shared and private memory (-x, -X): "" keeps the build's
    # default, qm, the debugging one (it notes where every fragment came from, for leak
    # dumps); "tlsf" (or "fm") is what a proxy under load runs. A load bench wants that.
    memory_manager: str = ""


CFG_TEMPLATE = """#!KAMAILIO
debug={debug}
log_stderror=yes
children={children}
tcp_children=2
auto_aliases=no
alias="{domain}"
listen=udp:127.0.0.1:{udp_port}
listen=tcp:127.0.0.1:{tcp_port}
listen=tls:127.0.0.1:{tls_port}
enable_tls=yes
tcp_crlf_ping=yes
tcp_connection_lifetime=3605
{globals}
mpath="{mpath}"
{loadmodules}
modparam("usrloc", "db_mode", 0)
modparam("registrar", "max_expires", 3600)
modparam("tls", "certificate", "{cert_file}")
modparam("tls", "private_key", "{key_file}")
modparam("tls", "ca_list", "{ca_file}")
modparam("tls", "tls_method", "TLSv1.2+")
modparam("tls", "verify_certificate", 0)
modparam("tls", "require_certificate", 0)
{modparams}

request_route {{
    route(HOOK);
    if (!mf_process_maxfwd_header("10")) {{
        sl_send_reply("483", "Too Many Hops");
        exit;
    }}
    force_rport();
    if (is_method("OPTIONS") && uri==myself && $rU==$null) {{
        sl_send_reply("200", "OK");
        exit;
    }}
    if (is_method("REGISTER")) {{
        route(AUTH);
        if (!save("location")) {{
            sl_reply_error();
        }}
        exit;
    }}
    if (is_method("ACK|CANCEL")) {{
        if (t_check_trans()) {{
            t_relay();
        }}
        exit;
    }}
    if (!lookup("location")) {{
        t_newtran();
        t_reply("404", "Not Found");
        exit;
    }}
    t_relay();
}}

route[HOOK] {{
{request_hook}
}}

route[AUTH] {{
{auth_route}
}}

{routes}
"""


class Kamailio:
    def __init__(self, workdir: Path, config: KamailioConfig | None = None,
                 domain: str = "kamailio.test"):
        binary = kamailio_binary()
        if binary is None:
            raise RuntimeError("kamailio is not installed: apt-get install kamailio "
                               "kamailio-tls-modules (listed in tests/apt-packages.txt)")
        self.binary = binary
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config = config or KamailioConfig()
        self.domain = domain
        self.udp_port = free_port(socket.SOCK_DGRAM)
        self.tcp_port = free_port()
        self.tls_port = free_port()
        self.ca = trustme.CA()
        self.ca_file = self.workdir / "ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        self.process: subprocess.Popen | None = None
        self.log_file = self.workdir / "kamailio.log"

    def port(self, transport: str) -> int:
        return {"udp": self.udp_port, "tcp": self.tcp_port, "tls": self.tls_port}[transport]

    def write_config(self) -> Path:
        server = self.ca.issue_cert("127.0.0.1", "localhost", self.domain)
        cert_file, key_file = self.workdir / "server.pem", self.workdir / "server.key"
        cert_file.unlink(missing_ok=True)  # a restart writes a new chain: do not append to the old
        for blob in server.cert_chain_pems:
            blob.write_to_path(str(cert_file), append=True)
        server.private_key_pem.write_to_path(str(key_file))
        mpath = next((d for d in MODULE_DIRS if os.path.isdir(d)), MODULE_DIRS[0])
        modules = BASE_MODULES + tuple(self.config.extra_modules)
        text = CFG_TEMPLATE.format(
            debug=self.config.debug, children=self.config.children, domain=self.domain, udp_port=self.udp_port,
            tcp_port=self.tcp_port, tls_port=self.tls_port, globals=self.config.globals,
            mpath=mpath, loadmodules="\n".join(f'loadmodule "{m}.so"' for m in modules),
            cert_file=cert_file, key_file=key_file, ca_file=self.ca_file,
            modparams=self.config.modparams, request_hook=self.config.request_hook or "    ;",
            auth_route=self.config.auth_route or "    ;", routes=self.config.routes)
        path = self.workdir / "kamailio.cfg"
        path.write_text(text)
        return path

    def start(self, timeout: float = 15.0) -> Kamailio:
        cfg = self.write_config()
        run_dir = self.workdir / "run"
        run_dir.mkdir(exist_ok=True)
        command = [self.binary, "-f", str(cfg), "-DD", "-E", "-P", str(self.workdir / "kamailio.pid"),
                   "-Y", str(run_dir), "-w", str(self.workdir), "-m", str(self.config.shm_mb), "-M", "8"]
        if self.config.memory_manager:
            command += ["-x", self.config.memory_manager, "-X", self.config.memory_manager]
        check = subprocess.run(command[:3] + ["-c"], capture_output=True, text=True, timeout=30)
        if check.returncode != 0:
            raise RuntimeError(f"kamailio.cfg rejected:\n{check.stderr[-3000:]}")
        with open(self.log_file, "wb") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"kamailio exited with {self.process.returncode}:\n"
                                   f"{self.log_tail()}")
            if self.ping():
                return self
        self.stop()
        raise RuntimeError(f"kamailio did not answer SIP within {timeout}s:\n{self.log_tail()}")

    def ping(self, wait: float = 0.2) -> bool:
        """Send a raw OPTIONS over UDP; True when any SIP response comes back (a hook may
        answer 503 on purpose). Independent of the gateway code."""
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.1", 0))
            sock.settimeout(wait)
            port = sock.getsockname()[1]
            branch = "z9hG4bK" + uuid.uuid4().hex
            request = (f"OPTIONS sip:{self.domain} SIP/2.0\r\n"
                       f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch={branch}\r\n"
                       f"Max-Forwards: 70\r\nFrom: <sip:probe@{self.domain}>;tag=p\r\n"
                       f"To: <sip:{self.domain}>\r\nCall-ID: {branch}\r\nCSeq: 1 OPTIONS\r\n"
                       "Content-Length: 0\r\n\r\n")
            sock.sendto(request.encode(), ("127.0.0.1", self.udp_port))
            try:
                data = sock.recv(65535)
            except OSError:
                return False
            return data.startswith(b"SIP/2.0 ")

    def log_tail(self, size: int = 4000) -> str:
        return log_tail(self.log_file, size)

    def stop(self) -> None:
        """Stop our Kamailio: SIGTERM to its own process group, SIGKILL if it lingers."""
        process, self.process = self.process, None
        stop_group(process)

    def __enter__(self) -> Kamailio:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
