//! Operating holdfast (ADMIN_API.md): reload through `POST /reload` and SIGHUP (good files
//! apply to new calls, bad ones are refused with file:line and the field while the old
//! table keeps serving), a reload removing the targets of a live call, drain through
//! `POST /drain` and SIGTERM, and the call records of a failover call and of a mid-call
//! re-route. Real SIPp peers on both sides, real sockets, each test on its own ports.
mod common;

use common::http::{self, get, post};
use common::scenarios as sc;
use common::*;
use serde_json::Value;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(30);

fn carrier(id: &str, sources: &str) -> String {
    format!(
        "{{ id: {id}, uri: \"sip:127.0.0.1:9\", region: us, ping: false, sources: [\"{sources}\"] }}"
    )
}

fn provider(id: &str, port: u16, prio: u32) -> String {
    format!(
        "{{ id: {id}, kind: sip, uri: \"sip:agent@127.0.0.1:{port}\", region: us, priority: {prio}, ping: false }}"
    )
}

/// carrier-a (any loopback source) → the AI providers given, in that order. Media
/// timeouts are long: the agents here send no RTP, and a silent AI leg would otherwise be
/// re-routed after `ai_timeout`.
fn config(hp: u16, agents: &[(&str, u16)]) -> TestConfig {
    let mut c = TestConfig::new(hp);
    c.carriers.push(carrier("carrier-a", "127.0.0.1/32"));
    for (i, (id, port)) in agents.iter().enumerate() {
        c.providers.push(provider(id, *port, i as u32 + 1));
    }
    let ids: Vec<&str> = agents.iter().map(|(id, _)| *id).collect();
    c.inbound
        .push(format!("{{ regions: [us], ai: [{}] }}", ids.join(", ")));
    c.media = format!(
        "ports: \"{}\"\n  timeout: 60s\n  ai_timeout: 60s",
        media_ports(16)
    );
    c
}

/// A short carrier call (answered, 100 ms, BYE from the caller) that must succeed.
fn short_call(hp: u16, what: &str) {
    let uac = Sipp::uac(
        "trunk",
        &sc::uac_call(100),
        free_port(),
        &format!("127.0.0.1:{hp}"),
        "+15551230000",
        1,
        &[],
    );
    let r = uac.wait(WAIT);
    assert!(r.success(), "{what}: {}\n{}", r.output, r.errors);
}

/// The CallView whose carrier leg has SIP Call-ID `call_id`.
fn view_of(admin: SocketAddr, call_id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = get(admin, "/calls", None);
        assert_eq!(r.status, 200, "GET /calls: {}", r.body);
        let all = r.json();
        if let Some(v) = all["calls"].as_array().and_then(|l| {
            l.iter()
                .find(|v| v["legs"]["carrier"]["call_id"] == call_id)
                .cloned()
        }) {
            return v;
        }
        if Instant::now() > deadline {
            panic!("GET /calls never listed the call {call_id}: {all}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The caller hangs up; its scenario fails on any BYE or re-INVITE from holdfast before.
fn hang_up(uac: Sipp, call_id: &str) {
    uac.poke(call_id);
    let r = uac.wait(WAIT);
    assert!(
        r.success(),
        "the carrier side of {call_id} failed: {}\n{}\n{}",
        r.output,
        r.errors,
        r.messages
    );
}

/// The 1-based line of the first line of `yaml` containing `needle`.
fn line_of(yaml: &str, needle: &str) -> usize {
    yaml.lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("{needle:?} not in:\n{yaml}"))
        + 1
}

// ---------------------------------------------------------------------------------------
// Reload.

#[test]
fn reload_applies_a_good_file_and_refuses_a_bad_one() {
    let (hp, a1, a2) = (free_port(), free_port(), free_port());
    let mut c = config(hp, &[("agent-a", a1)]);
    // agent-a answers the two calls placed under the first table, agent-b the one after the
    // good reload; a call routed anywhere else fails its caller.
    let agent_a = Sipp::uas("agent-a", &sc::uas_answer(), a1, Some(2));
    let agent_b = Sipp::uas("agent-b", &sc::uas_answer(), a2, Some(1));
    let hf = Holdfast::start(&c.yaml(), hp);
    let admin = hf.admin_addr();
    let good = c.yaml();

    // A bad file through the API: 422, file:line, the field; nothing changes.
    let bad = good.replace("attempt_timeout: 1s", "attempt_timeout: lots");
    let line = line_of(&bad, "attempt_timeout: lots");
    hf.write_config(&bad);
    let r = post(admin, "/reload", None);
    assert_eq!(r.status, 422, "a bad file is refused: {}", r.body);
    let err = r.json()["error"]
        .as_str()
        .unwrap_or_else(|| panic!("422 without an error string: {}", r.body))
        .to_string();
    assert!(
        err.contains(&format!("holdfast.yaml:{line}:")) && err.contains("routing.attempt_timeout"),
        "the error names file:line ({line}) and the field: {err}"
    );
    short_call(hp, "the old table after a refused API reload");

    // A bad file through SIGHUP: an error in the log, the old table keeps serving.
    let bad = good.replacen("ping: false }", "ping: false, bogus_key: 1 }", 1);
    let line = line_of(&bad, "bogus_key");
    hf.reload(&bad);
    let needle = format!("holdfast.yaml:{line}:");
    let (_, logged) = hf
        .wait_log(WAIT, |l| {
            l.to_string().contains(&needle) && l.to_string().contains("bogus_key")
        })
        .unwrap_or_else(|| panic!("the refused SIGHUP reload was not logged with {needle}"));
    assert_eq!(
        logged["level"], "ERROR",
        "a refused reload is an error: {logged}"
    );
    short_call(hp, "the old table after a refused SIGHUP reload");

    // A good file through the API: agent-b added and routed to.
    c.providers.push(provider("agent-b", a2, 2));
    c.inbound = vec!["{ regions: [us], ai: [agent-b] }".into()];
    hf.write_config(&c.yaml());
    let r = post(admin, "/reload", None);
    assert_eq!(r.status, 200, "a good file is applied: {}", r.body);
    assert_eq!(r.json()["reloaded"], true, "{}", r.body);
    let t = get(admin, "/targets", None).json();
    assert!(
        t["targets"]
            .as_array()
            .is_some_and(|l| l.iter().any(|t| t["id"] == "agent-b")),
        "/targets lists the new provider: {t}"
    );
    short_call(hp, "a new call after the good reload");

    let a = agent_a.wait(WAIT);
    assert!(a.success(), "agent-a: {}\n{}", a.output, a.errors);
    let b = agent_b.wait(WAIT);
    assert!(
        b.success(),
        "agent-b got the call after the reload: {}\n{}",
        b.output,
        b.errors
    );
}

/// A reload that removes the carrier and the AI provider of a call in progress: the call
/// stays up and ends normally, new calls use the new table.
#[test]
fn reload_removing_the_targets_of_a_live_call_keeps_it_up() {
    let (hp, trunk, a1, a2) = (free_port(), free_port(), free_port(), free_port());
    let mut c = config(hp, &[("agent-a", a1)]);
    c.carriers = vec![carrier("carrier-a", &format!("127.0.0.1:{trunk}"))];
    let (ra, media) = (RtpEndpoint::bind(), RtpEndpoint::bind());
    let agent_a = Sipp::uas("agent-a", &sc::uas_media_answer(ra.port), a1, Some(1));
    let agent_b = Sipp::uas("agent-b", &sc::uas_answer(), a2, Some(1));
    let hf = Holdfast::start(&c.yaml(), hp);
    let admin = hf.admin_addr();
    let (uac, call_id, _) = carrier_media_call(hp, trunk, &media, WAIT);
    assert_eq!(view_of(admin, &call_id)["ai_provider"], "agent-a");

    // New table: carrier-b (every other loopback source) → agent-b only.
    c.carriers = vec![carrier("carrier-b", "127.0.0.1/32")];
    c.providers = vec![provider("agent-b", a2, 1)];
    c.inbound = vec!["{ regions: [us], ai: [agent-b] }".into()];
    hf.write_config(&c.yaml());
    let r = post(admin, "/reload", None);
    assert_eq!(r.status, 200, "{}", r.body);

    let v = view_of(admin, &call_id);
    assert_eq!(
        (v["state"].as_str(), v["ai_provider"].as_str()),
        (Some("confirmed"), Some("agent-a")),
        "the call in progress is untouched: {v}"
    );
    short_call(hp, "a new call after the reload");
    let b = agent_b.wait(WAIT);
    assert!(b.success(), "agent-b: {}\n{}", b.output, b.errors);

    // The old call still ends normally: the caller's BYE gets its 200 and reaches agent-a.
    hang_up(uac, &call_id);
    let a = agent_a.wait(WAIT);
    assert!(
        a.success(),
        "agent-a never got the BYE of its call: {}\n{}",
        a.output,
        a.errors
    );
    let calls = get(admin, "/calls", None).json();
    assert_eq!(calls["calls"], serde_json::json!([]), "{calls}");
}

// ---------------------------------------------------------------------------------------
// Drain.

#[derive(Debug, Clone, Copy)]
enum DrainBy {
    Api,
    Sigterm,
}

fn drain(by: DrainBy) {
    let (hp, a1) = (free_port(), free_port());
    let c = config(hp, &[("agent-a", a1)]);
    let (ra, media) = (RtpEndpoint::bind(), RtpEndpoint::bind());
    let agent = Sipp::uas("agent-a", &sc::uas_media_answer(ra.port), a1, Some(1));
    let mut hf = Holdfast::start(&c.yaml(), hp);
    let admin = hf.admin_addr();
    let ready = http::wait_status(admin, "/ready", None, 200, Duration::from_secs(10));
    assert_eq!(ready.status, 200, "{}", ready.body);
    let (uac, call_id, _) = carrier_media_call(hp, free_port(), &media, WAIT);
    view_of(admin, &call_id);

    match by {
        DrainBy::Api => {
            let r = post(admin, "/drain", None);
            assert_eq!(r.status, 202, "{}", r.body);
            let j = r.json();
            assert_eq!(j["draining"], true, "{j}");
            assert_eq!(j["calls"], 1, "{j}");
        }
        DrainBy::Sigterm => signal(hf.pid(), "TERM"),
    }
    let r = http::wait_status(admin, "/ready", None, 503, Duration::from_secs(5));
    assert_eq!(r.status, 503, "/ready while draining: {}", r.body);
    let m = get(admin, "/metrics", None).body;
    assert_eq!(http::metric(&m, "holdfast_draining", &[]), Some(1.0), "{m}");

    let opt = Sipp::uac(
        "monitor",
        &sc::uac_options(503),
        free_port(),
        &format!("127.0.0.1:{hp}"),
        "ping",
        1,
        &[],
    );
    let r = opt.wait(WAIT);
    assert!(
        r.success(),
        "OPTIONS while draining must get 503: {}",
        r.errors
    );
    let refused = Sipp::uac(
        "trunk2",
        &sc::uac_expect(503, None),
        free_port(),
        &format!("127.0.0.1:{hp}"),
        "+15551230000",
        1,
        &[],
    );
    let r = refused.wait(WAIT);
    assert!(
        r.success(),
        "a new INVITE while draining must get 503: {}",
        r.errors
    );

    // The call in progress is still listed and still works: its BYE goes through.
    assert_eq!(view_of(admin, &call_id)["state"], "confirmed");
    assert!(
        hf.wait_exit(Duration::from_millis(300)).is_none(),
        "exited with a call up"
    );
    hang_up(uac, &call_id);
    let a = agent.wait(WAIT);
    assert!(a.success(), "agent-a: {}\n{}", a.output, a.errors);
    let status = hf
        .wait_exit(WAIT)
        .unwrap_or_else(|| panic!("holdfast did not exit after its last call ({by:?})"));
    assert!(status.success(), "exit status {status} ({by:?})");
}

#[test]
fn drain_through_the_api_finishes_calls_then_exits() {
    drain(DrainBy::Api);
}

#[test]
fn sigterm_drain_is_visible_on_the_admin_api() {
    drain(DrainBy::Sigterm);
}

// ---------------------------------------------------------------------------------------
// Call records.

/// A config writing call records to `<dir>/calls.jsonl`.
fn with_records(yaml: &str, dir: &Path) -> (String, std::path::PathBuf) {
    let path = dir.join("calls.jsonl");
    (
        format!("{yaml}records:\n  path: \"{}\"\n", path.display()),
        path,
    )
}

/// Waits until the records file holds `n` lines and returns them parsed.
fn wait_records(path: &Path, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let complete: Vec<&str> = text
            .split_inclusive('\n')
            .filter(|l| l.ends_with('\n'))
            .collect();
        if complete.len() >= n || Instant::now() > deadline {
            assert_eq!(
                complete.len(),
                n,
                "{} holds {} complete lines, expected {n}:\n{text}",
                path.display(),
                complete.len()
            );
            return complete
                .iter()
                .map(|l| {
                    serde_json::from_str(l.trim())
                        .unwrap_or_else(|e| panic!("a record is not one JSON object ({e}): {l}"))
                })
                .collect();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn media_stats_shape(side: &Value, what: &str) {
    for k in [
        "packets_received",
        "bytes_received",
        "packets_forwarded",
        "bytes_forwarded",
        "packets_lost",
    ] {
        assert!(side[k].is_u64(), "media.{what}.{k}: {side}");
    }
    assert!(
        side["jitter_ms"].is_number(),
        "media.{what}.jitter_ms: {side}"
    );
    for k in [
        "not_rtp",
        "malformed",
        "wrong_source",
        "unexpected_source",
        "learning",
        "no_peer_yet",
        "disabled",
    ] {
        assert!(side["drops"][k].is_u64(), "media.{what}.drops.{k}: {side}");
    }
}

/// agent-a refuses with 503, agent-b answers, the caller hangs up after 500 ms: one record
/// with both attempts, in order, and why the first was left.
#[test]
fn the_record_of_a_failover_call_lists_every_attempt() {
    let (hp, trunk, a1, a2) = (free_port(), free_port(), free_port(), free_port());
    let c = config(hp, &[("agent-a", a1), ("agent-b", a2)]);
    let dir = tempfile::tempdir().unwrap();
    let (yaml, records) = with_records(&c.yaml(), dir.path());
    let agent_a = Sipp::uas(
        "agent-a",
        &sc::uas_reject(503, "Service Unavailable"),
        a1,
        Some(1),
    );
    let agent_b = Sipp::uas("agent-b", &sc::uas_answer(), a2, Some(1));
    let hf = Holdfast::start(&yaml, hp);
    let uac = Sipp::uac(
        "trunk",
        &sc::uac_call(500),
        trunk,
        &format!("127.0.0.1:{hp}"),
        "+15551230000",
        1,
        &[],
    );
    let r = uac.wait(WAIT);
    assert!(r.success(), "caller: {}\n{}", r.output, r.errors);
    assert!(agent_a.wait(WAIT).success());
    assert!(agent_b.wait(WAIT).success());

    let rec = wait_records(&records, 1).remove(0);
    let s = |k: &str| rec[k].as_str().unwrap_or_else(|| panic!("{k}: {rec}"));
    assert!(s("id").starts_with("hf-"), "{rec}");
    assert_eq!(rec["direction"], "inbound", "{rec}");
    assert_eq!(rec["origin"], "carrier-a", "{rec}");
    assert_eq!(rec["carrier"], "carrier-a", "{rec}");
    assert!(s("caller").ends_with("15550001111"), "{rec}");
    assert!(s("callee").ends_with("15551230000"), "{rec}");
    assert_eq!(rec["regions"], serde_json::json!(["us"]), "{rec}");
    assert_eq!(rec["outcome"], "completed", "{rec}");
    assert_eq!(rec["status"], 200, "{rec}");
    for k in ["start", "answered", "end"] {
        assert!(
            s(k).contains('T') && s(k).ends_with('Z'),
            "{k} is an RFC 3339 UTC time: {rec}"
        );
    }
    assert!(
        s("start") <= s("answered") && s("answered") <= s("end"),
        "{rec}"
    );
    let duration = rec["duration_ms"]
        .as_u64()
        .unwrap_or_else(|| panic!("{rec}"));
    assert!(
        (400..5000).contains(&duration),
        "answered → BYE took the caller's 500 ms: {duration} ms"
    );
    assert!(rec["setup_ms"].as_u64().is_some(), "{rec}");
    assert_eq!(rec["hangup"]["by"], "carrier", "{rec}");
    assert!(
        rec["hangup"]["reason"]
            .as_str()
            .is_some_and(|r| !r.is_empty()),
        "{rec}"
    );

    let attempts = rec["attempts"]
        .as_array()
        .unwrap_or_else(|| panic!("{rec}"));
    assert_eq!(attempts.len(), 2, "{rec}");
    assert_eq!(attempts[0]["target"], "agent-a", "{rec}");
    assert_eq!(attempts[0]["remote"], format!("127.0.0.1:{a1}"), "{rec}");
    assert_eq!(attempts[0]["transport"], "udp", "{rec}");
    assert!(
        attempts[0]["outcome"]
            .as_str()
            .is_some_and(|o| o.contains("503")),
        "the first attempt says why it was left: {rec}"
    );
    assert_eq!(attempts[1]["target"], "agent-b", "{rec}");
    assert_eq!(attempts[1]["remote"], format!("127.0.0.1:{a2}"), "{rec}");
    assert_eq!(
        rec["ai_providers"],
        serde_json::json!(["agent-a", "agent-b"]),
        "{rec}"
    );
    assert_eq!(rec["reroutes"], serde_json::json!([]), "{rec}");
    media_stats_shape(&rec["media"]["carrier"], "carrier");
    media_stats_shape(&rec["media"]["ai"], "ai");
    // Checked last so a wording difference does not hide the rest.
    assert_eq!(
        attempts[1]["outcome"], "200 OK",
        "the attempt that took the call: its final response (README call records): {rec}"
    );
    drop(hf);
}

/// agent-a answers, then hangs up mid-call with `Reason: SIP;cause=503`; holdfast re-routes
/// the AI leg to agent-b while the caller talks on. The record has the re-route and the
/// media the caller sent.
#[test]
fn the_record_of_a_rerouted_call_has_the_reroute_and_the_media() {
    let (hp, trunk, a1, a2) = (free_port(), free_port(), free_port(), free_port());
    let c = config(hp, &[("agent-a", a1), ("agent-b", a2)]);
    let dir = tempfile::tempdir().unwrap();
    let (yaml, records) = with_records(&c.yaml(), dir.path());
    // agent-a: answers with its media on an echo, 800 ms later BYE with a failure cause
    // (RFC 3326).
    let carrier_rtp = RtpEndpoint::bind();
    let echo_a = RtpEndpoint::echo();
    let echo_b = RtpEndpoint::echo();
    let bye_503 = sc::uas_answer_then_bye(800)
        .replacen(
            "      Max-Forwards: 70\n",
            "      Max-Forwards: 70\n      Reason: SIP;cause=503;text=\"agent overloaded\"\n",
            1,
        )
        .replace("m=audio [media_port]", &format!("m=audio {}", echo_a.port));
    assert!(
        bye_503.contains("Reason: SIP;cause=503")
            && bye_503.contains(&format!("m=audio {}", echo_a.port)),
        "scenario edit failed"
    );
    let agent_a = Sipp::uas("agent-a", &bye_503, a1, Some(1));
    let agent_b = Sipp::uas("agent-b", &sc::uas_media_answer(echo_b.port), a2, Some(1));
    let hf = Holdfast::start(&yaml, hp);
    let admin = hf.admin_addr();
    let (uac, call_id, holdfast_a) = carrier_media_call(hp, trunk, &carrier_rtp, WAIT);
    // The caller talks for 3 s across the re-route.
    const SENT: usize = 150;
    let talking = carrier_rtp.talk(holdfast_a, 0x5eed_0001, SENT, Duration::from_millis(20));

    let deadline = Instant::now() + Duration::from_secs(10);
    let v = loop {
        let v = view_of(admin, &call_id);
        if v["ai_provider"] == "agent-b" || Instant::now() > deadline {
            break v;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(v["ai_provider"], "agent-b", "never re-routed: {v}");
    assert_eq!(v["reroutes"][0]["trigger"], "bye", "{v}");
    talking.join().unwrap();
    assert!(
        echo_b.wait_count(20, WAIT) >= 20,
        "the caller's audio reaches agent-b after the re-route"
    );
    hang_up(uac, &call_id);
    let a = agent_a.wait(WAIT);
    assert!(
        a.success(),
        "agent-a's BYE was answered: {}\n{}",
        a.output,
        a.errors
    );
    let b = agent_b.wait(WAIT);
    assert!(b.success(), "agent-b: {}\n{}", b.output, b.errors);

    let rec = wait_records(&records, 1).remove(0);
    assert_eq!(rec["outcome"], "completed", "{rec}");
    assert_eq!(rec["hangup"]["by"], "carrier", "{rec}");
    let rr = rec["reroutes"]
        .as_array()
        .unwrap_or_else(|| panic!("{rec}"));
    assert_eq!(rr.len(), 1, "{rec}");
    assert_eq!(rr[0]["trigger"], "bye", "{rec}");
    assert_eq!(rr[0]["from"], "agent-a", "{rec}");
    assert_eq!(rr[0]["to"], "agent-b", "{rec}");
    assert!(
        rr[0]["detail"].as_str().is_some_and(|d| d.contains("503")),
        "{rec}"
    );
    assert!(
        rr[0]["outcome"]
            .as_str()
            .is_some_and(|o| o.contains("agent-b")),
        "{rec}"
    );
    assert!(
        rr[0]["setup_ms"].is_u64() && rr[0]["gap_ms"].is_u64(),
        "{rec}"
    );
    assert_eq!(
        rec["ai_providers"],
        serde_json::json!(["agent-a", "agent-b"]),
        "{rec}"
    );
    let mc = &rec["media"]["carrier"];
    let ma = &rec["media"]["ai"];
    media_stats_shape(mc, "carrier");
    media_stats_shape(ma, "ai");
    let got = mc["packets_received"].as_u64().unwrap_or(0);
    assert!(
        got as usize >= SENT * 9 / 10 && got as usize <= SENT,
        "the carrier sent {SENT} packets: media.carrier = {mc}"
    );
    let bytes = mc["bytes_received"].as_u64().unwrap_or(0);
    assert!(
        (got * 160..=got * 172).contains(&bytes),
        "{got} packets of 160 bytes of audio (+ 12 of header): {mc}"
    );
    assert!(mc["packets_forwarded"].as_u64().unwrap_or(0) > 0, "{mc}");
    assert!(
        ma["packets_received"].as_u64().unwrap_or(0) > 0,
        "agent-b's echo came back: {ma}"
    );
    let m = get(admin, "/metrics", None).body;
    assert_eq!(
        http::metric(&m, "holdfast_reroutes_total", &[("trigger", "bye")]),
        Some(1.0),
        "{m}"
    );
}
