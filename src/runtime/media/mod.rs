//! The media I/O shell: dedicated OS threads that own every relay socket and drive the
//! sans-IO [`Relay`](crate::media::relay::Relay) core.
//!
//! Does: start `threads` workers ("holdfast-media-<n>"); route each
//! [`MediaCommand`] to the worker owning its call (`call % threads`, so all streams of a
//! call share a worker and its commands apply in order); on each worker, a raw
//! level-triggered epoll loop binds relay sockets (`IP_RECVERR`), reads ONE `recvmmsg`
//! batch per readable socket, hands each datagram to the relay with one `Instant` per
//! wakeup, sends the forwards grouped by sending socket with `sendmmsg` straight from the
//! receive buffers, reads ICMP errors from the error queue, scans media timeouts every
//! [`SCAN_INTERVAL`], and reports [`MediaEvent`]s to the tokio side through an unbounded
//! channel. Counters are relaxed atomics updated once per batch.
//!
//! Never: decides anything about a call (the core does), blocks a worker (a full socket
//! buffer drops and counts), allocates, formats, logs or reads a map per packet, runs on
//! tokio (no waker per packet), or emits an event after [`MediaEngine::shutdown`].
//!
//! LIFECYCLE of one relay (see `src/media/LIFECYCLE.md`): `Open` → bound and relaying
//! (`Latched`, `Unreachable`, `Timeout` events as they happen; `Update`s applied in order)
//! → `Close` → sockets closed, `Closed` with final stats. A failed `Open` → `OpenFailed`,
//! nothing bound.

mod sys;
mod worker;

#[cfg(test)]
mod tests;

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::mpsc::UnboundedSender;

use crate::media::control::{MediaCommand, MediaEvent};
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
    /// Forwards dropped because the sending socket's buffer was full.
    pub send_would_block: u64,
    /// Forwards the kernel refused (no route, bad address family, ...).
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
}

impl MediaCounters {
    /// The relay core's drops as `(DropReason::as_str label, count)`.
    pub fn drops_by_reason(&self) -> [(&'static str, u64); 5] {
        let d = &self.drops;
        [
            ("not_rtp", d.not_rtp),
            ("malformed", d.malformed),
            ("wrong_source", d.wrong_source),
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
        self.send_would_block += g(&c.send_would_block);
        self.send_failed += g(&c.send_failed);
        self.relays_open += g(&c.relays_open);
        self.unreachable += g(&c.unreachable);
        self.icmp_errors += g(&c.icmp_errors);
        self.timeouts += g(&c.timeouts);
        self.commands += g(&c.commands);
    }
}

/// One worker's counters (written only by that worker, read by anyone).
#[derive(Default)]
pub(crate) struct WorkerCounters {
    packets_received: AtomicU64,
    packets_forwarded: AtomicU64,
    bytes_forwarded: AtomicU64,
    rtcp_forwarded: AtomicU64,
    /// Indexed like [`worker::drop_index`].
    drops: [AtomicU64; 5],
    send_would_block: AtomicU64,
    send_failed: AtomicU64,
    relays_open: AtomicU64,
    unreachable: AtomicU64,
    icmp_errors: AtomicU64,
    timeouts: AtomicU64,
    commands: AtomicU64,
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

// Commands are rare (a few per call) and moved once; boxing would only add an allocation.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Msg {
    Cmd(MediaCommand),
    Shutdown,
}

struct WorkerHandle {
    tx: mpsc::Sender<Msg>,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// The media relay engine: a fixed set of worker threads, each owning the sockets of the
/// relays of its calls.
pub struct MediaEngine {
    workers: Vec<WorkerHandle>,
}

impl MediaEngine {
    /// Starts `threads` (>= 1) worker OS threads named "holdfast-media-<n>". `events`
    /// receives every [`MediaEvent`]; send errors (receiver gone) are ignored.
    pub fn start(threads: usize, events: UnboundedSender<MediaEvent>) -> io::Result<MediaEngine> {
        if threads == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "media engine needs at least one thread",
            ));
        }
        let mut engine = MediaEngine {
            workers: Vec::with_capacity(threads),
        };
        for n in 0..threads {
            let shared = Arc::new(Shared {
                wake: sys::EventFd::new()?,
                wake_pending: AtomicBool::new(false),
                counters: WorkerCounters::default(),
            });
            let epoll = sys::Epoll::new()?;
            epoll.add(shared.wake.raw(), worker::WAKE_TOKEN)?;
            let (tx, rx) = mpsc::channel();
            let (sh, ev) = (shared.clone(), events.clone());
            let thread = std::thread::Builder::new()
                .name(format!("holdfast-media-{n}"))
                .spawn(move || worker::Worker::new(epoll, sh, rx, ev).run())?;
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
    pub fn handle(&self, cmd: MediaCommand) {
        let n = self.workers.len() as u64;
        let w = &self.workers[(cmd.id().call % n) as usize];
        if w.tx.send(Msg::Cmd(cmd)).is_ok() {
            w.shared.wake();
        }
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
