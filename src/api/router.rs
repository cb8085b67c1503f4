//! Request dispatch: access rules first (deny, then allow), then the route. Until request signing
//! exists, a path that no allow pattern matches is refused with 401.

use super::endpoints;
use super::params::Params;
use crate::cache::Cache;
use crate::config::Config;
use crate::ipc::{Client, Msg};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue, CONTENT_TYPE, SERVER};
use hyper::{Request, Response, StatusCode};
use regex::RegexSet;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// A reply body.
pub type Reply = Response<Full<Bytes>>;

const ALLOW_ORIGIN: HeaderName = HeaderName::from_static("access-control-allow-origin");
const ALLOW_HEADERS: HeaderName = HeaderName::from_static("access-control-allow-headers");
const SERVER_HEADER: &str = concat!("bkjs/", env!("CARGO_PKG_VERSION"));

/// Test-only fault switch: set by `/_test/hang` when faults are enabled; stops heartbeats.
pub static HANG: AtomicBool = AtomicBool::new(false);

/// The state a web worker serves requests with.
pub struct Api {
    pub cfg: Config,
    pub ipc: Option<Client>,
    /// The cache this worker uses (`None` outside a web worker).
    pub cache: Option<Cache>,
    /// The database pools and tables (`None` when the worker has none).
    pub db: Option<std::sync::Arc<crate::db::Db>>,
    /// Requests served, reported in heartbeats.
    pub requests: AtomicU64,
    faults: bool,
    /// `-api-allow` and `-api-allow-path` patterns compiled into one set.
    allow: PathRules,
    deny: PathRules,
    disallow: PathRules,
    /// `-api-upload-limit`, read once.
    upload_limit: usize,
}

/// One automaton for all the patterns of some parameters: a path is tested once, not per pattern.
fn regex_set(cfg: &Config, params: &[&str]) -> PathRules {
    let mut exact = std::collections::HashSet::new();
    let mut patterns: Vec<&str> = Vec::new();
    for r in params.iter().flat_map(|p| cfg.regexps(p).iter()) {
        match literal_path(r.as_str()) {
            Some(path) => {
                exact.insert(path);
            }
            None => patterns.push(r.as_str()),
        }
    }
    PathRules {
        exact,
        // Every pattern already compiled on its own when the configuration was loaded.
        set: RegexSet::new(&patterns).expect("patterns validated by the config loader"),
    }
}

/// `^/some/path$` with no other regexp syntax: the one path it matches.
fn literal_path(pattern: &str) -> Option<String> {
    let inner = pattern.strip_prefix('^')?.strip_suffix('$')?;
    let plain = inner.starts_with('/')
        && inner
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '_' | '-'));
    plain.then(|| inner.to_string())
}

/// Path patterns: exact paths in a hash set (the common `^/ping$` kind), the rest in one regex set.
pub struct PathRules {
    exact: std::collections::HashSet<String>,
    set: RegexSet,
}

impl PathRules {
    pub fn is_match(&self, path: &str) -> bool {
        self.exact.contains(path) || self.set.is_match(path)
    }
}

impl Api {
    pub fn new(
        cfg: Config,
        ipc: Option<Client>,
        cache: Option<Cache>,
        db: Option<std::sync::Arc<crate::db::Db>>,
    ) -> Api {
        // Fault switches exist only in debug builds and only when a test asks for them.
        let faults =
            cfg!(debug_assertions) && std::env::var("BKJS_TEST_FAULTS").as_deref() == Ok("1");
        Api {
            upload_limit: cfg.int("api-upload-limit") as usize,
            allow: regex_set(&cfg, &["api-allow", "api-allow-path"]),
            deny: regex_set(&cfg, &["api-deny-path"]),
            disallow: regex_set(&cfg, &["api-disallow-path"]),
            cfg,
            ipc,
            cache,
            db,
            requests: AtomicU64::new(0),
            faults,
        }
    }

    /// Handles one request; never fails, errors become JSON replies.
    pub async fn handle(&self, req: Request<Incoming>) -> Reply {
        self.requests.fetch_add(1, Ordering::Relaxed);
        // A Uri clone shares its bytes: the path stays borrowable while the body moves on.
        let uri = req.uri().clone();
        let mut reply = self.route(req, uri.path(), uri.query()).await;
        let h = reply.headers_mut();
        h.insert(SERVER, HeaderValue::from_static(SERVER_HEADER));
        h.insert(ALLOW_ORIGIN, HeaderValue::from_static("*"));
        h.insert(
            ALLOW_HEADERS,
            HeaderValue::from_static("bk-signature, content-type"),
        );
        reply
    }

    async fn route(&self, req: Request<Incoming>, path: &str, query: Option<&str>) -> Reply {
        if self.deny.is_match(path) {
            return error(StatusCode::FORBIDDEN, "Access denied");
        }
        if self.disallow.is_match(path) {
            return error(StatusCode::NOT_FOUND, "Not found");
        }
        if !self.allow.is_match(path) {
            return error(StatusCode::UNAUTHORIZED, "Not authenticated");
        }
        let content_type = req.headers().get(CONTENT_TYPE).cloned();
        let limit = self.upload_limit;
        let body = if hyper::body::Body::size_hint(req.body()).exact() == Some(0) {
            Bytes::new()
        } else {
            match Limited::new(req.into_body(), limit).collect().await {
                Ok(b) => b.to_bytes(),
                Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                    return error(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        &format!("request body is larger than -api-upload-limit ({limit} bytes)"),
                    )
                }
                Err(e) => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        &format!("cannot read the request body: {e}"),
                    )
                }
            }
        };
        if path == "/ping" {
            return empty_object();
        }
        let content_type = content_type
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .map(str::to_ascii_lowercase);
        let params = match Params::new(query, content_type.as_deref(), &body) {
            Ok(p) => p,
            Err(e) => return error(StatusCode::BAD_REQUEST, &e),
        };
        if path.starts_with("/data/") {
            if let Some(reply) = endpoints::data::handle(self, path, &params).await {
                return reply;
            }
        }
        if path.starts_with("/system/") {
            if let Some(reply) = endpoints::system::handle(self, path, &params).await {
                return reply;
            }
        }
        if self.faults {
            if let Some(reply) = self.fault(path).await {
                return reply;
            }
        }
        error(StatusCode::NOT_FOUND, "Not found")
    }

    /// Test-only fault switches (debug builds with `BKJS_TEST_FAULTS=1`).
    async fn fault(&self, path: &str) -> Option<Reply> {
        match path {
            "/_test/hang" => {
                tracing::warn!("test fault: this worker hangs now");
                HANG.store(true, Ordering::SeqCst);
                // Block the runtime thread like a real hang would.
                std::thread::sleep(std::time::Duration::from_secs(3600));
                Some(ok(json!({})))
            }
            "/_test/cache/drop-broadcast" => {
                let ipc = self.ipc.as_ref()?;
                Some(match ipc.request(Msg::FaultDropBroadcast).await {
                    Ok(Msg::Ok) => ok(json!({})),
                    Ok(other) => error(StatusCode::BAD_REQUEST, &format!("{other:?}")),
                    Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
                })
            }
            _ => None,
        }
    }
}

/// A 200 reply `{}`, without building JSON.
pub fn empty_object() -> Reply {
    let mut r = Response::new(Full::new(Bytes::from_static(b"{}")));
    r.headers_mut().reserve(6);
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// A 200 JSON reply.
pub fn ok(v: Value) -> Reply {
    json_reply(StatusCode::OK, &v)
}

/// An error reply `{status, message}` with that HTTP status.
pub fn error(status: StatusCode, message: &str) -> Reply {
    json_reply(
        status,
        &json!({"status": status.as_u16(), "message": message}),
    )
}

fn json_reply(status: StatusCode, v: &Value) -> Reply {
    let mut r = Response::new(Full::new(Bytes::from(v.to_string())));
    *r.status_mut() = status;
    r.headers_mut().reserve(6);
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_patterns_become_exact_paths() {
        assert_eq!(literal_path("^/ping$").as_deref(), Some("/ping"));
        assert_eq!(literal_path("^/$").as_deref(), Some("/"));
        assert_eq!(
            literal_path("^/account/add$").as_deref(),
            Some("/account/add")
        );
        assert_eq!(literal_path("^/public"), None, "a prefix is a regexp");
        assert_eq!(literal_path("^/a.b$"), None, "a dot is a regexp");
        assert_eq!(literal_path(r"^/x\d$"), None);
        let rules = PathRules {
            exact: ["/ping".to_string()].into_iter().collect(),
            set: RegexSet::new([r"^/public"]).expect("set"),
        };
        assert!(rules.is_match("/ping"));
        assert!(!rules.is_match("/ping/x"));
        assert!(rules.is_match("/public/a"));
        assert!(!rules.is_match("/other"));
    }
}
