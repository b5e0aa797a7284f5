"""Run the real `sip-push-gateway run` in a subprocess, on loopback, for end-to-end tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path

from tests.support.ports import free_port




def write_config(directory: Path, *, extra: str = "", plain_http: bool = False) -> Path:
    """A config for one test: loopback ports, everything under `directory`."""
    api_port = free_port()
    config = directory / "gateway.toml"
    config.write_text(
        f"""
state_dir = "{directory}/state"
[device_api]
host = "127.0.0.1"
port = {api_port}
plain_http = {str(plain_http).lower()}
[admin]
host = "127.0.0.1"
port = {free_port()}
[sip.provider_face]
host = "127.0.0.1"
udp_port = {free_port(socket.SOCK_DGRAM)}
tcp_port = 0
tls_port = 0
[sip.device_face]
host = "127.0.0.1"
udp_port = {free_port(socket.SOCK_DGRAM)}
tcp_port = 0
tls_port = 0
[store]
path = "{directory}/state/gateway.db"
key_file = "{directory}/state/store.key"
[logging]
level = "debug"
file = "{directory}/gateway.log"
[[apps]]
id = "demo"
api_key_files = ["{directory}/state/demo.key"]
create_missing_key_files = true
[apps.webpush]
vapid_key_file = "{directory}/state/vapid.pem"
{extra}
"""
    )
    return config


class GatewayProcess:
    """`python -m gateway run` with a config; `start()` waits until the API answers."""

    def __init__(self, config: Path):
        self.config = config
        self.directory = config.parent
        self.proc: subprocess.Popen | None = None
        self.api_port = tomllib.loads(config.read_text())["device_api"]["port"]

    @property
    def log_path(self) -> Path:
        return self.directory / "gateway.log"

    @property
    def api_key(self) -> str:
        return (self.directory / "state" / "demo.key").read_text().strip()

    def start(self, timeout: float = 20.0) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        seen = len(self.log())  # the log is appended to: look only past earlier runs
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "--config", str(self.config), "run"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                output = self.proc.stdout.read().decode(errors="replace")
                raise RuntimeError(f"gateway exited with {self.proc.returncode}: {output}\n{self.log()}")
            if "gateway ready" in self.log()[seen:]:
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"gateway not ready in {timeout}s:\n{self.log()}")

    def stop(self, timeout: float = 10.0) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        code = self.proc.returncode
        self.proc.stdout.close()
        self.proc = None
        return code

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
