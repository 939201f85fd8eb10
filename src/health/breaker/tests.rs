//! Virtual-clock tests of [`CircuitBreaker`]: each rule on its own, and the combinations
//! that turned a blip into an outage before.

use super::*;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn ms(m: u64) -> Duration {
    Duration::from_millis(m)
}

fn drain(b: &mut CircuitBreaker) -> Vec<BreakerTransition> {
    std::iter::from_fn(|| b.poll_transition()).collect()
}

/// The seed's single-probe half-open, for the tests of the consecutive rule.
fn one_probe() -> BreakerConfig {
    BreakerConfig {
        probe_successes: 1,
        ..BreakerConfig::default()
    }
}

/// `n` attempts started and answered `step` apart from `at`, every `fail_every`-th one
/// failing with a timeout (0: none fails). Returns the instant after the last one.
fn traffic(
    b: &mut CircuitBreaker,
    at: Instant,
    n: u32,
    step: Duration,
    fail_every: u32,
) -> Instant {
    let mut now = at;
    for i in 1..=n {
        b.handle_attempt_started(now);
        let outcome = if fail_every != 0 && i % fail_every == 0 {
            AttemptOutcome::Timeout
        } else {
            AttemptOutcome::Answered
        };
        b.handle_outcome(outcome, now);
        now += step;
    }
    now
}

// ------------------------------------------------------------------ the consecutive rule

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
    let mut b = CircuitBreaker::new(one_probe(), t0);
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
fn low_rate_blip_still_opens_by_the_consecutive_rule() {
    // One call a second: 30 attempts per window, far below min_attempts (100). The seed's
    // rule applies unchanged: two timeouts in a row open the breaker.
    let t0 = Instant::now();
    let mut b = CircuitBreaker::new(BreakerConfig::default(), t0);
    let now = traffic(&mut b, t0, 20, secs(1), 0);
    b.handle_attempt_started(now);
    b.handle_outcome(AttemptOutcome::Timeout, now);
    b.handle_attempt_started(now + secs(1));
    b.handle_outcome(AttemptOutcome::Timeout, now + secs(1));
    assert_eq!(b.state(), BreakerState::Open);
    assert_eq!(drain(&mut b)[0].reason, "2 consecutive timeouts within 30s");
}

// ------------------------------------------------------------------ the ratio rule

#[test]
fn a_burst_of_timeouts_in_a_large_volume_never_opens() {
    // The incident: 1500 calls/s, 8 provisional deadlines missed in a row, 15000 attempts.
    let t0 = Instant::now();
    let mut b = CircuitBreaker::new(BreakerConfig::default(), t0);
    let step = Duration::from_micros(667);
    let mut now = traffic(&mut b, t0, 7000, step, 0);
    for _ in 0..8 {
        b.handle_attempt_started(now);
        b.handle_outcome(AttemptOutcome::Timeout, now);
        now += step;
    }
    assert_eq!(b.state(), BreakerState::Closed, "{:?}", drain(&mut b));
    now = traffic(&mut b, now, 7992, step, 0);
    assert_eq!(b.state(), BreakerState::Closed);
    assert!(drain(&mut b).is_empty());
    let s = b.status(now);
    assert!(s.high_rate, "{s:?}");
    assert_eq!((s.window_verdicts, s.window_failures), (100, 0));
}

#[test]
fn scattered_failures_below_the_ratio_never_open() {
    // 10 calls/s with every fourth one failing: 25% < 50%, the target stays in.
    let t0 = Instant::now();
    let mut b = CircuitBreaker::new(BreakerConfig::default(), t0);
    let now = traffic(&mut b, t0, 3000, ms(100), 4);
    assert_eq!(b.state(), BreakerState::Closed, "{:?}", drain(&mut b));
    let s = b.status(now);
    assert_eq!(s.window_verdicts, 100);
    assert_eq!(s.window_failures, 25);
}

#[test]
fn half_of_the_last_min_attempts_failing_opens_at_once() {
    // 50% failures over 100 attempts is not fine: the 50th failure opens it.
    let t0 = Instant::now();
    let mut b = CircuitBreaker::new(BreakerConfig::default(), t0);
    let mut now = traffic(&mut b, t0, 1000, ms(10), 0);
    for i in 1..=50 {
        assert_eq!(b.state(), BreakerState::Closed, "failure {i}");
        b.handle_attempt_started(now);
        b.handle_outcome(AttemptOutcome::ServerError(503), now);
        now += ms(10);
    }
    assert_eq!(b.state(), BreakerState::Open);
    assert_eq!(
        drain(&mut b)[0].reason,
        "50 of the last 100 attempts failed within 30s (50% >= 50%: 50 503)"
    );
}

#[test]
fn a_dead_target_at_high_rate_opens_within_failure_percent_of_min_attempts() {
    // Healthy at 1500 calls/s, then every attempt times out: it takes 50 failures (the
    // last 100 verdicts half failed), i.e. 33 ms of timeouts, not half the window.
    let t0 = Instant::now();
    let mut b = CircuitBreaker::new(BreakerConfig::default(), t0);
    let step = Duration::from_micros(667);
    let mut now = traffic(&mut b, t0, 20_000, step, 0);
    let mut failures = 0;
    while b.state() == BreakerState::Closed {
        b.handle_attempt_started(now);
        b.handle_outcome(AttemptOutcome::Timeout, now);
        failures += 1;
        now += step;
        assert!(failures <= 50, "still closed after {failures} timeouts");
    }
    assert_eq!(failures, 50);
}

#[test]
fn a_start_up_burst_before_any_verdict_does_not_open() {
    // 200 attempts started within a second (AI calls whose verdict is their end), 8 of
    // them time out before any has ended: high rate, no ratio yet, no consecutive rule.
    let t0 = Instant::now();
    let mut b = CircuitBreaker::new(BreakerConfig::default(), t0);
    for i in 0..200 {
        b.handle_attempt_started(t0 + ms(i * 5));
        b.handle_outcome(AttemptOutcome::Alive, t0 + ms(i * 5 + 2));
    }
    for i in 0..8 {
        b.handle_outcome(AttemptOutcome::Timeout, t0 + secs(1) + ms(i));
    }
    assert_eq!(b.state(), BreakerState::Closed);
    // …but a provider failing everything opens once min_attempts verdicts are in.
    for i in 0..92 {
        b.handle_outcome(AttemptOutcome::Timeout, t0 + secs(2) + ms(i));
    }
    assert_eq!(b.state(), BreakerState::Open);
}

#[test]
fn the_ratio_only_counts_the_window() {
    // 100 verdicts, 49 failed; 31 s later the old ones are gone: a few failures among few
    // attempts are judged by the consecutive rule again.
    let t0 = Instant::now();
    let mut b = CircuitBreaker::new(BreakerConfig::default(), t0);
    let mut now = t0;
    for i in 0..100 {
        b.handle_attempt_started(now);
        let o = if i % 2 == 0 && i < 98 {
            AttemptOutcome::Timeout
        } else {
            AttemptOutcome::Answered
        };
        b.handle_outcome(o, now);
        now += ms(10);
    }
    assert_eq!(b.state(), BreakerState::Closed);
    assert_eq!(b.status(now).window_failures, 49);
    let later = now + secs(31);
    assert_eq!(b.status(later).window_verdicts, 0);
    b.handle_outcome(AttemptOutcome::Timeout, later);
    assert_eq!(b.state(), BreakerState::Closed);
    b.handle_outcome(AttemptOutcome::Timeout, later + ms(1));
    assert_eq!(b.state(), BreakerState::Open);
}

#[test]
fn min_attempts_one_is_a_pure_ratio() {
    let t0 = Instant::now();
    let cfg = BreakerConfig {
        min_attempts: 1,
        failure_percent: 100,
        ..BreakerConfig::default()
    };
    let mut b = CircuitBreaker::new(cfg, t0);
    b.handle_outcome(AttemptOutcome::Timeout, t0);
    assert_eq!(b.state(), BreakerState::Open);
}

// ------------------------------------------------------------------ half-open ramp

fn opened(cfg: BreakerConfig, t0: Instant) -> CircuitBreaker {
    let mut b = CircuitBreaker::new(cfg, t0);
    b.handle_outcome(AttemptOutcome::Timeout, t0);
    b.handle_outcome(AttemptOutcome::Timeout, t0);
    assert_eq!(b.state(), BreakerState::Open);
    b
}

#[test]
fn cooldown_half_open_single_probe_then_close() {
    let t0 = Instant::now();
    let mut b = opened(one_probe(), t0);
    assert!(!b.allows_attempt(t0 + secs(29)));
    // Lazily allowed once the cooldown is over, even before handle_timeout.
    assert!(b.allows_attempt(t0 + secs(30)));
    b.handle_timeout(t0 + secs(30));
    assert_eq!(b.state(), BreakerState::HalfOpen);
    b.handle_attempt_started(t0 + secs(31));
    assert!(!b.allows_attempt(t0 + secs(32)), "only one probe at first");
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
    assert_eq!(tr[2].reason, "probe attempt succeeded");
}

#[test]
fn half_open_ramp_doubles_with_successes_then_closes() {
    let t0 = Instant::now();
    let mut b = opened(BreakerConfig::default(), t0);
    let t = t0 + secs(30);
    // Count how many attempts the ramp lets through before each success.
    let mut let_through = Vec::new();
    let mut now = t;
    while b.state() != BreakerState::Closed {
        let mut n = 0;
        while b.allows_attempt(now) {
            b.handle_attempt_started(now);
            n += 1;
            assert!(n < 100, "the ramp let everything through");
        }
        let_through.push(n);
        // One of the outstanding probes answers.
        now += ms(10);
        b.handle_outcome(AttemptOutcome::Answered, now);
    }
    // 1 probe; each success lets two more in: 1, 2, 2, 2, 2 (allowed: 1, 3, 5, 7, 9).
    assert_eq!(let_through, [1, 2, 2, 2, 2]);
    let tr = drain(&mut b);
    assert_eq!(tr.last().unwrap().reason, "5 probe successes in half-open");
    assert!(b.allows_attempt(now));
}

#[test]
fn the_ramp_grows_as_fast_as_the_target_answers() {
    // Every probe succeeds: 1 → 3 → 7 … in flight, doubling per round of answers.
    let t0 = Instant::now();
    let cfg = BreakerConfig {
        probe_successes: 20,
        ..BreakerConfig::default()
    };
    let mut b = opened(cfg, t0);
    let mut now = t0 + secs(30);
    let mut rounds = Vec::new();
    while b.state() == BreakerState::HalfOpen || b.state() == BreakerState::Open {
        let mut sent = 0;
        while b.allows_attempt(now) && sent < 1000 {
            b.handle_attempt_started(now);
            sent += 1;
        }
        rounds.push(sent);
        now += ms(10);
        for _ in 0..sent {
            b.handle_outcome(AttemptOutcome::Provisional, now);
        }
    }
    assert_eq!(rounds, [1, 2, 4, 8, 16]);
}

#[test]
fn half_open_failure_reopens_with_fresh_cooldown() {
    let t0 = Instant::now();
    let mut b = opened(BreakerConfig::default(), t0);
    b.handle_attempt_started(t0 + secs(35)); // lazily half-open
    b.handle_outcome(AttemptOutcome::Provisional, t0 + secs(35));
    b.handle_outcome(AttemptOutcome::ServerError(503), t0 + secs(36));
    assert_eq!(b.state(), BreakerState::Open);
    assert_eq!(b.poll_timeout(), Some(t0 + secs(66)));
    assert_eq!(
        drain(&mut b).last().unwrap().reason,
        "probe attempt failed (503) after 1 success in half-open"
    );
    // A late failure of an attempt sent before opening changes nothing.
    b.handle_outcome(AttemptOutcome::Timeout, t0 + secs(37));
    assert_eq!(b.poll_timeout(), Some(t0 + secs(66)));
}

#[test]
fn lost_probe_allows_another_after_cooldown() {
    let t0 = Instant::now();
    let mut b = opened(BreakerConfig::default(), t0);
    b.handle_attempt_started(t0 + secs(30));
    assert!(!b.allows_attempt(t0 + secs(59)));
    assert!(b.allows_attempt(t0 + secs(60)));
    b.handle_attempt_started(t0 + secs(60));
    assert!(!b.allows_attempt(t0 + secs(61)), "one lost probe replaced");
}

#[test]
fn closing_starts_a_fresh_window() {
    // The failures that opened the breaker are forgotten: one failure after closing does
    // not re-open it.
    let t0 = Instant::now();
    let mut b = opened(one_probe(), t0);
    b.handle_attempt_started(t0 + secs(30));
    b.handle_outcome(AttemptOutcome::Answered, t0 + secs(30));
    assert_eq!(b.state(), BreakerState::Closed);
    b.handle_outcome(AttemptOutcome::Timeout, t0 + secs(31));
    assert_eq!(b.state(), BreakerState::Closed);
}

#[test]
fn status_reports_the_lazy_half_open_and_the_ramp() {
    let t0 = Instant::now();
    let mut b = opened(BreakerConfig::default(), t0);
    let s = b.status(t0 + secs(1));
    assert_eq!(s.state, BreakerState::Open);
    assert_eq!(s.open_until, Some(t0 + secs(30)));
    assert_eq!(s.reason, "2 consecutive timeouts within 30s");
    let s = b.status(t0 + secs(31));
    assert_eq!(s.state, BreakerState::HalfOpen);
    assert_eq!(s.since, t0 + secs(30));
    assert_eq!((s.probes_started, s.probes_allowed), (0, 1));
    b.handle_attempt_started(t0 + secs(31));
    b.handle_outcome(AttemptOutcome::Answered, t0 + secs(32));
    let s = b.status(t0 + secs(32));
    assert_eq!(
        (s.probe_successes, s.probes_started, s.probes_allowed),
        (1, 1, 3)
    );
}

#[test]
fn zero_thresholds_are_sane() {
    let t0 = Instant::now();
    let cfg = BreakerConfig {
        failures: 0,
        failure_percent: 0,
        min_attempts: 0,
        probe_successes: 0,
        ..BreakerConfig::default()
    };
    let b = CircuitBreaker::new(cfg, t0);
    let c = b.config();
    assert_eq!(
        (
            c.failures,
            c.failure_percent,
            c.min_attempts,
            c.probe_successes
        ),
        (1, 1, 1, 1)
    );
}
