//! Configuration through the real binary: precedence file < local < environment < command line,
//! exit code 64 naming the bad parameter, and `bkjs help`.

use crate::harness::*;
use std::process::Command;

fn bksh_config(home: &std::path::Path, name: &str, args: &[&str], env: &[(&str, &str)]) -> String {
    use std::io::Write;
    let mut cmd = Command::new(BKSH);
    cmd.arg("-home")
        .arg(home)
        .args(args)
        .env_remove("BKJS_HOME");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("bksh");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(format!("config {name}\n").as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("bksh output");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn precedence_file_local_env_command_line() {
    let home = tempfile::tempdir().expect("home");
    let etc = home.path().join("etc");
    std::fs::create_dir_all(&etc).expect("etc");
    std::fs::write(etc.join("config"), "port=1001\nname=fromfile\n").expect("config");
    assert_eq!(bksh_config(home.path(), "port", &[], &[]), "1001");
    std::fs::write(etc.join("config.local"), "port=1002\n").expect("local");
    assert_eq!(bksh_config(home.path(), "port", &[], &[]), "1002");
    assert_eq!(
        bksh_config(home.path(), "port", &[], &[("BKJS_PORT", "1003")]),
        "1003"
    );
    assert_eq!(
        bksh_config(
            home.path(),
            "port",
            &["-port", "1004"],
            &[("BKJS_PORT", "1003")]
        ),
        "1004"
    );
    assert_eq!(
        bksh_config(home.path(), "name", &["-port", "1004"], &[]),
        "fromfile"
    );
}

/// `-config-file` is the reference platform's name of the config file option (`-conf-file` stays
/// an alias): the named file replaces `etc/config`, and its `.local` sibling is read after it.
#[test]
fn config_file_names_the_config_file_and_its_local_sibling() {
    let home = tempfile::tempdir().expect("home");
    let etc = home.path().join("etc");
    std::fs::create_dir_all(&etc).expect("etc");
    std::fs::write(etc.join("config"), "port=1001\nname=default-file\n").expect("config");
    let other = home.path().join("other.conf");
    std::fs::write(&other, "port=1011\nname=other-file\n").expect("other");
    std::fs::write(home.path().join("other.conf.local"), "port=1012\n").expect("other local");
    let path = other.display().to_string();
    let long = format!("--config-file={path}");
    for args in [
        vec!["-config-file", path.as_str()],
        vec![long.as_str()],
        vec!["-conf-file", path.as_str()],
    ] {
        assert_eq!(
            bksh_config(home.path(), "port", &args, &[]),
            "1012",
            "{args:?}"
        );
        assert_eq!(
            bksh_config(home.path(), "name", &args, &[]),
            "other-file",
            "{args:?}: etc/config must not be read"
        );
    }
    // Without the option, etc/config.
    assert_eq!(bksh_config(home.path(), "name", &[], &[]), "default-file");
}

/// The server itself takes its configuration from `-config-file`: the file turns the built-in
/// console off, which a request sees.
#[test]
fn the_server_reads_the_file_named_by_config_file() {
    let home = tempfile::Builder::new()
        .prefix("bkjs-t")
        .tempdir()
        .expect("home");
    let file = home.path().join("site.conf");
    std::fs::write(&file, "api-console=false\n").expect("site.conf");
    let path = file.display().to_string();
    let t = Tree::spawn_in(home, free_port(), "run", &["-config-file", &path], |_| {});
    t.ready(2);
    assert_eq!(t.get("/api.html").status, 404, "{}", t.log());
    let home = tempfile::Builder::new()
        .prefix("bkjs-t")
        .tempdir()
        .expect("home");
    let t = Tree::spawn_in(home, free_port(), "run", &[], |_| {});
    t.ready(2);
    assert_eq!(t.get("/api.html").status, 200, "{}", t.log());
}

#[test]
fn the_server_listens_where_the_command_line_says() {
    let home = tempfile::Builder::new()
        .prefix("bkjs-t")
        .tempdir()
        .expect("home");
    let etc = home.path().join("etc");
    std::fs::create_dir_all(&etc).expect("etc");
    let wrong = free_port();
    std::fs::write(etc.join("config"), format!("port={wrong}\n")).expect("config");
    std::fs::write(etc.join("config.local"), format!("port={wrong}\n")).expect("local");
    let port = free_port();
    let t = Tree::spawn_in(home, port, "run", &[], |c| {
        c.env("BKJS_PORT", wrong.to_string());
    });
    t.ready(2);
}

#[test]
fn bad_values_exit_64_naming_the_parameter() {
    let home = tempfile::tempdir().expect("home");
    let h = home.path().display().to_string();
    for (args, name) in [
        (vec!["run", "-port", "abc"], "-port"),
        (
            vec!["run", "-server-web-workers", "-3"],
            "-server-web-workers",
        ),
        (
            vec!["run", "-server-drain-timeout", "later"],
            "-server-drain-timeout",
        ),
        (vec!["run", "-no-such-param", "1"], "-no-such-param"),
        (vec!["run-server", "-log", "loud"], "-log"),
    ] {
        let out = Command::new(BIN)
            .args(&args)
            .args(["-home", &h])
            .output()
            .expect("run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {err}");
        assert!(
            err.contains(name),
            "{args:?}: error does not name {name}: {err}"
        );
    }
    std::fs::create_dir_all(home.path().join("etc")).expect("etc");
    std::fs::write(home.path().join("etc/config"), "port=99999\n").expect("config");
    let out = Command::new(BIN)
        .args(["run", "-home", &h])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("-port"));
}

#[test]
fn help_lists_every_parameter() {
    let out = Command::new(BIN).arg("help").output().expect("help");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for name in [
        "-port",
        "-server-web-workers",
        "-api-allow-path",
        "-ipc-timeout",
        "-log-file",
        "-proxy-port",
    ] {
        assert!(text.contains(name), "help misses {name}");
    }
}

#[test]
fn sample_config_mentions_every_parameter() {
    let sample = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../etc/config"))
        .expect("etc/config");
    let out = Command::new(BIN).arg("help").output().expect("help");
    let text = String::from_utf8_lossy(&out.stdout);
    let names: Vec<&str> = text
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix('-'))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(names.len() > 20, "{names:?}");
    for n in names {
        assert!(
            sample.contains(&format!("#{n}=")) || sample.contains(&format!("\n{n}=")),
            "etc/config does not mention {n}"
        );
    }
}
