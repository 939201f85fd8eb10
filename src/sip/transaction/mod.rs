//! SIP transactions: the four state machines of RFC 3261 §17 as updated by RFC 6026 (Accepted
//! states, Timers L and M), sans-IO.
//!
//! Each machine takes inputs (`handle_*`: a received status code or request retransmission, a
//! timer deadline reached, a transport error) together with `now: Instant` and produces
//! outputs the caller pulls (`poll_transmit`: already-serialized bytes to (re)send,
//! `poll_timeout`: when to call `handle_timeout` next, `poll_event`: [`TransactionEvent`]s for
//! the transaction user).
//!
//! What this module never does: it never parses or builds SIP messages (it works on status
//! codes and opaque [`bytes::Bytes`] the caller serialized), never matches a message to a
//! transaction (the caller does, with a [`TransactionKey`] it fills from parsed headers), never
//! touches a socket or reads the clock, never spawns or sleeps.
//!
//! # LIFECYCLE
//!
//! See `LIFECYCLE.md` next to this file and the header of each machine's module:
//! - [`ClientInvite`]: Calling -> Proceeding -> Completed | Accepted -> Terminated
//! - [`ClientNonInvite`]: Trying -> Proceeding -> Completed -> Terminated
//! - [`ServerInvite`]: Proceeding -> Completed -> Confirmed | Accepted -> Terminated
//! - [`ServerNonInvite`]: Trying -> Proceeding -> Completed -> Terminated
//!
//! Every machine emits [`TransactionEvent::Terminated`] exactly once, as its last event, when
//! it enters Terminated (after `Timeout`/`NoAckFor2xx`/`TransportError` if one caused it).
//! Transmits queued before termination (e.g. the ACK over a reliable transport, where Timer D
//! is 0) stay pollable, so drain `poll_transmit` before dropping a terminated transaction.

mod client_invite;
mod client_non_invite;
mod server_invite;
mod server_non_invite;
mod timers;

pub use client_invite::{ClientInvite, ClientInviteState};
pub use client_non_invite::{ClientNonInvite, ClientNonInviteState};
pub use server_invite::{ServerInvite, ServerInviteState};
pub use server_non_invite::{ServerNonInvite, ServerNonInviteState};
pub use timers::{TimerConfig, TimerConfigError, TimerName, Timers};

use std::time::Instant;

use bytes::Bytes;

/// Whether the transport the transaction runs over retransmits for us (RFC 3261 §17).
///
/// Over a reliable transport the transaction sends nothing twice (no Timers A, E, G and no
/// §13.3.1.4 2xx retransmission) and Timers D, I, J, K are zero, so those waiting states are
/// left at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reliability {
    /// UDP.
    Unreliable,
    /// TCP, TLS, WebSocket.
    Reliable,
}

/// What the caller should do with a response (client side) or ACK (server side) it fed in.
#[must_use]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deliver {
    /// Pass the message up to the transaction user (dialog / B2BUA core).
    ToTu,
    /// The transaction consumed it (a retransmission, or a stray message); drop it.
    Absorb,
}

/// Something the transaction user must learn about, pulled with `poll_event`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransactionEvent {
    /// No response in time (Timer B or F), or no ACK for a non-2xx final (Timer H).
    Timeout,
    /// RFC 6026 Timer L fired on an INVITE server transaction whose 2xx was never
    /// acknowledged: the TU should send BYE (RFC 3261 §13.3.1.4).
    NoAckFor2xx,
    /// The caller reported that sending failed (RFC 3261 §17.1.4 / §17.2.4).
    TransportError,
    /// The transaction reached Terminated; it can be removed from the caller's table once
    /// `poll_transmit` is drained. Always the last event.
    Terminated,
}

/// Misuse of a server transaction by the transaction user (never caused by wire data).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransactionError {
    /// Status codes live in 100..=699 (RFC 3261 §7.2, §21).
    #[error("status code {0} is outside 100..=699")]
    InvalidStatus(u16),
    /// E.g. a provisional after a final response, or anything after Terminated.
    #[error("cannot send a {status} response in state {state}")]
    InvalidState { status: u16, state: &'static str },
}

/// Response classes as the transaction layer sees them (RFC 3261 §7.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StatusClass {
    Provisional,
    Success,
    /// 300-699.
    Failure,
}

impl StatusClass {
    /// `None` for codes outside 100..=699 (never panics on wire data).
    pub(crate) fn of(status: u16) -> Option<Self> {
        match status {
            100..=199 => Some(Self::Provisional),
            200..=299 => Some(Self::Success),
            300..=699 => Some(Self::Failure),
            _ => None,
        }
    }
}

/// What identifies a transaction for matching (RFC 3261 §17.1.3 client, §17.2.3 server):
/// the top Via branch, the top Via sent-by (server side only) and the CSeq method, so that a
/// CANCEL (same branch as its INVITE, §9.1) gets its own transaction. Filled by the caller
/// from parsed headers; plain owned strings.
///
/// Only RFC 3261 branches (magic cookie `z9hG4bK`, see [`is_rfc3261_branch`]) can be matched
/// this way; the RFC 2543 fallback matching of §17.2.3 is not provided.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TransactionKey {
    /// Top Via `branch` parameter, compared exactly.
    pub branch: String,
    /// Top Via sent-by (`host[:port]`), lower-cased; empty for client keys (it is ours).
    pub sent_by: String,
    /// CSeq method; for server keys `ACK` is folded into `INVITE` so the ACK to a non-2xx
    /// final matches its INVITE server transaction (§17.2.3).
    pub method: String,
}

impl TransactionKey {
    /// Key of a client transaction, for matching responses (§17.1.3: branch of the top Via
    /// and CSeq method).
    pub fn client(branch: impl Into<String>, method: impl Into<String>) -> Self {
        Self {
            branch: branch.into(),
            sent_by: String::new(),
            method: method.into(),
        }
    }

    /// Key of a server transaction, for matching requests (§17.2.3: branch and sent-by of the
    /// top Via, and the method, with ACK matching INVITE).
    pub fn server(
        branch: impl Into<String>,
        sent_by: impl AsRef<str>,
        method: impl Into<String>,
    ) -> Self {
        let mut method = method.into();
        if method == "ACK" {
            method = "INVITE".to_owned();
        }
        Self {
            branch: branch.into(),
            sent_by: sent_by.as_ref().to_ascii_lowercase(),
            method,
        }
    }
}

/// Whether a branch carries the RFC 3261 magic cookie (§8.1.1.7), i.e. can be used as a
/// transaction key.
pub fn is_rfc3261_branch(branch: &str) -> bool {
    branch.starts_with("z9hG4bK")
}

/// Any of the four machines, so the caller can keep them in one map and drive them
/// uniformly. Message inputs (`handle_response`, `send_response`, `handle_ack`, ...) stay on
/// the concrete machine: match on the variant.
#[derive(Debug)]
pub enum Transaction {
    ClientInvite(ClientInvite),
    ClientNonInvite(ClientNonInvite),
    ServerInvite(ServerInvite),
    ServerNonInvite(ServerNonInvite),
}

macro_rules! delegate {
    ($self:ident, $t:ident => $e:expr) => {
        match $self {
            Transaction::ClientInvite($t) => $e,
            Transaction::ClientNonInvite($t) => $e,
            Transaction::ServerInvite($t) => $e,
            Transaction::ServerNonInvite($t) => $e,
        }
    };
}

impl Transaction {
    /// Fires every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        delegate!(self, t => t.handle_timeout(now))
    }

    /// The caller failed to send something this transaction queued.
    pub fn handle_transport_error(&mut self) {
        delegate!(self, t => t.handle_transport_error())
    }

    /// Next message to put on the wire.
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        delegate!(self, t => t.poll_transmit())
    }

    /// Earliest armed timer; call `handle_timeout` then.
    pub fn poll_timeout(&self) -> Option<Instant> {
        delegate!(self, t => t.poll_timeout())
    }

    /// Next event for the transaction user.
    pub fn poll_event(&mut self) -> Option<TransactionEvent> {
        delegate!(self, t => t.poll_event())
    }

    /// Whether the machine reached Terminated (drain `poll_transmit`/`poll_event`, then drop).
    pub fn is_terminated(&self) -> bool {
        delegate!(self, t => t.is_terminated())
    }

    /// Whether this is a client (UAC side) transaction.
    pub fn is_client(&self) -> bool {
        matches!(self, Self::ClientInvite(_) | Self::ClientNonInvite(_))
    }
}

impl From<ClientInvite> for Transaction {
    fn from(t: ClientInvite) -> Self {
        Self::ClientInvite(t)
    }
}

impl From<ClientNonInvite> for Transaction {
    fn from(t: ClientNonInvite) -> Self {
        Self::ClientNonInvite(t)
    }
}

impl From<ServerInvite> for Transaction {
    fn from(t: ServerInvite) -> Self {
        Self::ServerInvite(t)
    }
}

impl From<ServerNonInvite> for Transaction {
    fn from(t: ServerNonInvite) -> Self {
        Self::ServerNonInvite(t)
    }
}

/// The virtual-clock test driver shared by the machines' unit tests: steps to each
/// `poll_timeout()` and records every transmit and event with its time since `base`.
#[cfg(test)]
pub(crate) mod test_driver {
    use std::time::{Duration, Instant};

    use bytes::Bytes;

    use super::{Transaction, TransactionEvent};

    pub(crate) fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    pub(crate) struct Driver {
        pub base: Instant,
        pub now: Instant,
        pub sent: Vec<(Duration, Bytes)>,
        pub events: Vec<(Duration, TransactionEvent)>,
    }

    impl Driver {
        pub fn new() -> Self {
            let base = Instant::now();
            Self {
                base,
                now: base,
                sent: Vec::new(),
                events: Vec::new(),
            }
        }

        /// Moves the clock without firing anything (for feeding an input at a given time).
        pub fn set_now(&mut self, offset: Duration) -> Instant {
            self.now = self.base + offset;
            self.now
        }

        /// Collects whatever the machine queued, stamped with the current time.
        pub fn drain(&mut self, t: &mut Transaction) {
            let elapsed = self.now - self.base;
            while let Some(b) = t.poll_transmit() {
                self.sent.push((elapsed, b));
            }
            while let Some(e) = t.poll_event() {
                self.events.push((elapsed, e));
            }
        }

        /// Fires every timer due up to and including `base + offset`, at its own deadline.
        pub fn advance_to(&mut self, t: &mut Transaction, offset: Duration) {
            let until = self.base + offset;
            self.drain(t);
            let mut steps = 0;
            while let Some(at) = t.poll_timeout() {
                if at > until {
                    break;
                }
                assert!(at >= self.now, "timer armed in the past");
                steps += 1;
                assert!(steps < 10_000, "timer loop does not settle");
                self.now = at;
                t.handle_timeout(at);
                self.drain(t);
            }
            self.now = until;
        }

        /// Runs until no timer is armed.
        pub fn run(&mut self, t: &mut Transaction) {
            self.advance_to(t, Duration::from_secs(3600));
        }

        pub fn send_times_ms(&self) -> Vec<u128> {
            self.sent.iter().map(|(d, _)| d.as_millis()).collect()
        }

        pub fn sent_payloads(&self) -> Vec<&[u8]> {
            self.sent.iter().map(|(_, b)| b.as_ref()).collect()
        }

        pub fn events_ms(&self) -> Vec<(u128, TransactionEvent)> {
            self.events
                .iter()
                .map(|(d, e)| (d.as_millis(), *e))
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_key_folds_ack_into_invite_and_lowercases_sent_by() {
        let invite = TransactionKey::server("z9hG4bK776", "Proxy.Example.com:5060", "INVITE");
        let ack = TransactionKey::server("z9hG4bK776", "proxy.example.COM:5060", "ACK");
        assert_eq!(invite, ack);
        let cancel = TransactionKey::server("z9hG4bK776", "proxy.example.com:5060", "CANCEL");
        assert_ne!(invite, cancel);
        let other_host = TransactionKey::server("z9hG4bK776", "10.0.0.1:5060", "INVITE");
        assert_ne!(invite, other_host);
    }

    #[test]
    fn client_key_distinguishes_cancel_from_invite() {
        let a = TransactionKey::client("z9hG4bKabc", "INVITE");
        let b = TransactionKey::client("z9hG4bKabc", "CANCEL");
        assert_ne!(a, b);
        assert_eq!(a, TransactionKey::client("z9hG4bKabc", "INVITE"));
        // Branches are compared exactly.
        assert_ne!(a, TransactionKey::client("z9hg4bkabc", "INVITE"));
    }

    #[test]
    fn magic_cookie() {
        assert!(is_rfc3261_branch("z9hG4bK-1"));
        assert!(!is_rfc3261_branch("abc"));
        assert!(!is_rfc3261_branch(""));
    }

    #[test]
    fn status_classes() {
        assert_eq!(StatusClass::of(99), None);
        assert_eq!(StatusClass::of(100), Some(StatusClass::Provisional));
        assert_eq!(StatusClass::of(299), Some(StatusClass::Success));
        assert_eq!(StatusClass::of(699), Some(StatusClass::Failure));
        assert_eq!(StatusClass::of(700), None);
    }

    use std::collections::HashMap;
    use std::time::Duration;

    use super::test_driver::{ms, Driver};

    /// A degenerate, unvalidated config (T2 = 0 below T1) must not make a retransmit timer
    /// re-arm at the instant it fired: the driver would spin (it asserts on 10 000 steps).
    #[test]
    fn zero_t2_does_not_spin() {
        let cfg = TimerConfig {
            t1: ms(10),
            t2: Duration::ZERO,
            t4: Duration::ZERO,
        };
        let mut d = Driver::new();
        let mut t: Transaction = ClientNonInvite::new(
            Bytes::from_static(b"OPTIONS"),
            Reliability::Unreliable,
            cfg,
            d.now,
        )
        .into();
        d.run(&mut t);
        // E: 10 ms, then floored at 1 ms until F at 640 ms.
        assert_eq!(d.sent.len(), 2 + 630);
        assert_eq!(
            d.events_ms().last(),
            Some(&(640, TransactionEvent::Terminated))
        );

        let mut d = Driver::new();
        let mut t: Transaction = ServerInvite::new(Reliability::Unreliable, cfg, d.now).into();
        if let Transaction::ServerInvite(s) = &mut t {
            s.send_response(200, Bytes::from_static(b"200"), d.now)
                .unwrap();
        }
        d.run(&mut t);
        assert_eq!(
            d.events_ms(),
            vec![
                (640, TransactionEvent::NoAckFor2xx),
                (640, TransactionEvent::Terminated)
            ]
        );
    }

    /// A caller that wakes up late fires an overdue retransmit timer once and re-arms it from
    /// the late instant, instead of bursting out every missed retransmission.
    #[test]
    fn late_handle_timeout_fires_each_timer_once() {
        let base = Instant::now();
        let mut t: Transaction = ClientInvite::new(
            Bytes::from_static(b"INVITE"),
            Reliability::Unreliable,
            TimerConfig::default(),
            base,
        )
        .into();
        assert!(t.poll_transmit().is_some());
        t.handle_timeout(base + ms(10_000));
        assert!(t.poll_transmit().is_some());
        assert_eq!(t.poll_transmit(), None);
        // Timer A was at 0.5 s, doubled to 1 s, re-armed from 10 s.
        assert_eq!(t.poll_timeout(), Some(base + ms(11_000)));
        // A call before any deadline does nothing.
        t.handle_timeout(base + ms(10_500));
        assert_eq!(t.poll_transmit(), None);
        // Far past Timer B: one retransmission then the timeout, in deadline order.
        t.handle_timeout(base + ms(40_000));
        assert!(t.poll_transmit().is_some());
        assert_eq!(t.poll_event(), Some(TransactionEvent::Timeout));
        assert_eq!(t.poll_event(), Some(TransactionEvent::Terminated));
        assert!(t.is_terminated());
    }

    /// How a caller keeps all four kinds in one table and drives them uniformly.
    #[test]
    fn one_table_drives_all_kinds() {
        let base = Instant::now();
        let cfg = TimerConfig::default();
        let rel = Reliability::Unreliable;
        let mut table: HashMap<TransactionKey, Transaction> = HashMap::new();
        table.insert(
            TransactionKey::client("z9hG4bK1", "INVITE"),
            ClientInvite::new(Bytes::from_static(b"INVITE"), rel, cfg, base).into(),
        );
        table.insert(
            TransactionKey::client("z9hG4bK1", "CANCEL"),
            ClientNonInvite::new(Bytes::from_static(b"CANCEL"), rel, cfg, base).into(),
        );
        let mut server = ServerNonInvite::new(rel, cfg, base);
        server
            .send_response(200, Bytes::from_static(b"200"), base)
            .unwrap();
        table.insert(
            TransactionKey::server("z9hG4bK2", "a:5060", "OPTIONS"),
            server.into(),
        );
        table.insert(
            TransactionKey::server("z9hG4bK3", "a:5060", "INVITE"),
            ServerInvite::new(rel, cfg, base).into(),
        );
        assert_eq!(table.values().filter(|t| t.is_client()).count(), 2);

        let mut sent = 0;
        let mut now = base;
        let mut steps = 0;
        loop {
            let mut done = Vec::new();
            for (k, t) in table.iter_mut() {
                t.handle_timeout(now);
                while t.poll_transmit().is_some() {
                    sent += 1;
                }
                while let Some(e) = t.poll_event() {
                    if e == TransactionEvent::Terminated {
                        done.push(k.clone());
                    }
                }
            }
            for k in done {
                table.remove(&k);
            }
            let Some(next) = table.values().filter_map(Transaction::poll_timeout).min() else {
                break;
            };
            now = next;
            steps += 1;
            assert!(steps < 1000);
        }
        // The server INVITE never got a final and has no timer: it stays.
        assert_eq!(table.len(), 1);
        assert!(table
            .keys()
            .all(|k| k.method == "INVITE" && !k.sent_by.is_empty()));
        // INVITE: 7 sends, CANCEL: 11 sends, OPTIONS 200: 1 send.
        assert_eq!(sent, 7 + 11 + 1);
    }
}
