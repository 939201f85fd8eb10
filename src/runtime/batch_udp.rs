//! Batched UDP I/O for the media relay: `recvmmsg(2)` and `sendmmsg(2)` over buffers and
//! message headers allocated once, so one syscall moves up to [`BATCH`] datagrams each way.
//!
//! Does: receive a batch of datagrams with their source addresses into a [`RecvBatch`]
//! (buffers, iovecs and `mmsghdr`s allocated once, pointers wired once), and send
//! datagrams straight out of those receive buffers (rewritten in place by the relay core)
//! through a [`SendQueue`] — zero copy, zero allocation per packet or per batch. Every
//! call is non-blocking (`MSG_DONTWAIT`).
//!
//! Never: allocates after construction, blocks, retries a full socket buffer (the caller
//! counts what was dropped), or looks inside the datagrams (that is the relay core's job).
use std::io;
use std::mem::{size_of, zeroed};
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;

/// Datagrams per syscall. 32 is where the syscall cost is well amortised and the batch
/// still fits in L1/L2 (the shared peers' `fwd` limit uses the same).
pub const BATCH: usize = 32;
/// Largest datagram kept; RTP over Ethernet fits in 1500, a little slack for tunnels.
pub const MAX_DATAGRAM: usize = 2048;

/// A zero-filled `Box<T>` allocated directly on the heap (no large stack temporary).
///
/// # Safety
/// All-zero bytes must be a valid `T`, and `T` must not be zero-sized.
unsafe fn boxed_zeroed<T>() -> Box<T> {
    let layout = std::alloc::Layout::new::<T>();
    // SAFETY: the caller guarantees a non-zero size and that zeroes are a valid T; the
    // pointer comes from the global allocator with T's layout, as Box::from_raw requires.
    unsafe {
        let p = std::alloc::alloc_zeroed(layout).cast::<T>();
        if p.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        Box::from_raw(p)
    }
}

struct RecvInner {
    bufs: [[u8; MAX_DATAGRAM]; BATCH],
    addrs: [libc::sockaddr_storage; BATCH],
    iovs: [libc::iovec; BATCH],
    msgs: [libc::mmsghdr; BATCH],
}

/// Receive buffers and message headers for one batch, allocated once and reused. The
/// headers point into the same heap block, so they are wired once at construction.
pub struct RecvBatch {
    inner: Box<RecvInner>,
    count: usize,
}

impl Default for RecvBatch {
    fn default() -> Self {
        // SAFETY: every field is plain old data (bytes, sockaddr_storage, iovec, mmsghdr);
        // all-zero is a valid value. Allocated zeroed on the heap (≈ 70 KiB, not on the
        // stack).
        let mut inner: Box<RecvInner> = unsafe { boxed_zeroed() };
        let r = &mut *inner;
        for i in 0..BATCH {
            r.iovs[i].iov_base = r.bufs[i].as_mut_ptr().cast();
            r.iovs[i].iov_len = MAX_DATAGRAM;
            r.msgs[i].msg_hdr.msg_iov = &mut r.iovs[i];
            r.msgs[i].msg_hdr.msg_iovlen = 1;
            r.msgs[i].msg_hdr.msg_name = (&mut r.addrs[i] as *mut libc::sockaddr_storage).cast();
        }
        RecvBatch { inner, count: 0 }
    }
}

// SAFETY: the raw pointers in the headers point only into `inner`'s own heap block, which
// moves with the RecvBatch; nothing else aliases them.
unsafe impl Send for RecvBatch {}

impl RecvBatch {
    /// Datagrams received by the last [`recv_batch`].
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Datagram `i` (mutable, so the relay can rewrite headers in place) and its source.
    /// `None` past the end or for a source address family we do not speak.
    #[inline]
    pub fn get_mut(&mut self, i: usize) -> Option<(&mut [u8], SocketAddr)> {
        if i >= self.count {
            return None;
        }
        let r = &mut *self.inner;
        let addr = from_storage(&r.addrs[i])?;
        let len = (r.msgs[i].msg_len as usize).min(MAX_DATAGRAM);
        Some((&mut r.bufs[i][..len], addr))
    }

    /// Datagram `i` as last received or rewritten, for sending it on.
    pub fn datagram(&self, i: usize, len: usize) -> Option<&[u8]> {
        (i < self.count).then(|| {
            let r = &*self.inner;
            &r.bufs[i][..len.min(r.msgs[i].msg_len as usize).min(MAX_DATAGRAM)]
        })
    }
}

/// Receives up to [`BATCH`] datagrams without blocking, in ONE syscall (the caller's
/// level-triggered readiness brings it back if more are waiting). Returns how many
/// arrived; `WouldBlock` when none is waiting.
pub fn recv_batch(fd: RawFd, batch: &mut RecvBatch) -> io::Result<usize> {
    let r = &mut *batch.inner;
    // The kernel overwrites msg_namelen with the source's length: reset it.
    for m in r.msgs.iter_mut() {
        m.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    }
    // SAFETY: msgs holds BATCH initialised headers pointing at live buffers in `r`.
    let n = unsafe {
        libc::recvmmsg(
            fd,
            r.msgs.as_mut_ptr(),
            BATCH as libc::c_uint,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
        )
    };
    if n < 0 {
        batch.count = 0;
        return Err(io::Error::last_os_error());
    }
    batch.count = n as usize;
    Ok(batch.count)
}

struct SendInner {
    names: [libc::sockaddr_storage; BATCH],
    iovs: [libc::iovec; BATCH],
    msgs: [libc::mmsghdr; BATCH],
    /// (index in the RecvBatch, length) per queued datagram.
    src: [(u16, u16); BATCH],
}

/// What happened to a flushed [`SendQueue`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SendOutcome {
    /// Datagrams the kernel took.
    pub sent: usize,
    /// Dropped because the socket's send buffer was full (`EAGAIN`/`ENOBUFS`).
    pub would_block: usize,
    /// Dropped because the kernel refused that datagram (e.g. no route, address family).
    pub failed: usize,
}

/// Up to [`BATCH`] datagrams to send from one socket, taken from a [`RecvBatch`] without
/// copying. Headers are allocated once; `push` and `flush` allocate nothing.
pub struct SendQueue {
    inner: Box<SendInner>,
    count: usize,
}

// SAFETY: as for RecvBatch; the iovec pointers are only set inside `flush`, from a borrowed
// RecvBatch, and are not used after it returns.
unsafe impl Send for SendQueue {}

impl Default for SendQueue {
    fn default() -> Self {
        // SAFETY: plain old data, all-zero is valid.
        let mut inner: Box<SendInner> = unsafe { boxed_zeroed() };
        let r = &mut *inner;
        for i in 0..BATCH {
            r.msgs[i].msg_hdr.msg_iov = &mut r.iovs[i];
            r.msgs[i].msg_hdr.msg_iovlen = 1;
            r.msgs[i].msg_hdr.msg_name = (&mut r.names[i] as *mut libc::sockaddr_storage).cast();
        }
        SendQueue { inner, count: 0 }
    }
}

impl SendQueue {
    /// Queued datagrams.
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Queue datagram `index` of the receive batch (its first `len` bytes) for `to`.
    /// Returns `false` when the queue is full (cannot happen when fed from one batch).
    #[inline]
    pub fn push(&mut self, to: SocketAddr, index: usize, len: usize) -> bool {
        if self.count >= BATCH || index >= BATCH || len > MAX_DATAGRAM {
            return false;
        }
        let r = &mut *self.inner;
        let i = self.count;
        r.msgs[i].msg_hdr.msg_namelen = to_storage(&to, &mut r.names[i]);
        r.src[i] = (index as u16, len as u16);
        self.count += 1;
        true
    }

    /// Drop everything queued.
    pub fn clear(&mut self) {
        self.count = 0;
    }

    /// Send everything queued from `fd` with `sendmmsg`, taking the bytes from `batch`,
    /// then empty the queue. Never blocks: a full socket buffer drops the rest (counted). A
    /// datagram the kernel refuses is retried once — the error may be a pending ICMP error
    /// of an earlier send (`sk_err`), which the failed call consumed — then skipped.
    pub fn flush(&mut self, fd: RawFd, batch: &RecvBatch) -> SendOutcome {
        let n = self.count;
        self.count = 0;
        if n == 0 {
            return SendOutcome::default();
        }
        let r = &mut *self.inner;
        let rb = &*batch.inner;
        for i in 0..n {
            let (idx, len) = r.src[i];
            r.iovs[i].iov_base = rb.bufs[usize::from(idx)].as_ptr() as *mut libc::c_void;
            r.iovs[i].iov_len = usize::from(len);
        }
        send_all(fd, &mut r.msgs[..n])
    }
}

/// `sendmmsg` of every header in `msgs`, never blocking: a full socket buffer
/// (`EAGAIN`/`ENOBUFS`) drops the rest; a datagram the kernel refuses is retried once — the
/// error may be a pending ICMP error of an earlier send (`sk_err`), which the failed call
/// consumed — then skipped.
pub(crate) fn send_all(fd: RawFd, msgs: &mut [libc::mmsghdr]) -> SendOutcome {
    let n = msgs.len();
    let mut out = SendOutcome::default();
    let mut k = 0;
    let mut retried = false;
    while k < n {
        // SAFETY: msgs[k..n] are initialised headers whose name and iovec pointers the
        // caller keeps valid for the call; sendmmsg only reads them.
        let m = unsafe {
            libc::sendmmsg(
                fd,
                msgs.as_mut_ptr().add(k),
                (n - k) as libc::c_uint,
                libc::MSG_DONTWAIT,
            )
        };
        if m > 0 {
            k += m as usize;
            out.sent += m as usize;
            retried = false;
            continue;
        }
        match io::Error::last_os_error().raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EAGAIN) | Some(libc::ENOBUFS) => {
                out.would_block += n - k;
                break;
            }
            _ if !retried => retried = true,
            _ => {
                out.failed += 1;
                k += 1;
                retried = false;
            }
        }
    }
    out
}

/// Sends `packets` (destination, bytes), at most [`BATCH`] at a time, without blocking.
/// Returns how many were handed to the kernel. (Builds its headers per call; the relay's
/// hot path uses [`SendQueue`] instead.)
pub fn send_batch(fd: RawFd, packets: &[(SocketAddr, &[u8])]) -> io::Result<usize> {
    let n = packets.len().min(BATCH);
    if n == 0 {
        return Ok(0);
    }
    // SAFETY: as in recv_batch; the pointers reference `packets` and local arrays that
    // outlive the syscall. sendmmsg only reads the buffers.
    let mut iovs: [libc::iovec; BATCH] = unsafe { zeroed() };
    let mut names: [libc::sockaddr_storage; BATCH] = unsafe { zeroed() };
    let mut msgs: [libc::mmsghdr; BATCH] = unsafe { zeroed() };
    for (i, (addr, data)) in packets.iter().take(n).enumerate() {
        let len = to_storage(addr, &mut names[i]);
        iovs[i].iov_base = data.as_ptr() as *mut libc::c_void;
        iovs[i].iov_len = data.len();
        msgs[i].msg_hdr.msg_iov = &mut iovs[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
        msgs[i].msg_hdr.msg_name = (&mut names[i] as *mut libc::sockaddr_storage).cast();
        msgs[i].msg_hdr.msg_namelen = len;
    }
    // SAFETY: msgs holds n initialised headers.
    let sent =
        unsafe { libc::sendmmsg(fd, msgs.as_mut_ptr(), n as libc::c_uint, libc::MSG_DONTWAIT) };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(sent as usize)
}

pub(crate) fn to_storage(addr: &SocketAddr, out: &mut libc::sockaddr_storage) -> libc::socklen_t {
    match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is large enough and suitably aligned for sockaddr_in.
            unsafe { std::ptr::write((out as *mut libc::sockaddr_storage).cast(), sin) };
            size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: as above, for sockaddr_in6.
            unsafe { std::ptr::write((out as *mut libc::sockaddr_storage).cast(), sin6) };
            size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}

pub(crate) fn from_storage(s: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match s.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the kernel wrote a sockaddr_in for AF_INET.
            let sin: &libc::sockaddr_in = unsafe { &*(s as *const libc::sockaddr_storage).cast() };
            let ip = std::net::Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes());
            Some(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the kernel wrote a sockaddr_in6 for AF_INET6.
            let sin6: &libc::sockaddr_in6 =
                unsafe { &*(s as *const libc::sockaddr_storage).cast() };
            Some(SocketAddr::V6(SocketAddrV6::new(
                std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;

    fn pair(bind: &str) -> (UdpSocket, UdpSocket) {
        let a = UdpSocket::bind(bind).unwrap();
        let b = UdpSocket::bind(bind).unwrap();
        (a, b)
    }

    #[test]
    fn a_batch_goes_out_in_one_call_and_comes_back_with_sources() {
        for bind in ["127.0.0.1:0", "[::1]:0"] {
            let (tx, rx) = pair(bind);
            let to = rx.local_addr().unwrap();
            let payloads: Vec<Vec<u8>> = (0..40u8).map(|i| vec![i; 20 + i as usize]).collect();
            let packets: Vec<(SocketAddr, &[u8])> =
                payloads.iter().map(|p| (to, p.as_slice())).collect();
            // 40 packets: the first call sends BATCH, the second the rest.
            let first = send_batch(tx.as_raw_fd(), &packets).unwrap();
            assert_eq!(first, BATCH);
            let second = send_batch(tx.as_raw_fd(), &packets[first..]).unwrap();
            assert_eq!(first + second, 40);

            let mut batch = RecvBatch::default();
            let mut got = Vec::new();
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
            while got.len() < 40 && std::time::Instant::now() < deadline {
                match recv_batch(rx.as_raw_fd(), &mut batch) {
                    Ok(n) => {
                        assert!(n <= BATCH);
                        for i in 0..n {
                            let (data, from) = batch.get_mut(i).unwrap();
                            assert_eq!(from, tx.local_addr().unwrap());
                            got.push(data.to_vec());
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                    Err(e) => panic!("{e}"),
                }
            }
            assert_eq!(got, payloads, "every datagram, in order, intact ({bind})");
        }
    }

    #[test]
    fn nothing_waiting_is_would_block_not_an_error_or_a_hang() {
        let (_tx, rx) = pair("127.0.0.1:0");
        let mut batch = RecvBatch::default();
        let e = recv_batch(rx.as_raw_fd(), &mut batch).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        assert!(batch.is_empty());
        assert!(batch.get_mut(0).is_none());
    }

    #[test]
    fn received_buffers_are_rewritable_in_place() {
        let (tx, rx) = pair("127.0.0.1:0");
        tx.send_to(&[0x80, 0, 0, 1], rx.local_addr().unwrap())
            .unwrap();
        let mut batch = RecvBatch::default();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while batch.is_empty() && std::time::Instant::now() < deadline {
            let _ = recv_batch(rx.as_raw_fd(), &mut batch);
        }
        let (data, _) = batch.get_mut(0).unwrap();
        data[3] = 2;
        assert_eq!(batch.get_mut(0).unwrap().0, &[0x80, 0, 0, 2]);
    }

    #[test]
    fn a_send_queue_sends_from_the_receive_buffers_and_skips_what_the_kernel_refuses() {
        let (tx, relay) = pair("127.0.0.1:0");
        let (_, out) = pair("127.0.0.1:0");
        let dest = out.local_addr().unwrap();
        for i in 0..3u8 {
            tx.send_to(&[i; 10], relay.local_addr().unwrap()).unwrap();
        }
        let mut batch = RecvBatch::default();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        let n = loop {
            match recv_batch(relay.as_raw_fd(), &mut batch) {
                Ok(n) => break n,
                Err(_) if std::time::Instant::now() < deadline => std::thread::yield_now(),
                Err(e) => panic!("{e}"),
            }
        };
        // Loopback queues all three before the first receive.
        assert_eq!(n, 3, "all three in one batch");
        batch.get_mut(1).unwrap().0[0] = 0xee; // rewritten in place
        let mut q = SendQueue::default();
        assert!(q.push(dest, 0, 10));
        // An IPv6 destination on an IPv4 socket: refused by the kernel, skipped.
        assert!(q.push("[::1]:9".parse().unwrap(), 2, 10));
        assert!(q.push(dest, 1, 4));
        assert_eq!(q.len(), 3);
        let o = q.flush(relay.as_raw_fd(), &batch);
        assert_eq!(
            o,
            SendOutcome {
                sent: 2,
                would_block: 0,
                failed: 1
            }
        );
        assert!(q.is_empty());
        out.set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .unwrap();
        let mut buf = [0u8; 64];
        let (k, from) = out.recv_from(&mut buf).unwrap();
        assert_eq!(
            (&buf[..k], from),
            (&[0u8; 10][..], relay.local_addr().unwrap())
        );
        let k = out.recv(&mut buf).unwrap();
        assert_eq!(
            &buf[..k],
            &[0xee, 1, 1, 1],
            "the rewritten bytes, cut to len"
        );
    }

    #[test]
    fn a_send_queue_refuses_more_than_a_batch() {
        let mut q = SendQueue::default();
        let to: SocketAddr = "127.0.0.1:9".parse().unwrap();
        for i in 0..BATCH {
            assert!(q.push(to, i, 1));
        }
        assert!(!q.push(to, 0, 1));
        assert!(
            !SendQueue::default().push(to, BATCH, 1),
            "index past the batch"
        );
        q.clear();
        assert!(q.is_empty());
    }
}
