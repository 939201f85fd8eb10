//! IPv6 peers against the real binary over ::1 (the IPv6 loopback): an IPv6 carrier calling
//! an IPv6 agent through an IPv6 listener, mixed-family calls (carrier over IPv4, agent over
//! IPv6, and the reverse) with RTP both ways between test-owned endpoints on 127.0.0.1 and
//! ::1, and OPTIONS health checks marking an IPv6 target up. SIPp peers run with `-i ::1`.
mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::http::get;
use common::scenarios as sc;
use common::*;

const WAIT: Duration = Duration::from_secs(30);
const TRACE: &[&str] = &["-trace_logs", "-trace_msg"];

/// holdfast listening on 127.0.0.1 and ::1 (UDP), media on both families.
fn dual_stack(hp: u16) -> TestConfig {
    let mut c = TestConfig::new(hp);
    c.media = format!(
        "ports: \"{}\"\n  bind: [127.0.0.1, \"::1\"]",
        media_ports(16)
    );
    c
}

/// holdfast listening on 127.0.0.1 and ::1 (UDP), media on ::1 only (the form a single
/// `media.bind` always had).
fn ipv6_media(hp: u16) -> TestConfig {
    let mut c = TestConfig::new(hp);
    c.media = format!("ports: \"{}\"\n  bind: \"::1\"", media_ports(16));
    c
}

/// `c.yaml()` with the IPv6 listener added.
fn yaml(c: &TestConfig) -> String {
    let v4 = format!(
        "listen: [\"udp:127.0.0.1:{0}\", \"tcp:127.0.0.1:{0}\"]",
        c.port
    );
    let both = format!(
        "listen: [\"udp:127.0.0.1:{0}\", \"tcp:127.0.0.1:{0}\", \"udp:[::1]:{0}\"]",
        c.port
    );
    let y = c.yaml();
    assert!(y.contains(&v4), "the harness's listen line moved:\n{y}");
    y.replace(&v4, &both)
}

/// The `/targets` entry of `id`.
fn target(admin: SocketAddr, id: &str) -> serde_json::Value {
    let r = get(admin, "/targets", None);
    assert_eq!(r.status, 200, "GET /targets: {}", r.body);
    let all = r.json();
    all["targets"]
        .as_array()
        .and_then(|v| v.iter().find(|t| t["id"] == id).cloned())
        .unwrap_or_else(|| panic!("GET /targets does not list {id}: {all}"))
}

/// SIPp scenarios with their SDP on ::1 instead of 127.0.0.1, and the far side's `c=`
/// read as an IPv6 address.
fn on_v6(scenario: String) -> String {
    scenario
        .replace("IN IP4 127.0.0.1", "IN IP6 ::1")
        .replace("c=IN IP4 ([0-9.]+)", "c=IN IP6 ([0-9a-fA-F:]+)")
}

#[test]
fn an_ipv6_carrier_calls_an_ipv6_agent_through_an_ipv6_listener() {
    let (hp, trunk, agent) = (free_port(), free_port(), free_port());
    let mut c = ipv6_media(hp);
    c.carriers.push(format!(
        "{{ id: carrier6, uri: \"sip:[::1]:9\", region: us, ping: false, sources: [\"[::1]:{trunk}\"] }}"
    ));
    c.providers.push(format!(
        "{{ id: agent6, kind: sip, uri: \"sip:agent@[::1]:{agent}\", region: us, ping: false }}"
    ));
    c.inbound.push("{ regions: [us], ai: [agent6] }".into());
    let uas = Sipp::uas_on("::1", "agent6", &sc::uas_answer(), agent, Some(1), TRACE);
    let hf = Holdfast::start(&yaml(&c), hp);
    let uac = Sipp::uac_on(
        "::1",
        "carrier6",
        &sc::uac_call(200),
        trunk,
        &format!("[::1]:{hp}"),
        "+15551230000",
        1,
        TRACE,
    );
    let r = uac.wait(WAIT);
    assert!(
        r.success(),
        "the IPv6 carrier's call failed: {}\n{}\n{}\n{}",
        r.output,
        r.errors,
        r.messages,
        hf.dump_logs()
    );
    let a = uas.wait(WAIT);
    assert!(
        a.success(),
        "the IPv6 agent failed: {}\n{}",
        a.output,
        a.errors
    );
    // What the agent got: bracketed literals everywhere (RFC 3261 §25.1 IPv6reference).
    let m = &a.messages;
    assert!(
        m.contains(&format!("INVITE sip:agent@[::1]:{agent} SIP/2.0")),
        "Request-URI: {m}"
    );
    assert!(
        m.contains(&format!("To: <sip:+15551230000@[::1]:{agent}>")),
        "To: {m}"
    );
    assert!(
        m.contains(&format!("Via: SIP/2.0/UDP [::1]:{hp};branch=")),
        "Via: {m}"
    );
    assert!(
        m.contains(&format!("Contact: <sip:[::1]:{hp};transport=udp>")),
        "Contact: {m}"
    );
    assert!(m.contains("c=IN IP6 ::1"), "the agent's SDP is IPv6: {m}");
    // And the carrier's answer came from holdfast's IPv6 media address.
    assert!(r.messages.contains("c=IN IP6 ::1"), "{}", r.messages);
    assert_eq!(
        hf.count_logs(|l| msg(l).contains("parse") && field(l, "remote").contains("::1")),
        0,
        "nothing holdfast received from the IPv6 peers failed to parse"
    );
}

/// A call from a carrier of one family to an agent of the other, with RTP both ways
/// between test-owned endpoints: the carrier's on `carrier_ip`, the agent's (an echo) on
/// `agent_ip`. Each side must see holdfast's address of its own family.
fn mixed_family_call(carrier_ip: &str, agent_ip: &str) {
    let (hp, trunk, agent) = (free_port(), free_port(), free_port());
    let v6 = |ip: &str| ip.contains(':');
    let host = |ip: &str| {
        if v6(ip) {
            format!("[{ip}]")
        } else {
            ip.to_string()
        }
    };
    let mut c = dual_stack(hp);
    c.carriers.push(format!(
        "{{ id: carrier, uri: \"sip:{}:9\", region: us, ping: false, sources: [\"{}:{trunk}\"] }}",
        host(carrier_ip),
        host(carrier_ip)
    ));
    c.providers.push(format!(
        "{{ id: agent, kind: sip, uri: \"sip:agent@{}:{agent}\", region: us, ping: false }}",
        host(agent_ip)
    ));
    c.inbound.push("{ regions: [us], ai: [agent] }".into());
    let echo = RtpEndpoint::echo_on(agent_ip);
    let caller = RtpEndpoint::bind_on(carrier_ip);
    let mut uas_sc = sc::uas_media_answer(echo.port);
    if v6(agent_ip) {
        uas_sc = on_v6(uas_sc);
    }
    let uas = Sipp::uas_on(agent_ip, "agent", &uas_sc, agent, Some(1), TRACE);
    let hf = Holdfast::start(&yaml(&c), hp);
    let mut uac_sc = sc::uac_media_call(caller.port);
    if v6(carrier_ip) {
        uac_sc = on_v6(uac_sc);
    }
    let uac = Sipp::uac_on(
        carrier_ip,
        "carrier",
        &uac_sc,
        trunk,
        &format!("{}:{hp}", host(carrier_ip)),
        "+15551230000",
        1,
        TRACE,
    );
    let call_id = uac.expect_value("ANSWER_CALLID", WAIT);
    uac.expect_value("CONFIRMED", WAIT);
    let answer_addr = uac.expect_value("ANSWER_ADDR", WAIT);
    let answer_port: u16 = uac.expect_value("ANSWER_PORT", WAIT).parse().unwrap();
    assert_eq!(
        answer_addr, carrier_ip,
        "the carrier's SDP names holdfast in its family"
    );
    let offer_addr = uas.expect_value("OFFER_ADDR", WAIT);
    assert_eq!(
        offer_addr, agent_ip,
        "the agent's SDP names holdfast in its family"
    );
    let offer_port: u16 = uas.expect_value("OFFER_PORT", WAIT).parse().unwrap();

    // The caller talks: holdfast relays across families to the agent, whose echo comes
    // back across families to the caller.
    let to_holdfast = SocketAddr::new(carrier_ip.parse().unwrap(), answer_port);
    let talk = caller.talk(to_holdfast, 0x6006, 50, Duration::from_millis(20));
    let at_agent = echo.wait_count(50, WAIT);
    let back = caller.wait_count(50, WAIT);
    talk.join().unwrap();
    assert_eq!(at_agent, 50, "carrier → agent packets");
    assert_eq!(back, 50, "agent → carrier packets (the echo)");
    let (src, _) = assert_one_stream("at the agent", &echo.seen());
    assert_eq!(
        src,
        SocketAddr::new(agent_ip.parse().unwrap(), offer_port),
        "the agent hears holdfast from the address and port its SDP named"
    );
    let (src, _) = assert_one_stream("at the carrier", &caller.seen());
    assert_eq!(
        src, to_holdfast,
        "the carrier hears holdfast from its SDP address"
    );

    uac.poke(&call_id);
    let r = uac.wait(WAIT);
    assert!(r.success(), "carrier failed: {}\n{}", r.output, r.errors);
    let a = uas.wait(WAIT);
    assert!(a.success(), "agent failed: {}\n{}", a.output, a.errors);
    let closed = hf
        .wait_log(WAIT, |l| msg(l) == "media closed")
        .unwrap_or_else(|| panic!("no \"media closed\"; logs:\n{}", hf.dump_logs()))
        .1;
    assert_eq!(num(&closed, "a_forwarded"), Some(50), "{closed}");
    assert_eq!(num(&closed, "b_forwarded"), Some(50), "{closed}");
}

#[test]
fn an_ipv4_carrier_reaches_an_ipv6_agent_with_rtp_both_ways() {
    mixed_family_call("127.0.0.1", "::1");
}

#[test]
fn an_ipv6_carrier_reaches_an_ipv4_agent_with_rtp_both_ways() {
    mixed_family_call("::1", "127.0.0.1");
}

#[test]
fn options_pings_mark_an_ipv6_target_up() {
    let (hp, agent) = (free_port(), free_port());
    let mut c = ipv6_media(hp);
    c.health = "ping_interval: 300ms\n  ping_timeout: 200ms\n  down_after: 2\n  up_after: 2".into();
    c.carriers.push(
        "{ id: carrier, uri: \"sip:127.0.0.1:9\", region: us, ping: false, sources: [\"127.0.0.1\"] }"
            .into(),
    );
    c.providers.push(format!(
        "{{ id: agent6, kind: sip, uri: \"sip:agent@[::1]:{agent}\", region: us }}"
    ));
    c.inbound.push("{ regions: [us], ai: [agent6] }".into());
    // SIPp answers every OPTIONS (-aa) by copying holdfast's Via, From, To and Call-ID.
    let uas = Sipp::uas_on("::1", "agent6", &sc::uas_answer(), agent, None, TRACE);
    let hf = Holdfast::start(&yaml(&c), hp);
    let admin = hf.admin_addr();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut t = target(admin, "agent6");
    while t["health"] != "up" && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        t = target(admin, "agent6");
    }
    assert_eq!(
        t["health"],
        "up",
        "the IPv6 target answered its pings: {t}\n{}",
        hf.dump_logs()
    );
    let m = uas.messages();
    assert!(
        m.contains(&format!("OPTIONS sip:[::1]:{agent} SIP/2.0")),
        "the ping's Request-URI brackets the literal: {m}"
    );
    assert!(
        m.contains(&format!("To: <sip:[::1]:{agent}>")),
        "the ping's To brackets it too: {m}"
    );
}
