# cython: language_level=3
"""A UDP socket read and written in batches: the compiled twin of `gateway/sip/udpsock.py`.

Built as `gateway._udpsock`, picked through `gateway._accel`. The design is described in
the Python twin's docstring; here each wake-up of the loop reads batches of up to `BATCH`
datagrams, one recvmmsg(2) each, until the socket is empty (`ROUNDS` batches at most),
and what the handlers send while a batch is handled goes out with one sendmmsg(2) at its
end, before the next read. The source address of the last datagram is kept with its
Python tuple, and the sockaddr of each destination with its tuple (the last one at hand),
so the common case (one registrar, a handful of peers) converts no address. A datagram
waiting for the end of the batch is two list entries (its bytes, its sockaddr), no
tuple; the read headers are set up once, and only the fields the kernel wrote are reset.

May depend on nothing of the gateway but its twin (it sits below the transport layer).
"""

from libc.errno cimport errno, EAGAIN, EINTR
from libc.string cimport memcmp, memcpy, memset
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.mem cimport PyMem_Free, PyMem_Malloc

import os
import socket
import sys

from gateway.sip.udpsock import numeric_sockaddr

cdef extern from "<errno.h>":
    int EWOULDBLOCK

cdef extern from "<sys/uio.h>":
    struct iovec:
        void *iov_base
        size_t iov_len

cdef extern from "<sys/socket.h>":
    ctypedef unsigned int socklen_t
    ctypedef unsigned short sa_family_t
    struct sockaddr:
        sa_family_t sa_family
    struct sockaddr_storage:
        sa_family_t ss_family
    struct msghdr:
        void *msg_name
        socklen_t msg_namelen
        iovec *msg_iov
        size_t msg_iovlen
        void *msg_control
        size_t msg_controllen
        int msg_flags
    struct mmsghdr:
        msghdr msg_hdr
        unsigned int msg_len
    struct cmsghdr:
        size_t cmsg_len
        int cmsg_level
        int cmsg_type
    cmsghdr *CMSG_FIRSTHDR(msghdr *msg)
    cmsghdr *CMSG_NXTHDR(msghdr *msg, cmsghdr *cmsg)
    unsigned char *CMSG_DATA(cmsghdr *cmsg)
    int SOL_SOCKET
    int recvmmsg(int fd, mmsghdr *msgvec, unsigned int vlen, int flags, void *timeout)
    int sendmmsg(int fd, mmsghdr *msgvec, unsigned int vlen, int flags)
    int MSG_DONTWAIT
    int MSG_TRUNC

cdef extern from "<time.h>":
    struct timespec:
        long tv_sec
        long tv_nsec

cdef extern from "<netinet/in.h>":
    int AF_INET
    int AF_INET6
    struct in_addr:
        pass
    struct in6_addr:
        pass
    struct sockaddr_in:
        sa_family_t sin_family
        unsigned short sin_port
        in_addr sin_addr
    struct sockaddr_in6:
        sa_family_t sin6_family
        unsigned short sin6_port
        unsigned int sin6_flowinfo
        in6_addr sin6_addr
        unsigned int sin6_scope_id
    unsigned short ntohs(unsigned short)
    unsigned int ntohl(unsigned int)

cdef extern from "<arpa/inet.h>":
    const char *inet_ntop(int af, const void *src, char *dst, socklen_t size)

# datagrams read per wake-up (and the most sent with one call), and the room for each:
# 4 MiB of address space per socket, of which the kernel backs only the pages datagrams
# were written to (a page or so each for SIP)
cdef enum:
    NBATCH = 64
    # batches read per wake-up at most: the registrar's answers that arrive while one
    # batch is handled are read at once, not after a turn through epoll_wait (the
    # registration bench's 20,000 registrations: 7,400 turns instead of 24,000, about
    # 1 to 3 us less CPU each); then the loop's other callbacks get their turn
    NROUNDS = 8
    BUFSIZE = 65536
    STAMP_SPACE = 64  # >= CMSG_SPACE(sizeof(struct timespec))
    SO_TIMESTAMPNS = 35  # linux/asm-generic/socket.h (also SCM_TIMESTAMPNS)

BATCH = NBATCH
ROUNDS = NROUNDS


cdef class DatagramSender:
    """What sends datagrams from C (`gateway/_udpsock.pxd`)."""

    cdef int send(self, bytes data, object addr) except -1:
        raise NotImplementedError


cdef class DatagramTaker:
    """What takes datagrams from C as a socket's hook (`gateway/_udpsock.pxd`): its
    `datagram(data, addr)` is the hook, `take` the same from C (here: that method, for
    a subclass that only defines it)."""

    cdef bint take(self, bytes data, object addr) except -1:
        return bool(self.datagram(data, addr))


cdef class BatchedDatagramSocket(DatagramSender):
    """One bound, non-blocking UDP socket on the loop; see the Python twin."""

    cdef readonly object sock, loop
    cdef public object receive, error
    cdef object _hook
    cdef DatagramTaker _taker  # when the hook is a taker's `datagram`: called as `take`
    cdef int fd
    cdef readonly double received_at
    cdef bint _batching, _writing, _flushing, _closed, _stamping
    # waiting for the end of the batch: the datagrams and their sockaddrs, in order
    cdef list _queue, _queue_raw
    cdef dict _names  # addr tuple -> sockaddr bytes
    cdef object _send_addr  # the last destination (as given) and its sockaddr
    cdef bytes _send_raw
    cdef int _rused  # read headers the last recvmmsg wrote (to reset before the next)
    cdef bytes _last_raw
    cdef object _last_addr
    cdef char *_buffers
    cdef mmsghdr _rmsgs[NBATCH]
    cdef iovec _riov[NBATCH]
    cdef sockaddr_storage _rnames[NBATCH]
    cdef char _rstamps[NBATCH][STAMP_SPACE]
    cdef mmsghdr _smsgs[NBATCH]
    cdef iovec _siov[NBATCH]

    def __cinit__(self):
        self._buffers = NULL

    def __init__(self, sock, receive, error, loop):
        """`receive(data, addr)` takes each datagram `hook(data, addr)` (when set) did
        not; `error(exc)` hears of failed reads and sends (ICMP errors and the like)."""
        cdef int i
        self.sock = sock
        self.loop = loop
        self.fd = sock.fileno()
        self._hook = None
        self.receive = receive
        self.error = error
        self._queue = []
        self._queue_raw = []
        self._names = {}
        self._last_raw = b""
        self._send_addr = None
        self._send_raw = b""
        sock.setblocking(False)
        self._buffers = <char *>PyMem_Malloc(NBATCH * BUFSIZE)
        if self._buffers == NULL:
            raise MemoryError()
        for i in range(NBATCH):
            self._riov[i].iov_base = self._buffers + i * BUFSIZE
            self._riov[i].iov_len = BUFSIZE
        self._rused = NBATCH
        self._reset_headers()
        loop.add_reader(self.fd, self._readable)

    def __dealloc__(self):
        if self._buffers != NULL:
            PyMem_Free(self._buffers)
            self._buffers = NULL

    @property
    def hook(self):
        return self._hook

    @hook.setter
    def hook(self, value):
        owner = getattr(value, "__self__", None)
        self._taker = owner if isinstance(owner, DatagramTaker) and value == owner.datagram \
            else None
        self._hook = value

    def get_extra_info(self, name, default=None):
        if name == "socket":
            return self.sock
        if name == "sockname":
            return self.sock.getsockname()
        return default

    def stamp_arrivals(self):
        """From now on `received_at` is the kernel's arrival stamp of the datagram being
        handled (see the Python twin)."""
        self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self._stamping = True
        self._rused = NBATCH  # (every header gets its control room before the next read;
        # not now: a handler may ask while the batch's headers are still being read)

    def is_closing(self):
        return self._closed

    def close(self):
        if self._closed:
            return
        self._flush()
        self._closed = True
        self.loop.remove_reader(self.fd)
        if self._writing:
            self.loop.remove_writer(self.fd)
        self._queue = []
        self._queue_raw = []
        self.sock.close()

    # -- reading ----------------------------------------------------------------------

    def _readable(self):
        cdef int n, i, reads
        if self._closed:
            return
        self._batching = True
        try:
            for reads in range(NROUNDS):
                if self._closed:
                    break
                self._reset_headers()
                n = recvmmsg(self.fd, self._rmsgs, NBATCH, MSG_DONTWAIT, NULL)
                self._rused = n if n > 0 else 0
                if n < 0:
                    if errno == EAGAIN or errno == EWOULDBLOCK:
                        break
                    if errno == EINTR:
                        continue
                    self.error(OSError(errno, os.strerror(errno)))
                    break
                for i in range(n):
                    if self._closed:
                        break
                    self._deliver(i)
                if self._queue:
                    self._flush()  # this batch's answers, before the next read
        finally:
            self._batching = False
            if self._queue:
                self._flush()

    cdef void _reset_headers(self):
        """The read headers as recvmmsg wants them, for those it wrote last (the kernel
        writes a header's name and control lengths, flags and datagram length)."""
        cdef int i
        for i in range(self._rused):
            memset(&self._rmsgs[i], 0, sizeof(mmsghdr))
            self._rmsgs[i].msg_hdr.msg_name = &self._rnames[i]
            self._rmsgs[i].msg_hdr.msg_namelen = sizeof(sockaddr_storage)
            self._rmsgs[i].msg_hdr.msg_iov = &self._riov[i]
            self._rmsgs[i].msg_hdr.msg_iovlen = 1
            if self._stamping:
                self._rmsgs[i].msg_hdr.msg_control = self._rstamps[i]
                self._rmsgs[i].msg_hdr.msg_controllen = STAMP_SPACE
        self._rused = 0

    cdef _deliver(self, int i):
        cdef unsigned int size = self._rmsgs[i].msg_len
        data = PyBytes_FromStringAndSize(<char *>self._riov[i].iov_base, size)
        addr = self._address(i)
        if self._stamping:
            self.received_at = self._arrival(i)
        cdef DatagramTaker taker = self._taker
        hook = self._hook
        try:
            if taker is not None:
                if not taker.take(data, addr):
                    self.receive(data, addr)
            elif hook is None or not hook(data, addr):
                self.receive(data, addr)
        except Exception as exc:  # as the loop does for a protocol's callback
            self.loop.call_exception_handler({
                "message": "datagram handler failed", "exception": exc, "transport": self})

    cdef double _arrival(self, int i):
        cdef msghdr *header = &self._rmsgs[i].msg_hdr
        cdef cmsghdr *part = CMSG_FIRSTHDR(header)
        cdef timespec *stamp
        while part != NULL:
            if part.cmsg_level == SOL_SOCKET and part.cmsg_type == SO_TIMESTAMPNS:
                stamp = <timespec *>CMSG_DATA(part)
                return stamp.tv_sec + stamp.tv_nsec / 1e9
            part = CMSG_NXTHDR(header, part)
        return 0.0

    cdef object _address(self, int i):
        """The source address as Python's socket module writes it (host, port[, flowinfo,
        scope_id]), the tuple of the previous datagram when it came from there too."""
        cdef socklen_t length = self._rmsgs[i].msg_hdr.msg_namelen
        cdef const char *raw = <const char *>&self._rnames[i]
        if (PyBytes_GET_SIZE(self._last_raw) == length
                and memcmp(PyBytes_AS_STRING(self._last_raw), raw, length) == 0):
            return self._last_addr
        cdef char text[64]
        cdef sockaddr_in *v4
        cdef sockaddr_in6 *v6
        family = self._rnames[i].ss_family
        if family == AF_INET:
            v4 = <sockaddr_in *>raw
            inet_ntop(AF_INET, &v4.sin_addr, text, sizeof(text))
            addr = (text.decode("ascii"), ntohs(v4.sin_port))
        elif family == AF_INET6:
            v6 = <sockaddr_in6 *>raw
            inet_ntop(AF_INET6, &v6.sin6_addr, text, sizeof(text))
            addr = (text.decode("ascii"), ntohs(v6.sin6_port), ntohl(v6.sin6_flowinfo),
                    v6.sin6_scope_id)
        else:
            addr = None
        self._last_raw = PyBytes_FromStringAndSize(raw, length)
        self._last_addr = addr
        return addr

    # -- writing ----------------------------------------------------------------------

    def sendto(self, data, addr):
        """Send one datagram to addr (an IP address and port): at once, or with the
        others of the batch being handled, or once the socket is writable again."""
        self.send(data if type(data) is bytes else bytes(data), addr)

    cdef int send(self, bytes data, object addr) except -1:
        """`sendto`, from C."""
        if self._closed:
            return 0
        cdef bytes raw
        if addr is self._send_addr:  # (the same tuple object as the last time: its sockaddr)
            raw = self._send_raw
        else:
            raw = self._names.get(addr)
            if raw is None:
                raw = self._sockaddr(addr)
            self._send_addr, self._send_raw = addr, raw
        self._queue.append(data)
        self._queue_raw.append(raw)
        if not (self._batching or self._writing or self._flushing):
            self._flush()
        return 0

    cdef bytes _sockaddr(self, addr):
        family = self.sock.family
        found = numeric_sockaddr(family, addr)
        packed = socket.inet_pton(family, found[0].partition("%")[0])
        port = found[1]
        cdef bytes raw
        if family == socket.AF_INET:
            raw = (int(socket.AF_INET).to_bytes(2, sys.byteorder) + int(port).to_bytes(2, "big")
                   + packed + bytes(8))
        else:
            raw = (int(socket.AF_INET6).to_bytes(2, sys.byteorder) + int(port).to_bytes(2, "big")
                   + int(found[2]).to_bytes(4, "big") + packed
                   + int(found[3]).to_bytes(4, sys.byteorder))
        if len(self._names) < 1024:
            self._names[addr] = raw
        return raw

    def _writable(self):
        self._flush()

    cdef _flush(self):
        self._flushing = True
        try:
            self._send_queued()
        finally:
            self._flushing = False

    cdef _send_queued(self):
        cdef list queue = self._queue, raws = self._queue_raw
        cdef int i, count, sent
        cdef bytes data, raw
        while queue:
            count = min(len(queue), NBATCH)
            for i in range(count):
                data = queue[i]
                raw = raws[i]
                memset(&self._smsgs[i], 0, sizeof(mmsghdr))
                self._siov[i].iov_base = PyBytes_AS_STRING(data)
                self._siov[i].iov_len = PyBytes_GET_SIZE(data)
                self._smsgs[i].msg_hdr.msg_iov = &self._siov[i]
                self._smsgs[i].msg_hdr.msg_iovlen = 1
                self._smsgs[i].msg_hdr.msg_name = PyBytes_AS_STRING(raw)
                self._smsgs[i].msg_hdr.msg_namelen = PyBytes_GET_SIZE(raw)
            sent = sendmmsg(self.fd, self._smsgs, count, MSG_DONTWAIT)
            if sent < 0:
                if errno == EINTR:
                    continue
                if errno == EAGAIN or errno == EWOULDBLOCK:
                    if not self._writing:  # the rest goes once the kernel has room
                        self._writing = True
                        self.loop.add_writer(self.fd, self._writable)
                    return
                # the first datagram failed (no route, message too long...): reported,
                # dropped, the others go on
                exc = OSError(errno, os.strerror(errno))
                del queue[0]
                del raws[0]
                self.error(exc)
                continue
            del queue[:sent]
            del raws[:sent]
        if self._writing:
            self._writing = False
            self.loop.remove_writer(self.fd)
