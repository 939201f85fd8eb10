//! Routing tables: which side a request came from, which rule it matches, and in which order
//! to try the targets of that rule.
//!
//! Built once from a validated [`Config`] (`RoutingTable::new`). The caller (the B2BUA)
//! extracts the dialed numbers, asks [`RoutingTable::classify_source`] who sent the INVITE,
//! [`RoutingTable::match_inbound`] / [`RoutingTable::match_outbound`] for the rule, then
//! [`RoutingTable::plan`] for the ordered candidates given current health and load, and
//! [`RoutingTable::should_failover`] after each failed attempt. [`check`] renders the
//! table, with the settings around it, for `holdfast check`.
//!
//! Sans-IO: never touches sockets or clocks and never draws randomness of its own; weighted
//! selection is driven by a seed passed in by the caller, so a plan is reproducible.

pub mod check;
mod plan;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;

use crate::config::{
    format_duration, AllDownPolicy, Config, Direction, FailoverPolicy, Listen, Role, Source, Target,
};

pub use crate::config::RouteRule as Rule;
pub use crate::config::TargetId;
pub use crate::sip::uri::dialed_number;
pub use plan::{AvailabilityView, Plan, TargetAvailability};

/// Who sent a request, by its source address.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Origin {
    Carrier(TargetId),
    AiProvider(TargetId),
}

/// Which target a source address belongs to, and how it is limited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SourceMatch<'a> {
    pub origin: &'a Origin,
    /// Matched by an `IP:PORT` entry (not a network or bare IP).
    pub by_port: bool,
    /// The target's `limits` (resolved; `None` = unlimited).
    pub limit: Option<crate::config::RateLimit>,
}

/// One source matcher, with what it identifies.
#[derive(Clone, Debug)]
struct SourceEntry {
    source: Source,
    origin: Origin,
    limit: Option<crate::config::RateLimit>,
    /// Position among all sources in config order (carriers first), for stable ties.
    order: usize,
}

/// The compiled routing table.
#[derive(Clone, Debug)]
pub struct RoutingTable {
    file_name: String,
    listen: Vec<Listen>,
    advertise: Option<String>,
    media: crate::config::MediaSettings,
    targets: HashMap<TargetId, Target>,
    /// Carriers then AI providers, in file order.
    target_order: Vec<TargetId>,
    sources: Vec<SourceEntry>,
    inbound: Vec<Rule>,
    outbound: Vec<Rule>,
    failover: FailoverPolicy,
    all_down: AllDownPolicy,
    /// `health.breaker.max_ejection_percent`: the share of a rule's targets breakers may
    /// keep out at once.
    max_ejection_percent: u8,
    /// `health.breaker`, for `render`.
    breaker: crate::config::BreakerSettings,
    attempt_timeout: std::time::Duration,
}

/// Ranking of a matching rule: longer `to`, then longer `from`, then restricted by origin.
fn rule_rank(rule: &Rule) -> (usize, usize, bool) {
    (rule.to.len(), rule.from.len(), !rule.origins.is_empty())
}

impl RoutingTable {
    pub fn new(config: &Config) -> RoutingTable {
        let mut sources = Vec::new();
        for t in config.targets() {
            for s in &t.sources {
                let origin = match t.role {
                    Role::Carrier => Origin::Carrier(t.id.clone()),
                    Role::AiProvider => Origin::AiProvider(t.id.clone()),
                };
                sources.push(SourceEntry {
                    source: *s,
                    origin,
                    limit: t.limits,
                    order: sources.len(),
                });
            }
        }
        RoutingTable {
            file_name: config.file_name.clone(),
            listen: config.sip.listen.clone(),
            advertise: config.sip.advertise.clone(),
            media: config.media.clone(),
            targets: config
                .targets()
                .map(|t| (t.id.clone(), t.clone()))
                .collect(),
            target_order: config.targets().map(|t| t.id.clone()).collect(),
            sources,
            inbound: config.routes.inbound.clone(),
            outbound: config.routes.outbound.clone(),
            failover: config.routing.failover.clone(),
            all_down: config.health.all_down,
            max_ejection_percent: config.health.breaker.max_ejection_percent,
            breaker: config.health.breaker,
            attempt_timeout: config.routing.attempt_timeout,
        }
    }

    /// The target with this id.
    pub fn target(&self, id: &str) -> Option<&Target> {
        self.targets.get(id)
    }

    /// All targets, carriers first, in file order.
    pub fn targets(&self) -> impl Iterator<Item = &Target> {
        self.target_order
            .iter()
            .filter_map(|id| self.targets.get(id))
    }

    /// Which carrier or AI provider sent a packet from `src`. An `IP:port` entry beats any
    /// network; a longer prefix beats a shorter one; on a tie carriers beat providers, then
    /// the first in the file wins.
    pub fn classify_source(&self, src: SocketAddr) -> Option<Origin> {
        self.source_match(src).map(|m| m.origin.clone())
    }

    /// As [`RoutingTable::classify_source`], with the entry that matched: whether it names
    /// an `IP:PORT` (the guard then counts that address and port apart from the IP's other
    /// ports) and the target's rate limit.
    pub fn source_match(&self, src: SocketAddr) -> Option<SourceMatch<'_>> {
        // A v4-mapped IPv6 peer (dual-stack socket) is matched as the IPv4 address it is.
        let src = SocketAddr::new(src.ip().to_canonical(), src.port());
        let e = self
            .sources
            .iter()
            .filter(|e| e.source.matches(src))
            .max_by_key(|e| {
                let (exact, prefix) = match e.source {
                    Source::Addr(_) => (true, 128u8),
                    Source::Net(n) => (false, n.prefix_len()),
                };
                let carrier = matches!(e.origin, Origin::Carrier(_));
                (exact, prefix, carrier, std::cmp::Reverse(e.order))
            })?;
        Some(SourceMatch {
            origin: &e.origin,
            by_port: matches!(e.source, Source::Addr(_)),
            limit: e.limit,
        })
    }

    fn best_match<'a>(
        rules: &'a [Rule],
        origin: &TargetId,
        to: &str,
        from: &str,
    ) -> Option<&'a Rule> {
        let mut best: Option<&Rule> = None;
        for rule in rules {
            let matches = to.starts_with(rule.to.as_str())
                && from.starts_with(rule.from.as_str())
                && (rule.origins.is_empty() || rule.origins.contains(origin));
            // Strictly better only, so the first in file order wins a tie.
            if matches && best.is_none_or(|b| rule_rank(rule) > rule_rank(b)) {
                best = Some(rule);
            }
        }
        best
    }

    /// The inbound rule for a call from `carrier` to `to` from `from` (both normalised with
    /// [`dialed_number`]).
    pub fn match_inbound(&self, carrier: &TargetId, to: &str, from: &str) -> Option<&Rule> {
        Self::best_match(&self.inbound, carrier, to, from)
    }

    /// The outbound rule for a call from AI `provider` to `to` from `from`.
    pub fn match_outbound(&self, provider: &TargetId, to: &str, from: &str) -> Option<&Rule> {
        Self::best_match(&self.outbound, provider, to, from)
    }

    /// Whether a final `status` from a target should move the call to the next candidate.
    pub fn should_failover(&self, status: u16) -> bool {
        self.failover.should_failover(status)
    }

    /// What the table does when every candidate of a rule is down.
    pub fn all_down_policy(&self) -> AllDownPolicy {
        self.all_down
    }

    /// Rules of one direction in the order they are considered (most specific first).
    fn rules_in_match_order(rules: &[Rule]) -> Vec<&Rule> {
        let mut v: Vec<&Rule> = rules.iter().collect();
        v.sort_by(|a, b| rule_rank(b).cmp(&rule_rank(a)).then(a.index.cmp(&b.index)));
        v
    }

    /// Human-readable resolved table, for `holdfast check FILE`.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "configuration: {} (valid)", self.file_name);
        let _ = writeln!(out, "\nlisteners:");
        for l in &self.listen {
            let _ = writeln!(out, "  {} {}", l.transport, l.addr);
        }
        let _ = writeln!(
            out,
            "  advertised host: {}",
            self.advertise.as_deref().unwrap_or("(the listen address)")
        );
        let m = &self.media;
        let _ = writeln!(out, "\nmedia:");
        let _ = writeln!(
            out,
            "  bind {}, ports {}-{} ({} calls), {} worker thread(s), io {}",
            m.addrs
                .iter()
                .map(|a| if a.advertise == a.bind {
                    a.bind.to_string()
                } else {
                    format!("{} (advertised in SDP as {})", a.bind, a.advertise)
                })
                .collect::<Vec<_>>()
                .join(" and "),
            m.ports.start(),
            m.ports.end(),
            (usize::from(*m.ports.end() - *m.ports.start()) + 1) / 4,
            m.threads,
            m.io.as_str()
        );
        let _ = writeln!(
            out,
            "  media timeout: carrier leg {:?}, AI leg {:?}",
            m.timeout, m.ai_timeout
        );
        let _ = writeln!(
            out,
            "  media latching: {} (learning window {:?})",
            m.latching.as_str(),
            m.learning_window
        );
        for (role, title) in [
            (Role::Carrier, "carriers"),
            (Role::AiProvider, "AI providers"),
        ] {
            let _ = writeln!(out, "\n{title}:");
            let mut any = false;
            for t in self.targets().filter(|t| t.role == role) {
                any = true;
                // A WebSocket provider is reached by its URL; its `uri` is only the URL's
                // host and port, as the health table and DNS use it.
                match (&t.ws, t.role) {
                    (Some(ws), _) => {
                        let _ =
                            writeln!(out, "  {}  {}  (kind {})", t.id, ws.url, ws.kind.as_str());
                    }
                    (None, Role::AiProvider) => {
                        let _ = writeln!(out, "  {}  {}  (kind sip)", t.id, t.uri);
                    }
                    (None, Role::Carrier) => {
                        let _ = writeln!(out, "  {}  {}", t.id, t.uri);
                    }
                }
                let capacity = t
                    .max_calls
                    .map_or_else(|| "unlimited".to_owned(), |m| format!("{m} calls"));
                let _ = writeln!(
                    out,
                    "      region {}, priority {}, weight {}, capacity {}, ping {}",
                    t.region,
                    t.priority,
                    t.weight,
                    capacity,
                    if t.ping { "on" } else { "off" }
                );
                let sources = if t.sources.is_empty() {
                    "(none: never classified as an origin)".to_owned()
                } else {
                    t.sources
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                let _ = writeln!(out, "      sources {sources}");
                if t.latching != m.latching {
                    let _ = writeln!(out, "      media latching {}", t.latching.as_str());
                }
                if !t.headers.is_empty() {
                    let h: Vec<String> =
                        t.headers.iter().map(|(n, v)| format!("{n}: {v}")).collect();
                    let _ = writeln!(out, "      extra headers {}", h.join("; "));
                }
            }
            if !any {
                let _ = writeln!(out, "  (none)");
            }
        }
        for (direction, rules) in [
            (Direction::Inbound, &self.inbound),
            (Direction::Outbound, &self.outbound),
        ] {
            let (from_side, to_side) = match direction {
                Direction::Inbound => ("carriers", "AI providers"),
                Direction::Outbound => ("AI providers", "carriers"),
            };
            let _ = writeln!(
                out,
                "\n{} rules (from {from_side} to {to_side}; in match order):",
                direction.as_str()
            );
            if rules.is_empty() {
                let _ = writeln!(out, "  (none: such calls are rejected)");
            }
            for rule in Self::rules_in_match_order(rules) {
                let pat = |s: &str| {
                    if s.is_empty() {
                        "*".to_owned()
                    } else {
                        format!("{s}*")
                    }
                };
                let origins = if rule.origins.is_empty() {
                    "any".to_owned()
                } else {
                    rule.origins
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                let _ = writeln!(
                    out,
                    "  {}: to {} from {} via {} -> regions [{}]",
                    rule.name(),
                    pat(&rule.to),
                    pat(&rule.from),
                    origins,
                    rule.regions.join(", ")
                );
                let mut cands: Vec<&Target> = rule
                    .targets
                    .iter()
                    .filter_map(|id| self.target(id))
                    .collect();
                cands.sort_by_key(|t| t.priority);
                let list: Vec<String> = cands
                    .iter()
                    .map(|t| format!("{} (priority {}, weight {})", t.id, t.priority, t.weight))
                    .collect();
                let _ = writeln!(out, "      candidates: {}", list.join(", "));
            }
        }
        let specs = |v: &[crate::config::CodeSpec]| {
            v.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = writeln!(out, "\nfailover:");
        let _ = writeln!(
            out,
            "  next candidate on {}; never on {}; 1xx/2xx never",
            specs(&self.failover.failover_codes),
            specs(&self.failover.no_failover_codes)
        );
        let _ = writeln!(
            out,
            "  attempt timeout {}; when every candidate is down: {}",
            format_duration(self.attempt_timeout),
            self.all_down
        );
        let b = &self.breaker;
        let _ = writeln!(out, "\ncircuit breaker (per target):");
        let _ = writeln!(
            out,
            "  opens on {} consecutive failures within {}, or, once {} attempts fall within {}, \
             when {}% of the last {} failed",
            b.failures,
            format_duration(b.window),
            b.min_attempts,
            format_duration(b.window),
            b.failure_percent,
            b.min_attempts
        );
        let _ = writeln!(
            out,
            "  open for {}, then half-open: 1 probe call, 2 more per success, closed after {} successes",
            format_duration(b.cooldown),
            b.probe_successes
        );
        let cap = match b.max_ejection_percent {
            0 => "breakers never keep a target out (advisory only)".to_owned(),
            100 => "every target of a rule may be ejected".to_owned(),
            p => {
                let p = usize::from(p);
                format!(
                    "at most {p}% of a rule's targets ejected at once, rounded down (a rule \
                     with fewer than {} targets ejects none)",
                    100_usize.div_ceil(p)
                )
            }
        };
        let _ = writeln!(
            out,
            "  {cap}; when every usable target is ejected they are tried anyway (panic mode)"
        );
        out
    }
}

#[cfg(test)]
mod tests;
