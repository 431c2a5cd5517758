//! The safety guarantees, end to end on real clusters: the synchronous
//! quorum guard, `[protect]`, the action budget, reconnect-loop backoff,
//! the privilege preflight, confirmed kills with bounded retries, and pids
//! reused under the daemon's feet.

mod harness;

use std::collections::HashSet;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use harness::{config, wait_until, Client, Cluster, Daemon};
use replwarden::actions::{Outcome, Signaller};
use replwarden::policy::Action;
use replwarden::snapshot::WalsenderId;
use serde_json::Value;

fn pid_of(e: &Value) -> i64 {
    e["pid"].as_i64().expect("pid field")
}

fn timestamp(e: &Value) -> SystemTime {
    humantime::parse_rfc3339(e["timestamp"].as_str().unwrap()).unwrap()
}

/// DESIGN fact 9: killing the only synchronous standby makes every commit
/// wait. The guard holds that action back (and says so at every poll) while
/// commits keep flowing; `[protect]` keeps its connections out of reach.
#[test]
fn the_sync_guard_holds_while_commits_flow_and_protected_clients_are_untouched() {
    let primary = Cluster::primary("primary");
    primary.sql("ALTER SYSTEM SET synchronous_standby_names = 'FIRST 1 (standby_sync)'");
    primary.sql("SELECT pg_reload_conf()");
    let sync = Cluster::standby(&primary, "standby_sync");
    let _async = Cluster::standby(&primary, "standby_async");
    let _probe = Client::receivewal(&primary, "patroni_probe");
    let probe = primary.wait_streaming("patroni_probe");
    let sync_before = wait_until("standby_sync to be sync", Duration::from_secs(20), || {
        (primary.sql(
            "SELECT sync_state FROM pg_stat_replication WHERE application_name = 'standby_sync'",
        ) == "sync")
            .then(|| primary.walsender("standby_sync").unwrap())
    });

    let rules = r#"
[protect]
application_name = ["patroni_*"]

[limits]
reconnect_backoff = "1m"

[[rule]]
name = "all-standbys"
application_name = ["standby_*", "patroni_*"]
action = "terminate"
"#;
    let daemon = Daemon::start(&config(&primary, "replwarden", "300ms", rules), &[]);
    let async_kill = daemon.wait_for(
        "the async standby to be terminated",
        Duration::from_secs(10),
        |e| e["event"] == "action",
    );
    assert_eq!(async_kill["application_name"], "standby_async");
    assert_eq!(async_kill["outcome"], "terminated");

    // Commits keep flowing while the guard holds the sync standby's kill.
    for i in 0..3 {
        let started = Instant::now();
        primary.sql(&format!("INSERT INTO t (payload) VALUES ('commit {i}')"));
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "commit {i} took {:?}",
            started.elapsed()
        );
        std::thread::sleep(Duration::from_millis(400));
    }
    let held: Vec<Value> = daemon
        .events()
        .into_iter()
        .filter(|e| e["message"] == "held: would break synchronous quorum")
        .collect();
    assert!(held.len() >= 3, "held at every poll: {}", daemon.dump());
    let h = &held[0];
    assert_eq!(h["level"], "WARN");
    assert_eq!(h["application_name"], "standby_sync");
    assert_eq!(pid_of(h), sync_before.pid as i64);
    assert_eq!(h["synchronous_standby_names"], "FIRST 1 (standby_sync)");
    assert_eq!(h["required"], 1);
    assert_eq!(h["healthy_sync_standbys"], 1);
    assert_eq!(h["healthy_names"], "standby_sync");

    assert_eq!(primary.walsender("standby_sync"), Some(sync_before));
    assert_eq!(primary.walsender("patroni_probe"), Some(probe));
    let actions = daemon.actions();
    assert!(
        actions
            .iter()
            .all(|e| e["application_name"] == "standby_async"),
        "only the async standby is acted on: {actions:#?}"
    );
    drop(sync);
}

/// A bad rule that matches many walsenders acts on at most `max_actions`
/// per window; the rest are deferred and said so. A client that keeps
/// coming back is acted on at exponentially growing intervals, with the
/// lasting fix printed.
#[test]
fn the_budget_defers_and_a_reconnect_loop_backs_off() {
    let primary = Cluster::primary("primary");
    let rogues: Vec<Client> = (1..=3)
        .map(|i| Client::receivewal(&primary, &format!("rogue_{i}")))
        .collect();
    for i in 1..=3 {
        primary.wait_streaming(&format!("rogue_{i}"));
    }
    let budget = "[limits]\nmax_actions = 1\nper = \"1m\"\n\
                  [[rule]]\nname = \"bad-rule\"\napplication_name = [\"rogue_*\"]\naction = \"terminate\"\n";
    let daemon = Daemon::start(&config(&primary, "replwarden", "200ms", budget), &[]);
    let deferred = daemon.wait_message("action budget exhausted", Duration::from_secs(10));
    assert_eq!(deferred["deferred"], 2, "{deferred}");
    assert_eq!(deferred["max_actions"], 1);
    assert_eq!(deferred["per"], "1m");
    std::thread::sleep(Duration::from_secs(2));
    let acted = daemon.actions();
    assert_eq!(acted.len(), 1, "one action per minute: {}", daemon.dump());
    assert!(
        daemon.count_messages("action budget exhausted") > 3,
        "deferral is logged at every poll"
    );
    let survivors = primary
        .walsenders()
        .iter()
        .filter(|w| w.application_name.starts_with("rogue_"))
        .count();
    assert!(survivors >= 2, "deferred, not acted on");
    drop(daemon);
    // Gone before the loop below: healthy walsenders of its role and
    // address would make its fix lines unsafe (tests/advice.rs).
    drop(rogues);

    // A standby reconnects about a second after each terminate.
    let _looping = Cluster::standby(&primary, "standby_loop");
    let looping = "[limits]\nreconnect_backoff = \"1s\"\nreconnect_backoff_max = \"4s\"\nmax_actions = 100\n\
                   [[rule]]\nname = \"loop\"\napplication_name = [\"standby_loop\"]\naction = \"terminate\"\n";
    let daemon = Daemon::start(&config(&primary, "replwarden", "100ms", looping), &[]);
    wait_until(
        "four actions on the looping standby",
        Duration::from_secs(30),
        || (daemon.actions().len() >= 4).then_some(()),
    );
    let times: Vec<SystemTime> = daemon.actions().iter().map(timestamp).collect();
    let gaps: Vec<Duration> = times
        .windows(2)
        .map(|w| w[1].duration_since(w[0]).unwrap())
        .collect();
    // Log timestamps follow each kill statement, whose own duration varies
    // by some milliseconds: allow 100 ms.
    for (gap, least) in gaps.iter().zip([1000, 2000, 4000]) {
        assert!(
            *gap >= Duration::from_millis(least - 100),
            "gaps {gaps:?} must be at least 1 s, 2 s, 4 s"
        );
    }
    let warning = daemon.wait_for("the reconnect loop warning", Duration::from_secs(1), |e| {
        e["event"] == "reconnect_loop"
    });
    assert_eq!(warning["level"], "WARN");
    assert_eq!(warning["application_name"], "standby_loop");
    assert_eq!(warning["actions"], 2);
    assert_eq!(
        warning["fix_hba"],
        "host replication replicator 127.0.0.1/32 reject"
    );
    assert_eq!(warning["fix_role"], "ALTER ROLE replicator NOREPLICATION;");
}

/// At start and after every reconnect the daemon checks what its role may
/// do and names the walsenders it can never signal.
#[test]
fn the_preflight_names_missing_grants_and_superuser_walsenders() {
    let primary = Cluster::primary("primary");
    primary.sql("CREATE ROLE weak LOGIN; GRANT pg_monitor TO weak");
    let _su = Client::receivewal_as(&primary, "su_client", "postgres");
    let su = primary.wait_streaming("su_client");
    // Each finding is logged with a constant message, the problem and its
    // fix in `finding`.
    fn finding(text: &str) -> impl Fn(&Value) -> bool + '_ {
        move |e| {
            e["event"] == "preflight" && e["finding"].as_str().is_some_and(|f| f.contains(text))
        }
    }
    let count = |d: &Daemon, text: &str| d.events().iter().filter(|e| finding(text)(e)).count();
    let daemon = Daemon::start(&config(&primary, "weak", "300ms", ""), &[]);
    let missing = daemon.wait_for(
        "the missing grant",
        Duration::from_secs(10),
        finding("lacks pg_signal_backend"),
    );
    assert_eq!(missing["level"], "ERROR");
    assert_eq!(missing["message"], "privilege preflight failed");
    assert!(missing["finding"]
        .as_str()
        .unwrap()
        .contains("GRANT pg_signal_backend TO weak;"));
    let supers = daemon.wait_for(
        "the superuser walsenders",
        Duration::from_secs(5),
        finding("walsenders of superuser roles"),
    );
    assert_eq!(supers["level"], "WARN");
    assert_eq!(supers["message"], "privilege preflight warning");
    assert!(
        supers["finding"]
            .as_str()
            .unwrap()
            .contains(&format!("su_client (pid {}, role postgres)", su.pid)),
        "{supers}"
    );
    assert_eq!(count(&daemon, "lacks pg_monitor"), 0);

    primary.restart();
    wait_until(
        "the preflight to run again after the reconnect",
        Duration::from_secs(30),
        || (count(&daemon, "lacks pg_signal_backend") >= 2).then_some(()),
    );

    // The least-privileged role of config/setup.sql passes.
    let _su_again = primary.wait_streaming("su_client");
    let good = Daemon::start(&config(&primary, "replwarden", "300ms", ""), &[]);
    good.wait_message("privilege preflight passed", Duration::from_secs(10));
    assert_eq!(count(&good, "lacks"), 0);
    assert_eq!(count(&good, "walsenders of superuser roles"), 1);
}

/// DESIGN fact 12: a walsender that cannot exit (its process stopped)
/// is still there after `terminate_timeout`. The daemon records that it
/// did not exit, retries at most `max_retries` times, then
/// reports and leaves it.
#[test]
fn a_kill_that_does_not_take_is_retried_a_bounded_number_of_times() {
    let primary = Cluster::primary("primary");
    let _stuck = Client::receivewal(&primary, "stuck_1");
    let stuck = primary.wait_streaming("stuck_1");
    primary.freeze(stuck.pid);
    let rules = "[limits]\nmax_retries = 2\nterminate_timeout = \"300ms\"\n\
                 [[rule]]\nname = \"block\"\napplication_name = [\"stuck_*\"]\naction = \"terminate\"\n";
    let daemon = Daemon::start(&config(&primary, "replwarden", "200ms", rules), &[]);
    let gave_up = daemon.wait_message("giving up", Duration::from_secs(15));
    assert_eq!(gave_up["level"], "ERROR");
    assert_eq!(gave_up["attempts"], 3);
    assert_eq!(pid_of(&gave_up), stuck.pid as i64);
    std::thread::sleep(Duration::from_secs(1));
    let actions = daemon.actions();
    let summary: Vec<(String, String)> = actions
        .iter()
        .map(|e| {
            (
                e["cause"].as_str().unwrap().to_string(),
                e["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("breach".to_string(), "not_exited".to_string()),
            ("retry: attempt 2".to_string(), "not_exited".to_string()),
            ("retry: attempt 3".to_string(), "not_exited".to_string()),
        ]
    );
}

/// Held by the test that forks thousands of processes and by the one that
/// needs a quiet moment to steer a pid, so they do not overlap.
static FORKS: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Makes the next process forked on this machine get `pid` (Linux
/// `ns_last_pid`; the test runs as root, as CI does).
fn next_pid_will_be(pid: i32) {
    std::fs::write("/proc/sys/kernel/ns_last_pid", (pid - 1).to_string())
        .expect("write /proc/sys/kernel/ns_last_pid (needs root)");
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The kill statement, exactly as the daemon runs it, against a stale
/// `(pid, backend_start)` whose pid now belongs to another walsender and
/// then to an ordinary backend: nothing is signalled.
#[test]
fn a_reused_pid_is_never_signalled() {
    let _quiet = FORKS.lock().unwrap_or_else(|e| e.into_inner());
    let primary = Cluster::primary("primary");
    let rt = runtime();
    let (client, connection) = rt
        .block_on(tokio_postgres::connect(
            &primary.conninfo("replwarden"),
            tokio_postgres::NoTls,
        ))
        .unwrap();
    rt.spawn(connection);
    let signaller = rt.block_on(Signaller::prepare(&client)).unwrap();
    let backend_start = |pid: i32| -> SystemTime {
        rt.block_on(client.query_one(
            "SELECT backend_start FROM pg_stat_activity WHERE pid = $1",
            &[&pid],
        ))
        .unwrap()
        .get(0)
    };

    // Find an old instance, end it, and bring a new walsender up on its pid.
    let mut reused = None;
    for _attempt in 0..10 {
        let first = Client::sql_walsender(&primary, "reuse_probe", Duration::ZERO);
        let old = primary.wait_walsender("reuse_probe", "startup");
        let old_id = WalsenderId {
            pid: old.pid,
            backend_start: backend_start(old.pid),
        };
        primary.sql(&format!("SELECT pg_terminate_backend({})", old.pid));
        drop(first);
        wait_until("the old walsender to go", Duration::from_secs(5), || {
            primary.walsender("reuse_probe").is_none().then_some(())
        });
        let second = Client::sql_walsender(&primary, "reuse_probe", Duration::from_millis(400));
        std::thread::sleep(Duration::from_millis(300));
        next_pid_will_be(old.pid);
        // No fork of ours until the server has forked the new walsender.
        std::thread::sleep(Duration::from_millis(600));
        let new = primary.wait_walsender("reuse_probe", "startup");
        if new.pid == old.pid {
            reused = Some((old_id, second));
            break;
        }
        primary.sql(&format!("SELECT pg_terminate_backend({})", new.pid));
        drop(second);
        wait_until("the probe to go", Duration::from_secs(5), || {
            primary.walsender("reuse_probe").is_none().then_some(())
        });
    }
    let (stale, _second) = reused.expect("a new walsender on the old pid within 10 tries");
    let current = primary.walsender("reuse_probe").unwrap();
    assert_eq!(current.pid, stale.pid, "same pid, new instance");

    let outcome = rt
        .block_on(signaller.signal(
            &client,
            Action::Terminate,
            stale,
            Duration::from_millis(500),
            std::future::pending(),
        ))
        .unwrap();
    assert_eq!(outcome, Outcome::Gone, "the stale identity matches nothing");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        primary.walsender("reuse_probe"),
        Some(current.clone()),
        "the new instance lives"
    );

    // Now an ordinary backend takes the pid: still nothing is signalled.
    let live_id = WalsenderId {
        pid: current.pid,
        backend_start: backend_start(current.pid),
    };
    primary.sql(&format!("SELECT pg_terminate_backend({})", current.pid));
    wait_until("the probe to go", Duration::from_secs(5), || {
        primary.walsender("reuse_probe").is_none().then_some(())
    });
    let mut backend = None;
    for _attempt in 0..10 {
        next_pid_will_be(live_id.pid);
        let (c, conn) = rt
            .block_on(tokio_postgres::connect(
                &primary.conninfo("postgres"),
                tokio_postgres::NoTls,
            ))
            .unwrap();
        rt.spawn(conn);
        let pid: i32 = rt
            .block_on(c.query_one("SELECT pg_backend_pid()", &[]))
            .unwrap()
            .get(0);
        if pid == live_id.pid {
            backend = Some(c);
            break;
        }
    }
    let backend = backend.expect("an ordinary backend on the old pid within 10 tries");
    let outcome = rt
        .block_on(signaller.signal(
            &client,
            Action::Terminate,
            live_id,
            Duration::from_millis(500),
            std::future::pending(),
        ))
        .unwrap();
    assert_eq!(outcome, Outcome::Gone);
    let alive: i32 = rt
        .block_on(backend.query_one("SELECT 1", &[]))
        .unwrap()
        .get(0);
    assert_eq!(
        alive, 1,
        "the ordinary backend on the reused pid was not touched"
    );
}

/// Torture: thousands of short-lived connections churn through pids while
/// the daemon terminates a reconnecting standby again and again. Every
/// "terminating connection due to administrator command" in the server log
/// must be a walsender instance the daemon judged and reported.
#[test]
fn under_pid_churn_only_judged_walsenders_are_signalled() {
    let _churn = FORKS.lock().unwrap_or_else(|e| e.into_inner());
    let primary = Cluster::primary("primary");
    let _victim = Cluster::standby(&primary, "standby_victim");
    let rules = "[limits]\nreconnect_backoff = \"0s\"\nmax_actions = 1000\n\
                 [[rule]]\nname = \"victim\"\napplication_name = [\"standby_victim\"]\naction = \"terminate\"\n";
    let daemon = Daemon::start(&config(&primary, "replwarden", "100ms", rules), &[]);

    let bench = |args: &[&str]| {
        let out = Command::new(harness::bin("pgbench"))
            .args([
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-p",
                &primary.port.to_string(),
            ])
            .args(args)
            .arg("postgres")
            .output()
            .expect("run pgbench");
        assert!(
            out.status.success(),
            "pgbench {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    bench(&["-i", "-q", "-s", "1"]);
    // -C: a new connection (a new backend process, a new pid) per transaction.
    let report = bench(&["-C", "-S", "-c", "4", "-j", "2", "-T", "10"]);
    assert!(
        report.contains("number of failed transactions: 0"),
        "{report}"
    );

    std::thread::sleep(Duration::from_millis(500));
    let actions = daemon.actions();
    drop(daemon);
    let judged: HashSet<i64> = actions.iter().map(pid_of).collect();
    assert!(
        judged.len() >= 3,
        "the standby was terminated again and again: {actions:#?}"
    );
    let log = primary.server_log();
    let killed: Vec<i64> = log
        .lines()
        .filter(|l| l.contains("terminating connection due to administrator command"))
        .map(|l| {
            let open = l.find('[').unwrap();
            let close = l[open..].find(']').unwrap() + open;
            l[open + 1..close].parse().unwrap()
        })
        .collect();
    assert!(!killed.is_empty());
    for pid in &killed {
        assert!(
            judged.contains(pid),
            "pid {pid} was terminated but never judged by the daemon; judged: {judged:?}; log:\n{}",
            log.lines()
                .filter(|l| l.contains(&format!("[{pid}]")))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    let connections = log
        .lines()
        .filter(|l| l.contains("connection authorized"))
        .count();
    assert!(connections > 1000, "only {connections} connections churned");
}
