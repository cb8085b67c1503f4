//! The metrics that count: [`Counter`] and [`Gauge`] (atomics) and [`Meter`], events per second
//! as docs/stats.md reports them: the mean rate since start, the rate of the last 5 s window and
//! exponentially weighted moving averages over 1, 5 and 15 minutes with a 5 s tick, as in
//! codahale metrics. Ticks happen lazily, on the next update or read, so meters need no timer
//! task; every time-dependent method has an `_at` twin taking the instant, so tests simulate
//! time instead of sleeping.

use super::{finite, unix_secs};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How often meter rates are updated.
pub const TICK: Duration = Duration::from_secs(5);
const TICK_SECS: f64 = 5.0;

/// A signed count that is added to.
#[derive(Debug, Default)]
pub struct Counter(AtomicI64);

impl Counter {
    pub fn new() -> Counter {
        Counter::default()
    }

    pub fn add(&self, n: i64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn inc(&self) {
        self.add(1);
    }

    pub fn set(&self, value: i64) {
        self.0.store(value, Ordering::Relaxed);
    }

    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that is set: the latest one wins. Merged across processes by summing.
#[derive(Debug, Default)]
pub struct Gauge(AtomicU64);

impl Gauge {
    pub fn new() -> Gauge {
        Gauge::default()
    }

    pub fn set(&self, value: f64) {
        self.0.store(value.to_bits(), Ordering::Relaxed);
    }

    pub fn add(&self, delta: f64) {
        let add = |bits: u64| Some((f64::from_bits(bits) + delta).to_bits());
        // The closure never returns None, so fetch_update cannot fail.
        let _ = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, add);
    }

    pub fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }
}

/// One exponentially weighted moving average of a per-second rate.
#[derive(Debug, Clone, Copy)]
struct Ewma {
    alpha: f64,
    rate: f64,
    ready: bool,
}

impl Ewma {
    fn new(minutes: f64) -> Ewma {
        Ewma {
            alpha: 1.0 - (-TICK_SECS / 60.0 / minutes).exp(),
            rate: 0.0,
            ready: false,
        }
    }

    /// One tick during which `count` events happened; the first tick sets the rate outright.
    fn tick(&mut self, count: f64) {
        let instant = count / TICK_SECS;
        if self.ready {
            self.rate += self.alpha * (instant - self.rate);
        } else {
            self.rate = instant;
            self.ready = true;
        }
    }

    /// `n` ticks without events, in closed form (an idle meter may be read after hours).
    fn idle(&mut self, n: u64) {
        if self.ready && n > 0 {
            let n = i32::try_from(n).unwrap_or(i32::MAX);
            self.rate *= (1.0 - self.alpha).powi(n);
        }
    }
}

/// Events per second.
#[derive(Debug)]
pub struct Meter {
    start: Instant,
    state: Mutex<MeterState>,
}

#[derive(Debug)]
struct MeterState {
    count: u64,
    /// Events since the last tick.
    uncounted: u64,
    last_tick: Instant,
    /// Events of the last complete tick window, once one has completed.
    last_window: Option<u64>,
    m1: Ewma,
    m5: Ewma,
    m15: Ewma,
}

impl MeterState {
    /// Applies every tick due by `now`.
    fn tick_to(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last_tick);
        if elapsed < TICK {
            return;
        }
        let tick = TICK.as_nanos();
        let ticks = u64::try_from(elapsed.as_nanos() / tick).unwrap_or(u64::MAX);
        let partial = u64::try_from(elapsed.as_nanos() % tick).unwrap_or(0);
        let count = std::mem::take(&mut self.uncounted);
        for ewma in [&mut self.m1, &mut self.m5, &mut self.m15] {
            ewma.tick(count as f64);
            ewma.idle(ticks - 1);
        }
        self.last_window = Some(if ticks == 1 { count } else { 0 });
        self.last_tick = now - Duration::from_nanos(partial);
    }
}

impl Default for Meter {
    fn default() -> Meter {
        Meter::new()
    }
}

impl Meter {
    pub fn new() -> Meter {
        Meter::new_at(Instant::now())
    }

    pub(crate) fn new_at(now: Instant) -> Meter {
        let state = MeterState {
            count: 0,
            uncounted: 0,
            last_tick: now,
            last_window: None,
            m1: Ewma::new(1.0),
            m5: Ewma::new(5.0),
            m15: Ewma::new(15.0),
        };
        Meter {
            start: now,
            state: Mutex::new(state),
        }
    }

    /// Records `n` events.
    pub fn mark(&self, n: u64) {
        self.mark_at(n, Instant::now());
    }

    pub(crate) fn mark_at(&self, n: u64, now: Instant) {
        let mut state = self.state.lock();
        state.tick_to(now);
        state.count += n;
        state.uncounted += n;
    }

    /// Events so far.
    pub fn count(&self) -> u64 {
        self.state.lock().count
    }

    pub fn snapshot(&self) -> MeterSnapshot {
        self.snapshot_at(Instant::now())
    }

    pub(crate) fn snapshot_at(&self, now: Instant) -> MeterSnapshot {
        let mut state = self.state.lock();
        state.tick_to(now);
        let current = match state.last_window {
            Some(count) => count as f64 / TICK_SECS,
            None => {
                let secs = now.saturating_duration_since(self.start).as_secs_f64();
                state.uncounted as f64 / secs.max(TICK_SECS)
            }
        };
        MeterSnapshot {
            count: state.count,
            start: unix_secs(self.start),
            current,
            m1: state.m1.rate,
            m5: state.m5.rate,
            m15: state.m15.rate,
        }
    }
}

/// A meter's figures at one time, or the sum of several processes' meters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct MeterSnapshot {
    pub count: u64,
    /// When the meter started, Unix seconds; the earliest start once merged.
    pub start: f64,
    /// Events per second in the last complete 5 s window; before the first one completes, the
    /// events so far over the time since start or one window, whichever is longer.
    pub current: f64,
    /// One-, five- and fifteen-minute moving averages, events per second.
    pub m1: f64,
    pub m5: f64,
    pub m15: f64,
}

impl MeterSnapshot {
    /// Mean rate from `start` to `time` (Unix seconds), over at least one tick so that a meter
    /// read just after its first event does not report thousands per second.
    pub(crate) fn mean(&self, time: f64) -> f64 {
        self.count as f64 / (time - self.start).max(TICK_SECS)
    }

    /// Adds another process's meter: counts and rates add up, the earlier start is kept.
    pub fn merge(&mut self, other: &MeterSnapshot) {
        self.count += other.count;
        self.start = self.start.min(other.start);
        self.current += other.current;
        self.m1 += other.m1;
        self.m5 += other.m5;
        self.m15 += other.m15;
    }

    /// What remains of the meter of a process that has exited: its count, not its rates.
    pub(crate) fn retire(&mut self) {
        self.current = 0.0;
        self.m1 = 0.0;
        self.m5 = 0.0;
        self.m15 = 0.0;
    }

    /// The docs/stats.md fields, as of `time`.
    pub(crate) fn write_json(
        &self,
        time: f64,
        out: &mut serde_json::Map<String, serde_json::Value>,
    ) {
        out.insert("mean".into(), finite(self.mean(time)).into());
        out.insert("count".into(), self.count.into());
        out.insert("currentRate".into(), finite(self.current).into());
        out.insert("1MinuteRate".into(), finite(self.m1).into());
        out.insert("5MinuteRate".into(), finite(self.m5).into());
        out.insert("15MinuteRate".into(), finite(self.m15).into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Marks `per_tick` events spread over each 5 s window for `secs` seconds.
    fn run(meter: &Meter, t0: Instant, secs: u64, per_sec: u64) -> Instant {
        let mut now = t0;
        for _ in 0..secs * 10 {
            now += Duration::from_millis(100);
            meter.mark_at(per_sec / 10, now);
        }
        now
    }

    #[test]
    fn constant_rate_converges() {
        let t0 = Instant::now();
        let meter = Meter::new_at(t0);
        let end = run(&meter, t0, 20 * 60, 100);
        let s = meter.snapshot_at(end);
        assert_eq!(s.count, 100 * 20 * 60);
        for (what, rate) in [
            ("current", s.current),
            ("m1", s.m1),
            ("m5", s.m5),
            ("m15", s.m15),
        ] {
            assert!((rate - 100.0).abs() < 1.0, "{what} = {rate}");
        }
        assert!(
            (s.mean(unix_secs(end)) - 100.0).abs() < 0.1,
            "mean = {}",
            s.mean(unix_secs(end))
        );
    }

    #[test]
    fn rates_decay_when_idle() {
        let t0 = Instant::now();
        let meter = Meter::new_at(t0);
        let end = run(&meter, t0, 60, 100);
        let later = end + Duration::from_secs(5 * 60);
        let s = meter.snapshot_at(later);
        // Five idle minutes: the one-minute rate keeps e^-5 of its value, the 15-minute e^-1/3.
        assert!(
            (s.m1 / 100.0 - (-5.0f64).exp()).abs() < 0.005,
            "m1 = {}",
            s.m1
        );
        assert!(
            (s.m15 / 100.0 - (-1.0f64 / 3.0).exp()).abs() < 0.05,
            "m15 = {}",
            s.m15
        );
        assert_eq!(s.current, 0.0);
        assert_eq!(s.count, 6000);
    }

    #[test]
    fn lazy_ticks_match_ticking_every_window() {
        let t0 = Instant::now();
        let (lazy, eager) = (Meter::new_at(t0), Meter::new_at(t0));
        lazy.mark_at(50, t0 + Duration::from_secs(1));
        eager.mark_at(50, t0 + Duration::from_secs(1));
        for i in 1..=100 {
            eager.snapshot_at(t0 + TICK * i);
        }
        let (a, b) = (
            lazy.snapshot_at(t0 + TICK * 100),
            eager.snapshot_at(t0 + TICK * 100),
        );
        for (x, y) in [(a.m1, b.m1), (a.m5, b.m5), (a.m15, b.m15)] {
            assert!((x - y).abs() <= 1e-9 * y.abs().max(1e-300), "{x} vs {y}");
        }
    }

    #[test]
    fn current_rate_before_first_tick() {
        let t0 = Instant::now();
        let meter = Meter::new_at(t0);
        meter.mark_at(4, t0 + Duration::from_secs(1));
        let s = meter.snapshot_at(t0 + Duration::from_secs(2));
        assert_eq!(
            s.current, 0.8,
            "four events over one window, not over two seconds"
        );
        assert_eq!(s.m1, 0.0, "no tick yet");
        assert_eq!(s.mean(unix_secs(t0 + Duration::from_secs(2))), 0.8);
    }

    #[test]
    fn counter_and_gauge() {
        let c = Counter::new();
        c.add(5);
        c.inc();
        c.add(-2);
        assert_eq!(c.get(), 4);
        let g = Gauge::new();
        g.set(1.5);
        g.add(2.0);
        assert_eq!(g.get(), 3.5);
    }
}
