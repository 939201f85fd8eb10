//! SDP (RFC 8866 / RFC 4566) parsing, serialization and the offer/answer rewrites that anchor
//! every call's media on holdfast.
//!
//! Does: parse a session description off the wire into an owned, editable [`Sdp`] that keeps
//! every line it does not model verbatim and in order (session and media level) and serializes
//! back byte-identical when nothing changed (CRLF or bare LF, as received); rewrite an SDP so
//! that the connection address and ports are holdfast's ([`anchor`], ICE attributes dropped like
//! rtpengine's `ICE=remove`); present holdfast's own `o=` line per leg with the RFC 3264 §8
//! version rule ([`OriginState`]); answer hold/unhold re-offers ([`answer_hold`], RFC 3264 §6.1
//! and §8.4); and report what the relay needs per m-line ([`Sdp::media_info`]).
//!
//! Never: touches a socket, a clock or a random source (session ids come in as arguments),
//! panics on input (SDP comes off the wire: every error is an [`SdpError`] with a line number,
//! which the B2BUA turns into `488 Not Acceptable Here`), negotiates codecs (the endpoints do
//! that end to end; holdfast only moves addresses and ports), or resolves FQDN addresses.
//!
//! Parsing is strict on the lines anchoring depends on (`v=`, `o=`, `c=`, `t=`, `m=`) and
//! lenient on attributes: a known attribute that does not parse (say `a=ptime:20.5`) is kept as
//! an unknown attribute, verbatim.

use std::fmt::{self, Write as _};
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// A session description that cannot be used; `line` is 1-based.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("SDP line {line}: {kind}")]
pub struct SdpError {
    pub line: usize,
    pub kind: SdpErrorKind,
}

/// What is wrong with the line named in [`SdpError`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SdpErrorKind {
    #[error("empty session description")]
    Empty,
    #[error("not valid UTF-8")]
    NotUtf8,
    #[error("expected `<type>=<value>`")]
    Malformed,
    #[error("the first line must be `v=` (RFC 8866 §5.1)")]
    MissingVersion,
    #[error("unsupported protocol version `v={0}` (only v=0)")]
    UnsupportedVersion(String),
    #[error("missing `o=` line (RFC 8866 §5.2)")]
    MissingOrigin,
    #[error("malformed `{field}=` line: {why}")]
    BadField { field: char, why: &'static str },
    #[error("`{0}=` is only allowed at session level")]
    SessionLineInMedia(char),
}

fn bad(field: char, why: &'static str) -> SdpErrorKind {
    SdpErrorKind::BadField { field, why }
}

// ---------------------------------------------------------------------------------------------
// Model
// ---------------------------------------------------------------------------------------------

/// Line terminator of one line as received.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Eol {
    CrLf,
    Lf,
    /// The last line of the input had no terminator.
    Missing,
}

impl Eol {
    fn as_str(self) -> &'static str {
        match self {
            Eol::CrLf => "\r\n",
            Eol::Lf => "\n",
            Eol::Missing => "",
        }
    }
}

/// `<addrtype>` of `o=`, `c=` and `a=rtcp:`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AddrType {
    Ip4,
    Ip6,
}

impl AddrType {
    fn as_str(self) -> &'static str {
        match self {
            AddrType::Ip4 => "IP4",
            AddrType::Ip6 => "IP6",
        }
    }
    fn parse(s: &str, field: char) -> Result<Self, SdpErrorKind> {
        match s {
            "IP4" => Ok(AddrType::Ip4),
            "IP6" => Ok(AddrType::Ip6),
            _ => Err(bad(field, "addrtype must be IP4 or IP6")),
        }
    }
    /// The addrtype for an IP address.
    pub fn of(ip: IpAddr) -> Self {
        if ip.is_ipv4() {
            AddrType::Ip4
        } else {
            AddrType::Ip6
        }
    }
}

/// `<nettype> <addrtype> <address>`; `address` may be an FQDN (kept as text).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Address {
    pub nettype: String,
    pub addrtype: AddrType,
    pub address: String,
}

impl Address {
    /// `IN IP4 a.b.c.d` or `IN IP6 x::y` for an IP address.
    pub fn from_ip(ip: IpAddr) -> Self {
        Address {
            nettype: "IN".into(),
            addrtype: AddrType::of(ip),
            address: ip.to_string(),
        }
    }
    /// The address as an IP, if it is a literal (not an FQDN).
    pub fn ip(&self) -> Option<IpAddr> {
        self.address.parse().ok()
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {}",
            self.nettype,
            self.addrtype.as_str(),
            self.address
        )
    }
}

/// `o=<username> <sess-id> <sess-version> <nettype> <addrtype> <unicast-address>` (§5.2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    pub username: String,
    /// A numeric string per RFC 8866 §5.2; kept as text, unchecked, because peers use values
    /// beyond 64 bits (and holdfast replaces the peer's `o=` anyway).
    pub sess_id: String,
    pub sess_version: u64,
    pub address: Address,
}

/// `c=<nettype> <addrtype> <connection-address>` (§5.7); `suffix` is the multicast
/// `/ttl[/count]` text after the address, kept verbatim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Connection {
    pub address: Address,
    pub suffix: Option<String>,
}

/// `m=<media> <port>[/<numports>] <proto> <fmt> ...` (§5.14).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaDesc {
    pub media: String,
    pub port: u16,
    pub num_ports: Option<u16>,
    pub proto: String,
    pub fmts: Vec<String>,
}

/// `a=rtpmap:<payload type> <encoding name>/<clock rate>[/<encoding parameters>]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rtpmap {
    pub payload_type: u8,
    pub encoding: String,
    pub clock_rate_hz: u32,
    pub params: Option<String>,
}

/// `a=rtcp:<port> [<nettype> <addrtype> <address>]` (RFC 3605 §2.1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RtcpAttr {
    pub port: u16,
    pub address: Option<Address>,
}

/// Media direction (RFC 8866 §6.7, RFC 3264 §5.1/§6.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }
    fn parse(s: &str) -> Option<Self> {
        match s {
            "sendrecv" => Some(Direction::SendRecv),
            "sendonly" => Some(Direction::SendOnly),
            "recvonly" => Some(Direction::RecvOnly),
            "inactive" => Some(Direction::Inactive),
            _ => None,
        }
    }
    /// The direction an answerer uses for a stream offered with `offer` (RFC 3264 §6.1): a
    /// sendonly offer is answered recvonly (never sendrecv), recvonly with sendonly, inactive
    /// with inactive, and sendrecv with sendrecv.
    pub fn answer_to(offer: Direction) -> Direction {
        match offer {
            Direction::SendRecv => Direction::SendRecv,
            Direction::SendOnly => Direction::RecvOnly,
            Direction::RecvOnly => Direction::SendOnly,
            Direction::Inactive => Direction::Inactive,
        }
    }
}

/// An `a=` line; the modelled ones plus everything else verbatim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Attribute {
    Rtpmap(Rtpmap),
    Fmtp {
        payload_type: u8,
        params: String,
    },
    Ptime(Duration),
    MaxPtime(Duration),
    Direction(Direction),
    Rtcp(RtcpAttr),
    RtcpMux,
    /// `a=<name>[:<value>]` not modelled (or a modelled one that did not parse).
    Other {
        name: String,
        value: Option<String>,
    },
}

impl Attribute {
    /// The attribute name (`rtpmap`, `sendrecv`, `candidate`, ...).
    pub fn name(&self) -> &str {
        match self {
            Attribute::Rtpmap(_) => "rtpmap",
            Attribute::Fmtp { .. } => "fmtp",
            Attribute::Ptime(_) => "ptime",
            Attribute::MaxPtime(_) => "maxptime",
            Attribute::Direction(d) => d.as_str(),
            Attribute::Rtcp(_) => "rtcp",
            Attribute::RtcpMux => "rtcp-mux",
            Attribute::Other { name, .. } => name,
        }
    }
}

/// One SDP line other than `m=`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Field {
    /// `v=0`
    Version,
    Origin(Origin),
    /// `s=` (kept as text, may be empty as many stacks send it).
    SessionName(String),
    Connection(Connection),
    /// `t=<start-time> <stop-time>` (NTP seconds).
    Timing {
        start: u64,
        stop: u64,
    },
    Attribute(Attribute),
    /// Any other line (`i=`, `b=`, `r=`, `z=`, `k=`, `u=`, `e=`, `p=`, blank ...), whole text.
    Other(String),
}

/// One line: its typed value, the text as received (used when the value is unchanged, which
/// keeps round trips byte-identical) and its terminator (`None`: the document's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Line {
    pub field: Field,
    raw: String,
    eol: Option<Eol>,
}

impl Line {
    /// A new line, written canonically with the document's line terminator.
    pub fn new(field: Field) -> Self {
        Line {
            field,
            raw: String::new(),
            eol: None,
        }
    }
    fn text(&self, in_media: bool) -> String {
        match parse_field(&self.raw, in_media) {
            Ok(f) if f == self.field && !self.raw.is_empty() => self.raw.clone(),
            _ => canonical_field(&self.field),
        }
    }
}

/// One media description: the `m=` line and the lines after it up to the next `m=`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Media {
    pub desc: MediaDesc,
    raw: String,
    eol: Option<Eol>,
    pub lines: Vec<Line>,
}

impl Media {
    /// A new media description with no lines.
    pub fn new(desc: MediaDesc) -> Self {
        Media {
            desc,
            raw: String::new(),
            eol: None,
            lines: Vec::new(),
        }
    }
    /// The media-level `c=` (the first one).
    pub fn connection(&self) -> Option<&Connection> {
        self.lines.iter().find_map(|l| match &l.field {
            Field::Connection(c) => Some(c),
            _ => None,
        })
    }
    /// The media-level attributes in order.
    pub fn attributes(&self) -> impl Iterator<Item = &Attribute> {
        attrs(&self.lines)
    }
    /// The media-level direction attribute, if any.
    pub fn direction(&self) -> Option<Direction> {
        direction_of(&self.lines)
    }
    fn m_text(&self) -> String {
        match parse_media(self.raw.get(2..).unwrap_or("")) {
            Ok(d) if d == self.desc && self.raw.starts_with("m=") => self.raw.clone(),
            _ => format!("m={}", canonical_media(&self.desc)),
        }
    }
}

/// An owned, editable session description.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sdp {
    /// Session-level lines in order, starting with `v=`.
    pub session: Vec<Line>,
    pub media: Vec<Media>,
    /// Terminator for new lines: the first line's as received, CRLF otherwise.
    eol: Eol,
}

impl Sdp {
    /// The line terminator new or edited-in lines get.
    pub fn line_ending(&self) -> Eol {
        self.eol
    }
}

fn attrs(lines: &[Line]) -> impl Iterator<Item = &Attribute> {
    lines.iter().filter_map(|l| match &l.field {
        Field::Attribute(a) => Some(a),
        _ => None,
    })
}

fn direction_of(lines: &[Line]) -> Option<Direction> {
    attrs(lines).find_map(|a| match a {
        Attribute::Direction(d) => Some(*d),
        _ => None,
    })
}

// ---------------------------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------------------------

fn parse_u16(s: &str, field: char, why: &'static str) -> Result<u16, SdpErrorKind> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad(field, why));
    }
    s.parse().map_err(|_| bad(field, why))
}

fn parse_u64(s: &str, field: char, why: &'static str) -> Result<u64, SdpErrorKind> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad(field, why));
    }
    s.parse().map_err(|_| bad(field, why))
}

fn parse_address(
    nettype: &str,
    addrtype: &str,
    address: &str,
    field: char,
) -> Result<Address, SdpErrorKind> {
    if nettype.is_empty() || address.is_empty() {
        return Err(bad(field, "empty nettype or address"));
    }
    Ok(Address {
        nettype: nettype.to_string(),
        addrtype: AddrType::parse(addrtype, field)?,
        address: address.to_string(),
    })
}

fn parse_origin(v: &str) -> Result<Origin, SdpErrorKind> {
    let t: Vec<&str> = v.split_ascii_whitespace().collect();
    let [user, id, ver, net, at, addr] = t.as_slice() else {
        return Err(bad('o', "expected 6 fields"));
    };
    Ok(Origin {
        username: user.to_string(),
        sess_id: id.to_string(),
        sess_version: parse_u64(ver, 'o', "sess-version is not a number")?,
        address: parse_address(net, at, addr, 'o')?,
    })
}

fn parse_connection(v: &str) -> Result<Connection, SdpErrorKind> {
    let t: Vec<&str> = v.split_ascii_whitespace().collect();
    let [net, at, addr] = t.as_slice() else {
        return Err(bad('c', "expected 3 fields"));
    };
    let (addr, suffix) = match addr.split_once('/') {
        Some((a, s)) => (a, Some(s.to_string())),
        None => (*addr, None),
    };
    Ok(Connection {
        address: parse_address(net, at, addr, 'c')?,
        suffix,
    })
}

fn parse_timing(v: &str) -> Result<Field, SdpErrorKind> {
    let t: Vec<&str> = v.split_ascii_whitespace().collect();
    let [start, stop] = t.as_slice() else {
        return Err(bad('t', "expected 2 fields"));
    };
    Ok(Field::Timing {
        start: parse_u64(start, 't', "start time is not a number")?,
        stop: parse_u64(stop, 't', "stop time is not a number")?,
    })
}

fn parse_media(v: &str) -> Result<MediaDesc, SdpErrorKind> {
    let mut t = v.split_ascii_whitespace();
    let (Some(media), Some(port), Some(proto)) = (t.next(), t.next(), t.next()) else {
        return Err(bad('m', "expected `<media> <port> <proto> <fmt> ...`"));
    };
    let fmts: Vec<String> = t.map(str::to_string).collect();
    if fmts.is_empty() {
        return Err(bad('m', "no formats"));
    }
    let (port, num_ports) = match port.split_once('/') {
        Some((p, n)) => (p, Some(parse_u16(n, 'm', "bad number of ports")?)),
        None => (port, None),
    };
    Ok(MediaDesc {
        media: media.to_string(),
        port: parse_u16(port, 'm', "bad port")?,
        num_ports,
        proto: proto.to_string(),
        fmts,
    })
}

fn parse_ms(v: &str) -> Option<Duration> {
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse::<u32>()
        .ok()
        .map(|ms| Duration::from_millis(u64::from(ms)))
}

/// Parses the modelled attributes; `None` means "keep as [`Attribute::Other`]".
fn parse_known_attribute(name: &str, value: Option<&str>) -> Option<Attribute> {
    match (name, value) {
        ("rtpmap", Some(v)) => {
            let (pt, rest) = v.split_once(' ')?;
            let mut parts = rest.trim_start().splitn(3, '/');
            let encoding = parts.next().filter(|e| !e.is_empty())?;
            let clock = parts.next()?;
            if !clock.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            Some(Attribute::Rtpmap(Rtpmap {
                payload_type: pt.parse().ok().filter(|p: &u8| *p <= 127)?,
                encoding: encoding.to_string(),
                clock_rate_hz: clock.parse().ok()?,
                params: parts.next().map(str::to_string),
            }))
        }
        ("fmtp", Some(v)) => {
            let (pt, params) = v.split_once(' ').unwrap_or((v, ""));
            if !pt.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            Some(Attribute::Fmtp {
                payload_type: pt.parse().ok()?,
                params: params.to_string(),
            })
        }
        ("ptime", Some(v)) => parse_ms(v).map(Attribute::Ptime),
        ("maxptime", Some(v)) => parse_ms(v).map(Attribute::MaxPtime),
        ("rtcp", Some(v)) => {
            let t: Vec<&str> = v.split_ascii_whitespace().collect();
            let (port, address) = match t.as_slice() {
                [p] => (p, None),
                [p, n, at, a] => (p, Some(parse_address(n, at, a, 'a').ok()?)),
                _ => return None,
            };
            Some(Attribute::Rtcp(RtcpAttr {
                port: parse_u16(port, 'a', "").ok()?,
                address,
            }))
        }
        ("rtcp-mux", None) => Some(Attribute::RtcpMux),
        (d, None) => Direction::parse(d).map(Attribute::Direction),
        _ => None,
    }
}

fn parse_attribute(v: &str) -> Attribute {
    let (name, value) = match v.split_once(':') {
        Some((n, val)) => (n, Some(val)),
        None => (v, None),
    };
    parse_known_attribute(name, value).unwrap_or_else(|| Attribute::Other {
        name: name.to_string(),
        value: value.map(str::to_string),
    })
}

/// Splits `x=value`; blank lines give `None`.
fn split_type(text: &str) -> Result<Option<(u8, &str)>, SdpErrorKind> {
    if text.trim().is_empty() {
        return Ok(None);
    }
    let b = text.as_bytes();
    match (b.first(), b.get(1)) {
        (Some(t), Some(b'=')) if t.is_ascii_alphabetic() => {
            Ok(Some((*t, text.get(2..).unwrap_or(""))))
        }
        _ => Err(SdpErrorKind::Malformed),
    }
}

/// Parses one non-`m=` line.
fn parse_field(text: &str, in_media: bool) -> Result<Field, SdpErrorKind> {
    let Some((t, v)) = split_type(text)? else {
        return Ok(Field::Other(text.to_string()));
    };
    if in_media && matches!(t, b'v' | b'o' | b's' | b't') {
        return Err(SdpErrorKind::SessionLineInMedia(char::from(t)));
    }
    Ok(match t {
        // Trailing blanks are tolerated: some stacks pad lines.
        b'v' if v.trim_end() == "0" => Field::Version,
        b'v' => {
            return Err(SdpErrorKind::UnsupportedVersion(
                v.chars().take(16).collect(),
            ))
        }
        b'o' => Field::Origin(parse_origin(v)?),
        b's' => Field::SessionName(v.to_string()),
        b'c' => Field::Connection(parse_connection(v)?),
        b't' => parse_timing(v)?,
        b'a' => Field::Attribute(parse_attribute(v)),
        _ => Field::Other(text.to_string()),
    })
}

fn split_lines(s: &str) -> impl Iterator<Item = (&str, Eol)> {
    s.split_inclusive('\n').map(|piece| {
        if let Some(t) = piece.strip_suffix("\r\n") {
            (t, Eol::CrLf)
        } else if let Some(t) = piece.strip_suffix('\n') {
            (t, Eol::Lf)
        } else {
            (piece, Eol::Missing)
        }
    })
}

impl Sdp {
    /// Parses a body as received (it must be UTF-8).
    pub fn parse(bytes: &[u8]) -> Result<Sdp, SdpError> {
        match std::str::from_utf8(bytes) {
            Ok(s) => Sdp::parse_str(s),
            Err(e) => {
                let upto = bytes.get(..e.valid_up_to()).unwrap_or(&[]);
                Err(SdpError {
                    line: 1 + upto.iter().filter(|b| **b == b'\n').count(),
                    kind: SdpErrorKind::NotUtf8,
                })
            }
        }
    }

    /// Parses a body already known to be text.
    pub fn parse_str(s: &str) -> Result<Sdp, SdpError> {
        if s.trim().is_empty() {
            return Err(SdpError {
                line: 1,
                kind: SdpErrorKind::Empty,
            });
        }
        let mut sdp = Sdp {
            session: Vec::new(),
            media: Vec::new(),
            eol: Eol::CrLf,
        };
        let mut seen_version = false;
        let mut first = true;
        for (i, (text, eol)) in split_lines(s).enumerate() {
            let err = |kind| SdpError { line: i + 1, kind };
            if first {
                first = false;
                if eol != Eol::Missing {
                    sdp.eol = eol;
                }
            }
            if !seen_version {
                if text.trim().is_empty() {
                    return Err(err(SdpErrorKind::MissingVersion));
                }
                match parse_field(text, false).map_err(err)? {
                    Field::Version => seen_version = true,
                    _ => return Err(err(SdpErrorKind::MissingVersion)),
                }
            }
            if text.starts_with("m=") {
                let desc = parse_media(text.get(2..).unwrap_or("")).map_err(err)?;
                sdp.media.push(Media {
                    desc,
                    raw: text.to_string(),
                    eol: Some(eol),
                    lines: Vec::new(),
                });
                continue;
            }
            let in_media = !sdp.media.is_empty();
            let field = parse_field(text, in_media).map_err(err)?;
            let line = Line {
                field,
                raw: text.to_string(),
                eol: Some(eol),
            };
            match sdp.media.last_mut() {
                Some(m) => m.lines.push(line),
                None => sdp.session.push(line),
            }
        }
        if sdp.origin().is_none() {
            return Err(SdpError {
                line: 2,
                kind: SdpErrorKind::MissingOrigin,
            });
        }
        Ok(sdp)
    }

    // -----------------------------------------------------------------------------------------
    // Serialization
    // -----------------------------------------------------------------------------------------

    /// The body to send: byte-identical to the input when nothing changed.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.to_string().into_bytes()
    }

    fn write_to(&self, out: &mut String) {
        let mut pending = false;
        let mut put = |out: &mut String, text: &str, eol: Option<Eol>| {
            if pending {
                out.push_str(self.eol.as_str());
            }
            out.push_str(text);
            let eol = eol.unwrap_or(self.eol);
            pending = eol == Eol::Missing;
            out.push_str(eol.as_str());
        };
        for l in &self.session {
            put(out, &l.text(false), l.eol);
        }
        for m in &self.media {
            put(out, &m.m_text(), m.eol);
            for l in &m.lines {
                put(out, &l.text(true), l.eol);
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    // Accessors and edits
    // -----------------------------------------------------------------------------------------

    /// The `o=` line.
    pub fn origin(&self) -> Option<&Origin> {
        self.session.iter().find_map(|l| match &l.field {
            Field::Origin(o) => Some(o),
            _ => None,
        })
    }

    /// Replaces the `o=` line (or adds one after `v=`).
    pub fn set_origin(&mut self, origin: Origin) {
        for l in &mut self.session {
            if let Field::Origin(o) = &mut l.field {
                *o = origin;
                return;
            }
        }
        let at = self
            .session
            .iter()
            .position(|l| l.field == Field::Version)
            .map_or(0, |p| p + 1);
        self.session.insert(at, Line::new(Field::Origin(origin)));
    }

    /// The session-level `c=`.
    pub fn connection(&self) -> Option<&Connection> {
        self.session.iter().find_map(|l| match &l.field {
            Field::Connection(c) => Some(c),
            _ => None,
        })
    }

    /// The `c=` that applies to m-line `m_index`: media level, else session level.
    pub fn effective_connection(&self, m_index: usize) -> Option<&Connection> {
        self.media
            .get(m_index)
            .and_then(Media::connection)
            .or_else(|| self.connection())
    }

    /// The session-level attributes in order.
    pub fn attributes(&self) -> impl Iterator<Item = &Attribute> {
        attrs(&self.session)
    }

    /// The direction of m-line `m_index`: the media-level attribute, else the session-level one,
    /// else sendrecv (RFC 8866 §6.7). Out of range gives the session-level default.
    pub fn direction(&self, m_index: usize) -> Direction {
        self.media
            .get(m_index)
            .and_then(Media::direction)
            .or_else(|| direction_of(&self.session))
            .unwrap_or(Direction::SendRecv)
    }

    /// Sets the direction of m-line `m_index` at media level: the first media-level direction
    /// attribute is replaced (later duplicates removed), or one is appended. Out of range: no-op.
    pub fn set_direction(&mut self, m_index: usize, dir: Direction) {
        let Some(m) = self.media.get_mut(m_index) else {
            return;
        };
        let mut done = false;
        m.lines.retain_mut(|l| match &mut l.field {
            Field::Attribute(Attribute::Direction(d)) => {
                if done {
                    false
                } else {
                    *d = dir;
                    done = true;
                    true
                }
            }
            _ => true,
        });
        if !done {
            m.lines
                .push(Line::new(Field::Attribute(Attribute::Direction(dir))));
        }
    }
}

impl fmt::Display for Sdp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = String::new();
        self.write_to(&mut s);
        f.write_str(&s)
    }
}

impl FromStr for Sdp {
    type Err = SdpError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Sdp::parse_str(s)
    }
}

fn canonical_media(d: &MediaDesc) -> String {
    let mut s = format!("{} {}", d.media, d.port);
    if let Some(n) = d.num_ports {
        let _ = write!(s, "/{n}");
    }
    let _ = write!(s, " {}", d.proto);
    for f in &d.fmts {
        let _ = write!(s, " {f}");
    }
    s
}

fn canonical_field(f: &Field) -> String {
    match f {
        Field::Version => "v=0".into(),
        Field::Origin(o) => format!(
            "o={} {} {} {}",
            o.username, o.sess_id, o.sess_version, o.address
        ),
        Field::SessionName(s) => format!("s={s}"),
        Field::Connection(c) => match &c.suffix {
            Some(sfx) => format!("c={}/{sfx}", c.address),
            None => format!("c={}", c.address),
        },
        Field::Timing { start, stop } => format!("t={start} {stop}"),
        Field::Attribute(a) => format!("a={}", canonical_attribute(a)),
        Field::Other(s) => s.clone(),
    }
}

fn canonical_attribute(a: &Attribute) -> String {
    match a {
        Attribute::Rtpmap(r) => {
            let mut s = format!(
                "rtpmap:{} {}/{}",
                r.payload_type, r.encoding, r.clock_rate_hz
            );
            if let Some(p) = &r.params {
                let _ = write!(s, "/{p}");
            }
            s
        }
        Attribute::Fmtp {
            payload_type,
            params,
        } => format!("fmtp:{payload_type} {params}"),
        Attribute::Ptime(d) => format!("ptime:{}", d.as_millis()),
        Attribute::MaxPtime(d) => format!("maxptime:{}", d.as_millis()),
        Attribute::Direction(d) => d.as_str().into(),
        Attribute::Rtcp(r) => match &r.address {
            Some(a) => format!("rtcp:{} {a}", r.port),
            None => format!("rtcp:{}", r.port),
        },
        Attribute::RtcpMux => "rtcp-mux".into(),
        Attribute::Other { name, value } => match value {
            Some(v) => format!("{name}:{v}"),
            None => name.clone(),
        },
    }
}

// ---------------------------------------------------------------------------------------------
// Anchoring
// ---------------------------------------------------------------------------------------------

/// Where RTCP goes for one m-line on holdfast.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RtcpPorts {
    /// A separate RTCP port (RFC 3605).
    Port(u16),
    /// RTCP on the RTP port (RFC 5761).
    Mux,
}

/// Holdfast's ports for one m-line. Without an `a=rtcp:` line in the SDP being anchored the
/// peer sends RTCP to RTP port + 1 (RFC 3550 §11), and [`anchor`] adds no `a=rtcp:`; so
/// allocate `rtcp: Port(rtp_port + 1)` then, and `Mux` only when the SDP has `a=rtcp-mux`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaPorts {
    pub rtp_port: u16,
    pub rtcp: RtcpPorts,
}

/// What [`anchor`] writes: holdfast's advertised address and, per m-line index, its ports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnchorPlan {
    pub ip: IpAddr,
    pub media: Vec<MediaPorts>,
}

/// ICE attributes removed by [`anchor`]: holdfast's address replaces the peer's candidates
/// (rtpengine's `ICE=remove`), so keeping them would point the far end past holdfast.
pub const ICE_ATTRIBUTES: &[&str] = &[
    "candidate",
    "ice-ufrag",
    "ice-pwd",
    "ice-options",
    "end-of-candidates",
    "remote-candidates",
    "ice-lite",
    "ice-mismatch",
];

fn is_ice(l: &Line) -> bool {
    matches!(&l.field, Field::Attribute(Attribute::Other { name, .. }) if ICE_ATTRIBUTES.contains(&name.as_str()))
}

/// Rewrites `sdp` so that all media flows through holdfast.
///
/// - every `c=` (session and media level) gets `plan.ip` (addrtype from it); a multicast
///   `/ttl/count` suffix is dropped because holdfast's address is unicast;
/// - each m-line port becomes `plan.media[i].rtp_port` and `/numports` is dropped (holdfast
///   allocates one port per stream); a port-0 (disabled) stream stays 0, and an m-line the plan
///   has no entry for is disabled (port 0) because holdfast could not relay it;
/// - an existing `a=rtcp:` becomes holdfast's RTCP port (the RTP port under rtcp-mux) with
///   holdfast's address; none is added; on disabled streams it is removed;
/// - ICE attributes ([`ICE_ATTRIBUTES`]) are removed at both levels;
/// - everything else (`o=` included: see [`OriginState::stamp`]) is kept as it was.
///
/// If neither the session nor a media section had a `c=`, one is added to that media section
/// after its `i=` line(s), so the result always says where to send.
pub fn anchor(sdp: &Sdp, plan: &AnchorPlan) -> Sdp {
    let mut out = sdp.clone();
    let ours = Address::from_ip(plan.ip);
    let rewrite_c = |l: &mut Line| {
        if let Field::Connection(c) = &mut l.field {
            c.address = ours.clone();
            c.suffix = None;
        }
    };
    out.session.retain(|l| !is_ice(l));
    out.session.iter_mut().for_each(rewrite_c);
    let session_c = out.connection().is_some();
    for (i, m) in out.media.iter_mut().enumerate() {
        m.lines.retain(|l| !is_ice(l));
        m.lines.iter_mut().for_each(rewrite_c);
        let ports = plan.media.get(i).filter(|_| m.desc.port != 0);
        m.desc.num_ports = None;
        match ports {
            None => {
                m.desc.port = 0;
                m.lines
                    .retain(|l| !matches!(l.field, Field::Attribute(Attribute::Rtcp(_))));
            }
            Some(p) => {
                m.desc.port = p.rtp_port;
                let rtcp_port = match p.rtcp {
                    RtcpPorts::Port(x) => x,
                    RtcpPorts::Mux => p.rtp_port,
                };
                for l in &mut m.lines {
                    if let Field::Attribute(Attribute::Rtcp(r)) = &mut l.field {
                        r.port = rtcp_port;
                        r.address = Some(ours.clone());
                    }
                }
            }
        }
        if !session_c && m.connection().is_none() {
            let at = m
                .lines
                .iter()
                .take_while(|l| matches!(&l.field, Field::Other(t) if t.starts_with("i=")))
                .count();
            m.lines.insert(
                at,
                Line::new(Field::Connection(Connection {
                    address: ours.clone(),
                    suffix: None,
                })),
            );
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Origin per leg (RFC 3264 §8)
// ---------------------------------------------------------------------------------------------

/// Holdfast's `o=` on one leg: its session id and version, and the last body sent, so that the
/// version increases by exactly one when the content changes and stays when it does not
/// (RFC 3264 §8; a session refresh re-sends the same version).
///
/// LIFECYCLE: `new` (nothing sent; `last_body: None`) → first [`stamp`](Self::stamp) writes
/// `version` as is and records the body → each later `stamp` either keeps `version` (same
/// body: refresh, retransmission, unchanged re-INVITE) or increments it by one (anything else
/// changed, including holdfast's IP). One `OriginState` per leg, for the life of the call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OriginState {
    pub sess_id: u64,
    /// The version of the last SDP stamped (the first stamp uses it as is).
    pub version: u64,
    /// The last body stamped, with the version field zeroed; `None` before the first.
    /// Kept whole (a few hundred bytes) rather than hashed: exact, and stable across builds.
    pub last_body: Option<String>,
}

/// `o=` username holdfast presents on every leg.
pub const ORIGIN_USERNAME: &str = "holdfast";

impl OriginState {
    /// `sess_id` is chosen by the caller (from its seeded source); `version` is the first
    /// version to send.
    pub fn new(sess_id: u64, version: u64) -> Self {
        OriginState {
            sess_id,
            version,
            last_body: None,
        }
    }

    /// Writes holdfast's `o=holdfast <sess_id> <version> IN IP4|IP6 <ip>` into `sdp`, bumping
    /// the version by one if the content differs from the last SDP stamped on this leg.
    /// Returns the version written.
    pub fn stamp(&mut self, sdp: &mut Sdp, ip: IpAddr) -> u64 {
        let mut origin = Origin {
            username: ORIGIN_USERNAME.into(),
            sess_id: self.sess_id.to_string(),
            sess_version: 0,
            address: Address::from_ip(ip),
        };
        sdp.set_origin(origin.clone());
        let body = sdp.to_string();
        match &self.last_body {
            Some(last) if *last == body => {}
            Some(_) => self.version = self.version.wrapping_add(1),
            None => {}
        }
        self.last_body = Some(body);
        origin.sess_version = self.version;
        sdp.set_origin(origin);
        self.version
    }
}

// ---------------------------------------------------------------------------------------------
// Offer/answer
// ---------------------------------------------------------------------------------------------

fn is_hold_address(c: Option<&Connection>) -> bool {
    c.and_then(|c| c.address.ip())
        .is_some_and(|ip| ip.is_unspecified())
}

/// Our answer to a hold/unhold re-offer on a leg, built from the last answer we sent there
/// (RFC 3264 §8.4): same codecs, ports and addresses; per m-line the direction is
/// [`Direction::answer_to`] the offer's (a `c=0.0.0.0` offer, RFC 2543 hold, counts as
/// sendonly); a stream the offer disables (port 0) is answered with port 0, and a stream the
/// offer adds is rejected (port 0) since it needs a real offer/answer through the other leg;
/// the session-level direction attribute is dropped in favour of per-m-line ones. Stamp the result
/// with the leg's [`OriginState`] so the version moves only if the content did.
pub fn answer_hold(last_answer: &Sdp, offer: &Sdp) -> Sdp {
    let mut out = last_answer.clone();
    // Directions are written per m-line, so a session-level one would only be misleading.
    out.session
        .retain(|l| !matches!(l.field, Field::Attribute(Attribute::Direction(_))));
    // RFC 3264 §6: the answer has exactly as many m-lines as the offer. Streams the re-offer
    // adds cannot be answered from the last answer; reject them (port 0, the offer's formats).
    out.media.truncate(offer.media.len());
    for om in offer.media.iter().skip(out.media.len()) {
        out.media.push(Media::new(MediaDesc {
            port: 0,
            num_ports: None,
            ..om.desc.clone()
        }));
    }
    for i in 0..out.media.len() {
        let Some(om) = offer.media.get(i) else {
            break;
        };
        let mut offered = offer.direction(i);
        if offered == Direction::SendRecv && is_hold_address(offer.effective_connection(i)) {
            offered = Direction::SendOnly;
        }
        if om.desc.port == 0 {
            if let Some(m) = out.media.get_mut(i) {
                m.desc.port = 0;
            }
        }
        out.set_direction(i, Direction::answer_to(offered));
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Media info for the relay
// ---------------------------------------------------------------------------------------------

/// One payload type of an m-line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayloadType {
    pub pt: u8,
    /// From `a=rtpmap`, else the RFC 3551 static table; `None` if neither knows it.
    pub encoding: Option<String>,
    pub clock_rate_hz: Option<u32>,
}

/// The telephone-event (RFC 4733) payload type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TelephoneEvent {
    pub pt: u8,
    pub clock_rate_hz: u32,
}

/// What the relay needs to know about one m-line of a peer's SDP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaInfo {
    pub index: usize,
    pub media: String,
    pub proto: String,
    pub port: u16,
    /// Port 0: the stream is disabled/rejected (RFC 3264 §5.1, §6).
    pub disabled: bool,
    /// `c=0.0.0.0` (or `::`): RFC 2543-style hold; do not send to it.
    pub on_hold: bool,
    /// Where to send RTP; `None` when disabled, on hold, or the address is not an IP literal.
    pub rtp_addr: Option<SocketAddr>,
    /// Where to send RTCP: the RTP address under rtcp-mux, else `a=rtcp`, else RTP port + 1.
    pub rtcp_addr: Option<SocketAddr>,
    /// `a=rtcp-mux` present. In an offer this is only a proposal (RFC 5761 §5.1.1): read the
    /// answer's `media_info` to know whether RTCP really shares the RTP port.
    pub rtcp_mux: bool,
    /// Effective direction (media level, else session level, else sendrecv).
    pub direction: Direction,
    pub payload_types: Vec<PayloadType>,
    pub telephone_event: Option<TelephoneEvent>,
    pub ptime: Option<Duration>,
}

/// RFC 3551 §6 static audio payload types holdfast recognizes.
fn static_pt(pt: u8) -> Option<(&'static str, u32)> {
    Some(match pt {
        0 => ("PCMU", 8000),
        3 => ("GSM", 8000),
        4 => ("G723", 8000),
        8 => ("PCMA", 8000),
        9 => ("G722", 8000),
        13 => ("CN", 8000),
        18 => ("G729", 8000),
        _ => return None,
    })
}

impl Sdp {
    /// Per m-line, what the relay needs (see [`MediaInfo`]).
    pub fn media_info(&self) -> Vec<MediaInfo> {
        self.media
            .iter()
            .enumerate()
            .map(|(index, m)| self.one_media_info(index, m))
            .collect()
    }

    fn one_media_info(&self, index: usize, m: &Media) -> MediaInfo {
        let conn = self.effective_connection(index);
        let on_hold = is_hold_address(conn);
        let disabled = m.desc.port == 0;
        let ip = conn.and_then(|c| c.address.ip());
        let rtp_addr = ip
            .filter(|_| !disabled && !on_hold)
            .map(|ip| SocketAddr::new(ip, m.desc.port));
        let rtcp_mux = m.attributes().any(|a| *a == Attribute::RtcpMux);
        let rtcp_attr = m.attributes().find_map(|a| match a {
            Attribute::Rtcp(r) => Some(r),
            _ => None,
        });
        let rtcp_addr = rtp_addr.and_then(|rtp| {
            if rtcp_mux {
                return Some(rtp);
            }
            match rtcp_attr {
                Some(r) => {
                    // `a=rtcp:9 IN IP4 0.0.0.0` (ICE placeholder) says nothing about the
                    // address: fall back to the RTP one.
                    let ip = match &r.address {
                        Some(a) => a.ip()?,
                        None => rtp.ip(),
                    };
                    let ip = if ip.is_unspecified() { rtp.ip() } else { ip };
                    Some(SocketAddr::new(ip, r.port))
                }
                // RFC 3550 §11: RTCP on the next port up.
                None => rtp
                    .port()
                    .checked_add(1)
                    .map(|p| SocketAddr::new(rtp.ip(), p)),
            }
        });
        let rtpmaps: Vec<&Rtpmap> = m
            .attributes()
            .filter_map(|a| match a {
                Attribute::Rtpmap(r) => Some(r),
                _ => None,
            })
            .collect();
        let payload_types: Vec<PayloadType> = m
            .desc
            .fmts
            .iter()
            .filter_map(|f| f.parse::<u8>().ok().filter(|p| *p <= 127))
            .map(|pt| match rtpmaps.iter().find(|r| r.payload_type == pt) {
                Some(r) => PayloadType {
                    pt,
                    encoding: Some(r.encoding.clone()),
                    clock_rate_hz: Some(r.clock_rate_hz),
                },
                None => PayloadType {
                    pt,
                    encoding: static_pt(pt).map(|(e, _)| e.to_string()),
                    clock_rate_hz: static_pt(pt).map(|(_, c)| c),
                },
            })
            .collect();
        let telephone_event =
            payload_types
                .iter()
                .find_map(|p| match (&p.encoding, p.clock_rate_hz) {
                    (Some(e), Some(c)) if e.eq_ignore_ascii_case("telephone-event") => {
                        Some(TelephoneEvent {
                            pt: p.pt,
                            clock_rate_hz: c,
                        })
                    }
                    _ => None,
                });
        let ptime = m
            .attributes()
            .chain(self.attributes())
            .find_map(|a| match a {
                Attribute::Ptime(d) => Some(*d),
                _ => None,
            });
        MediaInfo {
            index,
            media: m.desc.media.clone(),
            proto: m.desc.proto.clone(),
            port: m.desc.port,
            disabled,
            on_hold,
            rtp_addr,
            rtcp_addr,
            rtcp_mux,
            direction: self.direction(index),
            payload_types,
            telephone_event,
            ptime,
        }
    }
}

#[cfg(test)]
mod tests;
