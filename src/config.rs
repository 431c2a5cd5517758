//! Loads the TOML config file into validated [`Config`]: every error in the
//! file is collected (not just the first), each naming file, line, column,
//! key path and what is wrong. Unknown keys are errors, so a typo cannot
//! silently disable a rule.

use std::collections::HashSet;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

use crate::policy::{
    Action, AddrPattern, Conditions, Glob, Limits, Matchers, PatternList, Policy, Rule, SyncGuard,
};
use crate::units::{parse_duration, parse_size, ByteSize};

/// Where the daemon looks when no `--config` is given.
pub const DEFAULT_PATH: &str = "/etc/replwarden/replwarden.toml";
/// Used when `[postgres] conninfo` is absent: the local socket, as the role
/// `config/setup.sql` creates.
pub const DEFAULT_CONNINFO: &str =
    "host=/var/run/postgresql port=5432 dbname=postgres user=replwarden";

/// The longest duration any key accepts: 100 years (humantime's `100y`).
/// Every timer is an `Instant` plus one of these, so a bound far below
/// what `Instant` holds (hundreds of billions of years) keeps all time
/// arithmetic in range; no rule needs longer.
pub const MAX_DURATION: Duration = Duration::from_secs(100 * 31_557_600);
/// The longest `postgres.statement_timeout`: PostgreSQL keeps the setting
/// in milliseconds in a 32-bit integer, and `SET statement_timeout`
/// refuses more than 2147483647 ms ("Value exceeds integer range").
pub const MAX_STATEMENT_TIMEOUT: Duration = Duration::from_millis(i32::MAX as u64);
/// The largest size any key accepts: 1 PiB (`"1024TB"`), far beyond any
/// WAL distance a server reaches, and small enough that sums of sizes stay
/// in range.
pub const MAX_SIZE: ByteSize = ByteSize(1 << 50);
/// The most `[[rule]]` tables a file may have. Every rule is matched
/// against every walsender at every poll, so the limit keeps a poll's work
/// bounded; real policies have a handful of rules.
pub const MAX_RULES: usize = 10_000;

/// A loaded, validated config file.
#[derive(Clone, Debug)]
pub struct Config {
    pub path: PathBuf,
    pub postgres: PostgresSettings,
    pub daemon: DaemonSettings,
    pub policy: Policy,
    /// `[metrics]`.
    pub metrics: MetricsSettings,
    /// What `check`, `plan` and `run` warn about but accept: patterns that
    /// can never match, exclusions that exclude nothing, zero thresholds
    /// that hold for nearly every walsender (see [`pattern_warnings`]).
    pub warnings: Vec<ConfigError>,
    /// The first 16 hex digits of the SHA-256 of the settings in force with
    /// the password left out (see [`settings_digest`]), to tell versions apart.
    pub digest: String,
}

/// `[metrics]`: the optional Prometheus endpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MetricsSettings {
    /// Where to serve `GET /metrics`; `None`: no endpoint.
    pub listen: Option<std::net::SocketAddr>,
}

/// `[postgres]`: how to reach the server.
#[derive(Clone, Debug)]
pub struct PostgresSettings {
    /// As written; compared on reload to tell whether to reconnect.
    pub conninfo: String,
    /// The parsed form tokio-postgres connects with, with libpq's
    /// environment variables and password file applied.
    pub connect: tokio_postgres::Config,
    /// One config per host of the host list, in the order they are tried.
    pub targets: Vec<crate::conninfo::Target>,
    /// Which server of the host list to settle on.
    pub session_attrs: crate::conninfo::SessionAttrs,
    /// How the server certificate is checked (from `sslmode`).
    pub verify: crate::conninfo::Verify,
    /// Where the password came from (never the password itself).
    pub password_source: String,
    /// Things to warn about, such as a password file others can read.
    pub warnings: Vec<String>,
    /// `statement_timeout` set on the daemon's session.
    pub statement_timeout: Duration,
}

/// `[daemon]`: the loop.
#[derive(Clone, Debug)]
pub struct DaemonSettings {
    pub interval: Duration,
    pub dry_run: bool,
}

/// One problem found in a config file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based line and column; `None` when the file could not be read.
    pub position: Option<(usize, usize)>,
    /// Key path such as `rule[2].replay_lag`; empty for syntax errors.
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some((line, col)) = self.position {
            write!(f, ":{line}:{col}")?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// All problems found in a config file, in file order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        write!(f, "{n} error{} in config", if n == 1 { "" } else { "s" })?;
        for e in &self.0 {
            write!(f, "\n  {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// The largest config file read: far above any real policy (a 10,000-entry
/// protect list is about 200 kB), small enough to read and check in a blink.
pub const MAX_FILE_SIZE: u64 = 4 << 20;

/// Reads and validates the file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let text = read(path).map_err(|message| {
        ConfigErrors(vec![ConfigError {
            file: path.to_path_buf(),
            position: None,
            key: String::new(),
            message,
        }])
    })?;
    parse(path, &text)
}

/// The text of the config file, refusing what is not a regular file (a
/// FIFO would block the read forever, a device never end) and anything over
/// [`MAX_FILE_SIZE`].
fn read(path: &Path) -> Result<String, String> {
    use std::io::Read;
    let cannot = |e: std::io::Error| format!("cannot read config file: {e}");
    let meta = std::fs::metadata(path).map_err(cannot)?;
    if !meta.is_file() {
        return Err(format!(
            "not a regular file (it is a {}): point --config at the TOML file itself",
            file_kind(&meta)
        ));
    }
    let file = std::fs::File::open(path).map_err(cannot)?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE_SIZE + 1)
        .read_to_end(&mut bytes)
        .map_err(cannot)?;
    if bytes.len() as u64 > MAX_FILE_SIZE {
        return Err(format!(
            "the file is larger than {} MiB, the most replwarden reads: is this the right file?",
            MAX_FILE_SIZE >> 20
        ));
    }
    String::from_utf8(bytes).map_err(|e| {
        format!(
            "cannot read config file: not UTF-8 text (at byte {})",
            e.utf8_error().valid_up_to()
        )
    })
}

/// What a file that is not a regular one is, for the error.
fn file_kind(meta: &std::fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    if t.is_dir() {
        "directory"
    } else if t.is_fifo() {
        "FIFO"
    } else if t.is_socket() {
        "socket"
    } else if t.is_char_device() || t.is_block_device() {
        "device"
    } else {
        "special file"
    }
}

/// Validates `text` as if read from `path` (which only names it in errors).
pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigErrors> {
    let mut walker = Walker {
        file: path,
        errors: Vec::new(),
        offsets: Vec::new(),
        warnings: Vec::new(),
        warning_offsets: Vec::new(),
    };
    let (document, syntax_errors) = DeTable::parse_recoverable(text);
    for e in syntax_errors {
        let span = e.span().unwrap_or(0..0);
        walker.error(span, "", format!("TOML syntax error: {}", e.message()));
    }
    let config = walker.document(path, document.get_ref());
    walker.resolve_positions(text);
    walker.errors.sort_by_key(|e| e.position);
    walker.warnings.sort_by_key(|e| e.position);
    let config = config.map(|mut c| {
        c.digest = settings_digest(&c);
        c.warnings = std::mem::take(&mut walker.warnings);
        c
    });
    match config {
        Some(config) if walker.errors.is_empty() => Ok(config),
        _ => Err(ConfigErrors(walker.errors)),
    }
}

type Value<'i> = Spanned<DeValue<'i>>;

const TOP_KEYS: &[&str] = &[
    "postgres",
    "daemon",
    "rule",
    "protect",
    "limits",
    "sync_guard",
    "metrics",
];
const MATCHER_KEYS: &[&str] = &[
    "application_name",
    "user",
    "client_addr",
    "state",
    "sync_state",
];
const LIMITS_KEYS: &[&str] = &[
    "max_actions",
    "per",
    "reconnect_backoff",
    "reconnect_backoff_max",
    "max_retries",
    "terminate_timeout",
];
const SYNC_GUARD_KEYS: &[&str] = &["enabled", "healthy_reply_within"];
const POSTGRES_KEYS: &[&str] = &["conninfo", "statement_timeout"];
const DAEMON_KEYS: &[&str] = &["interval", "dry_run"];
const METRICS_KEYS: &[&str] = &["listen"];
const RULE_KEYS: &[&str] = &[
    "name",
    "action",
    "grace",
    "escalate_after",
    "application_name",
    "user",
    "client_addr",
    "state",
    "sync_state",
    "write_lag",
    "flush_lag",
    "replay_lag",
    "write_lag_bytes",
    "flush_lag_bytes",
    "replay_lag_bytes",
    "retained_wal",
    "in_state_for",
    "no_reply_for",
    "no_progress_for",
];

/// Every key the loader accepts, as `section.key` (`rule.grace`,
/// `protect.user`); `crate::keys` is checked against it. A section of
/// `TOP_KEYS` not mapped here shows as `section.*`.
pub fn accepted_keys() -> Vec<String> {
    TOP_KEYS
        .iter()
        .flat_map(|&section| {
            let keys: &[&str] = match section {
                "postgres" => POSTGRES_KEYS,
                "daemon" => DAEMON_KEYS,
                "protect" => MATCHER_KEYS,
                "limits" => LIMITS_KEYS,
                "sync_guard" => SYNC_GUARD_KEYS,
                "metrics" => METRICS_KEYS,
                "rule" => RULE_KEYS,
                _ => &["*"],
            };
            keys.iter().map(move |k| format!("{section}.{k}"))
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
struct LimitsSeen {
    terminate_timeout: Option<Duration>,
}

struct Walker<'a> {
    file: &'a Path,
    errors: Vec<ConfigError>,
    /// The byte offset of each error in `errors`; turned into line and
    /// column once, at the end ([`Walker::resolve_positions`]).
    offsets: Vec<usize>,
    /// Accepted but suspicious (see [`Config::warnings`]), with their offsets.
    warnings: Vec<ConfigError>,
    warning_offsets: Vec<usize>,
}

impl Walker<'_> {
    fn error(&mut self, span: Range<usize>, key: &str, message: impl Into<String>) {
        self.offsets.push(span.start);
        self.errors.push(ConfigError {
            file: self.file.to_path_buf(),
            position: None,
            key: key.to_string(),
            message: message.into(),
        });
    }

    fn warning(&mut self, span: Range<usize>, key: &str, message: impl Into<String>) {
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
    fn resolve_positions(&mut self, text: &str) {
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

    fn document(&mut self, path: &Path, top: &DeTable<'_>) -> Option<Config> {
        self.reject_unknown(top, "", TOP_KEYS);
        let postgres = self.postgres(top.get("postgres"));
        let daemon = self.daemon(top.get("daemon"));
        let rules = self.rules(top.get("rule"));
        let protect = self.protect(top.get("protect"));
        let limits = self.limits(top.get("limits"));
        let sync_guard = self.sync_guard(top.get("sync_guard"));
        let metrics = self.metrics(top.get("metrics"));
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
                generation: {
                    static NEXT: std::sync::atomic::AtomicU64 =
                        std::sync::atomic::AtomicU64::new(1);
                    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                },
            },
            metrics: metrics?,
            digest: String::new(),
            warnings: Vec::new(),
        })
    }

    fn reject_unknown(&mut self, table: &DeTable<'_>, prefix: &str, known: &[&str]) {
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
    fn table<'v, 'i>(&mut self, value: &'v Value<'i>, key: &str) -> Option<&'v DeTable<'i>> {
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

    fn string<'v>(&mut self, value: &'v Value<'_>, key: &str) -> Option<&'v str> {
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
    fn duration(&mut self, value: &Value<'_>, key: &str) -> Option<Duration> {
        self.bounded_duration(value, key, MAX_DURATION, "100y (100 years)")
    }

    /// A duration of at most `max` (worded `max_text` in the error).
    fn bounded_duration(
        &mut self,
        value: &Value<'_>,
        key: &str,
        max: Duration,
        max_text: &str,
    ) -> Option<Duration> {
        let text = self.string(value, key)?;
        let d = parse_duration(text)
            .map_err(|e| self.error(value.span(), key, e))
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

    fn positive_duration(&mut self, value: &Value<'_>, key: &str) -> Option<Duration> {
        let d = self.duration(value, key)?;
        if d.is_zero() {
            self.error(value.span(), key, "must be greater than zero");
            return None;
        }
        Some(d)
    }

    /// A size of at most [`MAX_SIZE`].
    fn size(&mut self, value: &Value<'_>, key: &str) -> Option<ByteSize> {
        let text = self.string(value, key)?;
        let size = parse_size(text)
            .map_err(|e| self.error(value.span(), key, e))
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
    fn patterns<P>(
        &mut self,
        value: &Value<'_>,
        key: &str,
        parse: impl Fn(&str) -> Result<P, String>,
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
                    self.error(item.span(), &item_key, e);
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

    /// `[postgres]`, and its `statement_timeout` when that much is valid
    /// (for the check against `limits.terminate_timeout`).
    fn postgres(
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
    fn statement_timeout(&mut self, value: &Value<'_>) -> Option<Duration> {
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

    fn daemon(&mut self, value: Option<&Value<'_>>) -> Option<DaemonSettings> {
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
    fn matchers(&mut self, table: &DeTable<'_>, key: &str) -> Matchers {
        let k = |name: &str| format!("{key}.{name}");
        let glob_matcher = |w: &mut Self,
                            name: &str,
                            known: &[&str]|
         -> Option<PatternList<Glob>> {
            let v = table.get(name)?;
            w.patterns(v, &k(name), |text| {
                    if let Some((from, to)) = reversed_range(text) {
                        return Err(format!(
                            "{} has the range {from}-{to}, which is backwards and matches no character: write {to}-{from}",
                            crate::logfmt::quoted(text)
                        ));
                    }
                    let glob = Glob::parse(text)?;
                    let literal = !text.contains(['*', '?', '[']);
                    if !known.is_empty() && literal && !known.contains(&text) {
                        return Err(format!(
                            "unknown {name} {text:?}: use one of {}",
                            known.join(", ")
                        ));
                    }
                    Ok(glob)
                })
        };
        Matchers {
            application_name: glob_matcher(self, "application_name", &[]),
            user: glob_matcher(self, "user", &[]),
            state: glob_matcher(self, "state", KNOWN_STATES),
            sync_state: glob_matcher(self, "sync_state", KNOWN_SYNC_STATES),
            client_addr: table
                .get("client_addr")
                .and_then(|v| self.patterns(v, &k("client_addr"), AddrPattern::parse)),
        }
    }

    /// `[protect]` (one table) or `[[protect]]` (several): walsenders no
    /// rule may touch.
    fn protect(&mut self, value: Option<&Value<'_>>) -> Option<Vec<Matchers>> {
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
            self.reject_unknown(table, &key, MATCHER_KEYS);
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
    fn limits(&mut self, value: Option<&Value<'_>>) -> (Option<Limits>, LimitsSeen) {
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

    fn sync_guard(&mut self, value: Option<&Value<'_>>) -> Option<SyncGuard> {
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

    fn metrics(&mut self, value: Option<&Value<'_>>) -> Option<MetricsSettings> {
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
    fn count(&mut self, value: &Value<'_>, key: &str, min: u32) -> Option<u32> {
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

    fn boolean(&mut self, value: &Value<'_>, key: &str) -> Option<bool> {
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

    fn rules(&mut self, value: Option<&Value<'_>>) -> Option<Vec<Rule>> {
        let Some(value) = value else {
            return Some(Vec::new());
        };
        let DeValue::Array(items) = value.get_ref() else {
            self.error(
                value.span(),
                "rule",
                "expected an array of tables: write each rule under its own [[rule]] header",
            );
            return None;
        };
        if items.len() > MAX_RULES {
            self.error(
                value.span(),
                "rule",
                format!(
                    "{} rules: at most {MAX_RULES} are allowed (every rule is matched against every walsender at every poll); merge rules with pattern lists",
                    items.len()
                ),
            );
            return None;
        }
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

    fn rule(&mut self, value: &Value<'_>, key: &str) -> Option<Rule> {
        let table = self.table(value, key)?;
        self.reject_unknown(table, key, RULE_KEYS);
        let errors_before = self.errors.len();
        let k = |name: &str| format!("{key}.{name}");

        let name = match table.get("name") {
            Some(v) => match self.string(v, &k("name")) {
                Some("") => {
                    self.error(v.span(), &k("name"), "must not be empty");
                    None
                }
                other => other.map(str::to_string),
            },
            None => {
                self.error(
                    value.span(),
                    &k("name"),
                    "missing: every rule needs a unique name",
                );
                None
            }
        };
        let action = match table.get("action") {
            None => Some(Action::Log),
            Some(v) => {
                match self.string(v, &k("action")) {
                    Some("log") => Some(Action::Log),
                    Some("cancel") => Some(Action::Cancel),
                    Some("terminate") => Some(Action::Terminate),
                    Some(other) => {
                        self.error(
                        v.span(),
                        &k("action"),
                        format!("unknown action {other:?}: use \"log\", \"cancel\" or \"terminate\""),
                    );
                        None
                    }
                    None => None,
                }
            }
        };
        let grace = match table.get("grace") {
            Some(v) => self.duration(v, &k("grace")),
            None => Some(Duration::ZERO),
        };
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

        let dur = |w: &mut Self, name: &str| table.get(name).and_then(|v| w.duration(v, &k(name)));
        let conditions = Conditions {
            write_lag: dur(self, "write_lag"),
            flush_lag: dur(self, "flush_lag"),
            replay_lag: dur(self, "replay_lag"),
            in_state_for: dur(self, "in_state_for"),
            no_reply_for: dur(self, "no_reply_for"),
            no_progress_for: dur(self, "no_progress_for"),
            write_lag_bytes: table
                .get("write_lag_bytes")
                .and_then(|v| self.size(v, &k("write_lag_bytes"))),
            flush_lag_bytes: table
                .get("flush_lag_bytes")
                .and_then(|v| self.size(v, &k("flush_lag_bytes"))),
            replay_lag_bytes: table
                .get("replay_lag_bytes")
                .and_then(|v| self.size(v, &k("replay_lag_bytes"))),
            retained_wal: table
                .get("retained_wal")
                .and_then(|v| self.size(v, &k("retained_wal"))),
        };

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
        for (name, zero) in [
            ("in_state_for", conditions.in_state_for),
            ("no_reply_for", conditions.no_reply_for),
            ("no_progress_for", conditions.no_progress_for),
        ] {
            if zero.is_some_and(|d| d.is_zero()) {
                let span = table.get(name).map_or(value.span(), |v| v.span());
                self.warning(
                    span,
                    &k(name),
                    "\"0s\" holds for nearly every walsender: give the time it must last, or leave the condition out",
                );
            }
        }
        Some(Rule {
            name: name?,
            matchers,
            conditions,
            grace: grace?,
            action: action?,
            escalate_after: escalate_after.map(|(_, d)| d),
        })
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
fn min_match_bytes(text: &str) -> usize {
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
fn reversed_range(text: &str) -> Option<(char, char)> {
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
fn matches_nearly_all(m: &Matchers) -> bool {
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
fn holds_nearly_always(c: &Conditions) -> bool {
    let zero = |d: Option<Duration>| d.is_none_or(|d| d.is_zero());
    let none = |b: Option<ByteSize>| b.is_none_or(|b| b.0 == 0);
    zero(c.write_lag)
        && zero(c.flush_lag)
        && zero(c.replay_lag)
        && zero(c.in_state_for)
        && zero(c.no_reply_for)
        && zero(c.no_progress_for)
        && none(c.write_lag_bytes)
        && none(c.flush_lag_bytes)
        && none(c.replay_lag_bytes)
        && none(c.retained_wal)
}

/// What the metrics endpoint shows to tell configs apart: the first 16 hex
/// digits of the SHA-256 of the validated settings, written out with the
/// connection target but not its password. No password is in it, so it is
/// no oracle for guessing one (a hash of the file was: the password is most
/// of its entropy). Comments and layout do not change it; the same settings
/// give the same digest on every host running the same replwarden version.
pub fn settings_digest(config: &Config) -> String {
    use sha2::Digest;
    let policy = Policy {
        generation: 0,
        ..config.policy.clone()
    };
    let text = format!(
        "{}\n{:?}\n{:?}\n{:?}\n{:?}\n{:?}",
        crate::conninfo::redacted_conninfo(&config.postgres.connect),
        config.postgres.verify,
        config.postgres.statement_timeout,
        config.daemon,
        config.metrics,
        policy,
    );
    let hash = sha2::Sha256::digest(text.as_bytes());
    hash.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

fn kind(value: &DeValue<'_>) -> &'static str {
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

/// A file's contents and permission bits, if it can be read.
fn read_with_mode(path: &Path) -> Option<(String, u32)> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok()?.permissions().mode();
    Some((std::fs::read_to_string(path).ok()?, mode))
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
#[cfg(test)]
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    LineCursor::default().advance(text, offset)
}

/// Walks a text forwards, turning ascending byte offsets into 1-based line
/// and column (in characters); each byte is looked at once in all.
#[derive(Default)]
struct LineCursor {
    /// Bytes walked so far.
    offset: usize,
    /// Lines ended so far.
    newlines: usize,
    /// Characters since the last newline.
    column: usize,
}

impl LineCursor {
    /// The position of `offset`, which must not be below the last one asked.
    fn advance(&mut self, text: &str, offset: usize) -> (usize, usize) {
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
fn closest<'k>(name: &str, known: &[&'k str]) -> Option<&'k str> {
    known
        .iter()
        .map(|k| (edit_distance(name, k), *k))
        .filter(|(d, k)| *d <= (k.len() / 3).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(text: &str) -> Vec<String> {
        match parse(Path::new("t.toml"), text) {
            Ok(_) => panic!("expected errors for:\n{text}"),
            Err(e) => e.0.iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn the_shipped_example_is_valid() {
        let text = include_str!("../config/replwarden.toml");
        let config = parse(Path::new("config/replwarden.toml"), text).unwrap();
        let names: Vec<_> = config
            .policy
            .rules
            .iter()
            .map(|r| r.name.as_str())
            .collect();
        assert_eq!(
            names,
            [
                "no-rogue-tools",
                "reporting-replica-too-far-behind",
                "stuck-base-backup",
                "silent-standby"
            ]
        );
        let lagging = &config.policy.rules[1];
        assert_eq!(
            lagging.conditions.replay_lag,
            Some(Duration::from_secs(300))
        );
        assert_eq!(lagging.conditions.replay_lag_bytes, Some(ByteSize(1 << 30)));
        assert_eq!(lagging.grace, Duration::from_secs(120));
        assert_eq!(lagging.action, Action::Terminate);
        let silent = &config.policy.rules[3];
        assert_eq!(silent.action, Action::Cancel);
        assert_eq!(silent.escalate_after, Some(Duration::from_secs(15)));
        assert_eq!(config.daemon.interval, Duration::from_secs(1));
        assert!(!config.daemon.dry_run);
        // The example spells out the safety defaults.
        assert_eq!(config.policy.limits, Limits::default());
        assert_eq!(config.policy.sync_guard, SyncGuard::default());
        assert!(config.policy.protect.is_empty());
    }

    #[test]
    fn an_empty_file_is_a_valid_do_nothing_config() {
        let config = parse(Path::new("t.toml"), "").unwrap();
        assert!(config.policy.rules.is_empty());
        assert_eq!(config.postgres.conninfo, DEFAULT_CONNINFO);
    }

    #[test]
    fn every_error_is_reported_with_position_and_key() {
        let text = r#"
[daemon]
interval = "0s"

[[rule]]
name = "a"
application_name = ["x"]
replay_lagg = "5m"

[[rule]]
name = "a"
replay_lag = "5 parsecs"
client_addr = ["10.0.0.0/33"]
action = "kill"
"#;
        let errs = errors(text);
        assert_eq!(
            errs,
            [
                "t.toml:3:12: daemon.interval: must be greater than zero",
                "t.toml:8:1: rule[1].replay_lagg: unknown key (did you mean `replay_lag`?); known keys here: name, action, grace, escalate_after, application_name, user, client_addr, state, sync_state, write_lag, flush_lag, replay_lag, write_lag_bytes, flush_lag_bytes, replay_lag_bytes, retained_wal, in_state_for, no_reply_for, no_progress_for",
                "t.toml:11:8: rule[2].name: duplicate rule name \"a\": rule names must be unique",
                "t.toml:12:14: rule[2].replay_lag: \"5 parsecs\" is not a duration (unknown time unit \"parsecs\", supported units: ns, us/µs, ms, sec, min, hours, days, weeks, months, years (and few variations)): write a number and a unit, like \"250ms\", \"30s\", \"5m\", \"6h\"",
                "t.toml:13:16: rule[2].client_addr[1]: \"10.0.0.0/33\" is not a CIDR, an IP address or \"local\" (e.g. \"10.0.0.0/8\", \"::1\", \"local\")",
                "t.toml:14:10: rule[2].action: unknown action \"kill\": use \"log\", \"cancel\" or \"terminate\"",
            ]
        );
    }

    #[test]
    fn duplicate_names_and_empty_rules_are_refused() {
        let errs = errors(
            "[[rule]]\nname = \"a\"\nuser = [\"x\"]\n[[rule]]\nname = \"a\"\nuser = [\"y\"]\n[[rule]]\nname = \"b\"\n",
        );
        assert_eq!(errs.len(), 2, "{errs:#?}");
        assert!(errs[0].starts_with("t.toml:5:8: rule[2].name: duplicate rule name \"a\""));
        assert!(errs[1].contains("rule[3]: this rule has no matcher and no condition"));
    }

    #[test]
    fn bad_values_are_refused() {
        let cases = [
            ("[daemon]\ninterval = \"-1s\"", "daemon.interval: \"-1s\" is negative"),
            ("[daemon]\ninterval = 5", "daemon.interval: expected a string, found a number"),
            ("[daemon]\ndry_run = \"yes\"", "daemon.dry_run: expected true or false"),
            ("[[rule]]\nname = \"r\"\napplication_name = [\"[oops\"]", "rule[1].application_name[1]: \"[oops\" is not a valid glob"),
            ("[[rule]]\nname = \"r\"\nstate = [\"bakcup\"]", "rule[1].state[1]: unknown state \"bakcup\""),
            ("[[rule]]\nname = \"r\"\nsync_state = [\"!synch\"]", "rule[1].sync_state[1]: unknown sync_state \"synch\""),
            ("[[rule]]\nname = \"r\"\nuser = []", "rule[1].user: empty list"),
            ("[[rule]]\nname = \"r\"\nretained_wal = \"lots\"", "rule[1].retained_wal: \"lots\" is not a size"),
            ("[[rule]]\nuser = [\"x\"]", "rule[1].name: missing"),
            ("[[rule]]\nname = \"\"\nuser = [\"x\"]", "rule[1].name: must not be empty"),
            (
                "[[rule]]\nname = \"r\"\nuser = [\"x\"]\naction = \"terminate\"\nescalate_after = \"5s\"",
                "rule[1].escalate_after: only applies to action = \"cancel\"",
            ),
            ("[postgres]\nconninfo = \"host=x port=notaport\"", "postgres.conninfo: not a valid connection string"),
            ("[postgres]\nconnifo = \"host=x\"", "postgres.connifo: unknown key (did you mean `conninfo`?)"),
            ("[deamon]\ninterval = \"1s\"", "deamon: unknown key (did you mean `daemon`?)"),
            ("rule = 5", "rule: expected an array of tables"),
            ("[limits]\nmax_actions = 0", "limits.max_actions: expected a whole number of at least 1"),
            ("[limits]\nmax_retries = -1", "limits.max_retries: expected a whole number of at least 0"),
            ("[limits]\nper = \"0s\"", "limits.per: must be greater than zero"),
            ("[limits]\nreconnect_backoff = \"20m\"", "limits.reconnect_backoff: must not exceed limits.reconnect_backoff_max (10m)"),
            ("[limits]\nterminate_timeout = \"10s\"", "limits.terminate_timeout: must be shorter than postgres.statement_timeout (5s)"),
            ("[limits]\nmaxactions = 1", "limits.maxactions: unknown key (did you mean `max_actions`?)"),
            ("[protect]\nuser = []", "protect.user: empty list"),
            ("[protect]", "protect: no matcher given"),
            ("[[protect]]\nuser = [\"a\"]\n[[protect]]\nstate = [\"idle\"]", "protect[2].state[1]: unknown state \"idle\""),
            ("[protect]\nrule = \"x\"", "protect.rule: unknown key"),
            ("[sync_guard]\nenabled = 1", "sync_guard.enabled: expected true or false"),
            ("[metrics]\nlisten = \"localhost\"", "metrics.listen: \"localhost\" is not an address and port"),
            ("[metrics]\nport = 9847", "metrics.port: unknown key"),
            ("[sync_guard]\nhealthy_reply_within = \"0s\"", "sync_guard.healthy_reply_within: must be greater than zero"),
            ("[daemon\ninterval = \"1s\"", "TOML syntax error"),
        ];
        for (text, expected) in cases {
            let errs = errors(text);
            assert!(
                errs.iter().any(|e| e.contains(expected)),
                "for {text:?} expected {expected:?} in {errs:#?}"
            );
        }
    }

    #[test]
    fn errors_in_different_places_are_all_reported() {
        // A duplicate name is reported even when that rule has another error.
        let errs = errors(
            "[[rule]]\nname = \"dup\"\nuser = \"x\"\n[[rule]]\nname = \"dup\"\nuser = \"y\"\ngrace = \"bogus\"\n",
        );
        assert_eq!(errs.len(), 2, "{errs:#?}");
        assert!(errs[0].starts_with("t.toml:5:8: rule[2].name: duplicate rule name \"dup\""));
        assert!(errs[1].starts_with("t.toml:7:9: rule[2].grace: \"bogus\" is not a duration"));
        // A cross-section check runs whatever else is wrong in [limits].
        let errs = errors(
            "[limits]\nreconnect_backoff = \"20m\"\nreconnect_backoff_max = \"10m\"\nterminate_timeout = \"10s\"\n",
        );
        assert_eq!(errs.len(), 2, "{errs:#?}");
        assert!(errs[0].contains(":2:21: limits.reconnect_backoff: must not exceed"));
        assert!(errs[1].contains(
            ":4:21: limits.terminate_timeout: must be shorter than postgres.statement_timeout"
        ));
        // ... and whatever else is wrong in [postgres].
        let errs = errors(
            "[postgres]\nconninfo = \"port=x\"\nstatement_timeout = \"1s\"\n[limits]\nterminate_timeout = \"2s\"\n",
        );
        assert_eq!(errs.len(), 2, "{errs:#?}");
        assert!(errs[1].contains("limits.terminate_timeout: must be shorter"));
    }

    #[test]
    fn every_duration_and_size_has_a_bound() {
        for key in ["grace", "in_state_for", "no_progress_for", "replay_lag"] {
            let errs = errors(&format!(
                "[[rule]]\nname = \"r\"\nuser = \"x\"\n{key} = \"300000000000y\"\n"
            ));
            assert_eq!(
                errs,
                [format!("t.toml:4:{}: rule[1].{key}: \"300000000000y\" is too long: must be at most 100y (100 years)", key.len() + 4)]
            );
        }
        let errs = errors("[[rule]]\nname = \"r\"\nuser = \"x\"\naction = \"cancel\"\nescalate_after = \"101y\"\n");
        assert!(
            errs[0].contains("rule[1].escalate_after: \"101y\" is too long"),
            "{errs:#?}"
        );
        for key in ["per", "reconnect_backoff_max", "reconnect_backoff"] {
            let errs = errors(&format!("[limits]\n{key} = \"200y\"\n"));
            assert!(
                errs.iter()
                    .any(|e| e.contains(&format!("limits.{key}: \"200y\" is too long"))),
                "{errs:#?}"
            );
        }
        for (table, key) in [
            ("daemon", "interval"),
            ("sync_guard", "healthy_reply_within"),
        ] {
            let errs = errors(&format!("[{table}]\n{key} = \"200y\"\n"));
            assert!(
                errs[0].contains(&format!("{table}.{key}: \"200y\" is too long")),
                "{errs:#?}"
            );
        }
        let ok =
            "[[rule]]\nname = \"r\"\nuser = \"x\"\ngrace = \"100y\"\nretained_wal = \"1024TB\"\n";
        assert!(parse(Path::new("t.toml"), ok).is_ok());
        let errs = errors("[[rule]]\nname = \"r\"\nuser = \"x\"\nretained_wal = \"1025TB\"\n");
        assert_eq!(errs, ["t.toml:4:16: rule[1].retained_wal: \"1025TB\" is too large: must be at most 1024TB (1 PiB)"]);
    }

    #[test]
    fn statement_timeout_stays_within_what_postgres_takes() {
        for bad in ["30d", "18446744073709551615s", "2147483648ms"] {
            let errs = errors(&format!("[postgres]\nstatement_timeout = \"{bad}\"\n"));
            assert_eq!(errs.len(), 1, "{errs:#?}");
            assert!(
                errs[0].starts_with(&format!("t.toml:2:21: postgres.statement_timeout: \"{bad}\" is too long: must be at most 2147483647ms")),
                "{errs:#?}"
            );
        }
        let c = parse(
            Path::new("t.toml"),
            "[postgres]\nstatement_timeout = \"24d 20h 31m 23s 647ms\"\n",
        )
        .unwrap();
        assert_eq!(c.postgres.statement_timeout, MAX_STATEMENT_TIMEOUT);
    }

    #[test]
    fn the_number_of_rules_is_bounded() {
        let rule = |i: usize| format!("[[rule]]\nname = \"r{i}\"\nuser = \"x\"\n");
        let at_limit: String = (0..MAX_RULES).map(rule).collect();
        assert_eq!(
            parse(Path::new("t.toml"), &at_limit)
                .unwrap()
                .policy
                .rules
                .len(),
            MAX_RULES
        );
        let over = at_limit + &rule(MAX_RULES);
        let errs = errors(&over);
        assert_eq!(errs.len(), 1);
        assert!(
            errs[0].contains("rule: 10001 rules: at most 10000 are allowed"),
            "{errs:#?}"
        );
    }

    #[test]
    fn a_password_in_a_bad_conninfo_is_not_echoed() {
        let errs = errors("[postgres]\nconninfo = \"password=hunter2 port=x\"");
        assert!(errs.iter().all(|e| !e.contains("hunter2")), "{errs:#?}");
    }

    #[test]
    fn patterns_accept_a_single_string_and_exclusions() {
        let config = parse(
            Path::new("t.toml"),
            "[[rule]]\nname = \"r\"\napplication_name = \"rogue_*\"\nclient_addr = [\"!local\", \"10.0.0.0/8\"]",
        )
        .unwrap();
        let m = &config.policy.rules[0].matchers;
        assert_eq!(
            m.application_name.as_ref().unwrap().include[0].text,
            "rogue_*"
        );
        let addrs = m.client_addr.as_ref().unwrap();
        assert_eq!(addrs.exclude, [AddrPattern::Local]);
        assert_eq!(addrs.include.len(), 1);
    }

    #[test]
    fn the_digest_is_no_function_of_the_password() {
        let digest = |text: &str| parse(Path::new("t.toml"), text).unwrap().digest;
        let with = |pw: &str| {
            format!(
                "# password was {pw}\n[postgres]\nconninfo = \"host=db user=u password={pw}\"\n\
                 [[rule]]\nname = \"r\"\nuser = \"x\"\n"
            )
        };
        let a = digest(&with("hunter2"));
        assert_eq!(a.len(), 16);
        assert_eq!(
            a,
            digest(&with("correct-horse")),
            "the password changes the digest"
        );
        assert_ne!(a, digest(&with("hunter2").replace("\"x\"", "\"y\"")));
        assert_ne!(a, digest(&with("hunter2").replace("host=db", "host=db2")));
    }

    #[test]
    fn forty_thousand_bad_keys_are_reported_quickly_and_in_order() {
        let mut text = String::from("[daemon]\n");
        for i in 0..40_000 {
            text += &format!("bad_key_{i} = 1\n");
        }
        let started = std::time::Instant::now();
        let errs = parse(Path::new("t.toml"), &text).unwrap_err().0;
        let took = started.elapsed();
        assert_eq!(errs.len(), 40_000);
        assert_eq!(errs[0].position, Some((2, 1)));
        assert_eq!(errs[39_999].position, Some((40_001, 1)));
        assert!(errs[39_999].key.ends_with("bad_key_39999"));
        // Scanning from the start of the file for each error took minutes
        // in a debug build; one pass takes well under a second.
        assert!(took < std::time::Duration::from_secs(20), "took {took:?}");
    }

    #[test]
    fn what_is_not_a_small_regular_file_is_refused() {
        let dir = std::env::temp_dir().join(format!("rw-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("fifo.toml");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let big = dir.join("big.toml");
        std::fs::write(&big, "#".repeat(MAX_FILE_SIZE as usize + 1)).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        for path in [fifo, dir.clone(), big] {
            let tx = tx.clone();
            // On a thread: reading a FIFO blocked forever.
            std::thread::spawn(move || {
                let _ = tx.send(load(&path).unwrap_err().to_string());
            });
        }
        let mut messages: Vec<String> = (0..3)
            .map(|_| {
                rx.recv_timeout(std::time::Duration::from_secs(30))
                    .expect("load returned")
            })
            .collect();
        messages.sort();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(
            messages[0].contains("big.toml: the file is larger than 4 MiB"),
            "{messages:#?}"
        );
        assert!(
            messages[1].contains("fifo.toml: not a regular file (it is a FIFO)"),
            "{messages:#?}"
        );
        assert!(
            messages[2].contains(": not a regular file (it is a directory)"),
            "{messages:#?}"
        );
    }

    fn warnings(text: &str) -> Vec<String> {
        match parse(Path::new("t.toml"), text) {
            Ok(c) => c.warnings.iter().map(|w| w.to_string()).collect(),
            Err(e) => panic!("expected warnings only for:\n{text}\ngot {e}"),
        }
    }

    #[test]
    fn guards_that_could_be_walked_round_are_errors() {
        let cases = [
            // Only an exclusion of the empty name: every named walsender.
            (
                "application_name = \"!\"",
                "rule[1]: this rule's matchers match every walsender",
            ),
            (
                "user = [\"*\"]\nstate = [\"!\", \"*\"]",
                "rule[1].state[1]: unknown state",
            ),
            (
                "application_name = \"*\"\nno_reply_for = \"0s\"",
                "rule[1]: this rule's matchers match every walsender",
            ),
            (
                "no_reply_for = \"0s\"",
                "rule[1]: this rule's matchers match every walsender",
            ),
            (
                "in_state_for = \"0s\"\nreplay_lag_bytes = \"0\"",
                "rule[1]: this rule's matchers match every walsender",
            ),
            (
                "application_name = \"[z-a]*\"",
                "rule[1].application_name[1]: \"[z-a]*\" has the range z-a, which is backwards",
            ),
            (
                "user = [\"![9-0]\"]",
                "rule[1].user[1]: \"[9-0]\" has the range 9-0",
            ),
            (
                "application_name = [\"a\", \"!a\"]",
                "rule[1].application_name[2]: \"a\" is both included and excluded",
            ),
        ];
        for (rule, expected) in cases {
            let text = format!("[[rule]]\nname = \"r\"\n{rule}");
            let errs = errors(&text);
            assert!(
                errs.iter().any(|e| e.contains(expected)),
                "for {text:?} expected {expected:?} in {errs:#?}"
            );
        }
        // Ranges the right way round, a literal `-` and `]` are fine.
        for ok in ["[a-z]*", "[!0-9]x", "[]-]", "[a-]", "x-y"] {
            assert_eq!(reversed_range(ok), None, "{ok}");
        }
    }

    #[test]
    fn patterns_that_can_never_match_are_warnings() {
        let long = "x".repeat(64);
        let max = "x".repeat(63);
        let cases = [
            (format!("application_name = \"{long}\""), Some("rule[1].application_name[1]: this pattern can never match: it needs at least 64 bytes, and the server keeps at most 63")),
            (format!("application_name = [\"*\", \"!{long}*\"]\nreplay_lag = \"1m\""), Some("rule[1].application_name[2]: this exclusion can never exclude anything: it needs at least 64 bytes")),
            (format!("user = \"{long}\""), Some("rule[1].user[1]: this pattern can never match: it needs at least 64 bytes, and the server keeps at most 63 (NAMEDATALEN - 1) of a role name")),
            (format!("application_name = \"{max}\""), None),
            (format!("application_name = \"*{max}[abc]?*\"\nuser = \"x\""), Some("at least 65 bytes")),
            (format!("user = \"{}\"", "é".repeat(31)), None),
            ("application_name = \"café\"".to_string(), Some("rule[1].application_name[1]: this pattern can never match: it has non-ASCII or control characters")),
            ("application_name = \"a\\u0007\"".to_string(), Some("non-ASCII or control characters")),
            ("application_name = \"\"".to_string(), Some("rule[1].application_name[1]: matches only an empty application_name")),
            ("user = \"\"".to_string(), Some("rule[1].user[1]: this pattern can never match: no role has an empty name")),
            ("application_name = \"!\"\nreplay_lag = \"5m\"".to_string(), Some("excludes only an empty application_name: this matcher matches nearly every walsender")),
            ("user = \"x\"\nno_reply_for = \"0s\"".to_string(), Some("rule[1].no_reply_for: \"0s\" holds for nearly every walsender")),
            ("user = \"x\"\nin_state_for = \"0s\"".to_string(), Some("rule[1].in_state_for: \"0s\" holds")),
            ("user = \"x\"\nreplay_lag = \"0s\"".to_string(), None),
        ];
        for (rule, expected) in cases {
            let text = format!("[[rule]]\nname = \"r\"\n{rule}");
            let got = warnings(&text);
            match expected {
                Some(expected) => assert!(
                    got.iter().any(|w| w.contains(expected)),
                    "for {text:?} expected {expected:?} in {got:#?}"
                ),
                None => assert!(got.is_empty(), "for {text:?}: {got:#?}"),
            }
        }
        let protect = warnings(&format!("[protect]\napplication_name = \"patroni_{long}\""));
        assert!(
            protect[0].starts_with(
                "t.toml:2:20: protect.application_name[1]: this pattern can never match"
            ),
            "{protect:#?}"
        );
        assert!(warnings(include_str!("../config/replwarden.toml")).is_empty());
    }

    #[test]
    fn line_and_column_count_characters() {
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
        assert_eq!(line_col("é = 1", 3), (1, 3));
        let mut cursor = LineCursor::default();
        let text = "ab\ncdé\nef";
        assert_eq!(cursor.advance(text, 0), (1, 1));
        assert_eq!(cursor.advance(text, 4), (2, 2));
        assert_eq!(cursor.advance(text, 6), (2, 3));
        assert_eq!(cursor.advance(text, 7), (2, 4));
        assert_eq!(cursor.advance(text, 9), (3, 2));
    }
}
