//! The circuit breaker and target start-up against the real binary: a blip never becomes an
//! outage, and a freshly started holdfast takes calls at once.
//!
//! Peers: SIPp as the AI agent placing calls, a UDP carrier written here (it answers every
//! INVITE at once, except the ones it is told to ignore), a burst of INVITEs from a socket of
//! the test, and an in-process DNS server behind a slow relay.
mod common;

use common::dns::*;
use common::scenarios as sc;
use common::*;
use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(60);

/// The value of header `name` (full name, case-insensitive) in a SIP message.
fn header<'a>(msg: &'a str, name: &str) -> Option<&'a str> {
    msg.split("\r\n").skip(1).find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// A response to `req`: its Via, From, Call-ID and CSeq, its To with `tag`.
fn response(req: &str, status: &str, tag: &str, body: Option<&str>) -> String {
    let mut out = format!("SIP/2.0 {status}\r\n");
    for l in req.split("\r\n").skip(1) {
        let lower = l.to_ascii_lowercase();
        if lower.starts_with("via:")
            || lower.starts_with("from:")
            || lower.starts_with("call-id:")
            || lower.starts_with("cseq:")
        {
            out.push_str(l);
            out.push_str("\r\n");
        } else if lower.starts_with("to:") {
            out.push_str(l);
            if !lower.contains("tag=") {
                out.push_str(&format!(";tag={tag}"));
            }
            out.push_str("\r\n");
        }
    }
    match body {
        Some(b) => out.push_str(&format!(
            "Contact: <sip:carrier@127.0.0.1>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{b}",
            b.len()
        )),
        None => out.push_str("Content-Length: 0\r\n\r\n"),
    }
    out
}

/// The header a caller puts on the INVITEs the carrier must never answer (holdfast passes
/// unknown headers through to the other leg).
const IGNORE_ME: &str = "X-Test-Ignore-Me";

/// A carrier on a UDP port: 180 and 200 (with SDP) to every INVITE at once, 200 to BYE,
/// CANCEL and (unless told otherwise) OPTIONS. INVITEs carrying [`IGNORE_ME`] get nothing at
/// all (nor do their retransmissions): the callee missed its provisional deadline.
struct Carrier {
    port: u16,
    /// Distinct INVITEs received (Call-IDs), answered or not.
    invites: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Carrier {
    fn start(answer_options: bool) -> Carrier {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind carrier");
        sock.set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let port = sock.local_addr().unwrap().port();
        let invites = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (count, halt) = (invites.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut seen: HashMap<String, usize> = HashMap::new();
            let mut buf = vec![0u8; 65536];
            let sdp = "v=0\r\no=carrier 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 9 RTP/AVP 0\r\n";
            while !halt.load(Ordering::Relaxed) {
                let Ok((n, from)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                let msg = String::from_utf8_lossy(&buf[..n]).to_string();
                let method = msg.split(' ').next().unwrap_or("");
                let call_id = header(&msg, "Call-ID").unwrap_or("").to_string();
                let replies: Vec<String> = match method {
                    "INVITE" => {
                        let next = seen.len();
                        let k = *seen.entry(call_id.clone()).or_insert(next);
                        count.store(seen.len(), Ordering::Relaxed);
                        if header(&msg, IGNORE_ME).is_some() {
                            vec![]
                        } else {
                            let tag = format!("c{k}");
                            vec![
                                response(&msg, "180 Ringing", &tag, None),
                                response(&msg, "200 OK", &tag, Some(sdp)),
                            ]
                        }
                    }
                    "BYE" | "CANCEL" => vec![response(&msg, "200 OK", "cx", None)],
                    "OPTIONS" if answer_options => vec![response(&msg, "200 OK", "cx", None)],
                    _ => vec![],
                };
                for r in replies {
                    let _ = sock.send_to(r.as_bytes(), from);
                }
            }
        });
        Carrier {
            port,
            invites,
            stop,
            thread: Some(thread),
        }
    }

    fn invites(&self) -> usize {
        self.invites.load(Ordering::Relaxed)
    }
}

impl Drop for Carrier {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `n` INVITEs sent back to back from one socket (Call-IDs `burst-…`), like a burst of
/// calls; collects the status of each call's final response (and ACKs it).
struct Burst {
    finals: Arc<Mutex<HashMap<String, u16>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Burst {
    fn send(sock: UdpSocket, holdfast: SocketAddr, n: usize) -> Burst {
        sock.set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let me = sock.local_addr().unwrap();
        let sdp = "v=0\r\no=agent 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 9 RTP/AVP 0\r\n";
        for i in 0..n {
            let invite = format!(
                "INVITE sip:+15551230000@{holdfast} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKburst{i};rport\r\n\
                 From: <sip:+15550001111@{me}>;tag=burst{i}\r\nTo: <sip:+15551230000@{holdfast}>\r\n\
                 Call-ID: burst-{i}@test\r\nCSeq: 1 INVITE\r\nContact: <sip:agent@{me}>\r\nMax-Forwards: 70\r\n\
                 {IGNORE_ME}: yes\r\n\
                 Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
                sdp.len()
            );
            sock.send_to(invite.as_bytes(), holdfast).expect("send");
        }
        let finals = Arc::new(Mutex::new(HashMap::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (seen, halt) = (finals.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            while !halt.load(Ordering::Relaxed) {
                let Ok((n, from)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                let msg = String::from_utf8_lossy(&buf[..n]).to_string();
                let Some(status) = msg
                    .strip_prefix("SIP/2.0 ")
                    .and_then(|r| r.get(..3))
                    .and_then(|c| c.parse::<u16>().ok())
                else {
                    continue;
                };
                if status < 200 {
                    continue;
                }
                let call_id = header(&msg, "Call-ID").unwrap_or("").to_string();
                // RFC 3261 §17.1.1.3: the ACK of a non-2xx final stops its retransmissions.
                let ack = format!(
                    "ACK sip:+15551230000@{from} SIP/2.0\r\nVia: {}\r\nFrom: {}\r\nTo: {}\r\nCall-ID: {call_id}\r\nCSeq: 1 ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
                    header(&msg, "Via").unwrap_or(""),
                    header(&msg, "From").unwrap_or(""),
                    header(&msg, "To").unwrap_or(""),
                );
                let _ = sock.send_to(ack.as_bytes(), from);
                seen.lock().unwrap().insert(call_id, status);
            }
        });
        Burst {
            finals,
            stop,
            thread: Some(thread),
        }
    }

    fn wait_finals(&self, n: usize, timeout: Duration) -> HashMap<String, u16> {
        let deadline = Instant::now() + timeout;
        loop {
            let f = self.finals.lock().unwrap().clone();
            if f.len() >= n || Instant::now() > deadline {
                return f;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Burst {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Waits until `cond` holds (polled every 10 ms), at most `timeout`.
fn wait_until(timeout: Duration, cond: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    cond()
}

/// The issue's incident in small: the rule's only carrier misses its provisional deadline
/// for a burst of calls in the middle of steady traffic. The breaker must not take it out:
/// every other call connects and none is refused with "no healthy carrier". (Before: two
/// timeouts in a row opened the breaker and the next 30 s of calls were refused.)
#[test]
fn a_burst_of_missed_provisional_deadlines_never_takes_the_only_carrier_out() {
    const CALLS: u32 = 240;
    const BURST: usize = 8;
    let (hp, agent) = (free_port(), free_port());
    let burst_sock = UdpSocket::bind("127.0.0.1:0").expect("bind burst socket");
    let burst_port = burst_sock.local_addr().unwrap().port();
    let carrier = Carrier::start(true);
    let mut c = TestConfig::new(hp);
    c.media = format!("ports: \"{}\"", media_ports(256));
    c.carriers.push(format!(
        "{{ id: carrier, uri: \"sip:127.0.0.1:{}\", region: us, ping: false }}",
        carrier.port
    ));
    c.providers.push(format!(
        "{{ id: agent, kind: sip, uri: \"sip:agent@127.0.0.1:9\", region: us, ping: false, sources: [\"127.0.0.1:{agent}\", \"127.0.0.1:{burst_port}\"] }}"
    ));
    c.outbound
        .push("{ regions: [us], carriers: [carrier] }".into());
    let hf = Holdfast::start(&c.yaml(), hp);

    // Steady traffic: 40 calls/s for 6 s, each held 100 ms.
    let uac = Sipp::uac(
        "agent",
        &sc::uac_call(100),
        agent,
        &format!("127.0.0.1:{hp}"),
        "+15551230000",
        CALLS,
        &["-r", "40", "-l", "40"],
    );
    // Half-way through (120 calls in: the breaker judges a ratio by now), a burst of calls
    // the carrier never answers.
    assert!(
        wait_until(WAIT, || carrier.invites() >= 120),
        "traffic did not get going: {} INVITEs",
        carrier.invites()
    );
    let burst = Burst::send(burst_sock, SocketAddr::from(([127, 0, 0, 1], hp)), BURST);
    let finals = burst.wait_finals(BURST, Duration::from_secs(20));
    assert_eq!(finals.len(), BURST, "every burst call ended: {finals:?}");
    assert!(
        finals.values().all(|&s| s >= 400),
        "the carrier never answered them: {finals:?}"
    );
    let r = uac.wait(WAIT);
    assert!(
        r.success(),
        "calls failed after the burst: {}\n{}",
        r.output,
        r.errors
    );
    let refused = hf.count_logs(|l| msg(l).contains("no healthy"));
    assert_eq!(refused, 0, "calls refused with 'no healthy carrier'");
    let m = http::get(hf.admin_addr(), "/metrics", None).body;
    let opened = http::metric(
        &m,
        "holdfast_breaker_openings_total",
        &[("target", "carrier")],
    )
    .unwrap_or(0.0);
    assert_eq!(
        opened, 0.0,
        "8 timeouts among 120+ attempts: the breaker stays closed\n{m}"
    );
    assert_eq!(
        http::metric(
            &m,
            "holdfast_calls_total",
            &[("direction", "outbound"), ("outcome", "completed")]
        ),
        Some(f64::from(CALLS)),
        "{m}"
    );
}

/// A call right after start to a carrier that has not answered a ping yet connects; the
/// carrier shows as `unknown` (not `up`, not `down`) until a ping decides.
#[test]
fn a_call_right_after_start_connects_before_the_first_ping_is_answered() {
    let (hp, agent) = (free_port(), free_port());
    // This carrier never answers OPTIONS: three pings (5 s apart) before it could go down.
    let carrier = Carrier::start(false);
    let mut c = TestConfig::new(hp);
    c.carriers.push(format!(
        "{{ id: carrier, uri: \"sip:127.0.0.1:{}\", region: us }}",
        carrier.port
    ));
    c.providers.push(format!(
        "{{ id: agent, kind: sip, uri: \"sip:agent@127.0.0.1:9\", region: us, ping: false, sources: [\"127.0.0.1:{agent}\"] }}"
    ));
    c.outbound
        .push("{ regions: [us], carriers: [carrier] }".into());
    let hf = Holdfast::start(&c.yaml(), hp);
    let uac = Sipp::uac(
        "agent",
        &sc::uac_call(100),
        agent,
        &format!("127.0.0.1:{hp}"),
        "+15551230000",
        1,
        &[],
    );
    let r = uac.wait(WAIT);
    assert!(r.success(), "call failed: {}\n{}", r.output, r.errors);
    let t = http::get(hf.admin_addr(), "/targets/carrier", None).json();
    assert_eq!(t["health"], "unknown", "{t}");
    assert_eq!(t["available"], true, "{t}");
    assert_eq!(t["addresses"][0]["health"], "unknown", "{t}");
    let m = http::get(hf.admin_addr(), "/metrics", None).body;
    assert_eq!(
        http::metric(&m, "holdfast_target_up", &[("target", "carrier")]),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        http::metric(&m, "holdfast_target_unknown", &[("target", "carrier")]),
        Some(1.0),
        "{m}"
    );
}

/// A UDP relay in front of a DNS server that holds every query for `delay`: a resolver
/// that takes its time, as one does right after a restart.
struct SlowDns {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SlowDns {
    fn start(upstream: SocketAddr, delay: Duration) -> SlowDns {
        let sock = Arc::new(UdpSocket::bind("127.0.0.1:0").expect("bind dns relay"));
        sock.set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let addr = sock.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let halt = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut buf = vec![0u8; 4096];
            while !halt.load(Ordering::Relaxed) {
                let Ok((n, client)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                let query = buf[..n].to_vec();
                let sock = sock.clone();
                std::thread::spawn(move || {
                    std::thread::sleep(delay);
                    let up = UdpSocket::bind("127.0.0.1:0").expect("bind upstream socket");
                    up.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                    if up.send_to(&query, upstream).is_err() {
                        return;
                    }
                    let mut answer = vec![0u8; 4096];
                    if let Ok((m, _)) = up.recv_from(&mut answer) {
                        let _ = sock.send_to(&answer[..m], client);
                    }
                });
            }
        });
        SlowDns {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for SlowDns {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Restart with a carrier named by DNS, and a call arriving before the resolver answers:
/// the call waits for the first resolution (at most `health.ping_timeout`) and connects.
/// (Before: refused with "no healthy carrier" until the name resolved.)
#[test]
fn a_call_right_after_start_waits_for_the_first_resolution_and_connects() {
    let (hp, agent) = (free_port(), free_port());
    let carrier = Carrier::start(true);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let records = vec![
        srv(
            "_sip._udp.carrier.test.",
            30,
            10,
            10,
            carrier.port,
            "sip1.carrier.test.",
        ),
        a("sip1.carrier.test.", 30, [127, 0, 0, 1]),
    ];
    let dns = rt.block_on(start_zone("carrier.test.", records));
    let slow = SlowDns::start(dns.addr, Duration::from_millis(300));
    let mut c = TestConfig::new(hp);
    c.health = "ping_interval: 5s\n  ping_timeout: 3s\n  down_after: 3\n  up_after: 2".into();
    c.carriers
        .push("{ id: carrier, uri: \"sip:carrier.test\", region: us }".into());
    c.providers.push(format!(
        "{{ id: agent, kind: sip, uri: \"sip:agent@127.0.0.1:9\", region: us, ping: false, sources: [\"127.0.0.1:{agent}\"] }}"
    ));
    c.outbound
        .push("{ regions: [us], carriers: [carrier] }".into());
    let yaml = format!("{}dns:\n  nameservers: [\"{}\"]\n", c.yaml(), slow.addr);
    let hf = Holdfast::start(&yaml, hp);
    assert!(
        hf.find_log(|l| msg(l) == "target resolved").is_none(),
        "the resolver answered before the call: the race this test is about did not happen"
    );
    let uac = Sipp::uac(
        "agent",
        &sc::uac_call(100),
        agent,
        &format!("127.0.0.1:{hp}"),
        "+15551230000",
        1,
        &[],
    );
    let r = uac.wait(WAIT);
    assert!(r.success(), "call failed: {}\n{}", r.output, r.errors);
    let waited = hf
        .find_log(|l| msg(l).starts_with("waiting for the rule's targets to resolve"))
        .expect("the call waited for the resolution");
    let resolved = hf
        .find_log(|l| msg(l) == "target resolved")
        .expect("resolved");
    assert!(waited.0 <= resolved.0, "waited, then resolved");
    assert_eq!(hf.count_logs(|l| msg(l).contains("no healthy")), 0);
    drop(slow);
    drop(dns);
}
