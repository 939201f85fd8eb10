//! runtime (work in progress)
pub mod dns;
