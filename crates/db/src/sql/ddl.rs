//! Schema statements: `CREATE TABLE`, `ADD COLUMN` and the secondary and unique indexes, with
//! deterministic index names so that `init` can tell which exist.

use super::dialect::{Dialect, Sql};
use crate::schema::{Column, Table, MAX_NAME};

/// `CREATE TABLE IF NOT EXISTS` with every column and the primary key.
pub(crate) fn create_table(d: Dialect, t: &Table) -> String {
    let mut s = Sql::new(d);
    s.push("CREATE TABLE IF NOT EXISTS ");
    s.ident(t.name());
    s.push(" (");
    for c in t.columns() {
        s.ident(&c.name);
        s.push(" ");
        s.push(d.column_sql_type(c));
        if c.primary > 0 {
            s.push(" NOT NULL");
        }
        s.push(", ");
    }
    s.push("PRIMARY KEY (");
    s.idents(t.primary_keys().iter().map(|c| c.name.as_str()));
    s.push("))");
    if t.is_clustered() && d == Dialect::Sqlite {
        s.push(" WITHOUT ROWID");
    }
    s.text
}

/// `ALTER TABLE ... ADD COLUMN` for a column missing from an existing table.
pub(crate) fn add_column(d: Dialect, t: &Table, c: &Column) -> String {
    format!(
        "ALTER TABLE {} ADD COLUMN {} {}",
        d.quote(t.name()),
        d.quote(&c.name),
        d.column_sql_type(c)
    )
}

/// A deterministic index name from the table and columns (so a changed index is a new index),
/// shortened with a hash when it would be too long for PostgreSQL.
fn index_name(t: &Table, cols: &[&Column], unique: bool) -> String {
    let mut name = format!(
        "{}_{}",
        t.name(),
        cols.iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>()
            .join("_")
    );
    name.push_str(if unique { "_uniq" } else { "_idx" });
    if name.len() > MAX_NAME - 1 {
        // FNV-1a: stable across builds and platforms.
        let h = name.bytes().fold(0xcbf29ce484222325u64, |h, b| {
            (h ^ b as u64).wrapping_mul(0x100000001b3)
        });
        name = format!("{}_{h:016x}", &t.name()[..t.name().len().min(40)]);
    }
    name
}

/// `CREATE [UNIQUE] INDEX IF NOT EXISTS` for every secondary index and unique column.
pub(crate) fn create_indexes(d: Dialect, t: &Table) -> Vec<String> {
    index_defs(d, t).into_iter().map(|(_, ddl)| ddl).collect()
}

/// Every secondary index and unique column as (index name, `CREATE [UNIQUE] INDEX` statement).
/// MySQL has no `IF NOT EXISTS` for indexes, so its statements lack it: the driver compares the
/// names with the existing indexes first.
pub(crate) fn index_defs(d: Dialect, t: &Table) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut make = |cols: Vec<&Column>, unique: bool| {
        let mut s = Sql::new(d);
        s.push(match (unique, d) {
            (true, Dialect::Mysql) => "CREATE UNIQUE INDEX ",
            (false, Dialect::Mysql) => "CREATE INDEX ",
            (true, _) => "CREATE UNIQUE INDEX IF NOT EXISTS ",
            (false, _) => "CREATE INDEX IF NOT EXISTS ",
        });
        let name = index_name(t, &cols, unique);
        s.ident(&name);
        s.push(" ON ");
        s.ident(t.name());
        s.push(" (");
        s.idents(cols.iter().map(|c| c.name.as_str()));
        s.push(")");
        out.push((name, s.text));
    };
    for cols in t.indexes() {
        make(cols, false);
    }
    for c in t.columns().iter().filter(|c| c.unique) {
        make(vec![c], true);
    }
    out
}
