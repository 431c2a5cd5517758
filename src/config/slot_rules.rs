//! `[[slot_rule]]` tables and `[protect] slot_name` entries → the validated
//! [`SlotPolicy`] (see [`crate::slots`]), with the loader's helpers: every
//! error at once, each naming its key (`slot_rule[2].inactive_for`).

use std::collections::HashSet;

use toml::de::{DeTable, DeValue};

use super::MAX_NAME_BYTES;
use super::{Value, Walker};
use crate::condition::{Limit, SlotSample, Subject};
use crate::policy::{Glob, PatternList};
use crate::slots::{SlotAction, SlotConditions, SlotMatchers, SlotPolicy, SlotRule};
use crate::units::fmt_duration;

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

/// A drop rule's `inactive_for` is refused below this many polls.
pub const DROP_FLOOR_POLLS: u32 = 10;

/// A drop rule's `inactive_for` below this draws a warning.
pub const DROP_WARN_BELOW: std::time::Duration = std::time::Duration::from_secs(300);
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
            // Set from [daemon] interval by the caller.
            observe_for: std::time::Duration::ZERO,
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
        if action == Some(SlotAction::Drop) && conditions.get("inactive_for").is_none() {
            self.error(
                value.span(),
                key,
                "a drop rule needs inactive_for: without it a slot is dropped the first time a poll sees it \
                 inactive, and a standby that restarts, or reconnects after a walsender rule cut it off, finds \
                 its slot gone and must be rebuilt; give inactive_for longer than your standbys take to come back",
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

    /// A drop rule's `inactive_for` must outlast a standby's restart: at
    /// least [`DROP_FLOOR_POLLS`] polls (an error below: a slot must be seen
    /// inactive at many polls before it goes), and a warning below
    /// [`DROP_WARN_BELOW`]. Checked once both `[daemon]` and the slot rules
    /// parsed.
    pub(super) fn drop_floor(
        &mut self,
        top: &DeTable<'_>,
        policy: &SlotPolicy,
        interval: std::time::Duration,
    ) -> bool {
        let floor = interval * DROP_FLOOR_POLLS;
        let mut ok = true;
        for (i, rule) in policy.rules.iter().enumerate() {
            if rule.action != SlotAction::Drop {
                continue;
            }
            let Some(Limit::Time(inactive_for)) = rule.conditions.get("inactive_for") else {
                continue;
            };
            let key = format!("slot_rule[{}].inactive_for", i + 1);
            let span = match top.get("slot_rule").map(|v| v.get_ref()) {
                Some(DeValue::Array(items)) => items
                    .get(i)
                    .and_then(|t| t.get_ref().get("inactive_for"))
                    .map_or(0..0, |v| v.span()),
                _ => 0..0,
            };
            if inactive_for < floor {
                self.error(
                    span,
                    &key,
                    format!(
                        "{} is too short for a drop rule: it must be at least {DROP_FLOOR_POLLS} polls \
                         ({DROP_FLOOR_POLLS} x daemon.interval = {}), so that a slot is seen inactive at many \
                         polls before it is dropped; a standby that restarts needs its slot when it comes back",
                        fmt_duration(inactive_for),
                        fmt_duration(floor)
                    ),
                );
                ok = false;
            } else if inactive_for < DROP_WARN_BELOW {
                self.warning(
                    span,
                    &key,
                    format!(
                        "{} is short for a drop rule: a standby stopped longer than that (a restart, an upgrade, \
                         a network outage) loses its slot and must be rebuilt; most setups want {} or more",
                        fmt_duration(inactive_for),
                        fmt_duration(DROP_WARN_BELOW)
                    ),
                );
            }
        }
        ok
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
                if list.include.is_empty() {
                    self.warning(
                        names.span(),
                        &format!("{key}.{PROTECT_SLOT_KEY}"),
                        "this entry has only exclusions, so it protects every slot except those: list the \
                         slots to protect (\"!\" only narrows what the other patterns of the entry protect)",
                    );
                }
                out.push(list);
            }
        }
        out
    }
}

/// Why a `slot_name` glob can never match a slot: the server allows only
/// lower-case letters, digits and `_` in slot names, at most
/// [`MAX_NAME_BYTES`] of them. `never` says what that means for this
/// pattern (it never matches, or never excludes).
pub(super) fn slot_name_warnings(never: &str, body: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut outside = String::new();
    let mut chars = body.chars();
    while let Some(c) = chars.next() {
        match c {
            '*' | '?' => {}
            // A class matches whichever of its members is valid: not judged.
            '[' => {
                let mut first = true;
                for c in chars.by_ref() {
                    if c == ']' && !first {
                        break;
                    }
                    first = first && c == '!';
                }
            }
            c if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' => {}
            c => {
                if !outside.contains(c) {
                    outside.push(c);
                }
            }
        }
    }
    if !outside.is_empty() {
        out.push(format!(
            "{never}: it has {outside:?}, and slot names hold only lower-case letters, digits and _ \
             (Patroni names a member's slot after the member with - and . replaced by _, in lower case)"
        ));
    }
    let least = super::rules::min_match_bytes(body);
    if least > MAX_NAME_BYTES {
        out.push(format!(
            "{never}: it needs at least {least} bytes, and a slot name has at most {MAX_NAME_BYTES}"
        ));
    }
    if body.is_empty() {
        out.push(format!("{never}: no slot has an empty name"));
    }
    out
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
    fn a_drop_rule_needs_an_inactive_for_that_outlasts_a_restart() {
        let e = parse("[[slot_rule]]\nname = \"a\"\nretained_wal = \"4MB\"\naction = \"drop\"\n")
            .unwrap_err();
        assert!(
            e.contains("slot_rule[1]: a drop rule needs inactive_for"),
            "{e}"
        );
        // At least 10 polls: 10 s at the default interval of 1 s.
        let e = parse("[[slot_rule]]\nname = \"a\"\ninactive_for = \"9s\"\naction = \"drop\"\n")
            .unwrap_err();
        assert!(
            e.contains("slot_rule[1].inactive_for: 9s is too short for a drop rule: it must be at least 10 polls (10 x daemon.interval = 10s)"),
            "{e}"
        );
        let e = parse(
            "[daemon]\ninterval = \"1m\"\n[[slot_rule]]\nname = \"a\"\ninactive_for = \"5m\"\naction = \"drop\"\n",
        )
        .unwrap_err();
        assert!(e.contains("(10 x daemon.interval = 10m)"), "{e}");
        // Above the floor but under 5 minutes: a warning that says why.
        let c = parse("[[slot_rule]]\nname = \"a\"\ninactive_for = \"30s\"\naction = \"drop\"\n")
            .unwrap();
        let w: Vec<String> = c.warnings.iter().map(|w| w.to_string()).collect();
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].contains(
                "slot_rule[1].inactive_for: 30s is short for a drop rule: a standby stopped longer"
            ),
            "{w:?}"
        );
        let c = parse("[[slot_rule]]\nname = \"a\"\ninactive_for = \"1h\"\naction = \"drop\"\n")
            .unwrap();
        assert!(c.warnings.is_empty());
        // A log rule drops nothing: any inactive_for, or none.
        parse("[[slot_rule]]\nname = \"a\"\nretained_wal = \"4MB\"\n").unwrap();
    }

    #[test]
    fn slot_name_patterns_that_match_no_slot_are_warned_about() {
        let c = parse(
            "[[protect]]\nslot_name = [\"pg-node-*\", \"Barman\", \"barman\", \"postgres_[0-9]*\"]\n\
             [[protect]]\nslot_name = \"!keep\"\n\
             [[slot_rule]]\nname = \"a\"\nslot_name = [\"*\", \"!patroni.x\"]\ninactive_for = \"1h\"\n",
        )
        .unwrap();
        let w: Vec<String> = c.warnings.iter().map(|w| w.to_string()).collect();
        for expected in [
            "protect[1].slot_name[1]: this pattern can never match: it has \"-\"",
            "protect[1].slot_name[2]: this pattern can never match: it has \"B\"",
            "protect[2].slot_name: this entry has only exclusions, so it protects every slot except those",
            "slot_rule[1].slot_name[2]: this exclusion can never exclude anything: it has \".\"",
        ] {
            assert!(w.iter().any(|w| w.contains(expected)), "{expected:?} not in {w:#?}");
        }
        assert_eq!(w.len(), 4, "{w:#?}");
    }

    #[test]
    fn a_zero_inactive_for_is_accepted_with_a_warning() {
        let c = parse("[[slot_rule]]\nname = \"a\"\ninactive_for = \"0s\"\n").unwrap();
        assert_eq!(c.warnings.len(), 1);
        assert_eq!(c.warnings[0].key, "slot_rule[1].inactive_for");
    }
}
