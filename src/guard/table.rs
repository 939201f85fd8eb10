//! The per-source state of the guard: one token bucket (in GCRA form) per source address,
//! its blocking state and its logging state, in a table of bounded size.
//!
//! Does: find or make a source's entry in O(1); when the table is full, forget one entry
//! chosen by a CLOCK sweep (entries used since the hand last passed get a second chance,
//! blocked entries are kept while the sweep can find another; the sweep is bounded).
//!
//! Never: grows past its capacity, scans the whole table, or reads the clock (entries are
//! stamped with the `now` the caller passes).
use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::config::RateLimit;

/// How far one insertion's sweep looks for an entry to forget before it takes the one
/// under the hand anyway.
const SWEEP_LIMIT: usize = 32;

/// A source as the guard counts it: an IP address, or an IP and port when the target
/// names its source as `IP:PORT`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SourceKey {
    pub ip: IpAddr,
    pub port: Option<u16>,
}

impl fmt::Display for SourceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.port {
            Some(p) => write!(f, "{}", SocketAddr::new(self.ip, p)),
            None => write!(f, "{}", self.ip),
        }
    }
}

/// One source's state.
#[derive(Clone, Debug)]
pub(crate) struct Entry {
    pub key: SourceKey,
    /// GCRA's theoretical arrival time: the bucket is full when `tat <= now`, and a request
    /// fits while `tat - now <= (burst - 1) * emission interval`.
    pub tat: Instant,
    /// The current sampling window: when it started and the requests dropped in it.
    pub window_start: Instant,
    pub window_drops: u64,
    /// Blocked until then.
    pub blocked_until: Option<Instant>,
    pub blocked_at: Instant,
    /// Requests dropped during the current block.
    pub blocked_drops: u64,
    /// Drops not yet reported in a log line, and when this source's last line was.
    pub unlogged: u64,
    pub last_line: Option<Instant>,
    /// Used since the CLOCK hand last passed.
    referenced: bool,
}

/// The time between two tokens of `limit` (`rate` ≤ 1 000 000, so never zero).
pub(crate) fn emission_interval(limit: RateLimit) -> Duration {
    Duration::from_nanos(1_000_000_000 / u64::from(limit.rate.max(1)))
}

impl Entry {
    fn new(key: SourceKey, now: Instant) -> Entry {
        Entry {
            key,
            tat: now,
            window_start: now,
            window_drops: 0,
            blocked_until: None,
            blocked_at: now,
            blocked_drops: 0,
            unlogged: 0,
            last_line: None,
            referenced: false,
        }
    }

    /// Takes one token of `limit` if there is one (GCRA: the token bucket as one timestamp).
    pub fn take(&mut self, limit: RateLimit, now: Instant) -> bool {
        let t = emission_interval(limit);
        let tau = t * limit.burst.max(1).saturating_sub(1);
        let tat = self.tat.max(now);
        if tat > now + tau {
            return false;
        }
        self.tat = tat + t;
        true
    }

    /// Leaves the bucket empty at `at`: the first request after it waits one interval.
    pub fn empty_at(&mut self, limit: RateLimit, at: Instant) {
        self.tat = at + emission_interval(limit) * limit.burst.max(1);
    }
}

/// Sources with a bounded number of entries.
#[derive(Debug)]
pub(crate) struct Table {
    index: HashMap<SourceKey, usize>,
    slots: Vec<Entry>,
    hand: usize,
    capacity: usize,
}

impl Table {
    pub fn new(capacity: usize) -> Table {
        Table {
            index: HashMap::new(),
            slots: Vec::new(),
            hand: 0,
            capacity: capacity.max(1),
        }
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// A smaller capacity takes effect as new sources arrive (each insertion forgets
    /// entries until the table fits).
    pub fn set_capacity(&mut self, capacity: usize) {
        self.capacity = capacity.max(1);
    }

    pub fn get_mut(&mut self, key: &SourceKey) -> Option<&mut Entry> {
        let i = *self.index.get(key)?;
        let e = &mut self.slots[i];
        e.referenced = true;
        Some(e)
    }

    /// The entry of `key`, made at `now` (full bucket) if there is none; and the entries
    /// forgotten to make room.
    pub fn entry(
        &mut self,
        key: SourceKey,
        now: Instant,
        forgotten: &mut Vec<Entry>,
    ) -> &mut Entry {
        if let Some(&i) = self.index.get(&key) {
            let e = &mut self.slots[i];
            e.referenced = true;
            return e;
        }
        while self.slots.len() > self.capacity {
            let i = self.victim();
            let last = self.slots.len() - 1;
            self.slots.swap(i, last);
            let gone = self.slots.pop().expect("non-empty");
            self.index.remove(&gone.key);
            if i < self.slots.len() {
                self.index.insert(self.slots[i].key, i);
            }
            forgotten.push(gone);
        }
        let i = if self.slots.len() < self.capacity {
            self.slots.push(Entry::new(key, now));
            self.slots.len() - 1
        } else {
            let i = self.victim();
            let gone = std::mem::replace(&mut self.slots[i], Entry::new(key, now));
            self.index.remove(&gone.key);
            forgotten.push(gone);
            i
        };
        self.index.insert(key, i);
        &mut self.slots[i]
    }

    /// The CLOCK sweep: the first entry neither used since the hand passed nor blocked,
    /// within [`SWEEP_LIMIT`] steps; else the one under the hand.
    fn victim(&mut self) -> usize {
        let n = self.slots.len();
        self.hand %= n;
        for _ in 0..SWEEP_LIMIT.min(2 * n) {
            let i = self.hand;
            self.hand = (self.hand + 1) % n;
            let e = &mut self.slots[i];
            if e.referenced {
                e.referenced = false;
            } else if e.blocked_until.is_none() {
                return i;
            }
        }
        self.hand
    }
}
