//! What slot rules say: the audit events (one `event="action"` line per
//! decision, with the slot, its retained WAL and how long it was inactive)
//! and the slot section of `replwarden plan`.

use std::fmt::Write as _;

use super::pg::SlotOutcome;
use super::{Deferred, SlotDecision, SlotPolicy, SlotRound, SlotSnapshot, SlotVerdict};
use crate::engine::evidence_line;
use crate::logfmt::{quoted, token};
use crate::snapshot::Preflight;
use crate::units::fmt_duration;

/// One decision and what became of it, on a server in recovery (a
/// standby's own slots) or not.
pub fn log_decision(d: &SlotDecision, outcome: &SlotOutcome, in_recovery: bool) {
    let slot = &d.slot;
    let detail = match outcome {
        SlotOutcome::Kept(why) | SlotOutcome::Refused(why) | SlotOutcome::Failed(why) => {
            why.as_str()
        }
        _ => "",
    };
    let inactive_for = d
        .inactive_for
        .map_or_else(|| "active".to_string(), fmt_duration);
    macro_rules! event {
        ($level:ident, $message:literal) => {
            tracing::$level!(
                event = "action",
                rule = %d.rule,
                action = %d.action,
                outcome = outcome.as_str(),
                attempt = d.attempt,
                slot_name = %slot.name,
                slot_type = %slot.slot_type,
                database = slot.database.as_deref().unwrap_or("NULL"),
                plugin = slot.plugin.as_deref().unwrap_or("NULL"),
                in_recovery,
                active_pid = slot.active_pid,
                restart_lsn = %slot.restart_lsn.map_or_else(|| "NULL".to_string(), |l| l.to_string()),
                confirmed_flush_lsn = %slot.confirmed_flush_lsn.map_or_else(|| "NULL".to_string(), |l| l.to_string()),
                wal_status = slot.wal_status.as_deref().unwrap_or("NULL"),
                retained_wal_bytes = slot.retained_wal.map(|b| b.0),
                inactive_for = %inactive_for,
                inactive_seconds = d.inactive_for.map(|i| i.as_secs()),
                measured = %evidence_line(&d.evidence),
                detail,
                $message
            )
        };
    }
    match outcome {
        SlotOutcome::Dropped => event!(warn, "replication slot dropped"),
        SlotOutcome::Kept(_) => event!(
            warn,
            "replication slot kept: it was in use again or changed when it was to be dropped"
        ),
        SlotOutcome::DryRun => event!(warn, "dry run: would drop replication slot"),
        SlotOutcome::Logged => event!(warn, "slot rule breached (action log)"),
        SlotOutcome::Gone => event!(info, "replication slot already gone; nothing dropped"),
        SlotOutcome::Refused(_) => event!(error, "slot drop refused by the server"),
        SlotOutcome::Failed(_) => event!(error, "slot drop failed"),
        SlotOutcome::Interrupted => event!(
            error,
            "connection lost while dropping a slot; will judge it again after reconnecting"
        ),
        SlotOutcome::NotAttempted => event!(
            error,
            "connection lost before this slot drop; will decide again after reconnecting"
        ),
    }
}

/// The drops the action budget deferred this poll, in one line.
pub fn log_deferred(deferred: &[Deferred]) {
    let Some(first) = deferred.first() else {
        return;
    };
    let which: Vec<String> = deferred
        .iter()
        .map(|d| format!("drop {}", quoted(&d.decision.slot.name)))
        .collect();
    tracing::warn!(
        event = "deferred",
        deferred = deferred.len(),
        max_actions = first.max_actions,
        per = %fmt_duration(first.per),
        actions = %which.join(", "),
        "action budget exhausted: slot drops deferred to later polls"
    );
}

/// A failed drop that has used up its retries.
pub fn log_gave_up(d: &SlotDecision, attempts: u32) {
    tracing::error!(
        event = "gave_up",
        rule = %d.rule,
        action = %d.action,
        slot_name = %d.slot.name,
        attempts,
        "slot drop failed on every attempt; giving up on this slot until its breach ends"
    );
}

/// What the daemon says when a `drop` slot rule exists but its role may
/// not drop slots (neither superuser nor REPLICATION): every such drop
/// would be refused. `None` when all is well.
pub fn drop_privilege_warning(policy: &SlotPolicy, preflight: &Preflight) -> Option<String> {
    if preflight.superuser || preflight.replication {
        return None;
    }
    let rules: Vec<String> = policy
        .rules
        .iter()
        .filter(|r| r.action == super::SlotAction::Drop)
        .map(|r| quoted(&r.name))
        .collect();
    if rules.is_empty() {
        return None;
    }
    let role = crate::sql::quote_ident(&preflight.role);
    Some(format!(
        "role {role} lacks the REPLICATION attribute, so the server will refuse every drop of slot rule(s) {} \
         (refused drops are tried again every {}). Fix: ALTER ROLE {role} REPLICATION; (it also lets the role \
         stream WAL and take a full base backup wherever pg_hba.conf allows it replication connections), \
         or use action = \"log\"",
        rules.join(", "),
        fmt_duration(super::REFUSED_RETRY)
    ))
}

/// The slot section of `plan`: every slot, its values, how each matching
/// slot rule stands, and what each `[protect] slot_name` entry protects.
/// `plan` remembers nothing, so before 17 a slot's inactivity starts at
/// this very read.
pub fn plan(
    policy: &SlotPolicy,
    preflight: &Preflight,
    snapshot: &SlotSnapshot,
    round: &SlotRound,
    dry_run: bool,
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nreplication slots: {}; {} slot rule(s)",
        snapshot.slots.len(),
        policy.rules.len()
    );
    if let Some(w) = drop_privilege_warning(policy, preflight) {
        let _ = writeln!(out, "WARNING: {w}");
    }
    for (i, list) in policy.protect.iter().enumerate() {
        let covered: Vec<String> = snapshot
            .slots
            .iter()
            .filter(|s| list.matches_with(|g| g.pattern.matches(&s.name)))
            .map(|s| quoted(&s.name))
            .collect();
        let _ = writeln!(
            out,
            "[protect] slot_name entry {} [{}]: {}",
            i + 1,
            globs(list),
            if covered.is_empty() {
                "protects no slot now".to_string()
            } else {
                format!(
                    "protects {} slot(s) now: {}",
                    covered.len(),
                    covered.join(", ")
                )
            }
        );
    }
    for (si, slot) in snapshot.slots.iter().enumerate() {
        let inactive = match (slot.active, round.inactive_for.get(si).copied().flatten()) {
            (true, _) => format!("active (pid {})", slot.active_pid.unwrap_or(0)),
            (false, Some(d)) if slot.inactive_since.is_some() => {
                format!("inactive for {} (inactive_since)", fmt_duration(d))
            }
            (false, _) => "inactive (the daemon counts inactive_for from when it first sees it inactive; PostgreSQL before 17 keeps no time)".to_string(),
        };
        let _ = writeln!(
            out,
            "\nslot {} {} database={} plugin={} {}{}",
            quoted(&slot.name),
            token(&slot.slot_type),
            token(slot.database.as_deref().unwrap_or("NULL")),
            token(slot.plugin.as_deref().unwrap_or("NULL")),
            inactive,
            if slot.temporary { " temporary" } else { "" },
        );
        let _ = writeln!(
            out,
            "  restart_lsn={} retained_wal={} wal_status={}",
            slot.restart_lsn
                .map_or_else(|| "NULL".to_string(), |l| l.to_string()),
            slot.retained_wal
                .map_or_else(|| "NULL".to_string(), |b| b.to_string()),
            token(slot.wal_status.as_deref().unwrap_or("NULL")),
        );
        let mut any = false;
        for (s, ri, verdict) in &round.verdicts {
            if *s != si {
                continue;
            }
            any = true;
            let rule = &policy.rules[*ri];
            let what = match verdict {
                SlotVerdict::Protected(p) => format!("never acted on: {p}"),
                SlotVerdict::Active => "kept: active (a drop never cuts off a client)".to_string(),
                SlotVerdict::NotBreached
                    if !slot.active
                        && slot.inactive_since.is_none()
                        && rule.conditions.get("inactive_for").is_some() =>
                {
                    "conditions do not hold yet: inactive_for is unknown before PostgreSQL 17 (the daemon counts \
                     it from when it first sees the slot inactive)"
                        .to_string()
                }
                SlotVerdict::NotBreached => "conditions do not hold".to_string(),
                SlotVerdict::HoldsNothing => {
                    "kept: holds nothing (no restart_lsn, no xmin): dropping it would free nothing".to_string()
                }
                SlotVerdict::Observing { left, evidence } => {
                    format!(
                        "{}; the daemon drops only a slot it has itself watched inactive for {} (the server's \
                         clock alone is not trusted): {} left",
                        evidence_line(evidence),
                        fmt_duration(policy.observe_for),
                        fmt_duration(*left)
                    )
                }
                SlotVerdict::Grace { left, evidence } => {
                    format!(
                        "{}; grace: {} left",
                        evidence_line(evidence),
                        fmt_duration(*left)
                    )
                }
                SlotVerdict::Acts { evidence } => {
                    let deferred = round
                        .deferred
                        .iter()
                        .any(|d| d.decision.slot.name == slot.name && d.decision.rule == rule.name);
                    let now = match (deferred, rule.action, dry_run) {
                        (true, _, _) => "deferred: action budget used up".to_string(),
                        (_, super::SlotAction::Log, _) => "would log now".to_string(),
                        (_, _, true) => "would drop now (dry run: logged only)".to_string(),
                        (_, _, false) => "would drop now".to_string(),
                    };
                    format!("{}; {now}", evidence_line(evidence))
                }
                SlotVerdict::Done => "already acted on".to_string(),
            };
            let _ = writeln!(
                out,
                "  slot_rule {} ({}): {what}",
                quoted(&rule.name),
                rule.action
            );
        }
        if !any {
            let _ = writeln!(out, "  no slot rule matches");
        }
    }
    out
}

/// The slot rules and slot protections as `replwarden check` lists them
/// (nothing when there are none).
pub fn check_summary(policy: &SlotPolicy) -> String {
    let mut out = String::new();
    if policy.rules.is_empty() && policy.protect.is_empty() {
        return out;
    }
    let _ = writeln!(out, "{} slot rule(s):", policy.rules.len());
    for (i, rule) in policy.rules.iter().enumerate() {
        let m = &rule.matchers;
        let who: Vec<String> = [
            ("slot_name", &m.slot_name),
            ("slot_type", &m.slot_type),
            ("database", &m.database),
            ("plugin", &m.plugin),
            ("wal_status", &m.wal_status),
        ]
        .into_iter()
        .filter_map(|(name, list)| Some(format!("{name} in [{}]", globs(list.as_ref()?))))
        .collect();
        let when: Vec<String> = rule
            .conditions
            .iter()
            .map(|(c, limit)| format!("{} > {limit}", c.name))
            .collect();
        let _ = writeln!(
            out,
            "  {}. {}: {} {} when {}{}",
            i + 1,
            token(&rule.name),
            rule.action,
            if who.is_empty() {
                "any slot".to_string()
            } else {
                format!("slots with {}", who.join(" and "))
            },
            when.join(" and "),
            if rule.grace.is_zero() {
                String::new()
            } else {
                format!(" for {}", fmt_duration(rule.grace))
            }
        );
    }
    for (i, list) in policy.protect.iter().enumerate() {
        let _ = writeln!(
            out,
            "slots protected ([protect] slot_name, entry {}): [{}]",
            i + 1,
            globs(list)
        );
    }
    out
}

fn globs(list: &crate::policy::PatternList<crate::policy::Glob>) -> String {
    let include = list.include.iter().map(|g| quoted(&g.text));
    let exclude = list.exclude.iter().map(|g| format!("!{}", quoted(&g.text)));
    include.chain(exclude).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    #[test]
    fn check_lists_slot_rules_and_protections() {
        let config = crate::config::parse(
            std::path::Path::new("s.toml"),
            "[[slot_rule]]\nname = \"abandoned\"\nslot_name = [\"*\", \"!patroni_*\"]\n\
             inactive_for = \"1h\"\nretained_wal = \"20GB\"\ngrace = \"5m\"\naction = \"drop\"\n\
             [protect]\nslot_name = \"barman\"\n",
        )
        .unwrap();
        assert_eq!(
            super::check_summary(&config.policy.slots),
            "1 slot rule(s):\n  1. abandoned: drop slots with slot_name in [\"*\", !\"patroni_*\"] \
             when inactive_for > 1h and retained_wal > 20.0 GiB for 5m\n\
             slots protected ([protect] slot_name, entry 1): [\"barman\"]\n"
        );
        assert_eq!(super::check_summary(&Default::default()), "");
    }
}
