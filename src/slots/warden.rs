//! The slot step of each poll, as the daemon runs it: read the slots,
//! feed the slot metrics, judge ([`super::judge`]), then log, drop (or
//! simulate) and record each decision, in order. Every statement is
//! bounded on the client side as the poll is.

use std::cell::Cell;
use std::time::{Duration, Instant};

use super::pg::{self, SlotOutcome};
use super::{judge, report, SlotAction, SlotMemory, SlotRound, SlotSnapshot};
use crate::metrics::{self, Labels, Metrics};
use crate::policy::Policy;
use crate::session::bounded;
use crate::snapshot::Preflight;
use crate::sql::ServerVersion;
use crate::units::fmt_duration;

/// Why the slot step failed.
#[derive(Debug, thiserror::Error)]
pub enum SlotError {
    #[error("a replication slot statement failed")]
    Db(#[from] tokio_postgres::Error),
    #[error("the server did not answer a replication slot statement within {} (statement_timeout + 1s): giving up on this connection", fmt_duration(*.0))]
    NoAnswer(Duration),
}

impl SlotError {
    /// The session is unusable: reconnect.
    pub fn is_connection_lost(&self) -> bool {
        match self {
            SlotError::Db(e) => crate::actions::is_connection_error(e),
            SlotError::NoAnswer(_) => true,
        }
    }
}

/// What the daemon tells the slot step of its poll.
pub struct Step<'a> {
    /// Decide and log, drop nothing (`--dry-run` or `daemon.dry_run`).
    pub dry_run: bool,
    /// The client-side bound of each statement.
    pub bound: Duration,
    /// A shutdown was asked: drop nothing more.
    pub stop: &'a Cell<bool>,
    /// Set while a drop is in flight, so a shutdown waits for it and it is
    /// logged.
    pub signalling: &'a Cell<bool>,
}

/// The slot side of the daemon: its memory between polls.
#[derive(Debug, Default)]
pub struct Warden {
    memory: SlotMemory,
    /// What the privilege preflight of this session found.
    preflight: Option<Preflight>,
    /// The drop-privilege warning last logged in this session, so it is
    /// logged at connect and again when a reload changes it.
    warned: Option<String>,
}

impl Warden {
    /// Whether slots are read at all: for a slot rule, or for the metrics.
    pub fn wanted(policy: &Policy, metrics_served: bool) -> bool {
        !policy.slots.rules.is_empty() || metrics_served
    }

    /// The server was not seen for a while (reconnect): see
    /// [`SlotMemory::interrupted`].
    pub fn interrupted(&mut self) {
        self.memory.interrupted();
    }

    /// The slots were not read in this poll (the poll failed, or it could
    /// not read every walsender, or the connection was lost): the slot
    /// series go, rather than show the last read as if current.
    pub fn unseen(&self, metrics: &Metrics) {
        metrics.replace_families(series(&SlotSnapshot::default(), &SlotRound::default()));
    }

    /// A new session, with what its privilege preflight found. The
    /// connect logs the drop-privilege warning for `policy`
    /// ([`Warden::drop_warning`], in `daemon::log_preflight`); a poll logs
    /// it again only when a reload changes it.
    pub fn connected(&mut self, preflight: &Preflight, policy: &Policy) {
        self.warned = report::drop_privilege_warning(&policy.slots, preflight);
        self.preflight = Some(preflight.clone());
    }

    /// The drop-privilege warning of this session as last logged (or to
    /// be logged at connect): a `drop` slot rule the role may not carry out.
    pub fn drop_warning(&self) -> Option<&str> {
        self.warned.as_deref()
    }

    /// The daemon cancelled or terminated the walsender of slot `name`:
    /// see [`SlotMemory::walsender_signalled`].
    pub fn walsender_signalled(&mut self, name: &str) {
        self.memory.walsender_signalled(name, Instant::now());
    }

    /// One slot step.
    pub async fn poll(
        &mut self,
        client: &tokio_postgres::Client,
        version: ServerVersion,
        policy: &Policy,
        step: Step<'_>,
        metrics: &Metrics,
    ) -> Result<(), SlotError> {
        let Step {
            dry_run,
            bound,
            stop,
            signalling,
        } = step;
        self.warn_privilege(policy);
        let snapshot = match bounded(bound, pg::read(client, version), SlotError::NoAnswer).await {
            Ok(s) => s,
            Err(e) => {
                self.unseen(metrics);
                return Err(e);
            }
        };
        let decided = Instant::now();
        let round = judge(
            &policy.slots,
            &policy.limits,
            &snapshot,
            &mut self.memory,
            decided,
            dry_run,
        );
        metrics.replace_families(series(&snapshot, &round));
        report::log_deferred(&round.deferred);
        let mut lost = None;
        for d in &round.decisions {
            let outcome = if d.action == SlotAction::Log {
                SlotOutcome::Logged
            } else if lost.is_some() || stop.get() {
                SlotOutcome::NotAttempted
            } else if dry_run {
                SlotOutcome::DryRun
            } else {
                signalling.set(true);
                let sent = bounded(
                    bound,
                    pg::drop_slot(client, version, &d.slot),
                    SlotError::NoAnswer,
                )
                .await;
                signalling.set(false);
                sent.unwrap_or_else(|e| {
                    lost = Some(e);
                    SlotOutcome::Interrupted
                })
            };
            report::log_decision(d, &outcome, snapshot.in_recovery);
            metrics.slot_acted(&d.rule, d.action.as_str(), outcome.as_str());
            if let Some(attempts) = self.memory.record(
                d,
                outcome.delivery(),
                &policy.limits,
                (decided, Instant::now()),
            ) {
                report::log_gave_up(d, attempts);
            }
        }
        match lost {
            Some(e) => {
                self.memory.interrupted();
                self.unseen(metrics);
                Err(e)
            }
            None => Ok(()),
        }
    }
}

impl Warden {
    /// Logs, once per session and again when a reload changes it, that a
    /// drop rule exists and the role may not drop slots.
    fn warn_privilege(&mut self, policy: &Policy) {
        let warning = self
            .preflight
            .as_ref()
            .and_then(|p| report::drop_privilege_warning(&policy.slots, p));
        if warning != self.warned {
            if let (Some(w), Some(p)) = (&warning, &self.preflight) {
                tracing::error!(
                    role = %p.role,
                    event = "preflight",
                    finding = %w,
                    "privilege preflight failed"
                );
            }
            self.warned = warning;
        }
    }
}

/// Every slot family's series for this read (replacing the last read's).
pub fn series(
    snapshot: &SlotSnapshot,
    round: &SlotRound,
) -> Vec<(&'static metrics::Def, Vec<(Labels, f64)>)> {
    // `slot`, as on replwarden_walsender_retained_wal_bytes: the two join.
    let name = |s: &super::Slot| -> Labels {
        vec![("slot", s.name.clone()), ("slot_type", s.slot_type.clone())]
    };
    let slots = &snapshot.slots;
    vec![
        (
            &metrics::SLOT_RETAINED_WAL_BYTES,
            slots
                .iter()
                .filter_map(|s| Some((name(s), s.retained_wal?.0 as f64)))
                .collect(),
        ),
        (
            &metrics::SLOT_ACTIVE,
            slots
                .iter()
                .map(|s| (name(s), f64::from(u8::from(s.active))))
                .collect(),
        ),
        (
            &metrics::SLOT_WAL_STATUS,
            // No series for a slot without wal_status (NULL: never reserved).
            slots
                .iter()
                .filter_map(|s| {
                    let mut labels = name(s);
                    labels.push(("wal_status", s.wal_status.clone()?));
                    Some((labels, 1.0))
                })
                .collect(),
        ),
        (
            &metrics::SLOT_INACTIVE_SECONDS,
            slots
                .iter()
                .zip(&round.inactive_for)
                .map(|(s, i)| (name(s), i.unwrap_or_default().as_secs_f64()))
                .collect(),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Format;
    use crate::slots::{Slot, SlotSnapshot};
    use crate::units::{ByteSize, Lsn};

    fn slot(name: &str, wal_status: Option<&str>) -> Slot {
        Slot {
            restart_lsn: wal_status.map(|_| Lsn(0x1000)),
            wal_status: wal_status.map(str::to_string),
            retained_wal: wal_status.map(|_| ByteSize(4096)),
            ..crate::fixtures::slot(name)
        }
    }

    #[test]
    fn slot_series_use_the_slot_label_show_no_null_and_go_when_unread() {
        let metrics = Metrics::new();
        let snapshot = SlotSnapshot {
            slots: vec![slot("held", Some("reserved")), slot("fresh", None)],
            ..SlotSnapshot::default()
        };
        let round = SlotRound {
            inactive_for: vec![Some(Duration::from_secs(5)), None],
            ..SlotRound::default()
        };
        metrics.replace_families(series(&snapshot, &round));
        let text = metrics.render(Format::Text);
        for line in [
            "replwarden_slot_retained_wal_bytes{slot=\"held\",slot_type=\"physical\"} 4096\n",
            "replwarden_slot_wal_status{slot=\"held\",slot_type=\"physical\",wal_status=\"reserved\"} 1\n",
            "replwarden_slot_active{slot=\"fresh\",slot_type=\"physical\"} 0\n",
        ] {
            assert!(text.contains(line), "{line:?} not in:\n{text}");
        }
        assert!(!text.contains("wal_status=\"NULL\""), "{text}");
        assert!(
            !text.contains("replwarden_slot_wal_status{slot=\"fresh\""),
            "{text}"
        );
        assert!(!text.contains("slot_name="), "{text}");
        Warden::default().unseen(&metrics);
        let text = metrics.render(Format::Text);
        assert!(!text.contains("replwarden_slot_active{"), "{text}");
        assert!(
            !text.contains("replwarden_slot_inactive_seconds{"),
            "{text}"
        );
    }
}
