//! Hostile input against the real binary (issue 17): each test sends what an attacker would and
//! checks the refusal, and that nothing stored changed. See docs/security.md.

use crate::api::{add_account, host, py_sign, signed, Call};
use crate::harness::*;
use serde_json::json;

/// A signed request with its status, headers (lower-case names) and body.
fn signed_raw(t: &Tree, c: &Call<'_>) -> (u16, std::collections::HashMap<String, String>, Vec<u8>) {
    let sig = py_sign(c, &host(t));
    let mut req = agent()
        .request(c.method, &t.url(c.target))
        .set("bk-signature", &sig);
    if let Some(ct) = c.content_type {
        req = req.set("content-type", ct);
    }
    let resp = match if c.body.is_empty() {
        req.call()
    } else {
        req.send_bytes(c.body)
    } {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{} {}: {e}", c.method, c.target),
    };
    let status = resp.status();
    let headers = resp
        .headers_names()
        .into_iter()
        .filter_map(|n| {
            let v = resp.header(&n).map(str::to_string)?;
            Some((n.to_ascii_lowercase(), v))
        })
        .collect();
    let mut body = Vec::new();
    std::io::Read::read_to_end(&mut resp.into_reader(), &mut body).expect("body");
    (status, headers, body)
}

fn put_file(t: &Tree, name: &str, content_type: &str, body: &[u8]) {
    let target = format!("/file/put?prefix=docs&name={name}");
    let c = Call {
        version: 3,
        login: "alice",
        secret: "s1",
        method: "POST",
        target: &target,
        content_type: Some(content_type),
        body,
        expires: None,
    };
    let (s, v) = signed(t, &c);
    assert_eq!(s, 200, "/file/put {name}: {v}");
}

/// Stored XSS: an uploaded page or SVG is served as a download that cannot run scripts; images
/// on the allow list stay inline; every API reply says nosniff.
#[test]
fn uploaded_pages_are_served_as_inert_attachments() {
    let t = Tree::start("run", &[]);
    t.ready(2);
    add_account(&t, "alice", "s1", "Alice");
    let page = b"<html><script>alert(document.cookie)</script></html>";
    put_file(&t, "x.html", "text/html", page);
    put_file(&t, "x.svg", "image/svg+xml", b"<svg onload=\"alert(1)\"/>");
    put_file(&t, "x.png", "image/png", b"\x89PNG\r\n\x1a\n");
    for (name, inline) in [("x.html", false), ("x.svg", false), ("x.png", true)] {
        let target = format!("/file/get?prefix=docs&name={name}");
        let (s, h, _) = signed_raw(&t, &Call::get(3, "alice", "s1", &target));
        assert_eq!(s, 200, "{name}");
        assert_eq!(
            h.get("x-content-type-options").map(String::as_str),
            Some("nosniff"),
            "{name}: {h:?}"
        );
        let csp = h
            .get("content-security-policy")
            .cloned()
            .unwrap_or_default();
        assert!(
            csp.contains("default-src 'none'") && csp.contains("sandbox"),
            "{name}: {h:?}"
        );
        let disposition = h.get("content-disposition").map(String::as_str);
        if inline {
            assert_eq!(disposition, None, "{name} stays inline: {h:?}");
        } else {
            assert_eq!(disposition, Some("attachment"), "{name}: {h:?}");
        }
    }
    // Every reply of the API, errors included.
    for target in ["/account/get", "/no/such/route"] {
        let (_, h, _) = signed_raw(&t, &Call::get(3, "alice", "s1", target));
        assert_eq!(
            h.get("x-content-type-options").map(String::as_str),
            Some("nosniff"),
            "{target}: {h:?}"
        );
    }
}

/// /account/select cannot filter, sort or select by another account's private columns (which
/// would reveal an email one character at a time); public columns still work.
#[test]
fn account_search_refuses_private_columns() {
    let t = Tree::start("run", &[]);
    t.ready(2);
    add_account(&t, "alice", "s1", "Alice");
    let bob = add_account(&t, "bob", "s2", "Bob");
    let (s, v) = signed(
        &t,
        &Call::get(
            3,
            "bob",
            "s2",
            "/account/update?email=bob@example.com&alias=Bobby",
        ),
    );
    assert_eq!(s, 200, "{v}");
    for target in [
        "/account/select?email=bob@example.com",
        "/account/select?email=b&_ops=email,begins_with",
        "/account/select?alias=Bobby&_sort=email",
        "/account/select?alias=Bobby&_select=id,email",
        "/account/select?alias=Bobby&_ops=email,gt",
    ] {
        let (s, v) = signed(&t, &Call::get(3, "alice", "s1", target));
        assert_eq!(s, 400, "{target}: {v}");
        let message = v["message"].as_str().unwrap_or_default();
        assert!(message.contains("email"), "{target}: {v}");
        assert!(message.contains("public"), "{target}: {v}");
    }
    let (s, v) = signed(
        &t,
        &Call::get(3, "alice", "s1", "/account/select?alias=Bobby"),
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["count"], json!(1), "{v}");
    assert_eq!(v["data"][0]["id"], json!(bob));
    assert!(v["data"][0].get("email").is_none(), "{v}");
    // Bob's own row is unchanged by the refused searches.
    let (s, me) = signed(&t, &Call::get(3, "bob", "s2", "/account/get"));
    assert_eq!(s, 200, "{me}");
    assert_eq!(me["email"], json!("bob@example.com"));
}

/// An open extension (`.png` is open by default) never waives the admin rule: admin paths stay
/// admin-only whatever their last segment looks like.
#[test]
fn an_open_extension_does_not_open_admin_paths() {
    let t = Tree::start("run", &[]);
    t.ready(2);
    add_account(&t, "alice", "s1", "Alice");
    for target in [
        "/data/select/bk_auth.png",
        "/data/get/bk_auth.png?login=alice",
        "/system/stats.png",
    ] {
        let r = t.get(target);
        assert_eq!(r.status, 403, "anonymous {target}: {}", r.body);
        let (s, v) = signed(&t, &Call::get(3, "alice", "s1", target));
        assert_eq!(s, 403, "non-admin {target}: {v}");
        assert_eq!(v["message"], json!("Access denied: admins only"), "{v}");
        assert!(!v.to_string().contains("s1"), "no secret: {v}");
    }
}

/// A signed form POST covers its body, not its URL: a query added to the URL (which the server
/// would merge into the parameters) is refused, and nothing changes.
#[test]
fn a_form_post_with_an_unsigned_query_is_refused() {
    let t = Tree::start("run", &[]);
    t.ready(2);
    add_account(&t, "alice", "s1", "Alice");
    let form = b"alias=Signed";
    let call = Call {
        version: 3,
        login: "alice",
        secret: "s1",
        method: "POST",
        target: "/account/update",
        content_type: Some("application/x-www-form-urlencoded"),
        body: form,
        expires: None,
    };
    let sig = py_sign(&call, &host(&t));
    let (s, v, _) = crate::api::send(
        &t,
        "POST",
        "/account/update?alias=Evil&name=Evil",
        &[("bk-signature", &sig)],
        call.content_type,
        form,
    );
    assert_eq!(s, 400, "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap_or_default()
            .contains("form POST"),
        "{v}"
    );
    let (s, me) = signed(&t, &Call::get(3, "alice", "s1", "/account/get"));
    assert_eq!(s, 200, "{me}");
    assert_ne!(me["alias"], json!("Evil"), "{me}");
    assert_ne!(me["name"], json!("Evil"), "{me}");
    // The same POST as signed goes through.
    let (s, v) = signed(&t, &call);
    assert_eq!(s, 200, "{v}");
    let (_, me) = signed(&t, &Call::get(3, "alice", "s1", "/account/get"));
    assert_eq!(me["alias"], json!("Signed"), "{me}");
}

/// `/system/jobs` names the host a job is queued for: only a host name is accepted (the refusal
/// comes before anything is written); a host name is queued.
#[test]
fn a_job_for_a_malformed_host_is_refused() {
    let t = Tree::start("run", &[]);
    t.ready(2);
    crate::api::add_admin(&t, "root", "rs");
    for host in ["%0Aevil", "a%20b", "%25x", "x%2F..%2Fy", "a%2Ab"] {
        let target = format!("/system/jobs?job=test.write&host={host}");
        let (s, v) = signed(&t, &Call::get(3, "root", "rs", &target));
        assert_eq!(s, 400, "{host}: {v}");
        assert!(
            v["message"].as_str().unwrap_or_default().contains("host"),
            "{host}: {v}"
        );
    }
    // A host name goes through: queued in bk_jobs for that host.
    let target = "/system/jobs?job=test.write&host=node-2.example_b";
    let (s, v) = signed(&t, &Call::get(3, "root", "rs", target));
    assert_eq!(s, 200, "{v}");
    let id = v["id"].as_str().expect("an id").to_string();
    let target = format!("/data/get/bk_jobs?id={id}&tag=test.write");
    let (s, row) = signed(&t, &Call::get(3, "root", "rs", &target));
    assert_eq!(s, 200, "{row}");
    assert_eq!(row["host"], json!("node-2.example_b"), "{row}");
}

/// Image uploads cannot be made to allocate without bound: the produced size is capped by
/// `-api-image-max-side` (asked for or following from the aspect), over the cap is a 400 and
/// nothing is stored.
#[test]
fn image_output_size_is_capped() {
    let t = Tree::start("run", &["-api-image-max-side", "64"]);
    t.ready(2);
    add_account(&t, "alice", "s1", "Alice");
    let one = crate::social::png(1, 1);
    let tall = crate::social::png(1, 2);
    let b64 = |d: &[u8]| {
        use base64::Engine;
        crate::social::q(&base64::engine::general_purpose::STANDARD.encode(d))
    };
    for (what, data, size) in [
        ("8192 asked", &one, "&_width=8192&_height=8192"),
        ("65 asked", &one, "&_width=65"),
        ("128 from the aspect", &tall, "&_width=64"),
    ] {
        let target = format!("/icon/put?prefix=p&type=1&icon={}{size}", b64(data));
        let (s, v) = signed(&t, &Call::get(3, "alice", "s1", &target));
        assert_eq!(s, 400, "{what}: {v}");
        let (s, v) = signed(
            &t,
            &Call::get(3, "alice", "s1", "/icon/get?prefix=p&type=1"),
        );
        assert_ne!(s, 200, "{what}: nothing stored: {v}");
    }
    let target = format!(
        "/icon/put?prefix=p&type=1&icon={}&_width=64&_height=64",
        b64(&one)
    );
    let (s, v) = signed(&t, &Call::get(3, "alice", "s1", &target));
    assert_eq!(s, 200, "within the cap: {v}");
}
