//! The cluster secret: what lets the servers of one cluster trust each other's frames on the
//! cache peer bus and the nng pub/sub forwarders over TCP (docs/security.md, "Cluster secret").
//!
//! The secret is `-cluster-secret`, or else the contents of `-cluster-secret-file`
//! (`etc/cluster.secret` in the home), which must not be readable by group or others. Each use
//! gets a key of its own derived from it ([`Secret::key`]), so a frame of one channel is
//! never valid on another. [`frame`] seals and opens the frames themselves.

pub mod frame;

pub use frame::{Key, Opener, Refused, Sealer};

use crate::config::{Config, Kind, Param};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

/// Cluster parameters.
pub static PARAMS: &[Param] = &[
    Param::new(
        "cluster-secret",
        Kind::String,
        "",
        "secret shared by every server of a cluster (at least 16 characters): frames on the cache peer bus (-cache-host) and the nng pub/sub forwarders over TCP (-msg-host) are signed with keys derived from it; prefer -cluster-secret-file, which keeps it off command lines",
    ),
    Param::new(
        "cluster-secret-file",
        Kind::Path,
        "etc/cluster.secret",
        "file holding the cluster secret when -cluster-secret is empty; must not be readable by group or others",
    ),
    Param::new(
        "cluster-frame-age",
        Kind::Duration,
        "60s",
        "signed cluster frames older (or further in the future) than this are refused as replays; bounds the clock difference the servers of a cluster may have",
    ),
];

/// The shortest secret accepted.
pub const MIN_SECRET: usize = 16;

/// Why the cluster secret cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("{0}")]
    Config(String),
}

/// The cluster secret.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl Secret {
    /// A secret from its text; refused when shorter than [`MIN_SECRET`].
    pub fn new(text: &str) -> Result<Secret, ClusterError> {
        let t = text.trim();
        if t.len() < MIN_SECRET {
            return Err(ClusterError::Config(format!(
                "the cluster secret has {} characters, at least {MIN_SECRET} are needed",
                t.len()
            )));
        }
        Ok(Secret(t.as_bytes().to_vec()))
    }

    /// The configured secret: `-cluster-secret`, else `-cluster-secret-file` when it exists;
    /// `None` when neither is set.
    pub fn load(cfg: &Config) -> Result<Option<Secret>, ClusterError> {
        let text = cfg.str("cluster-secret");
        if !text.is_empty() {
            return Secret::new(text)
                .map(Some)
                .map_err(|e| ClusterError::Config(format!("-cluster-secret: {e}")));
        }
        let Some(path) = cfg.path("cluster-secret-file") else {
            return Ok(None);
        };
        let meta = match std::fs::metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(ClusterError::Config(format!(
                    "-cluster-secret-file {}: {e}",
                    path.display()
                )))
            }
        };
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(ClusterError::Config(format!(
                "-cluster-secret-file {}: readable by group or others (mode {:o}); chmod 600 it",
                path.display(),
                meta.permissions().mode() & 0o777
            )));
        }
        let text = std::fs::read_to_string(&path).map_err(|e| {
            ClusterError::Config(format!("-cluster-secret-file {}: {e}", path.display()))
        })?;
        Secret::new(&text).map(Some).map_err(|e| {
            ClusterError::Config(format!("-cluster-secret-file {}: {e}", path.display()))
        })
    }

    /// The configured secret, required because `param` names peers: an error naming `param`
    /// and both ways of setting a secret when there is none.
    pub fn require(cfg: &Config, param: &str) -> Result<Secret, ClusterError> {
        Secret::load(cfg)?.ok_or_else(|| {
            ClusterError::Config(format!(
                "-{param} names peers but there is no cluster secret: set -cluster-secret or write one (at least {MIN_SECRET} characters, mode 600) to -cluster-secret-file ({})",
                cfg.path("cluster-secret-file")
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            ))
        })
    }

    /// The key of one use of the secret (`"cache-bus"`, `"msg"`): HMAC-SHA256 of the purpose
    /// under the secret.
    pub fn key(&self, purpose: &str) -> Key {
        let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0)
            .expect("HMAC takes keys of any length");
        m.update(b"bkjs cluster key v1: ");
        m.update(purpose.as_bytes());
        Key::new(&m.finalize().into_bytes())
    }
}

/// Every reason a frame is dropped, for counters that should show at zero.
pub const REFUSALS: [Refused; 4] = [
    Refused::BadMac,
    Refused::OwnOrigin,
    Refused::Stale,
    Refused::Replay,
];

/// Creates the drop counters of `channel` at zero, so `/system/stats` shows them before any
/// drop.
pub fn register_drops(channel: &str) {
    for why in REFUSALS {
        crate::metrics::Registry::global().counter(&format!("cluster.{channel}.{}", why.name()));
    }
}

/// Counts a frame of `channel` dropped for `why` (`cluster.{channel}.{why}` in `/system/stats`)
/// and logs the 1st, 2nd, 4th, 8th... of each kind, so a flood cannot flood the log; replays are
/// not logged (most are the second copy of a frame that came over two connections).
pub fn count_drop(channel: &str, why: Refused) {
    let c =
        crate::metrics::Registry::global().counter(&format!("cluster.{channel}.{}", why.name()));
    c.inc();
    let n = c.get();
    if why != Refused::Replay && n > 0 && (n & (n - 1)) == 0 {
        tracing::warn!(
            "cluster {channel}: dropped a frame ({}); {n} dropped for that reason so far",
            why.name()
        );
    }
}

/// `-cluster-frame-age`, at least one second.
pub fn frame_age(cfg: &Config) -> Duration {
    cfg.duration("cluster-frame-age")
        .max(Duration::from_secs(1))
}

/// The address to listen on for `bind` (`-cache-bind`, `-msg-bind`) when `hosts` are the peers:
/// `bind` itself when set; otherwise 127.0.0.1 when every peer is a loopback address, else
/// 0.0.0.0 (the peers are on other machines).
pub fn bind_address(bind: &str, hosts: &[String]) -> String {
    if !bind.is_empty() {
        return bind.to_string();
    }
    let loopback = |h: &str| {
        let host = match h.rsplit_once(':') {
            Some((host, port)) if port.parse::<u16>().is_ok() && !host.is_empty() => host,
            _ => h,
        };
        let host = host.trim_matches(['[', ']']);
        host == "localhost"
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    };
    if hosts.iter().all(|h| loopback(h)) {
        "127.0.0.1".into()
    } else {
        "0.0.0.0".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_differ_by_purpose_and_secret() {
        let a = Secret::new("0123456789abcdef").expect("secret");
        let b = Secret::new("0123456789abcdeg").expect("secret");
        assert_eq!(a.key("msg"), a.key("msg"));
        assert_ne!(a.key("msg"), a.key("cache-bus"));
        assert_ne!(a.key("msg"), b.key("msg"));
        assert!(Secret::new("short").is_err());
    }

    #[test]
    fn the_default_bind_is_loopback_unless_a_peer_is_elsewhere() {
        let h = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            bind_address("", &h(&["127.0.0.1:1", "localhost"])),
            "127.0.0.1"
        );
        assert_eq!(bind_address("", &h(&["[::1]:5", "127.0.0.2"])), "127.0.0.1");
        assert_eq!(
            bind_address("", &h(&["127.0.0.1", "10.0.0.2:7"])),
            "0.0.0.0"
        );
        assert_eq!(bind_address("", &h(&["db1"])), "0.0.0.0");
        assert_eq!(bind_address("10.1.1.1", &h(&["db1"])), "10.1.1.1");
    }
}
