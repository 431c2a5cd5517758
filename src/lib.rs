//! replwarden: enforces replication hygiene on a PostgreSQL host.
//!
//! # Layout
//! The pipeline is config → poll → decide → act → log:
//! - [`units`]: `Lsn`, `ByteSize`, the duration and size parsers.
//! - [`config`]: TOML file → validated [`config::Config`], every error at once.
//! - [`conninfo`]: libpq conventions: `PG*` variables, the OS user, the password
//!   file, sslmode, host lists and `target_session_attrs`.
//! - [`policy`]: rules, matchers and conditions (pure data and matching).
//! - [`snapshot`]: the poll query and the rows it yields ([`snapshot::Walsender`]).
//! - [`engine`]: pure decisions from (policy, snapshot, memory, now).
//! - [`actions`]: the safe cancel/terminate statements and their outcomes.
//! - [`sql`]: every SQL statement, with the version-dependent choices.
//! - [`syncrep`]: `synchronous_standby_names` parsing for the quorum guard.
//! - [`daemon`]: the loop — connect with backoff, tick, reload, shut down.
//! - [`report`]: log events for decisions, and the `check`/`plan` printouts.
//! - [`metrics`]: the optional Prometheus endpoint.
//! - [`service`]: systemd notifications (READY, RELOADING, STOPPING, STATUS, watchdog).
//!
//! `main.rs` is a thin command-line shell over this library.

pub mod actions;
pub mod config;
pub mod conninfo;
pub mod daemon;
pub mod engine;
pub mod metrics;
pub mod policy;
pub mod report;
pub mod service;
pub mod snapshot;
pub mod sql;
pub mod syncrep;
pub mod units;
