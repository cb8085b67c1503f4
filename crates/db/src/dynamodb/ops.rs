//! The [`Driver`] operations of [`DynamoDriver`]: each write one DynamoDB call (tables with unique
//! columns go through [`super::unique`]), `get` a consistent GetItem, selects in
//! [`super::select`].

use super::client::CallError;
use super::item::{attr, from_item, key_item, param_attr, to_item, Item};
use super::DynamoDriver;
use crate::driver::Driver;
use crate::error::DbError;
use crate::kv::codec::{build_row, project, to_stored};
use crate::options::Options;
use crate::query::select_columns;
use crate::schema::{Column, Table};
use crate::types::{Param, Res, Row};
use crate::write::{key_params, prepare_write, WriteMode};
use serde_json::{json, Map, Value};

fn one() -> Res {
    Res {
        affected: 1,
        ..Res::default()
    }
}

/// Whether writes of `t` must keep unique guards.
pub(super) fn has_unique(t: &Table) -> bool {
    t.columns().iter().any(|c| c.unique && c.primary == 0)
}

/// The key columns of `t` with their values taken from prepared write values.
pub(super) fn write_keys<'t>(
    t: &'t Table,
    vals: &[(&'t Column, Param)],
) -> Result<Vec<(&'t Column, Param)>, DbError> {
    t.primary_keys()
        .into_iter()
        .map(|k| {
            vals.iter()
                .find(|(c, _)| c.name == k.name)
                .map(|(c, p)| (*c, p.clone()))
                .ok_or_else(|| DbError::bad_value(&k.name, "primary key value required"))
        })
        .collect()
}

/// Expression attribute names and values, numbered as they are added.
#[derive(Default)]
pub(super) struct Expr {
    pub(super) names: Map<String, Value>,
    pub(super) values: Map<String, Value>,
}

impl Expr {
    /// The placeholder of attribute `name`.
    pub(super) fn name(&mut self, name: &str) -> String {
        let key = format!("#n{}", self.names.len());
        if let Some((k, _)) = self.names.iter().find(|(_, v)| v.as_str() == Some(name)) {
            return k.clone();
        }
        self.names.insert(key.clone(), Value::String(name.into()));
        key
    }

    /// The placeholder of a typed value.
    pub(super) fn value(&mut self, v: Value) -> String {
        let key = format!(":v{}", self.values.len());
        self.values.insert(key.clone(), v);
        key
    }

    /// Adds the names and values to a request.
    pub(super) fn apply(self, req: &mut Value) {
        if !self.names.is_empty() {
            req["ExpressionAttributeNames"] = Value::Object(self.names);
        }
        if !self.values.is_empty() {
            req["ExpressionAttributeValues"] = Value::Object(self.values);
        }
    }
}

impl DynamoDriver {
    /// PutItem of a whole row, with `condition` on the hash key attribute when given.
    async fn put_row(
        &self,
        t: &Table,
        row: &Row,
        condition: Option<&str>,
    ) -> Result<(), CallError> {
        let mut req = json!({"TableName": self.name(t), "Item": to_item(t, row)});
        if let Some(cond) = condition {
            let mut e = Expr::default();
            let h = e.name(&t.primary_keys()[0].name);
            req["ConditionExpression"] = Value::String(format!("{cond}({h})"));
            e.apply(&mut req);
        }
        self.client.call("PutItem", &req).await.map(|_| ())
    }

    /// UpdateItem setting (or removing, for NULL) the non-key `vals`, numeric ones added when
    /// `add`; with `must_exist` the row must be there. The new item when `ALL_NEW` is asked.
    async fn update_row(
        &self,
        t: &Table,
        key: Item,
        vals: &[(&Column, Param)],
        add: bool,
        must_exist: bool,
    ) -> Result<Option<Item>, CallError> {
        let mut e = Expr::default();
        let (mut set, mut remove, mut adds) = (Vec::new(), Vec::new(), Vec::new());
        for (c, p) in vals.iter().filter(|(c, _)| c.primary == 0) {
            let n = e.name(&c.name);
            let stored = to_stored(c.kind, p);
            match stored.as_ref().and_then(|v| attr(c.kind, v)) {
                None => remove.push(n),
                Some(a) if add && c.kind.is_numeric() => {
                    let v = e.value(a);
                    adds.push(format!("{n} {v}"));
                }
                Some(a) => {
                    let v = e.value(a);
                    set.push(format!("{n} = {v}"));
                }
            }
        }
        let mut parts = Vec::new();
        if !set.is_empty() {
            parts.push(format!("SET {}", set.join(", ")));
        }
        if !remove.is_empty() {
            parts.push(format!("REMOVE {}", remove.join(", ")));
        }
        if !adds.is_empty() {
            parts.push(format!("ADD {}", adds.join(", ")));
        }
        let mut req = json!({"TableName": self.name(t), "Key": key, "ReturnValues": "ALL_NEW"});
        if !parts.is_empty() {
            req["UpdateExpression"] = Value::String(parts.join(" "));
        }
        if must_exist {
            let h = e.name(&t.primary_keys()[0].name);
            req["ConditionExpression"] = Value::String(format!("attribute_exists({h})"));
        }
        e.apply(&mut req);
        let v = self.client.call("UpdateItem", &req).await?;
        Ok(v.get("Attributes").and_then(Value::as_object).cloned())
    }

    async fn get_item(&self, t: &Table, key: Item) -> Result<Option<Item>, DbError> {
        let req = json!({"TableName": self.name(t), "Key": key, "ConsistentRead": true});
        let v = self
            .client
            .call("GetItem", &req)
            .await
            .map_err(CallError::into_db)?;
        Ok(v.get("Item").and_then(Value::as_object).cloned())
    }
}

/// A failed condition means `e`; any other failure is reported as it is.
fn cond_failed(e: CallError, means: DbError) -> DbError {
    if e.code() == Some("ConditionalCheckFailedException") {
        means
    } else {
        e.into_db()
    }
}

#[async_trait::async_trait]
impl Driver for DynamoDriver {
    fn name(&self) -> &'static str {
        "dynamodb"
    }

    async fn init(&self, tables: &[Table]) -> Result<(), DbError> {
        self.init_tables(tables).await
    }

    async fn get(&self, table: &Table, key: &Row, opts: &Options) -> Result<Option<Row>, DbError> {
        let cols = select_columns(table, opts);
        let key = key_item(&key_params(table, key)?)?;
        Ok(self
            .get_item(table, key)
            .await?
            .map(|item| project(&from_item(table, &item), &cols)))
    }

    async fn put(&self, table: &Table, row: &Row, opts: &Options) -> Result<Res, DbError> {
        let vals = prepare_write(table, row, opts, WriteMode::Insert)?;
        if has_unique(table) {
            return self
                .unique_write(table, &vals, WriteMode::Insert, false, opts)
                .await;
        }
        write_keys(table, &vals)?;
        self.put_row(table, &build_row(&vals), None)
            .await
            .map_err(CallError::into_db)?;
        Ok(one())
    }

    async fn add(&self, table: &Table, row: &Row, opts: &Options) -> Result<Res, DbError> {
        let vals = prepare_write(table, row, opts, WriteMode::Insert)?;
        if has_unique(table) {
            return self
                .unique_write(table, &vals, WriteMode::Insert, true, opts)
                .await;
        }
        write_keys(table, &vals)?;
        self.put_row(table, &build_row(&vals), Some("attribute_not_exists"))
            .await
            .map_err(|e| cond_failed(e, DbError::Exists))?;
        Ok(one())
    }

    async fn update(&self, table: &Table, row: &Row, opts: &Options) -> Result<Res, DbError> {
        let keys = key_params(table, row)?;
        let vals = prepare_write(table, row, opts, WriteMode::Update)?;
        if has_unique(table) {
            return self
                .unique_write(table, &vals, WriteMode::Update, false, opts)
                .await;
        }
        self.update_row(table, key_item(&keys)?, &vals, false, true)
            .await
            .map_err(|e| cond_failed(e, DbError::NotFound))?;
        Ok(one())
    }

    async fn incr(&self, table: &Table, row: &Row, opts: &Options) -> Result<Res, DbError> {
        let vals = prepare_write(table, row, opts, WriteMode::Incr)?;
        if has_unique(table) {
            return self
                .unique_write(table, &vals, WriteMode::Incr, false, opts)
                .await;
        }
        let keys = write_keys(table, &vals)?;
        let new = self
            .update_row(table, key_item(&keys)?, &vals, true, false)
            .await
            .map_err(CallError::into_db)?;
        let cols = select_columns(table, opts);
        Ok(Res {
            rows: new
                .map(|item| project(&from_item(table, &item), &cols))
                .into_iter()
                .collect(),
            ..one()
        })
    }

    async fn del(&self, table: &Table, key: &Row, opts: &Options) -> Result<Res, DbError> {
        let keys = key_params(table, key)?;
        if has_unique(table) {
            return self.unique_del(table, &keys, opts).await;
        }
        let req = json!({
            "TableName": self.name(table),
            "Key": key_item(&keys)?,
            "ReturnValues": "ALL_OLD",
        });
        let v = self
            .client
            .call("DeleteItem", &req)
            .await
            .map_err(CallError::into_db)?;
        Ok(Res {
            affected: v
                .get("Attributes")
                .and_then(Value::as_object)
                .is_some_and(|a| !a.is_empty()) as u64,
            ..Res::default()
        })
    }

    async fn select(&self, table: &Table, query: &Row, opts: &Options) -> Result<Res, DbError> {
        self.select_rows(table, query, opts).await
    }

    async fn query(&self, _text: &str, _params: &[Value], _opts: &Options) -> Result<Res, DbError> {
        Err(DbError::Unsupported(
            "native queries on DynamoDB (use the DB API operations)".into(),
        ))
    }
}

/// The typed attribute of a bound value (for conditions).
pub(super) fn typed(p: &Param) -> Option<Value> {
    param_attr(p)
}
