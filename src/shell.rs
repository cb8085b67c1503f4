//! The shell (`bkjs run-shell`, `bksh`): the same configuration and DB pools as the server, no
//! HTTP. Reads one command per line from standard input: `config [NAME]`, and
//! `db get|put|add|update|incr|del|select TABLE name=value ...` with the control parameters of
//! `/data` (`_count=5`, `_ops=col,op`, ...). Results print as JSON, one line each. The interactive
//! REPL with history and completion comes with the operator-experience work.

use crate::config::Config;
use crate::db::{Db, DbError, Op, Options, Row, Table};
use serde_json::Value;
use std::io::BufRead;
use std::str::FromStr;

/// Runs shell commands from stdin until end of input; returns the exit code (1 if any failed).
pub fn run(cfg: Config, tables: Vec<Table>) -> i32 {
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
    let mut db: Option<Db> = None;
    let stdin = std::io::stdin();
    let mut code = 0;
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        let words: Vec<&str> = line.split_whitespace().collect();
        let result = match words.as_slice() {
            [] => Ok(()),
            ["config", name] => match cfg.display(name) {
                Some(v) => {
                    println!("{v}");
                    Ok(())
                }
                None => Err(format!(
                    "unknown parameter {name}; `config` alone lists them all"
                )),
            },
            ["config"] => {
                for p in cfg.registry() {
                    println!("{} = {}", p.name, cfg.display(p.name).unwrap_or_default());
                }
                Ok(())
            }
            ["db", op, table, args @ ..] => {
                if db.is_none() {
                    match rt.block_on(open(&cfg, tables.clone())) {
                        Ok(d) => db = Some(d),
                        Err(e) => {
                            eprintln!("bksh: cannot open the database: {e}");
                            return 1;
                        }
                    }
                }
                match db.as_ref() {
                    Some(d) => rt
                        .block_on(db_command(d, op, table, args))
                        .map_err(|e| e.to_string()),
                    None => Err("no database".into()),
                }
            }
            ["db", ..] => {
                Err("usage: db get|put|add|update|incr|del|select TABLE name=value ...".into())
            }
            ["quit"] | ["exit"] => break,
            _ => Err(format!(
                "unknown command: {line}; try `config NAME`, `db get TABLE id=1` or `quit`"
            )),
        };
        if let Err(e) = result {
            eprintln!("{e}");
            code = 1;
        }
    }
    code
}

async fn open(cfg: &Config, tables: Vec<Table>) -> Result<Db, DbError> {
    let db = Db::open(cfg, tables, None).await?;
    db.init().await?;
    Ok(db)
}

async fn db_command(db: &Db, op: &str, table: &str, args: &[&str]) -> Result<(), DbError> {
    let mut row = Row::new();
    let mut opts = Options::default();
    for a in args {
        let (k, v) = a
            .split_once('=')
            .ok_or_else(|| DbError::bad_value(a, "expected name=value"))?;
        match k {
            "_count" => {
                opts.count = v
                    .parse()
                    .map_err(|_| DbError::bad_value("_count", "not a number"))?
            }
            "_select" => opts.select = v.split(',').map(str::to_string).collect(),
            "_sort" => opts.sort = Some(v.to_string()),
            "_desc" => opts.desc = v == "1" || v == "true",
            "_start" => opts.start = Some(v.to_string()),
            "_noscan" => opts.noscan = v == "1" || v == "true",
            "_ops" => {
                let parts: Vec<&str> = v.split(',').collect();
                for pair in parts.chunks(2) {
                    if let [col, op] = pair {
                        opts.ops.insert(col.to_string(), Op::from_str(op)?);
                    }
                }
            }
            _ => {
                row.insert(k.to_string(), Value::String(v.to_string()));
            }
        }
    }
    let out = match op {
        "get" => serde_json::json!(db.get(table, &row, &opts).await?),
        "select" => {
            let r = db.select(table, &row, &opts).await?;
            serde_json::json!({"count": r.rows.len(), "data": r.rows, "next_token": r.next_token})
        }
        "put" => serde_json::json!({"affected": db.put(table, &row, &opts).await?.affected}),
        "add" => serde_json::json!({"affected": db.add(table, &row, &opts).await?.affected}),
        "update" => serde_json::json!({"affected": db.update(table, &row, &opts).await?.affected}),
        "incr" => serde_json::json!(db.incr(table, &row, &opts).await?.rows),
        "del" => serde_json::json!({"affected": db.del(table, &row, &opts).await?.affected}),
        other => {
            return Err(DbError::BadOp(format!(
                "{other} (try get, put, add, update, incr, del, select)"
            )))
        }
    };
    println!("{out}");
    Ok(())
}
