//! Every SQL statement replwarden sends, in one place, with the choices that
//! depend on the server's major version.

/// The oldest major supported: `pg_stat_replication.reply_time` (12) and
/// slot `wal_status` (13) are relied upon, and 12 is out of support.
pub const OLDEST_MAJOR: u32 = 13;

/// A server's `server_version_num` (e.g. 150018).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ServerVersion(pub u32);

impl ServerVersion {
    pub fn major(self) -> u32 {
        self.0 / 10000
    }
}

/// The poll query. It returns the raw columns (positions as `pg_lsn`,
/// lags as `interval`, times as `timestamptz`) and the server's
/// `statement_timestamp()`; distances and ages are worked out by the
/// client (`snapshot.rs`), which keeps the server's per-row work to what
/// `pg_stat_replication` itself costs (numeric `pg_wal_lsn_diff` and
/// `extract(epoch …)` on every row made the 500-walsender poll ~30 % dearer).
/// `pg_current_wal_lsn()` is only evaluated on a primary (it raises an
/// error during recovery). A LEFT JOIN from `pos` returns one row even when
/// there is no walsender. Every column is named, never `*`: the
/// `pg_stat_replication` columns used are the same on 13-18, and of
/// `pg_replication_slots` (whose columns differ: 17 and 18 add some in the
/// middle) only `slot_name`, `restart_lsn` and `active_pid` are read.
pub const POLL: &str = "\
WITH pos AS (
  SELECT pg_is_in_recovery() AS in_recovery,
         CASE WHEN pg_is_in_recovery()
              THEN greatest(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())
              ELSE pg_current_wal_lsn() END AS current_lsn,
         statement_timestamp() AS now
)
SELECT pos.in_recovery, pos.current_lsn, pos.now, current_user::text AS role,
       current_setting('synchronous_standby_names') AS synchronous_standby_names,
       r.pid, r.backend_start, r.usename::text AS usename, r.application_name,
       r.client_addr, r.state, r.sync_state,
       r.write_lsn, r.flush_lsn, r.replay_lsn,
       r.write_lag, r.flush_lag, r.replay_lag, r.reply_time,
       s.slot_name::text AS slot_name, s.restart_lsn
FROM pos
LEFT JOIN pg_stat_replication r ON r.pid <> pg_backend_pid()
LEFT JOIN pg_replication_slots s ON s.active_pid = r.pid";

/// The signal statements: each finds the walsender by `(pid, backend_start)`
/// in a fresh snapshot, and never the daemon's own backend.
pub const CANCEL: &str = "SELECT pg_cancel_backend(pid) FROM pg_stat_replication \
     WHERE pid = $1 AND backend_start = $2 AND pid <> pg_backend_pid()";
pub const TERMINATE: &str = "SELECT pg_terminate_backend(pid) FROM pg_stat_replication \
     WHERE pid = $1 AND backend_start = $2 AND pid <> pg_backend_pid()";
/// Whether that process instance still exists, to confirm a terminate.
///
/// `pg_terminate_backend(pid, timeout)` (PostgreSQL 14+) is deliberately not
/// used: it checks for the exit in 100 ms steps, so every confirmed kill
/// cost at least 100 ms and the kills of one poll queued behind each other.
/// A walsender exits within a millisecond or two of the signal; asking
/// this after short waits confirms it that fast, on every major.
pub const STILL_THERE: &str =
    "SELECT 1 FROM pg_stat_activity WHERE pid = $1 AND backend_start = $2";

/// What the daemon's role may do, and which walsenders belong to superuser
/// roles (which `pg_signal_backend` cannot signal).
pub const PREFLIGHT: &str = "\
SELECT current_user::text AS role,
       r.rolsuper AS superuser,
       pg_has_role(current_user, 'pg_read_all_stats', 'USAGE') AS can_read,
       pg_has_role(current_user, 'pg_signal_backend', 'USAGE') AS can_signal,
       coalesce((SELECT array_agg(format('%s (pid %s, role %s)', s.application_name, s.pid, su.rolname) ORDER BY s.pid)
                 FROM pg_stat_replication s JOIN pg_roles su ON su.oid = s.usesysid
                 WHERE su.rolsuper), '{}') AS superuser_walsenders
FROM pg_roles r WHERE r.rolname = current_user";

/// Which server process the session is on: a restart, crash or failover
/// changes it.
pub const SERVER_IDENTITY: &str = "SELECT pg_postmaster_start_time()::text || ' ' || \
     coalesce(host(inet_server_addr()), 'local') || ':' || coalesce(inet_server_port()::text, '')";
