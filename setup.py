"""Builds the Cython hot paths in _ext/ as modules of the gateway package.

Every `_ext/NAME.pyx` becomes `gateway._NAME`. Metadata lives in pyproject.toml.
GATEWAY_DEBUG_BUILD=1 turns on bounds checks and line tracing; GATEWAY_NO_EXTENSIONS=1
builds nothing (the pure-Python twins are used).
"""
import os
from pathlib import Path

from setuptools import Extension, setup

debug = os.environ.get("GATEWAY_DEBUG_BUILD") == "1"
#: C libraries an extension links with (OpenSSL's libcrypto: libssl-dev to build)
LIBRARIES = {"regwire": ["crypto"]}


def extensions():
    if os.environ.get("GATEWAY_NO_EXTENSIONS") == "1":
        return []
    from Cython.Build import cythonize

    sources = sorted(Path("_ext").glob("*.pyx"))
    modules = [Extension(f"gateway._{src.stem}", [str(src)],
                         libraries=LIBRARIES.get(src.stem, [])) for src in sources]
    directives = {"language_level": "3", "boundscheck": debug, "wraparound": debug}
    if debug:
        directives["linetrace"] = True
    # (include_path: `gateway/*.pxd`, the C layouts one module cimports from another)
    return cythonize(modules, compiler_directives=directives, quiet=True, include_path=["."])


setup(ext_modules=extensions())
