//! The lasting fix printed for a reconnect loop, on a real cluster: never a
//! `pg_hba.conf` line or `ALTER ROLE` that would also shut out a healthy
//! standby of the same role and address (issue 14 item 2), and the safe
//! lines once the looping client has a role of its own.

mod harness;

use std::time::Duration;

use harness::{config, Client, Cluster, Daemon};

const LOOP_RULE: &str = r#"
[limits]
reconnect_backoff = "1s"
reconnect_backoff_max = "10s"

[[rule]]
name = "no-rogue"
application_name = ["rogue_*"]
action = "terminate"
"#;

#[test]
fn loop_advice_never_cuts_off_a_standby_that_shares_the_role() {
    let primary = Cluster::primary("primary");
    // The standby replicates as `replicator` from 127.0.0.1, as the rogue does.
    let _standby = Cluster::standby(&primary, "pgnode2");
    let rogue = Client::receivewal(&primary, "rogue_shared");
    primary.wait_streaming("rogue_shared");
    let daemon = Daemon::start(&config(&primary, "replwarden", "200ms", LOOP_RULE), &[]);
    let warning = daemon.wait_for("the reconnect loop warning", Duration::from_secs(60), |e| {
        e["event"] == "reconnect_loop"
    });
    assert_eq!(warning["user"], "replicator", "{warning}");
    assert_eq!(warning["fix_hba"], "", "would cut off pgnode2: {warning}");
    assert_eq!(warning["fix_role"], "", "would cut off pgnode2: {warning}");
    let advice = warning["advice"].as_str().unwrap();
    assert!(
        advice.contains("\"pgnode2\"") && advice.contains("give this client its own role"),
        "{advice}"
    );
    assert!(
        primary.walsender("pgnode2").is_some(),
        "the standby is never acted on"
    );
    drop(daemon);
    drop(rogue);

    // Given a role of its own, the same client gets lines that shut out it alone.
    primary.sql("CREATE ROLE rogue_role LOGIN REPLICATION");
    let _rogue = Client::receivewal_as(&primary, "rogue_own", "rogue_role");
    primary.wait_streaming("rogue_own");
    let daemon = Daemon::start(&config(&primary, "replwarden", "200ms", LOOP_RULE), &[]);
    let warning = daemon.wait_for("the reconnect loop warning", Duration::from_secs(60), |e| {
        e["event"] == "reconnect_loop" && e["application_name"] == "rogue_own"
    });
    assert_eq!(
        warning["fix_hba"], "host replication rogue_role 127.0.0.1/32 reject",
        "{warning}"
    );
    assert_eq!(warning["fix_role"], "ALTER ROLE rogue_role NOREPLICATION;");
}
