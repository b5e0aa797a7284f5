# cython: language_level=3
# The compiled cycle's client state (`_ext/regcycle.pyx`, built as `gateway._regcycle`):
# its fields, for the compiled REGISTER wire to read and write them directly; and what
# the cycle asks of that wire, as a C call.

from gateway._udpsock cimport DatagramTaker

cdef enum:
    IDS_BYTES = 18  # a client's Call-ID (12 bytes) and From tag (6), as the twin's


cdef class ClientState:
    # (texts typed `str`, numbers and flags C ones: read without a conversion, and the
    # collector need not look into them, 100,000 times over)
    cdef public str key, _token, instance_urn, aor, state, last_error
    cdef public long expires, cseq, failures
    cdef public bint active, bound_maybe
    cdef public object ctx, target, outbound_proxy, digest, flow, granted, _timer
    cdef public object _task
    # the twin's `_ids` (an int: 96 bits of Call-ID, then 48 of From tag) kept as its
    # 18 big-endian bytes in the struct: no int object beside it (48 bytes and a
    # pointer) to be read, turned into bytes, for every REGISTER
    cdef unsigned char ids[IDS_BYTES]


# `done(client, flow, outcome, started)`, the end of an exchange the cycle started on the
# wire, called by the compiled wire without the Python call
cdef c_done(ClientState client, flow, outcome, double started)


cdef class ExchangeStarter(DatagramTaker):
    # `wire.start(client, flow, uri, head, middle, tail, expires, challenges_left, done)`
    # without the method look-up and the Python call: the compiled wire is one
    cdef object c_start(self, ClientState client, flow, uri, bytes head, bytes middle,
                        bytes tail, long expires, int challenges_left)
