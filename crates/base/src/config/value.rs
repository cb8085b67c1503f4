//! A parameter's typed value, in its own file so that the parsing rules ([`super::parse`]) can
//! produce it and the loader ([`super`]) can store it without the two depending on each other.

use regex::Regex;
use std::time::Duration;

/// A typed parameter value.
#[derive(Debug, Clone)]
pub(crate) enum Value {
    Bool(bool),
    Int(i64),
    Number(f64),
    Str(String),
    List(Vec<String>),
    Map(Vec<(String, String)>),
    Regexps(Vec<Regex>),
    Json(serde_json::Value),
    Duration(Duration),
}
