"""The one place that chooses between a Cython extension and its pure-Python twin.

Each accelerated module (`_ext/NAME.pyx`, built as `gateway._NAME`) has a pure-Python twin
with the same public names. Callers ask `load()` and never know which one they got.
GATEWAY_NO_EXTENSIONS=1 forces the twins, for tests and for debugging.
"""

import importlib
import os
from types import ModuleType

FORCE_PYTHON = os.environ.get("GATEWAY_NO_EXTENSIONS") == "1"

#: which implementation each accelerated module resolved to ("cython" or "python")
chosen: dict[str, str] = {}


def load(extension: str, twin: str) -> ModuleType:
    """Import `gateway.<extension>` unless forced off or not built, else `gateway.<twin>`."""
    if not FORCE_PYTHON:
        try:
            module = importlib.import_module(f"gateway.{extension}")
        except ImportError:
            pass
        else:
            chosen[extension] = "cython"
            return module
    chosen[extension] = "python"
    return importlib.import_module(f"gateway.{twin}")


def accelerated() -> bool:
    """True when every accelerated module loaded so far is the compiled one."""
    return bool(chosen) and all(kind == "cython" for kind in chosen.values())
