//! [`Dialect`], what differs between the SQL databases, and [`Sql`], a statement under
//! construction that quotes identifiers and binds values in the dialect's style.

use crate::schema::{Column, ColumnType};
use crate::types::Param;

/// The SQL flavour of a driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Sqlite,
    Postgres,
    Mysql,
}

impl Dialect {
    /// A quoted identifier (embedded quotes doubled, though validated names never contain any).
    pub(crate) fn quote(self, name: &str) -> String {
        let mut out = String::with_capacity(name.len() + 2);
        self.quote_into(&mut out, name);
        out
    }

    /// Appends the quoted identifier `name` to `out` (no temporary string: statements are built
    /// per request).
    pub(crate) fn quote_into(self, out: &mut String, name: &str) {
        let q = match self {
            Dialect::Mysql => '`',
            _ => '"',
        };
        out.push(q);
        for part in name.split_inclusive(q) {
            out.push_str(part);
            if part.ends_with(q) {
                out.push(q);
            }
        }
        out.push(q);
    }

    /// The placeholder of the `n`-th (1-based) parameter.
    pub(crate) fn placeholder(self, n: usize) -> String {
        let mut out = String::new();
        self.placeholder_into(&mut out, n);
        out
    }

    /// Appends the placeholder of the `n`-th (1-based) parameter to `out`.
    pub(crate) fn placeholder_into(self, out: &mut String, n: usize) {
        match self {
            Dialect::Postgres => {
                use std::fmt::Write;
                let _ = write!(out, "${n}");
            }
            _ => out.push('?'),
        }
    }

    /// The storage type of a column type.
    pub(crate) fn column_type(self, t: ColumnType) -> &'static str {
        match (self, t) {
            (Dialect::Sqlite, ColumnType::Real) => "REAL",
            (Dialect::Sqlite, ColumnType::Text | ColumnType::Json) => "TEXT",
            (Dialect::Sqlite, _) => "INTEGER",
            (Dialect::Mysql, ColumnType::Real) => "DOUBLE",
            (Dialect::Mysql, ColumnType::Bool) => "TINYINT(1)",
            (_, ColumnType::Real) => "DOUBLE PRECISION",
            (Dialect::Postgres, ColumnType::Bool) => "BOOLEAN",
            // Byte order like SQLite, whatever the server locale: sorting, ranges and the
            // `begins_with` range then agree across drivers (and the range can use an index).
            (Dialect::Postgres, ColumnType::Text | ColumnType::Json) => "TEXT COLLATE \"C\"",
            // MySQL cannot index TEXT without a prefix length; see `column_sql_type` for
            // unindexed text.
            (Dialect::Mysql, ColumnType::Text) => "VARCHAR(255)",
            (Dialect::Mysql, ColumnType::Json) => "LONGTEXT",
            (_, _) => "BIGINT",
        }
    }

    /// The storage type of one column: as [`Dialect::column_type`], except that MySQL keeps
    /// text that is neither part of a key nor indexed in `TEXT` (no length limit, and it does
    /// not count against MySQL's 64 KB row size).
    pub(crate) fn column_sql_type(self, c: &Column) -> &'static str {
        if self == Dialect::Mysql && c.kind == ColumnType::Text && !is_keyed(c) {
            "TEXT"
        } else {
            self.column_type(c.kind)
        }
    }

    /// How the upsert clause refers to the value the insert tried to write into `col` (quoted).
    pub(super) fn excluded(self, col: &str) -> String {
        match self {
            Dialect::Mysql => format!("VALUES({col})"),
            _ => format!("excluded.{col}"),
        }
    }

    /// `col` contains `needle` (both SQL expressions).
    pub(super) fn contains(self, col: &str, needle: &str) -> String {
        match self {
            Dialect::Sqlite => format!("instr({col}, {needle}) > 0"),
            Dialect::Postgres => format!("strpos({col}, {needle}) > 0"),
            Dialect::Mysql => format!("LOCATE({needle}, {col}) > 0"),
        }
    }
}

/// A statement under construction: text plus bound parameters in order.
#[derive(Debug, Clone)]
pub(crate) struct Sql {
    pub(crate) dialect: Dialect,
    pub(crate) text: String,
    pub(crate) params: Vec<Param>,
}

impl Sql {
    pub(crate) fn new(dialect: Dialect) -> Sql {
        Sql {
            dialect,
            text: String::new(),
            params: Vec::new(),
        }
    }
    pub(super) fn push(&mut self, s: &str) {
        self.text.push_str(s);
    }
    pub(super) fn ident(&mut self, name: &str) {
        self.dialect.quote_into(&mut self.text, name);
    }
    /// Appends a placeholder bound to `p`.
    pub(super) fn bind(&mut self, p: Param) {
        self.params.push(p);
        self.dialect
            .placeholder_into(&mut self.text, self.params.len());
    }
    pub(super) fn idents<'a>(&mut self, names: impl IntoIterator<Item = &'a str>) {
        for (i, n) in names.into_iter().enumerate() {
            if i > 0 {
                self.push(", ");
            }
            self.ident(n);
        }
    }
}

/// Whether `c` is part of the primary key, a secondary index or a unique index.
pub(crate) fn is_keyed(c: &Column) -> bool {
    c.primary > 0 || c.unique || c.index.iter().any(|&p| p > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_and_placeholders() {
        assert_eq!(Dialect::Sqlite.quote("name"), "\"name\"");
        assert_eq!(Dialect::Postgres.quote("a\"b\""), "\"a\"\"b\"\"\"");
        assert_eq!(Dialect::Mysql.quote("a`b"), "`a``b`");
        assert_eq!(Dialect::Mysql.quote("a\"b"), "`a\"b`");
        let mut s = Sql::new(Dialect::Postgres);
        s.ident("t");
        s.push(" ");
        s.bind(Param::Int(1));
        s.push(" ");
        s.bind(Param::Int(2));
        assert_eq!(s.text, "\"t\" $1 $2");
        let mut s = Sql::new(Dialect::Sqlite);
        s.bind(Param::Null);
        s.bind(Param::Null);
        assert_eq!(s.text, "??");
    }
}
