//! Who is calling (docs/auth.md): the `bk-signature` header or query parameter, or the `bk_sid`
//! session cookie, verified against the caller's `bk_auth` row (read through the cache).
//!
//! The order of the checks differs from the original on purpose: the signature is verified right
//! after the row is found, and only then are the account's expiry and ACLs looked at. Otherwise
//! an unsigned probe could learn that a login exists (412 or 403 instead of 401). An unknown login
//! and a wrong signature answer the same 401 "Not authenticated". The secret is never logged.

use crate::api::Api;
use crate::auth::{self, Account, AuthError, Signature, Version, SESSION_COOKIE};
use crate::error::ApiError;
use bkjs_base::config::Config;
use bkjs_db::{Db, Options, Row};
use hyper::header::{CONTENT_TYPE, COOKIE, HOST, ORIGIN, REFERER};
use hyper::{HeaderMap, Method, StatusCode};
use serde_json::{json, Value};
use std::borrow::Cow;

/// `bk_property` row holding the generated session key when `-api-session-key` is not set.
const SESSION_KEY_PROPERTY: &str = "api.session.key";

fn refused(e: AuthError) -> ApiError {
    ApiError::new(
        StatusCode::from_u16(e.status()).unwrap_or(StatusCode::UNAUTHORIZED),
        e.message(),
    )
}

fn not_authenticated() -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "Not authenticated")
}

/// The key session cookies are signed with: `-api-session-key`, or one generated once and kept
/// in `bk_property`, so every worker and every machine sharing the database agrees on it.
pub async fn session_key(cfg: &Config, db: &Db) -> Result<Vec<u8>, bkjs_db::DbError> {
    let configured = cfg.str("api-session-key");
    if !configured.is_empty() {
        return Ok(configured.as_bytes().to_vec());
    }
    let mut key = Row::new();
    key.insert("name".into(), json!(SESSION_KEY_PROPERTY));
    for _ in 0..3 {
        if let Some(row) = db.get("bk_property", &key, &Options::default()).await? {
            if let Some(v) = row
                .get("value")
                .and_then(Value::as_str)
                .filter(|v| !v.is_empty())
            {
                return Ok(v.as_bytes().to_vec());
            }
        }
        let mut row = key.clone();
        let fresh: [u8; 32] = rand::random();
        row.insert("value".into(), json!(hex::encode(fresh)));
        match db.add("bk_property", &row, &Options::default()).await {
            Ok(_) | Err(bkjs_db::DbError::Exists) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(bkjs_db::DbError::Driver(
        "the session key in bk_property cannot be read back".into(),
    ))
}

/// The `Host` header as sent.
pub(crate) fn host_of(headers: &HeaderMap) -> &str {
    headers
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("")
}

/// The value of cookie `name`.
pub(crate) fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The `bk-signature` query parameter, percent-decoded.
pub(crate) fn query_signature(query: Option<&str>) -> Option<Cow<'_, str>> {
    form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == "bk-signature")
        .map(|(_, v)| v)
}

/// Whether the request carries any credentials at all.
pub(crate) fn has_credentials(headers: &HeaderMap, query: Option<&str>) -> bool {
    headers.contains_key("bk-signature")
        || query.is_some_and(|q| q.contains("bk-signature="))
        || cookie(headers, SESSION_COOKIE).is_some()
}

/// Whether the URL query has a parameter other than the signature itself.
fn has_unsigned_query(query: Option<&str>) -> bool {
    query.is_some_and(|q| form_urlencoded::parse(q.as_bytes()).any(|(k, _)| k != "bk-signature"))
}

/// The parts of a request the signature covers.
pub(crate) struct Signed<'a> {
    pub(crate) method: &'a Method,
    pub(crate) headers: &'a HeaderMap,
    pub(crate) path: &'a str,
    pub(crate) query: Option<&'a str>,
    /// `None` while the body is not read yet: the request is authenticated from its headers and
    /// the returned [`BodyCheck`] checks the body once it is there. A form POST signs its body in
    /// the query's place, so it must come with its body.
    pub(crate) body: Option<&'a [u8]>,
    /// A WebSocket upgrade (`websocket::is_upgrade`, decided once by the router).
    pub(crate) upgrade: bool,
}

/// What authenticating from the headers alone leaves for the body: a signed request's body must
/// match the CHECKSUM the signature covers, and a body needs one at all.
#[must_use = "the body is not checked until BodyCheck::check runs"]
pub(crate) struct BodyCheck {
    /// `None`: nothing left to check (a session cookie, or the body was checked already).
    checksum: Option<String>,
}

impl BodyCheck {
    /// Refuses a body the signature does not cover.
    pub(crate) fn check(&self, body: &[u8]) -> Result<(), ApiError> {
        let Some(checksum) = &self.checksum else {
            return Ok(());
        };
        if !body.is_empty() && checksum.is_empty() {
            return Err(unsigned_body());
        }
        auth::verify_checksum(checksum, body).map_err(refused)
    }
}

/// A signed body whose checksum is not signed: whoever sees the request could replace its body
/// until it expires.
fn unsigned_body() -> ApiError {
    ApiError::bad("Invalid signature: a request with a body must sign its checksum")
}

/// A write (a route not in `-api-read-path`) authenticated by the session cookie must come from
/// a page of an allowed origin: a POST (or a WebSocket upgrade) whose `Origin` (or, without one,
/// `Referer`) is this server's own origin or one of `-api-origins`. Another site's page can make a browser send the
/// cookie, but not forge these headers (docs/security.md, CSRF).
fn check_write_origin(api: &Api, r: &Signed<'_>, upgrade: bool) -> Result<(), ApiError> {
    if *r.method != Method::POST && !upgrade {
        return Err(ApiError::denied(
            "Access denied: a write with the session cookie must be a POST",
        ));
    }
    let origin = r
        .headers
        .get(ORIGIN)
        .and_then(|v| v.to_str().ok())
        .or_else(|| {
            let referer = r.headers.get(REFERER)?.to_str().ok()?;
            let after_scheme = referer.find("://")? + 3;
            let end = referer[after_scheme..]
                .find('/')
                .map_or(referer.len(), |i| after_scheme + i);
            Some(&referer[..end])
        });
    let Some(origin) = origin.map(|o| o.trim_end_matches('/').to_ascii_lowercase()) else {
        return Err(ApiError::denied(
            "Access denied: a write with the session cookie needs an Origin or Referer header",
        ));
    };
    let own = origin
        .split_once("://")
        .is_some_and(|(_, host)| host == host_of(r.headers).to_ascii_lowercase());
    if own || api.origins.contains(&origin) {
        return Ok(());
    }
    tracing::info!(
        "auth: refused a cookie write to {} from origin {origin}",
        r.path
    );
    Err(ApiError::denied(
        "Access denied: this origin may not write with the session cookie (-api-origins)",
    ))
}

/// The HMAC work of a verification, for a login that has no account: its refusal then takes the
/// time a wrong signature of a real login takes.
fn decoy_verify(sig: &Signature<'_>) {
    static DECOY: std::sync::OnceLock<auth::SecretKeys> = std::sync::OnceLock::new();
    let keys = DECOY.get_or_init(Default::default);
    let _ = auth::verify_request_keyed(
        sig,
        keys,
        b"decoy secret of no account",
        sig.login.as_ref(),
        b"",
    );
}

/// Refuses a signature of a write that was already used (per machine, in the cache, for as long
/// as the cache keeps it; signatures expire within `-api-max-expire` anyway).
async fn refuse_replay(api: &Api, sig: &Signature<'_>) -> Result<(), ApiError> {
    let Some(cache) = &api.cache else {
        return Ok(());
    };
    // The login too: the MAC does not cover it, so two accounts sharing a secret sign the same
    // request alike.
    let key = format!("bk:sig:{}|{}", sig.login, sig.signature);
    match cache.incr(key, 1).await {
        Ok(1) => Ok(()),
        Ok(_) => {
            tracing::info!(
                "auth: refused a replayed signature of login {:?}",
                sig.login
            );
            Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "Not authenticated: this signature was already used",
            ))
        }
        Err(e) => {
            // Without the cache a replay cannot be told from a first use: refuse, the client
            // can sign again.
            tracing::warn!("auth: the replay cache is unavailable: {e}");
            Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the replay cache is unavailable, try again",
            ))
        }
    }
}

/// Writes a secret stored before sealing existed again, so it is sealed from now on.
fn reseal(db: std::sync::Arc<Db>, login: &str, secret: &str) {
    let mut row = Row::new();
    row.insert("login".into(), json!(login));
    row.insert("secret".into(), json!(secret));
    let login = login.to_string();
    tokio::spawn(async move {
        match db.update("bk_auth", &row, &Options::default()).await {
            Ok(_) => tracing::info!("auth: sealed the secret of login {login:?}"),
            Err(e) => tracing::warn!("auth: cannot seal the secret of login {login:?}: {e}"),
        }
    });
}

/// The account of `login`'s cached `bk_auth` row, its secret unsealed (the flag: stored before
/// sealing, to be written again); `None` when it has no usable secret.
pub(crate) fn open_account(
    api: &Api,
    db: &Db,
    login: &str,
    row: &std::sync::Arc<Row>,
) -> Option<(Account, bool)> {
    api.accounts.account(login, row, |row| {
        // Only when the account is built anew (its cached row changed), not per request.
        let unsealed = db
            .table("bk_auth")
            .and_then(|table| db.unseal(&table, row, "secret"));
        match unsealed {
            Ok(opened) => opened,
            Err(e) => {
                tracing::error!("auth: the secret of login {login:?} does not open: {e}");
                None
            }
        }
    })
}

/// Verifies the caller's credentials; the account on success, the docs/auth.md refusal otherwise.
/// With `r.body` `None` nothing is read from the body: the returned [`BodyCheck`] must then pass
/// on the body before the request is served.
pub(crate) async fn authenticate(
    api: &Api,
    r: &Signed<'_>,
) -> Result<(Account, BodyCheck), ApiError> {
    let header = r.headers.get("bk-signature").map(|v| v.to_str());
    let (text, from_cookie): (Cow<'_, str>, bool) = match header {
        Some(Ok(h)) => (Cow::Borrowed(h), false),
        Some(Err(_)) => return Err(ApiError::bad("Invalid request: bad bk-signature header")),
        None => match query_signature(r.query) {
            Some(q) => (q, false),
            None => match cookie(r.headers, SESSION_COOKIE) {
                Some(c) => (Cow::Borrowed(c), true),
                None => return Err(not_authenticated()),
            },
        },
    };
    let sig = Signature::parse(&text).map_err(refused)?;
    let now = bkjs_base::time::now_ms();
    // A session cookie lives for -api-session-age; only request signatures are held short.
    let max_ahead = (!from_cookie).then_some(api.max_expire_ms);
    auth::check_expires(sig.expires, now, max_ahead).map_err(refused)?;
    if (sig.version == Version::V2) != from_cookie {
        return Err(refused(AuthError::WrongSource));
    }
    let read = api.is_read(r.path);
    let upgrade = r.upgrade;
    if from_cookie && (!read || upgrade) {
        // A WebSocket carries writes too, and browsers send the cookie with the upgrade from
        // any page: the same origin rule applies to it, for GET (what an upgrade is).
        check_write_origin(api, r, upgrade)?;
    }
    let content_type = r.headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok());
    let form = auth::is_form_post(r.method.as_str(), content_type);
    if !from_cookie && form && has_unsigned_query(r.query) {
        // A form POST signs its body in the query's place: parameters in its URL would be merged
        // into the request without being covered by the signature.
        return Err(ApiError::bad(
            "Invalid signature: a signed form POST carries its parameters in the body, not in the URL",
        ));
    }
    if !from_cookie && form && r.body.is_none() {
        return Err(ApiError::internal(
            "a signed form POST is authenticated with its body",
        ));
    }
    let body_check = BodyCheck {
        checksum: (!from_cookie && !form).then(|| sig.checksum.to_string()),
    };
    // A body not read yet is one the headers announce (the router passes an empty one when
    // there is none): it needs a signed checksum as much as one already read.
    if body_check.checksum.as_deref() == Some("") && r.body.is_none_or(|b| !b.is_empty()) {
        return Err(unsigned_body());
    }
    let db = api
        .db
        .as_ref()
        .ok_or_else(|| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "no database"))?;
    let mut key = Row::new();
    key.insert("login".into(), json!(sig.login));
    // Unknown logins are cached as absent like known ones are cached as present, and cost the
    // same HMAC, so neither the answer nor its time tells whether a login exists.
    let Some(row) = db.get_cached_shared("bk_auth", &key).await? else {
        tracing::info!("auth: unknown login {:?} for {}", sig.login, r.path);
        decoy_verify(&sig);
        return Err(not_authenticated());
    };
    let Some((account, legacy)) = open_account(api, db, &sig.login, &row) else {
        tracing::info!("auth: login {:?} has no usable secret", sig.login);
        decoy_verify(&sig);
        return Err(not_authenticated());
    };
    let host = host_of(r.headers);
    let checked = if from_cookie {
        match api.session_key.as_deref().filter(|k| !k.is_empty()) {
            Some(key) => auth::verify_session(key, &sig, &account.session_secret(), host),
            None => Err(AuthError::NoServerKey),
        }
    } else {
        let body = form.then(|| String::from_utf8_lossy(r.body.unwrap_or_default()));
        let query = auth::signed_query(
            r.method.as_str(),
            content_type,
            r.query.unwrap_or(""),
            body.as_deref(),
        );
        let string = sig.string_to_sign(r.method.as_str(), host, r.path, &query, content_type);
        // The MAC covers the CHECKSUM as sent; the body itself is the BodyCheck's (above, or once
        // it is read).
        auth::verify_mac_keyed(&sig, &account.keys, account.secret.as_bytes(), &string)
    };
    if let Err(e) = checked {
        tracing::info!(
            "auth: refused v{} for login {:?} on {} {}: {}",
            sig.version.number(),
            sig.login,
            r.method,
            r.path,
            e.message()
        );
        return Err(refused(e));
    }
    let left = match r.body {
        Some(body) => {
            body_check.check(body)?;
            BodyCheck { checksum: None }
        }
        None => body_check,
    };
    if !from_cookie && !read {
        refuse_replay(api, &sig).await?;
    }
    if legacy {
        reseal(db.clone(), &sig.login, &account.secret);
    }
    check_account(&row, r.path, now)?;
    Ok((account, left))
}

/// The account rules every request and every WebSocket frame of an account meets once its
/// caller is known: the account's expiry (412) and its own `acl_deny`/`acl_allow` patterns (403).
pub(crate) fn check_account(row: &Row, path: &str, now: i64) -> Result<(), ApiError> {
    let expires = row.get("expires").and_then(Value::as_i64).unwrap_or(0);
    if expires > 0 && expires < now {
        return Err(ApiError::new(
            StatusCode::PRECONDITION_FAILED,
            "This account has expired",
        ));
    }
    let acl = |name: &str| -> Option<regex::Regex> {
        let p = row
            .get(name)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())?;
        match regex::Regex::new(p) {
            Ok(rx) => Some(rx),
            Err(e) => {
                let login = row.get("login").and_then(Value::as_str).unwrap_or("");
                tracing::warn!("auth: {name} of login {login:?} is not a regexp: {e}");
                // An unusable rule must not open the account up: deny matches every path,
                // allow matches none.
                let fallback = if name == "acl_deny" { "^" } else { r"[^\s\S]" };
                Some(regex::Regex::new(fallback).expect("a valid regexp"))
            }
        }
    };
    if acl("acl_deny").is_some_and(|rx| rx.is_match(path)) {
        return Err(ApiError::denied("Access denied"));
    }
    if acl("acl_allow").is_some_and(|rx| !rx.is_match(path)) {
        return Err(ApiError::denied("Access denied"));
    }
    Ok(())
}
