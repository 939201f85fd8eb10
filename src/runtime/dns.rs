//! RFC 3263 resolution of SIP targets (work in progress).
