//! Who holdfast answers at all (the guard), against the real binary: unknown sources get
//! nothing (or exactly one stateless 403 per request), monitoring pingers in
//! `sip.answer_options` get their 200, scanners get nothing, a source over its rate limit is
//! dropped, blocked and later unblocked with one log line per interval, and a carrier that
//! floods new INVITEs over its limit keeps its call in progress (re-INVITE, BYE).
//!
//! The strangers are raw UDP sockets of this test on other loopback addresses (127.0.0.x);
//! every wait has a deadline, and "nothing came" is checked by counting what a socket
//! receives in a fixed window after holdfast's own counters show the message was handled.
mod common;

use common::scenarios as sc;
use common::*;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(20);

/// A UDP socket of the test on loopback address `ip` (any 127.x.y.z works on Linux).
fn stranger(ip: &str) -> UdpSocket {
    let s = UdpSocket::bind((ip, 0)).expect("bind a stranger socket");
    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    s
}

fn request(method: &str, from: SocketAddr, hp: u16, n: u32, extra: &str) -> String {
    format!(
        "{method} sip:+15551230000@127.0.0.1:{hp} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {from};branch=z9hG4bKguard{n};rport\r\n\
         From: <sip:+15550001111@{from}>;tag=g{n}\r\nTo: <sip:+15551230000@127.0.0.1:{hp}>\r\n\
         Call-ID: guard-{n}@{ip}\r\nCSeq: 1 {method}\r\nContact: <sip:x@{from}>\r\n\
         Max-Forwards: 70\r\n{extra}Content-Length: 0\r\n\r\n",
        ip = from.ip()
    )
}

fn send(sock: &UdpSocket, hp: u16, text: &str) {
    sock.send_to(text.as_bytes(), ("127.0.0.1", hp))
        .expect("send to holdfast");
}

/// Every datagram `sock` receives during `window`.
fn received(sock: &UdpSocket, window: Duration) -> Vec<String> {
    let deadline = Instant::now() + window;
    let mut buf = [0u8; 65535];
    let mut out = Vec::new();
    while Instant::now() < deadline {
        if let Ok(n) = sock.recv(&mut buf) {
            out.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    out
}

/// The first datagram `sock` receives within `timeout`.
fn first(sock: &UdpSocket, timeout: Duration) -> Option<String> {
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 65535];
    while Instant::now() < deadline {
        if let Ok(n) = sock.recv(&mut buf) {
            return Some(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    None
}

fn metrics(hf: &Holdfast) -> String {
    http::get(hf.admin_addr(), "/metrics", None).body
}

/// Waits until `holdfast_sip_dropped_total{reason}` reaches `at_least`.
fn wait_dropped(hf: &Holdfast, reason: &str, at_least: f64) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let m = metrics(hf);
        let v = http::metric(&m, "holdfast_sip_dropped_total", &[("reason", reason)]);
        if v.is_some_and(|v| v >= at_least) {
            return m;
        }
        if Instant::now() > deadline {
            panic!("holdfast_sip_dropped_total{{reason={reason}}} never reached {at_least}:\n{m}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Log lines that name `ip` anywhere (as a source, a remote, a last_source...).
fn lines_naming(hf: &Holdfast, ip: &str) -> Vec<String> {
    let needle = format!("\"{ip}");
    hf.dump_logs()
        .lines()
        .filter(|l| l.contains(&needle))
        .map(str::to_string)
        .collect()
}

/// An OPTIONS from the carrier's address (127.0.0.1, a source in every config here but the
/// scanner test's), answered: everything sent to holdfast before it has been handled (one
/// main loop, messages in order).
fn barrier(hp: u16) {
    let s = stranger("127.0.0.1");
    let me = s.local_addr().unwrap();
    send(&s, hp, &request("OPTIONS", me, hp, 999_999, ""));
    let r = first(&s, WAIT).expect("the carrier's OPTIONS got no answer");
    assert!(r.starts_with("SIP/2.0 200 "), "{r}");
}

/// A config with one carrier (`sources`: `carrier_sources`) routing to a provider nobody
/// answers, and `sip` keys added.
fn config(hp: u16, sip: &str, carrier_sources: &str) -> TestConfig {
    let mut c = TestConfig::new(hp);
    c.sip = sip.to_string();
    c.carriers.push(format!(
        "{{ id: carrier-a, uri: \"sip:127.0.0.1:9\", region: us, ping: false, sources: [{carrier_sources}] }}"
    ));
    c.providers.push(
        "{ id: agent-a, kind: sip, uri: \"sip:agent@127.0.0.1:9\", region: us, ping: false }"
            .into(),
    );
    c.inbound.push("{ regions: [us], ai: [agent-a] }".into());
    c
}

#[test]
fn unknown_sources_get_nothing_and_no_log_line_each_by_default() {
    let hp = free_port();
    let hf = Holdfast::start(&config(hp, "", "\"127.0.0.1/32\"").yaml(), hp);
    let s = stranger("127.0.0.2");
    let me = s.local_addr().unwrap();
    send(&s, hp, &request("INVITE", me, hp, 1, ""));
    send(&s, hp, &request("OPTIONS", me, hp, 2, ""));
    // A carrier's OPTIONS after them: once it is answered, holdfast has handled theirs.
    barrier(hp);
    // Answered with nothing: not at once, not as a retransmission (T1 is 100 ms here, so a
    // response would have come back several times in this window).
    let got = received(&s, Duration::from_millis(1500));
    assert!(got.is_empty(), "an unknown source got answers: {got:#?}");
    wait_dropped(&hf, "unknown_source", 2.0);
    // 200 more, in batches the socket buffer takes whole.
    for batch in 0..10 {
        for n in 0..20 {
            send(&s, hp, &request("INVITE", me, hp, 3 + batch * 20 + n, ""));
        }
        wait_dropped(&hf, "unknown_source", f64::from(2 + (batch + 1) * 20));
    }
    let m = metrics(&hf);
    assert!(received(&s, Duration::from_millis(500)).is_empty());
    // Every reason is exported, from the first scrape on.
    for reason in [
        "unknown_source",
        "scanner",
        "rate_limited",
        "blocked",
        "stray",
    ] {
        assert!(
            http::metric(&m, "holdfast_sip_dropped_total", &[("reason", reason)]).is_some(),
            "no holdfast_sip_dropped_total{{reason=\"{reason}\"}}:\n{m}"
        );
    }
    assert_eq!(
        http::metric(
            &m,
            "holdfast_calls_total",
            &[("direction", "unknown"), ("outcome", "refused")]
        ),
        None,
        "dropped requests are not calls"
    );
    // 202 requests, at most one summary line about them.
    let lines = lines_naming(&hf, "127.0.0.2");
    assert!(
        lines.len() <= 1,
        "{} lines:\n{}",
        lines.len(),
        lines.join("\n")
    );
}

#[test]
fn reject_answers_exactly_one_403_per_request_without_100_trying_or_retransmission() {
    let hp = free_port();
    let c = config(hp, "  unknown_sources: reject\n", "\"127.0.0.1/32\"");
    let hf = Holdfast::start(&c.yaml(), hp);
    let s = stranger("127.0.0.3");
    let me = s.local_addr().unwrap();
    let invite = request("INVITE", me, hp, 1, "");
    send(&s, hp, &invite);
    // A source that never ACKs: over 2 s (T1 = 100 ms: a transaction would retransmit
    // its 403 five times by then), exactly one answer.
    let got = received(&s, Duration::from_secs(2));
    assert_eq!(got.len(), 1, "{got:#?}");
    assert!(got[0].starts_with("SIP/2.0 403 "), "{}", got[0]);
    assert!(got[0].contains(";tag="), "a To tag: {}", got[0]);
    // The same request again (a retransmission): one more 403, the same To tag; and an
    // OPTIONS gets its own 403.
    send(&s, hp, &invite);
    send(&s, hp, &request("OPTIONS", me, hp, 2, ""));
    let again = received(&s, Duration::from_secs(2));
    assert_eq!(again.len(), 2, "{again:#?}");
    assert!(
        again.iter().all(|r| r.starts_with("SIP/2.0 403 ")),
        "{again:#?}"
    );
    let to = |r: &str| {
        r.lines()
            .find(|l| l.starts_with("To:"))
            .unwrap_or("")
            .to_string()
    };
    assert!(again.iter().any(|r| to(r) == to(&got[0])), "{again:#?}");
    let m = metrics(&hf);
    assert_eq!(
        http::metric(
            &m,
            "holdfast_sip_rejected_total",
            &[("reason", "unknown_source")]
        ),
        Some(3.0),
        "{m}"
    );
}

#[test]
fn an_answer_options_pinger_gets_200_and_its_neighbour_nothing() {
    let hp = free_port();
    let c = config(
        hp,
        "  answer_options: [\"127.0.0.4/32\"]\n",
        "\"127.0.0.1/32\"",
    );
    let hf = Holdfast::start(&c.yaml(), hp);
    let lb = stranger("127.0.0.4");
    let me = lb.local_addr().unwrap();
    send(&lb, hp, &request("OPTIONS", me, hp, 1, ""));
    let r = first(&lb, WAIT).expect("the pinger got no answer");
    assert!(r.starts_with("SIP/2.0 200 "), "{r}");
    assert!(r.contains("Allow: "), "{r}");
    // Only OPTIONS: its INVITE is an unknown source's.
    send(&lb, hp, &request("INVITE", me, hp, 2, ""));
    let other = stranger("127.0.0.5");
    let them = other.local_addr().unwrap();
    send(&other, hp, &request("OPTIONS", them, hp, 3, ""));
    wait_dropped(&hf, "unknown_source", 2.0);
    assert!(received(&lb, Duration::from_millis(500)).is_empty());
    assert!(received(&other, Duration::from_millis(500)).is_empty());
}

#[test]
fn a_source_over_its_limit_is_dropped_then_blocked_then_unblocked() {
    let hp = free_port();
    let c = config(
        hp,
        "  unknown_sources: reject\n  limits: { per_source: { rate: 2, burst: 3 }, sampling_interval: 2s, block_time: 2s }\n",
        "\"127.0.0.1/32\"",
    );
    let hf = Holdfast::start(&c.yaml(), hp);
    let s = stranger("127.0.0.6");
    let me = s.local_addr().unwrap();
    for n in 0..40 {
        send(&s, hp, &request("INVITE", me, hp, n, ""));
    }
    // The burst is answered; then 4 (rate × sampling interval) are dropped for the rate,
    // which blocks the source; the rest are dropped as blocked.
    let m = wait_dropped(&hf, "blocked", 33.0);
    assert_eq!(
        http::metric(
            &m,
            "holdfast_sip_dropped_total",
            &[("reason", "rate_limited")]
        ),
        Some(4.0),
        "{m}"
    );
    assert_eq!(
        http::metric(&m, "holdfast_sip_sources_blocked", &[]),
        Some(1.0),
        "{m}"
    );
    let got = received(&s, Duration::from_millis(500));
    assert_eq!(got.len(), 3, "{got:#?}");
    let (blocked_at, line) = hf
        .wait_log(WAIT, |l| {
            msg(l) == "source blocked: it sent twice its rate limit"
        })
        .expect("no block logged");
    assert_eq!(field(&line, "source"), "127.0.0.6", "{line}");
    // The block ends after block_time, logged; then the source is served again (its
    // bucket starts empty: the first token comes after 1/rate).
    let (unblocked_at, _) = hf
        .wait_log(WAIT, |l| {
            msg(l) == "source unblocked" && field(l, "source") == "127.0.0.6"
        })
        .expect("never unblocked");
    let blocked_for = unblocked_at - blocked_at;
    assert!(
        blocked_for >= Duration::from_millis(1900) && blocked_for < Duration::from_secs(4),
        "{blocked_for:?}"
    );
    let mut answer = None;
    for n in 100..106 {
        send(&s, hp, &request("INVITE", me, hp, n, ""));
        if let Some(r) = first(&s, Duration::from_millis(700)) {
            answer = Some(r);
            break;
        }
    }
    let answer = answer.expect("no answer after the block ended");
    assert!(answer.starts_with("SIP/2.0 403 "), "{answer}");
    let m = metrics(&hf);
    assert_eq!(
        http::metric(&m, "holdfast_sip_sources_blocked", &[]),
        Some(0.0),
        "{m}"
    );
}

#[test]
fn a_blocked_source_is_logged_once_per_log_interval() {
    let hp = free_port();
    let c = config(
        hp,
        "  unknown_sources: reject\n  limits: { per_source: { rate: 5, burst: 5 }, sampling_interval: 1s, block_time: 1h, log_interval: 1s }\n",
        "\"127.0.0.1/32\"",
    );
    let hf = Holdfast::start(&c.yaml(), hp);
    let s = stranger("127.0.0.7");
    let me = s.local_addr().unwrap();
    // 3.5 s at about 200 requests per second: 700 requests, bounded.
    let start = Instant::now();
    for n in 0..700u32 {
        send(&s, hp, &request("INVITE", me, hp, n, ""));
        let next = start + Duration::from_millis(5) * (n + 1);
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    wait_dropped(&hf, "blocked", 680.0);
    let sent_for = start.elapsed();
    let lines = lines_naming(&hf, "127.0.0.7");
    let blocked = hf.count_logs(|l| {
        msg(l) == "source blocked: it sent twice its rate limit"
            && field(l, "source") == "127.0.0.7"
    });
    let still =
        hf.count_logs(|l| msg(l) == "source still blocked" && field(l, "source") == "127.0.0.7");
    let limited = hf.count_logs(|l| {
        msg(l) == "source over its rate limit: new requests dropped"
            && field(l, "source") == "127.0.0.7"
    });
    assert_eq!(blocked, 1, "{}", lines.join("\n"));
    assert_eq!(limited, 1, "{}", lines.join("\n"));
    // One line per second of flood after the block: 3 (or 2, at the edges).
    let secs = sent_for.as_secs_f64();
    assert!(
        (2..=(secs.ceil() as usize)).contains(&still),
        "{still} 'still blocked' lines in {secs:.1} s:\n{}",
        lines.join("\n")
    );
    assert_eq!(
        lines.len(),
        limited + blocked + still,
        "{}",
        lines.join("\n")
    );
}

#[test]
fn scanner_user_agents_are_dropped_even_from_a_carrier_address() {
    let hp = free_port();
    let c = config(hp, "", "\"127.0.0.8/32\"");
    let hf = Holdfast::start(&c.yaml(), hp);
    let s = stranger("127.0.0.8");
    let me = s.local_addr().unwrap();
    send(
        &s,
        hp,
        &request("INVITE", me, hp, 1, "User-Agent: friendly-scanner\r\n"),
    );
    send(
        &s,
        hp,
        &request("OPTIONS", me, hp, 2, "User-Agent: sipvicious\r\n"),
    );
    // The same address with an ordinary User-Agent is served, and only that.
    send(
        &s,
        hp,
        &request("OPTIONS", me, hp, 3, "User-Agent: Asterisk PBX\r\n"),
    );
    let got = received(&s, Duration::from_millis(1500));
    assert_eq!(got.len(), 1, "{got:#?}");
    assert!(
        got[0].starts_with("SIP/2.0 200 ") && got[0].contains("z9hG4bKguard3"),
        "{}",
        got[0]
    );
    wait_dropped(&hf, "scanner", 2.0);
}

/// The carrier's address sends its real call (SIPp) and a flood of new INVITEs (this test,
/// same IP, another port: the carrier's `sources` is the IP, so both share its bucket).
/// The flood is dropped and the carrier blocked; the call's re-INVITEs and BYE go through.
#[test]
fn a_carrier_flooding_over_its_limit_keeps_its_call_in_progress() {
    let (hp, trunk, agent) = (free_port(), free_port(), free_port());
    let (x, y) = (RtpEndpoint::bind(), RtpEndpoint::bind());
    let mut c = TestConfig::new(hp);
    c.sip = "  limits: { sampling_interval: 2s, block_time: 1h }\n".into();
    c.carriers.push(
        "{ id: carrier-a, uri: \"sip:127.0.0.1:9\", region: us, ping: false, sources: [\"127.0.0.1/32\"], limits: { rate: 5, burst: 5 } }".into(),
    );
    c.providers.push(format!(
        "{{ id: agent-a, kind: sip, uri: \"sip:agent@127.0.0.1:{agent}\", region: us, ping: false }}"
    ));
    c.inbound.push("{ regions: [us], ai: [agent-a] }".into());
    c.media = format!(
        "ports: \"{}\"\n  timeout: 60s\n  ai_timeout: 60s",
        media_ports(8)
    );
    let uas = Sipp::uas_with(
        "agent",
        &sc::uas_media_answer(y.port),
        agent,
        Some(1),
        &["-trace_logs", "-trace_msg"],
    );
    let hf = Holdfast::start(&c.yaml(), hp);
    let uac = Sipp::uac(
        "trunk",
        &sc::uac_hold_unhold(x.port),
        trunk,
        &format!("127.0.0.1:{hp}"),
        "+15551230000",
        1,
        &["-trace_logs", "-trace_msg"],
    );
    let call_id = uac.expect_value("ANSWER_CALLID", WAIT);
    uac.expect_value("CONFIRMED", WAIT);

    let flood = stranger("127.0.0.1");
    let me = flood.local_addr().unwrap();
    // 200 new INVITEs in batches the socket buffer takes whole: 4 tokens, 10 dropped for
    // the rate (5/s × 2 s) block the carrier, the rest are dropped as blocked.
    for batch in 0..10u32 {
        for n in 0..20 {
            send(&flood, hp, &request("INVITE", me, hp, batch * 20 + n, ""));
        }
        let want = f64::from((batch + 1) * 20 - 4);
        let deadline = Instant::now() + WAIT;
        loop {
            let m = metrics(&hf);
            let drops = |r| http::metric(&m, "holdfast_sip_dropped_total", &[("reason", r)]);
            if drops("rate_limited").unwrap_or(0.0) + drops("blocked").unwrap_or(0.0) >= want {
                break;
            }
            assert!(Instant::now() < deadline, "the flood was not dropped:\n{m}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let m = metrics(&hf);
    assert_eq!(
        http::metric(
            &m,
            "holdfast_sip_dropped_total",
            &[("reason", "rate_limited")]
        ),
        Some(10.0),
        "{m}"
    );
    assert_eq!(
        http::metric(&m, "holdfast_sip_sources_blocked", &[]),
        Some(1.0),
        "{m}"
    );
    let (_, line) = hf
        .wait_log(WAIT, |l| {
            msg(l) == "source blocked: it sent twice its rate limit"
        })
        .expect("no block logged");
    assert_eq!(field(&line, "target_id"), "carrier-a", "{line}");
    // At most its 4 remaining tokens got anywhere (the call took the first).
    let answered = received(&flood, Duration::from_millis(300))
        .iter()
        .filter(|r| r.starts_with("SIP/2.0 100 "))
        .count();
    assert!(answered <= 4, "{answered} flood INVITEs were taken");

    // Blocked, yet its call goes on: hold, unhold (re-INVITEs) and BYE.
    uac.poke(&call_id);
    uac.expect_value("HELD", WAIT);
    uac.poke(&call_id);
    uac.expect_value("UNHELD", WAIT);
    uac.poke(&call_id);
    let r = uac.wait(WAIT);
    assert!(
        r.success(),
        "the carrier's call failed (a re-INVITE or the BYE dropped?): {}\n{}\n{}",
        r.output,
        r.errors,
        r.messages
    );
    let a = uas.wait(WAIT);
    assert!(
        a.success(),
        "the agent's side failed (the BYE was not relayed?): {}\n{}",
        a.output,
        a.errors
    );
    drop(x);
}
