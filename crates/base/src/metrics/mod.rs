//! Metrics (docs/stats.md): counters, gauges, meters, histograms and timers kept per process in a
//! [`Registry`], turned into a mergeable, serialisable [`Snapshot`] that each web worker sends to
//! the server, which merges the workers' snapshots ([`Aggregate`]) into one machine-wide view
//! for `/system/stats` ([`Snapshot::to_json`]) and `/metrics` ([`Snapshot::to_prometheus`]).
//!
//! # Kinds
//! - [`Counter`]: an `i64` that is added to.
//! - [`Gauge`]: an `f64` that is set (used by the `metrics` facade's `gauge!`).
//! - [`Meter`]: events per second: `{mean, count, currentRate, 1MinuteRate, 5MinuteRate,
//!   15MinuteRate}`, EWMA rates with a 5 s tick (codahale metrics), ticked lazily on the next
//!   update or read, so no background task exists.
//! - [`Histogram`]: an exponentially decaying reservoir of 1028 samples, alpha 0.015 (forward
//!   decay, Cormode et al.): `{min, max, sum, variance, mean, stddev, count, median, p75, p95,
//!   p99, p999}`. `min`, `max`, `sum` and `count` cover every update; the quantiles, `mean`,
//!   `variance` and `stddev` come from the weighted reservoir, so they describe roughly the last
//!   five minutes.
//! - [`Timer`]: a meter and a histogram of durations in milliseconds. Its JSON is one object with
//!   the fields of both; where they share a name the histogram's wins (`count` is the number of
//!   updates either way, `mean` is the mean duration in ms) and the meter's mean rate is given as
//!   `meanRate`.
//!
//! # Names
//! A name is `group.metric` or `group.label.metric`: the group runs to the first dot, the metric
//! is after the last dot, and whatever lies between is the label, taken verbatim (it may hold
//! dots and slashes): `api.response`, `urls./account/get.response`, `pool.sqlite.response`,
//! `urls./img/logo.png.count`. A name without a dot is a metric of its own with no group. A
//! labelled name must therefore always end in a metric name. [`Snapshot::to_json`] nests on
//! these parts (`{"urls": {"/account/get": {"response": {...}}}}`), and
//! [`Snapshot::to_prometheus`] turns the label into a Prometheus label named after the group
//! (a final plural `s` dropped: `bkjs_urls_response_ms{url="/account/get",quantile="0.99"}`).
//!
//! # Hot path
//! [`Registry::timer`] and friends take a read lock on the name map and hash the name (no
//! allocation when the metric exists) and return an `Arc` the caller may keep; an update then
//! takes only that metric's own short mutex (atomics for counters and gauges).
//!
//! # Across processes
//! Every histogram sample carries its forward-decay weight and priority as logarithms relative
//! to one landmark shared by all processes (a fixed wall-clock instant), so reservoirs of
//! different workers are directly comparable and merging keeps the 1028 highest priorities of
//! their union: exactly the reservoir one process would have kept had it seen every update
//! (priority sampling is mergeable). Working with logarithms also makes codahale's hourly
//! rescaling unnecessary: the weights cannot overflow. See [`Snapshot::merge`] and
//! [`Aggregate`].
//!
//! # The `metrics` facade
//! [`FacadeRecorder`] implements `metrics::Recorder` over a [`Registry`]: `counter!` lands in a
//! [`Counter`], `gauge!` in a [`Gauge`], `histogram!` in a [`Histogram`]. The facade has no
//! timers or meters, so the request path uses [`Registry::timer`] directly.

mod heap;
mod histogram;
mod meter;
mod prometheus;
mod recorder;
mod registry;
mod snapshot;
mod timer;

pub use heap::{set_heap_probe, HeapFigures};
pub use histogram::{Histogram, HistogramSnapshot, HistogramStats};
pub use meter::{Counter, Gauge, Meter, MeterSnapshot, TICK};
pub use recorder::FacadeRecorder;
pub use registry::Registry;
pub use snapshot::{Aggregate, MetricSnapshot, Snapshot};
pub use timer::{Timer, TimerSnapshot};

/// What can go wrong setting metrics up.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// `metrics::set_global_recorder` was already called in this process.
    #[error("a global metrics recorder is already installed")]
    RecorderInstalled,
}

/// The parts of a metric name: see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NameParts<'a> {
    pub group: Option<&'a str>,
    pub label: Option<&'a str>,
    pub metric: &'a str,
}

/// Splits `group[.label].metric`: group up to the first dot, metric after the last one.
pub(crate) fn split_name(name: &str) -> NameParts<'_> {
    let Some((group, rest)) = name.split_once('.') else {
        return NameParts {
            group: None,
            label: None,
            metric: name,
        };
    };
    match rest.rsplit_once('.') {
        Some((label, metric)) => NameParts {
            group: Some(group),
            label: Some(label),
            metric,
        },
        None => NameParts {
            group: Some(group),
            label: None,
            metric: rest,
        },
    }
}

/// Wall-clock time, in Unix seconds, of a monotonic instant.
///
/// The wall clock is read once per process; later times are derived from `Instant`, so they
/// never step backwards, and instants can be injected by tests. Processes of one machine share
/// the wall clock, so their times agree to within its precision.
pub(crate) fn unix_secs(now: std::time::Instant) -> f64 {
    use std::sync::OnceLock;
    use std::time::{Instant, SystemTime, UNIX_EPOCH};
    static BASE: OnceLock<(Instant, f64)> = OnceLock::new();
    let (at, wall) = *BASE.get_or_init(|| {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64());
        (Instant::now(), wall.unwrap_or(0.0))
    });
    match now.checked_duration_since(at) {
        Some(ahead) => wall + ahead.as_secs_f64(),
        None => wall - at.duration_since(now).as_secs_f64(),
    }
}

/// Replaces NaN and infinities, which JSON cannot carry, by zero.
pub fn finite(v: f64) -> f64 {
    if v.is_finite() {
        v
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_split_on_first_and_last_dot() {
        let p = |group, label, metric| NameParts {
            group,
            label,
            metric,
        };
        assert_eq!(split_name("rss"), p(None, None, "rss"));
        assert_eq!(split_name("api.response"), p(Some("api"), None, "response"));
        assert_eq!(
            split_name("pool.sqlite.response"),
            p(Some("pool"), Some("sqlite"), "response")
        );
        assert_eq!(
            split_name("urls./img/logo.png.count"),
            p(Some("urls"), Some("/img/logo.png"), "count")
        );
    }

    #[test]
    fn clock_follows_instants() {
        let now = std::time::Instant::now();
        let a = unix_secs(now);
        let b = unix_secs(now + std::time::Duration::from_secs(10));
        assert!((b - a - 10.0).abs() < 1e-6);
        assert!(a > 1.6e9, "wall clock looks unset: {a}");
    }
}
