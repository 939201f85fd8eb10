//! Unit tests for the SDP layer.
use super::*;
use std::net::{Ipv4Addr, Ipv6Addr};

const TWILIO: &str = "v=0\r\n\
o=root 1586079421 1586079421 IN IP4 54.172.60.1\r\n\
s=Twilio Media Gateway\r\n\
c=IN IP4 54.172.60.1\r\n\
t=0 0\r\n\
m=audio 13452 RTP/AVP 0 8 101\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-16\r\n\
a=ptime:20\r\n\
a=maxptime:150\r\n\
a=rtcp-mux\r\n\
a=sendrecv\r\n";

const FREESWITCH: &str = "v=0\r\n\
o=FreeSWITCH 1700000000 1700000001 IN IP4 192.76.120.10\r\n\
s=FreeSWITCH\r\n\
c=IN IP4 192.76.120.10\r\n\
t=0 0\r\n\
m=audio 16384 RTP/AVP 0 8 9 18 101 13\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:9 G722/8000\r\n\
a=rtpmap:18 G729/8000\r\n\
a=fmtp:18 annexb=no\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=fmtp:101 0-16\r\n\
a=rtpmap:13 CN/8000\r\n\
a=ptime:20\r\n\
a=sendrecv\r\n\
a=rtcp:16385 IN IP4 192.76.120.10\r\n";

const WEBRTC: &str = "v=0\r\n\
o=- 4611731400430051336 2 IN IP4 127.0.0.1\r\n\
s=-\r\n\
t=0 0\r\n\
a=group:BUNDLE 0 1\r\n\
a=extmap-allow-mixed\r\n\
a=msid-semantic: WMS stream1\r\n\
a=ice-options:trickle\r\n\
m=audio 50200 UDP/TLS/RTP/SAVPF 111 63 9 0 8 126\r\n\
c=IN IP4 203.0.113.7\r\n\
b=AS:64\r\n\
a=rtcp:9 IN IP4 0.0.0.0\r\n\
a=candidate:1467250027 1 udp 2122260223 192.168.0.196 50200 typ host generation 0\r\n\
a=candidate:842163049 1 udp 1686052607 203.0.113.7 50200 typ srflx raddr 192.168.0.196 rport 50200 generation 0\r\n\
a=ice-ufrag:EsAw\r\n\
a=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1\r\n\
a=fingerprint:sha-256 D2:FA:0E:C3:22:59:5E:14:95:69:92:3D:13:B4:84:24:2C:C2:A2:C0:3E:FD:34:8E:5E:EA:6F:AF:52:CE:E6:0F\r\n\
a=setup:actpass\r\n\
a=mid:0\r\n\
a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\n\
a=sendrecv\r\n\
a=msid:stream1 track1\r\n\
a=rtcp-mux\r\n\
a=rtpmap:111 opus/48000/2\r\n\
a=rtcp-fb:111 transport-cc\r\n\
a=fmtp:111 minptime=10;useinbandfec=1\r\n\
a=rtpmap:63 red/48000/2\r\n\
a=fmtp:63 111/111\r\n\
a=rtpmap:9 G722/8000\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:126 telephone-event/8000\r\n\
a=ssrc:3510681183 cname:6hBR9gVDZpEyOOm2\r\n\
a=end-of-candidates\r\n\
m=video 50202 UDP/TLS/RTP/SAVPF 96 97\r\n\
c=IN IP4 203.0.113.7\r\n\
a=rtcp:9 IN IP4 0.0.0.0\r\n\
a=candidate:1467250027 1 udp 2122260223 192.168.0.196 50202 typ host generation 0\r\n\
a=ice-ufrag:EsAw\r\n\
a=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1\r\n\
a=fingerprint:sha-256 D2:FA:0E:C3:22:59:5E:14:95:69:92:3D:13:B4:84:24:2C:C2:A2:C0:3E:FD:34:8E:5E:EA:6F:AF:52:CE:E6:0F\r\n\
a=setup:actpass\r\n\
a=mid:1\r\n\
a=recvonly\r\n\
a=rtcp-mux\r\n\
a=rtpmap:96 VP8/90000\r\n\
a=rtpmap:97 rtx/90000\r\n\
a=fmtp:97 apt=96\r\n";

const IPV6: &str = "v=0\r\n\
o=alice 2890844526 2890844526 IN IP6 2001:db8::10\r\n\
s=-\r\n\
c=IN IP6 2001:db8::10\r\n\
t=0 0\r\n\
a=sendonly\r\n\
m=audio 49170 RTP/AVP 0 101\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
m=audio 0 RTP/AVP 8\r\n";

const BARE_LF: &str = "v=0\n\
o=carrier 1 1 IN IP4 198.51.100.1\n\
s=call\n\
c=IN IP4 198.51.100.1\n\
t=0 0\n\
m=audio 4000 RTP/AVP 8 0 101\n\
a=rtpmap:101 telephone-event/8000\n\
a=fmtp:101  0-15\n\
a=x-carrier-thing: keep  me\n";

const SAMPLES: &[&str] = &[TWILIO, FREESWITCH, WEBRTC, IPV6, BARE_LF];

fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

fn plan1(rtp: u16, rtcp: RtcpPorts) -> AnchorPlan {
    AnchorPlan {
        ip: v4(10, 0, 0, 1),
        media: vec![MediaPorts {
            rtp_port: rtp,
            rtcp,
        }],
    }
}

#[test]
fn round_trip_is_byte_identical() {
    for s in SAMPLES {
        let sdp = Sdp::parse(s.as_bytes()).unwrap();
        assert_eq!(sdp.to_string(), *s);
    }
    // Odd but tolerated shapes: no final terminator, trailing blank line, mixed endings.
    for s in [
        "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nt=0 0",
        "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nt=0 0\r\n\r\n",
        "v=0\r\no=- 1 1 IN IP4 1.2.3.4\ns=-\r\nc=IN IP4 224.2.1.1/127/3\n",
    ] {
        assert_eq!(Sdp::parse_str(s).unwrap().to_string(), s);
    }
}

#[test]
fn parses_modelled_fields() {
    let sdp = Sdp::parse_str(FREESWITCH).unwrap();
    let o = sdp.origin().unwrap();
    assert_eq!(o.username, "FreeSWITCH");
    assert_eq!(o.sess_id, "1700000000");
    assert_eq!(o.sess_version, 1700000001);
    assert_eq!(o.address.addrtype, AddrType::Ip4);
    assert_eq!(sdp.connection().unwrap().address.address, "192.76.120.10");
    let m = &sdp.media[0];
    assert_eq!(m.desc.port, 16384);
    assert_eq!(m.desc.fmts, ["0", "8", "9", "18", "101", "13"]);
    assert!(m
        .attributes()
        .any(|a| *a == Attribute::Ptime(Duration::from_millis(20))));
    assert!(m
        .attributes()
        .any(|a| matches!(a, Attribute::Rtcp(r) if r.port == 16385)));
    let mc =
        Sdp::parse_str("v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\nc=IN IP4 224.2.1.1/127/3\r\n").unwrap();
    assert_eq!(mc.connection().unwrap().suffix.as_deref(), Some("127/3"));
}

#[test]
fn anchor_twilio_rtcp_mux() {
    let sdp = Sdp::parse_str(TWILIO).unwrap();
    let out = anchor(&sdp, &plan1(30000, RtcpPorts::Mux)).to_string();
    let expect = TWILIO
        .replace("c=IN IP4 54.172.60.1", "c=IN IP4 10.0.0.1")
        .replace("m=audio 13452", "m=audio 30000");
    assert_eq!(out, expect);
}

#[test]
fn anchor_freeswitch_rewrites_rtcp() {
    let sdp = Sdp::parse_str(FREESWITCH).unwrap();
    let out = anchor(&sdp, &plan1(30000, RtcpPorts::Port(30001))).to_string();
    let expect = FREESWITCH
        .replace("c=IN IP4 192.76.120.10", "c=IN IP4 10.0.0.1")
        .replace("m=audio 16384", "m=audio 30000")
        .replace(
            "a=rtcp:16385 IN IP4 192.76.120.10",
            "a=rtcp:30001 IN IP4 10.0.0.1",
        );
    assert_eq!(out, expect);
}

#[test]
fn anchor_webrtc_drops_ice_keeps_rest() {
    let sdp = Sdp::parse_str(WEBRTC).unwrap();
    let plan = AnchorPlan {
        ip: v4(10, 0, 0, 1),
        media: vec![
            MediaPorts {
                rtp_port: 40000,
                rtcp: RtcpPorts::Mux,
            },
            MediaPorts {
                rtp_port: 40002,
                rtcp: RtcpPorts::Port(40003),
            },
        ],
    };
    let out = anchor(&sdp, &plan).to_string();
    let expect: String = WEBRTC
        .split_inclusive("\r\n")
        .filter(|l| {
            ![
                "a=candidate:",
                "a=ice-ufrag:",
                "a=ice-pwd:",
                "a=ice-options:",
                "a=end-of-candidates",
            ]
            .iter()
            .any(|p| l.starts_with(p))
        })
        .collect::<String>()
        .replace("c=IN IP4 203.0.113.7", "c=IN IP4 10.0.0.1")
        .replace("m=audio 50200", "m=audio 40000")
        .replace("m=video 50202", "m=video 40002")
        .replacen("a=rtcp:9 IN IP4 0.0.0.0", "a=rtcp:40000 IN IP4 10.0.0.1", 1)
        .replacen("a=rtcp:9 IN IP4 0.0.0.0", "a=rtcp:40003 IN IP4 10.0.0.1", 1);
    assert_eq!(out, expect);
    assert!(!out.contains("candidate") && !out.contains("ice-"));
}

#[test]
fn anchor_ipv6_and_port_zero() {
    let sdp = Sdp::parse_str(IPV6).unwrap();
    let ip = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x99));
    let plan = AnchorPlan {
        ip,
        media: vec![
            MediaPorts {
                rtp_port: 20000,
                rtcp: RtcpPorts::Port(20001),
            },
            MediaPorts {
                rtp_port: 20002,
                rtcp: RtcpPorts::Port(20003),
            },
        ],
    };
    let out = anchor(&sdp, &plan);
    assert_eq!(out.media[0].desc.port, 20000);
    assert_eq!(out.media[1].desc.port, 0, "disabled stream stays disabled");
    let c = out.connection().unwrap();
    assert_eq!(
        (c.address.addrtype, c.address.address.as_str()),
        (AddrType::Ip6, "2001:db8::99")
    );
    // IPv4 plan on an IPv6 offer flips the addrtype.
    let out4 = anchor(&sdp, &plan1(1234, RtcpPorts::Mux));
    assert!(out4.to_string().contains("c=IN IP4 10.0.0.1\r\n"));
    assert_eq!(out4.media[1].desc.port, 0);
}

#[test]
fn anchor_missing_plan_entry_disables_and_adds_c_when_none() {
    let s = "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nt=0 0\r\nm=audio 5000 RTP/AVP 0\r\ni=voice\r\na=rtcp:5001\r\nm=audio 6000/2 RTP/AVP 0\r\nc=IN IP4 1.2.3.4/5\r\na=rtcp:6001\r\n";
    let sdp = Sdp::parse_str(s).unwrap();
    let out = anchor(&sdp, &plan1(7000, RtcpPorts::Port(7001))).to_string();
    assert_eq!(
        out,
        "v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nt=0 0\r\nm=audio 7000 RTP/AVP 0\r\ni=voice\r\nc=IN IP4 10.0.0.1\r\na=rtcp:7001 IN IP4 10.0.0.1\r\nm=audio 0 RTP/AVP 0\r\nc=IN IP4 10.0.0.1\r\n"
    );
}

#[test]
fn origin_version_rule() {
    let ip = v4(10, 0, 0, 1);
    let mut st = OriginState::new(42, 7);
    let mut a = anchor(
        &Sdp::parse_str(TWILIO).unwrap(),
        &plan1(30000, RtcpPorts::Mux),
    );
    assert_eq!(st.stamp(&mut a, ip), 7);
    assert!(a
        .to_string()
        .contains("o=holdfast 42 7 IN IP4 10.0.0.1\r\n"));
    // Session refresh with identical content: same version.
    let mut b = a.clone();
    assert_eq!(st.stamp(&mut b, ip), 7);
    assert_eq!(a, b);
    // Content change: +1, exactly.
    let mut c = a.clone();
    c.set_direction(0, Direction::SendOnly);
    assert_eq!(st.stamp(&mut c, ip), 8);
    assert!(c
        .to_string()
        .contains("o=holdfast 42 8 IN IP4 10.0.0.1\r\n"));
    let mut d = c.clone();
    assert_eq!(st.stamp(&mut d, ip), 8);
    // Back to the first content is still a change.
    assert_eq!(st.stamp(&mut a, ip), 9);
    // Serializable state (replication).
    let json = serde_json::to_string(&st).unwrap();
    assert_eq!(serde_json::from_str::<OriginState>(&json).unwrap(), st);
}

#[test]
fn direction_answers_and_inheritance() {
    use Direction::*;
    assert_eq!(Direction::answer_to(SendOnly), RecvOnly);
    assert_eq!(Direction::answer_to(RecvOnly), SendOnly);
    assert_eq!(Direction::answer_to(Inactive), Inactive);
    assert_eq!(Direction::answer_to(SendRecv), SendRecv);
    let sdp = Sdp::parse_str(IPV6).unwrap();
    assert_eq!(sdp.direction(0), SendOnly, "session-level inherited");
    assert_eq!(sdp.direction(1), SendOnly);
    let w = Sdp::parse_str(WEBRTC).unwrap();
    assert_eq!((w.direction(0), w.direction(1)), (SendRecv, RecvOnly));
    let mut t = Sdp::parse_str(BARE_LF).unwrap();
    assert_eq!(t.direction(0), SendRecv, "default");
    t.set_direction(0, Inactive);
    assert_eq!(t.direction(0), Inactive);
    assert!(t
        .to_string()
        .ends_with("a=x-carrier-thing: keep  me\na=inactive\n"));
    t.set_direction(5, SendOnly); // out of range: no-op
}

#[test]
fn answer_hold_and_unhold() {
    let ip = v4(10, 0, 0, 1);
    let mut st = OriginState::new(1, 1);
    let mut last = anchor(
        &Sdp::parse_str(FREESWITCH).unwrap(),
        &plan1(30000, RtcpPorts::Port(30001)),
    );
    st.stamp(&mut last, ip);
    let hold = Sdp::parse_str(&TWILIO.replace("a=sendrecv", "a=sendonly")).unwrap();
    let mut ans = answer_hold(&last, &hold);
    assert_eq!(ans.direction(0), Direction::RecvOnly);
    assert_eq!(
        ans.media[0].desc, last.media[0].desc,
        "same codecs and ports"
    );
    assert_eq!(st.stamp(&mut ans, ip), 2);
    let unhold = Sdp::parse_str(TWILIO).unwrap();
    let mut ans2 = answer_hold(&ans, &unhold);
    assert_eq!(ans2.direction(0), Direction::SendRecv);
    assert_eq!(st.stamp(&mut ans2, ip), 3);
    // RFC 2543 hold: c=0.0.0.0 with no direction attribute counts as sendonly.
    let old = Sdp::parse_str(
        &TWILIO
            .replace("54.172.60.1\r\nt=", "0.0.0.0\r\nt=")
            .replace("a=sendrecv\r\n", ""),
    )
    .unwrap();
    assert_eq!(answer_hold(&last, &old).direction(0), Direction::RecvOnly);
    // Inactive offer, and an offer that disables the stream.
    let inact = Sdp::parse_str(
        &TWILIO
            .replace("a=sendrecv", "a=inactive")
            .replace("m=audio 13452", "m=audio 0"),
    )
    .unwrap();
    let a3 = answer_hold(&last, &inact);
    assert_eq!(a3.direction(0), Direction::Inactive);
    assert_eq!(a3.media[0].desc.port, 0);
}

#[test]
fn media_info_for_relay() {
    let t = Sdp::parse_str(TWILIO).unwrap().media_info();
    assert_eq!(t.len(), 1);
    let m = &t[0];
    let rtp: SocketAddr = "54.172.60.1:13452".parse().unwrap();
    assert_eq!(
        (m.rtp_addr, m.rtcp_addr, m.rtcp_mux),
        (Some(rtp), Some(rtp), true)
    );
    assert_eq!(
        m.telephone_event,
        Some(TelephoneEvent {
            pt: 101,
            clock_rate_hz: 8000
        })
    );
    assert_eq!(m.ptime, Some(Duration::from_millis(20)));
    assert_eq!(m.payload_types[0].encoding.as_deref(), Some("PCMU"));

    let f = &Sdp::parse_str(FREESWITCH).unwrap().media_info()[0];
    assert_eq!(f.rtcp_addr, Some("192.76.120.10:16385".parse().unwrap()));
    assert!(!f.rtcp_mux);

    // Static PTs without rtpmap, RTCP on port + 1, hold and disabled streams.
    let v6 = Sdp::parse_str(IPV6).unwrap().media_info();
    assert_eq!(
        v6[0].payload_types[0],
        PayloadType {
            pt: 0,
            encoding: Some("PCMU".into()),
            clock_rate_hz: Some(8000)
        }
    );
    assert_eq!(
        v6[0].rtcp_addr,
        Some("[2001:db8::10]:49171".parse().unwrap())
    );
    assert!(v6[1].disabled && v6[1].rtp_addr.is_none());
    assert_eq!(v6[1].payload_types[0].encoding.as_deref(), Some("PCMA"));

    let held = Sdp::parse_str(&TWILIO.replace("c=IN IP4 54.172.60.1", "c=IN IP4 0.0.0.0")).unwrap();
    let h = &held.media_info()[0];
    assert!(h.on_hold && h.rtp_addr.is_none() && h.rtcp_addr.is_none());

    let w = Sdp::parse_str(WEBRTC).unwrap().media_info();
    assert_eq!(
        w[0].telephone_event,
        Some(TelephoneEvent {
            pt: 126,
            clock_rate_hz: 8000
        })
    );
    assert_eq!(w[0].payload_types[0].clock_rate_hz, Some(48000));
    assert_eq!(w[1].media, "video");
    assert_eq!(w[1].direction, Direction::RecvOnly);
}

#[test]
fn malformed_inputs_are_errors() {
    let e = |s: &[u8]| Sdp::parse(s).unwrap_err();
    assert_eq!(e(b"").kind, SdpErrorKind::Empty);
    assert_eq!(
        e(b"o=- 1 1 IN IP4 1.2.3.4\r\n").kind,
        SdpErrorKind::MissingVersion
    );
    assert_eq!(
        e(b"v=1\r\n").kind,
        SdpErrorKind::UnsupportedVersion("1".into())
    );
    let bad_port = TWILIO.replace("m=audio 13452", "m=audio 70000");
    assert_eq!(e(bad_port.as_bytes()).line, 6);
    assert!(matches!(
        e(bad_port.as_bytes()).kind,
        SdpErrorKind::BadField { field: 'm', .. }
    ));
    let nonnum = TWILIO.replace("m=audio 13452", "m=audio x1");
    assert!(matches!(
        e(nonnum.as_bytes()).kind,
        SdpErrorKind::BadField { field: 'm', .. }
    ));
    let badc = TWILIO.replace("c=IN IP4 54.172.60.1", "c=IN IPX 54.172.60.1");
    assert_eq!(
        e(badc.as_bytes()),
        SdpError {
            line: 4,
            kind: SdpErrorKind::BadField {
                field: 'c',
                why: "addrtype must be IP4 or IP6"
            }
        }
    );
    let badt = TWILIO.replace("t=0 0", "t=now 0");
    assert_eq!(e(badt.as_bytes()).line, 5);
    let garbage = TWILIO.replace("s=Twilio", "garbage\r\ns=Twilio");
    assert_eq!(
        e(garbage.as_bytes()),
        SdpError {
            line: 3,
            kind: SdpErrorKind::Malformed
        }
    );
    let mut nonutf = TWILIO.as_bytes().to_vec();
    nonutf[60] = 0xff;
    assert_eq!(e(&nonutf).kind, SdpErrorKind::NotUtf8);
    assert_eq!(e(b"v=0\r\ns=x\r\n").kind, SdpErrorKind::MissingOrigin);
    assert_eq!(e(b"\xff\xfe\x00garbage").kind, SdpErrorKind::NotUtf8);
    let o_in_media = format!("{TWILIO}o=- 1 1 IN IP4 1.1.1.1\r\n");
    assert_eq!(
        e(o_in_media.as_bytes()).kind,
        SdpErrorKind::SessionLineInMedia('o')
    );
    // The error names the line for the 488 reason.
    assert!(e(bad_port.as_bytes())
        .to_string()
        .starts_with("SDP line 6: "));
}

#[test]
fn lenient_attributes_kept_verbatim() {
    let s = TWILIO
        .replace("a=ptime:20", "a=ptime:20.5")
        .replace("a=rtcp-mux", "a=rtcp:abc");
    let sdp = Sdp::parse_str(&s).unwrap();
    assert_eq!(sdp.to_string(), s);
    assert!(sdp.media[0].attributes().any(|a| *a
        == Attribute::Other {
            name: "ptime".into(),
            value: Some("20.5".into())
        }));
}

/// Seeded xorshift so the loop is reproducible without a random source.
fn xorshift(state: &mut u64) -> u64 {
    let mut x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *state = x;
    x
}

#[test]
fn mutation_loop_never_panics() {
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    let ip = v4(10, 0, 0, 1);
    let tokens: &[&[u8]] = &[
        b"\r\n",
        b"\n",
        b"=",
        b" ",
        b"/",
        b":",
        b"m=",
        b"c=",
        b"a=rtcp:",
        b"0",
        b"65536",
        b"\xff",
        b"a=rtpmap:",
        b"IP6",
    ];
    let mut parsed = 0;
    for i in 0..20_000 {
        let base = SAMPLES[i % SAMPLES.len()].as_bytes();
        let mut b = base.to_vec();
        for _ in 0..(1 + xorshift(&mut rng) % 4) {
            let r = xorshift(&mut rng);
            let pos = (r >> 8) as usize % (b.len() + 1);
            match r % 5 {
                0 if pos < b.len() => b[pos] = (r >> 32) as u8,
                1 if pos < b.len() => {
                    b.remove(pos);
                }
                2 => {
                    let t = tokens[(r >> 40) as usize % tokens.len()];
                    b.splice(pos..pos, t.iter().copied());
                }
                3 => b.truncate(pos),
                _ => {
                    let end = (pos + (r >> 48) as usize % 16).min(b.len());
                    let chunk = b[pos..end].to_vec();
                    b.splice(pos..pos, chunk);
                }
            }
        }
        if let Ok(mut sdp) = Sdp::parse(&b) {
            parsed += 1;
            assert_eq!(sdp.to_bytes(), b, "round trip of a parsed mutation");
            let _ = sdp.media_info();
            let plan = AnchorPlan {
                ip,
                media: vec![
                    MediaPorts {
                        rtp_port: 1,
                        rtcp: RtcpPorts::Mux
                    };
                    (r_len(&sdp)) % 3
                ],
            };
            let mut a = anchor(&sdp, &plan);
            let _ = Sdp::parse(&a.to_bytes());
            OriginState::new(1, 1).stamp(&mut a, ip);
            let _ = answer_hold(&a, &sdp);
            sdp.set_direction(0, Direction::Inactive);
        }
    }
    assert!(
        parsed > 1000,
        "the mutations should leave many parseable ({parsed})"
    );
}

fn r_len(s: &Sdp) -> usize {
    s.media.len()
}

#[test]
fn answer_hold_rejects_added_streams_and_drops_extra() {
    let last = anchor(
        &Sdp::parse_str(TWILIO).unwrap(),
        &plan1(30000, RtcpPorts::Mux),
    );
    let offer = Sdp::parse_str(&format!(
        "{TWILIO}m=video 5000 RTP/AVP 96\r\na=rtpmap:96 VP8/90000\r\n"
    ))
    .unwrap();
    let ans = answer_hold(&last, &offer);
    assert_eq!(ans.media.len(), 2);
    assert_eq!(ans.media[1].desc.port, 0);
    assert_eq!(ans.media[1].desc.fmts, ["96"]);
    assert!(ans
        .to_string()
        .ends_with("a=sendrecv\r\nm=video 0 RTP/AVP 96\r\na=sendrecv\r\n"));
    // Fewer m-lines in the offer than in our last answer: the answer follows the offer.
    let two = anchor(&Sdp::parse_str(IPV6).unwrap(), &plan1(1, RtcpPorts::Mux));
    assert_eq!(
        answer_hold(&two, &Sdp::parse_str(TWILIO).unwrap())
            .media
            .len(),
        1
    );
    // The session-level direction goes, per-m-line directions are written.
    let a = answer_hold(&two, &Sdp::parse_str(IPV6).unwrap());
    assert!(a
        .attributes()
        .all(|x| !matches!(x, Attribute::Direction(_))));
    assert_eq!(
        (a.direction(0), a.direction(1)),
        (Direction::RecvOnly, Direction::RecvOnly)
    );
    assert_eq!(a.media[1].desc.port, 0);
}

#[test]
fn sdp_serde_round_trip_keeps_bytes() {
    for s in SAMPLES {
        let sdp = Sdp::parse_str(s).unwrap();
        let json = serde_json::to_string(&sdp).unwrap();
        let back: Sdp = serde_json::from_str(&json).unwrap();
        assert_eq!(back.to_string(), *s);
    }
}

#[test]
fn small_tolerances() {
    // Trailing blank after v=0, padded fields.
    let s = "v=0 \r\no=- 1 1 IN IP4 1.2.3.4 \r\nc=IN IP4  1.2.3.4\r\nm=audio 5000 RTP/AVP 0 \r\na=rtcp:5009 IN IP4 0.0.0.0\r\n";
    let sdp = Sdp::parse_str(s).unwrap();
    assert_eq!(sdp.to_string(), s);
    let mi = &sdp.media_info()[0];
    assert_eq!(
        mi.rtcp_addr,
        Some("1.2.3.4:5009".parse().unwrap()),
        "unspecified a=rtcp address falls back to c="
    );
    // An edited line is written canonically, the untouched ones stay as received.
    let mut e = sdp.clone();
    e.media[0].desc.port = 6000;
    assert_eq!(
        e.to_string(),
        s.replace("m=audio 5000 RTP/AVP 0 ", "m=audio 6000 RTP/AVP 0")
    );
}

#[test]
fn peer_refresh_with_new_origin_version_keeps_ours() {
    // A session-timer refresh re-INVITE: the peer bumps its own o= version (or even changes
    // its username/IP) but the media did not change, so the version holdfast sends stays.
    let ip = v4(10, 0, 0, 1);
    let plan = plan1(30000, RtcpPorts::Mux);
    let mut st = OriginState::new(99, 1);
    let mut first = anchor(&Sdp::parse_str(TWILIO).unwrap(), &plan);
    assert_eq!(st.stamp(&mut first, ip), 1);
    let refreshed = TWILIO.replace(
        "1586079421 1586079421 IN IP4 54.172.60.1",
        "1586079421 1586079422 IN IP4 54.172.60.2",
    );
    let mut again = anchor(&Sdp::parse_str(&refreshed).unwrap(), &plan);
    assert_eq!(st.stamp(&mut again, ip), 1);
    assert_eq!(again.to_bytes(), first.to_bytes());
    // A codec change from the peer is a change on our leg too.
    let changed = TWILIO.replace("RTP/AVP 0 8 101", "RTP/AVP 8 101");
    let mut third = anchor(&Sdp::parse_str(&changed).unwrap(), &plan);
    assert_eq!(st.stamp(&mut third, ip), 2);
    // Our IP changing (failover to another address) is a change as well.
    let mut fourth = third.clone();
    assert_eq!(st.stamp(&mut fourth, v4(10, 0, 0, 2)), 3);
}
