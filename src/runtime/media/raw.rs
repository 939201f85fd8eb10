//! `io: raw`: one raw IPv4 socket per worker carries the RTP and RTCP of ALL that worker's
//! relays, so one `recvmmsg` and one `sendmmsg` move a batch of packets of many streams.
//!
//! Why: at 50 packets per second per stream, a per-port socket holds one packet when it is
//! read, so the socket mode pays a wakeup, a `recvmmsg` and a `sendmmsg` per packet. Here a
//! wakeup reads every packet that arrived for any relay of the worker.
//!
//! Does:
//! - A raw `AF_INET/IPPROTO_UDP` socket with `IP_HDRINCL` per worker. An eBPF socket filter
//!   keeps, in the kernel, only datagrams to the relay IP (when one is bound) whose UDP
//!   destination port the shared [`PortOwners`] array marks as this worker's.
//! - [`PortOwners`]: a BPF array map, one byte per port of the range: 0 = nobody,
//!   w + 1 = worker w. Workers set their ports on open and clear them on close.
//! - The relay ports keep their ordinary UDP sockets: they hold the port (no other process
//!   can take it, and the kernel does not answer ICMP "port unreachable"), and they still
//!   receive the ICMP errors of what we send (`IP_RECVERR`). A "drop everything" classic
//!   BPF filter keeps their receive queues empty: the raw socket has its own copy.
//! - Pure framing: [`parse_udp4`] finds source, destination and payload of a received
//!   datagram; [`frame_udp4`] writes a fresh IPv4 + UDP header (with the UDP checksum, or 0
//!   when the source address is left to the kernel) in place before the payload.
//!
//! Never: sees IPv6 (an IPv6 relay falls back to its own sockets), copies a payload,
//! allocates per packet, or accepts a datagram whose port no relay of this worker holds.
//!
//! Side effect an operator can see: the relay ports' UDP sockets discard their copy, so
//! `netstat -su` counts relayed packets as UDP "receive errors" (`InErrors`).
use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::ops::RangeInclusive;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use crate::runtime::batch_udp::SendOutcome;

/// Packets per raw `recvmmsg` / `sendmmsg`.
pub(super) const RAW_BATCH: usize = 64;
/// Largest IP datagram kept (RTP over Ethernet fits in 1500).
const RAW_BUF: usize = 2048;
const IP_HDR: usize = 20;
const UDP_HDR: usize = 8;

fn cvt(r: libc::c_long) -> io::Result<libc::c_long> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn bpf(cmd: libc::c_long, attr: &mut [u64; 16]) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a live, zero-padded union bpf_attr of 128 bytes; the kernel reads
    // (and for some commands writes) only within that size.
    cvt(unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.as_mut_ptr(),
            size_of::<[u64; 16]>(),
        )
    })
}

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_MAP_TYPE_ARRAY: u64 = 2;
const BPF_PROG_TYPE_SOCKET_FILTER: u64 = 1;
const SO_ATTACH_BPF: libc::c_int = 50;

/// Which worker owns each port of the range: a BPF array map shared by every worker's
/// filter. Updated only when a relay opens or closes (never per packet).
pub(crate) struct PortOwners {
    fd: OwnedFd,
    start: u16,
    end: u16,
}

impl PortOwners {
    pub(crate) fn new(range: &RangeInclusive<u16>) -> io::Result<PortOwners> {
        let (start, end) = (*range.start(), *range.end());
        let entries = u64::from(end - start) + 1;
        let mut attr = [0u64; 16];
        // map_type | key_size << 32, value_size | max_entries << 32.
        attr[0] = BPF_MAP_TYPE_ARRAY | (4 << 32);
        attr[1] = 1 | (entries << 32);
        let fd = bpf(BPF_MAP_CREATE, &mut attr)? as RawFd;
        // SAFETY: a fresh descriptor nobody else owns.
        Ok(PortOwners {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            start,
            end,
        })
    }

    /// Marks `port` as `worker`'s (`Some`) or nobody's (`None`).
    pub(crate) fn set(&self, port: u16, worker: Option<usize>) -> io::Result<()> {
        if port < self.start || port > self.end {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("port {port} outside the relay range"),
            ));
        }
        let key: u32 = u32::from(port - self.start);
        let value: u8 = worker.map_or(0, |w| (w + 1).min(255) as u8);
        let mut attr = [0u64; 16];
        attr[0] = self.fd.as_raw_fd() as u64;
        attr[1] = &key as *const u32 as u64;
        attr[2] = &value as *const u8 as u64;
        attr[3] = 0; // BPF_ANY
        bpf(BPF_MAP_UPDATE_ELEM, &mut attr)?;
        Ok(())
    }
}

/// One eBPF instruction: `code, dst | src << 4, off, imm`.
fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> u64 {
    u64::from(code)
        | (u64::from(dst & 0xf | (src & 0xf) << 4) << 8)
        | (u64::from(off as u16) << 16)
        | (u64::from(imm as u32) << 32)
}

/// The socket filter of worker `worker`: keep (return 0xffff) an IPv4/UDP datagram whose
/// destination address is `ip` (any when unspecified) and whose destination port is in
/// the range and marked `worker + 1` in `owners`; drop (return 0) everything else.
fn filter_program(ip: Ipv4Addr, owners: &PortOwners, worker: usize) -> Vec<u64> {
    // (instruction, jumps to drop?)
    let mut p: Vec<(u64, bool)> = Vec::new();
    let op = |p: &mut Vec<(u64, bool)>, i: u64| p.push((i, false));
    let to_drop =
        |p: &mut Vec<(u64, bool)>, code: u8, imm: i32| p.push((insn(code, 0, 0, 0, imm), true));
    op(&mut p, insn(0xbf, 6, 1, 0, 0)); // r6 = r1 (ctx, for LD_ABS/LD_IND)
    if !ip.is_unspecified() {
        op(&mut p, insn(0x20, 0, 0, 0, 16)); // r0 = ntohl(ip.daddr)
        to_drop(&mut p, 0x56, u32::from(ip) as i32); // if w0 != ip goto drop
    }
    op(&mut p, insn(0x30, 0, 0, 0, 0)); // r0 = first byte (version, IHL)
    op(&mut p, insn(0x57, 0, 0, 0, 0xf)); // r0 &= 0xf
    op(&mut p, insn(0x67, 0, 0, 0, 2)); // r0 <<= 2  (IP header length)
    op(&mut p, insn(0xbf, 7, 0, 0, 0)); // r7 = r0
    op(&mut p, insn(0x48, 0, 7, 0, 2)); // r0 = ntohs(udp.dest) at [r7 + 2]
    to_drop(&mut p, 0xa6, i32::from(owners.start)); // if w0 < start goto drop
    to_drop(&mut p, 0x26, i32::from(owners.end)); // if w0 > end goto drop
    op(&mut p, insn(0x17, 0, 0, 0, i32::from(owners.start))); // r0 -= start
    op(&mut p, insn(0x63, 10, 0, -4, 0)); // *(u32 *)(r10 - 4) = r0
    op(&mut p, insn(0xbf, 2, 10, 0, 0)); // r2 = r10
    op(&mut p, insn(0x07, 2, 0, 0, -4)); // r2 += -4
    op(&mut p, insn(0x18, 1, 1, 0, owners.fd.as_raw_fd())); // r1 = map (pseudo map fd)
    op(&mut p, 0); //                       second half of the 64-bit load
    op(&mut p, insn(0x85, 0, 0, 0, 1)); // call bpf_map_lookup_elem
    to_drop(&mut p, 0x15, 0); // if r0 == NULL goto drop
    op(&mut p, insn(0x71, 0, 0, 0, 0)); // r0 = *(u8 *)r0
    to_drop(&mut p, 0x56, (worker as i32 + 1).min(255)); // if w0 != worker + 1 goto drop
    op(&mut p, insn(0xb7, 0, 0, 0, 0xffff)); // r0 = 0xffff (keep the datagram)
    op(&mut p, insn(0x95, 0, 0, 0, 0)); // exit
    let drop_at = p.len();
    op(&mut p, insn(0xb7, 0, 0, 0, 0)); // drop: r0 = 0
    op(&mut p, insn(0x95, 0, 0, 0, 0)); // exit
    p.iter()
        .enumerate()
        .map(|(i, &(ins, jumps))| {
            if jumps {
                // Jump offsets count from the next instruction.
                let off = (drop_at - i - 1) as u16;
                (ins & !(0xffff << 16)) | (u64::from(off) << 16)
            } else {
                ins
            }
        })
        .collect()
}

fn load_filter(prog: &[u64]) -> io::Result<OwnedFd> {
    let license = c"Apache-2.0";
    let mut log = vec![0u8; 4096];
    let mut attr = [0u64; 16];
    attr[0] = BPF_PROG_TYPE_SOCKET_FILTER | ((prog.len() as u64) << 32);
    attr[1] = prog.as_ptr() as u64;
    attr[2] = license.as_ptr() as u64;
    attr[3] = 1 | ((log.len() as u64) << 32); // log_level 1, log_size
    attr[4] = log.as_mut_ptr() as u64;
    match bpf(BPF_PROG_LOAD, &mut attr) {
        // SAFETY: a fresh descriptor nobody else owns.
        Ok(fd) => Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) }),
        Err(e) => {
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            let text = String::from_utf8_lossy(&log[..end]);
            let last = text.lines().rev().find(|l| !l.trim().is_empty());
            Err(io::Error::new(
                e.kind(),
                format!(
                    "loading the eBPF socket filter: {e}; {}",
                    last.unwrap_or("")
                ),
            ))
        }
    }
}

fn setsockopt<T>(fd: RawFd, level: libc::c_int, name: libc::c_int, v: &T) -> io::Result<()> {
    // SAFETY: passes a pointer to a live T and its size.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (v as *const T).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    };
    cvt(r as libc::c_long).map(|_| ())
}

/// Makes an ordinary relay UDP socket discard every datagram (its raw twin relays them).
pub(super) fn discard_datagrams(fd: RawFd) -> io::Result<()> {
    let mut ret0 = libc::sock_filter {
        code: (libc::BPF_RET | libc::BPF_K) as u16,
        jt: 0,
        jf: 0,
        k: 0,
    };
    let prog = libc::sock_fprog {
        len: 1,
        filter: &mut ret0,
    };
    setsockopt(fd, libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, &prog)
}

/// Undoes [`discard_datagrams`]: the socket receives its datagrams again (a relay moved
/// off the raw path).
pub(super) fn keep_datagrams(fd: RawFd) -> io::Result<()> {
    let zero: libc::c_int = 0;
    setsockopt(fd, libc::SOL_SOCKET, libc::SO_DETACH_FILTER, &zero)
}

/// A worker's raw socket with its filter attached.
pub(crate) struct RawSocket {
    fd: OwnedFd,
    _filter: OwnedFd,
}

impl RawSocket {
    /// Opens the raw socket of `worker` for relays on `ip` (unspecified = any local IPv4).
    /// Needs CAP_NET_RAW (the socket) and CAP_BPF or CAP_SYS_ADMIN (the filter).
    pub(crate) fn open(ip: Ipv4Addr, owners: &PortOwners, worker: usize) -> io::Result<RawSocket> {
        // SAFETY: plain syscall; the descriptor is owned right below.
        let fd = unsafe {
            libc::socket(
                libc::AF_INET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                libc::IPPROTO_UDP,
            )
        };
        let fd = cvt(fd as libc::c_long)? as RawFd;
        // SAFETY: fresh descriptor.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let raw = fd.as_raw_fd();
        // Until the filter is attached, drop everything (nothing queues before it).
        discard_datagrams(raw)?;
        setsockopt(raw, libc::IPPROTO_IP, libc::IP_HDRINCL, &1 as &libc::c_int)?;
        let size: libc::c_int = 4 << 20;
        for (force, plain) in [
            (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
            (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
        ] {
            if setsockopt(raw, libc::SOL_SOCKET, force, &size).is_err() {
                let _ = setsockopt(raw, libc::SOL_SOCKET, plain, &size);
            }
        }
        let filter = load_filter(&filter_program(ip, owners, worker))?;
        // Replaces the classic "drop everything" filter.
        setsockopt(raw, libc::SOL_SOCKET, SO_ATTACH_BPF, &filter.as_raw_fd())?;
        // Drain what the classic filter let through in between (nothing should).
        let mut b = [0u8; 64];
        // SAFETY: reads into a live local buffer; non-blocking.
        while unsafe { libc::recv(raw, b.as_mut_ptr().cast(), b.len(), libc::MSG_DONTWAIT) } >= 0 {}
        Ok(RawSocket {
            fd,
            _filter: filter,
        })
    }

    pub(super) fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// Where a received IPv4/UDP datagram came from and went to, and where its payload is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Udp4 {
    pub src: SocketAddrV4,
    pub dst: SocketAddrV4,
    /// Payload offset in the buffer (after the IP and UDP headers).
    pub payload: usize,
    pub len: usize,
}

/// Parses the IPv4 and UDP headers of a datagram read from a raw socket (`n` bytes). `None`
/// for anything not a whole, unfragmented IPv4/UDP datagram.
pub(crate) fn parse_udp4(buf: &[u8], n: usize) -> Option<Udp4> {
    let b = buf.get(..n)?;
    let v = *b.first()?;
    let ihl = usize::from(v & 0xf) * 4;
    if v >> 4 != 4 || ihl < IP_HDR || b.len() < ihl + UDP_HDR || b[9] != 17 {
        return None;
    }
    let total = usize::from(u16::from_be_bytes([b[2], b[3]]));
    // More fragments or an offset: the kernel reassembles before raw delivery, so a
    // fragment here is malformed input.
    let frag = u16::from_be_bytes([b[6], b[7]]) & 0x3fff;
    if frag != 0 || total < ihl + UDP_HDR || total > b.len() {
        return None;
    }
    let u = &b[ihl..];
    let ulen = usize::from(u16::from_be_bytes([u[4], u[5]]));
    if ulen < UDP_HDR || ihl + ulen > total {
        return None;
    }
    let ip = |o: usize| Ipv4Addr::new(b[o], b[o + 1], b[o + 2], b[o + 3]);
    let port = |o: usize| u16::from_be_bytes([u[o], u[o + 1]]);
    Some(Udp4 {
        src: SocketAddrV4::new(ip(12), port(0)),
        dst: SocketAddrV4::new(ip(16), port(2)),
        payload: ihl + UDP_HDR,
        len: ulen - UDP_HDR,
    })
}

/// Folds a ones' complement sum over `data` into `sum` (RFC 1071).
fn sum16(mut sum: u32, data: &[u8]) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    sum
}

fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Writes IPv4 + UDP headers for `len` payload bytes at `payload` (which must be at least
/// 28) from `src` to `dst`, just before the payload; returns where the datagram starts.
/// The kernel fills the IP checksum and identification (`IP_HDRINCL`), and the source
/// address when `src`'s is unspecified — then the UDP checksum is 0 (none, RFC 768).
pub(crate) fn frame_udp4(
    buf: &mut [u8],
    payload: usize,
    len: usize,
    src: SocketAddrV4,
    dst: SocketAddrV4,
) -> usize {
    let start = payload - IP_HDR - UDP_HDR;
    let total = (IP_HDR + UDP_HDR + len) as u16;
    let ulen = (UDP_HDR + len) as u16;
    let h = &mut buf[start..payload];
    h[0] = 0x45;
    h[1] = 0;
    h[2..4].copy_from_slice(&total.to_be_bytes());
    h[4..8].fill(0); // id (kernel), no flags, offset 0
    h[8] = 64;
    h[9] = 17;
    h[10..12].fill(0);
    h[12..16].copy_from_slice(&src.ip().octets());
    h[16..20].copy_from_slice(&dst.ip().octets());
    h[20..22].copy_from_slice(&src.port().to_be_bytes());
    h[22..24].copy_from_slice(&dst.port().to_be_bytes());
    h[24..26].copy_from_slice(&ulen.to_be_bytes());
    h[26..28].fill(0);
    if !src.ip().is_unspecified() {
        // Pseudo-header (src, dst, protocol, UDP length), then the UDP header and payload.
        let mut s = sum16(0, &buf[start + 12..start + 20]);
        s += 17 + u32::from(ulen);
        s = sum16(s, &buf[start + IP_HDR..payload + len]);
        let c = match fold(s) {
            0 => 0xffff,
            c => c,
        };
        buf[start + 26..start + 28].copy_from_slice(&c.to_be_bytes());
    }
    start
}

/// Receive buffers and headers of the raw path, allocated once per worker; datagrams are
/// sent back out of the same buffers after [`frame_udp4`].
pub(super) struct RawBatch {
    bufs: Box<[[u8; RAW_BUF]; RAW_BATCH]>,
    rx_iov: Box<[libc::iovec; RAW_BATCH]>,
    rx: Box<[libc::mmsghdr; RAW_BATCH]>,
    tx_iov: Box<[libc::iovec; RAW_BATCH]>,
    tx_name: Box<[libc::sockaddr_in; RAW_BATCH]>,
    tx: Box<[libc::mmsghdr; RAW_BATCH]>,
    queued: usize,
}

// SAFETY: the raw pointers inside point into the struct's own boxes, which move with it.
unsafe impl Send for RawBatch {}

impl RawBatch {
    pub(super) fn new() -> RawBatch {
        // SAFETY: plain old data; all-zero is valid for bytes, iovec, mmsghdr, sockaddr_in.
        let mut b = unsafe {
            RawBatch {
                bufs: Box::new(zeroed()),
                rx_iov: Box::new(zeroed()),
                rx: Box::new(zeroed()),
                tx_iov: Box::new(zeroed()),
                tx_name: Box::new(zeroed()),
                tx: Box::new(zeroed()),
                queued: 0,
            }
        };
        for i in 0..RAW_BATCH {
            b.rx_iov[i].iov_base = b.bufs[i].as_mut_ptr().cast();
            b.rx_iov[i].iov_len = RAW_BUF;
            b.rx[i].msg_hdr.msg_iov = &mut b.rx_iov[i];
            b.rx[i].msg_hdr.msg_iovlen = 1;
            b.tx[i].msg_hdr.msg_iov = &mut b.tx_iov[i];
            b.tx[i].msg_hdr.msg_iovlen = 1;
            b.tx[i].msg_hdr.msg_name = (&mut b.tx_name[i] as *mut libc::sockaddr_in).cast();
            b.tx[i].msg_hdr.msg_namelen = size_of::<libc::sockaddr_in>() as libc::socklen_t;
        }
        b
    }

    /// One non-blocking `recvmmsg`; returns how many datagrams arrived (0 on EAGAIN or a
    /// consumed socket error).
    pub(super) fn recv(&mut self, fd: RawFd) -> usize {
        for m in self.rx.iter_mut() {
            m.msg_len = 0;
        }
        // SAFETY: rx headers point into our own live buffers of RAW_BUF bytes each.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.rx.as_mut_ptr(),
                RAW_BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        n.max(0) as usize
    }

    /// Datagram `i` of the last receive: its buffer and received length (a truncated
    /// datagram reports more than the buffer holds and fails [`parse_udp4`]).
    #[inline]
    pub(super) fn datagram(&mut self, i: usize) -> (&mut [u8], usize) {
        let n = self.rx[i].msg_len as usize;
        let truncated = self.rx[i].msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
        (&mut self.bufs[i][..], if truncated { 0 } else { n })
    }

    /// Queues datagram `i`, framed at `start..start + len`, for `to`.
    #[inline]
    pub(super) fn queue(&mut self, i: usize, start: usize, len: usize, to: SocketAddrV4) {
        let q = self.queued;
        self.tx_iov[q].iov_base = self.bufs[i][start..].as_mut_ptr().cast();
        self.tx_iov[q].iov_len = len;
        let n = &mut self.tx_name[q];
        n.sin_family = libc::AF_INET as libc::sa_family_t;
        n.sin_port = 0;
        n.sin_addr.s_addr = u32::from(*to.ip()).to_be();
        self.queued += 1;
    }

    /// Sends everything queued with `sendmmsg` (never blocking; see
    /// [`send_all`](crate::runtime::batch_udp::send_all)).
    pub(super) fn flush(&mut self, fd: RawFd) -> SendOutcome {
        let n = self.queued;
        self.queued = 0;
        crate::runtime::batch_udp::send_all(fd, &mut self.tx[..n])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn datagram(src: SocketAddrV4, dst: SocketAddrV4, payload: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; 28 + payload.len()];
        b[28..].copy_from_slice(payload);
        let s = frame_udp4(&mut b, 28, payload.len(), src, dst);
        assert_eq!(s, 0);
        b
    }

    #[test]
    fn frame_then_parse_round_trips() {
        let src: SocketAddrV4 = "10.0.0.1:20000".parse().unwrap();
        let dst: SocketAddrV4 = "192.0.2.9:4000".parse().unwrap();
        let b = datagram(src, dst, b"\x80\x08hello rtp");
        let u = parse_udp4(&b, b.len()).unwrap();
        assert_eq!((u.src, u.dst, u.payload, u.len), (src, dst, 28, 11));
        // The UDP checksum verifies: the sum over pseudo-header + datagram is 0xffff.
        let mut s = sum16(0, &b[12..20]);
        s += 17 + 19;
        s = sum16(s, &b[20..]);
        assert_eq!(fold(s), 0, "checksum must verify");
        assert_eq!(&b[2..4], &(39u16).to_be_bytes());
    }

    #[test]
    fn checksum_matches_a_known_datagram() {
        // 192.168.0.1:1000 -> 192.168.0.2:2000, payload "ab": computed by hand:
        // pseudo 0xc0a8+0x0001+0xc0a8+0x0002+0x0011+0x000a, udp 0x03e8+0x07d0+0x000a, 0x6162
        let b = datagram(
            "192.168.0.1:1000".parse().unwrap(),
            "192.168.0.2:2000".parse().unwrap(),
            b"ab",
        );
        let sum: u32 =
            0xc0a8 + 0x0001 + 0xc0a8 + 0x0002 + 0x0011 + 0x000a + 0x03e8 + 0x07d0 + 0x000a + 0x6162;
        assert_eq!(&b[26..28], &fold(sum).to_be_bytes());
    }

    #[test]
    fn unspecified_source_sends_no_checksum() {
        let b = datagram(
            "0.0.0.0:20000".parse().unwrap(),
            "127.0.0.1:4000".parse().unwrap(),
            b"x",
        );
        assert_eq!(&b[26..28], &[0, 0]);
    }

    #[test]
    fn parse_refuses_what_is_not_one_whole_udp_datagram() {
        let src: SocketAddrV4 = "10.0.0.1:1".parse().unwrap();
        let good = datagram(src, "10.0.0.2:2".parse().unwrap(), b"abcd");
        assert!(parse_udp4(&good, good.len()).is_some());
        assert!(parse_udp4(&good, 27).is_none(), "short");
        assert!(parse_udp4(&good, 0).is_none(), "truncated read");
        let mut b = good.clone();
        b[9] = 6;
        assert!(parse_udp4(&b, b.len()).is_none(), "TCP");
        let mut b = good.clone();
        b[0] = 0x65;
        assert!(parse_udp4(&b, b.len()).is_none(), "IPv6 version");
        let mut b = good.clone();
        b[6] = 0x20; // more fragments
        assert!(parse_udp4(&b, b.len()).is_none(), "fragment");
        let mut b = good.clone();
        b[25] = 200; // UDP length past the datagram
        assert!(parse_udp4(&b, b.len()).is_none(), "UDP length");
        let mut b = good;
        b[3] = 200; // IP total length past what was read
        assert!(parse_udp4(&b, b.len()).is_none(), "IP length");
    }

    #[test]
    fn parse_skips_ip_options() {
        let mut b = vec![0u8; 24 + 8 + 3];
        b[0] = 0x46;
        b[2..4].copy_from_slice(&(35u16).to_be_bytes());
        b[9] = 17;
        b[12..16].copy_from_slice(&[1, 2, 3, 4]);
        b[16..20].copy_from_slice(&[5, 6, 7, 8]);
        b[24..26].copy_from_slice(&9u16.to_be_bytes());
        b[26..28].copy_from_slice(&10u16.to_be_bytes());
        b[28..30].copy_from_slice(&11u16.to_be_bytes());
        let u = parse_udp4(&b, b.len()).unwrap();
        assert_eq!(u.src, "1.2.3.4:9".parse().unwrap());
        assert_eq!(u.dst, "5.6.7.8:10".parse().unwrap());
        assert_eq!((u.payload, u.len), (32, 3));
    }

    #[test]
    fn filter_jumps_all_land_on_drop() {
        // No kernel needed: every conditional jump must target the drop block.
        let owners_like = |ip: Ipv4Addr| {
            // A PortOwners needs a map fd; build the program with a dummy one.
            let fd = std::fs::File::open("/dev/null").unwrap();
            let owners = PortOwners {
                fd: fd.into(),
                start: 20000,
                end: 20099,
            };
            filter_program(ip, &owners, 1)
        };
        for ip in [Ipv4Addr::UNSPECIFIED, Ipv4Addr::LOCALHOST] {
            let p = owners_like(ip);
            let n = p.len();
            for (i, ins) in p.iter().enumerate() {
                let code = (*ins & 0xff) as u8;
                if code & 0x07 == 0x05 || code & 0x07 == 0x06 {
                    if code == 0x85 || code == 0x95 {
                        continue;
                    }
                    let off = ((*ins >> 16) & 0xffff) as u16 as i16;
                    assert_eq!(i as i64 + 1 + i64::from(off), n as i64 - 2, "insn {i}");
                }
            }
        }
    }
}
