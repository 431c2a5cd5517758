//! The systemd side of the daemon (`Type=notify`): READY once enforcing,
//! RELOADING/READY around a reload, STOPPING on the way out, STATUS lines
//! (and their text), and watchdog pings. Without `$NOTIFY_SOCKET` every call does nothing.

use std::time::Duration;

use sd_notify::NotifyState;
use tokio::time::{Interval, MissedTickBehavior};

/// The daemon's link to its service manager.
#[derive(Debug)]
pub struct Service {
    /// `WatchdogSec=` as passed in `$WATCHDOG_USEC`, if enabled.
    watchdog: Option<Duration>,
    ready: bool,
    status: String,
}

impl Service {
    pub fn from_env() -> Service {
        Service {
            watchdog: sd_notify::watchdog_enabled(),
            ready: false,
            status: String::new(),
        }
    }

    fn send(&self, states: &[NotifyState<'_>]) {
        if let Err(e) = sd_notify::notify(states) {
            tracing::warn!(error = %e, "cannot notify the service manager");
        }
    }

    /// After the first good poll: the service is up and enforcing.
    pub fn ready(&mut self) {
        if !self.ready {
            self.ready = true;
            self.send(&[NotifyState::Ready]);
        }
    }

    /// Sets the one-line status `systemctl status` shows, when it changed.
    pub fn status(&mut self, status: String) {
        if status != self.status {
            self.send(&[NotifyState::Status(&status)]);
            self.status = status;
        }
    }

    /// Around a reload: RELOADING=1 (with the monotonic time systemd 253+
    /// requires), then READY=1 whatever the result.
    pub fn reloading(&self) {
        let mut states = vec![NotifyState::Reloading];
        if let Ok(now) = NotifyState::monotonic_usec_now() {
            states.push(now);
        }
        self.send(&states);
    }

    pub fn reloaded(&self) {
        if self.ready {
            self.send(&[NotifyState::Ready]);
        }
    }

    pub fn stopping(&self) {
        self.send(&[NotifyState::Stopping]);
    }

    /// A ticker at half the watchdog period, or `None` without a watchdog.
    pub fn watchdog_ticker(&self) -> Option<Interval> {
        self.watchdog.map(|period| {
            let mut t = tokio::time::interval((period / 2).max(Duration::from_millis(10)));
            t.set_missed_tick_behavior(MissedTickBehavior::Delay);
            t
        })
    }

    pub fn ping(&self) {
        ping_watchdog();
    }
}

/// A watchdog ping, for where the [`Service`] is borrowed (during a poll).
pub fn ping_watchdog() {
    if let Err(e) = sd_notify::notify(&[NotifyState::Watchdog]) {
        tracing::warn!(error = %e, "cannot notify the service manager");
    }
}

/// The next watchdog tick, or never.
pub async fn next_tick(ticker: &mut Option<Interval>) {
    match ticker {
        Some(t) => {
            t.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// The status line while connecting (a lock-out has its own:
/// [`crate::lockout::status`]).
pub fn status_waiting(target: &str, attempt: u32) -> String {
    format!("waiting for PostgreSQL at {target} (attempt {attempt})")
}

/// The status line after each good poll.
pub fn status_polling(dry_run: bool, walsenders: usize, rules: usize, in_recovery: bool) -> String {
    format!(
        "{} {walsenders} walsender(s) with {rules} rule(s){}",
        if dry_run {
            "watching (dry run)"
        } else {
            "enforcing on"
        },
        if in_recovery {
            " (standby: cascading walsenders)"
        } else {
            ""
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_say_what_the_daemon_does() {
        assert_eq!(
            status_polling(false, 3, 2, false),
            "enforcing on 3 walsender(s) with 2 rule(s)"
        );
        assert_eq!(
            status_polling(true, 1, 4, true),
            "watching (dry run) 1 walsender(s) with 4 rule(s) (standby: cascading walsenders)"
        );
        assert_eq!(
            status_waiting("host=db port=5432", 3),
            "waiting for PostgreSQL at host=db port=5432 (attempt 3)"
        );
    }
}
