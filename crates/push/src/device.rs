//! A device an account receives notifications on, as stored in `bk_account.device_id`: one or
//! more entries separated by commas, each `SERVICE://TOKEN`:
//! - `apn://HEX` an APNs device token (hexadecimal, as the iOS app gets it);
//! - `fcm://TOKEN` an FCM registration token;
//! - `webpush://B64` a Web Push subscription (the browser's `PushSubscription.toJSON()`,
//!   `{"endpoint": ..., "keys": {"p256dh": ..., "auth": ...}}`, base64url-encoded), or that JSON
//!   itself.

use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Apns,
    Fcm,
    WebPush,
}

impl Service {
    pub fn name(self) -> &'static str {
        match self {
            Service::Apns => "apn",
            Service::Fcm => "fcm",
            Service::WebPush => "webpush",
        }
    }
}

/// A Web Push subscription: where to POST and the browser's keys.
#[derive(Debug, Clone, PartialEq)]
pub struct Subscription {
    pub endpoint: String,
    /// The browser's P-256 public key, uncompressed (65 bytes).
    pub p256dh: Vec<u8>,
    /// The browser's authentication secret (16 bytes).
    pub auth: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Device {
    pub service: Service,
    /// The entry as stored, to find and remove it when the service says it is gone.
    pub entry: String,
    pub token: String,
    pub subscription: Option<Subscription>,
}

/// base64url with or without padding (browsers send it without).
fn b64(s: &str) -> Result<Vec<u8>, String> {
    let s = s.trim();
    URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .or_else(|_| URL_SAFE.decode(s))
        .map_err(|e| format!("bad base64url: {e}"))
}

fn subscription(json: &str) -> Result<Subscription, String> {
    let v: serde_json::Value =
        serde_json::from_str(json).map_err(|e| format!("a Web Push subscription is JSON: {e}"))?;
    let s = |p: &str| {
        v.pointer(p)
            .and_then(|x| x.as_str())
            .ok_or_else(|| format!("a Web Push subscription needs {p}"))
    };
    let endpoint = s("/endpoint")?.to_string();
    if !endpoint.starts_with("https://") {
        return Err("a Web Push endpoint is an https:// URL".into());
    }
    let p256dh = b64(s("/keys/p256dh")?)?;
    let auth = b64(s("/keys/auth")?)?;
    if p256dh.len() != 65 || p256dh[0] != 4 {
        return Err("keys.p256dh is not an uncompressed P-256 point (65 bytes)".into());
    }
    if auth.len() != 16 {
        return Err("keys.auth is not 16 bytes".into());
    }
    Ok(Subscription {
        endpoint,
        p256dh,
        auth,
    })
}

impl Device {
    /// One entry; the error says what is wrong with it.
    pub fn parse(entry: &str) -> Result<Device, String> {
        let entry = entry.trim();
        let (service, token) = if entry.starts_with('{') {
            (Service::WebPush, entry)
        } else {
            let (scheme, token) = entry.split_once("://").ok_or_else(|| {
                format!("{entry:?}: a device is SERVICE://TOKEN (apn, fcm, webpush)")
            })?;
            let service = match scheme {
                "apn" | "apns" => Service::Apns,
                "fcm" | "gcm" => Service::Fcm,
                "webpush" => Service::WebPush,
                other => {
                    return Err(format!(
                        "unknown push service {other:?} (apn, fcm, webpush)"
                    ))
                }
            };
            (service, token)
        };
        if token.is_empty() {
            return Err(format!("{entry:?}: empty token"));
        }
        let subscription = match service {
            Service::Apns if !token.bytes().all(|b| b.is_ascii_hexdigit()) => {
                return Err(format!("{entry:?}: an APNs token is hexadecimal"));
            }
            Service::WebPush if token.starts_with('{') => Some(subscription(token)?),
            Service::WebPush => {
                let json = String::from_utf8(b64(token)?)
                    .map_err(|_| "a webpush:// token is base64url of JSON".to_string())?;
                Some(subscription(&json)?)
            }
            _ => None,
        };
        Ok(Device {
            service,
            entry: entry.to_string(),
            token: token.to_string(),
            subscription,
        })
    }

    /// Every entry of a `device_id` value; bad entries are reported, not dropped silently.
    pub fn parse_list(value: &str) -> Vec<Result<Device, String>> {
        split(value).map(Device::parse).collect()
    }
}

/// The entries of a `device_id` value. A raw JSON subscription may hold commas, so a JSON entry
/// runs to its closing brace.
fn split(value: &str) -> impl Iterator<Item = &str> {
    let mut rest = value.trim();
    std::iter::from_fn(move || {
        rest = rest.trim_start_matches([',', ' ']);
        if rest.is_empty() {
            return None;
        }
        let end = if rest.starts_with('{') {
            let mut depth = 0;
            let mut end = rest.len();
            for (i, c) in rest.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            end = i + 1;
                            break;
                        }
                    }
                    _ => {}
                }
            }
            end
        } else {
            rest.find(',').unwrap_or(rest.len())
        };
        let (item, tail) = rest.split_at(end);
        rest = tail;
        Some(item.trim())
    })
}

/// `value` without `entry` (a token the service reported gone), entries kept in order.
pub fn remove_entry(value: &str, entry: &str) -> String {
    split(value)
        .filter(|e| *e != entry.trim())
        .collect::<Vec<_>>()
        .join(",")
}
