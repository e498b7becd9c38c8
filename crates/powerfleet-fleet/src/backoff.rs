//! The one backoff curve every retrying loop of the fleet uses, and the named curves of each
//! loop: a model call's retries, a worker's waits for its model, a worker's reads of the jobs
//! stream, a collector's rounds and a role's start-up.

use std::time::Duration;

/// Exponential backoff with jitter: `first`·2^(attempt−1), at most `max`, times a factor in
/// [0.5, 1) so that processes failing together do not retry in step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// The first delay (attempt 1), before jitter.
    pub first: Duration,
    /// The longest delay, before jitter.
    pub max: Duration,
}

impl Backoff {
    /// A curve from `first` doubling up to `max`.
    pub const fn new(first: Duration, max: Duration) -> Backoff {
        Backoff { first, max }
    }

    /// A worker reading its jobs stream after a failed read: 100 ms doubling up to 5 s.
    pub const READ_JOBS: Backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));

    /// A collector after a failed round (Redis or the database): 200 ms doubling up to 6.4 s.
    pub const COLLECTOR_ROUND: Backoff =
        Backoff::new(Duration::from_millis(200), Duration::from_millis(6400));

    /// A role waiting for Redis or its database at start-up, or (`worker
    /// --require-deterministic`) for its inference servers: 250 ms doubling up to 10 s.
    pub const START_UP: Backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(10));

    /// The longest delay between two attempts of one model request.
    pub const MAX_MODEL_RETRY: Duration = Duration::from_secs(30);

    /// The retries of one model request, from `first` up to [`Backoff::MAX_MODEL_RETRY`].
    pub const fn model_retry(first: Duration) -> Backoff {
        Backoff::new(first, Backoff::MAX_MODEL_RETRY)
    }

    /// The delay before retry `attempt` (1 for the first retry).
    pub fn delay(&self, attempt: u32) -> Duration {
        let exp = self
            .first
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
        let capped = exp.min(self.max);
        let jitter = 0.5 + 0.5 * (powerfleet_jobs::now_ms() % 1000) as f64 / 1000.0;
        capped.mul_f64(jitter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_are_capped_and_jittered() {
        let curve = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        for attempt in 1..20 {
            let d = curve.delay(attempt);
            let ceiling = curve
                .first
                .saturating_mul(1 << (attempt - 1).min(16))
                .min(curve.max);
            assert!(d <= ceiling && d >= ceiling / 2, "attempt {attempt}: {d:?}");
        }
    }
}
