//! What a request is answered with: a handler's [`Out`] (JSON for post hooks to rewrite, or a
//! finished reply) and the JSON, error and empty replies every layer builds.

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Response, StatusCode};
use serde_json::{json, Value};
use tower_http::services::fs::ServeFileSystemResponseBody;

/// A reply body: in memory, or a file streamed from `web/`.
pub type Body = Either<Full<Bytes>, ServeFileSystemResponseBody>;
/// A reply.
pub type Reply = Response<Body>;

/// What a handler answers: JSON (post hooks may rewrite it) or a finished reply (a file, an image).
pub enum Out {
    Json(Value),
    Reply(Reply),
}

impl From<Value> for Out {
    fn from(v: Value) -> Out {
        Out::Json(v)
    }
}

/// A 200 reply `{}`, without building JSON.
pub(crate) fn empty_object() -> Reply {
    let mut r = Response::new(Either::Left(Full::new(Bytes::from_static(b"{}"))));
    r.headers_mut().reserve(6);
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// A 200 JSON reply.
pub(crate) fn ok(v: Value) -> Reply {
    json_reply(StatusCode::OK, &v)
}

/// An error reply `{status, message}` with that HTTP status.
pub(crate) fn error(status: StatusCode, message: &str) -> Reply {
    error_full(status, message).map(Either::Left)
}

/// `error` with a plain in-memory body (for the proxy).
pub fn error_full(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    let v = json!({"status": status.as_u16(), "message": message});
    let mut r = Response::new(Full::new(Bytes::from(v.to_string())));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn json_reply(status: StatusCode, v: &Value) -> Reply {
    // `to_vec` writes straight into a buffer; `to_string` goes through `fmt::Display`.
    let mut body = Vec::with_capacity(256);
    if serde_json::to_writer(&mut body, v).is_err() {
        body.clear();
    }
    let mut r = Response::new(Either::Left(Full::new(Bytes::from(body))));
    *r.status_mut() = status;
    r.headers_mut().reserve(6);
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}
