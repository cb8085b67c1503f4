//! Prometheus text exposition (format 0.0.4) of a [`Snapshot`], for `/metrics`.
//!
//! `group.metric` becomes `PREFIX_group_metric`; in `group.label.metric` the label becomes a
//! Prometheus label named after the group with a final plural `s` dropped
//! (`urls./account/get.response` → `bkjs_urls_response_ms{url="/account/get"}`). Names are
//! sanitised to `[a-zA-Z0-9_:]`. Per kind:
//! - counter: `NAME_total` (counter);
//! - gauge: `NAME` (gauge);
//! - meter: `NAME_total` (counter) and `NAME_rate{window="current|1m|5m|15m|mean"}` (gauge,
//!   events per second);
//! - histogram: `NAME` (summary: `quantile` 0.5 to 0.999, `_sum`, `_count`), `NAME_min`,
//!   `NAME_max` (gauges);
//! - timer: the histogram's series as `NAME_ms...` and the meter's rates as `NAME_rate`.

use super::{split_name, HistogramSnapshot, MeterSnapshot, MetricSnapshot, Snapshot};
use std::collections::BTreeMap;
use std::fmt::Write as _;

const QUANTILES: [(&str, f64); 5] = [
    ("0.5", 0.5),
    ("0.75", 0.75),
    ("0.95", 0.95),
    ("0.99", 0.99),
    ("0.999", 0.999),
];

impl Snapshot {
    /// The metrics in Prometheus text format, every name starting with `prefix` (e.g. `bkjs`;
    /// empty for none).
    pub fn to_prometheus(&self, prefix: &str) -> String {
        let mut out = Families::default();
        for (name, metric) in &self.metrics {
            let parts = split_name(name);
            let base: Vec<&str> = [prefix]
                .into_iter()
                .chain(parts.group)
                .chain([parts.metric])
                .filter(|s| !s.is_empty())
                .collect();
            let base = metric_name(&base.join("_"));
            let labels = match (parts.group, parts.label) {
                (Some(group), Some(label)) => vec![(label_name(singular(group)), label.to_owned())],
                _ => Vec::new(),
            };
            match metric {
                MetricSnapshot::Counter(n) => {
                    out.add(&total(&base), "counter", "", &labels, *n as f64);
                }
                MetricSnapshot::Gauge(v) => out.add(&base, "gauge", "", &labels, *v),
                MetricSnapshot::Meter(m) => {
                    out.add(&total(&base), "counter", "", &labels, m.count as f64);
                    out.rates(&base, &labels, m, self.time);
                }
                MetricSnapshot::Histogram(h) => out.summary(&base, &labels, h),
                MetricSnapshot::Timer(t) => {
                    out.summary(&format!("{base}_ms"), &labels, &t.histogram);
                    out.rates(&base, &labels, &t.meter, self.time);
                }
            }
        }
        out.render()
    }
}

/// Samples grouped by metric family, as the format requires.
#[derive(Default)]
struct Families(BTreeMap<String, Family>);

struct Family {
    kind: &'static str,
    lines: Vec<String>,
}

impl Families {
    /// One sample of `family`, named `family` + `suffix`, with `labels`.
    fn add(
        &mut self,
        family: &str,
        kind: &'static str,
        suffix: &str,
        labels: &[(String, String)],
        value: f64,
    ) {
        self.add_with(family, kind, suffix, labels, None, value);
    }

    /// As [`Families::add`], with one more label.
    fn add_with(
        &mut self,
        family: &str,
        kind: &'static str,
        suffix: &str,
        labels: &[(String, String)],
        extra: Option<(&str, &str)>,
        value: f64,
    ) {
        let f = self.0.entry(family.to_owned()).or_insert_with(|| Family {
            kind,
            lines: Vec::new(),
        });
        if f.kind != kind {
            tracing::debug!(family, "metric family used as two types; sample left out");
            return;
        }
        let mut line = format!("{family}{suffix}");
        let all = labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .chain(extra);
        let mut any = false;
        for (k, v) in all {
            line.push(if any { ',' } else { '{' });
            let _ = write!(line, "{k}=\"{}\"", escape(v));
            any = true;
        }
        if any {
            line.push('}');
        }
        let _ = write!(line, " {}", number(value));
        f.lines.push(line);
    }

    fn summary(&mut self, family: &str, labels: &[(String, String)], h: &HistogramSnapshot) {
        let st = h.stats();
        for (label, q) in QUANTILES {
            self.add_with(
                family,
                "summary",
                "",
                labels,
                Some(("quantile", label)),
                h.quantile(q),
            );
        }
        self.add(family, "summary", "_sum", labels, st.sum);
        self.add(family, "summary", "_count", labels, st.count as f64);
        self.add(&format!("{family}_min"), "gauge", "", labels, st.min);
        self.add(&format!("{family}_max"), "gauge", "", labels, st.max);
    }

    fn rates(&mut self, base: &str, labels: &[(String, String)], m: &MeterSnapshot, time: f64) {
        let family = format!("{base}_rate");
        let windows = [
            ("current", m.current),
            ("1m", m.m1),
            ("5m", m.m5),
            ("15m", m.m15),
            ("mean", m.mean(time)),
        ];
        for (window, rate) in windows {
            self.add_with(&family, "gauge", "", labels, Some(("window", window)), rate);
        }
    }

    fn render(self) -> String {
        let mut out = String::new();
        for (name, family) in self.0 {
            let _ = writeln!(out, "# TYPE {name} {}", family.kind);
            for line in family.lines {
                out.push_str(&line);
                out.push('\n');
            }
        }
        out
    }
}

fn total(base: &str) -> String {
    if base.ends_with("_total") {
        base.to_owned()
    } else {
        format!("{base}_total")
    }
}

/// `[a-zA-Z_:][a-zA-Z0-9_:]*`, anything else replaced by `_`.
fn metric_name(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == ':' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if !out.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_' || c == ':') {
        out.insert(0, '_');
    }
    out
}

/// `[a-zA-Z_][a-zA-Z0-9_]*`, anything else replaced by `_`.
fn label_name(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if !out.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
        out.insert(0, '_');
    }
    out
}

/// `urls` → `url`, `pools` → `pool`; `pool`, `process` and `s` stay.
fn singular(group: &str) -> &str {
    match group.strip_suffix('s') {
        Some(stem) if !stem.is_empty() && !stem.ends_with('s') => stem,
        _ => group,
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        v.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::super::Registry;
    use super::*;
    use regex::Regex;
    use std::collections::HashSet;

    fn sample_registry() -> Registry {
        let r = Registry::new();
        for i in 1..=100 {
            r.timer("api.response").update_ms(f64::from(i));
            r.timer("urls./account/get.response")
                .update_ms(f64::from(i) / 10.0);
        }
        r.timer("urls./img/lo\"go.png.response").update_ms(1.0);
        r.timer("pool.sqlite.response").update_ms(0.5);
        r.meter("api.count").mark(5);
        r.histogram("api.queue").update(3.0);
        r.counter("pool.sqlite.errors").add(1);
        r.counter("cache.hits").add(10);
        r.gauge("rss").set(123.0);
        r.gauge("9lives").set(f64::INFINITY);
        r
    }

    #[test]
    fn text_is_well_formed() {
        let text = sample_registry().snapshot().to_prometheus("bkjs");
        let type_line = Regex::new(r"^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|summary)$")
            .expect("regex");
        let label = r#"[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\["\\n])*""#;
        let sample = Regex::new(&format!(
            r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{{{label}(?:,{label})*\}})? (NaN|[+-]Inf|-?[0-9]+(?:\.[0-9]+)?(?:e[+-]?[0-9]+)?)$"
        ))
        .expect("regex");
        let mut declared: HashSet<String> = HashSet::new();
        let mut current: Option<(String, String)> = None;
        for line in text.lines() {
            if let Some(c) = type_line.captures(line) {
                assert!(
                    declared.insert(c[1].to_owned()),
                    "family declared twice: {line}"
                );
                current = Some((c[1].to_owned(), c[2].to_owned()));
                continue;
            }
            let c = sample
                .captures(line)
                .unwrap_or_else(|| panic!("malformed line: {line}"));
            let (family, kind) = current.as_ref().expect("sample before any TYPE");
            let name = &c[1];
            let ok = name == family
                || (kind == "summary"
                    && [format!("{family}_sum"), format!("{family}_count")]
                        .contains(&name.to_owned()));
            assert!(ok, "sample {name} outside its family {family}");
        }
        for expected in [
            "# TYPE bkjs_urls_response_ms summary",
            r#"bkjs_urls_response_ms{url="/account/get",quantile="0.99"} "#,
            r#"bkjs_urls_response_ms_count{url="/account/get"} 100"#,
            r#"bkjs_urls_response_ms_count{url="/img/lo\"go.png"} 1"#,
            r#"bkjs_pool_response_ms_sum{pool="sqlite"} 0.5"#,
            r#"bkjs_pool_errors_total{pool="sqlite"} 1"#,
            "# TYPE bkjs_api_count_total counter",
            "bkjs_api_count_total 5",
            r#"bkjs_api_count_rate{window="1m"} 0"#,
            r#"bkjs_api_response_rate{window="15m"} "#,
            "bkjs_api_response_ms_max 100",
            r#"bkjs_api_queue{quantile="0.5"} 3"#,
            "bkjs_cache_hits_total 10",
            "bkjs_rss 123",
            "bkjs_9lives 0",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in\n{text}");
        }
    }

    #[test]
    fn names_are_sanitised() {
        assert_eq!(metric_name("bkjs_a-b.c"), "bkjs_a_b_c");
        assert_eq!(metric_name("9x"), "_9x");
        assert_eq!(label_name("x:y"), "x_y");
        assert_eq!(
            (singular("urls"), singular("pool"), singular("process")),
            ("url", "pool", "process")
        );
        assert_eq!(Snapshot::default().to_prometheus("bkjs"), "");
        let r = Registry::new();
        r.counter("x").add(1);
        assert_eq!(
            r.snapshot().to_prometheus(""),
            "# TYPE x_total counter\nx_total 1\n"
        );
    }
}
