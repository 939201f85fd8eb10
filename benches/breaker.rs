//! Per-call cost of the circuit breaker and of planning with it (issue 13): the breaker's
//! bookkeeping for one attempt (its start and its verdict) in the high-rate regime, and
//! `RoutingTable::plan` for a three-carrier rule with every target usable, one ejected
//! (within `max_ejection_percent`), two ejected (one put back by the cap) and all ejected
//! (panic mode). Both run once per call attempt / call on the core's thread.

use std::collections::HashMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use holdfast::health::{AttemptOutcome, BreakerConfig, CircuitBreaker};
use holdfast::routing::{AvailabilityView, RoutingTable, TargetAvailability, TargetId};

struct View(HashMap<&'static str, Instant>);

impl AvailabilityView for View {
    fn is_healthy(&self, _id: &TargetId) -> bool {
        true
    }
    fn active_calls(&self, _id: &TargetId) -> u32 {
        0
    }
    fn availability(&self, id: &TargetId) -> TargetAvailability {
        match self.0.get(id.as_str()) {
            Some(&since) => TargetAvailability::Ejected { since },
            None => TargetAvailability::Usable,
        }
    }
}

const CONFIG: &str = r#"
carriers:
  - { id: c1, uri: "sip:127.0.0.1:5091", region: us, weight: 50 }
  - { id: c2, uri: "sip:127.0.0.1:5092", region: us, weight: 30 }
  - { id: c3, uri: "sip:127.0.0.1:5093", region: us, priority: 2 }
ai_providers:
  - { id: agent, uri: "sip:127.0.0.1:5081", region: us, sources: ["127.0.0.1:5081"] }
routes:
  outbound:
    - { regions: [us], carriers: [c1, c2, c3] }
"#;

fn breaker(c: &mut Criterion) {
    let t0 = Instant::now();
    let mut b = CircuitBreaker::new(BreakerConfig::default(), t0);
    let step = Duration::from_micros(667); // 1500 calls/s
    let mut now = t0;
    for _ in 0..1000 {
        b.handle_attempt_started(now);
        b.handle_outcome(AttemptOutcome::Answered, now);
        now += step;
    }
    let mut i = 0u64;
    c.bench_function(
        "breaker: one attempt (start + verdict), 1500 calls/s",
        |bench| {
            bench.iter(|| {
                now += step;
                i += 1;
                b.handle_attempt_started(now);
                // One failure in a hundred: the ratio is evaluated, never reached.
                let outcome = if i % 100 == 0 {
                    AttemptOutcome::Timeout
                } else {
                    AttemptOutcome::Answered
                };
                b.handle_outcome(black_box(outcome), now);
                black_box(b.allows_attempt(now))
            })
        },
    );
    assert_eq!(b.state(), holdfast::health::BreakerState::Closed);
}

fn plan(c: &mut Criterion) {
    let cfg = holdfast::config::parse(CONFIG, "bench.yaml").expect("valid");
    let table = RoutingTable::new(&cfg);
    let rule = table
        .match_outbound(&TargetId::from("agent"), "+15551230000", "")
        .expect("rule")
        .clone();
    let t0 = Instant::now();
    let cases: [(&str, Vec<&'static str>); 4] = [
        ("plan: 3 carriers, all usable", vec![]),
        ("plan: 3 carriers, 1 ejected", vec!["c1"]),
        ("plan: 3 carriers, 2 ejected (1 capped)", vec!["c1", "c2"]),
        (
            "plan: 3 carriers, all ejected (capped)",
            vec!["c1", "c2", "c3"],
        ),
    ];
    for (name, ejected) in cases {
        let view = View(
            ejected
                .iter()
                .enumerate()
                .map(|(i, id)| (*id, t0 + Duration::from_secs(i as u64)))
                .collect(),
        );
        let mut seed = 0u64;
        c.bench_function(name, |bench| {
            bench.iter(|| {
                seed += 1;
                black_box(table.plan(&rule, &view, seed))
            })
        });
    }
}

criterion_group!(benches, breaker, plan);
criterion_main!(benches);
