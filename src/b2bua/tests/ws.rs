//! WebSocket AI legs on the virtual clock: the core opens bridge legs, answers the caller
//! once the shell reports the leg up, fails over on setup failures, re-routes on a dropped
//! socket without the carrier seeing anything, and hangs up when the bot closes normally.
use super::{
    ack_from_carrier, answer, call, header, in_dialog_from_carrier, invite, to_carrier, Sim,
    AGENT_A, CARRIER, HF, SDP_B,
};
use super::{CallState, RerouteTrigger};
use crate::ai::control::{AiCommand, AiEvent, OpenLeg, Speaker, TranscriptItem};
use crate::b2bua::call::Side;
use crate::media::codec::G711;
use crate::media::control::{MediaCommand, RelayUpdate};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

const BOT_A: &str = "127.0.0.1:7001";
const BOT_B: &str = "127.0.0.1:7002";

pub(super) fn config(extra: &str) -> Arc<crate::config::Config> {
    let yaml = format!(
        r#"
sip:
  listen: ["udp:{HF}"]
health:
  ping_interval: 1h
{extra}
routing:
  attempt_timeout: 1s
  seed: 1
carriers:
  - {{ id: carrier, uri: "sip:{CARRIER}", region: us, ping: false, sources: ["{CARRIER}"] }}
ai_providers:
  - {{ id: bot-a, kind: media-stream, url: "ws://{BOT_A}/a", region: us, priority: 1, ping: false,
       custom_parameters: {{ tenant: acme }} }}
  - {{ id: bot-b, kind: media-stream, url: "ws://{BOT_B}/b", region: us, priority: 2, ping: false }}
  - {{ id: agent-sip, kind: sip, uri: "sip:agent@{AGENT_A}", region: us, priority: 3, ping: false }}
routes:
  inbound: [ {{ regions: [us], ai: [bot-a, bot-b, agent-sip] }} ]
"#
    );
    Arc::new(crate::config::parse(&yaml, "test.yaml").expect("valid test config"))
}

fn opens(sim: &Sim) -> Vec<OpenLeg> {
    sim.ai
        .iter()
        .filter_map(|c| match c {
            AiCommand::Open(o) => Some((**o).clone()),
            _ => None,
        })
        .collect()
}

pub(super) fn last_open(sim: &Sim) -> OpenLeg {
    opens(sim).pop().expect("an Open command")
}

fn closes(sim: &Sim) -> Vec<u64> {
    sim.ai
        .iter()
        .filter_map(|c| match c {
            AiCommand::Close { leg, .. } => Some(*leg),
            _ => None,
        })
        .collect()
}

fn event(sim: &mut Sim, ev: AiEvent) {
    sim.core.handle_ai_event(ev, sim.now);
    sim.collect();
}

fn bridge(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A confirmed call on bot-a; returns the carrier's 200 OK.
pub(super) fn confirmed(sim: &mut Sim) -> String {
    sim.recv(CARRIER, invite(""));
    let open = last_open(sim);
    event(
        sim,
        AiEvent::Up {
            leg: open.leg,
            media: bridge(40000),
        },
    );
    let ok = sim.last(CARRIER, "SIP/2.0 200");
    sim.recv(CARRIER, ack_from_carrier(&ok));
    assert_eq!(call(sim).state, CallState::Confirmed);
    ok
}

#[test]
fn a_websocket_leg_is_bridged_and_the_caller_answered_once_it_is_up() {
    let mut sim = Sim::with_config(config(""));
    sim.recv(CARRIER, invite(""));
    assert!(
        sim.find(AGENT_A, "INVITE ").is_empty(),
        "no SIP toward a WebSocket provider"
    );
    let open = last_open(&sim);
    assert_eq!(open.provider, "bot-a");
    assert_eq!(open.dest, BOT_A.parse::<SocketAddr>().unwrap());
    assert_eq!(open.ws.url, format!("ws://{BOT_A}/a"));
    assert_eq!(
        open.ws.custom_parameters,
        vec![("tenant".to_string(), "acme".to_string())]
    );
    assert_eq!((open.law, open.payload_type), (G711::Ulaw, 0));
    assert!(open.relay.ip().is_loopback(), "{}", open.relay);
    assert_eq!(open.caller, "+15550001111");
    assert_eq!(open.callee, "+15551230000");
    assert!(open.reroute.is_none());
    assert!(
        sim.find(CARRIER, "SIP/2.0 200").is_empty(),
        "no answer before the leg is up"
    );

    event(
        &mut sim,
        AiEvent::Up {
            leg: open.leg,
            media: bridge(40000),
        },
    );
    let ok = sim.last(CARRIER, "SIP/2.0 200");
    assert!(ok.contains("m=audio "), "{ok}");
    assert!(ok.contains("RTP/AVP 0"), "{ok}");
    let relatched = sim.media.iter().any(|m| {
        matches!(m, MediaCommand::Update { update: RelayUpdate::Relatch { side: Side::B, rtp: Some(a), .. }, .. } if *a == bridge(40000))
    });
    assert!(relatched, "the relay's AI side points at the bridge");
    sim.recv(CARRIER, ack_from_carrier(&ok));
    let c = call(&sim);
    assert_eq!(c.state, CallState::Confirmed);
    assert_eq!(c.pinned.as_deref(), Some("bot-a"));
    assert_eq!(c.ws.as_ref().and_then(|w| w.media), Some(bridge(40000)));

    // The caller hangs up: the leg is closed.
    let bye = in_dialog_from_carrier(&ok, "BYE", 11, "z9hG4bKbye", "", None);
    sim.recv(CARRIER, bye);
    assert!(sim.last(CARRIER, "SIP/2.0 200").contains("CSeq: 11 BYE"));
    assert_eq!(closes(&sim), vec![open.leg]);
    assert_eq!(sim.core.stats().calls_active, 0);
}

#[test]
fn setup_failures_fail_over_to_the_next_provider_even_a_sip_one() {
    let mut sim = Sim::with_config(config(""));
    sim.recv(CARRIER, invite(""));
    let a = last_open(&sim);
    event(
        &mut sim,
        AiEvent::Failed {
            leg: a.leg,
            status: Some(503),
            why: "handshake refused".into(),
        },
    );
    let b = last_open(&sim);
    assert_eq!(b.provider, "bot-b");
    // bot-b never finishes its handshake: after its setup timeout the SIP agent is tried.
    sim.advance_to(Duration::from_millis(3100));
    assert!(closes(&sim).contains(&b.leg), "the stuck leg is closed");
    let inv = sim.last(AGENT_A, "INVITE ");
    sim.recv(AGENT_A, answer(&inv, 200, "OK", "", Some(SDP_B)));
    assert!(sim.last(CARRIER, "SIP/2.0 200").contains("m=audio"));
    let c = call(&sim);
    assert_eq!(c.pinned.as_deref(), Some("agent-sip"));
    assert!(c.ws.is_none());
    let outcomes: Vec<_> = c
        .attempts
        .iter()
        .map(|a| a.outcome.clone().unwrap_or_default())
        .collect();
    assert!(outcomes[0].contains("HTTP 503"), "{outcomes:?}");
    assert!(outcomes[1].contains("timeout"), "{outcomes:?}");
    // A late Up from the abandoned leg changes nothing.
    let sent = sim.sent.len();
    event(
        &mut sim,
        AiEvent::Up {
            leg: b.leg,
            media: bridge(40001),
        },
    );
    assert_eq!(sim.sent.len(), sent);
}

#[test]
fn a_dropped_socket_reroutes_and_the_carrier_sees_nothing() {
    let mut sim = Sim::with_config(config(""));
    confirmed(&mut sim);
    let a = last_open(&sim);
    event(
        &mut sim,
        AiEvent::Transcript {
            leg: a.leg,
            item: TranscriptItem {
                speaker: Speaker::Caller,
                text: "I need to move my appointment".into(),
            },
        },
    );
    let carrier_msgs = to_carrier(&sim);
    let cmds = sim.media.len();
    sim.advance_to(Duration::from_secs(5));
    event(
        &mut sim,
        AiEvent::Closed {
            leg: a.leg,
            failure: true,
            why: "connection reset".into(),
        },
    );
    assert_eq!(call(&sim).state, CallState::Rerouting);
    let b = last_open(&sim);
    assert_eq!(b.provider, "bot-b");
    let ctx = b.reroute.clone().expect("re-route context");
    assert_eq!(
        (ctx.count, ctx.from.as_str(), ctx.trigger.as_str()),
        (1, "bot-a", "websocket")
    );
    assert_eq!(b.transcript.len(), 1, "the conversation so far goes along");
    assert_eq!(b.relay, a.relay, "same relay port");
    assert!(sim.media[cmds..].iter().any(|m| matches!(
        m,
        MediaCommand::Update {
            update: RelayUpdate::Mute {
                from: Side::B,
                muted: true
            },
            ..
        }
    )));

    event(
        &mut sim,
        AiEvent::Up {
            leg: b.leg,
            media: bridge(40002),
        },
    );
    let c = call(&sim);
    assert_eq!(c.state, CallState::Confirmed);
    assert_eq!(c.pinned.as_deref(), Some("bot-b"));
    assert_eq!(c.reroutes.len(), 1);
    assert_eq!(c.reroutes[0].trigger, RerouteTrigger::Websocket);
    assert_eq!(c.reroutes[0].to.as_deref(), Some("bot-b"));
    assert!(sim.media[cmds..].iter().any(|m| matches!(
        m,
        MediaCommand::Update {
            update: RelayUpdate::SourceSwitch { side: Side::B },
            ..
        }
    )));
    assert_eq!(
        to_carrier(&sim),
        carrier_msgs,
        "no BYE, no re-INVITE, nothing to the carrier"
    );
}

#[test]
fn a_bot_that_closes_normally_hangs_up_the_call() {
    let mut sim = Sim::with_config(config(""));
    confirmed(&mut sim);
    let a = last_open(&sim);
    event(
        &mut sim,
        AiEvent::Closed {
            leg: a.leg,
            failure: false,
            why: "websocket closed 1000".into(),
        },
    );
    let bye = sim.last(CARRIER, "BYE ");
    assert!(header(&bye, "Reason").contains("hung up"), "{bye}");
    assert_eq!(opens(&sim).len(), 1, "no re-route");
}

#[test]
fn carrier_info_digits_reach_the_bot_and_renegotiation_is_refused() {
    let mut sim = Sim::with_config(config(""));
    let ok = confirmed(&mut sim);
    let leg = last_open(&sim).leg;
    let info = in_dialog_from_carrier(&ok, "INFO", 11, "z9hG4bKinfo", "", None).replace(
        "Content-Length: 0\r\n\r\n",
        "Content-Type: application/dtmf-relay\r\nContent-Length: 24\r\n\r\nSignal=7\r\nDuration=160\r\n",
    );
    sim.recv(CARRIER, info);
    assert!(sim.last(CARRIER, "SIP/2.0 200").contains("CSeq: 11 INFO"));
    assert!(sim.ai.contains(&AiCommand::Dtmf { leg, digit: '7' }));
    // A re-offer of another codec cannot be followed by the bridge: 488, call unchanged.
    let g722 = "v=0\r\no=a 1 2 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\nm=audio 4000 RTP/AVP 9\r\n";
    let reinvite = in_dialog_from_carrier(&ok, "INVITE", 12, "z9hG4bKre", "", Some(g722));
    sim.recv(CARRIER, reinvite);
    assert!(sim.last(CARRIER, "SIP/2.0 ").starts_with("SIP/2.0 488"));
    assert_eq!(call(&sim).state, CallState::Confirmed);
    // A session refresh (same SDP) is answered locally as for a SIP agent.
    let same = in_dialog_from_carrier(&ok, "UPDATE", 13, "z9hG4bKupd", "", None);
    sim.recv(CARRIER, same);
    assert!(sim.last(CARRIER, "SIP/2.0 ").starts_with("SIP/2.0 200"));
}

#[test]
fn two_handshake_failures_open_the_breaker() {
    let mut sim = Sim::with_config(config(""));
    for n in 1..=2u32 {
        let inv = invite("")
            .replace("carrier-call-1@", &format!("carrier-call-{n}@"))
            .replace("z9hG4bKcarrier1", &format!("z9hG4bKcarrier{n}"));
        sim.recv(CARRIER, inv);
        let a = last_open(&sim);
        assert_eq!(a.provider, "bot-a", "call {n} tries bot-a first");
        event(
            &mut sim,
            AiEvent::Failed {
                leg: a.leg,
                status: None,
                why: "connection refused".into(),
            },
        );
        assert_eq!(last_open(&sim).provider, "bot-b");
    }
    let inv = invite("")
        .replace("carrier-call-1@", "carrier-call-3@")
        .replace("z9hG4bKcarrier1", "z9hG4bKcarrier3");
    sim.recv(CARRIER, inv);
    assert_eq!(
        last_open(&sim).provider,
        "bot-b",
        "the breaker keeps bot-a out"
    );
}

#[test]
fn handshake_probes_take_a_provider_down() {
    let cfg = config("").as_ref().clone();
    let mut cfg = cfg;
    cfg.health.ping_interval = Duration::from_secs(5);
    for p in &mut cfg.ai_providers {
        p.ping = p.ws.is_some();
    }
    let mut sim = Sim::with_config(Arc::new(cfg));
    sim.collect();
    for round in 0..6u64 {
        let probes: Vec<(u64, String)> = sim
            .ai
            .drain(..)
            .filter_map(|c| match c {
                AiCommand::Probe {
                    probe, provider, ..
                } => Some((probe, provider)),
                _ => None,
            })
            .collect();
        assert!(!probes.is_empty(), "round {round} probes both bots");
        for (probe, provider) in probes {
            let status = if provider == "bot-a" { 503 } else { 200 };
            event(
                &mut sim,
                AiEvent::Probe {
                    probe,
                    status,
                    rtt: Some(Duration::from_millis(3)),
                    why: String::new(),
                },
            );
        }
        sim.advance_to(Duration::from_secs(6 + round * 5));
    }
    sim.ai.clear();
    sim.recv(CARRIER, invite(""));
    assert_eq!(last_open(&sim).provider, "bot-b", "bot-a is down");
}

/// A confirmed bot-a call whose bot-b and agent-sip alternatives are both unusable, so the
/// re-route after bot-a drops finds no provider.
fn drop_with_no_provider_left(sim: &mut Sim) {
    confirmed(sim);
    let a = last_open(sim);
    sim.advance_to(Duration::from_secs(5));
    event(
        sim,
        AiEvent::Closed {
            leg: a.leg,
            failure: true,
            why: "connection reset".into(),
        },
    );
    let b = last_open(sim);
    assert_eq!(b.provider, "bot-b");
    event(
        sim,
        AiEvent::Failed {
            leg: b.leg,
            status: None,
            why: "connection refused".into(),
        },
    );
    let inv = sim.last(AGENT_A, "INVITE ");
    sim.recv(AGENT_A, answer(&inv, 503, "Service Unavailable", "", None));
}

fn fills(sim: &Sim) -> Vec<Option<crate::media::filler::GapAudio>> {
    sim.media
        .iter()
        .filter_map(|m| match m {
            MediaCommand::Update {
                update:
                    RelayUpdate::Fill {
                        toward: Side::A,
                        audio,
                        ..
                    },
                ..
            } => Some(*audio),
            _ => None,
        })
        .collect()
}

#[test]
fn comfort_noise_fills_the_gap_by_default() {
    let mut sim = Sim::with_config(config(""));
    confirmed(&mut sim);
    assert!(fills(&sim).is_empty());
    let a = last_open(&sim);
    event(
        &mut sim,
        AiEvent::Closed {
            leg: a.leg,
            failure: true,
            why: "reset".into(),
        },
    );
    assert_eq!(
        fills(&sim),
        vec![Some(crate::media::filler::GapAudio::ComfortNoise)]
    );
}

#[test]
fn no_provider_left_plays_the_prompt_then_hangs_up() {
    use crate::media::filler::{AfterPrompt, GapAudio};
    let mut cfg = config("").as_ref().clone();
    let prompt = GapAudio::prompt(vec![1000; 16000], AfterPrompt::Silence); // 2 s
    cfg.ai.no_provider = crate::config::NoProvider::Prompt(prompt);
    let mut sim = Sim::with_config(Arc::new(cfg));
    drop_with_no_provider_left(&mut sim);
    assert_eq!(fills(&sim).last(), Some(&Some(prompt)));
    assert!(
        sim.find(CARRIER, "BYE ").is_empty(),
        "the prompt plays first"
    );
    sim.advance_to(Duration::from_millis(5000 + 2000 + 200));
    assert!(sim.find(CARRIER, "BYE ").is_empty());
    sim.advance_to(Duration::from_millis(5000 + 2000 + 400));
    let bye = sim.last(CARRIER, "BYE ");
    assert!(header(&bye, "Reason").contains("agent-sip 503"), "{bye}");
}

#[test]
fn no_provider_left_transfers_to_the_fallback_number_through_a_carrier_in_region() {
    let outbound = "  outbound: [ { regions: [us], carriers: [carrier] } ]";
    let cfg = crate::config::parse(
        &format!(
            r#"
sip:
  listen: ["udp:{HF}"]
health:
  ping_interval: 1h
routing:
  attempt_timeout: 1s
  seed: 1
carriers:
  - {{ id: carrier, uri: "sip:{CARRIER}", region: us, ping: false, sources: ["{CARRIER}"] }}
ai_providers:
  - {{ id: bot-a, kind: media-stream, url: "ws://{BOT_A}/a", region: us, priority: 1, ping: false }}
  - {{ id: bot-b, kind: media-stream, url: "ws://{BOT_B}/b", region: us, priority: 2, ping: false }}
  - {{ id: agent-sip, kind: sip, uri: "sip:agent@{AGENT_A}", region: us, priority: 3, ping: false }}
routes:
  inbound: [ {{ regions: [us], ai: [bot-a, bot-b, agent-sip] }} ]
{outbound}
ai:
  no_provider: {{ action: transfer, transfer_to: "+15559990000" }}
  webhook: {{ url: "http://127.0.0.1:9/hook" }}
"#
        ),
        "t.yaml",
    )
    .expect("valid");
    let mut sim = Sim::with_config(Arc::new(cfg));
    drop_with_no_provider_left(&mut sim);
    let carrier_before = sim.find(CARRIER, "INVITE ");
    assert_eq!(carrier_before.len(), 1, "the transfer goes to the carrier");
    let inv = &carrier_before[0].1;
    assert!(inv.starts_with("INVITE sip:+15559990000@"), "{inv}");
    assert!(sim.find(CARRIER, "BYE ").is_empty());
    sim.recv(CARRIER, answer(inv, 200, "OK", "", Some(SDP_B)));
    let c = call(&sim);
    assert_eq!(c.state, CallState::Confirmed);
    assert_eq!(c.transfer_to.as_deref(), Some("+15559990000"));
    assert!(c.reroutes[0]
        .outcome
        .as_deref()
        .unwrap_or("")
        .contains("transferred to +15559990000"));
    // The transferred leg faces a person: its silence is no AI failure to re-route.
    assert!(!c.is_ai_leg(super::Side::B));
    let hooks: Vec<_> = std::iter::from_fn(|| sim.poll_webhook()).collect();
    assert_eq!(hooks.len(), 1, "one event per re-route: {hooks:?}");
    assert_eq!(hooks[0]["event"], "call.ai_rerouted");
    assert_eq!(hooks[0]["transferred_to"], "+15559990000");
    assert_eq!(hooks[0]["from"], "bot-a");
    assert_eq!(hooks[0]["to"], "carrier");
}

#[test]
fn a_provider_removed_by_a_reload_during_setup_still_times_out_as_a_setup_failure() {
    let mut sim = Sim::with_config(config(""));
    sim.recv(CARRIER, invite(""));
    let a = last_open(&sim);
    let mut cfg = config("").as_ref().clone();
    cfg.ai_providers.retain(|p| &*p.id != "bot-a");
    cfg.routes.inbound[0].targets.retain(|t| &**t != "bot-a");
    sim.core.handle_reload(Arc::new(cfg), sim.now);
    sim.collect();
    // The timer armed with the provider's setup_timeout (3 s) fires as a setup failure.
    sim.advance_to(Duration::from_millis(3100));
    assert!(closes(&sim).contains(&a.leg), "the stuck leg is closed");
    let c = call(&sim);
    let outcome = c.attempts[0].outcome.clone().unwrap_or_default();
    assert!(outcome.contains("not set up"), "{outcome}");
    assert_eq!(last_open(&sim).provider, "bot-b");
}
