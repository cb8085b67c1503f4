//! Signed cluster frames: what a server sends to another one over TCP is sealed with a key of the
//! cluster secret, and what it receives is opened, and dropped unless it is authentic, fresh and
//! new.
//!
//! A sealed frame is `TAG(32) VERSION(1) ORIGIN(8) COUNTER(8) TIME(8) PAYLOAD`: the tag is the
//! HMAC-SHA256 of every byte after it, the origin a random id of the sending process (new at
//! every start), the counter numbers that origin's frames from 1 in the order they are sent, and
//! the time is the sender's clock in milliseconds. [`Opener::open`] verifies the tag in constant
//! time, then refuses a frame of its own origin, a frame older or newer than the allowed age,
//! and a frame whose counter it has already passed for that origin (a replay, or the second copy
//! of a frame that came over two connections). Origins are remembered for twice the allowed age
//! after their last frame, so a frame recorded earlier is refused either as too old or as seen.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Bytes of the tag.
pub const TAG: usize = 32;
/// Bytes before the payload.
pub const HEADER: usize = TAG + 1 + 8 + 8 + 8;
/// The format version, authenticated with the rest.
const VERSION: u8 = 1;

/// A key derived from the cluster secret for one use.
#[derive(Clone, PartialEq, Eq)]
pub struct Key([u8; 32]);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(***)")
    }
}

impl Key {
    /// A key of the first 32 bytes of `bytes` (zero-padded when shorter).
    pub fn new(bytes: &[u8]) -> Key {
        let mut k = [0u8; 32];
        let n = bytes.len().min(32);
        k[..n].copy_from_slice(&bytes[..n]);
        Key(k)
    }

    fn mac(&self) -> Hmac<Sha256> {
        <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0).expect("HMAC takes keys of any length")
    }
}

/// Seals `payload` as the frame `counter` of `origin` sent at `time_ms`. Senders use
/// [`Sealer`]; this is for tests that need a particular frame.
pub fn seal(key: &Key, origin: u64, counter: u64, time_ms: i64, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; TAG];
    out.reserve(HEADER - TAG + payload.len());
    out.push(VERSION);
    out.extend_from_slice(&origin.to_be_bytes());
    out.extend_from_slice(&counter.to_be_bytes());
    out.extend_from_slice(&time_ms.to_be_bytes());
    out.extend_from_slice(payload);
    let tag = key.mac().chain_update(&out[TAG..]).finalize().into_bytes();
    out[..TAG].copy_from_slice(&tag);
    out
}

/// The sending side of one origin: numbers and seals frames. Frames must leave in the order they
/// are sealed (the caller seals under the lock it sends under), or the receivers refuse the ones
/// overtaken as replays.
#[derive(Debug)]
pub struct Sealer {
    key: Key,
    origin: u64,
    counter: AtomicU64,
}

impl Sealer {
    /// A sealer of a new random origin (never 0).
    pub fn new(key: Key) -> Sealer {
        let origin = loop {
            let o: u64 = rand::random();
            if o != 0 {
                break o;
            }
        };
        Sealer::with_origin(key, origin)
    }

    pub fn with_origin(key: Key, origin: u64) -> Sealer {
        Sealer {
            key,
            origin,
            counter: AtomicU64::new(0),
        }
    }

    pub fn origin(&self) -> u64 {
        self.origin
    }

    /// `payload` sealed as this origin's next frame, stamped now.
    pub fn seal(&self, payload: &[u8]) -> Vec<u8> {
        let n = self.counter.fetch_add(1, Ordering::SeqCst) + 1;
        seal(&self.key, self.origin, n, crate::time::now_ms(), payload)
    }
}

/// Why a frame was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Too short, another version, or a tag that does not match: not from a holder of the key.
    BadMac,
    /// Sent by this very process (its own frame came back).
    OwnOrigin,
    /// Its time is further from now than the allowed age.
    Stale,
    /// Its counter is not above the last one seen from its origin.
    Replay,
}

impl Refused {
    /// The name of the counter of such drops (`cluster.GROUP.NAME` in `/system/stats`).
    pub fn name(self) -> &'static str {
        match self {
            Refused::BadMac => "bad_mac",
            Refused::OwnOrigin => "own_origin",
            Refused::Stale => "stale",
            Refused::Replay => "replay",
        }
    }
}

/// A frame that passed every check.
#[derive(Debug, PartialEq, Eq)]
pub struct Opened<'a> {
    pub origin: u64,
    pub counter: u64,
    pub payload: &'a [u8],
}

/// The receiving side: checks frames and remembers the last counter of every origin.
#[derive(Debug)]
pub struct Opener {
    key: Key,
    me: Option<u64>,
    max_age: Duration,
    /// Origin → (last counter, when its last frame arrived).
    seen: HashMap<u64, (u64, Instant)>,
    pruned: Instant,
}

impl Opener {
    /// Opens frames sealed with `key`, refusing those of origin `me` and those further than
    /// `max_age` from now.
    pub fn new(key: Key, me: Option<u64>, max_age: Duration) -> Opener {
        Opener {
            key,
            me,
            max_age,
            seen: HashMap::new(),
            pruned: Instant::now(),
        }
    }

    /// Checks `bytes` against the key, the origin, the clock and the counters seen so far.
    pub fn open<'a>(&mut self, bytes: &'a [u8]) -> Result<Opened<'a>, Refused> {
        self.open_at(bytes, crate::time::now_ms(), Instant::now())
    }

    /// [`Opener::open`] with the clock readings given: the millisecond wall clock the frame's
    /// time is compared with and the instant its origin is remembered at. Public for the fuzz
    /// target (`fuzz/fuzz_targets/cluster_frame.rs`), which drives the clock.
    #[doc(hidden)]
    pub fn open_at<'a>(
        &mut self,
        bytes: &'a [u8],
        now_ms: i64,
        now: Instant,
    ) -> Result<Opened<'a>, Refused> {
        if bytes.len() < HEADER || bytes[TAG] != VERSION {
            return Err(Refused::BadMac);
        }
        self.key
            .mac()
            .chain_update(&bytes[TAG..])
            .verify_slice(&bytes[..TAG])
            .map_err(|_| Refused::BadMac)?;
        let word = |at: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&bytes[at..at + 8]);
            w
        };
        let origin = u64::from_be_bytes(word(TAG + 1));
        let counter = u64::from_be_bytes(word(TAG + 9));
        let time = i64::from_be_bytes(word(TAG + 17));
        if self.me == Some(origin) {
            return Err(Refused::OwnOrigin);
        }
        let age = now_ms.saturating_sub(time).unsigned_abs();
        if age > self.max_age.as_millis() as u64 {
            return Err(Refused::Stale);
        }
        if now.saturating_duration_since(self.pruned) > self.max_age {
            let keep = self.max_age * 2;
            self.seen
                .retain(|_, (_, at)| now.saturating_duration_since(*at) <= keep);
            self.pruned = now;
        }
        match self.seen.get_mut(&origin) {
            Some((last, _)) if counter <= *last => return Err(Refused::Replay),
            Some((last, at)) => {
                *last = counter;
                *at = now;
            }
            None => {
                self.seen.insert(origin, (counter, now));
            }
        }
        Ok(Opened {
            origin,
            counter,
            payload: &bytes[HEADER..],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> Key {
        Key::new(&[b; 32])
    }

    fn opener() -> Opener {
        Opener::new(key(1), Some(99), Duration::from_secs(60))
    }

    #[test]
    fn a_sealed_frame_opens_once() {
        let s = Sealer::with_origin(key(1), 7);
        let mut o = opener();
        let f1 = s.seal(b"put a");
        let f2 = s.seal(b"put b");
        let got = o.open(&f1).expect("first");
        assert_eq!(
            (got.origin, got.counter, got.payload),
            (7, 1, &b"put a"[..])
        );
        assert_eq!(o.open(&f2).expect("second").payload, b"put b");
        assert_eq!(o.open(&f1), Err(Refused::Replay), "an old counter");
        assert_eq!(o.open(&f2), Err(Refused::Replay), "the same frame again");
        // Origins are independent.
        let other = Sealer::with_origin(key(1), 8);
        assert!(o.open(&other.seal(b"x")).is_ok());
    }

    #[test]
    fn tampered_unsigned_and_foreign_frames_are_refused() {
        let mut o = opener();
        let good = seal(
            &key(1),
            7,
            1,
            crate::time::now_ms(),
            b"put bk_auth|admin {}",
        );
        for i in [0, TAG, TAG + 1, TAG + 9, TAG + 17, good.len() - 1] {
            let mut bad = good.clone();
            bad[i] ^= 1;
            assert_eq!(o.open(&bad), Err(Refused::BadMac), "byte {i} flipped");
        }
        let mut longer = good.clone();
        longer.push(b'!');
        assert_eq!(o.open(&longer), Err(Refused::BadMac));
        assert_eq!(o.open(&good[..HEADER - 1]), Err(Refused::BadMac));
        assert_eq!(
            o.open(br#"{"o":1,"s":1,"t":"put","k":"bk_auth|x","v":"{}"}"#),
            Err(Refused::BadMac)
        );
        let wrong = seal(&key(2), 7, 1, crate::time::now_ms(), b"put x");
        assert_eq!(o.open(&wrong), Err(Refused::BadMac), "another key");
        // None of these moved the counter of origin 7.
        assert!(o.open(&good).is_ok());
    }

    #[test]
    fn own_stale_and_future_frames_are_refused() {
        let mut o = opener();
        let now = crate::time::now_ms();
        assert_eq!(
            o.open(&seal(&key(1), 99, 1, now, b"x")),
            Err(Refused::OwnOrigin)
        );
        assert_eq!(
            o.open(&seal(&key(1), 5, 1, now - 61_000, b"x")),
            Err(Refused::Stale)
        );
        assert_eq!(
            o.open(&seal(&key(1), 5, 2, now + 61_000, b"x")),
            Err(Refused::Stale)
        );
        assert!(o.open(&seal(&key(1), 5, 3, now - 59_000, b"x")).is_ok());
    }

    #[test]
    fn origins_are_remembered_while_their_frames_could_still_be_fresh() {
        let mut o = Opener::new(key(1), None, Duration::from_secs(1));
        let t0 = Instant::now();
        let now = crate::time::now_ms();
        let f = seal(&key(1), 5, 3, now, b"x");
        assert!(o.open_at(&f, now, t0).is_ok());
        // 1.5 s later the frame is stale anyway; its origin is still known.
        let later = t0 + Duration::from_millis(1500);
        assert_eq!(o.open_at(&f, now + 900, later), Err(Refused::Replay));
        assert_eq!(o.open_at(&f, now + 1500, later), Err(Refused::Stale));
        // Forgotten only once nothing it sent can be fresh.
        let much_later = t0 + Duration::from_secs(5);
        assert_eq!(
            o.open_at(
                &seal(&key(1), 6, 1, now + 5000, b"y"),
                now + 5000,
                much_later
            )
            .map(|f| f.counter),
            Ok(1)
        );
        assert!(!o.seen.contains_key(&5));
    }

    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Any bytes from the network are refused, never a panic.
        #[test]
        fn open_refuses_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            prop_assert!(opener().open(&bytes).is_err());
        }

        /// A sealed frame opens to its payload; any one flipped bit, or a cut, is refused.
        #[test]
        fn sealed_frames_open_and_any_change_is_refused(
            payload in proptest::collection::vec(any::<u8>(), 0..300),
            flip in any::<proptest::sample::Index>(),
            bit in 0u8..8,
        ) {
            let f = Sealer::with_origin(key(1), 7).seal(&payload);
            let opened = opener().open(&f).map(|o| o.payload.to_vec());
            prop_assert_eq!(opened, Ok(payload.clone()));
            let mut bad = f.clone();
            let i = flip.index(bad.len());
            bad[i] ^= 1 << bit;
            prop_assert!(opener().open(&bad).is_err());
            prop_assert!(opener().open(&f[..f.len() - 1]).is_err());
        }
    }
}
