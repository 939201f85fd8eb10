//! Passive circuit breaker fed by real call attempts (INVITE outcomes) to one target.
//!
//! Classic three-state breaker (no RFC defines one for SIP): `failures` consecutive failed
//! attempts, all within `window`, open the breaker for `cooldown`; then one attempt is let
//! through as a probe (half-open). It never sends anything, never reads a clock and never
//! decides what a failure is beyond the [`AttemptOutcome`] it is given.
//!
//! # LIFECYCLE
//!
//! ```text
//!   Closed ── `failures` consecutive failures within `window` ──▶ Open
//!   Open ── `cooldown` elapsed (handle_timeout or lazily on the next input) ──▶ HalfOpen
//!   HalfOpen ── probe attempt succeeds ──▶ Closed
//!   HalfOpen ── probe attempt fails ──▶ Open (a fresh cooldown)
//! ```
//! In `Closed`, a success clears the failure run and failures older than `window` (relative
//! to the newest failure) drop out of it. In `Open`, outcomes of attempts that were already in
//! flight are ignored. In `HalfOpen`, only one probe attempt is allowed at a time
//! ([`CircuitBreaker::handle_attempt_started`]); a probe with no outcome after `cooldown` is
//! presumed lost and another one is allowed.

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use super::fmt_duration;

/// Breaker thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive failures that open the breaker (0 is treated as 1).
    pub failures: u32,
    /// The failures must all fall within this span.
    pub window: Duration,
    /// How long the breaker stays open before letting a probe attempt through.
    pub cooldown: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failures: 2,
            window: Duration::from_secs(30),
            cooldown: Duration::from_secs(30),
        }
    }
}

/// Breaker state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BreakerState {
    /// Attempts flow normally.
    Closed,
    /// No attempts: the target is removed from selection.
    Open,
    /// One probe attempt is allowed; its outcome closes or re-opens the breaker.
    HalfOpen,
}

impl fmt::Display for BreakerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half-open",
        })
    }
}

/// What happened to one call attempt (an INVITE sent to the target).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// A 2xx final response (or any final response that proves the target processes calls
    /// and that the caller chooses to report as answered).
    Answered,
    /// A provisional response (1xx): the target is alive and processing the call.
    Provisional,
    /// The target took a call whose outcome is still open (an AI provider's answer: the
    /// call can still fail mid-call). Closes a half-open breaker like a success, but does
    /// not end a run of failures: only the call's end says whether it succeeded.
    Alive,
    /// No response before the transaction timed out (RFC 3261 §17.1.1.2 Timer B).
    Timeout,
    /// A server failure response, normally 5xx (RFC 3261 §21.5).
    ServerError(u16),
    /// The transport reported a hard error (ICMP port unreachable, TCP connection refused or
    /// reset) — RFC 3261 §8.1.3.1 treats it like a 503.
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

/// The breaker for one target. See the module docs for the lifecycle.
#[derive(Debug, Clone)]
pub struct CircuitBreaker {
    config: BreakerConfig,
    state: BreakerState,
    since: Instant,
    /// When `Open`: when the cooldown ends.
    open_until: Option<Instant>,
    /// When `Closed`: the current run of consecutive failures, oldest first.
    failures: VecDeque<(Instant, FailureKind)>,
    /// When `HalfOpen`: when the single probe attempt was started, if one is in flight.
    probe_started_at: Option<Instant>,
    transitions: VecDeque<BreakerTransition>,
}

impl CircuitBreaker {
    /// A closed breaker.
    pub fn new(config: BreakerConfig, now: Instant) -> Self {
        Self {
            config: BreakerConfig {
                failures: config.failures.max(1),
                ..config
            },
            state: BreakerState::Closed,
            since: now,
            open_until: None,
            failures: VecDeque::new(),
            probe_started_at: None,
            transitions: VecDeque::new(),
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> BreakerConfig {
        self.config
    }

    /// Change thresholds; the current state and failure run are kept.
    pub fn set_config(&mut self, config: BreakerConfig) {
        self.config = BreakerConfig {
            failures: config.failures.max(1),
            ..config
        };
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

    /// Whether a new attempt may be sent now. `Open` past its cooldown counts as `HalfOpen`.
    pub fn allows_attempt(&self, now: Instant) -> bool {
        match self.state {
            BreakerState::Closed => true,
            BreakerState::Open => self.open_until.is_some_and(|until| now >= until),
            BreakerState::HalfOpen => !self.probe_in_flight(now),
        }
    }

    /// An attempt is being sent now. In half-open this is the probe: further attempts are
    /// refused until its outcome arrives (or it is presumed lost after `cooldown`).
    pub fn handle_attempt_started(&mut self, now: Instant) {
        self.advance(now);
        if self.state == BreakerState::HalfOpen && !self.probe_in_flight(now) {
            self.probe_started_at = Some(now);
        }
    }

    /// The outcome of an attempt.
    pub fn handle_outcome(&mut self, outcome: AttemptOutcome, now: Instant) {
        self.advance(now);
        let failure = FailureKind::from_outcome(outcome);
        match (self.state, failure) {
            (BreakerState::Closed, None) if outcome == AttemptOutcome::Alive => {}
            (BreakerState::Closed, None) => self.failures.clear(),
            (BreakerState::Closed, Some(kind)) => {
                let window = self.config.window;
                // Failures older than `window` no longer belong to the run.
                while let Some(&(at, _)) = self.failures.front() {
                    if now.saturating_duration_since(at) > window {
                        self.failures.pop_front();
                    } else {
                        break;
                    }
                }
                self.failures.push_back((now, kind));
                if self.failures.len() >= self.config.failures as usize {
                    let reason = self.run_reason();
                    self.open(now, reason);
                }
            }
            // Outcomes of attempts that were in flight when the breaker opened: ignored.
            (BreakerState::Open, _) => {}
            (BreakerState::HalfOpen, None) => {
                self.probe_started_at = None;
                self.failures.clear();
                self.transition(
                    BreakerState::Closed,
                    now,
                    "probe attempt succeeded".to_owned(),
                );
            }
            (BreakerState::HalfOpen, Some(kind)) => {
                self.open(now, format!("probe attempt failed ({kind})"));
            }
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

    fn probe_in_flight(&self, now: Instant) -> bool {
        self.probe_started_at
            .is_some_and(|at| now.saturating_duration_since(at) < self.config.cooldown)
    }

    fn advance(&mut self, now: Instant) {
        if self.state == BreakerState::Open && self.open_until.is_some_and(|until| now >= until) {
            self.open_until = None;
            self.probe_started_at = None;
            let reason = format!("cooldown {} elapsed", fmt_duration(self.config.cooldown));
            self.transition(BreakerState::HalfOpen, now, reason);
        }
    }

    fn open(&mut self, now: Instant, reason: String) {
        self.failures.clear();
        self.probe_started_at = None;
        self.open_until = Some(now + self.config.cooldown);
        self.transition(BreakerState::Open, now, reason);
    }

    fn transition(&mut self, to: BreakerState, now: Instant, reason: String) {
        let from = self.state;
        self.state = to;
        self.since = now;
        self.transitions
            .push_back(BreakerTransition { from, to, reason });
    }

    /// "2 consecutive 503 within 30s", or a mixed list when the kinds differ.
    fn run_reason(&self) -> String {
        let n = self.failures.len();
        let window = fmt_duration(self.config.window);
        let first = self.failures.front().map(|&(_, k)| k);
        match first {
            Some(kind) if self.failures.iter().all(|&(_, k)| k == kind) => {
                format!("{n} consecutive {} within {window}", kind.plural())
            }
            _ => {
                let kinds: Vec<String> = self.failures.iter().map(|(_, k)| k.to_string()).collect();
                format!(
                    "{n} consecutive failures within {window} ({})",
                    kinds.join(", ")
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn drain(b: &mut CircuitBreaker) -> Vec<BreakerTransition> {
        std::iter::from_fn(|| b.poll_transition()).collect()
    }

    #[test]
    fn two_consecutive_503_open() {
        let t0 = Instant::now();
        let mut b = CircuitBreaker::new(BreakerConfig::default(), t0);
        b.handle_outcome(AttemptOutcome::ServerError(503), t0);
        assert_eq!(b.state(), BreakerState::Closed);
        b.handle_outcome(AttemptOutcome::ServerError(503), t0 + secs(10));
        assert_eq!(b.state(), BreakerState::Open);
        assert!(!b.allows_attempt(t0 + secs(10)));
        let tr = drain(&mut b);
        assert_eq!(tr.len(), 1);
        assert_eq!(tr[0].reason, "2 consecutive 503 within 30s");
        assert_eq!(b.poll_timeout(), Some(t0 + secs(40)));
    }

    #[test]
    fn an_answered_call_that_later_fails_does_not_reset_the_run() {
        let t0 = Instant::now();
        let mut b = CircuitBreaker::new(BreakerConfig::default(), t0);
        b.handle_outcome(AttemptOutcome::Alive, t0);
        b.handle_outcome(AttemptOutcome::ServerError(503), t0 + secs(5));
        b.handle_outcome(AttemptOutcome::Alive, t0 + secs(6));
        assert_eq!(b.state(), BreakerState::Closed);
        b.handle_outcome(AttemptOutcome::Timeout, t0 + secs(9));
        assert_eq!(b.state(), BreakerState::Open, "two failed calls in a row");
        // Half-open: an answered probe call closes it at once.
        b.handle_timeout(t0 + secs(40));
        assert_eq!(b.state(), BreakerState::HalfOpen);
        b.handle_attempt_started(t0 + secs(40));
        b.handle_outcome(AttemptOutcome::Alive, t0 + secs(41));
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn success_in_between_resets() {
        let t0 = Instant::now();
        let mut b = CircuitBreaker::new(BreakerConfig::default(), t0);
        b.handle_outcome(AttemptOutcome::Timeout, t0);
        b.handle_outcome(AttemptOutcome::Provisional, t0 + secs(1));
        b.handle_outcome(AttemptOutcome::TransportError, t0 + secs(2));
        assert_eq!(b.state(), BreakerState::Closed);
        b.handle_outcome(AttemptOutcome::ServerError(500), t0 + secs(3));
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(
            drain(&mut b)[0].reason,
            "2 consecutive failures within 30s (transport error, 500)"
        );
    }

    #[test]
    fn failures_31s_apart_do_not_open_30s_apart_do() {
        let t0 = Instant::now();
        let mut b = CircuitBreaker::new(BreakerConfig::default(), t0);
        b.handle_outcome(AttemptOutcome::ServerError(503), t0);
        b.handle_outcome(AttemptOutcome::ServerError(503), t0 + secs(31));
        assert_eq!(b.state(), BreakerState::Closed);
        b.handle_outcome(AttemptOutcome::ServerError(503), t0 + secs(61));
        assert_eq!(b.state(), BreakerState::Open);
    }

    #[test]
    fn cooldown_half_open_single_probe_then_close() {
        let t0 = Instant::now();
        let mut b = CircuitBreaker::new(BreakerConfig::default(), t0);
        b.handle_outcome(AttemptOutcome::Timeout, t0);
        b.handle_outcome(AttemptOutcome::Timeout, t0);
        assert!(!b.allows_attempt(t0 + secs(29)));
        // Lazily allowed once the cooldown is over, even before handle_timeout.
        assert!(b.allows_attempt(t0 + secs(30)));
        b.handle_timeout(t0 + secs(30));
        assert_eq!(b.state(), BreakerState::HalfOpen);
        b.handle_attempt_started(t0 + secs(31));
        assert!(!b.allows_attempt(t0 + secs(32)), "only one probe at a time");
        b.handle_outcome(AttemptOutcome::Answered, t0 + secs(33));
        assert_eq!(b.state(), BreakerState::Closed);
        assert!(b.allows_attempt(t0 + secs(33)));
        let tr = drain(&mut b);
        let states: Vec<_> = tr.iter().map(|t| t.to).collect();
        assert_eq!(
            states,
            [
                BreakerState::Open,
                BreakerState::HalfOpen,
                BreakerState::Closed
            ]
        );
        assert_eq!(tr[0].reason, "2 consecutive timeouts within 30s");
    }

    #[test]
    fn half_open_failure_reopens_with_fresh_cooldown() {
        let t0 = Instant::now();
        let mut b = CircuitBreaker::new(BreakerConfig::default(), t0);
        b.handle_outcome(AttemptOutcome::Timeout, t0);
        b.handle_outcome(AttemptOutcome::Timeout, t0);
        b.handle_attempt_started(t0 + secs(35)); // lazily half-open
        b.handle_outcome(AttemptOutcome::ServerError(503), t0 + secs(36));
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.poll_timeout(), Some(t0 + secs(66)));
        // A late failure of an attempt sent before opening changes nothing.
        b.handle_outcome(AttemptOutcome::Timeout, t0 + secs(37));
        assert_eq!(b.poll_timeout(), Some(t0 + secs(66)));
    }

    #[test]
    fn lost_probe_allows_another_after_cooldown() {
        let t0 = Instant::now();
        let mut b = CircuitBreaker::new(BreakerConfig::default(), t0);
        b.handle_outcome(AttemptOutcome::Timeout, t0);
        b.handle_outcome(AttemptOutcome::Timeout, t0);
        b.handle_attempt_started(t0 + secs(30));
        assert!(!b.allows_attempt(t0 + secs(59)));
        assert!(b.allows_attempt(t0 + secs(60)));
    }
}
