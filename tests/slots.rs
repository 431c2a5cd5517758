//! Replication slots with rules (`[[slot_rule]]`) on real clusters: an
//! inactive slot retaining WAL is dropped, while an active one, a `log`
//! rule's slot, a slot named in `synchronized_standby_slots` (17+) and
//! every slot in a dry run are kept; the drop statement itself keeps a slot
//! a client took back, or used, between the read and the drop. The daemon
//! test runs on every major there are server binaries for.

mod harness;

use std::path::Path;
use std::time::Duration;

use harness::{free_port, on_every_major, plan, wait_until, Client, Cluster, Daemon};
use replwarden::slots::pg::{self, SlotOutcome};
use replwarden::sql::ServerVersion;

const LONG: Duration = Duration::from_secs(90);

/// A physical slot that reserves WAL at once, then more WAL written, so
/// the slot holds some back.
fn abandoned_slot(primary: &Cluster, name: &str) {
    primary.sql(&format!(
        "SELECT pg_create_physical_replication_slot('{name}', true)"
    ));
    primary.sql("INSERT INTO t (payload) SELECT repeat('x', 100) FROM generate_series(1, 100)");
    primary.sql("SELECT pg_switch_wal()");
}

fn slot_exists(primary: &Cluster, name: &str) -> bool {
    primary.sql(&format!(
        "SELECT count(*) FROM pg_replication_slots WHERE slot_name = '{name}'"
    )) == "1"
}

fn wait_active(primary: &Cluster, name: &str, active: bool) {
    wait_until(&format!("slot {name} active = {active}"), LONG, || {
        let a = primary.sql(&format!(
            "SELECT active FROM pg_replication_slots WHERE slot_name = '{name}'"
        ));
        (a == if active { "t" } else { "f" }).then_some(())
    });
}

const RULES: &str = r#"
[[slot_rule]]
name = "abandoned-slots"
slot_name = ["*", "!logged*"]
inactive_for = "3s"
retained_wal = "1kB"
action = "drop"

[[slot_rule]]
name = "watch-only"
slot_name = ["logged*"]
inactive_for = "3s"
"#;

fn daemon_config(primary: &Cluster, metrics_port: u16, extra: &str) -> String {
    format!(
        "[postgres]\nconninfo = \"{}\"\n[daemon]\ninterval = \"200ms\"\n{extra}\n\
         [metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n{RULES}",
        primary.conninfo("replwarden")
    )
}

#[test]
fn an_inactive_slot_is_dropped_and_active_logged_and_guarded_ones_kept_on_every_major() {
    on_every_major("slot rules", on_major);
}

fn on_major(bin: &Path) -> String {
    let primary = Cluster::primary_in(bin, "primary");
    let major = primary.major();
    if major < replwarden::sql::OLDEST_MAJOR {
        return format!("PostgreSQL {}: not supported, skipped", primary.version());
    }
    primary.sql("ALTER ROLE replwarden REPLICATION");
    let _reports = Client::recvlogical(&primary, "reports");
    wait_active(&primary, "reports", true);
    abandoned_slot(&primary, "abandoned");
    abandoned_slot(&primary, "logged");
    if major >= 17 {
        abandoned_slot(&primary, "guarded");
        primary.sql("ALTER SYSTEM SET synchronized_standby_slots = 'guarded'");
        primary.sql("SELECT pg_reload_conf()");
    }
    let port = free_port();
    let daemon = Daemon::start(&daemon_config(&primary, port, ""), &[]);

    let dropped = daemon.wait_for("the abandoned slot dropped", LONG, |e| {
        e["event"] == "action" && e["slot_name"] == "abandoned"
    });
    assert_eq!(dropped["outcome"], "dropped", "{}", daemon.dump());
    assert_eq!(dropped["rule"], "abandoned-slots");
    assert_eq!(dropped["action"], "drop");
    assert!(
        dropped["retained_wal_bytes"].as_u64().unwrap() > 1024,
        "{dropped}"
    );
    assert!(
        dropped["inactive_seconds"].as_u64().unwrap() >= 3,
        "{dropped}"
    );
    assert!(!slot_exists(&primary, "abandoned"));

    let logged = daemon.wait_for("the log rule's slot logged", LONG, |e| {
        e["event"] == "action" && e["slot_name"] == "logged"
    });
    assert_eq!(logged["outcome"], "logged");
    assert!(slot_exists(&primary, "logged"));

    // The metrics show every slot; a few more polls for the rest to act if
    // they would.
    let metrics = wait_until("the slot metrics", LONG, || {
        let text = harness::http_get(port, "/metrics");
        text.contains("replwarden_slot_active{slot=\"reports\",slot_type=\"logical\"} 1")
            .then_some(text)
    });
    assert!(
        metrics.contains("replwarden_slot_wal_status{slot=\"logged\",slot_type=\"physical\",wal_status=\"reserved\"} 1")
            || metrics.contains("replwarden_slot_wal_status{slot=\"logged\",slot_type=\"physical\",wal_status=\"extended\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("replwarden_slot_inactive_seconds{slot=\"logged\""),
        "{metrics}"
    );
    for (outcome, n) in [("dropped", 1), ("kept", 0)] {
        let series = format!(
            "replwarden_actions_total{{rule=\"abandoned-slots\",action=\"drop\",outcome=\"{outcome}\"}} {n}\n"
        );
        assert!(metrics.contains(&series), "{series} not in:\n{metrics}");
    }
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        daemon.slot_actions("reports").is_empty(),
        "{}",
        daemon.dump()
    );
    assert!(slot_exists(&primary, "reports"));
    assert_eq!(daemon.slot_actions("logged").len(), 1, "logged once");
    let guarded = if major >= 17 {
        assert!(
            daemon.slot_actions("guarded").is_empty(),
            "{}",
            daemon.dump()
        );
        assert!(slot_exists(&primary, "guarded"));
        primary.sql("ALTER SYSTEM RESET synchronized_standby_slots");
        primary.sql("SELECT pg_reload_conf()");
        ", a slot in synchronized_standby_slots kept"
    } else {
        ""
    };
    format!(
        "PostgreSQL {} ({}): inactive slot dropped, active and log-rule slots kept{guarded}",
        primary.version(),
        bin.display()
    )
}

#[test]
fn a_dry_run_keeps_every_slot_and_plan_shows_what_would_be_dropped() {
    let primary = Cluster::primary("primary");
    primary.sql("ALTER ROLE replwarden REPLICATION");
    abandoned_slot(&primary, "abandoned");

    // plan: no memory, so only a retained_wal rule can hold at once.
    let out = plan(
        &primary,
        &format!(
            "[postgres]\nconninfo = \"{}\"\n[[slot_rule]]\nname = \"big\"\nretained_wal = \"1kB\"\n",
            primary.conninfo("replwarden")
        ),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("replication slots: 1; 1 slot rule(s)"),
        "{text}"
    );
    assert!(text.contains("slot \"abandoned\" physical"), "{text}");
    assert!(
        text.contains("slot_rule \"big\" (log): retained_wal="),
        "{text}"
    );
    assert!(text.contains("; would log now"), "{text}");

    let daemon = Daemon::start(&daemon_config(&primary, free_port(), "dry_run = true"), &[]);
    let simulated = daemon.wait_for("a simulated drop", LONG, |e| {
        e["event"] == "action" && e["slot_name"] == "abandoned"
    });
    assert_eq!(simulated["outcome"], "dry_run");
    std::thread::sleep(Duration::from_secs(2));
    assert!(slot_exists(&primary, "abandoned"));
    assert_eq!(daemon.slot_actions("abandoned").len(), 1, "simulated once");
}

/// The drop statement, driven directly so the slot can be changed between
/// the read and the drop (the daemon's timing cannot be steered).
#[test]
fn the_drop_keeps_a_slot_taken_back_or_used_after_the_read() {
    let primary = Cluster::primary("primary");
    let harness::Direct { rt, client } = primary.direct("replwarden");
    let version = ServerVersion(
        primary
            .sql("SHOW server_version_num")
            .parse()
            .expect("server_version_num"),
    );
    let read = |name: &str| {
        let snapshot = rt.block_on(pg::read(&client, version)).expect("read slots");
        snapshot
            .slots
            .into_iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("slot {name} not read"))
    };
    let drop = |slot: &replwarden::slots::Slot| {
        rt.block_on(pg::drop_slot(&client, version, slot))
            .expect("drop")
    };

    // Without REPLICATION the server refuses, and says what to grant.
    abandoned_slot(&primary, "moved");
    let moved = read("moved");
    assert!(
        !moved.active && moved.retained_wal.unwrap().0 > 0,
        "{moved:?}"
    );
    match drop(&moved) {
        SlotOutcome::Refused(why) => assert!(why.contains("REPLICATION"), "{why}"),
        other => panic!("expected refused, got {other:?}"),
    }
    primary.sql("ALTER ROLE replwarden REPLICATION");

    // Used after the read: its restart_lsn moved, so it is kept.
    primary.sql("SELECT pg_replication_slot_advance('moved', pg_current_wal_lsn())");
    match drop(&moved) {
        SlotOutcome::Kept(why) => assert!(why.contains("restart_lsn moved"), "{why}"),
        other => panic!("expected kept, got {other:?}"),
    }
    assert!(slot_exists(&primary, "moved"));
    assert_eq!(drop(&read("moved")), SlotOutcome::Dropped);
    assert!(!slot_exists(&primary, "moved"));
    assert_eq!(drop(&moved), SlotOutcome::Gone);

    // Taken back by its client after the read: active, so it is kept.
    primary.sql("SELECT pg_create_logical_replication_slot('comeback', 'test_decoding')");
    let comeback = read("comeback");
    assert!(!comeback.active);
    assert_eq!(
        (
            comeback.slot_type.as_str(),
            comeback.database.as_deref(),
            comeback.plugin.as_deref()
        ),
        ("logical", Some("postgres"), Some("test_decoding"))
    );
    let client_back = Client::recvlogical(&primary, "comeback");
    wait_active(&primary, "comeback", true);
    match drop(&comeback) {
        SlotOutcome::Kept(why) => assert!(why.contains("active again"), "{why}"),
        other => panic!("expected kept, got {other:?}"),
    }
    assert!(slot_exists(&primary, "comeback"));
    std::mem::drop(client_back);
    wait_active(&primary, "comeback", false);
    assert_eq!(drop(&read("comeback")), SlotOutcome::Dropped);
}

/// On a standby, `retained_wal` is the WAL the standby holds (its received
/// or replayed position) minus `restart_lsn`, and a slot there is dropped
/// like one on a primary; the budget defers what is over it.
#[test]
fn on_a_standby_slots_are_measured_against_its_wal_and_the_budget_defers() {
    let primary = Cluster::primary("primary");
    primary.sql("ALTER ROLE replwarden REPLICATION");
    let standby = Cluster::standby(&primary, "standby_a");
    primary.wait_streaming("standby_a");
    for name in ["cascade_a", "cascade_b"] {
        standby.sql(&format!(
            "SELECT pg_create_physical_replication_slot('{name}', true)"
        ));
    }
    primary.sql("INSERT INTO t (payload) SELECT repeat('x', 100) FROM generate_series(1, 1000)");
    primary.sql("SELECT pg_switch_wal()");
    let config = format!(
        "[postgres]\nconninfo = \"{}\"\n[daemon]\ninterval = \"200ms\"\n\
         [limits]\nmax_actions = 1\nper = \"1h\"\n\
         [[slot_rule]]\nname = \"cascade\"\nslot_name = \"cascade_*\"\ninactive_for = \"3s\"\nretained_wal = \"1kB\"\naction = \"drop\"\n",
        standby.conninfo("replwarden")
    );
    let daemon = Daemon::start(&config, &[]);
    let dropped = daemon.wait_for("a slot dropped on the standby", LONG, |e| {
        e["event"] == "action" && e["outcome"] == "dropped"
    });
    assert!(
        dropped["retained_wal_bytes"].as_u64().unwrap() > 1024,
        "{dropped}"
    );
    let deferred = daemon.wait_for("the other drop deferred", LONG, |e| {
        e["event"] == "deferred"
    });
    assert_eq!(deferred["deferred"], 1);
    let kept = if dropped["slot_name"] == "cascade_a" {
        "cascade_b"
    } else {
        "cascade_a"
    };
    assert!(
        deferred["actions"].as_str().unwrap().contains(kept),
        "{deferred}"
    );
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        slot_exists(&standby, kept),
        "over budget: kept for a later window"
    );
    assert_eq!(
        standby.sql("SELECT count(*) FROM pg_replication_slots"),
        "1"
    );
}
