//! One WebSocket AI leg's protocol core, sans-IO: the bridge between the relay's RTP and a
//! provider's WebSocket messages (Twilio Media Streams or OpenAI Realtime).
//!
//! STUB: the API the AI shell codes against; the implementation lands next.
use std::time::Instant;

use super::control::{OpenLeg, TranscriptItem};

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

/// See the module docs.
pub struct Session {
    _private: (),
}

impl Session {
    /// A session for `leg`; nothing is queued until [`Session::handle_open`].
    pub fn new(leg: &OpenLeg, now: Instant) -> Session {
        let _ = (leg, now);
        todo!()
    }
    /// The WebSocket handshake completed: queues the opening messages.
    pub fn handle_open(&mut self, now: Instant) {
        let _ = now;
        todo!()
    }
    /// A text frame from the provider.
    pub fn handle_text(&mut self, text: &str, now: Instant) {
        let _ = (text, now);
        todo!()
    }
    /// A datagram from the relay (the caller's RTP, RFC 4733 digits included).
    pub fn handle_rtp(&mut self, packet: &[u8], now: Instant) {
        let _ = (packet, now);
        todo!()
    }
    /// A DTMF digit the caller sent as SIP INFO.
    pub fn handle_dtmf(&mut self, digit: char, now: Instant) {
        let _ = (digit, now);
        todo!()
    }
    /// Advances timers (frame clock, marks).
    pub fn handle_timeout(&mut self, now: Instant) {
        let _ = now;
        todo!()
    }
    /// We end the leg: queues the closing message (media-stream `stop`).
    pub fn close(&mut self, now: Instant) {
        let _ = now;
        todo!()
    }
    /// The next text frame to send.
    pub fn poll_text(&mut self) -> Option<String> {
        todo!()
    }
    /// The next RTP packet toward the relay, written into `out`, when one is due (one per
    /// 20 ms once `Ready`: the provider's audio, silence when it has none).
    pub fn poll_rtp(&mut self, now: Instant, out: &mut [u8]) -> Option<usize> {
        let _ = (now, out);
        todo!()
    }
    pub fn poll_event(&mut self) -> Option<SessionEvent> {
        todo!()
    }
    /// When [`Session::handle_timeout`] / [`Session::poll_rtp`] next have work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        todo!()
    }
}
