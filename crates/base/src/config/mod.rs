//! Configuration: one registry of typed parameters that every module declares, and the loader that
//! fills it from the built-in defaults, `etc/config`, `etc/config.local`, `BKJS_*` environment
//! variables and the command line, in that order of precedence (docs/config.md).
//!
//! A parameter is named with its module prefix (`-server-web-workers`, `-api-allow-path`); core
//! parameters have none (`-port`). A bad value anywhere, or an unknown parameter on the command line,
//! is a [`ConfigError`] that names the parameter; the binary turns it into exit code 64.

mod error;
mod param;
mod parse;
mod registry;
mod value;

pub use error::ConfigError;
pub use param::{Kind, Param};
use parse::parse_bool;
#[cfg(test)]
use parse::parse_duration;
/// Sizes as `Kind::Size` reads them, for values inside maps and lists.
pub use parse::parse_size;
pub use registry::registry;

use value::Value;

use regex::Regex;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Exit code for a bad parameter value or an unknown command-line parameter (EX_USAGE).
pub const EXIT_USAGE: i32 = 64;

/// Flags that choose what a process becomes; only read from the command line (docs/processes.md).
pub(crate) const ROLE_FLAGS: &[&str] = &[
    "monitor", "master", "server", "web", "worker", "watch", "daemon", "shell", "single",
];

/// The command line split into role flags and `name value` parameters, before typing.
#[derive(Debug, Clone, Default)]
pub struct Args {
    /// Role flags in the order given (`-web`, `-master`, ...).
    pub roles: Vec<String>,
    /// Parameters in the order given; `None` for a flag without a value.
    pub params: Vec<(String, Option<String>)>,
}

impl Args {
    /// Splits command-line words into role flags and parameters. Accepts `-name value`, `-name` for
    /// a boolean flag, `--name value` and `--name=value`.
    pub fn parse(words: &[String], registry: &[&'static Param]) -> Result<Args, ConfigError> {
        let mut args = Args::default();
        let mut i = 0;
        while i < words.len() {
            let word = &words[i];
            i += 1;
            let Some(stripped) = word.strip_prefix('-') else {
                return Err(ConfigError::Stray(word.clone()));
            };
            let stripped = stripped.strip_prefix('-').unwrap_or(stripped);
            let (name, inline) = match stripped.split_once('=') {
                Some((n, v)) if word.starts_with("--") => (n.to_string(), Some(v.to_string())),
                _ => (stripped.to_string(), None),
            };
            if ROLE_FLAGS.contains(&name.as_str()) {
                args.roles.push(name);
                continue;
            }
            let name = registry::canonical(&name).to_string();
            let param = find(registry, &name).ok_or_else(|| ConfigError::Unknown(name.clone()))?;
            let value = match inline {
                Some(v) => Some(v),
                None if matches!(param.kind, Kind::Bool) => {
                    // A flag: the next word is its value only when it reads as a boolean.
                    match words.get(i) {
                        Some(next) if parse_bool(next).is_some() => {
                            i += 1;
                            Some(next.clone())
                        }
                        _ => None,
                    }
                }
                None => match words.get(i) {
                    // `-port -home x`: the next word is a parameter, not this one's value.
                    Some(next) if is_param_word(next, registry) => {
                        return Err(ConfigError::MissingValue(name))
                    }
                    Some(next) => {
                        i += 1;
                        Some(next.clone())
                    }
                    None => return Err(ConfigError::MissingValue(name)),
                },
            };
            args.params.push((name, value));
        }
        Ok(args)
    }

    /// The parameters as command-line words again, without role flags, to pass to a child role.
    pub fn to_words(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (name, value) in &self.params {
            out.push(format!("-{name}"));
            if let Some(v) = value {
                out.push(v.clone());
            }
        }
        out
    }

    /// The last value given for `name` on the command line.
    pub fn last(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_deref().unwrap_or("true"))
    }

    /// True when `flag` was given as a role flag.
    pub fn has_role(&self, flag: &str) -> bool {
        self.roles.iter().any(|r| r == flag)
    }
}

/// True for `-name` or `--name` where name is a registered parameter or a role flag (negative
/// numbers and other dashed values are not).
fn is_param_word(word: &str, registry: &[&'static Param]) -> bool {
    let Some(name) = word.strip_prefix('-') else {
        return false;
    };
    let name = name.strip_prefix('-').unwrap_or(name);
    let name = name.split_once('=').map(|(n, _)| n).unwrap_or(name);
    ROLE_FLAGS.contains(&name) || find(registry, registry::canonical(name)).is_some()
}

fn find(registry: &[&'static Param], name: &str) -> Option<&'static Param> {
    registry.iter().copied().find(|p| p.name == name)
}

/// The loaded configuration: every registered parameter has a typed value.
#[derive(Debug, Clone)]
pub struct Config {
    values: HashMap<&'static str, Value>,
    registry: Vec<&'static Param>,
    /// The home directory, absolute; the process works inside it.
    pub home: PathBuf,
    /// The command line this configuration was loaded with.
    pub args: Args,
    /// Non-fatal problems found while loading (unknown names in config files), to log once logging runs.
    pub warnings: Vec<String>,
}

impl Config {
    /// Loads the configuration for `args` with `registry`, reading the environment from `env`.
    pub fn load(
        registry: &[&'static Param],
        args: &Args,
        env: &HashMap<String, String>,
    ) -> Result<Config, ConfigError> {
        let home = resolve_home(args, env);
        // Children and reloads must find the same home whatever their working directory is.
        let mut args = args.clone();
        if args.last("home") != Some(&home.display().to_string()) {
            args.params
                .push(("home".into(), Some(home.display().to_string())));
        }
        let args = &args;
        let mut cfg = Config {
            values: HashMap::new(),
            registry: registry.to_vec(),
            home,
            args: args.clone(),
            warnings: Vec::new(),
        };
        for p in registry {
            let v = parse::typed(p, p.default, "default")?;
            cfg.values.insert(p.name, v);
        }
        // Where the config files are may itself come from the environment or the command line.
        let conf_file = args
            .last("conf-file")
            .map(str::to_string)
            .or_else(|| env.get("BKJS_CONF_FILE").cloned())
            .or_else(|| env.get("BKJS_CONFIG_FILE").cloned());
        let etc_dir = args
            .last("etc-dir")
            .map(str::to_string)
            .or_else(|| env.get("BKJS_ETC_DIR").cloned())
            .unwrap_or_else(|| "etc".to_string());
        let main_file = cfg
            .home
            .join(conf_file.unwrap_or_else(|| format!("{etc_dir}/config")));
        let local_file = PathBuf::from(format!("{}.local", main_file.display()));
        for file in [main_file, local_file] {
            cfg.apply_file(&file)?;
        }
        let mut env_keys: Vec<&String> = env.keys().collect();
        env_keys.sort();
        for key in env_keys {
            let Some(rest) = key.strip_prefix("BKJS_") else {
                continue;
            };
            let name = rest.to_ascii_lowercase().replace('_', "-");
            let name = registry::canonical(&name);
            if find(registry, name).is_some() {
                cfg.set(name, Some(&env[key]), &format!("environment {key}"))?;
            }
        }
        for (name, value) in &args.params {
            cfg.set(name, value.as_deref(), "command line")?;
        }
        Ok(cfg)
    }

    /// Loads the configuration again from the same command line and the current environment and
    /// files; the caller keeps the old one when this fails.
    pub fn reload(&self) -> Result<Config, ConfigError> {
        Config::load(&self.registry, &self.args, &env_map())
    }

    /// Reads one `name=value` file; a missing file is not an error, unknown names are warnings.
    fn apply_file(&mut self, path: &Path) -> Result<(), ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(source) => {
                return Err(ConfigError::Io {
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        for (lineno, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (name, value) = match line.split_once('=') {
                Some((n, v)) => (n.trim(), Some(v.trim())),
                None => (line, None),
            };
            let name = registry::canonical(name.trim_start_matches('-'));
            let origin = format!("{}:{}", path.display(), lineno + 1);
            if ROLE_FLAGS.contains(&name) {
                self.warnings.push(format!(
                    "{origin}: role flag -{name} is only read from the command line"
                ));
                continue;
            }
            if find(&self.registry, name).is_none() {
                self.warnings
                    .push(format!("{origin}: unknown parameter {name}, ignored"));
                continue;
            }
            self.set(name, value, &origin)?;
        }
        Ok(())
    }

    /// Sets one parameter from text, accumulating list parameters marked so.
    fn set(&mut self, name: &str, value: Option<&str>, origin: &str) -> Result<(), ConfigError> {
        let param = find(&self.registry, name).ok_or_else(|| ConfigError::Unknown(name.into()))?;
        let text = match value {
            Some(v) => v,
            None if matches!(param.kind, Kind::Bool) => "true",
            None => return Err(ConfigError::MissingValue(name.to_string())),
        };
        let v = parse::typed(param, text, origin)?;
        let merged = match (param.accumulate, self.values.remove(param.name), v) {
            (true, Some(Value::List(mut old)), Value::List(new)) => {
                old.extend(new);
                Value::List(old)
            }
            (true, Some(Value::Regexps(mut old)), Value::Regexps(new)) => {
                old.extend(new);
                Value::Regexps(old)
            }
            (_, _, v) => v,
        };
        self.values.insert(param.name, merged);
        Ok(())
    }

    fn value(&self, name: &str) -> &Value {
        self.values
            .get(name)
            .unwrap_or_else(|| panic!("parameter {name} is not registered"))
    }

    /// A boolean parameter.
    pub fn bool(&self, name: &str) -> bool {
        match self.value(name) {
            Value::Bool(b) => *b,
            other => panic!("parameter {name} is not a bool: {other:?}"),
        }
    }

    /// An integer parameter (also sizes).
    pub fn int(&self, name: &str) -> i64 {
        match self.value(name) {
            Value::Int(i) => *i,
            other => panic!("parameter {name} is not an int: {other:?}"),
        }
    }

    /// A number parameter.
    pub fn number(&self, name: &str) -> f64 {
        match self.value(name) {
            Value::Number(n) => *n,
            Value::Int(i) => *i as f64,
            other => panic!("parameter {name} is not a number: {other:?}"),
        }
    }

    /// A string or path parameter as given (empty when unset).
    pub fn str(&self, name: &str) -> &str {
        match self.value(name) {
            Value::Str(s) => s,
            other => panic!("parameter {name} is not a string: {other:?}"),
        }
    }

    /// A path parameter resolved against the home directory; `None` when empty.
    pub fn path(&self, name: &str) -> Option<PathBuf> {
        let s = self.str(name);
        (!s.is_empty()).then(|| self.home.join(s))
    }

    /// A list parameter.
    pub fn list(&self, name: &str) -> &[String] {
        match self.value(name) {
            Value::List(l) => l,
            other => panic!("parameter {name} is not a list: {other:?}"),
        }
    }

    /// A map parameter.
    pub fn map(&self, name: &str) -> &[(String, String)] {
        match self.value(name) {
            Value::Map(m) => m,
            other => panic!("parameter {name} is not a map: {other:?}"),
        }
    }

    /// A regexp or regexp-list parameter.
    pub fn regexps(&self, name: &str) -> &[Regex] {
        match self.value(name) {
            Value::Regexps(r) => r,
            other => panic!("parameter {name} is not a regexp: {other:?}"),
        }
    }

    /// A JSON parameter.
    pub fn json(&self, name: &str) -> &serde_json::Value {
        match self.value(name) {
            Value::Json(j) => j,
            other => panic!("parameter {name} is not json: {other:?}"),
        }
    }

    /// A duration parameter.
    pub fn duration(&self, name: &str) -> Duration {
        match self.value(name) {
            Value::Duration(d) => *d,
            other => panic!("parameter {name} is not a duration: {other:?}"),
        }
    }

    /// A sub-directory of the home (`etc`, `var`, `log`, ...), honouring `-NAME-dir`.
    pub fn dir(&self, name: &str) -> PathBuf {
        self.path(&format!("{name}-dir"))
            .unwrap_or_else(|| self.home.join(name))
    }

    /// The files whose change means the configuration changed: `etc/config` and its `.local`.
    pub fn files(&self) -> Vec<PathBuf> {
        let main = match self.str("conf-file") {
            "" => self.dir("etc").join("config"),
            f => self.home.join(f),
        };
        let local = PathBuf::from(format!("{}.local", main.display()));
        vec![main, local]
    }

    /// Every registered parameter with its current value as text, for `bkjs help` and `bksh`.
    pub fn registry(&self) -> &[&'static Param] {
        &self.registry
    }

    /// The current value of a parameter as display text.
    pub fn display(&self, name: &str) -> Option<String> {
        self.values.get(name).map(|v| match v {
            Value::Bool(b) => b.to_string(),
            Value::Int(i) => i.to_string(),
            Value::Number(n) => n.to_string(),
            Value::Str(s) => s.clone(),
            Value::List(l) => l.join(","),
            Value::Map(m) => m
                .iter()
                .map(|(k, v)| format!("{k}:{v}"))
                .collect::<Vec<_>>()
                .join(","),
            Value::Regexps(r) => r
                .iter()
                .map(|r| r.as_str().to_string())
                .collect::<Vec<_>>()
                .join(" "),
            Value::Json(j) => j.to_string(),
            Value::Duration(d) => humantime::format_duration(*d).to_string(),
        })
    }
}

/// The process environment as a map, for [`Config::load`].
pub fn env_map() -> HashMap<String, String> {
    std::env::vars().collect()
}

/// `-home DIR`, else `$BKJS_HOME`, else `~/.bkjs`, made absolute against the current directory.
fn resolve_home(args: &Args, env: &HashMap<String, String>) -> PathBuf {
    let home = args
        .last("home")
        .map(PathBuf::from)
        .or_else(|| env.get("BKJS_HOME").map(PathBuf::from))
        .unwrap_or_else(|| {
            let user = env.get("HOME").map(String::as_str).unwrap_or("/tmp");
            Path::new(user).join(".bkjs")
        });
    if home.is_absolute() {
        home
    } else {
        std::env::current_dir()
            .map(|cwd| cwd.join(&home))
            .unwrap_or(home)
    }
}

/// Renders the help text: every parameter with its type, default and description.
pub fn help_text(registry: &[&'static Param]) -> String {
    let mut out = String::from("Parameters (-name value on the command line, name=value in etc/config, BKJS_NAME in the environment):\n\n");
    for p in registry {
        let default = if p.default.is_empty() {
            String::new()
        } else {
            format!(" (default: {})", p.default)
        };
        out.push_str(&format!(
            "  -{:<28} {:<10} {}{}\n",
            p.name,
            p.kind.name(),
            p.help,
            default
        ));
    }
    out
}

#[cfg(test)]
mod tests;
