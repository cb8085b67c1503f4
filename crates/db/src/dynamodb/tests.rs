//! The DynamoDB driver against a moto server (`moto_server`, installed by scripts/setup-moto) that each
//! test starts on a free port of its own and kills by pid: the conformance suite, unique columns
//! under concurrency, and what the driver refuses.

use super::{DynamoConfig, DynamoDriver};
use crate::conformance::{self, row};
use crate::{Column, DbError, Driver, Options, Table};
use serde_json::json;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A moto server of this test's own, killed (by pid) when dropped.
pub(crate) struct Moto {
    child: Child,
    pub(crate) port: u16,
}

/// The Python with moto: `BKJS_MOTO_PYTHON`, else the venv scripts/setup-moto makes.
pub(crate) fn moto_python() -> PathBuf {
    if let Some(p) = std::env::var_os("BKJS_MOTO_PYTHON") {
        return PathBuf::from(p);
    }
    let home = std::env::var_os("HOME").unwrap_or_default();
    PathBuf::from(home).join(".cache/bkjs/moto/bin/python")
}

impl Moto {
    /// None (a recorded skip, a failure under CI=true) when moto is not installed.
    pub(crate) fn start() -> Option<Moto> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/moto_server.py");
        let child = match Command::new(moto_python())
            .args([script, "127.0.0.1", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        {
            Ok(c) => c,
            Err(e) => {
                bkjs_base::testing::required(&format!(
                    "moto cannot be started ({e}); scripts/setup-moto installs it"
                ));
                return None;
            }
        };
        let mut m = Moto { child, port };
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if !matches!(m.child.try_wait(), Ok(None)) {
                bkjs_base::testing::required(
                    "moto exited before listening (not installed? scripts/setup-moto installs it)",
                );
                return None;
            }
            assert!(
                Instant::now() < deadline,
                "moto_server did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(m)
    }

    pub(crate) fn config(&self, prefix: &str) -> DynamoConfig {
        DynamoConfig {
            url: format!("http://127.0.0.1:{}", self.port),
            region: "us-east-1".into(),
            key: "testing".into(),
            secret: "testing".into(),
            prefix: prefix.into(),
        }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn driver(m: &Moto, prefix: &str) -> DynamoDriver {
    DynamoDriver::new(&m.config(prefix)).expect("driver")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamodb_conformance() {
    let Some(m) = Moto::start() else {
        return;
    };
    conformance::run(&driver(&m, "conf_"), "c").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamodb_unique_values_under_concurrency() {
    let Some(m) = Moto::start() else {
        return;
    };
    let d = driver(&m, "uq_");
    let t = Table::new(
        "acct",
        vec![
            Column::text("id").primary(1),
            Column::text("email").unique(),
            Column::counter("n"),
        ],
    )
    .expect("table");
    d.init(std::slice::from_ref(&t)).await.expect("init");
    let o = Options::default();
    // Eight writers race for one email: exactly one wins.
    let wins = futures_util::future::join_all(
        (0..8)
            .map(|i| {
                let (d, t, o) = (&d, &t, &o);
                async move {
                    d.add(t, &row(json!({"id": format!("u{i}"), "email": "x@y"})), o)
                        .await
                }
            })
            .collect::<Vec<_>>(),
    )
    .await;
    let ok = wins.iter().filter(|r| r.is_ok()).count();
    assert_eq!(ok, 1, "{wins:?}");
    assert!(wins.iter().all(|r| r.is_ok() || *r == Err(DbError::Exists)));
    // Changing the value frees the old one; deleting the row frees its value.
    let winner = (0..8)
        .find(|i| wins[*i].is_ok())
        .map(|i| format!("u{i}"))
        .expect("a winner");
    d.update(&t, &row(json!({"id": winner, "email": "new@y"})), &o)
        .await
        .expect("update");
    d.add(&t, &row(json!({"id": "other", "email": "x@y"})), &o)
        .await
        .expect("the old value is free");
    assert_eq!(
        d.put(&t, &row(json!({"id": "third", "email": "new@y"})), &o)
            .await,
        Err(DbError::Exists)
    );
    d.del(&t, &row(json!({"id": winner})), &o)
        .await
        .expect("del");
    d.put(&t, &row(json!({"id": "third", "email": "new@y"})), &o)
        .await
        .expect("freed by del");
    // Concurrent increments of a row of such a table stay exact (version-checked transactions).
    let incrs = futures_util::future::join_all(
        (0..4)
            .map(|_| {
                let (d, t, o) = (&d, &t, &o);
                async move {
                    for _ in 0..5 {
                        d.incr(t, &row(json!({"id": "third", "n": 1})), o).await?;
                    }
                    Ok::<(), DbError>(())
                }
            })
            .collect::<Vec<_>>(),
    )
    .await;
    assert!(incrs.iter().all(|r| r.is_ok()), "{incrs:?}");
    let g = d
        .get(&t, &row(json!({"id": "third"})), &o)
        .await
        .expect("get")
        .expect("row");
    assert_eq!(
        (g["n"].clone(), g["email"].clone()),
        (json!(20), json!("new@y"))
    );
    assert!(
        !g.contains_key("_v"),
        "the version attribute is hidden: {g:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamodb_refuses_what_it_cannot_do() {
    let Some(m) = Moto::start() else {
        return;
    };
    let d = driver(&m, "ref_");
    let three = Table::new(
        "three",
        vec![
            Column::text("a").primary(1),
            Column::text("b").primary(2),
            Column::text("c").primary(3),
        ],
    )
    .expect("table");
    assert!(matches!(
        d.init(&[three]).await,
        Err(DbError::Unsupported(m)) if m.contains("at most two")
    ));
    assert!(matches!(
        d.query("SELECT 1", &[], &Options::default()).await,
        Err(DbError::Unsupported(_))
    ));
    assert!(matches!(
        DynamoDriver::new(&DynamoConfig {
            key: String::new(),
            ..m.config("x")
        }),
        Err(DbError::BadValue { .. })
    ));
}
