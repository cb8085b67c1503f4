//! Path rules: which request paths the access parameters (`-api-allow`, `-api-deny-path`, ...)
//! match, compiled once into exact paths, literal prefixes and one regex set, and the path checks
//! routing and access share (dot segments, literal patterns).

use bkjs_base::config::Config;
use regex::RegexSet;

/// One automaton for all the patterns of some parameters: a path is tested once, not per pattern.
pub(crate) fn regex_set(cfg: &Config, params: &[&str]) -> PathRules {
    let mut exact: std::collections::HashSet<String, foldhash::fast::RandomState> =
        std::collections::HashSet::default();
    let mut prefixes = Vec::new();
    let mut patterns: Vec<&str> = Vec::new();
    for r in params.iter().flat_map(|p| cfg.regexps(p).iter()) {
        if let Some(path) = literal_path(r.as_str()) {
            exact.insert(path);
        } else if let Some(prefix) = literal_prefix(r.as_str()) {
            prefixes.push(prefix);
        } else {
            patterns.push(r.as_str());
        }
    }
    PathRules {
        exact,
        prefixes,
        // Every pattern already compiled on its own when the configuration was loaded.
        set: RegexSet::new(&patterns).expect("patterns validated by the config loader"),
    }
}

/// Whether a request path has a `.` or `..` segment, also percent-encoded (`%2e`) or behind an
/// encoded separator (`%2f`, `%5c`, a backslash). No route or file has one, so such a path can only be a
/// traversal attempt; without this check one whose segments no longer fit a route would answer
/// 404 rather than 400.
pub(crate) fn has_dot_segment(path: &str) -> bool {
    if !path.bytes().any(|b| b == b'.' || b == b'%') {
        return false;
    }
    // A plain path (`/js/bkjs.js`) is checked without copying it.
    if !path.bytes().any(|b| b == b'%' || b == b'\\') {
        return path.split('/').any(|seg| seg == "." || seg == "..");
    }
    let plain = path
        .to_ascii_lowercase()
        .replace("%2e", ".")
        .replace("%2f", "/")
        .replace("%5c", "/")
        .replace('\\', "/");
    plain.split('/').any(|seg| seg == "." || seg == "..")
}

/// `^/some/path$` with no other regexp syntax: the one path it matches.
pub(crate) fn literal_path(pattern: &str) -> Option<String> {
    let inner = pattern.strip_prefix('^')?.strip_suffix('$')?;
    let plain = inner.starts_with('/')
        && inner
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '_' | '-'));
    plain.then(|| inner.to_string())
}

/// `^/some/prefix` with no other regexp syntax: the prefix every matching path starts with.
pub(crate) fn literal_prefix(pattern: &str) -> Option<String> {
    let inner = pattern.strip_prefix('^')?;
    let plain = inner.starts_with('/')
        && inner
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '_' | '-'));
    plain.then(|| inner.to_string())
}

/// Path patterns: exact paths in a hash set (the common `^/ping$` kind), literal prefixes (the
/// common `^/system/cache/` kind) compared as strings, the rest in one regex set.
pub(crate) struct PathRules {
    exact: std::collections::HashSet<String, foldhash::fast::RandomState>,
    prefixes: Vec<String>,
    set: RegexSet,
}

impl PathRules {
    pub fn is_match(&self, path: &str) -> bool {
        self.exact.contains(path)
            || self.prefixes.iter().any(|p| path.starts_with(p.as_str()))
            || (!self.set.is_empty() && self.set.is_match(path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_patterns_skip_the_regex_set() {
        assert_eq!(literal_path("^/ping$").as_deref(), Some("/ping"));
        assert_eq!(literal_path("^/ping"), None);
        assert_eq!(
            literal_prefix("^/system/cache/").as_deref(),
            Some("/system/cache/")
        );
        assert_eq!(literal_prefix("^/public").as_deref(), Some("/public"));
        for not_literal in ["/public", "^/a.b", "^/a$", "^/(a|b)", "^/a+", r"\.(png)$"] {
            assert_eq!(literal_prefix(not_literal), None, "{not_literal}");
        }
        let rules = PathRules {
            exact: ["/ping".to_string()].into_iter().collect(),
            prefixes: vec!["/system/cache/".into()],
            set: RegexSet::new([r"\.png$"]).expect("regex"),
        };
        for (path, want) in [
            ("/ping", true),
            ("/pingx", false),
            ("/system/cache/get", true),
            ("/system/cachex", false),
            ("/x/a.png", true),
            ("/x/a.pngx", false),
        ] {
            assert_eq!(rules.is_match(path), want, "{path}");
        }
    }

    #[test]
    fn dot_segments_are_found_however_written() {
        for bad in [
            "/..",
            "/image/../../etc/passwd",
            "/image/pics/./1",
            "/image/pics/x/..",
            "/image/%2e%2e/x/1",
            "/image/%2E./x/1",
            "/image/..%2F..%2Fetc/x/1",
            "/image/pics/x/a%5c..%5cb",
            "/image/pics/x/a\\..\\b",
            "/file/./x",
        ] {
            assert!(has_dot_segment(bad), "{bad}");
        }
        for ok in [
            "/",
            "/ping",
            "/app.js",
            "/.well-known/acme-challenge/x",
            "/a..b/c",
            "/image/pics/x/1.jpg",
            "/image/pics/x/...",
            "/account/get%20x",
        ] {
            assert!(!has_dot_segment(ok), "{ok}");
        }
    }

    #[test]
    fn literal_patterns_become_exact_paths() {
        assert_eq!(literal_path("^/ping$").as_deref(), Some("/ping"));
        assert_eq!(literal_path("^/$").as_deref(), Some("/"));
        assert_eq!(
            literal_path("^/account/add$").as_deref(),
            Some("/account/add")
        );
        assert_eq!(literal_path("^/public"), None, "a prefix is a regexp");
        assert_eq!(literal_path("^/a.b$"), None, "a dot is a regexp");
        assert_eq!(literal_path(r"^/x\d$"), None);
        let rules = PathRules {
            exact: ["/ping".to_string()].into_iter().collect(),
            prefixes: Vec::new(),
            set: RegexSet::new([r"^/public"]).expect("set"),
        };
        assert!(rules.is_match("/ping"));
        assert!(!rules.is_match("/ping/x"));
        assert!(rules.is_match("/public/a"));
        assert!(!rules.is_match("/other"));
    }
}
