//! sip (work in progress)
pub mod transaction;
