//! The state a web worker serves requests with ([`Api`]), one request as handlers see it
//! ([`Req`]) and the route table they are served from ([`Routes`]). The three refer to each other
//! (a request holds its worker's state, the state holds the routes, the routes take requests), so
//! they are declared here together, over the generic table of `route`; serving a request is
//! `router`'s.

use crate::auth::{Account, Accounts};
use crate::error::ApiError;
use crate::params::Params;
use crate::paths::{has_dot_segment, PathRules};
use crate::route::{RouteTable, Routed};
use bkjs_base::config::Config;
use bkjs_cache::Cache;
use bkjs_db::Row;
use bkjs_ipc::Client;
use bytes::Bytes;
use hyper::{HeaderMap, Method, StatusCode};
use parking_lot::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Every route and hook of an application, built-in groups included.
pub type Routes = RouteTable<Req>;

/// The state a web worker serves requests with.
pub struct Api {
    pub cfg: Config,
    pub ipc: Option<Client>,
    /// The cache this worker uses (`None` outside a web worker).
    pub cache: Option<Cache>,
    /// The database pools and tables (`None` when the worker has none).
    pub db: Option<std::sync::Arc<bkjs_db::Db>>,
    /// The key session cookies are signed with (`None`: sessions are off).
    pub session_key: Option<Vec<u8>>,
    /// Accounts of the logins that signed requests lately, by their cached `bk_auth` rows.
    pub(crate) accounts: Accounts,
    /// This worker's pub/sub (`None` outside a web worker).
    pub msg: Option<bkjs_msg::PubSub>,
    /// Turns true when the worker starts draining: long polls and WebSockets end early.
    pub drain: Option<tokio::sync::watch::Receiver<bool>>,
    /// Requests served, reported in heartbeats.
    pub requests: AtomicU64,
    /// How late (ms) the runtime's last timer tick ran: the queue latency `-api-busy-latency`
    /// compares against.
    pub lag_ms: AtomicU64,
    pub(crate) faults: bool,
    pub(crate) routes: Routes,
    /// `-api-allow` and `-api-allow-path` patterns compiled into one set.
    pub(crate) allow: PathRules,
    pub(crate) deny: PathRules,
    pub(crate) disallow: PathRules,
    /// `-api-allow-admin`: paths only admins may call.
    pub(crate) admin: PathRules,
    /// `-api-read-path`: routes that only read (no CSRF rule, no replay cache).
    pub(crate) read: PathRules,
    /// What `read` said of the paths seen lately: a map lookup instead of a regexp search on
    /// every authenticated request (bounded; cleared when full).
    pub(crate) read_memo:
        Mutex<std::collections::HashMap<Box<str>, bool, foldhash::fast::RandomState>>,
    /// `-api-quota-rate` names at least one account type: requests are counted.
    pub(crate) quota_rate: bool,
    /// `-api-origins`, lower-cased: other origins allowed to call writes with the session cookie.
    pub(crate) origins: Vec<String>,
    /// `-api-upload-limit`, read once.
    pub(crate) upload_limit: usize,
    /// `-api-max-url`: longest path and query, in bytes.
    pub(crate) max_url: usize,
    /// `-api-max-params`: most parameters (query, form, JSON fields, multipart parts) of a request.
    pub(crate) max_params: usize,
    /// `-api-max-json-depth`: deepest nesting of a JSON body.
    pub(crate) max_json_depth: usize,
    /// `-api-ws-max-message`: largest WebSocket message (and frame) a client may send.
    pub(crate) ws_max_message: usize,
    /// `-api-body-timeout`, read once (zero: none).
    pub(crate) body_timeout: std::time::Duration,
    /// `-api-image-jobs`: permits for image conversions on the blocking pool.
    pub(crate) image_jobs: tokio::sync::Semaphore,
    /// `-api-body-jobs`: permits for parsing and decoding large bodies on the blocking pool.
    pub(crate) body_jobs: tokio::sync::Semaphore,
    pub(crate) busy_ms: u64,
    /// `-api-max-expire` in milliseconds, read once: how far ahead a request signature may expire.
    pub(crate) max_expire_ms: i64,
    /// `/ping` may be answered before routing: it is open (`-api-allow`), neither denied nor
    /// disallowed, and no hook could see it. Decided once, from this worker's configuration.
    pub(crate) ping_fast: bool,
    pub(crate) web: tower_http::services::ServeDir,
    /// `-api-console`: the built-in console answers where `web` has no file.
    pub(crate) console: bool,
    pub(crate) metrics: ApiMetrics,
}

/// The request metrics of docs/stats.md (`api`): held here so the hot path does no name lookups.
pub(crate) struct ApiMetrics {
    /// Every request, as a timer: its count and rates are the request count and rates.
    pub(crate) response: Arc<bkjs_base::metrics::Timer>,
    /// Requests refused with 503.
    pub(crate) busy: Arc<bkjs_base::metrics::Meter>,
    /// How late the runtime runs timers (ms), sampled every 100 ms.
    pub(crate) queue: Arc<bkjs_base::metrics::Histogram>,
    /// Requests in progress (a gauge: the machine-wide figure is the sum over the workers).
    pub(crate) count: Arc<bkjs_base::metrics::Gauge>,
}

/// One request in progress in `api.count`; counted out when dropped, also when the client goes
/// away and the request's future is dropped.
pub(crate) struct InProgress<'a>(&'a bkjs_base::metrics::Gauge);

impl<'a> InProgress<'a> {
    pub(crate) fn enter(g: &'a bkjs_base::metrics::Gauge) -> InProgress<'a> {
        g.add(1.0);
        InProgress(g)
    }
}

impl Drop for InProgress<'_> {
    fn drop(&mut self) {
        self.0.add(-1.0);
    }
}

impl ApiMetrics {
    pub(crate) fn new() -> ApiMetrics {
        let r = bkjs_base::metrics::Registry::global();
        ApiMetrics {
            response: r.timer("api.response"),
            busy: r.meter("api.busy"),
            queue: r.histogram("api.queue"),
            count: r.gauge("api.count"),
        }
    }
}

/// Bodies this large (bytes) are parsed and decoded off the request task ([`Api::off_task`]).
pub(crate) const LARGE_BODY: usize = 256 * 1024;

/// `path` without the extension of its last segment (`/a/b.png` -> `/a/b`): what the access
/// rules that must not depend on an extension look at.
pub(crate) fn route_of(path: &str) -> &str {
    let last = path.rfind('/').map_or(0, |i| i + 1);
    match path[last..].rfind('.') {
        Some(dot) if dot > 0 => &path[..last + dot],
        _ => path,
    }
}

impl Api {
    /// Resolves once this worker starts draining (never outside a web worker).
    pub(crate) async fn draining(&self) {
        match &self.drain {
            Some(rx) => {
                let mut rx = rx.clone();
                // A dropped sender means the worker is ending: the same as draining.
                let _ = rx.wait_for(|d| *d).await;
            }
            None => std::future::pending().await,
        }
    }

    /// The routes this worker serves.
    pub(crate) fn routes(&self) -> &Routes {
        &self.routes
    }

    /// The path rules every request meets first: a `.` or `..` segment (400), deny (403),
    /// disallow (404), busy (503).
    pub(crate) fn gate(&self, path: &str) -> Result<(), ApiError> {
        if has_dot_segment(path) {
            return Err(ApiError::bad("a path may not have . or .. segments"));
        }
        if self.deny.is_match(path) {
            return Err(ApiError::denied("Access denied"));
        }
        if self.disallow.is_match(path) {
            return Err(ApiError::not_found("Not found"));
        }
        if self.is_busy() {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "Server is busy, try again later",
            ));
        }
        Ok(())
    }

    /// Whether the runtime runs timers later than `-api-busy-latency` (answer 503).
    pub(crate) fn is_busy(&self) -> bool {
        self.busy_ms > 0 && self.lag_ms.load(Ordering::Relaxed) > self.busy_ms
    }

    /// Whether `path` needs no authentication (`-api-allow`, `-api-allow-path`).
    pub(crate) fn is_open(&self, path: &str) -> bool {
        self.allow.is_match(path)
    }

    /// The admin rule: a path that matches `-api-allow-admin` needs an admin unless an allow
    /// pattern opens its route, the path without an extension on its last segment. So an
    /// explicit `-api-allow-path ^/system/` opens `/system/...`, but the default `\.png$` rule
    /// never opens `/data/select/bk_auth.png` to anonymous callers.
    pub(crate) fn check_admin(
        &self,
        path: &str,
        open: bool,
        account: Option<&Account>,
    ) -> Result<(), ApiError> {
        if account.is_some_and(Account::is_admin) || !self.admin.is_match(path) {
            return Ok(());
        }
        // `open` is `is_open(path)`, already known to the caller: the route is the path itself
        // unless its last segment has an extension.
        let route = route_of(path);
        let route_open = if route.len() == path.len() {
            open
        } else {
            self.is_open(route)
        };
        if route_open {
            return Ok(());
        }
        Err(ApiError::denied("Access denied: admins only"))
    }

    /// Runs `work` on a body of `size` bytes: on the request task when the body is small, on the
    /// blocking pool when it is [`LARGE_BODY`] or more, at most `-api-body-jobs` at once. Parsing
    /// or decoding megabytes takes tens of milliseconds; on the request task it would hold every
    /// other request of the worker (one runtime thread by default) for that long.
    pub(crate) async fn off_task<T: Send + 'static>(
        &self,
        size: usize,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, ApiError> {
        if size < LARGE_BODY {
            return Ok(work());
        }
        let _permit = self
            .body_jobs
            .acquire()
            .await
            .map_err(|e| ApiError::internal(format!("large body: {e}")))?;
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|e| ApiError::internal(format!("large body: {e}")))
    }

    /// Whether `path` only reads (`-api-read-path`, on the route without its extension).
    pub(crate) fn is_read(&self, path: &str) -> bool {
        /// Distinct paths remembered; any more clear the memo (paths are the client's choice).
        const MEMO: usize = 4096;
        if let Some(read) = self.read_memo.lock().get(path) {
            return *read;
        }
        let read = self.read.is_match(route_of(path));
        let mut memo = self.read_memo.lock();
        if memo.len() >= MEMO {
            memo.clear();
        }
        memo.insert(path.into(), read);
        read
    }

    /// Counts one request answered outside [`Api::handle`] (a WebSocket frame).
    pub(crate) fn count(&self, start: std::time::Instant) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.metrics.response.since(start);
    }

    /// Measures how late the runtime runs a 100 ms timer, for `-api-busy-latency`.
    pub(crate) fn watch_lag(self: &Arc<Self>) {
        let api = Arc::downgrade(self);
        tokio::spawn(async move {
            const TICK: std::time::Duration = std::time::Duration::from_millis(100);
            loop {
                let start = std::time::Instant::now();
                tokio::time::sleep(TICK).await;
                let late = start.elapsed().saturating_sub(TICK).as_millis() as u64;
                let Some(api) = api.upgrade() else { return };
                // One stall keeps the worker busy for a few ticks (halving each tick), so load is
                // shed for a while after it instead of only by the requests of one tick.
                let smoothed = late.max(api.lag_ms.load(Ordering::Relaxed) / 2);
                api.lag_ms.store(smoothed, Ordering::Relaxed);
                api.metrics.queue.update(late as f64);
            }
        });
    }
}

/// One request as handlers and hooks see it.
pub struct Req {
    pub api: Arc<Api>,
    pub method: Method,
    pub path: String,
    pub headers: HeaderMap,
    pub params: Params,
    /// The raw body (already parsed into `params` where it was a form or JSON).
    pub body: Bytes,
    /// `{name}` segments of the matched route pattern.
    pub captures: Vec<(String, String)>,
    /// The signed-in caller; `None` on paths that need no authentication.
    pub account: Option<Account>,
    /// Headers to add to the reply (`Set-Cookie`, ...), set by handlers and hooks.
    reply_headers: Mutex<Vec<(hyper::header::HeaderName, String)>>,
    /// Values hooks leave for later hooks and the handler.
    pub vars: Mutex<Row>,
}

impl Req {
    pub(crate) fn new(
        api: Arc<Api>,
        method: Method,
        path: String,
        headers: HeaderMap,
        params: Params,
        body: Bytes,
        account: Option<Account>,
    ) -> Req {
        Req {
            api,
            method,
            path,
            headers,
            params,
            body,
            captures: Vec::new(),
            account,
            reply_headers: Mutex::new(Vec::new()),
            vars: Mutex::new(Row::new()),
        }
    }

    /// A `{name}` segment of the route pattern.
    pub fn capture(&self, name: &str) -> Option<&str> {
        self.captures
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The last value of parameter `name`.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name)
    }

    /// A required, non-empty parameter, or 400 naming it.
    pub fn required(&self, name: &str) -> Result<&str, ApiError> {
        match self.params.get(name) {
            Some(v) if !v.is_empty() => Ok(v),
            _ => Err(ApiError::bad(format!("{name} is required"))),
        }
    }

    /// The caller, or 401 when the path was open and nobody signed in.
    pub fn account(&self) -> Result<&Account, ApiError> {
        self.account
            .as_ref()
            .ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "Not authenticated"))
    }

    /// Adds a header to the reply.
    pub fn add_reply_header(&self, name: hyper::header::HeaderName, value: String) {
        self.reply_headers.lock().push((name, value));
    }

    pub(crate) fn take_reply_headers(&self) -> Vec<(hyper::header::HeaderName, String)> {
        std::mem::take(&mut *self.reply_headers.lock())
    }
}

impl Routed for Req {
    fn method(&self) -> &Method {
        &self.method
    }
    fn path(&self) -> &str {
        &self.path
    }
}

#[cfg(test)]
mod route_tests {
    use super::route_of;

    #[test]
    fn the_route_of_a_path_has_no_extension() {
        assert_eq!(route_of("/data/select/bk_auth.png"), "/data/select/bk_auth");
        assert_eq!(route_of("/system/stats"), "/system/stats");
        assert_eq!(route_of("/a.b/c"), "/a.b/c");
        assert_eq!(route_of("/x/.hidden"), "/x/.hidden");
        assert_eq!(route_of("/x/a.tar.gz"), "/x/a.tar");
        assert_eq!(route_of("/"), "/");
    }
}
