//! Push notifications to the devices of an account: Apple (APNs), Google (FCM HTTP v1) and
//! browsers (Web Push with VAPID). [`Push`] holds the configured services and sends one
//! [`Notification`] to one [`Device`]; what a failure means for the caller (drop the token,
//! retry later, give up) is in [`SendError`]. Delivery with retries goes through the durable job
//! queue (the `push.send` job of the API layer), not through this crate.
//!
//! - `device.rs`: the `device_id` entries (`apn://`, `fcm://`, `webpush://`) and their parsing;
//! - `jwt.rs`: ES256 / RS256 JWTs; `http.rs`: the shared HTTPS client (h2 or HTTP/1.1);
//! - `apns.rs`, `fcm.rs`, `webpush.rs`: one service each.

#![deny(unsafe_op_in_unsafe_fn, rust_2018_idioms)]
#![cfg_attr(not(test), warn(clippy::unwrap_used))]

mod apns;
mod device;
mod error;
mod fcm;
mod http;
mod jwt;
mod webpush;

#[cfg(test)]
mod tests;

pub use device::{remove_entry, Device, Service, Subscription};
pub use error::{PushError, SendError};
pub use webpush::{encrypt as webpush_encrypt, MAX_PLAINTEXT};

use bkjs_base::config::{Config, Kind, Param};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Push parameters. Keys are read at start; a bad one stops the process with its name.
pub static PARAMS: &[Param] = &[
    Param::new("push-apns-key-file", Kind::Path, "", "APNs signing key (the .p8 file from Apple, PKCS#8 PEM); APNs is off without it"),
    Param::new("push-apns-team-id", Kind::String, "", "APNs team id (the JWT issuer)"),
    Param::new("push-apns-key-id", Kind::String, "", "APNs key id of -push-apns-key-file"),
    Param::new("push-apns-topic", Kind::String, "", "APNs topic: the app's bundle id"),
    Param::new("push-apns-host", Kind::String, "api.push.apple.com", "APNs server (HOST[:PORT]); api.sandbox.push.apple.com for development builds"),
    Param::new("push-fcm-service-account", Kind::Path, "", "FCM service-account JSON file (project_id, client_email, private_key, token_uri); FCM is off without it"),
    Param::new("push-fcm-host", Kind::String, "fcm.googleapis.com", "FCM HTTP v1 server (HOST[:PORT])"),
    Param::new("push-vapid-key", Kind::Path, "", "VAPID private key for Web Push (P-256, PKCS#8 PEM); Web Push is off without it"),
    Param::new("push-vapid-subject", Kind::String, "", "VAPID contact sent to push services (mailto:... or https://...)"),
    Param::new("push-ca-file", Kind::Path, "", "extra CA certificates (PEM) trusted for push services besides the public roots"),
    Param::new("push-timeout", Kind::Duration, "10s", "longest a push service may take to answer one send"),
];

/// What a device is told.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Notification {
    pub title: String,
    pub body: String,
    /// Custom key-value pairs delivered to the app.
    pub data: serde_json::Map<String, serde_json::Value>,
    /// A newer notification with the same id replaces an undelivered older one.
    pub collapse_id: Option<String>,
    /// Deliver now, waking the device (APNs priority 10, FCM high, Web Push urgency high).
    pub urgent: bool,
    /// How long the service keeps it for an offline device (default: the service's).
    pub ttl: Option<Duration>,
    pub badge: Option<i64>,
    pub sound: Option<String>,
}

/// Sends and outcomes since start, for `/system/stats`.
#[derive(Debug, Default)]
pub struct Counters {
    pub sent: AtomicU64,
    pub gone: AtomicU64,
    pub retried: AtomicU64,
    pub rejected: AtomicU64,
}

/// The configured push services.
pub struct Push {
    apns: Option<apns::Apns>,
    fcm: Option<fcm::Fcm>,
    webpush: Option<webpush::WebPush>,
    pub counters: Counters,
}

fn read(path: &std::path::Path, param: &str) -> Result<String, PushError> {
    std::fs::read_to_string(path)
        .map_err(|e| PushError::Config(format!("-{param} {}: {e}", path.display())))
}

fn required(cfg: &Config, name: &str, because: &str) -> Result<String, PushError> {
    match cfg.str(name).trim() {
        "" => Err(PushError::Config(format!(
            "-{name} is required with -{because}"
        ))),
        v => Ok(v.to_string()),
    }
}

impl Push {
    /// The services whose credentials are configured; `None` when there is none. A missing or
    /// malformed key or companion parameter is an error naming the parameter.
    pub fn from_config(cfg: &Config) -> Result<Option<Push>, PushError> {
        let https = Arc::new(http::Https::new(
            cfg.path("push-ca-file").as_deref(),
            cfg.duration("push-timeout"),
        )?);
        let apns = match cfg.path("push-apns-key-file") {
            None => None,
            Some(path) => {
                let key = jwt::Key::es256(&read(&path, "push-apns-key-file")?).map_err(|e| {
                    PushError::Config(format!("-push-apns-key-file {}: {e}", path.display()))
                })?;
                Some(apns::Apns {
                    https: https.clone(),
                    base: format!("https://{}", cfg.str("push-apns-host")),
                    team_id: required(cfg, "push-apns-team-id", "push-apns-key-file")?,
                    key_id: required(cfg, "push-apns-key-id", "push-apns-key-file")?,
                    topic: required(cfg, "push-apns-topic", "push-apns-key-file")?,
                    key,
                    token: Default::default(),
                })
            }
        };
        let fcm = match cfg.path("push-fcm-service-account") {
            None => None,
            Some(path) => {
                let (project_id, client_email, token_uri, key) =
                    fcm::Fcm::service_account(&read(&path, "push-fcm-service-account")?)?;
                Some(fcm::Fcm {
                    https: https.clone(),
                    base: format!("https://{}", cfg.str("push-fcm-host")),
                    project_id,
                    client_email,
                    token_uri,
                    key,
                    token: Default::default(),
                })
            }
        };
        let webpush = match cfg.path("push-vapid-key") {
            None => None,
            Some(path) => {
                let key = jwt::Key::es256(&read(&path, "push-vapid-key")?).map_err(|e| {
                    PushError::Config(format!("-push-vapid-key {}: {e}", path.display()))
                })?;
                let subject = required(cfg, "push-vapid-subject", "push-vapid-key")?;
                if !subject.starts_with("mailto:") && !subject.starts_with("https://") {
                    return Err(PushError::Config(
                        "-push-vapid-subject: a mailto: or https:// contact".into(),
                    ));
                }
                Some(webpush::WebPush {
                    https,
                    key,
                    subject,
                    tokens: Default::default(),
                })
            }
        };
        if apns.is_none() && fcm.is_none() && webpush.is_none() {
            return Ok(None);
        }
        Ok(Some(Push {
            apns,
            fcm,
            webpush,
            counters: Counters::default(),
        }))
    }

    /// The services configured, by name.
    pub fn services(&self) -> Vec<&'static str> {
        [
            self.apns.as_ref().map(|_| Service::Apns.name()),
            self.fcm.as_ref().map(|_| Service::Fcm.name()),
            self.webpush.as_ref().map(|_| Service::WebPush.name()),
        ]
        .into_iter()
        .flatten()
        .collect()
    }

    /// Sends `n` to one device.
    pub async fn send(&self, device: &Device, n: &Notification) -> Result<(), SendError> {
        let r = match device.service {
            Service::Apns => match &self.apns {
                Some(a) => a.send(&device.token, n).await,
                None => Err(SendError::NotConfigured("apn")),
            },
            Service::Fcm => match &self.fcm {
                Some(f) => f.send(&device.token, n).await,
                None => Err(SendError::NotConfigured("fcm")),
            },
            Service::WebPush => match (&self.webpush, &device.subscription) {
                (Some(w), Some(s)) => w.send(s, n).await,
                (Some(_), None) => Err(SendError::Rejected("no Web Push subscription".into())),
                (None, _) => Err(SendError::NotConfigured("webpush")),
            },
        };
        let c = &self.counters;
        match &r {
            Ok(()) => c.sent.fetch_add(1, Ordering::Relaxed),
            Err(SendError::Gone(_)) => c.gone.fetch_add(1, Ordering::Relaxed),
            Err(SendError::Retry { .. }) => c.retried.fetch_add(1, Ordering::Relaxed),
            Err(_) => c.rejected.fetch_add(1, Ordering::Relaxed),
        };
        r
    }
}
