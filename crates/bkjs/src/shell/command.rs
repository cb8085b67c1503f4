//! One shell command line: split into words with shell quoting, run against the configuration,
//! the DB pools, the cache or this machine's HTTP server, and answered with an [`Out`] that the
//! caller prints as JSON (scripts) or as a table (the REPL). A mistake is answered with what to
//! type instead: the closest command, table, column or parameter name, or the usage line.

use super::subcommand;
use bkjs_base::config::Config;
use bkjs_cache::Cache;
use bkjs_db::{Db, Op, Options, Row, Table};
use serde_json::{json, Value};
use std::str::FromStr;

/// The shell's commands: name, usage, what it does. `help` prints them; the REPL completes them.
pub(crate) const COMMANDS: &[(&str, &str, &str)] = &[
    (
        "db",
        "db get|select|put|add|update|incr|del TABLE name=value ... | db tables | db columns TABLE",
        "the DB API on the configured pools; _count=N _select=a,b _sort=col _desc=1 _start=TOKEN _ops=col,op,... _noscan=0 as in /data",
    ),
    (
        "cache",
        "cache get NAME... | put NAME VALUE | incr NAME [N] | del NAME | exists NAME | keys [PREFIX] | stats | clear",
        "the cache of the server running in this home (or Redis or memcached with -cache-type redis|memcache)",
    ),
    ("config", "config [NAME]", "a parameter's value as loaded, or every parameter"),
    (
        "send",
        "send PATH login=L|id=I [name=value ...]",
        "a GET to this machine's server, signed (v3) as that account; prints the JSON reply",
    ),
    (
        "account",
        "account add|update|del name=value ...",
        "the -account-add, -account-update and -account-del subcommands (add: login, secret, name)",
    ),
    ("format", "format table|json", "how results are printed"),
    ("help", "help [COMMAND]", "this list, or one command's usage"),
    ("quit", "quit | exit", "leave the shell (Ctrl-D too)"),
];

/// `db` operations.
pub(crate) const DB_OPS: &[&str] = &[
    "get", "select", "put", "add", "update", "incr", "del", "tables", "columns",
];

/// `cache` operations.
pub(crate) const CACHE_OPS: &[&str] = &[
    "get", "put", "set", "incr", "del", "exists", "keys", "stats", "clear",
];

/// Control parameters `db` accepts besides columns.
pub(crate) const DB_CONTROLS: &[&str] = &[
    "_count", "_select", "_sort", "_desc", "_start", "_noscan", "_ops",
];

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    /// One compact JSON value per line (scripts; the default without a terminal).
    Json,
    /// Tables and aligned records (the REPL's default).
    Table,
}

/// What a command produced.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Out {
    /// Nothing to print.
    None,
    /// Text printed as it is (config values, help).
    Text(String),
    /// Rows with these columns first (a select's page, a listing).
    Rows {
        columns: Vec<String>,
        rows: Vec<Row>,
        next_token: Option<String>,
    },
    /// One JSON object (a row, counters) or null (a get that found nothing).
    Record(Value),
    /// Any other JSON value.
    Json(Value),
    /// `quit`.
    Quit,
}

impl Out {
    /// The result as one line for scripts: JSON for data, the text as it is for text.
    pub(crate) fn to_json_line(&self) -> Option<String> {
        match self {
            Out::None | Out::Quit => None,
            Out::Text(t) => Some(t.clone()),
            Out::Rows {
                rows, next_token, ..
            } => Some(
                json!({"count": rows.len(), "data": rows, "next_token": next_token}).to_string(),
            ),
            Out::Record(v) | Out::Json(v) => Some(v.to_string()),
        }
    }
}

/// The closest of `candidates` to `word` (a prefix of one, or within a small edit distance).
pub(crate) fn suggest<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let mut best: Option<(usize, &str)> = None;
    for c in candidates {
        let d = if !word.is_empty() && c.starts_with(word) {
            0
        } else {
            strsim::levenshtein(word, c)
        };
        if best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, c));
        }
    }
    let limit = (word.chars().count() / 3).max(2);
    best.filter(|(d, _)| *d <= limit).map(|(_, c)| c)
}

/// "; did you mean `x`?" or nothing.
fn did_you_mean<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    suggest(word, candidates)
        .map(|s| format!("; did you mean `{s}`?"))
        .unwrap_or_default()
}

/// A shell: the configuration, the described tables, and the pools and cache once first used.
pub(crate) struct Shell {
    pub(crate) cfg: Config,
    pub(crate) tables: Vec<Table>,
    pub(crate) format: Format,
    rt: tokio::runtime::Runtime,
    db: Option<std::sync::Arc<Db>>,
    cache: Option<Cache>,
}

impl Shell {
    pub(crate) fn new(cfg: Config, tables: Vec<Table>) -> std::io::Result<Shell> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        Ok(Shell {
            cfg,
            tables,
            format: Format::Json,
            rt,
            db: None,
            cache: None,
        })
    }

    /// The described table `name`, or an error naming the closest one.
    pub(crate) fn table(&self, name: &str) -> Result<&Table, String> {
        self.tables
            .iter()
            .find(|t| t.name() == name)
            .ok_or_else(|| {
                format!(
                    "no table `{name}`{} (`db tables` lists them)",
                    did_you_mean(name, self.tables.iter().map(|t| t.name()))
                )
            })
    }

    fn db(&mut self) -> Result<std::sync::Arc<Db>, String> {
        if self.db.is_none() {
            let db = self
                .rt
                .block_on(subcommand::open(&self.cfg, self.tables.clone()))
                .map_err(|e| format!("cannot open the database: {e}"))?;
            self.db = Some(std::sync::Arc::new(db));
        }
        self.db.clone().ok_or_else(|| "no database".to_string())
    }

    fn cache(&mut self) -> Result<Cache, String> {
        if self.cache.is_none() {
            let _enter = self.rt.enter();
            self.cache = Some(subcommand::open_cache(&self.cfg)?);
        }
        self.cache.clone().ok_or_else(|| "no cache".to_string())
    }

    /// Runs one command line.
    pub(crate) fn execute(&mut self, line: &str) -> Result<Out, String> {
        let words = shlex::split(line).ok_or_else(|| {
            format!("unbalanced quote in: {line}; close it, or escape a literal quote with \\")
        })?;
        let words: Vec<&str> = words.iter().map(String::as_str).collect();
        match words.as_slice() {
            [] => Ok(Out::None),
            [c, ..] if c.starts_with('#') => Ok(Out::None),
            ["quit"] | ["exit"] => Ok(Out::Quit),
            ["help"] => Ok(Out::Text(help(None))),
            ["help", name] => {
                if COMMANDS.iter().any(|(n, _, _)| n == name) {
                    Ok(Out::Text(help(Some(name))))
                } else {
                    Err(unknown_command(name))
                }
            }
            ["config"] => Ok(Out::Text(
                self.cfg
                    .registry()
                    .iter()
                    .map(|p| {
                        format!(
                            "{} = {}",
                            p.name,
                            self.cfg.display(p.name).unwrap_or_default()
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n"),
            )),
            ["config", name] => {
                let name = name.trim_start_matches('-');
                self.cfg.display(name).map(Out::Text).ok_or_else(|| {
                    format!(
                        "unknown parameter `{name}`{}; `config` alone lists them all",
                        did_you_mean(name, self.cfg.registry().iter().map(|p| p.name))
                    )
                })
            }
            ["format", "json"] => {
                self.format = Format::Json;
                Ok(Out::None)
            }
            ["format", "table"] => {
                self.format = Format::Table;
                Ok(Out::None)
            }
            ["db", rest @ ..] => self.db_command(rest),
            ["cache", rest @ ..] => self.cache_command(rest),
            ["send", path, rest @ ..] => {
                let mut input = name_values(rest, "send")?;
                input.insert("url".into(), json!(path));
                let cfg = self.cfg.clone();
                let db = self.db()?;
                let v = self
                    .rt
                    .block_on(subcommand::send_request(&cfg, &db, input))?;
                Ok(Out::Record(v))
            }
            ["account", op @ ("add" | "update" | "del"), rest @ ..] => {
                let mut input = name_values(rest, "account")?;
                let keep: Vec<String> = match input.remove("keep") {
                    Some(Value::String(k)) => k.split(',').map(str::to_string).collect(),
                    _ => Vec::new(),
                };
                let cfg = self.cfg.clone();
                let db = self.db()?;
                let sub = format!("-account-{op}");
                let v = self
                    .rt
                    .block_on(subcommand::subcommand(&cfg, &db, &sub, input, &keep))?;
                Ok(Out::Record(v))
            }
            [cmd, ..] => match COMMANDS.iter().find(|(n, _, _)| n == cmd) {
                Some((_, usage, _)) => Err(format!("usage: {usage}")),
                None => Err(unknown_command(cmd)),
            },
        }
    }

    fn db_command(&mut self, words: &[&str]) -> Result<Out, String> {
        const USAGE: &str = "usage: db get|select|put|add|update|incr|del TABLE name=value ... | db tables | db columns TABLE";
        match words {
            ["tables"] => Ok(tables_listing(&self.tables)),
            ["columns", table] => Ok(columns_listing(self.table(table)?)),
            [op, ..] if !DB_OPS.contains(op) => Err(format!(
                "unknown db operation `{op}`{}; one of {}",
                did_you_mean(op, DB_OPS.iter().copied()),
                DB_OPS.join(", ")
            )),
            [op, table, args @ ..] if !matches!(*op, "tables" | "columns") => {
                let t = self.table(table)?.clone();
                let (row, opts) = db_args(&t, args)?;
                let db = self.db()?;
                let op = op.to_string();
                let table = t.name().to_string();
                self.rt
                    .block_on(db_op(&db, &op, &table, &row, &opts))
                    .map(|out| match out {
                        Out::Rows {
                            rows, next_token, ..
                        } => Out::Rows {
                            columns: t.columns().iter().map(|c| c.name.clone()).collect(),
                            rows,
                            next_token,
                        },
                        other => other,
                    })
                    .map_err(|e| match e {
                        bkjs_db::DbError::NoCondition => format!(
                            "{e}: add a condition such as `{}=VALUE`, or `_noscan=0` to read the whole table",
                            t.primary_keys().first().map(|c| c.name.as_str()).unwrap_or("name")
                        ),
                        e => e.to_string(),
                    })
            }
            _ => Err(USAGE.into()),
        }
    }

    fn cache_command(&mut self, words: &[&str]) -> Result<Out, String> {
        const USAGE: &str = "usage: cache get NAME... | put NAME VALUE | incr NAME [N] | del NAME | exists NAME | keys [PREFIX] | stats | clear";
        if let [op, ..] = words {
            if !CACHE_OPS.contains(op) {
                return Err(format!(
                    "unknown cache operation `{op}`{}; one of {}",
                    did_you_mean(op, CACHE_OPS.iter().copied()),
                    CACHE_OPS.join(", ")
                ));
            }
        }
        let valid = matches!(
            words,
            ["get", _, ..]
                | ["put" | "set", _, _]
                | ["incr", _]
                | ["incr", _, _]
                | ["del" | "exists", _]
                | ["keys"]
                | ["keys", _]
                | ["stats" | "clear"]
        );
        if !valid {
            return Err(USAGE.into());
        }
        let delta = match words {
            ["incr", _, n] => n.parse::<i64>().map_err(|_| {
                format!("cache incr: {n:?} is not an integer; try `cache incr NAME 1`")
            })?,
            _ => 1,
        };
        let cache = self.cache()?;
        let w: Vec<String> = words.iter().map(|s| s.to_string()).collect();
        self.rt.block_on(async move {
            let e = |e: bkjs_cache::CacheError| e.to_string();
            Ok(
                match w.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
                    ["get", names @ ..] => {
                        let values = cache
                            .get(names.iter().map(|s| s.to_string()).collect())
                            .await;
                        if let [v] = values.as_slice() {
                            Out::Record(json!({ "value": v }))
                        } else {
                            Out::Rows {
                                columns: vec!["name".into(), "value".into()],
                                rows: names
                                    .iter()
                                    .zip(values)
                                    .map(|(n, v)| {
                                        let mut r = Row::new();
                                        r.insert("name".into(), json!(n));
                                        r.insert("value".into(), json!(v));
                                        r
                                    })
                                    .collect(),
                                next_token: None,
                            }
                        }
                    }
                    ["put" | "set", name, value] => {
                        cache
                            .put(name.to_string(), value.to_string())
                            .await
                            .map_err(e)?;
                        Out::None
                    }
                    ["incr", name, ..] => Out::Record(json!({
                        "value": cache.incr(name.to_string(), delta).await.map_err(e)?
                    })),
                    ["del", name] => {
                        cache.del(name.to_string()).await.map_err(e)?;
                        Out::None
                    }
                    ["exists", name] => Out::Record(json!({
                        "exists": cache.exists(name.to_string()).await.map_err(e)?
                    })),
                    ["keys", prefix @ ..] => {
                        let prefix = prefix.first().map(|s| s.to_string()).unwrap_or_default();
                        let mut keys = cache.keys(prefix).await.map_err(e)?;
                        keys.sort();
                        Out::Json(json!(keys))
                    }
                    ["stats"] => Out::Record(json!(cache.stats().await.map_err(e)?)),
                    ["clear"] => {
                        cache.clear().await.map_err(e)?;
                        Out::None
                    }
                    _ => return Err(USAGE.to_string()),
                },
            )
        })
    }
}

fn unknown_command(cmd: &str) -> String {
    format!(
        "unknown command `{cmd}`{} (`help` lists the commands)",
        did_you_mean(cmd, COMMANDS.iter().map(|(n, _, _)| *n))
    )
}

/// `help` text: every command, or one command's usage and description.
fn help(name: Option<&str>) -> String {
    let mut out = String::new();
    for (n, usage, what) in COMMANDS {
        if name.is_none_or(|x| x == *n) {
            out.push_str(&format!("{usage}\n    {what}\n"));
        }
    }
    if name.is_none() {
        out.push_str(
            "Values with spaces go in quotes: db put bk_property name=motd value=\"hello world\"\n",
        );
    }
    out.trim_end().to_string()
}

/// `name=value` words into a row (for `send` and `account`).
fn name_values(words: &[&str], cmd: &str) -> Result<Row, String> {
    let mut row = Row::new();
    for w in words {
        let (k, v) = w
            .split_once('=')
            .ok_or_else(|| format!("{cmd}: expected name=value, got `{w}`; try `{w}=VALUE`"))?;
        row.insert(k.trim_start_matches('-').to_string(), json!(v));
    }
    Ok(row)
}

/// The row and options of `db OP TABLE name=value ...`; every name is a column of the table or a
/// control parameter.
fn db_args(table: &Table, args: &[&str]) -> Result<(Row, Options), String> {
    let mut row = Row::new();
    let mut opts = Options::default();
    let bool_of = |v: &str| v == "1" || v == "true";
    for a in args {
        let (k, v) = a
            .split_once('=')
            .ok_or_else(|| format!("expected name=value, got `{a}`; try `{a}=VALUE`"))?;
        match k {
            "_count" => {
                opts.count = v
                    .parse()
                    .map_err(|_| format!("_count={v} is not a number; try `_count=10`"))?
            }
            "_select" => opts.select = v.split(',').map(str::to_string).collect(),
            "_sort" => opts.sort = Some(v.to_string()),
            "_desc" => opts.desc = bool_of(v),
            "_start" => opts.start = Some(v.to_string()),
            "_noscan" => opts.noscan = bool_of(v),
            "_ops" => {
                let parts: Vec<&str> = v.split(',').collect();
                if parts.len() % 2 != 0 {
                    return Err(format!(
                        "_ops={v}: expected column,op pairs such as `_ops=name,begins_with`"
                    ));
                }
                for pair in parts.chunks(2) {
                    let op = Op::from_str(pair[1]).map_err(|e| e.to_string())?;
                    opts.ops.insert(pair[0].to_string(), op);
                }
            }
            k if k.starts_with('_') => {
                return Err(format!(
                    "unknown control parameter `{k}`{}; one of {}",
                    did_you_mean(k, DB_CONTROLS.iter().copied()),
                    DB_CONTROLS.join(", ")
                ))
            }
            k if table.column(k).is_none() => {
                return Err(format!(
                    "{} has no column `{k}`{} (`db columns {}` lists them)",
                    table.name(),
                    did_you_mean(k, table.columns().iter().map(|c| c.name.as_str())),
                    table.name()
                ))
            }
            k => {
                row.insert(k.to_string(), Value::String(v.to_string()));
            }
        }
    }
    Ok((row, opts))
}

async fn db_op(
    db: &Db,
    op: &str,
    table: &str,
    row: &Row,
    opts: &Options,
) -> Result<Out, bkjs_db::DbError> {
    let affected = |n: u64| Out::Record(json!({ "affected": n }));
    Ok(match op {
        "get" => Out::Record(json!(db.get(table, row, opts).await?)),
        "select" => {
            let r = db.select(table, row, opts).await?;
            Out::Rows {
                columns: Vec::new(),
                rows: r.rows,
                next_token: r.next_token,
            }
        }
        "put" => affected(db.put(table, row, opts).await?.affected),
        "add" => affected(db.add(table, row, opts).await?.affected),
        "update" => affected(db.update(table, row, opts).await?.affected),
        "incr" => Out::Json(json!(db.incr(table, row, opts).await?.rows)),
        "del" => affected(db.del(table, row, opts).await?.affected),
        other => {
            return Err(bkjs_db::DbError::BadOp(format!(
                "{other} (try get, put, add, update, incr, del, select)"
            )))
        }
    })
}

fn one_row(pairs: &[(&str, Value)]) -> Row {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

/// `db tables`: every described table with its primary key.
fn tables_listing(tables: &[Table]) -> Out {
    Out::Rows {
        columns: vec!["table".into(), "primary key".into(), "columns".into()],
        rows: tables
            .iter()
            .map(|t| {
                let keys: Vec<&str> = t.primary_keys().iter().map(|c| c.name.as_str()).collect();
                one_row(&[
                    ("table", json!(t.name())),
                    ("primary key", json!(keys.join(","))),
                    ("columns", json!(t.columns().len())),
                ])
            })
            .collect(),
        next_token: None,
    }
}

/// `db columns TABLE`: each column's type and properties.
fn columns_listing(table: &Table) -> Out {
    Out::Rows {
        columns: vec!["column".into(), "type".into(), "properties".into()],
        rows: table
            .columns()
            .iter()
            .map(|c| {
                let mut props = Vec::new();
                if c.primary > 0 {
                    props.push(format!("primary {}", c.primary));
                }
                for (i, n) in c.index.iter().enumerate() {
                    if *n > 0 {
                        props.push(if i == 0 {
                            "index".to_string()
                        } else {
                            format!("index{i}")
                        });
                    }
                }
                for (on, name) in [
                    (c.unique, "unique"),
                    (c.notnull, "notnull"),
                    (c.public, "pub"),
                    (c.admin, "admin"),
                    (c.private, "priv"),
                    (c.hidden, "hidden"),
                    (c.readonly, "readonly"),
                    (c.writeonly, "writeonly"),
                    (c.now, "now"),
                    (c.autoincr, "autoincr"),
                ] {
                    if on {
                        props.push(name.to_string());
                    }
                }
                one_row(&[
                    ("column", json!(c.name)),
                    ("type", json!(format!("{:?}", c.kind).to_lowercase())),
                    ("properties", json!(props.join(" "))),
                ])
            })
            .collect(),
        next_token: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shell() -> (tempfile::TempDir, Shell) {
        let home = tempfile::tempdir().expect("home");
        let registry = crate::app::params();
        let words = vec!["-home".to_string(), home.path().display().to_string()];
        let args = bkjs_base::config::Args::parse(&words, &registry).expect("args");
        let cfg = Config::load(&registry, &args, &Default::default()).expect("config");
        let s = Shell::new(cfg, bkjs_db::builtin_tables()).expect("shell");
        (home, s)
    }

    #[test]
    fn suggestions_find_the_closest_name() {
        assert_eq!(suggest("selct", DB_OPS.iter().copied()), Some("select"));
        assert_eq!(suggest("sel", DB_OPS.iter().copied()), Some("select"));
        assert_eq!(suggest("zzzzzz", DB_OPS.iter().copied()), None);
    }

    #[test]
    fn mistakes_say_what_to_type_instead() {
        let (_h, mut s) = shell();
        let e = s.execute("db selct bk_property").expect_err("bad op");
        assert!(e.contains("did you mean `select`"), "{e}");
        let e = s
            .execute("db get bk_proprety name=x")
            .expect_err("bad table");
        assert!(e.contains("did you mean `bk_property`"), "{e}");
        assert!(e.contains("db tables"), "{e}");
        let e = s
            .execute("db get bk_property nmae=x")
            .expect_err("bad column");
        assert!(e.contains("did you mean `name`"), "{e}");
        let e = s.execute("db get bk_property name").expect_err("no =");
        assert!(e.contains("name=VALUE"), "{e}");
        let e = s
            .execute("db get bk_property _cont=1")
            .expect_err("bad control");
        assert!(e.contains("`_count`"), "{e}");
        let e = s.execute("confg port").expect_err("bad command");
        assert!(e.contains("did you mean `config`"), "{e}");
        let e = s.execute("config prot").expect_err("bad parameter");
        assert!(e.contains("did you mean `port`"), "{e}");
        let e = s.execute("cache stat").expect_err("bad cache op");
        assert!(e.contains("did you mean `stats`"), "{e}");
        let e = s.execute("cache stats").expect_err("no server");
        assert!(e.contains("bkjs run-backend"), "{e}");
        let e = s.execute("db select bk_property").expect_err("noscan");
        assert!(e.contains("`_noscan=0`"), "{e}");
        let e = s.execute("db put bk_property name=\"x").expect_err("quote");
        assert!(e.contains("unbalanced quote"), "{e}");
        assert!(s.execute("db").expect_err("usage").starts_with("usage: db"));
    }

    #[test]
    fn db_commands_run_on_the_pools() {
        let (_h, mut s) = shell();
        assert_eq!(
            s.execute("db put bk_property name=motd value=\"hello world\""),
            Ok(Out::Record(json!({"affected": 1})))
        );
        let Ok(Out::Record(row)) = s.execute("db get bk_property name=motd") else {
            panic!("get")
        };
        assert_eq!(row["value"], "hello world");
        let Ok(Out::Rows { columns, rows, .. }) =
            s.execute("db select bk_property name=mo _ops=name,begins_with")
        else {
            panic!("select")
        };
        assert_eq!(columns.first().map(String::as_str), Some("name"));
        assert_eq!(rows.len(), 1);
        assert_eq!(s.execute("config port"), Ok(Out::Text("8000".into())));
        let Ok(Out::Rows { rows, .. }) = s.execute("db tables") else {
            panic!("tables")
        };
        assert!(rows.iter().any(|r| r["table"] == "bk_auth"));
        let Ok(Out::Rows { rows, .. }) = s.execute("db columns bk_auth") else {
            panic!("columns")
        };
        assert!(rows
            .iter()
            .any(|r| r["column"] == "login" && r["properties"] == "primary 1"));
        assert_eq!(s.execute("quit"), Ok(Out::Quit));
    }
}
