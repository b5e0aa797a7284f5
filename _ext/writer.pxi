# Included by the compiled wire modules (`include "writer.pxi"`), which cimport memcpy
# and PyBytes_FromStringAndSize first: a buffer that requests and header lines are
# written into from C, taken as one bytes object.

cdef extern from "Python.h":
    const char *PyUnicode_AsUTF8AndSize(object text, Py_ssize_t *size) except NULL

cdef const char *_HEXDIGITS = b"0123456789abcdef"


cdef class _Writer:
    """Bytes written into a buffer, taken as one bytes object (grows as needed). One
    per module, reused: nothing written runs Python code that could write too, and
    `start()` forgets what a text that could not be encoded left."""
    cdef bytearray buf
    cdef Py_ssize_t size

    def __cinit__(self):
        self.buf = bytearray(512)
        self.size = 0

    cdef inline void start(self):
        self.size = 0

    cdef inline char *data(self):
        return <char *>self.buf

    cdef void add(self, const char *data, Py_ssize_t n) except *:
        cdef char *base = <char *>self.buf
        cdef Py_ssize_t capacity = len(self.buf), offset
        if self.size + n > capacity:
            # (growing moves the buffer: what is copied may be in it)
            offset = data - base if base <= data < base + capacity else -1
            self.buf.extend(bytes(self.size + n + 256 - capacity))
            if offset >= 0:
                data = <char *>self.buf + offset
        memcpy(<char *>self.buf + self.size, data, n)
        self.size += n

    cdef inline void raw(self, bytes data) except *:
        self.add(<const char *>data, len(data))

    cdef void text(self, str value) except *:
        """`value` as UTF-8 (UnicodeEncodeError as `str.encode` raises it)."""
        cdef Py_ssize_t n
        cdef const char *data = PyUnicode_AsUTF8AndSize(value, &n)
        self.add(data, n)

    cdef void quoted(self, str value) except *:
        """`"value"` with backslashes and double quotes escaped (`digest._quote`)."""
        cdef Py_ssize_t n, i, run = 0
        cdef const char *data = PyUnicode_AsUTF8AndSize(value, &n)
        self.add(b'"', 1)
        for i in range(n):
            if data[i] == b'"' or data[i] == b'\\':
                self.add(data + run, i - run)
                self.add(b"\\", 1)
                run = i
        self.add(data + run, n - run)
        self.add(b'"', 1)

    cdef void hexed(self, const unsigned char *data, Py_ssize_t n) except *:
        """`data` as lower-case hex digits."""
        cdef char out[128]
        cdef Py_ssize_t i
        while n > 64:
            self.hexed(data, 64)
            data += 64
            n -= 64
        for i in range(n):
            out[2 * i] = _HEXDIGITS[data[i] >> 4]
            out[2 * i + 1] = _HEXDIGITS[data[i] & 15]
        self.add(out, 2 * n)

    cdef void number(self, long value, int base=10, int least=1) except *:
        """`value` in decimal (or hex with base 16), at least `least` digits."""
        cdef char out[72]
        cdef int i = 72
        cdef bint negative = value < 0
        cdef unsigned long rest = <unsigned long>(-value if negative else value)
        while True:
            i -= 1
            out[i] = _HEXDIGITS[rest % base]
            rest //= base
            if rest == 0 and 72 - i >= least:
                break
        if negative:
            i -= 1
            out[i] = b'-'
        self.add(out + i, 72 - i)

    cdef bytes take(self):
        cdef bytes out = PyBytes_FromStringAndSize(<char *>self.buf, self.size)
        self.size = 0
        return out
