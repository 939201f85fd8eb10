//! The media I/O shell: dedicated OS threads that own every relay socket and drive the
//! sans-IO [`Relay`](crate::media::relay::Relay) core.
//!
//! Does: start `threads` workers ("holdfast-media-<n>"); bind an `Open`'s relay sockets
//! (`IP_RECVERR`) in the caller's thread before [`MediaEngine::handle`] returns, answering
//! `Bound` or `OpenFailed` (with the errno's [`BindFailure`]) at once, so the core knows
//! before any SDP naming those ports goes out, with no round trip to a worker; route each
//! [`MediaCommand`] (an `Open` with its bound sockets) to the worker owning its call
//! (`call % threads`, so all streams of a call share a worker and its commands apply in
//! order); on each worker, a raw level-triggered epoll loop hands each datagram to
//! the relay with one `Instant` per wakeup, sends the forwards with `sendmmsg` straight
//! from the receive buffers, reads ICMP errors from the error queue, scans media timeouts
//! every [`SCAN_INTERVAL`], sends gap audio (`RelayUpdate::Fill`) from a leg's RTP socket
//! when its next 20 ms frame is due (the epoll wait ends then), and reports [`MediaEvent`]s to the tokio side through an
//! unbounded channel. Counters are relaxed atomics updated once per batch.
//!
//! Two I/O paths ([`MediaIo`]), chosen once at start:
//! - `socket`: ONE `recvmmsg` per readable relay socket, forwards grouped by sending socket.
//! - `raw` (`raw.rs`): one raw IPv4 socket per worker, whose eBPF filter passes only the
//!   ports of that worker's relays (a shared BPF map says which worker owns each port);
//!   ONE `recvmmsg` reads packets of many streams and ONE `sendmmsg` sends all their
//!   forwards with headers written by us (`IP_HDRINCL`). The relay sockets stay bound for
//!   the port and for ICMP errors, and discard their copy. A relay with an IPv6 leg (each
//!   leg binds in its peer's family) uses the socket path on a raw engine, and a relay
//!   whose leg a `Rebind` moves to IPv6 leaves the raw path for good.
//!
//! Never: decides anything about a call (the core does), blocks a worker (a full socket
//! buffer drops and counts), allocates, formats, logs or reads a map per packet, runs on
//! tokio (no waker per packet), or emits an event after [`MediaEngine::shutdown`].
//!
//! LIFECYCLE of one relay (see `src/media/LIFECYCLE.md`): `Open` → bound (`Bound`, returned
//! by `handle`) → relaying on its worker (`Latched`, `Unreachable`, `Timeout` events as they
//! happen; `Update`s applied in order; a `Rebind` binds one leg's new sockets here, answers
//! `Bound` or `RebindFailed` (old sockets kept), and the worker swaps them in) → `Close` →
//! sockets closed, `Closed` with final stats. A failed bind → `OpenFailed` returned by `handle`, nothing bound, nothing sent to a
//! worker; a worker that cannot add the sockets to its loop → `OpenFailed` event, sockets
//! closed.

mod raw;
pub(super) mod sys;
mod worker;

#[cfg(test)]
mod tests;

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::ops::RangeInclusive;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::mpsc::UnboundedSender;

pub use crate::config::MediaIo;
use crate::media::control::{BindFailure, MediaCommand, MediaEvent, RelayId, RelayIps, RelayPorts};
use crate::media::relay::RelayConfig;
use crate::media::stats::DropCounts;

/// How often each worker checks its relays' media timeouts. Timeouts are seconds long; a
/// 100 ms scan keeps timer work off the per-packet path.
pub const SCAN_INTERVAL: Duration = Duration::from_millis(100);

/// Aggregate counters of all workers, a plain snapshot (for Prometheus / the admin API).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct MediaCounters {
    /// Datagrams read from relay sockets.
    pub packets_received: u64,
    /// RTP packets forwarded (handed to the kernel).
    pub packets_forwarded: u64,
    /// Octets of forwarded RTP.
    pub bytes_forwarded: u64,
    /// RTCP packets forwarded.
    pub rtcp_forwarded: u64,
    /// Datagrams the relay core dropped, by reason (field names = `DropReason::as_str`).
    pub drops: DropCounts,
    /// Forwards (and gap-audio packets) dropped because the sending socket's buffer was
    /// full.
    pub send_would_block: u64,
    /// Forwards (and gap-audio packets) the kernel refused (no route, bad address family,
    /// ...).
    pub send_failed: u64,
    /// Relays currently open.
    pub relays_open: u64,
    /// `Unreachable` events emitted.
    pub unreachable: u64,
    /// Error-queue entries read (ICMP errors of any kind, reported or not).
    pub icmp_errors: u64,
    /// `Timeout` events emitted.
    pub timeouts: u64,
    /// Commands applied (Open, Update, Close), a progress marker for tests and debugging.
    pub commands: u64,
    /// Gap-audio packets (comfort noise / prompt during a re-route) handed to the kernel.
    pub fill_packets: u64,
}

impl MediaCounters {
    /// The relay core's drops as `(DropReason::as_str label, count)`.
    pub fn drops_by_reason(&self) -> [(&'static str, u64); DROP_REASONS] {
        let d = &self.drops;
        [
            ("not_rtp", d.not_rtp),
            ("malformed", d.malformed),
            ("wrong_source", d.wrong_source),
            ("unexpected_source", d.unexpected_source),
            ("learning", d.learning),
            ("no_peer_yet", d.no_peer_yet),
            ("disabled", d.disabled),
        ]
    }

    fn add(&mut self, c: &WorkerCounters) {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        self.packets_received += g(&c.packets_received);
        self.packets_forwarded += g(&c.packets_forwarded);
        self.bytes_forwarded += g(&c.bytes_forwarded);
        self.rtcp_forwarded += g(&c.rtcp_forwarded);
        self.drops.not_rtp += g(&c.drops[0]);
        self.drops.malformed += g(&c.drops[1]);
        self.drops.wrong_source += g(&c.drops[2]);
        self.drops.no_peer_yet += g(&c.drops[3]);
        self.drops.disabled += g(&c.drops[4]);
        self.drops.unexpected_source += g(&c.drops[5]);
        self.drops.learning += g(&c.drops[6]);
        self.send_would_block += g(&c.send_would_block);
        self.send_failed += g(&c.send_failed);
        self.relays_open += g(&c.relays_open);
        self.unreachable += g(&c.unreachable);
        self.icmp_errors += g(&c.icmp_errors);
        self.timeouts += g(&c.timeouts);
        self.commands += g(&c.commands);
        self.fill_packets += g(&c.fill_packets);
    }
}

/// How many [`DropReason`](crate::media::stats::DropReason) kinds the counters keep.
pub(crate) const DROP_REASONS: usize = 7;

/// One worker's counters (written only by that worker, read by anyone).
#[derive(Default)]
pub(crate) struct WorkerCounters {
    packets_received: AtomicU64,
    packets_forwarded: AtomicU64,
    bytes_forwarded: AtomicU64,
    rtcp_forwarded: AtomicU64,
    /// Indexed like [`worker::drop_index`].
    drops: [AtomicU64; DROP_REASONS],
    send_would_block: AtomicU64,
    send_failed: AtomicU64,
    relays_open: AtomicU64,
    unreachable: AtomicU64,
    icmp_errors: AtomicU64,
    timeouts: AtomicU64,
    commands: AtomicU64,
    fill_packets: AtomicU64,
}

/// What the engine and one worker share.
pub(crate) struct Shared {
    wake: sys::EventFd,
    /// Set by the first command sender after the worker last drained its channel, so a
    /// burst of commands costs one eventfd write.
    wake_pending: AtomicBool,
    counters: WorkerCounters,
}

impl Shared {
    fn wake(&self) {
        if !self.wake_pending.swap(true, Ordering::SeqCst) {
            self.wake.notify();
        }
    }
}

/// An `Open` whose sockets the engine bound: `socks` are `[A.rtp, A.rtcp, B.rtp, B.rtcp]`
/// (`None` where RTCP is muxed); `via_raw` is the IPv4 address when the worker's raw path
/// relays them (their own copies of datagrams are already discarded).
pub(crate) struct OpenRelay {
    pub id: RelayId,
    pub ips: RelayIps,
    pub ports: RelayPorts,
    pub config: RelayConfig,
    pub socks: [Option<UdpSocket>; 4],
    pub via_raw: Option<Ipv4Addr>,
}

/// A `Rebind` whose new sockets the engine bound: `socks` are `[rtp, rtcp]` of `side`.
pub(crate) struct RebindRelay {
    pub id: RelayId,
    pub side: crate::media::relay::Side,
    pub ip: IpAddr,
    pub socks: [Option<UdpSocket>; 2],
}

// Commands are rare (a few per call) and moved once; boxing would only add an allocation.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Msg {
    Cmd(MediaCommand),
    Open(OpenRelay),
    Rebind(RebindRelay),
    /// Live statistics of every relay of the worker (for the admin API; rare).
    Stats(mpsc::Sender<Vec<RelayStats>>),
    Shutdown,
}

/// One relay's live statistics: `a_to_b` is built from what leg A sent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RelayStats {
    pub id: crate::media::control::RelayId,
    pub a_to_b: crate::media::stats::StreamStatsSnapshot,
    pub b_to_a: crate::media::stats::StreamStatsSnapshot,
}

struct WorkerHandle {
    tx: mpsc::Sender<Msg>,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// How to start a [`MediaEngine`].
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Worker threads (>= 1).
    pub threads: usize,
    pub io: MediaIo,
    /// The IPv4 relays' bind address (`io: raw` filters on it; unspecified = any local
    /// IPv4); `None` when no relay binds IPv4 (`io: raw` is then unavailable).
    pub raw_bind: Option<Ipv4Addr>,
    /// The relay port range (`io: raw` filters on it).
    pub ports: RangeInclusive<u16>,
}

/// The media relay engine: a fixed set of worker threads, each owning the sockets of the
/// relays of its calls.
pub struct MediaEngine {
    workers: Vec<WorkerHandle>,
    io: MediaIo,
    /// With `io: raw`: the address and port range the workers' raw sockets relay.
    raw_filter: Option<(Ipv4Addr, RangeInclusive<u16>)>,
}

/// The raw sockets of `threads` workers, or why they cannot be had.
fn raw_paths(o: &EngineOptions) -> io::Result<Vec<worker::RawPath>> {
    let Some(ip) = o.raw_bind else {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "io: raw relays IPv4 only, and media.bind has no IPv4 address",
        ));
    };
    let owners = Arc::new(
        raw::PortOwners::new(&o.ports)
            .map_err(|e| io::Error::new(e.kind(), format!("creating the eBPF port map: {e}")))?,
    );
    (0..o.threads)
        .map(|w| {
            let sock = raw::RawSocket::open(ip, &owners, w)
                .map_err(|e| io::Error::new(e.kind(), format!("raw socket: {e}")))?;
            Ok(worker::RawPath::new(
                sock,
                owners.clone(),
                w,
                o.ports.clone(),
            ))
        })
        .collect()
}

impl MediaEngine {
    /// Starts `threads` (>= 1) worker OS threads named "holdfast-media-<n>". `events`
    /// receives every [`MediaEvent`]; send errors (receiver gone) are ignored.
    pub fn start(threads: usize, events: UnboundedSender<MediaEvent>) -> io::Result<MediaEngine> {
        let options = EngineOptions {
            threads,
            io: MediaIo::Socket,
            raw_bind: Some(Ipv4Addr::UNSPECIFIED),
            ports: 1..=u16::MAX,
        };
        MediaEngine::start_with(&options, events)
    }

    /// Starts the engine as `options` say. `io: auto` falls back to `socket` (logging
    /// why) when the raw path cannot be set up; `io: raw` then fails instead.
    pub fn start_with(
        options: &EngineOptions,
        events: UnboundedSender<MediaEvent>,
    ) -> io::Result<MediaEngine> {
        let threads = options.threads;
        if threads == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "media engine needs at least one thread",
            ));
        }
        let mut raws: Vec<Option<worker::RawPath>> = match options.io {
            MediaIo::Socket => Vec::new(),
            MediaIo::Raw => raw_paths(options)?.into_iter().map(Some).collect(),
            MediaIo::Auto => match raw_paths(options) {
                Ok(r) => r.into_iter().map(Some).collect(),
                Err(e) => {
                    tracing::info!(
                        reason = %e,
                        "media io: raw unavailable, relaying through one socket per port"
                    );
                    Vec::new()
                }
            },
        };
        let io = if raws.is_empty() {
            MediaIo::Socket
        } else {
            MediaIo::Raw
        };
        let raw_filter = (io == MediaIo::Raw).then(|| {
            let ip = options.raw_bind.unwrap_or(Ipv4Addr::UNSPECIFIED);
            (ip, options.ports.clone())
        });
        raws.resize_with(threads, || None);
        let mut engine = MediaEngine {
            workers: Vec::with_capacity(threads),
            io,
            raw_filter,
        };
        for (n, raw) in raws.into_iter().enumerate() {
            let shared = Arc::new(Shared {
                wake: sys::EventFd::new()?,
                wake_pending: AtomicBool::new(false),
                counters: WorkerCounters::default(),
            });
            let epoll = sys::Epoll::new()?;
            epoll.add(shared.wake.raw(), worker::WAKE_TOKEN)?;
            if let Some(r) = &raw {
                epoll.add(r.fd(), worker::RAW_TOKEN)?;
            }
            let (tx, rx) = mpsc::channel();
            let (sh, ev) = (shared.clone(), events.clone());
            let thread = std::thread::Builder::new()
                .name(format!("holdfast-media-{n}"))
                .spawn(move || worker::Worker::new(epoll, sh, rx, ev, raw).run())?;
            engine.workers.push(WorkerHandle {
                tx,
                shared,
                thread: Some(thread),
            });
        }
        Ok(engine)
    }

    /// Never blocks; routes to the worker owning `cmd.id().call` (call % threads, so all
    /// streams of a call share a worker). Commands for one id are applied in order.
    ///
    /// An `Open` is bound here first, in the caller's thread (a few non-blocking syscalls per
    /// socket), and answered at once: `Some(Bound)` (the worker then relays on those
    /// sockets) or `Some(OpenFailed)` (what was bound is closed again and nothing reaches a
    /// worker). Feed the answer to the core before draining its transmits. Other commands
    /// return `None`.
    pub fn handle(&self, cmd: MediaCommand) -> Option<MediaEvent> {
        let n = self.workers.len() as u64;
        let w = &self.workers[(cmd.id().call % n) as usize];
        let (msg, answer) = match cmd {
            MediaCommand::Open {
                id,
                ips,
                ports,
                config,
            } => match self.bind(ips, &ports) {
                Ok((socks, via_raw)) => {
                    let open = OpenRelay {
                        id,
                        ips,
                        ports,
                        config,
                        socks,
                        via_raw,
                    };
                    (Msg::Open(open), Some(MediaEvent::Bound { id }))
                }
                Err((port, failure, error)) => {
                    let failed = MediaEvent::OpenFailed {
                        id,
                        port,
                        failure,
                        error,
                    };
                    return Some(failed);
                }
            },
            MediaCommand::Rebind {
                id,
                side,
                ip,
                ports,
            } => {
                let mut socks: [Option<UdpSocket>; 2] = Default::default();
                for (i, port) in [Some(ports.rtp), ports.rtcp].into_iter().enumerate() {
                    let Some(port) = port else { continue };
                    let addr = SocketAddr::new(ip, port);
                    match sys::bind_udp(addr) {
                        Ok(s) => socks[i] = Some(s),
                        Err(e) => {
                            return Some(MediaEvent::RebindFailed {
                                id,
                                side,
                                error: format!("bind {addr}: {e}"),
                            })
                        }
                    }
                }
                let msg = Msg::Rebind(RebindRelay {
                    id,
                    side,
                    ip,
                    socks,
                });
                (msg, Some(MediaEvent::Bound { id }))
            }
            other => (Msg::Cmd(other), None),
        };
        if w.tx.send(msg).is_ok() {
            w.shared.wake();
        }
        answer
    }

    /// Binds the relay sockets of `ports` (leg A's on `ips.a`, leg B's on `ips.b`), in
    /// order; the first failure closes what was bound and says which port failed, how
    /// ([`BindFailure`] from the errno) and the OS's text. Only a relay whose legs are both
    /// on the raw path's IPv4 address goes through the raw path: one with an IPv6 leg uses
    /// its sockets.
    #[allow(clippy::type_complexity)]
    fn bind(
        &self,
        ips: RelayIps,
        ports: &RelayPorts,
    ) -> Result<([Option<UdpSocket>; 4], Option<Ipv4Addr>), (u16, BindFailure, String)> {
        let want = [
            Some(ports.a.rtp),
            ports.a.rtcp,
            Some(ports.b.rtp),
            ports.b.rtcp,
        ];
        let via_raw = self.raw_filter.as_ref().and_then(|(rip, range)| {
            let (IpAddr::V4(v4), IpAddr::V4(b)) = (ips.a, ips.b) else {
                return None;
            };
            let ours = v4 == b && (rip.is_unspecified() || *rip == v4);
            (ours && want.iter().flatten().all(|p| range.contains(p))).then_some(v4)
        });
        let mut socks: [Option<UdpSocket>; 4] = Default::default();
        for (i, port) in want.iter().enumerate() {
            let Some(port) = *port else { continue };
            let ip = if i < 2 { ips.a } else { ips.b };
            let addr = SocketAddr::new(ip, port);
            let bound = sys::bind_udp(addr).and_then(|s| {
                if via_raw.is_some() {
                    raw::discard_datagrams(s.as_raw_fd())?;
                }
                Ok(s)
            });
            match bound {
                Ok(s) => socks[i] = Some(s),
                // `socks` drops here: what was bound is closed again.
                Err(e) => {
                    let failure = BindFailure::from_errno(e.raw_os_error());
                    return Err((port, failure, format!("bind {addr}: {e}")));
                }
            }
        }
        Ok((socks, via_raw))
    }

    /// Live statistics of every open relay. Asks each worker between two batches and
    /// waits for the answers (blocking: call it from a blocking context, e.g.
    /// `spawn_blocking`, with the returned closure); a worker that does not answer within
    /// `timeout` is left out.
    pub fn relay_stats_query(
        &self,
        timeout: Duration,
    ) -> impl FnOnce() -> Vec<RelayStats> + Send + 'static {
        let mut waits = Vec::with_capacity(self.workers.len());
        for w in &self.workers {
            let (tx, rx) = mpsc::channel();
            if w.tx.send(Msg::Stats(tx)).is_ok() {
                w.shared.wake();
                waits.push(rx);
            }
        }
        move || {
            let deadline = std::time::Instant::now() + timeout;
            let mut out = Vec::new();
            for rx in waits {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                if let Ok(v) = rx.recv_timeout(left) {
                    out.extend(v);
                }
            }
            out
        }
    }

    /// The I/O path in use: `socket` or `raw` (never `auto`).
    pub fn io(&self) -> MediaIo {
        self.io
    }

    /// Aggregate counters across workers (relaxed atomics, updated per batch).
    pub fn counters(&self) -> MediaCounters {
        let mut c = MediaCounters::default();
        for w in &self.workers {
            c.add(&w.shared.counters);
        }
        c
    }

    /// Stops the workers (closing all sockets, emitting nothing more) and joins them.
    pub fn shutdown(self) {
        // Drop does it.
    }

    fn stop(&mut self) {
        for w in &self.workers {
            let _ = w.tx.send(Msg::Shutdown);
            w.shared.wake();
        }
        for w in &mut self.workers {
            if let Some(t) = w.thread.take() {
                let _ = t.join();
            }
        }
    }
}

impl Drop for MediaEngine {
    fn drop(&mut self) {
        self.stop();
    }
}
