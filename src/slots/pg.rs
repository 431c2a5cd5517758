//! The slot statements on the wire: the read of `pg_replication_slots`
//! (by column name, the text chosen by major: [`crate::sql::SLOTS`],
//! [`crate::sql::SLOTS_17`]) into a [`SlotSnapshot`], and the one drop
//! statement that re-checks the slot as it drops it, with its outcome.
//!
//! Both are sent unprepared (one extended-protocol round per statement):
//! the read runs once per poll, and only when a slot rule or the metrics
//! endpoint needs it.

use std::fmt;
use std::time::{Duration, SystemTime};

use tokio_postgres::error::SqlState;
use tokio_postgres::types::PgLsn;
use tokio_postgres::Client;

use super::{Slot, SlotAction, SlotDelivery, SlotSnapshot};
use crate::actions::is_connection_error;
use crate::sql::{self, ServerVersion};
use crate::units::{ByteSize, Lsn};

/// Reads every slot.
pub async fn read(
    client: &Client,
    version: ServerVersion,
) -> Result<SlotSnapshot, tokio_postgres::Error> {
    let text = if version.major() >= 17 {
        sql::SLOTS_17
    } else {
        sql::SLOTS
    };
    let rows = client.query(text, &[]).await?;
    let mut snapshot = SlotSnapshot::default();
    for (i, row) in rows.iter().enumerate() {
        let current: Option<PgLsn> = row.try_get("current_lsn")?;
        let current_lsn = current.map(Lsn::from);
        if i == 0 {
            snapshot.in_recovery = row.try_get("in_recovery")?;
            snapshot.current_lsn = current_lsn;
        }
        let Some(name) = row.try_get::<_, Option<String>>("slot_name")? else {
            continue;
        };
        let restart_lsn = row
            .try_get::<_, Option<PgLsn>>("restart_lsn")?
            .map(Lsn::from);
        let wal_status: Option<String> = row.try_get("wal_status")?;
        let invalidation_reason: Option<String> = row.try_get("invalidation_reason")?;
        let invalidated = invalidation_reason.is_some() || wal_status.as_deref() == Some("lost");
        let now: SystemTime = row.try_get("now")?;
        let inactive_since: Option<SystemTime> = row.try_get("inactive_since")?;
        snapshot.slots.push(Slot {
            name,
            slot_type: row
                .try_get::<_, Option<String>>("slot_type")?
                .unwrap_or_default(),
            database: row.try_get("database")?,
            plugin: row.try_get("plugin")?,
            temporary: row.try_get("temporary")?,
            active: row.try_get("active")?,
            active_pid: row.try_get("active_pid")?,
            restart_lsn,
            confirmed_flush_lsn: row
                .try_get::<_, Option<PgLsn>>("confirmed_flush_lsn")?
                .map(Lsn::from),
            xmin: row.try_get("xmin")?,
            catalog_xmin: row.try_get("catalog_xmin")?,
            wal_status,
            invalidation_reason,
            // An invalidated slot holds no WAL, whatever its restart_lsn.
            retained_wal: match (current_lsn, restart_lsn) {
                (Some(c), Some(r)) if !invalidated => Some(ByteSize(c.0.saturating_sub(r.0))),
                _ => None,
            },
            synced: row.try_get::<_, Option<bool>>("synced")?.unwrap_or(false),
            synchronized_standby: row
                .try_get::<_, Option<bool>>("synchronized_standby")?
                .unwrap_or(false),
            inactive_since,
            // A server clock stepped back reads as just now, never negative.
            inactive_age: inactive_since
                .map(|since| now.duration_since(since).unwrap_or(Duration::ZERO)),
        });
    }
    Ok(snapshot)
}

/// What became of a slot decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SlotOutcome {
    /// The rule's action is `log`.
    Logged,
    /// Dry run: the drop that would have been sent was not.
    DryRun,
    Dropped,
    /// The re-check at the moment of dropping kept it: the reason.
    Kept(String),
    /// No slot of that name any more.
    Gone,
    /// The daemon's role may not drop slots.
    Refused(String),
    /// Any other error from the statement.
    Failed(String),
    /// The connection broke while the drop was in flight.
    Interrupted,
    /// Not tried: the connection was lost earlier in the poll, or the
    /// daemon is stopping.
    NotAttempted,
}

impl SlotOutcome {
    /// The word in the log's `outcome` field and the metrics' label.
    pub fn as_str(&self) -> &'static str {
        match self {
            SlotOutcome::Logged => "logged",
            SlotOutcome::DryRun => "dry_run",
            SlotOutcome::Dropped => "dropped",
            SlotOutcome::Kept(_) => "kept",
            SlotOutcome::Gone => "already_gone",
            SlotOutcome::Refused(_) => "refused",
            SlotOutcome::Failed(_) => "failed",
            SlotOutcome::Interrupted => "interrupted",
            SlotOutcome::NotAttempted => "not_attempted",
        }
    }

    pub fn delivery(&self) -> SlotDelivery {
        match self {
            SlotOutcome::Logged | SlotOutcome::Dropped => SlotDelivery::Done,
            SlotOutcome::Kept(_) | SlotOutcome::Gone => SlotDelivery::Spared,
            SlotOutcome::DryRun => SlotDelivery::DryRun,
            SlotOutcome::Failed(_) | SlotOutcome::Interrupted => SlotDelivery::Failed,
            SlotOutcome::Refused(_) => SlotDelivery::Refused,
            SlotOutcome::NotAttempted => SlotDelivery::NotAttempted,
        }
    }
}

/// The outcomes a slot action can have (the words of
/// [`SlotOutcome::as_str`] a running daemon can log), for the series
/// created at 0.
pub fn possible_outcomes(action: SlotAction) -> &'static [&'static str] {
    match action {
        SlotAction::Log => &["logged"],
        SlotAction::Drop => &[
            "dry_run",
            "dropped",
            "kept",
            "already_gone",
            "refused",
            "failed",
            "interrupted",
            "not_attempted",
        ],
    }
}

impl fmt::Display for SlotOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Drops `slot` if it is, at that moment, still as judged (see
/// [`crate::sql::DROP_SLOT`]). An `Err` means the connection itself failed;
/// everything the server answered is a [`SlotOutcome`].
pub async fn drop_slot(
    client: &Client,
    version: ServerVersion,
    slot: &Slot,
) -> Result<SlotOutcome, tokio_postgres::Error> {
    let text = if version.major() >= 17 {
        sql::DROP_SLOT_17
    } else {
        sql::DROP_SLOT
    };
    let lsn = |l: Option<Lsn>| l.map(|l| PgLsn::from(l.0));
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 8] = [
        &slot.name,
        &lsn(slot.restart_lsn),
        &lsn(slot.confirmed_flush_lsn),
        &slot.xmin,
        &slot.catalog_xmin,
        &slot.slot_type,
        &slot.database,
        &slot.plugin,
    ];
    match client.query_opt(text, &params).await {
        Ok(None) => Ok(SlotOutcome::Gone),
        Ok(Some(row)) => {
            if row.try_get::<_, Option<bool>>("dropped")? == Some(true) {
                return Ok(SlotOutcome::Dropped);
            }
            let active: bool = row.try_get("active")?;
            let get_lsn = |c: &str| -> Result<Option<Lsn>, tokio_postgres::Error> {
                Ok(row.try_get::<_, Option<PgLsn>>(c)?.map(Lsn::from))
            };
            let now = Slot {
                slot_type: row.try_get("slot_type")?,
                database: row.try_get("database")?,
                plugin: row.try_get("plugin")?,
                restart_lsn: get_lsn("restart_lsn")?,
                confirmed_flush_lsn: get_lsn("confirmed_flush_lsn")?,
                xmin: row.try_get("xmin")?,
                catalog_xmin: row.try_get("catalog_xmin")?,
                ..slot.clone()
            };
            Ok(SlotOutcome::Kept(kept_because(slot, &now, active)))
        }
        Err(e) => match e.as_db_error() {
            Some(db) if *db.code() == SqlState::OBJECT_IN_USE => Ok(SlotOutcome::Kept(format!(
                "a client acquired it as it was dropped: {}",
                db.message()
            ))),
            Some(db) if *db.code() == SqlState::INSUFFICIENT_PRIVILEGE => {
                Ok(SlotOutcome::Refused(format!(
                    "{}: dropping a slot needs the REPLICATION attribute; ALTER ROLE <the daemon's role> REPLICATION, or use action = \"log\"",
                    db.message()
                )))
            }
            Some(db) if !is_connection_error(&e) => {
                Ok(SlotOutcome::Failed(db.message().to_string()))
            }
            _ => Err(e),
        },
    }
}

/// Why the re-check kept `judged`, seen as `now` by the drop statement.
fn kept_because(judged: &Slot, now: &Slot, active: bool) -> String {
    if active {
        return "the slot is active again: a client came back".to_string();
    }
    if (&now.slot_type, &now.database, &now.plugin)
        != (&judged.slot_type, &judged.database, &judged.plugin)
    {
        return "a different slot of that name now (type, database or plugin changed): it was re-created"
            .to_string();
    }
    let moved: Vec<String> = [
        ("restart_lsn", opt(judged.restart_lsn), opt(now.restart_lsn)),
        (
            "confirmed_flush_lsn",
            opt(judged.confirmed_flush_lsn),
            opt(now.confirmed_flush_lsn),
        ),
        ("xmin", opt_xid(judged.xmin), opt_xid(now.xmin)),
        (
            "catalog_xmin",
            opt_xid(judged.catalog_xmin),
            opt_xid(now.catalog_xmin),
        ),
    ]
    .into_iter()
    .filter(|(_, was, is)| was != is)
    .map(|(name, was, is)| format!("{name} moved from {was} to {is}"))
    .collect();
    if !moved.is_empty() {
        return format!(
            "{} since it was judged: a client used it (or it was re-created)",
            moved.join(", ")
        );
    }
    if now.restart_lsn.is_none() && now.xmin.is_none() && now.catalog_xmin.is_none() {
        return "the slot holds nothing (no restart_lsn, no xmin): dropping it would free nothing"
            .to_string();
    }
    "the slot is temporary, synced or in synchronized_standby_slots now".to_string()
}

fn opt(lsn: Option<Lsn>) -> String {
    lsn.map_or_else(|| "NULL".to_string(), |l| l.to_string())
}

fn opt_xid(xid: Option<i64>) -> String {
    xid.map_or_else(|| "NULL".to_string(), |x| x.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_outcome_a_drop_can_have_has_its_series() {
        let drop = possible_outcomes(SlotAction::Drop);
        for outcome in [
            SlotOutcome::DryRun,
            SlotOutcome::Dropped,
            SlotOutcome::Kept(String::new()),
            SlotOutcome::Gone,
            SlotOutcome::Refused(String::new()),
            SlotOutcome::Failed(String::new()),
            SlotOutcome::Interrupted,
            SlotOutcome::NotAttempted,
        ] {
            assert!(drop.contains(&outcome.as_str()), "{outcome}");
        }
        assert_eq!(
            possible_outcomes(SlotAction::Log),
            [SlotOutcome::Logged.as_str()]
        );
    }
}
