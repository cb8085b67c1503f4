//! What a parameter is: its [`Kind`] and its declaration, [`Param`]. In its own file so that the
//! parsing rules ([`super::parse`]) can use them without depending on the registry of core
//! parameters, which gathers the logging parameters and so depends on [`crate::log`].

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

    /// This (list or regexp) parameter with repeated values accumulating:
    /// `Param::new(...).accumulating()`.
    pub const fn accumulating(self) -> Param {
        Param {
            accumulate: true,
            ..self
        }
    }
}
