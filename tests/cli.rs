//! The `holdfast` binary's own contract: `check` prints the routing table or exits 1 with
//! file:line:column and the field; `run` answers OPTIONS (from `sip.answer_options`
//! monitors) on IPv6 and TCP listeners too.
mod common;

use common::*;
use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::process::Command;
use std::time::Duration;

fn holdfast() -> Command {
    Command::new(env!("CARGO_BIN_EXE_holdfast"))
}

#[test]
fn check_prints_the_routing_table_of_the_example() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/config/example.yaml");
    let out = holdfast().args(["check", example]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in ["carrier-a", "agent-a", "+44", "eu"] {
        assert!(
            text.contains(needle),
            "routing table lacks {needle}:\n{text}"
        );
    }
}

/// A WebSocket provider is shown by its URL and kind, not by the SIP URI holdfast derives
/// from the URL's host and port for health checks and DNS.
#[test]
fn check_shows_websocket_providers_by_url_and_kind() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ws.yaml");
    std::fs::write(
        &path,
        r#"
ai_providers:
  - { id: bot, kind: media-stream, url: "ws://127.0.0.1:8765/media?tenant=acme", region: us }
  - { id: rt, kind: openai-realtime, url: "wss://realtime.example.test/v1/realtime?model=x", api_key_env: HOLDFAST_CLI_TEST_KEY, region: us }
  - { id: agent, kind: sip, uri: "sip:agent@127.0.0.1:5081", region: us }
routes:
  inbound:
    - { regions: [us], ai: [bot, rt, agent] }
"#,
    )
    .unwrap();
    let out = holdfast()
        .arg("check")
        .arg(&path)
        .env("HOLDFAST_CLI_TEST_KEY", "sk-test")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "  bot  ws://127.0.0.1:8765/media?tenant=acme  (kind media-stream)\n",
        "  rt  wss://realtime.example.test/v1/realtime?model=x  (kind openai-realtime)\n",
        "  agent  sip:agent@127.0.0.1:5081",
        "(kind sip)",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
    assert!(
        !text.contains(";transport=tcp"),
        "a WebSocket provider shown as a SIP URI:\n{text}"
    );
    assert!(!text.contains("sk-test"), "the API key is never printed");
}

#[test]
fn check_refuses_a_bad_file_with_file_line_column_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(
        &path,
        "carriers:\n  - id: c1\n    uri: \"sip:127.0.0.1:5091\"\n    region: us\n    weight: lots\n",
    )
    .unwrap();
    let out = holdfast().arg("check").arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let expected = format!("{}:5:13: carriers[0].weight:", path.display());
    assert!(err.starts_with(&expected), "got: {err}");
}

#[test]
fn run_refuses_a_bad_file_and_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(&path, "sip:\n  t1: 5\n").unwrap();
    let out = holdfast()
        .args(["run", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.yaml:2:") && err.contains("sip.t1"),
        "got: {err}"
    );
}

fn options(via: &str, branch: &str) -> String {
    format!(
        "OPTIONS sip:holdfast SIP/2.0\r\nVia: SIP/2.0/{via};branch={branch};rport\r\nFrom: <sip:mon@x>;tag=1\r\n\
         To: <sip:holdfast>\r\nCall-ID: {branch}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
}

#[test]
fn options_answered_over_ipv6_udp_and_tcp() {
    let port = free_port();
    let yaml = format!(
        "sip:\n  listen: [\"udp:[::1]:{port}\", \"tcp:127.0.0.1:{port}\"]\n  answer_options: [\"::1\", \"127.0.0.1\"]\n"
    );
    let _hf = Holdfast::start(&yaml, port);

    let udp = UdpSocket::bind("[::1]:0").unwrap();
    udp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let local = udp.local_addr().unwrap();
    udp.send_to(
        options(&format!("UDP [::1]:{}", local.port()), "z9hG4bKv6").as_bytes(),
        ("::1", port),
    )
    .unwrap();
    let mut buf = [0u8; 4096];
    let n = udp.recv(&mut buf).expect("no answer over IPv6");
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("SIP/2.0 200"), "{text}");

    let mut tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let local = tcp.local_addr().unwrap();
    // Two requests in one write: stream framing must split them by Content-Length.
    let two = options(&format!("TCP {local}"), "z9hG4bKtcp1")
        + &options(&format!("TCP {local}"), "z9hG4bKtcp2");
    tcp.write_all(two.as_bytes()).unwrap();
    let mut got = String::new();
    while got.matches("SIP/2.0 200").count() < 2 {
        let n = tcp.read(&mut buf).expect("TCP answer");
        assert!(n > 0, "connection closed; got {got}");
        got.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(got.contains("z9hG4bKtcp1") && got.contains("z9hG4bKtcp2"));
}

/// A TCP peer that sends but never reads: holdfast's queue toward it fills, further
/// messages to it are dropped and logged, and everyone else is still served.
#[test]
fn a_tcp_peer_that_never_reads_does_not_stall_holdfast() {
    let port = free_port();
    // The client is a carrier's address with no rate limit: it may send 20 000 at once.
    let yaml = format!(
        "sip:\n  listen: [\"udp:127.0.0.1:{port}\", \"tcp:127.0.0.1:{port}\"]\n\
         carriers:\n  - {{ id: trunk, uri: \"sip:127.0.0.1:9\", region: us, ping: false, sources: [\"127.0.0.1/32\"], limits: off }}\n"
    );
    let hf = Holdfast::start(&yaml, port);
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_write_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let local = tcp.local_addr().unwrap();
    let mut burst = String::new();
    for i in 0..20_000 {
        burst.push_str(&options(
            &format!("TCP {local}"),
            &format!("z9hG4bKslow{i}"),
        ));
        if burst.len() > 256 * 1024 {
            if tcp.write_all(burst.as_bytes()).is_err() {
                break; // holdfast stopped reading us too: fine, the point is below
            }
            burst.clear();
        }
    }
    let _ = tcp.write_all(burst.as_bytes());
    hf.wait_log(Duration::from_secs(20), |l| {
        msg(l) == "TCP send queue full; message dropped"
    })
    .expect("the writer queue toward the silent reader never filled");
    // Another client is still answered at once.
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let me = udp.local_addr().unwrap();
    udp.send_to(
        options(&format!("UDP {me}"), "z9hG4bKother").as_bytes(),
        ("127.0.0.1", port),
    )
    .unwrap();
    let mut buf = [0u8; 4096];
    let n = udp
        .recv(&mut buf)
        .expect("holdfast stalled behind a slow TCP reader");
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("SIP/2.0 200"));
    drop(tcp);
}

/// This process's hard RLIMIT_NOFILE.
fn own_hard_nofile() -> u64 {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes a plain struct we own.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) }, 0);
    l.rlim_max
}

#[test]
fn check_prints_the_call_capacity_and_which_limit_bounds_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("holdfast.yaml");
    let hard = own_hard_nofile().min(1024);
    let check = |ports: &str| {
        std::fs::write(
            &path,
            format!("sip:\n  listen: [\"udp:127.0.0.1:5060\"]\nmedia:\n  ports: \"{ports}\"\n  threads: 2\n"),
        )
        .unwrap();
        let mut cmd = holdfast();
        cmd.arg("check").arg(&path);
        // As started from a shell with the common soft limit below the hard one.
        with_nofile(&mut cmd, hard / 2, hard);
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // The default range holds 4096 calls: the descriptor limit is what bounds them.
    let text = check("16384-32767");
    for needle in [
        "call capacity:\n".to_string(),
        "media.ports 16384-32767: 4096 calls (4 ports each: RTP and RTCP per leg)".into(),
        format!(
            "descriptor limit {hard} (this shell's soft limit {} is raised to it at start): ",
            hard / 2
        ),
        "calls (4 descriptors each, 2 more with a WebSocket AI leg".into(),
        "concurrent calls, bound by the descriptor limit; for all of media.ports raise the hard limit to at least".into(),
        "LimitNOFILE=".into(),
    ] {
        assert!(text.contains(&needle), "no {needle:?} in:\n{text}");
    }
    // 100 ports hold 25 calls, well inside the descriptor limit.
    let text = check("30000-30099");
    assert!(
        text.contains("media.ports 30000-30099: 25 calls")
            && text.contains("capacity: 25 concurrent calls, bound by media.ports"),
        "{text}"
    );
}
