//! Engine tests over real loopback sockets, through the `MediaEngine` API only. Every test
//! has its own engine, sockets and ports (bound on port 0 or probed free), and waits for
//! events or counters with deadlines instead of sleeping.
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

use super::{EngineOptions, MediaCounters, MediaEngine, MediaIo};
use crate::media::control::{MediaCommand, MediaEvent, RelayId, RelayIps, RelayPorts, RelayUpdate};
use crate::media::filler::GapAudio;
use crate::media::ports::PortAllocation;
use crate::media::relay::{
    DropReason, LatchPolicy, Latching, LegConfig, PayloadTypeMap, RelayConfig, Side, SocketKind,
    StreamConfig,
};
use crate::media::rtp::tests::{build_sr_sdes, simple_rtp};
use crate::media::rtp::{rtcp_header, PacketError, RtpPacket};

const LO: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const WAIT: Duration = Duration::from_secs(3);

struct Harness {
    engine: MediaEngine,
    rx: UnboundedReceiver<MediaEvent>,
    sent: u64,
    /// Every event received so far, in order.
    seen: Vec<MediaEvent>,
    /// Answers `handle` gave at once (`Bound`, `OpenFailed`), not yet looked at.
    answers: std::collections::VecDeque<MediaEvent>,
}

impl Harness {
    /// An engine of `threads` workers relaying through `io` (`raw` must be had: these
    /// tests run as root, like the README's test command).
    fn new(threads: usize, io: MediaIo) -> Harness {
        let (tx, rx) = unbounded_channel();
        let options = EngineOptions {
            threads,
            io,
            raw_bind: Some(Ipv4Addr::LOCALHOST),
            ports: 1024..=u16::MAX,
        };
        let engine = MediaEngine::start_with(&options, tx)
            .unwrap_or_else(|e| panic!("starting the engine with io {}: {e}", io.as_str()));
        assert_eq!(engine.io(), io);
        Harness {
            engine,
            rx,
            sent: 0,
            seen: Vec::new(),
            answers: Default::default(),
        }
    }

    /// Hands `cmd` to the engine; an `Open` is answered at once (and only reaches a worker
    /// when it bound).
    fn cmd(&mut self, cmd: MediaCommand) {
        let answer = self.engine.handle(cmd);
        if !matches!(answer, Some(MediaEvent::OpenFailed { .. })) {
            self.sent += 1;
        }
        self.answers.extend(answer);
    }

    /// Waits until every command sent so far has been applied.
    fn settle(&self) -> MediaCounters {
        let sent = self.sent;
        self.counters_until(|c| c.commands >= sent)
    }

    fn counters_until(&self, pred: impl Fn(&MediaCounters) -> bool) -> MediaCounters {
        let deadline = Instant::now() + WAIT;
        loop {
            let c = self.engine.counters();
            if pred(&c) {
                return c;
            }
            assert!(Instant::now() < deadline, "counters never got there: {c:?}");
            std::thread::yield_now();
        }
    }

    /// The next event matching `pred` (others are kept in `seen`), or panic after `within`.
    fn wait_for(
        &mut self,
        within: Duration,
        pred: impl Fn(&MediaEvent) -> bool,
    ) -> (MediaEvent, Instant) {
        let deadline = Instant::now() + within;
        loop {
            match self
                .answers
                .pop_front()
                .ok_or(())
                .or_else(|()| self.rx.try_recv())
            {
                Ok(ev) => {
                    let at = Instant::now();
                    self.seen.push(ev.clone());
                    if pred(&ev) {
                        return (ev, at);
                    }
                }
                Err(_) => {
                    assert!(
                        Instant::now() < deadline,
                        "event not seen within {within:?}; seen: {:#?}",
                        self.seen
                    );
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
    }

    fn open(&mut self, id: RelayId, ports: RelayPorts, config: RelayConfig) {
        self.cmd(MediaCommand::Open {
            id,
            ips: RelayIps::both(LO),
            ports,
            config,
        });
    }

    fn update(&mut self, id: RelayId, update: RelayUpdate) {
        self.cmd(MediaCommand::Update { id, update });
    }

    /// Close and return the final stats `(a_to_b, b_to_a)`.
    fn close(
        &mut self,
        id: RelayId,
    ) -> (
        crate::media::stats::StreamStatsSnapshot,
        crate::media::stats::StreamStatsSnapshot,
    ) {
        self.cmd(MediaCommand::Close { id });
        match self.wait_for(
            WAIT,
            |e| matches!(e, MediaEvent::Closed { id: i, .. } if *i == id),
        ) {
            (MediaEvent::Closed { a_to_b, b_to_a, .. }, _) => (a_to_b, b_to_a),
            _ => unreachable!(),
        }
    }

    fn count(&self, pred: impl Fn(&MediaEvent) -> bool) -> usize {
        self.seen.iter().filter(|e| pred(e)).count()
    }
}

fn id(call: u64) -> RelayId {
    RelayId { call, stream: 0 }
}

/// A port (pair) that is free right now: bound on port 0 by the kernel, then released.
fn free_ports(rtcp: bool) -> PortAllocation {
    loop {
        let s = UdpSocket::bind((LO, 0)).unwrap();
        let p = s.local_addr().unwrap().port();
        if !rtcp {
            return PortAllocation { rtp: p, rtcp: None };
        }
        if p % 2 == 0 && p < u16::MAX && UdpSocket::bind((LO, p + 1)).is_ok() {
            return PortAllocation {
                rtp: p,
                rtcp: Some(p + 1),
            };
        }
    }
}

fn relay_ports(rtcp: bool) -> RelayPorts {
    RelayPorts {
        a: free_ports(rtcp),
        b: free_ports(rtcp),
    }
}

fn at(port: u16) -> SocketAddr {
    SocketAddr::new(LO, port)
}

fn peer() -> UdpSocket {
    let s = UdpSocket::bind((LO, 0)).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s
}

fn addr(s: &UdpSocket) -> SocketAddr {
    s.local_addr().unwrap()
}

fn stream(ssrc: u32, seq: u16, ts: u32) -> StreamConfig {
    StreamConfig {
        ssrc,
        initial_seq: seq,
        initial_ts: ts,
        clock_rate_hz: 8000,
        pt_map: PayloadTypeMap::identity(),
    }
}

/// The test peers are loopback sockets on ports of their own: a "NATed" source here is the
/// SDP's IP on another port, latched at once (no learning window; the rules themselves are
/// the relay core's unit tests).
const LATCH: LatchPolicy = LatchPolicy {
    latching: Latching::Strict,
    learning_window: Duration::ZERO,
};

fn config(a: Option<SocketAddr>, b: Option<SocketAddr>, call: u64) -> RelayConfig {
    let leg = |peer| LegConfig {
        latch: LATCH,
        ..LegConfig::new(peer, Duration::from_secs(30))
    };
    RelayConfig {
        a: leg(a),
        b: leg(b),
        a_to_b: stream(0xb0b0_0000 | call as u32, 100, 1_000),
        b_to_a: stream(0xa0a0_0000 | call as u32, 200, 2_000),
    }
}

/// (marker, seq, ts, ssrc, pt) of a received RTP packet.
fn recv_rtp(s: &UdpSocket) -> (bool, u16, u32, u32, u8) {
    let mut buf = [0u8; 2048];
    let (n, _) = s.recv_from(&mut buf).expect("an RTP packet");
    let p = RtpPacket::new_checked(&buf[..n]).unwrap();
    (
        p.marker(),
        p.sequence_number(),
        p.timestamp(),
        p.ssrc(),
        p.payload_type(),
    )
}

fn nothing_waiting(s: &UdpSocket) -> bool {
    s.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 2048];
    let r = s.recv_from(&mut buf);
    s.set_nonblocking(false).unwrap();
    matches!(r, Err(e) if e.kind() == io::ErrorKind::WouldBlock)
}

fn rtp_both_ways(threads: usize, io: MediaIo) {
    let mut h = Harness::new(threads, io);
    let relays: Vec<_> = (0..5u64)
        .map(|call| {
            let (carrier, ai) = (peer(), peer());
            let ports = relay_ports(false);
            h.open(
                id(call),
                ports,
                config(Some(addr(&carrier)), Some(addr(&ai)), call),
            );
            (call, carrier, ai, ports)
        })
        .collect();
    h.settle();
    assert_eq!(h.engine.counters().relays_open, 5);
    for (call, carrier, ai, ports) in &relays {
        for i in 0..10u16 {
            let p = simple_rtp(0, 5000 + i, 8000 + 160 * u32::from(i), 0x1111);
            carrier.send_to(&p, at(ports.a.rtp)).unwrap();
            let p = simple_rtp(8, 60 + i, 90 + 320 * u32::from(i), 0x2222);
            ai.send_to(&p, at(ports.b.rtp)).unwrap();
        }
        for i in 0..10u16 {
            assert_eq!(
                recv_rtp(ai),
                (
                    false,
                    100 + i,
                    1_000 + 160 * u32::from(i),
                    0xb0b0_0000 | *call as u32,
                    0
                ),
                "A→B rewritten into the a_to_b stream (call {call})"
            );
            assert_eq!(
                recv_rtp(carrier),
                (
                    false,
                    200 + i,
                    2_000 + 320 * u32::from(i),
                    0xa0a0_0000 | *call as u32,
                    8
                ),
                "B→A rewritten into the b_to_a stream (call {call})"
            );
        }
    }
    for (call, carrier, ai, _) in &relays {
        let (a_to_b, b_to_a) = h.close(id(*call));
        assert_eq!(
            (a_to_b.packets_forwarded, b_to_a.packets_forwarded),
            (10, 10)
        );
        assert_eq!(
            (a_to_b.bytes_forwarded, b_to_a.bytes_forwarded),
            (1720, 1720)
        );
        for (side, who) in [(Side::A, carrier), (Side::B, ai)] {
            assert_eq!(
                h.count(|e| *e
                    == MediaEvent::Latched {
                        id: id(*call),
                        side,
                        kind: SocketKind::Rtp,
                        addr: addr(who)
                    }),
                1,
                "one Latched per leg"
            );
        }
    }
    let c = h.engine.counters();
    assert_eq!(c.packets_forwarded, 100);
    assert_eq!(c.packets_received, 100);
    assert_eq!(c.bytes_forwarded, 17_200);
    assert_eq!(c.relays_open, 0);
    assert_eq!(c.drops.total(), 0);
    h.engine.shutdown();
}

fn rtp_both_ways_on_one_worker(io: MediaIo) {
    rtp_both_ways(1, io);
}

fn rtp_both_ways_on_two_workers(io: MediaIo) {
    rtp_both_ways(2, io);
}

fn rtcp_on_its_own_socket_and_muxed_on_the_rtp_socket(io: MediaIo) {
    let mut h = Harness::new(1, io);
    // Separate RTCP ports: carrier's RTCP comes from its own socket; the AI announced an
    // explicit RTCP address (a=rtcp).
    let (carrier, carrier_rtcp, ai, ai_rtcp) = (peer(), peer(), peer(), peer());
    let ports = relay_ports(true);
    let mut cfg = config(Some(addr(&carrier)), Some(addr(&ai)), 1);
    cfg.b.rtcp_peer = Some(addr(&ai_rtcp));
    h.open(id(1), ports, cfg);
    h.settle();
    let sr = build_sr_sdes(0x1111, 0x9999);
    carrier_rtcp
        .send_to(&sr, at(ports.a.rtcp.unwrap()))
        .unwrap();
    let mut buf = [0u8; 2048];
    let (n, from) = ai_rtcp.recv_from(&mut buf).expect("RTCP relayed");
    assert_eq!(from, at(ports.b.rtcp.unwrap()), "sent from B's RTCP socket");
    assert_eq!(n, sr.len());
    assert_eq!(rtcp_header(&buf[..n]).unwrap().ssrc, 0xb0b0_0001);
    assert!(nothing_waiting(&ai), "nothing on the AI's RTP socket");
    h.wait_for(WAIT, |e| {
        *e == MediaEvent::Latched {
            id: id(1),
            side: Side::A,
            kind: SocketKind::Rtcp,
            addr: addr(&carrier_rtcp),
        }
    });

    // rtcp-mux on both legs: RTCP arrives on the RTP port and leaves from the RTP port.
    let (carrier2, ai2) = (peer(), peer());
    let ports2 = relay_ports(false);
    let mut cfg = config(Some(addr(&carrier2)), Some(addr(&ai2)), 2);
    cfg.a.rtcp_mux = true;
    cfg.b.rtcp_mux = true;
    h.open(id(2), ports2, cfg);
    h.settle();
    carrier2.send_to(&sr, at(ports2.a.rtp)).unwrap();
    let (n, from) = ai2.recv_from(&mut buf).expect("muxed RTCP relayed");
    assert_eq!(from, at(ports2.b.rtp));
    assert_eq!(rtcp_header(&buf[..n]).unwrap().ssrc, 0xb0b0_0002);
    let (a_to_b, _) = h.close(id(2));
    assert_eq!(
        (a_to_b.rtcp_packets_forwarded, a_to_b.packets_forwarded),
        (1, 0)
    );
    let c = h.engine.counters();
    assert_eq!((c.rtcp_forwarded, c.packets_forwarded), (2, 0));
    h.close(id(1));
}

fn nat_latch_learns_the_real_source_and_drops_others(io: MediaIo) {
    let mut h = Harness::new(1, io);
    // The carrier's SDP says `sdp_addr`, but it sends from behind a NAT.
    let (sdp_addr, nat, ai, attacker) = (peer(), peer(), peer(), peer());
    let ports = relay_ports(false);
    h.open(
        id(7),
        ports,
        config(Some(addr(&sdp_addr)), Some(addr(&ai)), 7),
    );
    h.settle();
    for i in 0..3u16 {
        nat.send_to(&simple_rtp(0, i, 160 * u32::from(i), 0x1), at(ports.a.rtp))
            .unwrap();
        assert_eq!(recv_rtp(&ai).1, 100 + i);
    }
    h.wait_for(WAIT, |e| {
        *e == MediaEvent::Latched {
            id: id(7),
            side: Side::A,
            kind: SocketKind::Rtp,
            addr: addr(&nat),
        }
    });
    // Media to the carrier goes to where it really is, not to its SDP address.
    ai.send_to(&simple_rtp(0, 9, 9, 0x2), at(ports.b.rtp))
        .unwrap();
    assert_eq!(recv_rtp(&nat).1, 200);
    assert!(nothing_waiting(&sdp_addr));
    // An injected packet is dropped; the next real one passes (same socket, so the
    // injected one was handled first).
    attacker
        .send_to(&simple_rtp(0, 3, 480, 0x1), at(ports.a.rtp))
        .unwrap();
    nat.send_to(&simple_rtp(0, 3, 480, 0x1), at(ports.a.rtp))
        .unwrap();
    assert_eq!(
        recv_rtp(&ai).1,
        103,
        "the real packet, right after the 3 first"
    );
    assert!(nothing_waiting(&ai), "the injected one never arrived");
    let (a_to_b, _) = h.close(id(7));
    assert_eq!(a_to_b.drops.wrong_source, 1);
    assert_eq!(a_to_b.packets_forwarded, 4);
    assert_eq!(h.engine.counters().drops.wrong_source, 1);
    assert_eq!(
        h.count(|e| matches!(e, MediaEvent::Latched { side: Side::A, .. })),
        1,
        "latched once, with the NAT address: {:?}",
        h.seen
    );
}

fn icmp_unreachable_is_reported_promptly_and_once(io: MediaIo) {
    let mut h = Harness::new(1, io);
    let carrier = peer();
    // The AI's socket is gone: sending to it gets ICMP port unreachable.
    let gone = addr(&peer());
    let ports = relay_ports(false);
    h.open(id(3), ports, config(Some(addr(&carrier)), Some(gone), 3));
    h.settle();
    let sent_at = Instant::now();
    carrier
        .send_to(&simple_rtp(0, 1, 160, 0x1), at(ports.a.rtp))
        .unwrap();
    let (ev, got_at) = h.wait_for(Duration::from_secs(1), |e| {
        matches!(e, MediaEvent::Unreachable { .. })
    });
    assert_eq!(
        ev,
        MediaEvent::Unreachable {
            id: id(3),
            side: Side::B,
            addr: gone
        }
    );
    assert!(got_at - sent_at < Duration::from_millis(500));
    for i in 2..7u16 {
        carrier
            .send_to(&simple_rtp(0, i, 160 * u32::from(i), 0x1), at(ports.a.rtp))
            .unwrap();
    }
    // Every ICMP error has been read before we look.
    h.counters_until(|c| c.icmp_errors >= 6);
    h.close(id(3));
    assert_eq!(
        h.count(|e| matches!(e, MediaEvent::Unreachable { .. })),
        1,
        "{:?}",
        h.seen
    );
    assert_eq!(h.engine.counters().unreachable, 1);
}

fn a_probe_draws_icmp_where_nothing_listens_and_is_harmless_where_a_peer_does(io: MediaIo) {
    let mut h = Harness::new(1, io);
    let (carrier, ai) = (peer(), peer());
    let gone = addr(&peer());
    // Nobody talks: only the probe can tell the dead AI peer from a silent one.
    let ports = relay_ports(false);
    h.open(id(21), ports, config(Some(addr(&carrier)), Some(gone), 21));
    h.settle();
    h.update(id(21), RelayUpdate::Probe { side: Side::B });
    let (ev, _) = h.wait_for(Duration::from_secs(1), |e| {
        matches!(e, MediaEvent::Unreachable { .. })
    });
    assert_eq!(
        ev,
        MediaEvent::Unreachable {
            id: id(21),
            side: Side::B,
            addr: gone
        }
    );
    // A live peer gets one empty datagram, from the relay's port, and nothing else happens.
    let ports = relay_ports(false);
    h.open(
        id(22),
        ports,
        config(Some(addr(&carrier)), Some(addr(&ai)), 22),
    );
    h.settle();
    h.update(id(22), RelayUpdate::Probe { side: Side::B });
    let mut buf = [0u8; 64];
    let (n, from) = ai.recv_from(&mut buf).expect("the probe");
    assert_eq!((n, from), (0, at(ports.b.rtp)));
    h.settle();
    h.close(id(22));
    h.close(id(21));
    assert_eq!(
        h.count(|e| matches!(e, MediaEvent::Unreachable { id: i, .. } if *i == id(22))),
        0,
        "{:?}",
        h.seen
    );
}

fn ipv6_relays_and_reports_icmpv6_unreachable(io: MediaIo) {
    let v6 = IpAddr::V6(std::net::Ipv6Addr::LOCALHOST);
    let bind = || {
        let s = UdpSocket::bind((v6, 0)).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        s
    };
    let free = || PortAllocation {
        rtp: addr(&bind()).port(),
        rtcp: None,
    };
    let mut h = Harness::new(1, io);
    let (carrier, ai) = (bind(), bind());
    let gone = addr(&bind());
    let ports = RelayPorts {
        a: free(),
        b: free(),
    };
    h.cmd(MediaCommand::Open {
        id: id(13),
        ips: RelayIps::both(v6),
        ports,
        config: config(Some(addr(&carrier)), Some(addr(&ai)), 13),
    });
    h.settle();
    carrier
        .send_to(
            &simple_rtp(0, 1, 160, 0x1),
            SocketAddr::new(v6, ports.a.rtp),
        )
        .unwrap();
    assert_eq!(recv_rtp(&ai).1, 100);
    // The AI moves to an address where nobody listens.
    h.update(
        id(13),
        RelayUpdate::Relatch {
            side: Side::B,
            rtp: Some(gone),
            rtcp: None,
            rtcp_mux: true,
            latch: LATCH,
        },
    );
    h.settle();
    carrier
        .send_to(
            &simple_rtp(0, 2, 320, 0x1),
            SocketAddr::new(v6, ports.a.rtp),
        )
        .unwrap();
    let (ev, _) = h.wait_for(Duration::from_secs(1), |e| {
        matches!(e, MediaEvent::Unreachable { .. })
    });
    assert_eq!(
        ev,
        MediaEvent::Unreachable {
            id: id(13),
            side: Side::B,
            addr: gone
        }
    );
    h.close(id(13));
}

fn v6_peer() -> UdpSocket {
    let s = UdpSocket::bind((std::net::Ipv6Addr::LOCALHOST, 0)).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s
}

/// An RTP packet from `from` to `to` reaches `expect` (the relay's other leg's peer).
fn through(from: &UdpSocket, to: SocketAddr, expect: &UdpSocket, seq: u16) {
    from.send_to(&simple_rtp(0, seq, u32::from(seq) * 160, 0x1), to)
        .unwrap();
    recv_rtp(expect);
}

/// Leg A on IPv4, leg B on IPv6: one relay bridges the families (through its sockets
/// even on a raw engine, whose path is IPv4 only).
fn a_mixed_family_relay_bridges_ipv4_and_ipv6(io: MediaIo) {
    let v6 = IpAddr::V6(std::net::Ipv6Addr::LOCALHOST);
    let mut h = Harness::new(1, io);
    let (carrier, ai) = (peer(), v6_peer());
    let ports = relay_ports(false);
    h.cmd(MediaCommand::Open {
        id: id(31),
        ips: RelayIps { a: LO, b: v6 },
        ports,
        config: config(Some(addr(&carrier)), Some(addr(&ai)), 31),
    });
    h.settle();
    for seq in 1..=3 {
        through(&carrier, at(ports.a.rtp), &ai, seq);
        through(&ai, SocketAddr::new(v6, ports.b.rtp), &carrier, seq);
    }
    h.close(id(31));
}

/// A running IPv4 relay whose leg B moves to IPv6 (a failover to an IPv6 target): the
/// new sockets relay on the same port, leg A is untouched, and a relay of the raw path
/// leaves it (its leg A sockets read their datagrams again).
fn a_leg_rebound_to_the_other_family_relays_there(io: MediaIo) {
    let v6 = IpAddr::V6(std::net::Ipv6Addr::LOCALHOST);
    let mut h = Harness::new(1, io);
    let (carrier, ai4, ai6) = (peer(), peer(), v6_peer());
    let ports = relay_ports(true);
    h.open(
        id(32),
        ports,
        config(Some(addr(&carrier)), Some(addr(&ai4)), 32),
    );
    let (ev, _) = h.wait_for(WAIT, |_| true);
    assert_eq!(ev, MediaEvent::Bound { id: id(32) }, "the Open's answer");
    h.settle();
    through(&carrier, at(ports.a.rtp), &ai4, 1);
    h.cmd(MediaCommand::Rebind {
        id: id(32),
        side: Side::B,
        ip: v6,
        ports: ports.b,
    });
    let (ev, _) = h.wait_for(WAIT, |_| true);
    assert_eq!(ev, MediaEvent::Bound { id: id(32) });
    h.update(
        id(32),
        RelayUpdate::Relatch {
            side: Side::B,
            rtp: Some(addr(&ai6)),
            rtcp: None,
            rtcp_mux: false,
            latch: LATCH,
        },
    );
    h.settle();
    for seq in 2..=4 {
        through(&carrier, at(ports.a.rtp), &ai6, seq);
        through(&ai6, SocketAddr::new(v6, ports.b.rtp), &carrier, seq);
    }
    assert!(nothing_waiting(&ai4), "nothing more to the old peer");
    // The old IPv4 port is closed: it can be bound again.
    assert!(
        UdpSocket::bind(at(ports.b.rtp)).is_ok(),
        "leg B's IPv4 socket closed"
    );
    // A rebind whose address cannot be had keeps the old sockets and says why.
    h.cmd(MediaCommand::Rebind {
        id: id(32),
        side: Side::B,
        ip: "192.0.2.1".parse().unwrap(),
        ports: ports.b,
    });
    let (ev, _) = h.wait_for(WAIT, |_| true);
    assert!(
        matches!(&ev, MediaEvent::RebindFailed { id: i, side: Side::B, error } if *i == id(32) && error.contains("192.0.2.1")),
        "{ev:?}"
    );
    through(&carrier, at(ports.a.rtp), &ai6, 5);
    h.close(id(32));
}

fn media_timeout_is_reported_once_per_silence(io: MediaIo) {
    let mut h = Harness::new(1, io);
    let (carrier, ai) = (peer(), peer());
    let ports = relay_ports(false);
    let mut cfg = config(Some(addr(&carrier)), Some(addr(&ai)), 4);
    cfg.b.media_timeout = Duration::from_millis(200);
    let opened = Instant::now();
    h.open(id(4), ports, cfg);
    let is_timeout = |e: &MediaEvent| matches!(e, MediaEvent::Timeout { .. });
    let (first, _) = h.wait_for(WAIT, is_timeout);
    match first {
        MediaEvent::Timeout {
            id: i,
            side,
            idle_for,
        } => {
            assert_eq!((i, side), (id(4), Side::B));
            assert!(idle_for >= Duration::from_millis(200), "{idle_for:?}");
        }
        _ => unreachable!(),
    }
    // The leg's clock restarted when reported: the next report needs another full 200 ms
    // of silence (without the restart it would come with the next 100 ms scan).
    let (second, second_at) = h.wait_for(WAIT, is_timeout);
    assert!(matches!(second, MediaEvent::Timeout { side: Side::B, .. }));
    assert!(
        second_at - opened >= Duration::from_millis(390),
        "second timeout after {:?}",
        second_at - opened
    );
    h.close(id(4));
    assert_eq!(
        h.count(|e| matches!(e, MediaEvent::Timeout { side: Side::A, .. })),
        0
    );
}

fn open_fails_cleanly_when_a_port_is_taken(io: MediaIo) {
    let mut h = Harness::new(1, io);
    let taken = UdpSocket::bind((LO, 0)).unwrap();
    let taken_port = addr(&taken).port();
    let a = free_ports(true);
    let ports = RelayPorts {
        a,
        b: PortAllocation {
            rtp: taken_port,
            rtcp: None,
        },
    };
    h.open(id(5), ports, config(None, None, 5));
    // Answered by `handle` itself, before it returned: nothing went to a worker.
    let ev = h.answers.pop_front().expect("an answer at once");
    match ev {
        MediaEvent::OpenFailed {
            id: i,
            port,
            failure,
            error,
        } => {
            assert_eq!((i, port), (id(5), taken_port));
            assert_eq!(failure, crate::media::control::BindFailure::AddrInUse);
            assert!(
                error.contains(&format!("127.0.0.1:{taken_port}")),
                "{error}"
            );
        }
        _ => unreachable!(),
    }
    // What was bound for leg A is closed again.
    UdpSocket::bind((LO, a.rtp)).expect("A's RTP port released");
    UdpSocket::bind((LO, a.rtcp.unwrap())).expect("A's RTCP port released");
    assert_eq!(h.settle().relays_open, 0);
}

fn disabled_direction_drops_then_resumes_continuously(io: MediaIo) {
    let mut h = Harness::new(1, io);
    let (carrier, ai) = (peer(), peer());
    let ports = relay_ports(false);
    h.open(
        id(6),
        ports,
        config(Some(addr(&carrier)), Some(addr(&ai)), 6),
    );
    h.settle();
    let send = |i: u16| {
        carrier
            .send_to(&simple_rtp(0, i, 160 * u32::from(i), 0x1), at(ports.a.rtp))
            .unwrap()
    };
    send(0);
    send(1);
    assert_eq!(recv_rtp(&ai).1, 100);
    assert_eq!(recv_rtp(&ai).1, 101);
    h.update(
        id(6),
        RelayUpdate::SetEnabled {
            from: Side::A,
            enabled: false,
        },
    );
    h.settle();
    for i in 2..5 {
        send(i);
    }
    h.counters_until(|c| c.drops.disabled >= 3);
    assert!(nothing_waiting(&ai), "nothing forwarded while disabled");
    h.update(
        id(6),
        RelayUpdate::SetEnabled {
            from: Side::A,
            enabled: true,
        },
    );
    h.settle();
    send(5);
    let (marker, seq, ..) = recv_rtp(&ai);
    assert!(marker, "resuming is a new talkspurt");
    assert_eq!(
        seq, 102,
        "no sequence gap for the receiver to count as loss"
    );
    let (a_to_b, _) = h.close(id(6));
    assert_eq!(a_to_b.drops.disabled, 3);
    assert_eq!(a_to_b.packets_forwarded, 3);
}

/// Over real sockets: the AI side is replaced mid-stream (new address, new SSRC, its own
/// sequence and timestamps); the carrier keeps receiving one stream — same SSRC,
/// sequence +1, timestamp advanced by the gap, marker on the first packet after.
fn far_side_switch_is_one_continuous_stream_on_the_wire(io: MediaIo) {
    let mut h = Harness::new(2, io);
    let (carrier, ai1, ai2) = (peer(), peer(), peer());
    let ports = relay_ports(false);
    let mut cfg = config(Some(addr(&carrier)), Some(addr(&ai1)), 8);
    cfg.b.media_timeout = Duration::from_secs(1);
    h.open(id(8), ports, cfg);
    h.settle();
    let rb = at(ports.b.rtp);
    let mut got = Vec::new();
    for i in 0..5u16 {
        ai1.send_to(
            &simple_rtp(0, 1000 + i, 50_000 + 160 * u32::from(i), 0xaaaa),
            rb,
        )
        .unwrap();
        got.push(recv_rtp(&carrier));
    }
    // Provider 1 dies; provider 2 takes over from a new address after a 200 ms gap (the
    // gap is what the timestamp must reflect).
    std::thread::sleep(Duration::from_millis(200));
    h.update(
        id(8),
        RelayUpdate::Relatch {
            side: Side::B,
            rtp: Some(addr(&ai2)),
            rtcp: None,
            rtcp_mux: false,
            latch: LATCH,
        },
    );
    h.update(id(8), RelayUpdate::SourceSwitch { side: Side::B });
    h.settle();
    for i in 0..5u16 {
        ai2.send_to(&simple_rtp(0, 7 + i, 9 + 160 * u32::from(i), 0xbbbb), rb)
            .unwrap();
        got.push(recv_rtp(&carrier));
    }
    // A stray packet from the old provider's address is now dropped (strict source).
    ai1.send_to(&simple_rtp(0, 2000, 0, 0xaaaa), rb).unwrap();
    h.counters_until(|c| c.drops.wrong_source >= 1);
    assert!(
        nothing_waiting(&carrier),
        "old provider's packet must not pass"
    );

    let ssrc = got[0].3;
    assert!(got.iter().all(|g| g.3 == ssrc), "one SSRC: {got:?}");
    for w in got.windows(2) {
        assert_eq!(w[1].1, w[0].1.wrapping_add(1), "seq continuous: {got:?}");
    }
    let markers: Vec<usize> = (0..got.len()).filter(|&i| got[i].0).collect();
    assert_eq!(
        markers,
        vec![5],
        "marker only on the first packet after the switch"
    );
    let jump = got[5].2.wrapping_sub(got[4].2);
    // ≥ 200 ms of wall clock at 8 kHz (1600 ticks); bounded by a generous 2 s so a loaded
    // machine cannot make it flaky, while a reset or random jump would still fail.
    assert!(
        (1600..16_000).contains(&jump),
        "ts advanced by the gap: {jump}"
    );
    assert_eq!(got[6].2.wrapping_sub(got[5].2), 160);
    let (_, b_to_a) = h.close(id(8));
    assert_eq!(b_to_a.drops.wrong_source, 1);
    assert_eq!(
        h.count(|e| matches!(e, MediaEvent::Latched { side: Side::B, .. })),
        2,
        "latched on provider 1, then again on provider 2"
    );
    let gaps: Vec<Option<Duration>> = h
        .seen
        .iter()
        .filter_map(|e| match e {
            MediaEvent::Resumed {
                side: Side::B, gap, ..
            } => Some(*gap),
            _ => None,
        })
        .collect();
    assert_eq!(gaps.len(), 1, "one Resumed per switch: {gaps:?}");
    let gap = gaps[0].expect("packets were sent before the switch");
    assert!(
        gap >= Duration::from_millis(200) && gap < Duration::from_secs(2),
        "gap measured from the last old packet: {gap:?}"
    );
}

/// A re-route with gap audio: while provider 1 is gone, the carrier receives comfort
/// noise from the relay's A socket, one frame per 20 ms, continuing the stream it already
/// had; provider 2's first packet ends the fill and continues right after it.
fn gap_audio_fills_the_reroute_gap_on_the_wire(io: MediaIo) {
    let mut h = Harness::new(1, io);
    let (carrier, ai1, ai2) = (peer(), peer(), peer());
    let ports = relay_ports(false);
    h.open(
        id(13),
        ports,
        config(Some(addr(&carrier)), Some(addr(&ai1)), 13),
    );
    h.settle();
    let rb = at(ports.b.rtp);
    let mut before = Vec::new();
    for i in 0..3u16 {
        ai1.send_to(&simple_rtp(0, 500 + i, 160 * u32::from(i), 0xaaaa), rb)
            .unwrap();
        before.push(recv_rtp(&carrier));
    }
    let old_last_sent = Instant::now();
    h.update(
        id(13),
        RelayUpdate::Relatch {
            side: Side::B,
            rtp: Some(addr(&ai2)),
            rtcp: None,
            rtcp_mux: false,
            latch: LATCH,
        },
    );
    h.update(id(13), RelayUpdate::SourceSwitch { side: Side::B });
    h.update(
        id(13),
        RelayUpdate::Fill {
            toward: Side::A,
            audio: Some(GapAudio::ComfortNoise),
            negotiated: None,
        },
    );
    // Ten fill frames, from holdfast's A port.
    let mut fill = Vec::new();
    let mut buf = [0u8; 2048];
    let mut first_at = None;
    for _ in 0..10 {
        let (n, from) = carrier.recv_from(&mut buf).expect("a fill frame");
        assert_eq!(from, at(ports.a.rtp), "sent from the relay's A socket");
        let p = RtpPacket::new_checked(&buf[..n]).unwrap();
        assert_eq!(p.payload().len(), 160);
        assert!(
            p.payload().iter().any(|&c| c != 0xff),
            "noise, not the AI's audio"
        );
        first_at.get_or_insert_with(Instant::now);
        fill.push((
            p.marker(),
            p.sequence_number(),
            p.timestamp(),
            p.ssrc(),
            p.payload_type(),
        ));
    }
    let took = first_at.unwrap().elapsed();
    // Frames 2..10 are paced at 20 ms: 9 intervals = 180 ms, never early (epoll rounds its
    // wait up); a worker held up by a loaded machine may send up to 3 late frames at once
    // (the catch-up limit), so at least 6 intervals remain. A burst would take ~0 ms.
    assert!(
        took >= Duration::from_millis(115),
        "paced, not a burst: {took:?}"
    );
    assert!(took < Duration::from_secs(2), "{took:?}");
    let last = before[2];
    assert_eq!((fill[0].0, fill[0].3, fill[0].4), (true, last.3, 0));
    assert_eq!(fill[0].1, last.1.wrapping_add(1));
    for w in fill.windows(2) {
        assert_eq!(w[1].1, w[0].1.wrapping_add(1), "seq continuous: {fill:?}");
        assert_eq!(
            w[1].2.wrapping_sub(w[0].2),
            160,
            "ts on the 20 ms grid: {fill:?}"
        );
        assert!(!w[1].0 && w[1].3 == last.3);
    }
    // Provider 2 speaks: the fill ends, its packets continue right after the last frame.
    ai2.send_to(&simple_rtp(0, 9, 90, 0xbbbb), rb).unwrap();
    let mut prev = *fill.last().unwrap();
    let mut fill_received = fill.len() as u64;
    let first = loop {
        let (n, _) = carrier
            .recv_from(&mut buf)
            .expect("fill frames, then provider 2");
        let p = RtpPacket::new_checked(&buf[..n]).unwrap();
        let hdr = (
            p.marker(),
            p.sequence_number(),
            p.timestamp(),
            p.ssrc(),
            p.payload_type(),
        );
        assert_eq!(
            hdr.1,
            prev.1.wrapping_add(1),
            "seq continuous into provider 2"
        );
        assert_eq!(hdr.3, last.3, "one SSRC");
        if p.payload().iter().all(|&c| c == 0xff) {
            break (hdr, prev);
        }
        fill_received += 1;
        prev = hdr;
    };
    let ((marker, _, ts, _, _), last_fill) = first;
    assert!(marker, "marker on provider 2's first packet");
    let advance = ts.wrapping_sub(last_fill.2);
    assert!(
        // Normally ≤ 20 ms (160 ticks); up to 1 s for a loaded machine.
        (1..=8000).contains(&advance),
        "ts by the time since the last frame: {advance}"
    );
    // Every fill frame sent was received before provider 2's packet, and no more follow.
    let c = h.counters_until(|c| c.fill_packets > 0);
    ai2.send_to(&simple_rtp(0, 10, 250, 0xbbbb), rb).unwrap();
    let next = recv_rtp(&carrier);
    assert_eq!(
        next.1,
        first.0 .1.wrapping_add(1),
        "no fill frame after provider 2"
    );
    assert_eq!(
        c.fill_packets, fill_received,
        "every frame sent was received"
    );
    assert_eq!(h.engine.counters().fill_packets, c.fill_packets);
    let (ev, _) = h.wait_for(WAIT, |e| matches!(e, MediaEvent::Resumed { .. }));
    let MediaEvent::Resumed { gap: Some(gap), .. } = ev else {
        panic!("{ev:?}")
    };
    // From provider 1's last packet, not from the last fill frame.
    assert!(gap >= took, "gap {gap:?} covers the fill ({took:?})");
    assert!(
        gap <= old_last_sent.elapsed() + Duration::from_millis(50),
        "{gap:?}"
    );
    h.close(id(13));
}

fn closed_arrives_and_the_ports_can_be_bound_again_at_once(io: MediaIo) {
    let mut h = Harness::new(2, io);
    let ports = relay_ports(true);
    h.open(id(9), ports, config(None, None, 9));
    h.settle();
    assert_eq!(h.engine.counters().relays_open, 1);
    let (a_to_b, b_to_a) = h.close(id(9));
    assert_eq!((a_to_b.packets_received, b_to_a.packets_received), (0, 0));
    for p in [
        ports.a.rtp,
        ports.a.rtcp.unwrap(),
        ports.b.rtp,
        ports.b.rtcp.unwrap(),
    ] {
        UdpSocket::bind((LO, p)).expect("port free right after Closed");
    }
    assert_eq!(h.engine.counters().relays_open, 0);
}

fn updates_and_closes_for_unknown_relays_are_ignored(io: MediaIo) {
    let mut h = Harness::new(1, io);
    h.update(id(11), RelayUpdate::SourceSwitch { side: Side::A });
    h.cmd(MediaCommand::Close { id: id(11) });
    h.settle();
    assert!(
        h.rx.try_recv().is_err(),
        "no event for a relay that never was"
    );
}

fn shutdown_emits_nothing_more_and_frees_the_ports(io: MediaIo) {
    let mut h = Harness::new(2, io);
    let ports = relay_ports(false);
    h.open(id(12), ports, config(None, None, 12));
    h.settle();
    let Harness { engine, mut rx, .. } = h;
    engine.shutdown();
    assert!(rx.try_recv().is_err(), "no Closed after shutdown");
    UdpSocket::bind((LO, ports.a.rtp)).expect("socket closed by shutdown");
}

#[test]
fn drop_labels_are_the_drop_reason_labels() {
    let labels: Vec<&str> = MediaCounters::default()
        .drops_by_reason()
        .iter()
        .map(|(l, _)| *l)
        .collect();
    let reasons = [
        DropReason::NotRtp,
        DropReason::Malformed(PacketError::TooShort { len: 0 }),
        DropReason::WrongSource,
        DropReason::UnexpectedSource,
        DropReason::Learning,
        DropReason::NoPeerYet,
        DropReason::Disabled,
    ];
    assert_eq!(
        labels,
        reasons.iter().map(|r| r.as_str()).collect::<Vec<_>>()
    );
    assert!(MediaEngine::start(0, unbounded_channel().0).is_err());
}

/// Every engine test above, once per I/O path.
macro_rules! per_io {
    ($io:expr; $($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                super::$name($io);
            }
        )*
    };
}

mod socket {
    use super::MediaIo;
    per_io!(MediaIo::Socket; a_mixed_family_relay_bridges_ipv4_and_ipv6, a_leg_rebound_to_the_other_family_relays_there, rtp_both_ways_on_one_worker, rtp_both_ways_on_two_workers, rtcp_on_its_own_socket_and_muxed_on_the_rtp_socket, nat_latch_learns_the_real_source_and_drops_others, icmp_unreachable_is_reported_promptly_and_once, a_probe_draws_icmp_where_nothing_listens_and_is_harmless_where_a_peer_does, ipv6_relays_and_reports_icmpv6_unreachable, media_timeout_is_reported_once_per_silence, open_fails_cleanly_when_a_port_is_taken, disabled_direction_drops_then_resumes_continuously, far_side_switch_is_one_continuous_stream_on_the_wire, gap_audio_fills_the_reroute_gap_on_the_wire, closed_arrives_and_the_ports_can_be_bound_again_at_once, updates_and_closes_for_unknown_relays_are_ignored, shutdown_emits_nothing_more_and_frees_the_ports);
}

mod raw {
    use super::MediaIo;
    per_io!(MediaIo::Raw; a_mixed_family_relay_bridges_ipv4_and_ipv6, a_leg_rebound_to_the_other_family_relays_there, rtp_both_ways_on_one_worker, rtp_both_ways_on_two_workers, rtcp_on_its_own_socket_and_muxed_on_the_rtp_socket, nat_latch_learns_the_real_source_and_drops_others, icmp_unreachable_is_reported_promptly_and_once, a_probe_draws_icmp_where_nothing_listens_and_is_harmless_where_a_peer_does, ipv6_relays_and_reports_icmpv6_unreachable, media_timeout_is_reported_once_per_silence, open_fails_cleanly_when_a_port_is_taken, disabled_direction_drops_then_resumes_continuously, far_side_switch_is_one_continuous_stream_on_the_wire, gap_audio_fills_the_reroute_gap_on_the_wire, closed_arrives_and_the_ports_can_be_bound_again_at_once, updates_and_closes_for_unknown_relays_are_ignored, shutdown_emits_nothing_more_and_frees_the_ports);
}
