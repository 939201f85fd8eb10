//! Per-target health for the B2BUA: active OPTIONS pings with hysteresis per resolved address,
//! and a passive circuit breaker per target fed by real call attempts.
//!
//! Sans-IO. The caller (the B2BUA core and its runtime shell) sends the OPTIONS requests this
//! module asks for ([`HealthTable::poll_probe`]), reports their final responses
//! ([`HealthTable::handle_probe_response`]) and reports call-attempt outcomes
//! ([`HealthTable::handle_attempt`]). This module never parses SIP, never touches a socket or
//! a clock (every input carries `now`), never spawns and never draws random numbers.
//!
//! # LIFECYCLE
//!
//! See `src/health/LIFECYCLE.md` for the full picture. In short:
//! - address: `Unknown` (new, pinged at once, takes calls) → `Up` on its first successful
//!   ping; `Up` ⇄ `Down` by [`Hysteresis`] over OPTIONS results (`down_after` consecutive
//!   failures / `up_after` consecutive successes; an unknown address goes down like an up one).
//! - target: `Up` if an address is up, `Unknown` if none is but one is unknown (or its
//!   addresses are being resolved, for at most `ping_timeout`), else `Down`; forced down is
//!   `Down`.
//! - breaker: `Closed` → `Open` (`failures` consecutive failures within `window` at low rates;
//!   `failure_percent` % of the last `min_attempts` at high rates) → `HalfOpen` (after
//!   `cooldown`; a ramp of probe calls that doubles with each success) → `Closed`
//!   (`probe_successes` successes) or `Open` (a probe failed).
//! - a target is *available* for selection when it is up or unknown, has an address and its
//!   breaker allows an attempt; *ejected* when only its breaker keeps it out. How many of a
//!   rule's targets may be ejected, and panic mode, are routing's business.

pub mod breaker;
pub mod hysteresis;
mod table;

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

pub use breaker::{
    AttemptOutcome, BreakerConfig, BreakerState, BreakerStatus, BreakerTransition, CircuitBreaker,
};
pub use hysteresis::{Hysteresis, Transition, UpDown};
pub use table::{
    AddressStatus, Availability, Health, HealthError, HealthEvent, HealthSettings, HealthTable,
    Probe, ProbeId, State, TargetHealthConfig, TargetStatus,
};

pub use crate::sip::Transport;

/// One resolved address of a target, as produced by RFC 3263 resolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Destination {
    /// IP address and port.
    pub addr: SocketAddr,
    /// Transport to reach it with.
    pub transport: Transport,
}

impl Destination {
    /// Shorthand constructor.
    pub fn new(addr: SocketAddr, transport: Transport) -> Self {
        Self { addr, transport }
    }
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.transport)
    }
}

/// Human duration for log reasons: "2s", "1500ms".
pub(crate) fn fmt_duration(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}
