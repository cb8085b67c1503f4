//! The interactive shell on a terminal (rustyline): a prompt, history kept in
//! `var/.bksh_history`, Tab completion of commands, operations, table and column names,
//! parameter names and route paths, and results printed as tables.

use super::command::{Format, Out, Shell};
use super::command::{CACHE_OPS, COMMANDS, DB_CONTROLS, DB_OPS};
use super::table::print;
use bkjs_db::Table;
use rustyline::completion::{Completer, Pair};
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::history::DefaultHistory;
use rustyline::validate::Validator;
use rustyline::{CompletionType, Context, Editor, Helper};

/// What Tab completes from: known once when the shell starts.
pub(crate) struct ShellHelper {
    tables: Vec<Table>,
    params: Vec<&'static str>,
    paths: Vec<String>,
}

impl Helper for ShellHelper {}
impl Highlighter for ShellHelper {}
impl Hinter for ShellHelper {
    type Hint = String;
}
impl Validator for ShellHelper {}

/// `word` completed: a trailing space after a whole word, none after `name=`.
fn pair(word: &str) -> Pair {
    Pair {
        display: word.to_string(),
        replacement: if word.ends_with('=') {
            word.to_string()
        } else {
            format!("{word} ")
        },
    }
}

impl ShellHelper {
    pub(crate) fn new(
        tables: Vec<Table>,
        params: Vec<&'static str>,
        paths: Vec<String>,
    ) -> ShellHelper {
        ShellHelper {
            tables,
            params,
            paths,
        }
    }

    fn columns(&self, table: &str) -> Vec<String> {
        self.tables
            .iter()
            .find(|t| t.name() == table)
            .map(|t| t.columns().iter().map(|c| format!("{}=", c.name)).collect())
            .unwrap_or_default()
    }

    /// The words that may stand where `current` is typed after the words `before`.
    pub(crate) fn candidates(&self, before: &[&str], current: &str) -> Vec<String> {
        let all: Vec<String> = match before {
            [] => COMMANDS.iter().map(|(n, _, _)| n.to_string()).collect(),
            ["help"] => COMMANDS.iter().map(|(n, _, _)| n.to_string()).collect(),
            ["db"] => DB_OPS.iter().map(|s| s.to_string()).collect(),
            ["db", "tables", ..] => Vec::new(),
            ["db", _] => self.tables.iter().map(|t| t.name().to_string()).collect(),
            ["db", "columns", ..] => Vec::new(),
            ["db", _, table, ..] if !current.contains('=') => {
                let mut c = self.columns(table);
                c.extend(DB_CONTROLS.iter().map(|s| format!("{s}=")));
                c
            }
            ["cache"] => CACHE_OPS.iter().map(|s| s.to_string()).collect(),
            ["config"] => self.params.iter().map(|s| s.to_string()).collect(),
            ["format"] => vec!["table".into(), "json".into()],
            ["account"] => vec!["add".into(), "update".into(), "del".into()],
            ["account", _, ..] if !current.contains('=') => {
                let mut c = self.columns("bk_auth");
                for col in self.columns("bk_account") {
                    if !c.contains(&col) {
                        c.push(col);
                    }
                }
                c
            }
            ["send"] => self.paths.clone(),
            ["send", _, ..] if !current.contains('=') => vec!["login=".into(), "id=".into()],
            _ => Vec::new(),
        };
        let mut out: Vec<String> = all.into_iter().filter(|c| c.starts_with(current)).collect();
        out.sort();
        out.dedup();
        out
    }
}

impl Completer for ShellHelper {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let head = &line[..pos];
        let start = head.rfind(char::is_whitespace).map(|i| i + 1).unwrap_or(0);
        let before: Vec<&str> = head[..start].split_whitespace().collect();
        let current = &head[start..];
        Ok((
            start,
            self.candidates(&before, current)
                .iter()
                .map(|c| pair(c))
                .collect(),
        ))
    }
}

/// Runs the REPL until `quit` or end of input; command failures are printed, not fatal.
pub(crate) fn run(shell: &mut Shell, paths: Vec<String>) -> i32 {
    shell.format = Format::Table;
    let var = shell.cfg.dir("var");
    let _ = std::fs::create_dir_all(&var);
    let history = var.join(".bksh_history");
    let config = match rustyline::Config::builder()
        .auto_add_history(false)
        .completion_type(CompletionType::List)
        .max_history_size(1000)
        .and_then(|b| b.history_ignore_dups(true))
    {
        Ok(b) => b.build(),
        Err(e) => {
            eprintln!("bksh: {e}");
            return 1;
        }
    };
    let mut ed: Editor<ShellHelper, DefaultHistory> = match Editor::with_config(config) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("bksh: cannot use the terminal: {e}");
            return 1;
        }
    };
    let params = shell.cfg.registry().iter().map(|p| p.name).collect();
    ed.set_helper(Some(ShellHelper::new(shell.tables.clone(), params, paths)));
    // A missing history file is the first run.
    let _ = ed.load_history(&history);
    println!(
        "bksh {} in {}: `help` lists the commands, Tab completes, Ctrl-D leaves",
        env!("CARGO_PKG_VERSION"),
        shell.cfg.home.display()
    );
    let prompt = format!("{}> ", shell.cfg.str("name"));
    loop {
        match ed.readline(&prompt) {
            Ok(line) => {
                if !line.trim().is_empty() {
                    let _ = ed.add_history_entry(line.as_str());
                    // Saved after every command, so a killed shell keeps what was typed.
                    if let Err(e) = ed.save_history(&history) {
                        eprintln!("bksh: cannot save history to {}: {e}", history.display());
                    }
                }
                match shell.execute(&line) {
                    Ok(Out::Quit) => break,
                    Ok(out) => print(&out, shell.format),
                    Err(e) => eprintln!("{e}"),
                }
            }
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => break,
            Err(e) => {
                eprintln!("bksh: {e}");
                return 1;
            }
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustyline::history::DefaultHistory;

    fn helper() -> ShellHelper {
        ShellHelper::new(
            bkjs_db::builtin_tables(),
            vec!["port", "proxy-port", "name"],
            vec!["/account/get".into(), "/ping".into()],
        )
    }

    fn complete(line: &str) -> (usize, Vec<String>) {
        let h = DefaultHistory::new();
        let (start, pairs) = helper()
            .complete(line, line.len(), &Context::new(&h))
            .expect("complete");
        (start, pairs.into_iter().map(|p| p.replacement).collect())
    }

    #[test]
    fn completes_commands_tables_columns_and_parameters() {
        assert_eq!(complete("ca"), (0, vec!["cache ".to_string()]));
        assert_eq!(complete("db sel"), (3, vec!["select ".to_string()]));
        assert_eq!(
            complete("db get bk_prop"),
            (7, vec!["bk_property ".to_string()])
        );
        let (start, c) = complete("db get bk_property na");
        assert_eq!((start, c), (19, vec!["name=".to_string()]));
        let (_, c) = complete("db select bk_auth ");
        assert!(c.contains(&"login=".to_string()) && c.contains(&"_count=".to_string()));
        assert_eq!(
            complete("db get bk_property name=x").1,
            Vec::<String>::new()
        );
        assert_eq!(
            complete("config p").1,
            vec!["port ".to_string(), "proxy-port ".to_string()]
        );
        assert_eq!(complete("send /p").1, vec!["/ping ".to_string()]);
        assert_eq!(complete("cache st").1, vec!["stats ".to_string()]);
    }
}
