//! The guard on a virtual clock: requests built as strings, peeked as the core peeks them,
//! time advanced by hand.
use super::*;
use crate::sip::peek::peek;

fn settings(sip: &str) -> SipSettings {
    let yaml = format!("sip:\n{sip}\n");
    crate::config::parse(&yaml, "t.yaml")
        .unwrap_or_else(|e| panic!("{e}"))
        .sip
}

fn guard(sip: &str) -> Guard {
    Guard::new(&settings(sip))
}

/// Dialogs and client transactions the "core" has.
#[derive(Default)]
struct Ex {
    dialogs: Vec<(&'static str, &'static str)>,
    clients: Vec<(&'static str, &'static str)>,
}

impl Exchanges for Ex {
    fn has_dialog(&self, call_id: &str, local_tag: &str) -> bool {
        self.dialogs.contains(&(call_id, local_tag))
    }
    fn has_client_transaction(&self, branch: &str, method: &str) -> bool {
        self.clients.contains(&(branch, method))
    }
}

fn request(method: &str, call_id: &str, to_tag: Option<&str>, ua: Option<&str>) -> String {
    let tag = to_tag.map(|t| format!(";tag={t}")).unwrap_or_default();
    let ua = ua
        .map(|u| format!("User-Agent: {u}\r\n"))
        .unwrap_or_default();
    format!(
        "{method} sip:+15551230000@hf SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK{call_id}\r\n\
         From: <sip:a@x>;tag=f\r\nTo: <sip:+15551230000@hf>{tag}\r\nCall-ID: {call_id}\r\n\
         CSeq: 1 {method}\r\n{ua}Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
}

fn invite(n: u64) -> String {
    request("INVITE", &format!("c{n}"), None, None)
}

const UNKNOWN: Sender = Sender::Unknown;

fn known(rate: u32, burst: u32) -> Sender {
    Sender::Known {
        by_port: false,
        limit: Some(RateLimit { rate, burst }),
    }
}

fn src(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

struct Clock {
    start: Instant,
    now: Instant,
}

impl Clock {
    fn new() -> Clock {
        let now = Instant::now();
        Clock { start: now, now }
    }
    fn at(&mut self, d: Duration) -> Instant {
        self.now = self.start + d;
        self.now
    }
}

fn send(g: &mut Guard, from: &str, sender: Sender, msg: &str, now: Instant) -> Verdict {
    let p = peek(msg.as_bytes());
    g.handle_message(src(from), sender, p.as_ref(), &Ex::default(), now)
}

fn events(g: &mut Guard) -> Vec<Event> {
    std::iter::from_fn(|| g.poll_event()).collect()
}

#[test]
fn unknown_sources_are_dropped_by_default_without_keeping_state() {
    let mut g = guard("  listen: [\"udp:127.0.0.1:5060\"]");
    let now = Instant::now();
    for (i, m) in ["INVITE", "OPTIONS", "REGISTER", "MESSAGE"]
        .iter()
        .enumerate()
    {
        let r = request(m, &format!("u{i}"), None, None);
        assert_eq!(
            send(&mut g, "203.0.113.9:5060", UNKNOWN, &r, now),
            Verdict::Drop(DropReason::UnknownSource),
            "{m}"
        );
    }
    // Garbage from an unknown source is one more unknown request.
    let p = peek(b"\x16\x03\x01 hello");
    assert_eq!(
        g.handle_message(
            src("203.0.113.9:5060"),
            UNKNOWN,
            p.as_ref(),
            &Ex::default(),
            now
        ),
        Verdict::Drop(DropReason::UnknownSource)
    );
    assert_eq!(g.dropped().get(DropReason::UnknownSource), 5);
    assert_eq!(
        g.tracked_sources(),
        (0, 0),
        "a spoofed flood takes no state"
    );
    assert_eq!(g.rejected(), 0);
}

#[test]
fn reject_answers_within_the_per_source_limit_then_blocks_then_unblocks() {
    let mut g = guard(
        "  unknown_sources: reject\n  limits: { per_source: { rate: 5, burst: 10 }, sampling_interval: 1s, block_time: 30s }",
    );
    let mut clock = Clock::new();
    let now = clock.at(Duration::ZERO);
    let mut verdicts = Vec::new();
    for i in 0..100 {
        verdicts.push(send(&mut g, "203.0.113.9:5060", UNKNOWN, &invite(i), now));
    }
    // The burst is answered (one stateless 403 each), then 5 (= rate × 1 s) are dropped
    // for the rate and the source is blocked.
    assert!(
        verdicts[..10].iter().all(|v| *v == Verdict::Reject),
        "{verdicts:?}"
    );
    assert!(verdicts[10..15]
        .iter()
        .all(|v| *v == Verdict::Drop(DropReason::RateLimited)));
    assert!(verdicts[15..]
        .iter()
        .all(|v| *v == Verdict::Drop(DropReason::Blocked)));
    assert_eq!(g.rejected(), 10);
    assert_eq!(g.blocked_sources(), 1);
    let ev = events(&mut g);
    assert!(
        matches!(
            &ev[..],
            [
                Event::Limited {
                    dropped: 1,
                    known: false,
                    ..
                },
                Event::Blocked { dropped: 4, .. }
            ]
        ),
        "{ev:?}"
    );
    // Another source is not affected.
    assert_eq!(
        send(&mut g, "203.0.113.10:5060", UNKNOWN, &invite(1000), now),
        Verdict::Reject
    );
    // The block ends on time (timer), and the bucket starts empty: the first request
    // right at the end waits for one token.
    assert_eq!(
        g.poll_timeout(),
        Some(clock.start + Duration::from_secs(30))
    );
    let end = clock.at(Duration::from_secs(30));
    g.handle_timeout(end);
    assert_eq!(g.blocked_sources(), 0);
    assert!(
        matches!(&events(&mut g)[..], [Event::Unblocked { dropped: 85, blocked_for, .. }] if *blocked_for == Duration::from_secs(30)),
    );
    assert_eq!(
        send(&mut g, "203.0.113.9:5060", UNKNOWN, &invite(2000), end),
        Verdict::Drop(DropReason::RateLimited)
    );
    let later = clock.at(Duration::from_millis(30_200));
    assert_eq!(
        send(&mut g, "203.0.113.9:5060", UNKNOWN, &invite(2001), later),
        Verdict::Reject
    );
}

#[test]
fn a_block_ends_at_the_next_request_when_its_timer_has_not_fired() {
    let mut g = guard(
        "  unknown_sources: reject\n  limits: { per_source: { rate: 1, burst: 1 }, sampling_interval: 1s, block_time: 5s }",
    );
    let mut clock = Clock::new();
    let t0 = clock.at(Duration::ZERO);
    assert_eq!(
        send(&mut g, "198.51.100.1:5060", UNKNOWN, &invite(0), t0),
        Verdict::Reject
    );
    assert_eq!(
        send(&mut g, "198.51.100.1:5060", UNKNOWN, &invite(1), t0),
        Verdict::Drop(DropReason::RateLimited)
    );
    assert_eq!(
        g.blocked_sources(),
        1,
        "threshold is 1 drop per 1 s window at rate 1"
    );
    let t = clock.at(Duration::from_secs(7));
    assert_eq!(
        send(&mut g, "198.51.100.1:5060", UNKNOWN, &invite(2), t),
        Verdict::Reject
    );
    assert_eq!(g.blocked_sources(), 0);
    g.handle_timeout(t); // the stale timer does nothing
    assert!(
        events(&mut g)
            .iter()
            .filter(|e| matches!(e, Event::Unblocked { .. }))
            .count()
            == 1
    );
}

#[test]
fn answer_options_lets_listed_pingers_options_through_and_nothing_else() {
    let mut g = guard("  answer_options: [\"10.0.0.0/24\", \"192.0.2.7:5060\"]");
    let now = Instant::now();
    let opt = request("OPTIONS", "o1", None, None);
    assert_eq!(
        send(&mut g, "10.0.0.9:6000", UNKNOWN, &opt, now),
        Verdict::Pass
    );
    assert_eq!(
        send(&mut g, "192.0.2.7:5060", UNKNOWN, &opt, now),
        Verdict::Pass
    );
    assert_eq!(
        send(&mut g, "192.0.2.7:5061", UNKNOWN, &opt, now),
        Verdict::Drop(DropReason::UnknownSource)
    );
    assert_eq!(
        send(&mut g, "10.0.0.9:6000", UNKNOWN, &invite(1), now),
        Verdict::Drop(DropReason::UnknownSource)
    );
    // Pingers are limited like any unknown source that gets answers (default 10/s, 20).
    let passed = (0..100)
        .filter(|i| {
            let o = request("OPTIONS", &format!("p{i}"), None, None);
            send(&mut g, "10.0.0.10:6000", UNKNOWN, &o, now) == Verdict::Pass
        })
        .count();
    assert_eq!(passed, 20);
}

#[test]
fn scanners_are_dropped_from_anyone_unless_the_list_is_empty() {
    let mut g = guard("  unknown_sources: reject");
    let now = Instant::now();
    for ua in [
        "friendly-scanner",
        "SIPVicious 0.3",
        "sipcli/v1.8",
        "x VaxSIPUserAgent/3.1",
    ] {
        let r = request("INVITE", "s", None, Some(ua));
        assert_eq!(
            send(&mut g, "203.0.113.5:5060", UNKNOWN, &r, now),
            Verdict::Drop(DropReason::Scanner),
            "{ua}"
        );
        assert_eq!(
            send(&mut g, "192.0.2.1:5060", known(100, 100), &r, now),
            Verdict::Drop(DropReason::Scanner),
            "{ua} from a known address"
        );
    }
    let r = request("INVITE", "s", None, Some("Asterisk PBX 20"));
    assert_eq!(
        send(&mut g, "192.0.2.1:5060", known(100, 100), &r, now),
        Verdict::Pass
    );
    assert_eq!(g.dropped().get(DropReason::Scanner), 8);

    let mut off = guard("  scanners: []\n  unknown_sources: reject");
    let r = request("INVITE", "s", None, Some("friendly-scanner"));
    assert_eq!(
        send(&mut off, "203.0.113.5:5060", UNKNOWN, &r, now),
        Verdict::Reject
    );
    let mut own = guard("  scanners: [\"evil-dialer\"]");
    let r = request("OPTIONS", "s", None, Some("Evil-Dialer 2"));
    assert_eq!(
        send(&mut own, "192.0.2.1:5060", known(100, 100), &r, now),
        Verdict::Drop(DropReason::Scanner)
    );
}

#[test]
fn a_carrier_at_1500_cps_with_bursts_is_never_throttled_by_the_defaults() {
    let cfg = settings("  listen: [\"udp:127.0.0.1:5060\"]");
    let limit = cfg.limits.known_sources;
    let mut g = Guard::new(&cfg);
    let sender = Sender::Known {
        by_port: false,
        limit,
    };
    let mut clock = Clock::new();
    let mut n = 0;
    // 10 s at 1500 calls per second, evenly spread...
    for i in 0..15_000u64 {
        let now = clock.at(Duration::from_micros(i * 1_000_000 / 1500));
        n += 1;
        assert_eq!(
            send(&mut g, "192.0.2.1:5060", sender, &invite(n), now),
            Verdict::Pass
        );
    }
    // ...then 3000 at once after a second of silence (a carrier flushing its queue).
    let now = clock.at(Duration::from_secs(11));
    for _ in 0..3000 {
        n += 1;
        assert_eq!(
            send(&mut g, "192.0.2.1:5060", sender, &invite(n), now),
            Verdict::Pass
        );
    }
    assert_eq!(g.dropped().total(), 0);
}

#[test]
fn a_known_source_over_its_limit_is_shaped_then_blocked_but_its_dialogs_go_on() {
    let mut g = guard("  limits: { sampling_interval: 2s, block_time: 10s }");
    let ex = Ex {
        dialogs: vec![("up-call", "ourtag")],
        clients: vec![],
    };
    let sender = known(100, 100);
    let mut clock = Clock::new();
    let msg = |g: &mut Guard, m: &str, now: Instant| {
        let p = peek(m.as_bytes());
        g.handle_message(src("192.0.2.1:5060"), sender, p.as_ref(), &ex, now)
    };
    // 1.5× its rate for 4 s: shaped (a third dropped), never blocked.
    let mut n = 0;
    let mut dropped = 0;
    for i in 0..600u64 {
        let now = clock.at(Duration::from_micros(i * 1_000_000 / 150));
        n += 1;
        if msg(&mut g, &invite(n), now) != Verdict::Pass {
            dropped += 1;
        }
    }
    // 600 offered, 100 (burst) + 4 s × 100 admitted.
    assert!((95..=105).contains(&dropped), "{dropped} of 600");
    assert_eq!(g.blocked_sources(), 0);
    assert_eq!(g.dropped().get(DropReason::Blocked), 0);
    // Then a flood at 50× its rate: blocked within a fraction of a second.
    let base = Duration::from_secs(5);
    let mut blocked_at = None;
    for i in 0..2500u64 {
        let now = clock.at(base + Duration::from_micros(i * 200));
        n += 1;
        if msg(&mut g, &invite(n), now) == Verdict::Drop(DropReason::Blocked)
            && blocked_at.is_none()
        {
            blocked_at = Some(now - clock.start - base);
        }
    }
    let blocked_at = blocked_at.expect("never blocked");
    assert!(blocked_at < Duration::from_millis(500), "{blocked_at:?}");
    assert_eq!(g.blocked_sources(), 1);
    // While blocked: the established call's BYE and re-INVITE, ACKs and CANCELs pass;
    // a new INVITE does not.
    let now = clock.at(Duration::from_secs(6));
    for m in [
        request("BYE", "up-call", Some("ourtag"), None),
        request("INVITE", "up-call", Some("ourtag"), None),
        request("ACK", "up-call", Some("ourtag"), None),
        request("ACK", "other", Some("theirs"), None),
        request("CANCEL", "pending", None, None),
    ] {
        assert_eq!(msg(&mut g, &m, now), Verdict::Pass, "{m}");
    }
    assert_eq!(
        msg(&mut g, &invite(99_999), now),
        Verdict::Drop(DropReason::Blocked)
    );
    // An in-dialog request of no dialog of ours is counted like a new one.
    assert_eq!(
        msg(&mut g, &request("BYE", "gone", Some("x"), None), now),
        Verdict::Drop(DropReason::Blocked)
    );
    // 10 s after the block: new INVITEs again, at the rate.
    let end = clock.start + base + blocked_at + Duration::from_secs(10);
    g.handle_timeout(end);
    assert_eq!(g.blocked_sources(), 0);
    let after = clock.at(end - clock.start + Duration::from_millis(20));
    assert_eq!(msg(&mut g, &invite(100_000), after), Verdict::Pass);
}

#[test]
fn sources_listed_by_ip_and_port_are_limited_apart() {
    let mut g = guard("  listen: [\"udp:127.0.0.1:5060\"]");
    let by_port = Sender::Known {
        by_port: true,
        limit: Some(RateLimit { rate: 1, burst: 2 }),
    };
    let by_ip = Sender::Known {
        by_port: false,
        limit: Some(RateLimit { rate: 1, burst: 2 }),
    };
    let now = Instant::now();
    let pass = |g: &mut Guard, from: &str, s: Sender, n: u64| {
        (0..n)
            .filter(|i| send(g, from, s, &invite(*i), now) == Verdict::Pass)
            .count()
    };
    assert_eq!(pass(&mut g, "127.0.0.1:5091", by_port, 5), 2);
    assert_eq!(pass(&mut g, "127.0.0.1:5092", by_port, 5), 2);
    // Counted per IP: every port shares one bucket.
    assert_eq!(pass(&mut g, "127.0.0.2:5091", by_ip, 1), 1);
    assert_eq!(pass(&mut g, "127.0.0.2:6000", by_ip, 5), 1);
    // Unlimited targets are not counted at all.
    let free = Sender::Known {
        by_port: false,
        limit: None,
    };
    assert_eq!(pass(&mut g, "127.0.0.3:5060", free, 500), 500);
    assert_eq!(g.tracked_sources().0, 3);
}

#[test]
fn unknown_sources_reach_their_dialogs_and_transactions_and_nothing_else() {
    let mut g = guard("  listen: [\"udp:127.0.0.1:5060\"]");
    let ex = Ex {
        dialogs: vec![("call-b", "hf-b-tag")],
        clients: vec![("z9hG4bKours", "INVITE")],
    };
    let now = Instant::now();
    let agent = src("127.0.0.1:5081");
    let mut check = |m: &str, want: Verdict| {
        let p = peek(m.as_bytes());
        assert_eq!(
            g.handle_message(agent, UNKNOWN, p.as_ref(), &ex, now),
            want,
            "{m}"
        );
    };
    // An AI agent without `sources`: its BYE, ACK and responses are holdfast's business.
    check(
        &request("BYE", "call-b", Some("hf-b-tag"), None),
        Verdict::Pass,
    );
    check(
        &request("ACK", "call-b", Some("hf-b-tag"), None),
        Verdict::Pass,
    );
    let resp = |branch: &str, method: &str| {
        format!("SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch={branch}\r\nCSeq: 1 {method}\r\nContent-Length: 0\r\n\r\n")
    };
    check(&resp("z9hG4bKours", "INVITE"), Verdict::Pass);
    // Everything else is stray.
    check(
        &resp("z9hG4bKours", "BYE"),
        Verdict::Drop(DropReason::Stray),
    );
    check(
        &resp("z9hG4bKtheirs", "INVITE"),
        Verdict::Drop(DropReason::Stray),
    );
    check(
        &request("BYE", "call-b", Some("other"), None),
        Verdict::Drop(DropReason::Stray),
    );
    check(
        &request("ACK", "x", Some("y"), None),
        Verdict::Drop(DropReason::Stray),
    );
    check(
        &request("CANCEL", "x", None, None),
        Verdict::Drop(DropReason::Stray),
    );
    // A response the peek cannot read goes on to the parser.
    check("SIP/2.0 200 OK\r\nCSeq: 1 INVITE\r\n\r\n", Verdict::Pass);
    // A known source's responses are never looked up.
    let theirs = resp("z9hG4bKtheirs", "INVITE");
    let p = peek(theirs.as_bytes()).unwrap();
    assert_eq!(
        g.handle_message(agent, known(1, 1), Some(&p), &ex, now),
        Verdict::Pass
    );
    assert_eq!(g.dropped().get(DropReason::Stray), 5);
}

#[test]
fn a_blocked_source_gets_one_line_per_log_interval_however_much_it_sends() {
    let mut g = guard(
        "  unknown_sources: reject\n  limits: { per_source: { rate: 10, burst: 10 }, sampling_interval: 1s, block_time: 1h, log_interval: 2s }",
    );
    let mut clock = Clock::new();
    // 10 s at 5000 requests per second.
    for i in 0..50_000u64 {
        let now = clock.at(Duration::from_micros(i * 200));
        send(&mut g, "203.0.113.66:5060", UNKNOWN, &invite(i), now);
    }
    let ev = events(&mut g);
    let blocked = ev
        .iter()
        .filter(|e| matches!(e, Event::Blocked { .. }))
        .count();
    let still: Vec<u64> = ev
        .iter()
        .filter_map(|e| match e {
            Event::StillBlocked { dropped, .. } => Some(*dropped),
            _ => None,
        })
        .collect();
    assert_eq!(blocked, 1, "{ev:?}");
    // Blocked a moment after 0 s; then a line at about 2, 4, 6, 8 s.
    assert_eq!(still.len(), 4, "{ev:?}");
    assert!(
        still.iter().all(|d| (9_000..=10_001).contains(d)),
        "{still:?}"
    );
    assert_eq!(g.dropped().total(), 50_000 - 10);
}

#[test]
fn lines_for_many_sources_are_capped_and_the_rest_summarized() {
    let mut g = guard(
        "  unknown_sources: reject\n  limits: { per_source: { rate: 1, burst: 1 }, sampling_interval: 1s, log_interval: 10s }",
    );
    let now = Instant::now();
    // 100 sources each send 3: one answered, one dropped (blocked at once), one blocked.
    for s in 0..100u32 {
        let from = format!("198.18.{}.{}:5060", s / 250, s % 250 + 1);
        for i in 0..3 {
            send(&mut g, &from, UNKNOWN, &invite(u64::from(s * 3 + i)), now);
        }
    }
    assert_eq!(g.blocked_sources(), 100);
    // A first summary goes out with the first suppressed line, then nothing until the
    // interval is over.
    let ev = events(&mut g);
    let per_source = ev
        .iter()
        .filter(|e| !matches!(e, Event::Summary { .. }))
        .count();
    assert_eq!(per_source, MAX_SOURCE_LINES as usize, "{ev:?}");
    let summaries: Vec<&Event> = ev
        .iter()
        .filter(|e| matches!(e, Event::Summary { .. }))
        .collect();
    assert_eq!(summaries.len(), 1, "{ev:?}");
    // The next summary, one interval later, carries what the capped lines did not say.
    let later = now + Duration::from_secs(11);
    let stray = request("ACK", "x", Some("y"), None);
    send(&mut g, "203.0.113.1:5060", UNKNOWN, &stray, later);
    let ev = events(&mut g);
    match ev.last() {
        Some(Event::Summary {
            dropped,
            lines_suppressed,
            ..
        }) => {
            assert_eq!(*lines_suppressed, 100 - MAX_SOURCE_LINES as u64 - 1);
            assert_eq!(dropped.get(DropReason::RateLimited), 79, "{dropped:?}");
        }
        other => panic!("{other:?} in {ev:?}"),
    }
}

#[test]
fn unknown_and_stray_drops_are_summarized_at_most_once_per_log_interval() {
    let mut g = guard("  limits: { log_interval: 60s }");
    let mut clock = Clock::new();
    for i in 0..10_000u64 {
        let now = clock.at(Duration::from_millis(i * 10)); // 100 s
        send(&mut g, "203.0.113.9:5060", UNKNOWN, &invite(i), now);
    }
    let ev = events(&mut g);
    // At once (the first drop), then 60 s later.
    assert_eq!(ev.len(), 2, "{ev:?}");
    match &ev[1] {
        Event::Summary { dropped, last, .. } => {
            assert_eq!(dropped.get(DropReason::UnknownSource), 6000);
            assert_eq!(
                *last,
                Some((src("203.0.113.9:5060"), DropReason::UnknownSource))
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_tables_stay_bounded_and_unknown_churn_cannot_free_a_blocked_carrier() {
    let mut g = guard(
        "  unknown_sources: reject\n  limits: { max_sources: 64, per_source: { rate: 1, burst: 1 }, sampling_interval: 1s }",
    );
    let now = Instant::now();
    let carrier = known(1, 1);
    for i in 0..3 {
        send(&mut g, "192.0.2.1:5060", carrier, &invite(i), now);
    }
    assert_eq!(g.blocked_sources(), 1);
    // Also block a few unknown sources, then churn 20 000 spoofed ones through.
    for s in 0..8u32 {
        for i in 0..3 {
            send(
                &mut g,
                &format!("198.51.100.{}:5060", s + 1),
                UNKNOWN,
                &invite(i),
                now,
            );
        }
    }
    assert_eq!(g.blocked_sources(), 9);
    for s in 0..20_000u32 {
        let ip = std::net::Ipv4Addr::from(0x0a00_0000 + s);
        send(
            &mut g,
            &format!("{ip}:5060"),
            UNKNOWN,
            &invite(u64::from(s)),
            now,
        );
    }
    assert_eq!(g.tracked_sources(), (1, 64));
    assert_eq!(
        send(&mut g, "192.0.2.1:5060", carrier, &invite(7), now),
        Verdict::Drop(DropReason::Blocked),
        "the carrier's state lives in its own table"
    );
    // The sweep keeps blocked unknown sources while it finds others to forget.
    assert_eq!(
        send(&mut g, "198.51.100.3:5060", UNKNOWN, &invite(7), now),
        Verdict::Drop(DropReason::Blocked)
    );
    assert_eq!(g.blocked_sources(), 9);
}

#[test]
fn a_reload_applies_new_limits_and_keeps_blocks() {
    let mut g = guard(
        "  unknown_sources: reject\n  limits: { per_source: { rate: 1, burst: 1 }, sampling_interval: 1s }",
    );
    let now = Instant::now();
    for i in 0..3 {
        send(&mut g, "198.51.100.1:5060", UNKNOWN, &invite(i), now);
    }
    assert_eq!(g.blocked_sources(), 1);
    g.set_settings(&settings("  unknown_sources: drop"));
    assert_eq!(
        send(&mut g, "198.51.100.2:5060", UNKNOWN, &invite(9), now),
        Verdict::Drop(DropReason::UnknownSource)
    );
    g.set_settings(&settings(
        "  unknown_sources: reject\n  limits: { per_source: { rate: 100, burst: 100 } }",
    ));
    assert_eq!(
        send(&mut g, "198.51.100.1:5060", UNKNOWN, &invite(10), now),
        Verdict::Drop(DropReason::Blocked)
    );
    assert_eq!(
        send(&mut g, "198.51.100.3:5060", UNKNOWN, &invite(11), now),
        Verdict::Reject
    );
}
