//! Thin, allocation-free wrappers over the Linux calls the media workers need: epoll
//! (level-triggered), an eventfd to wake a worker, relay sockets with `IP_RECVERR`, and
//! reading ICMP errors from a socket's error queue (`recvmsg(MSG_ERRQUEUE)`).
//!
//! Never: allocates (except the error text of a failed bind), blocks, or interprets
//! datagrams.
use std::io;
use std::mem::{size_of, zeroed};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use crate::runtime::batch_udp::from_storage;

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// A level-triggered epoll instance.
pub(super) struct Epoll {
    fd: OwnedFd,
}

impl Epoll {
    pub(super) fn new() -> io::Result<Epoll> {
        // SAFETY: plain syscall; the returned fd is owned below.
        let fd = cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        // SAFETY: fd is a fresh descriptor nobody else owns.
        Ok(Epoll {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Watch `fd` for readability (errors are always reported) with `token` as its data.
    pub(super) fn add(&self, fd: RawFd, token: u64) -> io::Result<()> {
        self.add_events(fd, token, libc::EPOLLIN as u32)
    }

    /// Watch `fd` for `events` (0 = errors only, which epoll always reports).
    pub(super) fn add_events(&self, fd: RawFd, token: u64, events: u32) -> io::Result<()> {
        let mut ev = libc::epoll_event { events, u64: token };
        // SAFETY: ev is a valid epoll_event for the duration of the call.
        cvt(unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) })?;
        Ok(())
    }

    /// Stop watching `fd` (before closing it, so no event for it is pending afterwards).
    pub(super) fn delete(&self, fd: RawFd) {
        let mut ev = libc::epoll_event { events: 0, u64: 0 };
        // SAFETY: as above; failure (fd not registered) is harmless.
        unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), libc::EPOLL_CTL_DEL, fd, &mut ev) };
    }

    /// Wait up to `timeout_ms` (-1 = forever) for events; returns how many were filled in.
    /// An interrupted wait returns 0.
    pub(super) fn wait(&self, events: &mut [libc::epoll_event], timeout_ms: i32) -> usize {
        let max = events.len().min(i32::MAX as usize) as libc::c_int;
        // SAFETY: events is a valid, writable array of `max` entries.
        let n =
            unsafe { libc::epoll_wait(self.fd.as_raw_fd(), events.as_mut_ptr(), max, timeout_ms) };
        if n < 0 {
            0
        } else {
            n as usize
        }
    }
}

/// A non-blocking eventfd: written by command senders, read by the worker.
pub(super) struct EventFd {
    fd: OwnedFd,
}

impl EventFd {
    pub(super) fn new() -> io::Result<EventFd> {
        // SAFETY: plain syscall; the returned fd is owned below.
        let fd = cvt(unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) })?;
        // SAFETY: fd is a fresh descriptor nobody else owns.
        Ok(EventFd {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    pub(super) fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Make the eventfd readable (wakes the worker's epoll_wait).
    pub(super) fn notify(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64. A full counter (EAGAIN) is already
        // readable, which is all we need.
        unsafe { libc::write(self.fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    /// Reset the counter (the worker then drains its command channel).
    pub(super) fn drain(&self) {
        let mut v: u64 = 0;
        // SAFETY: reads 8 bytes into a live u64; EAGAIN (already 0) is fine.
        unsafe { libc::read(self.fd.as_raw_fd(), (&mut v as *mut u64).cast(), 8) };
    }
}

fn set_int_opt(fd: RawFd, level: libc::c_int, name: libc::c_int, v: libc::c_int) -> io::Result<()> {
    // SAFETY: passes a pointer to a live c_int and its size.
    cvt(unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&v as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    })?;
    Ok(())
}

/// A relay socket bound on `addr`: non-blocking, close-on-exec, no `SO_REUSEADDR` (a port
/// in use must fail), with `IP_RECVERR`/`IPV6_RECVERR` so ICMP errors for what we send are
/// queued on the socket's error queue (and raise EPOLLERR) even though it is unconnected.
pub(super) fn bind_udp(addr: SocketAddr) -> io::Result<UdpSocket> {
    let s = UdpSocket::bind(addr)?;
    s.set_nonblocking(true)?;
    enable_recverr(s.as_raw_fd(), addr.is_ipv6())?;
    Ok(s)
}

/// `IP_RECVERR` (and `IPV6_RECVERR` for an IPv6 socket) on `fd`: ICMP errors for what an
/// unconnected UDP socket sends are queued on its error queue ([`drain_error_queue`])
/// instead of being lost.
pub(in crate::runtime) fn enable_recverr(fd: RawFd, ipv6: bool) -> io::Result<()> {
    if ipv6 {
        set_int_opt(fd, libc::SOL_IPV6, libc::IPV6_RECVERR, 1)?;
        // IPv4-mapped peers of a dual-stack socket report through the v4 option.
        let _ = set_int_opt(fd, libc::SOL_IP, libc::IP_RECVERR, 1);
        Ok(())
    } else {
        set_int_opt(fd, libc::SOL_IP, libc::IP_RECVERR, 1)
    }
}

/// Most error-queue entries read per EPOLLERR (the rest come back on the next wait:
/// epoll is level-triggered).
const MAX_ERRORS_PER_CALL: usize = 64;

/// Reads the socket's error queue. For each ICMP/ICMPv6 "port / host / network
/// unreachable" calls `unreachable(dest)`, where `dest` is the address we had sent to.
/// Returns how many entries were read (any origin). Clears a pending socket error when the
/// queue was empty, so a level-triggered EPOLLERR cannot spin.
pub(in crate::runtime) fn drain_error_queue(
    fd: RawFd,
    mut unreachable: impl FnMut(SocketAddr),
) -> usize {
    let mut read = 0;
    while read < MAX_ERRORS_PER_CALL {
        // SAFETY: plain old data; all-zero is valid.
        let mut name: libc::sockaddr_storage = unsafe { zeroed() };
        let mut data = [0u8; 64];
        // u64 array: cmsg buffers must be aligned for cmsghdr.
        let mut control = [0u64; 64];
        let mut iov = libc::iovec {
            iov_base: data.as_mut_ptr().cast(),
            iov_len: data.len(),
        };
        // SAFETY: plain old data; the pointers set below reference live locals.
        let mut msg: libc::msghdr = unsafe { zeroed() };
        msg.msg_name = (&mut name as *mut libc::sockaddr_storage).cast();
        msg.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = size_of::<[u64; 64]>() as _;
        // SAFETY: msg references live buffers; MSG_ERRQUEUE never blocks.
        let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_ERRQUEUE | libc::MSG_DONTWAIT) };
        if n < 0 {
            break;
        }
        read += 1;
        // SAFETY: the kernel filled msg_control with msg_controllen bytes of cmsgs; the
        // CMSG_* macros walk them within that bound.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&msg);
            while !c.is_null() {
                let h = &*c;
                let ours = (h.cmsg_level == libc::SOL_IP && h.cmsg_type == libc::IP_RECVERR)
                    || (h.cmsg_level == libc::SOL_IPV6 && h.cmsg_type == libc::IPV6_RECVERR);
                if ours {
                    let ee: libc::sock_extended_err =
                        std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                    let icmp = ee.ee_origin == libc::SO_EE_ORIGIN_ICMP
                        || ee.ee_origin == libc::SO_EE_ORIGIN_ICMP6;
                    let unreach = matches!(
                        ee.ee_errno as libc::c_int,
                        libc::ECONNREFUSED | libc::EHOSTUNREACH | libc::ENETUNREACH
                    );
                    if icmp && unreach {
                        if let Some(dest) = from_storage(&name) {
                            unreachable(dest);
                        }
                    }
                }
                c = libc::CMSG_NXTHDR(&msg, c);
            }
        }
    }
    if read == 0 {
        let mut err: libc::c_int = 0;
        let mut len = size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: reads SO_ERROR into a live c_int (this clears the pending error).
        unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_ERROR,
                (&mut err as *mut libc::c_int).cast(),
                &mut len,
            )
        };
    }
    read
}
