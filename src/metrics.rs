//! Prometheus metrics: labelled counters, gauges and histograms, rendered in the text
//! exposition format. Every part registers its families in [`REGISTRY`]; the API server serves
//! them at `/metrics`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Mutex, OnceLock};

/// Upstream's buckets for request latencies, in seconds.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0,
    10.0, 15.0, 20.0, 30.0, 45.0, 60.0,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

#[derive(Default)]
struct Series {
    value: f64,
    buckets: Vec<u64>,
    sum: f64,
    count: u64,
}

struct Family {
    help: &'static str,
    kind: Kind,
    labels: &'static [&'static str],
    buckets: &'static [f64],
    series: BTreeMap<Vec<String>, Series>,
}

/// A metric family's name, help text, label names and (for histograms) buckets.
pub struct Desc {
    pub name: &'static str,
    pub help: &'static str,
    pub labels: &'static [&'static str],
    pub buckets: &'static [f64],
}

/// All metric families of this process.
#[derive(Default)]
pub struct Registry {
    families: Mutex<BTreeMap<&'static str, Family>>,
}

/// The process-wide registry.
pub fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(Registry::default)
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn label_text(names: &[&str], values: &[String], extra: Option<(&str, String)>) -> String {
    let mut parts: Vec<String> = names
        .iter()
        .zip(values)
        .map(|(n, v)| format!("{n}=\"{}\"", escape(v)))
        .collect();
    if let Some((n, v)) = extra {
        parts.push(format!("{n}=\"{v}\""));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", parts.join(","))
    }
}

impl Registry {
    fn with_series(&self, d: &Desc, kind: Kind, values: &[&str], f: impl FnOnce(&mut Series)) {
        let Ok(mut families) = self.families.lock() else {
            return;
        };
        let family = families.entry(d.name).or_insert_with(|| Family {
            help: d.help,
            kind,
            labels: d.labels,
            buckets: d.buckets,
            series: BTreeMap::new(),
        });
        let buckets = family.buckets;
        let key: Vec<String> = values.iter().map(|v| v.to_string()).collect();
        let series = family.series.entry(key).or_insert_with(|| Series {
            buckets: vec![0; buckets.len()],
            ..Default::default()
        });
        f(series);
    }

    /// Adds `by` to a counter.
    pub fn inc(&self, d: &Desc, values: &[&str], by: f64) {
        self.with_series(d, Kind::Counter, values, |s| s.value += by);
    }

    /// Adds `by` (possibly negative) to a gauge.
    pub fn add_gauge(&self, d: &Desc, values: &[&str], by: f64) {
        self.with_series(d, Kind::Gauge, values, |s| s.value += by);
    }

    /// Records one observation in a histogram.
    pub fn observe(&self, d: &Desc, values: &[&str], v: f64) {
        let buckets = d.buckets;
        self.with_series(d, Kind::Histogram, values, |s| {
            for (i, b) in buckets.iter().enumerate() {
                if v <= *b {
                    s.buckets[i] += 1;
                }
            }
            s.sum += v;
            s.count += 1;
        });
    }

    /// Drops the series of `d` whose label values `gone` picks (a deleted pod's, say), so
    /// families labelled by short-lived objects do not grow without end.
    /// The label values of the series dropped.
    pub fn forget(&self, d: &Desc, gone: impl Fn(&[String]) -> bool) -> Vec<Vec<String>> {
        let Ok(mut families) = self.families.lock() else {
            return Vec::new();
        };
        let Some(f) = families.get_mut(d.name) else {
            return Vec::new();
        };
        let dropped: Vec<Vec<String>> = f.series.keys().filter(|v| gone(v)).cloned().collect();
        for v in &dropped {
            f.series.remove(v);
        }
        dropped
    }

    /// The text exposition of every family.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let Ok(families) = self.families.lock() else {
            return out;
        };
        for (name, f) in families.iter() {
            let kind = match f.kind {
                Kind::Counter => "counter",
                Kind::Gauge => "gauge",
                Kind::Histogram => "histogram",
            };
            let _ = writeln!(out, "# HELP {name} {}", f.help);
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for (values, s) in &f.series {
                match f.kind {
                    Kind::Counter | Kind::Gauge => {
                        let _ = writeln!(
                            out,
                            "{name}{} {}",
                            label_text(f.labels, values, None),
                            s.value
                        );
                    }
                    Kind::Histogram => {
                        for (i, b) in f.buckets.iter().enumerate() {
                            let _ = writeln!(
                                out,
                                "{name}_bucket{} {}",
                                label_text(f.labels, values, Some(("le", b.to_string()))),
                                s.buckets[i]
                            );
                        }
                        let _ = writeln!(
                            out,
                            "{name}_bucket{} {}",
                            label_text(f.labels, values, Some(("le", "+Inf".into()))),
                            s.count
                        );
                        let _ = writeln!(
                            out,
                            "{name}_sum{} {}",
                            label_text(f.labels, values, None),
                            s.sum
                        );
                        let _ = writeln!(
                            out,
                            "{name}_count{} {}",
                            label_text(f.labels, values, None),
                            s.count
                        );
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_text_format() {
        let r = Registry::default();
        let x = Desc {
            name: "x_total",
            help: "Things.",
            labels: &["verb"],
            buckets: &[],
        };
        let lat = Desc {
            name: "lat_seconds",
            help: "Latency.",
            labels: &["op"],
            buckets: &[0.1, 1.0],
        };
        let w = Desc {
            name: "w",
            help: "Watchers.",
            labels: &[],
            buckets: &[],
        };
        r.inc(&x, &["GET"], 1.0);
        r.inc(&x, &["GET"], 2.0);
        r.observe(&lat, &["get"], 0.5);
        r.add_gauge(&w, &[], 3.0);
        let text = r.render();
        assert!(
            text.contains("# TYPE x_total counter\nx_total{verb=\"GET\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("lat_seconds_bucket{op=\"get\",le=\"0.1\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("lat_seconds_bucket{op=\"get\",le=\"1\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("lat_seconds_bucket{op=\"get\",le=\"+Inf\"} 1"),
            "{text}"
        );
        assert!(text.contains("lat_seconds_count{op=\"get\"} 1"), "{text}");
        assert!(text.contains("w 3"), "{text}");
    }
}
