//! The `[[rule]]` entries and the warnings for patterns that are valid but
//! can never match what they say.

use super::*;
use crate::condition::Thresholds;

impl Walker<'_> {
    pub(super) fn rules(&mut self, value: Option<&Value<'_>>) -> Option<Vec<Rule>> {
        let Some(value) = value else {
            return Some(Vec::new());
        };
        let items = self.rule_items(
            value,
            ("rule", "rule"),
            " (every rule is matched against every walsender at every poll); merge rules with pattern lists",
        )?;
        let mut rules = Vec::new();
        let mut ok = true;
        let mut seen_names: HashSet<&str> = HashSet::new();
        for (i, item) in items.iter().enumerate() {
            let key = format!("rule[{}]", i + 1);
            // Names are checked apart from the rest of the rule, so a
            // duplicate is reported along with the rule's other errors.
            let name = match item.get_ref() {
                DeValue::Table(t) => t.get("name"),
                _ => None,
            };
            if let Some(name) = name {
                if let DeValue::String(text) = name.get_ref() {
                    if !text.is_empty() && !seen_names.insert(text.as_ref()) {
                        self.error(
                            name.span(),
                            &format!("{key}.name"),
                            format!("duplicate rule name {text:?}: rule names must be unique"),
                        );
                        ok = false;
                    }
                }
            }
            match self.rule(item, &key) {
                Some(rule) => rules.push(rule),
                None => ok = false,
            }
        }
        ok.then_some(rules)
    }

    pub(super) fn rule(&mut self, value: &Value<'_>, key: &str) -> Option<Rule> {
        let table = self.table(value, key)?;
        self.reject_unknown(table, key, &rule_keys());
        let errors_before = self.errors.len();
        let k = |name: &str| format!("{key}.{name}");

        let name = self.rule_name((table, value, key), "rule");
        let action = self.rule_action(
            table,
            key,
            &[
                ("log", Action::Log),
                ("cancel", Action::Cancel),
                ("terminate", Action::Terminate),
            ],
        );
        let grace = self.grace(table, key);
        let escalate_after = table.get("escalate_after").and_then(|v| {
            self.positive_duration(v, &k("escalate_after"))
                .map(|d| (v, d))
        });
        if let (Some((v, _)), Some(action)) = (escalate_after, action) {
            if action != Action::Cancel {
                self.error(
                    v.span(),
                    &k("escalate_after"),
                    format!(
                        "only applies to action = \"cancel\" (this rule's action is \"{action}\")"
                    ),
                );
            }
        }

        let matchers = self.matchers(table, key);

        let conditions: Conditions = self.thresholds(table, key);

        if self.errors.len() > errors_before {
            return None;
        }
        if matchers.is_empty() && conditions.is_empty() {
            self.error(
                value.span(),
                key,
                "this rule has no matcher and no condition, so it would act on every walsender; \
                 add a matcher (application_name, user, client_addr, state, sync_state) or a condition",
            );
            return None;
        }
        if matches_nearly_all(&matchers) && holds_nearly_always(&conditions) {
            self.error(
                value.span(),
                key,
                "this rule's matchers match every walsender (only \"*\" or an exclusion of the empty name \"!\") \
                 and its conditions are zero thresholds, so it would act on nearly every walsender; \
                 name who it is about (application_name, user, client_addr, state, sync_state) or give a real threshold",
            );
            return None;
        }
        self.warn_zero(
            (table, value, key),
            &conditions,
            "\"0s\" holds for nearly every walsender: give the time it must last, or leave the condition out",
        );
        Some(Rule {
            name: name?,
            matchers,
            conditions,
            grace: grace?,
            action: action?,
            escalate_after: escalate_after.map(|(_, d)| d),
        })
    }

    /// The entries of a `[[section]]` array (`noun`: `rule`, `slot rule`),
    /// at most [`MAX_RULES`]; `why` follows the refusal of more.
    pub(super) fn rule_items<'v, 'i>(
        &mut self,
        value: &'v Value<'i>,
        (section, noun): (&str, &str),
        why: &str,
    ) -> Option<&'v [Value<'i>]> {
        let DeValue::Array(items) = value.get_ref() else {
            self.error(
                value.span(),
                section,
                format!(
                    "expected an array of tables: write each {noun} under its own [[{section}]] header"
                ),
            );
            return None;
        };
        if items.len() > MAX_RULES {
            self.error(
                value.span(),
                section,
                format!(
                    "{} {noun}s: at most {MAX_RULES} are allowed{why}",
                    items.len()
                ),
            );
            return None;
        }
        Some(items)
    }

    /// The required, non-empty `name` of the rule `value` (its `table`, at
    /// `key`; `noun`: `rule`, `slot rule`).
    pub(super) fn rule_name(
        &mut self,
        (table, value, key): (&DeTable<'_>, &Value<'_>, &str),
        noun: &str,
    ) -> Option<String> {
        let k = format!("{key}.name");
        match table.get("name") {
            Some(v) => match self.string(v, &k) {
                Some("") => {
                    self.error(v.span(), &k, "must not be empty");
                    None
                }
                other => other.map(str::to_string),
            },
            None => {
                self.error(
                    value.span(),
                    &k,
                    format!("missing: every {noun} needs a unique name"),
                );
                None
            }
        }
    }

    /// A rule's `action`: one of the words of `known`, the first when left
    /// out.
    pub(super) fn rule_action<A: Copy>(
        &mut self,
        table: &DeTable<'_>,
        key: &str,
        known: &[(&str, A)],
    ) -> Option<A> {
        let Some(v) = table.get("action") else {
            return known.first().map(|(_, a)| *a);
        };
        let k = format!("{key}.action");
        let word = self.string(v, &k)?;
        if let Some((_, action)) = known.iter().find(|(w, _)| *w == word) {
            return Some(*action);
        }
        let words: Vec<String> = known.iter().map(|(w, _)| format!("{w:?}")).collect();
        let choice = match words.split_last() {
            Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
            _ => words.concat(),
        };
        self.error(
            v.span(),
            &k,
            format!("unknown action {word:?}: use {choice}"),
        );
        None
    }

    /// A rule's `grace`, `"0s"` when left out.
    pub(super) fn grace(&mut self, table: &DeTable<'_>, key: &str) -> Option<Duration> {
        match table.get("grace") {
            Some(v) => self.duration(v, &format!("{key}.grace")),
            None => Some(Duration::ZERO),
        }
    }

    /// The conditions of `S`'s table that a rule's `table` (at `key`)
    /// gives, each read by its row's kind; an unreadable one is an error.
    pub(super) fn thresholds<S: Subject>(
        &mut self,
        table: &DeTable<'_>,
        key: &str,
    ) -> Thresholds<S> {
        let mut conditions = Thresholds::default();
        for c in S::CONDITIONS {
            let Some(v) = table.get(c.name) else {
                continue;
            };
            let k = format!("{key}.{}", c.name);
            let limit = match c.kind {
                Kind::Duration => self.duration(v, &k).map(Limit::Time),
                Kind::Size => self.size(v, &k).map(Limit::Bytes),
            };
            if let Some(limit) = limit {
                conditions.set(c.name, limit);
            }
        }
        conditions
    }

    /// Warns, with `why`, of each zero limit whose row is flagged
    /// `warn_zero` (it holds for nearly every subject) in the rule `value`
    /// (its `table`, at `key`).
    pub(super) fn warn_zero<S: Subject>(
        &mut self,
        (table, value, key): (&DeTable<'_>, &Value<'_>, &str),
        conditions: &Thresholds<S>,
        why: &str,
    ) {
        for (c, limit) in conditions.iter() {
            if c.warn_zero && limit.is_zero() {
                let span = table.get(c.name).map_or(value.span(), |v| v.span());
                self.warning(span, &format!("{key}.{}", c.name), why);
            }
        }
    }
}

/// The longest `application_name` or role name the server keeps:
/// `NAMEDATALEN - 1` bytes (it cuts longer application names).
pub const MAX_NAME_BYTES: usize = 63;

/// Why a pattern of matcher `matcher` (`application_name`, `user`, ...),
/// accepted as valid, can still never match or never exclude anything.
/// Warnings, not errors: the rule is safe (it acts on less, not more), but
/// it does not do what it says.
pub fn pattern_warnings(matcher: &str, negated: bool, body: &str) -> Vec<String> {
    let mut out = Vec::new();
    let never = if negated {
        "this exclusion can never exclude anything"
    } else {
        "this pattern can never match"
    };
    if matcher == "slot_name" {
        return super::slot_rules::slot_name_warnings(never, body);
    }
    if !matches!(matcher, "application_name" | "user") {
        return out;
    }
    let least = min_match_bytes(body);
    if least > MAX_NAME_BYTES {
        out.push(format!(
            "{never}: it needs at least {least} bytes, and the server keeps at most {MAX_NAME_BYTES} (NAMEDATALEN - 1) of {}",
            if matcher == "user" {
                "a role name"
            } else {
                "an application_name: it cuts longer ones"
            }
        ));
    }
    if matcher == "application_name" && body.chars().any(|c| !(' '..='~').contains(&c)) {
        out.push(format!(
            "{never}: it has non-ASCII or control characters, and the server keeps only printable ASCII in \
             application_name (it writes others as \"?\", or as \\xNN from PostgreSQL 16)"
        ));
    }
    if body.is_empty() {
        out.push(match (matcher, negated) {
            ("user", false) => format!("{never}: no role has an empty name"),
            ("user", true) => format!("{never}: no role has an empty name, so it excludes nothing"),
            (_, false) => "matches only an empty application_name".to_string(),
            (_, true) => "excludes only an empty application_name: this matcher matches nearly every walsender".to_string(),
        });
    }
    out
}

/// The fewest bytes a value matching glob `text` can have.
pub(super) fn min_match_bytes(text: &str) -> usize {
    let mut n = 0;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '*' => {}
            '[' => {
                n += 1;
                // A class: `]` right after `[` or `[!` is a member.
                let mut first = true;
                for c in chars.by_ref() {
                    if c == ']' && !first {
                        break;
                    }
                    first = first && c == '!';
                }
            }
            c => n += c.len_utf8(),
        }
    }
    n
}

/// The first backwards range (`z-a`) in a glob's character classes.
pub(super) fn reversed_range(text: &str) -> Option<(char, char)> {
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        if chars[i] != '[' {
            i += 1;
            continue;
        }
        let mut j = i + 1;
        if chars.get(j) == Some(&'!') {
            j += 1;
        }
        let start = j;
        while j < chars.len() && (chars[j] != ']' || j == start) {
            if j + 2 < chars.len()
                && chars[j + 1] == '-'
                && chars[j + 2] != ']'
                && chars[j] > chars[j + 2]
            {
                return Some((chars[j], chars[j + 2]));
            }
            j += 1;
        }
        i = j + 1;
    }
    None
}

/// True when every glob matcher given lets through any name a client can
/// pick: no patterns but `*`, and no exclusion but the empty name.
pub(super) fn matches_nearly_all(m: &Matchers) -> bool {
    let open = |list: &Option<PatternList<Glob>>| {
        list.as_ref().is_none_or(|l| {
            (l.include.is_empty()
                || l.include
                    .iter()
                    .any(|g| !g.text.is_empty() && g.text.chars().all(|c| c == '*')))
                && l.exclude.iter().all(|g| g.text.is_empty())
        })
    };
    m.client_addr.is_none()
        && open(&m.application_name)
        && open(&m.user)
        && open(&m.state)
        && open(&m.sync_state)
}

/// True when the conditions are none or all zero thresholds, which hold for
/// nearly every walsender.
pub(super) fn holds_nearly_always(c: &Conditions) -> bool {
    c.iter().all(|(_, limit)| limit.is_zero())
}
