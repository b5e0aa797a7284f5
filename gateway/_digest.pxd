# cython: language_level=3
# The compiled DigestClient's fields (`_ext/digest.pyx`, built as `gateway._digest`), for
# the compiled REGISTER wire to read and write them directly.

cdef class DigestClient:
    cdef public str username
    cdef public object password_source
    cdef public bytes _ha1
    cdef public object _ha1_key
    cdef public object _challenge
    cdef public str _nonce
    cdef public long _nc
    # the cnonce drawn with the nonce: 16 hex digits (NUL first when none; `_cnonce` from
    # Python), kept in the struct rather than as a string object beside it
    cdef char cnonce[16]
