//! Fuzz target `cluster_frame`: the peer-bus frame opener (`bkjs_base::cluster::frame`) with a
//! fixed secret. The input is first opened as it came off the network, which must be refused (no
//! corpus file is sealed with this key); then it is read as a script of frames that are sealed
//! with the key, possibly tampered with or cut, and opened at a clock the script moves, and every
//! answer of the opener is checked against a model of its rules (authentic, not its own, fresh,
//! counter above the last one of its origin, origins forgotten twice the age after their last
//! frame).

#![no_main]

use bkjs_base::cluster::frame::{seal, Key, Opened, Opener, Refused};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// The opener's own origin and its allowed age (the default `-cluster-frame-age`).
const ME: u64 = 99;
const MAX_AGE_MS: u64 = 60_000;
const ORIGINS: [u64; 4] = [ME, 1, 2, u64::MAX];
/// The wall clock at the start of a script, ms since the epoch.
const WALL0: i64 = 1_900_000_000_000;

/// One step of a script: `FLAGS COUNTER SKEW ADVANCE FLIP LEN PAYLOAD(LEN)`.
struct Step<'a> {
    origin: u64,
    tamper: bool,
    cut: bool,
    counter: u64,
    /// The frame's time minus the opener's clock, ms.
    skew_ms: i64,
    /// How far the clock moves before the frame arrives, ms.
    advance_ms: u64,
    flip: usize,
    payload: &'a [u8],
}

fn steps(mut data: &[u8]) -> Vec<Step<'_>> {
    let mut out = Vec::new();
    while let [flags, counter, skew, advance, flip, len, rest @ ..] = data {
        let n = usize::from(*len).min(rest.len());
        out.push(Step {
            origin: ORIGINS[usize::from(flags & 3)],
            tamper: flags & 4 != 0,
            cut: flags & 8 != 0,
            counter: if *counter == 0xff {
                u64::MAX
            } else {
                u64::from(*counter)
            },
            skew_ms: match *skew as i8 {
                i8::MIN => i64::MIN, // the opener's age saturates
                i8::MAX => i64::MAX,
                s => i64::from(s) * 1000,
            },
            advance_ms: u64::from(*advance) * 500,
            flip: usize::from(*flip),
            payload: &rest[..n],
        });
        data = &rest[n..];
    }
    out
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let key = Key::new(b"fuzzing cluster key, in no corpus");
    // Taken before the opener so that the opener's first pruning instant is not before it.
    let t0 = Instant::now();
    let mut opener = Opener::new(key.clone(), Some(ME), Duration::from_millis(MAX_AGE_MS));
    assert!(opener.open(data).is_err(), "unsealed bytes were opened");

    // The model: origin -> (last counter, ms of its last frame); when it last pruned.
    let mut seen: HashMap<u64, (u64, u64)> = HashMap::new();
    let mut pruned_ms = 0u64;
    let mut clock_ms = 0u64;
    for step in steps(data) {
        clock_ms += step.advance_ms;
        let wall = WALL0 + clock_ms as i64;
        let time = wall.saturating_add(step.skew_ms);
        let mut frame = seal(&key, step.origin, step.counter, time, step.payload);
        if step.tamper {
            let i = step.flip % frame.len();
            frame[i] ^= 1 << (step.flip % 8);
        }
        if step.cut {
            frame.pop();
        }
        let got = opener.open_at(&frame, wall, t0 + Duration::from_millis(clock_ms));

        let want = if step.tamper || step.cut {
            Err(Refused::BadMac)
        } else if step.origin == ME {
            Err(Refused::OwnOrigin)
        } else if (i128::from(wall) - i128::from(time)).unsigned_abs() > u128::from(MAX_AGE_MS) {
            Err(Refused::Stale)
        } else {
            if clock_ms - pruned_ms > MAX_AGE_MS {
                seen.retain(|_, (_, at)| clock_ms - *at <= 2 * MAX_AGE_MS);
                pruned_ms = clock_ms;
            }
            match seen.get(&step.origin) {
                Some((last, _)) if step.counter <= *last => Err(Refused::Replay),
                _ => {
                    seen.insert(step.origin, (step.counter, clock_ms));
                    Ok(Opened {
                        origin: step.origin,
                        counter: step.counter,
                        payload: step.payload,
                    })
                }
            }
        };
        assert_eq!(got, want, "clock {clock_ms} ms");
    }
});
