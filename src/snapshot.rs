//! What one poll sees: one [`Walsender`] per row of `pg_stat_replication`
//! (with its slot and byte distances computed in SQL), read by a single
//! prepared statement, in its own implicit transaction, on a primary or on a
//! cascading standby alike. All the SQL that reads the server lives here.

use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use tokio_postgres::types::PgLsn;
use tokio_postgres::{Client, Row, Statement};

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
    /// Something `host()` printed that is not an address; matches no CIDR.
    Other(String),
}

impl fmt::Display for ClientAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientAddr::Local => f.write_str("local"),
            ClientAddr::Ip(ip) => ip.fmt(f),
            ClientAddr::Other(text) => f.write_str(text),
        }
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
    pub age: Duration,
    pub application_name: String,
    pub user: Option<String>,
    pub client_addr: ClientAddr,
    /// Kept as text: a newer server may report a state this build does not know.
    pub state: Option<String>,
    pub sync_state: Option<String>,
    pub flush_lsn: Option<Lsn>,
    pub write_lag: Option<Duration>,
    pub flush_lag: Option<Duration>,
    pub replay_lag: Option<Duration>,
    /// The server's current WAL position minus `write_lsn`, and so on.
    pub write_lag_bytes: Option<ByteSize>,
    pub flush_lag_bytes: Option<ByteSize>,
    pub replay_lag_bytes: Option<ByteSize>,
    /// Time since the standby's last reply (`reply_time`), by the server's clock.
    pub reply_age: Option<Duration>,
    pub slot_name: Option<String>,
    /// WAL the slot holds back: current position minus the slot's `restart_lsn`.
    pub retained_wal: Option<ByteSize>,
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
    /// The role the daemon is connected as, for GRANT advice.
    pub role: String,
    /// The server's `synchronous_standby_names`, for the quorum guard.
    pub synchronous_standby_names: String,
    pub walsenders: Vec<Walsender>,
    /// Rows whose columns the role could not read (no `pg_monitor`): only pid,
    /// user and application_name are visible. The daemon acts on nothing
    /// while this is non-zero.
    pub hidden: Vec<i32>,
}

/// The poll statement, prepared once per connection.
pub struct Poller {
    statement: Statement,
}

impl Poller {
    pub async fn prepare(client: &Client) -> Result<Poller, tokio_postgres::Error> {
        Ok(Poller {
            statement: client.prepare(crate::sql::POLL).await?,
        })
    }

    /// Runs the poll query once (one implicit transaction: a fresh
    /// `pg_stat_replication` snapshot every time).
    pub async fn poll(&self, client: &Client) -> Result<Snapshot, tokio_postgres::Error> {
        let rows = client.query(&self.statement, &[]).await?;
        from_rows(&rows)
    }
}

fn micros(us: Option<i64>) -> Option<Duration> {
    us.map(|us| Duration::from_micros(us.max(0) as u64))
}

fn bytes(b: Option<i64>) -> Option<ByteSize> {
    b.map(|b| ByteSize(b.max(0) as u64))
}

fn from_rows(rows: &[Row]) -> Result<Snapshot, tokio_postgres::Error> {
    let mut snapshot = Snapshot::default();
    for row in rows {
        snapshot.in_recovery = row.try_get("in_recovery")?;
        snapshot.current_lsn = row
            .try_get::<_, Option<PgLsn>>("current_lsn")?
            .map(Lsn::from);
        snapshot.role = row.try_get("role")?;
        snapshot.synchronous_standby_names = row.try_get("synchronous_standby_names")?;
        let Some(pid) = row.try_get::<_, Option<i32>>("pid")? else {
            continue;
        };
        let backend_start: Option<SystemTime> = row.try_get("backend_start")?;
        let state: Option<String> = row.try_get("state")?;
        let (Some(backend_start), Some(state)) = (backend_start, state) else {
            snapshot.hidden.push(pid);
            continue;
        };
        let client_addr = match row.try_get::<_, Option<String>>("client_addr")? {
            None => ClientAddr::Local,
            Some(text) => match text.parse() {
                Ok(ip) => ClientAddr::Ip(ip),
                Err(_) => ClientAddr::Other(text),
            },
        };
        snapshot.walsenders.push(Walsender {
            id: WalsenderId { pid, backend_start },
            age: micros(row.try_get("backend_age_us")?).unwrap_or_default(),
            application_name: row
                .try_get::<_, Option<String>>("application_name")?
                .unwrap_or_default(),
            user: row.try_get("usename")?,
            client_addr,
            state: Some(state),
            sync_state: row.try_get("sync_state")?,
            flush_lsn: row.try_get::<_, Option<PgLsn>>("flush_lsn")?.map(Lsn::from),
            write_lag: micros(row.try_get("write_lag_us")?),
            flush_lag: micros(row.try_get("flush_lag_us")?),
            replay_lag: micros(row.try_get("replay_lag_us")?),
            write_lag_bytes: bytes(row.try_get("write_lag_bytes")?),
            flush_lag_bytes: bytes(row.try_get("flush_lag_bytes")?),
            replay_lag_bytes: bytes(row.try_get("replay_lag_bytes")?),
            reply_age: micros(row.try_get("reply_age_us")?),
            slot_name: row.try_get("slot_name")?,
            retained_wal: bytes(row.try_get("retained_wal")?),
        });
    }
    Ok(snapshot)
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
    /// Walsenders of superuser roles, which only a superuser may signal:
    /// `name (pid N, role R)`.
    pub superuser_walsenders: Vec<String>,
}

impl Preflight {
    pub async fn read(client: &Client) -> Result<Preflight, tokio_postgres::Error> {
        let row = client.query_one(crate::sql::PREFLIGHT, &[]).await?;
        Ok(Preflight {
            role: row.try_get("role")?,
            superuser: row.try_get("superuser")?,
            can_read: row.try_get("can_read")?,
            can_signal: row.try_get("can_signal")?,
            superuser_walsenders: row.try_get("superuser_walsenders")?,
        })
    }
}
