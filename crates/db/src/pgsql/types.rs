//! PostgreSQL's types on both sides of a statement: a [`Param`] binds as the type the server
//! inferred for its placeholder (PostgreSQL does not coerce a bound `int8` into an `int4` or
//! `bool` column), and result cells decode to JSON by their type (numeric, times, uuid, ...).

use crate::schema::ColumnType;
use crate::types::Param;
use bytes::BytesMut;
use serde_json::Value;
use std::error::Error as StdError;
use tokio_postgres::types::{to_sql_checked, FromSql, IsNull, ToSql, Type};

pub(super) type BoxError = Box<dyn StdError + Sync + Send>;

/// A parameter that cannot become the type the server expects for its placeholder.
#[derive(Debug)]
pub(super) struct BadParam(String);

impl std::fmt::Display for BadParam {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl StdError for BadParam {}

pub(super) fn bad_param(p: &Param, ty: &Type) -> BoxError {
    Box::new(BadParam(format!("{p:?} does not fit {ty}")))
}

pub(super) fn param_text(p: &Param) -> String {
    match p {
        Param::Null => String::new(),
        Param::Int(i) => i.to_string(),
        Param::Real(f) => f.to_string(),
        Param::Text(s) => s.clone(),
    }
}

pub(super) fn param_i64(p: &Param) -> Option<i64> {
    match p {
        Param::Int(i) => Some(*i),
        Param::Real(f) if f.fract() == 0.0 && f.abs() < 9.0e18 => Some(*f as i64),
        Param::Text(s) => s.trim().parse().ok(),
        _ => None,
    }
}

pub(super) fn param_f64(p: &Param) -> Option<f64> {
    match p {
        Param::Int(i) => Some(*i as f64),
        Param::Real(f) => Some(*f),
        Param::Text(s) => s.trim().parse().ok(),
        Param::Null => None,
    }
}

pub(super) fn param_bool(p: &Param) -> Option<bool> {
    match p {
        Param::Int(i) => Some(*i != 0),
        Param::Real(f) => Some(*f != 0.0),
        Param::Text(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "t" | "yes" | "on" => Some(true),
            "false" | "0" | "f" | "no" | "off" | "" => Some(false),
            _ => None,
        },
        Param::Null => None,
    }
}

/// A [`Param`] binds as whatever the server inferred for its placeholder: the integer of an
/// `int4` column becomes an `i32`, a bool column's 0/1 a `bool`, JSON text a `jsonb` value.
impl ToSql for Param {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        if *self == Param::Null {
            return Ok(IsNull::Yes);
        }
        let bad = || bad_param(self, ty);
        match *ty {
            Type::BOOL => param_bool(self).ok_or_else(bad)?.to_sql(ty, out),
            Type::INT2 => i16::try_from(param_i64(self).ok_or_else(bad)?)
                .map_err(|_| bad())?
                .to_sql(ty, out),
            Type::INT4 => i32::try_from(param_i64(self).ok_or_else(bad)?)
                .map_err(|_| bad())?
                .to_sql(ty, out),
            Type::INT8 => param_i64(self).ok_or_else(bad)?.to_sql(ty, out),
            Type::FLOAT4 => (param_f64(self).ok_or_else(bad)? as f32).to_sql(ty, out),
            Type::FLOAT8 => param_f64(self).ok_or_else(bad)?.to_sql(ty, out),
            Type::JSON | Type::JSONB => {
                let v = match self {
                    // JSON columns hold JSON text; plain text that is not JSON is a JSON string.
                    Param::Text(s) => {
                        serde_json::from_str(s).unwrap_or_else(|_| Value::String(s.clone()))
                    }
                    Param::Int(i) => Value::from(*i),
                    Param::Real(f) => Value::from(*f),
                    Param::Null => Value::Null,
                };
                v.to_sql(ty, out)
            }
            _ => param_text(self).to_sql(ty, out),
        }
    }

    fn accepts(ty: &Type) -> bool {
        matches!(
            *ty,
            Type::BOOL
                | Type::INT2
                | Type::INT4
                | Type::INT8
                | Type::FLOAT4
                | Type::FLOAT8
                | Type::JSON
                | Type::JSONB
        ) || <String as ToSql>::accepts(ty)
    }

    to_sql_checked!();
}

/// One result cell as JSON, decoded by its PostgreSQL type; NULL is `None`.
pub(super) struct Cell(pub(super) Option<Value>);

pub(super) fn float(f: f64) -> Value {
    serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)
}

/// Milliseconds between the Unix epoch and PostgreSQL's 2000-01-01.
pub(super) const PG_EPOCH_MS: i64 = 946_684_800_000;

/// The binary NUMERIC format: ndigits, weight, sign, dscale, then base-10000 digits.
pub(super) fn numeric(raw: &[u8]) -> Result<Value, BoxError> {
    let word = |i: usize| -> Result<u16, BoxError> {
        raw.get(i * 2..i * 2 + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .ok_or_else(|| "truncated numeric".into())
    };
    let ndigits = word(0)? as usize;
    let weight = word(1)? as i16 as i64;
    let sign = word(2)?;
    let dscale = word(3)? as usize;
    if matches!(sign, 0xC000 | 0xD000 | 0xF000) {
        return Ok(Value::Null); // NaN, +/-Infinity: no JSON number, like a float NaN
    }
    let digit = |i: i64| -> Result<u16, BoxError> {
        if i < 0 || i as usize >= ndigits {
            Ok(0)
        } else {
            word(4 + i as usize)
        }
    };
    let mut int = String::from("0");
    for i in 0..=weight {
        let d = digit(i)?;
        if i == 0 {
            int = d.to_string();
        } else {
            int.push_str(&format!("{d:04}"));
        }
    }
    let mut frac = String::new();
    let mut i = weight + 1;
    while frac.len() < dscale {
        frac.push_str(&format!("{:04}", digit(i)?));
        i += 1;
    }
    frac.truncate(dscale);
    let neg = if sign == 0x4000 { "-" } else { "" };
    if frac.is_empty() {
        if let Ok(n) = format!("{neg}{int}").parse::<i64>() {
            return Ok(Value::from(n));
        }
    }
    let text = if frac.is_empty() {
        format!("{neg}{int}")
    } else {
        format!("{neg}{int}.{frac}")
    };
    Ok(text
        .parse::<f64>()
        .map(float)
        .unwrap_or(Value::String(text)))
}

impl<'a> FromSql<'a> for Cell {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Cell, BoxError> {
        let v = match *ty {
            Type::BOOL => Value::Bool(bool::from_sql(ty, raw)?),
            Type::INT2 => Value::from(i16::from_sql(ty, raw)?),
            Type::INT4 => Value::from(i32::from_sql(ty, raw)?),
            Type::INT8 => Value::from(i64::from_sql(ty, raw)?),
            Type::OID => Value::from(u32::from_sql(ty, raw)?),
            Type::FLOAT4 => float(f32::from_sql(ty, raw)? as f64),
            Type::FLOAT8 => float(f64::from_sql(ty, raw)?),
            Type::NUMERIC => numeric(raw)?,
            Type::JSON | Type::JSONB => Value::from_sql(ty, raw)?,
            Type::BYTEA => Value::String(raw.iter().map(|b| format!("{b:02x}")).collect()),
            // Times as milliseconds since the Unix epoch, like `date` columns.
            Type::TIMESTAMP | Type::TIMESTAMPTZ => {
                Value::from(i64::from_sql(&Type::INT8, raw)?.div_euclid(1000) + PG_EPOCH_MS)
            }
            Type::DATE => {
                Value::from(i32::from_sql(&Type::INT4, raw)? as i64 * 86_400_000 + PG_EPOCH_MS)
            }
            Type::UUID if raw.len() == 16 => {
                let h: String = raw.iter().map(|b| format!("{b:02x}")).collect();
                Value::String(format!(
                    "{}-{}-{}-{}-{}",
                    &h[0..8],
                    &h[8..12],
                    &h[12..16],
                    &h[16..20],
                    &h[20..32]
                ))
            }
            _ if <&str as FromSql>::accepts(ty) => {
                Value::String(<&str as FromSql>::from_sql(ty, raw)?.to_string())
            }
            _ => return Err(format!("unsupported result type {ty} (cast it to text)").into()),
        };
        Ok(Cell(Some(v)))
    }

    fn from_sql_null(_: &Type) -> Result<Cell, BoxError> {
        Ok(Cell(None))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// Converts a stored value to what its column type returns: JSON text parsed (text that is not
/// JSON stays a string), bools as JSON bools even from an integer column.
pub(super) fn column_value(kind: ColumnType, v: Value) -> Value {
    match (kind, v) {
        (ColumnType::Json, Value::String(s)) => {
            serde_json::from_str(&s).unwrap_or(Value::String(s))
        }
        (ColumnType::Bool, Value::Number(n)) => Value::Bool(n.as_f64() != Some(0.0)),
        (_, v) => v,
    }
}
