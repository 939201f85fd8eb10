//! The Twilio Media Streams protocol (bidirectional stream), holdfast playing Twilio's part:
//! the messages we send and the bot's messages we accept.
//!
//! Sent (every message but `connected` carries `sequenceNumber`, a decimal string counting
//! from "1" over all the messages we send, and `streamSid`):
//! - `connected` {"event":"connected","protocol":"Call","version":"1.0.0"}
//! - `start` {start:{accountSid, streamSid, callSid, tracks:["inbound"], customParameters,
//!   mediaFormat:{encoding:"audio/x-mulaw",sampleRate:8000,channels:1}}}
//! - `media` {media:{track:"inbound", chunk:"1,2,…", timestamp:"ms since the stream started",
//!   payload: base64 μ-law}}, one per RTP packet of the caller
//! - `dtmf` {dtmf:{track:"inbound_track", digit}}
//! - `mark` {mark:{name}}: the bot's mark, echoed once the audio queued before it was played
//!   toward the caller (released as the frame carrying its last byte), or cleared
//! - `stop` {stop:{accountSid, callSid}} when we end the leg
//!
//! Accepted from the bot: `media` {media:{payload}} (μ-law, any length: paced here), `mark`
//! {mark:{name}}, `clear` (barge-in: queued audio dropped, pending marks echoed at once).
//! A message whose `streamSid` names another stream is ignored; a missing `streamSid` is
//! tolerated. Unknown events are ignored.
//!
//! `customParameters` carries the provider's configured parameters plus holdfast's context
//! under the `holdfast_` keys below (holdfast's win over configured keys of the same name).
//!
//! Never: does I/O; panics on the bot's JSON.
use std::collections::VecDeque;
use std::time::Instant;

use serde_json::{json, Map, Value};

use super::{decode_base64, encode_base64, Session, State};

/// The `accountSid` holdfast presents (there is no Twilio account).
pub const ACCOUNT_SID: &str = "ACholdfast";
/// `customParameters` key: the caller's number (the carrier leg's From user).
pub const PARAM_CALLER: &str = "holdfast_caller";
/// `customParameters` key: the called number.
pub const PARAM_CALLEE: &str = "holdfast_callee";
/// `customParameters` key: the provider's config id.
pub const PARAM_PROVIDER: &str = "holdfast_provider";
/// `customParameters` key, on a re-routed leg: how many times the call was re-routed.
pub const PARAM_REROUTE_COUNT: &str = "holdfast_reroute_count";
/// `customParameters` key, on a re-routed leg: the provider that failed.
pub const PARAM_REROUTE_FROM: &str = "holdfast_reroute_from";
/// `customParameters` key, on a re-routed leg: what triggered the re-route.
pub const PARAM_REROUTE_TRIGGER: &str = "holdfast_reroute_trigger";

/// Media-stream state of a [`Session`].
#[derive(Debug, Clone)]
pub(super) struct MediaStream {
    pub(super) stream_sid: String,
    /// The last `sequenceNumber` sent.
    sequence_number: u64,
    /// The last `media.chunk` sent.
    chunk: u64,
    /// Pending bot marks: (byte position on the pushed-audio axis, name), in order.
    pub(super) marks: VecDeque<(u64, String)>,
}

impl MediaStream {
    pub(super) fn new(stream_sid: String) -> MediaStream {
        MediaStream {
            stream_sid,
            sequence_number: 0,
            chunk: 0,
            marks: VecDeque::new(),
        }
    }
}

impl Session {
    fn ms_next_sequence(&mut self) -> String {
        self.ms.sequence_number += 1;
        self.ms.sequence_number.to_string()
    }

    fn ms_custom_parameters(&self) -> Map<String, Value> {
        let mut p = Map::new();
        for (k, v) in &self.ws.custom_parameters {
            p.insert(k.clone(), Value::String(v.clone()));
        }
        p.insert(PARAM_CALLER.into(), self.caller.clone().into());
        p.insert(PARAM_CALLEE.into(), self.callee.clone().into());
        p.insert(PARAM_PROVIDER.into(), self.provider.clone().into());
        if let Some(r) = &self.reroute {
            p.insert(PARAM_REROUTE_COUNT.into(), r.count.to_string().into());
            p.insert(PARAM_REROUTE_FROM.into(), r.from.clone().into());
            p.insert(PARAM_REROUTE_TRIGGER.into(), r.trigger.clone().into());
        }
        p
    }

    pub(super) fn ms_open(&mut self) {
        self.queue_json(json!({"event": "connected", "protocol": "Call", "version": "1.0.0"}));
        let sequence = self.ms_next_sequence();
        let start = json!({
            "event": "start",
            "sequenceNumber": sequence,
            "start": {
                "accountSid": ACCOUNT_SID,
                "streamSid": self.ms.stream_sid,
                "callSid": self.call,
                "tracks": ["inbound"],
                "customParameters": self.ms_custom_parameters(),
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            },
            "streamSid": self.ms.stream_sid,
        });
        self.queue_json(start);
    }

    pub(super) fn ms_send_audio(&mut self, ulaw: &[u8], now: Instant) {
        let sequence = self.ms_next_sequence();
        self.ms.chunk += 1;
        let ms = self
            .opened_at
            .map_or(0, |t| now.saturating_duration_since(t).as_millis());
        let msg = json!({
            "event": "media",
            "sequenceNumber": sequence,
            "media": {
                "track": "inbound",
                "chunk": self.ms.chunk.to_string(),
                "timestamp": ms.to_string(),
                "payload": encode_base64(ulaw),
            },
            "streamSid": self.ms.stream_sid,
        });
        self.queue_json(msg);
    }

    pub(super) fn ms_send_dtmf(&mut self, digit: char, _now: Instant) {
        let sequence = self.ms_next_sequence();
        let msg = json!({
            "event": "dtmf",
            "streamSid": self.ms.stream_sid,
            "sequenceNumber": sequence,
            "dtmf": {"track": "inbound_track", "digit": digit.to_string()},
        });
        self.queue_json(msg);
    }

    fn ms_send_mark(&mut self, name: String) {
        let sequence = self.ms_next_sequence();
        let msg = json!({
            "event": "mark",
            "sequenceNumber": sequence,
            "streamSid": self.ms.stream_sid,
            "mark": {"name": name},
        });
        self.queue_json(msg);
    }

    pub(super) fn ms_close(&mut self) {
        let sequence = self.ms_next_sequence();
        let msg = json!({
            "event": "stop",
            "sequenceNumber": sequence,
            "streamSid": self.ms.stream_sid,
            "stop": {"accountSid": ACCOUNT_SID, "callSid": self.call},
        });
        self.queue_json(msg);
    }

    /// Audio was released toward the caller (or cleared): echo the marks it reached.
    pub(super) fn ms_released(&mut self) {
        if self.state != State::Ready {
            return;
        }
        while let Some((at, _)) = self.ms.marks.front() {
            if *at > self.released_bytes {
                break;
            }
            if let Some((_, name)) = self.ms.marks.pop_front() {
                self.ms_send_mark(name);
            }
        }
    }

    pub(super) fn ms_handle(&mut self, msg: &Value, now: Instant) {
        let event = msg.get("event").and_then(Value::as_str).unwrap_or("");
        if let Some(sid) = msg.get("streamSid") {
            if sid.as_str() != Some(self.ms.stream_sid.as_str()) {
                self.stats.ignored_messages += 1;
                tracing::debug!(call = %self.call, %event, "bot message for another streamSid ignored");
                return;
            }
        }
        match event {
            "media" => {
                let Some(b64) = msg.pointer("/media/payload").and_then(Value::as_str) else {
                    self.stats.ignored_messages += 1;
                    return;
                };
                if let Some(ulaw) = decode_base64(&mut self.stats, b64) {
                    self.push_audio(ulaw, now);
                }
            }
            "mark" => {
                let Some(name) = msg.pointer("/mark/name").and_then(Value::as_str) else {
                    self.stats.ignored_messages += 1;
                    return;
                };
                if self.pushed_bytes == self.released_bytes {
                    // Nothing queued before it: it has been "played" already.
                    self.ms_send_mark(name.to_owned());
                } else {
                    self.ms
                        .marks
                        .push_back((self.pushed_bytes, name.to_owned()));
                }
            }
            // Barge-in: the bot wants its queued audio gone; Twilio answers every pending
            // mark when it clears.
            "clear" => self.clear_audio(),
            other => {
                self.stats.ignored_messages += 1;
                tracing::debug!(call = %self.call, event = %other, "unknown media-stream event ignored");
            }
        }
    }
}
