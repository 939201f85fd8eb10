//! Unit tests for routing: rule matching, source classification, plans, failover policy.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use super::*;
use crate::config;

/// Health and load as the test says.
#[derive(Default)]
struct View {
    down: HashSet<&'static str>,
    calls: HashMap<&'static str, u32>,
    /// Ejected by their breaker, with when.
    ejected: HashMap<&'static str, Instant>,
    /// Being resolved, until when.
    pending: HashMap<&'static str, Instant>,
    cordoned: HashSet<&'static str>,
}

impl AvailabilityView for View {
    fn is_healthy(&self, id: &TargetId) -> bool {
        !self.down.contains(id.as_str())
    }
    fn active_calls(&self, id: &TargetId) -> u32 {
        self.calls.get(id.as_str()).copied().unwrap_or(0)
    }
    fn is_cordoned(&self, id: &TargetId) -> bool {
        self.cordoned.contains(id.as_str())
    }
    fn availability(&self, id: &TargetId) -> TargetAvailability {
        if let Some(&until) = self.pending.get(id.as_str()) {
            TargetAvailability::Pending { until }
        } else if self.down.contains(id.as_str()) {
            TargetAvailability::Down
        } else if let Some(&since) = self.ejected.get(id.as_str()) {
            TargetAvailability::Ejected { since }
        } else {
            TargetAvailability::Usable
        }
    }
}

fn view(down: &[&'static str]) -> View {
    View {
        down: down.iter().copied().collect(),
        ..View::default()
    }
}

/// `ejected` by their breakers, in this order (the first one earliest).
fn ejected(down: &[&'static str], ejected: &[&'static str]) -> View {
    let t0 = Instant::now();
    let mut v = view(down);
    for (i, id) in ejected.iter().enumerate() {
        v.ejected
            .insert(id, t0 + std::time::Duration::from_secs(i as u64));
    }
    v
}

const BASE: &str = r#"
carriers:
  - { id: us-a, uri: "sip:127.0.0.1:5091", region: us, weight: 70, sources: ["10.0.0.0/8", "10.1.2.3:5060"] }
  - { id: us-b, uri: "sip:127.0.0.1:5092", region: us, weight: 30, max_calls: 2, sources: ["10.1.0.0/16"] }
  - { id: us-backup, uri: "sip:127.0.0.1:5094", region: us, priority: 5 }
  - { id: eu-a, uri: "sip:127.0.0.1:5093", region: eu, sources: ["192.0.2.0/24"] }
  - { id: eu-b, uri: "sip:127.0.0.1:5095", region: eu }
ai_providers:
  - { id: agent-a, uri: "sip:127.0.0.1:5081", region: us, sources: ["10.1.2.3", "127.0.0.1:5081"] }
  - { id: agent-b, uri: "sip:127.0.0.1:5082", region: us, sources: ["192.0.2.0/24", "10.1.2.0/24"] }
  - { id: agent-eu, uri: "sip:127.0.0.1:5083", region: eu }
routes:
  inbound:
    - { regions: [us], ai: [agent-a, agent-b] }
    - { match: { to: "+44" }, regions: [eu], ai: [agent-eu] }
    - { match: { to: "+4420" }, regions: [eu], ai: [agent-eu] }
    - { match: { to: "+4420", from: "+1" }, regions: [us], ai: [agent-b] }
    - { match: { to: "+4420", from: "+1", carriers: [eu-a] }, regions: [us], ai: [agent-a] }
  outbound:
    - { match: { to: "+1" }, regions: [us], carriers: [us-a, us-b, us-backup] }
    - { match: { to: "+44" }, regions: [eu], carriers: [eu-a, eu-b] }
    - { match: { to: "+1", ai: [agent-eu] }, regions: [us, eu], carriers: [us-backup] }
"#;

fn table_with(extra: &str) -> RoutingTable {
    let text = format!("{extra}\n{BASE}");
    let cfg = config::parse(&text, "test.yaml").unwrap_or_else(|e| panic!("{e}"));
    RoutingTable::new(&cfg)
}

fn table() -> RoutingTable {
    table_with("")
}

fn id(s: &str) -> TargetId {
    TargetId::from(s)
}

fn ids(plan: &Plan) -> Vec<&str> {
    plan.targets.iter().map(|t| t.as_str()).collect()
}

#[test]
fn dialed_number_normalises() {
    assert_eq!(dialed_number("+1 (555) 123-4567"), "+15551234567");
    assert_eq!(
        dialed_number("tel:+44.20.7946.0000;phone-context=x"),
        "+442079460000"
    );
    assert_eq!(
        dialed_number("sip:+15551234567@carrier.example;user=phone"),
        "+15551234567"
    );
    assert_eq!(dialed_number("SIPS:alice@example.com"), "alice");
    assert_eq!(dialed_number("sip:example.com"), "");
    assert_eq!(dialed_number("5551234"), "5551234");
}

#[test]
fn longest_to_prefix_wins() {
    let t = table();
    let c = id("eu-b");
    assert_eq!(
        t.match_inbound(&c, "+15550000", "+4411").map(|r| r.index),
        Some(0)
    );
    assert_eq!(
        t.match_inbound(&c, "+4412345", "+4411").map(|r| r.index),
        Some(1)
    );
    assert_eq!(
        t.match_inbound(&c, "+44201234", "+4411").map(|r| r.index),
        Some(2)
    );
}

#[test]
fn from_prefix_breaks_ties_then_origin_restriction() {
    let t = table();
    // Same `to` length: the rule with a matching `from` beats the one without.
    assert_eq!(
        t.match_inbound(&id("eu-b"), "+44201234", "+15550000")
            .map(|r| r.index),
        Some(3)
    );
    // Same to and from: a rule restricted to the calling carrier beats the unrestricted one.
    assert_eq!(
        t.match_inbound(&id("eu-a"), "+44201234", "+15550000")
            .map(|r| r.index),
        Some(4)
    );
    // The restricted rule never applies to another carrier.
    assert_eq!(
        t.match_inbound(&id("us-a"), "+44201234", "+15550000")
            .map(|r| r.index),
        Some(3)
    );
}

#[test]
fn outbound_match_and_no_match() {
    let t = table();
    assert_eq!(
        t.match_outbound(&id("agent-a"), "+15550000", "")
            .map(|r| r.index),
        Some(0)
    );
    assert_eq!(
        t.match_outbound(&id("agent-eu"), "+15550000", "")
            .map(|r| r.index),
        Some(2)
    );
    assert_eq!(t.match_outbound(&id("agent-a"), "+33123", ""), None);
}

#[test]
fn priority_then_weight_order() {
    let t = table();
    let rule = t.match_outbound(&id("agent-a"), "+1555", "").expect("rule");
    for seed in 0..50 {
        let plan = t.plan(rule, &view(&[]), seed);
        assert_eq!(plan.targets.len(), 3);
        assert_eq!(
            plan.targets[2].as_str(),
            "us-backup",
            "priority 5 always last"
        );
        assert!(!plan.fail_open);
        assert_eq!(plan.reason, None);
    }
    // Deterministic for a seed.
    assert_eq!(t.plan(rule, &view(&[]), 7), t.plan(rule, &view(&[]), 7));
}

#[test]
fn weighted_distribution_70_30() {
    let t = table();
    let rule = t.match_outbound(&id("agent-a"), "+1555", "").expect("rule");
    let v = view(&["us-backup"]);
    let n = 10_000u64;
    let first_a = (0..n)
        .filter(|seed| t.plan(rule, &v, *seed).targets[0].as_str() == "us-a")
        .count();
    let share = first_a as f64 / n as f64;
    assert!(
        (0.67..=0.73).contains(&share),
        "share of us-a first: {share}"
    );
}

#[test]
fn weight_zero_only_after_weighted() {
    let extra = r#"
routing: { seed: 1 }
"#;
    let text = format!(
        "{extra}\n{}",
        BASE.replace(
            "us-backup, uri: \"sip:127.0.0.1:5094\", region: us, priority: 5",
            "us-backup, uri: \"sip:127.0.0.1:5094\", region: us, weight: 0"
        )
    );
    let cfg = config::parse(&text, "t.yaml").unwrap_or_else(|e| panic!("{e}"));
    let t = RoutingTable::new(&cfg);
    let rule = t.match_outbound(&id("agent-a"), "+1555", "").expect("rule");
    for seed in 0..200 {
        assert_eq!(
            t.plan(rule, &view(&[]), seed).targets[2].as_str(),
            "us-backup"
        );
    }
}

#[test]
fn unhealthy_and_full_targets_are_skipped() {
    let t = table();
    let rule = t.match_outbound(&id("agent-a"), "+1555", "").expect("rule");
    let plan = t.plan(rule, &view(&["us-a"]), 3);
    assert_eq!(ids(&plan), vec!["us-b", "us-backup"]);
    let mut v = view(&[]);
    v.calls.insert("us-b", 2); // max_calls: 2
    let plan = t.plan(rule, &v, 3);
    assert_eq!(ids(&plan), vec!["us-a", "us-backup"]);
    v.calls.insert("us-b", 1);
    assert!(ids(&t.plan(rule, &v, 3)).contains(&"us-b"));
}

#[test]
fn all_down_reject_gives_reason() {
    let t = table();
    let rule = t.match_outbound(&id("agent-a"), "+4420", "").expect("rule");
    let plan = t.plan(rule, &view(&["eu-a", "eu-b"]), 1);
    assert!(plan.is_empty());
    assert!(!plan.fail_open);
    assert_eq!(
        plan.reason.as_deref(),
        Some("no healthy carrier in regions [eu]")
    );
}

#[test]
fn region_is_never_left_even_fail_open() {
    for extra in ["", "health: { all_down: fail_open }"] {
        let t = table_with(extra);
        let mut rule = t
            .match_outbound(&id("agent-a"), "+4420", "")
            .expect("rule")
            .clone();
        // Validation refuses this in a file; the planner must refuse it on its own too.
        rule.targets.push(id("us-a"));
        rule.targets.push(id("us-b"));
        for seed in 0..100 {
            let plan = t.plan(&rule, &view(&["eu-a", "eu-b"]), seed);
            for target in &plan.targets {
                assert_eq!(t.target(target).map(|x| x.region.as_str()), Some("eu"));
            }
            if extra.is_empty() {
                assert!(plan.is_empty());
            } else {
                assert!(plan.fail_open);
                assert_eq!(plan.targets.len(), 2);
            }
        }
    }
}

#[test]
fn fail_open_still_respects_capacity() {
    let t = table_with("health: { all_down: fail_open }");
    let rule = t.match_outbound(&id("agent-a"), "+1555", "").expect("rule");
    let mut v = view(&["us-a", "us-b", "us-backup"]);
    v.calls.insert("us-b", 2);
    let plan = t.plan(rule, &v, 9);
    assert!(plan.fail_open);
    assert!(!ids(&plan).contains(&"us-b"));
    assert_eq!(plan.targets.len(), 2);
}

#[test]
fn healthy_but_full_reports_capacity() {
    let t = table_with("health: { all_down: fail_open }");
    let rule = t.match_outbound(&id("agent-a"), "+1555", "").expect("rule");
    let mut v = view(&["us-a", "us-backup"]);
    v.calls.insert("us-b", 5);
    let plan = t.plan(rule, &v, 1);
    // A healthy target exists, so this is not "all down": fail_open does not apply.
    assert!(plan.is_empty());
    assert!(!plan.fail_open);
    assert_eq!(
        plan.reason.as_deref(),
        Some("every healthy carrier in regions [us] is at capacity")
    );
}

#[test]
fn should_failover_policy() {
    let t = table();
    for code in [404, 484, 486, 603] {
        assert!(!t.should_failover(code), "{code}");
    }
    for code in [408, 500, 502, 503, 504, 580] {
        assert!(t.should_failover(code), "{code}");
    }
    for code in [100, 180, 183, 200, 202, 302, 480, 600, 604] {
        assert!(!t.should_failover(code), "{code}");
    }
    let t = table_with(
        r#"routing: { failover_codes: [408, "5xx", 600, "6xx"], no_failover_codes: [603, "4xx"] }"#,
    );
    assert!(t.should_failover(600));
    assert!(t.should_failover(606));
    assert!(!t.should_failover(603), "no_failover wins");
    assert!(
        !t.should_failover(408),
        "no_failover class 4xx wins over an exact 408"
    );
    assert!(t.should_failover(503));
}

#[test]
fn classify_source_precedence() {
    let t = table();
    let sa = |s: &str| s.parse::<SocketAddr>().expect("addr");
    // IP:port beats every network, even a longer one (agent-a has 10.1.2.3/32).
    assert_eq!(
        t.classify_source(sa("10.1.2.3:5060")),
        Some(Origin::Carrier(id("us-a")))
    );
    // Other port: the /32 of agent-a is the longest prefix.
    assert_eq!(
        t.classify_source(sa("10.1.2.3:5070")),
        Some(Origin::AiProvider(id("agent-a")))
    );
    // /24 of agent-b beats /16 of us-b beats /8 of us-a.
    assert_eq!(
        t.classify_source(sa("10.1.2.9:5060")),
        Some(Origin::AiProvider(id("agent-b")))
    );
    assert_eq!(
        t.classify_source(sa("10.1.9.9:5060")),
        Some(Origin::Carrier(id("us-b")))
    );
    assert_eq!(
        t.classify_source(sa("10.9.9.9:5060")),
        Some(Origin::Carrier(id("us-a")))
    );
    // Same /24 for eu-a and agent-b: carriers win the tie.
    assert_eq!(
        t.classify_source(sa("192.0.2.50:5060")),
        Some(Origin::Carrier(id("eu-a")))
    );
    // A v4-mapped IPv6 peer is matched as IPv4.
    assert_eq!(
        t.classify_source(sa("[::ffff:127.0.0.1]:5081")),
        Some(Origin::AiProvider(id("agent-a")))
    );
    assert_eq!(t.classify_source(sa("203.0.113.1:5060")), None);
}

#[test]
fn render_lists_rules_in_match_order() {
    let out = table().render();
    let pos = |s: &str| {
        out.find(s)
            .unwrap_or_else(|| panic!("{s} missing in\n{out}"))
    };
    assert!(pos("inbound[4]") < pos("inbound[2]"));
    assert!(pos("inbound[2]") < pos("inbound[1]"));
    assert!(pos("inbound[1]") < pos("inbound[0]"));
    assert!(out.contains("us-b  sip:127.0.0.1:5092"));
    assert!(out.contains("capacity 2 calls"));
    assert!(out.contains("sources 10.0.0.0/8, 10.1.2.3:5060"));
}

// ------------------------------------------------------------ breakers: cap and panic mode

#[test]
fn a_rules_only_target_is_never_ejected() {
    let t = table();
    let rule = t.match_inbound(&id("eu-a"), "+4499", "").expect("rule");
    assert_eq!(rule.targets, vec![id("agent-eu")]);
    let plan = t.plan(rule, &ejected(&[], &["agent-eu"]), 1);
    assert_eq!(ids(&plan), vec!["agent-eu"]);
    assert_eq!(plan.capped, vec![id("agent-eu")], "kept by the cap");
    assert!(!plan.panic);
    assert!(plan.overrides_breaker(&id("agent-eu")));
    assert!(plan.reason.is_none());
}

#[test]
fn the_cap_keeps_the_earliest_ejections_and_puts_the_rest_back() {
    // eu: two carriers, both ejected; 50% of 2 = 1 may be out: eu-a (ejected first) stays
    // out, eu-b is put back.
    let t = table();
    let rule = t.match_outbound(&id("agent-a"), "+4420", "").expect("rule");
    let plan = t.plan(rule, &ejected(&[], &["eu-a", "eu-b"]), 1);
    assert_eq!(ids(&plan), vec!["eu-b"]);
    assert_eq!(plan.capped, vec![id("eu-b")]);
    assert!(!plan.overrides_breaker(&id("eu-a")));
    // One of two ejected: within the cap, the other carries the calls.
    let plan = t.plan(rule, &ejected(&[], &["eu-a"]), 1);
    assert_eq!(ids(&plan), vec!["eu-b"]);
    assert!(plan.capped.is_empty());
}

#[test]
fn cap_rounds_down_over_the_rules_targets() {
    // us: three carriers, 50% of 3 = 1 may be out.
    let t = table();
    let rule = t.match_outbound(&id("agent-a"), "+1555", "").expect("rule");
    let plan = t.plan(rule, &ejected(&[], &["us-a", "us-b", "us-backup"]), 3);
    assert_eq!(
        ids(&plan),
        vec!["us-b", "us-backup"],
        "us-a out, the rest back"
    );
    assert_eq!(plan.capped.len(), 2);
    // A cordoned target is not one of the rule's targets for the cap: of the two left,
    // none may be out.
    let mut v = ejected(&[], &["us-a", "us-b"]);
    v.cordoned.insert("us-backup");
    let plan = t.plan(rule, &v, 3);
    assert_eq!(ids(&plan), vec!["us-b"], "{plan:?}");
    assert_eq!(plan.capped, vec![id("us-b")]);
}

#[test]
fn max_ejection_percent_100_lets_all_go_then_panic_mode_tries_them() {
    let t = table_with("health: { breaker: { max_ejection_percent: 100 } }");
    let rule = t.match_outbound(&id("agent-a"), "+4420", "").expect("rule");
    let plan = t.plan(rule, &ejected(&[], &["eu-a", "eu-b"]), 1);
    assert!(plan.panic, "{plan:?}");
    assert!(!plan.fail_open);
    assert_eq!(plan.targets.len(), 2);
    assert!(plan.reason.is_none());
    assert!(plan.overrides_breaker(&id("eu-a")));
}

#[test]
fn panic_mode_never_outvotes_all_down_reject() {
    // eu-a failed its OPTIONS pings, eu-b is ejected by its breaker: panic mode tries eu-b
    // only; under fail_open, eu-a after it.
    for (yaml, want, fail_open) in [
        (
            "health: { breaker: { max_ejection_percent: 100 } }",
            vec!["eu-b"],
            false,
        ),
        (
            "health: { all_down: fail_open, breaker: { max_ejection_percent: 100 } }",
            vec!["eu-b", "eu-a"],
            true,
        ),
    ] {
        let t = table_with(yaml);
        let rule = t.match_outbound(&id("agent-a"), "+4420", "").expect("rule");
        let plan = t.plan(rule, &ejected(&["eu-a"], &["eu-b"]), 1);
        assert!(plan.panic, "{yaml}: {plan:?}");
        assert_eq!(ids(&plan), want, "{yaml}");
        assert_eq!(plan.fail_open, fail_open, "{yaml}");
    }
    // Both failed their pings: the user's all_down policy decides, as before.
    let t = table();
    let rule = t.match_outbound(&id("agent-a"), "+4420", "").expect("rule");
    let plan = t.plan(rule, &ejected(&["eu-a", "eu-b"], &["eu-b"]), 1);
    assert!(plan.is_empty());
    assert!(!plan.panic);
    assert_eq!(
        plan.reason.as_deref(),
        Some("no healthy carrier in regions [eu]")
    );
}

#[test]
fn down_plus_ejected_within_the_cap_is_panic_not_refusal() {
    // Default cap (50%): eu-a down by pings, eu-b ejected (1 of 2: within the cap). No
    // usable target is left: panic mode, never "no healthy carrier".
    let t = table();
    let rule = t.match_outbound(&id("agent-a"), "+4420", "").expect("rule");
    let plan = t.plan(rule, &ejected(&["eu-a"], &["eu-b"]), 1);
    assert!(plan.panic);
    assert_eq!(ids(&plan), vec!["eu-b"]);
}

#[test]
fn ejected_and_full_reports_capacity() {
    let t = table_with("health: { breaker: { max_ejection_percent: 100 } }");
    let rule = t.match_outbound(&id("agent-a"), "+1555", "").expect("rule");
    let mut v = ejected(&["us-a", "us-backup"], &["us-b"]);
    v.calls.insert("us-b", 2);
    let plan = t.plan(rule, &v, 1);
    assert!(plan.is_empty());
    assert_eq!(
        plan.reason.as_deref(),
        Some("every healthy carrier in regions [us] is at capacity")
    );
}

#[test]
fn a_target_being_resolved_makes_the_call_wait_only_when_nothing_else_is_usable() {
    let t = table();
    let rule = t.match_outbound(&id("agent-a"), "+4420", "").expect("rule");
    let until = Instant::now() + std::time::Duration::from_secs(2);
    let mut v = view(&["eu-b"]);
    v.pending.insert("eu-a", until);
    let plan = t.plan(rule, &v, 1);
    assert!(plan.is_empty());
    assert_eq!(plan.wait_until, Some(until));
    assert_eq!(
        plan.reason.as_deref(),
        Some("no carrier in regions [eu] resolved yet")
    );
    let mut v = view(&[]);
    v.pending.insert("eu-a", until);
    let plan = t.plan(rule, &v, 1);
    assert_eq!(ids(&plan), vec!["eu-b"]);
    assert_eq!(plan.wait_until, None);
}

#[test]
fn render_shows_the_breaker_policy() {
    let out = table().render();
    for needle in [
        "opens on 2 consecutive failures within 30s, or, once 100 attempts fall within 30s, when 50% of the last 100 failed",
        "open for 30s, then half-open: 1 probe call, 2 more per success, closed after 5 successes",
        "at most 50% of a rule's targets ejected at once, rounded down (a rule with fewer than 2 targets ejects none)",
    ] {
        assert!(out.contains(needle), "{needle:?} missing in\n{out}");
    }
}
