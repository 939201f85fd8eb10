//! Call churn on the virtual clock: thousands of calls set up and hung up one after another
//! leave nothing of themselves in the core once their transactions are over, while a call
//! that stays up keeps every deadline it still needs.
use super::{answer, header, Sim, AGENT_A, CARRIER, HF, SDP_A, SDP_B};
use crate::media::control::{MediaCommand, MediaEvent};
use crate::media::stats::StreamStatsSnapshot;
use std::time::Duration;

fn carrier_request(method: &str, n: u32, cseq: u32, to: &str, body: Option<&str>) -> String {
    let uri = if method == "INVITE" {
        format!("sip:+15551230000@{HF}")
    } else {
        format!("sip:gw@{HF}")
    };
    let (ctype, len, body) = match body {
        Some(b) => ("Content-Type: application/sdp\r\n", b.len(), b),
        None => ("", 0, ""),
    };
    format!(
        "{method} {uri} SIP/2.0\r\nVia: SIP/2.0/UDP {CARRIER};branch=z9hG4bKchurn{n}{method}\r\n\
         From: <sip:+15550001111@carrier.example>;tag=ctag{n}\r\nTo: {to}\r\n\
         Call-ID: churn-{n}@carrier.example\r\nCSeq: {cseq} {method}\r\nContact: <sip:gw@{CARRIER}>\r\n\
         Max-Forwards: 70\r\n{ctype}Content-Length: {len}\r\n\r\n{body}"
    )
}

/// One call from the carrier, answered by agent-a; returns the INVITE holdfast sent it and
/// the 200 the carrier got.
fn answered_call(sim: &mut Sim, n: u32, uas_extra: &str) -> (String, String) {
    let to = format!("<sip:+15551230000@{HF}>");
    sim.recv(CARRIER, carrier_request("INVITE", n, 10, &to, Some(SDP_A)));
    let b_invite = sim.last(AGENT_A, "INVITE ");
    sim.recv(
        AGENT_A,
        answer(&b_invite, 200, "OK", uas_extra, Some(SDP_B)),
    );
    let ok = sim.last(CARRIER, "SIP/2.0 200");
    let to = header(&ok, "To").to_string();
    sim.recv(CARRIER, carrier_request("ACK", n, 10, &to, None));
    (b_invite, ok)
}

fn closed(sim: &mut Sim, from: usize) {
    let closes: Vec<_> = sim.media[from..]
        .iter()
        .filter_map(|m| match m {
            MediaCommand::Close { id } => Some(*id),
            _ => None,
        })
        .collect();
    let none = StreamStatsSnapshot {
        packets_received: 0,
        bytes_received: 0,
        packets_forwarded: 0,
        bytes_forwarded: 0,
        rtcp_packets_forwarded: 0,
        packets_expected: 0,
        packets_lost: 0,
        duplicates: 0,
        extended_highest_seq: 0,
        jitter_ts: 0,
        jitter_ms: 0.0,
        drops: Default::default(),
        source_switches: 0,
    };
    for id in closes {
        let ev = MediaEvent::Closed {
            id,
            a_to_b: none,
            b_to_a: none,
        };
        sim.core.handle_media_event(ev, sim.now);
    }
    sim.collect();
}

/// Answers holdfast's session refreshes (re-INVITE or UPDATE) sent to `peer` in the dialog
/// whose Call-ID is `call_id`; counts them.
fn answer_refreshes(sim: &mut Sim, peer: &str, call_id: &str, answered: &mut u32) {
    let refreshes: Vec<String> = ["INVITE ", "UPDATE "]
        .iter()
        .flat_map(|k| sim.find(peer, k))
        .map(|(_, m)| m)
        .filter(|m| header(m, "Call-ID") == call_id)
        .collect();
    for r in refreshes {
        let resp = answer(
            &r,
            200,
            "OK",
            "Session-Expires: 1800;refresher=uac\r\n",
            Some(SDP_B),
        );
        sim.recv(peer, resp);
        *answered += 1;
    }
}

#[test]
fn ended_calls_leave_no_timers_or_table_entries_behind() {
    const CALLS: u32 = 2000;
    let mut sim = Sim::new("");
    // A call that stays up through the churn, with a session timer holdfast refreshes.
    let (keep_invite, _) = answered_call(
        &mut sim,
        0,
        "Session-Expires: 1800;refresher=uac\r\nRequire: timer\r\n",
    );
    let keep_b = header(&keep_invite, "Call-ID").to_string();
    // Refreshes of the kept call answered, on the carrier's leg and the agent's.
    let mut refreshed = (0, 0);
    let refresh = |sim: &mut Sim, refreshed: &mut (u32, u32)| {
        answer_refreshes(sim, CARRIER, "churn-0@carrier.example", &mut refreshed.0);
        answer_refreshes(sim, AGENT_A, &keep_b, &mut refreshed.1);
    };
    let mut t = Duration::ZERO;
    for n in 1..=CALLS {
        sim.sent.clear();
        let media_from = sim.media.len();
        let (b_invite, ok) = answered_call(&mut sim, n, "");
        let to = header(&ok, "To").to_string();
        sim.recv(CARRIER, carrier_request("BYE", n, 11, &to, None));
        let bye = sim.last(AGENT_A, "BYE ");
        assert_eq!(header(&bye, "Call-ID"), header(&b_invite, "Call-ID"));
        sim.recv(AGENT_A, answer(&bye, 200, "OK", "", None));
        closed(&mut sim, media_from);
        t += Duration::from_millis(250);
        sim.advance_to(t);
        refresh(&mut sim, &mut refreshed);
    }
    // Every transaction of the last calls is over (Timer J/K/M: at most 64 × T1).
    for _ in 0..120 {
        sim.sent.clear();
        t += Duration::from_secs(1);
        sim.advance_to(t);
        refresh(&mut sim, &mut refreshed);
    }
    let tables = sim.core.per_call_tables();
    let count = |name: &str| {
        tables
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(0, |(_, v)| *v)
    };
    for (name, len) in &tables {
        let expected = match *name {
            "calls" => 1,
            "dialogs" => 2,
            "timers" => continue,
            _ => 0,
        };
        assert_eq!(*len, expected, "{name} after {CALLS} calls: {tables:?}");
    }
    // Each ended call had session-timer deadlines 15 and 30 minutes out: they must not stay
    // in the timer heap until then (they did: at least one entry per ended call).
    let timers = count("timers");
    assert!(
        timers < CALLS as usize / 4,
        "{timers} timer entries left after {CALLS} calls ended: {tables:?}"
    );
    // The call that stayed up still gets its refresh 15 minutes in, on both legs.
    assert_eq!(refreshed, (0, 0));
    while t < Duration::from_secs(1000) {
        sim.sent.clear();
        t += Duration::from_secs(1);
        sim.advance_to(t);
        refresh(&mut sim, &mut refreshed);
    }
    assert_eq!(refreshed, (1, 1), "refreshes of the call kept up");
    assert_eq!(sim.core.stats().calls_active, 1);
    assert!(sim.find(CARRIER, "BYE ").is_empty() && sim.find(AGENT_A, "BYE ").is_empty());
}

#[test]
fn tables_give_their_room_back_after_a_spike() {
    const SPIKE: u32 = 600;
    let mut sim = Sim::new("");
    let mut up = Vec::new();
    for n in 1..=SPIKE {
        sim.sent.clear();
        let (b_invite, ok) = answered_call(&mut sim, n, "");
        up.push((
            n,
            header(&ok, "To").to_string(),
            header(&b_invite, "Call-ID").to_string(),
        ));
    }
    let room = |sim: &Sim, name: &str| {
        let c = sim.core.per_call_capacity();
        c.iter().find(|(n, _)| *n == name).map_or(0, |(_, v)| *v)
    };
    assert!(room(&sim, "calls") >= SPIKE as usize);
    let mut t = Duration::ZERO;
    for (n, to, _) in &up {
        sim.sent.clear();
        let media_from = sim.media.len();
        sim.recv(CARRIER, carrier_request("BYE", *n, 11, to, None));
        let bye = sim.last(AGENT_A, "BYE ");
        sim.recv(AGENT_A, answer(&bye, 200, "OK", "", None));
        closed(&mut sim, media_from);
        t += Duration::from_millis(10);
        sim.advance_to(t);
    }
    // The spike's transactions end (64 × T1), and with them the last entries.
    sim.advance_to(t + Duration::from_secs(120));
    assert_eq!(sim.core.stats().calls_active, 0);
    let capacity = sim.core.per_call_capacity();
    for (name, cap) in &capacity {
        let most = if *name == "timers" { 512 } else { 128 };
        assert!(
            *cap <= most,
            "{name} keeps room for {cap} after a spike of {SPIKE} calls ended: {capacity:?}"
        );
    }
}
