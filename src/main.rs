//! The command line: parses arguments, sets up logging and signals, and hands
//! over to the library. Exit codes are documented in `--help`.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use futures_util::StreamExt;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use tracing::level_filters::LevelFilter;

use replwarden::config::{self, DEFAULT_PATH};
use replwarden::daemon::{self, Control, Overrides};
use replwarden::report;

/// Exit code for a config that does not validate (EX_CONFIG from sysexits.h;
/// the systemd unit does not restart on it).
const EXIT_CONFIG: u8 = 78;
/// Exit code for a run-time failure (e.g. `plan` cannot reach the server).
const EXIT_FAILURE: u8 = 1;

#[derive(Parser)]
#[command(
    name = "replwarden",
    version,
    about = "Enforce replication hygiene on a PostgreSQL host",
    long_about = "replwarden polls pg_stat_replication on the server it is pointed at and, when a walsender \
breaks one of the TOML rules for longer than the rule's grace period, cancels or terminates exactly that \
walsender (re-checked by pid and backend_start in one statement), logging who, why, the measured values \
and the outcome.",
    after_help = "\
Typical use:
  replwarden check --config /etc/replwarden/replwarden.toml   validate, print the rules
  replwarden plan  --config /etc/replwarden/replwarden.toml   one poll: what would happen now
  replwarden run   --config /etc/replwarden/replwarden.toml   the daemon (systemd runs this)

Signals (run): SIGHUP reloads the config (a bad file is rejected, the running policy stays);
SIGTERM/SIGINT stop after the statement in flight.

Exit codes: 0 success; 1 run-time failure (server unreachable for plan); 2 bad command line;
78 invalid config file, or (run) a server older than PostgreSQL 13: systemd does not restart it."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log format: text (one line per event) or json (one object per line).
    /// Default: text on a terminal, json otherwise.
    #[arg(long, global = true, value_enum)]
    log_format: Option<LogFormat>,
    /// Most verbose level logged: error, warn, info, debug or trace.
    #[arg(long, global = true, default_value = "info")]
    log_level: LevelFilter,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon: poll, decide, act, log, until SIGTERM.
    Run {
        #[arg(long, short, default_value = DEFAULT_PATH)]
        config: PathBuf,
        /// Decide and log what would be done, but signal nothing (overrides the file).
        #[arg(long)]
        dry_run: bool,
    },
    /// Validate the config and print a summary of its rules. Exit 0, or 78 if invalid.
    Check {
        #[arg(long, short, default_value = DEFAULT_PATH)]
        config: PathBuf,
    },
    /// Poll once and print every walsender, its measured values, the rules that match it
    /// and what the daemon would do now. Signals nothing.
    Plan {
        #[arg(long, short, default_value = DEFAULT_PATH)]
        config: PathBuf,
        /// Show the plan as a dry-run daemon would act (the plan never signals anyway).
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn init_logging(format: Option<LogFormat>, level: LevelFilter) {
    let terminal = std::io::stderr().is_terminal();
    let format = format.unwrap_or(if terminal {
        LogFormat::Text
    } else {
        LogFormat::Json
    });
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(level)
        .with_target(false);
    match format {
        LogFormat::Text => builder
            .fmt_fields(replwarden::logfmt::EscapedFields)
            .with_ansi(terminal)
            .init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
    }
}

fn load(path: &std::path::Path) -> Result<config::Config, ExitCode> {
    config::load(path).map_err(|errors| {
        // One line per error, whatever a key or value in the file holds.
        let n = errors.0.len();
        eprintln!(
            "replwarden: {n} error{} in config",
            if n == 1 { "" } else { "s" }
        );
        for e in &errors.0 {
            eprintln!("  {}", replwarden::logfmt::escape_text(&e.to_string()));
        }
        ExitCode::from(EXIT_CONFIG)
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("replwarden: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    match cli.command {
        Command::Check { config } => match load(&config) {
            Ok(config) => {
                print!("{}", report::check_summary(&config));
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Command::Plan { config, dry_run } => {
            let config = match load(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            for w in report::config_warnings(&config) {
                eprintln!("replwarden: warning: {w}");
            }
            match runtime.block_on(daemon::plan(&config, dry_run || config.daemon.dry_run)) {
                Ok(text) => {
                    print!("{text}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("replwarden: {}", report::error_chain(&e));
                    ExitCode::from(EXIT_FAILURE)
                }
            }
        }
        Command::Run { config, dry_run } => {
            init_logging(cli.log_format, cli.log_level);
            let config = match config::load(&config) {
                Ok(c) => c,
                Err(errors) => {
                    for e in &errors.0 {
                        tracing::error!(error = %e, "config error");
                    }
                    tracing::error!(errors = errors.0.len(), "invalid config; not starting");
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            for w in &config.postgres.warnings {
                tracing::warn!(config = %config.path.display(), "{w}");
            }
            for w in &config.warnings {
                tracing::warn!(warning = %w, "config warning");
            }
            runtime.block_on(async {
                let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
                let mut signals = match signal_hook_tokio::Signals::new([SIGHUP, SIGTERM, SIGINT]) {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot install signal handlers");
                        return ExitCode::from(EXIT_FAILURE);
                    }
                };
                tokio::spawn(async move {
                    while let Some(signal) = signals.next().await {
                        let control = if signal == SIGHUP {
                            Control::Reload
                        } else {
                            Control::Shutdown
                        };
                        if tx.send(control).is_err() {
                            break;
                        }
                    }
                });
                match daemon::run(config, Overrides { dry_run }, rx).await {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e @ daemon::RunError::Unsupported(_)) => {
                        tracing::error!(
                            error = %e,
                            "unsupported server: not retrying (point [postgres] conninfo at a supported server, or upgrade it)"
                        );
                        ExitCode::from(EXIT_CONFIG)
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "cannot start");
                        ExitCode::from(EXIT_FAILURE)
                    }
                }
            })
        }
    }
}
