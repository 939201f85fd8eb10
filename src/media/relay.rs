//! The sans-IO per-packet core of the anchored RTP/RTCP relay.
//!
//! Every call's media is anchored: each leg (A = the caller's, B = the callee's) has a
//! holdfast socket pair (RTP, RTCP — or one muxed socket). A packet received on leg X's
//! socket from X's peer is validated, checked against the latched peer address, rewritten
//! in place (SSRC, sequence number, timestamp, payload type, marker) and forwarded to the
//! other leg's peer. [`Relay`] holds both legs and both directions; [`StreamOut`] is one
//! direction's output state; [`PeerLatch`] is one socket's symmetric-RTP latch.
//!
//! Does: source latching (symmetric RTP, RFC 4961 style) with rtpengine-style heuristic
//! learning — the SDP's exact address latches at once, its IP on another port only after a
//! learning window with nothing from the exact address, another IP only under
//! [`Latching::Any`] (see [`PeerLatch`]) — and drops and counts by reason every packet that
//! does not latch and, once latched, every packet from another address (against RTP
//! injection / "RTP bleed": the first packet from a stranger never takes a call's stream).
//! The latched fast path is one address comparison; learning runs only until a latch.
//! Also output continuity across input source switches (one SSRC, one sequence and
//! timestamp space per outgoing stream, RFC 3550 §5.1/§8), payload-type mapping, RTCP
//! sender-SSRC rewrite (RFC 3550 §7.2), media-inactivity deadlines, and per-direction stats.
//!
//! Never: allocates, locks, reads the clock, or makes a syscall per packet; touches a
//! socket (the runtime shell does recvmmsg/sendmmsg and passes `now`); copies a payload;
//! panics on wire data; handles SRTP/DTLS/ICE (dropped as `NotRtp` for now).
//!
//! After a re-INVITE that moves leg X to a new peer (e.g. a new AI provider), the call core
//! calls [`Relay::relatch`] (new SDP addresses and latching rules; learning starts over) and
//! [`Relay::handle_source_switch`] (keep the stream sent to the other leg continuous); an
//! SSRC change alone is detected here.
//!
//! During the re-route gap, [`Relay::handle_fill`] starts gap audio toward a leg (comfort
//! noise or a prompt, `media::filler`): [`Relay::poll_fill`] yields one G.711 frame per
//! 20 ms as part of that leg's outgoing stream until a packet is forwarded to it again;
//! [`Relay::poll_timeout`] includes the next frame's deadline.
//!
//! For the I/O shell (`runtime::media`), without allocating: [`Relay::poll_latched`] says
//! which socket latched onto which peer, [`Relay::handle_unreachable`] decides whether an
//! ICMP error is news (once per RTP peer), and [`Relay::restart_idle_clock`] makes a media
//! timeout fire once per silence.
//!
//! See `LIFECYCLE.md` in this folder for the latch states (learning → latched → relatched)
//! and the stream states (fresh → running → switched).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::filler::{law_of_payload_type, Filler, GapAudio};
use super::rtp::{
    classify, rewrite_rtcp, PacketClass, PacketError, RtcpRewrite, RtpPacket, RTP_FIXED_HEADER_LEN,
};
pub use super::stats::DropReason;
use super::stats::{StreamStats, StreamStatsSnapshot};
use crate::media::codec::{FRAME, FRAME_SAMPLES, G711};

/// Bytes of one gap-audio packet: the fixed RTP header and 20 ms of G.711 at 8 kHz. A
/// [`Relay::poll_fill`] buffer must hold at least this many.
pub const FILL_PACKET_LEN: usize = RTP_FIXED_HEADER_LEN + FRAME_SAMPLES;

/// A fill polled this late (the worker was busy) skips to the current frame instead of
/// sending a burst the receiver's jitter buffer would have to absorb.
const FILL_MAX_CATCH_UP: Duration = Duration::from_millis(60);

/// Default media timeout for a carrier leg: no RTP for this long means the call is dead.
pub const DEFAULT_CARRIER_MEDIA_TIMEOUT: Duration = Duration::from_secs(30);

/// Which leg of a call, for the relay and the B2BUA alike: A is the leg the INVITE arrived
/// on (holdfast is its UAS), B the leg holdfast placed to the chosen target (holdfast is its
/// UAC). Which of them faces a carrier and which an AI agent depends on the call's
/// direction; the core sets each leg's media timeout accordingly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Side {
    /// The leg the INVITE arrived on (the caller's).
    A,
    /// The leg holdfast placed (the callee's).
    B,
}

impl Side {
    /// The other leg.
    #[inline]
    pub fn other(self) -> Side {
        match self {
            Side::A => Side::B,
            Side::B => Side::A,
        }
    }
    #[inline]
    fn idx(self) -> usize {
        match self {
            Side::A => 0,
            Side::B => 1,
        }
    }
}

/// The runtime's next step for one datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Send `buf[..len]` (already rewritten in place) to `to` from the local socket `via`.
    Forward {
        /// Peer address on the other leg.
        to: SocketAddr,
        /// Bytes to send (the whole datagram; rewriting never changes the length).
        len: usize,
        /// Which holdfast socket to send from.
        via: LocalSocket,
    },
    /// Do not send; counted in the stats.
    Drop(DropReason),
}

/// One of holdfast's sockets of a relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LocalSocket {
    /// The leg the socket belongs to.
    pub side: Side,
    /// RTP socket (also carries RTCP when muxed) or the separate RTCP socket.
    pub kind: SocketKind,
}

/// RTP or RTCP socket of a pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum SocketKind {
    /// The even RTP port (or the single rtcp-mux port).
    Rtp,
    /// The RTP port + 1.
    Rtcp,
}

/// Payload-type rewrite table for one direction (e.g. telephone-event 101 → 96). A fixed
/// 128-entry array: O(1) lookup, no allocation; unmapped types pass through unchanged.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PayloadTypeMap {
    table: [u8; 128],
}

impl std::fmt::Debug for PayloadTypeMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut m = f.debug_map();
        for (from, &to) in self.table.iter().enumerate() {
            if usize::from(to) != from {
                m.entry(&from, &to);
            }
        }
        m.finish()
    }
}

impl Default for PayloadTypeMap {
    fn default() -> Self {
        Self::identity()
    }
}

impl PayloadTypeMap {
    /// Every payload type maps to itself.
    pub const fn identity() -> Self {
        let mut table = [0u8; 128];
        let mut i = 0;
        while i < 128 {
            table[i] = i as u8;
            i += 1;
        }
        PayloadTypeMap { table }
    }
    /// Builder form of [`insert`](Self::insert).
    pub fn with(mut self, from: u8, to: u8) -> Self {
        self.insert(from, to);
        self
    }
    /// Map `from` to `to` (both taken modulo 128: PT is 7 bits).
    pub fn insert(&mut self, from: u8, to: u8) {
        self.table[usize::from(from & 0x7f)] = to & 0x7f;
    }
    /// The outgoing payload type for an incoming one.
    #[inline]
    pub fn map(&self, pt: u8) -> u8 {
        self.table[usize::from(pt & 0x7f)]
    }
}

/// Default [`LatchPolicy::learning_window`]: how long a latch waits for a packet from the
/// exact SDP address before it accepts a candidate (rtpengine's heuristic learning).
pub const DEFAULT_LEARNING_WINDOW: Duration = Duration::from_secs(1);

/// Which sources other than the SDP's exact address:port may become a leg's peer
/// (`latching:` in the configuration, per carrier / AI provider or `media.latching`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Latching {
    /// The SDP's IP on another port (a NAT rewriting the port), after the learning window;
    /// never another IP.
    #[default]
    Strict,
    /// Also any other IP, after the learning window and only when no better candidate
    /// sends: for NATed trunks whose media comes from another address than their SDP says.
    Any,
}

impl Latching {
    /// The configuration's word for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Latching::Strict => "strict",
            Latching::Any => "any",
        }
    }
}

/// How one leg's sockets learn their peer's real address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LatchPolicy {
    /// Which sources may latch besides the exact SDP address.
    pub latching: Latching,
    /// From the moment the leg got its SDP address (or a relatch), how long only the exact
    /// SDP address latches; a candidate latches after it if the exact address stayed silent.
    pub learning_window: Duration,
}

impl Default for LatchPolicy {
    fn default() -> Self {
        LatchPolicy {
            latching: Latching::Strict,
            learning_window: DEFAULT_LEARNING_WINDOW,
        }
    }
}

/// How a source that is not the exact SDP address relates to it (ordered: better last).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Candidate {
    /// Another IP (only under [`Latching::Any`]).
    OtherIp,
    /// The SDP's IP on another port.
    SameIp,
}

/// Whether `a` and `b` are the same IP (an IPv4-mapped IPv6 address is its IPv4 one).
#[inline]
fn same_ip(a: SocketAddr, b: SocketAddr) -> bool {
    a.ip().to_canonical() == b.ip().to_canonical()
}

/// Symmetric-RTP latch of one local socket: where the peer is expected (from SDP) and
/// where it really sends from (learned from valid packets, rtpengine-style).
///
/// Until it latches: a packet from exactly the SDP address latches at once; one from the
/// SDP's IP on another port is a candidate, and so is one from any other IP under
/// [`Latching::Any`]. A candidate latches only once the learning window (from the SDP
/// address / relatch) is over, and only if no better candidate is still sending (the same
/// IP beats another IP); until then its packets are dropped as
/// [`DropReason::Learning`]. Anything else is [`DropReason::UnexpectedSource`]. With no SDP
/// address, nothing latches under `strict`, the first valid packet under `any`. Once
/// latched, only the latched address passes ([`DropReason::WrongSource`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerLatch {
    latched: Option<SocketAddr>,
    expected: Option<SocketAddr>,
    policy: LatchPolicy,
    /// End of the learning window.
    learning_until: Instant,
    /// The best candidate class seen so far, and when it last sent.
    best: Option<(Candidate, Instant)>,
    /// The latched source does not receive (ICMP port unreachable): an asymmetric peer that
    /// sends from one port and listens on the one its SDP gives. Sent to the SDP address.
    asymmetric: bool,
}

impl PeerLatch {
    /// A latch with the address the peer's SDP announced, if any, learning from `now`.
    pub fn new(expected: Option<SocketAddr>, policy: LatchPolicy, now: Instant) -> Self {
        PeerLatch {
            latched: None,
            expected,
            policy,
            // The window is validated short; an absurd one means "no window", never a panic.
            learning_until: now.checked_add(policy.learning_window).unwrap_or(now),
            best: None,
            asymmetric: false,
        }
    }
    /// Accept a valid packet from `from` at `now`: latch by the rules above; afterwards only
    /// the latched address passes. Returns `true` when this call latched.
    #[inline]
    pub fn handle_packet_from(
        &mut self,
        from: SocketAddr,
        now: Instant,
    ) -> Result<bool, DropReason> {
        match self.latched {
            Some(a) if a == from => Ok(false),
            Some(_) => Err(DropReason::WrongSource),
            None => self.learn(from, now),
        }
    }
    /// How `from` relates to the SDP address: `Ok(None)` is the exact address (or, with no
    /// SDP address under `any`, anything).
    fn classify(&self, from: SocketAddr) -> Result<Option<Candidate>, DropReason> {
        match self.expected {
            Some(e) if same_ip(e, from) && e.port() == from.port() => Ok(None),
            Some(e) if same_ip(e, from) => Ok(Some(Candidate::SameIp)),
            Some(_) if self.policy.latching == Latching::Any => Ok(Some(Candidate::OtherIp)),
            None if self.policy.latching == Latching::Any => Ok(None),
            _ => Err(DropReason::UnexpectedSource),
        }
    }
    #[cold]
    fn learn(&mut self, from: SocketAddr, now: Instant) -> Result<bool, DropReason> {
        let Some(class) = self.classify(from)? else {
            self.latched = Some(from);
            return Ok(true);
        };
        // A better candidate that sent within the last window still has the floor.
        let beaten = self.best.is_some_and(|(best, seen)| {
            best > class && now.saturating_duration_since(seen) < self.policy.learning_window
        });
        if self.best.is_none_or(|(best, _)| class >= best || !beaten) {
            self.best = Some((class, now));
        }
        if now < self.learning_until || beaten {
            return Err(DropReason::Learning);
        }
        self.latched = Some(from);
        Ok(true)
    }
    /// Check without latching (RTCP on a muxed port before any RTP): the latched address,
    /// or before a latch only what would latch at once.
    #[inline]
    fn allows(&self, from: SocketAddr) -> Result<(), DropReason> {
        match self.latched {
            Some(a) if a == from => Ok(()),
            Some(_) => Err(DropReason::WrongSource),
            None => match self.classify(from)? {
                None => Ok(()),
                Some(_) => Err(DropReason::Learning),
            },
        }
    }
    /// Where to send to this peer: the latched address, else the SDP address.
    #[inline]
    pub fn destination(&self) -> Option<SocketAddr> {
        if self.asymmetric {
            self.expected.or(self.latched)
        } else {
            self.latched.or(self.expected)
        }
    }
    /// Sending to the latched source drew ICMP port unreachable while the SDP gives another
    /// address: the peer sends from one port and listens on another (asymmetric RTP, RFC
    /// 4961 §3 says it should not, some do). Returns `true` when that is the case, and sends
    /// to the SDP address from then on (packets are still accepted from the latched one).
    pub fn handle_unreachable_latch(&mut self, addr: SocketAddr) -> bool {
        let asymmetric = !self.asymmetric
            && self.latched == Some(addr)
            && self.expected.is_some_and(|e| e != addr);
        self.asymmetric |= asymmetric;
        asymmetric
    }
    /// The latched address, if latched.
    pub fn latched(&self) -> Option<SocketAddr> {
        self.latched
    }
    /// The SDP address, if any.
    pub fn expected(&self) -> Option<SocketAddr> {
        self.expected
    }
    /// The latching rules in force.
    pub fn policy(&self) -> LatchPolicy {
        self.policy
    }
    /// Forget the latched address and expect `expected` under `policy` (after a re-INVITE
    /// changed the peer); the learning window starts again at `now`. The same SDP address
    /// under the same policy is the same peer (an unhold, a refresh that changed only RTCP
    /// or mux): a latch onto it stays.
    pub fn relatch(&mut self, expected: Option<SocketAddr>, policy: LatchPolicy, now: Instant) {
        if self.latched.is_some()
            && expected.is_some()
            && (expected, policy) == (self.expected, self.policy)
        {
            return;
        }
        *self = PeerLatch::new(expected, policy, now);
    }
}

/// Configuration of one outgoing stream (one direction).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamConfig {
    /// SSRC of the outgoing stream; never changes for the life of the stream.
    pub ssrc: u32,
    /// First outgoing sequence number (RFC 3550 §5.1: should be random; comes from a seed).
    pub initial_seq: u16,
    /// First outgoing timestamp (likewise random).
    pub initial_ts: u32,
    /// RTP clock rate of the stream, e.g. 8000 for PCMU.
    pub clock_rate_hz: u32,
    /// Payload-type rewrite for this direction.
    pub pt_map: PayloadTypeMap,
}

impl StreamConfig {
    /// SSRC, initial sequence number and timestamp derived from `seed` (splitmix64; the
    /// caller supplies the seed so this stays deterministic and sans-IO).
    pub fn from_seed(seed: u64, clock_rate_hz: u32) -> Self {
        let mut s = seed;
        let mut next = || {
            s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        let a = next();
        let b = next();
        StreamConfig {
            ssrc: a as u32,
            initial_seq: (a >> 32) as u16,
            initial_ts: b as u32,
            clock_rate_hz,
            pt_map: PayloadTypeMap::identity(),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct LastSent {
    seq: u16,
    ts: u32,
    at: Instant,
}

/// One direction's output state: the outgoing SSRC and sequence/timestamp space, the offsets
/// from the current input source, the payload-type map, and the direction's stats.
#[derive(Debug, Clone)]
pub struct StreamOut {
    cfg: StreamConfig,
    enabled: bool,
    /// Held back by the core (the source is being replaced mid-call), whatever the SDP says.
    muted: bool,
    /// When the direction was disabled (hold), so the time on hold is not counted as a
    /// source-switch gap.
    disabled_at: Option<Instant>,
    /// Input SSRC the offsets were computed for.
    in_ssrc: Option<u32>,
    /// Input SSRC the stats are tracking.
    stats_ssrc: Option<u32>,
    switch_pending: bool,
    /// A source switch waits for its first packet, whose gap is then reported.
    gap_pending: bool,
    /// The gap measured at the first packet after a source switch, until polled:
    /// `Some(None)` when nothing had been sent before the switch.
    resumed: Option<Option<Duration>>,
    marker_pending: bool,
    seq_offset: u16,
    ts_offset: u32,
    /// The highest (newest) packet sent so far (forwarded or gap audio).
    last: Option<LastSent>,
    /// When the newest forwarded packet (from a source, never gap audio) was sent: the
    /// start of a source-switch gap.
    last_source_at: Option<Instant>,
    /// Payload type (after mapping) of the last forwarded RTP packet.
    last_pt: Option<u8>,
    /// Gap audio being sent in this stream, if any.
    fill: Option<Fill>,
    /// Gap-audio packets sent in this stream, ever.
    fill_packets: u64,
    stats: StreamStats,
}

/// Gap audio in progress in one outgoing stream.
#[derive(Debug, Clone)]
struct Fill {
    filler: Filler,
    /// When the next frame is due (a 20 ms grid from the start).
    next_at: Instant,
    /// Frames sent in this fill (the first carries the marker).
    sent: u64,
}

/// What [`Relay::handle_fill`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FillStatus {
    /// Gap audio started (or its audio was replaced) in this law; the first frame is due
    /// now.
    Started(G711),
    /// Gap audio stopped (or none was running).
    Stopped,
    /// Not started: the last packet sent to that leg had this payload type, not PCMU (0)
    /// or PCMA (8), and holdfast never sends a codec the peer did not negotiate.
    NotG711(u8),
    /// Not started: nothing was sent to that leg yet, so its codec is unknown.
    NothingSentYet,
}

/// One gap-audio packet from [`Relay::poll_fill`]: send `buf[..len]` to `to` from `via`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FillPacket {
    /// The leg's RTP peer.
    pub to: SocketAddr,
    /// Bytes written ([`FILL_PACKET_LEN`]).
    pub len: usize,
    /// Always the RTP socket of the leg the audio goes to.
    pub via: LocalSocket,
}

impl StreamOut {
    /// A fresh, enabled stream; `now` is the stats' time base.
    pub fn new(cfg: StreamConfig, now: Instant) -> Self {
        StreamOut {
            cfg,
            enabled: true,
            muted: false,
            disabled_at: None,
            in_ssrc: None,
            stats_ssrc: None,
            switch_pending: false,
            gap_pending: false,
            resumed: None,
            marker_pending: false,
            seq_offset: 0,
            ts_offset: 0,
            last: None,
            last_source_at: None,
            last_pt: None,
            fill: None,
            fill_packets: 0,
            stats: StreamStats::new(cfg.clock_rate_hz, now),
        }
    }

    /// The outgoing SSRC.
    pub fn ssrc(&self) -> u32 {
        self.cfg.ssrc
    }

    /// Whether packets in this direction are forwarded.
    pub fn is_enabled(&self) -> bool {
        self.enabled && !self.muted
    }

    /// The configuration.
    pub fn config(&self) -> &StreamConfig {
        &self.cfg
    }

    /// Replace the payload-type map (after a re-negotiation).
    pub fn set_pt_map(&mut self, map: PayloadTypeMap) {
        self.cfg.pt_map = map;
    }

    /// The input now comes from a different source even if the SSRC stays the same (the far
    /// side switched AI provider): the next packet restarts the offsets.
    pub fn handle_source_switch(&mut self) {
        self.switch_pending = true;
        self.gap_pending = true;
        self.stats.handle_source_switch();
        self.stats_ssrc = None;
    }

    /// Live stats.
    pub fn stats(&self) -> &StreamStats {
        &self.stats
    }

    /// Record a valid RTP packet from the latched peer in the stats (before the forward
    /// decision, so received/loss/jitter describe what the peer sent).
    #[inline]
    fn observe(&mut self, ssrc: u32, seq: u16, ts: u32, len: usize, now: Instant) {
        if self.stats_ssrc != Some(ssrc) {
            if self.stats_ssrc.is_some() {
                self.stats.handle_source_switch();
            }
            self.stats_ssrc = Some(ssrc);
        }
        self.stats.handle_rtp_received(seq, ts, len, now);
    }

    /// Rewrite a validated packet in place into this stream's SSRC/seq/ts space.
    ///
    /// On a new input source the offsets are recomputed so the receiver sees one stream
    /// (RFC 3550 §5.1: seq increments by one per packet; timestamp advances with sampling
    /// time): seq continues at last + 1, ts at last + wall-clock gap × clock rate (at least
    /// 1 tick), and the marker is set on that first packet (a new talkspurt, RFC 3551 §4.1).
    #[inline]
    pub fn rewrite(&mut self, pkt: &mut RtpPacket<&mut [u8]>, now: Instant) {
        let in_ssrc = pkt.ssrc();
        let in_seq = pkt.sequence_number();
        let in_ts = pkt.timestamp();
        // Audio flows again: gap audio ends here (a fill that sent frames left
        // `switch_pending` set, so this packet continues right after its last frame).
        self.fill = None;
        if self.switch_pending || self.in_ssrc != Some(in_ssrc) {
            self.restart_offsets(in_seq, in_ts, now);
            self.in_ssrc = Some(in_ssrc);
            self.switch_pending = false;
        }
        let out_seq = in_seq.wrapping_add(self.seq_offset);
        let out_ts = in_ts.wrapping_add(self.ts_offset);
        pkt.set_ssrc(self.cfg.ssrc);
        pkt.set_sequence_number(out_seq);
        pkt.set_timestamp(out_ts);
        let pt = pkt.payload_type();
        let mapped = self.cfg.pt_map.map(pt);
        if mapped != pt {
            pkt.set_payload_type(mapped);
        }
        self.last_pt = Some(mapped);
        if self.marker_pending {
            pkt.set_marker(true);
            self.marker_pending = false;
        }
        // Track the newest packet by serial-number order (RFC 1982), so a late packet does
        // not pull "last" backwards.
        let newer = match self.last {
            None => true,
            Some(l) => (out_seq.wrapping_sub(l.seq) as i16) > 0,
        };
        if newer {
            self.last = Some(LastSent {
                seq: out_seq,
                ts: out_ts,
                at: now,
            });
            self.last_source_at = Some(now);
        }
    }

    #[cold]
    fn restart_offsets(&mut self, in_seq: u16, in_ts: u32, now: Instant) {
        if std::mem::take(&mut self.gap_pending) {
            // From the old source's last packet: gap audio is not the source's audio.
            self.resumed = Some(
                self.last_source_at
                    .map(|at| now.saturating_duration_since(at)),
            );
        }
        let (next_seq, next_ts) = match self.last {
            None => (self.cfg.initial_seq, self.cfg.initial_ts),
            Some(l) => {
                self.marker_pending = true;
                self.next_after(l, now)
            }
        };
        self.seq_offset = next_seq.wrapping_sub(in_seq);
        self.ts_offset = next_ts.wrapping_sub(in_ts);
    }

    /// Sequence number and timestamp of a packet sent at `now` right after `l`: seq + 1,
    /// ts advanced by the wall-clock time between them (at least one tick) — RFC 3550
    /// §5.1's "increments monotonically and linearly" across a pause.
    #[inline]
    fn next_after(&self, l: LastSent, now: Instant) -> (u16, u32) {
        let gap = now.saturating_duration_since(l.at);
        let ticks =
            (gap.as_micros() * u128::from(self.cfg.clock_rate_hz) / 1_000_000).max(1) as u32;
        (l.seq.wrapping_add(1), l.ts.wrapping_add(ticks))
    }

    /// Start (`Some`) or stop (`None`) gap audio in this stream at `now`. See
    /// [`Relay::handle_fill`].
    pub fn handle_fill(
        &mut self,
        audio: Option<GapAudio>,
        negotiated: Option<u8>,
        now: Instant,
    ) -> FillStatus {
        let Some(audio) = audio else {
            self.fill = None;
            return FillStatus::Stopped;
        };
        let Some(pt) = self.last_pt.or(negotiated) else {
            return FillStatus::NothingSentYet;
        };
        let Some(law) = law_of_payload_type(pt) else {
            self.fill = None;
            return FillStatus::NotG711(pt);
        };
        // A different noise per gap of this stream; deterministic from its SSRC.
        let seed = u64::from(self.cfg.ssrc) ^ self.fill_packets.rotate_left(32);
        let filler = Filler::new(audio, law, seed);
        match &mut self.fill {
            // Replacing the audio of a running fill keeps its frame grid and marker.
            Some(f) => f.filler = filler,
            None => {
                self.fill = Some(Fill {
                    filler,
                    next_at: now,
                    sent: 0,
                })
            }
        }
        FillStatus::Started(law)
    }

    /// Whether gap audio is running in this stream.
    pub fn is_filling(&self) -> bool {
        self.fill.is_some()
    }

    /// When the next gap-audio frame is due, if gap audio is running.
    pub fn next_fill_at(&self) -> Option<Instant> {
        self.fill.as_ref().map(|f| f.next_at)
    }

    /// Gap-audio packets sent in this stream so far.
    pub fn fill_packets(&self) -> u64 {
        self.fill_packets
    }

    /// The next gap-audio packet if one is due at `now`: written to `buf` as one RTP packet
    /// of this stream (our SSRC, next seq, ts on the 20 ms grid, marker on the first frame
    /// of a fill); returns its length. A frame whose time passed while nothing could be
    /// sent (direction disabled, `to_peer` false, `buf` too short) is skipped, not queued.
    fn poll_fill(&mut self, now: Instant, buf: &mut [u8], to_peer: bool) -> Option<usize> {
        let fill = self.fill.as_mut()?;
        if fill.next_at > now {
            return None;
        }
        let behind = now.saturating_duration_since(fill.next_at);
        if behind > FILL_MAX_CATCH_UP {
            let skip = (behind.as_nanos() / FRAME.as_nanos()) as u32;
            fill.next_at += FRAME * skip;
        }
        let at = fill.next_at;
        fill.next_at += FRAME;
        if !self.enabled || !to_peer || buf.len() < FILL_PACKET_LEN {
            return None;
        }
        // Nothing sent in this stream yet (an agent that never spoke): the fill opens it.
        let (seq, ts) = match self.last {
            Some(last) => self.next_after(last, at),
            None => (self.cfg.initial_seq, self.cfg.initial_ts),
        };
        let fill = self.fill.as_mut()?;
        let marker = fill.sent == 0;
        let n = fill
            .filler
            .next_frame(&mut buf[RTP_FIXED_HEADER_LEN..FILL_PACKET_LEN]);
        if n != FRAME_SAMPLES {
            return None;
        }
        // RFC 3550 §5.1: V=2, no padding, no extension, no CSRC.
        buf[0] = 0x80;
        buf[1] = (u8::from(marker) << 7) | fill.filler.payload_type();
        buf[2..4].copy_from_slice(&seq.to_be_bytes());
        buf[4..8].copy_from_slice(&ts.to_be_bytes());
        buf[8..12].copy_from_slice(&self.cfg.ssrc.to_be_bytes());
        fill.sent += 1;
        self.fill_packets += 1;
        self.last = Some(LastSent { seq, ts, at });
        // The next forwarded packet continues after this frame (seq + 1, ts by the time
        // since it, marker), whatever its source.
        self.switch_pending = true;
        Some(FILL_PACKET_LEN)
    }
}

/// Configuration of one leg's sockets and peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LegConfig {
    /// Peer RTP address from its SDP (c= and m= port), if known yet.
    pub rtp_peer: Option<SocketAddr>,
    /// Peer RTCP address from `a=rtcp` (RFC 3605), if any; default is RTP port + 1.
    pub rtcp_peer: Option<SocketAddr>,
    /// RTP and RTCP share the RTP socket (RFC 5761).
    pub rtcp_mux: bool,
    /// No RTP from this leg's peer for this long → [`MediaTimeout`].
    pub media_timeout: Duration,
    /// How the leg's sockets learn the peer's real address (see [`PeerLatch`]).
    pub latch: LatchPolicy,
}

impl LegConfig {
    /// A leg with only an RTP address and the given timeout, no mux.
    pub fn new(rtp_peer: Option<SocketAddr>, media_timeout: Duration) -> Self {
        LegConfig {
            rtp_peer,
            rtcp_peer: None,
            rtcp_mux: false,
            media_timeout,
            latch: LatchPolicy::default(),
        }
    }
}

/// One leg's latches and inactivity clock.
#[derive(Debug, Clone, Copy)]
pub struct Leg {
    rtp: PeerLatch,
    rtcp: PeerLatch,
    rtcp_mux: bool,
    media_timeout: Duration,
    last_rx: Instant,
    /// The RTP destination an ICMP unreachable was last reported for (once per peer).
    unreachable_reported: Option<SocketAddr>,
}

impl Leg {
    fn new(cfg: LegConfig, now: Instant) -> Self {
        Leg {
            rtp: PeerLatch::new(cfg.rtp_peer, cfg.latch, now),
            rtcp: PeerLatch::new(rtcp_expected(cfg.rtp_peer, cfg.rtcp_peer), cfg.latch, now),
            rtcp_mux: cfg.rtcp_mux,
            media_timeout: cfg.media_timeout,
            last_rx: now,
            unreachable_reported: None,
        }
    }
    /// The RTP latch.
    pub fn rtp(&self) -> &PeerLatch {
        &self.rtp
    }
    /// The RTCP latch (unused when muxed).
    pub fn rtcp(&self) -> &PeerLatch {
        &self.rtcp
    }
    /// Whether RTCP is muxed on the RTP socket.
    pub fn rtcp_mux(&self) -> bool {
        self.rtcp_mux
    }
    /// Where RTCP for this leg's peer goes: the RTP address when muxed, else the RTCP
    /// latch, else RTP port + 1 (RFC 3550 §11).
    fn rtcp_destination(&self) -> Option<(SocketAddr, SocketKind)> {
        if self.rtcp_mux {
            return self.rtp.destination().map(|a| (a, SocketKind::Rtp));
        }
        self.rtcp
            .destination()
            .or_else(|| {
                let a = self.rtp.destination()?;
                Some(SocketAddr::new(a.ip(), a.port().checked_add(1)?))
            })
            .map(|a| (a, SocketKind::Rtcp))
    }
}

/// The address RTCP is expected from: `a=rtcp` (RFC 3605), else RTP port + 1 (RFC 3550 §11).
fn rtcp_expected(rtp: Option<SocketAddr>, rtcp: Option<SocketAddr>) -> Option<SocketAddr> {
    rtcp.or_else(|| {
        let a = rtp?;
        Some(SocketAddr::new(a.ip(), a.port().checked_add(1)?))
    })
}

/// Configuration of a relay: both legs and both directions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayConfig {
    /// Leg A (the caller's).
    pub a: LegConfig,
    /// Leg B (the callee's).
    pub b: LegConfig,
    /// Stream sent to B, built from what A sends.
    pub a_to_b: StreamConfig,
    /// Stream sent to A, built from what B sends.
    pub b_to_a: StreamConfig,
}

/// "No RTP from this leg for its media timeout."
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MediaTimeout {
    /// The silent leg.
    pub side: Side,
    /// How long it has been silent.
    pub idle_for: Duration,
}

/// Both legs and both directions of one anchored media stream (one m= line).
#[derive(Debug, Clone)]
pub struct Relay {
    legs: [Leg; 2],
    /// `streams[X]` is built from packets received on leg X and sent to the other leg.
    streams: [StreamOut; 2],
    /// Latches that latched since the last [`Relay::poll_latched`]: bit `2 × side + kind`
    /// (a fixed bitmask, so reporting a latch allocates nothing).
    latch_pending: u8,
}

#[inline]
fn latch_bit(side: Side, kind: SocketKind) -> u8 {
    let k = match kind {
        SocketKind::Rtp => 0,
        SocketKind::Rtcp => 1,
    };
    1 << (2 * side.idx() + k)
}

impl Relay {
    /// A relay with nothing latched; inactivity clocks start at `now`.
    pub fn new(cfg: RelayConfig, now: Instant) -> Self {
        Relay {
            legs: [Leg::new(cfg.a, now), Leg::new(cfg.b, now)],
            streams: [
                StreamOut::new(cfg.a_to_b, now),
                StreamOut::new(cfg.b_to_a, now),
            ],
            latch_pending: 0,
        }
    }

    /// A datagram arrived on leg `side`'s RTP socket from `from`. `buf` is exactly the
    /// datagram; on `Forward` it has been rewritten in place. RTCP arriving here (RFC 5761
    /// mux) is handled as RTCP.
    #[inline]
    pub fn handle_rtp(
        &mut self,
        side: Side,
        from: SocketAddr,
        buf: &mut [u8],
        now: Instant,
    ) -> Action {
        let action = self.rtp_path(side, from, buf, now);
        if let Action::Drop(r) = action {
            self.streams[side.idx()].stats.handle_drop(r);
        }
        action
    }

    #[inline]
    fn rtp_path(&mut self, side: Side, from: SocketAddr, buf: &mut [u8], now: Instant) -> Action {
        match classify(buf) {
            PacketClass::Rtp => {}
            PacketClass::Rtcp => return self.rtcp_path(side, from, buf, true, now),
            _ => return Action::Drop(DropReason::NotRtp),
        }
        let len = buf.len();
        let mut pkt = match RtpPacket::new_checked(buf) {
            Ok(p) => p,
            Err(e) => return Action::Drop(DropReason::Malformed(e)),
        };
        let (i, o) = (side.idx(), side.other().idx());
        let leg = &mut self.legs[i];
        match leg.rtp.handle_packet_from(from, now) {
            Ok(false) => {}
            Ok(true) => self.latch_pending |= latch_bit(side, SocketKind::Rtp),
            Err(r) => return Action::Drop(r),
        }
        leg.last_rx = now;
        let stream = &mut self.streams[i];
        stream.observe(pkt.ssrc(), pkt.sequence_number(), pkt.timestamp(), len, now);
        if !stream.enabled || stream.muted {
            return Action::Drop(DropReason::Disabled);
        }
        let Some(to) = self.legs[o].rtp.destination() else {
            return Action::Drop(DropReason::NoPeerYet);
        };
        stream.rewrite(&mut pkt, now);
        stream.stats.handle_forwarded(len);
        Action::Forward {
            to,
            len,
            via: LocalSocket {
                side: side.other(),
                kind: SocketKind::Rtp,
            },
        }
    }

    /// A datagram arrived on leg `side`'s separate RTCP socket (no mux).
    pub fn handle_rtcp(
        &mut self,
        side: Side,
        from: SocketAddr,
        buf: &mut [u8],
        now: Instant,
    ) -> Action {
        let action = match classify(buf) {
            PacketClass::Rtcp => self.rtcp_path(side, from, buf, false, now),
            PacketClass::Rtp => Action::Drop(DropReason::Malformed(PacketError::NotRtcp(
                buf.get(1).copied().unwrap_or(0),
            ))),
            _ => Action::Drop(DropReason::NotRtp),
        };
        if let Action::Drop(r) = action {
            self.streams[side.idx()].stats.handle_drop(r);
        }
        action
    }

    fn rtcp_path(
        &mut self,
        side: Side,
        from: SocketAddr,
        buf: &mut [u8],
        on_rtp: bool,
        now: Instant,
    ) -> Action {
        let (i, o) = (side.idx(), side.other().idx());
        let leg = &mut self.legs[i];
        // Muxed RTCP must come from the RTP peer; it never latches (RTP does). A separate
        // RTCP socket latches by the same rules, against the SDP's RTCP address.
        if on_rtp {
            if let Err(r) = leg.rtp.allows(from) {
                return Action::Drop(r);
            }
        } else {
            if let Err(e) = super::rtp::rtcp_header(buf) {
                return Action::Drop(DropReason::Malformed(e));
            }
            match leg.rtcp.handle_packet_from(from, now) {
                Ok(true) => self.latch_pending |= latch_bit(side, SocketKind::Rtcp),
                Ok(false) => {}
                Err(r) => return Action::Drop(r),
            }
        }
        // RFC 3550 §7.2: keep RTCP consistent with the RTP rewrite — our SSRC as sender,
        // SR timestamps in our timestamp space, and reports about the stream we send to
        // this leg mapped back to the SSRC/sequence space of its original source.
        let (this, back) = (&self.streams[i], &self.streams[o]);
        let rw = RtcpRewrite {
            sender_ssrc: this.cfg.ssrc,
            sr_timestamp: this.in_ssrc.map(|s| (s, this.ts_offset)),
            report_blocks: back.in_ssrc.map(|s| (back.cfg.ssrc, s, back.seq_offset)),
        };
        if let Err(e) = rewrite_rtcp(buf, &rw) {
            return Action::Drop(DropReason::Malformed(e));
        }
        // RTCP from the peer proves its media stack alive (a silent agent, a caller with
        // silence suppression): it restarts the leg's inactivity clock like RTP does.
        self.legs[i].last_rx = now;
        let stream = &mut self.streams[i];
        let Some((to, kind)) = self.legs[o].rtcp_destination() else {
            return Action::Drop(DropReason::NoPeerYet);
        };
        stream.stats.handle_rtcp_forwarded();
        Action::Forward {
            to,
            len: buf.len(),
            via: LocalSocket {
                side: side.other(),
                kind,
            },
        }
    }

    /// The peer of leg `side` changed (an answer, a re-INVITE, a new AI provider): forget its
    /// latched addresses and expect the new SDP addresses under `latch` (the new peer's
    /// target may latch differently); the sockets learn again by the [`PeerLatch`] rules,
    /// their learning window starting at `now`. The new peer gets a full media timeout from
    /// `now`. `rtcp_peer` `None` means RTP port + 1.
    pub fn relatch(
        &mut self,
        side: Side,
        rtp_peer: Option<SocketAddr>,
        rtcp_peer: Option<SocketAddr>,
        latch: LatchPolicy,
        now: Instant,
    ) {
        let leg = &mut self.legs[side.idx()];
        leg.last_rx = now;
        leg.rtp.relatch(rtp_peer, latch, now);
        leg.rtcp
            .relatch(rtcp_expected(rtp_peer, rtcp_peer), latch, now);
        leg.unreachable_reported = None;
        // A latch that was forgotten is not reported; one that stayed still is.
        for (kind, latch) in [(SocketKind::Rtp, leg.rtp), (SocketKind::Rtcp, leg.rtcp)] {
            if latch.latched().is_none() {
                self.latch_pending &= !latch_bit(side, kind);
            }
        }
    }

    /// Whether leg `side`'s RTCP shares its RTP socket (RFC 5761), e.g. after a re-INVITE
    /// negotiated `a=rtcp-mux` on (or off).
    pub fn set_rtcp_mux(&mut self, side: Side, rtcp_mux: bool) {
        self.legs[side.idx()].rtcp_mux = rtcp_mux;
    }

    /// A socket latched onto its peer since the last call: `(leg, socket, peer address)`.
    /// Poll after each batch until `None`; each latch is reported once (again after a
    /// [`relatch`](Self::relatch)).
    pub fn poll_latched(&mut self) -> Option<(Side, SocketKind, SocketAddr)> {
        while self.latch_pending != 0 {
            let bit = self.latch_pending.trailing_zeros();
            self.latch_pending &= !(1 << bit);
            let side = if bit < 2 { Side::A } else { Side::B };
            let leg = &self.legs[side.idx()];
            let (kind, latch) = if bit % 2 == 0 {
                (SocketKind::Rtp, &leg.rtp)
            } else {
                (SocketKind::Rtcp, &leg.rtcp)
            };
            if let Some(addr) = latch.latched() {
                return Some((side, kind, addr));
            }
        }
        None
    }

    /// The first packet from leg `side`'s new source after a
    /// [`handle_source_switch`](Self::handle_source_switch) was forwarded: `(side, gap)`, the
    /// gap being the time since the last packet forwarded before the switch (`None` when
    /// none was). Reported once per switch; poll after each batch like
    /// [`poll_latched`](Self::poll_latched).
    #[inline]
    pub fn poll_resumed(&mut self) -> Option<(Side, Option<Duration>)> {
        [Side::A, Side::B]
            .into_iter()
            .find_map(|s| self.streams[s.idx()].resumed.take().map(|g| (s, g)))
    }

    /// Sending to `addr` from leg `side`'s socket got an ICMP destination/port unreachable.
    /// Returns `true` when the runtime should report it: `addr` is the leg's current RTP
    /// destination (RTCP-only errors are ignored — many peers never listen on the RTCP
    /// port, and that must not end a call) and it was not reported for this peer yet.
    /// [`relatch`](Self::relatch) resets it.
    pub fn handle_unreachable(&mut self, side: Side, addr: SocketAddr) -> bool {
        let leg = &mut self.legs[side.idx()];
        if leg.rtp.destination() != Some(addr) || leg.unreachable_reported == Some(addr) {
            return false;
        }
        // A latched source other than the SDP address that does not listen is an
        // asymmetric peer, not a dead one: it is sent to at its SDP address from now on, and
        // only an ICMP error from there says it is gone.
        if leg.rtp.handle_unreachable_latch(addr) {
            return false;
        }
        leg.unreachable_reported = Some(addr);
        true
    }

    /// Restart leg `side`'s inactivity clock at `now` (after reporting its media timeout,
    /// so a silence is reported once per timeout period rather than on every poll).
    pub fn restart_idle_clock(&mut self, side: Side, now: Instant) {
        self.legs[side.idx()].last_rx = now;
    }

    /// What leg `side` sends now comes from a new source (e.g. a new AI provider): keep the
    /// outgoing stream continuous, and restart the leg's inactivity clock at `now` so the
    /// new source gets a full media timeout.
    pub fn handle_source_switch(&mut self, side: Side, now: Instant) {
        self.streams[side.idx()].handle_source_switch();
        self.legs[side.idx()].last_rx = now;
    }

    /// Enable or disable forwarding of what leg `from` sends, as the SDP directions say
    /// (hold, inactive, recvonly). The leg's silence is still watched while disabled (a
    /// peer that dies on hold is noticed); re-enabling restarts its clock at `now`, and the
    /// time on hold never counts as part of a source-switch gap.
    pub fn set_enabled(&mut self, from: Side, enabled: bool, now: Instant) {
        let s = &mut self.streams[from.idx()];
        if enabled && !s.enabled {
            self.legs[from.idx()].last_rx = now;
            // Resume as a continuation: seq +1, ts by the wall-clock gap, marker set,
            // instead of a sequence jump the receiver would count as loss.
            s.switch_pending = true;
            if let Some(held) = s
                .disabled_at
                .take()
                .map(|d| now.saturating_duration_since(d))
            {
                s.last_source_at = s.last_source_at.map(|t| (t + held).min(now));
            }
        } else if !enabled && s.enabled {
            s.disabled_at = Some(now);
        }
        s.enabled = enabled;
    }

    /// Hold back (or release) what leg `from` sends, whatever the SDP directions say: the
    /// core mutes a source it is replacing mid-call (a failed AI agent) so the other leg
    /// hears nothing more of it. Unlike [`set_enabled`](Self::set_enabled) this is no hold:
    /// the time muted is part of the source-switch gap, and gap audio still plays.
    pub fn set_muted(&mut self, from: Side, muted: bool) {
        let s = &mut self.streams[from.idx()];
        if s.muted && !muted {
            s.switch_pending = true;
        }
        s.muted = muted;
    }

    /// Replace the payload-type map of what leg `from` sends.
    pub fn set_pt_map(&mut self, from: Side, map: PayloadTypeMap) {
        self.streams[from.idx()].set_pt_map(map);
    }

    /// When leg `side` last sent valid RTP from its latched address (or when the clock was
    /// last restarted).
    pub fn idle_since(&self, side: Side) -> Instant {
        self.legs[side.idx()].last_rx
    }

    /// The earliest instant at which [`poll_media_timeout`](Self::poll_media_timeout) or
    /// [`poll_fill`](Self::poll_fill) can have something.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let media = self.legs.iter().map(|l| l.last_rx + l.media_timeout).min();
        match (media, self.next_fill_at()) {
            (Some(m), Some(f)) => Some(m.min(f)),
            (m, f) => m.or(f),
        }
    }

    /// Start (`Some`) or stop (`None`) gap audio toward leg `toward`'s peer at `now` (e.g.
    /// comfort noise to the caller while the AI leg is re-routed).
    ///
    /// The frames are part of the stream sent to that leg — same SSRC, next sequence
    /// numbers, timestamps on a 20 ms wall-clock grid, marker on the first — in the payload
    /// type last forwarded to that leg — or, when nothing was forwarded to it yet (an agent
    /// that never spoke), `negotiated`, the payload type its SDP agreed to — which must be
    /// PCMU (0) or PCMA (8). The fill ends by
    /// itself when a packet is forwarded to that leg again (from the new source), which
    /// then continues right after the last frame (seq + 1, ts by the elapsed time, marker).
    /// The source-switch gap ([`poll_resumed`](Self::poll_resumed)) is still measured from
    /// the old source's last packet. `Some` while a fill runs replaces its audio.
    pub fn handle_fill(
        &mut self,
        toward: Side,
        audio: Option<GapAudio>,
        negotiated: Option<u8>,
        now: Instant,
    ) -> FillStatus {
        self.streams[toward.other().idx()].handle_fill(audio, negotiated, now)
    }

    /// The next due gap-audio packet, written into `buf` (at least [`FILL_PACKET_LEN`]
    /// bytes). Poll until `None` whenever [`next_fill_at`](Self::next_fill_at) has passed;
    /// a frame due while the leg has no peer address or the direction is disabled is
    /// skipped.
    pub fn poll_fill(&mut self, now: Instant, buf: &mut [u8]) -> Option<FillPacket> {
        for toward in [Side::A, Side::B] {
            let to = self.legs[toward.idx()].rtp.destination();
            let stream = &mut self.streams[toward.other().idx()];
            while stream.next_fill_at().is_some_and(|at| at <= now) {
                if let Some(len) = stream.poll_fill(now, buf, to.is_some()) {
                    return Some(FillPacket {
                        to: to?,
                        len,
                        via: LocalSocket {
                            side: toward,
                            kind: SocketKind::Rtp,
                        },
                    });
                }
            }
        }
        None
    }

    /// When the next gap-audio frame is due (either leg), if gap audio runs.
    pub fn next_fill_at(&self) -> Option<Instant> {
        self.streams
            .iter()
            .filter_map(StreamOut::next_fill_at)
            .min()
    }

    /// Whether gap audio runs toward leg `toward`'s peer.
    pub fn is_filling(&self, toward: Side) -> bool {
        self.streams[toward.other().idx()].is_filling()
    }

    /// Gap-audio packets sent toward leg `toward`'s peer so far.
    pub fn fill_packets(&self, toward: Side) -> u64 {
        self.streams[toward.other().idx()].fill_packets()
    }

    /// A leg whose peer has sent neither RTP nor RTCP for its media timeout, if any (A
    /// first), whether or not its direction is enabled: silence is a reason to check on
    /// the peer (the core decides what it means), never by itself the end of a call.
    pub fn poll_media_timeout(&self, now: Instant) -> Option<MediaTimeout> {
        [Side::A, Side::B].into_iter().find_map(|s| {
            let l = &self.legs[s.idx()];
            let idle_for = now.saturating_duration_since(l.last_rx);
            (idle_for >= l.media_timeout).then_some(MediaTimeout { side: s, idle_for })
        })
    }

    /// Leg `side`'s latches.
    pub fn leg(&self, side: Side) -> &Leg {
        &self.legs[side.idx()]
    }

    /// The stream built from what leg `from` sends.
    pub fn stream(&self, from: Side) -> &StreamOut {
        &self.streams[from.idx()]
    }

    /// Stats of the stream built from what leg `from` sends.
    pub fn stats(&self, from: Side) -> StreamStatsSnapshot {
        self.streams[from.idx()].stats.snapshot()
    }
}

#[cfg(test)]
mod tests;
