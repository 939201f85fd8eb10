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

const INVITE: &[u8] = b"INVITE sip:+15551234567@holdfast.example.com;user=phone SIP/2.0\r\n\
Via: SIP/2.0/UDP 198.51.100.10:5060;branch=z9hG4bK-524287-1---a1b2c3d4e5f6;rport\r\n\
Max-Forwards: 69\r\n\
Record-Route: <sip:198.51.100.10;lr;ftag=as1234>\r\n\
From: \"Caller Name\" <sip:+15557654321@carrier.example.net;user=phone>;tag=as1234abcd\r\n\
To: <sip:+15551234567@holdfast.example.com;user=phone>\r\n\
Contact: <sip:+15557654321@198.51.100.10:5060;transport=udp>\r\n\
Call-ID: 6f7a1c2b3d4e5f60718293a4b5c6d7e8@198.51.100.10\r\n\
CSeq: 102 INVITE\r\n\
User-Agent: CarrierSBC/4.2\r\n\
Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, PRACK, INFO, REFER, NOTIFY\r\n\
Supported: timer, replaces\r\n\
Session-Expires: 1800;refresher=uac\r\n\
Min-SE: 90\r\n\
P-Asserted-Identity: <sip:+15557654321@carrier.example.net;user=phone>\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 239\r\n\
\r\n\
v=0\r\n\
o=- 3724394400 3724394400 IN IP4 198.51.100.20\r\n\
s=-\r\n\
c=IN IP4 198.51.100.20\r\n\
t=0 0\r\n\
m=audio 31000 RTP/AVP 0 8 101\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-16\r\n\
a=ptime:20\r\n\
a=sendrecv\r\n";

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
