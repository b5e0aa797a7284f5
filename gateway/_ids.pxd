# cython: language_level=3
# The compiled pool of random bytes (`_ext/ids.pyx`, built as `gateway._ids`), for the
# compiled SIP modules to draw from in C (branches, Call-IDs, tags, cnonces).

# n random bytes (1 to 4096) into out, each byte handed out once
cdef int draw(unsigned char *out, Py_ssize_t n) except -1
# n random bytes as 2n lower-case hex digits into out
cdef int draw_hex(char *out, Py_ssize_t n) except -1
