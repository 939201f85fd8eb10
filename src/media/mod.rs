//! The media layer: SDP offer/answer rewriting and the RTP/RTCP relay that anchors every
//! call's media.
//!
//! Does: rewrite session descriptions so both legs send media to holdfast, allocate relay
//! ports, and — in the sans-IO relay core — latch, filter, rewrite and count RTP/RTCP
//! packets in place. Never: touches a socket or the clock (the runtime feeds packets and
//! `now`), allocates per packet, or decides call routing.
//!
//! Who does what: the B2BUA's per-call `b2bua::media` decides (offer/answer per leg, ports
//! from [`ports`], directions, payload maps) and speaks to the shell in [`control`] messages;
//! `runtime::media` runs the relays ([`relay`]) on worker threads with batched socket I/O.
//! See `LIFECYCLE.md` for streams.

pub mod codec;
pub mod control;
pub mod filler;
pub mod ports;
pub mod relay;
pub mod rtp;
pub mod sdp;
pub mod stats;
