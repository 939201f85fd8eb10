//! Unit tests of one call's media: what each offer/answer step allocates, emits and returns.
use super::*;
use crate::b2bua::call::Side;

const ADV: &str = "203.0.113.5";
const BIND: &str = "10.0.0.5";

fn params() -> MediaParams {
    MediaParams {
        addrs: MediaAddrs::single(MediaAddr {
            advertise: ADV.parse().unwrap(),
            bind: BIND.parse().unwrap(),
        }),
        timeouts: [Duration::from_secs(30), Duration::from_secs(10)],
        latching: [Latching::Strict, Latching::Strict],
        learning_window: Duration::from_secs(1),
    }
}

fn alloc() -> PortAllocator {
    PortAllocator::new(40000..=40099).unwrap()
}

fn media() -> CallMedia {
    CallMedia::new(7, params(), 0x1234_5678_9abc_def0)
}

/// The caller's offer: PCMU, PCMA and telephone-event, ICE, plus a T.38 line, an SRTP line
/// and a video line.
const OFFER_A: &str = "v=0\r\n\
o=carrier 100 1 IN IP4 192.0.2.10\r\n\
s=-\r\n\
c=IN IP4 192.0.2.10\r\n\
t=0 0\r\n\
a=ice-ufrag:Fh3q\r\n\
a=ice-pwd:asd88fgpdd777uzjYhagZg8l0vZs\r\n\
m=audio 4000 RTP/AVP 0 8 101\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-16\r\n\
a=ptime:20\r\n\
a=sendrecv\r\n\
a=candidate:1 1 UDP 2130706431 192.0.2.10 4000 typ host\r\n\
a=end-of-candidates\r\n\
m=image 5000 udptl t38\r\n\
a=T38FaxVersion:0\r\n\
m=audio 6000 RTP/SAVP 0\r\n\
a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR\r\n\
m=video 7000 RTP/AVPF 96\r\n\
a=rtpmap:96 VP8/90000\r\n";

/// A one-stream offer from the caller: PCMU and telephone-event 101.
const SIMPLE_A: &str = "v=0\r\n\
o=carrier 100 1 IN IP4 192.0.2.10\r\n\
s=-\r\n\
c=IN IP4 192.0.2.10\r\n\
t=0 0\r\n\
m=audio 4000 RTP/AVP 0 101\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-16\r\n\
a=ptime:20\r\n";

/// The callee's answer to [`SIMPLE_A`].
const SIMPLE_B: &str = "v=0\r\n\
o=agent 200 1 IN IP4 192.0.2.20\r\n\
s=-\r\n\
c=IN IP4 192.0.2.20\r\n\
t=0 0\r\n\
m=audio 5000 RTP/AVP 0 101\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-16\r\n";

fn text(b: &[u8]) -> String {
    String::from_utf8(b.to_vec()).unwrap()
}

fn lines_starting<'a>(sdp: &'a str, prefix: &str) -> Vec<&'a str> {
    sdp.lines().filter(|l| l.starts_with(prefix)).collect()
}

fn origin_version(sdp: &str) -> u64 {
    let o = lines_starting(sdp, "o=");
    assert_eq!(o.len(), 1, "{sdp}");
    o[0].split(' ').nth(2).unwrap().parse().unwrap()
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn opens(cmds: &[MediaCommand]) -> Vec<(RelayId, IpAddr, RelayPorts, RelayConfig)> {
    cmds.iter()
        .filter_map(|c| match c {
            MediaCommand::Open {
                id,
                ips,
                ports,
                config,
            } => {
                assert_eq!(ips.a, ips.b, "one family: both legs on the same address");
                Some((*id, ips.a, *ports, *config))
            }
            _ => None,
        })
        .collect()
}

fn updates(cmds: &[MediaCommand]) -> Vec<(u16, RelayUpdate)> {
    cmds.iter()
        .filter_map(|c| match c {
            MediaCommand::Update { id, update } => Some((id.stream, *update)),
            _ => None,
        })
        .collect()
}

fn relatches(cmds: &[MediaCommand], side: Side) -> Vec<(u16, RelayUpdate)> {
    updates(cmds)
        .into_iter()
        .filter(|(_, u)| matches!(u, RelayUpdate::Relatch { side: s, .. } if *s == side))
        .collect()
}

/// The last `SetEnabled` for what leg `from` sends on `stream`.
fn enabled(cmds: &[MediaCommand], stream: u16, from: Side) -> Option<bool> {
    updates(cmds).into_iter().rev().find_map(|(s, u)| match u {
        RelayUpdate::SetEnabled { from: f, enabled } if s == stream && f == from => Some(enabled),
        _ => None,
    })
}

fn pt_map_of(cmds: &[MediaCommand], stream: u16, from: Side) -> Option<PayloadTypeMap> {
    updates(cmds).into_iter().rev().find_map(|(s, u)| match u {
        RelayUpdate::SetPtMap { from: f, map } if s == stream && f == from => Some(map),
        _ => None,
    })
}

/// A call with [`SIMPLE_A`] offered and [`SIMPLE_B`] answered; returns (offer to B, answer
/// to A).
fn established(m: &mut CallMedia, pa: &mut PortAllocator) -> (String, String) {
    let mut out = Vec::new();
    let offer = m.offer(Side::A, SIMPLE_A.as_bytes(), pa, &mut out).unwrap();
    let answer = m.answer(Side::B, SIMPLE_B.as_bytes(), &mut out).unwrap();
    (text(&offer), text(&answer))
}

#[test]
fn offer_allocates_a_pair_per_leg_per_rtp_line_and_anchors_the_rest_off() {
    let mut m = media();
    let mut pa = alloc();
    let mut out = Vec::new();
    let body = m
        .offer(Side::A, OFFER_A.as_bytes(), &mut pa, &mut out)
        .unwrap();
    let b = text(&body);

    // Two anchorable m-lines (audio RTP/AVP, video RTP/AVPF), two pairs each.
    assert_eq!(pa.in_use(), 8);
    let opened = opens(&out);
    assert_eq!(opened.len(), 2, "{out:?}");
    let mut seen = Vec::new();
    for (id, ip, ports, config) in &opened {
        assert_eq!(id.call, 7);
        assert_eq!(
            *ip,
            BIND.parse::<IpAddr>().unwrap(),
            "relays bind to media.bind"
        );
        for p in [ports.a, ports.b] {
            assert_eq!(p.rtp % 2, 0, "RTP on an even port");
            assert_eq!(p.rtcp, Some(p.rtp + 1), "RTCP on the odd port above");
            assert!(pa.is_allocated(p.rtp) && pa.is_allocated(p.rtp + 1));
            seen.extend([p.rtp, p.rtp + 1]);
        }
        assert_eq!(config.a.media_timeout, Duration::from_secs(30));
        assert_eq!(config.b.media_timeout, Duration::from_secs(10));
        assert_eq!(config.b.rtp_peer, None, "B's peer is not known yet");
    }
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen.len(), 8, "no port handed out twice");
    let (audio, video) = (&opened[0], &opened[1]);
    assert_eq!((audio.0.stream, video.0.stream), (0, 3));
    assert_eq!(audio.3.a.rtp_peer, Some(sa("192.0.2.10:4000")));
    assert_eq!(audio.3.a.rtcp_peer, Some(sa("192.0.2.10:4001")));
    assert_eq!(video.3.a.rtp_peer, Some(sa("192.0.2.10:7000")));
    assert_eq!(audio.3.a_to_b.clock_rate_hz, 8000);
    assert_eq!(video.3.a_to_b.clock_rate_hz, 90000);
    assert_ne!(audio.3.a_to_b.ssrc, audio.3.b_to_a.ssrc);

    // The offer for B: holdfast's address everywhere, B's ports, holdfast's o=.
    assert!(!b.contains("192.0.2.10"), "caller's address leaked: {b}");
    let cs = lines_starting(&b, "c=");
    assert!(!cs.is_empty());
    assert!(cs.iter().all(|c| *c == format!("c=IN IP4 {ADV}")), "{b}");
    let o = lines_starting(&b, "o=");
    assert!(
        o.len() == 1
            && o[0].starts_with("o=holdfast ")
            && o[0].ends_with(&format!(" IN IP4 {ADV}")),
        "{b}"
    );
    assert!(!b.contains("o=carrier"));
    let ms = lines_starting(&b, "m=");
    assert_eq!(
        ms,
        vec![
            format!("m=audio {} RTP/AVP 0 8 101", audio.2.b.rtp).as_str(),
            "m=image 0 udptl t38",
            "m=audio 0 RTP/SAVP 0",
            format!("m=video {} RTP/AVPF 96", video.2.b.rtp).as_str(),
        ]
    );
    for kept in [
        "a=rtpmap:0 PCMU/8000",
        "a=rtpmap:8 PCMA/8000",
        "a=rtpmap:101 telephone-event/8000",
        "a=fmtp:101 0-16",
        "a=ptime:20",
        "a=sendrecv",
        "a=rtpmap:96 VP8/90000",
    ] {
        assert!(b.contains(&format!("{kept}\r\n")), "{kept} lost: {b}");
    }
    for ice in [
        "a=ice-ufrag",
        "a=ice-pwd",
        "a=candidate",
        "a=end-of-candidates",
    ] {
        assert!(!b.contains(ice), "{ice} kept: {b}");
    }
    assert_eq!(m.pending_offer, Some(Side::A));
    assert_eq!(m.last_sent(Side::B), Some(b.as_bytes()));
}

#[test]
fn answer_relatches_b_enables_both_ways_and_anchors_for_a() {
    let mut m = media();
    let mut pa = alloc();
    let mut out = Vec::new();
    m.offer(Side::A, SIMPLE_A.as_bytes(), &mut pa, &mut out)
        .unwrap();
    let ports = opens(&out)[0].2;
    out.clear();
    let a = text(&m.answer(Side::B, SIMPLE_B.as_bytes(), &mut out).unwrap());
    assert_eq!(
        relatches(&out, Side::B),
        vec![(
            0,
            RelayUpdate::Relatch {
                side: Side::B,
                rtp: Some(sa("192.0.2.20:5000")),
                rtcp: Some(sa("192.0.2.20:5001")),
                rtcp_mux: false,
                latch: LatchPolicy::default(),
            }
        )]
    );
    assert!(relatches(&out, Side::A).is_empty(), "A's peer is unchanged");
    assert_eq!(enabled(&out, 0, Side::A), Some(true));
    assert_eq!(enabled(&out, 0, Side::B), Some(true));
    assert_eq!(
        pt_map_of(&out, 0, Side::A),
        Some(PayloadTypeMap::identity())
    );
    assert_eq!(
        pt_map_of(&out, 0, Side::B),
        Some(PayloadTypeMap::identity())
    );
    assert!(opens(&out).is_empty(), "an answer opens nothing");
    assert_eq!(
        lines_starting(&a, "m="),
        vec![format!("m=audio {} RTP/AVP 0 101", ports.a.rtp)]
    );
    assert!(!a.contains("192.0.2.20") && !a.contains("o=agent"), "{a}");
    assert!(a.contains(&format!("c=IN IP4 {ADV}\r\n")) && a.contains("o=holdfast "));
    assert!(a.contains("a=fmtp:101 0-16\r\n"));
    assert_eq!(m.pending_offer, None);
    assert_eq!(m.last_received(Side::B), Some(SIMPLE_B.as_bytes()));
}

#[test]
fn an_answer_without_an_offer_and_bad_sdp_are_refused() {
    let mut m = media();
    let mut out = Vec::new();
    assert_eq!(
        m.answer(Side::B, SIMPLE_B.as_bytes(), &mut out),
        Err(MediaError::NoOffer)
    );
    let e = m
        .offer(Side::A, b"hello", &mut alloc(), &mut out)
        .unwrap_err();
    assert!(matches!(e, MediaError::BadSdp(_)), "{e:?}");
    assert_eq!(e.status().0, 400);
    let t38_only = "v=0\r\no=x 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\nm=image 5000 udptl t38\r\n";
    let mut pa = alloc();
    assert_eq!(
        m.offer(Side::A, t38_only.as_bytes(), &mut pa, &mut out),
        Err(MediaError::NothingToAnchor)
    );
    assert_eq!(pa.in_use(), 0);
    assert!(out.is_empty());
}

fn with_mux(sdp: &str, port: u16) -> String {
    sdp.replacen(
        "a=rtpmap:0 PCMU/8000\r\n",
        &format!("a=rtpmap:0 PCMU/8000\r\na=rtcp-mux\r\na=rtcp:{port}\r\n"),
        1,
    )
}

#[test]
fn rtcp_mux_only_when_offer_and_answer_both_have_it() {
    for (offer_mux, answer_mux) in [(true, true), (true, false), (false, true), (false, false)] {
        let case = format!("offer mux {offer_mux}, answer mux {answer_mux}");
        let mut m = media();
        let mut pa = alloc();
        let mut out = Vec::new();
        let offer = if offer_mux {
            with_mux(SIMPLE_A, 4000)
        } else {
            SIMPLE_A.to_string()
        };
        let answer = if answer_mux {
            with_mux(SIMPLE_B, 5000)
        } else {
            SIMPLE_B.replacen(
                "a=rtpmap:0 PCMU/8000\r\n",
                "a=rtpmap:0 PCMU/8000\r\na=rtcp:5001\r\n",
                1,
            )
        };
        let to_b = text(
            &m.offer(Side::A, offer.as_bytes(), &mut pa, &mut out)
                .unwrap(),
        );
        let ports = opens(&out)[0].2;
        if offer_mux {
            // The offer keeps a fallback RTCP port (RFC 5761 §5.1.1).
            assert!(
                to_b.contains(&format!("a=rtcp:{} IN IP4 {ADV}", ports.b.rtp + 1)),
                "{case}: {to_b}"
            );
        }
        out.clear();
        let to_a = text(&m.answer(Side::B, answer.as_bytes(), &mut out).unwrap());
        let both = offer_mux && answer_mux;
        let rb = relatches(&out, Side::B);
        assert!(
            matches!(rb.as_slice(), [(0, RelayUpdate::Relatch { rtcp_mux, .. })] if *rtcp_mux == both),
            "{case}: {rb:?}"
        );
        let ra = relatches(&out, Side::A);
        if both {
            assert!(
                matches!(ra.as_slice(), [(0, RelayUpdate::Relatch { rtcp_mux: true, rtp, .. })] if *rtp == Some(sa("192.0.2.10:4000"))),
                "{case}: {ra:?}"
            );
        } else {
            assert!(ra.is_empty(), "{case}: {ra:?}");
        }
        let rtcp_port = if both { ports.a.rtp } else { ports.a.rtp + 1 };
        assert!(
            to_a.contains(&format!("a=rtcp:{rtcp_port} IN IP4 {ADV}\r\n")),
            "{case}: a=rtcp must show port {rtcp_port}: {to_a}"
        );
    }
}

#[test]
fn port_exhaustion_gives_back_everything_the_offer_took() {
    // Room for three pairs: the first stream gets both legs, the second stream only A's.
    let mut pa = PortAllocator::new(40000..=40005).unwrap();
    let mut m = media();
    let mut out = Vec::new();
    let two = OFFER_A; // audio + video: four pairs needed
    assert_eq!(
        m.offer(Side::A, two.as_bytes(), &mut pa, &mut out),
        Err(MediaError::PortsExhausted)
    );
    assert_eq!(MediaError::PortsExhausted.status().0, 503);
    assert_eq!(pa.in_use(), 0, "everything given back");
    assert!(out.is_empty(), "nothing opened: {out:?}");
    assert!(
        m.streams.is_empty() && m.pending_offer.is_none() && m.last_received(Side::A).is_none()
    );

    // Something else holds one pair; the first pair of the second stream is the one missing.
    let mut pa = PortAllocator::new(40000..=40005).unwrap();
    let held = pa.allocate_pair().unwrap();
    assert_eq!(
        m.offer(Side::A, two.as_bytes(), &mut pa, &mut out),
        Err(MediaError::PortsExhausted)
    );
    assert_eq!(pa.in_use(), 2, "back to what was in use before");
    assert!(pa.is_allocated(held.rtp));
    // A one-stream offer still fits afterwards.
    m.offer(Side::A, SIMPLE_A.as_bytes(), &mut pa, &mut out)
        .unwrap();
    assert_eq!(pa.in_use(), 6);
}

fn reoffer(m: &mut CallMedia, pa: &mut PortAllocator, body: &str) -> (ReOffer, Vec<MediaCommand>) {
    let mut out = Vec::new();
    let r = m.reoffer(Side::A, body.as_bytes(), pa, &mut out).unwrap();
    (r, out)
}

fn local(r: ReOffer) -> String {
    match r {
        ReOffer::Local(b) => text(&b),
        ReOffer::Relay(b) => panic!(
            "expected a local answer, got a relayed offer:\n{}",
            text(&b)
        ),
    }
}

fn a_with(version: u64, extra: &str) -> String {
    SIMPLE_A
        .replace("o=carrier 100 1", &format!("o=carrier 100 {version}"))
        .replace("a=ptime:20\r\n", &format!("a=ptime:20\r\n{extra}"))
}

#[test]
fn hold_and_inactive_are_answered_locally_and_stop_forwarding() {
    let mut m = media();
    let mut pa = alloc();
    let (to_b, to_a) = established(&mut m, &mut pa);
    let port = lines_starting(&to_a, "m=")[0].to_string();
    let v0 = origin_version(&to_a);

    // sendonly → recvonly, never sendrecv (RFC 3264 §8.4).
    let (r, out) = reoffer(&mut m, &mut pa, &a_with(2, "a=sendonly\r\n"));
    let held = local(r);
    assert!(
        held.contains("a=recvonly\r\n") && !held.contains("sendrecv"),
        "{held}"
    );
    assert_eq!(lines_starting(&held, "m=")[0], port, "same port");
    assert_eq!(origin_version(&held), v0 + 1);
    assert_eq!(
        enabled(&out, 0, Side::B),
        Some(false),
        "nothing sent to a held caller"
    );
    assert_eq!(
        enabled(&out, 0, Side::A),
        Some(true),
        "music on hold reaches B"
    );
    assert!(opens(&out).is_empty());
    assert_eq!(m.pending_offer, None);
    assert_eq!(
        m.last_sent(Side::B),
        Some(to_b.as_bytes()),
        "B's leg untouched"
    );

    // inactive → inactive.
    let (r, out) = reoffer(&mut m, &mut pa, &a_with(3, "a=inactive\r\n"));
    let inactive = local(r);
    assert!(inactive.contains("a=inactive\r\n"), "{inactive}");
    assert_eq!(enabled(&out, 0, Side::A), Some(false));
    assert_eq!(enabled(&out, 0, Side::B), Some(false));

    // c=0.0.0.0 (RFC 2543 hold) counts as sendonly.
    let old_hold = a_with(4, "").replace("c=IN IP4 192.0.2.10", "c=IN IP4 0.0.0.0");
    let (r, out) = reoffer(&mut m, &mut pa, &old_hold);
    let held = local(r);
    assert!(held.contains("a=recvonly\r\n"), "{held}");
    assert_eq!(enabled(&out, 0, Side::B), Some(false));
    assert_eq!(enabled(&out, 0, Side::A), Some(true));
    // Nothing is sent to A (B → A is disabled), and A keeps its latch: a held peer still
    // sends (music on hold) from where it did, and must not have to be learned again.
    assert!(
        relatches(&out, Side::A).is_empty(),
        "a c=0.0.0.0 hold relatches nothing: {out:?}"
    );

    // Unhold: back to sendrecv, forwarding both ways, A's address again (the relay keeps a
    // latch onto the same SDP address).
    let (r, out) = reoffer(&mut m, &mut pa, &a_with(5, ""));
    let resumed = local(r);
    assert!(
        !resumed.contains("recvonly") && !resumed.contains("inactive"),
        "{resumed}"
    );
    assert_eq!(enabled(&out, 0, Side::B), Some(true));
    assert_eq!(enabled(&out, 0, Side::A), Some(true));
    assert!(matches!(
        relatches(&out, Side::A).as_slice(),
        [(0, RelayUpdate::Relatch { rtp: Some(a), .. })] if *a == sa("192.0.2.10:4000")
    ));
    assert_eq!(pa.in_use(), 4, "no ports taken by local answers");
}

#[test]
fn codec_or_stream_changes_are_relayed() {
    let mut m = media();
    let mut pa = alloc();
    established(&mut m, &mut pa);
    let pcma = SIMPLE_A
        .replace("o=carrier 100 1", "o=carrier 100 2")
        .replace("RTP/AVP 0 101", "RTP/AVP 8")
        .replace("a=rtpmap:0 PCMU/8000", "a=rtpmap:8 PCMA/8000");
    let (r, out) = reoffer(&mut m, &mut pa, &pcma);
    let ReOffer::Relay(offer) = r else {
        panic!("codec change answered locally")
    };
    let offer = text(&offer);
    assert!(
        offer.contains("RTP/AVP 8") && !offer.contains("192.0.2.10"),
        "{offer}"
    );
    assert_eq!(m.pending_offer, Some(Side::A));
    assert!(opens(&out).is_empty(), "same stream, same relay");
    m.answer(
        Side::B,
        SIMPLE_B.replace("RTP/AVP 0 101", "RTP/AVP 8").as_bytes(),
        &mut Vec::new(),
    )
    .unwrap();

    // A second m-line: relayed, with a new relay for it.
    let video = format!(
        "{}m=video 7000 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n",
        pcma.replace("100 2", "100 3")
    );
    let (r, out) = reoffer(&mut m, &mut pa, &video);
    let ReOffer::Relay(offer) = r else {
        panic!("a new m-line answered locally")
    };
    let offer = text(&offer);
    let opened = opens(&out);
    assert_eq!(opened.len(), 1);
    assert_eq!(opened[0].0.stream, 1);
    assert_eq!(
        lines_starting(&offer, "m=")[1],
        format!("m=video {} RTP/AVP 96", opened[0].2.b.rtp)
    );
    assert_eq!(pa.in_use(), 8);
}

#[test]
fn a_local_answer_drops_what_the_reoffer_dropped() {
    let mut m = media();
    let mut pa = alloc();
    established(&mut m, &mut pa);
    // The caller re-offers without telephone-event.
    let no_dtmf = SIMPLE_A
        .replace("o=carrier 100 1", "o=carrier 100 2")
        .replace("RTP/AVP 0 101", "RTP/AVP 0")
        .replace(
            "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\n",
            "",
        );
    let (r, _) = reoffer(&mut m, &mut pa, &no_dtmf);
    let ans = local(r);
    let mline = lines_starting(&ans, "m=")[0];
    assert!(mline.ends_with(" RTP/AVP 0"), "{ans}");
    assert!(
        !ans.contains("101"),
        "an answer lists only offered payload types: {ans}"
    );
}

#[test]
fn origin_version_moves_only_when_the_answer_changes() {
    let mut m = media();
    let mut pa = alloc();
    let (_, to_a) = established(&mut m, &mut pa);
    let v0 = origin_version(&to_a);
    let hold = a_with(2, "a=sendonly\r\n");
    let first = local(reoffer(&mut m, &mut pa, &hold).0);
    assert_eq!(origin_version(&first), v0 + 1);
    // The same re-offer again (a refresh): same answer, same version.
    let again = local(reoffer(&mut m, &mut pa, &hold).0);
    assert_eq!(again, first);
    // A refresh offered by holdfast re-sends exactly what was sent.
    assert_eq!(m.last_sent(Side::A), Some(first.as_bytes()));
    let resumed = local(reoffer(&mut m, &mut pa, &a_with(3, "a=sendrecv\r\n")).0);
    assert_eq!(origin_version(&resumed), v0 + 2);
}

#[test]
fn forwarding_follows_both_directions() {
    use Direction::*;
    // (A's direction, B's direction) → (A's audio forwarded to B, B's audio forwarded to A).
    let table = [
        (SendRecv, SendRecv, true, true),
        (SendRecv, SendOnly, false, true),
        (SendRecv, RecvOnly, true, false),
        (SendRecv, Inactive, false, false),
        (SendOnly, SendRecv, true, false),
        (SendOnly, SendOnly, false, false),
        (SendOnly, RecvOnly, true, false),
        (SendOnly, Inactive, false, false),
        (RecvOnly, SendRecv, false, true),
        (RecvOnly, SendOnly, false, true),
        (RecvOnly, RecvOnly, false, false),
        (RecvOnly, Inactive, false, false),
        (Inactive, SendRecv, false, false),
        (Inactive, SendOnly, false, false),
        (Inactive, RecvOnly, false, false),
        (Inactive, Inactive, false, false),
    ];
    for (da, db, a_to_b, b_to_a) in table {
        let mut m = media();
        let mut pa = alloc();
        let mut out = Vec::new();
        let offer = SIMPLE_A.replace(
            "a=ptime:20\r\n",
            &format!("a=ptime:20\r\na={}\r\n", da.as_str()),
        );
        let answer = format!("{SIMPLE_B}a={}\r\n", db.as_str());
        m.offer(Side::A, offer.as_bytes(), &mut pa, &mut out)
            .unwrap();
        m.answer(Side::B, answer.as_bytes(), &mut out).unwrap();
        assert_eq!(
            (enabled(&out, 0, Side::A), enabled(&out, 0, Side::B)),
            (Some(a_to_b), Some(b_to_a)),
            "A {da:?}, B {db:?}"
        );
    }
}

#[test]
fn payload_types_are_mapped_where_the_legs_number_a_codec_differently() {
    let mut m = media();
    let mut pa = alloc();
    let mut out = Vec::new();
    m.offer(Side::A, SIMPLE_A.as_bytes(), &mut pa, &mut out)
        .unwrap();
    let b96 = SIMPLE_B
        .replace("RTP/AVP 0 101", "RTP/AVP 0 96")
        .replace(":101 ", ":96 ");
    m.answer(Side::B, b96.as_bytes(), &mut out).unwrap();
    let from_a = pt_map_of(&out, 0, Side::A).unwrap();
    let from_b = pt_map_of(&out, 0, Side::B).unwrap();
    assert_eq!((from_a.map(101), from_a.map(0)), (96, 0));
    assert_eq!((from_b.map(96), from_b.map(0)), (101, 0));

    // B numbers telephone-event 96 but uses A's 101 for another codec: left alone rather
    // than guessed.
    let mut m = media();
    let mut pa = alloc();
    let mut out = Vec::new();
    m.offer(Side::A, SIMPLE_A.as_bytes(), &mut pa, &mut out)
        .unwrap();
    let clash = SIMPLE_B
        .replace("RTP/AVP 0 101", "RTP/AVP 0 96 101")
        .replace(
            "a=rtpmap:101 telephone-event/8000",
            "a=rtpmap:96 telephone-event/8000\r\na=rtpmap:101 iLBC/8000",
        );
    m.answer(Side::B, clash.as_bytes(), &mut out).unwrap();
    let from_a = pt_map_of(&out, 0, Side::A).unwrap();
    assert_eq!(from_a.map(101), 101);
    assert_eq!(
        pt_map_of(&out, 0, Side::B).unwrap().map(96),
        101,
        "A has no other 96"
    );
}

#[test]
fn a_rejected_offer_restores_the_previous_session() {
    let mut m = media();
    let mut pa = alloc();
    let (to_b, _) = established(&mut m, &mut pa);
    // A moves and changes codec at once; B refuses (488).
    let moved = SIMPLE_A
        .replace("o=carrier 100 1", "o=carrier 100 2")
        .replace("192.0.2.10", "192.0.2.99")
        .replace("RTP/AVP 0 101", "RTP/AVP 8")
        .replace("a=rtpmap:0 PCMU/8000", "a=rtpmap:8 PCMA/8000");
    let (r, out) = reoffer(&mut m, &mut pa, &moved);
    assert!(matches!(r, ReOffer::Relay(_)));
    assert!(matches!(
        relatches(&out, Side::A).as_slice(),
        [(0, RelayUpdate::Relatch { rtp: Some(a), .. })] if *a == sa("192.0.2.99:4000")
    ));
    let mut out = Vec::new();
    m.offer_rejected(Side::A, &mut out);
    assert_eq!(m.pending_offer, None);
    assert_eq!(m.last_received(Side::A), Some(SIMPLE_A.as_bytes()));
    assert_eq!(m.last_sent(Side::B), Some(to_b.as_bytes()));
    assert!(
        matches!(relatches(&out, Side::A).as_slice(), [(0, RelayUpdate::Relatch { rtp: Some(a), .. })] if *a == sa("192.0.2.10:4000")),
        "pointed back: {out:?}"
    );
    // A second rejection (a retransmitted 488) changes nothing.
    let mut out = Vec::new();
    m.offer_rejected(Side::A, &mut out);
    assert!(out.is_empty());
    assert_eq!(m.last_received(Side::A), Some(SIMPLE_A.as_bytes()));
}

#[test]
fn reset_peer_relatches_b_to_nothing() {
    let mut m = media();
    let mut pa = alloc();
    established(&mut m, &mut pa);
    m.latched(0, Side::B, relay::SocketKind::Rtp, sa("198.51.100.7:5000"));
    let mut out = Vec::new();
    m.reset_peer(Side::B, &mut out);
    assert_eq!(
        updates(&out),
        vec![(
            0,
            RelayUpdate::Relatch {
                side: Side::B,
                rtp: None,
                rtcp: None,
                rtcp_mux: false,
                latch: LatchPolicy::default(),
            }
        )]
    );
    assert_eq!(m.last_received(Side::B), None);
    assert_eq!(m.streams[0].latched[1], None);

    // A callee that sent RTP but no SDP (the relay latched it from its packets) is forgotten
    // too: the next callee must not be answered at the old one's address.
    let mut m = media();
    let mut pa = alloc();
    let mut out = Vec::new();
    m.offer(Side::A, SIMPLE_A.as_bytes(), &mut pa, &mut out)
        .unwrap();
    m.latched(0, Side::B, relay::SocketKind::Rtp, sa("198.51.100.7:5000"));
    let mut out = Vec::new();
    m.reset_peer(Side::B, &mut out);
    assert!(
        matches!(
            relatches(&out, Side::B).as_slice(),
            [(0, RelayUpdate::Relatch { rtp: None, .. })]
        ),
        "{out:?}"
    );
    assert_eq!(m.streams[0].latched[1], None);
}

#[test]
fn latched_reports_an_address_other_than_the_sdp() {
    let mut m = media();
    let mut pa = alloc();
    established(&mut m, &mut pa);
    assert_eq!(
        m.latched(0, Side::B, relay::SocketKind::Rtp, sa("192.0.2.20:5000")),
        None
    );
    assert_eq!(
        m.latched(0, Side::B, relay::SocketKind::Rtp, sa("198.51.100.7:6000")),
        Some(sa("192.0.2.20:5000")),
        "NAT: the SDP said otherwise"
    );
    assert_eq!(m.streams[0].latched[1], Some(sa("198.51.100.7:6000")));
    // RTCP latching onto the SDP's RTCP address (RTP port + 1) is no NAT, and never
    // replaces the leg's RTP peer.
    assert_eq!(
        m.latched(0, Side::B, relay::SocketKind::Rtcp, sa("192.0.2.20:5001")),
        None
    );
    assert_eq!(
        m.latched(0, Side::B, relay::SocketKind::Rtcp, sa("198.51.100.7:6001")),
        Some(sa("192.0.2.20:5001"))
    );
    assert_eq!(m.streams[0].latched[1], Some(sa("198.51.100.7:6000")));
}

#[test]
fn close_then_closed_frees_every_port_but_a_bad_one() {
    let mut m = media();
    let mut pa = alloc();
    let mut out = Vec::new();
    m.offer(Side::A, OFFER_A.as_bytes(), &mut pa, &mut out)
        .unwrap();
    let ports = m.ports();
    assert_eq!(pa.in_use(), 8);
    let mut out = Vec::new();
    m.close(&mut out);
    let closes: Vec<u16> = out
        .iter()
        .filter_map(|c| match c {
            MediaCommand::Close { id } if id.call == 7 => Some(id.stream),
            _ => None,
        })
        .collect();
    assert_eq!(closes, vec![0, 3]);
    assert_eq!(out.len(), 2);
    assert_eq!(pa.in_use(), 8, "ports stay taken until the shell confirms");
    let mut again = Vec::new();
    m.close(&mut again);
    assert!(again.is_empty(), "Close is sent once per stream");

    // One port was found held by another process: the core quarantined it.
    let bad = ports[1].a.rtcp.unwrap();
    pa.quarantine(bad, std::time::Instant::now() + Duration::from_secs(60))
        .unwrap();
    assert!(!m.closed(0, &mut pa));
    assert_eq!(pa.in_use(), 3);
    assert!(
        !m.closed(0, &mut pa),
        "a repeated Closed frees nothing twice"
    );
    assert_eq!(pa.in_use(), 3);
    assert!(m.closed(3, &mut pa), "every stream gone");
    assert_eq!(pa.in_use(), 0);
    assert!(
        pa.is_quarantined(bad),
        "the quarantined port is left to its quarantine"
    );
}

#[test]
fn an_offer_waits_for_its_relays_and_a_rebind_renders_it_with_the_new_ports() {
    let mut m = media();
    let mut pa = alloc();
    let mut out = Vec::new();
    let first = m
        .offer(Side::A, SIMPLE_A.as_bytes(), &mut pa, &mut out)
        .unwrap();
    assert!(m.binding() && m.is_binding(0));
    let old = m.ports()[0];
    let text = String::from_utf8(first).unwrap();
    assert!(text.contains(&format!("m=audio {} ", old.b.rtp)), "{text}");
    let o_line = |t: &str| t.lines().find(|l| l.starts_with("o=")).unwrap().to_string();
    let first_o = o_line(&text);
    // The shell found old.b.rtp taken: the core quarantines it and rebinds the stream.
    pa.quarantine(
        old.b.rtp,
        std::time::Instant::now() + Duration::from_secs(60),
    )
    .unwrap();
    let mut out = Vec::new();
    m.rebind(0, &mut pa, &mut out).unwrap();
    let new = m.ports()[0];
    assert_ne!(new.b.rtp, old.b.rtp);
    assert_eq!(
        pa.in_use(),
        4,
        "the old ports went back, the new ones are taken"
    );
    match out.as_slice() {
        [MediaCommand::Open {
            id, ports, config, ..
        }] => {
            assert_eq!((id.call, id.stream, *ports), (7, 0, new));
            assert_eq!(
                config.a.rtp_peer,
                Some("192.0.2.10:4000".parse().unwrap()),
                "the offerer's address, as in the first Open"
            );
        }
        other => panic!("one Open expected: {other:?}"),
    }
    let again = String::from_utf8(m.last_sent(Side::B).unwrap().to_vec()).unwrap();
    assert!(
        again.contains(&format!("m=audio {} ", new.b.rtp)),
        "{again}"
    );
    assert!(
        !again.contains(&format!("m=audio {} ", old.b.rtp)),
        "{again}"
    );
    assert_eq!(
        o_line(&again),
        first_o,
        "same o= version: the first was never sent"
    );
    assert!(m.bound(0), "the last stream waiting");
    assert!(!m.binding());
    assert!(!m.bound(0), "bound once");
}

#[test]
fn a_rebind_with_no_port_left_drops_the_stream_and_frees_its_ports() {
    let mut m = media();
    // Two pairs: exactly one stream.
    let mut pa = PortAllocator::new(40000..=40003).unwrap();
    let mut out = Vec::new();
    m.offer(Side::A, SIMPLE_A.as_bytes(), &mut pa, &mut out)
        .unwrap();
    pa.quarantine(40002, std::time::Instant::now() + Duration::from_secs(60))
        .unwrap();
    let mut out = Vec::new();
    assert_eq!(
        m.rebind(0, &mut pa, &mut out),
        Err(MediaError::PortsExhausted)
    );
    assert!(out.is_empty());
    assert!(m.streams.is_empty() && !m.binding());
    assert_eq!((pa.in_use(), pa.quarantined(), pa.available()), (0, 1, 3));
}

fn dual_stack() -> CallMedia {
    let mut p = params();
    p.addrs = MediaAddrs {
        v4: Some(MediaAddr {
            bind: "10.0.0.5".parse().unwrap(),
            advertise: "203.0.113.5".parse().unwrap(),
        }),
        v6: Some(MediaAddr {
            bind: "fd00::5".parse().unwrap(),
            advertise: "2001:db8::5".parse().unwrap(),
        }),
        first: IpFamily::V4,
    };
    CallMedia::new(7, p, 0x1234_5678_9abc_def0)
}

const SIMPLE_A6: &str = "v=0\r\n\
o=carrier 100 1 IN IP6 2001:db8::10\r\n\
s=-\r\n\
c=IN IP6 2001:db8::10\r\n\
t=0 0\r\n\
m=audio 4000 RTP/AVP 0\r\n\
a=rtcp:4001 IN IP6 2001:db8::10\r\n\
a=rtpmap:0 PCMU/8000\r\n";

#[test]
fn each_leg_is_anchored_in_its_peers_family() {
    // IPv6 caller (its SDP decides, whatever its signalling said), IPv4 callee (from its
    // signalling address, before it sends SDP).
    let mut m = dual_stack();
    let mut pa = alloc();
    m.set_peer(Side::A, "192.0.2.99".parse().unwrap());
    m.set_peer(Side::B, "192.0.2.20".parse().unwrap());
    let mut out = Vec::new();
    let offer = text(
        &m.offer(Side::A, SIMPLE_A6.as_bytes(), &mut pa, &mut out)
            .unwrap(),
    );
    assert_eq!(
        (m.family(Side::A), m.family(Side::B)),
        (IpFamily::V6, IpFamily::V4)
    );
    match out.iter().find(|c| matches!(c, MediaCommand::Open { .. })) {
        Some(MediaCommand::Open { ips, .. }) => assert_eq!(
            *ips,
            RelayIps {
                a: "fd00::5".parse().unwrap(),
                b: "10.0.0.5".parse().unwrap()
            }
        ),
        other => panic!("an Open: {other:?}"),
    }
    assert!(offer.contains("c=IN IP4 203.0.113.5\r\n"), "{offer}");
    assert!(
        offer.contains(" IN IP4 203.0.113.5\r\ns=-"),
        "o= in the leg's family: {offer}"
    );
    assert!(
        offer.contains("a=rtcp:") && offer.contains(" IN IP4 203.0.113.5\r\na=rtpmap"),
        "a=rtcp names the leg's address: {offer}"
    );
    assert!(!offer.contains("IP6"), "{offer}");
    let answer = text(&m.answer(Side::B, SIMPLE_B.as_bytes(), &mut out).unwrap());
    assert!(answer.contains("c=IN IP6 2001:db8::5\r\n"), "{answer}");
    assert!(answer.contains(" IN IP6 2001:db8::5\r\ns=-"), "{answer}");
    assert!(!answer.contains("IP4"), "{answer}");
    // A local answer (hold) on the IPv6 leg stays IPv6.
    let hold = SIMPLE_A6.replace("t=0 0\r\n", "t=0 0\r\na=sendonly\r\n");
    match m
        .reoffer(Side::A, hold.as_bytes(), &mut pa, &mut out)
        .unwrap()
    {
        ReOffer::Local(b) => {
            let b = text(&b);
            assert!(
                b.contains("c=IN IP6 2001:db8::5\r\n") && !b.contains("IP4"),
                "{b}"
            );
        }
        other => panic!("answered locally: {other:?}"),
    }
    assert_eq!(
        m.relay_addr(Side::A, 0).map(|a| a.ip()),
        Some("fd00::5".parse().unwrap())
    );
    assert_eq!(
        m.relay_addr(Side::B, 0).map(|a| a.ip()),
        Some("10.0.0.5".parse().unwrap())
    );
}

#[test]
fn a_family_without_a_media_address_falls_back_to_the_first() {
    // IPv4-only media: an IPv6 peer still gets the IPv4 address (as before dual stack).
    let mut m = media();
    let mut pa = alloc();
    m.set_peer(Side::B, "2001:db8::20".parse().unwrap());
    let mut out = Vec::new();
    let offer = text(
        &m.offer(Side::A, SIMPLE_A6.as_bytes(), &mut pa, &mut out)
            .unwrap(),
    );
    assert_eq!(
        (m.family(Side::A), m.family(Side::B)),
        (IpFamily::V4, IpFamily::V4)
    );
    assert!(offer.contains(&format!("c=IN IP4 {ADV}\r\n")), "{offer}");
}
