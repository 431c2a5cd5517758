//! Reads a [`Snapshot`] from the server: the poll statements
//! ([`crate::sql::POLL_BY_PID`], [`crate::sql::POLL_ONE_PASS`]), both
//! prepared once per connection, one of them run per poll in its own
//! implicit transaction, chosen by the last poll's counts ([`Way`]); and
//! the decoding of their rows (tokio-postgres `FromSql`). The server returns raw
//! positions, intervals and times; byte distances and ages are worked out
//! here, against the server's own clock and WAL position of the same
//! statement. Also the preflight row ([`Preflight::read`]). The domain types
//! it fills are in [`crate::snapshot`], which knows nothing of the driver.

use std::fmt;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use tokio_postgres::row::RowIndex;
use tokio_postgres::types::{accepts, FromSql, PgLsn, Type};
use tokio_postgres::{Client, Row, Statement};

use crate::snapshot::{ClientAddr, Preflight, Snapshot, WalState, Walsender, WalsenderId};
use crate::units::{ByteSize, Lsn};

/// How a poll reads the walsenders' identity (see [`crate::sql::POLL_BY_PID`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Way {
    /// One activity lookup per walsender: the cheap way when backends
    /// outnumber walsenders (a few walsenders on a server with many client
    /// connections, the usual case).
    ByPid,
    /// One pass over every backend, as `pg_stat_replication` does: the cheap
    /// way with many walsenders among few backends.
    OnePass,
}

impl Way {
    /// The way for the next poll, from this poll's count of walsenders and
    /// of backends: by pid when there are at least ten backends per
    /// walsender (where one lookup per walsender costs less than a row per
    /// backend; at 500 walsenders among 520 backends the lookups were 10×
    /// dearer). Both ways return the same rows; only the cost differs, so
    /// a choice made on counts one poll old is never wrong, at worst dearer
    /// for one poll.
    ///
    /// `backends` may be counted only up to [`Way::backends_to_count`]
    /// of the same poll's walsenders.
    pub fn next(walsenders: usize, backends: usize) -> Way {
        if backends >= walsenders.saturating_mul(10) {
            Way::ByPid
        } else {
            Way::OnePass
        }
    }

    /// How far to count backends, with `walsenders` seen by the last poll:
    /// far enough to tell whether there are ten per walsender (if the
    /// walsenders grow meanwhile, a short count reads one pass for one
    /// poll).
    pub fn backends_to_count(walsenders: usize) -> i64 {
        i64::try_from(walsenders.max(1).saturating_mul(10)).unwrap_or(i64::MAX)
    }
}

/// The poll statements, prepared once per connection, and the way the next
/// poll will read.
pub struct Poller {
    by_pid: (Statement, Columns),
    one_pass: (Statement, Columns),
    /// The next poll reads by pid (else in one pass). An atomic, not a
    /// `Cell`, so that a `&Poller` can be held across an `.await` by a
    /// future that must be `Send`.
    by_pid_next: AtomicBool,
    /// The walsenders the last poll saw.
    walsenders: AtomicUsize,
}

impl Poller {
    pub async fn prepare(client: &Client) -> Result<Poller, tokio_postgres::Error> {
        let by_pid = client.prepare(crate::sql::POLL_BY_PID).await?;
        let one_pass = client.prepare(crate::sql::POLL_ONE_PASS).await?;
        Ok(Poller {
            by_pid: (by_pid.clone(), Columns::of(&by_pid)),
            one_pass: (one_pass.clone(), Columns::of(&one_pass)),
            // The usual case; a first poll of many walsenders among few
            // backends pays for a wrong guess once.
            by_pid_next: AtomicBool::new(true),
            walsenders: AtomicUsize::new(0),
        })
    }

    /// How the next [`Poller::poll`] will read.
    pub fn next_read(&self) -> Way {
        if self.by_pid_next.load(Ordering::Relaxed) {
            Way::ByPid
        } else {
            Way::OnePass
        }
    }

    /// Runs the poll query once (one implicit transaction: a fresh
    /// activity snapshot every time), the way the last poll's counts chose.
    pub async fn poll(&self, client: &Client) -> Result<Snapshot, tokio_postgres::Error> {
        self.poll_reading(client, self.next_read()).await
    }

    /// Runs the poll query once, the given way, and chooses the next way
    /// from what it read.
    pub async fn poll_reading(
        &self,
        client: &Client,
        read: Way,
    ) -> Result<Snapshot, tokio_postgres::Error> {
        let (statement, columns) = match read {
            Way::ByPid => &self.by_pid,
            Way::OnePass => &self.one_pass,
        };
        let count = Way::backends_to_count(self.walsenders.load(Ordering::Relaxed));
        let rows = client.query(statement, &[&count]).await?;
        let (snapshot, backends) = from_rows(&rows, columns)?;
        let walsenders = snapshot.walsenders.len() + snapshot.hidden.len();
        self.walsenders.store(walsenders, Ordering::Relaxed);
        self.by_pid_next.store(
            Way::next(walsenders, backends) == Way::ByPid,
            Ordering::Relaxed,
        );
        Ok(snapshot)
    }
}

/// Where each column of the poll is in its rows, found once when the
/// statement is prepared: looking every value up by name (a search
/// through the row's column names each time) was a third of the daemon's
/// own CPU per poll with 10 walsenders (callgrind, BENCHMARKS.md).
struct Columns {
    in_recovery: usize,
    current_lsn: usize,
    now: usize,
    role: usize,
    synchronous_standby_names: usize,
    backends: usize,
    pid: usize,
    backend_start: usize,
    usename: usize,
    application_name: usize,
    client_addr: usize,
    state: usize,
    sync_state: usize,
    write_lsn: usize,
    flush_lsn: usize,
    replay_lsn: usize,
    write_lag: usize,
    flush_lag: usize,
    replay_lag: usize,
    reply_time: usize,
    slot_name: usize,
    restart_lsn: usize,
}

impl Columns {
    /// Panics if a poll statement lacks a column: both are constants of
    /// this build, and every test that polls would show it.
    fn of(statement: &Statement) -> Columns {
        let names: Vec<&str> = statement.columns().iter().map(|c| c.name()).collect();
        let at = |name: &str| {
            names
                .iter()
                .position(|n| *n == name)
                .unwrap_or_else(|| panic!("the poll statement returns no column {name}"))
        };
        Columns {
            in_recovery: at("in_recovery"),
            current_lsn: at("current_lsn"),
            now: at("now"),
            role: at("role"),
            synchronous_standby_names: at("synchronous_standby_names"),
            backends: at("backends"),
            pid: at("pid"),
            backend_start: at("backend_start"),
            usename: at("usename"),
            application_name: at("application_name"),
            client_addr: at("client_addr"),
            state: at("state"),
            sync_state: at("sync_state"),
            write_lsn: at("write_lsn"),
            flush_lsn: at("flush_lsn"),
            replay_lsn: at("replay_lsn"),
            write_lag: at("write_lag"),
            flush_lag: at("flush_lag"),
            replay_lag: at("replay_lag"),
            reply_time: at("reply_time"),
            slot_name: at("slot_name"),
            restart_lsn: at("restart_lsn"),
        }
    }
}

/// A PostgreSQL `interval` as a duration (negative ones as zero). Lags
/// are short: a month counts as 30 days, as `extract(epoch …)` would.
struct Interval(Duration);

impl<'a> FromSql<'a> for Interval {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        let field =
            |at: usize, len: usize| -> Result<&[u8], Box<dyn std::error::Error + Sync + Send>> {
                raw.get(at..at + len)
                    .ok_or_else(|| "interval: short value".into())
            };
        let micros = i64::from_be_bytes(field(0, 8)?.try_into()?);
        let days = i32::from_be_bytes(field(8, 4)?.try_into()?);
        let months = i32::from_be_bytes(field(12, 4)?.try_into()?);
        let total =
            i128::from(micros) + (i128::from(days) + i128::from(months) * 30) * 86_400_000_000;
        Ok(Interval(Duration::from_micros(
            u64::try_from(total.max(0)).unwrap_or(u64::MAX),
        )))
    }

    accepts!(INTERVAL);
}

/// `state` from its text, without a copy for the states this build knows.
impl<'a> FromSql<'a> for WalState {
    fn from_sql(
        ty: &Type,
        raw: &'a [u8],
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        <&str as FromSql>::from_sql(ty, raw).map(WalState::from)
    }

    fn accepts(ty: &Type) -> bool {
        <&str as FromSql>::accepts(ty)
    }
}

/// `later - earlier` on the server's clock, zero if negative.
fn age(now: SystemTime, then: SystemTime) -> Duration {
    now.duration_since(then).unwrap_or_default()
}

/// How far `position` is behind `current` (zero if ahead).
fn behind(current: Option<Lsn>, position: Option<Lsn>) -> Option<ByteSize> {
    Some(ByteSize(current?.0.saturating_sub(position?.0)))
}

fn lsn<I: RowIndex + fmt::Display>(
    row: &Row,
    column: I,
) -> Result<Option<Lsn>, tokio_postgres::Error> {
    Ok(row.try_get::<_, Option<PgLsn>>(column)?.map(Lsn::from))
}

fn lag<I: RowIndex + fmt::Display>(
    row: &Row,
    column: I,
) -> Result<Option<Duration>, tokio_postgres::Error> {
    Ok(row.try_get::<_, Option<Interval>>(column)?.map(|i| i.0))
}

/// The snapshot, and the number of backends the server had.
fn from_rows(rows: &[Row], c: &Columns) -> Result<(Snapshot, usize), tokio_postgres::Error> {
    let mut snapshot = Snapshot::default();
    let mut backends = 0;
    // The server's values are the same on every row.
    if let Some(row) = rows.first() {
        backends = usize::try_from(row.try_get::<_, i64>(c.backends)?).unwrap_or(0);
        snapshot.in_recovery = row.try_get(c.in_recovery)?;
        snapshot.current_lsn = lsn(row, c.current_lsn)?;
        snapshot.role = row.try_get(c.role)?;
        snapshot.synchronous_standby_names = row.try_get(c.synchronous_standby_names)?;
    }
    for row in rows {
        let now: SystemTime = row.try_get(c.now)?;
        snapshot.server_time = Some(now);
        let Some(pid) = row.try_get::<_, Option<i32>>(c.pid)? else {
            continue;
        };
        let backend_start: Option<SystemTime> = row.try_get(c.backend_start)?;
        let state: Option<WalState> = row.try_get(c.state)?;
        let (Some(backend_start), Some(state)) = (backend_start, state) else {
            snapshot.hidden.push(pid);
            continue;
        };
        let client_addr = match row.try_get::<_, Option<IpAddr>>(c.client_addr)? {
            None => ClientAddr::Local,
            Some(ip) => ClientAddr::Ip(ip),
        };
        let current = snapshot.current_lsn;
        let flush_lsn = lsn(row, c.flush_lsn)?;
        let reply_time: Option<SystemTime> = row.try_get(c.reply_time)?;
        snapshot.walsenders.push(Walsender {
            id: WalsenderId { pid, backend_start },
            age: age(now, backend_start),
            application_name: row
                .try_get::<_, Option<String>>(c.application_name)?
                .unwrap_or_default(),
            user: row.try_get(c.usename)?,
            client_addr,
            state: Some(state),
            sync_state: row.try_get(c.sync_state)?,
            flush_lsn,
            write_lag: lag(row, c.write_lag)?,
            flush_lag: lag(row, c.flush_lag)?,
            replay_lag: lag(row, c.replay_lag)?,
            write_lag_bytes: behind(current, lsn(row, c.write_lsn)?),
            flush_lag_bytes: behind(current, flush_lsn),
            replay_lag_bytes: behind(current, lsn(row, c.replay_lsn)?),
            reply_age: reply_time.map(|t| age(now, t)),
            reply_time,
            slot_name: row.try_get(c.slot_name)?,
            retained_wal: behind(current, lsn(row, c.restart_lsn)?),
        });
    }
    // In pid order, as the plan and the logs show them.
    snapshot.walsenders.sort_unstable_by_key(|w| w.id.pid);
    Ok((snapshot, backends))
}

impl Preflight {
    pub async fn read(client: &Client) -> Result<Preflight, tokio_postgres::Error> {
        let row = client.query_one(crate::sql::PREFLIGHT, &[]).await?;
        Ok(Preflight {
            role: row.try_get("role")?,
            superuser: row.try_get("superuser")?,
            can_read: row.try_get("can_read")?,
            can_signal: row.try_get("can_signal")?,
            replication: row.try_get("replication")?,
            superuser_walsenders: row.try_get("superuser_walsenders")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn interval(micros: i64, days: i32, months: i32) -> Duration {
        let mut raw = micros.to_be_bytes().to_vec();
        raw.extend(days.to_be_bytes());
        raw.extend(months.to_be_bytes());
        Interval::from_sql(&Type::INTERVAL, &raw).unwrap().0
    }

    #[test]
    fn intervals_decode_from_the_wire_format() {
        assert_eq!(interval(1_500, 0, 0), Duration::from_micros(1_500));
        assert_eq!(interval(2, 1, 0), Duration::from_micros(86_400_000_002));
        assert_eq!(interval(0, 0, 1), Duration::from_secs(30 * 86_400));
        assert_eq!(
            interval(-5, 0, 0),
            Duration::ZERO,
            "a clock step back reads as no lag"
        );
        assert!(Interval::from_sql(&Type::INTERVAL, &[0; 8]).is_err());
    }

    #[test]
    fn reads_by_pid_with_ten_backends_per_walsender() {
        assert_eq!(
            Way::next(0, 0),
            Way::ByPid,
            "no walsender: nothing to look up"
        );
        assert_eq!(Way::next(10, 1000), Way::ByPid);
        assert_eq!(Way::next(10, 100), Way::ByPid);
        assert_eq!(Way::next(10, 99), Way::OnePass);
        assert_eq!(Way::next(500, 520), Way::OnePass);
        for walsenders in [0, 1, 10, 500] {
            let counted = usize::try_from(Way::backends_to_count(walsenders)).unwrap();
            assert_eq!(Way::next(walsenders, counted), Way::ByPid, "{walsenders}");
        }
    }

    #[test]
    fn distances_and_ages_never_go_negative() {
        assert_eq!(behind(Some(Lsn(100)), Some(Lsn(40))), Some(ByteSize(60)));
        assert_eq!(behind(Some(Lsn(40)), Some(Lsn(100))), Some(ByteSize(0)));
        assert_eq!(behind(None, Some(Lsn(1))), None);
        assert_eq!(behind(Some(Lsn(1)), None), None);
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(100);
        assert_eq!(age(t, t - Duration::from_secs(3)), Duration::from_secs(3));
        assert_eq!(age(t, t + Duration::from_secs(3)), Duration::ZERO);
    }
}
