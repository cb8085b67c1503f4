//! The DynamoDB HTTP client: one signed `POST /` per call with the AWS JSON 1.0 protocol
//! (`X-Amz-Target: DynamoDB_20120810.<Operation>`), over hyper's HTTP/1.1 connections kept in a
//! small pool; `https://` endpoints go through rustls with the Mozilla roots (webpki-roots), as
//! the push clients do. Service errors come back as [`CallError::Service`] with the exception
//! name, so the operations decide what a failed condition means (exists / not found); throttling
//! and server-side errors become [`DbError::Busy`] (retryable).

use super::sigv4::{authorization, sha256_hex, Credentials, Request};
use crate::error::DbError;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;

/// Idle connections kept per client.
const MAX_IDLE: usize = 64;

/// How long one call may take, connecting included.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a call failed.
#[derive(Debug)]
pub(crate) enum CallError {
    /// DynamoDB answered with an exception: its short name (`ConditionalCheckFailedException`),
    /// its message and the whole body (for `CancellationReasons`).
    Service {
        code: String,
        message: String,
        body: Value,
    },
    /// Anything else, already a [`DbError`].
    Db(DbError),
}

impl CallError {
    /// The error the DB API reports when the operation has no better meaning for it.
    pub(crate) fn into_db(self) -> DbError {
        match self {
            CallError::Db(e) => e,
            CallError::Service { code, message, .. } => service_error(&code, &message),
        }
    }

    pub(crate) fn code(&self) -> Option<&str> {
        match self {
            CallError::Service { code, .. } => Some(code),
            CallError::Db(_) => None,
        }
    }
}

impl From<DbError> for CallError {
    fn from(e: DbError) -> CallError {
        CallError::Db(e)
    }
}

/// A DynamoDB exception as the DB API reports it: throttling and server trouble may pass on a
/// retry ([`DbError::Busy`]), everything else is a driver error naming the exception.
pub(crate) fn service_error(code: &str, message: &str) -> DbError {
    match code {
        "ProvisionedThroughputExceededException"
        | "ThrottlingException"
        | "RequestLimitExceeded"
        | "LimitExceededException"
        | "InternalServerError"
        | "ServiceUnavailable"
        | "TransactionInProgressException"
        | "TransactionConflictException" => DbError::Busy(format!("dynamodb: {code}: {message}")),
        _ => DbError::Driver(format!("dynamodb: {code}: {message}")),
    }
}

/// Where requests go and how they are signed.
#[derive(Debug, Clone)]
pub(crate) struct Endpoint {
    pub(crate) https: bool,
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) region: String,
    pub(crate) creds: Credentials,
}

impl Endpoint {
    /// Parses `http://host:port` or `https://host[:port]` (a trailing `/` allowed).
    pub(crate) fn parse(url: &str, region: &str, creds: Credentials) -> Result<Endpoint, DbError> {
        let bad = |why: &str| DbError::bad_value("db-dynamodb-pool", format!("{url:?}: {why}"));
        let (https, rest) = if let Some(r) = url.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else {
            return Err(bad("an http:// or https:// URL is required"));
        };
        let authority = rest.trim_end_matches('/');
        if authority.is_empty() || authority.contains(['/', '?', '#', '@']) {
            return Err(bad("only scheme://host[:port] is accepted"));
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => (
                h.to_string(),
                p.parse::<u16>().map_err(|_| bad("bad port"))?,
            ),
            _ => (authority.to_string(), if https { 443 } else { 80 }),
        };
        if region.is_empty() {
            return Err(DbError::bad_value(
                "db-dynamodb-region",
                "a region is required",
            ));
        }
        Ok(Endpoint {
            https,
            host,
            port,
            region: region.to_string(),
            creds,
        })
    }

    /// The `Host` header: the port only when it is not the scheme's default.
    fn host_header(&self) -> String {
        match (self.https, self.port) {
            (true, 443) | (false, 80) => self.host.clone(),
            _ => format!("{}:{}", self.host, self.port),
        }
    }
}

/// A DynamoDB client: cheap to share, keeps idle HTTP/1.1 connections for reuse.
pub(crate) struct Client {
    ep: Endpoint,
    host_header: String,
    tls: Option<tokio_rustls::TlsConnector>,
    idle: Mutex<Vec<http1::SendRequest<Full<Bytes>>>>,
}

fn busy(what: impl std::fmt::Display) -> CallError {
    CallError::Db(DbError::Busy(format!("dynamodb: {what}")))
}

impl Client {
    pub(crate) fn new(ep: Endpoint) -> Result<Client, DbError> {
        let tls = if ep.https {
            let mut roots = rustls::RootCertStore::empty();
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| DbError::Driver(format!("dynamodb: TLS: {e}")))?
                .with_root_certificates(roots)
                .with_no_client_auth();
            cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
            Some(tokio_rustls::TlsConnector::from(Arc::new(cfg)))
        } else {
            None
        };
        Ok(Client {
            host_header: ep.host_header(),
            ep,
            tls,
            idle: Mutex::new(Vec::new()),
        })
    }

    /// A new HTTP/1.1 connection to the endpoint.
    async fn connect(&self) -> Result<http1::SendRequest<Full<Bytes>>, CallError> {
        let host = self.ep.host.trim_matches(['[', ']']);
        let tcp = TcpStream::connect((host, self.ep.port))
            .await
            .map_err(|e| busy(format!("connect {}:{}: {e}", host, self.ep.port)))?;
        tcp.set_nodelay(true).map_err(busy)?;
        match &self.tls {
            None => {
                let (s, conn) = http1::handshake(TokioIo::new(tcp)).await.map_err(busy)?;
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                Ok(s)
            }
            Some(tls) => {
                let name =
                    rustls::pki_types::ServerName::try_from(host.to_string()).map_err(|e| {
                        CallError::Db(DbError::Driver(format!("dynamodb: {host}: {e}")))
                    })?;
                let stream = tls
                    .connect(name, tcp)
                    .await
                    .map_err(|e| busy(format!("TLS with {host}: {e}")))?;
                let (s, conn) = http1::handshake(TokioIo::new(stream)).await.map_err(busy)?;
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                Ok(s)
            }
        }
    }

    /// An idle connection that can take a request, or a new one.
    async fn sender(&self) -> Result<http1::SendRequest<Full<Bytes>>, CallError> {
        loop {
            let Some(mut s) = self.idle.lock().pop() else {
                break;
            };
            if s.ready().await.is_ok() {
                return Ok(s);
            }
        }
        self.connect().await
    }

    /// Calls operation `op` (`GetItem`, ...) with the JSON `body`; the answer's JSON.
    pub(crate) async fn call(&self, op: &str, body: &Value) -> Result<Value, CallError> {
        match tokio::time::timeout(CALL_TIMEOUT, self.exchange(op, body)).await {
            Ok(r) => r,
            Err(_) => Err(busy(format!("{op}: no answer within {CALL_TIMEOUT:?}"))),
        }
    }

    /// The signed request of `op` with `body`, as the raw bytes would be sent (the bench's raw
    /// client uses it too, so both sides send identical requests).
    pub(crate) fn request(
        &self,
        op: &str,
        body: Bytes,
    ) -> Result<hyper::Request<Full<Bytes>>, DbError> {
        let amz_date = chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string();
        let target = format!("DynamoDB_20120810.{op}");
        let headers = [
            ("content-type", "application/x-amz-json-1.0"),
            ("host", self.host_header.as_str()),
            ("x-amz-date", amz_date.as_str()),
            ("x-amz-target", target.as_str()),
        ];
        let auth = authorization(
            &self.ep.creds,
            &self.ep.region,
            "dynamodb",
            &amz_date,
            &Request {
                method: "POST",
                path: "/",
                query: "",
                headers: &headers,
                body: &body,
            },
        );
        let mut b = hyper::Request::builder().method("POST").uri("/");
        for (n, v) in headers {
            b = b.header(n, v);
        }
        b.header("x-amz-content-sha256", sha256_hex(&body))
            .header("authorization", auth)
            .body(Full::new(body))
            .map_err(|e| DbError::Driver(format!("dynamodb: request: {e}")))
    }

    async fn exchange(&self, op: &str, body: &Value) -> Result<Value, CallError> {
        let bytes = serde_json::to_vec(body)
            .map_err(|e| CallError::Db(DbError::Driver(format!("dynamodb: {e}"))))?;
        let bytes = Bytes::from(bytes);
        let mut s = self.sender().await?;
        let resp = match s.send_request(self.request(op, bytes.clone())?).await {
            Ok(r) => r,
            // An idle connection the server closed before the request went out: the request was
            // not sent, so it is safe to send it again on a new connection.
            Err(e) if e.is_canceled() => {
                s = self.connect().await?;
                s.send_request(self.request(op, bytes)?)
                    .await
                    .map_err(|e| busy(format!("{op}: {e}")))?
            }
            Err(e) => return Err(busy(format!("{op}: {e}"))),
        };
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| busy(format!("{op}: {e}")))?
            .to_bytes();
        {
            let mut idle = self.idle.lock();
            if idle.len() < MAX_IDLE {
                idle.push(s);
            }
        }
        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(v);
        }
        let code = v
            .get("__type")
            .and_then(Value::as_str)
            .map(|t| t.rsplit('#').next().unwrap_or(t).to_string())
            .unwrap_or_else(|| format!("HTTP {status}"));
        let message = v
            .get("message")
            .or_else(|| v.get("Message"))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if status.is_server_error() && !code.ends_with("Exception") && code.starts_with("HTTP") {
            return Err(busy(format!("{op}: {code}")));
        }
        Err(CallError::Service {
            code,
            message,
            body: v,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds() -> Credentials {
        Credentials {
            key: "k".into(),
            secret: "s".into(),
        }
    }

    #[test]
    fn endpoints_parse() {
        let e = Endpoint::parse("http://127.0.0.1:8000", "us-east-1", creds()).expect("http");
        assert_eq!(
            (e.https, e.host.as_str(), e.port),
            (false, "127.0.0.1", 8000)
        );
        assert_eq!(e.host_header(), "127.0.0.1:8000");
        let e = Endpoint::parse(
            "https://dynamodb.us-east-1.amazonaws.com/",
            "us-east-1",
            creds(),
        )
        .expect("https");
        assert_eq!((e.https, e.port), (true, 443));
        assert_eq!(e.host_header(), "dynamodb.us-east-1.amazonaws.com");
        for bad in [
            "127.0.0.1:8000",
            "http://",
            "http://h:x",
            "http://h/path",
            "ftp://h",
        ] {
            assert!(Endpoint::parse(bad, "us-east-1", creds()).is_err(), "{bad}");
        }
        assert!(Endpoint::parse("http://h:1", "", creds()).is_err());
    }

    #[test]
    fn throttling_is_retryable() {
        assert!(service_error("ProvisionedThroughputExceededException", "x").is_retryable());
        assert!(service_error("ThrottlingException", "x").is_retryable());
        assert!(!service_error("ValidationException", "x").is_retryable());
    }
}
