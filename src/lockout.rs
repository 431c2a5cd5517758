//! Locked out: the server refuses the daemon's connection because every
//! connection slot it may take is in use (SQLSTATE 53300,
//! `too_many_connections`). Walsenders do not use those slots (they have
//! `max_wal_senders`), so a client that fills them switches enforcement off
//! while rogue streams go on. This module recognises the refusal, words
//! the fix for the server's own reason, and paces the warning: at once,
//! then once a [`REMINDER`] for as long as it lasts, never only once.

use std::time::{Duration, Instant};

use tokio_postgres::error::SqlState;

use crate::units::fmt_duration;

/// How often a lasting lock-out is logged again.
pub const REMINDER: Duration = Duration::from_secs(60);

/// The server refused the connection for want of a slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The server's message, e.g. `remaining connection slots are reserved
    /// for non-replication superuser connections`.
    pub reason: String,
}

impl Refusal {
    /// What the operator can do about it, for the server's reason.
    pub fn fix(&self) -> &'static str {
        let r = self.reason.as_str();
        if r.contains("too many connections for role") {
            "the daemon's role has a CONNECTION LIMIT: ALTER ROLE <role> CONNECTION LIMIT -1;"
        } else if r.contains("too many connections for database") {
            "the database in the conninfo has a CONNECTION LIMIT: connect to another (dbname=postgres) or lift it"
        } else if r.contains("pg_use_reserved_connections") {
            "PostgreSQL 16+: GRANT pg_use_reserved_connections TO <role>; (config/setup.sql does) so the daemon may use \
             the reserved_connections slots"
        } else if r.contains("SUPERUSER attribute") {
            "PostgreSQL 16+: set reserved_connections >= 1 and GRANT pg_use_reserved_connections TO <role>; \
             (config/setup.sql grants it): then ordinary clients can never take the daemon's slot"
        } else {
            "PostgreSQL 13-15 reserve slots for superusers only: cap the other roles (ALTER ROLE ... CONNECTION LIMIT), \
             put a pooler in front of applications, raise max_connections, or upgrade to 16+; on 16+ GRANT \
             pg_use_reserved_connections TO <role>; and keep reserved_connections >= 1 (README: Connection slots)"
        }
    }
}

/// The refusal in `e`'s chain of causes, if that is why connecting failed.
pub fn classify(e: &(dyn std::error::Error + 'static)) -> Option<Refusal> {
    let mut cause = Some(e);
    while let Some(err) = cause {
        if let Some(pg) = err.downcast_ref::<tokio_postgres::Error>() {
            if let Some(db) = pg.as_db_error() {
                if *db.code() == SqlState::TOO_MANY_CONNECTIONS {
                    return Some(Refusal {
                        reason: db.message().to_string(),
                    });
                }
            }
        }
        cause = err.source();
    }
    None
}

/// Whether the daemon is locked out now, since when, and when it last said so.
#[derive(Debug, Default)]
pub struct Lockout {
    since: Option<Instant>,
    warned: Option<Instant>,
}

impl Lockout {
    /// Notes a refused attempt at `now`; true when the warning is due (the
    /// first refusal, then once per [`REMINDER`]).
    pub fn refused(&mut self, now: Instant) -> bool {
        self.since.get_or_insert(now);
        let due = self
            .warned
            .is_none_or(|at| now.saturating_duration_since(at) >= REMINDER);
        if due {
            self.warned = Some(now);
        }
        due
    }

    /// How long the lock-out has lasted at `now`, if there is one.
    pub fn lasting(&self, now: Instant) -> Option<Duration> {
        self.since.map(|s| now.saturating_duration_since(s))
    }

    /// The daemon got in: how long it was locked out, if it was.
    pub fn ended(&mut self, now: Instant) -> Option<Duration> {
        let lasted = self.lasting(now);
        *self = Lockout::default();
        lasted
    }
}

/// The systemd status line while locked out.
pub fn status(target: &str, attempt: u32, lasting: Duration, refusal: &Refusal) -> String {
    format!(
        "LOCKED OUT of PostgreSQL at {target} for {} (attempt {attempt}): {}; walsenders are NOT enforced",
        fmt_duration(lasting),
        refusal.reason
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warns_at_once_then_once_a_minute_for_as_long_as_it_lasts() {
        let mut l = Lockout::default();
        let t0 = Instant::now();
        let warned: Vec<u64> = [0u64, 1, 3, 7, 15, 31, 61, 91, 121, 151, 181]
            .into_iter()
            .filter(|s| l.refused(t0 + Duration::from_secs(*s)))
            .collect();
        assert_eq!(warned, vec![0, 61, 121, 181]);
        assert_eq!(
            l.lasting(t0 + Duration::from_secs(200)),
            Some(Duration::from_secs(200))
        );
        assert_eq!(
            l.ended(t0 + Duration::from_secs(200)),
            Some(Duration::from_secs(200))
        );
        assert_eq!(l.ended(t0 + Duration::from_secs(201)), None);
        assert!(
            l.refused(t0 + Duration::from_secs(202)),
            "a new lock-out warns at once"
        );
    }

    #[test]
    fn the_fix_follows_the_servers_reason() {
        let fix = |reason: &str| {
            Refusal {
                reason: reason.to_string(),
            }
            .fix()
        };
        assert!(fix(
            "remaining connection slots are reserved for non-replication superuser connections"
        )
        .contains("13-15"));
        assert!(fix("sorry, too many clients already").contains("13-15"));
        assert!(fix("remaining connection slots are reserved for roles with privileges of the \"pg_use_reserved_connections\" role")
            .starts_with("PostgreSQL 16+: GRANT"));
        assert!(fix(
            "remaining connection slots are reserved for roles with the SUPERUSER attribute"
        )
        .contains("reserved_connections >= 1"));
        assert!(fix("too many connections for role \"replwarden\"").contains("CONNECTION LIMIT -1"));
    }
}
