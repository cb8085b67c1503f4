//! [`Snapshot`]: every metric of a registry at one time, in a form that serialises (workers send
//! it to the server over IPC) and merges (the server adds up its workers' snapshots, through
//! [`Aggregate`], into the machine-wide figures of `/system/stats` and `/metrics`).

use super::{split_name, HistogramSnapshot, MeterSnapshot, TimerSnapshot};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap};

/// The figures of one metric.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MetricSnapshot {
    Counter(i64),
    Gauge(f64),
    Meter(MeterSnapshot),
    Histogram(HistogramSnapshot),
    Timer(TimerSnapshot),
}

impl MetricSnapshot {
    /// Adds another process's figures of the same metric; false if the kinds differ.
    fn merge(&mut self, other: &MetricSnapshot) -> bool {
        match (self, other) {
            (MetricSnapshot::Counter(a), MetricSnapshot::Counter(b)) => *a = a.saturating_add(*b),
            (MetricSnapshot::Gauge(a), MetricSnapshot::Gauge(b)) => *a += b,
            (MetricSnapshot::Meter(a), MetricSnapshot::Meter(b)) => a.merge(b),
            (MetricSnapshot::Histogram(a), MetricSnapshot::Histogram(b)) => a.merge(b),
            (MetricSnapshot::Timer(a), MetricSnapshot::Timer(b)) => a.merge(b),
            _ => return false,
        }
        true
    }

    /// The JSON of docs/stats.md as of `time`: a number for counters and gauges, an object otherwise.
    pub fn to_json(&self, time: f64) -> Value {
        let mut out = Map::new();
        match self {
            MetricSnapshot::Counter(n) => return (*n).into(),
            MetricSnapshot::Gauge(v) => return super::finite(*v).into(),
            MetricSnapshot::Meter(m) => m.write_json(time, &mut out),
            MetricSnapshot::Histogram(h) => h.stats().write_json(&mut out),
            MetricSnapshot::Timer(t) => t.write_json(time, &mut out),
        }
        Value::Object(out)
    }
}

/// Every metric of a registry, or of several processes merged, at one time.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// When it was taken, Unix seconds; the latest of merged snapshots.
    pub time: f64,
    /// Metrics by full name (see the module documentation for the naming rule).
    pub metrics: BTreeMap<String, MetricSnapshot>,
}

impl Snapshot {
    /// Adds another process's snapshot: counters, gauges, counts, sums and rates add up, min and
    /// max combine, meters keep the earliest start, histogram reservoirs keep the highest
    /// priorities of both. A name that is another kind here is skipped.
    pub fn merge(&mut self, other: &Snapshot) {
        self.time = self.time.max(other.time);
        for (name, theirs) in &other.metrics {
            match self.metrics.get_mut(name) {
                Some(ours) => {
                    if !ours.merge(theirs) {
                        tracing::debug!(metric = %name, "metric of different kinds across processes");
                    }
                }
                None => {
                    self.metrics.insert(name.clone(), theirs.clone());
                }
            }
        }
    }

    /// What remains worth keeping of an exited process: its counts, sums and samples, not its
    /// rates or gauges, which described it while it ran.
    pub(crate) fn retired(&self) -> Snapshot {
        let mut out = self.clone();
        out.metrics
            .retain(|_, m| !matches!(m, MetricSnapshot::Gauge(_)));
        for m in out.metrics.values_mut() {
            match m {
                MetricSnapshot::Meter(m) => m.retire(),
                MetricSnapshot::Timer(t) => t.meter.retire(),
                _ => {}
            }
        }
        out
    }

    /// The metrics as nested objects: `group.metric` becomes `{"group": {"metric": ...}}` and
    /// `group.label.metric` becomes `{"group": {"label": {"metric": ...}}}`. A name whose place
    /// is already taken (`api` next to `api.response`) is left out.
    pub fn to_json(&self) -> Value {
        let mut root = Map::new();
        for (name, metric) in &self.metrics {
            let p = split_name(name);
            let path: Vec<&str> = p
                .group
                .into_iter()
                .chain(p.label)
                .chain([p.metric])
                .collect();
            if !insert(&mut root, &path, metric.to_json(self.time)) {
                tracing::debug!(metric = %name, "metric name clashes with a group; left out");
            }
        }
        Value::Object(root)
    }
}

/// Puts `value` at `path` under `root`, creating objects on the way; false on a clash.
fn insert(root: &mut Map<String, Value>, path: &[&str], value: Value) -> bool {
    let Some((last, parents)) = path.split_last() else {
        return false;
    };
    let mut node = root;
    for part in parents {
        let slot = node
            .entry(part.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        node = match slot {
            Value::Object(m) => m,
            _ => return false,
        };
    }
    if node.contains_key(*last) {
        return false;
    }
    node.insert(last.to_string(), value);
    true
}

/// The server's view of its workers: the latest snapshot of each live worker, plus what exited
/// workers left behind, so that machine-wide counts never go backwards when a worker is
/// replaced.
#[derive(Debug, Clone, Default)]
pub struct Aggregate {
    live: HashMap<u32, Snapshot>,
    retired: Snapshot,
}

impl Aggregate {
    pub fn new() -> Aggregate {
        Aggregate::default()
    }

    /// Replaces worker `pid`'s snapshot by a newer one (snapshots are cumulative).
    pub fn update(&mut self, pid: u32, snapshot: Snapshot) {
        self.live.insert(pid, snapshot);
    }

    /// Worker `pid` exited: its counts stay in the totals, its rates and gauges go.
    pub fn remove(&mut self, pid: u32) {
        if let Some(last) = self.live.remove(&pid) {
            self.retired.merge(&last.retired());
        }
    }

    /// Pids with a snapshot.
    pub fn workers(&self) -> impl Iterator<Item = u32> + '_ {
        self.live.keys().copied()
    }

    /// All workers' figures merged, live and exited.
    pub fn total(&self) -> Snapshot {
        let mut out = self.retired.clone();
        for s in self.live.values() {
            out.merge(s);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::super::histogram::RESERVOIR_SIZE;
    use super::super::Registry;
    use super::*;
    use std::time::{Duration, Instant};

    fn keys(v: &Value) -> Vec<&str> {
        let mut k: Vec<&str> = v
            .as_object()
            .expect("object")
            .keys()
            .map(|s| s.as_str())
            .collect();
        k.sort_unstable();
        k
    }

    #[test]
    fn json_shape() {
        let r = Registry::new();
        let t0 = Instant::now();
        r.timer("api.response").update_ms_at(12.5, t0);
        r.timer("urls./account/get.response").update_ms_at(3.0, t0);
        r.timer("pool.sqlite.response").update_ms_at(1.0, t0);
        r.meter("api.count").mark_at(3, t0);
        r.histogram("api.queue").update_at(2.0, t0);
        r.counter("pool.sqlite.errors").add(2);
        r.gauge("rss").set(1024.0);
        let json = r.snapshot_at(t0 + Duration::from_secs(10)).to_json();

        assert_eq!(keys(&json), ["api", "pool", "rss", "urls"]);
        assert_eq!(keys(&json["api"]), ["count", "queue", "response"]);
        assert_eq!(
            keys(&json["api"]["count"]),
            [
                "15MinuteRate",
                "1MinuteRate",
                "5MinuteRate",
                "count",
                "currentRate",
                "mean"
            ]
        );
        let histogram = [
            "count", "max", "mean", "median", "min", "p75", "p95", "p99", "p999", "stddev", "sum",
            "variance",
        ];
        assert_eq!(keys(&json["api"]["queue"]), histogram);
        let mut timer: Vec<&str> = histogram.to_vec();
        timer.extend([
            "15MinuteRate",
            "1MinuteRate",
            "5MinuteRate",
            "currentRate",
            "meanRate",
        ]);
        timer.sort_unstable();
        assert_eq!(keys(&json["api"]["response"]), timer);
        assert_eq!(keys(&json["urls"]["/account/get"]["response"]), timer);
        assert_eq!(json["pool"]["sqlite"]["errors"], 2);
        assert_eq!(json["rss"], 1024.0);
        assert_eq!(json["api"]["count"]["count"], 3);
        // Meters start when first looked up, a moment after t0.
        let near = |v: &Value, x: f64| (v.as_f64().expect("number") - x).abs() < 0.01;
        assert!(near(&json["api"]["count"]["mean"], 0.3));
        assert!(near(&json["api"]["response"]["meanRate"], 0.1));
        assert_eq!(json["api"]["response"]["mean"], 12.5);
        assert_eq!(json["api"]["response"]["count"], 1);
    }

    #[test]
    fn clashing_names_keep_the_first() {
        let r = Registry::new();
        r.counter("api").add(1);
        r.counter("api.errors").add(1);
        assert_eq!(r.snapshot().to_json(), serde_json::json!({"api": 1}));
    }

    #[test]
    fn merge_adds_up_workers() {
        let t0 = Instant::now();
        let (a, b) = (Registry::new(), Registry::new());
        for i in 1..=5000 {
            a.timer("api.response").update_ms_at(f64::from(i), t0);
            b.timer("api.response")
                .update_ms_at(f64::from(i + 5000), t0);
        }
        a.counter("api.errors").add(2);
        b.counter("api.errors").add(3);
        b.gauge("api.busy").set(4.0);
        let later = t0 + Duration::from_secs(10);

        // As the server gets them: through JSON.
        let wire = |r: &Registry| {
            let text = serde_json::to_vec(&r.snapshot_at(later)).expect("encode");
            serde_json::from_slice::<Snapshot>(&text).expect("decode")
        };
        let mut total = wire(&a);
        total.merge(&wire(&b));
        let json = total.to_json();
        assert_eq!(json["api"]["errors"], 5);
        assert_eq!(json["api"]["busy"], 4.0);
        let t = &json["api"]["response"];
        assert_eq!(t["count"], 10000);
        assert_eq!(
            (t["min"].as_f64(), t["max"].as_f64()),
            (Some(1.0), Some(10000.0))
        );
        assert_eq!(t["sum"], 50_005_000.0);
        // A reservoir of 1028 random samples estimates quantile q with a standard error of
        // sqrt(q(1-q)/1028) of the range; allow six of them (a merge that kept only one worker's
        // samples would be off by a quarter of the range).
        for (q, field) in [(0.5, "median"), (0.75, "p75"), (0.95, "p95"), (0.99, "p99")] {
            let got = t[field].as_f64().expect("number");
            let tolerance = 6.0 * (q * (1.0 - q) / RESERVOIR_SIZE as f64).sqrt() * 10000.0 + 10.0;
            assert!(
                (got - 10000.0 * q).abs() < tolerance,
                "{field} = {got}, tolerance {tolerance}"
            );
        }
        // Each worker's first window held 5000 events, 1000/s: the machine did 2000/s.
        assert_eq!(t["1MinuteRate"], 2000.0);
    }

    #[test]
    fn wire_size() {
        // A busy worker: 10 full timers, 10 meters, 10 counters.
        let r = Registry::new();
        for i in 0..10 {
            let t = r.timer(&format!("urls./path{i}/get.response"));
            for v in 0..2000 {
                t.update_ms(f64::from(v) * 0.37);
            }
            r.meter(&format!("pool.db{i}.count")).mark(5);
            r.counter(&format!("pool.db{i}.errors")).add(1);
        }
        let bytes = serde_json::to_vec(&r.snapshot()).expect("encode").len();
        eprintln!("snapshot of 30 metrics, 10 full reservoirs: {bytes} bytes");
        assert!(bytes < 10 * 17_000 + 20 * 200, "{bytes} bytes");
        let one = Registry::new();
        one.timer("api.response").update_ms(1.0);
        let bytes = serde_json::to_vec(&one.snapshot()).expect("encode").len();
        eprintln!("snapshot of one timer with one sample: {bytes} bytes");
        assert!(bytes < 300, "{bytes} bytes");
    }

    #[test]
    fn aggregate_keeps_counts_of_exited_workers() {
        let t0 = Instant::now();
        let (a, b) = (Registry::new(), Registry::new());
        a.meter("api.count").mark_at(10, t0);
        b.meter("api.count").mark_at(20, t0);
        a.gauge("api.busy").set(1.0);
        let later = t0 + Duration::from_secs(6);
        let mut agg = Aggregate::new();
        agg.update(1, a.snapshot_at(later));
        agg.update(2, b.snapshot_at(later));
        agg.update(2, b.snapshot_at(later));
        let count = |s: &Snapshot| match &s.metrics["api.count"] {
            MetricSnapshot::Meter(m) => (m.count, m.m1),
            other => panic!("not a meter: {other:?}"),
        };
        assert_eq!(count(&agg.total()), (30, 6.0));
        agg.remove(1);
        assert_eq!(count(&agg.total()), (30, 4.0), "count stays, rate goes");
        assert!(!agg.total().metrics.contains_key("api.busy"));
        assert_eq!(agg.workers().collect::<Vec<_>>(), [2]);
    }
}
