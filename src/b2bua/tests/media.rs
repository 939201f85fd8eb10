//! The core's anchored media on a virtual clock: what reaches each leg's SDP, which relay
//! commands go to the media shell, and that every way a call ends gives its ports back once
//! the shell confirms. Uses the `Sim` harness of `tests.rs`.
use super::{
    answer, confirmed_call, header, in_dialog_from_carrier, invite, metrics_text, new_call, Sim,
    AGENT_A, AGENT_B, CARRIER, HF, SDP_A, SDP_B,
};
use crate::b2bua::call::Side;
use crate::media::control::{MediaCommand, MediaEvent, RelayId, RelayPorts, RelayUpdate};
use crate::media::stats::StreamStats;
use std::time::Duration;

fn opens(sim: &Sim) -> Vec<(RelayId, RelayPorts)> {
    sim.media
        .iter()
        .filter_map(|m| match m {
            MediaCommand::Open { id, ports, .. } => Some((*id, *ports)),
            _ => None,
        })
        .collect()
}

fn closes(sim: &Sim) -> Vec<RelayId> {
    sim.media
        .iter()
        .filter_map(|m| match m {
            MediaCommand::Close { id } => Some(*id),
            _ => None,
        })
        .collect()
}

/// Plays the media shell: every `Close` seen so far is answered with `Closed` (once).
/// Returns how many.
fn shell_confirms_closes(sim: &mut Sim) -> usize {
    let ids = closes(sim);
    sim.media
        .retain(|m| !matches!(m, MediaCommand::Close { .. }));
    for id in &ids {
        let snap = StreamStats::new(8000, sim.now).snapshot();
        sim.core.handle_media_event(
            MediaEvent::Closed {
                id: *id,
                a_to_b: snap,
                b_to_a: snap,
            },
            sim.now,
        );
        sim.collect();
    }
    ids.len()
}

fn in_use(sim: &Sim) -> usize {
    sim.core.stats().media_ports_in_use
}

fn body(msg: &str) -> &str {
    msg.split_once("\r\n\r\n").map_or("", |(_, b)| b)
}

fn m_port(msg: &str) -> u16 {
    body(msg)
        .lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .and_then(|r| r.split(' ').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no m=audio in {msg}"))
}

fn sdp_line<'a>(msg: &'a str, prefix: &str) -> &'a str {
    body(msg)
        .lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix} in {msg}"))
}

fn relatches(sim: &Sim, side: Side) -> Vec<(Option<std::net::SocketAddr>, bool)> {
    sim.media
        .iter()
        .filter_map(|m| match m {
            MediaCommand::Update {
                update:
                    RelayUpdate::Relatch {
                        side: s,
                        rtp,
                        rtcp_mux,
                        ..
                    },
                ..
            } if *s == side => Some((*rtp, *rtcp_mux)),
            _ => None,
        })
        .collect()
}

/// An in-dialog request from the callee on the B leg of `b_invite`.
fn in_dialog_from_agent(b_invite: &str, method: &str, cseq: u32, branch: &str) -> String {
    format!(
        "{method} sip:hf@{HF} SIP/2.0\r\nVia: SIP/2.0/UDP {AGENT_A};branch={branch}\r\n\
         From: {};tag=uastag\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {cseq} {method}\r\n\
         Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
        header(b_invite, "To"),
        header(b_invite, "From"),
        header(b_invite, "Call-ID"),
    )
}

fn cancel_from_carrier() -> String {
    format!(
        "CANCEL sip:+15551230000@{HF} SIP/2.0\r\nVia: SIP/2.0/UDP {CARRIER};branch=z9hG4bKcarrier1;rport\r\n\
         From: \"Alice\" <sip:+15550001111@carrier.example>;tag=ctag\r\nTo: <sip:+15551230000@{HF}>\r\n\
         Call-ID: carrier-call-1@carrier.example\r\nCSeq: 10 CANCEL\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
}

fn invite_without_sdp() -> String {
    invite("").replace(
        &format!(
            "Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{SDP_A}",
            SDP_A.len()
        ),
        "Content-Length: 0\r\n\r\n",
    )
}

/// The carrier's BYE for the call `confirmed_call` set up, answered by the callee.
fn carrier_hangs_up(sim: &mut Sim) {
    let ok = sim.last(CARRIER, "SIP/2.0 200");
    sim.recv(
        CARRIER,
        in_dialog_from_carrier(&ok, "BYE", 11, "z9hG4bKbye1", "", None),
    );
    let b_bye = sim.last(AGENT_A, "BYE ");
    sim.recv(AGENT_A, answer(&b_bye, 200, "OK", "", None));
}

fn timeout(sim: &mut Sim, side: Side) {
    let id = opens(sim)[0].0;
    sim.core.handle_media_event(
        MediaEvent::Timeout {
            id,
            side,
            idle_for: Duration::from_secs(30),
        },
        sim.now,
    );
    sim.collect();
}

/// ICMP port unreachable from leg `side`'s media peer (SDP_B's address for the AI leg).
fn unreachable(sim: &mut Sim, side: Side) {
    let id = opens(sim)[0].0;
    sim.core.handle_media_event(
        MediaEvent::Unreachable {
            id,
            side,
            addr: "192.0.2.20:5000".parse().unwrap(),
        },
        sim.now,
    );
    sim.collect();
}

#[test]
fn an_exhausted_port_range_refuses_the_next_call_until_the_shell_confirms_closes() {
    // Four ports: one call's worth (a pair per leg).
    let mut sim = Sim::new("media: { ports: \"30000-30003\" }");
    assert_eq!(sim.core.stats().media_ports_capacity, 4);
    confirmed_call(&mut sim, "", "");
    assert_eq!(in_use(&sim), 4);
    let second = |n: u32| {
        invite("")
            .replace("carrier-call-1@", &format!("carrier-call-{n}@"))
            .replace("z9hG4bKcarrier1", &format!("z9hG4bKcarrier{n}"))
    };
    sim.recv(CARRIER, second(2));
    let r = sim.last(CARRIER, "SIP/2.0 503");
    assert!(
        r.contains("CSeq: 10 INVITE") && r.contains("carrier-call-2"),
        "{r}"
    );
    assert!(
        header(&r, "Reason").contains("media port"),
        "the Reason says why: {r}"
    );
    assert_eq!(sim.find(AGENT_A, "INVITE ").len(), 1, "never routed");
    assert_eq!(in_use(&sim), 4, "the refused call took nothing");

    carrier_hangs_up(&mut sim);
    assert_eq!(sim.core.stats().calls_active, 0);
    assert_eq!(closes(&sim).len(), 1);
    assert_eq!(
        in_use(&sim),
        4,
        "ports stay taken until the shell says the sockets are closed"
    );
    sim.recv(CARRIER, second(3));
    assert!(sim.last(CARRIER, "SIP/2.0 503").contains("carrier-call-3"));

    assert_eq!(shell_confirms_closes(&mut sim), 1);
    assert_eq!(in_use(&sim), 0);
    let inv = new_call(&mut sim, 4);
    assert!(inv.contains("m=audio 3000"), "{inv}");
    assert_eq!(in_use(&sim), 4);
}

/// Ends a call one way; the ports must all come back once the shell confirms.
fn ports_come_back(what: &str, extra_config: &str, end: impl FnOnce(&mut Sim)) {
    let mut sim = Sim::new(extra_config);
    end(&mut sim);
    assert!(!opens(&sim).is_empty(), "{what}: media was anchored");
    assert_eq!(sim.core.stats().calls_active, 0, "{what}: call over");
    assert!(in_use(&sim) > 0, "{what}: freed before the shell confirmed");
    let n = shell_confirms_closes(&mut sim);
    assert_eq!(n, opens(&sim).len(), "{what}: one Close per Open");
    assert_eq!(in_use(&sim), 0, "{what}: ports leaked");
}

#[test]
fn ports_come_back_on_every_way_a_call_ends() {
    ports_come_back("BYE from the caller", "", |sim| {
        confirmed_call(sim, "", "");
        carrier_hangs_up(sim);
    });
    ports_come_back("BYE from the callee", "", |sim| {
        let b_invite = confirmed_call(sim, "", "");
        sim.recv(
            AGENT_A,
            in_dialog_from_agent(&b_invite, "BYE", 2, "z9hG4bKagentbye"),
        );
        assert!(sim.last(AGENT_A, "SIP/2.0 200").contains("CSeq: 2 BYE"));
        let a_bye = sim.last(CARRIER, "BYE ");
        sim.recv(CARRIER, answer(&a_bye, 200, "OK", "", None));
    });
    ports_come_back("CANCEL while ringing", "", |sim| {
        sim.recv(CARRIER, invite(""));
        let b = sim.last(AGENT_A, "INVITE ");
        sim.recv(AGENT_A, answer(&b, 180, "Ringing", "", None));
        sim.recv(CARRIER, cancel_from_carrier());
        assert!(sim.last(CARRIER, "SIP/2.0 487").contains("CSeq: 10 INVITE"));
        assert_eq!(sim.find(AGENT_A, "CANCEL ").len(), 1);
    });
    ports_come_back("callee busy", "", |sim| {
        sim.recv(CARRIER, invite(""));
        let b = sim.last(AGENT_A, "INVITE ");
        sim.recv(AGENT_A, answer(&b, 486, "Busy Here", "", None));
        sim.last(CARRIER, "SIP/2.0 486");
    });
    ports_come_back("every candidate failing", "", |sim| {
        sim.recv(CARRIER, invite(""));
        let a = sim.last(AGENT_A, "INVITE ");
        sim.recv(AGENT_A, answer(&a, 503, "Service Unavailable", "", None));
        let b = sim.last(AGENT_B, "INVITE ");
        sim.recv(AGENT_B, answer(&b, 503, "Service Unavailable", "", None));
        sim.last(CARRIER, "SIP/2.0 503");
    });
    ports_come_back("ring timeout", "", |sim| {
        sim.recv(CARRIER, invite(""));
        let a = sim.last(AGENT_A, "INVITE ");
        sim.recv(AGENT_A, answer(&a, 180, "Ringing", "", None));
        sim.advance_to(Duration::from_secs(180));
        let b = sim.last(AGENT_B, "INVITE ");
        sim.recv(AGENT_B, answer(&b, 180, "Ringing", "", None));
        sim.advance_to(Duration::from_secs(361));
        let r = sim.last(CARRIER, "SIP/2.0 503");
        assert!(
            header(&r, "Reason").contains("all candidates failed"),
            "{r}"
        );
    });
    ports_come_back("session expiry", "", |sim| {
        confirmed_call(
            sim,
            "",
            "Session-Expires: 300;refresher=uas\r\nRequire: timer\r\n",
        );
        sim.advance_to(Duration::from_secs(400));
        assert!(!sim.find(AGENT_A, "BYE ").is_empty());
    });
    ports_come_back("silent carrier whose refresh gets 481", "", |sim| {
        confirmed_call(sim, "", "");
        timeout(sim, Side::A);
        let refresh = sim.last(CARRIER, "INVITE ");
        sim.recv(
            CARRIER,
            answer(&refresh, 481, "Call Does Not Exist", "", None),
        );
        for peer in [AGENT_A, CARRIER] {
            let bye = sim.last(peer, "BYE ");
            sim.recv(peer, answer(&bye, 200, "OK", "", None));
        }
    });
    ports_come_back("AI leg re-routed, then no provider left", "", |sim| {
        confirmed_call(sim, "", "");
        sim.advance_to(Duration::from_secs(2));
        unreachable(sim, Side::B);
        let bye = sim.last(AGENT_A, "BYE ");
        sim.recv(AGENT_A, answer(&bye, 200, "OK", "", None));
        let inv = sim.last(AGENT_B, "INVITE ");
        sim.recv(AGENT_B, answer(&inv, 200, "OK", "", Some(SDP_B)));
        sim.advance_to(Duration::from_secs(4));
        unreachable(sim, Side::B);
        let bye = sim.last(CARRIER, "BYE ");
        sim.recv(CARRIER, answer(&bye, 200, "OK", "", None));
    });
}

#[test]
fn early_media_reaches_the_caller_anchored_and_the_200_keeps_it() {
    let mut sim = Sim::new("");
    sim.recv(CARRIER, invite(""));
    let (_, ports) = opens(&sim)[0];
    let b = sim.last(AGENT_A, "INVITE ");
    assert_eq!(
        m_port(&b),
        ports.b.rtp,
        "the callee is offered its own leg's port"
    );
    sim.recv(
        AGENT_A,
        answer(&b, 183, "Session Progress", "", Some(SDP_B)),
    );
    let early = sim.last(CARRIER, "SIP/2.0 183");
    assert!(!early.contains("192.0.2.20"), "{early}");
    assert_eq!(sdp_line(&early, "c="), "c=IN IP4 127.0.0.1");
    assert_eq!(m_port(&early), ports.a.rtp);
    assert_eq!(
        relatches(&sim, Side::B),
        vec![(Some("192.0.2.20:5000".parse().unwrap()), false)]
    );
    sim.recv(AGENT_A, answer(&b, 200, "OK", "", Some(SDP_B)));
    let ok = sim.last(CARRIER, "SIP/2.0 200");
    assert_eq!(m_port(&ok), ports.a.rtp, "same port in the 183 and the 200");
    assert_eq!(
        sdp_line(&ok, "o="),
        sdp_line(&early, "o="),
        "same SDP, same o= version"
    );
    assert_eq!(opens(&sim).len(), 1, "nothing opened twice");
}

#[test]
fn late_offer_from_the_callee_is_anchored_and_the_ack_answer_too() {
    let mut sim = Sim::new("");
    sim.recv(CARRIER, invite_without_sdp());
    assert!(opens(&sim).is_empty(), "nothing to anchor yet");
    let b = sim.last(AGENT_A, "INVITE ");
    assert!(
        body(&b).is_empty(),
        "offerless INVITE relayed offerless: {b}"
    );
    sim.recv(AGENT_A, answer(&b, 200, "OK", "", Some(SDP_B)));
    let opened = opens(&sim);
    assert_eq!(opened.len(), 1);
    let ports = opened[0].1;
    let ok = sim.last(CARRIER, "SIP/2.0 200");
    assert!(!ok.contains("192.0.2.20"), "{ok}");
    assert_eq!(sdp_line(&ok, "c="), "c=IN IP4 127.0.0.1");
    assert_eq!(
        m_port(&ok),
        ports.a.rtp,
        "the callee's offer, with A's port"
    );
    // The caller answers in its ACK; the callee gets it anchored in its own ACK.
    let ack = super::ack_from_carrier(&ok).replace(
        "Content-Length: 0\r\n\r\n",
        &format!(
            "Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{SDP_A}",
            SDP_A.len()
        ),
    );
    sim.recv(CARRIER, ack);
    let b_ack = sim.last(AGENT_A, "ACK ");
    assert!(!b_ack.contains("192.0.2.10"), "{b_ack}");
    assert_eq!(sdp_line(&b_ack, "c="), "c=IN IP4 127.0.0.1");
    assert_eq!(m_port(&b_ack), ports.b.rtp);
    assert!(header(&b_ack, "Content-Type").contains("application/sdp"));
    assert_eq!(
        relatches(&sim, Side::A),
        vec![(Some("192.0.2.10:4000".parse().unwrap()), false)]
    );
    assert_eq!(super::enabled(&sim, Side::A), Some(true));
    assert_eq!(super::enabled(&sim, Side::B), Some(true));
}

#[test]
fn a_silent_carrier_is_checked_with_a_refresh_and_only_a_failed_one_ends_the_call() {
    let mut sim = Sim::new("");
    sim.recv(CARRIER, invite(""));
    let b = sim.last(AGENT_A, "INVITE ");
    sim.recv(AGENT_A, answer(&b, 180, "Ringing", "", None));
    let sent = sim.sent.len();
    timeout(&mut sim, Side::B);
    timeout(&mut sim, Side::A);
    assert_eq!(
        sim.sent.len(),
        sent,
        "nothing sent while ringing: {:#?}",
        &sim.sent[sent..]
    );
    assert_eq!(sim.core.stats().calls_active, 1);
    assert!(closes(&sim).is_empty());

    // A confirmed call's silent carrier is checked with a session refresh (a re-INVITE
    // with the SDP it already has: it does not allow UPDATE): silence alone ends nothing.
    let mut sim = Sim::new("");
    confirmed_call(&mut sim, "", "");
    let sent = sim.sent.len();
    timeout(&mut sim, Side::A);
    let refresh = sim.last(CARRIER, "INVITE ");
    assert_eq!(
        sim.sent.len(),
        sent + 1,
        "only the refresh: {:#?}",
        &sim.sent[sent..]
    );
    assert!(
        header(&refresh, "To").contains("tag="),
        "in the dialog: {refresh}"
    );
    // While the check runs, another silence report sends nothing more.
    timeout(&mut sim, Side::A);
    assert_eq!(sim.sent.len(), sent + 1);
    // The carrier is there: the call stays.
    sim.recv(CARRIER, answer(&refresh, 200, "OK", "", Some(super::SDP_A)));
    assert!(sim.find(CARRIER, "BYE ").is_empty());
    assert_eq!(sim.core.stats().calls_active, 1);
    // Silent again, and this time its dialog is gone: the call ends.
    timeout(&mut sim, Side::A);
    let refresh = sim.last(CARRIER, "INVITE ");
    sim.recv(
        CARRIER,
        answer(&refresh, 481, "Call Does Not Exist", "", None),
    );
    for peer in [AGENT_A, CARRIER] {
        let bye = sim.last(peer, "BYE ");
        let reason = header(&bye, "Reason");
        assert!(reason.contains("refresh answered 481"), "{peer}: {bye}");
    }
    assert_eq!(closes(&sim).len(), 0, "closed once the BYEs are answered");
    // A second timeout report while ending changes nothing.
    let sent = sim.sent.len();
    timeout(&mut sim, Side::B);
    assert_eq!(sim.sent.len(), sent);
}

/// Every port of an allocation.
fn all_ports(p: &RelayPorts) -> Vec<u16> {
    [Some(p.a.rtp), p.a.rtcp, Some(p.b.rtp), p.b.rtcp]
        .into_iter()
        .flatten()
        .collect()
}

fn quarantined(sim: &Sim) -> usize {
    sim.core.stats().media_ports_quarantined
}

#[test]
fn a_port_another_process_holds_moves_the_relay_before_any_sdp_names_it() {
    let mut sim = Sim::new("media: { ports: \"30000-30015\", port_quarantine: 30s }");
    // The first allocation would be A 30000/30001, B 30002/30003: someone else has 30002.
    sim.taken.insert(30_002);
    sim.recv(CARRIER, invite(""));
    let o = opens(&sim);
    assert_eq!(o.len(), 2, "one Open refused, one retried: {o:?}");
    assert_eq!(o[0].0, o[1].0, "the same relay, retried");
    assert!(all_ports(&o[0].1).contains(&30_002));
    let ports = o[1].1;
    assert!(!all_ports(&ports).contains(&30_002), "{ports:?}");
    // Nothing ever advertised the refused allocation.
    for (_, to, m) in &sim.sent {
        for p in all_ports(&o[0].1) {
            assert!(
                !m.contains(&format!("m=audio {p} ")),
                "{p} sent to {to}: {m}"
            );
        }
    }
    let b = sim.last(AGENT_A, "INVITE ");
    assert_eq!(m_port(&b), ports.b.rtp);
    assert!(
        sdp_line(&b, "o=").contains(" 1 IN IP4"),
        "the first SDP on the leg has the first version: {b}"
    );
    sim.recv(AGENT_A, answer(&b, 200, "OK", "", Some(SDP_B)));
    let ok = sim.last(CARRIER, "SIP/2.0 200");
    assert_eq!(
        m_port(&ok),
        ports.a.rtp,
        "the call connects on the new ports"
    );
    assert_eq!((in_use(&sim), quarantined(&sim)), (4, 1));
    let text = metrics_text(&sim);
    for line in [
        "holdfast_media_ports_quarantined 1",
        "holdfast_media_ports_quarantined_total 1",
        "holdfast_media_bind_failures_total{errno=\"EADDRINUSE\"} 1",
        "holdfast_media_ports_available 11",
        "holdfast_media_ports_exhausted_total 0",
    ] {
        assert!(text.contains(line), "no {line:?} in:\n{text}");
    }
    // The quarantine ends on the virtual clock: the port is in the range again.
    sim.advance_to(Duration::from_secs(29));
    assert_eq!(quarantined(&sim), 1);
    sim.advance_to(Duration::from_secs(31));
    assert_eq!(quarantined(&sim), 0);
    assert!(metrics_text(&sim).contains("holdfast_media_ports_available 12"));
    // Released by the other process, it is handed out again when the allocator gets there.
    sim.taken.clear();
    let mut got_it = false;
    for n in 2..=6 {
        new_call(&mut sim, n);
        let (_, p) = *opens(&sim).last().unwrap();
        got_it |= all_ports(&p).contains(&30_002);
        let inv = sim.last(AGENT_A, "INVITE ");
        sim.recv(AGENT_A, answer(&inv, 486, "Busy Here", "", None));
        shell_confirms_closes(&mut sim);
    }
    assert!(got_it, "30002 used again after its quarantine");
    assert_eq!(quarantined(&sim), 0);
}

#[test]
fn a_port_found_taken_again_at_its_retry_is_quarantined_again() {
    let mut sim = Sim::new("media: { ports: \"30000-30007\", port_quarantine: 10s }");
    sim.taken.insert(30_000);
    sim.recv(CARRIER, invite(""));
    assert_eq!(quarantined(&sim), 1);
    let inv = sim.last(AGENT_A, "INVITE ");
    sim.recv(AGENT_A, answer(&inv, 486, "Busy Here", "", None));
    shell_confirms_closes(&mut sim);
    sim.advance_to(Duration::from_secs(11));
    assert_eq!(quarantined(&sim), 0, "tried again");
    // Still held: the next call that reaches it quarantines it again and moves on.
    for n in 2..=3 {
        new_call(&mut sim, n);
        let inv = sim.last(AGENT_A, "INVITE ");
        assert!(!all_ports(&opens(&sim).last().unwrap().1).contains(&30_000));
        sim.recv(AGENT_A, answer(&inv, 486, "Busy Here", "", None));
        shell_confirms_closes(&mut sim);
    }
    assert_eq!(quarantined(&sim), 1);
    assert!(metrics_text(&sim).contains("holdfast_media_ports_quarantined_total 2"));
}

#[test]
fn no_port_left_once_the_taken_ones_are_out_answers_503() {
    // Eight ports, four pairs, two per call: with a port of three pairs taken, no call fits.
    let mut sim = Sim::new("media: { ports: \"30000-30007\" }");
    sim.taken.extend([30_001, 30_003, 30_005]);
    sim.recv(CARRIER, invite(""));
    let r = sim.last(CARRIER, "SIP/2.0 503");
    assert!(
        header(&r, "Reason").contains("media port range exhausted"),
        "{r}"
    );
    assert!(sim.find(AGENT_A, "INVITE ").is_empty(), "nothing routed");
    assert_eq!(opens(&sim).len(), 3, "tried until no pair was left");
    assert_eq!((in_use(&sim), quarantined(&sim)), (0, 3));
    assert!(metrics_text(&sim).contains("holdfast_media_ports_exhausted_total 1"));
    assert_eq!(sim.core.stats().calls_active, 0);
}

#[test]
fn out_of_descriptors_answers_503_with_the_reason_and_takes_no_port_out() {
    use crate::media::control::BindFailure;
    let mut sim = Sim::new("media: { ports: \"30000-30007\" }");
    sim.bind_error = Some(BindFailure::Emfile);
    sim.recv(CARRIER, invite(""));
    let r = sim.last(CARRIER, "SIP/2.0 503");
    assert!(r.contains("CSeq: 10 INVITE"), "{r}");
    assert!(
        header(&r, "Reason").contains("media setup failed: out of file descriptors (EMFILE)"),
        "{r}"
    );
    assert!(sim.find(AGENT_A, "INVITE ").is_empty(), "nothing routed");
    assert_eq!(opens(&sim).len(), 1, "not retried on other ports");
    assert_eq!((in_use(&sim), quarantined(&sim)), (0, 0), "every port back");
    assert_eq!(sim.core.stats().calls_active, 0);
    let text = metrics_text(&sim);
    assert!(
        text.contains("holdfast_media_bind_failures_total{errno=\"EMFILE\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("holdfast_media_ports_quarantined 0"),
        "{text}"
    );
    // Descriptors free again: the next call connects.
    sim.bind_error = None;
    let inv = new_call(&mut sim, 2);
    assert_eq!(m_port(&inv), opens(&sim)[1].1.b.rtp);
    assert_eq!((in_use(&sim), quarantined(&sim)), (4, 0));
}

#[test]
fn a_late_offer_in_the_2xx_waits_for_its_relay_and_moves_off_a_taken_port() {
    let mut sim = Sim::new("media: { ports: \"30000-30015\" }");
    sim.recv(CARRIER, invite_without_sdp());
    let b = sim.last(AGENT_A, "INVITE ");
    sim.taken.insert(30_000);
    sim.recv(AGENT_A, answer(&b, 200, "OK", "", Some(SDP_B)));
    let o = opens(&sim);
    assert_eq!(o.len(), 2, "{o:?}");
    let ports = o[1].1;
    let oks = sim.find(CARRIER, "SIP/2.0 200");
    assert_eq!(oks.len(), 1, "one 200, with the ports that bound");
    assert_eq!(m_port(&oks[0].1), ports.a.rtp);
    assert!(!all_ports(&ports).contains(&30_000));
    assert!(
        sdp_line(&oks[0].1, "o=").contains(" 1 IN IP4"),
        "{}",
        oks[0].1
    );
    // Out of descriptors instead: the callee is hung up, the caller gets 503 and why.
    let mut sim = Sim::new("media: { ports: \"30000-30015\" }");
    sim.recv(CARRIER, invite_without_sdp());
    let b = sim.last(AGENT_A, "INVITE ");
    sim.bind_error = Some(crate::media::control::BindFailure::Enfile);
    sim.recv(AGENT_A, answer(&b, 200, "OK", "", Some(SDP_B)));
    assert_eq!(sim.find(AGENT_A, "ACK ").len(), 1);
    assert_eq!(sim.find(AGENT_A, "BYE ").len(), 1);
    let r = sim.last(CARRIER, "SIP/2.0 503");
    assert!(
        header(&r, "Reason").contains("system file table full (ENFILE)"),
        "{r}"
    );
    assert_eq!((in_use(&sim), quarantined(&sim)), (0, 0));
}

#[test]
fn a_reoffer_adding_a_stream_is_relayed_only_once_its_relay_is_bound() {
    let mut sim = Sim::new("media: { ports: \"30000-30031\" }");
    confirmed_call(&mut sim, "", "");
    let ok = sim.last(CARRIER, "SIP/2.0 200");
    let first = opens(&sim);
    assert_eq!(first.len(), 1);
    let video = format!(
        "{}m=video 4002 RTP/AVP 96\r\na=rtpmap:96 VP8/90000\r\n",
        SDP_A.replace("o=a 1 1", "o=a 1 2")
    );
    // The next allocation (after 30000-30003) would start at 30004.
    sim.taken.insert(30_005);
    sim.recv(
        CARRIER,
        in_dialog_from_carrier(&ok, "INVITE", 11, "z9hG4bKvideo", "", Some(&video)),
    );
    let o = opens(&sim);
    assert_eq!(o.len(), 3, "the video relay, refused then retried: {o:?}");
    let video_ports = o[2].1;
    assert!(!all_ports(&video_ports).contains(&30_005));
    let reinv = sim.last(AGENT_A, "INVITE ");
    assert!(
        reinv.contains(&format!("m=video {} ", video_ports.b.rtp)),
        "{reinv}"
    );
    assert!(!reinv.contains("m=video 30006 "), "{reinv}");
    assert_eq!(quarantined(&sim), 1);
}

#[test]
fn a_reoffer_whose_relay_cannot_be_had_is_refused_and_the_call_stays() {
    use crate::media::control::BindFailure;
    let mut sim = Sim::new("");
    confirmed_call(&mut sim, "", "");
    let ok = sim.last(CARRIER, "SIP/2.0 200");
    let video = format!(
        "{}m=video 4002 RTP/AVP 96\r\na=rtpmap:96 VP8/90000\r\n",
        SDP_A.replace("o=a 1 1", "o=a 1 2")
    );
    let invites = sim.find(AGENT_A, "INVITE ").len();
    sim.bind_error = Some(BindFailure::Enobufs);
    sim.recv(
        CARRIER,
        in_dialog_from_carrier(&ok, "INVITE", 11, "z9hG4bKvideo", "", Some(&video)),
    );
    let r = sim.last(CARRIER, "SIP/2.0 503");
    assert!(r.contains("CSeq: 11 INVITE"), "{r}");
    assert!(
        header(&r, "Warning").contains("media setup failed: out of kernel buffer space (ENOBUFS)"),
        "{r}"
    );
    assert_eq!(
        sim.find(AGENT_A, "INVITE ").len(),
        invites,
        "nothing relayed"
    );
    assert!(sim.find(AGENT_A, "BYE ").is_empty(), "the call goes on");
    assert_eq!(sim.core.stats().calls_active, 1);
    assert_eq!(
        (in_use(&sim), quarantined(&sim)),
        (4, 0),
        "the audio relay only"
    );
}

#[test]
fn a_late_offer_in_a_provisional_whose_relay_cannot_be_had_is_relayed_without_it() {
    use crate::media::control::BindFailure;
    let mut sim = Sim::new("");
    sim.recv(CARRIER, invite_without_sdp());
    let b = sim.last(AGENT_A, "INVITE ");
    sim.bind_error = Some(BindFailure::Emfile);
    sim.recv(
        AGENT_A,
        answer(&b, 183, "Session Progress", "", Some(SDP_B)),
    );
    let p = sim.last(CARRIER, "SIP/2.0 183");
    assert!(body(&p).is_empty(), "no SDP without a relay: {p}");
    assert_eq!((in_use(&sim), quarantined(&sim)), (0, 0));
    // Descriptors back by the 2xx, which brings the offer again: the call connects.
    sim.bind_error = None;
    sim.recv(AGENT_A, answer(&b, 200, "OK", "", Some(SDP_B)));
    let ok = sim.last(CARRIER, "SIP/2.0 200");
    assert_eq!(m_port(&ok), opens(&sim).last().unwrap().1.a.rtp);
    assert_eq!(in_use(&sim), 4);
}

#[test]
fn failover_resets_the_callee_peer_and_offers_the_same_ports() {
    let mut sim = Sim::new("");
    sim.recv(CARRIER, invite(""));
    let first = sim.last(AGENT_A, "INVITE ");
    let opened = opens(&sim).len();
    sim.media.clear();
    sim.recv(
        AGENT_A,
        answer(&first, 503, "Service Unavailable", "", None),
    );
    let second = sim.last(AGENT_B, "INVITE ");
    assert_eq!(
        relatches(&sim, Side::B),
        vec![(None, false)],
        "the first callee's latched address is forgotten"
    );
    assert!(
        opens(&sim).is_empty() && opened == 1,
        "same relay, nothing reopened"
    );
    assert_eq!(body(&second), body(&first), "the same anchored offer");
    assert_eq!(in_use(&sim), 4);
}

#[test]
fn a_relay_its_worker_could_not_start_ends_the_call_and_gives_every_port_back() {
    use crate::media::control::BindFailure;
    let mut sim = Sim::new("");
    sim.recv(CARRIER, invite(""));
    let b = sim.last(AGENT_A, "INVITE ");
    sim.recv(AGENT_A, answer(&b, 180, "Ringing", "", None));
    let (id, ports) = opens(&sim)[0];
    // Bound, then the worker failed to add it to its loop (its sockets are closed).
    sim.core.handle_media_event(
        MediaEvent::OpenFailed {
            id,
            port: ports.a.rtp,
            failure: BindFailure::Enomem,
            error: format!(
                "epoll add 127.0.0.1:{}: Cannot allocate memory",
                ports.a.rtp
            ),
        },
        sim.now,
    );
    sim.collect();
    let r = sim.last(CARRIER, "SIP/2.0 503");
    assert!(
        header(&r, "Reason").contains("media setup failed: out of kernel memory (ENOMEM)"),
        "{r}"
    );
    assert_eq!(
        sim.find(AGENT_A, "CANCEL ").len(),
        1,
        "the callee is cancelled"
    );
    assert!(
        closes(&sim).iter().all(|c| *c != id),
        "nothing to close: {:?}",
        closes(&sim)
    );
    assert_eq!((in_use(&sim), quarantined(&sim)), (0, 0));
}

#[test]
fn a_relay_failure_reported_after_the_call_ended_frees_its_ports_once() {
    use crate::media::control::BindFailure;
    let mut sim = Sim::new("");
    sim.recv(CARRIER, invite(""));
    let b = sim.last(AGENT_A, "INVITE ");
    sim.recv(AGENT_A, answer(&b, 180, "Ringing", "", None));
    sim.recv(CARRIER, cancel_from_carrier());
    assert_eq!(sim.core.stats().calls_active, 0);
    let (id, ports) = opens(&sim)[0];
    assert_eq!(closes(&sim), vec![id]);
    // The worker got Open and Close in order: Open failed there, so the Close finds
    // nothing; it reports OpenFailed and then Closed for the same relay.
    sim.core.handle_media_event(
        MediaEvent::OpenFailed {
            id,
            port: ports.b.rtcp.unwrap(),
            failure: BindFailure::Other,
            error: "raw filter map: No space left on device".into(),
        },
        sim.now,
    );
    sim.collect();
    assert_eq!(in_use(&sim), 0, "everything is back");
    assert_eq!(shell_confirms_closes(&mut sim), 1);
    assert_eq!(in_use(&sim), 0, "a late Closed frees nothing twice");
    assert_eq!(quarantined(&sim), 0);
}
