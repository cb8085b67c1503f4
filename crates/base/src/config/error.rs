//! The configuration loader's error type, in its own file so that the parsing rules
//! ([`super::parse`]) and the loader ([`super`]) can both name it without depending on each other.

use std::path::PathBuf;

/// What went wrong while loading configuration, and where.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The user gave a value that does not fit the parameter's type; retrying will not help.
    #[error("invalid value for -{name} ({source_name}): {reason}")]
    BadValue {
        name: String,
        source_name: String,
        reason: String,
    },
    /// The command line names a parameter that no module declares.
    #[error("unknown parameter -{0} on the command line (see `bkjs help`)")]
    Unknown(String),
    /// A word on the command line that is neither a parameter nor a value.
    #[error("unexpected word {0:?} on the command line: parameters are -name value")]
    Stray(String),
    /// A parameter that needs a value was last on the command line.
    #[error("parameter -{0} needs a value")]
    MissingValue(String),
    /// A config file exists but cannot be read.
    #[error("cannot read config file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}
