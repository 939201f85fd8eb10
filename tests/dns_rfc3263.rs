//! RFC 3263 resolution against an in-process authoritative DNS server (hickory-server) bound
//! to 127.0.0.1 on a free port, serving the test zone `example.test.`.

mod common;

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use common::dns::*;
use hickory_server::proto::rr::Record;
use holdfast::runtime::dns::{Destination, DnsError, Resolver, SipTarget, Transport, NO_DNS_TTL};

fn zone_records() -> Vec<Record> {
    vec![
        // NAPTR chain: TCP first (order 10), then UDP (order 20); SIPS+D2T only for sips:.
        naptr(
            "example.test.",
            3600,
            20,
            10,
            "SIP+D2U",
            "_sip._udp.example.test.",
        ),
        naptr(
            "example.test.",
            3600,
            10,
            10,
            "SIP+D2T",
            "_sip._tcp.example.test.",
        ),
        naptr(
            "example.test.",
            3600,
            5,
            10,
            "SIPS+D2T",
            "_sips._tcp.example.test.",
        ),
        srv(
            "_sip._tcp.example.test.",
            300,
            10,
            10,
            5070,
            "sip1.example.test.",
        ),
        srv(
            "_sip._udp.example.test.",
            300,
            10,
            10,
            5080,
            "sip2.example.test.",
        ),
        srv(
            "_sips._tcp.example.test.",
            300,
            10,
            10,
            5061,
            "sip1.example.test.",
        ),
        a("sip1.example.test.", 120, [192, 0, 2, 10]),
        aaaa("sip1.example.test.", 100, "2001:db8::10"),
        a("sip2.example.test.", 90, [192, 0, 2, 20]),
        a("example.test.", 500, [192, 0, 2, 1]),
        // SRV without NAPTR: two UDP priorities and one TCP.
        srv(
            "_sip._udp.srvonly.example.test.",
            30,
            20,
            10,
            5063,
            "b.srvonly.example.test.",
        ),
        srv(
            "_sip._udp.srvonly.example.test.",
            30,
            10,
            10,
            5062,
            "a.srvonly.example.test.",
        ),
        srv(
            "_sip._tcp.srvonly.example.test.",
            40,
            10,
            10,
            5064,
            "b.srvonly.example.test.",
        ),
        a("a.srvonly.example.test.", 600, [192, 0, 2, 41]),
        a("b.srvonly.example.test.", 600, [192, 0, 2, 42]),
        a("srvonly.example.test.", 600, [192, 0, 2, 40]),
        // Plain A only.
        a("plain.example.test.", 45, [192, 0, 2, 30]),
        // SRV whose target is "." : the service is decidedly not available (RFC 2782).
        srv("_sip._udp.nosip.example.test.", 60, 0, 0, 0, "."),
        a("nosip.example.test.", 60, [192, 0, 2, 50]),
        // Same priority, equal weights: the RFC 2782 selection decides per seed.
        srv(
            "_sip._udp.weighted.example.test.",
            60,
            10,
            50,
            5060,
            "w1.example.test.",
        ),
        srv(
            "_sip._udp.weighted.example.test.",
            60,
            10,
            50,
            5060,
            "w2.example.test.",
        ),
        a("w1.example.test.", 60, [192, 0, 2, 61]),
        a("w2.example.test.", 60, [192, 0, 2, 62]),
    ]
}

async fn start_server() -> DnsServer {
    start_zone("example.test.", zone_records()).await
}

fn d(addr: &str, transport: Transport) -> Destination {
    Destination::new(addr.parse().expect("socket addr"), transport)
}

#[tokio::test]
async fn naptr_srv_a_chain_follows_naptr_order() {
    let server = start_server().await;
    let resolver = Resolver::new(&[server.addr]).expect("resolver");
    let got = resolver
        .resolve_seeded(&SipTarget::host("example.test"), 1)
        .await
        .expect("resolved");
    assert_eq!(
        got.destinations,
        vec![
            d("192.0.2.10:5070", Transport::Tcp),
            d("[2001:db8::10]:5070", Transport::Tcp),
            d("192.0.2.20:5080", Transport::Udp),
        ]
    );
    // NAPTR 3600, SRV 300, A 120, AAAA 100, A 90.
    assert_eq!(got.ttl, Duration::from_secs(90));
}

#[tokio::test]
async fn sips_uses_only_sips_naptr() {
    let server = start_server().await;
    let resolver = Resolver::new(&[server.addr]).expect("resolver");
    let target = SipTarget {
        secure: true,
        ..SipTarget::host("example.test")
    };
    let got = resolver.resolve_seeded(&target, 1).await.expect("resolved");
    assert_eq!(
        got.destinations,
        vec![
            d("192.0.2.10:5061", Transport::Tcp),
            d("[2001:db8::10]:5061", Transport::Tcp),
        ]
    );
}

#[tokio::test]
async fn srv_without_naptr_udp_then_tcp_by_priority() {
    let server = start_server().await;
    let resolver = Resolver::new(&[server.addr]).expect("resolver");
    let got = resolver
        .resolve_seeded(&SipTarget::host("srvonly.example.test"), 7)
        .await
        .expect("resolved");
    assert_eq!(
        got.destinations,
        vec![
            d("192.0.2.41:5062", Transport::Udp),
            d("192.0.2.42:5063", Transport::Udp),
            d("192.0.2.42:5064", Transport::Tcp),
        ]
    );
    // The minimum TTL is an SRV record's (30s), not an address record's (600s).
    assert_eq!(got.ttl, Duration::from_secs(30));
}

#[tokio::test]
async fn explicit_transport_queries_only_that_srv() {
    let server = start_server().await;
    let resolver = Resolver::new(&[server.addr]).expect("resolver");
    let target = SipTarget {
        transport: Some(Transport::Tcp),
        ..SipTarget::host("srvonly.example.test")
    };
    let got = resolver.resolve_seeded(&target, 1).await.expect("resolved");
    assert_eq!(got.destinations, vec![d("192.0.2.42:5064", Transport::Tcp)]);
    assert_eq!(got.ttl, Duration::from_secs(40));
}

#[tokio::test]
async fn plain_a_fallback_port_5060_udp() {
    let server = start_server().await;
    let resolver = Resolver::new(&[server.addr]).expect("resolver");
    let got = resolver
        .resolve_seeded(&SipTarget::host("plain.example.test"), 1)
        .await
        .expect("resolved");
    assert_eq!(got.destinations, vec![d("192.0.2.30:5060", Transport::Udp)]);
    assert_eq!(got.ttl, Duration::from_secs(45));
}

#[tokio::test]
async fn explicit_port_skips_naptr_and_srv() {
    let server = start_server().await;
    let resolver = Resolver::new(&[server.addr]).expect("resolver");
    let target = SipTarget {
        port: Some(5099),
        ..SipTarget::host("example.test")
    };
    let got = resolver.resolve_seeded(&target, 1).await.expect("resolved");
    // Only the apex A record: no NAPTR/SRV targets (sip1/sip2) appear.
    assert_eq!(got.destinations, vec![d("192.0.2.1:5099", Transport::Udp)]);
    assert_eq!(got.ttl, Duration::from_secs(500));
}

#[tokio::test]
async fn srv_target_dot_means_no_service_and_no_a_fallback() {
    let server = start_server().await;
    let resolver = Resolver::new(&[server.addr]).expect("resolver");
    let err = resolver
        .resolve_seeded(&SipTarget::host("nosip.example.test"), 1)
        .await
        .expect_err("service declared unavailable");
    assert!(matches!(err, DnsError::NoRecords(_)), "{err}");
}

#[tokio::test]
async fn unknown_name_is_no_records() {
    let server = start_server().await;
    let resolver = Resolver::new(&[server.addr]).expect("resolver");
    let err = resolver
        .resolve_seeded(&SipTarget::host("missing.example.test"), 1)
        .await
        .expect_err("nothing there");
    assert!(matches!(err, DnsError::NoRecords(_)), "{err}");
}

#[tokio::test]
async fn ip_literal_needs_no_dns() {
    // A nameserver that does not exist: any query would fail.
    let dead: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9);
    let resolver = Resolver::new(&[dead]).expect("resolver");
    let got = resolver
        .resolve(&SipTarget::host("10.1.2.3"))
        .await
        .expect("literal");
    assert_eq!(got.destinations, vec![d("10.1.2.3:5060", Transport::Udp)]);
    assert_eq!(got.ttl, NO_DNS_TTL);
    let v6 = SipTarget {
        secure: true,
        ..SipTarget::host("[::1]")
    };
    let got = resolver.resolve(&v6).await.expect("literal");
    assert_eq!(got.destinations, vec![d("[::1]:5061", Transport::Tcp)]);
    let with_port = SipTarget {
        port: Some(5070),
        transport: Some(Transport::Tcp),
        ..SipTarget::host("10.1.2.3")
    };
    let got = resolver.resolve(&with_port).await.expect("literal");
    assert_eq!(got.destinations, vec![d("10.1.2.3:5070", Transport::Tcp)]);
}

#[tokio::test]
async fn weighted_srv_order_depends_on_seed_and_keeps_all_targets() {
    let server = start_server().await;
    let resolver = Resolver::new(&[server.addr]).expect("resolver");
    let mut firsts = HashSet::new();
    for seed in 0..32 {
        let got = resolver
            .resolve_seeded(&SipTarget::host("weighted.example.test"), seed)
            .await
            .expect("resolved");
        assert_eq!(got.destinations.len(), 2, "every SRV target is returned");
        firsts.insert(got.destinations[0]);
        let again = resolver
            .resolve_seeded(&SipTarget::host("weighted.example.test"), seed)
            .await
            .expect("resolved");
        assert_eq!(
            again.destinations, got.destinations,
            "same seed, same order"
        );
    }
    assert_eq!(
        firsts,
        HashSet::from([
            d("192.0.2.61:5060", Transport::Udp),
            d("192.0.2.62:5060", Transport::Udp)
        ])
    );
}
