//! What one poll sees: one [`Walsender`] per row of `pg_stat_replication`
//! (with its slot), on a primary or on a cascading standby alike, and what
//! the daemon's role may do ([`Preflight`]). Domain types only: they are
//! read from the server by [`crate::poller`], and the pure engine uses them
//! without depending on the database driver.

use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use crate::units::{ByteSize, Lsn};

/// A walsender process instance: the pid alone is reused by the OS, the
/// pair is not. Every timer and every kill is keyed on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct WalsenderId {
    pub pid: i32,
    pub backend_start: SystemTime,
}

impl WalsenderId {
    /// `backend_start` as PostgreSQL would print it, in UTC.
    pub fn started(&self) -> String {
        humantime::format_rfc3339_micros(self.backend_start).to_string()
    }
}

impl fmt::Display for WalsenderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pid {} (started {})", self.pid, self.started())
    }
}

/// Where a replication client connects from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientAddr {
    /// A unix-socket client (`client_addr` is NULL).
    Local,
    Ip(IpAddr),
}

impl fmt::Display for ClientAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientAddr::Local => f.write_str("local"),
            ClientAddr::Ip(ip) => ip.fmt(f),
        }
    }
}

/// `pg_stat_replication.state`. A state this build does not know (a newer
/// server's) is kept with its text, shown and matched by rules like any
/// other, never an error.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum WalState {
    Startup,
    Catchup,
    Streaming,
    Backup,
    Stopping,
    Unknown(String),
}

impl WalState {
    /// PostgreSQL's text for the state.
    pub fn as_str(&self) -> &str {
        match self {
            WalState::Startup => "startup",
            WalState::Catchup => "catchup",
            WalState::Streaming => "streaming",
            WalState::Backup => "backup",
            WalState::Stopping => "stopping",
            WalState::Unknown(text) => text,
        }
    }
}

impl From<&str> for WalState {
    fn from(text: &str) -> WalState {
        match text {
            "startup" => WalState::Startup,
            "catchup" => WalState::Catchup,
            "streaming" => WalState::Streaming,
            "backup" => WalState::Backup,
            "stopping" => WalState::Stopping,
            other => WalState::Unknown(other.to_string()),
        }
    }
}

impl fmt::Display for WalState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One row of `pg_stat_replication`, as the conditions need it. A NULL column
/// is `None`; a condition on a `None` value never holds.
#[derive(Clone, Debug, PartialEq)]
pub struct Walsender {
    pub id: WalsenderId,
    /// How long the process had existed when the poll read it
    /// (`statement_timestamp() - backend_start`, both the server's clock):
    /// lets timers start when the walsender did, not when a poll first saw it.
    /// Read once, at first sight, and capped by the time since the previous
    /// poll (`crate::clocks::first_sight_age`): a server clock step cannot
    /// age a new connection.
    pub age: Duration,
    pub application_name: String,
    pub user: Option<String>,
    pub client_addr: ClientAddr,
    /// A newer server may report a state this build does not know:
    /// [`WalState::Unknown`].
    pub state: Option<WalState>,
    pub sync_state: Option<String>,
    pub flush_lsn: Option<Lsn>,
    pub write_lag: Option<Duration>,
    pub flush_lag: Option<Duration>,
    pub replay_lag: Option<Duration>,
    /// The server's current WAL position minus `write_lsn`, and so on.
    pub write_lag_bytes: Option<ByteSize>,
    pub flush_lag_bytes: Option<ByteSize>,
    pub replay_lag_bytes: Option<ByteSize>,
    /// The server's time minus `reply_time`. Two clocks: `reply_time` is
    /// stamped by the client, so this is the time since its last reply plus
    /// the clock skew between the hosts. Shown, never judged (the engine
    /// measures silence on one clock: `crate::clocks`).
    pub reply_age: Option<Duration>,
    /// `reply_time` as sent, on the client's clock: the engine watches it
    /// change.
    pub reply_time: Option<SystemTime>,
    pub slot_name: Option<String>,
    /// WAL the slot holds back: current position minus the slot's `restart_lsn`.
    pub retained_wal: Option<ByteSize>,
}

impl Walsender {
    /// `state` as PostgreSQL's text, for matching and display.
    pub fn state_text(&self) -> Option<&str> {
        self.state.as_ref().map(WalState::as_str)
    }
}

/// One poll's view of the server.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    /// The server is a standby; its walsenders are cascading ones, measured
    /// against the WAL it has received.
    pub in_recovery: bool,
    /// `pg_current_wal_lsn()` on a primary, the received/replayed position on
    /// a standby.
    pub current_lsn: Option<Lsn>,
    /// The server's `statement_timestamp()` of the poll.
    pub server_time: Option<SystemTime>,
    /// The role the daemon is connected as, for GRANT advice.
    pub role: String,
    /// The server's `synchronous_standby_names`, for the quorum guard.
    pub synchronous_standby_names: String,
    pub walsenders: Vec<Walsender>,
    /// Rows whose columns the role could not read (no `pg_monitor`): only pid,
    /// user and application_name are visible. The daemon acts on nothing
    /// while this is non-zero.
    pub hidden: Vec<i32>,
    /// The progress of the walsenders in `backup` (read only when there is
    /// one: [`crate::basebackup::pg::read`]).
    pub basebackups: Vec<crate::basebackup::BackupProgress>,
}

impl Snapshot {
    /// The base backup progress of that process instance, if read.
    pub fn basebackup(&self, id: WalsenderId) -> Option<&crate::basebackup::BackupProgress> {
        self.basebackups.iter().find(|p| p.id == id)
    }
}

/// What the daemon's role may do on this server, checked at every connect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Preflight {
    pub role: String,
    pub superuser: bool,
    /// Member of `pg_read_all_stats` (which `pg_monitor` includes).
    pub can_read: bool,
    /// Member of `pg_signal_backend`.
    pub can_signal: bool,
    /// Has the REPLICATION attribute (`rolreplication`), which dropping a
    /// replication slot needs (as does being superuser).
    pub replication: bool,
    /// Walsenders of superuser roles, which only a superuser may signal:
    /// `name (pid N, role R)`.
    pub superuser_walsenders: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_read_back_as_postgresql_wrote_them() {
        for text in crate::config::KNOWN_STATES {
            let state = WalState::from(*text);
            assert!(!matches!(state, WalState::Unknown(_)), "{text}");
            assert_eq!(state.to_string(), *text);
        }
        let future = WalState::from("some_future_state");
        assert_eq!(future, WalState::Unknown("some_future_state".into()));
        assert_eq!(future.as_str(), "some_future_state");
    }
}
