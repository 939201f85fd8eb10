//! Target selection for one call: the ordered list of candidates to try.
//!
//! Order: only targets in the rule's regions (never any other, failover or fail-open
//! included); then only healthy targets below their `max_calls`; by priority ascending; within
//! one priority by weighted random choice without replacement (RFC 2782 style, weight-0
//! targets last), driven by a caller-supplied seed (`StdRng::seed_from_u64`) so the same seed
//! gives the same plan. Never reads health or load itself: the caller passes an
//! [`AvailabilityView`]. Never draws entropy.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{RoutingTable, Rule, TargetId};
use crate::config::{AllDownPolicy, Direction, Target};

/// What the caller knows about targets right now (health monitor + call counts).
pub trait AvailabilityView {
    fn is_healthy(&self, id: &TargetId) -> bool;
    fn active_calls(&self, id: &TargetId) -> u32;
    /// An operator cordoned the target: it gets no new calls at all (not even under
    /// `all_down: fail_open`); calls already on it are not affected.
    fn is_cordoned(&self, _id: &TargetId) -> bool {
        false
    }
}

/// Ordered candidates for one call.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Plan {
    /// Try in this order; the B2BUA moves on per `should_failover` / attempt timeout.
    pub targets: Vec<TargetId>,
    /// Every candidate was down and `health.all_down: fail_open` let them through anyway.
    pub fail_open: bool,
    /// Why the plan is empty, for a 503 `Reason` header (RFC 3326); `None` when not empty.
    pub reason: Option<String>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }
}

/// Sorts by priority, then orders each equal-priority group by weighted random draws.
fn order(mut targets: Vec<&Target>, rng: &mut StdRng) -> Vec<TargetId> {
    // Stable: equal priorities keep file order before the draw, so a seed is reproducible.
    targets.sort_by_key(|t| t.priority);
    let mut out = Vec::with_capacity(targets.len());
    let mut rest = targets.as_slice();
    while let Some(first) = rest.first() {
        let n = rest
            .iter()
            .take_while(|t| t.priority == first.priority)
            .count();
        let (group, tail) = rest.split_at(n);
        rest = tail;
        let mut weighted: Vec<&Target> = group.iter().copied().filter(|t| t.weight > 0).collect();
        while !weighted.is_empty() {
            let total: u64 = weighted.iter().map(|t| u64::from(t.weight)).sum();
            let mut pick = rng.random_range(0..total);
            let mut chosen = weighted.len() - 1;
            for (i, t) in weighted.iter().enumerate() {
                let w = u64::from(t.weight);
                if pick < w {
                    chosen = i;
                    break;
                }
                pick -= w;
            }
            out.push(weighted.remove(chosen).id.clone());
        }
        // Weight 0: only when every weighted target of this priority has been tried.
        out.extend(group.iter().filter(|t| t.weight == 0).map(|t| t.id.clone()));
    }
    out
}

impl RoutingTable {
    /// The candidates for `rule`, given health and load from `view`. Deterministic for a
    /// given `seed`.
    pub fn plan(&self, rule: &Rule, view: &impl AvailabilityView, seed: u64) -> Plan {
        let noun = match rule.direction {
            Direction::Inbound => "AI provider",
            Direction::Outbound => "carrier",
        };
        let regions = rule.regions.join(", ");
        // Region filter first: nothing below can bring an out-of-region target back.
        let in_region: Vec<&Target> = rule
            .targets
            .iter()
            .filter_map(|id| self.target(id))
            .filter(|t| rule.regions.contains(&t.region))
            .collect();
        let configured = in_region.len();
        let in_region: Vec<&Target> = in_region
            .into_iter()
            .filter(|t| !view.is_cordoned(&t.id))
            .collect();
        let not_full = |t: &&Target| t.max_calls.is_none_or(|max| view.active_calls(&t.id) < max);
        let available: Vec<&Target> = in_region
            .iter()
            .copied()
            .filter(|t| view.is_healthy(&t.id))
            .filter(not_full)
            .collect();
        let mut rng = StdRng::seed_from_u64(seed);
        if !available.is_empty() {
            return Plan {
                targets: order(available, &mut rng),
                fail_open: false,
                reason: None,
            };
        }
        if in_region.is_empty() {
            let why = if configured > 0 {
                format!("every {noun} in regions [{regions}] is cordoned")
            } else {
                format!("no {noun} configured in regions [{regions}]")
            };
            return Plan {
                reason: Some(why),
                ..Plan::default()
            };
        }
        let any_healthy = in_region.iter().any(|t| view.is_healthy(&t.id));
        if any_healthy {
            return Plan {
                reason: Some(format!(
                    "every healthy {noun} in regions [{regions}] is at capacity"
                )),
                ..Plan::default()
            };
        }
        match self.all_down_policy() {
            AllDownPolicy::Reject => Plan {
                reason: Some(format!("no healthy {noun} in regions [{regions}]")),
                ..Plan::default()
            },
            AllDownPolicy::FailOpen => {
                let not_full: Vec<&Target> = in_region.iter().copied().filter(not_full).collect();
                if not_full.is_empty() {
                    Plan {
                        reason: Some(format!(
                            "no healthy {noun} in regions [{regions}], and all are at capacity"
                        )),
                        ..Plan::default()
                    }
                } else {
                    Plan {
                        targets: order(not_full, &mut rng),
                        fail_open: true,
                        reason: None,
                    }
                }
            }
        }
    }
}
