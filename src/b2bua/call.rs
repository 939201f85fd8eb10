//! One call's state: two dialogs (legs) and the routing decisions that bind them.
//!
//! Everything a call needs to survive lives in [`Call`], which is plain data and serializable,
//! so a later release can replicate it to a standby node. Transactions are not part of it: they
//! are short-lived and belong to the core's transaction layer. Deadlines are kept by the core,
//! keyed by call, never inside this struct.
//!
//! This module never sends anything and never looks at the clock.
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::time::Duration;

use crate::ai::control::{AiKind, TranscriptItem};
use crate::media::codec::G711;
use crate::sip::Transport;

/// Where a leg's messages go: the transport, our local socket, and the peer's address.
/// For the caller's leg this is the address its INVITE came from (symmetric signalling, so
/// NATed trunks work); for the callee's leg it is the pinned target's resolved address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Flow {
    pub transport: Transport,
    pub local: SocketAddr,
    pub remote: SocketAddr,
}

/// Which leg of a call (one type from the relay up: the media layer's).
pub use crate::media::relay::Side;

/// Direction of a call relative to the AI side.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Direction {
    /// Carrier → AI provider.
    Inbound,
    /// AI provider → carrier.
    Outbound,
}

/// RFC 4028 session timer state of one leg.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionTimer {
    /// The negotiated Session-Expires interval.
    pub interval: Duration,
    /// True when holdfast is the refresher on this leg.
    pub we_refresh: bool,
}

/// Dialog state of one leg (RFC 3261 §12).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Leg {
    pub call_id: String,
    pub local_tag: String,
    pub remote_tag: Option<String>,
    /// Our From (B leg) or To (A leg) header value without the tag parameter.
    pub local_uri: String,
    /// The peer's From (A leg) or To (B leg) header value without the tag parameter.
    pub remote_uri: String,
    /// The peer's Contact URI: the Request-URI of requests we send in this dialog.
    pub remote_target: String,
    /// Route set, in the order Route headers are written (§12.1.1, §12.1.2).
    pub route_set: Vec<String>,
    pub local_cseq: u32,
    pub remote_cseq: Option<u32>,
    pub flow: Flow,
    /// The peer's Allow header, to pick UPDATE or re-INVITE for refreshes.
    pub peer_allows_update: bool,
    pub session_timer: Option<SessionTimer>,
    /// The last session description the peer sent on this leg (offer or answer), passed
    /// unchanged to the other leg. Used to answer pure session refreshes locally.
    pub remote_sdp: Option<Vec<u8>>,
    pub remote_sdp_type: Option<String>,
}

impl Leg {
    /// The next CSeq for a request we originate in this dialog.
    pub fn next_cseq(&mut self) -> u32 {
        self.local_cseq = self.local_cseq.wrapping_add(1).max(1);
        self.local_cseq
    }
}

/// The lifecycle of a call; see `LIFECYCLE.md` beside this file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CallState {
    /// Trying candidates; nothing but 100 Trying sent to the caller.
    Routing,
    /// A provisional response was relayed to the caller; failover still possible unless it
    /// carried early media.
    Early,
    /// A 2xx was relayed to the caller; waiting for its ACK.
    Answered,
    /// Both legs confirmed.
    Confirmed,
    /// The AI leg failed mid-call: the carrier leg stays up untouched while a new AI leg is
    /// set up to the next provider (see `Reroute`). Back to `Confirmed` once one answers.
    Rerouting,
    /// BYE sent or received; waiting for the last transactions to finish.
    Ending,
}

/// One target tried for this call and how it ended.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Attempt {
    pub target: String,
    pub remote: SocketAddr,
    pub transport: Transport,
    /// `None` while in progress; e.g. "503 Service Unavailable", "timeout (no provisional in 1s)".
    pub outcome: Option<String>,
    pub provisional: bool,
}

/// What made holdfast re-route a call's AI leg mid-call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RerouteTrigger {
    /// The AI leg sent BYE with an error cause (`Reason: SIP;cause=5xx`, a Q.850 failure).
    Bye,
    /// A re-INVITE or UPDATE to the AI leg (relayed, or a session refresh) failed: 5xx,
    /// 408, 481 or no answer.
    Reinvite,
    /// The AI leg fell silent (no RTP or RTCP for `media.ai_timeout`) and its liveness
    /// check failed: the OPTIONS went unanswered by an agent known to answer, an in-dialog
    /// check got 481, a WebSocket ping got no pong, or the check hit a transport error.
    Liveness,
    /// The AI leg's media address answered ICMP port unreachable: nothing listens there.
    MediaUnreachable,
    /// The provider's OPTIONS health turned down.
    HealthDown,
    /// A WebSocket provider's connection closed abnormally or dropped, or the provider
    /// reported an `error` (session expiry included).
    Websocket,
}

impl RerouteTrigger {
    pub fn as_str(self) -> &'static str {
        match self {
            RerouteTrigger::Bye => "bye",
            RerouteTrigger::Reinvite => "reinvite",
            RerouteTrigger::Liveness => "liveness",
            RerouteTrigger::MediaUnreachable => "media_unreachable",
            RerouteTrigger::HealthDown => "health_down",
            RerouteTrigger::Websocket => "websocket",
        }
    }
}

/// One mid-call re-route of the AI leg, as recorded on the call.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Reroute {
    pub trigger: RerouteTrigger,
    /// What exactly happened, e.g. "BYE with Reason: SIP;cause=503".
    pub detail: String,
    /// The provider that failed.
    pub from: String,
    /// The provider that took over; `None` while trying, or when none was left.
    pub to: Option<String>,
    /// From the trigger to the new provider's answer.
    pub setup_ms: Option<u64>,
    /// Measured at the carrier side: last AI audio relayed → first new AI audio relayed.
    pub gap_ms: Option<u64>,
    /// `None` while trying; "answered by agent-b", "no AI provider left", ...
    pub outcome: Option<String>,
    /// Whether the failed leg was confirmed gone (ICMP, a failed check, its BYE…): it was
    /// cut off at once. `false` (its provider's health turned down, it refused a
    /// renegotiation): it kept the call until the new provider answered, and keeps it when
    /// none does.
    #[serde(default)]
    pub confirmed: bool,
}

/// The call's AI leg when its provider speaks WebSocket (`media-stream`, `openai-realtime`):
/// there is no SIP dialog on that side (`Call::b` is `None`); the relay's AI side talks RTP
/// to the leg's local bridge socket instead.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WsLeg {
    /// The AI shell's leg id.
    pub leg: u64,
    pub provider: String,
    pub kind: AiKind,
    /// Index into `Call::attempts`.
    pub attempt: usize,
    /// The m-line bridged, and the caller leg's codec the bridge speaks.
    pub stream: usize,
    pub law: G711,
    pub payload_type: u8,
    pub dtmf_payload_type: Option<u8>,
    /// The bridge's RTP address once the leg is up.
    pub media: Option<SocketAddr>,
}

/// A candidate target for this call, in failover order.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Candidate {
    pub target: String,
    /// Planned in spite of its open breaker (panic mode, `max_ejection_percent`): tried
    /// unless its health checks say down.
    #[serde(default)]
    pub ignore_breaker: bool,
}

/// The state of one call: both legs and the routing decisions.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Call {
    /// holdfast's own identifier, shown in logs; also the `x-holdfast-call` header value.
    pub id: String,
    pub direction: Direction,
    /// The carrier (inbound) or AI provider (outbound) the call came from.
    pub origin: String,
    pub rule: String,
    pub regions: Vec<String>,
    pub caller: String,
    pub callee: String,
    pub state: CallState,
    pub a: Leg,
    /// The current attempt's (and once answered, the pinned) callee-side dialog.
    pub b: Option<Leg>,
    pub candidates: Vec<Candidate>,
    pub next_candidate: usize,
    /// Whether the plan was produced because every candidate was down (fail open).
    pub fail_open: bool,
    pub attempts: Vec<Attempt>,
    /// The target the call is pinned to once answered (or once early media was relayed).
    pub pinned: Option<String>,
    /// An 18x with a body was relayed: no failover from here on.
    pub early_media: bool,
    /// The caller cancelled, or the call is being torn down before answer.
    pub cancelled: bool,
    /// The caller's INVITE body, re-sent on each attempt.
    pub offer: Option<Vec<u8>>,
    pub offer_type: Option<String>,
    /// Max-Forwards for requests on the B leg (incoming value − 1, capped by config).
    pub max_forwards: u8,
    /// Headers copied verbatim from the caller's INVITE onto each attempt.
    pub passthrough_headers: Vec<(String, String)>,
    /// Why the call ended, for logs and call records.
    pub end_reason: Option<String>,
    /// The anchored media: ports, both legs' SDP, relay state (`None` before an offer).
    pub media: Option<super::media::CallMedia>,
    /// Mid-call re-routes of the AI leg, oldest first.
    pub reroutes: Vec<Reroute>,
    /// The WebSocket AI leg (instead of `b`), when the AI provider is a WebSocket kind.
    pub ws: Option<WsLeg>,
    /// What was said so far (from providers that report transcripts), oldest first and
    /// bounded: replayed into a provider that takes the call over.
    pub transcript: Vec<TranscriptItem>,
    /// Set when no AI provider was left and the call was transferred to this number
    /// through the carrier routing (`ai.no_provider.action: transfer`): the B leg then faces
    /// a carrier, not an AI agent, and is never re-routed.
    pub transfer_to: Option<String>,
}

impl Call {
    /// The leg that faces the AI provider: B for an inbound call, A for an outbound one.
    pub fn ai_side(&self) -> Side {
        match self.direction {
            Direction::Inbound => Side::B,
            Direction::Outbound => Side::A,
        }
    }

    /// Whether leg `side` faces an AI agent (that can be re-routed).
    pub fn is_ai_leg(&self, side: Side) -> bool {
        self.ai_side() == side && self.transfer_to.is_none()
    }

    /// Whether `target` already failed mid-call on this call (it gets no second chance).
    pub fn failed_mid_call(&self, target: &str) -> bool {
        self.reroutes.iter().any(|r| r.from == target)
    }
}
