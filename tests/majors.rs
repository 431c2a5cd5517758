//! The core end-to-end scenarios on every PostgreSQL major there are server
//! binaries for: the default ones (Debian's 15 here) and each folder of
//! `$REPLWARDEN_PG_BINS` (from `scripts/fetch-postgres.sh`). Per major, one
//! primary serves every scenario: a blocked application_name, a lag rule on
//! a standby whose replay is paused, a walsender stale in `startup`, each
//! kill keyed on (pid, backend_start), and a rule added by SIGHUP. A server
//! older than the oldest supported major (12, when fetched) must be refused
//! at connect with a message naming that major.
//!
//! Client tools come from the default folder: the 15 pg_receivewal and
//! pg_basebackup refuse 16+, so the clients here are the ones that work on
//! every major (pg_recvlogical, psql with `replication=database`, a standby
//! made by a low-level base backup, a logical subscription).

mod harness;

use std::path::Path;
use std::time::{Duration, Instant};

use harness::{
    config, logical_subscriber, on_every_major, plan, wait_until, Client, Cluster, Daemon,
};
use replwarden::sql::OLDEST_MAJOR;
use serde_json::Value;

const RULES: &str = r#"
[[rule]]
name = "blocked-name"
application_name = ["rogue_*"]
grace = "3s"
action = "terminate"

[[rule]]
name = "lag"
application_name = ["standby_*"]
replay_lag = "2s"
replay_lag_bytes = "8kB"
grace = "1s"
action = "terminate"

[[rule]]
name = "stale"
application_name = ["idle_*"]
state = ["startup"]
in_state_for = "3s"
action = "terminate"
"#;

const LATE_RULE: &str = r#"
[[rule]]
name = "late"
application_name = ["late_*"]
action = "terminate"
"#;

#[test]
fn core_scenarios_on_every_major() {
    on_every_major("majors", on_major);
}

/// Runs what applies to the major in `bin`; says what was checked.
fn on_major(bin: &Path) -> String {
    let primary = Cluster::primary_in(bin, "primary");
    let version = primary.version();
    let major = primary.major();
    if major < OLDEST_MAJOR {
        refused(&primary);
        return format!(
            "PostgreSQL {version} ({}): refused at connect",
            bin.display()
        );
    }
    core_scenarios(&primary, major);
    format!(
        "PostgreSQL {version} ({}): blocked name, lag rule, stale state, safe kill, reload",
        bin.display()
    )
}

/// `backend_start` of walsender `pid` as the daemon logs it (RFC 3339, UTC,
/// microseconds): with the pid, the key of a process instance.
fn backend_start(primary: &Cluster, pid: i32) -> String {
    primary.sql(&format!(
        "SELECT to_char(backend_start AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') \
         FROM pg_stat_replication WHERE pid = {pid}"
    ))
}

/// Accepts the action events of `rule`.
fn action(rule: &str) -> impl Fn(&Value) -> bool + '_ {
    move |e| e["event"] == "action" && e["rule"] == rule
}

fn wait_gone(primary: &Cluster, pid: i32, what: &str) {
    wait_until(what, Duration::from_secs(10), || {
        primary
            .walsenders()
            .iter()
            .all(|w| w.pid != pid)
            .then_some(())
    });
}

fn core_scenarios(primary: &Cluster, major: u32) {
    // A terminate is confirmed (the same pid and backend_start gone) the
    // same way on every major.
    let killed = "terminated";
    // The standby is copied before WAL is pumped (a quiet data folder).
    let lagging = Cluster::standby(primary, "standby_lag");
    let subscriber = logical_subscriber(primary, "logical_ok");
    let healthy = primary.wait_streaming("logical_ok");
    let _pump = Client::wal_pump(primary);
    lagging.sql("SELECT pg_wal_replay_pause()");

    let mut daemon = Daemon::start(&config(primary, "replwarden", "300ms", RULES), &[]);
    let connected = daemon.wait_message("connected to PostgreSQL", Duration::from_secs(15));
    assert_eq!(
        connected["server_version"].as_u64().map(|v| v / 10000),
        Some(major as u64),
        "{connected}"
    );

    // A blocked name, streaming (logical): ended after its grace, and the
    // action names exactly the instance seen (pid and backend_start).
    let _rogue_client = Client::recvlogical(primary, "rogue_decoder");
    let rogue = primary.wait_streaming("rogue_decoder");
    let rogue_start = backend_start(primary, rogue.pid);
    let blocked = daemon.wait_for(
        "the blocked name to be acted on",
        Duration::from_secs(15),
        action("blocked-name"),
    );
    assert_eq!(blocked["pid"].as_i64(), Some(rogue.pid as i64), "{blocked}");
    assert_eq!(blocked["backend_start"], rogue_start.as_str(), "{blocked}");
    assert_eq!(blocked["application_name"], "rogue_decoder");
    assert_eq!(blocked["state"], "streaming");
    assert_eq!(blocked["outcome"], killed, "{blocked}");
    wait_gone(primary, rogue.pid, "the rogue walsender to exit");

    // The lag rule on the standby whose replay is paused while WAL comes.
    let lag = daemon.wait_for(
        "the lag rule to fire",
        Duration::from_secs(30),
        action("lag"),
    );
    assert_eq!(lag["application_name"], "standby_lag", "{lag}");
    assert_eq!(lag["outcome"], killed, "{lag}");
    let measured = lag["measured"].as_str().unwrap_or_default();
    assert!(
        measured.contains("replay_lag=") && measured.contains("replay_lag_bytes="),
        "{lag}"
    );
    wait_gone(
        primary,
        lag["pid"].as_i64().expect("pid") as i32,
        "the lagging walsender to exit",
    );
    lagging.sql("SELECT pg_wal_replay_resume()");

    // A replication connection that never starts replicating stays in
    // `startup`: in_state_for ends it, not before.
    let _idle_client = Client::sql_walsender(primary, "idle_session", Duration::ZERO);
    let idle = primary.wait_walsender("idle_session", "startup");
    let idle_start = backend_start(primary, idle.pid);
    // Time in `startup` counts from backend_start: when was that here?
    let age: f64 = primary
        .sql(&format!(
            "SELECT extract(epoch FROM clock_timestamp() - backend_start) \
             FROM pg_stat_replication WHERE pid = {}",
            idle.pid
        ))
        .parse()
        .expect("backend age");
    let since_start = Instant::now() - Duration::from_secs_f64(age);
    let stale = daemon.wait_for(
        "the stale rule to fire",
        Duration::from_secs(15),
        action("stale"),
    );
    let in_startup = since_start.elapsed();
    assert!(
        in_startup >= Duration::from_millis(2900),
        "in_state_for = 3s fired after {in_startup:?} in startup"
    );
    assert_eq!(stale["pid"].as_i64(), Some(idle.pid as i64), "{stale}");
    assert_eq!(stale["backend_start"], idle_start.as_str(), "{stale}");
    assert_eq!(stale["state"], "startup");
    assert_eq!(stale["outcome"], killed, "{stale}");
    assert!(
        stale["measured"]
            .as_str()
            .is_some_and(|m| m.starts_with("in_state_for=")),
        "{stale}"
    );
    wait_gone(primary, idle.pid, "the idle walsender to exit");

    // Reload: no rule for it yet, left alone; SIGHUP adds one that fires.
    let _late_client = Client::sql_walsender(primary, "late_one", Duration::ZERO);
    let late = primary.wait_walsender("late_one", "startup");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(primary.walsender("late_one"), Some(late.clone()));
    let mark = daemon.mark();
    daemon.write_config(&config(
        primary,
        "replwarden",
        "300ms",
        &format!("{RULES}{LATE_RULE}"),
    ));
    daemon.signal(libc::SIGHUP);
    let reloaded = daemon.wait_for_from(mark, "the reload", Duration::from_secs(5), |e| {
        e["message"] == "config reloaded"
    });
    assert_eq!(reloaded["added"], "[\"late\"]", "{reloaded}");
    let late_event = daemon.wait_for_from(
        mark,
        "the added rule to fire",
        Duration::from_secs(5),
        action("late"),
    );
    assert_eq!(late_event["pid"].as_i64(), Some(late.pid as i64));
    assert_eq!(late_event["outcome"], killed, "{late_event}");
    wait_gone(primary, late.pid, "the late walsender to exit");

    // Safe kill: pg_recvlogical has come back as a new instance (new pid or
    // new backend_start), which is ended too; one action per instance.
    daemon.wait_for(
        "the rogue's next instance to be acted on",
        Duration::from_secs(20),
        |e| {
            e["event"] == "action"
                && e["rule"] == "blocked-name"
                && (e["pid"] != blocked["pid"] || e["backend_start"] != blocked["backend_start"])
        },
    );
    let actions = daemon.actions();
    let mut instances: Vec<(String, String)> = actions
        .iter()
        .filter(|e| e["rule"] == "blocked-name")
        .map(|e| (e["pid"].to_string(), e["backend_start"].to_string()))
        .collect();
    let total = instances.len();
    instances.sort();
    instances.dedup();
    assert_eq!(
        instances.len(),
        total,
        "one action per instance: {actions:#?}"
    );

    // The healthy subscription was left alone: same instance, no action.
    assert_eq!(primary.walsender("logical_ok"), Some(healthy));
    for e in &actions {
        let app = e["application_name"].as_str().unwrap_or_default();
        assert!(
            ["rogue_decoder", "standby_lag", "idle_session", "late_one"].contains(&app),
            "unexpected action on {app}: {e}"
        );
    }
    assert!(
        daemon.wait_exit(Duration::ZERO).is_none(),
        "the daemon is running"
    );
    drop((subscriber, lagging));
}

/// A server older than the oldest supported major: `plan` fails with the
/// reason, the daemon logs it and never connects.
fn refused(primary: &Cluster) {
    let expected = format!("is too old: replwarden supports PostgreSQL {OLDEST_MAJOR} and newer");
    let block =
        "[[rule]]\nname = \"block\"\napplication_name = [\"rogue_*\"]\naction = \"terminate\"\n";
    let cfg = config(primary, "replwarden", "300ms", block);
    let out = plan(primary, &cfg);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&expected), "{stderr}");
    assert!(
        stderr.contains(&format!("server version {}.", primary.major())),
        "{stderr}"
    );

    // The daemon says why and exits 78 (EX_CONFIG: systemd does not
    // restart it); waiting would not make the server newer.
    let _rogue_client = Client::receivewal(primary, "rogue_old");
    let rogue = primary.wait_streaming("rogue_old");
    let mut daemon = Daemon::start(&cfg, &[]);
    let status = daemon
        .wait_exit(Duration::from_secs(15))
        .expect("the daemon exits");
    assert_eq!(status.code(), Some(78), "{}", daemon.dump());
    let refusal = daemon.wait_message("unsupported server: not retrying", Duration::from_secs(1));
    assert!(
        refusal["error"]
            .as_str()
            .unwrap_or_default()
            .contains(&expected),
        "{refusal}"
    );
    assert_eq!(
        daemon.count_messages("connected to PostgreSQL"),
        0,
        "{}",
        daemon.dump()
    );
    assert!(daemon.actions().is_empty(), "{}", daemon.dump());
    assert_eq!(
        primary.walsender("rogue_old"),
        Some(rogue),
        "nothing signalled"
    );
}
