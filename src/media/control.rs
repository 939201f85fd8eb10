//! The messages between the call core (which decides) and the media shell (which relays).
//!
//! The B2BUA core allocates ports, rewrites SDP and emits [`MediaCommand`]s as
//! `Output::Media` (`Core::poll_output`, media before anything else); the media shell binds
//! an `Open`'s sockets at once, in the thread that drains the core, and answers [`MediaEvent::Bound`] or
//! [`MediaEvent::OpenFailed`] through `Core::handle_media_event` before the core's next
//! transmit is drained (so an SDP never names a port that could not be bound); the runtime's
//! media workers then run one [`Relay`](super::relay::Relay) per anchored stream on those
//! sockets and report the other [`MediaEvent`]s. Plain data: nothing here touches a socket
//! or a clock.
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::filler::GapAudio;
use super::ports::PortAllocation;
use super::relay::{LatchPolicy, PayloadTypeMap, RelayConfig, Side, SocketKind};
use super::stats::StreamStatsSnapshot;

/// One anchored stream (one m= line) of one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RelayId {
    /// The core's internal call number.
    pub call: u64,
    /// The m= line index in the call's SDP.
    pub stream: u16,
}

impl std::fmt::Display for RelayId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.call, self.stream)
    }
}

/// holdfast's ports for both legs of one stream. RTP on the even port, RTCP on the odd one
/// (`rtcp: Some`), or RTCP muxed (`rtcp: None`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayPorts {
    pub a: PortAllocation,
    pub b: PortAllocation,
}

impl RelayPorts {
    pub fn of(&self, side: Side) -> PortAllocation {
        match side {
            Side::A => self.a,
            Side::B => self.b,
        }
    }
}

/// The local IP each leg's relay sockets bind to: a leg is anchored in its peer's address
/// family, so the two legs of one stream may differ (an IPv4 carrier, an IPv6 agent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayIps {
    pub a: IpAddr,
    pub b: IpAddr,
}

impl RelayIps {
    /// Both legs on `ip`.
    pub fn both(ip: IpAddr) -> RelayIps {
        RelayIps { a: ip, b: ip }
    }

    pub fn of(&self, side: Side) -> IpAddr {
        match side {
            Side::A => self.a,
            Side::B => self.b,
        }
    }
}

/// What the core asks the media shell to do. `Open` is large (the relay's whole initial
/// config) but rare; commands are queued by value, never per packet.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)]
pub enum MediaCommand {
    /// Bind `ports` (leg A's on `ips.a`, leg B's on `ips.b`) and start relaying with
    /// `config` (its clocks start when the shell starts the relay). Answered at once with
    /// [`MediaEvent::Bound`] or [`MediaEvent::OpenFailed`] (nothing stays bound then).
    Open {
        id: RelayId,
        ips: RelayIps,
        ports: RelayPorts,
        config: RelayConfig,
    },
    /// Move leg `side`'s sockets of a running relay to `ip`, on the same `ports`: the leg's
    /// peer is now of the other address family (a failover to a target of that family).
    /// The other leg and the relay's state are untouched. Answered at once with
    /// [`MediaEvent::Bound`], or [`MediaEvent::RebindFailed`] (the old sockets stay).
    Rebind {
        id: RelayId,
        side: Side,
        ip: IpAddr,
        ports: PortAllocation,
    },
    /// Change a running relay.
    Update { id: RelayId, update: RelayUpdate },
    /// Stop relaying and close the sockets; answered by [`MediaEvent::Closed`]. The core
    /// returns the ports to its allocator only then (workers are independent threads, so
    /// a port freed earlier could be bound by another worker before this one closes it).
    /// A `Close` for a relay whose `Open` failed is ignored (its `OpenFailed` frees it).
    Close { id: RelayId },
}

impl MediaCommand {
    pub fn id(&self) -> RelayId {
        match self {
            MediaCommand::Open { id, .. }
            | MediaCommand::Rebind { id, .. }
            | MediaCommand::Update { id, .. }
            | MediaCommand::Close { id } => *id,
        }
    }
}

/// A change to a running relay, from SDP offer/answer or from the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayUpdate {
    /// Leg `side`'s peer announced (new) addresses: forget what was latched there and expect
    /// these; `rtcp_mux` says whether RTCP now shares the RTP port on that leg. The sockets
    /// learn the peer again under `latch` (the peer's target's `latching`), their learning
    /// window starting when the shell applies this.
    Relatch {
        side: Side,
        rtp: Option<SocketAddr>,
        rtcp: Option<SocketAddr>,
        rtcp_mux: bool,
        latch: LatchPolicy,
    },
    /// Forward (or stop forwarding) what leg `from` sends (hold, inactive, recvonly).
    SetEnabled { from: Side, enabled: bool },
    /// Payload-type mapping for what leg `from` sends (e.g. telephone-event 101 → 96).
    SetPtMap { from: Side, map: PayloadTypeMap },
    /// What leg `side` sends now comes from a new source: keep the stream continuous.
    SourceSwitch { side: Side },
    /// Gap audio toward leg `toward`'s peer (e.g. the caller while the AI leg is being
    /// re-routed): `Some` starts (or replaces) it now — one 20 ms G.711 frame per frame time
    /// as part of the continuous stream sent to that leg, in the payload type last
    /// forwarded to it if that is PCMU/PCMA (otherwise nothing is sent); it stops by itself
    /// at the first packet forwarded to that leg again. `None` stops it. `negotiated` is the
    /// G.711 payload type that leg's SDP agreed to, used when nothing was forwarded to it
    /// yet (an agent that never spoke).
    Fill {
        toward: Side,
        audio: Option<GapAudio>,
        negotiated: Option<u8>,
    },
    /// Hold back (`true`) or release what leg `from` sends, whatever the SDP says: the
    /// source is being replaced mid-call (not a hold: the time counts as switch gap).
    Mute { from: Side, muted: bool },
    /// Send one empty datagram from leg `side`'s RTP socket to its peer: harmless to a live
    /// receiver, it draws an ICMP port unreachable (reported as
    /// [`MediaEvent::Unreachable`]) when nothing listens there any more.
    Probe { side: Side },
}

/// Why a relay could not be opened, from the `errno` of the failing call. Only
/// [`BindFailure::AddrInUse`] says anything about the port; every other failure is about
/// the process or the system, so the port goes back to the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BindFailure {
    /// `EADDRINUSE`: another socket (another process) holds the port.
    AddrInUse,
    /// `EMFILE`: the process is at its descriptor limit (RLIMIT_NOFILE).
    Emfile,
    /// `ENFILE`: the system-wide file table is full.
    Enfile,
    /// `ENOBUFS`: out of kernel buffer space.
    Enobufs,
    /// `ENOMEM`: out of kernel memory.
    Enomem,
    /// Anything else (`EADDRNOTAVAIL`: `media.bind` is not a local address, `EACCES`, an
    /// epoll or eBPF map error).
    Other,
}

impl BindFailure {
    /// The failure for an OS error number.
    pub fn from_errno(errno: Option<i32>) -> BindFailure {
        match errno {
            Some(libc::EADDRINUSE) => BindFailure::AddrInUse,
            Some(libc::EMFILE) => BindFailure::Emfile,
            Some(libc::ENFILE) => BindFailure::Enfile,
            Some(libc::ENOBUFS) => BindFailure::Enobufs,
            Some(libc::ENOMEM) => BindFailure::Enomem,
            _ => BindFailure::Other,
        }
    }

    /// The errno's name (`other` for the rest), a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            BindFailure::AddrInUse => "EADDRINUSE",
            BindFailure::Emfile => "EMFILE",
            BindFailure::Enfile => "ENFILE",
            BindFailure::Enobufs => "ENOBUFS",
            BindFailure::Enomem => "ENOMEM",
            BindFailure::Other => "other",
        }
    }

    /// What ran out, for the 503's reason (`None` for `Other`: say the OS error itself).
    pub fn what(self) -> Option<&'static str> {
        match self {
            BindFailure::AddrInUse => Some("relay port in use by another process (EADDRINUSE)"),
            BindFailure::Emfile => Some("out of file descriptors (EMFILE)"),
            BindFailure::Enfile => Some("system file table full (ENFILE)"),
            BindFailure::Enobufs => Some("out of kernel buffer space (ENOBUFS)"),
            BindFailure::Enomem => Some("out of kernel memory (ENOMEM)"),
            BindFailure::Other => None,
        }
    }
}

/// What the media shell reports to the core (rare: never per packet).
#[derive(Debug, Clone, PartialEq)]
#[allow(clippy::large_enum_variant)]
pub enum MediaEvent {
    /// Every socket of `Open{id}` is bound: its ports can be advertised. Reported by the
    /// shell before it drains the core's next transmit.
    Bound { id: RelayId },
    /// The relay could not be started: `port` failed with `failure` (`error` is the OS's
    /// text, with the address). Nothing of the relay stays bound. Reported in place of
    /// `Bound`, or later if a worker cannot add the bound sockets to its loop.
    OpenFailed {
        id: RelayId,
        port: u16,
        failure: BindFailure,
        error: String,
    },
    /// Leg `side`'s socket latched onto its peer at `addr` (by the `PeerLatch` rules: the
    /// SDP address at once, a candidate after the learning window).
    Latched {
        id: RelayId,
        side: Side,
        kind: SocketKind,
        addr: SocketAddr,
    },
    /// Sending to leg `side`'s peer at `addr` got ICMP port/host unreachable. Reported at
    /// most once per peer address (again after a relatch).
    Unreachable {
        id: RelayId,
        side: Side,
        addr: SocketAddr,
    },
    /// No RTP and no RTCP from leg `side`'s peer for its media timeout (on hold too).
    /// Reported once per silence: the leg's clock restarts when reported.
    Timeout {
        id: RelayId,
        side: Side,
        idle_for: Duration,
    },
    /// After a [`RelayUpdate::SourceSwitch`] of leg `side`, the first packet from its new
    /// source was forwarded. `gap` is the time since the last packet forwarded from the old
    /// source (`None` if none was): the silence the other leg heard.
    Resumed {
        id: RelayId,
        side: Side,
        gap: Option<Duration>,
    },
    /// The relay stopped (after [`MediaCommand::Close`]); its final statistics per direction:
    /// `a_to_b` is built from what leg A sent, `b_to_a` from what leg B sent.
    Closed {
        id: RelayId,
        a_to_b: StreamStatsSnapshot,
        b_to_a: StreamStatsSnapshot,
    },
    /// A `Rebind` could not bind the new sockets (`error` is the OS's text, with the
    /// address): the leg stays on its old sockets and family.
    RebindFailed {
        id: RelayId,
        side: Side,
        error: String,
    },
}

impl MediaEvent {
    pub fn id(&self) -> RelayId {
        match self {
            MediaEvent::Bound { id }
            | MediaEvent::OpenFailed { id, .. }
            | MediaEvent::Latched { id, .. }
            | MediaEvent::Unreachable { id, .. }
            | MediaEvent::Timeout { id, .. }
            | MediaEvent::Resumed { id, .. }
            | MediaEvent::Closed { id, .. }
            | MediaEvent::RebindFailed { id, .. } => *id,
        }
    }
}
