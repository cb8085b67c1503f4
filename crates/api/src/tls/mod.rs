//! HTTPS for the web workers (docs/security.md, "Running with TLS"): the certificate and key of
//! `-ssl-cert`/`-ssl-key` loaded with rustls (ring provider, TLS 1.2 and 1.3, ALPN h2 and
//! http/1.1), optional client certificates checked against `-ssl-ca`, and a resolver whose pair
//! is swapped in place when the files change or on SIGHUP, so that handshakes in progress and open
//! connections are never disturbed. A bad new pair is refused with a log line and the old one keeps
//! serving; at start the same checks give a clear error naming the parameter.

pub mod validity;

use arc_swap::ArcSwap;
use bkjs_base::config::Config;
use parking_lot::Mutex;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Why a certificate, key or CA file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("-{param} {path}: {msg}")]
    File {
        param: &'static str,
        path: String,
        msg: String,
    },
    #[error("-ssl-cert {cert} and -ssl-key {key} do not match: {msg}")]
    Mismatch {
        cert: String,
        key: String,
        msg: String,
    },
    #[error("-ssl-cert {path}: {msg}")]
    Validity { path: String, msg: String },
    #[error("TLS configuration: {0}")]
    Config(String),
}

fn file_err(param: &'static str, path: &Path, msg: impl ToString) -> TlsError {
    TlsError::File {
        param,
        path: path.display().to_string(),
        msg: msg.to_string(),
    }
}

/// Seconds since the Unix epoch.
fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The ring provider with the AES-128-GCM suites first (before AES-256-GCM, then ChaCha20), the
/// server's order. Clients like OpenSSL ask for AES-256-GCM with SHA-384 first, whose key schedule
/// runs on SHA-512, which ring computes without the CPU's SHA extensions: in a profile of new
/// connections that hashing alone was 12% of the worker's CPU. AES-128-GCM with SHA-256 is as
/// safe for TLS, hashes with the SHA extensions, and seals every record with 10 AES rounds, not 14.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    use rustls::CipherSuite as C;
    let mut p = rustls::crypto::ring::default_provider();
    let rank = |s: &rustls::SupportedCipherSuite| match s.suite() {
        C::TLS13_AES_128_GCM_SHA256
        | C::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
        | C::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => 0,
        C::TLS13_AES_256_GCM_SHA384
        | C::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
        | C::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 => 1,
        _ => 2,
    };
    // Stable: TLS 1.3 suites stay ahead of TLS 1.2 ones.
    p.cipher_suites
        .sort_by_key(|s| (s.version() != &rustls::version::TLS13, rank(s)));
    Arc::new(p)
}

/// Reads and checks a certificate chain and its key: both parse, the key matches the first
/// certificate, and that certificate is valid now.
pub fn load_pair(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, TlsError> {
    let pem = std::fs::read(cert).map_err(|e| file_err("ssl-cert", cert, e))?;
    let chain: Vec<_> = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|e| file_err("ssl-cert", cert, format!("not PEM: {e}")))?;
    let Some(leaf) = chain.first() else {
        return Err(file_err("ssl-cert", cert, "no CERTIFICATE in the file"));
    };
    let Some(v) = validity::validity(leaf) else {
        return Err(file_err("ssl-cert", cert, "not an X.509 certificate"));
    };
    let now = unix_now();
    if now > v.not_after {
        return Err(TlsError::Validity {
            path: cert.display().to_string(),
            msg: format!("expired {}s ago", now - v.not_after),
        });
    }
    if now < v.not_before {
        return Err(TlsError::Validity {
            path: cert.display().to_string(),
            msg: format!("not valid for another {}s", v.not_before - now),
        });
    }
    let pem = std::fs::read(key).map_err(|e| file_err("ssl-key", key, e))?;
    let der = rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|e| file_err("ssl-key", key, format!("not PEM: {e}")))?
        .ok_or_else(|| file_err("ssl-key", key, "no PRIVATE KEY in the file"))?;
    match CertifiedKey::from_der(chain, der, &provider()) {
        Ok(ck) => Ok(Arc::new(ck)),
        Err(rustls::Error::InconsistentKeys(e)) => Err(TlsError::Mismatch {
            cert: cert.display().to_string(),
            key: key.display().to_string(),
            msg: format!("{e:?}"),
        }),
        Err(e) => Err(file_err("ssl-key", key, e)),
    }
}

/// Hands out the current pair to every handshake; [`Tls::reload`] swaps it.
#[derive(Debug)]
struct Resolver(ArcSwap<CertifiedKey>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load_full())
    }
}

/// The HTTPS side of a web worker: the acceptor and what reloading needs.
pub struct Tls {
    pub acceptor: tokio_rustls::TlsAcceptor,
    resolver: Arc<Resolver>,
    cert: PathBuf,
    key: PathBuf,
    stamps: Mutex<[Option<SystemTime>; 2]>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish()
    }
}

/// HTTPS is on when both `-ssl-cert` and `-ssl-key` are set.
pub fn enabled(cfg: &Config) -> bool {
    cfg.path("ssl-cert").is_some() && cfg.path("ssl-key").is_some()
}

fn mtime(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

impl Tls {
    /// Loads the configured pair (and CA); None when HTTPS is off.
    pub fn load(cfg: &Config) -> Result<Option<Tls>, TlsError> {
        let (Some(cert), Some(key)) = (cfg.path("ssl-cert"), cfg.path("ssl-key")) else {
            return Ok(None);
        };
        let stamps = [mtime(&cert), mtime(&key)];
        let pair = load_pair(&cert, &key)?;
        let resolver = Arc::new(Resolver(ArcSwap::new(pair)));
        let builder = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| TlsError::Config(e.to_string()))?;
        let builder = match cfg.path("ssl-ca") {
            Some(ca) => {
                let pem = std::fs::read(&ca).map_err(|e| file_err("ssl-ca", &ca, e))?;
                let mut roots = rustls::RootCertStore::empty();
                for c in rustls_pemfile::certs(&mut pem.as_slice()) {
                    let c = c.map_err(|e| file_err("ssl-ca", &ca, format!("not PEM: {e}")))?;
                    roots.add(c).map_err(|e| file_err("ssl-ca", &ca, e))?;
                }
                if roots.is_empty() {
                    return Err(file_err("ssl-ca", &ca, "no CERTIFICATE in the file"));
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                        .build()
                        .map_err(|e| file_err("ssl-ca", &ca, e))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_cert_resolver(resolver.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        // The suite order of `provider`, not the client's.
        config.ignore_client_order = true;
        Ok(Some(Tls {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
            resolver,
            cert,
            key,
            stamps: Mutex::new(stamps),
        }))
    }

    /// Loads the pair again; a bad one is logged and the current one kept. True when swapped.
    pub fn reload(&self) -> bool {
        *self.stamps.lock() = [mtime(&self.cert), mtime(&self.key)];
        match load_pair(&self.cert, &self.key) {
            Ok(pair) => {
                self.resolver.0.store(pair);
                tracing::info!("TLS certificate {} reloaded", self.cert.display());
                true
            }
            Err(e) => {
                tracing::error!("TLS certificate not reloaded, the old one keeps serving: {e}");
                false
            }
        }
    }

    /// Reloads when either file's modification time changed since the last look.
    pub fn reload_if_changed(&self) -> bool {
        let now = [mtime(&self.cert), mtime(&self.key)];
        if now == *self.stamps.lock() {
            return false;
        }
        self.reload()
    }

    /// Looks at the files every `every` on the current runtime.
    pub fn watch(self: &Arc<Self>, every: Duration) {
        let tls = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                tls.reload_if_changed();
            }
        });
    }
}

/// Checks the configured pair and CA at start; the error names the parameter.
pub fn check(cfg: &Config) -> Result<(), TlsError> {
    Tls::load(cfg).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aes_128_gcm_comes_first_in_each_version() {
        let suites: Vec<_> = provider().cipher_suites.iter().map(|s| s.suite()).collect();
        use rustls::CipherSuite as C;
        assert_eq!(suites[0], C::TLS13_AES_128_GCM_SHA256, "{suites:?}");
        assert_eq!(suites[1], C::TLS13_AES_256_GCM_SHA384, "{suites:?}");
        let pos = |c| suites.iter().position(|s| *s == c).expect("offered");
        assert!(
            pos(C::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256)
                < pos(C::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384)
        );
        assert!(
            pos(C::TLS13_CHACHA20_POLY1305_SHA256)
                < pos(C::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256)
        );
        assert_eq!(
            suites.len(),
            rustls::crypto::ring::default_provider().cipher_suites.len()
        );
    }
}
