//! The admin HTTP server (axum) and the call-record writer: thin shells.
//!
//! Does: accept HTTP/1.1 on `admin.listen`, map each request to an [`AdminOp`] with
//! `admin::api::route`, check the bearer token (every route but `/live`), and hand the
//! operation to the runtime's main loop, which answers it from the call core; write call
//! records, one JSON line each, to the configured file (appended; reopened on reload, so
//! log rotation works) or stdout, from a task of its own so a slow disk never stalls calls.
//!
//! Never: reads or changes call state itself, blocks the main loop, or logs the token.
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Response, StatusCode};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tracing::{error, info, warn};

use crate::admin::api::{self, AdminOp, Reply};
use crate::ai::control::Secret;

/// An operation for the main loop and where its reply goes.
pub type AdminRequest = (AdminOp, oneshot::Sender<Reply>);

struct AdminState {
    token: Option<Secret>,
    tx: mpsc::Sender<AdminRequest>,
}

/// How long a request waits for the main loop.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// Binds the admin listener (an error here stops holdfast's start: an operator who
/// configured the API expects it).
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("binding the admin API on {addr} (admin.listen): {e}"))
}

/// Serves the API on `listener` until the process ends.
pub fn spawn(listener: TcpListener, token: Option<Secret>, tx: mpsc::Sender<AdminRequest>) {
    let state = Arc::new(AdminState { token, tx });
    let app = axum::Router::new().fallback(handle).with_state(state);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            error!("admin API stopped: {e}");
        }
    });
}

async fn handle(State(st): State<Arc<AdminState>>, req: Request) -> Response<Body> {
    let op = match api::route(req.method().as_str(), req.uri().path()) {
        Ok(op) => op,
        Err(reply) => return response(reply),
    };
    if op != AdminOp::Live {
        let auth = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if !api::authorized(st.token.as_ref(), auth) {
            let mut r = response(Reply::error(401, "missing or wrong bearer token"));
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"holdfast\""),
            );
            return r;
        }
    }
    if op == AdminOp::Live {
        // Answered here: the process is alive even when its main loop is busy.
        return response(Reply::text(200, "ok"));
    }
    let (reply_tx, reply_rx) = oneshot::channel();
    if st.tx.send((op, reply_tx)).await.is_err() {
        return response(Reply::error(503, "holdfast is shutting down"));
    }
    match tokio::time::timeout(ANSWER_TIMEOUT, reply_rx).await {
        Ok(Ok(reply)) => response(reply),
        Ok(Err(_)) => response(Reply::error(503, "holdfast is shutting down")),
        Err(_) => response(Reply::error(503, "holdfast did not answer in time")),
    }
}

fn response(reply: Reply) -> Response<Body> {
    let mut r = Response::new(Body::from(reply.body));
    *r.status_mut() = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::OK);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(reply.content_type),
    );
    r
}

/// Where call records go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordSink {
    Stdout,
    File(PathBuf),
}

enum RecordMsg {
    Line(String),
    /// Reopen (or switch) the file: after a reload, for log rotation.
    Reopen(Option<RecordSink>),
    /// Write what is queued, then answer.
    Flush(oneshot::Sender<()>),
}

/// The call-record writer task.
#[derive(Clone)]
pub struct Records {
    tx: mpsc::UnboundedSender<RecordMsg>,
}

impl Records {
    /// Starts the writer; `None` writes nothing until a reload names a sink.
    pub fn start(sink: Option<RecordSink>) -> Records {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(writer(sink, rx));
        Records { tx }
    }

    pub fn write(&self, line: String) {
        let _ = self.tx.send(RecordMsg::Line(line));
    }

    pub fn reopen(&self, sink: Option<RecordSink>) {
        let _ = self.tx.send(RecordMsg::Reopen(sink));
    }

    /// Waits (bounded) until everything queued so far is written.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(RecordMsg::Flush(tx)).is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(5), rx).await;
        }
    }
}

enum Out {
    None,
    Stdout(tokio::io::Stdout),
    File(tokio::fs::File),
}

async fn open(sink: Option<RecordSink>) -> Out {
    match sink {
        None => Out::None,
        Some(RecordSink::Stdout) => Out::Stdout(tokio::io::stdout()),
        Some(RecordSink::File(p)) => match tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&p)
            .await
        {
            Ok(f) => {
                info!(path = %p.display(), "call records: appending");
                Out::File(f)
            }
            Err(e) => {
                error!(path = %p.display(), "call records: cannot open the file: {e}; records are lost until a reload");
                Out::None
            }
        },
    }
}

async fn writer(sink: Option<RecordSink>, mut rx: mpsc::UnboundedReceiver<RecordMsg>) {
    let mut out = open(sink).await;
    while let Some(msg) = rx.recv().await {
        match msg {
            RecordMsg::Line(mut line) => {
                line.push('\n');
                let r = match &mut out {
                    Out::None => Ok(()),
                    Out::Stdout(s) => match s.write_all(line.as_bytes()).await {
                        Ok(()) => s.flush().await,
                        Err(e) => Err(e),
                    },
                    Out::File(f) => f.write_all(line.as_bytes()).await,
                };
                if let Err(e) = r {
                    warn!("call record not written: {e}");
                }
            }
            RecordMsg::Reopen(sink) => {
                if let Out::File(f) = &mut out {
                    let _ = f.flush().await;
                }
                out = open(sink).await;
            }
            RecordMsg::Flush(done) => {
                match &mut out {
                    Out::File(f) => {
                        let _ = f.flush().await;
                    }
                    Out::Stdout(s) => {
                        let _ = s.flush().await;
                    }
                    Out::None => {}
                }
                let _ = done.send(());
            }
        }
    }
}
