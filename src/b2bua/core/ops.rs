//! What operators see and steer in the core: call and target views for the admin API,
//! cordon and the drill's fail switch, readiness, the counters behind `/metrics`, and call
//! records.
//!
//! Does: build plain, serializable snapshots from the core's own state (`call_views`,
//! `target_views`), apply operator actions as core inputs (`set_cordoned`, `set_failed`),
//! count what happens (`CoreMetrics`, updated inline by the call logic) and assemble one
//! [`CallRecord`] per finished call (`poll_record`).
//!
//! Never: touches a socket, a file or the clock; an operator action never ends a call in
//! progress (a cordon only affects new calls; `fail` re-routes AI legs like a health
//! check that turned down, and leaves carrier legs up).
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Instant;

use super::{CallEntry, Core};
use crate::admin::metrics::{Counters, Exposition, Histogram, GAP_BUCKETS, RTT_BUCKETS};
use crate::b2bua::call::{CallState, Direction, Leg, Reroute, Side};
use crate::b2bua::record::{AttemptRecord, CallRecord, Hangup, MediaRecord};
use crate::config::Role;
use crate::health::{AttemptOutcome, BreakerState, BreakerStatus, Health, HealthEvent, State};
use crate::routing::TargetId;

/// The core's counters and histograms (label values in the keys).
#[derive(Debug)]
pub(crate) struct CoreMetrics {
    /// (direction, outcome): completed | failed | cancelled | refused.
    pub calls: Counters<(&'static str, &'static str)>,
    /// (target, outcome): answered | failed | rejected.
    pub attempts: Counters<(String, &'static str)>,
    /// (target, reason): timeout | transport_error | a status code.
    pub failovers: Counters<(String, String)>,
    /// (target, to): up | down.
    pub health_transitions: Counters<(String, &'static str)>,
    pub breaker_openings: Counters<String>,
    /// Calls planned in panic mode, by rule.
    pub panic_plans: Counters<String>,
    /// Calls whose plan kept a target in rotation against its open breaker
    /// (`max_ejection_percent`), by rule.
    pub capped_plans: Counters<String>,
    /// Round-trip time of health probes (OPTIONS; the handshake for WebSocket providers).
    pub probe_rtt: BTreeMap<String, Histogram>,
    /// Re-routes started, by trigger.
    pub reroutes: Counters<&'static str>,
    pub reroute_gap: Histogram,
    /// Liveness checks of silent legs, by (leg: carrier | ai, result: started | alive |
    /// failed | unconfirmed).
    pub liveness_checks: Counters<(&'static str, &'static str)>,
    /// Relay opens the shell could not bind, by errno name (`BindFailure::as_str`).
    pub bind_failures: Counters<&'static str>,
    /// Relay ports found bound by another process and quarantined.
    pub ports_quarantined_total: u64,
    /// Offers refused because no relay port was left.
    pub ports_exhausted_total: u64,
}

impl Default for CoreMetrics {
    fn default() -> Self {
        CoreMetrics {
            calls: Counters::default(),
            attempts: Counters::default(),
            failovers: Counters::default(),
            health_transitions: Counters::default(),
            breaker_openings: Counters::default(),
            panic_plans: Counters::default(),
            capped_plans: Counters::default(),
            probe_rtt: BTreeMap::new(),
            reroutes: Counters::default(),
            reroute_gap: Histogram::new(GAP_BUCKETS),
            liveness_checks: Counters::default(),
            bind_failures: Counters::default(),
            ports_quarantined_total: 0,
            ports_exhausted_total: 0,
        }
    }
}

impl CoreMetrics {
    /// Counts a target's (not an address's) state change.
    pub fn health_event(&mut self, ev: &HealthEvent<TargetId>) {
        if ev.dest.is_some() {
            return;
        }
        let target = ev.target.to_string();
        match (ev.from, ev.to) {
            // A new target's first confirmation is not a change of health.
            (State::Unknown, State::Up) | (_, State::Unknown) => {}
            (_, State::Up) => self.health_transitions.inc((target, "up")),
            (_, State::Down) => self.health_transitions.inc((target, "down")),
            (_, State::Breaker(BreakerState::Open)) => self.breaker_openings.inc(target),
            (_, State::Breaker(_)) => {}
        }
    }

    /// A probe sent at `sent` was answered at `now`.
    pub fn probe_rtt(&mut self, sent: Option<(TargetId, Instant)>, now: Instant) {
        if let Some((target, at)) = sent {
            self.probe_rtt
                .entry(target.to_string())
                .or_insert_with(|| Histogram::new(RTT_BUCKETS))
                .observe(now.saturating_duration_since(at).as_secs_f64());
        }
    }
}

/// What is known of a call refused before it existed.
pub(super) struct Refusal<'a> {
    pub direction: Direction,
    pub origin: &'a str,
    pub caller: &'a str,
    pub callee: &'a str,
    /// The rule's name and regions, once a rule matched.
    pub rule: Option<(&'a str, &'a [String])>,
}

/// The `reason` label of a failover.
pub(super) fn failover_reason(status: u16, outcome: AttemptOutcome) -> String {
    match outcome {
        AttemptOutcome::Timeout => "timeout".into(),
        AttemptOutcome::TransportError => "transport_error".into(),
        _ => status.to_string(),
    }
}

/// One leg of a call as the admin API shows it.
#[derive(Clone, Debug, Serialize)]
pub struct LegView {
    /// `carrier`, `sip`, `media-stream` or `openai-realtime`.
    pub kind: &'static str,
    /// The target this leg faces.
    pub target: Option<String>,
    /// The leg's SIP Call-ID (`None` for a WebSocket leg).
    pub call_id: Option<String>,
    pub remote: Option<String>,
    pub transport: Option<&'static str>,
}

/// Both legs.
#[derive(Clone, Debug, Serialize)]
pub struct LegsView {
    pub carrier: Option<LegView>,
    pub ai: Option<LegView>,
}

/// One anchored stream: holdfast's ports and the peers latched on each leg.
#[derive(Clone, Debug, Serialize)]
pub struct StreamView {
    pub index: u16,
    pub carrier_port: u16,
    pub ai_port: u16,
    pub carrier_peer: Option<String>,
    pub ai_peer: Option<String>,
}

/// A call in progress (`GET /calls`).
#[derive(Clone, Debug, Serialize)]
pub struct CallView {
    pub id: String,
    pub direction: &'static str,
    pub state: &'static str,
    pub caller: String,
    pub callee: String,
    pub rule: String,
    pub regions: Vec<String>,
    pub age_ms: u64,
    /// Time since the answer, while answered.
    pub answered_ms: Option<u64>,
    /// The carrier leg's carrier.
    pub carrier: Option<String>,
    /// The AI provider the call is on now (being set up, while routing or re-routing).
    pub ai_provider: Option<String>,
    /// AI providers in the order the call used or tried them.
    pub providers: Vec<String>,
    pub legs: LegsView,
    pub attempts: Vec<AttemptRecord>,
    pub reroutes: Vec<Reroute>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transfer_to: Option<String>,
    pub streams: Vec<StreamView>,
    /// Live per-leg counters; filled by the shell from the media workers.
    pub media: Option<MediaRecord>,
    /// The relays' ids (`call` number), for the shell to look up live counters.
    #[serde(skip)]
    pub relay_call: u64,
}

/// A target's circuit breaker in detail (`GET /targets`: `breaker_detail`).
#[derive(Clone, Debug, Serialize)]
pub struct BreakerView {
    /// `closed`, `open` or `half-open`.
    pub state: &'static str,
    /// Why: "2 consecutive timeouts within 30s", "cooldown 30s elapsed", …
    pub reason: String,
    pub since_ms: u64,
    /// Open: when the half-open ramp starts.
    pub half_open_in_ms: Option<u64>,
    /// Closed: the rule that would open it now: `consecutive` (fewer than `min_attempts`
    /// attempts within `window`) or `ratio`.
    pub rule: Option<&'static str>,
    /// Closed: attempts judged within `window` (the last `min_attempts` at most), how many
    /// failed, and the current run of consecutive failures.
    pub window_attempts: usize,
    pub window_failures: usize,
    pub consecutive_failures: usize,
    /// Half-open: successes so far, probe calls sent and allowed so far (one, then two more
    /// per success).
    pub probe_successes: u32,
    pub probes_sent: u32,
    pub probes_allowed: u32,
}

fn breaker_view(b: &BreakerStatus, now: Instant) -> BreakerView {
    let closed = b.state == BreakerState::Closed;
    BreakerView {
        state: b.state.as_str(),
        reason: b.reason.clone(),
        since_ms: millis_since(now, b.since),
        half_open_in_ms: b.open_until.map(|u| millis_since(u, now)),
        rule: closed.then_some(if b.high_rate { "ratio" } else { "consecutive" }),
        window_attempts: b.window_verdicts,
        window_failures: b.window_failures,
        consecutive_failures: b.consecutive_failures,
        probe_successes: b.probe_successes,
        probes_sent: b.probes_started,
        probes_allowed: b.probes_allowed,
    }
}

/// One address of a target.
#[derive(Clone, Debug, Serialize)]
pub struct AddressView {
    pub addr: String,
    pub transport: &'static str,
    pub health: &'static str,
    pub reason: String,
    pub last_rtt_ms: Option<f64>,
}

/// A carrier or AI provider (`GET /targets`).
#[derive(Clone, Debug, Serialize)]
pub struct TargetView {
    pub id: String,
    /// `carrier`, `sip`, `media-stream` or `openai-realtime`.
    pub kind: &'static str,
    pub region: String,
    pub priority: u16,
    pub weight: u16,
    /// `up`, `unknown` (not confirmed by a ping yet, or still being resolved: it takes
    /// calls) or `down`.
    pub health: &'static str,
    pub reason: String,
    pub health_since_ms: u64,
    /// Whether new calls may be sent there now (health, breaker, cordon, capacity).
    pub available: bool,
    pub cordoned: bool,
    /// The drill switch (`POST /targets/{id}/fail`).
    pub failed: bool,
    /// `closed`, `open` or `half-open`.
    pub breaker: String,
    pub breaker_detail: Option<BreakerView>,
    pub last_rtt_ms: Option<f64>,
    pub active_calls: u32,
    pub max_calls: Option<u32>,
    pub ping: bool,
    pub addresses: Vec<AddressView>,
}

fn millis_since(now: Instant, then: Instant) -> u64 {
    u64::try_from(now.saturating_duration_since(then).as_millis()).unwrap_or(u64::MAX)
}

fn state_name(s: CallState) -> &'static str {
    match s {
        CallState::Routing => "routing",
        CallState::Early => "early",
        CallState::Answered => "answered",
        CallState::Confirmed => "confirmed",
        CallState::Rerouting => "rerouting",
        CallState::Ending => "ending",
    }
}

fn leg_view(leg: &Leg, kind: &'static str, target: Option<String>) -> LegView {
    LegView {
        kind,
        target,
        call_id: Some(leg.call_id.clone()),
        remote: Some(leg.flow.remote.to_string()),
        transport: Some(leg.flow.transport.as_str()),
    }
}

impl Core {
    /// Whether `id` names an AI provider in the running config (a target a reload removed
    /// counts as one when it is not a known carrier).
    fn is_provider(&self, id: &str) -> bool {
        self.config
            .target(id)
            .is_none_or(|t| t.role == Role::AiProvider)
    }

    fn sip_or_ws_kind(&self, target: Option<&str>) -> &'static str {
        target
            .and_then(|t| self.config.target(t))
            .and_then(|t| t.ws.as_ref().map(|w| w.kind.as_str()))
            .unwrap_or("sip")
    }

    /// The AI providers of a call, in the order used or tried.
    fn providers_of(&self, e: &CallEntry) -> Vec<String> {
        let call = &e.call;
        match call.direction {
            Direction::Outbound => vec![call.origin.clone()],
            Direction::Inbound => {
                let mut out: Vec<String> = Vec::new();
                for a in &call.attempts {
                    if self.is_provider(&a.target) && !out.contains(&a.target) {
                        out.push(a.target.clone());
                    }
                }
                out
            }
        }
    }

    fn call_view_of(&self, e: &CallEntry, now: Instant) -> CallView {
        let call = &e.call;
        let current = call
            .attempts
            .last()
            .filter(|_| call.pinned.is_none() || call.state == CallState::Rerouting)
            .map(|a| a.target.clone())
            .or_else(|| call.pinned.clone());
        let (carrier, ai_provider) = match call.direction {
            Direction::Inbound => (
                Some(call.origin.clone()),
                current.clone().filter(|_| call.transfer_to.is_none()),
            ),
            Direction::Outbound => (current.clone(), Some(call.origin.clone())),
        };
        let b_view = match (&call.b, &call.ws) {
            (Some(b), _) => {
                let kind = if call.direction == Direction::Outbound || call.transfer_to.is_some() {
                    "carrier"
                } else {
                    self.sip_or_ws_kind(current.as_deref())
                };
                Some(leg_view(b, kind, current.clone()))
            }
            (None, Some(ws)) => Some(LegView {
                kind: ws.kind.as_str(),
                target: Some(ws.provider.clone()),
                call_id: None,
                remote: self
                    .config
                    .target(&ws.provider)
                    .and_then(|t| t.ws.as_ref().map(|w| w.url.clone())),
                transport: Some("websocket"),
            }),
            (None, None) => None,
        };
        let (a_kind, a_target) = match call.direction {
            Direction::Inbound => ("carrier", Some(call.origin.clone())),
            Direction::Outbound => ("sip", Some(call.origin.clone())),
        };
        let a_view = Some(leg_view(&call.a, a_kind, a_target));
        let legs = match call.direction {
            Direction::Inbound => LegsView {
                carrier: a_view,
                ai: b_view,
            },
            Direction::Outbound => LegsView {
                carrier: b_view,
                ai: a_view,
            },
        };
        let (carrier_side, ai_side) = match call.direction {
            Direction::Inbound => (0, 1),
            Direction::Outbound => (1, 0),
        };
        let streams = call
            .media
            .as_ref()
            .map(|m| {
                m.streams
                    .iter()
                    .map(|s| {
                        let port = |i: usize| {
                            if i == 0 {
                                s.ports.a.rtp
                            } else {
                                s.ports.b.rtp
                            }
                        };
                        StreamView {
                            index: s.index,
                            carrier_port: port(carrier_side),
                            ai_port: port(ai_side),
                            carrier_peer: s.latched[carrier_side].map(|a| a.to_string()),
                            ai_peer: s.latched[ai_side].map(|a| a.to_string()),
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        CallView {
            id: call.id.clone(),
            direction: match call.direction {
                Direction::Inbound => "inbound",
                Direction::Outbound => "outbound",
            },
            state: state_name(call.state),
            caller: call.caller.clone(),
            callee: call.callee.clone(),
            rule: call.rule.clone(),
            regions: call.regions.clone(),
            age_ms: millis_since(now, e.started),
            answered_ms: e.answered_at.map(|t| millis_since(now, t)),
            carrier,
            ai_provider,
            providers: self.providers_of(e),
            legs,
            attempts: attempt_records(call),
            reroutes: call.reroutes.clone(),
            transfer_to: call.transfer_to.clone(),
            streams,
            media: None,
            relay_call: call.media.as_ref().map_or(0, |m| m.call),
        }
    }

    /// Every call in progress, oldest first.
    pub fn call_views(&self, now: Instant) -> Vec<CallView> {
        let mut v: Vec<(&Instant, CallView)> = self
            .calls
            .values()
            .map(|e| (&e.started, self.call_view_of(e, now)))
            .collect();
        v.sort_by(|a, b| a.0.cmp(b.0).then_with(|| a.1.id.cmp(&b.1.id)));
        v.into_iter().map(|(_, c)| c).collect()
    }

    /// The call with holdfast id `id`, or whose carrier- or AI-leg Call-ID is `id`.
    pub fn call_view(&self, id: &str, now: Instant) -> Option<CallView> {
        self.calls
            .values()
            .find(|e| {
                e.call.id == id
                    || e.call.a.call_id == id
                    || e.call.b.as_ref().is_some_and(|b| b.call_id == id)
            })
            .map(|e| self.call_view_of(e, now))
    }

    /// One configured target.
    pub fn target_view(&self, id: &str, now: Instant) -> Option<TargetView> {
        let t = self.config.target(id)?;
        let status = self.health.status(&t.id, now);
        let ms = |d: std::time::Duration| d.as_secs_f64() * 1000.0;
        let view = super::View {
            health: &self.health,
            targets: &self.targets,
            cordoned: &self.cordoned,
            now,
        };
        use crate::routing::AvailabilityView;
        let active = view.active_calls(&t.id);
        let available = view.is_healthy(&t.id)
            && !view.is_cordoned(&t.id)
            && t.max_calls.is_none_or(|m| active < m);
        Some(TargetView {
            id: t.id.to_string(),
            kind: match (t.role, &t.ws) {
                (Role::Carrier, _) => "carrier",
                (Role::AiProvider, Some(ws)) => ws.kind.as_str(),
                (Role::AiProvider, None) => "sip",
            },
            region: t.region.clone(),
            priority: t.priority,
            weight: t.weight,
            health: status.as_ref().map_or(Health::Down, |s| s.state).as_str(),
            reason: status
                .as_ref()
                .map(|s| s.reason.clone())
                .unwrap_or_default(),
            health_since_ms: status.as_ref().map_or(0, |s| millis_since(now, s.since)),
            available,
            cordoned: self.cordoned.contains(&t.id),
            failed: status.as_ref().is_some_and(|s| s.forced_down),
            breaker: status
                .as_ref()
                .map_or_else(|| "closed".into(), |s| s.breaker_status.state.to_string()),
            breaker_detail: status
                .as_ref()
                .map(|s| breaker_view(&s.breaker_status, now)),
            last_rtt_ms: status.as_ref().and_then(|s| s.last_rtt).map(ms),
            active_calls: active,
            max_calls: t.max_calls,
            ping: t.ping,
            addresses: status
                .map(|s| {
                    s.addresses
                        .iter()
                        .map(|a| AddressView {
                            addr: a.dest.addr.to_string(),
                            transport: a.dest.transport.as_str(),
                            health: a.state.as_str(),
                            reason: a.reason.clone(),
                            last_rtt_ms: a.last_rtt.map(ms),
                        })
                        .collect()
                })
                .unwrap_or_default(),
        })
    }

    /// Every configured target: carriers, then AI providers, in file order.
    pub fn target_views(&self, now: Instant) -> Vec<TargetView> {
        self.config
            .targets()
            .filter_map(|t| self.target_view(&t.id, now))
            .collect()
    }

    /// Cordons (or uncordons) target `id`: no new calls; calls on it stay. `None` when no
    /// such target is configured.
    pub fn set_cordoned(&mut self, id: &str, on: bool, now: Instant) -> Option<TargetView> {
        let t = self.config.target(id)?.id.clone();
        let changed = if on {
            self.cordoned.insert(t.clone())
        } else {
            self.cordoned.remove(&t)
        };
        if changed {
            tracing::info!(target_id = %t, "{}", if on { "cordoned: no new calls" } else { "uncordoned" });
        }
        self.target_view(id, now)
    }

    /// The drill switch: treat target `id` as failed (down) or lift that. New calls avoid a
    /// failed target; calls on a failed AI provider are re-routed (trigger `health_down`).
    pub fn set_failed(&mut self, id: &str, on: bool, now: Instant) -> Option<TargetView> {
        let t = self.config.target(id)?.id.clone();
        if let Err(e) = self.health.set_forced_down(&t, on, now) {
            tracing::warn!(target_id = %t, "fail switch: {e}");
        }
        tracing::warn!(target_id = %t, "{}", if on { "fail switch on: treated as failed" } else { "fail switch off: restored" });
        self.after_health(now);
        self.target_view(id, now)
    }

    /// Ready for traffic: the first health round is done and holdfast is not draining.
    /// Once the first round is done it stays done (re-resolved addresses do not flap it).
    pub fn is_ready(&mut self, now: Instant) -> bool {
        if !self.first_round_done {
            self.first_round_done = self.health.first_round_done(now);
        }
        self.first_round_done && !self.draining
    }

    /// Whether records wait for their relays' final statistics.
    pub fn records_waiting(&self) -> bool {
        !self.records_pending.is_empty()
    }

    /// At exit: the records still waiting for their relays' statistics, as they are.
    pub fn take_pending_records(&mut self) -> Vec<CallRecord> {
        let mut v: Vec<CallRecord> = self.records.drain(..).collect();
        v.extend(self.records_pending.drain().map(|(_, r)| r));
        v
    }

    /// A call that was refused before it existed (no route, no candidate, a bad offer):
    /// counted, and recorded when it already had an id.
    pub(super) fn refused(
        &mut self,
        id: Option<&str>,
        r: &Refusal<'_>,
        status: u16,
        why: &str,
        now: Instant,
    ) {
        let (direction, origin, caller, callee, rule) =
            (r.direction, r.origin, r.caller, r.callee, r.rule);
        let dir = match direction {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        };
        self.metrics.calls.inc((dir, "refused"));
        let Some(id) = id else { return };
        self.records.push_back(CallRecord {
            id: id.to_string(),
            direction: dir,
            origin: origin.to_string(),
            caller: caller.to_string(),
            callee: callee.to_string(),
            rule: rule.map(|r| r.0.to_string()).unwrap_or_default(),
            regions: rule.map(|r| r.1.to_vec()).unwrap_or_default(),
            started: now,
            answered: None,
            ended: now,
            start: None,
            answered_at: None,
            end: None,
            setup_ms: None,
            duration_ms: 0,
            outcome: "refused",
            status: Some(status),
            hangup: Hangup {
                by: "holdfast",
                reason: why.to_string(),
            },
            attempts: Vec::new(),
            carrier: (direction == Direction::Inbound).then(|| origin.to_string()),
            ai_providers: match direction {
                Direction::Inbound => Vec::new(),
                Direction::Outbound => vec![origin.to_string()],
            },
            reroutes: Vec::new(),
            transfer_to: None,
            media: MediaRecord::default(),
        });
    }

    /// The record of call `e`, which ends now for `why`; counts it in the metrics.
    pub(super) fn call_record(&mut self, e: &CallEntry, why: &str, now: Instant) -> CallRecord {
        let call = &e.call;
        let direction = match call.direction {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        };
        let outcome = if e.answered_at.is_some() {
            "completed"
        } else if call.cancelled {
            "cancelled"
        } else if call.attempts.is_empty() {
            // No attempt at all: e.g. it waited for its targets' first resolution in vain.
            "refused"
        } else {
            "failed"
        };
        self.metrics.calls.inc((direction, outcome));
        let ended = e.ended_at.unwrap_or(now);
        let leg_name = |side: Side| match (call.direction, side) {
            (Direction::Inbound, Side::A) | (Direction::Outbound, Side::B) => "carrier",
            _ => "ai",
        };
        let by = match (e.ended_by, call.cancelled) {
            (Some(side), _) => leg_name(side),
            (None, true) => leg_name(Side::A),
            (None, false) => "holdfast",
        };
        CallRecord {
            id: call.id.clone(),
            direction,
            origin: call.origin.clone(),
            caller: call.caller.clone(),
            callee: call.callee.clone(),
            rule: call.rule.clone(),
            regions: call.regions.clone(),
            started: e.started,
            answered: e.answered_at,
            ended,
            start: None,
            answered_at: None,
            end: None,
            setup_ms: e.answered_at.map(|t| millis_since(t, e.started)),
            duration_ms: e.answered_at.map_or(0, |t| millis_since(ended, t)),
            outcome,
            status: e
                .final_status
                .or(e.answered_at.map(|_| 200))
                .or(call.cancelled.then_some(487)),
            hangup: Hangup {
                by,
                reason: call.end_reason.clone().unwrap_or_else(|| why.to_string()),
            },
            attempts: attempt_records(call),
            carrier: match call.direction {
                Direction::Inbound => Some(call.origin.clone()),
                Direction::Outbound => call.pinned.clone(),
            },
            ai_providers: self.providers_of(e),
            reroutes: call.reroutes.clone(),
            transfer_to: call.transfer_to.clone(),
            media: MediaRecord::default(),
        }
    }

    /// Writes the core's metric families as of `now`.
    pub fn render_metrics(&self, out: &mut Exposition, now: Instant) {
        let m = &self.metrics;
        out.gauge1(
            "holdfast_calls_active",
            "Calls in progress.",
            self.calls.len() as f64,
        );
        out.counter(
            "holdfast_calls_total",
            "Calls ended, by direction and outcome (completed = answered; failed; cancelled by the caller; refused before any attempt).",
            m.calls
                .iter()
                .map(|((d, o), v)| (vec![("direction", *d), ("outcome", *o)], v)),
        );
        out.counter(
            "holdfast_attempts_total",
            "Call attempts (INVITEs or WebSocket sessions to a target) by target and outcome (answered, failed = failed over, rejected = the callee's answer).",
            m.attempts
                .iter()
                .map(|((t, o), v)| (vec![("target", t.as_str()), ("outcome", *o)], v)),
        );
        out.counter(
            "holdfast_failovers_total",
            "Attempts that moved on to the next candidate, by target that failed and reason (timeout, transport_error or the status code).",
            m.failovers
                .iter()
                .map(|((t, r), v)| (vec![("target", t.as_str()), ("reason", r.as_str())], v)),
        );
        out.counter(
            "holdfast_health_transitions_total",
            "Target health changes, by target and new state.",
            m.health_transitions
                .iter()
                .map(|((t, to), v)| (vec![("target", t.as_str()), ("to", *to)], v)),
        );
        out.histogram(
            "holdfast_options_rtt_seconds",
            "Round-trip time of health probes (SIP OPTIONS; the WebSocket handshake for WebSocket providers), by target.",
            m.probe_rtt
                .iter()
                .map(|(t, h)| (vec![("target", t.as_str())], h)),
        );
        out.counter(
            "holdfast_breaker_openings_total",
            "Circuit breaker openings, by target.",
            m.breaker_openings
                .iter()
                .map(|(t, v)| (vec![("target", t.as_str())], v)),
        );
        out.gauge(
            "holdfast_breaker_state",
            "1 for the state the target's circuit breaker is in (closed, open, half-open), 0 for the others.",
            self.config.targets().flat_map(|t| {
                let state = self
                    .health
                    .status(&t.id, now)
                    .map_or(BreakerState::Closed, |s| s.breaker_status.state);
                [BreakerState::Closed, BreakerState::Open, BreakerState::HalfOpen]
                    .into_iter()
                    .map(move |s| {
                        (
                            vec![("target", t.id.as_str()), ("state", s.as_str())],
                            if s == state { 1.0 } else { 0.0 },
                        )
                    })
            }),
        );
        out.counter(
            "holdfast_routing_panic_total",
            "Calls routed in panic mode, by rule: every target of the rule that health lets take calls was ejected by its circuit breaker, and they were tried anyway.",
            m.panic_plans
                .iter()
                .map(|(r, v)| (vec![("rule", r.as_str())], v)),
        );
        out.counter(
            "holdfast_routing_ejection_capped_total",
            "Calls whose plan kept a target whose circuit breaker is open, by rule: more of the rule's targets were ejected than health.breaker.max_ejection_percent allows.",
            m.capped_plans
                .iter()
                .map(|(r, v)| (vec![("rule", r.as_str())], v)),
        );
        out.counter(
            "holdfast_reroutes_total",
            "Mid-call re-routes of the AI leg started, by trigger.",
            m.reroutes.iter().map(|(t, v)| (vec![("trigger", *t)], v)),
        );
        out.counter1(
            "holdfast_reroutes_failed_total",
            "Re-routes that found no AI provider left.",
            self.stats.reroutes_failed,
        );
        out.histogram(
            "holdfast_reroute_gap_seconds",
            "Silence the caller heard during a re-route: last audio of the old AI provider to first audio of the new one.",
            [(vec![], &m.reroute_gap)],
        );
        out.counter(
            "holdfast_liveness_checks_total",
            "Liveness checks of legs that fell silent, by leg (carrier, ai) and result (started; alive; failed = confirmed gone; unconfirmed = unanswered by a peer not known to answer, the call stays).",
            m.liveness_checks
                .iter()
                .map(|((l, r), v)| (vec![("leg", *l), ("result", *r)], v)),
        );
        out.counter1(
            "holdfast_sip_parse_errors_total",
            "SIP messages refused as malformed.",
            self.stats.parse_errors,
        );
        let dropped = self.guard.dropped();
        out.counter(
            "holdfast_sip_dropped_total",
            "SIP messages dropped unanswered before parsing, by reason (unknown_source, scanner, rate_limited, blocked, stray).",
            crate::guard::DropReason::ALL
                .iter()
                .map(|r| (vec![("reason", r.as_str())], dropped.get(*r))),
        );
        out.counter(
            "holdfast_sip_rejected_total",
            "Requests answered with a stateless 403 (sip.unknown_sources: reject), by reason.",
            [(vec![("reason", "unknown_source")], self.guard.rejected())],
        );
        out.gauge1(
            "holdfast_sip_sources_blocked",
            "Source addresses blocked now for staying over their rate limit.",
            self.guard.blocked_sources() as f64,
        );
        let (known, unknown) = self.guard.tracked_sources();
        out.gauge(
            "holdfast_sip_sources_tracked",
            "Source addresses with rate-limit state, by table (bounded by sip.limits.max_sources each).",
            [
                (vec![("table", "known")], known as f64),
                (vec![("table", "unknown")], unknown as f64),
            ],
        );
        out.gauge1(
            "holdfast_media_ports_in_use",
            "Relay ports allocated.",
            self.ports.in_use() as f64,
        );
        out.gauge1(
            "holdfast_media_ports_capacity",
            "Relay ports in media.ports.",
            self.ports.capacity() as f64,
        );
        out.gauge1(
            "holdfast_media_ports_available",
            "Relay ports free to allocate (capacity minus in use and quarantined).",
            self.ports.available() as f64,
        );
        out.gauge1(
            "holdfast_media_ports_quarantined",
            "Relay ports out of the range because another process held them (EADDRINUSE); each is tried again after media.port_quarantine.",
            self.ports.quarantined() as f64,
        );
        out.counter1(
            "holdfast_media_ports_quarantined_total",
            "Relay ports found bound by another process and quarantined (the call moved to other ports).",
            m.ports_quarantined_total,
        );
        out.counter1(
            "holdfast_media_ports_exhausted_total",
            "Offers refused (503) because no relay port was left in media.ports.",
            m.ports_exhausted_total,
        );
        out.counter(
            "holdfast_media_bind_failures_total",
            "Relay socket binds that failed, by errno (EADDRINUSE: port quarantined, call retried on other ports; EMFILE, ENFILE, ENOBUFS, ENOMEM, other: call refused with 503, ports back in the pool).",
            m.bind_failures
                .iter()
                .map(|(e, v)| (vec![("errno", *e)], v)),
        );
        let now_views: Vec<(String, Health, bool, bool, u32)> = self
            .config
            .targets()
            .map(|t| {
                let status = self.health.status(&t.id, now);
                let health = status.as_ref().map_or(Health::Down, |s| s.state);
                let forced = status.as_ref().is_some_and(|s| s.forced_down);
                let active = self.targets.get(&t.id).map_or(0, |s| s.active_calls);
                (
                    t.id.to_string(),
                    health,
                    self.cordoned.contains(&t.id),
                    forced,
                    active,
                )
            })
            .collect();
        let flag = |b: bool| if b { 1.0 } else { 0.0 };
        out.gauge(
            "holdfast_target_up",
            "1 when the target's health lets it take calls (up, or unknown: not confirmed by a ping yet); 0 when down.",
            now_views
                .iter()
                .map(|(t, h, ..)| (vec![("target", t.as_str())], flag(h.takes_calls()))),
        );
        out.gauge(
            "holdfast_target_unknown",
            "1 while the target's health is unknown: added (at start or by a reload) and not answered a ping yet, or still being resolved.",
            now_views.iter().map(|(t, h, ..)| {
                (vec![("target", t.as_str())], flag(*h == Health::Unknown))
            }),
        );
        out.gauge(
            "holdfast_target_cordoned",
            "1 when an operator cordoned the target.",
            now_views
                .iter()
                .map(|(t, _, c, ..)| (vec![("target", t.as_str())], flag(*c))),
        );
        out.gauge(
            "holdfast_target_failed",
            "1 while the drill switch treats the target as failed.",
            now_views
                .iter()
                .map(|(t, _, _, f, _)| (vec![("target", t.as_str())], flag(*f))),
        );
        out.gauge(
            "holdfast_target_active_calls",
            "Calls in progress on the target.",
            now_views
                .iter()
                .map(|(t, .., a)| (vec![("target", t.as_str())], f64::from(*a))),
        );
        out.gauge1(
            "holdfast_draining",
            "1 while draining.",
            flag(self.draining),
        );
    }
}

fn attempt_records(call: &crate::b2bua::call::Call) -> Vec<AttemptRecord> {
    call.attempts
        .iter()
        .map(|a| AttemptRecord {
            target: a.target.clone(),
            remote: a.remote.to_string(),
            transport: a.transport.as_str(),
            outcome: a.outcome.clone().unwrap_or_else(|| "in progress".into()),
        })
        .collect()
}
