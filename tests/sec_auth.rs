//! Credentials under attack (issue 17, items 8, 10, 11, 15, 16), against the real binary: CSRF
//! with the session cookie, replayed signatures, revoked sessions, secrets in answers and at
//! rest, and whether a login's existence shows. See docs/security.md.

use crate::api::{add_account, add_admin, host, now_ms, py_sign, send, signed, Call};
use crate::harness::*;
use serde_json::{json, Value};

/// A session cookie (`bk_sid=...` pair and the whole Set-Cookie line) for `login`.
fn session(t: &Tree, login: &str, secret: &str, headers: &[(&str, &str)]) -> (String, String) {
    let c = Call::get(3, login, secret, "/account/get?_session=1");
    let sig = py_sign(&c, &host(t));
    let mut all = vec![("bk-signature", sig.as_str())];
    all.extend_from_slice(headers);
    let (s, v, cookies) = send(t, "GET", c.target, &all, None, b"");
    assert_eq!(s, 200, "{v}");
    let line = cookies
        .iter()
        .find(|c| c.starts_with("bk_sid="))
        .expect("bk_sid cookie")
        .clone();
    (line.split(';').next().expect("pair").to_string(), line)
}

fn alias(t: &Tree, login: &str, secret: &str) -> Value {
    let (s, v) = signed(t, &Call::get(3, login, secret, "/account/get"));
    assert_eq!(s, 200, "{v}");
    v["alias"].clone()
}

/// CSRF: with the cookie, a write is a POST from the server's own origin or one of
/// `-api-origins`; reads stay open to the cookie; signed requests are unaffected.
#[test]
fn cookie_writes_need_a_post_from_an_allowed_origin() {
    let t = Tree::start("run", &["-api-origins", "https://app.example"]);
    t.ready(2);
    add_account(&t, "cs", "cs1", "C");
    let (pair, line) = session(&t, "cs", "cs1", &[]);
    assert!(line.contains("HttpOnly"), "{line}");
    assert!(line.contains("SameSite=Strict"), "{line}");
    assert!(
        !line.contains("Secure"),
        "plain HTTP: no Secure flag: {line}"
    );
    let (_, tls_line) = session(&t, "cs", "cs1", &[("x-forwarded-proto", "https")]);
    assert!(tls_line.contains("; Secure"), "{tls_line}");

    let cookie = ("cookie", pair.as_str());
    let own = format!("http://{}", host(&t));
    let refused = [
        ("GET", vec![cookie, ("origin", own.as_str())], "a GET write"),
        ("POST", vec![cookie], "no Origin nor Referer"),
        (
            "POST",
            vec![cookie, ("origin", "https://evil.example")],
            "a foreign origin",
        ),
        (
            "POST",
            vec![cookie, ("referer", "https://evil.example/page")],
            "a foreign referer",
        ),
        ("POST", vec![cookie, ("origin", "null")], "an opaque origin"),
    ];
    for (method, headers, why) in &refused {
        let (s, v, _) = send(&t, method, "/account/update?alias=Evil", headers, None, b"");
        assert_eq!(s, 403, "{why}: {v}");
        assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    }
    assert_eq!(alias(&t, "cs", "cs1"), json!("C"), "nothing was written");

    // Reads need no origin.
    let (s, v, _) = send(&t, "GET", "/account/get", &[cookie], None, b"");
    assert_eq!(s, 200, "{v}");
    // The server's own origin, a listed origin and a same-origin Referer may write.
    let referer = format!("{own}/console.html");
    let allowed = [
        ("origin", own.as_str(), "Own"),
        ("origin", "https://app.example", "Listed"),
        ("referer", referer.as_str(), "Referred"),
    ];
    for (name, value, new_alias) in allowed {
        let target = format!("/account/update?alias={new_alias}");
        let (s, v, _) = send(&t, "POST", &target, &[cookie, (name, value)], None, b"");
        assert_eq!(s, 200, "{name}: {value}: {v}");
        assert_eq!(alias(&t, "cs", "cs1"), json!(new_alias));
    }
    // A signed GET write is still what backendjs clients send.
    let (s, v) = signed(
        &t,
        &Call::get(3, "cs", "cs1", "/account/update?alias=Signed"),
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(alias(&t, "cs", "cs1"), json!("Signed"));
}

/// A signed write is accepted once; a signed read may repeat until it expires; signatures may
/// not live longer than -api-max-expire (10 minutes by default).
#[test]
fn signed_writes_cannot_be_replayed_and_expiry_is_short() {
    let t = Tree::start("run", &[]);
    t.ready(2);
    add_account(&t, "rp", "rp1", "R");
    let write = Call::get(3, "rp", "rp1", "/account/update?alias=Once");
    let sig = py_sign(&write, &host(&t));
    let (s, v, _) = send(
        &t,
        "GET",
        write.target,
        &[("bk-signature", &sig)],
        None,
        b"",
    );
    assert_eq!(s, 200, "{v}");
    // The same signature again: refused, on whichever worker it lands.
    for _ in 0..4 {
        let (s, v, _) = send(
            &t,
            "GET",
            write.target,
            &[("bk-signature", &sig)],
            None,
            b"",
        );
        assert_eq!(s, 401, "{v}");
        assert!(
            v["message"]
                .as_str()
                .is_some_and(|m| m.contains("already used")),
            "{v}"
        );
    }
    // A read may be sent again.
    let read = Call::get(3, "rp", "rp1", "/account/get");
    let sig = py_sign(&read, &host(&t));
    for _ in 0..3 {
        let (s, v, _) = send(&t, "GET", read.target, &[("bk-signature", &sig)], None, b"");
        assert_eq!(s, 200, "{v}");
    }
    // Expiry: 9 minutes ahead is fine, an hour is not.
    let mut c = Call::get(3, "rp", "rp1", "/account/get");
    c.expires = Some(now_ms() + 9 * 60_000);
    assert_eq!(signed(&t, &c).0, 200);
    c.expires = Some(now_ms() + 3_600_000);
    let (s, v) = signed(&t, &c);
    assert_eq!(s, 406, "{v}");
}

/// Logging out ends every session issued before, on every worker; so does a new secret.
#[test]
fn sessions_are_revoked_by_logout_and_by_a_new_secret() {
    let t = Tree::start("run", &[]);
    t.ready(2);
    add_account(&t, "so", "so1", "S");
    let (first, _) = session(&t, "so", "so1", &[]);
    let (second, _) = session(&t, "so", "so1", &[]);
    for pair in [&first, &second] {
        let (s, v, _) = send(&t, "GET", "/account/get", &[("cookie", pair)], None, b"");
        assert_eq!(s, 200, "{v}");
    }
    let own = format!("http://{}", host(&t));
    let (s, v, cookies) = send(
        &t,
        "POST",
        "/account/logout",
        &[("cookie", &first), ("origin", &own)],
        None,
        b"",
    );
    assert_eq!(s, 200, "{v}");
    assert!(
        cookies
            .iter()
            .any(|c| c.starts_with("bk_sid=;") && c.contains("Max-Age=0")),
        "{cookies:?}"
    );
    // Both cookies, the one that logged out and the other, are refused on every worker.
    for pair in [&first, &second] {
        for _ in 0..4 {
            let (s, v, _) = send(&t, "GET", "/account/get", &[("cookie", pair)], None, b"");
            assert_eq!(s, 401, "{v}");
        }
    }
    // A new session works; a secret change ends it too.
    let (third, _) = session(&t, "so", "so1", &[]);
    let (s, _, _) = send(&t, "GET", "/account/get", &[("cookie", &third)], None, b"");
    assert_eq!(s, 200);
    let (s, v) = signed(
        &t,
        &Call::get(3, "so", "so1", "/account/put/secret?secret=so2"),
    );
    assert_eq!(s, 200, "{v}");
    let (s, _, _) = send(&t, "GET", "/account/get", &[("cookie", &third)], None, b"");
    assert_eq!(s, 401);
    assert_eq!(alias(&t, "so", "so2"), json!("S"), "the new secret signs");
}

/// No answer carries a secret, not even /data for an admin; the database holds secrets sealed
/// under a key outside it, so a copy of the database file alone does not sign requests.
#[test]
fn secrets_are_never_answered_and_sealed_at_rest() {
    let t = Tree::start("run", &[]);
    t.ready(2);
    add_admin(&t, "root", "rs");
    let secret = format!("plain-{}", unique("sec"));
    add_account(&t, "vic", &secret, "V");
    for target in [
        "/data/get/bk_auth?login=vic",
        "/data/select/bk_auth?login=vic",
        "/data/list/bk_auth?login=vic",
        "/data/select/bk_auth?login=vic&_select=login,secret",
    ] {
        let (s, v) = signed(&t, &Call::get(3, "root", "rs", target));
        assert_eq!(s, 200, "{target}: {v}");
        let text = v.to_string();
        assert!(text.contains("vic"), "{target}: the row is there: {text}");
        assert!(!text.contains("secret"), "{target}: {text}");
        assert!(!text.contains(&secret), "{target}: {text}");
    }
    // The key file is private; the database files hold no plaintext secret.
    let key = t.home.path().join("etc/seal.key");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&key).expect("etc/seal.key").permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "{}", key.display());
    let var = t.home.path().join("var");
    let mut files = 0;
    for entry in std::fs::read_dir(&var).expect("var") {
        let path = entry.expect("entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if !name.starts_with("bkjs.db") {
            continue;
        }
        files += 1;
        let bytes = std::fs::read(&path).expect("db file");
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "{} holds the plaintext secret",
            path.display()
        );
    }
    assert!(files > 0, "the SQLite files are in {}", var.display());
    // A secret stored before sealing existed (written straight into the database) still signs,
    // and is sealed by its first use.
    add_account(&t, "old", "x", "O");
    let db = var.join("bkjs.db");
    sqlite(
        &db,
        "update bk_auth set secret = ?1 where login = ?2",
        &["legacy-plain", "old"],
    );
    assert_eq!(
        sqlite(&db, "select secret from bk_auth where login = ?1", &["old"]),
        "legacy-plain"
    );
    assert_eq!(alias(&t, "old", "legacy-plain"), json!("O"));
    assert!(
        wait_for(std::time::Duration::from_secs(10), || {
            sqlite(&db, "select secret from bk_auth where login = ?1", &["old"])
                .starts_with("enc1:")
        }),
        "the legacy secret was sealed"
    );
    assert_eq!(
        alias(&t, "old", "legacy-plain"),
        json!("O"),
        "and still signs"
    );
    // The sealed secret still signs; a changed secret is sealed too.
    assert_eq!(alias(&t, "vic", &secret), json!("V"));
    let (s, v) = signed(
        &t,
        &Call::get(3, "vic", &secret, "/account/put/secret?secret=next-one"),
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(alias(&t, "vic", "next-one"), json!("V"));
}

/// An unknown login and a known login with a wrong signature get the same answer, and the
/// unknown one is looked up like the known one (from the cache after the first time), so its
/// time does not differ by a database round trip.
#[test]
fn unknown_and_known_logins_are_answered_alike() {
    let t = Tree::start("run", &["-server-web-workers", "1"]);
    t.ready(1);
    add_admin(&t, "root", "rs");
    add_account(&t, "known", "k1", "K");
    let answer = |login: &str| {
        let c = Call::get(3, login, "wrong", "/account/get");
        let sig = py_sign(&c, &host(&t));
        let (s, v, _) = send(&t, "GET", c.target, &[("bk-signature", &sig)], None, b"");
        (s, v)
    };
    let ghost = unique("ghost");
    let known = answer("known");
    let unknown = answer(&ghost);
    assert_eq!(known.0, 401);
    assert_eq!(known, unknown, "same status and body");
    // Both lookups are now answered from the cache: the unknown login as absent, the known one
    // as its row, so neither waits for the database again.
    let cached = |login: &str| {
        let target = format!("/system/cache/get?name=bk_auth%7C{login}");
        let (s, v) = signed(&t, &Call::get(3, "root", "rs", &target));
        assert_eq!(s, 200, "{v}");
        v["value"].clone()
    };
    assert_eq!(cached(&ghost), json!("null"), "the absent login is cached");
    assert!(
        cached("known")
            .as_str()
            .is_some_and(|v| v.contains("known")),
        "the known login is cached"
    );
    for _ in 0..3 {
        assert_eq!(answer(&ghost), known);
    }
    // Creating the login invalidates its absence.
    add_account(&t, &ghost, "g1", "G");
    assert_eq!(alias(&t, &ghost, "g1"), json!("G"));
}

/// Runs one SQL statement on the SQLite file with Python's sqlite3 (not the server's code);
/// the first column of the first row, or "".
fn sqlite(db: &std::path::Path, sql: &str, args: &[&str]) -> String {
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(
            "import sqlite3, sys\n\
             c = sqlite3.connect(sys.argv[1], timeout=10)\n\
             r = c.execute(sys.argv[2], sys.argv[3:]).fetchone()\n\
             c.commit()\n\
             print(r[0] if r else '')",
        )
        .arg(db)
        .arg(sql)
        .args(args)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}
