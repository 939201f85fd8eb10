//! The AI leg: what holdfast needs to speak to AI providers that are not plain SIP
//! endpoints (WebSocket bots and realtime model sessions), sans-IO.
//!
//! Does: [`audio`] — the 20 ms pacer between a provider's audio bursts and the caller's RTP
//! (G.711 itself is `media::codec`); [`control`] — the commands the call core gives the AI
//! shell and the events it gets back; [`session`] — one WebSocket leg's protocol core
//! (Twilio Media Streams or OpenAI Realtime) bridging RTP and WebSocket messages.
//!
//! Never: touches a socket, a clock or a task (the runtime drives these cores), or decides
//! which provider a call uses (that is routing's and the call core's job).
pub mod audio;
pub mod control;
pub mod session;
