//! Table descriptions in code (docs/data.md): every table the backend stores is described once here or
//! by the application, and drivers create and upgrade tables from these descriptions only. Because
//! every SQL identifier a driver emits comes from a [`Table`], and a `Table` can only be built
//! through [`Table::new`], which validates every name, no identifier ever comes from user text.

use crate::error::DbError;
use serde_json::Value;

/// The longest table, column or index name accepted.
pub const MAX_NAME: usize = 64;

/// How many secondary index groups a table may have (`index`, `index1` .. `index4`).
pub const INDEX_GROUPS: usize = 5;

/// The type of a column; `Text` is the default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ColumnType {
    #[default]
    Text,
    /// A 64-bit integer (SQL drivers make no difference between int and bigint).
    Int,
    Bigint,
    /// A 64-bit float.
    Real,
    /// An integer meant for `incr`.
    Counter,
    /// Stored as 0/1, returned as a JSON bool.
    Bool,
    /// Any JSON value, stored as its text.
    Json,
    /// Milliseconds since the Unix epoch; writes also accept RFC 3339 text.
    Date,
}

impl ColumnType {
    /// Integer-valued types.
    pub fn is_integer(self) -> bool {
        matches!(
            self,
            ColumnType::Int | ColumnType::Bigint | ColumnType::Counter | ColumnType::Date
        )
    }

    /// Types that `incr` adds to.
    pub fn is_numeric(self) -> bool {
        matches!(
            self,
            ColumnType::Int | ColumnType::Bigint | ColumnType::Counter | ColumnType::Real
        )
    }
}

/// One column and its docs/data.md properties. Built with [`Column::new`] or a typed constructor and the
/// builder methods: `Column::text("login").primary(1)`, `Column::counter("ping").pub_()`.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    pub name: String,
    pub kind: ColumnType,
    /// Position in the primary key (1 = first); 0 = not part of it.
    pub primary: u8,
    /// Position in each secondary index group (`index`, `index1`..`index4`); 0 = not part of it.
    pub index: [u8; INDEX_GROUPS],
    /// A unique index on this column alone.
    pub unique: bool,
    /// Default value written on insert when the row does not give one.
    pub value: Option<Value>,
    /// Inserts must give a value (or there must be a default).
    pub notnull: bool,
    /// Visible in replies about other accounts.
    pub public: bool,
    /// Visible and writable only by admins.
    pub admin: bool,
    /// Never returned in replies (`priv`).
    pub private: bool,
    /// Not listed in column descriptions.
    pub hidden: bool,
    /// Written on insert only; `update` ignores it.
    pub readonly: bool,
    /// Accepted in writes but never returned to clients.
    pub writeonly: bool,
    /// Stored encrypted under the seal key (`seal.rs`); read back only by [`crate::Db::unseal`].
    pub sealed: bool,
    /// Set to the current time (ms) on every write.
    pub now: bool,
    /// A counter the API increments automatically (e.g. connection counters).
    pub autoincr: bool,
    /// Stored composite: when a write does not give this column but gives all of these, the value
    /// is their values joined with `:`.
    pub join: Vec<String>,
    /// The allowed values (compared as text); empty = anything.
    pub values: Vec<String>,
}

impl Column {
    /// A column of the given type with no properties.
    pub fn new(name: &str, kind: ColumnType) -> Column {
        Column {
            name: name.to_string(),
            kind,
            primary: 0,
            index: [0; INDEX_GROUPS],
            unique: false,
            value: None,
            notnull: false,
            public: false,
            admin: false,
            private: false,
            hidden: false,
            readonly: false,
            writeonly: false,
            sealed: false,
            now: false,
            autoincr: false,
            join: Vec::new(),
            values: Vec::new(),
        }
    }
    pub fn text(name: &str) -> Column {
        Column::new(name, ColumnType::Text)
    }
    pub fn int(name: &str) -> Column {
        Column::new(name, ColumnType::Int)
    }
    pub fn bigint(name: &str) -> Column {
        Column::new(name, ColumnType::Bigint)
    }
    pub fn real(name: &str) -> Column {
        Column::new(name, ColumnType::Real)
    }
    pub fn counter(name: &str) -> Column {
        Column::new(name, ColumnType::Counter)
    }
    pub fn bool(name: &str) -> Column {
        Column::new(name, ColumnType::Bool)
    }
    pub fn json(name: &str) -> Column {
        Column::new(name, ColumnType::Json)
    }
    pub fn date(name: &str) -> Column {
        Column::new(name, ColumnType::Date)
    }

    /// Part of the primary key at `pos` (1-based).
    pub fn primary(mut self, pos: u8) -> Column {
        self.primary = pos;
        self
    }
    /// Part of the first secondary index at `pos` (1-based).
    pub fn index(self, pos: u8) -> Column {
        self.index_n(0, pos)
    }
    /// Part of secondary index group `group` (0 = `index`, 1..4 = `index1`..`index4`) at `pos`.
    /// A group beyond 4 is ignored.
    pub fn index_n(mut self, group: usize, pos: u8) -> Column {
        if let Some(slot) = self.index.get_mut(group) {
            *slot = pos;
        }
        self
    }
    pub fn unique(mut self) -> Column {
        self.unique = true;
        self
    }
    /// Default value on insert.
    pub fn value(mut self, v: impl Into<Value>) -> Column {
        self.value = Some(v.into());
        self
    }
    pub fn notnull(mut self) -> Column {
        self.notnull = true;
        self
    }
    pub fn pub_(mut self) -> Column {
        self.public = true;
        self
    }
    pub fn admin(mut self) -> Column {
        self.admin = true;
        self
    }
    pub fn priv_(mut self) -> Column {
        self.private = true;
        self
    }
    pub fn hidden(mut self) -> Column {
        self.hidden = true;
        self
    }
    pub fn readonly(mut self) -> Column {
        self.readonly = true;
        self
    }
    pub fn writeonly(mut self) -> Column {
        self.writeonly = true;
        self
    }
    /// Stored encrypted at rest (a text column; see `seal.rs`). Sealed values cannot be searched.
    pub fn sealed(mut self) -> Column {
        self.sealed = true;
        self
    }
    pub fn now(mut self) -> Column {
        self.now = true;
        self
    }
    pub fn autoincr(mut self) -> Column {
        self.autoincr = true;
        self
    }
    pub fn join(mut self, sources: &[&str]) -> Column {
        self.join = sources.iter().map(|s| s.to_string()).collect();
        self
    }
    pub fn values(mut self, allowed: &[&str]) -> Column {
        self.values = allowed.iter().map(|s| s.to_string()).collect();
        self
    }
}

/// A described table. Fields are private so that every `Table` in existence went through the
/// name validation of [`Table::new`].
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    name: String,
    columns: Vec<Column>,
    /// Indexes into `columns` of the primary key, in key order.
    keys: Vec<usize>,
    /// Rows stored in primary key order ([`Table::clustered`]).
    clustered: bool,
}

/// Whether `name` is a valid table, column or index name: `^[a-z_][a-z0-9_]*$`, at most 64 bytes.
pub fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_NAME
        && (b[0].is_ascii_lowercase() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_')
}

fn check_name(name: &str) -> Result<(), DbError> {
    if valid_name(name) {
        Ok(())
    } else {
        Err(DbError::BadName(name.to_string()))
    }
}

impl Table {
    /// Validates the table and column names, the primary key (at least one column, distinct
    /// positions) and column uniqueness.
    pub fn new(name: &str, columns: Vec<Column>) -> Result<Table, DbError> {
        check_name(name)?;
        for (i, c) in columns.iter().enumerate() {
            check_name(&c.name)?;
            if columns[..i].iter().any(|o| o.name == c.name) {
                return Err(DbError::BadName(format!(
                    "{name}.{} (duplicate column)",
                    c.name
                )));
            }
        }
        let mut keys: Vec<usize> = (0..columns.len())
            .filter(|&i| columns[i].primary > 0)
            .collect();
        keys.sort_by_key(|&i| columns[i].primary);
        if keys.is_empty() {
            return Err(DbError::BadName(format!("{name} (no primary key column)")));
        }
        if keys
            .windows(2)
            .any(|w| columns[w[0]].primary == columns[w[1]].primary)
        {
            return Err(DbError::BadName(format!(
                "{name} (two primary key columns at the same position)"
            )));
        }
        Ok(Table {
            name: name.to_string(),
            columns,
            keys,
            clustered: false,
        })
    }

    /// Stores the rows in primary key order where the database can choose (SQLite: a `WITHOUT
    /// ROWID` table; MySQL's InnoDB always does, PostgreSQL cannot). For tables of small rows read
    /// by ranges of their key (locations by geohash, connections by account and type): a range
    /// read walks the rows themselves instead of an index and then the table, row by row. Only
    /// a table created after this is set is stored so; an existing one keeps its layout.
    pub fn clustered(mut self) -> Table {
        self.clustered = true;
        self
    }

    /// Whether [`Table::clustered`] was set.
    pub fn is_clustered(&self) -> bool {
        self.clustered
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn columns(&self) -> &[Column] {
        &self.columns
    }

    /// The primary key columns, in key order.
    pub fn primary_keys(&self) -> Vec<&Column> {
        self.keys.iter().map(|&i| &self.columns[i]).collect()
    }

    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// The secondary indexes: for each non-empty group, its columns in position order.
    pub fn indexes(&self) -> Vec<Vec<&Column>> {
        (0..INDEX_GROUPS)
            .filter_map(|g| {
                let mut cols: Vec<&Column> =
                    self.columns.iter().filter(|c| c.index[g] > 0).collect();
                cols.sort_by_key(|c| c.index[g]);
                (!cols.is_empty()).then_some(cols)
            })
            .collect()
    }
}

fn table(name: &str, columns: Vec<Column>) -> Table {
    Table::new(name, columns).expect("built-in table descriptions use valid names")
}

fn message_columns(other: &str) -> Vec<Column> {
    vec![
        Column::text("id").primary(1),
        // "MS:SENDER" (or "MS:RECIPIENT"): the time makes the key sortable, the peer unique.
        Column::text("mtime").primary(2),
        Column::text(other),
        Column::text("alias"),
        Column::text("acl_allow"),
        Column::text("msg"),
        Column::text("icon"),
    ]
}

fn connection_columns() -> Vec<Column> {
    vec![
        Column::text("id").primary(1),
        // "TYPE:OTHERID"
        Column::text("type").primary(2),
        Column::text("connection"),
        Column::text("alias"),
        Column::text("status"),
        Column::bigint("mtime").now(),
    ]
}

fn job_columns() -> Vec<Column> {
    vec![
        Column::text("id").primary(1),
        Column::text("tag").primary(2),
        Column::text("type"),
        Column::json("job"),
        Column::text("cron"),
        Column::text("args"),
        // The host a queued job is meant for (docs/jobs.md).
        Column::text("host").index(1),
        Column::bigint("mtime").now(),
    ]
}

/// Every built-in table of docs/data.md.
pub fn builtin_tables() -> Vec<Table> {
    let account = [
        "login",
        "name",
        "first_name",
        "last_name",
        "status",
        "email",
        "phone",
        "website",
        "birthday",
        "gender",
        "address",
        "city",
        "state",
        "zipcode",
        "country",
        "device_id",
        "location",
    ];
    let mut account_cols = vec![
        Column::text("id").primary(1).pub_(),
        Column::text("alias").pub_(),
        // The types of the account's icons ("0,1"), kept by /account/put|del/icon so that
        // /account/get shows icon0..iconN without reading bk_icon.
        Column::text("icons").pub_(),
    ];
    account_cols.extend(account.iter().map(|n| Column::text(n)));
    account_cols.extend([
        // Searched by prefix (/account/select/location).
        Column::text("geohash").index(1),
        Column::real("latitude"),
        Column::real("longitude"),
        Column::bigint("ltime"),
        Column::bigint("ctime").readonly(),
        Column::bigint("mtime").now(),
    ]);
    let mut counter_cols = vec![
        Column::text("id").primary(1).pub_(),
        Column::counter("ping").pub_(),
    ];
    counter_cols.extend(
        ["like0", "like1", "follow0", "follow1", "msg0", "msg1"]
            .iter()
            .map(|n| Column::counter(n).autoincr()),
    );
    vec![
        table(
            "bk_config",
            vec![
                Column::text("name").primary(1),
                Column::text("type").primary(2),
                Column::text("value"),
                Column::bigint("mtime").now(),
            ],
        ),
        table(
            "bk_property",
            vec![
                Column::text("name").primary(1),
                Column::text("value"),
                Column::bigint("mtime").now(),
            ],
        ),
        table("bk_queue", job_columns()),
        table("bk_jobs", job_columns()),
        table(
            "bk_auth",
            vec![
                Column::text("login").primary(1),
                Column::text("id").index(1),
                Column::text("alias"),
                Column::text("secret").priv_().sealed(),
                Column::text("status"),
                Column::text("type").admin(),
                Column::text("acl_deny"),
                Column::text("acl_allow"),
                Column::bigint("expires"),
                // Bumped by /account/logout: session cookies issued before stop working.
                Column::bigint("session_gen").admin(),
                Column::bigint("mtime").now(),
            ],
        ),
        table("bk_account", account_cols),
        table("bk_counter", counter_cols),
        table("bk_connection", connection_columns()).clustered(),
        table("bk_reference", connection_columns()).clustered(),
        table(
            "bk_location",
            vec![
                Column::text("geohash").primary(1),
                // Found by id when the account is deleted.
                Column::text("id").primary(2).index(1),
                Column::real("latitude"),
                Column::real("longitude"),
                Column::text("alias"),
                Column::bigint("mtime").now(),
            ],
        )
        .clustered(),
        table("bk_message", message_columns("sender")),
        table("bk_archive", message_columns("sender")),
        table("bk_sent", message_columns("recipient")),
        table(
            "bk_icon",
            vec![
                Column::text("id").primary(1),
                // "PREFIX:TYPE"
                Column::text("type").primary(2),
                Column::text("prefix"),
                Column::text("acl_allow"),
                Column::text("ext"),
                Column::text("descr"),
                Column::text("geohash"),
                Column::real("latitude"),
                Column::real("longitude"),
                Column::bigint("mtime").now(),
            ],
        ),
        table(
            "bk_status",
            // Presence is public: anyone signed in reads it.
            vec![
                Column::text("id").primary(1).pub_(),
                Column::text("status").pub_(),
                Column::text("alias").pub_(),
                Column::bigint("atime").pub_(),
                Column::bigint("mtime").now().pub_(),
            ],
        ),
    ]
}
