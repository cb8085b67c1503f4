//! The `bk-signature` value itself: its version, its strict parser and the checks on its fields
//! (login, expiry) that need no key. Parsing comes first in the server flow and fails fast, so it
//! stands apart from the cryptography.

use super::canonical::string_to_sign;
use super::error::AuthError;
use std::borrow::Cow;
use std::fmt;

/// Name of the session cookie carrying a v2 signature.
pub(crate) const SESSION_COOKIE: &str = "bk_sid";
/// Longest accepted signature value, in bytes.
pub(crate) const MAX_SIGNATURE_LEN: usize = 1024;
/// Longest accepted LOGIN, in bytes.
pub(crate) const MAX_LOGIN_LEN: usize = 256;

const MAX_APPDATA_LEN: usize = 512;
const MAX_MAC_LEN: usize = 128;
const MAX_CHECKSUM_LEN: usize = 128;
/// `i64::MAX` has 19 digits.
const MAX_EXPIRES_DIGITS: usize = 19;

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
}

/// A parsed `VERSION|APPDATA|LOGIN|SIGNATURE|EXPIRES|CHECKSUM|` value. `Display` writes it back in
/// that form; `Debug` hides SIGNATURE, which is a bearer credential until EXPIRES.
///
/// A parsed signature borrows its fields from the text it was parsed from.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Signature<'a> {
    pub(crate) version: Version,
    /// Opaque client data; not covered by the signature.
    pub(crate) appdata: Cow<'a, str>,
    pub(crate) login: Cow<'a, str>,
    /// Base64 HMAC as sent.
    pub(crate) signature: Cow<'a, str>,
    /// Milliseconds since the epoch; its decimal form is exactly the text that was signed.
    pub(crate) expires: i64,
    /// Empty, or base64 SHA1 of the body.
    pub(crate) checksum: Cow<'a, str>,
}

impl<'a> Signature<'a> {
    /// Parses a signature value; see the module doc for how strict this is.
    pub(crate) fn parse(s: &'a str) -> Result<Signature<'a>, AuthError> {
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
    /// EXPIRES and CHECKSUM. `query` is the already chosen one (`signed_query`).
    pub(crate) fn string_to_sign(
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
pub(crate) fn check_login(login: &str) -> Result<(), AuthError> {
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
pub(crate) fn check_expires(
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
