"""Drives the installed package inside deb-test's chroot: the service's own command, as the
service user, then the device API and /metrics over loopback.

    installed_check.py create STATE.json [--old]   start, create an instance, save its id
                                                   and secret
    installed_check.py find STATE.json             start, the saved instance must answer

/metrics must answer, except with --old: the previous commit's package of an upgrade test
may predate the admin listener (issue 8).

Runs as root inside the chroot (in a private network namespace, so the default ports are
free) with the package's interpreter, and uses the standard library only. There is no
systemd in the chroot, so the unit's settings that matter are applied by hand: ExecStart,
User/Group, WorkingDirectory, NoNewPrivileges, the empty capability bounding set, and
MemoryDenyWriteExecute through the kernel's PR_SET_MDWE (what systemd >= 256 uses too).
Readiness is the unit's: the READY=1 datagram on $NOTIFY_SOCKET, within TimeoutStartSec.
"""

import ctypes
import json
import os
import pwd
import shlex
import signal
import socket
import ssl
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from pathlib import Path

UNIT = Path("/lib/systemd/system/sip-push-gateway.service")
CONFIG = Path("/etc/sip-push-gateway/gateway.toml")
PASSWORD = "deb-test-Pa55word"
PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1



def fail(message: str, log: Path | None = None) -> None:
    print(f"installed_check: FAILED: {message}", file=sys.stderr)
    if log and log.exists():
        print("--- service log (last 40 lines)", file=sys.stderr)
        print("\n".join(log.read_text(errors="replace").splitlines()[-40:]), file=sys.stderr)
    sys.exit(1)


def unit_settings() -> dict[str, str]:
    settings = {}
    for line in UNIT.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.startswith("#"):
            settings.setdefault(key.strip(), value.strip())
    return settings


def deny_write_execute() -> None:
    """In the service's process before exec: refuse W+X memory from now on (inherited)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_MDWE)")


def mdwe_works() -> bool:
    """Whether this kernel enforces PR_SET_MDWE: a W+X mapping must then fail."""
    probe = "import mmap; mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)"
    try:
        result = subprocess.run([sys.executable, "-c", probe], preexec_fn=deny_write_execute, capture_output=True)
    except subprocess.SubprocessError:  # prctl refused: the kernel predates MDWE (6.3)
        return False
    return result.returncode != 0 and b"PermissionError" in result.stderr


class Service:
    """The unit's ExecStart, started the way systemd would, minus systemd."""

    def __init__(self, log: Path):
        self.settings = unit_settings()
        self.user = pwd.getpwnam(self.settings["User"])
        self.log = log
        self.process: subprocess.Popen | None = None
        self.notify: socket.socket | None = None

    def start(self) -> None:
        settings = self.settings
        assert settings["Type"] == "notify" and settings["NoNewPrivileges"] == "yes"
        assert settings["CapabilityBoundingSet"] == "", "the unit grants capabilities"
        mdwe = settings.get("MemoryDenyWriteExecute") == "yes"
        if mdwe and not mdwe_works():
            print("installed_check: this kernel has no PR_SET_MDWE; MemoryDenyWriteExecute untested")
            mdwe = False
        notify_dir = Path("/run/deb-test-notify")
        notify_dir.mkdir(mode=0o755, exist_ok=True)
        notify_path = notify_dir / "notify.sock"
        notify_path.unlink(missing_ok=True)
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(str(notify_path))
        os.chmod(notify_path, 0o666)
        self.notify = notify  # open until the service exits, as systemd keeps it
        command = [
            "setpriv", f"--reuid={self.user.pw_uid}", f"--regid={self.user.pw_gid}", "--init-groups",
            "--no-new-privs", "--bounding-set=-all", "--inh-caps=-all", "--",
            *shlex.split(settings["ExecStart"]),
        ]
        env = {
            "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": self.user.pw_dir,
            "NOTIFY_SOCKET": str(notify_path),
        }
        print(f"installed_check: starting {settings['ExecStart']} as {self.user.pw_name}"
              + (" under MDWE" if mdwe else ""))
        started = time.monotonic()
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(
                command, cwd=settings["WorkingDirectory"], env=env, stdout=out, stderr=out,
                preexec_fn=deny_write_execute if mdwe else None,
            )
        timeout = float(settings.get("TimeoutStartSec", "90s").rstrip("s"))
        notify.settimeout(0.5)
        while True:
            if self.process.poll() is not None:
                fail(f"the service exited with {self.process.returncode} before READY=1", self.log)
            if time.monotonic() - started > timeout:
                self.stop()
                fail(f"no READY=1 within {timeout:.0f} s", self.log)
            try:
                message = notify.recv(4096)
            except socket.timeout:
                continue
            if b"READY=1" in message.split(b"\n"):
                break
        print(f"installed_check: READY=1 after {time.monotonic() - started:.1f} s")
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        uids = next(line.split()[1:] for line in status.splitlines() if line.startswith("Uid:"))
        if set(uids) != {str(self.user.pw_uid)}:
            fail(f"the service runs with uids {uids}, not {self.user.pw_name}'s", self.log)
        print(f"installed_check: pid {self.process.pid} runs as {self.user.pw_name} (uid {uids[0]})")

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            fail("the service did not stop within 30 s of SIGTERM", self.log)
        self.notify.setblocking(False)
        messages = []
        while True:
            try:
                messages += self.notify.recv(4096).split(b"\n")
            except BlockingIOError:
                break
        self.notify.close()
        if code == 0 and b"STOPPING=1" not in messages:
            fail("the service stopped without telling systemd (STOPPING=1)", self.log)
        return code


def request(url: str, method="GET", body=None, token=None, context=None) -> tuple[int, bytes]:
    headers = {"Content-Type": "application/json"} if body is not None else {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, context=context, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def create_body(app_id: str, device: str) -> dict:
    return {
        "app_id": app_id,
        "device_id": device,
        "account": {
            "aor": "sip:alice@example.com",
            "auth_username": "alice",
            "password": PASSWORD,
            "registrar": "sip:example.com;transport=tcp",
        },
        "push": [{
            "provider": "webpush", "usage": "call",
            "endpoint": "https://push.example.net/wpush/v2/deb-test-endpoint-0123456789",
            "p256dh": "BNcRdreALRFXTkOOUHK1EtK2wtaz5Ry4YfYCA_0QTpQtUbVlUls0VJXg7A8u-Ts1XbjhazAkj7I99e8QcYP7DkM",
            "auth": "tBHItJI5svbpez7KI4CCXg",
        }],
    }


def exercise(mode: str, state_file: Path, metrics_required: bool) -> None:
    config = tomllib.loads(CONFIG.read_text())
    api_port = config.get("device_api", {}).get("port", 8443)
    admin_port = config.get("admin", {}).get("port", 9464)
    app = config["apps"][0]
    api_key = Path(app["api_key_files"][0]).read_text().strip()
    cert = Path(config["state_dir"]) / "tls" / "self-signed.crt"
    log = Path("/tmp/deb-test-service.log")
    log.unlink(missing_ok=True)

    service = Service(log)
    service.start()
    context = ssl.create_default_context(cafile=str(cert))  # exactly the gateway's certificate
    api = f"https://127.0.0.1:{api_port}/v1/instances"
    if mode == "find":
        saved = json.loads(state_file.read_text())
        status, body = request(f"{api}/{saved['id']}", token=saved["secret"], context=context)
        if status != 200:
            service.stop()
            fail(f"the instance created before the upgrade answers {status}: {body[:200]!r}", log)
        print(f"installed_check: instance {saved['id']} kept: {json.loads(body)['state']}")
    status, body = request(api, "POST", create_body(app["id"], f"deb-test-{mode}"), api_key, context)
    if status != 201:
        service.stop()
        fail(f"POST /v1/instances answered {status}: {body[:300]!r}", log)
    created = json.loads(body)
    print(f"installed_check: created instance {created['id']} through the API")
    if mode == "create":
        state_file.write_text(json.dumps({"id": created["id"], "secret": created["secret"]}))

    try:
        status, body = request(f"http://127.0.0.1:{admin_port}/metrics")
    except OSError as exc:
        status, body = None, str(exc).encode()
    build_info = [line for line in body.decode(errors="replace").splitlines()
                  if line.startswith("sippush_build_info{")]
    if status == 200 and build_info:
        # The running service must use the extensions compiled into the package.
        if 'accelerated="true"' not in build_info[0] and metrics_required:
            service.stop()
            fail(f"the service runs without its Cython extensions: {build_info[0]}", log)
        print(f"installed_check: /metrics answers ({len(body)} bytes): {build_info[0]}")
    elif metrics_required:
        service.stop()
        fail(f"/metrics: {status} {body[:200]!r}", log)
    else:
        print(f"installed_check: no /metrics in this older package ({status})")

    code = service.stop()
    if code != 0:
        fail(f"the service exited with {code} after SIGTERM", log)
    text = log.read_text(errors="replace")
    for secret in (PASSWORD, api_key, created["secret"]):
        if secret in text:
            fail("a password, API key or secret is in the service's log", log)
    print("installed_check: stopped cleanly (exit 0); no secret in its log")


if __name__ == "__main__":
    args = sys.argv[1:]
    old = "--old" in args
    args = [a for a in args if a != "--old"]
    if len(args) != 2 or args[0] not in ("create", "find"):
        raise SystemExit("usage: installed_check.py create|find STATE.json [--old]")
    exercise(args[0], Path(args[1]), metrics_required=not old)
