//! Silence is not death, end to end with the default media timeouts: a SIPp carrier calls
//! through holdfast to SIPp AI agents whose media is a test-owned echo. Agents that fall
//! silent while alive keep their calls (whatever they answer to OPTIONS, or if they never
//! answer), agents that die (at 0.5 s, 3 s, 10 s) are replaced, a caller on hold is never
//! hung up, and a carrier that vanished without a BYE is.
mod common;

use common::scenarios as sc;
use common::*;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(30);
const TRACE: &[&str] = &["-trace_logs", "-trace_msg"];

/// carrier (SIPp UAC on `trunk`) → holdfast on `hp` → agent-a on `a1`, agent-b on `a2`;
/// `media` is the media section's body after the port range (empty: the defaults).
fn config(hp: u16, trunk: u16, a1: u16, a2: u16, media: &str) -> TestConfig {
    let mut c = TestConfig::new(hp);
    c.carriers.push(format!(
        "{{ id: carrier-a, uri: \"sip:127.0.0.1:9\", region: us, ping: false, sources: [\"127.0.0.1:{trunk}\"] }}"
    ));
    for (id, port, prio) in [("agent-a", a1, 1), ("agent-b", a2, 2)] {
        c.providers.push(format!(
            "{{ id: {id}, kind: sip, uri: \"sip:agent@127.0.0.1:{port}\", region: us, priority: {prio}, ping: false }}"
        ));
    }
    c.inbound
        .push("{ regions: [us], ai: [agent-a, agent-b] }".into());
    c.media = format!("ports: \"{}\"{media}", media_ports(8));
    c
}

fn metrics(hf: &Holdfast) -> String {
    let r = http::get(hf.admin_addr(), "/metrics", None);
    assert_eq!(r.status, 200, "GET /metrics: {}", r.body);
    r.body
}

fn checks(hf: &Holdfast, leg: &str, result: &str) -> f64 {
    http::metric(
        &metrics(hf),
        "holdfast_liveness_checks_total",
        &[("leg", leg), ("result", result)],
    )
    .unwrap_or(0.0)
}

/// How agent-a answers an OPTIONS outside its call.
#[derive(Clone, Copy, Debug)]
enum Options {
    /// 200 (SIPp's `-aa`).
    Ok,
    /// This status from its scenario.
    Status(u16, &'static str),
    /// Never (no `-aa`).
    Never,
}

/// What agent-a's media does once the call is up.
#[derive(Clone, Copy, Debug)]
enum Media {
    /// Echoes the caller for this long, then falls silent (still listening).
    EchoFor(Duration),
    /// Echoes the caller the whole time.
    Echo,
}

/// The caller talks for `hold` to agent-a, which answers OPTIONS as `options` and sends
/// RTP as `media`: the call must stay with agent-a, untouched, and end with the caller's
/// BYE. Returns holdfast so the caller can check its metrics.
fn alive_agent_keeps_its_call(options: Options, media: Media, hold: Duration) -> Holdfast {
    let (hp, trunk, a1, a2) = (free_port(), free_port(), free_port(), free_port());
    let c = config(hp, trunk, a1, a2, "");
    let carrier = RtpEndpoint::bind();
    let echo = RtpEndpoint::echo();
    let scenario = match options {
        // -aa answers what its scenario does not expect: an OPTIONS outside the call.
        Options::Ok => sc::uas_media_answer(echo.port),
        Options::Never => sc::uas_media_answer_options(echo.port, None),
        Options::Status(code, reason) => {
            sc::uas_media_answer_options(echo.port, Some((code, reason)))
        }
    };
    let agent = match options {
        Options::Ok => Sipp::uas_with("agent1", &scenario, a1, None, TRACE),
        _ => Sipp::uas_silent("agent1", &scenario, a1, TRACE),
    };
    let backup = Sipp::uas_with("agent2", &sc::uas_media_answer(9), a2, None, TRACE);
    let hf = Holdfast::start(&c.yaml(), hp);
    let (uac, call_id, holdfast_a) = carrier_media_call(hp, trunk, &carrier, WAIT);
    let packets = (hold.as_millis() / 20) as usize;
    let talking = carrier.talk(holdfast_a, 0x5151_0001, packets, Duration::from_millis(20));
    assert!(
        carrier.wait_count(25, WAIT) >= 25,
        "no echo from agent-a; logs:\n{}",
        hf.dump_logs()
    );
    if let Media::EchoFor(d) = media {
        std::thread::sleep(d.saturating_sub(Duration::from_millis(500)));
        echo.set_echo(false);
    }
    talking.join().unwrap();
    let moved = hf.find_log(|l| {
        let m = msg(l);
        m.starts_with("AI leg failed") || m.starts_with("AI leg at risk") || m.starts_with("ending")
    });
    assert!(
        moved.is_none(),
        "{options:?}/{media:?}: holdfast moved or ended a live call: {moved:?}\n{}",
        hf.dump_logs()
    );
    carrier_hang_up(uac, &call_id);
    let a = agent.stop();
    assert!(
        a.messages.contains("BYE sip:"),
        "agent-a kept the call to its end:\n{}",
        a.messages
    );
    let b = backup.stop();
    assert!(
        !b.messages.contains("INVITE sip:"),
        "agent-b was never called:\n{}",
        b.messages
    );
    hf
}

#[test]
fn an_agent_that_stops_sending_while_alive_keeps_its_call() {
    let hf = alive_agent_keeps_its_call(
        Options::Ok,
        Media::EchoFor(Duration::from_secs(2)),
        Duration::from_secs(15),
    );
    // Silent for 13 s with a 5 s ai_timeout: checked twice, alive both times.
    assert!(checks(&hf, "ai", "alive") >= 2.0, "{}", metrics(&hf));
    assert_eq!(checks(&hf, "ai", "failed"), 0.0);
}

#[test]
fn an_agent_silent_for_20s_that_answers_options_405_keeps_its_call() {
    let hf = alive_agent_keeps_its_call(
        Options::Status(405, "Method Not Allowed"),
        Media::EchoFor(Duration::from_millis(600)),
        Duration::from_secs(21),
    );
    assert!(checks(&hf, "ai", "alive") >= 3.0, "{}", metrics(&hf));
}

#[test]
fn an_agent_that_answers_options_501_keeps_its_call() {
    let hf = alive_agent_keeps_its_call(
        Options::Status(501, "Not Implemented"),
        Media::EchoFor(Duration::from_secs(1)),
        Duration::from_secs(14),
    );
    assert!(checks(&hf, "ai", "alive") >= 2.0, "{}", metrics(&hf));
}

#[test]
fn an_agent_that_never_answers_options_but_keeps_sending_is_never_disturbed() {
    let hf = alive_agent_keeps_its_call(Options::Never, Media::Echo, Duration::from_secs(12));
    assert_eq!(checks(&hf, "ai", "started"), 0.0, "{}", metrics(&hf));
}

#[test]
fn an_agent_that_never_answers_options_and_falls_silent_keeps_its_call() {
    let hf = alive_agent_keeps_its_call(
        Options::Never,
        Media::EchoFor(Duration::from_secs(1)),
        Duration::from_secs(14),
    );
    // Unanswered, but agent-a never answered an OPTIONS and is not pinged: holdfast cannot
    // tell it gone, says so once, and keeps the call.
    assert!(checks(&hf, "ai", "unconfirmed") >= 2.0, "{}", metrics(&hf));
    assert_eq!(
        hf.count_logs(|l| msg(l).contains("has never answered an OPTIONS")),
        1,
        "{}",
        hf.dump_logs()
    );
}

/// agent-a dies `after` the call is confirmed (SIPp killed, media port closed): the call
/// moves to agent-b at once (ICMP, whenever it comes), the carrier sees one stream and
/// nothing else.
fn agent_dies_after(after: Duration) {
    let (hp, trunk, a1, a2) = (free_port(), free_port(), free_port(), free_port());
    let c = config(hp, trunk, a1, a2, "");
    let carrier = RtpEndpoint::bind();
    let echo1 = RtpEndpoint::echo();
    let echo2 = RtpEndpoint::echo();
    let agent1 = Sipp::uas_with(
        "agent1",
        &sc::uas_media_answer(echo1.port),
        a1,
        Some(1),
        TRACE,
    );
    let agent2 = Sipp::uas_with(
        "agent2",
        &sc::uas_media_answer(echo2.port),
        a2,
        Some(1),
        TRACE,
    );
    let hf = Holdfast::start(&c.yaml(), hp);
    let (uac, call_id, holdfast_a) = carrier_media_call(hp, trunk, &carrier, WAIT);
    let confirmed = Instant::now();
    let packets = ((after + Duration::from_secs(4)).as_millis() / 20) as usize;
    let talking = carrier.talk(holdfast_a, 0x5151_0002, packets, Duration::from_millis(20));
    std::thread::sleep(after.saturating_sub(confirmed.elapsed()));
    let before = carrier.count();
    signal(agent1.pid(), "KILL");
    drop(echo1);
    let (_, rerouted) = hf
        .wait_log(WAIT, |l| msg(l) == "AI leg re-routed")
        .unwrap_or_else(|| panic!("no re-route; logs:\n{}", hf.dump_logs()));
    assert_eq!(
        (field(&rerouted, "from"), field(&rerouted, "to")),
        ("agent-a", "agent-b")
    );
    assert_eq!(
        field(&rerouted, "trigger"),
        "media_unreachable",
        "{rerouted}"
    );
    let after_count = carrier.wait_count(before + 40, WAIT);
    assert!(after_count >= before + 40, "the caller hears agent-b");
    talking.join().unwrap();
    carrier_hang_up(uac, &call_id);
    let b = agent2.wait(WAIT);
    assert!(b.success(), "agent-b failed: {}\n{}", b.output, b.errors);
    let (src, _) = assert_one_stream("holdfast → carrier", &carrier.seen());
    assert_eq!(src, holdfast_a);
}

#[test]
fn an_agent_that_dies_half_a_second_after_answering_is_replaced() {
    agent_dies_after(Duration::from_millis(500));
}

#[test]
fn an_agent_that_dies_3s_after_answering_is_replaced() {
    agent_dies_after(Duration::from_secs(3));
}

#[test]
fn an_agent_that_dies_10s_after_answering_is_replaced() {
    agent_dies_after(Duration::from_secs(10));
}

/// A short carrier timeout so the checks come quickly: the caller's silence (on hold,
/// sendonly with no music) is checked with UPDATEs the carrier answers, and the call stays.
#[test]
fn a_caller_on_hold_and_silent_is_never_hung_up() {
    let (hp, trunk, a1, a2) = (free_port(), free_port(), free_port(), free_port());
    let c = config(hp, trunk, a1, a2, "\n  timeout: 2s");
    let carrier = RtpEndpoint::bind();
    let echo = RtpEndpoint::echo();
    let agent = Sipp::uas_with(
        "agent1",
        &sc::uas_media_answer(echo.port),
        a1,
        Some(1),
        TRACE,
    );
    let _backup = Sipp::uas_with("agent2", &sc::uas_media_answer(9), a2, None, TRACE);
    let hf = Holdfast::start(&c.yaml(), hp);
    let uac = Sipp::uac(
        "trunk",
        &sc::uac_media_call_update(carrier.port, true),
        trunk,
        &format!("127.0.0.1:{hp}"),
        "+15551230000",
        1,
        TRACE,
    );
    let call_id = uac.expect_value("ANSWER_CALLID", WAIT);
    uac.expect_value("HELD", WAIT);
    // Held and silent for 4 × the carrier's timeout.
    std::thread::sleep(Duration::from_secs(8));
    assert!(
        hf.find_log(|l| msg(l).starts_with("ending")).is_none(),
        "{}",
        hf.dump_logs()
    );
    uac.poke(&call_id);
    let r = uac.wait(WAIT);
    assert!(
        r.success(),
        "the caller was disturbed (a BYE or re-INVITE from holdfast?): {}\n{}",
        r.output,
        r.errors
    );
    assert!(
        r.messages.contains("UPDATE sip:"),
        "the carrier's silence was checked with UPDATE:\n{}",
        r.messages
    );
    assert!(checks(&hf, "carrier", "alive") >= 2.0, "{}", metrics(&hf));
    let a = agent.wait(WAIT);
    assert!(a.success(), "agent-a: {}\n{}", a.output, a.errors);
}

/// The carrier vanishes without a BYE (its SIPp killed): its silence is checked, the check
/// fails (ICMP on the UPDATE), and holdfast hangs up the agent with a Reason saying why.
#[test]
fn a_carrier_that_vanished_without_a_bye_is_hung_up_after_its_check_fails() {
    let (hp, trunk, a1, a2) = (free_port(), free_port(), free_port(), free_port());
    let c = config(hp, trunk, a1, a2, "\n  timeout: 2s");
    let carrier = RtpEndpoint::bind();
    let echo = RtpEndpoint::echo();
    let agent = Sipp::uas_with(
        "agent1",
        &sc::uas_media_answer_bye(echo.port, Some("refresh")),
        a1,
        Some(1),
        TRACE,
    );
    let _backup = Sipp::uas_with("agent2", &sc::uas_media_answer(9), a2, None, TRACE);
    let hf = Holdfast::start(&c.yaml(), hp);
    let uac = Sipp::uac(
        "trunk",
        &sc::uac_media_call_update(carrier.port, false),
        trunk,
        &format!("127.0.0.1:{hp}"),
        "+15551230000",
        1,
        TRACE,
    );
    uac.expect_value("CONFIRMED", WAIT);
    signal(uac.pid(), "KILL");
    let (_, ended) = hf
        .wait_log(WAIT, |l| msg(l).starts_with("call ended"))
        .unwrap_or_else(|| panic!("the call was never ended:\n{}", hf.dump_logs()));
    assert!(msg(&ended).contains("refresh"), "{ended}");
    let a = agent.wait(WAIT);
    assert!(
        a.success(),
        "agent-a got its BYE with the Reason: {}\n{}",
        a.output,
        a.errors
    );
    assert_eq!(checks(&hf, "carrier", "started"), 1.0, "{}", metrics(&hf));
}
