//! Liveness on the virtual clock: silence never ends or moves a call by itself; a check
//! decides; a re-route of a leg that may still work keeps it until another provider answers;
//! ICMP from the AI leg counts at any time after the answer; transactions stop with their
//! call.
use super::{
    ack_from_carrier, answer, call, confirmed_call, header, in_dialog_from_carrier, invite,
    media_event, metrics_text, relay, to_carrier, updates_since, Sim, AGENT_A, AGENT_B, CARRIER,
    HF, SDP_B, SDP_B2,
};
use super::{CallState, RerouteTrigger};
use crate::b2bua::call::Side;
use crate::media::control::{MediaEvent, RelayUpdate};
use std::sync::Arc;
use std::time::Duration;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn silent(sim: &mut Sim, side: Side) {
    let id = relay(sim);
    media_event(
        sim,
        MediaEvent::Timeout {
            id,
            side,
            idle_for: Duration::from_secs(5),
        },
    );
}

fn icmp(sim: &mut Sim, side: Side, addr: &str) {
    let id = relay(sim);
    media_event(
        sim,
        MediaEvent::Unreachable {
            id,
            side,
            addr: addr.parse().unwrap(),
        },
    );
}

fn metric(sim: &mut Sim, line: &str) -> bool {
    metrics_text(sim).lines().any(|l| l == line)
}

/// The test config with `agent_a` added to agent-a's settings and `health` as the health
/// section's body.
fn with_agent_a(agent_a: &str, health: &str) -> Sim {
    let yaml = format!(
        r#"
sip:
  listen: ["udp:{HF}"]
health:
{health}
routing:
  attempt_timeout: 1s
  seed: 1
carriers:
  - {{ id: carrier, uri: "sip:{CARRIER}", region: us, ping: false, sources: ["{CARRIER}"] }}
ai_providers:
  - {{ id: agent-a, kind: sip, uri: "sip:agent@{AGENT_A}", region: us, priority: 1{agent_a} }}
  - {{ id: agent-b, kind: sip, uri: "sip:agent@{AGENT_B}", region: us, priority: 2, ping: false }}
routes:
  inbound: [ {{ regions: [us], ai: [agent-a, agent-b] }} ]
"#
    );
    Sim::with_config(Arc::new(
        crate::config::parse(&yaml, "test.yaml").expect("valid test config"),
    ))
}

#[test]
fn a_silent_agent_that_never_answers_options_keeps_its_call() {
    let mut sim = Sim::new("");
    confirmed_call(&mut sim, "", "");
    let checks = |sim: &Sim| {
        let mut ids: Vec<String> = sim
            .find(AGENT_A, "OPTIONS ")
            .iter()
            .map(|(_, m)| header(m, "Call-ID").to_string())
            .collect();
        ids.dedup();
        ids.len()
    };
    for round in 1..=4u64 {
        sim.advance_to(Duration::from_secs(5 * round));
        silent(&mut sim, Side::B);
        assert_eq!(checks(&sim), round as usize);
        // No answer: agent-a is not pinged and never answered one, so nothing says it is
        // gone rather than a user agent that ignores OPTIONS.
        sim.advance_to(Duration::from_secs(5 * round) + ms(2500));
    }
    assert!(sim.find(AGENT_B, "INVITE ").is_empty(), "never moved");
    // Each check's OPTIONS is retransmitted within its 2 s (UDP loss), never after.
    let sends: Vec<Duration> = sim
        .find(AGENT_A, "OPTIONS ")
        .iter()
        .map(|(t, _)| *t)
        .collect();
    assert_eq!(sends.len(), 4 * 3, "{sends:?}");
    assert!(sim.find(AGENT_A, "BYE ").is_empty() && sim.find(CARRIER, "BYE ").is_empty());
    assert_eq!(call(&sim).state, CallState::Confirmed);
    assert!(metric(
        &mut sim,
        "holdfast_liveness_checks_total{leg=\"ai\",result=\"unconfirmed\"} 4"
    ));
}

#[test]
fn a_silent_agent_whose_address_answers_health_pings_is_gone_when_its_check_is_not() {
    // agent-a is pinged (OPTIONS to the same address the dialog uses) and answers: an
    // OPTIONS it then leaves unanswered means it is gone.
    let mut sim = with_agent_a(
        "",
        "  ping_interval: 5s\n  ping_timeout: 1s\n  down_after: 3",
    );
    sim.advance_to(Duration::from_secs(5));
    let ping = sim.last(AGENT_A, "OPTIONS ");
    sim.recv(AGENT_A, answer(&ping, 200, "OK", "", None));
    confirmed_call(&mut sim, "", "");
    sim.advance_to(Duration::from_secs(6));
    silent(&mut sim, Side::B);
    sim.advance_to(Duration::from_millis(8100));
    let inv = sim.last(AGENT_B, "INVITE ");
    assert_eq!(header(&inv, "X-Holdfast-Reroute-Trigger"), "liveness");
    let r = &call(&sim).reroutes[0];
    assert!(r.detail.contains("no answer to its OPTIONS in 2s"), "{r:?}");
    assert!(r.confirmed);
}

#[test]
fn a_check_answered_by_any_status_keeps_the_call() {
    for status in [200u16, 405, 501, 404] {
        let mut sim = Sim::new("");
        confirmed_call(&mut sim, "", "");
        silent(&mut sim, Side::B);
        let opt = sim.last(AGENT_A, "OPTIONS ");
        sim.recv(AGENT_A, answer(&opt, status, "Whatever", "", None));
        sim.advance_to(Duration::from_secs(30));
        assert!(sim.find(AGENT_B, "INVITE ").is_empty(), "{status}");
        assert_eq!(call(&sim).state, CallState::Confirmed, "{status}");
    }
}

#[test]
fn icmp_from_the_agents_media_counts_at_once_after_the_answer() {
    let mut sim = Sim::new("");
    confirmed_call(&mut sim, "", "");
    sim.advance_to(ms(500));
    icmp(&mut sim, Side::B, "192.0.2.20:5000");
    let inv = sim.last(AGENT_B, "INVITE ");
    assert_eq!(
        header(&inv, "X-Holdfast-Reroute-Trigger"),
        "media_unreachable"
    );
    assert!(header(&sim.last(AGENT_A, "BYE "), "Reason").contains("ICMP"));
}

#[test]
fn icmp_before_the_callers_ack_reroutes_once_the_call_is_confirmed() {
    let mut sim = Sim::new("");
    sim.recv(CARRIER, invite(""));
    let b = sim.last(AGENT_A, "INVITE ");
    sim.recv(AGENT_A, answer(&b, 200, "OK", "", Some(SDP_B)));
    icmp(&mut sim, Side::B, "192.0.2.20:5000");
    assert!(sim.find(AGENT_B, "INVITE ").is_empty(), "not confirmed yet");
    let ok = sim.last(CARRIER, "SIP/2.0 200");
    sim.recv(CARRIER, ack_from_carrier(&ok));
    let inv = sim.last(AGENT_B, "INVITE ");
    assert_eq!(
        header(&inv, "X-Holdfast-Reroute-Trigger"),
        "media_unreachable"
    );
}

#[test]
fn a_check_that_hits_a_transport_error_is_a_confirmed_failure() {
    let mut sim = Sim::new("");
    confirmed_call(&mut sim, "", "");
    silent(&mut sim, Side::B);
    assert_eq!(sim.find(AGENT_A, "OPTIONS ").len(), 1);
    // ICMP port unreachable on the OPTIONS: nothing listens at the agent's SIP address.
    sim.core.handle_transport_error(
        crate::sip::Transport::Udp,
        AGENT_A.parse().unwrap(),
        sim.now,
    );
    sim.collect();
    let inv = sim.last(AGENT_B, "INVITE ");
    assert_eq!(header(&inv, "X-Holdfast-Reroute-Trigger"), "liveness");
}

#[test]
fn in_dialog_options_is_used_when_configured_and_481_means_gone() {
    let mut sim = with_agent_a(
        ", ping: false, liveness: in-dialog-options",
        "  ping_interval: 1h",
    );
    let first = confirmed_call(&mut sim, "", "");
    silent(&mut sim, Side::B);
    let opt = sim.last(AGENT_A, "OPTIONS ");
    assert_eq!(header(&opt, "Call-ID"), header(&first, "Call-ID"), "{opt}");
    assert!(header(&opt, "To").contains("tag=uastag"), "{opt}");
    // 200 (or 405: the dialog exists) keeps it.
    sim.recv(AGENT_A, answer(&opt, 405, "Method Not Allowed", "", None));
    assert!(sim.find(AGENT_B, "INVITE ").is_empty());
    sim.advance_to(Duration::from_secs(5));
    silent(&mut sim, Side::B);
    let opt = sim.last(AGENT_A, "OPTIONS ");
    sim.recv(
        AGENT_A,
        answer(&opt, 481, "Call/Transaction Does Not Exist", "", None),
    );
    let inv = sim.last(AGENT_B, "INVITE ");
    assert_eq!(header(&inv, "X-Holdfast-Reroute-Trigger"), "liveness");
    // An in-dialog check left unanswered means gone too.
    let mut sim = with_agent_a(
        ", ping: false, liveness: in-dialog-options",
        "  ping_interval: 1h",
    );
    confirmed_call(&mut sim, "", "");
    silent(&mut sim, Side::B);
    sim.advance_to(ms(2100));
    assert_eq!(sim.find(AGENT_B, "INVITE ").len(), 1);
}

#[test]
fn liveness_off_sends_nothing_on_silence() {
    let mut sim = with_agent_a(", ping: false, liveness: off", "  ping_interval: 1h");
    confirmed_call(&mut sim, "", "");
    let sent = sim.sent.len();
    silent(&mut sim, Side::B);
    sim.advance_to(Duration::from_secs(60));
    assert_eq!(sim.sent.len(), sent, "{:#?}", &sim.sent[sent..]);
}

#[test]
fn the_check_runs_on_hold_too() {
    let mut sim = Sim::new("");
    confirmed_call(&mut sim, "", "");
    let ok = sim.last(CARRIER, "SIP/2.0 200");
    let hold = super::SDP_A.replace("RTP/AVP 0\r\n", "RTP/AVP 0\r\na=sendonly\r\n");
    sim.recv(
        CARRIER,
        in_dialog_from_carrier(&ok, "INVITE", 11, "z9hG4bKhold", "", Some(&hold)),
    );
    assert!(sim.last(CARRIER, "SIP/2.0 200").contains("CSeq: 11 INVITE"));
    // On hold, the agent dies: the relay still reports its silence, and it is checked.
    silent(&mut sim, Side::B);
    assert_eq!(sim.find(AGENT_A, "OPTIONS ").len(), 1);
    sim.core.handle_transport_error(
        crate::sip::Transport::Udp,
        AGENT_A.parse().unwrap(),
        sim.now,
    );
    sim.collect();
    assert_eq!(sim.find(AGENT_B, "INVITE ").len(), 1);
}

#[test]
fn a_provider_down_by_health_keeps_its_call_when_no_other_provider_takes_it() {
    let mut sim = Sim::new("");
    let first = confirmed_call(&mut sim, "", "");
    let carrier_msgs = to_carrier(&sim);
    let cmds = sim.media.len();
    sim.core.set_failed("agent-a", true, sim.now);
    sim.collect();
    // agent-a keeps the call while agent-b is tried: no BYE, its audio still relayed.
    let inv = sim.last(AGENT_B, "INVITE ");
    assert_eq!(header(&inv, "X-Holdfast-Reroute-Trigger"), "health_down");
    assert!(sim.find(AGENT_A, "BYE ").is_empty());
    let ups = updates_since(&sim, cmds);
    assert!(
        !ups.iter().any(|u| matches!(
            u,
            RelayUpdate::Mute { muted: true, .. } | RelayUpdate::Relatch { side: Side::B, .. }
        )),
        "{ups:?}"
    );
    // agent-b fails: the call stays with agent-a, as it was.
    let cmds = sim.media.len();
    sim.recv(AGENT_B, answer(&inv, 503, "Service Unavailable", "", None));
    let c = call(&sim);
    assert_eq!(c.state, CallState::Confirmed);
    assert_eq!(c.pinned.as_deref(), Some("agent-a"));
    assert!(!c.reroutes[0].confirmed);
    assert!(
        c.reroutes[0]
            .outcome
            .as_deref()
            .is_some_and(|o| o.contains("stayed with agent-a")),
        "{:?}",
        c.reroutes[0]
    );
    assert!(sim.find(AGENT_A, "BYE ").is_empty());
    assert_eq!(to_carrier(&sim), carrier_msgs, "the carrier saw nothing");
    // Its media peer is its SDP's again.
    assert!(updates_since(&sim, cmds).iter().any(|u| matches!(
        u,
        RelayUpdate::Relatch { side: Side::B, rtp: Some(a), .. } if a.port() == 5000
    )));
    // The call goes on with agent-a: the carrier's BYE reaches it in its dialog.
    let ok = sim.last(CARRIER, "SIP/2.0 200");
    sim.recv(
        CARRIER,
        in_dialog_from_carrier(&ok, "BYE", 12, "z9hG4bKbye1", "", None),
    );
    let bye = sim.last(AGENT_A, "BYE ");
    assert_eq!(header(&bye, "Call-ID"), header(&first, "Call-ID"));
    assert!(sim.find(AGENT_B, "BYE ").is_empty());
}

#[test]
fn a_kept_leg_is_let_go_only_once_the_new_provider_answers() {
    let mut sim = Sim::new("");
    let first = confirmed_call(&mut sim, "", "");
    sim.core.set_failed("agent-a", true, sim.now);
    sim.collect();
    let inv = sim.last(AGENT_B, "INVITE ");
    sim.recv(AGENT_B, answer(&inv, 180, "Ringing", "", None));
    assert!(sim.find(AGENT_A, "BYE ").is_empty());
    let cmds = sim.media.len();
    sim.recv(AGENT_B, answer(&inv, 200, "OK", "", Some(SDP_B2)));
    let bye = sim.last(AGENT_A, "BYE ");
    assert_eq!(header(&bye, "Call-ID"), header(&first, "Call-ID"));
    assert!(
        header(&bye, "Reason").contains("re-routed to agent-b"),
        "{bye}"
    );
    let ups = updates_since(&sim, cmds);
    assert!(
        ups.contains(&RelayUpdate::SourceSwitch { side: Side::B }),
        "{ups:?}"
    );
    assert!(
        ups.iter().any(|u| matches!(
            u,
            RelayUpdate::Fill {
                toward: Side::A,
                audio: Some(_),
                negotiated: Some(0)
            }
        )),
        "gap audio from the switch to agent-b's first audio: {ups:?}"
    );
    assert_eq!(call(&sim).pinned.as_deref(), Some("agent-b"));
}

#[test]
fn a_kept_leg_confirmed_gone_during_the_reroute_is_cut_off_and_the_call_ends_if_none_is_left() {
    let mut sim = Sim::new("");
    confirmed_call(&mut sim, "", "");
    sim.core.set_failed("agent-a", true, sim.now);
    sim.collect();
    let inv = sim.last(AGENT_B, "INVITE ");
    let cmds = sim.media.len();
    icmp(&mut sim, Side::B, "192.0.2.20:5000");
    assert_eq!(sim.find(AGENT_A, "BYE ").len(), 1, "cut off");
    let ups = updates_since(&sim, cmds);
    assert!(ups.contains(&RelayUpdate::Mute {
        from: Side::B,
        muted: true
    }));
    assert!(ups
        .iter()
        .any(|u| matches!(u, RelayUpdate::Fill { audio: Some(_), .. })));
    sim.recv(AGENT_B, answer(&inv, 503, "Service Unavailable", "", None));
    let bye = sim.last(CARRIER, "BYE ");
    assert!(
        header(&bye, "Reason").contains("every other provider failed"),
        "{bye}"
    );
}

#[test]
fn the_kept_agent_hanging_up_ends_the_call_and_cancels_the_new_attempt() {
    let mut sim = Sim::new("");
    let first = confirmed_call(&mut sim, "", "");
    sim.core.set_failed("agent-a", true, sim.now);
    sim.collect();
    let inv = sim.last(AGENT_B, "INVITE ");
    sim.recv(AGENT_B, answer(&inv, 180, "Ringing", "", None));
    let bye = format!(
        "BYE sip:hf@{HF} SIP/2.0\r\nVia: SIP/2.0/UDP {AGENT_A};branch=z9hG4bKagentbye\r\n\
         From: {};tag=uastag\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: 2 BYE\r\n\
         Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
        header(&first, "To"),
        header(&first, "From"),
        header(&first, "Call-ID"),
    );
    sim.recv(AGENT_A, bye);
    assert!(sim.last(AGENT_A, "SIP/2.0 200").contains("CSeq: 2 BYE"));
    assert_eq!(sim.find(AGENT_B, "CANCEL ").len(), 1);
    assert_eq!(sim.find(CARRIER, "BYE ").len(), 1);
    assert!(sim.find(AGENT_A, "BYE ").is_empty(), "it hung up itself");
}

#[test]
fn a_5xx_to_a_relayed_reoffer_keeps_the_agent_when_no_other_provider_answers() {
    let mut sim = Sim::new("");
    confirmed_call(&mut sim, "", "");
    let ok = sim.last(CARRIER, "SIP/2.0 200");
    let sdp = super::SDP_A.replace("RTP/AVP 0", "RTP/AVP 8");
    sim.recv(
        CARRIER,
        in_dialog_from_carrier(&ok, "INVITE", 11, "z9hG4bKre1", "", Some(&sdp)),
    );
    let re = sim.last(AGENT_A, "INVITE ");
    sim.recv(AGENT_A, answer(&re, 500, "Server Internal Error", "", None));
    let inv = sim.last(AGENT_B, "INVITE ");
    sim.recv(AGENT_B, answer(&inv, 503, "Service Unavailable", "", None));
    assert!(sim.find(CARRIER, "BYE ").is_empty());
    assert!(sim.find(AGENT_A, "BYE ").is_empty());
    let c = call(&sim);
    assert_eq!(
        (c.state, c.pinned.as_deref()),
        (CallState::Confirmed, Some("agent-a"))
    );
}

#[test]
fn a_relayed_reinvite_gets_100_trying_and_stops_with_its_call() {
    let mut sim = Sim::new("");
    confirmed_call(&mut sim, "", "");
    let ok = sim.last(CARRIER, "SIP/2.0 200");
    let sdp = super::SDP_A.replace("RTP/AVP 0", "RTP/AVP 8");
    sim.recv(
        CARRIER,
        in_dialog_from_carrier(&ok, "INVITE", 11, "z9hG4bKre1", "", Some(&sdp)),
    );
    let trying = sim.last(CARRIER, "SIP/2.0 100");
    assert!(trying.contains("CSeq: 11 INVITE"), "{trying}");
    assert_eq!(sim.find(AGENT_A, "INVITE ").len(), 2, "relayed");
    // The slow agent says nothing; the carrier hangs up.
    sim.advance_to(ms(1600));
    let relayed = sim.find(AGENT_A, "INVITE ").len();
    sim.recv(
        CARRIER,
        in_dialog_from_carrier(&ok, "BYE", 12, "z9hG4bKbye1", "", None),
    );
    assert!(sim.last(CARRIER, "SIP/2.0 487").contains("CSeq: 11 INVITE"));
    sim.advance_to(Duration::from_secs(40));
    assert_eq!(
        sim.find(AGENT_A, "INVITE ").len(),
        relayed,
        "no retransmission to the agent after the call ended"
    );
}

#[test]
fn a_silent_carrier_that_allows_update_is_checked_with_an_update() {
    let mut sim = Sim::new("");
    sim.recv(
        CARRIER,
        invite("Allow: INVITE, ACK, BYE, CANCEL, UPDATE\r\n"),
    );
    let b = sim.last(AGENT_A, "INVITE ");
    sim.recv(AGENT_A, answer(&b, 200, "OK", "", Some(SDP_B)));
    let ok = sim.last(CARRIER, "SIP/2.0 200");
    sim.recv(CARRIER, ack_from_carrier(&ok));
    silent(&mut sim, Side::A);
    let up = sim.last(CARRIER, "UPDATE ");
    sim.recv(CARRIER, answer(&up, 200, "OK", "", None));
    sim.advance_to(Duration::from_secs(60));
    assert!(sim.find(CARRIER, "BYE ").is_empty());
    assert!(metric(
        &mut sim,
        "holdfast_liveness_checks_total{leg=\"carrier\",result=\"started\"} 1"
    ));
}

#[test]
fn icmp_from_the_carriers_media_changes_nothing() {
    // A carrier's media server may send from one port and never listen on its SDP's (a
    // SIPp pcap player does): nothing is asked of the carrier, the call goes on.
    let mut sim = Sim::new("");
    confirmed_call(&mut sim, "", "");
    let sent = sim.sent.len();
    icmp(&mut sim, Side::A, "192.0.2.10:4000");
    sim.advance_to(Duration::from_secs(20));
    assert_eq!(sim.sent.len(), sent, "{:#?}", &sim.sent[sent..]);
    assert_eq!(call(&sim).state, CallState::Confirmed);
}

#[test]
fn gap_audio_runs_through_every_attempt_of_a_reroute_even_failed_ones() {
    let mut sim = Sim::new("");
    confirmed_call(&mut sim, "", "");
    let cmds = sim.media.len();
    icmp(&mut sim, Side::B, "192.0.2.20:5000");
    let inv = sim.last(AGENT_B, "INVITE ");
    let ups = updates_since(&sim, cmds);
    let fills: Vec<_> = ups
        .iter()
        .filter(|u| matches!(u, RelayUpdate::Fill { .. }))
        .collect();
    assert_eq!(fills.len(), 1, "{ups:?}");
    assert!(
        matches!(
            fills[0],
            RelayUpdate::Fill {
                toward: Side::A,
                audio: Some(_),
                negotiated: Some(0)
            }
        ),
        "in the caller's codec even if the agent never spoke: {fills:?}"
    );
    // The attempt fails: nothing stops the fill or lets a failed candidate's audio through.
    let cmds = sim.media.len();
    sim.recv(
        AGENT_B,
        answer(&inv, 183, "Session Progress", "", Some(SDP_B2)),
    );
    sim.recv(AGENT_B, answer(&inv, 503, "Service Unavailable", "", None));
    let ups = updates_since(&sim, cmds);
    assert!(
        !ups.iter().any(|u| matches!(
            u,
            RelayUpdate::Fill { audio: None, .. } | RelayUpdate::Mute { muted: false, .. }
        )),
        "{ups:?}"
    );
}

#[test]
fn a_websocket_leg_is_checked_with_a_ping() {
    use crate::ai::control::{AiCommand, AiEvent};
    let mut sim = Sim::with_config(super::ws::config(""));
    super::ws::confirmed(&mut sim);
    let leg = super::ws::last_open(&sim).leg;
    silent(&mut sim, Side::B);
    let check = sim.ai.iter().rev().find_map(|c| match c {
        AiCommand::Check { leg, timeout } => Some((*leg, *timeout)),
        _ => None,
    });
    assert_eq!(check, Some((leg, Duration::from_secs(2))));
    sim.core
        .handle_ai_event(AiEvent::Check { leg, alive: true }, sim.now);
    sim.collect();
    assert_eq!(call(&sim).state, CallState::Confirmed);
    sim.advance_to(Duration::from_secs(5));
    silent(&mut sim, Side::B);
    sim.core
        .handle_ai_event(AiEvent::Check { leg, alive: false }, sim.now);
    sim.collect();
    let c = call(&sim);
    assert_eq!(c.reroutes.len(), 1);
    assert_eq!(c.reroutes[0].trigger, RerouteTrigger::Liveness);
}

#[test]
fn a_late_icmp_error_about_the_replaced_agent_is_not_blamed_on_the_new_one() {
    let mut sim = Sim::new("");
    confirmed_call(&mut sim, "", "");
    icmp(&mut sim, Side::B, "192.0.2.20:5000");
    let inv = sim.last(AGENT_B, "INVITE ");
    sim.recv(AGENT_B, answer(&inv, 200, "OK", "", Some(SDP_B2)));
    assert_eq!(call(&sim).pinned.as_deref(), Some("agent-b"));
    // The relay still pointed at agent-a when a packet it had sent there drew this error.
    icmp(&mut sim, Side::B, "192.0.2.20:5000");
    let c = call(&sim);
    assert_eq!((c.state, c.reroutes.len()), (CallState::Confirmed, 1));
    assert!(sim.find(CARRIER, "BYE ").is_empty());
    // The new agent's own address still counts.
    icmp(&mut sim, Side::B, "192.0.2.30:6000");
    let bye = sim.last(CARRIER, "BYE ");
    assert!(
        header(&bye, "Reason").contains("no other provider"),
        "agent-b gone, no provider left: {bye}"
    );
}

#[test]
fn a_late_icmp_error_from_a_replaced_websocket_bridge_is_ignored() {
    use crate::ai::control::AiEvent;
    let mut sim = Sim::with_config(super::ws::config(""));
    super::ws::confirmed(&mut sim);
    let a = super::ws::last_open(&sim).leg;
    sim.core.handle_ai_event(
        AiEvent::Closed {
            leg: a,
            failure: true,
            why: "connection reset".into(),
        },
        sim.now,
    );
    sim.collect();
    let b = super::ws::last_open(&sim).leg;
    sim.core.handle_ai_event(
        AiEvent::Up {
            leg: b,
            media: "127.0.0.1:40001".parse().unwrap(),
        },
        sim.now,
    );
    sim.collect();
    assert_eq!(call(&sim).pinned.as_deref(), Some("bot-b"));
    icmp(&mut sim, Side::B, "127.0.0.1:40000");
    let c = call(&sim);
    assert_eq!((c.state, c.reroutes.len()), (CallState::Confirmed, 1));
}
