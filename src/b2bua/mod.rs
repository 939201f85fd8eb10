//! The B2BUA layer: every call is two dialogs, the carrier's and the AI side's, joined by
//! holdfast's routing decision.
//!
//! Does: answer only what the guard admits (`crate::guard`: nothing for unknown sources
//! and scanners, per-source limits that never touch calls in progress), accept INVITEs
//! from known carriers and AI providers, route them by the routing
//! tables to a healthy target and fail over before answer, pin the answered target for the
//! life of the call, relay provisional and final responses, ACK per leg, BYE/CANCEL either
//! way, relay re-INVITE/UPDATE/INFO, answer OPTIONS, keep RFC 4028 session timers per leg,
//! anchor every call's media (SDP rewritten on both legs, hold answered per leg, relays
//! opened and closed through `Output::Media`, bound before the SDP naming them goes out, a port
//! another process holds swapped for another), re-route a failed AI leg mid-call to the next
//! provider while the carrier leg stays untouched (`core/reroute.rs`), and drive the
//! OPTIONS health pinger.
//!
//! Never: touches a socket or the clock (the runtime feeds it `now`), shows one leg's
//! addresses, Call-ID or tags to the other leg, or sends a call outside its rule's regions.
//! See `LIFECYCLE.md` for the call states.
mod call;
mod core;
mod ids;
pub mod media;
mod msg;
pub mod record;

pub use self::call::{
    Attempt, Call, CallState, Direction, Flow, Leg, Reroute, RerouteTrigger, Side,
};
pub use self::core::{
    CallView, Core, Listener, Output, Received, Stats, TargetView, Transmit, ACCEPT, ALLOW,
    SUPPORTED,
};

#[cfg(test)]
mod tests;
