//! Crash durability under SQLite group commit: several clients put and add rows concurrently
//! through the real binary (2 web workers, each batching its writes into shared transactions),
//! the whole process tree is killed with SIGKILL in the middle of the load, and after a restart on
//! the same home every write that was answered 200 is there with its value (docs/data.md,
//! "Durability and group commit").

use crate::harness::*;
use parking_lot::Mutex;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

const DATA: &[&str] = &["-api-allow-path", "^/data/"];

#[test]
fn every_acknowledged_write_survives_kill_9_of_the_tree_under_concurrent_load() {
    let t = Tree::start("run", DATA);
    t.ready(2);
    let port = t.port;
    let acked: Arc<Mutex<Vec<(String, u64)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for c in 0..6 {
        let (acked, stop) = (acked.clone(), stop.clone());
        clients.push(std::thread::spawn(move || {
            let agent = agent();
            let op = if c % 2 == 0 { "put" } else { "add" };
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("g{c}-{n}");
                let url =
                    format!("http://127.0.0.1:{port}/data/{op}/bk_property?name={key}&value={n}");
                let r = http_get(&agent, &url);
                match r.status {
                    200 => acked.lock().push((key, n)),
                    // The tree is gone: whatever was in flight was never acknowledged.
                    0 => break,
                    s => panic!("{op} {key}: {s} {}", r.body),
                }
                n += 1;
            }
        }));
    }
    let loaded = wait_for(Duration::from_secs(60), || acked.lock().len() >= 600);
    assert!(loaded, "the load did not get going:\n{}", t.log());
    // Mid-load: the clients are still sending when the whole tree dies.
    let home = t.kill9();
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().expect("client");
    }
    let acked = std::mem::take(&mut *acked.lock());
    eprintln!("{} writes acknowledged before the kill", acked.len());
    let t = Tree::spawn_in(home, port, "run", DATA, |_| {});
    t.ready(2);
    let agent = agent();
    let mut missing = Vec::new();
    for (key, n) in &acked {
        let r = http_get(&agent, &t.url(&format!("/data/get/bk_property?name={key}")));
        let row: Value = serde_json::from_str(&r.body).unwrap_or(Value::Null);
        if r.status != 200 || row["value"] != json!(n.to_string()) {
            missing.push(format!("{key}: {} {}", r.status, r.body));
        }
    }
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged writes lost after kill -9: {:?}",
        missing.len(),
        acked.len(),
        &missing[..missing.len().min(10)]
    );
}
