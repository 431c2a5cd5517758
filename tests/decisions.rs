//! The engine's decisions when two features meet (issue 20 items 1-4, 6, 9;
//! issue 12 item 2), on hand-built snapshots: what is remembered as done,
//! what the guards count, and what survives a reload, a cancel, a lost
//! connection and an outage.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use replwarden::config;
use replwarden::engine::{decide, explain, Cause, Delivery, HoldReason, Memory, Round, Verdict};
use replwarden::policy::{Action, Policy};
use replwarden::snapshot::{ClientAddr, Snapshot, Walsender, WalsenderId};
use replwarden::units::{ByteSize, Lsn};

fn policy(toml: &str) -> Policy {
    config::parse(Path::new("test.toml"), toml).unwrap().policy
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
        reply_time: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000)),
        slot_name: None,
        retained_wal: None,
    }
}

fn sync(pid: i32, app: &str, sync_state: &str) -> Walsender {
    let mut w = ws(pid, app);
    w.sync_state = Some(sync_state.to_string());
    w
}

fn snap(walsenders: Vec<Walsender>) -> Snapshot {
    Snapshot {
        in_recovery: false,
        current_lsn: Some(Lsn(0x3000000)),
        role: "replwarden".to_string(),
        synchronous_standby_names: String::new(),
        walsenders,
        hidden: vec![],
        server_time: None,
    }
}

/// Decides, then records every decision with `delivery`.
fn act(p: &Policy, s: &Snapshot, m: &mut Memory, now: Instant, delivery: Delivery) -> Round {
    let r = explain(p, s, m, now);
    for d in &r.decisions {
        m.record(d, delivery, &p.limits);
    }
    r
}

fn done(p: &Policy, s: &Snapshot, m: &mut Memory, now: Instant) -> Round {
    act(p, s, m, now, Delivery::Done)
}

fn acted(round: &Round) -> Vec<(i32, &str, Action)> {
    round
        .decisions
        .iter()
        .map(|d| (d.walsender.id.pid, d.rule.as_str(), d.action))
        .collect()
}

fn secs(t0: Instant, s: u64) -> Instant {
    t0 + Duration::from_secs(s)
}

/// Item 1: a `log` decision takes nothing out of the quorum guard's count;
/// only a cancel or terminate does.
#[test]
fn a_log_rule_before_a_kill_rule_leaves_the_quorum_guard_on() {
    let p = policy(
        "[[rule]]\nname = \"watch\"\napplication_name = [\"standby_*\"]\naction = \"log\"\n\
         [[rule]]\nname = \"kill\"\napplication_name = [\"standby_*\"]\naction = \"terminate\"\n",
    );
    let t0 = Instant::now();
    // The only synchronous standby: logged, never terminated.
    let mut s = snap(vec![sync(1, "standby_a", "sync")]);
    s.synchronous_standby_names = "FIRST 1 (standby_a)".into();
    let r = done(&p, &s, &mut Memory::default(), t0);
    assert_eq!(acted(&r), [(1, "watch", Action::Log)]);
    assert!(matches!(r.held[0].reason, HoldReason::SyncQuorum { .. }));
    // ANY 1 of two: one may go, not both.
    let mut s = snap(vec![
        sync(1, "standby_a", "quorum"),
        sync(2, "standby_b", "quorum"),
    ]);
    s.synchronous_standby_names = "ANY 1 (standby_a, standby_b)".into();
    let r = done(&p, &s, &mut Memory::default(), t0);
    let kills = r
        .decisions
        .iter()
        .filter(|d| d.action != Action::Log)
        .count();
    assert_eq!(kills, 1, "{:?}", acted(&r));
}

const LAG_1MB: &str =
    "[[rule]]\nname = \"lag\"\nreplay_lag_bytes = \"1MB\"\ngrace = \"10m\"\naction = \"terminate\"\n";
const LAG_1GB: &str =
    "[[rule]]\nname = \"lag\"\nreplay_lag_bytes = \"1GB\"\ngrace = \"10m\"\naction = \"terminate\"\n";

fn lagging(bytes: u64) -> Snapshot {
    let mut w = ws(7, "standby");
    w.replay_lag_bytes = Some(ByteSize(bytes));
    snap(vec![w])
}

/// Item 2: an edited rule's grace counts from when its new conditions hold.
#[test]
fn an_edited_rule_counts_its_grace_from_its_new_conditions() {
    let t0 = Instant::now();
    let mut m = Memory::default();
    let small = policy(LAG_1MB);
    // 5 MB behind: the 1MB rule's grace runs for 9 minutes.
    assert!(done(&small, &lagging(5 << 20), &mut m, t0)
        .decisions
        .is_empty());
    assert!(done(&small, &lagging(5 << 20), &mut m, secs(t0, 540))
        .decisions
        .is_empty());
    // Edited to 1GB; 2 GB behind from minute 9.5: the grace starts then.
    let big = policy(LAG_1GB);
    let r = done(&big, &lagging(2 << 30), &mut m, secs(t0, 570));
    assert!(r.decisions.is_empty(), "fired at once: {:?}", acted(&r));
    assert!(done(&big, &lagging(2 << 30), &mut m, secs(t0, 1169))
        .decisions
        .is_empty());
    let r = done(&big, &lagging(2 << 30), &mut m, secs(t0, 1170));
    assert_eq!(acted(&r), [(7, "lag", Action::Terminate)]);
}

/// Issue 12 item 2: a rule whose action goes from `log` to `terminate`
/// acts on walsenders it already judged (its breach timer is kept: the
/// conditions did not change).
#[test]
fn a_log_rule_turned_terminate_acts_on_walsenders_already_logged() {
    let t0 = Instant::now();
    let mut m = Memory::default();
    let log = policy(&LAG_1MB.replace("terminate", "log"));
    assert!(done(&log, &lagging(5 << 20), &mut m, t0)
        .decisions
        .is_empty());
    let r = done(&log, &lagging(5 << 20), &mut m, secs(t0, 600));
    assert_eq!(acted(&r), [(7, "lag", Action::Log)]);
    assert!(done(&log, &lagging(5 << 20), &mut m, secs(t0, 610))
        .decisions
        .is_empty());
    let r = done(&policy(LAG_1MB), &lagging(5 << 20), &mut m, secs(t0, 620));
    assert_eq!(acted(&r), [(7, "lag", Action::Terminate)]);
    // A reload that changes nothing about it keeps it done.
    let again = policy(&format!(
        "{LAG_1MB}[[rule]]\nname = \"x\"\nuser = [\"nobody\"]\n"
    ));
    assert!(done(&again, &lagging(5 << 20), &mut m, secs(t0, 630))
        .decisions
        .is_empty());
}

const BLOCK: &str =
    "[[rule]]\nname = \"block\"\napplication_name = [\"rogue_*\"]\naction = \"terminate\"\n";

/// Issue 12 item 2: from dry run to enforcing, the walsenders judged in the
/// dry run are acted on; while the dry run lasts they are not logged again.
#[test]
fn a_dry_run_decision_is_not_done_once_enforcing() {
    let p = policy(BLOCK);
    let t0 = Instant::now();
    let s = snap(vec![ws(2, "rogue_x")]);
    let mut m = Memory::default();
    m.set_dry_run(true);
    let r = act(&p, &s, &mut m, t0, Delivery::DryRun);
    assert_eq!(acted(&r), [(2, "block", Action::Terminate)]);
    let r = act(&p, &s, &mut m, secs(t0, 1), Delivery::DryRun);
    assert!(r.decisions.is_empty(), "a dry run says it once");
    m.set_dry_run(false);
    let r = done(&p, &s, &mut m, secs(t0, 2));
    assert_eq!(acted(&r), [(2, "block", Action::Terminate)]);
    assert_eq!(r.decisions[0].cause, Cause::Breach);
    assert!(
        r.loops.is_empty() && r.held.is_empty(),
        "the same instance: no loop"
    );
    assert!(done(&p, &s, &mut m, secs(t0, 3)).decisions.is_empty());
}

/// A decision not attempted supersedes a dry run's simulation of it: back
/// in a dry run, it is simulated (and logged) again, not counted as done.
#[test]
fn a_decision_not_attempted_is_not_done_in_a_dry_run_either() {
    let p = policy(BLOCK);
    let t0 = Instant::now();
    let s = snap(vec![ws(2, "rogue_x")]);
    let mut m = Memory::default();
    m.set_dry_run(true);
    assert_eq!(act(&p, &s, &mut m, t0, Delivery::DryRun).decisions.len(), 1);
    m.set_dry_run(false);
    let r = act(&p, &s, &mut m, secs(t0, 1), Delivery::NotAttempted);
    assert_eq!(r.decisions.len(), 1);
    m.set_dry_run(true);
    let r = act(&p, &s, &mut m, secs(t0, 2), Delivery::DryRun);
    assert_eq!(acted(&r), [(2, "block", Action::Terminate)]);
}

/// Item 3: after a lost connection, the decisions after the one in flight
/// are not done, cost nothing, and are decided again.
#[test]
fn a_connection_lost_mid_poll_leaves_the_later_decisions_undone() {
    let p = policy(&format!("[limits]\nmax_actions = 3\n{BLOCK}"));
    let t0 = Instant::now();
    let s = snap(vec![ws(1, "rogue_a"), ws(2, "rogue_b")]);
    let mut m = Memory::default();
    let r = explain(&p, &s, &mut m, t0);
    assert_eq!(r.decisions.len(), 2);
    // The first signal's connection breaks; the second is never tried.
    assert_eq!(m.record(&r.decisions[0], Delivery::Failed, &p.limits), None);
    assert_eq!(
        m.record(&r.decisions[1], Delivery::NotAttempted, &p.limits),
        None
    );
    m.interrupted();
    // After reconnecting: the first is retried, the second decided afresh,
    // and the budget of 3 holds the failed signal and both (the untried one
    // cost nothing).
    let r = done(&p, &s, &mut m, secs(t0, 5));
    let got: Vec<_> = r
        .decisions
        .iter()
        .map(|d| (d.walsender.id.pid, d.cause.clone()))
        .collect();
    assert_eq!(got, [(1, Cause::Retry { attempt: 2 }), (2, Cause::Breach)]);
    assert!(r.held.is_empty(), "{:?}", r.held);
    assert!(r.loops.is_empty());
}

/// Item 4: the escalation clock belongs to the instance and the rule, even
/// when the cancel makes the rule stop matching.
#[test]
fn escalate_after_survives_a_cancel_that_changes_what_the_rule_matches() {
    let p = policy(
        "[[rule]]\nname = \"silent\"\nstate = [\"streaming\"]\nno_reply_for = \"2m\"\n\
         action = \"cancel\"\nescalate_after = \"15s\"\n",
    );
    // Silence counts from the poll that saw `reply_time` (one clock): a
    // first poll 200 s before, with no reply since.
    let t0 = Instant::now() + Duration::from_secs(200);
    let mut w = ws(3, "standby_c");
    w.reply_age = Some(Duration::from_secs(200));
    let mut m = Memory::default();
    assert!(done(
        &p,
        &snap(vec![w.clone()]),
        &mut m,
        t0 - Duration::from_secs(200)
    )
    .decisions
    .is_empty());
    let r = done(&p, &snap(vec![w.clone()]), &mut m, t0);
    assert_eq!(acted(&r), [(3, "silent", Action::Cancel)]);
    // The client keeps its session: the walsender falls back to startup.
    w.state = Some("startup".into());
    w.reply_age = None;
    w.reply_time = None;
    assert!(done(&p, &snap(vec![w.clone()]), &mut m, secs(t0, 6))
        .decisions
        .is_empty());
    let r = done(&p, &snap(vec![w.clone()]), &mut m, secs(t0, 15));
    assert_eq!(acted(&r), [(3, "silent", Action::Terminate)]);
    assert!(matches!(r.decisions[0].cause, Cause::Escalation { .. }));
    assert!(r.loops.is_empty());
    // Back to streaming and silent: no second cancel on the same instance.
    w.state = Some("streaming".into());
    w.reply_age = Some(Duration::from_secs(300));
    w.reply_time = Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000));
    let r = done(&p, &snap(vec![w]), &mut m, secs(t0, 21));
    assert!(
        r.decisions.is_empty() && r.loops.is_empty(),
        "{:?}",
        acted(&r)
    );
}

/// Item 6: a reconnect loop needs a new process instance.
#[test]
fn a_loop_needs_a_new_process_instance() {
    let p = policy(
        "[[rule]]\nname = \"hung\"\nno_reply_for = \"1m\"\naction = \"terminate\"\n\
         [[rule]]\nname = \"stale\"\nreplay_lag_bytes = \"1MB\"\naction = \"terminate\"\n",
    );
    // Silence counts from the poll that saw `reply_time` (one clock): each
    // memory first sees its walsenders 120 s before t0, with no reply since.
    let t0 = Instant::now() + Duration::from_secs(120);
    let before = t0 - Duration::from_secs(120);
    // Two live connections of one client, both broken, in one poll.
    let mut a = ws(1, "standby");
    a.reply_age = Some(Duration::from_secs(120));
    let mut b = ws(2, "standby");
    b.reply_age = Some(Duration::from_secs(120));
    let mut m = Memory::default();
    assert!(done(&p, &snap(vec![a.clone(), b.clone()]), &mut m, before)
        .decisions
        .is_empty());
    let r = done(&p, &snap(vec![a.clone(), b.clone()]), &mut m, t0);
    assert_eq!(r.decisions.len(), 2, "held: {:?}", r.held);
    assert!(r.loops.is_empty());
    // One frozen standby broken by two rules, the second later.
    let mut c = ws(3, "frozen");
    c.reply_age = Some(Duration::from_secs(120));
    let mut m = Memory::default();
    assert!(done(&p, &snap(vec![c.clone()]), &mut m, before)
        .decisions
        .is_empty());
    let r = done(&p, &snap(vec![c.clone()]), &mut m, t0);
    assert_eq!(acted(&r), [(3, "hung", Action::Terminate)]);
    c.replay_lag_bytes = Some(ByteSize(64 << 20));
    let r = done(&p, &snap(vec![c.clone()]), &mut m, secs(t0, 2));
    assert_eq!(acted(&r), [(3, "stale", Action::Terminate)]);
    assert!(r.loops.is_empty() && r.held.is_empty());
    // A new instance of the client after the action is a reconnect.
    let mut c2 = c.clone();
    c2.id = WalsenderId {
        pid: 4,
        backend_start: c.id.backend_start + Duration::from_secs(3),
    };
    let r = done(&p, &snap(vec![c2.clone()]), &mut m, secs(t0, 4));
    assert!(r.decisions.is_empty());
    assert!(matches!(
        r.held[0].reason,
        HoldReason::ReconnectBackoff { actions: 1, .. }
    ));
    let r = done(&p, &snap(vec![c2]), &mut m, secs(t0, 10));
    assert_eq!(r.loops.len(), 1);
    assert_eq!(r.loops[0].actions, 2);
}

/// Item 9: actions the budget deferred run in the order they were deferred.
#[test]
fn deferred_actions_run_in_the_order_they_were_deferred() {
    let p = policy(&format!("[limits]\nmax_actions = 1\nper = \"1m\"\n{BLOCK}"));
    let t0 = Instant::now();
    let mut m = Memory::default();
    let r = done(
        &p,
        &snap(vec![ws(1, "rogue_a"), ws(9, "rogue_b")]),
        &mut m,
        t0,
    );
    assert_eq!(acted(&r), [(1, "block", Action::Terminate)]);
    // A later rogue with a lower pid is deferred after pid 9.
    let s = snap(vec![ws(5, "rogue_c"), ws(9, "rogue_b")]);
    let r = done(&p, &s, &mut m, secs(t0, 10));
    assert_eq!(r.held.len(), 2);
    let r = done(&p, &s, &mut m, secs(t0, 60));
    assert_eq!(acted(&r), [(9, "block", Action::Terminate)]);
    let r = done(&p, &snap(vec![ws(5, "rogue_c")]), &mut m, secs(t0, 120));
    assert_eq!(acted(&r), [(5, "block", Action::Terminate)]);
}

/// Item 9: after an outage a breach must be seen to hold again, for its
/// whole grace, before a rule acts.
#[test]
fn after_an_outage_a_grace_starts_over() {
    let p = policy(LAG_1MB);
    let t0 = Instant::now();
    let mut m = Memory::default();
    assert!(done(&p, &lagging(5 << 20), &mut m, t0).decisions.is_empty());
    // The server could not be seen from minute 1 to minute 30.
    m.interrupted();
    let r = explain(&p, &lagging(5 << 20), &mut m, secs(t0, 1800));
    assert!(r.decisions.is_empty(), "stale evidence: {:?}", acted(&r));
    assert!(matches!(r.verdicts[0].2, Verdict::InGrace { .. }));
    let r = done(&p, &lagging(5 << 20), &mut m, secs(t0, 2400));
    assert_eq!(acted(&r), [(7, "lag", Action::Terminate)]);
}

/// Durations of any length (a config may say `"300000000000y"`) never make
/// the engine's clock arithmetic panic.
#[test]
fn durations_past_the_end_of_the_clock_do_not_panic() {
    let mut p = policy(
        "[[rule]]\nname = \"r\"\nreplay_lag_bytes = \"1MB\"\nin_state_for = \"1h\"\n\
         no_progress_for = \"1h\"\naction = \"cancel\"\nescalate_after = \"1h\"\n\
         [[rule]]\nname = \"g\"\nreplay_lag_bytes = \"1MB\"\n",
    );
    let end = Duration::MAX;
    for r in &mut p.rules {
        r.grace = end;
        r.conditions.in_state_for = r.conditions.in_state_for.map(|_| end);
        r.conditions.no_progress_for = r.conditions.no_progress_for.map(|_| end);
        r.escalate_after = r.escalate_after.map(|_| end);
    }
    p.limits.per = end;
    p.limits.reconnect_backoff = end;
    p.limits.reconnect_backoff_max = end;
    let t0 = Instant::now();
    let mut m = Memory::default();
    for s in [0, 1, 100_000] {
        let r = decide(&p, &lagging(5 << 20), &mut m, secs(t0, s));
        assert!(r.decisions.is_empty());
        assert_eq!(r.wake_at, None);
    }
}
