//! Resource limits end to end, against the real binary: a relay port another process holds
//! never fails a call and is tried again after its quarantine; running out of descriptors
//! refuses the extra calls with 503 and the true reason, takes no port out of the range,
//! and calls connect again once descriptors are free; the soft RLIMIT_NOFILE is raised to
//! the hard one at start. SIPp signals, test-owned sockets hold ports and carry RTP; every
//! wait has a deadline.
mod common;

use common::http::{get, metric};
use common::scenarios as sc;
use common::*;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(30);
const TRACE: &[&str] = &["-trace_logs", "-trace_msg"];

/// carrier (SIPp UAC on `trunk`) → holdfast on `hp` → agent (SIPp UAS on `agent`), with
/// `media` as the `media:` section's body.
fn config(hp: u16, trunk: u16, agent: u16, media: String) -> TestConfig {
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

fn range_start(ports: &str) -> u16 {
    ports.split_once('-').unwrap().0.parse().unwrap()
}

/// Every `KEY=value` the scenario logged, in order.
fn values(log: &str, key: &str) -> Vec<String> {
    let prefix = format!("{key}=");
    log.lines()
        .filter_map(|l| l.trim().strip_prefix(&prefix).map(str::to_string))
        .collect()
}

/// Waits until the scenario of `sipp` has logged `key` at least `n` times.
fn wait_values(sipp: &Sipp, key: &str, n: usize) -> Vec<String> {
    let deadline = Instant::now() + WAIT;
    loop {
        let v = values(&sipp.scenario_log(), key);
        if v.len() >= n {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{key} logged {} times, not {n}; log:\n{}",
            v.len(),
            sipp.scenario_log()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn metrics(hf: &Holdfast) -> String {
    let r = get(hf.admin_addr(), "/metrics", None);
    assert_eq!(r.status, 200, "{}", r.body);
    r.body
}

fn gauge(text: &str, name: &str) -> f64 {
    metric(text, name, &[]).unwrap_or_else(|| panic!("no {name} in:\n{text}"))
}

/// The carrier talks to holdfast's A port and hears its own packets back from the agent's
/// echo: media flows both ways through the relay.
fn media_flows(carrier: &RtpEndpoint, holdfast_a: SocketAddr, ssrc: u32) {
    let before = carrier.count();
    let talking = carrier.talk(holdfast_a, ssrc, 25, Duration::from_millis(20));
    let got = carrier.wait_count(before + 20, WAIT);
    talking.join().unwrap();
    assert!(got >= before + 20, "{} packets echoed back", got - before);
}

#[test]
fn a_relay_port_another_process_holds_is_skipped_and_used_again_after_its_quarantine() {
    let (hp, trunk, agent) = (free_port(), free_port(), free_port());
    let ports = media_ports(8);
    let lo = range_start(&ports);
    // The first call would get A lo/lo+1 and B lo+2/lo+3: the test holds lo+2.
    let held_port = lo + 2;
    let held = UdpSocket::bind(("127.0.0.1", held_port)).expect("hold a relay port");
    let media = format!(
        "ports: \"{ports}\"\n  timeout: 60s\n  ai_timeout: 60s\n  threads: 1\n  port_quarantine: 1s"
    );
    let c = config(hp, trunk, agent, media);
    let echo = RtpEndpoint::echo();
    let uas = Sipp::uas_with(
        "agent",
        &sc::uas_media_answer(echo.port),
        agent,
        None,
        TRACE,
    );
    let hf = Holdfast::start(&c.yaml(), hp);
    let carrier = RtpEndpoint::bind();

    // The call connects, on other ports, with media both ways.
    let (uac, call_id, holdfast_a) = carrier_media_call(hp, trunk, &carrier, WAIT);
    let offered: Vec<u16> = wait_values(&uas, "OFFER_PORT", 1)
        .iter()
        .map(|p| p.parse().unwrap())
        .collect();
    assert_ne!(holdfast_a.port(), held_port);
    assert_ne!(
        offered[0], held_port,
        "the agent was never offered the held port"
    );
    media_flows(&carrier, holdfast_a, 0x1111);
    let (_, warned) = hf
        .wait_log(WAIT, |l| {
            num(l, "port") == Some(i64::from(held_port))
                && msg(l).contains("in use by another process")
        })
        .unwrap_or_else(|| panic!("no quarantine warning; logs:\n{}", hf.dump_logs()));
    assert!(msg(&warned).contains("tried again"), "{warned}");
    let m = metrics(&hf);
    assert_eq!(gauge(&m, "holdfast_media_ports_quarantined_total"), 1.0);
    assert_eq!(
        metric(
            &m,
            "holdfast_media_bind_failures_total",
            &[("errno", "EADDRINUSE")]
        ),
        Some(1.0)
    );
    carrier_hang_up(uac, &call_id);

    // The other process lets go; after the quarantine the port is back and used again.
    drop(held);
    hf.wait_log(WAIT, |l| {
        msg(l).contains("quarantined relay ports back in the range")
    })
    .unwrap_or_else(|| panic!("the port never came back; logs:\n{}", hf.dump_logs()));
    assert_eq!(
        gauge(&metrics(&hf), "holdfast_media_ports_quarantined"),
        0.0
    );
    let (uac, call_id, holdfast_a) = carrier_media_call(hp, trunk, &carrier, WAIT);
    let offered = wait_values(&uas, "OFFER_PORT", 2);
    assert_eq!(
        offered[1],
        held_port.to_string(),
        "the second call's agent leg is on the port released (next-fit wrapped to it)"
    );
    media_flows(&carrier, holdfast_a, 0x2222);
    carrier_hang_up(uac, &call_id);
}

#[test]
fn out_of_descriptors_refuses_the_extra_calls_with_the_reason_and_keeps_every_port() {
    let (hp, trunk, agent) = (free_port(), free_port(), free_port());
    // 200 ports (50 calls): the descriptor limit, not the range, is what runs out.
    let media = format!(
        "ports: \"{}\"\n  timeout: 60s\n  ai_timeout: 60s\n  threads: 1\n  io: socket",
        media_ports(200)
    );
    let c = config(hp, trunk, agent, media);
    let echo = RtpEndpoint::echo();
    let uas = Sipp::uas("agent", &sc::uas_media_answer(echo.port), agent, None);
    // A limit of 36 descriptors, soft and hard: room for a handful of calls only.
    const NOFILE: u64 = 36;
    let hf = Holdfast::start_with_nofile(&c.yaml(), hp, NOFILE, NOFILE);
    assert_eq!(proc_nofile(hf.pid()), (NOFILE, NOFILE));
    let (_, capacity) = hf
        .wait_log(WAIT, |l| msg(l).starts_with("call capacity"))
        .expect("a call capacity line");
    assert_eq!(
        field(&capacity, "bound_by"),
        "the descriptor limit",
        "{capacity}"
    );
    // What the relays can have: every call takes 4 (RTP and RTCP on each leg).
    let open = proc_open_fds(hf.pid()) as u64;
    let fit = ((NOFILE - open) / 4) as usize;
    assert!((1..=8).contains(&fit), "{open} descriptors open at start");
    let placed = fit + 2;

    let uac = Sipp::uac(
        "trunk",
        &sc::uac_call_or_503(carrier_port()),
        trunk,
        &format!("127.0.0.1:{hp}"),
        "+15551230000",
        placed as u32,
        &["-trace_logs", "-r", "50", "-l", &placed.to_string()],
    );
    let up = wait_values(&uac, "UP", fit);
    let refused = wait_values(&uac, "REFUSED", placed - fit);
    assert_eq!(up.len(), fit, "{up:?} {refused:?}");
    for r in &refused {
        assert!(
            r.contains("media setup failed: out of file descriptors (EMFILE)"),
            "503 Reason: {r}"
        );
    }
    // All of them at once: the calls that fit are still up.
    assert_eq!(values(&uac.scenario_log(), "UP").len(), fit);
    for call_id in &up {
        uac.poke(call_id);
    }
    let r = uac.wait(WAIT);
    assert!(r.success(), "carrier: {}\n{}", r.output, r.errors);
    let deadline = Instant::now() + WAIT;
    while hf.count_logs(|l| msg(l) == "media closed") < fit {
        assert!(
            Instant::now() < deadline,
            "relays not closed:\n{}",
            hf.dump_logs()
        );
        std::thread::sleep(Duration::from_millis(10));
    }

    // No port was taken out of the range for it, and every port is back.
    let m = metrics(&hf);
    assert_eq!(gauge(&m, "holdfast_media_ports_quarantined"), 0.0);
    assert_eq!(gauge(&m, "holdfast_media_ports_quarantined_total"), 0.0);
    assert_eq!(gauge(&m, "holdfast_media_ports_in_use"), 0.0);
    assert_eq!(
        metric(
            &m,
            "holdfast_media_bind_failures_total",
            &[("errno", "EMFILE")]
        ),
        Some((placed - fit) as f64)
    );
    assert_eq!(gauge(&m, "process_max_fds"), NOFILE as f64);

    // Descriptors free again: as many calls as fit connect.
    let uac = Sipp::uac(
        "trunk2",
        &sc::uac_call_or_503(carrier_port()),
        trunk,
        &format!("127.0.0.1:{hp}"),
        "+15551230000",
        fit as u32,
        &["-trace_logs", "-r", "50", "-l", &fit.to_string()],
    );
    let up = wait_values(&uac, "UP", fit);
    assert!(values(&uac.scenario_log(), "REFUSED").is_empty());
    for call_id in &up {
        uac.poke(call_id);
    }
    let r = uac.wait(WAIT);
    assert!(r.success(), "carrier: {}\n{}", r.output, r.errors);
    drop(uas);
}

/// A port the carrier's SDP points at (nothing needs to listen there).
fn carrier_port() -> u16 {
    free_port()
}

#[test]
fn a_soft_descriptor_limit_below_the_hard_one_is_raised_at_start() {
    let own = {
        let mut l = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes a plain struct we own.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) }, 0);
        l.rlim_max
    };
    let hard = own.min(8192);
    let soft = 256.min(hard / 2);
    assert!(soft < hard, "the test's own hard limit {own} is too low");
    let hp = free_port();
    let c = TestConfig::new(hp);
    let hf = Holdfast::start_with_nofile(&c.yaml(), hp, soft, hard);
    assert_eq!(
        proc_nofile(hf.pid()),
        (hard, hard),
        "/proc/{}/limits",
        hf.pid()
    );
    let (_, raised) = hf
        .wait_log(WAIT, |l| {
            msg(l).starts_with("descriptor limit (RLIMIT_NOFILE) raised")
        })
        .unwrap_or_else(|| panic!("no raise logged:\n{}", hf.dump_logs()));
    assert_eq!(num(&raised, "from"), Some(soft as i64), "{raised}");
    assert_eq!(num(&raised, "soft"), Some(hard as i64), "{raised}");
    let (_, cap) = hf
        .wait_log(WAIT, |l| msg(l).starts_with("call capacity"))
        .expect("a call capacity line");
    assert_eq!(num(&cap, "nofile"), Some(hard as i64), "{cap}");
    assert_eq!(num(&cap, "port_range_calls"), Some(16), "{cap}");
    assert_eq!(field(&cap, "bound_by"), "media.ports", "{cap}");
}
