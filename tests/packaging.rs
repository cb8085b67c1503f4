//! The packaging files agree with each other and with the binary: every file the .deb lists
//! exists, its maintainer scripts parse and keep the debhelper hook, the systemd unit asks for
//! what the binary does (Type=notify with a watchdog, reload by SIGHUP, restart on failure,
//! hardening) and points where logrotate and the package expect, and the installed config is a
//! valid bkjs configuration. (The notify protocol and socket activation themselves are checked
//! against the real binary in tests/lifecycle.rs.)

use crate::harness::*;
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// `Key=value` lines of a unit file (last one wins).
fn unit_keys(text: &str) -> std::collections::HashMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

#[test]
fn deb_metadata_lists_files_that_exist() {
    let manifest: toml::Table = read("bkjs/Cargo.toml").parse().expect("bkjs/Cargo.toml");
    let deb = &manifest["package"]["metadata"]["deb"];
    let base = Path::new(env!("CARGO_MANIFEST_DIR"));
    let assets = deb["assets"].as_array().expect("assets");
    let mut targets = Vec::new();
    for a in assets {
        let a = a.as_array().expect("[source, target, mode]");
        let (src, dst) = (
            a[0].as_str().expect("source"),
            a[1].as_str().expect("target"),
        );
        if let Some(bin) = src.strip_prefix("target/release/") {
            assert!(["bkjs", "bksh"].contains(&bin), "{src}");
        } else {
            assert!(base.join(src).is_file(), "asset {src} does not exist");
        }
        let name = Path::new(src).file_name().expect("name");
        targets.push(if dst.ends_with('/') {
            format!("/{dst}{}", name.to_string_lossy())
        } else {
            format!("/{dst}")
        });
    }
    for c in deb["conf-files"].as_array().expect("conf-files") {
        let c = c.as_str().expect("path");
        assert!(
            targets.iter().any(|t| t == c),
            "conf-file {c} is not installed"
        );
    }
    for bin in [
        "/usr/bin/bkjs",
        "/usr/lib/bkjs/bkjs",
        "/usr/bin/bksh",
        "/etc/bkjs/config",
    ] {
        assert!(targets.iter().any(|t| t == bin), "{bin} not installed");
    }
    let scripts = base.join(deb["maintainer-scripts"].as_str().expect("scripts"));
    for s in ["postinst", "postrm"] {
        let path = scripts.join(s);
        let text = std::fs::read_to_string(&path).expect("script");
        assert!(text.contains("#DEBHELPER#"), "{s} keeps the debhelper hook");
        let check = std::process::Command::new("sh")
            .arg("-n")
            .arg(&path)
            .output()
            .expect("sh -n");
        assert!(
            check.status.success(),
            "{s}: {}",
            String::from_utf8_lossy(&check.stderr)
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).expect("mode").permissions().mode();
        assert!(mode & 0o111 != 0, "{s} is executable");
    }
    assert!(read("packaging/debian/postinst").contains("adduser --system"));
    let units = base.join(
        deb["systemd-units"]["unit-scripts"]
            .as_str()
            .expect("unit-scripts"),
    );
    assert!(units.join("bkjs.service").is_file() && units.join("bkjs.socket").is_file());
}

#[test]
fn units_and_logrotate_match_what_the_binary_does() {
    let service = unit_keys(&read("packaging/bkjs.service"));
    for (k, v) in [
        ("Type", "notify"),
        ("NotifyAccess", "all"),
        ("Restart", "on-failure"),
        ("KillMode", "mixed"),
        ("NoNewPrivileges", "true"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "true"),
        ("PrivateTmp", "true"),
    ] {
        assert_eq!(service.get(k).map(String::as_str), Some(v), "{k}");
    }
    let watchdog: u64 = service["WatchdogSec"]
        .parse()
        .expect("WatchdogSec in seconds");
    assert!(watchdog >= 10, "room for pings every WatchdogSec/2");
    assert!(service["ExecReload"].contains("-HUP"));
    let exec = &service["ExecStart"];
    assert!(
        exec.starts_with("/usr/bin/bkjs run-server") && !exec.contains("-daemon"),
        "{exec}"
    );
    assert!(exec.contains("-home /var/lib/bkjs") && exec.contains("-conf-file /etc/bkjs/config"));
    let socket = unit_keys(&read("packaging/bkjs.socket"));
    assert_eq!(
        socket.get("Service").map(String::as_str),
        Some("bkjs.service")
    );
    assert!(socket.contains_key("ListenStream"));
    let logrotate = read("packaging/logrotate");
    assert!(logrotate.contains("kill -USR1"), "reopen by SIGUSR1");
    assert!(
        logrotate.contains("/var/lib/bkjs/var/bkjs.pid"),
        "the pid file of -home /var/lib/bkjs"
    );
}

#[test]
fn the_packaged_config_is_valid() {
    // bksh loads it like the service would (command line -conf-file), and reports its values.
    let home = tempfile::tempdir().expect("home");
    let conf = repo().join("packaging/config");
    let out = bksh_script(
        &[
            "-home",
            home.path().to_str().expect("utf-8 temp path"),
            "-conf-file",
            conf.to_str().expect("utf-8 repo path"),
        ],
        "config uid\nconfig web-dir\n",
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        !stderr.contains("unknown"),
        "no unknown parameters: {stderr}"
    );
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        ["bkjs", "/usr/share/bkjs/web"]
    );
}
