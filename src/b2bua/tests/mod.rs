//! The core on a virtual clock: a UAC and a UAS made of plain strings, holdfast in the middle,
//! time advanced by hand. Timing that takes minutes on the wire (session timers, Timer B)
//! runs here in microseconds, deterministically.
use super::*;
use crate::b2bua::call::Side;
use bytes::Bytes;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

mod breaker;
mod churn;
mod guard;
mod ipv6;
mod liveness;
mod media;
mod ops;
mod reroute;
mod ws;

pub(super) const HF: &str = "127.0.0.1:5060";
pub(super) const CARRIER: &str = "127.0.0.1:5091";
pub(super) const AGENT_A: &str = "127.0.0.1:5081";
pub(super) const AGENT_B: &str = "127.0.0.1:5082";

pub(super) fn config(extra_health: &str) -> Arc<crate::config::Config> {
    let yaml = format!(
        r#"
sip:
  listen: ["udp:{HF}"]
health:
  ping_interval: 1h
{extra_health}
routing:
  attempt_timeout: 1s
  seed: 1
carriers:
  - {{ id: carrier, uri: "sip:{CARRIER}", region: us, ping: false, sources: ["{CARRIER}"] }}
ai_providers:
  - {{ id: agent-a, kind: sip, uri: "sip:agent@{AGENT_A}", region: us, priority: 1, ping: false }}
  - {{ id: agent-b, kind: sip, uri: "sip:agent@{AGENT_B}", region: us, priority: 2, ping: false }}
routes:
  inbound: [ {{ regions: [us], ai: [agent-a, agent-b] }} ]
"#
    );
    Arc::new(crate::config::parse(&yaml, "test.yaml").expect("valid test config"))
}

pub(super) struct Sim {
    pub(super) core: Core,
    pub(super) start: Instant,
    pub(super) now: Instant,
    /// Everything holdfast sent, with the time it was sent.
    pub(super) sent: Vec<(Duration, SocketAddr, String)>,
    /// Every command for the media shell.
    pub(super) media: Vec<crate::media::control::MediaCommand>,
    /// Every command for the WebSocket AI shell.
    pub(super) ai: Vec<crate::ai::control::AiCommand>,
    /// Ports "another process" holds: an `Open` naming one fails with EADDRINUSE.
    pub(super) taken: std::collections::HashSet<u16>,
    /// When set, every `Open` fails with this (e.g. EMFILE).
    pub(super) bind_error: Option<crate::media::control::BindFailure>,
    /// When set, every `Rebind` fails.
    pub(super) rebind_error: bool,
    /// Finished calls' records and webhook events, as the core gave them out.
    pub(super) records: std::collections::VecDeque<crate::b2bua::record::CallRecord>,
    pub(super) webhooks: std::collections::VecDeque<serde_json::Value>,
}

impl Sim {
    pub(super) fn new(extra_health: &str) -> Sim {
        Sim::with_config(config(extra_health))
    }

    pub(super) fn with_config(config: Arc<crate::config::Config>) -> Sim {
        Sim::with_seed(config, 42)
    }

    /// A core seeded with `seed` (the runtime draws one per process).
    pub(super) fn with_seed(config: Arc<crate::config::Config>, seed: u64) -> Sim {
        let now = Instant::now();
        let core = Core::new(config, seed, now);
        let mut sim = Sim {
            core,
            start: now,
            now,
            sent: Vec::new(),
            media: Vec::new(),
            ai: Vec::new(),
            taken: Default::default(),
            bind_error: None,
            rebind_error: false,
            records: Default::default(),
            webhooks: Default::default(),
        };
        // What the core does at start (its first health pings) is not what tests look at.
        sim.collect();
        sim.sent.clear();
        sim
    }

    /// What the media shell answers a command at once: an `Open` is bound (`Bound`) unless
    /// a port of it is `taken` or `bind_error` is set (`OpenFailed`).
    fn shell_answer(
        &self,
        m: &crate::media::control::MediaCommand,
    ) -> Option<crate::media::control::MediaEvent> {
        use crate::media::control::{BindFailure, MediaCommand, MediaEvent};
        if let MediaCommand::Rebind { id, side, ip, .. } = m {
            return Some(if self.rebind_error {
                MediaEvent::RebindFailed {
                    id: *id,
                    side: *side,
                    error: format!("bind {ip}: Cannot assign requested address"),
                }
            } else {
                MediaEvent::Bound { id: *id }
            });
        }
        let MediaCommand::Open { id, ports, .. } = m else {
            return None;
        };
        let all = [
            Some(ports.a.rtp),
            ports.a.rtcp,
            Some(ports.b.rtp),
            ports.b.rtcp,
        ];
        let first = all.into_iter().flatten().next().unwrap_or(0);
        if let Some(failure) = self.bind_error {
            return Some(MediaEvent::OpenFailed {
                id: *id,
                port: first,
                failure,
                error: format!("bind 127.0.0.1:{first}: {}", failure.as_str()),
            });
        }
        match all.into_iter().flatten().find(|p| self.taken.contains(p)) {
            Some(port) => Some(MediaEvent::OpenFailed {
                id: *id,
                port,
                failure: BindFailure::AddrInUse,
                error: format!("bind 127.0.0.1:{port}: Address in use"),
            }),
            None => Some(MediaEvent::Bound { id: *id }),
        }
    }

    /// Drains the core like the shell does, through `poll_output` (each `Open` answered at
    /// once); returns the next deadline.
    pub(super) fn collect(&mut self) -> Option<Instant> {
        loop {
            match self.core.poll_output() {
                Output::Media(m) => {
                    let answer = self.shell_answer(&m);
                    self.media.push(m);
                    if let Some(ev) = answer {
                        self.core.handle_media_event(ev, self.now);
                    }
                }
                Output::Ai(c) => self.ai.push(c),
                Output::Webhook(w) => self.webhooks.push_back(w),
                Output::Transmit(t) => {
                    let text = String::from_utf8_lossy(&t.data).to_string();
                    self.sent.push((self.now - self.start, t.remote, text));
                }
                Output::Record(r) => self.records.push_back(r),
                Output::Timeout(at) => return at,
            }
        }
    }

    /// The next finished call's record the core gave out.
    pub(super) fn poll_record(&mut self) -> Option<crate::b2bua::record::CallRecord> {
        self.collect();
        self.records.pop_front()
    }

    /// The next webhook event the core gave out.
    pub(super) fn poll_webhook(&mut self) -> Option<serde_json::Value> {
        self.collect();
        self.webhooks.pop_front()
    }

    pub(super) fn recv(&mut self, from: &str, data: String) {
        self.recv_at(HF, from, data);
    }

    /// `data` from `from`, received on holdfast's UDP listener `local`.
    pub(super) fn recv_at(&mut self, local: &str, from: &str, data: String) {
        self.core.handle_received(
            Received {
                transport: crate::sip::Transport::Udp,
                local: local.parse().unwrap(),
                remote: from.parse().unwrap(),
                data: Bytes::from(data),
            },
            self.now,
        );
        self.collect();
    }

    /// Advances the clock to `start + at`, firing every deadline on the way in order.
    pub(super) fn advance_to(&mut self, at: Duration) {
        let target = self.start + at;
        while let Some(t) = self.collect() {
            if t > target {
                break;
            }
            self.now = self.now.max(t);
            self.core.handle_timeout(self.now);
            self.collect();
        }
        self.now = target;
    }

    /// Messages sent to `to` since index `from` whose first line starts with `start`.
    pub(super) fn find(&self, to: &str, start: &str) -> Vec<(Duration, String)> {
        let to: SocketAddr = to.parse().unwrap();
        self.sent
            .iter()
            .filter(|(_, r, m)| *r == to && m.starts_with(start))
            .map(|(t, _, m)| (*t, m.clone()))
            .collect()
    }

    pub(super) fn last(&self, to: &str, start: &str) -> String {
        self.find(to, start)
            .pop()
            .unwrap_or_else(|| panic!("nothing starting {start:?} sent to {to}: {:#?}", self.sent))
            .1
    }
}

/// Another agent's answer (another address and port): a second provider after a re-route.
pub(super) const SDP_B2: &str = "v=0\r\no=b2 7 7 IN IP4 192.0.2.30\r\ns=-\r\nc=IN IP4 192.0.2.30\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\n";

/// The first relay the call opened.
pub(super) fn relay(sim: &Sim) -> crate::media::control::RelayId {
    sim.media
        .iter()
        .find_map(|m| match m {
            crate::media::control::MediaCommand::Open { id, .. } => Some(*id),
            _ => None,
        })
        .expect("a relay was opened")
}

/// A report of the media shell, handed to the core now.
pub(super) fn media_event(sim: &mut Sim, ev: crate::media::control::MediaEvent) {
    sim.core.handle_media_event(ev, sim.now);
    sim.collect();
}

/// The (one) call in progress.
pub(super) fn call(sim: &Sim) -> Call {
    sim.core.calls().next().expect("the call is alive").clone()
}

/// The relay updates sent to the media shell since command `from`.
pub(super) fn updates_since(sim: &Sim, from: usize) -> Vec<crate::media::control::RelayUpdate> {
    sim.media[from..]
        .iter()
        .filter_map(|m| match m {
            crate::media::control::MediaCommand::Update { update, .. } => Some(*update),
            _ => None,
        })
        .collect()
}

/// Everything holdfast sent the carrier so far.
pub(super) fn to_carrier(sim: &Sim) -> usize {
    let carrier: SocketAddr = CARRIER.parse().unwrap();
    sim.sent.iter().filter(|(_, r, _)| *r == carrier).count()
}

/// The core's `/metrics` text now.
pub(super) fn metrics_text(sim: &Sim) -> String {
    let mut m = crate::admin::metrics::Exposition::new();
    sim.core.render_metrics(&mut m, sim.now);
    m.finish()
}

pub(super) fn header<'a>(msg: &'a str, name: &str) -> &'a str {
    msg.lines()
        .find(|l| {
            l.len() > name.len()
                && l[..name.len()].eq_ignore_ascii_case(name)
                && l.as_bytes()[name.len()] == b':'
        })
        .map(|l| l[name.len() + 1..].trim())
        .unwrap_or("")
}

pub(super) const SDP_A: &str = "v=0\r\no=a 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";
pub(super) const SDP_B: &str = "v=0\r\no=b 2 2 IN IP4 192.0.2.20\r\ns=-\r\nc=IN IP4 192.0.2.20\r\nt=0 0\r\nm=audio 5000 RTP/AVP 0\r\n";

pub(super) fn invite(extra: &str) -> String {
    format!(
        "INVITE sip:+15551230000@{HF} SIP/2.0\r\nVia: SIP/2.0/UDP {CARRIER};branch=z9hG4bKcarrier1;rport\r\n\
         From: \"Alice\" <sip:+15550001111@carrier.example>;tag=ctag\r\nTo: <sip:+15551230000@{HF}>\r\n\
         Call-ID: carrier-call-1@carrier.example\r\nCSeq: 10 INVITE\r\nContact: <sip:gw@{CARRIER}>\r\n\
         Max-Forwards: 70\r\nX-Carrier-Thing: keep-me\r\n{extra}Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{SDP_A}",
        SDP_A.len()
    )
}

/// A response from the UAS to `req` (a request holdfast sent it).
pub(super) fn answer(
    req: &str,
    status: u16,
    reason: &str,
    extra: &str,
    body: Option<&str>,
) -> String {
    let mut out = format!("SIP/2.0 {status} {reason}\r\n");
    for l in req.lines() {
        let lower = l.to_ascii_lowercase();
        if lower.starts_with("via:")
            || lower.starts_with("from:")
            || lower.starts_with("call-id:")
            || lower.starts_with("cseq:")
        {
            out.push_str(l);
            out.push_str("\r\n");
        }
        if lower.starts_with("to:") {
            out.push_str(l);
            if !lower.contains("tag=") && status > 100 {
                out.push_str(";tag=uastag");
            }
            out.push_str("\r\n");
        }
    }
    out.push_str(&format!("Contact: <sip:agent@{AGENT_A}>\r\n{extra}"));
    match body {
        Some(b) => out.push_str(&format!(
            "Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{b}",
            b.len()
        )),
        None => out.push_str("Content-Length: 0\r\n\r\n"),
    }
    out
}

pub(super) fn ack_from_carrier(ok: &str) -> String {
    format!(
        "ACK sip:gw@{HF} SIP/2.0\r\nVia: SIP/2.0/UDP {CARRIER};branch=z9hG4bKcarrierack\r\n\
         From: \"Alice\" <sip:+15550001111@carrier.example>;tag=ctag\r\nTo: {}\r\n\
         Call-ID: carrier-call-1@carrier.example\r\nCSeq: 10 ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
        header(ok, "To")
    )
}

/// Sets up an answered, confirmed call; the UAS answers with `uas_extra` in its 200.
pub(super) fn confirmed_call(sim: &mut Sim, invite_extra: &str, uas_extra: &str) -> String {
    sim.recv(CARRIER, invite(invite_extra));
    assert!(sim.last(CARRIER, "SIP/2.0 100").contains("CSeq: 10 INVITE"));
    let b_invite = sim.last(AGENT_A, "INVITE ");
    sim.recv(
        AGENT_A,
        answer(&b_invite, 200, "OK", uas_extra, Some(SDP_B)),
    );
    let ok = sim.last(CARRIER, "SIP/2.0 200");
    sim.recv(CARRIER, ack_from_carrier(&ok));
    assert_eq!(
        sim.find(AGENT_A, "ACK ").len(),
        1,
        "ACK relayed to the callee"
    );
    b_invite
}

#[test]
fn b_leg_hides_the_a_leg_and_keeps_other_headers() {
    let mut sim = Sim::new("");
    let b_invite = confirmed_call(&mut sim, "", "");
    assert!(
        !b_invite.contains("carrier-call-1"),
        "Call-ID leaked: {b_invite}"
    );
    assert!(
        !b_invite.contains("5091"),
        "caller's address leaked: {b_invite}"
    );
    assert!(!b_invite.contains("ctag"), "caller's tag leaked");
    assert!(b_invite.starts_with(&format!("INVITE sip:agent@{AGENT_A} SIP/2.0")));
    assert_eq!(header(&b_invite, "X-Carrier-Thing"), "keep-me");
    assert_eq!(header(&b_invite, "Max-Forwards"), "69");
    // Media is anchored: each side sees holdfast's address and ports, never the other's.
    assert!(
        !b_invite.contains("192.0.2.10"),
        "caller's media address leaked: {b_invite}"
    );
    assert!(b_invite.contains("c=IN IP4 127.0.0.1\r\n") && b_invite.contains("o=holdfast "));
    let port = |m: &str| -> u16 {
        m.lines()
            .find_map(|l| l.strip_prefix("m=audio "))
            .and_then(|r| r.split(' ').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or(0)
    };
    assert!((16384..=32767).contains(&port(&b_invite)), "{b_invite}");
    assert!(b_invite.contains(" RTP/AVP 0\r\n"));
    let ok = sim.last(CARRIER, "SIP/2.0 200");
    assert!(
        !ok.contains("192.0.2.20"),
        "callee's media address leaked: {ok}"
    );
    assert!(ok.contains("c=IN IP4 127.0.0.1\r\n"));
    assert!((16384..=32767).contains(&port(&ok)) && port(&ok) != port(&b_invite));
    assert!(
        !ok.contains("uastag") && !ok.contains(AGENT_A),
        "callee's identity leaked: {ok}"
    );
    assert_eq!(sim.core.stats().calls_active, 1);
}

#[test]
fn no_provisional_within_attempt_timeout_moves_on_at_exactly_one_second() {
    let mut sim = Sim::new("");
    sim.recv(CARRIER, invite(""));
    assert_eq!(sim.find(AGENT_A, "INVITE ").len(), 1);
    sim.advance_to(Duration::from_millis(999));
    assert!(
        sim.find(AGENT_B, "INVITE ").is_empty(),
        "failed over too early"
    );
    sim.advance_to(Duration::from_millis(1000));
    let tries = sim.find(AGENT_B, "INVITE ");
    assert_eq!(tries.len(), 1);
    assert_eq!(tries[0].0, Duration::from_secs(1));
    // The first target answers late: it is acknowledged and hung up, never connected.
    let first = sim.find(AGENT_A, "INVITE ").remove(0).1;
    sim.recv(AGENT_A, answer(&first, 200, "OK", "", Some(SDP_B)));
    assert_eq!(sim.find(AGENT_A, "ACK ").len(), 1);
    assert_eq!(sim.find(AGENT_A, "BYE ").len(), 1);
    assert!(
        sim.find(CARRIER, "SIP/2.0 200").is_empty(),
        "late answer must not reach the caller"
    );
}

#[test]
fn session_timers_are_refreshed_so_the_call_outlives_30_minutes() {
    let mut sim = Sim::new("");
    // The callee lets holdfast refresh its leg; the carrier does not do session timers.
    confirmed_call(
        &mut sim,
        "",
        "Session-Expires: 1800;refresher=uac\r\nRequire: timer\r\n",
    );
    // Answer every refresh holdfast sends, on either leg, once per (peer, CSeq).
    let mut answered = std::collections::HashSet::new();
    answered.insert((AGENT_A, "1 INVITE".to_string()));
    let mut t = Duration::ZERO;
    while t < Duration::from_secs(3 * 3600) {
        t += Duration::from_secs(60);
        sim.advance_to(t);
        for peer in [AGENT_A, CARRIER] {
            for kind in ["INVITE ", "UPDATE "] {
                for (_, r) in sim.find(peer, kind) {
                    let cseq = header(&r, "CSeq").to_string();
                    if answered.insert((peer, cseq)) {
                        let resp = answer(
                            &r,
                            200,
                            "OK",
                            "Session-Expires: 1800;refresher=uac\r\n",
                            Some(SDP_B),
                        );
                        sim.recv(peer, resp);
                    }
                }
            }
        }
    }
    let trace: Vec<String> = sim
        .sent
        .iter()
        .map(|(t, r, m)| {
            format!(
                "{t:?} {r} {} | {}",
                m.lines().next().unwrap_or(""),
                header(m, "Reason")
            )
        })
        .collect();
    assert!(
        sim.find(AGENT_A, "BYE ").is_empty(),
        "holdfast hung up the callee:\n{}",
        trace.join("\n")
    );
    assert!(
        sim.find(CARRIER, "BYE ").is_empty(),
        "holdfast hung up the caller"
    );
    let b_refreshes = sim.find(AGENT_A, "INVITE ").len() + sim.find(AGENT_A, "UPDATE ").len() - 1;
    let a_refreshes = sim.find(CARRIER, "INVITE ").len() + sim.find(CARRIER, "UPDATE ").len();
    // Refreshes at half the interval: every 15 minutes for 3 hours.
    assert!(
        b_refreshes >= 11,
        "callee leg refreshed {b_refreshes} times"
    );
    assert!(
        a_refreshes >= 11,
        "caller leg refreshed {a_refreshes} times"
    );
    let first = sim.find(AGENT_A, "INVITE ")[1].0;
    assert_eq!(
        first,
        Duration::from_secs(900),
        "first refresh at half of Session-Expires"
    );
    assert_eq!(sim.core.stats().calls_active, 1);
}

#[test]
fn a_peer_that_never_refreshes_is_hung_up_before_expiry() {
    let mut sim = Sim::new("");
    // The callee is the refresher of its leg but never refreshes (RFC 4028 §10).
    confirmed_call(
        &mut sim,
        "",
        "Session-Expires: 300;refresher=uas\r\nRequire: timer\r\n",
    );
    sim.advance_to(Duration::from_secs(199));
    assert!(sim.find(AGENT_A, "BYE ").is_empty());
    // BYE at expiry − min(32 s, interval/3) = 300 − 32.
    sim.advance_to(Duration::from_secs(300));
    let mut byes = sim.find(AGENT_A, "BYE ");
    byes.dedup_by(|a, b| a.1 == b.1); // retransmissions of the same BYE
    assert_eq!(byes.len(), 1);
    assert_eq!(byes[0].0, Duration::from_secs(268));
    let mut a_byes = sim.find(CARRIER, "BYE ");
    a_byes.dedup_by(|a, b| a.1 == b.1);
    assert_eq!(a_byes.len(), 1, "the caller is told too");
}

#[test]
fn bye_from_the_caller_is_answered_at_once_and_relayed() {
    let mut sim = Sim::new("");
    confirmed_call(&mut sim, "", "");
    let ok = sim.last(CARRIER, "SIP/2.0 200");
    let bye = format!(
        "BYE sip:gw@{HF} SIP/2.0\r\nVia: SIP/2.0/UDP {CARRIER};branch=z9hG4bKbye1\r\n\
         From: \"Alice\" <sip:+15550001111@carrier.example>;tag=ctag\r\nTo: {}\r\n\
         Call-ID: carrier-call-1@carrier.example\r\nCSeq: 11 BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
        header(&ok, "To")
    );
    sim.recv(CARRIER, bye);
    assert!(sim.last(CARRIER, "SIP/2.0 200").contains("CSeq: 11 BYE"));
    let b_bye = sim.last(AGENT_A, "BYE ");
    assert!(b_bye.contains("tag=uastag"));
    sim.recv(AGENT_A, answer(&b_bye, 200, "OK", "", None));
    assert_eq!(sim.core.stats().calls_active, 0);
}

#[test]
fn in_dialog_request_for_unknown_dialog_gets_481_and_unknown_method_501() {
    let mut sim = Sim::new("");
    let bye = format!(
        "BYE sip:x@{HF} SIP/2.0\r\nVia: SIP/2.0/UDP {CARRIER};branch=z9hG4bKnope\r\n\
         From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\nCall-ID: nope\r\nCSeq: 1 BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    );
    sim.recv(CARRIER, bye);
    assert!(sim.last(CARRIER, "SIP/2.0 ").starts_with("SIP/2.0 481"));
    let ext = format!(
        "FROBNICATE sip:x@{HF} SIP/2.0\r\nVia: SIP/2.0/UDP {CARRIER};branch=z9hG4bKfrob\r\n\
         From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nCall-ID: frob\r\nCSeq: 1 FROBNICATE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    );
    sim.recv(CARRIER, ext);
    let r = sim.last(CARRIER, "SIP/2.0 ");
    assert!(r.starts_with("SIP/2.0 501"), "{r}");
    assert!(header(&r, "Allow").contains("INVITE"));
}

pub(super) fn in_dialog_from_carrier(
    ok: &str,
    method: &str,
    cseq: u32,
    branch: &str,
    extra: &str,
    body: Option<&str>,
) -> String {
    let mut m = format!(
        "{method} sip:gw@{HF} SIP/2.0\r\nVia: SIP/2.0/UDP {CARRIER};branch={branch}\r\n\
         From: \"Alice\" <sip:+15550001111@carrier.example>;tag=ctag\r\nTo: {}\r\n\
         Call-ID: carrier-call-1@carrier.example\r\nCSeq: {cseq} {method}\r\nContact: <sip:gw@{CARRIER}>\r\nMax-Forwards: 70\r\n{extra}",
        header(ok, "To")
    );
    match body {
        Some(b) => m.push_str(&format!(
            "Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{b}",
            b.len()
        )),
        None => m.push_str("Content-Length: 0\r\n\r\n"),
    }
    m
}

pub(super) fn enabled(sim: &Sim, from: Side) -> Option<bool> {
    use crate::media::control::{MediaCommand, RelayUpdate};
    sim.media.iter().rev().find_map(|m| match m {
        MediaCommand::Update {
            update: RelayUpdate::SetEnabled { from: f, enabled },
            ..
        } if *f == from => Some(*enabled),
        _ => None,
    })
}

#[test]
fn hold_from_the_carrier_is_answered_on_its_leg_and_a_codec_change_is_relayed() {
    let mut sim = Sim::new("");
    let b_invite = confirmed_call(&mut sim, "", "");
    let ok = sim.last(CARRIER, "SIP/2.0 200");
    let our_port = ok
        .lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .and_then(|r| r.split(' ').next())
        .unwrap()
        .to_string();
    // Hold: sendonly is answered recvonly (never sendrecv), on the carrier's leg only.
    let hold_sdp = SDP_A.replace("o=a 1 1", "o=a 1 2").replace(
        "m=audio 4000 RTP/AVP 0\r\n",
        "m=audio 4000 RTP/AVP 0\r\na=sendonly\r\n",
    );
    sim.recv(
        CARRIER,
        in_dialog_from_carrier(&ok, "INVITE", 11, "z9hG4bKhold", "", Some(&hold_sdp)),
    );
    let held = sim.last(CARRIER, "SIP/2.0 200");
    assert!(held.contains("CSeq: 11 INVITE"), "{held}");
    assert!(
        held.contains("a=recvonly") && !held.contains("a=sendrecv"),
        "{held}"
    );
    assert!(
        held.contains(&format!("m=audio {our_port} RTP/AVP 0")),
        "same port: {held}"
    );
    assert_eq!(
        sim.find(AGENT_A, "INVITE ").len(),
        1,
        "the AI leg is not disturbed"
    );
    assert_eq!(
        enabled(&sim, Side::B),
        Some(false),
        "the agent's audio is not sent to a held caller"
    );
    assert_eq!(
        enabled(&sim, Side::A),
        Some(true),
        "music on hold still reaches the agent"
    );
    sim.recv(
        CARRIER,
        in_dialog_from_carrier(&ok, "ACK", 11, "z9hG4bKholdack", "", None),
    );
    // Unhold.
    let unhold = SDP_A.replace("o=a 1 1", "o=a 1 3");
    sim.recv(
        CARRIER,
        in_dialog_from_carrier(&ok, "INVITE", 12, "z9hG4bKunhold", "", Some(&unhold)),
    );
    let resumed = sim.last(CARRIER, "SIP/2.0 200");
    assert!(
        resumed.contains("CSeq: 12 INVITE") && !resumed.contains("a=recvonly"),
        "{resumed}"
    );
    assert_eq!(enabled(&sim, Side::B), Some(true));
    assert_eq!(sim.find(AGENT_A, "INVITE ").len(), 1);
    let v = |m: &str| {
        m.lines()
            .find(|l| l.starts_with("o=holdfast"))
            .unwrap()
            .to_string()
    };
    assert_ne!(
        v(&held),
        v(&resumed),
        "o= version moves when our answer changes"
    );
    sim.recv(
        CARRIER,
        in_dialog_from_carrier(&ok, "ACK", 12, "z9hG4bKunholdack", "", None),
    );
    // A codec change needs the agent: relayed in the B leg's own dialog and CSeq space.
    let pcma = SDP_A
        .replace("o=a 1 1", "o=a 1 4")
        .replace("RTP/AVP 0", "RTP/AVP 8");
    sim.recv(
        CARRIER,
        in_dialog_from_carrier(&ok, "INVITE", 13, "z9hG4bKcodec", "", Some(&pcma)),
    );
    let reinv = sim.last(AGENT_A, "INVITE ");
    assert_eq!(
        header(&reinv, "Call-ID"),
        header(&b_invite, "Call-ID"),
        "B leg's own dialog"
    );
    assert_eq!(header(&reinv, "CSeq"), "2 INVITE", "B leg's own CSeq space");
    assert!(reinv.contains("tag=uastag"));
    assert!(
        reinv.contains("RTP/AVP 8") && !reinv.contains("192.0.2.10"),
        "{reinv}"
    );
    let answer_sdp = SDP_B
        .replace("o=b 2 2", "o=b 2 3")
        .replace("RTP/AVP 0", "RTP/AVP 8");
    sim.recv(AGENT_A, answer(&reinv, 200, "OK", "", Some(&answer_sdp)));
    let ok2 = sim.last(CARRIER, "SIP/2.0 200");
    assert!(
        ok2.contains("CSeq: 13 INVITE") && ok2.contains("RTP/AVP 8"),
        "{ok2}"
    );
    assert!(
        ok2.contains(&format!("m=audio {our_port} ")),
        "same port: {ok2}"
    );
    // The carrier's ACK for that 2xx becomes the ACK on the B leg, with B's CSeq.
    let acks_before = sim.find(AGENT_A, "ACK ").len();
    sim.recv(
        CARRIER,
        in_dialog_from_carrier(&ok, "ACK", 13, "z9hG4bKcodecack", "", None),
    );
    let acks = sim.find(AGENT_A, "ACK ");
    assert_eq!(acks.len(), acks_before + 1);
    assert_eq!(header(&acks.last().unwrap().1, "CSeq"), "2 ACK");
    // And the 2xx toward the carrier is no longer retransmitted.
    let n = sim.find(CARRIER, "SIP/2.0 200").len();
    sim.advance_to(Duration::from_secs(10));
    assert_eq!(sim.find(CARRIER, "SIP/2.0 200").len(), n);
}

#[test]
fn info_is_relayed_and_in_dialog_options_answered_locally() {
    let mut sim = Sim::new("");
    confirmed_call(&mut sim, "", "");
    let ok = sim.last(CARRIER, "SIP/2.0 200");
    let dtmf = "Signal=5\r\nDuration=160\r\n";
    let mut info = in_dialog_from_carrier(&ok, "INFO", 12, "z9hG4bKinfo", "", None);
    info = info.replace(
        "Content-Length: 0\r\n\r\n",
        &format!(
            "Content-Type: application/dtmf-relay\r\nContent-Length: {}\r\n\r\n{dtmf}",
            dtmf.len()
        ),
    );
    sim.recv(CARRIER, info);
    let relayed = sim.last(AGENT_A, "INFO ");
    assert!(relayed.contains(dtmf) && relayed.contains("application/dtmf-relay"));
    sim.recv(AGENT_A, answer(&relayed, 200, "OK", "", None));
    assert!(sim.last(CARRIER, "SIP/2.0 200").contains("CSeq: 12 INFO"));

    sim.recv(
        CARRIER,
        in_dialog_from_carrier(&ok, "OPTIONS", 13, "z9hG4bKopt", "", None),
    );
    assert!(sim
        .last(CARRIER, "SIP/2.0 200")
        .contains("CSeq: 13 OPTIONS"));
    assert!(
        sim.find(AGENT_A, "OPTIONS ").is_empty(),
        "in-dialog OPTIONS is answered, not relayed"
    );
}

#[test]
fn cancel_before_any_provisional_is_sent_once_one_arrives() {
    let mut sim = Sim::new("");
    sim.recv(CARRIER, invite(""));
    let cancel = format!(
        "CANCEL sip:+15551230000@{HF} SIP/2.0\r\nVia: SIP/2.0/UDP {CARRIER};branch=z9hG4bKcarrier1;rport\r\n\
         From: \"Alice\" <sip:+15550001111@carrier.example>;tag=ctag\r\nTo: <sip:+15551230000@{HF}>\r\n\
         Call-ID: carrier-call-1@carrier.example\r\nCSeq: 10 CANCEL\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    );
    sim.recv(CARRIER, cancel);
    assert!(sim.last(CARRIER, "SIP/2.0 200").contains("CSeq: 10 CANCEL"));
    assert!(sim.last(CARRIER, "SIP/2.0 487").contains("CSeq: 10 INVITE"));
    // §9.1: no CANCEL before the callee sent a provisional…
    assert!(sim.find(AGENT_A, "CANCEL ").is_empty());
    let b_invite = sim.last(AGENT_A, "INVITE ");
    sim.recv(AGENT_A, answer(&b_invite, 180, "Ringing", "", None));
    // …and one as soon as it does.
    let c = sim.last(AGENT_A, "CANCEL ");
    assert_eq!(header(&c, "Call-ID"), header(&b_invite, "Call-ID"));
    assert_eq!(
        header(&c, "Via"),
        header(&b_invite, "Via"),
        "same branch as the INVITE"
    );
    assert!(
        sim.find(CARRIER, "SIP/2.0 180").is_empty(),
        "nothing more reaches the cancelled caller"
    );
    assert_eq!(sim.core.stats().calls_active, 0);
}

/// A core whose `sip.answer_options` lets a monitor on loopback ping it (the OPTIONS
/// tests below come from an address that is no target's source).
fn pinged_sim(force_rport: bool) -> Sim {
    let mut cfg = (*config("")).clone();
    cfg.sip.answer_options = vec![crate::config::parse_source("127.0.0.1/32").unwrap()];
    cfg.sip.force_rport = force_rport;
    Sim::with_config(Arc::new(cfg))
}

#[test]
fn responses_follow_via_sent_by_unless_rport_asks_for_the_source_port() {
    let mut sim = pinged_sim(false);
    let options = |branch: &str, rport: &str| {
        format!(
            "OPTIONS sip:{HF} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5091;branch={branch}{rport}\r\n\
             From: <sip:mon@x>;tag=1\r\nTo: <sip:{HF}>\r\nCall-ID: {branch}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        )
    };
    // From source port 40000, Via says 5091.
    sim.recv("127.0.0.1:40000", options("z9hG4bKnorport", ""));
    assert_eq!(
        sim.find(CARRIER, "SIP/2.0 200").len(),
        1,
        "§18.2.2: sent-by port"
    );
    sim.recv("127.0.0.1:40000", options("z9hG4bKrport", ";rport"));
    assert_eq!(
        sim.find("127.0.0.1:40000", "SIP/2.0 200").len(),
        1,
        "RFC 3581: source port"
    );
}

#[test]
fn force_rport_answers_the_source_port_without_rport() {
    let mut sim = pinged_sim(true);
    sim.recv(
        "127.0.0.1:40000",
        format!(
            "OPTIONS sip:{HF} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5091;branch=z9hG4bKforce\r\n\
             From: <sip:mon@x>;tag=1\r\nTo: <sip:{HF}>\r\nCall-ID: force\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        ),
    );
    assert_eq!(sim.find("127.0.0.1:40000", "SIP/2.0 200").len(), 1);
}

/// Places a call from the carrier with its own Call-ID and branch; returns the INVITE sent
/// to whichever agent got it first.
pub(super) fn new_call(sim: &mut Sim, n: u32) -> String {
    let inv = invite("")
        .replace("carrier-call-1@", &format!("carrier-call-{n}@"))
        .replace("z9hG4bKcarrier1", &format!("z9hG4bKcarrier{n}"));
    let before = sim.sent.len();
    sim.recv(CARRIER, inv);
    sim.sent[before..]
        .iter()
        .find(|(_, _, m)| m.starts_with("INVITE sip:agent@"))
        .map(|(_, _, m)| m.clone())
        .expect("an INVITE to an agent")
}

#[test]
fn two_consecutive_503s_open_the_breaker_for_the_very_next_call() {
    let mut sim = Sim::new("");
    for n in 1..=2 {
        let before = sim.find(AGENT_A, "INVITE ").len();
        new_call(&mut sim, n);
        let to_a = sim.find(AGENT_A, "INVITE ");
        assert_eq!(to_a.len(), before + 1, "call {n} tries agent-a first");
        let inv = to_a.last().unwrap().1.clone();
        sim.recv(AGENT_A, answer(&inv, 503, "Service Unavailable", "", None));
        // …and fails over to agent-b, which answers.
        let b = sim.last(AGENT_B, "INVITE ");
        sim.recv(AGENT_B, answer(&b, 200, "OK", "", Some(SDP_B)));
    }
    let tried_a = sim.find(AGENT_A, "INVITE ").len();
    new_call(&mut sim, 3);
    assert_eq!(
        sim.find(AGENT_A, "INVITE ").len(),
        tried_a,
        "breaker open: agent-a skipped"
    );
    assert_eq!(
        sim.find(AGENT_B, "INVITE ").len(),
        3,
        "the third call goes straight to agent-b"
    );
}

#[test]
fn a_target_at_max_calls_gets_no_more_until_one_ends() {
    let mut sim = Sim::new("");
    let mut cfg = (*config("")).clone();
    for t in cfg.ai_providers.iter_mut() {
        if t.id.as_str() == "agent-a" {
            t.max_calls = Some(1);
        }
    }
    sim.core.handle_reload(Arc::new(cfg), sim.now);
    let first = new_call(&mut sim, 1);
    assert!(first.starts_with(&format!("INVITE sip:agent@{AGENT_A}")));
    let second = new_call(&mut sim, 2);
    assert!(
        second.starts_with(&format!("INVITE sip:agent@{AGENT_B}")),
        "agent-a is at max_calls: {second}"
    );
    // The first call ends (the callee is busy): its slot is free again.
    sim.recv(AGENT_A, answer(&first, 486, "Busy Here", "", None));
    assert_eq!(
        sim.find(CARRIER, "SIP/2.0 486").len(),
        1,
        "the busy reached the caller"
    );
    let third = new_call(&mut sim, 3);
    assert!(
        third.starts_with(&format!("INVITE sip:agent@{AGENT_A}")),
        "agent-a's slot was not released: {third}"
    );
}

#[test]
fn responses_carry_received_and_rport_on_the_top_via() {
    let mut sim = pinged_sim(false);
    sim.recv(
        "127.0.0.1:40000",
        format!(
            "OPTIONS sip:{HF} SIP/2.0\r\nVia: SIP/2.0/UDP 10.9.9.9:5099;branch=z9hG4bKstamp;rport\r\n\
             From: <sip:mon@x>;tag=1\r\nTo: <sip:{HF}>\r\nCall-ID: stamp\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        ),
    );
    let r = sim.last("127.0.0.1:40000", "SIP/2.0 200");
    assert_eq!(
        header(&r, "Via"),
        "SIP/2.0/UDP 10.9.9.9:5099;branch=z9hG4bKstamp;received=127.0.0.1;rport=40000"
    );
}

#[test]
fn a_retransmitted_2xx_after_confirmation_gets_the_ack_again() {
    let mut sim = Sim::new("");
    let b_invite = confirmed_call(&mut sim, "", "");
    // Our ACK was lost: the callee retransmits its 200 (RFC 3261 §13.3.1.4).
    sim.recv(AGENT_A, answer(&b_invite, 200, "OK", "", Some(SDP_B)));
    assert_eq!(
        sim.find(AGENT_A, "ACK ").len(),
        2,
        "ACK re-sent for the retransmitted 2xx"
    );
    assert_eq!(
        sim.find(CARRIER, "SIP/2.0 200").len(),
        1,
        "the caller sees one answer"
    );
    // The call is still confirmed: an in-dialog re-INVITE is relayed, not refused with 491.
    let ok = sim.last(CARRIER, "SIP/2.0 200");
    sim.recv(
        CARRIER,
        in_dialog_from_carrier(
            &ok,
            "INVITE",
            11,
            "z9hG4bKre",
            "",
            Some(&SDP_A.replace("o=a 1 1", "o=a 1 2")),
        ),
    );
    assert!(
        sim.find(CARRIER, "SIP/2.0 491").is_empty(),
        "call fell out of Confirmed"
    );
    // Same media, new version: answered on the carrier's leg alone.
    assert!(sim.last(CARRIER, "SIP/2.0 200").contains("CSeq: 11 INVITE"));
    assert_eq!(sim.find(AGENT_A, "INVITE ").len(), 1);
}

#[test]
fn a_2xx_from_another_fork_is_acked_and_hung_up() {
    let mut sim = Sim::new("");
    let b_invite = confirmed_call(&mut sim, "", "");
    let forked = answer(&b_invite, 200, "OK", "", Some(SDP_B)).replace("tag=uastag", "tag=fork2");
    sim.recv(AGENT_A, forked);
    let acks = sim.find(AGENT_A, "ACK ");
    assert!(acks.last().unwrap().1.contains("tag=fork2"));
    let byes = sim.find(AGENT_A, "BYE ");
    assert_eq!(byes.len(), 1);
    assert!(
        byes[0].1.contains("tag=fork2"),
        "only the extra fork is hung up"
    );
    assert!(sim.find(CARRIER, "BYE ").is_empty());
}

#[test]
fn ringing_without_answer_fails_over_after_ring_timeout() {
    let mut sim = Sim::new("");
    sim.recv(CARRIER, invite(""));
    let a = sim.last(AGENT_A, "INVITE ");
    sim.recv(AGENT_A, answer(&a, 180, "Ringing", "", None));
    sim.advance_to(Duration::from_secs(179));
    assert!(sim.find(AGENT_B, "INVITE ").is_empty());
    sim.advance_to(Duration::from_secs(180));
    assert_eq!(
        sim.find(AGENT_A, "CANCEL ").len(),
        1,
        "the silent ringer is cancelled"
    );
    let b = sim.find(AGENT_B, "INVITE ");
    assert_eq!(b.len(), 1, "the next candidate gets the call");
    assert_eq!(b[0].0, Duration::from_secs(180));
}

#[test]
fn ring_timeout_after_early_media_ends_the_call_with_408() {
    let mut sim = Sim::new("");
    sim.recv(CARRIER, invite(""));
    let a = sim.last(AGENT_A, "INVITE ");
    sim.recv(
        AGENT_A,
        answer(&a, 183, "Session Progress", "", Some(SDP_B)),
    );
    sim.advance_to(Duration::from_secs(181));
    let mut cancels = sim.find(AGENT_A, "CANCEL ");
    cancels.dedup_by(|a, b| a.1 == b.1); // Timer E retransmissions of the same CANCEL
    assert_eq!(cancels.len(), 1);
    assert!(
        sim.find(AGENT_B, "INVITE ").is_empty(),
        "no failover after early media"
    );
    let r = sim.last(CARRIER, "SIP/2.0 408");
    assert!(r.starts_with("SIP/2.0 408 Request Timeout"), "{r}");
}
