# cython: language_level=3
"""A UDP socket read and written in batches: the compiled twin of `gateway/sip/udpsock.py`.

Built as `gateway._udpsock`, picked through `gateway._accel`. The design is described in
the Python twin's docstring; here each wake-up of the loop reads batches of up to `BATCH`
datagrams, one recvmmsg(2) each, until the socket is empty (`ROUNDS` batches at most),
and what the handlers send while a batch is handled goes out with one sendmmsg(2) at its
end, before the next read. The source address of the last datagram is kept with its
Python tuple, and the sockaddr of each destination with its tuple (the last one at hand),
so the common case (one registrar, a handful of peers) converts no address. A datagram
waiting for the end of the batch is two list entries (its bytes, its sockaddr or its
pinned peer), no tuple; the datagrams in a row for the same socket leave with one
sendmmsg(2). The read headers are set up once, and only the fields the kernel wrote are
reset.

May depend on nothing of the gateway but its twin (it sits below the transport layer).
"""

from libc.errno cimport errno, EAGAIN, ECONNREFUSED, EINTR
from libc.string cimport memcmp, memcpy, memset
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.mem cimport PyMem_Free, PyMem_Malloc

import os
import socket
import sys

from gateway.sip.udpsock import numeric_sockaddr, peer_socket

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
#: peers pinned at most (a socket each); more are sent to from the socket itself
MAX_PINNED = 64


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


cdef class _Peer:
    """A pinned peer's socket: connected to it, bound to its owner's address."""
    cdef object sock
    cdef int fd
    cdef BatchedDatagramSocket owner

    def _readable(self):
        self.owner._read(self.fd)


cdef class BatchedDatagramSocket(DatagramSender):
    """One bound, non-blocking UDP socket on the loop; see the Python twin."""

    cdef readonly object sock, loop
    cdef public object receive, error
    cdef object _hook
    cdef DatagramTaker _taker  # when the hook is a taker's `datagram`: called as `take`
    cdef int fd
    cdef int _writing  # the descriptor waited on to be writable, or -1
    cdef readonly double received_at
    cdef bint _batching, _flushing, _closed, _stamping
    # waiting for the end of the batch: the datagrams and where each goes (its sockaddr
    # bytes, or its pinned peer), in order
    cdef list _queue, _queue_raw
    cdef dict _names  # addr tuple -> sockaddr bytes, or the pinned peer
    cdef dict _pinned  # addr tuple -> _Peer, or None (could not)
    cdef object _send_addr, _send_raw  # the last destination (as given) and its entry
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
        self._writing = -1
        self._hook = None
        self.receive = receive
        self.error = error
        self._queue = []
        self._queue_raw = []
        self._names = {}
        self._pinned = {}
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
        for sock in self._sockets():
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self._stamping = True
        self._rused = NBATCH  # (every header gets its control room before the next read;
        # not now: a handler may ask while the batch's headers are still being read)

    def pin(self, addr):
        """Send to `addr` through a socket of its own (see the Python twin); True once
        it has one, False when it cannot (datagrams to `addr` then go from this one)."""
        if addr in self._pinned:
            return self._pinned[addr] is not None
        found = numeric_sockaddr(self.sock.family, addr)
        if self._closed or len(self._pinned) >= MAX_PINNED:
            return False
        sock = peer_socket(self.sock, found, self._stamping)
        if sock is None:
            self._pinned[addr] = None
            return False
        cdef _Peer peer = _Peer()
        peer.sock, peer.fd, peer.owner = sock, sock.fileno(), self
        self._pinned[addr] = self._names[addr] = peer
        self._send_addr = None
        self.loop.add_reader(peer.fd, peer._readable)
        return True

    cdef list _sockets(self):
        """This socket and the pinned peers'."""
        cdef list socks = [self.sock]
        for peer in self._pinned.values():
            if peer is not None:
                socks.append((<_Peer>peer).sock)
        return socks

    def is_closing(self):
        return self._closed

    def close(self):
        if self._closed:
            return
        self._flush()
        self._closed = True
        self._wait_writable(-1)
        self._queue = []
        self._queue_raw = []
        for sock in self._sockets():
            self.loop.remove_reader(sock.fileno())
            sock.close()

    # -- reading ----------------------------------------------------------------------

    def _readable(self):
        self._read(self.fd)

    cdef _read(self, int fd):
        """Reads this socket, or a pinned peer's (`fd`)."""
        cdef int n, i, reads
        if self._closed:
            return
        self._batching = True
        try:
            for reads in range(NROUNDS):
                if self._closed:
                    break
                self._reset_headers()
                n = recvmmsg(fd, self._rmsgs, NBATCH, MSG_DONTWAIT, NULL)
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
        if addr is self._send_addr:  # (the same tuple object as the last time: its entry)
            raw = self._send_raw
        else:
            raw = self._names.get(addr)
            if raw is None:
                raw = self._sockaddr(addr)
            self._send_addr, self._send_raw = addr, raw
        self._queue.append(data)
        self._queue_raw.append(raw)
        if not (self._batching or self._writing >= 0 or self._flushing):
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

    cdef _wait_writable(self, int fd):
        """Wait for `fd` to be writable (-1: for nothing)."""
        if fd != self._writing:
            if self._writing >= 0:
                self.loop.remove_writer(self._writing)
            if fd >= 0:
                self.loop.add_writer(fd, self._writable)
            self._writing = fd

    cdef _flush(self):
        self._flushing = True
        try:
            self._send_queued()
        finally:
            self._flushing = False

    cdef _send_queued(self):
        """The queue's datagrams, those in a row for the same socket (this one, or a
        pinned peer's) with one sendmmsg(2)."""
        cdef list queue = self._queue, raws = self._queue_raw
        cdef int count, limit, sent, fd, code
        cdef bint retried = False
        cdef bytes data
        cdef _Peer peer
        while queue:
            first = raws[0]
            peer = first if type(first) is _Peer else None
            fd = self.fd if peer is None else peer.fd
            limit = min(len(queue), NBATCH)
            count = 0
            while count < limit:
                raw = raws[count]
                if (raw if type(raw) is _Peer else None) is not peer:
                    break  # (the next one leaves through another socket)
                data = queue[count]
                memset(&self._smsgs[count], 0, sizeof(mmsghdr))
                self._siov[count].iov_base = PyBytes_AS_STRING(data)
                self._siov[count].iov_len = PyBytes_GET_SIZE(data)
                self._smsgs[count].msg_hdr.msg_iov = &self._siov[count]
                self._smsgs[count].msg_hdr.msg_iovlen = 1
                if peer is None:  # (a connected socket's datagrams name no destination)
                    self._smsgs[count].msg_hdr.msg_name = PyBytes_AS_STRING(<bytes>raw)
                    self._smsgs[count].msg_hdr.msg_namelen = PyBytes_GET_SIZE(<bytes>raw)
                count += 1
            sent = sendmmsg(fd, self._smsgs, count, MSG_DONTWAIT)
            if sent < 0:
                code = errno
                if code == EINTR:
                    continue
                if code == EAGAIN or code == EWOULDBLOCK:
                    self._wait_writable(fd)  # the rest goes once the kernel has room
                    return
                # the first datagram failed (no route, message too long...): reported,
                # dropped, the others go on; but a connected socket's ECONNREFUSED is an
                # earlier datagram's ICMP error, so that one is tried once more
                self.error(OSError(code, os.strerror(code)))
                if peer is not None and code == ECONNREFUSED and not retried:
                    retried = True
                    continue
                del queue[0]
                del raws[0]
                retried = False
                continue
            del queue[:sent]
            del raws[:sent]
            retried = False
        self._wait_writable(-1)
