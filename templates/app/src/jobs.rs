//! Jobs of this application. A job is an async function the master runs on a schedule
//! (etc/crontab) or on demand; `cleanup` deletes test rows older than `age` milliseconds
//! (default one day) and reports how many it deleted.

use bkjs::db::{Db, DbError, Op, Options, Row};
use serde_json::{json, Value};

/// `{"test.cleanup": {"age": MS}}`: deletes test rows whose mtime is older than now - age.
pub async fn cleanup(db: &Db, args: &Value) -> Result<u64, DbError> {
    let age = args.get("age").and_then(Value::as_i64).unwrap_or(86_400_000);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let mut query = Row::new();
    query.insert("mtime".into(), json!(now - age));
    let opts = Options::default().op("mtime", Op::Lt);
    Ok(db.del_all("test", &query, &opts).await?.affected)
}
