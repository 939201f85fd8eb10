//! Building outgoing SIP messages as `bytes::Bytes`: requests from scratch, responses from a
//! received request (RFC 3261 §8.2.6), and the stateless error response to a request that
//! did not parse ([`ParseError::error_response`], §8.2).
//!
//! Builders own their header strings; header values given as raw text have CR and LF
//! replaced by SP so that no caller-supplied value can inject a header line. Content-Length
//! is always computed from the body. Nothing here does I/O or draws random numbers: tags and
//! branches are passed in.

use std::fmt::Write as _;

use bytes::{BufMut, Bytes, BytesMut};

use super::header::{HeaderName, NameAddr, SessionExpires, Via};
use super::message::{ParseError, Request};
use super::method::Method;
use super::status::reason_phrase;
use super::syntax::SplitOutside;

/// Replace CR/LF so that a value can never start a new header line.
fn sanitize(v: &str) -> String {
    v.replace(['\r', '\n'], " ")
}

/// Add `;tag=<tag>` to a To/From value unless it already has a tag param. Works on the raw
/// text so an unparseable value is still answered (RFC 3261 §8.2.6.2).
pub fn add_to_tag(value: &str, tag: &str) -> String {
    let has_tag = match NameAddr::parse(value, "To") {
        Ok(na) => na.tag().is_some(),
        Err(_) => {
            // Params after the URI: look outside quotes/brackets.
            let mut parts = SplitOutside::new(value, b';');
            parts.next();
            parts.any(|p| {
                let name = p.split('=').next().unwrap_or("");
                name.trim_matches([' ', '\t']).eq_ignore_ascii_case("tag")
            })
        }
    };
    if has_tag || tag.is_empty() {
        value.to_owned()
    } else {
        format!("{value};tag={}", sanitize(tag))
    }
}

#[derive(Debug, Clone, Default)]
struct HeaderList {
    list: Vec<(String, String)>,
    body: Option<(String, Bytes)>,
}

impl HeaderList {
    fn push(&mut self, name: &str, value: &str) {
        self.list.push((sanitize(name), sanitize(value)));
    }

    fn write(&self, out: &mut BytesMut) {
        for (n, v) in &self.list {
            if HeaderName::parse(n) == HeaderName::ContentLength
                || (self.body.is_some() && HeaderName::parse(n) == HeaderName::ContentType)
            {
                continue;
            }
            out.put_slice(n.as_bytes());
            out.put_slice(b": ");
            out.put_slice(v.as_bytes());
            out.put_slice(b"\r\n");
        }
        let (ct, body) = match &self.body {
            Some((ct, b)) => (Some(ct.as_str()), b.as_ref()),
            None => (None, &[][..]),
        };
        if let Some(ct) = ct {
            out.put_slice(b"Content-Type: ");
            out.put_slice(ct.as_bytes());
            out.put_slice(b"\r\n");
        }
        let mut cl = String::with_capacity(24);
        let _ = write!(cl, "Content-Length: {}\r\n\r\n", body.len());
        out.put_slice(cl.as_bytes());
        out.put_slice(body);
    }
}

/// Builds a request. Headers are written in the order added; Content-Type and
/// Content-Length come from [`RequestBuilder::body`].
#[derive(Debug, Clone)]
pub struct RequestBuilder {
    method: String,
    uri: String,
    headers: HeaderList,
}

impl RequestBuilder {
    pub fn new(method: Method<'_>, request_uri: &str) -> Self {
        RequestBuilder {
            method: sanitize(method.as_str()).replace(' ', ""),
            uri: sanitize(request_uri).replace(' ', ""),
            headers: HeaderList::default(),
        }
    }

    /// Any header, raw value.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push(name, value);
        self
    }

    /// A Via value.
    pub fn via(self, via: &Via<'_>) -> Self {
        let v = via.to_string();
        self.header("Via", &v)
    }

    pub fn max_forwards(self, n: u8) -> Self {
        self.header("Max-Forwards", &n.to_string())
    }

    pub fn from(self, from: &NameAddr<'_>) -> Self {
        let v = from.to_string();
        self.header("From", &v)
    }

    pub fn to(self, to: &NameAddr<'_>) -> Self {
        let v = to.to_string();
        self.header("To", &v)
    }

    pub fn call_id(self, call_id: &str) -> Self {
        self.header("Call-ID", call_id)
    }

    /// CSeq with this request's method.
    pub fn cseq(self, seq: u32) -> Self {
        let v = format!("{seq} {}", self.method);
        self.header("CSeq", &v)
    }

    pub fn contact(self, contact: &NameAddr<'_>) -> Self {
        let v = contact.to_string();
        self.header("Contact", &v)
    }

    /// One Route entry (call once per entry, in route-set order).
    pub fn route(self, route: &str) -> Self {
        self.header("Route", route)
    }

    pub fn session_expires(self, se: SessionExpires) -> Self {
        self.header("Session-Expires", &se.to_string())
    }

    /// Set the body and its Content-Type.
    pub fn body(mut self, content_type: &str, body: impl Into<Bytes>) -> Self {
        self.headers.body = Some((sanitize(content_type), body.into()));
        self
    }

    pub fn build(self) -> Bytes {
        let mut out = BytesMut::with_capacity(512);
        out.put_slice(self.method.as_bytes());
        out.put_u8(b' ');
        out.put_slice(self.uri.as_bytes());
        out.put_slice(b" SIP/2.0\r\n");
        self.headers.write(&mut out);
        out.freeze()
    }
}

/// Builds a response. [`ResponseBuilder::for_request`] copies Via (all, in order), From,
/// To, Call-ID and CSeq from the request (RFC 3261 §8.2.6.2).
#[derive(Debug, Clone)]
pub struct ResponseBuilder {
    status: u16,
    reason: String,
    headers: HeaderList,
    /// Index of the To header in `headers.list`, for `to_tag`.
    to_index: Option<usize>,
}

impl ResponseBuilder {
    /// An empty response (caller adds every header).
    pub fn new(status: u16, reason: Option<&str>) -> Self {
        ResponseBuilder {
            status,
            reason: sanitize(reason.unwrap_or(reason_phrase(status))),
            headers: HeaderList::default(),
            to_index: None,
        }
    }

    /// A response to `req`; `reason` defaults to [`reason_phrase`]. Headers are copied as
    /// received (values unfolded), so a response can be built even when some of them don't
    /// parse.
    pub fn for_request(req: &Request<'_>, status: u16, reason: Option<&str>) -> Self {
        let mut b = ResponseBuilder::new(status, reason);
        for h in req.headers.iter() {
            match h.name {
                HeaderName::Via => b.headers.push("Via", &h.value),
                HeaderName::From if !b.has("From") => b.headers.push("From", &h.value),
                HeaderName::To if b.to_index.is_none() => {
                    b.to_index = Some(b.headers.list.len());
                    b.headers.push("To", &h.value);
                }
                HeaderName::CallId if !b.has("Call-ID") => b.headers.push("Call-ID", &h.value),
                HeaderName::CSeq if !b.has("CSeq") => b.headers.push("CSeq", &h.value),
                _ => {}
            }
        }
        b
    }

    fn has(&self, name: &str) -> bool {
        self.headers.list.iter().any(|(n, _)| n == name)
    }

    /// Add a To tag if To has none (RFC 3261 §8.2.6.2; not needed for 100 Trying).
    pub fn to_tag(mut self, tag: &str) -> Self {
        if let Some(i) = self.to_index {
            if let Some(entry) = self.headers.list.get_mut(i) {
                entry.1 = add_to_tag(&entry.1, tag);
            }
        }
        self
    }

    /// Stamps the top Via with where the request really came from (RFC 3261 §18.2.1,
    /// RFC 3581 §4): `received=` when the sent-by host is not the source IP (always when
    /// rport was asked for), and `rport=` with the source port when the request carried a
    /// valueless `rport`. Other parameters keep their order.
    pub fn stamp_received(mut self, source: std::net::SocketAddr) -> Self {
        let Some(entry) = self.headers.list.iter_mut().find(|(n, _)| n == "Via") else {
            return self;
        };
        let mut vias = SplitOutside::new(&entry.1, b',');
        let Some(top) = vias.next() else { return self };
        let rest: Vec<&str> = vias.collect();
        let Ok(via) = Via::parse(top.trim()) else {
            return self;
        };
        let wants_rport = via.rport.is_some();
        let host_is_source =
            via.host.to_string().trim_matches(['[', ']']) == source.ip().to_string().as_str();
        let mut parts = SplitOutside::new(top.trim(), b';');
        let mut out = parts.next().unwrap_or("").trim().to_owned();
        for p in parts {
            let name = p.split('=').next().unwrap_or("").trim();
            if name.eq_ignore_ascii_case("received") || name.eq_ignore_ascii_case("rport") {
                continue;
            }
            out.push(';');
            out.push_str(p.trim());
        }
        if wants_rport || !host_is_source {
            let _ = write!(out, ";received={}", source.ip());
        }
        if wants_rport {
            let _ = write!(out, ";rport={}", source.port());
        }
        for r in rest {
            out.push(',');
            out.push_str(r);
        }
        entry.1 = out;
        self
    }

    /// Copy Record-Route from the request (RFC 3261 §12.1.1, dialog-creating responses).
    pub fn copy_record_route(mut self, req: &Request<'_>) -> Self {
        for v in req.headers.values(HeaderName::RecordRoute) {
            self.headers.push("Record-Route", v);
        }
        self
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push(name, value);
        self
    }

    pub fn contact(self, contact: &NameAddr<'_>) -> Self {
        let v = contact.to_string();
        self.header("Contact", &v)
    }

    pub fn body(mut self, content_type: &str, body: impl Into<Bytes>) -> Self {
        self.headers.body = Some((sanitize(content_type), body.into()));
        self
    }

    pub fn build(self) -> Bytes {
        let mut out = BytesMut::with_capacity(512);
        let mut line = String::with_capacity(40);
        let _ = write!(line, "SIP/2.0 {} ", self.status);
        out.put_slice(line.as_bytes());
        out.put_slice(self.reason.as_bytes());
        out.put_slice(b"\r\n");
        self.headers.write(&mut out);
        out.freeze()
    }
}

impl ParseError {
    /// A stateless error response (status from [`ParseError::status`]) copying the salvaged
    /// headers, with `to_tag` added to To if it has none. `None` when it cannot be routed or
    /// must not be answered (responses, ACK).
    pub fn error_response(&self, to_tag: &str) -> Option<Bytes> {
        if !self.can_respond() {
            return None;
        }
        let status = self.status();
        let s = &self.salvage;
        let mut out = BytesMut::with_capacity(512);
        out.put_slice(format!("SIP/2.0 {status} {}\r\n", reason_phrase(status)).as_bytes());
        for v in &s.vias {
            put_header(&mut out, "Via", v);
        }
        if let Some(f) = &s.from {
            put_header(&mut out, "From", f);
        }
        if let Some(t) = &s.to {
            let tagged = add_to_tag(t, to_tag);
            put_header(&mut out, "To", &tagged);
        }
        if let Some(c) = &s.call_id {
            put_header(&mut out, "Call-ID", c);
        }
        if let Some(c) = &s.cseq {
            put_header(&mut out, "CSeq", c);
        }
        out.put_slice(b"Content-Length: 0\r\n\r\n");
        Some(out.freeze())
    }
}

fn put_header(out: &mut BytesMut, name: &str, value: &str) {
    out.put_slice(name.as_bytes());
    out.put_slice(b": ");
    out.put_slice(value.as_bytes());
    out.put_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::{parse, Message};
    use crate::sip::uri::Host;

    #[test]
    fn request_round_trip() {
        let via = Via::new(
            "UDP",
            Host::Domain("b2b.example.com"),
            Some(5060),
            "z9hG4bKabc",
        );
        let from = NameAddr::parse("\"Holdfast\" <sip:hf@example.com>;tag=x1", "From").unwrap();
        let to = NameAddr::parse("<sip:+15551234@carrier.example>", "To").unwrap();
        let bytes = RequestBuilder::new(Method::Invite, "sip:+15551234@carrier.example")
            .via(&via)
            .max_forwards(70)
            .from(&from)
            .to(&to)
            .call_id("abc@b2b")
            .cseq(1)
            .header("X-Evil", "a\r\nInjected: yes")
            .body("application/sdp", &b"v=0\r\n"[..])
            .build();
        let m = parse(&bytes).unwrap();
        let Message::Request(r) = m else { panic!() };
        assert_eq!(r.method, Method::Invite);
        assert_eq!(r.headers.cseq().unwrap().method, Method::Invite);
        assert_eq!(r.headers.top_via().unwrap().branch, Some("z9hG4bKabc"));
        assert_eq!(r.headers.top_via().unwrap().rport, Some(None));
        assert_eq!(r.headers.from().unwrap().tag(), Some("x1"));
        assert_eq!(r.headers.content_length().unwrap(), Some(5));
        assert_eq!(r.body, b"v=0\r\n");
        assert!(r.headers.get(HeaderName::Other("Injected")).is_none());
        assert_eq!(
            r.headers.get(HeaderName::Other("x-evil")),
            Some("a  Injected: yes")
        );
    }

    #[test]
    fn response_copies_and_tags() {
        let req = b"INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h1;branch=z9hG4bK1\r\nVia: SIP/2.0/UDP h2;branch=z9hG4bK2\r\nFrom: <sip:x@y>;tag=f\r\nTo: <sip:a@b>\r\nCall-ID: c1\r\nCSeq: 7 INVITE\r\nRecord-Route: <sip:rr@p;lr>\r\nContent-Length: 0\r\n\r\n";
        let Message::Request(r) = parse(req).unwrap() else {
            panic!()
        };
        let resp = ResponseBuilder::for_request(&r, 200, None)
            .to_tag("t9")
            .copy_record_route(&r)
            .body("application/sdp", &b"v=0\r\n"[..])
            .build();
        let Message::Response(p) = parse(&resp).unwrap() else {
            panic!()
        };
        assert_eq!((p.status, p.reason), (200, "OK"));
        let vias = p.headers.vias().unwrap();
        assert_eq!(vias[0].branch, Some("z9hG4bK1"));
        assert_eq!(vias[1].branch, Some("z9hG4bK2"));
        assert_eq!(p.headers.to().unwrap().tag(), Some("t9"));
        assert_eq!(p.headers.record_routes().unwrap().len(), 1);
        assert_eq!(p.headers.cseq().unwrap().seq, 7);
        // Existing tag is kept.
        assert_eq!(add_to_tag("<sip:a@b>;tag=old", "new"), "<sip:a@b>;tag=old");
        assert_eq!(
            add_to_tag("garbage \"<;tag=1", "n"),
            "garbage \"<;tag=1;tag=n"
        );
        // Unparseable To with multi-byte UTF-8 right after a ';' (fuzz regression).
        assert_eq!(
            add_to_tag("\"x ;\u{441}\u{442}", "n"),
            "\"x ;\u{441}\u{442};tag=n"
        );
        assert_eq!(add_to_tag("a ; TAG =1", "n"), "a ; TAG =1");
        assert_eq!(reason_phrase(483), "Too Many Hops");
        assert_eq!(reason_phrase(499), "Client Error");
    }

    #[test]
    fn stamp_received_adds_received_and_fills_rport() {
        let req = "OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bK1;rport;x=y, SIP/2.0/UDP p.example;branch=z9hG4bK0\r\n\
                   From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n";
        let Ok(crate::sip::Message::Request(r)) = crate::sip::parse(req.as_bytes()) else {
            panic!("test request parses")
        };
        let src: std::net::SocketAddr = "203.0.113.9:40000".parse().unwrap();
        let resp = ResponseBuilder::for_request(&r, 200, None)
            .stamp_received(src)
            .build();
        let text = String::from_utf8_lossy(&resp);
        assert!(
            text.contains("Via: SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bK1;x=y;received=203.0.113.9;rport=40000,"),
            "{text}"
        );
        assert!(
            text.contains("SIP/2.0/UDP p.example;branch=z9hG4bK0"),
            "lower Vias untouched"
        );
        // Sent-by already the source and no rport: nothing to add (§18.2.1).
        let req2 = req.replace(";rport;x=y", "");
        let Ok(crate::sip::Message::Request(r2)) = crate::sip::parse(req2.as_bytes()) else {
            panic!("test request parses")
        };
        let same: std::net::SocketAddr = "192.0.2.1:5070".parse().unwrap();
        let resp = ResponseBuilder::for_request(&r2, 200, None)
            .stamp_received(same)
            .build();
        assert!(String::from_utf8_lossy(&resp)
            .contains("Via: SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bK1,"));
    }
}
