# cython: language_level=3
# What the compiled UDP socket (`_ext/udpsock.pyx`, built as `gateway._udpsock`) offers
# to the compiled wire modules, called from C rather than as Python methods (a send
# and a datagram taken per message).

cdef class DatagramSender:
    # `sendto(data, addr)` without the Python call (the socket is one)
    cdef int send(self, bytes data, object addr) except -1


cdef class DatagramTaker:
    # an object whose `datagram(data, addr)` method is a socket's hook: a socket given
    # that bound method as its hook calls `take` instead (the same, without the call)
    cdef bint take(self, bytes data, object addr) except -1
