//! The poll ticker: the daemon's interval, kept by a Linux `timerfd` that
//! tokio's IO driver waits on, so that the wait between two polls is one
//! wake-up of the process.
//!
//! `tokio::time::interval` keeps its deadline in tokio's timer wheel, whose
//! first level holds the next 64 ms in 1 ms slots: a deadline further away
//! (any `interval` above 64 ms, and most of those above 32) sits in a
//! coarser level, and the runtime wakes once at the start of that level's
//! slot to move it down, then again at the deadline. Two wake-ups per
//! poll instead of one (strace: `epoll_wait` timeouts of ~63 then ~34 ms
//! at `interval = "100ms"`), each a switch back into the process, on a
//! daemon that otherwise only wakes for the poll's reply (BENCHMARKS.md).
//! If the timer cannot be made (no file descriptor left), the tokio
//! interval is used instead.

use std::io;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::time::Duration;

use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use tokio::io::unix::AsyncFd;
use tokio::time::{Interval, MissedTickBehavior};

/// Ticks at once, then every `period`; ticks missed while the caller was
/// busy are skipped (the next comes on the period's grid), as
/// `MissedTickBehavior::Skip` does.
pub struct Ticker(Clock);

enum Clock {
    Timer(AsyncFd<Fd>),
    Tokio(Interval),
}

/// `TimerFd` with the raw descriptor `AsyncFd` registers.
struct Fd(TimerFd);

impl AsRawFd for Fd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

impl Ticker {
    pub fn new(period: Duration) -> Ticker {
        match timer(period) {
            Ok(fd) => Ticker(Clock::Timer(fd)),
            Err(e) => {
                tracing::warn!(error = %e, "cannot make a timerfd for the poll interval; using tokio's timer");
                let mut interval = tokio::time::interval(period);
                interval.set_missed_tick_behavior(MissedTickBehavior::Skip);
                Ticker(Clock::Tokio(interval))
            }
        }
    }

    /// Waits for the next tick.
    pub async fn tick(&mut self) {
        match &mut self.0 {
            Clock::Tokio(interval) => {
                interval.tick().await;
            }
            Clock::Timer(fd) => loop {
                let Ok(mut ready) = fd.readable().await else {
                    // The driver is gone (the runtime is shutting down).
                    return std::future::pending().await;
                };
                // Reads the number of expirations: one or more is a tick.
                match ready.try_io(|fd| fd.get_ref().0.wait().map_err(io::Error::from)) {
                    Ok(_) => {
                        // Read to empty: the next tick waits for the next
                        // expiry (its own wake-up), not for a read that
                        // fails first.
                        ready.clear_ready();
                        return;
                    }
                    Err(_would_block) => continue,
                }
            },
        }
    }
}

fn timer(period: Duration) -> io::Result<AsyncFd<Fd>> {
    let fd = TimerFd::new(
        ClockId::CLOCK_MONOTONIC,
        TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
    )?;
    // A zero period would disarm the timer: at least 1 ns (the config
    // refuses an interval that short anyway).
    let period = TimeSpec::from_duration(period.max(Duration::from_nanos(1)));
    // First expiry 1 ns from now: the first tick is at once, as tokio's.
    fd.set(
        Expiration::IntervalDelayed(TimeSpec::from_duration(Duration::from_nanos(1)), period),
        TimerSetTimeFlags::empty(),
    )?;
    // `AsyncFd::new` is deprecated for taking any `AsRawFd` (whose
    // descriptor could change or close under it); its replacement is
    // `unsafe`, which this crate forbids. `Fd` owns its timer, never hands
    // it out, and returns the same open descriptor until dropped: what the
    // replacement asks its caller to promise.
    #[allow(deprecated)]
    AsyncFd::new(Fd(fd))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[tokio::test(flavor = "current_thread")]
    async fn ticks_at_once_then_every_period_and_skips_missed_ones() {
        // The first tick is at once: long before a tenth of the period.
        let mut slow = Ticker::new(Duration::from_secs(100));
        assert!(matches!(slow.0, Clock::Timer(_)), "a timerfd on Linux");
        tokio::select! {
            biased;
            _ = slow.tick() => {}
            _ = tokio::time::sleep(Duration::from_secs(10)) => panic!("no first tick"),
        }
        let period = Duration::from_millis(30);
        let mut ticker = Ticker::new(period);
        ticker.tick().await;
        let start = Instant::now();
        ticker.tick().await;
        ticker.tick().await;
        assert!(start.elapsed() >= period, "{:?}", start.elapsed());
        // Busy for several periods: then one tick at once and the next on
        // the grid, not a burst of the missed ones (three ticks would then
        // take no time).
        std::thread::sleep(period * 4);
        let start = Instant::now();
        for _ in 0..3 {
            ticker.tick().await;
        }
        assert!(start.elapsed() >= period, "{:?}", start.elapsed());
    }
}
