//! RFC 3261 §17 transactions (written separately).
