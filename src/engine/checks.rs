//! Judging one rule against one walsender: its conditions, the evidence
//! they show, and where the rule stands.

use std::fmt;
use std::time::{Duration, Instant};

use crate::basebackup::{backup_text, Backup};
use crate::condition::{Limit, Measured, Sample};
use crate::policy::{Action, Conditions, Glob, PatternList, Rule};
use crate::snapshot::Walsender;
use crate::units::fmt_duration;

use super::memory::RuleMemory;
use super::{Cause, Decision, Verdict};

/// One measured fact that made a rule fire, e.g. `replay_lag=6m (> 5m)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Evidence {
    pub name: &'static str,
    pub measured: String,
    /// `> 5m`, or `matches rogue_*` for a matcher.
    pub against: String,
}

impl fmt::Display for Evidence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={} ({})", self.name, self.measured, self.against)
    }
}

/// Joins evidence for one log field: `replay_lag=6m (> 5m), replay_lag_bytes=2.0 GiB (> 1.0 GiB)`.
pub fn evidence_line(evidence: &[Evidence]) -> String {
    evidence
        .iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Where one rule stands towards one instance, as [`judge`] finds it. A few
/// words, not a [`Verdict`] and a [`Decision`]: nearly every (walsender,
/// rule) pair of a poll ends [`Stand::Unmet`], and returning those two
/// (over a hundred bytes, copied twice) from every call was 40 % of the
/// poll in `cargo bench --bench engine`. The words
/// ([`Stand::verdict`]) and the decision ([`propose`]) are made only when
/// wanted.
#[derive(Debug)]
pub(super) enum Stand {
    Unmet,
    InGrace {
        held_for: Duration,
        grace: Duration,
    },
    /// Proposes `action` (not yet decided: the guards see it first).
    Fires(Action, Cause),
    Done {
        action: Action,
        ago: Duration,
    },
    GaveUp {
        action: Action,
        attempts: u32,
    },
}

impl Stand {
    /// Says where the rule stands (what `plan` prints).
    pub(super) fn verdict(&self, checks: &Checks<'_>) -> Verdict {
        match *self {
            Stand::Unmet => Verdict::Unmet(checks.unmet()),
            Stand::InGrace { held_for, grace } => Verdict::InGrace { held_for, grace },
            Stand::Fires(action, _) => Verdict::Fires(action),
            Stand::Done { action, ago } => Verdict::Done { action, ago },
            Stand::GaveUp { action, attempts } => Verdict::GaveUp { action, attempts },
        }
    }
}

/// Updates one rule's memory for one instance and says where the rule
/// stands.
pub(super) fn judge(
    rule: &Rule,
    checks: &Checks<'_>,
    mem: &mut RuleMemory,
    (held_from, now): (impl FnOnce() -> Instant, Instant),
    dry_run: bool,
) -> Stand {
    // What a dry run only simulated is not done once enforcing.
    if let Some(acted) = mem.acted.filter(|a| !a.simulated || dry_run) {
        // The breach timer runs on meanwhile, so that an edit of the action
        // or the end of a dry run acts only on conditions that held
        // without a break.
        if checks.hold() {
            mem.breach_since.get_or_insert_with(held_from);
        } else {
            mem.breach_since = None;
        }
        let ago = now.saturating_duration_since(acted.at);
        if acted.failed {
            let cause = Cause::Retry {
                attempt: acted.attempts + 1,
            };
            return Stand::Fires(acted.action, cause);
        }
        if acted.gave_up {
            return Stand::GaveUp {
                action: acted.action,
                attempts: acted.attempts,
            };
        }
        return match (acted.action, rule.escalate_after) {
            (Action::Cancel, Some(after)) if ago >= after => {
                Stand::Fires(Action::Terminate, Cause::Escalation { cancelled_ago: ago })
            }
            _ => Stand::Done {
                action: acted.action,
                ago,
            },
        };
    }
    if !checks.hold() {
        mem.breach_since = None;
        return Stand::Unmet;
    }
    let since = *mem.breach_since.get_or_insert_with(held_from);
    let held_for = now.saturating_duration_since(since);
    if held_for < rule.grace {
        return Stand::InGrace {
            held_for,
            grace: rule.grace,
        };
    }
    Stand::Fires(rule.action, Cause::Breach)
}

/// The action `rule` (at `rule_index` in the policy) proposes on `ws`, with
/// the evidence for it.
pub(super) fn propose(
    rule: &Rule,
    rule_index: usize,
    ws: &Walsender,
    checks: &Checks<'_>,
    (action, cause): (Action, Cause),
    now: Instant,
) -> Decision {
    let evidence = if rule.conditions.is_empty() {
        matcher_evidence(rule, ws)
    } else {
        checks.evidence()
    };
    Decision {
        rule: rule.name.clone(),
        rule_index,
        action,
        cause,
        walsender: ws.clone(),
        evidence,
        decided_at: now,
    }
}

/// For a block rule (no conditions), the evidence is what matched.
pub(super) fn matcher_evidence(rule: &Rule, ws: &Walsender) -> Vec<Evidence> {
    let m = &rule.matchers;
    let mut out = Vec::new();
    let mut push = |name, list: &Option<PatternList<Glob>>, value: Option<&str>| {
        if let Some(list) = list {
            out.push(Evidence {
                name,
                measured: value.unwrap_or("NULL").to_string(),
                against: format!("matches {list}"),
            });
        }
    };
    push(
        "application_name",
        &m.application_name,
        Some(&ws.application_name),
    );
    push("user", &m.user, ws.user.as_deref());
    push("state", &m.state, ws.state_text());
    push("sync_state", &m.sync_state, ws.sync_state.as_deref());
    if m.client_addr.is_some() {
        out.push(Evidence {
            name: "client_addr",
            measured: ws.client_addr.to_string(),
            against: "matches client_addr".to_string(),
        });
    }
    out
}

/// One condition, evaluated: whether it holds, and what it saw.
#[derive(Clone, Copy, Debug)]
struct Check {
    name: &'static str,
    holds: bool,
    measured: Measured,
    limit: Limit,
}

/// The conditions of one rule for one walsender. Each is evaluated on
/// demand, without allocating, stopping at the first that fails when only
/// the answer is wanted; the words for the log or the plan are made only
/// when needed.
pub(super) struct Checks<'a> {
    pub(super) conditions: &'a Conditions,
    /// What the walsender shows this round.
    pub(super) sample: &'a Sample,
}

impl Checks<'_> {
    /// Calls `visit` with each condition of the rule, in table order,
    /// until it returns false.
    fn each(&self, mut visit: impl FnMut(Check) -> bool) {
        for (condition, limit) in self.conditions.iter() {
            let reading = (condition.read)(self.sample, limit);
            let check = Check {
                name: condition.name,
                holds: reading.holds,
                measured: reading.measured,
                limit,
            };
            if !visit(check) {
                return;
            }
        }
    }

    pub(super) fn hold(&self) -> bool {
        let mut all = true;
        self.each(|c| {
            all = c.holds;
            all
        });
        all
    }

    pub(super) fn evidence(&self) -> Vec<Evidence> {
        let mut out = Vec::new();
        self.each(|c| {
            out.push(match (c.measured, c.limit) {
                (
                    Measured::Stalled {
                        stalled,
                        flush,
                        current,
                    },
                    Limit::Time(limit),
                ) => Evidence {
                    name: c.name,
                    measured: format!(
                        "{} at {flush} while server at {current}",
                        fmt_duration(stalled)
                    ),
                    against: format!(">= {}", fmt_duration(limit)),
                },
                (Measured::Backup { backup, stalled }, Limit::Time(limit)) => Evidence {
                    name: c.name,
                    measured: backup_text(backup, stalled),
                    against: format!(">= {}", fmt_duration(limit)),
                },
                (measured, limit) => Evidence {
                    name: c.name,
                    measured: measured.to_string(),
                    against: format!("> {limit}"),
                },
            });
            true
        });
        out
    }

    pub(super) fn unmet(&self) -> Vec<String> {
        let mut out = Vec::new();
        self.each(|c| {
            if !c.holds {
                out.push(match (c.measured, c.limit) {
                    (Measured::Stalled { stalled, flush, .. }, Limit::Time(limit)) => format!(
                        "no_progress_for: flush {flush} stalled {} < {}",
                        fmt_duration(stalled),
                        fmt_duration(limit)
                    ),
                    (Measured::Backup { backup, stalled }, Limit::Time(limit)) => match backup {
                        Backup::Progress { phase, .. } if phase.judged() => format!(
                            "no_progress_for: {} < {}",
                            backup_text(backup, stalled),
                            fmt_duration(limit)
                        ),
                        _ => format!("no_progress_for: {}", backup_text(backup, stalled)),
                    },
                    (Measured::CaughtUp, _) => {
                        "no_progress_for: flushed all the server has".to_string()
                    }
                    (Measured::Null(why), _) if c.name == "no_progress_for" => {
                        format!("no_progress_for: flush_lsn is NULL ({why})")
                    }
                    (Measured::Null(why), _) => format!("{} is NULL ({why})", c.name),
                    (Measured::NotJudged(shown, why), _) => {
                        format!("{} {} ({why})", c.name, fmt_duration(shown))
                    }
                    (measured, limit) => {
                        format!("{} {measured} <= {limit}", c.name)
                    }
                });
            }
            true
        });
        out
    }
}
