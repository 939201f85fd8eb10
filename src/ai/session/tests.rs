//! Unit tests of the session core (both protocols), driven with a base `Instant`.
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::rtp;
use super::*;
use crate::ai::control::{
    AiKind, OpenLeg, RealtimeSettings, RerouteContext, Secret, Speaker, TranscriptItem, WsProvider,
};
use crate::media::codec::{alaw_encode, ulaw_decode, FRAME, FRAME_SAMPLES, G711};

const PT: u8 = 0;
const DTMF_PT: u8 = 101;

fn provider(kind: AiKind) -> WsProvider {
    WsProvider {
        kind,
        url: "wss://bot.example/stream".into(),
        headers: vec![],
        custom_parameters: vec![("tenant".into(), "acme".into())],
        realtime: (kind == AiKind::OpenAiRealtime).then(|| RealtimeSettings {
            api_key: Secret("sk-test".into()),
            model: Some("gpt-realtime".into()),
            instructions: Some("Be brief.".into()),
            voice: Some("marin".into()),
            tools: None,
            input_transcription: Some("gpt-4o-transcribe".into()),
            respond_after_reroute: true,
        }),
        setup_timeout: std::time::Duration::from_secs(3),
    }
}

fn leg_with(ws: WsProvider, law: G711) -> OpenLeg {
    OpenLeg {
        leg: 7,
        call: "hf-abc".into(),
        provider: "bot-a".into(),
        dest: "127.0.0.1:443".parse().unwrap(),
        ws: Arc::new(ws),
        law,
        payload_type: if law == G711::Alaw { 8 } else { PT },
        dtmf_payload_type: Some(DTMF_PT),
        relay: "127.0.0.1:20000".parse().unwrap(),
        bind: "127.0.0.1".parse().unwrap(),
        caller: "+15551230000".into(),
        callee: "+15559870000".into(),
        reroute: None,
        transcript: vec![],
        setup_timeout: Duration::from_secs(5),
        seed: 0x1234_5678,
    }
}

fn leg(kind: AiKind, law: G711) -> OpenLeg {
    leg_with(provider(kind), law)
}

fn texts(s: &mut Session) -> Vec<Value> {
    std::iter::from_fn(|| s.poll_text())
        .map(|t| serde_json::from_str(&t).expect("we send JSON"))
        .collect()
}

fn events(s: &mut Session) -> Vec<SessionEvent> {
    std::iter::from_fn(|| s.poll_event()).collect()
}

fn rtp_packet(pt: u8, seq: u16, ts: u32, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0u8; rtp::HEADER_LEN];
    rtp::write_header(&mut p, false, pt, seq, ts, 99);
    p.extend_from_slice(payload);
    p
}

fn b64(bytes: &[u8]) -> String {
    super::encode_base64(bytes)
}

fn unb64(s: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

/// A media-stream session opened at `t0`, opening messages drained.
fn open_ms(law: G711, t0: Instant) -> Session {
    let mut s = Session::new(&leg(AiKind::MediaStream, law), t0);
    s.handle_open(t0);
    texts(&mut s);
    assert_eq!(events(&mut s), vec![SessionEvent::Ready]);
    s
}

fn bot_media(s: &Session, payload: &[u8]) -> String {
    json!({"event": "media", "streamSid": s.stream_sid(), "media": {"payload": b64(payload)}})
        .to_string()
}

fn bot_mark(s: &Session, name: &str) -> String {
    json!({"event": "mark", "streamSid": s.stream_sid(), "mark": {"name": name}}).to_string()
}

/// Polls one packet at `at` and parses it.
fn frame(s: &mut Session, at: Instant) -> Option<(bool, u16, u32, u32, Vec<u8>)> {
    let mut out = [0u8; 1500];
    let n = s.poll_rtp(at, &mut out)?;
    let p = crate::media::rtp::RtpPacket::new_checked(&out[..n]).unwrap();
    assert_eq!(p.payload().len(), FRAME_SAMPLES);
    Some((
        p.marker(),
        p.sequence_number(),
        p.timestamp(),
        p.ssrc(),
        p.payload().to_vec(),
    ))
}

// ----- frame clock -----

#[test]
fn nothing_before_open_and_nothing_queued_by_new() {
    let t0 = Instant::now();
    let mut s = Session::new(&leg(AiKind::MediaStream, G711::Ulaw), t0);
    assert_eq!(s.poll_text(), None);
    assert_eq!(s.poll_event(), None);
    assert_eq!(frame(&mut s, t0), None);
    assert_eq!(
        s.poll_timeout(),
        Some(t0 + Duration::from_secs(5)),
        "setup timeout"
    );
    s.handle_rtp(&rtp_packet(PT, 1, 0, &[0x55; 160]), t0);
    assert_eq!(s.poll_text(), None, "no audio before the stream started");
}

#[test]
fn one_packet_per_frame_with_silence_when_quiet() {
    let t0 = Instant::now();
    let mut s = open_ms(G711::Ulaw, t0);
    assert_eq!(s.poll_timeout(), Some(t0), "first frame due at Ready");
    let (m, seq0, ts0, ssrc, payload) = frame(&mut s, t0).unwrap();
    assert!(!m);
    assert!(payload.iter().all(|&b| b == 0xff), "μ-law silence");
    assert_eq!(frame(&mut s, t0), None, "one per frame");
    assert_eq!(frame(&mut s, t0 + Duration::from_millis(19)), None);
    assert_eq!(s.poll_timeout(), Some(t0 + FRAME));
    for k in 1..50u32 {
        let (_, seq, ts, ss, _) = frame(&mut s, t0 + FRAME * k).unwrap();
        assert_eq!(seq, seq0.wrapping_add(k as u16));
        assert_eq!(ts, ts0.wrapping_add(160 * k));
        assert_eq!(ss, ssrc);
        assert_eq!(frame(&mut s, t0 + FRAME * k), None);
    }
    assert_eq!(s.stats().frames_sent, 50);
}

#[test]
fn ids_derive_from_the_seed() {
    let t0 = Instant::now();
    let a = Session::new(&leg(AiKind::MediaStream, G711::Ulaw), t0);
    let b = Session::new(&leg(AiKind::MediaStream, G711::Ulaw), t0);
    let mut other = leg(AiKind::MediaStream, G711::Ulaw);
    other.seed = 99;
    let c = Session::new(&other, t0);
    assert_eq!(a.stream_sid(), b.stream_sid());
    assert_eq!(a.ssrc(), b.ssrc());
    assert_ne!(a.stream_sid(), c.stream_sid());
    assert_ne!(a.ssrc(), c.ssrc());
    let sid = a.stream_sid();
    assert_eq!(sid.len(), 34);
    assert!(sid.starts_with("MZ"));
    assert!(sid[2..].chars().all(|c| c.is_ascii_hexdigit()));
}

#[test]
fn a_late_poll_catches_up_but_a_stall_skips_ahead() {
    let t0 = Instant::now();
    let mut s = open_ms(G711::Ulaw, t0);
    let (_, seq0, ts0, _, _) = frame(&mut s, t0).unwrap();
    // 50 ms late (within the lag): the two missed slots come out at once, on the grid.
    let at = t0 + Duration::from_millis(70);
    let (_, seq1, ts1, _, _) = frame(&mut s, at).unwrap();
    let (_, _, ts2, _, _) = frame(&mut s, at).unwrap();
    let (_, _, ts3, _, _) = frame(&mut s, at).unwrap();
    assert_eq!(frame(&mut s, at), None);
    assert_eq!((ts1, ts2, ts3), (ts0 + 160, ts0 + 320, ts0 + 480));
    assert_eq!(seq1, seq0 + 1);
    assert_eq!(s.poll_timeout(), Some(t0 + FRAME * 4));
    // A 1 s stall: one packet, no burst; the timestamp follows elapsed time, the sequence
    // number stays contiguous.
    let stall = t0 + FRAME * 4 + Duration::from_millis(1005);
    let (_, seq4, ts4, _, _) = frame(&mut s, stall).unwrap();
    assert_eq!(frame(&mut s, stall), None, "no burst after a stall");
    assert_eq!(seq4, seq0 + 4);
    assert_eq!(ts4, ts0 + 160 * (4 + 50), "50 slots skipped");
    assert_eq!(s.stats().frames_skipped, 50);
    assert_eq!(s.poll_timeout(), Some(t0 + FRAME * 55));
    assert!(frame(&mut s, t0 + FRAME * 55).is_some());
}

#[test]
fn provider_audio_is_paced_with_a_marker_per_talkspurt() {
    let t0 = Instant::now();
    let mut s = open_ms(G711::Ulaw, t0);
    assert!(frame(&mut s, t0).unwrap().4.iter().all(|&b| b == 0xff));
    let burst: Vec<u8> = (0..400).map(|i| (i % 100) as u8).collect();
    let text = bot_media(&s, &burst);
    s.handle_text(&text, t0 + Duration::from_millis(5));
    let f1 = frame(&mut s, t0 + FRAME).unwrap();
    assert!(f1.0, "marker on the first speech packet");
    assert_eq!(&f1.4[..], &burst[..160]);
    let f2 = frame(&mut s, t0 + FRAME * 2).unwrap();
    assert!(!f2.0);
    assert_eq!(&f2.4[..], &burst[160..320]);
    let f3 = frame(&mut s, t0 + FRAME * 3).unwrap();
    assert_eq!(&f3.4[..80], &burst[320..]);
    assert!(f3.4[80..].iter().all(|&b| b == 0xff), "padded");
    let f4 = frame(&mut s, t0 + FRAME * 4).unwrap();
    assert!(!f4.0 && f4.4.iter().all(|&b| b == 0xff), "silence again");
    s.handle_text(&bot_media(&s, &[1u8; 160]), t0 + FRAME * 4);
    assert!(
        frame(&mut s, t0 + FRAME * 5).unwrap().0,
        "new talkspurt, new marker"
    );
}

// ----- A-law -----

#[test]
fn alaw_legs_are_transcoded_both_ways() {
    let t0 = Instant::now();
    let mut s = open_ms(G711::Alaw, t0);
    // Caller → bot: A-law becomes μ-law.
    let samples: [i16; 4] = [0, 1000, -1000, 20000];
    let alaw: Vec<u8> = samples.iter().map(|&x| alaw_encode(x)).collect();
    s.handle_rtp(&rtp_packet(8, 1, 0, &alaw), t0);
    let m = texts(&mut s).pop().unwrap();
    let ulaw = unb64(m["media"]["payload"].as_str().unwrap());
    let mut expect = alaw.clone();
    G711::Alaw.transcode(G711::Ulaw, &mut expect);
    assert_eq!(ulaw, expect);
    for (u, x) in ulaw.iter().zip(samples) {
        assert!((i32::from(ulaw_decode(*u)) - i32::from(x)).abs() < 700);
    }
    // PCMU (PT 0) on an A-law leg is not the leg's codec.
    s.handle_rtp(&rtp_packet(0, 2, 160, &[0xff; 160]), t0);
    assert!(texts(&mut s).is_empty());
    // Bot → caller: μ-law becomes A-law, silence is A-law silence.
    let f = frame(&mut s, t0).unwrap();
    assert!(f.4.iter().all(|&b| b == 0xd5));
    s.handle_text(&bot_media(&s, &[0xff; 160]), t0);
    let mut out = [0u8; 1500];
    let n = s.poll_rtp(t0 + FRAME, &mut out).unwrap();
    let p = crate::media::rtp::RtpPacket::new_checked(&out[..n]).unwrap();
    assert_eq!(p.payload_type(), 8);
    assert!(p.payload().iter().all(|&b| b == alaw_encode(0)));
}

// ----- media-stream messages -----

#[test]
fn media_stream_opening_messages() {
    let t0 = Instant::now();
    let mut l = leg(AiKind::MediaStream, G711::Ulaw);
    l.reroute = Some(RerouteContext {
        count: 2,
        from: "bot-old".into(),
        trigger: "ws_closed".into(),
    });
    let mut s = Session::new(&l, t0);
    assert_eq!(s.poll_text(), None);
    s.handle_open(t0);
    let m = texts(&mut s);
    assert_eq!(m.len(), 2);
    assert_eq!(
        m[0],
        json!({"event": "connected", "protocol": "Call", "version": "1.0.0"})
    );
    let start = &m[1];
    let sid = s.stream_sid().to_owned();
    assert_eq!(start["event"], "start");
    assert_eq!(start["sequenceNumber"], "1");
    assert_eq!(start["streamSid"], sid.as_str());
    let st = &start["start"];
    assert_eq!(st["accountSid"], "ACholdfast");
    assert_eq!(st["streamSid"], sid.as_str());
    assert_eq!(st["callSid"], "hf-abc");
    assert_eq!(st["tracks"], json!(["inbound"]));
    assert_eq!(
        st["mediaFormat"],
        json!({"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1})
    );
    let p = &st["customParameters"];
    assert_eq!(p["tenant"], "acme");
    assert_eq!(p["holdfast_caller"], "+15551230000");
    assert_eq!(p["holdfast_callee"], "+15559870000");
    assert_eq!(p["holdfast_provider"], "bot-a");
    assert_eq!(p["holdfast_reroute_count"], "2");
    assert_eq!(p["holdfast_reroute_from"], "bot-old");
    assert_eq!(p["holdfast_reroute_trigger"], "ws_closed");
    assert_eq!(events(&mut s), vec![SessionEvent::Ready]);
    assert!(s.is_ready());
    // A second open changes nothing.
    s.handle_open(t0);
    assert!(texts(&mut s).is_empty());
}

#[test]
fn no_reroute_keys_on_a_first_leg() {
    let t0 = Instant::now();
    let mut s = Session::new(&leg(AiKind::MediaStream, G711::Ulaw), t0);
    s.handle_open(t0);
    let m = texts(&mut s);
    let p = m[1]["start"]["customParameters"].as_object().unwrap();
    assert!(!p.contains_key("holdfast_reroute_count"));
}

#[test]
fn caller_audio_becomes_media_messages() {
    let t0 = Instant::now();
    let mut s = open_ms(G711::Ulaw, t0);
    let payload: Vec<u8> = (0..160).map(|i| i as u8).collect();
    s.handle_rtp(
        &rtp_packet(PT, 1, 0, &payload),
        t0 + Duration::from_millis(20),
    );
    s.handle_rtp(
        &rtp_packet(PT, 2, 160, &payload),
        t0 + Duration::from_millis(41),
    );
    let m = texts(&mut s);
    assert_eq!(m.len(), 2);
    assert_eq!(m[0]["event"], "media");
    assert_eq!(m[0]["sequenceNumber"], "2", "start was 1");
    assert_eq!(m[0]["streamSid"], s.stream_sid());
    assert_eq!(m[0]["media"]["track"], "inbound");
    assert_eq!(m[0]["media"]["chunk"], "1");
    assert_eq!(m[0]["media"]["timestamp"], "20");
    assert_eq!(unb64(m[0]["media"]["payload"].as_str().unwrap()), payload);
    assert_eq!(m[1]["sequenceNumber"], "3");
    assert_eq!(m[1]["media"]["chunk"], "2");
    assert_eq!(m[1]["media"]["timestamp"], "41");
    // CN (13), an RTCP-looking packet and garbage are ignored.
    s.handle_rtp(&rtp_packet(13, 3, 320, &[40]), t0);
    s.handle_rtp(&[0x80, 200, 0, 6, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10], t0);
    s.handle_rtp(b"hello", t0);
    s.handle_rtp(&[], t0);
    assert!(texts(&mut s).is_empty());
    assert_eq!(s.stats().rtp_malformed, 2);
    assert_eq!(s.stats().rtp_ignored, 2);
    assert_eq!(s.stats().audio_sent, 2);
}

#[test]
fn rfc4733_digits_are_reported_once() {
    let t0 = Instant::now();
    let mut s = open_ms(G711::Ulaw, t0);
    let ev = |event: u8, end: bool, dur: u16| {
        let d = dur.to_be_bytes();
        [event, if end { 0x80 | 10 } else { 10 }, d[0], d[1]]
    };
    // Digit 5: start, updates, end + 2 retransmitted ends, all with timestamp 1000.
    for (i, (end, dur)) in [
        (false, 160),
        (false, 320),
        (false, 480),
        (true, 640),
        (true, 640),
        (true, 640),
    ]
    .into_iter()
    .enumerate()
    {
        s.handle_rtp(
            &rtp_packet(DTMF_PT, 10 + i as u16, 1000, &ev(5, end, dur)),
            t0,
        );
    }
    // '#' whose first packets were lost: only the end packets arrive.
    for i in 0..3 {
        s.handle_rtp(&rtp_packet(DTMF_PT, 20 + i, 5000, &ev(11, true, 800)), t0);
    }
    // The same digit pressed again is a new event (new timestamp).
    s.handle_rtp(&rtp_packet(DTMF_PT, 30, 9000, &ev(5, false, 160)), t0);
    // Flash (16) is not a digit; a short payload is ignored.
    s.handle_rtp(&rtp_packet(DTMF_PT, 31, 12000, &ev(16, false, 160)), t0);
    s.handle_rtp(&rtp_packet(DTMF_PT, 32, 13000, &[1, 2]), t0);
    let m = texts(&mut s);
    let digits: Vec<&str> = m
        .iter()
        .map(|v| {
            assert_eq!(v["event"], "dtmf");
            assert_eq!(v["dtmf"]["track"], "inbound_track");
            assert_eq!(v["streamSid"], s.stream_sid());
            v["dtmf"]["digit"].as_str().unwrap()
        })
        .collect();
    assert_eq!(digits, ["5", "#", "5"]);
    assert_eq!(m[0]["sequenceNumber"], "2");
    assert_eq!(s.stats().dtmf_digits, 3);
}

#[test]
fn sip_info_digits_are_forwarded() {
    let t0 = Instant::now();
    let mut s = open_ms(G711::Ulaw, t0);
    s.handle_dtmf('7', t0);
    s.handle_dtmf('d', t0);
    s.handle_dtmf('x', t0);
    let m = texts(&mut s);
    assert_eq!(m.len(), 2);
    assert_eq!(m[0]["dtmf"]["digit"], "7");
    assert_eq!(m[1]["dtmf"]["digit"], "D");
}

#[test]
fn marks_are_echoed_when_their_audio_has_played() {
    let t0 = Instant::now();
    let mut s = open_ms(G711::Ulaw, t0);
    // A mark with nothing queued is echoed at once.
    s.handle_text(&bot_mark(&s, "empty"), t0);
    let m = texts(&mut s);
    assert_eq!(m.len(), 1);
    assert_eq!(m[0]["event"], "mark");
    assert_eq!(m[0]["mark"]["name"], "empty");
    assert_eq!(m[0]["streamSid"], s.stream_sid());
    assert_eq!(m[0]["sequenceNumber"], "2");
    // 2 frames, mark a, 1 frame, mark b.
    s.handle_text(&bot_media(&s, &[1u8; 320]), t0);
    s.handle_text(&bot_mark(&s, "a"), t0);
    s.handle_text(&bot_media(&s, &[2u8; 100]), t0);
    s.handle_text(&bot_mark(&s, "b"), t0);
    assert!(texts(&mut s).is_empty(), "nothing played yet");
    frame(&mut s, t0).unwrap();
    assert!(texts(&mut s).is_empty());
    frame(&mut s, t0 + FRAME).unwrap();
    let m = texts(&mut s);
    assert_eq!(m.len(), 1);
    assert_eq!(m[0]["mark"]["name"], "a");
    frame(&mut s, t0 + FRAME * 2).unwrap();
    let m = texts(&mut s);
    assert_eq!(m.len(), 1);
    assert_eq!(m[0]["mark"]["name"], "b");
    assert_eq!(m[0]["sequenceNumber"], "4");
}

#[test]
fn clear_drops_audio_and_echoes_pending_marks() {
    let t0 = Instant::now();
    let mut s = open_ms(G711::Ulaw, t0);
    s.handle_text(&bot_media(&s, &[1u8; 1600]), t0);
    s.handle_text(&bot_mark(&s, "one"), t0);
    s.handle_text(&bot_media(&s, &[1u8; 1600]), t0);
    s.handle_text(&bot_mark(&s, "two"), t0);
    frame(&mut s, t0).unwrap();
    let clear = json!({"event": "clear", "streamSid": s.stream_sid()}).to_string();
    s.handle_text(&clear, t0 + Duration::from_millis(5));
    let names: Vec<Value> = texts(&mut s)
        .into_iter()
        .map(|m| m["mark"]["name"].clone())
        .collect();
    assert_eq!(names, [json!("one"), json!("two")]);
    let f = frame(&mut s, t0 + FRAME).unwrap();
    assert!(
        f.4.iter().all(|&b| b == 0xff),
        "queued audio dropped at once"
    );
    // A mark after the clear, nothing queued: echoed at once.
    s.handle_text(&bot_mark(&s, "three"), t0 + FRAME);
    assert_eq!(texts(&mut s)[0]["mark"]["name"], "three");
}

#[test]
fn bot_messages_for_another_stream_and_garbage_are_ignored() {
    let t0 = Instant::now();
    let mut s = open_ms(G711::Ulaw, t0);
    let other =
        json!({"event": "media", "streamSid": "MZother", "media": {"payload": b64(&[1u8; 160])}});
    s.handle_text(&other.to_string(), t0);
    for junk in [
        "",
        "not json",
        "[1,2]",
        "42",
        "{\"event\":",
        "{\"event\":\"media\"}",
        "{\"event\":\"media\",\"media\":{\"payload\":7}}",
        "{\"event\":\"mark\",\"mark\":{}}",
        "{\"event\":\"dance\"}",
        "{\"event\":null}",
    ] {
        s.handle_text(junk, t0);
    }
    s.handle_text(
        &json!({"event": "media", "media": {"payload": "!!not base64!!"}}).to_string(),
        t0,
    );
    let f = frame(&mut s, t0).unwrap();
    assert!(f.4.iter().all(|&b| b == 0xff), "nothing was queued");
    assert!(texts(&mut s).is_empty());
    assert!(events(&mut s).is_empty());
    let st = s.stats();
    assert_eq!(st.bad_json, 5);
    assert_eq!(st.bad_base64, 1);
    assert!(st.ignored_messages >= 5);
    // A message without streamSid is tolerated.
    let no_sid = json!({"event": "media", "media": {"payload": b64(&[3u8; 160])}});
    s.handle_text(&no_sid.to_string(), t0);
    assert_eq!(frame(&mut s, t0 + FRAME).unwrap().4, vec![3u8; 160]);
}

#[test]
fn close_queues_stop_then_nothing_more() {
    let t0 = Instant::now();
    let mut s = open_ms(G711::Ulaw, t0);
    s.handle_text(&bot_media(&s, &[1u8; 800]), t0);
    s.handle_text(&bot_mark(&s, "pending"), t0);
    s.close(t0 + FRAME);
    let m = texts(&mut s);
    assert_eq!(m.len(), 1, "no mark echo after stop: {m:?}");
    assert_eq!(m[0]["event"], "stop");
    assert_eq!(m[0]["sequenceNumber"], "2");
    assert_eq!(m[0]["streamSid"], s.stream_sid());
    assert_eq!(
        m[0]["stop"],
        json!({"accountSid": "ACholdfast", "callSid": "hf-abc"})
    );
    assert_eq!(frame(&mut s, t0 + FRAME), None);
    assert_eq!(s.poll_timeout(), None);
    s.handle_rtp(&rtp_packet(PT, 1, 0, &[0u8; 160]), t0 + FRAME);
    s.handle_dtmf('1', t0 + FRAME);
    s.handle_text(&bot_mark(&s, "late"), t0 + FRAME);
    s.close(t0 + FRAME);
    assert!(texts(&mut s).is_empty());
    assert!(events(&mut s).is_empty());
}

#[test]
fn setup_timeout_fails_a_session_that_never_opened() {
    let t0 = Instant::now();
    let mut s = Session::new(&leg(AiKind::MediaStream, G711::Ulaw), t0);
    s.handle_timeout(t0 + Duration::from_secs(4));
    assert!(events(&mut s).is_empty());
    s.handle_timeout(t0 + Duration::from_secs(5));
    assert!(matches!(
        events(&mut s).as_slice(),
        [SessionEvent::Failed { .. }]
    ));
    assert_eq!(s.poll_timeout(), None);
    s.handle_open(t0 + Duration::from_secs(6));
    assert!(texts(&mut s).is_empty(), "too late");
}

// ----- openai-realtime -----

fn open_rt(l: &OpenLeg, t0: Instant) -> (Session, Vec<Value>) {
    let mut s = Session::new(l, t0);
    s.handle_open(t0);
    let m = texts(&mut s);
    (s, m)
}

fn ready_rt(t0: Instant) -> Session {
    let (mut s, _) = open_rt(&leg(AiKind::OpenAiRealtime, G711::Ulaw), t0);
    s.handle_text(r#"{"type":"session.updated","session":{}}"#, t0);
    assert_eq!(events(&mut s), vec![SessionEvent::Ready]);
    s
}

fn delta(item: &str, audio: &[u8]) -> String {
    json!({"type": "response.output_audio.delta", "response_id": "resp_1", "item_id": item,
        "output_index": 0, "content_index": 0, "delta": b64(audio)})
    .to_string()
}

#[test]
fn realtime_session_update_contents() {
    let t0 = Instant::now();
    let mut ws = provider(AiKind::OpenAiRealtime);
    if let Some(r) = ws.realtime.as_mut() {
        r.tools = Some(json!([{"type": "function", "name": "transfer", "parameters": {}}]));
    }
    let (_, m) = open_rt(&leg_with(ws, G711::Ulaw), t0);
    assert_eq!(m.len(), 1, "no transcript, no response.create");
    let su = &m[0];
    assert_eq!(su["type"], "session.update");
    let s = &su["session"];
    assert_eq!(s["type"], "realtime");
    assert_eq!(s["model"], "gpt-realtime");
    assert_eq!(s["instructions"], "Be brief.");
    assert_eq!(s["tools"][0]["name"], "transfer");
    assert_eq!(s["tool_choice"], "auto");
    assert_eq!(
        s["audio"]["input"],
        json!({"format": {"type": "audio/pcmu"}, "turn_detection": {"type": "server_vad"},
            "transcription": {"model": "gpt-4o-transcribe"}})
    );
    assert_eq!(
        s["audio"]["output"],
        json!({"format": {"type": "audio/pcmu"}, "voice": "marin"})
    );
}

#[test]
fn realtime_session_update_omits_unset_fields() {
    let t0 = Instant::now();
    let mut ws = provider(AiKind::OpenAiRealtime);
    ws.realtime = Some(RealtimeSettings::default());
    let (_, m) = open_rt(&leg_with(ws, G711::Ulaw), t0);
    let s = m[0]["session"].as_object().unwrap();
    for key in ["model", "instructions", "tools", "tool_choice"] {
        assert!(!s.contains_key(key), "{key} should be omitted");
    }
    assert_eq!(
        m[0]["session"]["audio"],
        json!({"input": {"format": {"type": "audio/pcmu"}, "turn_detection": {"type": "server_vad"}},
            "output": {"format": {"type": "audio/pcmu"}}})
    );
}

#[test]
fn realtime_replays_the_transcript_after_a_reroute() {
    let t0 = Instant::now();
    let mut l = leg(AiKind::OpenAiRealtime, G711::Ulaw);
    l.reroute = Some(RerouteContext {
        count: 1,
        from: "rt-a".into(),
        trigger: "ws_closed".into(),
    });
    l.transcript = vec![
        TranscriptItem {
            speaker: Speaker::Agent,
            text: "Hello, how can I help?".into(),
        },
        TranscriptItem {
            speaker: Speaker::Caller,
            text: "My order is late.".into(),
        },
    ];
    let (_, m) = open_rt(&l, t0);
    assert_eq!(m.len(), 4);
    assert_eq!(m[0]["type"], "session.update");
    assert_eq!(
        m[1],
        json!({"type": "conversation.item.create", "item": {"type": "message", "role": "assistant",
            "content": [{"type": "output_text", "text": "Hello, how can I help?"}]}})
    );
    assert_eq!(
        m[2],
        json!({"type": "conversation.item.create", "item": {"type": "message", "role": "user",
            "content": [{"type": "input_text", "text": "My order is late."}]}})
    );
    assert_eq!(m[3], json!({"type": "response.create"}));
    // Without respond_after_reroute: the replay only.
    let mut ws = provider(AiKind::OpenAiRealtime);
    if let Some(r) = ws.realtime.as_mut() {
        r.respond_after_reroute = false;
    }
    let mut l2 = l.clone();
    l2.ws = Arc::new(ws);
    let (_, m) = open_rt(&l2, t0);
    assert_eq!(m.len(), 3);
    assert_eq!(m[2]["type"], "conversation.item.create");
}

#[test]
fn realtime_ready_only_on_session_updated() {
    let t0 = Instant::now();
    let (mut s, _) = open_rt(&leg(AiKind::OpenAiRealtime, G711::Ulaw), t0);
    assert!(events(&mut s).is_empty());
    assert!(!s.is_ready());
    assert_eq!(frame(&mut s, t0), None, "no RTP before Ready");
    // Caller audio before Ready is dropped.
    s.handle_rtp(&rtp_packet(PT, 1, 0, &[0x11; 160]), t0);
    s.handle_text(r#"{"type":"session.created","session":{}}"#, t0);
    assert!(events(&mut s).is_empty(), "session.created is not Ready");
    assert!(texts(&mut s).is_empty());
    let t1 = t0 + Duration::from_millis(300);
    s.handle_text(r#"{"type":"session.updated","session":{}}"#, t1);
    assert_eq!(events(&mut s), vec![SessionEvent::Ready]);
    assert_eq!(s.poll_timeout(), Some(t1), "clock starts at Ready");
    s.handle_text(r#"{"type":"session.updated","session":{}}"#, t1);
    assert!(events(&mut s).is_empty(), "Ready once");
    s.handle_rtp(&rtp_packet(PT, 2, 160, &[0x11; 160]), t1);
    let m = texts(&mut s);
    assert_eq!(m.len(), 1);
    assert_eq!(m[0]["type"], "input_audio_buffer.append");
    assert_eq!(unb64(m[0]["audio"].as_str().unwrap()), vec![0x11; 160]);
    // Digits have no Realtime event: nothing sent.
    s.handle_dtmf('5', t1);
    assert!(texts(&mut s).is_empty());
}

#[test]
fn realtime_error_before_ready_fails_setup() {
    let t0 = Instant::now();
    let (mut s, _) = open_rt(&leg(AiKind::OpenAiRealtime, G711::Ulaw), t0);
    s.handle_text(
        r#"{"type":"error","event_id":"ev_1","error":{"type":"invalid_request_error","code":"invalid_value","message":"bad voice","param":"session.audio.output.voice","event_id":null}}"#,
        t0,
    );
    let e = events(&mut s);
    match e.as_slice() {
        [SessionEvent::Failed { why }] => {
            assert!(
                why.contains("invalid_value") && why.contains("bad voice"),
                "{why}"
            )
        }
        other => panic!("{other:?}"),
    }
    s.handle_text(r#"{"type":"session.updated","session":{}}"#, t0);
    assert!(events(&mut s).is_empty(), "failed is terminal");
}

#[test]
fn realtime_error_after_ready_fails_the_leg() {
    let t0 = Instant::now();
    let mut s = ready_rt(t0);
    s.handle_text(&delta("item_1", &[1u8; 800]), t0);
    s.handle_text(
        r#"{"type":"error","event_id":"ev_9","error":{"type":"invalid_request_error","code":"session_expired","message":"Your session hit the maximum duration of 60 minutes."}}"#,
        t0,
    );
    match events(&mut s).as_slice() {
        [SessionEvent::Failed { why }] => assert!(why.contains("session_expired")),
        other => panic!("{other:?}"),
    }
    assert_eq!(frame(&mut s, t0), None, "no more RTP");
    assert_eq!(s.poll_timeout(), None);
}

#[test]
fn realtime_barge_in_truncates_with_the_heard_ms() {
    let t0 = Instant::now();
    let mut s = ready_rt(t0);
    s.handle_text(&delta("item_1", &[1u8; 1600]), t0);
    s.handle_text(&delta("item_1", &[1u8; 1600]), t0);
    for k in 0..5 {
        frame(&mut s, t0 + FRAME * k).unwrap();
    }
    s.handle_text(
        r#"{"type":"input_audio_buffer.speech_started","audio_start_ms":1000,"item_id":"item_u"}"#,
        t0 + FRAME * 5,
    );
    let m = texts(&mut s);
    assert_eq!(m.len(), 1);
    assert_eq!(
        m[0],
        json!({"type": "conversation.item.truncate", "event_id": "hf-truncate-1",
            "item_id": "item_1", "content_index": 0, "audio_end_ms": 100})
    );
    assert!(
        frame(&mut s, t0 + FRAME * 5)
            .unwrap()
            .4
            .iter()
            .all(|&b| b == 0xff),
        "queued audio dropped"
    );
    // Late deltas of the truncated item are dropped.
    s.handle_text(&delta("item_1", &[1u8; 160]), t0 + FRAME * 5);
    assert!(frame(&mut s, t0 + FRAME * 6)
        .unwrap()
        .4
        .iter()
        .all(|&b| b == 0xff));
    // The benign error answering our truncate is only logged.
    s.handle_text(
        r#"{"type":"error","event_id":"ev_2","error":{"type":"invalid_request_error","code":"invalid_value","message":"audio_end_ms too long","event_id":"hf-truncate-1"}}"#,
        t0 + FRAME * 6,
    );
    assert!(events(&mut s).is_empty());
    assert!(s.is_ready());
    // A second speech_started with nothing playing sends nothing.
    s.handle_text(
        r#"{"type":"input_audio_buffer.speech_started"}"#,
        t0 + FRAME * 7,
    );
    assert!(texts(&mut s).is_empty());
}

#[test]
fn realtime_played_ms_restarts_with_a_new_item() {
    let t0 = Instant::now();
    let mut s = ready_rt(t0);
    // item_1: 2 frames, done; item_2: 4 frames queued behind it.
    s.handle_text(&delta("item_1", &[1u8; 320]), t0);
    s.handle_text(
        r#"{"type":"response.output_audio.done","item_id":"item_1"}"#,
        t0,
    );
    s.handle_text(&delta("item_2", &[2u8; 640]), t0);
    for k in 0..3 {
        frame(&mut s, t0 + FRAME * k).unwrap();
    }
    s.handle_text(
        r#"{"type":"input_audio_buffer.speech_started"}"#,
        t0 + FRAME * 3,
    );
    let m = texts(&mut s);
    assert_eq!(m.len(), 1, "item_1 was heard entirely: {m:?}");
    assert_eq!(m[0]["item_id"], "item_2");
    assert_eq!(m[0]["audio_end_ms"], 20);
}

#[test]
fn realtime_truncate_covers_an_item_still_generating() {
    let t0 = Instant::now();
    let mut s = ready_rt(t0);
    s.handle_text(&delta("item_1", &[1u8; 160]), t0);
    frame(&mut s, t0).unwrap();
    // All of it played, but the server is still generating: truncate at what was heard.
    s.handle_text(
        r#"{"type":"input_audio_buffer.speech_started"}"#,
        t0 + FRAME,
    );
    let m = texts(&mut s);
    assert_eq!(m.len(), 1);
    assert_eq!(m[0]["audio_end_ms"], 20);
}

#[test]
fn realtime_transcripts() {
    let t0 = Instant::now();
    let mut s = ready_rt(t0);
    s.handle_text(
        r#"{"type":"response.output_audio_transcript.done","item_id":"i","transcript":"Sure, one moment."}"#,
        t0,
    );
    s.handle_text(
        r#"{"type":"conversation.item.input_audio_transcription.completed","item_id":"u","content_index":0,"transcript":" Where is my order? "}"#,
        t0,
    );
    s.handle_text(
        r#"{"type":"response.output_audio_transcript.done","transcript":"  "}"#,
        t0,
    );
    s.handle_text(
        r#"{"type":"conversation.item.input_audio_transcription.completed"}"#,
        t0,
    );
    assert_eq!(
        events(&mut s),
        vec![
            SessionEvent::Transcript(TranscriptItem {
                speaker: Speaker::Agent,
                text: "Sure, one moment.".into()
            }),
            SessionEvent::Transcript(TranscriptItem {
                speaker: Speaker::Caller,
                text: "Where is my order?".into()
            }),
        ]
    );
}

#[test]
fn realtime_garbage_is_ignored() {
    let t0 = Instant::now();
    let mut s = ready_rt(t0);
    for junk in [
        "",
        "{",
        "null",
        "\"error\"",
        r#"{"type":42}"#,
        r#"{"type":"response.output_audio.delta"}"#,
        r#"{"type":"response.output_audio.delta","item_id":5,"delta":{}}"#,
        r#"{"type":"response.output_audio.delta","item_id":"x","delta":"%%%"}"#,
        r#"{"type":"rate_limits.updated","rate_limits":[]}"#,
        r#"{"type":"something.new"}"#,
        r#"{"type":"input_audio_buffer.speech_started","item_id":[1]}"#,
    ] {
        s.handle_text(junk, t0);
    }
    assert!(events(&mut s).is_empty());
    assert!(texts(&mut s).is_empty());
    assert!(s.is_ready());
    assert_eq!(s.stats().bad_json, 4);
    assert_eq!(s.stats().bad_base64, 1);
    // An error without an error object still fails the leg (it is an error event).
    s.handle_text(r#"{"type":"error"}"#, t0);
    assert!(matches!(
        events(&mut s).as_slice(),
        [SessionEvent::Failed { .. }]
    ));
}

#[test]
fn realtime_close_sends_nothing() {
    let t0 = Instant::now();
    let mut s = ready_rt(t0);
    s.close(t0);
    assert!(texts(&mut s).is_empty());
    assert!(events(&mut s).is_empty());
    assert_eq!(frame(&mut s, t0), None);
}

#[test]
fn realtime_alaw_leg() {
    let t0 = Instant::now();
    let (mut s, _) = open_rt(&leg(AiKind::OpenAiRealtime, G711::Alaw), t0);
    s.handle_text(r#"{"type":"session.updated"}"#, t0);
    s.handle_rtp(&rtp_packet(8, 1, 0, &[0xd5; 160]), t0);
    let m = texts(&mut s);
    assert_eq!(
        unb64(m[0]["audio"].as_str().unwrap()),
        vec![G711::Ulaw.encode(G711::Alaw.decode(0xd5)); 160]
    );
    s.handle_text(&delta("i", &[0xff; 160]), t0);
    let f = frame(&mut s, t0).unwrap();
    assert!(f.0);
    assert!(f.4.iter().all(|&b| b == 0xd5));
}

#[test]
fn provider_audio_queue_is_bounded() {
    let t0 = Instant::now();
    let mut s = open_ms(G711::Ulaw, t0);
    let chunk = vec![1u8; MAX_QUEUED_AUDIO / 2 + 1000];
    s.handle_text(&bot_media(&s, &chunk), t0);
    s.handle_text(&bot_media(&s, &chunk), t0);
    assert_eq!(s.stats().audio_overflow_bytes, 2000);
    s.handle_text(&bot_media(&s, &[1u8; 10]), t0);
    assert_eq!(s.stats().audio_overflow_bytes, 2010);
    // A mark after the cut is still echoed once the (kept) audio has played.
    s.handle_text(&bot_mark(&s, "end"), t0);
    frame(&mut s, t0).unwrap();
    assert!(texts(&mut s).is_empty());
}
