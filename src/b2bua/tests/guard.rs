//! The guard inside the core, on the virtual clock: what unknown sources, scanners and a
//! carrier over its limit get on the wire, and that calls in progress never notice.
use super::*;
use std::sync::Arc;
use std::time::Duration;

const STRANGER: &str = "203.0.113.7:5060";

fn with_sip(sip: &str) -> Sim {
    let yaml = format!(
        r#"
sip:
  listen: ["udp:{HF}"]
{sip}
health:
  ping_interval: 1h
routing:
  attempt_timeout: 1s
  seed: 1
carriers:
  - {{ id: carrier, uri: "sip:{CARRIER}", region: us, ping: false, sources: ["{CARRIER}"], limits: {{ rate: 5, burst: 5 }} }}
ai_providers:
  - {{ id: agent-a, kind: sip, uri: "sip:agent@{AGENT_A}", region: us, priority: 1, ping: false }}
routes:
  inbound: [ {{ regions: [us], ai: [agent-a] }} ]
"#
    );
    Sim::with_config(Arc::new(
        crate::config::parse(&yaml, "test.yaml").expect("valid test config"),
    ))
}

fn stranger_invite(n: u32) -> String {
    invite("")
        .replace(CARRIER, STRANGER)
        .replace("z9hG4bKcarrier1", &format!("z9hG4bKstranger{n}"))
        .replace("carrier-call-1@", &format!("stranger-{n}@"))
}

fn options_from(from: &str, branch: &str) -> String {
    format!(
        "OPTIONS sip:{HF} SIP/2.0\r\nVia: SIP/2.0/UDP {from};branch={branch}\r\n\
         From: <sip:mon@x>;tag=1\r\nTo: <sip:{HF}>\r\nCall-ID: {branch}\r\nCSeq: 1 OPTIONS\r\n\
         Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
}

fn metric(sim: &Sim, line_start: &str) -> String {
    super::metrics_text(sim)
        .lines()
        .find(|l| l.starts_with(line_start))
        .unwrap_or_else(|| panic!("no {line_start} in the metrics"))
        .to_string()
}

#[test]
fn an_unknown_source_gets_nothing_at_all_by_default() {
    let mut sim = with_sip("");
    sim.recv(STRANGER, stranger_invite(1));
    sim.recv(STRANGER, options_from(STRANGER, "z9hG4bKping"));
    sim.advance_to(Duration::from_secs(40));
    assert!(sim.sent.is_empty(), "{:#?}", sim.sent);
    assert_eq!(sim.core.stats().calls_total, 0);
    assert_eq!(
        metric(
            &sim,
            "holdfast_sip_dropped_total{reason=\"unknown_source\"}"
        ),
        "holdfast_sip_dropped_total{reason=\"unknown_source\"} 2"
    );
}

#[test]
fn reject_sends_one_stateless_403_per_request_and_nothing_else() {
    let mut sim = with_sip("  unknown_sources: reject");
    sim.recv(STRANGER, stranger_invite(1));
    // The same INVITE retransmitted (no ACK came): one more 403, same To tag.
    sim.advance_to(Duration::from_millis(500));
    sim.recv(STRANGER, stranger_invite(1));
    sim.advance_to(Duration::from_secs(40));
    let all: Vec<&String> = sim.sent.iter().map(|(_, _, m)| m).collect();
    assert_eq!(all.len(), 2, "{all:#?}");
    assert!(all.iter().all(|m| m.starts_with("SIP/2.0 403 Forbidden")));
    assert_eq!(header(all[0], "To"), header(all[1], "To"));
    assert!(header(all[0], "To").contains(";tag="));
    // To the packet's source (not to a Via host), stamped as RFC 3581 asks.
    assert!(sim
        .sent
        .iter()
        .all(|(_, to, _)| *to == STRANGER.parse().unwrap()));
    assert!(header(all[0], "Via").contains("received=203.0.113.7"));
    // Its ACK is absorbed without a word.
    let ack = format!(
        "ACK sip:+15551230000@{HF} SIP/2.0\r\nVia: SIP/2.0/UDP {STRANGER};branch=z9hG4bKstranger1\r\n\
         From: \"Alice\" <sip:+15550001111@carrier.example>;tag=ctag\r\nTo: {}\r\n\
         Call-ID: stranger-1@carrier.example\r\nCSeq: 10 ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
        header(all[0], "To")
    );
    sim.recv(STRANGER, ack);
    assert_eq!(sim.sent.len(), 2);
    assert_eq!(sim.core.stats().calls_total, 0);
    assert_eq!(
        metric(&sim, "holdfast_sip_rejected_total"),
        "holdfast_sip_rejected_total{reason=\"unknown_source\"} 2"
    );
}

#[test]
fn answer_options_pingers_get_200_and_scanners_get_nothing() {
    let mut sim = with_sip("  answer_options: [\"198.51.100.0/24\"]");
    sim.recv(
        "198.51.100.9:5060",
        options_from("198.51.100.9:5060", "z9hG4bKlb"),
    );
    assert!(sim
        .last("198.51.100.9:5060", "SIP/2.0 ")
        .starts_with("SIP/2.0 200"));
    let scan = invite("User-Agent: friendly-scanner\r\n");
    sim.recv(CARRIER, scan);
    assert!(sim.find(CARRIER, "SIP/2.0").is_empty(), "{:#?}", sim.sent);
    assert_eq!(
        metric(&sim, "holdfast_sip_dropped_total{reason=\"scanner\"}"),
        "holdfast_sip_dropped_total{reason=\"scanner\"} 1"
    );
}

#[test]
fn a_carrier_over_its_limit_is_blocked_while_its_call_in_progress_goes_on() {
    let mut sim = with_sip("  limits: { sampling_interval: 1s, block_time: 5s }");
    let b_invite = confirmed_call(&mut sim, "", "");
    let ok = sim.last(CARRIER, "SIP/2.0 200");
    // 30 more INVITEs at once: 4 tokens left, then 5 drops block the carrier.
    for n in 2..32 {
        let inv = invite("")
            .replace("z9hG4bKcarrier1", &format!("z9hG4bKflood{n}"))
            .replace("carrier-call-1@", &format!("flood-{n}@"));
        sim.recv(CARRIER, inv);
    }
    assert_eq!(sim.find(CARRIER, "SIP/2.0 100").len(), 1 + 4);
    assert_eq!(
        metric(&sim, "holdfast_sip_sources_blocked"),
        "holdfast_sip_sources_blocked 1"
    );
    // The established call's BYE still goes through, and is relayed.
    sim.recv(
        CARRIER,
        in_dialog_from_carrier(&ok, "BYE", 11, "z9hG4bKbye", "", None),
    );
    assert!(sim.last(CARRIER, "SIP/2.0 200").contains("CSeq: 11 BYE"));
    let bye = sim.last(AGENT_A, "BYE ");
    assert!(bye.contains(header(&b_invite, "Call-ID")));
    // After the block: new calls again.
    sim.advance_to(Duration::from_secs(6));
    assert_eq!(
        metric(&sim, "holdfast_sip_sources_blocked"),
        "holdfast_sip_sources_blocked 0"
    );
    let before = sim.find(CARRIER, "SIP/2.0 100").len();
    sim.recv(
        CARRIER,
        invite("")
            .replace("z9hG4bKcarrier1", "z9hG4bKlater")
            .replace("carrier-call-1@", "later@"),
    );
    assert_eq!(sim.find(CARRIER, "SIP/2.0 100").len(), before + 1);
}
