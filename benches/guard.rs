//! What the guard costs per received datagram, next to what it saves: the peek alone, and
//! peek + decision for an unknown source dropped, a carrier's INVITE admitted by its token
//! bucket, a blocked source's INVITE, and a spoofed source under `unknown_sources: reject`
//! (a new table entry, evicting another, every time). Compare with `cargo bench --bench
//! sip_parse` (`classify INVITE`): what every one of these datagrams would cost without it.

use std::hint::black_box;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use holdfast::config::RateLimit;
use holdfast::guard::{Exchanges, Guard, Sender, Verdict};
use holdfast::sip::peek::peek;

#[path = "common/messages.rs"]
mod messages;
use messages::INVITE;

struct Nothing;

impl Exchanges for Nothing {
    fn has_dialog(&self, _: &str, _: &str) -> bool {
        false
    }
    fn has_client_transaction(&self, _: &str, _: &str) -> bool {
        false
    }
}

fn guard(sip: &str) -> Guard {
    let cfg = holdfast::config::parse(&format!("sip:\n{sip}\n"), "bench.yaml").expect("config");
    Guard::new(&cfg.sip)
}

fn bench(c: &mut Criterion) {
    let src: SocketAddr = "198.51.100.10:5060".parse().unwrap();
    c.bench_function("peek INVITE", |b| {
        b.iter(|| peek(black_box(INVITE)).map(|p| p.to_tag().is_some()))
    });

    let mut g = guard("  unknown_sources: drop");
    let now = Instant::now();
    c.bench_function("guard: unknown source dropped (peek + decide)", |b| {
        b.iter(|| {
            let p = peek(black_box(INVITE));
            g.handle_message(src, Sender::Unknown, p.as_ref(), &Nothing, now)
        })
    });

    // A carrier far under its limit: every request takes a token.
    let mut g = guard("  limits: { known_sources: { rate: 1000000, burst: 10000000 } }");
    let carrier = Sender::Known {
        by_port: false,
        limit: Some(RateLimit {
            rate: 1_000_000,
            burst: 10_000_000,
        }),
    };
    let start = Instant::now();
    let mut i = 0u64;
    c.bench_function(
        "guard: carrier INVITE admitted (peek + token bucket)",
        |b| {
            b.iter(|| {
                i += 1;
                let now = start + Duration::from_micros(i);
                let p = peek(black_box(INVITE));
                let v = g.handle_message(src, carrier, p.as_ref(), &Nothing, now);
                debug_assert_eq!(v, Verdict::Pass);
                v
            })
        },
    );

    // A source blocked for an hour.
    let mut g = guard("  limits: { block_time: 1h, log_interval: 1h }");
    let small = Sender::Known {
        by_port: false,
        limit: Some(RateLimit { rate: 1, burst: 1 }),
    };
    for _ in 0..10 {
        let p = peek(INVITE);
        g.handle_message(src, small, p.as_ref(), &Nothing, now);
    }
    assert_eq!(g.blocked_sources(), 1);
    c.bench_function("guard: blocked source dropped (peek + lookup)", |b| {
        b.iter(|| {
            let p = peek(black_box(INVITE));
            g.handle_message(src, small, p.as_ref(), &Nothing, now)
        })
    });

    // Spoofed sources under `reject`: a table of 65536 kept full, a new source each time.
    let mut g = guard("  unknown_sources: reject\n  limits: { log_interval: 1h }");
    let mut n = 0u32;
    c.bench_function(
        "guard: spoofed new source, reject mode (peek + insert/evict)",
        |b| {
            b.iter(|| {
                n = n.wrapping_add(1);
                let from =
                    SocketAddr::from((Ipv4Addr::from(0x0a00_0000 | (n & 0x00ff_ffff)), 5060));
                let p = peek(black_box(INVITE));
                g.handle_message(from, Sender::Unknown, p.as_ref(), &Nothing, now)
            })
        },
    );
    while g.poll_event().is_some() {}
}

criterion_group!(benches, bench);
criterion_main!(benches);
