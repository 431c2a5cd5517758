//! The decision engine: a pure function from (policy, snapshot, remembered
//! state, now) to decisions. No I/O and no clock reads: `now` is a parameter,
//! so every timing rule is tested with plain `#[test]`s.
//!
//! What it remembers ([`Memory`]) is keyed on [`WalsenderId`] — `(pid,
//! backend_start)` — so nothing carries over to a new process instance, even
//! one that reuses a pid. Memory survives a reload; timers of rules that no
//! longer exist are dropped.

use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, Instant};

use crate::policy::{Action, Conditions, Glob, PatternList, Policy, Rule};
use crate::snapshot::{Snapshot, Walsender, WalsenderId};
use crate::units::{fmt_duration, ByteSize, Lsn};

/// What the engine remembers between polls.
#[derive(Debug, Default)]
pub struct Memory {
    instances: HashMap<WalsenderId, Instance>,
}

/// Per process instance.
#[derive(Debug)]
struct Instance {
    /// The state last seen and since when it has been seen without a break
    /// (PostgreSQL keeps no state-change time).
    state: Option<String>,
    state_since: Instant,
    /// The flush position last seen and when it last moved.
    flush: Option<Lsn>,
    progress_since: Instant,
    /// Per rule name.
    rules: HashMap<String, RuleMemory>,
}

#[derive(Debug, Default)]
struct RuleMemory {
    /// When the rule's conditions started holding without a break.
    breach_since: Option<Instant>,
    /// The last action this rule took on this instance, and when. A rule acts
    /// once per instance, except a cancel escalating to a terminate.
    acted: Option<(Action, Instant)>,
}

impl Memory {
    /// How many process instances are remembered (for tests and the plan).
    pub fn len(&self) -> usize {
        self.instances.len()
    }

    pub fn is_empty(&self) -> bool {
        self.instances.is_empty()
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
}

/// One thing to do.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub rule: String,
    pub action: Action,
    pub cause: Cause,
    pub walsender: Walsender,
    pub evidence: Vec<Evidence>,
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
    /// Already acted on this instance; nothing more to do.
    Done { action: Action, ago: Duration },
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
            Verdict::Done { action, ago } => write!(f, "already acted ({action}, {} ago)", fmt_duration(*ago)),
        }
    }
}

/// The result of one round of deciding.
#[derive(Debug, Default)]
pub struct Round {
    pub decisions: Vec<Decision>,
    /// For each walsender (by index in the snapshot), each matching rule (by
    /// index in the policy) and how it stands.
    pub verdicts: Vec<(usize, usize, Verdict)>,
}

/// Decides what to do about `snapshot` at `now`, updating `memory`.
///
/// The memory is updated as if every decision were carried out: a rule does
/// not act twice on the same instance (whatever the outcome, which the
/// daemon logs), except for cancel → terminate escalation.
pub fn decide(policy: &Policy, snapshot: &Snapshot, memory: &mut Memory, now: Instant) -> Round {
    // Forget instances that are gone: a new process, even with the same pid,
    // starts with a clean slate.
    memory
        .instances
        .retain(|id, _| snapshot.walsenders.iter().any(|w| w.id == *id));

    let mut round = Round::default();
    for (wi, ws) in snapshot.walsenders.iter().enumerate() {
        let inst = memory.instances.entry(ws.id).or_insert_with(|| Instance {
            state: ws.state.clone(),
            state_since: now,
            flush: ws.flush_lsn,
            progress_since: now,
            rules: HashMap::new(),
        });
        if inst.state != ws.state {
            inst.state = ws.state.clone();
            inst.state_since = now;
        }
        if inst.flush != ws.flush_lsn {
            inst.flush = ws.flush_lsn;
            inst.progress_since = now;
        }
        inst.rules
            .retain(|name, _| policy.rules.iter().any(|r| r.name == *name));

        for (ri, rule) in policy.rules.iter().enumerate() {
            if !rule.matchers.matches(ws) {
                inst.rules.remove(&rule.name);
                continue;
            }
            let held = check(&rule.conditions, ws, snapshot.current_lsn, inst, now);
            let mem = inst.rules.entry(rule.name.clone()).or_default();
            let verdict = judge(rule, ws, held, mem, now, &mut round.decisions);
            round.verdicts.push((wi, ri, verdict));
        }
    }
    round
}

/// Updates one rule's memory for one instance and says where it stands,
/// pushing a decision when it acts.
fn judge(
    rule: &Rule,
    ws: &Walsender,
    held: Result<Vec<Evidence>, Vec<String>>,
    mem: &mut RuleMemory,
    now: Instant,
    decisions: &mut Vec<Decision>,
) -> Verdict {
    if let Some((acted, at)) = mem.acted {
        let ago = now.saturating_duration_since(at);
        return match (acted, rule.escalate_after) {
            (Action::Cancel, Some(after)) if ago >= after => {
                mem.acted = Some((Action::Terminate, now));
                decisions.push(Decision {
                    rule: rule.name.clone(),
                    action: Action::Terminate,
                    cause: Cause::Escalation { cancelled_ago: ago },
                    walsender: ws.clone(),
                    evidence: held.unwrap_or_default(),
                });
                Verdict::Fires(Action::Terminate)
            }
            _ => Verdict::Done { action: acted, ago },
        };
    }
    let evidence = match held {
        Ok(evidence) => evidence,
        Err(unmet) => {
            mem.breach_since = None;
            return Verdict::Unmet(unmet);
        }
    };
    let since = *mem.breach_since.get_or_insert(now);
    let held_for = now.saturating_duration_since(since);
    if held_for < rule.grace {
        return Verdict::InGrace {
            held_for,
            grace: rule.grace,
        };
    }
    let evidence = if rule.conditions.is_empty() {
        matcher_evidence(rule, ws)
    } else {
        evidence
    };
    mem.acted = Some((rule.action, now));
    decisions.push(Decision {
        rule: rule.name.clone(),
        action: rule.action,
        cause: Cause::Breach,
        walsender: ws.clone(),
        evidence,
    });
    Verdict::Fires(rule.action)
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
    push("state", &m.state, ws.state.as_deref());
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

/// Checks every condition: all the evidence if all hold, else why not.
fn check(
    c: &Conditions,
    ws: &Walsender,
    current_lsn: Option<Lsn>,
    inst: &Instance,
    now: Instant,
) -> Result<Vec<Evidence>, Vec<String>> {
    let mut evidence = Vec::new();
    let mut unmet = Vec::new();

    let mut over = |name: &'static str,
                    measured: Option<Duration>,
                    limit: Option<Duration>,
                    null_means: &str| {
        let Some(limit) = limit else { return };
        match measured {
            Some(m) if m > limit => evidence.push(Evidence {
                name,
                measured: fmt_duration(m),
                against: format!("> {}", fmt_duration(limit)),
            }),
            Some(m) => unmet.push(format!(
                "{name} {} <= {}",
                fmt_duration(m),
                fmt_duration(limit)
            )),
            None => unmet.push(format!("{name} is NULL ({null_means})")),
        }
    };
    over("write_lag", ws.write_lag, c.write_lag, "caught up");
    over("flush_lag", ws.flush_lag, c.flush_lag, "caught up");
    over("replay_lag", ws.replay_lag, c.replay_lag, "caught up");
    over("no_reply_for", ws.reply_age, c.no_reply_for, "no reply yet");
    let in_state = ws
        .state
        .as_ref()
        .map(|_| now.saturating_duration_since(inst.state_since));
    over("in_state_for", in_state, c.in_state_for, "state unknown");

    let mut bytes_over =
        |name: &'static str, measured: Option<ByteSize>, limit: Option<ByteSize>| {
            let Some(limit) = limit else { return };
            match measured {
                Some(m) if m > limit => evidence.push(Evidence {
                    name,
                    measured: m.to_string(),
                    against: format!("> {limit}"),
                }),
                Some(m) => unmet.push(format!("{name} {m} <= {limit}")),
                None => unmet.push(format!("{name} is NULL (column not reported)")),
            }
        };
    bytes_over("write_lag_bytes", ws.write_lag_bytes, c.write_lag_bytes);
    bytes_over("flush_lag_bytes", ws.flush_lag_bytes, c.flush_lag_bytes);
    bytes_over("replay_lag_bytes", ws.replay_lag_bytes, c.replay_lag_bytes);
    bytes_over("retained_wal", ws.retained_wal, c.retained_wal);

    if let Some(limit) = c.no_progress_for {
        match (ws.flush_lsn, current_lsn) {
            (Some(flush), Some(current)) if flush < current => {
                let stalled = now.saturating_duration_since(inst.progress_since);
                if stalled >= limit {
                    evidence.push(Evidence {
                        name: "no_progress_for",
                        measured: format!(
                            "{} at {flush} while server at {current}",
                            fmt_duration(stalled)
                        ),
                        against: format!(">= {}", fmt_duration(limit)),
                    });
                } else {
                    unmet.push(format!(
                        "no_progress_for: flush {flush} stalled {} < {}",
                        fmt_duration(stalled),
                        fmt_duration(limit)
                    ));
                }
            }
            (Some(_), Some(_)) => {
                unmet.push("no_progress_for: flushed all the server has".to_string())
            }
            _ => unmet.push("no_progress_for: flush_lsn is NULL (column not reported)".to_string()),
        }
    }

    if unmet.is_empty() {
        Ok(evidence)
    } else {
        Err(unmet)
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

    fn ws(pid: i32, app: &str) -> Walsender {
        Walsender {
            id: WalsenderId {
                pid,
                backend_start: SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000 + pid as u64),
            },
            application_name: app.to_string(),
            user: Some("replicator".to_string()),
            client_addr: ClientAddr::Ip("10.1.2.3".parse().unwrap()),
            state: Some("streaming".to_string()),
            sync_state: Some("async".to_string()),
            flush_lsn: Some(Lsn(0x3000000)),
            write_lag: None,
            flush_lag: None,
            replay_lag: None,
            write_lag_bytes: Some(ByteSize(0)),
            flush_lag_bytes: Some(ByteSize(0)),
            replay_lag_bytes: Some(ByteSize(0)),
            reply_age: Some(Duration::from_secs(1)),
            slot_name: None,
            retained_wal: None,
        }
    }

    fn snap(walsenders: Vec<Walsender>) -> Snapshot {
        Snapshot {
            in_recovery: false,
            current_lsn: Some(Lsn(0x3000000)),
            role: "replwarden".to_string(),
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
        let r = decide(&p, &s, &mut m, t0);
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
        let r = decide(&p, &s, &mut m, t0 + Duration::from_secs(1));
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
        decide(&p, &snap(vec![first.clone()]), &mut m, t0);
        let mut reborn = first;
        reborn.id.backend_start += Duration::from_secs(5);
        let r = decide(&p, &snap(vec![reborn]), &mut m, t0 + Duration::from_secs(5));
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
        let r = decide(&p, &snap(vec![lagging(7, 400, 10)]), &mut m, s(0));
        assert!(
            matches!(&r.verdicts[0].2, Verdict::Unmet(why) if why[0].starts_with("replay_lag_bytes"))
        );
        // Both hold: the grace starts.
        let r = decide(&p, &snap(vec![lagging(7, 400, 2 * gib)]), &mut m, s(10));
        assert!(matches!(r.verdicts[0].2, Verdict::InGrace { .. }));
        // A break resets the grace.
        decide(&p, &snap(vec![lagging(7, 200, 2 * gib)]), &mut m, s(60));
        let r = decide(&p, &snap(vec![lagging(7, 400, 2 * gib)]), &mut m, s(70));
        assert_eq!(
            r.verdicts[0].2,
            Verdict::InGrace {
                held_for: Duration::ZERO,
                grace: Duration::from_secs(120)
            }
        );
        let r = decide(&p, &snap(vec![lagging(7, 400, 2 * gib)]), &mut m, s(189));
        assert!(r.decisions.is_empty());
        let r = decide(&p, &snap(vec![lagging(7, 400, 2 * gib)]), &mut m, s(190));
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
        let r = decide(&p, &snap(vec![w]), &mut Memory::default(), Instant::now());
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
        decide(&p, &snap(vec![w.clone()]), &mut m, h(0));
        w.state = Some("backup".into());
        let r = decide(&p, &snap(vec![w.clone()]), &mut m, h(1));
        assert!(matches!(&r.verdicts[0].2, Verdict::Unmet(_)));
        let r = decide(
            &p,
            &snap(vec![w.clone()]),
            &mut m,
            h(7) - Duration::from_secs(1),
        );
        assert!(r.decisions.is_empty());
        let r = decide(
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
        decide(&p, &snapshot, &mut m, s(0));
        // The server moves on; the healthy standby follows, the frozen one does not.
        snapshot.current_lsn = Some(Lsn(0x3100000));
        healthy.flush_lsn = Some(Lsn(0x30F0000));
        frozen.flush_lag_bytes = Some(ByteSize(0x100000));
        snapshot.walsenders = vec![frozen.clone(), healthy.clone()];
        let r = decide(&p, &snapshot, &mut m, s(29));
        assert!(r.decisions.is_empty());
        healthy.flush_lsn = Some(Lsn(0x3100000));
        snapshot.walsenders = vec![frozen, healthy];
        let r = decide(&p, &snapshot, &mut m, s(31));
        assert_eq!(acted(&r), [(5, "hung", Action::Terminate)]);
    }

    #[test]
    fn no_reply_for_uses_the_reply_age() {
        let p = policy("[[rule]]\nname = \"silent\"\nno_reply_for = \"2m\"\naction = \"cancel\"");
        let mut w = ws(3, "standby_c");
        w.reply_age = Some(Duration::from_secs(121));
        let mut quiet = ws(4, "pg_basebackup");
        quiet.reply_age = None;
        let r = decide(
            &p,
            &snap(vec![w, quiet]),
            &mut Memory::default(),
            Instant::now(),
        );
        assert_eq!(acted(&r), [(3, "silent", Action::Cancel)]);
    }

    #[test]
    fn a_cancel_escalates_to_terminate_when_the_instance_survives() {
        let p = policy(
            "[[rule]]\nname = \"silent\"\nno_reply_for = \"2m\"\naction = \"cancel\"\nescalate_after = \"15s\"",
        );
        let t0 = Instant::now();
        let s = |secs| t0 + Duration::from_secs(secs);
        let mut w = ws(3, "standby_c");
        w.reply_age = Some(Duration::from_secs(200));
        let mut m = Memory::default();
        assert_eq!(
            acted(&decide(&p, &snap(vec![w.clone()]), &mut m, s(0))),
            [(3, "silent", Action::Cancel)]
        );
        assert!(decide(&p, &snap(vec![w.clone()]), &mut m, s(14))
            .decisions
            .is_empty());
        let r = decide(&p, &snap(vec![w.clone()]), &mut m, s(15));
        assert_eq!(acted(&r), [(3, "silent", Action::Terminate)]);
        assert_eq!(
            r.decisions[0].cause,
            Cause::Escalation {
                cancelled_ago: Duration::from_secs(15)
            }
        );
        assert!(
            decide(&p, &snap(vec![w]), &mut m, s(60))
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
        assert_eq!(decide(&p, &s, &mut m, t0).decisions.len(), 1);
        assert!(decide(&p, &s, &mut m, t0 + Duration::from_secs(3600))
            .decisions
            .is_empty());
    }

    #[test]
    fn timers_survive_a_reload_and_die_with_their_rule() {
        let t0 = Instant::now();
        let s = |secs| t0 + Duration::from_secs(secs);
        let mut m = Memory::default();
        let snapshot = snap(vec![lagging(7, 400, 2 << 30)]);
        decide(&policy(LAG), &snapshot, &mut m, s(0));
        // Reload: the same rule plus a new one. The lag rule's grace keeps counting.
        let reloaded = format!("{LAG}\n[[rule]]\nname = \"other\"\nuser = [\"nobody\"]\n");
        let r = decide(&policy(&reloaded), &snapshot, &mut m, s(120));
        assert_eq!(acted(&r), [(7, "lag", Action::Terminate)]);
        // Reload without it, then with it again: its memory starts over.
        decide(
            &policy("[[rule]]\nname = \"other\"\nuser = [\"nobody\"]"),
            &snapshot,
            &mut m,
            s(130),
        );
        let r = decide(&policy(LAG), &snapshot, &mut m, s(140));
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
            !decide(&p, &snap(vec![w]), &mut Memory::default(), t0)
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
        let r = decide(
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
}
