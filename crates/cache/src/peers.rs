//! Keeping the LRU caches of several servers coherent: every local write is broadcast on an nng
//! bus over TCP to the peers in `-cache-host`, which apply it to their own LRU.
//!
//! nng's bus drops messages under load by design, so loss must be detected, never trusted away:
//! each broadcast carries its origin (a random id per server start) and a per-origin sequence
//! number, and every server also sends a heartbeat with its latest sequence number every
//! `-cache-peer-heartbeat`. A receiver drops duplicates (so redundant paths are safe), and clears
//! its whole cache when it sees a gap, when a peer connection is added or removed, or when a peer
//! was silent for three heartbeats. A lost broadcast therefore leaves a stale value for at most
//! one heartbeat interval (plus delivery time) while the links work.
//!
//! Anyone who can reach the port can join an nng bus, so every frame is sealed with the cache-bus
//! key of the cluster secret ([`bkjs_base::cluster::frame`]): a frame that is not signed with it,
//! that is too old, that repeats a counter already seen or that carries this server's own origin
//! is dropped and counted (`cluster.cache.*` in `/system/stats`) before it can touch the LRU.
//! The bus does not start without a secret.

use crate::error::CacheError;
use crate::store::LruStore;
use bkjs_base::cluster::{self, Opener, Refused, Sealer, Secret};
use bkjs_base::config::Config;
use nng::options::{Options, ReconnectMaxTime, ReconnectMinTime};
use nng::{PipeEvent, Protocol, Socket};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A write to spread to the peers.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum PeerOp {
    Put(String, String),
    Incr(String, i64),
    Del(String),
    Clear,
}

/// One frame on the bus.
#[derive(Debug, Serialize, Deserialize)]
struct Frame {
    /// Origin server id.
    o: u64,
    /// Sequence number of the origin's last write (for a heartbeat) or of this write.
    s: u64,
    /// put | incr | del | clear | hb
    t: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    k: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    v: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    d: i64,
}

fn is_zero(d: &i64) -> bool {
    *d == 0
}

struct Origin {
    last: u64,
    heard: Instant,
    silent: bool,
}

struct Shared {
    store: Arc<Mutex<LruStore>>,
    origins: Mutex<HashMap<u64, Origin>>,
    heartbeat: Duration,
}

impl Shared {
    /// A peer connection came up or went down: counted in `peers`, and the cache cleared, since
    /// what was missed meanwhile is unknown.
    fn pipe(&self, up: bool) {
        let mut s = self.store.lock();
        let st = s.stats_mut();
        st.peers = if up {
            st.peers + 1
        } else {
            st.peers.saturating_sub(1)
        };
        drop(s);
        self.clear(
            if up {
                "a peer connected"
            } else {
                "a peer disconnected"
            },
            false,
        );
    }

    /// Clears the whole cache because something may have been missed, counting why.
    fn clear(&self, why: &str, gap: bool) {
        let mut s = self.store.lock();
        s.clear();
        let st = s.stats_mut();
        if gap {
            st.resyncs += 1;
        } else {
            st.reconnects += 1;
        }
        drop(s);
        tracing::info!("cache cleared: {why}");
    }
}

/// Counts a dropped frame as `cluster.cache.{why}`.
fn dropped(why: Refused) {
    cluster::count_drop("cache", why);
}

/// The running peer bus of one server.
pub(crate) struct Peers {
    socket: Socket,
    id: u64,
    /// Seals every frame this server sends (its origin is `id`).
    sealer: Arc<Sealer>,
    /// Last sequence number used; the heartbeat thread reads it.
    seq: Arc<AtomicU64>,
    /// Held while numbering and sending one broadcast, so frames leave in sequence order.
    sending: Arc<Mutex<()>>,
    drop_next: AtomicBool,
}

impl std::fmt::Debug for Peers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peers").field("id", &self.id).finish()
    }
}

impl Peers {
    /// Listens on `tcp://{cache-bind}:{cache-port}`, dials every `-cache-host` entry, and starts
    /// the receive and heartbeat threads.
    pub fn start(cfg: &Config, store: Arc<Mutex<LruStore>>) -> Result<Peers, CacheError> {
        let secret =
            Secret::require(cfg, "cache-host").map_err(|e| CacheError::Config(e.to_string()))?;
        let key = secret.key("cache-bus");
        cluster::register_drops("cache");
        let t = |e: nng::Error| CacheError::Unavailable(format!("peer bus: {e}"));
        let socket = Socket::new(Protocol::Bus0).map_err(t)?;
        socket
            .set_opt::<ReconnectMinTime>(Some(Duration::from_millis(50)))
            .map_err(t)?;
        socket
            .set_opt::<ReconnectMaxTime>(Some(Duration::from_secs(1)))
            .map_err(t)?;
        let port = cfg.int("cache-port") as u16;
        let bind = cluster::bind_address(cfg.str("cache-bind"), cfg.list("cache-host"));
        let url = format!("tcp://{bind}:{port}");
        socket.listen(&url).map_err(|e| {
            CacheError::Unavailable(format!("peer bus cannot listen on {url}: {e}"))
        })?;
        let shared = Arc::new(Shared {
            store,
            origins: Mutex::new(HashMap::new()),
            heartbeat: cfg.duration("cache-peer-heartbeat"),
        });
        let s2 = shared.clone();
        socket
            .pipe_notify(move |_pipe, event| match event {
                PipeEvent::AddPost => s2.pipe(true),
                PipeEvent::RemovePost => s2.pipe(false),
                _ => {}
            })
            .map_err(t)?;
        let sealer = Arc::new(Sealer::new(key.clone()));
        let id = sealer.origin();
        let opener = Opener::new(key, Some(id), cluster::frame_age(cfg));
        for host in cfg.list("cache-host") {
            let (h, p) = match host.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), p.parse::<u16>().unwrap_or(port)),
                None => (host.clone(), port),
            };
            let local = ["127.0.0.1", "localhost", "0.0.0.0", "::1", bind.as_str()];
            if p == port && local.contains(&h.as_str()) {
                // This server itself: nothing to dial.
                continue;
            }
            let peer = format!("tcp://{h}:{p}");
            socket.dial_async(&peer).map_err(|e| {
                CacheError::Unavailable(format!("peer bus cannot dial {peer}: {e}"))
            })?;
        }
        tracing::info!(
            "cache peer bus on {url}, node {id:016x}, peers {:?}",
            cfg.list("cache-host")
        );
        let peers = Peers {
            socket: socket.clone(),
            id,
            sealer: sealer.clone(),
            seq: Arc::new(AtomicU64::new(0)),
            sending: Arc::new(Mutex::new(())),
            drop_next: AtomicBool::new(false),
        };
        let rx_socket = socket.clone();
        let rx_shared = shared.clone();
        std::thread::Builder::new()
            .name("cache-peers".into())
            .spawn(move || receive(rx_socket, rx_shared, opener))
            .map_err(|e| CacheError::Unavailable(e.to_string()))?;
        let (hb_seq, hb_lock) = (peers.seq.clone(), peers.sending.clone());
        std::thread::Builder::new()
            .name("cache-heartbeat".into())
            .spawn(move || heartbeat(socket, shared, sealer, hb_seq, hb_lock))
            .map_err(|e| CacheError::Unavailable(e.to_string()))?;
        Ok(peers)
    }

    /// Closes the bus (its listening port too): this server is going away and a successor
    /// needs the port. Later broadcasts are dropped; the receive thread ends.
    pub(crate) fn close(&self) {
        self.socket.close();
    }

    /// Sends one write to every peer.
    pub fn broadcast(&self, op: PeerOp) {
        let _order = self.sending.lock();
        let seq = self.seq.fetch_add(1, Ordering::SeqCst) + 1;
        let (t, k, v, d) = match op {
            PeerOp::Put(k, v) => ("put", k, v, 0),
            PeerOp::Incr(k, d) => ("incr", k, String::new(), d),
            PeerOp::Del(k) => ("del", k, String::new(), 0),
            PeerOp::Clear => ("clear", String::new(), String::new(), 0),
        };
        let frame = Frame {
            o: self.id,
            s: seq,
            t: t.to_string(),
            k,
            v,
            d,
        };
        if self.drop_next.swap(false, Ordering::SeqCst) {
            tracing::warn!(
                "test fault: broadcast {seq} of node {:016x} dropped",
                self.id
            );
            return;
        }
        send(&self.socket, &self.sealer, &frame);
    }

    /// Test-only: the next broadcast is not sent (its sequence number is still used).
    pub(crate) fn drop_next(&self) {
        self.drop_next.store(true, Ordering::SeqCst);
    }
}

/// Seals and sends one frame; called under the send lock, so frames leave in counter order.
fn send(socket: &Socket, sealer: &Sealer, frame: &Frame) {
    match serde_json::to_vec(frame) {
        Ok(json) => {
            let bytes = sealer.seal(&json);
            if let Err((_, e)) = socket.send(&bytes[..]) {
                tracing::debug!("peer bus send: {e}");
            }
        }
        Err(e) => tracing::error!("peer frame: {e}"),
    }
}

fn receive(socket: Socket, shared: Arc<Shared>, mut opener: Opener) {
    // Dialers found to lead back to this server, closed once each.
    let mut closed: std::collections::HashSet<nng::Dialer> = std::collections::HashSet::new();
    loop {
        let mut msg = match socket.recv() {
            Ok(m) => m,
            Err(nng::Error::Closed) => return,
            Err(e) => {
                tracing::warn!("peer bus receive: {e}");
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        // The connection it came on, in case it turns out to lead back to this server.
        let pipe = msg.pipe();
        let opened = opener.open(&msg).map(|f| {
            (
                f.origin,
                serde_json::from_slice::<Frame>(f.payload).map_err(|e| e.to_string()),
            )
        });
        let frame = match opened {
            Ok((origin, Ok(f))) if f.o == origin => f,
            Ok((origin, other)) => {
                // Signed with the key, yet not a frame of its origin: a bug or a version skew.
                dropped(Refused::BadMac);
                tracing::warn!(
                    "peer bus: signed frame of {origin:016x} is not a valid frame: {:?}",
                    other.map(|f| f.o)
                );
                continue;
            }
            Err(Refused::OwnOrigin) => {
                dropped(Refused::OwnOrigin);
                close_dialer_to_self(&mut closed, pipe);
                continue;
            }
            Err(why) => {
                dropped(why);
                if why == Refused::Replay {
                    // Mostly the second copy of a frame: every pair of peers has two connections.
                    shared.store.lock().stats_mut().duplicates += 1;
                }
                continue;
            }
        };
        apply(&shared, frame);
    }
}

/// This server's own frame came back, so the connection it came on leads to this server itself.
fn close_dialer_to_self(
    closed: &mut std::collections::HashSet<nng::Dialer>,
    pipe: Option<nng::Pipe>,
) {
    // Our own broadcast came back: this connection leads to ourselves. Closing the
    // dialer closes its pipe and stops it reconnecting (and clearing) forever; the
    // accepted end of the same connection then closes by itself. Pipes are not closed
    // here: one may already be gone, and the nng crate panics on that (which would end
    // this thread and with it the whole peer bus).
    if let Some(d) = pipe.and_then(|p| p.dialer()) {
        if closed.insert(d) {
            tracing::info!(
                "cache peer bus: a -cache-host entry is this server itself; no longer dialling it"
            );
            if std::panic::catch_unwind(move || d.close()).is_err() {
                tracing::warn!("cache peer bus: closing the dialer to this server failed");
            }
        }
    }
}

fn apply(shared: &Shared, f: Frame) {
    let mut origins = shared.origins.lock();
    let now = Instant::now();
    let o = origins.entry(f.o).or_insert(Origin {
        last: 0,
        heard: now,
        silent: false,
    });
    let returned = std::mem::replace(&mut o.silent, false);
    o.heard = now;
    let is_hb = f.t == "hb";
    let expected = o.last + 1;
    if returned {
        o.last = f.s;
        drop(origins);
        shared.clear(&format!("peer {:016x} is back after a silence", f.o), false);
        if !is_hb {
            apply_op(shared, &f);
        }
        return;
    }
    if is_hb {
        if f.s > o.last {
            let missed = f.s - o.last;
            o.last = f.s;
            drop(origins);
            shared.clear(
                &format!(
                    "heartbeat of peer {:016x} shows {missed} lost broadcast(s)",
                    f.o
                ),
                true,
            );
        }
        return;
    }
    if f.s < expected {
        drop(origins);
        shared.store.lock().stats_mut().duplicates += 1;
        return;
    }
    let gap = f.s > expected;
    o.last = f.s;
    drop(origins);
    if gap {
        shared.clear(
            &format!(
                "broadcast {} of peer {:016x} arrived, expected {expected}",
                f.s, f.o
            ),
            true,
        );
    }
    apply_op(shared, &f);
}

fn apply_op(shared: &Shared, f: &Frame) {
    let mut s = shared.store.lock();
    match f.t.as_str() {
        "put" => s.put(&f.k, &f.v),
        "incr" => {
            s.incr(&f.k, f.d);
        }
        "del" => {
            s.del(&f.k);
        }
        "clear" => s.clear(),
        other => {
            drop(s);
            tracing::warn!("peer bus: unknown frame type {other}");
            return;
        }
    }
    s.stats_mut().applied += 1;
}

fn heartbeat(
    socket: Socket,
    shared: Arc<Shared>,
    sealer: Arc<Sealer>,
    seq: Arc<AtomicU64>,
    sending: Arc<Mutex<()>>,
) {
    let every = shared.heartbeat.max(Duration::from_millis(10));
    loop {
        std::thread::sleep(every);
        {
            // Under the send lock: a heartbeat never overtakes the broadcast it counts.
            let _order = sending.lock();
            let s = seq.load(Ordering::SeqCst);
            send(
                &socket,
                &sealer,
                &Frame {
                    o: sealer.origin(),
                    s,
                    t: "hb".into(),
                    k: String::new(),
                    v: String::new(),
                    d: 0,
                },
            );
        }
        // Peers silent for three heartbeats may be writing where we cannot hear them.
        let mut silent = Vec::new();
        {
            let mut origins = shared.origins.lock();
            origins.retain(|_, o| o.heard.elapsed() < every * 60);
            for (id, o) in origins.iter_mut() {
                if !o.silent && o.heard.elapsed() > every * 3 {
                    o.silent = true;
                    silent.push(*id);
                }
            }
        }
        for id in silent {
            shared.clear(
                &format!("peer {id:016x} silent for three heartbeats"),
                false,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared() -> Shared {
        Shared {
            store: Arc::new(Mutex::new(LruStore::new(100))),
            origins: Mutex::new(HashMap::new()),
            heartbeat: Duration::from_secs(1),
        }
    }

    fn frame(o: u64, s: u64, t: &str, k: &str, v: &str) -> Frame {
        Frame {
            o,
            s,
            t: t.into(),
            k: k.into(),
            v: v.into(),
            d: 0,
        }
    }

    fn get(sh: &Shared, k: &str) -> Option<String> {
        sh.store.lock().get(k)
    }

    #[test]
    fn in_order_frames_apply_and_duplicates_are_dropped() {
        let sh = shared();
        apply(&sh, frame(7, 1, "put", "a", "1"));
        apply(&sh, frame(7, 2, "put", "b", "2"));
        // The same broadcast again, e.g. through a relay: dropped, not re-applied.
        sh.store.lock().put("a", "local");
        apply(&sh, frame(7, 1, "put", "a", "1"));
        assert_eq!(get(&sh, "a").as_deref(), Some("local"));
        let mut f = frame(7, 3, "incr", "n", "");
        f.d = 5;
        apply(&sh, f);
        assert_eq!(get(&sh, "n").as_deref(), Some("5"));
        apply(&sh, frame(7, 4, "del", "b", ""));
        assert_eq!(get(&sh, "b"), None);
        let st = sh.store.lock().stats();
        assert_eq!((st.duplicates, st.applied, st.resyncs), (1, 4, 0));
    }

    #[test]
    fn a_gap_clears_everything_and_is_counted() {
        let sh = shared();
        apply(&sh, frame(9, 1, "put", "a", "1"));
        sh.store.lock().put("mine", "x");
        // 2 was lost: whatever it changed may be stale here, so nothing is kept.
        apply(&sh, frame(9, 3, "put", "c", "3"));
        assert_eq!(get(&sh, "a"), None);
        assert_eq!(get(&sh, "mine"), None);
        assert_eq!(
            get(&sh, "c").as_deref(),
            Some("3"),
            "the frame that revealed the gap applies"
        );
        assert_eq!(sh.store.lock().stats().resyncs, 1);
    }

    #[test]
    fn a_heartbeat_reveals_a_lost_last_broadcast() {
        let sh = shared();
        apply(&sh, frame(5, 1, "put", "a", "1"));
        apply(&sh, frame(5, 1, "hb", "", ""));
        assert_eq!(
            get(&sh, "a").as_deref(),
            Some("1"),
            "a heartbeat in step changes nothing"
        );
        apply(&sh, frame(5, 2, "hb", "", ""));
        assert_eq!(get(&sh, "a"), None, "broadcast 2 never arrived");
        assert_eq!(sh.store.lock().stats().resyncs, 1);
        // Origins are independent.
        apply(&sh, frame(6, 1, "put", "b", "1"));
        assert_eq!(get(&sh, "b").as_deref(), Some("1"));
    }
}
