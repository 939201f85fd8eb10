//! The B2BUA core: the sans-IO heart of holdfast.
//!
//! It takes received SIP datagrams and stream messages, timer ticks, DNS results and config
//! reloads, each with a `now`, and produces datagrams to send and the next deadline. It owns
//! the guard that decides, before parsing, whether a message is answered at all (`guard`:
//! unknown sources, scanners, per-source limits), the transaction layer (matching per RFC
//! 3261 §17.1.3/§17.2.3), every call (two dialogs each), the routing decisions and the
//! health table that the OPTIONS pinger and passive failures feed.
//!
//! It never touches a socket, never reads the clock, never spawns and never draws from the
//! OS's randomness: the runtime shell does all of that and drives this struct:
//!
//! ```text
//! loop {
//!     feed one input: handle_received / handle_timeout / handle_resolved / handle_reload
//!     loop match poll_output():
//!         Media(cmd)  -> media shell; an Open is bound at once and answered with
//!                        handle_media_event(Bound | OpenFailed) (which may queue more)
//!         Ai(cmd) | Webhook(event) | Transmit(msg) | Record(record) -> their shells
//!         Timeout(at) -> sleep until `at` or the next input
//! }
//! ```
//!
//! A step that opens relays (an offer with new streams) holds the SIP that would advertise
//! their ports (`AfterBind`) until every `Bound`: a port another process holds
//! (`EADDRINUSE`) is quarantined and the stream gets other ports, so no SDP ever names a
//! port that could not be bound; other bind failures (out of descriptors...) answer 503 and
//! give the ports back.
use bytes::Bytes;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

use super::call::{
    Attempt, Call, CallState, Candidate, Direction, Flow, Leg, RerouteTrigger, SessionTimer, Side,
};
use super::ids::{CallIds, IdGen, BRANCH_COOKIE};
use super::media::{CallMedia, MediaError, MediaParams, ReOffer, StreamState};
use super::msg::{self, OutRequest, Req, Resp};
use crate::ai::control::{AiCommand, AiLegId};
use crate::config::{Config, IpFamily};
use crate::guard::{Exchanges, Guard, Sender};
use crate::health::{
    AttemptOutcome, Availability, Destination, HealthEvent, HealthTable, TargetHealthConfig,
};
use crate::media::control::{BindFailure, MediaCommand, MediaEvent};
use crate::media::ports::PortAllocator;
use crate::media::relay::Latching;
use crate::routing::{AvailabilityView, Origin, Plan, RoutingTable, TargetAvailability, TargetId};
use crate::sip::header::Refresher;
use crate::sip::message::{Message, Request};
use crate::sip::transaction::{
    ClientInvite, ClientNonInvite, Deliver, Reliability, ServerInvite, ServerInviteState,
    ServerNonInvite, TimerConfig, Transaction, TransactionEvent,
};
use crate::sip::validate::{self, Policy, Verdict};
use crate::sip::Transport;

mod liveness;
mod ops;
mod reroute;

pub use ops::{CallView, TargetView};
mod ws_leg;

/// Methods holdfast accepts; sent in Allow (RFC 3261 §20.5).
pub const ALLOW: &str = "INVITE, ACK, BYE, CANCEL, OPTIONS, INFO, UPDATE";
/// What holdfast supports (RFC 3261 §20.37); `timer` is RFC 4028.
pub const SUPPORTED: &str = "timer";
/// Bodies holdfast accepts.
pub const ACCEPT: &str = "application/sdp";

/// A datagram or framed stream message that arrived.
#[derive(Clone, Debug)]
pub struct Received {
    pub transport: Transport,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub data: Bytes,
}

/// What the core has for the shell, one at a time from [`Core::poll_output`], in the order
/// the shell must act on it. Drain until [`Output::Timeout`].
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Output {
    /// A command for the media shell. Comes first: a relay must be bound before the SDP
    /// naming its ports goes out, so the shell answers an `Open` at once
    /// ([`Core::handle_media_event`]) and polls again, which may bring another `Open`.
    Media(MediaCommand),
    /// A command for the WebSocket AI shell.
    Ai(AiCommand),
    /// An event for the user's webhook (JSON); the shell adds the time and POSTs it.
    Webhook(serde_json::Value),
    /// A SIP message to send.
    Transmit(Transmit),
    /// A finished call's record.
    Record(super::record::CallRecord),
    /// Nothing more until this deadline (`None`: until the next input); then
    /// [`Core::handle_timeout`].
    Timeout(Option<Instant>),
}

/// A message to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    pub transport: Transport,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub data: Bytes,
}

/// A socket holdfast listens on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Listener {
    pub transport: Transport,
    pub addr: SocketAddr,
}

/// Settings the core reads on every message; rebuilt on reload.
#[derive(Clone, Debug)]
struct Settings {
    listeners: Vec<Listener>,
    advertise: Option<String>,
    timers: TimerConfig,
    max_forwards: u8,
    session_expires: Duration,
    min_se: Duration,
    user_agent: String,
    force_rport: bool,
    attempt_timeout: Duration,
    ring_timeout: Duration,
    seed: Option<u64>,
}

impl Settings {
    fn from_config(cfg: &Config) -> Settings {
        Settings {
            listeners: cfg
                .sip
                .listen
                .iter()
                .map(|l| Listener {
                    transport: l.transport,
                    addr: l.addr,
                })
                .collect(),
            advertise: cfg.sip.advertise.clone(),
            timers: TimerConfig {
                t1: cfg.sip.t1,
                t2: cfg.sip.t2,
                t4: cfg.sip.t4,
            },
            max_forwards: cfg.sip.max_forwards,
            session_expires: cfg.sip.session_expires,
            min_se: cfg.sip.min_se,
            user_agent: cfg.sip.user_agent.clone(),
            force_rport: cfg.sip.force_rport,
            attempt_timeout: cfg.routing.attempt_timeout,
            ring_timeout: cfg.routing.ring_timeout,
            seed: cfg.routing.seed,
        }
    }
}

type CallRef = u64;

/// The smallest timer heap that `Core::compact_timers` bothers with.
const MIN_TIMERS_COMPACTED: usize = 256;
/// The smallest table capacity that `Core::shrink_tables` bothers with.
const MIN_TABLE_SHRUNK: usize = 64;

/// A 2xx to a re-INVITE that waits for its ACK.
#[derive(Clone, Debug)]
struct PendingAck {
    /// The leg the ACK comes from.
    from: Side,
    /// The server transaction retransmitting the 2xx.
    server: ServerKey,
    /// For a relayed re-INVITE: the CSeq to acknowledge on the other leg.
    relay_cseq: Option<u32>,
    /// Our 2xx carried an offer (the re-INVITE had none): the ACK brings the answer.
    local_offer: bool,
}

/// Server transaction key (RFC 3261 §17.2.3): branch, sent-by, and the method with ACK folded
/// into INVITE. For RFC 2543 peers without the magic cookie, a key of the §17.2.3 fallback
/// fields is built instead.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct ServerKey {
    branch: String,
    sent_by: String,
    method: String,
}

/// Client transaction key (§17.1.3): our branch and the CSeq method.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct ClientKey {
    branch: String,
    method: String,
}

fn server_key(req: &Req) -> ServerKey {
    let method = if req.method == "ACK" {
        "INVITE".to_string()
    } else {
        req.method.clone()
    };
    if req.branch.starts_with(BRANCH_COOKIE) {
        ServerKey {
            branch: req.branch.clone(),
            sent_by: req.sent_by.clone(),
            method,
        }
    } else {
        // RFC 2543 matching (§17.2.3 last paragraph): Request-URI, tags, Call-ID, CSeq number
        // and top Via identify the transaction. The To tag is left out so that the ACK for a
        // non-2xx (which carries our To tag) matches the INVITE.
        ServerKey {
            branch: format!(
                "2543|{}|{}|{}|{}|{}",
                req.uri,
                req.from_tag.as_deref().unwrap_or(""),
                req.call_id,
                req.cseq,
                req.branch
            ),
            sent_by: req.sent_by.clone(),
            method,
        }
    }
}

struct ServerEntry {
    tx: Transaction,
    flow: Flow,
    /// The request, kept to build responses from (re-parsed on demand).
    request: Bytes,
    /// Where the request came from (for the Via's received/rport).
    source: SocketAddr,
    /// The To tag our responses carry (the A-leg local tag for a dialog-creating INVITE).
    to_tag: Option<String>,
    call: Option<CallRef>,
    /// Set once a final response was sent.
    finished: bool,
    /// The deadline already in the timer heap for this transaction.
    armed: Option<Instant>,
}

/// What a client transaction's responses are for.
#[derive(Clone, Debug)]
enum Purpose {
    /// An INVITE attempt on the B leg, index into `call.attempts`.
    Attempt { call: CallRef, attempt: usize },
    /// An attempt that was abandoned (attempt timeout, cancel): a late 1xx is cancelled,
    /// a late 2xx is acknowledged and hung up.
    Abandoned { leg: Box<Leg> },
    /// A request relayed from the other leg; the response goes back to `server`.
    Relay {
        call: CallRef,
        to: Side,
        server: ServerKey,
    },
    /// A session refresh we originated on `side`.
    Refresh { call: CallRef, side: Side },
    /// A liveness check (OPTIONS, in or outside the dialog) of the silent leg `side`.
    Check {
        call: CallRef,
        side: Side,
        in_dialog: bool,
    },
    /// A BYE we sent; the call is removed when the last one finishes.
    Bye { call: CallRef },
    /// CANCEL, ACK-less non-INVITE bookkeeping: nothing to do with the response.
    Ignore,
    /// An OPTIONS health probe.
    Probe { probe: crate::health::ProbeId },
}

struct ClientEntry {
    tx: Transaction,
    flow: Flow,
    request: Bytes,
    purpose: Purpose,
    /// For INVITEs: whether a provisional arrived (CANCEL is allowed only then, §9.1).
    provisional: bool,
    /// For INVITEs: send CANCEL as soon as a provisional arrives.
    cancel_pending: bool,
    /// The deadline already in the timer heap for this transaction.
    armed: Option<Instant>,
}

/// Per-call deadlines.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum CallTimer {
    /// No provisional on attempt N within `attempt_timeout`.
    Attempt(usize),
    /// Attempt N sent a provisional but no final within `ring_timeout`.
    Ring(usize),
    /// We refresh this leg's session (RFC 4028 §10: at half the interval).
    Refresh(SideKey),
    /// The peer should have refreshed this leg by now (§10: BYE before expiry).
    Expire(SideKey),
    /// An ending call that still has nothing to wait for is dropped at this point.
    Reap,
    /// The no-provider prompt has played: hang up.
    PromptDone,
    /// The liveness check of this leg got no answer in `media.check_timeout`.
    Check(SideKey),
    /// The call waited for targets being resolved for the first time: plan it now.
    Resolve,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum SideKey {
    A,
    B,
}

impl From<Side> for SideKey {
    fn from(s: Side) -> Self {
        match s {
            Side::A => SideKey::A,
            Side::B => SideKey::B,
        }
    }
}

impl From<SideKey> for Side {
    fn from(s: SideKey) -> Self {
        match s {
            SideKey::A => Side::A,
            SideKey::B => Side::B,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum TimerRef {
    Server(u64),
    Client(u64),
    Call(CallRef, CallTimer),
    Health,
    /// A quarantined relay port's deadline.
    PortQuarantine,
    /// The guard's next deadline (blocks ending, the log interval).
    Guard,
}

/// What a call does once the relays its last offer opened are bound: the step that was held
/// so that the SDP naming their ports goes out only after they are (see the module docs).
#[derive(Clone, Debug)]
enum AfterBind {
    /// The caller's offer in the initial INVITE: route the call.
    Route,
    /// The callee's offer (late offer) in a provisional: relay the provisional.
    Provisional { attempt: usize, resp: Resp },
    /// The callee's offer (late offer) in its 2xx: answer the caller.
    Answered { attempt: usize, resp: Resp },
    /// A re-offer that adds streams: relay it to the other leg.
    Relay { from: Side, sid: u64, req: Req },
    /// An attempt to a target of the other address family than the callee leg's relay
    /// sockets: make it once they moved there.
    Attempt { target: TargetId, dest: Destination },
}

struct CallEntry {
    call: Call,
    /// The step waiting for the relays the call's last offer opened.
    after_bind: Option<AfterBind>,
    /// The caller's INVITE server transaction.
    a_invite: ServerKey,
    /// The current B-leg INVITE client transaction, while routing.
    b_invite: Option<ClientKey>,
    /// Armed deadlines (the heap may hold stale ones; this map is the truth).
    deadlines: HashMap<CallTimer, Instant>,
    /// A re-INVITE answered with 2xx, waiting for the originator's ACK.
    pending_ack: Option<PendingAck>,
    /// A re-INVITE/UPDATE in progress on either leg (for 491 glare handling).
    reinvite_in_progress: bool,
    /// BYE transactions still running.
    byes_outstanding: u32,
    /// Whether this call counts toward `active` of its current target.
    counted_target: Option<TargetId>,
    /// The ACK we sent for the callee's 2xx, re-sent for each retransmission of it
    /// (RFC 3261 §13.2.2.4).
    b_ack: Option<Bytes>,
    /// The status an unanswered caller gets if the call ends now (default 480).
    refuse: Option<(u16, &'static str)>,
    /// When the re-route in progress started (for its setup time), and how many attempts
    /// the call had made before it.
    reroute_started: Option<(Instant, usize)>,
    /// The AI leg a re-route is replacing while it still works (make before break): kept
    /// until the new provider answers, and given the call back when none does.
    kept: Option<liveness::KeptLeg>,
    /// Liveness of leg A and leg B: silence makes a leg suspect, a check decides.
    liveness: [liveness::LegLiveness; 2],
    /// A confirmed failure of the AI leg between its answer and the caller's ACK: the call
    /// is re-routed once confirmed.
    early_failure: Option<(RerouteTrigger, String)>,
    /// When the caller's INVITE arrived, and when the call was answered (call records).
    started: Instant,
    answered_at: Option<Instant>,
    /// The final status the caller's INVITE got.
    final_status: Option<u16>,
    /// Which leg ended the call (`None`: holdfast did), and when it started ending.
    ended_by: Option<Side>,
    ended_at: Option<Instant>,
    /// The call arrived while its rule's targets were being resolved for the first time:
    /// it waits (`CallTimer::Resolve`) and is planned with this rule and seed once they are.
    waiting: Option<(crate::routing::Rule, u64)>,
}

/// Counters the runtime exposes; cheap to copy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub calls_active: usize,
    /// SIP transactions in progress (server and client), those of ended calls included
    /// until their timers end them (up to 64×T1 after the call).
    pub transactions: usize,
    pub calls_total: u64,
    pub calls_answered: u64,
    pub calls_failed: u64,
    pub failovers: u64,
    /// Mid-call re-routes of the AI leg started, and those that found no provider.
    pub reroutes: u64,
    pub reroutes_failed: u64,
    pub parse_errors: u64,
    /// Relay ports allocated (open, or closing until the media shell confirms).
    pub media_ports_in_use: usize,
    pub media_ports_capacity: usize,
    /// Relay ports quarantined (another process held them).
    pub media_ports_quarantined: usize,
}

/// Per-target bookkeeping for selection.
#[derive(Default)]
struct TargetState {
    destinations: Vec<Destination>,
    active_calls: u32,
}

/// The B2BUA core; see the module docs.
pub struct Core {
    config: Arc<Config>,
    settings: Settings,
    routing: RoutingTable,
    health: HealthTable<TargetId>,
    targets: HashMap<TargetId, TargetState>,
    calls: HashMap<CallRef, CallEntry>,
    /// (Call-ID, our tag) → call and leg.
    dialogs: HashMap<(String, String), (CallRef, Side)>,
    server_ids: HashMap<ServerKey, u64>,
    servers: HashMap<u64, (ServerKey, ServerEntry)>,
    client_ids: HashMap<ClientKey, u64>,
    clients: HashMap<u64, (ClientKey, ClientEntry)>,
    heap: BinaryHeap<Reverse<(Instant, TimerRef)>>,
    out: VecDeque<Transmit>,
    ids: IdGen,
    next_id: u64,
    /// holdfast's call ids (`hf-<node>-<n>`), unique across nodes and restarts.
    call_ids: CallIds,
    draining: bool,
    stats: Stats,
    policy: Policy,
    /// The earliest health deadline already in the timer heap.
    health_armed: Option<Instant>,
    /// Who gets answers at all: unknown sources, scanners, per-source limits (`guard`).
    guard: Guard,
    /// The earliest guard deadline (a block's end) already in the timer heap.
    guard_armed: Option<Instant>,
    /// The timer heap's length at which entries that can only wake the core for nothing
    /// are dropped (`compact_timers`).
    compact_timers_at: usize,
    /// Relay ports (`media.ports`; fixed for the life of the process).
    ports: PortAllocator,
    /// Where relays bind and what SDP advertises (`media.bind`, `media.advertise`). The
    /// bind addresses are fixed for the life of the process; a reload may change what is
    /// advertised for them.
    media_addrs: crate::config::MediaAddrs,
    media_out: VecDeque<MediaCommand>,
    /// Commands for the WebSocket AI shell.
    ai_out: VecDeque<AiCommand>,
    /// Events for the user's webhook (`ai.webhook`), as JSON.
    webhooks: VecDeque<serde_json::Value>,
    /// WebSocket AI legs by the shell's leg id.
    ai_legs: HashMap<AiLegId, CallRef>,
    /// Handshake probes of WebSocket providers in flight: the shell's id → the health
    /// table's.
    ai_probes: HashMap<u64, crate::health::ProbeId>,
    /// Media of calls that ended, until the shell confirms each relay closed.
    closing: HashMap<CallRef, (String, CallMedia)>,
    /// The first health round is done (latched; `/ready`).
    first_round_done: bool,
    /// Targets an operator cordoned (admin API): no new calls.
    cordoned: std::collections::HashSet<TargetId>,
    /// Counters and histograms for `/metrics`.
    metrics: ops::CoreMetrics,
    /// Rules whose last plan was in panic mode (logged when it starts and ends).
    panic_rules: std::collections::HashSet<String>,
    /// Per rule, the targets its last plan kept in rotation against their open breaker
    /// (`max_ejection_percent`; logged when the set changes).
    capped_rules: HashMap<String, Vec<TargetId>>,
    /// Records of ended calls waiting for their relays' final statistics.
    records_pending: HashMap<CallRef, super::record::CallRecord>,
    /// Targets whose legs answered a liveness check (OPTIONS): one of their legs that
    /// leaves a check unanswered is gone, not just a user agent that ignores OPTIONS.
    check_answered: std::collections::HashSet<TargetId>,
    /// Finished call records, for the shell to write.
    records: VecDeque<super::record::CallRecord>,
}

/// What the guard may ask of the core's exchanges in progress.
struct CoreExchanges<'a> {
    dialogs: &'a HashMap<(String, String), (CallRef, Side)>,
    clients: &'a HashMap<ClientKey, u64>,
}

impl Exchanges for CoreExchanges<'_> {
    fn has_dialog(&self, call_id: &str, local_tag: &str) -> bool {
        self.dialogs
            .contains_key(&(call_id.to_owned(), local_tag.to_owned()))
    }

    fn has_client_transaction(&self, branch: &str, method: &str) -> bool {
        self.clients.contains_key(&ClientKey {
            branch: branch.to_owned(),
            method: method.to_owned(),
        })
    }
}

/// What routing sees of health and load at one instant.
struct View<'a> {
    health: &'a HealthTable<TargetId>,
    targets: &'a HashMap<TargetId, TargetState>,
    cordoned: &'a std::collections::HashSet<TargetId>,
    now: Instant,
}

impl AvailabilityView for View<'_> {
    fn is_healthy(&self, id: &TargetId) -> bool {
        self.health.is_available(id, self.now)
            && self
                .targets
                .get(id)
                .is_some_and(|t| !t.destinations.is_empty())
    }
    fn active_calls(&self, id: &TargetId) -> u32 {
        self.targets.get(id).map_or(0, |t| t.active_calls)
    }
    fn is_cordoned(&self, id: &TargetId) -> bool {
        self.cordoned.contains(id)
    }
    fn availability(&self, id: &TargetId) -> TargetAvailability {
        let resolved = || {
            self.targets
                .get(id)
                .is_some_and(|t| !t.destinations.is_empty())
        };
        match self.health.availability(id, self.now) {
            Availability::Pending { until } => TargetAvailability::Pending { until },
            Availability::Usable if resolved() => TargetAvailability::Usable,
            Availability::Ejected { since } if resolved() => TargetAvailability::Ejected { since },
            _ => TargetAvailability::Down,
        }
    }
}

fn health_settings(cfg: &Config) -> crate::health::HealthSettings {
    let h = &cfg.health;
    crate::health::HealthSettings {
        ping_interval: h.ping_interval,
        ping_timeout: h.ping_timeout,
        down_after: h.down_after,
        up_after: h.up_after,
        initial_state: crate::health::UpDown::Up,
        breaker: crate::health::BreakerConfig {
            failures: h.breaker.failures,
            window: h.breaker.window,
            cooldown: h.breaker.cooldown,
            failure_percent: h.breaker.failure_percent,
            min_attempts: h.breaker.min_attempts,
            probe_successes: h.breaker.probe_successes,
        },
    }
}

/// A plan's targets as a call's candidates.
fn candidates(plan: &Plan) -> Vec<Candidate> {
    plan.targets
        .iter()
        .map(|t| Candidate {
            target: t.to_string(),
            ignore_breaker: plan.overrides_breaker(t),
        })
        .collect()
}

fn reliability(t: Transport) -> Reliability {
    match t {
        Transport::Udp => Reliability::Unreliable,
        Transport::Tcp => Reliability::Reliable,
    }
}

fn refresher_param(r: Refresher) -> &'static str {
    match r {
        Refresher::Uac => "uac",
        Refresher::Uas => "uas",
    }
}

impl Core {
    /// A core for `config`. `seed` feeds tags, branches and weighted selection.
    pub fn new(config: Arc<Config>, seed: u64, now: Instant) -> Core {
        let settings = Settings::from_config(&config);
        let routing = RoutingTable::new(&config);
        let health = HealthTable::new(health_settings(&config));
        let mut ids = IdGen::new(seed);
        let call_ids = CallIds::new(config.node_id.as_deref(), &mut ids);
        let mut core = Core {
            config: config.clone(),
            settings,
            routing,
            health,
            targets: HashMap::new(),
            calls: HashMap::new(),
            dialogs: HashMap::new(),
            server_ids: HashMap::new(),
            servers: HashMap::new(),
            client_ids: HashMap::new(),
            clients: HashMap::new(),
            heap: BinaryHeap::new(),
            out: VecDeque::new(),
            ids,
            call_ids,
            next_id: 1,
            draining: false,
            health_armed: None,
            guard: Guard::new(&config.sip),
            guard_armed: None,
            compact_timers_at: MIN_TIMERS_COMPACTED,
            stats: Stats::default(),
            ports: PortAllocator::new(config.media.ports.clone())
                .unwrap_or_else(|_| PortAllocator::new(30000..=39999).expect("valid range")),
            media_addrs: config.media.addrs,
            media_out: VecDeque::new(),
            ai_out: VecDeque::new(),
            webhooks: VecDeque::new(),
            ai_legs: HashMap::new(),
            ai_probes: HashMap::new(),
            closing: HashMap::new(),
            first_round_done: false,
            cordoned: Default::default(),
            metrics: ops::CoreMetrics::default(),
            panic_rules: Default::default(),
            capped_rules: HashMap::new(),
            records_pending: HashMap::new(),
            check_answered: Default::default(),
            records: VecDeque::new(),
            policy: Policy {
                tag_secret: seed ^ 0x9e37_79b9_7f4a_7c15,
                max_message_size: config.sip.max_message_size,
                ..Policy::default()
            },
        };
        core.apply_targets(now);
        core
    }

    /// Swaps in a new, already validated configuration. Calls in progress keep their pinned
    /// targets and flows even when the new file removes them; new calls use the new tables.
    /// Targets added are pinged at once.
    pub fn handle_reload(&mut self, config: Arc<Config>, now: Instant) {
        let binds = |a: &crate::config::MediaAddrs| (a.v4.map(|m| m.bind), a.v6.map(|m| m.bind));
        let same_binds = binds(&config.media.addrs) == binds(&self.media_addrs);
        if config.media.ports != self.config.media.ports
            || !same_binds
            || config.media.threads != self.config.media.threads
            || config.media.io != self.config.media.io
        {
            let on: Vec<String> = self
                .media_addrs
                .iter()
                .map(|a| a.bind.to_string())
                .collect();
            warn!(
                "media.ports, media.bind, media.threads and media.io take effect after a restart; \
                 keeping {}-{} on {}",
                self.config.media.ports.start(),
                self.config.media.ports.end(),
                on.join(", ")
            );
        }
        if same_binds {
            self.media_addrs = config.media.addrs;
        }
        if config.node_id != self.config.node_id {
            warn!(
                "node.id takes effect after a restart; call ids keep `hf-{}-…`",
                self.call_ids.node()
            );
        }
        self.settings = Settings::from_config(&config);
        self.routing = RoutingTable::new(&config);
        self.health.set_settings(health_settings(&config));
        self.guard.set_settings(&config.sip);
        self.config = config;
        self.apply_targets(now);
        info!(
            targets = self.targets.len(),
            calls = self.calls.len(),
            "configuration reloaded"
        );
    }

    fn apply_targets(&mut self, now: Instant) {
        let mut keep: Vec<TargetId> = Vec::new();
        for t in self.config.targets() {
            let id = t.id.clone();
            keep.push(id.clone());
            self.health.set_target(
                id.clone(),
                TargetHealthConfig {
                    alive_codes: t.alive_codes.clone(),
                    ping: t.ping,
                },
                now,
            );
            let entry = self.targets.entry(id.clone()).or_default();
            if t.uri.is_ip {
                // `TargetUri` keeps an IPv6 literal without its brackets.
                if let Ok(ip) = t.uri.host.parse::<std::net::IpAddr>() {
                    let transport = t.uri.transport.unwrap_or(Transport::Udp);
                    let port = t.uri.port.unwrap_or(5060);
                    entry.destinations = vec![Destination {
                        addr: SocketAddr::new(ip, port),
                        transport,
                    }];
                    if let Err(e) = self
                        .health
                        .set_addresses(&id, entry.destinations.clone(), now)
                    {
                        warn!(target_id = %id, "health: {e}");
                    }
                }
            }
        }
        let gone: Vec<TargetId> = self
            .targets
            .keys()
            .filter(|k| !keep.contains(k))
            .cloned()
            .collect();
        for id in gone {
            // Calls pinned to a removed target keep their flow; only selection forgets it.
            self.health.remove_target(&id);
            if self.targets.get(&id).is_some_and(|t| t.active_calls == 0) {
                self.targets.remove(&id);
            }
        }
        self.after_health(now);
    }

    /// Targets whose host needs DNS (RFC 3263); the runtime resolves them and reports back
    /// with [`Core::handle_resolved`].
    pub fn targets_to_resolve(&self) -> Vec<crate::config::Target> {
        self.config
            .targets()
            .filter(|t| !t.uri.is_ip)
            .cloned()
            .collect()
    }

    /// New addresses for a target from DNS. Addresses that disappeared stop being pinged;
    /// calls pinned to them keep their flow.
    pub fn handle_resolved(&mut self, target: &TargetId, dests: Vec<Destination>, now: Instant) {
        if let Some(t) = self.targets.get_mut(target) {
            if t.destinations != dests {
                info!(target_id = %target, addresses = ?dests, "target resolved");
            }
            t.destinations = dests.clone();
            if let Err(e) = self.health.set_addresses(target, dests, now) {
                warn!(target_id = %target, "health: {e}");
            }
            self.after_health(now);
            let waiting: Vec<CallRef> = self
                .calls
                .iter()
                .filter(|(_, e)| {
                    e.waiting
                        .as_ref()
                        .is_some_and(|(rule, _)| rule.targets.contains(target))
                })
                .map(|(c, _)| *c)
                .collect();
            for c in waiting {
                self.replan(c, now);
            }
        }
    }

    /// Stop taking new calls (503 to INVITE and OPTIONS) or resume.
    pub fn set_draining(&mut self, on: bool) {
        self.draining = on;
    }

    pub fn is_draining(&self) -> bool {
        self.draining
    }

    /// The tables holding something per call or per transaction, and the timer heap, by
    /// name and length: tests check that ended calls leave nothing behind.
    #[cfg(test)]
    pub(super) fn per_call_tables(&self) -> Vec<(&'static str, usize)> {
        vec![
            ("calls", self.calls.len()),
            ("dialogs", self.dialogs.len()),
            ("server_ids", self.server_ids.len()),
            ("servers", self.servers.len()),
            ("client_ids", self.client_ids.len()),
            ("clients", self.clients.len()),
            ("ai_legs", self.ai_legs.len()),
            ("ai_probes", self.ai_probes.len()),
            ("closing", self.closing.len()),
            ("records_pending", self.records_pending.len()),
            ("out", self.out.len()),
            ("media_out", self.media_out.len()),
            ("ai_out", self.ai_out.len()),
            ("timers", self.heap.len()),
        ]
    }

    /// The room (capacity) of the per-call tables, by name.
    #[cfg(test)]
    pub(super) fn per_call_capacity(&self) -> Vec<(&'static str, usize)> {
        vec![
            ("calls", self.calls.capacity()),
            ("dialogs", self.dialogs.capacity()),
            ("server_ids", self.server_ids.capacity()),
            ("servers", self.servers.capacity()),
            ("client_ids", self.client_ids.capacity()),
            ("clients", self.clients.capacity()),
            ("timers", self.heap.capacity()),
        ]
    }

    /// This process's part of every call id (`hf-<node>-<n>`): `node.id` and 32 random
    /// bits, or 64 random bits.
    pub fn node(&self) -> &str {
        self.call_ids.node()
    }

    pub fn stats(&self) -> Stats {
        Stats {
            calls_active: self.calls.len(),
            transactions: self.servers.len() + self.clients.len(),
            media_ports_in_use: self.ports.in_use(),
            media_ports_capacity: self.ports.capacity(),
            media_ports_quarantined: self.ports.quarantined(),
            ..self.stats
        }
    }

    /// The state of every call in progress.
    pub fn calls(&self) -> impl Iterator<Item = &Call> {
        self.calls.values().map(|c| &c.call)
    }

    /// The next thing for the shell to do, in the order it must be done (see [`Output`]):
    /// media commands, AI commands, webhook events, SIP messages, call records, and once
    /// they are all out, the next deadline.
    pub fn poll_output(&mut self) -> Output {
        if let Some(m) = self.media_out.pop_front() {
            return Output::Media(m);
        }
        if let Some(a) = self.ai_out.pop_front() {
            return Output::Ai(a);
        }
        if let Some(w) = self.webhooks.pop_front() {
            return Output::Webhook(w);
        }
        if let Some(t) = self.out.pop_front() {
            return Output::Transmit(t);
        }
        if let Some(r) = self.records.pop_front() {
            return Output::Record(r);
        }
        Output::Timeout(self.next_deadline())
    }

    /// The `latching` of target `id` (its own, else `media.latching`).
    fn latching_of(&self, id: &TargetId) -> Latching {
        self.config
            .target(id)
            .map_or(self.config.media.latching, |t| t.latching)
    }

    fn media_params(&self, direction: Direction, origin: &TargetId) -> MediaParams {
        let m = &self.config.media;
        MediaParams {
            addrs: self.media_addrs,
            // The silence after which each leg's liveness check runs: `ai_timeout` on the
            // AI agent's leg (B inbound, A outbound), `timeout` on the carrier's.
            timeouts: match direction {
                Direction::Inbound => [m.timeout, m.ai_timeout],
                Direction::Outbound => [m.ai_timeout, m.timeout],
            },
            // Leg B follows each attempt's target (`start_attempt`).
            latching: [self.latching_of(origin), m.latching],
            learning_window: m.learning_window,
        }
    }

    /// Runs `f` on call `c`'s media with the port allocator and queues the commands it makes.
    fn with_media<T>(
        &mut self,
        c: CallRef,
        f: impl FnOnce(&mut CallMedia, &mut PortAllocator, &mut Vec<MediaCommand>) -> T,
    ) -> Option<T> {
        let e = self.calls.get_mut(&c)?;
        let m = e.call.media.as_mut()?;
        let mut cmds = Vec::new();
        let r = f(m, &mut self.ports, &mut cmds);
        self.media_out.extend(cmds);
        Some(r)
    }

    /// The earliest deadline in the timer heap.
    fn next_deadline(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((t, _))| *t)
    }

    fn arm(&mut self, at: Instant, what: TimerRef) {
        self.heap.push(Reverse((at, what)));
        if self.heap.len() >= self.compact_timers_at {
            self.compact_timers();
        }
    }

    /// Drops the heap entries that can only wake the core for nothing: deadlines of calls
    /// that ended or moved them (a call's `deadlines` map is the truth) and timers of
    /// transactions that are gone. Without this an ended call's far deadlines (its session
    /// refresh 15 minutes out, its expiry near 30) stayed until they passed, so the heap
    /// grew with every call for half an hour of traffic. Runs when the heap has doubled since
    /// the last time, so it costs a constant per armed timer; gives back spare capacity too.
    fn compact_timers(&mut self) {
        let mut entries = std::mem::take(&mut self.heap).into_vec();
        entries.retain(|Reverse((at, what))| match what {
            TimerRef::Call(c, timer) => self
                .calls
                .get(c)
                .and_then(|e| e.deadlines.get(timer))
                .is_some_and(|d| d == at),
            TimerRef::Server(id) => self.servers.contains_key(id),
            TimerRef::Client(id) => self.clients.contains_key(id),
            TimerRef::Health | TimerRef::PortQuarantine | TimerRef::Guard => true,
        });
        let keep = (entries.len() * 2).max(MIN_TIMERS_COMPACTED);
        if entries.capacity() > keep * 2 {
            entries.shrink_to(keep);
        }
        self.heap = BinaryHeap::from(entries);
        self.compact_timers_at = keep;
    }

    fn new_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Our host for Via/Contact/From/Call-ID on a flow (RFC 3261 `hostport`, IPv6
    /// bracketed): `sip.advertise`, or the listener's address. An advertised IP literal of
    /// the other address family than the flow is not used on it (a peer reached over IPv6
    /// cannot answer an IPv4 address it may have no route to, nor the reverse).
    fn local_host(&self, local: SocketAddr) -> String {
        match &self.settings.advertise {
            Some(a)
                if a.parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_ipv4() != local.is_ipv4()) =>
            {
                crate::sip::socket_host_port(local)
            }
            Some(a) => crate::sip::host_port(a, Some(local.port())).to_string(),
            None => crate::sip::socket_host_port(local),
        }
    }

    fn contact(&self, flow: &Flow) -> String {
        format!(
            "<sip:{};transport={}>",
            self.local_host(flow.local),
            flow.transport.as_str().to_ascii_lowercase()
        )
    }

    fn via(&self, flow: &Flow, branch: &str) -> String {
        format!(
            "SIP/2.0/{} {};branch={branch};rport",
            flow.transport.as_str().to_ascii_uppercase(),
            self.local_host(flow.local)
        )
    }

    /// The listener to send from toward `dest`: same transport, same address family.
    fn listener_for(&self, dest: &Destination) -> Option<SocketAddr> {
        let want_v4 = dest.addr.is_ipv4();
        self.settings
            .listeners
            .iter()
            .find(|l| l.transport == dest.transport && l.addr.is_ipv4() == want_v4)
            .or_else(|| {
                self.settings
                    .listeners
                    .iter()
                    .find(|l| l.addr.is_ipv4() == want_v4)
            })
            .map(|l| l.addr)
    }

    // ------------------------------------------------------------------ input: received

    /// A SIP message arrived. The guard decides first, from its source and a peek at it,
    /// whether it is handled at all (see `guard`). Malformed requests get 400 (505 for a
    /// bad version) when a response can be routed; everything else unparseable is dropped.
    /// Never panics.
    pub fn handle_received(&mut self, r: Received, now: Instant) {
        let known = match self.admit(&r, now) {
            Some(known) => known,
            None => return,
        };
        match validate::classify(&r.data, &self.policy) {
            Verdict::Handle(Message::Request(req)) => self.on_request(&r, &req, now),
            Verdict::Handle(Message::Response(resp)) => match Resp::from_response(&resp) {
                Ok(resp) => self.on_response(resp, now),
                Err(e) => debug!(remote = %r.remote, "dropping unusable response: {e}"),
            },
            Verdict::Reject {
                status,
                response: Some(bytes),
                detail: reason,
            } => {
                self.stats.parse_errors += 1;
                if known {
                    info!(remote = %r.remote, status, "rejecting request: {reason}");
                } else {
                    // Bounded per source by the guard, but never one info line per packet.
                    debug!(remote = %r.remote, status, "rejecting request: {reason}");
                }
                self.out.push_back(Transmit {
                    transport: r.transport,
                    local: r.local,
                    remote: r.remote,
                    data: bytes,
                });
            }
            Verdict::Reject {
                status,
                detail: reason,
                ..
            } => {
                self.stats.parse_errors += 1;
                debug!(remote = %r.remote, status, "dropping: {reason}");
            }
            Verdict::Drop { reason } => {
                self.stats.parse_errors += 1;
                debug!(remote = %r.remote, "dropping: {reason}");
            }
        }
        self.after_health(now);
    }

    /// The guard's decision for `r`: `Some(known source?)` when it goes on to the parser,
    /// `None` when it was dropped or answered (a stateless 403) here.
    fn admit(&mut self, r: &Received, now: Instant) -> Option<bool> {
        let peek = crate::sip::peek::peek(&r.data);
        let sender = match self.routing.source_match(r.remote) {
            Some(m) => Sender::Known {
                by_port: m.by_port,
                limit: m.limit,
            },
            None => Sender::Unknown,
        };
        let exchanges = CoreExchanges {
            dialogs: &self.dialogs,
            clients: &self.client_ids,
        };
        let verdict = self
            .guard
            .handle_message(r.remote, sender, peek.as_ref(), &exchanges, now);
        drop(peek);
        match verdict {
            crate::guard::Verdict::Pass => {}
            crate::guard::Verdict::Reject => self.reject_stateless(r),
            crate::guard::Verdict::Drop(_) => {}
        }
        self.after_guard(now);
        (verdict == crate::guard::Verdict::Pass).then_some(sender != Sender::Unknown)
    }

    /// `unknown_sources: reject`: one 403 per request, sent statelessly (RFC 3261 §8.2.7:
    /// no transaction, no 100 Trying, no retransmission; a retransmitted request gets the
    /// same answer, with the same To tag) to the packet's source, never to a Via host.
    fn reject_stateless(&mut self, r: &Received) {
        let bytes = match validate::classify(&r.data, &self.policy) {
            Verdict::Handle(Message::Request(req)) if req.method.as_str() != "ACK" => {
                let h = &req.headers;
                let tag = crate::sip::stateless_to_tag(
                    self.policy.tag_secret,
                    &[
                        h.get(crate::sip::HeaderName::CallId).unwrap_or(""),
                        h.get(crate::sip::HeaderName::From).unwrap_or(""),
                        h.get(crate::sip::HeaderName::Via).unwrap_or(""),
                        h.get(crate::sip::HeaderName::CSeq).unwrap_or(""),
                    ],
                );
                msg::response(&req, Some(r.remote), 403, None, Some(&tag), &[], None)
            }
            // Malformed: the parser's own stateless answer (400/505...) where it has one.
            Verdict::Reject {
                response: Some(bytes),
                ..
            } => bytes,
            _ => return,
        };
        self.out.push_back(Transmit {
            transport: r.transport,
            local: r.local,
            remote: r.remote,
            data: bytes,
        });
    }

    /// Logs what the guard has to say and arms its timer.
    fn after_guard(&mut self, _now: Instant) {
        while let Some(ev) = self.guard.poll_event() {
            self.log_guard(ev);
        }
        if let Some(at) = self.guard.poll_timeout() {
            if self.guard_armed.is_none_or(|armed| at < armed) {
                self.guard_armed = Some(at);
                self.arm(at, TimerRef::Guard);
            }
        }
    }

    fn log_guard(&self, ev: crate::guard::Event) {
        use crate::guard::Event;
        let target = |k: &crate::guard::SourceKey| {
            let addr = SocketAddr::new(k.ip, k.port.unwrap_or(0));
            self.routing
                .classify_source(addr)
                .map(|o| match o {
                    Origin::Carrier(id) | Origin::AiProvider(id) => id.to_string(),
                })
                .unwrap_or_default()
        };
        match ev {
            Event::Limited {
                source,
                known: true,
                limit,
                dropped,
            } => warn!(
                %source, target_id = %target(&source), rate = limit.rate, burst = limit.burst, dropped,
                "source over its rate limit: new requests dropped"
            ),
            Event::Limited {
                source,
                limit,
                dropped,
                ..
            } => info!(
                %source, rate = limit.rate, burst = limit.burst, dropped,
                "source over its rate limit: new requests dropped"
            ),
            Event::Blocked {
                source,
                known: true,
                limit,
                dropped,
                block_time,
            } => warn!(
                %source, target_id = %target(&source), rate = limit.rate, burst = limit.burst, dropped,
                block_time = %crate::config::format_duration(block_time),
                "source blocked: it sent twice its rate limit"
            ),
            Event::Blocked {
                source,
                limit,
                dropped,
                block_time,
                ..
            } => info!(
                %source, rate = limit.rate, burst = limit.burst, dropped,
                block_time = %crate::config::format_duration(block_time),
                "source blocked: it sent twice its rate limit"
            ),
            Event::StillBlocked {
                source,
                known,
                dropped,
            } => info!(
                %source, target_id = %if known { target(&source) } else { String::new() }, dropped,
                "source still blocked"
            ),
            Event::Unblocked {
                source,
                known,
                dropped,
                blocked_for,
            } => info!(
                %source, target_id = %if known { target(&source) } else { String::new() }, dropped,
                blocked_for = %crate::config::format_duration(blocked_for),
                "source unblocked"
            ),
            Event::Summary {
                dropped,
                lines_suppressed,
                last,
            } => {
                use crate::guard::DropReason as R;
                let (last_source, last_reason) = match last {
                    Some((a, r)) => (a.to_string(), r.as_str()),
                    None => (String::new(), ""),
                };
                info!(
                    unknown_source = dropped.get(R::UnknownSource),
                    scanner = dropped.get(R::Scanner),
                    stray = dropped.get(R::Stray),
                    rate_limited = dropped.get(R::RateLimited),
                    blocked = dropped.get(R::Blocked),
                    lines_suppressed,
                    last_source,
                    last_reason,
                    "SIP messages dropped"
                );
            }
        }
    }

    fn on_request(&mut self, r: &Received, request: &Request<'_>, now: Instant) {
        let req = match Req::from_request(request) {
            Ok(q) => q,
            Err(e) => {
                // classify() accepted it, but a field the B2BUA needs is unusable.
                let bytes =
                    msg::response(request, Some(r.remote), 400, Some(&e.0), None, &[], None);
                if request.method.as_str() != "ACK" {
                    self.out.push_back(Transmit {
                        transport: r.transport,
                        local: r.local,
                        remote: r.remote,
                        data: bytes,
                    });
                }
                return;
            }
        };
        let flow = Flow {
            transport: r.transport,
            local: r.local,
            remote: response_destination(&req, r, self.settings.force_rport),
        };
        let key = server_key(&req);
        match req.method.as_str() {
            "ACK" => return self.on_ack(&req, &key, now),
            "CANCEL" => return self.on_cancel(&req, (flow, r.remote), r.data.clone(), now),
            _ => {}
        }
        // A retransmission of a request we are already handling (§17.2.3).
        if let Some(&sid) = self.server_ids.get(&key) {
            if let Some((_, e)) = self.servers.get_mut(&sid) {
                match &mut e.tx {
                    Transaction::ServerInvite(t) => t.handle_request_retransmit(now),
                    Transaction::ServerNonInvite(t) => t.handle_request_retransmit(now),
                    _ => {}
                }
            }
            self.drive_server(sid, now);
            return;
        }
        if req.to_tag.is_some() {
            return self.on_in_dialog(&req, (flow, r.remote), key, r.data.clone(), now);
        }
        let sid = self.new_server(key, (flow, r.remote), r.data.clone(), &req, now);
        match req.method.as_str() {
            "INVITE" => self.on_invite(sid, req, flow, now),
            "OPTIONS" => {
                if self.draining {
                    self.respond(sid, 503, Some("Draining"), vec![], None, now);
                } else {
                    let headers = self.capabilities();
                    self.respond(sid, 200, None, headers, None, now);
                }
            }
            "BYE" | "INFO" | "UPDATE" | "PRACK" => {
                self.respond(sid, 481, None, vec![], None, now);
            }
            "REGISTER" | "SUBSCRIBE" | "NOTIFY" | "REFER" | "MESSAGE" | "PUBLISH" => {
                let h = vec![("Allow".to_string(), ALLOW.to_string())];
                self.respond(sid, 405, None, h, None, now);
            }
            _ => {
                // §8.2.1: a method we do not recognise.
                let h = vec![("Allow".to_string(), ALLOW.to_string())];
                self.respond(sid, 501, None, h, None, now);
            }
        }
    }

    fn capabilities(&self) -> Vec<(String, String)> {
        vec![
            ("Allow".into(), ALLOW.into()),
            ("Accept".into(), ACCEPT.into()),
            ("Supported".into(), SUPPORTED.into()),
        ]
    }

    fn new_server(
        &mut self,
        key: ServerKey,
        (flow, source): (Flow, SocketAddr),
        request: Bytes,
        req: &Req,
        now: Instant,
    ) -> u64 {
        let rel = reliability(flow.transport);
        let tx = if req.method == "INVITE" {
            Transaction::ServerInvite(ServerInvite::new(rel, self.settings.timers, now))
        } else {
            Transaction::ServerNonInvite(ServerNonInvite::new(rel, self.settings.timers, now))
        };
        let sid = self.new_id();
        self.server_ids.insert(key.clone(), sid);
        self.servers.insert(
            sid,
            (
                key,
                ServerEntry {
                    tx,
                    flow,
                    request,
                    source,
                    to_tag: None,
                    call: None,
                    finished: false,
                    armed: None,
                },
            ),
        );
        sid
    }

    /// Sends a response on server transaction `sid`, built from its stored request.
    fn respond(
        &mut self,
        sid: u64,
        status: u16,
        reason: Option<&str>,
        mut headers: Vec<(String, String)>,
        body: Option<(String, Vec<u8>)>,
        now: Instant,
    ) {
        let Some((key, e)) = self.servers.get_mut(&sid) else {
            return;
        };
        if e.finished {
            return;
        }
        if status >= 200 {
            // The caller's INVITE got its final answer: kept for the call record.
            if let Some(entry) = e.call.and_then(|c| self.calls.get_mut(&c)) {
                if entry.a_invite == *key {
                    entry.final_status.get_or_insert(status);
                }
            }
        }
        headers.push(("Server".into(), self.settings.user_agent.clone()));
        let to_tag = if status > 100 { e.to_tag.clone() } else { None };
        let bytes = match crate::sip::message::parse(&e.request) {
            Ok(Message::Request(req)) => msg::response(
                &req,
                Some(e.source),
                status,
                reason,
                to_tag.as_deref(),
                &headers,
                body.as_ref().map(|(t, b)| (t.as_str(), b.as_slice())),
            ),
            _ => return,
        };
        if status >= 200 {
            e.finished = true;
        }
        let sent = match &mut e.tx {
            Transaction::ServerInvite(t) => t.send_response(status, bytes, now),
            Transaction::ServerNonInvite(t) => t.send_response(status, bytes, now),
            _ => return, // a server entry always holds a server transaction
        };
        if let Err(err) = sent {
            // Our own sequencing bug, never the peer's: log it loudly, keep running.
            warn!(status, "response not sent: {err}");
        }
        self.drive_server(sid, now);
    }

    /// Moves a server transaction's outputs out and re-arms its timer.
    fn drive_server(&mut self, sid: u64, now: Instant) {
        let Some((_, e)) = self.servers.get_mut(&sid) else {
            return;
        };
        let (events, next) = flush(&mut e.tx, &e.flow, &mut self.out);
        let call = e.call;
        if let Some(at) = next.filter(|at| e.armed != Some(*at)) {
            e.armed = Some(at);
            self.arm(at, TimerRef::Server(sid));
        }
        for ev in events {
            match ev {
                TransactionEvent::NoAckFor2xx => {
                    // §13.3.1.4: no ACK for our 2xx: the UAS core ends the dialog.
                    if let Some(c) = call {
                        warn!(call = %self.call_name(c), "no ACK for 2xx from the caller; ending the call");
                        self.end_call(c, "no ACK from caller", None, now);
                    }
                }
                TransactionEvent::Timeout | TransactionEvent::TransportError => {}
                TransactionEvent::Terminated => {
                    if let Some((key, _)) = self.servers.remove(&sid) {
                        self.server_ids.remove(&key);
                    }
                }
            }
        }
        let _ = now;
    }

    fn call_name(&self, c: CallRef) -> String {
        self.calls
            .get(&c)
            .map(|e| e.call.id.clone())
            .unwrap_or_else(|| format!("#{c}"))
    }
}

// ---------------------------------------------------------------------- new calls
impl Core {
    fn on_invite(&mut self, sid: u64, req: Req, flow: Flow, now: Instant) {
        // 100 Trying at once (§17.2.1): the caller stops retransmitting while we route.
        self.respond(sid, 100, None, vec![], None, now);
        if self.draining {
            let direction = match self.routing.classify_source(flow.remote) {
                Some(Origin::AiProvider(_)) => "outbound",
                Some(Origin::Carrier(_)) => "inbound",
                None => "unknown",
            };
            self.metrics.calls.inc((direction, "refused"));
            return self.reject(sid, 503, "Draining", "holdfast is draining", now);
        }
        // Max-Forwards (§16.3 step 3): we forward this request, so 0 cannot go further.
        let mf = req.max_forwards.unwrap_or(70);
        if mf == 0 {
            return self.respond(sid, 483, None, vec![], None, now);
        }
        // RFC 4028 §8.1 / §9: an interval below our Min-SE is refused with 422.
        if let Some(se) = req.session_expires {
            if se.interval < self.settings.min_se {
                let h = vec![(
                    "Min-SE".to_string(),
                    self.settings.min_se.as_secs().to_string(),
                )];
                return self.respond(sid, 422, None, h, None, now);
            }
        }
        let origin = self.routing.classify_source(flow.remote);
        let callee = crate::routing::dialed_number(if req.uri_user.is_empty() {
            &req.to_user
        } else {
            &req.uri_user
        });
        let caller = crate::routing::dialed_number(&req.from_user);
        let (direction, origin_id, rule) = match &origin {
            Some(Origin::Carrier(id)) => (
                Direction::Inbound,
                id.clone(),
                self.routing.match_inbound(id, &callee, &caller).cloned(),
            ),
            Some(Origin::AiProvider(id)) => (
                Direction::Outbound,
                id.clone(),
                self.routing.match_outbound(id, &callee, &caller).cloned(),
            ),
            None => {
                // The guard answers unknown sources before this (drop or a stateless 403).
                debug!(remote = %flow.remote, callee, "INVITE from an unknown source");
                self.metrics.calls.inc(("unknown", "refused"));
                return self.reject(
                    sid,
                    403,
                    "Forbidden",
                    "source is not a known carrier or provider",
                    now,
                );
            }
        };
        let Some(rule) = rule else {
            info!(remote = %flow.remote, callee, origin = %origin_id, "no route");
            let origin = origin_id.to_string();
            let refusal = ops::Refusal {
                direction,
                origin: &origin,
                caller: &caller,
                callee: &callee,
                rule: None,
            };
            self.refused(None, &refusal, 404, "no route", now);
            return self.reject(sid, 404, "Not Found", "no route for the number", now);
        };
        let (origin, rule_name) = (origin_id.to_string(), rule.name());
        let refusal = ops::Refusal {
            direction,
            origin: &origin,
            caller: &caller,
            callee: &callee,
            rule: Some((&rule_name, &rule.regions)),
        };
        let seed = self.settings.seed.map_or_else(
            || self.ids.next_u64(),
            |s| s.wrapping_add(self.stats.calls_total),
        );
        let view = View {
            health: &self.health,
            targets: &self.targets,
            cordoned: &self.cordoned,
            now,
        };
        let plan = self.routing.plan(&rule, &view, seed);
        let id = self.call_ids.next_id();
        self.stats.calls_total += 1;
        if plan.targets.is_empty() && plan.wait_until.is_none() {
            let reason = plan
                .reason
                .clone()
                .unwrap_or_else(|| "no candidate available".into());
            info!(call = %id, callee, rule = %rule.name(), "refused: {reason}");
            self.stats.calls_failed += 1;
            self.refused(Some(&id), &refusal, 503, &reason, now);
            return self.reject(sid, 503, "Service Unavailable", &reason, now);
        }
        let cref = self.new_id();
        let mut media = CallMedia::new(
            cref,
            self.media_params(direction, &origin_id),
            self.ids.next_u64(),
        );
        // Each leg's relay sockets bind in its peer's address family: the caller's from its
        // signalling address (its SDP, if it has one, decides in `offer`), the callee's from
        // the first SIP candidate's address (a later attempt elsewhere moves it there).
        media.set_peer(Side::A, flow.remote.ip());
        let callee_ip = self
            .first_sip_destination(&plan)
            .unwrap_or_else(|| flow.remote.ip());
        media.set_peer(Side::B, callee_ip);
        let mut offer = None;
        let mut binding = false;
        if !req.body.is_empty() {
            if !is_sdp(req.content_type.as_deref()) {
                self.stats.calls_failed += 1;
                let why = "the offer is not application/sdp";
                self.refused(Some(&id), &refusal, 415, why, now);
                let h = vec![("Accept".to_string(), ACCEPT.to_string())];
                return self.respond(sid, 415, None, h, None, now);
            }
            let mut cmds = Vec::new();
            match media.offer(Side::A, &req.body, &mut self.ports, &mut cmds) {
                Ok(body) => {
                    self.media_out.extend(cmds);
                    binding = media.binding();
                    offer = Some(body);
                }
                Err(e) => {
                    self.count_media_error(&e);
                    let (status, reason) = e.status();
                    info!(call = %id, callee, "refused: {e}");
                    self.stats.calls_failed += 1;
                    self.refused(Some(&id), &refusal, status, &e.to_string(), now);
                    return self.reject(sid, status, reason, &e.to_string(), now);
                }
            }
        }
        let local_tag = self.ids.tag();
        let a = Leg {
            call_id: req.call_id.clone(),
            local_tag: local_tag.clone(),
            remote_tag: req.from_tag.clone(),
            local_uri: req.to.clone(),
            remote_uri: req.from.clone(),
            remote_target: req.contact.clone().unwrap_or_else(|| req.from.clone()),
            route_set: req.record_route.clone(),
            local_cseq: 0,
            remote_cseq: Some(req.cseq),
            flow,
            peer_allows_update: req.allows_update,
            session_timer: None,
            remote_sdp: (!req.body.is_empty()).then(|| req.body.clone()),
            remote_sdp_type: req.content_type.clone(),
        };
        let call = Call {
            id: id.clone(),
            direction,
            origin: origin_id.to_string(),
            rule: rule.name(),
            regions: rule.regions.clone(),
            caller: caller.clone(),
            callee: callee.clone(),
            state: CallState::Routing,
            a,
            b: None,
            candidates: candidates(&plan),
            next_candidate: 0,
            fail_open: plan.fail_open,
            attempts: Vec::new(),
            pinned: None,
            early_media: false,
            cancelled: false,
            offer_type: offer.as_ref().map(|_| ACCEPT.to_string()),
            offer,
            max_forwards: (mf - 1).min(self.settings.max_forwards),
            passthrough_headers: req.passthrough.clone(),
            end_reason: None,
            media: Some(media),
            reroutes: Vec::new(),
            ws: None,
            transcript: Vec::new(),
            transfer_to: None,
        };
        info!(
            call = %id, direction = ?direction, origin = %origin_id, caller, callee,
            rule = %rule.name(), candidates = ?call.candidates.iter().map(|c| c.target.as_str()).collect::<Vec<_>>(),
            fail_open = plan.fail_open, panic = plan.panic, "new call"
        );
        let wait = plan.wait_until.filter(|_| plan.targets.is_empty());
        if let Some((key, e)) = self.servers.get_mut(&sid) {
            e.to_tag = Some(local_tag.clone());
            e.call = Some(cref);
            let key = key.clone();
            self.dialogs
                .insert((req.call_id.clone(), local_tag), (cref, Side::A));
            self.calls.insert(
                cref,
                CallEntry {
                    call,
                    after_bind: binding.then_some(AfterBind::Route),
                    a_invite: key,
                    b_invite: None,
                    deadlines: HashMap::new(),
                    pending_ack: None,
                    reinvite_in_progress: false,
                    byes_outstanding: 0,
                    counted_target: None,
                    b_ack: None,
                    refuse: None,
                    reroute_started: None,
                    kept: None,
                    liveness: Default::default(),
                    early_failure: None,
                    started: now,
                    answered_at: None,
                    final_status: None,
                    ended_by: None,
                    ended_at: None,
                    waiting: wait.map(|_| (rule.clone(), seed)),
                },
            );
        }
        if let Some(until) = wait {
            info!(
                call = %id, rule = %rule.name(), wait_ms = until.saturating_duration_since(now).as_millis() as u64,
                "waiting for the rule's targets to resolve (first resolution since start or reload)"
            );
            return self.set_deadline(cref, CallTimer::Resolve, until);
        }
        self.note_plan(&rule.name(), &plan);
        if binding {
            // Routed once the shell has bound the relays (`relay_bound`).
            return;
        }
        self.next_attempt(cref, now);
    }

    /// Plans call `c` that waited for its rule's targets to resolve: tries them when one
    /// is usable now, waits on while others still resolve, refuses (503) otherwise.
    fn replan(&mut self, c: CallRef, now: Instant) {
        let Some(entry) = self.calls.get(&c) else {
            return;
        };
        let Some((rule, seed)) = entry.waiting.clone() else {
            return;
        };
        if entry.call.cancelled {
            return;
        }
        let view = View {
            health: &self.health,
            targets: &self.targets,
            cordoned: &self.cordoned,
            now,
        };
        let plan = self.routing.plan(&rule, &view, seed);
        if plan.targets.is_empty() {
            if let Some(until) = plan.wait_until.filter(|&u| u > now) {
                return self.set_deadline(c, CallTimer::Resolve, until);
            }
        }
        self.clear_deadline(c, CallTimer::Resolve);
        let Some(entry) = self.calls.get_mut(&c) else {
            return;
        };
        entry.waiting = None;
        entry.call.candidates = candidates(&plan);
        entry.call.fail_open = plan.fail_open;
        let id = entry.call.id.clone();
        if plan.targets.is_empty() {
            let why = plan
                .reason
                .unwrap_or_else(|| "no candidate available".into());
            return self.routing_exhausted_because(c, Some(&why), now);
        }
        info!(
            call = %id, rule = %rule.name(),
            candidates = ?plan.targets.iter().map(|t| t.as_str()).collect::<Vec<_>>(),
            fail_open = plan.fail_open, panic = plan.panic, "targets resolved; routing"
        );
        self.note_plan(&rule.name(), &plan);
        if self.calls.get(&c).is_some_and(|e| e.after_bind.is_some()) {
            return; // routed once the shell has bound the relays (`relay_bound`)
        }
        self.next_attempt(c, now);
    }

    /// Counts and logs a plan that overrode breakers: panic mode (every usable target of the
    /// rule ejected) and the ejection cap. Logged when a rule enters or leaves that state,
    /// not per call.
    fn note_plan(&mut self, rule: &str, plan: &Plan) {
        if plan.targets.is_empty() {
            return;
        }
        if plan.panic {
            self.metrics.panic_plans.inc(rule.to_owned());
            if self.panic_rules.insert(rule.to_owned()) {
                warn!(
                    rule, targets = ?plan.targets.iter().map(|t| t.as_str()).collect::<Vec<_>>(),
                    "panic mode: every usable target of the rule is ejected by its circuit breaker; trying them anyway"
                );
            }
        } else if self.panic_rules.remove(rule) {
            info!(
                rule,
                "panic mode over: the rule has a target its breaker lets through again"
            );
        }
        if !plan.capped.is_empty() {
            self.metrics.capped_plans.inc(rule.to_owned());
        }
        let before = self.capped_rules.get(rule).map_or(&[][..], Vec::as_slice);
        if before != plan.capped.as_slice() {
            if plan.capped.is_empty() {
                info!(
                    rule,
                    "no target kept in rotation against its open breaker any more"
                );
                self.capped_rules.remove(rule);
            } else {
                warn!(
                    rule, targets = ?plan.capped.iter().map(|t| t.as_str()).collect::<Vec<_>>(),
                    max_ejection_percent = self.config.health.breaker.max_ejection_percent,
                    "breaker open, but kept in rotation: no more of the rule's targets may be ejected"
                );
                self.capped_rules
                    .insert(rule.to_owned(), plan.capped.clone());
            }
        }
    }

    /// A final response that ends a call before it exists; `why` goes in a Reason header
    /// (RFC 3326) so the caller's logs say what happened.
    fn reject(&mut self, sid: u64, status: u16, reason: &str, why: &str, now: Instant) {
        let text = why.replace('"', "'");
        let h = vec![(
            "Reason".to_string(),
            format!("SIP;cause={status};text=\"{text}\""),
        )];
        self.respond(sid, status, Some(reason), h, None, now);
    }

    fn set_deadline(&mut self, c: CallRef, timer: CallTimer, at: Instant) {
        if let Some(e) = self.calls.get_mut(&c) {
            e.deadlines.insert(timer, at);
            self.arm(at, TimerRef::Call(c, timer));
        }
    }

    fn clear_deadline(&mut self, c: CallRef, timer: CallTimer) {
        if let Some(e) = self.calls.get_mut(&c) {
            e.deadlines.remove(&timer);
        }
    }

    /// What a provisional or answer of call `c`'s attempt tells the breaker. An AI
    /// provider's call can still fail mid-call, so its setup only proves the provider alive;
    /// the call's end (`end_call`) or its mid-call failure (`reroute`) is its outcome.
    fn progress(&self, c: CallRef, outcome: AttemptOutcome) -> AttemptOutcome {
        match self.calls.get(&c).map(|e| e.call.direction) {
            Some(Direction::Inbound) => AttemptOutcome::Alive,
            _ => outcome,
        }
    }

    fn count_target(&mut self, c: CallRef, target: Option<TargetId>) {
        let Some(e) = self.calls.get_mut(&c) else {
            return;
        };
        if let Some(old) = e.counted_target.take() {
            if let Some(t) = self.targets.get_mut(&old) {
                t.active_calls = t.active_calls.saturating_sub(1);
            }
        }
        if let Some(new) = target {
            if let Some(t) = self.targets.get_mut(&new) {
                t.active_calls += 1;
            }
            e.counted_target = Some(new);
        }
    }

    /// Tries the next candidate, or answers the caller 503 when none is left.
    fn next_attempt(&mut self, c: CallRef, now: Instant) {
        loop {
            let Some(entry) = self.calls.get(&c) else {
                return;
            };
            let call = &entry.call;
            if call.cancelled {
                return;
            }
            let Some(cand) = call.candidates.get(call.next_candidate).cloned() else {
                if call.state == CallState::Rerouting {
                    return self.reroute_exhausted(c, now);
                }
                return self.routing_exhausted(c, now);
            };
            let fail_open = call.fail_open;
            let ignore_breaker = cand.ignore_breaker;
            let failed_mid_call = call.failed_mid_call(&cand.target);
            let target = TargetId::from(cand.target.as_str());
            if let Some(e) = self.calls.get_mut(&c) {
                e.call.next_candidate += 1;
            }
            if failed_mid_call {
                debug!(call = %self.call_name(c), target_id = %target, "skipping candidate: failed earlier in this call");
                continue;
            }
            // Health may have changed since the plan was made (a breaker opened during the
            // previous attempt): skip targets that became unavailable, unless failing open;
            // a target planned in spite of its breaker (panic mode, the ejection cap) is only
            // skipped when its health checks say down.
            let available = fail_open
                || if ignore_breaker {
                    self.health.takes_calls(&target)
                } else {
                    self.health.is_available(&target, now)
                };
            let dest = if available {
                self.health
                    .destinations(&target)
                    .into_iter()
                    .next()
                    .or_else(|| {
                        self.targets
                            .get(&target)
                            .and_then(|t| t.destinations.first().copied())
                    })
            } else {
                None
            };
            let at_capacity = self
                .config
                .target(&target)
                .and_then(|t| t.max_calls)
                .is_some_and(|m| self.targets.get(&target).map_or(0, |t| t.active_calls) >= m);
            match dest {
                Some(dest) if available && !at_capacity => {
                    return self.start_attempt(c, target, dest, now);
                }
                _ => {
                    let why = if at_capacity {
                        "at capacity"
                    } else {
                        "unavailable"
                    };
                    debug!(call = %self.call_name(c), target_id = %target, "skipping candidate: {why}");
                }
            }
        }
    }

    /// The address of the first candidate of `plan` reached over SIP (not a WebSocket
    /// provider, whose bridge is local): where the callee's leg will most likely go.
    fn first_sip_destination(&self, plan: &Plan) -> Option<std::net::IpAddr> {
        plan.targets.iter().find_map(|t| {
            if self.config.target(t).is_none_or(|c| c.ws.is_some()) {
                return None;
            }
            self.health
                .destinations(t)
                .into_iter()
                .next()
                .or_else(|| {
                    self.targets
                        .get(t)
                        .and_then(|s| s.destinations.first().copied())
                })
                .map(|d| d.addr.ip())
        })
    }

    fn start_attempt(&mut self, c: CallRef, target: TargetId, dest: Destination, now: Instant) {
        if let Some(ws) = self.config.target(&target).and_then(|t| t.ws.clone()) {
            return self.start_ws_attempt(c, target, dest, ws, now);
        }
        let Some(local) = self.listener_for(&dest) else {
            warn!(target_id = %target, addr = %dest.addr, "no listener for this transport/address family");
            if let Some(e) = self.calls.get_mut(&c) {
                e.call.attempts.push(Attempt {
                    target: target.to_string(),
                    remote: dest.addr,
                    transport: dest.transport,
                    outcome: Some("no local listener for its transport".into()),
                    provisional: false,
                });
            }
            return self.next_attempt(c, now);
        };
        // The callee's leg binds in this target's address family (when holdfast has media
        // there): its relay sockets move first, and the INVITE waits for them.
        let moved = self
            .with_media(c, |m, _, out| m.move_peer(Side::B, dest.addr.ip(), out))
            .unwrap_or(false);
        if moved {
            let family = IpFamily::of(dest.addr.ip());
            info!(call = %self.call_name(c), target_id = %target, family = family.as_str(),
                "media: the callee's leg moves to its target's address family");
            if let Some(e) = self.calls.get_mut(&c) {
                e.after_bind = Some(AfterBind::Attempt { target, dest });
            }
            return;
        }
        let flow = Flow {
            transport: dest.transport,
            local,
            remote: dest.addr,
        };
        let Some(tcfg) = self.config.target(&target).cloned() else {
            return self.next_attempt(c, now);
        };
        // Leg B latches by this target's rules from its first SDP on. A previous attempt's
        // callee may have sent SDP or packets: the new one latches afresh (unless a re-route
        // keeps the old AI leg, whose media still flows there until the new one answers).
        let latching = tcfg.latching;
        let again = self
            .calls
            .get(&c)
            .is_some_and(|e| !e.call.attempts.is_empty() && e.kept.is_none());
        self.with_media(c, |m, _, out| {
            m.set_latching(Side::B, latching);
            if again {
                m.reset_peer(Side::B, out);
            }
        });
        let call_id = self.ids.call_id(&self.local_host(local));
        let tag = self.ids.tag();
        let branch = self.ids.branch();
        let host = self.local_host(local);
        let contact = self.contact(&flow);
        let via = self.via(&flow, &branch);
        let Some(entry) = self.calls.get_mut(&c) else {
            return;
        };
        let call = &mut entry.call;
        // The Request-URI: the target's own user part when it has one (an AI agent's
        // address), otherwise the dialed number at the target.
        let target_host = tcfg.uri.host_port().to_string();
        // A transfer (no AI provider left) dials its own number.
        let callee = call
            .transfer_to
            .clone()
            .unwrap_or_else(|| call.callee.clone());
        let ruri_user = tcfg.uri.user.clone().unwrap_or_else(|| callee.clone());
        let transport_param = match tcfg.uri.transport {
            Some(Transport::Tcp) => ";transport=tcp",
            _ => "",
        };
        let uri = format!("sip:{ruri_user}@{target_host}{transport_param}");
        let display = call
            .a
            .remote_uri
            .split('<')
            .next()
            .map(str::trim)
            .filter(|d| !d.is_empty() && call.a.remote_uri.contains('<'))
            .map(|d| format!("{d} "))
            .unwrap_or_default();
        let from_uri = format!("{display}<sip:{}@{host}>", call.caller);
        let to_uri = format!("<sip:{callee}@{target_host}>");
        let mut headers = call.passthrough_headers.clone();
        headers.extend(tcfg.headers.iter().cloned());
        headers.push(("X-Holdfast-Call".into(), call.id.clone()));
        if let Some(last) = call.reroutes.last() {
            // A new AI leg of a call already in progress: tell the provider what it takes
            // over (the carrier leg's caller and callee, and how it got here).
            headers.push((
                "X-Holdfast-Reroute-Count".into(),
                call.reroutes.len().to_string(),
            ));
            headers.push(("X-Holdfast-Rerouted-From".into(), last.from.clone()));
            headers.push((
                "X-Holdfast-Reroute-Trigger".into(),
                last.trigger.as_str().into(),
            ));
            headers.push(("X-Holdfast-Caller".into(), call.caller.clone()));
            headers.push(("X-Holdfast-Callee".into(), call.callee.clone()));
        }
        headers.push(("Allow".into(), ALLOW.into()));
        headers.push(("Supported".into(), SUPPORTED.into()));
        headers.push((
            "Session-Expires".into(),
            format!("{};refresher=uac", self.settings.session_expires.as_secs()),
        ));
        headers.push(("Min-SE".into(), self.settings.min_se.as_secs().to_string()));
        headers.push(("User-Agent".into(), self.settings.user_agent.clone()));
        let out = OutRequest {
            method: "INVITE".into(),
            uri: uri.clone(),
            via,
            routes: vec![],
            max_forwards: call.max_forwards,
            from: format!("{from_uri};tag={tag}"),
            to: to_uri.clone(),
            call_id: call_id.clone(),
            cseq: 1,
            contact: Some(contact),
            headers,
            body: call
                .offer
                .clone()
                .map(|b| (call.offer_type.clone().unwrap_or_else(|| ACCEPT.into()), b)),
        };
        call.b = Some(Leg {
            call_id: call_id.clone(),
            local_tag: tag.clone(),
            remote_tag: None,
            local_uri: from_uri,
            remote_uri: to_uri,
            remote_target: uri,
            route_set: vec![],
            local_cseq: 1,
            remote_cseq: None,
            flow,
            peer_allows_update: false,
            session_timer: None,
            remote_sdp: None,
            remote_sdp_type: None,
        });
        let attempt = call.attempts.len();
        call.attempts.push(Attempt {
            target: target.to_string(),
            remote: dest.addr,
            transport: dest.transport,
            outcome: None,
            provisional: false,
        });
        info!(call = %call.id, target_id = %target, remote = %dest.addr, attempt = attempt + 1, "trying");
        let bytes = out.to_bytes();
        let key = ClientKey {
            branch,
            method: "INVITE".into(),
        };
        entry.b_invite = Some(key.clone());
        self.dialogs.insert((call_id, tag), (c, Side::B));
        // A half-open breaker lets exactly one probe call through; this marks it taken.
        self.health.handle_attempt_started(&target, now);
        self.count_target(c, Some(target));
        let deadline = now + self.settings.attempt_timeout;
        self.set_deadline(c, CallTimer::Attempt(attempt), deadline);
        let tx = ClientInvite::new(
            bytes.clone(),
            reliability(flow.transport),
            self.settings.timers,
            now,
        );
        self.new_client(
            key,
            Transaction::ClientInvite(tx),
            flow,
            bytes,
            Purpose::Attempt { call: c, attempt },
            now,
        );
    }

    fn new_client(
        &mut self,
        key: ClientKey,
        tx: Transaction,
        flow: Flow,
        request: Bytes,
        purpose: Purpose,
        now: Instant,
    ) {
        let id = self.new_id();
        self.client_ids.insert(key.clone(), id);
        self.clients.insert(
            id,
            (
                key,
                ClientEntry {
                    tx,
                    flow,
                    request,
                    purpose,
                    provisional: false,
                    cancel_pending: false,
                    armed: None,
                },
            ),
        );
        self.drive_client(id, now);
    }

    /// Every candidate failed (or none was usable): 503 to the caller with a Reason naming
    /// what happened to each attempt.
    fn routing_exhausted(&mut self, c: CallRef, now: Instant) {
        self.routing_exhausted_because(c, None, now)
    }

    /// [`Self::routing_exhausted`], with the plan's reason when no attempt was made.
    fn routing_exhausted_because(&mut self, c: CallRef, reason: Option<&str>, now: Instant) {
        let Some(e) = self.calls.get(&c) else { return };
        let mut why = String::new();
        if e.call.attempts.is_empty() {
            why.push_str(reason.unwrap_or("no candidate was available"));
        } else {
            why.push_str("all candidates failed:");
            for a in &e.call.attempts {
                let _ = write!(
                    why,
                    " {} {};",
                    a.target,
                    a.outcome.as_deref().unwrap_or("?")
                );
            }
            why.pop();
        }
        let sid = self.server_ids.get(&e.a_invite).copied();
        info!(call = %e.call.id, "refused: {why}");
        self.stats.calls_failed += 1;
        if let Some(sid) = sid {
            self.reject(sid, 503, "Service Unavailable", &why, now);
        }
        self.finish_call(c, &why, now);
    }
}

// ---------------------------------------------------------------------- responses
impl Core {
    fn on_response(&mut self, resp: Resp, now: Instant) {
        let key = ClientKey {
            branch: resp.branch.clone(),
            method: resp.cseq_method.clone(),
        };
        let Some(&id) = self.client_ids.get(&key) else {
            // No transaction: a stray or very late response (RFC 4475 bcast). Dropped.
            debug!(status = resp.status, branch = %resp.branch, "stray response dropped");
            return;
        };
        let deliver = {
            let Some((_, e)) = self.clients.get_mut(&id) else {
                return;
            };
            match &mut e.tx {
                Transaction::ClientInvite(t) => {
                    let request = e.request.clone();
                    let ack_resp = resp.clone();
                    t.handle_response(resp.status, now, || non2xx_ack(&request, &ack_resp))
                }
                Transaction::ClientNonInvite(t) => t.handle_response(resp.status, now),
                // A client entry always holds a client transaction.
                Transaction::ServerInvite(_) | Transaction::ServerNonInvite(_) => Deliver::Absorb,
            }
        };
        if matches!(deliver, Deliver::ToTu) {
            if let Some((_, e)) = self.clients.get_mut(&id) {
                if resp.status < 200 && !e.provisional {
                    e.provisional = true;
                    if e.cancel_pending {
                        e.cancel_pending = false;
                        self.send_cancel(id, now);
                    }
                }
            }
            self.on_client_response(id, resp, now);
        }
        self.drive_client(id, now);
    }

    fn drive_client(&mut self, id: u64, now: Instant) {
        let Some((_, e)) = self.clients.get_mut(&id) else {
            return;
        };
        let (events, next) = flush(&mut e.tx, &e.flow, &mut self.out);
        if let Some(at) = next.filter(|at| e.armed != Some(*at)) {
            e.armed = Some(at);
            self.arm(at, TimerRef::Client(id));
        }
        for ev in events {
            match ev {
                TransactionEvent::Timeout | TransactionEvent::TransportError => {
                    let what = if ev == TransactionEvent::Timeout {
                        "timeout"
                    } else {
                        "transport error"
                    };
                    self.on_client_failure(id, what, now);
                }
                TransactionEvent::NoAckFor2xx => {}
                TransactionEvent::Terminated => {
                    if let Some((key, e)) = self.clients.remove(&id) {
                        self.client_ids.remove(&key);
                        if let Purpose::Bye { call } = e.purpose {
                            self.bye_done(call, now);
                        }
                    }
                }
            }
        }
    }

    /// A client transaction timed out (Timer B/F) or its transport failed.
    fn on_client_failure(&mut self, id: u64, what: &str, now: Instant) {
        let Some((_, e)) = self.clients.get(&id) else {
            return;
        };
        let purpose = e.purpose.clone();
        let flow = e.flow;
        match purpose {
            Purpose::Attempt { call, attempt } => {
                self.attempt_failed(call, attempt, 408, what, AttemptOutcome::Timeout, now);
            }
            Purpose::Relay { call, to, server } => {
                let ai = self.is_ai_leg(call, to);
                let method = self
                    .clients
                    .get(&id)
                    .map(|(k, _)| k.method.clone())
                    .unwrap_or_default();
                if let Some(e) = self.calls.get_mut(&call) {
                    e.reinvite_in_progress = false;
                }
                if ai && matches!(method.as_str(), "INVITE" | "UPDATE") {
                    // The AI leg never answered a re-offer: it is replaced, and the carrier
                    // keeps its session (the re-route answers this request 500, not 408,
                    // which would end the carrier's dialog).
                    let detail = format!("{method} {what}");
                    if !self.reroute(call, RerouteTrigger::Reinvite, detail.clone(), true, now) {
                        if let Some(&sid) = self.server_ids.get(&server) {
                            self.respond(sid, 500, Some("AI Leg Failed"), vec![], None, now);
                        }
                        self.with_media(call, |m, _, out| m.offer_rejected(to.other(), out));
                        self.end_call(call, &detail, None, now);
                    }
                    return;
                }
                // The other side did not answer a relayed request: 408 back to the sender.
                if let Some(&sid) = self.server_ids.get(&server) {
                    self.respond(sid, 408, None, vec![], None, now);
                }
            }
            Purpose::Refresh { call, side } => {
                self.check_done(call, side);
                let ai = self.is_ai_leg(call, side);
                if ai {
                    if let Some((_, e)) = self.clients.get_mut(&id) {
                        e.purpose = Purpose::Ignore;
                    }
                    let detail = format!("session refresh {what}");
                    if self.reroute(call, RerouteTrigger::Reinvite, detail, true, now) {
                        return;
                    }
                }
                // §10: a refresh that fails with timeout ends the session.
                warn!(call = %self.call_name(call), ?side, remote = %flow.remote, "session refresh {what}; ending the call");
                self.end_call(call, "session refresh failed", None, now);
            }
            Purpose::Bye { call } => {
                if let Some((_, e)) = self.clients.get_mut(&id) {
                    e.purpose = Purpose::Ignore;
                }
                self.bye_done(call, now);
            }
            Purpose::Check { call, side, .. } => {
                if let Some((_, e)) = self.clients.get_mut(&id) {
                    e.purpose = Purpose::Ignore;
                }
                // A timeout is the check's own deadline's business (it comes first); a
                // transport error (ICMP, a refused or reset connection) is a confirmed one.
                if what != "timeout" {
                    self.check_failed(call, side, &format!("its OPTIONS check: {what}"), now);
                }
            }
            // The health table times probes out itself, after ping_timeout.
            Purpose::Ignore | Purpose::Abandoned { .. } | Purpose::Probe { .. } => {}
        }
    }

    fn on_client_response(&mut self, id: u64, resp: Resp, now: Instant) {
        let Some((_, e)) = self.clients.get(&id) else {
            return;
        };
        match e.purpose.clone() {
            Purpose::Attempt { call, attempt } => self.attempt_response(call, attempt, resp, now),
            Purpose::Abandoned { leg } => {
                if (200..300).contains(&resp.status) {
                    // A late answer on an attempt we gave up on: acknowledge and hang up.
                    let mut leg = *leg;
                    self.learn_dialog(&mut leg, &resp);
                    self.send_ack(&leg, resp.cseq, None);
                    let flow = leg.flow;
                    self.send_in_dialog(&mut leg, "BYE", vec![], None, Purpose::Ignore, flow, now);
                }
            }
            Purpose::Relay { call, to, server } => self.relay_response(call, to, server, resp, now),
            Purpose::Refresh { call, side } => {
                if resp.status >= 200 {
                    // As a liveness check, any answer but the failures below proves the
                    // dialog's peer there.
                    let failed = resp.status == 481
                        || resp.status == 408
                        || (resp.status >= 500 && self.is_ai_leg(call, side));
                    if failed {
                        self.check_done(call, side);
                    } else {
                        let how = format!("answered its session refresh with {}", resp.status);
                        self.check_alive(call, side, &how);
                    }
                    if (200..300).contains(&resp.status) {
                        if resp.cseq_method == "INVITE" {
                            if let Some(leg) = self.leg(call, side).cloned() {
                                self.send_ack(&leg, resp.cseq, None);
                            }
                            // The answer to the SDP our refresh re-offered on this leg.
                            if !resp.body.is_empty() {
                                if let Some(Err(e)) = self.with_media(call, |m, _, out| {
                                    m.local_answer(side, &resp.body, out)
                                }) {
                                    warn!(call = %self.call_name(call), ?side, "answer to refresh ignored: {e}");
                                }
                            }
                        }
                        self.arm_session_timer(call, side, resp.session_expires, true, now);
                    } else if (resp.status == 481 || resp.status == 408 || resp.status >= 500)
                        && self.is_ai_leg(call, side)
                        && self.reroute(
                            call,
                            RerouteTrigger::Reinvite,
                            format!("session refresh answered {} {}", resp.status, resp.reason),
                            // A 5xx comes from a user agent still there: it keeps the call
                            // until another provider takes it.
                            resp.status < 500,
                            now,
                        )
                    {
                        // The AI leg's session is gone or failing: a new provider takes over.
                    } else if resp.status == 481 || resp.status == 408 {
                        // RFC 4028 §10: the session is gone on that side.
                        self.end_call(
                            call,
                            &format!("refresh answered {}", resp.status),
                            None,
                            now,
                        );
                    } else {
                        // Other failures (e.g. 491, 488): keep the call, retry at the next
                        // refresh point.
                        self.arm_session_timer(call, side, None, true, now);
                    }
                }
            }
            Purpose::Bye { call } => {
                if resp.status >= 200 {
                    // The BYE is answered: the call is over now, not after Timer K.
                    if let Some((_, e)) = self.clients.get_mut(&id) {
                        e.purpose = Purpose::Ignore;
                    }
                    self.bye_done(call, now);
                }
            }
            Purpose::Ignore => {}
            Purpose::Check {
                call,
                side,
                in_dialog,
            } => {
                if resp.status >= 200 {
                    if let Some((_, e)) = self.clients.get_mut(&id) {
                        e.purpose = Purpose::Ignore;
                    }
                    self.check_answered(call, side, in_dialog, resp.status, &resp.reason, now);
                }
            }
            Purpose::Probe { probe } => {
                if resp.status >= 200 {
                    let sent = self.health.probe_in_flight(probe);
                    if self.health.handle_probe_response(probe, resp.status, now) {
                        self.metrics.probe_rtt(sent, now);
                    }
                }
            }
        }
    }

    fn leg(&self, c: CallRef, side: Side) -> Option<&Leg> {
        let call = &self.calls.get(&c)?.call;
        match side {
            Side::A => Some(&call.a),
            Side::B => call.b.as_ref(),
        }
    }

    fn leg_mut(&mut self, c: CallRef, side: Side) -> Option<&mut Leg> {
        let call = &mut self.calls.get_mut(&c)?.call;
        match side {
            Side::A => Some(&mut call.a),
            Side::B => call.b.as_mut(),
        }
    }

    /// Records what a dialog-forming response tells us about the peer (§12.1.2).
    fn learn_dialog(&self, leg: &mut Leg, resp: &Resp) {
        if leg.remote_tag.is_none() {
            leg.remote_tag = resp.to_tag.clone();
        }
        if let Some(c) = &resp.contact {
            leg.remote_target = c.clone();
        }
        if (200..300).contains(&resp.status) || leg.route_set.is_empty() {
            // §12.1.2: the route set is the Record-Route list in reverse.
            leg.route_set = resp.record_route.iter().rev().cloned().collect();
        }
        leg.peer_allows_update |= resp.allows_update;
        if !resp.body.is_empty() {
            leg.remote_sdp = Some(resp.body.clone());
            leg.remote_sdp_type = resp.content_type.clone();
        }
    }

    fn attempt_response(&mut self, c: CallRef, attempt: usize, resp: Resp, now: Instant) {
        let Some(entry) = self.calls.get_mut(&c) else {
            return;
        };
        if entry.call.attempts.len() != attempt + 1 {
            return; // an older attempt; handled as abandoned
        }
        let status = resp.status;
        if (200..300).contains(&status)
            && matches!(
                entry.call.state,
                CallState::Answered | CallState::Confirmed | CallState::Ending
            )
        {
            return self.extra_2xx(c, resp, now);
        }
        if status < 200 {
            if !entry.call.attempts[attempt].provisional {
                let at = now + self.settings.ring_timeout;
                entry.deadlines.insert(CallTimer::Ring(attempt), at);
                self.heap
                    .push(Reverse((at, TimerRef::Call(c, CallTimer::Ring(attempt)))));
            }
            let Some(entry) = self.calls.get_mut(&c) else {
                return;
            };
            entry.call.attempts[attempt].provisional = true;
            entry.deadlines.remove(&CallTimer::Attempt(attempt));
            if status == 100 {
                return;
            }
            let (target, dest) = attempt_target(&entry.call.attempts[attempt]);
            let mut leg = entry.call.b.take();
            let outcome = self.progress(c, AttemptOutcome::Provisional);
            self.health.handle_attempt(&target, &dest, outcome, now);
            if let Some(l) = leg.as_mut() {
                self.learn_dialog(l, &resp);
            }
            let entry = self.calls.get_mut(&c).expect("present");
            entry.call.b = leg;
            // The caller of a call being re-routed hears nothing of the new leg's progress.
            if entry.call.cancelled || entry.call.state == CallState::Rerouting {
                return;
            }
            // Early media: the callee's SDP, anchored for the caller. One we cannot use is
            // not relayed (the caller gets the provisional without it).
            let sdp = match self.callee_sdp(c, &resp) {
                Some(Ok(b)) => Some(b),
                Some(Err(e)) => {
                    self.count_media_error(&e);
                    warn!(call = %self.call_name(c), status, "SDP in provisional ignored: {e}");
                    None
                }
                None => None,
            };
            if sdp.is_some()
                && self.hold_until_bound(
                    c,
                    AfterBind::Provisional {
                        attempt,
                        resp: resp.clone(),
                    },
                )
            {
                return;
            }
            self.relay_provisional(c, attempt, &resp, sdp, now);
            return;
        }
        entry.deadlines.remove(&CallTimer::Attempt(attempt));
        entry.deadlines.remove(&CallTimer::Ring(attempt));
        if (200..300).contains(&status) {
            if entry.call.state == CallState::Rerouting {
                return self.reroute_answered(c, attempt, resp, now);
            }
            self.attempt_answered(c, attempt, resp, now);
            return;
        }
        let outcome = if (500..600).contains(&status) {
            AttemptOutcome::ServerError(status)
        } else {
            AttemptOutcome::Answered
        };
        self.attempt_failed(
            c,
            attempt,
            status,
            &format!("{status} {}", resp.reason),
            outcome,
            now,
        );
        let _ = resp;
    }

    /// A provisional of attempt `attempt` reaches the caller, with `sdp` (the callee's SDP
    /// anchored for the caller) when there is one to relay.
    fn relay_provisional(
        &mut self,
        c: CallRef,
        attempt: usize,
        resp: &Resp,
        sdp: Option<Vec<u8>>,
        now: Instant,
    ) {
        let status = resp.status;
        let has_sdp = sdp.is_some();
        let Some(entry) = self.calls.get_mut(&c) else {
            return;
        };
        let Some(a) = entry.call.attempts.get(attempt) else {
            return;
        };
        let (target, _) = attempt_target(a);
        entry.call.state = CallState::Early;
        if has_sdp {
            // Early media reached the caller: from here on the call belongs to this
            // target; no failover (the caller may already hear it).
            entry.call.early_media = true;
            entry.call.pinned = Some(target.to_string());
        }
        let sid = self.server_ids.get(&entry.a_invite).copied();
        let a_flow = entry.call.a.flow;
        let mut h = resp.passthrough.clone();
        h.push(("Contact".into(), self.contact(&a_flow)));
        h.push(("Allow".into(), ALLOW.into()));
        let body = sdp.map(|b| (ACCEPT.to_string(), b));
        if let Some(sid) = sid {
            self.respond(sid, status, Some(&resp.reason), h, body, now);
        }
    }

    /// A 2xx to the INVITE after the call was already answered: a retransmission on the
    /// pinned dialog gets our ACK again (§13.2.2.4; while we still wait for the caller's ACK
    /// it is left unanswered, the ACK follows the caller's); a 2xx from another fork
    /// (§13.2.2.4, a different To tag) is acknowledged and hung up.
    fn extra_2xx(&mut self, c: CallRef, resp: Resp, now: Instant) {
        let Some(entry) = self.calls.get(&c) else {
            return;
        };
        let Some(b) = entry.call.b.clone() else {
            return;
        };
        if resp.to_tag == b.remote_tag {
            if let Some(ack) = entry.b_ack.clone() {
                self.out.push_back(Transmit {
                    transport: b.flow.transport,
                    local: b.flow.local,
                    remote: b.flow.remote,
                    data: ack,
                });
            }
            return;
        }
        let mut fork = b;
        fork.remote_tag = resp.to_tag.clone();
        if let Some(ct) = &resp.contact {
            fork.remote_target = ct.clone();
        }
        info!(call = %self.call_name(c), tag = ?resp.to_tag, "answer from a second fork; hanging it up");
        self.send_ack(&fork, resp.cseq, None);
        let flow = fork.flow;
        self.send_in_dialog(&mut fork, "BYE", vec![], None, Purpose::Ignore, flow, now);
    }

    fn attempt_answered(&mut self, c: CallRef, attempt: usize, resp: Resp, now: Instant) {
        let Some(entry) = self.calls.get_mut(&c) else {
            return;
        };
        let (target, dest) = attempt_target(&entry.call.attempts[attempt]);
        self.health.handle_attempt(
            &target,
            &dest,
            self.progress(c, AttemptOutcome::Answered),
            now,
        );
        let Some(entry) = self.calls.get_mut(&c) else {
            return;
        };
        let mut b = match entry.call.b.take() {
            Some(b) => b,
            None => return,
        };
        self.learn_dialog(&mut b, &resp);
        let entry = self.calls.get_mut(&c).expect("present");
        entry.call.b = Some(b);
        if entry.call.cancelled {
            // CANCEL crossed with the 2xx (§9.1): acknowledge and hang up that leg.
            let b = entry.call.b.clone().expect("set above");
            self.send_ack(&b, resp.cseq, None);
            self.end_call(c, "answered after the caller cancelled", Some(Side::A), now);
            return;
        }
        // The callee's SDP, anchored for the caller. An answer we cannot relay ends the call:
        // acknowledge and hang up the callee, refuse the caller.
        let sdp = match self.callee_sdp(c, &resp) {
            Some(Ok(b)) => Some(b),
            None => None,
            Some(Err(e)) => return self.callee_answer_refused(c, attempt, &resp, &e, now),
        };
        if sdp.is_some()
            && self.hold_until_bound(
                c,
                AfterBind::Answered {
                    attempt,
                    resp: resp.clone(),
                },
            )
        {
            return;
        }
        self.callee_answered(c, attempt, resp, sdp, now);
    }

    /// The callee's 2xx SDP could not be used (`e`): acknowledge and hang up the callee,
    /// refuse the caller.
    fn callee_answer_refused(
        &mut self,
        c: CallRef,
        attempt: usize,
        resp: &Resp,
        e: &MediaError,
        now: Instant,
    ) {
        self.count_media_error(e);
        let Some(entry) = self.calls.get_mut(&c) else {
            return;
        };
        let Some(mut b) = entry.call.b.clone() else {
            return;
        };
        let target = entry
            .call
            .attempts
            .get(attempt)
            .map(|a| a.target.clone())
            .unwrap_or_default();
        let sid = self.server_ids.get(&entry.a_invite).copied();
        if let Some(a) = entry.call.attempts.get_mut(attempt) {
            a.outcome = Some(format!("{} {}", resp.status, resp.reason));
        }
        warn!(call = %entry.call.id, target_id = %target, "answer refused: {e}");
        self.send_ack(&b, resp.cseq, None);
        let flow = b.flow;
        self.send_in_dialog(
            &mut b,
            "BYE",
            vec![reason_header(&e.to_string())],
            None,
            Purpose::Ignore,
            flow,
            now,
        );
        let (status, reason) = e.status();
        self.stats.calls_failed += 1;
        if let Some(sid) = sid {
            self.reject(sid, status, reason, &e.to_string(), now);
        }
        self.finish_call(c, &format!("callee's SDP refused: {e}"), now)
    }

    /// The callee's 2xx of attempt `attempt` is accepted: the caller gets it with `sdp` (the
    /// callee's SDP anchored for the caller, if any).
    fn callee_answered(
        &mut self,
        c: CallRef,
        attempt: usize,
        resp: Resp,
        sdp: Option<Vec<u8>>,
        now: Instant,
    ) {
        let Some(entry) = self.calls.get_mut(&c) else {
            return;
        };
        let Some(a) = entry.call.attempts.get_mut(attempt) else {
            return;
        };
        a.outcome = Some(format!("{} {}", resp.status, resp.reason));
        let (target, _) = attempt_target(a);
        entry.b_invite = None;
        // Session timer on the B leg, from the callee's 2xx (RFC 4028 §7.2): absent means
        // the callee does not do session timers, and neither do we on that leg.
        self.arm_session_timer(c, Side::B, resp.session_expires, false, now);
        self.answer_caller(
            c,
            &target,
            (resp.status, &resp.reason),
            resp.passthrough.clone(),
            sdp,
            now,
        );
    }

    /// The B side answered call `c` (a SIP callee's 2xx, or a WebSocket AI leg coming up):
    /// the call is pinned to `target` and the caller gets `status` with the anchored `sdp`,
    /// our Contact and the A leg's session timer.
    fn answer_caller(
        &mut self,
        c: CallRef,
        target: &TargetId,
        (status, reason): (u16, &str),
        mut headers: Vec<(String, String)>,
        sdp: Option<Vec<u8>>,
        now: Instant,
    ) {
        let Some(entry) = self.calls.get_mut(&c) else {
            return;
        };
        entry.call.pinned = Some(target.to_string());
        entry.call.state = CallState::Answered;
        entry.answered_at = Some(now);
        self.stats.calls_answered += 1;
        self.metrics.attempts.inc((target.to_string(), "answered"));
        let call_id = entry.call.id.clone();
        let sid = self.server_ids.get(&entry.a_invite).copied();
        info!(call = %call_id, target_id = %target, "answered");
        // Session timer on the A leg, as we answer it (§9).
        let a_timer = self.a_leg_session_timer(c);
        let Some(entry) = self.calls.get_mut(&c) else {
            return;
        };
        let a_flow = entry.call.a.flow;
        headers.push(("Contact".into(), self.contact(&a_flow)));
        headers.push(("Allow".into(), ALLOW.into()));
        headers.push(("Supported".into(), SUPPORTED.into()));
        if let Some((interval, refresher, require)) = a_timer {
            headers.push((
                "Session-Expires".into(),
                format!(
                    "{};refresher={}",
                    interval.as_secs(),
                    refresher_param(refresher)
                ),
            ));
            if require {
                headers.push(("Require".into(), "timer".into()));
            }
        }
        let body = sdp.map(|b| (ACCEPT.to_string(), b));
        if let Some(sid) = sid {
            self.respond(sid, status, Some(reason), headers, body, now);
        }
        if let Some((interval, refresher, _)) = a_timer {
            let we_refresh = refresher == Refresher::Uas;
            self.set_session_timer(c, Side::A, interval, we_refresh, now);
        }
    }

    /// SDP from the callee in a response to the initial INVITE: the answer to the caller's
    /// offer, or (late offer: the INVITE had none) the callee's offer. Returns the anchored
    /// body for the caller; `None` when the response has no body.
    fn callee_sdp(&mut self, c: CallRef, resp: &Resp) -> Option<Result<Vec<u8>, MediaError>> {
        if resp.body.is_empty() {
            return None;
        }
        if !is_sdp(resp.content_type.as_deref()) {
            let t = resp.content_type.clone().unwrap_or_default();
            return Some(Err(MediaError::BadSdp(format!("body is {t}, not SDP"))));
        }
        let early_offer = self.calls.get(&c)?.call.offer.is_some();
        self.with_media(c, |m, alloc, out| {
            if early_offer {
                m.answer(Side::B, &resp.body, out)
            } else {
                m.offer(Side::B, &resp.body, alloc, out)
            }
        })
    }

    /// The A leg's session timer as we answer (RFC 4028 §9): honour the caller's interval
    /// and refresher when it supports timers; otherwise refresh it ourselves.
    /// Returns (interval, refresher, whether to add Require: timer).
    fn a_leg_session_timer(&self, c: CallRef) -> Option<(Duration, Refresher, bool)> {
        let e = self.calls.get(&c)?;
        let sid = self.server_ids.get(&e.a_invite)?;
        let (_, se) = self.servers.get(sid)?;
        let Ok(Message::Request(req)) = crate::sip::message::parse(&se.request) else {
            return None;
        };
        let req = Req::from_request(&req).ok()?;
        match req.session_expires {
            Some(se) if req.supports_timer => {
                let refresher = se.refresher.unwrap_or(Refresher::Uac);
                Some((se.interval, refresher, true))
            }
            Some(se) => Some((se.interval, Refresher::Uas, false)),
            None => Some((self.settings.session_expires, Refresher::Uas, false)),
        }
    }

    /// An attempt failed with `status` (408 for timeouts). Fails over when the routing
    /// policy allows it and the call has not reached the point of no return; otherwise the
    /// caller gets the status.
    fn attempt_failed(
        &mut self,
        c: CallRef,
        attempt: usize,
        status: u16,
        why: &str,
        outcome: AttemptOutcome,
        now: Instant,
    ) {
        let Some(entry) = self.calls.get_mut(&c) else {
            return;
        };
        if entry.call.attempts.len() != attempt + 1
            || entry.call.attempts[attempt].outcome.is_some()
        {
            return;
        }
        entry.call.attempts[attempt].outcome = Some(why.to_string());
        entry.deadlines.remove(&CallTimer::Attempt(attempt));
        entry.deadlines.remove(&CallTimer::Ring(attempt));
        let (target, dest) = attempt_target(&entry.call.attempts[attempt]);
        self.drop_ws_leg(c, why);
        let Some(entry) = self.calls.get_mut(&c) else {
            return;
        };
        let b = entry.call.b.take();
        if let Some(b) = b {
            self.dialogs
                .remove(&(b.call_id.clone(), b.local_tag.clone()));
        }
        let entry = self.calls.get_mut(&c).expect("present");
        entry.b_invite = None;
        let cancelled = entry.call.cancelled;
        let early = entry.call.early_media;
        let call_id = entry.call.id.clone();
        self.count_target(c, None);
        self.health.handle_attempt(&target, &dest, outcome, now);
        if self
            .calls
            .get(&c)
            .is_some_and(|e| e.call.state == CallState::Rerouting)
        {
            info!(call = %call_id, target_id = %target, "re-route attempt failed ({why}); trying the next provider");
            self.metrics.attempts.inc((target.to_string(), "failed"));
            self.metrics
                .failovers
                .inc((target.to_string(), ops::failover_reason(status, outcome)));
            return self.next_attempt(c, now);
        }
        if cancelled {
            self.finish_call(c, "cancelled by caller", now);
            return;
        }
        let failover = !early && (status == 408 || self.routing.should_failover(status));
        self.metrics.attempts.inc((
            target.to_string(),
            if failover { "failed" } else { "rejected" },
        ));
        if failover {
            self.stats.failovers += 1;
            self.metrics
                .failovers
                .inc((target.to_string(), ops::failover_reason(status, outcome)));
            info!(call = %call_id, target_id = %target, "attempt failed ({why}); failing over");
            self.next_attempt(c, now);
        } else {
            // The callee's answer (486, 603, 404…): the caller gets it unchanged.
            info!(call = %call_id, target_id = %target, status, "call rejected: {why}");
            self.stats.calls_failed += 1;
            let entry = self.calls.get(&c).expect("present");
            let sid = self.server_ids.get(&entry.a_invite).copied();
            // "486 Busy Here" keeps the callee's phrase; our own timeouts use the standard one.
            let reason = why
                .split_once(' ')
                .filter(|(code, _)| code.parse::<u16>().is_ok())
                .map(|(_, r)| r.to_string());
            if let Some(sid) = sid {
                self.respond(sid, status, reason.as_deref(), vec![], None, now);
            }
            self.finish_call(c, why, now);
        }
    }
}

/// What a failed relay bind ran out of, for a 503's reason: `out of file descriptors
/// (EMFILE)`, or the OS's own text for other errors.
fn bind_failure_reason(failure: BindFailure, error: &str) -> String {
    failure
        .what()
        .map_or_else(|| error.to_string(), str::to_string)
}

fn attempt_target(a: &Attempt) -> (TargetId, Destination) {
    (
        TargetId::from(a.target.as_str()),
        Destination {
            addr: a.remote,
            transport: a.transport,
        },
    )
}

/// Moves a transaction's datagrams to `out` (toward `flow`) and returns its events and its
/// next deadline. Transmits are drained before events, so a transaction that terminates
/// right after queueing (an ACK over TCP) still gets its last message out.
fn flush(
    tx: &mut Transaction,
    flow: &Flow,
    out: &mut VecDeque<Transmit>,
) -> (Vec<TransactionEvent>, Option<Instant>) {
    while let Some(data) = tx.poll_transmit() {
        out.push_back(Transmit {
            transport: flow.transport,
            local: flow.local,
            remote: flow.remote,
            data,
        });
    }
    let mut events = Vec::new();
    while let Some(ev) = tx.poll_event() {
        events.push(ev);
    }
    (events, tx.poll_timeout())
}

/// The ACK for a non-2xx final response (RFC 3261 §17.1.1.3): same Request-URI, Call-ID,
/// From, CSeq number and top Via as the INVITE, To from the response, and the INVITE's Route
/// headers.
fn non2xx_ack(invite: &Bytes, resp: &Resp) -> Bytes {
    let Ok(Message::Request(req)) = crate::sip::message::parse(invite) else {
        return Bytes::new();
    };
    let h = &req.headers;
    let mut out = OutRequest {
        method: "ACK".into(),
        uri: req.uri.to_string(),
        via: h
            .get(crate::sip::HeaderName::Via)
            .unwrap_or_default()
            .to_string(),
        routes: h
            .get_all(crate::sip::HeaderName::Route)
            .map(str::to_string)
            .collect(),
        max_forwards: 70,
        from: h
            .get(crate::sip::HeaderName::From)
            .unwrap_or_default()
            .to_string(),
        to: String::new(),
        call_id: h
            .get(crate::sip::HeaderName::CallId)
            .unwrap_or_default()
            .to_string(),
        cseq: resp.cseq,
        contact: None,
        headers: vec![],
        body: None,
    };
    out.to = match &resp.to_tag {
        Some(t) => format!("{};tag={t}", resp.to),
        None => resp.to.clone(),
    };
    out.to_bytes()
}

// ---------------------------------------------------------------------- ACK, CANCEL, dialogs
impl Core {
    fn on_ack(&mut self, req: &Req, key: &ServerKey, now: Instant) {
        // ACK for a non-2xx final: same transaction as the INVITE (§17.2.3).
        if let Some(&sid) = self.server_ids.get(key) {
            if let Some((_, e)) = self.servers.get_mut(&sid) {
                if let Transaction::ServerInvite(t) = &mut e.tx {
                    if t.state() != ServerInviteState::Accepted {
                        let _ = t.handle_ack(now);
                        self.drive_server(sid, now);
                        return;
                    }
                }
            }
        }
        // ACK for a 2xx: end to end, matched by dialog (§13.2.2.4, §17.1.1.3).
        let Some(tag) = &req.to_tag else { return };
        let Some(&(c, side)) = self.dialogs.get(&(req.call_id.clone(), tag.clone())) else {
            return;
        };
        let Some(entry) = self.calls.get_mut(&c) else {
            return;
        };
        if side == Side::A && entry.call.state == CallState::Answered {
            entry.call.state = CallState::Confirmed;
            if let Some(&sid) = self.server_ids.get(&entry.a_invite) {
                if let Some((_, s)) = self.servers.get_mut(&sid) {
                    if let Transaction::ServerInvite(t) = &mut s.tx {
                        t.handle_ack_2xx(now);
                    }
                }
                self.drive_server(sid, now);
            }
            // Now acknowledge the callee's 2xx, carrying the caller's ACK body (late offer).
            let entry = self.calls.get_mut(&c).expect("present");
            if !req.body.is_empty() {
                entry.call.a.remote_sdp = Some(req.body.clone());
            }
            let late_answer = entry
                .call
                .media
                .as_ref()
                .is_some_and(|m| m.pending_offer == Some(Side::B));
            let mut body = None;
            if !req.body.is_empty() && late_answer {
                match self.with_media(c, |m, _, out| m.answer(Side::A, &req.body, out)) {
                    Some(Ok(b)) => body = Some((ACCEPT.to_string(), b)),
                    Some(Err(e)) => {
                        warn!(call = %self.call_name(c), "answer in ACK refused: {e}");
                        // Confirm the callee's leg first so the BYE is in a dialog.
                        if let Some(b) = self.calls.get(&c).and_then(|e| e.call.b.clone()) {
                            self.send_ack(&b, 1, None);
                        }
                        return self.end_call(c, &format!("caller's SDP refused: {e}"), None, now);
                    }
                    None => {}
                }
            }
            let Some(entry) = self.calls.get_mut(&c) else {
                return;
            };
            if let Some(b) = entry.call.b.clone() {
                let ack = self.send_ack(&b, 1, body);
                if let Some(e) = self.calls.get_mut(&c) {
                    e.b_ack = Some(ack);
                }
            }
            info!(call = %self.call_name(c), "confirmed");
            // The AI leg was confirmed gone between its answer and this ACK.
            if let Some((trigger, detail)) =
                self.calls.get_mut(&c).and_then(|e| e.early_failure.take())
            {
                let side = self.calls.get(&c).map_or(Side::B, |e| e.call.ai_side());
                self.confirmed_failure(c, side, trigger, detail, now);
            }
            return;
        }
        // The ACK for a re-INVITE's 2xx (answered locally or relayed).
        let Some(p) = entry.pending_ack.clone() else {
            return;
        };
        if p.from != side {
            return;
        }
        entry.pending_ack = None;
        if let Some(&sid) = self.server_ids.get(&p.server) {
            if let Some((_, s)) = self.servers.get_mut(&sid) {
                if let Transaction::ServerInvite(t) = &mut s.tx {
                    t.handle_ack_2xx(now);
                }
            }
            self.drive_server(sid, now);
        }
        if p.local_offer && !req.body.is_empty() {
            // The answer to the offer our 2xx carried: this leg only.
            if let Some(Err(e)) =
                self.with_media(c, |m, _, out| m.local_answer(side, &req.body, out))
            {
                warn!(call = %self.call_name(c), ?side, "answer in ACK ignored: {e}");
            }
        }
        if let Some(cseq) = p.relay_cseq {
            // Relayed re-INVITEs always carried an (anchored) offer, so their ACK has no
            // session description to pass on.
            if let Some(leg) = self.leg(c, side.other()).cloned() {
                self.send_ack(&leg, cseq, None);
            }
        }
    }

    /// Sends an ACK for a 2xx on `leg` (a new transaction-less request, §13.2.2.4).
    fn send_ack(&mut self, leg: &Leg, cseq: u32, body: Option<(String, Vec<u8>)>) -> Bytes {
        let branch = self.ids.branch();
        let data = self
            .in_dialog_request(leg, "ACK", cseq, &branch, vec![], body)
            .to_bytes();
        self.out.push_back(Transmit {
            transport: leg.flow.transport,
            local: leg.flow.local,
            remote: leg.flow.remote,
            data: data.clone(),
        });
        data
    }

    fn in_dialog_request(
        &self,
        leg: &Leg,
        method: &str,
        cseq: u32,
        branch: &str,
        headers: Vec<(String, String)>,
        body: Option<(String, Vec<u8>)>,
    ) -> OutRequest {
        let tagged = |uri: &str, tag: &Option<String>| match tag {
            Some(t) => format!("{uri};tag={t}"),
            None => uri.to_string(),
        };
        OutRequest {
            method: method.into(),
            uri: leg.remote_target.trim_matches(['<', '>']).to_string(),
            via: self.via(&leg.flow, branch),
            routes: leg.route_set.clone(),
            max_forwards: self.settings.max_forwards,
            from: tagged(&leg.local_uri, &Some(leg.local_tag.clone())),
            to: tagged(&leg.remote_uri, &leg.remote_tag),
            call_id: leg.call_id.clone(),
            cseq,
            contact: matches!(method, "INVITE" | "UPDATE").then(|| self.contact(&leg.flow)),
            headers,
            body,
        }
    }

    /// Sends a new in-dialog request on `leg` (its CSeq advanced), as a client transaction.
    #[allow(clippy::too_many_arguments)]
    fn send_in_dialog(
        &mut self,
        leg: &mut Leg,
        method: &str,
        headers: Vec<(String, String)>,
        body: Option<(String, Vec<u8>)>,
        purpose: Purpose,
        flow: Flow,
        now: Instant,
    ) -> u32 {
        let cseq = leg.next_cseq();
        let branch = self.ids.branch();
        let mut headers = headers;
        headers.push(("User-Agent".into(), self.settings.user_agent.clone()));
        let out = self.in_dialog_request(leg, method, cseq, &branch, headers, body);
        let bytes = out.to_bytes();
        let key = ClientKey {
            branch,
            method: method.into(),
        };
        let rel = reliability(flow.transport);
        let tx = if method == "INVITE" {
            Transaction::ClientInvite(ClientInvite::new(
                bytes.clone(),
                rel,
                self.settings.timers,
                now,
            ))
        } else {
            Transaction::ClientNonInvite(ClientNonInvite::new(
                bytes.clone(),
                rel,
                self.settings.timers,
                now,
            ))
        };
        self.new_client(key, tx, flow, bytes, purpose, now);
        cseq
    }

    fn send_cancel(&mut self, id: u64, now: Instant) {
        let Some((key, e)) = self.clients.get(&id) else {
            return;
        };
        // §9.1: CANCEL has the INVITE's Request-URI, Call-ID, From, To, CSeq number, Route
        // and the same top Via (same branch).
        let Ok(Message::Request(req)) = crate::sip::message::parse(&e.request) else {
            return;
        };
        let h = &req.headers;
        use crate::sip::HeaderName as H;
        let cseq = h.cseq().map(|c| c.seq).unwrap_or(1);
        let out = OutRequest {
            method: "CANCEL".into(),
            uri: req.uri.to_string(),
            via: h.get(H::Via).unwrap_or_default().to_string(),
            routes: h.get_all(H::Route).map(str::to_string).collect(),
            max_forwards: self.settings.max_forwards,
            from: h.get(H::From).unwrap_or_default().to_string(),
            to: h.get(H::To).unwrap_or_default().to_string(),
            call_id: h.get(H::CallId).unwrap_or_default().to_string(),
            cseq,
            contact: None,
            headers: vec![],
            body: None,
        };
        let bytes = out.to_bytes();
        let flow = e.flow;
        let ckey = ClientKey {
            branch: key.branch.clone(),
            method: "CANCEL".into(),
        };
        let tx = ClientNonInvite::new(
            bytes.clone(),
            reliability(flow.transport),
            self.settings.timers,
            now,
        );
        self.new_client(
            ckey,
            Transaction::ClientNonInvite(tx),
            flow,
            bytes,
            Purpose::Ignore,
            now,
        );
    }

    /// Cancels an INVITE client transaction now if a provisional came, else as soon as one
    /// does (§9.1), and turns it into an abandoned attempt.
    fn abandon_invite(&mut self, key: &ClientKey, leg: Option<Leg>, now: Instant) {
        let Some(&id) = self.client_ids.get(key) else {
            return;
        };
        let provisional = if let Some((_, e)) = self.clients.get_mut(&id) {
            if let Some(leg) = leg {
                e.purpose = Purpose::Abandoned { leg: Box::new(leg) };
            }
            if !e.provisional {
                e.cancel_pending = true;
            }
            e.provisional
        } else {
            false
        };
        if provisional {
            self.send_cancel(id, now);
        }
    }

    fn on_cancel(&mut self, req: &Req, flow: (Flow, SocketAddr), data: Bytes, now: Instant) {
        let cancel_key = server_key(req);
        if let Some(&sid) = self.server_ids.get(&cancel_key) {
            if let Some((_, e)) = self.servers.get_mut(&sid) {
                if let Transaction::ServerNonInvite(t) = &mut e.tx {
                    t.handle_request_retransmit(now);
                }
            }
            self.drive_server(sid, now);
            return;
        }
        let invite_key = ServerKey {
            method: "INVITE".into(),
            ..cancel_key.clone()
        };
        let invite_sid = self.server_ids.get(&invite_key).copied();
        let sid = self.new_server(cancel_key, flow, data, req, now);
        let Some(invite_sid) = invite_sid else {
            // §9.2: no matching transaction.
            return self.respond(sid, 481, None, vec![], None, now);
        };
        self.respond(sid, 200, None, vec![], None, now);
        let (finished, call) = match self.servers.get(&invite_sid) {
            Some((_, e)) => (e.finished, e.call),
            None => (true, None),
        };
        if finished {
            return; // too late: the INVITE already has its final response
        }
        self.respond(invite_sid, 487, None, vec![], None, now);
        let Some(c) = call else { return };
        let Some(entry) = self.calls.get_mut(&c) else {
            return;
        };
        entry.call.cancelled = true;
        info!(call = %entry.call.id, "cancelled by caller");
        let b_key = entry.b_invite.take();
        let b_leg = entry.call.b.take();
        self.count_target(c, None);
        if let Some(k) = b_key {
            self.abandon_invite(&k, b_leg, now);
        }
        self.finish_call(c, "cancelled by caller", now);
    }

    fn on_in_dialog(
        &mut self,
        req: &Req,
        flow: (Flow, SocketAddr),
        key: ServerKey,
        data: Bytes,
        now: Instant,
    ) {
        let tag = req.to_tag.clone().unwrap_or_default();
        let found = self.dialogs.get(&(req.call_id.clone(), tag)).copied();
        let sid = self.new_server(key.clone(), flow, data, req, now);
        let Some((c, side)) = found else {
            // §12.2.2: no such dialog.
            return self.respond(sid, 481, None, vec![], None, now);
        };
        if let Some((_, e)) = self.servers.get_mut(&sid) {
            e.call = Some(c);
            e.to_tag = req.to_tag.clone();
        }
        // The AI leg a re-route is replacing, still in the call until the new one answers.
        if side == Side::B && self.is_kept_dialog(c, &req.call_id) {
            return self.on_kept_request(c, sid, req, now);
        }
        // §12.2.2: CSeq must grow within a dialog.
        let Some(leg) = self.leg_mut(c, side) else {
            return self.respond(sid, 481, None, vec![], None, now);
        };
        if leg.remote_cseq.is_some_and(|last| req.cseq < last) {
            return self.respond(sid, 500, Some("CSeq Out of Order"), vec![], None, now);
        }
        leg.remote_cseq = Some(req.cseq);
        if let Some(contact) = &req.contact {
            if matches!(req.method.as_str(), "INVITE" | "UPDATE") {
                leg.remote_target = contact.clone(); // §12.2.2 target refresh
            }
        }
        match req.method.as_str() {
            "BYE" => {
                self.respond(sid, 200, None, vec![], None, now);
                let ai = self.is_ai_leg(c, side);
                if let Some(cause) = reroute::failure_cause(&req.passthrough).filter(|_| ai) {
                    let detail = format!("BYE with Reason: {cause}");
                    if self.reroute(c, RerouteTrigger::Bye, detail, true, now) {
                        return;
                    }
                }
                let who = match side {
                    Side::A => "caller",
                    Side::B => "callee",
                };
                self.end_call(c, &format!("BYE from {who}"), Some(side), now);
            }
            "OPTIONS" => {
                let h = self.capabilities();
                self.respond(sid, 200, None, h, None, now);
            }
            "INVITE" | "UPDATE" => self.on_session_update(c, side, sid, req, now),
            "INFO" => self.relay_request(c, side, sid, req, None, now),
            "PRACK" => self.respond(sid, 481, None, vec![], None, now),
            "REGISTER" | "SUBSCRIBE" | "NOTIFY" | "REFER" | "MESSAGE" | "PUBLISH" | "CANCEL" => {
                let h = vec![("Allow".to_string(), ALLOW.to_string())];
                self.respond(sid, 405, None, h, None, now);
            }
            _ => {
                let h = vec![("Allow".to_string(), ALLOW.to_string())];
                self.respond(sid, 501, None, h, None, now);
            }
        }
    }

    /// re-INVITE or UPDATE from one leg. Answered on that leg alone when it is a session
    /// refresh (no SDP, or the same SDP) or a re-offer that only moves the media (hold,
    /// unhold, a new address: RFC 3264 §8.4 per leg, see `media`); a real renegotiation is
    /// anchored and relayed to the other leg.
    fn on_session_update(&mut self, c: CallRef, side: Side, sid: u64, req: &Req, now: Instant) {
        let Some(entry) = self.calls.get(&c) else {
            return;
        };
        if entry.call.state == CallState::Rerouting
            || (!matches!(entry.call.state, CallState::Confirmed) && req.method == "INVITE")
        {
            // §14.2: a re-INVITE while the initial one is still in progress.
            return self.respond(sid, 491, None, vec![], None, now);
        }
        if entry.reinvite_in_progress {
            return self.respond(sid, 491, None, vec![], None, now);
        }
        let leg = self.leg(c, side).cloned();
        let Some(leg) = leg else { return };
        let unchanged =
            req.body.is_empty() || leg.remote_sdp.as_deref() == Some(req.body.as_slice());
        let local_body: Option<Vec<u8>> = if unchanged {
            // What this leg last got from us: an offer when the request had none (the ACK
            // brings the answer), the same answer for a refresh.
            if req.method == "INVITE" {
                self.calls
                    .get(&c)
                    .and_then(|e| e.call.media.as_ref())
                    .and_then(|m| m.last_sent(side))
                    .map(<[u8]>::to_vec)
            } else {
                None
            }
        } else {
            if !is_sdp(req.content_type.as_deref()) {
                let h = vec![("Accept".to_string(), ACCEPT.to_string())];
                return self.respond(sid, 415, None, h, None, now);
            }
            if let Some(l) = self.leg_mut(c, side) {
                l.remote_sdp = Some(req.body.clone());
                l.remote_sdp_type = req.content_type.clone();
            }
            match self.with_media(c, |m, alloc, out| m.reoffer(side, &req.body, alloc, out)) {
                Some(Ok(ReOffer::Local(answer))) => {
                    debug!(call = %self.call_name(c), ?side, method = %req.method, "re-offer answered on its own leg");
                    Some(answer)
                }
                Some(Ok(ReOffer::Relay(offer))) => {
                    let held = AfterBind::Relay {
                        from: side,
                        sid,
                        req: req.clone(),
                    };
                    if self.hold_until_bound(c, held) {
                        return;
                    }
                    return self.relay_request(c, side, sid, req, Some(offer), now);
                }
                Some(Err(e)) => return self.reoffer_refused(c, side, sid, &e, now),
                None => return self.relay_request(c, side, sid, req, None, now),
            }
        };
        let (interval, refresher) = match req.session_expires {
            Some(se) => (se.interval, se.refresher.unwrap_or(Refresher::Uac)),
            None => (
                leg.session_timer
                    .as_ref()
                    .map_or(self.settings.session_expires, |t| t.interval),
                Refresher::Uac,
            ),
        };
        let mut h = vec![
            ("Contact".to_string(), self.contact(&leg.flow)),
            ("Allow".to_string(), ALLOW.to_string()),
            ("Supported".to_string(), SUPPORTED.to_string()),
            (
                "Session-Expires".to_string(),
                format!(
                    "{};refresher={}",
                    interval.as_secs(),
                    refresher_param(refresher)
                ),
            ),
        ];
        if req.supports_timer {
            h.push(("Require".into(), "timer".into()));
        }
        let local_offer = req.body.is_empty() && local_body.is_some();
        let body = local_body.map(|b| (ACCEPT.to_string(), b));
        self.respond(sid, 200, None, h, body, now);
        // The peer is the refresher when it sent the request as UAC and said uac.
        self.set_session_timer(c, side, interval, refresher == Refresher::Uas, now);
        if req.method == "INVITE" {
            let server = self.servers.get(&sid).map(|(k, _)| k.clone());
            if let (Some(e), Some(server)) = (self.calls.get_mut(&c), server) {
                e.pending_ack = Some(PendingAck {
                    from: side,
                    server,
                    relay_cseq: None,
                    local_offer,
                });
            }
        }
    }

    /// A re-offer from `side` (server transaction `sid`) that cannot be handled: answered
    /// with `e`'s status and a Warning saying why; the session stays as it was.
    fn reoffer_refused(&mut self, c: CallRef, side: Side, sid: u64, e: &MediaError, now: Instant) {
        self.count_media_error(e);
        let (status, reason) = e.status();
        info!(call = %self.call_name(c), ?side, "re-offer refused: {e}");
        let h = vec![(
            "Warning".to_string(),
            format!("399 holdfast \"{}\"", e.to_string().replace('"', "'")),
        )];
        self.respond(sid, status, Some(reason), h, None, now);
    }

    /// Relays an in-dialog request from `from` to the other leg; its response comes back to
    /// server transaction `sid`.
    fn relay_request(
        &mut self,
        c: CallRef,
        from: Side,
        sid: u64,
        req: &Req,
        sdp: Option<Vec<u8>>,
        now: Instant,
    ) {
        let to = from.other();
        if self
            .calls
            .get(&c)
            .is_some_and(|e| e.call.state == CallState::Rerouting)
        {
            // The AI leg is being replaced; nothing can reach it for the moment.
            return self.respond(sid, 480, Some("AI Leg Re-routing"), vec![], None, now);
        }
        let Some(mut leg) = self.leg(c, to).cloned() else {
            if self.calls.get(&c).is_some_and(|e| e.call.ws.is_some()) {
                return self.ws_in_dialog(c, from, sid, req, sdp.is_some(), now);
            }
            return self.respond(sid, 481, None, vec![], None, now);
        };
        let server = match self.servers.get(&sid) {
            Some((k, _)) => k.clone(),
            None => return,
        };
        // An offer is relayed anchored; other bodies (INFO's DTMF relay, …) as they came.
        let body = match sdp {
            Some(b) => Some((ACCEPT.to_string(), b)),
            None => (!req.body.is_empty()).then(|| {
                (
                    req.content_type.clone().unwrap_or_else(|| ACCEPT.into()),
                    req.body.clone(),
                )
            }),
        };
        let mut headers = req.passthrough.clone();
        if req.method == "INVITE" || req.method == "UPDATE" {
            headers.push(("Allow".into(), ALLOW.into()));
            headers.push(("Supported".into(), SUPPORTED.into()));
            if let Some(e) = self.calls.get_mut(&c) {
                e.reinvite_in_progress = true;
            }
        }
        if req.method == "INVITE" {
            // RFC 3261 §17.2.1: the other leg may take its time; the originator must not
            // retransmit into silence meanwhile.
            self.respond(sid, 100, None, vec![], None, now);
        }
        let flow = leg.flow;
        self.send_in_dialog(
            &mut leg,
            &req.method,
            headers,
            body,
            Purpose::Relay {
                call: c,
                to,
                server,
            },
            flow,
            now,
        );
        if let Some(l) = self.leg_mut(c, to) {
            l.local_cseq = leg.local_cseq;
        }
    }

    fn relay_response(
        &mut self,
        c: CallRef,
        to: Side,
        server: ServerKey,
        resp: Resp,
        now: Instant,
    ) {
        let Some(&sid) = self.server_ids.get(&server) else {
            return;
        };
        if resp.status >= 200 {
            if let Some(e) = self.calls.get_mut(&c) {
                e.reinvite_in_progress = false;
            }
        }
        let from = to.other();
        let offer_from = |m: &Option<CallMedia>| m.as_ref().and_then(|m| m.pending_offer);
        let ours = self.calls.get(&c).and_then(|e| offer_from(&e.call.media)) == Some(from)
            && matches!(resp.cseq_method.as_str(), "INVITE" | "UPDATE");
        let mut sdp = None;
        if ours && resp.status >= 200 {
            if (200..300).contains(&resp.status) && !resp.body.is_empty() {
                match self.with_media(c, |m, _, out| m.answer(to, &resp.body, out)) {
                    Some(Ok(b)) => sdp = Some(b),
                    Some(Err(e)) => {
                        warn!(call = %self.call_name(c), "answer to a relayed re-offer refused: {e}");
                        self.with_media(c, |m, _, out| m.offer_rejected(from, out));
                    }
                    None => {}
                }
            } else {
                self.with_media(c, |m, _, out| m.offer_rejected(from, out));
            }
        }
        if (200..300).contains(&resp.status) && resp.cseq_method == "INVITE" {
            if let Some(leg) = self.leg_mut(c, to) {
                if !resp.body.is_empty() {
                    leg.remote_sdp = Some(resp.body.clone());
                    leg.remote_sdp_type = resp.content_type.clone();
                }
                if let Some(ct) = &resp.contact {
                    leg.remote_target = ct.clone();
                }
            }
            if let Some(e) = self.calls.get_mut(&c) {
                // The originator's ACK is relayed as the ACK for this 2xx.
                e.pending_ack = Some(PendingAck {
                    from,
                    server: server.clone(),
                    relay_cseq: Some(resp.cseq),
                    local_offer: false,
                });
            }
        }
        let Some(from_leg) = self.leg(c, from).cloned() else {
            return;
        };
        let mut h = resp.passthrough.clone();
        if resp.cseq_method == "INVITE" || resp.cseq_method == "UPDATE" {
            h.push(("Contact".into(), self.contact(&from_leg.flow)));
            h.push(("Allow".into(), ALLOW.into()));
        }
        let body = match sdp {
            Some(b) => Some((ACCEPT.to_string(), b)),
            // A body that is not an answer to our anchored offer (e.g. INFO's) as it came.
            None if !ours => (!resp.body.is_empty()).then(|| {
                (
                    resp.content_type.clone().unwrap_or_else(|| ACCEPT.into()),
                    resp.body.clone(),
                )
            }),
            None => None,
        };
        let session = matches!(resp.cseq_method.as_str(), "INVITE" | "UPDATE");
        let ai_failed = session
            && self.is_ai_leg(c, to)
            && (resp.status == 408 || resp.status == 481 || resp.status >= 500);
        if ai_failed {
            // The AI leg failed a re-offer: the carrier's session stays as it was (a 5xx,
            // never 408/481, which would end its dialog, RFC 3261 §14.1) and the AI leg is
            // re-routed.
            let status = if resp.status >= 500 { resp.status } else { 500 };
            let reason = if resp.status >= 500 {
                resp.reason.as_str()
            } else {
                "AI Leg Failed"
            };
            self.respond(sid, status, Some(reason), h, None, now);
            let detail = format!(
                "{} answered {} {}",
                resp.cseq_method, resp.status, resp.reason
            );
            // A 5xx comes from a user agent still there (the session stays as it was, RFC
            // 3261 §14.1): it keeps the call until another provider takes it.
            let gone = resp.status < 500;
            if !self.reroute(c, RerouteTrigger::Reinvite, detail.clone(), gone, now) && gone {
                self.end_call(c, &detail, None, now);
            }
            return;
        }
        self.respond(sid, resp.status, Some(&resp.reason), h, body, now);
    }
}

// ---------------------------------------------------------------------- ending, timers, health
impl Core {
    /// Ends a call from any state: BYE to each confirmed leg except `from` (which ended it),
    /// CANCEL to a B leg still ringing, a final response to an A leg still unanswered.
    fn end_call(&mut self, c: CallRef, why: &str, from: Option<Side>, now: Instant) {
        let Some(entry) = self.calls.get_mut(&c) else {
            return;
        };
        if entry.call.state == CallState::Ending {
            return;
        }
        let state = entry.call.state;
        entry.call.state = CallState::Ending;
        entry.call.end_reason = Some(why.to_string());
        entry.ended_by = from;
        entry.ended_at = Some(now);
        entry.pending_ack = None;
        let call_id = entry.call.id.clone();
        let a_sid = self.server_ids.get(&entry.a_invite).copied();
        let b_invite = entry.b_invite.take();
        let b_leg = entry.call.b.clone();
        let a_leg = entry.call.a.clone();
        let refuse = entry.refuse;
        let pinned_dest = match (&b_leg, &entry.call.ws) {
            (Some(b), _) => Some(Destination {
                addr: b.flow.remote,
                transport: b.flow.transport,
            }),
            (None, Some(ws)) => entry
                .call
                .attempts
                .get(ws.attempt)
                .map(|a| attempt_target(a).1),
            (None, None) => None,
        };
        let completed = (entry.call.direction == Direction::Inbound
            && matches!(state, CallState::Answered | CallState::Confirmed))
        .then(|| entry.call.pinned.clone())
        .flatten()
        .zip(pinned_dest);
        info!(call = %call_id, "ending: {why}");
        // Nothing more goes to either leg but the BYEs: relayed requests, refreshes and
        // checks in flight stop (their originator's request is answered 487).
        self.stop_transactions(c, None, (487, "Request Terminated"), now);
        self.drop_ws_leg(c, why);
        // The leg a re-route was replacing goes too.
        self.retire_kept(c, why, true, now);
        if let Some((provider, dest)) = completed {
            // The AI provider carried the call to its end: a success for its breaker.
            self.health.handle_attempt(
                &TargetId::from(provider.as_str()),
                &dest,
                AttemptOutcome::Answered,
                now,
            );
        }
        let mut byes = 0;
        match state {
            CallState::Routing | CallState::Early => {
                if let Some(k) = b_invite {
                    self.abandon_invite(&k, b_leg, now);
                }
                if let Some(sid) = a_sid {
                    match refuse {
                        Some((status, reason)) => self.reject(sid, status, reason, why, now),
                        None => self.respond(
                            sid,
                            480,
                            Some("Temporarily Unavailable"),
                            vec![],
                            None,
                            now,
                        ),
                    }
                }
            }
            CallState::Rerouting => {
                // The new AI leg is still being set up: give it up (CANCEL or, if it
                // answers after all, ACK + BYE); the carrier leg gets its BYE.
                if let Some(k) = b_invite {
                    self.abandon_invite(&k, b_leg, now);
                }
                if from != Some(Side::A) {
                    self.send_bye(c, a_leg, why, now);
                    byes += 1;
                }
            }
            CallState::Answered | CallState::Confirmed => {
                if let (Some(b), true) = (b_leg, from != Some(Side::B)) {
                    if state == CallState::Answered {
                        // We hold the callee's 2xx unacknowledged until the caller's ACK.
                        self.send_ack(&b, 1, None);
                    }
                    self.send_bye(c, b, why, now);
                    byes += 1;
                }
                if from != Some(Side::A) {
                    self.send_bye(c, a_leg, why, now);
                    byes += 1;
                }
            }
            CallState::Ending => {}
        }
        self.count_target(c, None);
        if let Some(e) = self.calls.get_mut(&c) {
            e.byes_outstanding = byes;
            e.deadlines.clear();
        }
        if byes == 0 {
            self.finish_call(c, why, now);
        } else {
            // Whatever happens to the BYEs, the call is gone after Timer F.
            let at = now + self.settings.timers.t1 * 64 + Duration::from_secs(1);
            self.set_deadline(c, CallTimer::Reap, at);
        }
    }

    /// BYE on `leg` of call `c`, with `why` as its Reason; the call waits for it to finish.
    fn send_bye(&mut self, c: CallRef, mut leg: Leg, why: &str, now: Instant) {
        let flow = leg.flow;
        self.send_in_dialog(
            &mut leg,
            "BYE",
            vec![reason_header(why)],
            None,
            Purpose::Bye { call: c },
            flow,
            now,
        );
    }

    fn bye_done(&mut self, c: CallRef, now: Instant) {
        let Some(e) = self.calls.get_mut(&c) else {
            return;
        };
        e.byes_outstanding = e.byes_outstanding.saturating_sub(1);
        if e.byes_outstanding == 0 {
            let why = e.call.end_reason.clone().unwrap_or_default();
            self.finish_call(c, &why, now);
        }
    }

    /// Forgets a call. Transactions still running finish on their own.
    fn finish_call(&mut self, c: CallRef, why: &str, now: Instant) {
        self.count_target(c, None);
        let Some(e) = self.calls.remove(&c) else {
            return;
        };
        let record = self.call_record(&e, why, now);
        let mut call = e.call;
        self.ai_legs.retain(|_, cref| *cref != c);
        if let Some(ws) = call.ws.take() {
            self.ai_out.push_back(AiCommand::Close {
                leg: ws.leg,
                why: why.to_string(),
            });
        }
        if let Some(mut m) = call.media.take() {
            let mut cmds = Vec::new();
            m.close(&mut cmds);
            self.media_out.extend(cmds);
            if !m.streams.is_empty() {
                self.closing.insert(c, (call.id.clone(), m));
            }
        }
        if self.closing.contains_key(&c) {
            // Written once the relays report their final statistics.
            self.records_pending.insert(c, record);
        } else {
            self.records.push_back(record);
        }
        self.dialogs
            .remove(&(call.a.call_id.clone(), call.a.local_tag.clone()));
        if let Some(b) = &call.b {
            self.dialogs
                .remove(&(b.call_id.clone(), b.local_tag.clone()));
        }
        info!(
            call = %call.id, pinned = call.pinned.as_deref().unwrap_or("-"),
            attempts = call.attempts.len(), "call ended: {why}"
        );
    }

    /// Records the session timer of `side` and arms its refresh or expiry (RFC 4028 §10).
    fn set_session_timer(
        &mut self,
        c: CallRef,
        side: Side,
        interval: Duration,
        we_refresh: bool,
        now: Instant,
    ) {
        if let Some(leg) = self.leg_mut(c, side) {
            leg.session_timer = Some(SessionTimer {
                interval,
                we_refresh,
            });
        } else {
            return;
        }
        let sk = SideKey::from(side);
        self.clear_deadline(c, CallTimer::Refresh(sk));
        self.clear_deadline(c, CallTimer::Expire(sk));
        if we_refresh {
            self.set_deadline(c, CallTimer::Refresh(sk), now + interval / 2);
        } else {
            // §10: the side that is not the refresher sends BYE shortly before expiry.
            let margin = (interval / 3).min(Duration::from_secs(32));
            self.set_deadline(c, CallTimer::Expire(sk), now + interval - margin);
        }
    }

    /// Session timer from a 2xx to a request we sent on `side` (we are its UAC there).
    fn arm_session_timer(
        &mut self,
        c: CallRef,
        side: Side,
        se: Option<msg::SessionExpires>,
        after_refresh: bool,
        now: Instant,
    ) {
        match se {
            Some(se) => {
                let we = se.refresher.unwrap_or(Refresher::Uac) == Refresher::Uac;
                self.set_session_timer(c, side, se.interval, we, now);
            }
            None if after_refresh => {
                let prev = self.leg(c, side).and_then(|l| l.session_timer.clone());
                if let Some(t) = prev {
                    self.set_session_timer(c, side, t.interval, t.we_refresh, now);
                }
            }
            None => {}
        }
    }

    /// Sends a session refresh on `side`: UPDATE without a body when the peer allows it,
    /// otherwise a re-INVITE with the session description it already has (RFC 4028 §7.4,
    /// §9), so nothing about the media changes.
    fn send_refresh(&mut self, c: CallRef, side: Side, now: Instant) {
        let Some(entry) = self.calls.get(&c) else {
            return;
        };
        if entry.call.state != CallState::Confirmed || entry.reinvite_in_progress {
            // Try again a little later rather than glare with an offer in progress.
            let at = now + Duration::from_secs(2);
            return self.set_deadline(c, CallTimer::Refresh(SideKey::from(side)), at);
        }
        let Some(mut leg) = self.leg(c, side).cloned() else {
            return;
        };
        let interval = leg
            .session_timer
            .as_ref()
            .map_or(self.settings.session_expires, |t| t.interval);
        let headers = vec![
            ("Supported".to_string(), SUPPORTED.to_string()),
            (
                "Session-Expires".to_string(),
                format!("{};refresher=uac", interval.as_secs()),
            ),
        ];
        let (method, body) = if leg.peer_allows_update {
            ("UPDATE", None)
        } else {
            // The same SDP this leg last got from us (same o= version: nothing changes).
            let body = entry
                .call
                .media
                .as_ref()
                .and_then(|m| m.last_sent(side))
                .map(|b| (ACCEPT.to_string(), b.to_vec()));
            ("INVITE", body)
        };
        debug!(call = %self.call_name(c), ?side, method, "session refresh");
        let flow = leg.flow;
        self.send_in_dialog(
            &mut leg,
            method,
            headers,
            body,
            Purpose::Refresh { call: c, side },
            flow,
            now,
        );
        if let Some(l) = self.leg_mut(c, side) {
            l.local_cseq = leg.local_cseq;
        }
    }

    /// What the media shell reports about call relays.
    pub fn handle_media_event(&mut self, ev: MediaEvent, now: Instant) {
        let id = ev.id();
        let c = id.call;
        let live = self.calls.contains_key(&c);
        let name = if live {
            self.call_name(c)
        } else {
            self.closing
                .get(&c)
                .map_or_else(|| format!("#{c}"), |(n, _)| n.clone())
        };
        match ev {
            MediaEvent::Latched {
                side, kind, addr, ..
            } => {
                let sdp = self
                    .with_media(c, |m, _, _| m.latched(id.stream, side, kind, addr))
                    .flatten();
                match sdp {
                    Some(sdp) => info!(call = %name, leg = ?side, ?kind, %addr, sdp_addr = %sdp,
                        "media latched to an address other than the SDP's (NAT)"),
                    None => debug!(call = %name, leg = ?side, ?kind, %addr, "media latched"),
                }
            }
            MediaEvent::Unreachable { side, addr, .. } => {
                // The shell reports what its relay knew when the error came; the call may
                // have moved that leg since (a re-route): only its current peer counts.
                let current = self
                    .with_media(c, |m, _, _| {
                        let current = m.is_current_peer(id.stream, side, addr);
                        if current {
                            m.unreachable(id.stream, side, addr);
                        }
                        current
                    })
                    .unwrap_or(false);
                if !current {
                    debug!(call = %name, leg = ?side, %addr, "media: ICMP unreachable from a peer the call has left; ignored");
                    return self.after_health(now);
                }
                warn!(call = %name, leg = ?side, %addr, "media: peer port unreachable (ICMP)");
                self.on_media_unreachable(c, side, addr, now);
            }
            MediaEvent::Resumed { side, gap, .. } => {
                if self.is_ai_leg(c, side) {
                    self.reroute_resumed(c, gap);
                }
            }
            MediaEvent::Timeout { side, idle_for, .. } => {
                // Silence makes the leg suspect, never more: its liveness check decides.
                let why = format!("no RTP or RTCP for {}ms", idle_for.as_millis());
                self.start_check(c, side, &why, now);
            }
            MediaEvent::Bound { .. } => self.relay_bound(c, id.stream, now),
            MediaEvent::RebindFailed { side, error, .. } => {
                self.relay_rebind_failed(c, &name, id.stream, side, &error, now)
            }
            MediaEvent::OpenFailed {
                port,
                failure,
                error,
                ..
            } => self.relay_open_failed(c, &name, id.stream, port, failure, &error, now),
            MediaEvent::Closed { a_to_b, b_to_a, .. } => {
                if let Some(r) = self.records_pending.get_mut(&c) {
                    r.add_stream(&a_to_b, &b_to_a);
                }
                self.media_gone(c, id.stream);
                info!(
                    call = %name, stream = id.stream,
                    a_packets = a_to_b.packets_received, a_forwarded = a_to_b.packets_forwarded,
                    a_lost = a_to_b.packets_lost, a_jitter_ms = a_to_b.jitter_ms,
                    a_dropped = a_to_b.drops.total(), a_wrong_source = a_to_b.drops.wrong_source,
                    a_unexpected_source = a_to_b.drops.unexpected_source,
                    a_learning = a_to_b.drops.learning,
                    b_packets = b_to_a.packets_received, b_forwarded = b_to_a.packets_forwarded,
                    b_lost = b_to_a.packets_lost, b_jitter_ms = b_to_a.jitter_ms,
                    b_dropped = b_to_a.drops.total(), b_wrong_source = b_to_a.drops.wrong_source,
                    b_unexpected_source = b_to_a.drops.unexpected_source,
                    b_learning = b_to_a.drops.learning,
                    ports_in_use = self.ports.in_use(),
                    "media closed"
                );
            }
        }
        self.after_health(now);
    }

    /// Holds call `c`'s step `next` if its last offer opened relays that are not bound yet
    /// (it runs from `relay_bound` once they all are). Returns whether it was held.
    fn hold_until_bound(&mut self, c: CallRef, next: AfterBind) -> bool {
        let Some(e) = self.calls.get_mut(&c) else {
            return false;
        };
        if !e.call.media.as_ref().is_some_and(|m| m.binding()) {
            return false;
        }
        e.after_bind = Some(next);
        true
    }

    /// The shell bound stream `stream` of call `c`. When the call's last offer has all its
    /// relays bound, the step held for them goes on with the offer as rendered for their
    /// ports.
    fn relay_bound(&mut self, c: CallRef, stream: u16, now: Instant) {
        let Some(e) = self.calls.get_mut(&c) else {
            return;
        };
        if !e.call.media.as_mut().is_some_and(|m| m.bound(stream)) {
            return;
        }
        let Some(next) = e.after_bind.take() else {
            return;
        };
        let sent = |e: &CallEntry, side: Side| {
            e.call
                .media
                .as_ref()
                .and_then(|m| m.last_sent(side))
                .map(<[u8]>::to_vec)
        };
        match next {
            AfterBind::Route => {
                e.call.offer = sent(e, Side::B);
                // A call still waiting for its targets' first resolution is routed then.
                if e.waiting.is_none() {
                    self.next_attempt(c, now);
                }
            }
            AfterBind::Provisional { attempt, resp } => {
                let sdp = sent(e, Side::A);
                self.relay_provisional(c, attempt, &resp, sdp, now);
            }
            AfterBind::Answered { attempt, resp } => {
                let sdp = sent(e, Side::A);
                self.callee_answered(c, attempt, resp, sdp, now);
            }
            AfterBind::Relay { from, sid, req } => {
                let sdp = sent(e, from.other());
                self.relay_request(c, from, sid, &req, sdp, now);
            }
            AfterBind::Attempt { target, dest } => {
                if e.call.offer.is_some() {
                    e.call.offer = sent(e, Side::B);
                }
                self.start_attempt(c, target, dest, now);
            }
        }
    }

    /// The shell could not move leg `side` of stream `stream` to its new peer's address
    /// family: the leg stays where it was (its SDP names the old family's address, which a
    /// dual-stack peer still reaches), and a held attempt goes ahead.
    fn relay_rebind_failed(
        &mut self,
        c: CallRef,
        name: &str,
        stream: u16,
        side: Side,
        error: &str,
        now: Instant,
    ) {
        warn!(call = %name, stream, leg = ?side,
            "media: could not move the leg's relay sockets to its peer's address family ({error}); it stays in its old family");
        let Some(e) = self.calls.get_mut(&c) else {
            return;
        };
        let done = e
            .call
            .media
            .as_mut()
            .is_some_and(|m| m.rebind_failed(stream, side));
        if !done {
            return;
        }
        match e.after_bind.take() {
            Some(AfterBind::Attempt { target, dest }) => {
                if e.call.offer.is_some() {
                    e.call.offer = e
                        .call
                        .media
                        .as_ref()
                        .and_then(|m| m.last_sent(Side::B))
                        .map(<[u8]>::to_vec);
                }
                self.start_attempt(c, target, dest, now);
            }
            other => e.after_bind = other,
        }
    }

    /// The shell could not open stream `stream` of call `c`: `port` failed with `failure`.
    /// A port another process holds (`EADDRINUSE`) is quarantined for `media.port_quarantine`
    /// and, while the call's offer still waits, the stream gets other ports; any other failure
    /// is the process's or the system's, not the port's: the ports go back and the step fails
    /// with 503 saying what ran out.
    #[allow(clippy::too_many_arguments)]
    fn relay_open_failed(
        &mut self,
        c: CallRef,
        name: &str,
        stream: u16,
        port: u16,
        failure: BindFailure,
        error: &str,
        now: Instant,
    ) {
        self.metrics.bind_failures.inc(failure.as_str());
        let quarantine = self.config.media.port_quarantine;
        if failure == BindFailure::AddrInUse
            && self.ports.quarantine(port, now + quarantine).is_ok()
        {
            self.metrics.ports_quarantined_total += 1;
            self.arm(now + quarantine, TimerRef::PortQuarantine);
            warn!(
                call = %name, port, quarantine = ?quarantine, quarantined = self.ports.quarantined(),
                "media: relay port {port} is in use by another process ({error}); out of the range for {quarantine:?}, then tried again"
            );
        }
        let state = self
            .calls
            .get(&c)
            .and_then(|e| e.call.media.as_ref())
            .and_then(|m| m.streams.iter().find(|s| s.index == stream))
            .map(|s| s.state);
        match state {
            Some(StreamState::Binding) => {}
            None if !self.calls.contains_key(&c) => return self.media_gone(c, stream),
            None => {
                return debug!(call = %name, stream, "media: failure of a relay already gone ignored")
            }
            Some(StreamState::Closing) => {
                // The call is ending anyway; the relay never opened, so no Closed follows.
                self.with_media(c, |m, alloc, _| m.closed(stream, alloc));
                return;
            }
            Some(StreamState::Open) => {
                // Bound, then its worker could not take it: the call has advertised it, so
                // it ends.
                warn!(call = %name, stream, port, "media: relay failed after binding: {error}");
                self.with_media(c, |m, alloc, _| m.closed(stream, alloc));
                let why = bind_failure_reason(failure, error);
                if let Some(e) = self.calls.get_mut(&c) {
                    e.refuse = Some((503, "Service Unavailable"));
                }
                return self.end_call(c, &format!("media setup failed: {why}"), None, now);
            }
        }
        let e = if failure == BindFailure::AddrInUse {
            match self.with_media(c, |m, alloc, out| m.rebind(stream, alloc, out)) {
                Some(Ok(())) => {
                    let ports = self
                        .calls
                        .get(&c)
                        .and_then(|e| e.call.media.as_ref())
                        .and_then(|m| m.streams.iter().find(|s| s.index == stream))
                        .map(|s| s.ports);
                    info!(call = %name, stream, ?ports, "media: relay retried on other ports");
                    return;
                }
                Some(Err(e)) => e,
                None => return,
            }
        } else {
            self.with_media(c, |m, alloc, _| m.closed(stream, alloc));
            MediaError::RelayFailed(bind_failure_reason(failure, error))
        };
        warn!(
            call = %name, stream, port, errno = failure.as_str(),
            ports_in_use = self.ports.in_use(), ports_quarantined = self.ports.quarantined(),
            "{e}"
        );
        self.bind_step_failed(c, &e, now);
    }

    /// Call `c`'s held step cannot go on: its offer's relays could not be had (`e`).
    fn bind_step_failed(&mut self, c: CallRef, e: &MediaError, now: Instant) {
        let Some(entry) = self.calls.get_mut(&c) else {
            return;
        };
        let next = entry.after_bind.take();
        match next {
            Some(AfterBind::Provisional { attempt, resp }) => {
                // The provisional still reaches the caller, without the offer; the 2xx
                // brings it again.
                self.count_media_error(e);
                self.with_media(c, |m, _, out| m.offer_rejected(Side::B, out));
                warn!(call = %self.call_name(c), "SDP in provisional ignored: {e}");
                self.relay_provisional(c, attempt, &resp, None, now);
            }
            Some(AfterBind::Answered { attempt, resp }) => {
                self.callee_answer_refused(c, attempt, &resp, e, now);
            }
            Some(AfterBind::Relay { from, sid, .. }) => {
                self.with_media(c, |m, _, out| m.offer_rejected(from, out));
                self.reoffer_refused(c, from, sid, e, now);
            }
            Some(AfterBind::Route) | Some(AfterBind::Attempt { .. }) | None => {
                self.count_media_error(e);
                let (status, reason) = e.status();
                if let Some(entry) = self.calls.get_mut(&c) {
                    entry.refuse = Some((status, reason));
                }
                self.end_call(c, &e.to_string(), None, now);
            }
        }
    }

    /// Counts what a media error says about the port pool.
    fn count_media_error(&mut self, e: &MediaError) {
        if *e == MediaError::PortsExhausted {
            self.metrics.ports_exhausted_total += 1;
        }
    }

    /// A relay of an ended call is gone from the shell: its ports go back.
    fn media_gone(&mut self, c: CallRef, stream: u16) {
        if let Some((_, m)) = self.closing.get_mut(&c) {
            if m.closed(stream, &mut self.ports) {
                self.closing.remove(&c);
                if let Some(r) = self.records_pending.remove(&c) {
                    self.records.push_back(r);
                }
            }
        }
    }

    /// Whether leg `side` of call `c` faces the AI agent.
    fn is_ai_leg(&self, c: CallRef, side: Side) -> bool {
        self.calls.get(&c).is_some_and(|e| e.call.is_ai_leg(side))
    }

    /// "carrier" or "AI agent": what leg `side` of call `c` faces.
    fn leg_kind(&self, c: CallRef, side: Side) -> &'static str {
        let inbound = self
            .calls
            .get(&c)
            .is_none_or(|e| e.call.direction == Direction::Inbound);
        match (inbound, side) {
            (true, Side::A) | (false, Side::B) => "carrier",
            _ => "AI agent",
        }
    }

    /// Fires every deadline that is due.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(Reverse((at, _))) = self.heap.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((at, what))) = self.heap.pop() else {
                break;
            };
            match what {
                TimerRef::Server(sid) => {
                    if let Some((_, e)) = self.servers.get_mut(&sid) {
                        if e.armed == Some(at) {
                            e.armed = None;
                        }
                        e.tx.handle_timeout(now);
                        self.drive_server(sid, now);
                    }
                }
                TimerRef::Client(id) => {
                    if let Some((_, e)) = self.clients.get_mut(&id) {
                        if e.armed == Some(at) {
                            e.armed = None;
                        }
                        e.tx.handle_timeout(now);
                        self.drive_client(id, now);
                    }
                }
                TimerRef::Call(c, timer) => {
                    let due = self
                        .calls
                        .get(&c)
                        .and_then(|e| e.deadlines.get(&timer))
                        .is_some_and(|d| *d == at);
                    if due {
                        self.clear_deadline(c, timer);
                        self.fire_call_timer(c, timer, now);
                    }
                }
                TimerRef::Health => {
                    if self.health_armed == Some(at) {
                        self.health_armed = None;
                    }
                    self.health.handle_timeout(now);
                }
                TimerRef::PortQuarantine => {
                    let back = self.ports.release_expired(now);
                    if !back.is_empty() {
                        info!(
                            ports = ?back, quarantined = self.ports.quarantined(),
                            "media: quarantined relay ports back in the range (tried again at their next use)"
                        );
                    }
                }
                TimerRef::Guard => {
                    if self.guard_armed == Some(at) {
                        self.guard_armed = None;
                    }
                    self.guard.handle_timeout(now);
                }
            }
        }
        self.after_guard(now);
        self.shrink_tables();
        self.after_health(now);
    }

    /// Gives back the room of per-call tables that load left mostly empty, and the timer
    /// heap's with them (a hash map keeps its largest size otherwise: after a spike of a few
    /// thousand calls, megabytes of empty call and transaction slots for the life of the
    /// process). A quarter full or less: shrunk to twice what it holds, so it only grows
    /// again once that doubled. O(1) to check; run on timer wakeups, which is where ended
    /// calls and transactions go.
    fn shrink_tables(&mut self) {
        fn shrink<K: Eq + std::hash::Hash, V>(m: &mut HashMap<K, V>) -> bool {
            let mostly_empty = m.capacity() > MIN_TABLE_SHRUNK && m.capacity() / 4 >= m.len();
            if mostly_empty {
                m.shrink_to(m.len() * 2);
            }
            mostly_empty
        }
        let shrunk = [
            shrink(&mut self.calls),
            shrink(&mut self.dialogs),
            shrink(&mut self.server_ids),
            shrink(&mut self.servers),
            shrink(&mut self.client_ids),
            shrink(&mut self.clients),
            shrink(&mut self.closing),
            shrink(&mut self.records_pending),
        ];
        // Fewer calls or transactions: the ended ones' deadlines can go from the timer heap.
        if shrunk.contains(&true) {
            self.compact_timers();
        }
    }

    fn fire_call_timer(&mut self, c: CallRef, timer: CallTimer, now: Instant) {
        match timer {
            CallTimer::Attempt(n) => {
                if let Some(timeout) = self.ws_setup_timeout(c, n) {
                    let why = format!("timeout (not set up in {timeout:?})");
                    return self.attempt_failed(c, n, 408, &why, AttemptOutcome::Timeout, now);
                }
                let secs = self.settings.attempt_timeout;
                let Some(e) = self.calls.get_mut(&c) else {
                    return;
                };
                if e.call.attempts.get(n).is_some_and(|a| a.provisional) {
                    return;
                }
                // No provisional in time: give up on this target without waiting for Timer B.
                // The INVITE transaction keeps running as an abandoned attempt so that a late
                // answer is cancelled or hung up properly.
                let key = e.b_invite.take();
                let leg = e.call.b.clone();
                if let Some(k) = key {
                    self.abandon_invite(&k, leg, now);
                }
                self.attempt_failed(
                    c,
                    n,
                    408,
                    &format!("timeout (no provisional in {secs:?})"),
                    AttemptOutcome::Timeout,
                    now,
                );
            }
            CallTimer::Ring(n) => {
                let ring = self.settings.ring_timeout;
                let Some(e) = self.calls.get_mut(&c) else {
                    return;
                };
                if e.call.attempts.len() != n + 1 || e.call.attempts[n].outcome.is_some() {
                    return;
                }
                // Rang too long without an answer (Timer C): cancel that branch; the next
                // candidate gets the call unless early media already reached the caller.
                let key = e.b_invite.take();
                let leg = e.call.b.clone();
                if let Some(k) = key {
                    self.abandon_invite(&k, leg, now);
                }
                self.attempt_failed(
                    c,
                    n,
                    408,
                    &format!("timeout (no answer in {ring:?})"),
                    AttemptOutcome::Timeout,
                    now,
                );
            }
            CallTimer::Refresh(side) => self.send_refresh(c, side.into(), now),
            CallTimer::Expire(side) => {
                let side: Side = side.into();
                warn!(call = %self.call_name(c), ?side, "session expired without refresh");
                self.end_call(c, "session timer expired", None, now);
            }
            CallTimer::Resolve => self.replan(c, now),
            CallTimer::PromptDone => {
                let why = self
                    .calls
                    .get(&c)
                    .and_then(|e| e.call.end_reason.clone())
                    .unwrap_or_else(|| "no AI provider left".into());
                if let Some(e) = self.calls.get_mut(&c) {
                    e.call.end_reason = None;
                }
                self.end_call(c, &why, None, now);
            }
            CallTimer::Check(side) => self.check_unanswered(c, side.into(), now),
            CallTimer::Reap => {
                let why = self
                    .calls
                    .get(&c)
                    .and_then(|e| e.call.end_reason.clone())
                    .unwrap_or_default();
                self.finish_call(c, &why, now);
            }
        }
    }

    /// Sends due OPTIONS probes, logs health transitions and re-arms the health timer.
    fn after_health(&mut self, now: Instant) {
        while let Some(probe) = self.health.poll_probe(now) {
            self.send_probe(probe, now);
        }
        // Re-routes report outcomes to the health table, which may say more: bounded rounds.
        for _ in 0..4 {
            let mut down = Vec::new();
            while let Some(ev) = self.health.poll_event() {
                log_health(&ev);
                self.metrics.health_event(&ev);
                if ev.dest.is_none() {
                    down.push((ev.target, ev.to, ev.reason));
                }
            }
            if down.is_empty() {
                break;
            }
            for (target, to, reason) in down {
                self.reroute_on_health(&target, to, &reason, now);
            }
        }
        if let Some(at) = self.health.poll_timeout() {
            if self.health_armed.is_none_or(|armed| at < armed) {
                self.health_armed = Some(at);
                self.arm(at, TimerRef::Health);
            }
        }
    }

    fn send_probe(&mut self, probe: crate::health::Probe<TargetId>, now: Instant) {
        if let Some(ws) = self.config.target(&probe.target).and_then(|t| t.ws.clone()) {
            return self.send_ws_probe(probe, ws);
        }
        let Some(local) = self.listener_for(&probe.dest) else {
            return;
        };
        let flow = Flow {
            transport: probe.dest.transport,
            local,
            remote: probe.dest.addr,
        };
        let target_uri = match self.config.target(&probe.target) {
            Some(t) => format!("sip:{}", t.uri.host_port()),
            None => format!("sip:{}", crate::sip::socket_host_port(probe.dest.addr)),
        };
        self.send_options(
            target_uri,
            vec![],
            flow,
            Purpose::Probe { probe: probe.id },
            now,
        );
    }

    /// Sends an OPTIONS outside any dialog (a health ping, a liveness check) to `uri` on
    /// `flow`, through `routes`, as its own client transaction.
    fn send_options(
        &mut self,
        uri: String,
        routes: Vec<String>,
        flow: Flow,
        purpose: Purpose,
        now: Instant,
    ) {
        let host = self.local_host(flow.local);
        let branch = self.ids.branch();
        let out = OutRequest {
            method: "OPTIONS".into(),
            uri: uri.clone(),
            via: self.via(&flow, &branch),
            routes,
            max_forwards: 70,
            from: format!("<sip:holdfast@{host}>;tag={}", self.ids.tag()),
            to: format!("<{uri}>"),
            call_id: self.ids.call_id(&host),
            cseq: 1,
            contact: None,
            headers: vec![
                ("User-Agent".into(), self.settings.user_agent.clone()),
                ("Accept".into(), ACCEPT.into()),
            ],
            body: None,
        };
        let bytes = out.to_bytes();
        let tx = ClientNonInvite::new(
            bytes.clone(),
            reliability(flow.transport),
            self.settings.timers,
            now,
        );
        let key = ClientKey {
            branch,
            method: "OPTIONS".into(),
        };
        self.new_client(
            key,
            Transaction::ClientNonInvite(tx),
            flow,
            bytes,
            purpose,
            now,
        );
    }

    /// The runtime could not deliver to `remote` (TCP connect refused or reset, ICMP
    /// unreachable): every client transaction toward it fails now instead of at Timer B/F.
    pub fn handle_transport_error(
        &mut self,
        transport: Transport,
        remote: SocketAddr,
        now: Instant,
    ) {
        let ids: Vec<u64> = self
            .clients
            .iter()
            .filter(|(_, (_, e))| e.flow.remote == remote && e.flow.transport == transport)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            if let Some((_, e)) = self.clients.get_mut(&id) {
                e.tx.handle_transport_error()
            }
            self.drive_client(id, now);
        }
        self.after_health(now);
    }
}

/// Where responses to a request go (RFC 3261 §18.2.2, RFC 3581 §4): over a stream, back on
/// the connection it came in on; over UDP with `rport`, to the source address and port; over
/// UDP without it, to the source address at the Via's sent-by port (5060 by default) —
/// unless `sip.force_rport` says to treat every request as if it had asked for rport.
fn response_destination(req: &Req, r: &Received, force_rport: bool) -> SocketAddr {
    match r.transport {
        Transport::Tcp => r.remote,
        Transport::Udp if req.via_rport || force_rport => r.remote,
        Transport::Udp => SocketAddr::new(r.remote.ip(), req.via_port),
    }
}

/// Whether a body's Content-Type is SDP (no Content-Type on a body: assume SDP, as
/// RFC 3261 §20.15 allows only for application/sdp-era peers).
fn is_sdp(content_type: Option<&str>) -> bool {
    content_type.is_none_or(|t| {
        t.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .eq_ignore_ascii_case(ACCEPT)
    })
}

fn reason_header(why: &str) -> (String, String) {
    (
        "Reason".to_string(),
        format!("SIP;cause=200;text=\"{}\"", why.replace('"', "'")),
    )
}

fn log_health(ev: &HealthEvent<TargetId>) {
    match &ev.dest {
        Some(d) => {
            info!(target_id = %ev.target, addr = %d.addr, from = ?ev.from, to = ?ev.to, "health: {}", ev.reason)
        }
        None => {
            info!(target_id = %ev.target, from = ?ev.from, to = ?ev.to, "health: {}", ev.reason)
        }
    }
}
