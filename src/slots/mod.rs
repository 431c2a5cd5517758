//! Replication slots with rules (`[[slot_rule]]`): an inactive slot keeps
//! WAL on the server until the disk is full, so slot rules log or drop the
//! slots that have been inactive too long or hold back too much WAL.
//!
//! This module owns the slot side of replwarden:
//! - the domain types: a [`Slot`] (one row of `pg_replication_slots`, read
//!   by column name and by major in [`pg`]) and the slot policy
//!   ([`SlotPolicy`], [`SlotRule`]; parsed from the TOML by
//!   `crate::config::slot_rules`);
//! - the slot conditions: thresholds ([`SlotConditions`]) over the table
//!   of [`SlotSample`] in [`crate::condition`], read and shown as walsender
//!   conditions are;
//! - [`judge`], a pure function of (policy, slot snapshot, remembered
//!   state, now) that returns what to do, with the budget and dry run as
//!   for walsenders, unit-tested below on hand-built snapshots;
//! - [`pg`]: the read and the one-statement drop that re-checks the slot;
//! - [`report`]: the audit events and the `plan` section;
//! - [`warden`]: the slot step of each poll (read, judge, act, log, metrics).
//!
//! A slot is known by its name, type, database and plugin: one re-created
//! under the same name as another kind is a new slot. How long it has been
//! inactive is tracked on the daemon's monotonic clock from the poll that
//! first saw it inactive; the clock starts again whenever the slot is seen
//! active, its `restart_lsn`, `confirmed_flush_lsn`, `xmin` or
//! `catalog_xmin` moves (only a client, or `pg_replication_slot_advance`,
//! moves them; a logical consumer moves `confirmed_flush_lsn` even while an
//! open transaction pins `restart_lsn`), on 17+ its `inactive_since`
//! changes, or the daemon cancels or terminates the walsender streaming
//! from it ([`SlotMemory::walsender_signalled`]). A drop rule never drops
//! an active slot nor one that holds nothing, and on 17+ waits until the
//! daemon itself has watched the slot inactive for
//! [`SlotPolicy::observe_for`]. On 17+ a slot first
//! seen inactive counts from its `inactive_since`, measured on the
//! server's own clock (`statement_timestamp() - inactive_since`), so a
//! restart of the daemon does not start the count over; a restart of the
//! server sets `inactive_since` to the start time, which only shortens it
//! (and so does a monotonic clock younger than that age: a fresh boot
//! counts from first sight). A slot seen used is judged afresh by every
//! rule.

pub mod pg;
pub mod report;
pub mod warden;

use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, Instant, SystemTime};

use crate::condition::{SlotSample, Thresholds};
use crate::engine::{Budget, Evidence};
use crate::policy::{glob_list_matches, Glob, Limits, PatternList};
use crate::units::{ByteSize, Lsn};

/// One row of `pg_replication_slots`, as slot rules need it. Columns a
/// major does not have read as their neutral value (`synced` false before
/// 17, `inactive_since` `None`).
#[derive(Clone, Debug, PartialEq)]
pub struct Slot {
    pub name: String,
    /// `physical` or `logical`.
    pub slot_type: String,
    /// The database of a logical slot; `None` for a physical one.
    pub database: Option<String>,
    /// The output plugin of a logical slot.
    pub plugin: Option<String>,
    /// A temporary slot belongs to one session and goes with it: never
    /// dropped.
    pub temporary: bool,
    pub active: bool,
    pub active_pid: Option<i32>,
    /// `None` for a slot never reserved, or invalidated by WAL removal
    /// (`wal_status` lost; 18 keeps it for an `idle_timeout` invalidation).
    pub restart_lsn: Option<Lsn>,
    /// A logical slot's consumer confirmed up to here: it moves with every
    /// consumption even while an open transaction pins `restart_lsn`.
    pub confirmed_flush_lsn: Option<Lsn>,
    /// The oldest transaction the slot holds back (`hot_standby_feedback`).
    pub xmin: Option<i64>,
    /// The oldest transaction whose catalog rows a logical slot needs.
    pub catalog_xmin: Option<i64>,
    /// `reserved`, `extended`, `unreserved` or `lost` (kept as text: a
    /// newer server may add a value).
    pub wal_status: Option<String>,
    /// 17+: why the server invalidated the slot (`None` while valid).
    pub invalidation_reason: Option<String>,
    /// The server's WAL position minus `restart_lsn` (see
    /// [`SlotSnapshot::current_lsn`]); `None` for an invalidated slot,
    /// which holds no WAL even where the server keeps its `restart_lsn`
    /// (18's `idle_timeout`).
    pub retained_wal: Option<ByteSize>,
    /// 17+: synchronized from the primary by the slot sync worker.
    pub synced: bool,
    /// 17+: named in `synchronized_standby_slots` (logical walsenders wait
    /// for it).
    pub synchronized_standby: bool,
    /// 17+: when it last became inactive, on the server's clock.
    pub inactive_since: Option<SystemTime>,
    /// 17+: the server's `statement_timestamp()` minus `inactive_since`.
    pub inactive_age: Option<Duration>,
}

/// One read of `pg_replication_slots`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SlotSnapshot {
    pub in_recovery: bool,
    /// `pg_current_wal_lsn()` on a primary; on a standby the later of the
    /// received and replayed positions (the WAL it holds), as the poll
    /// measures cascading walsenders.
    pub current_lsn: Option<Lsn>,
    pub slots: Vec<Slot>,
}

/// What a slot rule does to a slot that breaks it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SlotAction {
    /// Log the breach, touch nothing.
    Log,
    /// `pg_drop_replication_slot`, re-checked in the same statement.
    Drop,
}

impl SlotAction {
    pub fn as_str(self) -> &'static str {
        match self {
            SlotAction::Log => "log",
            SlotAction::Drop => "drop",
        }
    }
}

impl fmt::Display for SlotAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which slots a slot rule is about; every matcher given must match, a
/// `None` matches all. A NULL column matches no positive pattern.
#[derive(Clone, Debug, Default)]
pub struct SlotMatchers {
    pub slot_name: Option<PatternList<Glob>>,
    pub slot_type: Option<PatternList<Glob>>,
    pub database: Option<PatternList<Glob>>,
    pub plugin: Option<PatternList<Glob>>,
    pub wal_status: Option<PatternList<Glob>>,
}

impl SlotMatchers {
    pub fn matches(&self, slot: &Slot) -> bool {
        glob_list_matches(&self.slot_name, Some(&slot.name))
            && glob_list_matches(&self.slot_type, Some(&slot.slot_type))
            && glob_list_matches(&self.database, slot.database.as_deref())
            && glob_list_matches(&self.plugin, slot.plugin.as_deref())
            && glob_list_matches(&self.wal_status, slot.wal_status.as_deref())
    }
}

/// What must hold, all together, for a slot rule to act: thresholds over
/// the slot conditions of [`crate::condition`].
pub type SlotConditions = Thresholds<SlotSample>;

/// One `[[slot_rule]]`.
#[derive(Clone, Debug)]
pub struct SlotRule {
    /// Unique among `[[rule]]` and `[[slot_rule]]` names (they share the
    /// `rule` label of `replwarden_actions_total`).
    pub name: String,
    pub matchers: SlotMatchers,
    pub conditions: SlotConditions,
    /// How long the conditions must hold without a break before acting.
    pub grace: Duration,
    pub action: SlotAction,
}

/// `[[slot_rule]]` and the `[protect] slot_name` entries.
#[derive(Clone, Debug, Default)]
pub struct SlotPolicy {
    /// In file order.
    pub rules: Vec<SlotRule>,
    /// Slots whose names match any of these are never acted on.
    pub protect: Vec<PatternList<Glob>>,
    /// How long the daemon must itself have watched a slot inactive
    /// before a drop rule drops it, whatever the server's
    /// `inactive_since` says (17+): a server clock stepped forward after
    /// it stamped `inactive_since` (a boot before the clock was synced)
    /// cannot make a slot look long abandoned at the first poll. The
    /// config sets it to the drop floor (10 polls).
    pub observe_for: Duration,
}

/// `None` when some condition does not hold for `sample`; else the
/// evidence (`inactive_for=2h (> 1h), retained_wal=21.0 GiB (> 20.0 GiB)`),
/// in table order.
fn breach(conditions: &SlotConditions, sample: &SlotSample) -> Option<Vec<Evidence>> {
    conditions
        .iter()
        .map(|(c, limit)| {
            let reading = (c.read)(sample, limit);
            reading.holds.then(|| Evidence {
                name: c.name,
                measured: reading.measured.to_string(),
                against: format!("> {limit}"),
            })
        })
        .collect()
}

/// Why a slot is never acted on, whatever a rule says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Protection {
    Temporary,
    /// 17+: `synced`.
    Synced,
    /// 17+: in `synchronized_standby_slots`.
    SynchronizedStandby,
    /// `[protect] slot_name`, the entry by number from 1.
    Protect(usize),
}

impl fmt::Display for Protection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Protection::Temporary => f.write_str("a temporary slot"),
            Protection::Synced => f.write_str("synchronized from the primary (synced)"),
            Protection::SynchronizedStandby => f.write_str("named in synchronized_standby_slots"),
            Protection::Protect(i) => write!(f, "protected by [protect] slot_name (entry {i})"),
        }
    }
}

impl SlotPolicy {
    pub fn protection(&self, slot: &Slot) -> Option<Protection> {
        if slot.temporary {
            return Some(Protection::Temporary);
        }
        if slot.synced {
            return Some(Protection::Synced);
        }
        if slot.synchronized_standby {
            return Some(Protection::SynchronizedStandby);
        }
        self.protect
            .iter()
            .position(|p| p.matches_with(|g| g.pattern.matches(&slot.name)))
            .map(|i| Protection::Protect(i + 1))
    }
}

/// A slot rule's decision about one slot.
#[derive(Clone, Debug, PartialEq)]
pub struct SlotDecision {
    pub rule: String,
    pub action: SlotAction,
    /// The slot as judged: the drop re-checks its `restart_lsn`.
    pub slot: Slot,
    pub inactive_for: Option<Duration>,
    /// The conditions that held, with their thresholds.
    pub evidence: Vec<Evidence>,
    /// 1 for the first attempt, more for a retry of a failed drop.
    pub attempt: u32,
}

/// How a slot stands towards a rule that matches it (what `plan` shows).
#[derive(Clone, Debug, PartialEq)]
pub enum SlotVerdict {
    Protected(Protection),
    /// A drop rule never drops an active slot.
    Active,
    /// Some condition does not hold.
    NotBreached,
    /// A drop rule never drops a slot that holds nothing (no `restart_lsn`,
    /// no xmin) and is not lost: dropping it would free nothing, and it is
    /// most likely a slot just created (or re-created) for a client.
    HoldsNothing,
    /// 17+: the conditions hold by the server's `inactive_since`, but the
    /// daemon has watched the slot inactive for less than
    /// [`SlotPolicy::observe_for`]: a drop waits this much longer.
    Observing {
        left: Duration,
        evidence: Vec<Evidence>,
    },
    /// The conditions hold; the grace has this much left.
    Grace {
        left: Duration,
        evidence: Vec<Evidence>,
    },
    /// Acted on now (or deferred by the budget).
    Acts {
        evidence: Vec<Evidence>,
    },
    /// Already acted on while this breach lasts.
    Done,
}

/// What the guards held back.
#[derive(Clone, Debug, PartialEq)]
pub struct Deferred {
    pub decision: SlotDecision,
    pub max_actions: u32,
    pub per: Duration,
}

/// One round of judging slots.
#[derive(Debug, Default)]
pub struct SlotRound {
    /// What to do now, in order.
    pub decisions: Vec<SlotDecision>,
    /// Drops the action budget defers to a later poll.
    pub deferred: Vec<Deferred>,
    /// How long each slot (by index in the snapshot) has been seen inactive.
    pub inactive_for: Vec<Option<Duration>>,
    /// Per slot (index), per matching rule (index), how it stands.
    pub verdicts: Vec<(usize, usize, SlotVerdict)>,
}

/// How a decision went, as far as the judge cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotDelivery {
    /// Done: dropped or logged.
    Done,
    /// Done, and nothing was dropped: the re-check kept the slot, or it
    /// was gone. Not charged to the action budget.
    Spared,
    /// Simulated in a dry run: done while the dry run lasts.
    DryRun,
    /// Failed; retried at a later poll up to `[limits] max_retries`.
    Failed,
    /// Refused (the role may not drop slots): retried every
    /// [`REFUSED_RETRY`] while the breach lasts, as a grant can fix it.
    Refused,
    /// Not tried: decided again, nothing charged.
    NotAttempted,
}

/// How long a drop the server refused (no REPLICATION) waits before it is
/// tried again: slow, as only an operator's grant changes the answer.
pub const REFUSED_RETRY: Duration = Duration::from_secs(300);

/// What the judge remembers between polls.
#[derive(Debug, Default)]
pub struct SlotMemory {
    slots: HashMap<String, Tracked>,
    /// Slots whose walsender the daemon cancelled or terminated this poll,
    /// and when: counted as just used (see [`SlotMemory::walsender_signalled`]).
    signalled: HashMap<String, Instant>,
    /// The drops of the current budget window, and the queue of those it
    /// deferred (a budget of its own, apart from the walsenders').
    budget: Budget,
    /// The policy the per-rule memory is for, each rule's name and what
    /// tells an edit: an edited rule starts over.
    layout: Vec<(String, String)>,
}

#[derive(Debug)]
struct Tracked {
    /// What tells a slot from one re-created under the same name: its
    /// type, database and plugin (a change starts the memory over).
    identity: (String, Option<String>, Option<String>),
    /// Since when it has been seen inactive (daemon clock); `None` while active.
    inactive_since: Option<Instant>,
    /// Since when the daemon itself has watched it inactive: as
    /// `inactive_since`, but never counted back from the server's
    /// `inactive_since` (see [`SlotPolicy::observe_for`]).
    observed_since: Option<Instant>,
    /// What a client moves as it uses the slot: any change is use.
    used_marks: UseMarks,
    /// By rule name.
    rules: HashMap<String, RuleState>,
    seen: bool,
}

#[derive(Clone, Copy, Debug, Default)]
struct RuleState {
    breach_since: Option<Instant>,
    acted: Option<Acted>,
    deferred: Option<u64>,
}

#[derive(Clone, Copy, Debug)]
struct Acted {
    attempts: u32,
    failed: bool,
    simulated: bool,
    /// The server refused the drop then: tried again [`REFUSED_RETRY`] later.
    refused_at: Option<Instant>,
}

/// What moves when a client uses a slot: `restart_lsn` (a physical
/// standby, or a logical consumer once no transaction pins it),
/// `confirmed_flush_lsn` (a logical consumer, even while an open
/// transaction pins `restart_lsn`), `xmin` and `catalog_xmin`, and on 17+
/// `inactive_since` (reset at every release).
#[derive(Clone, Debug, PartialEq)]
struct UseMarks {
    restart_lsn: Option<Lsn>,
    confirmed_flush_lsn: Option<Lsn>,
    xmin: Option<i64>,
    catalog_xmin: Option<i64>,
    inactive_since: Option<SystemTime>,
}

impl UseMarks {
    fn of(slot: &Slot) -> UseMarks {
        UseMarks {
            restart_lsn: slot.restart_lsn,
            confirmed_flush_lsn: slot.confirmed_flush_lsn,
            xmin: slot.xmin,
            catalog_xmin: slot.catalog_xmin,
            inactive_since: slot.inactive_since,
        }
    }
}

impl Slot {
    fn identity(&self) -> (String, Option<String>, Option<String>) {
        (
            self.slot_type.clone(),
            self.database.clone(),
            self.plugin.clone(),
        )
    }

    /// Invalidated by the server (`wal_status` lost, or 17+'s
    /// `invalidation_reason`): it holds no WAL any more.
    pub fn invalidated(&self) -> bool {
        self.invalidation_reason.is_some() || self.wal_status.as_deref() == Some("lost")
    }

    /// Holds neither WAL nor rows: no `restart_lsn`, no xmin, and not
    /// lost (a lost slot is dropped to clear it away).
    pub fn holds_nothing(&self) -> bool {
        self.restart_lsn.is_none()
            && self.xmin.is_none()
            && self.catalog_xmin.is_none()
            && !self.invalidated()
    }
}

impl SlotMemory {
    /// Forgets how long every slot has been inactive: the server was not
    /// seen (reconnect), so a client may have used a slot meanwhile. On 17+
    /// the next read counts from `inactive_since` again.
    pub fn interrupted(&mut self) {
        self.slots.clear();
        self.signalled.clear();
    }

    /// The daemon cancelled or terminated the walsender streaming from
    /// slot `name` at `at`: the next judge counts the slot as used at
    /// that moment, so its inactive clock starts there (a standby cut off
    /// by a walsender rule reconnects before any drop rule, which needs
    /// `inactive_for`, can hold for it).
    pub fn walsender_signalled(&mut self, name: &str, at: Instant) {
        self.signalled.insert(name.to_string(), at);
    }

    /// Records what became of a decision (see [`SlotDelivery`]), made by
    /// the judge at `decided` and carried out at `now`. Returns the
    /// attempts when a failed drop has used up its retries.
    pub fn record(
        &mut self,
        d: &SlotDecision,
        delivery: SlotDelivery,
        limits: &Limits,
        (decided, now): (Instant, Instant),
    ) -> Option<u32> {
        let state = self
            .slots
            .get_mut(&d.slot.name)
            .and_then(|t| t.rules.get_mut(&d.rule))?;
        if delivery == SlotDelivery::NotAttempted {
            state.acted = state.acted.filter(|a| !a.simulated);
            return None;
        }
        let failed = delivery == SlotDelivery::Failed;
        state.acted = Some(Acted {
            attempts: d.attempt,
            failed: failed && d.attempt <= limits.max_retries,
            simulated: delivery == SlotDelivery::DryRun,
            refused_at: (delivery == SlotDelivery::Refused).then_some(now),
        });
        state.deferred = None;
        // Charged at the decision's time, as walsender actions are, and
        // only for a drop that dropped or may have (a dry run counts as
        // one); a refused one dropped nothing.
        let charged = matches!(
            delivery,
            SlotDelivery::Done | SlotDelivery::DryRun | SlotDelivery::Failed
        );
        if d.action == SlotAction::Drop && charged {
            self.budget.charge(decided);
        }
        (failed && d.attempt > limits.max_retries).then_some(d.attempt)
    }

    fn adopt(&mut self, policy: &SlotPolicy) {
        let layout: Vec<(String, String)> = policy
            .rules
            .iter()
            .map(|r| {
                let key = format!(
                    "{:?} {:?} {:?} {:?}",
                    r.matchers, r.conditions, r.grace, r.action
                );
                (r.name.clone(), key)
            })
            .collect();
        if layout == self.layout {
            return;
        }
        let keep: Vec<&str> = layout
            .iter()
            .filter(|l| self.layout.contains(l))
            .map(|(n, _)| n.as_str())
            .collect();
        for t in self.slots.values_mut() {
            t.rules.retain(|name, _| keep.contains(&name.as_str()));
        }
        self.layout = layout;
    }
}

/// Judges every slot against every slot rule at `now`, updating `memory`.
/// Pure: no I/O, `now` is a parameter. Report what became of every
/// decision through [`SlotMemory::record`]; one never recorded is decided
/// again at the next poll.
pub fn judge(
    policy: &SlotPolicy,
    limits: &Limits,
    snapshot: &SlotSnapshot,
    memory: &mut SlotMemory,
    now: Instant,
    dry_run: bool,
) -> SlotRound {
    memory.adopt(policy);
    memory.budget.begin(now, limits);
    for t in memory.slots.values_mut() {
        t.seen = false;
    }
    let mut round = SlotRound::default();
    let mut candidates: Vec<(Option<u64>, SlotDecision)> = Vec::new();
    let signalled = std::mem::take(&mut memory.signalled);
    for (si, slot) in snapshot.slots.iter().enumerate() {
        let fresh = || Tracked {
            identity: slot.identity(),
            inactive_since: (!slot.active).then(|| {
                slot.inactive_age
                    .and_then(|age| now.checked_sub(age))
                    .unwrap_or(now)
            }),
            observed_since: (!slot.active).then_some(now),
            used_marks: UseMarks::of(slot),
            rules: HashMap::new(),
            seen: true,
        };
        let t = memory.slots.entry(slot.name.clone()).or_insert_with(fresh);
        if t.identity != slot.identity() {
            // Re-created under the same name: a new slot, remembered anew.
            *t = fresh();
        }
        t.seen = true;
        let marks = UseMarks::of(slot);
        let signalled_at = signalled.get(&slot.name).copied();
        let used = t.used_marks != marks || signalled_at.is_some();
        if used {
            // A client used it since the last poll: every rule judges it
            // afresh (a drop kept because it moved is tried again, a log
            // rule logs its next breach).
            t.rules.clear();
        }
        if slot.active {
            t.inactive_since = None;
            t.observed_since = None;
        } else if let Some(at) = signalled_at {
            t.inactive_since = Some(at.min(now));
            t.observed_since = t.inactive_since;
        } else if t.inactive_since.is_none() || used {
            t.inactive_since = Some(now);
            t.observed_since = t.inactive_since;
        }
        let observed = t
            .observed_since
            .map_or(Duration::ZERO, |s| now.saturating_duration_since(s));
        t.used_marks = marks;
        // Whole milliseconds, the grain evidence shows: a slot inactive
        // for 2.0004 s does not break `inactive_for = "2s"` (it would read
        // `inactive_for=2s (> 2s)`).
        let inactive_for = t.inactive_since.map(|s| {
            let d = now.saturating_duration_since(s);
            Duration::from_millis(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        });
        round.inactive_for.push(inactive_for);
        let sample = SlotSample {
            inactive_for,
            retained_wal: slot.retained_wal,
        };
        let protection = policy.protection(slot);
        for (ri, rule) in policy.rules.iter().enumerate() {
            if !rule.matchers.matches(slot) {
                t.rules.remove(&rule.name);
                continue;
            }
            if let Some(p) = &protection {
                t.rules.remove(&rule.name);
                round
                    .verdicts
                    .push((si, ri, SlotVerdict::Protected(p.clone())));
                continue;
            }
            let state = t.rules.entry(rule.name.clone()).or_default();
            let drop = rule.action == SlotAction::Drop;
            let evidence = if drop && (slot.active || slot.holds_nothing()) {
                None
            } else {
                breach(&rule.conditions, &sample)
            };
            let Some(evidence) = evidence else {
                *state = RuleState::default();
                let verdict = if drop && slot.active {
                    SlotVerdict::Active
                } else if drop && slot.holds_nothing() {
                    SlotVerdict::HoldsNothing
                } else {
                    SlotVerdict::NotBreached
                };
                round.verdicts.push((si, ri, verdict));
                continue;
            };
            if let Some(left) = (drop && slot.inactive_since.is_some())
                .then(|| policy.observe_for.checked_sub(observed))
                .flatten()
                .filter(|l| !l.is_zero())
            {
                round
                    .verdicts
                    .push((si, ri, SlotVerdict::Observing { left, evidence }));
                continue;
            }
            let since = *state.breach_since.get_or_insert(now);
            let held_for = now.saturating_duration_since(since);
            if let Some(left) = rule.grace.checked_sub(held_for).filter(|l| !l.is_zero()) {
                round
                    .verdicts
                    .push((si, ri, SlotVerdict::Grace { left, evidence }));
                continue;
            }
            let attempt = match state.acted {
                None => 1,
                Some(a) if a.simulated && !dry_run => 1,
                Some(a) if a.failed => a.attempts + 1,
                Some(Acted {
                    refused_at: Some(at),
                    attempts,
                    ..
                }) if now.saturating_duration_since(at) >= REFUSED_RETRY => attempts + 1,
                Some(_) => {
                    round.verdicts.push((si, ri, SlotVerdict::Done));
                    continue;
                }
            };
            round.verdicts.push((
                si,
                ri,
                SlotVerdict::Acts {
                    evidence: evidence.clone(),
                },
            ));
            candidates.push((
                state.deferred,
                SlotDecision {
                    rule: rule.name.clone(),
                    action: rule.action,
                    slot: slot.clone(),
                    inactive_for,
                    evidence,
                    attempt,
                },
            ));
        }
    }
    memory.slots.retain(|_, t| t.seen);

    // Drops the budget deferred go first, in the order they were deferred.
    candidates.sort_by_key(|(deferred, _)| Budget::order(*deferred));
    let mut spent = memory.budget.spent();
    for (_, decision) in candidates {
        if decision.action == SlotAction::Drop {
            if spent >= limits.max_actions as usize {
                let place = memory.budget.defer();
                let state = memory
                    .slots
                    .get_mut(&decision.slot.name)
                    .and_then(|t| t.rules.get_mut(&decision.rule));
                if let Some(state) = state {
                    state.deferred.get_or_insert(place);
                }
                round.deferred.push(Deferred {
                    decision,
                    max_actions: limits.max_actions,
                    per: limits.per,
                });
                continue;
            }
            spent += 1;
        }
        round.decisions.push(decision);
    }
    round
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::condition::Limit;

    fn slot(name: &str, active: bool, retained: u64) -> Slot {
        Slot {
            active,
            active_pid: active.then_some(4711),
            retained_wal: Some(ByteSize(retained)),
            ..crate::fixtures::slot(name)
        }
    }

    fn glob_list(patterns: &[&str]) -> PatternList<Glob> {
        let (exclude, include): (Vec<&str>, Vec<&str>) =
            patterns.iter().partition(|p| p.starts_with('!'));
        PatternList {
            include: include.iter().map(|p| Glob::parse(p).unwrap()).collect(),
            exclude: exclude
                .iter()
                .map(|p| Glob::parse(&p[1..]).unwrap())
                .collect(),
        }
    }

    fn rule(action: SlotAction, inactive_for: Option<u64>, retained: Option<u64>) -> SlotRule {
        let mut conditions = SlotConditions::default();
        if let Some(secs) = inactive_for {
            conditions.set("inactive_for", Limit::Time(Duration::from_secs(secs)));
        }
        if let Some(bytes) = retained {
            conditions.set("retained_wal", Limit::Bytes(ByteSize(bytes)));
        }
        SlotRule {
            name: "abandoned".to_string(),
            matchers: SlotMatchers {
                slot_name: Some(glob_list(&["*", "!patroni_*"])),
                ..SlotMatchers::default()
            },
            conditions,
            grace: Duration::ZERO,
            action,
        }
    }

    fn policy(rules: Vec<SlotRule>) -> SlotPolicy {
        SlotPolicy {
            rules,
            ..SlotPolicy::default()
        }
    }

    fn snap(slots: Vec<Slot>) -> SlotSnapshot {
        SlotSnapshot {
            in_recovery: false,
            current_lsn: Some(Lsn(0x2000_0000)),
            slots,
        }
    }

    const MIN: Duration = Duration::from_secs(60);

    /// `judge` as the daemon calls it at each poll (default limits, not a
    /// dry run), at `when`.
    fn at(p: &SlotPolicy, m: &mut SlotMemory, s: &SlotSnapshot, when: Instant) -> SlotRound {
        at_with(p, &Limits::default(), m, s, when)
    }

    /// The same with `limits`.
    fn at_with(
        p: &SlotPolicy,
        limits: &Limits,
        m: &mut SlotMemory,
        s: &SlotSnapshot,
        when: Instant,
    ) -> SlotRound {
        judge(p, limits, s, m, when, false)
    }

    /// A read of one slot.
    fn one(slot: &Slot) -> SlotSnapshot {
        snap(vec![slot.clone()])
    }

    fn preflight() -> crate::snapshot::Preflight {
        crate::snapshot::Preflight {
            role: "replwarden".to_string(),
            superuser: false,
            can_read: true,
            can_signal: true,
            replication: false,
            superuser_walsenders: Vec::new(),
        }
    }

    #[test]
    fn an_inactive_slot_is_dropped_once_inactive_for_is_exceeded() {
        let p = policy(vec![rule(SlotAction::Drop, Some(600), Some(1000))]);
        let s = snap(vec![slot("old", false, 5000)]);
        let (limits, mut m, t0) = (Limits::default(), SlotMemory::default(), Instant::now());
        assert!(at(&p, &mut m, &s, t0).decisions.is_empty());
        let r = at(&p, &mut m, &s, t0 + 10 * MIN);
        assert!(r.decisions.is_empty(), "not more than 10 minutes yet");
        let r = at(&p, &mut m, &s, t0 + 11 * MIN);
        assert_eq!(r.decisions.len(), 1);
        let d = &r.decisions[0];
        assert_eq!(
            (d.action, d.slot.name.as_str(), d.attempt),
            (SlotAction::Drop, "old", 1)
        );
        assert_eq!(d.inactive_for, Some(11 * MIN));
        assert_eq!(
            crate::engine::evidence_line(&d.evidence),
            "inactive_for=11m (> 10m), retained_wal=4.9 KiB (> 1000 B)"
        );
        // Recorded done: not repeated while the breach lasts.
        m.record(
            d,
            SlotDelivery::Done,
            &limits,
            (t0 + 11 * MIN, t0 + 11 * MIN),
        );
        let r = at(&p, &mut m, &s, t0 + 12 * MIN);
        assert!(r.decisions.is_empty());
    }

    #[test]
    fn an_active_slot_is_never_dropped_and_use_restarts_the_clock() {
        let p = policy(vec![rule(SlotAction::Drop, Some(60), None)]);
        let (limits, mut m, t0) = (Limits::default(), SlotMemory::default(), Instant::now());
        let active = snap(vec![slot("s", true, 5000)]);
        judge(
            &p,
            &limits,
            &snap(vec![slot("s", false, 5000)]),
            &mut m,
            t0,
            false,
        );
        let r = at(&p, &mut m, &active, t0 + 5 * MIN);
        assert!(r.decisions.is_empty());
        assert_eq!(r.verdicts[0].2, SlotVerdict::Active);
        // Inactive again: counts from now.
        let idle = snap(vec![slot("s", false, 5000)]);
        assert!(at(&p, &mut m, &idle, t0 + 6 * MIN).decisions.is_empty());
        assert!(at(&p, &mut m, &idle, t0 + 7 * MIN).decisions.is_empty());
        assert_eq!(at(&p, &mut m, &idle, t0 + 8 * MIN).decisions.len(), 1);
    }

    #[test]
    fn a_moved_restart_lsn_or_inactive_since_means_the_slot_was_used() {
        let p = policy(vec![rule(SlotAction::Drop, Some(60), None)]);
        let (mut m, t0) = (SlotMemory::default(), Instant::now());
        let mut s = slot("s", false, 5000);
        at(&p, &mut m, &one(&s), t0);
        s.restart_lsn = Some(Lsn(0x1000_1000));
        let r = at(&p, &mut m, &one(&s), t0 + 2 * MIN);
        assert!(
            r.decisions.is_empty(),
            "used between two polls: counts anew"
        );
        assert_eq!(r.inactive_for, vec![Some(Duration::ZERO)]);
        s.inactive_since = Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000));
        let r = at(&p, &mut m, &one(&s), t0 + 4 * MIN);
        assert_eq!(r.inactive_for, vec![Some(Duration::ZERO)]);
        let r = at(&p, &mut m, &one(&s), t0 + 6 * MIN);
        assert_eq!(r.decisions.len(), 1);
    }

    #[test]
    fn a_slot_kept_because_a_client_used_it_is_judged_afresh() {
        let p = policy(vec![rule(SlotAction::Drop, None, Some(1000))]);
        let (limits, mut m, t0) = (Limits::default(), SlotMemory::default(), Instant::now());
        let mut s = slot("s", false, 5000);
        let r = at(&p, &mut m, &one(&s), t0);
        // The drop found its restart_lsn moved: kept, recorded done.
        m.record(&r.decisions[0], SlotDelivery::Done, &limits, (t0, t0));
        s.restart_lsn = Some(Lsn(0x1000_1000));
        let r = at(&p, &mut m, &one(&s), t0 + MIN);
        assert_eq!(
            r.decisions.len(),
            1,
            "retained_wal still holds: tried again"
        );
        m.record(
            &r.decisions[0],
            SlotDelivery::Done,
            &limits,
            (t0 + MIN, t0 + MIN),
        );
        let r = at(&p, &mut m, &one(&s), t0 + 2 * MIN);
        assert!(r.decisions.is_empty(), "unchanged since: done");
    }

    #[test]
    fn a_slot_whose_walsender_was_signalled_counts_as_just_used() {
        let p = policy(vec![rule(SlotAction::Drop, Some(60), Some(1000))]);
        let (mut m, t0) = (SlotMemory::default(), Instant::now());
        let s = snap(vec![slot("sb1", false, 5000)]);
        at(&p, &mut m, &s, t0);
        // Inactive for 2 minutes, then its walsender is terminated by a
        // walsender rule in the same poll: not dropped now, nor a minute
        // after (the clock starts at the terminate).
        m.walsender_signalled("sb1", t0 + 2 * MIN);
        let r = at(&p, &mut m, &s, t0 + 2 * MIN);
        assert!(r.decisions.is_empty(), "{r:?}");
        assert_eq!(r.inactive_for, vec![Some(Duration::ZERO)]);
        assert!(at(&p, &mut m, &s, t0 + 3 * MIN).decisions.is_empty());
        assert_eq!(
            at(&p, &mut m, &s, t0 + 4 * MIN).decisions.len(),
            1,
            "still unused a full inactive_for after the terminate"
        );
    }

    #[test]
    fn a_pinned_logical_slot_consumed_between_polls_counts_as_used() {
        let p = policy(vec![rule(SlotAction::Drop, Some(60), None)]);
        let (mut m, t0) = (SlotMemory::default(), Instant::now());
        let mut s = slot("etl", false, 5000);
        s.slot_type = "logical".to_string();
        s.confirmed_flush_lsn = Some(Lsn(0x1000_0100));
        s.catalog_xmin = Some(750);
        at(&p, &mut m, &one(&s), t0);
        // restart_lsn pinned by an open transaction; the consumer confirms.
        s.confirmed_flush_lsn = Some(Lsn(0x1000_0200));
        let r = at(&p, &mut m, &one(&s), t0 + 2 * MIN);
        assert!(r.decisions.is_empty(), "{r:?}");
        s.catalog_xmin = Some(751);
        let r = at(&p, &mut m, &one(&s), t0 + 4 * MIN);
        assert!(r.decisions.is_empty(), "{r:?}");
        s.xmin = Some(9);
        let r = at(&p, &mut m, &one(&s), t0 + 6 * MIN);
        assert!(r.decisions.is_empty(), "{r:?}");
        let r = at(&p, &mut m, &one(&s), t0 + 8 * MIN);
        assert_eq!(r.decisions.len(), 1, "unused since: dropped");
    }

    #[test]
    fn a_recreated_slot_is_a_new_slot_and_one_holding_nothing_is_kept() {
        let p = policy(vec![rule(SlotAction::Drop, Some(60), None)]);
        let (mut m, t0) = (SlotMemory::default(), Instant::now());
        let old = slot("s", false, 5000);
        at(&p, &mut m, &one(&old), t0);
        // Re-created as a logical slot of the same name: counts anew.
        let mut new = slot("s", false, 5000);
        new.slot_type = "logical".to_string();
        new.database = Some("app".to_string());
        let r = at(&p, &mut m, &one(&new), t0 + 5 * MIN);
        assert!(r.decisions.is_empty(), "{r:?}");
        assert_eq!(r.inactive_for, vec![Some(Duration::ZERO)]);
        // A slot that holds nothing (never reserved) is never dropped...
        let mut empty = slot("e", false, 0);
        empty.restart_lsn = None;
        empty.retained_wal = None;
        empty.wal_status = None;
        at(&p, &mut m, &one(&empty), t0);
        let r = at(&p, &mut m, &one(&empty), t0 + 5 * MIN);
        assert!(r.decisions.is_empty(), "{r:?}");
        assert_eq!(r.verdicts[0].2, SlotVerdict::HoldsNothing);
        // ...unless it is lost: then dropping it clears it away.
        empty.wal_status = Some("lost".to_string());
        let r = at(&p, &mut m, &one(&empty), t0 + 7 * MIN);
        assert_eq!(r.decisions.len(), 1, "{r:?}");
    }

    #[test]
    fn a_refused_drop_is_tried_again_slowly() {
        let p = policy(vec![rule(SlotAction::Drop, Some(60), None)]);
        let (limits, mut m, t0) = (Limits::default(), SlotMemory::default(), Instant::now());
        let s = snap(vec![slot("s", false, 5000)]);
        at(&p, &mut m, &s, t0);
        let r = at(&p, &mut m, &s, t0 + 2 * MIN);
        assert_eq!(r.decisions[0].attempt, 1);
        assert_eq!(
            m.record(
                &r.decisions[0],
                SlotDelivery::Refused,
                &limits,
                (t0 + 2 * MIN, t0 + 2 * MIN)
            ),
            None
        );
        let r = at(&p, &mut m, &s, t0 + 3 * MIN);
        assert!(r.decisions.is_empty(), "not at every poll");
        assert_eq!(r.verdicts[0].2, SlotVerdict::Done);
        let r = at(&p, &mut m, &s, t0 + 2 * MIN + REFUSED_RETRY);
        assert_eq!(r.decisions.len(), 1, "a grant may have fixed it");
        assert_eq!(r.decisions[0].attempt, 2);
    }

    #[test]
    fn evidence_never_shows_a_value_equal_to_its_limit() {
        let p = policy(vec![rule(SlotAction::Log, Some(2), None)]);
        let (mut m, t0) = (SlotMemory::default(), Instant::now());
        let s = snap(vec![slot("s", false, 1)]);
        at(&p, &mut m, &s, t0);
        let just_over = t0 + Duration::from_micros(2_000_400);
        let r = at(&p, &mut m, &s, just_over);
        assert!(r.decisions.is_empty(), "{r:?}");
        let r = at(&p, &mut m, &s, t0 + Duration::from_millis(2001));
        assert_eq!(
            crate::engine::evidence_line(&r.decisions[0].evidence),
            "inactive_for=2s 1ms (> 2s)"
        );
    }

    #[test]
    fn on_17_a_drop_waits_for_the_daemons_own_sight_of_the_slot() {
        let mut p = policy(vec![rule(SlotAction::Drop, Some(3600), None)]);
        p.observe_for = Duration::from_secs(10);
        let t0 = Instant::now() + Duration::from_secs(3 * 3600);
        let mut m = SlotMemory::default();
        let mut s = slot("s", false, 5000);
        // A server clock stepped forward: inactive_since looks 2 h old.
        s.inactive_since = Some(SystemTime::UNIX_EPOCH);
        s.inactive_age = Some(Duration::from_secs(2 * 3600));
        let first = snap(vec![s.clone()]);
        let r = at(&p, &mut m, &first, t0);
        assert!(r.decisions.is_empty(), "{r:?}");
        let text = report::plan(&p, &preflight(), &first, &r, false);
        assert!(
            text.contains("inactive_for=2h (> 1h); the daemon drops only a slot it has itself watched inactive for 10s (the server's clock alone is not trusted): 10s left"),
            "{text}"
        );
        assert!(
            matches!(&r.verdicts[0].2, SlotVerdict::Observing { left, .. } if *left == Duration::from_secs(10)),
            "{r:?}"
        );
        let r = at(&p, &mut m, &one(&s), t0 + Duration::from_secs(5));
        assert!(r.decisions.is_empty(), "{r:?}");
        let r = at(&p, &mut m, &one(&s), t0 + Duration::from_secs(10));
        assert_eq!(r.decisions.len(), 1, "{r:?}");
    }

    #[test]
    fn on_17_a_slot_first_seen_counts_from_inactive_since() {
        let p = policy(vec![rule(SlotAction::Drop, Some(3600), None)]);
        // Far enough from the start of the monotonic clock to subtract 2 h.
        let t0 = Instant::now() + Duration::from_secs(3 * 3600);
        let mut m = SlotMemory::default();
        let mut s = slot("s", false, 5000);
        s.inactive_since = Some(SystemTime::UNIX_EPOCH);
        s.inactive_age = Some(Duration::from_secs(2 * 3600));
        let r = at(&p, &mut m, &one(&s), t0);
        assert_eq!(r.decisions.len(), 1, "{r:?}");
        assert_eq!(r.decisions[0].inactive_for, Some(Duration::from_secs(7200)));
    }

    #[test]
    fn protected_temporary_synced_and_excluded_slots_are_never_judged() {
        let mut p = policy(vec![rule(SlotAction::Drop, Some(0), None)]);
        p.protect = vec![glob_list(&["barman*"])];
        let mut temp = slot("temp", false, 5000);
        temp.temporary = true;
        let mut synced = slot("synced", false, 5000);
        synced.synced = true;
        let mut standby = slot("standby", false, 5000);
        standby.synchronized_standby = true;
        let s = snap(vec![
            temp,
            synced,
            standby,
            slot("barman", false, 5000),
            slot("patroni_a", false, 5000),
            slot("victim", false, 5000),
        ]);
        let (mut m, t0) = (SlotMemory::default(), Instant::now());
        at(&p, &mut m, &s, t0);
        let r = at(&p, &mut m, &s, t0 + MIN);
        let dropped: Vec<&str> = r.decisions.iter().map(|d| d.slot.name.as_str()).collect();
        assert_eq!(dropped, ["victim"]);
        let protections: Vec<String> = r
            .verdicts
            .iter()
            .filter_map(|(_, _, v)| match v {
                SlotVerdict::Protected(p) => Some(p.to_string()),
                _ => None,
            })
            .collect();
        assert_eq!(
            protections,
            [
                "a temporary slot",
                "synchronized from the primary (synced)",
                "named in synchronized_standby_slots",
                "protected by [protect] slot_name (entry 1)"
            ]
        );
    }

    #[test]
    fn plan_shows_how_each_rule_stands_with_its_evidence() {
        let p = policy(vec![
            SlotRule {
                name: "patient".to_string(),
                grace: 5 * MIN,
                ..rule(SlotAction::Log, None, Some(1000))
            },
            SlotRule {
                name: "now".to_string(),
                ..rule(SlotAction::Drop, None, Some(1000))
            },
        ]);
        let s = snap(vec![slot("old", false, 5000)]);
        let mut m = SlotMemory::default();
        let r = judge(&p, &Limits::default(), &s, &mut m, Instant::now(), true);
        let text = report::plan(&p, &preflight(), &s, &r, true);
        for line in [
            "  slot_rule \"patient\" (log): retained_wal=4.9 KiB (> 1000 B); grace: 5m left\n",
            "  slot_rule \"now\" (drop): retained_wal=4.9 KiB (> 1000 B); would drop now (dry run: logged only)\n",
            "WARNING: role replwarden lacks the REPLICATION attribute, so the server will refuse every drop of \
             slot rule(s) \"now\" (refused drops are tried again every 5m).",
        ] {
            assert!(text.contains(line), "{line:?} not in:\n{text}");
        }
    }

    #[test]
    fn grace_must_pass_after_the_conditions_hold() {
        let mut r0 = rule(SlotAction::Log, Some(60), None);
        r0.grace = 5 * MIN;
        let p = policy(vec![r0]);
        let s = snap(vec![slot("s", false, 1)]);
        let (mut m, t0) = (SlotMemory::default(), Instant::now());
        at(&p, &mut m, &s, t0);
        let r = at(&p, &mut m, &s, t0 + 2 * MIN);
        assert!(matches!(r.verdicts[0].2, SlotVerdict::Grace { left, .. } if left == 5 * MIN));
        assert!(at(&p, &mut m, &s, t0 + 6 * MIN).decisions.is_empty());
        let r = at(&p, &mut m, &s, t0 + 7 * MIN);
        assert_eq!(r.decisions[0].action, SlotAction::Log);
    }

    #[test]
    fn the_budget_defers_drops_in_order_and_never_loses_them() {
        let p = policy(vec![rule(SlotAction::Drop, Some(0), None)]);
        let limits = Limits {
            max_actions: 2,
            ..Limits::default()
        };
        let s = snap(["a", "b", "c"].iter().map(|n| slot(n, false, 1)).collect());
        let (mut m, t0) = (SlotMemory::default(), Instant::now());
        at_with(&p, &limits, &mut m, &s, t0);
        let r = at_with(&p, &limits, &mut m, &s, t0 + MIN);
        assert_eq!(r.decisions.len(), 2);
        assert_eq!(r.deferred.len(), 1);
        assert_eq!(r.deferred[0].decision.slot.name, "c");
        for d in &r.decisions {
            m.record(d, SlotDelivery::Done, &limits, (t0 + MIN, t0 + MIN));
        }
        let r = at_with(&p, &limits, &mut m, &s, t0 + MIN + Duration::from_secs(30));
        assert!(r.decisions.is_empty());
        assert_eq!(r.deferred.len(), 1);
        let r = at_with(&p, &limits, &mut m, &s, t0 + 2 * MIN);
        assert_eq!(r.decisions.len(), 1);
        assert_eq!(r.decisions[0].slot.name, "c");
    }

    #[test]
    fn the_budget_is_charged_at_decision_time_and_only_for_drops_that_may_drop() {
        let p = policy(vec![rule(SlotAction::Drop, Some(0), None)]);
        let limits = Limits {
            max_actions: 1,
            per: 10 * MIN,
            ..Limits::default()
        };
        let s = snap(["a", "b", "c"].iter().map(|n| slot(n, false, 1)).collect());
        let (mut m, t0) = (SlotMemory::default(), Instant::now());
        at_with(&p, &limits, &mut m, &s, t0);
        // Kept by the re-check, or already gone: nothing dropped, nothing
        // charged; the next one goes at the next poll.
        let r = at_with(&p, &limits, &mut m, &s, t0 + MIN);
        assert_eq!(r.decisions.len(), 1);
        m.record(
            &r.decisions[0],
            SlotDelivery::Spared,
            &limits,
            (t0 + MIN, t0 + MIN),
        );
        let r = at_with(&p, &limits, &mut m, &s, t0 + 2 * MIN);
        assert_eq!(r.decisions.len(), 1, "{r:?}");
        // Dropped: charged when it was decided, though it finished later.
        m.record(
            &r.decisions[0],
            SlotDelivery::Done,
            &limits,
            (t0 + 2 * MIN, t0 + 3 * MIN),
        );
        let r = at_with(&p, &limits, &mut m, &s, t0 + 11 * MIN);
        assert!(r.decisions.is_empty(), "{r:?}");
        let r = at_with(
            &p,
            &limits,
            &mut m,
            &s,
            t0 + 12 * MIN + Duration::from_secs(1),
        );
        assert_eq!(
            r.decisions.len(),
            1,
            "the window of the decision has passed: {r:?}"
        );
    }

    #[test]
    fn a_dry_run_is_done_only_while_it_lasts_and_failures_are_retried() {
        let p = policy(vec![rule(SlotAction::Drop, Some(0), None)]);
        let s = snap(vec![slot("s", false, 1)]);
        let limits = Limits {
            max_retries: 1,
            ..Limits::default()
        };
        let (mut m, t0) = (SlotMemory::default(), Instant::now());
        judge(&p, &limits, &s, &mut m, t0, true);
        let r = judge(&p, &limits, &s, &mut m, t0 + MIN, true);
        m.record(
            &r.decisions[0],
            SlotDelivery::DryRun,
            &limits,
            (t0 + MIN, t0 + MIN),
        );
        assert!(judge(&p, &limits, &s, &mut m, t0 + 2 * MIN, true)
            .decisions
            .is_empty());
        // Enforcing: acts for real.
        let r = at_with(&p, &limits, &mut m, &s, t0 + 3 * MIN);
        assert_eq!(r.decisions[0].attempt, 1);
        assert_eq!(
            m.record(
                &r.decisions[0],
                SlotDelivery::Failed,
                &limits,
                (t0 + 3 * MIN, t0 + 3 * MIN)
            ),
            None
        );
        let r = at_with(&p, &limits, &mut m, &s, t0 + 5 * MIN);
        assert_eq!(r.decisions[0].attempt, 2);
        assert_eq!(
            m.record(
                &r.decisions[0],
                SlotDelivery::Failed,
                &limits,
                (t0 + 5 * MIN, t0 + 5 * MIN)
            ),
            Some(2)
        );
        assert!(at_with(&p, &limits, &mut m, &s, t0 + 7 * MIN)
            .decisions
            .is_empty());
    }

    #[test]
    fn matchers_take_globs_exclusions_and_null_columns() {
        let mut logical = slot("sub", false, 1);
        logical.slot_type = "logical".to_string();
        logical.database = Some("app".to_string());
        logical.plugin = Some("pgoutput".to_string());
        let physical = slot("standby", false, 1);
        let m = SlotMatchers {
            slot_type: Some(glob_list(&["logical"])),
            database: Some(glob_list(&["app*"])),
            ..SlotMatchers::default()
        };
        assert!(m.matches(&logical));
        assert!(!m.matches(&physical), "no database: matches no pattern");
        let m = SlotMatchers {
            plugin: Some(glob_list(&["!pgoutput"])),
            wal_status: Some(glob_list(&["reserved", "extended"])),
            ..SlotMatchers::default()
        };
        assert!(!m.matches(&logical));
        assert!(m.matches(&physical));
    }

    #[test]
    fn an_unknown_value_never_holds_and_an_edited_rule_starts_over() {
        let p = policy(vec![rule(SlotAction::Drop, Some(0), Some(1))]);
        let mut lost = slot("lost", false, 1);
        lost.retained_wal = None;
        let (limits, mut m, t0) = (Limits::default(), SlotMemory::default(), Instant::now());
        at(&p, &mut m, &one(&lost), t0);
        let r = at(&p, &mut m, &one(&lost), t0 + MIN);
        assert_eq!(r.verdicts[0].2, SlotVerdict::NotBreached);

        let mut logged = policy(vec![rule(SlotAction::Log, Some(0), None)]);
        let s = snap(vec![slot("s", false, 1)]);
        judge(&logged, &limits, &s, &mut m, t0, false);
        let r = judge(&logged, &limits, &s, &mut m, t0 + MIN, false);
        m.record(
            &r.decisions[0],
            SlotDelivery::Done,
            &limits,
            (t0 + MIN, t0 + MIN),
        );
        assert!(judge(&logged, &limits, &s, &mut m, t0 + 2 * MIN, false)
            .decisions
            .is_empty());
        logged.rules[0]
            .conditions
            .set("inactive_for", Limit::Time(Duration::from_secs(1)));
        let r = judge(&logged, &limits, &s, &mut m, t0 + 3 * MIN, false);
        assert_eq!(r.decisions.len(), 1, "the edited rule judges afresh");
    }
}
