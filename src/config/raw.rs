//! The YAML file as written: serde types that mirror the schema one to one.
//!
//! Every struct denies unknown fields so a typo is an error, not a silently ignored key.
//! Numbers, durations and booleans are read as [`Scalar`] so the validation step (not serde)
//! words the message ("expected an integer 0..=65535", "a duration needs a unit") and can
//! catch YAML pitfalls such as an unquoted `+44` being read as the integer 44.
//! Nothing here checks meaning; `validate` does.

use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

/// Any YAML scalar, kept with its YAML type.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Scalar {
    Str(String),
    Int(i128),
    Float(f64),
    Bool(bool),
    Null,
}

impl fmt::Display for Scalar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scalar::Str(s) => write!(f, "\"{s}\""),
            Scalar::Int(i) => write!(f, "{i}"),
            Scalar::Float(x) => write!(f, "{x}"),
            Scalar::Bool(b) => write!(f, "{b}"),
            Scalar::Null => f.write_str("null"),
        }
    }
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a single value (not a list or mapping)")
            }
            fn visit_str<E>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar::Str(v.to_owned()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar::Int(i128::from(v)))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar::Int(i128::from(v)))
            }
            fn visit_u128<E: de::Error>(self, v: u128) -> Result<Scalar, E> {
                i128::try_from(v)
                    .map(Scalar::Int)
                    .map_err(|_| E::custom("integer out of range"))
            }
            fn visit_i128<E>(self, v: i128) -> Result<Scalar, E> {
                Ok(Scalar::Int(v))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar::Float(v))
            }
            fn visit_bool<E>(self, v: bool) -> Result<Scalar, E> {
                Ok(Scalar::Bool(v))
            }
            fn visit_unit<E>(self) -> Result<Scalar, E> {
                Ok(Scalar::Null)
            }
            fn visit_none<E>(self) -> Result<Scalar, E> {
                Ok(Scalar::Null)
            }
        }
        d.deserialize_any(V)
    }
}

/// A string, or a list of strings (`media.bind: 10.0.0.5` or `[10.0.0.5, "2001:db8::5"]`).
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum OneOrList {
    One(String),
    List(Vec<String>),
}

impl OneOrList {
    /// The entries with the path suffix each is found at (`""` for a scalar, `[i]`).
    pub fn entries(&self) -> Vec<(Option<usize>, &str)> {
        match self {
            OneOrList::One(s) => vec![(None, s.as_str())],
            OneOrList::List(v) => v
                .iter()
                .enumerate()
                .map(|(i, s)| (Some(i), s.as_str()))
                .collect(),
        }
    }
}

impl<'de> Deserialize<'de> for OneOrList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = OneOrList;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an IP address or a list of IP addresses")
            }
            fn visit_str<E>(self, v: &str) -> Result<OneOrList, E> {
                Ok(OneOrList::One(v.to_owned()))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<OneOrList, A::Error> {
                let mut out = Vec::new();
                while let Some(s) = seq.next_element::<String>()? {
                    out.push(s);
                }
                Ok(OneOrList::List(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// A mapping of header name to value, in file order.
#[derive(Clone, Debug, Default)]
pub(crate) struct HeaderMap(pub Vec<(String, Scalar)>);

impl<'de> Deserialize<'de> for HeaderMap {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = HeaderMap;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mapping of header name to value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<HeaderMap, A::Error> {
                let mut out = Vec::new();
                while let Some(entry) = a.next_entry::<String, Scalar>()? {
                    out.push(entry);
                }
                Ok(HeaderMap(out))
            }
            fn visit_unit<E>(self) -> Result<HeaderMap, E> {
                Ok(HeaderMap::default())
            }
        }
        d.deserialize_map(V)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawConfig {
    pub node: RawNode,
    pub sip: RawSip,
    pub dns: RawDns,
    pub health: RawHealth,
    pub routing: RawRouting,
    pub media: RawMedia,
    pub carriers: Vec<RawCarrier>,
    pub ai_providers: Vec<RawAiProvider>,
    pub routes: RawRoutes,
    pub ai: RawAi,
    pub admin: RawAdmin,
    pub records: RawRecords,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawNode {
    pub id: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawAdmin {
    pub listen: Option<String>,
    pub token_env: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawRecords {
    pub path: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawAi {
    pub gap_audio: Option<String>,
    pub no_provider: Option<RawNoProvider>,
    pub webhook: Option<RawWebhook>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawNoProvider {
    pub action: Option<String>,
    pub prompt: Option<String>,
    pub transfer_to: Option<Scalar>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawWebhook {
    pub url: Option<String>,
    pub timeout: Option<Scalar>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawSip {
    pub listen: Option<Vec<String>>,
    pub advertise: Option<String>,
    pub t1: Option<Scalar>,
    pub t2: Option<Scalar>,
    pub t4: Option<Scalar>,
    pub max_message_size: Option<Scalar>,
    pub max_forwards: Option<Scalar>,
    pub session_expires: Option<Scalar>,
    pub min_se: Option<Scalar>,
    pub user_agent: Option<String>,
    pub force_rport: Option<bool>,
    pub unknown_sources: Option<String>,
    pub answer_options: Option<Vec<String>>,
    pub scanners: Option<Vec<String>>,
    pub limits: RawLimits,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawLimits {
    pub per_source: Option<RawRate>,
    pub known_sources: Option<RawRate>,
    pub sampling_interval: Option<Scalar>,
    pub block_time: Option<Scalar>,
    pub log_interval: Option<Scalar>,
    pub max_sources: Option<Scalar>,
}

/// A rate limit as written: `{ rate: N, burst: M }` (either key may be left out), or a
/// single value (`off`), which validation checks.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum RawRate {
    Limit {
        rate: Option<Scalar>,
        burst: Option<Scalar>,
    },
    Value(Scalar),
}

impl<'de> Deserialize<'de> for RawRate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawRate;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mapping `{ rate: N, burst: M }` or `off`")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<RawRate, A::Error> {
                const FIELDS: &[&str] = &["rate", "burst"];
                let (mut rate, mut burst) = (None, None);
                while let Some(key) = a.next_key::<String>()? {
                    let slot = match key.as_str() {
                        "rate" => &mut rate,
                        "burst" => &mut burst,
                        other => return Err(de::Error::unknown_field(other, FIELDS)),
                    };
                    if slot.is_some() {
                        return Err(de::Error::duplicate_field(
                            FIELDS[usize::from(key == "burst")],
                        ));
                    }
                    *slot = Some(a.next_value::<Scalar>()?);
                }
                Ok(RawRate::Limit { rate, burst })
            }
            fn visit_str<E>(self, v: &str) -> Result<RawRate, E> {
                Ok(RawRate::Value(Scalar::Str(v.to_owned())))
            }
            fn visit_bool<E>(self, v: bool) -> Result<RawRate, E> {
                Ok(RawRate::Value(Scalar::Bool(v)))
            }
            fn visit_u64<E>(self, v: u64) -> Result<RawRate, E> {
                Ok(RawRate::Value(Scalar::Int(i128::from(v))))
            }
            fn visit_i64<E>(self, v: i64) -> Result<RawRate, E> {
                Ok(RawRate::Value(Scalar::Int(i128::from(v))))
            }
            fn visit_f64<E>(self, v: f64) -> Result<RawRate, E> {
                Ok(RawRate::Value(Scalar::Float(v)))
            }
            fn visit_unit<E>(self) -> Result<RawRate, E> {
                Ok(RawRate::Value(Scalar::Null))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawDns {
    pub nameservers: Option<Vec<String>>,
    pub min_ttl: Option<Scalar>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawMedia {
    pub bind: Option<OneOrList>,
    pub advertise: Option<OneOrList>,
    pub ports: Option<Scalar>,
    pub threads: Option<Scalar>,
    pub io: Option<String>,
    pub timeout: Option<Scalar>,
    pub ai_timeout: Option<Scalar>,
    pub check_timeout: Option<Scalar>,
    pub latching: Option<String>,
    pub learning_window: Option<Scalar>,
    pub port_quarantine: Option<Scalar>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawHealth {
    pub ping_interval: Option<Scalar>,
    pub ping_timeout: Option<Scalar>,
    pub down_after: Option<Scalar>,
    pub up_after: Option<Scalar>,
    pub alive_codes: Option<Vec<Scalar>>,
    pub breaker: RawBreaker,
    pub all_down: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawBreaker {
    pub failures: Option<Scalar>,
    pub window: Option<Scalar>,
    pub cooldown: Option<Scalar>,
    pub failure_percent: Option<Scalar>,
    pub min_attempts: Option<Scalar>,
    pub probe_successes: Option<Scalar>,
    pub max_ejection_percent: Option<Scalar>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawRouting {
    pub attempt_timeout: Option<Scalar>,
    pub ring_timeout: Option<Scalar>,
    pub failover_codes: Option<Vec<Scalar>>,
    pub no_failover_codes: Option<Vec<Scalar>>,
    pub seed: Option<Scalar>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCarrier {
    pub id: String,
    pub uri: String,
    pub region: String,
    #[serde(default)]
    pub priority: Option<Scalar>,
    #[serde(default)]
    pub weight: Option<Scalar>,
    #[serde(default)]
    pub max_calls: Option<Scalar>,
    #[serde(default)]
    pub sources: Option<Vec<String>>,
    #[serde(default)]
    pub ping: Option<Scalar>,
    #[serde(default)]
    pub alive_codes: Option<Vec<Scalar>>,
    #[serde(default)]
    pub headers: Option<HeaderMap>,
    #[serde(default)]
    pub liveness: Option<String>,
    pub latching: Option<String>,
    pub limits: Option<RawRate>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAiProvider {
    pub id: String,
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub uri: Option<String>,
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub api_key_env: Option<String>,
    #[serde(default)]
    pub custom_parameters: Option<HeaderMap>,
    #[serde(default)]
    pub realtime: Option<RawRealtime>,
    #[serde(default)]
    pub setup_timeout: Option<Scalar>,
    pub region: String,
    #[serde(default)]
    pub priority: Option<Scalar>,
    #[serde(default)]
    pub weight: Option<Scalar>,
    #[serde(default)]
    pub max_calls: Option<Scalar>,
    #[serde(default)]
    pub sources: Option<Vec<String>>,
    #[serde(default)]
    pub ping: Option<Scalar>,
    #[serde(default)]
    pub alive_codes: Option<Vec<Scalar>>,
    #[serde(default)]
    pub headers: Option<HeaderMap>,
    #[serde(default)]
    pub liveness: Option<String>,
    pub latching: Option<String>,
    pub limits: Option<RawRate>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawRealtime {
    pub model: Option<String>,
    pub instructions: Option<String>,
    pub voice: Option<String>,
    pub tools: Option<serde_json::Value>,
    /// `off` disables input transcription; absent = the default model.
    pub input_transcription: Option<String>,
    pub respond_after_reroute: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawRoutes {
    pub inbound: Vec<RawInbound>,
    pub outbound: Vec<RawOutbound>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawInbound {
    #[serde(default, rename = "match")]
    pub match_: Option<RawInboundMatch>,
    #[serde(default)]
    pub regions: Option<Vec<String>>,
    #[serde(default)]
    pub ai: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawInboundMatch {
    pub to: Option<Scalar>,
    pub from: Option<Scalar>,
    pub carriers: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawOutbound {
    #[serde(default, rename = "match")]
    pub match_: Option<RawOutboundMatch>,
    #[serde(default)]
    pub regions: Option<Vec<String>>,
    #[serde(default)]
    pub carriers: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawOutboundMatch {
    pub to: Option<Scalar>,
    pub from: Option<Scalar>,
    pub ai: Option<Vec<String>>,
}
