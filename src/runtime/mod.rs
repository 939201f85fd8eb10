//! The runtime shell: the only layer with sockets, clocks, signals and DNS I/O.
//!
//! It drives the sans-IO [`crate::b2bua::Core`]: reads datagrams and TCP streams, feeds them
//! in with `Instant::now()`, sends what the core emits, sleeps until the core's next
//! deadline, resolves target hosts (RFC 3263) and reloads the config on SIGHUP. It makes no
//! protocol decision of its own.
pub mod admin;
pub mod ai;
pub mod batch_udp;
pub mod dns;
pub mod limits;
pub mod media;
pub mod memory;
mod server;
pub mod wallclock;
pub mod webhook;

pub use server::{run, RunOptions};
