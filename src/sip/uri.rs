//! SIP, SIPS and tel URIs (RFC 3261 §19.1, §25.1; RFC 3966), parsed by borrowing from the
//! text they came in. Every other scheme is kept opaque as `scheme:rest` (RFC 3261
//! `absoluteURI`), so unknown schemes parse and can be rejected later with 416.
//!
//! Components are kept escaped exactly as received; `*_unescaped` helpers decode `%HH`.
//! [`OwnedUri`] keeps a validated URI as a `String` for state that outlives the received
//! buffer (dialog remote target, route set).
//!
//! This module never allocates while parsing and never panics on any input.

use std::borrow::Cow;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::syntax::Params;

/// Why a URI did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UriError {
    #[error("missing or invalid URI scheme")]
    Scheme,
    #[error("invalid user or password part")]
    UserInfo,
    #[error("invalid host")]
    Host,
    #[error("invalid port")]
    Port,
    #[error("invalid URI parameter")]
    Param,
    #[error("invalid URI headers")]
    Headers,
    #[error("invalid character in URI")]
    Char,
    #[error("invalid tel number")]
    Tel,
}

/// A host as in RFC 3261 `host = hostname / IPv4address / IPv6reference`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Host<'a> {
    /// A DNS name, kept as received (case-insensitive when compared).
    Domain(&'a str),
    /// A literal IPv4 or IPv6 address (IPv6 was bracketed on the wire).
    Ip(IpAddr),
}

impl<'a> Host<'a> {
    /// Parse `hostname / IPv4address / IPv6reference`.
    pub fn parse(s: &'a str) -> Result<Host<'a>, UriError> {
        if let Some(inner) = s.strip_prefix('[') {
            let inner = inner.strip_suffix(']').ok_or(UriError::Host)?;
            return inner
                .parse::<Ipv6Addr>()
                .map(|a| Host::Ip(IpAddr::V6(a)))
                .map_err(|_| UriError::Host);
        }
        if s.is_empty() {
            return Err(UriError::Host);
        }
        if s.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
            return s
                .parse::<Ipv4Addr>()
                .map(|a| Host::Ip(IpAddr::V4(a)))
                .map_err(|_| UriError::Host);
        }
        // hostname = *( domainlabel "." ) toplabel [ "." ]. We accept '_' as well, which RFC
        // 3261 forbids but real SRV-derived names carry; labels must be non-empty.
        let body = s.strip_suffix('.').unwrap_or(s);
        let ok = !body.is_empty()
            && body.split('.').all(|label| {
                !label.is_empty()
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            });
        if ok {
            Ok(Host::Domain(s))
        } else {
            Err(UriError::Host)
        }
    }

    /// The IP address if this is a literal.
    pub fn ip(&self) -> Option<IpAddr> {
        match self {
            Host::Ip(ip) => Some(*ip),
            Host::Domain(_) => None,
        }
    }
}

impl fmt::Display for Host<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Domain(d) => f.write_str(d),
            Host::Ip(IpAddr::V4(a)) => write!(f, "{a}"),
            Host::Ip(IpAddr::V6(a)) => write!(f, "[{a}]"),
        }
    }
}

/// RFC 3261 `hostport` as holdfast writes it into a URI, a Via sent-by or a Call-ID: an IPv6
/// literal in brackets (§19.1.1, §25.1 `IPv6reference`), then `:port` when there is one.
/// `host` may come bare (`::1`, as config values and `IpAddr` display it) or already
/// bracketed (`[::1]`); names and IPv4 literals are written as given. Every host holdfast
/// formats goes through here (or [`socket_host_port`]), so none goes out unbracketed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostPort<'a> {
    pub host: &'a str,
    pub port: Option<u16>,
}

/// `host[:port]` for the wire; see [`HostPort`].
pub fn host_port(host: &str, port: Option<u16>) -> HostPort<'_> {
    HostPort { host, port }
}

impl fmt::Display for HostPort<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let h = self.host;
        // A bare IPv6 literal is the only host with a ':' (names and IPv4 have none).
        if h.contains(':') && !h.starts_with('[') {
            write!(f, "[{h}]")?;
        } else {
            f.write_str(h)?;
        }
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        Ok(())
    }
}

/// `ip:port` for the wire, IPv6 bracketed, without the scope id or flow info a
/// `SocketAddrV6` may carry (they mean nothing to the peer).
pub fn socket_host_port(addr: std::net::SocketAddr) -> String {
    match addr {
        std::net::SocketAddr::V4(a) => format!("{}:{}", a.ip(), a.port()),
        std::net::SocketAddr::V6(a) => format!("[{}]:{}", a.ip(), a.port()),
    }
}

/// A parsed URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Uri<'a> {
    /// `sip:` or `sips:`.
    Sip(SipUri<'a>),
    /// `tel:` (RFC 3966).
    Tel(TelUri<'a>),
    /// Any other scheme, opaque.
    Other(AbsoluteUri<'a>),
}

/// `sip:` / `sips:` URI (RFC 3261 §19.1.1). All parts are raw (still %-escaped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipUri<'a> {
    /// `sips:` rather than `sip:`.
    pub secure: bool,
    /// User part (may contain escapes and, per RFC 4475 semiuri, `;`).
    pub user: Option<&'a str>,
    /// Password (deprecated by RFC 3261 but grammatical).
    pub password: Option<&'a str>,
    pub host: Host<'a>,
    pub port: Option<u16>,
    /// uri-parameters (`;transport=tcp;lr`).
    pub params: Params<'a>,
    /// Headers after `?` (without the `?`), e.g. `Route=%3Csip:example.com%3E`.
    pub headers: Option<&'a str>,
}

/// `tel:` URI (RFC 3966): the number and its parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TelUri<'a> {
    /// The number as written (`+1-201-555-0123`), visual separators included.
    pub number: &'a str,
    pub params: Params<'a>,
}

/// Opaque `scheme:rest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AbsoluteUri<'a> {
    pub scheme: &'a str,
    pub rest: &'a str,
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'_' | b'.' | b'!' | b'~' | b'*' | b'\'' | b'(' | b')'
        )
}

/// Checks every byte is allowed by `allowed` or part of a valid `%HH` escape.
fn check_escaped(s: &str, allowed: impl Fn(u8) -> bool) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            match (b.get(i + 1), b.get(i + 2)) {
                (Some(h), Some(l)) if h.is_ascii_hexdigit() && l.is_ascii_hexdigit() => i += 3,
                _ => return false,
            }
        } else if allowed(b[i]) {
            i += 1;
        } else {
            return false;
        }
    }
    true
}

/// Decode `%HH` escapes. Invalid escapes are kept literally; decoded bytes that are not UTF-8
/// are replaced (U+FFFD). Borrowed when there is nothing to decode.
pub fn unescape(s: &str) -> Cow<'_, str> {
    if !s.contains('%') {
        return Cow::Borrowed(s);
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            if let (Some(h), Some(l)) = (b.get(i + 1), b.get(i + 2)) {
                if let (Some(h), Some(l)) = (hex_val(*h), hex_val(*l)) {
                    out.push(h * 16 + l);
                    i += 3;
                    continue;
                }
            }
        }
        out.push(b[i]);
        i += 1;
    }
    match String::from_utf8(out) {
        Ok(s) => Cow::Owned(s),
        Err(e) => Cow::Owned(String::from_utf8_lossy(e.as_bytes()).into_owned()),
    }
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Escape a string for use as the user part of a SIP URI (RFC 3261 §25.1 `user`).
pub fn escape_user(s: &str) -> Cow<'_, str> {
    let allowed = |b: u8| {
        is_unreserved(b) || matches!(b, b'&' | b'=' | b'+' | b'$' | b',' | b';' | b'?' | b'/')
    };
    if s.bytes().all(allowed) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for b in s.bytes() {
        if allowed(b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    Cow::Owned(out)
}

fn user_char(b: u8) -> bool {
    // user = 1*( unreserved / escaped / user-unreserved )
    is_unreserved(b) || matches!(b, b'&' | b'=' | b'+' | b'$' | b',' | b';' | b'?' | b'/')
}

fn password_char(b: u8) -> bool {
    is_unreserved(b) || matches!(b, b'&' | b'=' | b'+' | b'$' | b',')
}

fn param_char(b: u8) -> bool {
    // paramchar = param-unreserved / unreserved / escaped
    is_unreserved(b) || matches!(b, b'[' | b']' | b'/' | b':' | b'&' | b'+' | b'$')
}

fn hvalue_char(b: u8) -> bool {
    // hnv-unreserved / unreserved
    is_unreserved(b) || matches!(b, b'[' | b']' | b'/' | b'?' | b':' | b'+' | b'$')
}

/// RFC 2396 `uric` plus `#` and `[]`: what an opaque absoluteURI may contain.
fn uric(b: u8) -> bool {
    is_unreserved(b)
        || matches!(
            b,
            b';' | b'/'
                | b'?'
                | b':'
                | b'@'
                | b'&'
                | b'='
                | b'+'
                | b'$'
                | b','
                | b'#'
                | b'['
                | b']'
        )
}

/// Split `host[:port]`, handling `[v6]:port`.
pub(crate) fn parse_hostport(s: &str) -> Result<(Host<'_>, Option<u16>), UriError> {
    let (host, port) = if s.starts_with('[') {
        match s.find(']') {
            Some(end) => {
                let rest = &s[end + 1..];
                if rest.is_empty() {
                    (&s[..=end], None)
                } else if let Some(p) = rest.strip_prefix(':') {
                    (&s[..=end], Some(p))
                } else {
                    return Err(UriError::Host);
                }
            }
            None => return Err(UriError::Host),
        }
    } else {
        match s.find(':') {
            Some(c) => (&s[..c], Some(&s[c + 1..])),
            None => (s, None),
        }
    };
    let host = Host::parse(host)?;
    let port = match port {
        None => None,
        Some(p) => {
            if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(UriError::Port);
            }
            Some(p.parse::<u16>().map_err(|_| UriError::Port)?)
        }
    };
    Ok((host, port))
}

impl<'a> Uri<'a> {
    /// Parse a URI (no surrounding whitespace or angle brackets).
    pub fn parse(s: &'a str) -> Result<Uri<'a>, UriError> {
        let colon = s.find(':').ok_or(UriError::Scheme)?;
        let scheme = &s[..colon];
        let rest = &s[colon + 1..];
        // scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )
        let mut sb = scheme.bytes();
        match sb.next() {
            Some(b) if b.is_ascii_alphabetic() => {}
            _ => return Err(UriError::Scheme),
        }
        if !sb.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.')) {
            return Err(UriError::Scheme);
        }
        if scheme.eq_ignore_ascii_case("sip") {
            SipUri::parse_rest(false, rest).map(Uri::Sip)
        } else if scheme.eq_ignore_ascii_case("sips") {
            SipUri::parse_rest(true, rest).map(Uri::Sip)
        } else if scheme.eq_ignore_ascii_case("tel") {
            TelUri::parse_rest(rest).map(Uri::Tel)
        } else {
            if rest.is_empty() || !check_escaped(rest, uric) {
                return Err(UriError::Char);
            }
            Ok(Uri::Other(AbsoluteUri { scheme, rest }))
        }
    }

    /// The scheme, lower-case for sip/sips/tel, as received otherwise.
    pub fn scheme(&self) -> &str {
        match self {
            Uri::Sip(u) if u.secure => "sips",
            Uri::Sip(_) => "sip",
            Uri::Tel(_) => "tel",
            Uri::Other(o) => o.scheme,
        }
    }

    /// The SIP URI, if this is one.
    pub fn as_sip(&self) -> Option<&SipUri<'a>> {
        match self {
            Uri::Sip(u) => Some(u),
            _ => None,
        }
    }

    /// User part of a sip URI or number of a tel URI (raw).
    pub fn user(&self) -> Option<&'a str> {
        match self {
            Uri::Sip(u) => u.user,
            Uri::Tel(t) => Some(t.number),
            Uri::Other(_) => None,
        }
    }

    /// An owned copy that outlives the buffer.
    pub fn to_owned_uri(&self) -> OwnedUri {
        OwnedUri(self.to_string())
    }
}

impl<'a> SipUri<'a> {
    fn parse_rest(secure: bool, s: &'a str) -> Result<SipUri<'a>, UriError> {
        // Headers start at the first '?' after the host part; '?' may legally occur in the
        // user part, so find the userinfo first. The '@' cannot occur unescaped after it.
        let (userinfo, after) = match s.rfind('@') {
            Some(at) => (Some(&s[..at]), &s[at + 1..]),
            None => (None, s),
        };
        let (user, password) = match userinfo {
            None => (None, None),
            Some(ui) => {
                let (u, p) = match ui.find(':') {
                    Some(c) => (&ui[..c], Some(&ui[c + 1..])),
                    None => (ui, None),
                };
                if u.is_empty() || !check_escaped(u, user_char) {
                    return Err(UriError::UserInfo);
                }
                if let Some(p) = p {
                    if !check_escaped(p, password_char) {
                        return Err(UriError::UserInfo);
                    }
                }
                (Some(u), p)
            }
        };
        let (before_headers, headers) = match after.find('?') {
            Some(q) => (&after[..q], Some(&after[q + 1..])),
            None => (after, None),
        };
        let (hostport, params) = match before_headers.find(';') {
            Some(sc) => (&before_headers[..sc], &before_headers[sc..]),
            None => (before_headers, ""),
        };
        let (host, port) = parse_hostport(hostport)?;
        // uri-parameters: each `;pname[=pvalue]`, pname non-empty.
        for p in params.split(';').skip(1) {
            let (n, v) = match p.find('=') {
                Some(e) => (&p[..e], Some(&p[e + 1..])),
                None => (p, None),
            };
            if n.is_empty() || !check_escaped(n, param_char) {
                return Err(UriError::Param);
            }
            if let Some(v) = v {
                if v.is_empty() || !check_escaped(v, param_char) {
                    return Err(UriError::Param);
                }
            }
        }
        if let Some(h) = headers {
            // headers = header *( "&" header ); header = hname "=" hvalue
            for hdr in h.split('&') {
                let eq = hdr.find('=').ok_or(UriError::Headers)?;
                let (n, v) = (&hdr[..eq], &hdr[eq + 1..]);
                if n.is_empty() || !check_escaped(n, hvalue_char) || !check_escaped(v, hvalue_char)
                {
                    return Err(UriError::Headers);
                }
            }
        }
        Ok(SipUri {
            secure,
            user,
            password,
            host,
            port,
            params: Params::from_raw(params),
            headers,
        })
    }

    /// User part with `%HH` decoded.
    pub fn user_unescaped(&self) -> Option<Cow<'a, str>> {
        self.user.map(unescape)
    }

    /// `transport` URI parameter.
    pub fn transport(&self) -> Option<&'a str> {
        self.params.get("transport").flatten()
    }

    /// Loose-routing flag (`lr`, RFC 3261 §19.1.1).
    pub fn lr(&self) -> bool {
        self.params.contains("lr")
    }

    /// `maddr` URI parameter.
    pub fn maddr(&self) -> Option<&'a str> {
        self.params.get("maddr").flatten()
    }

    /// `user` URI parameter (`phone`, `ip`).
    pub fn user_param(&self) -> Option<&'a str> {
        self.params.get("user").flatten()
    }

    /// URI equivalence per RFC 3261 §19.1.4: same scheme, user and password compared
    /// case-sensitively after unescaping, host case-insensitively, same port presence;
    /// `user`, `ttl`, `method`, `maddr` and `transport` must match when either side has
    /// them, other params only when both do; headers must match as sets.
    pub fn eq_rfc3261(&self, other: &SipUri<'_>) -> bool {
        if self.secure != other.secure
            || self.user.map(unescape) != other.user.map(unescape)
            || self.password.map(unescape) != other.password.map(unescape)
            || self.port != other.port
        {
            return false;
        }
        let host_eq = match (&self.host, &other.host) {
            (Host::Domain(a), Host::Domain(b)) => a
                .trim_end_matches('.')
                .eq_ignore_ascii_case(b.trim_end_matches('.')),
            (a, b) => a == b,
        };
        if !host_eq {
            return false;
        }
        let pval = |p: &Params<'_>, n: &str| {
            p.get(n)
                .map(|v| v.map(|v| unescape(v).to_ascii_lowercase()))
        };
        for special in ["user", "ttl", "method", "maddr", "transport"] {
            if pval(&self.params, special) != pval(&other.params, special) {
                return false;
            }
        }
        for (n, _) in self.params.iter() {
            if other.params.contains(n) && pval(&self.params, n) != pval(&other.params, n) {
                return false;
            }
        }
        let mut a: Vec<_> = self
            .header_pairs()
            .map(|(n, v)| (unescape(n), unescape(v)))
            .collect();
        let mut b: Vec<_> = other
            .header_pairs()
            .map(|(n, v)| (unescape(n), unescape(v)))
            .collect();
        a.sort();
        b.sort();
        a == b
    }

    /// Headers after `?` as `(name, value)` pairs, still escaped.
    pub fn header_pairs(&self) -> impl Iterator<Item = (&'a str, &'a str)> {
        self.headers
            .into_iter()
            .flat_map(|h| h.split('&'))
            .filter_map(|h| h.find('=').map(|e| (&h[..e], &h[e + 1..])))
    }
}

impl<'a> TelUri<'a> {
    fn parse_rest(s: &'a str) -> Result<TelUri<'a>, UriError> {
        let (number, params) = match s.find(';') {
            Some(sc) => (&s[..sc], &s[sc..]),
            None => (s, ""),
        };
        // global-number-digits = "+" *phonedigit DIGIT *phonedigit;
        // local-number-digits = *phonedigit-hex (HEXDIG / "*" / "#") *phonedigit-hex
        let digits = number.strip_prefix('+').unwrap_or(number);
        let visual = |b: u8| matches!(b, b'-' | b'.' | b'(' | b')');
        let ok = if number.starts_with('+') {
            digits.bytes().all(|b| b.is_ascii_digit() || visual(b))
                && digits.bytes().any(|b| b.is_ascii_digit())
        } else {
            digits
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b'*' || b == b'#' || visual(b))
                && digits
                    .bytes()
                    .any(|b| b.is_ascii_hexdigit() || b == b'*' || b == b'#')
        };
        if !ok {
            return Err(UriError::Tel);
        }
        for p in params.split(';').skip(1) {
            let (n, v) = match p.find('=') {
                Some(e) => (&p[..e], Some(&p[e + 1..])),
                None => (p, None),
            };
            if n.is_empty() || !check_escaped(n, param_char) {
                return Err(UriError::Param);
            }
            if let Some(v) = v {
                if !check_escaped(v, |b| param_char(b) || b == b'+' || b == b'#') {
                    return Err(UriError::Param);
                }
            }
        }
        Ok(TelUri {
            number,
            params: Params::from_raw(params),
        })
    }

    /// The number without visual separators (`+12015550123`).
    pub fn digits(&self) -> String {
        self.number
            .chars()
            .filter(|c| !matches!(c, '-' | '.' | '(' | ')'))
            .collect()
    }

    /// True for a global number (`+` prefixed).
    pub fn is_global(&self) -> bool {
        self.number.starts_with('+')
    }
}

impl fmt::Display for SipUri<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.secure { "sips:" } else { "sip:" })?;
        if let Some(u) = self.user {
            f.write_str(u)?;
            if let Some(p) = self.password {
                write!(f, ":{p}")?;
            }
            f.write_str("@")?;
        }
        write!(f, "{}", self.host)?;
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        f.write_str(self.params.raw())?;
        if let Some(h) = self.headers {
            write!(f, "?{h}")?;
        }
        Ok(())
    }
}

impl fmt::Display for TelUri<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tel:{}{}", self.number, self.params.raw())
    }
}

impl fmt::Display for Uri<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Uri::Sip(u) => u.fmt(f),
            Uri::Tel(t) => t.fmt(f),
            Uri::Other(o) => write!(f, "{}:{}", o.scheme, o.rest),
        }
    }
}

/// A validated URI kept as an owned string (for dialog state outliving the received buffer).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OwnedUri(String);

impl OwnedUri {
    /// Validate and keep `s`.
    pub fn new(s: &str) -> Result<OwnedUri, UriError> {
        Uri::parse(s)?;
        Ok(OwnedUri(s.to_owned()))
    }

    /// Parse view (cannot fail: validated at construction; falls back to opaque otherwise).
    pub fn uri(&self) -> Uri<'_> {
        Uri::parse(&self.0).unwrap_or(Uri::Other(AbsoluteUri {
            scheme: "invalid",
            rest: &self.0,
        }))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for OwnedUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Normalises a dialed number from a URI user part, or from a whole `tel:` / `sip:` URI:
/// drops the scheme, host and URI parameters (`;phone-context=...`, RFC 3966 §5.1.5), and the
/// visual separators `-`, `.`, `(`, `)` and space (RFC 3966 §5.1.1); keeps a leading `+`.
pub fn dialed_number(uri_user: &str) -> String {
    let mut t = uri_user.trim();
    let lower_starts = |t: &str, p: &str| {
        t.get(..p.len())
            .is_some_and(|head| head.eq_ignore_ascii_case(p))
    };
    if lower_starts(t, "tel:") {
        t = &t[4..];
    } else if lower_starts(t, "sip:") || lower_starts(t, "sips:") {
        let rest = &t[t.find(':').map_or(0, |i| i + 1)..];
        // A SIP URI without a user part carries no number.
        t = rest.split_once('@').map_or("", |(user, _)| user);
    }
    let t = t.split(';').next().unwrap_or("");
    t.chars()
        .filter(|c| !matches!(c, '-' | '.' | '(' | ')' | ' '))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sip(s: &str) -> SipUri<'_> {
        match Uri::parse(s) {
            Ok(Uri::Sip(u)) => u,
            other => panic!("{s}: {other:?}"),
        }
    }

    #[test]
    fn basic_sip() {
        let u = sip("sip:alice:pw@example.com:5070;transport=tcp;lr?Subject=hi&X=y");
        assert_eq!(u.user, Some("alice"));
        assert_eq!(u.password, Some("pw"));
        assert_eq!(u.host, Host::Domain("example.com"));
        assert_eq!(u.port, Some(5070));
        assert_eq!(u.transport(), Some("tcp"));
        assert!(u.lr());
        assert_eq!(
            u.header_pairs().collect::<Vec<_>>(),
            vec![("Subject", "hi"), ("X", "y")]
        );
        assert_eq!(
            u.to_string(),
            "sip:alice:pw@example.com:5070;transport=tcp;lr?Subject=hi&X=y"
        );
    }

    #[test]
    fn ipv6_and_ipv4() {
        let u = sip("sips:[2001:db8::1]:5061");
        assert!(u.secure);
        assert_eq!(u.host.ip(), Some("2001:db8::1".parse().unwrap()));
        assert_eq!(u.port, Some(5061));
        assert_eq!(u.to_string(), "sips:[2001:db8::1]:5061");
        assert_eq!(
            sip("sip:192.0.2.1").host.ip(),
            Some("192.0.2.1".parse().unwrap())
        );
        assert!(Uri::parse("sip:256.1.1.1").is_err());
        assert!(Uri::parse("sip:[::1").is_err());
        assert!(Uri::parse("sip:host:99999").is_err());
        assert!(Uri::parse("sip:host:").is_err());
    }

    #[test]
    fn host_port_brackets_ipv6_literals_once() {
        let cases = [
            ("::1", Some(5060), "[::1]:5060"),
            ("[::1]", Some(5060), "[::1]:5060"),
            ("2001:db8::7", None, "[2001:db8::7]"),
            ("[2001:db8::7]", None, "[2001:db8::7]"),
            ("192.0.2.1", Some(5070), "192.0.2.1:5070"),
            ("sip.example.com", None, "sip.example.com"),
        ];
        for (host, port, want) in cases {
            let hp = host_port(host, port).to_string();
            assert_eq!(hp, want, "{host} {port:?}");
            // What we write parses back to the same host and port (RFC 3261 hostport).
            let (h, p) = parse_hostport(&hp).expect("our hostport parses");
            assert_eq!(p, port);
            assert_eq!(h.to_string(), host_port(host, None).to_string());
            let uri = format!("sip:agent@{hp}");
            assert!(Uri::parse(&uri).is_ok(), "{uri}");
        }
        let v6: std::net::SocketAddr = "[fe80::1%2]:5060".parse().unwrap();
        assert_eq!(socket_host_port(v6), "[fe80::1]:5060");
        let v4: std::net::SocketAddr = "127.0.0.1:5060".parse().unwrap();
        assert_eq!(socket_host_port(v4), "127.0.0.1:5060");
    }

    #[test]
    fn rfc4475_users() {
        // esc01
        let u = sip("sip:sips%3Auser%40example.com@example.net");
        assert_eq!(u.user_unescaped().unwrap(), "sips:user@example.com");
        // semiuri
        let u = sip("sip:user;par=u%40example.net@example.com");
        assert_eq!(u.user_unescaped().unwrap(), "user;par=u@example.net");
        assert!(u.params.is_empty());
        // escnull
        assert_eq!(
            sip("sip:null-%00-null@example.com")
                .user_unescaped()
                .unwrap(),
            "null-\0-null"
        );
        // intmeth
        let u = sip("sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,weird!*pas$wo~d_too.(doesn't-it)@example.com");
        assert_eq!(
            u.user,
            Some("1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*")
        );
        assert_eq!(
            u.password,
            Some("&it+has=1,weird!*pas$wo~d_too.(doesn't-it)")
        );
        // esc01 contact params
        let u = sip("sip:cal%6Cer@host5.example.net;%6C%72;n%61me=v%61lue%25%34%31");
        assert_eq!(u.params.get("%6C%72"), Some(None));
        assert!(Uri::parse("sip:user@example.com; lr").is_err());
        assert!(Uri::parse("sip:us%zer@example.com").is_err());
        assert!(Uri::parse("<sip:user@example.com>").is_err());
    }

    #[test]
    fn other_schemes() {
        for s in [
            "nobodyKnowsThisScheme:totallyopaquecontent",
            "soap.beep://192.0.2.103:3002",
            "isbn:2983792873",
            "http://www.example.com",
            "name:John_Smith",
        ] {
            let u = Uri::parse(s).unwrap();
            assert!(matches!(u, Uri::Other(_)), "{s}");
            assert_eq!(u.to_string(), s);
        }
        assert!(Uri::parse("1abc:x").is_err());
        assert!(Uri::parse("abc:").is_err());
        assert!(Uri::parse("abc:a b").is_err());
    }

    #[test]
    fn rfc3261_equivalence() {
        // RFC 3261 §19.1.4 examples.
        let eq = |a: &str, b: &str| sip(a).eq_rfc3261(&sip(b));
        assert!(eq(
            "sip:%61lice@atlanta.com;transport=TCP",
            "sip:alice@AtLanTa.CoM;Transport=tcp"
        ));
        assert!(eq(
            "sip:carol@chicago.com",
            "sip:carol@chicago.com;newparam=5"
        ));
        assert!(eq(
            "sip:biloxi.com;transport=tcp;method=REGISTER?to=sip:bob%40biloxi.com",
            "sip:biloxi.com;method=REGISTER;transport=tcp?to=sip:bob%40biloxi.com"
        ));
        assert!(!eq(
            "SIP:ALICE@AtLanTa.CoM;Transport=udp",
            "sip:alice@AtLanTa.CoM;Transport=UDP"
        ));
        assert!(!eq("sip:bob@biloxi.com", "sip:bob@biloxi.com:5060"));
        assert!(!eq(
            "sip:bob@biloxi.com",
            "sip:bob@biloxi.com;transport=udp"
        ));
        assert!(!eq(
            "sip:carol@chicago.com;security=on",
            "sip:carol@chicago.com;security=off"
        ));
        assert!(!eq(
            "sip:carol@chicago.com",
            "sip:carol@chicago.com?Subject=next%20meeting"
        ));
    }

    #[test]
    fn tel() {
        let u = Uri::parse("tel:+1-201-555-0123;phone-context=example.com").unwrap();
        let Uri::Tel(t) = &u else { panic!() };
        assert_eq!(t.digits(), "+12015550123");
        assert!(t.is_global());
        assert_eq!(t.params.get("phone-context"), Some(Some("example.com")));
        assert_eq!(
            u.to_string(),
            "tel:+1-201-555-0123;phone-context=example.com"
        );
        assert!(Uri::parse("tel:+").is_err());
        assert!(Uri::parse("tel:abc-xyz").is_err());
    }

    #[test]
    fn escaping() {
        assert_eq!(escape_user("a b@c"), "a%20b%40c");
        assert_eq!(escape_user("+1555"), "+1555");
        assert_eq!(unescape("%41%zz%4"), "A%zz%4");
        let o = OwnedUri::new("sip:x@y").unwrap();
        assert_eq!(o.uri().user(), Some("x"));
        assert!(OwnedUri::new("nope").is_err());
    }
}
