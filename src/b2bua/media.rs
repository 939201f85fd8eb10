//! One call's anchored media: SDP offer/answer (RFC 3264) on both legs, the relay ports, and
//! the commands that keep the media shell's relays in step with what was negotiated.
//!
//! Each leg has its own negotiation. An offer from one leg is rewritten (holdfast's address
//! and that leg's ports, `o=` per leg) and relayed to the other; the answer comes back the
//! same way. A re-offer that only moves the media (hold, unhold, a new address, a refresh) is
//! answered on its own leg and never disturbs the other one (RFC 3264 §8.4: `sendonly` is
//! answered `recvonly`, never `sendrecv`); one that changes codecs or streams goes through.
//!
//! Forwarding follows the two legs' own directions: what leg X sends reaches leg Y only while
//! X's SDP says it sends (sendrecv/sendonly) and Y's says it receives (sendrecv/recvonly, not
//! `c=0.0.0.0`). Payload types are mapped where the legs numbered the same codec differently
//! (telephone-event 101 on one leg, 96 on the other).
//!
//! Plain data and pure functions: [`CallMedia`] is part of the serializable call state. It
//! never touches a socket or the clock; it allocates from the core's [`PortAllocator`] and
//! appends [`MediaCommand`]s for the core to hand to the shell.
//!
//! Each leg is anchored in its peer's address family (`media.bind` has at most one address
//! per family): `set_peer` (signalling address) until the first `offer`, whose own SDP `c=`
//! then decides for the offering leg; `move_peer` moves a running leg to a new peer's family
//! (the shell rebinds its sockets on the same ports; the SDP toward it is rendered again).
//!
//! LIFECYCLE (per call): `new` (nothing allocated) → first `offer` allocates both legs' ports
//! per anchored m-line and opens the relays (streams `Binding`) → the shell's `Bound` makes
//! each `Open` (`bound`); until every stream is bound, the anchored offer is not sent: a port
//! another process holds (`rebind`) gets the stream new ports and the offer is rendered again
//! with them → `answer` / local answers update peers, directions and payload maps → `close`
//! (every path that ends the call) closes the relays; the ports go back to the allocator when
//! the shell confirms (`Closed`, or `OpenFailed` for a relay that never opened), so a port is
//! never bound twice.
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::call::Side;
use crate::config::{IpFamily, MediaAddr, MediaAddrs};
use crate::media::codec::G711;
use crate::media::control::{MediaCommand, RelayId, RelayIps, RelayPorts, RelayUpdate};
use crate::media::ports::{PortAllocation, PortAllocator};
use crate::media::relay::{
    self, LatchPolicy, Latching, LegConfig, PayloadTypeMap, RelayConfig, StreamConfig,
};
use crate::media::sdp::{
    self, AnchorPlan, Direction, MediaInfo, MediaPorts, OriginState, RtcpPorts, Sdp,
};

/// Anchored streams per call at most; further m-lines are refused (port 0) in the relayed SDP.
pub const MAX_STREAMS: usize = 4;

/// Why an SDP could not be handled. The core maps it to a SIP status in one place.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MediaError {
    /// The body is not a session description we can read (→ 400 / 488).
    #[error("malformed SDP: {0}")]
    BadSdp(String),
    /// No m-line holdfast can relay (→ 488).
    #[error("no media stream holdfast can relay (only RTP/AVP and RTP/AVPF audio/video)")]
    NothingToAnchor,
    /// The port range is used up (→ 503).
    #[error("media port range exhausted")]
    PortsExhausted,
    /// The shell could not bind a relay for a reason other than the port (→ 503): out of
    /// descriptors, kernel memory, ...; `0` says what.
    #[error("media setup failed: {0}")]
    RelayFailed(String),
    /// An answer arrived with no offer in flight (a peer's protocol error).
    #[error("SDP answer without an offer")]
    NoOffer,
}

impl MediaError {
    /// The SIP status and reason phrase for this error.
    pub fn status(&self) -> (u16, &'static str) {
        match self {
            MediaError::BadSdp(_) => (400, "Bad Request"),
            MediaError::NothingToAnchor | MediaError::NoOffer => (488, "Not Acceptable Here"),
            MediaError::PortsExhausted | MediaError::RelayFailed(_) => (503, "Service Unavailable"),
        }
    }
}

/// Whether a stream's relay is running in the shell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StreamState {
    /// `Open` sent, the shell's `Bound` not yet seen: its ports are not advertised yet.
    Binding,
    /// Bound and relaying.
    Open,
    /// `Close` sent; ports go back on `Closed` (or `OpenFailed`).
    Closing,
}

/// One anchored m-line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stream {
    pub index: u16,
    pub ports: RelayPorts,
    pub state: StreamState,
    /// Seeds of the two outgoing streams (SSRC, first sequence number and timestamp).
    pub seed: u64,
    pub clock_rate_hz: u32,
    /// Peer addresses learned from the first packets (per leg: RTP).
    pub latched: [Option<SocketAddr>; 2],
    /// Peer addresses that answered ICMP unreachable.
    pub unreachable: [Option<SocketAddr>; 2],
}

/// A re-offer's fate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReOffer {
    /// Answered on its own leg: send this body back.
    Local(Vec<u8>),
    /// Needs the other leg: relay this (anchored) offer there.
    Relay(Vec<u8>),
}

/// Settings a call's media needs from the core's configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaParams {
    /// Where relay sockets bind and what SDP advertises, per IP family (`media.bind`,
    /// `media.advertise`).
    pub addrs: MediaAddrs,
    /// Media timeout of leg A and leg B.
    pub timeouts: [Duration; 2],
    /// `latching` of leg A's target (the call's origin) and of leg B's (the callee being
    /// tried now; [`CallMedia::set_latching`] changes it per attempt).
    pub latching: [Latching; 2],
    /// `media.learning_window`.
    pub learning_window: Duration,
}

impl MediaParams {
    /// How leg `side`'s sockets learn its peer.
    pub fn latch(&self, side: Side) -> LatchPolicy {
        LatchPolicy {
            latching: self.latching[idx(side)],
            learning_window: self.learning_window,
        }
    }
}

/// One call's media state; see the module docs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CallMedia {
    /// The core's call number (the `call` of every [`RelayId`]).
    pub call: u64,
    pub params: MediaParams,
    pub streams: Vec<Stream>,
    /// holdfast's `o=` on leg A and leg B.
    pub origin: [OriginState; 2],
    /// The last SDP each leg's peer sent us (offer or answer).
    pub received: [Option<String>; 2],
    /// The last SDP we sent each leg.
    pub sent: [Option<String>; 2],
    /// The leg whose offer waits for the other leg's answer.
    pub pending_offer: Option<Side>,
    /// While the offer in flight waits for its new relays to bind: the `o=` state of the
    /// leg it goes to from before it was rendered (a render with other ports starts again
    /// from it, so the leg sees one version step).
    unsent_origin: Option<OriginState>,
    /// What the offer in flight replaced (offerer's received SDP, answerer's sent SDP), put
    /// back if the offer is rejected: the session stays as it was (RFC 3264 §8).
    rollback: Option<[Option<String>; 2]>,
    /// What the AI leg a re-route keeps last got from us (SDP, `o=`) and how it latches,
    /// given back if no provider takes over.
    #[serde(default)]
    kept: Option<(Option<String>, OriginState, crate::media::relay::Latching)>,
    seed: u64,
    /// The address family leg A's and leg B's relay sockets bind in and their SDP
    /// advertises: the family of the leg's peer (its SDP `c=`, or its signalling address
    /// before it sent SDP) when holdfast has a media address of it.
    #[serde(default = "first_family")]
    family: [IpFamily; 2],
    /// Per leg, a family the shell could not move its sockets to ([`Self::rebind_failed`]):
    /// not tried again for this call.
    #[serde(default)]
    refused: [Option<IpFamily>; 2],
}

fn first_family() -> [IpFamily; 2] {
    [IpFamily::V4, IpFamily::V4]
}

fn idx(side: Side) -> usize {
    match side {
        Side::A => 0,
        Side::B => 1,
    }
}

fn parse(body: &[u8]) -> Result<Sdp, MediaError> {
    Sdp::parse(body).map_err(|e| MediaError::BadSdp(e.to_string()))
}

fn anchorable(m: &MediaInfo) -> bool {
    !m.disabled
        && (m.proto.eq_ignore_ascii_case("RTP/AVP") || m.proto.eq_ignore_ascii_case("RTP/AVPF"))
}

/// Whether leg X's SDP says X sends on m-line `i`.
fn sends(info: Option<&MediaInfo>) -> bool {
    info.is_some_and(|m| {
        !m.disabled && matches!(m.direction, Direction::SendRecv | Direction::SendOnly)
    })
}

/// Whether leg Y's SDP says Y receives on m-line `i` (`c=0.0.0.0` is RFC 2543 hold).
fn receives(info: Option<&MediaInfo>) -> bool {
    info.is_some_and(|m| {
        !m.disabled
            && !m.on_hold
            && matches!(m.direction, Direction::SendRecv | Direction::RecvOnly)
    })
}

/// Payload types leg `x` uses that leg `y` numbers differently for the same codec (same
/// encoding and clock rate), mapped to `y`'s numbers; a number `y` uses for another codec is
/// left alone rather than guessed.
fn pt_map(x: &MediaInfo, y: &MediaInfo) -> PayloadTypeMap {
    let mut map = PayloadTypeMap::default();
    for p in &x.payload_types {
        let (Some(enc), Some(rate)) = (&p.encoding, p.clock_rate_hz) else {
            continue;
        };
        let same = |q: &&sdp::PayloadType| {
            q.encoding
                .as_deref()
                .is_some_and(|e| e.eq_ignore_ascii_case(enc))
                && q.clock_rate_hz == Some(rate)
        };
        let Some(target) = y.payload_types.iter().find(same) else {
            continue;
        };
        let clash = y.payload_types.iter().any(|q| q.pt == p.pt && !same(&q));
        if target.pt != p.pt && !clash {
            map.insert(p.pt, target.pt);
        }
    }
    map
}

impl CallMedia {
    /// Media for call number `call`; `seed` (from the core's seeded source) fixes SSRCs,
    /// sequence numbers, timestamps and `o=` session ids.
    pub fn new(call: u64, params: MediaParams, seed: u64) -> Self {
        let sess = |n: u64| OriginState::new((seed.rotate_left(n as u32 * 17) >> 20) | 1, 1);
        let first = params.addrs.first;
        CallMedia {
            family: [first, first],
            refused: [None, None],
            call,
            params,
            streams: Vec::new(),
            origin: [sess(1), sess(2)],
            received: [None, None],
            sent: [None, None],
            pending_offer: None,
            unsent_origin: None,
            rollback: None,
            kept: None,
            seed,
        }
    }

    /// Leg `side`'s peer is at `ip` (its signalling address): until the leg's relay
    /// sockets are bound, they will bind in that family (if holdfast has a media address of
    /// it) and its SDP will advertise that family's address. The leg's own SDP, when it
    /// sends one first, decides instead ([`Self::offer`]). No effect once streams run.
    pub fn set_peer(&mut self, side: Side, ip: IpAddr) {
        if self.streams.is_empty() {
            self.family[idx(side)] = self.params.addrs.family_for(IpFamily::of(ip));
        }
    }

    /// Leg `side`'s peer is now at `ip` (a new attempt's target, a re-route's provider),
    /// signalling only so far. If that is another address family than the leg's sockets are
    /// bound in, and holdfast has a media address of it, the leg moves there: a `Rebind` per
    /// stream (each `Binding` until the shell's `Bound`), and the last SDP sent toward the
    /// leg is rendered again on the new family's address (same ports, same streams), for
    /// [`Self::last_sent`]. Returns whether streams now wait for `Bound`.
    pub fn move_peer(&mut self, side: Side, ip: IpAddr, out: &mut Vec<MediaCommand>) -> bool {
        if self.streams.is_empty() {
            self.set_peer(side, ip);
            return false;
        }
        let want = self.params.addrs.family_for(IpFamily::of(ip));
        let was = self.family[idx(side)];
        if want == was
            || self.refused[idx(side)] == Some(want)
            || self.params.addrs.addr(want).bind == self.addr(side).bind
        {
            return false;
        }
        self.family[idx(side)] = want;
        let bind = self.addr(side).bind;
        for s in &mut self.streams {
            if s.state != StreamState::Open {
                continue;
            }
            s.state = StreamState::Binding;
            out.push(MediaCommand::Rebind {
                id: RelayId {
                    call: self.call,
                    stream: s.index,
                },
                side,
                ip: bind,
                ports: s.ports.of(side),
            });
        }
        self.rerender_sent(side);
        self.binding()
    }

    /// The shell could not move leg `side` of stream `index` to the new family: the leg
    /// stays on its old sockets, so the whole leg goes back to its old family (the SDP
    /// toward it is rendered again). Returns whether no stream waits any more.
    pub fn rebind_failed(&mut self, index: u16, side: Side) -> bool {
        if let Some(s) = self.streams.iter_mut().find(|s| s.index == index) {
            if s.state == StreamState::Binding {
                s.state = StreamState::Open;
            }
        }
        let failed = self.family[idx(side)];
        let other = match failed {
            IpFamily::V4 => IpFamily::V6,
            IpFamily::V6 => IpFamily::V4,
        };
        self.refused[idx(side)] = Some(failed);
        if self.params.addrs.get(other).is_some() {
            self.family[idx(side)] = other;
            self.rerender_sent(side);
        }
        !self.binding()
    }

    /// The last SDP sent toward `side`, on that leg's current address.
    fn rerender_sent(&mut self, side: Side) {
        if let Some(sdp) = self.sent[idx(side)]
            .as_deref()
            .and_then(|t| Sdp::parse_str(t).ok())
        {
            self.anchor_for(side, &sdp, false);
        }
    }

    /// The family leg `side` is anchored in.
    pub fn family(&self, side: Side) -> IpFamily {
        self.family[idx(side)]
    }

    /// Leg `side`'s media address (bind and advertise) in its family.
    fn addr(&self, side: Side) -> MediaAddr {
        self.params.addrs.addr(self.family[idx(side)])
    }

    fn id(&self, index: u16) -> RelayId {
        RelayId {
            call: self.call,
            stream: index,
        }
    }

    fn stream(&self, index: usize) -> Option<&Stream> {
        self.streams.iter().find(|s| usize::from(s.index) == index)
    }

    /// The last SDP we sent on `side`: offered again for a session refresh or an offerless
    /// re-INVITE, so nothing about the media changes.
    pub fn last_sent(&self, side: Side) -> Option<&[u8]> {
        self.sent[idx(side)].as_deref().map(str::as_bytes)
    }

    /// The last SDP the peer of `side` sent.
    pub fn last_received(&self, side: Side) -> Option<&[u8]> {
        self.received[idx(side)].as_deref().map(str::as_bytes)
    }

    /// Ports every open or closing stream holds.
    pub fn ports(&self) -> Vec<RelayPorts> {
        self.streams.iter().map(|s| s.ports).collect()
    }

    /// The SDP `sdp` (from the other leg) rewritten for `to`: holdfast's address, `to`'s
    /// ports, `to`'s `o=`. `answer` selects muxed RTCP when the SDP agreed to it.
    fn anchor_for(&mut self, to: Side, sdp: &Sdp, answer: bool) -> Vec<u8> {
        let info = sdp.media_info();
        // The offer `sdp` answers is what `to` sent us: mux only if it proposed it too
        // (RFC 5761 §5.1.1), as the relay does.
        let offered = if answer {
            self.received_info(to).unwrap_or_default()
        } else {
            Vec::new()
        };
        let media: Vec<MediaPorts> = (0..sdp.media.len())
            .map(|i| {
                let p = self
                    .stream(i)
                    .map(|s| s.ports.of(to))
                    .unwrap_or(PortAllocation { rtp: 0, rtcp: None });
                let mux = answer
                    && info.get(i).is_some_and(|m| m.rtcp_mux)
                    && offered.get(i).is_some_and(|o| o.rtcp_mux);
                MediaPorts {
                    rtp_port: p.rtp,
                    rtcp: if mux {
                        RtcpPorts::Mux
                    } else {
                        RtcpPorts::Port(p.rtcp.unwrap_or(p.rtp.wrapping_add(1)))
                    },
                }
            })
            .collect();
        let advertise = self.addr(to).advertise;
        let plan = AnchorPlan {
            ip: advertise,
            media,
        };
        let mut out = sdp::anchor(sdp, &plan);
        // m-lines without a stream (not relayable) are refused: port 0. An answer that
        // accepted mux the offer never proposed must not claim it on this leg either.
        for (i, m) in out.media.iter_mut().enumerate() {
            if self.stream(i).is_none() {
                m.desc.port = 0;
            }
            if answer && !offered.get(i).is_some_and(|o| o.rtcp_mux) {
                m.lines
                    .retain(|l| !matches!(l.field, sdp::Field::Attribute(sdp::Attribute::RtcpMux)));
            }
        }
        self.origin[idx(to)].stamp(&mut out, advertise);
        let text = out.to_string();
        self.sent[idx(to)] = Some(text.clone());
        text.into_bytes()
    }

    /// An offer from `from`, to be relayed to the other leg: allocates ports for m-lines not
    /// anchored yet (opening their relays), re-points `from`'s side of existing ones, and
    /// returns the anchored offer for the other leg. When it opened relays
    /// ([`Self::binding`]), the offer must wait for the shell's `Bound` of each
    /// ([`Self::bound`]); a [`Self::rebind`] meanwhile renders it again with other ports.
    pub fn offer(
        &mut self,
        from: Side,
        body: &[u8],
        alloc: &mut PortAllocator,
        out: &mut Vec<MediaCommand>,
    ) -> Result<Vec<u8>, MediaError> {
        let sdp = parse(body)?;
        let info = sdp.media_info();
        let mut opened: Vec<Stream> = Vec::new();
        for m in &info {
            if self.stream(m.index).is_some()
                || !anchorable(m)
                || self.streams.len() + opened.len() >= MAX_STREAMS
            {
                continue;
            }
            let a = alloc.allocate_pair().ok();
            let b = a.and_then(|_| alloc.allocate_pair().ok());
            let (Some(a), Some(b)) = (a, b) else {
                // Give back what this offer took.
                if let Some(a) = a {
                    let _ = alloc.free(a);
                }
                for s in &opened {
                    let _ = alloc.free(s.ports.a);
                    let _ = alloc.free(s.ports.b);
                }
                return Err(MediaError::PortsExhausted);
            };
            let clock_rate_hz = m
                .payload_types
                .iter()
                .find_map(|p| p.clock_rate_hz)
                .unwrap_or(8000);
            let index = u16::try_from(m.index).unwrap_or(u16::MAX);
            opened.push(Stream {
                index,
                ports: RelayPorts { a, b },
                state: StreamState::Binding,
                seed: self.seed ^ (u64::from(index) + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15),
                clock_rate_hz,
                latched: [None, None],
                unreachable: [None, None],
            });
        }
        if self.streams.is_empty() && opened.is_empty() {
            return Err(MediaError::NothingToAnchor);
        }
        if self.streams.is_empty() {
            // The offerer's leg binds in the family its SDP names (not a hold's 0.0.0.0).
            let named = info
                .iter()
                .filter(|m| anchorable(m))
                .filter_map(|m| m.rtp_addr)
                .map(|a| a.ip())
                .find(|ip| !ip.is_unspecified());
            if let Some(ip) = named {
                self.family[idx(from)] = self.params.addrs.family_for(IpFamily::of(ip));
            }
        }
        // Re-point `from`'s side of the streams that already run, if its addresses moved.
        let before = self.received_info(from).unwrap_or_default();
        self.relatch_moved(from, &before, &info, |_, _| false, out);
        let opens = !opened.is_empty();
        for s in opened {
            out.push(self.open_command(&s, from, info.get(usize::from(s.index))));
            self.streams.push(s);
        }
        self.streams.sort_by_key(|s| s.index);
        self.rollback = Some([
            self.received[idx(from)].clone(),
            self.sent[idx(from.other())].clone(),
        ]);
        self.received[idx(from)] = Some(sdp.to_string());
        self.pending_offer = Some(from);
        self.unsent_origin = opens.then(|| self.origin[idx(from.other())].clone());
        Ok(self.anchor_for(from.other(), &sdp, false))
    }

    /// The `Open` of stream `s`, first offered by `from` with media description `m`.
    fn open_command(&self, s: &Stream, from: Side, m: Option<&MediaInfo>) -> MediaCommand {
        let leg = |side: Side| {
            let mut l = LegConfig::new(None, self.params.timeouts[idx(side)]);
            l.latch = self.params.latch(side);
            if side == from {
                l.rtp_peer = m.and_then(|m| m.rtp_addr);
                l.rtcp_peer = m.and_then(|m| m.rtcp_addr);
            }
            l
        };
        let config = RelayConfig {
            a: leg(Side::A),
            b: leg(Side::B),
            a_to_b: StreamConfig::from_seed(s.seed, s.clock_rate_hz),
            b_to_a: StreamConfig::from_seed(s.seed.rotate_left(32) ^ 1, s.clock_rate_hz),
        };
        MediaCommand::Open {
            id: self.id(s.index),
            ips: RelayIps {
                a: self.addr(Side::A).bind,
                b: self.addr(Side::B).bind,
            },
            ports: s.ports,
            config,
        }
    }

    /// Whether a relay this call opened still waits for the shell's `Bound` (the offer that
    /// opened it must not be sent yet).
    pub fn binding(&self) -> bool {
        self.streams.iter().any(|s| s.state == StreamState::Binding)
    }

    /// Whether stream `index` waits for its `Bound`.
    pub fn is_binding(&self, index: u16) -> bool {
        self.streams
            .iter()
            .any(|s| s.index == index && s.state == StreamState::Binding)
    }

    /// The shell bound stream `index`'s sockets. Returns true when that was the last stream
    /// waiting: the offer in flight ([`Self::last_sent`] of the leg it goes to) can go out.
    pub fn bound(&mut self, index: u16) -> bool {
        let Some(s) = self.streams.iter_mut().find(|s| s.index == index) else {
            return false;
        };
        if s.state != StreamState::Binding {
            return false;
        }
        s.state = StreamState::Open;
        let done = !self.binding();
        if done {
            self.unsent_origin = None;
        }
        done
    }

    /// Stream `index` could not bind because another process holds one of its ports (the
    /// caller has quarantined that port, so it is no longer allocated here): its other ports
    /// go back, it gets new ones and a new `Open`, and the waiting offer is rendered again
    /// for the leg it goes to. `Err(PortsExhausted)` when no port is left: the stream is
    /// dropped (its ports freed) and the offer cannot go out.
    pub fn rebind(
        &mut self,
        index: u16,
        alloc: &mut PortAllocator,
        out: &mut Vec<MediaCommand>,
    ) -> Result<(), MediaError> {
        let Some(pos) = self
            .streams
            .iter()
            .position(|s| s.index == index && s.state == StreamState::Binding)
        else {
            return Ok(());
        };
        let old = self.streams[pos].ports;
        for p in [old.a, old.b] {
            for port in std::iter::once(p.rtp).chain(p.rtcp) {
                // The quarantined port is not allocated any more: refused, as it should be.
                let _ = alloc.free_port(port);
            }
        }
        let a = alloc.allocate_pair().ok();
        let b = a.and_then(|_| alloc.allocate_pair().ok());
        let (Some(a), Some(b)) = (a, b) else {
            if let Some(a) = a {
                let _ = alloc.free(a);
            }
            self.streams.remove(pos);
            return Err(MediaError::PortsExhausted);
        };
        self.streams[pos].ports = RelayPorts { a, b };
        let from = self.pending_offer;
        let info = from.and_then(|f| self.received_info(f)).unwrap_or_default();
        let m = info.get(usize::from(index));
        out.push(self.open_command(&self.streams[pos], from.unwrap_or(Side::A), m));
        let Some(from) = from else { return Ok(()) };
        if let Some(sdp) = self.received[idx(from)]
            .as_deref()
            .and_then(|t| Sdp::parse_str(t).ok())
        {
            let to = from.other();
            if let Some(o) = self.unsent_origin.clone() {
                self.origin[idx(to)] = o;
            }
            self.anchor_for(to, &sdp, false);
        }
        Ok(())
    }

    fn received_info(&self, side: Side) -> Option<Vec<MediaInfo>> {
        let text = self.received[idx(side)].as_deref()?;
        Sdp::parse_str(text).ok().map(|s| s.media_info())
    }

    /// The answer from `from` to the other leg's offer: learns `from`'s addresses, settles
    /// RTCP mux, directions and payload maps, and returns the anchored answer for the other
    /// leg. A repeated answer (183 then 200) is handled the same way.
    pub fn answer(
        &mut self,
        from: Side,
        body: &[u8],
        out: &mut Vec<MediaCommand>,
    ) -> Result<Vec<u8>, MediaError> {
        let sdp = parse(body)?;
        let offerer = from.other();
        let was_answer = self.pending_offer == Some(offerer) || self.received[idx(from)].is_some();
        if !was_answer {
            return Err(MediaError::NoOffer);
        }
        self.received[idx(from)] = Some(sdp.to_string());
        self.pending_offer = None;
        self.rollback = None;
        let info = sdp.media_info();
        let offer_info = self.received_info(offerer).unwrap_or_default();
        for s in &self.streams {
            let i = usize::from(s.index);
            let m = info.get(i);
            // RFC 5761 §5.1.1: muxed only when the offer proposed it and the answer accepted.
            let mux =
                m.is_some_and(|m| m.rtcp_mux) && offer_info.get(i).is_some_and(|o| o.rtcp_mux);
            let id = self.id(s.index);
            out.push(MediaCommand::Update {
                id,
                update: self.relatch(from, m, mux),
            });
            if mux {
                out.push(MediaCommand::Update {
                    id,
                    update: self.relatch(offerer, offer_info.get(i), true),
                });
            }
        }
        self.refresh_forwarding(out);
        Ok(self.anchor_for(offerer, &sdp, true))
    }

    /// The other leg rejected the offer from `from` (a non-2xx final response): the session
    /// stays as it was, so the SDPs the offer replaced come back. A relay the offer moved
    /// is pointed back at the old addresses.
    pub fn offer_rejected(&mut self, from: Side, out: &mut Vec<MediaCommand>) {
        if self.pending_offer != Some(from) {
            return;
        }
        self.pending_offer = None;
        let Some([received, sent]) = self.rollback.take() else {
            return;
        };
        let moved = self.received_info(from).unwrap_or_default();
        self.received[idx(from)] = received;
        self.sent[idx(from.other())] = sent;
        let back = self.received_info(from).unwrap_or_default();
        self.relatch_moved(from, &moved, &back, |_, b| b.rtcp_mux, out);
    }

    /// `Relatch` for every stream whose peer addresses (or mux) on `side` differ between
    /// `before` and `after`; `mux` says whether RTCP is muxed on that leg now. An m-line put
    /// on hold with `c=0.0.0.0` (RFC 2543 hold; RFC 3264 §8.4 allows it) says where not to
    /// send, not where the peer sends from: the latch stays (the held peer may still send
    /// music on hold), and forwarding to it stops through its direction.
    fn relatch_moved(
        &self,
        side: Side,
        before: &[MediaInfo],
        after: &[MediaInfo],
        mux: impl Fn(usize, &MediaInfo) -> bool,
        out: &mut Vec<MediaCommand>,
    ) {
        let key = |m: Option<&MediaInfo>| m.map(|m| (m.rtp_addr, m.rtcp_addr, m.rtcp_mux));
        for s in &self.streams {
            let i = usize::from(s.index);
            let (old, new) = (before.get(i), after.get(i));
            if new.is_some_and(|n| n.on_hold && !n.disabled) {
                continue;
            }
            if key(old) != key(new) {
                out.push(MediaCommand::Update {
                    id: self.id(s.index),
                    update: self.relatch(side, new, new.is_some_and(|n| mux(i, n))),
                });
            }
        }
    }

    /// Forget leg `side`'s peer (a new attempt on the B leg): the next target's SDP and
    /// packets latch afresh. Relatched even when that peer sent no SDP: the relay may have
    /// latched it from its packets (it knew our port from the offer).
    pub fn reset_peer(&mut self, side: Side, out: &mut Vec<MediaCommand>) {
        self.received[idx(side)] = None;
        let update = self.relatch(side, None, false);
        for s in &mut self.streams {
            s.latched[idx(side)] = None;
            s.unreachable[idx(side)] = None;
            out.push(MediaCommand::Update {
                id: RelayId {
                    call: self.call,
                    stream: s.index,
                },
                update,
            });
        }
    }

    /// Leg `side`'s peer is now a target with this `latching` (the B leg tries another
    /// callee, or a re-route picked a new provider): every later relatch of that leg (its
    /// answer, a re-INVITE, [`reset_peer`](Self::reset_peer)) uses it.
    pub fn set_latching(&mut self, side: Side, latching: Latching) {
        self.params.latching[idx(side)] = latching;
    }

    /// A `Relatch` of leg `side` to the addresses of `m`, under that leg's latching.
    fn relatch(&self, side: Side, m: Option<&MediaInfo>, rtcp_mux: bool) -> RelayUpdate {
        RelayUpdate::Relatch {
            side,
            rtp: m.and_then(|m| m.rtp_addr),
            rtcp: m.and_then(|m| m.rtcp_addr),
            rtcp_mux,
            latch: self.params.latch(side),
        }
    }

    /// A re-offer from `from` in an established call. Answered on that leg alone when it keeps
    /// the streams and at least one codec we agreed on (hold, unhold, a new address, a session
    /// refresh); otherwise anchored and returned for relaying to the other leg.
    pub fn reoffer(
        &mut self,
        from: Side,
        body: &[u8],
        alloc: &mut PortAllocator,
        out: &mut Vec<MediaCommand>,
    ) -> Result<ReOffer, MediaError> {
        let offer = parse(body)?;
        let local = self.sent[idx(from)]
            .as_deref()
            .and_then(|t| Sdp::parse_str(t).ok())
            .and_then(|last| answer_locally(&last, &offer));
        let Some(mut answer) = local else {
            return self.offer(from, body, alloc, out).map(ReOffer::Relay);
        };
        let before = self.received_info(from).unwrap_or_default();
        let ours = answer.media_info();
        self.relatch_moved(
            from,
            &before,
            &offer.media_info(),
            |i, n| n.rtcp_mux && ours.get(i).is_some_and(|a| a.rtcp_mux),
            out,
        );
        self.received[idx(from)] = Some(offer.to_string());
        self.refresh_forwarding(out);
        self.origin[idx(from)].stamp(&mut answer, self.addr(from).advertise);
        let text = answer.to_string();
        self.sent[idx(from)] = Some(text.clone());
        Ok(ReOffer::Local(text.into_bytes()))
    }

    /// The answer from `side` to an offer holdfast made on that leg alone (a session refresh
    /// or an offerless re-INVITE): nothing goes to the other leg.
    pub fn local_answer(
        &mut self,
        side: Side,
        body: &[u8],
        out: &mut Vec<MediaCommand>,
    ) -> Result<(), MediaError> {
        let sdp = parse(body)?;
        let before = self.received_info(side).unwrap_or_default();
        self.relatch_moved(side, &before, &sdp.media_info(), |_, n| n.rtcp_mux, out);
        self.received[idx(side)] = Some(sdp.to_string());
        self.refresh_forwarding(out);
        Ok(())
    }

    /// Re-derives, per stream and direction, whether packets are forwarded and how payload
    /// types are mapped, from both legs' latest SDP.
    fn refresh_forwarding(&self, out: &mut Vec<MediaCommand>) {
        let a = self.received_info(Side::A).unwrap_or_default();
        let b = self.received_info(Side::B).unwrap_or_default();
        for s in &self.streams {
            let i = usize::from(s.index);
            let id = self.id(s.index);
            for (from, x, y) in [(Side::A, &a, &b), (Side::B, &b, &a)] {
                let (xi, yi) = (x.get(i), y.get(i));
                out.push(MediaCommand::Update {
                    id,
                    update: RelayUpdate::SetEnabled {
                        from,
                        enabled: sends(xi) && receives(yi),
                    },
                });
                if let (Some(xi), Some(yi)) = (xi, yi) {
                    out.push(MediaCommand::Update {
                        id,
                        update: RelayUpdate::SetPtMap {
                            from,
                            map: pt_map(xi, yi),
                        },
                    });
                }
            }
        }
    }

    /// The far side of `side` changed (a new AI provider, issue 4): keep the stream holdfast
    /// sends to the other leg continuous.
    pub fn source_switch(&self, side: Side, out: &mut Vec<MediaCommand>) {
        for s in &self.streams {
            out.push(MediaCommand::Update {
                id: self.id(s.index),
                update: RelayUpdate::SourceSwitch { side },
            });
        }
    }

    /// The AI leg on `side` is being replaced mid-call; the offer for the next provider is
    /// returned: the other leg's session as negotiated (its codecs narrowed to those the
    /// failed provider had agreed to, so the other leg never receives a codec it did not
    /// negotiate), anchored on `side`'s existing ports. The other leg is never asked
    /// anything. `None` when the other leg has no session description yet.
    ///
    /// A leg that is gone (`keep` false) is cut off: what it sends is no longer relayed (the
    /// other leg hears nothing more of a dying provider) and its peer is forgotten. A kept
    /// leg (`keep`) goes on relaying until the new provider answers
    /// ([`reroute_answer`](Self::reroute_answer)), or gets its session back
    /// ([`reroute_abandoned`](Self::reroute_abandoned)).
    pub fn reroute_offer(
        &mut self,
        side: Side,
        keep: bool,
        out: &mut Vec<MediaCommand>,
    ) -> Option<Vec<u8>> {
        let other = side.other();
        let agreed = self.received_info(side);
        if keep {
            self.kept = Some((
                self.sent[idx(side)].clone(),
                self.origin[idx(side)].clone(),
                self.params.latching[idx(side)],
            ));
        } else {
            self.mute(side, true, out);
            self.reset_peer(side, out);
        }
        let mut sdp = Sdp::parse_str(self.received[idx(other)].as_deref()?).ok()?;
        if let Some(agreed) = agreed {
            narrow_codecs(&mut sdp, &agreed);
        }
        self.rollback = None;
        self.pending_offer = Some(other);
        Some(self.anchor_for(side, &sdp, false))
    }

    /// No provider took over from the leg on `side` that a re-route kept: its session is
    /// as it was (what we last sent it, our `o=` toward it), and its media peer is the one
    /// its SDP names again (a failed candidate's packets may have latched meanwhile).
    pub fn reroute_abandoned(&mut self, side: Side, out: &mut Vec<MediaCommand>) {
        if let Some((sent, origin, latching)) = self.kept.take() {
            self.sent[idx(side)] = sent;
            self.origin[idx(side)] = origin;
            self.params.latching[idx(side)] = latching;
        }
        self.pending_offer = None;
        let info = self.received_info(side).unwrap_or_default();
        let mux = self.sent_info(side).unwrap_or_default();
        for s in &self.streams {
            let i = usize::from(s.index);
            let muxed =
                info.get(i).is_some_and(|m| m.rtcp_mux) && mux.get(i).is_some_and(|m| m.rtcp_mux);
            out.push(MediaCommand::Update {
                id: self.id(s.index),
                update: self.relatch(side, info.get(i), muxed),
            });
        }
        self.mute(side, false, out);
    }

    fn sent_info(&self, side: Side) -> Option<Vec<MediaInfo>> {
        let text = self.sent[idx(side)].as_deref()?;
        Sdp::parse_str(text).ok().map(|s| s.media_info())
    }

    /// The new provider on `side` answered [`reroute_offer`](Self::reroute_offer): relay to
    /// it, and make the stream the other leg receives continue across the switch (same SSRC,
    /// next sequence number, timestamp advanced by the gap). Nothing is sent to the other
    /// leg: what holdfast last sent it stays its session description.
    pub fn reroute_answer(
        &mut self,
        side: Side,
        body: &[u8],
        out: &mut Vec<MediaCommand>,
    ) -> Result<(), MediaError> {
        let other = idx(side.other());
        let (sent, origin) = (self.sent[other].clone(), self.origin[other].clone());
        let result = self.answer(side, body, out);
        self.sent[other] = sent;
        self.origin[other] = origin;
        result?;
        self.kept = None;
        self.source_switch(side, out);
        self.mute(side, false, out);
        Ok(())
    }

    /// Stops relaying: `Close` for every open stream. Ports stay allocated until the shell
    /// confirms with `Closed` ([`Self::closed`]).
    pub fn close(&mut self, out: &mut Vec<MediaCommand>) {
        for s in &mut self.streams {
            if matches!(s.state, StreamState::Open | StreamState::Binding) {
                s.state = StreamState::Closing;
                out.push(MediaCommand::Close {
                    id: RelayId {
                        call: self.call,
                        stream: s.index,
                    },
                });
            }
        }
    }

    /// Stream `index` is gone from the shell (closed, or it never opened): its ports go back,
    /// except one the caller quarantined (no longer allocated to it). Returns whether every
    /// stream is gone.
    pub fn closed(&mut self, index: u16, alloc: &mut PortAllocator) -> bool {
        if let Some(pos) = self.streams.iter().position(|s| s.index == index) {
            let s = self.streams.remove(pos);
            for p in [s.ports.a, s.ports.b] {
                for port in [Some(p.rtp), p.rtcp].into_iter().flatten() {
                    let _ = alloc.free_port(port);
                }
            }
        }
        if !self.binding() {
            self.unsent_origin = None;
        }
        self.streams.is_empty()
    }

    /// Records a latched peer address (the RTP one is the leg's peer; an RTCP latch is only
    /// compared); returns the SDP address of that socket's kind it replaced, if different.
    pub fn latched(
        &mut self,
        index: u16,
        side: Side,
        kind: relay::SocketKind,
        addr: SocketAddr,
    ) -> Option<SocketAddr> {
        let sdp_addr = self
            .received_info(side)
            .and_then(|v| v.get(usize::from(index)).cloned())
            .and_then(|m| match kind {
                relay::SocketKind::Rtp => m.rtp_addr,
                relay::SocketKind::Rtcp => m.rtcp_addr,
            });
        if kind == relay::SocketKind::Rtp {
            if let Some(s) = self.streams.iter_mut().find(|s| s.index == index) {
                s.latched[idx(side)] = Some(addr);
            }
        }
        sdp_addr.filter(|a| *a != addr)
    }

    /// Gap audio toward `toward`'s peer on every stream (`None` stops it): the relay plays
    /// it in the stream's G.711 codec, continuous with what it sent before, until the next
    /// packet it forwards that way.
    pub fn fill(
        &self,
        toward: Side,
        audio: Option<crate::media::filler::GapAudio>,
        out: &mut Vec<MediaCommand>,
    ) {
        // What the leg agreed to, for a stream that has not carried audio to it yet.
        let agreed = |sdp: &Option<String>| {
            sdp.as_deref()
                .and_then(|t| Sdp::parse_str(t).ok())
                .map(|s| s.media_info())
                .unwrap_or_default()
        };
        let (sent, received) = (
            agreed(&self.sent[idx(toward)]),
            agreed(&self.received[idx(toward)]),
        );
        for s in &self.streams {
            let i = usize::from(s.index);
            let negotiated = [sent.get(i), received.get(i)]
                .into_iter()
                .flatten()
                .find_map(|m| {
                    m.payload_types
                        .iter()
                        .find(|p| crate::media::filler::law_of_payload_type(p.pt).is_some())
                        .map(|p| p.pt)
                });
            out.push(MediaCommand::Update {
                id: self.id(s.index),
                update: RelayUpdate::Fill {
                    toward,
                    audio,
                    negotiated,
                },
            });
        }
    }

    /// Hold back (or release) what `side` sends on every stream, whatever the SDP says.
    pub fn mute(&self, side: Side, muted: bool, out: &mut Vec<MediaCommand>) {
        for s in &self.streams {
            out.push(MediaCommand::Update {
                id: self.id(s.index),
                update: RelayUpdate::Mute { from: side, muted },
            });
        }
    }

    /// An empty datagram to `side`'s media peer on every stream, to draw an ICMP error
    /// if nothing listens there (a liveness check).
    pub fn probe(&self, side: Side, out: &mut Vec<MediaCommand>) {
        for s in &self.streams {
            out.push(MediaCommand::Update {
                id: self.id(s.index),
                update: RelayUpdate::Probe { side },
            });
        }
    }

    /// Where a local peer reaches the relay's `side` RTP socket of m-line `index` (that
    /// leg's bind address, or loopback of its family when it binds every address): a
    /// WebSocket AI leg's bridge.
    pub fn relay_addr(&self, side: Side, index: usize) -> Option<SocketAddr> {
        let s = self.stream(index)?;
        let ip = match self.addr(side).bind {
            IpAddr::V4(a) if a.is_unspecified() => IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
            IpAddr::V6(a) if a.is_unspecified() => IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        Some(SocketAddr::new(ip, s.ports.of(side).rtp))
    }

    /// Whether `addr` is where leg `side`'s media goes now on stream `index`: the address
    /// its SDP gives or the one it latched. A report about any other address (an ICMP error
    /// for a packet sent before a relatch, from a peer the call has left) is stale.
    pub fn is_current_peer(&self, index: u16, side: Side, addr: SocketAddr) -> bool {
        let sdp = self
            .received_info(side)
            .and_then(|v| v.get(usize::from(index)).and_then(|m| m.rtp_addr));
        let latched = self
            .streams
            .iter()
            .find(|s| s.index == index)
            .and_then(|s| s.latched[idx(side)]);
        sdp == Some(addr) || latched == Some(addr)
    }

    /// Records an unreachable peer address.
    pub fn unreachable(&mut self, index: u16, side: Side, addr: SocketAddr) {
        if let Some(s) = self.streams.iter_mut().find(|s| s.index == index) {
            s.unreachable[idx(side)] = Some(addr);
        }
    }
}

/// The codec a WebSocket AI leg's bridge speaks: the first G.711 payload type of the first
/// usable audio m-line of the offer toward the AI side (PCMU preferred when both are
/// offered, so nothing is transcoded for providers that take μ-law), plus telephone-event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BridgeCodec {
    pub stream: usize,
    pub law: G711,
    pub payload_type: u8,
    pub dtmf_payload_type: Option<u8>,
}

/// Picks the [`BridgeCodec`] from the anchored offer toward the AI side; `None` when it
/// offers no G.711 audio (the leg cannot be bridged without transcoding).
pub fn bridge_codec(offer: &[u8]) -> Option<BridgeCodec> {
    let sdp = Sdp::parse(offer).ok()?;
    sdp.media_info().into_iter().find_map(|m| {
        if m.disabled || !m.media.eq_ignore_ascii_case("audio") || !anchorable(&m) {
            return None;
        }
        let find = |name: &str| {
            m.payload_types.iter().find(|p| {
                p.clock_rate_hz == Some(8000)
                    && p.encoding
                        .as_deref()
                        .is_some_and(|e| e.eq_ignore_ascii_case(name))
            })
        };
        let (law, pt) = match (find("PCMU"), find("PCMA")) {
            (Some(p), _) => (G711::Ulaw, p.pt),
            (None, Some(p)) => (G711::Alaw, p.pt),
            (None, None) => return None,
        };
        Some(BridgeCodec {
            stream: m.index,
            law,
            payload_type: pt,
            dtmf_payload_type: m
                .telephone_event
                .filter(|t| t.clock_rate_hz == 8000)
                .map(|t| t.pt),
        })
    })
}

/// The session description a WebSocket AI leg's bridge answers the offer with: `codec` on
/// its m-line at the bridge's address (`a=ptime:20`, what the bridge sends), every other
/// m-line rejected with port 0 (RFC 3264 §6). Fed to [`CallMedia::answer`] (or
/// [`CallMedia::reroute_answer`]) as if the AI side had answered over SIP, so the relay
/// latches to the bridge and the caller gets an answer for exactly that codec.
pub fn bridge_answer(
    offer: &[u8],
    codec: &BridgeCodec,
    bridge: SocketAddr,
    session: u64,
) -> Vec<u8> {
    let (net, ip) = match bridge.ip() {
        IpAddr::V4(a) => ("IP4", a.to_string()),
        IpAddr::V6(a) => ("IP6", a.to_string()),
    };
    let name = match codec.law {
        G711::Ulaw => "PCMU",
        G711::Alaw => "PCMA",
    };
    let mut out = format!(
        "v=0\r\no=holdfast-bridge {session} 1 IN {net} {ip}\r\ns=-\r\nc=IN {net} {ip}\r\nt=0 0\r\n"
    );
    let info = Sdp::parse(offer)
        .map(|s| s.media_info())
        .unwrap_or_default();
    for m in &info {
        if m.index != codec.stream {
            let fmt = m.payload_types.first().map_or(0, |p| p.pt);
            out.push_str(&format!("m={} 0 {} {fmt}\r\n", m.media, m.proto));
            continue;
        }
        let pt = codec.payload_type;
        match codec.dtmf_payload_type {
            Some(d) => out.push_str(&format!(
                "m=audio {} {} {pt} {d}\r\na=rtpmap:{pt} {name}/8000\r\na=rtpmap:{d} telephone-event/8000\r\na=fmtp:{d} 0-15\r\n",
                bridge.port(), m.proto
            )),
            None => out.push_str(&format!(
                "m=audio {} {} {pt}\r\na=rtpmap:{pt} {name}/8000\r\n",
                bridge.port(), m.proto
            )),
        }
        out.push_str("a=ptime:20\r\na=sendrecv\r\n");
    }
    out.into_bytes()
}

/// Keeps, per m-line of `sdp`, only the payload types whose codec (encoding and clock
/// rate) `agreed` also has, plus telephone-event; an m-line that would lose every codec is
/// left whole.
fn narrow_codecs(sdp: &mut Sdp, agreed: &[MediaInfo]) {
    let info = sdp.media_info();
    for (i, m) in sdp.media.iter_mut().enumerate() {
        let (Some(mine), Some(ok)) = (info.get(i), agreed.get(i)) else {
            continue;
        };
        let keep: Vec<u8> = mine
            .payload_types
            .iter()
            .filter(|p| {
                is_event(p.encoding.as_deref())
                    || ok.payload_types.iter().any(|q| {
                        q.clock_rate_hz == p.clock_rate_hz
                            && matches!((&q.encoding, &p.encoding), (Some(a), Some(b)) if a.eq_ignore_ascii_case(b))
                    })
            })
            .map(|p| p.pt)
            .collect();
        if !keep.iter().any(|pt| {
            mine.payload_types
                .iter()
                .any(|p| p.pt == *pt && !is_event(p.encoding.as_deref()))
        }) {
            continue;
        }
        keep_payload_types(m, &keep);
    }
}

/// Keeps only payload types `keep` on m-line `m`: its format list and their `rtpmap`/`fmtp`.
fn keep_payload_types(m: &mut sdp::Media, keep: &[u8]) {
    m.desc
        .fmts
        .retain(|f| f.parse::<u8>().is_ok_and(|pt| keep.contains(&pt)));
    m.lines.retain(|l| match &l.field {
        sdp::Field::Attribute(sdp::Attribute::Rtpmap(r)) => keep.contains(&r.payload_type),
        sdp::Field::Attribute(sdp::Attribute::Fmtp { payload_type, .. }) => {
            keep.contains(payload_type)
        }
        _ => true,
    });
}

/// Our answer to a re-offer on one leg, built from what we last sent there, when the offer
/// keeps the same streams and at least one payload type we sent on every active one; `None`
/// when it needs a real renegotiation through the other leg. Payload types the offer dropped
/// are dropped from the answer too (an answer lists a subset of the offer, RFC 3264 §6.1).
pub fn answer_locally(last_sent: &Sdp, offer: &Sdp) -> Option<Sdp> {
    if last_sent.media.len() != offer.media.len() {
        return None;
    }
    let ours = last_sent.media_info();
    let theirs = offer.media_info();
    let mut keep: Vec<Vec<u8>> = Vec::with_capacity(ours.len());
    for (o, t) in ours.iter().zip(&theirs) {
        if o.media != t.media || !o.proto.eq_ignore_ascii_case(&t.proto) {
            return None;
        }
        if o.disabled || t.disabled {
            keep.push(Vec::new());
            continue;
        }
        let common: Vec<u8> = o
            .payload_types
            .iter()
            .filter(|p| theirs_has(t, p.pt, p.encoding.as_deref()))
            .map(|p| p.pt)
            .collect();
        if !o
            .payload_types
            .iter()
            .any(|p| common.contains(&p.pt) && !is_event(p.encoding.as_deref()))
        {
            return None;
        }
        keep.push(common);
    }
    let mut answer = sdp::answer_hold(last_sent, offer);
    for (i, m) in answer.media.iter_mut().enumerate() {
        let Some(k) = keep.get(i) else { continue };
        if k.is_empty() {
            continue;
        }
        keep_payload_types(m, k);
    }
    Some(answer)
}

fn is_event(enc: Option<&str>) -> bool {
    enc.is_some_and(|e| e.eq_ignore_ascii_case("telephone-event"))
}

fn theirs_has(t: &MediaInfo, pt: u8, enc: Option<&str>) -> bool {
    t.payload_types.iter().any(|q| {
        q.pt == pt
            && match (enc, q.encoding.as_deref()) {
                (Some(a), Some(b)) => a.eq_ignore_ascii_case(b),
                _ => true,
            }
    })
}

#[cfg(test)]
mod tests;
