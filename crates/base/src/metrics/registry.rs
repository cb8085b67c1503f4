//! [`Registry`]: a process's metrics by name, shared by every task of the process. Lookups of
//! an existing metric take a read lock and do not allocate; the returned `Arc` may be kept so
//! the hot path skips even that.

use super::{unix_secs, Counter, Gauge, Histogram, Meter, MetricSnapshot, Snapshot, Timer};
use parking_lot::RwLock;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

/// A process's metrics by name. Cheap to clone: clones share the metrics.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    metrics: Arc<RwLock<HashMap<String, Metric>>>,
}

/// One registered metric.
#[derive(Debug, Clone)]
enum Metric {
    Counter(Arc<Counter>),
    Gauge(Arc<Gauge>),
    Meter(Arc<Meter>),
    Histogram(Arc<Histogram>),
    Timer(Arc<Timer>),
}

impl Metric {
    fn kind(&self) -> &'static str {
        match self {
            Metric::Counter(_) => "counter",
            Metric::Gauge(_) => "gauge",
            Metric::Meter(_) => "meter",
            Metric::Histogram(_) => "histogram",
            Metric::Timer(_) => "timer",
        }
    }

    fn snapshot(&self, now: Instant) -> MetricSnapshot {
        match self {
            Metric::Counter(c) => MetricSnapshot::Counter(c.get()),
            Metric::Gauge(g) => MetricSnapshot::Gauge(super::finite(g.get())),
            Metric::Meter(m) => MetricSnapshot::Meter(m.snapshot_at(now)),
            Metric::Histogram(h) => MetricSnapshot::Histogram(h.snapshot()),
            Metric::Timer(t) => MetricSnapshot::Timer(t.snapshot_at(now)),
        }
    }
}

/// Generates the typed accessor of one kind of metric.
macro_rules! accessor {
    ($(#[$doc:meta])* $fn:ident, $variant:ident, $ty:ty) => {
        $(#[$doc])*
        pub fn $fn(&self, name: &str) -> Arc<$ty> {
            self.get_or_create(
                name,
                |m| match m {
                    Metric::$variant(x) => Some(Arc::clone(x)),
                    _ => None,
                },
                |x| Metric::$variant(x),
            )
        }
    };
}

impl Registry {
    pub fn new() -> Registry {
        Registry::default()
    }

    /// The process-wide registry, for code that has no handle on one.
    pub fn global() -> &'static Registry {
        static GLOBAL: OnceLock<Registry> = OnceLock::new();
        GLOBAL.get_or_init(Registry::new)
    }

    accessor!(
        /// The counter `name`, created at zero if missing.
        counter, Counter, Counter
    );
    accessor!(
        /// The gauge `name`, created at zero if missing.
        gauge, Gauge, Gauge
    );
    accessor!(
        /// The meter `name`, started now if missing.
        meter, Meter, Meter
    );
    accessor!(
        /// The histogram `name`, created empty if missing.
        histogram, Histogram, Histogram
    );
    accessor!(
        /// The timer `name` (milliseconds), created empty if missing.
        timer, Timer, Timer
    );

    /// The metric `name` of the kind `pick` accepts, created by `wrap` if missing. A name
    /// registered as another kind is a programming error: it is logged and the caller gets a
    /// metric that is not registered, so the request still goes through.
    fn get_or_create<T: Default>(
        &self,
        name: &str,
        pick: fn(&Metric) -> Option<Arc<T>>,
        wrap: fn(Arc<T>) -> Metric,
    ) -> Arc<T> {
        let existing = self
            .metrics
            .read()
            .get(name)
            .map(|m| pick(m).ok_or(m.kind()));
        let found = match existing {
            Some(found) => found,
            None => {
                let mut map = self.metrics.write();
                let entry = map
                    .entry(name.to_owned())
                    .or_insert_with(|| wrap(Arc::default()));
                pick(entry).ok_or(entry.kind())
            }
        };
        found.unwrap_or_else(|kind| {
            tracing::warn!(
                metric = name,
                registered = kind,
                "metric used as another kind; not recorded"
            );
            Arc::default()
        })
    }

    /// Number of metrics.
    pub fn len(&self) -> usize {
        self.metrics.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every metric's figures now: what a worker sends to the server.
    /// Every metric now, plus this process's `heap.*` gauges when the binary registered an
    /// allocator probe ([`super::set_heap_probe`]).
    pub fn snapshot(&self) -> Snapshot {
        let mut snap = self.snapshot_at(Instant::now());
        super::heap::add_to(&mut snap);
        snap
    }

    pub(crate) fn snapshot_at(&self, now: Instant) -> Snapshot {
        // Copy the handles first so that no metric's lock is taken under the map's.
        let handles: Vec<(String, Metric)> = self
            .metrics
            .read()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let metrics: BTreeMap<String, MetricSnapshot> = handles
            .into_iter()
            .map(|(name, m)| (name, m.snapshot(now)))
            .collect();
        Snapshot {
            time: unix_secs(now),
            metrics,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_name_same_metric() {
        let r = Registry::new();
        r.counter("api.errors").add(2);
        r.clone().counter("api.errors").add(3);
        assert_eq!(r.counter("api.errors").get(), 5);
        assert!(Arc::ptr_eq(
            &r.timer("api.response"),
            &r.timer("api.response")
        ));
        assert_eq!(r.len(), 2);
    }

    #[test]
    fn kind_mismatch_is_not_recorded() {
        let r = Registry::new();
        r.meter("api.count").mark(1);
        r.counter("api.count").add(7);
        assert_eq!(r.len(), 1);
        assert!(matches!(
            r.snapshot().metrics["api.count"],
            MetricSnapshot::Meter(_)
        ));
    }

    #[test]
    fn shared_across_threads() {
        fn send_sync<T: Send + Sync + 'static>() {}
        send_sync::<Registry>();
        let r = Registry::new();
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let r = r.clone();
                std::thread::spawn(move || {
                    for i in 0..1000 {
                        r.timer("api.response").update_ms(f64::from(i));
                        r.meter("api.count").mark(1);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        let s = r.snapshot();
        match (&s.metrics["api.response"], &s.metrics["api.count"]) {
            (MetricSnapshot::Timer(t), MetricSnapshot::Meter(m)) => {
                assert_eq!(
                    (t.histogram.count, t.meter.count, m.count),
                    (4000, 4000, 4000)
                );
            }
            other => panic!("unexpected kinds {other:?}"),
        }
    }
}
