//! Passive circuit breaker fed by real call attempts (INVITE outcomes) to one target, in the
//! manner of Envoy's outlier detection: a consecutive-failure rule for low call rates, a
//! failure-ratio rule with a minimum volume for high ones, and a half-open ramp.
//!
//! It never sends anything, never reads a clock (every input carries `now`), never draws
//! random numbers and never decides what a failure is beyond the [`AttemptOutcome`] it is
//! given. It judges one target on its own: how many of a rule's targets may be out at once
//! (`max_ejection_percent`) and what happens when all are (panic mode) is decided where the
//! targets of a rule are known, in `routing::plan`.
//!
//! # Outcomes
//!
//! Every attempt is reported once when it starts ([`CircuitBreaker::handle_attempt_started`]);
//! its outcomes come as [`AttemptOutcome`]s: *progress* (`Provisional`, `Alive`: the target
//! is processing the call) and one *verdict* (`Answered`, or a failure: `Timeout`,
//! `ServerError`, `TransportError`).
//!
//! # Opening (in `Closed`)
//!
//! The breaker looks at the attempts of the last `window`:
//! - **low rate** — fewer than `min_attempts` attempts started and fewer than `min_attempts`
//!   verdicts within `window`: `failures` consecutive failures, all within `window`, open it
//!   (the classic rule: two 503s or timeouts in a row within 30 s). A provisional or an answer
//!   ends the run; an AI provider merely taking a call (`Alive`) does not, since the call can
//!   still fail mid-call.
//! - **high rate** — at least `min_attempts` verdicts within `window`: the last `min_attempts`
//!   of them decide; it opens when `failure_percent` % or more of them failed. A handful of
//!   failures in a large volume of successes (8 timeouts at 1500 calls/s) never opens it; a
//!   target failing most attempts opens after about `failure_percent` % × `min_attempts`
//!   failures (50 failed calls by default: 33 ms at 1500 calls/s, 10 s at 5 calls/s).
//! - in between — `min_attempts` attempts started within `window` but their verdicts not in
//!   yet (a burst at start-up, AI calls whose verdict is their end): neither rule opens it;
//!   the ratio decides once `min_attempts` verdicts are in.
//!
//! # LIFECYCLE
//!
//! ```text
//!   Closed ── consecutive rule (low rate) or ratio rule (high rate) ──▶ Open
//!   Open ── `cooldown` elapsed (handle_timeout or lazily on the next input) ──▶ HalfOpen
//!   HalfOpen ── `probe_successes` successes ──▶ Closed
//!   HalfOpen ── any failure ──▶ Open (a fresh cooldown)
//! ```
//! In `Open`, outcomes of attempts already in flight (or sent by a plan that overrode the
//! breaker) are ignored: only the cooldown ends it. In `HalfOpen` the target gets a trickle
//! that grows with its successes: one probe attempt first; every success (a provisional, an
//! answer, an AI provider taking the call) lets two more through, so the trickle doubles while
//! the target keeps succeeding (1, 2, 4, 8 … attempts), until `probe_successes` successes close
//! the breaker. A probe that gets no outcome for `cooldown` is presumed lost and one more
//! attempt is allowed. Every transition starts the windows afresh.

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use super::fmt_duration;

/// Breaker thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive failures that open the breaker at low rates (0 is treated as 1).
    pub failures: u32,
    /// The span both rules look at: the consecutive failures must all fall within it, and the
    /// ratio counts the verdicts of this span only.
    pub window: Duration,
    /// How long the breaker stays open before the half-open ramp starts.
    pub cooldown: Duration,
    /// At high rates, the share of failed verdicts (1..=100 %) among the last `min_attempts`
    /// that opens the breaker.
    pub failure_percent: u8,
    /// Attempts within `window` above which the ratio rule replaces the consecutive rule, and
    /// the number of most recent verdicts the ratio is computed over (0 is treated as 1).
    pub min_attempts: u32,
    /// Successes in half-open that close the breaker (0 is treated as 1).
    pub probe_successes: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failures: 2,
            window: Duration::from_secs(30),
            cooldown: Duration::from_secs(30),
            failure_percent: 50,
            min_attempts: 100,
            probe_successes: 5,
        }
    }
}

impl BreakerConfig {
    fn sanitized(self) -> Self {
        Self {
            failures: self.failures.max(1),
            failure_percent: self.failure_percent.clamp(1, 100),
            min_attempts: self.min_attempts.max(1),
            probe_successes: self.probe_successes.max(1),
            ..self
        }
    }
}

/// Breaker state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BreakerState {
    /// Attempts flow normally.
    Closed,
    /// No attempts: the target is out of plans (unless a plan overrides the breaker).
    Open,
    /// A trickle of probe attempts; their outcomes close or re-open the breaker.
    HalfOpen,
}

impl BreakerState {
    /// `closed`, `open` or `half-open` (admin API, metrics labels).
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half-open",
        }
    }
}

impl fmt::Display for BreakerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What happened to one call attempt (an INVITE sent to the target).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// A 2xx final response (or any final response that proves the target processes calls
    /// and that the caller chooses to report as answered). A verdict: a success.
    Answered,
    /// A provisional response (1xx): the target is alive and processing the call. Progress:
    /// ends a run of failures, but is not the attempt's verdict.
    Provisional,
    /// The target took a call whose outcome is still open (an AI provider's answer: the
    /// call can still fail mid-call). Progress: a success in half-open, but it does not end a
    /// run of failures: only the call's end says whether it succeeded.
    Alive,
    /// No response before the transaction timed out (RFC 3261 §17.1.1.2 Timer B). A verdict:
    /// a failure.
    Timeout,
    /// A server failure response, normally 5xx (RFC 3261 §21.5). A verdict: a failure.
    ServerError(u16),
    /// The transport reported a hard error (ICMP port unreachable, TCP connection refused or
    /// reset) — RFC 3261 §8.1.3.1 treats it like a 503. A verdict: a failure.
    TransportError,
}

impl AttemptOutcome {
    /// Whether this outcome counts as a success for the breaker.
    pub fn is_success(self) -> bool {
        matches!(
            self,
            AttemptOutcome::Answered | AttemptOutcome::Provisional | AttemptOutcome::Alive
        )
    }
}

/// A breaker state change with a human-readable reason for the logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakerTransition {
    /// State before.
    pub from: BreakerState,
    /// State after.
    pub to: BreakerState,
    /// Why, e.g. "2 consecutive 503 within 30s".
    pub reason: String,
}

/// A snapshot of a breaker, for the admin API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakerStatus {
    /// The state, advanced to `now` (an `Open` breaker past its cooldown is `HalfOpen`).
    pub state: BreakerState,
    /// When that state was entered.
    pub since: Instant,
    /// Why it is in that state ("2 consecutive timeouts within 30s", "cooldown 30s elapsed").
    pub reason: String,
    /// When `Open`: when the half-open ramp starts.
    pub open_until: Option<Instant>,
    /// When `Closed`: verdicts within `window` (at most `min_attempts`, the most recent).
    pub window_verdicts: usize,
    /// When `Closed`: failed verdicts among them.
    pub window_failures: usize,
    /// When `Closed`: the current run of consecutive failures within `window`.
    pub consecutive_failures: usize,
    /// When `Closed`: whether the ratio rule is the one that applies (`min_attempts` within
    /// `window`) rather than the consecutive rule.
    pub high_rate: bool,
    /// When `HalfOpen`: successes so far (of `probe_successes`).
    pub probe_successes: u32,
    /// When `HalfOpen`: probe attempts started so far, and how many are allowed so far.
    pub probes_started: u32,
    pub probes_allowed: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FailureKind {
    Timeout,
    Status(u16),
    Transport,
}

impl FailureKind {
    fn from_outcome(outcome: AttemptOutcome) -> Option<Self> {
        match outcome {
            AttemptOutcome::Answered | AttemptOutcome::Provisional | AttemptOutcome::Alive => None,
            AttemptOutcome::Timeout => Some(FailureKind::Timeout),
            AttemptOutcome::ServerError(code) => Some(FailureKind::Status(code)),
            AttemptOutcome::TransportError => Some(FailureKind::Transport),
        }
    }

    fn plural(self) -> String {
        match self {
            FailureKind::Timeout => "timeouts".to_owned(),
            FailureKind::Status(code) => code.to_string(),
            FailureKind::Transport => "transport errors".to_owned(),
        }
    }
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FailureKind::Timeout => f.write_str("timeout"),
            FailureKind::Status(code) => write!(f, "{code}"),
            FailureKind::Transport => f.write_str("transport error"),
        }
    }
}

/// The breaker for one target. See the module docs for the rules and the lifecycle.
#[derive(Debug, Clone)]
pub struct CircuitBreaker {
    config: BreakerConfig,
    state: BreakerState,
    since: Instant,
    reason: String,
    /// When `Open`: when the cooldown ends.
    open_until: Option<Instant>,
    /// When `Closed`: the current run of consecutive failures, oldest first.
    run: VecDeque<(Instant, FailureKind)>,
    /// When `Closed`: the most recent verdicts (at most `min_attempts`), oldest first;
    /// `None` is a success.
    verdicts: VecDeque<(Instant, Option<FailureKind>)>,
    /// Failures among `verdicts`.
    verdict_failures: usize,
    /// When `Closed`: start times of the most recent attempts (at most `min_attempts`).
    starts: VecDeque<Instant>,
    /// When `HalfOpen`: successes so far.
    probe_successes: u32,
    /// When `HalfOpen`: probe attempts started so far.
    probes_started: u32,
    /// When `HalfOpen`: the last probe start or outcome (for presuming a probe lost).
    probe_activity: Instant,
    transitions: VecDeque<BreakerTransition>,
}

impl CircuitBreaker {
    /// A closed breaker.
    pub fn new(config: BreakerConfig, now: Instant) -> Self {
        Self {
            config: config.sanitized(),
            state: BreakerState::Closed,
            since: now,
            reason: "no failures".to_owned(),
            open_until: None,
            run: VecDeque::new(),
            verdicts: VecDeque::new(),
            verdict_failures: 0,
            starts: VecDeque::new(),
            probe_successes: 0,
            probes_started: 0,
            probe_activity: now,
            transitions: VecDeque::new(),
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> BreakerConfig {
        self.config
    }

    /// Change thresholds (a reload); the current state and windows are kept (the windows
    /// are trimmed to a smaller `min_attempts` with the next input).
    pub fn set_config(&mut self, config: BreakerConfig) {
        self.config = config.sanitized();
    }

    /// The state as last advanced (an `Open` breaker whose cooldown has passed still reports
    /// `Open` until the next input or [`Self::handle_timeout`]).
    pub fn state(&self) -> BreakerState {
        self.state
    }

    /// When the current state was entered.
    pub fn since(&self) -> Instant {
        self.since
    }

    /// A snapshot as of `now` (without changing anything).
    pub fn status(&self, now: Instant) -> BreakerStatus {
        let cooled = self.state == BreakerState::Open && self.cooldown_over(now);
        let window = self.config.window;
        let fresh = |at: Instant| now.saturating_duration_since(at) <= window;
        let closed = self.state == BreakerState::Closed;
        let (window_verdicts, window_failures) = if closed {
            self.verdicts
                .iter()
                .filter(|(at, _)| fresh(*at))
                .fold((0, 0), |(n, f), (_, k)| {
                    (n + 1, f + usize::from(k.is_some()))
                })
        } else {
            (0, 0)
        };
        let starts = if closed {
            self.starts.iter().filter(|at| fresh(**at)).count()
        } else {
            0
        };
        let min = self.config.min_attempts as usize;
        BreakerStatus {
            state: if cooled {
                BreakerState::HalfOpen
            } else {
                self.state
            },
            since: match (cooled, self.open_until) {
                (true, Some(until)) => until,
                _ => self.since,
            },
            reason: if cooled {
                self.cooldown_reason()
            } else {
                self.reason.clone()
            },
            open_until: self.open_until.filter(|_| !cooled),
            window_verdicts,
            window_failures,
            consecutive_failures: if closed {
                self.run.iter().filter(|(at, _)| fresh(*at)).count()
            } else {
                0
            },
            high_rate: closed && (window_verdicts >= min || starts >= min),
            probe_successes: if cooled { 0 } else { self.probe_successes },
            probes_started: if cooled { 0 } else { self.probes_started },
            probes_allowed: if cooled {
                1
            } else if self.state == BreakerState::HalfOpen {
                self.probes_allowed()
            } else {
                0
            },
        }
    }

    /// Whether a new attempt may be sent now. `Open` past its cooldown counts as `HalfOpen`
    /// with no probe sent yet.
    pub fn allows_attempt(&self, now: Instant) -> bool {
        match self.state {
            BreakerState::Closed => true,
            BreakerState::Open => self.cooldown_over(now),
            BreakerState::HalfOpen => self.probe_slot_free(now),
        }
    }

    /// An attempt is being sent now. In half-open it is a probe and takes one of the ramp's
    /// slots (an attempt sent anyway, by a plan that overrides the breaker, is counted too).
    pub fn handle_attempt_started(&mut self, now: Instant) {
        self.advance(now);
        match self.state {
            BreakerState::Closed => {
                push_capped(&mut self.starts, now, self.config.min_attempts as usize);
            }
            BreakerState::HalfOpen => {
                if self.probes_started >= self.probes_allowed() && self.probe_presumed_lost(now) {
                    // Nothing heard for a cooldown: the outstanding probes are lost, and
                    // this attempt takes the slot one of them held.
                    self.probes_started = self.probes_started.saturating_sub(1);
                }
                self.probes_started = self.probes_started.saturating_add(1);
                self.probe_activity = now;
            }
            BreakerState::Open => {}
        }
    }

    /// The outcome of an attempt.
    pub fn handle_outcome(&mut self, outcome: AttemptOutcome, now: Instant) {
        self.advance(now);
        let failure = FailureKind::from_outcome(outcome);
        match self.state {
            BreakerState::Closed => self.closed_outcome(outcome, failure, now),
            // Outcomes of attempts that were in flight when the breaker opened: ignored.
            BreakerState::Open => {}
            BreakerState::HalfOpen => match failure {
                None => {
                    self.probe_successes = self.probe_successes.saturating_add(1);
                    self.probe_activity = now;
                    if self.probe_successes >= self.config.probe_successes {
                        let n = self.probe_successes;
                        let reason = if n == 1 {
                            "probe attempt succeeded".to_owned()
                        } else {
                            format!("{n} probe successes in half-open")
                        };
                        self.transition(BreakerState::Closed, now, reason);
                    }
                }
                Some(kind) => {
                    let reason = format!(
                        "probe attempt failed ({kind}) after {} success{} in half-open",
                        self.probe_successes,
                        if self.probe_successes == 1 { "" } else { "es" }
                    );
                    self.open(now, reason);
                }
            },
        }
    }

    /// The next instant at which [`Self::handle_timeout`] has something to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            BreakerState::Open => self.open_until,
            _ => None,
        }
    }

    /// Advance time: an `Open` breaker whose cooldown has passed becomes `HalfOpen`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.advance(now);
    }

    /// The next state change to report, oldest first.
    pub fn poll_transition(&mut self) -> Option<BreakerTransition> {
        self.transitions.pop_front()
    }

    fn closed_outcome(
        &mut self,
        outcome: AttemptOutcome,
        failure: Option<FailureKind>,
        now: Instant,
    ) {
        let window = self.config.window;
        let min = self.config.min_attempts as usize;
        match (outcome, failure) {
            // Progress of an AI call: neither ends a run nor is a verdict.
            (AttemptOutcome::Alive, _) => return,
            // Ringing: the target processes calls; the verdict comes with the final response.
            (AttemptOutcome::Provisional, _) => {
                self.run.clear();
                return;
            }
            (_, None) => {
                self.run.clear();
                self.push_verdict(now, None);
            }
            (_, Some(kind)) => {
                while self
                    .run
                    .front()
                    .is_some_and(|&(at, _)| now.saturating_duration_since(at) > window)
                {
                    self.run.pop_front();
                }
                self.run.push_back((now, kind));
                self.push_verdict(now, Some(kind));
            }
        }
        self.trim(now);
        if failure.is_none() {
            return;
        }
        let verdicts = self.verdicts.len();
        let starts = self.starts.len();
        if verdicts >= min {
            // High rate: the ratio over the last `min_attempts` verdicts decides.
            let pct = u64::from(self.config.failure_percent);
            if (self.verdict_failures as u64) * 100 >= pct * verdicts as u64 {
                let reason = self.ratio_reason();
                self.open(now, reason);
            }
        } else if starts < min && self.run.len() >= self.config.failures as usize {
            let reason = self.run_reason();
            self.open(now, reason);
        }
    }

    fn push_verdict(&mut self, now: Instant, failure: Option<FailureKind>) {
        self.verdicts.push_back((now, failure));
        self.verdict_failures += usize::from(failure.is_some());
    }

    /// Drops verdicts and starts older than `window` or beyond the last `min_attempts`.
    fn trim(&mut self, now: Instant) {
        let window = self.config.window;
        let min = self.config.min_attempts as usize;
        while let Some(&(at, kind)) = self.verdicts.front() {
            if self.verdicts.len() > min || now.saturating_duration_since(at) > window {
                self.verdicts.pop_front();
                self.verdict_failures -= usize::from(kind.is_some());
            } else {
                break;
            }
        }
        while let Some(&at) = self.starts.front() {
            if self.starts.len() > min || now.saturating_duration_since(at) > window {
                self.starts.pop_front();
            } else {
                break;
            }
        }
    }

    fn cooldown_over(&self, now: Instant) -> bool {
        self.open_until.is_some_and(|until| now >= until)
    }

    fn cooldown_reason(&self) -> String {
        format!("cooldown {} elapsed", fmt_duration(self.config.cooldown))
    }

    /// Probe attempts allowed so far: one, and two more per success.
    fn probes_allowed(&self) -> u32 {
        self.probe_successes.saturating_mul(2).saturating_add(1)
    }

    fn probe_presumed_lost(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.probe_activity) >= self.config.cooldown
    }

    fn probe_slot_free(&self, now: Instant) -> bool {
        self.probes_started < self.probes_allowed() || self.probe_presumed_lost(now)
    }

    fn advance(&mut self, now: Instant) {
        if self.state == BreakerState::Open && self.cooldown_over(now) {
            let at = self.open_until.take().unwrap_or(now);
            let reason = self.cooldown_reason();
            self.transition(BreakerState::HalfOpen, at, reason);
        }
    }

    fn open(&mut self, now: Instant, reason: String) {
        self.open_until = Some(now + self.config.cooldown);
        self.transition(BreakerState::Open, now, reason);
    }

    fn transition(&mut self, to: BreakerState, at: Instant, reason: String) {
        let from = self.state;
        self.state = to;
        self.since = at;
        self.reason = reason.clone();
        // Every state starts from a clean slate: a closed breaker does not remember the
        // failures that opened it, a half-open one starts its ramp at one probe.
        self.run.clear();
        self.verdicts.clear();
        self.verdict_failures = 0;
        self.starts.clear();
        self.probe_successes = 0;
        self.probes_started = 0;
        self.probe_activity = at;
        if to != BreakerState::Open {
            self.open_until = None;
        }
        self.transitions
            .push_back(BreakerTransition { from, to, reason });
    }

    /// "2 consecutive 503 within 30s", or a mixed list when the kinds differ.
    fn run_reason(&self) -> String {
        let n = self.run.len();
        let window = fmt_duration(self.config.window);
        let first = self.run.front().map(|&(_, k)| k);
        match first {
            Some(kind) if self.run.iter().all(|&(_, k)| k == kind) => {
                format!("{n} consecutive {} within {window}", kind.plural())
            }
            _ => {
                let kinds: Vec<String> = self.run.iter().map(|(_, k)| k.to_string()).collect();
                format!(
                    "{n} consecutive failures within {window} ({})",
                    kinds.join(", ")
                )
            }
        }
    }

    /// "60 of the last 100 attempts failed within 30s (60% >= 50%: 48 timeouts, 12 503)".
    fn ratio_reason(&self) -> String {
        let n = self.verdicts.len();
        let failed = self.verdict_failures;
        let mut kinds: Vec<(FailureKind, usize)> = Vec::new();
        for kind in self.verdicts.iter().filter_map(|&(_, k)| k) {
            match kinds.iter_mut().find(|(k, _)| *k == kind) {
                Some((_, c)) => *c += 1,
                None => kinds.push((kind, 1)),
            }
        }
        let list: Vec<String> = kinds
            .iter()
            .map(|(k, c)| {
                if *c == 1 {
                    format!("1 {k}")
                } else {
                    format!("{c} {}", k.plural())
                }
            })
            .collect();
        format!(
            "{failed} of the last {n} attempts failed within {} ({}% >= {}%: {})",
            fmt_duration(self.config.window),
            failed * 100 / n.max(1),
            self.config.failure_percent,
            list.join(", ")
        )
    }
}

fn push_capped(q: &mut VecDeque<Instant>, at: Instant, cap: usize) {
    q.push_back(at);
    while q.len() > cap {
        q.pop_front();
    }
}

#[cfg(test)]
mod tests;
