//! Relay port allocator over a configured UDP port range.
//!
//! Does: hand out an even RTP port with RTCP on port + 1 (RFC 3550 §11), or a single port
//! when RTCP is muxed (RFC 5761); take ports back on free; refuse double frees and ports it
//! never handed out; report exhaustion as an error (the call layer answers 503). A bitmap
//! (one bit per port, one allocation at construction) scanned next-fit from a cursor: a
//! word-at-a-time scan, deterministic order, and a just-freed port is reused only after the
//! rest of the range (late packets of an ended call do not reach a new one).
//!
//! Quarantine: a port the shell found bound by another process (EADDRINUSE) is taken out
//! of the pool until a deadline (`quarantine(port, until)`), then goes back by itself at
//! the first `release_expired(now)` at or after it, so a port that was only briefly taken
//! is tried again rather than lost until restart. Deadlines come in from the caller's `now`.
//!
//! Also the call capacity arithmetic ([`CallCapacity`]): how many calls the port range and a
//! file-descriptor limit allow, and which of the two is the bound.
//!
//! Never: binds sockets (the runtime binds what it is given and reports the ports that fail),
//! hands out a port that is in use or quarantined, reads the clock, or allocates after
//! construction except to queue and release quarantined ports (rare: ports found in use).

use std::collections::VecDeque;
use std::ops::RangeInclusive;
use std::time::Instant;

/// Port allocator errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PortError {
    /// No free port (or even/odd pair) is left in the range.
    #[error("relay port range exhausted")]
    Exhausted,
    /// The range is empty or holds no even/odd pair.
    #[error("invalid relay port range {start}..={end}")]
    InvalidRange { start: u16, end: u16 },
    /// Freeing a port that is not currently allocated (double free or never handed out).
    #[error("port {0} is not allocated")]
    NotAllocated(u16),
}

/// A port found bound by another process, out of the pool until `until`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quarantined {
    pub port: u16,
    pub until: Instant,
}

/// Ports given to one relay socket set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct PortAllocation {
    /// The RTP port (even when paired).
    pub rtp: u16,
    /// The RTCP port (`rtp + 1`), or `None` when RTCP is muxed on `rtp`.
    pub rtcp: Option<u16>,
}

const PAIR_MASK: u64 = 0x5555_5555_5555_5555;

/// Bitmap allocator over `start..=end`.
#[derive(Debug, Clone)]
pub struct PortAllocator {
    /// Port of bit 0 of word 0: `start` rounded down to even, so even ports sit on even
    /// bits and a pair never straddles two words.
    base: u16,
    start: u16,
    end: u16,
    /// Bit set = in use, quarantined, or outside the range.
    words: Vec<u64>,
    /// Bit set = quarantined (a subset of `words`).
    held: Vec<u64>,
    /// Quarantined ports in deadline order (FIFO when every quarantine lasts as long).
    quarantine: VecDeque<Quarantined>,
    /// Next bit index to try (next-fit).
    cursor: usize,
    capacity: usize,
    in_use: usize,
}

impl PortAllocator {
    /// An allocator over `range` with every port free.
    pub fn new(range: RangeInclusive<u16>) -> Result<Self, PortError> {
        let (start, end) = (*range.start(), *range.end());
        if start > end || start == 0 {
            return Err(PortError::InvalidRange { start, end });
        }
        let base = start & !1;
        let bits = usize::from(end - base) + 1;
        let nwords = bits.div_ceil(64);
        let mut words = vec![0u64; nwords];
        // Mark the out-of-range bits (below start, above end) as permanently used.
        for i in 0..nwords * 64 {
            let port = usize::from(base) + i;
            if port < usize::from(start) || port > usize::from(end) {
                words[i / 64] |= 1 << (i % 64);
            }
        }
        Ok(PortAllocator {
            base,
            start,
            end,
            held: vec![0u64; nwords],
            words,
            quarantine: VecDeque::new(),
            cursor: 0,
            capacity: usize::from(end - start) + 1,
            in_use: 0,
        })
    }

    /// Ports in the range.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Ports currently free.
    pub fn available(&self) -> usize {
        self.capacity - self.in_use - self.quarantine.len()
    }

    /// Ports currently allocated (quarantined ones not included).
    pub fn in_use(&self) -> usize {
        self.in_use
    }

    /// Ports currently quarantined.
    pub fn quarantined(&self) -> usize {
        self.quarantine.len()
    }

    /// Whether `port` is currently allocated (to a caller, not quarantined).
    pub fn is_allocated(&self, port: u16) -> bool {
        self.bit(port).is_some_and(|i| {
            let (w, m) = (i / 64, 1u64 << (i % 64));
            self.words[w] & m != 0 && self.held[w] & m == 0
        })
    }

    /// Whether `port` is quarantined.
    pub fn is_quarantined(&self, port: u16) -> bool {
        self.bit(port)
            .is_some_and(|i| self.held[i / 64] & (1 << (i % 64)) != 0)
    }

    /// Takes an allocated `port` out of the pool until `until`: another process holds it.
    /// The caller no longer owns it (never free it); [`Self::release_expired`] puts it back.
    pub fn quarantine(&mut self, port: u16, until: Instant) -> Result<(), PortError> {
        if !self.is_allocated(port) {
            return Err(PortError::NotAllocated(port));
        }
        let i = usize::from(port - self.base);
        self.held[i / 64] |= 1 << (i % 64);
        self.in_use -= 1;
        // Keep deadline order even if the quarantine length changed (a reload).
        let at = self.quarantine.partition_point(|q| q.until <= until);
        self.quarantine.insert(at, Quarantined { port, until });
        Ok(())
    }

    /// The earliest quarantine deadline.
    pub fn next_release(&self) -> Option<Instant> {
        self.quarantine.front().map(|q| q.until)
    }

    /// Puts every port whose quarantine ended at or before `now` back into the pool (to be
    /// tried again by the next allocation that reaches it); returns them.
    pub fn release_expired(&mut self, now: Instant) -> Vec<u16> {
        let mut back = Vec::new();
        while let Some(q) = self.quarantine.front().copied() {
            if q.until > now {
                break;
            }
            self.quarantine.pop_front();
            let i = usize::from(q.port - self.base);
            self.held[i / 64] &= !(1 << (i % 64));
            self.words[i / 64] &= !(1 << (i % 64));
            back.push(q.port);
        }
        back
    }

    fn bit(&self, port: u16) -> Option<usize> {
        (port >= self.start && port <= self.end).then(|| usize::from(port - self.base))
    }

    /// Allocate an RTP/RTCP pair (`rtcp_mux == false`) or a single port (`true`).
    pub fn allocate(&mut self, rtcp_mux: bool) -> Result<PortAllocation, PortError> {
        if rtcp_mux {
            self.allocate_single()
        } else {
            self.allocate_pair()
        }
    }

    /// An even RTP port and the odd RTCP port after it (RFC 3550 §11).
    pub fn allocate_pair(&mut self) -> Result<PortAllocation, PortError> {
        let i = self.find(|w| !w & (!w >> 1) & PAIR_MASK)?;
        self.words[i / 64] |= 0b11 << (i % 64);
        self.in_use += 2;
        self.cursor = i + 2;
        let rtp = self.base + i as u16;
        Ok(PortAllocation {
            rtp,
            rtcp: Some(rtp + 1),
        })
    }

    /// One port for RTP with RTCP muxed (RFC 5761).
    pub fn allocate_single(&mut self) -> Result<PortAllocation, PortError> {
        let i = self.find(|w| !w)?;
        self.words[i / 64] |= 1 << (i % 64);
        self.in_use += 1;
        self.cursor = i + 1;
        Ok(PortAllocation {
            rtp: self.base + i as u16,
            rtcp: None,
        })
    }

    /// Next-fit scan: lowest candidate bit at or after the cursor, wrapping once.
    fn find(&self, candidates: impl Fn(u64) -> u64) -> Result<usize, PortError> {
        let n = self.words.len();
        let cursor = if self.cursor >= n * 64 {
            0
        } else {
            self.cursor
        };
        let (cw, cb) = (cursor / 64, cursor % 64);
        for step in 0..=n {
            let k = (cw + step) % n;
            let mut m = candidates(self.words[k]);
            if step == 0 {
                m &= u64::MAX << cb;
            } else if step == n {
                m &= !(u64::MAX << cb);
            }
            if m != 0 {
                return Ok(k * 64 + m.trailing_zeros() as usize);
            }
        }
        Err(PortError::Exhausted)
    }

    /// Return one port. Rejects ports not currently allocated (double free, quarantined).
    pub fn free_port(&mut self, port: u16) -> Result<(), PortError> {
        if !self.is_allocated(port) {
            return Err(PortError::NotAllocated(port));
        }
        let i = usize::from(port - self.base);
        self.words[i / 64] &= !(1 << (i % 64));
        self.in_use -= 1;
        Ok(())
    }

    /// Return an allocation (both ports of a pair). Checks both before freeing either, so a
    /// rejected free changes nothing.
    pub fn free(&mut self, a: PortAllocation) -> Result<(), PortError> {
        for p in std::iter::once(a.rtp).chain(a.rtcp) {
            if !self.is_allocated(p) {
                return Err(PortError::NotAllocated(p));
            }
        }
        for p in std::iter::once(a.rtp).chain(a.rtcp) {
            self.free_port(p)?;
        }
        Ok(())
    }
}

/// Descriptors one call's relay takes: RTP and RTCP sockets on each leg (4, also with
/// rtcp-mux, which keeps the RTCP port allocated and bound). A WebSocket AI leg adds its
/// bridge socket and its connection ([`WS_LEG_EXTRA_DESCRIPTORS`]); SIP over UDP adds none.
pub const DESCRIPTORS_PER_CALL: u64 = 4;
/// Descriptors a WebSocket AI leg adds to a call: the local UDP bridge socket and the
/// WebSocket (TCP or TLS) connection.
pub const WS_LEG_EXTRA_DESCRIPTORS: u64 = 2;
/// Descriptors kept free of calls (SIP/TCP connections, admin API clients, DNS, webhook and
/// record writers): a sixteenth of those left after start-up, at most this many.
pub const DESCRIPTOR_HEADROOM: u64 = 64;

/// Which limit bounds concurrent calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CapacityBound {
    /// `media.ports`: four ports per call.
    PortRange,
    /// The process's file-descriptor limit (RLIMIT_NOFILE).
    Descriptors,
}

impl CapacityBound {
    pub fn as_str(self) -> &'static str {
        match self {
            CapacityBound::PortRange => "media.ports",
            CapacityBound::Descriptors => "the descriptor limit",
        }
    }
}

/// How many concurrent calls (one anchored audio stream each) the relay port range and a
/// descriptor limit allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallCapacity {
    /// Calls the port range holds: two even/odd pairs per call.
    pub port_range_calls: u64,
    /// Calls that fit in `nofile` after the descriptors already open and the headroom.
    pub descriptor_calls: u64,
    /// The descriptor limit counted with (the soft RLIMIT_NOFILE in force).
    pub nofile: u64,
    /// Descriptors open before the first call.
    pub open: u64,
    /// Descriptors not available to calls: `open` plus the headroom.
    pub reserved: u64,
}

impl CallCapacity {
    /// Capacity for `ports` under a limit of `nofile` descriptors of which `open` are in use
    /// before any call (listeners, workers, the runtime); a sixteenth of the rest, at most
    /// [`DESCRIPTOR_HEADROOM`], is kept free on top.
    pub fn new(ports: &RangeInclusive<u16>, nofile: u64, open: u64) -> CallCapacity {
        let (start, end) = (u32::from(*ports.start()), u32::from(*ports.end()));
        let even = start + start % 2;
        let pairs = if end > even { (end + 1 - even) / 2 } else { 0 };
        let headroom = (nofile.saturating_sub(open) / 16).min(DESCRIPTOR_HEADROOM);
        let reserved = open.saturating_add(headroom);
        CallCapacity {
            port_range_calls: u64::from(pairs / 2),
            descriptor_calls: nofile.saturating_sub(reserved) / DESCRIPTORS_PER_CALL,
            nofile,
            open,
            reserved,
        }
    }

    /// Concurrent calls: the smaller of the two.
    pub fn calls(&self) -> u64 {
        self.port_range_calls.min(self.descriptor_calls)
    }

    /// The limit that bounds [`Self::calls`] (the port range on a tie).
    pub fn bound(&self) -> CapacityBound {
        if self.descriptor_calls < self.port_range_calls {
            CapacityBound::Descriptors
        } else {
            CapacityBound::PortRange
        }
    }

    /// The descriptor limit that lets the whole port range be used (with the full
    /// headroom).
    pub fn nofile_for_port_range(&self) -> u64 {
        self.port_range_calls
            .saturating_mul(DESCRIPTORS_PER_CALL)
            .saturating_add(self.open)
            .saturating_add(DESCRIPTOR_HEADROOM)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_range_of_pairs_then_exhaustion_then_full_again() {
        let mut pa = PortAllocator::new(10_000..=10_199).unwrap();
        assert_eq!(pa.capacity(), 200);
        let mut got = Vec::new();
        while let Ok(a) = pa.allocate_pair() {
            assert_eq!(a.rtp % 2, 0);
            assert_eq!(a.rtcp, Some(a.rtp + 1));
            got.push(a);
        }
        assert_eq!(got.len(), 100);
        assert_eq!(got[0].rtp, 10_000);
        assert_eq!(got[1].rtp, 10_002, "deterministic order");
        let mut ports: Vec<u16> = got.iter().flat_map(|a| [a.rtp, a.rtcp.unwrap()]).collect();
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), 200, "no port handed out twice");
        assert_eq!(pa.available(), 0);
        assert_eq!(pa.allocate_pair(), Err(PortError::Exhausted));
        assert_eq!(pa.allocate_single(), Err(PortError::Exhausted));
        for a in &got {
            pa.free(*a).unwrap();
        }
        assert_eq!(pa.available(), 200, "no leaks");
        assert_eq!(pa.free(got[0]), Err(PortError::NotAllocated(10_000)));
        assert_eq!(pa.available(), 200);
    }

    #[test]
    fn singles_fill_every_port_including_odd_edges() {
        // Odd start and even end: 10_001..=10_070 is 70 ports.
        let mut pa = PortAllocator::new(10_001..=10_070).unwrap();
        let mut got: Vec<u16> =
            std::iter::from_fn(|| pa.allocate_single().ok().map(|a| a.rtp)).collect();
        assert_eq!(got.len(), 70);
        assert_eq!(got[0], 10_001);
        got.sort_unstable();
        assert_eq!(got, (10_001..=10_070).collect::<Vec<_>>());
        for p in &got {
            pa.free_port(*p).unwrap();
        }
        assert_eq!(pa.available(), 70);
        assert_eq!(pa.free_port(10_000), Err(PortError::NotAllocated(10_000)));
        assert_eq!(pa.free_port(10_071), Err(PortError::NotAllocated(10_071)));
    }

    #[test]
    fn pairs_never_start_odd_and_need_both_ports_free() {
        // 10_001 has no even partner below; 10_070 has no partner above.
        let mut pa = PortAllocator::new(10_001..=10_070).unwrap();
        let pairs: Vec<PortAllocation> = std::iter::from_fn(|| pa.allocate_pair().ok()).collect();
        assert_eq!(pairs.len(), 34, "10_002..=10_069 holds 34 pairs");
        assert_eq!(pa.available(), 2);
        let singles = [pa.allocate_single().unwrap(), pa.allocate_single().unwrap()];
        assert_eq!([singles[0].rtp, singles[1].rtp], [10_070, 10_001]);
        // Free only the RTCP half of one pair: still no pair available.
        pa.free_port(pairs[5].rtcp.unwrap()).unwrap();
        assert_eq!(pa.allocate_pair(), Err(PortError::Exhausted));
        assert_eq!(pa.allocate_single().unwrap().rtp, pairs[5].rtcp.unwrap());
    }

    #[test]
    fn next_fit_delays_reuse_and_mixes_with_mux() {
        let mut pa = PortAllocator::new(20_000..=20_009).unwrap();
        let a = pa.allocate_pair().unwrap();
        let b = pa.allocate_single().unwrap();
        assert_eq!((a.rtp, b.rtp), (20_000, 20_002));
        pa.free(a).unwrap();
        // The freed pair is not reused while later ports are free.
        assert_eq!(pa.allocate_pair().unwrap().rtp, 20_004);
        assert_eq!(pa.allocate_pair().unwrap().rtp, 20_006);
        assert_eq!(pa.allocate_pair().unwrap().rtp, 20_008);
        assert_eq!(
            pa.allocate_pair().unwrap().rtp,
            20_000,
            "wraps to the freed pair"
        );
        assert_eq!(pa.allocate_pair(), Err(PortError::Exhausted));
        assert_eq!(pa.allocate(true).unwrap().rtp, 20_003);
        assert_eq!(pa.in_use(), 10);
    }

    #[test]
    fn large_range_and_bad_ranges() {
        let mut pa = PortAllocator::new(1024..=65_535).unwrap();
        assert_eq!(pa.capacity(), 64_512);
        let a = pa.allocate_pair().unwrap();
        assert_eq!(a.rtp, 1024);
        assert!(pa.is_allocated(1025));
        let mut top = PortAllocator::new(65_534..=65_535).unwrap();
        assert_eq!(top.allocate_pair().unwrap().rtcp, Some(65_535));
        assert!(matches!(
            PortAllocator::new(std::ops::RangeInclusive::new(10, 9)),
            Err(PortError::InvalidRange { .. })
        ));
        assert!(PortAllocator::new(0..=10).is_err());
    }

    #[test]
    fn quarantined_port_is_skipped_until_its_deadline_then_reused() {
        let t0 = Instant::now();
        let s = std::time::Duration::from_secs;
        let mut pa = PortAllocator::new(20_000..=20_007).unwrap();
        let a = pa.allocate_pair().unwrap();
        assert_eq!(a.rtp, 20_000);
        // Another process holds 20_000: quarantined for 60 s, 20_001 goes back.
        pa.quarantine(20_000, t0 + s(60)).unwrap();
        pa.free_port(20_001).unwrap();
        assert_eq!((pa.in_use(), pa.quarantined(), pa.available()), (0, 1, 7));
        assert!(pa.is_quarantined(20_000) && !pa.is_allocated(20_000));
        assert_eq!(pa.free_port(20_000), Err(PortError::NotAllocated(20_000)));
        assert_eq!(
            pa.quarantine(20_000, t0),
            Err(PortError::NotAllocated(20_000))
        );
        assert_eq!(pa.next_release(), Some(t0 + s(60)));
        // Until then no allocation gets it: three pairs, then only the lone 20_001.
        let got: Vec<u16> = std::iter::from_fn(|| pa.allocate_pair().ok().map(|a| a.rtp)).collect();
        assert_eq!(got, [20_002, 20_004, 20_006]);
        assert_eq!(pa.allocate_single().unwrap().rtp, 20_001);
        assert_eq!(pa.allocate_single(), Err(PortError::Exhausted));
        assert!(pa.release_expired(t0 + s(59)).is_empty(), "not yet");
        assert!(pa.is_quarantined(20_000));
        // At the deadline it is back in the pool and is handed out again.
        assert_eq!(pa.release_expired(t0 + s(60)), vec![20_000]);
        assert_eq!((pa.quarantined(), pa.next_release()), (0, None));
        assert_eq!(pa.allocate_single().unwrap().rtp, 20_000);
        assert_eq!(pa.in_use(), 8);
    }

    #[test]
    fn quarantines_release_in_deadline_order_and_keep_counts_exact() {
        let t0 = Instant::now();
        let s = std::time::Duration::from_secs;
        let mut pa = PortAllocator::new(30_000..=30_009).unwrap();
        let ports: Vec<u16> =
            std::iter::from_fn(|| pa.allocate_single().ok().map(|a| a.rtp)).collect();
        assert_eq!(ports.len(), 10);
        pa.quarantine(30_003, t0 + s(30)).unwrap();
        pa.quarantine(30_001, t0 + s(10)).unwrap();
        pa.quarantine(30_005, t0 + s(20)).unwrap();
        assert_eq!((pa.in_use(), pa.quarantined(), pa.available()), (7, 3, 0));
        assert_eq!(pa.next_release(), Some(t0 + s(10)));
        assert_eq!(pa.release_expired(t0 + s(25)), vec![30_001, 30_005]);
        assert_eq!(pa.next_release(), Some(t0 + s(30)));
        assert_eq!((pa.in_use(), pa.quarantined(), pa.available()), (7, 1, 2));
        for p in ports
            .iter()
            .filter(|p| ![30_001, 30_003, 30_005].contains(*p))
        {
            pa.free_port(*p).unwrap();
        }
        assert_eq!(pa.release_expired(t0 + s(30)), vec![30_003]);
        assert_eq!(pa.available(), 10, "nothing lost");
    }

    #[test]
    fn call_capacity_names_the_limit_that_bounds_it() {
        // 16384-32767: 8192 pairs, 4096 calls.
        // The common soft limit: 1024, 40 open, a sixteenth of the rest (61) kept free.
        let c = CallCapacity::new(&(16_384..=32_767), 1024, 40);
        assert_eq!(c.port_range_calls, 4096);
        assert_eq!(c.reserved, 40 + 61);
        assert_eq!(c.descriptor_calls, (1024 - 101) / 4);
        assert_eq!(c.calls(), 230);
        assert_eq!(c.bound(), CapacityBound::Descriptors);
        assert_eq!(
            c.nofile_for_port_range(),
            4096 * 4 + 40 + DESCRIPTOR_HEADROOM
        );
        // The headroom never exceeds DESCRIPTOR_HEADROOM and shrinks with a tiny limit.
        let big = CallCapacity::new(&(16_384..=32_767), 1 << 20, 40);
        assert_eq!(big.reserved, 40 + DESCRIPTOR_HEADROOM);
        assert_eq!(
            CallCapacity::new(&(16_384..=32_767), 40, 16).descriptor_calls,
            5
        );
        let c = CallCapacity::new(&(16_384..=32_767), 1_048_576, 40);
        assert_eq!((c.calls(), c.bound()), (4096, CapacityBound::PortRange));
        // Odd edges: 10_001..=10_070 holds 34 pairs, 17 calls.
        assert_eq!(
            CallCapacity::new(&(10_001..=10_070), u64::MAX, 0).calls(),
            17
        );
        // A limit below what is already open allows nothing.
        assert_eq!(
            CallCapacity::new(&(10_000..=10_099), 50, 60).descriptor_calls,
            0
        );
    }
}
