//! SIP header names (RFC 3261 §7.3, compact forms §7.3.3) and typed header values
//! (RFC 3261 §20 / §25, RFC 3581 rport, RFC 4028 Session-Expires/Min-SE, RFC 3326 Reason).
//!
//! Each typed parser takes one header value (or one comma-separated element of a list
//! header), already unfolded, and borrows from it. Unknown parameters are kept (raw, in
//! order) so nothing is lost when a value is written back with `Display`.
//!
//! Nothing here allocates for single values (lists return a `Vec`), and nothing panics on
//! any input.

use std::fmt;
use std::time::Duration;

use super::method::Method;
use super::syntax::{
    is_token, is_token_char, is_word_char, is_wsp, parse_digits_u32, split_quoted, trim_ws,
    unquote, Params, SplitOutside,
};
use super::uri::{Host, Uri, UriError};

/// Why a typed header value could not be produced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("missing {0} header")]
    Missing(&'static str),
    #[error("{0} header appears more than once")]
    Repeated(&'static str),
    #[error("invalid {0} header: {1}")]
    Invalid(&'static str, &'static str),
    #[error("invalid URI in {0}: {1}")]
    Uri(&'static str, UriError),
}

/// A header field name. Parsing accepts any case and the compact forms of RFC 3261 §7.3.3
/// and later RFCs; `as_str()` gives the canonical long form.
#[derive(Debug, Clone, Copy, Eq)]
pub enum HeaderName<'a> {
    Via,
    From,
    To,
    CallId,
    CSeq,
    MaxForwards,
    Contact,
    Route,
    RecordRoute,
    ContentType,
    ContentLength,
    ContentEncoding,
    ContentDisposition,
    Require,
    Supported,
    Unsupported,
    Allow,
    Accept,
    ProxyRequire,
    SessionExpires,
    MinSE,
    Reason,
    Expires,
    UserAgent,
    Server,
    Subject,
    Event,
    AllowEvents,
    ReferTo,
    ReferredBy,
    Date,
    Warning,
    Authorization,
    ProxyAuthorization,
    WwwAuthenticate,
    ProxyAuthenticate,
    RetryAfter,
    Timestamp,
    /// Any other header, spelled as received (compared case-insensitively).
    Other(&'a str),
}

macro_rules! names {
    ($($v:ident => $s:literal $(, $c:literal)?;)*) => {
        impl<'a> HeaderName<'a> {
            /// Canonical long name.
            pub fn as_str(&self) -> &'a str {
                match self {
                    $(HeaderName::$v => $s,)*
                    HeaderName::Other(s) => s,
                }
            }

            /// Recognise a received header name (case-insensitive, compact forms included).
            pub fn parse(raw: &'a str) -> HeaderName<'a> {
                if raw.len() == 1 {
                    let c = raw.as_bytes()[0].to_ascii_lowercase();
                    $($(if c == $c { return HeaderName::$v; })?)*
                    return HeaderName::Other(raw);
                }
                $(if raw.len() == $s.len() && raw.eq_ignore_ascii_case($s) {
                    return HeaderName::$v;
                })*
                HeaderName::Other(raw)
            }
        }
    };
}

names! {
    Via => "Via", b'v';
    From => "From", b'f';
    To => "To", b't';
    CallId => "Call-ID", b'i';
    CSeq => "CSeq";
    MaxForwards => "Max-Forwards";
    Contact => "Contact", b'm';
    Route => "Route";
    RecordRoute => "Record-Route";
    ContentType => "Content-Type", b'c';
    ContentLength => "Content-Length", b'l';
    ContentEncoding => "Content-Encoding", b'e';
    ContentDisposition => "Content-Disposition";
    Require => "Require";
    Supported => "Supported", b'k';
    Unsupported => "Unsupported";
    Allow => "Allow";
    Accept => "Accept";
    ProxyRequire => "Proxy-Require";
    SessionExpires => "Session-Expires", b'x';
    MinSE => "Min-SE";
    Reason => "Reason";
    Expires => "Expires";
    UserAgent => "User-Agent";
    Server => "Server";
    Subject => "Subject", b's';
    Event => "Event", b'o';
    AllowEvents => "Allow-Events", b'u';
    ReferTo => "Refer-To", b'r';
    ReferredBy => "Referred-By", b'b';
    Date => "Date";
    Warning => "Warning";
    Authorization => "Authorization";
    ProxyAuthorization => "Proxy-Authorization";
    WwwAuthenticate => "WWW-Authenticate";
    ProxyAuthenticate => "Proxy-Authenticate";
    RetryAfter => "Retry-After";
    Timestamp => "Timestamp";
}

impl PartialEq for HeaderName<'_> {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (HeaderName::Other(a), HeaderName::Other(b)) => a.eq_ignore_ascii_case(b),
            (HeaderName::Other(_), _) | (_, HeaderName::Other(_)) => false,
            _ => std::mem::discriminant(self) == std::mem::discriminant(other),
        }
    }
}

impl fmt::Display for HeaderName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl<'a> From<&'a str> for HeaderName<'a> {
    fn from(s: &'a str) -> Self {
        HeaderName::parse(s)
    }
}

/// Iterate the trimmed, non-empty-checked elements of a comma list (RFC 3261 §7.3.1).
pub(crate) fn list_elements(v: &str) -> impl Iterator<Item = &str> {
    SplitOutside::new(v, b',').map(trim_ws)
}

// ---------------------------------------------------------------------------------------
// Via

/// One Via header value (RFC 3261 §20.42, §18.2.1; rport RFC 3581).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via<'a> {
    /// `SIP` (protocol-name).
    pub protocol: &'a str,
    /// `2.0`.
    pub version: &'a str,
    /// `UDP`, `TCP`, `TLS`, `SCTP`, `WS`, ... (as received).
    pub transport: &'a str,
    pub host: Host<'a>,
    pub port: Option<u16>,
    pub branch: Option<&'a str>,
    pub received: Option<&'a str>,
    /// `None`: absent; `Some(None)`: `;rport` without value; `Some(Some(p))`: `;rport=p`.
    pub rport: Option<Option<u16>>,
    pub maddr: Option<&'a str>,
    pub ttl: Option<u8>,
    /// All params as received (including the ones above), for the ones we don't model.
    pub params: Params<'a>,
}

const VIA_KNOWN: [&str; 5] = ["branch", "received", "rport", "maddr", "ttl"];

impl<'a> Via<'a> {
    /// A fresh Via for a request we send (`SIP/2.0/<transport> host[:port];branch=..;rport`).
    pub fn new(transport: &'a str, host: Host<'a>, port: Option<u16>, branch: &'a str) -> Self {
        Via {
            protocol: "SIP",
            version: "2.0",
            transport,
            host,
            port,
            branch: Some(branch),
            received: None,
            rport: Some(None),
            maddr: None,
            ttl: None,
            params: Params::default(),
        }
    }

    /// Parse one via-parm (one comma-separated element).
    pub fn parse(s: &'a str) -> Result<Via<'a>, HeaderError> {
        const H: &str = "Via";
        let s = trim_ws(s);
        // sent-protocol = protocol-name SLASH protocol-version SLASH transport, SLASH = SWS "/" SWS
        let mut parts = s.splitn(3, '/');
        let protocol = trim_ws(parts.next().unwrap_or(""));
        let version = trim_ws(parts.next().unwrap_or(""));
        let rest = trim_ws(parts.next().unwrap_or(""));
        if !is_token(protocol) || !is_token(version) {
            return Err(HeaderError::Invalid(H, "sent-protocol"));
        }
        let tend = rest
            .bytes()
            .position(|b| !is_token_char(b))
            .unwrap_or(rest.len());
        let transport = &rest[..tend];
        if transport.is_empty() {
            return Err(HeaderError::Invalid(H, "transport"));
        }
        let after = &rest[tend..];
        // LWS is mandatory between transport and sent-by.
        if !after.starts_with([' ', '\t']) {
            return Err(HeaderError::Invalid(H, "sent-by"));
        }
        let after = trim_ws(after);
        let (sent_by, params) = match after.find(';') {
            Some(i) => (&after[..i], &after[i..]),
            None => (after, ""),
        };
        // sent-by = host [ COLON port ], COLON = SWS ":" SWS
        let sent_by = trim_ws(sent_by);
        let (host, port) =
            parse_sent_by(sent_by).map_err(|_| HeaderError::Invalid(H, "sent-by"))?;
        if !Params::validate_generic(params) {
            return Err(HeaderError::Invalid(H, "params"));
        }
        let params = Params::from_raw(params);
        let mut via = Via {
            protocol,
            version,
            transport,
            host,
            port,
            branch: None,
            received: None,
            rport: None,
            maddr: None,
            ttl: None,
            params,
        };
        for (n, v) in params.iter() {
            if n.eq_ignore_ascii_case("branch") {
                via.branch = Some(
                    v.filter(|v| is_token(v))
                        .ok_or(HeaderError::Invalid(H, "branch"))?,
                );
            } else if n.eq_ignore_ascii_case("received") {
                let v = v.ok_or(HeaderError::Invalid(H, "received"))?;
                let ok = v.parse::<std::net::IpAddr>().is_ok();
                if !ok {
                    return Err(HeaderError::Invalid(H, "received"));
                }
                via.received = Some(v);
            } else if n.eq_ignore_ascii_case("rport") {
                via.rport = Some(match v {
                    None => None,
                    Some(p) => Some(
                        p.parse::<u16>()
                            .ok()
                            .filter(|_| p.bytes().all(|b| b.is_ascii_digit()))
                            .ok_or(HeaderError::Invalid(H, "rport"))?,
                    ),
                });
            } else if n.eq_ignore_ascii_case("maddr") {
                let v = v.ok_or(HeaderError::Invalid(H, "maddr"))?;
                Host::parse(v).map_err(|_| HeaderError::Invalid(H, "maddr"))?;
                via.maddr = Some(v);
            } else if n.eq_ignore_ascii_case("ttl") {
                let v = v
                    .and_then(parse_digits_u32)
                    .and_then(|t| u8::try_from(t).ok())
                    .ok_or(HeaderError::Invalid(H, "ttl"))?;
                via.ttl = Some(v);
            }
        }
        Ok(via)
    }

    /// The RFC 3261 magic-cookie branch check (§8.1.1.7): `z9hG4bK` plus something.
    pub fn has_rfc3261_branch(&self) -> bool {
        self.branch
            .is_some_and(|b| b.len() > 7 && b.starts_with("z9hG4bK"))
    }

    /// Where responses to the request carrying this (top) Via go over an unreliable or
    /// fresh connection (RFC 3261 §18.2.2, RFC 3581 §4): the `received` address if present
    /// (else the sent-by host), and the `rport` value if present (else the sent-by port,
    /// else the transport default). A domain host still needs RFC 3263 resolution.
    pub fn response_target(&self) -> (Host<'a>, u16) {
        let host = self
            .received
            .and_then(|r| r.parse::<std::net::IpAddr>().ok())
            .map_or(self.host, Host::Ip);
        let port = match self.rport {
            Some(Some(p)) => p,
            _ => self.port_or_default(),
        };
        (host, port)
    }

    /// The port to use when none is given (RFC 3261 §18.2.2 / §19.1.2).
    pub fn port_or_default(&self) -> u16 {
        self.port.unwrap_or(
            if self.transport.eq_ignore_ascii_case("TLS")
                || self.transport.eq_ignore_ascii_case("WSS")
            {
                5061
            } else {
                5060
            },
        )
    }
}

fn parse_sent_by(s: &str) -> Result<(Host<'_>, Option<u16>), UriError> {
    // Allow SWS around ':' (COLON) but not inside the host.
    if s.starts_with('[') {
        let end = s.find(']').ok_or(UriError::Host)?;
        let host = Host::parse(&s[..=end])?;
        let rest = trim_ws(&s[end + 1..]);
        if rest.is_empty() {
            return Ok((host, None));
        }
        let p = trim_ws(rest.strip_prefix(':').ok_or(UriError::Port)?);
        return Ok((host, Some(parse_port(p)?)));
    }
    match s.find(':') {
        Some(c) => {
            let host = Host::parse(trim_ws(&s[..c]))?;
            Ok((host, Some(parse_port(trim_ws(&s[c + 1..]))?)))
        }
        None => Ok((Host::parse(s)?, None)),
    }
}

fn parse_port(p: &str) -> Result<u16, UriError> {
    if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
        return Err(UriError::Port);
    }
    p.parse().map_err(|_| UriError::Port)
}

impl fmt::Display for Via<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}/{} {}",
            self.protocol, self.version, self.transport, self.host
        )?;
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        if let Some(b) = self.branch {
            write!(f, ";branch={b}")?;
        }
        if let Some(r) = self.received {
            write!(f, ";received={r}")?;
        }
        match self.rport {
            Some(Some(p)) => write!(f, ";rport={p}")?,
            Some(None) => f.write_str(";rport")?,
            None => {}
        }
        if let Some(m) = self.maddr {
            write!(f, ";maddr={m}")?;
        }
        if let Some(t) = self.ttl {
            write!(f, ";ttl={t}")?;
        }
        for (n, v) in self.params.iter() {
            if VIA_KNOWN.iter().any(|k| k.eq_ignore_ascii_case(n)) {
                continue;
            }
            match v {
                Some(v) => write!(f, ";{n}={v}")?,
                None => write!(f, ";{n}")?,
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// name-addr / addr-spec (From, To, Contact, Route, Record-Route, Refer-To, ...)

/// `[display-name] <URI> *(;param)` or `addr-spec *(;param)` (RFC 3261 §20.10, §20.20, §20.39).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameAddr<'a> {
    /// Display name exactly as received: a quoted-string keeps its quotes, tokens are
    /// trimmed. Use [`NameAddr::display_name`] for the text.
    pub display: Option<&'a str>,
    /// The URI text as received (without `<>`).
    pub uri_raw: &'a str,
    pub uri: Uri<'a>,
    /// Whether the URI was in `<>` on the wire (Display always writes `<>`).
    pub bracketed: bool,
    /// The `tag` param (RFC 3261 §19.3). Display writes this field rather than the tag in
    /// `params`, so setting it (e.g. adding our To tag) is reflected when serialized.
    pub tag: Option<&'a str>,
    /// Header params after the URI (tag, expires, q, unknown ones), raw.
    pub params: Params<'a>,
}

impl<'a> NameAddr<'a> {
    /// Parse one name-addr / addr-spec element. `what` names the header for errors.
    pub fn parse(s: &'a str, what: &'static str) -> Result<NameAddr<'a>, HeaderError> {
        let s = trim_ws(s);
        let (display, after_display) = if s.starts_with('"') {
            let (q, rest) = split_quoted(s).ok_or(HeaderError::Invalid(what, "quoted string"))?;
            let rest = trim_ws(rest);
            if !rest.starts_with('<') {
                return Err(HeaderError::Invalid(what, "expected <"));
            }
            (Some(q), rest)
        } else if let Some(lt) = s.find('<') {
            // display-name = *(token LWS)
            let d = trim_ws(&s[..lt]);
            if !d.bytes().all(|b| is_token_char(b) || is_wsp(b)) {
                return Err(HeaderError::Invalid(what, "display name"));
            }
            (if d.is_empty() { None } else { Some(d) }, &s[lt..])
        } else {
            (None, s)
        };
        if let Some(inner) = after_display.strip_prefix('<') {
            let gt = inner
                .find('>')
                .ok_or(HeaderError::Invalid(what, "missing >"))?;
            let uri_raw = &inner[..gt];
            let rest = &inner[gt + 1..];
            // RAQUOT = ">" SWS; no spaces inside the brackets (RFC 4475 badaspec).
            let uri = Uri::parse(uri_raw).map_err(|e| HeaderError::Uri(what, e))?;
            let params = trim_ws(rest);
            if !params.is_empty() && !params.starts_with(';') {
                return Err(HeaderError::Invalid(what, "junk after >"));
            }
            if !Params::validate_generic(params) {
                return Err(HeaderError::Invalid(what, "params"));
            }
            Ok(NameAddr {
                display,
                uri_raw,
                uri,
                bracketed: true,
                tag: Params::from_raw(params).get("tag").flatten(),
                params: Params::from_raw(params),
            })
        } else {
            // addr-spec: the URI ends at ';' (header params follow) or whitespace. RFC 3261
            // §20: a URI with ',', '?' or ';' must be bracketed, so those make it invalid
            // (RFC 4475 regbadct).
            let end = after_display
                .bytes()
                .position(|b| b == b';' || is_wsp(b))
                .unwrap_or(after_display.len());
            let uri_raw = &after_display[..end];
            if uri_raw.contains(['?', ',']) {
                return Err(HeaderError::Invalid(what, "URI with ? or , must be in <>"));
            }
            let uri = Uri::parse(uri_raw).map_err(|e| HeaderError::Uri(what, e))?;
            let params = trim_ws(&after_display[end..]);
            if !params.is_empty() && !params.starts_with(';') {
                return Err(HeaderError::Invalid(what, "junk after URI"));
            }
            if !Params::validate_generic(params) {
                return Err(HeaderError::Invalid(what, "params"));
            }
            Ok(NameAddr {
                display: None,
                uri_raw,
                uri,
                bracketed: false,
                tag: Params::from_raw(params).get("tag").flatten(),
                params: Params::from_raw(params),
            })
        }
    }

    /// The `tag` param (RFC 3261 §19.3); same as the `tag` field.
    pub fn tag(&self) -> Option<&'a str> {
        self.tag
    }

    /// Display name text (quotes and escapes removed).
    pub fn display_name(&self) -> Option<std::borrow::Cow<'a, str>> {
        self.display.map(unquote)
    }

    /// Contact `expires` param (RFC 3261 §20.10), if present and valid.
    pub fn expires(&self) -> Option<u32> {
        self.params
            .get("expires")
            .flatten()
            .and_then(parse_digits_u32)
    }

    /// An owned copy (`"display" <uri>;params` normalized) for dialog state.
    pub fn to_owned_string(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for NameAddr<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(d) = self.display {
            if d.starts_with('"') {
                write!(f, "{d} ")?;
            } else {
                write!(f, "\"{d}\" ")?;
            }
        }
        write!(f, "<{}>", self.uri_raw)?;
        for (n, v) in self.params.iter() {
            if n.eq_ignore_ascii_case("tag") {
                continue;
            }
            match v {
                Some(v) => write!(f, ";{n}={v}")?,
                None => write!(f, ";{n}")?,
            }
        }
        if let Some(t) = self.tag {
            write!(f, ";tag={t}")?;
        }
        Ok(())
    }
}

/// A Contact header: `*` or a list (RFC 3261 §20.10).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Contacts<'a> {
    /// `Contact: *` (REGISTER only).
    Wildcard,
    List(Vec<NameAddr<'a>>),
}

impl<'a> Contacts<'a> {
    /// The contacts as a slice (empty for `*`).
    pub fn as_slice(&self) -> &[NameAddr<'a>] {
        match self {
            Contacts::Wildcard => &[],
            Contacts::List(v) => v,
        }
    }
}

// ---------------------------------------------------------------------------------------
// CSeq, Call-ID, Max-Forwards, scalars

/// CSeq (RFC 3261 §20.16).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CSeq<'a> {
    /// Sequence number, < 2^31 (RFC 3261 §8.1.1.5).
    pub seq: u32,
    pub method: Method<'a>,
}

impl<'a> CSeq<'a> {
    pub fn parse(s: &'a str) -> Result<CSeq<'a>, HeaderError> {
        const H: &str = "CSeq";
        let s = trim_ws(s);
        let sp = s
            .find([' ', '\t'])
            .ok_or(HeaderError::Invalid(H, "expected number and method"))?;
        let seq = parse_digits_u32(&s[..sp]).ok_or(HeaderError::Invalid(H, "sequence number"))?;
        if seq > 0x7FFF_FFFF {
            return Err(HeaderError::Invalid(H, "sequence number over 2^31-1"));
        }
        let m = trim_ws(&s[sp..]);
        if !is_token(m) {
            return Err(HeaderError::Invalid(H, "method"));
        }
        Ok(CSeq {
            seq,
            method: Method::parse(m),
        })
    }
}

impl fmt::Display for CSeq<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.seq, self.method)
    }
}

/// Validate a Call-ID: `word [ "@" word ]` (RFC 3261 §25.1).
pub fn validate_call_id(s: &str) -> Result<&str, HeaderError> {
    let s = trim_ws(s);
    let (a, b) = match s.find('@') {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let word = |w: &str| !w.is_empty() && w.bytes().all(is_word_char);
    if word(a) && b.is_none_or(word) {
        Ok(s)
    } else {
        Err(HeaderError::Invalid("Call-ID", "not word[@word]"))
    }
}

/// Max-Forwards 0..=255 (RFC 3261 §20.22).
pub fn parse_max_forwards(s: &str) -> Result<u8, HeaderError> {
    parse_digits_u32(trim_ws(s))
        .and_then(|v| u8::try_from(v).ok())
        .ok_or(HeaderError::Invalid("Max-Forwards", "not 0..=255"))
}

/// delta-seconds (RFC 3261 §25.1) as u32.
pub fn parse_delta_seconds(s: &str, what: &'static str) -> Result<u32, HeaderError> {
    parse_digits_u32(trim_ws(s)).ok_or(HeaderError::Invalid(what, "delta-seconds"))
}

// ---------------------------------------------------------------------------------------
// Media types

/// `type/subtype *(;param)` (RFC 3261 §20.15 Content-Type, §20.1 Accept ranges).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MediaType<'a> {
    pub mtype: &'a str,
    pub subtype: &'a str,
    pub params: Params<'a>,
}

impl<'a> MediaType<'a> {
    pub fn parse(s: &'a str, what: &'static str) -> Result<MediaType<'a>, HeaderError> {
        let s = trim_ws(s);
        let (mt, params) = match s.find(';') {
            Some(i) => (&s[..i], &s[i..]),
            None => (s, ""),
        };
        let slash = mt
            .find('/')
            .ok_or(HeaderError::Invalid(what, "type/subtype"))?;
        let mtype = trim_ws(&mt[..slash]);
        let subtype = trim_ws(&mt[slash + 1..]);
        if !is_token(mtype) || !is_token(subtype) {
            return Err(HeaderError::Invalid(what, "type/subtype"));
        }
        if !Params::validate_generic(params) {
            return Err(HeaderError::Invalid(what, "params"));
        }
        Ok(MediaType {
            mtype,
            subtype,
            params: Params::from_raw(params),
        })
    }

    /// Case-insensitive `type/subtype` comparison.
    pub fn is(&self, mtype: &str, subtype: &str) -> bool {
        self.mtype.eq_ignore_ascii_case(mtype) && self.subtype.eq_ignore_ascii_case(subtype)
    }

    /// Whether this (as an Accept range, `*` wildcards allowed) covers `mtype/subtype`.
    pub fn covers(&self, mtype: &str, subtype: &str) -> bool {
        (self.mtype == "*" || self.mtype.eq_ignore_ascii_case(mtype))
            && (self.subtype == "*" || self.subtype.eq_ignore_ascii_case(subtype))
    }

    /// The q value of an Accept range (1.0 if absent or unparseable).
    pub fn q(&self) -> f32 {
        self.params
            .get("q")
            .flatten()
            .and_then(|q| q.parse::<f32>().ok())
            .filter(|q| (0.0..=1.0).contains(q))
            .unwrap_or(1.0)
    }

    /// `boundary` param of a multipart type, unquoted.
    pub fn boundary(&self) -> Option<std::borrow::Cow<'a, str>> {
        self.params.get("boundary").flatten().map(unquote)
    }
}

impl fmt::Display for MediaType<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}{}", self.mtype, self.subtype, self.params)
    }
}

// ---------------------------------------------------------------------------------------
// Session timers (RFC 4028)

/// Who refreshes the session (RFC 4028 §4 `refresher` param).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refresher {
    Uac,
    Uas,
}

/// Session-Expires (RFC 4028 §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionExpires {
    pub delta: Duration,
    pub refresher: Option<Refresher>,
}

impl SessionExpires {
    pub fn parse(s: &str) -> Result<SessionExpires, HeaderError> {
        const H: &str = "Session-Expires";
        let s = trim_ws(s);
        let (d, params) = match s.find(';') {
            Some(i) => (&s[..i], &s[i..]),
            None => (s, ""),
        };
        let secs = parse_delta_seconds(d, H)?;
        if !Params::validate_generic(params) {
            return Err(HeaderError::Invalid(H, "params"));
        }
        let refresher = match Params::from_raw(params).get("refresher") {
            None => None,
            Some(Some(r)) if r.eq_ignore_ascii_case("uac") => Some(Refresher::Uac),
            Some(Some(r)) if r.eq_ignore_ascii_case("uas") => Some(Refresher::Uas),
            Some(_) => return Err(HeaderError::Invalid(H, "refresher")),
        };
        Ok(SessionExpires {
            delta: Duration::from_secs(u64::from(secs)),
            refresher,
        })
    }
}

impl fmt::Display for SessionExpires {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.delta.as_secs())?;
        match self.refresher {
            Some(Refresher::Uac) => f.write_str(";refresher=uac"),
            Some(Refresher::Uas) => f.write_str(";refresher=uas"),
            None => Ok(()),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Reason (RFC 3326)

/// One Reason value: `SIP ;cause=200 ;text="Call completed elsewhere"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reason<'a> {
    pub protocol: &'a str,
    pub cause: Option<u16>,
    /// The text param, still quoted.
    pub text: Option<&'a str>,
    pub params: Params<'a>,
}

impl<'a> Reason<'a> {
    pub fn parse(s: &'a str) -> Result<Reason<'a>, HeaderError> {
        const H: &str = "Reason";
        let s = trim_ws(s);
        let (p, params) = match s.find(';') {
            Some(i) => (trim_ws(&s[..i]), &s[i..]),
            None => (s, ""),
        };
        if !is_token(p) || !Params::validate_generic(params) {
            return Err(HeaderError::Invalid(H, "syntax"));
        }
        let params = Params::from_raw(params);
        let cause = match params.get("cause") {
            None => None,
            Some(v) => Some(
                v.and_then(|c| c.parse::<u16>().ok())
                    .ok_or(HeaderError::Invalid(H, "cause"))?,
            ),
        };
        Ok(Reason {
            protocol: p,
            cause,
            text: params.get("text").flatten(),
            params,
        })
    }
}

/// Comma list of tokens (Require, Supported, Unsupported, Proxy-Require, Allow).
pub fn parse_token_list<'a>(
    values: impl Iterator<Item = &'a str>,
    what: &'static str,
) -> Result<Vec<&'a str>, HeaderError> {
    let mut out = Vec::new();
    for v in values {
        // RFC 3261 allows an empty Supported / Allow header.
        if trim_ws(v).is_empty() {
            continue;
        }
        for e in list_elements(v) {
            if !is_token(e) {
                return Err(HeaderError::Invalid(what, "not a token list"));
            }
            out.push(e);
        }
    }
    Ok(out)
}

/// RFC 1123 date in GMT as RFC 3261 §20.17 requires (`Sat, 13 Nov 2010 23:29:00 GMT`).
/// RFC 4475 baddate uses `EST` and must be rejected.
pub fn validate_sip_date(s: &str) -> Result<&str, HeaderError> {
    const H: &str = "Date";
    let s = trim_ws(s);
    let bad = Err(HeaderError::Invalid(H, "not an RFC 1123 GMT date"));
    let parts: Vec<&str> = s.split(' ').collect();
    if parts.len() != 6 {
        return bad;
    }
    let wkday_ok = ["Mon,", "Tue,", "Wed,", "Thu,", "Fri,", "Sat,", "Sun,"].contains(&parts[0]);
    let day_ok = parts[1].len() == 2 && parts[1].bytes().all(|b| b.is_ascii_digit());
    let month_ok = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .contains(&parts[2]);
    let year_ok = parts[3].len() == 4 && parts[3].bytes().all(|b| b.is_ascii_digit());
    let t = parts[4].as_bytes();
    let time_ok = t.len() == 8
        && t[2] == b':'
        && t[5] == b':'
        && [0, 1, 3, 4, 6, 7].iter().all(|&i| t[i].is_ascii_digit());
    if wkday_ok && day_ok && month_ok && year_ok && time_ok && parts[5] == "GMT" {
        Ok(s)
    } else {
        bad
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(HeaderName::parse("v"), HeaderName::Via);
        assert_eq!(HeaderName::parse("VIA"), HeaderName::Via);
        assert_eq!(HeaderName::parse("i"), HeaderName::CallId);
        assert_eq!(HeaderName::parse("L"), HeaderName::ContentLength);
        assert_eq!(HeaderName::parse("k"), HeaderName::Supported);
        assert_eq!(HeaderName::parse("x"), HeaderName::SessionExpires);
        assert_eq!(HeaderName::parse("cseq"), HeaderName::CSeq);
        assert_eq!(HeaderName::parse("X-Foo"), HeaderName::Other("x-foo"));
        assert_ne!(HeaderName::parse("X-Foo"), HeaderName::Via);
        assert_eq!(HeaderName::Other("z").as_str(), "z");
        assert_eq!(HeaderName::CallId.as_str(), "Call-ID");
    }

    #[test]
    fn via_variants() {
        let v = Via::parse("SIP  /   2.0 /UDP    192.0.2.2;branch=390skdjuw").unwrap();
        assert_eq!(v.transport, "UDP");
        assert_eq!(v.host, Host::Ip("192.0.2.2".parse().unwrap()));
        assert_eq!(v.branch, Some("390skdjuw"));
        assert!(!v.has_rfc3261_branch());
        let v =
            Via::parse("SIP  / 2.0  / TCP     spindle.example.com   ;  branch  =   z9hG4bK9ikj8")
                .unwrap();
        assert_eq!(v.host, Host::Domain("spindle.example.com"));
        assert_eq!(v.branch, Some("z9hG4bK9ikj8"));
        let v = Via::parse("SIP/2.0/UDP [2001:db8::1]:5070;rport;received=192.0.2.1;x=y").unwrap();
        assert_eq!(v.port, Some(5070));
        assert_eq!(v.rport, Some(None));
        assert_eq!(v.received, Some("192.0.2.1"));
        assert_eq!(
            v.to_string(),
            "SIP/2.0/UDP [2001:db8::1]:5070;received=192.0.2.1;rport;x=y"
        );
        assert_eq!(
            v.response_target(),
            (Host::Ip("192.0.2.1".parse().unwrap()), 5070)
        );
        let v = Via::parse("SIP/2.0/TLS h.example").unwrap();
        assert_eq!(v.response_target(), (Host::Domain("h.example"), 5061));
        let v = Via::parse("SIP/2.0/TCP h:5060;rport=1234;ttl=3;maddr=224.0.0.1").unwrap();
        assert_eq!(v.response_target().1, 1234);
        assert_eq!(v.rport, Some(Some(1234)));
        assert_eq!(v.ttl, Some(3));
        assert_eq!(v.maddr, Some("224.0.0.1"));
        for bad in [
            "SIP/2.0/UDP 192.0.2.15;;",
            "SIP/2.0/UDP",
            "SIP/2.0/UDP h;rport=x",
            "SIP/2.0/UDP h;ttl=300",
            "SIP/2.0/UDP h;received=nothost",
            "SIP/2.0/UDP h:99999",
            "SIP/2.0/UDPh",
            "",
        ] {
            assert!(Via::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn name_addrs() {
        let n = NameAddr::parse(
            r#""J Rosenberg \\\""       <sip:jdrosen@example.com> ;  tag = 98asjd8"#,
            "From",
        )
        .unwrap();
        assert_eq!(n.display_name().unwrap(), r#"J Rosenberg \""#);
        assert_eq!(n.tag(), Some("98asjd8"));
        let n = NameAddr::parse("caller<sip:caller@example.com>;tag=323", "From").unwrap();
        assert_eq!(n.display, Some("caller"));
        let n =
            NameAddr::parse("sip:+19725552222@gw1.example.net;unknownparam", "Contact").unwrap();
        assert!(n.params.contains("unknownparam"));
        assert!(n.uri.as_sip().unwrap().params.is_empty());
        assert!(!n.bracketed);
        let n = NameAddr::parse("<sip:a@b;lr>;expires=30", "Contact").unwrap();
        assert_eq!(n.expires(), Some(30));
        assert_eq!(n.to_string(), "<sip:a@b;lr>;expires=30");
        let mut n = NameAddr::parse("A B <sip:a@b>", "To").unwrap();
        assert_eq!(n.to_string(), "\"A B\" <sip:a@b>");
        n.tag = Some("t7");
        assert_eq!(n.to_string(), "\"A B\" <sip:a@b>;tag=t7");
        let n = NameAddr::parse("<sip:a@b>;tag=1;x", "To").unwrap();
        assert_eq!(n.to_string(), "<sip:a@b>;x;tag=1");
        for bad in [
            r#""Mr. J. User <sip:j.user@example.com>"#,
            "Bell, Alexander <sip:a.g.bell@example.com>;tag=43",
            r#""Watson, Thomas" < sip:t.watson@example.org >"#,
            "sip:user@example.com?Route=%3Csip:sip.example.com%3E",
            "<sip:a@b>;;",
            "<sip:a@b> junk",
            "<sip:a@b",
        ] {
            assert!(NameAddr::parse(bad, "To").is_err(), "{bad}");
        }
    }

    #[test]
    fn cseq_and_scalars() {
        let c = CSeq::parse("0009\r\n  INVITE".replace("\r\n", " ").as_str())
            .map(|c| c.seq)
            .unwrap();
        assert_eq!(c, 9);
        assert!(CSeq::parse("2147483648 INVITE").is_err());
        assert!(CSeq::parse("36893488147419103232 REGISTER").is_err());
        assert!(CSeq::parse("1").is_err());
        assert_eq!(parse_max_forwards("0068").unwrap(), 68);
        assert!(parse_max_forwards("300").is_err());
        assert!(validate_call_id("a@b@c").is_err());
        assert!(validate_call_id("intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{").is_ok());
        assert!(validate_sip_date("Sat, 15 Oct 2005 04:44:56 GMT").is_ok());
        assert!(validate_sip_date("Fri, 01 Jan 2010 16:00:00 EST").is_err());
    }

    #[test]
    fn media_and_timers() {
        let m =
            MediaType::parse("multipart/mixed;boundary=7a9cbec02ceef655", "Content-Type").unwrap();
        assert!(m.is("MULTIPART", "mixed"));
        assert_eq!(m.boundary().unwrap(), "7a9cbec02ceef655");
        let se = SessionExpires::parse("1800;refresher=uas").unwrap();
        assert_eq!(se.delta, Duration::from_secs(1800));
        assert_eq!(se.refresher, Some(Refresher::Uas));
        assert_eq!(se.to_string(), "1800;refresher=uas");
        assert!(SessionExpires::parse("1800;refresher=x").is_err());
        let r = Reason::parse(r#"SIP ;cause=200 ;text="Call completed elsewhere""#).unwrap();
        assert_eq!(r.cause, Some(200));
        assert_eq!(r.text, Some(r#""Call completed elsewhere""#));
    }
}
