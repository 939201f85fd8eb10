//! The circuit breaker and target start-up on the virtual clock, whole calls through the
//! core: an AI agent dials out through carriers that answer, fail or stay silent.
//!
//! Each rule of the breaker (consecutive failures at low rates, the failure ratio at high
//! rates, the ejection cap, panic mode, the half-open ramp) and the first resolution wait.
use super::{answer, header, metrics_text, Sim, HF, SDP_A};
use std::sync::Arc;
use std::time::Duration;

const AGENT: &str = "127.0.0.1:5081";
const C1: &str = "127.0.0.1:5091";
const C2: &str = "127.0.0.1:5092";
const LONE: &str = "127.0.0.1:5093";

/// Outbound rules: `+1` to carrier-1 (priority 1) then carrier-2, `+44` to `lone` only.
fn config(extra_breaker: &str) -> Arc<crate::config::Config> {
    let yaml = format!(
        r#"
sip:
  listen: ["udp:{HF}"]
health:
  ping_interval: 1h
  breaker: {{ {extra_breaker} }}
routing:
  attempt_timeout: 1s
  seed: 1
carriers:
  - {{ id: carrier-1, uri: "sip:{C1}", region: us, priority: 1, ping: false }}
  - {{ id: carrier-2, uri: "sip:{C2}", region: us, priority: 2, ping: false }}
  - {{ id: lone, uri: "sip:{LONE}", region: eu, ping: false }}
ai_providers:
  - {{ id: agent, kind: sip, uri: "sip:agent@{AGENT}", region: us, ping: false, sources: ["{AGENT}"] }}
routes:
  outbound:
    - {{ match: {{ to: "+1" }}, regions: [us], carriers: [carrier-1, carrier-2] }}
    - {{ match: {{ to: "+44" }}, regions: [eu], carriers: [lone] }}
"#
    );
    Arc::new(crate::config::parse(&yaml, "test.yaml").expect("valid test config"))
}

/// The agent dials `number` (call `n`); returns where holdfast sent its INVITE (if
/// anywhere) and that INVITE.
fn dial(sim: &mut Sim, n: u32, number: &str) -> Option<(String, String)> {
    let inv = format!(
        "INVITE sip:{number}@{HF} SIP/2.0\r\nVia: SIP/2.0/UDP {AGENT};branch=z9hG4bKagent{n}\r\n\
         From: <sip:+15550001111@agent.example>;tag=atag{n}\r\nTo: <sip:{number}@{HF}>\r\n\
         Call-ID: agent-call-{n}@agent.example\r\nCSeq: 1 INVITE\r\nContact: <sip:agent@{AGENT}>\r\n\
         Max-Forwards: 70\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{SDP_A}",
        SDP_A.len()
    );
    let before = sim.sent.len();
    sim.recv(AGENT, inv);
    sent_invite(sim, before)
}

/// The first INVITE holdfast sent to a carrier since `sim.sent[from]`.
fn sent_invite(sim: &Sim, from: usize) -> Option<(String, String)> {
    sim.sent[from..]
        .iter()
        .find(|(_, _, m)| m.starts_with("INVITE "))
        .map(|(_, to, m)| (to.to_string(), m.clone()))
}

/// The carrier at `at` answers `inv` with `status` (180 then 200 for 200).
fn reply(sim: &mut Sim, at: &str, inv: &str, status: u16) {
    match status {
        200 => {
            sim.recv(at, answer(inv, 180, "Ringing", "", None));
            sim.recv(at, answer(inv, 200, "OK", "", Some(super::SDP_B)));
        }
        503 => sim.recv(at, answer(inv, 503, "Service Unavailable", "", None)),
        s => sim.recv(at, answer(inv, s, "Whatever", "", None)),
    }
}

/// Call `n` to `number`, answered 200 by whoever gets it; returns who that was.
fn answered_call(sim: &mut Sim, n: u32, number: &str) -> String {
    let (to, inv) = dial(sim, n, number).expect("an INVITE to a carrier");
    reply(sim, &to, &inv, 200);
    to
}

/// Responses holdfast sent the agent with this status.
fn to_agent(sim: &Sim, status: &str) -> Vec<String> {
    sim.find(AGENT, &format!("SIP/2.0 {status}"))
        .into_iter()
        .map(|(_, m)| m)
        .collect()
}

/// 150 answered calls to carrier-1, then 8 calls it never answers (all at once, like a
/// burst), each failing over to carrier-2 after `attempt_timeout`. Returns the next call
/// number.
fn volume_then_burst(sim: &mut Sim) -> u32 {
    for n in 1..=150 {
        assert_eq!(answered_call(sim, n, "+15551230000"), C1, "call {n}");
    }
    let mut silent = Vec::new();
    for n in 151..=158 {
        let (to, _) = dial(sim, n, "+15551230000").expect("INVITE");
        assert_eq!(to, C1);
        silent.push(n);
    }
    let before = sim.sent.len();
    let now = sim.now - sim.start;
    sim.advance_to(now + Duration::from_secs(1));
    // Every one of them moved on to carrier-2, which answers.
    let moved: Vec<String> = sim.sent[before..]
        .iter()
        .filter(|(_, to, m)| to.to_string() == C2 && m.starts_with("INVITE "))
        .map(|(_, _, m)| m.clone())
        .collect();
    assert_eq!(moved.len(), 8, "8 timeouts failed over");
    for inv in moved {
        reply(sim, C2, &inv, 200);
    }
    159
}

#[test]
fn a_burst_of_timeouts_inside_a_large_volume_does_not_eject_the_carrier() {
    let mut sim = Sim::with_config(config(""));
    let n = volume_then_burst(&mut sim);
    let (to, _) = dial(&mut sim, n, "+15551230000").expect("INVITE");
    assert_eq!(
        to, C1,
        "8 timeouts in 158 attempts: carrier-1 keeps its calls"
    );
    let status = sim.core.target_view("carrier-1", sim.now).expect("view");
    assert_eq!(status.breaker, "closed");
    let detail = status.breaker_detail.expect("detail");
    assert_eq!(detail.rule, Some("ratio"));
    assert_eq!(detail.window_failures, 8);
    assert!(!metrics_text(&sim).contains("holdfast_breaker_openings_total{target=\"carrier-1\"}"));
}

#[test]
fn the_same_burst_at_a_low_rate_still_opens_by_the_consecutive_rule() {
    // min_attempts above the volume: the seed's rule judges, and 8 timeouts in a row open
    // carrier-1's breaker (the rule has carrier-2, so within the cap).
    let mut sim = Sim::with_config(config("min_attempts: 10000"));
    let n = volume_then_burst(&mut sim);
    let (to, _) = dial(&mut sim, n, "+15551230000").expect("INVITE");
    assert_eq!(to, C2, "carrier-1 ejected");
    let view = sim.core.target_view("carrier-1", sim.now).expect("view");
    assert_eq!(view.breaker, "open");
    assert_eq!(
        view.breaker_detail.expect("detail").reason,
        "2 consecutive timeouts within 30s"
    );
}

#[test]
fn half_the_last_min_attempts_failing_opens_the_breaker() {
    let mut sim = Sim::with_config(config(""));
    for n in 1..=150 {
        answered_call(&mut sim, n, "+15551230000");
    }
    // carrier-1 answers 503 from now on; each call fails over to carrier-2.
    for n in 151..=200 {
        let (to, inv) = dial(&mut sim, n, "+15551230000").expect("INVITE");
        assert_eq!(to, C1, "call {n}: {} failures so far", n - 151);
        let before = sim.sent.len();
        reply(&mut sim, C1, &inv, 503);
        let (to, inv) = sent_invite(&sim, before).expect("failover");
        assert_eq!(to, C2);
        reply(&mut sim, C2, &inv, 200);
    }
    let (to, _) = dial(&mut sim, 201, "+15551230000").expect("INVITE");
    assert_eq!(to, C2, "50 of the last 100 failed: carrier-1 ejected");
    let reason = sim
        .core
        .target_view("carrier-1", sim.now)
        .and_then(|v| v.breaker_detail)
        .map(|d| d.reason)
        .unwrap_or_default();
    assert_eq!(
        reason,
        "50 of the last 100 attempts failed within 30s (50% >= 50%: 50 503)"
    );
    assert!(to_agent(&sim, "503").is_empty(), "no call was refused");
}

#[test]
fn a_rules_only_carrier_keeps_taking_calls_when_its_breaker_opens() {
    let mut sim = Sim::with_config(config(""));
    for n in 1..=2 {
        let (to, inv) = dial(&mut sim, n, "+442071234567").expect("INVITE");
        assert_eq!(to, LONE);
        reply(&mut sim, LONE, &inv, 503);
    }
    assert_eq!(to_agent(&sim, "503").len(), 2, "the two failed calls");
    assert_eq!(
        sim.core.target_view("lone", sim.now).map(|v| v.breaker),
        Some("open".into())
    );
    // Open, but 50% of one target is none: it stays in rotation, the call is not refused.
    for n in 3..=5 {
        let (to, inv) = dial(&mut sim, n, "+442071234567").expect("the only carrier is tried");
        assert_eq!(to, LONE);
        reply(&mut sim, LONE, &inv, 200);
    }
    for r in to_agent(&sim, "503") {
        assert!(!header(&r, "Reason").contains("no healthy"), "{r}");
    }
    let m = metrics_text(&sim);
    assert!(
        m.contains("holdfast_routing_ejection_capped_total{rule=\"outbound[1]\"} 3"),
        "{m}"
    );
    assert!(
        m.contains("holdfast_breaker_state{target=\"lone\",state=\"open\"} 1"),
        "{m}"
    );
}

#[test]
fn panic_mode_tries_every_ejected_target_and_counts_it() {
    // Every target may be ejected: when all are, they are tried anyway.
    let mut sim = Sim::with_config(config("max_ejection_percent: 100"));
    for n in 1..=2 {
        let (_, inv) = dial(&mut sim, n, "+442071234567").expect("INVITE");
        reply(&mut sim, LONE, &inv, 503);
    }
    let (to, inv) = dial(&mut sim, 3, "+442071234567").expect("panic mode tries it");
    assert_eq!(to, LONE);
    reply(&mut sim, LONE, &inv, 200);
    assert_eq!(to_agent(&sim, "200").len(), 1);
    let m = metrics_text(&sim);
    assert!(
        m.contains("holdfast_routing_panic_total{rule=\"outbound[1]\"} 1"),
        "{m}"
    );
}

#[test]
fn panic_mode_never_revives_a_target_its_health_checks_took_down() {
    // carrier-1 is down (the fail switch stands in for failed OPTIONS pings); carrier-2's
    // breaker opens. Panic mode: carrier-2 is tried, carrier-1 is not (all_down: reject).
    let mut sim = Sim::with_config(config(""));
    sim.core.set_failed("carrier-1", true, sim.now);
    for n in 1..=2 {
        let (to, inv) = dial(&mut sim, n, "+15551230000").expect("INVITE");
        assert_eq!(to, C2);
        reply(&mut sim, C2, &inv, 503);
    }
    assert_eq!(
        sim.core
            .target_view("carrier-2", sim.now)
            .map(|v| v.breaker),
        Some("open".into())
    );
    let before = sim.sent.len();
    let (to, inv) = dial(&mut sim, 3, "+15551230000").expect("panic mode");
    assert_eq!(to, C2);
    reply(&mut sim, C2, &inv, 503);
    assert!(
        sim.sent[before..]
            .iter()
            .all(|(_, to, m)| to.to_string() != C1 || !m.starts_with("INVITE ")),
        "carrier-1 failed its health checks: never tried"
    );
    // Both down by health: the user's all_down: reject refuses, as before.
    sim.core.set_failed("carrier-2", true, sim.now);
    assert!(dial(&mut sim, 4, "+15551230000").is_none());
    let refused = to_agent(&sim, "503").pop().expect("refused");
    assert!(
        header(&refused, "Reason").contains("no healthy carrier in regions [us]"),
        "{refused}"
    );
}

#[test]
fn a_half_open_breaker_lets_a_trickle_through_that_grows_with_successes() {
    let mut sim = Sim::with_config(config(""));
    for n in 1..=2 {
        let (_, inv) = dial(&mut sim, n, "+15551230000").expect("INVITE");
        let before = sim.sent.len();
        reply(&mut sim, C1, &inv, 503);
        let (_, inv) = sent_invite(&sim, before).expect("failover");
        reply(&mut sim, C2, &inv, 200);
    }
    assert_eq!(
        dial(&mut sim, 3, "+15551230000").map(|x| x.0),
        Some(C2.into())
    );
    sim.advance_to(Duration::from_secs(31));
    // Half-open: one probe call; while it is out, the next calls go to carrier-2.
    let (to, probe) = dial(&mut sim, 4, "+15551230000").expect("INVITE");
    assert_eq!(to, C1, "the probe");
    let (to, _) = dial(&mut sim, 5, "+15551230000").expect("INVITE");
    assert_eq!(to, C2, "one probe at a time at first");
    assert_eq!(
        sim.core
            .target_view("carrier-1", sim.now)
            .map(|v| v.breaker),
        Some("half-open".into())
    );
    // The probe rings: two more calls may go to carrier-1.
    sim.recv(C1, answer(&probe, 180, "Ringing", "", None));
    let next: Vec<String> = (6..=8)
        .map(|n| dial(&mut sim, n, "+15551230000").expect("INVITE").0)
        .collect();
    assert_eq!(next, [C1, C1, C2]);
    let d = sim
        .core
        .target_view("carrier-1", sim.now)
        .and_then(|v| v.breaker_detail)
        .expect("detail");
    assert_eq!(
        (d.probe_successes, d.probes_sent, d.probes_allowed),
        (1, 3, 3)
    );
}

#[test]
fn a_call_waits_for_the_first_resolution_of_its_targets() {
    // carrier-1 is named by DNS; the agent's first call arrives before the resolver's
    // answer: it waits instead of being refused, and goes out once resolved.
    let text = format!(
        r#"
sip:
  listen: ["udp:{HF}"]
health:
  ping_interval: 1h
carriers:
  - {{ id: carrier-1, uri: "sip:carrier.example.test", region: us, ping: false }}
ai_providers:
  - {{ id: agent, kind: sip, uri: "sip:agent@{AGENT}", region: us, ping: false, sources: ["{AGENT}"] }}
routes:
  outbound:
    - {{ regions: [us], carriers: [carrier-1] }}
"#
    );
    let cfg = Arc::new(crate::config::parse(&text, "dns.yaml").expect("valid"));
    let mut sim = Sim::with_config(cfg.clone());
    assert_eq!(
        sim.core.target_view("carrier-1", sim.now).map(|v| v.health),
        Some("unknown")
    );
    assert!(
        !sim.core.is_ready(sim.now),
        "/ready waits for the resolution"
    );
    assert!(dial(&mut sim, 1, "+15551230000").is_none());
    assert!(to_agent(&sim, "503").is_empty(), "not refused: waiting");
    sim.advance_to(Duration::from_millis(300));
    let before = sim.sent.len();
    let dest = crate::health::Destination::new(C1.parse().unwrap(), crate::sip::Transport::Udp);
    sim.core.handle_resolved(
        &crate::routing::TargetId::from("carrier-1"),
        vec![dest],
        sim.now,
    );
    sim.collect();
    let (to, _) = sent_invite(&sim, before).expect("sent once resolved");
    assert_eq!(to, C1);
    assert!(sim.core.is_ready(sim.now));

    // Never resolved: the wait ends after health.ping_timeout (2s) with a 503.
    let mut sim = Sim::with_config(cfg);
    assert!(dial(&mut sim, 1, "+15551230000").is_none());
    sim.advance_to(Duration::from_millis(1999));
    assert!(to_agent(&sim, "503").is_empty());
    sim.advance_to(Duration::from_secs(2));
    let refused = to_agent(&sim, "503").pop().expect("refused after the wait");
    assert!(
        header(&refused, "Reason").contains("no healthy carrier"),
        "{refused}"
    );
    assert!(sim.core.is_ready(sim.now), "ready: the first round is over");
    let m = metrics_text(&sim);
    assert!(
        m.contains("holdfast_calls_total{direction=\"outbound\",outcome=\"refused\"} 1"),
        "a call that never had an attempt was refused: {m}"
    );
}

#[test]
fn a_new_pinged_target_is_unknown_and_takes_calls_before_its_first_ping() {
    let text = format!(
        r#"
sip:
  listen: ["udp:{HF}"]
health:
  ping_interval: 10s
carriers:
  - {{ id: carrier-1, uri: "sip:{C1}", region: us }}
ai_providers:
  - {{ id: agent, kind: sip, uri: "sip:agent@{AGENT}", region: us, ping: false, sources: ["{AGENT}"] }}
routes:
  outbound:
    - {{ regions: [us], carriers: [carrier-1] }}
"#
    );
    let cfg = Arc::new(crate::config::parse(&text, "t.yaml").expect("valid"));
    let mut sim = Sim::with_config(cfg);
    let v = sim.core.target_view("carrier-1", sim.now).expect("view");
    assert_eq!((v.health, v.available), ("unknown", true));
    let m = metrics_text(&sim);
    assert!(
        m.contains("holdfast_target_up{target=\"carrier-1\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("holdfast_target_unknown{target=\"carrier-1\"} 1"),
        "{m}"
    );
    // The call goes out before any ping was answered.
    let (to, _) = dial(&mut sim, 1, "+15551230000").expect("INVITE at once");
    assert_eq!(to, C1);
    // The first ping (sent at start) is lost: one failure, still unknown. The next one is
    // answered: up.
    sim.advance_to(Duration::from_secs(10));
    let v = sim.core.target_view("carrier-1", sim.now).expect("view");
    assert_eq!(v.health, "unknown", "{}", v.reason);
    let options = sim.last(C1, "OPTIONS ");
    sim.recv(C1, answer(&options, 200, "OK", "", None));
    let v = sim.core.target_view("carrier-1", sim.now).expect("view");
    assert_eq!(v.health, "up");
    let m = metrics_text(&sim);
    assert!(
        m.contains("holdfast_target_unknown{target=\"carrier-1\"} 0"),
        "{m}"
    );
    assert!(
        !m.contains("holdfast_health_transitions_total{target=\"carrier-1\""),
        "a first confirmation is not a health change: {m}"
    );
}
