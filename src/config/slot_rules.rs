//! `[[slot_rule]]` tables and `[protect] slot_name` entries → the validated
//! [`SlotPolicy`] (see [`crate::slots`]), with the loader's helpers: every
//! error at once, each naming its key (`slot_rule[2].inactive_for`).

use std::collections::HashSet;

use toml::de::{DeTable, DeValue};

use super::{Value, Walker};
use crate::condition::{SlotSample, Subject};
use crate::policy::{Glob, PatternList};
use crate::slots::{SlotAction, SlotConditions, SlotMatchers, SlotPolicy, SlotRule};

/// The keys of a `[[slot_rule]]` besides its conditions (see
/// [`slot_rule_keys`]).
const SLOT_RULE_KEYS: &[&str] = &[
    "name",
    "action",
    "grace",
    "slot_name",
    "slot_type",
    "database",
    "plugin",
    "wal_status",
];

/// Every key of a `[[slot_rule]]`: [`SLOT_RULE_KEYS`], then the condition
/// names of [`SlotSample::CONDITIONS`].
pub(super) fn slot_rule_keys() -> Vec<&'static str> {
    let conditions = SlotSample::CONDITIONS.iter().map(|c| c.name);
    SLOT_RULE_KEYS.iter().copied().chain(conditions).collect()
}

/// The key of a `[protect]` entry that protects slots (alone in its entry).
pub(super) const PROTECT_SLOT_KEY: &str = "slot_name";

const SLOT_TYPES: &[&str] = &["physical", "logical"];
const WAL_STATUSES: &[&str] = &["reserved", "extended", "unreserved", "lost"];

impl Walker<'_> {
    /// `[[slot_rule]]` and the slot entries of `[protect]`.
    pub(super) fn slot_policy(&mut self, top: &DeTable<'_>) -> Option<SlotPolicy> {
        let before = self.errors.len();
        let rules = self.slot_rules(top);
        let protect = self.slot_protect(top.get("protect"));
        (self.errors.len() == before).then(|| SlotPolicy {
            rules: rules.unwrap_or_default(),
            protect,
        })
    }

    fn slot_rules(&mut self, top: &DeTable<'_>) -> Option<Vec<SlotRule>> {
        let value = top.get("slot_rule")?;
        let items = self.rule_items(value, ("slot_rule", "slot rule"), "")?;
        // Names are unique across [[rule]] and [[slot_rule]]: they share the
        // `rule` label of replwarden_actions_total.
        let mut names: HashSet<String> = match top.get("rule").map(|r| r.get_ref()) {
            Some(DeValue::Array(rules)) => rules
                .iter()
                .filter_map(|r| match r.get_ref() {
                    DeValue::Table(t) => match t.get("name")?.get_ref() {
                        DeValue::String(s) => Some(s.to_string()),
                        _ => None,
                    },
                    _ => None,
                })
                .collect(),
            _ => HashSet::new(),
        };
        let mut rules = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let key = format!("slot_rule[{}]", i + 1);
            if let Some(rule) = self.slot_rule(item, &key) {
                if !names.insert(rule.name.clone()) {
                    let span = match item.get_ref() {
                        DeValue::Table(t) => t.get("name").map_or(item.span(), |n| n.span()),
                        _ => item.span(),
                    };
                    self.error(
                        span,
                        &format!("{key}.name"),
                        format!(
                            "duplicate rule name {:?}: [[rule]] and [[slot_rule]] names must all be unique",
                            rule.name
                        ),
                    );
                }
                rules.push(rule);
            }
        }
        Some(rules)
    }

    fn slot_rule(&mut self, value: &Value<'_>, key: &str) -> Option<SlotRule> {
        let table = self.table(value, key)?;
        self.reject_unknown(table, key, &slot_rule_keys());
        let before = self.errors.len();
        let name = self.rule_name((table, value, key), "slot rule");
        let action = self.rule_action(
            table,
            key,
            &[("log", SlotAction::Log), ("drop", SlotAction::Drop)],
        );
        let grace = self.grace(table, key);
        let matchers = SlotMatchers {
            slot_name: self.glob_list(table, key, "slot_name", &[]),
            slot_type: self.glob_list(table, key, "slot_type", SLOT_TYPES),
            database: self.glob_list(table, key, "database", &[]),
            plugin: self.glob_list(table, key, "plugin", &[]),
            wal_status: self.glob_list(table, key, "wal_status", WAL_STATUSES),
        };
        let conditions: SlotConditions = self.thresholds(table, key);
        if self.errors.len() > before {
            return None;
        }
        if conditions.is_empty() {
            let condition_names: Vec<&str> =
                SlotSample::CONDITIONS.iter().map(|c| c.name).collect();
            self.error(
                value.span(),
                key,
                format!(
                    "this slot rule has no condition, so it would act on every slot it matches at once; give {}",
                    condition_names.join(" or ")
                ),
            );
            return None;
        }
        self.warn_zero(
            (table, value, key),
            &conditions,
            "\"0s\" holds for every inactive slot as soon as it is seen inactive",
        );
        Some(SlotRule {
            name: name?,
            matchers,
            conditions,
            grace: grace?,
            action: action?,
        })
    }

    /// The `slot_name` lists of `[protect]` / `[[protect]]` entries. An
    /// entry with `slot_name` protects slots and takes no walsender matcher.
    fn slot_protect(&mut self, value: Option<&Value<'_>>) -> Vec<PatternList<Glob>> {
        let entries: Vec<(&Value<'_>, String)> = match value.map(|v| (v, v.get_ref())) {
            Some((v, DeValue::Table(_))) => vec![(v, "protect".to_string())],
            Some((_, DeValue::Array(items))) => items
                .iter()
                .enumerate()
                .map(|(i, v)| (v, format!("protect[{}]", i + 1)))
                .collect(),
            _ => return Vec::new(),
        };
        let mut out = Vec::new();
        for (v, key) in entries {
            let DeValue::Table(table) = v.get_ref() else {
                continue;
            };
            let Some(names) = table.get(PROTECT_SLOT_KEY) else {
                continue;
            };
            let others: Vec<&str> = table
                .keys()
                .map(|k| k.get_ref().as_ref())
                .filter(|k| *k != PROTECT_SLOT_KEY)
                .collect();
            if !others.is_empty() {
                self.error(
                    names.span(),
                    &format!("{key}.{PROTECT_SLOT_KEY}"),
                    format!(
                        "an entry that protects slots takes no walsender matcher (it has {}): put slot_name in a [[protect]] entry of its own",
                        others.join(", ")
                    ),
                );
                continue;
            }
            if let Some(list) = self.glob_list(table, &key, PROTECT_SLOT_KEY, &[]) {
                out.push(list);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use crate::condition::Limit;
    use crate::slots::SlotAction;
    use crate::units::ByteSize;

    fn parse(text: &str) -> Result<crate::config::Config, String> {
        crate::config::parse(Path::new("slots.toml"), text).map_err(|e| e.to_string())
    }

    #[test]
    fn the_issue_example_loads() {
        let c = parse(
            "[[slot_rule]]\nname = \"abandoned-slots\"\nslot_name = [\"*\", \"!patroni_*\"]\n\
             inactive_for = \"1h\"\nretained_wal = \"20GB\"\nwal_status = [\"unreserved\", \"lost\"]\n\
             grace = \"0s\"\naction = \"drop\"\n\
             [[protect]]\nslot_name = [\"barman\"]\n[[protect]]\nuser = [\"replicator\"]\n",
        )
        .unwrap();
        let slots = &c.policy.slots;
        assert_eq!(slots.rules.len(), 1);
        let r = &slots.rules[0];
        assert_eq!(r.action, SlotAction::Drop);
        assert_eq!(
            r.conditions.get("inactive_for"),
            Some(Limit::Time(Duration::from_secs(3600)))
        );
        assert_eq!(
            r.conditions.get("retained_wal"),
            Some(Limit::Bytes(ByteSize(20 << 30)))
        );
        assert_eq!(
            r.matchers.slot_name.as_ref().unwrap().exclude[0].text,
            "patroni_*"
        );
        assert_eq!(slots.protect.len(), 1);
        assert_eq!(
            c.policy.protect.len(),
            1,
            "the walsender entry stays a walsender entry"
        );
        // The default action is log.
        let c = parse("[[slot_rule]]\nname = \"a\"\ninactive_for = \"1h\"\n").unwrap();
        assert_eq!(c.policy.slots.rules[0].action, SlotAction::Log);
    }

    #[test]
    fn every_error_is_reported_with_its_key() {
        let e = parse(
            "[[rule]]\nname = \"same\"\napplication_name = [\"x\"]\n\
             [[slot_rule]]\nname = \"same\"\ninactive_for = \"1h\"\n\
             [[slot_rule]]\nname = \"b\"\naction = \"terminate\"\nslot_type = \"phys\"\nwal_status = [\"gone\"]\n\
             inactive_for = \"5\"\nretained_wal = \"lots\"\nslot_nam = \"x\"\n\
             [[slot_rule]]\nname = \"c\"\nslot_name = \"x\"\n\
             [protect]\nslot_name = \"a\"\nuser = \"b\"\n",
        )
        .unwrap_err();
        for expected in [
            "slot_rule[1].name: duplicate rule name \"same\"",
            "slot_rule[2].action: unknown action \"terminate\": use \"log\" or \"drop\"",
            "slot_rule[2].slot_type[1]: unknown slot_type \"phys\"",
            "slot_rule[2].wal_status[1]: unknown wal_status \"gone\"",
            "slot_rule[2].inactive_for",
            "slot_rule[2].retained_wal",
            "slot_rule[2].slot_nam: unknown key (did you mean `slot_name`?)",
            "slot_rule[3]: this slot rule has no condition, so it would act on every slot it matches at once; \
             give inactive_for or retained_wal",
            "protect.slot_name: an entry that protects slots takes no walsender matcher (it has user)",
        ] {
            assert!(e.contains(expected), "{expected:?} not in:\n{e}");
        }
    }

    #[test]
    fn a_zero_inactive_for_is_accepted_with_a_warning() {
        let c = parse("[[slot_rule]]\nname = \"a\"\ninactive_for = \"0s\"\n").unwrap();
        assert_eq!(c.warnings.len(), 1);
        assert_eq!(c.warnings[0].key, "slot_rule[1].inactive_for");
    }
}
