//! Firebase Cloud Messaging, HTTP v1 API: a service account's RS256 assertion is exchanged at its
//! `token_uri` for an OAuth2 access token, kept until a minute before it expires; messages go to
//! `POST /v1/projects/PROJECT/messages:send` with that token.

use crate::error::{PushError, SendError};
use crate::http::Https;
use crate::jwt::{now_secs, Key};
use crate::Notification;
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, StatusCode};
use serde_json::json;
use std::sync::Arc;

const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";

pub struct Fcm {
    pub(crate) https: Arc<Https>,
    /// `https://fcm.googleapis.com` unless `-push-fcm-host` says otherwise.
    pub(crate) base: String,
    pub(crate) project_id: String,
    pub(crate) client_email: String,
    pub(crate) token_uri: String,
    pub(crate) key: Key,
    /// The access token and when it expires (seconds). An async lock: one exchange at a time.
    pub(crate) token: tokio::sync::Mutex<Option<(String, u64)>>,
}

impl Fcm {
    /// Reads a service-account JSON file as Google issues it.
    pub fn service_account(text: &str) -> Result<(String, String, String, Key), PushError> {
        let bad = |m: String| PushError::Config(format!("-push-fcm-service-account: {m}"));
        let v: serde_json::Value =
            serde_json::from_str(text).map_err(|e| bad(format!("not JSON: {e}")))?;
        let field = |n: &str| {
            v[n].as_str()
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .ok_or_else(|| bad(format!("no {n}")))
        };
        let key =
            Key::rs256(&field("private_key")?).map_err(|e| bad(format!("private_key: {e}")))?;
        let token_uri = v["token_uri"]
            .as_str()
            .unwrap_or("https://oauth2.googleapis.com/token")
            .to_string();
        Ok((field("project_id")?, field("client_email")?, token_uri, key))
    }

    async fn access_token(&self) -> Result<String, SendError> {
        let mut cached = self.token.lock().await;
        let now = now_secs();
        if let Some((t, exp)) = &*cached {
            if now + 60 < *exp {
                return Ok(t.clone());
            }
        }
        let assertion = self
            .key
            .sign(
                &[("typ", "JWT")],
                &json!({"iss": self.client_email, "scope": SCOPE, "aud": self.token_uri,
                        "iat": now, "exp": now + 3600}),
            )
            .map_err(SendError::Rejected)?;
        let form = form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer")
            .append_pair("assertion", &assertion)
            .finish();
        let req = Request::builder()
            .method(Method::POST)
            .uri(&self.token_uri)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Full::new(Bytes::from(form)))
            .map_err(|e| SendError::Rejected(format!("FCM token request: {e}")))?;
        let r = self.https.send(req).await?;
        let v = r.json();
        match (r.status, v["access_token"].as_str()) {
            (StatusCode::OK, Some(t)) => {
                let exp = now + v["expires_in"].as_u64().unwrap_or(3600);
                *cached = Some((t.to_string(), exp));
                Ok(t.to_string())
            }
            (s, _) if s == StatusCode::TOO_MANY_REQUESTS || s.is_server_error() => {
                Err(SendError::Retry {
                    reason: format!("FCM token exchange {}", s.as_u16()),
                    after: r.retry_after(),
                })
            }
            (s, _) => Err(SendError::Rejected(format!(
                "FCM token exchange {}: {}",
                s.as_u16(),
                v["error_description"]
                    .as_str()
                    .or(v["error"].as_str())
                    .unwrap_or("no access_token")
            ))),
        }
    }

    pub async fn send(&self, token: &str, n: &Notification) -> Result<(), SendError> {
        // FCM data values are strings.
        let data: serde_json::Map<String, serde_json::Value> = n
            .data
            .iter()
            .map(|(k, v)| {
                let s = match v {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                (k.clone(), serde_json::Value::String(s))
            })
            .collect();
        let mut message = json!({"token": token, "data": data});
        if !n.title.is_empty() || !n.body.is_empty() {
            message["notification"] = json!({"title": n.title, "body": n.body});
        }
        let mut android = json!({"priority": if n.urgent { "high" } else { "normal" }});
        if let Some(c) = &n.collapse_id {
            android["collapse_key"] = json!(c);
        }
        if let Some(t) = n.ttl {
            android["ttl"] = json!(format!("{}s", t.as_secs()));
        }
        message["android"] = android;
        let bearer = self.access_token().await?;
        let req = Request::builder()
            .method(Method::POST)
            .uri(format!(
                "{}/v1/projects/{}/messages:send",
                self.base, self.project_id
            ))
            .header("authorization", format!("Bearer {bearer}"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(
                json!({"message": message}).to_string(),
            )))
            .map_err(|e| SendError::Rejected(format!("FCM request: {e}")))?;
        let r = self.https.send(req).await?;
        let v = r.json();
        let status = v["error"]["status"].as_str().unwrap_or_default();
        let unregistered = status == "NOT_FOUND"
            || v["error"]["details"]
                .as_array()
                .is_some_and(|d| d.iter().any(|x| x["errorCode"] == "UNREGISTERED"));
        match r.status {
            StatusCode::OK => Ok(()),
            s if unregistered => Err(SendError::Gone(format!("FCM {} UNREGISTERED", s.as_u16()))),
            StatusCode::UNAUTHORIZED => {
                *self.token.lock().await = None;
                Err(SendError::Retry {
                    reason: "FCM 401: access token refused, a new one will be asked".into(),
                    after: None,
                })
            }
            s if s == StatusCode::TOO_MANY_REQUESTS || s.is_server_error() => {
                Err(SendError::Retry {
                    reason: format!("FCM {} {status}", s.as_u16()),
                    after: r.retry_after(),
                })
            }
            s => Err(SendError::Rejected(format!(
                "FCM {} {status} {}",
                s.as_u16(),
                v["error"]["message"].as_str().unwrap_or_default()
            ))),
        }
    }
}
