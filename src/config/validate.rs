//! Validation: turns the raw serde view of the file into a checked [`Config`].
//!
//! Every rule that the type system cannot express lives here: value ranges, duration units,
//! unique ids, references from routes to targets, regions, source matchers. Errors carry the
//! field path; the position comes from the document's [`PathIndex`]. Stops at the first error
//! (in file order of sections), so the user fixes one thing at a time with a precise pointer.
//! Never does I/O.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use super::raw::{
    HeaderMap, OneOrList, RawAdmin, RawAi, RawAiProvider, RawCarrier, RawConfig, RawDns, RawHealth,
    RawLimits, RawMedia, RawRate, RawRecords, RawRoutes, RawRouting, RawSip, Scalar,
};
use super::tree::{join_index, join_key, EntryKind, PathIndex, Pos};
use super::values::{
    parse_code_spec, parse_duration, parse_listen, parse_nameserver, parse_source,
    parse_target_uri, parse_ws_url, CodeSpec, Listen, Source, Transport,
};
use super::{AdminSettings, AiSettings, Liveness, NoProvider, RecordsSettings, WebhookSettings};
use super::{
    AllDownPolicy, BreakerSettings, Config, ConfigError, Direction, DnsSettings, FailoverPolicy,
    HealthSettings, IpFamily, MediaAddr, MediaAddrs, MediaIo, MediaSettings, RateLimit, Role,
    RouteRule, Routes, RoutingSettings, SipLimits, SipSettings, Target, TargetId, UnknownSources,
};
use crate::ai::control::{AiKind, RealtimeSettings, Secret, WsProvider};
use crate::media::filler::{load_wav, AfterPrompt, GapAudio};
use crate::media::relay::{Latching, DEFAULT_LEARNING_WINDOW};
use crate::sip::uri::dialed_number;
use std::sync::Arc;

type Result<T> = std::result::Result<T, ConfigError>;

/// The OpenAI Realtime endpoint when an `openai-realtime` provider names no `url`.
const DEFAULT_OPENAI_URL: &str = "wss://api.openai.com/v1/realtime?model=gpt-realtime";
/// The caller's words are transcribed (for the transcript a re-route replays) with this
/// model unless `realtime.input_transcription` says otherwise.
const DEFAULT_TRANSCRIPTION_MODEL: &str = "gpt-4o-mini-transcribe";
/// Connect, TLS, WebSocket handshake and (OpenAI) `session.updated` of a WebSocket provider.
const DEFAULT_WS_SETUP_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest `media.learning_window`: a NATed peer's first audio is dropped for that long.
const MAX_LEARNING_WINDOW: Duration = Duration::from_secs(10);

fn scalar_text(v: &Scalar) -> String {
    match v {
        Scalar::Str(s) => s.clone(),
        Scalar::Int(i) => i.to_string(),
        Scalar::Float(x) => x.to_string(),
        Scalar::Bool(b) => b.to_string(),
        Scalar::Null => String::new(),
    }
}

/// Parse + validate; the entry point behind [`super::parse`].
pub(crate) fn parse(text: &str, file_name: &str) -> Result<Config> {
    let index = PathIndex::build(text).map_err(|e| syntax_error(&e, file_name))?;
    let options = serde_saphyr::options! { with_snippet: false };
    // An empty file (or only comments) is a document with every default.
    let raw: RawConfig = if index.is_empty_document() {
        RawConfig::default()
    } else {
        serde_saphyr::from_str_with_options(text, options)
            .map_err(|e| deserialize_error(&e, &index, file_name))?
    };
    Validator {
        file: file_name,
        index: &index,
    }
    .config(raw, file_name)
}

/// serde-saphyr's messages end in " at line L, column C"; we print the position ourselves.
fn strip_position(message: &str) -> String {
    let mut m = message.trim();
    if let Some(cut) = m.rfind(" at line ") {
        let tail = &m[cut + " at line ".len()..];
        if tail
            .bytes()
            .all(|b| b.is_ascii_digit() || b == b',' || b == b' ' || b.is_ascii_lowercase())
        {
            m = &m[..cut];
        }
    }
    // Syntax errors may start with "line L column C: ".
    if let Some(rest) = m.strip_prefix("error: ") {
        m = rest;
    }
    if m.starts_with("line ") {
        if let Some((_, rest)) = m.split_once(": ") {
            m = rest;
        }
    }
    m.lines().next().unwrap_or(m).trim().to_owned()
}

fn position(e: &serde_saphyr::Error) -> Pos {
    e.location()
        .map(|l| Pos {
            line: u32::try_from(l.line()).unwrap_or(u32::MAX).max(1),
            column: u32::try_from(l.column()).unwrap_or(u32::MAX).max(1),
        })
        .unwrap_or(Pos { line: 1, column: 1 })
}

fn syntax_error(e: &serde_saphyr::Error, file: &str) -> ConfigError {
    let pos = position(e);
    ConfigError {
        file: file.to_owned(),
        line: pos.line,
        column: pos.column,
        path: String::new(),
        message: format!("invalid YAML: {}", strip_position(&e.to_string())),
    }
}

fn deserialize_error(e: &serde_saphyr::Error, index: &PathIndex, file: &str) -> ConfigError {
    let pos = position(e);
    let inner = match e {
        serde_saphyr::Error::WithSnippet { error, .. } => error.as_ref(),
        other => other,
    };
    let (path, message) = match inner {
        serde_saphyr::Error::SerdeUnknownField {
            field, expected, ..
        } => (
            index.path_at(pos, EntryKind::Key),
            format!(
                "unknown key `{field}` (expected one of: {})",
                expected.join(", ")
            ),
        ),
        serde_saphyr::Error::SerdeMissingField { field, .. } => (
            join_key(&index.path_at(pos, EntryKind::Map), field),
            "required key is missing".to_owned(),
        ),
        serde_saphyr::Error::DuplicateMappingKey { .. } => (
            index.path_at(pos, EntryKind::Key),
            "key appears twice in the same mapping".to_owned(),
        ),
        other => (
            index.path_at(pos, EntryKind::Scalar),
            strip_position(&other.to_string()),
        ),
    };
    // A missing key is best shown at the start of the mapping that lacks it; other errors
    // where the parser stopped.
    let pos = match inner {
        serde_saphyr::Error::SerdeMissingField { .. } => index.locate(&path),
        _ => pos,
    };
    ConfigError {
        file: file.to_owned(),
        line: pos.line,
        column: pos.column,
        path,
        message,
    }
}

struct Validator<'a> {
    file: &'a str,
    index: &'a PathIndex,
}

/// What validation knows about a target while checking routes.
struct TargetRef {
    role: Role,
    region: String,
}

const DEFAULT_LISTEN: Listen = Listen {
    transport: Transport::Udp,
    addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 5060),
};

/// `sip.limits.per_source`: each unknown source that gets answers at all.
const DEFAULT_PER_SOURCE: RateLimit = RateLimit {
    rate: 10,
    burst: 20,
};
/// `sip.limits.known_sources`: each carrier or provider address; a trunk that sends
/// 1500 calls per second from one address stays inside it with room to spare.
const DEFAULT_KNOWN_SOURCES: RateLimit = RateLimit {
    rate: 2000,
    burst: 4000,
};
/// `sip.scanners`: User-Agents of SIP scanners and war-dialers seen on the internet.
const DEFAULT_SCANNERS: &[&str] = &[
    "friendly-scanner",
    "sipvicious",
    "sipcli",
    "VaxSIPUserAgent",
    "sundayddr",
    "iWar",
    "sip-scan",
    "SIPScan",
    "Ozeki",
    "pplsip",
];

/// Headers holdfast itself owns on the legs it builds; a config may not override them.
const RESERVED_HEADERS: &[&str] = &[
    "via",
    "v",
    "from",
    "f",
    "to",
    "t",
    "call-id",
    "i",
    "cseq",
    "contact",
    "m",
    "content-length",
    "l",
    "content-type",
    "c",
    "max-forwards",
    "record-route",
    "route",
    "session-expires",
    "x",
    "min-se",
];

fn is_token(s: &str) -> bool {
    // RFC 3261 §25.1 token characters.
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b))
}

impl Validator<'_> {
    fn err(&self, path: &str, message: impl Into<String>) -> ConfigError {
        let pos = self.index.locate(path);
        ConfigError {
            file: self.file.to_owned(),
            line: pos.line,
            column: pos.column,
            path: path.to_owned(),
            message: message.into(),
        }
    }

    fn duration(&self, v: &Option<Scalar>, path: &str, default: Duration) -> Result<Duration> {
        match v {
            None | Some(Scalar::Null) => Ok(default),
            Some(Scalar::Str(s)) => parse_duration(s).map_err(|m| self.err(path, m)),
            Some(Scalar::Int(i)) => Err(self.err(
                path,
                format!(
                    "expected a duration with a unit, e.g. 500ms, 5s, 2m or 1h; `{i}` has no unit"
                ),
            )),
            Some(other) => Err(self.err(
                path,
                format!("expected a duration with a unit, e.g. 500ms, 5s, 2m or 1h; got {other}"),
            )),
        }
    }

    fn positive_duration(
        &self,
        v: &Option<Scalar>,
        path: &str,
        default: Duration,
    ) -> Result<Duration> {
        let d = self.duration(v, path, default)?;
        if d.is_zero() {
            return Err(self.err(path, "must be greater than zero"));
        }
        Ok(d)
    }

    fn int(&self, v: &Option<Scalar>, path: &str, min: i128, max: i128) -> Result<Option<i128>> {
        match v {
            None | Some(Scalar::Null) => Ok(None),
            Some(Scalar::Int(i)) if (min..=max).contains(i) => Ok(Some(*i)),
            Some(other) => Err(self.err(
                path,
                format!("expected an integer {min}..={max}; got {other}"),
            )),
        }
    }

    fn int_or<T: TryFrom<i128>>(
        &self,
        v: &Option<Scalar>,
        path: &str,
        min: i128,
        max: i128,
        default: T,
    ) -> Result<T> {
        match self.int(v, path, min, max)? {
            None => Ok(default),
            Some(i) => T::try_from(i).map_err(|_| self.err(path, "integer out of range")),
        }
    }

    fn boolean(&self, v: &Option<Scalar>, path: &str, default: bool) -> Result<bool> {
        match v {
            None | Some(Scalar::Null) => Ok(default),
            Some(Scalar::Bool(b)) => Ok(*b),
            Some(other) => Err(self.err(path, format!("expected true or false; got {other}"))),
        }
    }

    fn status_codes(&self, v: &[Scalar], path: &str) -> Result<Vec<u16>> {
        if v.is_empty() {
            return Err(self.err(path, "must list at least one status code"));
        }
        let mut out = Vec::with_capacity(v.len());
        for (i, s) in v.iter().enumerate() {
            let p = join_index(path, i);
            match s {
                Scalar::Int(c) if (100..=699).contains(c) => {
                    out.push(u16::try_from(*c).map_err(|_| self.err(&p, "out of range"))?)
                }
                other => {
                    return Err(self.err(
                        &p,
                        format!("expected a SIP status code 100..=699; got {other}"),
                    ))
                }
            }
        }
        Ok(out)
    }

    fn code_specs(&self, v: &[Scalar], path: &str) -> Result<Vec<CodeSpec>> {
        let mut out = Vec::with_capacity(v.len());
        for (i, s) in v.iter().enumerate() {
            let p = join_index(path, i);
            let text = match s {
                Scalar::Int(c) => c.to_string(),
                Scalar::Str(t) => t.clone(),
                other => {
                    return Err(self.err(
                        &p,
                        format!(
                        "expected a SIP status code 300..=699 or a class like \"5xx\"; got {other}"
                    ),
                    ))
                }
            };
            let spec = parse_code_spec(&text, 3).map_err(|m| {
                self.err(
                    &p,
                    format!("{m} (1xx and 2xx responses never cause failover)"),
                )
            })?;
            out.push(spec);
        }
        Ok(out)
    }

    fn config(&self, raw: RawConfig, file_name: &str) -> Result<Config> {
        let sip = self.sip(&raw.sip)?;
        let dns = self.dns(&raw.dns)?;
        let health = self.health(&raw.health)?;
        let routing = self.routing(&raw.routing)?;
        let media = self.media(&raw.media, &sip)?;
        let mut ids: HashMap<String, String> = HashMap::new();
        let mut seen_sources: HashMap<(Role, Source), String> = HashMap::new();
        let mut carriers = Vec::with_capacity(raw.carriers.len());
        for (i, c) in raw.carriers.iter().enumerate() {
            let path = join_index("carriers", i);
            let mut t = self.carrier(c, &path, &health, &sip, &mut ids, &mut seen_sources)?;
            t.latching =
                self.latching(&c.latching, &join_key(&path, "latching"), media.latching)?;
            carriers.push(t);
        }
        let mut ai_providers = Vec::with_capacity(raw.ai_providers.len());
        for (i, p) in raw.ai_providers.iter().enumerate() {
            let path = join_index("ai_providers", i);
            let mut t = self.ai_provider(p, &path, &health, &sip, &mut ids, &mut seen_sources)?;
            let latching_path = join_key(&path, "latching");
            t.latching = match (&t.ws, &p.latching) {
                (None, l) => self.latching(l, &latching_path, media.latching)?,
                (Some(_), None) => Latching::Strict,
                (Some(ws), Some(_)) => {
                    return Err(self.err(
                        &latching_path,
                        format!(
                            "`latching` applies to SIP targets only; a `{}` provider's audio comes from holdfast's own bridge",
                            ws.kind.as_str()
                        ),
                    ))
                }
            };
            ai_providers.push(t);
        }
        let known: HashMap<&str, TargetRef> = carriers
            .iter()
            .chain(ai_providers.iter())
            .map(|t: &Target| {
                (
                    &*t.id,
                    TargetRef {
                        role: t.role,
                        region: t.region.clone(),
                    },
                )
            })
            .collect();
        let routes = self.routes(&raw.routes, &known)?;
        let ai = self.ai(&raw.ai, file_name)?;
        let admin = self.admin(&raw.admin)?;
        let records = self.records(&raw.records, file_name)?;
        let node_id = self.node_id(raw.node.id.as_deref())?;
        Ok(Config {
            file_name: file_name.to_owned(),
            node_id,
            sip,
            dns,
            health,
            routing,
            media,
            carriers,
            ai_providers,
            routes,
            ai,
            admin,
            records,
        })
    }

    /// `node.id`: letters, digits, `-` and `_`, up to [`super::MAX_NODE_ID_LEN`]; it goes
    /// into every call id (`hf-<node.id>.<8 hex>-<n>`), log line and admin URL.
    fn node_id(&self, raw: Option<&str>) -> Result<Option<String>> {
        let Some(id) = raw.map(str::trim) else {
            return Ok(None);
        };
        let ok = !id.is_empty()
            && id.len() <= super::MAX_NODE_ID_LEN
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !ok {
            return Err(self.err(
                "node.id",
                format!(
                    "expected 1 to {} letters, digits, `-` or `_` (it is part of every call id); got `{id}`",
                    super::MAX_NODE_ID_LEN
                ),
            ));
        }
        Ok(Some(id.to_owned()))
    }

    fn admin(&self, raw: &RawAdmin) -> Result<AdminSettings> {
        let listen = match raw.listen.as_deref().map(str::trim) {
            None => Some(super::DEFAULT_ADMIN_LISTEN),
            Some("off") => None,
            Some(s) => Some(s.parse::<SocketAddr>().map_err(|_| {
                self.err(
                    "admin.listen",
                    format!("expected IP:PORT (e.g. 127.0.0.1:9090) or `off`; got `{s}`"),
                )
            })?),
        };
        let token = match raw.token_env.as_deref().map(str::trim) {
            None => None,
            Some(name) => {
                if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                {
                    return Err(self.err(
                        "admin.token_env",
                        format!("expected an environment variable name; got `{name}`"),
                    ));
                }
                match std::env::var(name) {
                    Ok(v) if !v.trim().is_empty() => Some((name.to_owned(), Secret(v.trim().to_owned()))),
                    _ => {
                        return Err(self.err(
                            "admin.token_env",
                            format!("environment variable `{name}` is not set (or empty); it must hold the admin API's bearer token"),
                        ))
                    }
                }
            }
        };
        if let (Some(addr), None) = (listen, &token) {
            if !addr.ip().is_loopback() {
                return Err(self.err(
                    "admin.listen",
                    format!("{addr} is not a loopback address: set `admin.token_env` (the API would be open to the network without a token) or listen on 127.0.0.1"),
                ));
            }
        }
        let (token_env, token) = match token {
            Some((n, t)) => (Some(n), Some(t)),
            None => (None, None),
        };
        Ok(AdminSettings {
            listen,
            token,
            token_env,
        })
    }

    fn records(&self, raw: &RawRecords, file_name: &str) -> Result<RecordsSettings> {
        Ok(match raw.path.as_deref().map(str::trim) {
            None => RecordsSettings::Off,
            Some("") => {
                return Err(self.err("records.path", "expected a file path or `-` (stdout)"))
            }
            Some("-") => RecordsSettings::Stdout,
            Some(p) => {
                let p = std::path::Path::new(p);
                if p.is_absolute() {
                    RecordsSettings::File(p.to_path_buf())
                } else {
                    let base = std::path::Path::new(file_name)
                        .parent()
                        .map(std::path::Path::to_path_buf)
                        .unwrap_or_default();
                    RecordsSettings::File(base.join(p))
                }
            }
        })
    }

    fn ai(&self, raw: &RawAi, file_name: &str) -> Result<AiSettings> {
        // Prompt files are found relative to the configuration file, like an include.
        let base = std::path::Path::new(file_name)
            .parent()
            .map(std::path::Path::to_path_buf)
            .unwrap_or_default();
        let load = |path: &str, field: &str, then: AfterPrompt| -> Result<GapAudio> {
            let p = std::path::Path::new(path.trim());
            let full = if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            };
            let bytes = std::fs::read(&full).map_err(|e| {
                self.err(
                    field,
                    format!("cannot read prompt `{}`: {e}", full.display()),
                )
            })?;
            let pcm = load_wav(&bytes)
                .map_err(|e| self.err(field, format!("prompt `{}`: {e}", full.display())))?;
            Ok(GapAudio::prompt(pcm, then))
        };
        let gap_audio = match raw.gap_audio.as_deref().map(str::trim) {
            None | Some("comfort-noise") => Some(GapAudio::ComfortNoise),
            Some("silence") => None,
            Some(path) => Some(load(path, "ai.gap_audio", AfterPrompt::ComfortNoise)?),
        };
        let np = raw.no_provider.as_ref();
        let action_path = "ai.no_provider.action";
        let no_provider = match np.and_then(|n| n.action.as_deref()).map(str::trim) {
            None | Some("hangup") => NoProvider::Hangup,
            Some("prompt") => {
                let Some(path) = np.and_then(|n| n.prompt.as_deref()) else {
                    return Err(self.err(
                        action_path,
                        "action `prompt` needs `prompt:` (a WAV file, 8 kHz mono)",
                    ));
                };
                NoProvider::Prompt(load(path, "ai.no_provider.prompt", AfterPrompt::Silence)?)
            }
            Some("transfer") => {
                let number = match np.and_then(|n| n.transfer_to.as_ref()) {
                    Some(Scalar::Str(s)) => dialed_number(s),
                    Some(_) => {
                        return Err(self.err(
                            "ai.no_provider.transfer_to",
                            "expected a quoted number like \"+442071234567\"",
                        ))
                    }
                    None => {
                        return Err(self.err(
                            action_path,
                            "action `transfer` needs `transfer_to:` (the number to dial through the carrier routing)",
                        ))
                    }
                };
                let body = number.strip_prefix('+').unwrap_or(&number);
                if body.is_empty()
                    || !body
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'*' || b == b'#')
                {
                    return Err(self.err(
                        "ai.no_provider.transfer_to",
                        format!("`{number}` is not a dialable number"),
                    ));
                }
                NoProvider::Transfer { number }
            }
            Some(a) => {
                return Err(self.err(
                    action_path,
                    format!("unknown action `{a}`; expected `hangup`, `prompt` or `transfer`"),
                ))
            }
        };
        let webhook = match raw.webhook.as_ref() {
            None => None,
            Some(w) => {
                let Some(url) = w.url.as_deref().map(str::trim) else {
                    return Err(self.err("ai.webhook", "missing field `url` (http:// or https://)"));
                };
                let lower = url.to_ascii_lowercase();
                if !(lower.starts_with("http://") || lower.starts_with("https://"))
                    || url.len() < 10
                {
                    return Err(self.err(
                        "ai.webhook.url",
                        format!("expected an http:// or https:// URL; got `{url}`"),
                    ));
                }
                let timeout = self.positive_duration(
                    &w.timeout,
                    "ai.webhook.timeout",
                    Duration::from_secs(2),
                )?;
                Some(WebhookSettings {
                    url: url.to_owned(),
                    timeout,
                })
            }
        };
        Ok(AiSettings {
            gap_audio,
            no_provider,
            webhook,
        })
    }

    fn sip(&self, raw: &RawSip) -> Result<SipSettings> {
        let listen = match &raw.listen {
            None => vec![DEFAULT_LISTEN],
            Some(list) => {
                if list.is_empty() {
                    return Err(self.err("sip.listen", "must list at least one listener"));
                }
                let mut out: Vec<Listen> = Vec::with_capacity(list.len());
                for (i, s) in list.iter().enumerate() {
                    let p = join_index("sip.listen", i);
                    let l = parse_listen(s).map_err(|m| self.err(&p, m))?;
                    if out.contains(&l) {
                        return Err(self.err(&p, format!("listener `{l}` is listed twice")));
                    }
                    out.push(l);
                }
                out
            }
        };
        let advertise = match &raw.advertise {
            None => None,
            Some(a) => {
                let host = a.trim();
                let bare = host
                    .strip_prefix('[')
                    .and_then(|h| h.strip_suffix(']'))
                    .unwrap_or(host);
                let ok = bare.parse::<IpAddr>().is_ok()
                    || (!bare.is_empty()
                        && bare
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.'));
                if !ok {
                    return Err(self.err(
                        "sip.advertise",
                        format!("expected a host name or IP address; got `{a}`"),
                    ));
                }
                Some(bare.to_owned())
            }
        };
        let t1 = self.positive_duration(&raw.t1, "sip.t1", Duration::from_millis(500))?;
        let t2 = self.positive_duration(&raw.t2, "sip.t2", Duration::from_secs(4))?;
        if t2 < t1 {
            return Err(self.err(
                "sip.t2",
                "must not be shorter than sip.t1 (RFC 3261 §17.1.2.2)",
            ));
        }
        let t4 = self.positive_duration(&raw.t4, "sip.t4", Duration::from_secs(5))?;
        let max_message_size = self.int_or(
            &raw.max_message_size,
            "sip.max_message_size",
            1024,
            1_048_576,
            65535usize,
        )?;
        let max_forwards = self.int_or(&raw.max_forwards, "sip.max_forwards", 1, 255, 70u8)?;
        let session_expires = self.whole_seconds(
            &raw.session_expires,
            "sip.session_expires",
            Duration::from_secs(1800),
        )?;
        let min_se = self.whole_seconds(&raw.min_se, "sip.min_se", Duration::from_secs(90))?;
        if min_se < Duration::from_secs(90) {
            return Err(self.err("sip.min_se", "must be at least 90s (RFC 4028 §4)"));
        }
        if session_expires < min_se {
            return Err(self.err(
                "sip.session_expires",
                "must not be shorter than sip.min_se (RFC 4028 §4)",
            ));
        }
        let user_agent = match &raw.user_agent {
            None => "holdfast".to_owned(),
            Some(ua) => {
                if ua.trim().is_empty() || ua.chars().any(char::is_control) {
                    return Err(self.err(
                        "sip.user_agent",
                        "must be a non-empty single-line header value",
                    ));
                }
                ua.trim().to_owned()
            }
        };
        let unknown_sources = match raw.unknown_sources.as_deref().map(str::trim) {
            None | Some("drop") => UnknownSources::Drop,
            Some("reject") => UnknownSources::Reject,
            Some(other) => {
                return Err(self.err(
                    "sip.unknown_sources",
                    format!("expected `drop` or `reject`; got `{other}`"),
                ))
            }
        };
        let mut answer_options = Vec::new();
        for (i, s) in raw.answer_options.iter().flatten().enumerate() {
            let p = join_index("sip.answer_options", i);
            answer_options.push(parse_source(s).map_err(|m| self.err(&p, m))?);
        }
        let scanners = match &raw.scanners {
            None => DEFAULT_SCANNERS
                .iter()
                .map(|s| s.to_ascii_lowercase())
                .collect(),
            Some(list) => {
                let mut out: Vec<String> = Vec::with_capacity(list.len());
                for (i, s) in list.iter().enumerate() {
                    let p = join_index("sip.scanners", i);
                    let t = s.trim();
                    if t.is_empty() || t.len() > 128 || t.chars().any(char::is_control) {
                        return Err(self.err(
                            &p,
                            "expected a User-Agent substring (1 to 128 characters, one line)",
                        ));
                    }
                    out.push(t.to_ascii_lowercase());
                }
                out
            }
        };
        let limits = self.limits(&raw.limits)?;
        Ok(SipSettings {
            listen,
            advertise,
            t1,
            t2,
            t4,
            max_message_size,
            max_forwards,
            session_expires,
            min_se,
            user_agent,
            force_rport: raw.force_rport.unwrap_or(false),
            unknown_sources,
            answer_options,
            scanners,
            limits,
        })
    }

    fn limits(&self, raw: &RawLimits) -> Result<SipLimits> {
        let per_source = match &raw.per_source {
            None => DEFAULT_PER_SOURCE,
            Some(r) => self
                .rate_limit(r, "sip.limits.per_source", DEFAULT_PER_SOURCE, false)?
                .unwrap_or(DEFAULT_PER_SOURCE),
        };
        let known_sources = match &raw.known_sources {
            None => Some(DEFAULT_KNOWN_SOURCES),
            Some(r) => {
                self.rate_limit(r, "sip.limits.known_sources", DEFAULT_KNOWN_SOURCES, true)?
            }
        };
        let sampling_interval = self.positive_duration(
            &raw.sampling_interval,
            "sip.limits.sampling_interval",
            Duration::from_secs(2),
        )?;
        let block_time = self.positive_duration(
            &raw.block_time,
            "sip.limits.block_time",
            Duration::from_secs(60),
        )?;
        let log_interval = self.positive_duration(
            &raw.log_interval,
            "sip.limits.log_interval",
            Duration::from_secs(60),
        )?;
        let max_sources = self.int_or(
            &raw.max_sources,
            "sip.limits.max_sources",
            16,
            16_777_216,
            65_536usize,
        )?;
        Ok(SipLimits {
            per_source,
            known_sources,
            sampling_interval,
            block_time,
            log_interval,
            max_sources,
        })
    }

    /// A `{ rate, burst }` mapping (a missing `rate` takes `default`'s, a missing `burst` is
    /// two seconds' worth of the rate), or `off` (`None`) where `off_ok`.
    fn rate_limit(
        &self,
        raw: &RawRate,
        path: &str,
        default: RateLimit,
        off_ok: bool,
    ) -> Result<Option<RateLimit>> {
        let shape = if off_ok {
            "expected `{ rate: N, burst: M }` or `off`"
        } else {
            "expected `{ rate: N, burst: M }`"
        };
        // YAML 1.1 readers take a bare `off` for false.
        let off = matches!(raw, RawRate::Value(Scalar::Bool(false)))
            || matches!(raw, RawRate::Value(Scalar::Str(s)) if s.trim() == "off");
        match raw {
            _ if off && off_ok => Ok(None),
            _ if off => Err(self.err(
                path,
                "cannot be `off`: unknown sources that get answers are always limited",
            )),
            RawRate::Value(other) => Err(self.err(path, format!("{shape}; got {other}"))),
            RawRate::Limit { rate, burst } => {
                let rate_path = join_key(path, "rate");
                let rate = self.int_or(rate, &rate_path, 1, 1_000_000, default.rate)?;
                let burst = self.int_or(
                    burst,
                    &join_key(path, "burst"),
                    1,
                    10_000_000,
                    rate.saturating_mul(2),
                )?;
                Ok(Some(RateLimit { rate, burst }))
            }
        }
    }

    fn whole_seconds(&self, v: &Option<Scalar>, path: &str, default: Duration) -> Result<Duration> {
        let d = self.positive_duration(v, path, default)?;
        if d.subsec_nanos() != 0 {
            return Err(self.err(
                path,
                "must be a whole number of seconds (RFC 4028 uses delta-seconds)",
            ));
        }
        Ok(d)
    }

    fn media(&self, raw: &RawMedia, sip: &SipSettings) -> Result<MediaSettings> {
        let ip = |v: &str, path: &str| -> Result<IpAddr> {
            let t = v.trim();
            let bare = t
                .strip_prefix('[')
                .and_then(|h| h.strip_suffix(']'))
                .unwrap_or(t);
            bare.parse::<IpAddr>()
                .map_err(|_| self.err(path, format!("expected an IP address; got `{v}`")))
        };
        let addrs = self.media_addrs(raw, sip, &ip)?;
        let ports = match &raw.ports {
            None => 16384..=32767,
            Some(v) => {
                let text = match v {
                    Scalar::Str(t) => t.clone(),
                    other => other.to_string(),
                };
                let parsed = text.split_once('-').and_then(|(a, b)| {
                    Some((a.trim().parse::<u16>().ok()?, b.trim().parse::<u16>().ok()?))
                });
                // Whole even/odd pairs in the range; a call takes two (one per leg).
                let pairs = |lo: u16, hi: u16| (u32::from(hi) + 1 - u32::from(lo + lo % 2)) / 2;
                match parsed {
                    Some((lo, hi)) if lo >= 1024 && hi > lo && pairs(lo, hi) >= 2 => lo..=hi,
                    Some((lo, hi)) if lo < 1024 || hi <= lo => {
                        return Err(self.err(
                            "media.ports",
                            format!("`{text}`: expected MIN-MAX with 1024 <= MIN < MAX <= 65535"),
                        ))
                    }
                    Some(_) => {
                        return Err(self.err(
                            "media.ports",
                            format!("`{text}` is too small: a call needs two even/odd port pairs"),
                        ))
                    }
                    None => {
                        return Err(self.err(
                            "media.ports",
                            format!("expected a port range such as \"30000-39999\"; got {v}"),
                        ))
                    }
                }
            }
        };
        let threads = match &raw.threads {
            None => 0,
            Some(Scalar::Str(s)) if s.trim() == "auto" => 0,
            Some(_) => self.int_or(&raw.threads, "media.threads", 1, 64, 1usize)?,
        };
        let threads = if threads == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get().min(64))
        } else {
            threads
        };
        let io = match raw.io.as_deref().map(str::trim) {
            None | Some("auto") => MediaIo::Auto,
            Some("socket") => MediaIo::Socket,
            Some("raw") => MediaIo::Raw,
            Some(other) => {
                return Err(self.err(
                    "media.io",
                    format!("`{other}`: expected auto, socket or raw"),
                ))
            }
        };
        let v6_only = addrs.v4.is_none() && addrs.v6.is_some_and(|a| !a.bind.is_unspecified());
        if io == MediaIo::Raw && v6_only {
            return Err(self.err(
                "media.io",
                "raw relays IPv4 only; media.bind has no IPv4 address (use socket or auto, or \
                 add an IPv4 address: IPv6 legs then use socket I/O)",
            ));
        }
        let timeout =
            self.positive_duration(&raw.timeout, "media.timeout", Duration::from_secs(30))?;
        let ai_timeout =
            self.positive_duration(&raw.ai_timeout, "media.ai_timeout", Duration::from_secs(5))?;
        let check_timeout = self.positive_duration(
            &raw.check_timeout,
            "media.check_timeout",
            Duration::from_secs(2),
        )?;
        let latching = self.latching(&raw.latching, "media.latching", Latching::Strict)?;
        let learning_window = self.duration(
            &raw.learning_window,
            "media.learning_window",
            DEFAULT_LEARNING_WINDOW,
        )?;
        if learning_window > MAX_LEARNING_WINDOW {
            return Err(self.err(
                "media.learning_window",
                format!(
                    "{learning_window:?} is longer than {MAX_LEARNING_WINDOW:?}: a NATed peer's \
                     audio is dropped for that long at the start of every call"
                ),
            ));
        }
        let port_quarantine = self.positive_duration(
            &raw.port_quarantine,
            "media.port_quarantine",
            Duration::from_secs(60),
        )?;
        Ok(MediaSettings {
            addrs,
            ports,
            threads,
            io,
            timeout,
            ai_timeout,
            check_timeout,
            latching,
            learning_window,
            port_quarantine,
        })
    }

    /// `media.bind` and `media.advertise`: a scalar or a list of at most one address per IP
    /// family each; every advertised family needs a bind address (`::` binds a dual-stack
    /// socket, so it serves an IPv4 advertise too). Without `media.bind`, the first SIP
    /// listener of each family gives it. A family bound to an unspecified address needs
    /// an advertise address.
    fn media_addrs(
        &self,
        raw: &RawMedia,
        sip: &SipSettings,
        ip: &dyn Fn(&str, &str) -> Result<IpAddr>,
    ) -> Result<MediaAddrs> {
        // (address, path) per family, in file order.
        let per_family = |list: &OneOrList, key: &str| -> Result<Vec<(IpAddr, String)>> {
            let entries = list.entries();
            if entries.is_empty() {
                return Err(self.err(key, "must list at least one IP address"));
            }
            if entries.len() > 2 {
                let p = join_index(key, 2);
                return Err(self.err(
                    &p,
                    "at most two addresses: one IPv4 and one IPv6 (the relay sockets of a leg \
                     bind in its peer's family)",
                ));
            }
            let mut out: Vec<(IpAddr, String)> = Vec::new();
            for (i, text) in entries {
                let p = i.map_or_else(|| key.to_owned(), |i| join_index(key, i));
                let a = ip(text, &p)?;
                if let Some((other, _)) = out
                    .iter()
                    .find(|(o, _)| IpFamily::of(*o) == IpFamily::of(a))
                {
                    return Err(self.err(
                        &p,
                        format!(
                            "{a} and {other} are both {}: {key} takes at most one address per \
                             IP family",
                            if a.is_ipv4() { "IPv4" } else { "IPv6" }
                        ),
                    ));
                }
                out.push((a, p));
            }
            Ok(out)
        };
        let binds: Vec<(IpAddr, String)> = match &raw.bind {
            Some(list) => per_family(list, "media.bind")?,
            None => {
                let mut out: Vec<(IpAddr, String)> = Vec::new();
                for l in &sip.listen {
                    let a = l.addr.ip();
                    if !out.iter().any(|(o, _)| IpFamily::of(*o) == IpFamily::of(a)) {
                        out.push((a, "media".to_owned()));
                    }
                }
                if out.is_empty() {
                    out.push((IpAddr::V4(Ipv4Addr::LOCALHOST), "media".to_owned()));
                }
                out
            }
        };
        let advertised: Vec<(IpAddr, String)> = match &raw.advertise {
            Some(list) => per_family(list, "media.advertise")?,
            None => Vec::new(),
        };
        for (a, p) in &advertised {
            if a.is_unspecified() || a.is_multicast() {
                return Err(self.err(
                    p,
                    "must be an address peers can send to (not 0.0.0.0, :: or multicast)",
                ));
            }
        }
        let mut addrs: Option<MediaAddrs> = None;
        let mut add = |family: IpFamily, addr: MediaAddr| match &mut addrs {
            None => addrs = Some(MediaAddrs::single_of(family, addr)),
            Some(m) => m.insert(family, addr),
        };
        for (b, bpath) in &binds {
            let family = IpFamily::of(*b);
            let adv = advertised.iter().find(|(a, _)| IpFamily::of(*a) == family);
            let advertise = match adv {
                Some((a, _)) => *a,
                None if b.is_unspecified() => {
                    // `::` with only an IPv4 advertise: the dual-stack socket serves IPv4.
                    let dual = family == IpFamily::V6
                        && advertised.iter().any(|(a, _)| a.is_ipv4())
                        && !binds.iter().any(|(o, _)| o.is_ipv4());
                    if dual {
                        continue;
                    }
                    return Err(self.err(
                        bpath,
                        format!(
                            "media binds to {b}, which peers cannot send to: set media.advertise \
                             to the address to write into SDP"
                        ),
                    ));
                }
                None => *b,
            };
            add(
                family,
                MediaAddr {
                    bind: *b,
                    advertise,
                },
            );
        }
        for (a, p) in &advertised {
            let family = IpFamily::of(*a);
            if binds.iter().any(|(b, _)| IpFamily::of(*b) == family) {
                continue;
            }
            // A dual-stack `::` bind relays IPv4 peers too.
            match binds
                .iter()
                .find(|(b, _)| b.is_ipv6() && b.is_unspecified())
            {
                Some((b, _)) if family == IpFamily::V4 => {
                    add(
                        family,
                        MediaAddr {
                            bind: *b,
                            advertise: *a,
                        },
                    );
                }
                _ => {
                    let have: Vec<String> = binds.iter().map(|(b, _)| b.to_string()).collect();
                    return Err(self.err(
                        p,
                        format!(
                            "{a} has no media.bind address of its IP family (media.bind: {}): \
                             the advertised and bound addresses of a family go together, and \
                             these are of different IP families",
                            have.join(", ")
                        ),
                    ));
                }
            }
        }
        addrs.ok_or_else(|| self.err("media.bind", "no usable relay address"))
    }

    fn dns(&self, raw: &RawDns) -> Result<DnsSettings> {
        let mut nameservers = Vec::new();
        for (i, s) in raw.nameservers.iter().flatten().enumerate() {
            let p = join_index("dns.nameservers", i);
            nameservers.push(parse_nameserver(s).map_err(|m| self.err(&p, m))?);
        }
        let min_ttl = self.duration(&raw.min_ttl, "dns.min_ttl", Duration::from_secs(5))?;
        Ok(DnsSettings {
            nameservers,
            min_ttl,
        })
    }

    fn health(&self, raw: &RawHealth) -> Result<HealthSettings> {
        let ping_interval = self.positive_duration(
            &raw.ping_interval,
            "health.ping_interval",
            Duration::from_secs(5),
        )?;
        let ping_timeout = self.positive_duration(
            &raw.ping_timeout,
            "health.ping_timeout",
            Duration::from_secs(2),
        )?;
        if ping_timeout > ping_interval {
            return Err(self.err(
                "health.ping_timeout",
                "must not be longer than health.ping_interval",
            ));
        }
        let down_after = self.int_or(&raw.down_after, "health.down_after", 1, 100, 3u32)?;
        let up_after = self.int_or(&raw.up_after, "health.up_after", 1, 100, 2u32)?;
        let alive_codes = match &raw.alive_codes {
            None => vec![200],
            Some(v) => self.status_codes(v, "health.alive_codes")?,
        };
        let breaker = BreakerSettings {
            failures: self.int_or(
                &raw.breaker.failures,
                "health.breaker.failures",
                1,
                1000,
                2u32,
            )?,
            window: self.positive_duration(
                &raw.breaker.window,
                "health.breaker.window",
                Duration::from_secs(30),
            )?,
            cooldown: self.positive_duration(
                &raw.breaker.cooldown,
                "health.breaker.cooldown",
                Duration::from_secs(30),
            )?,
            failure_percent: self.int_or(
                &raw.breaker.failure_percent,
                "health.breaker.failure_percent",
                1,
                100,
                50u8,
            )?,
            min_attempts: self.int_or(
                &raw.breaker.min_attempts,
                "health.breaker.min_attempts",
                1,
                10_000,
                100u32,
            )?,
            probe_successes: self.int_or(
                &raw.breaker.probe_successes,
                "health.breaker.probe_successes",
                1,
                1000,
                5u32,
            )?,
            max_ejection_percent: self.int_or(
                &raw.breaker.max_ejection_percent,
                "health.breaker.max_ejection_percent",
                0,
                100,
                50u8,
            )?,
        };
        let all_down = match raw.all_down.as_deref().map(str::trim) {
            None | Some("reject") => AllDownPolicy::Reject,
            Some("fail_open") => AllDownPolicy::FailOpen,
            Some(other) => {
                return Err(self.err(
                    "health.all_down",
                    format!("expected `reject` or `fail_open`; got `{other}`"),
                ))
            }
        };
        Ok(HealthSettings {
            ping_interval,
            ping_timeout,
            down_after,
            up_after,
            alive_codes,
            breaker,
            all_down,
        })
    }

    fn routing(&self, raw: &RawRouting) -> Result<RoutingSettings> {
        let attempt_timeout = self.positive_duration(
            &raw.attempt_timeout,
            "routing.attempt_timeout",
            Duration::from_secs(1),
        )?;
        let ring_timeout = self.positive_duration(
            &raw.ring_timeout,
            "routing.ring_timeout",
            Duration::from_secs(180),
        )?;
        let failover_codes = match &raw.failover_codes {
            None => vec![CodeSpec::Exact(408), CodeSpec::Class(5)],
            Some(v) => self.code_specs(v, "routing.failover_codes")?,
        };
        let no_failover_codes = match &raw.no_failover_codes {
            None => vec![
                CodeSpec::Exact(404),
                CodeSpec::Exact(484),
                CodeSpec::Exact(486),
                CodeSpec::Exact(603),
            ],
            Some(v) => self.code_specs(v, "routing.no_failover_codes")?,
        };
        let seed = self
            .int(&raw.seed, "routing.seed", 0, i128::from(u64::MAX))?
            .and_then(|s| u64::try_from(s).ok());
        Ok(RoutingSettings {
            attempt_timeout,
            ring_timeout,
            failover: FailoverPolicy {
                failover_codes,
                no_failover_codes,
            },
            seed,
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn target_common(
        &self,
        path: &str,
        role: Role,
        id: &str,
        uri: &str,
        region: &str,
        priority: &Option<Scalar>,
        weight: &Option<Scalar>,
        max_calls: &Option<Scalar>,
        sources: &Option<Vec<String>>,
        ping: &Option<Scalar>,
        alive_codes: &Option<Vec<Scalar>>,
        headers: &Option<HeaderMap>,
        liveness: &Option<String>,
        limits: &Option<RawRate>,
        (health, sip): (&HealthSettings, &SipSettings),
        ids: &mut HashMap<String, String>,
        seen_sources: &mut HashMap<(Role, Source), String>,
    ) -> Result<Target> {
        let id_path = join_key(path, "id");
        let id = id.trim();
        if id.is_empty()
            || id.len() > 64
            || !id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return Err(self.err(
                &id_path,
                format!(
                    "expected an id of letters, digits, `-`, `_` or `.` (at most 64); got `{id}`"
                ),
            ));
        }
        if let Some(first) = ids.get(id) {
            let pos = self.index.locate(first);
            return Err(self.err(
                &id_path,
                format!(
                    "duplicate id `{id}` (already used by {first} at line {}); ids must be unique across carriers and ai_providers",
                    pos.line
                ),
            ));
        }
        ids.insert(id.to_owned(), id_path.clone());
        let uri_path = join_key(path, "uri");
        let uri = parse_target_uri(uri).map_err(|m| self.err(&uri_path, m))?;
        let region_path = join_key(path, "region");
        let region = region.trim();
        if region.is_empty() || region.chars().any(|c| c.is_control() || c == ',') {
            return Err(self.err(&region_path, "expected a non-empty region label"));
        }
        let priority = self.int_or(priority, &join_key(path, "priority"), 0, 65535, 1u16)?;
        let weight = self.int_or(weight, &join_key(path, "weight"), 0, 65535, 1u16)?;
        let max_calls = self
            .int(
                max_calls,
                &join_key(path, "max_calls"),
                1,
                i128::from(u32::MAX),
            )?
            .and_then(|v| u32::try_from(v).ok());
        let mut parsed_sources = Vec::new();
        for (i, s) in sources.iter().flatten().enumerate() {
            let p = join_index(&join_key(path, "sources"), i);
            let src = parse_source(s).map_err(|m| self.err(&p, m))?;
            if let Some(other) = seen_sources.get(&(role, src)) {
                return Err(self.err(
                    &p,
                    format!(
                        "source `{src}` is already listed by {other}; a source must identify one {}",
                        role.noun()
                    ),
                ));
            }
            seen_sources.insert((role, src), p.clone());
            parsed_sources.push(src);
        }
        let ping = self.boolean(ping, &join_key(path, "ping"), true)?;
        let alive_codes = match alive_codes {
            None => health.alive_codes.clone(),
            Some(v) => self.status_codes(v, &join_key(path, "alive_codes"))?,
        };
        let mut out_headers = Vec::new();
        if let Some(HeaderMap(list)) = headers {
            let hpath = join_key(path, "headers");
            for (name, value) in list {
                let p = join_key(&hpath, name);
                if !is_token(name) {
                    return Err(self.err(&p, format!("`{name}` is not a valid SIP header name")));
                }
                if RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
                    return Err(self.err(
                        &p,
                        format!("header `{name}` is managed by holdfast and cannot be set here"),
                    ));
                }
                let value = scalar_text(value);
                if value.chars().any(|c| c.is_control() && c != '\t') {
                    return Err(self.err(&p, "header value must be a single line"));
                }
                out_headers.push((name.clone(), value));
            }
        }
        let default_liveness = match role {
            Role::Carrier => Liveness::Refresh,
            Role::AiProvider => Liveness::Options,
        };
        let liveness = self.liveness(
            liveness,
            &join_key(path, "liveness"),
            default_liveness,
            false,
        )?;
        let known = sip.limits.known_sources;
        let limits = match limits {
            None => known,
            Some(r) => self.rate_limit(
                r,
                &join_key(path, "limits"),
                known.unwrap_or(DEFAULT_KNOWN_SOURCES),
                true,
            )?,
        };
        Ok(Target {
            id: TargetId::from(id),
            role,
            uri,
            region: region.to_owned(),
            priority,
            weight,
            max_calls,
            sources: parsed_sources,
            ping,
            alive_codes,
            headers: out_headers,
            latching: Latching::Strict,
            limits,
            ws: None,
            liveness,
        })
    }

    /// `liveness`: the check a silent leg gets. `websocket` selects the kinds a WebSocket
    /// provider can use (ping, off) instead of the SIP ones.
    fn liveness(
        &self,
        v: &Option<String>,
        path: &str,
        default: Liveness,
        websocket: bool,
    ) -> Result<Liveness> {
        let Some(v) = v else { return Ok(default) };
        let l = match v.trim() {
            "options" => Liveness::Options,
            "in-dialog-options" => Liveness::InDialogOptions,
            "refresh" => Liveness::Refresh,
            "ping" => Liveness::Ping,
            "off" | "none" => Liveness::Off,
            other => {
                return Err(self.err(
                    path,
                    format!("`{other}`: expected options, in-dialog-options, refresh, ping or off"),
                ))
            }
        };
        match (websocket, l) {
            (true, Liveness::Ping | Liveness::Off)
            | (false, Liveness::Options | Liveness::InDialogOptions | Liveness::Refresh)
            | (false, Liveness::Off) => Ok(l),
            (true, _) => Err(self.err(
                path,
                format!(
                    "`{}` is a SIP check; a WebSocket provider is checked with `ping` (or `off`)",
                    l.as_str()
                ),
            )),
            (false, _) => Err(self.err(
                path,
                "`ping` is a WebSocket check; a SIP target is checked with options, in-dialog-options or refresh (or off)",
            )),
        }
    }

    /// A `latching:` value (`default` when absent).
    fn latching(&self, v: &Option<String>, path: &str, default: Latching) -> Result<Latching> {
        match v.as_deref().map(str::trim) {
            None => Ok(default),
            Some("strict") => Ok(Latching::Strict),
            Some("any") => Ok(Latching::Any),
            Some(other) => Err(self.err(
                path,
                format!(
                    "`{other}`: expected strict (the SDP's address, or its IP on another port \
                     after the learning window) or any (also any other IP, for NATed peers)"
                ),
            )),
        }
    }

    fn carrier(
        &self,
        c: &RawCarrier,
        path: &str,
        health: &HealthSettings,
        sip: &SipSettings,
        ids: &mut HashMap<String, String>,
        seen_sources: &mut HashMap<(Role, Source), String>,
    ) -> Result<Target> {
        self.target_common(
            path,
            Role::Carrier,
            &c.id,
            &c.uri,
            &c.region,
            &c.priority,
            &c.weight,
            &c.max_calls,
            &c.sources,
            &c.ping,
            &c.alive_codes,
            &c.headers,
            &c.liveness,
            &c.limits,
            (health, sip),
            ids,
            seen_sources,
        )
    }

    fn ai_provider(
        &self,
        p: &RawAiProvider,
        path: &str,
        health: &HealthSettings,
        sip: &SipSettings,
        ids: &mut HashMap<String, String>,
        seen_sources: &mut HashMap<(Role, Source), String>,
    ) -> Result<Target> {
        let kind_path = join_key(path, "kind");
        let kind = match p.kind.as_deref().map(str::trim) {
            None | Some("sip") => None,
            Some("media-stream") => Some(AiKind::MediaStream),
            Some("openai-realtime") => Some(AiKind::OpenAiRealtime),
            Some(k) => {
                return Err(self.err(
                    &kind_path,
                    format!(
                        "unknown kind `{k}`; expected `sip`, `media-stream` or `openai-realtime`"
                    ),
                ))
            }
        };
        let Some(kind) = kind else {
            for (field, set) in [
                ("url", p.url.is_some()),
                ("api_key_env", p.api_key_env.is_some()),
                ("custom_parameters", p.custom_parameters.is_some()),
                ("realtime", p.realtime.is_some()),
                ("setup_timeout", p.setup_timeout.is_some()),
            ] {
                if set {
                    return Err(self.err(
                        &join_key(path, field),
                        format!("`{field}` applies to WebSocket kinds only; a `sip` provider has a `uri`"),
                    ));
                }
            }
            let Some(uri) = &p.uri else {
                return Err(self.err(
                    path,
                    "missing field `uri` (a SIP URI like \"sip:agent@10.0.0.5:5060\")",
                ));
            };
            return self.target_common(
                path,
                Role::AiProvider,
                &p.id,
                uri,
                &p.region,
                &p.priority,
                &p.weight,
                &p.max_calls,
                &p.sources,
                &p.ping,
                &p.alive_codes,
                &p.headers,
                &p.liveness,
                &p.limits,
                (health, sip),
                ids,
                seen_sources,
            );
        };
        if p.uri.is_some() {
            return Err(self.err(
                &join_key(path, "uri"),
                format!(
                    "a `{}` provider is reached by `url` (ws:// or wss://), not a SIP `uri`",
                    kind.as_str()
                ),
            ));
        }
        if p.limits.is_some() {
            return Err(self.err(
                &join_key(path, "limits"),
                format!(
                    "`limits` apply to SIP peers' requests; a `{}` provider never sends any",
                    kind.as_str()
                ),
            ));
        }
        if p.sources.is_some() {
            return Err(self.err(
                &join_key(path, "sources"),
                format!(
                    "`sources` identify SIP peers that send calls; a `{}` provider never does",
                    kind.as_str()
                ),
            ));
        }
        if kind == AiKind::MediaStream && p.realtime.is_some() {
            return Err(self.err(
                &join_key(path, "realtime"),
                "`realtime` settings apply to `openai-realtime` providers only",
            ));
        }
        let url_path = join_key(path, "url");
        let url = match (&p.url, kind) {
            (Some(u), _) => u.trim().to_owned(),
            (None, AiKind::OpenAiRealtime) => DEFAULT_OPENAI_URL.to_owned(),
            (None, AiKind::MediaStream) => {
                return Err(self.err(path, "missing field `url` (the bot's ws:// or wss:// URL)"))
            }
        };
        let ws_uri = parse_ws_url(&url).map_err(|m| self.err(&url_path, m))?;
        let key_path = join_key(path, "api_key_env");
        let api_key = match &p.api_key_env {
            Some(name) => {
                let name = name.trim();
                if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                    return Err(self.err(&key_path, format!("expected an environment variable name; got `{name}`")));
                }
                match std::env::var(name) {
                    Ok(v) if !v.trim().is_empty() => Some(Secret(v.trim().to_owned())),
                    _ => {
                        return Err(self.err(
                            &key_path,
                            format!("environment variable `{name}` is not set (or empty); it must hold the provider's API key"),
                        ))
                    }
                }
            }
            None if kind == AiKind::OpenAiRealtime => {
                return Err(self.err(
                    path,
                    "missing field `api_key_env` (the name of the environment variable holding the API key, e.g. OPENAI_API_KEY)",
                ))
            }
            None => None,
        };
        let mut custom_parameters = Vec::new();
        if let Some(HeaderMap(list)) = &p.custom_parameters {
            for (name, value) in list {
                custom_parameters.push((name.clone(), scalar_text(value)));
            }
        }
        let realtime = if kind == AiKind::OpenAiRealtime {
            let r = p.realtime.as_ref();
            let rpath = join_key(path, "realtime");
            let text =
                |v: Option<&String>| v.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
            if let Some(tools) = r.and_then(|r| r.tools.as_ref()) {
                if !tools.is_array() {
                    return Err(self.err(
                        &join_key(&rpath, "tools"),
                        "expected a list of tool definitions (the `tools` array of session.update)",
                    ));
                }
            }
            let transcription = match r
                .and_then(|r| r.input_transcription.as_deref())
                .map(str::trim)
            {
                None => Some(DEFAULT_TRANSCRIPTION_MODEL.to_owned()),
                Some("" | "off" | "none") => None,
                Some(m) => Some(m.to_owned()),
            };
            Some(RealtimeSettings {
                api_key: api_key.clone().unwrap_or_default(),
                model: text(r.and_then(|r| r.model.as_ref())),
                instructions: text(r.and_then(|r| r.instructions.as_ref())),
                voice: text(r.and_then(|r| r.voice.as_ref())),
                tools: r.and_then(|r| r.tools.clone()),
                input_transcription: transcription,
                respond_after_reroute: r.and_then(|r| r.respond_after_reroute).unwrap_or(true),
            })
        } else {
            None
        };
        let mut headers = Vec::new();
        if let Some(HeaderMap(list)) = &p.headers {
            let hpath = join_key(path, "headers");
            for (name, value) in list {
                let hp = join_key(&hpath, name);
                if !is_token(name) {
                    return Err(self.err(&hp, format!("`{name}` is not a valid HTTP header name")));
                }
                let value = scalar_text(value);
                if value.chars().any(|c| c.is_control() && c != '\t') {
                    return Err(self.err(&hp, "header value must be a single line"));
                }
                headers.push((name.clone(), value));
            }
        }
        if let (Some(key), AiKind::MediaStream) = (&api_key, kind) {
            headers.push(("Authorization".into(), format!("Bearer {}", key.expose())));
        }
        // The address part (host, port, TCP) goes through the common checks: id, region,
        // priority, weight, capacity, ping, alive codes.
        let mut t = self.target_common(
            path,
            Role::AiProvider,
            &p.id,
            &ws_uri.to_string(),
            &p.region,
            &p.priority,
            &p.weight,
            &p.max_calls,
            &None,
            &p.ping,
            &p.alive_codes,
            &None,
            &None,
            &None,
            (health, sip),
            ids,
            seen_sources,
        )?;
        t.liveness = self.liveness(
            &p.liveness,
            &join_key(path, "liveness"),
            Liveness::Ping,
            true,
        )?;
        // Nothing comes from a WebSocket provider over SIP, so nothing is limited.
        t.limits = None;
        let setup_timeout = self.positive_duration(
            &p.setup_timeout,
            &join_key(path, "setup_timeout"),
            DEFAULT_WS_SETUP_TIMEOUT,
        )?;
        t.uri = ws_uri;
        t.ws = Some(Arc::new(WsProvider {
            kind,
            url,
            headers,
            custom_parameters,
            realtime,
            setup_timeout,
        }));
        Ok(t)
    }

    fn prefix(&self, v: &Option<Scalar>, path: &str) -> Result<String> {
        match v {
            None | Some(Scalar::Null) => Ok(String::new()),
            Some(Scalar::Str(s)) => {
                let n = dialed_number(s);
                let body = n.strip_prefix('+').unwrap_or(&n);
                if body
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'*' || b == b'#')
                {
                    Ok(n)
                } else {
                    Err(self.err(
                        path,
                        format!("expected a number prefix like \"+44\"; got \"{s}\""),
                    ))
                }
            }
            Some(Scalar::Int(i)) => Err(self.err(
                path,
                format!(
                    "write number prefixes as quoted strings, e.g. \"+{i}\" (unquoted YAML reads +{i} as the integer {i})"
                ),
            )),
            Some(other) => Err(self.err(
                path,
                format!("expected a number prefix like \"+44\"; got {other}"),
            )),
        }
    }

    /// Checks a list of target ids: each known, of `role`, listed once, and (when `regions` is
    /// given) in one of those regions.
    fn id_list(
        &self,
        list: &[String],
        path: &str,
        role: Role,
        regions: Option<&[String]>,
        known: &HashMap<&str, TargetRef>,
    ) -> Result<Vec<TargetId>> {
        let mut out: Vec<TargetId> = Vec::with_capacity(list.len());
        for (i, id) in list.iter().enumerate() {
            let p = join_index(path, i);
            let id = id.trim();
            let Some(t) = known.get(id) else {
                let what = match role {
                    Role::Carrier => "carriers",
                    Role::AiProvider => "ai_providers",
                };
                return Err(self.err(
                    &p,
                    format!("unknown {} id `{id}` (not in {what})", role.noun()),
                ));
            };
            if t.role != role {
                return Err(self.err(
                    &p,
                    format!(
                        "`{id}` is {} {}, but this list takes {}s",
                        if t.role == Role::AiProvider {
                            "an"
                        } else {
                            "a"
                        },
                        t.role.noun(),
                        role.noun()
                    ),
                ));
            }
            if out.iter().any(|o| &**o == id) {
                return Err(self.err(&p, format!("`{id}` is listed twice")));
            }
            if let Some(regions) = regions {
                if !regions.contains(&t.region) {
                    return Err(self.err(
                        &p,
                        format!(
                            "{} `{id}` is in region `{}`, which is not in this rule's regions [{}]; a rule never sends a call out of its regions",
                            role.noun(),
                            t.region,
                            regions.join(", ")
                        ),
                    ));
                }
            }
            out.push(TargetId::from(id));
        }
        Ok(out)
    }

    fn regions(
        &self,
        v: &Option<Vec<String>>,
        path: &str,
        known: &HashMap<&str, TargetRef>,
    ) -> Result<Vec<String>> {
        let Some(list) = v else {
            return Err(self.err(path, "required: the regions this rule may route to"));
        };
        if list.is_empty() {
            return Err(self.err(path, "must list at least one region"));
        }
        let declared: HashSet<&str> = known.values().map(|t| t.region.as_str()).collect();
        let mut out: Vec<String> = Vec::with_capacity(list.len());
        for (i, r) in list.iter().enumerate() {
            let p = join_index(path, i);
            let r = r.trim();
            if !declared.contains(r) {
                return Err(self.err(
                    &p,
                    format!("region `{r}` is not declared by any carrier or AI provider"),
                ));
            }
            if out.iter().any(|o| o == r) {
                return Err(self.err(&p, format!("region `{r}` is listed twice")));
            }
            out.push(r.to_owned());
        }
        Ok(out)
    }

    fn routes(&self, raw: &RawRoutes, known: &HashMap<&str, TargetRef>) -> Result<Routes> {
        let mut routes = Routes::default();
        for (i, r) in raw.inbound.iter().enumerate() {
            let m = r.match_.as_ref();
            let rule = self.rule(
                RawRule {
                    direction: Direction::Inbound,
                    index: i,
                    to: m.and_then(|m| m.to.clone()),
                    from: m.and_then(|m| m.from.clone()),
                    origins: (
                        m.and_then(|m| m.carriers.as_deref()),
                        "carriers",
                        Role::Carrier,
                    ),
                    regions: &r.regions,
                    targets: (&r.ai, "ai", Role::AiProvider),
                },
                known,
            )?;
            self.check_shadow(&routes.inbound, &rule, &join_index("routes.inbound", i))?;
            routes.inbound.push(rule);
        }
        for (i, r) in raw.outbound.iter().enumerate() {
            let m = r.match_.as_ref();
            let rule = self.rule(
                RawRule {
                    direction: Direction::Outbound,
                    index: i,
                    to: m.and_then(|m| m.to.clone()),
                    from: m.and_then(|m| m.from.clone()),
                    origins: (m.and_then(|m| m.ai.as_deref()), "ai", Role::AiProvider),
                    regions: &r.regions,
                    targets: (&r.carriers, "carriers", Role::Carrier),
                },
                known,
            )?;
            self.check_shadow(&routes.outbound, &rule, &join_index("routes.outbound", i))?;
            routes.outbound.push(rule);
        }
        Ok(routes)
    }

    /// One inbound or outbound rule: the two differ only in which key names the origins
    /// (`match.carriers` / `match.ai`) and the targets (`ai` / `carriers`), and their roles.
    fn rule(&self, r: RawRule<'_>, known: &HashMap<&str, TargetRef>) -> Result<RouteRule> {
        let path = join_index(&format!("routes.{}", r.direction.as_str()), r.index);
        let mpath = join_key(&path, "match");
        let to = self.prefix(&r.to, &join_key(&mpath, "to"))?;
        let from = self.prefix(&r.from, &join_key(&mpath, "from"))?;
        let (origin_ids, origin_key, origin_role) = r.origins;
        let origins = self.id_list(
            origin_ids.unwrap_or(&[]),
            &join_key(&mpath, origin_key),
            origin_role,
            None,
            known,
        )?;
        let regions = self.regions(r.regions, &join_key(&path, "regions"), known)?;
        let (target_ids, target_key, target_role) = r.targets;
        let targets = self.target_list(
            target_ids,
            &join_key(&path, target_key),
            target_role,
            &regions,
            known,
        )?;
        Ok(RouteRule {
            direction: r.direction,
            index: r.index,
            to,
            from,
            origins,
            regions,
            targets,
        })
    }

    fn target_list(
        &self,
        v: &Option<Vec<String>>,
        path: &str,
        role: Role,
        regions: &[String],
        known: &HashMap<&str, TargetRef>,
    ) -> Result<Vec<TargetId>> {
        let Some(list) = v else {
            return Err(self.err(
                path,
                format!("required: the {}s this rule routes to", role.noun()),
            ));
        };
        if list.is_empty() {
            return Err(self.err(path, format!("must list at least one {}", role.noun())));
        }
        self.id_list(list, path, role, Some(regions), known)
    }

    /// Two rules with the same match: the second could never be chosen.
    fn check_shadow(&self, earlier: &[RouteRule], rule: &RouteRule, path: &str) -> Result<()> {
        let key = |r: &RouteRule| {
            let mut o: Vec<&str> = r.origins.iter().map(|x| &**x).collect();
            o.sort_unstable();
            (r.to.clone(), r.from.clone(), o.join(","))
        };
        let mine = key(rule);
        if let Some(other) = earlier.iter().find(|r| key(r) == mine) {
            let p = if self.index.has(&join_key(path, "match")) {
                join_key(path, "match")
            } else {
                path.to_owned()
            };
            return Err(self.err(
                &p,
                format!(
                    "same match as {}; this rule could never be chosen",
                    other.name()
                ),
            ));
        }
        Ok(())
    }
}

/// The parts of a raw inbound or outbound rule that [`Validator::rule`] checks.
struct RawRule<'a> {
    direction: Direction,
    index: usize,
    to: Option<Scalar>,
    from: Option<Scalar>,
    /// Ids in `match.<key>`, the key, and the role they must have.
    origins: (Option<&'a [String]>, &'static str, Role),
    regions: &'a Option<Vec<String>>,
    /// Ids in `<key>`, the key, and the role they must have.
    targets: (&'a Option<Vec<String>>, &'static str, Role),
}
