//! The entries of the `signature`, `params` and `multipart` fuzz targets (`fuzz/`,
//! `scripts/fuzz`): request bytes through the same parsers and checks the router and
//! `access::authenticate` use, with the parsers' contracts asserted on the way. Not an API: it
//! exists so the fuzzer reaches crate-private parsers without a copy of them.

use crate::access::{cookie, query_signature};
use crate::auth::{self, sign_request, ClientRequest, SecretKeys, Signature, Version};
use crate::params::{exact_boundary, json_deeper_than, Params, JSON_PARSER_DEPTH};
use bytes::Bytes;
use hyper::header::{HeaderValue, COOKIE};
use hyper::HeaderMap;
use std::cell::RefCell;

/// The account secret of the fuzz runs: signatures in the seed corpus are made with another one,
/// so a header from the corpus never verifies by construction.
const SECRET: &[u8] = b"fuzzing secret, in no corpus";
const SERVER_KEY: &[u8] = b"fuzzing server key";
/// "Now" for the expiry checks: 2030-01-01, with the default `-api-max-expire` (10m).
const NOW_MS: i64 = 1_893_456_000_000;
const MAX_AHEAD_MS: i64 = 600_000;

/// Splits off the first `\n`-terminated line of `data`.
fn line(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[]),
    }
}

/// `data` is `CREDENTIAL\nHOST\nMETHOD TARGET\nCONTENT-TYPE\nBODY`. The credential goes through
/// the server's path as a `bk-signature` header, as a `Cookie` header and (from TARGET) as the
/// query parameter: parse, expiry, then the MAC, which must never verify (the corpus holds no
/// header signed with this secret). A value that parses must print back to the same text. Then
/// the request is signed with the secret by the client signer (`bksh -send-request`) and must
/// verify on the server's path: both build the same string to sign.
pub fn signature(data: &[u8]) {
    let (credential, rest) = line(data);
    let (host, rest) = line(rest);
    let (request_line, rest) = line(rest);
    let (content_type, body) = line(rest);
    let (Ok(credential), Ok(host), Ok(request_line)) = (
        std::str::from_utf8(credential),
        std::str::from_utf8(host),
        std::str::from_utf8(request_line),
    ) else {
        return;
    };
    let content_type = std::str::from_utf8(content_type)
        .ok()
        .filter(|c| !c.is_empty());
    let (method, target) = request_line
        .split_once(' ')
        .unwrap_or(("GET", request_line));
    // The server sees the path and query hyper parsed from the request target.
    if !target.starts_with('/') {
        return; // not an origin-form target: no server sees it
    }
    let Ok(target) = target.parse::<hyper::http::uri::PathAndQuery>() else {
        return;
    };
    let (path, query) = (target.path(), target.query());
    let request = Request {
        method,
        host,
        path,
        query,
        content_type,
        body,
    };

    if let Ok(value) = HeaderValue::from_str(credential) {
        // What hyper hands over for the header: its bytes as text.
        if let Ok(text) = value.to_str() {
            refuse_forged(&request, text, false);
        }
        let mut headers = HeaderMap::new();
        headers.insert(COOKIE, value);
        if let Some(text) = cookie(&headers, auth::SESSION_COOKIE) {
            refuse_forged(&request, text, true);
        }
    }
    if let Some(text) = query_signature(query) {
        refuse_forged(&request, &text, false);
    }

    // The client signer and the server agree on any request the client can sign.
    let login = credential.split('|').nth(2).unwrap_or("fuzz");
    for version in [Version::V1, Version::V3, Version::V4] {
        let signed = ClientRequest {
            method,
            host,
            target: target.as_str(),
            content_type,
            body,
            expires: NOW_MS + 1000,
        };
        let Ok(header) = sign_request(version, login, SECRET, &signed) else {
            continue;
        };
        let sig = Signature::parse(&header).expect("the client signer writes a valid signature");
        assert_eq!(sig.to_string(), header);
        assert_eq!(
            auth::check_expires(sig.expires, NOW_MS, Some(MAX_AHEAD_MS)),
            Ok(())
        );
        let string = request.string_to_sign(&sig);
        let keys = SecretKeys::default();
        assert_eq!(
            auth::verify_request_keyed(&sig, &keys, SECRET, &string, &request.checked_body()),
            Ok(()),
            "a request signed by the client is refused by the server"
        );
    }
    if let Ok(cookie) = auth::session_cookie(SERVER_KEY, login, SECRET, host, NOW_MS + 1000) {
        let sig = Signature::parse(&cookie).expect("a session cookie is a valid signature");
        assert_eq!(
            auth::verify_session(SERVER_KEY, &sig, SECRET, host),
            Ok(()),
            "a session cookie is refused on the host it was made for"
        );
    }
}

/// The parts of a request the signature covers, as the server has them.
struct Request<'a> {
    method: &'a str,
    host: &'a str,
    path: &'a str,
    query: Option<&'a str>,
    content_type: Option<&'a str>,
    body: &'a [u8],
}

impl Request<'_> {
    /// The string to sign as `access::authenticate` builds it.
    fn string_to_sign(&self, sig: &Signature<'_>) -> String {
        let form = auth::is_form_post(self.method, self.content_type);
        let body = form.then(|| String::from_utf8_lossy(self.body));
        let query = auth::signed_query(
            self.method,
            self.content_type,
            self.query.unwrap_or(""),
            body.as_deref(),
        );
        sig.string_to_sign(self.method, self.host, self.path, &query, self.content_type)
    }

    /// The body the CHECKSUM is checked against: none for a form POST, whose body is signed
    /// in the query's place.
    fn checked_body(&self) -> Vec<u8> {
        if auth::is_form_post(self.method, self.content_type) {
            Vec::new()
        } else {
            self.body.to_vec()
        }
    }
}

/// The server's checks of one credential: whatever it is, it must not verify.
fn refuse_forged(request: &Request<'_>, text: &str, from_cookie: bool) {
    let Ok(sig) = Signature::parse(text) else {
        return;
    };
    assert_eq!(
        sig.to_string(),
        text,
        "a parsed signature prints back differently"
    );
    assert_eq!(auth::check_login(&sig.login), Ok(()));
    let _ = auth::check_expires(sig.expires, NOW_MS, (!from_cookie).then_some(MAX_AHEAD_MS));
    let checked = if from_cookie {
        auth::verify_session(SERVER_KEY, &sig, SECRET, request.host)
    } else {
        let string = request.string_to_sign(&sig);
        auth::verify_mac_keyed(&sig, &SecretKeys::default(), SECRET, &string)
    };
    assert!(checked.is_err(), "a forged signature verified: {text:?}");
}

/// The content types the router tells apart (it lower-cases the header).
const CONTENT_TYPES: &[Option<&str>] = &[
    None,
    Some("application/json"),
    Some("application/json; charset=utf-8"),
    Some("application/x-www-form-urlencoded"),
    Some("text/plain"),
];

/// `data` is `SELECTOR QUERY\nBODY`: the first byte picks the content type and the
/// `-api-max-json-depth` (1..=127); the query (until the first `\n`) and the body go through the
/// router's checks and [`Params::new`] (a multipart body is the `multipart` target's). Asserts
/// that the quick depth scan and the JSON parser agree, that parameters come in order of
/// appearance, and that a query's parameters survive being written out and parsed again.
pub fn params(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let content_type = CONTENT_TYPES[usize::from(selector) % CONTENT_TYPES.len()];
    let max_depth = 1 + usize::from(selector) % JSON_PARSER_DEPTH;
    let (query, body) = line(rest);
    let Ok(query) = std::str::from_utf8(query) else {
        return;
    };
    let query = Some(query).filter(|q| !q.is_empty());
    let body = Bytes::copy_from_slice(body);
    let json = content_type.is_some_and(|c| c.starts_with("application/json"));

    // The router's own depth check comes first (its limit is at most the parser's); then the
    // parser's limit must agree with the scan.
    if json && !json_deeper_than(&body, max_depth) {
        assert!(!json_deeper_than(&body, JSON_PARSER_DEPTH));
    }
    let parsed = Params::new(query, content_type, &body);
    if json && !body.is_empty() {
        let deeper = json_deeper_than(&body, JSON_PARSER_DEPTH);
        match &parsed {
            Ok(_) => assert!(
                !deeper,
                "a JSON body deeper than the parser's limit was accepted"
            ),
            Err(e) => assert!(
                deeper || !e.contains("-api-max-json-depth"),
                "the depth scan missed a body the parser found too deep: {e}"
            ),
        }
    }
    let Ok(p) = parsed else {
        assert!(json, "only a JSON body is refused");
        return;
    };
    for (name, value) in p.pairs() {
        assert_eq!(p.get(name), p.all(name).last().map(String::as_str));
        assert!(p.all(name).contains(value));
    }
    // Equal to what the async entry the router calls gives for the same request.
    let again = block_on(Params::parse(query, content_type, &body)).expect("parsed once already");
    assert_eq!(again.pairs(), p.pairs());
    if let (Some(q), false) = (query, json) {
        let from_query: Vec<(String, String)> =
            form_urlencoded::parse(q.as_bytes()).into_owned().collect();
        assert_eq!(&p.pairs()[..from_query.len()], from_query.as_slice());
        let written = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(&from_query)
            .finish();
        let back: Vec<(String, String)> = form_urlencoded::parse(written.as_bytes())
            .into_owned()
            .collect();
        assert_eq!(
            back, from_query,
            "query parameters changed when written out"
        );
    }
}

/// `data` is `FLAGS BODY`. Bit 0 of FLAGS clear: the body is parsed with the fixed boundary
/// `XX`; set: the body's first line is the boundary (up to 70 bytes, as RFC 2046 allows) and the
/// rest is the body. The content type is lower-cased as the router does, so the boundary's case
/// comes from the body. Asserts that every part comes from a delimiter in the body, that the
/// query's parameters come first, and that text fields written out again parse back the same.
pub fn multipart(data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let (boundary, body) = if flags & 1 == 0 {
        ("XX".to_string(), rest)
    } else {
        let (first, body) = line(rest);
        let Ok(b) = std::str::from_utf8(first) else {
            return;
        };
        if b.len() > 70 {
            return;
        }
        (b.to_string(), body)
    };
    let content_type = format!("multipart/form-data; boundary={boundary}").to_ascii_lowercase();
    let query = (flags & 2 != 0).then_some("q=1&r=%20");
    let body = Bytes::copy_from_slice(body);
    let Ok(p) = block_on(Params::parse(query, Some(&content_type), &body)) else {
        return;
    };
    if let Some(q) = query {
        let first: Vec<(String, String)> =
            form_urlencoded::parse(q.as_bytes()).into_owned().collect();
        assert_eq!(&p.pairs()[..first.len()], first.as_slice());
    }
    let lower = multer::parse_boundary(&content_type).expect("parsed once already");
    let exact = exact_boundary(&body, &lower).unwrap_or(lower);
    let delimiter = format!("--{exact}");
    let delimiters = body
        .windows(delimiter.len())
        .filter(|w| *w == delimiter.as_bytes())
        .count();
    let parts = p.pairs().len() - query.map_or(0, |_| 2) + p.files().len();
    assert!(
        parts <= delimiters,
        "{parts} parts from {delimiters} delimiters"
    );
    // Text fields with plain names and values, written out again, parse back the same.
    let fields = &p.pairs()[query.map_or(0, |_| 2)..];
    let plain = |s: &str| s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b' ');
    if p.files().is_empty()
        && fields
            .iter()
            .all(|(k, v)| plain(k) && !k.is_empty() && plain(v))
    {
        let mut again = Vec::new();
        for (k, v) in fields {
            again.extend_from_slice(
                format!("--XX\r\ncontent-disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n")
                    .as_bytes(),
            );
        }
        again.extend_from_slice(b"--XX--\r\n");
        let back = block_on(Params::parse(
            None,
            Some("multipart/form-data; boundary=xx"),
            &Bytes::from(again),
        ))
        .expect("a body written from parsed fields parses");
        assert_eq!(
            back.pairs(),
            fields,
            "multipart fields changed when written out"
        );
    }
}

thread_local! {
    static RUNTIME: RefCell<Option<tokio::runtime::Runtime>> = const { RefCell::new(None) };
}

/// Runs `f` on a current-thread runtime kept for the process (the parsers do no I/O).
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    RUNTIME.with(|rt| {
        let mut rt = rt.borrow_mut();
        let rt = rt.get_or_insert_with(|| {
            tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("a current-thread runtime without I/O always builds")
        });
        rt.block_on(f)
    })
}

#[cfg(test)]
mod tests {
    /// The committed inputs of a target (`seed-*` and `crash-*`), so the unit tests replay them.
    fn corpus(target: &str) -> Vec<Vec<u8>> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus");
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir.join(target)).expect("fuzz/corpus/TARGET") {
            let path = entry.expect("entry").path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if name.starts_with("seed-") || name.starts_with("crash-") {
                out.push(std::fs::read(&path).expect("read"));
            }
        }
        assert!(out.len() >= 4, "the seeds of {target} are missing");
        out
    }

    #[test]
    fn fuzz_entries_pass_their_committed_corpus() {
        for data in corpus("signature") {
            super::signature(&data);
        }
        for data in corpus("params") {
            super::params(&data);
        }
        for data in corpus("multipart") {
            super::multipart(&data);
        }
    }
}
