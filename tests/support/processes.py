"""What the launchers of real peers (Kamailio, Prometheus, SIPp, Node.js) share: finding
their program (or skipping the test), reading the end of a log file and stopping a
process that runs in its own session."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest


def need_program(binary: str | None, message: str) -> str:
    """`binary` when it was found; else skip the calling test with `message`, or fail
    it on CI, where every peer must be installed."""
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return binary


def log_tail(path: Path, size: int = 4000) -> str:
    try:
        return Path(path).read_bytes()[-size:].decode("utf-8", "replace")
    except OSError:
        return ""


def stop_group(process: subprocess.Popen | None, grace: float = 5.0) -> None:
    """SIGTERM to the process group a `start_new_session` child leads, SIGKILL if it
    lingers past `grace`, then SIGKILL to any child that outlived it."""
    if process is None or process.poll() is not None:
        return
    pgid = process.pid  # start_new_session: the group id is our child's pid
    try:
        os.killpg(pgid, signal.SIGTERM)
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        os.killpg(pgid, signal.SIGKILL)
        process.wait(timeout=5)
    except ProcessLookupError:
        pass
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass
