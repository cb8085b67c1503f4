//! The machine-wide figures of `/system/stats` and `/metrics` (docs/stats.md): the server keeps the
//! latest metrics snapshot of every web worker, merges them with its own and adds the cache's
//! LRU statistics and process figures, so a client sees one machine, not whichever worker
//! happened to answer.

use bkjs_base::metrics::{Aggregate, Registry};
use bkjs_cache::Server as CacheServer;
use bkjs_ipc::{Reply, Request};
use parking_lot::Mutex;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::Instant;

/// What the server knows of its workers' metrics.
pub struct Stats {
    workers: Mutex<Aggregate>,
    /// The master's latest snapshot (the job queue's metrics): merged, not a worker.
    master: Mutex<Option<bkjs_base::metrics::Snapshot>>,
    started_ms: i64,
    host: String,
    /// The CPU time (clock ticks) each process had used at the previous render, for `util`.
    cpu: Mutex<HashMap<u32, (Instant, u64)>>,
}

/// CPU time (user + system, in clock ticks) `pid` has used, and how long ago (in ticks since
/// boot) it started: fields 14, 15 and 22 of `/proc/PID/stat`.
fn cpu_ticks(pid: u32) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: the fields start after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // f[0] is field 3 (state).
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    let start: u64 = f.get(19)?.parse().ok()?;
    Some((utime + stime, start))
}

/// Clock ticks per second (`_SC_CLK_TCK`).
fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// Seconds since boot (`/proc/uptime`).
fn uptime_secs() -> Option<f64> {
    std::fs::read_to_string("/proc/uptime")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

impl Default for Stats {
    fn default() -> Stats {
        Stats::new()
    }
}

impl Stats {
    pub fn new() -> Stats {
        Stats {
            workers: Mutex::new(Aggregate::new()),
            master: Mutex::new(None),
            started_ms: bkjs_base::time::now_ms(),
            host: nix::unistd::gethostname()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_default(),
            cpu: Mutex::new(HashMap::new()),
        }
    }

    /// `util`: the CPU the server and its workers used, in percent of one CPU, since the previous
    /// call (for a process seen for the first time: since it started). 100 = one core busy.
    fn util(&self, pids: &[u32]) -> f64 {
        let hz = clock_ticks();
        let now = Instant::now();
        let uptime = uptime_secs();
        let mut prev = self.cpu.lock();
        let mut seen = HashMap::with_capacity(pids.len());
        let mut busy = 0.0;
        for &pid in pids {
            let Some((ticks, started)) = cpu_ticks(pid) else {
                continue;
            };
            let (used, secs) = match prev.get(&pid) {
                Some((at, before)) if ticks >= *before => (
                    (ticks - before) as f64 / hz,
                    now.duration_since(*at).as_secs_f64(),
                ),
                _ => (
                    ticks as f64 / hz,
                    uptime.map_or(0.0, |u| u - started as f64 / hz),
                ),
            };
            if secs > 0.001 {
                busy += used / secs;
            }
            seen.insert(pid, (now, ticks));
        }
        // Exited processes are forgotten.
        *prev = seen;
        bkjs_base::metrics::finite(busy * 100.0)
    }

    /// Answers `Metrics`, `MasterMetrics` and `SystemStats`; `None` for other messages.
    pub fn handle(&self, msg: &Request, cache: &CacheServer) -> Option<Reply> {
        match msg {
            // In one process (`bkjs run -single`) the API's figures are this process's own,
            // read from the registry when rendering: taking them again would count them twice.
            Request::Metrics { pid, .. } if *pid == std::process::id() => Some(Reply::Ok),
            Request::Metrics { pid, snapshot } => {
                self.lock().update(*pid, snapshot.clone());
                Some(Reply::Ok)
            }
            Request::MasterMetrics { snapshot, .. } => {
                *self.master.lock() = Some(snapshot.clone());
                Some(Reply::Ok)
            }
            Request::SystemStats { prometheus } => Some(Reply::Text {
                text: self.render(*prometheus, cache),
            }),
            _ => None,
        }
    }

    fn lock(&self) -> parking_lot::MutexGuard<'_, Aggregate> {
        self.workers.lock()
    }

    /// A worker exited: its rates go, its counts stay in the totals.
    pub fn retire(&self, pid: u32) {
        self.lock().remove(pid);
    }

    fn render(&self, prometheus: bool, cache: &CacheServer) -> String {
        let (mut total, pids) = {
            let agg = self.lock();
            (agg.total(), agg.workers().collect::<Vec<_>>())
        };
        total.merge(&Registry::global().snapshot());
        if let Some(m) = self.master.lock().as_ref() {
            total.merge(m);
        }
        let me = std::process::id();
        let procs: Vec<u32> = std::iter::once(me).chain(pids.iter().copied()).collect();
        let rss: u64 = procs.iter().copied().filter_map(super::rss_bytes).sum();
        let util = self.util(&procs);
        let cache_stats = match cache.handle(&Request::CacheStats) {
            Some(Reply::Stats { stats }) => serde_json::to_value(stats).unwrap_or(Value::Null),
            _ => Value::Null,
        };
        let loadavg: Vec<f64> = std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .filter_map(|x| x.parse().ok())
            .collect();
        if prometheus {
            let mut text = total.to_prometheus("bkjs");
            text.push_str("# TYPE bkjs_rss_bytes gauge\n");
            text.push_str(&format!("bkjs_rss_bytes {rss}\n"));
            text.push_str("# TYPE bkjs_util_percent gauge\n");
            text.push_str(&format!("bkjs_util_percent {util}\n"));
            text.push_str("# TYPE bkjs_workers gauge\n");
            text.push_str(&format!("bkjs_workers {}\n", pids.len()));
            if let Value::Object(m) = &cache_stats {
                for (k, v) in m {
                    if let Some(n) = v.as_f64() {
                        text.push_str(&format!(
                            "# TYPE bkjs_cache_{k} gauge\nbkjs_cache_{k} {n}\n"
                        ));
                    }
                }
            }
            if let Some(l) = loadavg.first() {
                text.push_str(&format!("# TYPE bkjs_loadavg gauge\nbkjs_loadavg {l}\n"));
            }
            return text;
        }
        let mut v = total.to_json();
        if let Value::Object(m) = &mut v {
            m.insert("id".into(), json!(format!("{}:{me}", self.host)));
            m.insert("host".into(), json!(self.host));
            m.insert("pid".into(), json!(me));
            m.insert("ctime".into(), json!(self.started_ms));
            m.insert("mtime".into(), json!(bkjs_base::time::now_ms()));
            m.insert("rss".into(), json!(rss));
            m.insert("util".into(), json!(util));
            m.insert("workers".into(), json!(pids.len()));
            m.insert("loadavg".into(), json!(loadavg));
            m.insert("cache".into(), cache_stats);
        }
        v.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn util_is_the_cpu_used_since_the_previous_call() {
        let me = std::process::id();
        let (start, _) = cpu_ticks(me).expect("own /proc/PID/stat");
        let s = Stats::new();
        let first = s.util(&[me]);
        assert!((0.0..10_000.0).contains(&first), "{first}");
        // Burn CPU until the kernel has counted some of it to this process.
        let mut x = 0u64;
        let burned = std::time::Instant::now();
        while cpu_ticks(me).map_or(0, |(t, _)| t) < start + 5 {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            assert!(burned.elapsed().as_secs() < 60, "no CPU time counted");
        }
        let busy = s.util(&[me]);
        assert!(busy > 0.0, "{busy}");
        // A process that no longer exists is skipped.
        assert_eq!(s.util(&[u32::MAX]), 0.0);
    }
}
