//! The engine's promises where two features meet, end to end on real
//! clusters: a decision is done only for the action actually carried out
//! (dry run then enforcing, `log` then `terminate`, by reload), and a `log`
//! rule does not switch the quorum guard off for the kill rules after it.

mod harness;

use std::time::Duration;

use harness::{config, wait_until, Client, Cluster, Daemon};
use serde_json::Value;

fn pid_of(e: &Value) -> i64 {
    e["pid"].as_i64().expect("pid field")
}

const BLOCK: &str =
    "[[rule]]\nname = \"block\"\napplication_name = [\"rogue_*\"]\naction = \"terminate\"\n";

/// README install step 6: a dry run judged the rogue; `dry_run = false` and
/// a reload terminate that same process instance.
#[test]
fn going_from_dry_run_to_enforcing_by_reload_acts_on_walsenders_already_judged() {
    let primary = Cluster::primary("primary");
    let _client = Client::receivewal(&primary, "rogue_dry");
    let rogue = primary.wait_streaming("rogue_dry");
    let enforcing = config(&primary, "replwarden", "200ms", BLOCK);
    let dry = enforcing.replacen("[daemon]\n", "[daemon]\ndry_run = true\n", 1);
    let daemon = Daemon::start(&dry, &[]);
    let judged = daemon.wait_for("the dry-run decision", Duration::from_secs(10), |e| {
        e["event"] == "action"
    });
    assert_eq!(judged["outcome"], "dry_run");
    assert_eq!(pid_of(&judged), rogue.pid as i64);
    // Said once, and nothing signalled.
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(daemon.actions().len(), 1, "{}", daemon.dump());
    assert_eq!(primary.walsender("rogue_dry"), Some(rogue.clone()));

    let mark = daemon.mark();
    daemon.write_config(&enforcing);
    daemon.signal(libc::SIGHUP);
    let acted = daemon.wait_for_from(
        mark,
        "the terminate once enforcing",
        Duration::from_secs(10),
        |e| e["event"] == "action",
    );
    assert_eq!(acted["outcome"], "terminated", "{}", daemon.dump());
    assert_eq!(pid_of(&acted), rogue.pid as i64);
    assert_eq!(acted["backend_start"], judged["backend_start"]);
    wait_until(
        "the judged instance to be gone",
        Duration::from_secs(10),
        || {
            primary
                .walsenders()
                .iter()
                .all(|w| w.pid != rogue.pid)
                .then_some(())
        },
    );
}

/// A rule's action edited from `log` to `terminate` acts on the walsender
/// it had only logged.
#[test]
fn a_rule_edited_from_log_to_terminate_acts_on_walsenders_already_logged() {
    let primary = Cluster::primary("primary");
    let _client = Client::receivewal(&primary, "rogue_logged");
    let rogue = primary.wait_streaming("rogue_logged");
    let log = config(
        &primary,
        "replwarden",
        "200ms",
        &BLOCK.replace("terminate", "log"),
    );
    let daemon = Daemon::start(&log, &[]);
    let logged = daemon.wait_for("the log decision", Duration::from_secs(10), |e| {
        e["event"] == "action"
    });
    assert_eq!(logged["outcome"], "logged");
    assert_eq!(pid_of(&logged), rogue.pid as i64);

    let mark = daemon.mark();
    daemon.write_config(&config(&primary, "replwarden", "200ms", BLOCK));
    daemon.signal(libc::SIGHUP);
    let acted = daemon.wait_for_from(mark, "the terminate", Duration::from_secs(10), |e| {
        e["event"] == "action"
    });
    assert_eq!(acted["action"], "terminate", "{}", daemon.dump());
    assert_eq!(acted["outcome"], "terminated");
    assert_eq!(pid_of(&acted), rogue.pid as i64);
}

/// Issue 20 item 1: a `log` rule before a `terminate` rule on the only
/// synchronous standby: logged, and the terminate held at every poll.
#[test]
fn a_log_rule_before_a_kill_rule_keeps_the_only_sync_standby() {
    let primary = Cluster::primary("primary");
    primary.sql("ALTER SYSTEM SET synchronous_standby_names = 'standby_sync'");
    primary.sql("SELECT pg_reload_conf()");
    let standby = Cluster::standby(&primary, "standby_sync");
    let before = wait_until("standby_sync to be sync", Duration::from_secs(20), || {
        (primary.sql(
            "SELECT sync_state FROM pg_stat_replication WHERE application_name = 'standby_sync'",
        ) == "sync")
            .then(|| primary.walsender("standby_sync").unwrap())
    });
    let rules = "[[rule]]\nname = \"watch\"\napplication_name = [\"standby_*\"]\naction = \"log\"\n\
                 [[rule]]\nname = \"kill\"\napplication_name = [\"standby_sync\"]\naction = \"terminate\"\n";
    let daemon = Daemon::start(&config(&primary, "replwarden", "200ms", rules), &[]);
    let logged = daemon.wait_for("the log decision", Duration::from_secs(10), |e| {
        e["event"] == "action"
    });
    assert_eq!(logged["rule"], "watch");
    wait_until("three held polls", Duration::from_secs(10), || {
        let held = daemon
            .events()
            .iter()
            .filter(|e| e["message"] == "held: would break synchronous quorum")
            .count();
        (held >= 3).then_some(())
    });
    let actions = daemon.actions();
    assert!(
        actions.iter().all(|e| e["rule"] == "watch"),
        "only logged: {actions:#?}"
    );
    assert_eq!(primary.walsender("standby_sync"), Some(before));
    drop(standby);
}
