//! `runtime::webhook` against real HTTP servers on 127.0.0.1:0 written here: the request on
//! the wire (method, path, headers, JSON body), retry on 5xx and on connect errors and
//! timeouts, no retry on 4xx, and `send` never blocking when the receiver is down. Waits are
//! polls with deadlines, never fixed sleeps.
use std::collections::HashMap;
use std::time::{Duration, Instant};

use holdfast::runtime::webhook::{Webhook, WebhookCounters, WebhookError, QUEUE_CAPACITY};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(10);

/// One request as the server read it.
#[derive(Debug)]
struct Request {
    method: String,
    target: String,
    version: String,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

/// Reads one HTTP/1.1 request (head + Content-Length body).
async fn read_request(s: &mut TcpStream) -> Option<Request> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8(buf[..head_end].to_vec()).ok()?;
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let (method, target, version) = (first.next()?, first.next()?, first.next()?);
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let len: usize = headers.get("content-length")?.parse().ok()?;
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < len {
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some(Request {
        method: method.into(),
        target: target.into(),
        version: version.into(),
        headers,
        body,
    })
}

/// A server answering the n-th request with `statuses[n]` (the last one repeats); every
/// request read is sent to the returned channel.
async fn server(statuses: Vec<u16>) -> (u16, mpsc::UnboundedReceiver<Request>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut n = 0;
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            let Some(req) = read_request(&mut s).await else {
                continue;
            };
            let status = statuses[n.min(statuses.len() - 1)];
            n += 1;
            let _ = tx.send(req);
            let resp = format!(
                "HTTP/1.1 {status} Whatever\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
            );
            let _ = s.write_all(resp.as_bytes()).await;
            let _ = s.shutdown().await;
        }
    });
    (port, rx)
}

/// A server that accepts connections and never answers; counts connections.
async fn black_hole() -> (u16, mpsc::UnboundedReceiver<()>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            held.push(s);
            let _ = tx.send(());
        }
    });
    (port, rx)
}

async fn counters_until(w: &Webhook, pred: impl Fn(&WebhookCounters) -> bool) -> WebhookCounters {
    let deadline = Instant::now() + WAIT;
    loop {
        let c = w.counters();
        if pred(&c) {
            return c;
        }
        assert!(Instant::now() < deadline, "counters never got there: {c:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn next_request(rx: &mut mpsc::UnboundedReceiver<Request>) -> Request {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("a request within the deadline")
        .expect("server running")
}

fn rerouted() -> serde_json::Value {
    json!({
        "event": "call.ai_rerouted",
        "call_id": "a84b4c76e66710@pc33.example.com",
        "from_provider": "openai-primary",
        "to_provider": "backup",
        "gap_ms": 412,
        "reason": "media_timeout",
    })
}

#[tokio::test]
async fn posts_the_event_as_json_with_the_expected_headers() {
    let (port, mut rx) = server(vec![204]).await;
    let url = format!("http://127.0.0.1:{port}/hooks/holdfast?token=s3cret");
    let w = Webhook::start(&url, Duration::from_secs(2)).unwrap();
    assert!(!w.display_url().contains("s3cret"), "{}", w.display_url());
    w.send(rerouted());
    let r = next_request(&mut rx).await;
    assert_eq!(r.method, "POST");
    assert_eq!(r.target, "/hooks/holdfast?token=s3cret");
    assert_eq!(r.version, "HTTP/1.1");
    assert_eq!(r.headers["host"], format!("127.0.0.1:{port}"));
    assert_eq!(r.headers["content-type"], "application/json");
    assert_eq!(
        r.headers["user-agent"],
        format!("holdfast/{}", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(r.headers["content-length"], r.body.len().to_string());
    let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(body, rerouted());
    let c = counters_until(&w, |c| c.delivered == 1).await;
    assert_eq!(
        c,
        WebhookCounters {
            delivered: 1,
            failed: 0,
            dropped: 0,
            retries: 0
        }
    );
    // Events go out in order.
    for i in 0..3 {
        w.send(json!({"event": "call.ai_rerouted", "n": i}));
    }
    for i in 0..3 {
        let r = next_request(&mut rx).await;
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body["n"], i);
    }
    counters_until(&w, |c| c.delivered == 4).await;
}

#[tokio::test]
async fn a_5xx_is_retried_and_then_delivered() {
    let (port, mut rx) = server(vec![500, 200]).await;
    let w = Webhook::start(
        &format!("http://127.0.0.1:{port}/h"),
        Duration::from_secs(2),
    )
    .unwrap();
    w.send(rerouted());
    let first = next_request(&mut rx).await;
    let second = next_request(&mut rx).await;
    assert_eq!(first.body, second.body, "the same event again");
    let c = counters_until(&w, |c| c.delivered == 1).await;
    assert_eq!((c.failed, c.retries), (0, 1));
    assert!(rx.try_recv().is_err(), "delivered: no third request");
}

#[tokio::test]
async fn a_4xx_is_not_retried() {
    let (port, mut rx) = server(vec![404, 200]).await;
    let w = Webhook::start(
        &format!("http://127.0.0.1:{port}/gone"),
        Duration::from_secs(2),
    )
    .unwrap();
    w.send(rerouted());
    next_request(&mut rx).await;
    // Failed is counted only after the decision not to retry: a retry would come first.
    let c = counters_until(&w, |c| c.failed == 1).await;
    assert_eq!((c.delivered, c.retries), (0, 0));
    assert!(rx.try_recv().is_err(), "no retry after a 404");
    // The next event is delivered normally (the server now answers 200).
    w.send(json!({"event": "x"}));
    next_request(&mut rx).await;
    counters_until(&w, |c| c.delivered == 1).await;
}

#[tokio::test]
async fn connection_refused_is_retried_then_given_up() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap().port()
    };
    let w = Webhook::start(&format!("http://127.0.0.1:{port}/"), Duration::from_secs(1)).unwrap();
    w.send(rerouted());
    let c = counters_until(&w, |c| c.failed == 1).await;
    assert_eq!(
        (c.delivered, c.retries),
        (0, 2),
        "two retries, then give up"
    );
}

#[tokio::test]
async fn a_silent_receiver_times_out_each_attempt() {
    let (port, mut conns) = black_hole().await;
    let w = Webhook::start(
        &format!("http://127.0.0.1:{port}/"),
        Duration::from_millis(150),
    )
    .unwrap();
    w.send(rerouted());
    let c = counters_until(&w, |c| c.failed == 1).await;
    assert_eq!((c.delivered, c.retries), (0, 2));
    let mut attempts = 0;
    while conns.try_recv().is_ok() {
        attempts += 1;
    }
    assert_eq!(attempts, 3, "one connection per attempt");
}

#[tokio::test]
async fn send_never_blocks_and_drops_what_does_not_fit() {
    let (port, _conns) = black_hole().await;
    let w = Webhook::start(
        &format!("http://127.0.0.1:{port}/"),
        Duration::from_secs(30),
    )
    .unwrap();
    let n = QUEUE_CAPACITY + 1000;
    let t = Instant::now();
    for i in 0..n {
        w.send(json!({"event": "call.ai_rerouted", "n": i}));
    }
    let took = t.elapsed();
    assert!(took < Duration::from_secs(1), "send blocked: {took:?}");
    let c = w.counters();
    // The task may have taken one event out of the queue already.
    assert!(
        (999..=1000).contains(&c.dropped),
        "dropped {} of {n}",
        c.dropped
    );
    assert_eq!((c.delivered, c.failed), (0, 0));
}

#[tokio::test]
async fn https_to_a_plain_http_server_fails_cleanly() {
    let (port, mut rx) = server(vec![200]).await;
    let w = Webhook::start(
        &format!("https://127.0.0.1:{port}/"),
        Duration::from_secs(1),
    )
    .unwrap();
    w.send(rerouted());
    let c = counters_until(&w, |c| c.failed == 1).await;
    assert_eq!((c.delivered, c.retries), (0, 2));
    assert!(
        rx.try_recv().is_err(),
        "a TLS ClientHello is not an HTTP request"
    );
}

#[tokio::test]
async fn bad_urls_are_refused_at_start() {
    assert!(matches!(
        Webhook::start("ftp://example.com/", Duration::from_secs(1)),
        Err(WebhookError::Scheme(_))
    ));
    let e = Webhook::start("http://example.com:70000/", Duration::from_secs(1)).unwrap_err();
    assert!(e.to_string().contains("invalid port"), "{e}");
}

#[test]
fn start_outside_a_runtime_is_an_error_not_a_panic() {
    assert_eq!(
        Webhook::start("http://127.0.0.1:9/", Duration::from_secs(1)).unwrap_err(),
        WebhookError::NoRuntime
    );
}
