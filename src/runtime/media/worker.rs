//! One media worker: an OS thread running a level-triggered epoll loop over the sockets of
//! its relays, plus an eventfd that wakes it for commands.
//!
//! Does: per readable socket, ONE `recvmmsg` (the level-triggered loop comes back if more
//! is waiting), the relay core per datagram, forwards grouped per sending socket and sent
//! with `sendmmsg` from the receive buffers; per EPOLLERR, the ICMP errors of the error
//! queue; every [`SCAN_INTERVAL`] the media timeouts; commands when woken. Relays live in a
//! slot vector; an epoll token is `generation << 32 | slot << 2 | socket`, so an event for
//! a closed relay (stale generation) is ignored and the hot path never looks up a map.
//! With `io: raw` ([`RawPath`]): the relays' sockets are watched for errors only, and ONE
//! `recvmmsg` on the worker's raw socket reads datagrams of any of its relays, each routed
//! by a port-indexed table to its relay, with all forwards in ONE `sendmmsg`.
//!
//! Never: allocates, formats or logs per packet (buffers, iovecs and headers are allocated
//! once per worker), blocks on a send, or reads the clock more than once per wakeup.
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::time::Instant;

use tokio::sync::mpsc::UnboundedSender;

use super::raw::{self, parse_udp4, PortOwners, RawBatch, RawSocket};
use super::sys::{self, Epoll};
use super::{Msg, OpenRelay, RebindRelay, Shared, DROP_REASONS, SCAN_INTERVAL};
use crate::media::control::{BindFailure, MediaCommand, MediaEvent, RelayId, RelayUpdate};
use crate::media::relay::{
    Action, DropReason, FillStatus, Relay, Side, SocketKind, FILL_PACKET_LEN,
};
use crate::media::rtp::{classify, PacketClass};
use crate::runtime::batch_udp::{recv_batch, RecvBatch, SendQueue};

/// Epoll data of the worker's eventfd.
pub(super) const WAKE_TOKEN: u64 = u64::MAX;
/// Epoll data of the worker's raw socket (`io: raw`).
pub(super) const RAW_TOKEN: u64 = u64::MAX - 1;
/// Epoll events per wait.
const MAX_EVENTS: usize = 256;

/// Index of a relay socket: `[A.rtp, A.rtcp, B.rtp, B.rtcp]`.
#[inline]
fn sock_index(side: Side, kind: SocketKind) -> usize {
    let s = match side {
        Side::A => 0,
        Side::B => 2,
    };
    match kind {
        SocketKind::Rtp => s,
        SocketKind::Rtcp => s + 1,
    }
}

#[inline]
fn sock_of_index(i: usize) -> (Side, SocketKind) {
    let side = if i < 2 { Side::A } else { Side::B };
    let kind = if i % 2 == 0 {
        SocketKind::Rtp
    } else {
        SocketKind::Rtcp
    };
    (side, kind)
}

/// Index of a drop reason in [`super::WorkerCounters::drops`].
#[inline]
pub(super) fn drop_index(r: DropReason) -> usize {
    match r {
        DropReason::NotRtp => 0,
        DropReason::Malformed(_) => 1,
        DropReason::WrongSource => 2,
        DropReason::NoPeerYet => 3,
        DropReason::Disabled => 4,
        DropReason::UnexpectedSource => 5,
        DropReason::Learning => 6,
    }
}

#[inline]
fn token(generation: u32, slot: usize, sock: usize) -> u64 {
    (u64::from(generation) << 32) | ((slot as u64) << 2) | sock as u64
}

struct Entry {
    id: RelayId,
    relay: Relay,
    socks: [Option<UdpSocket>; 4],
    /// Local port of each socket (0 = none), the source port of raw sends.
    local: [u16; 4],
    /// Relayed through the worker's raw socket (IPv4 only); else through `socks`.
    raw: Option<Ipv4Addr>,
}

/// `io: raw`: the worker's raw socket, the shared port-owner map its filter reads, and
/// which (slot, socket) each port of the range belongs to.
pub(super) struct RawPath {
    sock: RawSocket,
    owners: Arc<PortOwners>,
    worker: usize,
    start: u16,
    /// `(slot << 2 | socket) + 1` per port of the range; 0 = no relay of ours.
    table: Vec<u32>,
    batch: RawBatch,
}

/// The (slot, socket) holding `port`, from a [`RawPath`]'s table.
#[inline]
fn lookup(table: &[u32], start: u16, port: u16) -> Option<(usize, usize)> {
    let v = *table.get(usize::from(port.checked_sub(start)?))?;
    (v != 0).then(|| (((v - 1) >> 2) as usize, ((v - 1) & 3) as usize))
}

impl RawPath {
    pub(super) fn new(
        sock: RawSocket,
        owners: Arc<PortOwners>,
        worker: usize,
        ports: std::ops::RangeInclusive<u16>,
    ) -> RawPath {
        RawPath {
            sock,
            owners,
            worker,
            start: *ports.start(),
            table: vec![0; usize::from(*ports.end() - *ports.start()) + 1],
            batch: RawBatch::new(),
        }
    }

    pub(super) fn fd(&self) -> std::os::fd::RawFd {
        self.sock.raw()
    }

    fn set(&mut self, port: u16, at: Option<(usize, usize)>) -> std::io::Result<()> {
        let i = usize::from(port - self.start);
        self.table[i] = at.map_or(0, |(slot, si)| ((slot as u32) << 2 | si as u32) + 1);
        self.owners.set(port, at.map(|_| self.worker))
    }
}

struct Slot {
    generation: u32,
    entry: Option<Entry>,
}

/// Counts of one batch, added to the shared atomics once per batch.
#[derive(Default)]
struct BatchCounts {
    received: u64,
    forwarded: u64,
    bytes: u64,
    rtcp: u64,
    drops: [u64; DROP_REASONS],
    would_block: u64,
    failed: u64,
}

pub(super) struct Worker {
    epoll: Epoll,
    shared: Arc<Shared>,
    rx: mpsc::Receiver<Msg>,
    events: UnboundedSender<MediaEvent>,
    slots: Vec<Slot>,
    free: Vec<usize>,
    /// Commands only (never the packet path).
    by_id: HashMap<RelayId, usize>,
    recv: RecvBatch,
    queues: [SendQueue; 4],
    ep_events: Box<[libc::epoll_event; MAX_EVENTS]>,
    next_scan: Instant,
    raw: Option<RawPath>,
    /// Relays with gap audio running, as `(slot, generation)` (a handful at most: only
    /// calls in a re-route gap).
    filling: Vec<(usize, u32)>,
    /// The earliest gap-audio frame due among `filling`.
    next_fill: Option<Instant>,
    /// One gap-audio packet (the frames are generated into it, one at a time).
    fill_buf: [u8; FILL_PACKET_LEN],
}

impl Worker {
    pub(super) fn new(
        epoll: Epoll,
        shared: Arc<Shared>,
        rx: mpsc::Receiver<Msg>,
        events: UnboundedSender<MediaEvent>,
        raw: Option<RawPath>,
    ) -> Worker {
        Worker {
            epoll,
            shared,
            rx,
            events,
            slots: Vec::new(),
            free: Vec::new(),
            by_id: HashMap::new(),
            recv: RecvBatch::default(),
            queues: Default::default(),
            ep_events: Box::new([libc::epoll_event { events: 0, u64: 0 }; MAX_EVENTS]),
            next_scan: Instant::now() + SCAN_INTERVAL,
            raw,
            filling: Vec::new(),
            next_fill: None,
            fill_buf: [0; FILL_PACKET_LEN],
        }
    }

    /// The loop; returns on shutdown (dropping every socket, emitting nothing).
    pub(super) fn run(mut self) {
        let mut now = Instant::now();
        loop {
            // From the previous wakeup's clock: at worst the wait ends a little late.
            let wake_at = self
                .next_fill
                .map_or(self.next_scan, |f| f.min(self.next_scan));
            let wait = wake_at
                .saturating_duration_since(now)
                .as_micros()
                .div_ceil(1000)
                .min(i32::MAX as u128) as i32;
            let n = self.epoll.wait(&mut self.ep_events[..], wait);
            // One clock read per wakeup serves every batch of it.
            now = Instant::now();
            let mut woken = false;
            for i in 0..n {
                let ev = self.ep_events[i];
                let (bits, tok) = (ev.events, ev.u64);
                if tok == WAKE_TOKEN {
                    woken = true;
                } else if tok == RAW_TOKEN {
                    self.handle_raw(now);
                } else {
                    self.handle_socket(tok, bits, now);
                }
            }
            if woken && !self.handle_commands(now) {
                return;
            }
            if self.next_fill.is_some_and(|f| f <= now) {
                self.send_fills(now);
            }
            if now >= self.next_scan {
                self.scan_timeouts(now);
                self.next_scan = now + SCAN_INTERVAL;
            }
        }
    }

    #[inline]
    fn emit(&self, ev: MediaEvent) {
        // The core is gone only when the process is shutting down.
        let _ = self.events.send(ev);
    }

    fn handle_socket(&mut self, tok: u64, bits: u32, now: Instant) {
        let slot = ((tok >> 2) & 0x3fff_ffff) as usize;
        let generation = (tok >> 32) as u32;
        let si = (tok & 3) as usize;
        let Worker {
            slots,
            recv,
            queues,
            shared,
            events,
            ..
        } = self;
        let Some(Slot {
            generation: g,
            entry: Some(entry),
        }) = slots.get_mut(slot)
        else {
            return;
        };
        if *g != generation {
            return;
        }
        let Some(fd) = entry.socks[si].as_ref().map(|s| s.as_raw_fd()) else {
            return;
        };
        let (side, kind) = sock_of_index(si);
        let counters = &shared.counters;

        if bits & libc::EPOLLERR as u32 != 0 {
            let relay = &mut entry.relay;
            let mut reported = 0;
            let read = sys::drain_error_queue(fd, |dest| {
                if relay.handle_unreachable(side, dest) {
                    reported += 1;
                    let _ = events.send(MediaEvent::Unreachable {
                        id: entry.id,
                        side,
                        addr: dest,
                    });
                }
            });
            counters
                .icmp_errors
                .fetch_add(read as u64, Ordering::Relaxed);
            if reported > 0 {
                counters.unreachable.fetch_add(reported, Ordering::Relaxed);
            }
        }
        if bits & libc::EPOLLIN as u32 == 0 {
            return;
        }
        let n = match recv_batch(fd, recv) {
            Ok(n) if n > 0 => n,
            // WouldBlock, or a pending socket error (consumed; EPOLLERR brings the queue).
            _ => return,
        };
        let mut c = BatchCounts {
            received: n as u64,
            ..BatchCounts::default()
        };
        let relay = &mut entry.relay;
        for i in 0..n {
            let Some((buf, from)) = recv.get_mut(i) else {
                c.drops[drop_index(DropReason::NotRtp)] += 1;
                continue;
            };
            let action = match kind {
                SocketKind::Rtp => relay.handle_rtp(side, from, buf, now),
                SocketKind::Rtcp => relay.handle_rtcp(side, from, buf, now),
            };
            match action {
                Action::Forward { to, len, via } => {
                    let mut q = sock_index(via.side, via.kind);
                    if entry.socks[q].is_none() {
                        // No separate RTCP socket on that leg: send from its RTP socket.
                        q = sock_index(via.side, SocketKind::Rtp);
                    }
                    if kind == SocketKind::Rtcp
                        || matches!(classify(&buf[..len.min(buf.len())]), PacketClass::Rtcp)
                    {
                        c.rtcp += 1;
                    } else {
                        c.forwarded += 1;
                        c.bytes += len as u64;
                    }
                    queues[q].push(to, i, len);
                }
                Action::Drop(r) => c.drops[drop_index(r)] += 1,
            }
        }
        for (q, queue) in queues.iter_mut().enumerate() {
            if queue.is_empty() {
                continue;
            }
            let Some(out_fd) = entry.socks[q].as_ref().map(|s| s.as_raw_fd()) else {
                c.failed += queue.len() as u64;
                queue.clear();
                continue;
            };
            let o = queue.flush(out_fd, recv);
            c.would_block += o.would_block as u64;
            c.failed += o.failed as u64;
        }
        c.unsent(c.would_block + c.failed);
        while let Some((side, kind, addr)) = relay.poll_latched() {
            let _ = events.send(MediaEvent::Latched {
                id: entry.id,
                side,
                kind,
                addr,
            });
        }
        while let Some((side, gap)) = relay.poll_resumed() {
            let _ = events.send(MediaEvent::Resumed {
                id: entry.id,
                side,
                gap,
            });
        }
        add_batch(counters, &c);
    }

    /// One `recvmmsg` on the raw socket: every datagram goes to the relay owning its
    /// destination port, and every forward leaves in one `sendmmsg`.
    fn handle_raw(&mut self, now: Instant) {
        let Worker {
            slots,
            raw,
            shared,
            events,
            ..
        } = self;
        let Some(raw) = raw.as_mut() else { return };
        let fd = raw.fd();
        let RawPath {
            batch,
            table,
            start: first_port,
            ..
        } = raw;
        let n = batch.recv(fd);
        if n == 0 {
            return;
        }
        let mut c = BatchCounts::default();
        for i in 0..n {
            let (buf, got) = batch.datagram(i);
            let Some(u) = parse_udp4(buf, got) else {
                c.received += 1;
                c.drops[drop_index(DropReason::NotRtp)] += 1;
                continue;
            };
            // A port no relay of ours holds (closed a moment ago): not ours to count.
            let Some((slot, si)) = lookup(table, *first_port, u.dst.port()) else {
                continue;
            };
            let Some(entry) = slots.get_mut(slot).and_then(|s| s.entry.as_mut()) else {
                continue;
            };
            let Some(src_ip) = entry.raw else { continue };
            c.received += 1;
            let (side, kind) = sock_of_index(si);
            let payload = &mut buf[u.payload..u.payload + u.len];
            let action = match kind {
                SocketKind::Rtp => {
                    entry
                        .relay
                        .handle_rtp(side, SocketAddr::V4(u.src), payload, now)
                }
                SocketKind::Rtcp => {
                    entry
                        .relay
                        .handle_rtcp(side, SocketAddr::V4(u.src), payload, now)
                }
            };
            let forward = match action {
                Action::Forward { to, len, via } => {
                    let mut q = sock_index(via.side, via.kind);
                    if entry.local[q] == 0 {
                        // No separate RTCP socket on that leg: send from its RTP port.
                        q = sock_index(via.side, SocketKind::Rtp);
                    }
                    match to {
                        SocketAddr::V4(to) if u.payload + len <= buf.len() => {
                            if kind == SocketKind::Rtcp
                                || matches!(
                                    classify(&buf[u.payload..u.payload + len]),
                                    PacketClass::Rtcp
                                )
                            {
                                c.rtcp += 1;
                            } else {
                                c.forwarded += 1;
                                c.bytes += len as u64;
                            }
                            let from = SocketAddrV4::new(src_ip, entry.local[q]);
                            let start = raw::frame_udp4(buf, u.payload, len, from, to);
                            Some((start, u.payload + len - start, to))
                        }
                        // An IPv6 peer of an IPv4 relay cannot be reached from it.
                        _ => {
                            c.failed += 1;
                            None
                        }
                    }
                }
                Action::Drop(r) => {
                    c.drops[drop_index(r)] += 1;
                    None
                }
            };
            while let Some((side, kind, addr)) = entry.relay.poll_latched() {
                let _ = events.send(MediaEvent::Latched {
                    id: entry.id,
                    side,
                    kind,
                    addr,
                });
            }
            while let Some((side, gap)) = entry.relay.poll_resumed() {
                let _ = events.send(MediaEvent::Resumed {
                    id: entry.id,
                    side,
                    gap,
                });
            }
            if let Some((start, len, to)) = forward {
                batch.queue(i, start, len, to);
            }
        }
        let o = batch.flush(fd);
        c.would_block += o.would_block as u64;
        c.failed += o.failed as u64;
        // The IPv6-peer failures counted above were never counted as forwarded.
        c.unsent((o.would_block + o.failed) as u64);
        add_batch(&shared.counters, &c);
    }

    /// Applies every queued command; `false` on shutdown.
    fn handle_commands(&mut self, now: Instant) -> bool {
        self.shared.wake.drain();
        // Cleared before draining: a command sent after this point wakes us again.
        self.shared.wake_pending.store(false, Ordering::SeqCst);
        loop {
            match self.rx.try_recv() {
                Ok(Msg::Cmd(cmd)) => {
                    self.apply(cmd, now);
                    self.shared
                        .counters
                        .commands
                        .fetch_add(1, Ordering::Relaxed);
                }
                Ok(Msg::Open(o)) => {
                    self.open(o, now);
                    self.shared
                        .counters
                        .commands
                        .fetch_add(1, Ordering::Relaxed);
                }
                Ok(Msg::Rebind(r)) => {
                    self.rebind(r);
                    self.shared
                        .counters
                        .commands
                        .fetch_add(1, Ordering::Relaxed);
                }
                Ok(Msg::Stats(reply)) => {
                    let stats = self
                        .slots
                        .iter()
                        .filter_map(|s| s.entry.as_ref())
                        .map(|e| super::RelayStats {
                            id: e.id,
                            a_to_b: e.relay.stats(Side::A),
                            b_to_a: e.relay.stats(Side::B),
                        })
                        .collect();
                    let _ = reply.send(stats);
                }
                Ok(Msg::Shutdown) | Err(mpsc::TryRecvError::Disconnected) => return false,
                Err(mpsc::TryRecvError::Empty) => return true,
            }
        }
    }

    fn apply(&mut self, cmd: MediaCommand, now: Instant) {
        match cmd {
            // The engine binds every Open and sends it as `Msg::Open`.
            MediaCommand::Open { id, .. } | MediaCommand::Rebind { id, .. } => {
                tracing::warn!(relay = %id, "media open or rebind without bound sockets ignored");
            }
            MediaCommand::Update { id, update } => {
                let Some(entry) = self.entry_mut(id) else {
                    tracing::debug!(relay = %id, "media update for an unknown relay ignored");
                    return;
                };
                let r = &mut entry.relay;
                match update {
                    RelayUpdate::Relatch {
                        side,
                        rtp,
                        rtcp,
                        rtcp_mux,
                        latch,
                    } => {
                        r.relatch(side, rtp, rtcp, latch, now);
                        r.set_rtcp_mux(side, rtcp_mux);
                    }
                    RelayUpdate::SetEnabled { from, enabled } => r.set_enabled(from, enabled, now),
                    RelayUpdate::SetPtMap { from, map } => r.set_pt_map(from, map),
                    RelayUpdate::SourceSwitch { side } => r.handle_source_switch(side, now),
                    RelayUpdate::Mute { from, muted } => r.set_muted(from, muted),
                    RelayUpdate::Probe { side } => {
                        let to = r.leg(side).rtp().destination();
                        let sock = entry.socks[sock_index(side, SocketKind::Rtp)].as_ref();
                        if let (Some(to), Some(sock)) = (to, sock) {
                            // Errors come back through the error queue (IP_RECVERR).
                            let sent = sock.send_to(&[], to);
                            tracing::debug!(relay = %id, ?side, %to, ?sent, "media probe");
                        }
                    }
                    RelayUpdate::Fill {
                        toward,
                        audio,
                        negotiated,
                    } => {
                        let status = r.handle_fill(toward, audio, negotiated, now);
                        tracing::debug!(relay = %id, ?toward, ?audio, ?status, "gap audio");
                        if matches!(status, FillStatus::Started(_)) {
                            let slot = self.by_id[&id];
                            let key = (slot, self.slots[slot].generation);
                            if !self.filling.contains(&key) {
                                self.filling.push(key);
                            }
                            // The first frame is due now: sent in this wakeup.
                            self.next_fill = Some(now);
                        }
                    }
                }
            }
            MediaCommand::Close { id } => self.close(id),
        }
    }

    fn entry_mut(&mut self, id: RelayId) -> Option<&mut Entry> {
        let slot = *self.by_id.get(&id)?;
        self.slots.get_mut(slot)?.entry.as_mut()
    }

    /// Starts relaying on the sockets the engine bound (`o.socks`, indexed like
    /// [`sock_index`]). Only the worker's own steps can fail here (epoll, the raw filter's
    /// map): `OpenFailed` then, after the engine's `Bound`, and the sockets are closed.
    fn open(&mut self, o: OpenRelay, now: Instant) {
        let OpenRelay {
            id,
            ips,
            ports,
            config,
            socks,
            via_raw,
        } = o;
        if self.by_id.contains_key(&id) {
            tracing::warn!(relay = %id, "media open for a relay already open ignored");
            return;
        }
        let want = [
            Some(ports.a.rtp),
            ports.a.rtcp,
            Some(ports.b.rtp),
            ports.b.rtcp,
        ];
        // Raw only if this worker has the raw path the engine bound for.
        let via_raw = via_raw.filter(|_| self.raw.is_some());
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.slots.push(Slot {
                    generation: 0,
                    entry: None,
                });
                self.slots.len() - 1
            }
        };
        let generation = self.slots[slot].generation;
        // Through the raw socket, the relay's own sockets only report ICMP errors.
        let interest = if via_raw.is_some() {
            0
        } else {
            libc::EPOLLIN as u32
        };
        let local = want.map(|p| p.unwrap_or(0));
        for (i, s) in socks.iter().enumerate() {
            let Some(s) = s else { continue };
            let routed = self
                .epoll
                .add_events(s.as_raw_fd(), token(generation, slot, i), interest)
                .map_err(|e| {
                    (
                        e.raw_os_error(),
                        format!(
                            "epoll add {}:{}: {e}",
                            if i < 2 { ips.a } else { ips.b },
                            local[i]
                        ),
                    )
                })
                .and_then(|()| match self.raw.as_mut() {
                    Some(r) if via_raw.is_some() => r.set(local[i], Some((slot, i))).map_err(|e| {
                        let text = format!("raw filter map, port {}: {e}", local[i]);
                        (e.raw_os_error(), text)
                    }),
                    _ => Ok(()),
                });
            if let Err((errno, error)) = routed {
                for (j, s) in socks.iter().enumerate() {
                    let Some(s) = s else { continue };
                    self.epoll.delete(s.as_raw_fd());
                    if let (Some(r), Some(_)) = (self.raw.as_mut(), via_raw) {
                        let _ = r.set(local[j], None);
                    }
                }
                self.free.push(slot);
                self.emit(MediaEvent::OpenFailed {
                    id,
                    port: local[i],
                    // Not the port's fault, whatever the errno: the port goes back.
                    failure: match BindFailure::from_errno(errno) {
                        BindFailure::AddrInUse => BindFailure::Other,
                        f => f,
                    },
                    error,
                });
                return;
            }
        }
        self.slots[slot].entry = Some(Entry {
            id,
            relay: Relay::new(config, now),
            socks,
            local,
            raw: via_raw,
        });
        self.by_id.insert(id, slot);
        self.shared
            .counters
            .relays_open
            .fetch_add(1, Ordering::Relaxed);
        tracing::debug!(relay = %id, a = %ips.a, b = %ips.b, ?ports, "media relay open");
    }

    /// Puts `r.socks` in place of leg `r.side`'s sockets (same ports, another address
    /// family). A relay on the raw path leaves it first (the raw path is IPv4 only): its
    /// ports leave the filter and its other sockets read their own datagrams again. The old
    /// sockets close here; the relay core keeps its state (the core relatches the leg).
    fn rebind(&mut self, r: RebindRelay) {
        let RebindRelay {
            id,
            side,
            ip,
            socks,
        } = r;
        let Some(&slot) = self.by_id.get(&id) else {
            tracing::debug!(relay = %id, "media rebind for an unknown relay ignored");
            return;
        };
        let generation = self.slots[slot].generation;
        let Some(entry) = self.slots[slot].entry.as_mut() else {
            return;
        };
        let first = sock_index(side, SocketKind::Rtp);
        if entry.raw.is_some() {
            for (i, s) in entry.socks.iter().enumerate() {
                if let (Some(raw), true) = (self.raw.as_mut(), entry.local[i] != 0) {
                    let _ = raw.set(entry.local[i], None);
                }
                let Some(s) = s else { continue };
                self.epoll.delete(s.as_raw_fd());
                if i == first || i == first + 1 {
                    continue; // replaced below
                }
                let fd = s.as_raw_fd();
                if let Err(e) = raw::keep_datagrams(fd).and_then(|()| {
                    self.epoll
                        .add_events(fd, token(generation, slot, i), libc::EPOLLIN as u32)
                }) {
                    tracing::warn!(relay = %id, "media rebind: moving off the raw path: {e}");
                }
            }
            entry.raw = None;
        }
        for (k, new) in socks.into_iter().enumerate() {
            let i = first + k;
            if let Some(old) = entry.socks[i].take() {
                self.epoll.delete(old.as_raw_fd());
            }
            if let Some(s) = &new {
                if let Err(e) = self.epoll.add_events(
                    s.as_raw_fd(),
                    token(generation, slot, i),
                    libc::EPOLLIN as u32,
                ) {
                    tracing::warn!(relay = %id, "media rebind: epoll add {ip}:{}: {e}", entry.local[i]);
                }
            }
            entry.socks[i] = new;
        }
        tracing::debug!(relay = %id, ?side, %ip, "media relay leg rebound");
    }

    fn close(&mut self, id: RelayId) {
        let Some(slot) = self.by_id.remove(&id) else {
            tracing::debug!(relay = %id, "media close for an unknown relay ignored");
            return;
        };
        let s = &mut self.slots[slot];
        let Some(entry) = s.entry.take() else { return };
        // A new generation: events already returned for the old sockets are ignored.
        s.generation = s.generation.wrapping_add(1);
        self.free.push(slot);
        if let (Some(r), Some(_)) = (self.raw.as_mut(), entry.raw) {
            // First out of the filter, so nothing more is queued for these ports.
            for &p in entry.local.iter().filter(|&&p| p != 0) {
                let _ = r.set(p, None);
            }
        }
        for sock in entry.socks.iter().flatten() {
            self.epoll.delete(sock.as_raw_fd());
        }
        drop(entry.socks);
        self.shared
            .counters
            .relays_open
            .fetch_sub(1, Ordering::Relaxed);
        self.emit(MediaEvent::Closed {
            id,
            a_to_b: entry.relay.stats(Side::A),
            b_to_a: entry.relay.stats(Side::B),
        });
    }

    /// Sends every gap-audio frame due at `now` from the leg's RTP socket (also for relays of
    /// the raw path: the socket is bound to the same address and port the raw forwards
    /// carry as source, and sending from it is unaffected by its discard-all receive
    /// filter). One `sendto` per frame: fills run only during re-route gaps, 50 frames/s
    /// per relay. Forgets relays whose fill ended (a packet was forwarded again, `None`,
    /// closed) and recomputes the next deadline.
    fn send_fills(&mut self, now: Instant) {
        let Worker {
            slots,
            filling,
            fill_buf,
            shared,
            ..
        } = self;
        let (mut sent, mut would_block, mut failed) = (0u64, 0u64, 0u64);
        let mut next: Option<Instant> = None;
        filling.retain(|&(slot, generation)| {
            let Some(Slot {
                generation: g,
                entry: Some(entry),
            }) = slots.get_mut(slot)
            else {
                return false;
            };
            if *g != generation {
                return false;
            }
            while let Some(p) = entry.relay.poll_fill(now, fill_buf) {
                let Some(sock) = &entry.socks[sock_index(p.via.side, p.via.kind)] else {
                    failed += 1;
                    continue;
                };
                match sock.send_to(&fill_buf[..p.len], p.to) {
                    Ok(_) => sent += 1,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => would_block += 1,
                    Err(_) => failed += 1,
                }
            }
            match entry.relay.next_fill_at() {
                Some(at) => {
                    next = Some(next.map_or(at, |n| n.min(at)));
                    true
                }
                None => false,
            }
        });
        self.next_fill = next;
        let c = &shared.counters;
        for (a, v) in [
            (&c.fill_packets, sent),
            (&c.send_would_block, would_block),
            (&c.send_failed, failed),
        ] {
            if v != 0 {
                a.fetch_add(v, Ordering::Relaxed);
            }
        }
    }

    fn scan_timeouts(&mut self, now: Instant) {
        let mut fired = 0;
        for s in &mut self.slots {
            let Some(e) = s.entry.as_mut() else { continue };
            // At most one report per leg per scan (a zero timeout must not spin).
            for _ in 0..2 {
                let Some(t) = e.relay.poll_media_timeout(now) else {
                    break;
                };
                e.relay.restart_idle_clock(t.side, now);
                fired += 1;
                let _ = self.events.send(MediaEvent::Timeout {
                    id: e.id,
                    side: t.side,
                    idle_for: t.idle_for,
                });
            }
        }
        if fired > 0 {
            self.shared
                .counters
                .timeouts
                .fetch_add(fired, Ordering::Relaxed);
        }
    }
}

impl BatchCounts {
    /// `n` counted forwards did not go out: they are not forwarded (the relay's own stats
    /// still count them), taken from RTP first, then RTCP.
    fn unsent(&mut self, n: u64) {
        let from_rtp = n.min(self.forwarded);
        self.forwarded -= from_rtp;
        self.rtcp = self.rtcp.saturating_sub(n - from_rtp);
    }
}

fn add_batch(c: &super::WorkerCounters, b: &BatchCounts) {
    let add = |a: &std::sync::atomic::AtomicU64, v: u64| {
        if v != 0 {
            a.fetch_add(v, Ordering::Relaxed);
        }
    };
    add(&c.packets_received, b.received);
    add(&c.packets_forwarded, b.forwarded);
    add(&c.bytes_forwarded, b.bytes);
    add(&c.rtcp_forwarded, b.rtcp);
    for (a, &v) in c.drops.iter().zip(b.drops.iter()) {
        add(a, v);
    }
    add(&c.send_would_block, b.would_block);
    add(&c.send_failed, b.failed);
}
