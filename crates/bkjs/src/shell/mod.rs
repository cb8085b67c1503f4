//! The shell (`bkjs run-shell`, `bksh`): the same configuration, DB pools and cache as the
//! server, no HTTP server of its own. Three ways in: a one-shot subcommand (`bksh -account-add
//! login L ...`, docs/processes.md), commands read from standard input (`bksh < file`: no prompt, one JSON
//! result per line, exit code 1 when any command failed), or, on a terminal, the interactive REPL
//! ([`repl`]: history, completion, results as tables). The commands themselves live in
//! [`command`], the table rendering in [`table`], the one-shot subcommands in [`subcommand`].

mod command;
mod repl;
mod subcommand;
mod table;

pub(crate) use subcommand::{run_subcommand, split_subcommand};

use command::{Out, Shell};
use table::print;

use bkjs_base::config::Config;
use bkjs_db::Table;
use std::io::{BufRead, IsTerminal};

/// Runs shell commands until end of input: the REPL on a terminal, else the lines of standard
/// input without a prompt. Returns the exit code (1 if any command failed).
pub(crate) fn run(cfg: Config, tables: Vec<Table>, routes: &bkjs_api::Routes) -> i32 {
    let interactive = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    let mut shell = match Shell::new(cfg, tables) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("bksh: cannot start: {e}");
            return 1;
        }
    };
    if interactive {
        let mut all = routes.clone();
        all.extend(bkjs_api::endpoints::builtin());
        let mut paths: Vec<String> = all
            .describe()
            .into_iter()
            .map(|(_, pattern, _, _)| pattern)
            .filter(|p| p.starts_with('/'))
            .collect();
        paths.sort();
        paths.dedup();
        return repl::run(&mut shell, paths);
    }
    let mut code = 0;
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        match shell.execute(&line) {
            Ok(Out::Quit) => break,
            Ok(out) => print(&out, shell.format),
            Err(e) => {
                eprintln!("{e}");
                code = 1;
            }
        }
    }
    code
}
