//! The client side: the scrambled secret a client keeps and the signer used by
//! `bksh -send-request` and the benchmark. It builds the same strings the server checks, so the
//! two cannot drift apart.

use super::canonical::{canonical_query, is_form_post, string_to_sign};
use super::error::AuthError;
use super::mac::{checksum, sign};
use super::signature::{check_login, Signature, Version};
use std::borrow::Cow;
use std::fmt;

/// Credentials a client may store instead of the real ones (docs/auth.md).
#[derive(Clone, PartialEq, Eq)]
pub struct Scrambled {
    /// `b64(hmac_sha1(key = secret', msg = login))`
    pub login: String,
    /// `b64(hmac_sha1(key = secret, msg = login))`
    pub secret: String,
}

impl fmt::Debug for Scrambled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scrambled")
            .field("login", &self.login)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// The scrambled login and secret: `secret' = b64(hmac_sha1(secret, login))`,
/// `login' = b64(hmac_sha1(secret', login))` (key first). The account is then registered with
/// these values; the server needs no change.
pub fn scramble(login: &str, secret: &str) -> Scrambled {
    let secret2 = sign(Version::V1, secret.as_bytes(), login);
    let login2 = sign(Version::V1, secret2.as_bytes(), login);
    Scrambled {
        login: login2,
        secret: secret2,
    }
}

/// What a client signs.
#[derive(Debug, Clone, Copy)]
pub struct ClientRequest<'a> {
    /// As sent, e.g. `GET`.
    pub method: &'a str,
    /// The `Host` header that will be sent (port and case allowed).
    pub host: &'a str,
    /// Path and optional `?query`, percent-encoded exactly as sent.
    pub target: &'a str,
    /// The `Content-Type` header that will be sent, if any.
    pub content_type: Option<&'a str>,
    /// The body that will be sent (empty for none).
    pub body: &'a [u8],
    /// Absolute expiry, ms since the epoch.
    pub expires: i64,
}

/// The `bk-signature` header value for a request. A form-urlencoded POST signs its body in place
/// of the query (it must then be UTF-8); any other non-empty body is covered by CHECKSUM. v2 is
/// refused: session signatures are issued by the server.
pub fn sign_request(
    version: Version,
    login: &str,
    secret: &[u8],
    req: &ClientRequest<'_>,
) -> Result<String, AuthError> {
    if version == Version::V2 {
        return Err(AuthError::WrongSource);
    }
    check_login(login)?;
    if req.expires <= 0 {
        return Err(AuthError::BadExpires);
    }
    let (path, raw_query) = req.target.split_once('?').unwrap_or((req.target, ""));
    let (query, body_checksum) = if is_form_post(req.method, req.content_type) {
        let body = std::str::from_utf8(req.body)
            .map_err(|_| AuthError::Malformed("form body is not UTF-8"))?;
        (canonical_query(body), String::new())
    } else if req.body.is_empty() {
        (canonical_query(raw_query), String::new())
    } else {
        (canonical_query(raw_query), checksum(req.body))
    };
    let string = string_to_sign(
        req.method,
        req.host,
        path,
        &query,
        req.expires,
        req.content_type,
        &body_checksum,
    );
    let sig = Signature {
        version,
        appdata: Cow::Borrowed(""),
        login: Cow::Borrowed(login),
        signature: Cow::Owned(sign(version, secret, &string)),
        expires: req.expires,
        checksum: Cow::Owned(body_checksum),
    };
    Ok(sig.to_string())
}
