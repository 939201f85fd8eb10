//! RFC 4475 over the wire: every torture message is sent over UDP to a running holdfast; the
//! answer must be what RFC 4475 asks of a B2BUA, and afterwards a normal call still goes
//! through (bad input never harms other calls).
//!
//! The parser-level verdicts are checked message by message against the RFC in
//! `tests/rfc4475.rs`; here the expected answer on the wire follows from that verdict and from
//! what the B2BUA does with each method (INVITE routed, OPTIONS answered, REGISTER 405, …).
mod common;

use common::scenarios as sc;
use common::*;
use holdfast::sip::{classify, Message, Policy, Verdict};
use std::net::UdpSocket;
use std::time::{Duration, Instant};

fn corpus_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/conformance/rfc4475")
}

/// What holdfast must answer on the wire (the first final response), or None for silence.
fn expected(bytes: &[u8]) -> Option<u16> {
    match classify(bytes, &Policy::default()) {
        Verdict::Reject {
            status,
            response: Some(_),
            ..
        } => Some(status),
        Verdict::Reject { response: None, .. } | Verdict::Drop { .. } => None,
        Verdict::Handle(Message::Response(_)) => None, // no transaction matches: dropped
        Verdict::Handle(Message::Request(req)) => {
            let in_dialog = req.headers.to().ok().and_then(|t| t.tag()).is_some();
            match req.method.as_str() {
                "ACK" => None,
                _ if in_dialog => Some(481),
                // Routed to the only provider, which is not listening: every candidate fails.
                "INVITE" => Some(503),
                "OPTIONS" => Some(200),
                "BYE" | "CANCEL" | "INFO" | "UPDATE" | "PRACK" => Some(481),
                "REGISTER" | "SUBSCRIBE" | "NOTIFY" | "REFER" | "MESSAGE" | "PUBLISH" => Some(405),
                _ => Some(501),
            }
        }
    }
}

fn first_final(sock: &UdpSocket, within: Duration) -> Option<u16> {
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 65535];
    while Instant::now() < deadline {
        sock.set_read_timeout(Some(
            deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1)),
        ))
        .unwrap();
        let Ok(n) = sock.recv(&mut buf) else {
            return None;
        };
        let text = String::from_utf8_lossy(&buf[..n]);
        let code: u16 = text.get(8..11).and_then(|c| c.parse().ok()).unwrap_or(0);
        if code >= 200 {
            return Some(code);
        }
    }
    None
}

#[test]
fn torture_messages_get_the_rfc_answer_and_harm_nothing() {
    let (hp, agent, dead) = (free_port(), free_port(), free_port());
    let mut c = TestConfig::new(hp);
    c.routing = "attempt_timeout: 200ms\n  seed: 7".into();
    // Everything from loopback is a carrier; calls go to a provider that is not listening,
    // except numbers starting +1, which go to a live SIPp agent.
    c.carriers.push("{ id: trunk, uri: \"sip:127.0.0.1:9\", region: us, ping: false, sources: [\"127.0.0.1/32\"] }".into());
    c.providers.push(format!(
        "{{ id: dead, kind: sip, uri: \"sip:agent@127.0.0.1:{dead}\", region: us, ping: false }}"
    ));
    c.providers.push(format!(
        "{{ id: live, kind: sip, uri: \"sip:agent@127.0.0.1:{agent}\", region: us, ping: false }}"
    ));
    c.inbound.push("{ regions: [us], ai: [dead] }".into());
    c.inbound
        .push("{ match: { to: \"+1\" }, regions: [us], ai: [live] }".into());
    // A short T1 so server transactions end quickly (Timer J = 64*T1): the corpus reuses
    // the same Via branch in several messages, which §17.2.3 rightly treats as one transaction.
    // force_rport: the corpus names hosts like 192.0.2.1 in its Vias; answers must come back
    // to this test's socket, not to port 5060.
    let hf = Holdfast::start(
        &c.yaml()
            .replace("t1: 100ms", "t1: 10ms\n  t2: 40ms\n  force_rport: true"),
        hp,
    );
    let mut seen_branches = std::collections::HashSet::new();

    let mut files: Vec<_> = std::fs::read_dir(corpus_dir())
        .expect("../shared/conformance/rfc4475 beside the repository")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "dat"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 50, "the RFC 4475 corpus has 50 messages");
    let mut mismatches = Vec::new();
    for f in &files {
        let bytes = std::fs::read(f).unwrap();
        let want = expected(&bytes);
        let text = String::from_utf8_lossy(&bytes);
        if let Some(b) = text.split("branch=").nth(1).map(|b| {
            b.split([';', '\r', '\n', ' '])
                .next()
                .unwrap_or("")
                .to_string()
        }) {
            if !seen_branches.insert(b) {
                std::thread::sleep(Duration::from_millis(900)); // past Timer J / H of the earlier one
            }
        }
        // A fresh socket per message, so a late answer cannot be mistaken for the next one's.
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.connect(("127.0.0.1", hp)).unwrap();
        sock.send(&bytes).unwrap();
        let wait = if want.is_some() {
            Duration::from_secs(3)
        } else {
            Duration::from_millis(300)
        };
        let got = first_final(&sock, wait);
        let name = f.file_stem().unwrap().to_string_lossy().to_string();
        if got != want {
            mismatches.push(format!("{name}: expected {want:?}, got {got:?}"));
        }
    }
    assert!(
        mismatches.is_empty(),
        "answers differ from RFC 4475:\n{}",
        mismatches.join("\n")
    );

    // holdfast is still up and still connects calls.
    let uas = Sipp::uas("live", &sc::uas_answer(), agent, Some(1));
    let uac = Sipp::uac(
        "trunk",
        &sc::uac_call(100),
        free_port(),
        &format!("127.0.0.1:{hp}"),
        "+15551230000",
        1,
        &[],
    );
    let r = uac.wait(Duration::from_secs(30));
    assert!(
        r.success(),
        "a normal call failed after the torture corpus: {}\n{}",
        r.output,
        r.errors
    );
    assert!(uas.wait(Duration::from_secs(30)).success());
    drop(hf);
}
