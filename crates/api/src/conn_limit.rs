//! The per-address connection cap of a web worker, or of the proxy in proxy mode
//! (`-api-ip-conn-max`): one client address may hold at most so many open connections on one
//! worker (or proxy), so a single host cannot take every
//! connection slot with stalled requests. A connection counts from its accept until it closes;
//! the [`Slot`] it holds gives its place back when dropped.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

/// Open connections by client address.
pub struct IpConns {
    max: usize,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
    /// When a refusal was last logged: one line a second at most, however many are refused.
    logged: Mutex<Option<std::time::Instant>>,
}

/// A connection over the cap of its address (already logged and answered by [`IpConns::admit`]).
#[derive(Debug)]
pub struct Refused;

/// One counted connection; counted out when dropped.
pub struct Slot {
    ip: IpAddr,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl IpConns {
    /// At most `max` connections per address (0: no limit).
    pub fn new(max: usize) -> IpConns {
        IpConns {
            max,
            open: Default::default(),
            logged: Mutex::new(None),
        }
    }

    /// Whether a refusal may be logged now (the first, then one a second).
    pub fn should_log(&self) -> bool {
        let mut last = self.logged.lock();
        let now = std::time::Instant::now();
        if last.is_some_and(|t| now.duration_since(t) < std::time::Duration::from_secs(1)) {
            return false;
        }
        *last = Some(now);
        true
    }

    /// Admits a just-accepted connection of `who` (a web worker, the proxy): `Ok(Some(slot))`
    /// counts it, `Ok(None)` when its address is unknown (not counted), `Err(())` when its
    /// address holds `max` already. A refusal is logged (once a second) and answered with a 429
    /// on plain HTTP (best effort: a client that is not reading gets the close only); on HTTPS
    /// the plain text would not be understood, so the caller's close is the whole answer.
    pub fn admit(
        &self,
        stream: &tokio::net::TcpStream,
        secure: bool,
        who: &str,
    ) -> Result<Option<Slot>, Refused> {
        let Ok(peer) = stream.peer_addr() else {
            return Ok(None);
        };
        if let Some(slot) = self.enter(peer.ip()) {
            return Ok(Some(slot));
        }
        if self.should_log() {
            tracing::info!(
                "{} holds -api-ip-conn-max connections to the {who} already: refused (logged once a second)",
                peer.ip()
            );
        }
        if !secure {
            let _ = stream.try_write(REFUSED);
        }
        Err(Refused)
    }

    /// A slot for one more connection from `ip`, or `None` when it holds `max` already.
    pub fn enter(&self, ip: IpAddr) -> Option<Slot> {
        let mut open = self.open.lock();
        let n = open.entry(ip).or_insert(0);
        if self.max > 0 && *n >= self.max {
            return None;
        }
        *n += 1;
        Some(Slot {
            ip,
            open: self.open.clone(),
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.open.lock();
        if let Some(n) = open.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// The answer to a connection over the cap, written before it is closed.
pub const REFUSED: &[u8] = b"HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: 71\r\n\r\n{\"message\":\"too many connections from this address (-api-ip-conn-max)\"}";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_holds_at_most_max_connections_and_gets_them_back() {
        let conns = IpConns::new(2);
        let a: IpAddr = "127.0.0.1".parse().expect("ip");
        let b: IpAddr = "10.0.0.1".parse().expect("ip");
        let one = conns.enter(a).expect("first");
        let _two = conns.enter(a).expect("second");
        assert!(conns.enter(a).is_none(), "the third is over the cap");
        assert!(
            conns.enter(b).is_some(),
            "another address has its own count"
        );
        drop(one);
        assert!(
            conns.enter(a).is_some(),
            "a closed connection frees its slot"
        );
        let unlimited = IpConns::new(0);
        let held: Vec<Slot> = (0..1000).filter_map(|_| unlimited.enter(a)).collect();
        assert_eq!(held.len(), 1000);
        drop(held);
        assert!(unlimited.open.lock().is_empty(), "no entry left behind");
        assert!(conns.should_log(), "the first refusal is logged");
        assert!(!conns.should_log(), "not another in the same second");
    }

    #[test]
    fn the_refusal_is_a_complete_http_answer() {
        let text = std::str::from_utf8(REFUSED).expect("ascii");
        let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let v: serde_json::Value = serde_json::from_str(body).expect("json");
        assert!(v["message"].is_string());
    }
}
