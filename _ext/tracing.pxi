# Included by the compiled wire modules (`include "tracing.pxi"`), which cimport
# PyDict_GetItem and PyObject and import `trace` (gateway.sip.flow) and logging first.

cdef int DEBUG = logging.DEBUG
cdef object _DEBUG = DEBUG  # (the cache's key, made once)
# the SIP trace logger's answers by level: logging clears this dict (never replaces it)
# whenever a level changes, so a False found here is what `isEnabledFor` would say
cdef object _TRACE_CACHE = getattr(trace, "_cache", None)


cdef inline bint _tracing() except -1:
    """`trace.isEnabledFor(logging.DEBUG)`, without a Python call when logging has the
    answer cached as False (every datagram asks)."""
    cdef PyObject *cached
    if type(_TRACE_CACHE) is dict:
        cached = PyDict_GetItem(_TRACE_CACHE, _DEBUG)
        if cached != NULL and <object>cached is False:
            return False
    return trace.isEnabledFor(DEBUG)
