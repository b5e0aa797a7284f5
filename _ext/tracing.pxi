# Included by the compiled wire modules (`include "tracing.pxi"`), which cimport
# PyDict_GetItem and PyObject and import `trace` (gateway.sip.flow) and logging first.

cdef int DEBUG = logging.DEBUG
cdef object _DEBUG = DEBUG  # (the cache's key, made once)
# the SIP trace logger's answers by level: logging clears this dict (never replaces it)
# whenever a level changes, so a False found here is what `isEnabledFor` would say
cdef object _TRACE_CACHE = getattr(trace, "_cache", None)

cdef extern from *:
    """
    /* A dict's version (CPython < 3.12: changed by every insertion, deletion and
       clear), or 0 where there is none to trust. */
    #if PY_VERSION_HEX < 0x030C0000
    #define __gw_dict_version(d) (((PyDictObject *)(d))->ma_version_tag)
    #else
    #define __gw_dict_version(d) 0
    #endif
    """
    unsigned long long __gw_dict_version(object d)

# the cache's version when it last said False for DEBUG (0: not known): while the dict
# has not changed since, the answer stands without a look-up
cdef unsigned long long _trace_off_version = 0


cdef inline bint _tracing() except -1:
    """`trace.isEnabledFor(logging.DEBUG)`, without a Python call when logging has the
    answer cached as False (every datagram asks), and without a look-up while that
    cache has not changed since."""
    global _trace_off_version
    cdef PyObject *cached
    cdef unsigned long long version
    if type(_TRACE_CACHE) is dict:
        version = __gw_dict_version(_TRACE_CACHE)
        if version != 0 and version == _trace_off_version:
            return False
        cached = PyDict_GetItem(_TRACE_CACHE, _DEBUG)
        if cached != NULL and <object>cached is False:
            _trace_off_version = version
            return False
    return trace.isEnabledFor(DEBUG)
