//! The OpenAI Realtime API (GA event shapes), holdfast as the client over WebSocket.
//!
//! Sent:
//! - on open, `session.update` {session:{type:"realtime", model?, instructions?, tools?,
//!   tool_choice:"auto" (with tools), audio:{input:{format:{type:"audio/pcmu"},
//!   turn_detection:{type:"server_vad"}, transcription?:{model}}, output:{format:
//!   {type:"audio/pcmu"}, voice?}}}} (unset settings are omitted);
//! - then the transcript replay after a re-route: one `conversation.item.create` per item
//!   (caller: role "user", content [{type:"input_text"}]; agent: role "assistant", content
//!   [{type:"output_text"}]), and `response.create` when `respond_after_reroute` is set and
//!   the leg is a re-route (or has a transcript);
//! - `input_audio_buffer.append` {audio: base64 μ-law} per caller RTP packet, once `Ready`;
//! - `conversation.item.truncate` {event_id:"hf-truncate-N", item_id, content_index:0,
//!   audio_end_ms} on barge-in, for each assistant item with audio still queued or still
//!   being generated, with the milliseconds of it the caller has heard.
//!
//! Received: `session.updated` (→ Ready, first one only), `error` (→ Failed, except the
//! answer to our own truncate: its `error.event_id` starts with "hf-truncate"; session
//! expiry arrives as an `error` too), `response.output_audio.delta` (→ pacer; deltas of an
//! item we truncated are dropped), `response.output_audio.done` / `response.done` (the
//! item's audio is complete), `input_audio_buffer.speech_started` (barge-in),
//! `response.output_audio_transcript.done` (agent transcript) and
//! `conversation.item.input_audio_transcription.completed` (caller transcript); empty
//! transcripts are skipped. The beta names (`response.audio.delta`, …) are accepted too.
//! Anything else is ignored.
//!
//! DTMF: the Realtime API has no input event for digits, so they are not forwarded.
//!
//! Never: does I/O; panics on the server's JSON.
use std::collections::VecDeque;
use std::time::Instant;

use serde_json::{json, Map, Value};

use super::super::control::{Speaker, TranscriptItem};
use super::{decode_base64, encode_base64, Session, SessionEvent, State};

/// Prefix of the `event_id` of our truncates; an `error` naming one is benign.
pub const TRUNCATE_EVENT_PREFIX: &str = "hf-truncate";

/// How many truncated item ids are remembered to drop their late deltas.
const TRUNCATED_MEMORY: usize = 8;

/// One assistant item's audio on the pushed-audio byte axis (8 bytes = 1 ms).
#[derive(Debug, Clone)]
pub(super) struct ItemAudio {
    id: String,
    start: u64,
    end: u64,
    /// The server finished generating it.
    done: bool,
}

/// Realtime state of a [`Session`].
#[derive(Debug, Clone, Default)]
pub(super) struct Realtime {
    /// Assistant items whose audio is queued or playing, in play order.
    pub(super) items: VecDeque<ItemAudio>,
    /// Truncates sent so far (the N of "hf-truncate-N").
    truncates: u64,
    /// Items we truncated: their in-flight deltas are dropped.
    truncated: VecDeque<String>,
}

impl Session {
    fn rt_session_update(&self) -> Value {
        let settings = self.ws.realtime.clone().unwrap_or_default();
        let mut input = Map::new();
        input.insert("format".into(), json!({"type": "audio/pcmu"}));
        input.insert("turn_detection".into(), json!({"type": "server_vad"}));
        if let Some(model) = &settings.input_transcription {
            input.insert("transcription".into(), json!({ "model": model }));
        }
        let mut output = Map::new();
        output.insert("format".into(), json!({"type": "audio/pcmu"}));
        if let Some(voice) = &settings.voice {
            output.insert("voice".into(), voice.clone().into());
        }
        let mut session = Map::new();
        session.insert("type".into(), "realtime".into());
        if let Some(model) = &settings.model {
            session.insert("model".into(), model.clone().into());
        }
        if let Some(instructions) = &settings.instructions {
            session.insert("instructions".into(), instructions.clone().into());
        }
        if let Some(tools) = &settings.tools {
            session.insert("tools".into(), tools.clone());
            session.insert("tool_choice".into(), "auto".into());
        }
        session.insert(
            "audio".into(),
            json!({"input": Value::Object(input), "output": Value::Object(output)}),
        );
        json!({"type": "session.update", "session": Value::Object(session)})
    }

    pub(super) fn rt_open(&mut self) {
        let update = self.rt_session_update();
        self.queue_json(update);
        let items: Vec<Value> = self
            .transcript
            .iter()
            .map(|item| {
                let (role, kind) = match item.speaker {
                    Speaker::Caller => ("user", "input_text"),
                    Speaker::Agent => ("assistant", "output_text"),
                };
                json!({
                    "type": "conversation.item.create",
                    "item": {
                        "type": "message",
                        "role": role,
                        "content": [{"type": kind, "text": item.text}],
                    },
                })
            })
            .collect();
        for item in items {
            self.queue_json(item);
        }
        let respond = self
            .ws
            .realtime
            .as_ref()
            .is_some_and(|r| r.respond_after_reroute);
        if respond && (self.reroute.is_some() || !self.transcript.is_empty()) {
            self.queue_json(json!({"type": "response.create"}));
        }
    }

    pub(super) fn rt_send_audio(&mut self, ulaw: &[u8]) {
        let msg = json!({"type": "input_audio_buffer.append", "audio": encode_base64(ulaw)});
        self.queue_json(msg);
    }

    /// Audio was released toward the caller: forget items fully heard (keeping the last one
    /// while it may still grow).
    pub(super) fn rt_released(&mut self) {
        while let Some(front) = self.rt.items.front() {
            let heard = front.end <= self.released_bytes;
            if heard && (front.done || self.rt.items.len() > 1) {
                self.rt.items.pop_front();
            } else {
                break;
            }
        }
    }

    fn rt_transcript(&mut self, speaker: Speaker, msg: &Value) {
        let text = msg
            .get("transcript")
            .and_then(Value::as_str)
            .unwrap_or("")
            .trim();
        if !text.is_empty() {
            self.events
                .push_back(SessionEvent::Transcript(TranscriptItem {
                    speaker,
                    text: text.to_owned(),
                }));
        }
    }

    fn rt_audio_delta(&mut self, msg: &Value, now: Instant) {
        if self.state != State::Ready {
            self.stats.ignored_messages += 1;
            return;
        }
        let id = msg.get("item_id").and_then(Value::as_str).unwrap_or("");
        if self.rt.truncated.iter().any(|t| t == id) {
            return;
        }
        let Some(b64) = msg.get("delta").and_then(Value::as_str) else {
            self.stats.ignored_messages += 1;
            return;
        };
        let Some(ulaw) = decode_base64(&mut self.stats, b64) else {
            return;
        };
        let start = self.pushed_bytes;
        self.push_audio(ulaw, now);
        let end = self.pushed_bytes;
        match self.rt.items.back_mut() {
            Some(last) if last.id == id => last.end = end,
            _ => {
                // A new item starts playing after what is queued: the pacer's played-ms
                // count restarts with it (on our byte axis, from `start`).
                self.rt.items.push_back(ItemAudio {
                    id: id.to_owned(),
                    start,
                    end,
                    done: false,
                });
            }
        }
    }

    fn rt_audio_done(&mut self, msg: &Value) {
        let id = msg.get("item_id").and_then(Value::as_str);
        for item in self.rt.items.iter_mut() {
            if id.is_none_or(|id| id == item.id) {
                item.done = true;
            }
        }
        self.rt_released();
    }

    /// The caller started talking: stop the agent's audio and tell the server how much of
    /// each interrupted item was heard, so its context matches what the caller heard.
    fn rt_barge_in(&mut self) {
        let released = self.released_bytes;
        let cut: Vec<(String, u64)> = self
            .rt
            .items
            .iter()
            .filter(|i| i.end > released || !i.done)
            .map(|i| {
                (
                    i.id.clone(),
                    released.min(i.end).saturating_sub(i.start) / 8,
                )
            })
            .collect();
        self.rt.items.clear();
        self.clear_audio();
        for (item_id, audio_end_ms) in cut {
            if item_id.is_empty() {
                continue;
            }
            self.rt.truncates += 1;
            let msg = json!({
                "type": "conversation.item.truncate",
                "event_id": format!("{TRUNCATE_EVENT_PREFIX}-{}", self.rt.truncates),
                "item_id": item_id,
                "content_index": 0,
                "audio_end_ms": audio_end_ms,
            });
            self.queue_json(msg);
            if self.rt.truncated.len() == TRUNCATED_MEMORY {
                self.rt.truncated.pop_front();
            }
            self.rt.truncated.push_back(item_id);
        }
    }

    fn rt_error(&mut self, msg: &Value) {
        let error = msg.get("error");
        let field = |name: &str| {
            error
                .and_then(|e| e.get(name))
                .and_then(Value::as_str)
                .unwrap_or("")
        };
        let code = field("code");
        let message = field("message");
        if field("event_id").starts_with(TRUNCATE_EVENT_PREFIX) {
            // Our truncate raced the item's end (or the audio was shorter than we counted):
            // harmless, the barge-in already happened locally.
            tracing::debug!(call = %self.call, %code, %message, "openai-realtime rejected our truncate");
            return;
        }
        let why = if code.is_empty() {
            format!("openai-realtime error: {message}")
        } else {
            format!("openai-realtime error {code}: {message}")
        };
        self.fail(why);
    }

    pub(super) fn rt_handle(&mut self, msg: &Value, now: Instant) {
        let kind = msg.get("type").and_then(Value::as_str).unwrap_or("");
        match kind {
            "session.updated" => {
                if self.state == State::Opening {
                    self.set_ready(now);
                }
            }
            "error" => self.rt_error(msg),
            "response.output_audio.delta" | "response.audio.delta" => self.rt_audio_delta(msg, now),
            "response.output_audio.done" | "response.audio.done" => self.rt_audio_done(msg),
            "response.done" => self.rt_audio_done(&Value::Null),
            "input_audio_buffer.speech_started" => {
                if self.state == State::Ready {
                    self.rt_barge_in();
                }
            }
            "response.output_audio_transcript.done" | "response.audio_transcript.done" => {
                self.rt_transcript(Speaker::Agent, msg)
            }
            "conversation.item.input_audio_transcription.completed" => {
                self.rt_transcript(Speaker::Caller, msg)
            }
            other => {
                self.stats.ignored_messages += 1;
                tracing::trace!(call = %self.call, event = %other, "openai-realtime event ignored");
            }
        }
    }
}
