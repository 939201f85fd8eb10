//! Batched UDP I/O for the media relay: `recvmmsg(2)` and `sendmmsg(2)` over preallocated
//! buffers, so one syscall moves up to [`BATCH`] datagrams each way.
//!
//! Does: receive a batch of datagrams with their source addresses into buffers allocated
//! once, and send a batch of (address, bytes) in one call, non-blocking (the tokio shell
//! waits for readiness and calls these through `UdpSocket::try_io`). Never: allocates per
//! packet, blocks, or looks inside the datagrams (that is the relay core's job).
use std::io;
use std::mem::{size_of, zeroed};
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;

/// Datagrams per syscall. 32 is where the syscall cost is well amortised and the batch
/// still fits in L1/L2 (the shared peers' `fwd` limit uses the same).
pub const BATCH: usize = 32;
/// Largest datagram kept; RTP over Ethernet fits in 1500, a little slack for tunnels.
pub const MAX_DATAGRAM: usize = 2048;

/// Receive buffers for one batch, allocated once and reused.
pub struct RecvBatch {
    bufs: Box<[[u8; MAX_DATAGRAM]; BATCH]>,
    lens: [usize; BATCH],
    addrs: [libc::sockaddr_storage; BATCH],
    count: usize,
}

impl Default for RecvBatch {
    fn default() -> Self {
        RecvBatch {
            bufs: Box::new([[0u8; MAX_DATAGRAM]; BATCH]),
            lens: [0; BATCH],
            // SAFETY: sockaddr_storage is plain old data; all-zero is a valid value.
            addrs: unsafe { zeroed() },
            count: 0,
        }
    }
}

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
    pub fn get_mut(&mut self, i: usize) -> Option<(&mut [u8], SocketAddr)> {
        if i >= self.count {
            return None;
        }
        let addr = from_storage(&self.addrs[i])?;
        let len = self.lens[i].min(MAX_DATAGRAM);
        Some((&mut self.bufs[i][..len], addr))
    }
}

impl RecvBatch {
    /// Datagram `i` as last received or rewritten, for sending it on.
    pub fn datagram(&self, i: usize, len: usize) -> Option<&[u8]> {
        (i < self.count).then(|| &self.bufs[i][..len.min(self.lens[i]).min(MAX_DATAGRAM)])
    }
}

/// Receives up to [`BATCH`] datagrams without blocking. Returns how many arrived;
/// `WouldBlock` when none is waiting (the shell then waits for readiness).
pub fn recv_batch(fd: RawFd, batch: &mut RecvBatch) -> io::Result<usize> {
    // SAFETY: iovec/mmsghdr are plain old data; all-zero is valid and every pointer we set
    // below points into `batch`, which outlives the call.
    let mut iovs: [libc::iovec; BATCH] = unsafe { zeroed() };
    let mut msgs: [libc::mmsghdr; BATCH] = unsafe { zeroed() };
    for i in 0..BATCH {
        iovs[i].iov_base = batch.bufs[i].as_mut_ptr().cast();
        iovs[i].iov_len = MAX_DATAGRAM;
        msgs[i].msg_hdr.msg_iov = &mut iovs[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
        msgs[i].msg_hdr.msg_name = (&mut batch.addrs[i] as *mut libc::sockaddr_storage).cast();
        msgs[i].msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    }
    // SAFETY: msgs holds BATCH initialised headers pointing at live buffers.
    let n = unsafe {
        libc::recvmmsg(
            fd,
            msgs.as_mut_ptr(),
            BATCH as libc::c_uint,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
        )
    };
    if n < 0 {
        batch.count = 0;
        return Err(io::Error::last_os_error());
    }
    let n = n as usize;
    for (i, m) in msgs.iter().enumerate().take(n) {
        batch.lens[i] = m.msg_len as usize;
    }
    batch.count = n;
    Ok(n)
}

/// Sends `packets` (destination, bytes), at most [`BATCH`] at a time, without blocking.
/// Returns how many were handed to the kernel; the rest (if any) should be retried when
/// the socket is writable again.
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

fn to_storage(addr: &SocketAddr, out: &mut libc::sockaddr_storage) -> libc::socklen_t {
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

fn from_storage(s: &libc::sockaddr_storage) -> Option<SocketAddr> {
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
}
