//! `bkjs init-app`: the generated application crate builds against this repository (sharing the
//! workspace's target directory, so only the application and what its features change are
//! compiled), starts with its own `etc/config`, and serves its `test` table through
//! `/test/add` and `/test/{id}` next to the built-in routes. Its `test.cleanup` job, registered
//! with `App::job`, runs from the app's shell (`run-shell -run-job`) and from its master's
//! crontab (in a job worker).

use crate::harness::*;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// The workspace's target directory: BIN is `TARGET/debug/bkjs`.
fn target_dir() -> PathBuf {
    Path::new(BIN)
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .to_path_buf()
}

fn json_of(r: &Reply) -> Value {
    serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("{e}: {r:?}"))
}

#[test]
fn init_app_builds_and_serves_its_routes() {
    let home = tempfile::Builder::new()
        .prefix("bkjs-app")
        .tempdir()
        .expect("home");
    let dir = home.path().to_path_buf();
    let home_dir = dir.clone();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = std::process::Command::new(BIN)
        .arg("init-app")
        .arg(&dir)
        .args(["-name", "testapp", "-bkjs-path"])
        .arg(&repo)
        .output()
        .expect("bkjs init-app");
    assert!(
        out.status.success(),
        "init-app: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A second run refuses to overwrite it.
    let again = std::process::Command::new(BIN)
        .arg("init-app")
        .arg(&dir)
        .output()
        .expect("bkjs init-app");
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("not empty"));

    let build = std::process::Command::new(option_env!("CARGO").unwrap_or("cargo"))
        .arg("build")
        .arg("--manifest-path")
        .arg(dir.join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", target_dir())
        .output()
        .expect("cargo build");
    let log = String::from_utf8_lossy(&build.stderr);
    assert!(build.status.success(), "the generated app builds:\n{log}");
    assert!(
        !log.contains("warning"),
        "and builds without warnings:\n{log}"
    );
    let exe = target_dir().join("debug/testapp");
    let shell_exe = exe.clone();

    // The app's own etc/config opens /test/ and names the processes `testapp: ...`; the command
    // line keeps the harness's `bkjs: ...` titles so Tree finds the processes.
    let port = free_port();
    let t = Tree::spawn_in(home, port, "run-backend", &["-name", "bkjs"], move |cmd| {
        let args: Vec<std::ffi::OsString> = cmd.get_args().map(|a| a.to_owned()).collect();
        let args: Vec<String> = args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        *cmd = command_of(&exe, &dir, &args).0;
    });
    t.ready(2);
    let added = t.get("/test/add?name=first&id=t1");
    assert_eq!(added.status, 200, "{added:?}\n{}", t.log());
    let row = json_of(&added);
    assert_eq!(
        (row["id"].as_str(), row["name"].as_str()),
        (Some("t1"), Some("first"))
    );
    assert!(row["mtime"].as_i64().is_some_and(|m| m > 0), "{row}");
    let got = t.get("/test/t1");
    assert_eq!(got.status, 200);
    assert_eq!(json_of(&got), row);
    let generated = json_of(&t.get("/test/add?name=second"));
    let id = generated["id"].as_str().expect("generated id");
    assert_eq!(json_of(&t.get(&format!("/test/{id}")))["name"], "second");
    // Mistakes answer 4xx JSON and change nothing.
    let dup = t.get("/test/add?name=other&id=t1");
    assert_eq!(
        (dup.status, json_of(&dup)["status"].as_i64()),
        (409, Some(409))
    );
    assert_eq!(t.get("/test/add?id=t9").status, 400);
    let missing = t.get("/test/nope");
    assert_eq!(missing.status, 404);
    assert_eq!(json_of(&missing)["message"], "no test row nope");
    assert_eq!(json_of(&t.get("/test/t1"))["name"], "first");
    // The built-in routes are there too.
    assert_eq!(t.get("/ping").status, 200);
    // The app's job, run by its own shell: with age 0 every test row is older than now.
    let out = std::process::Command::new(&shell_exe)
        .arg("run-shell")
        .arg("-home")
        .arg(&home_dir)
        .args(["-run-job", "job", r#"{"test.cleanup":{"age":0}}"#])
        .env_remove("BKJS_HOME")
        .output()
        .expect("testapp run-shell -run-job");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("test.cleanup: deleted 2 rows"), "{stdout}");
    assert_eq!(t.get("/test/t1").status, 404, "the job deleted the rows");
    // The same App::job run by the app's master from etc/crontab (every second, age 0), in a
    // job worker; under run-backend the crontab edit is reloaded without a master restart.
    let master = t.pids("master");
    let added = t.get("/test/add?name=third&id=t3");
    assert_eq!(added.status, 200, "{added:?}");
    crate::jobs::write_crontab(
        &home_dir,
        r#"[{"type": "local", "cron": "* * * * * *", "job": {"test.cleanup": {"age": 0}}}]"#,
    );
    assert!(
        wait_for(std::time::Duration::from_secs(30), || t
            .get("/test/t3")
            .status
            == 404),
        "the master's cleanup job did not run\n{}",
        t.log()
    );
    let log = t.log();
    assert!(
        log.contains("job test.cleanup started in worker pid"),
        "run by a job worker of the master:\n{log}"
    );
    assert_eq!(t.pids("master"), master, "the master was not restarted");
}

#[test]
fn init_app_refuses_bad_names_and_paths() {
    let tmp = tempfile::tempdir().expect("tmp");
    let run = |args: &[&str]| {
        std::process::Command::new(BIN)
            .arg("init-app")
            .args(args)
            .output()
            .expect("bkjs init-app")
    };
    let dir = tmp.path().join("x").display().to_string();
    let out = run(&[&dir, "-name", "9lives"]);
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("-name \"9lives\""));
    let not_bkjs = tmp.path().display().to_string();
    let out = run(&[&dir, "-bkjs-path", &not_bkjs]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no bkjs crate there"));
    let out = run(&[]);
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("DIR is required"));
    assert!(!tmp.path().join("x").exists(), "nothing written");
}
