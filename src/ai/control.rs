//! The messages between the call core (which decides) and the AI-leg shell (which speaks
//! WebSocket to providers).
//!
//! A WebSocket AI leg is bridged to the call's relay through a local RTP endpoint: the relay's
//! AI side sends the caller's audio to the bridge's UDP socket and receives the provider's
//! audio, paced in 20 ms frames, from it. So the relay, its latching and its source switch on
//! a re-route work the same for SIP and WebSocket providers.
//!
//! The core emits [`AiCommand`]s as `Output::Ai` (`Core::poll_output`); the runtime's AI engine opens the
//! WebSocket, binds the bridge socket, drives one sans-IO [`Session`](super::session::Session)
//! per leg and reports [`AiEvent`]s through `Core::handle_ai_event`. Plain data: nothing here
//! touches a socket or a clock.
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::media::codec::G711;

/// One WebSocket AI leg (unique for the life of the process; a re-route opens a new one).
pub type AiLegId = u64;

/// Which protocol a WebSocket provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AiKind {
    /// The Twilio Media Streams message format (bidirectional stream).
    MediaStream,
    /// An OpenAI Realtime session (holdfast is the client).
    OpenAiRealtime,
}

impl AiKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AiKind::MediaStream => "media-stream",
            AiKind::OpenAiRealtime => "openai-realtime",
        }
    }
}

/// A secret from the environment (an API key). Never printed.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// OpenAI Realtime session settings (`ai_providers[].realtime` in the config).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RealtimeSettings {
    /// `Authorization: Bearer` on the handshake; read from the environment variable the
    /// config names (`api_key_env`), never from the YAML.
    pub api_key: Secret,
    /// `session.model` when set (the URL's `?model=` otherwise).
    pub model: Option<String>,
    pub instructions: Option<String>,
    pub voice: Option<String>,
    /// The `tools` array of `session.update`, as configured (JSON).
    pub tools: Option<serde_json::Value>,
    /// The input transcription model (`audio.input.transcription.model`); the caller's
    /// words are needed for the transcript replayed into a new session after a re-route.
    pub input_transcription: Option<String>,
    /// Whether a session that replaced a failed one gets `response.create` after the
    /// replay, so the agent speaks first instead of waiting for the caller.
    pub respond_after_reroute: bool,
}

/// How to reach a WebSocket provider and what to tell it; from the config, shared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsProvider {
    pub kind: AiKind,
    /// `ws://` or `wss://` URL (path and query included).
    pub url: String,
    /// Extra handshake headers.
    pub headers: Vec<(String, String)>,
    /// `start.customParameters` (media-stream).
    pub custom_parameters: Vec<(String, String)>,
    /// Set for `openai-realtime`.
    pub realtime: Option<RealtimeSettings>,
    /// Connect + handshake (+ `session.updated`) within this, or the attempt fails and the
    /// next provider is tried.
    pub setup_timeout: Duration,
}

/// Who said a transcript line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Speaker {
    /// The caller (the provider's "user").
    Caller,
    /// The AI agent (the provider's "assistant").
    Agent,
}

/// One finished utterance of the conversation, kept on the call so a provider that takes
/// over can be told what was said.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TranscriptItem {
    pub speaker: Speaker,
    pub text: String,
}

/// Why this leg replaces an earlier one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RerouteContext {
    /// How many times the call has been re-routed (1 for the first re-route).
    pub count: usize,
    /// The provider that failed.
    pub from: String,
    /// The trigger (`bye`, `reinvite`, `media_timeout`, `ws_closed`…).
    pub trigger: String,
}

/// Everything the shell needs to open one WebSocket AI leg.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenLeg {
    pub leg: AiLegId,
    /// holdfast's call id (`hf-…`), also the `callSid` the bot sees.
    pub call: String,
    /// The provider's config id.
    pub provider: String,
    /// The resolved address to connect to (the URL's host names the TLS/Host identity).
    pub dest: SocketAddr,
    pub ws: Arc<WsProvider>,
    /// The codec of the caller's leg, which the bridge sends and receives.
    pub law: G711,
    pub payload_type: u8,
    /// RFC 4733 telephone-event payload type on the caller's leg, if negotiated.
    pub dtmf_payload_type: Option<u8>,
    /// The relay's AI-side RTP address: the bridge sends here and accepts packets only
    /// from here.
    pub relay: SocketAddr,
    /// Where the bridge's UDP socket binds (port chosen by the OS).
    pub bind: IpAddr,
    /// The carrier leg's numbers.
    pub caller: String,
    pub callee: String,
    pub reroute: Option<RerouteContext>,
    /// The conversation so far (replayed into `openai-realtime` sessions).
    pub transcript: Vec<TranscriptItem>,
    /// Connect + handshake (+ `session.updated` for `openai-realtime`) must finish by then.
    pub setup_timeout: Duration,
    /// Seeds stream ids, SSRC, sequence numbers and timestamps.
    pub seed: u64,
}

/// What the core asks the AI shell to do.
#[derive(Debug, Clone, PartialEq)]
pub enum AiCommand {
    /// Connect, bridge, and report [`AiEvent::Up`] or [`AiEvent::Failed`].
    Open(Box<OpenLeg>),
    /// End the leg (the call ended, or it was re-routed away): media-stream sends `stop`,
    /// then the WebSocket is closed normally. No event follows.
    Close { leg: AiLegId, why: String },
    /// A DTMF digit the caller sent as SIP INFO (RFC 4733 digits reach the bridge as RTP).
    Dtmf { leg: AiLegId, digit: char },
    /// A liveness check of a leg whose provider went silent: a WebSocket ping, answered
    /// with [`AiEvent::Check`] (a pong within `timeout`, or not).
    Check { leg: AiLegId, timeout: Duration },
    /// A handshake health probe: connect and complete the handshake (and for
    /// `openai-realtime`, receive `session.created`), then close. Reported as
    /// [`AiEvent::Probe`].
    Probe {
        probe: u64,
        provider: String,
        dest: SocketAddr,
        ws: Arc<WsProvider>,
        timeout: Duration,
    },
}

/// What the AI shell reports.
#[derive(Debug, Clone, PartialEq)]
pub enum AiEvent {
    /// The leg is set up; the bridge's RTP socket is `media` (what the relay's AI side
    /// latches to).
    Up { leg: AiLegId, media: SocketAddr },
    /// The leg could not be set up: connect refused, handshake refused (`status` is the HTTP
    /// status), the provider's `error` during setup, or the setup timeout.
    Failed {
        leg: AiLegId,
        status: Option<u16>,
        why: String,
    },
    /// A leg that was up ended without the core asking. `failure` is false when the
    /// provider hung up normally (media-stream: a close with code 1000); true for an error,
    /// an abnormal close, a dropped connection, an `error` event or the session's expiry.
    Closed {
        leg: AiLegId,
        failure: bool,
        why: String,
    },
    /// A finished utterance (openai-realtime transcripts).
    Transcript { leg: AiLegId, item: TranscriptItem },
    /// The result of [`AiCommand::Check`]: whether the pong came in time.
    Check { leg: AiLegId, alive: bool },
    /// The result of [`AiCommand::Probe`]: `status` is 200 for a good handshake, the HTTP
    /// status of a refused one, 503 when the provider could not be reached in time.
    Probe {
        probe: u64,
        status: u16,
        rtt: Option<Duration>,
        why: String,
    },
}
