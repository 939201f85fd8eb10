//! The call record: one JSON object per finished call (`records.path`), for billing,
//! support and postmortems.
//!
//! Built by the core from the call's own state when the call is gone; the media section is
//! filled from the relays' final statistics, which arrive after the call ends (the record
//! is written only then). Wall-clock times are added by the shell that writes the line:
//! the core only knows `Instant`s.
//!
//! Never: reads a clock, writes a file, or holds anything a later call needs.
use serde::Serialize;
use std::time::Instant;

use super::call::Reroute;
use crate::media::stats::{DropCounts, StreamStatsSnapshot};

/// One finished call.
#[derive(Clone, Debug, Serialize)]
pub struct CallRecord {
    pub id: String,
    pub direction: &'static str,
    /// The carrier (inbound) or AI provider (outbound) the call came from.
    pub origin: String,
    pub caller: String,
    pub callee: String,
    pub rule: String,
    pub regions: Vec<String>,
    /// When the INVITE arrived, was answered, and began to end (the shell turns these into
    /// wall-clock `start`, `answered`, `end`).
    #[serde(skip)]
    pub started: Instant,
    #[serde(skip)]
    pub answered: Option<Instant>,
    #[serde(skip)]
    pub ended: Instant,
    /// Wall-clock `started`, `answered`, `ended` (RFC 3339, UTC), set by the shell that
    /// writes the record.
    pub start: Option<String>,
    #[serde(rename = "answered")]
    pub answered_at: Option<String>,
    pub end: Option<String>,
    /// INVITE → answer.
    pub setup_ms: Option<u64>,
    /// Answer → end; 0 when never answered.
    pub duration_ms: u64,
    /// `completed` (answered), `failed`, `cancelled` or `refused` (before any attempt).
    pub outcome: &'static str,
    /// The final status the caller's INVITE got.
    pub status: Option<u16>,
    pub hangup: Hangup,
    /// Every target tried, in order; each `outcome` says why the next one was tried.
    pub attempts: Vec<AttemptRecord>,
    /// The carrier leg's carrier: the origin (inbound) or the pinned target (outbound).
    pub carrier: Option<String>,
    /// The AI providers that carried (or were tried for) the call, in order.
    pub ai_providers: Vec<String>,
    pub reroutes: Vec<Reroute>,
    /// Set when the caller was transferred because no AI provider was left.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transfer_to: Option<String>,
    pub media: MediaRecord,
}

/// Who ended the call and why.
#[derive(Clone, Debug, Serialize)]
pub struct Hangup {
    /// `carrier`, `ai` or `holdfast`.
    pub by: &'static str,
    pub reason: String,
}

/// One attempt.
#[derive(Clone, Debug, Serialize)]
pub struct AttemptRecord {
    pub target: String,
    pub remote: String,
    pub transport: &'static str,
    pub outcome: String,
}

/// Media of both legs, summed over the call's streams.
#[derive(Clone, Debug, Default, Serialize)]
pub struct MediaRecord {
    /// What the carrier leg sent (and how much of it reached the AI leg).
    pub carrier: LegMedia,
    /// What the AI leg sent.
    pub ai: LegMedia,
}

/// What one leg sent to holdfast.
#[derive(Clone, Debug, Default, Serialize)]
pub struct LegMedia {
    pub packets_received: u64,
    pub bytes_received: u64,
    pub packets_forwarded: u64,
    pub bytes_forwarded: u64,
    pub packets_lost: i64,
    /// The largest jitter of the call's streams.
    pub jitter_ms: f64,
    pub drops: DropCounts,
}

impl LegMedia {
    pub fn add(&mut self, s: &StreamStatsSnapshot) {
        self.packets_received += s.packets_received;
        self.bytes_received += s.bytes_received;
        self.packets_forwarded += s.packets_forwarded;
        self.bytes_forwarded += s.bytes_forwarded;
        self.packets_lost += s.packets_lost;
        self.jitter_ms = self.jitter_ms.max(s.jitter_ms);
        self.drops.not_rtp += s.drops.not_rtp;
        self.drops.malformed += s.drops.malformed;
        self.drops.wrong_source += s.drops.wrong_source;
        self.drops.unexpected_source += s.drops.unexpected_source;
        self.drops.learning += s.drops.learning;
        self.drops.no_peer_yet += s.drops.no_peer_yet;
        self.drops.disabled += s.drops.disabled;
    }
}

impl CallRecord {
    /// Adds one relay's final statistics: `a_to_b` is what leg A sent.
    pub fn add_stream(&mut self, a_to_b: &StreamStatsSnapshot, b_to_a: &StreamStatsSnapshot) {
        let (carrier, ai) = if self.direction == "inbound" {
            (a_to_b, b_to_a)
        } else {
            (b_to_a, a_to_b)
        };
        self.media.carrier.add(carrier);
        self.media.ai.add(ai);
    }
}
