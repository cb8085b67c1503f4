//! `init` for DynamoDB: creates each missing table (on-demand billing, hash key = first primary key
//! column, range key = the second) and its unique guard table when it has unique columns, then
//! waits until they are ACTIVE. An existing table must have the same key schema. New columns need
//! nothing (items are schemaless). A key of more than two columns, or a bool
//! key, is refused with [`DbError::Unsupported`].

use super::client::CallError;
use super::item::key_type;
use super::DynamoDriver;
use crate::error::DbError;
use crate::schema::Table;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// How long `init` waits for a new table to become ACTIVE.
const ACTIVE_WAIT: Duration = Duration::from_secs(120);

impl DynamoDriver {
    pub(super) async fn init_tables(&self, tables: &[Table]) -> Result<(), DbError> {
        for t in tables {
            let pks = t.primary_keys();
            if pks.len() > 2 {
                return Err(DbError::Unsupported(format!(
                    "dynamodb: table {} has a primary key of {} columns; DynamoDB keys have at most two (hash and range)",
                    t.name(),
                    pks.len()
                )));
            }
            let mut schema = Vec::new();
            let mut attrs = Vec::new();
            for (i, c) in pks.iter().enumerate() {
                schema.push(json!({"AttributeName": c.name, "KeyType": if i == 0 { "HASH" } else { "RANGE" }}));
                attrs.push(json!({"AttributeName": c.name, "AttributeType": key_type(t, c)?}));
            }
            self.ensure(&self.name(t), &schema, &attrs).await?;
            if t.columns().iter().any(|c| c.unique && c.primary == 0) {
                self.ensure(
                    &self.guard_name(t),
                    &[json!({"AttributeName": "u", "KeyType": "HASH"})],
                    &[json!({"AttributeName": "u", "AttributeType": "S"})],
                )
                .await?;
            }
        }
        Ok(())
    }

    /// Creates table `name` unless it exists (with this key schema), then waits until ACTIVE.
    async fn ensure(&self, name: &str, schema: &[Value], attrs: &[Value]) -> Result<(), DbError> {
        let desc = match self
            .client
            .call("DescribeTable", &json!({"TableName": name}))
            .await
        {
            Ok(v) => Some(v),
            Err(e) if e.code() == Some("ResourceNotFoundException") => None,
            Err(e) => return Err(e.into_db()),
        };
        match desc {
            Some(v) => {
                let have = v
                    .pointer("/Table/KeySchema")
                    .cloned()
                    .unwrap_or(Value::Null);
                if !same_keys(&have, schema) {
                    return Err(DbError::Driver(format!(
                        "dynamodb: table {name} exists with key schema {have}, expected {}",
                        Value::from(schema.to_vec())
                    )));
                }
            }
            None => {
                tracing::info!(table = name, "db: creating DynamoDB table");
                let req = json!({
                    "TableName": name,
                    "KeySchema": schema,
                    "AttributeDefinitions": attrs,
                    "BillingMode": "PAY_PER_REQUEST",
                });
                match self.client.call("CreateTable", &req).await {
                    Ok(_) => {}
                    // Another process created it meanwhile.
                    Err(e) if e.code() == Some("ResourceInUseException") => {}
                    Err(e) => return Err(e.into_db()),
                }
            }
        }
        let deadline = Instant::now() + ACTIVE_WAIT;
        loop {
            let v = self
                .client
                .call("DescribeTable", &json!({"TableName": name}))
                .await
                .map_err(CallError::into_db)?;
            if v.pointer("/Table/TableStatus").and_then(Value::as_str) == Some("ACTIVE") {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(DbError::Busy(format!(
                    "dynamodb: table {name} not ACTIVE after {ACTIVE_WAIT:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Whether a described key schema is the wanted one (order of the entries ignored).
fn same_keys(have: &Value, want: &[Value]) -> bool {
    let Some(have) = have.as_array() else {
        return false;
    };
    have.len() == want.len() && want.iter().all(|w| have.contains(w))
}
