//! `holdfast drill` end to end: the real binary starts holdfast and its peer processes on
//! loopback, places synthetic calls, SIGKILLs a layer and reports. Each drill must finish
//! within its time limit, and leave no child process behind.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Runs a drill with `args`, the report going to `dir/report.md`, killed after `limit`.
fn drill(dir: &Path, args: &[&str], limit: Duration) -> (Output, String, serde_json::Value) {
    let report = dir.join("report.md");
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_holdfast"))
        .arg("drill")
        .args(args)
        .arg("--json")
        .arg("--report")
        .arg(&report)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the drill");
    let read = |r: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut v);
            }
            v
        })
    };
    let stdout = read(child.stdout.take().map(|s| Box::new(s) as _));
    let stderr = read(child.stderr.take().map(|s| Box::new(s) as _));
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for the drill") {
            break s;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the drill took longer than {limit:?}; stderr:\n{}",
                String::from_utf8_lossy(&stderr.join().unwrap())
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = Output {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    };
    assert_no_children_left(&String::from_utf8_lossy(&out.stderr));
    let md = std::fs::read_to_string(&report).unwrap_or_else(|e| {
        panic!(
            "no report at {}: {e}; stderr:\n{}",
            report.display(),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "--json output is not JSON ({e}):\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out, md, json)
}

/// Every PID the drill announced on stderr (`(pid N)`, `(pid a N, b M)`) is gone.
fn assert_no_children_left(stderr: &str) {
    let line = stderr
        .lines()
        .find(|l| l.starts_with("drill: holdfast (pid "))
        .unwrap_or_else(|| panic!("no start line on stderr:\n{stderr}"));
    let pids: Vec<u32> = line
        .split("(pid ")
        .skip(1)
        .flat_map(|s| s.split(')').next().unwrap_or("").split(", "))
        .filter_map(|s| s.rsplit(' ').next().and_then(|n| n.parse().ok()))
        .collect();
    assert_eq!(pids.len(), 7, "holdfast and 6 peers in {line}");
    for pid in pids {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Gone, or (PID reused already) not a holdfast.
        assert!(
            !stat.contains("(holdfast)"),
            "pid {pid} still running: {stat}"
        );
    }
}

/// The calls of a JSON result, with the fields the tests look at.
fn calls(j: &serde_json::Value) -> Vec<(bool, String, String, Option<u64>)> {
    j["calls"]
        .as_array()
        .expect("calls")
        .iter()
        .map(|c| {
            (
                c["survived"].as_bool().unwrap(),
                c["before"].as_str().unwrap().to_string(),
                c["after"].as_str().unwrap().to_string(),
                c["gap_ms"].as_u64(),
            )
        })
        .collect()
}

fn assert_sections(md: &str) {
    for s in ["## Timeline", "## Blast radius", "## Figures", "## Calls"] {
        assert!(md.contains(s), "report lacks {s}:\n{md}");
    }
    assert!(md.contains("failure injected: SIGKILL"), "{md}");
}

fn survivable(layer: &str, before: &str, after: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (out, md, j) = drill(
        dir.path(),
        &["--fail", layer, "--calls", "4", "--hold", "3s"],
        Duration::from_secs(40),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{j:#}\nstderr:\n{stderr}");
    assert_eq!(j["passed"], true);
    assert_eq!(j["summary"]["survived"], 4, "{j:#}");
    let calls = calls(&j);
    assert_eq!(calls.len(), 4);
    for (survived, b, a, gap) in calls {
        assert!(survived);
        assert_eq!((b.as_str(), a.as_str()), (before, after), "{j:#}");
        let gap = gap.expect("a gap for every surviving call");
        assert!(gap > 0 && gap < 2500, "gap {gap} ms: {j:#}");
    }
    assert_sections(&md);
    assert!(md.contains("**PASSED: every call survived**"), "{md}");
    assert!(md.contains(&format!("| {before} | {after} |")), "{md}");
}

#[test]
fn a_sip_agent_killed_mid_call_is_survived() {
    survivable("ai-provider", "agent-a", "agent-b");
}

#[test]
fn a_websocket_bot_killed_mid_call_is_survived() {
    survivable("ai-provider-ws", "bot-a", "bot-b");
}

#[test]
fn a_dead_primary_carrier_is_routed_around() {
    survivable("carrier", "carrier-a", "carrier-b");
}

#[test]
fn killing_the_whole_ai_layer_drops_calls_and_fails_the_drill() {
    let dir = tempfile::tempdir().unwrap();
    let (out, md, j) = drill(
        dir.path(),
        &[
            "--fail",
            "ai-provider",
            "--whole-layer",
            "--calls",
            "3",
            "--hold",
            "3s",
        ],
        Duration::from_secs(40),
    );
    assert_eq!(out.status.code(), Some(1), "{j:#}");
    assert_eq!(j["passed"], false);
    assert_eq!(j["summary"]["dropped"], 3, "{j:#}");
    assert_eq!(j["summary"]["on_failed_dropped"], 3);
    for c in j["calls"].as_array().unwrap() {
        assert_eq!(c["survived"], false);
        assert!(
            c["note"].as_str().unwrap().contains("hung up by holdfast"),
            "{c}"
        );
    }
    assert_sections(&md);
    assert!(
        md.contains("SIGKILL agent-a") && md.contains("SIGKILL agent-b"),
        "{md}"
    );
    assert!(md.contains("**FAILED: calls dropped**"));
    assert!(md.contains("**dropped**"));
}

/// The mixed drill of issue 13: SIP agents, WebSocket bots and outbound calls, callers that
/// talk in turns (2 s talk spurts, 6 s pauses: longer than the default `media.ai_timeout`)
/// and are silent for the last 3 s, agents that only answer while their caller talks, the
/// primary agent, bot and carrier SIGKILLed with some callers talking and others in a pause,
/// holdfast on its default media and liveness settings: every call survives.
#[test]
fn the_mixed_drill_with_quiet_agents_survives_on_the_default_config() {
    let dir = tempfile::tempdir().unwrap();
    let (out, md, j) = drill(
        dir.path(),
        &["--fail", "all", "--quiet-agents", "--calls", "11"],
        Duration::from_secs(90),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{j:#}\nstderr:\n{stderr}");
    assert_eq!(j["passed"], true);
    assert_eq!(j["summary"]["survived"], 11, "{j:#}");
    assert_eq!(j["speech"]["mode"], "turns");
    assert_eq!(j["speech"]["caller_silence_ms"], 3000);
    assert_eq!(j["hold_ms"], 8000);
    let calls = j["calls"].as_array().unwrap();
    let of = |kind: &str| -> Vec<&serde_json::Value> {
        calls.iter().filter(|c| c["kind"] == kind).collect()
    };
    let (sip, ws, outbound) = (of("in/sip"), of("in/ws"), of("out"));
    assert_eq!((sip.len(), ws.len(), outbound.len()), (5, 3, 3), "{j:#}");
    for (kind, before, after) in [
        (&sip, "agent-a", "agent-b"),
        (&ws, "bot-a", "bot-b"),
        (&outbound, "carrier-a", "carrier-b"),
    ] {
        for c in kind.iter() {
            assert_eq!(c["survived"], true, "{c}");
            assert_eq!(
                (c["before"].as_str(), c["after"].as_str()),
                (Some(before), Some(after)),
                "{c}"
            );
            assert_eq!(
                c["heard_between_turns"], 0,
                "an agent talked while its caller was silent: {c}"
            );
            assert!(c["gap_ms"].as_u64().is_some(), "{c}");
        }
    }
    for c in sip.iter().chain(&ws) {
        // Re-routed once, off the killed peer: the pauses (with the new agent as with the
        // old one) moved nothing.
        let note = c["note"].as_str().unwrap();
        assert_eq!(note.matches('→').count(), 1, "{c}");
        assert!(c["gap_ms"].as_u64().unwrap() < 2000, "{c}");
    }
    // The failure found callers of each kind talking and others in a pause.
    for kind in [&sip, &ws] {
        let at: Vec<&str> = kind
            .iter()
            .map(|c| c["at_failure"].as_str().unwrap())
            .collect();
        assert!(
            at.contains(&"talking") && at.contains(&"pause"),
            "{at:?}: {j:#}"
        );
    }
    assert!(j["summary"]["on_failed_pausing"].as_u64().unwrap() >= 2);
    // holdfast found agents silent for media.ai_timeout in the pauses, checked them and kept
    // them: the pauses were long enough to matter.
    let checks = &j["liveness_checks"];
    assert!(checks["alive"].as_u64().unwrap() >= 2, "{checks}");
    assert_eq!(checks["unconfirmed"], 0, "{checks}");
    assert_sections(&md);
    assert!(md.contains("**PASSED: every call survived**"), "{md}");
    assert!(
        md.contains("Callers talked in turns (2 s talk spurts, 6 s pauses"),
        "{md}"
    );
    assert!(md.contains("callers were talking and"), "{md}");
    assert!(
        md.contains("the callers fall silent, 3000 ms before they hang up"),
        "{md}"
    );
}

/// The quiet drill can fail: with both SIP agents killed, nobody can take the calls, those
/// whose caller was in a pause included.
#[test]
fn quiet_agents_with_the_whole_layer_killed_drop_and_fail_the_drill() {
    let dir = tempfile::tempdir().unwrap();
    let (out, md, j) = drill(
        dir.path(),
        &[
            "--fail",
            "ai-provider",
            "--whole-layer",
            "--quiet-agents",
            "--calls",
            "3",
        ],
        Duration::from_secs(90),
    );
    assert_eq!(out.status.code(), Some(1), "{j:#}");
    assert_eq!(j["passed"], false);
    assert_eq!(j["summary"]["dropped"], 3, "{j:#}");
    assert_eq!(j["summary"]["on_failed_dropped"], 3);
    assert!(
        j["summary"]["on_failed_pausing"].as_u64().unwrap() >= 1,
        "{j:#}"
    );
    for c in j["calls"].as_array().unwrap() {
        assert_eq!(c["survived"], false, "{c}");
        assert!(
            c["note"].as_str().unwrap().contains("hung up by holdfast"),
            "{c}"
        );
    }
    assert!(md.contains("**FAILED: calls dropped**"));
}

#[test]
fn bad_arguments_exit_2_without_running() {
    let out = Command::new(env!("CARGO_BIN_EXE_holdfast"))
        .args(["drill", "--hold", "5"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "a duration needs a unit");
    let out = Command::new(env!("CARGO_BIN_EXE_holdfast"))
        .args(["drill", "--sip", "127.0.0.1:5060"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "--sip needs --admin");
    let out = Command::new(env!("CARGO_BIN_EXE_holdfast"))
        .args(["drill", "--quiet-agents", "--hold", "5s"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--hold 5s is too short") && stderr.contains("use --hold 8s or more"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("drill: holdfast (pid"),
        "nothing started: {stderr}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_holdfast"))
        .args(["drill", "--pause", "6s"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "--pause needs --quiet-agents");
}

/// A child killed and reaped on drop.
struct Proc(std::process::Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `holdfast peer sip-agent` (stdin kept open: a peer exits on EOF) and its address.
fn sip_agent(name: &str, index: u8) -> (Proc, String) {
    use std::io::BufRead as _;
    let mut c = Command::new(env!("CARGO_BIN_EXE_holdfast"))
        .args([
            "peer",
            "sip-agent",
            "--index",
            &index.to_string(),
            "--name",
            name,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(c.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("READY ")
        .expect("READY line")
        .to_string();
    (Proc(c), addr)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn the_admin_mode_fails_a_provider_of_a_running_holdfast_and_restores_it() {
    let dir = tempfile::tempdir().unwrap();
    let (_a, a) = sip_agent("agent-a", 3);
    let (_b, b) = sip_agent("agent-b", 4);
    let (sip, admin, from) = (free_port(), free_port(), free_port());
    let yaml = format!(
        "sip: {{ listen: [\"udp:127.0.0.1:{sip}\"] }}\n\
         media: {{ bind: 127.0.0.1, io: socket, threads: 1, ai_timeout: 1s, ports: \"{}-{}\" }}\n\
         health: {{ ping_interval: 1s, ping_timeout: 500ms, down_after: 2, up_after: 2 }}\n\
         admin: {{ listen: \"127.0.0.1:{admin}\", token_env: DRILL_TEST_TOKEN }}\n\
         carriers:\n  - {{ id: trunk, uri: \"sip:127.0.0.1:9\", region: us, ping: false, sources: [\"127.0.0.1:{from}\"] }}\n\
         ai_providers:\n  - {{ id: agent-a, uri: \"sip:agent@{a}\", region: us, priority: 1 }}\n  - {{ id: agent-b, uri: \"sip:agent@{b}\", region: us, priority: 2 }}\n\
         routes:\n  inbound:\n    - {{ regions: [us], ai: [agent-a, agent-b] }}\n",
        24000 + (std::process::id() % 2000) * 2,
        24000 + (std::process::id() % 2000) * 2 + 63,
    );
    let cfg = dir.path().join("hf.yaml");
    std::fs::write(&cfg, yaml).unwrap();
    let log = std::fs::File::create(dir.path().join("hf.log")).unwrap();
    let _hf = Proc(
        Command::new(env!("CARGO_BIN_EXE_holdfast"))
            .args(["--log-format", "json", "run", "--config"])
            .arg(&cfg)
            .env("DRILL_TEST_TOKEN", "s3cret")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while !std::fs::read_to_string(dir.path().join("hf.log"))
        .unwrap_or_default()
        .contains("holdfast is up")
    {
        assert!(Instant::now() < deadline, "holdfast did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let report = dir.path().join("admin.md");
    let out = Command::new(env!("CARGO_BIN_EXE_holdfast"))
        .args(["drill", "--admin", &format!("http://127.0.0.1:{admin}")])
        .args(["--token-env", "DRILL_TEST_TOKEN"])
        .args(["--sip", &format!("127.0.0.1:{sip}")])
        .args(["--from", &format!("127.0.0.1:{from}")])
        .args([
            "--to",
            "+15551230000",
            "--calls",
            "3",
            "--hold",
            "3s",
            "--json",
        ])
        .arg("--report")
        .arg(&report)
        .env("DRILL_TEST_TOKEN", "s3cret")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let j: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}\n{stderr}", String::from_utf8_lossy(&out.stdout)));
    assert_eq!(out.status.code(), Some(0), "{j:#}\n{stderr}");
    assert_eq!(j["summary"]["survived"], 3, "{j:#}");
    assert!(
        j["scenario"].as_str().unwrap().contains("fail agent-a"),
        "the provider serving the calls is picked: {j:#}"
    );
    for c in j["calls"].as_array().unwrap() {
        assert_eq!(
            (c["before"].as_str(), c["after"].as_str()),
            (Some("agent-a"), Some("agent-b")),
            "{c}"
        );
        assert!(c["note"].as_str().unwrap().contains("health_down"), "{c}");
    }
    let md = std::fs::read_to_string(&report).unwrap();
    assert!(
        md.contains("POST /targets/agent-a/fail") && md.contains("POST /targets/agent-a/restore"),
        "{md}"
    );
    // Restored: agent-a is no longer failed.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (status, body) = rt
        .block_on(holdfast::drill::http::request(
            &format!("http://127.0.0.1:{admin}"),
            "GET",
            "/targets/agent-a",
            Some("s3cret"),
            "",
        ))
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["failed"], false, "{v}");
}
