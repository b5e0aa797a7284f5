"""Parametrise a test over both twins of an accelerated module.

    parser = twins("_sipparse", "sip.parser")     # then use the `parser` fixture/param

The compiled twin must be present unless GATEWAY_NO_EXTENSIONS=1: a missing build is a
failure, not a skip, so CI cannot silently test only the Python twin.
"""

import importlib
import os

import pytest


def load_both(extension: str, twin: str):
    """Return pytest params [py, c] with the two modules."""
    params = [pytest.param(importlib.import_module(f"gateway.{twin}"), id="py")]
    if os.environ.get("GATEWAY_NO_EXTENSIONS") != "1":
        try:
            compiled = importlib.import_module(f"gateway.{extension}")
        except ImportError as exc:  # pragma: no cover - a broken build
            raise RuntimeError(
                f"gateway.{extension} is not built; run `make build` "
                "or set GATEWAY_NO_EXTENSIONS=1"
            ) from exc
        params.append(pytest.param(compiled, id="c"))
    return params
