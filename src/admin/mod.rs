//! The operator's surface: what the admin HTTP API answers and the Prometheus metrics.
//!
//! Does: map a request (method, path, bearer token) to an [`api::AdminOp`] or an error
//! reply (`api::route`, `api::authorized`), shape replies, and provide the metric
//! primitives and text exposition ([`metrics`]) the call core and the media shell render
//! into. Plain functions and data: the HTTP server itself (axum) is a thin shell in
//! `runtime::admin`, and every answer about calls and targets comes from the call core
//! through the runtime's main loop, so the API never reads state behind the core's back.
//!
//! Never: touches a socket or a clock, holds call state, or decides anything about a call.
pub mod api;
pub mod metrics;
