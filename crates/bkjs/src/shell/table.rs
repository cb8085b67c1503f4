//! Results as a person reads them in the REPL: rows as a table whose columns follow the table's
//! description (columns no row has are left out), one object as aligned `name | value` lines,
//! lists one item a line. Built on `comfy-table`.

use super::command::{Format, Out};
use comfy_table::{presets, Table};
use serde_json::Value;

/// A cell: strings as they are, null empty, anything else as JSON.
fn cell(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

fn new_table() -> Table {
    let mut t = Table::new();
    t.load_style(presets::UTF8_FULL_CONDENSED);
    t
}

/// The text the REPL prints for `out`; `None` prints nothing.
pub(crate) fn render(out: &Out) -> Option<String> {
    match out {
        Out::None | Out::Quit => None,
        Out::Text(t) => Some(t.clone()),
        Out::Rows {
            columns,
            rows,
            next_token,
        } => {
            // The described columns first, in order, then any other key the rows carry.
            let mut cols: Vec<String> = columns
                .iter()
                .filter(|c| rows.iter().any(|r| r.contains_key(*c)))
                .cloned()
                .collect();
            for r in rows {
                for k in r.keys() {
                    if !cols.contains(k) {
                        cols.push(k.clone());
                    }
                }
            }
            let mut t = new_table();
            t.set_header(cols.clone());
            for r in rows {
                t.add_row(cols.iter().map(|c| cell(r.get(c))).collect::<Vec<_>>());
            }
            let mut text = if rows.is_empty() {
                "(no rows)".to_string()
            } else {
                t.to_string()
            };
            text.push_str(&format!(
                "\n{} row{}",
                rows.len(),
                if rows.len() == 1 { "" } else { "s" }
            ));
            if let Some(token) = next_token {
                text.push_str(&format!("; more with _start={token}"));
            }
            Some(text)
        }
        Out::Record(Value::Null) => Some("(not found)".into()),
        Out::Record(Value::Object(m)) => {
            let mut t = new_table();
            for (k, v) in m {
                t.add_row(vec![k.clone(), cell(Some(v))]);
            }
            Some(t.to_string())
        }
        Out::Json(Value::Array(items)) if items.iter().all(|v| !v.is_object()) => Some(
            items
                .iter()
                .map(|v| cell(Some(v)))
                .collect::<Vec<_>>()
                .join("\n"),
        ),
        Out::Record(v) | Out::Json(v) => {
            Some(serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string()))
        }
    }
}

/// Prints one result in `format`.
pub(crate) fn print(out: &Out, format: Format) {
    let text = match format {
        Format::Json => out.to_json_line(),
        Format::Table => render(out),
    };
    if let Some(text) = text {
        println!("{text}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rows_follow_the_described_columns() {
        let rows = vec![
            json!({"value": "1", "name": "a"}),
            json!({"name": "b", "extra": true}),
        ]
        .into_iter()
        .map(|v| v.as_object().cloned().expect("object"))
        .collect();
        let text = render(&Out::Rows {
            columns: vec!["name".into(), "value".into(), "mtime".into()],
            rows,
            next_token: Some("T".into()),
        })
        .expect("text");
        let header = text.lines().nth(1).expect("header line");
        let (n, v, e) = (
            header.find("name").expect("name"),
            header.find("value").expect("value"),
            header.find("extra").expect("extra"),
        );
        assert!(n < v && v < e, "{text}");
        assert!(!header.contains("mtime"), "no row has mtime: {text}");
        assert!(text.ends_with("2 rows; more with _start=T"), "{text}");
    }

    #[test]
    fn records_lists_and_nothing() {
        let text = render(&Out::Record(json!({"affected": 1}))).expect("record");
        assert!(text.contains("affected") && text.contains('1'), "{text}");
        assert_eq!(
            render(&Out::Record(Value::Null)).as_deref(),
            Some("(not found)")
        );
        assert_eq!(
            render(&Out::Json(json!(["a", "b"]))).as_deref(),
            Some("a\nb")
        );
        assert_eq!(render(&Out::None), None);
    }
}
