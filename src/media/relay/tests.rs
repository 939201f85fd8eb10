//! Unit tests of the relay core: latching, continuity, wraparound, PT mapping, RTCP,
//! inactivity, malformed input and a seeded random-bytes loop.

use super::*;
use crate::media::rtp::tests::{build_rtp, build_sr_sdes, simple_rtp};
use crate::media::rtp::{rtcp_header, RtpPacket};
use rand::{Rng, SeedableRng};

const CARRIER_SDP: &str = "198.51.100.20:10000";
/// The carrier's NAT rewrote the port: the SDP's IP, another port.
const CARRIER_NAT: &str = "198.51.100.20:40000";
const AI_PEER: &str = "192.0.2.50:20000";
const ATTACKER: &str = "203.0.113.66:40000";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

const SSRC_TO_B: u32 = 0xb0b0_b0b0;
const SSRC_TO_A: u32 = 0xa0a0_a0a0;

/// No learning window: a NATed port latches at its first packet.
const NO_WINDOW: LatchPolicy = LatchPolicy {
    latching: Latching::Strict,
    learning_window: Duration::ZERO,
};

/// `latching: any`, no learning window: the old "first valid packet latches" behaviour.
const ANY_NOW: LatchPolicy = LatchPolicy {
    latching: Latching::Any,
    learning_window: Duration::ZERO,
};

fn config() -> RelayConfig {
    RelayConfig {
        a: LegConfig {
            latch: NO_WINDOW,
            ..LegConfig::new(Some(addr(CARRIER_SDP)), DEFAULT_CARRIER_MEDIA_TIMEOUT)
        },
        b: LegConfig::new(Some(addr(AI_PEER)), Duration::from_secs(5)),
        a_to_b: StreamConfig {
            ssrc: SSRC_TO_B,
            initial_seq: 100,
            initial_ts: 1_000,
            clock_rate_hz: 8000,
            pt_map: PayloadTypeMap::identity(),
        },
        b_to_a: StreamConfig {
            ssrc: SSRC_TO_A,
            initial_seq: 200,
            initial_ts: 2_000,
            clock_rate_hz: 8000,
            pt_map: PayloadTypeMap::identity(),
        },
    }
}

struct Out {
    seq: u16,
    ts: u32,
    ssrc: u32,
    marker: bool,
    pt: u8,
}

fn parse_out(buf: &[u8]) -> Out {
    let p = RtpPacket::new_checked(buf).unwrap();
    Out {
        seq: p.sequence_number(),
        ts: p.timestamp(),
        ssrc: p.ssrc(),
        marker: p.marker(),
        pt: p.payload_type(),
    }
}

/// Send one PCMU packet and expect it forwarded; return the rewritten header.
fn fwd(r: &mut Relay, side: Side, from: &str, seq: u16, ts: u32, ssrc: u32, now: Instant) -> Out {
    let mut buf = simple_rtp(0, seq, ts, ssrc);
    match r.handle_rtp(side, addr(from), &mut buf, now) {
        Action::Forward { len, .. } => {
            assert_eq!(len, 172);
            parse_out(&buf)
        }
        other => panic!("expected Forward, got {other:?}"),
    }
}

#[test]
fn latches_first_source_then_drops_and_counts_others() {
    let t0 = Instant::now();
    let mut r = Relay::new(config(), t0);
    assert_eq!(r.leg(Side::A).rtp().latched(), None);
    // The carrier is behind NAT: it sends from an address other than its SDP one.
    let mut buf = simple_rtp(0, 1, 160, 0x1234);
    let act = r.handle_rtp(Side::A, addr(CARRIER_NAT), &mut buf, t0);
    assert_eq!(
        act,
        Action::Forward {
            to: addr(AI_PEER),
            len: 172,
            via: LocalSocket {
                side: Side::B,
                kind: SocketKind::Rtp
            }
        }
    );
    assert_eq!(r.leg(Side::A).rtp().latched(), Some(addr(CARRIER_NAT)));
    // Replies now go to the latched (NAT) address, not the SDP one.
    let mut back = simple_rtp(0, 9, 90, 0x9999);
    match r.handle_rtp(Side::B, addr(AI_PEER), &mut back, t0) {
        Action::Forward { to, .. } => assert_eq!(to, addr(CARRIER_NAT)),
        a => panic!("{a:?}"),
    }
    // Injection from another address, and even from the SDP address, is dropped.
    for bad in [ATTACKER, CARRIER_SDP] {
        let mut buf = simple_rtp(0, 2, 320, 0x1234);
        let before = buf.clone();
        assert_eq!(
            r.handle_rtp(Side::A, addr(bad), &mut buf, t0),
            Action::Drop(DropReason::WrongSource)
        );
        assert_eq!(buf, before, "dropped packets are not rewritten");
    }
    let s = r.stats(Side::A);
    assert_eq!(s.drops.wrong_source, 2);
    assert_eq!(s.packets_forwarded, 1);
    assert_eq!(
        s.packets_received, 1,
        "wrong-source packets are not received"
    );
    // The latched peer still passes.
    fwd(&mut r, Side::A, CARRIER_NAT, 2, 320, 0x1234, t0);
}

#[test]
fn relatch_after_reinvite_accepts_new_peer_only() {
    let t0 = Instant::now();
    let mut r = Relay::new(config(), t0);
    fwd(&mut r, Side::B, AI_PEER, 1, 0, 7, t0);
    let new_ai = "192.0.2.99:30000";
    let mut buf = simple_rtp(0, 2, 160, 7);
    assert_eq!(
        r.handle_rtp(Side::B, addr(new_ai), &mut buf, t0),
        Action::Drop(DropReason::WrongSource)
    );
    r.relatch(
        Side::B,
        Some(addr(new_ai)),
        None,
        LatchPolicy::default(),
        t0,
    );
    assert_eq!(r.leg(Side::B).rtp().latched(), None);
    // Until the new peer sends, A's packets go to the new SDP address.
    let mut a = simple_rtp(0, 1, 0, 5);
    match r.handle_rtp(Side::A, addr(CARRIER_SDP), &mut a, t0) {
        Action::Forward { to, .. } => assert_eq!(to, addr(new_ai)),
        x => panic!("{x:?}"),
    }
    fwd(&mut r, Side::B, new_ai, 3, 320, 8, t0);
    let mut old = simple_rtp(0, 4, 480, 7);
    assert_eq!(
        r.handle_rtp(Side::B, addr(AI_PEER), &mut old, t0),
        Action::Drop(DropReason::WrongSource)
    );
}

#[test]
fn no_peer_yet_when_other_leg_has_no_address() {
    let t0 = Instant::now();
    let mut cfg = config();
    cfg.b.rtp_peer = None;
    cfg.b.latch = ANY_NOW;
    let mut r = Relay::new(cfg, t0);
    let mut buf = simple_rtp(0, 1, 0, 1);
    assert_eq!(
        r.handle_rtp(Side::A, addr(CARRIER_NAT), &mut buf, t0),
        Action::Drop(DropReason::NoPeerYet)
    );
    // The B peer (`latching: any`) latches by sending; then A's media flows to it.
    fwd(&mut r, Side::B, AI_PEER, 1, 0, 2, t0);
    fwd(&mut r, Side::A, CARRIER_NAT, 2, 160, 1, t0);
    assert_eq!(r.stats(Side::A).drops.no_peer_yet, 1);
}

#[test]
fn first_packet_maps_into_configured_space_without_marker() {
    let t0 = Instant::now();
    let mut r = Relay::new(config(), t0);
    let o = fwd(&mut r, Side::A, CARRIER_NAT, 5000, 123_456, 0x1111, t0);
    assert_eq!(
        (o.seq, o.ts, o.ssrc, o.marker),
        (100, 1_000, SSRC_TO_B, false)
    );
    let o = fwd(&mut r, Side::A, CARRIER_NAT, 5001, 123_616, 0x1111, t0);
    assert_eq!((o.seq, o.ts), (101, 1_160));
    // Reordered packet keeps its relative position.
    let o = fwd(&mut r, Side::A, CARRIER_NAT, 4999, 123_296, 0x1111, t0);
    assert_eq!((o.seq, o.ts), (99, 840));
}

#[test]
fn continuity_across_ssrc_change() {
    let t0 = Instant::now();
    let mut r = Relay::new(config(), t0);
    let ms = Duration::from_millis;
    let mut last = None;
    for i in 0..50u16 {
        let o = fwd(
            &mut r,
            Side::B,
            AI_PEER,
            30_000 + i,
            90_000 + 160 * u32::from(i),
            0xaaaa,
            t0 + ms(20 * u64::from(i)),
        );
        assert!(!o.marker);
        last = Some(o);
    }
    let last = last.unwrap();
    // The provider changes: a new SSRC with unrelated seq/ts, 120 ms after the last packet.
    let t_switch = t0 + ms(20 * 49 + 120);
    let o = fwd(&mut r, Side::B, AI_PEER, 7, 4_000_000_000, 0xbbbb, t_switch);
    assert_eq!(o.ssrc, SSRC_TO_A, "SSRC unchanged");
    assert_eq!(o.seq, last.seq.wrapping_add(1), "seq exactly +1");
    let advance = o.ts.wrapping_sub(last.ts);
    assert_eq!(advance, 120 * 8, "ts advanced by gap × 8000 Hz");
    assert!(o.marker, "marker on the first packet after the switch");
    for k in 1..5u16 {
        let o2 = fwd(
            &mut r,
            Side::B,
            AI_PEER,
            7 + k,
            4_000_000_000u32.wrapping_add(160 * u32::from(k)),
            0xbbbb,
            t_switch + ms(20 * u64::from(k)),
        );
        assert!(!o2.marker, "marker only on the first packet");
        assert_eq!(o2.seq, o.seq.wrapping_add(k));
        assert_eq!(o2.ts, o.ts.wrapping_add(160 * u32::from(k)));
        assert_eq!(o2.ssrc, SSRC_TO_A);
    }
    let s = r.stats(Side::B);
    assert_eq!(s.source_switches, 1);
    assert_eq!(s.packets_lost, 0, "a switch is not loss");
}

#[test]
fn explicit_source_switch_with_same_ssrc() {
    let t0 = Instant::now();
    let mut r = Relay::new(config(), t0);
    let ms = Duration::from_millis;
    let a = fwd(&mut r, Side::B, AI_PEER, 10, 1600, 0xcccc, t0);
    // The new provider reuses the SSRC but restarts seq/ts; the call core says so.
    r.handle_source_switch(Side::B, t0 + ms(500));
    assert_eq!(r.idle_since(Side::B), t0 + ms(500));
    let b = fwd(&mut r, Side::B, AI_PEER, 1, 0, 0xcccc, t0 + ms(1000));
    assert_eq!(b.seq, a.seq.wrapping_add(1));
    assert_eq!(b.ts.wrapping_sub(a.ts), 8000, "1 s gap = 8000 ticks");
    assert!(b.marker);
    let c = fwd(&mut r, Side::B, AI_PEER, 2, 160, 0xcccc, t0 + ms(1020));
    assert!(!c.marker);
    assert_eq!(c.seq, b.seq.wrapping_add(1));
}

#[test]
fn back_to_back_switch_still_advances_timestamp() {
    let t0 = Instant::now();
    let mut r = Relay::new(config(), t0);
    let a = fwd(&mut r, Side::B, AI_PEER, 10, 1600, 1, t0);
    let b = fwd(&mut r, Side::B, AI_PEER, 10, 1600, 2, t0);
    assert_eq!(b.seq, a.seq.wrapping_add(1));
    assert_eq!(b.ts, a.ts.wrapping_add(1), "at least one tick");
}

#[test]
fn seq_and_ts_wrap_around() {
    let t0 = Instant::now();
    let mut cfg = config();
    cfg.a_to_b.initial_seq = 65_534;
    cfg.a_to_b.initial_ts = u32::MAX - 200;
    let mut r = Relay::new(cfg, t0);
    let ms = Duration::from_millis;
    let outs: Vec<Out> = (0..4u16)
        .map(|i| {
            fwd(
                &mut r,
                Side::A,
                CARRIER_NAT,
                10 + i,
                160 * u32::from(i),
                1,
                t0 + ms(20 * u64::from(i)),
            )
        })
        .collect();
    let seqs: Vec<u16> = outs.iter().map(|o| o.seq).collect();
    assert_eq!(seqs, [65_534, 65_535, 0, 1]);
    let tss: Vec<u32> = outs.iter().map(|o| o.ts).collect();
    assert_eq!(tss, [u32::MAX - 200, u32::MAX - 40, 119, 279]);
    // A switch right after the wrap continues from the wrapped values.
    let o = fwd(
        &mut r,
        Side::A,
        CARRIER_NAT,
        65_535,
        u32::MAX,
        2,
        t0 + ms(80),
    );
    assert_eq!(o.seq, 2);
    assert_eq!(o.ts, 279 + 160);
    // Input wrap within one source.
    let o1 = fwd(&mut r, Side::A, CARRIER_NAT, 0, 159, 2, t0 + ms(100));
    assert_eq!(o1.seq, 3);
    assert_eq!(o1.ts, 279 + 320);
    assert_eq!(r.stats(Side::A).packets_lost, 0);
}

#[test]
fn payload_type_mapping_both_ways() {
    let t0 = Instant::now();
    let mut cfg = config();
    cfg.a_to_b.pt_map = PayloadTypeMap::identity().with(101, 96);
    cfg.b_to_a.pt_map = PayloadTypeMap::identity().with(96, 101);
    let mut r = Relay::new(cfg, t0);
    // Marked telephone-event (RFC 4733 start of event) from the carrier: PT 101 → 96, M kept.
    let mut ev = build_rtp(true, 101, 1, 0, 3, &[], None, &[5, 10, 0, 160], 0);
    assert!(matches!(
        r.handle_rtp(Side::A, addr(CARRIER_NAT), &mut ev, t0),
        Action::Forward { .. }
    ));
    let o = parse_out(&ev);
    assert_eq!((o.pt, o.marker), (96, true));
    let pcmu = fwd(&mut r, Side::A, CARRIER_NAT, 2, 160, 3, t0);
    assert_eq!(pcmu.pt, 0, "unmapped PTs pass through");
    let mut back = build_rtp(false, 96, 1, 0, 4, &[], None, &[5, 0x80, 0, 160], 0);
    r.handle_rtp(Side::B, addr(AI_PEER), &mut back, t0);
    let o = parse_out(&back);
    assert_eq!((o.pt, o.marker), (101, false));
    assert_eq!(
        format!("{:?}", PayloadTypeMap::identity().with(101, 96)),
        "{101: 96}"
    );
}

#[test]
fn rtcp_separate_port_rewrites_sender_ssrc() {
    let t0 = Instant::now();
    let mut r = Relay::new(config(), t0);
    let mut sr = build_sr_sdes(0x1234_5678, SSRC_TO_A);
    let act = r.handle_rtcp(Side::A, addr("198.51.100.20:40001"), &mut sr, t0);
    assert_eq!(
        act,
        Action::Forward {
            to: addr("192.0.2.50:20001"), // B's RTP port + 1 (RFC 3550 §11)
            len: sr.len(),
            via: LocalSocket {
                side: Side::B,
                kind: SocketKind::Rtcp
            }
        }
    );
    assert_eq!(rtcp_header(&sr).unwrap().ssrc, SSRC_TO_B);
    assert_eq!(
        &sr[28..32],
        &SSRC_TO_A.to_be_bytes(),
        "report block kept while B has no input source yet"
    );
    assert_eq!(r.stats(Side::A).rtcp_packets_forwarded, 1);
    // The RTCP socket latched on its own; another source is dropped.
    let mut sr2 = build_sr_sdes(1, 2);
    assert_eq!(
        r.handle_rtcp(Side::A, addr(ATTACKER), &mut sr2, t0),
        Action::Drop(DropReason::WrongSource)
    );
    // RTP on the RTCP port is not RTCP.
    let mut rtp = simple_rtp(0, 1, 1, 1);
    assert!(matches!(
        r.handle_rtcp(Side::A, addr("198.51.100.20:40001"), &mut rtp, t0),
        Action::Drop(DropReason::Malformed(PacketError::NotRtcp(0)))
    ));
}

#[test]
fn rtcp_muxed_on_rtp_port() {
    let t0 = Instant::now();
    let mut cfg = config();
    cfg.a.rtcp_mux = true;
    cfg.b.rtcp_mux = true;
    let mut r = Relay::new(cfg, t0);
    fwd(&mut r, Side::B, AI_PEER, 1, 0, 0x77, t0);
    let mut rr = vec![0x80, 201, 0, 1, 0, 0, 0, 0x77];
    assert_eq!(
        r.handle_rtp(Side::B, addr(AI_PEER), &mut rr, t0),
        Action::Forward {
            to: addr(CARRIER_SDP),
            len: 8,
            via: LocalSocket {
                side: Side::A,
                kind: SocketKind::Rtp
            }
        }
    );
    assert_eq!(rtcp_header(&rr).unwrap().ssrc, SSRC_TO_A);
    let mut rr2 = vec![0x80, 201, 0, 1, 0, 0, 0, 0x77];
    assert_eq!(
        r.handle_rtp(Side::B, addr(ATTACKER), &mut rr2, t0),
        Action::Drop(DropReason::WrongSource)
    );
    let mut bad = vec![0x80, 201, 0, 5, 0, 0, 0, 0x77];
    assert_eq!(
        r.handle_rtp(Side::B, addr(AI_PEER), &mut bad, t0),
        Action::Drop(DropReason::Malformed(PacketError::RtcpLengthBeyondBuffer))
    );
}

#[test]
fn disabled_direction_drops_and_pauses_timeout() {
    let t0 = Instant::now();
    let mut r = Relay::new(config(), t0);
    let s = Duration::from_secs;
    r.set_enabled(Side::A, false, t0);
    let mut buf = simple_rtp(0, 1, 0, 1);
    assert_eq!(
        r.handle_rtp(Side::A, addr(CARRIER_NAT), &mut buf, t0),
        Action::Drop(DropReason::Disabled)
    );
    assert_eq!(r.stats(Side::A).drops.disabled, 1);
    // A held leg's silence is still watched (a peer that dies on hold is noticed; the core
    // only checks on it): the dropped packet counts as activity of A's peer.
    assert_eq!(r.poll_timeout(), Some(t0 + s(5)));
    r.set_enabled(Side::B, false, t0);
    assert_eq!(r.poll_timeout(), Some(t0 + s(5)));
    assert_eq!(
        r.poll_media_timeout(t0 + s(100)),
        Some(MediaTimeout {
            side: Side::A,
            idle_for: s(100)
        })
    );
    r.set_enabled(Side::A, true, t0 + s(100));
    assert_eq!(r.poll_timeout(), Some(t0 + s(5)), "B is still silent");
    assert_eq!(
        r.idle_since(Side::A),
        t0 + s(100),
        "unhold restarts A's clock"
    );
    let o1 = fwd(&mut r, Side::A, CARRIER_NAT, 2, 160, 1, t0 + s(101));
    assert!(!o1.marker);
    // Hold again for 2 s while the carrier keeps sending (seq 3..=102 never forwarded).
    r.set_enabled(Side::A, false, t0 + s(101));
    for k in 3..=102u16 {
        let mut b = simple_rtp(0, k, 160 * u32::from(k), 1);
        r.handle_rtp(Side::A, addr(CARRIER_NAT), &mut b, t0 + s(101));
    }
    r.set_enabled(Side::A, true, t0 + s(103));
    let o2 = fwd(&mut r, Side::A, CARRIER_NAT, 103, 160 * 103, 1, t0 + s(103));
    assert_eq!(
        o2.seq,
        o1.seq.wrapping_add(1),
        "resume continues the sequence"
    );
    assert_eq!(o2.ts.wrapping_sub(o1.ts), 2 * 8000, "ts by wall-clock gap");
    assert!(o2.marker);
}

#[test]
fn media_inactivity_per_leg() {
    let t0 = Instant::now();
    let mut r = Relay::new(config(), t0);
    let s = Duration::from_secs;
    assert_eq!(
        r.poll_timeout(),
        Some(t0 + s(5)),
        "AI leg has the shorter timeout"
    );
    assert_eq!(r.poll_media_timeout(t0 + s(4)), None);
    fwd(&mut r, Side::B, AI_PEER, 1, 0, 1, t0 + s(4));
    assert_eq!(r.idle_since(Side::B), t0 + s(4));
    assert_eq!(r.poll_timeout(), Some(t0 + s(9)));
    assert_eq!(
        r.poll_media_timeout(t0 + s(10)),
        Some(MediaTimeout {
            side: Side::B,
            idle_for: s(6)
        })
    );
    // A new peer (relatch) gets a full timeout from then.
    let mut q = r.clone();
    q.relatch(
        Side::B,
        Some(addr(AI_PEER)),
        None,
        LatchPolicy::default(),
        t0 + s(8),
    );
    assert_eq!(q.poll_media_timeout(t0 + s(10)), None);
    assert_eq!(q.idle_since(Side::B), t0 + s(8));
    // Dropped packets do not count as activity.
    let mut inj = simple_rtp(0, 2, 160, 1);
    r.handle_rtp(Side::B, addr(ATTACKER), &mut inj, t0 + s(10));
    assert_eq!(r.idle_since(Side::B), t0 + s(4));
    fwd(&mut r, Side::B, AI_PEER, 2, 160, 1, t0 + s(10));
    assert_eq!(r.poll_media_timeout(t0 + s(14)), None);
    // The carrier leg times out at 30 s.
    assert_eq!(
        r.poll_media_timeout(t0 + s(30)),
        Some(MediaTimeout {
            side: Side::A,
            idle_for: s(30)
        })
    );
}

#[test]
fn malformed_packets_drop_without_latching() {
    let t0 = Instant::now();
    let mut r = Relay::new(config(), t0);
    let mut v1 = simple_rtp(0, 1, 0, 1);
    v1[0] = 0x90 & 0x3f; // version 0 with X: first byte 16 → ZRTP range
    let mut short = vec![0x80, 0, 0, 1, 0, 0];
    let mut cc = simple_rtp(0, 1, 0, 1);
    cc.truncate(16);
    cc[0] = 0x8f; // 15 CSRCs
    let mut stun = vec![0u8, 1, 0, 0];
    let mut empty: Vec<u8> = Vec::new();
    let cases: [(&mut Vec<u8>, DropReason); 5] = [
        (&mut v1, DropReason::NotRtp),
        (
            &mut short,
            DropReason::Malformed(PacketError::TooShort { len: 6 }),
        ),
        (
            &mut cc,
            DropReason::Malformed(PacketError::CsrcBeyondLength),
        ),
        (&mut stun, DropReason::NotRtp),
        (&mut empty, DropReason::NotRtp),
    ];
    for (buf, want) in cases {
        assert_eq!(
            r.handle_rtp(Side::A, addr(ATTACKER), buf, t0),
            Action::Drop(want)
        );
    }
    assert_eq!(
        r.leg(Side::A).rtp().latched(),
        None,
        "garbage never latches"
    );
    let s = r.stats(Side::A);
    assert_eq!((s.drops.malformed, s.drops.not_rtp), (2, 3));
    fwd(&mut r, Side::A, CARRIER_NAT, 1, 0, 1, t0);
}

#[test]
fn seeded_random_bytes_never_panic() {
    let t0 = Instant::now();
    let mut cfg = config();
    cfg.b.rtcp_mux = true;
    let mut r = Relay::new(cfg, t0);
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed_0003);
    let template = build_rtp(
        true,
        101,
        1,
        2,
        3,
        &[4, 5],
        Some((0xbede, &[6])),
        &[7; 20],
        3,
    );
    let sr = build_sr_sdes(1, 2);
    let mut buf = [0u8; 256];
    let mut forwarded = 0;
    for i in 0..20_000u32 {
        let len = rng.random_range(0..buf.len());
        match i % 3 {
            // Pure random bytes, biased to look like RTP half the time.
            0 => {
                rng.fill(&mut buf[..len]);
                if len > 0 && rng.random_bool(0.5) {
                    buf[0] = 0x80 | (buf[0] & 0x3f);
                }
            }
            // Mutated valid RTP / RTCP: flip a few bytes, random truncation.
            _ => {
                let src: &[u8] = if i % 3 == 1 { &template } else { &sr };
                let len_c = len.min(src.len());
                buf[..len_c].copy_from_slice(&src[..len_c]);
                for _ in 0..rng.random_range(0..4) {
                    if len_c > 0 {
                        let k = rng.random_range(0..len_c);
                        buf[k] = rng.random();
                    }
                }
                let from = if rng.random_bool(0.9) {
                    AI_PEER
                } else {
                    ATTACKER
                };
                let side = if i % 2 == 0 { Side::A } else { Side::B };
                let b = &mut buf[..len_c];
                let a1 = r.handle_rtp(side, addr(from), b, t0);
                let a2 = r.handle_rtcp(side, addr(from), b, t0);
                for a in [a1, a2] {
                    if let Action::Forward { len, .. } = a {
                        assert!(len <= len_c);
                        forwarded += 1;
                    }
                }
                continue;
            }
        }
        let _ = r.handle_rtp(Side::A, addr(CARRIER_NAT), &mut buf[..len], t0);
        let _ = r.handle_rtcp(Side::B, addr(AI_PEER), &mut buf[..len], t0);
        let _ = crate::media::rtp::TelephoneEvent::parse(&buf[..len]);
    }
    assert!(forwarded > 0, "the mutation loop reaches the forward path");
}

#[test]
fn rtcp_translated_consistently_with_rtp() {
    let t0 = Instant::now();
    let mut r = Relay::new(config(), t0);
    // A sends SSRC 0x1234 seq 5000 ts 123_456 → out seq 100, ts 1_000 (offsets −4900, −122_456).
    fwd(&mut r, Side::A, CARRIER_NAT, 5000, 123_456, 0x1234, t0);
    // B sends SSRC 0x7777 seq 50 → out seq 200.
    fwd(&mut r, Side::B, AI_PEER, 50, 0, 0x7777, t0);
    // A's SR: its RTP timestamp goes into the outgoing space; its report about the stream
    // holdfast sends to A (SSRC_TO_A, seq 200) maps back to B's source (0x7777, seq 50).
    let mut sr = build_sr_sdes(0x1234, SSRC_TO_A);
    sr[16..20].copy_from_slice(&123_616u32.to_be_bytes());
    sr[36..40].copy_from_slice(&200u32.to_be_bytes());
    assert!(matches!(
        r.handle_rtcp(Side::A, addr("198.51.100.20:40001"), &mut sr, t0),
        Action::Forward { .. }
    ));
    assert_eq!(rtcp_header(&sr).unwrap().ssrc, SSRC_TO_B);
    assert_eq!(&sr[16..20], &1_160u32.to_be_bytes());
    assert_eq!(&sr[28..32], &0x7777u32.to_be_bytes());
    assert_eq!(&sr[36..40], &50u32.to_be_bytes());
}

#[test]
fn stream_config_from_seed_is_deterministic() {
    let a = StreamConfig::from_seed(42, 8000);
    assert_eq!(a, StreamConfig::from_seed(42, 8000));
    let b = StreamConfig::from_seed(43, 8000);
    assert_ne!(a.ssrc, b.ssrc);
    assert_ne!(a.initial_ts, b.initial_ts);
    assert_eq!(a.clock_rate_hz, 8000);
    assert_eq!(a.pt_map, PayloadTypeMap::identity());
}

#[test]
fn rtcp_from_separate_port_to_muxed_leg() {
    let t0 = Instant::now();
    let mut cfg = config();
    cfg.b.rtcp_mux = true;
    let mut r = Relay::new(cfg, t0);
    let mut rr = vec![0x80, 201, 0, 1, 0, 0, 0, 0x42];
    assert_eq!(
        r.handle_rtcp(Side::A, addr("198.51.100.20:10001"), &mut rr, t0),
        Action::Forward {
            to: addr(AI_PEER),
            len: 8,
            via: LocalSocket {
                side: Side::B,
                kind: SocketKind::Rtp
            }
        }
    );
    assert_eq!(rtcp_header(&rr).unwrap().ssrc, SSRC_TO_B);
}

#[test]
fn each_latch_is_polled_once_and_again_after_a_relatch() {
    let t0 = Instant::now();
    let mut r = Relay::new(config(), t0);
    assert_eq!(r.poll_latched(), None);
    fwd(&mut r, Side::A, CARRIER_NAT, 1, 160, 0x1234, t0);
    fwd(&mut r, Side::A, CARRIER_NAT, 2, 320, 0x1234, t0);
    let mut rr = vec![0x80, 201, 0, 1, 0, 0, 0, 0x42];
    assert!(matches!(
        r.handle_rtcp(Side::B, addr("192.0.2.50:20001"), &mut rr, t0),
        Action::Forward { .. }
    ));
    assert_eq!(
        r.poll_latched(),
        Some((Side::A, SocketKind::Rtp, addr(CARRIER_NAT)))
    );
    assert_eq!(
        r.poll_latched(),
        Some((Side::B, SocketKind::Rtcp, addr("192.0.2.50:20001")))
    );
    assert_eq!(r.poll_latched(), None);
    // A wrong source neither latches nor reports.
    let mut buf = simple_rtp(0, 3, 480, 0x1234);
    let _ = r.handle_rtp(Side::A, addr(ATTACKER), &mut buf, t0);
    assert_eq!(r.poll_latched(), None);
    r.relatch(
        Side::A,
        Some(addr(CARRIER_SDP)),
        None,
        LatchPolicy::default(),
        t0,
    );
    fwd(&mut r, Side::A, CARRIER_SDP, 4, 640, 0x1234, t0);
    assert_eq!(
        r.poll_latched(),
        Some((Side::A, SocketKind::Rtp, addr(CARRIER_SDP)))
    );
    assert_eq!(r.poll_latched(), None);
}

#[test]
fn a_latch_undone_by_a_relatch_before_polling_is_not_reported() {
    let t0 = Instant::now();
    let mut r = Relay::new(config(), t0);
    fwd(&mut r, Side::A, CARRIER_NAT, 1, 160, 0x1234, t0);
    r.relatch(Side::A, None, None, LatchPolicy::default(), t0);
    assert_eq!(r.poll_latched(), None);
}

#[test]
fn unreachable_is_reported_once_per_rtp_peer_and_again_after_relatch() {
    let t0 = Instant::now();
    let mut r = Relay::new(config(), t0);
    // Not the leg's RTP destination (e.g. its RTCP port, or a stale peer): ignored.
    assert!(!r.handle_unreachable(Side::B, addr("192.0.2.50:20001")));
    assert!(!r.handle_unreachable(Side::A, addr(AI_PEER)));
    assert!(r.handle_unreachable(Side::B, addr(AI_PEER)));
    assert!(!r.handle_unreachable(Side::B, addr(AI_PEER)));
    r.relatch(
        Side::B,
        Some(addr(AI_PEER)),
        None,
        LatchPolicy::default(),
        t0,
    );
    assert!(r.handle_unreachable(Side::B, addr(AI_PEER)));
    // After latching a NAT address, the latched one is the destination.
    fwd(&mut r, Side::A, CARRIER_NAT, 1, 160, 0x1234, t0);
    assert!(!r.handle_unreachable(Side::A, addr(CARRIER_SDP)));
    // An error from it says the source does not receive (asymmetric RTP), not that the
    // peer is gone: the SDP address is tried, and an error from there is reported.
    assert!(!r.handle_unreachable(Side::A, addr(CARRIER_NAT)));
    assert_eq!(r.leg(Side::A).rtp().destination(), Some(addr(CARRIER_SDP)));
    assert!(r.handle_unreachable(Side::A, addr(CARRIER_SDP)));
}

#[test]
fn restarting_the_idle_clock_reports_a_silence_once_per_timeout() {
    let t0 = Instant::now();
    let mut r = Relay::new(config(), t0);
    let t1 = t0 + Duration::from_secs(5);
    let t = r.poll_media_timeout(t1).unwrap();
    assert_eq!((t.side, t.idle_for), (Side::B, Duration::from_secs(5)));
    r.restart_idle_clock(Side::B, t1);
    assert_eq!(r.poll_media_timeout(t1), None);
    assert_eq!(r.poll_media_timeout(t1 + Duration::from_millis(4999)), None);
    assert_eq!(
        r.poll_media_timeout(t1 + Duration::from_secs(5))
            .map(|t| t.side),
        Some(Side::B)
    );
}

#[test]
fn rtcp_mux_can_be_switched_on_a_running_leg() {
    let t0 = Instant::now();
    let mut r = Relay::new(config(), t0);
    let mut rr = vec![0x80, 201, 0, 1, 0, 0, 0, 0x42];
    let to_b = |r: &mut Relay, rr: &mut Vec<u8>| match r.handle_rtcp(
        Side::A,
        addr("198.51.100.20:10001"),
        rr,
        t0,
    ) {
        Action::Forward { to, via, .. } => (to, via.kind),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        to_b(&mut r, &mut rr),
        (addr("192.0.2.50:20001"), SocketKind::Rtcp)
    );
    r.set_rtcp_mux(Side::B, true);
    assert!(r.leg(Side::B).rtcp_mux());
    assert_eq!(to_b(&mut r, &mut rr), (addr(AI_PEER), SocketKind::Rtp));
}

// ---- Gap audio (RelayUpdate::Fill) ----

use crate::media::codec::G711;
use crate::media::filler::{AfterPrompt, GapAudio};

/// Forward one packet of payload type `pt` from leg `side` and return the rewritten header.
fn fwd_pt(r: &mut Relay, side: Side, pt: u8, seq: u16, ssrc: u32, now: Instant) -> Out {
    let mut buf = simple_rtp(pt, seq, 160 * u32::from(seq), ssrc);
    match r.handle_rtp(
        side,
        addr(if side == Side::B {
            AI_PEER
        } else {
            CARRIER_SDP
        }),
        &mut buf,
        now,
    ) {
        Action::Forward { .. } => parse_out(&buf),
        other => panic!("expected Forward, got {other:?}"),
    }
}

/// Poll one gap-audio packet; returns (header, payload, packet).
fn poll_one(r: &mut Relay, now: Instant) -> Option<(Out, Vec<u8>, FillPacket)> {
    let mut buf = [0u8; 1500];
    let p = r.poll_fill(now, &mut buf)?;
    assert_eq!(p.len, FILL_PACKET_LEN);
    let pkt = RtpPacket::new_checked(&buf[..p.len]).unwrap();
    assert_eq!(pkt.version(), 2);
    assert!(!pkt.padding() && !pkt.extension() && pkt.csrc_count() == 0);
    Some((parse_out(&buf[..p.len]), pkt.payload().to_vec(), p))
}

/// The AI leg (B) sent 5 PCMU packets at t0, t0+20ms, …, t0+80ms; they reached A.
fn relay_after_ai_talked(t0: Instant, pt: u8) -> (Relay, Out) {
    let mut r = Relay::new(config(), t0);
    let mut last = None;
    for i in 0..5u16 {
        last = Some(fwd_pt(
            &mut r,
            Side::B,
            pt,
            1000 + i,
            0xaaaa,
            t0 + ms(20 * u64::from(i)),
        ));
    }
    (r, last.unwrap())
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn fill_sends_a_frame_every_20ms_then_the_new_source_continues_seamlessly() {
    let t0 = Instant::now();
    let (mut r, last) = relay_after_ai_talked(t0, 0);
    // The provider dies; the core switches B's source and starts comfort noise toward A.
    let start = t0 + ms(200);
    r.handle_source_switch(Side::B, start);
    assert_eq!(
        r.handle_fill(Side::A, Some(GapAudio::ComfortNoise), None, start),
        FillStatus::Started(G711::Ulaw)
    );
    assert!(r.is_filling(Side::A) && !r.is_filling(Side::B));
    assert_eq!(r.next_fill_at(), Some(start));
    assert_eq!(
        r.poll_timeout(),
        Some(start),
        "the fill deadline is the relay's timer"
    );
    assert!(
        r.poll_fill(start - ms(1), &mut [0u8; 200]).is_none(),
        "not due yet"
    );

    let mut fill = Vec::new();
    for k in 0..6u64 {
        let now = start + ms(20 * k);
        let (o, payload, p) = poll_one(&mut r, now).expect("a frame every 20 ms");
        assert_eq!(
            p,
            FillPacket {
                to: addr(CARRIER_SDP),
                len: FILL_PACKET_LEN,
                via: LocalSocket {
                    side: Side::A,
                    kind: SocketKind::Rtp
                }
            }
        );
        assert!(
            payload.iter().any(|&c| c != 0xff),
            "comfort noise, not silence"
        );
        assert!(poll_one(&mut r, now).is_none(), "one frame per frame time");
        assert!(poll_one(&mut r, now + ms(19)).is_none());
        assert_eq!(r.next_fill_at(), Some(now + ms(20)));
        fill.push(o);
    }
    assert_eq!(r.fill_packets(Side::A), 6);
    // Continuous with what the old provider sent: same SSRC, seq + 1, ts by the 120 ms
    // since its last packet, marker on the first fill packet only; then 160 per frame.
    assert_eq!(fill[0].ssrc, SSRC_TO_A);
    assert_eq!(fill[0].seq, last.seq.wrapping_add(1));
    assert_eq!(fill[0].ts.wrapping_sub(last.ts), 120 * 8);
    assert_eq!((fill[0].marker, fill[0].pt), (true, 0));
    for w in fill.windows(2) {
        assert_eq!(w[1].seq, w[0].seq.wrapping_add(1));
        assert_eq!(w[1].ts.wrapping_sub(w[0].ts), 160);
        assert!(!w[1].marker && w[1].ssrc == SSRC_TO_A && w[1].pt == 0);
    }
    // The new provider's first packet, 10 ms after the last frame, stops the fill and
    // continues the same stream.
    let first = fwd_pt(&mut r, Side::B, 0, 7, 0xbbbb, start + ms(110));
    let lf = fill.last().unwrap();
    assert_eq!(first.ssrc, SSRC_TO_A);
    assert_eq!(first.seq, lf.seq.wrapping_add(1));
    assert_eq!(first.ts.wrapping_sub(lf.ts), 80);
    assert!(first.marker);
    assert!(!r.is_filling(Side::A));
    assert_eq!(r.next_fill_at(), None);
    assert!(
        poll_one(&mut r, start + ms(200)).is_none(),
        "the fill is over"
    );
    let next = fwd_pt(&mut r, Side::B, 0, 8, 0xbbbb, start + ms(130));
    assert_eq!(
        (next.seq, next.ts),
        (first.seq.wrapping_add(1), first.ts.wrapping_add(160))
    );
    assert!(!next.marker);
    // The gap is still "old source's last packet → new source's first": 80 ms → 310 ms.
    assert_eq!(r.poll_resumed(), Some((Side::B, Some(ms(230)))));
    // Fill packets are not forwarded packets of the stream.
    assert_eq!(r.stats(Side::B).packets_forwarded, 7);
    assert_eq!(r.fill_packets(Side::A), 6);
}

#[test]
fn no_fill_without_g711_or_before_anything_was_sent() {
    let t0 = Instant::now();
    let mut r = Relay::new(config(), t0);
    assert_eq!(
        r.handle_fill(Side::A, Some(GapAudio::ComfortNoise), None, t0),
        FillStatus::NothingSentYet
    );
    assert_eq!((r.next_fill_at(), r.is_filling(Side::A)), (None, false));
    for pt in [18u8, 9, 101] {
        fwd_pt(&mut r, Side::B, pt, 5, 0xaaaa, t0);
        assert_eq!(
            r.handle_fill(Side::A, Some(GapAudio::ComfortNoise), None, t0),
            FillStatus::NotG711(pt)
        );
        assert!(poll_one(&mut r, t0 + ms(100)).is_none());
    }
    // What counts is the payload type the peer receives (after mapping): 96 → 8 is PCMA.
    r.set_pt_map(Side::B, PayloadTypeMap::identity().with(96, 8));
    fwd_pt(&mut r, Side::B, 96, 6, 0xaaaa, t0);
    assert_eq!(
        r.handle_fill(Side::A, Some(GapAudio::ComfortNoise), None, t0),
        FillStatus::Started(G711::Alaw)
    );
    assert_eq!(poll_one(&mut r, t0).unwrap().0.pt, 8);
    // A non-G.711 packet afterwards ends the fill like any forwarded packet; a new fill
    // is then refused.
    fwd_pt(&mut r, Side::B, 18, 7, 0xaaaa, t0 + ms(5));
    assert_eq!(
        r.handle_fill(Side::A, Some(GapAudio::ComfortNoise), None, t0 + ms(10)),
        FillStatus::NotG711(18)
    );
    assert!(poll_one(&mut r, t0 + ms(100)).is_none());
    assert_eq!(r.fill_packets(Side::A), 1);
}

#[test]
fn fill_stops_on_none_and_the_stream_resumes_after_it() {
    let t0 = Instant::now();
    let (mut r, _) = relay_after_ai_talked(t0, 0);
    let start = t0 + ms(100);
    r.handle_fill(Side::A, Some(GapAudio::ComfortNoise), None, start);
    let a = poll_one(&mut r, start).unwrap().0;
    let b = poll_one(&mut r, start + ms(20)).unwrap().0;
    assert_eq!(
        r.handle_fill(Side::A, None, None, start + ms(30)),
        FillStatus::Stopped
    );
    assert_eq!(r.next_fill_at(), None);
    assert!(poll_one(&mut r, start + ms(40)).is_none());
    // Even without a source switch (same provider came back), the next packet follows the
    // fill frames rather than colliding with their sequence numbers.
    let c = fwd_pt(&mut r, Side::B, 0, 1005, 0xaaaa, start + ms(60));
    assert_eq!(b.seq, a.seq.wrapping_add(1));
    assert_eq!(c.seq, b.seq.wrapping_add(1));
    assert_eq!(c.ts.wrapping_sub(b.ts), 40 * 8);
    assert!(c.marker);
    assert_eq!(r.poll_resumed(), None, "no source switch, no Resumed");
    // Stopping when nothing runs is harmless.
    assert_eq!(
        r.handle_fill(Side::A, None, None, start),
        FillStatus::Stopped
    );
}

#[test]
fn prompt_plays_then_noise_in_the_stream_law() {
    let t0 = Instant::now();
    // PCMA toward the caller this time.
    let (mut r, _) = relay_after_ai_talked(t0, 8);
    // 30 ms of a loud prompt: one and a half frames.
    let audio = GapAudio::prompt(vec![12_000; 240], AfterPrompt::ComfortNoise);
    let start = t0 + ms(100);
    assert_eq!(
        r.handle_fill(Side::A, Some(audio), None, start),
        FillStatus::Started(G711::Alaw)
    );
    let loud = G711::Alaw.encode(12_000);
    let (o1, p1, _) = poll_one(&mut r, start).unwrap();
    assert_eq!((o1.pt, o1.marker), (8, true));
    assert_eq!(p1, vec![loud; 160]);
    let (_, p2, _) = poll_one(&mut r, start + ms(20)).unwrap();
    assert_eq!(p2[..80], [loud; 80]);
    assert!(p2[80..].iter().all(|&c| c != loud));
    for k in 2..5 {
        let (_, p, _) = poll_one(&mut r, start + ms(20 * k)).unwrap();
        assert!(
            p.iter().all(|&c| G711::Alaw.decode(c).abs() < 100),
            "quiet noise"
        );
        assert!(p.iter().any(|&c| c != p[0]), "noise, not a constant");
    }
    // μ-law on a PCMU stream: the same prompt gives the μ-law codes.
    let (mut u, _) = relay_after_ai_talked(t0, 0);
    assert_eq!(
        u.handle_fill(Side::A, Some(audio), None, start),
        FillStatus::Started(G711::Ulaw)
    );
    let (o, p, _) = poll_one(&mut u, start).unwrap();
    assert_eq!(o.pt, 0);
    assert_eq!(p, vec![G711::Ulaw.encode(12_000); 160]);
    assert_ne!(p, p1);
}

#[test]
fn late_polls_skip_frames_and_keep_timestamps_on_the_wall_clock() {
    let t0 = Instant::now();
    let (mut r, _) = relay_after_ai_talked(t0, 0);
    let start = t0 + ms(100);
    r.handle_fill(Side::A, Some(GapAudio::ComfortNoise), None, start);
    let a = poll_one(&mut r, start).unwrap().0;
    // Polled 40 ms late: the frames due at +20, +40 and +60 go out (a small catch-up)...
    let b = poll_one(&mut r, start + ms(60)).unwrap().0;
    let b2 = poll_one(&mut r, start + ms(60)).unwrap().0;
    let c = poll_one(&mut r, start + ms(60)).unwrap().0;
    assert!(poll_one(&mut r, start + ms(60)).is_none());
    assert_eq!(
        [b.ts, b2.ts, c.ts].map(|t| t.wrapping_sub(a.ts)),
        [160, 320, 480]
    );
    // ...but 500 ms late, one frame on the current slot, not a burst of 25.
    let d = poll_one(&mut r, start + ms(560)).unwrap().0;
    assert!(poll_one(&mut r, start + ms(560)).is_none());
    assert_eq!(d.seq, c.seq.wrapping_add(1));
    assert_eq!(d.ts.wrapping_sub(a.ts), 560 * 8);
    assert_eq!(r.next_fill_at(), Some(start + ms(580)));
}

#[test]
fn fill_is_per_direction_and_skips_frames_while_disabled() {
    let t0 = Instant::now();
    let mut r = Relay::new(config(), t0);
    // The carrier (A) talked toward B; fill toward B uses stream a_to_b.
    let last = fwd_pt(&mut r, Side::A, 0, 1, 0x1111, t0);
    assert_eq!(
        r.handle_fill(Side::B, Some(GapAudio::ComfortNoise), None, t0 + ms(20)),
        FillStatus::Started(G711::Ulaw)
    );
    assert_eq!(
        r.handle_fill(Side::A, Some(GapAudio::ComfortNoise), None, t0),
        FillStatus::NothingSentYet
    );
    let (o, _, p) = poll_one(&mut r, t0 + ms(20)).unwrap();
    assert_eq!((p.to, p.via.side), (addr(AI_PEER), Side::B));
    assert_eq!((o.ssrc, o.seq), (SSRC_TO_B, last.seq.wrapping_add(1)));
    // On hold, frames are due but nothing goes out; resumed, the grid continues.
    r.set_enabled(Side::A, false, t0 + ms(30));
    assert!(poll_one(&mut r, t0 + ms(40)).is_none());
    assert_eq!(r.next_fill_at(), Some(t0 + ms(60)));
    r.set_enabled(Side::A, true, t0 + ms(50));
    let (o2, _, _) = poll_one(&mut r, t0 + ms(60)).unwrap();
    assert_eq!(o2.seq, o.seq.wrapping_add(1));
    assert_eq!(o2.ts.wrapping_sub(o.ts), 40 * 8);
    assert_eq!(r.fill_packets(Side::B), 2);
    // Too short a buffer gets nothing (and skips that frame rather than spinning).
    assert!(r
        .poll_fill(t0 + ms(80), &mut [0u8; FILL_PACKET_LEN - 1])
        .is_none());
    assert_eq!(r.next_fill_at(), Some(t0 + ms(100)));
}

#[test]
fn fill_without_a_peer_address_sends_nothing() {
    let t0 = Instant::now();
    let mut cfg = config();
    cfg.a.rtp_peer = None;
    cfg.a.latch = ANY_NOW;
    let mut r = Relay::new(cfg, t0);
    // A latches by sending; then its address is forgotten by a relatch to "unknown".
    fwd_pt(&mut r, Side::A, 0, 1, 0x1111, t0);
    fwd_pt(&mut r, Side::B, 0, 1, 0x2222, t0);
    r.relatch(Side::A, None, None, LatchPolicy::default(), t0);
    assert_eq!(
        r.handle_fill(Side::A, Some(GapAudio::ComfortNoise), None, t0),
        FillStatus::Started(G711::Ulaw)
    );
    assert!(poll_one(&mut r, t0 + ms(100)).is_none());
    assert_eq!(r.fill_packets(Side::A), 0);
    assert!(r.next_fill_at().unwrap() > t0 + ms(100));
}

// ---- Liveness support: RTCP activity, silence on hold, hold outside the gap, mute ----

#[test]
fn rtcp_from_the_peer_keeps_its_leg_alive() {
    let t0 = Instant::now();
    let mut r = Relay::new(config(), t0);
    let s = Duration::from_secs;
    // A silent agent that still sends RTCP reports (from RTP port + 1) is not silent.
    let mut sr = build_sr_sdes(0x4242, SSRC_TO_B);
    assert!(matches!(
        r.handle_rtcp(Side::B, addr("192.0.2.50:20001"), &mut sr, t0 + s(4)),
        Action::Forward { .. }
    ));
    assert_eq!(r.idle_since(Side::B), t0 + s(4));
    assert_eq!(r.poll_media_timeout(t0 + s(6)), None);
    // Muxed RTCP on the RTP port counts the same.
    let mut sr = build_sr_sdes(0x4242, SSRC_TO_B);
    r.handle_rtp(Side::B, addr(AI_PEER), &mut sr, t0 + s(8));
    assert_eq!(r.idle_since(Side::B), t0 + s(8));
    // RTCP from a stranger does not.
    let mut sr = build_sr_sdes(1, 2);
    r.handle_rtcp(Side::B, addr(ATTACKER), &mut sr, t0 + s(9));
    assert_eq!(r.idle_since(Side::B), t0 + s(8));
}

#[test]
fn time_on_hold_is_not_part_of_a_source_switch_gap() {
    let t0 = Instant::now();
    let (mut r, _) = relay_after_ai_talked(t0, 0);
    // The caller holds at 100 ms (what B sends is not forwarded); the agent is replaced
    // during the hold; the caller unholds at 9.1 s and the new agent's first packet comes
    // 50 ms later.
    r.set_enabled(Side::B, false, t0 + ms(100));
    r.handle_source_switch(Side::B, t0 + ms(5000));
    r.set_enabled(Side::B, true, t0 + ms(9100));
    let mut buf = simple_rtp(0, 7, 0, 0xbbbb);
    assert!(matches!(
        r.handle_rtp(Side::B, addr(AI_PEER), &mut buf, t0 + ms(9150)),
        Action::Forward { .. }
    ));
    // Last packet at 80 ms, 20 ms before the hold, plus 50 ms after it: 70 ms.
    assert_eq!(r.poll_resumed(), Some((Side::B, Some(ms(70)))));
}

#[test]
fn a_muted_source_is_held_back_and_its_time_counts_as_gap() {
    let t0 = Instant::now();
    let (mut r, last) = relay_after_ai_talked(t0, 0);
    r.set_muted(Side::B, true);
    let mut buf = simple_rtp(0, 1005, 0, 0xaaaa);
    assert_eq!(
        r.handle_rtp(Side::B, addr(AI_PEER), &mut buf, t0 + ms(100)),
        Action::Drop(DropReason::Disabled)
    );
    assert!(!r.stream(Side::B).is_enabled());
    r.handle_source_switch(Side::B, t0 + ms(500));
    r.set_muted(Side::B, false);
    let o = fwd_pt(&mut r, Side::B, 0, 9, 0xbbbb, t0 + ms(580));
    assert_eq!(o.seq, last.seq.wrapping_add(1), "the stream continues");
    assert!(o.marker);
    assert_eq!(r.poll_resumed(), Some((Side::B, Some(ms(500)))));
}

#[test]
fn gap_audio_opens_a_stream_nothing_was_sent_in_yet_in_the_negotiated_codec() {
    let t0 = Instant::now();
    let mut r = Relay::new(config(), t0);
    // The agent never spoke: without a negotiated payload type nothing can be sent…
    assert_eq!(
        r.handle_fill(Side::A, Some(GapAudio::ComfortNoise), None, t0),
        FillStatus::NothingSentYet
    );
    // …with the one the caller's SDP agreed to, the fill starts the stream at its initial
    // sequence number and timestamp, and the agent's first packet continues it.
    assert_eq!(
        r.handle_fill(Side::A, Some(GapAudio::ComfortNoise), Some(8), t0),
        FillStatus::Started(G711::Alaw)
    );
    let (first, _, p) = poll_one(&mut r, t0).expect("a frame now");
    assert_eq!((first.seq, first.ts, first.pt), (200, 2_000, 8));
    assert!(first.marker);
    assert_eq!(p.to, addr(CARRIER_SDP));
    let (second, _, _) = poll_one(&mut r, t0 + ms(20)).expect("20 ms later");
    assert_eq!((second.seq, second.ts), (201, 2_160));
    let o = fwd_pt(&mut r, Side::B, 8, 50, 0xcccc, t0 + ms(30));
    assert_eq!(o.seq, 202);
    assert!(!r.is_filling(Side::A));
}

// --- Heuristic learning (rtpengine-style): which first packets may latch, and when. ---

/// A relay whose legs latch by `policy` (the default: strict, 1 s learning window).
fn learning_relay(policy: LatchPolicy, t0: Instant) -> Relay {
    let mut cfg = config();
    cfg.a.latch = policy;
    cfg.b.latch = policy;
    Relay::new(cfg, t0)
}

/// One PCMU packet on `side`'s RTP socket from `from` at `now`.
fn rtp_from(r: &mut Relay, side: Side, from: &str, seq: u16, now: Instant) -> Action {
    let mut buf = simple_rtp(0, seq, u32::from(seq) * 160, 0x5151);
    r.handle_rtp(side, addr(from), &mut buf, now)
}

fn is_forward(a: Action) -> bool {
    matches!(a, Action::Forward { .. })
}

const ANY: LatchPolicy = LatchPolicy {
    latching: Latching::Any,
    learning_window: DEFAULT_LEARNING_WINDOW,
};

#[test]
fn the_exact_sdp_address_latches_at_once() {
    let t0 = Instant::now();
    let mut r = learning_relay(LatchPolicy::default(), t0);
    assert!(is_forward(rtp_from(&mut r, Side::A, CARRIER_SDP, 1, t0)));
    assert_eq!(r.leg(Side::A).rtp().latched(), Some(addr(CARRIER_SDP)));
    assert_eq!(
        r.poll_latched(),
        Some((Side::A, SocketKind::Rtp, addr(CARRIER_SDP)))
    );
    assert_eq!(r.stats(Side::A).drops.total(), 0);
}

#[test]
fn the_sdp_ip_on_another_port_latches_only_after_the_window() {
    let t0 = Instant::now();
    let mut r = learning_relay(LatchPolicy::default(), t0);
    for at in [t0, t0 + ms(500), t0 + ms(999)] {
        assert_eq!(
            rtp_from(&mut r, Side::A, CARRIER_NAT, 1, at),
            Action::Drop(DropReason::Learning)
        );
    }
    assert_eq!(r.leg(Side::A).rtp().latched(), None);
    assert_eq!(r.poll_latched(), None);
    // Nothing came from the exact address within the window: the NATed port latches.
    assert!(is_forward(rtp_from(
        &mut r,
        Side::A,
        CARRIER_NAT,
        2,
        t0 + ms(1000)
    )));
    assert_eq!(r.leg(Side::A).rtp().latched(), Some(addr(CARRIER_NAT)));
    assert_eq!(
        r.poll_latched(),
        Some((Side::A, SocketKind::Rtp, addr(CARRIER_NAT)))
    );
    // From now on only the latched address passes, the SDP one included.
    assert_eq!(
        rtp_from(&mut r, Side::A, CARRIER_SDP, 3, t0 + ms(1020)),
        Action::Drop(DropReason::WrongSource)
    );
    let d = r.stats(Side::A).drops;
    assert_eq!((d.learning, d.wrong_source, d.total()), (3, 1, 4));
    assert_eq!(
        r.stats(Side::A).packets_received,
        1,
        "held-back packets are not received"
    );
}

#[test]
fn an_exact_packet_within_the_window_wins_over_an_earlier_same_ip_one() {
    let t0 = Instant::now();
    let mut r = learning_relay(LatchPolicy::default(), t0);
    // An impostor on the carrier's IP (or a stray NAT mapping) sends first.
    assert_eq!(
        rtp_from(&mut r, Side::A, CARRIER_NAT, 1, t0 + ms(100)),
        Action::Drop(DropReason::Learning)
    );
    assert!(is_forward(rtp_from(
        &mut r,
        Side::A,
        CARRIER_SDP,
        1,
        t0 + ms(200)
    )));
    assert_eq!(r.leg(Side::A).rtp().latched(), Some(addr(CARRIER_SDP)));
    // After the window the earlier candidate is just another source.
    assert_eq!(
        rtp_from(&mut r, Side::A, CARRIER_NAT, 2, t0 + ms(2000)),
        Action::Drop(DropReason::WrongSource)
    );
    assert!(is_forward(rtp_from(
        &mut r,
        Side::A,
        CARRIER_SDP,
        2,
        t0 + ms(2000)
    )));
}

#[test]
fn another_ip_never_latches_under_strict() {
    let t0 = Instant::now();
    let mut r = learning_relay(LatchPolicy::default(), t0);
    for (i, at) in [t0, t0 + ms(1500), t0 + Duration::from_secs(60)]
        .into_iter()
        .enumerate()
    {
        assert_eq!(
            rtp_from(&mut r, Side::A, ATTACKER, i as u16, at),
            Action::Drop(DropReason::UnexpectedSource),
            "at +{:?}",
            at - t0
        );
    }
    // Not even an attacker on the *other* leg's peer address.
    assert_eq!(
        rtp_from(&mut r, Side::A, AI_PEER, 9, t0 + ms(10)),
        Action::Drop(DropReason::UnexpectedSource)
    );
    assert_eq!(r.leg(Side::A).rtp().latched(), None);
    // The real carrier, however late, latches and is forwarded.
    assert!(is_forward(rtp_from(
        &mut r,
        Side::A,
        CARRIER_SDP,
        10,
        t0 + Duration::from_secs(61)
    )));
    let d = r.stats(Side::A).drops;
    assert_eq!((d.unexpected_source, d.total()), (4, 4));
}

#[test]
fn another_ip_latches_under_any_after_the_window() {
    let t0 = Instant::now();
    let mut r = learning_relay(ANY, t0);
    assert_eq!(
        rtp_from(&mut r, Side::A, "203.0.113.7:40000", 1, t0),
        Action::Drop(DropReason::Learning)
    );
    assert!(is_forward(rtp_from(
        &mut r,
        Side::A,
        "203.0.113.7:40000",
        2,
        t0 + ms(1000)
    )));
    assert_eq!(
        r.leg(Side::A).rtp().latched(),
        Some(addr("203.0.113.7:40000"))
    );
    // Replies go where it really is.
    let mut back = simple_rtp(0, 9, 90, 0x9999);
    match r.handle_rtp(Side::B, addr(AI_PEER), &mut back, t0 + ms(1000)) {
        Action::Forward { to, .. } => assert_eq!(to, addr("203.0.113.7:40000")),
        a => panic!("{a:?}"),
    }
    // And `any` still lets the exact address win inside the window.
    let mut r = learning_relay(ANY, t0);
    assert_eq!(
        rtp_from(&mut r, Side::A, ATTACKER, 1, t0),
        Action::Drop(DropReason::Learning)
    );
    assert!(is_forward(rtp_from(
        &mut r,
        Side::A,
        CARRIER_SDP,
        1,
        t0 + ms(10)
    )));
    assert_eq!(
        rtp_from(&mut r, Side::A, ATTACKER, 2, t0 + ms(2000)),
        Action::Drop(DropReason::WrongSource)
    );
}

#[test]
fn under_any_the_sdp_ip_beats_another_ip_while_it_sends() {
    let t0 = Instant::now();
    let mut r = learning_relay(ANY, t0);
    assert_eq!(
        rtp_from(&mut r, Side::A, ATTACKER, 1, t0),
        Action::Drop(DropReason::Learning)
    );
    assert_eq!(
        rtp_from(&mut r, Side::A, CARRIER_NAT, 1, t0 + ms(900)),
        Action::Drop(DropReason::Learning)
    );
    // The window is over, but the SDP's IP sent 100 ms ago: the other IP waits.
    assert_eq!(
        rtp_from(&mut r, Side::A, ATTACKER, 2, t0 + ms(1000)),
        Action::Drop(DropReason::Learning)
    );
    assert!(is_forward(rtp_from(
        &mut r,
        Side::A,
        CARRIER_NAT,
        2,
        t0 + ms(1020)
    )));
    assert_eq!(r.leg(Side::A).rtp().latched(), Some(addr(CARRIER_NAT)));

    // A better candidate that fell silent for a whole window gives way.
    let mut r = learning_relay(ANY, t0);
    assert_eq!(
        rtp_from(&mut r, Side::A, CARRIER_NAT, 1, t0 + ms(100)),
        Action::Drop(DropReason::Learning)
    );
    assert_eq!(
        rtp_from(&mut r, Side::A, ATTACKER, 1, t0 + ms(1050)),
        Action::Drop(DropReason::Learning)
    );
    assert!(is_forward(rtp_from(
        &mut r,
        Side::A,
        ATTACKER,
        2,
        t0 + ms(1100)
    )));
    assert_eq!(r.leg(Side::A).rtp().latched(), Some(addr(ATTACKER)));
}

#[test]
fn a_leg_without_an_sdp_address_latches_nothing_under_strict() {
    let t0 = Instant::now();
    let mut cfg = config();
    cfg.b.rtp_peer = None;
    cfg.b.latch = LatchPolicy::default();
    let mut r = Relay::new(cfg, t0);
    // The answerer before its answer: nobody may latch it, whenever they send.
    for at in [t0, t0 + Duration::from_secs(5)] {
        assert_eq!(
            rtp_from(&mut r, Side::B, AI_PEER, 1, at),
            Action::Drop(DropReason::UnexpectedSource)
        );
    }
    // Its answer arrives: its SDP address latches at once.
    r.relatch(
        Side::B,
        Some(addr(AI_PEER)),
        None,
        LatchPolicy::default(),
        t0 + Duration::from_secs(6),
    );
    assert!(is_forward(rtp_from(
        &mut r,
        Side::B,
        AI_PEER,
        2,
        t0 + Duration::from_secs(6)
    )));
    // Under `any` the first valid packet of an address-less leg latches (nothing to prefer).
    let mut cfg = config();
    cfg.b.rtp_peer = None;
    cfg.b.latch = ANY;
    let mut r = Relay::new(cfg, t0);
    assert!(is_forward(rtp_from(&mut r, Side::B, AI_PEER, 1, t0)));
    assert_eq!(r.leg(Side::B).rtp().latched(), Some(addr(AI_PEER)));
}

#[test]
fn a_relatch_after_a_reinvite_learns_by_the_same_rules_from_then_on() {
    let t0 = Instant::now();
    let mut r = learning_relay(LatchPolicy::default(), t0);
    assert!(is_forward(rtp_from(&mut r, Side::B, AI_PEER, 1, t0)));
    // A re-INVITE moves B to a new provider at t1.
    let t1 = t0 + Duration::from_secs(30);
    let new_ai = "192.0.2.99:30000";
    let new_ai_nat = "192.0.2.99:30500";
    r.relatch(
        Side::B,
        Some(addr(new_ai)),
        None,
        LatchPolicy::default(),
        t1,
    );
    assert_eq!(r.leg(Side::B).rtp().latched(), None);
    // The old provider (another IP now) never latches again; the new one's IP on another
    // port waits for the window, which starts at the relatch.
    assert_eq!(
        rtp_from(&mut r, Side::B, AI_PEER, 2, t1 + ms(10)),
        Action::Drop(DropReason::UnexpectedSource)
    );
    assert_eq!(
        rtp_from(&mut r, Side::B, new_ai_nat, 1, t1 + ms(999)),
        Action::Drop(DropReason::Learning)
    );
    assert!(is_forward(rtp_from(
        &mut r,
        Side::B,
        new_ai_nat,
        2,
        t1 + ms(1000)
    )));
    assert_eq!(r.leg(Side::B).rtp().latched(), Some(addr(new_ai_nat)));

    // A relatch can change the rules: the next provider is `latching: any`.
    let t2 = t1 + Duration::from_secs(30);
    r.relatch(Side::B, Some(addr(new_ai)), None, ANY, t2);
    assert_eq!(r.leg(Side::B).rtp().policy(), ANY);
    assert_eq!(
        rtp_from(&mut r, Side::B, ATTACKER, 3, t2),
        Action::Drop(DropReason::Learning)
    );
    assert!(is_forward(rtp_from(
        &mut r,
        Side::B,
        ATTACKER,
        4,
        t2 + ms(1000)
    )));
}

#[test]
fn a_relatch_to_the_same_sdp_address_keeps_the_latch() {
    let t0 = Instant::now();
    let mut r = learning_relay(LatchPolicy::default(), t0);
    assert_eq!(
        rtp_from(&mut r, Side::A, CARRIER_NAT, 1, t0),
        Action::Drop(DropReason::Learning)
    );
    assert!(is_forward(rtp_from(
        &mut r,
        Side::A,
        CARRIER_NAT,
        2,
        t0 + ms(1000)
    )));
    assert!(r.poll_latched().is_some());
    // An unhold (or a refresh that moved only RTCP) names the same SDP address again: the
    // NATed peer is not learned again, and its latch is not reported twice.
    let t1 = t0 + Duration::from_secs(20);
    r.relatch(
        Side::A,
        Some(addr(CARRIER_SDP)),
        None,
        LatchPolicy::default(),
        t1,
    );
    assert!(is_forward(rtp_from(&mut r, Side::A, CARRIER_NAT, 3, t1)));
    assert_eq!(r.poll_latched(), None);
}

#[test]
fn the_rtcp_socket_learns_by_the_same_rules_against_the_sdp_rtcp_address() {
    let t0 = Instant::now();
    let mut r = learning_relay(LatchPolicy::default(), t0);
    let rtcp = |r: &mut Relay, from: &str, at: Instant| {
        let mut sr = build_sr_sdes(0x1234, SSRC_TO_A);
        r.handle_rtcp(Side::A, addr(from), &mut sr, at)
    };
    // No a=rtcp: RTCP is expected from RTP port + 1 (10001).
    assert_eq!(
        rtcp(&mut r, "203.0.113.66:10001", t0),
        Action::Drop(DropReason::UnexpectedSource)
    );
    assert_eq!(
        rtcp(&mut r, "198.51.100.20:40001", t0 + ms(10)),
        Action::Drop(DropReason::Learning)
    );
    assert!(is_forward(rtcp(&mut r, "198.51.100.20:10001", t0 + ms(20))));
    assert_eq!(
        r.leg(Side::A).rtcp().latched(),
        Some(addr("198.51.100.20:10001"))
    );
    assert_eq!(
        rtcp(&mut r, "198.51.100.20:40001", t0 + ms(2000)),
        Action::Drop(DropReason::WrongSource)
    );
    let d = r.stats(Side::A).drops;
    assert_eq!((d.unexpected_source, d.learning, d.wrong_source), (1, 1, 1));

    // An explicit a=rtcp address is the reference; its IP on another port latches after
    // the window (a NAT rewriting the RTCP port).
    let mut cfg = config();
    cfg.a.latch = LatchPolicy::default();
    cfg.a.rtcp_peer = Some(addr("198.51.100.21:11000"));
    let mut r = Relay::new(cfg, t0);
    assert_eq!(
        rtcp(&mut r, "198.51.100.20:10001", t0),
        Action::Drop(DropReason::UnexpectedSource),
        "RTP port + 1 means nothing when a=rtcp says otherwise"
    );
    assert_eq!(
        rtcp(&mut r, "198.51.100.21:41000", t0 + ms(10)),
        Action::Drop(DropReason::Learning)
    );
    assert!(is_forward(rtcp(
        &mut r,
        "198.51.100.21:41000",
        t0 + ms(1010)
    )));
    assert_eq!(
        r.leg(Side::A).rtcp().latched(),
        Some(addr("198.51.100.21:41000"))
    );
    // The RTCP latch is its own: RTP still learns from the start.
    assert_eq!(r.leg(Side::A).rtp().latched(), None);
}

#[test]
fn muxed_rtcp_before_rtp_passes_only_from_the_exact_address() {
    let t0 = Instant::now();
    let mut cfg = config();
    cfg.a.latch = LatchPolicy::default();
    cfg.a.rtcp_mux = true;
    let mut r = Relay::new(cfg, t0);
    let rr = |r: &mut Relay, from: &str| {
        let mut b = build_sr_sdes(0x1234, SSRC_TO_A);
        r.handle_rtp(Side::A, addr(from), &mut b, t0)
    };
    assert_eq!(
        rr(&mut r, ATTACKER),
        Action::Drop(DropReason::UnexpectedSource)
    );
    assert_eq!(rr(&mut r, CARRIER_NAT), Action::Drop(DropReason::Learning));
    assert!(is_forward(rr(&mut r, CARRIER_SDP)));
    assert_eq!(
        r.leg(Side::A).rtp().latched(),
        None,
        "RTCP never latches a muxed port"
    );
}

#[test]
fn every_latch_drop_reason_has_its_own_counter_and_label() {
    let t0 = Instant::now();
    let mut r = learning_relay(LatchPolicy::default(), t0);
    assert_eq!(
        rtp_from(&mut r, Side::A, ATTACKER, 1, t0),
        Action::Drop(DropReason::UnexpectedSource)
    );
    assert_eq!(
        rtp_from(&mut r, Side::A, CARRIER_NAT, 1, t0),
        Action::Drop(DropReason::Learning)
    );
    assert_eq!(
        rtp_from(&mut r, Side::A, CARRIER_NAT, 2, t0),
        Action::Drop(DropReason::Learning)
    );
    assert!(is_forward(rtp_from(&mut r, Side::A, CARRIER_SDP, 1, t0)));
    for i in 0..3 {
        assert_eq!(
            rtp_from(&mut r, Side::A, ATTACKER, 2 + i, t0),
            Action::Drop(DropReason::WrongSource)
        );
    }
    let d = r.stats(Side::A).drops;
    assert_eq!(
        (d.unexpected_source, d.learning, d.wrong_source, d.total()),
        (1, 2, 3, 6)
    );
    assert_eq!(DropReason::UnexpectedSource.as_str(), "unexpected_source");
    assert_eq!(DropReason::Learning.as_str(), "learning");
    let json = serde_json::to_string(&d).unwrap();
    assert!(
        json.contains("\"unexpected_source\":1") && json.contains("\"learning\":2"),
        "{json}"
    );
}

#[test]
fn an_asymmetric_peer_is_sent_to_at_its_sdp_address_not_reported_gone() {
    let t0 = Instant::now();
    let mut cfg = config();
    cfg.b.latch = LatchPolicy {
        latching: Latching::Strict,
        learning_window: Duration::ZERO,
    };
    let mut r = Relay::new(cfg, t0);
    // The agent sends from 192.0.2.50:30000 but its SDP says :20000 (where it listens).
    let from = "192.0.2.50:30000";
    fwd(&mut r, Side::B, from, 1, 160, 0xabc, t0);
    assert_eq!(r.leg(Side::B).rtp().destination(), Some(addr(from)));
    // Sending there draws ICMP: not a dead peer, an asymmetric one.
    assert!(!r.handle_unreachable(Side::B, addr(from)));
    assert_eq!(r.leg(Side::B).rtp().destination(), Some(addr(AI_PEER)));
    // What it sends is still accepted and forwarded.
    fwd(&mut r, Side::B, from, 2, 320, 0xabc, t0 + ms(20));
    // Its SDP address drawing ICMP too: gone.
    assert!(r.handle_unreachable(Side::B, addr(AI_PEER)));
}
