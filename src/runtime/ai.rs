//! The AI shell: the tokio tasks that speak WebSocket to AI providers and RTP to the relay.
//!
//! Does: for every [`AiCommand::Open`], one task that connects TCP to the address the core
//! resolved (`OpenLeg::dest`, never a DNS lookup of the URL's host), does TLS for `wss://`
//! (rustls with the ring provider and the webpki trust anchors; SNI and the certificate
//! identity are the URL's host), the WebSocket handshake (RFC 6455 §4.1) with the
//! configured headers (and `Authorization: Bearer` for `openai-realtime`), binds the
//! bridge's UDP socket and `connect()`s it to the relay so only the relay's packets are
//! read, and then drives one sans-IO [`Session`]: WebSocket text, relay datagrams, the
//! core's Close/Dtmf and the session's timer go in with `Instant::now()`; text frames, RTP
//! packets and [`SessionEvent`]s come out and are sent / reported as [`AiEvent`]s. For
//! [`AiCommand::Probe`], a task that connects and handshakes the same way, measures the
//! round trip and closes normally.
//!
//! Never: makes a protocol decision (which message to send, when a leg is up, what a
//! provider's message means: the [`Session`]'s job; whether to re-route: the core's), looks
//! up DNS, retries, or logs the API key (the `Authorization` header is marked sensitive and
//! only the URL's host appears in logs and `why` strings, since query strings may carry
//! tokens). A leg's task is independent: its failure or panic ends that leg only.
//!
//! LIFECYCLE of a leg task:
//! `Connecting` (TCP, TLS, handshake) → `Binding` (UDP) → `Setup` (handshake done,
//! `handle_open` fed, waiting for [`SessionEvent::Ready`]) → `Up` (reported
//! [`AiEvent::Up`]) → ended. The setup timeout covers everything before `Up`; ending before
//! `Up` reports [`AiEvent::Failed`], ending after `Up` reports [`AiEvent::Closed`], and a
//! [`AiCommand::Close`] at any point ends the task quietly (a normal close frame, no event).
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tracing::Instrument as _;
use tracing::{debug, info, warn};

use crate::ai::control::{AiCommand, AiEvent, AiKind, AiLegId, OpenLeg, WsProvider};
use crate::ai::session::{Session, SessionEvent};

/// How long we give a peer to take our close frame (or finish its own close handshake)
/// after the leg is over and already reported. Bounded so a dead peer cannot keep a task.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Largest datagram the bridge reads from the relay (G.711 20 ms frames are 172 bytes).
const RTP_RECV_MAX: usize = 2048;

/// Largest packet the session writes toward the relay.
const RTP_SEND_MAX: usize = 1500;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What the engine tells a running leg task.
#[derive(Debug)]
enum Control {
    Close {
        why: String,
    },
    Dtmf(char),
    /// A liveness check: a WebSocket ping, and the pong within this.
    Check(Duration),
}

/// One leg the engine knows about: its control channel. The task holds the receiver, so a
/// closed channel means the task has ended (returned or panicked).
struct LegHandle {
    control: UnboundedSender<Control>,
}

/// Runs the WebSocket AI legs and probes the core asks for; see the module docs.
///
/// `handle` is synchronous and never blocks: it spawns a task per leg or probe, so it must
/// be called within a tokio runtime. Results come back on the `events` channel.
pub struct AiEngine {
    events: UnboundedSender<AiEvent>,
    legs: HashMap<AiLegId, LegHandle>,
}

impl AiEngine {
    pub fn new(events: UnboundedSender<AiEvent>) -> AiEngine {
        AiEngine {
            events,
            legs: HashMap::new(),
        }
    }

    /// Carries out one command of the core.
    pub fn handle(&mut self, cmd: AiCommand) {
        // Forget legs whose task has ended (their receiver is dropped).
        self.legs.retain(|_, h| !h.control.is_closed());
        match cmd {
            AiCommand::Open(leg) => {
                let (tx, rx) = mpsc::unbounded_channel();
                let id = leg.leg;
                if let Some(old) = self.legs.insert(id, LegHandle { control: tx }) {
                    // Leg ids are unique for the life of the process; a repeat is a core bug.
                    // End the old task rather than leave it unreachable.
                    warn!(leg = id, "AI leg opened twice; closing the earlier one");
                    let _ = old.control.send(Control::Close {
                        why: "replaced".into(),
                    });
                }
                // Every line the leg's task logs carries the call's id.
                let span = tracing::info_span!("call", call = %leg.call);
                tokio::spawn(run_leg(leg, rx, self.events.clone()).instrument(span));
            }
            AiCommand::Close { leg, why } => {
                if let Some(h) = self.legs.remove(&leg) {
                    let _ = h.control.send(Control::Close { why });
                }
            }
            AiCommand::Dtmf { leg, digit } => {
                if let Some(h) = self.legs.get(&leg) {
                    let _ = h.control.send(Control::Dtmf(digit));
                }
            }
            AiCommand::Check { leg, timeout } => {
                let alive = self
                    .legs
                    .get(&leg)
                    .is_some_and(|h| h.control.send(Control::Check(timeout)).is_ok());
                if !alive {
                    // The leg's task is gone: no pong will come.
                    let _ = self.events.send(AiEvent::Check { leg, alive: false });
                }
            }
            AiCommand::Probe {
                probe,
                provider,
                dest,
                ws,
                timeout,
            } => {
                tokio::spawn(run_probe(
                    probe,
                    provider,
                    dest,
                    ws,
                    timeout,
                    self.events.clone(),
                ));
            }
        }
    }

    /// Legs whose task is still running.
    pub fn legs(&self) -> usize {
        self.legs
            .values()
            .filter(|h| !h.control.is_closed())
            .count()
    }
}

/// Why a connect + handshake did not give a WebSocket.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ConnectError {
    /// The HTTP status of a refused handshake.
    status: Option<u16>,
    why: String,
}

impl ConnectError {
    fn new(why: String) -> ConnectError {
        ConnectError { status: None, why }
    }
}

/// The host part of a URL, for logs and `why` strings (the query may carry a token).
fn url_host(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    // Drop any userinfo (`user:pass@host`).
    authority.rsplit_once('@').map_or(authority, |(_, h)| h)
}

/// Makes ring the process's rustls provider (once). tokio-tungstenite builds its TLS client
/// configuration (webpki trust anchors, from its `rustls-tls-webpki-roots` feature) with the
/// process-wide provider; installing ring explicitly means a second provider appearing in
/// the dependency tree cannot make that ambiguous. An error only means one is installed.
fn ensure_tls_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// TCP to `dest`, TLS for `wss://`, and the WebSocket handshake for `ws.url`.
async fn connect_ws(dest: SocketAddr, ws: &WsProvider) -> Result<Ws, ConnectError> {
    let host = url_host(&ws.url);
    let mut request = ws
        .url
        .as_str()
        .into_client_request()
        .map_err(|e| ConnectError::new(format!("bad websocket url for {host}: {e}")))?;
    let headers = request.headers_mut();
    for (name, value) in &ws.headers {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| ConnectError::new(format!("bad header name {name:?}")))?;
        let value = HeaderValue::from_str(value)
            .map_err(|_| ConnectError::new(format!("bad value for header {name}")))?;
        headers.insert(name, value);
    }
    if ws.kind == AiKind::OpenAiRealtime {
        let key = ws
            .realtime
            .as_ref()
            .map(|r| r.api_key.expose())
            .unwrap_or_default();
        let mut value = HeaderValue::from_str(&format!("Bearer {key}"))
            .map_err(|_| ConnectError::new("the API key is not a valid header value".into()))?;
        value.set_sensitive(true);
        headers.insert(tungstenite::http::header::AUTHORIZATION, value);
    }

    let tcp = TcpStream::connect(dest)
        .await
        .map_err(|e| ConnectError::new(format!("connect to {host} ({dest}) failed: {e}")))?;
    // Small frames at 20 ms pace: don't let Nagle hold them back.
    if let Err(e) = tcp.set_nodelay(true) {
        debug!(%dest, "TCP_NODELAY: {e}");
    }
    // The scheme picks TLS; SNI and the certificate check use the request URI's host.
    ensure_tls_provider();
    match tokio_tungstenite::client_async_tls_with_config(request, tcp, None, None).await {
        Ok((stream, _response)) => Ok(stream),
        Err(tungstenite::Error::Http(response)) => {
            let status = response.status();
            Err(ConnectError {
                status: Some(status.as_u16()),
                why: format!("{host} refused the websocket handshake: HTTP {status}"),
            })
        }
        Err(e) => Err(ConnectError::new(format!(
            "websocket handshake with {host} ({dest}) failed: {e}"
        ))),
    }
}

/// Sends a normal close frame and gives the peer a moment to answer; bounded, errors ignored
/// (the leg is over and already reported).
async fn close_quietly(ws: &mut Ws, code: CloseCode) {
    let frame = CloseFrame {
        code,
        reason: "".into(),
    };
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        if ws.close(Some(frame)).await.is_ok() {
            // Read until the peer's close reply (or the end), completing the handshake
            // (RFC 6455 §7.1.1: the server closes TCP first).
            while let Some(Ok(_)) = ws.next().await {}
        }
    })
    .await;
}

/// Reads until the end after the peer's close frame, so tungstenite sends its reply.
async fn finish_close(ws: &mut Ws) {
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
}

/// How a leg that was running ended (not by our Close).
struct Ended {
    failure: bool,
    why: String,
}

fn ended_by_close_frame(kind: AiKind, frame: Option<&CloseFrame>) -> Ended {
    match frame {
        Some(f) if f.code == CloseCode::Normal && kind == AiKind::MediaStream => Ended {
            failure: false,
            why: "the bot hung up (websocket closed 1000)".into(),
        },
        Some(f) => Ended {
            failure: true,
            why: format!("websocket closed {} '{}'", u16::from(f.code), f.reason),
        },
        None => Ended {
            failure: true,
            why: "websocket closed without a status code".into(),
        },
    }
}

fn ended_by_error(e: &tungstenite::Error) -> Ended {
    use tungstenite::error::ProtocolError;
    let why = match e {
        tungstenite::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionReset => {
            "connection reset".to_string()
        }
        tungstenite::Error::Protocol(ProtocolError::ResetWithoutClosingHandshake) => {
            "connection dropped without a close frame".to_string()
        }
        other => format!("websocket error: {other}"),
    };
    Ended { failure: true, why }
}

/// One leg's task: setup, then the bridge loop. Reports at most one of Up/Failed, and
/// Closed only after Up.
async fn run_leg(
    leg: Box<OpenLeg>,
    mut control: UnboundedReceiver<Control>,
    events: UnboundedSender<AiEvent>,
) {
    let id = leg.leg;
    let host = url_host(&leg.ws.url).to_string();
    let started = Instant::now();
    let setup_deadline = tokio::time::Instant::from_std(started + leg.setup_timeout);
    let timed_out_why =
        |stage: &str| format!("setup timed out after {:?} ({stage})", leg.setup_timeout);
    let timed_out = |stage: &str| AiEvent::Failed {
        leg: id,
        status: None,
        why: timed_out_why(stage),
    };
    let waiting_for = match leg.ws.kind {
        AiKind::MediaStream => "waiting for the session to start",
        AiKind::OpenAiRealtime => "waiting for session.updated",
    };
    // Digits the core sends while we connect reach the session once it is open.
    let mut early_dtmf = Vec::new();

    // Connecting: TCP, TLS, handshake; a Close from the core ends it quietly.
    let connect = connect_ws(leg.dest, &leg.ws);
    tokio::pin!(connect);
    let connected = loop {
        tokio::select! {
            r = &mut connect => break r,
            c = control.recv() => match c {
                Some(Control::Dtmf(d)) => early_dtmf.push(d),
                Some(Control::Check(_)) => {}
                Some(Control::Close { why }) => {
                    debug!(leg = id, %why, "AI leg closed while connecting");
                    return;
                }
                None => return,
            },
            _ = tokio::time::sleep_until(setup_deadline) => {
                let _ = events.send(timed_out("connecting"));
                return;
            }
        }
    };
    let mut ws = match connected {
        Ok(ws) => ws,
        Err(e) => {
            info!(leg = id, provider = %leg.provider, why = %e.why, "AI leg failed");
            let _ = events.send(AiEvent::Failed {
                leg: id,
                status: e.status,
                why: e.why,
            });
            return;
        }
    };

    // Binding: the bridge's RTP socket, connected to the relay so the kernel drops
    // anything that does not come from it.
    let udp = match bind_bridge(&leg).await {
        Ok(u) => u,
        Err(why) => {
            let _ = events.send(AiEvent::Failed {
                leg: id,
                status: None,
                why,
            });
            close_quietly(&mut ws, CloseCode::Normal).await;
            return;
        }
    };
    let media = match udp.local_addr() {
        Ok(a) => a,
        Err(e) => {
            let _ = events.send(AiEvent::Failed {
                leg: id,
                status: None,
                why: format!("bridge socket has no address: {e}"),
            });
            close_quietly(&mut ws, CloseCode::Normal).await;
            return;
        }
    };
    debug!(leg = id, provider = %leg.provider, %host, %media, "AI leg connected");

    let now = Instant::now();
    // Started when the leg did, so the session's own setup timer agrees with ours.
    let mut session = Session::new(&leg, started);
    session.handle_open(now);
    for d in early_dtmf {
        session.handle_dtmf(d, now);
    }

    let mut up = false;
    // The liveness check in flight: the ping's payload and the pong's deadline.
    let mut ping: Option<(u64, tokio::time::Instant)> = None;
    let mut pings_sent = 0u64;
    let mut recv_buf = vec![0u8; RTP_RECV_MAX];
    let mut send_buf = vec![0u8; RTP_SEND_MAX];
    'bridge: loop {
        // Outputs of the last input.
        match flush(&mut session, &mut ws, &udp, &mut send_buf).await {
            Ok(()) => {}
            Err(e) => {
                report_end(&events, id, up, ended_by_error(&e));
                break 'bridge;
            }
        }
        while let Some(ev) = session.poll_event() {
            match ev {
                SessionEvent::Ready => {
                    if !up {
                        up = true;
                        info!(leg = id, provider = %leg.provider, %media,
                            setup = ?started.elapsed(), "AI leg up");
                        let _ = events.send(AiEvent::Up { leg: id, media });
                    }
                }
                SessionEvent::Failed { why } => {
                    // The session keeps the same setup deadline; say so the same way.
                    let why = if !up && tokio::time::Instant::now() >= setup_deadline {
                        timed_out_why(waiting_for)
                    } else {
                        why
                    };
                    report_end(&events, id, up, Ended { failure: true, why });
                    // Send what the session queued before failing, then close.
                    let _ = flush(&mut session, &mut ws, &udp, &mut send_buf).await;
                    close_quietly(&mut ws, CloseCode::Normal).await;
                    break 'bridge;
                }
                SessionEvent::Transcript(item) => {
                    let _ = events.send(AiEvent::Transcript { leg: id, item });
                }
            }
        }

        let wake = session.poll_timeout().map(tokio::time::Instant::from_std);
        let ended: Ended = tokio::select! {
            c = control.recv() => match c {
                Some(Control::Dtmf(d)) => {
                    session.handle_dtmf(d, Instant::now());
                    continue;
                }
                Some(Control::Check(timeout)) => {
                    if ping.is_some() {
                        continue;
                    }
                    pings_sent += 1;
                    let payload = pings_sent.to_be_bytes().to_vec();
                    match ws.send(Message::Ping(payload.into())).await {
                        Ok(()) => {
                            ping = Some((pings_sent, tokio::time::Instant::now() + timeout));
                            continue;
                        }
                        Err(e) => {
                            let _ = events.send(AiEvent::Check { leg: id, alive: false });
                            ended_by_error(&e)
                        }
                    }
                }
                Some(Control::Close { why }) => {
                    debug!(leg = id, %why, "closing AI leg");
                    session.close(Instant::now());
                    let _ = flush(&mut session, &mut ws, &udp, &mut send_buf).await;
                    close_quietly(&mut ws, CloseCode::Normal).await;
                    break 'bridge;
                }
                // The engine was dropped: nobody listens for events any more.
                None => {
                    session.close(Instant::now());
                    let _ = flush(&mut session, &mut ws, &udp, &mut send_buf).await;
                    close_quietly(&mut ws, CloseCode::Normal).await;
                    break 'bridge;
                }
            },
            m = ws.next() => match m {
                Some(Ok(Message::Text(text))) => {
                    session.handle_text(text.as_str(), Instant::now());
                    continue;
                }
                Some(Ok(Message::Pong(payload))) => {
                    if ping.is_some_and(|(n, _)| payload.as_ref() == n.to_be_bytes()) {
                        ping = None;
                        let _ = events.send(AiEvent::Check { leg: id, alive: true });
                    }
                    continue;
                }
                // Pings are answered by tungstenite; binary frames are not part of either
                // protocol.
                Some(Ok(Message::Binary(_) | Message::Ping(_) | Message::Frame(_))) => continue,
                Some(Ok(Message::Close(frame))) => {
                    let e = ended_by_close_frame(leg.ws.kind, frame.as_ref());
                    report_end(&events, id, up, e);
                    finish_close(&mut ws).await;
                    break 'bridge;
                }
                Some(Err(e)) => ended_by_error(&e),
                None => Ended {
                    failure: true,
                    why: "connection closed without a close frame".into(),
                },
            },
            r = udp.recv(&mut recv_buf) => {
                match r {
                    Ok(n) => session.handle_rtp(&recv_buf[..n], Instant::now()),
                    // ICMP errors from the relay's port (e.g. not listening yet) surface
                    // on a connected socket; they are not the provider's failure.
                    Err(e) => debug!(leg = id, "bridge recv: {e}"),
                }
                continue;
            }
            _ = sleep_until_opt(wake) => {
                session.handle_timeout(Instant::now());
                continue;
            }
            _ = sleep_until_opt(ping.map(|(_, at)| at)) => {
                ping = None;
                let _ = events.send(AiEvent::Check { leg: id, alive: false });
                continue;
            }
            _ = tokio::time::sleep_until(setup_deadline), if !up => {
                let _ = events.send(timed_out(waiting_for));
                close_quietly(&mut ws, CloseCode::Normal).await;
                break 'bridge;
            }
        };
        // The connection is gone (error or end of stream): nothing left to close.
        report_end(&events, id, up, ended);
        break 'bridge;
    }
    debug!(leg = id, stats = ?session.stats(), "AI leg ended");
}

async fn sleep_until_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn bind_bridge(leg: &OpenLeg) -> Result<UdpSocket, String> {
    let udp = UdpSocket::bind((leg.bind, 0))
        .await
        .map_err(|e| format!("binding the bridge socket on {}: {e}", leg.bind))?;
    udp.connect(leg.relay)
        .await
        .map_err(|e| format!("connecting the bridge socket to {}: {e}", leg.relay))?;
    Ok(udp)
}

/// A leg ended on its own: Failed before Up, Closed after.
fn report_end(events: &UnboundedSender<AiEvent>, leg: AiLegId, up: bool, e: Ended) {
    let ev = if up {
        info!(leg, failure = e.failure, why = %e.why, "AI leg closed");
        AiEvent::Closed {
            leg,
            failure: e.failure,
            why: e.why,
        }
    } else {
        info!(leg, why = %e.why, "AI leg failed during setup");
        AiEvent::Failed {
            leg,
            status: None,
            why: e.why,
        }
    };
    let _ = events.send(ev);
}

/// Sends what the session has queued: text frames to the provider, due RTP to the relay.
async fn flush(
    session: &mut Session,
    ws: &mut Ws,
    udp: &UdpSocket,
    buf: &mut [u8],
) -> Result<(), tungstenite::Error> {
    let mut fed = false;
    while let Some(text) = session.poll_text() {
        ws.feed(Message::text(text)).await?;
        fed = true;
    }
    if fed {
        ws.flush().await?;
    }
    let now = Instant::now();
    while let Some(n) = session.poll_rtp(now, buf) {
        let Some(packet) = buf.get(..n) else { break };
        if let Err(e) = udp.send(packet).await {
            // The relay not listening (ICMP) is not the leg's failure.
            debug!("bridge send: {e}");
        }
    }
    Ok(())
}

/// A probe's task: connect, handshake (and `session.created`), report, close.
async fn run_probe(
    probe: u64,
    provider: String,
    dest: SocketAddr,
    ws: Arc<WsProvider>,
    timeout: Duration,
    events: UnboundedSender<AiEvent>,
) {
    let started = Instant::now();
    let result = tokio::time::timeout(timeout, async {
        let mut stream = connect_ws(dest, &ws).await?;
        if ws.kind == AiKind::OpenAiRealtime {
            if let Err(why) = wait_session_created(&mut stream).await {
                close_quietly(&mut stream, CloseCode::Normal).await;
                return Err(ConnectError::new(why));
            }
        }
        Ok(stream)
    });
    let result = match result.await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(ConnectError::new(format!(
            "no answer from {} within {timeout:?}",
            url_host(&ws.url)
        ))),
    };
    let ev = match result {
        Ok(mut stream) => {
            let rtt = started.elapsed();
            debug!(probe, %provider, ?rtt, "AI provider probe ok");
            let _ = events.send(AiEvent::Probe {
                probe,
                status: 200,
                rtt: Some(rtt),
                why: String::new(),
            });
            close_quietly(&mut stream, CloseCode::Normal).await;
            return;
        }
        Err(e) => {
            debug!(probe, %provider, why = %e.why, "AI provider probe failed");
            AiEvent::Probe {
                probe,
                status: e.status.unwrap_or(503),
                rtt: None,
                why: e.why,
            }
        }
    };
    let _ = events.send(ev);
}

/// Waits for the first `session.created` event (openai-realtime's hello).
async fn wait_session_created(ws: &mut Ws) -> Result<(), String> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(text))) => {
                let v: serde_json::Value = serde_json::from_str(text.as_str())
                    .map_err(|e| format!("not JSON before session.created: {e}"))?;
                match v.get("type").and_then(|t| t.as_str()) {
                    Some("session.created") => return Ok(()),
                    Some("error") => {
                        let msg = v
                            .pointer("/error/message")
                            .and_then(|m| m.as_str())
                            .unwrap_or("no message");
                        return Err(format!("provider error before session.created: {msg}"));
                    }
                    _ => {}
                }
            }
            Some(Ok(Message::Close(frame))) => {
                return Err(ended_by_close_frame(AiKind::OpenAiRealtime, frame.as_ref()).why)
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(ended_by_error(&e).why),
            None => return Err("connection closed before session.created".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_host_strips_scheme_path_query_and_userinfo() {
        assert_eq!(
            url_host("wss://api.example.com/v1/realtime?model=x"),
            "api.example.com"
        );
        assert_eq!(url_host("ws://127.0.0.1:8080/stream"), "127.0.0.1:8080");
        assert_eq!(url_host("ws://u:secret@bot.local:9/x"), "bot.local:9");
        assert_eq!(url_host("ws://bot.local?token=abc"), "bot.local");
    }

    #[test]
    fn close_codes_map_to_failure() {
        let normal = CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        };
        let err = CloseFrame {
            code: CloseCode::Error,
            reason: "internal error".into(),
        };
        assert!(!ended_by_close_frame(AiKind::MediaStream, Some(&normal)).failure);
        assert!(ended_by_close_frame(AiKind::OpenAiRealtime, Some(&normal)).failure);
        let e = ended_by_close_frame(AiKind::MediaStream, Some(&err));
        assert!(e.failure);
        assert_eq!(e.why, "websocket closed 1011 'internal error'");
        assert!(ended_by_close_frame(AiKind::MediaStream, None).failure);
    }

    #[test]
    fn reset_errors_read_well() {
        let e = tungstenite::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert_eq!(ended_by_error(&e).why, "connection reset");
    }
}
