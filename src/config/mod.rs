//! The YAML configuration file, read with serde-saphyr and validated into a typed [`Config`].
//!
//! Reading is two steps: serde types that mirror the file (`raw`, unknown keys refused), then
//! `validate`, which checks meaning (durations have units, ids are unique, routes name known
//! targets in their own regions, CIDRs are networks...) and produces [`Config`]. Every error,
//! from either step, is a [`ConfigError`] naming `file:line:column: field.path: message`; the
//! positions come from a location index of the document (`tree`).
//!
//! This module never opens sockets, never resolves names and never reads anything but the one
//! file given to [`load`]. Every key is documented in README.md (Configuration reference).

mod raw;
mod tree;
mod validate;
mod values;

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

pub use values::{
    format_duration, parse_duration, parse_source, parse_target_uri, CodeSpec, Listen, Source,
    TargetId, TargetUri, Transport,
};

/// A configuration error: where it is and what is wrong.
///
/// Displays as `file:line:column: field.path: message` (1-based line and column). For an error
/// that has no position (the file could not be read) it displays as `file: message`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.describe())]
pub struct ConfigError {
    pub file: String,
    /// 1-based; 0 when the error is not about a position in the file.
    pub line: u32,
    /// 1-based; 0 when the error is not about a position in the file.
    pub column: u32,
    /// Field path such as `carriers[2].weight`; empty for YAML syntax errors.
    pub path: String,
    pub message: String,
}

impl ConfigError {
    fn describe(&self) -> String {
        match (self.line, self.path.is_empty()) {
            (0, _) => format!("{}: {}", self.file, self.message),
            (_, true) => format!(
                "{}:{}:{}: {}",
                self.file, self.line, self.column, self.message
            ),
            (_, false) => format!(
                "{}:{}:{}: {}: {}",
                self.file, self.line, self.column, self.path, self.message
            ),
        }
    }
}

/// `sip:` section: listeners and RFC 3261 / RFC 4028 protocol settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SipSettings {
    pub listen: Vec<Listen>,
    /// Host to put in Via/Contact/Record-Route instead of the listen address (NAT).
    pub advertise: Option<String>,
    /// RFC 3261 §17.1.1.1 T1 (RTT estimate).
    pub t1: Duration,
    /// RFC 3261 §17.1.2.2 T2 (max retransmit interval for non-INVITE).
    pub t2: Duration,
    /// RFC 3261 §17.1.2.2 T4 (max time a message stays in the network).
    pub t4: Duration,
    pub max_message_size: usize,
    /// Max-Forwards on requests holdfast originates (RFC 3261 §8.1.1.6).
    pub max_forwards: u8,
    /// RFC 4028 Session-Expires asked for on each leg.
    pub session_expires: Duration,
    /// RFC 4028 Min-SE.
    pub min_se: Duration,
    pub user_agent: String,
    /// Answer UDP requests at their source port even without `;rport` (Kamailio's
    /// force_rport): for peers behind NAT that do not ask for RFC 3581.
    pub force_rport: bool,
    /// What requests from addresses outside every target's `sources` get.
    pub unknown_sources: UnknownSources,
    /// Unknown sources whose OPTIONS are answered anyway (monitoring pingers).
    pub answer_options: Vec<Source>,
    /// User-Agent substrings (lowercase) whose out-of-dialog requests are dropped.
    pub scanners: Vec<String>,
    /// Per-source rate limits and blocking (`sip.limits`).
    pub limits: SipLimits,
}

/// `sip.unknown_sources`: the answer to a request from an address that is not a carrier's
/// or provider's `sources`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnknownSources {
    /// Nothing at all (the default): holdfast does not exist for them.
    Drop,
    /// A stateless 403, one per request received (rate-limited per source).
    Reject,
}

impl UnknownSources {
    pub fn as_str(self) -> &'static str {
        match self {
            UnknownSources::Drop => "drop",
            UnknownSources::Reject => "reject",
        }
    }
}

/// A token bucket: `rate` new requests per second, up to `burst` at once after a quiet spell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    pub rate: u32,
    pub burst: u32,
}

/// `sip.limits`: what a source may send outside dialogs before it is dropped, then blocked
/// (Kamailio's pike, with a token bucket per source).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SipLimits {
    /// Each unknown source that gets answers at all (`unknown_sources: reject`, or
    /// `answer_options` pingers).
    pub per_source: RateLimit,
    /// Each address of a carrier's or provider's `sources`, unless the target sets its own
    /// `limits` (resolved into [`Target::limits`]); `None` = unlimited.
    pub known_sources: Option<RateLimit>,
    /// The window over which a source's excess is judged (pike's sampling_time_unit).
    pub sampling_interval: Duration,
    /// How long a source that sent twice its rate over a sampling interval is blocked.
    pub block_time: Duration,
    /// At most one log line per source (and one summary line) per this interval.
    pub log_interval: Duration,
    /// Sources tracked per table (known, unknown); the least recently used is forgotten.
    pub max_sources: usize,
}

/// An IP address family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum IpFamily {
    V4,
    V6,
}

impl IpFamily {
    pub fn of(ip: IpAddr) -> IpFamily {
        match ip.to_canonical() {
            IpAddr::V4(_) => IpFamily::V4,
            IpAddr::V6(_) => IpFamily::V6,
        }
    }

    /// `IP4` / `IP6`, as SDP's `addrtype` (RFC 4566 §5.7) and the logs write it.
    pub fn as_str(self) -> &'static str {
        match self {
            IpFamily::V4 => "IP4",
            IpFamily::V6 => "IP6",
        }
    }
}

/// Where relay sockets of one address family bind, and what SDP says for them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct MediaAddr {
    /// Local IP the relay sockets bind to (`::` binds a dual-stack socket).
    pub bind: IpAddr,
    /// IP written into SDP (`c=`, `o=`, `a=rtcp`) for peers to send to (NAT, cloud).
    pub advertise: IpAddr,
}

/// The relay addresses, at most one per IP family (`media.bind`, `media.advertise`): a
/// call's leg is anchored in the family of its peer when holdfast has an address of that
/// family, else in the first one configured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct MediaAddrs {
    pub v4: Option<MediaAddr>,
    pub v6: Option<MediaAddr>,
    /// The family listed first (the fallback for peers of a family not configured).
    pub first: IpFamily,
}

impl MediaAddrs {
    /// One address, serving every peer (of `family` and, as the fallback, the other).
    pub fn single_of(family: IpFamily, addr: MediaAddr) -> MediaAddrs {
        let mut m = MediaAddrs {
            v4: None,
            v6: None,
            first: family,
        };
        m.insert(family, addr);
        m
    }

    /// One address: its family is the advertised address's.
    pub fn single(addr: MediaAddr) -> MediaAddrs {
        MediaAddrs::single_of(IpFamily::of(addr.advertise), addr)
    }

    fn insert(&mut self, family: IpFamily, addr: MediaAddr) {
        match family {
            IpFamily::V4 => self.v4 = Some(addr),
            IpFamily::V6 => self.v6 = Some(addr),
        }
    }

    /// The address of `family`, if one is configured.
    pub fn get(&self, family: IpFamily) -> Option<MediaAddr> {
        match family {
            IpFamily::V4 => self.v4,
            IpFamily::V6 => self.v6,
        }
    }

    /// The family a leg whose peer is `family` is anchored in: the same when configured,
    /// else the first one.
    pub fn family_for(&self, family: IpFamily) -> IpFamily {
        if self.get(family).is_some() {
            family
        } else {
            self.first
        }
    }

    /// The address of `family` (or of the first family, see [`Self::family_for`]).
    pub fn addr(&self, family: IpFamily) -> MediaAddr {
        let fam = self.family_for(family);
        self.get(fam).or(self.v4).or(self.v6).unwrap_or(MediaAddr {
            bind: IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
            advertise: IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
        })
    }

    /// The configured addresses, first family first.
    pub fn iter(&self) -> impl Iterator<Item = MediaAddr> {
        let (a, b) = match self.first {
            IpFamily::V4 => (self.v4, self.v6),
            IpFamily::V6 => (self.v6, self.v4),
        };
        a.into_iter().chain(b)
    }

    /// The IPv4 relay address the raw I/O path filters on (unspecified for a dual-stack
    /// `::`); `None` without IPv4 relays.
    pub fn v4_bind(&self) -> Option<std::net::Ipv4Addr> {
        match self.v4?.bind {
            IpAddr::V4(a) => Some(a),
            IpAddr::V6(_) => Some(std::net::Ipv4Addr::UNSPECIFIED),
        }
    }
}

/// `media:` section: where and how every call's RTP is anchored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MediaSettings {
    /// Where relay sockets bind and what SDP advertises, one per IP family.
    pub addrs: MediaAddrs,
    /// Relay port range: RTP on even ports, RTCP on the odd port above.
    pub ports: std::ops::RangeInclusive<u16>,
    /// Media worker threads.
    pub threads: usize,
    /// How relay datagrams reach the workers.
    pub io: MediaIo,
    /// No RTP or RTCP from a carrier leg for this long: its liveness check runs (silence
    /// alone never ends a call).
    pub timeout: Duration,
    /// No RTP or RTCP from an AI leg for this long: its liveness check runs (silence alone
    /// never moves or ends a call).
    pub ai_timeout: Duration,
    /// How long a liveness check (OPTIONS, WebSocket ping) waits for its answer.
    pub check_timeout: Duration,
    /// Which sources may become a leg's RTP peer besides its SDP address, for targets
    /// without their own `latching`.
    pub latching: crate::media::relay::Latching,
    /// How long after a leg gets its SDP address only that exact address latches.
    pub learning_window: Duration,
    /// A relay port found bound by another process (EADDRINUSE) stays out of the range
    /// this long, then is tried again.
    pub port_quarantine: Duration,
}

/// How holdfast checks on a leg whose peer went silent (`liveness` of a carrier or AI
/// provider). Silence makes a leg suspect; only the check's failure (or another confirmed
/// failure: ICMP unreachable, a transport error, a BYE with an error cause, a failed
/// refresh, the WebSocket dropping) moves or ends the call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Liveness {
    /// An OPTIONS outside the dialog to the peer's Contact, on the dialog's flow, plus an
    /// empty datagram to its media port: any response means the user agent is alive. The
    /// default for SIP AI providers.
    Options,
    /// An OPTIONS inside the dialog: 481 (or no answer) means the dialog is gone. For
    /// peers known to accept it; some user agents end a call on an unexpected in-dialog
    /// request.
    InDialogOptions,
    /// A session refresh (UPDATE, or a re-INVITE with the same SDP; RFC 4028): a 481, 408
    /// or no answer means the session is gone. The default for carriers.
    Refresh,
    /// A WebSocket ping: no pong means the connection is gone. The default (and only check)
    /// for WebSocket providers.
    Ping,
    /// No check: only confirmed failures move or end the call.
    Off,
}

impl Liveness {
    pub fn as_str(self) -> &'static str {
        match self {
            Liveness::Options => "options",
            Liveness::InDialogOptions => "in-dialog-options",
            Liveness::Refresh => "refresh",
            Liveness::Ping => "ping",
            Liveness::Off => "off",
        }
    }
}

/// How relay datagrams reach the workers (`media.io`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MediaIo {
    /// `raw` when it can be set up (IPv4 bind, CAP_NET_RAW and CAP_BPF), else `socket`.
    Auto,
    /// Each relay port's own UDP socket: an epoll wakeup, `recvmmsg` and `sendmmsg` per
    /// socket with packets waiting. Works everywhere, any address family.
    Socket,
    /// One raw IPv4 socket per worker with an eBPF filter selecting its relays' ports:
    /// one `recvmmsg` and one `sendmmsg` per batch of packets of MANY streams.
    Raw,
}

impl MediaIo {
    pub fn as_str(self) -> &'static str {
        match self {
            MediaIo::Auto => "auto",
            MediaIo::Socket => "socket",
            MediaIo::Raw => "raw",
        }
    }
}

/// `dns:` section (RFC 3263 lookups).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsSettings {
    /// Empty = the system resolver configuration.
    pub nameservers: Vec<SocketAddr>,
    /// Floor for re-resolution, whatever the record TTL says.
    pub min_ttl: Duration,
}

/// What to do when every candidate of a rule is down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AllDownPolicy {
    /// Refuse the call (503).
    Reject,
    /// Try the not-full in-region targets anyway, as if healthy.
    FailOpen,
}

/// Passive circuit breaker (`health.breaker`): at low rates `failures` consecutive failed
/// attempts within `window` open it; once `min_attempts` attempts fall within `window`, it
/// opens when `failure_percent` % of the last `min_attempts` failed. It stays open for
/// `cooldown`, then ramps up until `probe_successes` successes close it. At most
/// `max_ejection_percent` % of a rule's targets are kept out by their breakers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BreakerSettings {
    pub failures: u32,
    pub window: Duration,
    pub cooldown: Duration,
    pub failure_percent: u8,
    pub min_attempts: u32,
    pub probe_successes: u32,
    pub max_ejection_percent: u8,
}

/// `health:` section. Per-target `ping` / `alive_codes` are resolved into each [`Target`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthSettings {
    pub ping_interval: Duration,
    pub ping_timeout: Duration,
    /// Consecutive failed pings before a target is marked down.
    pub down_after: u32,
    /// Consecutive good pings before a down target is marked up.
    pub up_after: u32,
    /// Default OPTIONS response codes that mean "alive".
    pub alive_codes: Vec<u16>,
    pub breaker: BreakerSettings,
    pub all_down: AllDownPolicy,
}

/// When a failed attempt moves on to the next candidate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailoverPolicy {
    pub failover_codes: Vec<CodeSpec>,
    pub no_failover_codes: Vec<CodeSpec>,
}

impl FailoverPolicy {
    /// Whether a final response `status` should make the B2BUA try the next candidate.
    /// 1xx/2xx never; `no_failover_codes` always wins; otherwise only codes listed in
    /// `failover_codes` (so 6xx, a global failure per RFC 3261 §21.6, only if listed).
    pub fn should_failover(&self, status: u16) -> bool {
        if !(300..=699).contains(&status) {
            return false;
        }
        if self.no_failover_codes.iter().any(|c| c.matches(status)) {
            return false;
        }
        self.failover_codes.iter().any(|c| c.matches(status))
    }
}

/// `routing:` section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoutingSettings {
    /// No provisional response within this -> next candidate.
    pub attempt_timeout: Duration,
    /// A candidate that sent a provisional but no final within this is cancelled and
    /// counted as a timeout (a proxy's Timer C, RFC 3261 §16.6 step 11).
    pub ring_timeout: Duration,
    pub failover: FailoverPolicy,
    /// Seed for weighted selection (tests); `None` = the runtime picks one per call.
    pub seed: Option<u64>,
}

/// Which side a target is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    Carrier,
    AiProvider,
}

impl Role {
    pub fn noun(self) -> &'static str {
        match self {
            Role::Carrier => "carrier",
            Role::AiProvider => "AI provider",
        }
    }
}

/// A carrier or an AI provider, with defaults and health overrides resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub id: TargetId,
    pub role: Role,
    pub uri: TargetUri,
    pub region: String,
    /// Lower is tried first (like SRV, RFC 2782).
    pub priority: u16,
    /// Relative share among equal priority; 0 = only after every weighted one.
    pub weight: u16,
    /// `None` = unlimited.
    pub max_calls: Option<u32>,
    pub sources: Vec<Source>,
    /// Whether to OPTIONS-ping it.
    pub ping: bool,
    /// OPTIONS response codes that mean alive (the target's override or `health.alive_codes`).
    pub alive_codes: Vec<u16>,
    /// Extra headers on the INVITE holdfast sends to this target.
    pub headers: Vec<(String, String)>,
    /// How its legs' media latches (its `latching`, else `media.latching`; always strict
    /// for a WebSocket provider, whose audio comes from holdfast's own bridge).
    pub latching: crate::media::relay::Latching,
    /// The rate limit for each of its source addresses (its own `limits`, else
    /// `sip.limits.known_sources`); `None` = unlimited.
    pub limits: Option<RateLimit>,
    /// For WebSocket AI providers (`kind: media-stream | openai-realtime`): how to reach
    /// and speak to them. `None` for SIP targets. `uri` then holds the URL's host and port.
    pub ws: Option<std::sync::Arc<crate::ai::control::WsProvider>>,
    /// How a silent leg to or from this target is checked.
    pub liveness: Liveness,
}

/// Direction of a route rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// From a carrier to the AI side.
    Inbound,
    /// From an AI provider to the PSTN.
    Outbound,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }
    }
}

/// One validated route rule (`routes.inbound[i]` / `routes.outbound[i]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteRule {
    pub direction: Direction,
    /// Position in its list in the file.
    pub index: usize,
    /// Callee number prefix (normalised); empty matches everything.
    pub to: String,
    /// Caller number prefix (normalised); empty matches everything.
    pub from: String,
    /// Which targets the call may come from (carriers for inbound, AI providers for
    /// outbound); empty = any.
    pub origins: Vec<TargetId>,
    pub regions: Vec<String>,
    /// Candidates, in file order (AI providers for inbound, carriers for outbound).
    pub targets: Vec<TargetId>,
}

impl RouteRule {
    /// `inbound[0]`-style name for logs and `Reason` headers.
    pub fn name(&self) -> String {
        format!("{}[{}]", self.direction.as_str(), self.index)
    }
}

/// `routes:` section.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Routes {
    pub inbound: Vec<RouteRule>,
    pub outbound: Vec<RouteRule>,
}

/// What the caller hears while the AI leg is re-routed, and what happens when no provider
/// is left (`ai:` section).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AiSettings {
    /// Played toward the caller during a re-route gap; `None` = silence.
    pub gap_audio: Option<crate::media::filler::GapAudio>,
    pub no_provider: NoProvider,
    /// Where `call.ai_rerouted` events are POSTed.
    pub webhook: Option<WebhookSettings>,
}

impl Default for AiSettings {
    fn default() -> Self {
        AiSettings {
            gap_audio: Some(crate::media::filler::GapAudio::ComfortNoise),
            no_provider: NoProvider::Hangup,
            webhook: None,
        }
    }
}

/// A mid-call re-route that finds no allowed provider (`ai.no_provider.action`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NoProvider {
    /// BYE to the caller at once, with a Reason.
    Hangup,
    /// Play this prompt to the caller, then hang up.
    Prompt(crate::media::filler::GapAudio),
    /// Dial this number through the outbound carrier routing (within the call's regions)
    /// and connect the caller to it; hang up if no carrier takes it.
    Transfer { number: String },
}

/// `ai.webhook`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookSettings {
    pub url: String,
    pub timeout: std::time::Duration,
}

/// The whole validated configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// The file name used in messages.
    pub file_name: String,
    /// `node.id`: this node's name in call ids; `None` = a random prefix per process.
    pub node_id: Option<String>,
    pub sip: SipSettings,
    pub dns: DnsSettings,
    pub health: HealthSettings,
    pub routing: RoutingSettings,
    pub media: MediaSettings,
    pub carriers: Vec<Target>,
    pub ai_providers: Vec<Target>,
    pub routes: Routes,
    pub ai: AiSettings,
    pub admin: AdminSettings,
    pub records: RecordsSettings,
}

/// The longest `node.id`.
pub const MAX_NODE_ID_LEN: usize = 32;

/// `admin:` section: the admin HTTP API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminSettings {
    /// Where the API listens; `None` = `listen: off`.
    pub listen: Option<std::net::SocketAddr>,
    /// The bearer token every route but `/live` requires, read from the environment
    /// variable `token_env` names; `None` = no authentication (loopback listeners only).
    pub token: Option<crate::ai::control::Secret>,
    /// The variable's name, for messages.
    pub token_env: Option<String>,
}

/// The admin API's address when the file names none.
pub const DEFAULT_ADMIN_LISTEN: std::net::SocketAddr = std::net::SocketAddr::V4(
    std::net::SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, 9090),
);

impl Default for AdminSettings {
    fn default() -> Self {
        AdminSettings {
            listen: Some(DEFAULT_ADMIN_LISTEN),
            token: None,
            token_env: None,
        }
    }
}

/// `records:` section: one JSON line per finished call.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum RecordsSettings {
    /// No call records (no `records:` section, or no `path`).
    #[default]
    Off,
    /// `path: "-"`.
    Stdout,
    /// Appended to this file (relative paths are relative to the config file).
    File(std::path::PathBuf),
}

impl Config {
    /// All targets: carriers first, then AI providers, each in file order.
    pub fn targets(&self) -> impl Iterator<Item = &Target> {
        self.carriers.iter().chain(self.ai_providers.iter())
    }

    /// The target with this id.
    pub fn target(&self, id: &str) -> Option<&Target> {
        self.targets().find(|t| &*t.id == id)
    }
}

impl fmt::Display for AllDownPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AllDownPolicy::Reject => "reject",
            AllDownPolicy::FailOpen => "fail_open",
        })
    }
}

/// Reads and validates a config file. Errors name the path as given.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let file_name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: file_name.clone(),
        line: 0,
        column: 0,
        path: String::new(),
        message: format!("cannot read the configuration: {e}"),
    })?;
    parse(&text, &file_name)
}

/// Parses and validates config text; `file_name` is used in error messages.
pub fn parse(text: &str, file_name: &str) -> Result<Config, ConfigError> {
    validate::parse(text, file_name)
}

#[cfg(test)]
mod tests;
