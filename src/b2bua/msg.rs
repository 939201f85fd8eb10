//! The B2BUA's view of SIP messages: owned summaries of what the call logic needs, extracted
//! from parsed messages in one place, and the builders for what it sends.
//!
//! Parsing borrows from the datagram; a call outlives it, so the few fields a call keeps are
//! copied here. Everything not listed in [`HOP_BY_HOP`] travels to the other leg verbatim.
//! Never sends or times anything.
use bytes::Bytes;
use std::time::Duration;

use crate::sip::build::{RequestBuilder, ResponseBuilder};
use crate::sip::header::Refresher;
use crate::sip::message::{Headers, Request, Response};
use crate::sip::method::Method;
use crate::sip::HeaderName;

/// Headers that belong to one hop or one dialog and are never copied across legs: each leg
/// gets its own (RFC 3261 §16.6 for the proxy view; a B2BUA is stricter and rewrites all of
/// them). Authorization headers are credentials for the hop they were sent on.
const HOP_BY_HOP: &[&str] = &[
    "via",
    "route",
    "record-route",
    "contact",
    "call-id",
    "from",
    "to",
    "cseq",
    "max-forwards",
    "content-length",
    "content-type",
    "supported",
    "require",
    "proxy-require",
    "unsupported",
    "allow",
    "session-expires",
    "min-se",
    "user-agent",
    "server",
    "authorization",
    "proxy-authorization",
    "www-authenticate",
    "proxy-authenticate",
    "accept",
    "expires",
    "rseq",
    "rack",
];

fn is_hop_by_hop(name: &str) -> bool {
    HOP_BY_HOP.iter().any(|h| h.eq_ignore_ascii_case(name))
}

/// Headers of `headers` that are copied to the other leg, as (name, value) pairs.
pub fn passthrough(headers: &Headers<'_>) -> Vec<(String, String)> {
    headers
        .iter()
        .filter(|h| !is_hop_by_hop(h.name.as_str()))
        .map(|h| (h.raw_name.to_string(), h.value.to_string()))
        .collect()
}

/// RFC 4028 Session-Expires as the call logic needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionExpires {
    pub interval: Duration,
    pub refresher: Option<Refresher>,
}

fn session_expires(h: &Headers<'_>) -> Option<SessionExpires> {
    h.session_expires().ok().flatten().map(|se| SessionExpires {
        interval: se.delta,
        refresher: se.refresher,
    })
}

fn has_token(list: impl Iterator<Item = String>, token: &str) -> bool {
    list.into_iter()
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// What the call logic needs of a request.
#[derive(Clone, Debug)]
pub struct Req {
    pub method: String,
    pub uri: String,
    pub call_id: String,
    pub from: String,
    pub from_tag: Option<String>,
    pub from_user: String,
    pub to: String,
    pub to_tag: Option<String>,
    pub to_user: String,
    pub uri_user: String,
    pub cseq: u32,
    pub branch: String,
    pub sent_by: String,
    /// The top Via's sent-by port (or the transport's default), and whether it asked for
    /// rport (RFC 3581).
    pub via_port: u16,
    pub via_rport: bool,
    pub max_forwards: Option<u8>,
    pub contact: Option<String>,
    pub record_route: Vec<String>,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
    pub session_expires: Option<SessionExpires>,
    pub supports_timer: bool,
    pub allows_update: bool,
    pub passthrough: Vec<(String, String)>,
}

/// What the call logic needs of a response.
#[derive(Clone, Debug)]
pub struct Resp {
    pub status: u16,
    pub reason: String,
    pub to_tag: Option<String>,
    pub to: String,
    pub cseq: u32,
    pub cseq_method: String,
    pub branch: String,
    pub contact: Option<String>,
    pub record_route: Vec<String>,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
    pub session_expires: Option<SessionExpires>,
    pub allows_update: bool,
    pub passthrough: Vec<(String, String)>,
}

/// Why a message could not be summarized; becomes a 400 for requests.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Malformed(pub String);

fn m<E: std::fmt::Display>(what: &'static str) -> impl FnOnce(E) -> Malformed {
    move |e| Malformed(format!("bad {what}: {e}"))
}

fn strip_tag(value: &str) -> String {
    // The dialog keeps the header value without its tag: our side adds its own tag.
    // Parameters are split on `;` outside quotes and angle brackets; bytes are copied as
    // slices so UTF-8 display names survive untouched.
    let mut out = String::with_capacity(value.len());
    let (mut in_quotes, mut in_angle, mut escaped) = (false, false, false);
    let mut seg_start = 0;
    let mut first = true;
    let mut push_segment = |seg: &str, first: &mut bool| {
        let p = seg.trim();
        let is_tag = !*first && {
            let name = p.split('=').next().unwrap_or("").trim();
            name.eq_ignore_ascii_case("tag")
        };
        if !is_tag {
            if !*first {
                out.push(';');
            }
            out.push_str(if *first { seg } else { p });
        }
        *first = false;
    };
    for (i, c) in value.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if in_quotes => escaped = true,
            '"' if !in_angle => in_quotes = !in_quotes,
            '<' if !in_quotes => in_angle = true,
            '>' if !in_quotes => in_angle = false,
            ';' if !in_quotes && !in_angle => {
                push_segment(&value[seg_start..i], &mut first);
                seg_start = i + 1;
            }
            _ => {}
        }
    }
    push_segment(&value[seg_start..], &mut first);
    out.trim().to_string()
}

fn uri_user(uri: &str) -> String {
    // sip:user@host, sips:user@host, tel:+123;params
    let rest = match uri.find(':') {
        Some(i) => &uri[i + 1..],
        None => return String::new(),
    };
    let scheme = &uri[..uri.find(':').unwrap_or(0)];
    if scheme.eq_ignore_ascii_case("tel") {
        return rest.split(';').next().unwrap_or("").to_string();
    }
    match rest.find('@') {
        Some(at) => rest[..at].split(':').next().unwrap_or("").to_string(),
        None => String::new(),
    }
}

impl Req {
    pub fn from_request(req: &Request<'_>) -> Result<Req, Malformed> {
        let h = &req.headers;
        let via = h.top_via().map_err(m("Via"))?;
        let from = h.from().map_err(m("From"))?;
        let to = h.to().map_err(m("To"))?;
        let cseq = h.cseq().map_err(m("CSeq"))?;
        let contact = h
            .contacts()
            .map_err(m("Contact"))?
            .as_slice()
            .first()
            .map(|c| c.uri_raw.to_string());
        let record_route = h
            .record_routes()
            .map_err(m("Record-Route"))?
            .into_iter()
            .map(|r| r.to_string())
            .collect();
        Ok(Req {
            method: req.method.as_str().to_string(),
            uri: req.uri.to_string(),
            call_id: h.call_id().map_err(m("Call-ID"))?.to_string(),
            from: strip_tag(h.get(HeaderName::From).unwrap_or_default()),
            from_tag: from.tag().map(str::to_string),
            from_user: uri_user(from.uri_raw),
            to: strip_tag(h.get(HeaderName::To).unwrap_or_default()),
            to_tag: to.tag().map(str::to_string),
            to_user: uri_user(to.uri_raw),
            uri_user: uri_user(req.uri),
            cseq: cseq.seq,
            branch: via.branch.unwrap_or_default().to_string(),
            sent_by: match via.port {
                Some(p) => format!("{}:{p}", via.host),
                None => via.host.to_string(),
            },
            via_port: via.port_or_default(),
            via_rport: via.rport.is_some(),
            max_forwards: h.max_forwards().map_err(m("Max-Forwards"))?,
            contact,
            record_route,
            content_type: h.get(HeaderName::ContentType).map(str::to_string),
            body: req.body.to_vec(),
            session_expires: session_expires(h),
            supports_timer: has_token(
                h.get_all(HeaderName::Supported).map(str::to_string),
                "timer",
            ) || has_token(
                h.get_all(HeaderName::Require).map(str::to_string),
                "timer",
            ),
            allows_update: has_token(h.get_all(HeaderName::Allow).map(str::to_string), "UPDATE"),
            passthrough: passthrough(h),
        })
    }
}

impl Resp {
    pub fn from_response(resp: &Response<'_>) -> Result<Resp, Malformed> {
        let h = &resp.headers;
        let via = h.top_via().map_err(m("Via"))?;
        let to = h.to().map_err(m("To"))?;
        let cseq = h.cseq().map_err(m("CSeq"))?;
        let contact = h
            .contacts()
            .ok()
            .and_then(|c| c.as_slice().first().map(|c| c.uri_raw.to_string()));
        let record_route = h
            .record_routes()
            .map(|v| v.into_iter().map(|r| r.to_string()).collect())
            .unwrap_or_default();
        Ok(Resp {
            status: resp.status,
            reason: resp.reason.to_string(),
            to_tag: to.tag().map(str::to_string),
            to: strip_tag(h.get(HeaderName::To).unwrap_or_default()),
            cseq: cseq.seq,
            cseq_method: cseq.method.as_str().to_string(),
            branch: via.branch.unwrap_or_default().to_string(),
            contact,
            record_route,
            content_type: h.get(HeaderName::ContentType).map(str::to_string),
            body: resp.body.to_vec(),
            session_expires: session_expires(h),
            allows_update: has_token(h.get_all(HeaderName::Allow).map(str::to_string), "UPDATE"),
            passthrough: passthrough(h),
        })
    }
}

/// A request holdfast originates, described by owned parts; serialized by [`RequestBuilder`].
#[derive(Clone, Debug, Default)]
pub struct OutRequest {
    pub method: String,
    pub uri: String,
    pub via: String,
    pub routes: Vec<String>,
    pub max_forwards: u8,
    pub from: String,
    pub to: String,
    pub call_id: String,
    pub cseq: u32,
    pub contact: Option<String>,
    pub headers: Vec<(String, String)>,
    pub body: Option<(String, Vec<u8>)>,
}

impl OutRequest {
    pub fn to_bytes(&self) -> Bytes {
        let mut b = RequestBuilder::new(Method::parse(&self.method), &self.uri)
            .header("Via", &self.via)
            .header("Max-Forwards", &self.max_forwards.to_string());
        for r in &self.routes {
            b = b.header("Route", r);
        }
        b = b
            .header("From", &self.from)
            .header("To", &self.to)
            .header("Call-ID", &self.call_id)
            .header("CSeq", &format!("{} {}", self.cseq, self.method));
        if let Some(c) = &self.contact {
            b = b.header("Contact", c);
        }
        for (n, v) in &self.headers {
            b = b.header(n, v);
        }
        match &self.body {
            Some((ct, body)) => b.body(ct, Bytes::copy_from_slice(body)).build(),
            None => b.build(),
        }
    }
}

/// Builds a response to a stored request: Via, From, To, Call-ID and CSeq copied per RFC 3261
/// §8.2.6.2 (the top Via stamped with `source`, §18.2.1 / RFC 3581), our To tag added when
/// given, then `headers` and the body.
pub fn response(
    request: &Request<'_>,
    source: Option<std::net::SocketAddr>,
    status: u16,
    reason: Option<&str>,
    to_tag: Option<&str>,
    headers: &[(String, String)],
    body: Option<(&str, &[u8])>,
) -> Bytes {
    let mut b = ResponseBuilder::for_request(request, status, reason);
    if let Some(src) = source {
        b = b.stamp_received(src);
    }
    if let Some(t) = to_tag {
        b = b.to_tag(t);
    }
    for (n, v) in headers {
        b = b.header(n, v);
    }
    match body {
        Some((ct, body)) => b.body(ct, Bytes::copy_from_slice(body)).build(),
        None => b.build(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strip_tag_keeps_other_params_and_quoted_semicolons() {
        assert_eq!(
            strip_tag("\"A;tag=x\" <sip:a@b;tag=uri>;tag=abc;foo=1"),
            "\"A;tag=x\" <sip:a@b;tag=uri>;foo=1"
        );
        assert_eq!(strip_tag("sip:a@b;TAG=1"), "sip:a@b");
        assert_eq!(
            strip_tag("\"Jörg \\\" Ünal\" <sip:j@x>;tag=9;x"),
            "\"Jörg \\\" Ünal\" <sip:j@x>;x"
        );
    }

    #[test]
    fn uri_user_handles_schemes() {
        assert_eq!(uri_user("sip:+4420@x.example:5060;user=phone"), "+4420");
        assert_eq!(uri_user("tel:+1-555;phone-context=x"), "+1-555");
        assert_eq!(uri_user("sip:host.example"), "");
        assert_eq!(uri_user("sips:u:pw@h"), "u");
    }
}
