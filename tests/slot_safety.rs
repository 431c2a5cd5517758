//! Replication slot rules against drops that would cut off a client or a
//! protected slot, on real clusters: a
//! standby that restarts under a drop rule keeps its slot; a slot named in
//! `synchronized_standby_slots` after a tab is kept (17+); a logical slot
//! pinned by an open transaction but consumed between polls is kept; a
//! slot re-created under the same name is not dropped by the re-check of
//! the old one; an invalidated slot retains no WAL (18); the daemon and
//! `plan` say when the role cannot drop, and what each `[protect]
//! slot_name` entry protects.

mod harness;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use harness::{plan, psql_on, server_bins, wait_until, Cluster, Daemon};
use replwarden::slots::pg::{self, SlotOutcome};
use replwarden::slots::Slot;
use replwarden::sql::ServerVersion;
use serde_json::Value;

const LONG: Duration = Duration::from_secs(90);

fn slot_exists(cluster: &Cluster, name: &str) -> bool {
    cluster.sql(&format!(
        "SELECT count(*) FROM pg_replication_slots WHERE slot_name = '{name}'"
    )) == "1"
}

fn write_wal(cluster: &Cluster, rows: u32) {
    cluster.sql(&format!(
        "INSERT INTO t (payload) SELECT repeat('x', 1000) FROM generate_series(1, {rows})"
    ));
}

/// The major of the server binaries in `bin`, from `postgres --version`
/// (no cluster needed).
fn major_of(bin: &Path) -> u32 {
    let out = Command::new(bin.join("postgres"))
        .arg("--version")
        .output()
        .expect("postgres --version");
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text.split_whitespace().nth(2).expect("a version");
    version
        .split(['.', 'b', 'r'])
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or_else(|| panic!("no major in {text:?}"))
}

/// The server folders of [`server_bins`] whose major is at least `least`.
fn bins_from(least: u32) -> Vec<PathBuf> {
    server_bins()
        .into_iter()
        .filter(|b| major_of(b) >= least)
        .collect()
}

/// The slot statements driven directly, as the daemon sends them.
struct Direct {
    session: harness::Direct,
    version: ServerVersion,
}

impl Direct {
    fn connect(cluster: &Cluster) -> Direct {
        let version = ServerVersion(
            cluster
                .sql("SHOW server_version_num")
                .parse()
                .expect("server_version_num"),
        );
        Direct {
            session: cluster.direct("replwarden"),
            version,
        }
    }

    fn read(&self, name: &str) -> Slot {
        let snapshot = self
            .session
            .rt
            .block_on(pg::read(&self.session.client, self.version))
            .expect("read slots");
        snapshot
            .slots
            .into_iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("slot {name} not read"))
    }

    fn drop(&self, slot: &Slot) -> SlotOutcome {
        self.session
            .rt
            .block_on(pg::drop_slot(&self.session.client, self.version, slot))
            .expect("drop")
    }
}

/// A psql session holding an open transaction with an xid, so that no
/// logical slot's `restart_lsn` can pass it. Ends (rolled back) on drop.
struct OpenTransaction(Child);

impl OpenTransaction {
    fn begin(cluster: &Cluster) -> OpenTransaction {
        let mut child = psql_on(cluster.port)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("psql");
        child
            .stdin
            .as_mut()
            .unwrap()
            .write_all(b"BEGIN;\nINSERT INTO t (payload) VALUES ('pin');\n")
            .expect("write to psql");
        wait_until("the pinning transaction", LONG, || {
            (cluster.sql(
                "SELECT count(*) FROM pg_stat_activity WHERE backend_xid IS NOT NULL AND state = 'idle in transaction'",
            ) == "1")
                .then_some(())
        });
        OpenTransaction(child)
    }
}

impl Drop for OpenTransaction {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// P1.1: a drop rule without inactive_for is refused; with one, a standby
/// stopped for a few seconds while WAL is written comes back to its slot.
#[test]
fn a_standby_that_restarts_under_a_drop_rule_keeps_its_slot() {
    let primary = Cluster::primary("primary");
    primary.sql("ALTER ROLE replwarden REPLICATION");
    let standby = Cluster::standby_by_copy(&primary, "sb1");

    // A drop rule with no inactive_for is refused, saying why.
    let unsafe_rule = format!(
        "[postgres]\nconninfo = \"{}\"\n[daemon]\ninterval = \"200ms\"\n\
         [[slot_rule]]\nname = \"big\"\nretained_wal = \"1MB\"\naction = \"drop\"\n",
        primary.conninfo("replwarden")
    );
    let out = plan(&primary, &unsafe_rule);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("slot_rule[1]: a drop rule needs inactive_for"),
        "{stderr}"
    );

    let config = format!(
        "[postgres]\nconninfo = \"{}\"\n[daemon]\ninterval = \"200ms\"\n\
         [[slot_rule]]\nname = \"abandoned\"\ninactive_for = \"20s\"\nretained_wal = \"1MB\"\naction = \"drop\"\n",
        primary.conninfo("replwarden")
    );
    let daemon = Daemon::start(&config, &[]);
    daemon.wait_message("connected to PostgreSQL", LONG);
    standby.stop("fast");
    // Stopped a few seconds while WAL is written: the slot holds it back.
    for _ in 0..4 {
        write_wal(&primary, 2000);
        std::thread::sleep(Duration::from_secs(1));
    }
    let retained: u64 = primary
        .sql("SELECT pg_current_wal_lsn() - restart_lsn FROM pg_replication_slots WHERE slot_name = 'sb1'")
        .parse()
        .expect("retained bytes");
    assert!(retained > 1 << 20, "retained {retained}");
    standby.start();
    primary.wait_streaming("sb1");
    assert!(slot_exists(&primary, "sb1"));
    assert!(daemon.slot_actions("sb1").is_empty(), "{}", daemon.dump());
}

/// P1.2: the server skips any whitespace around a name of
/// `synchronized_standby_slots`; so do the read and the drop's re-check.
#[test]
fn a_slot_named_after_a_tab_in_synchronized_standby_slots_is_kept_on_17_and_later() {
    let bins = bins_from(17);
    if bins.is_empty() {
        eprintln!("no server binaries of 17 or later (REPLWARDEN_PG_BINS): skipped");
        return;
    }
    for bin in bins {
        let primary = Cluster::primary_in(&bin, "primary");
        primary.sql("ALTER ROLE replwarden REPLICATION");
        for name in ["guarded", "other", "lined"] {
            primary.sql(&format!(
                "SELECT pg_create_physical_replication_slot('{name}', true)"
            ));
        }
        write_wal(&primary, 100);
        primary
            .sql("ALTER SYSTEM SET synchronized_standby_slots = E'other,\\tguarded ,\\f\\tlined'");
        primary.sql("SELECT pg_reload_conf()");
        let direct = Direct::connect(&primary);
        for name in ["guarded", "other", "lined"] {
            let slot = direct.read(name);
            assert!(
                slot.synchronized_standby,
                "{name} on {}: {slot:?}",
                bin.display()
            );
            // The drop statement's own re-check keeps it too.
            let judged = Slot {
                synchronized_standby: false,
                ..slot
            };
            match direct.drop(&judged) {
                SlotOutcome::Kept(why) => {
                    assert!(why.contains("synchronized_standby_slots"), "{why}")
                }
                other => panic!("{name} on {}: expected kept, got {other:?}", bin.display()),
            }
            assert!(slot_exists(&primary, name));
        }
        primary.sql("ALTER SYSTEM RESET synchronized_standby_slots");
        primary.sql("SELECT pg_reload_conf()");
    }
}

/// P1.3: a logical slot whose `restart_lsn` an open transaction pins, and
/// whose consumer takes its changes between polls (never seen active), is
/// kept while consumed and dropped once it is not.
#[test]
fn a_pinned_logical_slot_consumed_between_polls_is_kept_on_every_major() {
    harness::on_every_major("pinned logical slot", |bin| {
        if major_of(bin) < replwarden::sql::OLDEST_MAJOR {
            return format!("{}: not supported, skipped", bin.display());
        }
        let primary = Cluster::primary_in(bin, "primary");
        primary.sql("ALTER ROLE replwarden REPLICATION");
        primary.sql("SELECT pg_create_logical_replication_slot('etl', 'test_decoding')");
        let pin = OpenTransaction::begin(&primary);
        let config = format!(
            "[postgres]\nconninfo = \"{}\"\n[daemon]\ninterval = \"200ms\"\n\
             [[slot_rule]]\nname = \"abandoned\"\ninactive_for = \"4s\"\nretained_wal = \"1kB\"\naction = \"drop\"\n",
            primary.conninfo("replwarden")
        );
        let daemon = Daemon::start(&config, &[]);
        daemon.wait_message("connected to PostgreSQL", LONG);
        let pinned =
            primary.sql("SELECT restart_lsn FROM pg_replication_slots WHERE slot_name = 'etl'");
        // Consumed every second for 12 s (three times inactive_for).
        for _ in 0..12 {
            write_wal(&primary, 20);
            primary.sql("SELECT count(*) FROM pg_logical_slot_get_changes('etl', NULL, NULL)");
            std::thread::sleep(Duration::from_secs(1));
        }
        assert_eq!(
            primary.sql("SELECT restart_lsn FROM pg_replication_slots WHERE slot_name = 'etl'"),
            pinned,
            "the open transaction pins restart_lsn"
        );
        assert!(slot_exists(&primary, "etl"), "{}", daemon.dump());
        assert!(daemon.slot_actions("etl").is_empty(), "{}", daemon.dump());
        // No longer consumed: dropped (the rule does hold for it).
        let dropped = daemon.wait_for("the unconsumed slot dropped", LONG, |e| {
            e["event"] == "action" && e["slot_name"] == "etl"
        });
        assert_eq!(dropped["outcome"], "dropped", "{}", daemon.dump());
        assert_eq!(dropped["in_recovery"], false, "{dropped}");
        assert_ne!(dropped["confirmed_flush_lsn"], "NULL", "{dropped}");
        drop(pin);
        format!(
            "PostgreSQL {}: consumed slot kept, then dropped",
            primary.version()
        )
    });
}

/// P2.6: the drop of a slot as judged keeps a slot re-created under its
/// name (it holds nothing yet, or is of another type), and a slot used
/// between the read and the drop through confirmed_flush_lsn alone.
#[test]
fn the_drop_keeps_a_recreated_slot_and_one_consumed_after_the_read() {
    let primary = Cluster::primary("primary");
    primary.sql("ALTER ROLE replwarden REPLICATION");
    let direct = Direct::connect(&primary);

    // Judged while holding WAL; re-created since, never reserved.
    primary.sql("SELECT pg_create_physical_replication_slot('again', true)");
    write_wal(&primary, 100);
    let old = direct.read("again");
    primary.sql("SELECT pg_drop_replication_slot('again')");
    primary.sql("SELECT pg_create_physical_replication_slot('again')");
    match direct.drop(&old) {
        SlotOutcome::Kept(why) => assert!(why.contains("restart_lsn moved"), "{why}"),
        other => panic!("expected kept, got {other:?}"),
    }
    // Judged as the new one: it holds nothing, so dropping frees nothing.
    let fresh = direct.read("again");
    assert_eq!(fresh.restart_lsn, None);
    match direct.drop(&fresh) {
        SlotOutcome::Kept(why) => assert!(why.contains("holds nothing"), "{why}"),
        other => panic!("expected kept, got {other:?}"),
    }
    // Re-created as a logical slot of that name.
    primary.sql("SELECT pg_drop_replication_slot('again')");
    primary.sql("SELECT pg_create_physical_replication_slot('again', true)");
    let physical = direct.read("again");
    primary.sql("SELECT pg_drop_replication_slot('again')");
    primary.sql("SELECT pg_create_logical_replication_slot('again', 'test_decoding')");
    match direct.drop(&physical) {
        SlotOutcome::Kept(why) => assert!(why.contains("re-created"), "{why}"),
        other => panic!("expected kept, got {other:?}"),
    }
    assert!(slot_exists(&primary, "again"));

    // Pinned by an open transaction, consumed after the read.
    primary.sql("SELECT pg_create_logical_replication_slot('etl', 'test_decoding')");
    let _pin = OpenTransaction::begin(&primary);
    write_wal(&primary, 20);
    primary.sql("SELECT count(*) FROM pg_logical_slot_get_changes('etl', NULL, NULL)");
    let judged = direct.read("etl");
    write_wal(&primary, 20);
    primary.sql("SELECT count(*) FROM pg_logical_slot_get_changes('etl', NULL, NULL)");
    assert_eq!(direct.read("etl").restart_lsn, judged.restart_lsn, "pinned");
    match direct.drop(&judged) {
        SlotOutcome::Kept(why) => assert!(why.contains("confirmed_flush_lsn moved"), "{why}"),
        other => panic!("expected kept, got {other:?}"),
    }
    assert!(slot_exists(&primary, "etl"));
}

/// P2.5: on 18 a slot invalidated for idleness keeps its restart_lsn, yet
/// holds no WAL: no retained_wal.
#[test]
fn an_invalidated_slot_retains_no_wal_on_18() {
    let bins = bins_from(18);
    if bins.is_empty() {
        eprintln!("no server binaries of 18 or later (REPLWARDEN_PG_BINS): skipped");
        return;
    }
    for bin in bins {
        let primary = Cluster::primary_in(&bin, "primary");
        primary.sql("ALTER SYSTEM SET idle_replication_slot_timeout = '1min'");
        primary.sql("SELECT pg_reload_conf()");
        primary.sql("SELECT pg_create_physical_replication_slot('idle', true)");
        write_wal(&primary, 100);
        std::thread::sleep(Duration::from_secs(61));
        wait_until("the idle slot invalidated", LONG, || {
            primary.sql("CHECKPOINT");
            (primary.sql(
                "SELECT invalidation_reason FROM pg_replication_slots WHERE slot_name = 'idle'",
            ) == "idle_timeout")
                .then_some(())
        });
        let slot = Direct::connect(&primary).read("idle");
        assert!(slot.restart_lsn.is_some(), "18 keeps it: {slot:?}");
        assert_eq!(slot.retained_wal, None, "{slot:?}");
        assert_eq!(slot.invalidation_reason.as_deref(), Some("idle_timeout"));
    }
}

/// P2.4 and P2.7: without REPLICATION the daemon warns at start that its
/// drops will be refused, and so does `plan`, with each `[protect]
/// slot_name` entry's slots.
#[test]
fn a_role_that_cannot_drop_is_warned_about_and_plan_shows_protect_entries() {
    let primary = Cluster::primary("primary");
    primary.sql("SELECT pg_create_physical_replication_slot('barman', true)");
    primary.sql("SELECT pg_create_physical_replication_slot('postgres_1', true)");
    let config = format!(
        "[postgres]\nconninfo = \"{}\"\n[daemon]\ninterval = \"200ms\"\n\
         [[protect]]\nslot_name = [\"barman\"]\n\
         [[protect]]\nslot_name = [\"pg-node-*\"]\n\
         [[slot_rule]]\nname = \"abandoned\"\ninactive_for = \"1h\"\naction = \"drop\"\n",
        primary.conninfo("replwarden")
    );
    let out = plan(&primary, &config);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "WARNING: role replwarden lacks the REPLICATION attribute, so the server will refuse every drop of slot rule(s) \"abandoned\"",
        "[protect] slot_name entry 1 [\"barman\"]: protects 1 slot(s) now: \"barman\"\n",
        "[protect] slot_name entry 2 [\"pg-node-*\"]: protects no slot now\n",
        "conditions do not hold yet: inactive_for is unknown before PostgreSQL 17",
    ] {
        assert!(text.contains(line), "{line:?} not in:\n{text}");
    }
    let drop_warning = |e: &Value| {
        e["event"] == "preflight"
            && e["finding"]
                .as_str()
                .is_some_and(|f| f.contains("REPLICATION"))
    };
    // Without a drop rule: nothing to warn about; slot rules are counted.
    let log_only = config.replace("action = \"drop\"", "action = \"log\"");
    let daemon = Daemon::start(&log_only, &[]);
    let starting = daemon.wait_message("replwarden starting", LONG);
    assert_eq!(starting["slot_rules"], 1, "{starting}");
    daemon.wait_message("connected to PostgreSQL", LONG);
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        !daemon.events().iter().any(drop_warning),
        "{}",
        daemon.dump()
    );
    // A reload that adds a drop rule warns at once.
    daemon.write_config(&config);
    daemon.signal(libc::SIGHUP);
    let warned = daemon.wait_for("the drop privilege warning", LONG, drop_warning);
    assert!(
        warned["finding"]
            .as_str()
            .unwrap()
            .contains("ALTER ROLE replwarden REPLICATION"),
        "{warned}"
    );
    // Once: not at every poll.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        daemon.events().iter().filter(|e| drop_warning(e)).count(),
        1,
        "{}",
        daemon.dump()
    );
    drop(daemon);
    // At start, too: one verdict, "failed", never "passed" beside it, and
    // logged once (by the connect, not again by the first poll).
    let daemon = Daemon::start(&config, &[]);
    daemon.wait_for("the drop privilege warning at start", LONG, drop_warning);
    std::thread::sleep(Duration::from_secs(2));
    let events = daemon.events();
    assert!(
        !events
            .iter()
            .any(|e| e["message"] == "privilege preflight passed"),
        "{}",
        daemon.dump()
    );
    assert_eq!(
        events.iter().filter(|e| drop_warning(e)).count(),
        1,
        "{}",
        daemon.dump()
    );
}
