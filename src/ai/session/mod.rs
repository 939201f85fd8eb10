//! One WebSocket AI leg's protocol core, sans-IO: the bridge between the relay's RTP and a
//! provider's WebSocket messages (Twilio Media Streams in [`media_stream`], OpenAI Realtime
//! in [`realtime`]).
//!
//! Does: parses the caller's RTP from the relay ([`rtp`]) and forwards G.711 audio as μ-law
//! (A-law legs are transcoded) and RFC 4733 digits (once per event); takes the provider's
//! μ-law audio into an [`audio::Pacer`](super::audio::Pacer) and emits exactly one RTP packet
//! per 20 ms on a continuous clock once ready (silence while the provider is quiet, so the
//! relay's media timeout only fires when the bridge is really gone); barge-in (media-stream
//! `clear`, realtime `speech_started`); marks and truncation by what the caller has heard.
//!
//! Never: touches a socket or a clock (every input carries `now`), draws random numbers (the
//! stream ids, SSRC, sequence number and timestamp come from `OpenLeg::seed`), or panics on
//! what the relay or the provider sends (malformed RTP, JSON, base64 are counted in
//! [`SessionStats`] and dropped).
//!
//! LIFECYCLE
//! - `New`: created; nothing queued. `handle_open` (the WebSocket handshake finished) queues
//!   the opening messages: media-stream goes to `Ready` at once (`connected`, `start`);
//!   openai-realtime (`session.update`, the transcript replay) goes to `Opening`.
//! - `Opening` (openai-realtime): `session.updated` → `Ready`; `error` or the setup timeout
//!   → `Failed`.
//! - `Ready`: audio flows both ways, the frame clock runs. An `error` event (not one that
//!   answers our own truncate) → `Failed`; `close` → `Closed`.
//! - `Failed` / `Closed`: terminal. Already queued text may still be polled (`stop`);
//!   nothing new is queued and no RTP is emitted.
//!
//! The setup timeout (`OpenLeg::setup_timeout` from `new`) is also a timer here: a session
//! that is not `Ready` by then reports `Failed`.
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::audio::Pacer;
use super::control::{AiKind, OpenLeg, RerouteContext, TranscriptItem, WsProvider};
use crate::media::codec::{FRAME, FRAME_SAMPLES, G711};
use crate::media::rtp::{RtpPacket, TelephoneEvent};

pub mod media_stream;
pub mod realtime;
pub mod rtp;

/// What the session tells the shell (besides text frames and RTP packets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEvent {
    /// Setup finished: media-stream at once after the handshake; openai-realtime on
    /// `session.updated`. Report `AiEvent::Up`.
    Ready,
    /// The provider failed (an `error` event, session expiry, a protocol violation). Before
    /// `Ready` it is a setup failure, after it a mid-call failure. The shell closes the socket.
    Failed { why: String },
    /// A finished utterance for the call's transcript.
    Transcript(TranscriptItem),
}

/// Counters of what the session dropped or did, for logs and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionStats {
    /// Datagrams that were not valid RTP (RFC 3550 §5.1).
    pub rtp_malformed: u64,
    /// Valid RTP with a payload type that is neither the leg's audio nor its telephone-event
    /// (CN, RTCP on the wrong port…), or audio that arrived while it could not be forwarded.
    pub rtp_ignored: u64,
    /// Caller audio packets forwarded to the provider.
    pub audio_sent: u64,
    /// DTMF digits reported (RFC 4733 and SIP INFO).
    pub dtmf_digits: u64,
    /// Provider text frames that were not a JSON object.
    pub bad_json: u64,
    /// Provider audio whose base64 did not decode.
    pub bad_base64: u64,
    /// Provider audio bytes dropped because [`MAX_QUEUED_AUDIO`] was already queued.
    pub audio_overflow_bytes: u64,
    /// Provider messages of an unknown type (or for another stream).
    pub ignored_messages: u64,
    /// RTP packets emitted toward the relay (speech and silence).
    pub frames_sent: u64,
    /// Frame slots skipped because `poll_rtp` was called too late (no bursts).
    pub frames_skipped: u64,
}

/// How late `poll_rtp` may be before the clock skips ahead instead of catching up with a
/// burst of packets (the same bound as the pacer's).
const MAX_LAG: Duration = Duration::from_millis(60);

/// The most provider audio queued toward the caller (5 minutes of 8 kHz G.711): a bot that
/// sends far faster than real time must not grow the queue without bound.
pub const MAX_QUEUED_AUDIO: usize = 8000 * 300;

/// Size of one emitted RTP packet: header + one 20 ms G.711 frame.
pub const RTP_PACKET_LEN: usize = rtp::HEADER_LEN + FRAME_SAMPLES;

/// How many recent RFC 4733 event timestamps are remembered for de-duplication.
const DTMF_MEMORY: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    New,
    Opening,
    Ready,
    Failed,
    Closed,
}

/// The RTP stream toward the relay (RFC 3550 §5.1 fields, seeded).
#[derive(Debug, Clone)]
struct FrameClock {
    /// When the next frame is due; `None` until `Ready`.
    next: Option<Instant>,
    sequence_number: u16,
    timestamp: u32,
    ssrc: u32,
    /// Whether the last frame carried provider audio (for the marker bit, RFC 3551 §4.1).
    talking: bool,
}

/// See the module docs.
pub struct Session {
    kind: AiKind,
    law: G711,
    payload_type: u8,
    dtmf_payload_type: Option<u8>,
    call: String,
    provider: String,
    caller: String,
    callee: String,
    reroute: Option<RerouteContext>,
    ws: Arc<WsProvider>,
    transcript: Vec<TranscriptItem>,

    state: State,
    setup_deadline: Option<Instant>,
    /// When `handle_open` ran (media-stream timestamps count from here).
    opened_at: Option<Instant>,
    texts: VecDeque<String>,
    events: VecDeque<SessionEvent>,
    stats: SessionStats,

    /// Recent RFC 4733 event timestamps already reported.
    dtmf_seen: VecDeque<u32>,

    /// Provider audio toward the caller, in the leg's law.
    pacer: Pacer,
    /// Bytes ever queued into the pacer / released (or dropped by a clear) from it: marks
    /// and truncation positions are expressed on this byte axis (8 bytes = 1 ms).
    pushed_bytes: u64,
    released_bytes: u64,
    clock: FrameClock,

    ms: media_stream::MediaStream,
    rt: realtime::Realtime,
}

impl Session {
    /// A session for `leg`; nothing is queued until [`Session::handle_open`].
    pub fn new(leg: &OpenLeg, now: Instant) -> Session {
        let mut seed = leg.seed;
        let ids = [
            rtp::splitmix64(&mut seed),
            rtp::splitmix64(&mut seed),
            rtp::splitmix64(&mut seed),
        ];
        Session {
            kind: leg.ws.kind,
            law: leg.law,
            payload_type: leg.payload_type,
            dtmf_payload_type: leg.dtmf_payload_type,
            call: leg.call.clone(),
            provider: leg.provider.clone(),
            caller: leg.caller.clone(),
            callee: leg.callee.clone(),
            reroute: leg.reroute.clone(),
            ws: leg.ws.clone(),
            transcript: leg.transcript.clone(),
            state: State::New,
            setup_deadline: now.checked_add(leg.setup_timeout),
            opened_at: None,
            texts: VecDeque::new(),
            events: VecDeque::new(),
            stats: SessionStats::default(),
            dtmf_seen: VecDeque::with_capacity(DTMF_MEMORY),
            pacer: Pacer::new(leg.law),
            pushed_bytes: 0,
            released_bytes: 0,
            clock: FrameClock {
                next: None,
                sequence_number: ids[2] as u16,
                timestamp: (ids[2] >> 32) as u32,
                ssrc: (ids[2] >> 16) as u32,
                talking: false,
            },
            ms: media_stream::MediaStream::new(format!("MZ{:016x}{:016x}", ids[0], ids[1])),
            rt: realtime::Realtime::default(),
        }
    }

    /// The WebSocket handshake completed: queues the opening messages.
    pub fn handle_open(&mut self, now: Instant) {
        if self.state != State::New {
            return;
        }
        self.opened_at = Some(now);
        match self.kind {
            AiKind::MediaStream => {
                self.ms_open();
                self.set_ready(now);
            }
            AiKind::OpenAiRealtime => {
                self.rt_open();
                self.state = State::Opening;
            }
        }
    }

    /// A text frame from the provider.
    pub fn handle_text(&mut self, text: &str, now: Instant) {
        if !matches!(self.state, State::Opening | State::Ready) {
            return;
        }
        let msg = match serde_json::from_str::<serde_json::Value>(text) {
            Ok(v) if v.is_object() => v,
            _ => {
                self.stats.bad_json += 1;
                tracing::debug!(call = %self.call, "provider sent a text frame that is not a JSON object");
                return;
            }
        };
        match self.kind {
            AiKind::MediaStream => self.ms_handle(&msg, now),
            AiKind::OpenAiRealtime => self.rt_handle(&msg, now),
        }
    }

    /// A datagram from the relay (the caller's RTP, RFC 4733 digits included).
    pub fn handle_rtp(&mut self, packet: &[u8], now: Instant) {
        let p = match RtpPacket::new_checked(packet) {
            Ok(p) => p,
            Err(e) => {
                self.stats.rtp_malformed += 1;
                tracing::trace!(call = %self.call, error = %e, "malformed RTP from the relay");
                return;
            }
        };
        if self.state != State::Ready {
            self.stats.rtp_ignored += 1;
            return;
        }
        if p.payload_type() == self.payload_type {
            if p.payload().is_empty() {
                self.stats.rtp_ignored += 1;
                return;
            }
            // Providers take μ-law only (media-stream `audio/x-mulaw`, realtime `audio/pcmu`).
            let mut ulaw = p.payload().to_vec();
            self.law.transcode(G711::Ulaw, &mut ulaw);
            self.stats.audio_sent += 1;
            match self.kind {
                AiKind::MediaStream => self.ms_send_audio(&ulaw, now),
                AiKind::OpenAiRealtime => self.rt_send_audio(&ulaw),
            }
        } else if Some(p.payload_type()) == self.dtmf_payload_type {
            let Ok(event) = TelephoneEvent::parse(p.payload()) else {
                self.stats.rtp_ignored += 1;
                return;
            };
            // RFC 4733 §2.5.1: every packet of one event (updates, the E bit and its
            // retransmissions) carries the event's start timestamp, so it identifies the
            // event; report the first packet seen of each.
            if self.dtmf_seen.contains(&p.timestamp()) {
                return;
            }
            if self.dtmf_seen.len() == DTMF_MEMORY {
                self.dtmf_seen.pop_front();
            }
            self.dtmf_seen.push_back(p.timestamp());
            match event.dtmf_char() {
                Some(digit) => self.send_digit(digit, now),
                None => self.stats.rtp_ignored += 1,
            }
        } else {
            self.stats.rtp_ignored += 1;
        }
    }

    /// A DTMF digit the caller sent as SIP INFO.
    pub fn handle_dtmf(&mut self, digit: char, now: Instant) {
        if self.state != State::Ready {
            return;
        }
        if let Some(digit) = rtp::normalize_digit(digit) {
            self.send_digit(digit, now);
        }
    }

    /// Advances timers (the setup timeout; frames are emitted by [`Session::poll_rtp`]).
    pub fn handle_timeout(&mut self, now: Instant) {
        if matches!(self.state, State::New | State::Opening)
            && self.setup_deadline.is_some_and(|d| now >= d)
        {
            self.fail("setup timed out".into());
        }
    }

    /// We end the leg: queues the closing message (media-stream `stop`).
    pub fn close(&mut self, now: Instant) {
        let _ = now;
        if matches!(self.state, State::Closed | State::Failed) {
            return;
        }
        // A media-stream `stop` only makes sense once the stream was started.
        if self.kind == AiKind::MediaStream && self.state == State::Ready {
            self.ms_close();
        }
        self.state = State::Closed;
        self.stop_media();
    }

    /// The next text frame to send.
    pub fn poll_text(&mut self) -> Option<String> {
        self.texts.pop_front()
    }

    /// The next RTP packet toward the relay, written into `out` (at least
    /// [`RTP_PACKET_LEN`] bytes), when one is due: one per 20 ms once `Ready`, the provider's
    /// audio or silence when it has none. Call it until it returns `None`.
    pub fn poll_rtp(&mut self, now: Instant, out: &mut [u8]) -> Option<usize> {
        if self.state != State::Ready || out.len() < RTP_PACKET_LEN {
            return None;
        }
        let mut due = self.clock.next?;
        if now < due {
            return None;
        }
        let late = now.duration_since(due);
        if late > MAX_LAG {
            // A stalled shell: skip the missed slots rather than burst them at the relay.
            // The timestamp still advances by the elapsed time (RFC 3550 §5.1: it tracks the
            // sampling clock), the sequence number does not (nothing was sent).
            let skipped = (late.as_nanos() / FRAME.as_nanos()) as u32;
            due += FRAME * skipped;
            self.clock.timestamp = self
                .clock
                .timestamp
                .wrapping_add(skipped.wrapping_mul(FRAME_SAMPLES as u32));
            self.stats.frames_skipped += u64::from(skipped);
        }
        let audio = self
            .pacer
            .pull_frame(&mut out[rtp::HEADER_LEN..RTP_PACKET_LEN]);
        let talking = audio > 0;
        // RFC 3551 §4.1: the marker bit flags the first packet of a talkspurt.
        let marker = talking && !self.clock.talking;
        self.clock.talking = talking;
        rtp::write_header(
            out,
            marker,
            self.payload_type,
            self.clock.sequence_number,
            self.clock.timestamp,
            self.clock.ssrc,
        );
        self.clock.sequence_number = self.clock.sequence_number.wrapping_add(1);
        self.clock.timestamp = self.clock.timestamp.wrapping_add(FRAME_SAMPLES as u32);
        self.clock.next = Some(due + FRAME);
        self.stats.frames_sent += 1;
        if audio > 0 {
            self.released_bytes += audio as u64;
            self.on_released();
        }
        Some(RTP_PACKET_LEN)
    }

    pub fn poll_event(&mut self) -> Option<SessionEvent> {
        self.events.pop_front()
    }

    /// When [`Session::handle_timeout`] / [`Session::poll_rtp`] next have work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::New | State::Opening => self.setup_deadline,
            State::Ready => self.clock.next,
            State::Failed | State::Closed => None,
        }
    }

    /// Whether setup finished and the leg is neither failed nor closed.
    pub fn is_ready(&self) -> bool {
        self.state == State::Ready
    }

    /// The media-stream `streamSid` (derived from the seed; also set on realtime sessions,
    /// where it is unused).
    pub fn stream_sid(&self) -> &str {
        &self.ms.stream_sid
    }

    /// The SSRC of the RTP stream toward the relay.
    pub fn ssrc(&self) -> u32 {
        self.clock.ssrc
    }

    pub fn stats(&self) -> SessionStats {
        self.stats
    }

    // ----- shared helpers for the protocol submodules -----

    fn queue_json(&mut self, v: serde_json::Value) {
        self.texts.push_back(v.to_string());
    }

    fn set_ready(&mut self, now: Instant) {
        self.state = State::Ready;
        self.setup_deadline = None;
        self.clock.next = Some(now);
        self.events.push_back(SessionEvent::Ready);
    }

    fn fail(&mut self, why: String) {
        if matches!(self.state, State::Failed | State::Closed) {
            return;
        }
        tracing::debug!(call = %self.call, %why, "AI session failed");
        self.state = State::Failed;
        self.stop_media();
        self.events.push_back(SessionEvent::Failed { why });
    }

    /// Terminal: drops queued audio and pending marks without answering them.
    fn stop_media(&mut self) {
        self.pacer.clear();
        self.released_bytes = self.pushed_bytes;
        self.ms.marks.clear();
        self.rt.items.clear();
        self.clock.next = None;
    }

    /// Queues provider μ-law audio toward the caller (transcoded to the leg's law).
    fn push_audio(&mut self, mut ulaw: Vec<u8>, now: Instant) {
        if ulaw.is_empty() {
            return;
        }
        let room = MAX_QUEUED_AUDIO.saturating_sub(self.pacer.queued());
        if ulaw.len() > room {
            self.stats.audio_overflow_bytes += (ulaw.len() - room) as u64;
            ulaw.truncate(room);
            if ulaw.is_empty() {
                return;
            }
        }
        G711::Ulaw.transcode(self.law, &mut ulaw);
        self.pacer.push(&ulaw, now);
        self.pushed_bytes += ulaw.len() as u64;
    }

    /// Barge-in: drops the queued audio; everything pushed counts as released.
    fn clear_audio(&mut self) {
        self.pacer.clear();
        self.released_bytes = self.pushed_bytes;
        self.on_released();
    }

    fn on_released(&mut self) {
        match self.kind {
            AiKind::MediaStream => self.ms_released(),
            AiKind::OpenAiRealtime => self.rt_released(),
        }
    }

    fn send_digit(&mut self, digit: char, now: Instant) {
        self.stats.dtmf_digits += 1;
        match self.kind {
            AiKind::MediaStream => self.ms_send_dtmf(digit, now),
            // The Realtime API has no DTMF input event; digits are dropped (a tool could
            // carry them, but the model would not expect it).
            AiKind::OpenAiRealtime => {
                tracing::debug!(call = %self.call, %digit, "DTMF not forwarded to openai-realtime");
            }
        }
    }
}

/// Decodes provider base64 audio; `None` (counted) when it does not decode.
fn decode_base64(stats: &mut SessionStats, b64: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    match base64::engine::general_purpose::STANDARD.decode(b64) {
        Ok(v) => Some(v),
        Err(_) => {
            stats.bad_base64 += 1;
            None
        }
    }
}

fn encode_base64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests;
