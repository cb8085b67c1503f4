//! Request signatures (docs/auth.md): the `bk-signature` value, the string to sign, HMAC signing and
//! constant-time verification, body checksums, the v2 session cookie, the scrambled secret and the
//! client-side signer used by `bksh -send-request` and the benchmark; also the signed-in
//! [`Account`] and the cache of accounts built from `bk_auth` rows (`account`).
//!
//! Files by concern: `error` (why a request is refused), `signature` (the value and its strict
//! parser), `canonical` (the strings that are signed), `mac` (HMACs, checksums, keyed states),
//! `session` (the v2 cookie), `client` (the client-side signer), `account` (accounts and their
//! cache).
//!
//! Apart from the account cache, everything here is a pure function: no I/O, no clock, no
//! database. The caller supplies "now",
//! the account secret and the server key, so every rule is pinned by fixed test vectors and the
//! HTTP layer only has to fetch inputs and map [`AuthError`] to a reply.
//!
//! # Server flow (the order of docs/auth.md)
//! 1. `Signature::parse` the header, query parameter or cookie value (malformed → 400);
//! 2. `check_expires` with "now" (→ 406; the `-api-max-expire` bound applies to request
//!    signatures only, not to session cookies, whose age is the session age);
//! 3. look up the account by `Signature::login` (unknown → [`AuthError::NotAuthenticated`], 401,
//!    so logins cannot be probed), then the account's own expiry (412) and ACLs (403);
//! 4. `verify_request` (header or query: v1, v3, v4) or `verify_session` (cookie: v2 only);
//!    both compare in constant time, and `verify_request` also checks a non-empty CHECKSUM against
//!    the body.
//!
//! # Strictness (bkjs choices where docs/auth.md is silent)
//! - The value must be exactly `VERSION|APPDATA|LOGIN|SIGNATURE|EXPIRES|CHECKSUM|`: splitting on
//!   `|` gives exactly seven items and the seventh is empty. A missing trailing `|` or anything after
//!   it is refused (the original's unanchored regexp tolerated trailing text).
//! - At most `MAX_SIGNATURE_LEN` bytes in all; LOGIN ≤ 256, APPDATA ≤ 512, SIGNATURE and
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
//! The cookie `bk_sid` holds `2||LOGIN|SIG|EXPIRES||` with SIG = base64 HMAC-SHA256 of the
//! session string (docs/auth.md) `*\n{domain}\n/\n*\n{EXPIRES}\n*\n*\n` under a derived key:
//!
//! ```text
//! key = HMAC-SHA256(key = HMAC-SHA256(key = server_key, msg = account secret), msg = LOGIN)
//! ```
//!
//! - the server key means a client (or a leaked secret) cannot mint sessions;
//! - the account secret means changing it (`/account/put/secret`) ends every session; once an
//!   account logged out, its secret is followed by `\0` and its session generation
//!   (`bk_auth.session_gen`, moved on by `/account/logout`), which ends every earlier session;
//! - the login means two accounts that happen to share a secret cannot swap cookies (the session
//!   string itself does not name the account);
//! - nested HMACs need no separator, so no choice of secret or login can collide with another.
//!
//! The cookie value contains `|`, `+`, `/` and `=`, all valid cookie octets; a login with bytes
//! outside RFC 6265 cookie-octet (space, `"`, `,`, `;`, `\`, non-ASCII) must be percent-encoded by
//! the layer that writes `Set-Cookie`, and decoded before `Signature::parse`.

mod account;
mod canonical;
mod client;
mod error;
mod mac;
mod session;
mod signature;
#[cfg(test)]
mod tests;

pub use account::Account;
pub use client::{scramble, sign_request, ClientRequest, Scrambled};
pub use error::AuthError;
pub use signature::Version;

pub(crate) use account::Accounts;
pub(crate) use canonical::{is_form_post, signed_query};
pub(crate) use mac::{verify_checksum, verify_mac_keyed, verify_request_keyed, SecretKeys};
pub(crate) use session::{session_cookie, verify_session};
pub(crate) use signature::{check_expires, check_login, Signature, SESSION_COOKIE};
