//! The table of every config key: section, name, default and meaning. It is
//! the source of the replwarden.toml(5) manual page (rendered by `build.rs`,
//! which includes this file, so it must stay free of crate imports), and a
//! test checks it against the keys the loader accepts.

/// One key of the config file.
pub struct Key {
    /// The table it lives in (`postgres`, `rule`, ...); `[[rule]]` and
    /// `[protect]` keys are listed under `rule` and `protect`.
    pub section: &'static str,
    /// The key's name within that table.
    pub name: &'static str,
    /// The value used when the key is left out (`-`: none, the feature is off
    /// or the key is required where its section is given).
    pub default: &'static str,
    /// What it does, in a sentence or two.
    pub meaning: &'static str,
}

const fn key(
    section: &'static str,
    name: &'static str,
    default: &'static str,
    meaning: &'static str,
) -> Key {
    Key {
        section,
        name,
        default,
        meaning,
    }
}

/// Every key, in the order the manual page shows them.
pub const KEYS: &[Key] = &[
    key("postgres", "conninfo", "\"host=/var/run/postgresql port=5432 dbname=postgres user=replwarden\"",
        "libpq-style connection string (key=value or postgresql:// URI). What it leaves out comes from the PG* environment variables and the password file as in libpq; sslmode disable, allow, prefer (default), require, verify-ca, verify-full. replwarden sets application_name=replwarden. Passwords never appear in logs or output."),
    key("postgres", "statement_timeout", "\"5s\"",
        "Set (with lock_timeout) on the daemon's own session, so that a stuck server cannot hang a poll."),
    key("daemon", "interval", "\"1s\"", "Poll period; must be greater than 0."),
    key("daemon", "dry_run", "false",
        "true: decide and log what would be done (outcome=\"dry_run\"), signal nothing."),
    key("protect", "application_name", "-",
        "Walsenders matching every matcher given in [protect] are never acted on; the matchers are those of rules. Use [[protect]] tables for several independent entries."),
    key("protect", "user", "-", "Matcher on usename (globs), as in rules."),
    key("protect", "client_addr", "-", "Matcher on client_addr (CIDRs, addresses, \"local\"), as in rules."),
    key("protect", "state", "-", "Matcher on state, as in rules."),
    key("protect", "sync_state", "-", "Matcher on sync_state, as in rules."),
    key("protect", "slot_name", "-",
        "Globs (a leading ! excludes) of replication slot names that no [[slot_rule]] ever acts on; an entry with slot_name takes no walsender matcher (use a [[protect]] entry of its own). Slot names hold only a-z, 0-9 and _: a pattern with anything else is warned about, as is an entry of exclusions only (it protects every other slot); plan says what each entry protects now."),
    key("limits", "max_actions", "5", "Cancels and terminates allowed per window (a whole number of at least 1); more are deferred and logged, never dropped."),
    key("limits", "per", "\"1m\"", "The window of max_actions."),
    key("limits", "reconnect_backoff", "\"10s\"",
        "Wait before acting again on a client that came back; doubles each time; \"0s\" turns it off."),
    key("limits", "reconnect_backoff_max", "\"10m\"", "The cap of that wait."),
    key("limits", "max_retries", "3", "Retries of a failed signal before it is reported and left."),
    key("limits", "terminate_timeout", "\"500ms\"",
        "How long a terminate waits for the process to exit; must be below statement_timeout."),
    key("sync_guard", "enabled", "true",
        "Never leave fewer healthy synchronous standbys than synchronous_standby_names needs."),
    key("sync_guard", "healthy_reply_within", "\"15s\"",
        "A synchronous candidate is healthy when streaming and its last reply is at most this old."),
    key("metrics", "listen", "-",
        "Address:port to serve OpenMetrics text at GET /metrics (e.g. \"127.0.0.1:9847\"); without it, no endpoint."),
    key("rule", "name", "-", "Required and unique; appears in every log line about the rule."),
    key("rule", "action", "\"log\"", "\"log\", \"cancel\" or \"terminate\"."),
    key("rule", "grace", "\"0s\"",
        "How long all the conditions must hold without a break before acting; a block rule (no conditions) holds since the walsender started, or entered the state it matches."),
    key("rule", "escalate_after", "-",
        "Only with action = \"cancel\": if the same process instance is still there this long after the cancel, terminate it."),
    key("rule", "application_name", "-",
        "Matcher: globs (*, ?, [abc]) on pg_stat_replication.application_name; a leading ! excludes. Every matcher given must match."),
    key("rule", "user", "-", "Matcher: globs on usename."),
    key("rule", "client_addr", "-",
        "Matcher: CIDRs (10.0.0.0/8, fd00::/8), single addresses, \"local\" for unix-socket clients."),
    key("rule", "state", "-", "Matcher: startup, catchup, streaming, backup, stopping (globs allowed)."),
    key("rule", "sync_state", "-", "Matcher: async, potential, sync, quorum."),
    key("rule", "write_lag", "-", "Condition: write_lag greater than this duration (NULL, caught up, never holds)."),
    key("rule", "flush_lag", "-", "Condition: flush_lag greater than this duration."),
    key("rule", "replay_lag", "-", "Condition: replay_lag greater than this duration."),
    key("rule", "write_lag_bytes", "-", "Condition: the server's WAL position minus write_lsn greater than this size."),
    key("rule", "flush_lag_bytes", "-", "Condition: the server's WAL position minus flush_lsn greater than this size."),
    key("rule", "replay_lag_bytes", "-", "Condition: the server's WAL position minus replay_lsn greater than this size."),
    key("rule", "retained_wal", "-",
        "Condition: the connection's replication slot holds back more WAL than this size."),
    key("rule", "in_state_for", "-", "Condition: in its current state continuously for this long."),
    key("rule", "no_reply_for", "-", "Condition: the standby's last reply (reply_time) is older than this."),
    key("rule", "no_progress_for", "-",
        "Condition: flush_lsn has not moved for this long while the server has WAL beyond it; on a walsender in state backup, no byte streamed (pg_stat_progress_basebackup) for this long, in the phases that send bytes only."),
    // [[slot_rule]] (issue 19): see crate::slots.
    key("slot_rule", "name", "-",
        "Required; unique among [[rule]] and [[slot_rule]] names; appears in every log line about the slot rule."),
    key("slot_rule", "action", "\"log\"",
        "\"log\" or \"drop\". A drop is one statement that drops the slot only if it is still inactive, not temporary, still the same slot (type, database, plugin) and unused since it was judged (same restart_lsn, confirmed_flush_lsn, xmin and catalog_xmin), holds something (a restart_lsn or an xmin, or is lost), and on 17+ is not synced nor in synchronized_standby_slots; a slot a client took back is kept. A drop rule needs inactive_for. Needs the REPLICATION attribute on the daemon's role (warned about at connect and in plan; a refused drop is tried again every 5 minutes), which also lets the role take a base backup wherever pg_hba.conf allows it replication connections."),
    key("slot_rule", "grace", "\"0s\"", "How long all the conditions must hold without a break before acting."),
    key("slot_rule", "slot_name", "-",
        "Matcher: globs on pg_replication_slots.slot_name; a leading ! excludes. Every matcher given must match."),
    key("slot_rule", "slot_type", "-", "Matcher: physical or logical."),
    key("slot_rule", "database", "-", "Matcher: globs on the database of a logical slot (a physical slot has none)."),
    key("slot_rule", "plugin", "-", "Matcher: globs on the output plugin of a logical slot."),
    key("slot_rule", "wal_status", "-", "Matcher: reserved, extended, unreserved, lost."),
    key("slot_rule", "inactive_for", "-",
        "Condition: the slot has been inactive for longer than this, counted by the daemon from when it first saw it inactive (on 17+ from inactive_since), and again whenever it is seen active, its restart_lsn, confirmed_flush_lsn, xmin or catalog_xmin moves, or the daemon cancels or terminates its walsender. Required by a drop rule, and then at least 10 x daemon.interval (a warning under 5 minutes): longer than any standby may be down, or it comes back to no slot. A drop also waits until the daemon has itself watched the slot inactive for 10 polls, whatever inactive_since says."),
    key("slot_rule", "retained_wal", "-",
        "Condition: the server's WAL position (on a standby the received or replayed one) minus the slot's restart_lsn is greater than this size; never holds for an invalidated slot (wal_status lost, or an invalidation_reason on 17+), which holds no WAL."),
];

#[cfg(test)]
mod tests {
    use super::KEYS;

    #[test]
    fn the_table_lists_exactly_the_keys_the_loader_accepts() {
        let mut table: Vec<String> = KEYS
            .iter()
            .map(|k| format!("{}.{}", k.section, k.name))
            .collect();
        let mut accepted = crate::config::accepted_keys();
        table.sort();
        accepted.sort();
        let missing: Vec<_> = accepted.iter().filter(|k| !table.contains(k)).collect();
        let extra: Vec<_> = table.iter().filter(|k| !accepted.contains(k)).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "src/keys.rs KEYS lacks {missing:?} and has {extra:?} that the loader does not accept"
        );
        table.dedup();
        assert_eq!(table.len(), KEYS.len(), "a key is listed twice");
    }

    /// The defaults the table states are the ones a file without the key
    /// gets (the keys with a default, outside rules).
    #[test]
    fn the_defaults_are_the_loaders() {
        let config = crate::config::parse(
            std::path::Path::new("defaults.toml"),
            "[[rule]]\nname = \"r\"\napplication_name = [\"x\"]\n",
        )
        .expect("a one-rule config loads");
        let (limits, guard) = (&config.policy.limits, &config.policy.sync_guard);
        let duration = |d: std::time::Duration| format!("{d:?}");
        let loaded: Vec<(&str, String)> = vec![
            ("postgres.conninfo", config.postgres.conninfo.clone()),
            (
                "postgres.statement_timeout",
                duration(config.postgres.statement_timeout),
            ),
            ("daemon.interval", duration(config.daemon.interval)),
            ("daemon.dry_run", config.daemon.dry_run.to_string()),
            ("limits.max_actions", limits.max_actions.to_string()),
            ("limits.per", duration(limits.per)),
            (
                "limits.reconnect_backoff",
                duration(limits.reconnect_backoff),
            ),
            (
                "limits.reconnect_backoff_max",
                duration(limits.reconnect_backoff_max),
            ),
            ("limits.max_retries", limits.max_retries.to_string()),
            (
                "limits.terminate_timeout",
                duration(limits.terminate_timeout),
            ),
            ("sync_guard.enabled", guard.enabled.to_string()),
            (
                "sync_guard.healthy_reply_within",
                duration(guard.healthy_reply_within),
            ),
            ("rule.grace", duration(config.policy.rules[0].grace)),
        ];
        for (name, actual) in loaded {
            let key = KEYS
                .iter()
                .find(|k| format!("{}.{}", k.section, k.name) == name)
                .unwrap_or_else(|| panic!("{name} not in KEYS"));
            let stated = key.default.trim_matches('"');
            let expected = match crate::units::parse_duration(stated) {
                Ok(d) if key.default.starts_with('"') && !stated.contains('=') => duration(d),
                _ => stated.to_string(),
            };
            assert_eq!(actual, expected, "{name}: the loader's default");
        }
    }

    #[test]
    fn every_key_has_a_default_and_a_meaning() {
        for k in KEYS {
            assert!(
                !k.default.is_empty() && k.meaning.ends_with('.'),
                "{}.{}",
                k.section,
                k.name
            );
        }
    }
}
