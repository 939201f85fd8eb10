//! Operator actions and call records on the virtual clock: a cordon or the fail switch
//! changes selection without touching calls in progress (except that a failed AI provider's
//! calls are re-routed), and a finished call's record says what happened to it.
use super::{
    ack_from_carrier, answer, confirmed_call, header, invite, new_call, Sim, AGENT_A, AGENT_B,
    CARRIER, HF, SDP_B,
};
use crate::media::control::{MediaCommand, MediaEvent};
use crate::media::stats::StreamStatsSnapshot;
use std::time::Duration;

fn bye_from_carrier(sim: &mut Sim) {
    let ok = sim.last(CARRIER, "SIP/2.0 200");
    let bye = format!(
        "BYE sip:gw@{HF} SIP/2.0\r\nVia: SIP/2.0/UDP {CARRIER};branch=z9hG4bKbye1\r\n\
         From: \"Alice\" <sip:+15550001111@carrier.example>;tag=ctag\r\nTo: {}\r\n\
         Call-ID: carrier-call-1@carrier.example\r\nCSeq: 11 BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
        header(&ok, "To")
    );
    sim.recv(CARRIER, bye);
}

fn snapshot(packets: u64) -> StreamStatsSnapshot {
    StreamStatsSnapshot {
        packets_received: packets,
        bytes_received: packets * 172,
        packets_forwarded: packets,
        bytes_forwarded: packets * 172,
        rtcp_packets_forwarded: 0,
        packets_expected: packets,
        packets_lost: 0,
        duplicates: 0,
        extended_highest_seq: 0,
        jitter_ts: 0,
        jitter_ms: 1.5,
        source_switches: 0,
        drops: Default::default(),
    }
}

/// Reports every relay the core asked to close as closed, with `packets` each way.
fn close_relays(sim: &mut Sim, carrier_packets: u64, ai_packets: u64) {
    let closes: Vec<_> = sim
        .media
        .iter()
        .filter_map(|m| match m {
            MediaCommand::Close { id } => Some(*id),
            _ => None,
        })
        .collect();
    for id in closes {
        sim.core.handle_media_event(
            MediaEvent::Closed {
                id,
                a_to_b: snapshot(carrier_packets),
                b_to_a: snapshot(ai_packets),
            },
            sim.now,
        );
    }
    sim.collect();
}

#[test]
fn a_failover_call_leaves_a_record_with_every_attempt_and_the_media() {
    let mut sim = Sim::new("");
    sim.recv(CARRIER, invite(""));
    let first = sim.last(AGENT_A, "INVITE ");
    sim.recv(
        AGENT_A,
        answer(&first, 503, "Service Unavailable", "", None),
    );
    let second = sim.last(AGENT_B, "INVITE ");
    sim.advance_to(Duration::from_millis(120));
    sim.recv(AGENT_B, answer(&second, 200, "OK", "", Some(SDP_B)));
    let ok = sim.last(CARRIER, "SIP/2.0 200");
    sim.recv(CARRIER, ack_from_carrier(&ok));
    let view = sim.core.call_views(sim.now).remove(0);
    assert_eq!(view.ai_provider.as_deref(), Some("agent-b"));
    assert_eq!(view.carrier.as_deref(), Some("carrier"));
    assert_eq!(view.providers, ["agent-a", "agent-b"]);
    assert_eq!(
        view.legs
            .carrier
            .as_ref()
            .and_then(|l| l.call_id.as_deref()),
        Some("carrier-call-1@carrier.example")
    );
    assert!(sim
        .core
        .call_view("carrier-call-1@carrier.example", sim.now)
        .is_some());

    sim.advance_to(Duration::from_millis(5120));
    bye_from_carrier(&mut sim);
    let b_bye = sim.last(AGENT_B, "BYE ");
    sim.recv(AGENT_B, answer(&b_bye, 200, "OK", "", None));
    assert_eq!(sim.core.stats().calls_active, 0);
    assert!(
        sim.poll_record().is_none(),
        "the record waits for the relays' final statistics"
    );
    close_relays(&mut sim, 250, 240);
    let r = sim.poll_record().expect("a record once the relays closed");
    assert_eq!(r.direction, "inbound");
    assert_eq!(r.outcome, "completed");
    assert_eq!(r.status, Some(200));
    assert_eq!(r.hangup.by, "carrier");
    assert_eq!(r.carrier.as_deref(), Some("carrier"));
    assert_eq!(r.ai_providers, ["agent-a", "agent-b"]);
    assert_eq!(r.attempts.len(), 2);
    assert_eq!(r.attempts[0].target, "agent-a");
    assert!(r.attempts[0].outcome.starts_with("503"), "{:?}", r.attempts);
    assert_eq!(r.attempts[1].target, "agent-b");
    assert_eq!(r.setup_ms, Some(120));
    assert_eq!(r.duration_ms, 5000);
    assert_eq!(r.media.carrier.packets_received, 250);
    assert_eq!(r.media.ai.packets_received, 240);
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["attempts"][1]["outcome"], "200 OK");
    assert_eq!(json["hangup"]["reason"], "BYE from caller");

    let mut metrics = crate::admin::metrics::Exposition::new();
    sim.core.render_metrics(&mut metrics, sim.now);
    let text = metrics.finish();
    for line in [
        "holdfast_calls_total{direction=\"inbound\",outcome=\"completed\"} 1",
        "holdfast_attempts_total{target=\"agent-a\",outcome=\"failed\"} 1",
        "holdfast_attempts_total{target=\"agent-b\",outcome=\"answered\"} 1",
        "holdfast_failovers_total{target=\"agent-a\",reason=\"503\"} 1",
        "holdfast_calls_active 0",
    ] {
        assert!(text.contains(line), "missing {line}:\n{text}");
    }
}

#[test]
fn a_refused_call_is_recorded_and_counted() {
    let mut sim = Sim::new("");
    let now = sim.now;
    sim.core.set_cordoned("agent-a", true, now).unwrap();
    sim.core.set_cordoned("agent-b", true, now).unwrap();
    sim.recv(CARRIER, invite(""));
    let r = sim.last(CARRIER, "SIP/2.0 5");
    assert!(r.starts_with("SIP/2.0 503"), "{r}");
    assert!(header(&r, "Reason").contains("cordoned"), "{r}");
    let rec = sim.poll_record().expect("a record");
    assert_eq!((rec.outcome, rec.status), ("refused", Some(503)));
    assert!(rec.hangup.reason.contains("cordoned"));
}

#[test]
fn cordon_sends_new_calls_elsewhere_and_keeps_the_call_in_progress() {
    let mut sim = Sim::new("");
    confirmed_call(&mut sim, "", "");
    let now = sim.now;
    let v = sim.core.set_cordoned("agent-a", true, now).unwrap();
    assert!(v.cordoned && !v.available);
    assert_eq!(v.active_calls, 1);
    assert!(sim.core.set_cordoned("nope", true, now).is_none());
    // A second call goes to agent-b; agent-a's call sees nothing.
    let to_a = sim.find(AGENT_A, "").len();
    let second = new_call(&mut sim, 2);
    assert!(
        second.starts_with(&format!("INVITE sip:agent@{AGENT_B}")),
        "{second}"
    );
    assert_eq!(sim.find(AGENT_A, "").len(), to_a, "nothing more to agent-a");
    assert_eq!(sim.core.stats().calls_active, 2);
    // Uncordoned: agent-a gets new calls again.
    sim.core.set_cordoned("agent-a", false, now).unwrap();
    let third = new_call(&mut sim, 3);
    assert!(
        third.starts_with(&format!("INVITE sip:agent@{AGENT_A}")),
        "{third}"
    );
}

#[test]
fn the_fail_switch_reroutes_a_providers_calls_and_restore_lifts_it() {
    let mut sim = Sim::new("");
    confirmed_call(&mut sim, "", "");
    let now = sim.now;
    let v = sim.core.set_failed("agent-a", true, now).unwrap();
    assert!(v.failed && !v.available);
    assert_eq!(v.health, "down");
    sim.collect();
    let inv = sim.last(AGENT_B, "INVITE ");
    assert_eq!(header(&inv, "X-Holdfast-Reroute-Trigger"), "health_down");
    assert!(
        sim.find(CARRIER, "BYE ").is_empty(),
        "the carrier sees nothing"
    );
    let v = sim.core.set_failed("agent-a", false, now).unwrap();
    assert!(!v.failed);
    assert_eq!(v.health, "up");
}

#[test]
fn ready_after_the_first_health_round() {
    // ping: false everywhere: nothing to wait for.
    let mut sim = Sim::new("");
    assert!(sim.core.is_ready(sim.now));
    sim.core.set_draining(true);
    assert!(!sim.core.is_ready(sim.now));
}

#[test]
fn call_ids_carry_the_node_id_and_never_repeat_across_nodes_or_restarts() {
    let ids_of = |node: Option<&str>, seed: u64| {
        let mut c = (*super::config("")).clone();
        c.node_id = node.map(str::to_owned);
        let mut sim = Sim::with_seed(std::sync::Arc::new(c), seed);
        let ids: Vec<String> = (1..=3)
            .map(|n| header(&new_call(&mut sim, n), "X-Holdfast-Call").to_string())
            .collect();
        ids
    };
    let eu = ids_of(Some("eu-1"), 7);
    for (i, id) in eu.iter().enumerate() {
        let rest = id
            .strip_prefix("hf-eu-1.")
            .unwrap_or_else(|| panic!("{id}"));
        let (incarnation, n) = rest.split_once('-').unwrap_or_else(|| panic!("{id}"));
        assert!(
            incarnation.len() == 8 && incarnation.bytes().all(|b| b.is_ascii_hexdigit()),
            "{id}"
        );
        assert_eq!(n, format!("{:x}", i + 1), "{id}");
    }
    // The same node restarted (another seed, as the runtime draws one per process): no id of
    // the first run comes back.
    let restarted = ids_of(Some("eu-1"), 8);
    assert!(
        restarted.iter().all(|id| !eu.contains(id)),
        "{eu:?} {restarted:?}"
    );
    // Another node, and a node without `node.id` (a random 64-bit prefix).
    let us = ids_of(Some("us-1"), 7);
    assert!(us.iter().all(|id| id.starts_with("hf-us-1.")), "{us:?}");
    let anon = ids_of(None, 7);
    let prefix = anon[0]
        .strip_prefix("hf-")
        .unwrap()
        .split('-')
        .next()
        .unwrap();
    assert!(
        prefix.len() == 16 && prefix.bytes().all(|b| b.is_ascii_hexdigit()),
        "{anon:?}"
    );
    assert!(anon.iter().all(|id| !eu.contains(id) && !us.contains(id)));
}
