//! Base backups judged by their progress (issue 19, section 1), against
//! real servers: `no_progress_for` on a walsender in `backup` means "no
//! byte streamed for that long" (`pg_stat_progress_basebackup`), and only
//! in the phases that send bytes.
//!
//! The backups are taken by `psql` sending `BASE_BACKUP` itself
//! ([`Client::base_backup`]: the harness ships one `pg_basebackup`, which
//! refuses newer servers); SIGSTOP makes it stop reading, as a stuck
//! `pg_basebackup` would.

mod harness;

use std::path::Path;
use std::time::{Duration, Instant};

use harness::{free_port, on_every_major, plan, wait_until, Client, Cluster, Daemon};

const LONG: Duration = Duration::from_secs(120);

/// The phase and bytes streamed of `application_name`'s base backup, once
/// its walsender is in `backup` with a progress row.
fn progress(cluster: &Cluster, application_name: &str) -> Option<(String, u64)> {
    let row = cluster.sql(&format!(
        "SELECT p.phase || '|' || p.backup_streamed FROM pg_stat_progress_basebackup p \
         JOIN pg_stat_replication r ON r.pid = p.pid \
         WHERE r.application_name = '{application_name}' AND r.state = 'backup'"
    ));
    let (phase, streamed) = row.split_once('|')?;
    Some((phase.to_string(), streamed.parse().ok()?))
}

fn daemon_config(cluster: &Cluster, metrics_port: u16) -> String {
    format!(
        "[postgres]\nconninfo = \"{}\"\n[daemon]\ninterval = \"1s\"\n[metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n\
         [[rule]]\nname = \"stuck-backup\"\nstate = [\"backup\"]\nno_progress_for = \"10s\"\naction = \"terminate\"\n",
        cluster.conninfo("replwarden")
    )
}

/// Dirty buffers for the start-of-backup checkpoint to write, at the pace
/// of `checkpoint_timeout` × `checkpoint_completion_target` (27 s here).
fn spread_checkpoint_ahead(cluster: &Cluster) {
    cluster.sql("ALTER SYSTEM SET checkpoint_timeout = '30s'");
    cluster.sql("SELECT pg_reload_conf()");
    cluster.sql("INSERT INTO t (payload) SELECT repeat('x', 1000) FROM generate_series(1, 10000)");
}

#[test]
fn a_throttled_backup_through_a_spread_checkpoint_is_never_stalled() {
    let primary = Cluster::primary("primary");
    spread_checkpoint_ahead(&primary);
    let port = free_port();
    let daemon = Daemon::start(&daemon_config(&primary, port), &[]);
    daemon.wait_message("connected to PostgreSQL", LONG);
    let _backup = Client::base_backup(&primary, "bb_throttled", 32, false, false);
    let pid = primary.wait_walsender("bb_throttled", "backup").pid;

    // While the checkpoint is spread, `plan` shows the phase not judged.
    let waiting = wait_until("the phase after initializing", LONG, || {
        progress(&primary, "bb_throttled")
            .map(|(phase, _)| phase)
            .filter(|phase| phase != "initializing")
    });
    assert_eq!(waiting, "waiting for checkpoint to finish");
    let out = plan(&primary, &daemon_config(&primary, free_port()));
    let plan_text = String::from_utf8_lossy(&out.stdout).into_owned();

    // 45 s of polling: the phases seen, and the longest the bytes stood
    // still in each.
    let started = Instant::now();
    let mut last: Option<(String, u64, Instant)> = None;
    let mut longest_still: Vec<(String, Duration)> = Vec::new();
    while started.elapsed() < Duration::from_secs(45) {
        if let Some((phase, streamed)) = progress(&primary, "bb_throttled") {
            let now = Instant::now();
            match &last {
                Some((p, s, _)) if *p == phase && *s == streamed => {}
                _ => last = Some((phase.clone(), streamed, now)),
            }
            let (p, _, since) = last.as_ref().unwrap();
            let still = now.duration_since(*since);
            match longest_still.iter_mut().find(|(q, _)| q == p) {
                Some((_, d)) => *d = (*d).max(still),
                None => longest_still.push((p.clone(), still)),
            }
        }
        assert!(daemon.actions().is_empty(), "{}", daemon.dump());
        std::thread::sleep(Duration::from_millis(500));
    }
    // Still the same walsender, never acted on.
    assert_eq!(primary.wait_walsender("bb_throttled", "backup").pid, pid);
    assert!(daemon.actions().is_empty(), "{}", daemon.dump());

    // It went through a checkpoint wait longer than the rule's 10 s and
    // streamed at 32 kB/s, never 10 s without a byte.
    let still = |phase: &str| {
        longest_still
            .iter()
            .find(|(p, _)| p == phase)
            .map(|(_, d)| *d)
    };
    let checkpoint = still("waiting for checkpoint to finish");
    assert!(
        checkpoint.is_some_and(|d| d > Duration::from_secs(10)),
        "{longest_still:?}"
    );
    let streaming = still("streaming database files");
    assert!(
        streaming.is_some_and(|d| d < Duration::from_secs(10)),
        "{longest_still:?}"
    );
    assert!(
        plan_text.contains("base backup: phase waiting for checkpoint to finish; streamed 0 B of an unknown total; bytes do not move in this phase"),
        "{plan_text}"
    );
    assert!(
        plan_text.contains("no_progress_for: base backup waiting for checkpoint to finish, 0 B of an unknown total: bytes do not move in this phase, not judged"),
        "{plan_text}"
    );

    // The metrics show its phase and bytes.
    let metrics = harness::http_get(port, "/metrics");
    assert!(
        metrics.contains("replwarden_basebackup_phase{application_name=\"bb_throttled\",client_addr=\"127.0.0.1\",user=\"replicator\",ordinal=\"0\",phase=\"streaming database files\"} 1"),
        "{metrics}"
    );
    // Bytes as the server counts them: never ahead of what it shows after
    // the scrape.
    let streamed: f64 = metrics
        .lines()
        .find(|l| {
            l.starts_with("replwarden_basebackup_streamed_bytes{application_name=\"bb_throttled\"")
        })
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no streamed bytes for bb_throttled:\n{metrics}"));
    let (_, server) = progress(&primary, "bb_throttled").expect("still backing up");
    assert!(
        streamed > 0.0 && streamed <= server as f64,
        "{streamed} vs {server}"
    );
    assert!(
        metrics.contains("replwarden_basebackup_stalled_seconds{application_name=\"bb_throttled\""),
        "{metrics}"
    );
}

#[test]
fn a_backup_whose_client_stops_reading_is_terminated_on_every_major() {
    on_every_major("stalled base backup", stalled_on_major);
}

fn stalled_on_major(bin: &Path) -> String {
    let primary = Cluster::primary_in(bin, "primary");
    if primary.major() < replwarden::sql::OLDEST_MAJOR {
        return format!("PostgreSQL {}: not supported, skipped", primary.version());
    }
    // Enough data that the backup at 1 MB/s outlasts the socket buffers.
    primary.sql("INSERT INTO t (payload) SELECT repeat('x', 1000) FROM generate_series(1, 30000)");
    let daemon = Daemon::start(&daemon_config(&primary, free_port()), &[]);
    daemon.wait_message("connected to PostgreSQL", LONG);
    let throttled = Client::base_backup(&primary, "bb_throttled", 32, true, false);
    let stuck = Client::base_backup(&primary, "bb_stuck", 1024, true, false);
    wait_until("the backup streaming", LONG, || {
        progress(&primary, "bb_stuck")
            .filter(|(phase, streamed)| phase == "streaming database files" && *streamed > 0)
    });
    // The client stops reading.
    harness::kill(stuck.pid(), libc::SIGSTOP);

    let action = daemon.wait_for("the stuck backup terminated", LONG, |e| {
        e["event"] == "action" && e["application_name"] == "bb_stuck"
    });
    assert_eq!(action["outcome"], "terminated", "{action}");
    assert_eq!(action["state"], "backup", "{action}");
    let measured = action["measured"].as_str().unwrap();
    assert!(
        measured.starts_with("no_progress_for=base backup streaming database files, ")
            && measured.contains(", unchanged for ")
            && measured.ends_with("(>= 10s)"),
        "{measured}"
    );
    // The throttled one streams on, untouched.
    assert!(progress(&primary, "bb_throttled").is_some());
    assert!(
        daemon
            .actions()
            .iter()
            .all(|e| e["application_name"] != "bb_throttled"),
        "{}",
        daemon.dump()
    );
    drop(throttled);
    format!(
        "PostgreSQL {} ({}): the stopped client's backup terminated ({measured}), the throttled one kept",
        primary.version(),
        bin.display()
    )
}
