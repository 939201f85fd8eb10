//! WebSocket AI providers end to end: a SIPp carrier talks (test-owned RTP, PCMA) through
//! holdfast to WebSocket bots written in the tests — a Twilio-Media-Streams bot and an
//! OpenAI-Realtime-speaking server. Audio goes both ways (transcoded A-law ↔ μ-law, paced
//! in 20 ms frames toward the caller), barge-in clears what is queued, and a bot whose
//! socket drops mid-call is replaced by the next one while the carrier sees nothing: its
//! SIPp scenario fails on any BYE or re-INVITE, and its RTP stays one stream.
mod common;

use common::ws::{b64_decode, FakeRealtime, MediaStreamBot};
use common::*;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);
/// A-law code the caller talks with (a loud sample; 0xd5 would be silence).
const TONE_ALAW: u8 = 0xaa;
/// μ-law code the bots talk with (0xff is μ-law silence).
const TONE_ULAW: u8 = 0x20;
const API_KEY_ENV: &str = "HOLDFAST_TEST_REALTIME_KEY";

fn config(hp: u16, trunk: u16, providers: &[String]) -> TestConfig {
    let mut c = TestConfig::new(hp);
    c.carriers.push(format!(
        "{{ id: carrier-a, uri: \"sip:127.0.0.1:9\", region: us, ping: false, sources: [\"127.0.0.1:{trunk}\"] }}"
    ));
    let ids: Vec<String> = providers
        .iter()
        .map(|p| {
            p.split("id: ")
                .nth(1)
                .and_then(|r| r.split(',').next())
                .unwrap()
                .to_string()
        })
        .collect();
    c.providers.extend(providers.iter().cloned());
    c.inbound
        .push(format!("{{ regions: [us], ai: [{}] }}", ids.join(", ")));
    c.media = format!(
        "ports: \"{}\"\n  timeout: 60s\n  ai_timeout: 1s",
        media_ports(8)
    );
    c
}

/// Packets at the carrier carrying audio (not the bridge's silence frames).
fn voiced(carrier: &RtpEndpoint) -> usize {
    carrier.seen().iter().filter(|p| p.first != 0xd5).count()
}

fn wait_voiced(carrier: &RtpEndpoint, n: usize) -> usize {
    let deadline = std::time::Instant::now() + WAIT;
    while std::time::Instant::now() < deadline {
        if voiced(carrier) >= n {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    voiced(carrier)
}

#[test]
fn media_stream_bot_talks_both_ways_and_a_dropped_socket_moves_the_call_to_the_next_bot() {
    let (hp, trunk) = (free_port(), free_port());
    let bot1 = MediaStreamBot::echo();
    let bot2 = MediaStreamBot::echo();
    let c = config(
        hp,
        trunk,
        &[
            format!(
                "{{ id: bot-a, kind: media-stream, url: \"{}\", region: us, priority: 1, ping: false, custom_parameters: {{ tenant: acme }} }}",
                bot1.url("/stream")
            ),
            format!(
                "{{ id: bot-b, kind: media-stream, url: \"{}\", region: us, priority: 2, ping: false }}",
                bot2.url("/stream")
            ),
        ],
    );
    let carrier = RtpEndpoint::bind();
    let hf = Holdfast::start(&c.yaml(), hp);
    let (uac, call_id, holdfast_a) = carrier_media_call(hp, trunk, &carrier, WAIT);

    let start = bot1
        .wait_message(0, |m| m["event"] == "start", WAIT)
        .unwrap_or_else(|| panic!("bot 1 got no start; logs:\n{}", hf.dump_logs()));
    let params = &start["start"]["customParameters"];
    assert_eq!(params["tenant"], "acme", "{start}");
    assert!(params["holdfast_caller"].as_str().is_some(), "{start}");
    assert_eq!(params["holdfast_callee"], "+15551230000", "{start}");
    assert_eq!(
        start["start"]["mediaFormat"]["encoding"], "audio/x-mulaw",
        "{start}"
    );

    // The caller talks for 8 s; bot 1 echoes, so the caller hears itself through the bot.
    let talking = carrier.talk_with(
        holdfast_a,
        0x1234_5678,
        400,
        Duration::from_millis(20),
        TONE_ALAW,
    );
    assert!(
        wait_voiced(&carrier, 40) >= 40,
        "no audio from bot 1 reached the caller; logs:\n{}",
        hf.dump_logs()
    );
    let heard = bot1.inbound_audio(0);
    assert!(heard.len() >= 160 * 20, "bot 1 heard {} bytes", heard.len());
    let tone = heard[heard.len() - 1];
    assert!(
        heard[heard.len() - 160..].iter().all(|b| *b == tone) && tone != 0xff && tone != 0x7f,
        "the caller's A-law tone reaches the bot as one μ-law code, not silence"
    );

    // Bot 1's connection drops without a close frame: bot 2 takes over.
    let before = voiced(&carrier);
    bot1.drop_connection(0);
    let (_, rerouted) = hf
        .wait_log(WAIT, |l| msg(l) == "AI leg re-routed")
        .unwrap_or_else(|| panic!("no re-route; logs:\n{}", hf.dump_logs()));
    assert_eq!(field(&rerouted, "from"), "bot-a");
    assert_eq!(field(&rerouted, "to"), "bot-b");
    assert_eq!(field(&rerouted, "trigger"), "websocket", "{rerouted}");
    let start2 = bot2
        .wait_message(0, |m| m["event"] == "start", WAIT)
        .expect("bot 2 got start");
    let p2 = &start2["start"]["customParameters"];
    assert_eq!(p2["holdfast_reroute_count"], "1", "{start2}");
    assert_eq!(p2["holdfast_reroute_from"], "bot-a", "{start2}");
    let (_, resumed) = hf
        .wait_log(WAIT, |l| msg(l) == "AI audio resumed after re-route")
        .unwrap_or_else(|| panic!("no audio from bot 2; logs:\n{}", hf.dump_logs()));
    let gap = num(&resumed, "gap_ms").expect("gap_ms");
    println!("websocket drop: gap at the carrier {gap} ms");
    assert!(
        wait_voiced(&carrier, before + 40) >= before + 40,
        "the caller hears bot 2"
    );
    talking.join().unwrap();

    carrier_hang_up(uac, &call_id);
    assert!(
        bot2.wait_message(0, |m| m["event"] == "stop", WAIT)
            .is_some(),
        "bot 2 is told the stream stopped"
    );
    let seen = carrier.seen();
    let (src, _) = assert_one_stream("holdfast → carrier", &seen);
    assert_eq!(src, holdfast_a);
}

#[test]
fn media_stream_marks_come_back_after_playout_and_clear_drops_queued_audio() {
    let (hp, trunk) = (free_port(), free_port());
    let bot = MediaStreamBot::start();
    let c = config(
        hp,
        trunk,
        &[format!(
            "{{ id: bot-a, kind: media-stream, url: \"{}\", region: us, ping: false }}",
            bot.url("/")
        )],
    );
    let carrier = RtpEndpoint::bind();
    let hf = Holdfast::start(&c.yaml(), hp);
    let (uac, call_id, _) = carrier_media_call(hp, trunk, &carrier, WAIT);
    bot.wait_message(0, |m| m["event"] == "start", WAIT)
        .unwrap_or_else(|| panic!("no start; logs:\n{}", hf.dump_logs()));

    // Half a second of speech, then a mark: it comes back once that audio was played.
    bot.send_audio(0, &[TONE_ULAW; 160 * 25]);
    bot.send_mark(0, "greeting-done");
    let mark = bot
        .wait_message(0, |m| m["event"] == "mark", WAIT)
        .expect("the mark comes back");
    assert_eq!(mark["mark"]["name"], "greeting-done");
    let played = voiced(&carrier);
    assert!(
        played >= 20,
        "the mark came back after its audio was played ({played} frames at the carrier)"
    );

    // A minute of speech, a mark behind it, then `clear` (the caller barged in): the mark
    // comes back at once and the caller stops hearing the bot.
    bot.send_audio(0, &[TONE_ULAW; 160 * 3000]);
    bot.send_mark(0, "long-answer-done");
    assert!(wait_voiced(&carrier, played + 10) >= played + 10);
    bot.send_clear(0);
    let echoed = bot
        .wait_message(
            0,
            |m| m["event"] == "mark" && m["mark"]["name"] == "long-answer-done",
            WAIT,
        )
        .expect("clear echoes the pending mark");
    assert_eq!(echoed["mark"]["name"], "long-answer-done");
    let after_clear = voiced(&carrier);
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        voiced(&carrier) <= after_clear + 5,
        "nothing of the cleared answer is played ({} → {})",
        after_clear,
        voiced(&carrier)
    );
    carrier_hang_up(uac, &call_id);
}

#[test]
fn openai_realtime_session_barge_in_and_transcript_replay_after_a_dropped_session() {
    let (hp, trunk) = (free_port(), free_port());
    let key = "sk-holdfast-test";
    let rt1 = FakeRealtime::start(key);
    let rt2 = FakeRealtime::start(key);
    let realtime = "realtime: { instructions: \"You book appointments.\", voice: marin, input_transcription: off }";
    let c = config(
        hp,
        trunk,
        &[
            format!(
                "{{ id: rt-a, kind: openai-realtime, url: \"{}\", api_key_env: {API_KEY_ENV}, region: us, priority: 1, ping: false, {realtime} }}",
                rt1.url("/v1/realtime?model=gpt-realtime")
            ),
            format!(
                "{{ id: rt-b, kind: openai-realtime, url: \"{}\", api_key_env: {API_KEY_ENV}, region: us, priority: 2, ping: false, {realtime} }}",
                rt2.url("/v1/realtime?model=gpt-realtime")
            ),
        ],
    );
    let carrier = RtpEndpoint::bind();
    let hf = Holdfast::start_with_env(&c.yaml(), hp, &[(API_KEY_ENV, key)]);
    let (uac, call_id, holdfast_a) = carrier_media_call(hp, trunk, &carrier, WAIT);

    let update = rt1
        .wait_message(0, |m| m["type"] == "session.update", WAIT)
        .unwrap_or_else(|| panic!("no session.update; logs:\n{}", hf.dump_logs()));
    let session = &update["session"];
    assert_eq!(
        session["audio"]["input"]["format"]["type"], "audio/pcmu",
        "{update}"
    );
    assert_eq!(
        session["audio"]["output"]["format"]["type"], "audio/pcmu",
        "{update}"
    );
    assert_eq!(session["audio"]["output"]["voice"], "marin", "{update}");
    assert_eq!(
        session["instructions"], "You book appointments.",
        "{update}"
    );
    assert_eq!(
        rt1.conn(0).unwrap().header("authorization"),
        Some(format!("Bearer {key}").as_str())
    );

    // The caller's audio arrives as input_audio_buffer.append (μ-law, not silence).
    let talking = carrier.talk_with(
        holdfast_a,
        0x1234_5678,
        400,
        Duration::from_millis(20),
        TONE_ALAW,
    );
    let append = rt1
        .wait_message(0, |m| m["type"] == "input_audio_buffer.append", WAIT)
        .expect("caller audio reaches the session");
    let audio = b64_decode(&append["audio"]).expect("base64 audio");
    assert_eq!(audio.len(), 160);

    // The agent answers: 4 s of audio, of which the caller hears some before barging in.
    rt1.send_input_transcript_completed(0, "item_user_1", "I need to move my appointment.");
    rt1.send_output_transcript_done(0, "item_bot_1", "Sure, to which day?");
    rt1.send_audio_delta(0, "item_bot_1", &[TONE_ULAW; 160 * 200]);
    assert!(
        wait_voiced(&carrier, 15) >= 15,
        "the caller hears the agent"
    );
    rt1.send_speech_started(0, "item_user_2", 1000);
    let truncate = rt1
        .wait_message(0, |m| m["type"] == "conversation.item.truncate", WAIT)
        .expect("barge-in truncates the agent's item");
    assert_eq!(truncate["item_id"], "item_bot_1");
    let played_ms = truncate["audio_end_ms"].as_u64().expect("audio_end_ms");
    assert!(
        (200..4000).contains(&played_ms),
        "audio_end_ms is what was played, not what was queued: {played_ms}"
    );
    let after_clear = voiced(&carrier);
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        voiced(&carrier) <= after_clear + 5,
        "the queued answer is dropped on barge-in"
    );

    // The session drops: rt-b gets the conversation so far and is asked to respond.
    rt1.drop_connection(0);
    let (_, rerouted) = hf
        .wait_log(WAIT, |l| msg(l) == "AI leg re-routed")
        .unwrap_or_else(|| panic!("no re-route; logs:\n{}", hf.dump_logs()));
    assert_eq!(field(&rerouted, "to"), "rt-b");
    assert!(rt2
        .wait_message(0, |m| m["type"] == "response.create", WAIT)
        .is_some());
    let replayed: Vec<String> = rt2
        .messages(0)
        .iter()
        .filter(|m| m["type"] == "conversation.item.create")
        .map(|m| {
            format!(
                "{}: {}",
                m["item"]["role"].as_str().unwrap_or("?"),
                m["item"]["content"][0]["text"].as_str().unwrap_or("?")
            )
        })
        .collect();
    assert_eq!(
        replayed,
        vec![
            "user: I need to move my appointment.".to_string(),
            "assistant: Sure, to which day?".to_string()
        ]
    );
    rt2.send_audio_delta(0, "item_bot_2", &[TONE_ULAW; 160 * 50]);
    let before = voiced(&carrier);
    assert!(
        wait_voiced(&carrier, before + 20) >= before + 20,
        "the caller hears the new session"
    );
    talking.join().unwrap();
    carrier_hang_up(uac, &call_id);
    assert_one_stream("holdfast → carrier", &carrier.seen());
}
