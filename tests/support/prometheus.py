"""Starts a real Prometheus (Debian package `prometheus`) on loopback for tests.

    prom = Prometheus(tmp_path, targets=["127.0.0.1:9464"], interval=0.25)
    prom.start()                      # returns once its HTTP API answers
    await prom.query('up{job="gateway"}')   # the result vector of a PromQL query
    prom.stop()

The generated config scrapes the targets (job "gateway", path /metrics) every `interval`
seconds; its database lives in a temporary directory under the work dir. Prometheus runs
in its own session; `stop()` ends that process only (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import aiohttp

from tests.support.processes import log_tail, stop_group
from tests.support.ports import free_port


def prometheus_binary() -> str | None:
    return shutil.which("prometheus") or next(
        (p for p in ("/usr/bin/prometheus", "/usr/local/bin/prometheus") if os.path.exists(p)), None)




class Prometheus:
    def __init__(self, workdir: Path, targets: list[str], interval: float = 0.25, job: str = "gateway"):
        binary = prometheus_binary()
        if binary is None:
            raise RuntimeError("prometheus is not installed: apt-get install prometheus "
                               "(listed in tests/apt-packages.txt)")
        self.binary = binary
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.targets = targets
        self.interval = interval
        self.job = job
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_file = self.workdir / "prometheus.log"
        self.process: subprocess.Popen | None = None

    def write_config(self) -> Path:
        ms = max(50, int(self.interval * 1000))
        targets = ", ".join(f"'{t}'" for t in self.targets)
        path = self.workdir / "prometheus.yml"
        path.write_text(
            "global:\n"
            f"  scrape_interval: {ms}ms\n"
            f"  scrape_timeout: {ms}ms\n"
            f"  evaluation_interval: {ms}ms\n"
            "scrape_configs:\n"
            f"  - job_name: {self.job}\n"
            "    metrics_path: /metrics\n"
            "    static_configs:\n"
            f"      - targets: [{targets}]\n"
        )
        return path

    def start(self, timeout: float = 30.0) -> "Prometheus":
        config = self.write_config()
        command = [self.binary, f"--config.file={config}", f"--storage.tsdb.path={self.workdir / 'data'}",
                   f"--web.listen-address=127.0.0.1:{self.port}", "--storage.tsdb.retention.time=1h",
                   "--log.level=warn"]
        with open(self.log_file, "wb") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"prometheus exited with {self.process.returncode}:\n{self.log_tail()}")
            if self._ready():
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"prometheus not ready within {timeout}s:\n{self.log_tail()}")

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as resp:
                return resp.status == 200
        except (urllib.error.URLError, OSError):
            return False

    async def query(self, promql: str) -> list[dict]:
        """The result of an instant query (a vector: [{"metric": {...}, "value": [t, "v"]}])."""
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{self.url}/api/v1/query", params={"query": promql},
                                   timeout=aiohttp.ClientTimeout(total=5)) as resp:
                body = await resp.json()
        if body.get("status") != "success":
            raise AssertionError(f"query {promql!r} failed: {json.dumps(body)[:500]}")
        return body["data"]["result"]

    def log_tail(self, size: int = 4000) -> str:
        return log_tail(self.log_file, size)

    def stop(self) -> None:
        process, self.process = self.process, None
        stop_group(process, grace=10.0)

    def __enter__(self) -> "Prometheus":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
