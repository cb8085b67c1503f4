//! [`FacadeRecorder`]: lets code written against the `metrics` crate facade (`counter!`,
//! `gauge!`, `histogram!`, as libraries use) record into a [`Registry`], so its figures reach
//! `/system/stats` and `/metrics` with ours. The facade has no meters or timers; bkjs's own
//! request path uses [`Registry::timer`] directly.
//!
//! A facade key `group.metric` with labels becomes `group.VALUES.metric`, the label values
//! joined by `,` (`histogram!("pool.response", "pool" => "sqlite")` records into
//! `pool.sqlite.response`); a key without a dot gets them after it (`hits` → `hits.VALUES`).
//! Descriptions and units are ignored.

use super::{Counter, Gauge, Histogram, MetricsError, Registry};
use ::metrics::{CounterFn, GaugeFn, HistogramFn, Key, KeyName, Metadata, SharedString, Unit};

/// A `metrics::Recorder` writing into a [`Registry`].
#[derive(Debug, Clone)]
pub struct FacadeRecorder {
    registry: Registry,
}

impl FacadeRecorder {
    pub fn new(registry: Registry) -> FacadeRecorder {
        FacadeRecorder { registry }
    }

    /// Makes this the process's recorder for the facade macros; once per process.
    pub fn install(self) -> Result<(), MetricsError> {
        ::metrics::set_global_recorder(self).map_err(|_| MetricsError::RecorderInstalled)
    }
}

/// Our dotted name of a facade key.
fn dotted(key: &Key) -> String {
    let values: Vec<&str> = key.labels().map(|l| l.value()).collect();
    if values.is_empty() {
        return key.name().to_owned();
    }
    let values = values.join(",");
    match key.name().split_once('.') {
        Some((group, rest)) => format!("{group}.{values}.{rest}"),
        None => format!("{}.{values}", key.name()),
    }
}

impl ::metrics::Recorder for FacadeRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> ::metrics::Counter {
        ::metrics::Counter::from_arc(self.registry.counter(&dotted(key)))
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> ::metrics::Gauge {
        ::metrics::Gauge::from_arc(self.registry.gauge(&dotted(key)))
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> ::metrics::Histogram {
        ::metrics::Histogram::from_arc(self.registry.histogram(&dotted(key)))
    }
}

impl CounterFn for Counter {
    fn increment(&self, value: u64) {
        self.add(i64::try_from(value).unwrap_or(i64::MAX));
    }

    fn absolute(&self, value: u64) {
        self.set(i64::try_from(value).unwrap_or(i64::MAX));
    }
}

impl GaugeFn for Gauge {
    fn increment(&self, value: f64) {
        self.add(value);
    }

    fn decrement(&self, value: f64) {
        self.add(-value);
    }

    fn set(&self, value: f64) {
        Gauge::set(self, value);
    }
}

impl HistogramFn for Histogram {
    fn record(&self, value: f64) {
        self.update(value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facade_macros_land_in_the_registry() {
        let registry = Registry::new();
        let recorder = FacadeRecorder::new(registry.clone());
        ::metrics::with_local_recorder(&recorder, || {
            ::metrics::counter!("cache.hits").increment(3);
            ::metrics::counter!("cache.hits").increment(2);
            ::metrics::gauge!("api.busy").set(4.0);
            ::metrics::gauge!("api.busy").decrement(1.0);
            ::metrics::histogram!("pool.response", "pool" => "sqlite").record(2.5);
            ::metrics::histogram!("latency", "a" => "x", "b" => "y").record(1.0);
        });
        assert_eq!(registry.counter("cache.hits").get(), 5);
        assert_eq!(registry.gauge("api.busy").get(), 3.0);
        assert_eq!(registry.histogram("pool.sqlite.response").count(), 1);
        assert_eq!(registry.histogram("latency.x,y").count(), 1);
        let json = registry.snapshot().to_json();
        assert_eq!(json["pool"]["sqlite"]["response"]["max"], 2.5);
    }
}
