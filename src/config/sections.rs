//! The settings sections of the file: `[postgres]`, `[daemon]`,
//! `[protect]`, `[limits]`, `[sync_guard]` and `[metrics]`.

use super::*;

impl Walker<'_> {
    /// `[postgres]`, and its `statement_timeout` when that much is valid
    /// (for the check against `limits.terminate_timeout`).
    pub(super) fn postgres(
        &mut self,
        value: Option<&Value<'_>>,
    ) -> (Option<PostgresSettings>, Option<Duration>) {
        let mut conninfo = DEFAULT_CONNINFO.to_string();
        let mut statement_timeout = Some(Duration::from_secs(5));
        let mut ok = true;
        if let Some(value) = value {
            let Some(table) = self.table(value, "postgres") else {
                return (None, None);
            };
            self.reject_unknown(table, "postgres", POSTGRES_KEYS);
            if let Some(v) = table.get("conninfo") {
                match self.string(v, "postgres.conninfo") {
                    Some(s) => conninfo = s.to_string(),
                    None => ok = false,
                }
            }
            if let Some(v) = table.get("statement_timeout") {
                statement_timeout = self.statement_timeout(v);
                ok &= statement_timeout.is_some();
            }
        }
        let resolved = match crate::conninfo::resolve(
            &conninfo,
            &|k| std::env::var(k).ok(),
            &read_with_mode,
        ) {
            Ok(r) => Some(r),
            Err(e) => {
                let span = value
                    .and_then(|v| match v.get_ref() {
                        DeValue::Table(t) => t.get("conninfo").map(|c| c.span()),
                        _ => None,
                    })
                    .unwrap_or(0..0);
                // The message never echoes the string: it may hold a password.
                self.error(
                    span,
                    "postgres.conninfo",
                    format!("not a valid connection string: {e}"),
                );
                None
            }
        };
        let settings = match (resolved, statement_timeout) {
            (Some(resolved), Some(statement_timeout)) if ok => Some(PostgresSettings {
                conninfo,
                connect: resolved.config,
                targets: resolved.targets,
                session_attrs: resolved.session_attrs,
                verify: resolved.verify,
                password_source: resolved.password_source,
                warnings: resolved.warnings,
                statement_timeout,
            }),
            _ => None,
        };
        (settings, statement_timeout)
    }

    /// `postgres.statement_timeout`: positive, and no more than the server
    /// takes (see [`MAX_STATEMENT_TIMEOUT`]).
    pub(super) fn statement_timeout(&mut self, value: &Value<'_>) -> Option<Duration> {
        let key = "postgres.statement_timeout";
        let d = self.bounded_duration(
            value,
            key,
            MAX_STATEMENT_TIMEOUT,
            "2147483647ms (24d 20h 31m 23s 647ms), the most PostgreSQL's statement_timeout takes",
        )?;
        if d.is_zero() {
            self.error(value.span(), key, "must be greater than zero");
            return None;
        }
        Some(d)
    }

    pub(super) fn daemon(&mut self, value: Option<&Value<'_>>) -> Option<DaemonSettings> {
        let mut settings = DaemonSettings {
            interval: Duration::from_secs(1),
            dry_run: false,
        };
        let Some(value) = value else {
            return Some(settings);
        };
        let table = self.table(value, "daemon")?;
        self.reject_unknown(table, "daemon", DAEMON_KEYS);
        let mut ok = true;
        if let Some(v) = table.get("interval") {
            match self.positive_duration(v, "daemon.interval") {
                Some(d) => settings.interval = d,
                None => ok = false,
            }
        }
        if let Some(v) = table.get("dry_run") {
            match self.boolean(v, "daemon.dry_run") {
                Some(b) => settings.dry_run = b,
                None => ok = false,
            }
        }
        ok.then_some(settings)
    }

    /// The matcher keys of a rule or a `[protect]` entry.
    pub(super) fn matchers(&mut self, table: &DeTable<'_>, key: &str) -> Matchers {
        let k = |name: &str| format!("{key}.{name}");
        Matchers {
            application_name: self.glob_list(table, key, "application_name", &[]),
            user: self.glob_list(table, key, "user", &[]),
            state: self.glob_list(table, key, "state", KNOWN_STATES),
            sync_state: self.glob_list(table, key, "sync_state", KNOWN_SYNC_STATES),
            client_addr: table
                .get("client_addr")
                .and_then(|v| self.patterns(v, &k("client_addr"), AddrPattern::parse)),
        }
    }

    /// The glob matcher `name` of a rule's or a `[protect]` entry's `table`
    /// (at `key`); a plain word must be one of `known` when that is given.
    pub(super) fn glob_list(
        &mut self,
        table: &DeTable<'_>,
        key: &str,
        name: &str,
        known: &'static [&'static str],
    ) -> Option<PatternList<Glob>> {
        let v = table.get(name)?;
        self.patterns(v, &format!("{key}.{name}"), |text| {
            if let Some((from, to)) = reversed_range(text) {
                return Err(PatternError::ReversedRange {
                    text: text.to_string(),
                    from,
                    to,
                });
            }
            let glob = Glob::parse(text)?;
            let literal = !text.contains(['*', '?', '[']);
            if !known.is_empty() && literal && !known.contains(&text) {
                return Err(PatternError::Unknown {
                    matcher: name.to_string(),
                    text: text.to_string(),
                    known,
                });
            }
            Ok(glob)
        })
    }

    /// `[protect]` (one table) or `[[protect]]` (several): walsenders no
    /// rule may touch.
    pub(super) fn protect(&mut self, value: Option<&Value<'_>>) -> Option<Vec<Matchers>> {
        let Some(value) = value else {
            return Some(Vec::new());
        };
        let entries: Vec<(&Value<'_>, String)> = match value.get_ref() {
            DeValue::Table(_) => vec![(value, "protect".to_string())],
            DeValue::Array(items) => items
                .iter()
                .enumerate()
                .map(|(i, v)| (v, format!("protect[{}]", i + 1)))
                .collect(),
            other => {
                self.error(
                    value.span(),
                    "protect",
                    format!("expected a table, found {}", kind(other)),
                );
                return None;
            }
        };
        let before = self.errors.len();
        let mut out = Vec::new();
        for (v, key) in entries {
            let Some(table) = self.table(v, &key) else {
                continue;
            };
            self.reject_unknown(table, &key, PROTECT_KEYS);
            if table.contains_key(super::slot_rules::PROTECT_SLOT_KEY) {
                continue; // protects slots: slot_rules.rs
            }
            let m = self.matchers(table, &key);
            if m.is_empty() {
                self.error(v.span(), &key, "no matcher given: name what to protect (application_name, user, client_addr, state, sync_state)");
            }
            out.push(m);
        }
        (self.errors.len() == before).then_some(out)
    }

    /// `[limits]`, and its `terminate_timeout` when that key is valid (for
    /// the check against `postgres.statement_timeout`).
    pub(super) fn limits(&mut self, value: Option<&Value<'_>>) -> (Option<Limits>, LimitsSeen) {
        let mut limits = Limits::default();
        let Some(value) = value else {
            let seen = LimitsSeen {
                terminate_timeout: Some(limits.terminate_timeout),
            };
            return (Some(limits), seen);
        };
        let Some(table) = self.table(value, "limits") else {
            return (None, LimitsSeen::default());
        };
        self.reject_unknown(table, "limits", LIMITS_KEYS);
        let before = self.errors.len();
        if let Some(v) = table.get("max_actions") {
            if let Some(n) = self.count(v, "limits.max_actions", 1) {
                limits.max_actions = n;
            }
        }
        if let Some(v) = table.get("max_retries") {
            if let Some(n) = self.count(v, "limits.max_retries", 0) {
                limits.max_retries = n;
            }
        }
        let positive = |w: &mut Self, name: &str, slot: &mut Duration| {
            if let Some(d) = table
                .get(name)
                .and_then(|v| w.positive_duration(v, &format!("limits.{name}")))
            {
                *slot = d;
            }
        };
        positive(self, "per", &mut limits.per);
        positive(
            self,
            "reconnect_backoff_max",
            &mut limits.reconnect_backoff_max,
        );
        let terminate_before = self.errors.len();
        positive(self, "terminate_timeout", &mut limits.terminate_timeout);
        let seen = LimitsSeen {
            terminate_timeout: (self.errors.len() == terminate_before)
                .then_some(limits.terminate_timeout),
        };
        if let Some(d) = table
            .get("reconnect_backoff")
            .and_then(|v| self.duration(v, "limits.reconnect_backoff"))
        {
            limits.reconnect_backoff = d;
        }
        if limits.reconnect_backoff > limits.reconnect_backoff_max {
            let span = table
                .get("reconnect_backoff")
                .map_or(value.span(), |v| v.span());
            self.error(
                span,
                "limits.reconnect_backoff",
                format!(
                    "must not exceed limits.reconnect_backoff_max ({})",
                    crate::units::fmt_duration(limits.reconnect_backoff_max)
                ),
            );
        }
        ((self.errors.len() == before).then_some(limits), seen)
    }

    pub(super) fn sync_guard(&mut self, value: Option<&Value<'_>>) -> Option<SyncGuard> {
        let mut guard = SyncGuard::default();
        let Some(value) = value else {
            return Some(guard);
        };
        let table = self.table(value, "sync_guard")?;
        self.reject_unknown(table, "sync_guard", SYNC_GUARD_KEYS);
        let before = self.errors.len();
        if let Some(v) = table.get("enabled") {
            if let Some(b) = self.boolean(v, "sync_guard.enabled") {
                guard.enabled = b;
            }
        }
        if let Some(d) = table
            .get("healthy_reply_within")
            .and_then(|v| self.positive_duration(v, "sync_guard.healthy_reply_within"))
        {
            guard.healthy_reply_within = d;
        }
        (self.errors.len() == before).then_some(guard)
    }

    pub(super) fn metrics(&mut self, value: Option<&Value<'_>>) -> Option<MetricsSettings> {
        let Some(value) = value else {
            return Some(MetricsSettings::default());
        };
        let table = self.table(value, "metrics")?;
        self.reject_unknown(table, "metrics", METRICS_KEYS);
        let Some(v) = table.get("listen") else {
            return Some(MetricsSettings::default());
        };
        let text = self.string(v, "metrics.listen")?;
        match text.parse() {
            Ok(addr) => Some(MetricsSettings { listen: Some(addr) }),
            Err(_) => {
                self.error(
                    v.span(),
                    "metrics.listen",
                    format!("{text:?} is not an address and port, like \"127.0.0.1:9847\" or \"[::1]:9847\""),
                );
                None
            }
        }
    }

    /// A whole number of at least `min`.
    pub(super) fn count(&mut self, value: &Value<'_>, key: &str, min: u32) -> Option<u32> {
        let parsed = match value.get_ref() {
            DeValue::Integer(i) => i64::from_str_radix(i.as_str(), i.radix()).ok(),
            _ => None,
        };
        match parsed.and_then(|n| u32::try_from(n).ok()) {
            Some(n) if n >= min => Some(n),
            _ => {
                self.error(
                    value.span(),
                    key,
                    format!("expected a whole number of at least {min}"),
                );
                None
            }
        }
    }

    pub(super) fn boolean(&mut self, value: &Value<'_>, key: &str) -> Option<bool> {
        match value.get_ref() {
            DeValue::Boolean(b) => Some(*b),
            other => {
                self.error(
                    value.span(),
                    key,
                    format!("expected true or false, found {}", kind(other)),
                );
                None
            }
        }
    }
}

/// A file's contents and permission bits, if it can be read.
pub(super) fn read_with_mode(path: &Path) -> Option<(String, u32)> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok()?.permissions().mode();
    Some((std::fs::read_to_string(path).ok()?, mode))
}
