//! sip (work in progress)
pub mod transaction;
pub mod transport;

pub use transport::Transport;
