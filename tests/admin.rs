//! The admin HTTP API (README metrics) end to end: bearer-token auth on every route but
//! `/live`, refusal to start an unauthenticated API on a public address, what each route
//! answers while real SIPp calls go through holdfast, and cordon/uncordon/fail/restore
//! steering new calls (and, for `fail`, re-routing live ones) between two SIPp AI agents.
mod common;

use common::http::{self, get, post};
use common::scenarios as sc;
use common::*;
use serde_json::Value;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(30);

fn carrier(id: &str, extra: &str) -> String {
    format!(
        "{{ id: {id}, uri: \"sip:127.0.0.1:9\", region: us, ping: false, sources: [\"127.0.0.1/32\"]{extra} }}"
    )
}

fn provider(id: &str, port: u16, prio: u32, extra: &str) -> String {
    format!(
        "{{ id: {id}, kind: sip, uri: \"sip:agent@127.0.0.1:{port}\", region: us, priority: {prio}{extra} }}"
    )
}

/// carrier-a (any loopback source) → agent-a (priority 1, port `a1`) then agent-b
/// (priority 2, port `a2`). Media timeouts are long: the agents here send no RTP, and a
/// silent AI leg would otherwise be re-routed after `ai_timeout`.
fn two_agents(hp: u16, a1: u16, a2: u16, agent_extra: &str) -> TestConfig {
    let mut c = TestConfig::new(hp);
    c.carriers.push(carrier("carrier-a", ""));
    c.providers.push(provider("agent-a", a1, 1, agent_extra));
    c.providers.push(provider("agent-b", a2, 2, agent_extra));
    c.inbound
        .push("{ regions: [us], ai: [agent-a, agent-b] }".into());
    c.media = format!(
        "ports: \"{}\"\n  timeout: 60s\n  ai_timeout: 60s",
        media_ports(32)
    );
    c
}

/// The CallView whose carrier leg has SIP Call-ID `call_id`, once `GET /calls` lists it.
fn view_of(admin: SocketAddr, token: Option<&str>, call_id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = get(admin, "/calls", token);
        assert_eq!(r.status, 200, "GET /calls: {}", r.body);
        let calls = r.json();
        let list = calls["calls"]
            .as_array()
            .unwrap_or_else(|| panic!("GET /calls has no \"calls\" array: {calls}"));
        if let Some(v) = list
            .iter()
            .find(|v| v["legs"]["carrier"]["call_id"] == call_id)
        {
            return v.clone();
        }
        if Instant::now() > deadline {
            panic!("GET /calls never listed the call with carrier Call-ID {call_id}: {calls}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Polls the CallView of `call_id` until `pred` holds; panics with the last view.
fn wait_view(
    admin: SocketAddr,
    call_id: &str,
    timeout: Duration,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let v = view_of(admin, None, call_id);
        if pred(&v) {
            return v;
        }
        if Instant::now() > deadline {
            panic!("call {call_id} never reached the expected state: {v}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The `/targets` entry of `id`.
fn target(admin: SocketAddr, token: Option<&str>, id: &str) -> Value {
    let r = get(admin, "/targets", token);
    assert_eq!(r.status, 200, "GET /targets: {}", r.body);
    let all = r.json();
    all["targets"]
        .as_array()
        .unwrap_or_else(|| panic!("GET /targets has no \"targets\" array: {all}"))
        .iter()
        .find(|t| t["id"] == id)
        .cloned()
        .unwrap_or_else(|| panic!("GET /targets does not list {id}: {all}"))
}

/// Polls `/targets` until `id`'s entry satisfies `pred`.
fn wait_target(admin: SocketAddr, id: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let t = target(admin, None, id);
        if pred(&t) || Instant::now() > deadline {
            return t;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `POST /targets/{id}/{action}`: must answer 200 with that target's entry.
fn act(admin: SocketAddr, id: &str, action: &str) -> Value {
    let r = post(admin, &format!("/targets/{id}/{action}"), None);
    assert_eq!(r.status, 200, "POST /targets/{id}/{action}: {}", r.body);
    let t = r.json();
    assert_eq!(
        t["id"], id,
        "POST /targets/{id}/{action} answers its entry: {t}"
    );
    t
}

/// A carrier call through holdfast that stays up until [`hang_up`]; returns the SIPp UAC and
/// the Call-ID of its INVITE.
fn call(hp: u16, media: &RtpEndpoint) -> (Sipp, String) {
    let (uac, call_id, _) = carrier_media_call(hp, free_port(), media, WAIT);
    (uac, call_id)
}

/// Waits until `GET /calls` lists no call (every BYE went through).
fn wait_no_calls(admin: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let calls = get(admin, "/calls", None).json();
        if calls["calls"] == serde_json::json!([]) {
            return;
        }
        if Instant::now() > deadline {
            panic!("calls left after every caller hung up: {calls}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn metrics(admin: SocketAddr) -> String {
    let r = get(admin, "/metrics", None);
    assert_eq!(r.status, 200, "GET /metrics: {}", r.body);
    r.body
}

/// Polls `/metrics` until `name{labels}` satisfies `pred`; returns the last scrape.
fn wait_metric(
    admin: SocketAddr,
    name: &str,
    labels: &[(&str, &str)],
    pred: impl Fn(f64) -> bool,
) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = metrics(admin);
        if http::metric(&text, name, labels).is_some_and(&pred) || Instant::now() > deadline {
            return text;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------------------------------
// Auth and start-up refusals.

#[test]
fn every_route_but_live_needs_the_bearer_token() {
    const TOKEN: &str = "t0ken-for-admin-tests";
    const VAR: &str = "HOLDFAST_TEST_ADMIN_TOKEN";
    let (hp, a1, a2) = (free_port(), free_port(), free_port());
    let c = two_agents(hp, a1, a2, ", ping: false");
    let listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let yaml = format!(
        "{}admin:\n  listen: {listen}\n  token_env: {VAR}\n",
        c.yaml()
    );
    let mut hf = Holdfast::start_with_env(&yaml, hp, &[(VAR, TOKEN)]);
    assert_eq!(
        hf.admin,
        Some(listen),
        "the harness reads the test's own section"
    );
    let admin = hf.admin_addr();

    let routes = [
        ("GET", "/ready"),
        ("GET", "/metrics"),
        ("GET", "/calls"),
        ("GET", "/calls/hf-no-such-call"),
        ("GET", "/targets"),
        ("POST", "/targets/agent-a/cordon"),
        ("POST", "/targets/agent-a/uncordon"),
        ("POST", "/targets/agent-a/fail"),
        ("POST", "/targets/agent-a/restore"),
        ("POST", "/reload"),
        ("POST", "/drain"),
    ];
    let wrong = [
        None,
        Some("Bearer wrong-token".to_string()),
        Some(format!("Bearer {TOKEN}x")),
        Some(format!("Bearer {}", &TOKEN[..TOKEN.len() - 1])),
        Some(TOKEN.to_string()),
        Some(format!("Basic {TOKEN}")),
        Some("Bearer ".to_string()),
    ];
    for (method, path) in routes {
        for auth in &wrong {
            let r = http::request(method, admin, path, auth.as_deref(), None);
            assert_eq!(
                r.status, 401,
                "{method} {path} with Authorization {auth:?} must be refused: {}",
                r.body
            );
            assert!(
                !r.body.contains(TOKEN),
                "a 401 must not echo the token: {}",
                r.body
            );
        }
    }
    for auth in wrong
        .iter()
        .map(|a| a.as_deref())
        .chain([Some(http::bearer(TOKEN).as_str())])
    {
        let r = http::request("GET", admin, "/live", auth, None);
        assert_eq!(r.status, 200, "/live with {auth:?}: {}", r.body);
        assert_eq!(r.body.trim(), "ok");
    }
    // None of the refused POSTs did anything: no cordon, no failure, no drain.
    let t = target(admin, Some(TOKEN), "agent-a");
    assert_eq!(t["cordoned"], false, "{t}");
    assert_eq!(t["failed"], false, "{t}");
    assert!(hf.wait_exit(Duration::from_millis(200)).is_none());

    // The right token opens every route.
    let t = Some(TOKEN);
    let r = http::wait_status(admin, "/ready", t, 200, Duration::from_secs(10));
    assert_eq!(r.status, 200, "/ready with the token: {}", r.body);
    assert_eq!(get(admin, "/metrics", t).status, 200);
    assert_eq!(get(admin, "/calls", t).status, 200);
    assert_eq!(get(admin, "/calls/hf-no-such-call", t).status, 404);
    assert_eq!(get(admin, "/targets", t).status, 200);
    for action in ["cordon", "uncordon", "fail", "restore"] {
        let r = post(admin, &format!("/targets/agent-a/{action}"), t);
        assert_eq!(r.status, 200, "{action} with the token: {}", r.body);
    }
    let r = post(admin, "/reload", t);
    assert_eq!(r.status, 200, "reload with the token: {}", r.body);
    assert_eq!(r.json()["reloaded"], true);
    let r = post(admin, "/drain", t);
    assert_eq!(r.status, 202, "drain with the token: {}", r.body);
    let status = hf
        .wait_exit(WAIT)
        .expect("holdfast did not exit after draining with no calls");
    assert!(status.success(), "exit status {status}");
}

/// Runs `holdfast run` on `yaml` (with `env` removed from its environment) and expects it to
/// exit non-zero within a few seconds; returns its stderr.
fn run_refused(yaml: &str, env_remove: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("holdfast.yaml");
    std::fs::write(&path, yaml).unwrap();
    let err_path = dir.path().join("stderr.txt");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_holdfast"));
    cmd.args(["run", "--config"])
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&err_path).unwrap());
    for v in env_remove {
        cmd.env_remove(v);
    }
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "holdfast started on a config it must refuse:\n{yaml}\nstderr:\n{}",
                std::fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let err = std::fs::read_to_string(&err_path).unwrap_or_default();
    assert!(!status.success(), "exit status {status}; stderr:\n{err}");
    err
}

#[test]
fn an_unauthenticated_api_on_a_public_address_is_refused() {
    let hp = free_port();
    let yaml = format!(
        "{}admin:\n  listen: 0.0.0.0:{}\n",
        TestConfig::new(hp).yaml(),
        free_port()
    );
    let err = run_refused(&yaml, &[]);
    assert!(
        err.to_lowercase().contains("admin"),
        "the error must name the admin section: {err}"
    );

    // The same address with a token is fine: the refusal is about the missing token.
    const VAR: &str = "HOLDFAST_TEST_PUBLIC_ADMIN_TOKEN";
    let port = free_port();
    let yaml = format!(
        "{}admin:\n  listen: 0.0.0.0:{port}\n  token_env: {VAR}\n",
        TestConfig::new(hp).yaml()
    );
    let _hf = Holdfast::start_with_env(&yaml, hp, &[(VAR, "public-token")]);
    let live = get(SocketAddr::from(([127, 0, 0, 1], port)), "/live", None);
    assert_eq!(live.status, 200, "{}", live.body);
    let r = get(
        SocketAddr::from(([127, 0, 0, 1], port)),
        "/targets",
        Some("public-token"),
    );
    assert_eq!(r.status, 200, "{}", r.body);
}

#[test]
fn a_token_env_naming_an_unset_variable_is_refused() {
    const VAR: &str = "HOLDFAST_TEST_TOKEN_NOBODY_SET";
    let hp = free_port();
    let yaml = format!(
        "{}admin:\n  listen: 127.0.0.1:{}\n  token_env: {VAR}\n",
        TestConfig::new(hp).yaml(),
        free_port()
    );
    let err = run_refused(&yaml, &[VAR]);
    assert!(
        err.to_lowercase().contains("admin") || err.contains(VAR),
        "the error must name admin.token_env or the variable: {err}"
    );
}

#[test]
fn listen_off_starts_without_an_admin_api() {
    let hp = free_port();
    let yaml = format!("{}admin:\n  listen: \"off\"\n", TestConfig::new(hp).yaml());
    let hf = Holdfast::start(&yaml, hp);
    assert_eq!(hf.admin, None);
    assert_eq!(
        admin_listen("admin: { listen: 127.0.0.1:7001, token_env: X }\n"),
        Some(Some(SocketAddr::from(([127, 0, 0, 1], 7001))))
    );
    assert_eq!(
        admin_listen("sip: {}\nadmin:\n  token_env: X\n"),
        Some(Some(ADMIN_DEFAULT_LISTEN.parse().unwrap()))
    );
    assert_eq!(admin_listen("sip: {}\nadministrator: 1\n"), None);
}

#[test]
fn prometheus_parser_reads_labels_in_any_order() {
    let text = "# TYPE holdfast_calls_active gauge\nholdfast_calls_active 2\n\
                holdfast_calls_total{outcome=\"completed\",direction=\"inbound\"} 1\n\
                holdfast_x{a=\"q\\\"uote,}\"} 3.5 1700000000\n";
    assert_eq!(http::metric(text, "holdfast_calls_active", &[]), Some(2.0));
    let labels = [("direction", "inbound"), ("outcome", "completed")];
    assert_eq!(
        http::metric(text, "holdfast_calls_total", &labels),
        Some(1.0)
    );
    assert_eq!(
        http::metric(text, "holdfast_calls_total", &labels[..1]),
        None
    );
    assert_eq!(
        http::metric(text, "holdfast_x", &[("a", "q\"uote,}")]),
        Some(3.5)
    );
    assert_eq!(
        http::metric_type(text, "holdfast_calls_active"),
        Some("gauge")
    );
}

// ---------------------------------------------------------------------------------------
// What each route answers.

/// /live, /ready, /metrics, /calls, /calls/{id} and /targets around one real call with RTP
/// both ways (the carrier talks, agent-a's media echoes).
#[test]
fn every_route_reports_a_live_call() {
    let (hp, trunk, a1, a2) = (free_port(), free_port(), free_port(), free_port());
    let mut c = two_agents(hp, a1, a2, "");
    // agent-a answers pings (SIPp -aa): /ready waits for a real first round. agent-b is
    // never pinged.
    c.health = "ping_interval: 300ms\n  ping_timeout: 300ms\n  down_after: 1\n  up_after: 1".into();
    c.providers[1] = provider("agent-b", a2, 2, ", ping: false");
    c.top = "node:\n  id: it-1\n".into();
    let carrier = RtpEndpoint::bind();
    let echo = RtpEndpoint::echo();
    // No -m: SIPp counts each OPTIONS it auto-answers as a call.
    let agent = Sipp::uas_with(
        "agent-a",
        &sc::uas_media_answer(echo.port),
        a1,
        None,
        &["-trace_msg"],
    );
    let hf = Holdfast::start(&c.yaml(), hp);
    let admin = hf.admin_addr();

    let live = get(admin, "/live", None);
    assert_eq!((live.status, live.body.trim()), (200, "ok"));
    let ready = http::wait_status(admin, "/ready", None, 200, Duration::from_secs(10));
    assert_eq!(ready.status, 200, "/ready: {}", ready.body);
    assert_eq!(ready.body.trim(), "ready");

    let m = metrics(admin);
    assert_eq!(
        http::metric(&m, "holdfast_calls_active", &[]),
        Some(0.0),
        "{m}"
    );
    assert_eq!(
        http::metric_type(&m, "holdfast_calls_active"),
        Some("gauge")
    );
    assert_eq!(
        http::metric_type(&m, "holdfast_calls_total"),
        Some("counter"),
        "{m}"
    );
    let up = wait_metric(admin, "holdfast_target_up", &[("target", "agent-a")], |v| {
        v == 1.0
    });

    let calls = get(admin, "/calls", None);
    assert_eq!(calls.status, 200);
    assert!(
        calls
            .header("content-type")
            .is_some_and(|t| t.contains("application/json")),
        "{:?}",
        calls.headers
    );
    assert_eq!(calls.json()["calls"], serde_json::json!([]));

    // A call: the carrier talks 2 s of RTP, agent-a echoes it back.
    let (uac, call_id, holdfast_a) = carrier_media_call(hp, trunk, &carrier, WAIT);
    let talking = carrier.talk(holdfast_a, 0x0bad_cafe, 100, Duration::from_millis(20));
    assert!(
        carrier.wait_count(20, WAIT) >= 20,
        "no echo through holdfast"
    );

    let v = view_of(admin, None, &call_id);
    let id = v["id"]
        .as_str()
        .unwrap_or_else(|| panic!("CallView without id: {v}"))
        .to_string();
    assert!(id.starts_with("hf-"), "{v}");
    assert!(id.starts_with("hf-it-1."), "node.id in the call id: {v}");
    assert_eq!(v["direction"], "inbound", "{v}");
    assert_eq!(v["state"], "confirmed", "{v}");
    assert_eq!(v["carrier"], "carrier-a", "{v}");
    assert_eq!(v["ai_provider"], "agent-a", "{v}");
    assert_eq!(v["regions"], serde_json::json!(["us"]), "{v}");
    assert!(
        v["caller"]
            .as_str()
            .is_some_and(|s| s.ends_with("15550001111")),
        "{v}"
    );
    assert!(
        v["callee"]
            .as_str()
            .is_some_and(|s| s.ends_with("15551230000")),
        "{v}"
    );
    assert!(
        v["providers"]
            .as_array()
            .is_some_and(|p| p.iter().any(|p| p == "agent-a")),
        "{v}"
    );
    assert_eq!(
        v["legs"]["carrier"]["remote"],
        format!("127.0.0.1:{trunk}"),
        "{v}"
    );
    assert_eq!(v["legs"]["ai"]["kind"], "sip", "{v}");
    assert_eq!(v["legs"]["ai"]["remote"], format!("127.0.0.1:{a1}"), "{v}");
    let ai_call_id = v["legs"]["ai"]["call_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no AI leg Call-ID: {v}"));
    assert_ne!(
        ai_call_id, call_id,
        "the B2BUA's two legs have two Call-IDs"
    );
    assert_eq!(v["reroutes"], serde_json::json!([]), "{v}");
    let age1 = v["age_ms"]
        .as_f64()
        .unwrap_or_else(|| panic!("no age_ms: {v}"));
    assert!((0.0..30_000.0).contains(&age1), "{v}");

    std::thread::sleep(Duration::from_millis(150));
    let one = get(admin, &format!("/calls/{id}"), None);
    assert_eq!(one.status, 200, "GET /calls/{id}: {}", one.body);
    let one = one.json();
    assert_eq!(one["id"], id.as_str());
    assert_eq!(one["legs"]["carrier"]["call_id"], call_id.as_str());
    let age2 = one["age_ms"].as_f64().unwrap_or(0.0);
    assert!(age2 >= age1 + 100.0, "age_ms grows: {age1} then {age2}");
    let missing = get(admin, "/calls/hf-does-not-exist", None);
    assert_eq!(missing.status, 404, "{}", missing.body);

    let m = metrics(admin);
    assert_eq!(
        http::metric(&m, "holdfast_calls_active", &[]),
        Some(1.0),
        "{m}"
    );

    // /targets: every configured target, with health, breaker and its calls.
    let r = get(admin, "/targets", None);
    assert_eq!(r.status, 200);
    let all = r.json();
    let list = all["targets"].as_array().expect("targets array");
    let mut ids: Vec<&str> = list.iter().filter_map(|t| t["id"].as_str()).collect();
    ids.sort();
    assert_eq!(ids, ["agent-a", "agent-b", "carrier-a"], "{all}");
    for t in list {
        assert!(
            ["up", "down"].contains(&t["health"].as_str().unwrap_or("")),
            "health: {t}"
        );
        assert!(
            ["closed", "open", "half-open"].contains(&t["breaker"].as_str().unwrap_or("")),
            "breaker: {t}"
        );
        assert!(t["active_calls"].is_u64(), "active_calls: {t}");
        assert_eq!(t["cordoned"], false, "{t}");
        assert_eq!(t["failed"], false, "{t}");
        assert_eq!(t["region"], "us", "{t}");
    }
    let kind = |id: &str| list.iter().find(|t| t["id"] == id).unwrap()["kind"].clone();
    assert_eq!(kind("carrier-a"), "carrier");
    assert_eq!(kind("agent-a"), "sip");
    let a = target(admin, None, "agent-a");
    assert_eq!(a["active_calls"], 1, "{a}");
    assert_eq!(a["health"], "up", "{a}");
    assert!(
        a["last_rtt_ms"].as_f64().is_some(),
        "a pinged target has an RTT: {a}"
    );
    assert_eq!(target(admin, None, "agent-b")["active_calls"], 0);

    talking.join().unwrap();
    carrier_hang_up(uac, &call_id);
    let completed = [("direction", "inbound"), ("outcome", "completed")];
    let m = wait_metric(admin, "holdfast_calls_total", &completed, |v| v == 1.0);
    let r = agent.stop();
    assert_eq!(
        (
            r.messages.matches("INVITE sip:").count(),
            r.messages.matches("BYE sip:").count()
        ),
        (1, 1),
        "agent-a got the call and its BYE:\n{}",
        r.messages
    );

    assert_eq!(
        http::metric(&m, "holdfast_calls_total", &completed),
        Some(1.0),
        "{m}"
    );
    let m = wait_metric(admin, "holdfast_calls_active", &[], |v| v == 0.0);
    assert_eq!(http::metric(&m, "holdfast_calls_active", &[]), Some(0.0));
    let rtp = http::metric(&m, "holdfast_rtp_packets_total", &[])
        .unwrap_or_else(|| http::metric_sum(&m, "holdfast_rtp_packets_total"));
    assert!(
        rtp >= 100.0,
        "holdfast forwarded the carrier's 100 packets (and their echo): {rtp}\n{m}"
    );
    assert!(
        http::metric_sum(&m, "holdfast_rtp_bytes_total") > 0.0,
        "{m}"
    );
    assert_eq!(
        http::metric(
            &m,
            "holdfast_attempts_total",
            &[("target", "agent-a"), ("outcome", "answered")]
        ),
        Some(1.0),
        "{m}"
    );
    assert!(
        http::metric(&m, "holdfast_media_ports_capacity", &[]).is_some_and(|v| v >= 32.0),
        "{m}"
    );
    assert_eq!(
        get(admin, "/calls", None).json()["calls"],
        serde_json::json!([])
    );
    // Checked last so a wrong name does not hide the rest.
    assert_eq!(
        http::metric(&up, "holdfast_target_up", &[("target", "agent-a")]),
        Some(1.0),
        "holdfast_target_up{{target=\"agent-a\"}} (README metrics):\n{up}"
    );
}

// ---------------------------------------------------------------------------------------
// Operator actions on targets.

#[test]
fn cordon_steers_new_calls_away_and_spares_live_ones() {
    let (hp, a1, a2) = (free_port(), free_port(), free_port());
    let c = two_agents(hp, a1, a2, ", ping: false");
    let (ra, rb) = (RtpEndpoint::bind(), RtpEndpoint::bind());
    // agent-a takes calls 1 and 3, agent-b call 2: a call beyond that fails its caller.
    let agent_a = Sipp::uas_with(
        "agent-a",
        &sc::uas_media_answer(ra.port),
        a1,
        Some(2),
        &["-trace_msg"],
    );
    let agent_b = Sipp::uas("agent-b", &sc::uas_media_answer(rb.port), a2, Some(1));
    let hf = Holdfast::start(&c.yaml(), hp);
    let admin = hf.admin_addr();
    let media = RtpEndpoint::bind();

    let (uac1, id1) = call(hp, &media);
    assert_eq!(view_of(admin, None, &id1)["ai_provider"], "agent-a");

    let t = act(admin, "agent-a", "cordon");
    assert_eq!(t["cordoned"], true, "{t}");
    assert_eq!(target(admin, None, "agent-a")["cordoned"], true);
    let m = metrics(admin);
    assert_eq!(
        http::metric(&m, "holdfast_target_cordoned", &[("target", "agent-a")]),
        Some(1.0),
        "{m}"
    );

    let (uac2, id2) = call(hp, &media);
    assert_eq!(
        view_of(admin, None, &id2)["ai_provider"],
        "agent-b",
        "a new call avoids the cordoned agent"
    );
    // The call already on agent-a is untouched.
    let v1 = view_of(admin, None, &id1);
    assert_eq!(v1["ai_provider"], "agent-a", "{v1}");
    assert_eq!(v1["state"], "confirmed", "{v1}");
    assert_eq!(v1["reroutes"], serde_json::json!([]), "{v1}");
    assert_eq!(target(admin, None, "agent-a")["active_calls"], 1);

    let t = act(admin, "agent-a", "uncordon");
    assert_eq!(t["cordoned"], false, "{t}");
    let (uac3, id3) = call(hp, &media);
    assert_eq!(
        view_of(admin, None, &id3)["ai_provider"],
        "agent-a",
        "after uncordon agent-a takes new calls again"
    );
    let m = metrics(admin);
    assert_eq!(
        http::metric(&m, "holdfast_target_cordoned", &[("target", "agent-a")]),
        Some(0.0),
        "{m}"
    );

    for action in ["cordon", "uncordon", "fail", "restore"] {
        let r = post(admin, &format!("/targets/no-such-target/{action}"), None);
        assert_eq!(r.status, 404, "{action} of an unknown target: {}", r.body);
        assert!(
            r.json()["error"]
                .as_str()
                .is_some_and(|e| e.contains("unknown target")),
            "{}",
            r.body
        );
    }

    for (uac, id) in [(uac1, id1), (uac2, id2), (uac3, id3)] {
        carrier_hang_up(uac, &id);
    }
    let a = agent_a.wait(WAIT);
    assert!(a.success(), "agent-a: {}\n{}", a.output, a.errors);
    assert!(agent_b.wait(WAIT).success());
    assert_eq!(
        a.messages.matches("BYE sip:").count(),
        2,
        "agent-a got exactly the BYEs of its two calls, both from the caller hanging up:\n{}",
        a.messages
    );
}

#[test]
fn fail_reroutes_live_calls_and_restore_brings_the_target_back() {
    let (hp, a1, a2) = (free_port(), free_port(), free_port());
    let mut c = two_agents(hp, a1, a2, "");
    c.health = "ping_interval: 300ms\n  ping_timeout: 300ms\n  down_after: 1\n  up_after: 1".into();
    let (ra, rb) = (RtpEndpoint::bind(), RtpEndpoint::bind());
    // No -m: SIPp counts each OPTIONS it auto-answers as a call.
    let agent_a = Sipp::uas_with(
        "agent-a",
        &sc::uas_media_answer(ra.port),
        a1,
        None,
        &["-trace_msg"],
    );
    let agent_b = Sipp::uas_with(
        "agent-b",
        &sc::uas_media_answer(rb.port),
        a2,
        None,
        &["-trace_msg"],
    );
    let hf = Holdfast::start(&c.yaml(), hp);
    let admin = hf.admin_addr();
    let ready = http::wait_status(admin, "/ready", None, 200, Duration::from_secs(10));
    assert_eq!(ready.status, 200, "{}", ready.body);
    let media = RtpEndpoint::bind();

    let (uac1, id1) = call(hp, &media);
    assert_eq!(view_of(admin, None, &id1)["ai_provider"], "agent-a");

    let t = act(admin, "agent-a", "fail");
    assert_eq!(t["failed"], true, "{t}");
    assert_eq!(
        t["health"], "down",
        "a failed target is treated as down: {t}"
    );

    // The live call on agent-a moves to agent-b; the carrier leg sees nothing.
    let v1 = wait_view(admin, &id1, Duration::from_secs(10), |v| {
        v["state"] == "confirmed" && v["reroutes"][0]["outcome"].is_string()
    });
    assert_eq!(v1["ai_provider"], "agent-b", "{v1}");
    let rr = &v1["reroutes"][0];
    assert_eq!(rr["trigger"], "health_down", "{v1}");
    assert_eq!(rr["from"], "agent-a", "{v1}");
    assert_eq!(rr["to"], "agent-b", "{v1}");
    assert!(
        rr["outcome"]
            .as_str()
            .is_some_and(|o| o.contains("agent-b")),
        "{v1}"
    );
    assert_eq!(
        v1["legs"]["ai"]["remote"],
        format!("127.0.0.1:{a2}"),
        "{v1}"
    );

    // New calls avoid it, pings answered or not.
    std::thread::sleep(Duration::from_millis(700)); // two ping rounds agent-a answers
    let t = target(admin, None, "agent-a");
    assert_eq!(
        (t["failed"].clone(), t["health"].clone()),
        (true.into(), "down".into()),
        "{t}"
    );
    let (uac2, id2) = call(hp, &media);
    assert_eq!(
        view_of(admin, None, &id2)["ai_provider"],
        "agent-b",
        "a new call avoids the failed agent"
    );
    let m = metrics(admin);
    let up_while_failed = http::metric(&m, "holdfast_target_up", &[("target", "agent-a")]);
    let metrics_while_failed = m.clone();
    assert_eq!(
        http::metric(&m, "holdfast_reroutes_total", &[("trigger", "health_down")]),
        Some(1.0),
        "{m}"
    );

    let t = act(admin, "agent-a", "restore");
    assert_eq!(t["failed"], false, "{t}");
    let t = wait_target(admin, "agent-a", |t| t["health"] == "up");
    assert_eq!(t["health"], "up", "restored and answering pings: {t}");
    let (uac3, id3) = call(hp, &media);
    assert_eq!(
        view_of(admin, None, &id3)["ai_provider"],
        "agent-a",
        "after restore agent-a takes new calls again"
    );
    assert_eq!(target(admin, None, "agent-b")["active_calls"], 2);

    for (uac, id) in [(uac1, id1), (uac2, id2), (uac3, id3)] {
        carrier_hang_up(uac, &id);
    }
    wait_no_calls(admin);
    let a = agent_a.stop();
    assert_eq!(
        a.messages.matches("INVITE sip:").count(),
        2,
        "agent-a got the first and the last call:\n{}",
        a.messages
    );
    let b = agent_b.stop();
    assert_eq!(
        b.messages.matches("INVITE sip:").count(),
        2,
        "agent-b got the re-routed call and the one placed while agent-a was failed:\n{}",
        b.messages
    );
    assert!(
        b.messages.contains("X-Holdfast-Rerouted-From: agent-a"),
        "agent-b is told it takes over:\n{}",
        b.messages
    );
    // Checked last so a wrong name does not hide the rest.
    assert_eq!(
        up_while_failed,
        Some(0.0),
        "holdfast_target_up{{target=\"agent-a\"}} while failed (README metrics):\n{metrics_while_failed}"
    );
}
