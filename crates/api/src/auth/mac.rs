//! The cryptography of request signatures: HMAC-SHA1/SHA256 signing, constant-time
//! verification, body checksums and the per-account keyed HMAC states. Kept apart from parsing so
//! every comparison of secret material is in one short file.

use super::error::AuthError;
use super::signature::{Signature, Version};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use sha1::{Digest, Sha1};
use sha2::Sha256;
use std::fmt;

/// The HMAC of a signature version.
fn algorithm(version: Version) -> Algorithm {
    match version {
        Version::V1 => Algorithm::Sha1,
        Version::V2 | Version::V3 | Version::V4 => Algorithm::Sha256,
    }
}

#[derive(Clone, Copy)]
pub(super) enum Algorithm {
    Sha1,
    Sha256,
}

/// HMAC of `msg` under `key`. HMAC takes keys of any length, so `new_from_slice` cannot fail; the
/// `None` branch exists only to avoid a panic path and makes callers fail closed.
pub(super) fn mac(alg: Algorithm, key: &[u8], msg: &[u8]) -> Option<Vec<u8>> {
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
/// for v2, v3 and v4. For v2 `secret` is the derived session key; see `session_cookie`.
pub(crate) fn sign(version: Version, secret: &[u8], string: &str) -> String {
    mac(algorithm(version), secret, string.as_bytes())
        .map(|tag| B64.encode(tag))
        .unwrap_or_default()
}

/// True when `signature` is the base64 HMAC of `string` under `secret`; the HMACs are compared in
/// constant time. A signature that is not canonical base64 is false.
pub(crate) fn verify(version: Version, secret: &[u8], string: &str, signature: &str) -> bool {
    match B64.decode(signature) {
        Ok(tag) => mac_matches(algorithm(version), secret, string.as_bytes(), &tag),
        Err(_) => false,
    }
}

/// Base64 SHA1 of a body, the CHECKSUM field.
pub(crate) fn checksum(body: &[u8]) -> String {
    B64.encode(Sha1::digest(body))
}

/// Checks a CHECKSUM field against the body: an empty field checks nothing.
pub(crate) fn verify_checksum(expected: &str, body: &[u8]) -> Result<(), AuthError> {
    if expected.is_empty() || checksum(body) == expected {
        Ok(())
    } else {
        Err(AuthError::BadChecksum)
    }
}

/// Verifies a request signature (header or query parameter): v2 is refused
/// ([`AuthError::WrongSource`]), the HMAC of `string` ([`Signature::string_to_sign`]) must match
/// ([`AuthError::NotAuthenticated`]), then a non-empty CHECKSUM must match `body`
/// ([`AuthError::BadChecksum`]). Expiry is [`check_expires`]'s job. The server keeps keyed HMAC
/// states per account and calls [`verify_request_keyed`]; this form is for the tests.
#[cfg(test)]
pub(crate) fn verify_request(
    sig: &Signature<'_>,
    secret: &[u8],
    string: &str,
    body: &[u8],
) -> Result<(), AuthError> {
    verify_request_keyed(sig, &SecretKeys::default(), secret, string, body)
}

/// `verify_request` with HMAC states already keyed with `secret` (`keys` must belong to this
/// secret: the caller keeps them together, as [`crate::Account`] does).
pub(crate) fn verify_request_keyed(
    sig: &Signature<'_>,
    keys: &SecretKeys,
    secret: &[u8],
    string: &str,
    body: &[u8],
) -> Result<(), AuthError> {
    verify_mac_keyed(sig, keys, secret, string)?;
    verify_checksum(&sig.checksum, body)
}

/// The MAC part of [`verify_request_keyed`] alone: the body is checked by the caller (against
/// the CHECKSUM, which the MAC covers) once it has been read.
pub(crate) fn verify_mac_keyed(
    sig: &Signature<'_>,
    keys: &SecretKeys,
    secret: &[u8],
    string: &str,
) -> Result<(), AuthError> {
    if sig.version == Version::V2 {
        return Err(AuthError::WrongSource);
    }
    let good = match B64.decode(sig.signature.as_bytes()) {
        Ok(tag) => keys.matches(algorithm(sig.version), secret, string.as_bytes(), &tag),
        Err(_) => false,
    };
    if !good {
        return Err(AuthError::NotAuthenticated);
    }
    Ok(())
}

/// HMAC states keyed with one account's secret, made on first use and cloned for each request:
/// keying an HMAC hashes two blocks, about a third of the work for a short request string.
#[derive(Default)]
pub(crate) struct SecretKeys {
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
