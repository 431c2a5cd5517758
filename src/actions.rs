//! The only code that signals a backend. Each signal is one autocommit
//! statement (see [`crate::sql`]) that finds the walsender by `(pid,
//! backend_start)` in a fresh `pg_stat_replication` snapshot and never the
//! daemon's own backend, so a pid the OS has handed to another process is
//! never hit. On PostgreSQL 14+ a terminate waits for the process to exit
//! and says whether it did.

use std::fmt;
use std::time::Duration;

use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Statement};

use crate::engine::Delivery;
use crate::policy::Action;
use crate::snapshot::WalsenderId;
use crate::sql::{self, ServerVersion};

/// What became of a decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The rule's action is `log`: nothing to signal.
    Logged,
    /// Dry run: the signal that would have been sent was not.
    DryRun,
    /// The server accepted the signal (a cancel, or a terminate on a server
    /// older than 14, which cannot confirm the exit).
    Signalled,
    /// Terminated, and the process exited within `terminate_timeout`.
    Terminated,
    /// Terminated, but the process had not exited within the timeout.
    NotExited,
    /// No walsender with that `(pid, backend_start)` any more: it exited or
    /// its pid now belongs to another process. Nothing was signalled.
    Gone,
    /// The server found the process but the signal function returned false.
    NotSignalled,
    /// The role may not signal it: a superuser's walsender and a role with
    /// only `pg_signal_backend` (or no signal privilege at all).
    Refused(String),
    /// Any other error from the statement.
    Failed(String),
}

impl Outcome {
    /// The short word in the log's `outcome` field.
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Logged => "logged",
            Outcome::DryRun => "dry_run",
            Outcome::Signalled => "signalled",
            Outcome::Terminated => "terminated",
            Outcome::NotExited => "not_exited",
            Outcome::Gone => "already_gone",
            Outcome::NotSignalled => "not_signalled",
            Outcome::Refused(_) => "refused",
            Outcome::Failed(_) => "failed",
        }
    }

    /// What the engine needs to know to retry or not.
    pub fn delivery(&self) -> Delivery {
        match self {
            Outcome::Logged
            | Outcome::DryRun
            | Outcome::Signalled
            | Outcome::Terminated
            | Outcome::Gone => Delivery::Done,
            Outcome::NotExited | Outcome::NotSignalled | Outcome::Failed(_) => Delivery::Failed,
            Outcome::Refused(_) => Delivery::Final,
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The signal statements, prepared once per connection for its server version.
pub struct Signaller {
    cancel: Statement,
    terminate: Statement,
    /// Milliseconds `pg_terminate_backend` waits (PostgreSQL 14+), else `None`.
    terminate_wait_ms: Option<i64>,
}

impl Signaller {
    pub async fn prepare(
        client: &Client,
        version: ServerVersion,
        terminate_timeout: Duration,
    ) -> Result<Signaller, tokio_postgres::Error> {
        let confirmed = version.has_terminate_timeout();
        Ok(Signaller {
            cancel: client.prepare(sql::CANCEL).await?,
            terminate: client
                .prepare(if confirmed {
                    sql::TERMINATE_CONFIRMED
                } else {
                    sql::TERMINATE
                })
                .await?,
            terminate_wait_ms: confirmed
                .then(|| terminate_timeout.as_millis().clamp(1, i64::MAX as u128) as i64),
        })
    }

    /// Sends `action` to exactly the process instance `id`. An `Err` means
    /// the connection itself failed (the daemon reconnects); everything the
    /// server answered is an [`Outcome`].
    pub async fn signal(
        &self,
        client: &Client,
        action: Action,
        id: WalsenderId,
    ) -> Result<Outcome, tokio_postgres::Error> {
        let result = match (action, self.terminate_wait_ms) {
            (Action::Log, _) => return Ok(Outcome::Logged),
            (Action::Cancel, _) => {
                client
                    .query_opt(&self.cancel, &[&id.pid, &id.backend_start])
                    .await
            }
            (Action::Terminate, None) => {
                client
                    .query_opt(&self.terminate, &[&id.pid, &id.backend_start])
                    .await
            }
            (Action::Terminate, Some(ms)) => {
                client
                    .query_opt(&self.terminate, &[&id.pid, &id.backend_start, &ms])
                    .await
            }
        };
        let confirmed = action == Action::Terminate && self.terminate_wait_ms.is_some();
        match result {
            Ok(None) => Ok(Outcome::Gone),
            Ok(Some(row)) => Ok(match (row.try_get::<_, Option<bool>>(0)?, confirmed) {
                (Some(true), true) => Outcome::Terminated,
                (Some(true), false) => Outcome::Signalled,
                (_, true) => Outcome::NotExited,
                (_, false) => Outcome::NotSignalled,
            }),
            Err(e) => match e.as_db_error() {
                Some(db) if *db.code() == SqlState::INSUFFICIENT_PRIVILEGE => Ok(Outcome::Refused(format!(
                    "{}: the walsender's role is a superuser (or the daemon's role lacks pg_signal_backend); \
                     replicate as a non-superuser role WITH REPLICATION, or GRANT pg_signal_backend TO the daemon's role",
                    db.message()
                ))),
                Some(db) if !is_connection_error(&e) => Ok(Outcome::Failed(db.message().to_string())),
                _ => Err(e),
            },
        }
    }
}

/// True when `e` means the session is unusable and must be re-established:
/// a closed socket, or the server ending the session (admin shutdown, crash,
/// connection failure classes 08 and 57P).
pub fn is_connection_error(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    match e.as_db_error() {
        None => true,
        Some(db) => {
            let code = db.code().code();
            code.starts_with("08") || code.starts_with("57P")
        }
    }
}
