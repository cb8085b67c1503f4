//! Logging: `tracing` events written as one line each to stderr (the default), a file (`-log-file`,
//! reopened on SIGUSR1 so logrotate can move it) or syslog (`-syslog`, facility local0). Every line
//! names the process role and pid, so the interleaved output of a whole process tree stays readable.

use crate::config::{Config, Kind, Param};
use parking_lot::Mutex;
use std::io::Write;
use std::path::PathBuf;
use std::sync::OnceLock;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;

const LEVELS: &[&str] = &["none", "error", "warn", "info", "debug", "trace"];

/// Logging parameters.
pub static PARAMS: &[Param] = &[
    Param::new("log", Kind::Enum(LEVELS), "info", "log level"),
    Param::new(
        "debug",
        Kind::Bool,
        "false",
        "log at debug level (same as -log debug)",
    ),
    Param::new(
        "log-file",
        Kind::Path,
        "",
        "write the log to this file instead of stderr; reopened on SIGUSR1",
    ),
    Param::new(
        "syslog",
        Kind::Bool,
        "false",
        "write the log to syslog (facility local0)",
    ),
];

enum Target {
    Stderr,
    File { path: PathBuf, file: std::fs::File },
    Syslog(syslog::Logger<syslog::LoggerBackend, syslog::Formatter3164>),
}

static TARGET: OnceLock<Mutex<Target>> = OnceLock::new();
static ROLE: OnceLock<String> = OnceLock::new();

/// Errors setting up a log sink; the process can still log to stderr.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("cannot open log file {path}: {source}")]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot connect to syslog: {0}")]
    Syslog(String),
}

fn open_file(path: &PathBuf) -> Result<std::fs::File, LogError> {
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|source| LogError::File {
            path: path.clone(),
            source,
        })
}

/// Installs the global subscriber for a process of `role`. When the configured sink cannot be
/// opened, logging goes to stderr and the error is returned for the caller to report.
pub fn init(cfg: &Config, role: &str) -> Result<(), LogError> {
    let _ = ROLE.set(role.to_string());
    let level = if cfg.bool("debug") {
        "debug"
    } else {
        cfg.str("log")
    };
    let mut failure = None;
    let target = if cfg.bool("syslog") {
        let fmt = syslog::Formatter3164 {
            facility: syslog::Facility::LOG_LOCAL0,
            hostname: None,
            process: cfg.str("name").to_string(),
            pid: std::process::id(),
        };
        match syslog::unix(fmt) {
            Ok(l) => Target::Syslog(l),
            Err(e) => {
                failure = Some(LogError::Syslog(e.to_string()));
                Target::Stderr
            }
        }
    } else if let Some(path) = cfg.path("log-file") {
        match open_file(&path) {
            Ok(file) => Target::File { path, file },
            Err(e) => {
                failure = Some(e);
                Target::Stderr
            }
        }
    } else {
        Target::Stderr
    };
    let _ = TARGET.set(Mutex::new(target));
    let filter = match level {
        "none" => tracing_subscriber::filter::LevelFilter::OFF,
        l => l
            .parse()
            .unwrap_or(tracing_subscriber::filter::LevelFilter::INFO),
    };
    let _ = tracing_subscriber::fmt()
        .with_max_level(filter)
        .event_format(Line)
        .with_writer(Sink)
        .try_init();
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Reopens the log file (after logrotate moved it); a no-op for stderr and syslog.
pub fn reopen() {
    let Some(target) = TARGET.get() else { return };
    let mut t = target.lock();
    if let Target::File { path, file } = &mut *t {
        match open_file(path) {
            Ok(f) => *file = f,
            Err(e) => eprintln!("{e}"),
        }
    }
}

/// One line: `time LEVEL role[pid]: message fields`.
struct Line;

impl<S, N> FormatEvent<S, N> for Line
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let now = humantime::format_rfc3339_millis(std::time::SystemTime::now());
        let role = ROLE.get().map(String::as_str).unwrap_or("bkjs");
        write!(
            w,
            "{now} {:>5} {role}[{}]: ",
            event.metadata().level(),
            std::process::id()
        )?;
        ctx.field_format().format_fields(w.by_ref(), event)?;
        writeln!(w)
    }
}

struct Sink;

/// Collects one formatted event and hands it to the target in one write when dropped.
struct SinkWriter {
    level: Level,
    buf: Vec<u8>,
}

impl Write for SinkWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for SinkWriter {
    fn drop(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let Some(target) = TARGET.get() else {
            let _ = std::io::stderr().write_all(&self.buf);
            return;
        };
        let mut t = target.lock();
        match &mut *t {
            Target::Stderr => {
                let _ = std::io::stderr().write_all(&self.buf);
            }
            Target::File { file, .. } => {
                let _ = file.write_all(&self.buf);
            }
            Target::Syslog(logger) => {
                let text = String::from_utf8_lossy(&self.buf);
                // Syslog adds its own time and pid; keep the role and the message.
                let msg = text
                    .split_once(' ')
                    .map(|(_, rest)| rest)
                    .unwrap_or(&text)
                    .trim_end()
                    .to_string();
                let _ = match self.level {
                    Level::ERROR => logger.err(msg),
                    Level::WARN => logger.warning(msg),
                    Level::INFO => logger.info(msg),
                    _ => logger.debug(msg),
                };
            }
        }
    }
}

impl<'a> MakeWriter<'a> for Sink {
    type Writer = SinkWriter;
    fn make_writer(&'a self) -> SinkWriter {
        SinkWriter {
            level: Level::INFO,
            buf: Vec::with_capacity(128),
        }
    }
    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> SinkWriter {
        SinkWriter {
            level: *meta.level(),
            buf: Vec::with_capacity(128),
        }
    }
}
