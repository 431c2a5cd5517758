//! The safety guards a candidate action passes before it is decided: the
//! synchronous quorum, the reconnect-loop backoff and the action budget.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::clocks::Measures;
use crate::policy::{Action, Limits, Policy};
use crate::snapshot::{Snapshot, WalState, Walsender};
use crate::syncrep;

use super::memory::{ClientHistory, ClientKey, Memory};
use super::{Cause, Decision, HoldReason, ReconnectLoop};

/// The action budget (`[limits] max_actions` per `per`) of one kind of
/// action: walsender signals in [`Memory`], slot drops in
/// [`crate::slots::SlotMemory`], each its own. What it holds back is
/// deferred, never dropped, and runs first, in the order it was deferred.
#[derive(Debug, Default)]
pub struct Budget {
    /// When the actions of the current window were decided.
    recent: VecDeque<Instant>,
    /// Numbers the actions the budget defers, so they run in that order.
    deferrals: u64,
}

impl Budget {
    /// Forgets the actions out of the window ending at `now`.
    pub fn begin(&mut self, now: Instant, limits: &Limits) {
        while self
            .recent
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= limits.per)
        {
            self.recent.pop_front();
        }
    }

    /// The actions charged in the current window.
    pub fn spent(&self) -> usize {
        self.recent.len()
    }

    /// Charges an action decided at `at`.
    pub fn charge(&mut self, at: Instant) {
        self.recent.push_back(at);
    }

    /// A new place in the queue of deferred actions, for an action not yet
    /// in it (one already there keeps its place).
    pub fn defer(&mut self) -> u64 {
        self.deferrals += 1;
        self.deferrals
    }

    /// Sorts candidates by this key: the deferred ones (their place in the
    /// queue) first, in the order they were deferred, then the others.
    pub fn order(deferred: Option<u64>) -> (u8, u64) {
        deferred.map_or((1, 0), |place| (0, place))
    }
}

/// The client's history once `d` is carried out on an instance first seen
/// at `first_seen`, or `None` when it does not change: only an action on a
/// process instance that appeared after the client's last action counts
/// (a reconnect); another live connection of the same client, or a second
/// rule on the same instance, is no loop.
pub(super) fn charge(
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
pub(super) fn backoff(limits: &Limits, actions: u32) -> Duration {
    let factor = 1u32
        .checked_shl(actions.saturating_sub(1))
        .unwrap_or(u32::MAX);
    limits
        .reconnect_backoff
        .saturating_mul(factor)
        .min(limits.reconnect_backoff_max)
}

/// What the decisions passed so far in this round will cost once carried
/// out (they are charged for real only when recorded), so that the guards
/// count them for the candidates after them.
pub(super) struct Pass {
    /// Cancels/terminates passed this round.
    pub(super) spent: usize,
    /// Client histories as they will be after this round's decisions.
    pub(super) clients: HashMap<ClientKey, ClientHistory>,
}

impl Pass {
    pub(super) fn history<'a>(
        &'a self,
        memory: &'a Memory,
        client: &ClientKey,
    ) -> Option<&'a ClientHistory> {
        self.clients
            .get(client)
            .or_else(|| memory.clients.get(client))
    }

    /// Counts `d` as if carried out; tells of a reconnect loop.
    pub(super) fn spend(
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
pub(super) fn guard(
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
            if let Some(wait_left) = wait.checked_sub(since).filter(|left| !left.is_zero()) {
                return Some(HoldReason::ReconnectBackoff {
                    client,
                    actions: h.actions,
                    wait_left,
                });
            }
        }
    }
    let spent = memory.budget.spent().saturating_add(pass.spent);
    (spent >= limits.max_actions as usize).then_some(HoldReason::Budget {
        max_actions: limits.max_actions,
        per: limits.per,
    })
}

/// The synchronous standbys the server can count on right now.
pub(super) struct Quorum {
    /// `None`: no guard (disabled, no synchronous replication, or a standby).
    pub(super) spec: Option<(String, u32)>,
    /// Healthy synchronous candidates, by pid, with their names.
    pub(super) healthy: Vec<(i32, String)>,
}

impl Quorum {
    pub(super) fn new(policy: &Policy, snapshot: &Snapshot, measures: &[Measures]) -> Quorum {
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

    pub(super) fn would_break(&self, ws: &Walsender) -> Option<HoldReason> {
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
    pub(super) fn lose(&mut self, ws: &Walsender) {
        self.healthy.retain(|(pid, _)| *pid != ws.id.pid);
    }
}
