//! Target selection for one call: the ordered list of candidates to try.
//!
//! Order: only targets in the rule's regions (never any other, failover, panic or fail-open
//! included); then only usable targets below their `max_calls`, where a target ejected by its
//! circuit breaker is put back when more than `health.breaker.max_ejection_percent` % of the
//! rule's targets are ejected; by priority ascending; within one priority by weighted random
//! choice without replacement (RFC 2782 style, weight-0 targets last), driven by a
//! caller-supplied seed (`StdRng::seed_from_u64`) so the same seed gives the same plan. When
//! nothing is usable: wait for targets still resolving, else panic mode (the ejected targets
//! anyway: a breaker alone never refuses every call), else `health.all_down` for targets down
//! by their health checks. Never reads health or load itself: the caller passes an
//! [`AvailabilityView`]. Never reads the clock (instants come in the view) and never draws
//! entropy.

use std::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{RoutingTable, Rule, TargetId};
use crate::config::{AllDownPolicy, Direction, Target};

/// What health says about one target for routing, as the caller sees it now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TargetAvailability {
    /// Takes new calls.
    Usable,
    /// Health lets it take calls, but its circuit breaker keeps it out; `since` orders the
    /// ejections (the earliest stay out when `max_ejection_percent` caps them).
    Ejected { since: Instant },
    /// Being resolved for the first time: a call may wait for it until `until`.
    Pending { until: Instant },
    /// Down by its health checks (or forced down, or without an address).
    Down,
}

/// What the caller knows about targets right now (health monitor + call counts).
pub trait AvailabilityView {
    fn is_healthy(&self, id: &TargetId) -> bool;
    fn active_calls(&self, id: &TargetId) -> u32;
    /// An operator cordoned the target: it gets no new calls at all (not even under
    /// `all_down: fail_open`); calls already on it are not affected.
    fn is_cordoned(&self, _id: &TargetId) -> bool {
        false
    }
    /// The finer view the planner works from; by default [`Self::is_healthy`] decides
    /// between usable and down.
    fn availability(&self, id: &TargetId) -> TargetAvailability {
        if self.is_healthy(id) {
            TargetAvailability::Usable
        } else {
            TargetAvailability::Down
        }
    }
}

/// Ordered candidates for one call.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Plan {
    /// Try in this order; the B2BUA moves on per `should_failover` / attempt timeout.
    pub targets: Vec<TargetId>,
    /// Every candidate was down and `health.all_down: fail_open` let them through anyway.
    pub fail_open: bool,
    /// Panic mode: every in-region target that health lets take calls is ejected by its
    /// breaker; they are tried anyway (a breaker alone never refuses every call).
    pub panic: bool,
    /// Targets in the plan although their breaker is open: more of the rule's targets were
    /// ejected than `max_ejection_percent` allows, and these were ejected last.
    pub capped: Vec<TargetId>,
    /// No candidate now, but targets of the rule are being resolved for the first time:
    /// the caller may wait until this instant (or until one resolves) and plan again.
    pub wait_until: Option<Instant>,
    /// Why the plan is empty, for a 503 `Reason` header (RFC 3326); `None` when not empty.
    pub reason: Option<String>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }

    /// Whether `target` is in the plan in spite of its breaker (panic mode or the ejection
    /// cap): the caller must not skip it for being ejected.
    pub fn overrides_breaker(&self, target: &TargetId) -> bool {
        self.panic || self.fail_open || self.capped.contains(target)
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
    ///
    /// 1. Only the rule's targets inside its regions, and never a cordoned one.
    /// 2. Breaker ejections are capped: at most `max_ejection_percent` % of those targets
    ///    (rounded down) stay out; the most recently ejected beyond that are put back.
    /// 3. Usable targets below `max_calls`, by priority and weight.
    /// 4. None: wait for targets resolved for the first time, if any; else panic mode — the
    ///    ejected targets below `max_calls` are tried anyway (then, under `all_down:
    ///    fail_open`, the down ones); else the capacity reason; else `health.all_down`
    ///    decides for targets that are down by their health checks.
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
        let in_region: Vec<(&Target, TargetAvailability)> = in_region
            .into_iter()
            .filter(|t| !view.is_cordoned(&t.id))
            .map(|t| (t, view.availability(&t.id)))
            .collect();
        let not_full = |t: &&Target| t.max_calls.is_none_or(|max| view.active_calls(&t.id) < max);
        let mut rng = StdRng::seed_from_u64(seed);

        // The ejection cap: the earliest ejections stay, the rest are put back.
        let mut ejected: Vec<(&Target, Instant)> = in_region
            .iter()
            .filter_map(|&(t, a)| match a {
                TargetAvailability::Ejected { since } => Some((t, since)),
                _ => None,
            })
            .collect();
        ejected.sort_by_key(|&(_, since)| since);
        let allowed = in_region.len() * usize::from(self.max_ejection_percent) / 100;
        let capped: Vec<&Target> = ejected.iter().skip(allowed).map(|&(t, _)| t).collect();
        let ejected: Vec<&Target> = ejected.iter().take(allowed).map(|&(t, _)| t).collect();
        let usable: Vec<&Target> = in_region
            .iter()
            .filter(|(_, a)| *a == TargetAvailability::Usable)
            .map(|&(t, _)| t)
            .chain(capped.iter().copied())
            .collect();

        let available: Vec<&Target> = usable.iter().copied().filter(not_full).collect();
        if !available.is_empty() {
            let capped = capped
                .iter()
                .filter(|t| available.iter().any(|a| a.id == t.id))
                .map(|t| t.id.clone())
                .collect();
            return Plan {
                targets: order(available, &mut rng),
                capped,
                ..Plan::default()
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
        let wait_until = in_region
            .iter()
            .filter_map(|&(_, a)| match a {
                TargetAvailability::Pending { until } => Some(until),
                _ => None,
            })
            .max();
        if wait_until.is_some() {
            return Plan {
                wait_until,
                reason: Some(format!("no {noun} in regions [{regions}] resolved yet")),
                ..Plan::default()
            };
        }
        let down: Vec<&Target> = in_region
            .iter()
            .filter(|(_, a)| *a == TargetAvailability::Down)
            .map(|&(t, _)| t)
            .collect();
        let fail_open = self.all_down_policy() == AllDownPolicy::FailOpen;
        let panic: Vec<&Target> = ejected.iter().copied().filter(not_full).collect();
        if !panic.is_empty() {
            // Panic mode: a passive breaker opinion never refuses every call. Targets down by
            // their health checks join only when the user asked for it (fail_open).
            let mut targets = order(panic, &mut rng);
            let down: Vec<&Target> = down.iter().copied().filter(not_full).collect();
            let fail_open = fail_open && !down.is_empty();
            if fail_open {
                targets.extend(order(down, &mut rng));
            }
            return Plan {
                targets,
                panic: true,
                fail_open,
                ..Plan::default()
            };
        }
        if !usable.is_empty() || !ejected.is_empty() {
            return Plan {
                reason: Some(format!(
                    "every healthy {noun} in regions [{regions}] is at capacity"
                )),
                ..Plan::default()
            };
        }
        if !fail_open {
            return Plan {
                reason: Some(format!("no healthy {noun} in regions [{regions}]")),
                ..Plan::default()
            };
        }
        let not_full: Vec<&Target> = down.iter().copied().filter(not_full).collect();
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
                ..Plan::default()
            }
        }
    }
}
