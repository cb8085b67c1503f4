//! `bkjs init-app DIR`: writes a new application crate that depends on bkjs, from the template
//! in `templates/app/` (compiled into the binary, so an installed `bkjs` can do it too): a `test`
//! table, the `/test/add` and `/test/{id}` routes, a `test.cleanup` job (registered with
//! `App::job`), a crontab sample and its own `etc/config`. It builds and serves with
//! `cargo run -- run-backend`.
//!
//! The bkjs dependency is a path (`-bkjs-path PATH`, by default the source tree this binary was
//! built from, when it is still there) or a crates.io version (`-bkjs-version V`). With a path,
//! the new crate starts from that tree's `Cargo.lock`, so it builds with the dependency versions
//! bkjs was tested with.

use std::path::{Path, PathBuf};

/// The template's files: path in the new crate, contents (`{{name}}` and `{{bkjs_dependency}}`
/// are replaced).
const FILES: &[(&str, &str)] = &[
    (
        "Cargo.toml",
        include_str!("../../../templates/app/Cargo.toml.in"),
    ),
    (
        "src/main.rs",
        include_str!("../../../templates/app/src/main.rs"),
    ),
    (
        "src/jobs.rs",
        include_str!("../../../templates/app/src/jobs.rs"),
    ),
    (
        "etc/config",
        include_str!("../../../templates/app/etc/config.in"),
    ),
    (
        "etc/crontab",
        include_str!("../../../templates/app/etc/crontab"),
    ),
    (
        "README.md",
        include_str!("../../../templates/app/README.md.in"),
    ),
    (
        ".gitignore",
        include_str!("../../../templates/app/gitignore"),
    ),
];

/// Why no application was written; each names what to change.
#[derive(Debug, thiserror::Error)]
pub(crate) enum InitError {
    #[error("usage: bkjs init-app DIR [-name NAME] [-bkjs-path PATH | -bkjs-version VERSION]{0}")]
    Usage(String),
    #[error("{0} exists and is not empty; choose a new directory")]
    NotEmpty(String),
    #[error("-name {0:?}: an application name is lower-case letters, digits, '-' and '_', starting with a letter")]
    BadName(String),
    #[error("-bkjs-path {0}: no bkjs crate there (expected a Cargo.toml with name = \"bkjs\" in it or in its crates/bkjs)")]
    NotBkjs(String),
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

/// What the command line asked for.
#[derive(Debug, PartialEq)]
struct Request {
    dir: PathBuf,
    name: Option<String>,
    path: Option<PathBuf>,
    version: Option<String>,
}

fn parse(words: &[String]) -> Result<Request, InitError> {
    let mut req = Request {
        dir: PathBuf::new(),
        name: None,
        path: None,
        version: None,
    };
    let mut dir = None;
    let mut it = words.iter();
    while let Some(w) = it.next() {
        let opt = w.trim_start_matches('-');
        if w.starts_with('-') {
            let value = it
                .next()
                .cloned()
                .ok_or_else(|| InitError::Usage(format!(": -{opt} needs a value")))?;
            match opt {
                "name" => req.name = Some(value),
                "bkjs-path" => req.path = Some(PathBuf::from(value)),
                "bkjs-version" => req.version = Some(value),
                _ => return Err(InitError::Usage(format!(": unknown option {w}"))),
            }
        } else if dir.is_none() {
            dir = Some(PathBuf::from(w));
        } else {
            return Err(InitError::Usage(format!(": unexpected {w:?}")));
        }
    }
    if req.path.is_some() && req.version.is_some() {
        return Err(InitError::Usage(
            ": give -bkjs-path or -bkjs-version, not both".into(),
        ));
    }
    req.dir = dir.ok_or_else(|| InitError::Usage(": DIR is required".into()))?;
    Ok(req)
}

/// A crate name from a directory name: lower case, other characters to `-`.
fn name_from(dir: &Path) -> String {
    let base = dir
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    base.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect::<String>()
        .trim_matches('-')
        .to_string()
}

fn valid_name(name: &str) -> bool {
    name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

/// The bkjs library crate in `dir`: `dir` itself, or `dir/crates/bkjs` when `dir` is a checkout
/// of the bkjs workspace.
fn bkjs_crate(dir: &Path) -> Option<PathBuf> {
    let is_bkjs = |d: &Path| {
        std::fs::read_to_string(d.join("Cargo.toml"))
            .map(|t| {
                t.lines()
                    .any(|l| l.trim().replace(' ', "") == "name=\"bkjs\"")
            })
            .unwrap_or(false)
    };
    [dir.to_path_buf(), dir.join("crates/bkjs")]
        .into_iter()
        .find(|d| is_bkjs(d))
}

/// The Cargo.lock of the workspace `dir` belongs to: in `dir` or the nearest folder above it.
fn lock_file(dir: &Path) -> Option<PathBuf> {
    dir.ancestors()
        .map(|d| d.join("Cargo.lock"))
        .find(|l| l.exists())
}

fn absolute(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| {
        std::env::current_dir()
            .map(|d| d.join(p))
            .unwrap_or_else(|_| p.to_path_buf())
    })
}

/// The `bkjs = ...` line and, for a path, the tree whose Cargo.lock to start from.
fn dependency(req: &Request) -> Result<(String, Option<PathBuf>), InitError> {
    let toml_str = |s: &str| format!("{s:?}");
    if let Some(v) = &req.version {
        return Ok((format!("bkjs = {}", toml_str(v)), None));
    }
    let path = match &req.path {
        Some(p) => {
            let p = absolute(p);
            bkjs_crate(&p).ok_or_else(|| InitError::NotBkjs(p.display().to_string()))?
        }
        None => {
            let built_from = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
            if bkjs_crate(&built_from).is_none() {
                return Ok((
                    format!("bkjs = {}", toml_str(env!("CARGO_PKG_VERSION"))),
                    None,
                ));
            }
            built_from
        }
    };
    Ok((
        format!(
            "bkjs = {{ path = {} }}",
            toml_str(&path.display().to_string())
        ),
        Some(path),
    ))
}

/// Writes the application; returns its directory and name.
fn create(req: &Request) -> Result<(PathBuf, String), InitError> {
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |source| InitError::Io { path, source }
    };
    let name = req.name.clone().unwrap_or_else(|| name_from(&req.dir));
    if !valid_name(&name) {
        return Err(InitError::BadName(name));
    }
    if let Ok(mut entries) = std::fs::read_dir(&req.dir) {
        if entries.next().is_some() {
            return Err(InitError::NotEmpty(req.dir.display().to_string()));
        }
    }
    let (dep, lock_from) = dependency(req)?;
    for (path, text) in FILES {
        let target = req.dir.join(path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        let text = text
            .replace("{{name}}", &name)
            .replace("{{bkjs_dependency}}", &dep);
        std::fs::write(&target, text).map_err(io(&target))?;
    }
    if let Some(lock) = lock_from.as_deref().and_then(lock_file) {
        let target = req.dir.join("Cargo.lock");
        std::fs::copy(&lock, &target).map_err(io(&target))?;
    }
    Ok((req.dir.clone(), name))
}

/// Runs `init-app` with the words after the command; returns the exit code.
pub(crate) fn command(words: &[String]) -> i32 {
    match parse(words).and_then(|r| create(&r)) {
        Ok((dir, name)) => {
            println!(
                "created application {name} in {d}\n  cd {d} && cargo run -- run-backend -home .\n  curl 'http://127.0.0.1:8000/test/add?name=first&id=1'",
                d = dir.display()
            );
            0
        }
        Err(e @ (InitError::Usage(_) | InitError::BadName(_))) => {
            eprintln!("bkjs init-app: {e}");
            bkjs_base::config::EXIT_USAGE
        }
        Err(e) => {
            eprintln!("bkjs init-app: {e}");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn parses_dir_and_options() {
        let r = parse(&w("/tmp/x -name app -bkjs-path /src")).expect("parse");
        assert_eq!(r.dir, PathBuf::from("/tmp/x"));
        assert_eq!(r.name.as_deref(), Some("app"));
        assert_eq!(r.path, Some(PathBuf::from("/src")));
        assert!(matches!(parse(&w("")), Err(InitError::Usage(_))));
        assert!(matches!(parse(&w("a b")), Err(InitError::Usage(_))));
        assert!(matches!(parse(&w("a -name")), Err(InitError::Usage(_))));
        assert!(matches!(parse(&w("a -frob 1")), Err(InitError::Usage(_))));
        assert!(matches!(
            parse(&w("a -bkjs-path x -bkjs-version 1")),
            Err(InitError::Usage(_))
        ));
    }

    #[test]
    fn names_come_from_the_directory() {
        assert_eq!(name_from(Path::new("/tmp/My App")), "my-app");
        assert!(valid_name("my-app2"));
        assert!(!valid_name("2app"));
        assert!(!valid_name(""));
    }

    #[test]
    fn writes_the_template_and_refuses_a_used_directory() {
        let tmp = tempfile::tempdir().expect("tmp");
        let dir = tmp.path().join("shop");
        let req = Request {
            dir: dir.clone(),
            name: None,
            path: Some(PathBuf::from(env!("CARGO_MANIFEST_DIR"))),
            version: None,
        };
        let (_, name) = create(&req).expect("create");
        assert_eq!(name, "shop");
        let toml = std::fs::read_to_string(dir.join("Cargo.toml")).expect("Cargo.toml");
        assert!(toml.contains("name = \"shop\""), "{toml}");
        assert!(toml.contains("bkjs = { path = \"/"), "{toml}");
        assert!(!toml.contains("{{"), "{toml}");
        assert!(
            dir.join("Cargo.lock").exists(),
            "lock copied from the bkjs tree"
        );
        let main = std::fs::read_to_string(dir.join("src/main.rs")).expect("main.rs");
        assert!(main.contains("\"/test/{id}\""));
        let crontab = std::fs::read_to_string(dir.join("etc/crontab")).expect("crontab");
        let v: serde_json::Value = serde_json::from_str(&crontab).expect("crontab is JSON");
        assert_eq!(v[0]["job"]["test.cleanup"]["age"], 86400000);
        assert!(matches!(create(&req), Err(InitError::NotEmpty(_))));
        let bad = Request {
            dir: tmp.path().join("other"),
            name: None,
            path: Some(tmp.path().to_path_buf()),
            version: None,
        };
        assert!(matches!(create(&bad), Err(InitError::NotBkjs(_))));
        let versioned = Request {
            dir: tmp.path().join("v"),
            name: Some("v-app".into()),
            path: None,
            version: Some("0.1".into()),
        };
        create(&versioned).expect("create");
        let toml = std::fs::read_to_string(tmp.path().join("v/Cargo.toml")).expect("toml");
        assert!(toml.contains("bkjs = \"0.1\""), "{toml}");
        assert!(!tmp.path().join("v/Cargo.lock").exists());
    }
}
