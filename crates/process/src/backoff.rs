//! Restart delays for supervised children: jittered exponential backoff with a cap, reset after a
//! child has stayed up long enough to count as healthy.

use rand::Rng;
use std::time::Duration;

/// Why a backoff could not be built: the parameters contradict each other (the operator's fault).
#[derive(Debug, thiserror::Error, PartialEq)]
pub(crate) enum BackoffError {
    #[error("restart delay must be more than zero")]
    ZeroBase,
    #[error("restart max delay {max:?} is below the initial delay {base:?}")]
    MaxBelowBase { base: Duration, max: Duration },
}

/// Exponential backoff state for one supervised child (or one pool of identical children).
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    base: Duration,
    max: Duration,
    reset_after: Duration,
    attempt: u32,
}

impl Backoff {
    /// `base` is the first delay, doubled per consecutive failure up to `max`; a child that ran for
    /// `reset_after` or longer starts the sequence again.
    pub fn new(
        base: Duration,
        max: Duration,
        reset_after: Duration,
    ) -> Result<Backoff, BackoffError> {
        if base.is_zero() {
            return Err(BackoffError::ZeroBase);
        }
        if max < base {
            return Err(BackoffError::MaxBelowBase { base, max });
        }
        Ok(Backoff {
            base,
            max,
            reset_after,
            attempt: 0,
        })
    }

    /// The delay before restarting a child that exited after running for `uptime`. The result is
    /// in `[d/2, d]` where `d = min(max, base * 2^n)`, so children that fail together spread out.
    pub(crate) fn next_delay(&mut self, uptime: Duration) -> Duration {
        if uptime >= self.reset_after {
            self.attempt = 0;
        }
        let factor = 1u32 << self.attempt.min(20);
        let d = self.base.saturating_mul(factor).min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let half = d / 2;
        half + rand::thread_rng().gen_range(Duration::ZERO..=half)
    }

    /// How many failures in a row led to the current delay.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_caps_and_resets() {
        let s = Duration::from_secs;
        let mut b = Backoff::new(s(1), s(30), s(60)).expect("valid");
        let mut last_cap = Duration::ZERO;
        for i in 0..10 {
            let d = b.next_delay(s(0));
            let cap = s(1).saturating_mul(1 << i).min(s(30));
            assert!(
                d >= cap / 2 && d <= cap,
                "attempt {i}: {d:?} not in [{:?}, {cap:?}]",
                cap / 2
            );
            assert!(cap >= last_cap);
            last_cap = cap;
        }
        let d = b.next_delay(s(61));
        assert!(d <= s(1), "reset after a healthy run: {d:?}");
        assert_eq!(b.attempts(), 1);
    }

    #[test]
    fn rejects_bad_parameters() {
        let s = Duration::from_secs;
        assert_eq!(
            Backoff::new(s(0), s(1), s(1)).unwrap_err(),
            BackoffError::ZeroBase
        );
        assert!(matches!(
            Backoff::new(s(2), s(1), s(1)),
            Err(BackoffError::MaxBelowBase { .. })
        ));
    }
}
