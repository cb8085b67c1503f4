//! The three clients against fake services on 127.0.0.1 speaking TLS with a test CA, checking
//! what the real services check (the JWT signature against the public key, headers, the body
//! and, for Web Push, that the browser can decrypt it) and answering success, gone, throttled,
//! failed and refused on demand; plus the RFC 8291 example byte for byte.

use super::*;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use bkjs_base::config::{registry, Args};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{HeaderMap, Version};
use hyper_util::rt::{TokioExecutor, TokioIo};
use parking_lot::Mutex;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use ring::signature::{UnparsedPublicKey, VerificationAlgorithm};
use serde_json::{json, Value};
use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};

const FCM_KEY: &str = include_str!("testdata/fcm-test-key.pem");

fn b64d(s: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD.decode(s).expect("base64url")
}

/// What the fake service received.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    version: Version,
    headers: HeaderMap,
    body: Bytes,
}

impl Seen {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }
}

/// A canned answer: status, body, extra headers.
type Answer = (u16, String, Vec<(&'static str, String)>);

#[derive(Default)]
struct State {
    seen: Mutex<Vec<Seen>>,
    /// Answers to give, in order: status, body, extra headers; 200 `{}` when empty.
    answers: Mutex<VecDeque<Answer>>,
    tokens: Mutex<u32>,
}

/// A TLS service on a free port with a certificate of the test CA.
struct Fake {
    port: u16,
    state: Arc<State>,
}

impl Fake {
    fn answer(&self, status: u16, body: &str) {
        self.answer_with(status, body, vec![]);
    }

    fn answer_with(&self, status: u16, body: &str, headers: Vec<(&'static str, String)>) {
        self.state
            .answers
            .lock()
            .push_back((status, body.to_string(), headers));
    }

    fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().clone()
    }

    fn last(&self) -> Seen {
        self.seen()
            .pop()
            .expect("a request reached the fake service")
    }
}

struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
    dir: tempfile::TempDir,
}

impl Ca {
    fn new() -> Ca {
        let key = KeyPair::generate().expect("CA key");
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name
            .push(DnType::CommonName, "push test CA");
        let cert = p.self_signed(&key).expect("CA cert");
        Ca {
            cert,
            key,
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    fn file(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).expect("write");
        p
    }

    fn ca_file(&self) -> PathBuf {
        self.file("ca.pem", &self.cert.pem())
    }

    async fn serve(&self) -> Fake {
        let key = KeyPair::generate().expect("key");
        let p = CertificateParams::new(vec!["127.0.0.1".to_string()]).expect("params");
        let cert = p.signed_by(&key, &self.cert, &self.key).expect("sign");
        let certs = vec![cert.der().clone()];
        let key = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).expect("key der");
        let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server config");
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let state = Arc::new(State::default());
        let st = state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = acceptor.clone();
                let st = st.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let svc = hyper::service::service_fn(move |req| handle(req, st.clone()));
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        Fake { port, state }
    }
}

async fn handle(
    req: hyper::Request<hyper::body::Incoming>,
    st: Arc<State>,
) -> Result<hyper::Response<Full<Bytes>>, std::convert::Infallible> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let path = parts.uri.path().to_string();
    st.seen.lock().push(Seen {
        method: parts.method.to_string(),
        path: path.clone(),
        version: parts.version,
        headers: parts.headers,
        body,
    });
    let (status, body, headers) = if path == "/token" {
        let mut n = st.tokens.lock();
        *n += 1;
        (
            200,
            json!({"access_token": format!("at-{n}"), "expires_in": 3600, "token_type": "Bearer"})
                .to_string(),
            vec![],
        )
    } else {
        st.answers
            .lock()
            .pop_front()
            .unwrap_or((200, "{}".into(), vec![]))
    };
    let mut r = hyper::Response::builder().status(status);
    for (k, v) in headers {
        r = r.header(k, v);
    }
    Ok(r.body(Full::new(Bytes::from(body))).expect("response"))
}

fn config(home: &Path, words: &[String]) -> Config {
    let reg = registry(&[crate::PARAMS]);
    let mut w = words.to_vec();
    w.extend(["-home".to_string(), home.display().to_string()]);
    let args = Args::parse(&w, &reg).expect("args");
    Config::load(&reg, &args, &HashMap::new()).expect("config")
}

fn words(w: &[&str]) -> Vec<String> {
    w.iter().map(|s| s.to_string()).collect()
}

/// Checks a JWT's signature with `public`; answers its header and claims.
fn verify_jwt(jwt: &str, alg: &'static dyn VerificationAlgorithm, public: &[u8]) -> (Value, Value) {
    let p: Vec<&str> = jwt.split('.').collect();
    assert_eq!(p.len(), 3, "{jwt}");
    UnparsedPublicKey::new(alg, public)
        .verify(format!("{}.{}", p[0], p[1]).as_bytes(), &b64d(p[2]))
        .expect("the JWT signature verifies with the public key");
    let part = |s: &str| serde_json::from_slice::<Value>(&b64d(s)).expect("JWT part is JSON");
    (part(p[0]), part(p[1]))
}

fn note() -> Notification {
    let mut data = serde_json::Map::new();
    data.insert("id".into(), json!("m1"));
    data.insert("n".into(), json!(3));
    Notification {
        title: "Hello".into(),
        body: "You have a message".into(),
        data,
        collapse_id: Some("msg-1".into()),
        urgent: true,
        ttl: Some(Duration::from_secs(3600)),
        badge: Some(2),
        sound: None,
    }
}

#[tokio::test]
async fn apns_signs_with_es256_and_maps_each_answer() {
    let ca = Ca::new();
    let apple = ca.serve().await;
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("P-256 key");
    let key_file = ca.file("AuthKey.p8", &key.serialize_pem());
    let cfg = config(
        ca.dir.path(),
        &words(&[
            "-push-apns-key-file",
            &key_file.display().to_string(),
            "-push-apns-team-id",
            "TEAM123456",
            "-push-apns-key-id",
            "KEY1234567",
            "-push-apns-topic",
            "com.example.app",
            "-push-apns-host",
            &format!("127.0.0.1:{}", apple.port),
            "-push-ca-file",
            &ca.ca_file().display().to_string(),
        ]),
    );
    let push = Push::from_config(&cfg).expect("config").expect("apns on");
    assert_eq!(push.services(), ["apn"]);
    let dev = Device::parse("apn://00ff00ff00ff").expect("device");
    push.send(&dev, &note()).await.expect("sent");
    let r = apple.last();
    assert_eq!(
        (r.method.as_str(), r.path.as_str()),
        ("POST", "/3/device/00ff00ff00ff")
    );
    assert_eq!(r.version, Version::HTTP_2, "APNs is HTTP/2 only");
    assert_eq!(r.header("apns-topic"), "com.example.app");
    assert_eq!(r.header("apns-push-type"), "alert");
    assert_eq!(r.header("apns-priority"), "10");
    assert_eq!(r.header("apns-collapse-id"), "msg-1");
    assert!(
        r.header("apns-expiration")
            .parse::<u64>()
            .expect("expiration")
            > 0
    );
    let jwt = r
        .header("authorization")
        .strip_prefix("bearer ")
        .expect("bearer");
    let (h, c) = verify_jwt(
        jwt,
        &ring::signature::ECDSA_P256_SHA256_FIXED,
        key.public_key_raw(),
    );
    assert_eq!(h, json!({"alg": "ES256", "kid": "KEY1234567"}));
    assert_eq!(c["iss"], "TEAM123456");
    assert!(c["iat"].as_u64().expect("iat") > 1_700_000_000);
    let body: Value = serde_json::from_slice(&r.body).expect("JSON body");
    assert_eq!(
        body,
        json!({"aps": {"alert": {"title": "Hello", "body": "You have a message"}, "badge": 2},
               "id": "m1", "n": 3})
    );
    // The provider token is reused, not signed anew for every send.
    push.send(&dev, &note()).await.expect("sent again");
    assert_eq!(
        apple.last().header("authorization"),
        r.header("authorization")
    );

    apple.answer(410, r#"{"reason":"Unregistered","timestamp":1}"#);
    assert!(matches!(
        push.send(&dev, &note()).await,
        Err(SendError::Gone(_))
    ));
    apple.answer(400, r#"{"reason":"BadDeviceToken"}"#);
    assert!(matches!(
        push.send(&dev, &note()).await,
        Err(SendError::Gone(_))
    ));
    apple.answer_with(
        429,
        r#"{"reason":"TooManyRequests"}"#,
        vec![("retry-after", "7".into())],
    );
    assert_eq!(
        push.send(&dev, &note()).await,
        Err(SendError::Retry {
            reason: "APNs 429 TooManyRequests".into(),
            after: Some(Duration::from_secs(7))
        })
    );
    apple.answer(500, r#"{"reason":"InternalServerError"}"#);
    assert!(push.send(&dev, &note()).await.is_err_and(|e| e.retryable()));
    apple.answer(400, r#"{"reason":"PayloadTooLarge"}"#);
    assert!(
        matches!(push.send(&dev, &note()).await, Err(SendError::Rejected(m)) if m.contains("PayloadTooLarge"))
    );
    // An expired provider token is renewed on the next send.
    apple.answer(403, r#"{"reason":"ExpiredProviderToken"}"#);
    assert!(push.send(&dev, &note()).await.is_err_and(|e| e.retryable()));
    assert_eq!(push.counters.sent.load(Ordering::Relaxed), 2);
    assert_eq!(push.counters.gone.load(Ordering::Relaxed), 2);
    assert_eq!(push.counters.retried.load(Ordering::Relaxed), 3);
    assert_eq!(push.counters.rejected.load(Ordering::Relaxed), 1);
    // A service not configured is said so, not attempted.
    let fcm = Device::parse("fcm://abc").expect("device");
    assert_eq!(
        push.send(&fcm, &note()).await,
        Err(SendError::NotConfigured("fcm"))
    );
}

#[tokio::test]
async fn fcm_exchanges_the_service_account_for_a_token_and_maps_each_answer() {
    let ca = Ca::new();
    let google = ca.serve().await;
    let token_uri = format!("https://127.0.0.1:{}/token", google.port);
    let account = json!({
        "type": "service_account",
        "project_id": "proj-1",
        "private_key_id": "k1",
        "private_key": FCM_KEY,
        "client_email": "push@proj-1.iam.gserviceaccount.com",
        "token_uri": token_uri,
    });
    let sa = ca.file("sa.json", &account.to_string());
    let cfg = config(
        ca.dir.path(),
        &words(&[
            "-push-fcm-service-account",
            &sa.display().to_string(),
            "-push-fcm-host",
            &format!("127.0.0.1:{}", google.port),
            "-push-ca-file",
            &ca.ca_file().display().to_string(),
        ]),
    );
    let push = Push::from_config(&cfg).expect("config").expect("fcm on");
    let dev = Device::parse("fcm://reg-token-1").expect("device");
    push.send(&dev, &note()).await.expect("sent");
    let seen = google.seen();
    assert_eq!(
        seen.len(),
        2,
        "a token exchange, then the message: {seen:?}"
    );
    let form: HashMap<String, String> =
        form_urlencoded::parse(&seen[0].body).into_owned().collect();
    assert_eq!(
        form["grant_type"],
        "urn:ietf:params:oauth:grant-type:jwt-bearer"
    );
    let public = jwt::Key::rs256(FCM_KEY).expect("RSA key").public().to_vec();
    let (h, c) = verify_jwt(
        &form["assertion"],
        &ring::signature::RSA_PKCS1_2048_8192_SHA256,
        &public,
    );
    assert_eq!(h, json!({"alg": "RS256", "typ": "JWT"}));
    assert_eq!(c["iss"], "push@proj-1.iam.gserviceaccount.com");
    assert_eq!(c["aud"], token_uri);
    assert_eq!(
        c["scope"],
        "https://www.googleapis.com/auth/firebase.messaging"
    );
    assert_eq!(
        c["exp"].as_u64().expect("exp") - c["iat"].as_u64().expect("iat"),
        3600
    );
    let m = &seen[1];
    assert_eq!(m.path, "/v1/projects/proj-1/messages:send");
    assert_eq!(m.header("authorization"), "Bearer at-1");
    let body: Value = serde_json::from_slice(&m.body).expect("JSON");
    assert_eq!(
        body,
        json!({"message": {"token": "reg-token-1",
            "notification": {"title": "Hello", "body": "You have a message"},
            "data": {"id": "m1", "n": "3"},
            "android": {"priority": "high", "collapse_key": "msg-1", "ttl": "3600s"}}})
    );
    // The access token is kept until it expires.
    push.send(&dev, &note()).await.expect("sent again");
    assert_eq!(*google.state.tokens.lock(), 1);

    google.answer(
        404,
        r#"{"error":{"code":404,"status":"NOT_FOUND","details":[{"errorCode":"UNREGISTERED"}]}}"#,
    );
    assert!(matches!(
        push.send(&dev, &note()).await,
        Err(SendError::Gone(_))
    ));
    google.answer_with(
        429,
        r#"{"error":{"code":429,"status":"RESOURCE_EXHAUSTED"}}"#,
        vec![("retry-after", "30".into())],
    );
    assert!(matches!(
        push.send(&dev, &note()).await,
        Err(SendError::Retry { after: Some(a), .. }) if a == Duration::from_secs(30)
    ));
    google.answer(503, r#"{"error":{"code":503,"status":"UNAVAILABLE"}}"#);
    assert!(push.send(&dev, &note()).await.is_err_and(|e| e.retryable()));
    google.answer(
        400,
        r#"{"error":{"code":400,"status":"INVALID_ARGUMENT","message":"bad data"}}"#,
    );
    assert!(
        matches!(push.send(&dev, &note()).await, Err(SendError::Rejected(m)) if m.contains("INVALID_ARGUMENT"))
    );
    // A refused access token is dropped and a new one asked for the next send.
    google.answer(401, r#"{"error":{"code":401,"status":"UNAUTHENTICATED"}}"#);
    assert!(push.send(&dev, &note()).await.is_err_and(|e| e.retryable()));
    push.send(&dev, &note())
        .await
        .expect("sent with a new token");
    assert_eq!(*google.state.tokens.lock(), 2);
    assert_eq!(google.last().header("authorization"), "Bearer at-2");
}

/// The browser's side of RFC 8291: decrypts a body with its private key and auth secret.
fn browser_decrypt(
    body: &[u8],
    ua: ring::agreement::EphemeralPrivateKey,
    ua_public: &[u8],
    auth: &[u8],
) -> Vec<u8> {
    use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM};
    let salt = &body[..16];
    assert_eq!(
        u32::from_be_bytes(body[16..20].try_into().expect("rs")),
        4096
    );
    let idlen = body[20] as usize;
    let as_public = &body[21..21 + idlen];
    let shared = ring::agreement::agree_ephemeral(
        ua,
        &ring::agreement::UnparsedPublicKey::new(&ring::agreement::ECDH_P256, as_public),
        |s| s.to_vec(),
    )
    .expect("ECDH");
    let mut info = b"WebPush: info\0".to_vec();
    info.extend_from_slice(ua_public);
    info.extend_from_slice(as_public);
    let ikm = webpush::hkdf(auth, &shared, &info, 32).expect("ikm");
    let cek = webpush::hkdf(salt, &ikm, b"Content-Encoding: aes128gcm\0", 16).expect("cek");
    let nonce = webpush::hkdf(salt, &ikm, b"Content-Encoding: nonce\0", 12).expect("nonce");
    let key = LessSafeKey::new(UnboundKey::new(&AES_128_GCM, &cek).expect("key"));
    let mut record = body[21 + idlen..].to_vec();
    let plain = key
        .open_in_place(
            Nonce::try_assume_unique_for_key(&nonce).expect("nonce"),
            Aad::empty(),
            &mut record,
        )
        .expect("the browser decrypts the payload");
    assert_eq!(
        plain.last(),
        Some(&2),
        "the last record ends with delimiter 2"
    );
    plain[..plain.len() - 1].to_vec()
}

#[tokio::test]
async fn webpush_encrypts_for_the_browser_and_signs_vapid() {
    let ca = Ca::new();
    let service = ca.serve().await;
    let vapid = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("P-256 key");
    let vapid_file = ca.file("vapid.pem", &vapid.serialize_pem());
    let cfg = config(
        ca.dir.path(),
        &words(&[
            "-push-vapid-key",
            &vapid_file.display().to_string(),
            "-push-vapid-subject",
            "mailto:ops@example.com",
            "-push-ca-file",
            &ca.ca_file().display().to_string(),
        ]),
    );
    let push = Push::from_config(&cfg)
        .expect("config")
        .expect("webpush on");
    let rng = ring::rand::SystemRandom::new();
    let ua = ring::agreement::EphemeralPrivateKey::generate(&ring::agreement::ECDH_P256, &rng)
        .expect("browser key");
    let ua_public = ua.compute_public_key().expect("public").as_ref().to_vec();
    let auth = [7u8; 16];
    let sub = json!({
        "endpoint": format!("https://127.0.0.1:{}/push/sub-1", service.port),
        "keys": {"p256dh": URL_SAFE_NO_PAD.encode(&ua_public), "auth": URL_SAFE_NO_PAD.encode(auth)},
    });
    let entry = format!("webpush://{}", URL_SAFE_NO_PAD.encode(sub.to_string()));
    let dev = Device::parse(&entry).expect("device");
    service.answer(201, "");
    push.send(&dev, &note()).await.expect("sent");
    let r = service.last();
    assert_eq!(
        (r.method.as_str(), r.path.as_str()),
        ("POST", "/push/sub-1")
    );
    assert_eq!(r.header("content-encoding"), "aes128gcm");
    assert_eq!(r.header("ttl"), "3600");
    assert_eq!(r.header("urgency"), "high");
    assert_eq!(r.header("topic"), "msg-1");
    let auth_header = r.header("authorization");
    let (t, k) = auth_header
        .strip_prefix("vapid t=")
        .and_then(|s| s.split_once(", k="))
        .expect("vapid t=..., k=...");
    assert_eq!(b64d(k), vapid.public_key_raw(), "k is our VAPID public key");
    let (h, c) = verify_jwt(t, &ring::signature::ECDSA_P256_SHA256_FIXED, &b64d(k));
    assert_eq!(h["alg"], "ES256");
    assert_eq!(c["aud"], format!("https://127.0.0.1:{}", service.port));
    assert_eq!(c["sub"], "mailto:ops@example.com");
    let exp = c["exp"].as_u64().expect("exp");
    assert!(
        exp > jwt::now_secs() && exp <= jwt::now_secs() + 24 * 3600,
        "{exp}"
    );
    let plain = browser_decrypt(&r.body, ua, &ua_public, &auth);
    assert_eq!(
        serde_json::from_slice::<Value>(&plain).expect("JSON"),
        json!({"title": "Hello", "body": "You have a message", "data": {"id": "m1", "n": 3}})
    );

    service.answer(410, "");
    assert!(matches!(
        push.send(&dev, &note()).await,
        Err(SendError::Gone(_))
    ));
    service.answer(404, "");
    assert!(matches!(
        push.send(&dev, &note()).await,
        Err(SendError::Gone(_))
    ));
    service.answer(429, "");
    assert!(push.send(&dev, &note()).await.is_err_and(|e| e.retryable()));
    service.answer(413, "too big");
    assert!(matches!(
        push.send(&dev, &note()).await,
        Err(SendError::Rejected(_))
    ));
    let mut big = note();
    big.body = "x".repeat(MAX_PLAINTEXT);
    assert!(
        matches!(push.send(&dev, &big).await, Err(SendError::Rejected(m)) if m.contains("over"))
    );
}

#[test]
fn the_rfc_8291_example_encrypts_byte_for_byte() {
    // RFC 8291 appendix A: the application server's ECDH secret with the browser, the keys,
    // the salt and the resulting body.
    let body = webpush::seal(
        &b64d("kyrL1jIIOHEzg3sM2ZWRHDRB62YACZhhSlknJ672kSs"),
        &b64d("BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4"),
        &b64d("BP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A8"),
        &b64d("BTBZMqHH6r4Tts7J_aSIgg"),
        &b64d("DGv6ra1nlYgDCS1FRnbzlw").try_into().expect("16 bytes"),
        b"When I grow up, I want to be a watermelon",
    )
    .expect("seal");
    assert_eq!(
        URL_SAFE_NO_PAD.encode(body),
        "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A_yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN"
    );
}

#[test]
fn devices_parse_and_a_gone_entry_is_removed() {
    let sub = json!({"endpoint": "https://push.example/x", "keys": {
        "p256dh": "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4",
        "auth": "BTBZMqHH6r4Tts7J_aSIgg"}})
    .to_string();
    let value = format!("apn://ABCDEF01, fcm://tok-2,{sub}");
    let all: Vec<Device> = Device::parse_list(&value)
        .into_iter()
        .map(|d| d.expect("valid"))
        .collect();
    assert_eq!(
        all.iter().map(|d| d.service).collect::<Vec<_>>(),
        [Service::Apns, Service::Fcm, Service::WebPush]
    );
    assert_eq!(
        all[2].subscription.as_ref().expect("sub").endpoint,
        "https://push.example/x"
    );
    assert_eq!(
        remove_entry(&value, "fcm://tok-2"),
        format!("apn://ABCDEF01,{sub}")
    );
    assert_eq!(remove_entry("apn://AB", "apn://AB"), "");
    for (bad, says) in [
        ("apn://xyz", "hexadecimal"),
        ("sms://123", "unknown push service"),
        ("token-without-service", "SERVICE://TOKEN"),
        ("fcm://", "empty"),
        (
            r#"{"endpoint":"http://push.example/x","keys":{}}"#,
            "https://",
        ),
        (
            r#"{"endpoint":"https://p.example/x","keys":{"p256dh":"AAAA","auth":"BTBZMqHH6r4Tts7J_aSIgg"}}"#,
            "p256dh",
        ),
    ] {
        let e = Device::parse(bad).expect_err(bad);
        assert!(e.contains(says), "{bad}: {e}");
    }
}

#[test]
fn bad_credentials_stop_the_start_naming_the_parameter() {
    let dir = tempfile::tempdir().expect("dir");
    let cfg = config(dir.path(), &[]);
    assert!(Push::from_config(&cfg)
        .expect("nothing configured")
        .is_none());
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a key").expect("write");
    let ec = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let ec_file = dir.path().join("ec.pem");
    std::fs::write(&ec_file, ec.serialize_pem()).expect("write");
    let sa = dir.path().join("sa.json");
    std::fs::write(
        &sa,
        json!({"project_id": "p", "client_email": "e", "private_key": ec.serialize_pem()})
            .to_string(),
    )
    .expect("write");
    let j = junk.display().to_string();
    let e = ec_file.display().to_string();
    let s = sa.display().to_string();
    for (w, says) in [
        (
            vec![
                "-push-apns-key-file",
                &j,
                "-push-apns-team-id",
                "T",
                "-push-apns-key-id",
                "K",
                "-push-apns-topic",
                "t",
            ],
            "-push-apns-key-file",
        ),
        (
            vec![
                "-push-apns-key-file",
                &e,
                "-push-apns-key-id",
                "K",
                "-push-apns-topic",
                "t",
            ],
            "-push-apns-team-id is required",
        ),
        (
            vec!["-push-apns-key-file", "/nonexistent/k.p8"],
            "-push-apns-key-file /nonexistent/k.p8",
        ),
        (vec!["-push-fcm-service-account", &j], "not JSON"),
        (vec!["-push-fcm-service-account", &s], "not an RSA"),
        (
            vec!["-push-vapid-key", &e],
            "-push-vapid-subject is required",
        ),
        (
            vec!["-push-vapid-key", &e, "-push-vapid-subject", "ops"],
            "mailto:",
        ),
        (
            vec!["-push-vapid-key", &j, "-push-vapid-subject", "mailto:a@b"],
            "-push-vapid-key",
        ),
    ] {
        let cfg = config(dir.path(), &words(&w));
        let err = Push::from_config(&cfg)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains(says), "{w:?}: {err:?}");
    }
}

#[tokio::test]
async fn a_service_that_never_answers_is_a_retry_after_the_timeout() {
    let ca = Ca::new();
    // Accepts TCP and never speaks.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = silent.local_addr().expect("addr").port();
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let key_file = ca.file("k.p8", &key.serialize_pem());
    let cfg = config(
        ca.dir.path(),
        &words(&[
            "-push-apns-key-file",
            &key_file.display().to_string(),
            "-push-apns-team-id",
            "T",
            "-push-apns-key-id",
            "K",
            "-push-apns-topic",
            "t",
            "-push-apns-host",
            &format!("127.0.0.1:{port}"),
            "-push-timeout",
            "300ms",
        ]),
    );
    let push = Push::from_config(&cfg).expect("config").expect("on");
    let r = push
        .send(&Device::parse("apn://ab").expect("dev"), &note())
        .await;
    assert!(
        matches!(&r, Err(SendError::Retry { reason, .. }) if reason.contains("no answer")),
        "{r:?}"
    );
    drop(silent);
}
