//! Mid-call re-route of the AI leg end to end: a SIPp carrier talks (test-owned RTP) through
//! holdfast to a SIPp AI agent whose media is a test-owned echo; the agent then dies mid-call
//! and the call must go on with the second agent. The carrier's SIPp scenario has no room
//! for a BYE or a re-INVITE (either fails it), and the carrier's RTP endpoint must see one
//! continuous stream: one source, one SSRC, sequence numbers +1 across the switch.
mod common;

use common::scenarios as sc;
use common::*;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(30);
const TRACE: &[&str] = &["-trace_logs", "-trace_msg"];

/// carrier (SIPp UAC on `trunk`) → holdfast on `hp` → agent-a on `a1`, agent-b on `a2`.
fn config(hp: u16, trunk: u16, a1: u16, a2: u16) -> TestConfig {
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
    c.media = format!(
        "ports: \"{}\"\n  timeout: 60s\n  ai_timeout: 1s",
        media_ports(8)
    );
    c
}

#[derive(Clone, Copy, Debug)]
enum Death {
    /// The agent's machine is gone: its SIPp killed, its media port closed (ICMP).
    Crash,
    /// The agent's SIPp killed and its media silent, the port still held: its silence is
    /// checked, and the check's OPTIONS finds nobody (ICMP on the SIP port).
    Silence,
}

fn agent_dies_mid_call(death: Death) {
    let (hp, trunk, a1, a2) = (free_port(), free_port(), free_port(), free_port());
    let c = config(hp, trunk, a1, a2);
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

    // The caller talks for 6 s: 300 packets, one every 20 ms.
    let talking = carrier.talk(holdfast_a, 0x1234_5678, 300, Duration::from_millis(20));
    assert!(
        carrier.wait_count(50, WAIT) >= 50,
        "no echo from agent 1 through holdfast; logs:\n{}",
        hf.dump_logs()
    );
    let before = carrier.count();
    signal(agent1.pid(), "KILL");
    match death {
        Death::Crash => drop(echo1),
        Death::Silence => echo1.set_echo(false),
    }
    let killed = Instant::now();

    let (_, rerouted) = hf
        .wait_log(WAIT, |l| msg(l) == "AI leg re-routed")
        .unwrap_or_else(|| panic!("no re-route; logs:\n{}", hf.dump_logs()));
    assert_eq!(field(&rerouted, "from"), "agent-a");
    assert_eq!(field(&rerouted, "to"), "agent-b");
    let trigger = match death {
        Death::Crash => "media_unreachable",
        Death::Silence => "liveness",
    };
    assert_eq!(field(&rerouted, "trigger"), trigger, "{rerouted}");
    let (_, resumed) = hf
        .wait_log(WAIT, |l| msg(l) == "AI audio resumed after re-route")
        .unwrap_or_else(|| panic!("no audio from agent 2; logs:\n{}", hf.dump_logs()));
    let gap = num(&resumed, "gap_ms").expect("gap_ms");
    assert!(gap > 0, "{resumed}");
    let after = carrier.wait_count(before + 40, WAIT);
    assert!(after >= before + 40, "the caller hears agent 2");
    println!(
        "{death:?}: re-routed after {:?}, gap at the carrier {gap} ms",
        killed.elapsed()
    );
    talking.join().unwrap();

    // The caller hangs up; its scenario fails on any BYE or re-INVITE from holdfast.
    carrier_hang_up(uac, &call_id);
    let b = agent2.wait(WAIT);
    assert!(b.success(), "agent 2 failed: {}\n{}", b.output, b.errors);
    assert!(
        b.messages.contains("X-Holdfast-Reroute-Count: 1")
            && b.messages.contains("X-Holdfast-Rerouted-From: agent-a"),
        "agent 2 is told it takes over:\n{}",
        b.messages
    );

    // One continuous stream at the carrier: the echo of agent 1, then of agent 2.
    let seen = carrier.seen();
    let (src, _) = assert_one_stream("holdfast → carrier", &seen);
    assert_eq!(src, holdfast_a);
    let jump = seen
        .windows(2)
        .map(|w| w[1].ts.wrapping_sub(w[0].ts))
        .max()
        .unwrap();
    assert!(
        jump >= 8 * gap as u32 / 2,
        "the timestamp advanced across the gap ({gap} ms): largest step {jump}"
    );
}

#[test]
fn a_crashed_sip_agent_is_replaced_and_the_caller_hears_one_stream() {
    agent_dies_mid_call(Death::Crash);
}

#[test]
fn a_sip_agent_whose_media_port_stays_open_is_replaced_once_its_check_finds_it_gone() {
    agent_dies_mid_call(Death::Silence);
}
