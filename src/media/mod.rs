//! The media layer: SDP offer/answer rewriting and the RTP/RTCP relay that anchors every
//! call's media (issue 3; being built).
//!
//! Does: rewrite session descriptions so both legs send media to holdfast, allocate relay
//! ports, and — in the sans-IO relay core — latch, filter, rewrite and count RTP/RTCP
//! packets in place. Never: touches a socket or the clock (the runtime feeds packets and
//! `now`), allocates per packet, or decides call routing.
//!
//! Status: the pieces are built and tested on their own (`sdp`, `relay`, `rtp`, `stats`,
//! `ports`; batched socket I/O is `runtime::batch_udp`); the B2BUA does not anchor media
//! through them yet — SDP still passes through unchanged. See `LIFECYCLE.md` for streams.

pub mod control;
pub mod ports;
pub mod relay;
pub mod rtp;
pub mod sdp;
pub mod stats;
