use super::*;

fn words(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_string).collect()
}

fn home() -> tempfile_dir::Dir {
    tempfile_dir::Dir::new()
}

/// A tiny temp directory for these unit tests (the library has no tempfile dependency).
mod tempfile_dir {
    pub struct Dir(pub std::path::PathBuf);
    impl Dir {
        pub fn new() -> Dir {
            use std::sync::atomic::{AtomicUsize, Ordering};
            static N: AtomicUsize = AtomicUsize::new(0);
            let p = std::env::temp_dir().join(format!(
                "bkjs-config-test-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::SeqCst)
            ));
            std::fs::create_dir_all(p.join("etc")).expect("create temp dir");
            Dir(p)
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// Parameters of upper crates that these tests load, as those crates declare them.
static TEST_PARAMS: &[Param] = &[
    Param::new("api-allow", Kind::Regexp, "^/ping$", "test"),
    Param::new("api-allow-path", Kind::Regexp, "", "test").accumulating(),
    Param::new("api-upload-limit", Kind::Size, "10MB", "test"),
    Param::new("server-drain-timeout", Kind::Duration, "30s", "test"),
];

fn load(dir: &tempfile_dir::Dir, cmd: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let reg = registry(&[TEST_PARAMS]);
    let mut w = words(cmd);
    w.push("-home".into());
    w.push(dir.0.display().to_string());
    let args = Args::parse(&w, &reg)?;
    let env: HashMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Config::load(&reg, &args, &env)
}

#[test]
fn defaults_are_typed() {
    let d = home();
    let c = load(&d, "", &[]).expect("load");
    assert_eq!(c.int("port"), 8000);
    assert_eq!(c.str("bind"), "0.0.0.0");
    assert_eq!(c.duration("timeout"), Duration::from_secs(30));
    assert_eq!(c.int("api-upload-limit"), 10 * 1024 * 1024);
    assert!(!c.regexps("api-allow").is_empty());
}

#[test]
fn precedence_file_local_env_cmdline() {
    let d = home();
    std::fs::write(
        d.0.join("etc/config"),
        "# comment\nport=1001\nbind=1.1.1.1\nname=f\nbackl=3\n",
    )
    .expect("write");
    std::fs::write(d.0.join("etc/config.local"), "port=1002\nbind=2.2.2.2\n").expect("write");
    let c = load(&d, "", &[]).expect("load");
    assert_eq!(c.int("port"), 1002);
    assert_eq!(c.str("name"), "f");
    assert_eq!(
        c.warnings.len(),
        1,
        "unknown name in a file is a warning: {:?}",
        c.warnings
    );
    let c = load(&d, "", &[("BKJS_PORT", "1003")]).expect("load");
    assert_eq!(c.int("port"), 1003);
    assert_eq!(c.str("bind"), "2.2.2.2");
    let c = load(&d, "-port 1004", &[("BKJS_PORT", "1003")]).expect("load");
    assert_eq!(c.int("port"), 1004);
    let c = load(&d, "--port=1005 --bind 3.3.3.3", &[]).expect("load");
    assert_eq!(c.int("port"), 1005);
    assert_eq!(c.str("bind"), "3.3.3.3");
}

#[test]
fn bad_values_name_the_parameter() {
    let d = home();
    let e = load(&d, "-port 70000", &[]).expect_err("out of range");
    assert!(e.to_string().contains("-port"), "{e}");
    let e = load(&d, "-server-drain-timeout soon", &[]).expect_err("bad duration");
    assert!(e.to_string().contains("-server-drain-timeout"), "{e}");
    let e = load(&d, "-no-such-thing 1", &[]).expect_err("unknown");
    assert!(e.to_string().contains("-no-such-thing"), "{e}");
    let e = load(&d, "-api-allow-path (", &[]).expect_err("bad regexp");
    assert!(e.to_string().contains("api-allow-path"), "{e}");
    let e = load(&d, "-port", &[]).expect_err("missing value");
    assert!(e.to_string().contains("-port"), "{e}");
    std::fs::write(d.0.join("etc/config"), "port=abc\n").expect("write");
    let e = load(&d, "", &[]).expect_err("bad value in file");
    assert!(e.to_string().contains("config:1"), "{e}");
}

#[test]
fn flags_roles_and_lists() {
    let d = home();
    std::fs::write(d.0.join("etc/config"), "debug\napi-allow-path=^/a$\n").expect("write");
    let c = load(
        &d,
        "-web -api-allow-path ^/b$ -syslog 0 -watch-dirs x,y|z",
        &[],
    )
    .expect("load");
    assert!(c.bool("debug"));
    assert!(!c.bool("syslog"));
    assert!(c.args.has_role("web"));
    let pats: Vec<&str> = c
        .regexps("api-allow-path")
        .iter()
        .map(|r| r.as_str())
        .collect();
    assert_eq!(pats, ["^/a$", "^/b$"], "accumulating list keeps both");
    assert_eq!(c.list("watch-dirs"), ["x", "y", "z"]);
}

#[test]
fn sizes_and_durations() {
    assert_eq!(parse_size("10MB"), Ok(10 * 1024 * 1024));
    assert_eq!(parse_size("64k"), Ok(64 * 1024));
    assert_eq!(parse_size("12"), Ok(12));
    assert!(parse_size("-1").is_err());
    assert!(parse_size("lots").is_err());
    assert_eq!(parse_duration("1500"), Ok(Duration::from_millis(1500)));
    assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
    assert_eq!(parse_duration("14d"), Ok(Duration::from_secs(14 * 86400)));
    assert!(parse_duration("x").is_err());
}

#[test]
fn config_file_is_an_alias_of_conf_file() {
    let d = home();
    std::fs::write(d.0.join("other.conf"), "port=2001\n").expect("write");
    std::fs::write(d.0.join("other.conf.local"), "bind=4.4.4.4\n").expect("write");
    std::fs::write(d.0.join("etc/config"), "port=2000\n").expect("write");
    for cmd in [
        "-config-file other.conf",
        "--config-file=other.conf",
        "-conf-file other.conf",
    ] {
        let c = load(&d, cmd, &[]).expect("load");
        assert_eq!(c.int("port"), 2001, "{cmd}");
        assert_eq!(c.str("bind"), "4.4.4.4", "{cmd}");
        assert_eq!(c.str("conf-file"), "other.conf", "{cmd}");
        assert_eq!(c.files()[0], d.0.join("other.conf"), "{cmd}");
    }
    let c = load(&d, "", &[("BKJS_CONFIG_FILE", "other.conf")]).expect("load");
    assert_eq!(c.int("port"), 2001);
    // Without it, etc/config as before.
    assert_eq!(load(&d, "", &[]).expect("load").int("port"), 2000);
}
