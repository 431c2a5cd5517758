//! One clock, real values, on real clusters: time lags PostgreSQL merely
//! keeps showing are not judged while a lagging standby is still caught;
//! clients whose clocks are skewed either way are not "silent" while a
//! stopped one is; a client that never replies nor confirms anything is
//! judged from when it was first seen streaming. Skewed clients run under
//! libfaketime (Debian package `faketime`).

mod harness;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use harness::{bin, config, free_port, http_get, kill, plan, wait_until, Cluster, Daemon};

const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// A `pg_receivewal` with its own arguments, optionally with a faked
/// clock, run as the servers' user when root; stopped and removed in Drop.
struct Receiver {
    child: Child,
    dir: PathBuf,
}

impl Receiver {
    fn start(
        upstream: &Cluster,
        name: &str,
        args: &[&str],
        clock_offset: Option<&str>,
    ) -> Receiver {
        let root = nix::unistd::geteuid().is_root();
        let dir = std::env::temp_dir().join(format!("rw-clocks-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("wal")).expect("receiver folder");
        let mut cmd = if root {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir)
                .status()
                .expect("chown");
            assert!(status.success(), "chown {}", dir.display());
            // The faked clock is set up by `env` after the change of user
            // (a preload in setpriv would make libfaketime's shared state
            // root's); `env` execs the receiver, whose pid stays the child's.
            harness::as_postgres("env")
        } else {
            Command::new("env")
        };
        if let Some(offset) = clock_offset {
            assert!(
                std::path::Path::new(LIBFAKETIME).exists(),
                "libfaketime is missing: apt-get install faketime"
            );
            cmd.arg(format!("LD_PRELOAD={LIBFAKETIME}"))
                .arg(format!("FAKETIME={offset}"))
                .arg("FAKETIME_DONT_FAKE_MONOTONIC=1");
        }
        cmd.arg(bin("pg_receivewal"));
        let log = std::fs::File::create(dir.join("client.log")).expect("client log");
        cmd.arg("-D")
            .arg(dir.join("wal"))
            .args([
                "-d",
                &format!(
                    "host=127.0.0.1 port={} user=replicator application_name={name}",
                    upstream.port
                ),
                "--no-sync",
                "--no-loop",
            ])
            .args(args)
            .current_dir(std::env::temp_dir())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        let child = cmd.spawn().expect("start pg_receivewal");
        Receiver { child, dir }
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        kill(self.pid(), libc::SIGCONT);
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A physical replication client (psycopg2's `PhysicalReplicationConnection`,
/// Debian package `python3-psycopg2`) that streams and sends feedback every
/// second but never confirms a position: every LSN it reports is 0.
struct ZeroAcker(Child);

const ZERO_ACKER: &str = r#"
import sys, psycopg2, psycopg2.extras
conn = psycopg2.connect(sys.argv[1], connection_factory=psycopg2.extras.PhysicalReplicationConnection)
cur = conn.cursor()
cur.execute("IDENTIFY_SYSTEM")
cur.start_replication(start_lsn=cur.fetchone()[2], status_interval=1)
cur.consume_stream(lambda msg: None)
"#;

impl ZeroAcker {
    fn start(upstream: &Cluster, name: &str) -> ZeroAcker {
        let child = Command::new("/usr/bin/python3")
            .args(["-c", ZERO_ACKER])
            .arg(format!(
                "host=127.0.0.1 port={} user=replicator application_name={name}",
                upstream.port
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("start python3 (with psycopg2)");
        ZeroAcker(child)
    }
}

impl Drop for ZeroAcker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Some WAL, in small steps (each one a few lag-tracker samples).
fn write_wal(primary: &Cluster, steps: usize) {
    for _ in 0..steps {
        primary.sql("INSERT INTO t (payload) SELECT repeat('x', 200) FROM generate_series(1, 40)");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn actions_on(daemon: &Daemon, application_name: &str) -> Vec<serde_json::Value> {
    daemon
        .actions()
        .into_iter()
        .filter(|e| e["application_name"] == application_name)
        .collect()
}

/// Issue "Field truth" 1: idle receivers that have all WAL keep showing
/// old time lags; rules on write_lag, flush_lag and replay_lag leave them
/// alone, while a standby whose replay really lags is caught at once.
#[test]
fn time_lags_an_idle_receiver_keeps_showing_are_not_judged_a_lagging_standby_is() {
    let primary = Cluster::primary("clocks_lag");
    let lagging = Cluster::standby(&primary, "standby_lag");
    lagging.sql("SELECT pg_wal_replay_pause()");
    primary.sql("SELECT pg_create_physical_replication_slot('archiver_slot')");
    // Barman's receive-wal (a slot, no --synchronous) and a plain archiver.
    let _with_slot = Receiver::start(
        &primary,
        "archiver_slot",
        &["--slot", "archiver_slot", "-s", "1"],
        None,
    );
    let _plain = Receiver::start(&primary, "archiver", &["-s", "1"], None);
    for name in ["archiver_slot", "archiver", "standby_lag"] {
        primary.wait_streaming(name);
    }
    write_wal(&primary, 10);
    // Idle now. PostgreSQL goes on showing lags for the receivers, which
    // have all WAL: wait until they are well over the rules' thresholds.
    wait_until(
        "old lag values shown for both idle receivers",
        Duration::from_secs(60),
        || {
            let rows = primary.sql(
                "SELECT count(*) FROM pg_stat_replication \
                 WHERE application_name LIKE 'archiver%' AND write_lsn = pg_current_wal_lsn() \
                   AND flush_lag > '3s' AND replay_lag > '3s'",
            );
            (rows == "2").then_some(())
        },
    );
    let rules = r#"
[[rule]]
name = "write-lag"
write_lag = "1s"
action = "terminate"

[[rule]]
name = "flush-lag"
flush_lag = "1s"
action = "terminate"

[[rule]]
name = "replay-lag"
replay_lag = "1s"
action = "terminate"
"#;
    let text = config(&primary, "replwarden", "200ms", rules);
    let out = plan(&primary, &text);
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{printed}");
    assert!(
        printed.contains("(not judged: the client does not report this position)"),
        "{printed}"
    );
    // The slot receiver's flush lag: stale (or, if some WAL just came,
    // its own pace).
    assert!(
        printed
            .lines()
            .any(|l| l.contains("time lags not real now: ")
                && (l.contains("flush_lag")
                    && (l.contains("stale: the client has all WAL, not judged")
                        || l.contains("flushing at its own pace")))),
        "{printed}"
    );

    let started = Instant::now();
    let daemon = Daemon::start(&text, &[]);
    let caught = daemon.wait_for(
        "the lagging standby to be caught",
        Duration::from_secs(20),
        |e| e["event"] == "action" && e["application_name"] == "standby_lag",
    );
    assert_eq!(caught["rule"], "replay-lag");
    assert_eq!(caught["outcome"], "terminated");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "caught after {:?}",
        started.elapsed()
    );
    // A few more seconds of polls: the receivers are never judged.
    std::thread::sleep(Duration::from_secs(5));
    let still = primary.sql(
        "SELECT count(*) FROM pg_stat_replication \
         WHERE application_name LIKE 'archiver%' AND flush_lag > '1s' AND replay_lag > '1s'",
    );
    assert_eq!(still, "2", "PostgreSQL still shows the old lags");
    for name in ["archiver_slot", "archiver"] {
        let acted = actions_on(&daemon, name);
        assert!(acted.is_empty(), "{name} was acted on: {acted:#?}");
    }
}

fn metric(text: &str, name: &str, application_name: &str) -> Option<f64> {
    text.lines()
        .find(|l| {
            l.starts_with(name) && l.contains(&format!("application_name=\"{application_name}\""))
        })
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// Issue "Field truth" 4 and the engine issue's item 7: clients replying
/// every 2 s with their clocks 3 minutes behind and ahead are not silent;
/// a stopped one whose clock is ahead is caught on time. The skew is a
/// metric.
#[test]
fn skewed_clients_are_not_silent_and_a_stopped_one_is_caught() {
    let primary = Cluster::primary("clocks_skew");
    let behind = Receiver::start(&primary, "skew_behind", &["-s", "2"], Some("-180s"));
    let _ahead = Receiver::start(&primary, "skew_ahead", &["-s", "2"], Some("+180s"));
    let stopped = Receiver::start(&primary, "stopped_ahead", &["-s", "2"], Some("+180s"));
    for name in ["skew_behind", "skew_ahead", "stopped_ahead"] {
        primary.wait_streaming(name);
    }
    // What PostgreSQL shows: the reply age by two clocks.
    let age = wait_until("skew_behind's reply", Duration::from_secs(20), || {
        primary
            .sql("SELECT extract(epoch FROM now() - reply_time)::int FROM pg_stat_replication WHERE application_name = 'skew_behind'")
            .parse::<i64>()
            .ok()
    });
    assert!(
        age >= 170,
        "libfaketime did not skew the client: reply age {age} s"
    );

    let port = free_port();
    let rules = format!(
        "[metrics]\nlisten = \"127.0.0.1:{port}\"\n\n\
         [[rule]]\nname = \"silent-standby\"\nno_reply_for = \"20s\"\naction = \"terminate\"\n"
    );
    let text = config(&primary, "replwarden", "500ms", &rules);
    // plan (one poll) shows the two-clock difference and does not judge it.
    let out = plan(&primary, &text);
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{printed}");
    assert!(!printed.contains("FIRES"), "{printed}");
    assert!(
        printed.contains("server time minus reply_time is 3m"),
        "{printed}"
    );
    let daemon = Daemon::start(&text, &[]);
    daemon.wait_message("connected to PostgreSQL", Duration::from_secs(10));
    // Replying every 2 s, however far their clocks are off: not silent.
    std::thread::sleep(Duration::from_secs(5));
    for name in ["skew_behind", "skew_ahead", "stopped_ahead"] {
        let acted = actions_on(&daemon, name);
        assert!(acted.is_empty(), "{name} was acted on: {acted:#?}");
    }
    let skews = wait_until("the skews estimated", Duration::from_secs(30), || {
        let text = http_get(port, "/metrics");
        let m = |app| metric(&text, "replwarden_walsender_reply_clock_skew_seconds", app);
        Some((m("skew_behind")?, m("skew_ahead")?, m("stopped_ahead")?))
    });
    assert!((170.0..200.0).contains(&skews.0), "{skews:?}");
    assert!((-190.0..-170.0).contains(&skews.1), "{skews:?}");
    assert!((-190.0..-170.0).contains(&skews.2), "{skews:?}");

    kill(stopped.pid(), libc::SIGSTOP);
    let frozen_at = Instant::now();
    let caught = daemon.wait_for("the stopped client", Duration::from_secs(60), |e| {
        e["event"] == "action" && e["application_name"] == "stopped_ahead"
    });
    let after = frozen_at.elapsed();
    assert_eq!(caught["rule"], "silent-standby");
    assert!(
        after >= Duration::from_secs(17) && after < Duration::from_secs(35),
        "caught {after:?} after it stopped"
    );
    for name in ["skew_behind", "skew_ahead"] {
        let acted = actions_on(&daemon, name);
        assert!(acted.is_empty(), "{name} was acted on: {acted:#?}");
    }
    drop(behind);
}

/// The engine issue's item 8: with `wal_sender_timeout = 0` a
/// `pg_receivewal -s 0` never replies and confirms no position, and a
/// psycopg2 client replies but acknowledges LSN 0; both are judged from
/// when they were first seen streaming (silence for the first, progress
/// and byte lag for both), while a receiver that replies and confirms is
/// left alone.
#[test]
fn a_client_that_never_replies_counts_from_first_seen_streaming() {
    let primary = Cluster::primary("clocks_mute");
    primary.append_conf("wal_sender_timeout = 0\n");
    primary.sql("SELECT pg_reload_conf()");
    let _mute = Receiver::start(&primary, "mute", &["-s", "0"], None);
    let _talker = Receiver::start(&primary, "talker", &["-s", "1"], None);
    let _zero = ZeroAcker::start(&primary, "zero_acker");
    for name in ["mute", "talker", "zero_acker"] {
        primary.wait_streaming(name);
    }
    // pg_receivewal starts at its segment's beginning: let it catch up.
    wait_until("talker to catch up", Duration::from_secs(30), || {
        (primary.sql("SELECT count(*) FROM pg_stat_replication WHERE application_name = 'talker' AND write_lsn = pg_current_wal_lsn()") == "1").then_some(())
    });
    let rules = r#"
[[rule]]
name = "silent"
no_reply_for = "5s"
action = "log"

[[rule]]
name = "far-behind"
write_lag_bytes = "64kB"
action = "log"

[[rule]]
name = "hung"
no_progress_for = "5s"
action = "log"
"#;
    let text = config(&primary, "replwarden", "200ms", rules);
    let daemon = Daemon::start(&text, &[]);
    daemon.wait_message("connected to PostgreSQL", Duration::from_secs(10));
    assert_eq!(
        primary.sql("SELECT count(*) FROM pg_stat_replication WHERE application_name = 'mute' AND reply_time IS NULL AND write_lsn IS NULL"),
        "1",
        "the mute client replied"
    );
    wait_until("zero_acker's feedback", Duration::from_secs(20), || {
        (primary.sql("SELECT count(*) FROM pg_stat_replication WHERE application_name = 'zero_acker' AND reply_time IS NOT NULL AND write_lsn IS NULL") == "1").then_some(())
    });
    write_wal(&primary, 20);
    for (rule, app) in [
        ("silent", "mute"),
        ("far-behind", "mute"),
        ("hung", "mute"),
        ("far-behind", "zero_acker"),
        ("hung", "zero_acker"),
    ] {
        daemon.wait_for(&format!("{rule} on {app}"), Duration::from_secs(30), |e| {
            e["event"] == "action" && e["rule"] == rule && e["application_name"] == app
        });
    }
    let acted = actions_on(&daemon, "talker");
    assert!(acted.is_empty(), "talker was acted on: {acted:#?}");
    let silent: Vec<_> = actions_on(&daemon, "zero_acker")
        .into_iter()
        .filter(|e| e["rule"] == "silent")
        .collect();
    assert!(silent.is_empty(), "zero_acker replies: {silent:#?}");
    let out = plan(&primary, &text);
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(printed.contains("confirms no position"), "{printed}");
}
