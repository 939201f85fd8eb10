//! Mid-call re-route of the AI leg on the virtual clock: every trigger moves the call to the
//! next provider while the carrier's leg sees nothing at all, the relay is told to keep the
//! carrier's stream continuous, and a call with no provider left ends cleanly.
use super::RerouteTrigger;
use super::{
    ack_from_carrier, answer, call, confirmed_call, header, in_dialog_from_carrier, invite,
    media_event, relay, to_carrier, updates_since, Sim, AGENT_A, AGENT_B, CARRIER, SDP_B, SDP_B2,
};
use crate::b2bua::call::Side;
use crate::media::control::{MediaCommand, MediaEvent, RelayUpdate};
use std::time::Duration;

fn ai_silent(sim: &mut Sim) {
    let id = relay(sim);
    media_event(
        sim,
        MediaEvent::Timeout {
            id,
            side: Side::B,
            idle_for: Duration::from_secs(1),
        },
    );
}

fn m_port(msg: &str) -> &str {
    msg.lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .and_then(|r| r.split(' ').next())
        .unwrap_or_else(|| panic!("no m=audio in {msg}"))
}

/// The OPTIONS holdfast sent the agent at `agent` to check on it (the last one).
fn check_options(sim: &Sim, agent: &str) -> String {
    sim.last(agent, "OPTIONS ")
}

fn ai_gone(sim: &mut Sim) {
    let id = relay(sim);
    media_event(
        sim,
        MediaEvent::Unreachable {
            id,
            side: Side::B,
            addr: "192.0.2.20:5000".parse().unwrap(),
        },
    );
}

#[test]
fn a_silent_ai_leg_is_checked_kept_while_it_answers_and_moved_once_it_stops() {
    let mut sim = Sim::new("");
    let first = confirmed_call(&mut sim, "", "");
    let carrier_msgs = to_carrier(&sim);
    let cmds = sim.media.len();
    // Silence makes the leg suspect: an OPTIONS outside the dialog to the agent's Contact,
    // on the dialog's flow, and an empty datagram to its media port. Nothing else.
    ai_silent(&mut sim);
    let opt = check_options(&sim, AGENT_A);
    assert!(
        opt.starts_with("OPTIONS sip:agent@127.0.0.1:5081 SIP/2.0"),
        "{opt}"
    );
    assert_ne!(
        header(&opt, "Call-ID"),
        header(&first, "Call-ID"),
        "outside the dialog"
    );
    assert!(!header(&opt, "To").contains("tag="), "{opt}");
    assert!(
        updates_since(&sim, cmds).contains(&RelayUpdate::Probe { side: Side::B }),
        "a datagram to draw ICMP if nothing listens"
    );
    // It answers (405 is as good as 200: the user agent is there): the call stays.
    sim.recv(AGENT_A, answer(&opt, 405, "Method Not Allowed", "", None));
    sim.advance_to(Duration::from_secs(10));
    assert!(sim.find(AGENT_B, "INVITE ").is_empty());
    assert!(sim.find(AGENT_A, "BYE ").is_empty());
    assert_eq!(call(&sim).state, super::CallState::Confirmed);
    // Silent again, and this time (having answered before) it does not answer: gone.
    let cmds = sim.media.len();
    ai_silent(&mut sim);
    assert_eq!(sim.find(AGENT_A, "OPTIONS ").len(), 2);
    sim.advance_to(Duration::from_millis(11_900));
    assert!(
        sim.find(AGENT_B, "INVITE ").is_empty(),
        "waits media.check_timeout"
    );
    sim.advance_to(Duration::from_millis(12_100));

    let bye = sim.last(AGENT_A, "BYE ");
    assert!(header(&bye, "Reason").contains("re-routed"), "{bye}");
    let inv = sim.last(AGENT_B, "INVITE ");
    assert_eq!(header(&inv, "X-Holdfast-Reroute-Count"), "1");
    assert_eq!(header(&inv, "X-Holdfast-Rerouted-From"), "agent-a");
    assert_eq!(header(&inv, "X-Holdfast-Reroute-Trigger"), "liveness");
    assert_eq!(header(&inv, "X-Holdfast-Caller"), "+15550001111");
    assert_eq!(header(&inv, "X-Holdfast-Callee"), "+15551230000");
    assert_eq!(
        header(&inv, "X-Holdfast-Call"),
        header(&first, "X-Holdfast-Call")
    );
    assert_eq!(header(&inv, "X-Carrier-Thing"), "keep-me");
    assert_ne!(header(&inv, "Call-ID"), header(&first, "Call-ID"));
    assert_eq!(
        m_port(&inv),
        m_port(&first),
        "the new provider gets the same relay port"
    );
    let ups = updates_since(&sim, cmds);
    assert!(
        ups.contains(&RelayUpdate::Mute {
            from: Side::B,
            muted: true
        }),
        "the dead provider's audio is no longer relayed: {ups:?}"
    );
    assert!(!ups.contains(&RelayUpdate::SourceSwitch { side: Side::B }));
    assert_eq!(call(&sim).state, super::CallState::Rerouting);

    let cmds = sim.media.len();
    sim.recv(AGENT_B, answer(&inv, 180, "Ringing", "", None));
    sim.advance_to(Duration::from_millis(12_200));
    sim.recv(AGENT_B, answer(&inv, 200, "OK", "", Some(SDP_B2)));
    assert_eq!(sim.find(AGENT_B, "ACK ").len(), 1);
    let ups = updates_since(&sim, cmds);
    assert!(
        ups.contains(&RelayUpdate::SourceSwitch { side: Side::B }),
        "{ups:?}"
    );
    assert!(ups.contains(&RelayUpdate::Mute {
        from: Side::B,
        muted: false
    }));
    assert!(ups.iter().any(|u| matches!(
        u,
        RelayUpdate::Relatch { side: Side::B, rtp: Some(a), .. } if a.port() == 6000
    )));
    assert_eq!(
        to_carrier(&sim),
        carrier_msgs,
        "no re-INVITE, no BYE, nothing"
    );
    let c = call(&sim);
    assert_eq!(c.state, super::CallState::Confirmed);
    assert_eq!(c.pinned.as_deref(), Some("agent-b"));
    let r = &c.reroutes[0];
    assert_eq!(r.trigger, RerouteTrigger::Liveness);
    assert!(r.confirmed);
    assert_eq!(
        (r.from.as_str(), r.to.as_deref()),
        ("agent-a", Some("agent-b"))
    );
    assert_eq!(r.setup_ms, Some(200));
    assert_eq!(sim.core.stats().reroutes, 1);

    // The relay reports the new provider's first audio reaching the carrier.
    let id = relay(&sim);
    media_event(
        &mut sim,
        MediaEvent::Resumed {
            id,
            side: Side::B,
            gap: Some(Duration::from_millis(180)),
        },
    );
    assert_eq!(call(&sim).reroutes[0].gap_ms, Some(180));

    // The carrier hangs up: the BYE goes to the new provider.
    let ok = sim.last(CARRIER, "SIP/2.0 200");
    sim.recv(
        CARRIER,
        in_dialog_from_carrier(&ok, "BYE", 11, "z9hG4bKbye1", "", None),
    );
    assert_eq!(sim.find(AGENT_B, "BYE ").len(), 1);
    assert_eq!(sim.find(AGENT_A, "BYE ").len(), 1, "only the re-route's");
}

/// A BYE from the agent on the B leg of `b_invite`, with `extra` headers.
fn bye_from_agent(b_invite: &str, extra: &str) -> String {
    format!(
        "BYE sip:hf@{} SIP/2.0\r\nVia: SIP/2.0/UDP {AGENT_A};branch=z9hG4bKagentbye\r\n\
         From: {};tag=uastag\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: 2 BYE\r\n{extra}\
         Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
        super::HF,
        header(b_invite, "To"),
        header(b_invite, "From"),
        header(b_invite, "Call-ID"),
    )
}

#[test]
fn bye_with_an_error_cause_reroutes_and_a_plain_bye_ends_the_call() {
    for (reason, reroutes) in [
        ("Reason: SIP;cause=503;text=\"model overloaded\"\r\n", true),
        ("Reason: Q.850;cause=41\r\n", true),
        (
            "Reason: Q.850;cause=16;text=\"Normal call clearing\"\r\n",
            false,
        ),
        ("", false),
    ] {
        let mut sim = Sim::new("");
        let first = confirmed_call(&mut sim, "", "");
        sim.recv(AGENT_A, bye_from_agent(&first, reason));
        assert_eq!(sim.find(AGENT_A, "SIP/2.0 200").len(), 1, "{reason}");
        assert!(
            sim.find(AGENT_A, "BYE ").is_empty(),
            "never a BYE back: {reason}"
        );
        assert_eq!(
            sim.find(AGENT_B, "INVITE ").len(),
            usize::from(reroutes),
            "{reason}"
        );
        assert_eq!(
            sim.find(CARRIER, "BYE ").len(),
            usize::from(!reroutes),
            "{reason}"
        );
        if reroutes {
            assert_eq!(call(&sim).reroutes[0].trigger, RerouteTrigger::Bye);
        }
    }
}

#[test]
fn no_provider_left_ends_the_call_with_a_reason_and_never_retries_the_failed_one() {
    let mut sim = Sim::new("");
    confirmed_call(&mut sim, "", "");
    sim.advance_to(Duration::from_secs(2));
    let id = relay(&sim);
    media_event(
        &mut sim,
        MediaEvent::Unreachable {
            id,
            side: Side::B,
            addr: "192.0.2.20:5000".parse().unwrap(),
        },
    );
    let inv = sim.last(AGENT_B, "INVITE ");
    assert_eq!(
        header(&inv, "X-Holdfast-Reroute-Trigger"),
        "media_unreachable"
    );
    sim.recv(AGENT_B, answer(&inv, 503, "Service Unavailable", "", None));
    assert_eq!(
        sim.find(AGENT_A, "INVITE ").len(),
        1,
        "agent-a failed: never again"
    );
    let bye = sim.last(CARRIER, "BYE ");
    let reason = header(&bye, "Reason");
    assert!(
        reason.contains("agent-b 503 Service Unavailable"),
        "the Reason names what happened: {reason}"
    );
    let s = sim.core.stats();
    assert_eq!((s.reroutes, s.reroutes_failed), (1, 1));
}

#[test]
fn a_provider_failing_two_calls_within_30s_gets_no_new_calls() {
    let mut sim = Sim::new("");
    for n in 1..=2u32 {
        let inv = invite("")
            .replace("carrier-call-1@", &format!("carrier-call-{n}@"))
            .replace("z9hG4bKcarrier1", &format!("z9hG4bKcarrier{n}"));
        sim.recv(CARRIER, inv);
        let b = sim.last(AGENT_A, "INVITE ");
        sim.recv(AGENT_A, answer(&b, 200, "OK", "", Some(SDP_B)));
        let ok = sim.last(CARRIER, "SIP/2.0 200");
        sim.recv(
            CARRIER,
            ack_from_carrier(&ok).replace("carrier-call-1@", &format!("carrier-call-{n}@")),
        );
        sim.recv(
            AGENT_A,
            bye_from_agent(&b, "Reason: SIP;cause=500\r\n")
                .replace("z9hG4bKagentbye", &format!("z9hG4bKagentbye{n}")),
        );
        let re = sim.last(AGENT_B, "INVITE ");
        sim.recv(AGENT_B, answer(&re, 200, "OK", "", Some(SDP_B2)));
        sim.advance_to(Duration::from_secs(u64::from(n) * 5));
    }
    assert_eq!(sim.find(AGENT_A, "INVITE ").len(), 2);
    let inv = invite("")
        .replace("carrier-call-1@", "carrier-call-3@")
        .replace("z9hG4bKcarrier1", "z9hG4bKcarrier3");
    sim.recv(CARRIER, inv);
    assert_eq!(
        sim.find(AGENT_A, "INVITE ").len(),
        2,
        "agent-a's breaker is open: the third call goes to agent-b"
    );
    assert_eq!(sim.find(AGENT_B, "INVITE ").len(), 3);
}

#[test]
fn a_reroute_never_leaves_the_calls_regions_even_after_a_reload() {
    // The EU call is admitted under an EU-only rule; a reload then lets the rule use a US
    // agent. The call keeps its regions: with its EU agent gone it ends rather than cross.
    let eu = |regions: &str, ai: &str| {
        let yaml = format!(
            r#"
sip:
  listen: ["udp:{hf}"]
health: {{ ping_interval: 1h }}
routing: {{ attempt_timeout: 1s, seed: 1 }}
carriers:
  - {{ id: carrier, uri: "sip:{CARRIER}", region: eu, ping: false, sources: ["{CARRIER}"] }}
ai_providers:
  - {{ id: agent-a, kind: sip, uri: "sip:agent@{AGENT_A}", region: eu, ping: false }}
  - {{ id: agent-b, kind: sip, uri: "sip:agent@{AGENT_B}", region: us, ping: false }}
routes:
  inbound: [ {{ regions: [{regions}], ai: [{ai}] }} ]
"#,
            hf = super::HF
        );
        std::sync::Arc::new(crate::config::parse(&yaml, "eu.yaml").expect("valid"))
    };
    let mut sim = Sim::new("");
    sim.core.handle_reload(eu("eu", "agent-a"), sim.now);
    sim.collect();
    confirmed_call(&mut sim, "", "");
    assert_eq!(call(&sim).regions, vec!["eu".to_string()]);
    sim.core
        .handle_reload(eu("eu, us", "agent-a, agent-b"), sim.now);
    sim.collect();
    sim.advance_to(Duration::from_secs(2));
    ai_gone(&mut sim);
    assert!(sim.find(AGENT_B, "INVITE ").is_empty(), "never to the US");
    let bye = sim.last(CARRIER, "BYE ");
    assert!(
        header(&bye, "Reason").contains("no other provider"),
        "{bye}"
    );
}

#[test]
fn a_carrier_reinvite_during_a_reroute_gets_491_and_a_failed_ai_reinvite_reroutes() {
    let mut sim = Sim::new("");
    let first = confirmed_call(&mut sim, "", "");
    let ok = sim.last(CARRIER, "SIP/2.0 200");
    // The carrier changes codec: relayed to agent-a, which fails it with 503.
    let sdp = super::SDP_A.replace("RTP/AVP 0", "RTP/AVP 8");
    sim.recv(
        CARRIER,
        in_dialog_from_carrier(&ok, "INVITE", 11, "z9hG4bKre1", "", Some(&sdp)),
    );
    let re = sim.last(AGENT_A, "INVITE ");
    assert_ne!(re, first);
    sim.recv(AGENT_A, answer(&re, 503, "Service Unavailable", "", None));
    let r = sim.last(CARRIER, "SIP/2.0 503");
    assert!(r.contains("CSeq: 11 INVITE"), "{r}");
    let inv = sim.last(AGENT_B, "INVITE ");
    assert_eq!(header(&inv, "X-Holdfast-Reroute-Trigger"), "reinvite");
    assert!(
        inv.contains("RTP/AVP 0"),
        "the session the carrier kept (PCMU), not the refused offer: {inv}"
    );
    // While agent-b is being set up, the carrier's re-INVITE waits.
    sim.recv(
        CARRIER,
        in_dialog_from_carrier(&ok, "INVITE", 12, "z9hG4bKre2", "", Some(&sdp)),
    );
    assert!(sim.last(CARRIER, "SIP/2.0 491").contains("CSeq: 12 INVITE"));
    // The carrier hangs up before agent-b answers: agent-b's INVITE is cancelled.
    sim.recv(AGENT_B, answer(&inv, 180, "Ringing", "", None));
    sim.recv(
        CARRIER,
        in_dialog_from_carrier(&ok, "BYE", 13, "z9hG4bKbye1", "", None),
    );
    assert_eq!(sim.find(AGENT_B, "CANCEL ").len(), 1);
}

#[test]
fn a_provider_health_takes_down_moves_its_calls() {
    let yaml = format!(
        r#"
sip:
  listen: ["udp:{hf}"]
health: {{ ping_interval: 5s, ping_timeout: 1s, down_after: 1, up_after: 1 }}
routing: {{ attempt_timeout: 1s, seed: 1 }}
carriers:
  - {{ id: carrier, uri: "sip:{CARRIER}", region: us, ping: false, sources: ["{CARRIER}"] }}
ai_providers:
  - {{ id: agent-a, kind: sip, uri: "sip:agent@{AGENT_A}", region: us, priority: 1 }}
  - {{ id: agent-b, kind: sip, uri: "sip:agent@{AGENT_B}", region: us, priority: 2, ping: false }}
routes:
  inbound: [ {{ regions: [us], ai: [agent-a, agent-b] }} ]
"#,
        hf = super::HF
    );
    let cfg = crate::config::parse(&yaml, "ping.yaml").expect("valid");
    let mut sim = Sim::new("");
    sim.core.handle_reload(std::sync::Arc::new(cfg), sim.now);
    sim.collect();
    confirmed_call(&mut sim, "", "");
    assert!(sim.find(AGENT_B, "INVITE ").is_empty());
    // agent-a stops answering its OPTIONS pings: down after one timeout.
    sim.advance_to(Duration::from_secs(8));
    assert!(!sim.find(AGENT_A, "OPTIONS ").is_empty(), "pinged");
    let inv = sim.last(AGENT_B, "INVITE ");
    assert_eq!(header(&inv, "X-Holdfast-Reroute-Trigger"), "health_down");
    assert_eq!(call(&sim).reroutes[0].trigger, RerouteTrigger::HealthDown);
}

#[test]
fn an_ai_leg_that_never_answers_a_relayed_reinvite_is_replaced_and_the_carrier_gets_500() {
    let mut sim = Sim::new("");
    confirmed_call(&mut sim, "", "");
    let ok = sim.last(CARRIER, "SIP/2.0 200");
    let sdp = super::SDP_A.replace("RTP/AVP 0", "RTP/AVP 8");
    sim.recv(
        CARRIER,
        in_dialog_from_carrier(&ok, "INVITE", 11, "z9hG4bKre1", "", Some(&sdp)),
    );
    assert_eq!(sim.find(AGENT_A, "INVITE ").len(), 2, "relayed");
    sim.advance_to(Duration::from_millis(32_100)); // Timer B: 64 × T1
    let finals: Vec<String> = sim
        .find(CARRIER, "SIP/2.0 ")
        .into_iter()
        .map(|(_, m)| m)
        .filter(|m| m.contains("CSeq: 11 INVITE") && !m.starts_with("SIP/2.0 100"))
        .collect();
    // One final answer (retransmitted until the carrier's ACK, which this test never sends).
    assert!(!finals.is_empty(), "the carrier's re-INVITE is answered");
    assert!(finals.iter().all(|m| *m == finals[0]), "{finals:?}");
    assert!(
        finals[0].starts_with("SIP/2.0 500"),
        "never 408: {}",
        finals[0]
    );
    let inv = sim.last(AGENT_B, "INVITE ");
    assert_eq!(header(&inv, "X-Holdfast-Reroute-Trigger"), "reinvite");
    sim.recv(AGENT_B, answer(&inv, 200, "OK", "", Some(SDP_B2)));
    sim.advance_to(Duration::from_secs(40));
    assert!(sim.find(CARRIER, "BYE ").is_empty());
    assert_eq!(call(&sim).pinned.as_deref(), Some("agent-b"));
}

/// The latching rules of each leg follow its target: leg A the carrier's, leg B the
/// provider tried now — at the relay's open, at each answer, and again after a re-route.
#[test]
fn each_leg_latches_by_its_own_targets_rules_across_a_reroute() {
    use super::HF;
    use crate::media::relay::Latching;
    let yaml = format!(
        r#"
sip:
  listen: ["udp:{HF}"]
health:
  ping_interval: 1h
media:
  learning_window: 300ms
routing:
  attempt_timeout: 1s
  seed: 1
carriers:
  - {{ id: carrier, uri: "sip:{CARRIER}", region: us, ping: false, sources: ["{CARRIER}"], latching: any }}
ai_providers:
  - {{ id: agent-a, kind: sip, uri: "sip:agent@{AGENT_A}", region: us, priority: 1, ping: false, latching: any }}
  - {{ id: agent-b, kind: sip, uri: "sip:agent@{AGENT_B}", region: us, priority: 2, ping: false }}
routes:
  inbound: [ {{ regions: [us], ai: [agent-a, agent-b] }} ]
"#
    );
    let config = std::sync::Arc::new(crate::config::parse(&yaml, "test.yaml").unwrap());
    let mut sim = Sim::with_config(config);
    confirmed_call(&mut sim, "", "");
    let (a, b) = sim
        .media
        .iter()
        .find_map(|m| match m {
            MediaCommand::Open { config, .. } => Some((config.a.latch, config.b.latch)),
            _ => None,
        })
        .expect("a relay was opened");
    assert_eq!(a.latching, Latching::Any, "leg A: the carrier's latching");
    assert_eq!(a.learning_window, Duration::from_millis(300));
    assert_eq!(b.learning_window, Duration::from_millis(300));
    let b_latching = |ups: &[RelayUpdate]| -> Vec<Latching> {
        ups.iter()
            .filter_map(|u| match u {
                RelayUpdate::Relatch {
                    side: Side::B,
                    rtp: Some(_),
                    latch,
                    ..
                } => Some(latch.latching),
                _ => None,
            })
            .collect()
    };
    assert_eq!(
        b_latching(&updates_since(&sim, 0)),
        [Latching::Any],
        "leg B at agent-a's answer: agent-a's latching"
    );

    // agent-a is gone; agent-b (strict by default) takes over.
    sim.advance_to(Duration::from_secs(2));
    ai_gone(&mut sim);
    let inv = sim.last(AGENT_B, "INVITE ");
    let cmds = sim.media.len();
    sim.recv(AGENT_B, answer(&inv, 200, "OK", "", Some(SDP_B2)));
    assert_eq!(
        b_latching(&updates_since(&sim, cmds)),
        [Latching::Strict],
        "leg B at agent-b's answer: agent-b's latching"
    );
    assert!(
        !updates_since(&sim, cmds)
            .iter()
            .any(|u| matches!(u, RelayUpdate::Relatch { side: Side::A, .. })),
        "leg A keeps its latch and rules"
    );
}
