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

use crate::condition::{Kind, Limit, Sample, Subject};
use crate::policy::{
    Action, AddrPattern, Conditions, Glob, Limits, Matchers, PatternError, PatternList, Policy,
    Rule, SyncGuard,
};
use crate::units::{parse_duration, parse_size, ByteSize};

mod rules;
mod sections;
// [[slot_rule]] and [protect] slot_name (issue 19): see crate::slots.
mod slot_rules;
mod walker;

use rules::*;
pub use rules::{pattern_warnings, MAX_NAME_BYTES};
use walker::*;
pub use walker::{accepted_keys, KNOWN_STATES, KNOWN_SYNC_STATES};

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
    let text = read(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            file: path.to_path_buf(),
            position: None,
            key: String::new(),
            message: crate::errors::error_chain(&e),
        }])
    })?;
    parse(path, &text)
}

/// Why the config file could not be read (before any of it is checked).
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("cannot read config file")]
    Io(#[source] std::io::Error),
    /// What the path is instead (see `file_kind`).
    #[error("not a regular file (it is a {0}): point --config at the TOML file itself")]
    NotAFile(&'static str),
    #[error(
        "the file is larger than {} MiB, the most replwarden reads: is this the right file?",
        MAX_FILE_SIZE >> 20
    )]
    TooLarge,
    /// The byte offset of the first byte that is not UTF-8.
    #[error("cannot read config file: not UTF-8 text (at byte {0})")]
    NotUtf8(usize),
}

/// The text of the config file, refusing what is not a regular file (a
/// FIFO would block the read forever, a device never end) and anything over
/// [`MAX_FILE_SIZE`].
fn read(path: &Path) -> Result<String, ReadError> {
    use std::io::Read;
    let meta = std::fs::metadata(path).map_err(ReadError::Io)?;
    if !meta.is_file() {
        return Err(ReadError::NotAFile(file_kind(&meta)));
    }
    let file = std::fs::File::open(path).map_err(ReadError::Io)?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE_SIZE + 1)
        .read_to_end(&mut bytes)
        .map_err(ReadError::Io)?;
    if bytes.len() as u64 > MAX_FILE_SIZE {
        return Err(ReadError::TooLarge);
    }
    String::from_utf8(bytes).map_err(|e| ReadError::NotUtf8(e.utf8_error().valid_up_to()))
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

/// What the metrics endpoint shows to tell configs apart: the first 16 hex
/// digits of the SHA-256 of the validated settings, written out with the
/// connection target but not its password. No password is in it, so it is
/// no oracle for guessing one (a hash of the file was: the password is most
/// of its entropy). Comments and layout do not change it; the same settings
/// give the same digest on every host running the same replwarden version.
pub fn settings_digest(config: &Config) -> String {
    use sha2::Digest;
    let text = format!(
        "{}\n{:?}\n{:?}\n{:?}\n{:?}\n{:?}",
        crate::conninfo::redacted_conninfo(&config.postgres.connect),
        config.postgres.verify,
        config.postgres.statement_timeout,
        config.daemon,
        config.metrics,
        config.policy,
    );
    let hash = sha2::Sha256::digest(text.as_bytes());
    hash.iter().take(8).map(|b| format!("{b:02x}")).collect()
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
        let text = include_str!("../../config/replwarden.toml");
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
            lagging.conditions.get("replay_lag"),
            Some(Limit::Time(Duration::from_secs(300)))
        );
        assert_eq!(
            lagging.conditions.get("replay_lag_bytes"),
            Some(Limit::Bytes(ByteSize(1 << 30)))
        );
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
        nix::unistd::mkfifo(
            &fifo,
            nix::sys::stat::Mode::S_IRUSR | nix::sys::stat::Mode::S_IWUSR,
        )
        .unwrap();
        let big = dir.join("big.toml");
        std::fs::write(
            &big,
            "#".repeat(usize::try_from(MAX_FILE_SIZE).unwrap() + 1),
        )
        .unwrap();
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
        assert!(warnings(include_str!("../../config/replwarden.toml")).is_empty());
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
