//! `/readyz` and `/livez`. Ready: the first model is applied and the datapath attached
//! (set once by the agent, never unset). Live: the agent's loop ticked within
//! [`Probes::stale_after`]; before its first tick (the datapath loading, the source
//! connecting) the process counts as live: startup is what readiness is for.
use std::{
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    time::{Duration, Instant},
};

/// The shortest silence that makes the loop dead, however short its period.
pub const MIN_STALE: Duration = Duration::from_secs(5);

#[derive(Debug)]
pub struct Probes {
    start: Instant,
    ready: AtomicBool,
    /// Milliseconds since `start` at the last tick + 1 (0 = never ticked).
    tick: AtomicU64,
    stale_after: Duration,
}

impl Probes {
    /// For a loop that ticks at least every `period`: dead after 3 periods of silence
    /// ([`MIN_STALE`] at least).
    pub fn new(period: Duration) -> Probes {
        Probes {
            start: Instant::now(),
            ready: AtomicBool::new(false),
            tick: AtomicU64::new(0),
            stale_after: (period * 3).max(MIN_STALE),
        }
    }

    pub fn stale_after(&self) -> Duration {
        self.stale_after
    }

    /// The loop's heartbeat.
    pub fn tick(&self) {
        self.tick.store(self.since_start(Instant::now()) + 1, Ordering::Relaxed);
    }

    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Relaxed);
    }

    pub fn ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    pub fn live(&self) -> bool {
        self.live_at(Instant::now())
    }

    /// Whether the loop counts as live at `now`.
    pub fn live_at(&self, now: Instant) -> bool {
        match self.tick.load(Ordering::Relaxed) {
            0 => true,
            t => self.since_start(now).saturating_sub(t - 1) <= self.stale_after.as_millis() as u64,
        }
    }

    fn since_start(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.start).as_millis() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_once_set() {
        let p = Probes::new(Duration::from_secs(1));
        assert!(!p.ready());
        p.tick();
        assert!(!p.ready(), "a tick is not readiness");
        p.set_ready();
        assert!(p.ready());
    }

    #[test]
    fn live_until_three_periods_without_a_tick() {
        let p = Probes::new(Duration::from_secs(4));
        assert_eq!(p.stale_after(), Duration::from_secs(12));
        let now = Instant::now();
        assert!(p.live_at(now + Duration::from_secs(3600)), "not ticked yet: starting up");
        p.tick();
        let ticked = Instant::now();
        assert!(p.live_at(ticked + Duration::from_secs(11)));
        assert!(!p.live_at(ticked + Duration::from_secs(13)));
        p.tick();
        assert!(p.live_at(Instant::now() + Duration::from_secs(11)), "a new tick makes it live again");
    }

    #[test]
    fn a_short_period_still_allows_min_stale() {
        let p = Probes::new(Duration::from_millis(100));
        assert_eq!(p.stale_after(), MIN_STALE);
        p.tick();
        let t = Instant::now();
        assert!(p.live_at(t + Duration::from_secs(4)));
        assert!(!p.live_at(t + Duration::from_secs(6)));
    }
}
