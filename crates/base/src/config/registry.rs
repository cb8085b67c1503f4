//! The parameter registry: the core parameters that belong to no module, and [`registry`].
//! Each crate keeps its own `PARAMS` slices next to the code that reads them; the application
//! gathers them with [`registry`] (the stock set is `bkjs::app::params`), so no lower crate knows an
//! upper one.

use super::param::{Kind, Param};

const PORT: Kind = Kind::Int { min: 0, max: 65535 };

/// Other names accepted for a parameter, as `(alias, name)`: the reference platform's
/// `-config-file` is `-conf-file` here. Resolved wherever a name is read (command line, config
/// files, `BKJS_*` environment), so the rest of the code sees only the registered name.
pub(crate) static ALIASES: &[(&str, &str)] = &[("config-file", "conf-file")];

/// The registered name for `name` (itself unless it is an alias).
pub(crate) fn canonical(name: &str) -> &str {
    ALIASES
        .iter()
        .find(|(alias, _)| *alias == name)
        .map_or(name, |(_, real)| real)
}

/// Core parameters: no module prefix.
pub(crate) static CORE: &[Param] = &[
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
        "main config file, default etc/config; its .local sibling is read after it (also -config-file)",
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
        "ssl-ca",
        Kind::Path,
        "",
        "when set, HTTPS clients must present a certificate signed by a CA of this PEM file",
    ),
    Param::new(
        "ssl-redirect",
        Kind::Bool,
        "false",
        "with HTTPS on, every plain HTTP request is answered 301 to the same URL on -ssl-port",
    ),
    Param::new(
        "ssl-hsts",
        Kind::Duration,
        "0s",
        "max-age of the Strict-Transport-Security header on HTTPS replies; 0 sends none",
    ),
    Param::new(
        "ssl-handshake-timeout",
        Kind::Duration,
        "10s",
        "longest a client may take to finish the TLS handshake of a new HTTPS connection (at most -timeout); slower ones are closed",
    ),
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
