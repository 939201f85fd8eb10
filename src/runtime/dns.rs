//! RFC 3263 §4 resolution of SIP targets (NAPTR → SRV → A/AAAA) into ordered destinations.
//!
//! This is I/O-shell code: it talks to DNS servers through `hickory-resolver` on tokio. The
//! ordering rules (NAPTR order/preference, SRV priority and RFC 2782 weighted selection) are
//! pure functions in this file with their own unit tests; randomness comes in as a seed.
//! It never health-checks, never caches beyond hickory's own cache and never decides when to
//! re-resolve: it reports the minimum TTL seen and the caller schedules the next resolution.
//!
//! Supported transports are UDP and TCP only (TLS for `sips:` is carried over TCP by the
//! caller, so a `sips:` target resolves to TCP destinations via `SIPS+D2T` / `_sips._tcp`).

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::NetError;
use hickory_resolver::proto::rr::rdata::{NAPTR, SRV};
use hickory_resolver::proto::rr::{Name, RData, RecordType};
use hickory_resolver::TokioResolver;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

pub use crate::health::{Destination, Transport};

/// Default SIP port (RFC 3261 §19.1.2).
pub const SIP_PORT: u16 = 5060;
/// Default SIPS port (RFC 3261 §19.1.2).
pub const SIPS_PORT: u16 = 5061;
/// TTL reported for results that involved no DNS (IP literals): re-resolution is pointless,
/// but a finite value keeps `now + ttl` from overflowing in the caller.
pub const NO_DNS_TTL: Duration = Duration::from_secs(24 * 3600);

/// What to resolve: the host part of a SIP URI plus what the URI says about port/transport.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SipTarget {
    /// Domain name or IP literal (an IPv6 literal may be in brackets).
    pub host: String,
    /// Explicit port from the URI, if any.
    pub port: Option<u16>,
    /// Explicit `transport=` parameter, if any.
    pub transport: Option<Transport>,
    /// `sips:` URI (TLS over TCP).
    pub secure: bool,
}

impl SipTarget {
    /// A `sip:` target with only a host.
    pub fn host(host: impl Into<String>) -> Self {
        Self {
            host: host.into(),
            port: None,
            transport: None,
            secure: false,
        }
    }
}

/// Result of resolving a [`SipTarget`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// Destinations in RFC 3263 order (try the first first), without duplicates.
    pub destinations: Vec<Destination>,
    /// Minimum TTL of every record that contributed; resolve again after this long.
    pub ttl: Duration,
}

/// Resolution failures.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// The host is neither an IP literal nor a valid domain name.
    #[error("invalid SIP host {host:?}: {reason}")]
    InvalidHost {
        /// The offending host.
        host: String,
        /// Why it was rejected.
        reason: String,
    },
    /// The resolver could not be configured.
    #[error("DNS resolver configuration: {0}")]
    Config(String),
    /// A lookup failed for another reason than "no such records" (timeout, SERVFAIL...).
    #[error("DNS {rtype} lookup of {name} failed: {source}")]
    Lookup {
        /// Queried name.
        name: String,
        /// Queried type.
        rtype: RecordType,
        /// Underlying error.
        #[source]
        source: NetError,
    },
    /// Every step completed but nothing usable was found.
    #[error("no usable NAPTR/SRV/A/AAAA records for {0}")]
    NoRecords(String),
}

/// An RFC 3263 resolver on top of hickory's caching stub resolver.
#[derive(Clone)]
pub struct Resolver {
    inner: TokioResolver,
    seed_counter: std::sync::Arc<AtomicU64>,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver").finish_non_exhaustive()
    }
}

impl Resolver {
    /// A resolver querying `nameservers` (each over UDP, falling back to TCP for truncated
    /// answers). An empty list means the system configuration (`nameserver` lines of
    /// `/etc/resolv.conf`, port 53).
    pub fn new(nameservers: &[SocketAddr]) -> Result<Self, DnsError> {
        let servers = if nameservers.is_empty() {
            system_nameservers()?
        } else {
            nameservers.to_vec()
        };
        let configs = servers
            .iter()
            .map(|ns| {
                let mut udp = ConnectionConfig::udp();
                udp.port = ns.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = ns.port();
                NameServerConfig::new(ns.ip(), true, vec![udp, tcp])
            })
            .collect();
        let config = ResolverConfig::from_name_servers(configs);
        let mut options = ResolverOpts::default();
        // SIP hosts are absolute names (RFC 3261 §19.1.1); never try search domains.
        options.ndots = 0;
        options.timeout = Duration::from_secs(2);
        options.attempts = 2;
        let inner = hickory_resolver::Resolver::builder_with_config(
            config,
            TokioRuntimeProvider::default(),
        )
        .with_options(options)
        .build()
        .map_err(|e| DnsError::Config(e.to_string()))?;
        Ok(Self {
            inner,
            seed_counter: std::sync::Arc::new(AtomicU64::new(0)),
        })
    }

    /// Resolve with a seed derived from the wall clock (SRV weighting only needs to spread
    /// load, not to be unpredictable).
    pub async fn resolve(&self, target: &SipTarget) -> Result<Resolved, DnsError> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let seed = nanos
            ^ self
                .seed_counter
                .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
        self.resolve_seeded(target, seed).await
    }

    /// Resolve per RFC 3263 §4 using `seed` for the RFC 2782 weighted SRV selection.
    pub async fn resolve_seeded(
        &self,
        target: &SipTarget,
        seed: u64,
    ) -> Result<Resolved, DnsError> {
        let mut rng = SmallRng::seed_from_u64(seed);
        let default_port = if target.secure { SIPS_PORT } else { SIP_PORT };
        // A sips: URI is always TLS over TCP; otherwise the transport parameter, or UDP when
        // nothing else says (RFC 3263 §4.1).
        let transport = if target.secure {
            Transport::Tcp
        } else {
            target.transport.unwrap_or(Transport::Udp)
        };

        // §4.1/§4.2: a numeric IP needs no DNS at all.
        if let Some(ip) = parse_ip_literal(&target.host) {
            return Ok(Resolved {
                destinations: vec![Destination::new(
                    SocketAddr::new(ip, target.port.unwrap_or(default_port)),
                    transport,
                )],
                ttl: NO_DNS_TTL,
            });
        }
        let name = fqdn(&target.host)?;
        let mut acc = Accumulator::default();

        // §4.2: an explicit port means A/AAAA only.
        if let Some(port) = target.port {
            self.add_addresses(&name, port, transport, &mut acc).await?;
            return acc.finish(&target.host);
        }

        // §4.1: an explicit transport skips NAPTR; go straight to SRV for that transport.
        let srv_queries: Vec<(Transport, Name)> = if target.transport.is_some() {
            vec![(transport, srv_name(&name, transport, target.secure)?)]
        } else {
            let naptr = self.naptr(&name, target.secure, &mut acc).await;
            if naptr.is_empty() {
                // §4.1: no NAPTR: SRV for each transport we support.
                if target.secure {
                    vec![(Transport::Tcp, srv_name(&name, Transport::Tcp, true)?)]
                } else {
                    vec![
                        (Transport::Udp, srv_name(&name, Transport::Udp, false)?),
                        (Transport::Tcp, srv_name(&name, Transport::Tcp, false)?),
                    ]
                }
            } else {
                naptr
            }
        };

        for (t, srv) in srv_queries {
            let records = match self.inner.lookup(srv.clone(), RecordType::SRV).await {
                Ok(lookup) => {
                    let mut v = Vec::new();
                    for r in lookup.answers() {
                        acc.ttl(r.ttl);
                        if let RData::SRV(s) = &r.data {
                            v.push(s.clone());
                        }
                    }
                    v
                }
                Err(e) => {
                    acc.soft_error(srv.to_ascii(), RecordType::SRV, e);
                    continue;
                }
            };
            for s in order_srv(records, &mut rng) {
                // RFC 2782: a target of "." means the service is decidedly not available.
                if s.target.is_root() {
                    continue;
                }
                if let Err(e) = self.add_addresses(&s.target, s.port, t, &mut acc).await {
                    // One dead SRV target must not hide the others.
                    acc.error.get_or_insert(e);
                }
            }
            acc.srv_found = true;
        }
        if acc.destinations.is_empty() && !acc.srv_found {
            // §4.2: no SRV records: A/AAAA of the host, default port.
            self.add_addresses(&name, default_port, transport, &mut acc)
                .await?;
        }
        acc.finish(&target.host)
    }

    /// NAPTR step (RFC 3263 §4.1): usable services in order, SRV names to query next.
    async fn naptr(
        &self,
        name: &Name,
        secure: bool,
        acc: &mut Accumulator,
    ) -> Vec<(Transport, Name)> {
        match self.inner.lookup(name.clone(), RecordType::NAPTR).await {
            Ok(lookup) => {
                let mut records = Vec::new();
                for r in lookup.answers() {
                    if let RData::NAPTR(n) = &r.data {
                        acc.ttl(r.ttl);
                        records.push(n.clone());
                    }
                }
                order_naptr(&records, secure)
            }
            Err(e) => {
                // Some middleboxes mishandle NAPTR queries; fall through to SRV but keep the
                // error in case nothing else works either.
                acc.soft_error(name.to_ascii(), RecordType::NAPTR, e);
                Vec::new()
            }
        }
    }

    /// A then AAAA of `host`, each address becoming a destination.
    async fn add_addresses(
        &self,
        host: &Name,
        port: u16,
        transport: Transport,
        acc: &mut Accumulator,
    ) -> Result<(), DnsError> {
        let (a, aaaa) = tokio::join!(
            self.inner.lookup(host.clone(), RecordType::A),
            self.inner.lookup(host.clone(), RecordType::AAAA)
        );
        let mut hard_error = None;
        for (rtype, result) in [(RecordType::A, a), (RecordType::AAAA, aaaa)] {
            match result {
                Ok(lookup) => {
                    for r in lookup.answers() {
                        let ip = match &r.data {
                            RData::A(a) => IpAddr::V4(a.0),
                            RData::AAAA(aaaa) => IpAddr::V6(aaaa.0),
                            _ => continue,
                        };
                        acc.ttl(r.ttl);
                        acc.push(Destination::new(SocketAddr::new(ip, port), transport));
                    }
                }
                Err(e) if e.is_no_records_found() => {}
                Err(source) => {
                    hard_error.get_or_insert(DnsError::Lookup {
                        name: host.to_ascii(),
                        rtype,
                        source,
                    });
                }
            }
        }
        match hard_error {
            Some(e) if acc.destinations.is_empty() => Err(e),
            _ => Ok(()),
        }
    }
}

#[derive(Default)]
struct Accumulator {
    destinations: Vec<Destination>,
    ttl_secs: Option<u32>,
    srv_found: bool,
    error: Option<DnsError>,
}

impl Accumulator {
    fn ttl(&mut self, ttl: u32) {
        self.ttl_secs = Some(self.ttl_secs.map_or(ttl, |t| t.min(ttl)));
    }

    fn push(&mut self, d: Destination) {
        if !self.destinations.contains(&d) {
            self.destinations.push(d);
        }
    }

    fn soft_error(&mut self, name: String, rtype: RecordType, e: NetError) {
        if !e.is_no_records_found() {
            self.error.get_or_insert(DnsError::Lookup {
                name,
                rtype,
                source: e,
            });
        }
    }

    fn finish(self, host: &str) -> Result<Resolved, DnsError> {
        if self.destinations.is_empty() {
            return Err(self
                .error
                .unwrap_or_else(|| DnsError::NoRecords(host.to_owned())));
        }
        Ok(Resolved {
            destinations: self.destinations,
            ttl: Duration::from_secs(u64::from(self.ttl_secs.unwrap_or(0))),
        })
    }
}

/// `1.2.3.4`, `::1` or `[::1]`.
fn parse_ip_literal(host: &str) -> Option<IpAddr> {
    let h = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    h.parse().ok()
}

fn fqdn(host: &str) -> Result<Name, DnsError> {
    let mut name = Name::from_ascii(host).map_err(|e| DnsError::InvalidHost {
        host: host.to_owned(),
        reason: e.to_string(),
    })?;
    if name.is_root() || name.num_labels() == 0 {
        return Err(DnsError::InvalidHost {
            host: host.to_owned(),
            reason: "empty name".to_owned(),
        });
    }
    name.set_fqdn(true);
    Ok(name)
}

/// `_sip._udp.<name>`, `_sip._tcp.<name>` or `_sips._tcp.<name>` (RFC 3263 §4.1).
fn srv_name(name: &Name, transport: Transport, secure: bool) -> Result<Name, DnsError> {
    let service = if secure { "_sips" } else { "_sip" };
    let proto = match transport {
        Transport::Udp => "_udp",
        Transport::Tcp => "_tcp",
    };
    name.prepend_label(proto)
        .and_then(|n| n.prepend_label(service))
        .map_err(|e| DnsError::InvalidHost {
            host: name.to_ascii(),
            reason: e.to_string(),
        })
}

/// NAPTR selection (RFC 3263 §4.1, RFC 3403 §4): keep records with the `S` flag, an empty
/// regexp and a service we support (`SIP+D2U`, `SIP+D2T`; `SIPS+D2T` only for `sips:`, which
/// must use nothing else), sorted by order then preference. Returns the SRV names to query.
pub fn order_naptr(records: &[NAPTR], secure: bool) -> Vec<(Transport, Name)> {
    let mut usable: Vec<(u16, u16, Transport, Name)> = records
        .iter()
        .filter(|n| n.flags.eq_ignore_ascii_case(b"s") && n.regexp.is_empty())
        .filter_map(|n| {
            let service = std::str::from_utf8(&n.services).ok()?.to_ascii_uppercase();
            let transport = match (service.as_str(), secure) {
                ("SIP+D2U", false) => Transport::Udp,
                ("SIP+D2T", false) => Transport::Tcp,
                ("SIPS+D2T", true) => Transport::Tcp,
                _ => return None,
            };
            Some((n.order, n.preference, transport, n.replacement.clone()))
        })
        .collect();
    // Stable sort keeps the server's order for exact ties.
    usable.sort_by_key(|&(order, pref, _, _)| (order, pref));
    usable
        .into_iter()
        .map(|(_, _, t, name)| (t, name))
        .collect()
}

/// SRV ordering (RFC 2782 "Usage rules"): priority ascending; within a priority, repeated
/// weighted random selection where zero-weight records come first in the running-sum list
/// and so are picked only rarely.
pub fn order_srv(mut records: Vec<SRV>, rng: &mut impl Rng) -> Vec<SRV> {
    records.sort_by_key(|s| s.priority);
    let mut out = Vec::with_capacity(records.len());
    let mut rest = records.as_slice();
    while let Some(first) = rest.first() {
        let end = rest
            .iter()
            .position(|s| s.priority != first.priority)
            .unwrap_or(rest.len());
        let (group, tail) = rest.split_at(end);
        rest = tail;
        // Zero weights at the beginning of the list.
        let mut group: Vec<&SRV> = group.iter().collect();
        group.sort_by_key(|s| s.weight != 0);
        while !group.is_empty() {
            let total: u32 = group.iter().map(|s| u32::from(s.weight)).sum();
            let pick = rng.random_range(0..=total);
            let mut running = 0u32;
            let mut index = group.len() - 1;
            for (i, s) in group.iter().enumerate() {
                running += u32::from(s.weight);
                if running >= pick {
                    index = i;
                    break;
                }
            }
            out.push(group.remove(index).clone());
        }
    }
    out
}

/// `nameserver` lines of `/etc/resolv.conf`, port 53.
fn system_nameservers() -> Result<Vec<SocketAddr>, DnsError> {
    let text = std::fs::read_to_string("/etc/resolv.conf")
        .map_err(|e| DnsError::Config(format!("/etc/resolv.conf: {e}")))?;
    let servers = parse_resolv_conf(&text);
    if servers.is_empty() {
        return Err(DnsError::Config(
            "no nameserver in /etc/resolv.conf and none configured".to_owned(),
        ));
    }
    Ok(servers)
}

fn parse_resolv_conf(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some("nameserver")).then_some(())?;
            // Strip an IPv6 zone id ("fe80::1%eth0"): SocketAddr cannot carry it by name.
            let ip: IpAddr = words.next()?.split('%').next()?.parse().ok()?;
            Some(SocketAddr::new(ip, 53))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> Name {
        Name::from_ascii(s).expect("test name")
    }

    fn naptr(order: u16, pref: u16, flags: &str, service: &str, repl: &str) -> NAPTR {
        NAPTR::new(
            order,
            pref,
            flags.as_bytes().into(),
            service.as_bytes().into(),
            Box::default(),
            name(repl),
        )
    }

    #[test]
    fn naptr_order_then_preference_and_supported_services_only() {
        let recs = vec![
            naptr(20, 10, "s", "SIP+D2U", "_sip._udp.x.test."),
            naptr(10, 50, "S", "SIP+D2T", "_sip._tcp.x.test."),
            naptr(10, 60, "s", "SIPS+D2T", "_sips._tcp.x.test."),
            naptr(5, 10, "s", "SIP+D2S", "_sip._sctp.x.test."),
            naptr(1, 10, "a", "SIP+D2U", "x.test."),
        ];
        let got = order_naptr(&recs, false);
        assert_eq!(
            got,
            vec![
                (Transport::Tcp, name("_sip._tcp.x.test.")),
                (Transport::Udp, name("_sip._udp.x.test.")),
            ]
        );
        let secure = order_naptr(&recs, true);
        assert_eq!(secure, vec![(Transport::Tcp, name("_sips._tcp.x.test."))]);
    }

    fn srv(priority: u16, weight: u16, port: u16) -> SRV {
        SRV::new(priority, weight, port, name("h.test."))
    }

    #[test]
    fn srv_priority_ascending_weighted_within() {
        let recs = vec![srv(20, 0, 1), srv(10, 90, 2), srv(10, 10, 3), srv(30, 5, 4)];
        let mut first_is_heavy = 0;
        for seed in 0..1000 {
            let mut rng = SmallRng::seed_from_u64(seed);
            let out = order_srv(recs.clone(), &mut rng);
            let ports: Vec<u16> = out.iter().map(|s| s.port).collect();
            assert_eq!(ports.len(), 4);
            assert!(
                ports[..2].contains(&2) && ports[..2].contains(&3),
                "{ports:?}"
            );
            assert_eq!(&ports[2..], &[1, 4]);
            if ports[0] == 2 {
                first_is_heavy += 1;
            }
        }
        // Weight 90 vs 10: about 900 of 1000 (RFC 2782 running-sum selection).
        assert!((820..=960).contains(&first_is_heavy), "{first_is_heavy}");
    }

    #[test]
    fn srv_same_seed_same_order() {
        let recs = vec![srv(1, 10, 1), srv(1, 10, 2), srv(1, 10, 3), srv(1, 0, 4)];
        let a = order_srv(recs.clone(), &mut SmallRng::seed_from_u64(7));
        let b = order_srv(recs, &mut SmallRng::seed_from_u64(7));
        assert_eq!(a, b);
    }

    #[test]
    fn ip_literals() {
        assert_eq!(parse_ip_literal("[::1]"), Some("::1".parse().expect("ip")));
        assert_eq!(
            parse_ip_literal("10.0.0.1"),
            Some("10.0.0.1".parse().expect("ip"))
        );
        assert_eq!(parse_ip_literal("example.test"), None);
    }

    #[test]
    fn invalid_hosts_are_errors_not_panics() {
        assert!(matches!(fqdn(""), Err(DnsError::InvalidHost { .. })));
        assert!(matches!(fqdn("."), Err(DnsError::InvalidHost { .. })));
        let long = "a".repeat(300);
        assert!(matches!(fqdn(&long), Err(DnsError::InvalidHost { .. })));
        assert_eq!(fqdn("example.test").expect("name"), name("example.test."));
    }

    #[test]
    fn srv_names() {
        let n = name("example.test.");
        assert_eq!(
            srv_name(&n, Transport::Udp, false).expect("name"),
            name("_sip._udp.example.test.")
        );
        assert_eq!(
            srv_name(&n, Transport::Tcp, true).expect("name"),
            name("_sips._tcp.example.test.")
        );
    }

    #[test]
    fn resolv_conf_nameservers() {
        let got = parse_resolv_conf(
            "# c\nsearch x\nnameserver 10.0.0.53\nnameserver fe80::1%eth0\nnameserver bogus\n",
        );
        assert_eq!(
            got,
            vec![
                "10.0.0.53:53".parse().expect("addr"),
                "[fe80::1]:53".parse().expect("addr"),
            ]
        );
    }
}
