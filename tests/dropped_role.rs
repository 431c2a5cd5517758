//! A role dropped while its walsender streams (issue 21 item 4). PostgreSQL
//! allows `DROP ROLE` then and keeps the stream going; `pg_stat_replication`
//! shows `usename` NULL from then on (`usesysid` keeps the oid). The daemon
//! judges the walsender by the role it saw it with, so a `user` rule still
//! ends it, also after a reload has matched every walsender again; `plan`, which remembers nothing, says the role is gone.

mod harness;

use std::time::Duration;

use harness::{config, plan, Client, Cluster, Daemon};

#[test]
fn a_user_rule_still_ends_a_walsender_whose_role_was_dropped() {
    let primary = Cluster::primary("primary");
    primary.sql("CREATE ROLE doomed LOGIN REPLICATION");
    let _client = Client::receivewal_as(&primary, "archiver_doomed", "doomed");
    let before = primary.wait_streaming("archiver_doomed");
    // A block rule counts its grace from the walsender's start: long
    // enough to see it, drop its role and look at it with `plan` first.
    let rules = "[[rule]]\nname = \"no-doomed\"\nuser = [\"doomed\"]\ngrace = \"25s\"\naction = \"terminate\"\n";
    let text = config(&primary, "replwarden", "200ms", rules);
    let daemon = Daemon::start(&text, &[]);
    daemon.wait_message("poll done", Duration::from_secs(30));
    primary.sql("DROP ROLE doomed");
    assert_eq!(
        primary.sql("SELECT coalesce(usename::text, 'NULL') || ' ' || (usesysid <> 0) FROM pg_stat_replication WHERE application_name = 'archiver_doomed'"),
        "NULL true",
        "the server shows the stream without its role name"
    );
    let out = plan(&primary, &text);
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        printed.contains("user=NULL (its role was dropped while it streams"),
        "{printed}"
    );
    let warning = daemon.wait_for("the dropped-role warning", Duration::from_secs(30), |e| {
        e["event"] == "dropped_role"
    });
    assert_eq!(warning["user"], "doomed", "{warning}");
    // A reload matches every walsender again: the rule must still know it.
    daemon.write_config(&format!(
        "{text}\n[[rule]]\nname = \"unrelated\"\napplication_name = [\"nobody\"]\n"
    ));
    daemon.signal(libc::SIGHUP);
    daemon.wait_message("config reloaded", Duration::from_secs(30));
    let acted = daemon.wait_for("the terminate", Duration::from_secs(60), |e| {
        e["event"] == "action" && e["application_name"] == "archiver_doomed"
    });
    assert_eq!(acted["user"], "doomed", "{acted}");
    assert_eq!(acted["outcome"], "terminated", "{acted}");
    assert_eq!(acted["pid"], before.pid);
}
