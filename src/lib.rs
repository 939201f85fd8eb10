//! holdfast: a SIP B2BUA and media proxy that keeps voice-AI calls up through carrier,
//! AI-provider and region failures.
//!
//! The crate is split by layer. Everything except `runtime` is sans-IO: it takes input plus a
//! `now: Instant` and returns outputs, and never touches a socket, a clock or a random source.
//!
//! - [`sip`]: the SIP wire format (our own parser and serializer) and RFC 3261 §17
//!   transaction state machines.
//! - [`config`]: the YAML file, validated into typed configuration with file:line:column errors.
//! - [`routing`]: routing tables (longest-prefix rules, carrier/provider groups, regions) and
//!   target selection.
//! - [`health`]: OPTIONS-ping hysteresis and passive circuit breakers per target.
//! - [`guard`]: who gets answers at all: unknown sources, scanners, per-source rate limits
//!   and blocking, decided on a peek at each datagram before it is parsed.
//! - [`media`]: SDP rewriting and the sans-IO RTP relay core (media anchoring).
//! - [`ai`]: the AI leg's sans-IO pieces (audio coding and pacing for WebSocket providers).
//! - [`b2bua`]: the call core: two dialogs per call, failover, pinning, session timers.
//! - [`admin`]: the admin API's routes and replies, and the Prometheus metric primitives.
//! - [`runtime`]: the thin tokio shell that owns sockets, timers, DNS, signals, the admin
//!   HTTP server and the call-record writer.
//! - [`drill`]: `holdfast drill`, the game-day command (synthetic calls, injected failures,
//!   a survival report).
pub mod admin;
pub mod ai;
pub mod b2bua;
pub mod config;
pub mod drill;
pub mod guard;
pub mod health;
pub mod media;
pub mod routing;
pub mod runtime;
pub mod sip;
