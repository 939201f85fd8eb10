//! The example configuration loads, and bad files are refused with an error that names
//! `file:line:column` and the field path.

use std::path::Path;
use std::time::Duration;

use holdfast::config::{self, AllDownPolicy, Role, Transport};
use holdfast::routing::{dialed_number, RoutingTable, TargetId};

#[test]
fn example_loads() {
    let cfg = config::load(Path::new("config/example.yaml")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.sip.listen.len(), 2);
    assert_eq!(cfg.sip.listen[0].transport, Transport::Udp);
    assert_eq!(cfg.sip.listen[1].transport, Transport::Tcp);
    assert_eq!(cfg.sip.listen[0].addr, "127.0.0.1:5060".parse().unwrap());
    assert_eq!(cfg.sip.t1, Duration::from_millis(500));
    assert_eq!(cfg.sip.session_expires, Duration::from_secs(1800));
    assert_eq!(cfg.health.all_down, AllDownPolicy::Reject);
    let ids: Vec<&str> = cfg.targets().map(|t| &*t.id).collect();
    assert_eq!(
        ids,
        ["carrier-a", "carrier-b", "carrier-eu", "agent-a", "agent-b"]
    );
    let agent_a = cfg.target("agent-a").expect("agent-a");
    assert_eq!(agent_a.role, Role::AiProvider);
    assert_eq!(agent_a.uri.port, Some(5081));
    assert_eq!(agent_a.uri.user.as_deref(), Some("agent"));
    assert_eq!(agent_a.alive_codes, vec![200]);
    assert_eq!(
        agent_a.headers,
        vec![("X-Tenant".to_owned(), "demo".to_owned())]
    );

    // The example routes as documented.
    let table = RoutingTable::new(&cfg);
    let from = |s: &str| table.classify_source(s.parse().unwrap());
    assert_eq!(
        from("127.0.0.1:5091"),
        Some(holdfast::routing::Origin::Carrier(TargetId::from(
            "carrier-a"
        )))
    );
    let carrier = TargetId::from("carrier-a");
    let rule = table
        .match_inbound(&carrier, &dialed_number("sip:+15551234567@x"), "")
        .expect("inbound rule");
    assert_eq!(rule.targets.len(), 2);
    let agent = TargetId::from("agent-a");
    let rule = table
        .match_outbound(&agent, &dialed_number("+44 20 7946 0000"), "")
        .expect("outbound rule");
    assert_eq!(rule.regions, vec!["eu".to_owned()]);
}

#[test]
fn check_file_renders_the_table() {
    let out = holdfast::routing::check::check_file(Path::new("config/example.yaml"))
        .unwrap_or_else(|e| panic!("{e}"));
    for needle in [
        "udp 127.0.0.1:5060",
        "tcp 127.0.0.1:5060",
        "carrier-a  sip:127.0.0.1:5091;transport=udp",
        "region us, priority 1, weight 70, capacity unlimited",
        "capacity 100 calls",
        "sources 127.0.0.1:5091",
        "outbound[1]: to +44* from * via any -> regions [eu]",
        "candidates: agent-a (priority 1, weight 1), agent-b (priority 2, weight 1)",
        "media latching: strict (learning window 1s)",
        "unknown sources: drop (OPTIONS answered for: none)",
        "limits per source address: unknown 10/s burst 20, known 2000/s burst 4000; carrier-b 50/s burst 100; blocked for 1m",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in:\n{out}");
    }
}

#[test]
fn unreadable_file_names_the_file() {
    let e = config::load(Path::new("tests/fixtures/config/does-not-exist.yaml")).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("tests/fixtures/config/does-not-exist.yaml: cannot read"),
        "{e}"
    );
}

/// (fixture, expected `file:line:col: path:` prefix, a word the message must contain)
const BAD: &[(&str, &str, &str)] = &[
    ("unknown_key", "5:5: carriers[0].weigth:", "unknown key"),
    (
        "wrong_type",
        "8:13: carriers[1].weight:",
        "expected an integer 0..=65535",
    ),
    ("wrong_type_list", "5:14: carriers[0].sources:", "sequence"),
    (
        "weight_range",
        "5:13: carriers[0].weight:",
        "expected an integer 0..=65535",
    ),
    ("bad_duration", "3:7: sip.t1:", "has no unit"),
    (
        "bad_duration_unit",
        "3:35: health.breaker.window:",
        "duration",
    ),
    (
        "unknown_target",
        "9:21: routes.inbound[0].ai[1]:",
        "unknown AI provider id `agent-z`",
    ),
    (
        "duplicate_id",
        "6:9: ai_providers[0].id:",
        "duplicate id `shared`",
    ),
    (
        "out_of_region",
        "12:30: routes.outbound[0].carriers[1]:",
        "not in this rule's regions [eu]",
    ),
    (
        "bad_cidr",
        "5:29: carriers[0].sources[1]:",
        "not a valid CIDR",
    ),
    (
        "unsupported_kind",
        "3:11: ai_providers[0].kind:",
        "unknown kind `websocket`",
    ),
    (
        "ws_bad_url",
        "4:10: ai_providers[0].url:",
        "does not start with ws:// or wss://",
    ),
    (
        "missing_api_key",
        "4:18: ai_providers[0].api_key_env:",
        "`HOLDFAST_TEST_UNSET_KEY_VARIABLE` is not set",
    ),
    ("missing_field", "2:5: carriers[0].uri:", "missing"),
    (
        "undeclared_region",
        "7:21: routes.inbound[0].regions[1]:",
        "not declared",
    ),
    (
        "unquoted_prefix",
        "7:20: routes.outbound[0].match.to:",
        "quoted",
    ),
    (
        "wrong_role",
        "11:27: routes.inbound[0].match.carriers[0]:",
        "AI provider",
    ),
    ("bad_uri", "3:10: carriers[0].uri:", "not supported yet"),
    (
        "empty_regions",
        "8:16: routes.inbound[0].regions:",
        "at least one region",
    ),
    ("max_calls_zero", "5:16: carriers[0].max_calls:", "1..="),
    (
        "bad_unknown_sources",
        "3:20: sip.unknown_sources:",
        "expected `drop` or `reject`",
    ),
    (
        "bad_rate_limit",
        "5:14: sip.limits.per_source.burst:",
        "expected an integer 1..=10000000",
    ),
];

#[test]
fn bad_fixtures_report_file_line_column_and_path() {
    for (name, at, word) in BAD {
        let file = format!("tests/fixtures/config/{name}.yaml");
        let err = config::load(Path::new(&file))
            .err()
            .unwrap_or_else(|| panic!("{file} should be refused"));
        let text = err.to_string();
        let prefix = format!("{file}:{at} ");
        assert!(
            text.starts_with(&prefix),
            "{name}: got {text:?}, want prefix {prefix:?}"
        );
        assert!(text.contains(word), "{name}: {text:?} lacks {word:?}");
    }
}

#[test]
fn yaml_syntax_error_has_a_position() {
    let file = "tests/fixtures/config/bad_yaml.yaml";
    let err = config::load(Path::new(file)).unwrap_err();
    assert_eq!(err.file, file);
    assert!(err.line >= 2, "{err}");
    assert!(err.column >= 1, "{err}");
    assert!(err.to_string().contains("invalid YAML"), "{err}");
}

#[test]
fn check_shows_the_node_part_of_call_ids() {
    let named = config::parse("node:\n  id: eu-1\n", "t.yaml").unwrap_or_else(|e| panic!("{e}"));
    let out = holdfast::routing::check::render_check(&named);
    assert!(
        out.contains("node: eu-1 (call ids hf-eu-1.<8 hex>-<n>)"),
        "{out}"
    );
    let anon = config::parse("", "t.yaml").unwrap_or_else(|e| panic!("{e}"));
    let out = holdfast::routing::check::render_check(&anon);
    assert!(out.contains("node: none"), "{out}");
}
