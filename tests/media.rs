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
