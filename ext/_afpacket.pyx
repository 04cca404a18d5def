# cython: language_level=3
"""Batched AF_PACKET I/O for the software switch: recvmmsg / sendmmsg.

Python's ``socket`` has no recvmmsg, and one syscall per frame caps a Python
forwarder near 110k frames/s here; these move up to ``batch`` frames per
syscall with the GIL released. Used by ``lego.switch.ports``.

``BatchSocket(fd, batch, snaplen)`` wraps an AF_PACKET socket the caller opened
and bound (and keeps open; closing it is the caller's job):

- ``recv()``: the frames waiting (at most ``batch``), as a list of ``bytes``,
  non-blocking, skipping frames this host sent (``PACKET_OUTGOING``);
  ``[]`` when none wait.
- ``recv_stamped()``: the same, with each frame's kernel receive time (ns since
  the epoch; 0 where the kernel gave none). The caller enables the stamps with
  ``SO_TIMESTAMPNS`` on the socket: a switch then stamps every frame with its own
  arrival time, not the time a batch of them was read.
- An 802.1Q tag the kernel took off a received frame (VLAN offload) is put back
  where the socket has ``PACKET_AUXDATA`` on, as libpcap does: a switch must see
  the frame that was sent (found by the differential test against BMv2).
- ``send(frames)``: sends every frame of a list of ``bytes``; a frame the
  kernel refuses (too big, no buffer) is dropped and counted in ``tx_errors``.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.errno cimport EAGAIN, EINTR, errno
from libc.stdlib cimport calloc, free, malloc
from libc.string cimport strerror


cdef extern from "<sys/uio.h>" nogil:
    struct iovec:
        void *iov_base
        size_t iov_len

cdef extern from "<sys/socket.h>" nogil:
    ctypedef unsigned int socklen_t
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
    cmsghdr *CMSG_FIRSTHDR(msghdr *msgh)
    cmsghdr *CMSG_NXTHDR(msghdr *msgh, cmsghdr *cmsg)
    unsigned char *CMSG_DATA(cmsghdr *cmsg)
    int SOL_SOCKET
    int SCM_TIMESTAMPNS
    int recvmmsg(int sockfd, mmsghdr *msgvec, unsigned int vlen, int flags, void *timeout)
    int sendmmsg(int sockfd, mmsghdr *msgvec, unsigned int vlen, int flags)
    int MSG_DONTWAIT

cdef extern from "<time.h>" nogil:
    struct timespec:
        long tv_sec
        long tv_nsec

cdef extern from "<linux/if_packet.h>" nogil:
    struct tpacket_auxdata:
        unsigned int tp_status
        unsigned int tp_len
        unsigned int tp_snaplen
        unsigned short tp_mac
        unsigned short tp_net
        unsigned short tp_vlan_tci
        unsigned short tp_vlan_tpid
    int SOL_PACKET
    int PACKET_AUXDATA
    int TP_STATUS_VLAN_VALID
    int TP_STATUS_VLAN_TPID_VALID
    struct sockaddr_ll:
        unsigned short sll_family
        unsigned short sll_protocol
        int sll_ifindex
        unsigned short sll_hatype
        unsigned char sll_pkttype
        unsigned char sll_halen
        unsigned char sll_addr[8]
    int PACKET_OUTGOING


cdef enum:
    CTRL_BYTES = 128  # room for SCM_TIMESTAMPNS (CMSG_SPACE 32) and PACKET_AUXDATA (40)


cdef class BatchSocket:
    cdef int fd
    cdef unsigned int nmax
    cdef size_t snaplen
    cdef unsigned char *buf
    cdef mmsghdr *rmsgs
    cdef iovec *riovs
    cdef sockaddr_ll *addrs
    cdef mmsghdr *smsgs
    cdef iovec *siovs
    cdef unsigned char *ctrl
    cdef public unsigned long long rx_frames, rx_outgoing, tx_frames, tx_errors

    def __cinit__(self, int fd, unsigned int batch=64, size_t snaplen=65536):
        if batch == 0 or snaplen < 64:
            raise ValueError(f"BatchSocket: batch >= 1 and snaplen >= 64, got {batch}, {snaplen}")
        self.fd = fd
        self.nmax = batch
        self.snaplen = snaplen
        self.buf = <unsigned char *>malloc(batch * snaplen)
        self.rmsgs = <mmsghdr *>calloc(batch, sizeof(mmsghdr))
        self.riovs = <iovec *>calloc(batch, sizeof(iovec))
        self.addrs = <sockaddr_ll *>calloc(batch, sizeof(sockaddr_ll))
        self.smsgs = <mmsghdr *>calloc(batch, sizeof(mmsghdr))
        self.siovs = <iovec *>calloc(batch, sizeof(iovec))
        self.ctrl = <unsigned char *>calloc(batch, CTRL_BYTES)
        if not (self.buf and self.rmsgs and self.riovs and self.addrs and self.smsgs
                and self.siovs and self.ctrl):
            raise MemoryError()

    def __dealloc__(self):
        free(self.buf)
        free(self.rmsgs)
        free(self.riovs)
        free(self.addrs)
        free(self.smsgs)
        free(self.siovs)
        free(self.ctrl)

    def fileno(self):
        return self.fd

    def recv(self):
        return self._recv(None)

    def recv_stamped(self):
        stamps = []
        return self._recv(stamps), stamps

    cdef list _recv(self, list stamps):
        cdef unsigned int i
        cdef int n
        cdef int err = 0
        cdef cmsghdr *c
        cdef timespec *tsp
        cdef tpacket_auxdata *aux
        cdef long long ns
        cdef bint tagged
        cdef unsigned int tpid, tci
        for i in range(self.nmax):
            self.riovs[i].iov_base = self.buf + i * self.snaplen
            self.riovs[i].iov_len = self.snaplen
            self.rmsgs[i].msg_hdr.msg_name = &self.addrs[i]
            self.rmsgs[i].msg_hdr.msg_namelen = sizeof(sockaddr_ll)
            self.rmsgs[i].msg_hdr.msg_iov = &self.riovs[i]
            self.rmsgs[i].msg_hdr.msg_iovlen = 1
            self.rmsgs[i].msg_hdr.msg_control = self.ctrl + i * CTRL_BYTES
            self.rmsgs[i].msg_hdr.msg_controllen = CTRL_BYTES
            self.rmsgs[i].msg_hdr.msg_flags = 0
        with nogil:
            n = recvmmsg(self.fd, self.rmsgs, self.nmax, MSG_DONTWAIT, NULL)
            if n < 0:
                err = errno
        if n < 0:
            if err == EAGAIN or err == EINTR:
                return []
            raise OSError(err, strerror(err).decode())
        out = []
        for i in range(<unsigned int>n):
            if self.addrs[i].sll_pkttype == PACKET_OUTGOING:
                self.rx_outgoing += 1
                continue
            ns = 0
            tagged = False
            c = CMSG_FIRSTHDR(&self.rmsgs[i].msg_hdr)
            while c != NULL:
                if c.cmsg_level == SOL_SOCKET and c.cmsg_type == SCM_TIMESTAMPNS:
                    tsp = <timespec *>CMSG_DATA(c)
                    ns = tsp.tv_sec * 1000000000LL + tsp.tv_nsec
                elif c.cmsg_level == SOL_PACKET and c.cmsg_type == PACKET_AUXDATA:
                    aux = <tpacket_auxdata *>CMSG_DATA(c)
                    tagged = (aux.tp_status & TP_STATUS_VLAN_VALID) != 0
                    tpid = aux.tp_vlan_tpid if aux.tp_status & TP_STATUS_VLAN_TPID_VALID \
                        else 0x8100
                    tci = aux.tp_vlan_tci
                c = CMSG_NXTHDR(&self.rmsgs[i].msg_hdr, c)
            data = PyBytes_FromStringAndSize(<char *>self.riovs[i].iov_base,
                                             self.rmsgs[i].msg_len)
            if tagged:  # the offloaded 802.1Q tag, back after the MACs
                data = data[:12] + bytes((tpid >> 8, tpid & 0xFF, tci >> 8, tci & 0xFF)) \
                    + data[12:]
            out.append(data)
            if stamps is not None:
                stamps.append(ns)
        self.rx_frames += len(out)
        return out

    def send(self, list frames):
        cdef Py_ssize_t total = len(frames)
        cdef Py_ssize_t done = 0
        cdef unsigned int k, chunk
        cdef int n
        cdef int err = 0
        cdef object f
        cdef unsigned long long before = self.tx_frames
        while done < total:
            chunk = <unsigned int>min(<Py_ssize_t>self.nmax, total - done)
            for k in range(chunk):
                f = frames[done + k]
                if not isinstance(f, bytes):
                    raise TypeError(f"send: frame {done + k} is {type(f).__name__}, not bytes")
                self.siovs[k].iov_base = PyBytes_AS_STRING(f)
                self.siovs[k].iov_len = PyBytes_GET_SIZE(f)
                self.smsgs[k].msg_hdr.msg_name = NULL
                self.smsgs[k].msg_hdr.msg_namelen = 0
                self.smsgs[k].msg_hdr.msg_iov = &self.siovs[k]
                self.smsgs[k].msg_hdr.msg_iovlen = 1
                self.smsgs[k].msg_hdr.msg_control = NULL
                self.smsgs[k].msg_hdr.msg_controllen = 0
                self.smsgs[k].msg_hdr.msg_flags = 0
            with nogil:
                n = sendmmsg(self.fd, self.smsgs, chunk, 0)
                if n < 0:
                    err = errno
            if n < 0:
                if err == EINTR:
                    continue
                # the first frame of the chunk was refused: drop it, go on
                self.tx_errors += 1
                done += 1
                continue
            self.tx_frames += n
            done += n
        return self.tx_frames - before
