//! Request signatures (SPEC §5): the `bk-signature` value, the string to sign, HMAC signing and
//! constant-time verification, body checksums, the v2 session cookie, the scrambled secret and the
//! client-side signer used by `bksh -send-request` and the benchmark.
//!
//! Everything here is a pure function: no I/O, no clock, no database. The caller supplies "now",
//! the account secret and the server key, so every rule is pinned by fixed test vectors and the
//! HTTP layer only has to fetch inputs and map [`AuthError`] to a reply.
//!
//! # Server flow (the order of SPEC §5)
//! 1. [`Signature::parse`] the header, query parameter or cookie value (malformed → 400);
//! 2. [`check_expires`] with "now" (→ 406; the `-api-max-expire` bound applies to request
//!    signatures only, not to session cookies, whose age is the session age);
//! 3. look up the account by [`Signature::login`] (unknown → [`AuthError::NotAuthenticated`], 401,
//!    so logins cannot be probed), then the account's own expiry (412) and ACLs (403);
//! 4. [`verify_request`] (header or query: v1, v3, v4) or [`verify_session`] (cookie: v2 only);
//!    both compare in constant time, and `verify_request` also checks a non-empty CHECKSUM against
//!    the body.
//!
//! # Strictness (bkjs choices where SPEC §5 is silent)
//! - The value must be exactly `VERSION|APPDATA|LOGIN|SIGNATURE|EXPIRES|CHECKSUM|`: splitting on
//!   `|` gives exactly seven items and the seventh is empty. A missing trailing `|` or anything after
//!   it is refused (the original's unanchored regexp tolerated trailing text).
//! - At most [`MAX_SIGNATURE_LEN`] bytes in all; LOGIN ≤ 256, APPDATA ≤ 512, SIGNATURE and
//!   CHECKSUM ≤ 128 bytes (real values are 28 or 44); no control characters anywhere.
//! - VERSION is exactly one of `1`, `2`, `3`, `4`. EXPIRES is a canonical positive decimal integer
//!   (ASCII digits, no sign, no leading zero) that fits in an `i64`, so the number and the text that
//!   was signed are the same thing.
//! - APPDATA is carried but never signed (as in the original): do not trust it.
//! - The query item dropped from the canonical query is the one whose *name*, as sent, is exactly
//!   `bk-signature` (`bk-signature=…` or a bare `bk-signature`); the original dropped every item that
//!   merely started with those twelve characters. A percent-encoded name is not recognised, so the
//!   signature fails closed.
//! - For a POST whose media type is `application/x-www-form-urlencoded` (parameters such as
//!   `; charset=utf-8` allowed) the raw body takes the raw query's place *before* canonicalisation:
//!   it is split, filtered and sorted like a query (as the original browser client did). The URL's
//!   own query is then not covered by the signature.
//! - Host: the `Host` header lower-cased without its port; a bracketed IPv6 literal keeps its
//!   brackets (`[::1]:8000` → `[::1]`), where the original would have produced `[`.
//!
//! # Session cookie (v2)
//! The cookie `bk_sid` holds `2||LOGIN|SIG|EXPIRES||` with SIG = base64 HMAC-SHA256 of the SPEC
//! session string `*\n{domain}\n/\n*\n{EXPIRES}\n*\n*\n` under a derived key:
//!
//! ```text
//! key = HMAC-SHA256(key = HMAC-SHA256(key = server_key, msg = account secret), msg = LOGIN)
//! ```
//!
//! - the server key means a client (or a leaked secret) cannot mint sessions;
//! - the account secret means changing it (`/account/put/secret`) ends every session;
//! - the login means two accounts that happen to share a secret cannot swap cookies (the session
//!   string itself does not name the account);
//! - nested HMACs need no separator, so no choice of secret or login can collide with another.
//!
//! The cookie value contains `|`, `+`, `/` and `=`, all valid cookie octets; a login with bytes
//! outside RFC 6265 cookie-octet (space, `"`, `,`, `;`, `\`, non-ASCII) must be percent-encoded by
//! the layer that writes `Set-Cookie`, and decoded before [`Signature::parse`].

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use sha1::{Digest, Sha1};
use sha2::Sha256;
use std::borrow::Cow;
use std::fmt;
use std::net::Ipv4Addr;

/// Name of the header and of the query parameter carrying a request signature.
pub const SIGNATURE_NAME: &str = "bk-signature";
/// Name of the session cookie carrying a v2 signature.
pub const SESSION_COOKIE: &str = "bk_sid";
/// Longest accepted signature value, in bytes.
pub const MAX_SIGNATURE_LEN: usize = 1024;
/// Longest accepted LOGIN, in bytes.
pub const MAX_LOGIN_LEN: usize = 256;

const MAX_APPDATA_LEN: usize = 512;
const MAX_MAC_LEN: usize = 128;
const MAX_CHECKSUM_LEN: usize = 128;
/// `i64::MAX` has 19 digits.
const MAX_EXPIRES_DIGITS: usize = 19;
const FORM_TYPE: &str = "application/x-www-form-urlencoded";

/// Why a request is not authenticated. Every variant but [`AuthError::NoServerKey`] is the
/// client's fault (4xx); [`AuthError::status`] and [`AuthError::message`] give the reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Client, 400: the value is not `VERSION|APPDATA|LOGIN|SIGNATURE|EXPIRES|CHECKSUM|`
    /// (field count, length, characters).
    #[error("Invalid signature: {0}")]
    Malformed(&'static str),
    /// Client, 400: a required field (version, login, signature, expires) is empty or the
    /// request carries no signature at all.
    #[error("Invalid signature: missing {0}")]
    MissingField(&'static str),
    /// Client, 400: VERSION is not 1, 2, 3 or 4.
    #[error("Invalid signature: unsupported version")]
    BadVersion,
    /// Client, 400: EXPIRES is not a positive integer of milliseconds that fits in an i64.
    #[error("Invalid signature: EXPIRES is not a positive integer")]
    BadExpires,
    /// Client, 400: a session (v2) signature outside the session cookie, or a request signature
    /// (v1, v3, v4) inside it.
    #[error("Invalid signature: version not allowed here")]
    WrongSource,
    /// Client, 406: EXPIRES is not in the future.
    #[error("Expired request")]
    Expired,
    /// Client, 406: EXPIRES is further ahead than `-api-max-expire` allows (bkjs).
    #[error("Expiration too far in the future")]
    TooFarAhead,
    /// Client, 401: the body does not match a non-empty CHECKSUM, so the body is not covered by the
    /// signature.
    #[error("Body checksum mismatch")]
    BadChecksum,
    /// Client, 401: HMAC mismatch, and also an unknown login (same answer, so logins cannot be
    /// probed).
    #[error("Not authenticated")]
    NotAuthenticated,
    /// Client, 412: the account's `expires` has passed.
    #[error("Account expired")]
    AccountExpired,
    /// Client, 403: `acl_deny` matches or `acl_allow` does not.
    #[error("Access denied")]
    Denied,
    /// Server, 500: session cookies are requested but no server key is configured.
    #[error("Session signing key is not configured")]
    NoServerKey,
}

impl AuthError {
    /// HTTP status of the reply.
    pub fn status(&self) -> u16 {
        match self {
            AuthError::Malformed(_)
            | AuthError::MissingField(_)
            | AuthError::BadVersion
            | AuthError::BadExpires
            | AuthError::WrongSource => 400,
            AuthError::BadChecksum | AuthError::NotAuthenticated => 401,
            AuthError::Denied => 403,
            AuthError::Expired | AuthError::TooFarAhead => 406,
            AuthError::AccountExpired => 412,
            AuthError::NoServerKey => 500,
        }
    }

    /// Message of the reply `{ "status": …, "message": … }`; never contains a secret.
    pub fn message(&self) -> String {
        self.to_string()
    }

    /// The request was wrong (4xx); otherwise the server is misconfigured (5xx).
    pub fn is_client_error(&self) -> bool {
        self.status() < 500
    }
}

/// Signature version: which HMAC and which string to sign.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    /// HMAC-SHA1 of the request string.
    V1,
    /// Session signature (cookie only): HMAC-SHA256 of the session string under a derived key.
    V2,
    /// HMAC-SHA256 of the request string.
    V3,
    /// Same as V3 (bkjs), kept so the string can change later without a new parser.
    V4,
}

impl Version {
    /// The number written in the signature.
    pub fn number(self) -> u8 {
        match self {
            Version::V1 => 1,
            Version::V2 => 2,
            Version::V3 => 3,
            Version::V4 => 4,
        }
    }

    /// The version numbered `n`, if there is one.
    pub fn from_number(n: u8) -> Option<Version> {
        match n {
            1 => Some(Version::V1),
            2 => Some(Version::V2),
            3 => Some(Version::V3),
            4 => Some(Version::V4),
            _ => None,
        }
    }

    fn algorithm(self) -> Algorithm {
        match self {
            Version::V1 => Algorithm::Sha1,
            Version::V2 | Version::V3 | Version::V4 => Algorithm::Sha256,
        }
    }
}

/// A parsed `VERSION|APPDATA|LOGIN|SIGNATURE|EXPIRES|CHECKSUM|` value. `Display` writes it back in
/// that form; `Debug` hides SIGNATURE, which is a bearer credential until EXPIRES.
///
/// A parsed signature borrows its fields from the text it was parsed from.
#[derive(Clone, PartialEq, Eq)]
pub struct Signature<'a> {
    pub version: Version,
    /// Opaque client data; not covered by the signature.
    pub appdata: Cow<'a, str>,
    pub login: Cow<'a, str>,
    /// Base64 HMAC as sent.
    pub signature: Cow<'a, str>,
    /// Milliseconds since the epoch; its decimal form is exactly the text that was signed.
    pub expires: i64,
    /// Empty, or base64 SHA1 of the body.
    pub checksum: Cow<'a, str>,
}

impl<'a> Signature<'a> {
    /// Parses a signature value; see the module doc for how strict this is.
    pub fn parse(s: &'a str) -> Result<Signature<'a>, AuthError> {
        if s.is_empty() {
            return Err(AuthError::MissingField("signature"));
        }
        if s.len() > MAX_SIGNATURE_LEN {
            return Err(AuthError::Malformed("longer than 1024 bytes"));
        }
        // One pass over the bytes: where the `|` are, and whether an ASCII control character
        // or any non-ASCII byte (then checked for Unicode control characters) appears.
        let mut bars = [0usize; 6];
        let mut n = 0;
        let (mut control, mut non_ascii) = (false, false);
        for (i, &b) in s.as_bytes().iter().enumerate() {
            if b == b'|' {
                if n < bars.len() {
                    bars[n] = i;
                }
                n += 1;
            } else if b < 0x20 || b == 0x7f {
                control = true;
            } else if b >= 0x80 {
                non_ascii = true;
            }
        }
        if control || (non_ascii && s.chars().any(char::is_control)) {
            return Err(AuthError::Malformed("control character"));
        }
        // Exactly seven fields: six, then the empty text after the final `|`.
        if n != bars.len() {
            return Err(AuthError::Malformed(
                "expected VERSION|APPDATA|LOGIN|SIGNATURE|EXPIRES|CHECKSUM|",
            ));
        }
        let field = |i: usize| &s[if i == 0 { 0 } else { bars[i - 1] + 1 }..bars[i]];
        let (version, appdata, login, mac, expires, checksum) =
            (field(0), field(1), field(2), field(3), field(4), field(5));
        let rest = &s[bars[5] + 1..];
        if !rest.is_empty() {
            return Err(AuthError::Malformed("text after the final |"));
        }
        if version.is_empty() {
            return Err(AuthError::MissingField("version"));
        }
        let version = match version {
            "1" => Version::V1,
            "2" => Version::V2,
            "3" => Version::V3,
            "4" => Version::V4,
            _ => return Err(AuthError::BadVersion),
        };
        if appdata.len() > MAX_APPDATA_LEN {
            return Err(AuthError::Malformed("APPDATA longer than 512 bytes"));
        }
        check_login(login)?;
        if mac.is_empty() {
            return Err(AuthError::MissingField("signature"));
        }
        if mac.len() > MAX_MAC_LEN {
            return Err(AuthError::Malformed("SIGNATURE longer than 128 bytes"));
        }
        if !is_base64_text(mac) {
            return Err(AuthError::Malformed("SIGNATURE is not base64"));
        }
        if expires.is_empty() {
            return Err(AuthError::MissingField("expires"));
        }
        let expires = parse_expires(expires)?;
        if checksum.len() > MAX_CHECKSUM_LEN {
            return Err(AuthError::Malformed("CHECKSUM longer than 128 bytes"));
        }
        if !is_base64_text(checksum) {
            return Err(AuthError::Malformed("CHECKSUM is not base64"));
        }
        Ok(Signature {
            version,
            appdata: Cow::Borrowed(appdata),
            login: Cow::Borrowed(login),
            signature: Cow::Borrowed(mac),
            expires,
            checksum: Cow::Borrowed(checksum),
        })
    }

    /// The request string this signature must cover: [`string_to_sign`] with this signature's
    /// EXPIRES and CHECKSUM. `query` is the already chosen one ([`signed_query`]).
    pub fn string_to_sign(
        &self,
        method: &str,
        host_header: &str,
        path: &str,
        query: &str,
        content_type: Option<&str>,
    ) -> String {
        string_to_sign(
            method,
            host_header,
            path,
            query,
            self.expires,
            content_type,
            &self.checksum,
        )
    }
}

impl fmt::Display for Signature<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}|{}|{}|{}|{}|{}|",
            self.version.number(),
            self.appdata,
            self.login,
            self.signature,
            self.expires,
            self.checksum
        )
    }
}

impl fmt::Debug for Signature<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signature")
            .field("version", &self.version)
            .field("appdata", &self.appdata)
            .field("login", &self.login)
            .field("signature", &"<redacted>")
            .field("expires", &self.expires)
            .field("checksum", &self.checksum)
            .finish()
    }
}

/// A LOGIN that fits in a signature: non-empty, at most [`MAX_LOGIN_LEN`] bytes, no `|` and no
/// control character. `/account/add` should refuse other logins, since they could never sign in.
pub fn check_login(login: &str) -> Result<(), AuthError> {
    if login.is_empty() {
        return Err(AuthError::MissingField("login"));
    }
    if login.len() > MAX_LOGIN_LEN {
        return Err(AuthError::Malformed("LOGIN longer than 256 bytes"));
    }
    if login.contains('|') || login.chars().any(char::is_control) {
        return Err(AuthError::Malformed(
            "LOGIN contains | or a control character",
        ));
    }
    Ok(())
}

/// EXPIRES: ASCII digits, no leading zero, positive, fits in an i64.
fn parse_expires(s: &str) -> Result<i64, AuthError> {
    if s.len() > MAX_EXPIRES_DIGITS || !s.bytes().all(|b| b.is_ascii_digit()) || s.starts_with('0')
    {
        return Err(AuthError::BadExpires);
    }
    match s.parse::<i64>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(AuthError::BadExpires),
    }
}

fn is_base64_text(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/' || b == b'=')
}

/// Refuses an EXPIRES that is not after `now_ms` ([`AuthError::Expired`]) or, when `max_ahead_ms`
/// is given (`-api-max-expire`, request signatures only), more than that far ahead
/// ([`AuthError::TooFarAhead`]).
pub fn check_expires(
    expires: i64,
    now_ms: i64,
    max_ahead_ms: Option<i64>,
) -> Result<(), AuthError> {
    if expires <= now_ms {
        return Err(AuthError::Expired);
    }
    match max_ahead_ms {
        Some(max) if expires.saturating_sub(now_ms) > max => Err(AuthError::TooFarAhead),
        _ => Ok(()),
    }
}

/// The query as signed: the raw (still percent-encoded) query split on `&`, empty items and the
/// `bk-signature` item(s) dropped, sorted bytewise ascending, joined with `&`. Duplicates are kept.
pub fn canonical_query(raw_query: &str) -> String {
    let mut items: Vec<&str> = raw_query
        .split('&')
        .filter(|item| !item.is_empty() && !is_signature_item(item))
        .collect();
    items.sort_unstable();
    items.join("&")
}

/// True for an item whose name, as sent, is exactly `bk-signature`.
fn is_signature_item(item: &str) -> bool {
    let name = item.split_once('=').map_or(item, |(name, _)| name);
    name == SIGNATURE_NAME
}

/// True for a POST whose media type is `application/x-www-form-urlencoded` (any parameters, any
/// case): its body is signed in place of the query.
pub fn is_form_post(method: &str, content_type: Option<&str>) -> bool {
    method == "POST"
        && content_type.is_some_and(|ct| {
            ct.split(';')
                .next()
                .is_some_and(|media| media.trim().eq_ignore_ascii_case(FORM_TYPE))
        })
}

/// The query item of the string to sign: the canonical form of the form body for a
/// form-urlencoded POST ([`is_form_post`]; `None` counts as empty), otherwise of the URL's raw
/// query (without the `?`).
pub fn signed_query(
    method: &str,
    content_type: Option<&str>,
    raw_query: &str,
    form_body: Option<&str>,
) -> String {
    if is_form_post(method, content_type) {
        canonical_query(form_body.unwrap_or(""))
    } else {
        canonical_query(raw_query)
    }
}

/// The `Host` header without its port, lower-cased; a bracketed IPv6 literal keeps its brackets.
pub fn normalize_host(host_header: &str) -> String {
    host_part(host_header).to_lowercase()
}

/// The `Host` header without its port, as sent ([`normalize_host`] lower-cases it).
fn host_part(host_header: &str) -> &str {
    match host_header.strip_prefix('[') {
        Some(rest) => match rest.find(']') {
            Some(end) => &host_header[..end + 2],
            None => host_header,
        },
        None => host_header.split(':').next().unwrap_or(""),
    }
}

/// The session domain: the normalized host minus its first label when it has more than two
/// labels (`a.b.example.com` → `b.example.com`); IP literals stay whole (bkjs).
pub fn session_domain(host_header: &str) -> String {
    let host = normalize_host(host_header);
    if host.starts_with('[') || host.parse::<Ipv4Addr>().is_ok() {
        return host;
    }
    match host.split_once('.') {
        Some((_, rest)) if rest.contains('.') => rest.to_string(),
        _ => host,
    }
}

/// The request string to sign: METHOD, host (normalized), path (cut at `?`), query (already
/// chosen by [`signed_query`], inserted as is), EXPIRES, Content-Type lower-cased (empty for
/// none) and CHECKSUM, each followed by `\n`.
pub fn string_to_sign(
    method: &str,
    host_header: &str,
    path: &str,
    query: &str,
    expires: i64,
    content_type: Option<&str>,
    checksum: &str,
) -> String {
    use std::fmt::Write;
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    let host = host_part(host_header);
    let content_type = content_type.unwrap_or("");
    // Built in one allocation: this runs for every signed request.
    let mut out = String::with_capacity(
        method.len()
            + host.len()
            + path.len()
            + query.len()
            + content_type.len()
            + checksum.len()
            + 32,
    );
    out.push_str(method);
    out.push('\n');
    push_lowercase(&mut out, host);
    out.push('\n');
    out.push_str(path);
    out.push('\n');
    out.push_str(query);
    out.push('\n');
    let _ = write!(out, "{expires}");
    out.push('\n');
    push_lowercase(&mut out, content_type);
    out.push('\n');
    out.push_str(checksum);
    out.push('\n');
    out
}

/// Appends `s` lower-cased exactly as [`str::to_lowercase`] would, without a temporary string
/// when it is ASCII.
fn push_lowercase(out: &mut String, s: &str) {
    if s.is_ascii() {
        out.extend(s.bytes().map(|b| char::from(b.to_ascii_lowercase())));
    } else {
        out.push_str(&s.to_lowercase());
    }
}

/// The session string `*\n{domain}\n/\n*\n{EXPIRES}\n*\n*\n` ([`session_domain`]).
pub fn session_string(host_header: &str, expires: i64) -> String {
    format!(
        "*\n{}\n/\n*\n{expires}\n*\n*\n",
        session_domain(host_header)
    )
}

#[derive(Clone, Copy)]
enum Algorithm {
    Sha1,
    Sha256,
}

/// HMAC of `msg` under `key`. HMAC takes keys of any length, so `new_from_slice` cannot fail; the
/// `None` branch exists only to avoid a panic path and makes callers fail closed.
fn mac(alg: Algorithm, key: &[u8], msg: &[u8]) -> Option<Vec<u8>> {
    match alg {
        Algorithm::Sha1 => {
            let mut m = <Hmac<Sha1> as KeyInit>::new_from_slice(key).ok()?;
            m.update(msg);
            Some(m.finalize().into_bytes().to_vec())
        }
        Algorithm::Sha256 => {
            let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(key).ok()?;
            m.update(msg);
            Some(m.finalize().into_bytes().to_vec())
        }
    }
}

/// Constant-time comparison of the HMAC of `msg` with `tag` (length included).
fn mac_matches(alg: Algorithm, key: &[u8], msg: &[u8], tag: &[u8]) -> bool {
    match alg {
        Algorithm::Sha1 => <Hmac<Sha1> as KeyInit>::new_from_slice(key)
            .map(|m| m.chain_update(msg).verify_slice(tag).is_ok())
            .unwrap_or(false),
        Algorithm::Sha256 => <Hmac<Sha256> as KeyInit>::new_from_slice(key)
            .map(|m| m.chain_update(msg).verify_slice(tag).is_ok())
            .unwrap_or(false),
    }
}

/// Base64 (standard alphabet, `=` padding) HMAC of `string` under `secret`: SHA1 for v1, SHA256
/// for v2, v3 and v4. For v2 `secret` is the derived session key; see [`session_cookie`].
pub fn sign(version: Version, secret: &[u8], string: &str) -> String {
    mac(version.algorithm(), secret, string.as_bytes())
        .map(|tag| B64.encode(tag))
        .unwrap_or_default()
}

/// True when `signature` is the base64 HMAC of `string` under `secret`; the HMACs are compared in
/// constant time. A signature that is not canonical base64 is false.
pub fn verify(version: Version, secret: &[u8], string: &str, signature: &str) -> bool {
    match B64.decode(signature) {
        Ok(tag) => mac_matches(version.algorithm(), secret, string.as_bytes(), &tag),
        Err(_) => false,
    }
}

/// Base64 SHA1 of a body, the CHECKSUM field.
pub fn checksum(body: &[u8]) -> String {
    B64.encode(Sha1::digest(body))
}

/// Checks a CHECKSUM field against the body: an empty field checks nothing.
pub fn verify_checksum(expected: &str, body: &[u8]) -> Result<(), AuthError> {
    if expected.is_empty() || checksum(body) == expected {
        Ok(())
    } else {
        Err(AuthError::BadChecksum)
    }
}

/// Verifies a request signature (header or query parameter): v2 is refused
/// ([`AuthError::WrongSource`]), the HMAC of `string` ([`Signature::string_to_sign`]) must match
/// ([`AuthError::NotAuthenticated`]), then a non-empty CHECKSUM must match `body`
/// ([`AuthError::BadChecksum`]). Expiry is [`check_expires`]'s job.
pub fn verify_request(
    sig: &Signature<'_>,
    secret: &[u8],
    string: &str,
    body: &[u8],
) -> Result<(), AuthError> {
    verify_request_keyed(sig, &SecretKeys::default(), secret, string, body)
}

/// [`verify_request`] with HMAC states already keyed with `secret` (`keys` must belong to this
/// secret: the caller keeps them together, as [`crate::Account`] does).
pub fn verify_request_keyed(
    sig: &Signature<'_>,
    keys: &SecretKeys,
    secret: &[u8],
    string: &str,
    body: &[u8],
) -> Result<(), AuthError> {
    if sig.version == Version::V2 {
        return Err(AuthError::WrongSource);
    }
    let good = match B64.decode(sig.signature.as_bytes()) {
        Ok(tag) => keys.matches(sig.version.algorithm(), secret, string.as_bytes(), &tag),
        Err(_) => false,
    };
    if !good {
        return Err(AuthError::NotAuthenticated);
    }
    verify_checksum(&sig.checksum, body)
}

/// HMAC states keyed with one account's secret, made on first use and cloned for each request:
/// keying an HMAC hashes two blocks, about a third of the work for a short request string.
#[derive(Default)]
pub struct SecretKeys {
    sha1: std::sync::OnceLock<Option<Hmac<Sha1>>>,
    sha256: std::sync::OnceLock<Option<Hmac<Sha256>>>,
}

impl fmt::Debug for SecretKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKeys(<redacted>)")
    }
}

impl SecretKeys {
    /// Constant-time comparison of the HMAC of `msg` under `secret` with `tag`.
    fn matches(&self, alg: Algorithm, secret: &[u8], msg: &[u8], tag: &[u8]) -> bool {
        match alg {
            Algorithm::Sha1 => self
                .sha1
                .get_or_init(|| <Hmac<Sha1> as KeyInit>::new_from_slice(secret).ok())
                .clone()
                .is_some_and(|m| m.chain_update(msg).verify_slice(tag).is_ok()),
            Algorithm::Sha256 => self
                .sha256
                .get_or_init(|| <Hmac<Sha256> as KeyInit>::new_from_slice(secret).ok())
                .clone()
                .is_some_and(|m| m.chain_update(msg).verify_slice(tag).is_ok()),
        }
    }
}

/// The v2 key: HMAC-SHA256(HMAC-SHA256(server_key, secret), login); see the module doc.
fn session_key(server_key: &[u8], login: &str, secret: &[u8]) -> Option<Vec<u8>> {
    let per_account = mac(Algorithm::Sha256, server_key, secret)?;
    mac(Algorithm::Sha256, &per_account, login.as_bytes())
}

/// The `bk_sid` cookie value `2||LOGIN|SIG|EXPIRES||` for an account, valid for hosts with the same
/// [`session_domain`] until `expires` (ms since the epoch).
pub fn session_cookie(
    server_key: &[u8],
    login: &str,
    secret: &[u8],
    host_header: &str,
    expires: i64,
) -> Result<String, AuthError> {
    if server_key.is_empty() {
        return Err(AuthError::NoServerKey);
    }
    check_login(login)?;
    if expires <= 0 {
        return Err(AuthError::BadExpires);
    }
    let key = session_key(server_key, login, secret).ok_or(AuthError::NoServerKey)?;
    let sig = Signature {
        version: Version::V2,
        appdata: Cow::Borrowed(""),
        login: Cow::Borrowed(login),
        signature: Cow::Owned(sign(
            Version::V2,
            &key,
            &session_string(host_header, expires),
        )),
        expires,
        checksum: Cow::Borrowed(""),
    };
    Ok(sig.to_string())
}

/// Verifies a session cookie parsed with [`Signature::parse`]: it must be v2
/// ([`AuthError::WrongSource`]) and signed for this account and this host's session domain
/// ([`AuthError::NotAuthenticated`]). Expiry is [`check_expires`]'s job.
pub fn verify_session(
    server_key: &[u8],
    sig: &Signature<'_>,
    secret: &[u8],
    host_header: &str,
) -> Result<(), AuthError> {
    if server_key.is_empty() {
        return Err(AuthError::NoServerKey);
    }
    if sig.version != Version::V2 {
        return Err(AuthError::WrongSource);
    }
    let key = session_key(server_key, &sig.login, secret).ok_or(AuthError::NotAuthenticated)?;
    let string = session_string(host_header, sig.expires);
    if verify(Version::V2, &key, &string, &sig.signature) {
        Ok(())
    } else {
        Err(AuthError::NotAuthenticated)
    }
}

/// Credentials a client may store instead of the real ones (SPEC §5).
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

#[cfg(test)]
mod tests {
    use super::*;

    const HOST: &str = "Api.Example.com:8000";
    const PATH: &str = "/account/get";
    const EXPIRES: i64 = 1_900_000_000_000;

    /// SPEC appendix: (version, query as sent, bk-signature).
    const VECTORS: &[(Version, &str, &str)] = &[
        (
            Version::V1,
            "b=2&a=1&c=%2B",
            "1||alice|kzcRwejeU58HboBzv6+hZO5OIBI=|1900000000000||",
        ),
        (
            Version::V3,
            "z=1&id=abc&_count=5",
            "3||alice|d+vXQuhdGnrFD4LIv50VBqP/F93Fc2k7gPbFb+/NdJA=|1900000000000||",
        ),
        (
            Version::V1,
            "",
            "1||alice|Er9zAM2FG5jC0TnCevP0E9y38CE=|1900000000000||",
        ),
    ];

    fn get(target: &str) -> ClientRequest<'_> {
        ClientRequest {
            method: "GET",
            host: HOST,
            target,
            content_type: None,
            body: b"",
            expires: EXPIRES,
        }
    }

    #[test]
    fn appendix_vectors_sign() {
        for &(version, query, expected) in VECTORS {
            let target = if query.is_empty() {
                PATH.to_string()
            } else {
                format!("{PATH}?{query}")
            };
            let header = sign_request(version, "alice", b"s3cret", &get(&target));
            assert_eq!(header.as_deref(), Ok(expected), "query {query:?}");
        }
    }

    #[test]
    fn appendix_vectors_verify() {
        for &(version, query, header) in VECTORS {
            let sig = Signature::parse(header).expect("parse");
            assert_eq!(sig.version, version);
            assert_eq!(sig.login, "alice");
            assert_eq!(sig.expires, EXPIRES);
            assert_eq!(sig.to_string(), header);
            let q = signed_query("GET", None, query, None);
            let string = sig.string_to_sign("GET", HOST, PATH, &q, None);
            assert_eq!(verify_request(&sig, b"s3cret", &string, b""), Ok(()));
            assert_eq!(
                verify_request(&sig, b"s3creT", &string, b""),
                Err(AuthError::NotAuthenticated)
            );
        }
    }

    #[test]
    fn appendix_string_to_sign() {
        let q = canonical_query("b=2&a=1&c=%2B");
        assert_eq!(q, "a=1&b=2&c=%2B");
        assert_eq!(
            string_to_sign("GET", HOST, PATH, &q, EXPIRES, None, ""),
            "GET\napi.example.com\n/account/get\na=1&b=2&c=%2B\n1900000000000\n\n\n"
        );
        assert_eq!(
            canonical_query("z=1&id=abc&_count=5"),
            "_count=5&id=abc&z=1"
        );
    }

    /// Headers printed by the independent `tests/sign.py` for cases the appendix does not cover.
    #[test]
    fn python_cross_vectors() {
        let json = ClientRequest {
            method: "POST",
            host: HOST,
            target: "/account/update",
            content_type: Some("application/json"),
            body: br#"{"name":"x"}"#,
            expires: EXPIRES,
        };
        let form = ClientRequest {
            target: "/account/update?ignored=1",
            content_type: Some("application/x-www-form-urlencoded; charset=utf-8"),
            body: b"name=x%20y&alias=z",
            ..json
        };
        let cases = [
            (
                Version::V3,
                json,
                "3||alice|X5CelqhEyIVN7XUepipEUoXn7jxiGUx3lM37NiP6Exk=|1900000000000|iD2Rve/jlI2A13Iw1wrdBubvGUQ=|",
            ),
            (
                Version::V1,
                form,
                "1||alice|A03nKGPoOK91vLJVjgAHKeDC1No=|1900000000000||",
            ),
            (
                Version::V4,
                get("/account/get?bk-signature=zz&b=1"),
                "4||alice|Fw+l9X5nVyjyNAPRm3wCHalqBqm4RvWPjavCtUVLOsY=|1900000000000||",
            ),
        ];
        for (version, req, expected) in cases {
            let header = sign_request(version, "alice", b"s3cret", &req);
            assert_eq!(header.as_deref(), Ok(expected), "{}", req.target);
        }
    }

    #[test]
    fn string_to_sign_parts() {
        assert_eq!(
            string_to_sign(
                "POST",
                "Example.COM",
                "/a/b?x=1",
                "q",
                5,
                Some("Application/JSON; Charset=UTF-8"),
                "ck"
            ),
            "POST\nexample.com\n/a/b\nq\n5\napplication/json; charset=utf-8\nck\n"
        );
        // Non-ASCII is lower-cased as str::to_lowercase does (final sigma included), with a port
        // cut from the host and an IPv6 literal kept whole.
        assert_eq!(
            string_to_sign("GET", "ΟΔΟΣ.example:80", "/", "", 7, Some("X/ΣΑΣ"), ""),
            format!(
                "GET\n{}\n/\n\n7\n{}\n\n",
                "ΟΔΟΣ.example".to_lowercase(),
                "x/ΣΑΣ".to_lowercase()
            )
        );
        assert!(
            string_to_sign("GET", "[::1]:8000", "/", "", 7, None, "").starts_with("GET\n[::1]\n")
        );
    }

    #[test]
    fn parse_accepts_all_fields() {
        let sig = Signature::parse("4|app data|bob@x.com|QUJD|42|2jmj7l5rSw0yVb/vlWAYkK/YBwk=|")
            .expect("parse");
        assert_eq!(sig.version, Version::V4);
        assert_eq!(sig.appdata, "app data");
        assert_eq!(sig.login, "bob@x.com");
        assert_eq!(sig.signature, "QUJD");
        assert_eq!(sig.expires, 42);
        assert_eq!(sig.checksum, "2jmj7l5rSw0yVb/vlWAYkK/YBwk=");
        assert!(!format!("{sig:?}").contains("QUJD"));
    }

    #[test]
    fn parse_field_count() {
        let bad = [
            "1||alice|QUJD|42|",   // no trailing |
            "1||alice|QUJD|42||x", // text after the final |
            "1||alice|QUJD|42|||", // eight items
            "1|alice|QUJD|42||",   // a field missing
            "garbage",
            "||||||",
        ];
        for s in bad {
            let err = Signature::parse(s).expect_err(s);
            assert_eq!(err.status(), 400, "{s}: {err}");
        }
        assert!(matches!(
            Signature::parse("1||alice|QUJD|42|"),
            Err(AuthError::Malformed(_))
        ));
        assert_eq!(
            Signature::parse(""),
            Err(AuthError::MissingField("signature"))
        );
    }

    #[test]
    fn parse_refuses_control_characters_anywhere() {
        for s in [
            "1|\t|alice|QUJD|42||",
            "1||ali\u{7f}ce|QUJD|42||",
            "1||alice|QUJD|42|\n|",
            "1|caf\u{e9} \u{85}|alice|QUJD|42||", // a C1 control after non-ASCII text
            "\u{9f}1||alice|QUJD|42||",
        ] {
            assert_eq!(
                Signature::parse(s),
                Err(AuthError::Malformed("control character")),
                "{s:?}"
            );
        }
        // Non-ASCII text that is not a control character is fine where free text is allowed.
        let sig = Signature::parse("1|caf\u{e9}|\u{e9}l\u{e8}ve|QUJD|42||").expect("parse");
        assert_eq!(sig.appdata, "caf\u{e9}");
        assert_eq!(sig.login, "\u{e9}l\u{e8}ve");
    }

    #[test]
    fn parse_version() {
        for v in ["0", "5", "01", "+1", "1.0", "x", "11"] {
            let s = format!("{v}||alice|QUJD|42||");
            assert_eq!(Signature::parse(&s), Err(AuthError::BadVersion), "{v}");
        }
        assert_eq!(
            Signature::parse("||alice|QUJD|42||"),
            Err(AuthError::MissingField("version"))
        );
        for (v, expected) in [("1", Version::V1), ("2", Version::V2), ("3", Version::V3)] {
            let s = format!("{v}||alice|QUJD|42||");
            assert_eq!(Signature::parse(&s).map(|s| s.version), Ok(expected));
        }
    }

    #[test]
    fn parse_expires_values() {
        for e in [
            "abc",
            "-5",
            "+5",
            "0",
            "007",
            "1.5",
            "1e12",
            " 42",
            "9223372036854775808",
            "99999999999999999999",
        ] {
            let s = format!("1||alice|QUJD|{e}||");
            assert_eq!(Signature::parse(&s), Err(AuthError::BadExpires), "{e}");
        }
        assert_eq!(
            Signature::parse("1||alice|QUJD|||"),
            Err(AuthError::MissingField("expires"))
        );
        let max = Signature::parse("1||alice|QUJD|9223372036854775807||").expect("i64::MAX");
        assert_eq!(max.expires, i64::MAX);
    }

    #[test]
    fn parse_login_and_signature() {
        assert_eq!(
            Signature::parse("1|||QUJD|42||"),
            Err(AuthError::MissingField("login"))
        );
        assert_eq!(
            Signature::parse("1||alice||42||"),
            Err(AuthError::MissingField("signature"))
        );
        assert!(matches!(
            Signature::parse("1||alice|not base64!|42||"),
            Err(AuthError::Malformed(_))
        ));
        assert!(matches!(
            Signature::parse("1||alice|QUJD|42|a b|"),
            Err(AuthError::Malformed(_))
        ));
        assert!(matches!(
            Signature::parse("1||al\nice|QUJD|42||"),
            Err(AuthError::Malformed(_))
        ));
        assert!(matches!(
            Signature::parse("1||alice\0|QUJD|42||"),
            Err(AuthError::Malformed(_))
        ));
    }

    #[test]
    fn parse_refuses_huge_values() {
        let long = "a".repeat(2000);
        assert!(matches!(
            Signature::parse(&format!("1||{long}|QUJD|42||")),
            Err(AuthError::Malformed(_))
        ));
        let login = "a".repeat(MAX_LOGIN_LEN + 1);
        assert!(matches!(
            Signature::parse(&format!("1||{login}|QUJD|42||")),
            Err(AuthError::Malformed(_))
        ));
        let login = "a".repeat(MAX_LOGIN_LEN);
        assert!(Signature::parse(&format!("1||{login}|QUJD|42||")).is_ok());
        let appdata = "d".repeat(513);
        assert!(matches!(
            Signature::parse(&format!("1|{appdata}|alice|QUJD|42||")),
            Err(AuthError::Malformed(_))
        ));
        let mac = "A".repeat(129);
        assert!(matches!(
            Signature::parse(&format!("1||alice|{mac}|42||")),
            Err(AuthError::Malformed(_))
        ));
        let ck = "A".repeat(129);
        assert!(matches!(
            Signature::parse(&format!("1||alice|QUJD|42|{ck}|")),
            Err(AuthError::Malformed(_))
        ));
        // Every field at its own limit, 1024 bytes in all, is fine; one byte more is not.
        let build = |ck_len: usize| {
            format!(
                "1|{}|{}|{}|42|{}|",
                "d".repeat(512),
                "l".repeat(MAX_LOGIN_LEN),
                "A".repeat(128),
                "C".repeat(ck_len)
            )
        };
        let at_limit = build(119);
        assert_eq!(at_limit.len(), MAX_SIGNATURE_LEN);
        assert!(Signature::parse(&at_limit).is_ok());
        let over = build(120);
        assert!(matches!(
            Signature::parse(&over),
            Err(AuthError::Malformed("longer than 1024 bytes"))
        ));
    }

    #[test]
    fn canonical_query_edges() {
        assert_eq!(canonical_query(""), "");
        assert_eq!(canonical_query("&&&"), "");
        assert_eq!(canonical_query("b=2&&a=1&"), "a=1&b=2");
        assert_eq!(canonical_query("b=1&bk-signature=1%7C%7Cx&a=2"), "a=2&b=1");
        assert_eq!(canonical_query("bk-signature&a=2"), "a=2");
        assert_eq!(canonical_query("bk-signature=&a=2"), "a=2");
        // Only the exact name is dropped, as sent.
        assert_eq!(
            canonical_query("bk-signaturex=1&xbk-signature=2&bk%2Dsignature=3"),
            "bk%2Dsignature=3&bk-signaturex=1&xbk-signature=2"
        );
        // Bytewise: upper case before `_` before lower case; still encoded; `+` kept.
        assert_eq!(
            canonical_query("a=1&_b=2&B=3&c=x+y&c=%2B"),
            "B=3&_b=2&a=1&c=%2B&c=x+y"
        );
        // Duplicates kept; items without `=` kept; prefix sorts first.
        assert_eq!(canonical_query("a=2&a=1&a=1&a"), "a&a=1&a=1&a=2");
    }

    #[test]
    fn form_post_signs_body() {
        let form = Some("application/x-www-form-urlencoded; charset=UTF-8");
        assert!(is_form_post("POST", form));
        assert!(is_form_post(
            "POST",
            Some("Application/X-WWW-Form-Urlencoded")
        ));
        assert!(!is_form_post("PUT", form));
        assert!(!is_form_post("POST", Some("application/json")));
        assert!(!is_form_post("POST", None));
        assert_eq!(
            signed_query("POST", form, "z=9", Some("b=2&a=1")),
            "a=1&b=2"
        );
        assert_eq!(signed_query("POST", form, "z=9", None), "");
        assert_eq!(signed_query("GET", form, "z=9&y=8", Some("b=2")), "y=8&z=9");
        assert_eq!(
            signed_query("POST", Some("application/json"), "z=9", Some("b=2")),
            "z=9"
        );
    }

    #[test]
    fn hosts_and_domains() {
        assert_eq!(normalize_host(HOST), "api.example.com");
        assert_eq!(normalize_host("LOCALHOST"), "localhost");
        assert_eq!(normalize_host(""), "");
        assert_eq!(normalize_host("[::1]:8000"), "[::1]");
        assert_eq!(normalize_host("[::1]"), "[::1]");
        assert_eq!(session_domain("a.b.example.com"), "b.example.com");
        assert_eq!(session_domain("b.example.com"), "example.com");
        assert_eq!(session_domain("example.com"), "example.com");
        assert_eq!(session_domain("localhost"), "localhost");
        assert_eq!(session_domain("localhost:8000"), "localhost");
        assert_eq!(session_domain(HOST), "example.com");
        assert_eq!(session_domain("10.0.0.1:8000"), "10.0.0.1");
        assert_eq!(session_domain("[fe80::1]:80"), "[fe80::1]");
        assert_eq!(
            session_string(HOST, EXPIRES),
            "*\nexample.com\n/\n*\n1900000000000\n*\n*\n"
        );
    }

    #[test]
    fn checksums() {
        assert_eq!(checksum(b""), "2jmj7l5rSw0yVb/vlWAYkK/YBwk=");
        // printf '{"a":1}' | openssl sha1 -binary | base64
        assert_eq!(checksum(br#"{"a":1}"#), "n4nHQM60bXQYySSnisV5QdXpZSA=");
        assert_eq!(verify_checksum("", b"anything"), Ok(()));
        assert_eq!(
            verify_checksum("n4nHQM60bXQYySSnisV5QdXpZSA=", br#"{"a":1}"#),
            Ok(())
        );
        assert_eq!(
            verify_checksum("n4nHQM60bXQYySSnisV5QdXpZSA=", br#"{"a":2}"#),
            Err(AuthError::BadChecksum)
        );
    }

    #[test]
    fn verify_true_and_false() {
        let s = "GET\nh\n/\n\n1\n\n\n";
        for v in [Version::V1, Version::V3, Version::V4] {
            let good = sign(v, b"k", s);
            assert!(verify(v, b"k", s, &good));
            assert!(!verify(v, b"K", s, &good));
            assert!(!verify(v, b"k", "GET\nh\n/\n\n2\n\n\n", &good));
            assert!(!verify(v, b"k", s, ""));
            assert!(!verify(v, b"k", s, "not base64"));
            // Right bytes, one flipped.
            let mut tag = B64.decode(&good).expect("b64");
            tag[0] ^= 1;
            assert!(!verify(v, b"k", s, &B64.encode(&tag)));
            // A prefix of the right HMAC is not accepted.
            let tag = B64.decode(&good).expect("b64");
            assert!(!verify(v, b"k", s, &B64.encode(&tag[..tag.len() - 1])));
        }
        assert_eq!(sign(Version::V1, b"k", s).len(), 28);
        assert_eq!(sign(Version::V3, b"k", s).len(), 44);
        assert_eq!(sign(Version::V3, b"k", s), sign(Version::V4, b"k", s));
        let v1 = sign(Version::V1, b"k", s);
        assert!(!verify(Version::V3, b"k", s, &v1));
    }

    #[test]
    fn checksum_is_signed_and_checked() {
        let body = br#"{"name":"x"}"#;
        let req = ClientRequest {
            method: "POST",
            host: HOST,
            target: "/account/update",
            content_type: Some("application/json"),
            body,
            expires: EXPIRES,
        };
        let header = sign_request(Version::V3, "alice", b"s3cret", &req).expect("sign");
        let sig = Signature::parse(&header).expect("parse");
        assert_eq!(sig.checksum, checksum(body));
        let q = signed_query("POST", req.content_type, "", None);
        let string = sig.string_to_sign("POST", HOST, "/account/update", &q, req.content_type);
        assert_eq!(verify_request(&sig, b"s3cret", &string, body), Ok(()));
        assert_eq!(
            verify_request(&sig, b"s3cret", &string, br#"{"name":"y"}"#),
            Err(AuthError::BadChecksum)
        );
        // Dropping the checksum from the header breaks the HMAC.
        let mut stripped = sig.clone();
        stripped.checksum = "".into();
        let string = stripped.string_to_sign("POST", HOST, "/account/update", &q, req.content_type);
        assert_eq!(
            verify_request(&stripped, b"s3cret", &string, body),
            Err(AuthError::NotAuthenticated)
        );
    }

    #[test]
    fn form_post_round_trip() {
        let ct = Some("application/x-www-form-urlencoded; charset=utf-8");
        let req = ClientRequest {
            method: "POST",
            host: HOST,
            target: "/account/update?ignored=1",
            content_type: ct,
            body: b"name=x%20y&alias=z",
            expires: EXPIRES,
        };
        let header = sign_request(Version::V1, "alice", b"s3cret", &req).expect("sign");
        let sig = Signature::parse(&header).expect("parse");
        assert_eq!(sig.checksum, "");
        let q = signed_query("POST", ct, "ignored=1", Some("name=x%20y&alias=z"));
        let string = sig.string_to_sign("POST", HOST, "/account/update", &q, ct);
        assert_eq!(verify_request(&sig, b"s3cret", &string, b""), Ok(()));
        let bad = ClientRequest {
            body: b"\xff",
            ..req
        };
        assert!(matches!(
            sign_request(Version::V1, "alice", b"s3cret", &bad),
            Err(AuthError::Malformed(_))
        ));
    }

    #[test]
    fn keyed_states_verify_like_fresh_ones_request_after_request() {
        let keys = SecretKeys::default();
        for version in [Version::V1, Version::V3, Version::V1, Version::V4] {
            for msg in ["GET\nh\n/a\n\n1\n\n\n", "POST\nh\n/b\nx=1\n2\n\n\n"] {
                let good = Signature {
                    version,
                    appdata: "".into(),
                    login: "al".into(),
                    signature: sign(version, b"s3cret", msg).into(),
                    expires: 1,
                    checksum: "".into(),
                };
                assert_eq!(
                    verify_request_keyed(&good, &keys, b"s3cret", msg, b""),
                    Ok(())
                );
                let mut bad = good.clone();
                bad.signature = sign(version, b"other", msg).into();
                assert_eq!(
                    verify_request_keyed(&bad, &keys, b"s3cret", msg, b""),
                    Err(AuthError::NotAuthenticated)
                );
                assert_eq!(
                    verify_request(&bad, b"s3cret", msg, b""),
                    Err(AuthError::NotAuthenticated)
                );
            }
        }
        assert!(!format!("{keys:?}").contains("s3cret"));
    }

    #[test]
    fn sign_request_refusals() {
        let req = get(PATH);
        assert_eq!(
            sign_request(Version::V2, "alice", b"s", &req),
            Err(AuthError::WrongSource)
        );
        assert_eq!(
            sign_request(Version::V1, "", b"s", &req),
            Err(AuthError::MissingField("login"))
        );
        assert!(matches!(
            sign_request(Version::V1, "a|b", b"s", &req),
            Err(AuthError::Malformed(_))
        ));
        let past = ClientRequest { expires: 0, ..req };
        assert_eq!(
            sign_request(Version::V1, "alice", b"s", &past),
            Err(AuthError::BadExpires)
        );
    }

    #[test]
    fn session_cookie_round_trip() {
        let key = b"server key";
        let cookie =
            session_cookie(key, "alice", b"s3cret", "www.example.com:8000", EXPIRES).expect("c");
        assert!(cookie.starts_with("2||alice|"));
        assert!(cookie.ends_with("|1900000000000||"));
        let sig = Signature::parse(&cookie).expect("parse");
        assert_eq!(sig.version, Version::V2);
        // Any host with the same session domain.
        for host in ["www.example.com", "api.example.com:8000", "example.com"] {
            assert_eq!(verify_session(key, &sig, b"s3cret", host), Ok(()), "{host}");
        }
        let no = Err(AuthError::NotAuthenticated);
        assert_eq!(verify_session(key, &sig, b"s3cret", "www.example.org"), no);
        assert_eq!(
            verify_session(b"other key", &sig, b"s3cret", "example.com"),
            no
        );
        assert_eq!(verify_session(key, &sig, b"changed", "example.com"), no);
        // Another account with the same secret cannot reuse the cookie.
        let mut swapped = sig.clone();
        swapped.login = "bob".into();
        assert_eq!(verify_session(key, &swapped, b"s3cret", "example.com"), no);
        // A later EXPIRES is not covered.
        let mut extended = sig.clone();
        extended.expires += 1;
        assert_eq!(verify_session(key, &extended, b"s3cret", "example.com"), no);
        // The account secret alone (what a client knows) does not make a valid cookie.
        let forged = format!(
            "2||alice|{}|{EXPIRES}||",
            sign(
                Version::V2,
                b"s3cret",
                &session_string("example.com", EXPIRES)
            )
        );
        let forged = Signature::parse(&forged).expect("parse");
        assert_eq!(verify_session(key, &forged, b"s3cret", "example.com"), no);
    }

    #[test]
    fn session_sources_and_key() {
        let cookie = session_cookie(b"k", "alice", b"s", "example.com", EXPIRES).expect("c");
        let sig = Signature::parse(&cookie).expect("parse");
        assert_eq!(
            verify_request(&sig, b"s", "anything", b""),
            Err(AuthError::WrongSource)
        );
        let v1 = Signature::parse(VECTORS[0].2).expect("parse");
        assert_eq!(
            verify_session(b"k", &v1, b"s3cret", HOST),
            Err(AuthError::WrongSource)
        );
        assert_eq!(
            session_cookie(b"", "alice", b"s", "example.com", EXPIRES),
            Err(AuthError::NoServerKey)
        );
        assert_eq!(
            verify_session(b"", &sig, b"s", "example.com"),
            Err(AuthError::NoServerKey)
        );
        assert_eq!(
            session_cookie(b"k", "", b"s", "example.com", EXPIRES),
            Err(AuthError::MissingField("login"))
        );
        assert_eq!(
            session_cookie(b"k", "alice", b"s", "example.com", -1),
            Err(AuthError::BadExpires)
        );
    }

    #[test]
    fn expiry() {
        assert_eq!(check_expires(1001, 1000, None), Ok(()));
        assert_eq!(check_expires(1000, 1000, None), Err(AuthError::Expired));
        assert_eq!(check_expires(999, 1000, Some(10)), Err(AuthError::Expired));
        assert_eq!(check_expires(1010, 1000, Some(10)), Ok(()));
        assert_eq!(
            check_expires(1011, 1000, Some(10)),
            Err(AuthError::TooFarAhead)
        );
        assert_eq!(
            check_expires(i64::MAX, i64::MIN, Some(10)),
            Err(AuthError::TooFarAhead)
        );
    }

    #[test]
    fn scrambled_secret() {
        // Values from Python: hmac.new(b"s3cret", b"alice", sha1) and so on.
        let s = scramble("alice", "s3cret");
        assert_eq!(s.secret, sign(Version::V1, b"s3cret", "alice"));
        assert_eq!(s.login, sign(Version::V1, s.secret.as_bytes(), "alice"));
        assert_eq!(s.secret, "uIF4cglGm8hmF9TDWGXfhZg8WEs=");
        assert_eq!(s.login, "hRRShmwZRFTymRp2+sElrV7JFy4=");
        assert!(!format!("{s:?}").contains(&s.secret));
        assert!(check_login(&s.login).is_ok());
    }

    #[test]
    fn error_statuses() {
        let cases = [
            (AuthError::Malformed("x"), 400),
            (AuthError::MissingField("login"), 400),
            (AuthError::BadVersion, 400),
            (AuthError::BadExpires, 400),
            (AuthError::WrongSource, 400),
            (AuthError::Expired, 406),
            (AuthError::TooFarAhead, 406),
            (AuthError::BadChecksum, 401),
            (AuthError::NotAuthenticated, 401),
            (AuthError::AccountExpired, 412),
            (AuthError::Denied, 403),
            (AuthError::NoServerKey, 500),
        ];
        for (err, status) in cases {
            assert_eq!(err.status(), status, "{err}");
            assert_eq!(err.is_client_error(), status < 500);
        }
        assert_eq!(AuthError::Expired.message(), "Expired request");
        assert_eq!(AuthError::NotAuthenticated.message(), "Not authenticated");
        assert_eq!(
            AuthError::MissingField("login").message(),
            "Invalid signature: missing login"
        );
    }
}
