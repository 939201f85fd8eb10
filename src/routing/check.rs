//! What `holdfast check FILE` prints: the resolved routing table, then the admin API, the
//! call records and who gets answers (the guard's settings). The binary adds the call
//! capacity, which needs the process's limits. Never loads anything but the one file.
use std::path::Path;

use crate::config::{format_duration, load, Config, ConfigError, RateLimit, RecordsSettings};
use crate::routing::RoutingTable;

/// For `holdfast check FILE`: loads the file and renders the resolved routing table.
pub fn check_file(path: &Path) -> Result<String, ConfigError> {
    Ok(render_check(&load(path)?))
}

/// What `holdfast check` prints for a loaded configuration: the resolved routing table, the
/// admin API and call records (the binary adds the call capacity, which needs the process's
/// limits).
pub fn render_check(config: &Config) -> String {
    let mut out = RoutingTable::new(config).render();
    let admin = match (&config.admin.listen, &config.admin.token_env) {
        (None, _) => "off".to_string(),
        (Some(a), Some(env)) => format!("http://{a} (bearer token from ${env})"),
        (Some(a), None) => format!("http://{a} (no token: loopback only)"),
    };
    let records = match &config.records {
        RecordsSettings::Off => "off".to_string(),
        RecordsSettings::Stdout => "stdout".to_string(),
        RecordsSettings::File(p) => p.display().to_string(),
    };
    let node = match &config.node_id {
        Some(id) => format!("{id} (call ids hf-{id}.<8 hex>-<n>)"),
        None => "none (call ids hf-<64 random bits>-<n>)".to_string(),
    };
    out.push_str(&format!(
        "\nnode: {node}\nadmin API: {admin}\ncall records: {records}\n"
    ));
    out.push_str(&guard_summary(config));
    out
}

/// `holdfast check`'s lines on who gets answers (`sip.unknown_sources`, `answer_options`,
/// `scanners`, `limits`).
fn guard_summary(config: &Config) -> String {
    let sip = &config.sip;
    let rate = |l: Option<RateLimit>| match l {
        Some(l) => format!("{}/s burst {}", l.rate, l.burst),
        None => "unlimited".to_string(),
    };
    let pingers = if sip.answer_options.is_empty() {
        "none".to_string()
    } else {
        sip.answer_options
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let own: Vec<String> = config
        .targets()
        .filter(|t| t.ws.is_none() && t.limits != sip.limits.known_sources)
        .map(|t| format!("{} {}", t.id, rate(t.limits)))
        .collect();
    let l = &sip.limits;
    format!(
        "unknown sources: {} (OPTIONS answered for: {pingers}); scanners: {} User-Agents\n\
         limits per source address: unknown {}, known {}{}; blocked for {} after twice the rate over {}\n",
        sip.unknown_sources.as_str(),
        sip.scanners.len(),
        rate(Some(l.per_source)),
        rate(l.known_sources),
        if own.is_empty() {
            String::new()
        } else {
            format!("; {}", own.join("; "))
        },
        format_duration(l.block_time),
        format_duration(l.sampling_interval),
    )
}
