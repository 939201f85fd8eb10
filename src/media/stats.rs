//! Per-stream media counters: packets and octets, RFC 3550 loss and jitter, drops by reason.
//!
//! Does: track the *incoming* RTP stream's sequence numbers (RFC 3550 A.1/A.3: extended
//! highest sequence number, expected vs. received, cumulative loss, reordering, restarts),
//! detect duplicates in a 64-packet window, compute interarrival jitter (RFC 3550 A.8, in
//! timestamp units and in milliseconds), and count forwarded packets and drops by reason.
//! [`StreamStatsSnapshot`] is the `serde::Serialize` view for logs, CDRs and the admin API.
//!
//! Never: allocates, reads the clock (arrival time comes in as `now`), or decides anything
//! about forwarding — the relay calls `handle_*` and reads `snapshot()`.

use std::time::Instant;

use serde::Serialize;

use super::rtp::PacketError;

/// RFC 3550 A.1: a jump of fewer than this many packets is a gap, not a restart.
const MAX_DROPOUT: u16 = 3000;
/// RFC 3550 A.1: packets this far behind the highest are late (reordered), not a restart.
const MAX_MISORDER: u16 = 100;
const RTP_SEQ_MOD: u32 = 1 << 16;

/// Why a packet was not forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DropReason {
    /// STUN, DTLS, ZRTP, TURN or an unknown first byte (RFC 7983) on a media port.
    #[error("not RTP/RTCP")]
    NotRtp,
    /// Failed RTP/RTCP header validation.
    #[error("malformed: {0}")]
    Malformed(PacketError),
    /// Not from the latched peer address (another source is latched).
    #[error("not from the latched peer")]
    WrongSource,
    /// Nothing is latched yet and the source may never latch: not the SDP's address and
    /// not its IP under `latching: strict` (or the leg has no SDP address yet).
    #[error("not the peer's SDP address (not latched)")]
    UnexpectedSource,
    /// Nothing is latched yet and the source is only a candidate (the SDP's IP on another
    /// port, or another IP under `latching: any`): held back during the learning window,
    /// or while a better candidate is still sending.
    #[error("latch candidate held back while learning")]
    Learning,
    /// Nowhere to send: the other leg has neither an SDP address nor a latched one.
    #[error("no peer address on the other leg yet")]
    NoPeerYet,
    /// This direction is disabled (hold / inactive / recvonly).
    #[error("direction disabled")]
    Disabled,
}

impl DropReason {
    /// A stable label for metrics and logs (matches the [`DropCounts`] field names).
    ///
    /// [`DropCounts`]: DropCounts
    pub fn as_str(&self) -> &'static str {
        match self {
            DropReason::NotRtp => "not_rtp",
            DropReason::Malformed(_) => "malformed",
            DropReason::WrongSource => "wrong_source",
            DropReason::UnexpectedSource => "unexpected_source",
            DropReason::Learning => "learning",
            DropReason::NoPeerYet => "no_peer_yet",
            DropReason::Disabled => "disabled",
        }
    }
}

/// Drop counters, one per [`DropReason`] kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DropCounts {
    /// STUN/DTLS/unknown datagrams on a media port.
    pub not_rtp: u64,
    /// RTP/RTCP that failed header validation.
    pub malformed: u64,
    /// From an address other than the latched peer (RTP injection / "RTP bleed").
    pub wrong_source: u64,
    /// Nothing latched yet, from a source that may not latch: not the peer's SDP address
    /// (another IP under `latching: strict`, or no SDP address yet).
    pub unexpected_source: u64,
    /// Nothing latched yet, from a latch candidate held back during the learning window
    /// (the SDP's IP on another port, or another IP under `latching: any`).
    pub learning: u64,
    /// Valid, but the other leg has no address to send to yet.
    pub no_peer_yet: u64,
    /// The direction is disabled (hold / inactive).
    pub disabled: u64,
}

impl DropCounts {
    /// Total of all drop counters.
    pub fn total(&self) -> u64 {
        self.not_rtp
            + self.malformed
            + self.wrong_source
            + self.unexpected_source
            + self.learning
            + self.no_peer_yet
            + self.disabled
    }
}

/// A point-in-time copy of one direction's counters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct StreamStatsSnapshot {
    /// Valid RTP packets accepted from the latched peer (duplicates included).
    pub packets_received: u64,
    /// Octets of those packets (whole datagrams).
    pub bytes_received: u64,
    /// RTP packets forwarded to the other leg.
    pub packets_forwarded: u64,
    /// Octets of forwarded RTP.
    pub bytes_forwarded: u64,
    /// RTCP packets forwarded to the other leg.
    pub rtcp_packets_forwarded: u64,
    /// Packets the sequence numbers say should have arrived (RFC 3550 A.3), all sources.
    pub packets_expected: u64,
    /// Cumulative packets lost: expected − received, all sources (RFC 3550 A.3). Duplicates
    /// are excluded from "received" within a 64-packet window, so this is rarely negative.
    pub packets_lost: i64,
    /// Duplicates detected (same sequence number seen within the last 64).
    pub duplicates: u64,
    /// Extended highest sequence number of the current source (RFC 3550 §6.4.1).
    pub extended_highest_seq: u32,
    /// Interarrival jitter in timestamp units (RFC 3550 A.8).
    pub jitter_ts: u32,
    /// Interarrival jitter in milliseconds, from the stream's clock rate.
    pub jitter_ms: f64,
    /// Input source changes (new SSRC or explicit switch).
    pub source_switches: u64,
    /// Drops by reason.
    pub drops: DropCounts,
}

/// RFC 3550 A.1 sequence state of one source.
#[derive(Debug, Clone, Copy)]
struct SeqState {
    max_seq: u16,
    cycles: u32,
    base_seq: u32,
    /// RTP_SEQ_MOD + 1 when unset (RFC 3550 A.1).
    bad_seq: u32,
    received: u64,
    /// Bit i set = sequence number `max_seq - i` was seen (duplicate detection).
    recent: u64,
}

impl SeqState {
    fn new(seq: u16) -> Self {
        SeqState {
            max_seq: seq,
            cycles: 0,
            base_seq: u32::from(seq),
            bad_seq: RTP_SEQ_MOD + 1,
            received: 0,
            recent: 0,
        }
    }
    fn extended_max(&self) -> u32 {
        self.cycles.wrapping_add(u32::from(self.max_seq))
    }
    fn expected(&self) -> u64 {
        // RFC 3550 A.3: extended_max - base_seq + 1, in 64 bits so it cannot wrap.
        (u64::from(self.cycles) + u64::from(self.max_seq) + 1)
            .saturating_sub(u64::from(self.base_seq))
    }
}

/// What [`StreamStats::handle_rtp_received`] made of a sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqVerdict {
    /// New, counted.
    Counted,
    /// Seen before within the duplicate window.
    Duplicate,
    /// A large jump; held until the next packet confirms a restart (RFC 3550 A.1).
    BadJump,
}

/// Live counters of one relay direction.
#[derive(Debug, Clone)]
pub struct StreamStats {
    clock_rate_hz: u32,
    base: Instant,
    seq: Option<SeqState>,
    /// Expected/received of earlier sources and restarted runs (RFC 3550 A.1 restarts).
    prior_expected: u64,
    prior_received: u64,
    duplicates: u64,
    /// Previous transit time (arrival − RTP timestamp), in timestamp units.
    transit: Option<u32>,
    /// Jitter × 16 (RFC 3550 A.8 integer form).
    jitter_q4: u64,
    packets_received: u64,
    bytes_received: u64,
    packets_forwarded: u64,
    bytes_forwarded: u64,
    rtcp_packets_forwarded: u64,
    source_switches: u64,
    drops: DropCounts,
}

impl StreamStats {
    /// Counters for a stream with this RTP clock rate; `base` is any fixed instant (arrival
    /// times are measured from it, only differences matter).
    pub fn new(clock_rate_hz: u32, base: Instant) -> Self {
        StreamStats {
            clock_rate_hz,
            base,
            seq: None,
            prior_expected: 0,
            prior_received: 0,
            duplicates: 0,
            transit: None,
            jitter_q4: 0,
            packets_received: 0,
            bytes_received: 0,
            packets_forwarded: 0,
            bytes_forwarded: 0,
            rtcp_packets_forwarded: 0,
            source_switches: 0,
            drops: DropCounts::default(),
        }
    }

    /// Arrival time in timestamp units (wrapping, like RTP timestamps).
    #[inline]
    fn arrival_ts(&self, now: Instant) -> u32 {
        let us = now.saturating_duration_since(self.base).as_micros() as u64;
        (us.wrapping_mul(u64::from(self.clock_rate_hz)) / 1_000_000) as u32
    }

    /// A valid RTP packet from the latched peer arrived.
    #[inline]
    pub fn handle_rtp_received(
        &mut self,
        seq: u16,
        ts: u32,
        len: usize,
        now: Instant,
    ) -> SeqVerdict {
        self.packets_received += 1;
        self.bytes_received += len as u64;
        let verdict = self.update_seq(seq);
        if verdict == SeqVerdict::Counted {
            // RFC 3550 A.8: D = (Rj − Ri) − (Sj − Si) = transit_j − transit_i;
            // J += (|D| − J) / 16, kept ×16 in integers.
            let transit = self.arrival_ts(now).wrapping_sub(ts);
            if let Some(prev) = self.transit {
                let d = u64::from((transit.wrapping_sub(prev) as i32).unsigned_abs());
                self.jitter_q4 = (self.jitter_q4 + d).saturating_sub((self.jitter_q4 + 8) >> 4);
            }
            self.transit = Some(transit);
        }
        verdict
    }

    fn update_seq(&mut self, seq: u16) -> SeqVerdict {
        let s = match &mut self.seq {
            Some(s) => s,
            None => {
                let mut s = SeqState::new(seq);
                s.received = 1;
                s.recent = 1;
                self.seq = Some(s);
                return SeqVerdict::Counted;
            }
        };
        let udelta = seq.wrapping_sub(s.max_seq);
        if udelta == 0 {
            self.duplicates += 1;
            return SeqVerdict::Duplicate;
        } else if udelta < MAX_DROPOUT {
            // In order, with a permissible gap.
            if seq < s.max_seq {
                s.cycles = s.cycles.wrapping_add(RTP_SEQ_MOD);
            }
            s.recent = if udelta >= 64 {
                1
            } else {
                (s.recent << udelta) | 1
            };
            s.max_seq = seq;
        } else if udelta <= u16::MAX - MAX_MISORDER + 1 {
            // A very large jump: if the next packet continues from here, the sender
            // restarted its sequence (RFC 3550 A.1); otherwise ignore this packet.
            if u32::from(seq) == s.bad_seq {
                self.prior_expected += s.expected();
                self.prior_received += s.received;
                *s = SeqState::new(seq);
                s.recent = 1;
                self.transit = None;
            } else {
                s.bad_seq = (u32::from(seq) + 1) & (RTP_SEQ_MOD - 1);
                return SeqVerdict::BadJump;
            }
        } else {
            // Late (reordered) or duplicate.
            let back = s.max_seq.wrapping_sub(seq);
            if back < 64 {
                let bit = 1u64 << back;
                if s.recent & bit != 0 {
                    self.duplicates += 1;
                    return SeqVerdict::Duplicate;
                }
                s.recent |= bit;
            }
        }
        s.received += 1;
        SeqVerdict::Counted
    }

    /// The input source changed (new SSRC or explicit switch): close the current sequence
    /// run into the cumulative totals and restart tracking on the next packet.
    pub fn handle_source_switch(&mut self) {
        if let Some(s) = self.seq.take() {
            self.prior_expected += s.expected();
            self.prior_received += s.received;
        }
        self.transit = None;
        self.source_switches += 1;
    }

    /// An RTP packet of `len` octets was forwarded.
    #[inline]
    pub fn handle_forwarded(&mut self, len: usize) {
        self.packets_forwarded += 1;
        self.bytes_forwarded += len as u64;
    }

    /// An RTCP packet was forwarded.
    #[inline]
    pub fn handle_rtcp_forwarded(&mut self) {
        self.rtcp_packets_forwarded += 1;
    }

    /// A packet was dropped.
    #[inline]
    pub fn handle_drop(&mut self, reason: DropReason) {
        let d = &mut self.drops;
        match reason {
            DropReason::NotRtp => d.not_rtp += 1,
            DropReason::Malformed(_) => d.malformed += 1,
            DropReason::WrongSource => d.wrong_source += 1,
            DropReason::UnexpectedSource => d.unexpected_source += 1,
            DropReason::Learning => d.learning += 1,
            DropReason::NoPeerYet => d.no_peer_yet += 1,
            DropReason::Disabled => d.disabled += 1,
        }
    }

    /// Drop counters so far.
    pub fn drops(&self) -> DropCounts {
        self.drops
    }

    /// Copy out every counter.
    pub fn snapshot(&self) -> StreamStatsSnapshot {
        let (cur_expected, cur_received, ext_max) = match &self.seq {
            Some(s) => (s.expected(), s.received, s.extended_max()),
            None => (0, 0, 0),
        };
        let expected = self.prior_expected + cur_expected;
        let received = self.prior_received + cur_received;
        let jitter_ts = (self.jitter_q4 >> 4) as u32;
        let jitter_ms = if self.clock_rate_hz == 0 {
            0.0
        } else {
            self.jitter_q4 as f64 / 16.0 * 1000.0 / f64::from(self.clock_rate_hz)
        };
        StreamStatsSnapshot {
            packets_received: self.packets_received,
            bytes_received: self.bytes_received,
            packets_forwarded: self.packets_forwarded,
            bytes_forwarded: self.bytes_forwarded,
            rtcp_packets_forwarded: self.rtcp_packets_forwarded,
            packets_expected: expected,
            packets_lost: expected as i64 - received as i64,
            duplicates: self.duplicates,
            extended_highest_seq: ext_max,
            jitter_ts,
            jitter_ms,
            source_switches: self.source_switches,
            drops: self.drops,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn feed(st: &mut StreamStats, base: Instant, seq: u16, ts: u32, arrival_us: u64) -> SeqVerdict {
        st.handle_rtp_received(seq, ts, 172, base + Duration::from_micros(arrival_us))
    }

    #[test]
    fn loss_with_gaps_reorder_duplicate_and_wrap() {
        let base = Instant::now();
        let mut st = StreamStats::new(8000, base);
        // 1000 packets starting at 65000 (so the sequence wraps), every 10th lost (100),
        // packets 500/501 swapped, packet 700 duplicated.
        let start: u16 = 65000;
        let mut order: Vec<u32> = (0..1000).filter(|i| i % 10 != 3).collect();
        let p500 = order.iter().position(|&i| i == 500).unwrap();
        order.swap(p500, p500 + 1);
        let p700 = order.iter().position(|&i| i == 700).unwrap();
        order.insert(p700 + 1, 700);
        let mut verdicts = Vec::new();
        for (k, &i) in order.iter().enumerate() {
            verdicts.push(feed(
                &mut st,
                base,
                start.wrapping_add(i as u16),
                i * 160,
                u64::from(i) * 20_000 + k as u64,
            ));
        }
        let s = st.snapshot();
        assert_eq!(s.packets_received, 901);
        assert_eq!(s.packets_expected, 1000);
        assert_eq!(s.packets_lost, 100);
        assert_eq!(s.duplicates, 1);
        assert_eq!(
            verdicts
                .iter()
                .filter(|v| **v == SeqVerdict::Duplicate)
                .count(),
            1
        );
        // Extended highest: one wrap (65536) + (65000 + 999 − 65536).
        assert_eq!(s.extended_highest_seq, 65536 + 463);
    }

    #[test]
    fn restart_after_large_jump_needs_two_sequential_packets() {
        let base = Instant::now();
        let mut st = StreamStats::new(8000, base);
        for i in 0..10u16 {
            feed(&mut st, base, i, u32::from(i) * 160, u64::from(i) * 20_000);
        }
        assert_eq!(feed(&mut st, base, 30_000, 0, 300_000), SeqVerdict::BadJump);
        assert_eq!(
            feed(&mut st, base, 30_001, 160, 320_000),
            SeqVerdict::Counted
        );
        assert_eq!(
            feed(&mut st, base, 30_002, 320, 340_000),
            SeqVerdict::Counted
        );
        let s = st.snapshot();
        // Run 1: 10 expected/10 received; run 2 restarts at 30_001: 2/2.
        assert_eq!(s.packets_expected, 12);
        assert_eq!(s.packets_lost, 0);
        assert_eq!(s.extended_highest_seq, 30_002);
    }

    #[test]
    fn jitter_hand_computed() {
        let base = Instant::now();
        let mut st = StreamStats::new(8000, base);
        // ts 0,160,320 arriving at 0, 170, 320 timestamp units (0, 21.25 ms, 40 ms):
        // transits 0, 10, 0 → |D| = 10, 10. Integer A.8: J16 = 0+10−0 = 10, then
        // 10+10−((10+8)>>4) = 19 → jitter 19/16 = 1 ts unit, 19/16/8 ms.
        feed(&mut st, base, 1, 0, 0);
        feed(&mut st, base, 2, 160, 21_250);
        feed(&mut st, base, 3, 320, 40_000);
        let s = st.snapshot();
        assert_eq!(s.jitter_ts, 1);
        assert!(
            (s.jitter_ms - 19.0 / 16.0 / 8.0).abs() < 1e-9,
            "{}",
            s.jitter_ms
        );
    }

    #[test]
    fn jitter_converges_to_constant_deviation() {
        let base = Instant::now();
        let mut st = StreamStats::new(8000, base);
        // Arrivals alternate 0 / +2 ms around a 20 ms grid: |D| = 16 ts units every packet,
        // so J converges to 16 (integer form: 15 or 16), i.e. 2 ms.
        for i in 0..2000u64 {
            let jitter_us = if i % 2 == 1 { 2000 } else { 0 };
            feed(
                &mut st,
                base,
                i as u16,
                (i * 160) as u32,
                i * 20_000 + jitter_us,
            );
        }
        let s = st.snapshot();
        assert!(s.jitter_ts == 15 || s.jitter_ts == 16, "{}", s.jitter_ts);
        assert!((s.jitter_ms - 2.0).abs() < 0.125, "{}", s.jitter_ms);
        assert_eq!(s.packets_lost, 0);
    }

    #[test]
    fn source_switch_keeps_cumulative_totals() {
        let base = Instant::now();
        let mut st = StreamStats::new(8000, base);
        for i in [0u16, 1, 3] {
            feed(&mut st, base, i, 0, 0); // 1 lost
        }
        st.handle_source_switch();
        for i in [5000u16, 5001, 5002, 5004] {
            feed(&mut st, base, i, 0, 0); // 1 lost
        }
        let s = st.snapshot();
        assert_eq!(s.packets_expected, 4 + 5);
        assert_eq!(s.packets_lost, 2);
        assert_eq!(s.source_switches, 1);
        assert_eq!(s.extended_highest_seq, 5004);
    }

    #[test]
    fn drops_and_forward_counters_serialize() {
        let base = Instant::now();
        let mut st = StreamStats::new(8000, base);
        st.handle_drop(DropReason::WrongSource);
        st.handle_drop(DropReason::WrongSource);
        st.handle_drop(DropReason::Disabled);
        st.handle_drop(DropReason::Malformed(
            super::super::rtp::PacketError::BadPadding,
        ));
        st.handle_forwarded(172);
        st.handle_rtcp_forwarded();
        assert_eq!(DropReason::WrongSource.as_str(), "wrong_source");
        assert_eq!(
            DropReason::WrongSource.to_string(),
            "not from the latched peer"
        );
        let s = st.snapshot();
        assert_eq!(s.drops.wrong_source, 2);
        assert_eq!(s.drops.total(), 4);
        assert_eq!((s.packets_forwarded, s.bytes_forwarded), (1, 172));
        let json = serde_json::to_string(&s).unwrap();
        assert!(json.contains("\"wrong_source\":2"), "{json}");
        assert!(json.contains("\"jitter_ms\""), "{json}");
    }
}
