//! The parameter registry: what a parameter is, and the core parameters that belong to no module.
//! Each crate keeps its own `PARAMS` slices next to the code that reads them; the application
//! gathers them with [`registry`] (the stock set is `bkjs::app::params`), so no lower crate knows an
//! upper one.

/// The type of a parameter, which decides how its text is parsed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    Bool,
    /// An integer within `min..=max`.
    Int {
        min: i64,
        max: i64,
    },
    Number,
    String,
    /// One of the listed words.
    Enum(&'static [&'static str]),
    /// Items separated by `,` or `|`.
    List,
    /// `a:1,b:2`.
    Map,
    /// One or more regular expressions; each value adds one pattern.
    Regexp,
    Json,
    /// A path, relative to the home directory.
    Path,
    /// `30s`, `5m`, `14d`, or a plain number of milliseconds.
    Duration,
    /// Bytes, with an optional K, M or G suffix (`10MB`).
    Size,
}

impl Kind {
    /// The name shown by `bkjs help`.
    pub fn name(&self) -> &'static str {
        match self {
            Kind::Bool => "bool",
            Kind::Int { .. } => "int",
            Kind::Number => "number",
            Kind::String => "string",
            Kind::Enum(_) => "enum",
            Kind::List => "list",
            Kind::Map => "map",
            Kind::Regexp => "regexp",
            Kind::Json => "json",
            Kind::Path => "path",
            Kind::Duration => "duration",
            Kind::Size => "size",
        }
    }
}

/// One declared parameter.
#[derive(Debug)]
pub struct Param {
    /// Full name with module prefix, without the leading dash.
    pub name: &'static str,
    pub kind: Kind,
    /// Default as text, parsed like any other value; empty for none.
    pub default: &'static str,
    pub help: &'static str,
    /// Repeated values add to the list instead of replacing it.
    pub accumulate: bool,
}

impl Param {
    /// A parameter whose repeated values replace each other.
    pub const fn new(
        name: &'static str,
        kind: Kind,
        default: &'static str,
        help: &'static str,
    ) -> Param {
        Param {
            name,
            kind,
            default,
            help,
            accumulate: false,
        }
    }

    /// A list or regexp parameter whose repeated values accumulate.
    pub const fn accumulating(
        name: &'static str,
        kind: Kind,
        default: &'static str,
        help: &'static str,
    ) -> Param {
        Param {
            name,
            kind,
            default,
            help,
            accumulate: true,
        }
    }
}

const PORT: Kind = Kind::Int { min: 0, max: 65535 };

/// Core parameters: no module prefix.
pub static CORE: &[Param] = &[
    Param::new(
        "home",
        Kind::Path,
        "",
        "home directory; else $BKJS_HOME, else ~/.bkjs",
    ),
    Param::new(
        "conf-file",
        Kind::Path,
        "",
        "main config file, default etc/config; its .local sibling is read after it",
    ),
    Param::new(
        "etc-dir",
        Kind::Path,
        "etc",
        "directory of config and crontab",
    ),
    Param::new(
        "var-dir",
        Kind::Path,
        "var",
        "runtime state: pid file, IPC sockets, database",
    ),
    Param::new("log-dir", Kind::Path, "log", "log files of the daemon"),
    Param::new("tmp-dir", Kind::Path, "tmp", "temporary files"),
    Param::new(
        "images-dir",
        Kind::Path,
        "images",
        "stored icons and images",
    ),
    Param::new("files-dir", Kind::Path, "files", "stored files"),
    Param::new(
        "web-dir",
        Kind::Path,
        "web",
        "static files and the web console",
    ),
    Param::new(
        "name",
        Kind::String,
        "bkjs",
        "application name, the prefix of process titles",
    ),
    Param::new("port", PORT, "8000", "HTTP port"),
    Param::new(
        "bind",
        Kind::String,
        "0.0.0.0",
        "address the HTTP socket binds to",
    ),
    Param::new(
        "backlog",
        Kind::Int { min: 1, max: 65535 },
        "511",
        "listen backlog of the HTTP socket",
    ),
    Param::new(
        "timeout",
        Kind::Duration,
        "30s",
        "idle timeout of an HTTP connection",
    ),
    Param::new(
        "ssl-port",
        PORT,
        "443",
        "HTTPS port, used only when ssl-cert and ssl-key are set",
    ),
    Param::new("ssl-cert", Kind::Path, "", "HTTPS certificate file (PEM)"),
    Param::new("ssl-key", Kind::Path, "", "HTTPS private key file (PEM)"),
    Param::new(
        "proxy-port",
        PORT,
        "0",
        "when set, the server proxies to web workers listening on 127.0.0.1 ports N, N+1, ...",
    ),
    Param::new(
        "uid",
        Kind::String,
        "",
        "user name or id web and job workers switch to after binding",
    ),
    Param::new(
        "gid",
        Kind::String,
        "",
        "group name or id web and job workers switch to after binding",
    ),
    Param::new("umask", Kind::String, "0002", "file creation mask (octal)"),
    Param::new(
        "redis-host",
        Kind::String,
        "127.0.0.1:6379",
        "Redis server (host:port or redis:// URL) that the Redis cache and pub/sub backends use",
    ),
    Param::new(
        "no-web",
        Kind::Bool,
        "false",
        "the master does not start the web server",
    ),
    Param::new(
        "watch-dirs",
        Kind::List,
        "",
        "extra directories watched by run-backend; a change restarts the children",
    ),
    Param::new(
        "watch-interval",
        Kind::Duration,
        "1s",
        "how often run-backend and the server look for changed files (the debounce)",
    ),
];

/// The core and logging parameters followed by every slice in `groups`: the registry a process
/// loads its configuration with.
pub fn registry(groups: &[&'static [Param]]) -> Vec<&'static Param> {
    CORE.iter()
        .chain(crate::log::PARAMS)
        .chain(groups.iter().flat_map(|g| g.iter()))
        .collect()
}
