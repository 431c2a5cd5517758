//! Unit tests of the engine on hand-built snapshots.

use super::*;
use crate::fixtures::{policy, snapshot as snap, walsender as ws};
use crate::snapshot::ClientAddr;
use crate::units::{ByteSize, Lsn};

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
            against: "matches rogue_*, adhoc_*, !adhoc_ok".into()
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
    let p = policy(
        "[[rule]]\nname = \"lag\"\nreplay_lag_bytes = \"1MB\"\ngrace = \"2s\"\naction = \"cancel\"",
    );
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

#[test]
fn a_policy_edited_by_hand_cannot_panic_the_engine() {
    // The engine re-lays its memory for any policy that differs from the
    // one it last saw, however the policy was made or changed.
    let mut p = policy(BLOCK);
    let t0 = Instant::now();
    let mut m = Memory::default();
    let mut w = ws(1, "rogue_x");
    assert_eq!(
        acted(&decide(&p, &snap(vec![w.clone()]), &mut m, t0)),
        [(1, "no-rogue", Action::Terminate)]
    );
    let mut second = p.rules[0].clone();
    second.name = "second".to_string();
    p.rules.push(second);
    w.state = Some("catchup".into());
    let r = decide(&p, &snap(vec![w]), &mut m, t0 + Duration::from_secs(1));
    assert_eq!(acted(&r), [(1, "second", Action::Terminate)]);
}
