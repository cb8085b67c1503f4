//! Web Push (RFC 8030): the payload encrypted for the browser's keys with `aes128gcm` content
//! coding (RFC 8188, keys derived as RFC 8291 says), authorised with VAPID (RFC 8292: an ES256 JWT
//! for the endpoint's origin plus our public key), POSTed to the subscription's endpoint.

use crate::device::Subscription;
use crate::error::SendError;
use crate::http::Https;
use crate::jwt::{now_secs, Key};
use crate::Notification;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, StatusCode};
use parking_lot::Mutex;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM};
use ring::agreement::{agree_ephemeral, EphemeralPrivateKey, UnparsedPublicKey, ECDH_P256};
use ring::hkdf::{KeyType, Salt, HKDF_SHA256};
use ring::rand::{SecureRandom, SystemRandom};
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;

/// Record size announced in the header; the whole payload is one record.
const RECORD_SIZE: u32 = 4096;
/// Largest plaintext: one record holds it, its padding delimiter and the 16-byte tag, and push
/// services accept at most 4096 bytes of body (the 86-byte header included).
pub const MAX_PLAINTEXT: usize = 4096 - 86 - 16 - 1;
/// VAPID tokens live 12 hours (the RFC allows up to 24) and are reused for 11.
const VAPID_AGE: u64 = 12 * 3600;

struct Len(usize);
impl KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

pub(crate) fn hkdf(salt: &[u8], ikm: &[u8], info: &[u8], len: usize) -> Result<Vec<u8>, String> {
    let prk = Salt::new(HKDF_SHA256, salt).extract(ikm);
    let mut out = vec![0u8; len];
    prk.expand(&[info], Len(len))
        .and_then(|okm| okm.fill(&mut out))
        .map_err(|_| "HKDF failed".to_string())?;
    Ok(out)
}

/// The `aes128gcm` body for a browser with public key `ua_public` and secret `auth`:
/// salt(16) | record size(4) | key id length(1) | our ephemeral public key(65) | ciphertext.
/// A fresh key pair and salt per message.
pub fn encrypt(plaintext: &[u8], ua_public: &[u8], auth: &[u8]) -> Result<Vec<u8>, String> {
    if plaintext.len() > MAX_PLAINTEXT {
        return Err(format!(
            "payload of {} bytes is over Web Push's {MAX_PLAINTEXT}",
            plaintext.len()
        ));
    }
    let rng = SystemRandom::new();
    let ours =
        EphemeralPrivateKey::generate(&ECDH_P256, &rng).map_err(|_| "ECDH key".to_string())?;
    let as_public = ours
        .compute_public_key()
        .map_err(|_| "ECDH public key".to_string())?
        .as_ref()
        .to_vec();
    let shared = agree_ephemeral(ours, &UnparsedPublicKey::new(&ECDH_P256, ua_public), |s| {
        s.to_vec()
    })
    .map_err(|_| "the browser's p256dh key is not a valid P-256 point".to_string())?;
    let mut salt = [0u8; 16];
    rng.fill(&mut salt).map_err(|_| "random salt".to_string())?;
    seal(&shared, ua_public, &as_public, auth, &salt, plaintext)
}

/// The body from the ECDH secret on: RFC 8291 section 3.4 (the input keying material from the
/// shared secret, the auth secret and both public keys), then RFC 8188 (content key and nonce
/// from the salt; one record ending with the delimiter 2, no padding).
pub(crate) fn seal(
    shared: &[u8],
    ua_public: &[u8],
    as_public: &[u8],
    auth: &[u8],
    salt: &[u8; 16],
    plaintext: &[u8],
) -> Result<Vec<u8>, String> {
    let mut key_info = b"WebPush: info\0".to_vec();
    key_info.extend_from_slice(ua_public);
    key_info.extend_from_slice(as_public);
    let ikm = hkdf(auth, shared, &key_info, 32)?;
    let cek = hkdf(salt, &ikm, b"Content-Encoding: aes128gcm\0", 16)?;
    let nonce = hkdf(salt, &ikm, b"Content-Encoding: nonce\0", 12)?;
    let key =
        LessSafeKey::new(UnboundKey::new(&AES_128_GCM, &cek).map_err(|_| "AES key".to_string())?);
    let mut record = plaintext.to_vec();
    record.push(2);
    let nonce = Nonce::try_assume_unique_for_key(&nonce).map_err(|_| "nonce".to_string())?;
    key.seal_in_place_append_tag(nonce, Aad::empty(), &mut record)
        .map_err(|_| "AES-GCM failed".to_string())?;
    let mut body = Vec::with_capacity(21 + as_public.len() + record.len());
    body.extend_from_slice(salt);
    body.extend_from_slice(&RECORD_SIZE.to_be_bytes());
    body.push(as_public.len() as u8);
    body.extend_from_slice(as_public);
    body.extend_from_slice(&record);
    Ok(body)
}

pub struct WebPush {
    pub(crate) https: Arc<Https>,
    pub(crate) key: Key,
    /// `mailto:` or `https:` contact sent in every VAPID token.
    pub(crate) subject: String,
    /// VAPID tokens by audience (the endpoint's origin), with their expiry.
    pub(crate) tokens: Mutex<HashMap<String, (String, u64)>>,
}

impl WebPush {
    fn vapid(&self, origin: &str) -> Result<String, SendError> {
        let now = now_secs();
        if let Some((t, exp)) = self.tokens.lock().get(origin) {
            if now + 3600 < *exp {
                return Ok(t.clone());
            }
        }
        let exp = now + VAPID_AGE;
        let t = self
            .key
            .sign(
                &[("typ", "JWT")],
                &json!({"aud": origin, "exp": exp, "sub": self.subject}),
            )
            .map_err(SendError::Rejected)?;
        self.tokens
            .lock()
            .insert(origin.to_string(), (t.clone(), exp));
        Ok(t)
    }

    pub async fn send(&self, sub: &Subscription, n: &Notification) -> Result<(), SendError> {
        let payload = json!({"title": n.title, "body": n.body, "data": n.data}).to_string();
        let body =
            encrypt(payload.as_bytes(), &sub.p256dh, &sub.auth).map_err(SendError::Rejected)?;
        let uri: hyper::Uri = sub
            .endpoint
            .parse()
            .map_err(|e| SendError::Rejected(format!("endpoint {}: {e}", sub.endpoint)))?;
        let origin = format!(
            "https://{}",
            uri.authority().map(|a| a.as_str()).unwrap_or_default()
        );
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(uri)
            .header("content-encoding", "aes128gcm")
            .header("content-type", "application/octet-stream")
            .header(
                "ttl",
                n.ttl
                    .map(|t| t.as_secs())
                    .unwrap_or(28 * 24 * 3600)
                    .to_string(),
            )
            .header("urgency", if n.urgent { "high" } else { "normal" })
            .header(
                "authorization",
                format!(
                    "vapid t={}, k={}",
                    self.vapid(&origin)?,
                    URL_SAFE_NO_PAD.encode(self.key.public())
                ),
            );
        // A Topic replaces an undelivered message with the same one; at most 32 base64url chars.
        if let Some(c) = n.collapse_id.as_ref().filter(|c| {
            c.len() <= 32
                && c.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        }) {
            req = req.header("topic", c);
        }
        let req = req
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| SendError::Rejected(format!("Web Push request: {e}")))?;
        let r = self.https.send(req).await?;
        match r.status {
            s if s.is_success() => Ok(()),
            StatusCode::NOT_FOUND | StatusCode::GONE => Err(SendError::Gone(format!(
                "Web Push {} from {origin}",
                r.status.as_u16()
            ))),
            s if s == StatusCode::TOO_MANY_REQUESTS || s.is_server_error() => {
                Err(SendError::Retry {
                    reason: format!("Web Push {} from {origin}", s.as_u16()),
                    after: r.retry_after(),
                })
            }
            s => Err(SendError::Rejected(format!(
                "Web Push {} from {origin}: {}",
                s.as_u16(),
                String::from_utf8_lossy(&r.body)
                    .chars()
                    .take(200)
                    .collect::<String>()
            ))),
        }
    }
}
