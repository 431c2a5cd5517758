//! The families the endpoint exposes: each one's name, help and kind
//! ([`Def`]), and their exposition order ([`FAMILIES`]).

/// What a family is, as both formats declare it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Gauge,
    /// Exposed with `_total` appended to the name.
    Counter,
    /// Exposed as `_bucket`, `_sum` and `_count` series.
    Histogram,
}

/// A metric family: its name (for a counter, without `_total`), its help
/// text and kind.
#[derive(Debug)]
pub struct Def {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: Kind,
}

const fn gauge(name: &'static str, help: &'static str) -> Def {
    Def {
        name,
        help,
        kind: Kind::Gauge,
    }
}

const fn counter(name: &'static str, help: &'static str) -> Def {
    Def {
        name,
        help,
        kind: Kind::Counter,
    }
}

pub const LAG_SECONDS: Def = gauge(
    "replwarden_walsender_lag_seconds",
    "Write/flush/replay lag of each walsender as PostgreSQL reports it (absent while NULL: caught up or no reply yet).",
);
pub const LAG_BYTES: Def = gauge(
    "replwarden_walsender_lag_bytes",
    "Bytes between the server's WAL position and each walsender's write/flush/replay position.",
);
pub const REPLY_AGE_SECONDS: Def = gauge(
    "replwarden_walsender_reply_age_seconds",
    "Time since each walsender's reply_time last changed, on the daemon's clock (or since first seen streaming, if it never replied).",
);
pub const REPLY_CLOCK_SKEW_SECONDS: Def = gauge(
    "replwarden_walsender_reply_clock_skew_seconds",
    "Estimated clock skew of each client: the server's time minus reply_time at the poll that saw it change (positive: the client's clock is behind; overstated by up to one interval).",
);
pub const RETAINED_WAL_BYTES: Def = gauge(
    "replwarden_walsender_retained_wal_bytes",
    "WAL held back by each walsender's replication slot.",
);
pub const WALSENDER_INFO: Def = gauge(
    "replwarden_walsender_info",
    "1 per walsender, with its state and sync_state.",
);
pub const WALSENDERS: Def = gauge("replwarden_walsenders", "Walsenders seen by the last poll.");
pub const HIDDEN_WALSENDERS: Def = gauge(
    "replwarden_hidden_walsenders",
    "Walsenders whose columns the role cannot read (no pg_monitor): nothing is done while > 0.",
);
pub const RULE_MATCHES: Def = gauge(
    "replwarden_rule_matches",
    "Walsenders each rule's matchers match at the last poll that could read them all (protected ones left out).",
);
pub const ACTIONS: Def = counter(
    "replwarden_actions",
    "Decisions carried out, by rule, action and outcome.",
);
pub const WALSENDERS_HELD: Def = gauge(
    "replwarden_walsenders_held",
    "Walsenders a rule would act on now that a safety guard holds back, by rule and reason.",
);
pub const HOLDS: Def = counter(
    "replwarden_holds",
    "Hold episodes started: a guard began holding back a rule's action on a walsender, by rule and reason.",
);
pub const RECONNECT_LOOPS: Def = counter(
    "replwarden_reconnect_loops",
    "Actions on a client (application_name, client_addr, user) that had been acted on before: a client reconnecting in a loop.",
);
pub const POLL_DURATION: Def = Def {
    name: "replwarden_poll_duration_seconds",
    help: "Time to read and decide one poll.",
    kind: Kind::Histogram,
};
pub const POLLS: Def = counter("replwarden_polls", "Polls by result.");
pub const CONNECTED: Def = gauge("replwarden_connected", "1 while connected to PostgreSQL.");
pub const LOCKED_OUT: Def = gauge(
    "replwarden_locked_out",
    "1 while the server refuses the daemon for want of a connection slot: walsenders are not enforced.",
);
pub const CONFIG_RELOADS: Def = counter("replwarden_config_reloads", "Config reloads by result.");
pub const CONFIG_INFO: Def = gauge(
    "replwarden_config_info",
    "The loaded config: its path and the first 16 hex digits of the SHA-256 of its settings, password left out.",
);

// Replication slots (issue 19, fed by crate::slots::warden).
pub const SLOT_RETAINED_WAL_BYTES: Def = gauge(
    "replwarden_slot_retained_wal_bytes",
    "WAL each replication slot holds back: the server's WAL position (on a standby the received or replayed one) minus restart_lsn (absent while restart_lsn is NULL or the slot is invalidated).",
);
pub const SLOT_ACTIVE: Def = gauge(
    "replwarden_slot_active",
    "1 while a client uses the replication slot, 0 while it is inactive.",
);
pub const SLOT_WAL_STATUS: Def = gauge(
    "replwarden_slot_wal_status",
    "1 per replication slot, with its wal_status (reserved, extended, unreserved, lost).",
);
pub const SLOT_INACTIVE_SECONDS: Def = gauge(
    "replwarden_slot_inactive_seconds",
    "How long each replication slot has been inactive, as slot rules' inactive_for counts it (0 while active).",
);

// Base backups (issue 19, from pg_stat_progress_basebackup: crate::basebackup).
pub const BASEBACKUP_STREAMED_BYTES: Def = gauge(
    "replwarden_basebackup_streamed_bytes",
    "Bytes each walsender in state backup has streamed (backup_streamed), while its progress row is readable.",
);
pub const BASEBACKUP_TOTAL_BYTES: Def = gauge(
    "replwarden_basebackup_total_bytes",
    "The estimated size of each base backup (backup_total; absent without an estimate).",
);
pub const BASEBACKUP_PHASE: Def = gauge(
    "replwarden_basebackup_phase",
    "1 per walsender in state backup with a progress row, with its phase.",
);
pub const BASEBACKUP_STALLED_SECONDS: Def = gauge(
    "replwarden_basebackup_stalled_seconds",
    "How long each base backup has streamed no byte in a phase that sends bytes, as no_progress_for counts it (0 in a phase where bytes do not move by design).",
);

/// Every family, in exposition order.
pub const FAMILIES: &[&Def] = &[
    &LAG_SECONDS,
    &LAG_BYTES,
    &REPLY_AGE_SECONDS,
    &REPLY_CLOCK_SKEW_SECONDS,
    &RETAINED_WAL_BYTES,
    &WALSENDER_INFO,
    &WALSENDERS,
    &HIDDEN_WALSENDERS,
    &RULE_MATCHES,
    &ACTIONS,
    &WALSENDERS_HELD,
    &HOLDS,
    &RECONNECT_LOOPS,
    &POLL_DURATION,
    &POLLS,
    &CONNECTED,
    &LOCKED_OUT,
    &CONFIG_RELOADS,
    &CONFIG_INFO,
    &SLOT_RETAINED_WAL_BYTES,
    &SLOT_ACTIVE,
    &SLOT_WAL_STATUS,
    &SLOT_INACTIVE_SECONDS,
    &BASEBACKUP_STREAMED_BYTES,
    &BASEBACKUP_TOTAL_BYTES,
    &BASEBACKUP_PHASE,
    &BASEBACKUP_STALLED_SECONDS,
];

/// The upper bounds of the poll duration buckets: 0.5 ms doubling to 4.096 s.
pub(super) const POLL_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.024, 2.048,
    4.096,
];
