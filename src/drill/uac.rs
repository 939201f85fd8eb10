//! The drill's synthetic caller: a minimal SIP UAC over UDP (one socket per role, shared by
//! its calls) and one RTP socket per call.
//!
//! LIFECYCLE of one call: `Inviting` (INVITE retransmitted on Timer A, T1 doubling, until a
//! provisional; RFC 3261 §17.1.1.2) → on 2xx `Confirmed` (ACK to the Contact through the
//! Record-Route set, §13.2.2.4; a retransmitted 2xx is ACKed again) or on a final ≥ 300
//! `Failed` (ACK in the INVITE transaction, §17.1.1.3). While `Confirmed` the call talks as
//! its [`Speech`] says — a PCMU frame every 20 ms ([`super::tag::caller_payload`]) while it
//! talks, nothing in its pauses (the RTP timestamp runs on, the marker bit starts each talk
//! spurt; RFC 3551 §4.1), nothing once the drill cues silence — records when it talked and
//! every tagged echo; a BYE from holdfast is answered 200 and ends it (`Dropped`); re-INVITE
//! and UPDATE get 200 with the call's SDP. When the drill cues the hang-up: `Terminating`
//! (BYE retransmitted on Timer E, T1 doubling capped at T2, §17.1.2.2) → `Terminated` on its
//! final response or after [`BYE_LIMIT`].
//!
//! The protocol shell of the drill: tokio sockets and timers. The wire format is holdfast's
//! own parser and builders; the verdict is computed elsewhere ([`super::report`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tokio::time::sleep_until;

use crate::media::rtp::{classify, PacketClass, RtpPacket};
use crate::media::sdp::Sdp;
use crate::sip::{parse, Message, Method, Request, RequestBuilder, Response, ResponseBuilder};

use super::peer::sdp;
use super::report::{CallKind, CallResult};
use super::tag::{caller_payload, find_echo};
use super::turns::Speech;

/// RFC 3261 T1 and T2.
const T1: Duration = Duration::from_millis(500);
const T2: Duration = Duration::from_secs(4);
/// How long a call may take to be answered (holdfast fails over within a few
/// `attempt_timeout`s).
pub const SETUP_LIMIT: Duration = Duration::from_secs(10);
/// How long the drill waits for the answer to its BYE.
pub const BYE_LIMIT: Duration = Duration::from_secs(4);
/// RTP packet interval.
const PTIME: Duration = Duration::from_millis(20);

/// One UDP SIP socket of the caller, shared by its calls: a receiver task hands each
/// message to its call by Call-ID; requests for an unknown call get 481.
pub struct SipSocket {
    sock: UdpSocket,
    pub local: SocketAddr,
    /// holdfast's SIP address.
    pub server: SocketAddr,
    calls: Mutex<HashMap<String, mpsc::UnboundedSender<Bytes>>>,
}

impl SipSocket {
    /// Wraps a bound std socket (bound before the config was written, so its address could
    /// go into `sources`) and starts its receiver. Needs a tokio runtime.
    pub fn start(std_sock: std::net::UdpSocket, server: SocketAddr) -> std::io::Result<Arc<Self>> {
        std_sock.set_nonblocking(true)?;
        let local = std_sock.local_addr()?;
        let s = Arc::new(SipSocket {
            sock: UdpSocket::from_std(std_sock)?,
            local,
            server,
            calls: Mutex::new(HashMap::new()),
        });
        let weak = Arc::downgrade(&s);
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65_536];
            loop {
                let Some(s) = weak.upgrade() else { return };
                let Ok((n, src)) = s.sock.recv_from(&mut buf).await else {
                    continue;
                };
                let Some(data) = buf.get(..n) else { continue };
                let Ok(msg) = parse(data) else { continue };
                let Ok(call_id) = msg.headers().call_id() else {
                    continue;
                };
                let tx = s.calls.lock().ok().and_then(|m| m.get(call_id).cloned());
                match (tx, &msg) {
                    (Some(tx), _) => {
                        let _ = tx.send(Bytes::copy_from_slice(data));
                    }
                    (None, Message::Request(r)) if r.method != Method::Ack => {
                        let resp = ResponseBuilder::for_request(r, 481, None)
                            .stamp_received(src)
                            .build();
                        let _ = s.sock.send_to(&resp, src).await;
                    }
                    _ => {}
                }
            }
        });
        Ok(s)
    }

    fn register(&self, call_id: &str) -> mpsc::UnboundedReceiver<Bytes> {
        let (tx, rx) = mpsc::unbounded_channel();
        if let Ok(mut m) = self.calls.lock() {
            m.insert(call_id.to_string(), tx);
        }
        rx
    }

    fn unregister(&self, call_id: &str) {
        if let Ok(mut m) = self.calls.lock() {
            m.remove(call_id);
        }
    }

    async fn send(&self, b: &[u8]) {
        let _ = self.sock.send_to(b, self.server).await;
    }
}

/// What to call.
#[derive(Debug, Clone)]
pub struct CallSpec {
    pub index: u16,
    pub kind: CallKind,
    pub callee: String,
    /// The Call-ID of the INVITE (unique per drill and call, so parallel drills never mix).
    pub call_id: String,
    /// How its caller talks.
    pub speech: Speech,
}

impl CallSpec {
    /// A call whose caller talks continuously.
    pub fn new(index: u16, kind: CallKind, callee: String) -> CallSpec {
        CallSpec {
            index,
            kind,
            callee,
            call_id: format!("drill-{}-{index}", rand_hex()),
            speech: Speech::Continuous,
        }
    }
}

/// What the drill tells its callers, in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cue {
    /// Talk (as the call's [`Speech`] says).
    Talk,
    /// Say nothing more: the last seconds before the hang-up.
    Silent,
    /// Hang up.
    HangUp,
}

/// Progress reports to the drill's orchestrator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// The call heard its first tagged echo: up, audio both ways.
    Audio(u16),
    /// The call was answered (200 OK, ACKed).
    Connected(u16),
    /// The call will never get there (refused, timed out, hung up).
    Over(u16),
}

fn rand_hex() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// The confirmed dialog, as the UAC needs it.
struct Dialog {
    /// To of the 2xx (with the remote tag).
    to: String,
    remote_target: String,
    /// Route headers for in-dialog requests: the 2xx's Record-Route, reversed (§12.1.2).
    routes: Vec<String>,
    remote_rtp: SocketAddr,
    ack: Bytes,
}

struct Leg<'a> {
    sip: &'a SipSocket,
    call_id: String,
    from: String,
    contact: String,
    sdp: String,
}

impl Leg<'_> {
    fn via(&self, branch: &str) -> String {
        format!("SIP/2.0/UDP {};branch={branch};rport", self.sip.local)
    }

    fn in_dialog(&self, d: &Dialog, method: Method<'_>, cseq: u32, branch: &str) -> RequestBuilder {
        let mut b = RequestBuilder::new(method, &d.remote_target)
            .header("Via", &self.via(branch))
            .max_forwards(70);
        for r in &d.routes {
            b = b.route(r);
        }
        b.header("From", &self.from)
            .header("To", &d.to)
            .call_id(&self.call_id)
            .cseq(cseq)
    }

    /// The dialog from a 2xx to the INVITE.
    fn dialog(&self, r: &Response<'_>, fallback_target: &str) -> Result<Dialog, String> {
        let to = r
            .headers
            .get(crate::sip::HeaderName::To)
            .ok_or("2xx without To")?
            .to_string();
        let remote_target = r
            .headers
            .contacts()
            .ok()
            .and_then(|c| c.as_slice().first().map(|na| na.uri_raw.to_string()))
            .unwrap_or_else(|| fallback_target.to_string());
        let mut routes: Vec<String> = r
            .headers
            .record_routes()
            .map(|v| v.iter().map(|na| na.to_string()).collect())
            .unwrap_or_default();
        routes.reverse();
        let sdp = Sdp::parse(r.body).map_err(|e| format!("2xx SDP: {e}"))?;
        let port = sdp
            .media
            .first()
            .map(|m| m.desc.port)
            .ok_or("2xx SDP without m=")?;
        let ip = sdp
            .effective_connection(0)
            .and_then(|c| c.address.ip())
            .ok_or("2xx SDP without an IP c=")?;
        let mut d = Dialog {
            to,
            remote_target,
            routes,
            remote_rtp: SocketAddr::new(ip, port),
            ack: Bytes::new(),
        };
        d.ack = self
            .in_dialog(&d, Method::Ack, 1, &format!("z9hG4bK-{}", rand_hex()))
            .build();
        Ok(d)
    }

    /// Answers an in-dialog request from holdfast; `true` when it was a BYE.
    async fn answer(&self, req: &Request<'_>) -> bool {
        let src = self.sip.server;
        let b = ResponseBuilder::for_request(req, 200, None).stamp_received(src);
        let b = match req.method {
            Method::Invite | Method::Update
                if !req.body.is_empty() || req.method == Method::Invite =>
            {
                b.header("Contact", &self.contact)
                    .body("application/sdp", self.sdp.clone().into_bytes())
            }
            _ => b,
        };
        if req.method != Method::Ack {
            self.sip.send(&b.build()).await;
        }
        req.method == Method::Bye
    }
}

/// Places one call, keeps it up (talking as `spec.speech` says, its turns counted from
/// `epoch`) until `cue` says hang up, hangs up, and returns what it saw. Offsets in the
/// result are from `t0`.
pub async fn run_call(
    spec: CallSpec,
    sip: Arc<SipSocket>,
    t0: Instant,
    epoch: Instant,
    progress: mpsc::UnboundedSender<Progress>,
    mut cue: watch::Receiver<Cue>,
) -> CallResult {
    let call_id = spec.call_id.clone();
    let mut res = CallResult {
        index: spec.index,
        kind: spec.kind,
        callee: spec.callee.clone(),
        call_id: call_id.clone(),
        placed_at: t0.elapsed(),
        setup: None,
        setup_error: None,
        talk: Vec::new(),
        echoes: Vec::new(),
        crossed: 0,
        sent: 0,
        remote_bye_at: None,
        bye_status: None,
    };
    let rtp = match UdpSocket::bind("127.0.0.1:0").await {
        Ok(s) => s,
        Err(e) => {
            res.setup_error = Some(format!("RTP socket: {e}"));
            let _ = progress.send(Progress::Over(spec.index));
            return res;
        }
    };
    let rtp_addr = rtp
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 9)));
    let mut rx = sip.register(&call_id);
    let leg = Leg {
        sip: &sip,
        call_id: call_id.clone(),
        from: format!("<sip:+15550000000@{}>;tag={}", sip.local.ip(), rand_hex()),
        contact: format!("<sip:drill@{}>", sip.local),
        sdp: sdp(rtp_addr, u64::from(spec.index)),
    };
    connected_call(
        &spec,
        &leg,
        &rtp,
        &mut rx,
        (t0, epoch),
        &progress,
        &mut cue,
        &mut res,
    )
    .await;
    sip.unregister(&call_id);
    if res.setup.is_none() || res.remote_bye_at.is_some() {
        let _ = progress.send(Progress::Over(spec.index));
    }
    res
}

#[allow(clippy::too_many_arguments)]
async fn connected_call(
    spec: &CallSpec,
    leg: &Leg<'_>,
    rtp: &UdpSocket,
    rx: &mut mpsc::UnboundedReceiver<Bytes>,
    (t0, epoch): (Instant, Instant),
    progress: &mpsc::UnboundedSender<Progress>,
    cue: &mut watch::Receiver<Cue>,
    res: &mut CallResult,
) {
    let sip = leg.sip;
    let ruri = format!("sip:{}@{}", spec.callee, sip.server);
    let branch = format!("z9hG4bK-{}", rand_hex());
    let to = format!("<sip:{}@{}>", spec.callee, sip.server);
    let invite_builder = |to: &str, method: Method<'static>| {
        RequestBuilder::new(method, &ruri)
            .header("Via", &leg.via(&branch))
            .max_forwards(70)
            .header("From", &leg.from)
            .header("To", to)
            .call_id(&leg.call_id)
            .cseq(1)
    };
    let invite = invite_builder(&to, Method::Invite)
        .header("Contact", &leg.contact)
        .header("User-Agent", "holdfast-drill")
        .body("application/sdp", leg.sdp.clone().into_bytes())
        .build();

    // Inviting.
    let start = Instant::now();
    sip.send(&invite).await;
    let (mut interval, mut next) = (T1, start + T1);
    let mut provisional = false;
    let dialog = loop {
        tokio::select! {
            m = rx.recv() => {
                let Some(b) = m else { return };
                let Ok(Message::Response(r)) = parse(&b) else { continue };
                if r.headers.cseq().ok().map(|c| c.method) != Some(Method::Invite) {
                    continue;
                }
                match r.status {
                    100..=199 => provisional = true,
                    200..=299 => match leg.dialog(&r, &ruri) {
                        Ok(d) => break d,
                        Err(e) => {
                            res.setup_error = Some(e);
                            return;
                        }
                    },
                    s => {
                        let to = r.headers.get(crate::sip::HeaderName::To).unwrap_or("").to_string();
                        sip.send(&invite_builder(&to, Method::Ack).build()).await;
                        res.setup_error = Some(format!("{s} {}", r.reason));
                        return;
                    }
                }
            }
            _ = sleep_until(next.into()), if !provisional => {
                sip.send(&invite).await;
                interval *= 2;
                next = Instant::now() + interval;
            }
            _ = sleep_until((start + SETUP_LIMIT).into()) => {
                res.setup_error = Some(format!("no answer within {} s", SETUP_LIMIT.as_secs()));
                return;
            }
        }
    };
    res.setup = Some(start.elapsed());
    sip.send(&dialog.ack).await;
    let _ = progress.send(Progress::Connected(spec.index));
    let answered = Instant::now();

    // Confirmed: talk (in turns, or on and on) until told to hang up.
    let payload = caller_payload(spec.index);
    let ssrc: u32 = rand::random();
    let (mut seq, mut ts): (u16, u32) = (rand::random(), rand::random());
    let mut pkt = vec![0u8; 12 + payload.len()];
    pkt[12..].copy_from_slice(&payload);
    let mut tick = tokio::time::interval(PTIME);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut buf = vec![0u8; 2048];
    let mut remote_rtp = dialog.remote_rtp;
    let mut heard = false;
    let mut in_spurt = false;
    loop {
        if *cue.borrow() == Cue::HangUp {
            break;
        }
        tokio::select! {
            _ = tick.tick() => {
                let now = Instant::now();
                let talk = *cue.borrow() == Cue::Talk
                    && spec.speech.talking(
                        now.saturating_duration_since(epoch),
                        now.saturating_duration_since(answered),
                    );
                if talk {
                    let at = t0.elapsed();
                    pkt[0] = 0x80;
                    // The marker bit starts each talk spurt (RFC 3551 §4.1).
                    pkt[1] = if in_spurt { 0 } else { 0x80 };
                    pkt[2..4].copy_from_slice(&seq.to_be_bytes());
                    pkt[4..8].copy_from_slice(&ts.to_be_bytes());
                    pkt[8..12].copy_from_slice(&ssrc.to_be_bytes());
                    let _ = rtp.send_to(&pkt, remote_rtp).await;
                    res.sent += 1;
                    seq = seq.wrapping_add(1);
                    match res.talk.last_mut() {
                        Some(spurt) if in_spurt => spurt.1 = at + PTIME,
                        _ => res.talk.push((at, at + PTIME)),
                    }
                }
                in_spurt = talk;
                // The sampling clock runs on through the pauses (RFC 3550 §5.1).
                ts = ts.wrapping_add(160);
            }
            r = rtp.recv_from(&mut buf) => {
                let Ok((n, _)) = r else { continue };
                let Some(data) = buf.get(..n) else { continue };
                if classify(data) != PacketClass::Rtp { continue }
                let Ok(p) = RtpPacket::new_checked(data) else { continue };
                if let Some((peer, call)) = find_echo(p.payload()) {
                    if call != spec.index {
                        res.crossed += 1;
                        continue;
                    }
                    res.echoes.push((t0.elapsed(), peer));
                    if !heard {
                        heard = true;
                        let _ = progress.send(Progress::Audio(spec.index));
                    }
                }
            }
            m = rx.recv() => {
                let Some(b) = m else { return };
                match parse(&b) {
                    Ok(Message::Request(req)) => {
                        if let Some(ip_port) = new_remote_rtp(&req) {
                            remote_rtp = ip_port;
                        }
                        if leg.answer(&req).await {
                            res.remote_bye_at = Some(t0.elapsed());
                            return;
                        }
                    }
                    Ok(Message::Response(r)) if r.status >= 200 && r.headers.cseq().ok().map(|c| c.method) == Some(Method::Invite) => {
                        sip.send(&dialog.ack).await; // 2xx retransmission (§13.2.2.4)
                    }
                    _ => {}
                }
            }
            _ = cue.changed() => {}
        }
    }

    // Terminating.
    let bye_branch = format!("z9hG4bK-{}", rand_hex());
    let bye = leg.in_dialog(&dialog, Method::Bye, 2, &bye_branch).build();
    let start = Instant::now();
    sip.send(&bye).await;
    let (mut interval, mut next) = (T1, start + T1);
    loop {
        tokio::select! {
            m = rx.recv() => {
                let Some(b) = m else { return };
                match parse(&b) {
                    Ok(Message::Response(r))
                        if r.status >= 200
                            && r.headers.cseq().ok().map(|c| c.method) == Some(Method::Bye) =>
                    {
                        res.bye_status = Some(r.status);
                        return;
                    }
                    Ok(Message::Request(req)) => {
                        // A BYE crossing ours: holdfast hung up first.
                        let bye = leg.answer(&req).await;
                        res.remote_bye_at = res.remote_bye_at.or(bye.then(|| t0.elapsed()));
                    }
                    _ => {}
                }
            }
            _ = sleep_until(next.into()) => {
                sip.send(&bye).await;
                interval = (interval * 2).min(T2);
                next = Instant::now() + interval;
            }
            _ = sleep_until((start + BYE_LIMIT).into()) => return,
        }
    }
}

/// The RTP address of an SDP offer in a re-INVITE/UPDATE, if it has one.
fn new_remote_rtp(req: &Request<'_>) -> Option<SocketAddr> {
    if req.body.is_empty() || !matches!(req.method, Method::Invite | Method::Update) {
        return None;
    }
    let sdp = Sdp::parse(req.body).ok()?;
    let port = sdp.media.first()?.desc.port;
    let ip = sdp.effective_connection(0)?.address.ip()?;
    Some(SocketAddr::new(ip, port))
}
