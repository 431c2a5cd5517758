//! End to end, on real clusters: the replwarden binary against a primary,
//! standbys, a logical subscriber, pg_receivewal and a throttled
//! pg_basebackup that the harness starts and stops.

mod harness;

use std::time::{Duration, Instant};

use harness::{config, logical_subscriber, wait_until, Client, Cluster, Daemon};
use serde_json::Value;

fn pid_of(e: &Value) -> i64 {
    e["pid"].as_i64().expect("pid field")
}

/// Everything on one topology: a blocked name, a lag rule, a stuck backup,
/// and the connections that must be left alone; then `plan` on the
/// standby, which sees its own cascading walsender.
#[test]
fn enforces_a_policy_on_a_mixed_topology() {
    let primary = Cluster::primary("primary");
    let standby_a = Cluster::standby(&primary, "standby_a");
    let cascade = Cluster::standby(&standby_a, "cascade_1");
    let lagging = Cluster::standby(&primary, "standby_lag");
    let subscriber = logical_subscriber(&primary, "logical_sub");
    let _pump = Client::wal_pump(&primary);
    lagging.sql("SELECT pg_wal_replay_pause()");
    let healthy_before: Vec<_> = ["standby_a", "logical_sub"]
        .iter()
        .map(|name| primary.wait_streaming(name))
        .collect();

    let rules = r#"
[[rule]]
name = "no-rogue-tools"
application_name = ["rogue_*"]
grace = "1s"
action = "terminate"

[[rule]]
name = "replica-too-far-behind"
application_name = ["standby_*", "logical_*"]
replay_lag = "2s"
replay_lag_bytes = "8kB"
grace = "1s"
action = "terminate"

[[rule]]
name = "stuck-base-backup"
state = ["backup"]
in_state_for = "3s"
action = "terminate"
"#;
    let daemon = Daemon::start(&config(&primary, "replwarden", "500ms", rules), &[]);
    daemon.wait_message("connected to PostgreSQL", Duration::from_secs(10));

    // A blocked name: gone within grace + interval (+ slack), the exact instance.
    let _rogue = Client::receivewal(&primary, "rogue_receiver");
    let rogue = primary.wait_streaming("rogue_receiver");
    let seen = Instant::now();
    let gone = wait_until(
        "the rogue walsender to be terminated",
        Duration::from_secs(10),
        || (primary.walsenders().iter().all(|w| w.pid != rogue.pid)).then(Instant::now),
    );
    let reaction = gone - seen;
    assert!(
        reaction < Duration::from_millis(1000 + 500 + 1500),
        "rogue terminated after {reaction:?}"
    );
    let event = daemon.wait_for("the rogue's action event", Duration::from_secs(5), |e| {
        e["event"] == "action" && e["rule"] == "no-rogue-tools"
    });
    assert_eq!(pid_of(&event), rogue.pid as i64);
    assert_eq!(event["action"], "terminate");
    assert_eq!(event["outcome"], "terminated");
    assert_eq!(event["application_name"], "rogue_receiver");
    assert_eq!(event["user"], "replicator");
    assert_eq!(event["client_addr"], "127.0.0.1");
    assert_eq!(event["state"], "streaming");
    assert!(event["backend_start"]
        .as_str()
        .is_some_and(|s| !s.is_empty()));
    assert!(event["measured"]
        .as_str()
        .unwrap()
        .contains("application_name=rogue_receiver"));

    // The lagging standby (replay paused) is terminated by the lag rule.
    let lag_event = daemon.wait_for("the lag rule to fire", Duration::from_secs(30), |e| {
        e["event"] == "action" && e["rule"] == "replica-too-far-behind"
    });
    assert_eq!(lag_event["application_name"], "standby_lag", "{lag_event}");
    assert_eq!(lag_event["outcome"], "terminated");
    let measured = lag_event["measured"].as_str().unwrap();
    assert!(
        measured.contains("replay_lag=") && measured.contains("replay_lag_bytes="),
        "{measured}"
    );

    // A throttled base backup stays in `backup` until in_state_for ends it.
    let backup_client = Client::slow_basebackup(&primary, "slow_backup");
    let backup = primary.wait_walsender("slow_backup", "backup");
    let backup_event = daemon.wait_for(
        "the stuck backup to be terminated",
        Duration::from_secs(20),
        |e| e["event"] == "action" && e["rule"] == "stuck-base-backup",
    );
    assert_eq!(pid_of(&backup_event), backup.pid as i64);
    assert_eq!(backup_event["outcome"], "terminated");
    assert!(backup_event["measured"]
        .as_str()
        .unwrap()
        .starts_with("in_state_for="));
    wait_until("the backup walsender to go", Duration::from_secs(5), || {
        primary.walsender("slow_backup").is_none().then_some(())
    });
    drop(backup_client);

    // Healthy connections were left alone: same process instances, no action.
    for before in &healthy_before {
        assert_eq!(
            primary.walsender(&before.application_name).as_ref(),
            Some(before)
        );
    }
    for e in daemon.actions() {
        let app = e["application_name"].as_str().unwrap();
        assert!(
            ["rogue_receiver", "standby_lag", "slow_backup"].contains(&app),
            "unexpected action on {app}: {e}"
        );
    }

    // plan on the standby: it sees its cascading walsender and signals nothing.
    let out = harness::plan(&standby_a, &config(&standby_a, "replwarden", "1s", rules));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("server: standby (cascading walsenders)"),
        "{text}"
    );
    assert!(text.contains("\"cascade_1\""), "{text}");
    assert!(text.contains("no rule matches: left alone"), "{text}");
    drop((cascade, subscriber));
}

/// DESIGN fact 6: a standby whose walreceiver is stopped keeps a small time
/// lag for a long time; only reply age and (lack of) progress reveal it.
#[test]
fn a_frozen_standby_is_caught_by_progress_and_reply_age_not_by_time_lag() {
    let primary = Cluster::primary("primary");
    let healthy = Cluster::standby(&primary, "standby_ok");
    let frozen = Cluster::standby(&primary, "standby_frozen");
    let _pump = Client::wal_pump(&primary);
    let rules = r#"
[[rule]]
name = "time-lag"
replay_lag = "2s"
action = "terminate"

[[rule]]
name = "silent"
no_reply_for = "3s"
action = "log"

[[rule]]
name = "hung"
no_progress_for = "4s"
action = "terminate"
"#;
    let daemon = Daemon::start(&config(&primary, "replwarden", "500ms", rules), &[]);
    daemon.wait_message("connected to PostgreSQL", Duration::from_secs(10));
    let ok = primary.wait_streaming("standby_ok");
    let victim = primary.wait_streaming("standby_frozen");
    frozen.freeze(frozen.walreceiver_pid());

    let silent = daemon.wait_for("no_reply_for to fire", Duration::from_secs(20), |e| {
        e["event"] == "action" && e["rule"] == "silent"
    });
    assert_eq!(silent["application_name"], "standby_frozen");
    assert_eq!(silent["outcome"], "logged");
    assert!(silent["measured"]
        .as_str()
        .unwrap()
        .starts_with("no_reply_for="));
    let hung = daemon.wait_for("no_progress_for to fire", Duration::from_secs(20), |e| {
        e["event"] == "action" && e["rule"] == "hung"
    });
    assert_eq!(pid_of(&hung), victim.pid as i64);
    assert_eq!(hung["outcome"], "terminated");
    assert!(hung["measured"]
        .as_str()
        .unwrap()
        .starts_with("no_progress_for="));
    wait_until(
        "the frozen standby's walsender to go",
        Duration::from_secs(5),
        || primary.walsender("standby_frozen").is_none().then_some(()),
    );

    let actions = daemon.actions();
    assert!(
        actions.iter().all(|e| e["rule"] != "time-lag"),
        "the time lag rule must not fire: {actions:#?}"
    );
    assert!(
        actions
            .iter()
            .all(|e| e["application_name"] == "standby_frozen"),
        "{actions:#?}"
    );
    assert_eq!(primary.walsender("standby_ok"), Some(ok));
    drop(healthy);
}

/// `plan` and dry runs decide but signal nothing; a role that cannot read
/// pg_stat_replication is told the GRANT to run and acts on nothing.
#[test]
fn dry_run_plan_and_a_blind_role_signal_nothing() {
    let primary = Cluster::primary("primary");
    let _rogue_client = Client::receivewal(&primary, "rogue_tool");
    let rogue = primary.wait_streaming("rogue_tool");
    let block =
        "[[rule]]\nname = \"block\"\napplication_name = [\"rogue_*\"]\naction = \"terminate\"\n";

    let out = harness::plan(&primary, &config(&primary, "replwarden", "1s", block));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("server: primary"), "{text}");
    assert!(text.contains("rule \"block\": FIRES: terminate"), "{text}");
    assert!(
        text.contains(&format!("would act now:\n  terminate pid {}", rogue.pid)),
        "{text}"
    );

    // dry_run = true in the file.
    let dry = format!(
        "[postgres]\nconninfo = \"{}\"\n[daemon]\ninterval = \"200ms\"\ndry_run = true\n{block}",
        primary.conninfo("replwarden")
    );
    let daemon = Daemon::start(&dry, &[]);
    let event = daemon.wait_for("a dry-run action", Duration::from_secs(10), |e| {
        e["event"] == "action"
    });
    assert_eq!(event["outcome"], "dry_run");
    assert_eq!(pid_of(&event), rogue.pid as i64);
    drop(daemon);
    // --dry-run on the command line.
    let daemon = Daemon::start(
        &config(&primary, "replwarden", "200ms", block),
        &["--dry-run"],
    );
    daemon.wait_for("a dry-run action", Duration::from_secs(10), |e| {
        e["outcome"] == "dry_run"
    });
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        daemon.actions().len(),
        1,
        "one decision per instance: {}",
        daemon.dump()
    );
    drop(daemon);
    assert_eq!(
        primary.walsender("rogue_tool"),
        Some(rogue.clone()),
        "dry runs signal nothing"
    );

    // A role without pg_monitor sees NULL columns: loud error, no action.
    primary.sql("CREATE ROLE blind LOGIN; GRANT pg_signal_backend TO blind");
    let daemon = Daemon::start(&config(&primary, "blind", "200ms", block), &[]);
    let e = daemon.wait_for("the privilege advice", Duration::from_secs(10), |e| {
        e["message"] == "the role cannot read every walsender's row: acting on nothing"
            && e["advice"]
                .as_str()
                .is_some_and(|a| a.contains("GRANT pg_monitor TO blind;"))
    });
    assert_eq!(e["level"], "ERROR");
    std::thread::sleep(Duration::from_secs(1));
    assert!(daemon.actions().is_empty(), "{}", daemon.dump());
    assert_eq!(primary.walsender("rogue_tool"), Some(rogue.clone()));
    drop(daemon);

    // A superuser's walsender: pg_signal_backend may not touch it. The
    // refusal is logged with advice, once per instance, and nothing breaks.
    let _super_client = Client::receivewal_as(&primary, "rogue_super", "postgres");
    let superuser = primary.wait_streaming("rogue_super");
    let only_super = "[[rule]]\nname = \"block\"\napplication_name = [\"rogue_super\"]\naction = \"terminate\"\n";
    let daemon = Daemon::start(&config(&primary, "replwarden", "200ms", only_super), &[]);
    let refused = daemon.wait_for("the refusal", Duration::from_secs(10), |e| {
        e["event"] == "action"
    });
    assert_eq!(refused["outcome"], "refused", "{refused}");
    assert_eq!(refused["level"], "ERROR");
    assert!(
        refused["detail"].as_str().unwrap().contains("superuser"),
        "{refused}"
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(daemon.actions().len(), 1, "{}", daemon.dump());
    assert_eq!(primary.walsender("rogue_super"), Some(superuser));
}

/// SIGHUP: a broken file is rejected with its errors and the running policy
/// stays; a good one applies a new rule. SIGTERM stops within a second.
#[test]
fn sighup_applies_a_new_rule_and_survives_a_broken_file() {
    let primary = Cluster::primary("primary");
    let _rogue_client = Client::receivewal(&primary, "rogue_late");
    let rogue = primary.wait_streaming("rogue_late");
    let watch_nobody = "[[rule]]\nname = \"watch\"\napplication_name = [\"nobody\"]\n";
    let mut daemon = Daemon::start(&config(&primary, "replwarden", "200ms", watch_nobody), &[]);
    daemon.wait_message("connected to PostgreSQL", Duration::from_secs(10));

    let broken = format!(
        "{}\n[[rule]]\nname = \"block\"\napplication_name = [\"rogue_*\"]\ngrace = \"soon\"\nacton = \"terminate\"\n",
        config(&primary, "replwarden", "200ms", "")
    );
    daemon.write_config(&broken);
    daemon.signal(libc::SIGHUP);
    daemon.wait_message("reload rejected", Duration::from_secs(5));
    let errors: Vec<String> = daemon
        .events()
        .iter()
        .filter(|e| e["message"] == "config error")
        .map(|e| e["error"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(errors.len(), 2, "{errors:#?}");
    assert!(
        errors[0].contains(":11:9: rule[1].grace: \"soon\" is not a duration"),
        "{errors:#?}"
    );
    assert!(
        errors[1].contains(":12:1: rule[1].acton: unknown key (did you mean `action`?)"),
        "{errors:#?}"
    );
    std::thread::sleep(Duration::from_millis(600));
    assert!(daemon.actions().is_empty());
    assert_eq!(primary.walsender("rogue_late"), Some(rogue.clone()));

    let good = format!(
        "{}\n[[rule]]\nname = \"block\"\napplication_name = [\"rogue_*\"]\naction = \"terminate\"\n",
        config(&primary, "replwarden", "200ms", watch_nobody)
    );
    daemon.write_config(&good);
    daemon.signal(libc::SIGHUP);
    let reloaded = daemon.wait_message("config reloaded", Duration::from_secs(5));
    assert_eq!(reloaded["added"], "[\"block\"]");
    let event = daemon.wait_for("the new rule to act", Duration::from_secs(5), |e| {
        e["event"] == "action"
    });
    assert_eq!(
        (event["rule"].as_str(), pid_of(&event)),
        (Some("block"), rogue.pid as i64)
    );
    assert_eq!(event["outcome"], "terminated");

    let asked = Instant::now();
    daemon.signal(libc::SIGTERM);
    let status = daemon
        .wait_exit(Duration::from_secs(5))
        .expect("the daemon exits on SIGTERM");
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "took {:?}",
        asked.elapsed()
    );
    assert!(status.success(), "{status}");
    daemon.wait_message("replwarden stopped", Duration::from_secs(1));
}

/// Down at start, then restarted under the daemon: it waits with backoff,
/// reconnects, and goes on enforcing.
#[test]
fn waits_for_the_server_and_keeps_going_across_a_restart() {
    let primary = Cluster::primary("primary");
    primary.stop("fast");
    let block =
        "[[rule]]\nname = \"block\"\napplication_name = [\"rogue_*\"]\naction = \"terminate\"\n";
    let mut daemon = Daemon::start(&config(&primary, "replwarden", "300ms", block), &[]);
    let waiting = daemon.wait_message("waiting for PostgreSQL", Duration::from_secs(10));
    assert_eq!(waiting["level"], "WARN");
    primary.start();
    daemon.wait_message("connected to PostgreSQL", Duration::from_secs(15));

    let _rogue_client = Client::receivewal(&primary, "rogue_again");
    let first = daemon.wait_for("the rogue to be terminated", Duration::from_secs(10), |e| {
        e["event"] == "action" && e["outcome"] == "terminated"
    });

    let mark = daemon.mark();
    primary.restart();
    daemon.wait_for_from(
        mark,
        "the lost connection to be noticed",
        Duration::from_secs(10),
        |e| {
            e["message"]
                .as_str()
                .is_some_and(|m| m.contains("lost the connection"))
        },
    );
    daemon.wait_for_from(mark, "a reconnect", Duration::from_secs(30), |e| {
        e["message"] == "connected to PostgreSQL"
    });
    // pg_receivewal comes back (it retries every 5 s) and is ended again.
    let again = daemon.wait_for_from(
        mark,
        "enforcement after the restart",
        Duration::from_secs(30),
        |e| e["event"] == "action" && e["outcome"] == "terminated",
    );
    assert_ne!(
        (pid_of(&again), &again["backend_start"]),
        (pid_of(&first), &first["backend_start"])
    );
    assert!(
        daemon.wait_exit(Duration::ZERO).is_none(),
        "the daemon is still running"
    );
}
