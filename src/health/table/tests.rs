//! Virtual-clock tests of [`HealthTable`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::health::Transport;

type Id = Arc<str>;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn ms(m: u64) -> Duration {
    Duration::from_millis(m)
}

fn dest(s: &str) -> Destination {
    let addr: SocketAddr = s.parse().expect("test address");
    Destination::new(addr, Transport::Udp)
}

fn id(s: &str) -> Id {
    Arc::from(s)
}

fn table_with(
    id_: &Id,
    config: TargetHealthConfig,
    dests: &[Destination],
    now: Instant,
) -> HealthTable<Id> {
    let mut t = HealthTable::new(HealthSettings::default());
    let ping = config.ping;
    t.set_target(id_.clone(), config, now);
    t.set_addresses(id_, dests.to_vec(), now)
        .expect("known target");
    // A pinged target stays unknown (and takes calls) until its first ping; one that is not
    // pinged is up at once. Tests look at what happens afterwards.
    if ping {
        assert_eq!(t.status(id_, now).map(|s| s.state), Some(Health::Unknown));
    } else {
        let ev = t.poll_event().expect("target up event");
        assert_eq!((ev.from, ev.to, ev.dest), (State::Unknown, State::Up, None));
    }
    assert!(t.poll_event().is_none());
    assert!(t.is_available(id_, now), "a new target takes calls");
    t
}

/// The Unknown → Up events of a target's first successful ping: the address's, then the
/// target's.
fn confirmed(ev: &[HealthEvent<Id>], d: Destination) -> bool {
    matches!(
        ev,
        [a, t] if (a.dest, a.from, a.to) == (Some(d), State::Unknown, State::Up)
            && (t.dest, t.from, t.to) == (None, State::Unknown, State::Up)
    )
}

/// Runs the table on a virtual clock from `start` to `until`, answering each probe with
/// `respond(probe, sent_at)` = Some((status, delay)) or None (silence). Returns all events.
fn drive<F>(
    table: &mut HealthTable<Id>,
    start: Instant,
    until: Instant,
    mut respond: F,
) -> Vec<HealthEvent<Id>>
where
    F: FnMut(&Probe<Id>, Instant) -> Option<(u16, Duration)>,
{
    let mut pending: Vec<(Instant, ProbeId, u16)> = Vec::new();
    let mut now = start;
    let mut events = Vec::new();
    let mut last_now = None;
    loop {
        pending.sort_by_key(|p| p.0);
        while pending.first().is_some_and(|p| p.0 <= now) {
            let (at, probe, status) = pending.remove(0);
            table.handle_probe_response(probe, status, at);
        }
        table.handle_timeout(now);
        while let Some(probe) = table.poll_probe(now) {
            if let Some((status, delay)) = respond(&probe, now) {
                pending.push((now + delay, probe.id, status));
            }
        }
        while let Some(e) = table.poll_event() {
            events.push(e);
        }
        let next = [table.poll_timeout(), pending.iter().map(|p| p.0).min()]
            .into_iter()
            .flatten()
            .min();
        match next {
            Some(t) if t <= until => {
                assert!(
                    t > now || last_now != Some(now),
                    "driver made no progress at {now:?}"
                );
                last_now = Some(now);
                now = t.max(now);
            }
            _ => break,
        }
    }
    events
}

#[test]
fn silenced_target_goes_down_at_exact_instant_and_comes_back() {
    let t0 = Instant::now();
    let a = id("carrier-a");
    let d = dest("192.0.2.1:5060");
    let mut table = table_with(&a, TargetHealthConfig::default(), &[d], t0);
    // Healthy: the first ping (sent at t0) is answered after 10ms.
    let silent_at = t0 + secs(1);
    let ev = drive(&mut table, t0, silent_at, |_, _| Some((200, ms(10))));
    assert!(confirmed(&ev, d), "{ev:?}");
    assert_eq!(ev[0].at, t0 + ms(10));
    assert!(table.is_available(&a, t0));
    assert_eq!(table.status(&a, t0).and_then(|s| s.last_rtt), Some(ms(10)));

    // Silent from t0+1s on. Pings at +5, +10, +15 time out at +7, +12, +17.
    let ev = drive(&mut table, silent_at, t0 + secs(19), |_, sent| {
        (sent < silent_at).then_some((200, ms(10)))
    });
    let s = &table.settings;
    let bound = silent_at + s.ping_interval * s.down_after + s.ping_timeout;
    let addr_down = ev
        .iter()
        .find(|e| e.dest == Some(d) && e.to == State::Down)
        .expect("address down event");
    assert_eq!(addr_down.at, t0 + secs(17));
    assert!(addr_down.at <= bound);
    assert_eq!(addr_down.reason, "3 consecutive OPTIONS timeouts (2s)");
    let target_down = ev
        .iter()
        .find(|e| e.dest.is_none() && e.to == State::Down)
        .expect("target down event");
    assert_eq!(target_down.at, t0 + secs(17));
    assert!(target_down
        .reason
        .contains("3 consecutive OPTIONS timeouts"));
    assert!(!table.is_available(&a, t0 + secs(17)));
    assert!(table.available_destinations(&a, t0 + secs(18)).is_empty());

    // Answers again from t0+19s: pings at +20 and +25 succeed -> up at +25.010.
    let ev = drive(&mut table, t0 + secs(19), t0 + secs(27), |_, _| {
        Some((200, ms(10)))
    });
    let up: Vec<_> = ev.iter().filter(|e| e.to == State::Up).collect();
    assert_eq!(up.len(), 2, "{ev:?}");
    assert_eq!(up[0].dest, Some(d));
    assert_eq!(up[0].at, t0 + secs(25) + ms(10));
    assert_eq!(up[1].dest, None);
    assert!(table.is_available(&a, t0 + secs(26)));
    let st = table.status(&a, t0).expect("status");
    assert_eq!(st.state, Health::Up);
    assert_eq!(st.last_rtt, Some(ms(10)));
    assert_eq!(st.addresses[0].since, t0 + secs(25) + ms(10));
}

#[test]
fn alive_codes_404_counts_as_alive() {
    let t0 = Instant::now();
    let a = id("a");
    let d = dest("192.0.2.1:5060");
    let cfg = TargetHealthConfig {
        alive_codes: vec![200, 404],
        ping: true,
    };
    let mut table = table_with(&a, cfg, &[d], t0);
    let ev = drive(&mut table, t0, t0 + secs(60), |_, _| Some((404, ms(5))));
    assert!(confirmed(&ev, d), "{ev:?}");
    assert!(table.is_available(&a, t0 + secs(60)));
    assert_eq!(table.status(&a, t0).map(|s| s.last_rtt), Some(Some(ms(5))));
}

#[test]
fn non_alive_code_counts_as_failure_with_code_in_reason() {
    let t0 = Instant::now();
    let a = id("a");
    let d = dest("192.0.2.1:5060");
    let mut table = table_with(&a, TargetHealthConfig::default(), &[d], t0);
    let ev = drive(&mut table, t0, t0 + secs(60), |_, _| Some((404, ms(5))));
    let down = ev.iter().find(|e| e.dest == Some(d)).expect("down");
    // Pings at 0, 5, 10; third 404 arrives at 10.005.
    assert_eq!(down.at, t0 + secs(10) + ms(5));
    assert!(down.reason.contains("404"), "{}", down.reason);
}

#[test]
fn provisional_response_is_ignored_and_probe_stays_in_flight() {
    let t0 = Instant::now();
    let a = id("a");
    let mut table = table_with(
        &a,
        TargetHealthConfig::default(),
        &[dest("192.0.2.1:5060")],
        t0,
    );
    let p = table.poll_probe(t0).expect("first ping at once");
    assert!(!table.handle_probe_response(p.id, 100, t0 + ms(5)));
    assert!(table.handle_probe_response(p.id, 200, t0 + ms(9)));
    assert_eq!(table.status(&a, t0).and_then(|s| s.last_rtt), Some(ms(9)));
}

#[test]
fn late_response_after_timeout_is_ignored() {
    let t0 = Instant::now();
    let a = id("a");
    let mut table = table_with(
        &a,
        TargetHealthConfig::default(),
        &[dest("192.0.2.1:5060")],
        t0,
    );
    let p = table.poll_probe(t0).expect("first ping at once");
    assert_eq!(table.poll_timeout(), Some(t0 + secs(2)));
    table.handle_timeout(t0 + secs(2));
    assert_eq!(
        table
            .status(&a, t0)
            .map(|s| s.addresses[0].consecutive_failures),
        Some(1)
    );
    assert!(!table.handle_probe_response(p.id, 200, t0 + secs(3)));
    let st = table.status(&a, t0).expect("status");
    assert_eq!(st.addresses[0].consecutive_failures, 1);
    assert_eq!(st.last_rtt, None);
    // Next ping is ping_interval after the previous was sent.
    assert_eq!(table.poll_timeout(), Some(t0 + secs(5)));
    assert!(table.poll_probe(t0 + secs(4)).is_none());
    assert!(table.poll_probe(t0 + secs(5)).is_some());
}

#[test]
fn breaker_two_503_opens_and_excludes_from_next_selection() {
    let t0 = Instant::now();
    let a = id("a");
    let d = dest("192.0.2.1:5060");
    let mut table = table_with(&a, TargetHealthConfig::default(), &[d], t0);
    table.handle_attempt(&a, &d, AttemptOutcome::ServerError(503), t0 + secs(1));
    assert!(table.is_available(&a, t0 + secs(1)));
    table.handle_attempt(&a, &d, AttemptOutcome::ServerError(503), t0 + secs(2));
    assert!(!table.is_available(&a, t0 + secs(2)));
    assert!(table.available_destinations(&a, t0 + secs(2)).is_empty());
    let ev = table.poll_event().expect("breaker event");
    assert_eq!(ev.from, State::Breaker(BreakerState::Closed));
    assert_eq!(ev.to, State::Breaker(BreakerState::Open));
    assert_eq!(ev.reason, "2 consecutive 503 within 30s");
    assert_eq!(ev.dest, None);
    // The address itself still takes calls (not pinged yet): only the breaker removed it.
    assert_eq!(table.status(&a, t0).map(|s| s.state), Some(Health::Unknown));
    assert!(table.takes_calls(&a));
    assert_eq!(
        table.availability(&a, t0 + secs(2)),
        Availability::Ejected {
            since: t0 + secs(2)
        }
    );
    assert_eq!(
        table.status(&a, t0).map(|s| s.breaker),
        Some(BreakerState::Open)
    );
}

#[test]
fn breaker_success_in_between_resets_and_spread_failures_do_not_open() {
    let t0 = Instant::now();
    let a = id("a");
    let d = dest("192.0.2.1:5060");
    let mut table = table_with(&a, TargetHealthConfig::default(), &[d], t0);
    table.handle_attempt(&a, &d, AttemptOutcome::ServerError(503), t0);
    table.handle_attempt(&a, &d, AttemptOutcome::Answered, t0 + secs(1));
    table.handle_attempt(&a, &d, AttemptOutcome::ServerError(503), t0 + secs(2));
    assert!(table.is_available(&a, t0 + secs(2)));
    table.handle_attempt(&a, &d, AttemptOutcome::Timeout, t0 + secs(33));
    assert!(table.is_available(&a, t0 + secs(33)), "failures 31s apart");
    assert!(table.poll_event().is_none());
}

#[test]
fn breaker_cooldown_half_open_probe_success_closes() {
    let t0 = Instant::now();
    let a = id("a");
    let d = dest("192.0.2.1:5060");
    let mut table = table_with(&a, TargetHealthConfig::default(), &[d], t0);
    table.handle_attempt(&a, &d, AttemptOutcome::Timeout, t0);
    table.handle_attempt(&a, &d, AttemptOutcome::Timeout, t0);
    while table.poll_event().is_some() {}
    // Pings keep the address up meanwhile; the breaker deadline is in poll_timeout.
    let ev = drive(&mut table, t0, t0 + secs(30), |_, _| Some((200, ms(1))));
    let half: Vec<_> = ev
        .iter()
        .filter(|e| e.to == State::Breaker(BreakerState::HalfOpen))
        .collect();
    assert_eq!(half.len(), 1, "{ev:?}");
    assert_eq!(half[0].at, t0 + secs(30));
    assert!(table.is_available(&a, t0 + secs(30)));
    table.handle_attempt_started(&a, t0 + secs(30));
    assert!(
        !table.is_available(&a, t0 + secs(31)),
        "one probe call at first"
    );
    assert!(matches!(
        table.availability(&a, t0 + secs(31)),
        Availability::Ejected { .. }
    ));
    table.handle_attempt(&a, &d, AttemptOutcome::Provisional, t0 + secs(31));
    assert!(
        table.is_available(&a, t0 + secs(31)),
        "a success lets two more in"
    );
    // The ramp: five successes (the default probe_successes) close the breaker.
    for i in 0..4 {
        let t = t0 + secs(32 + i);
        table.handle_attempt_started(&a, t);
        assert!(table.poll_event().is_none(), "still half-open");
        table.handle_attempt(&a, &d, AttemptOutcome::Provisional, t);
    }
    let ev = table.poll_event().expect("closed event");
    assert_eq!(ev.to, State::Breaker(BreakerState::Closed));
    assert_eq!(ev.reason, "5 probe successes in half-open");
}

#[test]
fn new_address_is_pinged_at_once_and_kept_address_keeps_state() {
    let t0 = Instant::now();
    let a = id("a");
    let d1 = dest("192.0.2.1:5060");
    let d2 = dest("192.0.2.2:5060");
    let mut table = table_with(&a, TargetHealthConfig::default(), &[d1], t0);
    let p1 = table.poll_probe(t0).expect("ping d1");
    assert_eq!(p1.dest, d1);
    assert!(table.handle_probe_response(p1.id, 200, t0 + ms(20)));
    assert!(table.poll_probe(t0 + secs(3)).is_none());
    table
        .set_addresses(&a, vec![d2, d1], t0 + secs(3))
        .expect("known");
    let p2 = table
        .poll_probe(t0 + secs(3))
        .expect("new address pinged at once");
    assert_eq!(p2.dest, d2);
    assert!(
        table.poll_probe(t0 + secs(3)).is_none(),
        "d1 not re-pinged early"
    );
    let st = table.status(&a, t0).expect("status");
    assert_eq!(st.addresses[1].dest, d1);
    assert_eq!(st.addresses[1].last_rtt, Some(ms(20)));
    assert_eq!(st.addresses[1].state, Health::Up);
    assert_eq!(
        st.addresses[1].since,
        t0 + ms(20),
        "up since its first answer"
    );
    assert_eq!(
        st.addresses[0].state,
        Health::Unknown,
        "d2 not answered yet"
    );
    // Order follows set_addresses.
    assert_eq!(table.available_destinations(&a, t0 + secs(3)), vec![d2, d1]);
    // Dropping d2 drops its probe: a late answer is ignored.
    table
        .set_addresses(&a, vec![d1], t0 + secs(4))
        .expect("known");
    assert!(!table.handle_probe_response(p2.id, 200, t0 + secs(4)));
}

#[test]
fn target_added_by_reload_is_pinged_immediately() {
    let t0 = Instant::now();
    let mut table: HealthTable<Id> = HealthTable::new(HealthSettings::default());
    let b = id("b");
    table.set_target(b.clone(), TargetHealthConfig::default(), t0 + secs(100));
    assert!(!table.is_available(&b, t0 + secs(100)), "no addresses yet");
    table
        .set_addresses(&b, vec![dest("192.0.2.9:5080")], t0 + secs(100))
        .expect("known");
    assert!(table.poll_event().is_none(), "unknown, as before");
    assert!(
        table.is_available(&b, t0 + secs(100)),
        "takes calls at once"
    );
    assert_eq!(table.poll_timeout(), Some(t0 + secs(100)));
    let p = table.poll_probe(t0 + secs(100)).expect("immediate ping");
    assert_eq!(p.target, b);
}

#[test]
fn up_addresses_first_then_down() {
    let t0 = Instant::now();
    let a = id("a");
    let d1 = dest("192.0.2.1:5060");
    let d2 = dest("192.0.2.2:5060");
    let mut table = table_with(&a, TargetHealthConfig::default(), &[d1, d2], t0);
    drive(&mut table, t0, t0 + secs(20), |p, _| {
        (p.dest == d2).then_some((200, ms(1)))
    });
    let st = table.status(&a, t0).expect("status");
    assert_eq!(st.addresses[0].state, Health::Down);
    assert_eq!(st.state, Health::Up);
    assert_eq!(
        table.available_destinations(&a, t0 + secs(20)),
        vec![d2, d1]
    );
}

#[test]
fn transport_error_counts_as_failed_ping() {
    let t0 = Instant::now();
    let a = id("a");
    let d = dest("192.0.2.1:5060");
    let mut table = table_with(&a, TargetHealthConfig::default(), &[d], t0);
    for i in 0..3 {
        table.handle_attempt(&a, &d, AttemptOutcome::TransportError, t0 + secs(i));
    }
    let evs: Vec<_> = std::iter::from_fn(|| table.poll_event()).collect();
    let addr = evs
        .iter()
        .find(|e| e.dest == Some(d))
        .expect("address down");
    assert_eq!(addr.reason, "3 consecutive transport errors");
    assert!(evs
        .iter()
        .any(|e| e.to == State::Breaker(BreakerState::Open)));
}

#[test]
fn forced_down_and_lifted() {
    let t0 = Instant::now();
    let a = id("a");
    let mut table = table_with(
        &a,
        TargetHealthConfig::default(),
        &[dest("192.0.2.1:5060")],
        t0,
    );
    table.set_forced_down(&a, true, t0).expect("known");
    assert!(!table.is_available(&a, t0));
    let ev = table.poll_event().expect("down");
    assert_eq!(ev.reason, "administratively forced down");
    table.set_forced_down(&a, false, t0).expect("known");
    assert!(table.is_available(&a, t0));
    assert_eq!(
        table.poll_event().map(|e| e.to),
        Some(State::Unknown),
        "back to what its pings say: nothing yet"
    );
    assert_eq!(
        table.set_forced_down(&id("nope"), true, t0),
        Err(HealthError::UnknownTarget)
    );
}

#[test]
fn removal_forgets_target_and_probes() {
    let t0 = Instant::now();
    let a = id("a");
    let mut table = table_with(
        &a,
        TargetHealthConfig::default(),
        &[dest("192.0.2.1:5060")],
        t0,
    );
    let p = table.poll_probe(t0).expect("ping");
    assert!(table.remove_target(&a));
    assert!(!table.remove_target(&a));
    assert!(!table.is_available(&a, t0));
    assert!(table.status(&a, t0).is_none());
    assert_eq!(table.poll_timeout(), None);
    assert!(table.poll_probe(t0 + secs(10)).is_none());
    assert!(!table.handle_probe_response(p.id, 200, t0 + ms(5)));
    table.handle_timeout(t0 + secs(10));
    assert!(table.poll_event().is_none());
}

#[test]
fn ping_disabled_target_is_up_without_probes() {
    let t0 = Instant::now();
    let a = id("a");
    let d = dest("192.0.2.1:5060");
    let cfg = TargetHealthConfig {
        alive_codes: vec![200],
        ping: false,
    };
    let mut table = table_with(&a, cfg, &[d], t0);
    assert!(table.poll_probe(t0).is_none());
    assert_eq!(table.poll_timeout(), None);
    assert!(table.is_available(&a, t0));
    table.handle_attempt(&a, &d, AttemptOutcome::TransportError, t0);
    table.handle_attempt(&a, &d, AttemptOutcome::TransportError, t0);
    // Breaker still works; addresses stay up.
    assert!(!table.is_available(&a, t0));
    assert_eq!(table.status(&a, t0).map(|s| s.state), Some(Health::Up));
}

#[test]
fn two_targets_pinged_independently() {
    let t0 = Instant::now();
    let a = id("a");
    let b = id("b");
    let mut table = table_with(
        &a,
        TargetHealthConfig::default(),
        &[dest("192.0.2.1:5060")],
        t0,
    );
    table.set_target(b.clone(), TargetHealthConfig::default(), t0);
    table
        .set_addresses(&b, vec![dest("192.0.2.2:5060")], t0)
        .expect("known");
    let mut seen = vec![];
    while let Some(p) = table.poll_probe(t0) {
        seen.push(p.target);
    }
    seen.sort();
    assert_eq!(seen, vec![a, b]);
}

#[test]
fn toggling_ping_schedules_or_cancels_probes() {
    let t0 = Instant::now();
    let a = id("a");
    let d = dest("192.0.2.1:5060");
    let mut table = table_with(&a, TargetHealthConfig::default(), &[d], t0);
    // Take the address down with three timeouts.
    drive(&mut table, t0, t0 + secs(12), |_, _| None);
    while table.poll_event().is_some() {}
    assert!(!table.is_available(&a, t0 + secs(12)));
    let in_flight = table.poll_probe(t0 + secs(15)).expect("pinging");
    let off = TargetHealthConfig {
        alive_codes: vec![200],
        ping: false,
    };
    table.set_target(a.clone(), off, t0 + secs(15));
    // No evidence any more: assumed up, probe forgotten.
    assert!(table.is_available(&a, t0 + secs(15)));
    assert_eq!(table.poll_event().map(|e| e.to), Some(State::Up));
    assert!(!table.handle_probe_response(in_flight.id, 200, t0 + secs(15)));
    assert_eq!(table.poll_timeout(), None);
    table.set_target(a.clone(), TargetHealthConfig::default(), t0 + secs(20));
    assert_eq!(table.poll_probe(t0 + secs(20)).map(|p| p.dest), Some(d));
}

#[test]
fn a_new_address_is_unknown_and_takes_calls_until_its_first_ping_decides() {
    let t0 = Instant::now();
    let a = id("a");
    let d = dest("192.0.2.1:5060");
    let mut table = table_with(&a, TargetHealthConfig::default(), &[d], t0);
    let st = table.status(&a, t0).expect("status");
    assert_eq!(st.state, Health::Unknown);
    assert_eq!(st.addresses[0].state, Health::Unknown);
    assert_eq!(table.availability(&a, t0), Availability::Usable);
    assert_eq!(table.available_destinations(&a, t0), vec![d]);
    assert!(
        !table.first_round_done(t0),
        "the first ping is not back yet"
    );
    // It never answers: down after down_after (3) timeouts, from unknown.
    let ev = drive(&mut table, t0, t0 + secs(12), |_, _| None);
    let addr = ev
        .iter()
        .find(|e| e.dest == Some(d))
        .expect("address event");
    assert_eq!((addr.from, addr.to), (State::Unknown, State::Down));
    assert_eq!(addr.at, t0 + secs(12));
    let target = ev.iter().find(|e| e.dest.is_none()).expect("target event");
    assert_eq!((target.from, target.to), (State::Unknown, State::Down));
    assert!(table.first_round_done(t0 + secs(12)));
    assert_eq!(table.availability(&a, t0 + secs(12)), Availability::Down);
}

#[test]
fn one_failed_ping_leaves_a_new_address_unknown_and_a_success_confirms_it() {
    let t0 = Instant::now();
    let a = id("a");
    let d = dest("192.0.2.1:5060");
    let mut table = table_with(&a, TargetHealthConfig::default(), &[d], t0);
    let mut first = true;
    let ev = drive(&mut table, t0, t0 + secs(6), |_, _| {
        let answer = !std::mem::take(&mut first);
        answer.then_some((200, ms(3)))
    });
    // Ping at 0 times out at 2 (still unknown, first round done); ping at 5 answers.
    assert!(confirmed(&ev, d), "{ev:?}");
    assert_eq!(ev[0].at, t0 + secs(5) + ms(3));
    assert_eq!(ev[0].reason, "OPTIONS 200 (rtt 3ms)");
    assert!(table.first_round_done(t0 + secs(2)));
}

#[test]
fn a_target_being_resolved_is_pending_for_one_ping_timeout() {
    let t0 = Instant::now();
    let mut table: HealthTable<Id> = HealthTable::new(HealthSettings::default());
    let b = id("b");
    table.set_target(b.clone(), TargetHealthConfig::default(), t0);
    let st = table.status(&b, t0).expect("status");
    assert_eq!(
        (st.state, st.reason.as_str()),
        (Health::Unknown, "not resolved yet")
    );
    assert_eq!(
        table.availability(&b, t0 + secs(1)),
        Availability::Pending {
            until: t0 + secs(2)
        }
    );
    assert!(
        !table.is_available(&b, t0 + secs(1)),
        "nothing to send to yet"
    );
    assert!(!table.first_round_done(t0 + secs(1)), "/ready waits for it");
    assert_eq!(table.poll_timeout(), Some(t0 + secs(2)));
    // Resolved in time: usable (unknown) at once, pinged at once.
    let mut resolved = HealthTable::new(HealthSettings::default());
    resolved.set_target(b.clone(), TargetHealthConfig::default(), t0);
    resolved
        .set_addresses(&b, vec![dest("192.0.2.9:5060")], t0 + ms(300))
        .expect("known");
    assert_eq!(
        resolved.availability(&b, t0 + ms(300)),
        Availability::Usable
    );
    assert!(
        resolved.poll_event().is_none(),
        "unknown → unknown: no event"
    );
    assert!(resolved.poll_probe(t0 + ms(300)).is_some());
    // Not resolved in time: down.
    table.handle_timeout(t0 + secs(2));
    let ev = table.poll_event().expect("down");
    assert_eq!(
        (ev.from, ev.to, ev.dest),
        (State::Unknown, State::Down, None)
    );
    assert_eq!(ev.reason, "not resolved in time: no address yet");
    assert_eq!(table.availability(&b, t0 + secs(2)), Availability::Down);
    assert!(table.first_round_done(t0 + secs(2)));
    assert_eq!(table.poll_timeout(), None);
}

#[test]
fn ejected_is_only_the_breakers_doing() {
    // Down by pings beats the breaker: a target that is both is down, not ejected.
    let t0 = Instant::now();
    let a = id("a");
    let d = dest("192.0.2.1:5060");
    let mut table = table_with(&a, TargetHealthConfig::default(), &[d], t0);
    table.handle_attempt(&a, &d, AttemptOutcome::Timeout, t0);
    table.handle_attempt(&a, &d, AttemptOutcome::Timeout, t0);
    assert!(matches!(
        table.availability(&a, t0),
        Availability::Ejected { .. }
    ));
    assert_eq!(
        table.destinations(&a),
        vec![d],
        "for plans that override it"
    );
    table.set_forced_down(&a, true, t0).expect("known");
    assert_eq!(table.availability(&a, t0), Availability::Down);
    assert!(!table.takes_calls(&a));
}
