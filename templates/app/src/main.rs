//! A bkjs application: the bkjs backend (accounts, signed requests, cache, DB pools, process
//! supervision) plus this application's own table, routes and job. `cargo run -- run-backend`
//! starts it in development mode; `cargo run -- help` lists every parameter, `cargo run -- doc
//! html` prints its API reference, including the routes below.

mod jobs;

use bkjs::api::{ApiError, Out, Req};
use bkjs::db::{Column, Db, Options, Row, Table};
use serde_json::json;
use std::sync::Arc;

/// The allocator the stock bkjs binary uses: faster than glibc's for the many small buffers of a
/// request. `no_thp` keeps transparent huge pages from inflating every process's resident memory.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    bkjs::run(app())
}

/// What this application adds to bkjs. Every process of the tree (server, web workers, shell)
/// is this binary, so all of them know the table and the routes.
fn app() -> bkjs::App {
    bkjs::App::new()
        .table(test_table())
        .route_doc(
            "*",
            "/test/add",
            "add a test row: name required, id optional (generated when missing); answers the row",
            add,
        )
        .route_doc("GET", "/test/{id}", "the test row with this id", get)
        // Scheduled in etc/crontab; run on demand with `bksh -run-job job test.cleanup`.
        .job("test.cleanup", |ctx| async move {
            let deleted = jobs::cleanup(&ctx.db, &ctx.args).await?;
            println!("test.cleanup: deleted {deleted} rows");
            Ok(())
        })
}

/// `test (id | name, mtime)`: created, or upgraded with new columns, when the server starts.
fn test_table() -> Table {
    Table::new(
        "test",
        vec![
            Column::text("id").primary(1),
            Column::text("name").notnull(),
            Column::bigint("mtime").now(),
        ],
    )
    .expect("the test table's names are valid")
}

fn db(req: &Req) -> Result<Arc<Db>, ApiError> {
    req.api
        .db
        .clone()
        .ok_or_else(|| ApiError::internal("no database configured"))
}

fn key(id: &str) -> Row {
    let mut row = Row::new();
    row.insert("id".into(), json!(id));
    row
}

/// A new id: the time in nanoseconds and the process id, in hex.
fn new_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{nanos:x}{:x}", std::process::id())
}

/// `/test/add?name=N[&id=I]`: 409 when the id exists, 400 without a name.
async fn add(req: Arc<Req>) -> Result<Out, ApiError> {
    let db = db(&req)?;
    let name = req.required("name")?;
    let id = match req.param("id") {
        Some(id) if !id.is_empty() => id.to_string(),
        _ => new_id(),
    };
    let mut row = key(&id);
    row.insert("name".into(), json!(name));
    db.add("test", &row, &Options::default()).await?;
    let stored = db.get("test", &key(&id), &Options::default()).await?;
    Ok(Out::Json(json!(stored)))
}

/// `/test/{id}`: 404 when there is no such row.
async fn get(req: Arc<Req>) -> Result<Out, ApiError> {
    let db = db(&req)?;
    let id = req.capture("id").unwrap_or_default();
    match db.get("test", &key(id), &Options::default()).await? {
        Some(row) => Ok(Out::Json(json!(row))),
        None => Err(ApiError::not_found(format!("no test row {id}"))),
    }
}
