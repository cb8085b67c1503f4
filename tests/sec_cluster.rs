//! The cluster secret (issue 17, item 1; docs/security.md "Cluster secret"): a server refuses to
//! start peers without one, and an attacker who reaches the cache peer bus or a pub/sub forwarder
//! over TCP cannot change what a node holds or forwards: unsigned, forged, stale, replayed and
//! reflected frames are dropped and counted in `/system/stats`.

use crate::api::{signed, Call};
use crate::harness::*;
use bkjs::cluster::{frame, Secret};
use nng::options::{Options, RecvTimeout, SendTimeout};
use serde_json::{json, Value};
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

const SECRET: &str = "sec-cluster-test-secret";

fn cache(t: &Tree, q: &str) -> Value {
    let r = t.get(&format!("/system/cache/{q}"));
    assert_eq!(r.status, 200, "{q}: {}", r.body);
    serde_json::from_str(&r.body).unwrap_or(Value::Null)
}

/// `cluster.CHANNEL.WHY` of `/system/stats`.
fn dropped(t: &Tree, channel: &str, why: &str) -> u64 {
    let r = t.get("/system/stats");
    assert_eq!(r.status, 200, "{}", r.body);
    let v: Value = serde_json::from_str(&r.body).expect("stats json");
    v["cluster"][channel][why]
        .as_u64()
        .unwrap_or_else(|| panic!("no cluster.{channel}.{why} in /system/stats: {}", r.body))
}

fn wait_dropped(t: &Tree, channel: &str, why: &str, at_least: u64) {
    let mut last = 0;
    assert!(
        wait_for(Duration::from_secs(15), || {
            last = dropped(t, channel, why);
            last >= at_least
        }),
        "cluster.{channel}.{why} is {last}, expected at least {at_least}\n{}",
        t.log()
    );
}

/// The top process exits with the usage code, naming `param` and the secret parameter.
fn refuses(mut t: Tree, param: &str, why: &str) {
    let code = t.wait_exit(Duration::from_secs(30));
    assert_eq!(code, Some(Some(64)), "{}", t.log());
    let log = t.log();
    assert!(log.contains(param) && log.contains(why), "{log}");
}

/// A home whose `etc/cluster.secret` (the default -cluster-secret-file) has `mode`.
fn home_with_secret(mode: u32) -> tempfile::TempDir {
    let home = tempfile::Builder::new()
        .prefix("bkjs-t")
        .tempdir()
        .expect("home");
    let etc = home.path().join("etc");
    std::fs::create_dir_all(&etc).expect("etc");
    let file = etc.join("cluster.secret");
    std::fs::write(&file, format!("{SECRET}\n")).expect("secret file");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).expect("chmod");
    home
}

#[test]
fn peers_without_a_cluster_secret_refuse_to_start() {
    let p = free_port().to_string();
    let host = format!("10.255.255.1:{p}");
    let t = Tree::start("run", &["-cache-host", &host, "-cache-port", &p]);
    refuses(t, "-cache-host", "-cluster-secret");
    let mp = free_ports(2).to_string();
    let host = format!("127.0.0.1:{mp}");
    let t = Tree::start("run", &["-msg-host", &host, "-msg-port", &mp]);
    refuses(t, "-msg-host", "-cluster-secret");
    // Too short a secret is no secret.
    let t = Tree::start(
        "run",
        &["-cache-host", "10.255.255.1", "-cluster-secret", "short"],
    );
    refuses(t, "-cluster-secret", "at least 16");
    // A secret file others can read is refused; at mode 600 it is used.
    let cp = free_port().to_string();
    let me = format!("127.0.0.1:{cp}");
    let args = [
        "-cache-host",
        &me,
        "-cache-port",
        &cp,
        "-api-allow-path",
        "^/system/",
    ];
    let mut t = Tree::spawn_in(home_with_secret(0o644), free_port(), "run", &args, |_| {});
    let code = t.wait_exit(Duration::from_secs(30));
    assert_eq!(code, Some(Some(64)), "{}", t.log());
    assert!(
        t.log().contains("-cluster-secret-file") && t.log().contains("readable by group or others"),
        "{}",
        t.log()
    );
    drop(t);
    let t = Tree::spawn_in(home_with_secret(0o600), free_port(), "run", &args, |_| {});
    t.ready(2);
    assert!(
        t.log().contains("cache peer bus on tcp://127.0.0.1:"),
        "{}",
        t.log()
    );
    assert_eq!(dropped(&t, "cache", "bad_mac"), 0);
}

/// A node whose peer bus listens on loopback (its only `-cache-host` entry is itself), and an
/// attacker's nng bus socket connected to it.
fn bus_node() -> (Tree, nng::Socket) {
    let cp = free_port().to_string();
    let me = format!("127.0.0.1:{cp}");
    let t = Tree::start(
        "run",
        &[
            "-api-allow-path",
            "^/system/cache/",
            "-api-allow-path",
            "^/system/stats$",
            "-cache-host",
            &me,
            "-cache-port",
            &cp,
            "-cache-peer-heartbeat",
            "200ms",
            "-cluster-secret",
            SECRET,
        ],
    );
    t.ready(2);
    let s = nng::Socket::new(nng::Protocol::Bus0).expect("bus");
    s.set_opt::<SendTimeout>(Some(Duration::from_secs(5)))
        .expect("send timeout");
    s.set_opt::<RecvTimeout>(Some(Duration::from_millis(200)))
        .expect("recv timeout");
    s.dial(&format!("tcp://{me}")).expect("dial the peer bus");
    assert!(
        wait_for(Duration::from_secs(10), || cache(&t, "stats")["peers"]
            == json!(1)),
        "the attacker is not connected: {}\n{}",
        cache(&t, "stats"),
        t.log()
    );
    (t, s)
}

fn send(s: &nng::Socket, bytes: &[u8]) {
    s.send(bytes).map_err(|(_, e)| e).expect("send on the bus");
}

/// A peer frame as the bus carries it (JSON, inside the sealed envelope).
fn put(origin: u64, seq: u64, k: &str, v: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({"o": origin, "s": seq, "t": "put", "k": k, "v": v})).expect("json")
}

/// The first frame the node sends the attacker whose payload satisfies `want`.
fn capture(s: &nng::Socket, want: impl Fn(&Value) -> bool) -> Vec<u8> {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        let Ok(m) = s.recv() else { continue };
        let Some(payload) = m.get(frame::HEADER..) else {
            continue;
        };
        if serde_json::from_slice::<Value>(payload).is_ok_and(|v| want(&v)) {
            return m.to_vec();
        }
    }
    panic!("the node sent no such frame");
}

#[test]
fn forged_cache_frames_are_dropped_and_counted() {
    let (t, bus) = bus_node();
    let login = unique("mallory");
    let key = format!("bk_auth|{login}");
    let row = json!({"id": "0123456789abcdef0123456789abcdef", "login": login, "secret": "pw", "type": "admin"}).to_string();
    let target = "/account/get";
    let before = signed(&t, &Call::get(3, &login, "pw", target)).0;
    assert_ne!(before, 200, "an unknown login is refused");
    let good = Secret::new(SECRET).expect("secret").key("cache-bus");
    let wrong = Secret::new("not-the-cluster-secret")
        .expect("secret")
        .key("cache-bus");
    let now = bkjs::time::now_ms();
    // The attack of issue 17: one plain JSON frame; then the same signed with a wrong key.
    send(&bus, &put(77, 1, &key, &row));
    send(
        &bus,
        &frame::seal(&wrong, 77, 1, now, &put(77, 1, &key, &row)),
    );
    wait_dropped(&t, "cache", "bad_mac", 2);
    // The refused lookup cached the login as absent (`null`); the forged row never replaced it.
    assert_eq!(
        cache(&t, &format!("get?name={key}")),
        json!({"value": "null"}),
        "{}",
        t.log()
    );
    assert_eq!(signed(&t, &Call::get(3, &login, "pw", target)).0, before);

    // Control: the same path with the cluster key does reach the cache.
    let valid = frame::seal(&good, 77, 1, now, &put(77, 1, "probe", "v1"));
    send(&bus, &valid);
    assert!(
        wait_for(Duration::from_secs(10), || cache(&t, "get?name=probe")
            == json!({"value": "v1"})),
        "a signed frame did not apply\n{}",
        t.log()
    );
    // Replayed: the very same frame after a newer local write.
    assert_eq!(cache(&t, "put?name=probe&value=v2"), json!({}));
    let replays = dropped(&t, "cache", "replay");
    send(&bus, &valid);
    wait_dropped(&t, "cache", "replay", replays + 1);
    // Too old: a new origin, but stamped ten minutes ago.
    let stale = frame::seal(&good, 78, 1, now - 600_000, &put(78, 1, "probe", "v3"));
    send(&bus, &stale);
    wait_dropped(&t, "cache", "stale", 1);
    // Reflected: the node's own broadcast of v2, sent back to it after it wrote v4.
    let own = capture(&bus, |v| v["k"] == json!("probe") && v["v"] == json!("v2"));
    assert_eq!(cache(&t, "put?name=probe&value=v4"), json!({}));
    let reflected = dropped(&t, "cache", "own_origin");
    send(&bus, &own);
    wait_dropped(&t, "cache", "own_origin", reflected + 1);
    // Frames are handled in order: a last signed frame applying means every one before it was
    // looked at, and none of the dropped ones changed anything.
    send(
        &bus,
        &frame::seal(&good, 77, 2, bkjs::time::now_ms(), &put(77, 2, "last", "1")),
    );
    assert!(
        wait_for(Duration::from_secs(10), || cache(&t, "get?name=last")
            == json!({"value": "1"})),
        "{}",
        t.log()
    );
    assert_eq!(cache(&t, "get?name=probe"), json!({"value": "v4"}));
    assert_eq!(
        cache(&t, &format!("get?name={key}")),
        json!({"value": "null"})
    );
}

#[test]
fn two_nodes_with_different_secrets_do_not_share_writes() {
    let (pa, pb) = (free_port(), free_port());
    let hosts = format!("127.0.0.1:{pa},127.0.0.1:{pb}");
    let node = |port: u16, secret: &str| {
        let port = port.to_string();
        Tree::start(
            "run",
            &[
                "-api-allow-path",
                "^/system/cache/",
                "-api-allow-path",
                "^/system/stats$",
                "-cache-host",
                &hosts,
                "-cache-port",
                &port,
                "-cluster-secret",
                secret,
            ],
        )
    };
    let a = node(pa, SECRET);
    let b = node(pb, "another-cluster-entirely");
    a.ready(2);
    b.ready(2);
    assert!(
        wait_for(Duration::from_secs(15), || cache(&b, "stats")["peers"]
            .as_u64()
            >= Some(1)),
        "{}",
        b.log()
    );
    assert_eq!(cache(&a, "put?name=k&value=from-a"), json!({}));
    // Every broadcast and heartbeat of A is refused by B.
    wait_dropped(&b, "cache", "bad_mac", 3);
    assert_eq!(cache(&b, "get?name=k"), json!({}), "{}", b.log());
}

#[test]
fn the_forwarder_drops_unsigned_publishes() {
    let mp = free_ports(2);
    let host = format!("127.0.0.1:{mp}");
    let t = Tree::start(
        "run",
        &[
            "-api-allow-path",
            "^/system/stats$",
            "-msg-host",
            &host,
            "-msg-port",
            &mp.to_string(),
            "-cluster-secret",
            SECRET,
        ],
    );
    t.ready(2);
    assert!(
        t.log().contains(&format!("tcp://127.0.0.1:{mp}")),
        "{}",
        t.log()
    );
    let sub = nng::Socket::new(nng::Protocol::Sub0).expect("sub");
    sub.set_opt::<nng::options::protocol::pubsub::Subscribe>(Vec::new())
        .expect("subscribe");
    sub.set_opt::<RecvTimeout>(Some(Duration::from_millis(200)))
        .expect("timeout");
    sub.dial(&format!("tcp://127.0.0.1:{}", mp + 1))
        .expect("dial sub");
    let push = nng::Socket::new(nng::Protocol::Push0).expect("push");
    push.set_opt::<SendTimeout>(Some(Duration::from_secs(5)))
        .expect("timeout");
    push.dial(&format!("tcp://{host}")).expect("dial push");
    let good = Secret::new(SECRET).expect("secret").key("msg");
    let wrong = Secret::new("not-the-cluster-secret")
        .expect("secret")
        .key("msg");
    let key = unique("k");
    let mut n = 0;
    // The SUB socket may connect after the first messages: repeat until the control arrives.
    let got = loop {
        n += 1;
        let now = bkjs::time::now_ms();
        send(&push, format!("{key} unsigned").as_bytes());
        send(
            &push,
            &frame::seal(&wrong, 5, n, now, format!("{key} forged").as_bytes()),
        );
        send(
            &push,
            &frame::seal(&good, 5, n, now, format!("{key} control").as_bytes()),
        );
        let deadline = Instant::now() + Duration::from_millis(500);
        let mut got = Vec::new();
        while Instant::now() < deadline {
            if let Ok(m) = sub.recv() {
                got.push(m.to_vec());
            }
        }
        if !got.is_empty() || n > 20 {
            break got;
        }
    };
    assert!(!got.is_empty(), "nothing forwarded\n{}", t.log());
    for m in &got {
        let payload = m.get(frame::HEADER..).unwrap_or_default();
        assert_eq!(
            payload,
            format!("{key} control").as_bytes(),
            "forwarded: {m:?}"
        );
    }
    wait_dropped(&t, "forwarder", "bad_mac", 2 * n);
}
