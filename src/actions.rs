//! The only code that signals a backend. Each signal is one autocommit
//! statement (see [`crate::sql`]) that finds the walsender by `(pid,
//! backend_start)` in a fresh `pg_stat_replication` snapshot and never the
//! daemon's own backend, so a pid the OS has handed to another process is
//! never hit. A terminate is then confirmed: the same instance is looked
//! for after short waits until it is gone or `terminate_timeout` passes.

use std::fmt;
use std::time::{Duration, Instant};

use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Statement};

use crate::engine::Delivery;
use crate::policy::Action;
use crate::snapshot::WalsenderId;
use crate::sql;

/// What became of a decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The rule's action is `log`: nothing to signal.
    Logged,
    /// Dry run: the signal that would have been sent was not.
    DryRun,
    /// The server accepted the signal (a cancel: the process lives on).
    Signalled,
    /// Terminated, and the process exited within `terminate_timeout`.
    Terminated,
    /// Terminated, but the process had not exited within the timeout.
    NotExited,
    /// Terminated; the daemon was asked to stop before the exit was
    /// confirmed.
    Unconfirmed,
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
    /// The connection broke while the signal was in flight: it may or may
    /// not have arrived. Retried (same instance only) after reconnecting.
    Interrupted,
    /// Not tried: the connection was lost earlier in the same poll. Decided
    /// again after reconnecting, at no cost to budget or backoff.
    NotAttempted,
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
            Outcome::Unconfirmed => "exit_unconfirmed",
            Outcome::Gone => "already_gone",
            Outcome::NotSignalled => "not_signalled",
            Outcome::Refused(_) => "refused",
            Outcome::Failed(_) => "failed",
            Outcome::Interrupted => "interrupted",
            Outcome::NotAttempted => "not_attempted",
        }
    }

    /// What the engine needs to know to retry or not.
    pub fn delivery(&self) -> Delivery {
        match self {
            Outcome::Logged | Outcome::Signalled | Outcome::Terminated | Outcome::Gone => {
                Delivery::Done
            }
            Outcome::DryRun => Delivery::DryRun,
            Outcome::NotExited
            | Outcome::Unconfirmed
            | Outcome::NotSignalled
            | Outcome::Failed(_)
            | Outcome::Interrupted => Delivery::Failed,
            Outcome::Refused(_) => Delivery::Final,
            Outcome::NotAttempted => Delivery::NotAttempted,
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The signal statements, prepared once per connection.
pub struct Signaller {
    cancel: Statement,
    terminate: Statement,
    still_there: Statement,
}

/// The first wait before looking for a terminated process, doubled up to
/// `CONFIRM_STEP_MAX` between looks.
const CONFIRM_STEP: Duration = Duration::from_millis(1);
const CONFIRM_STEP_MAX: Duration = Duration::from_millis(50);

impl Signaller {
    pub async fn prepare(client: &Client) -> Result<Signaller, tokio_postgres::Error> {
        Ok(Signaller {
            cancel: client.prepare(sql::CANCEL).await?,
            terminate: client.prepare(sql::TERMINATE).await?,
            still_there: client.prepare(sql::STILL_THERE).await?,
        })
    }

    /// Sends `action` to exactly the process instance `id`; a terminated
    /// process is given `terminate_timeout` (the policy's value at the
    /// time, so a reload applies at once) to exit, unless `interrupt`
    /// completes first (a shutdown: [`Outcome::Unconfirmed`]). An `Err`
    /// means the connection itself failed (the daemon reconnects);
    /// everything the server answered is an [`Outcome`].
    pub async fn signal(
        &self,
        client: &Client,
        action: Action,
        id: WalsenderId,
        terminate_timeout: Duration,
        interrupt: impl std::future::Future<Output = ()>,
    ) -> Result<Outcome, tokio_postgres::Error> {
        let statement = match action {
            Action::Log => return Ok(Outcome::Logged),
            Action::Cancel => &self.cancel,
            Action::Terminate => &self.terminate,
        };
        let result = client
            .query_opt(statement, &[&id.pid, &id.backend_start])
            .await;
        match result {
            Ok(None) => Ok(Outcome::Gone),
            Ok(Some(row)) => Ok(match row.try_get::<_, Option<bool>>(0)? {
                Some(true) if action == Action::Terminate => tokio::select! {
                    confirmed = self.confirm_exit(client, id, terminate_timeout) => confirmed?,
                    () = interrupt => Outcome::Unconfirmed,
                },
                Some(true) => Outcome::Signalled,
                _ => Outcome::NotSignalled,
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

    /// Waits for the terminated instance `id` to exit: `Terminated` once it
    /// is gone, `NotExited` if it is still there after `terminate_timeout`.
    async fn confirm_exit(
        &self,
        client: &Client,
        id: WalsenderId,
        terminate_timeout: Duration,
    ) -> Result<Outcome, tokio_postgres::Error> {
        // No deadline past the end of the clock: a timeout of years waits on.
        let deadline = Instant::now().checked_add(terminate_timeout);
        let mut step = CONFIRM_STEP;
        loop {
            let now = Instant::now();
            let left = deadline.map_or(step, |d| d.saturating_duration_since(now));
            if left.is_zero() {
                return Ok(Outcome::NotExited);
            }
            tokio::time::sleep(step.min(left)).await;
            let there = client
                .query_opt(&self.still_there, &[&id.pid, &id.backend_start])
                .await?;
            if there.is_none() {
                return Ok(Outcome::Terminated);
            }
            step = (step * 2).min(CONFIRM_STEP_MAX);
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
