//! The API over WebSocket (docs/api.md) on the same port as HTTP: a `GET` with `Upgrade: websocket`
//! to any path is authenticated like any request to that path (signature in the `bk-signature`
//! header or query parameter, or the session cookie) and then upgraded by hyper. Each text frame
//! is a request URL (`/account/get?id=...`), answered with a text frame holding the JSON reply
//! that the same GET over HTTP would get (errors as `{status, message}`); frames are answered one
//! at a time, in order. The frame `/account/subscribe` subscribes the socket to the events
//! published to its account: from then on they are pushed as JSON arrays of events (the
//! long poll's reply shape; requests are answered with JSON objects), each frame holding
//! whatever had arrived. A frame that is not a request URL gets an error frame and the
//! connection stays open. When the worker drains, sockets are closed with code 1001.

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
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// The largest frame a client may send (a request URL).
const MAX_FRAME: usize = 64 * 1024;

/// Events pushed in one frame at most.
const MAX_BATCH: usize = 100;

/// Answers the request URL of a frame as a GET with the socket's headers and caller: the
/// router's dispatch, handed to [`accept`] so this module does not depend on the router.
pub(crate) type Dispatch = fn(
    Arc<Api>,
    HeaderMap,
    String,
    Option<String>,
    Option<Account>,
) -> BoxFuture<Result<Reply, ApiError>>;

/// True when the request asks for a WebSocket.
pub(crate) fn is_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get(UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// Answers an authenticated upgrade request with 101 and serves the socket once hyper hands
/// it over.
pub(crate) fn accept(
    api: Arc<Api>,
    parts: &hyper::http::request::Parts,
    account: Option<Account>,
    on: hyper::upgrade::OnUpgrade,
    dispatch: Dispatch,
) -> Result<Reply, ApiError> {
    if parts.method != Method::GET {
        return Err(ApiError::bad("a WebSocket upgrade must be a GET"));
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
    let key = parts
        .headers
        .get(SEC_WEBSOCKET_KEY)
        .ok_or_else(|| ApiError::bad("Sec-WebSocket-Key is required"))?;
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
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
    tokio::spawn(async move {
        match on.await {
            Ok(upgraded) => {
                let config = WebSocketConfig::default()
                    .max_message_size(Some(MAX_FRAME))
                    .max_frame_size(Some(MAX_FRAME));
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
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    match HeaderValue::from_str(&accept) {
        Ok(v) => {
            h.insert(SEC_WEBSOCKET_ACCEPT, v);
        }
        Err(_) => return Err(ApiError::internal("websocket accept key is not ASCII")),
    }
    Ok(r)
}

fn error_text(e: &ApiError) -> String {
    json!({"status": e.status.as_u16(), "message": e.message}).to_string()
}

type Ws = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// One socket: request frames in, replies and pushed events out, until either side closes.
async fn serve(
    api: Arc<Api>,
    headers: HeaderMap,
    account: Option<Account>,
    mut ws: Ws,
    dispatch: Dispatch,
) {
    let who = account
        .as_ref()
        .map(|a| a.id().to_string())
        .unwrap_or_else(|| "anonymous".into());
    tracing::debug!("websocket open for {who}");
    let mut sub: Option<bkjs_msg::Subscription> = None;
    loop {
        let out = tokio::select! {
            frame = ws.next() => match frame {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break,
                Some(Ok(Message::Text(t))) => {
                    let start = std::time::Instant::now();
                    let reply = frame_reply(&api, &headers, account.as_ref(), t.as_str(), &mut sub, dispatch).await;
                    api.count(start);
                    Message::text(reply)
                }
                Some(Ok(Message::Binary(_))) => Message::text(error_text(&ApiError::bad(
                    "binary frames are not requests: send the request URL as a text frame",
                ))),
                Some(Ok(_)) => continue, // ping and pong are answered by tungstenite
            },
            ev = next_event(&mut sub) => match ev {
                Some(first) => {
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
            _ = api.draining() => {
                let _ = ws
                    .send(Message::Close(Some(CloseFrame {
                        code: CloseCode::Away,
                        reason: "the server is restarting".into(),
                    })))
                    .await;
                break;
            }
        };
        if ws.send(out).await.is_err() {
            break;
        }
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
    api.check_admin(path, account)?;
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
