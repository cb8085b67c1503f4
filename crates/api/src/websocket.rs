//! The API over WebSocket (docs/api.md) on the same port as HTTP: a `GET` with `Upgrade: websocket`
//! to any path is authenticated like any request to that path (signature in the `bk-signature`
//! header or query parameter, or the session cookie) and then upgraded by hyper. Over HTTP/2 (TLS,
//! ALPN `h2`) the same socket is opened by an extended CONNECT (RFC 8441, `:protocol websocket`)
//! on a stream of the connection; it is taken for a GET of its path (signature and access rules
//! alike, so a client signs the same request whatever the browser picks), answered 200, and served
//! the same way. Each text frame
//! is a request URL (`/account/get?id=...`), answered with a text frame holding the JSON reply
//! that the same GET over HTTP would get (errors as `{status, message}`); frames are answered one
//! at a time, in order. The frame `/account/subscribe` subscribes the socket to the events
//! published to its account: from then on they are pushed as JSON arrays of events (the
//! long poll's reply shape; requests are answered with JSON objects), each frame holding
//! whatever had arrived. A frame that is not a request URL gets an error frame and the
//! connection stays open. When the worker drains, sockets are closed with code 1001.
//!
//! Every frame meets the access rules of an HTTP request to its path (deny, disallow, the admin
//! rule, the account's expiry and `acl_deny`/`acl_allow`), checked against the account's current
//! `bk_auth` row. The row is also re-read through the cache every [`ACCOUNT_WATCH`] (cache writes
//! are pushed to every worker), so a socket whose account is deleted, gets a new secret or
//! another type is closed with code 1008 within a second, on whichever worker holds it.
//!
//! Limits (docs/security.md): an upgrade needs an authenticated account unless
//! `-api-ws-anonymous`; a browser's `Origin` must be the request's own host or listed in
//! `-api-ws-origins`; the server pings every `-api-ws-ping-interval` and closes a socket whose
//! peer has not answered within `-api-ws-pong-timeout`, and one with neither a request nor a
//! pushed event for `-api-ws-idle-timeout`.

use crate::api::Api;
use crate::auth::Account;
use crate::error::ApiError;
use crate::reply::Reply;
use crate::route::BoxFuture;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Either, Full};
use hyper::header::{HeaderValue, CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, UPGRADE};
use hyper::{HeaderMap, Method, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// Events pushed in one frame at most.
const MAX_BATCH: usize = 100;

/// How often an open socket re-reads its account's `bk_auth` row (through the near cache).
const ACCOUNT_WATCH: Duration = Duration::from_millis(400);

/// How long a close frame may take to leave before the socket is dropped anyway.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Answers the request URL of a frame as a GET with the socket's headers and caller: the
/// router's dispatch, handed to [`accept`] so this module does not depend on the router.
pub(crate) type Dispatch = fn(
    Arc<Api>,
    HeaderMap,
    String,
    Option<String>,
    Option<Account>,
) -> BoxFuture<Result<Reply, ApiError>>;

/// True when the request asks for a WebSocket over HTTP/1.1 (`Upgrade: websocket`).
pub(crate) fn is_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get(UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// True when the request opens a WebSocket on an HTTP/2 stream: an extended CONNECT (RFC 8441)
/// with `:protocol websocket`.
pub(crate) fn is_h2_connect<B>(req: &hyper::Request<B>) -> bool {
    req.method() == Method::CONNECT
        && req
            .extensions()
            .get::<hyper::ext::Protocol>()
            .is_some_and(|p| p.as_str().eq_ignore_ascii_case("websocket"))
}

/// Something that counts an open HTTP/2 WebSocket as a request in flight on its connection
/// (serve.rs), so the connection is not closed as idle under it.
pub(crate) trait Busy: Send + Sync {
    fn enter(&self);
    fn leave(&self);
}

/// A request extension put on an extended CONNECT by the serve loop: the connection's [`Busy`].
#[derive(Clone)]
pub(crate) struct Carrier(pub(crate) Arc<dyn Busy>);

/// Held by the task of an HTTP/2 WebSocket for as long as it is open.
struct Held(Arc<dyn Busy>);

impl Held {
    fn new(busy: Arc<dyn Busy>) -> Held {
        busy.enter();
        Held(busy)
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.0.leave();
    }
}

/// How a WebSocket was asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Opening {
    /// HTTP/1.1 `GET` with `Upgrade: websocket`: answered 101.
    Upgrade,
    /// HTTP/2 extended CONNECT (RFC 8441): answered 200, the stream carries the socket.
    Connect,
}

/// Answers an authenticated upgrade request (101, or 200 for an HTTP/2 extended CONNECT) and
/// serves the socket once hyper hands it over.
pub(crate) fn accept(
    api: Arc<Api>,
    parts: &hyper::http::request::Parts,
    opening: Opening,
    account: Option<Account>,
    on: hyper::upgrade::OnUpgrade,
    dispatch: Dispatch,
) -> Result<Reply, ApiError> {
    // An extended CONNECT was taken for a GET by the router.
    if parts.method != Method::GET {
        return Err(ApiError::bad("a WebSocket upgrade must be a GET"));
    }
    if account.is_none() && !api.cfg.bool("api-ws-anonymous") {
        tracing::info!(
            "websocket: an anonymous upgrade to {} refused",
            parts.uri.path()
        );
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "Not authenticated: a WebSocket needs a signed-in account",
        ));
    }
    let version = parts
        .headers
        .get("sec-websocket-version")
        .and_then(|v| v.to_str().ok());
    if version != Some("13") {
        return Err(ApiError::new(
            StatusCode::UPGRADE_REQUIRED,
            "WebSocket version 13 is required (Sec-WebSocket-Version: 13)",
        ));
    }
    // RFC 8441 section 5: no key and no accept over HTTP/2.
    let accept = match opening {
        Opening::Upgrade => {
            let key = parts
                .headers
                .get(SEC_WEBSOCKET_KEY)
                .ok_or_else(|| ApiError::bad("Sec-WebSocket-Key is required"))?;
            let accept =
                tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
            Some(
                HeaderValue::from_str(&accept)
                    .map_err(|_| ApiError::internal("websocket accept key is not ASCII"))?,
            )
        }
        Opening::Connect => None,
    };
    let held = parts
        .extensions
        .get::<Carrier>()
        .map(|c| Held::new(c.0.clone()));
    // What a handler may look at; not the upgrade's own headers, copied into every frame.
    let mut headers = HeaderMap::new();
    for h in [
        hyper::header::HOST,
        hyper::header::COOKIE,
        hyper::header::USER_AGENT,
        hyper::header::ORIGIN,
        hyper::header::HeaderName::from_static("x-forwarded-for"),
    ] {
        for v in parts.headers.get_all(&h) {
            headers.append(h.clone(), v.clone());
        }
    }
    let max_message = api.ws_max_message;
    tokio::spawn(async move {
        let _held = held;
        match on.await {
            Ok(upgraded) => {
                // The largest message and frame a client may send (a request URL):
                // -api-ws-max-message; a larger one closes the socket (1009).
                let config = WebSocketConfig::default()
                    .max_message_size(Some(max_message))
                    .max_frame_size(Some(max_message));
                let ws = WebSocketStream::from_raw_socket(
                    TokioIo::new(upgraded),
                    Role::Server,
                    Some(config),
                )
                .await;
                serve(api, headers, account, ws, dispatch).await;
            }
            Err(e) => tracing::debug!("websocket upgrade failed: {e}"),
        }
    });
    let mut r = Response::new(Either::Left(Full::new(Bytes::new())));
    if let Some(accept) = accept {
        *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let h = r.headers_mut();
        h.insert(UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(SEC_WEBSOCKET_ACCEPT, accept);
    }
    Ok(r)
}

/// A browser's upgrade carries `Origin`: it must name the host the request was sent to, or be
/// listed in `-api-ws-origins` (`*` allows any) or in `-api-origins` (the origins allowed to write
/// with the session cookie). Other clients send none and are not refused. Checked by the router
/// before the upgrade is authenticated, so a refused page spends no signature (the replay cache
/// would take it as used).
pub(crate) fn check_origin(headers: &HeaderMap, lists: &[&[String]]) -> Result<(), ApiError> {
    let Some(origin) = headers.get(hyper::header::ORIGIN) else {
        return Ok(());
    };
    let origin = origin.to_str().unwrap_or("");
    let origin = origin.trim_end_matches('/');
    if lists
        .iter()
        .flat_map(|l| l.iter())
        .any(|a| a == "*" || a.trim_end_matches('/').eq_ignore_ascii_case(origin))
    {
        return Ok(());
    }
    let host = crate::access::host_of(headers);
    let own = origin
        .split_once("://")
        .is_some_and(|(_, rest)| !host.is_empty() && rest.eq_ignore_ascii_case(host));
    if own {
        return Ok(());
    }
    tracing::info!("websocket: origin {origin:?} refused for host {host:?}");
    Err(ApiError::denied(
        "Access denied: this Origin may not open a WebSocket (-api-ws-origins)",
    ))
}

/// The socket limits of `-api-ws-*`, read once per socket.
struct Limits {
    ping: Duration,
    pong: Duration,
    idle: Duration,
}

impl Limits {
    fn of(api: &Api) -> Limits {
        Limits {
            ping: api.cfg.duration("api-ws-ping-interval"),
            pong: api.cfg.duration("api-ws-pong-timeout"),
            idle: api.cfg.duration("api-ws-idle-timeout"),
        }
    }
}

/// The account's current state, read again through the cache: the account to go on with, or why
/// the socket must close (deleted, new secret, another type).
async fn refresh(api: &Api, account: &Account) -> Result<Account, &'static str> {
    let Some(db) = api.db.as_ref() else {
        return Ok(account.clone());
    };
    let mut key = bkjs_db::Row::new();
    key.insert("login".into(), json!(account.login()));
    let row = match db.get_cached_shared("bk_auth", &key).await {
        Ok(Some(row)) => row,
        Ok(None) => return Err("the account was deleted"),
        Err(e) => {
            // The database is unreachable: the account is as good as it was.
            tracing::warn!(
                "websocket: cannot read the account {}: {e}",
                account.login()
            );
            return Ok(account.clone());
        }
    };
    let Some((fresh, _)) = crate::access::open_account(api, db, account.login(), &row) else {
        return Err("the account has no secret");
    };
    if fresh.id() != account.id() {
        return Err("the account was deleted");
    }
    if fresh.secret != account.secret {
        return Err("the account's secret changed");
    }
    if fresh.session_gen() != account.session_gen() {
        return Err("the account logged out");
    }
    let kind = |a: &Account| a.auth.get("type").cloned();
    if kind(&fresh) != kind(account) {
        return Err("the account's type changed");
    }
    Ok(fresh)
}

/// Sends a close frame (bounded in time: the peer may not be reading).
async fn close(ws: &mut Ws, code: CloseCode, reason: &str) {
    let frame = Message::Close(Some(CloseFrame {
        code,
        reason: reason.to_string().into(),
    }));
    let _ = tokio::time::timeout(CLOSE_GRACE, ws.send(frame)).await;
}

/// Resolves at `at`, or never.
async fn until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

fn error_text(e: &ApiError) -> String {
    json!({"status": e.status.as_u16(), "message": e.message}).to_string()
}

type Ws = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// One socket: request frames in, replies and pushed events out, until either side closes, the
/// account changes or a limit of [`Limits`] is reached.
async fn serve(
    api: Arc<Api>,
    headers: HeaderMap,
    mut account: Option<Account>,
    mut ws: Ws,
    dispatch: Dispatch,
) {
    let who = account
        .as_ref()
        .map(|a| a.id().to_string())
        .unwrap_or_else(|| "anonymous".into());
    tracing::debug!("websocket open for {who}");
    let limits = Limits::of(&api);
    let mut sub: Option<bkjs_msg::Subscription> = None;
    let mut watch = tokio::time::interval(ACCOUNT_WATCH);
    watch.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut pinger = tokio::time::interval(if limits.ping.is_zero() {
        Duration::from_secs(3600)
    } else {
        limits.ping
    });
    pinger.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    pinger.tick().await; // the first tick is immediate
                         // When the unanswered ping was sent; any frame from the peer answers it.
    let mut ping_sent: Option<Instant> = None;
    let mut active = Instant::now();
    // Made once, not per frame: a frame only moves `active`; the idle timer, when it fires,
    // closes the socket or re-arms itself at `active + idle` (one timer registration per idle
    // period instead of one per frame).
    let idle = !limits.idle.is_zero();
    let idle_timer = tokio::time::sleep(if idle {
        limits.idle
    } else {
        Duration::from_secs(3600)
    });
    tokio::pin!(idle_timer);
    let draining = api.draining();
    tokio::pin!(draining);
    let closed: Option<(CloseCode, String)> = loop {
        let out = tokio::select! {
            frame = ws.next() => {
                ping_sent = None;
                match frame {
                    None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break None,
                    Some(Ok(Message::Text(t))) => {
                        active = Instant::now();
                        if let Some(a) = &account {
                            match refresh(&api, a).await {
                                Ok(fresh) => account = Some(fresh),
                                Err(why) => break Some((CloseCode::Policy, why.to_string())),
                            }
                        }
                        let start = std::time::Instant::now();
                        let reply = frame_reply(&api, &headers, account.as_ref(), t.as_str(), &mut sub, dispatch).await;
                        api.count(start);
                        Message::text(reply)
                    }
                    Some(Ok(Message::Binary(_))) => {
                        active = Instant::now();
                        Message::text(error_text(&ApiError::bad(
                            "binary frames are not requests: send the request URL as a text frame",
                        )))
                    }
                    Some(Ok(_)) => continue, // pings are answered by tungstenite; a pong is noted above
                }
            },
            ev = next_event(&mut sub) => match ev {
                Some(first) => {
                    active = Instant::now();
                    let mut events = vec![super::endpoints::common::publish::as_value(&first.data)];
                    while events.len() < MAX_BATCH {
                        match sub.as_mut().and_then(|s| s.try_recv()) {
                            Some(m) => events.push(super::endpoints::common::publish::as_value(&m.data)),
                            None => break,
                        }
                    }
                    Message::text(Value::Array(events).to_string())
                }
                None => {
                    sub = None;
                    continue;
                }
            },
            _ = watch.tick(), if account.is_some() => {
                if let Some(a) = &account {
                    match refresh(&api, a).await {
                        Ok(fresh) => account = Some(fresh),
                        Err(why) => break Some((CloseCode::Policy, why.to_string())),
                    }
                }
                continue;
            }
            _ = pinger.tick(), if !limits.ping.is_zero() && ping_sent.is_none() => {
                ping_sent = Some(Instant::now());
                Message::Ping(Bytes::new())
            }
            _ = until(ping_sent.map(|at| at + limits.pong)) => {
                tracing::info!("websocket of {who}: no pong within -api-ws-pong-timeout");
                break Some((CloseCode::Away, "no pong within -api-ws-pong-timeout".to_string()));
            }
            _ = &mut idle_timer, if idle => {
                let due = active + limits.idle;
                if due > Instant::now() {
                    idle_timer.as_mut().reset(due.into());
                    continue;
                }
                tracing::debug!("websocket of {who}: idle for -api-ws-idle-timeout");
                break Some((CloseCode::Normal, "idle for -api-ws-idle-timeout".to_string()));
            }
            _ = &mut draining => break Some((CloseCode::Away, "the server is restarting".to_string())),
        };
        if ws.send(out).await.is_err() {
            break None;
        }
    };
    if let Some((code, reason)) = closed {
        tracing::info!("websocket of {who} closed: {reason}");
        close(&mut ws, code, &reason).await;
    }
    tracing::debug!("websocket closed for {who}");
}

/// The next pushed event, or never when the socket is not subscribed.
async fn next_event(sub: &mut Option<bkjs_msg::Subscription>) -> Option<bkjs_msg::Message> {
    match sub {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}

/// The JSON text answering one request frame.
async fn frame_reply(
    api: &Arc<Api>,
    headers: &HeaderMap,
    account: Option<&Account>,
    text: &str,
    sub: &mut Option<bkjs_msg::Subscription>,
    dispatch: Dispatch,
) -> String {
    match request(api, headers, account, text.trim(), sub, dispatch).await {
        Ok(body) => body,
        Err(e) => error_text(&e),
    }
}

async fn request(
    api: &Arc<Api>,
    headers: &HeaderMap,
    account: Option<&Account>,
    url: &str,
    sub: &mut Option<bkjs_msg::Subscription>,
    dispatch: Dispatch,
) -> Result<String, ApiError> {
    if !url.starts_with('/') {
        return Err(ApiError::bad(
            "a frame is a request URL such as /account/get?id=...",
        ));
    }
    let uri: hyper::Uri = url
        .parse()
        .map_err(|e| ApiError::bad(format!("malformed request URL: {e}")))?;
    let path = uri.path();
    api.gate(path)?;
    let open = api.is_open(path);
    if !open && account.is_none() {
        return Err(ApiError::new(StatusCode::UNAUTHORIZED, "Not authenticated"));
    }
    api.check_admin(path, open, account)?;
    if let Some(a) = account {
        crate::access::check_account(&a.auth, path, bkjs_base::time::now_ms())?;
        if api.quota_rate {
            crate::quota::check_rate(&api.cfg, api.cache.as_ref(), a).await?;
        }
    }
    if path == "/account/subscribe" {
        let me =
            account.ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "Not authenticated"))?;
        let msg = api.msg.as_ref().ok_or_else(|| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "pub/sub is not available here",
            )
        })?;
        if sub.is_none() {
            *sub = Some(msg.subscribe(me.id())?);
        }
        return Ok(json!({"subscribed": me.id()}).to_string());
    }
    let reply = dispatch(
        api.clone(),
        headers.clone(),
        path.to_string(),
        uri.query().map(str::to_string),
        account.cloned(),
    )
    .await?;
    let body = reply
        .into_body()
        .collect()
        .await
        .map_err(|e| ApiError::internal(format!("websocket reply body: {e}")))?
        .to_bytes();
    Ok(String::from_utf8_lossy(&body).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(origin: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            hyper::header::HOST,
            HeaderValue::from_static("api.example:8000"),
        );
        if let Some(o) = origin {
            h.insert(
                hyper::header::ORIGIN,
                HeaderValue::from_str(o).expect("ascii"),
            );
        }
        h
    }

    #[test]
    fn an_origin_must_be_the_host_itself_or_listed() {
        let ws = vec!["https://app.example".to_string()];
        let cookie = vec!["https://other.example".to_string()];
        let lists: [&[String]; 2] = [&ws, &cookie];
        for ok in [
            None,
            Some("http://api.example:8000"),
            Some("https://API.example:8000"),
            Some("https://app.example"),
            Some("https://app.example/"),
            Some("https://other.example"),
        ] {
            assert!(check_origin(&headers(ok), &lists).is_ok(), "{ok:?}");
        }
        for bad in [
            "http://evil.example",
            "null",
            "http://api.example:8001",
            "http://api.example:8000.evil.example",
            "https://app.example.evil",
        ] {
            let e = check_origin(&headers(Some(bad)), &lists).expect_err(bad);
            assert_eq!(e.status, StatusCode::FORBIDDEN, "{bad}");
        }
        let any = vec!["*".to_string()];
        assert!(check_origin(&headers(Some("http://evil.example")), &[&any]).is_ok());
    }
}
