//! Latency probes for `bench/cache`: how fast a web worker reaches the server's LRU cache, and how
//! fast a cache write on one node becomes visible on its peers.
//!
//! It exists because wrk only sees whole HTTP requests, where the IPC hop to the server is one
//! part among parsing, routing and JSON. This binary isolates that hop: it talks to a running
//! server's hub with the same [`bkjs::ipc::Client`] the workers use, and compares it with the
//! floor a plain length-prefixed unix socket reaches on this machine (same JSON bytes), so the
//! cost of nng and the client's machinery is a ratio, not an absolute number. It also times
//! peer propagation (a put on node A until nodes B and C both show it) and, for scale, a GET
//! round trip to a Redis server.
//!
//! Usage:
//!   `bench-ipc ipc HOME N`              IPC CacheGet round trips, raw unix baseline, 32-way concurrency
//!   `bench-ipc propagate HOME_A HOME_B HOME_C N`   put on A, poll B and C until both see it
//!   `bench-ipc redis HOST:PORT N`       sequential Redis GET round trips
//!
//! `BENCH_IPC_ECHO_CPU=K` moves the raw baseline's echo thread to CPU K (where the server runs).

use std::error::Error;
use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use bkjs::cache::CacheStats;
use bkjs::ipc::{Client, Reply, Request};

const USAGE: &str = "usage: bench-ipc ipc HOME N\n       \
                     bench-ipc propagate HOME_A HOME_B HOME_C N\n       \
                     bench-ipc redis HOST:PORT N";

type Res<T> = Result<T, Box<dyn Error>>;

/// Per-request deadline for the IPC clients (the servers' default `-ipc-timeout` is 500 ms).
const IPC_TIMEOUT: Duration = Duration::from_secs(1);
/// Sequential requests before any measured run.
const WARMUP: usize = 200;
/// Tasks sharing one client in the concurrency run.
const CONCURRENCY: usize = 32;
/// How long a propagation sample may take before it counts as a timeout.
const PROPAGATION_DEADLINE: Duration = Duration::from_secs(1);

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["ipc", home, n] => parse_n(n).and_then(|n| run_async(ipc(Path::new(home), n))),
        ["propagate", a, b, c, n] => parse_n(n)
            .and_then(|n| run_async(propagate([Path::new(a), Path::new(b), Path::new(c)], n))),
        ["redis", addr, n] => parse_n(n).and_then(|n| redis_get(addr, n)),
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-ipc: {e}");
            ExitCode::FAILURE
        }
    }
}

fn parse_n(s: &str) -> Res<usize> {
    match s.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("N must be a positive integer, got {s:?}").into()),
    }
}

/// Runs `fut` on a single-thread tokio runtime: the nng callbacks run on nng's own threads and
/// only wake the awaiting task, so one runtime thread is all a client needs.
fn run_async<F: std::future::Future<Output = Res<()>>>(fut: F) -> Res<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(fut)
}

// ---- statistics ---------------------------------------------------------------------------

/// Sorted samples with nearest-rank percentiles.
struct Samples(Vec<Duration>);

impl Samples {
    fn new(mut v: Vec<Duration>) -> Samples {
        v.sort_unstable();
        Samples(v)
    }

    fn pct(&self, q: f64) -> Duration {
        if self.0.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((q * self.0.len() as f64).ceil() as usize).clamp(1, self.0.len());
        self.0[rank - 1]
    }

    fn us(&self, q: f64) -> f64 {
        self.pct(q).as_secs_f64() * 1e6
    }

    fn ms(&self, q: f64) -> f64 {
        self.pct(q).as_secs_f64() * 1e3
    }

    /// `p50 X us p99 Y us (N samples)`
    fn line_us(&self) -> String {
        format!(
            "p50 {:.1} us p99 {:.1} us ({} samples)",
            self.us(0.50),
            self.us(0.99),
            self.0.len()
        )
    }
}

// ---- ipc ----------------------------------------------------------------------------------

fn hub_url(home: &Path) -> String {
    format!(
        "ipc://{}",
        home.join("var")
            .join("ipc")
            .join("bkjs-server.sock")
            .display()
    )
}

/// Connects to a server's hub and waits until it answers (the client dials in the background).
async fn connect(home: &Path) -> Res<Client> {
    let url = hub_url(home);
    let client = Client::connect(&url, IPC_TIMEOUT)
        .map_err(|e| format!("cannot open an IPC client for {url}: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match client.request(Request::CacheStats).await {
            Ok(Reply::Stats { .. }) => return Ok(client),
            Ok(other) => {
                return Err(format!("{url}: unexpected reply to CacheStats: {other:?}").into())
            }
            Err(e) if Instant::now() > deadline => {
                return Err(format!("{url}: no answer within 5 s: {e}").into())
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

async fn put(client: &Client, key: &str, value: &str) -> Res<()> {
    let msg = Request::CachePut {
        key: key.to_string(),
        value: value.to_string(),
    };
    match client.request(msg).await? {
        Reply::Ok => Ok(()),
        other => Err(format!("unexpected reply to CachePut: {other:?}").into()),
    }
}

/// The value of `key` on the server behind `client`.
async fn get(client: &Client, key: &str) -> Res<Option<String>> {
    let msg = Request::CacheGet {
        keys: vec![key.to_string()],
    };
    match client.request(msg).await? {
        Reply::Values { mut values } if values.len() == 1 => Ok(values.pop().flatten()),
        other => Err(format!("unexpected reply to CacheGet: {other:?}").into()),
    }
}

async fn ipc(home: &Path, n: usize) -> Res<()> {
    const KEY: &str = "bench";
    const VALUE: &str = "bench-value";
    let client = connect(home).await?;
    put(&client, KEY, VALUE).await?;
    let check = |v: Option<String>| -> Res<()> {
        match v.as_deref() {
            Some(VALUE) => Ok(()),
            other => Err(format!("CacheGet {KEY:?} returned {other:?}, expected {VALUE:?}").into()),
        }
    };
    for _ in 0..WARMUP {
        check(get(&client, KEY).await?)?;
    }

    // Sequential round trips.
    let mut times = Vec::with_capacity(n);
    let seq_start = Instant::now();
    for _ in 0..n {
        let t0 = Instant::now();
        let v = get(&client, KEY).await?;
        times.push(t0.elapsed());
        check(v)?;
    }
    let seq_elapsed = seq_start.elapsed();
    let ipc_rt = Samples::new(times);
    println!("ipc get round trip: {}", ipc_rt.line_us());

    // The floor: the same request bytes over a plain unix socket to an echo thread.
    let request = serde_json::to_vec(&Request::CacheGet {
        keys: vec![KEY.to_string()],
    })?;
    let raw_rt = raw_unix_round_trips(&request, n)?;
    println!("raw unix socket round trip: {}", raw_rt.line_us());
    let raw_p50 = raw_rt.us(0.50);
    let ratio = if raw_p50 > 0.0 {
        ipc_rt.us(0.50) / raw_p50
    } else {
        f64::INFINITY
    };
    println!("ratio ipc/raw p50 = {ratio:.2} (target <= 1.5)");
    println!(
        "RESULT|bench/cache|ipc get round trip p50|{:.1}|us|raw unix socket p50|{raw_p50:.1}|{ratio:.2}|<= 1.5",
        ipc_rt.us(0.50)
    );

    // Many requests in flight through one client, as a busy web worker has them.
    let per_task = (n / CONCURRENCY).max(1);
    let t0 = Instant::now();
    let tasks: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let c = client.clone();
            tokio::spawn(async move {
                for _ in 0..per_task {
                    match get(&c, KEY).await {
                        Ok(Some(v)) if v == VALUE => {}
                        Ok(other) => return Err(format!("CacheGet returned {other:?}")),
                        Err(e) => return Err(e.to_string()),
                    }
                }
                Ok(())
            })
        })
        .collect();
    for t in tasks {
        t.await??;
    }
    let elapsed = t0.elapsed();
    let total = per_task * CONCURRENCY;
    println!(
        "ipc get throughput, {CONCURRENCY} tasks x {per_task} through one Client: {:.0} req/s \
         (sequential: {:.0} req/s)",
        total as f64 / elapsed.as_secs_f64(),
        n as f64 / seq_elapsed.as_secs_f64()
    );
    Ok(())
}

/// Removes the socket file when the baseline ends, however it ends.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `n` round trips of `payload` as a 4-byte big-endian length-prefixed frame to an echo thread.
fn raw_unix_round_trips(payload: &[u8], n: usize) -> Res<Samples> {
    let path = std::env::temp_dir().join(format!("bench-ipc-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)
        .map_err(|e| format!("cannot listen on {}: {e}", path.display()))?;
    let _cleanup = RemoveOnDrop(path.clone());
    let echo_cpu = match std::env::var("BENCH_IPC_ECHO_CPU") {
        Ok(s) => Some(
            s.parse::<usize>()
                .map_err(|_| format!("BENCH_IPC_ECHO_CPU must be a CPU number, got {s:?}"))?,
        ),
        Err(_) => None,
    };
    let echo = std::thread::spawn(move || -> std::io::Result<()> {
        if let Some(cpu) = echo_cpu {
            pin_current_thread(cpu)?;
        }
        let (mut conn, _) = listener.accept()?;
        let mut buf = Vec::new();
        loop {
            let mut len = [0u8; 4];
            match conn.read_exact(&mut len) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(e),
            }
            buf.resize(u32::from_be_bytes(len) as usize + 4, 0);
            buf[..4].copy_from_slice(&len);
            conn.read_exact(&mut buf[4..])?;
            conn.write_all(&buf)?;
        }
    });

    let mut conn = UnixStream::connect(&path)?;
    let len = u32::try_from(payload.len())?;
    let mut frame = Vec::with_capacity(payload.len() + 4);
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(payload);
    let mut reply = vec![0u8; frame.len()];
    let mut round_trip = |conn: &mut UnixStream| -> Res<Duration> {
        let t0 = Instant::now();
        conn.write_all(&frame)?;
        conn.read_exact(&mut reply)?;
        let dt = t0.elapsed();
        if reply != frame {
            return Err("raw echo returned different bytes".into());
        }
        Ok(dt)
    };
    for _ in 0..WARMUP {
        round_trip(&mut conn)?;
    }
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        times.push(round_trip(&mut conn)?);
    }
    drop(conn); // EOF ends the echo thread
    echo.join()
        .map_err(|_| "raw echo thread panicked")?
        .map_err(|e| format!("raw echo thread: {e}"))?;
    Ok(Samples::new(times))
}

/// Moves the calling thread to `cpu`, so the echo side of the baseline runs where the bkjs
/// server runs (`bench/cache` sets `BENCH_IPC_ECHO_CPU=0` when it pins the servers to CPU 0);
/// otherwise the echo would share the load generator's CPU and the two sides would not compare.
fn pin_current_thread(cpu: usize) -> std::io::Result<()> {
    // SAFETY: `set` is a plain bit mask, zeroed and then filled by the libc macros; pid 0 means
    // the calling thread, and the size passed is the size of the mask.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

// ---- propagation --------------------------------------------------------------------------

/// Polls `client` without pause until `key` holds `want`; false at `deadline`.
async fn poll_until(client: &Client, key: &str, want: &str, deadline: Instant) -> Res<bool> {
    loop {
        if get(client, key).await?.as_deref() == Some(want) {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
    }
}

async fn propagate(homes: [&Path; 3], n: usize) -> Res<()> {
    const KEY: &str = "prop";
    let [a, b, c] = homes;
    let (a, b, c) = (connect(a).await?, connect(b).await?, connect(c).await?);
    // A value no earlier run left behind, so sample 1 cannot be satisfied by stale data.
    let run = format!("{}-", std::process::id());
    let before = [stats(&b).await?, stats(&c).await?];
    let mut times = Vec::with_capacity(n);
    let mut timeouts = Vec::new();
    for i in 1..=n {
        let value = format!("{run}{i}");
        let t0 = Instant::now();
        let deadline = t0 + PROPAGATION_DEADLINE;
        put(&a, KEY, &value).await?;
        let (on_b, on_c) = tokio::try_join!(
            poll_until(&b, KEY, &value, deadline),
            poll_until(&c, KEY, &value, deadline)
        )?;
        times.push(t0.elapsed());
        if !(on_b && on_c) {
            timeouts.push(i);
        }
    }
    let after = [stats(&b).await?, stats(&c).await?];
    let s = Samples::new(times);
    println!(
        "peer propagation put A -> visible on B and C: p50 {:.3} ms p99 {:.3} ms ({n} samples, \
         {} timeouts at {} ms, counted in the percentiles)",
        s.ms(0.50),
        s.ms(0.99),
        timeouts.len(),
        PROPAGATION_DEADLINE.as_millis()
    );
    if !timeouts.is_empty() {
        println!("  timed-out samples: {timeouts:?}");
    }
    // Whole-cache clears on B and C during the run explain timeouts: a cleared cache loses the
    // value just applied, and it stays missing until the next put.
    for (name, (x, y)) in ["B", "C"].iter().zip(before.iter().zip(after.iter())) {
        println!(
            "  {name} during the run: applied +{} duplicates +{} resyncs +{} reconnects +{}",
            y.applied - x.applied,
            y.duplicates - x.duplicates,
            y.resyncs - x.resyncs,
            y.reconnects - x.reconnects
        );
    }
    println!("target p99 <= 5 ms");
    println!(
        "RESULT|bench/cache|peer propagation p99|{:.3}|ms|-|-|-|<= 5",
        s.ms(0.99)
    );
    Ok(())
}

async fn stats(client: &Client) -> Res<CacheStats> {
    match client.request(Request::CacheStats).await? {
        Reply::Stats { stats } => Ok(stats),
        other => Err(format!("unexpected reply to CacheStats: {other:?}").into()),
    }
}

// ---- redis --------------------------------------------------------------------------------

fn redis_get(addr: &str, n: usize) -> Res<()> {
    let url = format!("redis://{addr}");
    let client = redis::Client::open(url.as_str())?;
    let mut con = client
        .get_connection_with_timeout(Duration::from_secs(2))
        .map_err(|e| format!("cannot connect to {url}: {e}"))?;
    con.set_read_timeout(Some(Duration::from_secs(2)))?;
    con.set_write_timeout(Some(Duration::from_secs(2)))?;
    let key = format!("bench-ipc-{}:get", std::process::id());
    const VALUE: &str = "bench-value";
    redis::cmd("SET")
        .arg(&key)
        .arg(VALUE)
        .query::<()>(&mut con)?;
    let result = (|| -> Res<Samples> {
        let get = |con: &mut redis::Connection| -> Res<Duration> {
            let t0 = Instant::now();
            let v: Option<String> = redis::cmd("GET").arg(&key).query(con)?;
            let dt = t0.elapsed();
            if v.as_deref() != Some(VALUE) {
                return Err(format!("redis GET {key} returned {v:?}").into());
            }
            Ok(dt)
        };
        for _ in 0..WARMUP {
            get(&mut con)?;
        }
        let mut times = Vec::with_capacity(n);
        for _ in 0..n {
            times.push(get(&mut con)?);
        }
        Ok(Samples::new(times))
    })();
    let deleted = redis::cmd("DEL").arg(&key).query::<i64>(&mut con);
    let s = result?;
    deleted?;
    println!("redis get round trip: {}", s.line_us());
    Ok(())
}
