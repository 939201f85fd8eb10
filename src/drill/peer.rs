//! The drill's peer endpoints, each run as its own process (`holdfast peer <role>`) so the
//! drill can SIGKILL it:
//!
//! - `sip-agent`: a UAS on a UDP port, used for carriers and SIP AI agents alike. OPTIONS →
//!   200; INVITE → 100 + 200 with SDP (one RTP socket per call, `a=rtcp-mux`), the 200
//!   retransmitted until ACK (RFC 3261 §13.3.1.4); re-INVITE/UPDATE → 200 with the same SDP;
//!   BYE → 200; CANCEL, INFO, NOTIFY, PRACK, MESSAGE → 200; anything else → 501.
//! - `ws-bot`: a Twilio-Media-Streams WebSocket server: holdfast's `media` messages are sent
//!   back as `media` (a parrot); handshake-only health probes are fine.
//!
//! Both echo every RTP payload / `media` payload back to where it came from, stamped with
//! the peer's index ([`super::tag`]), so the caller knows who answers. That echo is all the
//! audio a peer ever sends: no greeting, no keepalive or comfort-noise packets, nothing on a
//! timer. So a peer is silent exactly while its caller is, like an agent with voice activity
//! detection and turn-taking that only speaks when spoken to (`--quiet-agents` has the
//! callers pause; what holdfast's WebSocket bridge sends the caller while a bot is quiet is
//! holdfast's own unmarked silence). A peer prints
//! `READY <ip:port>` on stdout once it listens and exits when its stdin closes (the drill is
//! gone). The SIP wire format is holdfast's own parser and builders.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use base64::Engine as _;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::{TcpListener, UdpSocket};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::media::rtp::{classify, PacketClass, RtpPacket};
use crate::sip::{parse, Message, Method, Request, ResponseBuilder};

use super::tag::stamp_echo;

/// Exits the process when stdin reaches EOF (the drill that owns this peer is gone).
fn exit_with_parent() {
    std::thread::spawn(|| {
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        std::process::exit(0);
    });
}

fn ready(addr: SocketAddr) {
    use std::io::Write as _;
    let mut out = std::io::stdout();
    let _ = writeln!(out, "READY {addr}");
    let _ = out.flush();
}

/// SDP for a drill endpoint: PCMU and telephone-event on `rtp`, RTCP muxed (RFC 5761) so
/// only one port is needed.
pub fn sdp(rtp: SocketAddr, session_id: u64) -> String {
    let ip = rtp.ip();
    format!(
        "v=0\r\no=drill {session_id} 1 IN IP4 {ip}\r\ns=drill\r\nc=IN IP4 {ip}\r\nt=0 0\r\n\
         m=audio {} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n\
         a=fmtp:101 0-16\r\na=ptime:20\r\na=rtcp-mux\r\na=sendrecv\r\n",
        rtp.port()
    )
}

/// Echoes RTP back to its source, stamped with `peer_index`; RTCP and other packets are
/// dropped.
async fn rtp_echo(sock: UdpSocket, peer_index: u8) {
    let mut buf = vec![0u8; 2048];
    loop {
        let Ok((n, src)) = sock.recv_from(&mut buf).await else {
            // ICMP errors surface here on Linux; keep serving.
            continue;
        };
        let Some(pkt) = buf.get_mut(..n) else {
            continue;
        };
        if classify(pkt) != PacketClass::Rtp {
            continue;
        }
        let Ok(mut rtp) = RtpPacket::new_checked(&mut *pkt) else {
            continue;
        };
        stamp_echo(rtp.payload_mut(), peer_index);
        let _ = sock.send_to(pkt, src).await;
    }
}

struct AgentCall {
    sdp: String,
    ok: Bytes,
    dest: SocketAddr,
    acked: bool,
    next_retx: Instant,
    retx_interval: Duration,
    retx_left: u32,
    echo: JoinHandle<()>,
}

impl Drop for AgentCall {
    fn drop(&mut self) {
        self.echo.abort();
    }
}

/// RFC 3261 T1.
const T1: Duration = Duration::from_millis(500);

/// Runs the `sip-agent` peer until the process is killed or its stdin closes.
pub async fn sip_agent(index: u8, name: &str) -> Result<()> {
    exit_with_parent();
    let sock = UdpSocket::bind("127.0.0.1:0").await.context("bind SIP")?;
    let local = sock.local_addr()?;
    ready(local);
    let mut calls: HashMap<String, AgentCall> = HashMap::new();
    let mut buf = vec![0u8; 65_536];
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut tag_n = 0u64;
    loop {
        tokio::select! {
            r = sock.recv_from(&mut buf) => {
                let Ok((n, src)) = r else { continue };
                let Some(data) = buf.get(..n) else { continue };
                let Ok(Message::Request(req)) = parse(data) else { continue };
                tag_n += 1;
                let out = handle_agent_request(&req, src, local, index, name, tag_n, &mut calls).await;
                for b in out {
                    let _ = sock.send_to(&b, src).await;
                }
            }
            _ = tick.tick() => {
                let now = Instant::now();
                for c in calls.values_mut() {
                    if !c.acked && c.retx_left > 0 && now >= c.next_retx {
                        let _ = sock.send_to(&c.ok, c.dest).await;
                        c.retx_left -= 1;
                        c.retx_interval = (c.retx_interval * 2).min(Duration::from_secs(4));
                        c.next_retx = now + c.retx_interval;
                    }
                }
            }
        }
    }
}

async fn handle_agent_request(
    req: &Request<'_>,
    src: SocketAddr,
    local: SocketAddr,
    index: u8,
    name: &str,
    n: u64,
    calls: &mut HashMap<String, AgentCall>,
) -> Vec<Bytes> {
    let call_id = req.headers.call_id().unwrap_or("").to_string();
    let to_tag = format!("{name}-{n}");
    let contact = format!("<sip:{name}@{local}>");
    let ok = |status: u16| ResponseBuilder::for_request(req, status, None).stamp_received(src);
    match req.method {
        Method::Ack => {
            if let Some(c) = calls.get_mut(&call_id) {
                c.acked = true;
            }
            vec![]
        }
        Method::Invite => {
            let has_tag = req.headers.to().ok().and_then(|t| t.tag()).is_some();
            if let Some(c) = calls.get_mut(&call_id) {
                if !has_tag {
                    return vec![c.ok.clone()]; // a retransmission of the initial INVITE
                }
                let resp = ok(200)
                    .header("Contact", &contact)
                    .body("application/sdp", c.sdp.clone().into_bytes())
                    .build();
                c.ok = resp.clone();
                c.acked = false;
                c.retx_left = 6;
                c.retx_interval = T1;
                c.next_retx = Instant::now() + T1;
                return vec![resp];
            }
            let Ok(rtp) = UdpSocket::bind("127.0.0.1:0").await else {
                return vec![ok(503).to_tag(&to_tag).build()];
            };
            let Ok(rtp_addr) = rtp.local_addr() else {
                return vec![ok(503).to_tag(&to_tag).build()];
            };
            let body = sdp(rtp_addr, n);
            let resp = ok(200)
                .to_tag(&to_tag)
                .copy_record_route(req)
                .header("Contact", &contact)
                .body("application/sdp", body.clone().into_bytes())
                .build();
            let echo = tokio::spawn(rtp_echo(rtp, index));
            calls.insert(
                call_id,
                AgentCall {
                    sdp: body,
                    ok: resp.clone(),
                    dest: src,
                    acked: false,
                    next_retx: Instant::now() + T1,
                    retx_interval: T1,
                    retx_left: 6,
                    echo,
                },
            );
            vec![ok(100).build(), resp]
        }
        Method::Bye => {
            calls.remove(&call_id);
            vec![ok(200).build()]
        }
        Method::Update => {
            let mut b = ok(200).header("Contact", &contact);
            if let Some(c) = calls.get(&call_id) {
                if !req.body.is_empty() {
                    b = b.body("application/sdp", c.sdp.clone().into_bytes());
                }
            }
            vec![b.build()]
        }
        Method::Options => vec![ok(200)
            .to_tag(&to_tag)
            .header("Allow", "INVITE, ACK, BYE, CANCEL, OPTIONS, UPDATE, INFO")
            .build()],
        Method::Cancel | Method::Info | Method::Notify | Method::Prack | Method::Message => {
            vec![ok(200).build()]
        }
        _ => vec![ok(501).to_tag(&to_tag).build()],
    }
}

/// Runs the `ws-bot` peer until the process is killed or its stdin closes.
pub async fn ws_bot(index: u8) -> Result<()> {
    exit_with_parent();
    let listener = TcpListener::bind("127.0.0.1:0").await.context("bind WS")?;
    ready(listener.local_addr()?);
    let index = Arc::new(index);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let index = *index;
        tokio::spawn(async move {
            let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                return;
            };
            let mut sid = Value::Null;
            while let Some(Ok(msg)) = ws.next().await {
                let WsMessage::Text(text) = msg else {
                    if matches!(msg, WsMessage::Close(_)) {
                        break;
                    }
                    continue;
                };
                let Ok(v) = serde_json::from_str::<Value>(text.as_str()) else {
                    continue;
                };
                match v["event"].as_str() {
                    Some("start") => sid = v["streamSid"].clone(),
                    Some("media") => {
                        let Some(mut audio) = v["media"]["payload"]
                            .as_str()
                            .and_then(|p| base64::engine::general_purpose::STANDARD.decode(p).ok())
                        else {
                            continue;
                        };
                        stamp_echo(&mut audio, index);
                        let out = json!({
                            "event": "media",
                            "streamSid": sid,
                            "media": {"payload": base64::engine::general_purpose::STANDARD.encode(&audio)},
                        });
                        if ws
                            .send(WsMessage::Text(out.to_string().into()))
                            .await
                            .is_err()
                        {
                            break;
                        }
                    }
                    Some("stop") => break,
                    _ => {}
                }
            }
        });
    }
}
