//! Request dispatch: access rules (deny, disallow, allow), authentication and the admin rule,
//! then the application's checks and hooks around the first matching route; static files from
//! `web/` when no route matches. Every reply carries the `Server`, `X-Content-Type-Options: nosniff` and CORS headers.

use crate::access::{self, Signed};
use crate::api::{Api, ApiMetrics, InProgress, Req, Routes};
use crate::auth::{Account, Accounts};
use crate::error::ApiError;
use crate::params::Params;
use crate::paths::regex_set;
use crate::reply::{empty_object, error, ok, Out, Reply};
use crate::route::BoxFuture;
use bkjs_base::config::Config;
use bkjs_cache::Cache;
use bkjs_ipc::Client;
use bytes::Bytes;
use http_body_util::{BodyExt, Either, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue, CONTENT_TYPE, SERVER, X_CONTENT_TYPE_OPTIONS};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::json;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

const ALLOW_ORIGIN: HeaderName = HeaderName::from_static("access-control-allow-origin");
const ALLOW_HEADERS: HeaderName = HeaderName::from_static("access-control-allow-headers");
const ALLOW_METHODS: HeaderName = HeaderName::from_static("access-control-allow-methods");
const MAX_AGE: HeaderName = HeaderName::from_static("access-control-max-age");
const REQUEST_METHOD: HeaderName = HeaderName::from_static("access-control-request-method");
/// The methods a CORS preflight allows: every method a route may be registered with.
const PREFLIGHT_METHODS: &str = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS";
/// How long (s) a browser may keep a preflight answer.
const PREFLIGHT_MAX_AGE: &str = "86400";
const SERVER_HEADER: &str = concat!("bkjs/", env!("CARGO_PKG_VERSION"));

/// Test-only fault switch: set by `/_test/hang` when faults are enabled; stops heartbeats.
pub(crate) static HANG: AtomicBool = AtomicBool::new(false);

/// True once the test-only hang fault was triggered in this worker.
pub fn router_hang() -> bool {
    HANG.load(Ordering::SeqCst)
}

impl Api {
    /// The state of one web worker: its configuration, connections and the application's routes
    /// (the built-in groups are added here, after the application's, minus `-api-disable`).
    pub fn new(
        cfg: Config,
        ipc: Option<Client>,
        cache: Option<Cache>,
        db: Option<std::sync::Arc<bkjs_db::Db>>,
        app_routes: Routes,
        session_key: Option<Vec<u8>>,
    ) -> Api {
        // Fault switches exist only in debug builds and only when a test asks for them.
        let faults = bkjs_base::faults::enabled();
        let mut routes = app_routes;
        routes.extend(super::endpoints::builtin());
        routes.disable(cfg.list("api-disable"));
        let allow = regex_set(&cfg, &["api-allow", "api-allow-path"]);
        let deny = regex_set(&cfg, &["api-deny-path"]);
        let disallow = regex_set(&cfg, &["api-disallow-path"]);
        let ping_fast = allow.is_match("/ping")
            && !deny.is_match("/ping")
            && !disallow.is_match("/ping")
            && !routes.has_hooks();
        Api {
            upload_limit: cfg.int("api-upload-limit") as usize,
            max_url: cfg.int("api-max-url") as usize,
            max_params: cfg.int("api-max-params") as usize,
            max_json_depth: cfg.int("api-max-json-depth") as usize,
            ws_max_message: cfg.int("api-ws-max-message") as usize,
            body_timeout: cfg.duration("api-body-timeout"),
            image_jobs: tokio::sync::Semaphore::new(cfg.int("api-image-jobs") as usize),
            body_jobs: tokio::sync::Semaphore::new(cfg.int("api-body-jobs") as usize),
            busy_ms: cfg.duration("api-busy-latency").as_millis() as u64,
            max_expire_ms: i64::try_from(cfg.duration("api-max-expire").as_millis())
                .unwrap_or(i64::MAX),
            ping_fast,
            allow,
            deny,
            disallow,
            admin: regex_set(&cfg, &["api-allow-admin"]),
            read: regex_set(&cfg, &["api-read-path"]),
            read_memo: Default::default(),
            quota_rate: !cfg.map("api-quota-rate").is_empty(),
            origins: cfg
                .list("api-origins")
                .iter()
                .map(|o| o.trim_end_matches('/').to_ascii_lowercase())
                .collect(),
            web: tower_http::services::ServeDir::new(cfg.dir("web"))
                .append_index_html_on_directories(true),
            console: cfg.bool("api-console"),
            cfg,
            ipc,
            cache,
            db,
            session_key,
            accounts: Accounts::default(),
            msg: None,
            drain: None,
            requests: AtomicU64::new(0),
            lag_ms: AtomicU64::new(0),
            metrics: ApiMetrics::new(),
            faults,
            routes,
        }
    }

    /// Handles one request; never fails, errors become JSON replies.
    pub(crate) async fn handle(self: &Arc<Self>, req: Request<Incoming>) -> Reply {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let start = std::time::Instant::now();
        let _in_progress = InProgress::enter(&self.metrics.count);
        // A Uri clone shares its bytes: the path stays borrowable while the body moves on.
        let uri = req.uri().clone();
        let routed = if self.ping_fast
            && uri.path() == "/ping"
            && matches!(*req.method(), Method::GET | Method::HEAD)
            && !self.is_busy()
            && hyper::body::Body::size_hint(req.body()).exact() == Some(0)
            && !super::websocket::is_upgrade(req.headers())
        {
            // The answer `route` would give, without its allocations and path rule scans.
            Ok(empty_object())
        } else if uri.path_and_query().map_or(0, |p| p.as_str().len()) > self.max_url {
            Err(ApiError::new(
                StatusCode::URI_TOO_LONG,
                format!(
                    "the URL is longer than -api-max-url ({} bytes)",
                    self.max_url
                ),
            ))
        } else {
            // Boxed: the routing future is large, and moving it into the scope would copy it.
            Box::pin(self.route(req, uri.path(), uri.query())).await
        };
        let mut reply = match routed {
            Ok(r) => r,
            Err(e) => {
                if e.status == StatusCode::SERVICE_UNAVAILABLE {
                    self.metrics.busy.mark(1);
                }
                error(e.status, &e.message)
            }
        };
        self.metrics.response.since(start);
        let h = reply.headers_mut();
        h.insert(SERVER, HeaderValue::from_static(SERVER_HEADER));
        // No reply is ever sniffed into another type (docs/security.md).
        h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
        h.insert(ALLOW_ORIGIN, HeaderValue::from_static("*"));
        h.insert(
            ALLOW_HEADERS,
            HeaderValue::from_static("bk-signature, content-type"),
        );
        reply
    }

    async fn route(
        self: &Arc<Self>,
        mut req: Request<Incoming>,
        path: &str,
        query: Option<&str>,
    ) -> Result<Reply, ApiError> {
        self.gate(path)?;
        if is_preflight(&req) {
            return Ok(preflight());
        }
        let open = self.is_open(path);
        // A WebSocket over HTTP/2 (extended CONNECT, RFC 8441) is the GET upgrade of HTTP/1.1
        // under another name: authenticated and routed as that GET. Any other CONNECT is refused.
        let opening = if super::websocket::is_h2_connect(&req) {
            *req.method_mut() = Method::GET;
            Some(super::websocket::Opening::Connect)
        } else if req.method() == Method::CONNECT {
            return Err(ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "CONNECT is only served to open a WebSocket over HTTP/2 (:protocol websocket)",
            ));
        } else {
            super::websocket::is_upgrade(req.headers())
                .then_some(super::websocket::Opening::Upgrade)
        };
        let is_upgrade = opening.is_some();
        let upgrade = if is_upgrade {
            let lists = [self.cfg.list("api-ws-origins"), &self.origins[..]];
            super::websocket::check_origin(req.headers(), &lists)?;
            Some(hyper::upgrade::on(&mut req))
        } else {
            None
        };
        let (parts, body) = req.into_parts();
        let no_body = hyper::body::Body::size_hint(&body).exact() == Some(0);
        let content_type = parts
            .headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        // A form POST signs its body in the query's place: it is read first (within the size
        // limit and the body timeout). Every other request is authenticated from its headers and
        // refused before a byte of its body is read.
        let form = !no_body && crate::auth::is_form_post(parts.method.as_str(), content_type);
        let wants_account = !open || access::has_credentials(&parts.headers, query);
        let mut signed = Signed {
            method: &parts.method,
            headers: &parts.headers,
            path,
            query,
            upgrade: is_upgrade,
            // No body: nothing to wait for, and nothing for a BodyCheck to look at later.
            body: no_body.then_some(&[][..]),
        };
        let mut account: Option<Account> = None;
        let mut body_check = None;
        if wants_account && !form {
            match access::authenticate(self, &signed).await {
                Ok((a, check)) => {
                    account = Some(a);
                    body_check = Some(check);
                }
                // The body is never read: hyper closes the connection after the answer.
                Err(e) if !open || e.status.is_server_error() => return Err(e),
                // An open path still learns who signed, when the signature is good; a bad one
                // leaves the request anonymous. Our own failure to check it (the replay cache
                // unreachable, 503) is answered, never taken for anonymous: the client retries.
                Err(_) => {}
            }
            if let Some(a) = account.as_ref().filter(|_| self.quota_rate) {
                // Over the quota: refused before the body is read.
                crate::quota::check_rate(&self.cfg, self.cache.as_ref(), a).await?;
            }
        }
        let body = if no_body {
            Bytes::new()
        } else {
            self.read_body(body, path).await?
        };
        if wants_account && form {
            signed.body = Some(&body);
            match access::authenticate(self, &signed).await {
                Ok((a, _checked)) => {
                    if self.quota_rate {
                        crate::quota::check_rate(&self.cfg, self.cache.as_ref(), &a).await?;
                    }
                    account = Some(a);
                }
                Err(e) if !open || e.status.is_server_error() => return Err(e),
                Err(_) => {}
            }
        } else if let Some(check) = body_check {
            // The checksum of megabytes takes a while: off the request task when large.
            let b = body.clone();
            if let Err(e) = self.off_task(b.len(), move || check.check(&b)).await? {
                tracing::info!(
                    "auth: the body of {} {path} is refused: {}",
                    parts.method,
                    e.message
                );
                if !open {
                    return Err(e);
                }
                account = None;
            }
        }
        self.check_admin(path, open, account.as_ref())?;
        if let (Some(on), Some(opening)) = (upgrade, opening) {
            return super::websocket::accept(
                self.clone(),
                &parts,
                opening,
                account,
                on,
                frame_dispatch,
            );
        }
        self.dispatch(
            parts.method,
            parts.headers,
            path,
            query,
            body,
            account,
            true,
        )
        .await
    }

    /// The request body, at most `-api-upload-limit` bytes (413) and within `-api-body-timeout`
    /// (408): a client that stalls mid-body does not hold its connection forever.
    async fn read_body(&self, body: Incoming, path: &str) -> Result<Bytes, ApiError> {
        let limit = self.upload_limit;
        let read = Limited::new(body, limit).collect();
        let collected = if self.body_timeout.is_zero() {
            read.await
        } else {
            match tokio::time::timeout(self.body_timeout, read).await {
                Ok(r) => r,
                Err(_) => {
                    tracing::info!(
                        "the body of a request to {path} did not arrive within -api-body-timeout ({:?})",
                        self.body_timeout
                    );
                    return Err(ApiError::new(
                        StatusCode::REQUEST_TIMEOUT,
                        "the request body did not arrive within -api-body-timeout",
                    ));
                }
            }
        };
        match collected {
            Ok(b) => Ok(b.to_bytes()),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                tracing::info!("the body of a request to {path} is larger than -api-upload-limit");
                Err(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("request body is larger than -api-upload-limit ({limit} bytes)"),
                ))
            }
            Err(e) => Err(ApiError::bad(format!("cannot read the request body: {e}"))),
        }
    }

    /// Runs the route for an authenticated request (static files from `web/` when `statics`
    /// and no route matches): parameters, checks and hooks, the handler, post hooks, headers.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn dispatch(
        self: &Arc<Self>,
        method: Method,
        headers: hyper::HeaderMap,
        path: &str,
        query: Option<&str>,
        body: Bytes,
        account: Option<Account>,
        statics: bool,
    ) -> Result<Reply, ApiError> {
        let content_type = headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_ascii_lowercase);
        let found = match self.routes.find(&method, path) {
            Ok(found) => found,
            Err(other_method) => {
                if statics && matches!(method, Method::GET | Method::HEAD) {
                    if let Some(r) = self.static_file(&method, &headers, path).await {
                        return Ok(r);
                    }
                }
                if self.faults {
                    if let Some(reply) = self.fault(path, query).await {
                        return Ok(reply);
                    }
                }
                return Err(if other_method {
                    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed")
                } else {
                    ApiError::not_found("Not found")
                });
            }
        };
        // serde_json refuses more than 128 levels itself (Params names the parameter then); a
        // lower limit costs a scan of the body.
        if self.max_json_depth < crate::params::JSON_PARSER_DEPTH
            && content_type
                .as_deref()
                .is_some_and(|c| c.starts_with("application/json"))
            && crate::params::json_deeper_than(&body, self.max_json_depth)
        {
            return Err(ApiError::bad(format!(
                "the JSON body is nested deeper than -api-max-json-depth ({})",
                self.max_json_depth
            )));
        }
        let params = if body.len() < crate::api::LARGE_BODY {
            Params::parse(query, content_type.as_deref(), &body).await
        } else {
            let (q, ct, b) = (
                query.map(str::to_string),
                content_type.clone(),
                body.clone(),
            );
            let rt = tokio::runtime::Handle::current();
            self.off_task(b.len(), move || {
                rt.block_on(Params::parse(q.as_deref(), ct.as_deref(), &b))
            })
            .await?
        }
        .map_err(ApiError::bad)?;
        if params.pairs().len() + params.files().len() > self.max_params {
            return Err(ApiError::bad(format!(
                "more than -api-max-params ({}) parameters or parts",
                self.max_params
            )));
        }
        self.check_unsecure(path, &params)?;
        let mut r = Req::new(
            self.clone(),
            method,
            path.to_string(),
            headers,
            params,
            body,
            account,
        );
        r.captures = found.captures;
        let r = Arc::new(r);
        let start = std::time::Instant::now();
        let out = async {
            self.routes.before(&r).await?;
            (found.handler)(r.clone()).await
        }
        .await;
        found.timer.since(start);
        let out = out?;
        let mut reply = match out {
            Out::Json(mut v) => {
                self.routes.after(&r, &mut v);
                ok(v)
            }
            Out::Reply(reply) => reply,
        };
        for (name, value) in r.take_reply_headers() {
            match HeaderValue::from_str(&value) {
                Ok(v) => {
                    reply.headers_mut().append(name, v);
                }
                Err(_) => tracing::warn!("reply header {name} has a value that is not ASCII"),
            }
        }
        Ok(reply)
    }

    /// A file under `-web-dir`, else the built-in console's ([`crate::console`]), or `None`
    /// when there is none (directory traversal is refused by tower-http's ServeDir).
    async fn static_file(
        &self,
        method: &Method,
        headers: &hyper::HeaderMap,
        path: &str,
    ) -> Option<Reply> {
        use tower::ServiceExt;
        let mut req = Request::new(http_body_util::Empty::<Bytes>::new());
        *req.method_mut() = method.clone();
        *req.uri_mut() = path.parse().ok()?;
        for h in [
            hyper::header::RANGE,
            hyper::header::IF_MODIFIED_SINCE,
            hyper::header::IF_NONE_MATCH,
            hyper::header::ACCEPT_ENCODING,
        ] {
            if let Some(v) = headers.get(&h) {
                req.headers_mut().insert(h, v.clone());
            }
        }
        let resp = match self.web.clone().oneshot(req).await {
            Ok(r) => r,
            Err(e) => match e {},
        };
        if resp.status() == StatusCode::NOT_FOUND {
            return if self.console {
                crate::console::file(method, headers, path)
            } else {
                None
            };
        }
        Some(resp.map(Either::Right))
    }

    /// `_pool`, `_noscan` and `_noprocessrows` are for the endpoint groups listed in
    /// `-api-unsecure` (the first part of the path: `data` for `/data/get/...`); anywhere else
    /// they are a 400 rather than silently ignored.
    fn check_unsecure(&self, path: &str, params: &Params) -> Result<(), ApiError> {
        let Some(name) = crate::endpoints::common::query::UNSECURE
            .iter()
            .find(|n| params.get(n).is_some())
        else {
            return Ok(());
        };
        let group = path.trim_start_matches('/').split('/').next().unwrap_or("");
        if self.cfg.list("api-unsecure").iter().any(|g| g == group) {
            Ok(())
        } else {
            Err(ApiError::bad(format!(
                "{name} is only accepted for the endpoint groups listed in -api-unsecure, not {group}"
            )))
        }
    }

    /// Test-only fault switches (debug builds with `BKJS_TEST_FAULTS=1`).
    async fn fault(&self, path: &str, query: Option<&str>) -> Option<Reply> {
        match path {
            "/_test/block" => {
                // Block the runtime thread for `ms`, like a long synchronous computation.
                let ms: u64 = query
                    .and_then(|q| q.strip_prefix("ms="))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(1000);
                std::thread::sleep(std::time::Duration::from_millis(ms));
                Some(ok(json!({})))
            }
            "/_test/hang" => {
                tracing::warn!("test fault: this worker hangs now");
                HANG.store(true, Ordering::SeqCst);
                // Block the runtime thread like a real hang would.
                std::thread::sleep(std::time::Duration::from_secs(3600));
                Some(ok(json!({})))
            }
            "/_test/cache/drop-broadcast" => {
                let ipc = self.ipc.as_ref()?;
                Some(
                    match ipc.request(bkjs_ipc::Request::FaultDropBroadcast).await {
                        Ok(bkjs_ipc::Reply::Ok) => ok(json!({})),
                        Ok(other) => error(StatusCode::BAD_REQUEST, &format!("{other:?}")),
                        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
                    },
                )
            }
            _ => None,
        }
    }
}

/// A WebSocket frame's request ([`crate::websocket::Dispatch`]): dispatched like an HTTP GET,
/// without static files.
fn frame_dispatch(
    api: Arc<Api>,
    headers: hyper::HeaderMap,
    path: String,
    query: Option<String>,
    account: Option<Account>,
) -> BoxFuture<Result<Reply, ApiError>> {
    Box::pin(async move {
        api.dispatch(
            Method::GET,
            headers,
            &path,
            query.as_deref(),
            Bytes::new(),
            account,
            false,
        )
        .await
    })
}

/// A CORS preflight: `OPTIONS` with `Origin` and `Access-Control-Request-Method`. Browsers send
/// it without credentials before a cross-origin request that carries `bk-signature` or a JSON
/// body, so it is answered before authentication (the real request is still authenticated).
fn is_preflight<B>(req: &Request<B>) -> bool {
    req.method() == Method::OPTIONS
        && req.headers().contains_key(hyper::header::ORIGIN)
        && req.headers().contains_key(REQUEST_METHOD)
}

/// The 204 answer to a preflight; [`Api::handle`] adds the origin and headers CORS fields.
fn preflight() -> Reply {
    let mut r = Response::new(Either::Left(Full::new(Bytes::new())));
    *r.status_mut() = StatusCode::NO_CONTENT;
    let h = r.headers_mut();
    h.insert(ALLOW_METHODS, HeaderValue::from_static(PREFLIGHT_METHODS));
    h.insert(MAX_AGE, HeaderValue::from_static(PREFLIGHT_MAX_AGE));
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn api_with(routes: Routes) -> (tempfile::TempDir, Arc<Api>) {
        let home = tempfile::tempdir().expect("temp home");
        let reg = bkjs_base::config::registry(&[
            crate::geo::PARAMS,
            crate::endpoints::PARAMS,
            bkjs_ipc::PARAMS,
            bkjs_cache::PARAMS,
            bkjs_db::front::PARAMS,
            crate::config::PARAMS,
            bkjs_msg::PARAMS,
            bkjs_jobs::PARAMS,
        ]);
        let words = vec!["-home".to_string(), home.path().display().to_string()];
        let args = bkjs_base::config::Args::parse(&words, &reg).expect("args");
        let cfg = Config::load(&reg, &args, &Default::default()).expect("config");
        let api = Api::new(cfg, None, None, None, routes, None);
        (home, Arc::new(api))
    }

    /// Dispatches an unauthenticated request straight to the routes; status and JSON body.
    async fn call(api: &Arc<Api>, method: Method, path: &str) -> (StatusCode, Value) {
        let out = api
            .dispatch(
                method,
                hyper::HeaderMap::new(),
                path,
                None,
                Bytes::new(),
                None,
                false,
            )
            .await;
        match out {
            Ok(reply) => {
                let status = reply.status();
                let Either::Left(body) = reply.into_body() else {
                    panic!("a JSON reply, not a file")
                };
                let bytes = body.collect().await.expect("body").to_bytes();
                (status, serde_json::from_slice(&bytes).expect("JSON"))
            }
            Err(e) => (e.status, json!({"message": e.message})),
        }
    }

    type Log = Arc<parking_lot::Mutex<Vec<String>>>;

    fn note(log: &Log, what: &str) {
        log.lock().push(what.to_string());
    }

    /// A check that notes it ran; `Ok`.
    fn noting(
        log: &Log,
        what: &'static str,
    ) -> impl Fn(Arc<Req>) -> std::future::Ready<Result<(), ApiError>> + Send + Sync + 'static {
        let log = log.clone();
        move |_r| {
            note(&log, what);
            std::future::ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn hooks_and_checks_run_by_method_and_path_in_registration_order() {
        let log: Log = Default::default();
        let mut routes = Routes::new();
        // Pre hooks registered before the access check still run after it.
        routes
            .pre("GET", "^/t/", noting(&log, "pre GET"))
            .expect("pre");
        routes
            .access("*", "^/t/", noting(&log, "access *"))
            .expect("access");
        routes
            .pre("POST", "^/t/", noting(&log, "pre POST"))
            .expect("pre");
        routes
            .pre("*", "^/other/", noting(&log, "pre other"))
            .expect("pre");
        routes.pre("*", "^/t/", noting(&log, "pre *")).expect("pre");
        routes
            .pre("GET", "^/t/locked$", |_r| async {
                Err(ApiError::new(StatusCode::PAYMENT_REQUIRED, "pay first"))
            })
            .expect("pre");
        routes
            .pre("GET", "^/t/", noting(&log, "pre GET 2"))
            .expect("pre");
        // Post hooks see each other's changes in registration order; POST ones never run here.
        routes
            .post("GET", "^/t/", |_r, v| v["added"] = json!(1))
            .expect("post");
        routes
            .post("POST", "^/t/", |_r, v| v["added"] = json!("by POST"))
            .expect("post");
        routes
            .post("*", "^/t/[a-z]+$", |_r, v| {
                let n = v["added"].as_i64().unwrap_or(0);
                v["added"] = json!(n + 1);
            })
            .expect("post");
        let handler_log = log.clone();
        routes
            .add("GET", "/t/{name}", "", move |r: Arc<Req>| {
                let log = handler_log.clone();
                async move {
                    note(&log, "handler");
                    Ok(Out::Json(json!({"name": r.capture("name")})))
                }
            })
            .expect("route");
        let (_home, api) = api_with(routes);

        let (status, v) = call(&api, Method::GET, "/t/x").await;
        assert_eq!(status, StatusCode::OK, "{v}");
        assert_eq!(v, json!({"name": "x", "added": 2}));
        assert_eq!(
            *log.lock(),
            ["access *", "pre GET", "pre *", "pre GET 2", "handler"]
        );

        // A pre hook refuses with its own status: later hooks and the handler do not run.
        log.lock().clear();
        let (status, v) = call(&api, Method::GET, "/t/locked").await;
        assert_eq!(status, StatusCode::PAYMENT_REQUIRED, "{v}");
        assert_eq!(v["message"], json!("pay first"));
        assert_eq!(*log.lock(), ["access *", "pre GET", "pre *"]);

        // No route for the method: no hook runs.
        log.lock().clear();
        let (status, _) = call(&api, Method::POST, "/t/x").await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert!(log.lock().is_empty());
    }

    #[test]
    fn preflight_needs_options_origin_and_a_requested_method() {
        let req = |method: Method, headers: &[(&str, &str)]| {
            let mut b = Request::builder().method(method).uri("/account/get");
            for (k, v) in headers {
                b = b.header(*k, *v);
            }
            b.body(()).expect("request")
        };
        let full = [
            ("origin", "http://app.example"),
            ("access-control-request-method", "POST"),
        ];
        assert!(is_preflight(&req(Method::OPTIONS, &full)));
        assert!(!is_preflight(&req(Method::GET, &full)));
        assert!(!is_preflight(&req(Method::OPTIONS, &full[..1])));
        assert!(!is_preflight(&req(Method::OPTIONS, &full[1..])));
        let r = preflight();
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        assert!(r.headers()[ALLOW_METHODS]
            .to_str()
            .expect("ascii")
            .contains("POST"));
        assert_eq!(r.headers()[MAX_AGE], "86400");
    }
}
