//! The guard: which received SIP messages holdfast answers at all, decided per message from
//! its source address, a [`peek`](crate::sip::peek) at it and `now`, before it is parsed.
//!
//! Does: drop requests from addresses that are no target's `sources` (or, with
//! `sip.unknown_sources: reject`, have them answered by one stateless 403 each); let
//! `sip.answer_options` pingers' OPTIONS through; drop out-of-dialog requests whose
//! User-Agent is a known scanner's; limit each source's new requests outside dialogs with
//! a token bucket (Kamailio's pike, see below) and block a source that stays over its limit
//! for `block_time`; drop unknown sources' requests, ACKs and CANCELs that belong to no
//! dialog of ours and responses that belong to no transaction of ours. Counts every drop by
//! reason and turns them into rare log events: at most one line per source per
//! `log_interval`, a capped number of such lines per interval, and one summary line per
//! interval for the rest.
//!
//! Never: drops a request inside a dialog holdfast has, a response to a transaction
//! holdfast has, or, from a known source, an ACK, a CANCEL, a response or anything else
//! that is not a new request outside holdfast's dialogs (scanners aside); reads the clock,
//! touches a socket, parses the whole message, or
//! grows without bound (sources live in two tables of `max_sources` entries each, known and
//! unknown, so a flood of spoofed unknown addresses cannot evict a carrier's state; in
//! `unknown_sources: drop` unknown sources take no state at all).
//!
//! LIFECYCLE of a source (an address, or `IP:PORT` when the target lists it so):
//!
//! ```text
//!   (no entry) --first counted request--> Admitting (bucket full: `burst` tokens)
//!   Admitting --no token--> the request is dropped (rate_limited); in the same
//!       sampling_interval, drops reaching rate × sampling_interval (it sent twice its
//!       rate) --> Blocked
//!   Blocked --any new request--> dropped (blocked)
//!   Blocked --block_time elapsed (timer, or the next request)--> Admitting, bucket empty
//!   any state --table full, CLOCK sweep--> forgotten (blocked ones last)
//! ```
//!
//! Why a token bucket and not pike's density sampling: the bucket (kept as one timestamp,
//! GCRA) is exact and O(1) per request, needs no periodic sweep of a tree, lets a quiet
//! source send `burst` at once and then exactly `rate` per second; pike's trigger lands
//! anywhere between 1× and 3× its density. The sampling interval keeps pike's role: it is
//! the window over which "stays over the limit" (blocking) is judged.
mod table;
#[cfg(test)]
mod tests;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::config::{RateLimit, SipLimits, SipSettings, Source, UnknownSources};
use crate::sip::peek::{Peek, Start};

pub use table::SourceKey;
use table::{Entry, Table};

/// Per-source log lines allowed per `log_interval`, all sources together; the drops of
/// further sources go to the summary line.
pub const MAX_SOURCE_LINES: u32 = 20;

/// Why the guard dropped a message: the `reason` label of `holdfast_sip_dropped_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DropReason {
    /// A request from an address outside every target's `sources`.
    UnknownSource,
    /// An out-of-dialog request with a scanner's User-Agent (`sip.scanners`).
    Scanner,
    /// A new request over its source's rate limit.
    RateLimited,
    /// A new request from a blocked source.
    Blocked,
    /// A response that matches no transaction of ours, or an unknown source's in-dialog
    /// request, ACK or CANCEL that matches no dialog of ours.
    Stray,
}

impl DropReason {
    pub const ALL: [DropReason; 5] = [
        DropReason::UnknownSource,
        DropReason::Scanner,
        DropReason::RateLimited,
        DropReason::Blocked,
        DropReason::Stray,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::UnknownSource => "unknown_source",
            DropReason::Scanner => "scanner",
            DropReason::RateLimited => "rate_limited",
            DropReason::Blocked => "blocked",
            DropReason::Stray => "stray",
        }
    }
}

/// Drops by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DropCounts([u64; 5]);

impl DropCounts {
    pub fn get(&self, r: DropReason) -> u64 {
        self.0[r as usize]
    }

    fn add(&mut self, r: DropReason, n: u64) {
        self.0[r as usize] = self.0[r as usize].saturating_add(n);
    }

    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// Reasons with a non-zero count.
    pub fn iter(&self) -> impl Iterator<Item = (DropReason, u64)> + '_ {
        DropReason::ALL
            .into_iter()
            .map(|r| (r, self.get(r)))
            .filter(|(_, n)| *n > 0)
    }
}

/// The guard's answer for one message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Parse it and handle it.
    Pass,
    /// Answer it with a stateless 403 (`unknown_sources: reject`) and nothing else.
    Reject,
    /// Nothing; counted under the reason.
    Drop(DropReason),
}

/// Who sent a message, as the routing table sees its source address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sender {
    /// A carrier's or provider's source. `by_port`: matched by an `IP:PORT` entry, so
    /// counted per IP and port (else per IP). `limit`: the target's (`None`: unlimited).
    Known {
        by_port: bool,
        limit: Option<RateLimit>,
    },
    Unknown,
}

/// What the core knows of exchanges in progress; asked only when a decision depends on it.
pub trait Exchanges {
    /// Whether holdfast has a dialog with this Call-ID whose local tag is `local_tag` (the
    /// To tag of a request the far end sends in it).
    fn has_dialog(&self, call_id: &str, local_tag: &str) -> bool;
    /// Whether a response with this top Via branch and CSeq method answers one of
    /// holdfast's client transactions.
    fn has_client_transaction(&self, branch: &str, method: &str) -> bool;
}

/// Something worth a log line; the core words it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// `source` went over its limit: `dropped` requests since its last line.
    Limited {
        source: SourceKey,
        known: bool,
        limit: RateLimit,
        dropped: u64,
    },
    /// `source` sent twice its rate over a sampling interval and is blocked.
    Blocked {
        source: SourceKey,
        known: bool,
        limit: RateLimit,
        dropped: u64,
        block_time: Duration,
    },
    /// A blocked source is still sending: `dropped` since its last line.
    StillBlocked {
        source: SourceKey,
        known: bool,
        dropped: u64,
    },
    /// A block ended; `dropped` during it.
    Unblocked {
        source: SourceKey,
        known: bool,
        dropped: u64,
        blocked_for: Duration,
    },
    /// Drops no per-source line reported, since the last summary: unknown sources,
    /// scanners, strays, and sources whose lines were over [`MAX_SOURCE_LINES`].
    Summary {
        dropped: DropCounts,
        lines_suppressed: u64,
        last: Option<(SocketAddr, DropReason)>,
    },
}

/// Which of the two tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Unknown,
    Known,
}

/// The guard; see the module docs.
#[derive(Debug)]
pub struct Guard {
    unknown_sources: UnknownSources,
    answer_options: Vec<Source>,
    /// Lowercase User-Agent substrings.
    scanners: Vec<String>,
    limits: SipLimits,
    known: Table,
    unknown: Table,
    dropped: DropCounts,
    rejected: u64,
    blocked: usize,
    /// Block ends, earliest first (stale ones are skipped when they come up).
    unblocks: BinaryHeap<Reverse<(Instant, Kind, SourceKey)>>,
    events: VecDeque<Event>,
    /// The current log interval and the per-source lines spent in it.
    lines_window: Option<Instant>,
    lines_spent: u32,
    /// What the next summary line reports.
    summary: DropCounts,
    summary_suppressed: u64,
    summary_last: Option<(SocketAddr, DropReason)>,
    summary_at: Option<Instant>,
    /// Scratch for entries a table forgets.
    forgotten: Vec<Entry>,
}

impl Guard {
    pub fn new(sip: &SipSettings) -> Guard {
        Guard {
            unknown_sources: sip.unknown_sources,
            answer_options: sip.answer_options.clone(),
            scanners: sip.scanners.clone(),
            limits: sip.limits.clone(),
            known: Table::new(sip.limits.max_sources),
            unknown: Table::new(sip.limits.max_sources),
            dropped: DropCounts::default(),
            rejected: 0,
            blocked: 0,
            unblocks: BinaryHeap::new(),
            events: VecDeque::new(),
            lines_window: None,
            lines_spent: 0,
            summary: DropCounts::default(),
            summary_suppressed: 0,
            summary_last: None,
            summary_at: None,
            forgotten: Vec::new(),
        }
    }

    /// A reload: the new settings apply from the next message; sources keep their state
    /// (a blocked source stays blocked until its time is up).
    pub fn set_settings(&mut self, sip: &SipSettings) {
        self.unknown_sources = sip.unknown_sources;
        self.answer_options = sip.answer_options.clone();
        self.scanners = sip.scanners.clone();
        self.limits = sip.limits.clone();
        self.known.set_capacity(sip.limits.max_sources);
        self.unknown.set_capacity(sip.limits.max_sources);
    }

    /// Decides what happens to one received message. `peek` is `None` when the bytes have
    /// no SIP start line.
    pub fn handle_message(
        &mut self,
        source: SocketAddr,
        sender: Sender,
        peek: Option<&Peek<'_>>,
        exchanges: &impl Exchanges,
        now: Instant,
    ) -> Verdict {
        let source = SocketAddr::new(source.ip().to_canonical(), source.port());
        let verdict = self.decide(source, sender, peek, exchanges, now);
        match verdict {
            Verdict::Pass => {}
            Verdict::Reject => self.rejected += 1,
            Verdict::Drop(reason) => {
                self.dropped.add(reason, 1);
                if matches!(
                    reason,
                    DropReason::UnknownSource | DropReason::Scanner | DropReason::Stray
                ) {
                    self.summarize(source, reason, 1, now);
                }
            }
        }
        verdict
    }

    /// A drop the core decided after parsing (a stray response the peek could not read).
    pub fn count_stray(&mut self, source: SocketAddr, now: Instant) {
        self.dropped.add(DropReason::Stray, 1);
        self.summarize(source, DropReason::Stray, 1, now);
    }

    fn decide(
        &mut self,
        source: SocketAddr,
        sender: Sender,
        peek: Option<&Peek<'_>>,
        exchanges: &impl Exchanges,
        now: Instant,
    ) -> Verdict {
        let Some(p) = peek else {
            // Not SIP enough to tell: a known source's goes to the parser (which answers
            // 400 where it can); an unknown source's is one more unknown request.
            return match sender {
                Sender::Known { .. } => Verdict::Pass,
                Sender::Unknown => self.unknown_request(source, now),
            };
        };
        let method = match p.start {
            Start::Response { .. } => {
                if let Sender::Known { .. } = sender {
                    return Verdict::Pass;
                }
                return match (p.via_branch(), p.cseq_method()) {
                    (Some(b), Some(m)) if !exchanges.has_client_transaction(b, m) => {
                        Verdict::Drop(DropReason::Stray)
                    }
                    _ => Verdict::Pass,
                };
            }
            Start::Request { method } => method,
        };
        let to_tag = p.to_tag();
        let in_dialog = match (&p.call_id, to_tag) {
            (Some(c), Some(t)) => exchanges.has_dialog(c, t),
            _ => false,
        };
        if in_dialog {
            return Verdict::Pass;
        }
        let ack_or_cancel = method == "ACK" || method == "CANCEL";
        match sender {
            Sender::Known { by_port, limit } => {
                // ACK and CANCEL belong to a transaction the core matches; never counted.
                if ack_or_cancel {
                    return Verdict::Pass;
                }
                if self.is_scanner(p) {
                    return Verdict::Drop(DropReason::Scanner);
                }
                let Some(limit) = limit else {
                    return Verdict::Pass;
                };
                let key = SourceKey {
                    ip: source.ip(),
                    port: by_port.then_some(source.port()),
                };
                self.admit(Kind::Known, key, limit, now)
            }
            Sender::Unknown => {
                // An unknown source has no transaction or dialog of ours unless the
                // lookup above found one.
                if to_tag.is_some() || ack_or_cancel {
                    return Verdict::Drop(DropReason::Stray);
                }
                if self.is_scanner(p) {
                    return Verdict::Drop(DropReason::Scanner);
                }
                if method == "OPTIONS" && self.answer_options.iter().any(|s| s.matches(source)) {
                    let key = SourceKey {
                        ip: source.ip(),
                        port: None,
                    };
                    return self.admit(Kind::Unknown, key, self.limits.per_source, now);
                }
                self.unknown_request(source, now)
            }
        }
    }

    /// A new request from an unknown source.
    fn unknown_request(&mut self, source: SocketAddr, now: Instant) -> Verdict {
        match self.unknown_sources {
            UnknownSources::Drop => Verdict::Drop(DropReason::UnknownSource),
            UnknownSources::Reject => {
                let key = SourceKey {
                    ip: source.ip(),
                    port: None,
                };
                match self.admit(Kind::Unknown, key, self.limits.per_source, now) {
                    Verdict::Pass => Verdict::Reject,
                    other => other,
                }
            }
        }
    }

    fn is_scanner(&self, p: &Peek<'_>) -> bool {
        let Some(ua) = &p.user_agent else {
            return false;
        };
        let ua = ua.as_bytes();
        self.scanners
            .iter()
            .any(|s| contains_ignore_ascii_case(ua, s.as_bytes()))
    }

    /// One counted request from `key`: a token, or a drop (and maybe a block).
    fn admit(&mut self, kind: Kind, key: SourceKey, limit: RateLimit, now: Instant) -> Verdict {
        let log_interval = self.limits.log_interval;
        let sampling = self.limits.sampling_interval;
        let block_time = self.limits.block_time;
        let known = kind == Kind::Known;
        let table = match kind {
            Kind::Known => &mut self.known,
            Kind::Unknown => &mut self.unknown,
        };
        let e = table.entry(key, now, &mut self.forgotten);
        // Log lines this request causes (rare: at most one per source per interval).
        let mut lines: Vec<(Event, DropReason)> = Vec::new();
        let mut unblocked = false;
        let mut blocked_until = None;
        let due = |e: &Entry| e.last_line.is_none_or(|l| now >= l + log_interval);
        let verdict = 'decide: {
            if let Some(until) = e.blocked_until {
                if now < until {
                    e.blocked_drops += 1;
                    e.unlogged += 1;
                    if due(e) {
                        e.last_line = Some(now);
                        let dropped = std::mem::take(&mut e.unlogged);
                        let ev = Event::StillBlocked {
                            source: key,
                            known,
                            dropped,
                        };
                        lines.push((ev, DropReason::Blocked));
                    }
                    break 'decide Verdict::Drop(DropReason::Blocked);
                }
                // The block is over and its timer has not come up yet.
                lines.push((unblock(e, known, now), DropReason::Blocked));
                unblocked = true;
            }
            if e.take(limit, now) {
                break 'decide Verdict::Pass;
            }
            if now >= e.window_start + sampling {
                e.window_start = now;
                e.window_drops = 0;
            }
            e.window_drops += 1;
            e.unlogged += 1;
            // Dropped as much as it was allowed in one window: it sends twice its rate.
            let threshold = (f64::from(limit.rate) * sampling.as_secs_f64()).ceil() as u64;
            if e.window_drops >= threshold.max(1) {
                let until = now + block_time;
                e.blocked_until = Some(until);
                e.blocked_at = now;
                e.blocked_drops = 0;
                e.window_drops = 0;
                e.empty_at(limit, until);
                e.last_line = Some(now);
                let dropped = std::mem::take(&mut e.unlogged);
                blocked_until = Some(until);
                let ev = Event::Blocked {
                    source: key,
                    known,
                    limit,
                    dropped,
                    block_time,
                };
                lines.push((ev, DropReason::RateLimited));
            } else if due(e) {
                e.last_line = Some(now);
                let dropped = std::mem::take(&mut e.unlogged);
                let ev = Event::Limited {
                    source: key,
                    known,
                    limit,
                    dropped,
                };
                lines.push((ev, DropReason::RateLimited));
            }
            Verdict::Drop(DropReason::RateLimited)
        };
        if unblocked {
            self.blocked = self.blocked.saturating_sub(1);
        }
        if let Some(until) = blocked_until {
            self.blocked += 1;
            self.unblocks.push(Reverse((until, kind, key)));
        }
        self.forget_dropped();
        for (ev, reason) in lines {
            self.source_line(ev, reason, now);
        }
        verdict
    }

    /// Entries a table forgot: a blocked one no longer counts as blocked.
    fn forget_dropped(&mut self) {
        for e in self.forgotten.drain(..) {
            if e.blocked_until.is_some() {
                self.blocked = self.blocked.saturating_sub(1);
            }
        }
    }

    /// Emits a per-source line if this interval's budget allows; else its drops go to the
    /// summary.
    fn source_line(&mut self, ev: Event, reason: DropReason, now: Instant) {
        let interval = self.limits.log_interval;
        if self.lines_window.is_none_or(|w| now >= w + interval) {
            self.lines_window = Some(now);
            self.lines_spent = 0;
        }
        if self.lines_spent < MAX_SOURCE_LINES {
            self.lines_spent += 1;
            self.events.push_back(ev);
            return;
        }
        let (source, dropped) = match &ev {
            Event::Limited {
                source, dropped, ..
            }
            | Event::Blocked {
                source, dropped, ..
            }
            | Event::StillBlocked {
                source, dropped, ..
            } => (*source, *dropped),
            Event::Unblocked { source, .. } => (*source, 0),
            Event::Summary { .. } => return,
        };
        self.summary_suppressed += 1;
        let addr = SocketAddr::new(source.ip, source.port.unwrap_or(0));
        self.summarize(addr, reason, dropped, now);
    }

    /// Adds drops to the summary; emits it when the last one is `log_interval` old.
    fn summarize(&mut self, source: SocketAddr, reason: DropReason, n: u64, now: Instant) {
        self.summary.add(reason, n);
        self.summary_last = Some((source, reason));
        if self
            .summary_at
            .is_none_or(|at| now >= at + self.limits.log_interval)
        {
            self.summary_at = Some(now);
            self.events.push_back(Event::Summary {
                dropped: std::mem::take(&mut self.summary),
                lines_suppressed: std::mem::take(&mut self.summary_suppressed),
                last: self.summary_last.take(),
            });
        }
    }

    /// Ends the blocks that are due.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(Reverse((at, kind, key))) = self.unblocks.peek().copied() {
            if at > now {
                break;
            }
            self.unblocks.pop();
            let table = match kind {
                Kind::Known => &mut self.known,
                Kind::Unknown => &mut self.unknown,
            };
            let Some(e) = table.get_mut(&key) else {
                continue;
            };
            if e.blocked_until != Some(at) {
                continue;
            }
            let ev = unblock(e, kind == Kind::Known, now);
            self.blocked = self.blocked.saturating_sub(1);
            self.source_line(ev, DropReason::Blocked, now);
        }
    }

    /// When [`Guard::handle_timeout`] has something to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.unblocks.peek().map(|Reverse((at, ..))| *at)
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Drops so far, by reason.
    pub fn dropped(&self) -> DropCounts {
        self.dropped
    }

    /// Stateless 403s so far.
    pub fn rejected(&self) -> u64 {
        self.rejected
    }

    /// Sources blocked now.
    pub fn blocked_sources(&self) -> usize {
        self.blocked
    }

    /// Sources with state, (known, unknown).
    pub fn tracked_sources(&self) -> (usize, usize) {
        (self.known.len(), self.unknown.len())
    }
}

/// Ends `e`'s block (at `now`), returning its line.
fn unblock(e: &mut Entry, known: bool, now: Instant) -> Event {
    let until = e.blocked_until.take().unwrap_or(now);
    let ev = Event::Unblocked {
        source: e.key,
        known,
        dropped: std::mem::take(&mut e.blocked_drops),
        blocked_for: until.saturating_duration_since(e.blocked_at),
    };
    e.unlogged = 0;
    e.last_line = Some(now);
    ev
}

/// Whether `needle` (lowercase ASCII) occurs in `hay`, ignoring ASCII case.
fn contains_ignore_ascii_case(hay: &[u8], needle: &[u8]) -> bool {
    if needle.is_empty() {
        return true;
    }
    hay.windows(needle.len()).any(|w| {
        w.iter()
            .zip(needle)
            .all(|(a, b)| a.to_ascii_lowercase() == *b)
    })
}
