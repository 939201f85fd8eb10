//! SIP message parsing and serialization (RFC 3261 §7, §25), borrowing from the received
//! bytes: `&[u8]` -> [`Message<'a>`].
//!
//! The parser checks the structure (start line, header lines, folding, Content-Length
//! framing, UTF-8 header text, size limit) and keeps every header in order with its name as
//! received. Header *values* are parsed lazily by the typed accessors on [`Headers`], so a
//! message costs one `Vec` of header entries plus one `String` per folded header.
//!
//! When parsing fails, [`ParseError`] still carries what is needed to answer (Via list,
//! From, To, Call-ID, CSeq, method) so the caller can send 400/505 per RFC 3261 §8.2 and
//! route it by Via; when even that is not possible the message is dropped.
//!
//! This module never panics on any input, never touches I/O and never reads a clock.

use std::borrow::Cow;

use bytes::{BufMut, Bytes, BytesMut};

use super::header::{
    list_elements, parse_delta_seconds, parse_max_forwards, parse_token_list, validate_call_id,
    validate_sip_date, CSeq, Contacts, HeaderError, HeaderName, MediaType, NameAddr, Reason,
    SessionExpires, Via,
};
use super::method::Method;
use super::syntax::{is_token, trim_ws};
use super::uri::{Uri, UriError};

/// Default maximum message size accepted by [`parse`] (bytes). Larger than any UDP
/// datagram; stream transports should use their own limit via [`parse_with_limit`].
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 65_535;

/// One header line: recognised name, name as received, unfolded value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header<'a> {
    pub name: HeaderName<'a>,
    pub raw_name: &'a str,
    /// Value with leading/trailing whitespace removed; folded lines are joined with one SP
    /// (owned only in that case).
    pub value: Cow<'a, str>,
}

/// The headers of a message, in received order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers<'a> {
    entries: Vec<Header<'a>>,
}

impl<'a> Headers<'a> {
    pub fn new() -> Self {
        Headers {
            entries: Vec::new(),
        }
    }

    /// All headers in order.
    pub fn iter(&self) -> std::slice::Iter<'_, Header<'a>> {
        self.entries.iter()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Value of the first header with this name. Build names with [`HeaderName::parse`] (or
    /// the variants) so compact and long forms match each other.
    pub fn get(&self, name: HeaderName<'_>) -> Option<&str> {
        self.entries
            .iter()
            .find(|h| h.name == name)
            .map(|h| h.value.as_ref())
    }

    /// Whole values of every header with this name, in order.
    pub fn values<'s, 'n: 's>(
        &'s self,
        name: HeaderName<'n>,
    ) -> impl Iterator<Item = &'s str> + 's {
        self.entries
            .iter()
            .filter(move |h| h.name == name)
            .map(|h| h.value.as_ref())
    }

    /// Every comma-separated element of every header with this name (quote and `<>` aware,
    /// trimmed), for list headers (RFC 3261 §7.3.1).
    pub fn get_all<'s, 'n: 's>(
        &'s self,
        name: HeaderName<'n>,
    ) -> impl Iterator<Item = &'s str> + 's {
        self.values(name).flat_map(list_elements)
    }

    /// Number of header lines with this name.
    pub fn count(&self, name: HeaderName<'_>) -> usize {
        self.entries.iter().filter(|h| h.name == name).count()
    }

    pub fn contains(&self, name: HeaderName<'_>) -> bool {
        self.entries.iter().any(|h| h.name == name)
    }

    /// Append a header (name canonical for known names).
    pub fn push(&mut self, name: HeaderName<'a>, value: impl Into<Cow<'a, str>>) {
        self.entries.push(Header {
            name,
            raw_name: name.as_str(),
            value: value.into(),
        });
    }

    /// Insert a header before all others (e.g. a proxy's own Via).
    pub fn push_front(&mut self, name: HeaderName<'a>, value: impl Into<Cow<'a, str>>) {
        self.entries.insert(
            0,
            Header {
                name,
                raw_name: name.as_str(),
                value: value.into(),
            },
        );
    }

    /// Remove every header with this name; returns how many were removed.
    pub fn remove(&mut self, name: HeaderName<'_>) -> usize {
        let before = self.entries.len();
        self.entries.retain(|h| h.name != name);
        before - self.entries.len()
    }

    /// The single value of a header that must appear at most once.
    fn single(
        &self,
        name: HeaderName<'static>,
        what: &'static str,
    ) -> Result<Option<&str>, HeaderError> {
        let mut it = self.values(name);
        let first = it.next();
        if it.next().is_some() {
            return Err(HeaderError::Repeated(what));
        }
        Ok(first)
    }

    fn required(&self, name: HeaderName<'static>, what: &'static str) -> Result<&str, HeaderError> {
        self.single(name, what)?.ok_or(HeaderError::Missing(what))
    }

    // ---- typed accessors -------------------------------------------------------------

    /// All Via values, top first (RFC 3261 §20.42). Error if none or any is invalid.
    pub fn vias(&self) -> Result<Vec<Via<'_>>, HeaderError> {
        let mut out = Vec::new();
        for v in self.values(HeaderName::Via) {
            for e in list_elements(v) {
                out.push(Via::parse(e)?);
            }
        }
        if out.is_empty() {
            return Err(HeaderError::Missing("Via"));
        }
        Ok(out)
    }

    /// The topmost Via.
    pub fn top_via(&self) -> Result<Via<'_>, HeaderError> {
        let v = self
            .get(HeaderName::Via)
            .ok_or(HeaderError::Missing("Via"))?;
        let first = list_elements(v).next().unwrap_or("");
        Via::parse(first)
    }

    /// From (RFC 3261 §20.20): exactly one.
    pub fn from(&self) -> Result<NameAddr<'_>, HeaderError> {
        NameAddr::parse(self.required(HeaderName::From, "From")?, "From")
    }

    /// To (RFC 3261 §20.39): exactly one.
    pub fn to(&self) -> Result<NameAddr<'_>, HeaderError> {
        NameAddr::parse(self.required(HeaderName::To, "To")?, "To")
    }

    /// Call-ID: exactly one, `word [@ word]`.
    pub fn call_id(&self) -> Result<&str, HeaderError> {
        validate_call_id(self.required(HeaderName::CallId, "Call-ID")?)
    }

    /// CSeq: exactly one.
    pub fn cseq(&self) -> Result<CSeq<'_>, HeaderError> {
        CSeq::parse(self.required(HeaderName::CSeq, "CSeq")?)
    }

    /// Max-Forwards (absent is `None`).
    pub fn max_forwards(&self) -> Result<Option<u8>, HeaderError> {
        self.single(HeaderName::MaxForwards, "Max-Forwards")?
            .map(parse_max_forwards)
            .transpose()
    }

    /// Contact list (empty list when absent) or `*`.
    pub fn contacts(&self) -> Result<Contacts<'_>, HeaderError> {
        let mut out = Vec::new();
        let mut star = false;
        for v in self.values(HeaderName::Contact) {
            for e in list_elements(v) {
                if e == "*" {
                    star = true;
                } else {
                    out.push(NameAddr::parse(e, "Contact")?);
                }
            }
        }
        match (star, out.is_empty()) {
            (true, true) => Ok(Contacts::Wildcard),
            (true, false) => Err(HeaderError::Invalid("Contact", "* mixed with addresses")),
            (false, _) => Ok(Contacts::List(out)),
        }
    }

    fn name_addr_list(
        &self,
        name: HeaderName<'static>,
        what: &'static str,
    ) -> Result<Vec<NameAddr<'_>>, HeaderError> {
        let mut out = Vec::new();
        for v in self.values(name) {
            for e in list_elements(v) {
                out.push(NameAddr::parse(e, what)?);
            }
        }
        Ok(out)
    }

    /// Route set, in order (RFC 3261 §20.34).
    pub fn routes(&self) -> Result<Vec<NameAddr<'_>>, HeaderError> {
        self.name_addr_list(HeaderName::Route, "Route")
    }

    /// Record-Route, in order (RFC 3261 §20.30).
    pub fn record_routes(&self) -> Result<Vec<NameAddr<'_>>, HeaderError> {
        self.name_addr_list(HeaderName::RecordRoute, "Record-Route")
    }

    /// Content-Type (at most one).
    pub fn content_type(&self) -> Result<Option<MediaType<'_>>, HeaderError> {
        self.single(HeaderName::ContentType, "Content-Type")?
            .map(|v| MediaType::parse(v, "Content-Type"))
            .transpose()
    }

    /// Content-Length (at most one).
    pub fn content_length(&self) -> Result<Option<u32>, HeaderError> {
        self.single(HeaderName::ContentLength, "Content-Length")?
            .map(|v| parse_delta_seconds(v, "Content-Length"))
            .transpose()
    }

    /// Accept ranges: `None` when absent, `Some(empty)` for an empty Accept (accepts nothing).
    pub fn accept(&self) -> Result<Option<Vec<MediaType<'_>>>, HeaderError> {
        if !self.contains(HeaderName::Accept) {
            return Ok(None);
        }
        let mut out = Vec::new();
        for v in self.values(HeaderName::Accept) {
            if trim_ws(v).is_empty() {
                continue;
            }
            for e in list_elements(v) {
                out.push(MediaType::parse(e, "Accept")?);
            }
        }
        Ok(Some(out))
    }

    pub fn require(&self) -> Result<Vec<&str>, HeaderError> {
        parse_token_list(self.values(HeaderName::Require), "Require")
    }

    pub fn proxy_require(&self) -> Result<Vec<&str>, HeaderError> {
        parse_token_list(self.values(HeaderName::ProxyRequire), "Proxy-Require")
    }

    pub fn supported(&self) -> Result<Vec<&str>, HeaderError> {
        parse_token_list(self.values(HeaderName::Supported), "Supported")
    }

    pub fn unsupported(&self) -> Result<Vec<&str>, HeaderError> {
        parse_token_list(self.values(HeaderName::Unsupported), "Unsupported")
    }

    /// Allow (method tokens).
    pub fn allow(&self) -> Result<Vec<Method<'_>>, HeaderError> {
        parse_token_list(self.values(HeaderName::Allow), "Allow")
            .map(|v| v.into_iter().map(Method::parse).collect())
    }

    /// Session-Expires (RFC 4028), at most one.
    pub fn session_expires(&self) -> Result<Option<SessionExpires>, HeaderError> {
        self.single(HeaderName::SessionExpires, "Session-Expires")?
            .map(SessionExpires::parse)
            .transpose()
    }

    /// Min-SE (RFC 4028 §5), at most one; params ignored.
    pub fn min_se(&self) -> Result<Option<std::time::Duration>, HeaderError> {
        self.single(HeaderName::MinSE, "Min-SE")?
            .map(|v| {
                let d = v.split(';').next().unwrap_or("");
                parse_delta_seconds(d, "Min-SE").map(|s| std::time::Duration::from_secs(s.into()))
            })
            .transpose()
    }

    /// Reason values (RFC 3326).
    pub fn reasons(&self) -> Result<Vec<Reason<'_>>, HeaderError> {
        self.get_all(HeaderName::Reason)
            .map(Reason::parse)
            .collect()
    }

    /// Expires (delta-seconds), at most one.
    pub fn expires(&self) -> Result<Option<u32>, HeaderError> {
        self.single(HeaderName::Expires, "Expires")?
            .map(|v| parse_delta_seconds(v, "Expires"))
            .transpose()
    }

    /// Date, validated as an RFC 1123 GMT date (RFC 3261 §20.17), at most one.
    pub fn date(&self) -> Result<Option<&str>, HeaderError> {
        self.single(HeaderName::Date, "Date")?
            .map(validate_sip_date)
            .transpose()
    }
}

/// A request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request<'a> {
    pub method: Method<'a>,
    /// Request-URI text (validated by [`parse`]).
    pub uri: &'a str,
    pub headers: Headers<'a>,
    pub body: &'a [u8],
}

impl<'a> Request<'a> {
    /// The parsed Request-URI.
    pub fn uri_parsed(&self) -> Result<Uri<'a>, UriError> {
        Uri::parse(self.uri)
    }
}

/// A response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response<'a> {
    pub status: u16,
    pub reason: &'a str,
    pub headers: Headers<'a>,
    pub body: &'a [u8],
}

/// A request or a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message<'a> {
    Request(Request<'a>),
    Response(Response<'a>),
}

impl<'a> Message<'a> {
    pub fn headers(&self) -> &Headers<'a> {
        match self {
            Message::Request(r) => &r.headers,
            Message::Response(r) => &r.headers,
        }
    }

    pub fn headers_mut(&mut self) -> &mut Headers<'a> {
        match self {
            Message::Request(r) => &mut r.headers,
            Message::Response(r) => &mut r.headers,
        }
    }

    pub fn body(&self) -> &'a [u8] {
        match self {
            Message::Request(r) => r.body,
            Message::Response(r) => r.body,
        }
    }

    pub fn as_request(&self) -> Option<&Request<'a>> {
        match self {
            Message::Request(r) => Some(r),
            Message::Response(_) => None,
        }
    }

    pub fn as_response(&self) -> Option<&Response<'a>> {
        match self {
            Message::Response(r) => Some(r),
            Message::Request(_) => None,
        }
    }

    /// Serialize: start line, headers in order (known names in canonical long form, others
    /// as received), a Content-Length that matches the body (any received Content-Length is
    /// replaced), blank line, body.
    pub fn write_to(&self, out: &mut BytesMut) {
        match self {
            Message::Request(r) => {
                out.reserve(64 + r.body.len());
                out.put_slice(r.method.as_str().as_bytes());
                out.put_u8(b' ');
                out.put_slice(r.uri.as_bytes());
                out.put_slice(b" SIP/2.0\r\n");
            }
            Message::Response(r) => {
                out.reserve(64 + r.body.len());
                out.put_slice(format!("SIP/2.0 {} ", r.status).as_bytes());
                out.put_slice(r.reason.as_bytes());
                out.put_slice(b"\r\n");
            }
        }
        write_headers_and_body(out, self.headers(), self.body());
    }

    /// Serialize to a fresh buffer.
    pub fn to_bytes(&self) -> Bytes {
        let mut b = BytesMut::new();
        self.write_to(&mut b);
        b.freeze()
    }
}

impl Request<'_> {
    pub fn to_bytes(&self) -> Bytes {
        // Cloning headers is a Vec copy of borrowed slices; fine for the rare re-serialize.
        Message::Request(self.clone()).to_bytes()
    }
}

impl Response<'_> {
    pub fn to_bytes(&self) -> Bytes {
        Message::Response(self.clone()).to_bytes()
    }
}

pub(crate) fn write_headers_and_body(out: &mut BytesMut, headers: &Headers<'_>, body: &[u8]) {
    for h in headers.iter() {
        if h.name == HeaderName::ContentLength {
            continue;
        }
        let name = match h.name {
            HeaderName::Other(_) => h.raw_name,
            known => known.as_str(),
        };
        out.put_slice(name.as_bytes());
        out.put_slice(b": ");
        out.put_slice(h.value.as_bytes());
        out.put_slice(b"\r\n");
    }
    out.put_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
    out.put_slice(body);
}

// ------------------------------------------------------------------------------------------
// Errors

/// What went wrong while parsing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseErrorKind {
    #[error("empty message")]
    Empty,
    #[error("message larger than the limit")]
    TooLarge,
    #[error("no blank line after the headers")]
    Incomplete,
    #[error("malformed start line")]
    StartLine,
    #[error("unsupported SIP version")]
    Version,
    #[error("invalid method")]
    Method,
    #[error("invalid Request-URI")]
    RequestUri,
    #[error("invalid status code")]
    StatusCode,
    #[error("malformed header line")]
    HeaderLine,
    #[error("header text is not UTF-8")]
    NotUtf8,
    #[error("bad Content-Length")]
    ContentLength,
    #[error("more than one Content-Length")]
    MultipleContentLength,
    #[error("body shorter than Content-Length")]
    Truncated,
}

/// What could be recovered from a message that failed to parse, enough to answer it
/// (RFC 3261 §8.2.6: the response copies Via, From, To, Call-ID, CSeq).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Salvage {
    /// True if the start line looked like a request.
    pub is_request: bool,
    /// The request method, if the start line had one.
    pub method: Option<String>,
    /// Every Via value (raw, whole header values), in order.
    pub vias: Vec<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub call_id: Option<String>,
    pub cseq: Option<String>,
}

/// A message that could not be parsed. [`ParseError::status`] says how to answer a request
/// (400 or 505, 513 when too large); [`ParseError::error_response`] builds the answer when
/// the salvaged headers allow routing it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("SIP parse error: {kind}")]
pub struct ParseError {
    pub kind: ParseErrorKind,
    /// Boxed to keep `Result<Message, ParseError>` small on the success path.
    pub salvage: Box<Salvage>,
}

impl ParseError {
    /// The status to answer with if this was a request: 505 for an unsupported SIP version
    /// (RFC 3261 §21.5.6), 513 for an oversized message (§21.5.7), 400 otherwise (§21.4.1).
    pub fn status(&self) -> u16 {
        match self.kind {
            ParseErrorKind::Version => 505,
            ParseErrorKind::TooLarge => 513,
            _ => 400,
        }
    }

    /// True if this was a request (not ACK) with enough salvaged headers to answer it: at
    /// least a Via (to route) and a CSeq (for the client transaction to match, §17.1.3).
    pub fn can_respond(&self) -> bool {
        let s = &self.salvage;
        s.is_request
            && s.method.as_deref().is_some_and(|m| m != "ACK")
            && !s.vias.is_empty()
            && s.cseq.is_some()
    }
}

// ------------------------------------------------------------------------------------------
// Parser

/// Parse one message from a datagram or a framed stream message, with
/// [`DEFAULT_MAX_MESSAGE_SIZE`].
pub fn parse(buf: &[u8]) -> Result<Message<'_>, ParseError> {
    parse_with_limit(buf, DEFAULT_MAX_MESSAGE_SIZE)
}

/// Parse one message, refusing buffers larger than `max_size`.
///
/// Framing rules (RFC 3261 §18.3): with Content-Length the body is exactly that many bytes
/// and extra trailing bytes are ignored (RFC 4475 dblreq); without it the body is the rest
/// of the buffer (datagram semantics; stream framing requires Content-Length, see
/// `framing`). Leading CRLFs are skipped (§7.5). Lines may end in CRLF or bare LF.
pub fn parse_with_limit(buf: &[u8], max_size: usize) -> Result<Message<'_>, ParseError> {
    if buf.len() > max_size {
        return Err(fail(ParseErrorKind::TooLarge, &buf[..max_size]));
    }
    parse_inner(buf).map_err(|kind| fail(kind, buf))
}

fn fail(kind: ParseErrorKind, buf: &[u8]) -> ParseError {
    ParseError {
        kind,
        salvage: Box::new(salvage(buf)),
    }
}

/// Find the next line in `buf` from `pos`: returns (line without terminator, next pos).
/// `None` if there is no LF.
#[inline]
fn next_line(buf: &[u8], pos: usize) -> Option<(&[u8], usize)> {
    let rest = buf.get(pos..)?;
    let nl = memchr_lf(rest)?;
    let line = &rest[..nl];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    Some((line, pos + nl + 1))
}

#[inline]
fn memchr_lf(s: &[u8]) -> Option<usize> {
    s.iter().position(|&b| b == b'\n')
}

fn skip_leading_crlf(buf: &[u8]) -> usize {
    let mut i = 0;
    while i < buf.len() && (buf[i] == b'\r' || buf[i] == b'\n') {
        i += 1;
    }
    i
}

fn parse_inner(buf: &[u8]) -> Result<Message<'_>, ParseErrorKind> {
    let start = skip_leading_crlf(buf);
    if start >= buf.len() {
        return Err(ParseErrorKind::Empty);
    }
    // The header section must be UTF-8; the body need not be. Validate the longest UTF-8
    // prefix once and find lines in it with the (memchr-backed) `str::find`.
    let after = &buf[start..];
    let text = match std::str::from_utf8(after) {
        Ok(t) => t,
        Err(e) => {
            std::str::from_utf8(&after[..e.valid_up_to()]).map_err(|_| ParseErrorKind::NotUtf8)?
        }
    };
    let mut pos = 0;
    let hdr_end;
    let body_start;
    loop {
        let Some(nl) = text[pos..].find('\n') else {
            if text.len() < after.len() {
                return Err(ParseErrorKind::NotUtf8);
            }
            // A datagram whose last header line ends the buffer without the blank line
            // (RFC 4475 baddn): treat the end of the datagram as the end of the headers.
            if pos == text.len() && pos > 0 {
                hdr_end = pos;
                body_start = pos;
                break;
            }
            return Err(ParseErrorKind::Incomplete);
        };
        let line = &text[pos..pos + nl];
        if (line.is_empty() || line == "\r") && pos != 0 {
            hdr_end = pos;
            body_start = pos + nl + 1;
            break;
        }
        pos += nl + 1;
    }
    let head = &text[..hdr_end];
    let rest = &after[body_start..];

    // Start line.
    let (start_line, mut hpos) = match head.find('\n') {
        Some(nl) => (&head[..nl], nl + 1),
        None => (head, head.len()),
    };
    let start_line = start_line.strip_suffix('\r').unwrap_or(start_line);
    if start_line
        .bytes()
        .any(|b| b < 0x20 && b != b'\t' || b == 0x7f)
    {
        return Err(ParseErrorKind::StartLine);
    }
    enum Start<'a> {
        Req(Method<'a>, &'a str),
        Resp(u16, &'a str),
    }
    let start = if let Some(after_ver) = strip_sip_version_prefix(start_line) {
        // Status-Line = SIP-Version SP Status-Code SP Reason-Phrase
        let (version, rest_line) = after_ver;
        check_version(version)?;
        let rest_line = rest_line
            .strip_prefix(' ')
            .ok_or(ParseErrorKind::StartLine)?;
        let code = rest_line.get(..3).ok_or(ParseErrorKind::StatusCode)?;
        if !code.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ParseErrorKind::StatusCode);
        }
        let reason = match rest_line.get(3..) {
            Some("") => "",
            Some(r) => r.strip_prefix(' ').ok_or(ParseErrorKind::StatusCode)?,
            None => return Err(ParseErrorKind::StatusCode),
        };
        let status: u16 = code.parse().map_err(|_| ParseErrorKind::StatusCode)?;
        if !(100..=699).contains(&status) {
            return Err(ParseErrorKind::StatusCode);
        }
        Start::Resp(status, reason)
    } else {
        // Request-Line = Method SP Request-URI SP SIP-Version: exactly two single SPs.
        let sp1 = start_line.find(' ').ok_or(ParseErrorKind::StartLine)?;
        let sp2 = start_line.rfind(' ').ok_or(ParseErrorKind::StartLine)?;
        if sp2 <= sp1 {
            return Err(ParseErrorKind::StartLine);
        }
        let method = &start_line[..sp1];
        let uri = &start_line[sp1 + 1..sp2];
        let version = &start_line[sp2 + 1..];
        if !is_token(method) {
            return Err(ParseErrorKind::Method);
        }
        check_version(version)?;
        if uri.is_empty() || uri.contains([' ', '\t']) || Uri::parse(uri).is_err() {
            return Err(ParseErrorKind::RequestUri);
        }
        Start::Req(Method::parse(method), uri)
    };

    // Header lines.
    let mut entries: Vec<Header<'_>> = Vec::with_capacity(24);
    while hpos < head.len() {
        let line_end = head[hpos..].find('\n').map_or(head.len(), |p| hpos + p);
        let mut line = &head[hpos..line_end];
        line = line.strip_suffix('\r').unwrap_or(line);
        let next = (line_end + 1).min(head.len());
        if line.starts_with([' ', '\t']) {
            // Continuation (RFC 3261 §7.3.1): unfold into the previous value with one SP.
            let last = entries.last_mut().ok_or(ParseErrorKind::HeaderLine)?;
            let cont = trim_ws(line);
            check_value_chars(cont)?;
            if !cont.is_empty() {
                let v = last.value.to_mut();
                if !v.is_empty() {
                    v.push(' ');
                }
                v.push_str(cont);
            }
            hpos = next;
            continue;
        }
        // header-name HCOLON value; HCOLON = *( SP / HTAB ) ":" SWS
        let colon = line.find(':').ok_or(ParseErrorKind::HeaderLine)?;
        let raw_name = line[..colon].trim_end_matches([' ', '\t']);
        if !is_token(raw_name) {
            return Err(ParseErrorKind::HeaderLine);
        }
        let value = trim_ws(&line[colon + 1..]);
        check_value_chars(value)?;
        entries.push(Header {
            name: HeaderName::parse(raw_name),
            raw_name,
            value: Cow::Borrowed(value),
        });
        hpos = next;
    }
    let headers = Headers { entries };

    // Content-Length framing.
    let body = {
        let mut cl_iter = headers.values(HeaderName::ContentLength);
        let cl = cl_iter.next();
        if cl_iter.next().is_some() {
            return Err(ParseErrorKind::MultipleContentLength);
        }
        match cl {
            Some(v) => {
                let n = super::syntax::parse_digits_u32(trim_ws(v))
                    .ok_or(ParseErrorKind::ContentLength)? as usize;
                rest.get(..n).ok_or(ParseErrorKind::Truncated)?
            }
            None => rest,
        }
    };
    Ok(match start {
        Start::Req(method, uri) => Message::Request(Request {
            method,
            uri,
            headers,
            body,
        }),
        Start::Resp(status, reason) => Message::Response(Response {
            status,
            reason,
            headers,
            body,
        }),
    })
}

/// Header values may contain any UTF-8 text but no control characters other than HT
/// (quoted-pairs in RFC 4475 intmeth carry NUL/BEL/DEL and are allowed: only CR is refused,
/// because a lone CR would let a value smuggle a line break into what we re-serialize).
#[inline]
fn check_value_chars(v: &str) -> Result<(), ParseErrorKind> {
    if v.as_bytes().contains(&b'\r') {
        Err(ParseErrorKind::HeaderLine)
    } else {
        Ok(())
    }
}

/// If the line starts with `SIP/x.y` followed by SP or end, return (version, rest).
fn strip_sip_version_prefix(line: &str) -> Option<(&str, &str)> {
    let b = line.as_bytes();
    if b.len() < 4 || !b[..4].eq_ignore_ascii_case(b"SIP/") {
        return None;
    }
    let end = line.find(' ').unwrap_or(line.len());
    Some((&line[..end], &line[end..]))
}

/// SIP-Version = "SIP" "/" 1*DIGIT "." 1*DIGIT; only 2.0 is supported (505 otherwise).
fn check_version(v: &str) -> Result<(), ParseErrorKind> {
    let b = v.as_bytes();
    if b.len() < 4 || !b[..4].eq_ignore_ascii_case(b"SIP/") {
        return Err(ParseErrorKind::StartLine);
    }
    let num = &v[4..];
    let (maj, min) = num.split_once('.').ok_or(ParseErrorKind::StartLine)?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(maj) || !digits(min) {
        return Err(ParseErrorKind::StartLine);
    }
    if num == "2.0" {
        Ok(())
    } else {
        Err(ParseErrorKind::Version)
    }
}

/// Tolerant scan for the headers a response needs, used only after a parse failure.
/// Bounded by the buffer; ignores lines it cannot understand; never fails.
fn salvage(buf: &[u8]) -> Salvage {
    let mut s = Salvage::default();
    let start = skip_leading_crlf(buf);
    let mut pos = start;
    let mut first = true;
    // (header index into s fields, owned value) of the header being folded.
    let mut current: Option<(HeaderName<'static>, String)> = None;
    let flush = |s: &mut Salvage, cur: Option<(HeaderName<'static>, String)>| {
        let Some((name, v)) = cur else { return };
        let v = trim_ws(&v).to_owned();
        match name {
            HeaderName::Via if s.vias.len() < 64 => s.vias.push(v),
            HeaderName::From => {
                s.from.get_or_insert(v);
            }
            HeaderName::To => {
                s.to.get_or_insert(v);
            }
            HeaderName::CallId => {
                s.call_id.get_or_insert(v);
            }
            HeaderName::CSeq => {
                s.cseq.get_or_insert(v);
            }
            _ => {}
        }
    };
    while let Some((line, next)) = next_line(buf, pos).or_else(|| {
        // Last line without terminator.
        if pos < buf.len() {
            Some((&buf[pos..], buf.len()))
        } else {
            None
        }
    }) {
        pos = next;
        let line = match std::str::from_utf8(line) {
            Ok(l) if !l.bytes().any(|b| b < 0x20 && b != b'\t') => l,
            _ => {
                if first {
                    return s;
                }
                flush(&mut s, current.take());
                continue;
            }
        };
        if first {
            first = false;
            if !line
                .get(..4)
                .is_some_and(|p| p.eq_ignore_ascii_case("SIP/"))
            {
                let m = line.split(' ').next().unwrap_or("");
                if is_token(m) {
                    s.is_request = true;
                    s.method = Some(m.to_owned());
                }
            }
            continue;
        }
        if line.is_empty() {
            break;
        }
        if line.starts_with([' ', '\t']) {
            if let Some((_, v)) = current.as_mut() {
                v.push(' ');
                v.push_str(trim_ws(line));
            }
            continue;
        }
        flush(&mut s, current.take());
        if let Some(colon) = line.find(':') {
            let name = line[..colon].trim_end_matches([' ', '\t']);
            let hn = match HeaderName::parse(name) {
                HeaderName::Via => Some(HeaderName::Via),
                HeaderName::From => Some(HeaderName::From),
                HeaderName::To => Some(HeaderName::To),
                HeaderName::CallId => Some(HeaderName::CallId),
                HeaderName::CSeq => Some(HeaderName::CSeq),
                _ => None,
            };
            if let Some(hn) = hn {
                current = Some((hn, line[colon + 1..].to_owned()));
            }
        }
    }
    flush(&mut s, current.take());
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const INVITE: &[u8] = b"INVITE sip:bob@example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK776asdhds;rport\r\n\
Via: SIP/2.0/TCP proxy.example.com;branch=z9hG4bKabc, SIP/2.0/UDP c.example.com;branch=z9hG4bKdef\r\n\
Max-Forwards: 70\r\n\
To: Bob <sip:bob@example.com>\r\n\
From: \"Alice, A.\" <sip:alice@example.com>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710@pc33.example.com\r\n\
CSeq: 314159 INVITE\r\n\
Contact: <sip:alice@pc33.example.com>, \"x,y\" <sip:z@h;a=b>;p=\"1,2\"\r\n\
Subject: folded\r\n  value here\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 4\r\n\
\r\n\
v=0\r\nignored";

    #[test]
    fn parse_invite() {
        let m = parse(INVITE).unwrap();
        let Message::Request(r) = &m else { panic!() };
        assert_eq!(r.method, Method::Invite);
        assert_eq!(r.uri, "sip:bob@example.com");
        assert_eq!(r.body, b"v=0\r");
        let h = &r.headers;
        assert_eq!(h.vias().unwrap().len(), 3);
        assert_eq!(h.top_via().unwrap().branch, Some("z9hG4bK776asdhds"));
        assert_eq!(h.from().unwrap().tag(), Some("1928301774"));
        assert_eq!(h.to().unwrap().tag(), None);
        assert_eq!(h.call_id().unwrap(), "a84b4c76e66710@pc33.example.com");
        assert_eq!(h.cseq().unwrap().seq, 314159);
        assert_eq!(h.max_forwards().unwrap(), Some(70));
        assert_eq!(h.contacts().unwrap().as_slice().len(), 2);
        assert_eq!(h.get(HeaderName::Subject), Some("folded value here"));
        assert_eq!(h.get_all(HeaderName::Via).count(), 3);
        assert_eq!(h.count(HeaderName::Via), 2);
        // Round trip.
        let bytes = m.to_bytes();
        let m2 = parse(&bytes).unwrap();
        assert_eq!(m2.headers().call_id().unwrap(), h.call_id().unwrap());
        assert_eq!(m2.body(), m.body());
    }

    #[test]
    fn bare_lf_and_response() {
        let m = parse(
            b"SIP/2.0 180 Ringing\nVia: SIP/2.0/UDP h;branch=z9hG4bKx\nContent-Length: 0\n\n",
        )
        .unwrap();
        let Message::Response(r) = m else { panic!() };
        assert_eq!((r.status, r.reason), (180, "Ringing"));
    }

    #[test]
    fn errors_keep_routing_info() {
        let e = parse(b"OPTIONS sip:a@b SIP/7.0\r\nVia: SIP/7.0/UDP h;branch=z9hG4bKx\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\n\r\n").unwrap_err();
        assert_eq!(e.kind, ParseErrorKind::Version);
        assert_eq!(e.status(), 505);
        let r = e.error_response("abc").unwrap();
        let resp = parse(&r).unwrap();
        let Message::Response(resp) = resp else {
            panic!()
        };
        assert_eq!(resp.status, 505);
        assert_eq!(resp.headers.to().unwrap().tag(), Some("abc"));
        assert_eq!(resp.headers.cseq().unwrap().seq, 1);

        let e = parse(b"SIP/2.0 4294967301 x\r\nVia: SIP/2.0/UDP h\r\nCSeq: 1 INVITE\r\n\r\n")
            .unwrap_err();
        assert_eq!(e.kind, ParseErrorKind::StatusCode);
        assert!(e.error_response("t").is_none());
        assert_eq!(parse(b"").unwrap_err().kind, ParseErrorKind::Empty);
        assert_eq!(
            parse(b"INVITE sip:a@b SIP/2.0\r\nVia: x").unwrap_err().kind,
            ParseErrorKind::Incomplete
        );
        // A datagram may end right after the last header line (RFC 4475 baddn).
        assert!(parse(b"INVITE sip:a@b SIP/2.0\r\nVia: x\r\n").is_ok());
        assert_eq!(
            parse(b"INVITE sip:a@b SIP/2.0\r\nl: 1\r\n")
                .unwrap_err()
                .kind,
            ParseErrorKind::Truncated
        );
        assert_eq!(
            parse(b"INVITE sip:a@b SIP/2.0\r\nContent-Length: 10\r\n\r\nabc")
                .unwrap_err()
                .kind,
            ParseErrorKind::Truncated
        );
        assert_eq!(
            parse_with_limit(b"INVITE sip:a@b SIP/2.0\r\n\r\n", 10)
                .unwrap_err()
                .kind,
            ParseErrorKind::TooLarge
        );
    }
}
