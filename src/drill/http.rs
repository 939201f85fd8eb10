//! A tiny HTTP/1.1 client for the admin API: plain `http://` only, one request per
//! connection (`Connection: close`), the response read to EOF. Enough for holdfast's admin
//! API on a trusted network; not a general client.
//!
//! The request/response text handling is pure ([`build_request`], [`parse_response`]); only
//! [`request`] touches a socket.

use std::time::Duration;

use anyhow::{anyhow, bail, Context as _, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// `http://host:port[/base]` split into `host:port` and the base path (no trailing `/`).
pub fn split_url(url: &str) -> Result<(String, String)> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow!("admin URL must start with http:// (got {url})"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
        None => (rest, ""),
    };
    if authority.is_empty() {
        bail!("admin URL without a host: {url}");
    }
    let authority = if authority.contains(':') && !authority.ends_with(']') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    Ok((authority, path.to_string()))
}

/// The request bytes.
pub fn build_request(
    method: &str,
    host: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> String {
    let mut r = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nUser-Agent: holdfast-drill\r\nAccept: application/json\r\n"
    );
    if let Some(t) = token {
        r.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    if !body.is_empty() || method == "POST" {
        r.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    r.push_str("\r\n");
    r.push_str(body);
    r
}

/// Status and body of a whole response (chunked bodies are de-chunked).
pub fn parse_response(raw: &[u8]) -> Result<(u16, String)> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("truncated HTTP response"))?;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("bad HTTP status line: {:?}", head.lines().next()))?;
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok((status, body))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// One request; the response's status and body.
pub async fn request(
    base: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> Result<(u16, String)> {
    let (host, prefix) = split_url(base)?;
    let fut = async {
        let mut s = TcpStream::connect(&host)
            .await
            .with_context(|| format!("connect {host}"))?;
        s.write_all(
            build_request(method, &host, &format!("{prefix}{path}"), token, body).as_bytes(),
        )
        .await?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await?;
        parse_response(&raw)
    };
    tokio::time::timeout(Duration::from_secs(5), fut)
        .await
        .map_err(|_| anyhow!("{method} {path}: no answer within 5 s"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_requests_and_responses() {
        assert_eq!(
            split_url("http://127.0.0.1:9090").unwrap(),
            ("127.0.0.1:9090".into(), "".into())
        );
        assert_eq!(
            split_url("http://h/admin/").unwrap(),
            ("h:80".into(), "/admin".into())
        );
        assert!(split_url("https://h").is_err());
        let r = build_request("POST", "h:1", "/targets/a/fail", Some("tok"), "");
        assert!(r.starts_with("POST /targets/a/fail HTTP/1.1\r\n"));
        assert!(r.contains("Authorization: Bearer tok\r\n"));
        assert!(r.contains("Content-Length: 0\r\n"));
        assert!(r.ends_with("\r\n\r\n"));
        let (s, b) =
            parse_response(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{\"a\":1}")
                .unwrap();
        assert_eq!((s, b.as_str()), (200, "{\"a\":1}"));
        let (s, b) = parse_response(b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n").unwrap();
        assert_eq!((s, b.as_str()), (404, "abcde"));
        assert!(parse_response(b"HTTP/1.1 200").is_err());
    }
}
