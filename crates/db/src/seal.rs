//! Columns sealed at rest: values of columns described with [`crate::Column::sealed`] (the
//! account secrets of `bk_auth`) are written encrypted with AES-256-GCM under a key kept outside
//! the database (`-db-seal-key`, or the file `etc/seal.key` of the home, made on first use), so a
//! copy of the database alone does not sign requests.
//!
//! A sealed value is `enc1:` followed by the hex of a random 96-bit nonce and the ciphertext with
//! its tag. The associated data is the table, the column and the row's primary key, so a sealed
//! value copied into another row (another login) does not open. Values without the prefix are
//! legacy plaintext written before sealing existed: [`SealKey::open`] returns them as they are
//! and says so, and the next write of the column seals them.

use crate::error::DbError;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use bkjs_base::config::Config;
use std::io::Write;
use std::path::Path;

/// The key this process loaded before it dropped its privileges.
static PRELOADED: std::sync::OnceLock<SealKey> = std::sync::OnceLock::new();

/// What marks a sealed value.
pub const SEALED_PREFIX: &str = "enc1:";
const NONCE_LEN: usize = 12;

/// The key sealed columns are encrypted with. `Debug` never shows it.
#[derive(Clone)]
pub struct SealKey {
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for SealKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealKey(<redacted>)")
    }
}

/// A value read back from a sealed column.
#[derive(Debug, PartialEq, Eq)]
pub enum Opened {
    /// It was sealed; this is the plaintext.
    Sealed(String),
    /// It was stored before sealing existed (or by a process without a key): as stored.
    Legacy(String),
}

impl Opened {
    pub fn into_inner(self) -> String {
        match self {
            Opened::Sealed(s) | Opened::Legacy(s) => s,
        }
    }
}

impl SealKey {
    /// A key from its 32 bytes.
    pub fn new(key: &[u8; 32]) -> SealKey {
        SealKey {
            cipher: Aes256Gcm::new(key.into()),
        }
    }

    /// A key from 64 hex digits (the form of `-db-seal-key` and of the key file).
    pub fn from_hex(text: &str) -> Result<SealKey, DbError> {
        let bytes = hex::decode(text.trim())
            .map_err(|_| DbError::bad_value("db-seal-key", "must be 64 hex digits"))?;
        let key: [u8; 32] = bytes
            .try_into()
            .map_err(|_| DbError::bad_value("db-seal-key", "must be 64 hex digits (32 bytes)"))?;
        Ok(SealKey::new(&key))
    }

    /// `-db-seal-key` when set, otherwise the key file `etc/seal.key` of the home, created
    /// (mode 0600, never replaced) by the first process that needs it. A key [`SealKey::preload`]ed
    /// by this process is used as it is.
    pub fn load(cfg: &Config) -> Result<SealKey, DbError> {
        if let Some(key) = PRELOADED.get() {
            return Ok(key.clone());
        }
        Self::read(cfg)
    }

    /// Loads the key now, for a process about to drop its privileges (`-uid`): the key file is
    /// private to the user that made it, which the process may not be any more when it opens the
    /// database.
    pub fn preload(cfg: &Config) -> Result<(), DbError> {
        if PRELOADED.get().is_none() {
            let _ = PRELOADED.set(Self::read(cfg)?);
        }
        Ok(())
    }

    fn read(cfg: &Config) -> Result<SealKey, DbError> {
        let configured = cfg.str("db-seal-key");
        if !configured.is_empty() {
            return SealKey::from_hex(configured);
        }
        load_or_create(&cfg.dir("etc").join("seal.key"))
    }

    /// Seals `plain` for the row whose key is `aad` (see the module doc).
    pub fn seal(&self, aad: &str, plain: &str) -> Result<String, DbError> {
        let nonce: [u8; NONCE_LEN] = rand::random();
        let ct = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plain.as_bytes(),
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| DbError::Driver("cannot seal a value".into()))?;
        let mut out = String::with_capacity(SEALED_PREFIX.len() + 2 * (NONCE_LEN + ct.len()));
        out.push_str(SEALED_PREFIX);
        out.push_str(&hex::encode(nonce));
        out.push_str(&hex::encode(ct));
        Ok(out)
    }

    /// Opens a stored value of the row whose key is `aad`; a value that is sealed but does not
    /// open (another key, another row, altered) is an error, never the stored text.
    pub fn open(&self, aad: &str, stored: &str) -> Result<Opened, DbError> {
        let Some(hexed) = stored.strip_prefix(SEALED_PREFIX) else {
            return Ok(Opened::Legacy(stored.to_string()));
        };
        let refused = || DbError::Driver("a sealed value does not open with this key".into());
        let bytes = hex::decode(hexed).map_err(|_| refused())?;
        if bytes.len() < NONCE_LEN + 16 {
            return Err(refused());
        }
        let (nonce, ct) = bytes.split_at(NONCE_LEN);
        let plain = self
            .cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ct,
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| refused())?;
        String::from_utf8(plain)
            .map(Opened::Sealed)
            .map_err(|_| refused())
    }
}

/// Reads the key file, or creates it with a fresh key. Creation is atomic: the key is written to
/// a private temporary file that is then hard-linked to `path`, which fails when another process
/// made it first; then that one's key is read.
fn load_or_create(path: &Path) -> Result<SealKey, DbError> {
    let io = |what: &str, e: std::io::Error| {
        DbError::Driver(format!("seal key {}: {what}: {e}", path.display()))
    };
    match std::fs::read_to_string(path) {
        Ok(text) => return SealKey::from_hex(&text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io("cannot read it", e)),
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| io("cannot create its directory", e))?;
    let key: [u8; 32] = rand::random();
    let tmp = dir.join(format!(".seal.key.{}", std::process::id()));
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| io("cannot write it", e))?;
        f.write_all(hex::encode(key).as_bytes())
            .and_then(|_| f.sync_all())
            .map_err(|e| io("cannot write it", e))?;
    }
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            tracing::info!(
                "db: created the seal key {} (copy it to every machine sharing this database)",
                path.display()
            );
            Ok(SealKey::new(&key))
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let text = std::fs::read_to_string(path).map_err(|e| io("cannot read it", e))?;
            SealKey::from_hex(&text)
        }
        Err(e) => Err(io("cannot create it", e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_with_their_key_and_row() {
        let k = SealKey::new(&[7; 32]);
        let s = k.seal("bk_auth|secret|al", "s3cret").expect("seal");
        assert!(s.starts_with(SEALED_PREFIX));
        assert!(!s.contains("s3cret"));
        assert_ne!(
            s,
            k.seal("bk_auth|secret|al", "s3cret").expect("seal"),
            "fresh nonce"
        );
        assert_eq!(
            k.open("bk_auth|secret|al", &s).expect("open"),
            Opened::Sealed("s3cret".into())
        );
        // Another row, another key, an altered value: refused, never the stored text.
        assert!(k.open("bk_auth|secret|bob", &s).is_err());
        assert!(SealKey::new(&[8; 32])
            .open("bk_auth|secret|al", &s)
            .is_err());
        let mut altered = s.clone();
        let last = altered.pop().expect("not empty");
        altered.push(if last == '0' { '1' } else { '0' });
        assert!(k.open("bk_auth|secret|al", &altered).is_err());
        assert!(k.open("bk_auth|secret|al", "enc1:zz").is_err());
        // Legacy plaintext is returned as stored, and said to be so.
        assert_eq!(
            k.open("bk_auth|secret|al", "plain").expect("open"),
            Opened::Legacy("plain".into())
        );
        assert!(!format!("{k:?}").contains('7'));
    }

    #[test]
    fn the_key_file_is_made_once_private_and_reused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("etc/seal.key");
        let a = load_or_create(&path).expect("created");
        let mode = std::fs::metadata(&path).expect("file").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let b = load_or_create(&path).expect("read back");
        let s = a.seal("r", "v").expect("seal");
        assert_eq!(b.open("r", &s).expect("open").into_inner(), "v");
        std::fs::write(&path, "nothex").expect("write");
        assert!(load_or_create(&path).is_err(), "a bad key file is an error");
        assert!(SealKey::from_hex(&"ab".repeat(31)).is_err());
    }
}
