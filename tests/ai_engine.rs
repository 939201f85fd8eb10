//! The AI shell ([`AiEngine`]) against real WebSocket bots (tests/common/ws.rs): the
//! engine runs in a tokio runtime of the test's own, a std UDP socket plays the relay, and
//! the bots record what holdfast sends. Every wait is bounded.
mod common;

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::ws::{b64_decode, FakeRealtime, MediaStreamBot, PeerEnd};
use holdfast::ai::control::{
    AiCommand, AiEvent, AiKind, OpenLeg, RealtimeSettings, Secret, Speaker, TranscriptItem,
    WsProvider,
};
use holdfast::media::codec::G711;
use holdfast::runtime::ai::AiEngine;
use serde_json::Value;
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(5);

/// The engine in its own runtime, its event channel, and the relay's socket.
struct Harness {
    rt: tokio::runtime::Runtime,
    engine: AiEngine,
    events: mpsc::UnboundedReceiver<AiEvent>,
    relay: UdpSocket,
}

impl Harness {
    fn new() -> Harness {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        let engine = AiEngine::new(tx);
        let relay = UdpSocket::bind("127.0.0.1:0").unwrap();
        relay
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        Harness {
            rt,
            engine,
            events: rx,
            relay,
        }
    }

    fn relay_addr(&self) -> SocketAddr {
        self.relay.local_addr().unwrap()
    }

    fn cmd(&mut self, cmd: AiCommand) {
        let _guard = self.rt.enter();
        self.engine.handle(cmd);
    }

    fn open(&mut self, leg: OpenLeg) {
        self.cmd(AiCommand::Open(Box::new(leg)));
    }

    fn close(&mut self, leg: u64) {
        self.cmd(AiCommand::Close {
            leg,
            why: "test".into(),
        });
    }

    /// The next event, waiting at most `timeout`.
    fn next_event(&mut self, timeout: Duration) -> Option<AiEvent> {
        let events = &mut self.events;
        self.rt
            .block_on(async { tokio::time::timeout(timeout, events.recv()).await })
            .ok()
            .flatten()
    }

    /// Expects `Up` for `leg` next and returns the bridge's address.
    fn expect_up(&mut self, leg: u64) -> SocketAddr {
        match self.next_event(WAIT) {
            Some(AiEvent::Up { leg: l, media }) if l == leg => media,
            other => panic!("expected Up for leg {leg}, got {other:?}"),
        }
    }

    /// Receives RTP from the bridge until `done` says so or `timeout` passes.
    fn recv_rtp_until(&self, timeout: Duration, mut done: impl FnMut(&[Rtp]) -> bool) -> Vec<Rtp> {
        let deadline = Instant::now() + timeout;
        let mut got = Vec::new();
        let mut buf = [0u8; 2048];
        while Instant::now() < deadline && !done(&got) {
            if let Ok((n, _from)) = self.relay.recv_from(&mut buf) {
                if let Some(p) = Rtp::parse(&buf[..n]) {
                    got.push(p);
                }
            }
        }
        got
    }
}

/// The fields of an RTP packet (RFC 3550 §5.1) the tests look at.
#[derive(Debug, Clone)]
struct Rtp {
    pt: u8,
    seq: u16,
    ts: u32,
    ssrc: u32,
    payload: Vec<u8>,
}

impl Rtp {
    fn parse(b: &[u8]) -> Option<Rtp> {
        if b.len() < 12 || b[0] >> 6 != 2 {
            return None;
        }
        let cc = usize::from(b[0] & 0x0f);
        let start = 12 + 4 * cc;
        Some(Rtp {
            pt: b[1] & 0x7f,
            seq: u16::from_be_bytes([b[2], b[3]]),
            ts: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
            ssrc: u32::from_be_bytes([b[8], b[9], b[10], b[11]]),
            payload: b.get(start..)?.to_vec(),
        })
    }
}

/// An RTP packet as the relay would send it: PCMU, 20 ms.
fn rtp(seq: u16, ts: u32, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x80, 0x00];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&ts.to_be_bytes());
    p.extend_from_slice(&0x1234_5678u32.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

fn media_stream(url: String) -> Arc<WsProvider> {
    Arc::new(WsProvider {
        kind: AiKind::MediaStream,
        url,
        headers: vec![("X-Tenant".into(), "acme".into())],
        custom_parameters: vec![("campaign".into(), "spring".into())],
        realtime: None,
        setup_timeout: std::time::Duration::from_secs(3),
    })
}

fn realtime(url: String, key: &str) -> Arc<WsProvider> {
    Arc::new(WsProvider {
        kind: AiKind::OpenAiRealtime,
        url,
        headers: vec![],
        custom_parameters: vec![],
        realtime: Some(RealtimeSettings {
            api_key: Secret(key.into()),
            model: Some("gpt-realtime".into()),
            instructions: Some("Be brief.".into()),
            voice: Some("marin".into()),
            tools: None,
            input_transcription: Some("whisper-1".into()),
            respond_after_reroute: false,
        }),
        setup_timeout: std::time::Duration::from_secs(3),
    })
}

fn leg(id: u64, ws: Arc<WsProvider>, dest: SocketAddr, relay: SocketAddr) -> OpenLeg {
    OpenLeg {
        leg: id,
        call: format!("hf-test-{id}"),
        provider: "bot".into(),
        dest,
        ws,
        law: G711::Ulaw,
        payload_type: 0,
        dtmf_payload_type: Some(101),
        relay,
        bind: "127.0.0.1".parse().unwrap(),
        caller: "+15551230001".into(),
        callee: "+15559870002".into(),
        reroute: None,
        transcript: vec![],
        setup_timeout: WAIT,
        seed: 7,
    }
}

fn event_is(m: &Value, name: &str) -> bool {
    m["event"] == name
}

/// A media-stream leg set up against `bot`: returns the bridge address.
fn up_media_stream(h: &mut Harness, bot: &MediaStreamBot, id: u64) -> SocketAddr {
    let relay = h.relay_addr();
    h.open(leg(id, media_stream(bot.url("/stream")), bot.addr(), relay));
    h.expect_up(id)
}

#[test]
fn media_stream_bridges_both_ways_and_closes_with_stop() {
    let bot = MediaStreamBot::start();
    let mut h = Harness::new();
    let media = up_media_stream(&mut h, &bot, 1);
    assert_eq!(media.ip(), "127.0.0.1".parse::<std::net::IpAddr>().unwrap());
    assert_eq!(h.engine.legs(), 1);

    // The handshake: our path and header; then connected and start with the parameters.
    let conn = bot.conn(0).expect("one connection");
    assert_eq!(conn.path, "/stream");
    assert_eq!(conn.header("x-tenant"), Some("acme"));
    assert!(conn.header("authorization").is_none());
    let start = bot
        .wait_message(0, |m| event_is(m, "start"), WAIT)
        .expect("start");
    assert_eq!(start["start"]["customParameters"]["campaign"], "spring");
    let msgs = bot.messages(0);
    assert!(event_is(&msgs[0], "connected"), "first: {}", msgs[0]);

    // Caller audio: RTP to the bridge arrives as inbound media, in order.
    let frames: Vec<Vec<u8>> = (0..5u8).map(|i| vec![0x10 + i; 160]).collect();
    for (i, f) in frames.iter().enumerate() {
        let i16 = i as u16;
        h.relay
            .send_to(&rtp(100 + i16, 160 * u32::from(i16), f), media)
            .unwrap();
    }
    let want: Vec<u8> = frames.concat();
    assert!(
        bot.wait_for(WAIT, |s| {
            s.conns[0]
                .messages
                .iter()
                .filter(|m| event_is(m, "media"))
                .count()
                >= 5
        }),
        "5 media messages"
    );
    assert_eq!(bot.inbound_audio(0), want);
    let first_media = bot
        .messages(0)
        .into_iter()
        .find(|m| event_is(m, "media"))
        .unwrap();
    assert_eq!(
        b64_decode(&first_media["media"]["payload"]).unwrap(),
        frames[0]
    );
    assert_eq!(first_media["streamSid"], start["streamSid"]);

    // Bot audio: a burst of 10 distinct frames comes out as paced RTP, one frame a packet.
    let burst: Vec<u8> = (0..10u8).flat_map(|i| vec![0x20 + i; 160]).collect();
    bot.send_audio(0, &burst);
    let got = h.recv_rtp_until(WAIT, |ps| ps.iter().any(|p| p.payload == vec![0x29; 160]));
    let voiced: Vec<&Rtp> = got.iter().filter(|p| p.payload[0] != 0xff).collect();
    assert_eq!(voiced.len(), 10, "voiced packets: {got:?}");
    for (i, p) in voiced.iter().enumerate() {
        assert_eq!(p.pt, 0);
        assert_eq!(p.payload, vec![0x20 + i as u8; 160]);
    }
    for w in voiced.windows(2) {
        assert_eq!(w[1].seq, w[0].seq.wrapping_add(1));
        assert_eq!(w[1].ts, w[0].ts.wrapping_add(160));
        assert_eq!(w[1].ssrc, w[0].ssrc);
    }
    // Paced, not a burst: over half a second, about 25 packets (silence included).
    let t0 = Instant::now();
    let window = h.recv_rtp_until(Duration::from_millis(500), |_| false);
    let secs = t0.elapsed().as_secs_f64();
    let expected = secs / 0.020;
    assert!(
        (window.len() as f64) > expected * 0.4 && (window.len() as f64) < expected * 1.6 + 2.0,
        "{} packets in {secs:.3} s",
        window.len()
    );

    // Close: stop, then a normal close frame; no event.
    h.close(1);
    let stop = bot
        .wait_message(0, |m| event_is(m, "stop"), WAIT)
        .expect("stop");
    assert_eq!(stop["streamSid"], start["streamSid"]);
    assert_eq!(
        bot.wait_ended(0, WAIT),
        Some(PeerEnd::Close {
            code: Some(1000),
            reason: String::new()
        })
    );
    assert_eq!(h.next_event(Duration::from_millis(300)), None);
    assert_eq!(h.engine.legs(), 0);
}

#[test]
fn media_stream_echo_bot_parrots_caller_audio() {
    let bot = MediaStreamBot::echo();
    let mut h = Harness::new();
    let media = up_media_stream(&mut h, &bot, 2);
    h.relay.send_to(&rtp(1, 0, &[0x42; 160]), media).unwrap();
    let got = h.recv_rtp_until(WAIT, |ps| ps.iter().any(|p| p.payload == vec![0x42; 160]));
    assert!(
        got.iter().any(|p| p.payload == vec![0x42; 160]),
        "echoed frame"
    );
    h.close(2);
    assert!(matches!(
        bot.wait_ended(0, WAIT),
        Some(PeerEnd::Close {
            code: Some(1000),
            ..
        })
    ));
}

#[test]
fn media_stream_dtmf_from_sip_info_reaches_the_bot() {
    let bot = MediaStreamBot::start();
    let mut h = Harness::new();
    up_media_stream(&mut h, &bot, 3);
    h.cmd(AiCommand::Dtmf { leg: 3, digit: '5' });
    let m = bot
        .wait_message(0, |m| event_is(m, "dtmf"), WAIT)
        .expect("dtmf");
    assert_eq!(m["dtmf"]["digit"], "5");
    h.close(3);
}

#[test]
fn media_stream_bot_dropping_the_connection_is_a_failure() {
    let bot = MediaStreamBot::start();
    let mut h = Harness::new();
    up_media_stream(&mut h, &bot, 4);
    assert!(bot.wait_connections(1, WAIT));
    bot.drop_connection(0);
    match h.next_event(WAIT) {
        Some(AiEvent::Closed {
            leg: 4,
            failure: true,
            why,
        }) => assert!(
            [
                "connection reset",
                "connection dropped without a close frame",
                "connection closed without a close frame"
            ]
            .contains(&why.as_str()),
            "{why}"
        ),
        other => panic!("expected Closed failure, got {other:?}"),
    }
}

#[test]
fn media_stream_bot_hanging_up_normally_is_not_a_failure() {
    let bot = MediaStreamBot::start();
    let mut h = Harness::new();
    up_media_stream(&mut h, &bot, 5);
    assert!(bot.wait_connections(1, WAIT));
    bot.close(0, 1000, "goodbye");
    match h.next_event(WAIT) {
        Some(AiEvent::Closed {
            leg: 5,
            failure: false,
            ..
        }) => {}
        other => panic!("expected Closed without failure, got {other:?}"),
    }
    assert_eq!(
        bot.wait_ended(0, WAIT),
        Some(PeerEnd::ClosedByBot { code: 1000 })
    );
}

#[test]
fn media_stream_abnormal_close_code_is_a_failure_with_the_code() {
    let bot = MediaStreamBot::start();
    let mut h = Harness::new();
    up_media_stream(&mut h, &bot, 6);
    assert!(bot.wait_connections(1, WAIT));
    bot.close(0, 1011, "internal error");
    match h.next_event(WAIT) {
        Some(AiEvent::Closed {
            leg: 6,
            failure: true,
            why,
        }) => assert_eq!(why, "websocket closed 1011 'internal error'"),
        other => panic!("expected Closed failure, got {other:?}"),
    }
}

#[test]
fn handshake_refused_reports_the_http_status() {
    let bot = MediaStreamBot::start();
    bot.refuse_with(Some(503));
    let mut h = Harness::new();
    let relay = h.relay_addr();
    h.open(leg(7, media_stream(bot.url("/stream")), bot.addr(), relay));
    match h.next_event(WAIT) {
        Some(AiEvent::Failed {
            leg: 7,
            status: Some(503),
            ..
        }) => {}
        other => panic!("expected Failed 503, got {other:?}"),
    }
    assert_eq!(bot.connections(), 0);
    assert_eq!(bot.refused(), 1);
}

#[test]
fn connection_refused_fails_without_status() {
    let bot = MediaStreamBot::start();
    bot.stop_accepting();
    let mut h = Harness::new();
    let relay = h.relay_addr();
    h.open(leg(8, media_stream(bot.url("/stream")), bot.addr(), relay));
    match h.next_event(WAIT) {
        Some(AiEvent::Failed {
            leg: 8,
            status: None,
            why,
        }) => assert!(why.contains("connect"), "{why}"),
        other => panic!("expected Failed, got {other:?}"),
    }
    assert_eq!(h.next_event(Duration::from_millis(200)), None);
}

#[test]
fn setup_times_out_when_the_server_never_answers_the_handshake() {
    // A TCP listener that accepts (the kernel's backlog) but never speaks HTTP.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dest = silent.local_addr().unwrap();
    let mut h = Harness::new();
    let relay = h.relay_addr();
    let mut l = leg(9, media_stream(format!("ws://{dest}/stream")), dest, relay);
    l.setup_timeout = Duration::from_millis(300);
    h.open(l);
    match h.next_event(WAIT) {
        Some(AiEvent::Failed {
            leg: 9,
            status: None,
            why,
        }) => assert!(why.starts_with("setup timed out after 300ms"), "{why}"),
        other => panic!("expected a setup timeout, got {other:?}"),
    }
}

#[test]
fn close_while_connecting_and_unknown_legs_are_quiet() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dest = silent.local_addr().unwrap();
    let mut h = Harness::new();
    let relay = h.relay_addr();
    h.open(leg(10, media_stream(format!("ws://{dest}/s")), dest, relay));
    h.cmd(AiCommand::Dtmf {
        leg: 99,
        digit: '1',
    });
    h.close(99);
    h.close(10);
    assert_eq!(h.next_event(Duration::from_millis(300)), None);
    assert_eq!(h.engine.legs(), 0);
}

#[test]
fn probe_ok_refused_and_unreachable() {
    let bot = MediaStreamBot::start();
    let mut h = Harness::new();
    let ws = media_stream(bot.url("/stream"));
    let probe = |id: u64, dest: SocketAddr, ws: &Arc<WsProvider>| AiCommand::Probe {
        probe: id,
        provider: "bot".into(),
        dest,
        ws: ws.clone(),
        timeout: WAIT,
    };
    h.cmd(probe(1, bot.addr(), &ws));
    match h.next_event(WAIT) {
        Some(AiEvent::Probe {
            probe: 1,
            status: 200,
            rtt: Some(rtt),
            ..
        }) => assert!(rtt < WAIT),
        other => panic!("expected probe 200, got {other:?}"),
    }
    // The probe closed normally and sent nothing.
    assert!(matches!(
        bot.wait_ended(0, WAIT),
        Some(PeerEnd::Close {
            code: Some(1000),
            ..
        })
    ));
    assert!(bot.messages(0).is_empty());

    bot.refuse_with(Some(429));
    h.cmd(probe(2, bot.addr(), &ws));
    match h.next_event(WAIT) {
        Some(AiEvent::Probe {
            probe: 2,
            status: 429,
            rtt: None,
            ..
        }) => {}
        other => panic!("expected probe 429, got {other:?}"),
    }

    bot.stop_accepting();
    h.cmd(probe(3, bot.addr(), &ws));
    match h.next_event(WAIT) {
        Some(AiEvent::Probe {
            probe: 3,
            status: 503,
            why,
            ..
        }) => assert!(!why.is_empty()),
        other => panic!("expected probe 503, got {other:?}"),
    }
}

#[test]
fn realtime_probe_waits_for_session_created() {
    let ai = FakeRealtime::start("sk-probe");
    let mut h = Harness::new();
    h.cmd(AiCommand::Probe {
        probe: 4,
        provider: "oai".into(),
        dest: ai.addr(),
        ws: realtime(ai.url("/v1/realtime?model=gpt-realtime"), "sk-probe"),
        timeout: WAIT,
    });
    match h.next_event(WAIT) {
        Some(AiEvent::Probe {
            probe: 4,
            status: 200,
            rtt: Some(_),
            ..
        }) => {}
        other => panic!("expected probe 200, got {other:?}"),
    }
    assert_eq!(
        ai.conn(0).unwrap().header("authorization"),
        Some("Bearer sk-probe")
    );
    // A wrong key is the provider's 401.
    h.cmd(AiCommand::Probe {
        probe: 5,
        provider: "oai".into(),
        dest: ai.addr(),
        ws: realtime(ai.url("/v1/realtime"), "sk-wrong"),
        timeout: WAIT,
    });
    assert!(matches!(
        h.next_event(WAIT),
        Some(AiEvent::Probe {
            probe: 5,
            status: 401,
            ..
        })
    ));
}

/// A realtime leg against `ai`, up: returns the bridge address.
fn up_realtime(h: &mut Harness, ai: &FakeRealtime, id: u64, key: &str) -> SocketAddr {
    let relay = h.relay_addr();
    h.open(leg(
        id,
        realtime(ai.url("/v1/realtime?model=gpt-realtime"), key),
        ai.addr(),
        relay,
    ));
    h.expect_up(id)
}

#[test]
fn realtime_is_up_only_after_session_updated_and_bridges_audio() {
    let ai = FakeRealtime::start("sk-test");
    ai.set_echo(true);
    let mut h = Harness::new();
    let media = up_realtime(&mut h, &ai, 20, "sk-test");
    let conn = ai.conn(0).expect("connection");
    assert_eq!(conn.header("authorization"), Some("Bearer sk-test"));
    // By the time Up was reported the server had sent session.updated.
    assert!(
        conn.sent.iter().any(|m| m["type"] == "session.updated"),
        "sent: {:?}",
        conn.sent
    );
    assert!(conn.messages.iter().any(|m| m["type"] == "session.update"));

    // Caller audio is appended; the echo comes back as RTP.
    h.relay.send_to(&rtp(1, 0, &[0x33; 160]), media).unwrap();
    assert!(ai.wait_for(WAIT, |s| {
        s.conns[0]
            .messages
            .iter()
            .any(|m| m["type"] == "input_audio_buffer.append")
    }));
    assert!(ai.appended_audio(0).starts_with(&[0x33; 160]));
    let got = h.recv_rtp_until(WAIT, |ps| ps.iter().any(|p| p.payload == vec![0x33; 160]));
    assert!(got.iter().any(|p| p.payload == vec![0x33; 160]));

    h.close(20);
    assert!(matches!(
        ai.wait_ended(0, WAIT),
        Some(PeerEnd::Close {
            code: Some(1000),
            ..
        })
    ));
    assert_eq!(h.next_event(Duration::from_millis(300)), None);
}

#[test]
fn realtime_session_update_error_fails_setup() {
    let ai = FakeRealtime::start("sk-test");
    ai.fail_session_update(Some("bad voice"));
    let mut h = Harness::new();
    let relay = h.relay_addr();
    h.open(leg(
        21,
        realtime(ai.url("/v1/realtime"), "sk-test"),
        ai.addr(),
        relay,
    ));
    match h.next_event(WAIT) {
        Some(AiEvent::Failed {
            leg: 21,
            status: None,
            ..
        }) => {}
        other => panic!("expected Failed, got {other:?}"),
    }
}

#[test]
fn realtime_wrong_key_is_refused_401() {
    let ai = FakeRealtime::start("sk-right");
    let mut h = Harness::new();
    let relay = h.relay_addr();
    h.open(leg(
        22,
        realtime(ai.url("/v1/realtime"), "sk-wrong"),
        ai.addr(),
        relay,
    ));
    match h.next_event(WAIT) {
        Some(AiEvent::Failed {
            leg: 22,
            status: Some(401),
            why,
        }) => assert!(!why.contains("sk-wrong"), "the key leaked: {why}"),
        other => panic!("expected Failed 401, got {other:?}"),
    }
    assert_eq!(ai.refused(), 1);
}

#[test]
fn realtime_error_after_up_closes_with_failure() {
    let ai = FakeRealtime::start("sk-test");
    let mut h = Harness::new();
    up_realtime(&mut h, &ai, 23, "sk-test");
    ai.send_error(0, "server_error", "The server had an error");
    match h.next_event(WAIT) {
        Some(AiEvent::Closed {
            leg: 23,
            failure: true,
            why,
        }) => assert!(why.contains("The server had an error"), "{why}"),
        other => panic!("expected Closed failure, got {other:?}"),
    }
    // The engine closed the socket itself, normally, and reported nothing more.
    assert!(matches!(
        ai.wait_ended(0, WAIT),
        Some(PeerEnd::Close {
            code: Some(1000),
            ..
        })
    ));
    assert_eq!(h.next_event(Duration::from_millis(200)), None);
}

#[test]
fn realtime_normal_close_by_the_provider_is_a_failure() {
    let ai = FakeRealtime::start("sk-test");
    let mut h = Harness::new();
    up_realtime(&mut h, &ai, 24, "sk-test");
    ai.close(0, 1000, "");
    assert!(matches!(
        h.next_event(WAIT),
        Some(AiEvent::Closed {
            leg: 24,
            failure: true,
            ..
        })
    ));
}

#[test]
fn realtime_transcripts_surface_as_events() {
    let ai = FakeRealtime::start("sk-test");
    let mut h = Harness::new();
    up_realtime(&mut h, &ai, 25, "sk-test");
    ai.send_input_transcript_completed(0, "item_u1", "I need to change my booking.");
    ai.send_output_transcript_done(0, "item_a1", "Sure, what is the booking number?");
    let mut items = Vec::new();
    while items.len() < 2 {
        match h.next_event(WAIT) {
            Some(AiEvent::Transcript { leg: 25, item }) => items.push(item),
            other => panic!("expected Transcript, got {other:?}"),
        }
    }
    assert_eq!(
        items,
        vec![
            TranscriptItem {
                speaker: Speaker::Caller,
                text: "I need to change my booking.".into()
            },
            TranscriptItem {
                speaker: Speaker::Agent,
                text: "Sure, what is the booking number?".into()
            },
        ]
    );
    h.close(25);
}

#[test]
fn the_bridge_accepts_rtp_only_from_the_relay() {
    let bot = MediaStreamBot::start();
    let mut h = Harness::new();
    let media = up_media_stream(&mut h, &bot, 30);
    let stranger = UdpSocket::bind("127.0.0.1:0").unwrap();
    stranger.send_to(&rtp(1, 0, &[0x66; 160]), media).unwrap();
    h.relay.send_to(&rtp(1, 0, &[0x77; 160]), media).unwrap();
    assert!(bot.wait_for(WAIT, |s| s.conns[0]
        .messages
        .iter()
        .any(|m| event_is(m, "media"))));
    // Both datagrams were sent before the relay's arrived; only the relay's got through.
    assert_eq!(bot.inbound_audio(0), vec![0x77; 160]);
    h.close(30);
}

#[test]
fn an_ended_leg_is_forgotten() {
    let bot = MediaStreamBot::start();
    let mut h = Harness::new();
    up_media_stream(&mut h, &bot, 31);
    assert_eq!(h.engine.legs(), 1);
    bot.close(0, 1000, "");
    assert!(matches!(
        h.next_event(WAIT),
        Some(AiEvent::Closed { leg: 31, .. })
    ));
    // The task returns right after reporting; wait (bounded) for it.
    let deadline = Instant::now() + WAIT;
    while h.engine.legs() > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(h.engine.legs(), 0);
    // A Close for it now is a no-op.
    h.close(31);
    assert_eq!(h.next_event(Duration::from_millis(200)), None);
}

#[test]
fn wss_speaks_tls_first() {
    // A plain ws bot behind a wss:// URL: the TLS handshake fails, reported without status.
    let bot = MediaStreamBot::start();
    let mut h = Harness::new();
    let relay = h.relay_addr();
    let url = format!("wss://localhost:{}/stream", bot.addr().port());
    h.open(leg(32, media_stream(url), bot.addr(), relay));
    match h.next_event(WAIT) {
        Some(AiEvent::Failed {
            leg: 32,
            status: None,
            why,
        }) => {
            assert!(why.contains("localhost"), "{why}")
        }
        other => panic!("expected a TLS failure, got {other:?}"),
    }
    assert_eq!(bot.connections(), 0);
}

#[test]
fn realtime_without_session_updated_times_out() {
    let ai = FakeRealtime::start("sk-test");
    ai.ignore_session_update(true);
    let mut h = Harness::new();
    let relay = h.relay_addr();
    let mut l = leg(
        26,
        realtime(ai.url("/v1/realtime"), "sk-test"),
        ai.addr(),
        relay,
    );
    l.setup_timeout = Duration::from_millis(400);
    h.open(l);
    match h.next_event(WAIT) {
        Some(AiEvent::Failed {
            leg: 26,
            status: None,
            why,
        }) => assert_eq!(
            why,
            "setup timed out after 400ms (waiting for session.updated)"
        ),
        other => panic!("expected a setup timeout, got {other:?}"),
    }
    // The session.update was sent; the socket was closed normally afterwards.
    assert!(ai.messages(0).iter().any(|m| m["type"] == "session.update"));
    assert!(matches!(
        ai.wait_ended(0, WAIT),
        Some(PeerEnd::Close {
            code: Some(1000),
            ..
        })
    ));
}

#[test]
fn media_stream_mark_is_echoed_after_playback_and_clear_cuts_the_audio() {
    let bot = MediaStreamBot::start();
    let mut h = Harness::new();
    up_media_stream(&mut h, &bot, 33);
    assert!(bot
        .wait_message(0, |m| event_is(m, "start"), WAIT)
        .is_some());

    // Three frames, then a mark: it comes back once they have been played.
    bot.send_audio(0, &[0x44; 480]);
    bot.send_mark(0, "greeting");
    let mark = bot
        .wait_message(0, |m| event_is(m, "mark"), WAIT)
        .expect("mark echoed");
    assert_eq!(mark["mark"]["name"], "greeting");

    // Two seconds of audio, then clear: far fewer than 100 voiced frames reach the relay.
    bot.send_audio(0, &[0x45; 16_000]);
    let first = h.recv_rtp_until(WAIT, |ps| ps.iter().any(|p| p.payload[0] == 0x45));
    assert!(first.iter().any(|p| p.payload[0] == 0x45), "audio started");
    bot.send_clear(0);
    let after = h.recv_rtp_until(Duration::from_millis(600), |_| false);
    let voiced = first
        .iter()
        .chain(after.iter())
        .filter(|p| p.payload[0] == 0x45)
        .count();
    assert!(voiced < 60, "{voiced} voiced frames after clear");
    // The tail of the window is silence.
    assert!(after.iter().rev().take(5).all(|p| p.payload[0] == 0xff));
    h.close(33);
}
