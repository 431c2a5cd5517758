//! The only code that signals a backend. Each signal is one autocommit
//! statement that finds the walsender by `(pid, backend_start)` in a fresh
//! `pg_stat_replication` snapshot and never the daemon's own backend, so a
//! pid the OS has handed to another process is never hit.

use std::fmt;

use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Statement};

use crate::policy::Action;
use crate::snapshot::WalsenderId;

const CANCEL_SQL: &str = "SELECT pg_cancel_backend(pid) FROM pg_stat_replication \
     WHERE pid = $1 AND backend_start = $2 AND pid <> pg_backend_pid()";
const TERMINATE_SQL: &str = "SELECT pg_terminate_backend(pid) FROM pg_stat_replication \
     WHERE pid = $1 AND backend_start = $2 AND pid <> pg_backend_pid()";

/// What became of a decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The rule's action is `log`: nothing to signal.
    Logged,
    /// Dry run: the signal that would have been sent was not.
    DryRun,
    /// The server accepted the signal.
    Signalled,
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
            Outcome::Gone => "already_gone",
            Outcome::NotSignalled => "not_signalled",
            Outcome::Refused(_) => "refused",
            Outcome::Failed(_) => "failed",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The two signal statements, prepared once per connection.
pub struct Signaller {
    cancel: Statement,
    terminate: Statement,
}

impl Signaller {
    pub async fn prepare(client: &Client) -> Result<Signaller, tokio_postgres::Error> {
        Ok(Signaller {
            cancel: client.prepare(CANCEL_SQL).await?,
            terminate: client.prepare(TERMINATE_SQL).await?,
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
        let statement = match action {
            Action::Log => return Ok(Outcome::Logged),
            Action::Cancel => &self.cancel,
            Action::Terminate => &self.terminate,
        };
        match client.query_opt(statement, &[&id.pid, &id.backend_start]).await {
            Ok(None) => Ok(Outcome::Gone),
            Ok(Some(row)) => Ok(match row.try_get::<_, Option<bool>>(0)? {
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
