//! Per-packet cost of the sans-IO relay core (issue 3): a 172-byte PCMU packet (12-byte
//! header + 160 bytes) through the forward path of a latched stream (classify, validate,
//! latch check, stats incl. loss/jitter, in-place rewrite), the wrong-source drop path (a
//! latched stream), the unexpected-source drop path (nothing latched yet: the learning
//! rules), and the bare header rewrite for comparison. Each forward iteration writes a fresh input header
//! (as recvmmsg would deliver a new packet) so the stream stays on its fast path.
//!
//! Also the cost a call's relay adds to the shell's thread (issue 13): `MediaEngine::handle`
//! of an `Open` binds its four sockets (RTP and RTCP per leg) there and answers `Bound` at
//! once, before any SDP naming them goes out; only that call is timed (the `Close` and its
//! `Closed` from the worker, between iterations, are not).
//!
//! Before measuring, a counting global allocator checks that 10 000 packets through the
//! forward, drop and RTCP paths allocate nothing, and that 2 000 packets relayed over real
//! loopback sockets by a `MediaEngine` worker (recvmmsg → relay → sendmmsg) allocate nothing
//! either.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use holdfast::media::relay::{
    Action, LegConfig, PayloadTypeMap, Relay, RelayConfig, Side, StreamConfig,
};
use holdfast::media::rtp::RtpPacket;

const IN_SSRC: u32 = 0x1234_5678;

/// Counts every allocation, so the bench can prove the per-packet path allocates nothing.
struct Counting;
static ALLOCS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// 10 000 packets (forward, wrong source, source switch, muxed-off RTCP, and before any latch
/// unexpected source and learning) allocate nothing.
fn assert_no_allocation(carrier: SocketAddr, ai: SocketAddr, attacker: SocketAddr) {
    let t0 = Instant::now();
    let mut r = relay(t0, carrier, ai);
    let mut buf = [0xffu8; 172];
    let mut rtcp = [0u8; 8];
    rtcp[..4].copy_from_slice(&[0x80, 201, 0, 1]);
    // A second relay that never latches: strangers and a same-IP candidate in its window.
    let mut learning = relay(t0, carrier, ai);
    let candidate = SocketAddr::new(carrier.ip(), carrier.port() + 2);
    let before = ALLOCS.load(Ordering::Relaxed);
    for i in 0..10_000u32 {
        let mut h = header(i as u16, i * 160);
        if i % 1000 == 999 {
            h[8] ^= 1; // a new input SSRC now and then (the cold switch path)
        }
        buf[..12].copy_from_slice(&h);
        black_box(learning.handle_rtp(Side::A, attacker, &mut buf, t0));
        black_box(learning.handle_rtp(Side::A, candidate, &mut buf, t0));
        let now = t0 + Duration::from_millis(20 * u64::from(i));
        black_box(r.handle_rtp(Side::A, carrier, &mut buf, now));
        black_box(r.handle_rtp(Side::A, attacker, &mut buf, now));
        black_box(r.handle_rtcp(Side::A, carrier, &mut rtcp, now));
    }
    let allocs = ALLOCS.load(Ordering::Relaxed) - before;
    assert_eq!(allocs, 0, "the per-packet path allocated {allocs} times");
    assert!(r.stats(Side::A).packets_forwarded > 9_000);
    assert_eq!(learning.stats(Side::A).drops.learning, 10_000);
}

/// The media worker's whole per-packet path (epoll, recvmmsg, relay core, sendmmsg,
/// counters) allocates nothing, once the relay is open and latched (opening and events may).
fn assert_engine_allocates_nothing_per_packet() {
    use holdfast::media::control::{MediaCommand, MediaEvent, RelayId, RelayIps, RelayPorts};
    use holdfast::media::ports::PortAllocation;
    use holdfast::runtime::media::MediaEngine;
    use std::net::UdpSocket;

    let lo = std::net::Ipv4Addr::LOCALHOST;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let engine = MediaEngine::start(1, tx).unwrap();
    let carrier = UdpSocket::bind((lo, 0)).unwrap();
    let ai = UdpSocket::bind((lo, 0)).unwrap();
    ai.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let free = || {
        UdpSocket::bind((lo, 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let ports = RelayPorts {
        a: PortAllocation {
            rtp: free(),
            rtcp: None,
        },
        b: PortAllocation {
            rtp: free(),
            rtcp: None,
        },
    };
    let id = RelayId { call: 1, stream: 0 };
    engine.handle(MediaCommand::Open {
        id,
        ips: RelayIps::both(lo.into()),
        ports,
        config: relay_config(carrier.local_addr().unwrap(), ai.local_addr().unwrap()),
    });
    let to = SocketAddr::from((lo, ports.a.rtp));
    let mut pkt = [0xffu8; 172];
    let mut buf = [0u8; 2048];
    // Until the relay is open and has latched (its events allocate in the channel).
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut seq = 0u16;
    loop {
        assert!(Instant::now() < deadline, "relay never forwarded");
        pkt[..12].copy_from_slice(&header(seq, u32::from(seq) * 160));
        seq += 1;
        carrier.send_to(&pkt, to).unwrap();
        if ai.recv(&mut buf).is_ok() && matches!(rx.try_recv(), Ok(MediaEvent::Latched { .. })) {
            break;
        }
    }
    let before = ALLOCS.load(Ordering::Relaxed);
    for _ in 0..2_000 {
        pkt[..12].copy_from_slice(&header(seq, u32::from(seq) * 160));
        seq = seq.wrapping_add(1);
        carrier.send_to(&pkt, to).unwrap();
        assert_eq!(ai.recv(&mut buf).unwrap(), 172);
    }
    let allocs = ALLOCS.load(Ordering::Relaxed) - before;
    assert_eq!(
        allocs, 0,
        "the media worker allocated {allocs} times for 2 000 packets"
    );
    assert!(engine.counters().packets_forwarded >= 2_000);
    engine.shutdown();
}

fn header(seq: u16, ts: u32) -> [u8; 12] {
    let mut h = [0u8; 12];
    h[0] = 0x80;
    h[1] = 0; // PCMU
    h[2..4].copy_from_slice(&seq.to_be_bytes());
    h[4..8].copy_from_slice(&ts.to_be_bytes());
    h[8..12].copy_from_slice(&IN_SSRC.to_be_bytes());
    h
}

fn relay_config(carrier: SocketAddr, ai: SocketAddr) -> RelayConfig {
    let mut a_to_b = StreamConfig::from_seed(1, 8000);
    a_to_b.pt_map = PayloadTypeMap::identity().with(101, 96);
    RelayConfig {
        a: LegConfig::new(Some(carrier), Duration::from_secs(30)),
        b: LegConfig::new(Some(ai), Duration::from_secs(5)),
        a_to_b,
        b_to_a: StreamConfig::from_seed(2, 8000),
    }
}

fn relay(t0: Instant, carrier: SocketAddr, ai: SocketAddr) -> Relay {
    Relay::new(relay_config(carrier, ai), t0)
}

fn bench(c: &mut Criterion) {
    let carrier: SocketAddr = "203.0.113.7:40000".parse().unwrap();
    let ai: SocketAddr = "192.0.2.50:20000".parse().unwrap();
    let attacker: SocketAddr = "203.0.113.66:40000".parse().unwrap();
    assert_no_allocation(carrier, ai, attacker);
    assert_engine_allocates_nothing_per_packet();
    let t0 = Instant::now();
    let mut g = c.benchmark_group("relay");
    g.throughput(Throughput::Elements(1));

    g.bench_function("forward_172B_latched", |b| {
        let mut r = relay(t0, carrier, ai);
        let mut buf = [0xffu8; 172];
        let mut seq: u16 = 0;
        let mut ts: u32 = 0;
        let mut now = t0;
        b.iter(|| {
            buf[..12].copy_from_slice(&header(seq, ts));
            seq = seq.wrapping_add(1);
            ts = ts.wrapping_add(160);
            now += Duration::from_millis(20);
            let a = r.handle_rtp(Side::A, black_box(carrier), black_box(&mut buf), now);
            debug_assert!(matches!(a, Action::Forward { .. }));
            black_box(a)
        });
        assert!(r.stats(Side::A).packets_forwarded > 0);
        assert_eq!(r.stats(Side::A).source_switches, 0);
    });

    g.bench_function("drop_wrong_source_172B", |b| {
        let mut r = relay(t0, carrier, ai);
        let mut buf = [0xffu8; 172];
        buf[..12].copy_from_slice(&header(0, 0));
        assert!(matches!(
            r.handle_rtp(Side::A, carrier, &mut buf, t0),
            Action::Forward { .. }
        ));
        buf[..12].copy_from_slice(&header(1, 160));
        b.iter(|| black_box(r.handle_rtp(Side::A, black_box(attacker), black_box(&mut buf), t0)));
        assert!(r.stats(Side::A).drops.wrong_source > 0);
    });

    // Nothing latched yet, a stranger on another IP (what an injection before the real
    // peer's first packet costs under `latching: strict`): the cold learning path.
    g.bench_function("drop_unexpected_source_172B", |b| {
        let mut r = relay(t0, carrier, ai);
        let mut buf = [0xffu8; 172];
        buf[..12].copy_from_slice(&header(1, 160));
        b.iter(|| black_box(r.handle_rtp(Side::A, black_box(attacker), black_box(&mut buf), t0)));
        assert!(r.stats(Side::A).drops.unexpected_source > 0);
        assert_eq!(r.leg(Side::A).rtp().latched(), None);
    });

    g.bench_function("header_rewrite_only", |b| {
        let mut buf = [0xffu8; 172];
        buf[..12].copy_from_slice(&header(0, 0));
        b.iter(|| {
            let mut p = RtpPacket::new_checked(black_box(&mut buf[..])).unwrap();
            let s = p.sequence_number().wrapping_add(1);
            let t = p.timestamp().wrapping_add(160);
            p.set_sequence_number(s);
            p.set_timestamp(t);
            p.set_ssrc(0xdead_beef);
        });
    });
    g.finish();
    bench_open(c);
}

/// `MediaEngine::handle(Open)`: four relay sockets bound in the calling thread, `Bound`
/// returned, the sockets handed to the worker.
fn bench_open(c: &mut Criterion) {
    use holdfast::media::control::{MediaCommand, MediaEvent, RelayId, RelayIps, RelayPorts};
    use holdfast::media::ports::PortAllocation;
    use holdfast::runtime::media::MediaEngine;
    use std::net::UdpSocket;

    let lo = std::net::Ipv4Addr::LOCALHOST;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let engine = MediaEngine::start(1, tx).unwrap();
    // Two even/odd pairs that are free now (probed, then released).
    let pair = || loop {
        let s = UdpSocket::bind((lo, 0)).unwrap();
        let p = s.local_addr().unwrap().port();
        if p % 2 == 0 && p < u16::MAX && UdpSocket::bind((lo, p + 1)).is_ok() {
            return PortAllocation {
                rtp: p,
                rtcp: Some(p + 1),
            };
        }
    };
    let ports = RelayPorts {
        a: pair(),
        b: pair(),
    };
    let peer: SocketAddr = (lo, 9).into();
    let mut g = c.benchmark_group("engine");
    g.throughput(Throughput::Elements(1));
    g.bench_function("open_4_sockets_in_caller_thread", |b| {
        let mut call = 0;
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            for _ in 0..iters {
                call += 1;
                let id = RelayId { call, stream: 0 };
                let open = MediaCommand::Open {
                    id,
                    ips: RelayIps::both(lo.into()),
                    ports,
                    config: relay_config(peer, peer),
                };
                let t = Instant::now();
                let answer = engine.handle(black_box(open));
                timed += t.elapsed();
                assert_eq!(answer, Some(MediaEvent::Bound { id }));
                engine.handle(MediaCommand::Close { id });
                // The ports are free again once the worker reports Closed.
                loop {
                    match rx.blocking_recv() {
                        Some(MediaEvent::Closed { id: closed, .. }) if closed == id => break,
                        Some(_) => {}
                        None => panic!("engine gone"),
                    }
                }
            }
            timed
        });
    });
    g.finish();
    engine.shutdown();
}

criterion_group!(benches, bench);
criterion_main!(benches);
