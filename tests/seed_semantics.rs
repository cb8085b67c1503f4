//! Behaviour a user of the reference platform relies on (SPEC §6-§8), pinned against the real
//! binary: machine statistics with the allocator's figures and per-route latency percentiles.

use crate::harness::*;
use serde_json::Value;

fn stats(t: &Tree) -> Value {
    let r = t.get("/system/stats");
    assert_eq!(r.status, 200, "{r:?}");
    serde_json::from_str(&r.body).expect("stats JSON")
}

#[test]
fn system_stats_has_heap_figures_and_per_route_percentiles() {
    let t = Tree::start("run", &["-api-allow-path", "^/(system/stats|account/add)$"]);
    t.ready(2);
    for i in 0..20 {
        let r = t.get(&format!(
            "/account/add?login=stats{i}&secret=s3cret-{i}&name=S{i}"
        ));
        assert_eq!(r.status, 200, "{r:?}");
    }
    // The answering worker sends its figures first; the other one's arrive with its next
    // periodic report.
    let mut s = Value::Null;
    let all = wait_for(std::time::Duration::from_secs(20), || {
        s = stats(&t);
        s["urls"]["/account/add"]["response"]["count"].as_u64() == Some(20)
    });
    assert!(all, "both workers' requests counted: {s}");
    let heap = &s["heap"];
    let committed = heap["committed"].as_f64().unwrap_or(0.0);
    let peak = heap["peak_committed"].as_f64().unwrap_or(0.0);
    assert!(
        committed > 1e6,
        "the allocator holds at least a megabyte: {heap}"
    );
    assert!(peak >= committed, "{heap}");
    let route = &s["urls"]["/account/add"]["response"];
    for q in ["median", "p75", "p95", "p99", "p999"] {
        assert!(
            route[q].as_f64().is_some_and(|v| v > 0.0),
            "urls./account/add.response.{q}: {route}"
        );
    }
    assert!(route["p99"].as_f64() >= route["median"].as_f64(), "{route}");
}
