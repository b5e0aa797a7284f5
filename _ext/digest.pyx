# cython: language_level=3
"""The digest client of one account, compiled: the twin of `DigestClient` in
`gateway/sip/digest.py`, which describes it and picks this one when it is built.

The same fields (declared in `gateway/_digest.pxd`, so that the compiled REGISTER wire
reads and writes them without attribute look-ups), made without a Python frame; the
behaviour is the twin's own: its methods are the Python class's functions, run on
these fields. Depends on `gateway.sip.digest` only.
"""

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

    algorithm = _Python.algorithm
    realm = _Python.realm
    forget_nonce = _Python.forget_nonce
    challenged = _Python.challenged
    accept = _Python.accept
    authorization = _Python.authorization
