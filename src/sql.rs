//! Every SQL statement replwarden sends, in one place, with the choices that
//! depend on the server's major version, and the quoting of names in the
//! SQL it prints as advice.

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

/// The poll, in two statements that return the same columns and exactly
/// what `pg_stat_replication` shows: [`POLL_BY_PID`] and
/// [`POLL_ONE_PASS`]. The client picks one at every poll from the last
/// poll's counts (`crate::poller`); both read everything afresh. Raw
/// columns (positions as `pg_lsn`, lags as `interval`, times as
/// `timestamptz`) and the server's `statement_timestamp()`; distances and
/// ages are worked out by the client (`poller.rs`): numeric
/// `pg_wal_lsn_diff` and `extract(epoch …)` on every row made the
/// 500-walsender poll ~30 % dearer.
///
/// Neither reads the view: the view builds a full
/// `pg_stat_get_activity(NULL)` row for every backend of the server (query
/// text, SSL, GSS, wait events: a lookup in the process array per row) and
/// then joins the few walsenders, so its cost grew with client connections
/// (1.4 ms at 1,000, see BENCHMARKS.md). The walsender array
/// (`pg_stat_get_wal_senders()`, `w`) is read first, and each walsender's
/// identity (`backend_start`, `usesysid`, `application_name`,
/// `client_addr`) with the same activity function: by pid
/// (`pg_stat_get_activity(w.pid)`, one row each), the cheap way when
/// backends outnumber walsenders, or in one pass over all backends, the
/// cheap way with many walsenders among few backends (one lookup per
/// walsender was 10× dearer at 500 walsenders). The choice was once made
/// inside one statement; setting up the branch that did not run cost as
/// much as the ten lookups (BENCHMARKS.md). What grows with connections
/// either way is the copy of every backend's status entry that the first
/// read of activity in a transaction makes: the floor. `backends` (the
/// number of backends in that copy, counted up to `$1`, a `bigint`) is
/// returned for the client's next choice: the ids come one at a time
/// (`pg_stat_get_backend_idset()` in a select list, under `LIMIT`), so
/// counting them costs about 45 ns each, and the client asks for no more
/// than ten per walsender (a full count, 1,016 backends, was 0.06 ms of a
/// 0.24 ms poll; the cumulative statistics' `numbackends` per database
/// 0.035 ms).
///
/// The same two functions as the view's, so the same privileges and the
/// same NULLs for a role without `pg_monitor`. The role name (the view
/// joins `pg_authid`, which only a superuser may read) comes from
/// `pg_get_userbyid()`, a lookup in the backend's role cache, rather than
/// a join of `pg_roles` (a hash of a scan of `pg_authid` at every poll
/// whatever the number of walsenders). For a role that no longer exists
/// (dropped while its walsender streams) that function answers
/// `unknown (OID=n)`, where the view shows NULL; only then is `pg_roles`
/// asked, which gives NULL (or the name, for a role really named so).
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
/// are read. So the texts are the same for every supported major.
macro_rules! poll {
    ($identity:literal) => {
        concat!(
            "\
WITH pos AS (
  SELECT pg_is_in_recovery() AS in_recovery,
         CASE WHEN pg_is_in_recovery()
              THEN greatest(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())
              ELSE pg_current_wal_lsn() END AS current_lsn,
         statement_timestamp() AS now
),
w AS (
  SELECT pid, state, sync_state, write_lsn, flush_lsn, replay_lsn,
         write_lag, flush_lag, replay_lag, reply_time
  FROM pg_stat_get_wal_senders()
  WHERE pid <> pg_backend_pid()
),
r AS (
  SELECT w.*, a.backend_start, a.usesysid, a.application_name, a.client_addr
  FROM ",
            $identity,
            "
)
SELECT pos.in_recovery, pos.current_lsn, pos.now, current_user::text AS role,
       current_setting('synchronous_standby_names') AS synchronous_standby_names,
       (SELECT count(*) FROM (SELECT pg_stat_get_backend_idset() LIMIT $1) b) AS backends,
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
LEFT JOIN pg_replication_slots s ON s.active_pid = r.pid"
        )
    };
}

/// The poll reading each walsender's identity by pid: a walk of the
/// copied status array to the pid and a lookup in the process array per
/// walsender. The walk is as long as the entries before the walsender's:
/// about 8 µs per walsender at 1,000 backends when the walsenders
/// connected before the clients (13-16 give a backend the lowest free
/// slot), about 18 µs when they connected after them, as on 17+ always
/// (walsenders' slots come after every client's; BENCHMARKS.md).
pub const POLL_BY_PID: &str = poll!("w CROSS JOIN LATERAL pg_stat_get_activity(w.pid) a");

/// The poll reading every backend's identity in one pass, as the view
/// does, and joining the walsenders.
pub const POLL_ONE_PASS: &str = poll!("w JOIN pg_stat_get_activity(NULL) a ON a.pid = w.pid");

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
       r.rolreplication AS replication,
       pg_has_role(current_user, 'pg_read_all_stats', 'USAGE') AS can_read,
       pg_has_role(current_user, 'pg_signal_backend', 'USAGE') AS can_signal,
       coalesce((SELECT array_agg(format('%s (pid %s, role %s)', s.application_name, s.pid, su.rolname) ORDER BY s.pid)
                 FROM pg_stat_replication s JOIN pg_roles su ON su.oid = s.usesysid
                 WHERE su.rolsuper), '{}') AS superuser_walsenders
FROM pg_roles r WHERE r.rolname = current_user";

/// Sent once per session, before anything else: the server's own bound on
/// every statement and lock wait (`statement_timeout`, at least 1 ms: 0
/// would mean none), and no transaction left idle.
pub fn session_setup(statement_timeout: std::time::Duration) -> String {
    format!(
        "SET statement_timeout = {}; SET lock_timeout = {0}; SET idle_in_transaction_session_timeout = '60s'",
        statement_timeout.as_millis().max(1)
    )
}

/// The server's version (number and text) and whether
/// `target_session_attrs` accepts it: in recovery, read-only by default.
pub const SERVER_STATE: &str =
    "SELECT current_setting('server_version_num'), current_setting('server_version'), \
     pg_is_in_recovery(), current_setting('default_transaction_read_only')::bool";

/// Which server process the session is on: a restart, crash or failover
/// changes it.
pub const SERVER_IDENTITY: &str = "SELECT pg_postmaster_start_time()::text || ' ' || \
     coalesce(host(inet_server_addr()), 'local') || ':' || coalesce(inet_server_port()::text, '')";

// Replication slots (`[[slot_rule]]`, `crate::slots`). Every column is
// read by name: `pg_replication_slots` gains columns in the middle (14
// `two_phase`, 16 `conflicting`, 17 `inactive_since`,
// `invalidation_reason`, `failover`, `synced`, 18 `two_phase_at`); what 13
// lacks of what is read here (17's `synced` and `inactive_since`, and the
// `synchronized_standby_slots` setting) reads as false and NULL, so both
// texts return the same columns. One row even without a slot (LEFT JOIN
// from the position), so the position is always read.

/// The slots on 13-16.
pub const SLOTS: &str = "\
SELECT pos.in_recovery, pos.current_lsn, pos.now,
       s.slot_name::text AS slot_name, s.slot_type, s.database::text AS database,
       s.plugin::text AS plugin, s.temporary, s.active, s.active_pid, s.restart_lsn,
       s.confirmed_flush_lsn, s.xmin::text::bigint AS xmin,
       s.catalog_xmin::text::bigint AS catalog_xmin,
       s.wal_status, false AS synced, NULL::timestamptz AS inactive_since,
       NULL::text AS invalidation_reason, false AS synchronized_standby
FROM (SELECT pg_is_in_recovery() AS in_recovery,
             CASE WHEN pg_is_in_recovery()
                  THEN greatest(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())
                  ELSE pg_current_wal_lsn() END AS current_lsn,
             statement_timestamp() AS now) pos
LEFT JOIN pg_replication_slots s ON true";

/// The names in `synchronized_standby_slots` (17+), as the server reads
/// them (`SplitIdentifierString`): a comma-separated list of identifiers,
/// double-quoted or folded to lower case, with any whitespace around each
/// (space, tab, newline, carriage return, form feed, vertical tab: what
/// the server's `scanner_isspace` skips) trimmed.
macro_rules! synchronized_standby_slots {
    () => {
        "(SELECT CASE WHEN n LIKE '\"%' THEN btrim(n, '\"') ELSE lower(n) END \
         FROM (SELECT btrim(x, E' \\t\\n\\r\\f\\013') AS n \
               FROM unnest(string_to_array(current_setting('synchronized_standby_slots'), ',')) x) l \
         WHERE n <> '')"
    };
}

/// The slots on 17+: also `synced`, `inactive_since`, and whether the slot
/// is named in `synchronized_standby_slots`.
pub const SLOTS_17: &str = concat!(
    "\
SELECT pos.in_recovery, pos.current_lsn, pos.now,
       s.slot_name::text AS slot_name, s.slot_type, s.database::text AS database,
       s.plugin::text AS plugin, s.temporary, s.active, s.active_pid, s.restart_lsn,
       s.confirmed_flush_lsn, s.xmin::text::bigint AS xmin,
       s.catalog_xmin::text::bigint AS catalog_xmin,
       s.wal_status, s.synced, s.inactive_since, s.invalidation_reason,
       s.slot_name::text IN ",
    synchronized_standby_slots!(),
    " AS synchronized_standby
FROM (SELECT pg_is_in_recovery() AS in_recovery,
             CASE WHEN pg_is_in_recovery()
                  THEN greatest(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())
                  ELSE pg_current_wal_lsn() END AS current_lsn,
             statement_timestamp() AS now) pos
LEFT JOIN pg_replication_slots s ON true"
);

/// The drop with its re-check (see [`DROP_SLOT`]), with `$more` conditions
/// for the majors that have more to check.
macro_rules! drop_slot {
    ($more:expr) => {
        concat!(
            "\
SELECT CASE WHEN NOT s.active AND NOT s.temporary AND s.restart_lsn IS NOT DISTINCT FROM $2
                 AND s.confirmed_flush_lsn IS NOT DISTINCT FROM $3
                 AND s.xmin::text::bigint IS NOT DISTINCT FROM $4::bigint
                 AND s.catalog_xmin::text::bigint IS NOT DISTINCT FROM $5::bigint
                 AND s.slot_type = $6 AND s.database::text IS NOT DISTINCT FROM $7::text
                 AND s.plugin::text IS NOT DISTINCT FROM $8::text
                 AND (s.restart_lsn IS NOT NULL OR s.xmin IS NOT NULL OR s.catalog_xmin IS NOT NULL
                      OR s.wal_status = 'lost')",
            $more,
            "
            THEN (SELECT true FROM pg_drop_replication_slot(s.slot_name))
            ELSE false END AS dropped,
       s.active, s.restart_lsn, s.confirmed_flush_lsn,
       s.xmin::text::bigint AS xmin, s.catalog_xmin::text::bigint AS catalog_xmin,
       s.slot_type, s.database::text AS database, s.plugin::text AS plugin
FROM pg_replication_slots s WHERE s.slot_name = $1"
        )
    };
}

/// Drops slot `$1` only if, at that moment, it is still inactive, not
/// temporary, still the slot judged (same `slot_type` `$6`, database and
/// plugin `$7`, `$8`), still unused (`restart_lsn`, `confirmed_flush_lsn`,
/// `xmin` and `catalog_xmin` still `$2`..`$5`, NULL for NULL) and still
/// holds something (a position or an xmin) or is lost: a client that came
/// back (active) or used it in between (moved any of them) keeps it, and
/// so does a slot re-created under that name. The
/// CASE calls `pg_drop_replication_slot` only when the re-check passes; if
/// the slot is acquired between the re-check and the drop, the function
/// itself refuses (`55006`, "replication slot … is active for PID …").
/// One row per slot of that name (none: it is gone): `dropped`, and what
/// kept it.
pub const DROP_SLOT: &str = drop_slot!("");

/// [`DROP_SLOT`] on 17+: nor a `synced` slot, nor one named in
/// `synchronized_standby_slots`.
pub const DROP_SLOT_17: &str = drop_slot!(concat!(
    "\n                 AND NOT s.synced AND s.slot_name::text NOT IN ",
    synchronized_standby_slots!()
));

/// The progress of base backups (13+), read only in polls that saw a
/// walsender in state `backup` (`crate::basebackup::pg`). `backend_start`
/// comes from the same statement, so from the same activity snapshot as the
/// progress row: the daemon lends a row only to the walsender with that
/// pid *and* `backend_start`, so a pid reused between the poll and this
/// read lends its progress to no one. Rows the role may not read (no
/// `pg_monitor`: NULL columns) are left out; their walsenders are not
/// judged. The view and its columns are the same on 13-18.
pub const BASEBACKUP_PROGRESS: &str = "\
SELECT p.pid, a.backend_start, p.phase, p.backup_total, p.backup_streamed,
       p.tablespaces_total, p.tablespaces_streamed
FROM pg_stat_progress_basebackup p
CROSS JOIN LATERAL pg_stat_get_activity(p.pid) a
WHERE p.phase IS NOT NULL AND p.backup_streamed IS NOT NULL AND a.backend_start IS NOT NULL";

/// A role name as SQL needs it: bare when that is unambiguous, else quoted.
pub fn quote_ident(name: &str) -> String {
    let plain = !name.is_empty()
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if plain {
        name.to_string()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_session_timeout_is_never_zero() {
        assert_eq!(
            session_setup(Duration::from_micros(10)),
            "SET statement_timeout = 1; SET lock_timeout = 1; SET idle_in_transaction_session_timeout = '60s'"
        );
        assert!(session_setup(Duration::from_secs(5)).starts_with("SET statement_timeout = 5000;"));
    }

    #[test]
    fn names_are_quoted_only_when_needed() {
        assert_eq!(quote_ident("replwarden"), "replwarden");
        assert_eq!(quote_ident("Ops"), "\"Ops\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_ident(""), "\"\"");
    }
}
