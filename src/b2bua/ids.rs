//! Identifier generation for tags, branches, Call-IDs and holdfast's own call ids.
//!
//! Seeded and deterministic: the core never draws randomness from the OS itself (the runtime
//! seeds it), so a test with a fixed seed sees the same identifiers every run. Identifiers are
//! 64 random bits in lowercase hex, which meets RFC 3261 §19.3's "at least 32 bits of
//! randomness" for tags and makes branches globally unique in practice (§8.1.1.7).
use rand::{rngs::SmallRng, Rng, SeedableRng};

/// The RFC 3261 §8.1.1.7 magic cookie every branch we create starts with.
pub const BRANCH_COOKIE: &str = "z9hG4bK";

/// A seeded source of tags, branches and Call-IDs.
#[derive(Debug)]
pub struct IdGen {
    rng: SmallRng,
}

impl IdGen {
    pub fn new(seed: u64) -> Self {
        Self {
            rng: SmallRng::seed_from_u64(seed),
        }
    }

    fn hex64(&mut self) -> String {
        format!("{:016x}", self.rng.random::<u64>())
    }

    /// A From/To tag (RFC 3261 §19.3).
    pub fn tag(&mut self) -> String {
        self.hex64()
    }

    /// A Via branch carrying the RFC 3261 magic cookie.
    pub fn branch(&mut self) -> String {
        format!("{BRANCH_COOKIE}{}", self.hex64())
    }

    /// A Call-ID for a leg holdfast originates. Never derived from the other leg's Call-ID,
    /// so the far side learns nothing about the other leg (topology hiding).
    pub fn call_id(&mut self, host: &str) -> String {
        format!("{}{}@{host}", self.hex64(), self.hex64())
    }

    /// A value in `0..n` (weighted selection seeds, SRV shuffles).
    pub fn next_u64(&mut self) -> u64 {
        self.rng.random()
    }
}
/// holdfast's own call ids (`hf-…`, in logs, records, the admin API and `X-Holdfast-Call`),
/// unique across nodes and restarts: `hf-<node>-<n>`, where `<n>` counts this process's
/// calls in hex and `<node>` is `node.id` followed by 32 random bits drawn at start
/// (`eu-1.3f9a0c12`, so a restarted node never reuses its earlier ids), or without
/// `node.id` 64 random bits (`3f9a0c1277aa0b21`).
#[derive(Debug, Clone)]
pub struct CallIds {
    node: String,
    next: u64,
}

impl CallIds {
    pub fn new(node_id: Option<&str>, ids: &mut IdGen) -> Self {
        let node = match node_id {
            Some(id) => format!("{id}.{:08x}", ids.next_u64() >> 32),
            None => format!("{:016x}", ids.next_u64()),
        };
        CallIds { node, next: 1 }
    }

    /// This process's part of every call id (`hf-<node>-…`).
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The next call's id.
    pub fn next_id(&mut self) -> String {
        let n = self.next;
        self.next += 1;
        format!("hf-{}-{n:x}", self.node)
    }
}
