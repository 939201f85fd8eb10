//! Reads holdfast's JSON log after a drill: the re-routes it logged (trigger, from, to) per
//! call, and health transitions, placed on the drill's timeline.
//!
//! Pure: parses text it is given; never opens the file itself.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;

use super::report::Event;

/// What holdfast's log says about one re-route.
#[derive(Debug, Clone, PartialEq)]
pub struct Reroute {
    /// The callee of the call (the drill's callees are unique per call).
    pub callee: String,
    pub trigger: String,
    pub from: String,
    pub to: String,
}

/// Seconds since midnight UTC of an RFC 3339 timestamp (`…THH:MM:SS.frac…`).
pub fn seconds_of_day(ts: &str) -> Option<f64> {
    let t = ts.split('T').nth(1)?;
    let end = t.find(['Z', '+', '-']).unwrap_or(t.len());
    let mut parts = t.get(..end)?.split(':');
    let h: f64 = parts.next()?.parse().ok()?;
    let m: f64 = parts.next()?.parse().ok()?;
    let s: f64 = parts.next()?.parse().ok()?;
    Some(h * 3600.0 + m * 60.0 + s)
}

fn field<'a>(v: &'a Value, name: &str) -> Option<&'a str> {
    v.get(name)
        .or_else(|| v.get("fields").and_then(|f| f.get(name)))
        .and_then(Value::as_str)
}

/// Re-routes and timeline events from holdfast's JSON log. `t0_sod` is the drill's start in
/// seconds since midnight UTC (to place log lines on the drill's clock); `watched` are the
/// target ids whose health transitions matter (the failed ones).
pub fn read(log: &str, t0_sod: f64, watched: &[String]) -> (Vec<Reroute>, Vec<Event>) {
    let mut callee_of: HashMap<String, String> = HashMap::new();
    let mut reroutes = Vec::new();
    let mut events = Vec::new();
    for line in log.lines() {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let msg = field(&v, "message").unwrap_or("");
        let at = field(&v, "timestamp").and_then(seconds_of_day).map(|s| {
            let mut d = s - t0_sod;
            if d < -43_200.0 {
                d += 86_400.0; // past midnight
            }
            Duration::from_secs_f64(d.max(0.0))
        });
        let call = field(&v, "call").unwrap_or("");
        match msg {
            "new call" => {
                if let Some(c) = field(&v, "callee") {
                    callee_of.insert(call.to_string(), c.to_string());
                }
            }
            "AI leg re-routed" => {
                let callee = callee_of.get(call).cloned().unwrap_or_default();
                let r = Reroute {
                    callee: callee.clone(),
                    trigger: field(&v, "trigger").unwrap_or("?").to_string(),
                    from: field(&v, "from").unwrap_or("?").to_string(),
                    to: field(&v, "to").unwrap_or("?").to_string(),
                };
                if let Some(at) = at {
                    events.push(Event {
                        at,
                        text: format!(
                            "holdfast: {call} ({callee}) re-routed {} → {} on {}",
                            r.from, r.to, r.trigger
                        ),
                    });
                }
                reroutes.push(r);
            }
            m if m.starts_with("health:") => {
                let target = field(&v, "target_id").unwrap_or("");
                if let (Some(at), true) = (at, watched.iter().any(|w| w == target)) {
                    events.push(Event {
                        at,
                        text: format!("holdfast: {target} {m}"),
                    });
                }
            }
            _ => {}
        }
    }
    (reroutes, events)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reroutes_are_matched_to_callees_and_placed_on_the_clock() {
        let log = r#"{"timestamp":"2025-01-01T10:00:00.500000Z","level":"INFO","message":"new call","call":"hf-1","callee":"+15551000001"}
not json
{"timestamp":"2025-01-01T10:00:02.250000Z","level":"INFO","message":"AI leg re-routed","call":"hf-1","from":"agent-a","to":"agent-b","trigger":"media_unreachable","setup_ms":3}
{"timestamp":"2025-01-01T10:00:03.000000Z","level":"INFO","message":"health: 2 pings failed","target_id":"agent-a"}
{"timestamp":"2025-01-01T10:00:03.000000Z","level":"INFO","message":"health: 2 pings failed","target_id":"bot-b"}"#;
        let t0 = seconds_of_day("2025-01-01T10:00:00.000000Z").unwrap();
        let (r, ev) = read(log, t0, &["agent-a".into()]);
        assert_eq!(
            r,
            vec![Reroute {
                callee: "+15551000001".into(),
                trigger: "media_unreachable".into(),
                from: "agent-a".into(),
                to: "agent-b".into()
            }]
        );
        assert_eq!(ev.len(), 2, "{ev:?}");
        assert_eq!(ev[0].at, Duration::from_millis(2250));
        assert!(ev[1].text.contains("agent-a health: 2 pings failed"));
        assert_eq!(
            seconds_of_day("2025-01-01T23:59:59.5+00:00"),
            Some(86_399.5)
        );
        assert_eq!(seconds_of_day("garbage"), None);
    }
}
