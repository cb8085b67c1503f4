//! The allocator's own figures, `heap.committed` and `heap.peak_committed` (bytes) in
//! `/system/stats` and `/metrics`: what the heap holds, which RSS alone does not tell (RSS also
//! counts stacks, code and the page cache of mapped files). Only the binary knows its global
//! allocator, so it registers a probe ([`set_heap_probe`]; the stock `bkjs` asks mimalloc); with
//! none registered the figures are absent. Each process reports its own at every snapshot;
//! merged over the server and its workers they add up like `rss`.

use super::{MetricSnapshot, Snapshot};
use std::sync::OnceLock;

/// What the allocator says about this process, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HeapFigures {
    /// Memory the allocator has committed (reserved read/write) now.
    pub committed: u64,
    /// The most it has committed since the process started.
    pub peak_committed: u64,
}

static PROBE: OnceLock<fn() -> HeapFigures> = OnceLock::new();

/// Registers the function that reads the global allocator's figures; the first call wins.
pub fn set_heap_probe(probe: fn() -> HeapFigures) {
    let _ = PROBE.set(probe);
}

/// Adds this process's heap gauges to `snap` when a probe is registered.
pub(crate) fn add_to(snap: &mut Snapshot) {
    let Some(probe) = PROBE.get() else { return };
    let h = probe();
    snap.metrics.insert(
        "heap.committed".into(),
        MetricSnapshot::Gauge(h.committed as f64),
    );
    snap.metrics.insert(
        "heap.peak_committed".into(),
        MetricSnapshot::Gauge(h.peak_committed as f64),
    );
}
