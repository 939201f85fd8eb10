//! Parsers for the small value languages inside the config file: durations (`500ms`, `5s`),
//! listen specs (`udp:127.0.0.1:5060`), source matchers (CIDR, IP, IP:port), SIP status code
//! specs (`503`, `"5xx"`) and target URIs (`sip:user@host:port;transport=udp`).
//!
//! Each returns `Result<_, String>` with a message meant for a human; the caller adds file,
//! line, column and field path. Nothing here touches the network or resolves names.

use std::borrow::Borrow;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;

pub use crate::sip::Transport;

/// Parses a transport name; TLS/WS are not supported yet.
fn parse_transport(s: &str) -> Result<Transport, String> {
    match s.to_ascii_lowercase().as_str() {
        "udp" => Ok(Transport::Udp),
        "tcp" => Ok(Transport::Tcp),
        "tls" | "ws" | "wss" | "sctp" => Err(format!(
            "transport `{s}` is not supported yet (only udp and tcp)"
        )),
        _ => Err(format!("unknown transport `{s}` (expected udp or tcp)")),
    }
}

/// Parses `500ms`, `5s`, `2m`, `1h`, or a sum such as `1m30s`. Units are required.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let text = s.trim();
    let hint = "expected a duration with a unit, e.g. 500ms, 5s, 2m or 1h";
    if text.is_empty() {
        return Err(format!("{hint}; got an empty value"));
    }
    if text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{hint}; `{text}` has no unit"));
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(format!("{hint}; got `{text}`"));
        }
        let number: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("{hint}; `{text}` is too large"))?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(|b| b.is_ascii_alphabetic()).count();
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let part = match unit {
            "ms" => Duration::from_millis(number),
            "s" => Duration::from_secs(number),
            "m" => Duration::from_secs(number.saturating_mul(60)),
            "h" => Duration::from_secs(number.saturating_mul(3600)),
            "" => return Err(format!("{hint}; `{text}` has a number without a unit")),
            other => {
                return Err(format!(
                    "{hint}; unknown unit `{other}` in `{text}` (use ms, s, m or h)"
                ))
            }
        };
        total = total
            .checked_add(part)
            .ok_or_else(|| format!("{hint}; `{text}` is too large"))?;
    }
    Ok(total)
}

/// Renders a duration the way the config file writes it (`500ms`, `5s`, `2m`, `1h`).
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        "0s".to_owned()
    } else if ms % 3_600_000 == 0 {
        format!("{}h", ms / 3_600_000)
    } else if ms % 60_000 == 0 {
        format!("{}m", ms / 60_000)
    } else if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// One SIP listening socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Listen {
    pub transport: Transport,
    pub addr: SocketAddr,
}

impl fmt::Display for Listen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.transport, self.addr)
    }
}

/// Parses `udp:127.0.0.1:5060` / `tcp:[::1]:5060`.
pub fn parse_listen(s: &str) -> Result<Listen, String> {
    let hint = "expected \"udp:IP:PORT\" or \"tcp:IP:PORT\" (IPv6 as \"udp:[::1]:5060\")";
    let (transport, addr) = s
        .trim()
        .split_once(':')
        .ok_or_else(|| format!("{hint}; got `{s}`"))?;
    let transport = parse_transport(transport)?;
    let addr: SocketAddr = addr
        .parse()
        .map_err(|_| format!("{hint}; `{addr}` is not an IP:PORT"))?;
    if addr.port() == 0 {
        return Err(format!("{hint}; port 0 is not allowed"));
    }
    Ok(Listen { transport, addr })
}

/// Parses a DNS server address: `IP` (port 53) or `IP:PORT`.
pub fn parse_nameserver(s: &str) -> Result<SocketAddr, String> {
    let t = s.trim();
    if let Ok(sa) = t.parse::<SocketAddr>() {
        return Ok(sa);
    }
    if let Ok(ip) = t.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, 53));
    }
    Err(format!(
        "expected a name server as IP or IP:PORT (IPv6 as \"[::1]:53\"); got `{s}`"
    ))
}

/// Where a target's inbound requests come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Source {
    /// A network (a bare IP is stored as a /32 or /128).
    Net(IpNet),
    /// One exact IP and port.
    Addr(SocketAddr),
}

impl Source {
    /// Whether a packet from `src` matches. `src` should be canonical (no v4-mapped v6).
    pub fn matches(&self, src: SocketAddr) -> bool {
        match self {
            Source::Net(net) => net.contains(&src.ip()),
            Source::Addr(a) => *a == src,
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Net(n) if n.prefix_len() == n.max_prefix_len() => write!(f, "{}", n.addr()),
            Source::Net(n) => write!(f, "{n}"),
            Source::Addr(a) => write!(f, "{a}"),
        }
    }
}

/// Parses a CIDR (`192.0.2.0/24`), an IP (`192.0.2.7`) or an IP:port (`127.0.0.1:5091`).
pub fn parse_source(s: &str) -> Result<Source, String> {
    let t = s.trim();
    let hint = "expected a CIDR (192.0.2.0/24), an IP (192.0.2.7) or IP:PORT (127.0.0.1:5091)";
    if t.contains('/') {
        let net: IpNet = t
            .parse()
            .map_err(|_| format!("{hint}; `{t}` is not a valid CIDR"))?;
        let net_canon = match net {
            IpNet::V6(v6) => match v6.addr().to_ipv4_mapped() {
                Some(v4) if v6.prefix_len() >= 96 => {
                    IpNet::new(IpAddr::V4(v4), v6.prefix_len() - 96)
                        .map_err(|_| format!("{hint}; `{t}` is not a valid CIDR"))?
                }
                _ => net,
            },
            IpNet::V4(_) => net,
        };
        if net_canon.trunc() != net_canon {
            return Err(format!(
                "`{t}` has host bits set; did you mean {}?",
                net_canon.trunc()
            ));
        }
        return Ok(Source::Net(net_canon));
    }
    if let Ok(sa) = t.parse::<SocketAddr>() {
        return Ok(Source::Addr(SocketAddr::new(
            sa.ip().to_canonical(),
            sa.port(),
        )));
    }
    if let Ok(ip) = t.parse::<IpAddr>() {
        let ip = ip.to_canonical();
        let len = if ip.is_ipv4() { 32 } else { 128 };
        return IpNet::new(ip, len)
            .map(Source::Net)
            .map_err(|_| format!("{hint}; got `{t}`"));
    }
    Err(format!("{hint}; got `{t}`"))
}

/// One entry of a status-code list: an exact code (`503`) or a class (`"5xx"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CodeSpec {
    Exact(u16),
    /// The hundreds digit: `5` for `5xx`.
    Class(u8),
}

impl CodeSpec {
    pub fn matches(self, status: u16) -> bool {
        match self {
            CodeSpec::Exact(c) => c == status,
            CodeSpec::Class(c) => status / 100 == u16::from(c),
        }
    }
}

impl fmt::Display for CodeSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CodeSpec::Exact(c) => write!(f, "{c}"),
            CodeSpec::Class(c) => write!(f, "{c}xx"),
        }
    }
}

/// Parses `503` or `"5xx"`; `min_class` is the lowest allowed hundreds digit.
pub fn parse_code_spec(s: &str, min_class: u8) -> Result<CodeSpec, String> {
    let t = s.trim();
    let hint = format!("expected a SIP status code {min_class}00..=699 or a class like \"5xx\"");
    let lower = t.to_ascii_lowercase();
    if lower.len() == 3 && lower.ends_with("xx") {
        let d = lower.as_bytes()[0];
        if d.is_ascii_digit() {
            let c = d - b'0';
            if (min_class..=6).contains(&c) {
                return Ok(CodeSpec::Class(c));
            }
        }
        return Err(format!("{hint}; got `{t}`"));
    }
    match t.parse::<u16>() {
        Ok(c) if (u16::from(min_class) * 100..=699).contains(&c) => Ok(CodeSpec::Exact(c)),
        _ => Err(format!("{hint}; got `{t}`")),
    }
}

/// The parts of a target's `sip:` URI that holdfast needs to reach it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TargetUri {
    /// Host name or IP literal (IPv6 without brackets).
    pub host: String,
    pub port: Option<u16>,
    /// The `transport=` URI parameter (RFC 3261 §19.1.1), if given.
    pub transport: Option<Transport>,
    /// The user part, if any (e.g. `agent` in `sip:agent@10.1.0.5`).
    pub user: Option<String>,
    /// Whether `host` is an IP literal (no DNS lookup; RFC 3263 §4.2 applies otherwise).
    pub is_ip: bool,
}

impl TargetUri {
    /// `host[:port]` as a URI writes it (an IPv6 literal bracketed).
    pub fn host_port(&self) -> crate::sip::HostPort<'_> {
        crate::sip::host_port(&self.host, self.port)
    }
}

impl fmt::Display for TargetUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("sip:")?;
        if let Some(user) = &self.user {
            write!(f, "{user}@")?;
        }
        write!(f, "{}", self.host_port())?;
        if let Some(t) = self.transport {
            write!(f, ";transport={t}")?;
        }
        Ok(())
    }
}

fn valid_hostname(h: &str) -> bool {
    // RFC 3261 §25.1 hostname: labels of alphanumerics and '-', separated by '.'.
    !h.is_empty()
        && h.len() <= 253
        && h.split('.').enumerate().all(|(i, label)| {
            // A single trailing dot (FQDN) is allowed.
            (label.is_empty() && i > 0 && h.ends_with('.'))
                || (!label.is_empty()
                    && label.len() <= 63
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-'))
        })
}

/// Splits `host[:port]` (IPv6 in brackets) and checks both; `hint` starts every error.
/// Returns the host (IPv6 without brackets), the port if given, and whether the host is an
/// IP literal.
fn split_host_port(hostport: &str, hint: &str) -> Result<(String, Option<u16>, bool), String> {
    let (host, port_text) = if let Some(after) = hostport.strip_prefix('[') {
        let (h, tail) = after
            .split_once(']')
            .ok_or_else(|| format!("{hint}; unclosed `[` in `{hostport}`"))?;
        if h.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("{hint}; `{h}` is not an IPv6 address"));
        }
        let port = match tail {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or_else(|| format!("{hint}; junk `{p}` after `]`"))?,
            ),
        };
        (h.to_owned(), port)
    } else {
        match hostport.split_once(':') {
            Some((h, p)) => (h.to_owned(), Some(p)),
            None => (hostport.to_owned(), None),
        }
    };
    let port = match port_text {
        None => None,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 => Some(n),
            _ => return Err(format!("{hint}; bad port `{p}`")),
        },
    };
    let is_ip = host.parse::<IpAddr>().is_ok();
    if !is_ip && !valid_hostname(&host) {
        return Err(format!("{hint}; `{host}` is not a valid host name or IP"));
    }
    Ok((host, port, is_ip))
}

/// Parses a WebSocket URL (`ws://` or `wss://`, RFC 6455 §3) into the address part that
/// DNS and health work on: host, explicit port (80/443 by default), TCP. The path and query
/// stay in the URL, which the AI shell uses for the handshake.
pub fn parse_ws_url(s: &str) -> Result<TargetUri, String> {
    let t = s.trim();
    let hint = "expected a WebSocket URL like \"wss://bot.example.com/stream\"";
    let lower = t.to_ascii_lowercase();
    let (rest, default_port) = if let Some(r) = lower.strip_prefix("ws://") {
        (&t[t.len() - r.len()..], 80)
    } else if let Some(r) = lower.strip_prefix("wss://") {
        (&t[t.len() - r.len()..], 443)
    } else {
        return Err(format!("{hint}; `{t}` does not start with ws:// or wss://"));
    };
    if t.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("{hint}; `{t}` contains whitespace"));
    }
    if rest.contains('#') {
        return Err(format!(
            "{hint}; fragments (`#...`) are not allowed (RFC 6455 §3)"
        ));
    }
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    if authority.contains('@') {
        return Err(format!(
            "{hint}; credentials in the URL are not allowed (use headers or api_key_env)"
        ));
    }
    let (host, port, is_ip) = split_host_port(authority, hint)?;
    let port = port.unwrap_or(default_port);
    Ok(TargetUri {
        host,
        port: Some(port),
        transport: Some(Transport::Tcp),
        user: None,
        is_ip,
    })
}

/// Parses a minimal SIP URI: `sip:[user@]host[:port][;params]` (RFC 3261 §19.1.1).
pub fn parse_target_uri(s: &str) -> Result<TargetUri, String> {
    let t = s.trim();
    let hint = "expected a SIP URI like \"sip:host:5060;transport=udp\"";
    let lower = t.to_ascii_lowercase();
    let rest = if lower.starts_with("sip:") {
        &t[4..]
    } else if lower.starts_with("sips:") {
        return Err("sips: URIs need TLS, which is not supported yet (use sip:)".to_owned());
    } else {
        return Err(format!("{hint}; `{t}` does not start with sip:"));
    };
    if rest.contains('?') {
        return Err(format!("{hint}; URI headers (`?...`) are not allowed here"));
    }
    let (hostport_user, params) = match rest.split_once(';') {
        Some((a, b)) => (a, Some(b)),
        None => (rest, None),
    };
    let (user, hostport) = match hostport_user.rsplit_once('@') {
        Some((u, h)) => {
            if u.is_empty() || u.bytes().any(|b| b.is_ascii_whitespace() || b == b':') {
                return Err(format!("{hint}; bad user part `{u}`"));
            }
            (Some(u.to_owned()), h)
        }
        None => (None, hostport_user),
    };
    let (host, port, is_ip) = split_host_port(hostport, hint)?;
    let mut transport = None;
    for param in params.into_iter().flat_map(|p| p.split(';')) {
        let (name, value) = param.split_once('=').unwrap_or((param, ""));
        if name.eq_ignore_ascii_case("transport") {
            transport = Some(parse_transport(value)?);
        }
    }
    Ok(TargetUri {
        host,
        port,
        transport,
        user,
        is_ip,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert!(parse_duration("5").unwrap_err().contains("no unit"));
        assert!(parse_duration("5 s").is_err());
        assert!(parse_duration("5sec").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("1.5s").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("-5s").is_err());
        assert!(parse_duration("99999999999999999999s").is_err());
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(format_duration(Duration::from_secs(120)), "2m");
        assert_eq!(format_duration(Duration::from_secs(1800)), "30m");
    }

    #[test]
    fn listens() {
        let l = parse_listen("udp:127.0.0.1:5060").unwrap();
        assert_eq!(l.transport, Transport::Udp);
        assert_eq!(l.addr, "127.0.0.1:5060".parse().unwrap());
        let l = parse_listen("TCP:[::1]:5070").unwrap();
        assert_eq!(l.transport, Transport::Tcp);
        assert_eq!(l.to_string(), "tcp:[::1]:5070");
        assert!(parse_listen("127.0.0.1:5060").is_err());
        assert!(parse_listen("tls:127.0.0.1:5061")
            .unwrap_err()
            .contains("not supported yet"));
        assert!(parse_listen("udp:127.0.0.1").is_err());
    }

    #[test]
    fn sources() {
        assert_eq!(
            parse_source("192.0.2.0/24").unwrap(),
            Source::Net("192.0.2.0/24".parse().unwrap())
        );
        assert_eq!(
            parse_source("192.0.2.7").unwrap(),
            Source::Net("192.0.2.7/32".parse().unwrap())
        );
        assert_eq!(
            parse_source("127.0.0.1:5091").unwrap(),
            Source::Addr("127.0.0.1:5091".parse().unwrap())
        );
        assert!(parse_source("192.0.2.1/24")
            .unwrap_err()
            .contains("host bits"));
        assert!(parse_source("192.0.2.0/33").is_err());
        assert!(parse_source("example.com").is_err());
        assert!(matches!(parse_source("2001:db8::/32"), Ok(Source::Net(_))));
    }

    #[test]
    fn code_specs() {
        assert_eq!(parse_code_spec("503", 3), Ok(CodeSpec::Exact(503)));
        assert_eq!(parse_code_spec("5xx", 3), Ok(CodeSpec::Class(5)));
        assert_eq!(parse_code_spec("6XX", 3), Ok(CodeSpec::Class(6)));
        assert!(parse_code_spec("2xx", 3).is_err());
        assert!(parse_code_spec("200", 3).is_err());
        assert!(parse_code_spec("700", 3).is_err());
        assert!(CodeSpec::Class(5).matches(599));
        assert!(!CodeSpec::Class(5).matches(603));
    }

    #[test]
    fn target_uris() {
        let u = parse_target_uri("sip:sip.telnyx.com;transport=udp").unwrap();
        assert_eq!(u.host, "sip.telnyx.com");
        assert_eq!(u.port, None);
        assert_eq!(u.transport, Some(Transport::Udp));
        assert!(!u.is_ip);
        let u = parse_target_uri("sip:agent@10.1.0.5:5080").unwrap();
        assert_eq!(u.user.as_deref(), Some("agent"));
        assert_eq!(u.host, "10.1.0.5");
        assert_eq!(u.port, Some(5080));
        assert!(u.is_ip);
        assert_eq!(u.to_string(), "sip:agent@10.1.0.5:5080");
        let u = parse_target_uri("sip:[2001:db8::1]:5062;transport=TCP;lr").unwrap();
        assert_eq!(u.host, "2001:db8::1");
        assert_eq!(u.port, Some(5062));
        assert_eq!(u.transport, Some(Transport::Tcp));
        assert!(parse_target_uri("http://x").is_err());
        assert!(parse_target_uri("sips:x.example").is_err());
        assert!(parse_target_uri("sip:bad host").is_err());
        assert!(parse_target_uri("sip:host:99999").is_err());
        assert!(parse_target_uri("sip:[zz]:5060").is_err());
    }
}

/// The id of a carrier or AI provider, as written in the config. Cheap to clone.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TargetId(Arc<str>);

impl TargetId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Deref for TargetId {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for TargetId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl From<&str> for TargetId {
    fn from(s: &str) -> Self {
        TargetId(Arc::from(s))
    }
}

impl From<String> for TargetId {
    fn from(s: String) -> Self {
        TargetId(Arc::from(s))
    }
}

impl fmt::Display for TargetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
