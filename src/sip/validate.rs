//! Request-level checks a B2BUA performs before handling a request (RFC 3261 §8.2 UAS
//! behaviour, §16.3 Max-Forwards, RFC 4475 torture tests), and [`classify`]: one call from
//! received bytes to "handle / reject with this response / drop".
//!
//! Order of checks follows RFC 3261 §8.2: syntax of the headers we rely on (400), CSeq
//! method (400), Request-URI scheme (416, §8.2.2.1), Require (420, §8.2.2.3), body type and
//! encoding (415, §8.2.3), Accept (406), then Max-Forwards (483) for requests we forward.
//!
//! Pure functions: no I/O, no clock, no randomness (stateless To tags are a keyed hash of
//! the request, RFC 3261 §8.2.7, with the key passed in through [`Policy`]).

use std::borrow::Cow;
use std::hash::{Hash, Hasher};

use bytes::Bytes;

use super::build::ResponseBuilder;
use super::header::{Contacts, HeaderName, MediaType};
use super::message::{parse_with_limit, Message, ParseError, Request};
use super::method::Method;
use super::syntax::trim_ws;
use super::uri::Uri;

/// What this element accepts. `Policy::default()` is holdfast's B2BUA profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Option tags we implement; anything else in Require gets 420 (RFC 3261 §8.2.2.3).
    pub supported_options: Vec<String>,
    /// Body types accepted on offer/answer methods (INVITE, UPDATE, PRACK).
    /// `multipart/mixed` is accepted only if one of its parts is `application/sdp`.
    pub accepted_content_types: Vec<String>,
    /// Request-URI schemes we serve (others get 416, RFC 3261 §8.2.2.1).
    pub uri_schemes: Vec<String>,
    /// Methods answered locally (never forwarded), so Max-Forwards 0 is not a 483 for them
    /// (RFC 3261 §16.3 item 3 / §11: OPTIONS with Max-Forwards 0 may be answered).
    pub local_methods: Vec<String>,
    /// Key for stateless To tags; pass a random value drawn at startup.
    pub tag_secret: u64,
    /// Largest message accepted by [`classify`].
    pub max_message_size: usize,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            supported_options: vec!["timer".into()],
            accepted_content_types: vec!["application/sdp".into(), "multipart/mixed".into()],
            uri_schemes: vec!["sip".into(), "sips".into(), "tel".into()],
            local_methods: vec!["OPTIONS".into()],
            tag_secret: 0,
            max_message_size: super::message::DEFAULT_MAX_MESSAGE_SIZE,
        }
    }
}

/// A request we refuse, and how to say so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub status: u16,
    /// Standard reason phrase for `status`.
    pub reason: &'static str,
    /// Why (for logs; not sent).
    pub detail: String,
    /// Headers the response must carry (Unsupported for 420, Accept for 415, ...).
    pub extra_headers: Vec<(&'static str, String)>,
}

impl Rejection {
    fn new(status: u16, detail: impl Into<String>) -> Self {
        Rejection {
            status,
            reason: super::status::reason_phrase(status),
            detail: detail.into(),
            extra_headers: Vec::new(),
        }
    }

    fn with(mut self, name: &'static str, value: String) -> Self {
        self.extra_headers.push((name, value));
        self
    }

    /// The response to send for `req` (None for ACK, which is never answered).
    pub fn response(&self, req: &Request<'_>, to_tag: &str) -> Option<Bytes> {
        if req.method == Method::Ack {
            return None;
        }
        let mut b =
            ResponseBuilder::for_request(req, self.status, Some(self.reason)).to_tag(to_tag);
        for (n, v) in &self.extra_headers {
            b = b.header(n, v);
        }
        Some(b.build())
    }
}

fn bad(e: impl std::fmt::Display) -> Rejection {
    Rejection::new(400, e.to_string())
}

/// Methods whose body is an SDP offer/answer we must understand.
fn is_offer_answer(m: &Method<'_>) -> bool {
    matches!(m, Method::Invite | Method::Update | Method::Prack)
}

/// RFC 3261 §8.2 checks (everything except Max-Forwards, see [`check_max_forwards`]).
pub fn check_request(req: &Request<'_>, policy: &Policy) -> Result<(), Rejection> {
    let h = &req.headers;
    // --- 400: the headers every request needs (§8.1.1), each valid and not repeated.
    h.vias().map_err(bad)?;
    h.from().map_err(bad)?;
    h.to().map_err(bad)?;
    h.call_id().map_err(bad)?;
    let cseq = h.cseq().map_err(bad)?;
    // Max-Forwards may be absent (RFC 2543 peers, RFC 4475 inv2543; §16.6 adds one).
    h.max_forwards().map_err(bad)?;
    match h.contacts().map_err(bad)? {
        Contacts::Wildcard if req.method != Method::Register => {
            return Err(bad("Contact: * outside REGISTER"))
        }
        _ => {}
    }
    h.routes().map_err(bad)?;
    h.record_routes().map_err(bad)?;
    let ctype = h.content_type().map_err(bad)?;
    h.content_length().map_err(bad)?;
    let require = h.require().map_err(bad)?;
    h.proxy_require().map_err(bad)?;
    h.supported().map_err(bad)?;
    h.session_expires().map_err(bad)?;
    h.min_se().map_err(bad)?;
    let accept = h.accept().map_err(bad)?;
    // RFC 3261 §20.17 requires GMT (RFC 4475 baddate).
    h.date().map_err(bad)?;
    // CSeq method must match the request method (§8.1.1.5, RFC 4475 mismatch01/02).
    if cseq.method != req.method {
        return Err(bad("CSeq method does not match the request method"));
    }
    // Request-URI: parsed by `parse`, but a SIP URI there must not carry headers
    // (§19.1.1 Table 1, RFC 4475 escruri).
    let uri = req.uri_parsed().map_err(bad)?;
    if let Uri::Sip(s) = &uri {
        if s.headers.is_some() {
            return Err(bad("headers in the Request-URI"));
        }
    }
    // --- 416 (§8.2.2.1).
    if !policy
        .uri_schemes
        .iter()
        .any(|s| s.eq_ignore_ascii_case(uri.scheme()))
    {
        return Err(Rejection::new(
            416,
            format!("Request-URI scheme {}", uri.scheme()),
        ));
    }
    // --- 420 (§8.2.2.3): never for ACK or CANCEL.
    if !matches!(req.method, Method::Ack | Method::Cancel) {
        let unsupported: Vec<&str> = require
            .iter()
            .copied()
            .filter(|o| {
                !policy
                    .supported_options
                    .iter()
                    .any(|s| s.eq_ignore_ascii_case(o))
            })
            .collect();
        if !unsupported.is_empty() {
            return Err(Rejection::new(420, "unsupported Require option")
                .with("Unsupported", unsupported.join(", ")));
        }
    }
    // --- 415 (§8.2.3): body type / encoding on offer-answer methods.
    if is_offer_answer(&req.method) && !req.body.is_empty() {
        let accept_hdr = policy.accepted_content_types.join(", ");
        if let Some(enc) = h.get(HeaderName::ContentEncoding) {
            if super::header::list_elements(enc).any(|e| !e.eq_ignore_ascii_case("identity")) {
                return Err(Rejection::new(415, "Content-Encoding")
                    .with("Accept-Encoding", "identity".into())
                    .with("Accept", accept_hdr));
            }
        }
        let ok = match &ctype {
            None => false,
            Some(ct) => body_acceptable(ct, req.body, policy),
        };
        if !ok {
            return Err(Rejection::new(415, "body type").with("Accept", accept_hdr));
        }
    }
    // --- 406: the response to an offer/answer request carries SDP; Accept must allow it
    // (RFC 4475 §3.3.15 sdp01; absent Accept means application/sdp, §20.1).
    if matches!(req.method, Method::Invite | Method::Update) {
        if let Some(ranges) = accept {
            if !accepts(&ranges, "application", "sdp") {
                return Err(Rejection::new(406, "Accept excludes application/sdp"));
            }
        }
    }
    Ok(())
}

/// Max-Forwards check for a request we are about to forward (RFC 3261 §16.3 item 3):
/// 0 gets 483. Requests we answer ourselves (`forwarding == false`) pass.
pub fn check_max_forwards(req: &Request<'_>, forwarding: bool) -> Result<(), Rejection> {
    if forwarding && req.method != Method::Ack {
        if let Ok(Some(0)) = req.headers.max_forwards() {
            return Err(Rejection::new(483, "Max-Forwards is 0"));
        }
    }
    Ok(())
}

/// Whether any range covers `type/subtype` with q > 0; the most specific match decides.
fn accepts(ranges: &[MediaType<'_>], mtype: &str, subtype: &str) -> bool {
    let mut best: Option<(u8, f32)> = None;
    for r in ranges {
        if !r.covers(mtype, subtype) {
            continue;
        }
        let spec = u8::from(r.mtype != "*") + u8::from(r.subtype != "*");
        if best.is_none_or(|(s, _)| spec > s) {
            best = Some((spec, r.q()));
        }
    }
    best.is_some_and(|(_, q)| q > 0.0)
}

fn body_acceptable(ct: &MediaType<'_>, body: &[u8], policy: &Policy) -> bool {
    let listed = |t: &str, s: &str| {
        policy.accepted_content_types.iter().any(|a| {
            a.split_once('/')
                .is_some_and(|(at, st)| at.eq_ignore_ascii_case(t) && st.eq_ignore_ascii_case(s))
        })
    };
    if !listed(ct.mtype, ct.subtype) {
        return false;
    }
    if ct.mtype.eq_ignore_ascii_case("multipart") {
        let Some(boundary) = ct.boundary() else {
            return false;
        };
        return multipart_types(body, &boundary)
            .iter()
            .any(|(t, s)| !t.eq_ignore_ascii_case("multipart") && listed(t, s));
    }
    true
}

/// Content types of the parts of a multipart body (RFC 2046 §5.1), best effort, bounded.
fn multipart_types(body: &[u8], boundary: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let delim = format!("--{boundary}");
    let text = String::from_utf8_lossy(body);
    for part in text.split(delim.as_str()).skip(1).take(32) {
        if part.starts_with("--") {
            break;
        }
        let mut ctype = ("text".to_owned(), "plain".to_owned()); // RFC 2046 §5.1 default
        for line in part.lines().skip(1) {
            let line = line.trim_end_matches('\r');
            if line.is_empty() {
                break;
            }
            if let Some((n, v)) = line.split_once(':') {
                if HeaderName::parse(trim_ws(n)) == HeaderName::ContentType {
                    if let Ok(mt) = MediaType::parse(v, "Content-Type") {
                        ctype = (mt.mtype.to_owned(), mt.subtype.to_owned());
                    }
                }
            }
        }
        out.push(ctype);
    }
    out
}

/// The outcome of [`classify`].
#[derive(Debug)]
pub enum Verdict<'a> {
    /// A well-formed request that passed [`check_request`] (and Max-Forwards), or a
    /// well-formed response (hand it to the transaction layer, which drops strays).
    Handle(Message<'a>),
    /// A request we refuse; `response` is the stateless answer to send back by Via
    /// (always `Some` from [`classify`]; requests that cannot be answered are dropped).
    Reject {
        status: u16,
        detail: String,
        response: Option<Bytes>,
    },
    /// Nothing to answer (malformed responses, unroutable garbage, ACK we won't take).
    Drop { reason: Cow<'static, str> },
}

/// Stateless To tag for a rejected request: a keyed hash of the request identity, so
/// retransmissions get the same tag (RFC 3261 §8.2.7 stateless UAS; §19.3 tag rules).
pub fn stateless_to_tag(secret: u64, parts: &[&str]) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    secret.hash(&mut h);
    for p in parts {
        p.hash(&mut h);
    }
    format!("hf{:016x}", h.finish())
}

fn tag_for_request(policy: &Policy, req: &Request<'_>) -> String {
    let h = &req.headers;
    stateless_to_tag(
        policy.tag_secret,
        &[
            h.get(HeaderName::CallId).unwrap_or(""),
            h.get(HeaderName::From).unwrap_or(""),
            h.get(HeaderName::Via).unwrap_or(""),
            h.get(HeaderName::CSeq).unwrap_or(""),
        ],
    )
}

fn tag_for_error(policy: &Policy, e: &ParseError) -> String {
    let s = &e.salvage;
    stateless_to_tag(
        policy.tag_secret,
        &[
            s.call_id.as_deref().unwrap_or(""),
            s.from.as_deref().unwrap_or(""),
            s.vias.first().map_or("", |v| v.as_str()),
            s.cseq.as_deref().unwrap_or(""),
        ],
    )
}

/// From received bytes (one datagram or one framed stream message) to a decision:
/// parse, run [`check_request`] and [`check_max_forwards`] (forwarding unless the method is
/// in `policy.local_methods`), and build the stateless error response when rejecting.
/// Responses are handed on if the headers needed to match a transaction parse, else dropped.
pub fn classify<'a>(buf: &'a [u8], policy: &Policy) -> Verdict<'a> {
    let msg = match parse_with_limit(buf, policy.max_message_size) {
        Ok(m) => m,
        Err(e) => {
            if !e.salvage.is_request {
                return Verdict::Drop {
                    reason: format!("unparseable response or garbage: {}", e.kind).into(),
                };
            }
            let tag = tag_for_error(policy, &e);
            return match e.error_response(&tag) {
                Some(resp) => Verdict::Reject {
                    status: e.status(),
                    detail: e.kind.to_string(),
                    response: Some(resp),
                },
                None => Verdict::Drop {
                    reason: format!("unparseable request, cannot answer: {}", e.kind).into(),
                },
            };
        }
    };
    match msg {
        Message::Response(ref r) => {
            // §18.1.2: a response whose top Via or CSeq doesn't parse can't match anything.
            let h = &r.headers;
            let ok = h.top_via().is_ok()
                && h.cseq().is_ok()
                && h.call_id().is_ok()
                && h.from().is_ok()
                && h.to().is_ok();
            if ok {
                Verdict::Handle(msg)
            } else {
                Verdict::Drop {
                    reason: "malformed response".into(),
                }
            }
        }
        Message::Request(ref req) => {
            let forwarding = !policy
                .local_methods
                .iter()
                .any(|m| m == req.method.as_str());
            let checked =
                check_request(req, policy).and_then(|()| check_max_forwards(req, forwarding));
            match checked {
                Ok(()) => Verdict::Handle(msg),
                Err(rej) if req.method == Method::Ack => Verdict::Drop {
                    reason: format!("bad ACK: {}", rej.detail).into(),
                },
                // Routable only with a Via, and matchable by the client only with a CSeq
                // (§17.1.3), the same rule as for unparseable requests.
                Err(rej)
                    if !req.headers.contains(HeaderName::Via)
                        || !req.headers.contains(HeaderName::CSeq) =>
                {
                    Verdict::Drop {
                        reason: format!("cannot answer: {}", rej.detail).into(),
                    }
                }
                Err(rej) => {
                    let tag = tag_for_request(policy, req);
                    Verdict::Reject {
                        status: rej.status,
                        response: rej.response(req, &tag),
                        detail: rej.detail,
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::parse;

    fn req(extra: &str, body: &str) -> Vec<u8> {
        format!(
            "INVITE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nMax-Forwards: 70\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:bob@example.com>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n{extra}Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    fn check(bytes: &[u8]) -> Result<(), Rejection> {
        let Ok(Message::Request(r)) = parse(bytes) else {
            panic!()
        };
        check_request(&r, &Policy::default())
    }

    #[test]
    fn accept_rules() {
        assert!(check(&req("", "")).is_ok());
        assert!(check(&req("Accept: application/*\r\n", "")).is_ok());
        assert!(check(&req("Accept: */*\r\n", "")).is_ok());
        assert_eq!(
            check(&req("Accept: application/sdp;q=0, */*\r\n", ""))
                .unwrap_err()
                .status,
            406
        );
        assert_eq!(check(&req("Accept:\r\n", "")).unwrap_err().status, 406);
    }

    #[test]
    fn bodies() {
        let ok = check(&req("Content-Type: application/sdp\r\n", "v=0\r\n"));
        assert!(ok.is_ok());
        let r = check(&req("", "v=0\r\n")).unwrap_err();
        assert_eq!(r.status, 415);
        let r = check(&req(
            "Content-Type: application/sdp\r\nContent-Encoding: gzip\r\n",
            "v=0\r\n",
        ))
        .unwrap_err();
        assert_eq!(r.status, 415);
        let mp = "--b\r\nContent-Type: application/sdp\r\n\r\nv=0\r\n--b--\r\n";
        assert!(check(&req("Content-Type: multipart/mixed;boundary=b\r\n", mp)).is_ok());
        let mp = "--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n--b--\r\n";
        assert_eq!(
            check(&req("Content-Type: multipart/mixed;boundary=b\r\n", mp))
                .unwrap_err()
                .status,
            415
        );
    }

    #[test]
    fn require_and_timers() {
        assert!(check(&req(
            "Require: timer\r\nSession-Expires: 1800;refresher=uac\r\n",
            ""
        ))
        .is_ok());
        let r = check(&req("Require: timer, 100rel\r\n", "")).unwrap_err();
        assert_eq!(r.status, 420);
        assert_eq!(r.extra_headers, vec![("Unsupported", "100rel".to_owned())]);
        assert_eq!(
            check(&req("Session-Expires: soon\r\n", ""))
                .unwrap_err()
                .status,
            400
        );
    }

    #[test]
    fn classify_builds_responses() {
        let bytes = req("Require: foo\r\n", "");
        let Verdict::Reject {
            status,
            response: Some(resp),
            ..
        } = classify(&bytes, &Policy::default())
        else {
            panic!()
        };
        assert_eq!(status, 420);
        let Ok(Message::Response(r)) = parse(&resp) else {
            panic!()
        };
        assert_eq!(r.status, 420);
        assert_eq!(r.headers.get(HeaderName::Unsupported), Some("foo"));
        let tag = r.headers.to().unwrap().tag().unwrap().to_owned();
        // Same request, same tag (stateless, §8.2.7).
        let Verdict::Reject {
            response: Some(resp2),
            ..
        } = classify(&bytes, &Policy::default())
        else {
            panic!()
        };
        let Ok(Message::Response(r2)) = parse(&resp2) else {
            panic!()
        };
        assert_eq!(r2.headers.to().unwrap().tag(), Some(tag.as_str()));
        // ACK is never answered.
        let ack = String::from_utf8(bytes)
            .unwrap()
            .replace("INVITE", "ACK")
            .replace("Max-Forwards: 70", "Max-Forwards: 300");
        assert!(matches!(
            classify(ack.as_bytes(), &Policy::default()),
            Verdict::Drop { .. }
        ));
    }
}
