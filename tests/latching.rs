//! Media latching against hijack, end to end (issue 13): a SIPp carrier calls a SIPp agent
//! through holdfast; test-owned sockets are the real peers' media and an attacker's. The
//! attacker learns holdfast's relay ports from the SDP holdfast sent (the 200 OK to the
//! carrier, the INVITE to the agent) and injects RTP before the real peers' first packet.
//! Which payload byte reaches the other side says whose audio won; the `media closed` line
//! and `/metrics` say how the losers were counted. Everything runs on loopback: 127.0.0.1 is
//! the peers' IP, 127.0.0.2 "another IP".
mod common;

use common::http::{get, metric};
use common::scenarios as sc;
use common::*;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(30);
/// Payload byte of the real peers' audio.
const REAL: u8 = 0x11;
/// Payload byte of the attacker's audio.
const EVIL: u8 = 0xee;
/// Payload byte of a last "barrier" packet: once it is through, everything the same socket
/// sent before it has been judged.
const BARRIER: u8 = 0x22;
/// Packets the attacker injects into each relay port.
const INJECTED: usize = 20;
/// Packets each real peer sends.
const SENT: usize = 50;

const TRACE: &[&str] = &["-trace_logs", "-trace_msg"];

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A call carrier-a (SIPp UAC, media announced at `carrier_media`) → holdfast → agent-a
/// (SIPp UAS, media announced at `agent_media`), with `media` added to the `media:` section
/// and `carrier_extra` to carrier-a's entry. The relay ports come from holdfast's own SDP.
struct LatchCall {
    hf: Holdfast,
    uac: Sipp,
    uas: Sipp,
    call_id: String,
    /// holdfast's A-leg (carrier side) RTP address, from the 200 OK the carrier got.
    a_relay: SocketAddr,
    /// holdfast's B-leg (agent side) RTP address, from the INVITE the agent got.
    b_relay: SocketAddr,
}

fn latch_call(media: &str, carrier_extra: &str, carrier_media: u16, agent_media: u16) -> LatchCall {
    let (hp, trunk, agent) = (free_port(), free_port(), free_port());
    let mut c = TestConfig::new(hp);
    c.carriers.push(format!(
        "{{ id: carrier-a, uri: \"sip:127.0.0.1:9\", region: us, ping: false, sources: [\"127.0.0.1:{trunk}\"]{carrier_extra} }}"
    ));
    c.providers.push(format!(
        "{{ id: agent-a, kind: sip, uri: \"sip:agent@127.0.0.1:{agent}\", region: us, ping: false }}"
    ));
    c.inbound.push("{ regions: [us], ai: [agent-a] }".into());
    c.media = format!(
        "ports: \"{}\"\n  timeout: 60s\n  ai_timeout: 60s{media}",
        media_ports(8)
    );
    let uas = Sipp::uas_with(
        "agent",
        &sc::uas_media_answer(agent_media),
        agent,
        Some(1),
        TRACE,
    );
    let hf = Holdfast::start(&c.yaml(), hp);
    let uac = Sipp::uac(
        "trunk",
        &sc::uac_media_call(carrier_media),
        trunk,
        &format!("127.0.0.1:{hp}"),
        "+15551230000",
        1,
        TRACE,
    );
    let call_id = uac.expect_value("ANSWER_CALLID", WAIT);
    let port = |v: String| -> u16 { v.trim().parse().unwrap_or_else(|_| panic!("port {v:?}")) };
    let a_port = port(uac.expect_value("ANSWER_PORT", WAIT));
    assert_eq!(uac.expect_value("ANSWER_ADDR", WAIT), "127.0.0.1");
    uac.expect_value("CONFIRMED", WAIT);
    let b_port = port(uas.expect_value("OFFER_PORT", WAIT));
    LatchCall {
        hf,
        uac,
        uas,
        call_id,
        a_relay: local(a_port),
        b_relay: local(b_port),
    }
}

impl LatchCall {
    /// Both sides hang up cleanly; returns the call's `media closed` line.
    fn hang_up(self) -> (Holdfast, LogLine) {
        self.uac.poke(&self.call_id);
        let r = self.uac.wait(WAIT);
        assert!(r.success(), "caller failed: {}\n{}", r.output, r.errors);
        let a = self.uas.wait(WAIT);
        assert!(a.success(), "agent failed: {}\n{}", a.output, a.errors);
        let closed = self
            .hf
            .wait_log(WAIT, |l| msg(l) == "media closed")
            .unwrap_or_else(|| panic!("no \"media closed\"; logs:\n{}", self.hf.dump_logs()))
            .1;
        (self.hf, closed)
    }
}

fn n(l: &LogLine, name: &str) -> i64 {
    num(l, name).unwrap_or_else(|| panic!("\"media closed\" has no {name}: {l}"))
}

/// `holdfast_rtp_drops_total{reason}` once it reached at least `want` (the workers publish
/// their counters per wakeup), or what it was at the deadline.
fn drops_metric(hf: &Holdfast, reason: &str, want: f64) -> f64 {
    let deadline = Instant::now() + WAIT;
    loop {
        let text = get(hf.admin_addr(), "/metrics", None).body;
        let v = metric(&text, "holdfast_rtp_drops_total", &[("reason", reason)]).unwrap_or(0.0);
        if v >= want || Instant::now() > deadline {
            return v;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every packet `at` got carries `byte` (after an optional barrier), from holdfast's `via`.
fn assert_all(what: &str, at: &RtpEndpoint, byte: u8, via: SocketAddr) {
    let seen = at.seen();
    assert!(!seen.is_empty(), "{what}: nothing arrived");
    for p in &seen {
        assert!(
            p.first == byte || p.first == BARRIER,
            "{what}: a packet with payload {:#04x} (the attacker's is {EVIL:#04x}): {p:?}",
            p.first
        );
        assert_eq!(p.from, via, "{what}: sent from holdfast's other leg");
    }
}

/// (a) An attacker on another IP injects into both relay ports before either real peer
/// sends. Under the default `latching: strict` it never latches, however long it keeps on:
/// both real streams win, the attacker's packets are dropped as `unexpected_source`, and it
/// never hears a thing.
fn an_attacker_on_another_ip_never_latches(io: &str) {
    let (carrier, agent, attacker) = (
        RtpEndpoint::bind(),
        RtpEndpoint::bind(),
        RtpEndpoint::bind_on("127.0.0.2"),
    );
    let call = latch_call(&format!("\n  io: {io}"), "", carrier.port, agent.port);
    attacker.send_stream_with(call.a_relay, 0xbad0_000a, 1, INJECTED, EVIL);
    attacker.send_stream_with(call.b_relay, 0xbad0_000b, 1, INJECTED, EVIL);
    carrier.send_stream_with(call.a_relay, 0x1111_1111, 100, SENT, REAL);
    agent.send_stream_with(call.b_relay, 0x2222_2222, 200, SENT, REAL);
    assert_eq!(agent.wait_count(SENT, WAIT), SENT, "carrier → agent");
    assert_eq!(carrier.wait_count(SENT, WAIT), SENT, "agent → carrier");
    assert_all("carrier → agent", &agent, REAL, call.b_relay);
    assert_all("agent → carrier", &carrier, REAL, call.a_relay);
    assert_one_stream("carrier → agent", &agent.seen());
    assert_eq!(attacker.count(), 0, "holdfast never sends to the attacker");
    let hf_log_nat = call.hf.count_logs(|l| msg(l).contains("(NAT)"));
    assert_eq!(hf_log_nat, 0, "nothing latched to another address");

    let (hf, closed) = call.hang_up();
    assert_eq!(agent.count(), SENT, "nothing more reached the agent");
    assert_eq!(n(&closed, "a_forwarded"), SENT as i64, "{closed}");
    assert_eq!(n(&closed, "b_forwarded"), SENT as i64, "{closed}");
    assert_eq!(
        n(&closed, "a_unexpected_source"),
        INJECTED as i64,
        "{closed}"
    );
    assert_eq!(
        n(&closed, "b_unexpected_source"),
        INJECTED as i64,
        "{closed}"
    );
    for k in [
        "a_wrong_source",
        "b_wrong_source",
        "a_learning",
        "b_learning",
    ] {
        assert_eq!(n(&closed, k), 0, "{k}: {closed}");
    }
    let want = 2.0 * INJECTED as f64;
    assert_eq!(drops_metric(&hf, "unexpected_source", want), want);
    assert_eq!(drops_metric(&hf, "wrong_source", 0.0), 0.0);
}

#[test]
fn an_attacker_on_another_ip_never_latches_raw_io() {
    // `auto` is raw here: the test command runs as root (CAP_NET_RAW + CAP_BPF).
    an_attacker_on_another_ip_never_latches("auto");
}

#[test]
fn an_attacker_on_another_ip_never_latches_socket_io() {
    an_attacker_on_another_ip_never_latches("socket");
}

/// (b) An attacker on the peers' own IP, another port, injects first — what a NAT's port
/// rewrite looks like. Within the learning window the real peers' SDP ports still win:
/// the attacker's packets are held back (`learning`) and never latch.
#[test]
fn an_attacker_on_the_peers_ip_loses_to_the_sdp_port_within_the_window() {
    let (carrier, agent, attacker) = (
        RtpEndpoint::bind(),
        RtpEndpoint::bind(),
        RtpEndpoint::bind(),
    );
    // The longest window: the real peers' first packets come well inside it.
    let call = latch_call("\n  learning_window: 10s", "", carrier.port, agent.port);
    attacker.send_stream_with(call.a_relay, 0xbad0_000a, 1, INJECTED, EVIL);
    attacker.send_stream_with(call.b_relay, 0xbad0_000b, 1, INJECTED, EVIL);
    carrier.send_stream_with(call.a_relay, 0x1111_1111, 100, SENT, REAL);
    agent.send_stream_with(call.b_relay, 0x2222_2222, 200, SENT, REAL);
    assert_eq!(agent.wait_count(SENT, WAIT), SENT, "carrier → agent");
    assert_eq!(carrier.wait_count(SENT, WAIT), SENT, "agent → carrier");
    assert_all("carrier → agent", &agent, REAL, call.b_relay);
    assert_all("agent → carrier", &carrier, REAL, call.a_relay);
    // After the latch the attacker is just another source.
    attacker.send_stream_with(call.a_relay, 0xbad0_000a, 1000, 5, EVIL);
    carrier.send_rtp_with(call.a_relay, 0x1111_1111, 100 + SENT as u16, 9000, BARRIER);
    assert_eq!(agent.wait_count(SENT + 1, WAIT), SENT + 1);
    assert_all("carrier → agent", &agent, REAL, call.b_relay);
    assert_eq!(attacker.count(), 0, "holdfast never sends to the attacker");

    let (hf, closed) = call.hang_up();
    assert_eq!(n(&closed, "a_learning"), INJECTED as i64, "{closed}");
    assert_eq!(n(&closed, "a_wrong_source"), 5, "{closed}");
    // The B leg's window starts at the agent's answer; a packet that beat holdfast's
    // handling of that answer found no SDP address yet (`unexpected_source`).
    assert_eq!(
        n(&closed, "b_learning") + n(&closed, "b_unexpected_source"),
        INJECTED as i64,
        "{closed}"
    );
    let learning = (n(&closed, "a_learning") + n(&closed, "b_learning")) as f64;
    assert_eq!(drops_metric(&hf, "learning", learning), learning);
}

/// A carrier behind a NAT that rewrites its RTP port: its SDP names one port, its media
/// comes from another on the same IP. It is latched once the learning window passes with
/// nothing from the SDP port, its audio reaches the agent and the agent's reaches it (at
/// the port it really uses) — while an attacker on another IP who injected first still
/// gets nowhere.
#[test]
fn a_natted_carrier_port_latches_after_the_window_and_an_attacker_still_loses() {
    let (announced, natted, agent, attacker) = (
        RtpEndpoint::bind(),
        RtpEndpoint::bind(),
        RtpEndpoint::bind(),
        RtpEndpoint::bind_on("127.0.0.2"),
    );
    // The default window (1 s).
    let call = latch_call("", "", announced.port, agent.port);
    attacker.send_stream_with(call.a_relay, 0xbad0_000a, 1, INJECTED, EVIL);
    // 3 s of audio, one packet per 20 ms: longer than the window from the carrier's offer.
    const TALK: usize = 150;
    natted
        .talk_with(
            call.a_relay,
            0x1111_1111,
            TALK,
            Duration::from_millis(20),
            REAL,
        )
        .join()
        .unwrap();
    natted.send_rtp_with(
        call.a_relay,
        0x1111_1111,
        1 + TALK as u16,
        160 * TALK as u32,
        BARRIER,
    );
    let deadline = Instant::now() + WAIT;
    while !agent.seen().iter().any(|p| p.first == BARRIER) {
        assert!(
            Instant::now() < deadline,
            "the NATed carrier's audio never reached the agent; logs:\n{}",
            call.hf.dump_logs()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_all("carrier → agent", &agent, REAL, call.b_relay);
    let forwarded = agent.count();
    // The agent's audio goes where the carrier really is, not to the SDP port.
    agent.send_stream_with(call.b_relay, 0x2222_2222, 200, SENT, REAL);
    assert_eq!(natted.wait_count(SENT, WAIT), SENT, "agent → NATed carrier");
    assert_all("agent → carrier", &natted, REAL, call.a_relay);
    assert_eq!(
        announced.count(),
        0,
        "nothing to the SDP port nobody sends from"
    );
    assert_eq!(attacker.count(), 0, "holdfast never sends to the attacker");
    let nat = natted.addr().to_string();
    assert!(
        call.hf
            .find_log(|l| msg(l).contains("(NAT)")
                && field(l, "leg") == "A"
                && field(l, "addr") == nat)
            .is_some(),
        "leg A latched onto {nat}; logs:\n{}",
        call.hf.dump_logs()
    );

    let (_hf, closed) = call.hang_up();
    assert_eq!(
        n(&closed, "a_unexpected_source"),
        INJECTED as i64,
        "{closed}"
    );
    assert_eq!(n(&closed, "a_forwarded"), forwarded as i64, "{closed}");
    // Every packet the NATed carrier sent was either held back while learning or forwarded.
    assert_eq!(
        n(&closed, "a_learning") + n(&closed, "a_forwarded"),
        TALK as i64 + 1,
        "{closed}"
    );
    assert_eq!(n(&closed, "a_wrong_source"), 0, "{closed}");
}

/// `latching: any` on a carrier whose media comes from another IP than its SDP says
/// (127.0.0.2 while the SDP says 127.0.0.1): it is latched after the window and audio
/// flows both ways. (Without it, the same peer is `unexpected_source`: see (a).)
#[test]
fn latching_any_lets_a_carrier_send_from_another_ip() {
    let (announced, elsewhere, agent) = (
        RtpEndpoint::bind(),
        RtpEndpoint::bind_on("127.0.0.2"),
        RtpEndpoint::bind(),
    );
    let call = latch_call(
        "\n  learning_window: 200ms",
        ", latching: any",
        announced.port,
        agent.port,
    );
    const TALK: usize = 50;
    elsewhere
        .talk_with(
            call.a_relay,
            0x1111_1111,
            TALK,
            Duration::from_millis(20),
            REAL,
        )
        .join()
        .unwrap();
    elsewhere.send_rtp_with(
        call.a_relay,
        0x1111_1111,
        1 + TALK as u16,
        160 * TALK as u32,
        BARRIER,
    );
    let deadline = Instant::now() + WAIT;
    while !agent.seen().iter().any(|p| p.first == BARRIER) {
        assert!(
            Instant::now() < deadline,
            "the carrier's audio from another IP never reached the agent; logs:\n{}",
            call.hf.dump_logs()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_all("carrier → agent", &agent, REAL, call.b_relay);
    agent.send_stream_with(call.b_relay, 0x2222_2222, 200, SENT, REAL);
    assert_eq!(elsewhere.wait_count(SENT, WAIT), SENT, "agent → carrier");
    assert_all("agent → carrier", &elsewhere, REAL, call.a_relay);
    assert_eq!(announced.count(), 0);

    let (_hf, closed) = call.hang_up();
    assert_eq!(
        n(&closed, "a_learning") + n(&closed, "a_forwarded"),
        TALK as i64 + 1,
        "{closed}"
    );
    assert_eq!(n(&closed, "a_unexpected_source"), 0, "{closed}");
}
