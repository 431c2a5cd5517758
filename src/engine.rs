//! The decision engine: a pure function from (policy, snapshot, remembered
//! state, now) to decisions. No I/O and no clock reads: `now` is a parameter,
//! so every timing rule is tested with plain `#[test]`s.
//!
//! What it remembers ([`Memory`]) is keyed on [`WalsenderId`] — `(pid,
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

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

use crate::clocks::{self, LagKind, Measures, Observed, TimeLag};
use crate::policy::{Action, Conditions, Glob, Limits, PatternList, Policy, Rule};
use crate::snapshot::{Snapshot, WalState, Walsender, WalsenderId};
use crate::syncrep;
use crate::units::{fmt_duration, ByteSize, Lsn};

/// What the engine remembers between polls.
#[derive(Debug, Default)]
pub struct Memory {
    instances: HashMap<WalsenderId, Instance>,
    /// When the cancels/terminates of the current budget window were decided.
    recent: VecDeque<Instant>,
    /// Clients acted on, for reconnect-loop backoff.
    clients: HashMap<ClientKey, ClientHistory>,
    /// The policy generation the per-instance vectors are laid out for, and
    /// its rule names in order with what tells an edit.
    generation: Option<u64>,
    layout: Vec<(String, RuleKey)>,
    /// Counts rounds; an instance not seen in the current one is gone.
    round: u64,
    /// When the previous round ran: a walsender it did not see is younger.
    last_round_at: Option<Instant>,
    /// Whether decisions are carried out in a dry run (see
    /// [`Memory::set_dry_run`]): a simulated action counts as done only then.
    dry_run: bool,
    /// Numbers the candidates the budget defers, so they run in that order.
    deferrals: u64,
}

/// Per process instance.
#[derive(Debug)]
struct Instance {
    /// When the process started, on the daemon's clock (`now` minus its age
    /// when first seen).
    born: Instant,
    /// The state last seen and since when it has been seen without a break
    /// (PostgreSQL keeps no state-change time; every walsender starts in
    /// `startup`, so a first sight in `startup` dates from its birth).
    state: Option<WalState>,
    state_since: Instant,
    /// Its feedback across polls: replies, progress, first streaming.
    observed: Observed,
    /// The round that last saw it.
    seen: u64,
    /// When it was first seen: an instance first seen after its client was
    /// acted on is a reconnect.
    first_seen: Instant,
    /// Per rule, in policy order.
    rules: Vec<RuleMemory>,
    /// The rules whose matchers match it (by index), and whether
    /// `[protect]` does: worked out again only when the policy or this
    /// instance's state or sync_state changes (its name, user and address
    /// never do).
    matches: Vec<usize>,
    protected: bool,
    matched_on: Option<(Option<WalState>, Option<String>)>,
}

#[derive(Clone, Copy, Debug, Default)]
struct RuleMemory {
    /// When the rule's conditions started holding without a break.
    breach_since: Option<Instant>,
    /// What this rule last did to this instance. Kept when the rule stops
    /// matching (a cancelled walsender falls back to `startup`): the
    /// escalation clock and the retries belong to the instance and the rule.
    acted: Option<Acted>,
    /// When the budget deferred this rule's action on this instance, its
    /// place in the queue of deferred actions.
    deferred: Option<u64>,
}

impl RuleMemory {
    /// Something is still to be done even if the rule no longer matches: a
    /// failed signal to retry, or a cancel to escalate.
    fn pending(&self, rule: &Rule, dry_run: bool) -> bool {
        self.acted.is_some_and(|a| {
            (!a.simulated || dry_run)
                && !a.gave_up
                && (a.failed || (a.action == Action::Cancel && rule.escalate_after.is_some()))
        })
    }
}

#[derive(Clone, Copy, Debug)]
struct Acted {
    action: Action,
    at: Instant,
    /// Signals sent for this action so far (1 + retries).
    attempts: u32,
    /// The last attempt failed and may be retried.
    failed: bool,
    /// The last attempt failed and there are no retries left.
    gave_up: bool,
    /// Only simulated, in a dry run: done while the dry run lasts.
    simulated: bool,
}

/// A client as an operator would block it: the same application, address
/// and role, whatever process instance it comes back as.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ClientKey {
    pub application_name: String,
    pub client_addr: String,
    pub user: String,
}

impl ClientKey {
    fn of(ws: &Walsender) -> ClientKey {
        ClientKey {
            application_name: ws.application_name.clone(),
            client_addr: ws.client_addr.to_string(),
            user: ws.user.clone().unwrap_or_default(),
        }
    }
}

impl fmt::Display for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} from {} as {}",
            self.application_name, self.client_addr, self.user
        )
    }
}

#[derive(Clone, Copy, Debug)]
struct ClientHistory {
    /// Actions on distinct instances, each first seen after the one before.
    actions: u32,
    /// When the last of them was decided.
    last: Instant,
}

/// The client's history once `d` is carried out on an instance first seen
/// at `first_seen`, or `None` when it does not change: only an action on a
/// process instance that appeared after the client's last action counts
/// (a reconnect); another live connection of the same client, or a second
/// rule on the same instance, is no loop.
fn charge(
    history: Option<&ClientHistory>,
    d: &Decision,
    first_seen: Option<Instant>,
) -> Option<ClientHistory> {
    if d.action == Action::Log || d.cause != Cause::Breach {
        return None;
    }
    match history {
        None => Some(ClientHistory {
            actions: 1,
            last: d.decided_at,
        }),
        Some(h) if first_seen.is_some_and(|f| f > h.last) => Some(ClientHistory {
            actions: h.actions.saturating_add(1),
            last: d.decided_at,
        }),
        Some(_) => None,
    }
}

/// The wait before acting on a client again after its `actions`-th action:
/// `reconnect_backoff` doubled per action, capped.
fn backoff(limits: &Limits, actions: u32) -> Duration {
    let factor = 1u32
        .checked_shl(actions.saturating_sub(1))
        .unwrap_or(u32::MAX);
    limits
        .reconnect_backoff
        .saturating_mul(factor)
        .min(limits.reconnect_backoff_max)
}

/// How a decision went, as far as the engine cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// Carried out (signalled, exited, already gone, logged).
    Done,
    /// Only simulated, in a dry run: done while the dry run lasts; once
    /// enforcing, the rule acts for real.
    DryRun,
    /// Failed in a way worth retrying at the next poll.
    Failed,
    /// Failed in a way no retry can fix (refused for lack of privilege).
    Final,
    /// Never tried (the connection was lost before its turn): nothing is
    /// remembered and nothing charged, so it is decided again at the next
    /// poll.
    NotAttempted,
}

impl Memory {
    /// How many process instances are remembered.
    pub fn len(&self) -> usize {
        self.instances.len()
    }

    pub fn is_empty(&self) -> bool {
        self.instances.is_empty()
    }

    /// Says whether decisions are carried out in a dry run. Call it before
    /// each [`decide`]: what was only simulated in a dry run is not done once
    /// enforcing (the rule then acts on walsenders already judged).
    pub fn set_dry_run(&mut self, dry_run: bool) {
        self.dry_run = dry_run;
    }

    /// Forgets every breach timer: the server could not be seen (connection
    /// lost, a poll failed, columns hidden), so no condition is known to
    /// have held without a break. After an outage each condition must be
    /// seen to hold again, for its whole grace, before a rule acts.
    pub fn interrupted(&mut self) {
        for inst in self.instances.values_mut() {
            for r in &mut inst.rules {
                r.breach_since = None;
            }
        }
    }

    /// Records what became of a decision: only then is it remembered as
    /// done, charged to the budget and to its client's reconnect backoff.
    /// Returns the number of attempts when a failed signal has used up its
    /// retries (report it: it will not be tried again on this instance).
    pub fn record(
        &mut self,
        decision: &Decision,
        delivery: Delivery,
        limits: &Limits,
    ) -> Option<u32> {
        if delivery == Delivery::NotAttempted {
            // Nothing changes, except that a dry run's simulation of it is
            // superseded: back in a dry run, it is simulated (logged) again.
            if let Some(mem) = self.rule_memory(decision) {
                mem.acted = mem.acted.filter(|a| !a.simulated);
            }
            return None;
        }
        let first_seen = self
            .instances
            .get(&decision.walsender.id)
            .map(|i| i.first_seen);
        let mem = self.rule_memory(decision)?;
        let attempts = match decision.cause {
            Cause::Retry { attempt } => attempt,
            _ => 1,
        };
        let failed = delivery == Delivery::Failed && attempts <= limits.max_retries;
        // A refusal (`Final`) is done: no retry can fix it.
        let gave_up = delivery == Delivery::Failed && !failed;
        mem.acted = Some(Acted {
            action: decision.action,
            at: decision.decided_at,
            attempts,
            failed,
            gave_up,
            simulated: delivery == Delivery::DryRun,
        });
        mem.deferred = None;
        if decision.action != Action::Log {
            self.recent.push_back(decision.decided_at);
            let key = ClientKey::of(&decision.walsender);
            if let Some(h) = charge(self.clients.get(&key), decision, first_seen) {
                self.clients.insert(key, h);
            }
        }
        gave_up.then_some(attempts)
    }

    fn rule_memory(&mut self, d: &Decision) -> Option<&mut RuleMemory> {
        if self.layout.get(d.rule_index).map(|(n, _)| n) != Some(&d.rule) {
            return None;
        }
        self.instances
            .get_mut(&d.walsender.id)?
            .rules
            .get_mut(d.rule_index)
    }

    /// Lays the per-instance vectors out for `policy` when it is not the one
    /// they were made for: a rule's memory follows its name; matches are
    /// worked out again. A rule edited under the same name keeps only what
    /// the edit leaves true: a change to its matchers, conditions or grace
    /// starts it over (its grace counts from when the new conditions are
    /// seen to hold); a change of action keeps its breach timer but forgets
    /// what it did (done is only the action carried out); a change of
    /// `escalate_after` alone keeps everything.
    fn adopt(&mut self, policy: &Policy) {
        if self.generation == Some(policy.generation) {
            return;
        }
        let old: HashMap<&str, (usize, &RuleKey)> = self
            .layout
            .iter()
            .enumerate()
            .map(|(i, (n, k))| (n.as_str(), (i, k)))
            .collect();
        let keys: Vec<RuleKey> = policy.rules.iter().map(RuleKey::of).collect();
        let moves: Vec<Option<(usize, bool, bool)>> = policy
            .rules
            .iter()
            .zip(&keys)
            .map(|(r, new)| {
                let (i, was) = *old.get(r.name.as_str())?;
                Some((i, was.timer == new.timer, was.action == new.action))
            })
            .collect();
        for inst in self.instances.values_mut() {
            inst.rules = moves
                .iter()
                .map(|m| match *m {
                    Some((i, true, same_action)) => {
                        let mut kept = inst.rules.get(i).copied().unwrap_or_default();
                        if !same_action {
                            kept.acted = None;
                        }
                        kept
                    }
                    _ => RuleMemory::default(),
                })
                .collect();
            inst.matched_on = None;
        }
        self.layout = policy
            .rules
            .iter()
            .map(|r| r.name.clone())
            .zip(keys)
            .collect();
        self.generation = Some(policy.generation);
    }
}

/// What a reload compares to tell an edited rule from an unchanged one.
#[derive(Debug, PartialEq, Eq)]
struct RuleKey {
    /// Matchers, conditions and grace: what its breach timer measures.
    timer: String,
    action: Action,
}

impl RuleKey {
    fn of(rule: &Rule) -> RuleKey {
        RuleKey {
            timer: format!("{:?} {:?} {:?}", rule.matchers, rule.conditions, rule.grace),
            action: rule.action,
        }
    }
}

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
    memory.adopt(policy);
    memory.round += 1;
    let this_round = memory.round;
    let limits = &policy.limits;
    let forget_after = limits.reconnect_backoff_max.saturating_mul(2);
    memory
        .clients
        .retain(|_, h| now.saturating_duration_since(h.last) <= forget_after);
    while memory
        .recent
        .front()
        .is_some_and(|t| now.saturating_duration_since(*t) >= limits.per)
    {
        memory.recent.pop_front();
    }

    let since_previous_round = memory
        .last_round_at
        .replace(now)
        .map(|at| now.saturating_duration_since(at));
    let mut round = Round {
        matches: vec![0; policy.rules.len()],
        ..Round::default()
    };
    let mut candidates = Vec::new();
    for (wi, ws) in snapshot.walsenders.iter().enumerate() {
        let inst = memory.instances.entry(ws.id).or_insert_with(|| {
            let age = clocks::first_sight_age(ws.age, since_previous_round);
            let born = now.checked_sub(age).unwrap_or(now);
            Instance {
                first_seen: now,
                born,
                state: ws.state.clone(),
                state_since: if ws.state == Some(WalState::Startup) {
                    born
                } else {
                    now
                },
                observed: Observed::new(now),
                seen: this_round,
                rules: vec![RuleMemory::default(); policy.rules.len()],
                matches: Vec::new(),
                protected: false,
                matched_on: None,
            }
        });
        inst.seen = this_round;
        if inst.state != ws.state {
            inst.state = ws.state.clone();
            inst.state_since = now;
        }
        let measures = inst.observed.observe(ws, snapshot, now);
        round.measures.push(measures);
        let current = (ws.state.as_ref(), ws.sync_state.as_ref());
        if inst
            .matched_on
            .as_ref()
            .map(|(a, b)| (a.as_ref(), b.as_ref()))
            != Some(current)
        {
            inst.matches.clear();
            inst.protected = policy.protects(ws);
            for (ri, rule) in policy.rules.iter().enumerate() {
                if rule.matchers.matches(ws) {
                    inst.matches.push(ri);
                } else {
                    // A rule that stops matching starts its grace over if it
                    // matches again; what it did to this instance stays.
                    inst.rules[ri].breach_since = None;
                }
            }
            inst.matched_on = Some((ws.state.clone(), ws.sync_state.clone()));
        }
        if inst.protected {
            for &ri in &inst.matches {
                inst.rules[ri] = RuleMemory::default();
                if explain {
                    round.verdicts.push((wi, ri, Verdict::Protected));
                }
            }
            continue;
        }
        let in_state = ws
            .state
            .as_ref()
            .map(|_| now.saturating_duration_since(inst.state_since));
        for &ri in &inst.matches {
            round.matches[ri] += 1;
        }
        // The rules that match, and those that no longer do but still have
        // a cancel to escalate or a signal to retry on this instance.
        let unmatched_pending = (0..policy.rules.len()).filter(|ri| {
            !inst.matches.contains(ri)
                && inst.rules[*ri].pending(&policy.rules[*ri], memory.dry_run)
        });
        let judged: Vec<usize> = inst
            .matches
            .iter()
            .copied()
            .chain(unmatched_pending)
            .collect();
        for ri in judged {
            let rule = &policy.rules[ri];
            let checks = Checks {
                conditions: &rule.conditions,
                ws,
                current_lsn: snapshot.current_lsn,
                in_state,
                measures: &measures,
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
            if let Some(limit) = rule.conditions.in_state_for {
                wake(
                    &mut round.wake_at,
                    after(inst.state_since, limit, TIMER_SLACK),
                    now,
                );
            }
            if let Some(limit) = rule.conditions.no_progress_for {
                wake(
                    &mut round.wake_at,
                    after(inst.observed.progress_since(), limit, TIMER_SLACK),
                    now,
                );
            }
            let (verdict, candidate) = judge(
                rule,
                ri,
                ws,
                &checks,
                &mut inst.rules[ri],
                (held_from, now),
                (explain, memory.dry_run),
            );
            if !inst.matches.contains(&ri) {
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
            if let Some(decision) = candidate {
                candidates.push(Candidate {
                    decision: *decision,
                    verdict: explain.then_some(round.verdicts.len()),
                    deferred: inst.rules[ri].deferred,
                });
            }
            if let Some(verdict) = verdict.filter(|_| explain) {
                round.verdicts.push((wi, ri, verdict));
            }
        }
    }
    // Forget instances that are gone: a new process, even with the same pid,
    // starts with a clean slate.
    memory.instances.retain(|_, inst| inst.seen == this_round);

    // Actions the budget deferred go first, in the order they were deferred.
    candidates.sort_by_key(|c| c.deferred.map_or((1, 0), |seq| (0, seq)));
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
                let seq = memory.deferrals + 1;
                if let Some(mem) = memory.rule_memory(&decision) {
                    if mem.deferred.is_none() {
                        mem.deferred = Some(seq);
                        memory.deferrals = seq;
                    }
                }
            }
            round.held.push(Held { decision, reason });
            continue;
        }
        pass.spend(memory, &decision, limits, &mut round.loops);
        if decision.action != Action::Log {
            quorum.lose(&decision.walsender);
        }
        round.decisions.push(decision);
    }
    round
}

/// What the decisions passed so far in this round will cost once carried
/// out (they are charged for real only when recorded), so that the guards
/// count them for the candidates after them.
struct Pass {
    /// Cancels/terminates passed this round.
    spent: usize,
    /// Client histories as they will be after this round's decisions.
    clients: HashMap<ClientKey, ClientHistory>,
}

impl Pass {
    fn history<'a>(&'a self, memory: &'a Memory, client: &ClientKey) -> Option<&'a ClientHistory> {
        self.clients
            .get(client)
            .or_else(|| memory.clients.get(client))
    }

    /// Counts `d` as if carried out; tells of a reconnect loop.
    fn spend(
        &mut self,
        memory: &Memory,
        d: &Decision,
        limits: &Limits,
        loops: &mut Vec<ReconnectLoop>,
    ) {
        if d.action == Action::Log {
            return;
        }
        self.spent += 1;
        let client = ClientKey::of(&d.walsender);
        let first_seen = memory.instances.get(&d.walsender.id).map(|i| i.first_seen);
        if let Some(h) = charge(self.history(memory, &client), d, first_seen) {
            if h.actions >= 2 {
                loops.push(ReconnectLoop {
                    client: client.clone(),
                    actions: h.actions,
                    next_wait: backoff(limits, h.actions),
                });
            }
            self.clients.insert(client, h);
        }
    }
}

/// The first guard that holds `d` back, if any. `log` actions signal
/// nothing and pass every guard. The reconnect backoff holds only an action
/// on a process instance that appeared after its client's last action.
fn guard(
    policy: &Policy,
    quorum: &Quorum,
    memory: &Memory,
    pass: &Pass,
    d: &Decision,
    now: Instant,
) -> Option<HoldReason> {
    if d.action == Action::Log {
        return None;
    }
    if let Some(reason) = quorum.would_break(&d.walsender) {
        return Some(reason);
    }
    let limits = &policy.limits;
    if d.cause == Cause::Breach {
        let client = ClientKey::of(&d.walsender);
        let first_seen = memory.instances.get(&d.walsender.id).map(|i| i.first_seen);
        let history = pass.history(memory, &client);
        if let Some(h) = history.filter(|h| first_seen.is_some_and(|f| f > h.last)) {
            let wait = backoff(limits, h.actions);
            let since = now.saturating_duration_since(h.last);
            if since < wait {
                return Some(HoldReason::ReconnectBackoff {
                    client,
                    actions: h.actions,
                    wait_left: wait - since,
                });
            }
        }
    }
    let spent = memory.recent.len().saturating_add(pass.spent);
    (spent >= limits.max_actions as usize).then_some(HoldReason::Budget {
        max_actions: limits.max_actions,
        per: limits.per,
    })
}

/// The synchronous standbys the server can count on right now.
struct Quorum {
    /// `None`: no guard (disabled, no synchronous replication, or a standby).
    spec: Option<(String, u32)>,
    /// Healthy synchronous candidates, by pid, with their names.
    healthy: Vec<(i32, String)>,
}

impl Quorum {
    fn new(policy: &Policy, snapshot: &Snapshot, measures: &[Measures]) -> Quorum {
        let setting = snapshot.synchronous_standby_names.trim();
        if !policy.sync_guard.enabled || snapshot.in_recovery || setting.is_empty() {
            return Quorum {
                spec: None,
                healthy: Vec::new(),
            };
        }
        // A setting we cannot parse still names sync standbys: guard them all.
        let required = match syncrep::parse(setting) {
            Ok(Some(spec)) => spec.num_sync,
            Ok(None) => 0,
            Err(_) => u32::MAX,
        };
        let within = policy.sync_guard.healthy_reply_within;
        // Healthy: replied within `healthy_reply_within` by the daemon's
        // clock (reply_time seen changing), never by two hosts' clocks.
        let healthy = snapshot
            .walsenders
            .iter()
            .zip(measures)
            .filter(|(_, m)| m.silence.is_some_and(|s| s <= within))
            .map(|(w, _)| w)
            .filter(|w| {
                matches!(
                    w.sync_state.as_deref(),
                    Some("sync" | "potential" | "quorum")
                )
            })
            .filter(|w| w.state == Some(WalState::Streaming))
            .map(|w| (w.id.pid, w.application_name.clone()))
            .collect();
        Quorum {
            spec: Some((setting.to_string(), required)),
            healthy,
        }
    }

    fn would_break(&self, ws: &Walsender) -> Option<HoldReason> {
        let (setting, required) = self.spec.as_ref()?;
        let counts = self.healthy.iter().any(|(pid, _)| *pid == ws.id.pid);
        (counts && (self.healthy.len() as u64) <= u64::from(*required)).then(|| {
            HoldReason::SyncQuorum {
                setting: setting.clone(),
                required: *required,
                healthy: self.healthy.iter().map(|(_, n)| n.clone()).collect(),
            }
        })
    }

    /// A cancel or terminate passed this round takes `ws` out of the count.
    fn lose(&mut self, ws: &Walsender) {
        self.healthy.retain(|(pid, _)| *pid != ws.id.pid);
    }
}

/// Updates one rule's memory for one instance, proposes the action it
/// calls for (not yet decided: the guards see it first) and, when
/// explaining, says where it stands.
fn judge(
    rule: &Rule,
    rule_index: usize,
    ws: &Walsender,
    checks: &Checks<'_>,
    mem: &mut RuleMemory,
    (held_from, now): (impl FnOnce() -> Instant, Instant),
    (explain, dry_run): (bool, bool),
) -> (Option<Verdict>, Option<Box<Decision>>) {
    // Boxed: most calls propose nothing, and a bare Decision (a whole
    // Walsender) made every call move hundreds of bytes.
    let propose = |action, cause, evidence| {
        Box::new(Decision {
            rule: rule.name.clone(),
            rule_index,
            action,
            cause,
            walsender: ws.clone(),
            evidence,
            decided_at: now,
        })
    };
    let evidence = || {
        if rule.conditions.is_empty() {
            matcher_evidence(rule, ws)
        } else {
            checks.evidence()
        }
    };
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
            return (
                Some(Verdict::Fires(acted.action)),
                Some(propose(acted.action, cause, evidence())),
            );
        }
        if acted.gave_up {
            let verdict = Verdict::GaveUp {
                action: acted.action,
                attempts: acted.attempts,
            };
            return (explain.then_some(verdict), None);
        }
        return match (acted.action, rule.escalate_after) {
            (Action::Cancel, Some(after)) if ago >= after => {
                let cause = Cause::Escalation { cancelled_ago: ago };
                let d = propose(Action::Terminate, cause, evidence());
                (Some(Verdict::Fires(Action::Terminate)), Some(d))
            }
            _ => {
                let verdict = Verdict::Done {
                    action: acted.action,
                    ago,
                };
                (explain.then_some(verdict), None)
            }
        };
    }
    if !checks.hold() {
        mem.breach_since = None;
        return (explain.then(|| Verdict::Unmet(checks.unmet())), None);
    }
    let since = *mem.breach_since.get_or_insert_with(held_from);
    let held_for = now.saturating_duration_since(since);
    if held_for < rule.grace {
        let verdict = Verdict::InGrace {
            held_for,
            grace: rule.grace,
        };
        return (explain.then_some(verdict), None);
    }
    let d = propose(rule.action, Cause::Breach, evidence());
    (Some(Verdict::Fires(rule.action)), Some(d))
}

/// For a block rule (no conditions), the evidence is what matched.
fn matcher_evidence(rule: &Rule, ws: &Walsender) -> Vec<Evidence> {
    fn globs(list: &PatternList<Glob>) -> String {
        let inc = list.include.iter().map(|g| g.text.clone());
        let exc = list.exclude.iter().map(|g| format!("!{}", g.text));
        format!("matches {}", inc.chain(exc).collect::<Vec<_>>().join(" "))
    }
    let m = &rule.matchers;
    let mut out = Vec::new();
    let mut push = |name, list: &Option<PatternList<Glob>>, value: Option<&str>| {
        if let Some(list) = list {
            out.push(Evidence {
                name,
                measured: value.unwrap_or("NULL").to_string(),
                against: globs(list),
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

/// A measured value, as a condition saw it.
#[derive(Clone, Copy, Debug)]
enum Measured {
    Time(Duration),
    Bytes(ByteSize),
    /// The column is NULL; why that is.
    Null(&'static str),
    /// A value PostgreSQL shows that is not judged; why (see
    /// [`clocks::time_lag`]).
    NotJudged(Duration, &'static str),
    /// `no_progress_for`: the flush position and how long it has not moved.
    Stalled {
        stalled: Duration,
        flush: Lsn,
        current: Lsn,
    },
    /// `no_progress_for`: flushed all the server has.
    CaughtUp,
}

/// One condition, evaluated: whether it holds, and what it saw.
#[derive(Clone, Copy, Debug)]
struct Check {
    name: &'static str,
    holds: bool,
    measured: Measured,
    limit: Measured,
}

/// The conditions of one rule for one walsender. Each is evaluated on
/// demand, without allocating, stopping at the first that fails when only
/// the answer is wanted; the words for the log or the plan are made only
/// when needed.
struct Checks<'a> {
    conditions: &'a Conditions,
    ws: &'a Walsender,
    current_lsn: Option<Lsn>,
    /// How long the instance has been in its state.
    in_state: Option<Duration>,
    /// Silence, progress and byte lags on one clock.
    measures: &'a Measures,
}

impl Checks<'_> {
    /// Calls `visit` with each condition of the rule, in a fixed order,
    /// until it returns false.
    fn each(&self, mut visit: impl FnMut(Check) -> bool) {
        fn time(
            name: &'static str,
            measured: Option<Duration>,
            limit: Duration,
            null: &'static str,
        ) -> Check {
            Check {
                name,
                holds: measured.is_some_and(|m| m > limit),
                measured: measured.map_or(Measured::Null(null), Measured::Time),
                limit: Measured::Time(limit),
            }
        }
        fn bytes(name: &'static str, measured: Option<ByteSize>, limit: ByteSize) -> Check {
            Check {
                name,
                holds: measured.is_some_and(|m| m > limit),
                measured: measured.map_or(Measured::Null("column not reported"), Measured::Bytes),
                limit: Measured::Bytes(limit),
            }
        }
        fn lag(name: &'static str, lag: TimeLag, limit: Duration) -> Check {
            let (holds, measured) = match lag {
                TimeLag::Judged(d) => (d > limit, Measured::Time(d)),
                TimeLag::Null => (false, Measured::Null("caught up")),
                TimeLag::NotJudged(d, why) => (false, Measured::NotJudged(d, why)),
            };
            Check {
                name,
                holds,
                measured,
                limit: Measured::Time(limit),
            }
        }
        let (c, ws, m) = (self.conditions, self.ws, self.measures);
        macro_rules! visit {
            ($limit:expr, $check:expr) => {
                if let Some(limit) = $limit {
                    if !visit($check(limit)) {
                        return;
                    }
                }
            };
        }
        visit!(c.write_lag, |l| lag("write_lag", m.lag(LagKind::Write), l));
        visit!(c.flush_lag, |l| lag("flush_lag", m.lag(LagKind::Flush), l));
        visit!(c.replay_lag, |l| lag(
            "replay_lag",
            m.lag(LagKind::Replay),
            l
        ));
        visit!(c.no_reply_for, |l| time(
            "no_reply_for",
            m.silence,
            l,
            "no reply yet"
        ));
        visit!(c.in_state_for, |l| time(
            "in_state_for",
            self.in_state,
            l,
            "state unknown"
        ));
        visit!(c.write_lag_bytes, |l| bytes(
            "write_lag_bytes",
            m.lag_bytes(LagKind::Write),
            l
        ));
        visit!(c.flush_lag_bytes, |l| bytes(
            "flush_lag_bytes",
            m.lag_bytes(LagKind::Flush),
            l
        ));
        visit!(c.replay_lag_bytes, |l| bytes(
            "replay_lag_bytes",
            m.lag_bytes(LagKind::Replay),
            l
        ));
        visit!(c.retained_wal, |l| bytes(
            "retained_wal",
            ws.retained_wal,
            l
        ));
        visit!(c.no_progress_for, |limit| {
            let measured = match (m.progress, self.current_lsn) {
                (Some(flush), Some(current)) if flush < current => Measured::Stalled {
                    stalled: m.stalled,
                    flush,
                    current,
                },
                (Some(_), Some(_)) => Measured::CaughtUp,
                _ => Measured::Null("column not reported"),
            };
            Check {
                name: "no_progress_for",
                holds: matches!(measured, Measured::Stalled { stalled, .. } if stalled >= limit),
                measured,
                limit: Measured::Time(limit),
            }
        });
    }

    fn hold(&self) -> bool {
        let mut all = true;
        self.each(|c| {
            all = c.holds;
            all
        });
        all
    }

    fn evidence(&self) -> Vec<Evidence> {
        let mut out = Vec::new();
        self.each(|c| {
            out.push(match (c.measured, c.limit) {
                (
                    Measured::Stalled {
                        stalled,
                        flush,
                        current,
                    },
                    Measured::Time(limit),
                ) => Evidence {
                    name: c.name,
                    measured: format!(
                        "{} at {flush} while server at {current}",
                        fmt_duration(stalled)
                    ),
                    against: format!(">= {}", fmt_duration(limit)),
                },
                (measured, limit) => Evidence {
                    name: c.name,
                    measured: show(measured),
                    against: format!("> {}", show(limit)),
                },
            });
            true
        });
        out
    }

    fn unmet(&self) -> Vec<String> {
        let mut out = Vec::new();
        self.each(|c| {
            if !c.holds {
                out.push(match (c.measured, c.limit) {
                    (Measured::Stalled { stalled, flush, .. }, Measured::Time(limit)) => format!(
                        "no_progress_for: flush {flush} stalled {} < {}",
                        fmt_duration(stalled),
                        fmt_duration(limit)
                    ),
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
                        format!("{} {} <= {}", c.name, show(measured), show(limit))
                    }
                });
            }
            true
        });
        out
    }
}

fn show(m: Measured) -> String {
    match m {
        Measured::Time(d) => fmt_duration(d),
        Measured::Bytes(b) => b.to_string(),
        Measured::Null(_) => "NULL".to_string(),
        Measured::NotJudged(d, _) => fmt_duration(d),
        Measured::Stalled { stalled, .. } => fmt_duration(stalled),
        Measured::CaughtUp => "caught up".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;
    use crate::snapshot::ClientAddr;
    use std::path::Path;
    use std::time::SystemTime;

    fn policy(toml: &str) -> Policy {
        config::parse(Path::new("test.toml"), toml).unwrap().policy
    }

    /// [`super::explain`], with every decision then carried out.
    fn explain(policy: &Policy, snapshot: &Snapshot, memory: &mut Memory, now: Instant) -> Round {
        let round = super::explain(policy, snapshot, memory, now);
        carried_out(policy, memory, round)
    }

    /// [`super::decide`], with every decision then carried out.
    fn decide(policy: &Policy, snapshot: &Snapshot, memory: &mut Memory, now: Instant) -> Round {
        let round = super::decide(policy, snapshot, memory, now);
        carried_out(policy, memory, round)
    }

    fn carried_out(policy: &Policy, memory: &mut Memory, round: Round) -> Round {
        for d in &round.decisions {
            memory.record(d, Delivery::Done, &policy.limits);
        }
        round
    }

    fn ws(pid: i32, app: &str) -> Walsender {
        Walsender {
            id: WalsenderId {
                pid,
                backend_start: SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000 + pid as u64),
            },
            age: Duration::ZERO,
            application_name: app.to_string(),
            user: Some("replicator".to_string()),
            client_addr: ClientAddr::Ip("10.1.2.3".parse().unwrap()),
            state: Some("streaming".into()),
            sync_state: Some("async".to_string()),
            flush_lsn: Some(Lsn(0x3000000)),
            write_lag: None,
            flush_lag: None,
            replay_lag: None,
            write_lag_bytes: Some(ByteSize(0)),
            flush_lag_bytes: Some(ByteSize(0)),
            replay_lag_bytes: Some(ByteSize(0)),
            reply_age: Some(Duration::from_secs(1)),
            reply_time: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(2_000_000)),
            slot_name: None,
            retained_wal: None,
        }
    }

    fn snap(walsenders: Vec<Walsender>) -> Snapshot {
        Snapshot {
            in_recovery: false,
            current_lsn: Some(Lsn(0x3000000)),
            server_time: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(2_000_001)),
            role: "replwarden".to_string(),
            synchronous_standby_names: String::new(),
            walsenders,
            hidden: vec![],
        }
    }

    fn acted(round: &Round) -> Vec<(i32, &str, Action)> {
        round
            .decisions
            .iter()
            .map(|d| (d.walsender.id.pid, d.rule.as_str(), d.action))
            .collect()
    }

    const BLOCK: &str = r#"
[[rule]]
name = "no-rogue"
application_name = ["rogue_*", "adhoc_*", "!adhoc_ok"]
action = "terminate"
"#;

    #[test]
    fn a_block_rule_fires_on_matching_names_only_once_per_instance() {
        let p = policy(BLOCK);
        let t0 = Instant::now();
        let mut m = Memory::default();
        let s = snap(vec![
            ws(1, "standby_a"),
            ws(2, "rogue_x"),
            ws(3, "adhoc_ok"),
            ws(4, "adhoc_1"),
        ]);
        let r = explain(&p, &s, &mut m, t0);
        assert_eq!(
            acted(&r),
            [
                (2, "no-rogue", Action::Terminate),
                (4, "no-rogue", Action::Terminate)
            ]
        );
        assert_eq!(
            r.decisions[0].evidence,
            [Evidence {
                name: "application_name",
                measured: "rogue_x".into(),
                against: "matches rogue_* adhoc_* !adhoc_ok".into()
            }]
        );
        // Still there on the next poll (the kill is in flight or failed): no repeat.
        let r = explain(&p, &s, &mut m, t0 + Duration::from_secs(1));
        assert!(r.decisions.is_empty());
        assert!(matches!(
            r.verdicts[0].2,
            Verdict::Done {
                action: Action::Terminate,
                ..
            }
        ));
    }

    #[test]
    fn a_new_instance_with_a_reused_pid_starts_clean() {
        let p = policy(BLOCK);
        let t0 = Instant::now();
        let mut m = Memory::default();
        let first = ws(2, "rogue_x");
        explain(&p, &snap(vec![first.clone()]), &mut m, t0);
        let mut reborn = first;
        reborn.id.backend_start += Duration::from_secs(5);
        // (10 s later: the default reconnect backoff has passed.)
        let r = explain(
            &p,
            &snap(vec![reborn]),
            &mut m,
            t0 + Duration::from_secs(10),
        );
        assert_eq!(acted(&r), [(2, "no-rogue", Action::Terminate)]);
        assert_eq!(m.len(), 1, "the old instance is forgotten");
    }

    const LAG: &str = r#"
[[rule]]
name = "lag"
application_name = ["reporting_*"]
replay_lag = "5m"
replay_lag_bytes = "1GB"
grace = "2m"
action = "terminate"
"#;

    fn lagging(pid: i32, lag_s: u64, bytes: u64) -> Walsender {
        let mut w = ws(pid, "reporting_1");
        w.replay_lag = Some(Duration::from_secs(lag_s));
        w.replay_lag_bytes = Some(ByteSize(bytes));
        w
    }

    #[test]
    fn a_lag_rule_needs_all_conditions_for_the_whole_grace() {
        let p = policy(LAG);
        let t0 = Instant::now();
        let s = |secs| t0 + Duration::from_secs(secs);
        let mut m = Memory::default();
        let gib = 1 << 30;
        // Time lag alone is not enough.
        let r = explain(&p, &snap(vec![lagging(7, 400, 10)]), &mut m, s(0));
        assert!(
            matches!(&r.verdicts[0].2, Verdict::Unmet(why) if why[0].starts_with("replay_lag_bytes"))
        );
        // Both hold: the grace starts.
        let r = explain(&p, &snap(vec![lagging(7, 400, 2 * gib)]), &mut m, s(10));
        assert!(matches!(r.verdicts[0].2, Verdict::InGrace { .. }));
        // A break resets the grace.
        explain(&p, &snap(vec![lagging(7, 200, 2 * gib)]), &mut m, s(60));
        let r = explain(&p, &snap(vec![lagging(7, 400, 2 * gib)]), &mut m, s(70));
        assert_eq!(
            r.verdicts[0].2,
            Verdict::InGrace {
                held_for: Duration::ZERO,
                grace: Duration::from_secs(120)
            }
        );
        let r = explain(&p, &snap(vec![lagging(7, 400, 2 * gib)]), &mut m, s(189));
        assert!(r.decisions.is_empty());
        let r = explain(&p, &snap(vec![lagging(7, 400, 2 * gib)]), &mut m, s(190));
        assert_eq!(acted(&r), [(7, "lag", Action::Terminate)]);
        assert_eq!(
            evidence_line(&r.decisions[0].evidence),
            "replay_lag=6m 40s (> 5m), replay_lag_bytes=2.0 GiB (> 1.0 GiB)"
        );
    }

    #[test]
    fn null_lag_means_caught_up_and_never_holds() {
        let p = policy(
            "[[rule]]\nname = \"r\"\nflush_lag = \"1s\"\n[[rule]]\nname = \"b\"\nflush_lag_bytes = \"1kB\"\n[[rule]]\nname = \"s\"\nretained_wal = \"1kB\"",
        );
        let mut w = ws(1, "pg_receivewal");
        w.flush_lag_bytes = None;
        w.flush_lsn = None;
        let r = explain(&p, &snap(vec![w]), &mut Memory::default(), Instant::now());
        assert!(r.decisions.is_empty());
        let whys: Vec<String> = r.verdicts.iter().map(|v| v.2.to_string()).collect();
        assert_eq!(
            whys,
            [
                "conditions not met: flush_lag is NULL (caught up)",
                "conditions not met: flush_lag_bytes is NULL (column not reported)",
                "conditions not met: retained_wal is NULL (column not reported)",
            ]
        );
    }

    #[test]
    fn in_state_for_counts_from_when_the_state_was_first_seen() {
        let p = policy("[[rule]]\nname = \"stuck\"\nstate = [\"backup\"]\nin_state_for = \"6h\"\naction = \"terminate\"");
        let t0 = Instant::now();
        let h = |hours: u64| t0 + Duration::from_secs(hours * 3600);
        let mut m = Memory::default();
        let mut w = ws(9, "pg_basebackup");
        w.state = Some("startup".into());
        explain(&p, &snap(vec![w.clone()]), &mut m, h(0));
        w.state = Some("backup".into());
        let r = explain(&p, &snap(vec![w.clone()]), &mut m, h(1));
        assert!(matches!(&r.verdicts[0].2, Verdict::Unmet(_)));
        let r = explain(
            &p,
            &snap(vec![w.clone()]),
            &mut m,
            h(7) - Duration::from_secs(1),
        );
        assert!(r.decisions.is_empty());
        let r = explain(
            &p,
            &snap(vec![w.clone()]),
            &mut m,
            h(7) + Duration::from_secs(1),
        );
        assert_eq!(acted(&r), [(9, "stuck", Action::Terminate)]);
        assert_eq!(
            r.decisions[0].evidence[0].to_string(),
            "in_state_for=6h 1s (> 6h)"
        );
    }

    #[test]
    fn a_block_rule_counts_its_grace_from_the_walsender_start() {
        let p = policy("[[rule]]\nname = \"block\"\napplication_name = [\"rogue\"]\ngrace = \"500ms\"\naction = \"terminate\"");
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        // First seen 800 ms after it connected: its grace is already over.
        let mut old = ws(1, "rogue");
        old.age = ms(800);
        let r = decide(&p, &snap(vec![old]), &mut Memory::default(), t0);
        assert_eq!(acted(&r), [(1, "block", Action::Terminate)]);
        // First seen 200 ms in: 300 ms to go, and a wake-up for exactly then.
        let mut young = ws(2, "rogue");
        young.age = ms(200);
        let mut m = Memory::default();
        let r = decide(&p, &snap(vec![young.clone()]), &mut m, t0);
        assert!(r.decisions.is_empty());
        assert_eq!(r.wake_at, Some(t0 + ms(300)));
        young.age = ms(500);
        let r = decide(&p, &snap(vec![young]), &mut m, t0 + ms(300));
        assert_eq!(acted(&r), [(2, "block", Action::Terminate)]);
        assert_eq!(r.wake_at, None);
    }

    #[test]
    fn a_first_sight_in_startup_dates_the_state_from_the_process_start() {
        let p = policy("[[rule]]\nname = \"stale\"\nstate = [\"startup\", \"backup\"]\nin_state_for = \"1s\"\naction = \"terminate\"");
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut w = ws(3, "idle");
        w.state = Some("startup".into());
        w.age = ms(1500);
        let r = decide(&p, &snap(vec![w.clone()]), &mut Memory::default(), t0);
        assert_eq!(acted(&r), [(3, "stale", Action::Terminate)]);
        // In startup for 400 ms: a wake-up just after the limit is reached.
        w.age = ms(400);
        let mut m = Memory::default();
        let r = decide(&p, &snap(vec![w.clone()]), &mut m, t0);
        assert!(r.decisions.is_empty());
        assert_eq!(r.wake_at, Some(t0 + ms(600) + TIMER_SLACK));
        // Any other state may have begun just now: no backdating.
        let mut b = ws(4, "pg_basebackup");
        b.state = Some("backup".into());
        b.age = Duration::from_secs(3600);
        let r = decide(&p, &snap(vec![b]), &mut Memory::default(), t0);
        assert!(r.decisions.is_empty());
        assert_eq!(r.wake_at, Some(t0 + ms(1000) + TIMER_SLACK));
    }

    #[test]
    fn a_condition_counts_its_grace_from_the_poll_that_saw_it() {
        let p = policy("[[rule]]\nname = \"lag\"\nreplay_lag_bytes = \"1MB\"\ngrace = \"2s\"\naction = \"cancel\"");
        let t0 = Instant::now();
        let mut w = ws(5, "standby");
        w.age = Duration::from_secs(3600);
        w.replay_lag_bytes = Some(ByteSize(64 << 20));
        let mut m = Memory::default();
        let r = decide(&p, &snap(vec![w.clone()]), &mut m, t0);
        assert!(
            r.decisions.is_empty(),
            "a lag seen once is not two seconds old"
        );
        assert_eq!(r.wake_at, Some(t0 + Duration::from_secs(2)));
        let r = decide(&p, &snap(vec![w]), &mut m, t0 + Duration::from_secs(2));
        assert_eq!(acted(&r), [(5, "lag", Action::Cancel)]);
    }

    #[test]
    fn no_progress_catches_a_frozen_standby_whose_time_lag_reads_zero() {
        let p = policy(
            "[[rule]]\nname = \"hung\"\nno_progress_for = \"30s\"\naction = \"terminate\"\n\
             [[rule]]\nname = \"lag\"\nreplay_lag = \"10s\"\naction = \"terminate\"",
        );
        let t0 = Instant::now();
        let s = |secs| t0 + Duration::from_secs(secs);
        let mut m = Memory::default();
        let mut frozen = ws(5, "standby_b");
        frozen.replay_lag = Some(Duration::ZERO);
        let mut healthy = ws(6, "standby_a");
        let mut snapshot = snap(vec![frozen.clone(), healthy.clone()]);
        explain(&p, &snapshot, &mut m, s(0));
        // The server moves on; the healthy standby follows, the frozen one does not.
        snapshot.current_lsn = Some(Lsn(0x3100000));
        healthy.flush_lsn = Some(Lsn(0x30F0000));
        frozen.flush_lag_bytes = Some(ByteSize(0x100000));
        snapshot.walsenders = vec![frozen.clone(), healthy.clone()];
        let r = explain(&p, &snapshot, &mut m, s(29));
        assert!(r.decisions.is_empty());
        healthy.flush_lsn = Some(Lsn(0x3100000));
        snapshot.walsenders = vec![frozen, healthy];
        let r = explain(&p, &snapshot, &mut m, s(31));
        assert_eq!(acted(&r), [(5, "hung", Action::Terminate)]);
    }

    #[test]
    fn no_reply_for_counts_from_when_reply_time_last_changed() {
        let p = policy("[[rule]]\nname = \"silent\"\nno_reply_for = \"2m\"\naction = \"cancel\"");
        let t0 = Instant::now();
        let s = |secs| t0 + Duration::from_secs(secs);
        let mut m = Memory::default();
        let w = ws(3, "standby_c");
        let mut quiet = ws(4, "pg_basebackup");
        quiet.reply_time = None;
        quiet.state = Some("backup".into());
        // However old reply_time reads by the server's clock, silence starts
        // when the daemon sees it.
        let mut old = w.clone();
        old.reply_age = Some(Duration::from_secs(3600));
        let r = explain(&p, &snap(vec![old, quiet.clone()]), &mut m, s(0));
        assert!(r.decisions.is_empty());
        let r = explain(&p, &snap(vec![w.clone(), quiet.clone()]), &mut m, s(120));
        assert!(r.decisions.is_empty(), "2m is not more than 2m");
        let r = explain(&p, &snap(vec![w, quiet]), &mut m, s(121));
        assert_eq!(acted(&r), [(3, "silent", Action::Cancel)]);
    }

    #[test]
    fn a_cancel_escalates_to_terminate_when_the_instance_survives() {
        let p = policy(
            "[[rule]]\nname = \"silent\"\nno_reply_for = \"2m\"\naction = \"cancel\"\nescalate_after = \"15s\"",
        );
        let t0 = Instant::now();
        let s = |secs| t0 + Duration::from_secs(secs);
        let w = ws(3, "standby_c");
        let mut m = Memory::default();
        // Silent for 200 s by the daemon's clock: its reply_time unchanged since.
        explain(
            &p,
            &snap(vec![w.clone()]),
            &mut m,
            t0 - Duration::from_secs(200),
        );
        assert_eq!(
            acted(&explain(&p, &snap(vec![w.clone()]), &mut m, s(0))),
            [(3, "silent", Action::Cancel)]
        );
        assert!(explain(&p, &snap(vec![w.clone()]), &mut m, s(14))
            .decisions
            .is_empty());
        let r = explain(&p, &snap(vec![w.clone()]), &mut m, s(15));
        assert_eq!(acted(&r), [(3, "silent", Action::Terminate)]);
        assert_eq!(
            r.decisions[0].cause,
            Cause::Escalation {
                cancelled_ago: Duration::from_secs(15)
            }
        );
        assert!(
            explain(&p, &snap(vec![w]), &mut m, s(60))
                .decisions
                .is_empty(),
            "escalates once"
        );
    }

    #[test]
    fn without_escalate_after_a_cancel_is_not_repeated() {
        let p = policy("[[rule]]\nname = \"c\"\napplication_name = [\"x\"]\naction = \"cancel\"");
        let t0 = Instant::now();
        let mut m = Memory::default();
        let s = snap(vec![ws(1, "x")]);
        assert_eq!(explain(&p, &s, &mut m, t0).decisions.len(), 1);
        assert!(explain(&p, &s, &mut m, t0 + Duration::from_secs(3600))
            .decisions
            .is_empty());
    }

    #[test]
    fn timers_survive_a_reload_and_die_with_their_rule() {
        let t0 = Instant::now();
        let s = |secs| t0 + Duration::from_secs(secs);
        let mut m = Memory::default();
        let snapshot = snap(vec![lagging(7, 400, 2 << 30)]);
        explain(&policy(LAG), &snapshot, &mut m, s(0));
        // Reload: the same rule plus a new one. The lag rule's grace keeps counting.
        let reloaded = format!("{LAG}\n[[rule]]\nname = \"other\"\nuser = [\"nobody\"]\n");
        let r = explain(&policy(&reloaded), &snapshot, &mut m, s(120));
        assert_eq!(acted(&r), [(7, "lag", Action::Terminate)]);
        // Reload without it, then with it again: its memory starts over.
        explain(
            &policy("[[rule]]\nname = \"other\"\nuser = [\"nobody\"]"),
            &snapshot,
            &mut m,
            s(130),
        );
        let r = explain(&policy(LAG), &snapshot, &mut m, s(140));
        assert!(matches!(r.verdicts[0].2, Verdict::InGrace { .. }));
    }

    #[test]
    fn matchers_combine_and_exclude() {
        let p = policy(
            r#"
[[rule]]
name = "m"
user = ["repl*"]
client_addr = ["10.0.0.0/8", "!10.9.0.0/16", "local"]
state = ["streaming", "catchup"]
sync_state = ["!sync"]
"#,
        );
        let t0 = Instant::now();
        let fired = |w: Walsender| {
            !explain(&p, &snap(vec![w]), &mut Memory::default(), t0)
                .decisions
                .is_empty()
        };
        assert!(fired(ws(1, "a")));
        let mut w = ws(1, "a");
        w.client_addr = ClientAddr::Local;
        assert!(fired(w));
        let mut w = ws(1, "a");
        w.client_addr = ClientAddr::Ip("10.9.1.1".parse().unwrap());
        assert!(!fired(w), "excluded network");
        let mut w = ws(1, "a");
        w.client_addr = ClientAddr::Ip("::1".parse().unwrap());
        assert!(!fired(w), "outside every network");
        let mut w = ws(1, "a");
        w.user = Some("postgres".into());
        assert!(!fired(w), "user does not match");
        let mut w = ws(1, "a");
        w.user = None;
        assert!(!fired(w), "NULL matches no positive pattern");
        let mut w = ws(1, "a");
        w.state = Some("backup".into());
        assert!(!fired(w), "state does not match");
        let mut w = ws(1, "a");
        w.sync_state = Some("sync".into());
        assert!(!fired(w), "excluded sync_state");
        let mut w = ws(1, "a");
        w.state = Some("some_future_state".into());
        assert!(!fired(w), "an unknown state matches no listed state");
    }

    #[test]
    fn every_rule_acts_independently() {
        let p = policy(&format!(
            "{BLOCK}\n[[rule]]\nname = \"log-all-rogues\"\napplication_name = [\"rogue_*\"]\n"
        ));
        let r = explain(
            &p,
            &snap(vec![ws(2, "rogue_x")]),
            &mut Memory::default(),
            Instant::now(),
        );
        assert_eq!(
            acted(&r),
            [
                (2, "no-rogue", Action::Terminate),
                (2, "log-all-rogues", Action::Log)
            ]
        );
    }

    fn sync(pid: i32, app: &str, sync_state: &str) -> Walsender {
        let mut w = ws(pid, app);
        w.sync_state = Some(sync_state.to_string());
        w
    }

    fn held_reasons(r: &Round) -> Vec<(i32, String)> {
        r.held
            .iter()
            .map(|h| (h.decision.walsender.id.pid, h.reason.to_string()))
            .collect()
    }

    const KILL_STANDBYS: &str =
        "[[rule]]\nname = \"k\"\napplication_name = [\"s*\"]\naction = \"terminate\"\n";

    #[test]
    fn the_quorum_guard_keeps_enough_healthy_sync_standbys() {
        let p = policy(KILL_STANDBYS);
        let t0 = Instant::now();
        // FIRST 1 with one sync and one async: the sync one is held, every time.
        let mut s = snap(vec![sync(1, "s_sync", "sync"), sync(2, "s_async", "async")]);
        s.synchronous_standby_names = "FIRST 1 (s_sync)".into();
        let mut m = Memory::default();
        let r = explain(&p, &s, &mut m, t0);
        assert_eq!(acted(&r), [(2, "k", Action::Terminate)]);
        assert_eq!(
            held_reasons(&r),
            [(1, "held: would break synchronous quorum (synchronous_standby_names = \"FIRST 1 (s_sync)\" needs 1; healthy sync candidates: s_sync)".to_string())]
        );
        let r = explain(&p, &s, &mut m, t0 + Duration::from_secs(1));
        assert_eq!(r.held.len(), 1, "held again at the next poll");
        assert!(matches!(
            r.verdicts[0].2,
            Verdict::Held(HoldReason::SyncQuorum { required: 1, .. })
        ));

        // ANY 1 of two healthy: one may go, not both (same round).
        let mut s = snap(vec![sync(1, "s_a", "quorum"), sync(2, "s_b", "quorum")]);
        s.synchronous_standby_names = "ANY 1 (s_a, s_b)".into();
        let r = explain(&p, &s, &mut Memory::default(), t0);
        assert_eq!(acted(&r), [(1, "k", Action::Terminate)]);
        assert_eq!(r.held[0].decision.walsender.id.pid, 2);

        // ANY 1 where the other candidate is frozen (its reply_time has not
        // changed for longer than healthy_reply_within): hold.
        let frozen = sync(2, "s_b", "quorum");
        let mut live = sync(1, "s_a", "quorum");
        let mut s = snap(vec![live.clone(), frozen.clone()]);
        s.synchronous_standby_names = "ANY 1 (s_a, s_b)".into();
        let mut m = Memory::default();
        let p_log = policy("[[rule]]\nname = \"watch\"\napplication_name = [\"s*\"]\n");
        explain(&p_log, &s, &mut m, t0);
        live.reply_time = live.reply_time.map(|t| t + Duration::from_secs(60));
        s.walsenders = vec![live, frozen];
        let r = explain(&p, &s, &mut m, t0 + Duration::from_secs(60));
        assert_eq!(
            acted(&r),
            [(2, "k", Action::Terminate)],
            "the unhealthy one may go, the healthy one stays"
        );
        assert_eq!(r.held[0].decision.walsender.id.pid, 1);

        // FIRST 1 with a healthy potential standby: the sync one may go.
        let mut s = snap(vec![sync(1, "s_a", "sync"), sync(2, "s_b", "potential")]);
        s.synchronous_standby_names = "s_a, s_b".into();
        let r = explain(&p, &s, &mut Memory::default(), t0);
        assert_eq!(acted(&r), [(1, "k", Action::Terminate)]);

        // An unparsable setting guards every healthy candidate; log actions pass.
        let p2 = policy(&format!(
            "{KILL_STANDBYS}[[rule]]\nname = \"l\"\napplication_name = [\"s*\"]\n"
        ));
        let mut s = snap(vec![sync(1, "s_a", "sync"), sync(2, "s_b", "potential")]);
        s.synchronous_standby_names = "FIRST 1 (s_a".into();
        let r = explain(&p2, &s, &mut Memory::default(), t0);
        assert_eq!(acted(&r), [(1, "l", Action::Log), (2, "l", Action::Log)]);
        assert_eq!(r.held.len(), 2);

        // Disabled, or on a standby: no guard.
        let off = policy(&format!("[sync_guard]\nenabled = false\n{KILL_STANDBYS}"));
        let mut s = snap(vec![sync(1, "s_sync", "sync")]);
        s.synchronous_standby_names = "s_sync".into();
        assert_eq!(
            explain(&off, &s, &mut Memory::default(), t0)
                .decisions
                .len(),
            1
        );
        s.in_recovery = true;
        assert_eq!(
            explain(&p, &s, &mut Memory::default(), t0).decisions.len(),
            1
        );
    }

    #[test]
    fn protected_walsenders_are_never_acted_on() {
        let p = policy(&format!(
            "[protect]\napplication_name = [\"patroni_*\"]\n{KILL_STANDBYS}[[rule]]\nname = \"all\"\nuser = [\"replicator\"]\n"
        ));
        let r = explain(
            &p,
            &snap(vec![ws(1, "s_patroni"), ws(2, "patroni_x")]),
            &mut Memory::default(),
            Instant::now(),
        );
        assert_eq!(
            acted(&r),
            [(1, "k", Action::Terminate), (1, "all", Action::Log)]
        );
        assert_eq!(
            r.verdicts
                .iter()
                .filter(|v| v.2 == Verdict::Protected)
                .count(),
            1
        );
        let several = policy(&format!(
            "[[protect]]\nuser = [\"patroni\"]\n[[protect]]\nclient_addr = [\"10.0.0.0/8\"]\n{KILL_STANDBYS}"
        ));
        let r = explain(
            &several,
            &snap(vec![ws(1, "s_a")]),
            &mut Memory::default(),
            Instant::now(),
        );
        assert!(
            r.decisions.is_empty(),
            "10.1.2.3 is protected by the second entry"
        );
    }

    #[test]
    fn the_budget_defers_and_never_drops() {
        let p = policy(&format!(
            "[limits]\nmax_actions = 2\nper = \"1m\"\n{KILL_STANDBYS}"
        ));
        let t0 = Instant::now();
        let s = snap((1..=5).map(|i| ws(i, &format!("s{i}"))).collect());
        let mut m = Memory::default();
        let r = explain(&p, &s, &mut m, t0);
        assert_eq!(r.decisions.len(), 2);
        assert_eq!(r.held.len(), 3);
        assert!(r
            .held
            .iter()
            .all(|h| matches!(h.reason, HoldReason::Budget { max_actions: 2, .. })));
        // Still over budget 59 s later; the window frees at 60 s.
        assert!(explain(&p, &s, &mut m, t0 + Duration::from_secs(59))
            .decisions
            .is_empty());
        let r = explain(&p, &s, &mut m, t0 + Duration::from_secs(60));
        assert_eq!(
            r.decisions
                .iter()
                .map(|d| d.walsender.id.pid)
                .collect::<Vec<_>>(),
            [3, 4]
        );
        let r = explain(&p, &s, &mut m, t0 + Duration::from_secs(120));
        assert_eq!(
            r.decisions
                .iter()
                .map(|d| d.walsender.id.pid)
                .collect::<Vec<_>>(),
            [5]
        );
    }

    #[test]
    fn a_client_that_keeps_coming_back_is_backed_off_exponentially() {
        let p = policy(&format!(
            "[limits]\nreconnect_backoff = \"10s\"\nreconnect_backoff_max = \"30s\"\nmax_actions = 100\n{BLOCK}"
        ));
        let t0 = Instant::now();
        let mut m = Memory::default();
        let mut times = Vec::new();
        let mut loops = Vec::new();
        // The client reconnects as a new instance one second after each action.
        let mut instance = 0;
        let mut w = ws(100, "rogue_x");
        for second in 0..120 {
            let now = t0 + Duration::from_secs(second);
            let r = explain(&p, &snap(vec![w.clone()]), &mut m, now);
            loops.extend(r.loops.iter().map(|l| (l.actions, l.next_wait)));
            if !r.decisions.is_empty() {
                times.push(second);
                instance += 1;
                w = ws(100 + instance, "rogue_x");
            }
        }
        assert_eq!(times, [0, 10, 30, 60, 90]);
        assert_eq!(
            loops,
            [
                (2, Duration::from_secs(20)),
                (3, Duration::from_secs(30)),
                (4, Duration::from_secs(30)),
                (5, Duration::from_secs(30)),
            ]
        );
        // Quiet for twice the cap: forgiven.
        let r = explain(
            &p,
            &snap(vec![ws(999, "rogue_x")]),
            &mut m,
            t0 + Duration::from_secs(90 + 61),
        );
        assert_eq!(r.decisions.len(), 1);
        assert!(r.loops.is_empty());
    }

    #[test]
    fn failed_signals_are_retried_a_bounded_number_of_times() {
        let p = policy(&format!("[limits]\nmax_retries = 2\n{BLOCK}"));
        let t0 = Instant::now();
        let s = snap(vec![ws(2, "rogue_x")]);
        let mut m = Memory::default();
        let mut causes = Vec::new();
        let mut gave_up = None;
        for second in 0..10 {
            let r = super::explain(&p, &s, &mut m, t0 + Duration::from_secs(second));
            for d in &r.decisions {
                causes.push(d.cause.clone());
                gave_up = gave_up.or(m.record(d, Delivery::Failed, &p.limits));
            }
        }
        assert_eq!(
            causes,
            [
                Cause::Breach,
                Cause::Retry { attempt: 2 },
                Cause::Retry { attempt: 3 }
            ]
        );
        assert_eq!(gave_up, Some(3));
        let r = explain(&p, &s, &mut m, t0 + Duration::from_secs(60));
        assert_eq!(
            r.verdicts[0].2,
            Verdict::GaveUp {
                action: Action::Terminate,
                attempts: 3
            }
        );
        // A refusal is final at once; a success is done.
        let mut m = Memory::default();
        let r = super::explain(&p, &s, &mut m, t0);
        assert_eq!(m.record(&r.decisions[0], Delivery::Final, &p.limits), None);
        assert!(explain(&p, &s, &mut m, t0 + Duration::from_secs(1))
            .decisions
            .is_empty());
    }

    #[test]
    fn decide_and_explain_agree_and_only_explain_says_why() {
        let p = policy(&format!("{LAG}{BLOCK}"));
        let t0 = Instant::now();
        let s = snap(vec![
            lagging(7, 400, 2 << 30),
            ws(2, "rogue_x"),
            ws(3, "standby"),
        ]);
        let (mut m1, mut m2) = (Memory::default(), Memory::default());
        for secs in [0, 60, 121, 200] {
            let now = t0 + Duration::from_secs(secs);
            let a = decide(&p, &s, &mut m1, now);
            let b = explain(&p, &s, &mut m2, now);
            assert_eq!(a.decisions, b.decisions);
            assert!(a.verdicts.is_empty());
            assert!(!b.verdicts.is_empty());
        }
    }

    #[test]
    fn a_round_counts_the_walsenders_each_rule_matches_now() {
        let p = policy(&format!(
            "[protect]\napplication_name = [\"rogue_safe\"]\n{BLOCK}{LAG}"
        ));
        let t0 = Instant::now();
        let mut m = Memory::default();
        let s = snap(vec![
            ws(1, "rogue_a"),
            ws(2, "rogue_b"),
            ws(3, "rogue_safe"),
            lagging(4, 1, 0),
            ws(5, "standby"),
        ]);
        // Counted by decide (no verdicts), every round, also after acting.
        assert_eq!(decide(&p, &s, &mut m, t0).matches, [2, 1]);
        assert_eq!(decide(&p, &s, &mut m, t0).matches, [2, 1]);
        let s = snap(vec![ws(5, "standby")]);
        assert_eq!(decide(&p, &s, &mut m, t0).matches, [0, 0]);
    }
}
