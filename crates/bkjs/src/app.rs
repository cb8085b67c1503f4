//! `App`: what an application registers with bkjs, and [`run`], which turns the command line into
//! whichever process the binary was started as.

use crate::cli::{self, Command};
use bkjs_base::config::{self, Args, Config, Param};
use bkjs_base::sys::Boot;
use bkjs_process::{self as process, Role};
use std::process::ExitCode;

/// An application: its own parameters, tables, routes, hooks and jobs. The stock `bkjs` binary
/// is `App::default()`.
#[derive(Debug, Default)]
pub struct App {
    params: Vec<&'static Param>,
    tables: Vec<bkjs_db::Table>,
    routes: bkjs_api::Routes,
    jobs: bkjs_jobs::Registry,
    /// The first registration that failed; reported when the application starts.
    route_error: Option<String>,
}

impl App {
    pub fn new() -> App {
        App::default()
    }

    /// Declares application parameters; they are read from the same sources as the built-in ones.
    pub fn params(mut self, params: &'static [Param]) -> App {
        self.params.extend(params.iter());
        self
    }

    /// Describes an application table; it is created or upgraded at start like the built-in ones.
    pub fn table(mut self, table: bkjs_db::Table) -> App {
        self.tables.push(table);
        self
    }

    /// Adds a route: `method` (`GET`, `POST`, ..., or `*`), `pattern` (an exact path, a regexp, or
    /// a template with `{name}` segments such as `/test/{id}`) and an async handler.
    pub fn route<F, Fut>(mut self, method: &str, pattern: &str, f: F) -> App
    where
        F: Fn(std::sync::Arc<bkjs_api::Req>) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<bkjs_api::Out, bkjs_api::ApiError>>
            + Send
            + 'static,
    {
        if let Err(e) = self.routes.add(method, pattern, "", f) {
            self.route_error.get_or_insert(e.to_string());
        }
        self
    }

    /// [`App::route`] with a one-line description for `web/doc.html` (`bkjs doc`).
    pub fn route_doc<F, Fut>(mut self, method: &str, pattern: &str, doc: &str, f: F) -> App
    where
        F: Fn(std::sync::Arc<bkjs_api::Req>) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<bkjs_api::Out, bkjs_api::ApiError>>
            + Send
            + 'static,
    {
        if let Err(e) = self.routes.add(method, pattern, doc, f) {
            self.route_error.get_or_insert(e.to_string());
        }
        self
    }

    /// Adds an access check, run after authentication for matching requests.
    pub fn access<F, Fut>(mut self, method: &str, pattern: &str, f: F) -> App
    where
        F: Fn(std::sync::Arc<bkjs_api::Req>) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<(), bkjs_api::ApiError>> + Send + 'static,
    {
        if let Err(e) = self.routes.access(method, pattern, f) {
            self.route_error.get_or_insert(e.to_string());
        }
        self
    }

    /// Adds a pre hook, run after the access checks for matching requests.
    pub fn pre<F, Fut>(mut self, method: &str, pattern: &str, f: F) -> App
    where
        F: Fn(std::sync::Arc<bkjs_api::Req>) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<(), bkjs_api::ApiError>> + Send + 'static,
    {
        if let Err(e) = self.routes.pre(method, pattern, f) {
            self.route_error.get_or_insert(e.to_string());
        }
        self
    }

    /// Adds a post hook that may rewrite the JSON reply of matching requests.
    pub fn post<F>(mut self, method: &str, pattern: &str, f: F) -> App
    where
        F: Fn(&bkjs_api::Req, &mut serde_json::Value) + Send + Sync + 'static,
    {
        if let Err(e) = self.routes.post(method, pattern, f) {
            self.route_error.get_or_insert(e.to_string());
        }
        self
    }

    /// Registers job `name` (docs/jobs.md): run by the master from `etc/crontab`, `/system/jobs`,
    /// `bksh -run-job`, `-server-job` or `bk_jobs`, in a job worker process (type `local`) or
    /// inside the master (type `server`). The handler gets the job's arguments, the
    /// configuration and the database.
    pub fn job<F, Fut>(mut self, name: &str, f: F) -> App
    where
        F: Fn(bkjs_jobs::JobContext) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<(), bkjs_jobs::JobError>> + Send + 'static,
    {
        if let Err(e) = self.jobs.add(name, f) {
            self.route_error.get_or_insert(e.to_string());
        }
        self
    }

    /// Every registered job (plus the test jobs when test faults are on).
    pub fn jobs(&self) -> std::sync::Arc<bkjs_jobs::Registry> {
        let mut r = self.jobs.clone();
        bkjs_jobs::test_jobs(&mut r);
        if let Err(e) = bkjs_api::push::register(&mut r) {
            tracing::error!("{e}");
        }
        std::sync::Arc::new(r)
    }

    /// The application's routes and hooks (the built-in groups are added by the web worker).
    pub fn routes(&self) -> bkjs_api::Routes {
        self.routes.clone()
    }

    /// Every described table: the built-in ones, then the application's.
    pub fn tables(&self) -> Vec<bkjs_db::Table> {
        let mut t = bkjs_db::builtin_tables();
        t.extend(self.tables.iter().cloned());
        t.extend(test_table());
        t
    }

    /// Every parameter: built-in modules first, then the application's.
    pub fn registry(&self) -> Vec<&'static Param> {
        let mut r = params();
        r.extend(self.params.iter().copied());
        r
    }
}

/// Every parameter of the library's crates, in the order `bkjs help` lists them.
pub fn params() -> Vec<&'static Param> {
    config::registry(&[
        bkjs_api::geo::PARAMS,
        bkjs_api::endpoints::PARAMS,
        bkjs_process::PARAMS,
        bkjs_ipc::PARAMS,
        bkjs_cache::PARAMS,
        bkjs_db::front::PARAMS,
        bkjs_api::PARAMS,
        bkjs_msg::PARAMS,
        bkjs_base::cluster::PARAMS,
        bkjs_jobs::PARAMS,
        bkjs_push::PARAMS,
    ])
}

/// Runs `app` as the command line says: a command (`run-backend`, `stop`, `help`, ...) or, for a
/// re-executed child, a role flag (`-web`).
pub fn run(app: App) -> ExitCode {
    let words: Vec<String> = std::env::args().skip(1).collect();
    let (command, params) = match cli::parse(&words) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(config::EXIT_USAGE as u8);
        }
    };
    let registry = app.registry();
    if let Some(e) = &app.route_error {
        eprintln!("bkjs: {e}");
        return ExitCode::from(config::EXIT_USAGE as u8);
    }
    if command == Command::Help {
        print!("{}", cli::usage());
        print!("{}", config::help_text(&registry));
        return ExitCode::SUCCESS;
    }
    if command == Command::Doc {
        return ExitCode::from(doc_command(&app, &params) as u8);
    }
    if command == Command::InitApp {
        return ExitCode::from(crate::init_app::command(&params) as u8);
    }
    if command == Command::Version {
        println!("bkjs {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    let (params, sub) = if command == Command::Shell {
        crate::shell::split_subcommand(&params)
    } else {
        (params, None)
    };
    let loaded = Args::parse(&params, &registry)
        .and_then(|args| Config::load(&registry, &args, &config::env_map()));
    let cfg = match loaded {
        Ok(c) => c,
        Err(e) => {
            eprintln!("bkjs: {e}");
            return ExitCode::from(config::EXIT_USAGE as u8);
        }
    };
    let code = match command {
        Command::Role => become_role(cfg, &app),
        Command::Shell => shell(cfg, &app, sub),
        other => cli::command(other, cfg),
    };
    ExitCode::from(code.clamp(0, 255) as u8)
}

/// `doc html|markdown|write [DIR]`: this application's reference, printed or written.
fn doc_command(app: &App, words: &[String]) -> i32 {
    let mut routes = app.routes();
    routes.extend(bkjs_api::endpoints::builtin());
    let params = app.registry();
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    match words.as_slice() {
        [] | ["html"] => print!("{}", crate::doc::html(&routes, &params)),
        ["markdown"] => print!("{}", crate::doc::markdown(&params)),
        ["write"] | ["write", _] => {
            let dir = std::path::Path::new(words.get(1).copied().unwrap_or("."));
            match crate::doc::write(dir, &routes, &params) {
                Ok(paths) => {
                    for p in paths {
                        println!("wrote {}", p.display());
                    }
                }
                Err(e) => {
                    eprintln!("bkjs doc: {e}");
                    return 1;
                }
            }
        }
        _ => {
            eprintln!("bkjs doc: expected `html`, `markdown` or `write [DIR]`, got {words:?}");
            return config::EXIT_USAGE;
        }
    }
    0
}

/// Which role the role flags name: the first of them wins (docs/processes.md).
fn role_of(args: &Args) -> Option<Role> {
    args.roles.iter().find_map(|r| match r.as_str() {
        "monitor" | "watch" => Some(Role::Monitor),
        "master" => Some(Role::Master),
        "server" => Some(Role::Server),
        "web" => Some(Role::Web),
        "worker" => Some(Role::Worker),
        _ => None,
    })
}

fn become_role(cfg: Config, app: &App) -> i32 {
    let Some(role) = role_of(&cfg.args) else {
        eprintln!("bkjs: no command given (see `bkjs help`)");
        return config::EXIT_USAGE;
    };
    let boot = Boot::detect(cfg.args.has_role("watch"));
    if !matches!(role, Role::Web | Role::Worker) {
        if let Err(e) = make_home(&cfg) {
            eprintln!("bkjs: cannot prepare home {}: {e}", cfg.home.display());
            return process::EXIT_BOOT;
        }
    }
    if let Err(e) = std::env::set_current_dir(&cfg.home) {
        eprintln!("bkjs: cannot enter home {}: {e}", cfg.home.display());
        return process::EXIT_BOOT;
    }
    match u32::from_str_radix(cfg.str("umask"), 8) {
        Ok(m) => {
            nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(m));
        }
        Err(_) => {
            eprintln!(
                "bkjs: invalid value for -umask: {:?} is not octal",
                cfg.str("umask")
            );
            return config::EXIT_USAGE;
        }
    }
    // Push credentials are checked before anything starts: a bad key stops the tree, naming it.
    if matches!(role, Role::Monitor | Role::Master) {
        if let Err(e) = bkjs_api::push::check_config(&cfg) {
            eprintln!("bkjs: {e}");
            return config::EXIT_USAGE;
        }
    }
    process::set_comm(&role.title(&cfg));
    if let Err(e) = bkjs_base::log::init(&cfg, role.label(&cfg)) {
        eprintln!("bkjs: {e}; logging to stderr");
    }
    for w in &cfg.warnings {
        tracing::warn!("{w}");
    }
    let _pid = if boot.top {
        match process::PidFile::create(&cfg) {
            Ok(p) => Some(p),
            Err(e) => {
                tracing::error!("cannot write {}: {e}", process::pid_file(&cfg).display());
                return process::EXIT_BOOT;
            }
        }
    } else {
        None
    };
    match role {
        Role::Monitor => process::run_supervisor(cfg, role, &boot, None),
        Role::Master if cfg.args.has_role("single") => {
            process::run_single(cfg, &boot, (app.jobs(), app.tables()), app.routes())
        }
        Role::Master => process::run_supervisor(cfg, role, &boot, Some((app.jobs(), app.tables()))),
        Role::Server => process::run_server(cfg, &boot, app.tables()),
        Role::Web => process::run_web(cfg, &boot, app.tables(), app.routes()),
        Role::Worker => bkjs_jobs::run_worker(cfg, &boot, app.tables(), app.jobs()),
    }
}

/// Creates the home and its sub-directories (non-worker roles only).
fn make_home(cfg: &Config) -> std::io::Result<()> {
    for d in ["etc", "var", "log", "tmp", "images", "files", "web"] {
        std::fs::create_dir_all(cfg.dir(d))?;
    }
    Ok(())
}

/// `bksh`: the shell with the same configuration sources as `bkjs`.
pub fn shell_main(app: App) -> ExitCode {
    let words: Vec<String> = std::env::args().skip(1).collect();
    let (params, sub) = crate::shell::split_subcommand(&words);
    let registry = app.registry();
    match Args::parse(&params, &registry)
        .and_then(|args| Config::load(&registry, &args, &config::env_map()))
    {
        Ok(cfg) => ExitCode::from(shell(cfg, &app, sub).clamp(0, 255) as u8),
        Err(e) => {
            eprintln!("bksh: {e}");
            ExitCode::from(config::EXIT_USAGE as u8)
        }
    }
}

/// Test-only (debug builds with `BKJS_TEST_FAULTS=1`): `BKJS_TEST_TABLE=1` describes table
/// `bk_test_upgrade (id | a)`, `BKJS_TEST_TABLE=2` the same table with a new indexed column `b`,
/// so a test can restart the real binary with an upgraded schema.
fn test_table() -> Option<bkjs_db::Table> {
    use bkjs_db::{Column, Table};
    if !bkjs_base::faults::enabled() {
        return None;
    }
    let version = std::env::var("BKJS_TEST_TABLE").ok()?;
    let mut cols = vec![Column::text("id").primary(1), Column::text("a")];
    if version == "2" {
        cols.push(Column::text("b").index(1));
    }
    Table::new("bk_test_upgrade", cols).ok()
}

/// The shell: one subcommand, or commands from stdin.
fn shell(cfg: Config, app: &App, sub: Option<(String, Vec<String>)>) -> i32 {
    match sub {
        Some((name, args)) => {
            crate::shell::run_subcommand(cfg, app.tables(), app.jobs(), &name, &args)
        }
        None => crate::shell::run(cfg, app.tables(), &app.routes),
    }
}

#[cfg(test)]
mod params_tests {
    use super::params;

    /// Every parameter the code reads (`cfg.str("name")`, `cfg.int(..)`, ...) is registered: a typo or
    /// a missing declaration would otherwise panic at run time.
    #[test]
    fn every_parameter_read_in_the_code_is_registered() {
        let reg = params();
        let names: std::collections::HashSet<&str> = reg.iter().map(|p| p.name).collect();
        let re = regex::Regex::new(
            r#"cfg\.(?:str|int|bool|number|list|map|regexps|json|duration|path|display)\(\s*"([a-z0-9-]+)"\s*\)"#,
        )
        .expect("regex");
        let mut missing = Vec::new();
        let mut seen = 0;
        let mut stack = vec![std::path::PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/.."
        ))];
        while let Some(dir) = stack.pop() {
            for e in std::fs::read_dir(&dir).expect("read src").flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|x| x == "rs") {
                    let text = std::fs::read_to_string(&p).expect("read file");
                    for c in re.captures_iter(&text) {
                        seen += 1;
                        if !names.contains(&c[1]) {
                            missing.push(format!("{}: {}", p.display(), &c[1]));
                        }
                    }
                }
            }
        }
        assert!(seen > 50, "the scan found the reads ({seen})");
        assert!(missing.is_empty(), "read but not registered: {missing:?}");
    }
}
