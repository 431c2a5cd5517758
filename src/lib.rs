//! replwarden: enforces replication hygiene on a PostgreSQL host.
//!
//! # Layout
//! The pipeline is config → poll → decide → act → log:
//! - [`units`]: `Lsn`, `ByteSize`, the duration and size parsers.
//! - [`config`]: TOML file → validated [`config::Config`], every error at once.
//! - [`keys`]: the table of every config key, the source of replwarden.toml(5).
//! - [`conninfo`]: libpq conventions: `PG*` variables, the OS user, the password
//!   file, sslmode, host lists and `target_session_attrs`.
//! - [`condition`]: the table of conditions rules judge, and a rule's thresholds.
//! - [`policy`]: rules, matchers and conditions (pure data and matching).
//! - [`snapshot`]: what a poll sees ([`snapshot::Walsender`], [`snapshot::Snapshot`]), driver-free.
//! - [`poller`]: the poll statement run with tokio-postgres, its rows decoded into a snapshot.
//! - [`basebackup`]: base backups judged by their progress (`pg_stat_progress_basebackup`), phase by phase.
//! - [`clocks`]: what is judged, real now and on one clock (stale lags, silence, skew).
//! - [`roles`]: each walsender's role from first sight, for a role dropped while it streams.
//! - [`engine`]: pure decisions from (policy, snapshot, memory, now).
//! - [`actions`]: the safe cancel/terminate statements and their outcomes.
//! - [`sql`]: every SQL statement, with the version-dependent choices.
//! - [`syncrep`]: `synchronous_standby_names` parsing for the quorum guard.
//! - [`session`]: the database session — connect over host lists, session setup, why connecting failed.
//! - [`daemon`]: the loop — connect with backoff, tick, reload, shut down.
//! - [`reload`]: what a reload changes, as a pure diff of two configs.
//! - [`plan`]: `replwarden plan`, one poll decided and printed, nothing signalled.
//! - [`logfmt`]: escaping of client- and config-chosen text in logs and printouts.
//! - [`lockout`]: a server that refuses the daemon for want of a connection slot.
//! - [`report`]: log events for decisions, and the `check`/`plan` printouts.
//! - [`advice`]: the lasting fix for a reconnect loop, only when it cuts off no one else.
//! - [`errors`]: an error shown with its causes, each once ([`errors::error_chain`]).
//! - [`metrics`]: the optional Prometheus endpoint.
//! - [`slots`]: replication slots with rules (`[[slot_rule]]`): read, judge, drop, report.
//! - [`service`]: systemd notifications (READY, RELOADING, STOPPING, STATUS, watchdog).
//! - `fixtures` (hidden): hand-built walsenders, snapshots and policies for tests and benches.
//!
//! `main.rs` is a thin command-line shell over this library.

// The shipped code (Cargo.toml's [lints] forbids unsafe code everywhere): numbers
// from the server (LSNs, lags, pids) never wrap or truncate silently in a
// cast, and a clock stepping back never panics a subtraction. (Unit tests
// build their instants and fixtures by hand, so they are exempt.)
#![cfg_attr(
    not(test),
    deny(
        clippy::cast_possible_truncation,
        clippy::cast_possible_wrap,
        clippy::cast_sign_loss,
        clippy::unchecked_time_subtraction
    )
)]

pub mod actions;
pub mod advice;
pub mod basebackup;
pub mod clocks;
pub mod condition;
pub mod config;
pub mod conninfo;
pub mod daemon;
pub mod engine;
pub mod errors;
#[doc(hidden)]
pub mod fixtures;
pub mod keys;
pub mod lockout;
pub mod logfmt;
pub mod metrics;
pub mod plan;
pub mod policy;
pub mod poller;
pub mod reload;
pub mod report;
pub mod roles;
pub mod service;
pub mod session;
pub mod slots;
pub mod snapshot;
pub mod sql;
pub mod syncrep;
pub mod ticker;
pub mod units;
