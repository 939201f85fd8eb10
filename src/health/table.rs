//! [`HealthTable`]: all targets' health in one sans-IO state machine.
//!
//! It schedules OPTIONS pings per address, times them out, feeds the per-address
//! [`Hysteresis`] and the per-target [`CircuitBreaker`], and reports every state change as a
//! [`HealthEvent`]. It never sends a request, never reads a clock (every input carries
//! `now`) and never parses SIP: a ping result is just a status code, or its absence.
//!
//! # LIFECYCLE
//!
//! Per address: `Unknown` until its first successful ping, then `Up`/`Down` by hysteresis
//! (see `LIFECYCLE.md`); a probe is in flight for at most `ping_timeout`, and the next one is
//! due `ping_interval` after the previous one was sent. Per target: `Up` if some address is
//! `Up`, else `Unknown` if some address is `Unknown` (or its addresses were never set and
//! `ping_timeout` has not passed since it was added), else `Down`; forced down is `Down`.
//! A target takes calls while `Up` or `Unknown` with an address; it is *available* when its
//! breaker allows an attempt too, and *ejected* when only the breaker keeps it out.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::hash::Hash;
use std::time::{Duration, Instant};

use super::breaker::{AttemptOutcome, BreakerConfig, BreakerState, BreakerStatus, CircuitBreaker};
use super::hysteresis::{Hysteresis, UpDown};
use super::{fmt_duration, Destination};

/// Table-wide settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthSettings {
    /// Time between two OPTIONS pings to the same address (measured send to send).
    pub ping_interval: Duration,
    /// A ping with no final response after this long counts as a failure.
    pub ping_timeout: Duration,
    /// Consecutive failed pings that mark an address down.
    pub down_after: u32,
    /// Consecutive successful pings that mark an address up again.
    pub up_after: u32,
    /// State of a newly added address before its first result. `Up` (the default) lets a
    /// fresh target take calls at once; it is pinged immediately anyway.
    pub initial_state: UpDown,
    /// Passive circuit breaker thresholds, per target.
    pub breaker: BreakerConfig,
}

impl Default for HealthSettings {
    fn default() -> Self {
        Self {
            ping_interval: Duration::from_secs(5),
            ping_timeout: Duration::from_secs(2),
            down_after: 3,
            up_after: 2,
            initial_state: UpDown::Up,
            breaker: BreakerConfig::default(),
        }
    }
}

/// Per-target health configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetHealthConfig {
    /// Final response codes to OPTIONS that mean "alive" (some carriers answer 404 or 403 to
    /// OPTIONS while happily taking INVITEs).
    pub alive_codes: Vec<u16>,
    /// Whether to send OPTIONS pings at all. When off, every address counts as up and only the
    /// breaker (and the admin switch) can take the target out.
    pub ping: bool,
}

impl Default for TargetHealthConfig {
    fn default() -> Self {
        Self {
            alive_codes: vec![200],
            ping: true,
        }
    }
}

/// Identifies one OPTIONS ping handed out by [`HealthTable::poll_probe`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProbeId(pub u64);

/// An OPTIONS ping the caller must send now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe<K> {
    /// Report the response with this id.
    pub id: ProbeId,
    /// The target being checked.
    pub target: K,
    /// Where to send the OPTIONS.
    pub dest: Destination,
}

/// What the health checks say about a target or one of its addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Health {
    /// Answered its pings (or pinging is off).
    Up,
    /// Not known yet: added and not pinged successfully yet (nor failed `down_after` times),
    /// or a target whose addresses are still being resolved. Takes calls: a restart or a
    /// reload never refuses calls while the first pings are under way.
    Unknown,
    /// Failed `down_after` pings in a row, forced down, or no address to send to.
    Down,
}

impl Health {
    /// `up`, `unknown` or `down` (admin API).
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Up => "up",
            Health::Unknown => "unknown",
            Health::Down => "down",
        }
    }

    /// Up or unknown: health does not keep it from taking calls.
    pub fn takes_calls(self) -> bool {
        self != Health::Down
    }
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What routing may do with a target now, as [`HealthTable::availability`] sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Availability {
    /// Up or unknown, with an address, and its breaker allows an attempt.
    Usable,
    /// Health would let it take calls, but its circuit breaker keeps it out: open since
    /// `since` (or half-open with its probe slots taken).
    Ejected {
        /// When the breaker last changed state.
        since: Instant,
    },
    /// Its addresses are being resolved for the first time and `ping_timeout` has not
    /// passed since it was added: a call may wait for it until `until`.
    Pending {
        /// When the wait ends (the target is down from then on if still unresolved).
        until: Instant,
    },
    /// Down by its health checks, forced down, not resolved, or unknown to the table.
    Down,
}

/// A state in a [`HealthEvent`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// Address or target up.
    Up,
    /// Address or target not known yet (no successful ping yet).
    Unknown,
    /// Address or target down.
    Down,
    /// Target breaker state.
    Breaker(BreakerState),
}

impl From<UpDown> for State {
    fn from(s: UpDown) -> Self {
        match s {
            UpDown::Up => State::Up,
            UpDown::Down => State::Down,
        }
    }
}

impl From<Health> for State {
    fn from(s: Health) -> Self {
        match s {
            Health::Up => State::Up,
            Health::Unknown => State::Unknown,
            Health::Down => State::Down,
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            State::Up => f.write_str("up"),
            State::Unknown => f.write_str("unknown"),
            State::Down => f.write_str("down"),
            State::Breaker(b) => write!(f, "breaker {b}"),
        }
    }
}

/// One state change, for the logs (and later the admin API).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthEvent<K> {
    /// The target concerned.
    pub target: K,
    /// `Some` for an address transition, `None` for a target or breaker transition.
    pub dest: Option<Destination>,
    /// Previous state.
    pub from: State,
    /// New state.
    pub to: State,
    /// Human reason, e.g. "3 consecutive OPTIONS timeouts (2s)".
    pub reason: String,
    /// When it happened.
    pub at: Instant,
}

/// Snapshot of one address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressStatus {
    /// The address.
    pub dest: Destination,
    /// Up, unknown (not answered a ping yet) or down.
    pub state: Health,
    /// Why it is in that state.
    pub reason: String,
    /// Since when.
    pub since: Instant,
    /// Round-trip time of the last successful OPTIONS.
    pub last_rtt: Option<Duration>,
    /// Current run of failed pings.
    pub consecutive_failures: u32,
    /// Whether a ping is outstanding.
    pub probe_in_flight: bool,
}

/// Snapshot of one target, for logs and the admin API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetStatus {
    /// Up if an address is up, unknown if none is but one is unknown (or the target's
    /// addresses are still being resolved), down otherwise or when forced down. The breaker
    /// is separate.
    pub state: Health,
    /// Why.
    pub reason: String,
    /// Since when.
    pub since: Instant,
    /// Administratively forced down.
    pub forced_down: bool,
    /// Breaker state as last advanced.
    pub breaker: BreakerState,
    /// Since when the breaker is in that state.
    pub breaker_since: Instant,
    /// The breaker in detail, advanced to the instant of the snapshot.
    pub breaker_status: BreakerStatus,
    /// RTT of the most recent successful OPTIONS to any address.
    pub last_rtt: Option<Duration>,
    /// Whether OPTIONS pings are enabled.
    pub ping: bool,
    /// Per address, in RFC 3263 order.
    pub addresses: Vec<AddressStatus>,
}

/// Errors of [`HealthTable`] inputs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HealthError {
    /// The target was never added with [`HealthTable::set_target`] (or was removed).
    #[error("unknown health target")]
    UnknownTarget,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PingFailure {
    Timeout,
    Status(u16),
    Transport,
}

impl fmt::Display for PingFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PingFailure::Timeout => f.write_str("timeout"),
            PingFailure::Status(code) => write!(f, "{code}"),
            PingFailure::Transport => f.write_str("transport error"),
        }
    }
}

enum PingResult {
    Alive { status: u16, rtt: Duration },
    Failed(PingFailure),
}

#[derive(Debug)]
struct Address {
    dest: Destination,
    hysteresis: Hysteresis,
    since: Instant,
    reason: String,
    /// `None` while a probe is in flight or pinging is off.
    next_ping_at: Option<Instant>,
    in_flight: Option<ProbeId>,
    last_rtt: Option<(Instant, Duration)>,
    /// A ping succeeded since the address was added: it is no longer `Unknown`.
    answered: bool,
    /// The most recent failures of the current run (at most `down_after`), for the reason.
    failure_run: VecDeque<PingFailure>,
}

#[derive(Debug)]
struct Target {
    config: TargetHealthConfig,
    addresses: Vec<Address>,
    breaker: CircuitBreaker,
    forced_down: bool,
    state: Health,
    since: Instant,
    reason: String,
    /// Addresses were never set: until then the target is `Unknown` ("not resolved yet"),
    /// until `resolve_by` (`ping_timeout` after it was added).
    resolving: bool,
    resolve_by: Instant,
}

impl Address {
    fn health(&self, pinged: bool) -> Health {
        match self.hysteresis.state() {
            UpDown::Down => Health::Down,
            UpDown::Up if pinged && !self.answered => Health::Unknown,
            UpDown::Up => Health::Up,
        }
    }
}

#[derive(Debug)]
struct InFlight<K> {
    target: K,
    dest: Destination,
    sent_at: Instant,
    deadline: Instant,
}

/// Health of every target. `K` is the target id (e.g. `Arc<str>` or a routing `TargetId`).
///
/// Driving loop for the caller: on every input call the matching `handle_*`, then drain
/// [`Self::poll_probe`] (send an OPTIONS for each) and [`Self::poll_event`] (log each), and
/// wake up at [`Self::poll_timeout`] to call [`Self::handle_timeout`] and drain again.
#[derive(Debug)]
pub struct HealthTable<K> {
    settings: HealthSettings,
    targets: HashMap<K, Target>,
    in_flight: HashMap<ProbeId, InFlight<K>>,
    next_probe_id: u64,
    events: VecDeque<HealthEvent<K>>,
}

impl<K: Clone + Eq + Hash> HealthTable<K> {
    /// An empty table.
    pub fn new(settings: HealthSettings) -> Self {
        Self {
            settings,
            targets: HashMap::new(),
            in_flight: HashMap::new(),
            next_probe_id: 1,
            events: VecDeque::new(),
        }
    }

    /// New table-wide settings (a config reload). Breakers and up/down thresholds take the
    /// new values now; ping interval and timeout apply from each address's next ping.
    pub fn set_settings(&mut self, settings: HealthSettings) {
        for t in self.targets.values_mut() {
            t.breaker.set_config(settings.breaker);
            for a in &mut t.addresses {
                a.hysteresis
                    .set_thresholds(settings.down_after, settings.up_after);
            }
        }
        self.settings = settings;
    }

    /// The settings in force.
    pub fn settings(&self) -> &HealthSettings {
        &self.settings
    }

    /// Whether `id` is known.
    pub fn contains(&self, id: &K) -> bool {
        self.targets.contains_key(id)
    }

    /// Ids of all known targets (in no particular order).
    pub fn target_ids(&self) -> impl Iterator<Item = &K> {
        self.targets.keys()
    }

    /// Add a target or update its configuration. A new target has no addresses until
    /// [`Self::set_addresses`]: it is `Unknown` ("not resolved yet") and
    /// [`Availability::Pending`] for `ping_timeout`, then `Down`. Updating keeps address and breaker
    /// state; switching pinging on pings every address at once, switching it off marks every
    /// address up (no evidence either way) and forgets outstanding probes.
    pub fn set_target(&mut self, id: K, config: TargetHealthConfig, now: Instant) {
        let Self {
            settings,
            targets,
            in_flight,
            events,
            ..
        } = self;
        match targets.get_mut(&id) {
            None => {
                targets.insert(
                    id,
                    Target {
                        config,
                        addresses: Vec::new(),
                        breaker: CircuitBreaker::new(settings.breaker, now),
                        forced_down: false,
                        state: Health::Unknown,
                        since: now,
                        reason: "not resolved yet".to_owned(),
                        resolving: true,
                        resolve_by: now + settings.ping_timeout,
                    },
                );
            }
            Some(target) => {
                let was_pinging = target.config.ping;
                target.config = config;
                target.breaker.set_config(settings.breaker);
                match (was_pinging, target.config.ping) {
                    (false, true) => {
                        for addr in &mut target.addresses {
                            addr.next_ping_at = Some(now);
                        }
                    }
                    (true, false) => {
                        for addr in &mut target.addresses {
                            if let Some(probe) = addr.in_flight.take() {
                                in_flight.remove(&probe);
                            }
                            addr.next_ping_at = None;
                            addr.failure_run.clear();
                            if addr.health(true) != Health::Up {
                                addr.since = now;
                            }
                            addr.hysteresis.reset(UpDown::Up);
                            addr.reason = "pinging disabled".to_owned();
                        }
                        recompute_target(&id, target, events, now, "pinging disabled");
                    }
                    _ => {}
                }
            }
        }
    }

    /// Forget a target, its addresses and outstanding probes (late responses are ignored).
    /// Returns whether it was known.
    pub fn remove_target(&mut self, id: &K) -> bool {
        let Some(target) = self.targets.remove(id) else {
            return false;
        };
        for addr in &target.addresses {
            if let Some(probe) = addr.in_flight {
                self.in_flight.remove(&probe);
            }
        }
        true
    }

    /// Replace the resolved addresses of a target, in RFC 3263 order. Addresses already known
    /// keep their state; new ones start in `initial_state` (`Up` is shown as `Unknown` until
    /// the first successful ping) and are pinged at once; addresses
    /// no longer listed are dropped with their outstanding probes. Duplicates are ignored.
    pub fn set_addresses(
        &mut self,
        id: &K,
        dests: Vec<Destination>,
        now: Instant,
    ) -> Result<(), HealthError> {
        let Self {
            settings,
            targets,
            in_flight,
            events,
            ..
        } = self;
        let target = targets.get_mut(id).ok_or(HealthError::UnknownTarget)?;
        target.resolving = false;
        let mut old = std::mem::take(&mut target.addresses);
        let mut added = 0usize;
        for dest in dests {
            if target.addresses.iter().any(|a| a.dest == dest) {
                continue;
            }
            if let Some(pos) = old.iter().position(|a| a.dest == dest) {
                target.addresses.push(old.swap_remove(pos));
                continue;
            }
            added += 1;
            let (hysteresis, reason) = if target.config.ping {
                (
                    Hysteresis::new(
                        settings.initial_state,
                        settings.down_after,
                        settings.up_after,
                    ),
                    "new address, not pinged yet".to_owned(),
                )
            } else {
                (
                    Hysteresis::new(UpDown::Up, settings.down_after, settings.up_after),
                    "pinging disabled".to_owned(),
                )
            };
            target.addresses.push(Address {
                dest,
                hysteresis,
                since: now,
                reason,
                next_ping_at: target.config.ping.then_some(now),
                in_flight: None,
                last_rtt: None,
                answered: false,
                failure_run: VecDeque::new(),
            });
        }
        let removed = old.len();
        for addr in old {
            if let Some(probe) = addr.in_flight {
                in_flight.remove(&probe);
            }
        }
        let cause = format!(
            "addresses updated ({} total, {added} new, {removed} removed)",
            target.addresses.len()
        );
        recompute_target(id, target, events, now, &cause);
        Ok(())
    }

    /// Administratively force a target down (or lift it), e.g. for a failover drill.
    pub fn set_forced_down(
        &mut self,
        id: &K,
        forced: bool,
        now: Instant,
    ) -> Result<(), HealthError> {
        let target = self.targets.get_mut(id).ok_or(HealthError::UnknownTarget)?;
        if target.forced_down != forced {
            target.forced_down = forced;
            let cause = if forced {
                "administratively forced down"
            } else {
                "administrative force-down lifted"
            };
            recompute_target(id, target, &mut self.events, now, cause);
        }
        Ok(())
    }

    /// The next OPTIONS ping to send now, if any is due. Call repeatedly until `None`.
    /// Each address is pinged every `ping_interval` (the first time right away) with at most
    /// one probe outstanding.
    pub fn poll_probe(&mut self, now: Instant) -> Option<Probe<K>> {
        let mut best: Option<(Instant, &K, usize)> = None;
        for (id, target) in &self.targets {
            if !target.config.ping {
                continue;
            }
            for (i, addr) in target.addresses.iter().enumerate() {
                if addr.in_flight.is_some() {
                    continue;
                }
                if let Some(due) = addr.next_ping_at {
                    if due <= now && best.is_none_or(|(b, _, _)| due < b) {
                        best = Some((due, id, i));
                    }
                }
            }
        }
        let (_, id, index) = best?;
        let id = id.clone();
        let probe_id = ProbeId(self.next_probe_id);
        self.next_probe_id += 1;
        let target = self.targets.get_mut(&id)?;
        let addr = target.addresses.get_mut(index)?;
        addr.in_flight = Some(probe_id);
        addr.next_ping_at = None;
        let dest = addr.dest;
        self.in_flight.insert(
            probe_id,
            InFlight {
                target: id.clone(),
                dest,
                sent_at: now,
                deadline: now + self.settings.ping_timeout,
            },
        );
        Some(Probe {
            id: probe_id,
            target: id,
            dest,
        })
    }

    /// A final response to a ping. A status in the target's `alive_codes` is a success,
    /// anything else a failure. Provisional (1xx) responses are ignored (RFC 3261 §17.1.2: the
    /// transaction goes on). Responses to unknown, timed-out or dropped probes are ignored.
    /// Returns whether the response was used.
    pub fn handle_probe_response(&mut self, probe: ProbeId, status: u16, now: Instant) -> bool {
        if status < 200 {
            return false;
        }
        let Some(flight) = self.in_flight.remove(&probe) else {
            return false;
        };
        let Some(target) = self.targets.get(&flight.target) else {
            return false;
        };
        let result = if target.config.alive_codes.contains(&status) {
            PingResult::Alive {
                status,
                rtt: now.saturating_duration_since(flight.sent_at),
            }
        } else {
            PingResult::Failed(PingFailure::Status(status))
        };
        self.finish_probe(probe, &flight, result, now);
        true
    }

    /// A call attempt to `target` is being sent now. In breaker half-open state this attempt
    /// is the single probe; calling this is what keeps a flood of calls from hitting a
    /// target that is only being tested.
    pub fn handle_attempt_started(&mut self, target: &K, now: Instant) {
        if let Some(t) = self.targets.get_mut(target) {
            t.breaker.handle_attempt_started(now);
            drain_breaker(target, t, &mut self.events, now);
        }
    }

    /// The outcome of a call attempt to `dest` of `target`; feeds the breaker. A transport
    /// error also counts as a failed ping of that address (it is at least as strong evidence
    /// as an unanswered OPTIONS).
    pub fn handle_attempt(
        &mut self,
        target: &K,
        dest: &Destination,
        outcome: AttemptOutcome,
        now: Instant,
    ) {
        let Some(t) = self.targets.get_mut(target) else {
            return;
        };
        t.breaker.handle_outcome(outcome, now);
        drain_breaker(target, t, &mut self.events, now);
        if outcome == AttemptOutcome::TransportError && t.config.ping {
            if let Some(index) = t.addresses.iter().position(|a| a.dest == *dest) {
                self.record_ping(
                    target,
                    index,
                    PingResult::Failed(PingFailure::Transport),
                    now,
                );
            }
        }
    }

    /// Whether new calls may be sent to `target` now: known, up or unknown with an address
    /// (not forced down), and its breaker allows an attempt.
    pub fn is_available(&self, target: &K, now: Instant) -> bool {
        self.availability(target, now) == Availability::Usable
    }

    /// Whether health (OPTIONS pings, resolution, the admin switch) lets `target` take calls,
    /// whatever its breaker says: up or unknown, with an address.
    pub fn takes_calls(&self, target: &K) -> bool {
        self.targets
            .get(target)
            .is_some_and(|t| t.state.takes_calls() && !t.addresses.is_empty())
    }

    /// What routing may do with `target` now: see [`Availability`].
    pub fn availability(&self, target: &K, now: Instant) -> Availability {
        let Some(t) = self.targets.get(target) else {
            return Availability::Down;
        };
        if let Some(until) = pending_until(t) {
            if now < until {
                return Availability::Pending { until };
            }
        }
        if !t.state.takes_calls() || t.addresses.is_empty() {
            return Availability::Down;
        }
        if t.breaker.allows_attempt(now) {
            Availability::Usable
        } else {
            Availability::Ejected {
                since: t.breaker.since(),
            }
        }
    }

    /// Destinations to try for a new call, empty when the target is not available. Up and
    /// unknown addresses come first, in `set_addresses` (RFC 3263) order; down addresses
    /// follow, in the same order, as a last resort (they may have recovered since their last
    /// ping).
    pub fn available_destinations(&self, target: &K, now: Instant) -> Vec<Destination> {
        if !self.is_available(target, now) {
            return Vec::new();
        }
        self.destinations(target)
    }

    /// The destinations of `target` in the order of [`Self::available_destinations`],
    /// whatever its health and breaker say (for plans that override them: panic mode,
    /// `max_ejection_percent`, `all_down: fail_open`).
    pub fn destinations(&self, target: &K) -> Vec<Destination> {
        let Some(t) = self.targets.get(target) else {
            return Vec::new();
        };
        let of = |down: bool| {
            t.addresses
                .iter()
                .filter(move |a| (a.health(t.config.ping) == Health::Down) == down)
        };
        of(false).chain(of(true)).map(|a| a.dest).collect()
    }

    /// The target and send time of probe `probe` while it is in flight (for RTT metrics).
    pub fn probe_in_flight(&self, probe: ProbeId) -> Option<(K, Instant)> {
        self.in_flight
            .get(&probe)
            .map(|f| (f.target.clone(), f.sent_at))
    }

    /// Whether the first health round is done at `now`: every target has been resolved (or
    /// given up on after `ping_timeout`) and every address of every pinged target has had
    /// at least one ping answered or failed.
    pub fn first_round_done(&self, now: Instant) -> bool {
        let resolved = self
            .targets
            .values()
            .all(|t| pending_until(t).is_none_or(|until| now >= until));
        resolved
            && self
                .targets
                .values()
                .filter(|t| t.config.ping)
                .flat_map(|t| t.addresses.iter())
                .all(|a| a.answered || a.last_rtt.is_some() || !a.failure_run.is_empty())
    }

    /// A snapshot of a target at `now`, `None` if unknown.
    pub fn status(&self, target: &K, now: Instant) -> Option<TargetStatus> {
        let t = self.targets.get(target)?;
        let last_rtt = t
            .addresses
            .iter()
            .filter_map(|a| a.last_rtt)
            .max_by_key(|&(at, _)| at)
            .map(|(_, rtt)| rtt);
        Some(TargetStatus {
            state: t.state,
            reason: t.reason.clone(),
            since: t.since,
            forced_down: t.forced_down,
            breaker: t.breaker.state(),
            breaker_since: t.breaker.since(),
            breaker_status: t.breaker.status(now),
            last_rtt,
            ping: t.config.ping,
            addresses: t
                .addresses
                .iter()
                .map(|a| AddressStatus {
                    dest: a.dest,
                    state: a.health(t.config.ping),
                    reason: a.reason.clone(),
                    since: a.since,
                    last_rtt: a.last_rtt.map(|(_, rtt)| rtt),
                    consecutive_failures: a.hysteresis.consecutive_failures(),
                    probe_in_flight: a.in_flight.is_some(),
                })
                .collect(),
        })
    }

    /// The earliest instant at which something is due: a probe deadline, a ping to send, a
    /// breaker cooldown end or the end of a target's first resolution wait. At that instant
    /// call [`Self::handle_timeout`], then drain [`Self::poll_probe`] and
    /// [`Self::poll_event`].
    pub fn poll_timeout(&self) -> Option<Instant> {
        let deadlines = self.in_flight.values().map(|f| f.deadline);
        let pings = self
            .targets
            .values()
            .filter(|t| t.config.ping)
            .flat_map(|t| t.addresses.iter())
            .filter(|a| a.in_flight.is_none())
            .filter_map(|a| a.next_ping_at);
        let breakers = self
            .targets
            .values()
            .filter_map(|t| t.breaker.poll_timeout());
        let resolving = self
            .targets
            .values()
            .filter(|t| t.state == Health::Unknown)
            .filter_map(pending_until);
        deadlines
            .chain(pings)
            .chain(breakers)
            .chain(resolving)
            .min()
    }

    /// Advance time: probes past `ping_timeout` count as failures (later responses are
    /// ignored), breakers past their cooldown go half-open and targets still not resolved
    /// `ping_timeout` after they were added go down.
    pub fn handle_timeout(&mut self, now: Instant) {
        let mut expired: Vec<(Instant, ProbeId)> = self
            .in_flight
            .iter()
            .filter(|(_, f)| f.deadline <= now)
            .map(|(&id, f)| (f.deadline, id))
            .collect();
        expired.sort();
        for (_, probe) in expired {
            if let Some(flight) = self.in_flight.remove(&probe) {
                self.finish_probe(
                    probe,
                    &flight,
                    PingResult::Failed(PingFailure::Timeout),
                    now,
                );
            }
        }
        let timeout = self.settings.ping_timeout;
        let Self {
            targets, events, ..
        } = self;
        for (id, target) in targets.iter_mut() {
            target.breaker.handle_timeout(now);
            drain_breaker(id, target, events, now);
            if target.state == Health::Unknown
                && pending_until(target).is_some_and(|until| now >= until)
            {
                let cause = format!("not resolved within {}", fmt_duration(timeout));
                recompute_target(id, target, events, now, &cause);
            }
        }
    }

    /// The next state change to log, oldest first.
    pub fn poll_event(&mut self) -> Option<HealthEvent<K>> {
        self.events.pop_front()
    }

    fn finish_probe(
        &mut self,
        probe: ProbeId,
        flight: &InFlight<K>,
        result: PingResult,
        now: Instant,
    ) {
        let interval = self.settings.ping_interval;
        let Some(target) = self.targets.get_mut(&flight.target) else {
            return;
        };
        let Some(index) = target
            .addresses
            .iter()
            .position(|a| a.in_flight == Some(probe))
        else {
            return;
        };
        if let Some(addr) = target.addresses.get_mut(index) {
            addr.in_flight = None;
            // Send-to-send spacing, so a timeout does not stretch the ping period; a probe
            // outstanding longer than the interval is followed by the next one at once.
            addr.next_ping_at = Some(flight.sent_at + interval);
            debug_assert_eq!(addr.dest, flight.dest);
        }
        let target_id = flight.target.clone();
        self.record_ping(&target_id, index, result, now);
    }

    fn record_ping(&mut self, id: &K, index: usize, result: PingResult, now: Instant) {
        let Self {
            settings,
            targets,
            events,
            ..
        } = self;
        let Some(target) = targets.get_mut(id) else {
            return;
        };
        let Some(addr) = target.addresses.get_mut(index) else {
            return;
        };
        let transition = match result {
            PingResult::Alive { status, rtt } => {
                addr.last_rtt = Some((now, rtt));
                addr.failure_run.clear();
                let first = !addr.answered;
                addr.answered = true;
                let t = addr.hysteresis.handle_result(true);
                if first && t.is_none() && addr.hysteresis.state() == UpDown::Up {
                    // Unknown → up: the first answer confirms a new address.
                    addr.reason = format!("OPTIONS {status} (rtt {})", fmt_rtt(rtt));
                    addr.since = now;
                    let dest = addr.dest;
                    let reason = addr.reason.clone();
                    events.push_back(HealthEvent {
                        target: id.clone(),
                        dest: Some(dest),
                        from: State::Unknown,
                        to: State::Up,
                        reason: reason.clone(),
                        at: now,
                    });
                    let cause = format!("{dest} up: {reason}");
                    recompute_target(id, target, events, now, &cause);
                    return;
                }
                if t.is_some() {
                    addr.reason = format!(
                        "{} consecutive OPTIONS successes (last {status}, rtt {})",
                        settings.up_after.max(1),
                        fmt_rtt(rtt)
                    );
                } else if addr.hysteresis.state() == UpDown::Up {
                    addr.reason = format!("OPTIONS {status} (rtt {})", fmt_rtt(rtt));
                }
                t
            }
            PingResult::Failed(failure) => {
                addr.failure_run.push_back(failure);
                while addr.failure_run.len() > settings.down_after.max(1) as usize {
                    addr.failure_run.pop_front();
                }
                let t = addr.hysteresis.handle_result(false);
                if t.is_some() {
                    addr.reason = ping_failure_reason(&addr.failure_run, settings.ping_timeout);
                }
                t
            }
        };
        let Some(transition) = transition else {
            return;
        };
        addr.since = now;
        let dest = addr.dest;
        let reason = addr.reason.clone();
        // An address that never answered goes down from unknown, not from up.
        let from = if transition.from == UpDown::Up && !addr.answered && target.config.ping {
            State::Unknown
        } else {
            transition.from.into()
        };
        events.push_back(HealthEvent {
            target: id.clone(),
            dest: Some(dest),
            from,
            to: transition.to.into(),
            reason: reason.clone(),
            at: now,
        });
        let cause = format!("{dest} {}: {reason}", transition.to);
        recompute_target(id, target, events, now, &cause);
    }
}

/// When a target still waiting for its first addresses stops being waited for.
fn pending_until(target: &Target) -> Option<Instant> {
    (target.resolving && !target.forced_down).then_some(target.resolve_by)
}

/// Re-derive the target state from its addresses and the admin switch; report a change.
fn recompute_target<K: Clone>(
    id: &K,
    target: &mut Target,
    events: &mut VecDeque<HealthEvent<K>>,
    now: Instant,
    cause: &str,
) {
    let total = target.addresses.len();
    let count = |h: Health| {
        target
            .addresses
            .iter()
            .filter(|a| a.health(target.config.ping) == h)
            .count()
    };
    let (up, unknown) = (count(Health::Up), count(Health::Unknown));
    let (state, reason) = if target.forced_down {
        (Health::Down, "administratively forced down".to_owned())
    } else if total == 0 && target.resolving && now < target.resolve_by {
        (Health::Unknown, "not resolved yet".to_owned())
    } else if total == 0 && target.resolving {
        (
            Health::Down,
            "not resolved in time: no address yet".to_owned(),
        )
    } else if total == 0 {
        (Health::Down, "no resolved addresses".to_owned())
    } else if up > 0 {
        (Health::Up, format!("{up} of {total} addresses up; {cause}"))
    } else if unknown > 0 {
        (
            Health::Unknown,
            format!("{unknown} of {total} addresses not pinged successfully yet; {cause}"),
        )
    } else {
        (Health::Down, format!("all {total} addresses down; {cause}"))
    };
    if state != target.state {
        events.push_back(HealthEvent {
            target: id.clone(),
            dest: None,
            from: target.state.into(),
            to: state.into(),
            reason: reason.clone(),
            at: now,
        });
        target.state = state;
        target.since = now;
        target.reason = reason;
    } else if state != Health::Down || total == 0 || target.forced_down {
        // Keep the summary current ("1 of 2 addresses up") without reporting a transition.
        target.reason = reason;
    }
}

fn drain_breaker<K: Clone>(
    id: &K,
    target: &mut Target,
    events: &mut VecDeque<HealthEvent<K>>,
    now: Instant,
) {
    while let Some(t) = target.breaker.poll_transition() {
        events.push_back(HealthEvent {
            target: id.clone(),
            dest: None,
            from: State::Breaker(t.from),
            to: State::Breaker(t.to),
            reason: t.reason,
            at: now,
        });
    }
}

/// "3 consecutive OPTIONS timeouts (2s)", "3 consecutive OPTIONS 503 responses", or a mixed
/// list.
fn ping_failure_reason(run: &VecDeque<PingFailure>, ping_timeout: Duration) -> String {
    let n = run.len();
    let Some(&first) = run.front() else {
        return "OPTIONS failed".to_owned();
    };
    if run.iter().all(|&f| f == first) {
        match first {
            PingFailure::Timeout => format!(
                "{n} consecutive OPTIONS timeouts ({})",
                fmt_duration(ping_timeout)
            ),
            PingFailure::Status(code) => {
                format!("{n} consecutive OPTIONS {code} responses (not an alive code)")
            }
            PingFailure::Transport => format!("{n} consecutive transport errors"),
        }
    } else {
        let list: Vec<String> = run.iter().map(ToString::to_string).collect();
        format!("{n} consecutive OPTIONS failures ({})", list.join(", "))
    }
}

fn fmt_rtt(rtt: Duration) -> String {
    if rtt >= Duration::from_secs(1) {
        format!("{:.3}s", rtt.as_secs_f64())
    } else {
        format!("{}ms", rtt.as_millis())
    }
}

#[cfg(test)]
mod tests;
