//! Anchored media end to end: SIPp signals (and, in one test, plays real RTP from a pcap),
//! test-owned UDP sockets stand in for the callers' and agents' media, holdfast relays in
//! the middle. Everything runs over 127.0.0.1 with fresh ports per test; every wait has a
//! deadline, and the call's lifetime is driven by the test (it pokes SIPp to hang up).
mod common;

use common::scenarios as sc;
use common::*;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(30);
/// SIPp's bundled G.711 A-law recording: 236 RTP packets, one SSRC, consecutive sequence
/// numbers.
const PCAP: &str = "/usr/share/sip-tester/g711a.pcap";
const PCAP_PACKETS: usize = 236;

/// SIPp flags for the scenario log (`<log>` → `*_logs.log`) and the message trace.
const TRACE: &[&str] = &["-trace_logs", "-trace_msg"];

/// An inbound call setup: carrier trunk (SIPp UAC on `trunk`) → holdfast on `hp` → AI agent
/// (SIPp UAS on `agent`), with `media` as the `media:` section's body.
fn inbound(hp: u16, trunk: u16, agent: u16, media: String) -> TestConfig {
    let mut c = TestConfig::new(hp);
    c.carriers.push(format!(
        "{{ id: carrier-a, uri: \"sip:127.0.0.1:9\", region: us, ping: false, sources: [\"127.0.0.1:{trunk}\"] }}"
    ));
    c.providers.push(format!(
        "{{ id: agent-a, kind: sip, uri: \"sip:agent@127.0.0.1:{agent}\", region: us, ping: false }}"
    ));
    c.inbound.push("{ regions: [us], ai: [agent-a] }".into());
    c.media = media;
    c
}

/// A `media:` body with its own port range and timeouts long enough that no test but the
/// timeout one ever meets them.
fn media_section(ports: &str) -> String {
    format!("ports: \"{ports}\"\n  timeout: 60s\n  ai_timeout: 60s")
}

fn port_range(ports: &str) -> std::ops::RangeInclusive<u16> {
    let (lo, hi) = ports.split_once('-').unwrap();
    lo.parse().unwrap()..=hi.parse().unwrap()
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn parse_port(v: &str, what: &str) -> u16 {
    v.trim()
        .parse()
        .unwrap_or_else(|_| panic!("{what}: not a port: {v:?}"))
}

/// The "media closed" line of the call's only stream, once it is there.
fn media_closed(hf: &Holdfast) -> LogLine {
    hf.wait_log(WAIT, |l| msg(l) == "media closed")
        .unwrap_or_else(|| panic!("no \"media closed\"; logs:\n{}", hf.dump_logs()))
        .1
}

fn n(l: &LogLine, name: &str) -> i64 {
    num(l, name).unwrap_or_else(|| panic!("\"media closed\" has no {name}: {l}"))
}

/// The `m=audio` port of the first SDP in a SIPp message trace (a UAC's own INVITE).
fn first_m_port(messages: &str) -> u16 {
    let line = messages
        .lines()
        .find_map(|l| l.trim().strip_prefix("m=audio "))
        .unwrap_or_else(|| panic!("no m=audio line in:\n{messages}"));
    parse_port(line.split_whitespace().next().unwrap_or(""), "m=audio")
}

/// Real SIPp RTP (play_pcap_audio of g711a.pcap) from the carrier through holdfast to an
/// echo on the agent side and back: every packet arrives once, from holdfast's B port only,
/// as one stream (one SSRC, sequence +1), and holdfast's counters agree.
#[test]
fn rtp_both_ways_through_a_sipp_call() {
    let (hp, trunk, agent) = (free_port(), free_port(), free_port());
    let ports = media_ports(8);
    let c = inbound(hp, trunk, agent, media_section(&ports));
    let echo = RtpEndpoint::echo();
    let uas = Sipp::uas_with(
        "agent",
        &sc::uas_media_answer(echo.port),
        agent,
        Some(1),
        TRACE,
    );
    let hf = Holdfast::start(&c.yaml(), hp);
    let started = Instant::now();
    let uac = Sipp::uac(
        "trunk",
        &sc::uac_play_pcap(PCAP),
        trunk,
        &format!("127.0.0.1:{hp}"),
        "+15551230000",
        1,
        TRACE,
    );
    let call_id = uac.expect_value("ANSWER_CALLID", WAIT);
    let a_port = parse_port(&uac.expect_value("ANSWER_PORT", WAIT), "A port");
    assert_eq!(uac.expect_value("ANSWER_ADDR", WAIT), "127.0.0.1");
    let got = echo.wait_count(PCAP_PACKETS, WAIT);
    assert_eq!(got, PCAP_PACKETS, "packets at the echo");
    // The echo answers each packet at once; holdfast's counters below must match it.
    uac.poke(&call_id);
    let r = uac.wait(WAIT);
    assert!(r.success(), "caller failed: {}\n{}", r.output, r.errors);
    let caller_media = first_m_port(&r.messages);
    let a = uas.wait(WAIT);
    assert!(a.success(), "agent failed: {}\n{}", a.output, a.errors);

    let seen = echo.seen();
    assert_eq!(seen.len(), PCAP_PACKETS, "no packet after the hangup");
    let (src, _ssrc) = assert_one_stream("carrier → agent", &seen);
    assert!(
        port_range(&ports).contains(&src.port()),
        "echo saw packets from {src}, not from holdfast's range {ports}"
    );
    assert_ne!(src.port(), a_port, "B leg must have its own port");
    assert_ne!(
        src.port(),
        caller_media,
        "the callee sees the caller's media port"
    );
    assert!(seen.iter().all(|p| p.pt == 8 && p.len == 12 + 240));

    // The offer the agent got points at holdfast, at the port the packets came from.
    let offer_port = parse_port(&a_value(&a.scenario_log, "OFFER_PORT"), "offer port");
    assert_eq!(a_value(&a.scenario_log, "OFFER_ADDR"), "127.0.0.1");
    assert_eq!(offer_port, src.port());
    assert_ne!(offer_port, caller_media);

    // Both legs latched onto the addresses their SDP announced (no NAT on loopback).
    for (leg, port) in [("A", caller_media), ("B", echo.port)] {
        let want = local(port).to_string();
        assert!(
            hf.find_log(|l| msg(l) == "media latched"
                && field(l, "leg") == leg
                && field(l, "addr") == want)
                .is_some(),
            "leg {leg} did not latch onto {want}"
        );
    }
    assert_eq!(hf.count_logs(|l| msg(l).contains("(NAT)")), 0);

    let closed = media_closed(&hf);
    assert_eq!(n(&closed, "a_packets"), PCAP_PACKETS as i64, "{closed}");
    assert_eq!(n(&closed, "a_forwarded"), PCAP_PACKETS as i64, "{closed}");
    assert_eq!(n(&closed, "b_packets"), echo.echoed() as i64, "{closed}");
    assert_eq!(n(&closed, "b_forwarded"), echo.echoed() as i64, "{closed}");
    assert_eq!(n(&closed, "a_wrong_source"), 0, "{closed}");
    assert_eq!(n(&closed, "b_wrong_source"), 0, "{closed}");
    assert_eq!(n(&closed, "a_lost"), 0, "{closed}");
    assert_eq!(n(&closed, "ports_in_use"), 0, "{closed}");
    eprintln!("rtp_both_ways: {:?}", started.elapsed());
}

fn a_value(log: &str, key: &str) -> String {
    let prefix = format!("{key}=");
    log.lines()
        .find_map(|l| l.trim().strip_prefix(&prefix).map(str::to_string))
        .unwrap_or_else(|| panic!("{key} not logged:\n{log}"))
}

/// A call for the test's own sockets: carrier media at `x`, agent media at `y`. Returns the
/// SIPp pair (both tracing), holdfast, the call's Call-ID on the carrier side, and
/// holdfast's A-leg address (from the 200 OK the carrier got).
struct MediaCall {
    hf: Holdfast,
    uac: Sipp,
    uas: Sipp,
    call_id: String,
    a_addr: SocketAddr,
    offer_port: u16,
}

fn media_call(media: String, uac_scenario: &str, uas_scenario: &str) -> MediaCall {
    let (hp, trunk, agent) = (free_port(), free_port(), free_port());
    let c = inbound(hp, trunk, agent, media);
    let uas = Sipp::uas_with("agent", uas_scenario, agent, Some(1), TRACE);
    let hf = Holdfast::start(&c.yaml(), hp);
    let uac = Sipp::uac(
        "trunk",
        uac_scenario,
        trunk,
        &format!("127.0.0.1:{hp}"),
        "+15551230000",
        1,
        TRACE,
    );
    let call_id = uac.expect_value("ANSWER_CALLID", WAIT);
    let a_port = parse_port(&uac.expect_value("ANSWER_PORT", WAIT), "A port");
    assert_eq!(uac.expect_value("ANSWER_ADDR", WAIT), "127.0.0.1");
    uac.expect_value("CONFIRMED", WAIT);
    let offer_port = parse_port(&uas.expect_value("OFFER_PORT", WAIT), "B port");
    MediaCall {
        hf,
        uac,
        uas,
        call_id,
        a_addr: local(a_port),
        offer_port,
    }
}

/// Test-owned RTP on both legs: N packets each way arrive exactly once, as one rewritten
/// stream per direction from holdfast's own ports; then a third party injects into the
/// latched A port and none of it gets through — holdfast counts it as wrong_source.
fn rtp_counted_on_both_ends_and_wrong_source_dropped(io: &str) {
    const N: usize = 200;
    const INJECTED: usize = 50;
    let (x, y, z) = (
        RtpEndpoint::bind(),
        RtpEndpoint::bind(),
        RtpEndpoint::bind(),
    );
    let ports = media_ports(8);
    let call = media_call(
        format!("{}\n  io: {io}", media_section(&ports)),
        &sc::uac_media_call(x.port),
        &sc::uas_media_answer(y.port),
    );
    // `auto` is raw here: the test command runs as root (CAP_NET_RAW + CAP_BPF).
    let ready = call
        .hf
        .find_log(|l| msg(l) == "media relay ready")
        .expect("media relay ready logged")
        .1;
    let want = if io == "socket" { "socket" } else { "raw" };
    assert_eq!(field(&ready, "io"), want, "{ready}");
    let a_addr = call.a_addr;
    assert!(port_range(&ports).contains(&a_addr.port()));

    // Carrier → agent.
    x.send_stream(a_addr, 0x1111_1111, 100, N);
    assert_eq!(y.wait_count(N, WAIT), N, "carrier → agent");
    let (b_addr, y_ssrc) = assert_one_stream("carrier → agent", &y.seen());
    assert_eq!(
        b_addr,
        local(call.offer_port),
        "B leg sends from its SDP port"
    );
    assert_ne!(b_addr, a_addr);

    // Agent → carrier, to the address the agent's packets came from.
    y.send_stream(b_addr, 0x2222_2222, 60000, N);
    assert_eq!(x.wait_count(N, WAIT), N, "agent → carrier");
    let (from, x_ssrc) = assert_one_stream("agent → carrier", &x.seen());
    assert_eq!(from, a_addr, "A leg sends from the port in its SDP");
    assert_ne!(y_ssrc, 0x1111_1111, "SSRC rewritten carrier → agent");
    assert_ne!(x_ssrc, 0x2222_2222, "SSRC rewritten agent → carrier");
    assert_ne!(x_ssrc, y_ssrc, "one SSRC per direction");
    for w in y.seen().windows(2) {
        assert_eq!(w[1].ts.wrapping_sub(w[0].ts), 160, "timestamps follow");
    }

    // Injection into the latched A port from a third socket.
    z.send_stream(a_addr, 0x3333_3333, 1, INJECTED);
    // A barrier: one more packet from the latched carrier after the injected ones, on the
    // same socket; once it is through, every injected packet has been judged.
    x.send_rtp(a_addr, 0x1111_1111, 100 + N as u16, 1000 + 160 * N as u32);
    assert_eq!(
        y.wait_count(N + 1, WAIT),
        N + 1,
        "injected packets reached the agent"
    );
    let seen = y.seen();
    assert_one_stream("carrier → agent after the injection", &seen);
    assert_eq!(z.count(), 0, "holdfast never answers the injector");

    call.uac.poke(&call.call_id);
    let r = call.uac.wait(WAIT);
    assert!(r.success(), "caller failed: {}\n{}", r.output, r.errors);
    let a = call.uas.wait(WAIT);
    assert!(a.success(), "agent failed: {}\n{}", a.output, a.errors);
    assert_eq!(y.count(), N + 1, "nothing else reached the agent");
    let closed = media_closed(&call.hf);
    assert_eq!(n(&closed, "a_packets"), N as i64 + 1, "{closed}");
    assert_eq!(n(&closed, "a_forwarded"), N as i64 + 1, "{closed}");
    assert_eq!(n(&closed, "a_wrong_source"), INJECTED as i64, "{closed}");
    assert_eq!(n(&closed, "b_packets"), N as i64, "{closed}");
    assert_eq!(n(&closed, "b_forwarded"), N as i64, "{closed}");
    assert_eq!(n(&closed, "b_wrong_source"), 0, "{closed}");
    assert_eq!(n(&closed, "ports_in_use"), 0, "{closed}");
    // The injector never moved the latch.
    assert_eq!(call.hf.count_logs(|l| msg(l).contains("(NAT)")), 0);
}

#[test]
fn rtp_counted_on_both_ends_and_wrong_source_dropped_raw_io() {
    rtp_counted_on_both_ends_and_wrong_source_dropped("auto");
}

#[test]
fn rtp_counted_on_both_ends_and_wrong_source_dropped_socket_io() {
    rtp_counted_on_both_ends_and_wrong_source_dropped("socket");
}

/// Hold and unhold from the carrier: each re-INVITE is answered by holdfast on the carrier's
/// leg (sendonly → recvonly, then sendrecv), the agent never sees a re-INVITE, and while
/// the caller is held the agent's audio is not forwarded to it.
#[test]
fn hold_and_unhold_reinvite_answered_on_the_carrier_leg() {
    const K: usize = 10;
    let (x, y) = (RtpEndpoint::bind(), RtpEndpoint::bind());
    let call = media_call(
        media_section(&media_ports(8)),
        &sc::uac_hold_unhold(x.port),
        &sc::uas_media_answer(y.port),
    );
    let a_addr = call.a_addr;
    // Both legs latched before the hold.
    x.send_stream(a_addr, 0xaaaa, 1, K);
    assert_eq!(y.wait_count(K, WAIT), K);
    let b_addr = y.seen()[0].from;
    y.send_stream(b_addr, 0xbbbb, 1, K);
    assert_eq!(x.wait_count(K, WAIT), K);

    // Hold: the caller goes sendonly; holdfast answers recvonly itself.
    call.uac.poke(&call.call_id);
    call.uac.expect_value("HELD", WAIT);
    assert_eq!(call.uac.expect_value("HOLD_DIR", WAIT), "recvonly");
    assert_eq!(
        parse_port(&call.uac.expect_value("HOLD_PORT", WAIT), "hold port"),
        a_addr.port(),
        "the hold answer keeps the A port"
    );
    // The held caller still sends (music on hold) and it reaches the agent...
    x.send_stream(a_addr, 0xaaaa, 1 + K as u16, K);
    assert_eq!(y.wait_count(2 * K, WAIT), 2 * K);
    // ...but the agent's audio is not forwarded to it (2K packets, counted as dropped).
    y.send_stream(b_addr, 0xbbbb, 1 + K as u16, 2 * K);

    // Unhold: sendrecv again, and the agent's audio flows.
    call.uac.poke(&call.call_id);
    call.uac.expect_value("UNHELD", WAIT);
    let dir = call.uac.expect_value("UNHOLD_DIR", WAIT);
    assert!(
        dir.is_empty() || dir == "sendrecv",
        "unhold answered with a={dir}"
    );
    assert_eq!(x.count(), K, "the held caller got the agent's audio");
    y.send_stream(b_addr, 0xbbbb, 1 + 3 * K as u16, K);
    assert_eq!(x.wait_count(2 * K, WAIT), 2 * K, "audio after unhold");
    assert_one_stream("agent → carrier across hold", &x.seen());

    call.uac.poke(&call.call_id);
    let r = call.uac.wait(WAIT);
    assert!(r.success(), "caller failed: {}\n{}", r.output, r.errors);
    let a = call.uas.wait(WAIT);
    assert!(
        a.success(),
        "agent failed (a re-INVITE reached it?): {}\n{}",
        a.output,
        a.errors
    );
    assert_eq!(
        a.messages.matches("INVITE sip:").count(),
        1,
        "the agent got exactly one INVITE:\n{}",
        a.messages
    );
    assert_eq!(x.count(), 2 * K);
    let hf = &call.hf;
    assert_eq!(
        hf.count_logs(|l| msg(l) == "re-offer answered on its own leg"),
        2,
        "both re-INVITEs answered locally"
    );
    let closed = media_closed(hf);
    assert_eq!(n(&closed, "a_forwarded"), 2 * K as i64, "{closed}");
    assert_eq!(n(&closed, "b_packets"), 4 * K as i64, "{closed}");
    assert_eq!(n(&closed, "b_forwarded"), 2 * K as i64, "{closed}");
    assert_eq!(n(&closed, "b_dropped"), 2 * K as i64, "{closed}");
    assert_eq!(n(&closed, "ports_in_use"), 0, "{closed}");
}

/// Room for exactly one call's relay (4 ports): a second call gets 503 while the first is
/// up; once the first has ended its ports are back and a third call goes through.
#[test]
fn port_range_exhaustion_answers_503_and_leaks_nothing() {
    let (hp, trunk, trunk2, trunk3, agent) = (
        free_port(),
        free_port(),
        free_port(),
        free_port(),
        free_port(),
    );
    let (x, y) = (RtpEndpoint::bind(), RtpEndpoint::bind());
    let mut c = inbound(hp, trunk, agent, media_section(&media_ports(4)));
    // All three callers are the same carrier.
    c.carriers[0] = c.carriers[0].replace(
        &format!("sources: [\"127.0.0.1:{trunk}\"]"),
        &format!(
            "sources: [\"127.0.0.1:{trunk}\", \"127.0.0.1:{trunk2}\", \"127.0.0.1:{trunk3}\"]"
        ),
    );
    let uas = Sipp::uas_with(
        "agent",
        &sc::uas_media_answer(y.port),
        agent,
        Some(2),
        TRACE,
    );
    let hf = Holdfast::start(&c.yaml(), hp);
    let target = format!("127.0.0.1:{hp}");
    let first = Sipp::uac(
        "first",
        &sc::uac_media_call(x.port),
        trunk,
        &target,
        "+15551230000",
        1,
        TRACE,
    );
    let call_id = first.expect_value("ANSWER_CALLID", WAIT);
    first.expect_value("CONFIRMED", WAIT);

    let second = Sipp::uac(
        "second",
        &sc::uac_expect(503, None),
        trunk2,
        &target,
        "+15551230000",
        1,
        &[],
    );
    let r = second.wait(WAIT);
    assert!(
        r.success(),
        "second call did not get 503: {}\n{}",
        r.output,
        r.errors
    );
    assert!(
        hf.find_log(|l| msg(l) == "refused: media port range exhausted")
            .is_some(),
        "the 503 was not for the port range"
    );
    assert_eq!(hf.count_logs(|l| msg(l) == "media closed"), 0);

    first.poke(&call_id);
    let r = first.wait(WAIT);
    assert!(r.success(), "first call failed: {}\n{}", r.output, r.errors);
    let closed = media_closed(&hf);
    assert_eq!(n(&closed, "ports_in_use"), 0, "{closed}");

    let third = Sipp::uac(
        "third",
        &sc::uac_media_call(x.port),
        trunk3,
        &target,
        "+15551230000",
        1,
        TRACE,
    );
    let call_id = third.expect_value("ANSWER_CALLID", WAIT);
    third.expect_value("CONFIRMED", WAIT);
    third.poke(&call_id);
    let r = third.wait(WAIT);
    assert!(r.success(), "third call failed: {}\n{}", r.output, r.errors);
    let a = uas.wait(WAIT);
    assert!(a.success(), "agent failed: {}\n{}", a.output, a.errors);
    assert_eq!(
        a.messages.matches("INVITE sip:").count(),
        2,
        "the refused call never reached the agent"
    );
    let deadline = Instant::now() + WAIT;
    while hf.count_logs(|l| msg(l) == "media closed") < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        hf.count_logs(|l| msg(l) == "media closed" && num(l, "ports_in_use") == Some(0)),
        2,
        "both relays closed with every port back"
    );
}

/// The agent's SDP points at a port nobody listens on: the first packet holdfast relays
/// there comes back as ICMP port unreachable, holdfast says so at once, and — the agent
/// being gone, whenever after its answer that is noticed, and no other provider left —
/// hangs up the caller with the reason.
#[test]
fn icmp_unreachable_is_noticed() {
    let x = RtpEndpoint::bind();
    let dead = {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap().port()
    }; // closed again: nobody listens there now
    let call = media_call(
        media_section(&media_ports(4)),
        &sc::uac_media_wait_bye(x.port, "no other provider"),
        &sc::uas_media_answer(dead),
    );
    let sent = Instant::now();
    x.send_stream(call.a_addr, 0x4444, 1, 5);
    let (at, line) = call
        .hf
        .wait_log(Duration::from_secs(5), |l| {
            msg(l) == "media: peer port unreachable (ICMP)"
        })
        .unwrap_or_else(|| panic!("no ICMP notice; logs:\n{}", call.hf.dump_logs()));
    assert!(
        at.duration_since(sent) < Duration::from_secs(1),
        "noticed after {:?}",
        at.duration_since(sent)
    );
    assert!(
        field(&line, "addr").ends_with(&format!(":{dead}")),
        "{line}"
    );
    let r = call.uac.wait(WAIT);
    assert!(
        r.success(),
        "the caller got no BYE saying why: {}\n{}",
        r.output,
        r.errors
    );
}
