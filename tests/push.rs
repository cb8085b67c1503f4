//! Push notifications through the real binary: an account registers its devices (APNs, FCM and
//! Web Push), a message with `_notify=1` reaches each of them through the durable job queue, a
//! token the service reports gone disappears from the account, a throttled send is retried,
//! bad device entries and bad credentials are refused. The three services are one fake HTTP/2
//! server over TLS (a test CA made here) speaking each service's paths; the clients' checks of
//! signatures and payloads are in crates/push.

use crate::api::{add_account, signed, Call};
use crate::harness::*;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use parking_lot::Mutex;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use serde_json::{json, Value};
use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

const FCM_KEY: &str = include_str!("../crates/push/src/testdata/fcm-test-key.pem");

/// One request the fake services received.
#[derive(Clone, Debug)]
struct Hit {
    path: String,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

#[derive(Default)]
struct Fake {
    hits: Mutex<Vec<Hit>>,
    /// Statuses to answer next, by service (`apns`, `fcm`, `webpush`); success when empty.
    answers: Mutex<HashMap<&'static str, VecDeque<u16>>>,
}

impl Fake {
    fn hits(&self, prefix: &str) -> Vec<Hit> {
        self.hits
            .lock()
            .iter()
            .filter(|h| h.path.starts_with(prefix))
            .cloned()
            .collect()
    }

    fn answer(&self, service: &'static str, status: u16) {
        self.answers
            .lock()
            .entry(service)
            .or_default()
            .push_back(status);
    }
}

fn service_of(path: &str) -> &'static str {
    if path.starts_with("/3/device/") {
        "apns"
    } else if path.starts_with("/v1/") {
        "fcm"
    } else {
        "webpush"
    }
}

/// The body a service sends with `status`.
fn body_of(service: &str, status: u16) -> String {
    match (service, status) {
        ("apns", 410) => r#"{"reason":"Unregistered","timestamp":1}"#.into(),
        ("apns", s) if s >= 400 => r#"{"reason":"TooManyRequests"}"#.into(),
        ("fcm", 404) => {
            r#"{"error":{"code":404,"status":"NOT_FOUND","details":[{"errorCode":"UNREGISTERED"}]}}"#
                .into()
        }
        ("fcm", 200) => r#"{"name":"projects/proj-1/messages/1"}"#.into(),
        ("fcm", s) => format!(r#"{{"error":{{"code":{s},"status":"RESOURCE_EXHAUSTED"}}}}"#),
        _ => String::new(),
    }
}

/// Starts the fake services (HTTP/2 over TLS with a certificate of `ca`) on a thread of their
/// own; answers the port.
fn serve(ca: &Ca, fake: Arc<Fake>) -> u16 {
    let key = KeyPair::generate().expect("key");
    let cert = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .expect("params")
        .signed_by(&key, &ca.cert, &ca.key)
        .expect("sign");
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(
        vec![cert.der().clone()],
        rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).expect("key"),
    )
    .expect("server config");
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (acceptor, fake) = (acceptor.clone(), fake.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let Ok(mut conn) = h2::server::handshake(tls).await else {
                        return;
                    };
                    while let Some(Ok((req, respond))) = conn.accept().await {
                        tokio::spawn(answer(req, respond, fake.clone()));
                    }
                });
            }
        });
    });
    port
}

async fn answer(
    req: hyper::Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<bytes::Bytes>,
    fake: Arc<Fake>,
) {
    let (parts, mut body) = req.into_parts();
    let mut data = Vec::new();
    while let Some(Ok(chunk)) = body.data().await {
        let _ = body.flow_control().release_capacity(chunk.len());
        data.extend_from_slice(&chunk);
    }
    let path = parts.uri.path().to_string();
    let headers = parts
        .headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_string()))
        .collect();
    fake.hits.lock().push(Hit {
        path: path.clone(),
        headers,
        body: data,
    });
    let (status, text) = if path == "/token" {
        (
            200,
            json!({"access_token": "at-1", "expires_in": 3600}).to_string(),
        )
    } else {
        let service = service_of(&path);
        let status = fake
            .answers
            .lock()
            .get_mut(service)
            .and_then(VecDeque::pop_front)
            .unwrap_or(if service == "webpush" { 201 } else { 200 });
        (status, body_of(service, status))
    };
    let response = hyper::Response::builder()
        .status(status)
        .body(())
        .expect("response");
    if let Ok(mut send) = respond.send_response(response, false) {
        let _ = send.send_data(bytes::Bytes::from(text), true);
    }
}

struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    fn new() -> Ca {
        let key = KeyPair::generate().expect("CA key");
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name
            .push(DnType::CommonName, "push test CA");
        let cert = p.self_signed(&key).expect("CA cert");
        Ca { cert, key }
    }
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write");
    p.display().to_string()
}

/// The parameters of all three services against the fake on `port`, files under `dir`.
fn push_args(dir: &Path, ca: &Ca, port: u16) -> Vec<String> {
    let apns = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("APNs key");
    let vapid = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("VAPID key");
    let account = json!({
        "type": "service_account", "project_id": "proj-1", "private_key": FCM_KEY,
        "client_email": "push@proj-1.iam.gserviceaccount.com",
        "token_uri": format!("https://127.0.0.1:{port}/token"),
    });
    let host = format!("127.0.0.1:{port}");
    [
        (
            "-push-apns-key-file",
            write(dir, "apns.p8", &apns.serialize_pem()),
        ),
        ("-push-apns-team-id", "TEAM123456".into()),
        ("-push-apns-key-id", "KEY1234567".into()),
        ("-push-apns-topic", "com.example.app".into()),
        ("-push-apns-host", host.clone()),
        (
            "-push-fcm-service-account",
            write(dir, "sa.json", &account.to_string()),
        ),
        ("-push-fcm-host", host),
        (
            "-push-vapid-key",
            write(dir, "vapid.pem", &vapid.serialize_pem()),
        ),
        ("-push-vapid-subject", "mailto:ops@example.com".into()),
        ("-push-ca-file", write(dir, "ca.pem", &ca.cert.pem())),
    ]
    .into_iter()
    .flat_map(|(k, v)| [k.to_string(), v])
    .collect()
}

fn get(t: &Tree, login: &str, target: &str) -> (u16, Value) {
    let secret = format!("{login}-secret");
    signed(t, &Call::get(3, login, &secret, target))
}

/// Percent-encodes everything but letters and digits.
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[test]
fn a_message_reaches_every_device_gone_tokens_are_dropped_and_throttling_is_retried() {
    let ca = Ca::new();
    let fake = Arc::new(Fake::default());
    let port = serve(&ca, fake.clone());
    let files = tempfile::tempdir().expect("dir");
    let mut args = push_args(files.path(), &ca, port);
    args.extend(
        [
            "-jobs-backoff",
            "200ms",
            "-api-allow-path",
            "^/system/stats$",
        ]
        .map(String::from),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let t = Tree::start("run", &args);
    t.ready(2);
    add_account(&t, "alice", "alice-secret", "Alice");
    let bob = add_account(&t, "bob", "bob-secret", "Bob");

    // Bob's devices: an iPhone, an Android phone and a browser.
    let ua = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("browser key");
    let sub = json!({"endpoint": format!("https://127.0.0.1:{port}/push/bob"),
        "keys": {"p256dh": URL_SAFE_NO_PAD.encode(ua.public_key_raw()),
                 "auth": URL_SAFE_NO_PAD.encode([9u8; 16])}});
    let web = format!("webpush://{}", URL_SAFE_NO_PAD.encode(sub.to_string()));
    let devices = format!("apn://0a0b0c0d,fcm://bob-fcm-token,{web}");
    let (s, v) = get(
        &t,
        "bob",
        &format!("/account/update?device_id={}", enc(&devices)),
    );
    assert_eq!(s, 200, "{v}");
    // A bad entry is a 400 naming it, and the devices stay as they were.
    let (s, v) = get(&t, "bob", "/account/update?device_id=apn%3A%2F%2Fnot-hex");
    assert_eq!(s, 400, "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap_or_default()
            .contains("device_id"),
        "{v}"
    );
    let (_, me) = get(&t, "bob", "/account/get");
    assert_eq!(me["device_id"], json!(devices));

    // A message with _notify reaches each device once.
    let (s, v) = get(
        &t,
        "alice",
        &format!("/message/add?id={bob}&msg=hello%20bob&_notify=1"),
    );
    assert_eq!(s, 200, "{v}");
    assert!(
        wait_for(Duration::from_secs(30), || {
            fake.hits("/3/device/").len() == 1
                && fake.hits("/v1/").len() == 1
                && fake.hits("/push/").len() == 1
        }),
        "one send per device: {:?}\n{}",
        fake.hits.lock().iter().map(|h| &h.path).collect::<Vec<_>>(),
        t.log()
    );
    let apns = &fake.hits("/3/device/")[0];
    assert_eq!(apns.path, "/3/device/0a0b0c0d");
    assert_eq!(apns.headers["apns-topic"], "com.example.app");
    assert!(apns.headers["authorization"].starts_with("bearer "));
    let aps: Value = serde_json::from_slice(&apns.body).expect("APNs JSON");
    assert_eq!(
        aps["aps"]["alert"],
        json!({"title": "Alice", "body": "hello bob"})
    );
    let fcm = &fake.hits("/v1/")[0];
    assert_eq!(fcm.path, "/v1/projects/proj-1/messages:send");
    assert_eq!(fcm.headers["authorization"], "Bearer at-1");
    let m: Value = serde_json::from_slice(&fcm.body).expect("FCM JSON");
    assert_eq!(m["message"]["token"], "bob-fcm-token");
    assert_eq!(m["message"]["notification"]["body"], "hello bob");
    let wp = &fake.hits("/push/")[0];
    assert_eq!(wp.headers["content-encoding"], "aes128gcm");
    assert!(wp.headers["authorization"].starts_with("vapid t="));
    assert!(
        !wp.body.windows(5).any(|w| w == b"hello"),
        "the payload is encrypted"
    );

    // APNs says the token is gone, FCM throttles once: the iPhone is dropped from the
    // account, the Android send is retried and delivered.
    fake.answer("apns", 410);
    fake.answer("fcm", 429);
    let (s, v) = get(
        &t,
        "alice",
        &format!("/message/add?id={bob}&msg=again&_notify=1"),
    );
    assert_eq!(s, 200, "{v}");
    assert!(
        wait_for(Duration::from_secs(30), || {
            let (_, me) = get(&t, "bob", "/account/get");
            me["device_id"] == json!(format!("fcm://bob-fcm-token,{web}"))
        }),
        "the gone APNs token is removed: {}",
        t.log()
    );
    assert!(
        wait_for(Duration::from_secs(30), || fake.hits("/v1/").len() == 3),
        "the throttled FCM send is retried: {:?}",
        fake.hits("/v1/").len()
    );
    let again: Value = serde_json::from_slice(&fake.hits("/v1/")[2].body).expect("JSON");
    assert_eq!(again["message"]["notification"]["body"], "again");
    assert!(wait_for(Duration::from_secs(30), || fake
        .hits("/push/")
        .len()
        == 2));
    // The third message goes to the two devices left.
    let (s, _) = get(
        &t,
        "alice",
        &format!("/message/add?id={bob}&msg=third&_notify=1"),
    );
    assert_eq!(s, 200);
    assert!(wait_for(Duration::from_secs(30), || fake
        .hits("/push/")
        .len()
        == 3
        && fake.hits("/v1/").len() == 4));
    assert_eq!(
        fake.hits("/3/device/").len(),
        2,
        "no send to the dropped token"
    );
    // A new connection with _notify tells the other account too.
    let (s, v) = get(
        &t,
        "alice",
        &format!("/connection/add?id={bob}&type=like&_notify=1"),
    );
    assert_eq!(s, 200, "{v}");
    assert!(wait_for(Duration::from_secs(30), || fake
        .hits("/v1/")
        .len()
        == 5));
    let like: Value = serde_json::from_slice(&fake.hits("/v1/")[4].body).expect("JSON");
    assert_eq!(like["message"]["data"]["type"], "connection");
    assert_eq!(like["message"]["data"]["connection"], "like");
    // The push path in /system/stats (the master's figures): 9 delivered, 1 token gone, 1
    // throttled send retried.
    let mut last = Value::Null;
    let counted = wait_for(Duration::from_secs(30), || {
        last = serde_json::from_str(&t.get("/system/stats").body).unwrap_or(Value::Null);
        last["push"] == json!({"sent": 9, "gone": 1, "retried": 1})
    });
    assert!(counted, "push figures in /system/stats: {}", last["push"]);
}

#[test]
fn a_malformed_push_key_stops_the_start_naming_the_parameter() {
    let dir = tempfile::tempdir().expect("dir");
    let key = write(
        dir.path(),
        "bad.p8",
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    );
    let home = tempfile::tempdir().expect("home");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_bkjs"))
        .args([
            "run",
            "-home",
            &home.path().display().to_string(),
            "-push-apns-key-file",
            &key,
            "-push-apns-team-id",
            "T",
            "-push-apns-key-id",
            "K",
            "-push-apns-topic",
            "t",
        ])
        .output()
        .expect("run bkjs");
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("-push-apns-key-file"), "{err}");
}
