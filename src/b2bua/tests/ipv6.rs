//! IPv6 peers on the virtual clock: every URI, Via and Call-ID holdfast writes for an IPv6
//! carrier or agent brackets the literal (RFC 3261 §19.1.1, §25.1 `IPv6reference`) and
//! parses back with our own parser to the same text; responses that copy those headers
//! are accepted; each leg's media is anchored in its peer's address family.
use super::{answer, header, Sim};
use crate::b2bua::call::Side;
use crate::media::control::MediaCommand;
use crate::sip::{parse, Host, Message, NameAddr, Uri};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

const HF4: &str = "127.0.0.1:5060";
const HF6: &str = "[::1]:5060";
const CARRIER4: &str = "127.0.0.1:5091";
const CARRIER6: &str = "[::1]:5091";
const ADV4: &str = "203.0.113.5";
const ADV6: &str = "2001:db8::5";

/// A dual-stack holdfast: listeners and media in both families, `agent` as the only AI
/// provider (pinged every second when `ping`), `advertise` as `sip.advertise` if any.
fn dual_stack(agent: &str, ping: bool, advertise: Option<&str>) -> Arc<crate::config::Config> {
    dual_stack_agents(&[agent], ping, advertise)
}

/// [`dual_stack`] with `agents` in priority order.
fn dual_stack_agents(
    agents: &[&str],
    ping: bool,
    advertise: Option<&str>,
) -> Arc<crate::config::Config> {
    let providers: String = agents
        .iter()
        .enumerate()
        .map(|(i, uri)| {
            format!(
                "\n  - {{ id: agent{i}, kind: sip, uri: \"{uri}\", region: us, priority: {}, ping: {ping} }}",
                i + 1
            )
        })
        .collect();
    let names: Vec<String> = (0..agents.len()).map(|i| format!("agent{i}")).collect();
    let advertise = advertise
        .map(|a| format!("  advertise: \"{a}\"\n"))
        .unwrap_or_default();
    let yaml = format!(
        r#"
sip:
  listen: ["udp:{HF4}", "udp:{HF6}", "tcp:{HF6}"]
{advertise}health:
  ping_interval: 1s
  ping_timeout: 500ms
  up_after: 1
routing:
  attempt_timeout: 1s
  seed: 1
media:
  bind: [127.0.0.1, "::1"]
  advertise: [{ADV4}, "{ADV6}"]
carriers:
  - {{ id: carrier6, uri: "sip:{CARRIER6}", region: us, ping: false, sources: ["::1"] }}
  - {{ id: carrier4, uri: "sip:{CARRIER4}", region: us, ping: false, sources: ["127.0.0.1"] }}
ai_providers:{providers}
routes:
  inbound: [ {{ regions: [us], ai: [{}] }} ]
"#,
        names.join(", ")
    );
    Arc::new(crate::config::parse(&yaml, "test.yaml").expect("valid test config"))
}

fn sdp(ip: &str) -> String {
    let family = if ip.contains(':') { "IP6" } else { "IP4" };
    format!(
        "v=0\r\no=peer 1 1 IN {family} {ip}\r\ns=-\r\nc=IN {family} {ip}\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
    )
}

/// The carrier's INVITE from `carrier` to holdfast at `hf`, media at `media_ip`.
fn invite(carrier: &str, hf: &str, media_ip: &str) -> String {
    let body = sdp(media_ip);
    format!(
        "INVITE sip:+15551230000@{hf} SIP/2.0\r\nVia: SIP/2.0/UDP {carrier};branch=z9hG4bKc6;rport\r\n\
         From: \"Alice\" <sip:+15550001111@{carrier}>;tag=ctag\r\nTo: <sip:+15551230000@{hf}>\r\n\
         Call-ID: c6@carrier\r\nCSeq: 10 INVITE\r\nContact: <sip:gw@{carrier}>\r\n\
         Max-Forwards: 70\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

fn ack(carrier: &str, hf: &str, ok: &str) -> String {
    format!(
        "ACK sip:gw@{hf} SIP/2.0\r\nVia: SIP/2.0/UDP {carrier};branch=z9hG4bKc6ack\r\n\
         From: \"Alice\" <sip:+15550001111@{carrier}>;tag=ctag\r\nTo: {}\r\n\
         Call-ID: c6@carrier\r\nCSeq: 10 ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
        header(ok, "To")
    )
}

fn bye(carrier: &str, hf: &str, ok: &str) -> String {
    format!(
        "BYE sip:gw@{hf} SIP/2.0\r\nVia: SIP/2.0/UDP {carrier};branch=z9hG4bKc6bye\r\n\
         From: \"Alice\" <sip:+15550001111@{carrier}>;tag=ctag\r\nTo: {}\r\n\
         Call-ID: c6@carrier\r\nCSeq: 11 BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
        header(ok, "To")
    )
}

/// A URI holdfast wrote parses, displays back to the same text, and an IPv6 host in it is
/// a bracketed literal (not a name, not `::1:5081` read as something else).
fn check_uri(text: &str, what: &str, msg: &str) {
    let uri =
        Uri::parse(text).unwrap_or_else(|e| panic!("{what} `{text}` does not parse ({e}):\n{msg}"));
    assert_eq!(uri.to_string(), text, "{what} round-trips:\n{msg}");
    if let Some(sip) = uri.as_sip() {
        if text.contains("::") {
            assert!(
                matches!(sip.host, Host::Ip(IpAddr::V6(_))),
                "{what} `{text}` has an IPv6 host:\n{msg}"
            );
        }
    }
}

fn check_name_addr(n: &NameAddr<'_>, what: &str, msg: &str) {
    check_uri(n.uri_raw, what, msg);
}

/// Every message holdfast sent parses with our parser, and every URI in it round-trips.
fn check_all_sent(sim: &Sim) -> usize {
    for (_, to, text) in &sim.sent {
        let msg = parse(text.as_bytes())
            .unwrap_or_else(|e| panic!("message to {to} does not parse ({e:?}):\n{text}"));
        if let Message::Request(r) = &msg {
            check_uri(r.uri, "Request-URI", text);
        }
        let h = msg.headers();
        for v in h.vias().unwrap_or_else(|e| panic!("Via ({e}):\n{text}")) {
            // Re-displaying the parsed Via gives a Via that parses to the same sent-by.
            let again = v.to_string();
            let v2 = crate::sip::Via::parse(&again).expect("Via display parses");
            assert_eq!((v2.host, v2.port), (v.host, v.port), "{text}");
        }
        check_name_addr(&h.from().expect("From"), "From", text);
        check_name_addr(&h.to().expect("To"), "To", text);
        for c in h.contacts().expect("Contact").as_slice() {
            check_name_addr(c, "Contact", text);
        }
        for r in h.routes().expect("Route") {
            check_name_addr(&r, "Route", text);
        }
        for r in h.record_routes().expect("Record-Route") {
            check_name_addr(&r, "Record-Route", text);
        }
        let call_id = h.call_id().expect("Call-ID");
        if let Some((_, host)) = call_id.split_once('@') {
            if host.contains("::") {
                assert!(host.starts_with('['), "Call-ID host bracketed: {text}");
            }
        }
        // No bare IPv6 literal anywhere in the headers: `@::1`, `sip:::1`, ` ::1:5060`.
        let head = text.split("\r\n\r\n").next().unwrap_or("");
        for bad in [
            "@::",
            "sip:::",
            "@2001:",
            "sip:2001:",
            " ::1:",
            " 2001:db8::5:",
        ] {
            assert!(
                !head.contains(bad),
                "unbracketed IPv6 literal ({bad}) in:\n{text}"
            );
        }
    }
    sim.sent.len()
}

/// The agent's response to `req`, copying its headers, with its own IPv6 Contact.
fn agent_answer(
    req: &str,
    status: u16,
    reason: &str,
    agent_contact: &str,
    body: Option<&str>,
) -> String {
    answer(req, status, reason, "", body).replace(
        &format!("Contact: <sip:agent@{}>", super::AGENT_A),
        &format!("Contact: <sip:agent@{agent_contact}>"),
    )
}

fn media_opens(sim: &Sim) -> Vec<crate::media::control::RelayIps> {
    sim.media
        .iter()
        .filter_map(|m| match m {
            MediaCommand::Open { ips, .. } => Some(*ips),
            _ => None,
        })
        .collect()
}

/// One whole call carrier → holdfast → agent, with the agent's health ping, for a target
/// URI `agent_uri` reached at `agent_addr`; every message checked.
fn ipv6_call(agent_uri: &str, agent_addr: &str, advertise: Option<&str>) {
    let mut sim = Sim::with_config(dual_stack(agent_uri, true, advertise));
    // The first ping round went out at start (drained); the next one is checked.
    sim.advance_to(Duration::from_millis(1100));
    let ping = sim.last(agent_addr, "OPTIONS ");
    let agent_host = agent_addr.rsplit_once(':').map_or(agent_addr, |(h, _)| h);
    assert!(
        ping.starts_with(&format!("OPTIONS sip:{agent_host}")),
        "the ping's Request-URI is the target's bracketed host: {ping}"
    );
    sim.recv_at(
        HF6,
        agent_addr,
        agent_answer(&ping, 200, "OK", agent_addr, None),
    );

    sim.recv_at(HF6, CARRIER6, invite(CARRIER6, HF6, "2001:db8::77"));
    let b_invite = sim.last(agent_addr, "INVITE ");
    let user = if agent_uri.contains("agent@") {
        "agent"
    } else {
        "+15551230000"
    };
    assert!(
        b_invite.starts_with(&format!("INVITE sip:{user}@{agent_host}")),
        "{b_invite}"
    );
    assert!(
        header(&b_invite, "To").starts_with(&format!("<sip:+15551230000@{agent_host}")),
        "{b_invite}"
    );
    let local = match advertise {
        Some(a) if a.contains(':') => format!("[{}]:5060", a.trim_matches(['[', ']'])),
        _ => HF6.to_string(),
    };
    assert!(
        header(&b_invite, "Via").contains(&format!(" {local};branch=")),
        "{b_invite}"
    );
    assert!(
        header(&b_invite, "Contact").starts_with(&format!("<sip:{local};")),
        "{b_invite}"
    );
    assert!(
        b_invite.contains(&format!("c=IN IP6 {ADV6}")),
        "the agent's offer is anchored on the IPv6 media address: {b_invite}"
    );
    assert_eq!(
        media_opens(&sim),
        vec![crate::media::control::RelayIps {
            a: "::1".parse().unwrap(),
            b: "::1".parse().unwrap()
        }],
        "both legs' relay sockets bind in IPv6"
    );
    sim.recv_at(
        HF6,
        agent_addr,
        agent_answer(&b_invite, 180, "Ringing", agent_addr, None),
    );
    sim.recv_at(
        HF6,
        agent_addr,
        agent_answer(&b_invite, 200, "OK", agent_addr, Some(&sdp("2001:db8::88"))),
    );
    let ok = sim.last(CARRIER6, "SIP/2.0 200");
    assert!(ok.contains(&format!("c=IN IP6 {ADV6}")), "{ok}");
    sim.recv_at(HF6, CARRIER6, ack(CARRIER6, HF6, &ok));
    let b_ack = sim.last(agent_addr, "ACK ");
    assert!(
        b_ack.starts_with(&format!("ACK sip:agent@{agent_addr}")),
        "{b_ack}"
    );
    sim.recv_at(HF6, CARRIER6, bye(CARRIER6, HF6, &ok));
    let b_bye = sim.last(agent_addr, "BYE ");
    sim.recv_at(
        HF6,
        agent_addr,
        agent_answer(&b_bye, 200, "OK", agent_addr, None),
    );
    assert!(sim.last(CARRIER6, "SIP/2.0 200").contains("CSeq: 11 BYE"));
    assert_eq!(sim.core.calls().count(), 0, "the call ended cleanly");
    let n = check_all_sent(&sim);
    assert!(n >= 8, "{n} messages checked");
    let view = sim.core.target_views(sim.now);
    let agent = view.iter().find(|t| t.id == "agent0").expect("agent view");
    assert_eq!(
        agent.health, "up",
        "the ping's 200 (copying our headers) marked it up"
    );
}

#[test]
fn every_message_for_ipv6_peers_brackets_its_literals_and_round_trips() {
    // The target URI forms a user writes, and sip.advertise bare, bracketed and absent.
    for (uri, addr, advertise) in [
        ("sip:agent@[::1]:5081", "[::1]:5081", None),
        ("sip:[::1]:5081", "[::1]:5081", None),
        ("sip:agent@[::1]", "[::1]:5060", None),
        ("sip:agent@[::1]:5081;transport=udp", "[::1]:5081", None),
        ("sip:agent@[::1]:5081", "[::1]:5081", Some("2001:db8::99")),
        ("sip:agent@[::1]:5081", "[::1]:5081", Some("[2001:db8::99]")),
        // An IPv4 advertise is not written on an IPv6 flow.
        ("sip:agent@[::1]:5081", "[::1]:5081", Some("198.51.100.9")),
    ] {
        ipv6_call(uri, addr, advertise);
    }
}

/// Carrier over IPv4, agent over IPv6 (and the reverse): each leg's relay sockets bind in
/// its peer's family and each leg's SDP names holdfast's address of that family.
#[test]
fn a_mixed_family_call_anchors_each_leg_in_its_peers_family() {
    for (carrier, hf, carrier_media, agent_uri, agent_addr) in [
        (
            CARRIER4,
            HF4,
            "192.0.2.10",
            "sip:agent@[::1]:5081",
            "[::1]:5081",
        ),
        (
            CARRIER6,
            HF6,
            "2001:db8::77",
            "sip:agent@127.0.0.1:5081",
            "127.0.0.1:5081",
        ),
    ] {
        let mut sim = Sim::with_config(dual_stack(agent_uri, false, None));
        sim.recv_at(hf, carrier, invite(carrier, hf, carrier_media));
        let b_invite = sim.last(agent_addr, "INVITE ");
        let v6_agent = agent_addr.starts_with('[');
        let (agent_fam, agent_adv) = if v6_agent {
            ("IP6", ADV6)
        } else {
            ("IP4", ADV4)
        };
        let (carrier_fam, carrier_adv) = if v6_agent {
            ("IP4", ADV4)
        } else {
            ("IP6", ADV6)
        };
        assert!(
            b_invite.contains(&format!("c=IN {agent_fam} {agent_adv}")),
            "agent leg in its family: {b_invite}"
        );
        assert!(
            b_invite.contains("o=")
                && b_invite.contains(&format!("IN {agent_fam} {agent_adv}\r\ns=")),
            "{b_invite}"
        );
        let opens = media_opens(&sim);
        let (a, b): (IpAddr, IpAddr) = if v6_agent {
            ("127.0.0.1".parse().unwrap(), "::1".parse().unwrap())
        } else {
            ("::1".parse().unwrap(), "127.0.0.1".parse().unwrap())
        };
        assert_eq!(opens, vec![crate::media::control::RelayIps { a, b }]);
        let agent_media = if v6_agent {
            "2001:db8::88"
        } else {
            "192.0.2.20"
        };
        sim.recv_at(
            if v6_agent { HF6 } else { HF4 },
            agent_addr,
            agent_answer(&b_invite, 200, "OK", agent_addr, Some(&sdp(agent_media))),
        );
        let ok = sim.last(carrier, "SIP/2.0 200");
        assert!(
            ok.contains(&format!("c=IN {carrier_fam} {carrier_adv}")),
            "carrier leg in its family: {ok}"
        );
        check_all_sent(&sim);
    }
}

/// A failover from an IPv6 agent to an IPv4 one moves the callee leg's relay sockets to
/// IPv4 before the second INVITE, whose SDP names holdfast's IPv4 address; the carrier's
/// leg is not touched.
#[test]
fn a_failover_to_a_target_of_the_other_family_moves_the_callee_leg() {
    let agents = ["sip:agent@[::1]:5081", "sip:agent@127.0.0.1:5082"];
    for refused in [false, true] {
        let mut sim = Sim::with_config(dual_stack_agents(&agents, false, None));
        sim.rebind_error = refused;
        sim.recv_at(HF4, CARRIER4, invite(CARRIER4, HF4, "192.0.2.10"));
        let first = sim.last("[::1]:5081", "INVITE ");
        assert!(first.contains(&format!("c=IN IP6 {ADV6}")), "{first}");
        let opens = media_opens(&sim);
        assert_eq!(
            opens,
            vec![crate::media::control::RelayIps {
                a: "127.0.0.1".parse().unwrap(),
                b: "::1".parse().unwrap()
            }]
        );
        sim.recv_at(
            HF6,
            "[::1]:5081",
            agent_answer(&first, 503, "Service Unavailable", "[::1]:5081", None),
        );
        let second = sim.last("127.0.0.1:5082", "INVITE ");
        let rebinds: Vec<_> = sim
            .media
            .iter()
            .filter_map(|m| match m {
                MediaCommand::Rebind { side, ip, .. } => Some((*side, *ip)),
                _ => None,
            })
            .collect();
        assert_eq!(
            rebinds,
            vec![(Side::B, "127.0.0.1".parse::<IpAddr>().unwrap())],
            "one Rebind, of the callee's leg, to IPv4"
        );
        if refused {
            assert!(
                second.contains(&format!("c=IN IP6 {ADV6}")),
                "a refused move keeps the leg (and its SDP) where it was: {second}"
            );
        } else {
            assert!(
                second.contains(&format!("c=IN IP4 {ADV4}")) && !second.contains("IP6"),
                "the second attempt's offer is IPv4: {second}"
            );
        }
        assert_eq!(media_opens(&sim).len(), 1, "no new relay");
        sim.recv_at(
            HF4,
            "127.0.0.1:5082",
            agent_answer(
                &second,
                200,
                "OK",
                "127.0.0.1:5082",
                Some(&sdp("192.0.2.20")),
            ),
        );
        let ok = sim.last(CARRIER4, "SIP/2.0 200");
        assert!(ok.contains(&format!("c=IN IP4 {ADV4}")), "{ok}");
        check_all_sent(&sim);
    }
}
