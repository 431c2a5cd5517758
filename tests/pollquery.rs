//! The poll statements (`sql::POLL_BY_PID`, each walsender's identity
//! looked up by pid; `sql::POLL_ONE_PASS`, one pass over all backends)
//! against `pg_stat_replication`, on every supported major there are
//! server binaries for (see `tests/majors.rs`):
//!
//! - each returns exactly the view's rows, value by value, for a role with
//!   `pg_monitor` and for one without it (the same NULLs), whichever way
//!   the Poller would choose, and the Poller decodes both;
//! - the Poller reads in one pass with few backends per walsender and by
//!   pid once backends outnumber walsenders tenfold;
//! - a walsender in the walsender array that the activity read does not find
//!   (what a walsender exiting between the two reads looks like) is left
//!   out, as the view leaves it out, not returned with NULL identity (which
//!   the daemon would read as a row hidden by privileges);
//!
//! What the poll costs against the view, with 10 to 1,000 idle client
//! connections, is measured by `cargo bench --bench live -- connections`
//! (BENCHMARKS.md), not asserted here: a cost is a benchmark, not a test.

mod harness;

use std::time::Duration;

use harness::{on_every_major, wait_until, Client, Cluster};
use replwarden::poller::{Poller, Way};
use replwarden::snapshot::Snapshot;
use replwarden::sql::{OLDEST_MAJOR, POLL_BY_PID, POLL_ONE_PASS};

/// A tokio-postgres session as `user`, with its own runtime.
struct Session {
    rt: tokio::runtime::Runtime,
    client: tokio_postgres::Client,
    poller: Poller,
}

impl Session {
    fn connect(cluster: &Cluster, user: &str) -> Session {
        let harness::Direct { rt, client } = cluster.direct(user);
        let poller = rt
            .block_on(Poller::prepare(&client))
            .unwrap_or_else(|e| panic!("prepare the poll as {user}: {e}"));
        Session { rt, client, poller }
    }

    fn execute(&self, sql: &str) {
        self.rt
            .block_on(self.client.batch_execute(sql))
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    fn count(&self, sql: &str) -> i64 {
        self.rt
            .block_on(self.client.query_one(sql, &[]))
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .get(0)
    }

    /// The daemon's poll, read `read`'s way, decoded.
    fn poll(&self, read: Way) -> Snapshot {
        self.rt
            .block_on(self.poller.poll_reading(&self.client, read))
            .expect("the poll")
    }
}

/// Every column the poll returns per walsender, in the view's terms.
const COLUMNS: &str = "pid, backend_start, usename, application_name, client_addr, state, \
    sync_state, write_lsn, flush_lsn, replay_lsn, write_lag, flush_lag, replay_lag, \
    reply_time, slot_name, restart_lsn";

/// Both poll statements, the way the Poller names them.
const STATEMENTS: [(Way, &str); 2] = [(Way::ByPid, POLL_BY_PID), (Way::OnePass, POLL_ONE_PASS)];

/// How far the poll statements count backends (their `$1`), here.
const COUNT_BACKENDS: i64 = 1000;

/// The walsender rows of the poll statement `poll` and
/// `pg_stat_replication`'s (with the slot join the old poll made), each row
/// as text in pid order, read in ONE statement: both see the same activity
/// snapshot.
fn side_by_side(session: &Session, poll: &str) -> (Vec<String>, Vec<String>) {
    let sql = format!(
        "WITH p AS ({poll}),
         v AS (SELECT r.pid, r.backend_start, r.usename::text AS usename, r.application_name,
                      r.client_addr, r.state, r.sync_state, r.write_lsn, r.flush_lsn, r.replay_lsn,
                      r.write_lag, r.flush_lag, r.replay_lag, r.reply_time,
                      s.slot_name::text AS slot_name, s.restart_lsn
               FROM pg_stat_replication r
               LEFT JOIN pg_replication_slots s ON s.active_pid = r.pid
               WHERE r.pid <> pg_backend_pid())
         SELECT coalesce((SELECT array_agg(row({COLUMNS})::text ORDER BY pid) FROM p WHERE pid IS NOT NULL), '{{}}'),
                coalesce((SELECT array_agg(row({COLUMNS})::text ORDER BY pid) FROM v), '{{}}')"
    );
    let row = session
        .rt
        .block_on(session.client.query_one(&sql, &[&COUNT_BACKENDS]))
        .unwrap_or_else(|e| panic!("side by side: {e}"));
    (row.get(0), row.get(1))
}

/// Asserts that both poll statements return the view's rows; returns them
/// (the same for both). The walsender array is read twice in that
/// statement (by the poll and by the view), and a standby's reply may move
/// its positions in between: a difference must persist over five reads to
/// count.
fn assert_same(session: &Session, who: &str) -> Vec<String> {
    let mut seen: Option<Vec<String>> = None;
    for (read, poll) in STATEMENTS {
        let mut last = (Vec::new(), Vec::new());
        let rows = (0..5).find_map(|_| {
            let (poll, view) = side_by_side(session, poll);
            if poll == view {
                return Some(view);
            }
            last = (poll, view);
            std::thread::sleep(Duration::from_millis(50));
            None
        });
        let Some(rows) = rows else {
            panic!(
                "as {who}, the poll read {read:?} and pg_stat_replication differ:\npoll:\n  {}\nview:\n  {}",
                last.0.join("\n  "),
                last.1.join("\n  ")
            );
        };
        // The same walsenders both ways (positions may move in between).
        let pids: Vec<i32> = rows.iter().map(|r| pid_of(r)).collect();
        if let Some(seen) = &seen {
            assert_eq!(pids, seen.iter().map(|r| pid_of(r)).collect::<Vec<_>>());
        }
        seen = Some(rows);
    }
    seen.expect("two statements")
}

fn pid_of(row: &str) -> i32 {
    row.trim_start_matches('(')
        .split(',')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {row}"))
}

#[test]
fn poll_returns_what_pg_stat_replication_shows_on_every_major() {
    on_every_major("pollquery", |bin| {
        let primary = Cluster::primary_in(bin, "primary");
        let (version, major) = (primary.version(), primary.major());
        if major < OLDEST_MAJOR {
            return format!("PostgreSQL {version}: not supported, skipped");
        }
        same_rows(&primary);
        format!(
            "PostgreSQL {version} ({}): same rows as pg_stat_replication with and without \
             pg_monitor, a walsender missing from the activity read left out; by pid and in \
             one pass",
            bin.display()
        )
    });
}

/// The way the Poller chooses after a poll of its own choice.
fn strategy(session: &Session) -> Way {
    session
        .rt
        .block_on(session.poller.poll(&session.client))
        .expect("the poll");
    session.poller.next_read()
}

fn same_rows(primary: &Cluster) {
    primary.sql("CREATE ROLE plain LOGIN");
    // A physical standby (with a slot on the majors whose standbys are made
    // by copy), a logical decoder with its slot, an idle SQL walsender.
    let _standby = Cluster::standby(primary, "standby_a");
    let _decoder = Client::recvlogical(primary, "decoder");
    let monitor = Session::connect(primary, "replwarden");
    let plain = Session::connect(primary, "plain");
    // Fewer than 20 backends for 2 walsenders: one pass; with 40 more
    // idle clients (and 3 walsenders): by pid.
    primary.wait_streaming("decoder");
    let backends = monitor.count("SELECT count(*) FROM pg_stat_get_backend_idset()");
    assert!(
        backends < 20,
        "{backends} backends: too many to read in one pass"
    );
    assert_eq!(strategy(&monitor), Way::OnePass);
    let mut clients = Vec::new();
    for (way, idle_name, late_name) in [
        (Way::OnePass, "idle_one", "late_one"),
        (Way::ByPid, "idle_two", "late_two"),
    ] {
        if way == Way::ByPid {
            clients.extend((0..40).map(|_| {
                harness::idle_connection(
                    primary.port,
                    &[("user", "postgres"), ("database", "postgres")],
                    Some("SELECT 1"),
                )
            }));
        }
        let _idle = Client::sql_walsender(primary, idle_name, Duration::ZERO);
        primary.wait_streaming("decoder");
        let idle = primary.wait_walsender(idle_name, "startup");
        assert_eq!(strategy(&monitor), way);
        compare(primary, &monitor, &plain, &idle, late_name, way);
    }
}

/// The poll against the view as `monitor` (pg_monitor) and `plain` (no
/// pg_monitor), then with a walsender in the array that the activity read
/// does not find; `idle` is ended on the way.
fn compare(
    primary: &Cluster,
    monitor: &Session,
    plain: &Session,
    idle: &harness::WalsenderRow,
    late_name: &str,
    way: Way,
) {
    // With pg_monitor: every column, slots joined, nothing hidden.
    let rows = assert_same(monitor, &format!("replwarden (pg_monitor), {way:?} chosen"));
    assert_eq!(rows.len(), 3, "three walsenders: {rows:?}");
    assert!(
        monitor.count(
            "SELECT count(*) FILTER (WHERE r.state = 'streaming' AND r.write_lsn IS NOT NULL) \
                  * count(s.slot_name) \
             FROM pg_stat_replication r LEFT JOIN pg_replication_slots s ON s.active_pid = r.pid"
        ) >= 1,
        "a walsender streams with positions, one has a slot: {rows:?}"
    );
    let pids: Vec<i32> = rows.iter().map(|r| pid_of(r)).collect();
    for (read, _) in STATEMENTS {
        let snapshot = monitor.poll(read);
        assert!(snapshot.hidden.is_empty(), "{read:?}: {snapshot:?}");
        let polled: Vec<i32> = snapshot.walsenders.iter().map(|w| w.id.pid).collect();
        assert_eq!(polled, pids, "{read:?}");
    }

    // Without pg_monitor: only pid, usename and application_name; the same
    // NULLs in both, and the daemon sees every row as hidden.
    let rows = assert_same(plain, &format!("plain (no pg_monitor), {way:?} chosen"));
    assert_eq!(
        plain.count(
            "SELECT count(*) FROM pg_stat_replication WHERE state IS NULL \
             AND backend_start IS NULL AND usename IS NOT NULL AND application_name <> ''"
        ),
        3,
        "a role without pg_monitor sees only identity columns: {rows:?}"
    );
    for (read, _) in STATEMENTS {
        let snapshot = plain.poll(read);
        assert!(snapshot.walsenders.is_empty(), "{read:?}: {snapshot:?}");
        let mut hidden = snapshot.hidden.clone();
        hidden.sort_unstable();
        assert_eq!(hidden, pids, "{read:?}");
    }

    // A walsender in the walsender array but not in the activity read. The
    // backend-status copy is taken once per transaction, at its first read;
    // the walsender array is read live. So inside a transaction whose
    // activity copy predates them: the late one has started (in the array,
    // not in the copy: what a walsender that exits between the poll's two
    // reads looks like) and the idle one has exited (in the copy, not in
    // the array).
    monitor.execute("BEGIN");
    monitor.count("SELECT count(*) FROM pg_stat_get_activity(NULL)");
    let late_client = Client::sql_walsender(primary, late_name, Duration::ZERO);
    let late = primary.wait_walsender(late_name, "startup");
    primary.sql(&format!("SELECT pg_terminate_backend({})", idle.pid));
    wait_until(
        "the idle walsender to exit",
        Duration::from_secs(30),
        || {
            primary
                .walsender(&idle.application_name)
                .is_none()
                .then_some(())
        },
    );
    assert_eq!(
        monitor.count(&format!(
            "SELECT count(*) FROM pg_stat_get_wal_senders() WHERE pid = {}",
            late.pid
        )),
        1,
        "{late_name} is in the walsender array"
    );
    assert_eq!(
        monitor.count(&format!(
            "SELECT count(*) FROM pg_stat_get_activity({})",
            late.pid
        )),
        0,
        "{late_name} is not in this transaction's activity copy"
    );
    let rows = assert_same(
        monitor,
        &format!("replwarden, activity copy older than a walsender, {way:?} chosen"),
    );
    let pids: Vec<i32> = rows.iter().map(|r| pid_of(r)).collect();
    assert!(
        !pids.contains(&late.pid) && !pids.contains(&idle.pid),
        "{rows:?}"
    );
    assert_eq!(rows.len(), 2, "{rows:?}");
    for (read, _) in STATEMENTS {
        let snapshot = monitor.poll(read);
        assert!(
            snapshot.hidden.is_empty(),
            "{read:?}: a walsender missing from the activity read must not read as hidden: {snapshot:?}"
        );
        let polled: Vec<i32> = snapshot.walsenders.iter().map(|w| w.id.pid).collect();
        assert_eq!(polled, pids, "{read:?}");
    }
    monitor.execute("COMMIT");
    // In a fresh transaction the late one is seen.
    for (read, _) in STATEMENTS {
        let snapshot = monitor.poll(read);
        assert!(
            snapshot.walsenders.iter().any(|w| w.id.pid == late.pid),
            "{read:?}"
        );
    }
    // It sleeps in SQL and would not notice its client go: ended here.
    primary.sql(&format!("SELECT pg_terminate_backend({})", late.pid));
    drop(late_client);
    wait_until(
        "the late walsender to exit",
        Duration::from_secs(30),
        || primary.walsender(late_name).is_none().then_some(()),
    );
}
