//! The user's webhook: JSON events (e.g. `call.ai_rerouted`) POSTed to a configured
//! `http://` or `https://` URL, in the background.
//!
//! Does: [`Webhook::send`] queues an event without ever blocking or awaiting (a bounded
//! queue of [`QUEUE_CAPACITY`]; when it is full the event is dropped, counted, and a warning
//! is logged once per burst of drops); one tokio task per webhook delivers the queue in
//! order, one HTTP/1.1 `POST` per event on its own connection (`Connection: close`;
//! RFC 9112), TLS through rustls (ring) with the webpki roots for `https`. Each attempt
//! (connect, TLS, request, status line) has the configured timeout; a connect error, a
//! timeout, a broken response or a 5xx is retried up to [`RETRIES`] more times after a
//! short backoff; a 2xx is delivered; any other status (3xx, 4xx) is a final failure — the
//! receiver said no, asking again would not change that. Counters: [`WebhookCounters`].
//!
//! Never: blocks or panics in the caller, follows redirects, keeps connections alive,
//! reads a response body, logs the URL's query (it may carry a token), or sends anything
//! but the queued events.
//!
//! LIFECYCLE: `start` (URL parsed, task spawned) → `Running` (deliveries in order) → the
//! last clone of the [`Webhook`] dropped → the task delivers what is queued, then ends.
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// Events that may wait for delivery; more are dropped (and counted).
pub const QUEUE_CAPACITY: usize = 1024;
/// Retries after a failed first attempt (so at most 3 attempts per event).
pub const RETRIES: u32 = 2;
/// Wait before the first retry; doubled for each further one.
pub const RETRY_BACKOFF: Duration = Duration::from_millis(200);
/// Bytes read for the response's status line and headers at most.
const MAX_RESPONSE_HEAD: usize = 16 * 1024;

/// Why a webhook could not be started.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    /// Neither `http://` nor `https://`.
    #[error("webhook URL {0:?}: only http:// and https:// URLs are supported")]
    Scheme(String),
    /// The URL is malformed.
    #[error("webhook URL {url:?}: {reason}")]
    Url {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The TLS client could not be set up.
    #[error("webhook TLS setup: {0}")]
    Tls(String),
    /// `start` was called outside a tokio runtime.
    #[error("the webhook needs a tokio runtime to deliver from")]
    NoRuntime,
}

/// Delivery counters of one webhook (totals since `start`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct WebhookCounters {
    /// Events the receiver answered with a 2xx.
    pub delivered: u64,
    /// Events given up on (a non-2xx/5xx status, or every attempt failed).
    pub failed: u64,
    /// Events dropped because the queue was full.
    pub dropped: u64,
    /// Attempts that were retried (connect errors, timeouts, 5xx).
    pub retries: u64,
}

#[derive(Default)]
struct Counters {
    delivered: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
    retries: AtomicU64,
    /// Set while events are being dropped, so a burst warns once.
    dropping: AtomicBool,
}

/// A parsed webhook URL.
#[derive(Clone, PartialEq, Eq)]
struct Target {
    tls: bool,
    /// Host name or IP address (IPv6 without brackets).
    host: String,
    port: u16,
    /// Path and query, at least "/".
    path: String,
}

impl Target {
    fn parse(url: &str) -> Result<Target, WebhookError> {
        let bad = |reason| WebhookError::Url {
            url: url.to_string(),
            reason,
        };
        let (tls, rest) = if let Some(r) = strip_prefix_ci(url, "https://") {
            (true, r)
        } else if let Some(r) = strip_prefix_ci(url, "http://") {
            (false, r)
        } else {
            return Err(WebhookError::Scheme(url.to_string()));
        };
        // RFC 3986 §3: authority ends at the first '/', '?' or '#'; a fragment is never sent.
        let rest = rest.split('#').next().unwrap_or("");
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(end);
        if authority.contains('@') {
            return Err(bad("credentials in the URL are not supported"));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6
                .split_once(']')
                .ok_or_else(|| bad("unclosed '[' in host"))?;
            if h.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(bad("no valid IPv6 address in brackets"));
            }
            (h, after.strip_prefix(':'))
        } else {
            let (h, p) = match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            };
            // An IPv6 address must be bracketed (RFC 3986 §3.2.2).
            if h.contains(':') {
                return Err(bad("an IPv6 host must be in brackets"));
            }
            (h, p)
        };
        if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c.is_control()) {
            return Err(bad("no valid host"));
        }
        let port = match port {
            None => {
                if tls {
                    443
                } else {
                    80
                }
            }
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|&p| p != 0)
                .ok_or_else(|| bad("invalid port"))?,
        };
        if path.contains(|c: char| c.is_whitespace() || c.is_control()) {
            return Err(bad("spaces or control characters in the path"));
        }
        let path = if path.starts_with('/') {
            path.to_string()
        } else {
            format!("/{path}")
        };
        Ok(Target {
            tls,
            host: host.to_string(),
            port,
            path,
        })
    }

    /// The Host header value (RFC 9110 §7.2): the port only when not the scheme's default.
    fn host_header(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == if self.tls { 443 } else { 80 } {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

impl fmt::Display for Target {
    /// For logs: scheme, host, port and path without the query (it may carry a token).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "https" } else { "http" };
        let path = self.path.split('?').next().unwrap_or("/");
        write!(f, "{scheme}://{}{path}", self.host_header())
    }
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// A webhook receiver: cheap to clone (clones share the queue, task and counters).
#[derive(Clone)]
pub struct Webhook {
    tx: mpsc::Sender<serde_json::Value>,
    counters: Arc<Counters>,
    target: Arc<Target>,
}

impl fmt::Debug for Webhook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Webhook")
            .field("url", &self.target.to_string())
            .field("counters", &self.counters())
            .finish()
    }
}

impl Webhook {
    /// Parses `url` and spawns the delivery task on the current tokio runtime; each
    /// delivery attempt may take up to `timeout`.
    pub fn start(url: &str, timeout: Duration) -> Result<Webhook, WebhookError> {
        let target = Arc::new(Target::parse(url.trim())?);
        let handle = tokio::runtime::Handle::try_current().map_err(|_| WebhookError::NoRuntime)?;
        let tls = if target.tls {
            Some(tls_connector()?)
        } else {
            None
        };
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let counters = Arc::new(Counters::default());
        handle.spawn(deliver_all(
            rx,
            target.clone(),
            tls,
            timeout,
            counters.clone(),
        ));
        Ok(Webhook {
            tx,
            counters,
            target,
        })
    }

    /// Queues `event` for delivery; never blocks. When the queue is full the event is
    /// dropped and counted (a warning is logged once per burst of drops).
    pub fn send(&self, event: serde_json::Value) {
        match self.tx.try_send(event) {
            Ok(()) => {
                if self.counters.dropping.load(Ordering::Relaxed)
                    && self.counters.dropping.swap(false, Ordering::Relaxed)
                {
                    tracing::info!(webhook = %self.target, "webhook queue accepting events again");
                }
            }
            Err(_) => {
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                if !self.counters.dropping.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        webhook = %self.target,
                        capacity = QUEUE_CAPACITY,
                        "webhook queue full (receiver slow or down): dropping events"
                    );
                }
            }
        }
    }

    /// Totals since `start`.
    pub fn counters(&self) -> WebhookCounters {
        let c = &self.counters;
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        WebhookCounters {
            delivered: g(&c.delivered),
            failed: g(&c.failed),
            dropped: g(&c.dropped),
            retries: g(&c.retries),
        }
    }

    /// The URL for logs (without its query).
    pub fn display_url(&self) -> String {
        self.target.to_string()
    }
}

fn tls_connector() -> Result<tokio_rustls::TlsConnector, WebhookError> {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| WebhookError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// Why one attempt failed.
#[derive(Debug)]
enum Attempt {
    /// Worth another try: connect/TLS/I/O error, timeout, broken response, 5xx.
    Retry(String),
    /// The receiver refused (3xx, 4xx): final.
    Refused(u16),
}

/// The delivery task: events in order until every [`Webhook`] clone is gone.
async fn deliver_all(
    mut rx: mpsc::Receiver<serde_json::Value>,
    target: Arc<Target>,
    tls: Option<tokio_rustls::TlsConnector>,
    timeout: Duration,
    counters: Arc<Counters>,
) {
    let user_agent = concat!("holdfast/", env!("CARGO_PKG_VERSION"));
    while let Some(event) = rx.recv().await {
        let body = match serde_json::to_vec(&event) {
            Ok(b) => b,
            Err(e) => {
                counters.failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(webhook = %target, error = %e, "webhook event not serializable");
                continue;
            }
        };
        let mut request = format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: {user_agent}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n",
            target.path,
            target.host_header(),
            body.len()
        )
        .into_bytes();
        request.extend_from_slice(&body);
        let event_name = event
            .get("event")
            .and_then(|e| e.as_str())
            .map(str::to_owned);
        let mut attempt = 0;
        loop {
            let outcome = tokio::time::timeout(timeout, post(&target, tls.as_ref(), &request))
                .await
                .unwrap_or_else(|_| Err(Attempt::Retry(format!("timed out after {timeout:?}"))));
            match outcome {
                Ok(status) => {
                    counters.delivered.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(webhook = %target, status, event = ?event_name, "webhook delivered");
                    break;
                }
                Err(Attempt::Refused(status)) => {
                    counters.failed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        webhook = %target, status, event = ?event_name,
                        "webhook refused the event (not retried)"
                    );
                    break;
                }
                Err(Attempt::Retry(error)) if attempt < RETRIES => {
                    attempt += 1;
                    counters.retries.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        webhook = %target, %error, attempt, event = ?event_name,
                        "webhook delivery failed; retrying"
                    );
                    tokio::time::sleep(RETRY_BACKOFF * (1 << (attempt - 1))).await;
                }
                Err(Attempt::Retry(error)) => {
                    counters.failed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        webhook = %target, %error, attempts = attempt + 1, event = ?event_name,
                        "webhook delivery failed; giving up on this event"
                    );
                    break;
                }
            }
        }
    }
}

/// One attempt: connect, (TLS), write the request, read the final status. `Ok` = 2xx.
async fn post(
    target: &Target,
    tls: Option<&tokio_rustls::TlsConnector>,
    request: &[u8],
) -> Result<u16, Attempt> {
    let tcp = TcpStream::connect((target.host.as_str(), target.port))
        .await
        .map_err(|e| Attempt::Retry(format!("connect {}:{}: {e}", target.host, target.port)))?;
    let _ = tcp.set_nodelay(true);
    let status = match tls {
        None => exchange(tcp, request).await?,
        Some(tls) => {
            let name = rustls::pki_types::ServerName::try_from(target.host.clone())
                .map_err(|e| Attempt::Retry(format!("TLS server name {}: {e}", target.host)))?;
            let stream = tls
                .connect(name, tcp)
                .await
                .map_err(|e| Attempt::Retry(format!("TLS handshake: {e}")))?;
            exchange(stream, request).await?
        }
    };
    match status {
        200..=299 => Ok(status),
        500..=599 => Err(Attempt::Retry(format!("HTTP {status}"))),
        _ => Err(Attempt::Refused(status)),
    }
}

/// Writes `request` and reads up to the final (non-1xx) status line.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    request: &[u8],
) -> Result<u16, Attempt> {
    let io = |what: &str, e: std::io::Error| Attempt::Retry(format!("{what}: {e}"));
    stream
        .write_all(request)
        .await
        .map_err(|e| io("sending", e))?;
    stream.flush().await.map_err(|e| io("sending", e))?;
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        // Interim 1xx responses (RFC 9110 §15.2) precede the final one: skip them.
        while let Some(end) = find(&head, b"\r\n\r\n") {
            let status = parse_status_line(&head[..end])
                .ok_or_else(|| Attempt::Retry("malformed HTTP status line".into()))?;
            if status >= 200 {
                let _ = stream.shutdown().await;
                return Ok(status);
            }
            head.drain(..end + 4);
        }
        if head.len() > MAX_RESPONSE_HEAD {
            return Err(Attempt::Retry("response headers too long".into()));
        }
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|e| io("reading the response", e))?;
        if n == 0 {
            // Closed early; a complete status line is enough to know the outcome.
            return parse_status_line(&head)
                .filter(|&s| s >= 200)
                .ok_or_else(|| Attempt::Retry("connection closed before a response".into()));
        }
        head.extend_from_slice(&chunk[..n]);
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The status code of "HTTP/1.x NNN reason" (RFC 9112 §4), from the first line of `head`.
fn parse_status_line(head: &[u8]) -> Option<u16> {
    let line = head.split(|&b| b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?.trim_end_matches('\r');
    let mut parts = line.splitn(3, ' ');
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    let code = parts.next()?;
    if code.len() != 3 {
        return None;
    }
    code.parse().ok().filter(|c| (100..=599).contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_with_defaults_and_errors_name_the_problem() {
        let t = Target::parse("https://hooks.example.com/a/b?token=x#frag").unwrap();
        assert_eq!(
            (t.tls, t.host.as_str(), t.port, t.path.as_str()),
            (true, "hooks.example.com", 443, "/a/b?token=x")
        );
        assert_eq!(t.host_header(), "hooks.example.com");
        assert_eq!(t.to_string(), "https://hooks.example.com/a/b");
        let t = Target::parse("HTTP://127.0.0.1:8080").unwrap();
        assert_eq!((t.tls, t.port, t.path.as_str()), (false, 8080, "/"));
        assert_eq!(t.host_header(), "127.0.0.1:8080");
        let t = Target::parse("http://[::1]:9000/x").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 9000));
        assert_eq!(t.host_header(), "[::1]:9000");
        let t = Target::parse("http://h?q=1").unwrap();
        assert_eq!(t.path, "/?q=1");
        assert!(matches!(
            Target::parse("ftp://x/"),
            Err(WebhookError::Scheme(_))
        ));
        for bad in [
            "http://",
            "http://:80/",
            "http://h:0/",
            "http://h:99999/",
            "http://u:p@h/",
            "http://[::1/",
            "http://h/a b",
            "http://::1/",
        ] {
            assert!(
                matches!(Target::parse(bad), Err(WebhookError::Url { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn status_lines() {
        assert_eq!(parse_status_line(b"HTTP/1.1 204 No Content\r\n"), Some(204));
        assert_eq!(parse_status_line(b"HTTP/1.0 500"), Some(500));
        assert_eq!(parse_status_line(b"HTTP/2 200 OK"), None);
        assert_eq!(parse_status_line(b"HTTP/1.1 20 OK"), None);
        assert_eq!(parse_status_line(b"HTTP/1.1 999 OK"), None);
        assert_eq!(parse_status_line(b"\xff\xfe"), None);
        assert_eq!(parse_status_line(b""), None);
    }
}
