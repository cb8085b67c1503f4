//! The pub/sub front against every backend for real: an in-process nng forwarder (ipc:// and
//! TCP, and libnng sockets on the other end), and the Redis, RabbitMQ and NATS servers on
//! 127.0.0.1 (skipped when absent, failing under CI=true).

use super::*;
use bkjs_base::config::{registry, Args};
use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

struct Home(std::path::PathBuf);

impl Home {
    fn new() -> Home {
        static N: AtomicU64 = AtomicU64::new(0);
        let p = std::env::temp_dir().join(format!(
            "bkjs-msg-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(p.join("var")).expect("home");
        Home(p)
    }
}

impl Drop for Home {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn cfg(home: &Home, words: &[&str]) -> Config {
    let reg = registry(&[bkjs_ipc::PARAMS, crate::PARAMS, bkjs_base::cluster::PARAMS]);
    let mut w: Vec<String> = words.iter().map(|s| s.to_string()).collect();
    w.extend(["-home".to_string(), home.0.display().to_string()]);
    let args = Args::parse(&w, &reg).expect("args");
    Config::load(&reg, &args, &HashMap::new()).expect("config")
}

fn service(name: &str, port: u16) -> bool {
    bkjs_base::testing::service_up(port, name)
}

fn key(what: &str) -> String {
    format!(
        "t{what}{:08x}:{}",
        rand::random::<u32>(),
        std::process::id()
    )
}

/// Publishes `probe` messages on `pub_` until `sub` has one (the subscription reached the
/// backend), then drains what else arrived.
async fn settle(p: &PubSub, k: &str, sub: &mut Subscription) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        p.publish(k, "probe").await.ok();
        if let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(100), sub.recv()).await {
            assert_eq!(m.key, k);
            break;
        }
        assert!(Instant::now() < deadline, "no message on {k} within 15 s");
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    while sub.try_recv().is_some() {}
}

async fn next(sub: &mut Subscription) -> Message {
    tokio::time::timeout(Duration::from_secs(5), sub.recv())
        .await
        .expect("a message within 5 s")
        .expect("subscription open")
}

/// What every backend must do, with two fronts `a` and `b` that may be two nodes.
async fn conformance(a: PubSub, b: PubSub) {
    let k1 = key("a");
    let k2 = key("b");
    let mut b1 = b.subscribe(&k1).expect("subscribe");
    let mut b2 = b.subscribe(&k2).expect("subscribe");
    let mut a1 = a.subscribe(&k1).expect("subscribe");
    settle(&a, &k1, &mut b1).await;
    settle(&b, &k2, &mut b2).await;
    while a1.try_recv().is_some() {}
    for i in 0..5 {
        a.publish(&k1, &format!(r#"{{"n":{i}}}"#))
            .await
            .expect("publish");
    }
    for i in 0..5 {
        let m = next(&mut b1).await;
        assert_eq!(
            (m.key.as_str(), m.data),
            (k1.as_str(), format!(r#"{{"n":{i}}}"#))
        );
        let m = next(&mut a1).await;
        assert_eq!(
            m.data,
            format!(r#"{{"n":{i}}}"#),
            "the publisher's own subscriber gets it too"
        );
    }
    assert!(b2.try_recv().is_none(), "no message of another key");
    b.publish(&k2, "two").await.expect("publish");
    assert_eq!(next(&mut b2).await.data, "two");
    // Two local subscribers of one key both get each message; dropping one keeps the other.
    let mut b1bis = b.subscribe(&k1).expect("subscribe");
    a.publish(&k1, "x").await.expect("publish");
    assert_eq!(next(&mut b1).await.data, "x");
    assert_eq!(next(&mut b1bis).await.data, "x");
    drop(b1bis);
    a.publish(&k1, "y").await.expect("publish");
    assert_eq!(next(&mut b1).await.data, "y");
    let st = b.stats();
    assert_eq!((st.keys, st.subscribers), (2, 2), "{st:?}");
    // Unsubscribing ends the local subscribers' streams.
    b.unsubscribe(&k1);
    assert!(
        tokio::time::timeout(Duration::from_secs(2), b1.recv())
            .await
            .expect("ends")
            .is_none()
            || b1.recv().await.is_none()
    );
    assert_eq!(b.stats().keys, 1);
    drop(b2);
    assert_eq!(b.stats().keys, 0);
    // Bad keys are refused before anything is sent.
    for bad in ["", "a b", "a..b", ".a", "a*", &"k".repeat(300)] {
        assert!(
            matches!(a.publish(bad, "x").await, Err(MsgError::BadKey(_))),
            "{bad:?}"
        );
        assert!(
            matches!(a.subscribe(bad), Err(MsgError::BadKey(_))),
            "{bad:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nng_over_ipc_through_the_forwarder() {
    let home = Home::new();
    let c = cfg(&home, &[]);
    let _fwd = Forwarder::start(&c).expect("forwarder").expect("nng");
    let a = PubSub::start(&c).await.expect("a");
    let b = PubSub::start(&c).await.expect("b");
    conformance(a, b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nng_across_two_nodes_over_tcp() {
    let ports: Vec<u16> = (0..2)
        .map(|_| {
            // Two consecutive free ports per node (publishers on P, subscribers on P+1).
            loop {
                let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
                let p = l.local_addr().expect("addr").port();
                if p < 65000 && std::net::TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
                    return p;
                }
            }
        })
        .collect();
    let hosts = format!("127.0.0.1:{},127.0.0.1:{}", ports[0], ports[1]);
    let (h1, h2) = (Home::new(), Home::new());
    let c1 = cfg(
        &h1,
        &[
            "-msg-host",
            &hosts,
            "-msg-port",
            &ports[0].to_string(),
            "-msg-bind",
            "127.0.0.1",
            "-cluster-secret",
            "0123456789abcdef-test",
        ],
    );
    let c2 = cfg(
        &h2,
        &[
            "-msg-host",
            &hosts,
            "-msg-port",
            &ports[1].to_string(),
            "-msg-bind",
            "127.0.0.1",
            "-cluster-secret",
            "0123456789abcdef-test",
        ],
    );
    let _f1 = Forwarder::start(&c1).expect("forwarder 1").expect("nng");
    let _f2 = Forwarder::start(&c2).expect("forwarder 2").expect("nng");
    let a = PubSub::start(&c1).await.expect("a");
    let b = PubSub::start(&c2).await.expect("b");
    conformance(a, b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nng_forwarder_speaks_to_libnng_sockets() {
    use ::nng::options::protocol::pubsub::Subscribe;
    use ::nng::options::{Options, RecvTimeout};
    let home = Home::new();
    let c = cfg(&home, &[]);
    let fwd = Forwarder::start(&c).expect("forwarder").expect("nng");
    let (push_path, sub_path) = nng::ipc_paths(&c);
    let k = key("n");
    // A libnng subscriber gets what our native publisher sends.
    let sub = ::nng::Socket::new(::nng::Protocol::Sub0).expect("sub");
    sub.set_opt::<RecvTimeout>(Some(Duration::from_millis(200)))
        .expect("timeout");
    sub.set_opt::<Subscribe>(format!("{k} ").into_bytes())
        .expect("subscribe");
    sub.dial(&format!("ipc://{}", sub_path.display()))
        .expect("dial");
    let p = PubSub::start(&c).await.expect("pubsub");
    let deadline = Instant::now() + Duration::from_secs(10);
    let got = loop {
        p.publish(&k, "hello").await.expect("publish");
        let s = sub.clone();
        match tokio::task::spawn_blocking(move || s.recv())
            .await
            .expect("recv")
        {
            Ok(m) => break m,
            Err(_) => assert!(Instant::now() < deadline, "libnng SUB got nothing"),
        }
    };
    assert_eq!(&got[..], format!("{k} hello").as_bytes());
    // Our native subscriber gets what a libnng PUSH socket sends.
    let mut mine = p.subscribe(&k).expect("subscribe");
    let push = ::nng::Socket::new(::nng::Protocol::Push0).expect("push");
    push.dial(&format!("ipc://{}", push_path.display()))
        .expect("dial");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        push.send(format!("{k} from-libnng").as_bytes())
            .map_err(|(_, e)| e)
            .expect("send");
        if let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(100), mine.recv()).await {
            if m.data == "from-libnng" {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "native SUB got nothing from libnng PUSH"
        );
    }
    assert!(fwd.stats().received.load(Ordering::Relaxed) >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nng_publisher_without_forwarder_queues_then_delivers() {
    let home = Home::new();
    let c = cfg(&home, &[]);
    let p = PubSub::start(&c).await.expect("pubsub");
    let k = key("q");
    let mut s = p.subscribe(&k).expect("subscribe");
    // No forwarder yet: publishing is accepted (queued) and nothing arrives.
    p.publish(&k, "early").await.expect("queued");
    assert!(tokio::time::timeout(Duration::from_millis(200), s.recv())
        .await
        .is_err());
    // The forwarder comes up; the connections are made by themselves.
    let _fwd = Forwarder::start(&c).expect("forwarder").expect("nng");
    settle(&p, &k, &mut s).await;
    p.publish(&k, "late").await.expect("publish");
    assert_eq!(next(&mut s).await.data, "late");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_backend() {
    if !service("Redis", 6379) {
        return;
    }
    let home = Home::new();
    let c = cfg(&home, &["-msg-type", "redis"]);
    let a = PubSub::start(&c).await.expect("a");
    let b = PubSub::start(&c).await.expect("b");
    assert!(a.describe().starts_with("redis"));
    conformance(a, b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_backend() {
    if !service("RabbitMQ", 5672) {
        return;
    }
    let home = Home::new();
    let exchange = format!("bkjs-test-{}", std::process::id());
    let c = cfg(
        &home,
        &["-msg-type", "amqp", "-msg-amqp-exchange", &exchange],
    );
    let a = PubSub::start(&c).await.expect("a");
    let b = PubSub::start(&c).await.expect("b");
    assert!(!a.describe().contains("guest:guest"), "no password in logs");
    conformance(a, b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_backend() {
    if !service("NATS", 4222) {
        return;
    }
    let home = Home::new();
    let c = cfg(&home, &["-msg-type", "nats"]);
    let a = PubSub::start(&c).await.expect("a");
    let b = PubSub::start(&c).await.expect("b");
    conformance(a, b).await;
}

#[tokio::test]
async fn unreachable_backends_fail_publish_not_start() {
    let home = Home::new();
    for words in [
        ["-msg-type", "redis", "-redis-host", "127.0.0.1:1"],
        ["-msg-type", "nats", "-nats-host", "nats://127.0.0.1:1"],
        [
            "-msg-type",
            "amqp",
            "-amqp-host",
            "amqp://guest:guest@127.0.0.1:1/%2f",
        ],
    ] {
        let c = cfg(&home, &words);
        let p = PubSub::start(&c)
            .await
            .expect("starts while the service is away");
        let r = p.publish("k", "x").await;
        assert!(
            matches!(r, Err(MsgError::Unavailable(_))),
            "{words:?}: {r:?}"
        );
    }
    let c = cfg(&home, &["-msg-type", "amqp", "-amqp-host", "http://nope"]);
    assert!(matches!(PubSub::start(&c).await, Err(MsgError::Config(_))));
    let c = cfg(&home, &["-msg-host", "h:notaport"]);
    assert!(matches!(PubSub::start(&c).await, Err(MsgError::Config(_))));
}

#[test]
fn keys_every_backend_can_carry() {
    for ok in ["a", "0123abcdef", "account:x@y", "a.b.c", "A-B_c"] {
        assert!(check_key(ok).is_ok(), "{ok}");
    }
    for bad in ["", " ", "a b", "a\nb", "a..b", "a.", ".a", "a>", "a*", "é"] {
        assert!(check_key(bad).is_err(), "{bad:?}");
    }
}

/// Two consecutive free TCP ports (a forwarder's publish and subscribe sides).
fn port_pair() -> u16 {
    loop {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let p = l.local_addr().expect("addr").port();
        if p < 65000 && std::net::TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
            return p;
        }
    }
}

#[test]
fn forwarders_on_tcp_need_a_cluster_secret() {
    let home = Home::new();
    let port = port_pair().to_string();
    let host = format!("127.0.0.1:{port}");
    let c = cfg(&home, &["-msg-host", &host, "-msg-port", &port]);
    match Forwarder::start(&c) {
        Err(MsgError::Config(m)) => assert!(
            m.contains("-msg-host") && m.contains("-cluster-secret"),
            "{m}"
        ),
        other => panic!("started without a secret: {:?}", other.map(|f| f.is_some())),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tcp_forwarder_drops_unsigned_forged_and_replayed_publishes() {
    use ::nng::options::{Options, SendTimeout};
    use bkjs_base::cluster::{frame, Secret};
    let home = Home::new();
    let port = port_pair();
    let host = format!("127.0.0.1:{port}");
    let secret = "0123456789abcdef-test";
    let c = cfg(
        &home,
        &[
            "-msg-host",
            &host,
            "-msg-port",
            &port.to_string(),
            "-cluster-secret",
            secret,
        ],
    );
    let fwd = Forwarder::start(&c).expect("forwarder").expect("nng");
    let p = PubSub::start(&c).await.expect("pubsub");
    let k = key("f");
    let mut mine = p.subscribe(&k).expect("subscribe");
    // The node's own publisher (sealed) gets through: the subscriber is connected.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        p.publish(&k, "ok").await.expect("publish");
        if let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(100), mine.recv()).await {
            assert_eq!(m.data, "ok");
            break;
        }
        assert!(Instant::now() < deadline, "sealed publish not delivered");
    }
    while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(200), mine.recv()).await {}
    let push = ::nng::Socket::new(::nng::Protocol::Push0).expect("push");
    push.set_opt::<SendTimeout>(Some(Duration::from_secs(5)))
        .expect("timeout");
    push.dial(&format!("tcp://{host}")).expect("dial");
    let send = |b: Vec<u8>| push.send(&b[..]).map_err(|(_, e)| e).expect("send");
    let good = Secret::new(secret).expect("secret").key("msg");
    let wrong = Secret::new("another-secret-of-16")
        .expect("secret")
        .key("msg");
    let now = bkjs_base::time::now_ms();
    let valid = frame::seal(&good, 42, 7, now, format!("{k} signed").as_bytes());
    send(format!("{k} unsigned").into_bytes());
    send(frame::seal(
        &wrong,
        42,
        1,
        now,
        format!("{k} wrong-key").as_bytes(),
    ));
    send(frame::seal(
        &good,
        42,
        1,
        now - 3_600_000,
        format!("{k} stale").as_bytes(),
    ));
    send(valid.clone());
    send(valid.clone());
    send(frame::seal(
        &good,
        42,
        3,
        now,
        format!("{k} old-counter").as_bytes(),
    ));
    send(frame::seal(
        &good,
        42,
        8,
        now,
        format!("{k} last").as_bytes(),
    ));
    let mut got = Vec::new();
    while got.last().map(String::as_str) != Some("last") {
        match tokio::time::timeout(Duration::from_secs(10), mine.recv()).await {
            Ok(Some(m)) => got.push(m.data),
            _ => panic!("got only {got:?}"),
        }
    }
    assert_eq!(got, ["signed", "last"]);
    assert_eq!(fwd.stats().refused.load(Ordering::Relaxed), 5);
}
