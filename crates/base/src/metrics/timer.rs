//! [`Timer`]: how often something happens and how long it takes, a [`Meter`] and a
//! [`Histogram`] of durations in milliseconds updated together, as the request path needs them
//! (`api.response`, `urls.PATH.response`, `pool.NAME.response`).

use super::{Histogram, HistogramSnapshot, Meter, MeterSnapshot};
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

/// A meter of events and a histogram of their durations in milliseconds.
#[derive(Debug, Default)]
pub struct Timer {
    meter: Meter,
    histogram: Histogram,
}

impl Timer {
    pub fn new() -> Timer {
        Timer::default()
    }

    /// Records one event that took `ms` milliseconds.
    pub(crate) fn update_ms(&self, ms: f64) {
        self.update_ms_at(ms, Instant::now());
    }

    /// Records one event that took `elapsed`.
    pub fn update(&self, elapsed: Duration) {
        self.update_ms(elapsed.as_secs_f64() * 1000.0);
    }

    /// Records one event that started at `start` and ends now; returns its milliseconds.
    pub fn since(&self, start: Instant) -> f64 {
        let now = Instant::now();
        let ms = now.saturating_duration_since(start).as_secs_f64() * 1000.0;
        self.update_ms_at(ms, now);
        ms
    }

    pub(crate) fn update_ms_at(&self, ms: f64, now: Instant) {
        self.meter.mark_at(1, now);
        self.histogram.update_at(ms, now);
    }

    pub fn meter(&self) -> &Meter {
        &self.meter
    }

    pub fn histogram(&self) -> &Histogram {
        &self.histogram
    }

    pub fn snapshot(&self) -> TimerSnapshot {
        self.snapshot_at(Instant::now())
    }

    pub(crate) fn snapshot_at(&self, now: Instant) -> TimerSnapshot {
        TimerSnapshot {
            meter: self.meter.snapshot_at(now),
            histogram: self.histogram.snapshot(),
        }
    }
}

/// A timer's meter and histogram at one time, or several processes' merged.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TimerSnapshot {
    pub meter: MeterSnapshot,
    pub histogram: HistogramSnapshot,
}

impl TimerSnapshot {
    pub fn merge(&mut self, other: &TimerSnapshot) {
        self.meter.merge(&other.meter);
        self.histogram.merge(&other.histogram);
    }

    /// One object: the meter's fields, then the histogram's, which win on `count` and `mean`;
    /// the meter's mean rate is kept as `meanRate`.
    pub(crate) fn write_json(
        &self,
        time: f64,
        out: &mut serde_json::Map<String, serde_json::Value>,
    ) {
        self.meter.write_json(time, out);
        out.insert(
            "meanRate".into(),
            super::finite(self.meter.mean(time)).into(),
        );
        self.histogram.stats().write_json(out);
    }
}
