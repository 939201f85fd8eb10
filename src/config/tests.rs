//! Unit tests for config parsing and validation: defaults, overrides, positions of semantic errors.

use super::*;

fn err(text: &str) -> ConfigError {
    match parse(text, "t.yaml") {
        Ok(_) => panic!("should be refused:\n{text}"),
        Err(e) => e,
    }
}

#[test]
fn empty_file_is_all_defaults() {
    for text in ["", "# nothing\n", "---\n"] {
        let cfg = parse(text, "t.yaml").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            cfg.sip.listen,
            vec![Listen {
                transport: Transport::Udp,
                addr: "127.0.0.1:5060".parse().unwrap()
            }]
        );
        assert_eq!(cfg.sip.t1, Duration::from_millis(500));
        assert_eq!(cfg.sip.t2, Duration::from_secs(4));
        assert_eq!(cfg.sip.t4, Duration::from_secs(5));
        assert_eq!(cfg.sip.max_message_size, 65535);
        assert_eq!(cfg.sip.max_forwards, 70);
        assert_eq!(cfg.sip.min_se, Duration::from_secs(90));
        assert_eq!(cfg.sip.user_agent, "holdfast");
        assert!(cfg.dns.nameservers.is_empty());
        assert_eq!(cfg.health.down_after, 3);
        assert_eq!(cfg.health.up_after, 2);
        assert_eq!(cfg.health.alive_codes, vec![200]);
        assert_eq!(cfg.health.breaker.failures, 2);
        assert_eq!(cfg.health.breaker.failure_percent, 50);
        assert_eq!(cfg.health.breaker.min_attempts, 100);
        assert_eq!(cfg.health.breaker.probe_successes, 5);
        assert_eq!(cfg.health.breaker.max_ejection_percent, 50);
        assert_eq!(cfg.health.all_down, AllDownPolicy::Reject);
        assert_eq!(cfg.routing.attempt_timeout, Duration::from_secs(1));
        assert_eq!(cfg.routing.seed, None);
        assert!(cfg.routing.failover.should_failover(503));
        assert!(!cfg.routing.failover.should_failover(486));
    }
}

#[test]
fn per_target_overrides_resolve() {
    let cfg = parse(
        r#"
health: { alive_codes: [200, 481] }
dns: { nameservers: ["127.0.0.1:5353", "::1"] }
sip: { advertise: "[2001:db8::7]" }
carriers:
  - { id: a, uri: "sip:a.example", region: us, alive_codes: [200, 404], ping: false }
  - { id: b, uri: "sip:b.example:5070;transport=tcp", region: us, max_calls: 5 }
"#,
        "t.yaml",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.carriers[0].alive_codes, vec![200, 404]);
    assert!(!cfg.carriers[0].ping);
    assert_eq!(cfg.carriers[1].alive_codes, vec![200, 481]);
    assert!(cfg.carriers[1].ping);
    assert_eq!(cfg.carriers[1].max_calls, Some(5));
    assert_eq!(cfg.carriers[1].uri.transport, Some(Transport::Tcp));
    assert_eq!(cfg.dns.nameservers[1], "[::1]:53".parse().unwrap());
    assert_eq!(cfg.sip.advertise.as_deref(), Some("2001:db8::7"));
}

#[test]
fn anchors_and_aliases_work() {
    let cfg = parse(
        r#"
carriers:
  - &base { id: a, uri: "sip:a.example", region: us, weight: 5 }
  - { id: b, uri: "sip:b.example", region: us, weight: 7 }
"#,
        "t.yaml",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.carriers[0].weight, 5);
}

#[test]
fn semantic_errors_have_positions() {
    let e = err("sip:\n  t1: 5s\n  t2: 1s\n");
    assert_eq!((e.line, e.column, e.path.as_str()), (3, 7, "sip.t2"));
    let e = err("sip:\n  min_se: 30s\n");
    assert_eq!(e.path, "sip.min_se");
    assert!(e.message.contains("90s"));
    let e = err("health:\n  all_down: maybe\n");
    assert_eq!(
        e.to_string(),
        "t.yaml:2:13: health.all_down: expected `reject` or `fail_open`; got `maybe`"
    );
    let e = err("routing:\n  failover_codes: [408, \"2xx\"]\n");
    assert_eq!(
        (e.line, e.column, e.path.as_str()),
        (2, 25, "routing.failover_codes[1]")
    );
    let e = err("sip:\n  listen: [\"udp:127.0.0.1:5060\", \"udp:127.0.0.1:5060\"]\n");
    assert_eq!(e.path, "sip.listen[1]");
    let e = err("carriers:\n  - { id: a, uri: \"sip:a\", region: us, headers: { Via: x } }\n");
    assert_eq!(e.path, "carriers[0].headers.Via");
}

#[test]
fn shadowed_and_incomplete_rules_are_refused() {
    let base = "ai_providers:\n  - { id: a, uri: \"sip:a\", region: us }\nroutes:\n  inbound:\n";
    let e = err(&format!(
        "{base}    - {{ match: {{ to: \"+1\" }}, regions: [us], ai: [a] }}\n    - {{ match: {{ to: \"+1\" }}, regions: [us], ai: [a] }}\n"
    ));
    assert_eq!(e.path, "routes.inbound[1].match");
    assert!(e.message.contains("inbound[0]"), "{e}");
    let e = err(&format!("{base}    - {{ regions: [us] }}\n"));
    assert_eq!(e.path, "routes.inbound[0].ai");
    assert_eq!((e.line, e.column), (5, 7));
    let e = err(&format!("{base}    - {{ ai: [a] }}\n"));
    assert_eq!(e.path, "routes.inbound[0].regions");
    let e = err(&format!(
        "{base}    - {{ regions: [us], ai: [a], carriers: [a] }}\n"
    ));
    assert!(e.message.contains("unknown key `carriers`"), "{e}");
    assert_eq!(e.path, "routes.inbound[0].carriers");
}

#[test]
fn duplicate_source_in_one_role_is_refused() {
    let e = err(
        "carriers:\n  - { id: a, uri: \"sip:a\", region: us, sources: [\"10.0.0.1\"] }\n  - { id: b, uri: \"sip:b\", region: us, sources: [\"10.0.0.1/32\"] }\n",
    );
    assert_eq!(e.path, "carriers[1].sources[0]");
}

#[test]
fn display_format() {
    let e = ConfigError {
        file: "config/example.yaml".into(),
        line: 14,
        column: 7,
        path: "carriers[2].weight".into(),
        message: "expected an integer 0..=65535".into(),
    };
    assert_eq!(
        e.to_string(),
        "config/example.yaml:14:7: carriers[2].weight: expected an integer 0..=65535"
    );
}

#[test]
fn duplicate_yaml_key_is_refused_with_path() {
    let e = err("sip:\n  t1: 500ms\n  t1: 600ms\n");
    assert_eq!(e.path, "sip.t1", "{e}");
    assert_eq!(e.line, 3, "{e}");
}

// ------------------------------------------------------------------------- media section

#[test]
fn media_defaults_follow_the_sip_listener() {
    let cfg = parse("sip: { listen: [\"udp:10.1.2.3:5060\"] }\n", "t.yaml")
        .unwrap_or_else(|e| panic!("{e}"));
    let ip: std::net::IpAddr = "10.1.2.3".parse().unwrap();
    assert_eq!(cfg.media.addrs.v4.map(|a| a.bind), Some(ip));
    assert_eq!(
        cfg.media.addrs.v4.map(|a| a.advertise),
        Some(ip),
        "advertise defaults to bind"
    );
    assert_eq!(cfg.media.addrs.v6, None);
    assert_eq!(cfg.media.ports, 16384..=32767);
    assert_eq!(cfg.media.timeout, Duration::from_secs(30));
    assert_eq!(cfg.media.ai_timeout, Duration::from_secs(5));
    assert_eq!(cfg.media.check_timeout, Duration::from_secs(2));
    assert_eq!(cfg.media.port_quarantine, Duration::from_secs(60));
    assert!(cfg.media.threads >= 1);
    assert_eq!(cfg.media.io, crate::config::MediaIo::Auto);
}

#[test]
fn media_settings_parse() {
    let cfg = parse(
        "media:\n  bind: 0.0.0.0\n  advertise: 203.0.113.7\n  ports: \"20000-20099\"\n  threads: auto\n  timeout: 1m\n  ai_timeout: 5s\n  port_quarantine: 90s\n",
        "t.yaml",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        cfg.media.addrs.v4,
        Some(MediaAddr {
            bind: "0.0.0.0".parse().unwrap(),
            advertise: "203.0.113.7".parse().unwrap()
        })
    );
    assert_eq!(cfg.media.ports, 20000..=20099);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get().min(64));
    assert_eq!(cfg.media.threads, cores, "auto = one per core");
    assert_eq!(cfg.media.timeout, Duration::from_secs(60));
    assert_eq!(cfg.media.ai_timeout, Duration::from_secs(5));
    assert_eq!(cfg.media.port_quarantine, Duration::from_secs(90));
    let cfg = parse(
        "media: { threads: 3, advertise: \"[2001:db8::5]\", bind: \"::\" }\n",
        "t.yaml",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.media.threads, 3);
    assert_eq!(
        cfg.media.addrs.v6.map(|a| a.advertise),
        Some("2001:db8::5".parse::<std::net::IpAddr>().unwrap())
    );
}

#[test]
fn bad_port_ranges_are_refused_at_media_ports() {
    for (range, needle) in [
        ("\"40000-30000\"", "MIN-MAX"),
        ("\"100-2000\"", "1024"),
        ("\"30000-30002\"", "two even/odd port pairs"),
        ("\"30001-30004\"", "two even/odd port pairs"),
        ("\"30000-70000\"", "port range"),
        ("\"thirty\"", "port range"),
        ("30000", "port range"),
    ] {
        let e = err(&format!("media:\n  ports: {range}\n"));
        assert_eq!(
            (e.line, e.column, e.path.as_str()),
            (2, 10, "media.ports"),
            "{range}: {e}"
        );
        assert!(e.message.contains(needle), "{range}: {e}");
        assert!(
            e.to_string().starts_with("t.yaml:2:10: media.ports: "),
            "{range}: {e}"
        );
    }
}

#[test]
fn an_unspecified_bind_needs_an_advertise_address() {
    let e = err("media:\n  bind: 0.0.0.0\n");
    assert_eq!(
        (e.line, e.column, e.path.as_str()),
        (2, 9, "media.bind"),
        "{e}"
    );
    assert!(e.message.contains("media.advertise"), "{e}");
    // Bound through the SIP listener: the error points at the media section as a whole.
    let e = err("sip:\n  listen: [\"udp:0.0.0.0:5060\"]\n");
    assert_eq!(e.path, "media", "{e}");
    assert!(e.message.contains("media.advertise"), "{e}");
    let e = err("sip:\n  listen: [\"udp:0.0.0.0:5060\"]\nmedia:\n  ports: \"30000-30099\"\n");
    assert_eq!(
        (e.line, e.column, e.path.as_str()),
        (4, 3, "media"),
        "inside media: {e}"
    );
    let e = err("media:\n  bind: 0.0.0.0\n  advertise: 0.0.0.0\n");
    assert_eq!((e.line, e.path.as_str()), (3, "media.advertise"), "{e}");
    let e = err("media:\n  bind: 10.0.0.1\n  advertise: \"2001:db8::1\"\n");
    assert_eq!((e.line, e.path.as_str()), (3, "media.advertise"), "{e}");
    assert!(e.message.contains("families"), "{e}");
    let e = err("media:\n  bind: not-an-ip\n");
    assert_eq!(
        (e.line, e.column, e.path.as_str()),
        (2, 9, "media.bind"),
        "{e}"
    );
}

#[test]
fn media_threads_and_timeouts_are_checked() {
    for bad in ["0", "65", "many"] {
        let e = err(&format!("media:\n  threads: {bad}\n"));
        assert_eq!(
            (e.line, e.column, e.path.as_str()),
            (2, 12, "media.threads"),
            "{bad}: {e}"
        );
    }
    let e = err("media:\n  timeout: 0s\n");
    assert_eq!((e.line, e.path.as_str()), (2, "media.timeout"), "{e}");
    let e = err("media:\n  ai_timeout: 10\n");
    assert_eq!((e.line, e.path.as_str()), (2, "media.ai_timeout"), "{e}");
    let e = err("media:\n  check_timeout: 0ms\n");
    assert_eq!((e.line, e.path.as_str()), (2, "media.check_timeout"), "{e}");
}

#[test]
fn liveness_checks_default_per_kind_and_refuse_the_wrong_kind() {
    use crate::config::Liveness;
    let base = |carrier: &str, agent: &str, bot: &str| {
        format!(
            "carriers:\n  - {{ id: c, uri: \"sip:10.0.0.1\", region: us{carrier} }}\n\
             ai_providers:\n  - {{ id: a, uri: \"sip:a@10.0.0.2\", region: us{agent} }}\n\
             \x20 - {{ id: b, kind: media-stream, url: \"ws://10.0.0.3/s\", region: us{bot} }}\n"
        )
    };
    let cfg = parse(&base("", "", ""), "t.yaml").unwrap_or_else(|e| panic!("{e}"));
    let of = |cfg: &crate::config::Config, id: &str| cfg.target(id).unwrap().liveness;
    assert_eq!(of(&cfg, "c"), Liveness::Refresh);
    assert_eq!(of(&cfg, "a"), Liveness::Options);
    assert_eq!(of(&cfg, "b"), Liveness::Ping);
    let cfg = parse(
        &base(
            ", liveness: in-dialog-options",
            ", liveness: refresh",
            ", liveness: off",
        ),
        "t.yaml",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(of(&cfg, "c"), Liveness::InDialogOptions);
    assert_eq!(of(&cfg, "a"), Liveness::Refresh);
    assert_eq!(of(&cfg, "b"), Liveness::Off);
    for (text, line, path, says) in [
        (
            base(", liveness: ping", "", ""),
            2,
            "carriers[0].liveness",
            "WebSocket check",
        ),
        (
            base("", ", liveness: sometimes", ""),
            4,
            "ai_providers[0].liveness",
            "expected options",
        ),
        (
            base("", "", ", liveness: options"),
            5,
            "ai_providers[1].liveness",
            "SIP check",
        ),
    ] {
        let e = err(&text);
        assert_eq!((e.line, e.path.as_str()), (line, path), "{e}");
        assert!(e.message.contains(says), "{e}");
    }
}

#[test]
fn latching_defaults_to_strict_with_a_one_second_window() {
    use crate::media::relay::Latching;
    let cfg = parse(
        "carriers:\n  - { id: c, uri: \"sip:c.example\", region: us }\nai_providers:\n  - { id: p, uri: \"sip:p.example\", region: us }\n",
        "t.yaml",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.media.latching, Latching::Strict);
    assert_eq!(cfg.media.learning_window, Duration::from_secs(1));
    assert_eq!(cfg.carriers[0].latching, Latching::Strict);
    assert_eq!(cfg.ai_providers[0].latching, Latching::Strict);
}

#[test]
fn latching_global_and_per_target_overrides_resolve() {
    use crate::media::relay::Latching;
    let cfg = parse(
        r#"
media: { latching: any, learning_window: 250ms }
carriers:
  - { id: nat, uri: "sip:nat.example", region: us }
  - { id: tight, uri: "sip:t.example", region: us, latching: strict }
ai_providers:
  - { id: p, uri: "sip:p.example", region: us, latching: strict }
  - { id: q, uri: "sip:q.example", region: us }
  - { id: ws, kind: media-stream, url: "ws://127.0.0.1:9/x", region: us }
"#,
        "t.yaml",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.media.latching, Latching::Any);
    assert_eq!(cfg.media.learning_window, Duration::from_millis(250));
    let l: Vec<Latching> = cfg
        .carriers
        .iter()
        .chain(&cfg.ai_providers)
        .map(|t| t.latching)
        .collect();
    assert_eq!(
        l,
        [
            Latching::Any,
            Latching::Strict,
            Latching::Strict,
            Latching::Any,
            // A WebSocket provider's audio is holdfast's own bridge: always strict.
            Latching::Strict
        ]
    );
    // A zero window latches a NATed port at its first packet.
    let cfg = parse("media:\n  learning_window: 0s\n", "t.yaml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.media.learning_window, Duration::ZERO);
}

#[test]
fn bad_latching_values_are_refused_with_their_positions() {
    let e = err("media:\n  latching: loose\n");
    assert_eq!(
        (e.line, e.column, e.path.as_str()),
        (2, 13, "media.latching"),
        "{e}"
    );
    assert!(
        e.message.contains("strict") && e.message.contains("any"),
        "{e}"
    );
    let e = err("media:\n  learning_window: 2\n");
    assert_eq!(
        (e.line, e.path.as_str()),
        (2, "media.learning_window"),
        "{e}"
    );
    assert!(e.message.contains("unit"), "{e}");
    let e = err("media:\n  learning_window: 30s\n");
    assert_eq!(
        (e.line, e.path.as_str()),
        (2, "media.learning_window"),
        "{e}"
    );
    assert!(e.message.contains("10s"), "{e}");
    let e = err(
        "carriers:\n  - { id: a, uri: \"sip:a\", region: us }\n  - { id: b, uri: \"sip:b\", region: us, latching: yes }\n",
    );
    assert_eq!(
        (e.line, e.path.as_str()),
        (3, "carriers[1].latching"),
        "{e}"
    );
    let e = err("ai_providers:\n  - { id: p, uri: \"sip:p\", region: us, latching: all }\n");
    assert_eq!(e.path, "ai_providers[0].latching", "{e}");
    let e = err(
        "ai_providers:\n  - { id: w, kind: media-stream, url: \"ws://127.0.0.1:9/x\", region: us, latching: any }\n",
    );
    assert_eq!(
        (e.line, e.path.as_str()),
        (2, "ai_providers[0].latching"),
        "{e}"
    );
    assert!(e.message.contains("bridge"), "{e}");
    for bad in ["0s", "soon", "-5s"] {
        let e = err(&format!("media:\n  port_quarantine: {bad}\n"));
        assert_eq!(
            (e.line, e.column, e.path.as_str()),
            (2, 20, "media.port_quarantine"),
            "{bad}: {e}"
        );
    }
}

#[test]
fn media_io_is_one_of_auto_socket_raw() {
    use crate::config::MediaIo;
    for (text, io) in [
        ("auto", MediaIo::Auto),
        ("socket", MediaIo::Socket),
        ("raw", MediaIo::Raw),
    ] {
        let cfg =
            parse(&format!("media:\n  io: {text}\n"), "t.yaml").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cfg.media.io, io);
    }
    let e = err("media:\n  io: kernel\n");
    assert_eq!(
        (e.line, e.column, e.path.as_str()),
        (2, 7, "media.io"),
        "{e}"
    );
    assert!(e.message.contains("auto, socket or raw"), "{e}");
    // raw is IPv4 only: an IPv6 bind is refused at load, not at the first call.
    let e = err("media:\n  bind: \"2001:db8::1\"\n  io: raw\n");
    assert_eq!((e.line, e.path.as_str()), (3, "media.io"), "{e}");
    assert!(e.message.contains("IPv4"), "{e}");
}

#[test]
fn unknown_media_key_is_refused_with_its_path() {
    let e = err("media:\n  ports: \"30000-30099\"\n  rtp_timeout: 5s\n");
    assert_eq!(
        (e.line, e.column, e.path.as_str()),
        (3, 3, "media.rtp_timeout"),
        "{e}"
    );
    assert!(e.message.contains("unknown key `rtp_timeout`"), "{e}");
}

#[test]
fn admin_and_records() {
    let cfg = parse("", "/etc/holdfast/t.yaml").unwrap();
    assert_eq!(cfg.admin.listen, Some(DEFAULT_ADMIN_LISTEN));
    assert!(cfg.admin.token.is_none());
    assert_eq!(cfg.records, RecordsSettings::Off);
    let cfg = parse(
        "admin:\n  listen: \"off\"\nrecords:\n  path: calls.jsonl\n",
        "/etc/holdfast/t.yaml",
    )
    .unwrap();
    assert_eq!(cfg.admin.listen, None);
    assert_eq!(
        cfg.records,
        RecordsSettings::File("/etc/holdfast/calls.jsonl".into())
    );
    let cfg = parse("records:\n  path: \"-\"\n", "t.yaml").unwrap();
    assert_eq!(cfg.records, RecordsSettings::Stdout);

    // Open to the network without a token: refused, pointing at the line.
    let e = err("sip:\n  t1: 500ms\nadmin:\n  listen: 0.0.0.0:9090\n");
    assert_eq!((e.line, e.path.as_str()), (4, "admin.listen"), "{e}");
    assert!(e.message.contains("token_env"), "{e}");
    let e = err("admin:\n  listen: nine\n");
    assert_eq!(e.path, "admin.listen", "{e}");
    let e = err("admin:\n  token_env: HOLDFAST_TEST_SURELY_UNSET_VAR\n");
    assert_eq!(e.path, "admin.token_env", "{e}");
    assert!(e.message.contains("not set"), "{e}");
    // With a token from the environment, a wildcard listener is allowed.
    std::env::set_var("HOLDFAST_TEST_ADMIN_TOKEN_CFG", "t0ken");
    let cfg = parse(
        "admin:\n  listen: 0.0.0.0:9090\n  token_env: HOLDFAST_TEST_ADMIN_TOKEN_CFG\n",
        "t.yaml",
    )
    .unwrap();
    assert_eq!(cfg.admin.token.as_ref().map(|t| t.expose()), Some("t0ken"));
}

#[test]
fn breaker_keys_parse_and_are_range_checked() {
    let cfg = parse(
        "health:\n  breaker:\n    failures: 3\n    window: 10s\n    cooldown: 5s\n    failure_percent: 80\n    min_attempts: 20\n    probe_successes: 2\n    max_ejection_percent: 100\n",
        "t.yaml",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let b = cfg.health.breaker;
    assert_eq!(
        (b.failures, b.window, b.cooldown),
        (3, Duration::from_secs(10), Duration::from_secs(5))
    );
    assert_eq!(
        (
            b.failure_percent,
            b.min_attempts,
            b.probe_successes,
            b.max_ejection_percent
        ),
        (80, 20, 2, 100)
    );
    // 0% of a rule's targets may be ejected: the breakers only advise.
    let cfg = parse("health: { breaker: { max_ejection_percent: 0 } }", "t.yaml")
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.health.breaker.max_ejection_percent, 0);
    for (text, path, pos, word) in [
        (
            "health:\n  breaker:\n    failure_percent: 0\n",
            "health.breaker.failure_percent",
            (3, 22),
            "1..=100",
        ),
        (
            "health:\n  breaker:\n    failure_percent: 0.5\n",
            "health.breaker.failure_percent",
            (3, 22),
            "1..=100",
        ),
        (
            "health:\n  breaker:\n    min_attempts: 0\n",
            "health.breaker.min_attempts",
            (3, 19),
            "1..=10000",
        ),
        (
            "health:\n  breaker:\n    probe_successes: 1001\n",
            "health.breaker.probe_successes",
            (3, 22),
            "1..=1000",
        ),
        (
            "health:\n  breaker:\n    max_ejection_percent: 101\n",
            "health.breaker.max_ejection_percent",
            (3, 27),
            "0..=100",
        ),
        (
            "health:\n  breaker:\n    max_ejection: 50\n",
            "health.breaker.max_ejection",
            (3, 5),
            "unknown key",
        ),
    ] {
        let e = err(text);
        assert_eq!(e.path, path, "{e}");
        assert_eq!((e.line, e.column), pos, "{e}");
        assert!(e.message.contains(word), "{e}");
    }
}

// ------------------------------------------------------------------ dual-stack media and SIP

#[test]
fn media_bind_and_advertise_take_one_address_per_family() {
    let cfg = parse(
        "media:\n  bind: [127.0.0.1, \"::1\"]\n  advertise: [\"2001:db8::5\", 203.0.113.5]\n",
        "t.yaml",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let a = cfg.media.addrs;
    assert_eq!(
        a.v4,
        Some(MediaAddr {
            bind: "127.0.0.1".parse().unwrap(),
            advertise: "203.0.113.5".parse().unwrap()
        }),
        "advertise entries pair with the bind of their family, in any order"
    );
    assert_eq!(
        a.v6,
        Some(MediaAddr {
            bind: "::1".parse().unwrap(),
            advertise: "2001:db8::5".parse().unwrap()
        })
    );
    assert_eq!(
        a.first,
        IpFamily::V4,
        "the first bind is the fallback family"
    );
    // One family advertised, the other bound and advertised as itself.
    let cfg = parse(
        "media:\n  bind: [\"::1\", 10.0.0.5]\n  advertise: 198.51.100.1\n",
        "t.yaml",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.media.addrs.first, IpFamily::V6);
    assert_eq!(
        cfg.media.addrs.v6.map(|m| m.advertise),
        Some("::1".parse().unwrap())
    );
    assert_eq!(
        cfg.media.addrs.v4.map(|m| m.advertise),
        Some("198.51.100.1".parse().unwrap())
    );
    // A scalar still works; an IPv6-only bind leaves IPv4 out.
    let cfg = parse("media: { bind: \"[::1]\" }\n", "t.yaml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.media.addrs.v4, None);
    assert_eq!(cfg.media.addrs.family_for(IpFamily::V4), IpFamily::V6);
    // A dual-stack `::` with an IPv4 advertise relays IPv4 peers (as before).
    let cfg = parse(
        "media: { bind: \"::\", advertise: 203.0.113.7 }\n",
        "t.yaml",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        cfg.media.addrs.v4,
        Some(MediaAddr {
            bind: "::".parse().unwrap(),
            advertise: "203.0.113.7".parse().unwrap()
        })
    );
}

#[test]
fn media_bind_defaults_to_the_first_listener_of_each_family() {
    let cfg = parse(
        "sip:\n  listen: [\"udp:127.0.0.1:5060\", \"tcp:127.0.0.1:5060\", \"udp:[::1]:5060\"]\n",
        "t.yaml",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        cfg.sip.listen[2].addr,
        "[::1]:5060".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(
        cfg.media.addrs.v4.map(|m| m.bind),
        Some("127.0.0.1".parse().unwrap())
    );
    assert_eq!(
        cfg.media.addrs.v6.map(|m| m.bind),
        Some("::1".parse().unwrap())
    );
}

#[test]
fn bad_media_bind_and_advertise_lists_are_refused_with_their_position() {
    let e = err("media:\n  bind: [127.0.0.1, 127.0.0.2]\n");
    assert_eq!(
        (e.line, e.column, e.path.as_str()),
        (2, 21, "media.bind[1]"),
        "{e}"
    );
    assert!(e.message.contains("one address per IP family"), "{e}");
    let e = err("media:\n  bind: [127.0.0.1, \"::1\", \"::2\"]\n");
    assert_eq!(e.path, "media.bind[2]", "{e}");
    assert!(e.message.contains("one IPv4 and one IPv6"), "{e}");
    let e = err("media:\n  bind: []\n");
    assert_eq!((e.line, e.path.as_str()), (2, "media.bind"), "{e}");
    let e = err("media:\n  bind: [127.0.0.1, nope]\n");
    assert_eq!(e.path, "media.bind[1]", "{e}");
    assert!(e.message.contains("expected an IP address"), "{e}");
    let e = err("media:\n  bind: [127.0.0.1]\n  advertise: [203.0.113.5, \"2001:db8::5\"]\n");
    assert_eq!(
        (e.line, e.path.as_str()),
        (3, "media.advertise[1]"),
        "an advertised family needs a bind of it: {e}"
    );
    assert!(e.message.contains("families"), "{e}");
    let e = err("media:\n  bind: [127.0.0.1, \"::\"]\n");
    assert_eq!(
        e.path, "media.bind[1]",
        "an unspecified bind needs an advertise: {e}"
    );
    let e = err("media:\n  bind: { a: 1 }\n");
    assert_eq!(e.line, 2, "{e}");
    // raw I/O needs an IPv4 relay address; with one, IPv6 legs use socket I/O.
    assert!(parse(
        "media:\n  bind: [127.0.0.1, \"::1\"]\n  io: raw\n",
        "t.yaml"
    )
    .is_ok());
    let e = err("media:\n  bind: [\"::1\"]\n  io: raw\n");
    assert_eq!(e.path, "media.io", "{e}");
}

#[test]
fn guard_defaults() {
    let cfg = parse(
        "carriers:\n  - { id: a, uri: \"sip:a\", region: us, sources: [\"192.0.2.1\"] }\n",
        "t.yaml",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let sip = &cfg.sip;
    assert_eq!(sip.unknown_sources, UnknownSources::Drop);
    assert!(sip.answer_options.is_empty());
    for s in [
        "friendly-scanner",
        "sipvicious",
        "sipcli",
        "vaxsipuseragent",
        "sundayddr",
    ] {
        assert!(
            sip.scanners.iter().any(|x| x == s),
            "{s} in {:?}",
            sip.scanners
        );
    }
    let l = &sip.limits;
    assert_eq!(
        l.per_source,
        RateLimit {
            rate: 10,
            burst: 20
        }
    );
    assert_eq!(
        l.known_sources,
        Some(RateLimit {
            rate: 2000,
            burst: 4000
        })
    );
    assert_eq!(l.sampling_interval, Duration::from_secs(2));
    assert_eq!(l.block_time, Duration::from_secs(60));
    assert_eq!(l.log_interval, Duration::from_secs(60));
    assert_eq!(l.max_sources, 65536);
    assert_eq!(cfg.carriers[0].limits, l.known_sources);
}

#[test]
fn guard_settings_and_per_target_limits_parse() {
    let cfg = parse(
        r#"
sip:
  unknown_sources: reject
  answer_options: ["10.0.0.0/8", "192.0.2.9", "127.0.0.1:5099"]
  scanners: ["Evil-Dialer", "  spaced  "]
  limits:
    per_source: { rate: 3 }
    known_sources: { rate: 500, burst: 600 }
    sampling_interval: 500ms
    block_time: 5m
    log_interval: 10s
    max_sources: 1024
carriers:
  - { id: a, uri: "sip:a", region: us, limits: { rate: 50 } }
  - { id: b, uri: "sip:b", region: us, limits: off }
  - { id: c, uri: "sip:c", region: us, limits: { burst: 7 } }
  - { id: d, uri: "sip:d", region: us }
ai_providers:
  - { id: bot, kind: media-stream, url: "ws://127.0.0.1:9/", region: us }
"#,
        "t.yaml",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let sip = &cfg.sip;
    assert_eq!(sip.unknown_sources, UnknownSources::Reject);
    assert_eq!(sip.answer_options.len(), 3);
    assert_eq!(
        sip.scanners,
        vec!["evil-dialer".to_string(), "spaced".into()]
    );
    assert_eq!(sip.limits.per_source, RateLimit { rate: 3, burst: 6 });
    assert_eq!(
        sip.limits.known_sources,
        Some(RateLimit {
            rate: 500,
            burst: 600
        })
    );
    assert_eq!(sip.limits.sampling_interval, Duration::from_millis(500));
    assert_eq!(sip.limits.block_time, Duration::from_secs(300));
    assert_eq!(sip.limits.max_sources, 1024);
    let limit = |i: usize| cfg.carriers[i].limits;
    assert_eq!(
        limit(0),
        Some(RateLimit {
            rate: 50,
            burst: 100
        })
    );
    assert_eq!(limit(1), None);
    assert_eq!(
        limit(2),
        Some(RateLimit {
            rate: 500,
            burst: 7
        }),
        "rate from known_sources"
    );
    assert_eq!(
        limit(3),
        Some(RateLimit {
            rate: 500,
            burst: 600
        })
    );
    assert_eq!(
        cfg.ai_providers[0].limits, None,
        "WebSocket providers send no SIP"
    );
    // known_sources: off leaves targets without their own limits unlimited.
    let cfg = parse(
        "sip: { limits: { known_sources: off } }\ncarriers:\n  - { id: a, uri: \"sip:a\", region: us }\n",
        "t.yaml",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.sip.limits.known_sources, None);
    assert_eq!(cfg.carriers[0].limits, None);
    // An empty scanner list turns the check off.
    let cfg = parse("sip: { scanners: [] }\n", "t.yaml").unwrap_or_else(|e| panic!("{e}"));
    assert!(cfg.sip.scanners.is_empty());
}

#[test]
fn guard_errors_name_the_field_and_its_position() {
    let e = err("sip:\n  unknown_sources: maybe\n");
    assert_eq!(
        e.to_string(),
        "t.yaml:2:20: sip.unknown_sources: expected `drop` or `reject`; got `maybe`"
    );
    let e = err("sip:\n  answer_options: [\"10.0.0.0/8\", \"10.0.0.300\"]\n");
    assert_eq!(
        (e.line, e.column, e.path.as_str()),
        (2, 34, "sip.answer_options[1]")
    );
    let e = err("sip:\n  scanners: [\"ok\", \"  \"]\n");
    assert_eq!(e.path, "sip.scanners[1]");
    let e = err("sip:\n  limits:\n    per_source: off\n");
    assert_eq!(e.path, "sip.limits.per_source");
    assert!(e.message.contains("cannot be `off`"), "{e}");
    let e = err("sip:\n  limits:\n    per_source: { rate: 0 }\n");
    assert_eq!((e.line, e.path.as_str()), (3, "sip.limits.per_source.rate"));
    assert!(e.message.contains("1..=1000000"), "{e}");
    let e = err("sip:\n  limits:\n    known_sources: lots\n");
    assert_eq!(
        e.to_string(),
        "t.yaml:3:20: sip.limits.known_sources: expected `{ rate: N, burst: M }` or `off`; got \"lots\""
    );
    let e = err("sip:\n  limits:\n    per_source: { rate: 5, brust: 3 }\n");
    assert!(e.message.contains("unknown key `brust`"), "{e}");
    assert_eq!(e.line, 3);
    let e = err("sip:\n  limits:\n    max_sources: 3\n");
    assert_eq!(e.path, "sip.limits.max_sources");
    let e = err("sip:\n  limits:\n    block_time: 0s\n");
    assert_eq!(e.path, "sip.limits.block_time");
    let e = err("sip:\n  limits:\n    sampling_interval: 2\n");
    assert!(e.message.contains("no unit"), "{e}");
    let e = err(
        "carriers:\n  - { id: a, uri: \"sip:a\", region: us, limits: { rate: 10, burst: 0 } }\n",
    );
    assert_eq!(e.path, "carriers[0].limits.burst");
    let e = err(
        "ai_providers:\n  - { id: b, kind: media-stream, url: \"ws://127.0.0.1:9/\", region: us, limits: off }\n",
    );
    assert_eq!(e.path, "ai_providers[0].limits");
}

#[test]
fn node_id_is_optional_and_checked() {
    let base = "carriers: []\n";
    assert_eq!(parse(base, "t.yaml").unwrap().node_id, None);
    let cfg = parse(&format!("node:\n  id: eu-1_a\n{base}"), "t.yaml").unwrap();
    assert_eq!(cfg.node_id.as_deref(), Some("eu-1_a"));
    for bad in [
        "\"\"",
        "eu/1",
        "\"eu 1\"",
        "a123456789012345678901234567890123",
    ] {
        let e = err(&format!("node:\n  id: {bad}\n{base}"));
        assert_eq!((e.line, e.path.as_str()), (2, "node.id"), "{bad}: {e}");
        assert!(e.message.contains("letters, digits"), "{e}");
    }
    let e = err("node:\n  name: eu-1\n");
    assert!(e.to_string().contains("name"), "{e}");
}
