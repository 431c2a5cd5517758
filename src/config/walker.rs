//! The walk over the parsed TOML: the key lists each section accepts, the
//! [`Walker`] that collects errors and warnings with their positions, and
//! its typed readers (tables, strings, durations, sizes, pattern lists).
//! The sections are read in `sections.rs`, the rules in `rules.rs`.

use super::*;

pub(super) type Value<'i> = Spanned<DeValue<'i>>;

pub(super) const TOP_KEYS: &[&str] = &[
    "postgres",
    "daemon",
    "rule",
    "protect",
    "limits",
    "sync_guard",
    "metrics",
    "slot_rule",
];
/// `[protect]`: the walsender matchers, or `slot_name` alone (slots).
pub(super) const PROTECT_KEYS: &[&str] = &[
    "application_name",
    "user",
    "client_addr",
    "state",
    "sync_state",
    super::slot_rules::PROTECT_SLOT_KEY,
];
pub(super) const LIMITS_KEYS: &[&str] = &[
    "max_actions",
    "per",
    "reconnect_backoff",
    "reconnect_backoff_max",
    "max_retries",
    "terminate_timeout",
];
pub(super) const SYNC_GUARD_KEYS: &[&str] = &["enabled", "healthy_reply_within"];
pub(super) const POSTGRES_KEYS: &[&str] = &["conninfo", "statement_timeout"];
pub(super) const DAEMON_KEYS: &[&str] = &["interval", "dry_run"];
pub(super) const METRICS_KEYS: &[&str] = &["listen"];
/// The keys of a `[[rule]]` besides its conditions (see [`rule_keys`]).
pub(super) const RULE_KEYS: &[&str] = &[
    "name",
    "action",
    "grace",
    "escalate_after",
    "application_name",
    "user",
    "client_addr",
    "state",
    "sync_state",
];

/// Every key of a `[[rule]]`: [`RULE_KEYS`], then the condition names.
pub(super) fn rule_keys() -> Vec<&'static str> {
    let conditions = Sample::CONDITIONS.iter().map(|c| c.name);
    RULE_KEYS.iter().copied().chain(conditions).collect()
}

/// Every key the loader accepts, as `section.key` (`rule.grace`,
/// `protect.user`); `crate::keys` is checked against it. A section of
/// `TOP_KEYS` not mapped here shows as `section.*`.
pub fn accepted_keys() -> Vec<String> {
    TOP_KEYS
        .iter()
        .flat_map(|&section| {
            let keys: Vec<&str> = match section {
                "postgres" => POSTGRES_KEYS.to_vec(),
                "daemon" => DAEMON_KEYS.to_vec(),
                "protect" => PROTECT_KEYS.to_vec(),
                "limits" => LIMITS_KEYS.to_vec(),
                "sync_guard" => SYNC_GUARD_KEYS.to_vec(),
                "metrics" => METRICS_KEYS.to_vec(),
                "rule" => rule_keys(),
                "slot_rule" => super::slot_rules::slot_rule_keys(),
                _ => vec!["*"],
            };
            keys.into_iter().map(move |k| format!("{section}.{k}"))
        })
        .collect()
}

/// States `pg_stat_replication.state` can take; a pattern without wildcards
/// must be one of them, so a typo does not make a rule that never matches.
pub const KNOWN_STATES: &[&str] = &["startup", "catchup", "streaming", "backup", "stopping"];
pub const KNOWN_SYNC_STATES: &[&str] = &["async", "potential", "sync", "quorum"];

/// What `[limits]` yielded of the keys other sections are checked against,
/// even when another key of `[limits]` is wrong.
#[derive(Default)]
pub(super) struct LimitsSeen {
    pub(super) terminate_timeout: Option<Duration>,
}

pub(super) struct Walker<'a> {
    pub(super) file: &'a Path,
    pub(super) errors: Vec<ConfigError>,
    /// The byte offset of each error in `errors`; turned into line and
    /// column once, at the end ([`Walker::resolve_positions`]).
    pub(super) offsets: Vec<usize>,
    /// Accepted but suspicious (see [`Config::warnings`]), with their offsets.
    pub(super) warnings: Vec<ConfigError>,
    pub(super) warning_offsets: Vec<usize>,
}

impl Walker<'_> {
    pub(super) fn error(&mut self, span: Range<usize>, key: &str, message: impl Into<String>) {
        self.offsets.push(span.start);
        self.errors.push(ConfigError {
            file: self.file.to_path_buf(),
            position: None,
            key: key.to_string(),
            message: message.into(),
        });
    }

    pub(super) fn warning(&mut self, span: Range<usize>, key: &str, message: impl Into<String>) {
        self.warning_offsets.push(span.start);
        self.warnings.push(ConfigError {
            file: self.file.to_path_buf(),
            position: None,
            key: key.to_string(),
            message: message.into(),
        });
    }

    /// Sets every error's and warning's line and column in one pass over
    /// `text` (in offset order), so a file with many errors is not rescanned
    /// per error.
    pub(super) fn resolve_positions(&mut self, text: &str) {
        let mut order: Vec<(usize, bool, usize)> = (self.offsets.iter().map(|&o| (o, true)))
            .chain(self.warning_offsets.iter().map(|&o| (o, false)))
            .enumerate()
            .map(|(i, (o, is_error))| (o, is_error, i))
            .collect();
        order.sort_unstable();
        let errors = self.errors.len();
        let mut cursor = LineCursor::default();
        for (offset, is_error, i) in order {
            let position = Some(cursor.advance(text, offset));
            if is_error {
                self.errors[i].position = position;
            } else {
                self.warnings[i - errors].position = position;
            }
        }
    }

    pub(super) fn document(&mut self, path: &Path, top: &DeTable<'_>) -> Option<Config> {
        self.reject_unknown(top, "", TOP_KEYS);
        let postgres = self.postgres(top.get("postgres"));
        let daemon = self.daemon(top.get("daemon"));
        let rules = self.rules(top.get("rule"));
        let protect = self.protect(top.get("protect"));
        let limits = self.limits(top.get("limits"));
        let sync_guard = self.sync_guard(top.get("sync_guard"));
        let metrics = self.metrics(top.get("metrics"));
        let mut slots = self.slot_policy(top);
        if let (Some(s), Some(d)) = (&mut slots, &daemon) {
            s.observe_for = d.interval * super::slot_rules::DROP_FLOOR_POLLS;
        }
        if let (Some(s), Some(d)) = (&slots, &daemon) {
            if !self.drop_floor(top, s, d.interval) {
                slots = None;
            }
        }
        // Checked on whatever of the two parsed, so this error is reported
        // along with any other in [postgres] or [limits].
        if let (Some(statement_timeout), Some(terminate_timeout)) =
            (postgres.1, limits.1.terminate_timeout)
        {
            if terminate_timeout >= statement_timeout {
                let span = top
                    .get("limits")
                    .and_then(|l| l.get_ref().get("terminate_timeout"))
                    .map_or(0..0, |v| v.span());
                self.error(
                    span,
                    "limits.terminate_timeout",
                    format!(
                        "must be shorter than postgres.statement_timeout ({}), which bounds the terminate statement",
                        crate::units::fmt_duration(statement_timeout)
                    ),
                );
                return None;
            }
        }
        Some(Config {
            path: path.to_path_buf(),
            postgres: postgres.0?,
            daemon: daemon?,
            policy: Policy {
                rules: rules?,
                protect: protect?,
                limits: limits.0?,
                sync_guard: sync_guard?,
                slots: slots?,
            },
            metrics: metrics?,
            digest: String::new(),
            warnings: Vec::new(),
        })
    }

    pub(super) fn reject_unknown(&mut self, table: &DeTable<'_>, prefix: &str, known: &[&str]) {
        for key in table.keys() {
            let name = key.get_ref().as_ref();
            if !known.contains(&name) {
                let hint = closest(name, known)
                    .map(|k| format!(" (did you mean `{k}`?)"))
                    .unwrap_or_default();
                self.error(
                    key.span(),
                    &join(prefix, name),
                    format!("unknown key{hint}; known keys here: {}", known.join(", ")),
                );
            }
        }
    }

    /// A sub-table such as `[postgres]`, or `None` after reporting a type error.
    pub(super) fn table<'v, 'i>(
        &mut self,
        value: &'v Value<'i>,
        key: &str,
    ) -> Option<&'v DeTable<'i>> {
        match value.get_ref() {
            DeValue::Table(t) => Some(t),
            other => {
                self.error(
                    value.span(),
                    key,
                    format!("expected a table, found {}", kind(other)),
                );
                None
            }
        }
    }

    pub(super) fn string<'v>(&mut self, value: &'v Value<'_>, key: &str) -> Option<&'v str> {
        match value.get_ref() {
            DeValue::String(s) => Some(s.as_ref()),
            other => {
                self.error(
                    value.span(),
                    key,
                    format!("expected a string, found {}", kind(other)),
                );
                None
            }
        }
    }

    /// A duration of at most [`MAX_DURATION`].
    pub(super) fn duration(&mut self, value: &Value<'_>, key: &str) -> Option<Duration> {
        self.bounded_duration(value, key, MAX_DURATION, "100y (100 years)")
    }

    /// A duration of at most `max` (worded `max_text` in the error).
    pub(super) fn bounded_duration(
        &mut self,
        value: &Value<'_>,
        key: &str,
        max: Duration,
        max_text: &str,
    ) -> Option<Duration> {
        let text = self.string(value, key)?;
        let d = parse_duration(text)
            .map_err(|e| self.error(value.span(), key, e.to_string()))
            .ok()?;
        if d > max {
            self.error(
                value.span(),
                key,
                format!("{text:?} is too long: must be at most {max_text}"),
            );
            return None;
        }
        Some(d)
    }

    pub(super) fn positive_duration(&mut self, value: &Value<'_>, key: &str) -> Option<Duration> {
        let d = self.duration(value, key)?;
        if d.is_zero() {
            self.error(value.span(), key, "must be greater than zero");
            return None;
        }
        Some(d)
    }

    /// A size of at most [`MAX_SIZE`].
    pub(super) fn size(&mut self, value: &Value<'_>, key: &str) -> Option<ByteSize> {
        let text = self.string(value, key)?;
        let size = parse_size(text)
            .map_err(|e| self.error(value.span(), key, e.to_string()))
            .ok()?;
        if size > MAX_SIZE {
            self.error(
                value.span(),
                key,
                format!("{text:?} is too large: must be at most 1024TB (1 PiB)"),
            );
            return None;
        }
        Some(size)
    }

    /// A string or a list of strings, each checked by `parse`; `!` excludes.
    pub(super) fn patterns<P>(
        &mut self,
        value: &Value<'_>,
        key: &str,
        parse: impl Fn(&str) -> Result<P, PatternError>,
    ) -> Option<PatternList<P>> {
        let items: Vec<&Value<'_>> = match value.get_ref() {
            DeValue::String(_) => vec![value],
            DeValue::Array(items) if !items.is_empty() => items.iter().collect(),
            DeValue::Array(_) => {
                self.error(
                    value.span(),
                    key,
                    "empty list: give at least one pattern or leave the key out",
                );
                return None;
            }
            other => {
                self.error(
                    value.span(),
                    key,
                    format!("expected a list of strings, found {}", kind(other)),
                );
                return None;
            }
        };
        let mut list = PatternList {
            include: Vec::new(),
            exclude: Vec::new(),
        };
        let mut ok = true;
        let mut included = HashSet::new();
        let mut excluded = Vec::new();
        for (i, item) in items.into_iter().enumerate() {
            let item_key = format!("{key}[{}]", i + 1);
            let Some(text) = self.string(item, &item_key) else {
                ok = false;
                continue;
            };
            let (negated, body) = match text.strip_prefix('!') {
                Some(body) => (true, body),
                None => (false, text),
            };
            match parse(body) {
                Ok(p) => {
                    let matcher = key.rsplit('.').next().unwrap_or(key);
                    for w in pattern_warnings(matcher, negated, body) {
                        self.warning(item.span(), &item_key, w);
                    }
                    if negated {
                        excluded.push((item.span(), item_key, body));
                        list.exclude.push(p);
                    } else {
                        included.insert(body);
                        list.include.push(p);
                    }
                }
                Err(e) => {
                    self.error(item.span(), &item_key, crate::errors::error_chain(&e));
                    ok = false;
                }
            }
        }
        for (span, item_key, body) in excluded {
            if included.contains(body) {
                self.error(
                    span,
                    &item_key,
                    format!(
                        "{} is both included and excluded, so it can never match: remove one of the two",
                        crate::logfmt::quoted(body)
                    ),
                );
                ok = false;
            }
        }
        ok.then_some(list)
    }
}

pub(super) fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

pub(super) fn kind(value: &DeValue<'_>) -> &'static str {
    match value {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => {
            "a number (durations and sizes are strings with a unit, like \"5m\" or \"1GB\")"
        }
        DeValue::Float(_) => {
            "a number (durations and sizes are strings with a unit, like \"5m\" or \"1GB\")"
        }
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a date",
        DeValue::Array(_) => "a list",
        DeValue::Table(_) => "a table",
    }
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
#[cfg(test)]
pub(super) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    LineCursor::default().advance(text, offset)
}

/// Walks a text forwards, turning ascending byte offsets into 1-based line
/// and column (in characters); each byte is looked at once in all.
#[derive(Default)]
pub(super) struct LineCursor {
    /// Bytes walked so far.
    offset: usize,
    /// Lines ended so far.
    newlines: usize,
    /// Characters since the last newline.
    column: usize,
}

impl LineCursor {
    /// The position of `offset`, which must not be below the last one asked.
    pub(super) fn advance(&mut self, text: &str, offset: usize) -> (usize, usize) {
        let target = text.floor_char_boundary_compat(offset.min(text.len()));
        for c in text[self.offset..target.max(self.offset)].chars() {
            if c == '\n' {
                self.newlines += 1;
                self.column = 0;
            } else {
                self.column += 1;
            }
        }
        self.offset = target.max(self.offset);
        (self.newlines + 1, self.column + 1)
    }
}

trait FloorCharBoundary {
    fn floor_char_boundary_compat(&self, index: usize) -> usize;
}

impl FloorCharBoundary for str {
    fn floor_char_boundary_compat(&self, mut index: usize) -> usize {
        while !self.is_char_boundary(index) {
            index -= 1;
        }
        index
    }
}

/// The known key nearest to a misspelt one, if it is near enough to be a typo.
pub(super) fn closest<'k>(name: &str, known: &[&'k str]) -> Option<&'k str> {
    known
        .iter()
        .map(|k| (edit_distance(name, k), *k))
        .filter(|(d, k)| *d <= (k.len() / 3).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

pub(super) fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}
