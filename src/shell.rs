//! The shell (`bkjs run-shell`, `bksh`): the same configuration as the server, no HTTP. Reads one
//! command per line from standard input. The full REPL with DB and cache commands comes with the
//! DB and cache modules.

use crate::config::Config;
use std::io::BufRead;

/// Runs shell commands from stdin until end of input; returns the exit code.
pub fn run(cfg: Config) -> i32 {
    let stdin = std::io::stdin();
    let mut code = 0;
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            [] => {}
            ["config", name] => match cfg.display(name) {
                Some(v) => println!("{v}"),
                None => {
                    eprintln!("unknown parameter {name}; `config` alone lists them all");
                    code = 1;
                }
            },
            ["config"] => {
                for p in cfg.registry() {
                    println!("{} = {}", p.name, cfg.display(p.name).unwrap_or_default());
                }
            }
            ["quit"] | ["exit"] => break,
            _ => {
                eprintln!("unknown command: {line}; try `config NAME`, `config` or `quit`");
                code = 1;
            }
        }
    }
    code
}
