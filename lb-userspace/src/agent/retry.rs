//! When the agent applies its model again after the datapath's maps could not be reached
//! (an apply that failed as a whole, not one object the datapath rejected): 1 s, doubling
//! to 30 s, until an apply gets through.
use std::time::{Duration, Instant};

const FIRST: Duration = Duration::from_secs(1);
const MAX: Duration = Duration::from_secs(30);

/// The next retry of a failed apply, if one is owed.
#[derive(Debug)]
pub struct ApplyRetry {
    at: Option<Instant>,
    backoff: Duration,
}

impl Default for ApplyRetry {
    fn default() -> ApplyRetry {
        ApplyRetry { at: None, backoff: FIRST }
    }
}

impl ApplyRetry {
    /// An apply failed at `now`: the next try is owed after the backoff, which doubles.
    /// Returns the wait.
    pub fn failed(&mut self, now: Instant) -> Duration {
        let wait = self.backoff;
        self.at = Some(now + wait);
        self.backoff = (wait * 2).min(MAX);
        wait
    }

    /// An apply got through: nothing is owed, the next failure waits [`FIRST`] again.
    pub fn done(&mut self) {
        *self = ApplyRetry::default();
    }

    /// Whether a retry is owed by `now`.
    pub fn due(&self, now: Instant) -> bool {
        self.at.is_some_and(|at| now >= at)
    }

    /// How long the agent may sleep at `now` without missing the retry: at most `tick`.
    pub fn wait(&self, now: Instant, tick: Duration) -> Duration {
        self.at.map_or(tick, |at| at.saturating_duration_since(now).min(tick))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_apply_is_owed_after_a_doubling_backoff_until_one_gets_through() {
        let mut retry = ApplyRetry::default();
        let t0 = Instant::now();
        let tick = Duration::from_secs(5);
        assert!(!retry.due(t0 + Duration::from_secs(3600)), "nothing owed before a failure");
        assert_eq!(retry.wait(t0, tick), tick);
        let waits: Vec<u64> = (0..7).map(|_| retry.failed(t0).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30]);
        assert!(!retry.due(t0 + Duration::from_secs(29)) && retry.due(t0 + Duration::from_secs(30)));
        assert_eq!(retry.wait(t0 + Duration::from_secs(28), tick), Duration::from_secs(2));
        retry.done();
        assert!(!retry.due(t0 + Duration::from_secs(3600)));
        assert_eq!(retry.failed(t0).as_secs(), 1, "a success starts the backoff again");
    }
}
