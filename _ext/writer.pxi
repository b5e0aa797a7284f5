# Included by the compiled wire modules (`include "writer.pxi"`), which cimport memcpy
# and PyBytes_FromStringAndSize first: a buffer that requests and header lines are
# written into from C, taken as one bytes object.

cimport cython
from libc.string cimport strcspn

cdef extern from "Python.h":
    const char *PyUnicode_AsUTF8AndSize(object text, Py_ssize_t *size) except NULL

cdef const char *_HEXDIGITS = b"0123456789abcdef"


@cython.final
cdef class _Writer:
    """Bytes written into a buffer, taken as one bytes object (grows as needed). One
    per module, reused: nothing written runs Python code that could write too, and
    `start()` forgets what a text that could not be encoded left."""
    cdef bytearray buf
    cdef char *base            # buf's bytes, and how many: kept, as every write needs
    cdef Py_ssize_t capacity   # them (buf only moves when it grows)
    cdef Py_ssize_t size

    def __cinit__(self):
        self.buf = bytearray(512)
        self.base = <char *>self.buf
        self.capacity = len(self.buf)
        self.size = 0

    cdef inline void start(self) noexcept:
        self.size = 0

    cdef inline char *data(self) noexcept:
        return self.base

    cdef inline int add(self, const char *data, Py_ssize_t n) except -1:
        if self.size + n > self.capacity:
            self._grow(data, n)
        else:
            memcpy(self.base + self.size, data, n)
            self.size += n

    cdef int _grow(self, const char *data, Py_ssize_t n) except -1:
        """`add`, when the buffer must grow first (which moves it: what is copied may
        be in it)."""
        cdef char *base = self.base
        cdef Py_ssize_t capacity = self.capacity
        cdef Py_ssize_t offset = data - base if base <= data < base + capacity else -1
        self.buf.extend(bytes(self.size + n + 256 - capacity))
        self.base = <char *>self.buf
        self.capacity = len(self.buf)
        if offset >= 0:
            data = self.base + offset
        memcpy(self.base + self.size, data, n)
        self.size += n

    cdef inline int raw(self, bytes data) except -1:
        self.add(<const char *>data, len(data))

    cdef int text(self, str value) except -1:
        """`value` as UTF-8 (UnicodeEncodeError as `str.encode` raises it)."""
        cdef Py_ssize_t n
        cdef const char *data = PyUnicode_AsUTF8AndSize(value, &n)
        self.add(data, n)

    cdef int quoted(self, str value) except -1:
        """`"value"` with backslashes and double quotes escaped (`digest._quote`)."""
        cdef Py_ssize_t n, i = 0, run = 0
        cdef const char *data = PyUnicode_AsUTF8AndSize(value, &n)
        self.add(b'"', 1)
        while True:
            # the next quote or backslash (strcspn, many bytes a step, also stops at
            # the text's closing NUL, or at one inside it: passed over)
            i += strcspn(data + i, b'"\\')
            if i >= n:
                break
            if data[i] != 0:
                self.add(data + run, i - run)
                self.add(b"\\", 1)
                run = i
            i += 1
        self.add(data + run, n - run)
        self.add(b'"', 1)

    cdef int hexed(self, const unsigned char *data, Py_ssize_t n) except -1:
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

    cdef int number(self, long value, int base=10, int least=1) except -1:
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
        cdef bytes out = PyBytes_FromStringAndSize(self.base, self.size)
        self.size = 0
        return out
