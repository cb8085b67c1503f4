//! The web console (`web/`: api.html, doc.html, js, css) built into the binary, so a fresh home
//! serves it without any file on disk: `bkjs run-backend` and http://127.0.0.1:8000/api.html.
//! A file of the same name under `-web-dir` wins (an application overrides or adds its own);
//! `-api-console false` turns the built-in copy off. Answers carry a content hash as the ETag
//! and `Cache-Control: no-cache`, so a browser revalidates and sees a new binary's console.

use crate::reply::Reply;
use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE, ETAG, IF_NONE_MATCH};
use hyper::{Method, Response, StatusCode};
use include_dir::{include_dir, Dir};
use std::hash::{Hash, Hasher};

static WEB: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/../../web");

/// The built-in file at `path` (`/api.html`, `/js/bkjs.js`; `/` is `/index.html`), if any.
pub(crate) fn file(method: &Method, headers: &hyper::HeaderMap, path: &str) -> Option<Reply> {
    let rel = path.strip_prefix('/')?;
    let rel = if rel.is_empty() || rel.ends_with('/') {
        format!("{rel}index.html")
    } else {
        rel.to_string()
    };
    // include_dir looks names up literally: no `..`, no percent-decoding, nothing outside web/.
    let f = WEB.get_file(&rel)?;
    let etag = etag(f.contents());
    let mut r = if headers
        .get(IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == etag.as_bytes())
    {
        let mut r = Response::new(Either::Left(Full::new(Bytes::new())));
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r
    } else if method == Method::HEAD {
        Response::new(Either::Left(Full::new(Bytes::new())))
    } else {
        Response::new(Either::Left(Full::new(Bytes::from_static(f.contents()))))
    };
    let mime = mime_guess::from_path(&rel).first_or_octet_stream();
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(mime.essence_str()) {
        h.insert(CONTENT_TYPE, v);
    }
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(ETAG, v);
    }
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Some(r)
}

/// A strong ETag from the file's contents (stable for one build of the binary).
fn etag(contents: &[u8]) -> String {
    let mut s = std::collections::hash_map::DefaultHasher::new();
    contents.hash(&mut s);
    format!("\"bk-{:016x}-{}\"", s.finish(), contents.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(path: &str, headers: &hyper::HeaderMap) -> Option<Reply> {
        file(&Method::GET, headers, path)
    }

    #[test]
    fn serves_the_console_with_type_and_etag() {
        let none = hyper::HeaderMap::new();
        let r = get("/api.html", &none).expect("api.html is built in");
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()[CONTENT_TYPE], "text/html");
        let tag = r.headers()[ETAG].clone();
        let js = get("/js/bkjs.js", &none).expect("js is built in");
        assert!(js.headers()[CONTENT_TYPE]
            .to_str()
            .expect("ascii")
            .contains("javascript"));
        let mut h = hyper::HeaderMap::new();
        h.insert(IF_NONE_MATCH, tag);
        assert_eq!(
            get("/api.html", &h).expect("304").status(),
            StatusCode::NOT_MODIFIED
        );
    }

    #[test]
    fn nothing_outside_web_or_missing() {
        let none = hyper::HeaderMap::new();
        for p in [
            "/../Cargo.toml",
            "/js/../../Cargo.toml",
            "/nope.html",
            "api.html",
            "/%61pi.html",
        ] {
            assert!(get(p, &none).is_none(), "{p}");
        }
    }
}
