//! The admin API's routes and replies, without HTTP machinery.
//!
//! Routes (every one but `GET /live` needs `Authorization: Bearer <token>` when a token is
//! configured): `GET /live`, `/ready`, `/metrics`, `/calls`, `/calls/{id}`, `/targets`,
//! `/targets/{id}`; `POST /targets/{id}/cordon|uncordon|fail|restore`, `/reload`, `/drain`.
//!
//! Never: performs an operation (the runtime does, on the core), or compares tokens in
//! time that depends on where they differ.
use serde::Serialize;

use crate::ai::control::Secret;

/// What a request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminOp {
    Live,
    Ready,
    Metrics,
    Calls,
    Call(String),
    Targets,
    Target(String),
    TargetAction(String, TargetAction),
    Reload,
    Drain,
}

/// An operator's action on a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetAction {
    /// No new calls; calls on it stay up.
    Cordon,
    Uncordon,
    /// The drill switch: treat it as failed.
    Fail,
    Restore,
}

/// An HTTP reply: status, content type and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

/// The content type of the Prometheus text format.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

impl Reply {
    pub fn json(status: u16, value: &impl Serialize) -> Reply {
        let mut body = serde_json::to_string_pretty(value)
            .unwrap_or_else(|e| format!("{{\"error\":\"serialization failed: {e}\"}}"));
        body.push('\n');
        Reply {
            status,
            content_type: "application/json",
            body,
        }
    }

    pub fn text(status: u16, body: impl Into<String>) -> Reply {
        let mut body = body.into();
        if !body.ends_with('\n') {
            body.push('\n');
        }
        Reply {
            status,
            content_type: "text/plain; charset=utf-8",
            body,
        }
    }

    /// `{"error": message}`.
    pub fn error(status: u16, message: impl Into<String>) -> Reply {
        Reply::json(status, &serde_json::json!({ "error": message.into() }))
    }
}

/// The operation for `method` and `path`, or the reply that refuses it (404, 405).
pub fn route(method: &str, path: &str) -> Result<AdminOp, Reply> {
    let path = path.split('?').next().unwrap_or("");
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    let get = method == "GET" || method == "HEAD";
    let post = method == "POST";
    let op = match segments.as_slice() {
        ["live"] if get => AdminOp::Live,
        ["ready"] if get => AdminOp::Ready,
        ["metrics"] if get => AdminOp::Metrics,
        ["calls"] if get => AdminOp::Calls,
        ["calls", id] if get && !id.is_empty() => AdminOp::Call(decode(id)),
        ["targets"] if get => AdminOp::Targets,
        ["targets", id] if get && !id.is_empty() => AdminOp::Target(decode(id)),
        ["targets", id, action] if post && !id.is_empty() => {
            let action = match *action {
                "cordon" => TargetAction::Cordon,
                "uncordon" => TargetAction::Uncordon,
                "fail" => TargetAction::Fail,
                "restore" => TargetAction::Restore,
                _ => return Err(not_found(path)),
            };
            AdminOp::TargetAction(decode(id), action)
        }
        ["reload"] if post => AdminOp::Reload,
        ["drain"] if post => AdminOp::Drain,
        ["live" | "ready" | "metrics" | "calls" | "targets"]
        | ["calls" | "targets", _]
        | ["reload" | "drain"] => {
            return Err(Reply::error(
                405,
                format!("{method} is not allowed on {path}"),
            ))
        }
        ["targets", _, "cordon" | "uncordon" | "fail" | "restore"] => {
            return Err(Reply::error(
                405,
                format!("{method} is not allowed on {path}; use POST"),
            ))
        }
        _ => return Err(not_found(path)),
    };
    Ok(op)
}

fn not_found(path: &str) -> Reply {
    Reply::error(404, format!("no such route: {path}"))
}

/// Percent-decoding of one path segment (ids are plain, but a client may encode them).
fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
            if let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether the `Authorization` header value carries the configured token (always true
/// without one). The comparison takes the same time wherever the strings differ.
pub fn authorized(token: Option<&Secret>, authorization: Option<&str>) -> bool {
    let Some(token) = token else {
        return true;
    };
    let Some(value) = authorization else {
        return false;
    };
    let Some((scheme, given)) = value.trim().split_once(' ') else {
        return false;
    };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return false;
    }
    let (a, b) = (given.trim().as_bytes(), token.expose().as_bytes());
    let mut diff = a.len() ^ b.len();
    for (i, &x) in b.iter().enumerate() {
        diff |= usize::from(x ^ a.get(i).copied().unwrap_or(0));
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(route("GET", "/live"), Ok(AdminOp::Live));
        assert_eq!(route("GET", "/calls/"), Ok(AdminOp::Calls));
        assert_eq!(
            route("GET", "/calls/hf-1a"),
            Ok(AdminOp::Call("hf-1a".into()))
        );
        assert_eq!(
            route("POST", "/targets/agent%2Da/fail"),
            Ok(AdminOp::TargetAction("agent-a".into(), TargetAction::Fail))
        );
        assert_eq!(route("POST", "/drain"), Ok(AdminOp::Drain));
        assert_eq!(route("GET", "/metrics?x=1"), Ok(AdminOp::Metrics));
        assert_eq!(route("GET", "/drain").unwrap_err().status, 405);
        assert_eq!(route("GET", "/targets/a/fail").unwrap_err().status, 405);
        assert_eq!(route("POST", "/targets/a/explode").unwrap_err().status, 404);
        assert_eq!(route("GET", "/nope").unwrap_err().status, 404);
        assert_eq!(route("GET", "/calls/a/b/c").unwrap_err().status, 404);
        assert_eq!(decode("%zz%4"), "%zz%4");
        assert_eq!(decode("%é1"), "%é1");
    }

    #[test]
    fn bearer_tokens() {
        let t = Secret("s3cret".into());
        assert!(authorized(None, None));
        assert!(authorized(Some(&t), Some("Bearer s3cret")));
        assert!(authorized(Some(&t), Some("bearer  s3cret ")));
        assert!(!authorized(Some(&t), Some("Bearer s3cre")));
        assert!(!authorized(Some(&t), Some("Bearer s3cret2")));
        assert!(!authorized(Some(&t), Some("Basic s3cret")));
        assert!(!authorized(Some(&t), Some("Bearer")));
        assert!(!authorized(Some(&t), None));
    }
}
