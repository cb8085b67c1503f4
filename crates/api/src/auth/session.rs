//! The v2 session cookie (`bk_sid`): its derived key, issuing and verification. Sessions are
//! minted by the server under its own key, unlike request signatures, so they have their own rules
//! (see the module doc of [`super`]).

use super::canonical::session_string;
use super::error::AuthError;
use super::mac::{mac, sign, verify, Algorithm};
use super::signature::{check_login, Signature, Version};
use std::borrow::Cow;

/// The v2 key: HMAC-SHA256(HMAC-SHA256(server_key, secret), login); see the module doc.
fn session_key(server_key: &[u8], login: &str, secret: &[u8]) -> Option<Vec<u8>> {
    let per_account = mac(Algorithm::Sha256, server_key, secret)?;
    mac(Algorithm::Sha256, &per_account, login.as_bytes())
}

/// The `bk_sid` cookie value `2||LOGIN|SIG|EXPIRES||` for an account, valid for hosts with the same
/// `session_domain` until `expires` (ms since the epoch).
pub(crate) fn session_cookie(
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
/// ([`AuthError::NotAuthenticated`]). Expiry is `check_expires`'s job.
pub(crate) fn verify_session(
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
