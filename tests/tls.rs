//! HTTPS and HTTP/2 as a client sees them (docs/security.md, "Running with TLS"): a test CA and
//! certificates made here with rcgen; the chain verified over HTTP/1.1 and HTTP/2; signed requests
//! and a wss subscription over TLS; the certificate rotated under constant load with no failed
//! request and no worker restarted; a bad new pair refused while the old one keeps serving; clear
//! start-up errors; client certificates; `-ssl-redirect` and HSTS; proxy mode terminating TLS;
//! WebSockets on HTTP/2 streams (extended CONNECT); cleartext HTTP/2 refused on the plain port;
//! the HTTP/2 limits (concurrent streams, header list, the rapid-reset pattern answered without
//! the worker dying); the request limits (head, URL, parameters, multipart parts, JSON depth,
//! WebSocket message, image pixels, sides and decoder memory).

use crate::api::{add_account, py_sign, Call};
use crate::harness::*;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A test CA that signs server and client certificates.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let key = KeyPair::generate().expect("CA key");
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        let cert = p.self_signed(&key).expect("CA cert");
        Ca { cert, key }
    }

    fn pem(&self) -> String {
        self.cert.pem()
    }

    /// A certificate for 127.0.0.1 and localhost valid from `from` to `to` (years), and its key.
    fn leaf(&self, cn: &str, from: i32, to: i32, client: bool) -> (String, String) {
        let key = KeyPair::generate().expect("key");
        let mut p = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .expect("params");
        p.distinguished_name.push(DnType::CommonName, cn);
        p.not_before = rcgen::date_time_ymd(from, 1, 1);
        p.not_after = rcgen::date_time_ymd(to, 1, 1);
        if client {
            p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        }
        let cert = p.signed_by(&key, &self.cert, &self.key).expect("sign");
        (cert.pem(), key.serialize_pem())
    }
}

/// Writes `text` to `path` atomically (a rename), as a certificate tool would.
fn write(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

/// A tree serving HTTPS with the pair `cert`/`key` in `dir`.
struct Secure {
    t: Tree,
    ssl_port: u16,
    dir: tempfile::TempDir,
}

impl Secure {
    fn cert(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }
    fn key(&self) -> PathBuf {
        self.dir.path().join("key.pem")
    }
}

/// Starts `bkjs run` with HTTPS on a free port and the given pair; `extra` is added.
fn start(pair: &(String, String), extra: &[&str]) -> Secure {
    let dir = tempfile::tempdir().expect("cert dir");
    write(&dir.path().join("cert.pem"), &pair.0);
    write(&dir.path().join("key.pem"), &pair.1);
    let ssl_port = free_port();
    let port_s = ssl_port.to_string();
    let cert = dir.path().join("cert.pem").display().to_string();
    let key = dir.path().join("key.pem").display().to_string();
    let mut args = vec![
        "-ssl-port",
        port_s.as_str(),
        "-ssl-cert",
        cert.as_str(),
        "-ssl-key",
        key.as_str(),
    ];
    args.extend_from_slice(extra);
    let t = Tree::start("run", &args);
    Secure { t, ssl_port, dir }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client configuration trusting `ca_pem` (nothing when None), with an optional client pair.
fn client_config(
    ca_pem: Option<&str>,
    client: Option<&(String, String)>,
    alpn: &[&[u8]],
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    if let Some(pem) = ca_pem {
        for c in rustls_certs(pem) {
            roots.add(c).expect("root");
        }
    }
    let b = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots);
    let mut cfg = match client {
        Some((cert, key)) => {
            let key = rustls::pki_types::PrivateKeyDer::Pkcs8(
                rustls::pki_types::PrivatePkcs8KeyDer::from(
                    KeyPair::from_pem(key).expect("client key").serialize_der(),
                ),
            );
            b.with_client_auth_cert(rustls_certs(cert), key)
                .expect("client auth")
        }
        None => b.with_no_client_auth(),
    };
    cfg.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    Arc::new(cfg)
}

fn rustls_certs(pem: &str) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .expect("PEM certificates")
}

/// An HTTP/1.1 agent over TLS trusting `ca_pem`.
fn tls_agent(ca_pem: &str) -> ureq::Agent {
    ureq::AgentBuilder::new()
        .tls_config(client_config(Some(ca_pem), None, &[b"http/1.1"]))
        .timeout(Duration::from_secs(10))
        .redirects(0)
        .build()
}

fn https_url(port: u16, path: &str) -> String {
    format!("https://127.0.0.1:{port}{path}")
}

/// GET over HTTPS: status, headers asked for, body as JSON.
fn get(agent: &ureq::Agent, port: u16, path: &str, headers: &[(&str, &str)]) -> (u16, Value) {
    let mut req = agent.get(&https_url(port, path));
    for (k, v) in headers {
        req = req.set(k, v);
    }
    let resp = match req.call() {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("GET {path}: {e}"),
    };
    let status = resp.status();
    let text = resp.into_string().unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// A TLS connection to 127.0.0.1:`port` with `cfg` (ALPN chosen by it).
async fn tls_connect(
    port: u16,
    cfg: Arc<rustls::ClientConfig>,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
    tokio_rustls::TlsConnector::from(cfg)
        .connect(name, tcp)
        .await
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// `n` GETs of `path` over one HTTP/2 connection, all in flight at once; their statuses and the
/// version the server answered with.
fn h2_gets(port: u16, ca_pem: &str, path: &str, n: usize) -> Vec<(u16, hyper::Version)> {
    runtime().block_on(async {
        let tls = tls_connect(port, client_config(Some(ca_pem), None, &[b"h2"]))
            .await
            .expect("TLS connect");
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]), "ALPN h2");
        let (sender, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(tls),
        )
        .await
        .expect("h2 handshake");
        tokio::spawn(conn);
        let mut tasks = Vec::new();
        for _ in 0..n {
            let mut sender = sender.clone();
            let req = hyper::Request::get(format!("https://127.0.0.1:{port}{path}"))
                .body(http_body_util::Empty::<bytes::Bytes>::new())
                .expect("request");
            tasks.push(tokio::spawn(async move {
                let r = sender.send_request(req).await.expect("h2 request");
                (r.status().as_u16(), r.version())
            }));
        }
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.expect("task"));
        }
        out
    })
}

/// One GET over HTTP/2 with `headers`: status and JSON body.
fn h2_get(port: u16, ca_pem: &str, path: &str, headers: &[(&str, &str)]) -> (u16, Value) {
    use http_body_util::BodyExt;
    runtime().block_on(async {
        let tls = tls_connect(port, client_config(Some(ca_pem), None, &[b"h2"]))
            .await
            .expect("TLS connect");
        let (mut sender, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(tls),
        )
        .await
        .expect("h2 handshake");
        tokio::spawn(conn);
        let mut req = hyper::Request::get(format!("https://127.0.0.1:{port}{path}"));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .expect("request");
        let r = sender.send_request(req).await.expect("h2 request");
        assert_eq!(r.version(), hyper::Version::HTTP_2);
        let status = r.status().as_u16();
        let body = r.into_body().collect().await.expect("body").to_bytes();
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    })
}

/// Waits until HTTPS /ping answers 200.
fn ready_https(s: &Secure, agent: &ureq::Agent) {
    let ok = wait_for(Duration::from_secs(30), || {
        agent
            .get(&https_url(s.ssl_port, "/ping"))
            .call()
            .map(|r| r.status() == 200)
            .unwrap_or(false)
    });
    assert!(ok, "HTTPS not ready:\n{}", s.t.log());
}

#[test]
fn https_verifies_the_chain_over_http1_and_http2_and_refuses_an_unknown_ca() {
    let ca = Ca::new("bkjs test CA");
    let s = start(&ca.leaf("server", 2020, 2040, false), &[]);
    s.t.ready(2);
    let agent = tls_agent(&ca.pem());
    ready_https(&s, &agent);
    let (st, v) = get(&agent, s.ssl_port, "/ping", &[]);
    assert_eq!((st, v), (200, json!({})));
    // No -ssl-hsts: no header.
    let r = agent
        .get(&https_url(s.ssl_port, "/ping"))
        .call()
        .expect("ping");
    assert!(r.header("strict-transport-security").is_none());
    // HTTP/2, many streams on one connection.
    let replies = h2_gets(s.ssl_port, &ca.pem(), "/ping", 20);
    assert_eq!(replies.len(), 20);
    assert!(
        replies.iter().all(|r| *r == (200, hyper::Version::HTTP_2)),
        "{replies:?}"
    );
    // A JSON reply (not only the fast /ping) over HTTP/2.
    let replies = h2_gets(s.ssl_port, &ca.pem(), "/account/get", 1);
    assert_eq!(replies[0].0, 401, "not signed");
    // The server's suite order: AES-128-GCM although the client (ring's order) asks for
    // AES-256-GCM first.
    let suite = runtime().block_on(async {
        let tls = tls_connect(s.ssl_port, client_config(Some(&ca.pem()), None, &[b"h2"]))
            .await
            .expect("TLS connect");
        tls.get_ref().1.negotiated_cipher_suite().map(|s| s.suite())
    });
    assert_eq!(suite, Some(rustls::CipherSuite::TLS13_AES_128_GCM_SHA256));
    // A client that does not trust the CA is refused at the handshake.
    let other = Ca::new("another CA");
    let err = tls_agent(&other.pem())
        .get(&https_url(s.ssl_port, "/ping"))
        .call()
        .expect_err("an unknown CA is refused");
    assert!(
        err.to_string().to_lowercase().contains("certificate"),
        "{err}"
    );
    // TLS 1.3 and 1.2 are both offered.
    for v in [&rustls::version::TLS12, &rustls::version::TLS13] {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(rustls_certs(&ca.pem())[0].clone()).expect("root");
        let cfg = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[v])
            .expect("version")
            .with_root_certificates(roots)
            .with_no_client_auth();
        let agent = ureq::AgentBuilder::new().tls_config(Arc::new(cfg)).build();
        let (st, _) = get(&agent, s.ssl_port, "/ping", &[]);
        assert_eq!(st, 200, "{v:?}");
    }
    // Plain HTTP is still served next to HTTPS.
    assert_eq!(s.t.get("/ping").status, 200);
}

#[test]
fn signed_requests_and_a_wss_subscription_work_over_tls() {
    let ca = Ca::new("bkjs test CA");
    let s = start(
        &ca.leaf("server", 2020, 2040, false),
        &[
            "-server-web-workers",
            "1",
            "-api-allow-path",
            "^/system/msg/",
        ],
    );
    s.t.ready(1);
    let agent = tls_agent(&ca.pem());
    ready_https(&s, &agent);
    let me = add_account(&s.t, "tlsa", "s1", "Tls");
    let host = format!("127.0.0.1:{}", s.ssl_port);
    let sig = py_sign(&Call::get(3, "tlsa", "s1", "/account/get"), &host);
    let (st, v) = get(
        &agent,
        s.ssl_port,
        "/account/get",
        &[("bk-signature", &sig)],
    );
    assert_eq!((st, v["id"].clone()), (200, json!(me)), "{v}");
    // The same over HTTP/2, where the signed host travels as :authority.
    let sig = py_sign(&Call::get(3, "tlsa", "s1", "/account/get?h=2"), &host);
    let (st, v) = h2_get(
        s.ssl_port,
        &ca.pem(),
        "/account/get?h=2",
        &[("bk-signature", &sig)],
    );
    assert_eq!((st, v["id"].clone()), (200, json!(me)), "{v}");
    // A wrong secret is refused over TLS as over plain HTTP.
    let bad = py_sign(&Call::get(3, "tlsa", "s2", "/account/get"), &host);
    let (st, _) = get(
        &agent,
        s.ssl_port,
        "/account/get",
        &[("bk-signature", &bad)],
    );
    assert_eq!(st, 401);

    // wss: upgrade over TLS, ask, subscribe and get a pushed event.
    let sig = py_sign(&Call::get(3, "tlsa", "s1", "/ws"), &host);
    let tcp = std::net::TcpStream::connect(("127.0.0.1", s.ssl_port)).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    let conn = rustls::ClientConnection::new(
        client_config(Some(&ca.pem()), None, &[b"http/1.1"]),
        rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name"),
    )
    .expect("client");
    let stream = rustls::StreamOwned::new(conn, tcp);
    use tungstenite::client::IntoClientRequest;
    let mut req = format!("wss://{host}/ws")
        .into_client_request()
        .expect("request");
    req.headers_mut()
        .insert("bk-signature", sig.parse().expect("header"));
    let (mut ws, resp) = tungstenite::client(req, stream).expect("wss upgrade");
    assert_eq!(resp.status().as_u16(), 101);
    let recv = |ws: &mut tungstenite::WebSocket<_>, publish: bool| -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if publish {
                let data = "%7B%22path%22%3A%22%2Ftest%2Fwss%22%7D";
                let r =
                    s.t.get(&format!("/system/msg/publish?key={me}&data={data}"));
                assert_eq!(r.status, 200, "{}", r.body);
            }
            match ws.read() {
                Ok(tungstenite::Message::Text(t)) => {
                    return serde_json::from_str(t.as_str()).expect("json")
                }
                Ok(_) => {}
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    assert!(Instant::now() < deadline, "no frame within 10 s");
                }
                Err(e) => panic!("wss read: {e}"),
            }
        }
    };
    ws.send(tungstenite::Message::text("/account/get"))
        .expect("send");
    let v = recv(&mut ws, false);
    assert_eq!(v["id"], json!(me), "{v}");
    ws.send(tungstenite::Message::text("/account/subscribe"))
        .expect("send");
    assert_eq!(recv(&mut ws, false), json!({"subscribed": me}));
    let pushed = recv(&mut ws, true);
    assert_eq!(pushed[0], json!({"path": "/test/wss"}), "{pushed}");
}

type H2Ws = tokio_tungstenite::WebSocketStream<hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>>;

/// Opens a WebSocket on a stream of a new HTTP/2 connection (TLS, ALPN h2): an extended CONNECT
/// (RFC 8441) to `path` with `headers`. The status, and the socket when it is 200.
async fn h2_websocket(
    port: u16,
    ca_pem: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, Option<H2Ws>) {
    let tls = tls_connect(port, client_config(Some(ca_pem), None, &[b"h2"]))
        .await
        .expect("TLS connect");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]), "ALPN h2");
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .expect("h2 handshake");
    tokio::spawn(conn);
    let mut req = hyper::Request::builder()
        .method(hyper::Method::CONNECT)
        .uri(format!("https://127.0.0.1:{port}{path}"))
        .header("sec-websocket-version", "13")
        .extension(hyper::ext::Protocol::from_static("websocket"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .expect("request");
    let mut resp = sender.send_request(req).await.expect("extended CONNECT");
    assert_eq!(resp.version(), hyper::Version::HTTP_2);
    let status = resp.status().as_u16();
    if status != 200 {
        return (status, None);
    }
    let upgraded = hyper::upgrade::on(&mut resp).await.expect("the stream");
    let ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
        hyper_util::rt::TokioIo::new(upgraded),
        tokio_tungstenite::tungstenite::protocol::Role::Client,
        None,
    )
    .await;
    (status, Some(ws))
}

/// The next text frame of `ws` as JSON, within 10 s.
async fn h2_ws_recv(ws: &mut H2Ws) -> Value {
    use futures_util::StreamExt;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(tokio_tungstenite::tungstenite::Message::Text(t)))) => {
                return serde_json::from_str(t.as_str()).expect("json")
            }
            Ok(Some(Ok(_))) => {}
            Ok(other) => panic!("the socket ended: {other:?}"),
            Err(_) => panic!("no frame within 10 s"),
        }
    }
}

#[test]
fn a_websocket_over_http2_answers_requests_and_gets_pushed_events() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let ca = Ca::new("bkjs test CA");
    // A short idle timeout: an open HTTP/2 WebSocket must keep its connection from being closed
    // as idle.
    let s = start(
        &ca.leaf("server", 2020, 2040, false),
        &[
            "-server-web-workers",
            "1",
            "-api-allow-path",
            "^/system/msg/",
            "-timeout",
            "1s",
        ],
    );
    s.t.ready(1);
    let agent = tls_agent(&ca.pem());
    ready_https(&s, &agent);
    let me = add_account(&s.t, "h2ws", "s1", "H2ws");
    let host = format!("127.0.0.1:{}", s.ssl_port);
    let publish = || {
        let data = "%7B%22path%22%3A%22%2Ftest%2Fh2%22%7D";
        let r =
            s.t.get(&format!("/system/msg/publish?key={me}&data={data}"));
        assert_eq!(r.status, 200, "{}", r.body);
    };
    runtime().block_on(async {
        // Not signed: refused like the HTTP/1.1 upgrade, before any socket.
        let (st, ws) = h2_websocket(s.ssl_port, &ca.pem(), "/ws", &[]).await;
        assert_eq!((st, ws.is_none()), (401, true));
        // A bad signature: 401 too.
        let bad = py_sign(&Call::get(3, "h2ws", "s2", "/ws"), &host);
        let (st, _) = h2_websocket(s.ssl_port, &ca.pem(), "/ws", &[("bk-signature", &bad)]).await;
        assert_eq!(st, 401);
        // Signed as the GET of the same path, as for wss over HTTP/1.1.
        let sig = py_sign(&Call::get(3, "h2ws", "s1", "/ws"), &host);
        let (st, ws) = h2_websocket(s.ssl_port, &ca.pem(), "/ws", &[("bk-signature", &sig)]).await;
        assert_eq!(st, 200, "{}", s.t.log());
        let mut ws = ws.expect("socket");
        ws.send(Message::text("/account/get")).await.expect("send");
        let v = h2_ws_recv(&mut ws).await;
        assert_eq!(v["id"], json!(me), "{v}");
        ws.send(Message::text("/nowhere/at/all"))
            .await
            .expect("send");
        let v = h2_ws_recv(&mut ws).await;
        assert_eq!(v["status"], json!(404), "{v}");
        ws.send(Message::text("/account/subscribe"))
            .await
            .expect("send");
        assert_eq!(h2_ws_recv(&mut ws).await, json!({"subscribed": me}));
        // Longer than -timeout plus the sweep's grace: the connection stays open under the
        // socket (an idle HTTP/2 connection would be closed by now).
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let pushed = loop {
            publish();
            match tokio::time::timeout(Duration::from_millis(500), h2_ws_recv(&mut ws)).await {
                Ok(v) => break v,
                Err(_) => continue,
            }
        };
        assert_eq!(pushed[0], json!({"path": "/test/h2"}), "{pushed}");
        ws.send(Message::text("/account/get")).await.expect("send");
        let v = h2_ws_recv(&mut ws).await;
        assert_eq!(v["id"], json!(me), "{v}");
        ws.close(None).await.expect("close");
    });
    // A CONNECT that is not a WebSocket is refused.
    let (st, v) = runtime().block_on(async {
        let tls = tls_connect(s.ssl_port, client_config(Some(&ca.pem()), None, &[b"h2"]))
            .await
            .expect("TLS connect");
        let (mut client, conn) = h2::client::handshake(tls).await.expect("h2");
        tokio::spawn(conn);
        let req = hyper::Request::builder()
            .method(hyper::Method::CONNECT)
            .uri(format!("https://127.0.0.1:{}/ws", s.ssl_port))
            .extension(h2::ext::Protocol::from_static("chat"))
            .body(())
            .expect("req");
        let (resp, _stream) = client.send_request(req, false).expect("send");
        let resp = resp.await.expect("response");
        let status = resp.status().as_u16();
        let mut body = resp.into_body();
        let mut bytes = Vec::new();
        while let Some(chunk) = body.data().await {
            bytes.extend_from_slice(&chunk.expect("chunk"));
        }
        (
            status,
            serde_json::from_slice::<Value>(&bytes).unwrap_or(Value::Null),
        )
    });
    assert_eq!(st, 405, "{v}");
    assert!(
        v["message"].as_str().is_some_and(|m| m.contains("CONNECT")),
        "{v}"
    );
}

#[test]
fn cleartext_http2_is_refused_with_http_1_1_required() {
    let t = Tree::start("run", &["-server-web-workers", "1"]);
    t.ready(1);
    let err = runtime().block_on(async {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", t.port))
            .await
            .expect("connect");
        let (mut client, conn) = h2::client::handshake(tcp).await.expect("h2 preface");
        let conn = tokio::spawn(conn);
        let req = hyper::Request::get(format!("http://127.0.0.1:{}/ping", t.port))
            .body(())
            .expect("req");
        let sent = match client.send_request(req, true) {
            Ok((resp, _)) => tokio::time::timeout(Duration::from_secs(10), resp)
                .await
                .expect("an answer within 10 s")
                .map(|_| ()),
            Err(e) => Err(e),
        };
        let conn = tokio::time::timeout(Duration::from_secs(10), conn)
            .await
            .expect("the connection ends")
            .expect("task");
        (sent.err(), conn.err())
    });
    let reasons: Vec<_> = [&err.0, &err.1]
        .into_iter()
        .flatten()
        .map(|e| (e.reason(), e.to_string()))
        .collect();
    assert!(
        reasons
            .iter()
            .any(|(r, _)| *r == Some(h2::Reason::HTTP_1_1_REQUIRED)),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|(_, m)| m.contains("h2c")) || t.log().contains("h2c"),
        "{reasons:?}"
    );
    // HTTP/1.1 on the same port is served as before, `Upgrade: h2c` ignored.
    let r = agent()
        .get(&t.url("/ping"))
        .set("connection", "Upgrade, HTTP2-Settings")
        .set("upgrade", "h2c")
        .set("http2-settings", "AAMAAABkAAQAAP__")
        .call()
        .expect("HTTP/1.1");
    assert_eq!(r.status(), 200);
}

/// The leaf certificate a new TLS connection is served, as DER.
fn served_cert(port: u16, ca_pem: &str) -> Option<Vec<u8>> {
    let tcp = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    tcp.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let conn = rustls::ClientConnection::new(
        client_config(Some(ca_pem), None, &[b"http/1.1"]),
        rustls::pki_types::ServerName::try_from("127.0.0.1").ok()?,
    )
    .ok()?;
    let mut s = rustls::StreamOwned::new(conn, tcp);
    use std::io::Write;
    s.write_all(b"GET /ping HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .ok()?;
    s.flush().ok()?;
    let der = s.conn.peer_certificates()?.first()?.to_vec();
    Some(der)
}

#[test]
fn the_certificate_is_rotated_under_load_without_a_failed_request_or_a_restart() {
    let ca = Ca::new("bkjs test CA");
    let first = ca.leaf("first", 2020, 2040, false);
    let s = start(&first, &[]);
    s.t.ready(2);
    let agent = tls_agent(&ca.pem());
    ready_https(&s, &agent);
    let workers = s.t.pids("web");
    let first_der = served_cert(s.ssl_port, &ca.pem()).expect("served");

    // Constant load: keep-alive requests and new connections (new handshakes) on 3 threads.
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(parking_lot::Mutex::new(Vec::<String>::new()));
    let mut threads = Vec::new();
    for i in 0..3 {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        let (port, ca_pem) = (s.ssl_port, ca.pem());
        threads.push(std::thread::spawn(move || {
            let keep = tls_agent(&ca_pem);
            while !stop.load(Ordering::Relaxed) {
                // Thread 0 reuses its connection; the others connect anew every time.
                let agent = if i == 0 {
                    keep.clone()
                } else {
                    tls_agent(&ca_pem)
                };
                match agent.get(&https_url(port, "/ping")).call() {
                    Ok(r) if r.status() == 200 => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(r) => failed.lock().push(r.status().to_string()),
                    Err(e) => failed.lock().push(e.to_string()),
                }
            }
        }));
    }
    assert!(wait_for(Duration::from_secs(10), || ok
        .load(Ordering::Relaxed)
        > 20));

    // A mismatched pair (the new certificate with the old key) is refused; the old one serves.
    let second = ca.leaf("second", 2020, 2040, false);
    write(&s.cert(), &second.0);
    assert!(
        s.t.wait_log("TLS certificate not reloaded", Duration::from_secs(10)),
        "{}",
        s.t.log()
    );
    assert!(s.t.log().contains("do not match"), "{}", s.t.log());
    assert_eq!(served_cert(s.ssl_port, &ca.pem()), Some(first_der.clone()));

    // The key follows: the new pair is taken without restarting a worker.
    write(&s.key(), &second.1);
    let rotated = wait_for(Duration::from_secs(10), || {
        served_cert(s.ssl_port, &ca.pem()).is_some_and(|d| d != first_der)
    });
    assert!(
        rotated,
        "the new certificate was not served:\n{}",
        s.t.log()
    );
    let before = ok.load(Ordering::Relaxed);
    assert!(wait_for(Duration::from_secs(10), || ok
        .load(Ordering::Relaxed)
        > before + 20));
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().expect("load thread");
    }
    let failed = failed.lock().clone();
    assert!(
        failed.is_empty(),
        "{} failed of {}: {failed:?}",
        failed.len(),
        ok.load(Ordering::Relaxed)
    );
    let mut now = s.t.pids("web");
    now.sort();
    let mut was = workers.clone();
    was.sort();
    assert_eq!(now, was, "no worker was restarted");

    // An expired pair is refused too.
    let expired = ca.leaf("expired", 2001, 2002, false);
    write(&s.key(), &expired.1);
    write(&s.cert(), &expired.0);
    assert!(
        wait_for(Duration::from_secs(10), || s.t.log().contains("expired")),
        "{}",
        s.t.log()
    );
    let (st, _) = get(&agent, s.ssl_port, "/ping", &[]);
    assert_eq!(st, 200);

    // SIGHUP reloads the pair at once in every worker (the usual rolling restart follows).
    let third = ca.leaf("third", 2020, 2040, false);
    write(&s.key(), &third.1);
    write(&s.cert(), &third.0);
    s.t.signal(nix::sys::signal::Signal::SIGHUP);
    let third_der = rustls_certs(&third.0)[0].to_vec();
    assert!(wait_for(Duration::from_secs(15), || served_cert(
        s.ssl_port,
        &ca.pem()
    ) == Some(
        third_der.clone()
    )));
}

#[test]
fn a_bad_pair_at_start_exits_64_naming_the_parameter() {
    let ca = Ca::new("bkjs test CA");
    let good = ca.leaf("good", 2020, 2040, false);
    let other = ca.leaf("other", 2020, 2040, false);
    let cases: Vec<((String, String), &str)> = vec![
        (ca.leaf("expired", 2001, 2002, false), "expired"),
        (
            ca.leaf("future", 2090, 2095, false),
            "not valid for another",
        ),
        ((good.0.clone(), other.1.clone()), "do not match"),
        (("not a certificate".into(), good.1.clone()), "-ssl-cert"),
        ((good.0.clone(), "no key".into()), "-ssl-key"),
    ];
    for (pair, needle) in cases {
        let mut s = start(&pair, &[]);
        let code = s.t.wait_exit(Duration::from_secs(20));
        assert_eq!(code, Some(Some(64)), "{needle}: {}", s.t.log());
        assert!(s.t.log().contains(needle), "{needle}: {}", s.t.log());
    }
    // A key file that cannot be read.
    let dir = tempfile::tempdir().expect("dir");
    write(&dir.path().join("cert.pem"), &good.0);
    let cert = dir.path().join("cert.pem").display().to_string();
    let missing = dir.path().join("missing.pem").display().to_string();
    let port = free_port().to_string();
    let mut t = Tree::start(
        "run",
        &["-ssl-port", &port, "-ssl-cert", &cert, "-ssl-key", &missing],
    );
    assert_eq!(t.wait_exit(Duration::from_secs(20)), Some(Some(64)));
    assert!(
        t.log().contains(&format!("-ssl-key {missing}")),
        "{}",
        t.log()
    );
}

#[test]
fn client_certificates_are_required_with_ssl_ca() {
    let ca = Ca::new("bkjs test CA");
    let clients = Ca::new("bkjs client CA");
    let dir = tempfile::tempdir().expect("dir");
    let ca_file = dir.path().join("clients.pem");
    write(&ca_file, &clients.pem());
    let ca_arg = ca_file.display().to_string();
    let s = start(&ca.leaf("server", 2020, 2040, false), &["-ssl-ca", &ca_arg]);
    s.t.ready(2);
    let good = clients.leaf("alice", 2020, 2040, true);
    let with = ureq::AgentBuilder::new()
        .tls_config(client_config(Some(&ca.pem()), Some(&good), &[]))
        .build();
    ready_https(&s, &with);
    assert_eq!(get(&with, s.ssl_port, "/ping", &[]).0, 200);
    // No client certificate, or one from another CA: refused.
    let without = tls_agent(&ca.pem());
    assert!(without.get(&https_url(s.ssl_port, "/ping")).call().is_err());
    let stranger = ca.leaf("mallory", 2020, 2040, true);
    let wrong = ureq::AgentBuilder::new()
        .tls_config(client_config(Some(&ca.pem()), Some(&stranger), &[]))
        .build();
    assert!(wrong.get(&https_url(s.ssl_port, "/ping")).call().is_err());
}

#[test]
fn plain_http_redirects_to_https_and_hsts_is_sent() {
    let ca = Ca::new("bkjs test CA");
    let s = start(
        &ca.leaf("server", 2020, 2040, false),
        &["-ssl-redirect", "-ssl-hsts", "365d"],
    );
    let agent = tls_agent(&ca.pem());
    ready_https(&s, &agent);
    let plain = ureq::AgentBuilder::new().redirects(0).build();
    let r = match plain.get(&s.t.url("/account/get?x=1")).call() {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(r.status(), 301);
    assert_eq!(
        r.header("location"),
        Some(format!("https://127.0.0.1:{}/account/get?x=1", s.ssl_port).as_str())
    );
    let r = agent
        .get(&https_url(s.ssl_port, "/ping"))
        .call()
        .expect("ping");
    assert_eq!(
        r.header("strict-transport-security"),
        Some("max-age=31536000")
    );
}

#[test]
fn proxy_mode_terminates_tls_at_the_server() {
    let ca = Ca::new("bkjs test CA");
    let base = free_ports(4).to_string();
    let s = start(
        &ca.leaf("server", 2020, 2040, false),
        &[
            "-proxy-port",
            &base,
            "-api-ws-anonymous",
            "-api-allow-path",
            "^/ws$",
        ],
    );
    let agent = tls_agent(&ca.pem());
    ready_https(&s, &agent);
    let (st, v) = get(&agent, s.ssl_port, "/account/get", &[]);
    assert_eq!(
        (st, v["message"].clone()),
        (401, json!("Not authenticated")),
        "{v}"
    );
    let replies = h2_gets(s.ssl_port, &ca.pem(), "/ping", 10);
    assert!(
        replies.iter().all(|r| *r == (200, hyper::Version::HTTP_2)),
        "{replies:?}"
    );
    // A WebSocket on an HTTP/2 stream, through the proxy to a worker (as an HTTP/1.1 upgrade).
    runtime().block_on(async {
        use futures_util::SinkExt;
        let (st, ws) = h2_websocket(s.ssl_port, &ca.pem(), "/ws", &[]).await;
        assert_eq!(st, 200, "{}", s.t.log());
        let mut ws = ws.expect("socket");
        for _ in 0..3 {
            ws.send(tokio_tungstenite::tungstenite::Message::text("/ping"))
                .await
                .expect("send");
            assert_eq!(h2_ws_recv(&mut ws).await, json!({}));
        }
        // An anonymous socket may call open paths only.
        ws.send(tokio_tungstenite::tungstenite::Message::text(
            "/account/get",
        ))
        .await
        .expect("send");
        assert_eq!(h2_ws_recv(&mut ws).await["status"], json!(401));
    });
}

#[test]
fn an_http2_rapid_reset_burst_closes_the_connection_and_the_worker_lives() {
    let ca = Ca::new("bkjs test CA");
    let s = start(
        &ca.leaf("server", 2020, 2040, false),
        &["-api-h2-max-resets", "20"],
    );
    s.t.ready(2);
    let agent = tls_agent(&ca.pem());
    ready_https(&s, &agent);
    let workers = s.t.pids("web");
    let (sent, closed) = runtime().block_on(async {
        let tls = tls_connect(s.ssl_port, client_config(Some(&ca.pem()), None, &[b"h2"]))
            .await
            .expect("TLS");
        let (mut client, conn) = h2::client::handshake(tls).await.expect("h2");
        let conn = tokio::spawn(conn);
        let mut sent = 0;
        // Open a stream and reset it at once, many times, without waiting for replies.
        for _ in 0..5000 {
            let req = hyper::Request::get(format!("https://127.0.0.1:{}/ping", s.ssl_port))
                .body(())
                .expect("req");
            let ready = match tokio::time::timeout(Duration::from_secs(5), client.ready()).await {
                Ok(Ok(c)) => c,
                _ => break,
            };
            client = ready;
            match client.send_request(req, false) {
                Ok((_resp, mut stream)) => {
                    stream.send_reset(h2::Reason::CANCEL);
                    sent += 1;
                }
                Err(_) => break,
            }
            tokio::task::yield_now().await;
        }
        // The server ends the connection (GOAWAY) well before the client runs out of streams.
        let closed = tokio::time::timeout(Duration::from_secs(10), conn)
            .await
            .is_ok();
        (sent, closed)
    });
    assert!(closed, "the connection was not closed after {sent} resets");
    assert!(sent < 5000, "all {sent} resets were accepted");
    // The worker is alive and serves new connections, over both protocols.
    assert_eq!(s.t.pids("web"), workers);
    assert_eq!(get(&agent, s.ssl_port, "/ping", &[]).0, 200);
    assert_eq!(h2_gets(s.ssl_port, &ca.pem(), "/ping", 5)[0].0, 200);
}

#[test]
fn http2_limits_concurrent_streams_and_the_header_list() {
    let ca = Ca::new("bkjs test CA");
    let s = start(
        &ca.leaf("server", 2020, 2040, false),
        &[
            "-server-web-workers",
            "1",
            "-api-h2-max-streams",
            "7",
            "-api-max-header-size",
            "8192",
        ],
    );
    s.t.ready(1);
    let agent = tls_agent(&ca.pem());
    ready_https(&s, &agent);
    let (streams, connect, small, big) = runtime().block_on(async {
        let tls = tls_connect(s.ssl_port, client_config(Some(&ca.pem()), None, &[b"h2"]))
            .await
            .expect("TLS");
        let (client, conn) = h2::client::handshake(tls).await.expect("h2");
        tokio::spawn(conn);
        let status = |client: h2::client::SendRequest<bytes::Bytes>, header: usize| async move {
            let mut client = client.ready().await.expect("ready");
            let req = hyper::Request::get(format!("https://127.0.0.1:{}/ping", s.ssl_port))
                .header("x-pad", "a".repeat(header))
                .body(())
                .expect("req");
            let (resp, _) = client.send_request(req, true).expect("send");
            // 431, or the stream refused after it (h2 sends both).
            match resp.await {
                Ok(r) => Ok(r.status().as_u16()),
                Err(e) => Err(e.reason()),
            }
        };
        let small = status(client.clone(), 10).await;
        // The server's SETTINGS arrived before its first answer.
        let streams = client.current_max_send_streams();
        let connect = client.is_extended_connect_protocol_enabled();
        let big = status(client.clone(), 9000).await;
        (streams, connect, small, big)
    });
    assert_eq!(streams, 7, "SETTINGS_MAX_CONCURRENT_STREAMS");
    assert!(connect, "SETTINGS_ENABLE_CONNECT_PROTOCOL");
    assert_eq!(small, Ok(200));
    assert!(
        matches!(big, Ok(431) | Err(Some(h2::Reason::REFUSED_STREAM))),
        "{big:?}"
    );
    // The worker goes on.
    assert_eq!(h2_gets(s.ssl_port, &ca.pem(), "/ping", 3)[0].0, 200);
}

#[test]
fn requests_over_the_limits_get_a_clear_4xx() {
    let t = Tree::start(
        "run",
        &[
            "-api-max-header-size",
            "8192",
            "-api-max-headers",
            "20",
            "-api-max-url",
            "1024",
            "-api-max-params",
            "10",
            "-api-ws-max-message",
            "2048",
            "-api-max-json-depth",
            "4",
            "-api-ws-anonymous",
            "-api-allow-path",
            "^/ws$",
        ],
    );
    t.ready(2);
    let send = |headers: &[(String, String)]| -> u16 {
        let mut req = agent().get(&t.url("/ping"));
        for (k, v) in headers {
            req = req.set(k, v);
        }
        match req.call() {
            Ok(r) => r.status(),
            Err(ureq::Error::Status(s, _)) => s,
            Err(e) => panic!("{e}"),
        }
    };
    let few: Vec<_> = (0..5)
        .map(|i| (format!("x-h{i}"), "v".to_string()))
        .collect();
    assert_eq!(send(&few), 200);
    let many: Vec<_> = (0..40)
        .map(|i| (format!("x-h{i}"), "v".to_string()))
        .collect();
    assert_eq!(send(&many), 431);
    assert_eq!(send(&[("x-big".into(), "a".repeat(9000))]), 431);
    assert_eq!(t.get("/ping").status, 200);

    // URL length: 414 with a JSON message.
    let r = t.get(&format!("/account/add?x={}", "a".repeat(1100)));
    assert_eq!(r.status, 414, "{}", r.body);
    assert!(r.body.contains("-api-max-url"), "{}", r.body);
    // Parameter count, in the query or as multipart parts: 400.
    let q: Vec<String> = (0..11).map(|i| format!("p{i}=1")).collect();
    let r = t.get(&format!("/account/add?{}", q.join("&")));
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("-api-max-params"), "{}", r.body);
    let mut body = String::new();
    for i in 0..11 {
        body.push_str(&format!(
            "--XX\r\ncontent-disposition: form-data; name=\"f{i}\"\r\n\r\nv\r\n"
        ));
    }
    body.push_str("--XX--\r\n");
    let r = match agent()
        .post(&t.url("/account/add"))
        .set("content-type", "multipart/form-data; boundary=XX")
        .send_string(&body)
    {
        Ok(r) => (r.status(), r.into_string().unwrap_or_default()),
        Err(ureq::Error::Status(s, r)) => (s, r.into_string().unwrap_or_default()),
        Err(e) => panic!("{e}"),
    };
    assert_eq!(r.0, 400, "{}", r.1);
    assert!(r.1.contains("-api-max-params"), "{}", r.1);
    // JSON nesting: 4 levels pass, 5 and the parser's own limit are a 400 naming the parameter.
    let post_json = |body: &str| -> (u16, String) {
        match agent()
            .post(&t.url("/ping"))
            .set("content-type", "application/json")
            .send_string(body)
        {
            Ok(r) => (r.status(), r.into_string().unwrap_or_default()),
            Err(ureq::Error::Status(s, r)) => (s, r.into_string().unwrap_or_default()),
            Err(e) => panic!("{e}"),
        }
    };
    let nested = |n: usize| format!("{{\"a\":{}1{}}}", "[".repeat(n - 1), "]".repeat(n - 1));
    let (st, body) = post_json(&nested(4));
    assert_eq!(st, 200, "{body}");
    for n in [5, 200] {
        let (st, body) = post_json(&nested(n));
        assert_eq!(st, 400, "{n}: {body}");
        assert!(body.contains("-api-max-json-depth"), "{n}: {body}");
    }

    // A WebSocket message over -api-ws-max-message closes the socket (1009); smaller ones work.
    let (mut ws, _) =
        tungstenite::connect(format!("ws://127.0.0.1:{}/ws", t.port)).expect("anonymous ws");
    ws.send(tungstenite::Message::text("/ping")).expect("send");
    assert!(matches!(
        ws.read().expect("reply"),
        tungstenite::Message::Text(_)
    ));
    ws.send(tungstenite::Message::text(format!(
        "/ping?x={}",
        "a".repeat(4096)
    )))
    .expect("send");
    let closed = loop {
        match ws.read() {
            Ok(tungstenite::Message::Close(f)) => break f.map(|f| u16::from(f.code)),
            Ok(_) => continue,
            Err(_) => break None,
        }
    };
    assert!(matches!(closed, Some(1009) | None), "{closed:?}");
    assert!(ws.send(tungstenite::Message::text("/ping")).is_err() || ws.read().is_err());
}

#[test]
fn each_image_limit_is_a_400_naming_its_parameter() {
    let t = Tree::start(
        "run",
        &[
            "-server-web-workers",
            "1",
            "-api-image-max-pixels",
            "10000",
            "-api-image-max-input-side",
            "150",
            "-api-image-max-memory",
            "25000",
        ],
    );
    t.ready(1);
    add_account(&t, "pix", "s1", "Pix");
    let put = |w: u32, h: u32| -> (u16, Value) {
        use base64::Engine;
        let icon = base64::engine::general_purpose::STANDARD.encode(crate::social::png(w, h));
        let body = json!({ "icon": icon }).to_string();
        let c = Call {
            method: "POST",
            content_type: Some("application/json"),
            body: body.as_bytes(),
            ..Call::get(3, "pix", "s1", "/account/put/icon?type=1")
        };
        crate::api::signed(&t, &c)
    };
    let refused = |w: u32, h: u32, param: &str| {
        let (st, v) = put(w, h);
        assert_eq!(st, 400, "{w}x{h}: {v}");
        assert!(
            v["message"].as_str().is_some_and(|m| m.contains(param)),
            "{w}x{h}: {v}"
        );
    };
    // Within every limit: 6400 pixels, sides of 80, a 19200-byte RGB bitmap.
    let (st, v) = put(80, 80);
    assert_eq!(st, 200, "{v}");
    // Pixels: 10100 > 10000, read from the header.
    refused(101, 100, "-api-image-max-pixels");
    // Side: 151 > 150 either way, few pixels.
    refused(151, 10, "-api-image-max-input-side");
    refused(10, 151, "-api-image-max-input-side");
    // Decoder memory: 100x100 RGB needs 30000 bytes > 25000, within the pixels and sides.
    refused(100, 100, "-api-image-max-memory");
    // The worker is fine after each refusal.
    let (st, v) = put(80, 80);
    assert_eq!(st, 200, "{v}");
}

/// A client that opens a TCP connection to the HTTPS port and never finishes the handshake is
/// closed after `-ssl-handshake-timeout`, by a web worker and by the proxy of proxy mode alike
/// (the default, 10 s, would outlast the deadline here).
#[test]
fn a_stalled_tls_handshake_is_closed_after_its_timeout() {
    let ca = Ca::new("bkjs test CA");
    let base = free_ports(4).to_string();
    for extra in [vec![], vec!["-proxy-port", base.as_str()]] {
        let mut args = vec!["-ssl-handshake-timeout", "1s"];
        args.extend(extra);
        let s = start(&ca.leaf("server", 2020, 2040, false), &args);
        let agent = tls_agent(&ca.pem());
        ready_https(&s, &agent);
        let mut stalled = std::net::TcpStream::connect(("127.0.0.1", s.ssl_port)).expect("connect");
        // Half a ClientHello record header: the server waits for the rest.
        std::io::Write::write_all(&mut stalled, &[0x16, 0x03]).expect("write");
        let t0 = Instant::now();
        assert!(
            reads_eof(&mut stalled, Duration::from_secs(6)),
            "{args:?}: the stalled handshake was not closed\n{}",
            s.t.log()
        );
        assert!(
            t0.elapsed() >= Duration::from_millis(500),
            "{args:?}: closed before its timeout ({:?})",
            t0.elapsed()
        );
        // The server still serves.
        assert_eq!(get(&agent, s.ssl_port, "/ping", &[]).0, 200);
    }
}
