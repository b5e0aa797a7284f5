# cython: language_level=3
"""Decoding RFC 7541 5.2 Huffman-coded strings, compiled: `decode_huffman(data) -> bytes`.

The compiled twin of `gateway/push/huffman.py` (same results, same errors): the code is
laid out once as a binary tree in a C array and a string is walked a bit at a time, so
an APNs answer's `apns-id` (27 coded bytes) costs well under a microsecond instead of a
Python loop over its bytes. Padding must be under 8 bits, all ones; the EOS symbol
inside a string is an error (hpack's HPACKDecodingError).

Depends on hpack (the Huffman code and its error) only.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.stdlib cimport free, malloc

from hpack import HPACKDecodingError
from hpack.huffman_constants import REQUEST_CODES, REQUEST_CODES_LENGTH

cdef enum:
    EOS = 256
    NODES = 512  # a complete binary code of 257 symbols has 256 inner nodes

# _tree[node][bit]: > 0 the next inner node, < 0 -(symbol + 1), 0 no such code
cdef int _tree[NODES][2]


cdef void _build() except *:
    cdef int used = 1, node, bit, symbol, length, shift
    cdef unsigned int code
    for node in range(NODES):
        _tree[node][0] = 0
        _tree[node][1] = 0
    for symbol in range(EOS + 1):
        code = REQUEST_CODES[symbol]
        length = REQUEST_CODES_LENGTH[symbol]
        node = 0
        for shift in range(length - 1, 0, -1):
            bit = (code >> shift) & 1
            if _tree[node][bit] == 0:
                _tree[node][bit] = used
                used += 1
            node = _tree[node][bit]
        _tree[node][code & 1] = -(symbol + 1)


_build()


def decode_huffman(bytes data):
    """RFC 7541 5.2: a Huffman-coded string; padding must be under 8 bits of 1s."""
    cdef Py_ssize_t n = PyBytes_GET_SIZE(data), i, count = 0
    cdef const unsigned char *src = <const unsigned char *> PyBytes_AS_STRING(data)
    cdef int node = 0, pending = 0, ones = 1, bit, shift, next_
    cdef unsigned char byte
    # the shortest code is 5 bits: at most 8/5 of the input's length
    cdef char *out = <char *> malloc(n * 8 // 5 + 1)
    if out == NULL:
        raise MemoryError()
    try:
        for i in range(n):
            byte = src[i]
            for shift in range(7, -1, -1):
                bit = (byte >> shift) & 1
                next_ = _tree[node][bit]
                if next_ < 0:
                    if next_ == -(EOS + 1):
                        raise HPACKDecodingError("EOS in a Huffman-coded string")
                    out[count] = <char> (-next_ - 1)
                    count += 1
                    node = 0
                    pending = 0
                    ones = 1
                else:
                    node = next_
                    pending += 1
                    ones &= bit
        if pending > 7 or not ones:
            raise HPACKDecodingError("bad padding of a Huffman-coded string")
        return PyBytes_FromStringAndSize(out, count)
    finally:
        free(out)
