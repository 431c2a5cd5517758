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
/// client (`snapshot.rs`): numeric `pg_wal_lsn_diff` and
/// `extract(epoch …)` on every row made the 500-walsender poll ~30 % dearer.
///
/// It returns what `pg_stat_replication` shows, but does not read the
/// view: the view builds a full `pg_stat_get_activity(NULL)` row for every
/// backend of the server (query text, SSL, GSS, wait events: a lookup in
/// the process array per row) and then joins the few walsenders, so its
/// cost grew with client connections (2 ms at 1,000, see BENCHMARKS.md).
/// Here the walsender array (`pg_stat_get_wal_senders()`, `w`) is read
/// first, and each walsender's identity (`backend_start`, `usesysid`,
/// `application_name`, `client_addr`) is looked up with the same activity
/// function, by pid (`pg_stat_get_activity(w.pid)`, one row each), when
/// the server has at least 10 backends per walsender; otherwise (many
/// walsenders among few backends, where one lookup per walsender is the
/// dearer way: 10× at 500 walsenders) with one pass over all backends, as
/// the view does. The choice is made in the statement (`few`, reading at
/// most 10 backend ids per walsender), and only the chosen branch runs
/// (a one-time filter). What still grows with connections either way is
/// the copy of every backend's status entry that the first read of
/// activity in a transaction makes: the floor.
///
/// The same two functions as the view's, so the same privileges and the
/// same NULLs for a role without `pg_monitor`. The role name (the view
/// joins `pg_authid`, which only a superuser may read) comes from
/// `pg_get_userbyid()`, a lookup in the backend's role cache, rather than
/// a join of `pg_roles` (a hash of a scan of `pg_authid` at every poll
/// whatever the number of walsenders: 0.045 ms beside the lookups alone,
/// the cache 0.017 ms for ten; in the whole poll 0.008 ms saved of 0.25,
/// BENCHMARKS.md). For a role that no longer exists (dropped while
/// its walsender streams) that function answers `unknown (OID=n)`, where
/// the view shows NULL; only then is `pg_roles` asked, which gives NULL
/// (or the name, for a role really named so).
/// Both joins are inner joins, as the view's is: a walsender in the array
/// whose status entry the activity read does not find (it exited between
/// the two reads) is left out, as the view leaves it out, rather than
/// returned with NULL identity (which would read as a row hidden by
/// privileges and hold every action of that poll).
///
/// `pg_current_wal_lsn()` is only evaluated on a primary (it raises an
/// error during recovery). A LEFT JOIN from `pos` returns one row even when
/// there is no walsender. Every column is named, never `*` or by
/// position: `pg_stat_get_activity`'s columns differ between majors (14
/// adds `query_id` and drops `sslcompression`, 16 adds `gss_delegation`),
/// the ones read here are the same on 13-18, as are those of
/// `pg_stat_get_wal_senders()`; of `pg_replication_slots` (17 and 18 add
/// columns in the middle) only `slot_name`, `restart_lsn` and `active_pid`
/// are read. So the text is the same for every supported major.
pub const POLL: &str = "\
WITH pos AS (
  SELECT pg_is_in_recovery() AS in_recovery,
         CASE WHEN pg_is_in_recovery()
              THEN greatest(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())
              ELSE pg_current_wal_lsn() END AS current_lsn,
         statement_timestamp() AS now
),
w AS MATERIALIZED (
  SELECT pid, state, sync_state, write_lsn, flush_lsn, replay_lsn,
         write_lag, flush_lag, replay_lag, reply_time
  FROM pg_stat_get_wal_senders()
  WHERE pid <> pg_backend_pid()
),
few AS MATERIALIZED (
  SELECT count(*) >= 10 * (SELECT count(*) FROM w) AS by_pid
  FROM (SELECT pg_stat_get_backend_idset() LIMIT 10 * (SELECT count(*) FROM w)) b
),
r AS (
  SELECT w.*, a.backend_start, a.usesysid, a.application_name, a.client_addr
  FROM w CROSS JOIN LATERAL pg_stat_get_activity(w.pid) a
  WHERE (SELECT by_pid FROM few)
  UNION ALL
  SELECT w.*, a.backend_start, a.usesysid, a.application_name, a.client_addr
  FROM w JOIN pg_stat_get_activity(NULL) a ON a.pid = w.pid
  WHERE NOT (SELECT by_pid FROM few)
)
SELECT pos.in_recovery, pos.current_lsn, pos.now, current_user::text AS role,
       current_setting('synchronous_standby_names') AS synchronous_standby_names,
       r.pid, r.backend_start,
       CASE WHEN pg_get_userbyid(r.usesysid) <> format('unknown (OID=%s)', r.usesysid)
            THEN pg_get_userbyid(r.usesysid)::text
            ELSE (SELECT u.rolname::text FROM pg_roles u WHERE u.oid = r.usesysid) END AS usename,
       r.application_name, r.client_addr, r.state, r.sync_state,
       r.write_lsn, r.flush_lsn, r.replay_lsn,
       r.write_lag, r.flush_lag, r.replay_lag, r.reply_time,
       s.slot_name::text AS slot_name, s.restart_lsn
FROM pos
LEFT JOIN r ON true
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
