//! Prometheus metric primitives and the text exposition format (version 0.0.4).
//!
//! Does: counter families keyed by label values ([`Counters`]), fixed-bucket histograms
//! ([`Histogram`]), and [`Exposition`], which writes `# HELP` / `# TYPE` and samples with
//! label values escaped. The call core owns its counters as plain data (sans-IO: updated
//! inline, no atomics, no clock); the admin API renders them on scrape.
//!
//! Never: allocates per packet (media counters come from the media workers' own atomics),
//! reads a clock, or decides anything.
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// A counter family: one value per combination of label values.
#[derive(Debug, Clone)]
pub struct Counters<K: Ord> {
    values: BTreeMap<K, u64>,
}

impl<K: Ord> Default for Counters<K> {
    fn default() -> Self {
        Counters {
            values: BTreeMap::new(),
        }
    }
}

impl<K: Ord> Counters<K> {
    pub fn inc(&mut self, key: K) {
        *self.values.entry(key).or_insert(0) += 1;
    }

    pub fn get(&self, key: &K) -> u64 {
        self.values.get(key).copied().unwrap_or(0)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&K, u64)> {
        self.values.iter().map(|(k, v)| (k, *v))
    }
}

/// A histogram with fixed upper bounds (seconds), cumulative on output.
#[derive(Debug, Clone)]
pub struct Histogram {
    bounds: &'static [f64],
    /// Per bucket (not cumulative); the last entry is `+Inf`.
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

/// Bounds for round-trip times of OPTIONS pings (seconds).
pub const RTT_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];
/// Bounds for re-route gaps: what the caller heard between two AI providers (seconds).
pub const GAP_BUCKETS: &[f64] = &[
    0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0,
];

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: vec![0; bounds.len() + 1],
            sum: 0.0,
            count: 0,
        }
    }

    pub fn observe(&mut self, value: f64) {
        let i = self
            .bounds
            .iter()
            .position(|&b| value <= b)
            .unwrap_or(self.bounds.len());
        if let Some(c) = self.counts.get_mut(i) {
            *c += 1;
        }
        self.sum += value;
        self.count += 1;
    }

    pub fn count(&self) -> u64 {
        self.count
    }
}

/// Label names and values of one sample.
pub type Labels<'a> = &'a [(&'a str, &'a str)];

/// A text exposition being written.
#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
}

impl Exposition {
    pub fn new() -> Exposition {
        Exposition::default()
    }

    fn header(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: Labels<'_>, value: &dyn std::fmt::Display) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                self.out.push_str(k);
                self.out.push_str("=\"");
                escape_into(&mut self.out, v);
                self.out.push('"');
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }

    /// A counter family; `samples` may be empty (the family is still declared).
    pub fn counter<'a>(
        &mut self,
        name: &str,
        help: &str,
        samples: impl IntoIterator<Item = (Vec<(&'a str, &'a str)>, u64)>,
    ) {
        self.header(name, "counter", help);
        for (labels, v) in samples {
            self.sample(name, &labels, &v);
        }
    }

    /// A counter without labels.
    pub fn counter1(&mut self, name: &str, help: &str, value: u64) {
        self.counter(name, help, [(Vec::new(), value)]);
    }

    /// A gauge family.
    pub fn gauge<'a>(
        &mut self,
        name: &str,
        help: &str,
        samples: impl IntoIterator<Item = (Vec<(&'a str, &'a str)>, f64)>,
    ) {
        self.header(name, "gauge", help);
        for (labels, v) in samples {
            self.sample(name, &labels, &v);
        }
    }

    /// A gauge without labels.
    pub fn gauge1(&mut self, name: &str, help: &str, value: f64) {
        self.gauge(name, help, [(Vec::new(), value)]);
    }

    /// A histogram family (`_bucket`, `_sum`, `_count` per label set).
    pub fn histogram<'a>(
        &mut self,
        name: &str,
        help: &str,
        series: impl IntoIterator<Item = (Vec<(&'a str, &'a str)>, &'a Histogram)>,
    ) {
        self.header(name, "histogram", help);
        let bucket = format!("{name}_bucket");
        for (labels, h) in series {
            let mut cumulative = 0;
            for (i, c) in h.counts.iter().enumerate() {
                cumulative += c;
                let le = h
                    .bounds
                    .get(i)
                    .map_or_else(|| "+Inf".to_string(), |b| b.to_string());
                let mut l = labels.clone();
                l.push(("le", &le));
                self.sample(&bucket, &l, &cumulative);
            }
            self.sample(&format!("{name}_sum"), &labels, &h.sum);
            self.sample(&format!("{name}_count"), &labels, &h.count);
        }
    }

    pub fn finish(self) -> String {
        self.out
    }
}

/// Label value escaping: backslash, double quote and line feed.
fn escape_into(out: &mut String, v: &str) {
    for ch in v.chars() {
        match ch {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_gauges_and_escaping() {
        let mut c: Counters<(String, &str)> = Counters::default();
        c.inc(("a\"b".into(), "x"));
        c.inc(("a\"b".into(), "x"));
        let mut e = Exposition::new();
        e.counter(
            "t_total",
            "Things.",
            c.iter()
                .map(|((t, r), v)| (vec![("target", t.as_str()), ("r", *r)], v)),
        );
        e.gauge1("g", "A gauge.", 1.5);
        let s = e.finish();
        assert!(s.contains("# TYPE t_total counter\n"), "{s}");
        assert!(s.contains("t_total{target=\"a\\\"b\",r=\"x\"} 2\n"), "{s}");
        assert!(s.contains("# TYPE g gauge\ng 1.5\n"), "{s}");
    }

    #[test]
    fn histogram_is_cumulative_with_inf() {
        let mut h = Histogram::new(&[0.1, 1.0]);
        h.observe(0.05);
        h.observe(0.5);
        h.observe(7.0);
        let mut e = Exposition::new();
        e.histogram("gap_seconds", "Gaps.", [(vec![], &h)]);
        let s = e.finish();
        assert!(s.contains("gap_seconds_bucket{le=\"0.1\"} 1\n"), "{s}");
        assert!(s.contains("gap_seconds_bucket{le=\"1\"} 2\n"), "{s}");
        assert!(s.contains("gap_seconds_bucket{le=\"+Inf\"} 3\n"), "{s}");
        assert!(s.contains("gap_seconds_sum 7.55\n"), "{s}");
        assert!(s.contains("gap_seconds_count 3\n"), "{s}");
    }
}
