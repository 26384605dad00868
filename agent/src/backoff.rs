//! Exponential backoff with jitter for reconnecting to the coordinator and
//! retrying containerd calls: the n-th delay is drawn from
//! `[d/2, d]` where `d = min(cap, base · 2ⁿ)` ("equal jitter"), so a fleet of
//! agents that lost the coordinator at the same moment does not come back in
//! lockstep, yet no retry waits less than half the nominal delay.

use std::time::Duration;

use rand::Rng;

#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(base: Duration, cap: Duration) -> Self {
        Self {
            base,
            cap,
            attempt: 0,
        }
    }

    /// The next delay (random within its window); each call doubles the window
    /// up to the cap.
    pub fn next_delay(&mut self) -> Duration {
        let unit: f64 = rand::thread_rng().gen();
        let d = delay_for(self.attempt, self.base, self.cap, unit);
        self.attempt = self.attempt.saturating_add(1);
        d
    }

    /// Back to the base delay after a success.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// The delay for `attempt` given a uniform `unit` in `[0, 1]`.
pub fn delay_for(attempt: u32, base: Duration, cap: Duration, unit: f64) -> Duration {
    let factor = 2u32.saturating_pow(attempt.min(31));
    let nominal = base.saturating_mul(factor).min(cap);
    let half = nominal / 2;
    half + (nominal - half).mul_f64(unit.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_with_jitter_and_cap() {
        let base = Duration::from_millis(500);
        let cap = Duration::from_secs(30);
        let ms = Duration::from_millis;
        let cases = [
            (0, 0.0, ms(250)),
            (0, 1.0, ms(500)),
            (1, 0.0, ms(500)),
            (1, 1.0, ms(1000)),
            (3, 0.5, ms(3000)),
            (6, 1.0, ms(30_000)),
            (6, 0.0, ms(15_000)),
            (40, 1.0, ms(30_000)),
            (u32::MAX, 0.0, ms(15_000)),
        ];
        for (attempt, unit, expected) in cases {
            assert_eq!(
                delay_for(attempt, base, cap, unit),
                expected,
                "attempt {attempt} unit {unit}"
            );
        }
    }

    #[test]
    fn backoff_grows_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let first = b.next_delay();
        assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
        for _ in 0..10 {
            let d = b.next_delay();
            assert!(d <= Duration::from_secs(1));
        }
        let late = b.next_delay();
        assert!(late >= Duration::from_millis(500));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}
