//! What the engine remembers between polls: per process instance, per rule
//! on it, and per client; and how a reload re-lays it.

use std::collections::HashMap;

use rustc_hash::FxHashMap;
use std::fmt;
use std::time::{Duration, Instant};

use crate::clocks::{self, Measures, Observed};
use crate::policy::{Action, Limits, Matchers, Policy, Rule};
use crate::snapshot::{Snapshot, WalState, Walsender, WalsenderId};

use super::guards::{charge, Budget};
use super::{Cause, Decision};

/// What the engine remembers between polls.
#[derive(Debug, Default)]
pub struct Memory {
    /// Keyed by `(pid, backend_start)`, which the server assigns (a client
    /// chooses neither), and no more of them than `max_wal_senders`: a
    /// fast hasher without DoS resistance (SipHash was a tenth of the
    /// daemon's instructions per poll). `clients`, keyed by what a client
    /// chooses (`application_name`), keeps the default, randomly keyed
    /// SipHash.
    pub(super) instances: FxHashMap<WalsenderId, Instance>,
    /// The cancels/terminates of the current budget window, and the queue
    /// of those it deferred.
    pub(super) budget: Budget,
    /// Clients acted on, for reconnect-loop backoff.
    pub(super) clients: HashMap<ClientKey, ClientHistory>,
    /// The rules and protections the per-instance vectors are laid out for:
    /// a copy of the policy last seen, so that any other policy, however
    /// it was made, is told apart by comparing (see `Memory::adopt`).
    pub(super) rules: Vec<Rule>,
    pub(super) protect: Vec<Matchers>,
    /// Counts rounds; an instance not seen in the current one is gone.
    pub(super) round: u64,
    /// When the previous round ran: a walsender it did not see is younger.
    pub(super) last_round_at: Option<Instant>,
    /// Whether decisions are carried out in a dry run (see
    /// [`Memory::set_dry_run`]): a simulated action counts as done only then.
    pub(super) dry_run: bool,
}

/// Per process instance.
#[derive(Debug)]
pub(super) struct Instance {
    /// When the process started, on the daemon's clock (`now` minus its age
    /// when first seen).
    pub(super) born: Instant,
    /// The state last seen and since when it has been seen without a break
    /// (PostgreSQL keeps no state-change time; every walsender starts in
    /// `startup`, so a first sight in `startup` dates from its birth).
    pub(super) state: Option<WalState>,
    pub(super) state_since: Instant,
    /// Its feedback across polls: replies, progress, first streaming.
    pub(super) observed: Observed,
    /// The round that last saw it.
    pub(super) seen: u64,
    /// When it was first seen: an instance first seen after its client was
    /// acted on is a reconnect.
    pub(super) first_seen: Instant,
    /// Per rule, in policy order.
    pub(super) rules: Vec<RuleMemory>,
    /// The rules whose matchers match it (by index), and whether
    /// `[protect]` does: worked out again only when the policy or this
    /// instance's state or sync_state changes (its name, user and address
    /// never do).
    pub(super) matches: Vec<usize>,
    pub(super) protected: bool,
    pub(super) matched_on: Option<(Option<WalState>, Option<String>)>,
    /// Whether a decision on it was ever recorded. Until then no rule has
    /// anything pending on it ([`RuleMemory::pending`] needs `acted`), and
    /// a round need not look through every rule for one (that reads every
    /// rule's memory: 8 % of the poll with 100 rules).
    pub(super) acted_on: bool,
}

#[derive(Clone, Copy, Debug, Default)]
pub(super) struct RuleMemory {
    /// When the rule's conditions started holding without a break.
    pub(super) breach_since: Option<Instant>,
    /// What this rule last did to this instance. Kept when the rule stops
    /// matching (a cancelled walsender falls back to `startup`): the
    /// escalation clock and the retries belong to the instance and the rule.
    pub(super) acted: Option<Acted>,
    /// When the budget deferred this rule's action on this instance, its
    /// place in the queue of deferred actions.
    pub(super) deferred: Option<u64>,
}

impl RuleMemory {
    /// Something is still to be done even if the rule no longer matches: a
    /// failed signal to retry, or a cancel to escalate.
    pub(super) fn pending(&self, rule: &Rule, dry_run: bool) -> bool {
        self.acted.is_some_and(|a| {
            (!a.simulated || dry_run)
                && !a.gave_up
                && (a.failed || (a.action == Action::Cancel && rule.escalate_after.is_some()))
        })
    }
}

#[derive(Clone, Copy, Debug)]
pub(super) struct Acted {
    pub(super) action: Action,
    pub(super) at: Instant,
    /// Signals sent for this action so far (1 + retries).
    pub(super) attempts: u32,
    /// The last attempt failed and may be retried.
    pub(super) failed: bool,
    /// The last attempt failed and there are no retries left.
    pub(super) gave_up: bool,
    /// Only simulated, in a dry run: done while the dry run lasts.
    pub(super) simulated: bool,
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
    pub(super) fn of(ws: &Walsender) -> ClientKey {
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
pub(super) struct ClientHistory {
    /// Actions on distinct instances, each first seen after the one before.
    pub(super) actions: u32,
    /// When the last of them was decided.
    pub(super) last: Instant,
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
    /// each [`decide`](super::decide): what was only simulated in a dry run is not done once
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
        if let Some(inst) = self.instances.get_mut(&decision.walsender.id) {
            inst.acted_on = true;
        }
        if decision.action != Action::Log {
            self.budget.charge(decision.decided_at);
            let key = ClientKey::of(&decision.walsender);
            if let Some(h) = charge(self.clients.get(&key), decision, first_seen) {
                self.clients.insert(key, h);
            }
        }
        gave_up.then_some(attempts)
    }

    /// Starts a round at `now`: re-lays the memory for `policy`, forgets
    /// clients acted on too long ago and actions out of the budget window.
    /// Returns how long ago the previous round ran.
    pub(super) fn begin_round(&mut self, policy: &Policy, now: Instant) -> Option<Duration> {
        self.adopt(policy);
        self.round += 1;
        let limits = &policy.limits;
        let forget_after = limits.reconnect_backoff_max.saturating_mul(2);
        self.clients
            .retain(|_, h| now.saturating_duration_since(h.last) <= forget_after);
        self.budget.begin(now, limits);
        self.last_round_at
            .replace(now)
            .map(|at| now.saturating_duration_since(at))
    }

    /// Remembers `ws` as seen this round: its instance (made on first
    /// sight), its state and since when, its feedback measured on one
    /// clock, and the rules that match it (worked out again only when the
    /// policy or its state or sync_state changed).
    pub(super) fn observe(
        &mut self,
        policy: &Policy,
        snapshot: &Snapshot,
        ws: &Walsender,
        now: Instant,
        since_previous_round: Option<Duration>,
    ) -> (&mut Instance, Measures) {
        let this_round = self.round;
        let inst = self.instances.entry(ws.id).or_insert_with(|| {
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
                acted_on: false,
            }
        });
        inst.seen = this_round;
        if inst.state != ws.state {
            inst.state = ws.state.clone();
            inst.state_since = now;
        }
        let measures = inst.observed.observe(ws, snapshot, now);
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
        (inst, measures)
    }

    /// Ends a round: forgets instances that are gone, so a new process, even
    /// with the same pid, starts with a clean slate.
    pub(super) fn end_round(&mut self) {
        let this_round = self.round;
        self.instances.retain(|_, inst| inst.seen == this_round);
    }

    pub(super) fn rule_memory(&mut self, d: &Decision) -> Option<&mut RuleMemory> {
        if self.rules.get(d.rule_index).map(|r| &r.name) != Some(&d.rule) {
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
    pub(super) fn adopt(&mut self, policy: &Policy) {
        if self.rules == policy.rules && self.protect == policy.protect {
            return;
        }
        let moves: Vec<Option<(usize, bool, bool)>> = policy
            .rules
            .iter()
            .map(|new| {
                let i = self.rules.iter().position(|was| was.name == new.name)?;
                let was = &self.rules[i];
                // Matchers, conditions and grace: what its breach timer measures.
                let same_timer = was.matchers == new.matchers
                    && was.conditions == new.conditions
                    && was.grace == new.grace;
                Some((i, same_timer, was.action == new.action))
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
        self.rules = policy.rules.clone();
        self.protect = policy.protect.clone();
    }
}
