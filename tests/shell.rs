//! `bksh` as an operator uses it: the interactive REPL on a pseudo-terminal (driven by
//! tests/terminal.py: Tab completion of commands, tables and columns, tables for results, the cache
//! of a running server, errors that say what to type, history kept across sessions in
//! `var/.bksh_history`), and the same commands from a script (`bksh < file`: no prompt, JSON).

use crate::harness::*;
use serde_json::{json, Value};

const PTY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/terminal.py");

/// Runs bksh on a terminal in `home`, typing `steps` ([keys, expected output] pairs).
fn pty_session(home: &std::path::Path, steps: &[(&str, &str)]) -> String {
    let steps: Vec<[&str; 2]> = steps.iter().map(|(k, e)| [*k, *e]).collect();
    let out = std::process::Command::new("python3")
        .arg(PTY)
        .arg(serde_json::to_string(&steps).expect("steps"))
        .arg("--")
        .arg(BKSH)
        .arg("-home")
        .arg(home)
        .env_remove("BKJS_HOME")
        .output()
        .expect("python3 tests/terminal.py");
    let transcript = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "pty session failed: {}\ntranscript:\n{transcript}",
        String::from_utf8_lossy(&out.stderr)
    );
    transcript
}

#[test]
fn repl_completes_prints_tables_and_keeps_history() {
    let t = Tree::start("run", &["-server-web-workers", "1"]);
    t.ready(1);
    let home = t.home.path();
    let transcript = pty_session(
        home,
        &[
            ("", "`help` lists the commands"),
            ("db put bk_property name=k1 value=v1\r", "affected"),
            // Tab completes the operation, the table and the column.
            ("db sel\t", "select"),
            ("bk_prop\t", "bk_property"),
            ("na\t", "name="),
            ("k1\r", "1 row"),
            // Two lines typed (or pasted) at once: the second is kept for the next prompt, not
            // dropped with the first line's read buffer.
            ("cache put hits 5\rcache incr hits 2\r", "7"),
            ("cache get hits\r", "7"),
            ("confg port\r", "did you mean `config`?"),
            ("db get bk_property nmae=k1\r", "did you mean `name`?"),
            ("quit\r", ""),
        ],
    );
    // The select printed a table with the row's values in cells.
    let table_line = transcript
        .lines()
        .find(|l| l.contains("k1") && l.contains("v1") && l.contains('│'))
        .unwrap_or_else(|| panic!("no table row for k1 in:\n{transcript}"));
    assert!(table_line.starts_with('│'), "{table_line}");
    let history = std::fs::read_to_string(home.join("var/.bksh_history")).expect("history file");
    assert!(
        history.contains("db select bk_property name=k1"),
        "the completed line is in the history: {history}"
    );
    assert!(history.contains("cache incr hits 2"), "{history}");
    // A new session starts with that history: Up recalls the last command, Enter runs it.
    pty_session(
        home,
        &[
            ("", "`help` lists the commands"),
            ("\u{1b}[A", "quit"),
            ("\u{1b}[A\r", "did you mean `name`?"),
            ("exit\r", ""),
        ],
    );
}

#[test]
fn script_mode_runs_without_a_prompt_and_prints_json() {
    let t = Tree::start("run", &["-server-web-workers", "1"]);
    t.ready(1);
    let home = t.home.path().display().to_string();
    let out = bksh_script(
        &["-home", &home],
        "# a comment\n\
              db put bk_property name=motd value=\"hello world\"\n\
              db get bk_property name=motd\n\
              db columns bk_property\n\
              cache put a 1\n\
              cache incr a 41\n\
              cache get a\n\
              cache keys\n\
              db get bk_propert name=motd\n\
              config port\n",
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(!stdout.contains("bkjs>"), "no prompt: {stdout}");
    let json_line = |i: usize| -> Value {
        serde_json::from_str(lines.get(i).unwrap_or(&""))
            .unwrap_or_else(|e| panic!("line {i} of {stdout}: {e}"))
    };
    assert_eq!(json_line(0), json!({"affected": 1}), "{stdout}");
    assert_eq!(json_line(1)["value"], "hello world");
    let columns = json_line(2);
    assert_eq!(columns["data"][0]["column"], "name", "{columns}");
    assert_eq!(json_line(3), json!({"value": 42}));
    assert_eq!(json_line(4), json!({"value": "42"}));
    assert!(json_line(5)
        .as_array()
        .is_some_and(|k| k.contains(&json!("a"))));
    assert_eq!(out.status.code(), Some(1), "one command failed");
    assert!(
        stderr.contains("no table `bk_propert`; did you mean `bk_property`?"),
        "{stderr}"
    );
    assert_eq!(lines.len(), 7, "{stdout}");
    assert_eq!(
        lines[6], "8000",
        "config port: the home's configuration, not the tree's command line"
    );
}

#[test]
fn send_signs_a_request_as_an_account() {
    let t = Tree::start("run", &["-server-web-workers", "1"]);
    t.ready(1);
    let port = t.port.to_string();
    let home = t.home.path().display().to_string();
    let out = bksh_script(
        &["-home", &home, "-port", &port],
        "account add login=sh1 secret=sh1-secret name=Shell\n\
              send /account/get login=sh1\n\
              send /account/get login=nobody\n",
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines.len(),
        2,
        "one line per command that worked: {stdout}\n{stderr}"
    );
    let added: Value = serde_json::from_str(lines[0]).expect("account add prints JSON");
    let got: Value = serde_json::from_str(lines[1]).expect("send prints the reply");
    // The server answered the signed request with the account's own row (all its columns).
    assert_eq!(got["login"], "sh1", "{got}");
    assert_eq!(got["name"], "Shell", "{got}");
    assert_eq!(got["id"], added["id"], "{added} {got}");
    assert!(
        got.get("secret").is_none(),
        "the secret is never sent back: {got}"
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "the unknown login failed: {stderr}"
    );
    assert!(
        stderr.contains("nobody"),
        "the error names the login: {stderr}"
    );
}
