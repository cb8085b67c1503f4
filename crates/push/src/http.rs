//! The HTTPS client the three push services share: rustls over tokio, ALPN `h2` first (APNs
//! speaks only HTTP/2), HTTP/1.1 when the server prefers it (some Web Push endpoints). One HTTP/2
//! connection per host is kept and multiplexed; an HTTP/1.1 connection serves one request.
//! Trusts the Mozilla roots (webpki-roots) plus `-push-ca-file` (a private gateway, or a test CA).

use crate::error::{PushError, SendError};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper::{HeaderMap, Request, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use parking_lot::Mutex;
use rustls::pki_types::ServerName;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// What a service answered.
#[derive(Debug)]
pub struct Response {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Response {
    /// The body as JSON, `Null` when it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// `Retry-After` in seconds, when the service sent one.
    pub fn retry_after(&self) -> Option<Duration> {
        self.headers
            .get(hyper::header::RETRY_AFTER)?
            .to_str()
            .ok()?
            .trim()
            .parse::<u64>()
            .ok()
            .map(Duration::from_secs)
    }
}

pub struct Https {
    tls: TlsConnector,
    timeout: Duration,
    /// Open HTTP/2 connections by `host:port`.
    h2: Mutex<HashMap<String, http2::SendRequest<Full<Bytes>>>>,
}

fn retry(what: impl std::fmt::Display) -> SendError {
    SendError::Retry {
        reason: what.to_string(),
        after: None,
    }
}

impl Https {
    /// A client trusting the public roots and the certificates in `ca_file`.
    pub fn new(ca_file: Option<&Path>, timeout: Duration) -> Result<Https, PushError> {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        if let Some(path) = ca_file {
            let bad =
                |e: String| PushError::Config(format!("-push-ca-file {}: {e}", path.display()));
            let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
            let mut n = 0;
            for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
                roots
                    .add(cert.map_err(|e| bad(e.to_string()))?)
                    .map_err(|e| bad(e.to_string()))?;
                n += 1;
            }
            if n == 0 {
                return Err(bad("no certificate in the file".into()));
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| PushError::Config(format!("TLS: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Https {
            tls: TlsConnector::from(Arc::new(cfg)),
            timeout,
            h2: Mutex::new(HashMap::new()),
        })
    }

    /// Sends `req` (an absolute `https://` URI), the whole exchange bounded by `-push-timeout`.
    /// A network failure or a timeout is [`SendError::Retry`].
    pub async fn send(&self, req: Request<Full<Bytes>>) -> Result<Response, SendError> {
        tokio::time::timeout(self.timeout, self.exchange(req))
            .await
            .map_err(|_| retry(format!("no answer within {:?}", self.timeout)))?
    }

    async fn exchange(&self, req: Request<Full<Bytes>>) -> Result<Response, SendError> {
        let uri = req.uri().clone();
        if uri.scheme_str() != Some("https") {
            return Err(SendError::Rejected(format!(
                "{uri}: only https:// is allowed"
            )));
        }
        let host = uri
            .host()
            .ok_or_else(|| SendError::Rejected(format!("{uri}: no host")))?
            .trim_matches(['[', ']'])
            .to_string();
        let port = uri.port_u16().unwrap_or(443);
        let authority = format!("{host}:{port}");
        let cached = self.h2.lock().get(&authority).cloned();
        if let Some(mut s) = cached {
            if s.ready().await.is_ok() {
                return Self::finish(s.send_request(req).await).await;
            }
            self.h2.lock().remove(&authority);
        }
        let tcp = TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| retry(format!("{authority}: {e}")))?;
        tcp.set_nodelay(true).map_err(retry)?;
        let name = ServerName::try_from(host.clone())
            .map_err(|e| SendError::Rejected(format!("{host}: {e}")))?;
        let tls = self
            .tls
            .connect(name, tcp)
            .await
            .map_err(|e| retry(format!("TLS with {authority}: {e}")))?;
        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        let io = TokioIo::new(tls);
        if h2 {
            let (mut s, conn) = http2::handshake(TokioExecutor::new(), io)
                .await
                .map_err(|e| retry(format!("HTTP/2 with {authority}: {e}")))?;
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!("push: HTTP/2 connection ended: {e}");
                }
            });
            self.h2.lock().insert(authority, s.clone());
            Self::finish(s.send_request(req).await).await
        } else {
            let (mut s, conn) = http1::handshake(io)
                .await
                .map_err(|e| retry(format!("HTTP/1.1 with {authority}: {e}")))?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            // HTTP/1.1 wants the path in the request line and the host in a header.
            let (mut parts, body) = req.into_parts();
            parts.uri = uri
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/")
                .parse()
                .map_err(|e| SendError::Rejected(format!("{uri}: {e}")))?;
            let host_header = match uri.port_u16() {
                Some(p) => format!("{host}:{p}"),
                None => host.clone(),
            };
            parts.headers.insert(
                hyper::header::HOST,
                host_header
                    .parse()
                    .map_err(|e| SendError::Rejected(format!("{host}: {e}")))?,
            );
            Self::finish(s.send_request(Request::from_parts(parts, body)).await).await
        }
    }

    async fn finish(
        r: Result<hyper::Response<hyper::body::Incoming>, hyper::Error>,
    ) -> Result<Response, SendError> {
        let r = r.map_err(retry)?;
        let (parts, body) = r.into_parts();
        let body = body.collect().await.map_err(retry)?.to_bytes();
        Ok(Response {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }
}
