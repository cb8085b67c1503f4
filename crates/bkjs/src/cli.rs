//! The command line: which command was given (clap), and the commands that do not become a
//! long-running role themselves: starting a tree (by re-executing as its top role), `stop`,
//! `restart`.

use bkjs_base::config::{Config, EXIT_USAGE};
use bkjs_process::{self as process, Role};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::os::unix::process::CommandExt;
use std::time::{Duration, Instant};

/// What the command line asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Command {
    RunBackend,
    RunServer,
    Run,
    Shell,
    Stop,
    Restart,
    Help,
    Version,
    /// `doc html|markdown|write [DIR]`: the reference generated from the registries.
    Doc,
    /// `init-app DIR`: a new application crate.
    InitApp,
    /// No command: a re-executed child started with a role flag.
    Role,
}

const COMMANDS: &[(&str, Command, &str)] = &[
    ("run-backend", Command::RunBackend, "development: monitor with -watch, master, server and web workers in the foreground, debug logs"),
    ("run-server", Command::RunServer, "production: monitor, master, server and web workers; -daemon detaches"),
    ("run", Command::Run, "master, server and web workers, nothing else; -single: all of them in one process (server, one web worker's API, master and jobs)"),
    ("run-shell", Command::Shell, "the shell: configuration and pools, no HTTP server"),
    ("stop", Command::Stop, "stop the running tree found through var/bkjs.pid"),
    ("restart", Command::Restart, "reload the configuration and roll the web workers (-web: roll only)"),
    ("init-app", Command::InitApp, "DIR [-bkjs-path PATH | -bkjs-version V]: create an application crate in DIR"),
    ("doc", Command::Doc, "html | markdown | write [DIR]: the API and parameter reference (write: DIR/web/doc.html and DIR/README.md)"),
    ("help", Command::Help, "this text and every parameter"),
    ("version", Command::Version, "the version"),
];

fn clap_command() -> clap::Command {
    let params = || {
        clap::Arg::new("params")
            .num_args(0..)
            .trailing_var_arg(true)
            .allow_hyphen_values(true)
            .value_name("-NAME VALUE")
    };
    let mut cmd = clap::Command::new("bkjs")
        .disable_help_flag(true)
        .disable_version_flag(true)
        .disable_help_subcommand(true)
        .args_conflicts_with_subcommands(true)
        .arg(params());
    for (name, _, about) in COMMANDS {
        cmd = cmd.subcommand(
            clap::Command::new(*name)
                .about(*about)
                .disable_help_flag(true)
                .arg(params()),
        );
    }
    cmd
}

/// Splits the words after the program name into a command and its `-name value` parameters.
pub(crate) fn parse(words: &[String]) -> Result<(Command, Vec<String>), String> {
    let m = clap_command()
        .try_get_matches_from(std::iter::once("bkjs".to_string()).chain(words.iter().cloned()))
        .map_err(|e| format!("bkjs: {}", e.render().to_string().trim()))?;
    let collect = |m: &clap::ArgMatches| -> Vec<String> {
        m.get_many::<String>("params")
            .map(|v| v.cloned().collect())
            .unwrap_or_default()
    };
    match m.subcommand() {
        Some((name, sub)) => {
            let cmd = COMMANDS
                .iter()
                .find(|(n, _, _)| *n == name)
                .map(|(_, c, _)| *c)
                .ok_or_else(|| format!("bkjs: unknown command {name}"))?;
            Ok((cmd, collect(sub)))
        }
        None if words.is_empty() => Ok((Command::Help, Vec::new())),
        None => {
            let params = collect(&m);
            if params.first().is_some_and(|w| w.starts_with('-')) {
                Ok((Command::Role, params))
            } else {
                Err(format!(
                    "bkjs: unknown command {:?} (see `bkjs help`)",
                    params.first().map(String::as_str).unwrap_or("")
                ))
            }
        }
    }
}

/// The commands list for `bkjs help`.
pub(crate) fn usage() -> String {
    let mut s = String::from("Usage: bkjs COMMAND [-name value ...]\n\nCommands:\n");
    for (name, _, about) in COMMANDS {
        s.push_str(&format!("  {name:<12} {about}\n"));
    }
    s.push('\n');
    s
}

/// Runs a command that is not a role.
pub(crate) fn command(cmd: Command, cfg: Config) -> i32 {
    match cmd {
        Command::RunBackend => become_top(&cfg, Role::Monitor, &["-watch"], &["-debug"]),
        Command::RunServer if cfg.args.has_role("daemon") => daemonize(&cfg),
        Command::RunServer => become_top(&cfg, Role::Monitor, &[], &["-syslog"]),
        Command::Run => become_top(&cfg, Role::Master, &[], &[]),
        Command::Stop => stop(&cfg),
        Command::Restart => {
            let sig = if cfg.args.has_role("web") {
                Signal::SIGUSR2
            } else {
                Signal::SIGHUP
            };
            match running_pid(&cfg) {
                Ok(pid) => match kill(Pid::from_raw(pid as i32), sig) {
                    Ok(()) => {
                        println!("sent {} to pid {pid}", sig.as_str());
                        0
                    }
                    Err(e) => {
                        eprintln!("bkjs: cannot signal pid {pid}: {e}");
                        1
                    }
                },
                Err(e) => {
                    eprintln!("bkjs: {e}");
                    1
                }
            }
        }
        _ => EXIT_USAGE,
    }
}

/// The role's command line: its flags, parameters that come before the user's (so the user's
/// win), then the user's parameters.
fn role_argv(cfg: &Config, role: Role, flags: &[&str], before: &[&str]) -> Vec<String> {
    let mut args = vec![format!("-{}", role.flag())];
    args.extend(flags.iter().map(|s| s.to_string()));
    // `-single` (docs/processes.md) goes down to the master, which then runs everything itself.
    if cfg.args.has_role("single") {
        args.push("-single".into());
    }
    args.extend(before.iter().map(|s| s.to_string()));
    args.extend(cfg.args.to_words());
    args
}

/// Re-executes this process as the top role of a tree (same pid, so systemd and shells that
/// started it keep tracking it), titled `NAME: role`.
fn become_top(cfg: &Config, role: Role, flags: &[&str], before: &[&str]) -> i32 {
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("bkjs: cannot find my own executable: {e}");
            return process::EXIT_BOOT;
        }
    };
    let err = std::process::Command::new(&exe)
        .arg0(role.title(cfg))
        .args(role_argv(cfg, role, flags, before))
        .env("_BKJS_TOP", "1")
        .exec();
    eprintln!("bkjs: cannot execute {}: {err}", exe.display());
    process::EXIT_BOOT
}

/// `run-server -daemon`: starts the monitor detached in a new session with its output in
/// `log/error.log` (moved to `.old` past 100 MB) and returns.
fn daemonize(cfg: &Config) -> i32 {
    let log_dir = cfg.dir("log");
    if let Err(e) = std::fs::create_dir_all(&log_dir) {
        eprintln!("bkjs: cannot create {}: {e}", log_dir.display());
        return process::EXIT_BOOT;
    }
    let log = log_dir.join("error.log");
    if std::fs::metadata(&log)
        .map(|m| m.len() > 100 * 1024 * 1024)
        .unwrap_or(false)
    {
        let _ = std::fs::rename(&log, log_dir.join("error.log.old"));
    }
    let open = || {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
    };
    let (out, err) = match (open(), open()) {
        (Ok(o), Ok(e)) => (o, e),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("bkjs: cannot open {}: {e}", log.display());
            return process::EXIT_BOOT;
        }
    };
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("bkjs: cannot find my own executable: {e}");
            return process::EXIT_BOOT;
        }
    };
    let mut cmd = std::process::Command::new(&exe);
    cmd.arg0(Role::Monitor.title(cfg))
        .args(role_argv(cfg, Role::Monitor, &[], &["-syslog"]))
        .env("_BKJS_TOP", "1")
        .env_remove("NOTIFY_SOCKET")
        .stdin(std::process::Stdio::null())
        .stdout(out)
        .stderr(err);
    // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            Ok(())
        });
    }
    match cmd.spawn() {
        Ok(child) => {
            println!(
                "started in the background: pid {} (log {})",
                child.id(),
                log.display()
            );
            0
        }
        Err(e) => {
            eprintln!("bkjs: cannot start in the background: {e}");
            process::EXIT_BOOT
        }
    }
}

/// The pid in `var/bkjs.pid`, checked to be a live process of this application.
fn running_pid(cfg: &Config) -> Result<u32, String> {
    let path = process::pid_file(cfg);
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("not running ({}: {e})", path.display()))?;
    let pid: u32 = text
        .trim()
        .parse()
        .map_err(|_| format!("{} does not hold a pid", path.display()))?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let prefix = format!("{}: ", cfg.str("name"));
    if !cmdline.starts_with(prefix.as_bytes()) {
        return Err(format!(
            "not running (stale {}: pid {pid} is not a {} process)",
            path.display(),
            cfg.str("name")
        ));
    }
    Ok(pid)
}

fn stop(cfg: &Config) -> i32 {
    let pid = match running_pid(cfg) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("bkjs: {e}");
            return 1;
        }
    };
    if let Err(e) = kill(Pid::from_raw(pid as i32), Signal::SIGTERM) {
        eprintln!("bkjs: cannot signal pid {pid}: {e}");
        return 1;
    }
    let deadline = Instant::now() + cfg.duration("server-drain-timeout") + Duration::from_secs(10);
    while Instant::now() < deadline {
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            println!("stopped pid {pid}");
            return 0;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("bkjs: pid {pid} is still running after the stop deadline");
    1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn commands_and_roles() {
        assert_eq!(
            parse(&w("run -port 1 -home /x")).expect("run"),
            (Command::Run, w("-port 1 -home /x"))
        );
        assert_eq!(
            parse(&w("-web -home /x")).expect("role"),
            (Command::Role, w("-web -home /x"))
        );
        assert_eq!(parse(&w("help")).expect("help").0, Command::Help);
        assert_eq!(parse(&w("stop -h 1")).expect("stop").1, w("-h 1"));
        assert!(parse(&w("frobnicate")).is_err());
    }
}
