# cython: language_level=3
"""The digest client of one account, compiled: the twin of `DigestClient` in
`gateway/sip/digest.py`, which describes it and picks this one when it is built.

The same fields (declared in `gateway/_digest.pxd`, so that the compiled REGISTER wire
reads and writes them without attribute look-ups), made without a Python frame; the
behaviour is the twin's own: its methods are the Python class's functions, run on
these fields. Depends on `gateway.sip.digest` only.
"""

from cpython.unicode cimport PyUnicode_DecodeASCII
from libc.string cimport memcpy

from gateway.sip import digest as _twin

_Python = _twin.PythonDigestClient  # (`DigestClient` there may be this one)


cdef class DigestClient:
    """See `gateway.sip.digest.DigestClient`."""

    def __init__(self, str username, password_source):
        self.username = username
        self.password_source = password_source
        self._ha1 = None
        self._ha1_key = None
        self._challenge = None
        self._nonce = ""
        self._nc = 0
        self.cnonce[0] = 0

    @property
    def _cnonce(self):
        """The twin's `_cnonce`: 16 hex digits, or "" before any nonce."""
        return PyUnicode_DecodeASCII(self.cnonce, 16, NULL) if self.cnonce[0] else ""

    @_cnonce.setter
    def _cnonce(self, str value):
        cdef bytes raw = value.encode("ascii")
        if not raw:
            self.cnonce[0] = 0
            return
        if len(raw) != 16:
            raise ValueError(f"a cnonce here is 16 characters, not {len(raw)}")
        memcpy(self.cnonce, <const char *>raw, 16)

    algorithm = _Python.algorithm
    realm = _Python.realm
    forget_nonce = _Python.forget_nonce
    challenged = _Python.challenged
    accept = _Python.accept
    authorization = _Python.authorization
