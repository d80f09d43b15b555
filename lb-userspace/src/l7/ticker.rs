//! One watchdog tick per worker thread, shared by all of its connections, instead of a timer
//! per connection.
//!
//! A connection's watchdog (`server::watch_connection`) looks at its clocks every
//! [`PERIOD`]. With a timer of its own, every new connection registered one with tokio's
//! timer wheel, and tokio wakes its I/O driver (a write to its eventfd, and the wake-up it
//! causes) whenever a new timer is due before the earliest one it planned to wake for, or it
//! planned none: with short connections that was one write per timer, two per connection
//! with the backend exchange's deadline (`strace` of the bench's new-connection-per-request
//! case). One ticker per thread keeps a timer due within a period, so later timers never
//! need the wake-up, and a connection waits on a [`Notify`] (no timer, no syscall).
use std::{
    cell::RefCell,
    sync::{
        Arc, Weak,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use tokio::sync::{Notify, futures::Notified};

/// How often the watchdogs look: the first look comes within a period of a connection's
/// start, then one each period.
pub const PERIOD: Duration = Duration::from_millis(250);

/// The tick of one worker thread; kept alive by the connections waiting on it.
pub struct Tick {
    notify: Notify,
    /// False once the ticking task is gone (its runtime shut down).
    ticking: AtomicBool,
}

impl Tick {
    /// Resolves at the next tick (registered when first polled).
    pub fn next(&self) -> Notified<'_> {
        self.notify.notified()
    }
}

thread_local! {
    static CURRENT: RefCell<Weak<Tick>> = const { RefCell::new(Weak::new()) };
}

/// This thread's tick, with its ticking task spawned on the current runtime when no
/// connection holds one (the task ends at the first tick no connection waits for).
pub fn current() -> Arc<Tick> {
    CURRENT.with(|slot| {
        let mut slot = slot.borrow_mut();
        if let Some(tick) = slot.upgrade().filter(|t| t.ticking.load(Ordering::Relaxed)) {
            return tick;
        }
        let tick = Arc::new(Tick { notify: Notify::new(), ticking: AtomicBool::new(true) });
        *slot = Arc::downgrade(&tick);
        tokio::spawn(ticking(Stopped(Arc::downgrade(&tick))));
        tick
    })
}

/// Marks its tick dead when the ticking task ends or is dropped with its runtime (polled or
/// not: it is the task's argument).
struct Stopped(Weak<Tick>);

impl Drop for Stopped {
    fn drop(&mut self) {
        if let Some(t) = self.0.upgrade() {
            t.ticking.store(false, Ordering::Relaxed);
        }
    }
}

async fn ticking(stopped: Stopped) {
    let mut every = tokio::time::interval_at(tokio::time::Instant::now() + PERIOD, PERIOD);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let Some(t) = stopped.0.upgrade() else { return };
        t.notify.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    /// A wait for the next tick lasts about a period (loose bounds: a loaded machine is late).
    async fn one_period(tick: &Tick) {
        let at = Instant::now();
        tick.next().await;
        let took = at.elapsed();
        assert!(took <= PERIOD * 8, "a tick came after {took:?}");
    }

    #[tokio::test]
    async fn waiters_wake_each_period_and_the_task_ends_with_its_last_holder() {
        let tick = current();
        assert!(Arc::ptr_eq(&tick, &current()), "one tick per thread");
        let start = Instant::now();
        for _ in 0..3 {
            one_period(&tick).await;
        }
        // Three ticks of a period each, the first a period after the start.
        assert!(start.elapsed() >= PERIOD * 3 - Duration::from_millis(5), "{:?}", start.elapsed());
        let weak = Arc::downgrade(&tick);
        drop(tick);
        assert!(weak.upgrade().is_none());
        // A new holder gets a new tick with a live task.
        one_period(&current()).await;
    }

    #[test]
    fn a_tick_whose_runtime_shut_down_is_not_handed_out() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        let first = rt.block_on(async { current() });
        drop(rt);
        assert!(!first.ticking.load(Ordering::Relaxed));
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        rt.block_on(async {
            let second = current();
            assert!(!Arc::ptr_eq(&first, &second));
            one_period(&second).await;
        });
    }
}
