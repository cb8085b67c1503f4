//! The one-shot subcommands of docs/processes.md (`bksh -account-add login L ...`, `-send-request`,
//! `-run-job`) and the DB pools and cache they (and the shell's commands) open. Kept apart from
//! the shell front ([`super`]) so that the commands ([`super::command`]) can reuse them without
//! depending on the module that runs them.

use bkjs_base::config::Config;
use bkjs_db::{Db, DbError, Options, Row, Table};
use serde_json::Value;

/// The cache this shell can reach: the server's LRU over IPC (only when a server runs in this
/// home) or Redis.
pub(crate) fn open_cache(cfg: &Config) -> Result<bkjs_cache::Cache, String> {
    if cfg.str("cache-type") == "local" && !bkjs_ipc::hub_path(cfg).exists() {
        return Err(format!(
            "no server runs in {} ({} is missing): start one with `bkjs run-backend -home {}`, or use -cache-type redis",
            cfg.home.display(),
            bkjs_ipc::hub_path(cfg).display(),
            cfg.home.display()
        ));
    }
    let ipc = bkjs_ipc::Client::connect(&bkjs_ipc::hub_url(cfg), cfg.duration("ipc-timeout"))
        .map_err(|e| format!("cannot reach the server: {e}"))?;
    bkjs_cache::Cache::new(cfg, ipc).map_err(|e| e.to_string())
}

/// Opens the DB pools; with a server running, writes invalidate its cache like a web worker's.
pub(crate) async fn open(cfg: &Config, tables: Vec<Table>) -> Result<Db, DbError> {
    let cache = open_cache(cfg).ok();
    let db = Db::open(cfg, tables, cache).await?;
    db.init().await?;
    Ok(db)
}

/// The one-shot subcommands of docs/processes.md; everything after the subcommand is its arguments.
pub(crate) const SUBCOMMANDS: &[&str] = &[
    "-account-add",
    "-add-user",
    "-account-update",
    "-account-del",
    "-location-put",
    "-send-request",
    "-run-job",
    "-jobs",
];

/// Splits a shell command line into configuration parameters and a subcommand with its
/// arguments (which must come last).
pub(crate) fn split_subcommand(words: &[String]) -> (Vec<String>, Option<(String, Vec<String>)>) {
    match words.iter().position(|w| SUBCOMMANDS.contains(&w.as_str())) {
        Some(i) => (
            words[..i].to_vec(),
            Some((words[i].clone(), words[i + 1..].to_vec())),
        ),
        None => (words.to_vec(), None),
    }
}

/// `name value` pairs (a leading `-` on a name is dropped) into a row; `-keep` repeats.
pub(crate) fn pairs(sub: &str, args: &[String]) -> Result<(Row, Vec<String>), String> {
    if args.len() % 2 != 0 {
        return Err(format!(
            "bksh {sub}: expected name value pairs, {:?} has no value",
            args.last().map(String::as_str).unwrap_or("")
        ));
    }
    let mut row = Row::new();
    let mut keep = Vec::new();
    for pair in args.chunks(2) {
        let name = pair[0].trim_start_matches('-');
        if name.is_empty() {
            return Err(format!("bksh {sub}: empty parameter name"));
        }
        if name == "keep" {
            keep.push(pair[1].clone());
        } else {
            row.insert(name.to_string(), Value::String(pair[1].clone()));
        }
    }
    Ok((row, keep))
}

/// Runs one subcommand (`-account-add login L secret S name N`, ...); prints the JSON result.
pub(crate) fn run_subcommand(
    cfg: Config,
    tables: Vec<Table>,
    jobs: std::sync::Arc<bkjs_jobs::Registry>,
    sub: &str,
    args: &[String],
) -> i32 {
    let (input, keep) = match pairs(sub, args) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("{e}");
            return bkjs_base::config::EXIT_USAGE;
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bksh: cannot start: {e}");
            return 1;
        }
    };
    let result = rt.block_on(async {
        let db = open(&cfg, tables)
            .await
            .map_err(|e| format!("cannot open the database: {e}"))?;
        let db = std::sync::Arc::new(db);
        if sub == "-run-job" {
            return run_job(&cfg, &db, &jobs, input).await;
        }
        if sub == "-jobs" {
            return queue_jobs(&cfg, input).await;
        }
        subcommand(&cfg, &db, sub, input, &keep).await
    });
    match result {
        Ok(v) => {
            println!("{v}");
            0
        }
        Err(e) => {
            eprintln!("bksh {sub}: {e}");
            1
        }
    }
}

/// The bk_auth row named by `login` or `id` in `input` (both removed from it).
async fn find_auth(db: &Db, input: &mut Row) -> Result<Row, String> {
    let login = input.remove("login");
    let id = input.remove("id");
    let (col, value) = match (login, id) {
        (Some(l), _) => ("login", l),
        (None, Some(i)) => ("id", i),
        (None, None) => return Err("login or id is required".into()),
    };
    let mut q = Row::new();
    q.insert(col.into(), value.clone());
    let res = db
        .select("bk_auth", &q, &Options::default())
        .await
        .map_err(|e| e.to_string())?;
    res.rows
        .into_iter()
        .next()
        .ok_or_else(|| format!("no account with {col} {value}"))
}

pub(crate) async fn subcommand(
    cfg: &Config,
    db: &Db,
    sub: &str,
    mut input: Row,
    keep: &[String],
) -> Result<Value, String> {
    use bkjs_api::endpoints::account;
    match sub {
        "-account-add" | "-add-user" => account::create_account(db, &input, true)
            .await
            .map(Value::Object)
            .map_err(|e| e.message),
        "-account-update" => {
            let auth = find_auth(db, &mut input).await?;
            account::update_account(db, &auth, &input, true)
                .await
                .map_err(|e| e.message)?;
            Ok(serde_json::json!({}))
        }
        "-account-del" => {
            let auth = find_auth(db, &mut input).await?;
            let id = auth.get("id").and_then(Value::as_str).unwrap_or("");
            let login = auth.get("login").and_then(Value::as_str);
            let routes = bkjs_api::endpoints::builtin();
            let hooks = routes.account_delete_hooks();
            let (images, files) = (cfg.dir("images"), cfg.dir("files"));
            account::delete_account(db, &images, &files, id, login, keep, hooks)
                .await
                .map_err(|e| e.to_string())?;
            Ok(serde_json::json!({}))
        }
        "-location-put" => {
            let auth = find_auth(db, &mut input).await?;
            let coord = |name: &str| -> Result<f64, String> {
                input
                    .get(name)
                    .and_then(Value::as_str)
                    .and_then(|v| v.trim().parse::<f64>().ok())
                    .ok_or_else(|| format!("{name} is required (a number)"))
            };
            let (lat, lon) = (coord("latitude")?, coord("longitude")?);
            let id = auth.get("id").and_then(Value::as_str).unwrap_or("");
            bkjs_api::endpoints::location::put_location(
                db,
                cfg.number("min-distance"),
                id,
                lat,
                lon,
            )
            .await
            .map(Value::Object)
            .map_err(|e| e.message)
        }
        "-send-request" => send_request(cfg, db, input).await,
        other => Err(format!("unknown subcommand {other}")),
    }
}

/// `-jobs [job JOB [type T] [delay MS] [priority N] [unique KEY] [max_attempts N]] [id ID]
/// [retry ID] [cancel ID]`: the durable queue through this machine's master, as `/system/jobs`:
/// queues jobs (answering their ids once committed), shows one, retries or cancels one; with no
/// argument the queue's status.
async fn queue_jobs(cfg: &Config, mut input: Row) -> Result<Value, String> {
    let mut req = serde_json::Map::new();
    for op in ["id", "retry", "cancel"] {
        if let Some(v) = input.remove(op) {
            if !req.is_empty() {
                return Err("give one of job, id, retry, cancel".into());
            }
            req.insert(
                "op".into(),
                serde_json::json!(if op == "id" { "get" } else { op }),
            );
            req.insert("id".into(), v);
        }
    }
    if let Some(job) = input.remove("job") {
        if !req.is_empty() {
            return Err("give one of job, id, retry, cancel".into());
        }
        req.insert("op".into(), serde_json::json!("run"));
        req.insert("job".into(), job);
        for k in [
            "type",
            "delay",
            "run_at",
            "priority",
            "unique",
            "max_attempts",
        ] {
            if let Some(v) = input.remove(k) {
                let v = match (k, v) {
                    ("type" | "unique", v) => v,
                    (_, Value::String(s)) => serde_json::json!(s
                        .trim()
                        .parse::<i64>()
                        .map_err(|_| format!("{k} must be an integer, not {s:?}"))?),
                    (_, v) => v,
                };
                req.insert(k.into(), v);
            }
        }
    }
    if let Some(k) = input.keys().next() {
        return Err(format!(
            "unknown argument {k} (job, type, delay, run_at, priority, unique, max_attempts, id, retry, cancel)"
        ));
    }
    if req.is_empty() {
        req.insert("op".into(), serde_json::json!("status"));
    }
    bkjs_jobs::control::request(cfg, &Value::Object(req))
        .await
        .map_err(|e| e.to_string())
}

/// `-run-job job JOB [type local|server] [host H]`: runs the jobs of JOB (a name or JSON) in
/// this process, one after the other, or with `host` queues them in `bk_jobs` for that host's
/// master.
async fn run_job(
    cfg: &Config,
    db: &std::sync::Arc<Db>,
    registry: &bkjs_jobs::Registry,
    mut input: Row,
) -> Result<Value, String> {
    use bkjs_jobs::{parse_text, JobContext, JobType};
    let text = |v: Option<Value>| match v {
        Some(Value::String(s)) => s,
        Some(other) => other.to_string(),
        None => String::new(),
    };
    let spec = text(input.remove("job"));
    if spec.is_empty() {
        return Err("job NAME_OR_JSON is required".into());
    }
    let kind = JobType::parse(&text(input.remove("type"))).map_err(|e| e.to_string())?;
    let host = text(input.remove("host"));
    if let Some(k) = input.keys().next() {
        return Err(format!("unknown argument {k} (job, type, host)"));
    }
    let jobs = parse_text(&spec, kind).map_err(|e| e.to_string())?;
    registry.check(&jobs).map_err(|e| e.to_string())?;
    let names: Vec<String> = jobs.iter().map(|j| j.name.clone()).collect();
    if !host.is_empty() {
        let id = bkjs_jobs::submit_to_host(db, &host, &jobs)
            .await
            .map_err(|e| e.to_string())?;
        return Ok(serde_json::json!({"host": host, "id": id, "queued": names}));
    }
    for job in jobs {
        let Some(handler) = registry.get(&job.name) else {
            continue;
        };
        let ctx = JobContext {
            name: job.name.clone(),
            args: job.args.clone(),
            cfg: cfg.clone(),
            db: db.clone(),
            id: 0,
            attempt: 0,
        };
        handler(ctx)
            .await
            .map_err(|e| format!("job {} failed: {e}", job.name))?;
    }
    Ok(serde_json::json!({"ran": names}))
}

/// `-send-request -url PATH (-login L | -id I) name value ...`: a GET to this machine's server
/// signed (v3) as that account; prints the reply body.
pub(crate) async fn send_request(cfg: &Config, db: &Db, mut input: Row) -> Result<Value, String> {
    let url = match input.remove("url") {
        Some(Value::String(u)) if u.starts_with('/') => u,
        _ => return Err("-url PATH is required (starting with /)".into()),
    };
    let auth = find_auth(db, &mut input).await?;
    let login = auth.get("login").and_then(Value::as_str).unwrap_or("");
    let table = db.table("bk_auth").map_err(|e| e.to_string())?;
    let secret = db
        .unseal(&table, &auth, "secret")
        .map_err(|e| format!("the secret of {login:?}: {e}"))?
        .map(|s| s.into_inner())
        .unwrap_or_default();
    let mut query = form_urlencoded::Serializer::new(String::new());
    for (k, v) in &input {
        match v {
            Value::String(s) => query.append_pair(k, s),
            other => query.append_pair(k, &other.to_string()),
        };
    }
    let query = query.finish();
    let (path, extra) = match url.split_once('?') {
        Some((p, q)) => (p.to_string(), q.to_string()),
        None => (url.clone(), String::new()),
    };
    let full_query = [extra, query]
        .into_iter()
        .filter(|q| !q.is_empty())
        .collect::<Vec<_>>()
        .join("&");
    let host = format!("127.0.0.1:{}", cfg.int("port"));
    let expires = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
        + 30_000;
    let target = if full_query.is_empty() {
        path
    } else {
        format!("{path}?{full_query}")
    };
    let signature = bkjs_api::auth::sign_request(
        bkjs_api::auth::Version::V3,
        login,
        secret.as_bytes(),
        &bkjs_api::auth::ClientRequest {
            method: "GET",
            host: &host,
            target: &target,
            content_type: None,
            body: b"",
            expires,
        },
    )
    .map_err(|e| e.message())?;
    let uri: hyper::Uri = format!("http://{host}{target}")
        .parse()
        .map_err(|e| format!("bad url {target}: {e}"))?;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let req = hyper::Request::get(uri)
        .header("bk-signature", signature)
        .body(http_body_util::Empty::new())
        .map_err(|e| e.to_string())?;
    let resp = tokio::time::timeout(std::time::Duration::from_secs(30), client.request(req))
        .await
        .map_err(|_| format!("no answer from {host} in 30 s"))?
        .map_err(|e| format!("cannot reach the server at {host}: {e}"))?;
    let status = resp.status();
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    let v: Value = serde_json::from_slice(&body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
    if status.is_success() {
        Ok(v)
    } else {
        Err(format!("{status}: {v}"))
    }
}
