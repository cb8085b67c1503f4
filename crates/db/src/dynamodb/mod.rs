//! The DynamoDB driver (`-db-pool dynamodb`, docs/data.md, issue 22): the [`crate::Driver`] API on
//! DynamoDB's JSON 1.0 protocol, with a client written on hyper and a hand-written SigV4 signer
//! (no AWS SDK: the binary stays lean). It answers every call as SQLite would wherever DynamoDB
//! can, using what the key-value drivers share ([`crate::kv`]); what it cannot do is refused
//! with [`crate::DbError::Unsupported`].
//!
//! Layout: one DynamoDB table per bkjs table, named `-db-dynamodb-prefix` + the table name; its
//! hash key is the first primary key column and its range key the second (a key of more than two
//! columns is refused by `init`); every column is an attribute of its own ([`item`]). Writes map
//! to single calls: `put` = PutItem, `add` = PutItem with `attribute_not_exists`, `update` =
//! UpdateItem with `attribute_exists`, `incr` = UpdateItem `ADD` (atomic, creates the row), `del`
//! = DeleteItem, `get` = GetItem with `ConsistentRead`. A table with `unique` columns keeps one
//! guard item per unique value in a second table (`<name>.unique`), written in the same
//! TransactWriteItems as the row, whose own hidden version attribute makes the read-modify-write
//! safe under concurrency ([`unique`]). Selects ([`select`]) Query one hash key per `=`/`in`
//! value (range conditions as KeyConditionExpression), Scan otherwise; every condition is also
//! evaluated in memory with SQLite's semantics, rows are sorted in memory when the order is not
//! the key order, and pages are offsets as for every driver.
//!
//! Files: [`sigv4`] (signing), [`client`] (HTTP and errors), [`item`] (rows as items),
//! [`table`] (`init`), [`ops`] (the driver), [`select`], [`unique`].

pub(crate) mod client;
mod item;
mod ops;
mod select;
pub(crate) mod sigv4;
mod table;
#[cfg(test)]
mod tests;
mod unique;

use crate::error::DbError;
use crate::schema::Table;
use client::{Client, Endpoint};

/// The most items one select may read from DynamoDB (a Scan, or the Query of a hash key, that
/// would read more is refused: add a condition on the hash key, or page with a smaller count).
pub(crate) const MAX_READ: usize = 100_000;

/// How to reach DynamoDB: endpoint URL, region, credentials, and the table name prefix.
#[derive(Clone)]
pub struct DynamoConfig {
    /// `http://127.0.0.1:8000` or `https://dynamodb.us-east-1.amazonaws.com`.
    pub url: String,
    pub region: String,
    pub key: String,
    pub secret: String,
    /// Prepended to every table name (tests and tenants sharing one account).
    pub prefix: String,
}

impl std::fmt::Debug for DynamoConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DynamoConfig")
            .field("url", &self.url)
            .field("region", &self.region)
            .field("key", &self.key)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// The DynamoDB driver: a client and the table name prefix.
pub struct DynamoDriver {
    client: Client,
    prefix: String,
}

impl DynamoDriver {
    /// A driver for `cfg` (no call is made until the first operation).
    pub fn new(cfg: &DynamoConfig) -> Result<DynamoDriver, DbError> {
        if cfg.key.is_empty() || cfg.secret.is_empty() {
            return Err(DbError::bad_value(
                "db-dynamodb-key",
                "credentials are required (-db-dynamodb-key/-db-dynamodb-secret or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)",
            ));
        }
        let creds = sigv4::Credentials {
            key: cfg.key.clone(),
            secret: cfg.secret.clone(),
        };
        let ep = Endpoint::parse(&cfg.url, &cfg.region, creds)?;
        Ok(DynamoDriver {
            client: Client::new(ep)?,
            prefix: cfg.prefix.clone(),
        })
    }

    /// The DynamoDB name of a table.
    fn name(&self, t: &Table) -> String {
        format!("{}{}", self.prefix, t.name())
    }

    /// The DynamoDB name of a table's unique guard table.
    fn guard_name(&self, t: &Table) -> String {
        format!("{}{}.unique", self.prefix, t.name())
    }

    /// The signed HTTP request of operation `op` with the JSON `body` (path `/`, no authority:
    /// for an HTTP/1.1 connection to the endpoint). The bench sends it on a hyper connection of
    /// its own, the raw client the driver is compared with.
    pub fn signed_request(
        &self,
        op: &str,
        body: Vec<u8>,
    ) -> Result<hyper::Request<http_body_util::Full<bytes::Bytes>>, DbError> {
        self.client.request(op, bytes::Bytes::from(body))
    }

    /// The DynamoDB name `init` gives to table `name`.
    pub fn table_name(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }
}
