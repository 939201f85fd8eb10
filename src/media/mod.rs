//! The media layer: SDP offer/answer rewriting and the RTP/RTCP relay that anchors every
//! call's media (issue 3; being built).
//!
//! Does: rewrite session descriptions so both legs send media to holdfast, allocate relay
//! ports, and — in the sans-IO relay core — latch, filter, rewrite and count RTP/RTCP
//! packets in place. Never: touches a socket or the clock (the runtime feeds packets and
//! `now`), allocates per packet, or decides call routing.

pub mod ports;
pub mod relay;
pub mod rtp;
pub mod stats;
