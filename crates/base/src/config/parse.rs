//! Text to typed values: the parsing rules of docs/config.md for each [`Kind`].

use super::error::ConfigError;
use super::param::{Kind, Param};
use super::value::Value;
use regex::Regex;
use std::time::Duration;

/// `true/1/yes/on` and `false/0/no/off`, case-insensitive.
pub(crate) fn parse_bool(s: &str) -> Option<bool> {
    match s.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// `30s`, `5m`, `1h 30m`, `14d`, or a plain number of milliseconds.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if let Ok(ms) = s.parse::<u64>() {
        return Ok(Duration::from_millis(ms));
    }
    humantime::parse_duration(s)
        .map_err(|e| format!("{e} (expected e.g. 30s, 5m, 14d or milliseconds)"))
}

/// Bytes with an optional `K`, `M`, `G` suffix (`KB`, `MB`, `GB` too), powers of 1024.
pub fn parse_size(s: &str) -> Result<i64, String> {
    let t = s.trim().to_ascii_uppercase();
    let t = t.strip_suffix('B').unwrap_or(&t);
    let (num, mult) = match t.chars().last() {
        Some('K') => (&t[..t.len() - 1], 1024),
        Some('M') => (&t[..t.len() - 1], 1024 * 1024),
        Some('G') => (&t[..t.len() - 1], 1024 * 1024 * 1024),
        _ => (t, 1),
    };
    num.trim()
        .parse::<i64>()
        .ok()
        .filter(|n| *n >= 0)
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("{s:?} is not a size (expected e.g. 512, 64K, 10MB)"))
}

fn split_list(s: &str) -> Vec<String> {
    s.split([',', '|'])
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(str::to_string)
        .collect()
}

/// Parses `text` as a value of `param`; `origin` names the source for the error message.
pub(super) fn typed(param: &Param, text: &str, origin: &str) -> Result<Value, ConfigError> {
    let bad = |reason: String| ConfigError::BadValue {
        name: param.name.to_string(),
        source_name: origin.to_string(),
        reason,
    };
    Ok(match param.kind {
        Kind::Bool => match text {
            "" => Value::Bool(false),
            t => Value::Bool(parse_bool(t).ok_or_else(|| bad(format!("{t:?} is not a boolean")))?),
        },
        Kind::Int { min, max } => {
            let n: i64 = text
                .trim()
                .parse()
                .map_err(|_| bad(format!("{text:?} is not an integer")))?;
            if n < min || n > max {
                return Err(bad(format!("{n} is outside {min}..={max}")));
            }
            Value::Int(n)
        }
        Kind::Number => Value::Number(
            text.trim()
                .parse()
                .map_err(|_| bad(format!("{text:?} is not a number")))?,
        ),
        Kind::String | Kind::Path => Value::Str(text.to_string()),
        Kind::Enum(words) => {
            if !words.contains(&text) {
                return Err(bad(format!("{text:?} is not one of {}", words.join("|"))));
            }
            Value::Str(text.to_string())
        }
        Kind::List => Value::List(split_list(text)),
        Kind::Map => {
            let mut map = Vec::new();
            for item in text.split(',').map(str::trim).filter(|x| !x.is_empty()) {
                let (k, v) = item
                    .split_once(':')
                    .ok_or_else(|| bad(format!("{item:?} is not key:value")))?;
                map.push((k.trim().to_string(), v.trim().to_string()));
            }
            Value::Map(map)
        }
        Kind::Regexp => {
            // Defaults hold several patterns separated by spaces; a value given by the user is one.
            let patterns: Vec<&str> = if origin == "default" {
                text.split_whitespace().collect()
            } else if text.is_empty() {
                Vec::new()
            } else {
                vec![text]
            };
            let mut out = Vec::new();
            for p in patterns {
                out.push(Regex::new(p).map_err(|e| bad(format!("bad regexp {p:?}: {e}")))?);
            }
            Value::Regexps(out)
        }
        Kind::Json => Value::Json(if text.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_str(text).map_err(|e| bad(format!("invalid JSON: {e}")))?
        }),
        Kind::Duration => Value::Duration(parse_duration(text).map_err(bad)?),
        Kind::Size => Value::Int(parse_size(text).map_err(bad)?),
    })
}
