//! Apple Push Notification service: HTTP/2 `POST /3/device/TOKEN` with a provider token (an ES256
//! JWT of the team id, key id and issue time, reused for 50 minutes: Apple refuses tokens older
//! than an hour and throttles ones renewed more often than every 20 minutes).

use crate::error::SendError;
use crate::http::Https;
use crate::jwt::{now_secs, Key};
use crate::Notification;
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, StatusCode};
use parking_lot::Mutex;
use serde_json::json;
use std::sync::Arc;

const TOKEN_AGE: u64 = 50 * 60;

pub struct Apns {
    pub(crate) https: Arc<Https>,
    /// `https://HOST[:PORT]`.
    pub(crate) base: String,
    pub(crate) team_id: String,
    pub(crate) key_id: String,
    pub(crate) topic: String,
    pub(crate) key: Key,
    /// The provider token and when it was made (seconds).
    pub(crate) token: Mutex<Option<(String, u64)>>,
}

impl Apns {
    fn provider_token(&self) -> Result<String, SendError> {
        let now = now_secs();
        if let Some((t, at)) = &*self.token.lock() {
            if now < at + TOKEN_AGE {
                return Ok(t.clone());
            }
        }
        let t = self
            .key
            .sign(
                &[("kid", &self.key_id)],
                &json!({"iss": self.team_id, "iat": now}),
            )
            .map_err(SendError::Rejected)?;
        *self.token.lock() = Some((t.clone(), now));
        Ok(t)
    }

    pub async fn send(&self, token: &str, n: &Notification) -> Result<(), SendError> {
        let mut aps = serde_json::Map::new();
        let alert = !n.title.is_empty() || !n.body.is_empty();
        if alert {
            aps.insert("alert".into(), json!({"title": n.title, "body": n.body}));
        } else {
            aps.insert("content-available".into(), json!(1));
        }
        if let Some(b) = n.badge {
            aps.insert("badge".into(), json!(b));
        }
        if let Some(s) = &n.sound {
            aps.insert("sound".into(), json!(s));
        }
        let mut body = n.data.clone();
        body.insert("aps".into(), serde_json::Value::Object(aps));
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(format!("{}/3/device/{token}", self.base))
            .header(
                "authorization",
                format!("bearer {}", self.provider_token()?),
            )
            .header("apns-topic", &self.topic)
            .header("apns-push-type", if alert { "alert" } else { "background" })
            // Background pushes must go at priority 5.
            .header("apns-priority", if n.urgent && alert { "10" } else { "5" })
            .header(
                "apns-expiration",
                n.ttl
                    .map(|t| (now_secs() + t.as_secs()).to_string())
                    .unwrap_or_else(|| "0".into()),
            );
        if let Some(c) = &n.collapse_id {
            req = req.header("apns-collapse-id", c);
        }
        let req = req
            .body(Full::new(Bytes::from(
                serde_json::Value::Object(body).to_string(),
            )))
            .map_err(|e| SendError::Rejected(format!("APNs request: {e}")))?;
        let r = self.https.send(req).await?;
        let reason = r.json()["reason"].as_str().unwrap_or_default().to_string();
        match r.status {
            StatusCode::OK => Ok(()),
            StatusCode::GONE => Err(SendError::Gone(format!("APNs 410 {reason}"))),
            StatusCode::BAD_REQUEST
                if matches!(reason.as_str(), "BadDeviceToken" | "DeviceTokenNotForTopic") =>
            {
                Err(SendError::Gone(format!("APNs 400 {reason}")))
            }
            StatusCode::FORBIDDEN if reason == "ExpiredProviderToken" => {
                *self.token.lock() = None;
                Err(SendError::Retry {
                    reason: format!("APNs 403 {reason}"),
                    after: None,
                })
            }
            s if s == StatusCode::TOO_MANY_REQUESTS || s.is_server_error() => {
                Err(SendError::Retry {
                    reason: format!("APNs {} {reason}", s.as_u16()),
                    after: r.retry_after(),
                })
            }
            s => Err(SendError::Rejected(format!("APNs {} {reason}", s.as_u16()))),
        }
    }
}
