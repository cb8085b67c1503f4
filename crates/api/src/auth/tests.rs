//! Fixed test vectors for every rule of request signatures and session cookies.

use super::canonical::*;
use super::client::*;
use super::error::*;
use super::mac::*;
use super::session::*;
use super::signature::*;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;

const HOST: &str = "Api.Example.com:8000";
const PATH: &str = "/account/get";
const EXPIRES: i64 = 1_900_000_000_000;

/// docs/auth.md test vectors: (version, query as sent, bk-signature).
const VECTORS: &[(Version, &str, &str)] = &[
    (
        Version::V1,
        "b=2&a=1&c=%2B",
        "1||alice|kzcRwejeU58HboBzv6+hZO5OIBI=|1900000000000||",
    ),
    (
        Version::V3,
        "z=1&id=abc&_count=5",
        "3||alice|d+vXQuhdGnrFD4LIv50VBqP/F93Fc2k7gPbFb+/NdJA=|1900000000000||",
    ),
    (
        Version::V1,
        "",
        "1||alice|Er9zAM2FG5jC0TnCevP0E9y38CE=|1900000000000||",
    ),
];

fn get(target: &str) -> ClientRequest<'_> {
    ClientRequest {
        method: "GET",
        host: HOST,
        target,
        content_type: None,
        body: b"",
        expires: EXPIRES,
    }
}

#[test]
fn appendix_vectors_sign() {
    for &(version, query, expected) in VECTORS {
        let target = if query.is_empty() {
            PATH.to_string()
        } else {
            format!("{PATH}?{query}")
        };
        let header = sign_request(version, "alice", b"s3cret", &get(&target));
        assert_eq!(header.as_deref(), Ok(expected), "query {query:?}");
    }
}

#[test]
fn appendix_vectors_verify() {
    for &(version, query, header) in VECTORS {
        let sig = Signature::parse(header).expect("parse");
        assert_eq!(sig.version, version);
        assert_eq!(sig.login, "alice");
        assert_eq!(sig.expires, EXPIRES);
        assert_eq!(sig.to_string(), header);
        let q = signed_query("GET", None, query, None);
        let string = sig.string_to_sign("GET", HOST, PATH, &q, None);
        assert_eq!(verify_request(&sig, b"s3cret", &string, b""), Ok(()));
        assert_eq!(
            verify_request(&sig, b"s3creT", &string, b""),
            Err(AuthError::NotAuthenticated)
        );
    }
}

#[test]
fn appendix_string_to_sign() {
    let q = canonical_query("b=2&a=1&c=%2B");
    assert_eq!(q, "a=1&b=2&c=%2B");
    assert_eq!(
        string_to_sign("GET", HOST, PATH, &q, EXPIRES, None, ""),
        "GET\napi.example.com\n/account/get\na=1&b=2&c=%2B\n1900000000000\n\n\n"
    );
    assert_eq!(
        canonical_query("z=1&id=abc&_count=5"),
        "_count=5&id=abc&z=1"
    );
}

/// Headers printed by the independent `tests/sign.py` for cases the appendix does not cover.
#[test]
fn python_cross_vectors() {
    let json = ClientRequest {
        method: "POST",
        host: HOST,
        target: "/account/update",
        content_type: Some("application/json"),
        body: br#"{"name":"x"}"#,
        expires: EXPIRES,
    };
    let form = ClientRequest {
        target: "/account/update?ignored=1",
        content_type: Some("application/x-www-form-urlencoded; charset=utf-8"),
        body: b"name=x%20y&alias=z",
        ..json
    };
    let cases = [
            (
                Version::V3,
                json,
                "3||alice|X5CelqhEyIVN7XUepipEUoXn7jxiGUx3lM37NiP6Exk=|1900000000000|iD2Rve/jlI2A13Iw1wrdBubvGUQ=|",
            ),
            (
                Version::V1,
                form,
                "1||alice|A03nKGPoOK91vLJVjgAHKeDC1No=|1900000000000||",
            ),
            (
                Version::V4,
                get("/account/get?bk-signature=zz&b=1"),
                "4||alice|Fw+l9X5nVyjyNAPRm3wCHalqBqm4RvWPjavCtUVLOsY=|1900000000000||",
            ),
        ];
    for (version, req, expected) in cases {
        let header = sign_request(version, "alice", b"s3cret", &req);
        assert_eq!(header.as_deref(), Ok(expected), "{}", req.target);
    }
}

#[test]
fn string_to_sign_parts() {
    assert_eq!(
        string_to_sign(
            "POST",
            "Example.COM",
            "/a/b?x=1",
            "q",
            5,
            Some("Application/JSON; Charset=UTF-8"),
            "ck"
        ),
        "POST\nexample.com\n/a/b\nq\n5\napplication/json; charset=utf-8\nck\n"
    );
    // Non-ASCII is lower-cased as str::to_lowercase does (final sigma included), with a port
    // cut from the host and an IPv6 literal kept whole.
    assert_eq!(
        string_to_sign("GET", "ΟΔΟΣ.example:80", "/", "", 7, Some("X/ΣΑΣ"), ""),
        format!(
            "GET\n{}\n/\n\n7\n{}\n\n",
            "ΟΔΟΣ.example".to_lowercase(),
            "x/ΣΑΣ".to_lowercase()
        )
    );
    assert!(string_to_sign("GET", "[::1]:8000", "/", "", 7, None, "").starts_with("GET\n[::1]\n"));
}

#[test]
fn parse_accepts_all_fields() {
    let sig = Signature::parse("4|app data|bob@x.com|QUJD|42|2jmj7l5rSw0yVb/vlWAYkK/YBwk=|")
        .expect("parse");
    assert_eq!(sig.version, Version::V4);
    assert_eq!(sig.appdata, "app data");
    assert_eq!(sig.login, "bob@x.com");
    assert_eq!(sig.signature, "QUJD");
    assert_eq!(sig.expires, 42);
    assert_eq!(sig.checksum, "2jmj7l5rSw0yVb/vlWAYkK/YBwk=");
    assert!(!format!("{sig:?}").contains("QUJD"));
}

#[test]
fn parse_field_count() {
    let bad = [
        "1||alice|QUJD|42|",   // no trailing |
        "1||alice|QUJD|42||x", // text after the final |
        "1||alice|QUJD|42|||", // eight items
        "1|alice|QUJD|42||",   // a field missing
        "garbage",
        "||||||",
    ];
    for s in bad {
        let err = Signature::parse(s).expect_err(s);
        assert_eq!(err.status(), 400, "{s}: {err}");
    }
    assert!(matches!(
        Signature::parse("1||alice|QUJD|42|"),
        Err(AuthError::Malformed(_))
    ));
    assert_eq!(
        Signature::parse(""),
        Err(AuthError::MissingField("signature"))
    );
}

#[test]
fn parse_refuses_control_characters_anywhere() {
    for s in [
        "1|\t|alice|QUJD|42||",
        "1||ali\u{7f}ce|QUJD|42||",
        "1||alice|QUJD|42|\n|",
        "1|caf\u{e9} \u{85}|alice|QUJD|42||", // a C1 control after non-ASCII text
        "\u{9f}1||alice|QUJD|42||",
    ] {
        assert_eq!(
            Signature::parse(s),
            Err(AuthError::Malformed("control character")),
            "{s:?}"
        );
    }
    // Non-ASCII text that is not a control character is fine where free text is allowed.
    let sig = Signature::parse("1|caf\u{e9}|\u{e9}l\u{e8}ve|QUJD|42||").expect("parse");
    assert_eq!(sig.appdata, "caf\u{e9}");
    assert_eq!(sig.login, "\u{e9}l\u{e8}ve");
}

#[test]
fn parse_version() {
    for v in ["0", "5", "01", "+1", "1.0", "x", "11"] {
        let s = format!("{v}||alice|QUJD|42||");
        assert_eq!(Signature::parse(&s), Err(AuthError::BadVersion), "{v}");
    }
    assert_eq!(
        Signature::parse("||alice|QUJD|42||"),
        Err(AuthError::MissingField("version"))
    );
    for (v, expected) in [("1", Version::V1), ("2", Version::V2), ("3", Version::V3)] {
        let s = format!("{v}||alice|QUJD|42||");
        assert_eq!(Signature::parse(&s).map(|s| s.version), Ok(expected));
    }
}

#[test]
fn parse_expires_values() {
    for e in [
        "abc",
        "-5",
        "+5",
        "0",
        "007",
        "1.5",
        "1e12",
        " 42",
        "9223372036854775808",
        "99999999999999999999",
    ] {
        let s = format!("1||alice|QUJD|{e}||");
        assert_eq!(Signature::parse(&s), Err(AuthError::BadExpires), "{e}");
    }
    assert_eq!(
        Signature::parse("1||alice|QUJD|||"),
        Err(AuthError::MissingField("expires"))
    );
    let max = Signature::parse("1||alice|QUJD|9223372036854775807||").expect("i64::MAX");
    assert_eq!(max.expires, i64::MAX);
}

#[test]
fn parse_login_and_signature() {
    assert_eq!(
        Signature::parse("1|||QUJD|42||"),
        Err(AuthError::MissingField("login"))
    );
    assert_eq!(
        Signature::parse("1||alice||42||"),
        Err(AuthError::MissingField("signature"))
    );
    assert!(matches!(
        Signature::parse("1||alice|not base64!|42||"),
        Err(AuthError::Malformed(_))
    ));
    assert!(matches!(
        Signature::parse("1||alice|QUJD|42|a b|"),
        Err(AuthError::Malformed(_))
    ));
    assert!(matches!(
        Signature::parse("1||al\nice|QUJD|42||"),
        Err(AuthError::Malformed(_))
    ));
    assert!(matches!(
        Signature::parse("1||alice\0|QUJD|42||"),
        Err(AuthError::Malformed(_))
    ));
}

#[test]
fn parse_refuses_huge_values() {
    let long = "a".repeat(2000);
    assert!(matches!(
        Signature::parse(&format!("1||{long}|QUJD|42||")),
        Err(AuthError::Malformed(_))
    ));
    let login = "a".repeat(MAX_LOGIN_LEN + 1);
    assert!(matches!(
        Signature::parse(&format!("1||{login}|QUJD|42||")),
        Err(AuthError::Malformed(_))
    ));
    let login = "a".repeat(MAX_LOGIN_LEN);
    assert!(Signature::parse(&format!("1||{login}|QUJD|42||")).is_ok());
    let appdata = "d".repeat(513);
    assert!(matches!(
        Signature::parse(&format!("1|{appdata}|alice|QUJD|42||")),
        Err(AuthError::Malformed(_))
    ));
    let mac = "A".repeat(129);
    assert!(matches!(
        Signature::parse(&format!("1||alice|{mac}|42||")),
        Err(AuthError::Malformed(_))
    ));
    let ck = "A".repeat(129);
    assert!(matches!(
        Signature::parse(&format!("1||alice|QUJD|42|{ck}|")),
        Err(AuthError::Malformed(_))
    ));
    // Every field at its own limit, 1024 bytes in all, is fine; one byte more is not.
    let build = |ck_len: usize| {
        format!(
            "1|{}|{}|{}|42|{}|",
            "d".repeat(512),
            "l".repeat(MAX_LOGIN_LEN),
            "A".repeat(128),
            "C".repeat(ck_len)
        )
    };
    let at_limit = build(119);
    assert_eq!(at_limit.len(), MAX_SIGNATURE_LEN);
    assert!(Signature::parse(&at_limit).is_ok());
    let over = build(120);
    assert!(matches!(
        Signature::parse(&over),
        Err(AuthError::Malformed("longer than 1024 bytes"))
    ));
}

#[test]
fn canonical_query_edges() {
    assert_eq!(canonical_query(""), "");
    assert_eq!(canonical_query("&&&"), "");
    assert_eq!(canonical_query("b=2&&a=1&"), "a=1&b=2");
    assert_eq!(canonical_query("b=1&bk-signature=1%7C%7Cx&a=2"), "a=2&b=1");
    assert_eq!(canonical_query("bk-signature&a=2"), "a=2");
    assert_eq!(canonical_query("bk-signature=&a=2"), "a=2");
    // Only the exact name is dropped, as sent.
    assert_eq!(
        canonical_query("bk-signaturex=1&xbk-signature=2&bk%2Dsignature=3"),
        "bk%2Dsignature=3&bk-signaturex=1&xbk-signature=2"
    );
    // Bytewise: upper case before `_` before lower case; still encoded; `+` kept.
    assert_eq!(
        canonical_query("a=1&_b=2&B=3&c=x+y&c=%2B"),
        "B=3&_b=2&a=1&c=%2B&c=x+y"
    );
    // Duplicates kept; items without `=` kept; prefix sorts first.
    assert_eq!(canonical_query("a=2&a=1&a=1&a"), "a&a=1&a=1&a=2");
}

#[test]
fn form_post_signs_body() {
    let form = Some("application/x-www-form-urlencoded; charset=UTF-8");
    assert!(is_form_post("POST", form));
    assert!(is_form_post(
        "POST",
        Some("Application/X-WWW-Form-Urlencoded")
    ));
    assert!(!is_form_post("PUT", form));
    assert!(!is_form_post("POST", Some("application/json")));
    assert!(!is_form_post("POST", None));
    assert_eq!(
        signed_query("POST", form, "z=9", Some("b=2&a=1")),
        "a=1&b=2"
    );
    assert_eq!(signed_query("POST", form, "z=9", None), "");
    assert_eq!(signed_query("GET", form, "z=9&y=8", Some("b=2")), "y=8&z=9");
    assert_eq!(
        signed_query("POST", Some("application/json"), "z=9", Some("b=2")),
        "z=9"
    );
}

#[test]
fn hosts_and_domains() {
    assert_eq!(normalize_host(HOST), "api.example.com");
    assert_eq!(normalize_host("LOCALHOST"), "localhost");
    assert_eq!(normalize_host(""), "");
    assert_eq!(normalize_host("[::1]:8000"), "[::1]");
    assert_eq!(normalize_host("[::1]"), "[::1]");
    assert_eq!(session_domain("a.b.example.com"), "b.example.com");
    assert_eq!(session_domain("b.example.com"), "example.com");
    assert_eq!(session_domain("example.com"), "example.com");
    assert_eq!(session_domain("localhost"), "localhost");
    assert_eq!(session_domain("localhost:8000"), "localhost");
    assert_eq!(session_domain(HOST), "example.com");
    assert_eq!(session_domain("10.0.0.1:8000"), "10.0.0.1");
    assert_eq!(session_domain("[fe80::1]:80"), "[fe80::1]");
    assert_eq!(
        session_string(HOST, EXPIRES),
        "*\nexample.com\n/\n*\n1900000000000\n*\n*\n"
    );
}

#[test]
fn checksums() {
    assert_eq!(checksum(b""), "2jmj7l5rSw0yVb/vlWAYkK/YBwk=");
    // printf '{"a":1}' | openssl sha1 -binary | base64
    assert_eq!(checksum(br#"{"a":1}"#), "n4nHQM60bXQYySSnisV5QdXpZSA=");
    assert_eq!(verify_checksum("", b"anything"), Ok(()));
    assert_eq!(
        verify_checksum("n4nHQM60bXQYySSnisV5QdXpZSA=", br#"{"a":1}"#),
        Ok(())
    );
    assert_eq!(
        verify_checksum("n4nHQM60bXQYySSnisV5QdXpZSA=", br#"{"a":2}"#),
        Err(AuthError::BadChecksum)
    );
}

#[test]
fn verify_true_and_false() {
    let s = "GET\nh\n/\n\n1\n\n\n";
    for v in [Version::V1, Version::V3, Version::V4] {
        let good = sign(v, b"k", s);
        assert!(verify(v, b"k", s, &good));
        assert!(!verify(v, b"K", s, &good));
        assert!(!verify(v, b"k", "GET\nh\n/\n\n2\n\n\n", &good));
        assert!(!verify(v, b"k", s, ""));
        assert!(!verify(v, b"k", s, "not base64"));
        // Right bytes, one flipped.
        let mut tag = B64.decode(&good).expect("b64");
        tag[0] ^= 1;
        assert!(!verify(v, b"k", s, &B64.encode(&tag)));
        // A prefix of the right HMAC is not accepted.
        let tag = B64.decode(&good).expect("b64");
        assert!(!verify(v, b"k", s, &B64.encode(&tag[..tag.len() - 1])));
    }
    assert_eq!(sign(Version::V1, b"k", s).len(), 28);
    assert_eq!(sign(Version::V3, b"k", s).len(), 44);
    assert_eq!(sign(Version::V3, b"k", s), sign(Version::V4, b"k", s));
    let v1 = sign(Version::V1, b"k", s);
    assert!(!verify(Version::V3, b"k", s, &v1));
}

#[test]
fn checksum_is_signed_and_checked() {
    let body = br#"{"name":"x"}"#;
    let req = ClientRequest {
        method: "POST",
        host: HOST,
        target: "/account/update",
        content_type: Some("application/json"),
        body,
        expires: EXPIRES,
    };
    let header = sign_request(Version::V3, "alice", b"s3cret", &req).expect("sign");
    let sig = Signature::parse(&header).expect("parse");
    assert_eq!(sig.checksum, checksum(body));
    let q = signed_query("POST", req.content_type, "", None);
    let string = sig.string_to_sign("POST", HOST, "/account/update", &q, req.content_type);
    assert_eq!(verify_request(&sig, b"s3cret", &string, body), Ok(()));
    assert_eq!(
        verify_request(&sig, b"s3cret", &string, br#"{"name":"y"}"#),
        Err(AuthError::BadChecksum)
    );
    // Dropping the checksum from the header breaks the HMAC.
    let mut stripped = sig.clone();
    stripped.checksum = "".into();
    let string = stripped.string_to_sign("POST", HOST, "/account/update", &q, req.content_type);
    assert_eq!(
        verify_request(&stripped, b"s3cret", &string, body),
        Err(AuthError::NotAuthenticated)
    );
}

#[test]
fn form_post_round_trip() {
    let ct = Some("application/x-www-form-urlencoded; charset=utf-8");
    let req = ClientRequest {
        method: "POST",
        host: HOST,
        target: "/account/update?ignored=1",
        content_type: ct,
        body: b"name=x%20y&alias=z",
        expires: EXPIRES,
    };
    let header = sign_request(Version::V1, "alice", b"s3cret", &req).expect("sign");
    let sig = Signature::parse(&header).expect("parse");
    assert_eq!(sig.checksum, "");
    let q = signed_query("POST", ct, "ignored=1", Some("name=x%20y&alias=z"));
    let string = sig.string_to_sign("POST", HOST, "/account/update", &q, ct);
    assert_eq!(verify_request(&sig, b"s3cret", &string, b""), Ok(()));
    let bad = ClientRequest {
        body: b"\xff",
        ..req
    };
    assert!(matches!(
        sign_request(Version::V1, "alice", b"s3cret", &bad),
        Err(AuthError::Malformed(_))
    ));
}

#[test]
fn keyed_states_verify_like_fresh_ones_request_after_request() {
    let keys = SecretKeys::default();
    for version in [Version::V1, Version::V3, Version::V1, Version::V4] {
        for msg in ["GET\nh\n/a\n\n1\n\n\n", "POST\nh\n/b\nx=1\n2\n\n\n"] {
            let good = Signature {
                version,
                appdata: "".into(),
                login: "al".into(),
                signature: sign(version, b"s3cret", msg).into(),
                expires: 1,
                checksum: "".into(),
            };
            assert_eq!(
                verify_request_keyed(&good, &keys, b"s3cret", msg, b""),
                Ok(())
            );
            let mut bad = good.clone();
            bad.signature = sign(version, b"other", msg).into();
            assert_eq!(
                verify_request_keyed(&bad, &keys, b"s3cret", msg, b""),
                Err(AuthError::NotAuthenticated)
            );
            assert_eq!(
                verify_request(&bad, b"s3cret", msg, b""),
                Err(AuthError::NotAuthenticated)
            );
        }
    }
    assert!(!format!("{keys:?}").contains("s3cret"));
}

#[test]
fn sign_request_refusals() {
    let req = get(PATH);
    assert_eq!(
        sign_request(Version::V2, "alice", b"s", &req),
        Err(AuthError::WrongSource)
    );
    assert_eq!(
        sign_request(Version::V1, "", b"s", &req),
        Err(AuthError::MissingField("login"))
    );
    assert!(matches!(
        sign_request(Version::V1, "a|b", b"s", &req),
        Err(AuthError::Malformed(_))
    ));
    let past = ClientRequest { expires: 0, ..req };
    assert_eq!(
        sign_request(Version::V1, "alice", b"s", &past),
        Err(AuthError::BadExpires)
    );
}

#[test]
fn session_cookie_round_trip() {
    let key = b"server key";
    let cookie =
        session_cookie(key, "alice", b"s3cret", "www.example.com:8000", EXPIRES).expect("c");
    assert!(cookie.starts_with("2||alice|"));
    assert!(cookie.ends_with("|1900000000000||"));
    let sig = Signature::parse(&cookie).expect("parse");
    assert_eq!(sig.version, Version::V2);
    // Any host with the same session domain.
    for host in ["www.example.com", "api.example.com:8000", "example.com"] {
        assert_eq!(verify_session(key, &sig, b"s3cret", host), Ok(()), "{host}");
    }
    let no = Err(AuthError::NotAuthenticated);
    assert_eq!(verify_session(key, &sig, b"s3cret", "www.example.org"), no);
    assert_eq!(
        verify_session(b"other key", &sig, b"s3cret", "example.com"),
        no
    );
    assert_eq!(verify_session(key, &sig, b"changed", "example.com"), no);
    // Another account with the same secret cannot reuse the cookie.
    let mut swapped = sig.clone();
    swapped.login = "bob".into();
    assert_eq!(verify_session(key, &swapped, b"s3cret", "example.com"), no);
    // A later EXPIRES is not covered.
    let mut extended = sig.clone();
    extended.expires += 1;
    assert_eq!(verify_session(key, &extended, b"s3cret", "example.com"), no);
    // The account secret alone (what a client knows) does not make a valid cookie.
    let forged = format!(
        "2||alice|{}|{EXPIRES}||",
        sign(
            Version::V2,
            b"s3cret",
            &session_string("example.com", EXPIRES)
        )
    );
    let forged = Signature::parse(&forged).expect("parse");
    assert_eq!(verify_session(key, &forged, b"s3cret", "example.com"), no);
}

#[test]
fn session_sources_and_key() {
    let cookie = session_cookie(b"k", "alice", b"s", "example.com", EXPIRES).expect("c");
    let sig = Signature::parse(&cookie).expect("parse");
    assert_eq!(
        verify_request(&sig, b"s", "anything", b""),
        Err(AuthError::WrongSource)
    );
    let v1 = Signature::parse(VECTORS[0].2).expect("parse");
    assert_eq!(
        verify_session(b"k", &v1, b"s3cret", HOST),
        Err(AuthError::WrongSource)
    );
    assert_eq!(
        session_cookie(b"", "alice", b"s", "example.com", EXPIRES),
        Err(AuthError::NoServerKey)
    );
    assert_eq!(
        verify_session(b"", &sig, b"s", "example.com"),
        Err(AuthError::NoServerKey)
    );
    assert_eq!(
        session_cookie(b"k", "", b"s", "example.com", EXPIRES),
        Err(AuthError::MissingField("login"))
    );
    assert_eq!(
        session_cookie(b"k", "alice", b"s", "example.com", -1),
        Err(AuthError::BadExpires)
    );
}

#[test]
fn expiry() {
    assert_eq!(check_expires(1001, 1000, None), Ok(()));
    assert_eq!(check_expires(1000, 1000, None), Err(AuthError::Expired));
    assert_eq!(check_expires(999, 1000, Some(10)), Err(AuthError::Expired));
    assert_eq!(check_expires(1010, 1000, Some(10)), Ok(()));
    assert_eq!(
        check_expires(1011, 1000, Some(10)),
        Err(AuthError::TooFarAhead)
    );
    assert_eq!(
        check_expires(i64::MAX, i64::MIN, Some(10)),
        Err(AuthError::TooFarAhead)
    );
}

#[test]
fn scrambled_secret() {
    // Values from Python: hmac.new(b"s3cret", b"alice", sha1) and so on.
    let s = scramble("alice", "s3cret");
    assert_eq!(s.secret, sign(Version::V1, b"s3cret", "alice"));
    assert_eq!(s.login, sign(Version::V1, s.secret.as_bytes(), "alice"));
    assert_eq!(s.secret, "uIF4cglGm8hmF9TDWGXfhZg8WEs=");
    assert_eq!(s.login, "hRRShmwZRFTymRp2+sElrV7JFy4=");
    assert!(!format!("{s:?}").contains(&s.secret));
    assert!(check_login(&s.login).is_ok());
}

#[test]
fn error_statuses() {
    let cases = [
        (AuthError::Malformed("x"), 400),
        (AuthError::MissingField("login"), 400),
        (AuthError::BadVersion, 400),
        (AuthError::BadExpires, 400),
        (AuthError::WrongSource, 400),
        (AuthError::Expired, 406),
        (AuthError::TooFarAhead, 406),
        (AuthError::BadChecksum, 401),
        (AuthError::NotAuthenticated, 401),
        (AuthError::AccountExpired, 412),
        (AuthError::Denied, 403),
        (AuthError::NoServerKey, 500),
    ];
    for (err, status) in cases {
        assert_eq!(err.status(), status, "{err}");
        assert_eq!(err.is_client_error(), status < 500);
    }
    assert_eq!(AuthError::Expired.message(), "Expired request");
    assert_eq!(AuthError::NotAuthenticated.message(), "Not authenticated");
    assert_eq!(
        AuthError::MissingField("login").message(),
        "Invalid signature: missing login"
    );
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(3000))]

    /// Any header value: a signature or an error, never a panic.
    #[test]
    fn signature_parse_survives_any_text(s in "\\PC{0,200}") {
        let _ = Signature::parse(&s);
    }

    /// Well-formed fields in the right places always parse back to themselves.
    #[test]
    fn signature_parse_reads_its_fields(
        version in 1u8..5,
        login in "[a-zA-Z0-9@._-]{1,40}",
        sig in "[A-Za-z0-9+/=]{1,60}",
        expires in 0i64..4_000_000_000_000,
    ) {
        let text = format!("{version}||{login}|{sig}|{expires}||");
        let parsed = Signature::parse(&text);
        if version != 2 {
            let p = parsed.expect("parse");
            proptest::prop_assert_eq!(p.login, login.as_str());
            proptest::prop_assert_eq!(p.signature, sig.as_str());
            proptest::prop_assert_eq!(p.expires, expires);
        }
    }
}
