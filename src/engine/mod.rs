//! The decision engine: a pure function from (policy, snapshot, remembered
//! state, now) to decisions. No I/O and no clock reads: `now` is a parameter,
//! so every timing rule is tested with plain `#[test]`s.
//!
//! What it remembers ([`Memory`]) is keyed on [`WalsenderId`](crate::snapshot::WalsenderId) — `(pid,
//! backend_start)` — so nothing carries over to a new process instance, even
//! one that reuses a pid. Memory survives a reload, rule by rule: what a
//! rule that no longer exists, or whose matchers, conditions or grace were
//! edited, remembered is dropped (see `Memory::adopt`). Breach timers stop
//! at an outage ([`Memory::interrupted`]).
//!
//! A round has two passes. First every rule is judged against every
//! walsender it matches, giving candidate actions. Then the safety guards
//! see each candidate in order — first the ones the budget deferred, in the
//! order they were deferred, then the rest — the synchronous quorum guard,
//! the reconnect-loop backoff and the action budget — and either pass it (it
//! becomes a [`Decision`]) or hold it back ([`Held`]); a held candidate is
//! not remembered as done, so it is judged again at the next poll.
//!
//! A decision is remembered only once the caller reports what became of it
//! through [`Memory::record`], and only as the action actually carried out:
//! a decision never reported, or reported [`Delivery::NotAttempted`], is
//! decided again at the next poll and costs no budget or backoff; one
//! carried out in a dry run counts as done only while the dry run lasts.
//!
//! This file holds the round ([`decide`], [`explain`]) and the types it
//! returns; `memory.rs` what is remembered per process instance, rule and
//! client; `checks.rs` the conditions of a rule and the evidence they show;
//! `guards.rs` the quorum, backoff and budget guards; `tests.rs` the unit
//! tests.

mod checks;
mod guards;
mod memory;
#[cfg(test)]
mod tests;

pub use checks::{evidence_line, Evidence};
use checks::{judge, propose, Checks, Stand};
pub use guards::Budget;
use guards::{guard, Pass, Quorum};
pub use memory::{ClientKey, Delivery, Memory};
use memory::{Instance, RuleMemory};

use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, Instant};

use crate::clocks::Measures;
use crate::condition::{Limit, Sample};
use crate::policy::{Action, Policy};
use crate::snapshot::{Snapshot, Walsender};
use crate::units::fmt_duration;

/// Why an action is taken.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cause {
    /// The rule's conditions held for its grace period.
    Breach,
    /// A cancel left the same process instance alive for `escalate_after`.
    Escalation { cancelled_ago: Duration },
    /// The previous signal to this instance failed; this is attempt `attempt`.
    Retry { attempt: u32 },
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cause::Breach => f.write_str("breach"),
            Cause::Escalation { cancelled_ago } => {
                write!(
                    f,
                    "escalation: still alive {} after cancel",
                    fmt_duration(*cancelled_ago)
                )
            }
            Cause::Retry { attempt } => write!(f, "retry: attempt {attempt}"),
        }
    }
}

/// One thing to do.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub rule: String,
    /// The rule's position in the policy it was decided under.
    pub rule_index: usize,
    pub action: Action,
    pub cause: Cause,
    pub walsender: Walsender,
    pub evidence: Vec<Evidence>,
    /// The `now` of the round that decided it.
    pub decided_at: Instant,
}

/// Why a candidate action was held back this round.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HoldReason {
    /// Losing this walsender would leave fewer healthy synchronous standbys
    /// than `synchronous_standby_names` requires.
    SyncQuorum {
        setting: String,
        required: u32,
        /// The healthy synchronous candidates now connected.
        healthy: Vec<String>,
    },
    /// The same client was acted on recently; waiting out the backoff.
    ReconnectBackoff {
        client: ClientKey,
        actions: u32,
        wait_left: Duration,
    },
    /// `[limits] max_actions` per `per` reached.
    Budget { max_actions: u32, per: Duration },
}

impl fmt::Display for HoldReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HoldReason::SyncQuorum { setting, required, healthy } => write!(
                f,
                "held: would break synchronous quorum (synchronous_standby_names = {setting:?} needs {required}; healthy sync candidates: {})",
                if healthy.is_empty() { "none".to_string() } else { healthy.join(", ") }
            ),
            HoldReason::ReconnectBackoff { client, actions, wait_left } => write!(
                f,
                "held: reconnect loop backoff ({client} acted on {actions} time(s); {} left)",
                fmt_duration(*wait_left)
            ),
            HoldReason::Budget { max_actions, per } => {
                write!(f, "deferred: action budget of {max_actions} per {} used up", fmt_duration(*per))
            }
        }
    }
}

/// A candidate action the guards held back.
#[derive(Clone, Debug, PartialEq)]
pub struct Held {
    pub decision: Decision,
    pub reason: HoldReason,
}

/// A client acted on again: the loop an operator must end at its source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReconnectLoop {
    pub client: ClientKey,
    /// Actions on this client so far, this one included.
    pub actions: u32,
    /// The wait before the next action on it.
    pub next_wait: Duration,
}

/// How one rule stands towards one walsender (what `plan` prints).
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// The conditions do not hold; why, per condition.
    Unmet(Vec<String>),
    /// The conditions hold, but not yet for the rule's grace period.
    InGrace { held_for: Duration, grace: Duration },
    /// Acting now (see the matching [`Decision`]).
    Fires(Action),
    /// Would act, but a guard holds it back.
    Held(HoldReason),
    /// Already acted on this instance; nothing more to do.
    Done { action: Action, ago: Duration },
    /// A failed signal was retried as often as allowed.
    GaveUp { action: Action, attempts: u32 },
    /// The walsender matches `[protect]`: no rule acts on it.
    Protected,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Unmet(why) => write!(f, "conditions not met: {}", why.join("; ")),
            Verdict::InGrace { held_for, grace } => write!(
                f,
                "conditions hold for {} of grace {}: would act when they have held for the whole grace",
                fmt_duration(*held_for),
                fmt_duration(*grace)
            ),
            Verdict::Fires(action) => write!(f, "FIRES: {action}"),
            Verdict::Held(reason) => reason.fmt(f),
            Verdict::Done { action, ago } => write!(f, "already acted ({action}, {} ago)", fmt_duration(*ago)),
            Verdict::GaveUp { action, attempts } => {
                write!(f, "gave up: {action} failed {attempts} time(s)")
            }
            Verdict::Protected => f.write_str("protected by [protect]: left alone"),
        }
    }
}

/// The result of one round of deciding.
#[derive(Debug, Default)]
pub struct Round {
    /// What to do now, in order.
    pub decisions: Vec<Decision>,
    /// What the guards held back this round.
    pub held: Vec<Held>,
    /// Clients acted on again this round.
    pub loops: Vec<ReconnectLoop>,
    /// For each walsender (by index in the snapshot), each matching rule (by
    /// index in the policy) and how it stands.
    pub verdicts: Vec<(usize, usize, Verdict)>,
    /// Each walsender's one-clock measurements (by index in the snapshot).
    pub measures: Vec<Measures>,
    /// For each rule (by index in the policy), how many walsenders its
    /// matchers match now, protected ones left out (what
    /// `replwarden_rule_matches` shows).
    pub matches: Vec<u32>,
    /// The earliest moment after `now` at which a timer runs out (a grace
    /// ends, `in_state_for` or `no_progress_for` is reached): polling then,
    /// rather than at the next tick, acts when the rule says, not up to one
    /// interval later.
    pub wake_at: Option<Instant>,
}

/// `in_state_for` and `no_progress_for` hold when strictly exceeded.
const TIMER_SLACK: Duration = Duration::from_millis(1);

/// Lowers `wake_at` to `at` if that is later than `now`; `None` (a moment
/// past the end of the clock) wakes no one.
fn wake(wake_at: &mut Option<Instant>, at: Option<Instant>, now: Instant) {
    if let Some(at) = at.filter(|at| *at > now && wake_at.is_none_or(|w| *at < w)) {
        *wake_at = Some(at);
    }
}

/// `t + a + b`, or `None` past the end of the clock (a duration of years
/// that `check` accepted must not panic).
fn after(t: Instant, a: Duration, b: Duration) -> Option<Instant> {
    t.checked_add(a)?.checked_add(b)
}

/// A candidate action and the verdict slot that tells of it (when explaining).
struct Candidate {
    decision: Decision,
    verdict: Option<usize>,
    /// Its place in the queue of actions the budget deferred, if it is there.
    deferred: Option<u64>,
}

/// Decides what to do about `snapshot` at `now`, updating `memory`.
///
/// Report what became of every decision through [`Memory::record`]: a
/// decision recorded done is not repeated on the same instance (except to
/// escalate a cancel, or to retry a signal recorded failed); one never
/// recorded is decided again at the next poll. `Round::verdicts` is left
/// empty: [`explain`] fills it.
pub fn decide(policy: &Policy, snapshot: &Snapshot, memory: &mut Memory, now: Instant) -> Round {
    run(policy, snapshot, memory, now, false)
}

/// Like [`decide`], and says how every matching rule stands towards every
/// walsender (what `plan` prints).
pub fn explain(policy: &Policy, snapshot: &Snapshot, memory: &mut Memory, now: Instant) -> Round {
    run(policy, snapshot, memory, now, true)
}

fn run(
    policy: &Policy,
    snapshot: &Snapshot,
    memory: &mut Memory,
    now: Instant,
    explain: bool,
) -> Round {
    let since_previous_round = memory.begin_round(policy, now);
    let judging = Judging {
        policy,
        snapshot,
        now,
        explain,
        dry_run: memory.dry_run,
        timers: policy
            .rules
            .iter()
            .map(|r| Timers {
                in_state_for: r.conditions.get("in_state_for").and_then(Limit::time),
                no_progress_for: r.conditions.get("no_progress_for").and_then(Limit::time),
            })
            .collect(),
    };
    let mut round = Round {
        matches: vec![0; policy.rules.len()],
        ..Round::default()
    };
    let mut candidates = Vec::new();
    for (wi, ws) in snapshot.walsenders.iter().enumerate() {
        let (inst, measures) = memory.observe(policy, snapshot, ws, now, since_previous_round);
        round.measures.push(measures);
        judging.instance(wi, ws, inst, &measures, &mut round, &mut candidates);
    }
    memory.end_round();
    pass_guards(policy, snapshot, memory, candidates, &mut round, now);
    round
}

/// What one round judges by: the same for every walsender in it.
struct Judging<'a> {
    policy: &'a Policy,
    snapshot: &'a Snapshot,
    now: Instant,
    explain: bool,
    dry_run: bool,
    /// Each rule's timed conditions, looked up once per round rather than
    /// for every walsender it judges.
    timers: Vec<Timers>,
}

/// The conditions of a rule that run out at a time the engine can wake
/// up for.
struct Timers {
    in_state_for: Option<Duration>,
    no_progress_for: Option<Duration>,
}

impl Judging<'_> {
    /// Judges every rule that matches `ws` (index `wi` in the snapshot), or
    /// still has something pending on it, adding to `round` its verdicts,
    /// match counts and wake-up time, and to `candidates` what it proposes.
    fn instance(
        &self,
        wi: usize,
        ws: &Walsender,
        inst: &mut Instance,
        measures: &Measures,
        round: &mut Round,
        candidates: &mut Vec<Candidate>,
    ) {
        let (policy, now, explain) = (self.policy, self.now, self.explain);
        if inst.protected {
            for &ri in &inst.matches {
                inst.rules[ri] = RuleMemory::default();
                if explain {
                    round.verdicts.push((wi, ri, Verdict::Protected));
                }
            }
            return;
        }
        let in_state = ws
            .state
            .as_ref()
            .map(|_| now.saturating_duration_since(inst.state_since));
        for &ri in &inst.matches {
            round.matches[ri] += 1;
        }
        let sample = Sample {
            measures: *measures,
            in_state,
            current_lsn: self.snapshot.current_lsn,
            retained_wal: ws.retained_wal,
        };
        // Judges rule `ri`; `matched`: whether its matchers match (if not,
        // it has a cancel to escalate or a signal to retry on this instance).
        let mut judge_rule = |inst: &mut Instance, ri: usize, matched: bool| {
            let rule = &policy.rules[ri];
            let checks = Checks {
                conditions: &rule.conditions,
                sample: &sample,
            };
            // A rule on who the walsender is (no conditions) has held since
            // the process started, or since it entered the state it
            // matches; conditions are only known from when a poll saw them.
            let (born, state_since) = (inst.born, inst.state_since);
            let held_from = || match (rule.conditions.is_empty(), &rule.matchers) {
                (true, m) if m.sync_state.is_none() && m.state.is_none() => born,
                (true, m) if m.sync_state.is_none() => state_since,
                _ => now,
            };
            let timers = &self.timers[ri];
            if let Some(limit) = timers.in_state_for {
                wake(
                    &mut round.wake_at,
                    after(inst.state_since, limit, TIMER_SLACK),
                    now,
                );
            }
            if let Some(limit) = timers.no_progress_for {
                wake(
                    &mut round.wake_at,
                    after(inst.observed.progress_since(), limit, TIMER_SLACK),
                    now,
                );
            }
            let stand = judge(
                rule,
                &checks,
                &mut inst.rules[ri],
                (held_from, now),
                self.dry_run,
            );
            if !matched {
                inst.rules[ri].breach_since = None;
            }
            if let Some(since) = inst.rules[ri]
                .breach_since
                .filter(|_| inst.rules[ri].acted.is_none())
            {
                // A grace still running: poll again when it ends.
                wake(
                    &mut round.wake_at,
                    after(since, rule.grace, Duration::ZERO),
                    now,
                );
            }
            if let Stand::Fires(action, cause) = &stand {
                candidates.push(Candidate {
                    decision: propose(rule, ri, ws, &checks, (*action, cause.clone()), now),
                    verdict: explain.then_some(round.verdicts.len()),
                    deferred: inst.rules[ri].deferred,
                });
            }
            if explain {
                round.verdicts.push((wi, ri, stand.verdict(&checks)));
            }
        };
        // The rules that match, then those that no longer do but still have
        // something pending on this instance. By index, not by iterator:
        // judging a rule changes the instance. (`pending` first: it is
        // rarely true and cheap, the search of the matches is not.)
        for i in 0..inst.matches.len() {
            let ri = inst.matches[i];
            judge_rule(inst, ri, true);
        }
        if !inst.acted_on {
            // Nothing recorded done on it: nothing can be pending.
            return;
        }
        for ri in 0..policy.rules.len() {
            if inst.rules[ri].pending(&policy.rules[ri], self.dry_run)
                && !inst.matches.contains(&ri)
            {
                judge_rule(inst, ri, false);
            }
        }
    }
}

/// The second pass: the guards see each candidate in order, the ones the
/// budget deferred first (in the order they were deferred), and either pass
/// it into `round.decisions` or hold it back into `round.held`.
fn pass_guards(
    policy: &Policy,
    snapshot: &Snapshot,
    memory: &mut Memory,
    mut candidates: Vec<Candidate>,
    round: &mut Round,
    now: Instant,
) {
    candidates.sort_by_key(|c| Budget::order(c.deferred));
    let mut quorum = Quorum::new(policy, snapshot, &round.measures);
    let mut pass = Pass {
        spent: 0,
        clients: HashMap::new(),
    };
    for Candidate {
        decision, verdict, ..
    } in candidates
    {
        let reason = guard(policy, &quorum, memory, &pass, &decision, now);
        if let Some(reason) = reason {
            if let Some(v) = verdict {
                round.verdicts[v].2 = Verdict::Held(reason.clone());
            }
            if matches!(reason, HoldReason::Budget { .. }) {
                let place = memory.budget.defer();
                if let Some(mem) = memory.rule_memory(&decision) {
                    mem.deferred.get_or_insert(place);
                }
            }
            round.held.push(Held { decision, reason });
            continue;
        }
        pass.spend(memory, &decision, &policy.limits, &mut round.loops);
        if decision.action != Action::Log {
            quorum.lose(&decision.walsender);
        }
        round.decisions.push(decision);
    }
}
