//! What a reload changes: the difference between the running config and
//! the new one, worked out without side effects. The loop
//! ([`crate::daemon`]) acts on it (reconnect, restart the ticker) and logs
//! it in the `config reloaded` line.

use std::collections::HashSet;

use crate::config::Config;

/// The differences between two configs that the running daemon acts on or
/// reports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// The connection settings changed (`conninfo`, `statement_timeout`):
    /// the session is replaced by one with the new settings.
    pub reconnect: bool,
    /// The poll interval changed: the ticker starts over.
    pub interval: bool,
    /// `metrics.listen` changed: the endpoint moves only at the next
    /// restart, which the operator is told.
    pub listen: bool,
    /// Names of the rules the new config adds, in file order.
    pub added: Vec<String>,
    /// Names of the rules it removes, in the old file's order.
    pub removed: Vec<String>,
}

impl Changes {
    /// What going from `old` to `new` changes (linear in the number of
    /// rules).
    pub fn between(old: &Config, new: &Config) -> Changes {
        let (added, removed) = rule_changes(old, new);
        Changes {
            reconnect: new.postgres.conninfo != old.postgres.conninfo
                || new.postgres.statement_timeout != old.postgres.statement_timeout,
            interval: new.daemon.interval != old.daemon.interval,
            listen: new.metrics.listen != old.metrics.listen,
            added,
            removed,
        }
    }
}

/// The names of the rules `new` adds and removes, in file order (linear
/// in the number of rules).
fn rule_changes(old: &Config, new: &Config) -> (Vec<String>, Vec<String>) {
    let names =
        |c: &Config| -> HashSet<String> { c.policy.rules.iter().map(|r| r.name.clone()).collect() };
    let (old_names, new_names) = (names(old), names(new));
    let only_in = |c: &Config, other: &HashSet<String>| -> Vec<String> {
        c.policy
            .rules
            .iter()
            .filter(|r| !other.contains(&r.name))
            .map(|r| r.name.clone())
            .collect()
    };
    (only_in(new, &old_names), only_in(old, &new_names))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;

    fn parse(text: &str) -> Config {
        config::parse(std::path::Path::new("t.toml"), text).unwrap()
    }

    #[test]
    fn reload_reports_added_and_removed_rules_in_file_order() {
        let config = |names: &[&str]| {
            let text: String = names
                .iter()
                .map(|n| format!("[[rule]]\nname = \"{n}\"\nuser = \"x\"\n"))
                .collect();
            parse(&text)
        };
        let Changes { added, removed, .. } =
            Changes::between(&config(&["a", "b", "c"]), &config(&["d", "b", "a", "e"]));
        assert_eq!(
            (added, removed),
            (vec!["d".to_string(), "e".into()], vec!["c".to_string()])
        );
    }

    #[test]
    fn the_same_file_changes_nothing() {
        let text =
            "[postgres]\nconninfo = \"host=/tmp user=u\"\n[[rule]]\nname = \"a\"\nuser = \"x\"\n";
        assert_eq!(
            Changes::between(&parse(text), &parse(text)),
            Changes::default()
        );
    }

    #[test]
    fn connection_settings_reconnect_and_the_rest_do_not() {
        let old = parse("[postgres]\nconninfo = \"host=/tmp user=u\"\n");
        let changes = |text: &str| Changes::between(&old, &parse(text));
        let conninfo = changes("[postgres]\nconninfo = \"host=/tmp user=v\"\n");
        assert!(conninfo.reconnect && !conninfo.interval && !conninfo.listen);
        let timeout =
            changes("[postgres]\nconninfo = \"host=/tmp user=u\"\nstatement_timeout = \"9s\"\n");
        assert!(timeout.reconnect);
        let interval =
            changes("[postgres]\nconninfo = \"host=/tmp user=u\"\n[daemon]\ninterval = \"7s\"\n");
        assert!(interval.interval && !interval.reconnect);
        let listen = changes(
            "[postgres]\nconninfo = \"host=/tmp user=u\"\n[metrics]\nlisten = \"127.0.0.1:9187\"\n",
        );
        assert!(listen.listen && !listen.reconnect && !listen.interval);
    }
}
