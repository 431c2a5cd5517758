//! The command line: parses arguments (defined in `cli.rs`), sets up logging
//! (the journal, text or JSON) and signals, and hands over to the library.
//! Exit codes are documented in `--help`.

mod cli;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use futures_util::StreamExt;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use tracing::level_filters::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer as _;

use cli::{Cli, Command, LogFormat, EXIT_CONFIG, EXIT_FAILURE};
use replwarden::config;
use replwarden::daemon::{self, Control, Overrides};
use replwarden::report;

/// Whether stderr is the journal: systemd sets `JOURNAL_STREAM` to the
/// `device:inode` of the stream it connects to stderr (a child that inherits
/// the variable but not the stream does not match).
fn stderr_is_journal() -> bool {
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(fd) = std::io::stderr().as_fd().try_clone_to_owned() else {
        return false;
    };
    let Ok(meta) = std::fs::File::from(fd).metadata() else {
        return false;
    };
    stream.to_str() == Some(&format!("{}:{}", meta.dev(), meta.ino()))
}

fn init_logging(format: Option<LogFormat>, level: LevelFilter) {
    if format.is_none() && stderr_is_journal() {
        // Native journal protocol: every field a journal field under its own
        // name (RULE, OUTCOME, PID, ...), PRIORITY from the level.
        if let Ok(journal) = tracing_journald::layer() {
            tracing_subscriber::registry()
                .with(journal.with_field_prefix(None).with_filter(level))
                .init();
            return;
        }
    }
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
            match runtime.block_on(replwarden::plan::plan(
                &config,
                dry_run || config.daemon.dry_run,
            )) {
                Ok(text) => {
                    print!("{text}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("replwarden: {}", replwarden::errors::error_chain(&e));
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
                tracing::warn!(config = %config.path.display(), warning = %w, "config warning");
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
                            error = %replwarden::errors::error_chain(&e),
                            "unsupported server: not retrying (point [postgres] conninfo at a supported server, or upgrade it)"
                        );
                        ExitCode::from(EXIT_CONFIG)
                    }
                    Err(e) => {
                        tracing::error!(error = %replwarden::errors::error_chain(&e), "cannot start");
                        ExitCode::from(EXIT_FAILURE)
                    }
                }
            })
        }
    }
}
