//! Hand-built walsenders, slots, snapshots and policies for the unit tests, the
//! integration tests and the benches: one baseline of each, varied where a
//! test needs it with struct update syntax
//! (`Walsender { age, ..fixtures::walsender(1, "a") }`).
//!
//! A `#[doc(hidden)] pub` module rather than a cargo feature: integration
//! tests and benches link the library as `cargo build` makes it, and a
//! `fixtures` feature would take a dev-dependency of the crate on itself
//! to reach them. These few constructors need nothing beyond the library,
//! are not linked into the binary (nothing there calls them), and are
//! hidden from the docs: they are no part of the API.

use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::config;
use crate::policy::Policy;
use crate::slots::Slot;
use crate::snapshot::{ClientAddr, Snapshot, WalState, Walsender, WalsenderId};
use crate::units::{ByteSize, Lsn};

/// The server's WAL position in [`snapshot`], which [`walsender`] has flushed.
pub const LSN: Lsn = Lsn(0x3000000);

/// `secs` after the Unix epoch.
pub fn at(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
}

/// An inactive, permanent physical replication slot `name` that holds
/// 4 KiB of WAL (`wal_status` `reserved`), nothing else set.
pub fn slot(name: &str) -> Slot {
    Slot {
        name: name.to_string(),
        slot_type: "physical".to_string(),
        database: None,
        plugin: None,
        temporary: false,
        active: false,
        active_pid: None,
        restart_lsn: Some(Lsn(0x1000_0000)),
        confirmed_flush_lsn: None,
        xmin: None,
        catalog_xmin: None,
        wal_status: Some("reserved".to_string()),
        invalidation_reason: None,
        retained_wal: Some(ByteSize(4096)),
        synced: false,
        synchronized_standby: false,
        inactive_since: None,
        inactive_age: None,
    }
}

/// A physical standby `app` as `replicator` from 10.1.2.3, streaming
/// asynchronously, caught up with [`LSN`] (time lags NULL, no bytes behind),
/// last reply a second ago; its process started at `1_000_000 + pid`.
pub fn walsender(pid: i32, app: &str) -> Walsender {
    Walsender {
        id: WalsenderId {
            pid,
            backend_start: at(1_000_000 + pid.unsigned_abs() as u64),
        },
        age: Duration::ZERO,
        application_name: app.to_string(),
        user: Some("replicator".to_string()),
        client_addr: ClientAddr::Ip("10.1.2.3".parse().expect("an address")),
        state: Some(WalState::Streaming),
        sync_state: Some("async".to_string()),
        flush_lsn: Some(LSN),
        write_lag: None,
        flush_lag: None,
        replay_lag: None,
        write_lag_bytes: Some(ByteSize(0)),
        flush_lag_bytes: Some(ByteSize(0)),
        replay_lag_bytes: Some(ByteSize(0)),
        reply_age: Some(Duration::from_secs(1)),
        reply_time: Some(at(2_000_000)),
        slot_name: None,
        retained_wal: None,
    }
}

/// `w` with every column the server may leave NULL NULL (as a role
/// without `pg_read_all_stats` sees it): only who and since when are left.
pub fn nulled(w: Walsender) -> Walsender {
    Walsender {
        id: w.id,
        age: w.age,
        application_name: w.application_name,
        client_addr: w.client_addr,
        user: None,
        state: None,
        sync_state: None,
        flush_lsn: None,
        write_lag: None,
        flush_lag: None,
        replay_lag: None,
        write_lag_bytes: None,
        flush_lag_bytes: None,
        replay_lag_bytes: None,
        reply_age: None,
        reply_time: None,
        slot_name: None,
        retained_wal: None,
    }
}

/// A primary at [`LSN`] whose clock reads a second after
/// [`walsender`]'s last reply, without synchronous replication.
pub fn snapshot(walsenders: Vec<Walsender>) -> Snapshot {
    Snapshot {
        in_recovery: false,
        current_lsn: Some(LSN),
        server_time: Some(at(2_000_001)),
        role: "replwarden".to_string(),
        synchronous_standby_names: String::new(),
        walsenders,
        hidden: vec![],
        basebackups: vec![],
    }
}

/// The policy of a config text that must pass `check`.
pub fn policy(toml: &str) -> Policy {
    match config::parse(Path::new("test.toml"), toml) {
        Ok(config) => config.policy,
        Err(e) => panic!("a fixture config must pass check: {e}"),
    }
}
