//! [`Histogram`]: the distribution of a value, from an exponentially decaying reservoir of 1028
//! samples with alpha 0.015 (forward decay, Cormode et al., as codahale's
//! ExponentiallyDecayingReservoir), plus exact min, max, sum and count over every update.
//!
//! A sample taken at time `t` has weight `w = exp(alpha * (t - L))` and priority `w / u` with `u`
//! uniform in (0, 1]; the reservoir keeps the highest priorities. Both are kept as natural
//! logarithms, relative to a landmark `L` that every process shares (a fixed wall-clock
//! instant): logarithms cannot overflow, so no hourly rescale is needed, and samples of
//! different processes compare directly, so reservoirs merge by keeping the highest priorities
//! of their union ([`HistogramSnapshot::merge`]).

use super::{finite, unix_secs};
use base64::Engine as _;
use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::collections::BinaryHeap;
use std::time::Instant;

/// Samples kept by a reservoir.
pub(crate) const RESERVOIR_SIZE: usize = 1028;
/// Forward-decay rate per second: a sample five minutes old weighs e^-4.5 of a new one.
pub(crate) const ALPHA: f64 = 0.015;
/// The landmark shared by all processes: 2024-01-01T00:00:00Z, Unix seconds.
const LANDMARK: f64 = 1_704_067_200.0;

/// One kept value with the logarithms of its weight and priority.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Sample {
    pub value: f64,
    pub log_weight: f64,
    pub log_priority: f64,
}

/// A sample ordered so that the heap's top is the lowest priority.
#[derive(Debug, Clone, Copy)]
struct Lowest(Sample);

impl PartialEq for Lowest {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == std::cmp::Ordering::Equal
    }
}
impl Eq for Lowest {}
impl PartialOrd for Lowest {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Lowest {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        other.0.log_priority.total_cmp(&self.0.log_priority)
    }
}

/// The distribution of a value.
#[derive(Debug)]
pub struct Histogram {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    count: u64,
    sum: f64,
    min: f64,
    max: f64,
    reservoir: BinaryHeap<Lowest>,
    rng: StdRng,
}

impl Default for Histogram {
    fn default() -> Histogram {
        Histogram::new()
    }
}

impl Histogram {
    pub fn new() -> Histogram {
        Histogram::with_seed(rand::random())
    }

    /// A histogram whose sampling is reproducible (tests).
    pub(crate) fn with_seed(seed: u64) -> Histogram {
        let state = State {
            count: 0,
            sum: 0.0,
            min: 0.0,
            max: 0.0,
            reservoir: BinaryHeap::new(),
            rng: StdRng::seed_from_u64(seed),
        };
        Histogram {
            state: Mutex::new(state),
        }
    }

    /// Records a value; NaN and infinities are ignored.
    pub fn update(&self, value: f64) {
        self.update_at(value, Instant::now());
    }

    pub(crate) fn update_at(&self, value: f64, now: Instant) {
        if !value.is_finite() {
            return;
        }
        let log_weight = ALPHA * (unix_secs(now) - LANDMARK);
        let mut state = self.state.lock();
        // 1 - [0, 1) is (0, 1]: the logarithm is finite.
        let u = 1.0 - state.rng.gen::<f64>();
        let sample = Sample {
            value,
            log_weight,
            log_priority: log_weight - u.ln(),
        };
        if state.count == 0 {
            state.min = value;
            state.max = value;
        } else {
            state.min = state.min.min(value);
            state.max = state.max.max(value);
        }
        state.count += 1;
        state.sum += value;
        if state.reservoir.len() < RESERVOIR_SIZE {
            state.reservoir.push(Lowest(sample));
        } else if let Some(mut lowest) = state.reservoir.peek_mut() {
            if sample.log_priority > lowest.0.log_priority {
                *lowest = Lowest(sample);
            }
        }
    }

    /// Updates so far.
    pub fn count(&self) -> u64 {
        self.state.lock().count
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        let state = self.state.lock();
        HistogramSnapshot {
            count: state.count,
            sum: state.sum,
            min: state.min,
            max: state.max,
            samples: state.reservoir.iter().map(|s| s.0).collect(),
        }
    }
}

/// A histogram's state at one time, or several processes' merged: what workers send.
///
/// Serialised as `{count, sum, min, max, base, samples}` where `samples` is base64 of 12 bytes
/// per sample (little-endian `f32` value, and `f32` log weight and log priority relative to
/// `base`), about 16 KB for a full reservoir. Values are thus rounded to `f32` (7 digits) on
/// the way; `min`, `max` and `sum` travel exactly.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HistogramSnapshot {
    pub count: u64,
    pub sum: f64,
    pub min: f64,
    pub max: f64,
    pub(crate) samples: Vec<Sample>,
}

/// The docs/stats.md figures of a histogram.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct HistogramStats {
    pub min: f64,
    pub max: f64,
    pub sum: f64,
    pub variance: f64,
    pub mean: f64,
    pub stddev: f64,
    pub count: u64,
    pub median: f64,
    pub p75: f64,
    pub p95: f64,
    pub p99: f64,
    pub p999: f64,
}

impl HistogramSnapshot {
    /// Samples in the reservoir.
    #[cfg(test)]
    pub(crate) fn samples_len(&self) -> usize {
        self.samples.len()
    }

    /// Adds another process's histogram: exact figures combine, and the reservoir keeps the
    /// `RESERVOIR_SIZE` highest priorities of both.
    pub fn merge(&mut self, other: &HistogramSnapshot) {
        if other.count > 0 {
            if self.count == 0 {
                self.min = other.min;
                self.max = other.max;
            } else {
                self.min = self.min.min(other.min);
                self.max = self.max.max(other.max);
            }
        }
        self.count += other.count;
        self.sum += other.sum;
        self.samples.extend_from_slice(&other.samples);
        if self.samples.len() > RESERVOIR_SIZE {
            let highest_first = |a: &Sample, b: &Sample| b.log_priority.total_cmp(&a.log_priority);
            self.samples
                .select_nth_unstable_by(RESERVOIR_SIZE - 1, highest_first);
            self.samples.truncate(RESERVOIR_SIZE);
        }
    }

    /// The value below which a fraction `q` (0..=1) of the weighted reservoir lies; 0 if empty.
    pub(crate) fn quantile(&self, q: f64) -> f64 {
        Weighted::new(&self.samples).quantile(q)
    }

    pub fn stats(&self) -> HistogramStats {
        let w = Weighted::new(&self.samples);
        let (mean, variance) = w.mean_variance();
        HistogramStats {
            min: self.min,
            max: self.max,
            sum: finite(self.sum),
            variance,
            mean,
            stddev: variance.sqrt(),
            count: self.count,
            median: w.quantile(0.5),
            p75: w.quantile(0.75),
            p95: w.quantile(0.95),
            p99: w.quantile(0.99),
            p999: w.quantile(0.999),
        }
    }
}

impl HistogramStats {
    /// The docs/stats.md fields.
    pub(crate) fn write_json(&self, out: &mut serde_json::Map<String, serde_json::Value>) {
        let fields = [
            ("min", self.min),
            ("max", self.max),
            ("sum", self.sum),
            ("variance", self.variance),
            ("mean", self.mean),
            ("stddev", self.stddev),
            ("median", self.median),
            ("p75", self.p75),
            ("p95", self.p95),
            ("p99", self.p99),
            ("p999", self.p999),
        ];
        for (name, value) in fields {
            out.insert(name.into(), finite(value).into());
        }
        out.insert("count".into(), self.count.into());
    }
}

/// A reservoir sorted by value with normalised cumulative weights (codahale's WeightedSnapshot).
struct Weighted {
    values: Vec<f64>,
    weights: Vec<f64>,
    /// `cumulative[i]`: the weight of all values before `i`.
    cumulative: Vec<f64>,
}

impl Weighted {
    fn new(samples: &[Sample]) -> Weighted {
        let mut sorted: Vec<&Sample> = samples.iter().collect();
        sorted.sort_by(|a, b| a.value.total_cmp(&b.value));
        let top = sorted
            .iter()
            .map(|s| s.log_weight)
            .fold(f64::NEG_INFINITY, f64::max);
        let raw: Vec<f64> = sorted.iter().map(|s| (s.log_weight - top).exp()).collect();
        let total: f64 = raw.iter().sum();
        let weights: Vec<f64> = raw.iter().map(|w| w / total).collect();
        let mut cumulative = Vec::with_capacity(weights.len());
        let mut acc = 0.0;
        for w in &weights {
            cumulative.push(acc);
            acc += w;
        }
        Weighted {
            values: sorted.iter().map(|s| s.value).collect(),
            weights,
            cumulative,
        }
    }

    fn quantile(&self, q: f64) -> f64 {
        // The last value whose preceding weight does not exceed q.
        let at = self
            .cumulative
            .partition_point(|c| *c <= q)
            .saturating_sub(1);
        self.values.get(at).copied().unwrap_or(0.0)
    }

    fn mean_variance(&self) -> (f64, f64) {
        if self.values.is_empty() {
            return (0.0, 0.0);
        }
        let mean: f64 = self
            .values
            .iter()
            .zip(&self.weights)
            .map(|(v, w)| v * w)
            .sum();
        if self.values.len() == 1 {
            return (mean, 0.0);
        }
        let var = self
            .values
            .iter()
            .zip(&self.weights)
            .map(|(v, w)| w * (v - mean).powi(2))
            .sum();
        (mean, var)
    }
}

/// The serialised form of [`HistogramSnapshot`].
#[derive(Serialize, Deserialize)]
struct Wire {
    count: u64,
    sum: f64,
    min: f64,
    max: f64,
    #[serde(default)]
    base: f64,
    #[serde(default)]
    samples: String,
}

const SAMPLE_BYTES: usize = 12;

impl Serialize for HistogramSnapshot {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let base = self
            .samples
            .iter()
            .map(|s| s.log_weight)
            .fold(f64::NEG_INFINITY, f64::max);
        let base = finite(base);
        let mut bytes = Vec::with_capacity(self.samples.len() * SAMPLE_BYTES);
        for s in &self.samples {
            bytes.extend_from_slice(&(s.value as f32).to_le_bytes());
            bytes.extend_from_slice(&((s.log_weight - base) as f32).to_le_bytes());
            bytes.extend_from_slice(&((s.log_priority - base) as f32).to_le_bytes());
        }
        Wire {
            count: self.count,
            sum: finite(self.sum),
            min: finite(self.min),
            max: finite(self.max),
            base,
            samples: base64::engine::general_purpose::STANDARD_NO_PAD.encode(bytes),
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for HistogramSnapshot {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let wire = Wire::deserialize(deserializer)?;
        let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(wire.samples.as_bytes())
            .map_err(|e| D::Error::custom(format!("histogram samples: {e}")))?;
        if bytes.len() % SAMPLE_BYTES != 0 {
            return Err(D::Error::custom("histogram samples: truncated"));
        }
        let f32_at = |chunk: &[u8], i: usize| {
            let mut b = [0u8; 4];
            b.copy_from_slice(&chunk[i..i + 4]);
            f64::from(f32::from_le_bytes(b))
        };
        let samples = bytes
            .chunks_exact(SAMPLE_BYTES)
            .map(|c| Sample {
                value: f32_at(c, 0),
                log_weight: wire.base + f32_at(c, 4),
                log_priority: wire.base + f32_at(c, 8),
            })
            .filter(|s| {
                s.value.is_finite() && s.log_weight.is_finite() && s.log_priority.is_finite()
            })
            .collect();
        Ok(HistogramSnapshot {
            count: wire.count,
            sum: wire.sum,
            min: wire.min,
            max: wire.max,
            samples,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn uniform(h: &Histogram, values: impl Iterator<Item = u64>, now: Instant) {
        for v in values {
            h.update_at(v as f64, now);
        }
    }

    /// True quantiles of 1..=10000 are 10000 q; allow 3 % of the range.
    fn assert_uniform_quantiles(s: &HistogramSnapshot) {
        let st = s.stats();
        for (q, got) in [
            (0.5, st.median),
            (0.75, st.p75),
            (0.95, st.p95),
            (0.99, st.p99),
        ] {
            assert!((got - 10000.0 * q).abs() < 300.0, "q{q} = {got}");
        }
        assert!(st.p999 > 9700.0, "p999 = {}", st.p999);
        assert!((st.mean - 5000.5).abs() < 300.0, "mean = {}", st.mean);
        // Uniform on 1..=10000: stddev 10000 / sqrt(12) = 2887.
        assert!((st.stddev - 2887.0).abs() < 150.0, "stddev = {}", st.stddev);
        assert_eq!(st.count, 10000);
        assert_eq!((st.min, st.max, st.sum), (1.0, 10000.0, 50_005_000.0));
    }

    #[test]
    fn uniform_quantiles() {
        let h = Histogram::with_seed(1);
        uniform(&h, 1..=10000, Instant::now());
        let s = h.snapshot();
        assert_eq!(s.samples_len(), RESERVOIR_SIZE);
        assert_uniform_quantiles(&s);
    }

    #[test]
    fn uniform_quantiles_over_time() {
        // Spread over 10 s the weights differ only slightly: still close to uniform.
        let h = Histogram::with_seed(2);
        let t0 = Instant::now();
        for v in 1..=10000u64 {
            h.update_at(v as f64, t0 + Duration::from_millis(v));
        }
        let st = h.snapshot().stats();
        assert!((st.median - 5000.0).abs() < 600.0, "median = {}", st.median);
    }

    #[test]
    fn decay_favours_recent_samples() {
        let h = Histogram::with_seed(3);
        let t0 = Instant::now();
        for _ in 0..2000 {
            h.update_at(1.0, t0);
        }
        for _ in 0..500 {
            h.update_at(100.0, t0 + Duration::from_secs(300));
        }
        let s = h.snapshot();
        let st = s.stats();
        // 500 new samples each weigh e^4.5 = 90 times more than the ~528 old ones left.
        assert_eq!(st.median, 100.0);
        assert_eq!(st.p75, 100.0);
        assert!(st.mean > 90.0, "mean = {}", st.mean);
        assert_eq!((st.min, st.max, st.count), (1.0, 100.0, 2500));
        let recent = s.samples.iter().filter(|x| x.value == 100.0).count();
        assert_eq!(recent, 500, "every recent sample outranks the old ones");
    }

    #[test]
    fn merged_halves_match_one_reservoir() {
        let now = Instant::now();
        let (a, b) = (Histogram::with_seed(4), Histogram::with_seed(5));
        uniform(&a, (1..=10000).filter(|v| v % 2 == 0), now);
        uniform(&b, (1..=10000).filter(|v| v % 2 == 1), now);
        let mut merged = a.snapshot();
        merged.merge(&b.snapshot());
        assert_eq!(merged.samples_len(), RESERVOIR_SIZE);
        assert_uniform_quantiles(&merged);

        // Disjoint ranges: merged quantiles follow the union, not an average of percentiles.
        let (lo, hi) = (Histogram::with_seed(6), Histogram::with_seed(7));
        uniform(&lo, 1..=5000, now);
        uniform(&hi, 5001..=10000, now);
        let mut merged = lo.snapshot();
        merged.merge(&hi.snapshot());
        assert_uniform_quantiles(&merged);
    }

    #[test]
    fn merge_prefers_the_more_recent_process() {
        let t0 = Instant::now();
        let (old, new) = (Histogram::with_seed(8), Histogram::with_seed(9));
        uniform(&old, std::iter::repeat_n(1, 2000), t0);
        uniform(
            &new,
            std::iter::repeat_n(7, 2000),
            t0 + Duration::from_secs(600),
        );
        let mut merged = old.snapshot();
        merged.merge(&new.snapshot());
        assert_eq!(merged.quantile(0.01), 7.0);
    }

    #[test]
    fn serde_round_trip_keeps_samples() {
        let h = Histogram::with_seed(10);
        uniform(&h, 1..=3000, Instant::now());
        let s = h.snapshot();
        let text = serde_json::to_string(&s).expect("encode");
        let back: HistogramSnapshot = serde_json::from_str(&text).expect("decode");
        assert_eq!(
            (back.count, back.sum, back.min, back.max),
            (s.count, s.sum, s.min, s.max)
        );
        assert_eq!(back.samples_len(), s.samples_len());
        for (x, y) in s.samples.iter().zip(&back.samples) {
            assert_eq!(x.value, y.value, "small integers are exact in f32");
            assert!((x.log_weight - y.log_weight).abs() < 1e-3);
            assert!((x.log_priority - y.log_priority).abs() < 1e-3);
        }
        assert_eq!(back.stats().median, s.stats().median);
        let bad = text.replace("\"samples\":\"", "\"samples\":\"A");
        assert!(serde_json::from_str::<HistogramSnapshot>(&bad).is_err());
    }

    #[test]
    fn empty_and_single() {
        let h = Histogram::new();
        assert_eq!(h.snapshot().stats(), HistogramStats::default());
        h.update(f64::NAN);
        assert_eq!(h.count(), 0);
        h.update(3.0);
        let st = h.snapshot().stats();
        assert_eq!(
            (st.min, st.max, st.median, st.p999, st.mean, st.stddev),
            (3.0, 3.0, 3.0, 3.0, 3.0, 0.0)
        );
    }
}
