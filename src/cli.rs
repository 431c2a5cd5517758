//! The command-line definition: commands, options, signals, exit codes,
//! files and environment. `--help` is rendered from it, and so are the
//! replwarden(8) manual page and the shell completions (`build.rs` includes
//! this file, so it uses nothing of the crate).

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use tracing::level_filters::LevelFilter;

/// The config file when `--config` is not given.
pub const DEFAULT_CONFIG: &str = "/etc/replwarden/replwarden.toml";

/// Exit code for a config that does not validate (EX_CONFIG from sysexits.h;
/// the systemd unit does not restart on it).
pub const EXIT_CONFIG: u8 = 78;
/// Exit code for a run-time failure (e.g. `plan` cannot reach the server).
pub const EXIT_FAILURE: u8 = 1;

/// Exit codes and what they mean.
pub const EXIT_CODES: &[(u8, &str)] = &[
    (0, "success"),
    (EXIT_FAILURE, "run-time failure (e.g. plan cannot reach the server)"),
    (2, "bad command line"),
    (
        EXIT_CONFIG,
        "invalid config file, or (run) a server older than PostgreSQL 13: systemd does not restart it",
    ),
];

/// Signals `run` acts on.
pub const SIGNALS: &[(&str, &str)] = &[
    (
        "SIGHUP",
        "reload the config all-or-nothing (a bad file is logged with all its errors and the running policy stays)",
    ),
    ("SIGTERM, SIGINT", "stop within a second, after the statement in flight"),
];

/// Files it reads.
pub const FILES: &[(&str, &str)] = &[
    (
        DEFAULT_CONFIG,
        "the config (replwarden.toml(5)); the default of --config",
    ),
    (
        "/etc/replwarden/CLUSTER.toml",
        "the config of the replwarden@CLUSTER.service instance (e.g. 15-main)",
    ),
    (
        "/usr/share/replwarden/setup.sql",
        "creates the least-privileged replwarden role (pg_monitor, pg_signal_backend)",
    ),
    (
        "~/.pgpass",
        "the password file, as in libpq (passfile=, else PGPASSFILE)",
    ),
];

/// Environment variables it reads.
pub const ENVIRONMENT: &[(&str, &str)] = &[
    (
        "PGHOST, PGPORT, PGUSER, PGDATABASE, PGPASSWORD, PGPASSFILE, PGSSLMODE, PGSSLROOTCERT, PGCONNECT_TIMEOUT",
        "what the conninfo leaves out, as in libpq",
    ),
    (
        "JOURNAL_STREAM",
        "set by systemd: when it names stderr, run logs to the journal natively, each field a journal field (unless --log-format is given)",
    ),
    (
        "NOTIFY_SOCKET, WATCHDOG_USEC",
        "set by systemd for Type=notify: readiness, status and watchdog pings",
    ),
];

fn after_help() -> String {
    let mut text = String::from(
        "Typical use:
  replwarden check --config /etc/replwarden/replwarden.toml   validate, print the rules
  replwarden plan  --config /etc/replwarden/replwarden.toml   one poll: what would happen now
  replwarden run   --config /etc/replwarden/replwarden.toml   the daemon (systemd runs this)

Signals (run):\n",
    );
    for (signal, meaning) in SIGNALS {
        text += &format!("  {signal}: {meaning}\n");
    }
    text += "\nExit codes:\n";
    for (code, meaning) in EXIT_CODES {
        text += &format!("  {code} {meaning}\n");
    }
    text += "\nFiles:\n";
    for (file, meaning) in FILES {
        text += &format!("  {file}: {meaning}\n");
    }
    text += "\nEnvironment:\n";
    for (variable, meaning) in ENVIRONMENT {
        text += &format!("  {variable}: {meaning}\n");
    }
    text += "\nSee replwarden(8) and replwarden.toml(5).";
    text
}

#[derive(Parser)]
#[command(
    name = "replwarden",
    version,
    about = "Enforce replication hygiene on a PostgreSQL host",
    long_about = "replwarden polls pg_stat_replication on the server it is pointed at and, when a walsender \
breaks one of the TOML rules for longer than the rule's grace period, cancels or terminates exactly that \
walsender (re-checked by pid and backend_start in one statement), logging who, why, the measured values \
and the outcome.",
    after_help = after_help()
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log format: text (one line per event) or json (one object per line).
    /// Default: the journal's native protocol when stderr is the journal
    /// (JOURNAL_STREAM), else text on a terminal, json otherwise.
    #[arg(long, global = true, value_enum)]
    pub log_format: Option<LogFormat>,
    /// Most verbose level logged: error, warn, info, debug or trace.
    #[arg(long, global = true, default_value = "info")]
    pub log_level: LevelFilter,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the daemon: poll, decide, act, log, until SIGTERM.
    Run {
        /// The config file (replwarden.toml(5)).
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Decide and log what would be done, but signal nothing (overrides the file).
        #[arg(long)]
        dry_run: bool,
    },
    /// Validate the config and print a summary of its rules. Exit 0, or 78 if invalid.
    Check {
        /// The config file (replwarden.toml(5)).
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Poll once and print every walsender, its measured values, the rules that match it
    /// and what the daemon would do now. Signals nothing.
    Plan {
        /// The config file (replwarden.toml(5)).
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Show the plan as a dry-run daemon would act (the plan never signals anyway).
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_default_config_is_the_loaders() {
        assert_eq!(super::DEFAULT_CONFIG, replwarden::config::DEFAULT_PATH);
    }
}
