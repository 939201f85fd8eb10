//! Real WebSocket bots for the tests: a Twilio-Media-Streams bot ([`MediaStreamBot`]) and an
//! OpenAI-Realtime-speaking server ([`FakeRealtime`]), each on its own `127.0.0.1:0` port.
//!
//! Each bot runs on a dedicated thread with its own single-threaded tokio runtime, so it
//! works the same from plain `#[test]`s that spawn holdfast as a child process and from
//! tests that run holdfast's engine in a tokio runtime of their own. The API is synchronous:
//! commands go to the bot over channels, and everything the bot sees (handshake headers,
//! every text message parsed as JSON, how each connection ended) is recorded in a shared
//! [`BotState`] that tests inspect or wait on with a bounded [`WsBot::wait_for`]. Dropping a
//! bot stops its thread and resets its connections.
//!
//! ```ignore
//! let bot = MediaStreamBot::start();
//! bot.set_echo(true);
//! // ... point holdfast (or an AiEngine) at bot.url() / bot.addr() ...
//! assert!(bot.wait_connections(1, Duration::from_secs(5)));
//! let start = bot.wait_message(0, |m| m["event"] == "start", Duration::from_secs(5)).unwrap();
//! bot.send_audio(0, &[0x55; 800]); // five 160-byte `media` messages
//! bot.close(0, 1000, "bye");       // the bot hangs up normally
//!
//! let ai = FakeRealtime::start("sk-test");
//! assert!(ai.wait_message(0, |m| m["type"] == "session.update", Duration::from_secs(5)).is_some());
//! ai.send_audio_delta(0, "item_1", &[0xff; 320]);
//! ai.send_output_transcript_done(0, "item_1", "Hello!");
//! ```
#![allow(dead_code)]

use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use base64::Engine as _;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

/// Bytes per `media` message the media-stream bot sends: 20 ms of G.711 at 8 kHz.
pub const CHUNK_BYTES: usize = 160;

/// How a connection ended, as the bot saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerEnd {
    /// The client sent a close frame (`code` is `None` for a frame without a status).
    Close { code: Option<u16>, reason: String },
    /// TCP ended without a close frame.
    Eof,
    /// A read error (e.g. connection reset).
    Error(String),
    /// The bot ended it: [`WsBot::close`] (after the client's reply or the end of the
    /// stream).
    ClosedByBot { code: u16 },
    /// The bot dropped the TCP connection ([`WsBot::drop_connection`]).
    DroppedByBot,
}

/// One accepted WebSocket connection.
#[derive(Debug, Clone, Default)]
pub struct ConnRecord {
    /// The request target of the handshake (path and query).
    pub path: String,
    /// The handshake's request headers, names lower-cased, in order.
    pub headers: Vec<(String, String)>,
    /// Every text message received, parsed (a non-JSON text is recorded as a JSON string).
    pub messages: Vec<Value>,
    /// Text messages the bot sent, parsed.
    pub sent: Vec<Value>,
    /// Set once the connection is over.
    pub ended: Option<PeerEnd>,
}

impl ConnRecord {
    /// A handshake header by (case-insensitive) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Everything a bot has seen.
#[derive(Debug, Clone, Default)]
pub struct BotState {
    /// Accepted (upgraded) connections, in order; the index is the `conn` of the API.
    pub conns: Vec<ConnRecord>,
    /// Handshakes refused (by [`WsBot::refuse_with`] or a wrong API key).
    pub refused: usize,
}

/// Behaviour switches, changeable while the bot runs.
#[derive(Debug, Clone, Default)]
struct Knobs {
    echo: bool,
    refuse: Option<u16>,
    /// FakeRealtime: the API key `Authorization: Bearer` must carry.
    expected_key: Option<String>,
    /// FakeRealtime: answer `session.update` with an `error` carrying this message.
    update_error: Option<String>,
    /// FakeRealtime: do not answer `session.update` at all (a provider that never gets ready).
    update_silent: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flavor {
    MediaStream,
    Realtime,
}

struct Shared {
    state: Mutex<BotState>,
    changed: Condvar,
    knobs: Mutex<Knobs>,
    /// Per connection, the channel to its task (same index as `BotState::conns`).
    conn_tx: Mutex<Vec<mpsc::UnboundedSender<ConnCmd>>>,
}

impl Shared {
    fn update(&self, f: impl FnOnce(&mut BotState)) {
        let mut st = self.state.lock().unwrap();
        f(&mut st);
        self.changed.notify_all();
    }
    fn knobs(&self) -> Knobs {
        self.knobs.lock().unwrap().clone()
    }
}

enum ConnCmd {
    Send(Value),
    Close { code: u16, reason: String },
    Drop,
}

/// The common part of both bots: the listener thread, the records and the commands.
/// [`MediaStreamBot`] and [`FakeRealtime`] dereference to it.
pub struct WsBot {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop_accepting: Mutex<Option<oneshot::Sender<std::sync::mpsc::Sender<()>>>>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl WsBot {
    fn start(flavor: Flavor, knobs: Knobs) -> WsBot {
        let shared = Arc::new(Shared {
            state: Mutex::new(BotState::default()),
            changed: Condvar::new(),
            knobs: Mutex::new(knobs),
            conn_tx: Mutex::new(Vec::new()),
        });
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind bot listener");
        std_listener.set_nonblocking(true).unwrap();
        let addr = std_listener.local_addr().unwrap();
        let (stop_tx, stop_rx) = oneshot::channel();
        let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
        let sh = shared.clone();
        let thread = std::thread::Builder::new()
            .name(format!("ws-bot-{}", addr.port()))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("bot runtime");
                rt.block_on(async move {
                    let listener = TcpListener::from_std(std_listener).expect("bot listener");
                    tokio::spawn(accept_loop(listener, flavor, sh, stop_rx));
                    let _ = shutdown_rx.await;
                });
                // Dropping the runtime drops every connection task: their sockets close.
            })
            .expect("spawn bot thread");
        WsBot {
            addr,
            shared,
            stop_accepting: Mutex::new(Some(stop_tx)),
            shutdown: Some(shutdown_tx),
            thread: Some(thread),
        }
    }

    /// Where the bot listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `ws://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }

    /// A snapshot of everything recorded.
    pub fn state(&self) -> BotState {
        self.shared.state.lock().unwrap().clone()
    }

    /// Accepted connections so far.
    pub fn connections(&self) -> usize {
        self.shared.state.lock().unwrap().conns.len()
    }

    /// Handshakes refused so far.
    pub fn refused(&self) -> usize {
        self.shared.state.lock().unwrap().refused
    }

    /// The messages received on connection `conn` (empty if there is no such connection).
    pub fn messages(&self, conn: usize) -> Vec<Value> {
        self.conn(conn).map(|c| c.messages).unwrap_or_default()
    }

    /// A snapshot of connection `conn`.
    pub fn conn(&self, conn: usize) -> Option<ConnRecord> {
        self.shared.state.lock().unwrap().conns.get(conn).cloned()
    }

    /// Waits until `cond` holds for the recorded state, at most `timeout`. True if it did.
    pub fn wait_for(&self, timeout: Duration, cond: impl Fn(&BotState) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let mut st: MutexGuard<'_, BotState> = self.shared.state.lock().unwrap();
        loop {
            if cond(&st) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            st = self
                .shared
                .changed
                .wait_timeout(st, deadline - now)
                .unwrap()
                .0;
        }
    }

    /// Waits for at least `n` accepted connections.
    pub fn wait_connections(&self, n: usize, timeout: Duration) -> bool {
        self.wait_for(timeout, |s| s.conns.len() >= n)
    }

    /// Waits for a message on connection `conn` that `pred` accepts, and returns it.
    pub fn wait_message(
        &self,
        conn: usize,
        pred: impl Fn(&Value) -> bool,
        timeout: Duration,
    ) -> Option<Value> {
        self.wait_for(timeout, |s| {
            s.conns
                .get(conn)
                .is_some_and(|c| c.messages.iter().any(&pred))
        });
        self.conn(conn)?.messages.into_iter().find(|m| pred(m))
    }

    /// Waits until connection `conn` has ended, and says how.
    pub fn wait_ended(&self, conn: usize, timeout: Duration) -> Option<PeerEnd> {
        self.wait_for(timeout, |s| {
            s.conns.get(conn).is_some_and(|c| c.ended.is_some())
        });
        self.conn(conn).and_then(|c| c.ended)
    }

    /// Refuse every following handshake with this HTTP status (`None`: accept again).
    pub fn refuse_with(&self, status: Option<u16>) {
        self.shared.knobs.lock().unwrap().refuse = status;
    }

    /// Turn echo on or off (media-stream: inbound `media` back as outbound `media`;
    /// realtime: `input_audio_buffer.append` back as `response.output_audio.delta`).
    pub fn set_echo(&self, on: bool) {
        self.shared.knobs.lock().unwrap().echo = on;
    }

    /// Sends any JSON message on connection `conn`.
    pub fn send_json(&self, conn: usize, msg: Value) {
        self.conn_cmd(conn, ConnCmd::Send(msg));
    }

    /// Closes connection `conn` with a close frame (`1000` is the normal hang-up).
    pub fn close(&self, conn: usize, code: u16, reason: &str) {
        self.conn_cmd(
            conn,
            ConnCmd::Close {
                code,
                reason: reason.to_string(),
            },
        );
    }

    /// Drops connection `conn`'s TCP stream abruptly, without a close frame.
    pub fn drop_connection(&self, conn: usize) {
        self.conn_cmd(conn, ConnCmd::Drop);
    }

    /// Closes the listener: new connects are refused (existing connections stay).
    pub fn stop_accepting(&self) {
        if let Some(tx) = self.stop_accepting.lock().unwrap().take() {
            let (ack_tx, ack_rx) = std::sync::mpsc::channel();
            if tx.send(ack_tx).is_ok() {
                // The accept task answers once the listener is closed.
                let _ = ack_rx.recv_timeout(Duration::from_secs(5));
            }
        }
    }

    fn conn_cmd(&self, conn: usize, cmd: ConnCmd) {
        let txs = self.shared.conn_tx.lock().unwrap();
        let tx = txs
            .get(conn)
            .unwrap_or_else(|| panic!("bot has no connection {conn}"));
        let _ = tx.send(cmd);
    }
}

impl Drop for WsBot {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    flavor: Flavor,
    shared: Arc<Shared>,
    mut stop: oneshot::Receiver<std::sync::mpsc::Sender<()>>,
) {
    loop {
        tokio::select! {
            ack = &mut stop => {
                drop(listener); // closed: new connects are refused
                if let Ok(ack) = ack {
                    let _ = ack.send(());
                }
                return;
            }
            r = listener.accept() => {
                let Ok((tcp, _peer)) = r else { continue };
                let _ = tcp.set_nodelay(true);
                tokio::spawn(serve(tcp, flavor, shared.clone()));
            }
        }
    }
}

// The callback's `Result<Response, ErrorResponse>` is tungstenite's signature.
#[allow(clippy::result_large_err)]
async fn serve(tcp: TcpStream, flavor: Flavor, shared: Arc<Shared>) {
    let knobs = shared.knobs();
    // The connection is registered in the callback, before the 101 goes out, so a client
    // that completed its handshake always finds the record.
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut tx = Some(tx);
    let mut registered: Option<usize> = None;
    let callback = |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
        let headers: Vec<(String, String)> = req
            .headers()
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_ascii_lowercase(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let refuse = |code: u16| {
            // Counted before the response goes out, so a client that saw it sees the count.
            shared.update(|s| s.refused += 1);
            let mut r = ErrorResponse::new(Some(format!("refused with {code}")));
            *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            Err(r)
        };
        if let Some(code) = knobs.refuse {
            return refuse(code);
        }
        if let Some(key) = &knobs.expected_key {
            let want = format!("Bearer {key}");
            let auth = headers
                .iter()
                .find(|(n, _)| n == "authorization")
                .map(|(_, v)| v.as_str());
            if auth != Some(want.as_str()) {
                return refuse(401);
            }
        }
        // The channel and the record get the same index: both pushed under the channel
        // list's lock (taken before the state's, as everywhere).
        let mut txs = shared.conn_tx.lock().unwrap();
        txs.extend(tx.take());
        registered = Some(txs.len() - 1);
        shared.update(|s| {
            s.conns.push(ConnRecord {
                path: req.uri().to_string(),
                headers,
                ..ConnRecord::default()
            })
        });
        Ok(resp)
    };
    let ws = tokio_tungstenite::accept_hdr_async(tcp, callback).await;
    let (mut ws, conn) = match (ws, registered) {
        (Ok(ws), Some(conn)) => (ws, conn),
        (Err(e), Some(conn)) => {
            shared.update(|s| s.conns[conn].ended = Some(PeerEnd::Error(e.to_string())));
            return;
        }
        // Refused (counted above) or not a WebSocket handshake.
        _ => return,
    };
    let mut proto = Proto::new(flavor);
    let mut out: Vec<Value> = Vec::new();
    proto.on_connect(&mut out);
    let end = 'conn: loop {
        for m in out.drain(..) {
            let text = m.to_string();
            shared.update(|s| s.conns[conn].sent.push(m));
            if ws.send(Message::text(text)).await.is_err() {
                break 'conn PeerEnd::Error("send failed".into());
            }
        }
        tokio::select! {
            m = ws.next() => match m {
                Some(Ok(Message::Text(t))) => {
                    let v: Value = serde_json::from_str(t.as_str())
                        .unwrap_or_else(|_| Value::String(t.as_str().to_string()));
                    proto.on_message(&v, &shared.knobs(), &mut out);
                    shared.update(|s| s.conns[conn].messages.push(v));
                }
                Some(Ok(Message::Close(frame))) => {
                    // tungstenite queues the reply; drive it out before recording.
                    let _ = tokio::time::timeout(Duration::from_secs(1), async {
                        while let Some(Ok(_)) = ws.next().await {}
                    }).await;
                    break PeerEnd::Close {
                        code: frame.as_ref().map(|f| u16::from(f.code)),
                        reason: frame.map(|f| f.reason.to_string()).unwrap_or_default(),
                    };
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => break PeerEnd::Error(e.to_string()),
                None => break PeerEnd::Eof,
            },
            c = rx.recv() => match c {
                Some(ConnCmd::Send(v)) => out.push(proto.stamp(v)),
                Some(ConnCmd::Close { code, reason }) => {
                    let frame = CloseFrame { code: CloseCode::from(code), reason: reason.into() };
                    let _ = tokio::time::timeout(Duration::from_secs(1), async {
                        if ws.close(Some(frame)).await.is_ok() {
                            while let Some(Ok(_)) = ws.next().await {}
                        }
                    }).await;
                    break PeerEnd::ClosedByBot { code };
                }
                Some(ConnCmd::Drop) | None => {
                    // Abrupt: RST rather than FIN where possible, no close frame.
                    let tcp = ws.into_inner();
                    let _ = tcp.set_zero_linger();
                    drop(tcp);
                    shared.update(|s| s.conns[conn].ended = Some(PeerEnd::DroppedByBot));
                    return;
                }
            },
        }
    };
    shared.update(|s| s.conns[conn].ended = Some(end));
}

/// The protocol-specific part: what a bot says on connect and in answer to a message.
struct Proto {
    flavor: Flavor,
    stream_sid: Option<String>,
    events: u64,
    echo_items: u64,
}

impl Proto {
    fn new(flavor: Flavor) -> Proto {
        Proto {
            flavor,
            stream_sid: None,
            events: 0,
            echo_items: 0,
        }
    }

    fn on_connect(&mut self, out: &mut Vec<Value>) {
        if self.flavor == Flavor::Realtime {
            out.push(json!({
                "type": "session.created",
                "event_id": self.event_id(),
                "session": {"id": "sess_fake", "object": "realtime.session", "type": "realtime"},
            }));
        }
    }

    fn event_id(&mut self) -> String {
        self.events += 1;
        format!("event_{}", self.events)
    }

    /// Fills in the stream id / event id a message on this connection needs.
    fn stamp(&mut self, mut v: Value) -> Value {
        match self.flavor {
            Flavor::MediaStream => {
                if v.get("streamSid").is_none() {
                    if let (Some(obj), Some(sid)) = (v.as_object_mut(), &self.stream_sid) {
                        obj.insert("streamSid".into(), Value::String(sid.clone()));
                    }
                }
            }
            Flavor::Realtime => {
                if v.get("event_id").is_none() {
                    let id = self.event_id();
                    if let Some(obj) = v.as_object_mut() {
                        obj.insert("event_id".into(), Value::String(id));
                    }
                }
            }
        }
        v
    }

    fn on_message(&mut self, v: &Value, knobs: &Knobs, out: &mut Vec<Value>) {
        match self.flavor {
            Flavor::MediaStream => {
                if let Some(sid) = v.get("streamSid").and_then(|s| s.as_str()) {
                    self.stream_sid = Some(sid.to_string());
                }
                if knobs.echo
                    && v["event"] == "media"
                    && v["media"]["track"].as_str().unwrap_or("inbound") == "inbound"
                {
                    let payload = v["media"]["payload"].clone();
                    out.push(self.stamp(json!({"event": "media", "media": {"payload": payload}})));
                }
            }
            Flavor::Realtime => match v["type"].as_str().unwrap_or("") {
                "session.update" if knobs.update_silent => {}
                "session.update" => {
                    let ev = match &knobs.update_error {
                        Some(msg) => json!({
                            "type": "error",
                            "error": {"type": "invalid_request_error", "code": "invalid_value",
                                      "message": msg, "param": null, "event_id": v["event_id"]},
                        }),
                        None => json!({"type": "session.updated", "session": v["session"]}),
                    };
                    out.push(self.stamp(ev));
                }
                "input_audio_buffer.append" if knobs.echo => {
                    self.echo_items += 1;
                    let ev = json!({
                        "type": "response.output_audio.delta",
                        "response_id": "resp_echo",
                        "item_id": format!("item_echo_{}", self.echo_items),
                        "output_index": 0, "content_index": 0,
                        "delta": v["audio"],
                    });
                    out.push(self.stamp(ev));
                }
                _ => {}
            },
        }
    }
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Decodes a base64 payload from a message field ("" or invalid → `None`).
pub fn b64_decode(v: &Value) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD
        .decode(v.as_str()?)
        .ok()
}

/// A Twilio-Media-Streams bot (the bot side of a bidirectional stream): it records what
/// holdfast sends (`connected`, `start`, `media`, `dtmf`, `mark`, `stop`) and sends `media`,
/// `mark` and `clear` on demand, with the `streamSid` from `start`. See [`WsBot`] for the
/// common API (records, waits, close/drop, refuse, stop accepting).
pub struct MediaStreamBot(WsBot);

impl MediaStreamBot {
    /// A bot that accepts every handshake and does not echo.
    pub fn start() -> MediaStreamBot {
        MediaStreamBot(WsBot::start(Flavor::MediaStream, Knobs::default()))
    }

    /// A bot that echoes every inbound `media` payload back (a parrot).
    pub fn echo() -> MediaStreamBot {
        let bot = MediaStreamBot::start();
        bot.set_echo(true);
        bot
    }

    /// Sends `ulaw` as outbound `media` messages of [`CHUNK_BYTES`] each (the last one may
    /// be shorter), all at once like a bot's TTS burst.
    pub fn send_audio(&self, conn: usize, ulaw: &[u8]) {
        for chunk in ulaw.chunks(CHUNK_BYTES) {
            self.send_json(
                conn,
                json!({"event": "media", "media": {"payload": b64(chunk)}}),
            );
        }
    }

    /// Sends a `mark` (holdfast echoes it back once the audio before it has been played).
    pub fn send_mark(&self, conn: usize, name: &str) {
        self.send_json(conn, json!({"event": "mark", "mark": {"name": name}}));
    }

    /// Sends `clear` (barge-in: drop the audio not yet played).
    pub fn send_clear(&self, conn: usize) {
        self.send_json(conn, json!({"event": "clear"}));
    }

    /// The inbound `media` payloads received on `conn`, decoded and concatenated.
    pub fn inbound_audio(&self, conn: usize) -> Vec<u8> {
        self.messages(conn)
            .iter()
            .filter(|m| m["event"] == "media")
            .filter_map(|m| b64_decode(&m["media"]["payload"]))
            .flatten()
            .collect()
    }
}

impl Deref for MediaStreamBot {
    type Target = WsBot;
    fn deref(&self) -> &WsBot {
        &self.0
    }
}

/// An OpenAI-Realtime-speaking server: it refuses a handshake without
/// `Authorization: Bearer <key>` with 401, sends `session.created` on connect, answers
/// `session.update` with `session.updated` (or an `error`, see
/// [`FakeRealtime::fail_session_update`]), records every client event, and sends server
/// events on demand. See [`WsBot`] for the common API.
pub struct FakeRealtime(WsBot);

impl FakeRealtime {
    pub fn start(api_key: &str) -> FakeRealtime {
        FakeRealtime(WsBot::start(
            Flavor::Realtime,
            Knobs {
                expected_key: Some(api_key.to_string()),
                ..Knobs::default()
            },
        ))
    }

    /// Answer `session.update` with an `error` event carrying `message` (`None`: answer
    /// normally again).
    pub fn fail_session_update(&self, message: Option<&str>) {
        self.0.shared.knobs.lock().unwrap().update_error = message.map(str::to_string);
    }

    /// Leave `session.update` unanswered (`true`), so the client never becomes ready.
    pub fn ignore_session_update(&self, on: bool) {
        self.0.shared.knobs.lock().unwrap().update_silent = on;
    }

    /// `response.output_audio.delta` carrying `ulaw` (base64) for `item_id`, in one delta.
    pub fn send_audio_delta(&self, conn: usize, item_id: &str, ulaw: &[u8]) {
        self.send_json(
            conn,
            json!({
                "type": "response.output_audio.delta",
                "response_id": "resp_1",
                "item_id": item_id,
                "output_index": 0, "content_index": 0,
                "delta": b64(ulaw),
            }),
        );
    }

    /// `response.output_audio_transcript.done`: what the agent said in `item_id`.
    pub fn send_output_transcript_done(&self, conn: usize, item_id: &str, transcript: &str) {
        self.send_json(
            conn,
            json!({
                "type": "response.output_audio_transcript.done",
                "response_id": "resp_1",
                "item_id": item_id,
                "output_index": 0, "content_index": 0,
                "transcript": transcript,
            }),
        );
    }

    /// `conversation.item.input_audio_transcription.completed`: what the caller said.
    pub fn send_input_transcript_completed(&self, conn: usize, item_id: &str, transcript: &str) {
        self.send_json(
            conn,
            json!({
                "type": "conversation.item.input_audio_transcription.completed",
                "item_id": item_id,
                "content_index": 0,
                "transcript": transcript,
            }),
        );
    }

    /// `input_audio_buffer.speech_started` (the caller barges in).
    pub fn send_speech_started(&self, conn: usize, item_id: &str, audio_start_ms: u64) {
        self.send_json(
            conn,
            json!({
                "type": "input_audio_buffer.speech_started",
                "audio_start_ms": audio_start_ms,
                "item_id": item_id,
            }),
        );
    }

    /// An `error` event.
    pub fn send_error(&self, conn: usize, code: &str, message: &str) {
        self.send_json(
            conn,
            json!({
                "type": "error",
                "error": {"type": "server_error", "code": code, "message": message,
                          "param": null, "event_id": null},
            }),
        );
    }

    /// The audio appended on `conn` (`input_audio_buffer.append`), decoded and concatenated.
    pub fn appended_audio(&self, conn: usize) -> Vec<u8> {
        self.messages(conn)
            .iter()
            .filter(|m| m["type"] == "input_audio_buffer.append")
            .filter_map(|m| b64_decode(&m["audio"]))
            .flatten()
            .collect()
    }
}

impl Deref for FakeRealtime {
    type Target = WsBot;
    fn deref(&self) -> &WsBot {
        &self.0
    }
}
