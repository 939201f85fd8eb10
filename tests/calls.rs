//! End-to-end call tests: SIPp as the carrier trunk and as the AI provider, holdfast in the
//! middle, everything over real sockets on 127.0.0.1.
mod common;

use common::scenarios as sc;
use common::*;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(30);

fn carrier(id: &str, port: u16, region: &str, extra: &str) -> String {
    format!("{{ id: {id}, uri: \"sip:127.0.0.1:{port}\", region: {region}{extra} }}")
}

fn provider(id: &str, port: u16, region: &str, extra: &str) -> String {
    format!(
        "{{ id: {id}, kind: sip, uri: \"sip:agent@127.0.0.1:{port}\", region: {region}{extra} }}"
    )
}

/// An AI provider (calling from SIPp port `agent`) routed to `primary` (priority 1, port
/// `p1`) then `secondary` (priority 2, port `p2`), pings off so only failover is at play.
fn primary_and_secondary(hp: u16, agent: u16, p1: u16, p2: u16) -> TestConfig {
    let mut c = TestConfig::new(hp);
    c.carriers
        .push(carrier("primary", p1, "us", ", priority: 1, ping: false"));
    c.carriers
        .push(carrier("secondary", p2, "us", ", priority: 2, ping: false"));
    c.providers.push(provider(
        "agent-a",
        9,
        "us",
        &format!(", ping: false, sources: [\"127.0.0.1:{agent}\"]"),
    ));
    c.outbound
        .push("{ match: { to: \"+1\" }, regions: [us], carriers: [primary, secondary] }".into());
    c
}

fn trying_count(hf: &Holdfast, target: &str) -> usize {
    hf.count_logs(|l| msg(l) == "trying" && field(l, "target_id") == target)
}

/// A carrier trunk (SIPp UAC) calls in; the AI provider (SIPp UAS) answers; the caller hangs up.
#[test]
fn inbound_call_bye_from_caller() {
    let (hp, trunk, agent) = (free_port(), free_port(), free_port());
    let mut c = TestConfig::new(hp);
    c.carriers.push(carrier(
        "carrier-a",
        9,
        "us",
        &format!(", ping: false, sources: [\"127.0.0.1:{trunk}\"]"),
    ));
    c.providers
        .push(provider("agent-a", agent, "us", ", ping: false"));
    c.inbound
        .push("{ match: { to: \"+1\" }, regions: [us], ai: [agent-a] }".into());
    let uas = Sipp::uas("agent", &sc::uas_answer(), agent, Some(1));
    let hf = Holdfast::start(&c.yaml(), hp);
    let uac = Sipp::uac(
        "trunk",
        &sc::uac_call(300),
        trunk,
        &format!("127.0.0.1:{hp}"),
        "+15551230000",
        1,
        &[],
    );
    let r = uac.wait(WAIT);
    assert!(r.success(), "caller failed: {}\n{}", r.output, r.errors);
    let a = uas.wait(WAIT);
    assert!(a.success(), "agent failed: {}\n{}", a.output, a.errors);
    assert!(hf
        .wait_log(WAIT, |l| msg(l).starts_with("call ended: BYE from caller"))
        .is_some());
}

/// The AI side places an outbound call to a carrier; the carrier's side hangs up.
#[test]
fn outbound_call_bye_from_callee() {
    let (hp, agent, carrier_port) = (free_port(), free_port(), free_port());
    let mut c = TestConfig::new(hp);
    c.carriers
        .push(carrier("carrier-a", carrier_port, "us", ", ping: false"));
    c.providers.push(provider(
        "agent-a",
        9,
        "us",
        &format!(", ping: false, sources: [\"127.0.0.1:{agent}\"]"),
    ));
    c.outbound
        .push("{ match: { to: \"+1\" }, regions: [us], carriers: [carrier-a] }".into());
    let uas = Sipp::uas(
        "carrier",
        &sc::uas_answer_then_bye(300),
        carrier_port,
        Some(1),
    );
    let hf = Holdfast::start(&c.yaml(), hp);
    let uac = Sipp::uac(
        "agent",
        &sc::uac_wait_bye(),
        agent,
        &format!("127.0.0.1:{hp}"),
        "+15557654321",
        1,
        &[],
    );
    let r = uac.wait(WAIT);
    assert!(r.success(), "AI side failed: {}\n{}", r.output, r.errors);
    let a = uas.wait(WAIT);
    assert!(a.success(), "carrier failed: {}\n{}", a.output, a.errors);
    assert!(hf
        .wait_log(WAIT, |l| msg(l).starts_with("call ended: BYE from callee"))
        .is_some());
    assert_eq!(trying_count(&hf, "carrier-a"), 1);
}

/// Inbound call where the AI provider hangs up first.
#[test]
fn inbound_call_bye_from_ai_side() {
    let (hp, trunk, agent) = (free_port(), free_port(), free_port());
    let mut c = TestConfig::new(hp);
    c.carriers.push(carrier(
        "carrier-a",
        9,
        "us",
        &format!(", ping: false, sources: [\"127.0.0.1:{trunk}\"]"),
    ));
    c.providers
        .push(provider("agent-a", agent, "us", ", ping: false"));
    c.inbound.push("{ regions: [us], ai: [agent-a] }".into());
    let uas = Sipp::uas("agent", &sc::uas_answer_then_bye(200), agent, Some(1));
    let hf = Holdfast::start(&c.yaml(), hp);
    let uac = Sipp::uac(
        "trunk",
        &sc::uac_wait_bye(),
        trunk,
        &format!("127.0.0.1:{hp}"),
        "+15551230000",
        1,
        &[],
    );
    let r = uac.wait(WAIT);
    assert!(r.success(), "caller failed: {}\n{}", r.output, r.errors);
    assert!(uas.wait(WAIT).success());
    drop(hf);
}

/// The caller cancels while the AI side rings: 200 to the CANCEL, 487 to the INVITE, and the
/// ringing leg is cancelled too.
#[test]
fn cancel_during_ringing() {
    let (hp, trunk, agent) = (free_port(), free_port(), free_port());
    let mut c = TestConfig::new(hp);
    c.carriers.push(carrier(
        "carrier-a",
        9,
        "us",
        &format!(", ping: false, sources: [\"127.0.0.1:{trunk}\"]"),
    ));
    c.providers
        .push(provider("agent-a", agent, "us", ", ping: false"));
    c.inbound.push("{ regions: [us], ai: [agent-a] }".into());
    let uas = Sipp::uas("agent", &sc::uas_ring(), agent, Some(1));
    let hf = Holdfast::start(&c.yaml(), hp);
    let uac = Sipp::uac(
        "trunk",
        &sc::uac_cancel(),
        trunk,
        &format!("127.0.0.1:{hp}"),
        "+15551230000",
        1,
        &[],
    );
    let r = uac.wait(WAIT);
    assert!(r.success(), "caller failed: {}\n{}", r.output, r.errors);
    let a = uas.wait(WAIT);
    assert!(
        a.success(),
        "ringing leg was not cancelled: {}\n{}",
        a.output,
        a.errors
    );
    drop(hf);
}

/// The primary is not listening: the call completes on the secondary, the caller sees no
/// error, and the answer comes within attempt_timeout + 200 ms — in fact at once: the ICMP
/// port unreachable the INVITE draws fails that attempt as a transport error.
#[test]
fn primary_not_listening_fails_over_within_attempt_timeout() {
    let (hp, agent, dead, second) = (free_port(), free_port(), free_port(), free_port());
    let c = primary_and_secondary(hp, agent, dead, second);
    let uas = Sipp::uas("secondary", &sc::uas_answer(), second, Some(1));
    let hf = Holdfast::start(&c.yaml(), hp);
    let uac = Sipp::uac(
        "agent",
        &sc::uac_call(100),
        agent,
        &format!("127.0.0.1:{hp}"),
        "+15557654321",
        1,
        &[],
    );
    let r = uac.wait(WAIT);
    assert!(
        r.success(),
        "caller saw an error: {}\n{}",
        r.output,
        r.errors
    );
    assert!(uas.wait(WAIT).success());
    let rtt = r.rtts_ms();
    assert_eq!(rtt.len(), 1, "one INVITE→200 time expected: {rtt:?}");
    assert!(
        rtt[0] <= 1200.0,
        "INVITE→200 took {} ms (> attempt_timeout + 200 ms)",
        rtt[0]
    );
    assert!(
        hf.find_log(|l| msg(l) == "attempt failed (transport error); failing over")
            .is_some(),
        "the primary's ICMP error failed its attempt: {}",
        hf.dump_logs()
    );
    assert_eq!(trying_count(&hf, "primary"), 1);
    assert_eq!(trying_count(&hf, "secondary"), 1);
}

/// The primary answers 503: the call goes to the secondary.
#[test]
fn primary_503_fails_over_to_secondary() {
    let (hp, agent, p1, p2) = (free_port(), free_port(), free_port(), free_port());
    let c = primary_and_secondary(hp, agent, p1, p2);
    let prim = Sipp::uas(
        "primary",
        &sc::uas_reject(503, "Service Unavailable"),
        p1,
        Some(1),
    );
    let sec = Sipp::uas("secondary", &sc::uas_answer(), p2, Some(1));
    let hf = Holdfast::start(&c.yaml(), hp);
    let uac = Sipp::uac(
        "agent",
        &sc::uac_call(100),
        agent,
        &format!("127.0.0.1:{hp}"),
        "+15557654321",
        1,
        &[],
    );
    let r = uac.wait(WAIT);
    assert!(
        r.success(),
        "caller saw an error: {}\n{}",
        r.output,
        r.errors
    );
    assert!(
        prim.wait(WAIT).success(),
        "primary never got its ACK for the 503"
    );
    assert!(sec.wait(WAIT).success());
    assert_eq!(trying_count(&hf, "secondary"), 1);
}

/// 486 Busy Here belongs to the callee: no failover, and the caller gets the 486.
#[test]
fn busy_is_not_failed_over() {
    let (hp, agent, p1, p2) = (free_port(), free_port(), free_port(), free_port());
    let c = primary_and_secondary(hp, agent, p1, p2);
    let prim = Sipp::uas("primary", &sc::uas_reject(486, "Busy Here"), p1, Some(1));
    let _sec = Sipp::uas("secondary", &sc::uas_answer(), p2, None);
    let hf = Holdfast::start(&c.yaml(), hp);
    let uac = Sipp::uac(
        "agent",
        &sc::uac_expect(486, None),
        agent,
        &format!("127.0.0.1:{hp}"),
        "+15557654321",
        1,
        &[],
    );
    let r = uac.wait(WAIT);
    assert!(
        r.success(),
        "caller did not get 486: {}\n{}",
        r.output,
        r.errors
    );
    assert!(prim.wait(WAIT).success());
    assert_eq!(
        trying_count(&hf, "secondary"),
        0,
        "486 must never fail over"
    );
}

/// Every carrier is down (pings unanswered): the call is refused with 503 and a Reason.
#[test]
fn all_down_is_refused_with_503() {
    let (hp, agent, d1, d2) = (free_port(), free_port(), free_port(), free_port());
    let mut c = TestConfig::new(hp);
    c.health = "ping_interval: 200ms\n  ping_timeout: 200ms\n  down_after: 1\n  up_after: 1\n  all_down: reject".into();
    c.carriers.push(carrier("c1", d1, "us", ""));
    c.carriers.push(carrier("c2", d2, "us", ""));
    c.providers.push(provider(
        "agent-a",
        9,
        "us",
        &format!(", ping: false, sources: [\"127.0.0.1:{agent}\"]"),
    ));
    c.outbound
        .push("{ match: { to: \"+1\" }, regions: [us], carriers: [c1, c2] }".into());
    let hf = Holdfast::start(&c.yaml(), hp);
    for id in ["c1", "c2"] {
        hf.wait_log(WAIT, |l| {
            field(l, "target_id") == id
                && msg(l).starts_with("health:")
                && field(l, "to").contains("Down")
        })
        .unwrap_or_else(|| panic!("{id} never marked down"));
    }
    let uac = Sipp::uac(
        "agent",
        &sc::uac_expect(503, Some("no healthy")),
        agent,
        &format!("127.0.0.1:{hp}"),
        "+15557654321",
        1,
        &[],
    );
    let r = uac.wait(WAIT);
    assert!(
        r.success(),
        "caller did not get 503 with a Reason: {}\n{}",
        r.output,
        r.errors
    );
    assert_eq!(trying_count(&hf, "c1") + trying_count(&hf, "c2"), 0);
}

/// OPTIONS pinger: a silenced carrier is marked down within
/// ping_interval × down_after + ping_timeout, and up again once it answers.
#[test]
fn silenced_carrier_marked_down_then_up() {
    let (hp, p1) = (free_port(), free_port());
    let mut c = TestConfig::new(hp);
    c.health = "ping_interval: 500ms\n  ping_timeout: 300ms\n  down_after: 2\n  up_after: 2".into();
    c.carriers.push(carrier("c1", p1, "us", ""));
    c.outbound.push("{ regions: [us], carriers: [c1] }".into());
    let uas = Sipp::uas("c1", &sc::uas_answer(), p1, None);
    let hf = Holdfast::start(&c.yaml(), hp);
    // Let a few pings succeed first.
    std::thread::sleep(Duration::from_millis(1200));
    assert!(
        hf.find_log(|l| field(l, "to").contains("Down")).is_none(),
        "marked down while answering"
    );
    uas.pause(true);
    let silenced = Instant::now();
    let (down_at, _) = hf
        .wait_log(Duration::from_secs(10), |l| {
            field(l, "target_id") == "c1"
                && msg(l).starts_with("health:")
                && field(l, "to").contains("Down")
        })
        .expect("silenced carrier never marked down");
    let took = down_at.duration_since(silenced);
    let bound = Duration::from_millis(500 * 2 + 300 + 150); // + 150 ms for log delivery
    assert!(took <= bound, "marked down after {took:?}, bound {bound:?}");
    uas.pause(false);
    let resumed = Instant::now();
    let (up_at, _) = hf
        .wait_log(Duration::from_secs(10), |l| {
            field(l, "target_id") == "c1"
                && msg(l).starts_with("health:")
                && field(l, "to").contains("Up")
                && l.to_string().contains("Down")
        })
        .expect("carrier never marked up again");
    assert!(up_at.duration_since(resumed) <= Duration::from_millis(500 * 2 + 300 + 500));
}

/// An EU rule whose EU carriers are all down never touches the US carrier, neither when
/// refusing nor when failing open.
#[test]
fn eu_call_never_fails_over_to_us() {
    for policy in ["reject", "fail_open"] {
        let (hp, agent, eu1, eu2, us) = (
            free_port(),
            free_port(),
            free_port(),
            free_port(),
            free_port(),
        );
        let mut c = TestConfig::new(hp);
        c.health = format!("ping_interval: 200ms\n  ping_timeout: 200ms\n  down_after: 1\n  up_after: 1\n  all_down: {policy}");
        c.carriers.push(carrier("eu-1", eu1, "eu", ""));
        c.carriers.push(carrier("eu-2", eu2, "eu", ""));
        c.carriers.push(carrier("us-1", us, "us", ""));
        c.providers.push(provider(
            "agent-a",
            9,
            "eu",
            &format!(", ping: false, sources: [\"127.0.0.1:{agent}\"]"),
        ));
        c.outbound
            .push("{ match: { to: \"+44\" }, regions: [eu], carriers: [eu-1, eu-2] }".into());
        c.outbound
            .push("{ match: { to: \"+1\" }, regions: [us], carriers: [us-1] }".into());
        let _us = Sipp::uas("us", &sc::uas_answer(), us, None);
        let hf = Holdfast::start(&c.yaml(), hp);
        for id in ["eu-1", "eu-2"] {
            hf.wait_log(WAIT, |l| {
                field(l, "target_id") == id && field(l, "to").contains("Down")
            })
            .unwrap_or_else(|| panic!("{id} never marked down"));
        }
        let uac = Sipp::uac(
            "agent",
            &sc::uac_expect(503, None),
            agent,
            &format!("127.0.0.1:{hp}"),
            "+442071234567",
            1,
            &[],
        );
        let r = uac.wait(WAIT);
        assert!(
            r.success(),
            "[{policy}] caller did not get 503: {}\n{}",
            r.output,
            r.errors
        );
        assert_eq!(
            trying_count(&hf, "us-1"),
            0,
            "[{policy}] an EU call touched a US carrier"
        );
        if policy == "fail_open" {
            assert_eq!(
                trying_count(&hf, "eu-1") + trying_count(&hf, "eu-2"),
                2,
                "fail_open tries the EU carriers anyway"
            );
        }
    }
}

/// A reload that adds a carrier takes effect for new calls, and the call in progress
/// continues to its normal end.
#[test]
fn reload_adds_carrier_without_dropping_calls() {
    let (hp, agent, p1, p2) = (free_port(), free_port(), free_port(), free_port());
    let mut c = TestConfig::new(hp);
    c.carriers.push(carrier("old", p1, "us", ", ping: false"));
    c.providers.push(provider(
        "agent-a",
        9,
        "us",
        ", ping: false, sources: [\"127.0.0.1/32\"]",
    ));
    c.outbound
        .push("{ match: { to: \"+1\" }, regions: [us], carriers: [old] }".into());
    let old = Sipp::uas("old", &sc::uas_answer(), p1, Some(1));
    let hf = Holdfast::start(&c.yaml(), hp);
    let first = Sipp::uac(
        "agent1",
        &sc::uac_call(3000),
        agent,
        &format!("127.0.0.1:{hp}"),
        "+15557654321",
        1,
        &[],
    );
    hf.wait_log(WAIT, |l| msg(l) == "confirmed")
        .expect("first call never confirmed");

    c.carriers.push(carrier("new", p2, "us", ", ping: false"));
    c.outbound = vec!["{ match: { to: \"+1\" }, regions: [us], carriers: [new] }".into()];
    let new = Sipp::uas("new", &sc::uas_answer(), p2, Some(1));
    hf.reload(&c.yaml());
    hf.wait_log(WAIT, |l| msg(l) == "configuration reloaded")
        .expect("reload not applied");
    let second = Sipp::uac(
        "agent2",
        &sc::uac_call(100),
        free_port(),
        &format!("127.0.0.1:{hp}"),
        "+15557654321",
        1,
        &[],
    );
    let r2 = second.wait(WAIT);
    assert!(
        r2.success(),
        "call after reload failed: {}\n{}",
        r2.output,
        r2.errors
    );
    assert!(
        new.wait(WAIT).success(),
        "the new carrier did not get the new call"
    );
    let r1 = first.wait(WAIT);
    assert!(
        r1.success(),
        "the call in progress was disturbed by the reload: {}\n{}",
        r1.output,
        r1.errors
    );
    assert!(old.wait(WAIT).success());
}

/// OPTIONS to holdfast itself from a monitor in `sip.answer_options`: 200 with Allow,
/// Accept, Supported.
#[test]
fn options_to_holdfast_answered() {
    let (hp, mon) = (free_port(), free_port());
    let mut c = TestConfig::new(hp);
    c.sip = "  answer_options: [\"127.0.0.1/32\"]\n".into();
    let _hf = Holdfast::start(&c.yaml(), hp);
    let uac = Sipp::uac(
        "monitor",
        &sc::uac_options(200),
        mon,
        &format!("127.0.0.1:{hp}"),
        "ping",
        1,
        &[],
    );
    let r = uac.wait(WAIT);
    assert!(
        r.success(),
        "OPTIONS not answered as expected: {}\n{}",
        r.output,
        r.errors
    );
}

/// A call over TCP on both legs.
#[test]
fn inbound_call_over_tcp() {
    let (hp, trunk, agent) = (free_port(), free_port(), free_port());
    let mut c = TestConfig::new(hp);
    c.carriers.push(carrier(
        "carrier-a",
        9,
        "us",
        ", ping: false, sources: [\"127.0.0.1/32\"]",
    ));
    c.providers.push(format!("{{ id: agent-a, kind: sip, uri: \"sip:agent@127.0.0.1:{agent};transport=tcp\", region: us, ping: false }}"));
    c.inbound.push("{ regions: [us], ai: [agent-a] }".into());
    let uas = Sipp::spawn_tcp_uas(&sc::uas_answer(), agent);
    let hf = Holdfast::start(&c.yaml(), hp);
    let uac = Sipp::uac(
        "trunk",
        &sc::uac_call(200),
        trunk,
        &format!("127.0.0.1:{hp}"),
        "+15551230000",
        1,
        &["-t", "t1"],
    );
    let r = uac.wait(WAIT);
    assert!(
        r.success(),
        "caller failed over TCP: {}\n{}",
        r.output,
        r.errors
    );
    assert!(uas.wait(WAIT).success());
    drop(hf);
    let _ = trunk;
}

/// SIGTERM drains: OPTIONS and new INVITEs get 503 while the call in progress finishes
/// normally, then holdfast exits 0 by itself.
#[test]
fn sigterm_drains_then_exits() {
    let (hp, agent, p1) = (free_port(), free_port(), free_port());
    let mut c = TestConfig::new(hp);
    c.carriers.push(carrier("c1", p1, "us", ", ping: false"));
    c.providers.push(provider(
        "agent-a",
        9,
        "us",
        ", ping: false, sources: [\"127.0.0.1/32\"]",
    ));
    c.outbound.push("{ regions: [us], carriers: [c1] }".into());
    let uas = Sipp::uas("c1", &sc::uas_answer(), p1, Some(1));
    let mut hf = Holdfast::start(&c.yaml(), hp);
    let call = Sipp::uac(
        "agent",
        &sc::uac_call(2500),
        agent,
        &format!("127.0.0.1:{hp}"),
        "+15557654321",
        1,
        &[],
    );
    hf.wait_log(WAIT, |l| msg(l) == "confirmed")
        .expect("call never confirmed");
    signal(hf.pid(), "TERM");
    hf.wait_log(WAIT, |l| msg(l) == "SIGTERM: draining")
        .expect("no drain");
    let opt = Sipp::uac(
        "monitor",
        &sc::uac_options(503),
        free_port(),
        &format!("127.0.0.1:{hp}"),
        "ping",
        1,
        &[],
    );
    assert!(
        opt.wait(WAIT).success(),
        "OPTIONS while draining must get 503"
    );
    let refused = Sipp::uac(
        "agent2",
        &sc::uac_expect(503, None),
        free_port(),
        &format!("127.0.0.1:{hp}"),
        "+15557654321",
        1,
        &[],
    );
    assert!(
        refused.wait(WAIT).success(),
        "new INVITE while draining must get 503"
    );
    let r = call.wait(WAIT);
    assert!(
        r.success(),
        "the call in progress was cut by the drain: {}\n{}",
        r.output,
        r.errors
    );
    assert!(uas.wait(WAIT).success());
    let status = hf
        .wait_exit(WAIT)
        .expect("holdfast did not exit after draining");
    assert!(status.success(), "holdfast exited with {status}");
}

/// A carrier added by reload is pinged at once, not one ping_interval later: with a 1 h
/// interval, a silent newcomer can only be marked down within seconds if it was pinged at
/// reload time.
#[test]
fn reload_pings_new_targets_at_once() {
    let (hp, silent) = (free_port(), free_port());
    let mut c = TestConfig::new(hp);
    c.health = "ping_interval: 1h\n  ping_timeout: 300ms\n  down_after: 1\n  up_after: 1".into();
    c.carriers.push(carrier("old", 9, "us", ", ping: false"));
    c.outbound.push("{ regions: [us], carriers: [old] }".into());
    let hf = Holdfast::start(&c.yaml(), hp);
    c.carriers.push(carrier("newcomer", silent, "us", ""));
    c.outbound = vec!["{ regions: [us], carriers: [old, newcomer] }".into()];
    hf.reload(&c.yaml());
    let (reloaded, _) = hf
        .wait_log(WAIT, |l| msg(l) == "configuration reloaded")
        .expect("reload not applied");
    let (down, _) = hf
        .wait_log(Duration::from_secs(5), |l| {
            field(l, "target_id") == "newcomer" && field(l, "to").contains("Down")
        })
        .expect("the new carrier was not pinged at reload");
    assert!(down.duration_since(reloaded) < Duration::from_secs(2));
}

/// A reload with a broken file changes nothing and says where the file is wrong.
#[test]
fn bad_reload_keeps_the_running_config() {
    let (hp, agent, p1) = (free_port(), free_port(), free_port());
    let mut c = TestConfig::new(hp);
    c.carriers.push(carrier("c1", p1, "us", ", ping: false"));
    c.providers.push(provider(
        "agent-a",
        9,
        "us",
        ", ping: false, sources: [\"127.0.0.1/32\"]",
    ));
    c.outbound.push("{ regions: [us], carriers: [c1] }".into());
    let uas = Sipp::uas("c1", &sc::uas_answer(), p1, Some(1));
    let hf = Holdfast::start(&c.yaml(), hp);
    hf.reload(
        &c.yaml()
            .replacen("ping: false }", "ping: false, bogus_key: 1 }", 1),
    );
    let (_, line) = hf
        .wait_log(WAIT, |l| msg(l).starts_with("reload refused"))
        .expect("bad reload not reported");
    let text = msg(&line).to_string();
    assert!(
        text.contains("holdfast.yaml:") && text.contains("bogus_key"),
        "{text}"
    );
    let uac = Sipp::uac(
        "agent",
        &sc::uac_call(100),
        agent,
        &format!("127.0.0.1:{hp}"),
        "+15557654321",
        1,
        &[],
    );
    let r = uac.wait(WAIT);
    assert!(
        r.success(),
        "old config no longer routes: {}\n{}",
        r.output,
        r.errors
    );
    assert!(uas.wait(WAIT).success());
}
