# cython: language_level=3
"""Compiled twin of `gateway/sip/wirekey.py`: a request's server transaction key read
straight from its datagram's bytes, or None whenever it is not the usual shape. The
rules are the twin's, character for character; see its docstring.

Depends on nothing.
"""

from libc.string cimport memcmp

cdef bint TOKEN[256]
cdef bint HOST[256]
cdef bint HEX6[256]
cdef bint VALUE[256]
cdef int _c
for _c in range(256):
    TOKEN[_c] = (48 <= _c <= 57) or (65 <= _c <= 90) or (97 <= _c <= 122) or chr(_c) in "-.!%*_+`'~"
    HOST[_c] = (48 <= _c <= 57) or (65 <= _c <= 90) or (97 <= _c <= 122) or chr(_c) in "-._"
    HEX6[_c] = (48 <= _c <= 57) or (65 <= _c <= 70) or (97 <= _c <= 102) or chr(_c) in ":."
    VALUE[_c] = chr(_c) not in ' \t;,"'


cdef inline Py_ssize_t ws(const unsigned char* s, Py_ssize_t n, Py_ssize_t i):
    while i < n and (s[i] == 32 or s[i] == 9):
        i += 1
    return i


cdef inline Py_ssize_t token(const unsigned char* s, Py_ssize_t n, Py_ssize_t i):
    while i < n and TOKEN[s[i]]:
        i += 1
    return i


cdef inline unsigned char lower(unsigned char c):
    return c + 32 if 65 <= c <= 90 else c


def request_key(bytes data):
    """(the server transaction key, the method) of the request in `data`, or None."""
    cdef const unsigned char* s = data
    cdef Py_ssize_t n = len(data), sp = 0, pos, end, colon, name_end
    while sp < n and sp < 32 and s[sp] != 32:
        if not (65 <= s[sp] <= 90):
            return None
        sp += 1
    if sp == 0 or sp >= n or sp >= 32:
        return None
    pos = sp
    while pos + 1 < n and not (s[pos] == 13 and s[pos + 1] == 10):
        pos += 1
    if pos + 1 >= n or pos - sp < 8 or memcmp(s + pos - 8, b" SIP/2.0", 8) != 0:
        return None
    pos += 2
    while True:
        end = pos
        while end + 1 < n and not (s[end] == 13 and s[end + 1] == 10):
            end += 1
        if end + 1 >= n or end == pos:  # no line end at all, or the empty line
            return None
        colon = pos
        while colon < end and s[colon] != 58:
            colon += 1
        if pos < colon < end:
            name_end = colon
            while name_end > pos and (s[name_end - 1] == 32 or s[name_end - 1] == 9):
                name_end -= 1
            if ((name_end - pos == 3 and lower(s[pos]) == 118 and lower(s[pos + 1]) == 105
                 and lower(s[pos + 2]) == 97)
                    or (name_end - pos == 1 and lower(s[pos]) == 118)):
                if end + 2 < n and (s[end + 2] == 32 or s[end + 2] == 9):
                    return None  # the value goes on in a folded line
                return _key(s, colon + 1, end, data[:sp])
        pos = end + 2


cdef object _key(const unsigned char* s, Py_ssize_t i, Py_ssize_t n, bytes method):
    cdef Py_ssize_t k, j, host_start, host_end, name_start, name_end
    cdef Py_ssize_t branch_start = -1, branch_end = -1, value_start, value_end
    cdef long port = -1
    cdef bint have_branch = False
    for k in range(i, n):
        if s[k] == 34 or s[k] == 60:  # a quote or "<"
            return None
    # sent-protocol: token SWS "/" SWS token SWS "/" SWS token, then LWS
    i = ws(s, n, i)
    for k in range(3):
        j = token(s, n, i)
        if j == i:
            return None
        i = j
        if k < 2:
            i = ws(s, n, i)
            if i >= n or s[i] != 47:
                return None
            i = ws(s, n, i + 1)
    j = ws(s, n, i)
    if j == i:
        return None
    i = j
    # sent-by
    host_start = i
    if i < n and s[i] == 91:  # "[" IPv6 "]"
        j = i + 1
        while j < n and HEX6[s[j]]:
            j += 1
        if j - i - 1 < 2 or j >= n or s[j] != 93:
            return None
        i = j + 1
    else:
        while i < n and HOST[s[i]]:
            i += 1
        if i == host_start:
            return None
    host_end = i
    if i < n and s[i] == 58:  # ":" port
        j = i + 1
        port = 0
        while j < n and 48 <= s[j] <= 57 and j - i <= 5:
            port = port * 10 + (s[j] - 48)
            j += 1
        if j == i + 1 or j - i - 1 > 5:
            return None
        i = j
    if i >= n or s[i] != 59:
        return None
    # parameters: SWS ";" SWS name [ SWS "=" SWS value ], the first "branch" wins
    while True:
        j = ws(s, n, i)
        if j >= n or s[j] != 59:
            break
        j = ws(s, n, j + 1)
        name_start = j
        j = token(s, n, j)
        if j == name_start:
            break
        name_end = j
        k = ws(s, n, j)
        value_start = -1
        value_end = -1
        if k < n and s[k] == 61:  # "="
            k = ws(s, n, k + 1)
            value_start = k
            while k < n and VALUE[s[k]]:
                k += 1
            if k > value_start:
                value_end = k
                j = k
            else:
                value_start = -1
        if j < n and not (s[j] == 32 or s[j] == 9 or s[j] == 59 or s[j] == 44):
            return None
        if (not have_branch and name_end - name_start == 6
                and lower(s[name_start]) == 98 and lower(s[name_start + 1]) == 114
                and lower(s[name_start + 2]) == 97 and lower(s[name_start + 3]) == 110
                and lower(s[name_start + 4]) == 99 and lower(s[name_start + 5]) == 104):
            have_branch = True
            if value_start < 0:
                return None  # a bare `branch` flag
            branch_start, branch_end = value_start, value_end
        i = j
    i = ws(s, n, i)
    if i < n and s[i] != 44:  # anything but the next element's ","
        return None
    if not have_branch or branch_end - branch_start < 7 or memcmp(s + branch_start, b"z9hG4bK", 7) != 0:
        return None
    if port > 65535:
        return None
    text = method.decode("ascii")
    branch = (<bytes>s[branch_start:branch_end]).decode("utf-8", "surrogateescape")
    host = (<bytes>s[host_start:host_end]).decode("ascii").lower()
    key = (branch, host, None if port < 0 else port, "INVITE" if text == "ACK" else text)
    return key, text
