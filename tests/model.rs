//! Model-based property test of the pure engine: random sequences of polls
//! (walsenders appearing, reconnecting, changing state, lagging, replying,
//! disappearing; `synchronous_standby_names` changing; reloads with random
//! rule sets; dry run on and off; outages; every signal outcome, a lost
//! connection included) drive [`engine::explain`] the way the daemon does,
//! and the README's Safety invariants are checked after every poll:
//!
//! 1. no cancel/terminate leaves fewer healthy synchronous candidates than
//!    `synchronous_standby_names` requires;
//! 2. no protected walsender is acted on;
//! 3. a rule with conditions acts (cause `breach`) only once they held, by
//!    the engine's own check, at every poll without a break (no outage, no
//!    edit of the rule) for its grace;
//! 4. no more cancels/terminates are charged in any window of `per` than
//!    `max_actions`;
//! 5. nothing is silently dropped: a decision not attempted is not
//!    remembered as done, a failed one with retries left is retried or held;
//! 6. nothing `check` accepts panics (durations past the end of the clock,
//!    time jumping by years, backend_start going back, pid reuse, NULL in every column, huge
//!    LSNs).
//!
//! "The engine's own check" is a shadow engine fed the same polls whose
//! decisions are never recorded: its verdict for a rule and a walsender is
//! `conditions not met` exactly when the rule's conditions do not hold.
//!
//! A normal run tries 256 sequences (or `PROPTEST_CASES`); the README
//! records a run of a million.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use proptest::prelude::*;
use replwarden::condition::Limit;
use replwarden::config;
use replwarden::engine::{self, Cause, Delivery, Memory, Round, Verdict};
use replwarden::fixtures;
use replwarden::policy::{Action, Policy};
use replwarden::snapshot::{Snapshot, WalState, Walsender, WalsenderId};
use replwarden::syncrep;
use replwarden::units::{ByteSize, Lsn};

/// Written `9999h` in generated configs; read as `Duration::MAX`.
const HUGE_MARK: Duration = Duration::from_secs(9999 * 3600);

const APPS: [&str; 5] = [
    "standby_a",
    "standby_b",
    "rogue_x",
    "patroni_1",
    "pg_basebackup",
];
const STATES: [Option<&str>; 5] = [
    Some("streaming"),
    Some("startup"),
    Some("catchup"),
    Some("backup"),
    None,
];
const SYNC: [Option<&str>; 5] = [
    Some("sync"),
    Some("potential"),
    Some("quorum"),
    Some("async"),
    None,
];
const SETTINGS: [&str; 6] = [
    "",
    "standby_a",
    "FIRST 1 (standby_a, standby_b)",
    "ANY 1 (standby_a, standby_b)",
    "2 (standby_a, standby_b)",
    "FIRST 1 (standby_a",
];

/// One rule, as TOML lines.
fn rule(i: usize) -> impl Strategy<Value = String> {
    let matcher = prop::sample::select(vec![
        "",
        "application_name = [\"standby_*\"]\n",
        "application_name = [\"rogue_*\", \"standby_b\"]\n",
        "application_name = [\"*\", \"!patroni_*\"]\n",
        "state = [\"streaming\"]\n",
        "state = [\"startup\", \"backup\"]\n",
        "sync_state = [\"sync\", \"quorum\"]\n",
    ]);
    let condition = prop::sample::select(vec![
        "",
        "",
        "",
        "",
        "",
        "replay_lag_bytes = \"1MB\"\n",
        "flush_lag_bytes = \"1GB\"\n",
        "no_reply_for = \"1m\"\n",
        "replay_lag = \"10s\"\n",
        "in_state_for = \"30s\"\n",
        "in_state_for = \"9999h\"\n",
        "no_progress_for = \"30s\"\n",
        "retained_wal = \"1MB\"\n",
    ]);
    let grace = prop::sample::select(vec!["0s", "0s", "0s", "5s", "1m", "9999h"]);
    let action = prop::sample::select(vec![
        "action = \"log\"\n",
        "action = \"cancel\"\n",
        "action = \"cancel\"\nescalate_after = \"15s\"\n",
        "action = \"cancel\"\nescalate_after = \"9999h\"\n",
        "action = \"terminate\"\n",
    ]);
    (matcher, condition.clone(), condition, grace, action).prop_map(move |(m, c1, c2, g, a)| {
        let key = |c: &str| c.split(' ').next().unwrap_or("").to_string();
        let c2 = if key(c1) == key(c2) { "" } else { c2 };
        // `check` refuses a rule with neither matcher nor condition.
        let m = if m.is_empty() && c1.is_empty() && c2.is_empty() {
            "application_name = [\"rogue_*\"]\n"
        } else {
            m
        };
        format!("[[rule]]\nname = \"r{i}\"\n{m}{c1}{c2}grace = \"{g}\"\n{a}")
    })
}

/// A whole config: limits, maybe `[protect]`, one to four rules.
fn policy_text() -> impl Strategy<Value = String> {
    (
        1u32..5,
        prop::sample::select(vec!["1m", "10s", "9999h"]),
        prop::sample::select(vec!["0s", "10s"]),
        0u32..3,
        any::<bool>(),
        prop::collection::vec(0usize..6, 1..5),
    )
        .prop_flat_map(|(max, per, backoff, retries, protect, names)| {
            let rules: Vec<_> = names.into_iter().map(rule).collect();
            rules.prop_map(move |rules| {
                let protect = if protect {
                    "[protect]\napplication_name = [\"patroni_*\"]\n"
                } else {
                    ""
                };
                // Rule names must be unique: number them in order.
                let rules: Vec<String> = rules
                    .iter()
                    .enumerate()
                    .map(|(i, r)| r.replacen("name = \"r", &format!("name = \"n{i}r"), 1))
                    .collect();
                format!(
                    "[limits]\nmax_actions = {max}\nper = \"{per}\"\nreconnect_backoff = \"{backoff}\"\n\
                     max_retries = {retries}\n{protect}{}",
                    rules.concat()
                )
            })
        })
}

/// What a signal did, as the daemon reports it.
#[derive(Clone, Copy, Debug)]
enum Signal {
    Done,
    Failed,
    Refused,
    /// The connection breaks on this one: it counts as failed, the rest of
    /// the poll is not attempted.
    Lost,
}

#[derive(Clone, Debug)]
enum Step {
    Appear {
        app: usize,
        pid: i32,
        start_secs: i64,
        age: Duration,
    },
    Reconnect {
        which: usize,
        same_pid: bool,
        start_secs: i64,
    },
    State(usize, usize),
    Sync(usize, usize),
    Lag(usize, Option<u64>),
    Reply(usize, Option<Duration>),
    Flush(usize, Option<u64>),
    Server(Option<u64>),
    Nulls(usize),
    Disappear(usize),
    Setting(usize),
    Reload(String),
    DryRun(bool),
    Outage,
    Advance(Duration),
    Poll(Vec<Signal>),
}

fn lsn() -> impl Strategy<Value = u64> {
    prop_oneof![0u64..0x1000_0000, Just(u64::MAX), Just(u64::MAX - 1)]
}

fn step() -> impl Strategy<Value = Step> {
    let duration = prop_oneof![
        Just(Duration::ZERO),
        (0u64..120).prop_map(Duration::from_secs),
        Just(Duration::from_secs(3600)),
        Just(Duration::from_secs(100 * 365 * 86_400)),
        Just(Duration::MAX),
    ];
    let signal = prop_oneof![
        6 => Just(Signal::Done),
        2 => Just(Signal::Failed),
        1 => Just(Signal::Refused),
        1 => Just(Signal::Lost),
    ];
    let advance = prop_oneof![
        4 => (0u64..20_000).prop_map(Duration::from_millis),
        2 => (10u64..120).prop_map(Duration::from_secs),
        1 => Just(Duration::from_secs(3600)),
        1 => Just(Duration::from_secs(10 * 365 * 86_400)),
    ];
    prop_oneof![
        3 => (0..APPS.len(), 1i32..12, -10_000i64..10_000, duration.clone())
            .prop_map(|(app, pid, start_secs, age)| Step::Appear { app, pid, start_secs, age }),
        2 => (any::<usize>(), any::<bool>(), -10_000i64..10_000)
            .prop_map(|(which, same_pid, start_secs)| Step::Reconnect { which, same_pid, start_secs }),
        2 => (any::<usize>(), 0..STATES.len()).prop_map(|(w, s)| Step::State(w, s)),
        1 => (any::<usize>(), 0..SYNC.len()).prop_map(|(w, s)| Step::Sync(w, s)),
        2 => (any::<usize>(), prop::option::of(lsn())).prop_map(|(w, b)| Step::Lag(w, b)),
        2 => (any::<usize>(), prop::option::of(duration.clone())).prop_map(|(w, d)| Step::Reply(w, d)),
        1 => (any::<usize>(), prop::option::of(lsn())).prop_map(|(w, l)| Step::Flush(w, l)),
        1 => prop::option::of(lsn()).prop_map(Step::Server),
        1 => any::<usize>().prop_map(Step::Nulls),
        1 => any::<usize>().prop_map(Step::Disappear),
        2 => (0..SETTINGS.len()).prop_map(Step::Setting),
        1 => policy_text().prop_map(Step::Reload),
        1 => any::<bool>().prop_map(Step::DryRun),
        1 => Just(Step::Outage),
        4 => advance.prop_map(Step::Advance),
        6 => prop::collection::vec(signal, 0..6).prop_map(Step::Poll),
    ]
}

fn standby(app: &str, pid: i32, start_secs: i64, age: Duration) -> Walsender {
    let base = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let backend_start = if start_secs >= 0 {
        base + Duration::from_secs(start_secs as u64)
    } else {
        base - Duration::from_secs(start_secs.unsigned_abs())
    };
    Walsender {
        id: WalsenderId { pid, backend_start },
        age,
        reply_time: Some(base),
        ..fixtures::walsender(pid, app)
    }
}

/// A rule as far as its breach timer goes (its text without the action).
fn timer_key(policy_text: &str, rule: &str) -> String {
    let start = policy_text
        .find(&format!("name = \"{rule}\"\n"))
        .expect("rule in its text");
    let rest = &policy_text[start..];
    let end = rest[1..].find("[[rule]]").map_or(rest.len(), |e| e + 1);
    rest[..end]
        .lines()
        .filter(|l| !l.starts_with("action") && !l.starts_with("escalate_after"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The world the engine watches, the engine, its shadow, and what the
/// model has seen.
struct World {
    policy: Policy,
    /// Each rule's [`timer_key`], by index.
    keys: Vec<String>,
    snapshot: Snapshot,
    now: Instant,
    dry_run: bool,
    memory: Memory,
    shadow: Memory,
    /// (instance, timer key) → since when the conditions held at every poll.
    held: HashMap<(WalsenderId, String), Instant>,
    /// When each charged cancel/terminate was decided.
    charged: Vec<Instant>,
    /// Decisions reported not attempted, or failed with retries left,
    /// awaiting the next poll: (instance, rule name, failed?).
    owed: Vec<(WalsenderId, String, bool)>,
}

impl World {
    fn new(text: String) -> World {
        let mut policy = config::parse(Path::new("model.toml"), &text)
            .expect("generated configs pass check")
            .policy;
        // 9999h stands for a duration past the end of the clock, whatever
        // bound `check` puts on durations.
        let huge = |d: &mut Duration| {
            if *d == HUGE_MARK {
                *d = Duration::MAX;
            }
        };
        for r in &mut policy.rules {
            huge(&mut r.grace);
            for name in ["in_state_for", "no_progress_for"] {
                if let Some(Limit::Time(mut d)) = r.conditions.get(name) {
                    huge(&mut d);
                    r.conditions.set(name, Limit::Time(d));
                }
            }
            if let Some(d) = &mut r.escalate_after {
                huge(d);
            }
        }
        huge(&mut policy.limits.per);
        let keys = policy
            .rules
            .iter()
            .map(|r| timer_key(&text, &r.name))
            .collect();
        World {
            policy,
            keys,
            snapshot: Snapshot {
                // Start from the riskiest case: one synchronous standby, and
                // the server needs it.
                synchronous_standby_names: "standby_a".to_string(),
                server_time: None,
                ..fixtures::snapshot(vec![Walsender {
                    sync_state: Some("sync".into()),
                    ..standby("standby_a", 1, 0, Duration::from_secs(60))
                }])
            },
            now: Instant::now(),
            dry_run: false,
            memory: Memory::default(),
            shadow: Memory::default(),
            held: HashMap::new(),
            charged: Vec::new(),
            owed: Vec::new(),
        }
    }

    fn pick(&mut self, which: usize) -> Option<&mut Walsender> {
        let n = self.snapshot.walsenders.len();
        (n > 0).then(|| &mut self.snapshot.walsenders[which % n])
    }

    fn step(&mut self, step: Step) -> Result<(), TestCaseError> {
        match step {
            Step::Appear {
                app,
                pid,
                start_secs,
                age,
            } => {
                // A live pid is unique; a dead one may come back (reuse).
                if self.snapshot.walsenders.iter().all(|w| w.id.pid != pid) {
                    let mut w = standby(APPS[app], pid, start_secs, age);
                    if APPS[app].starts_with("standby") {
                        w.sync_state = Some("potential".into());
                    }
                    self.snapshot.walsenders.push(w);
                }
            }
            Step::Reconnect {
                which,
                same_pid,
                start_secs,
            } => {
                let n = self.snapshot.walsenders.len();
                if let Some(w) = self.pick(which) {
                    let mut again = w.clone();
                    again.id.backend_start =
                        standby("", 0, start_secs, Duration::ZERO).id.backend_start;
                    if !same_pid {
                        again.id.pid = 100 + n as i32 + (start_secs.unsigned_abs() % 1000) as i32;
                    }
                    again.state = Some("startup".into());
                    again.age = Duration::ZERO;
                    *w = again;
                }
                let mut seen = HashSet::new();
                self.snapshot.walsenders.retain(|w| seen.insert(w.id.pid));
            }
            Step::State(w, s) => {
                if let Some(w) = self.pick(w) {
                    w.state = STATES[s].map(WalState::from);
                }
            }
            Step::Sync(w, s) => {
                if let Some(w) = self.pick(w) {
                    w.sync_state = SYNC[s].map(String::from);
                }
            }
            Step::Lag(w, bytes) => {
                if let Some(w) = self.pick(w) {
                    let b = bytes.map(ByteSize);
                    (w.write_lag_bytes, w.flush_lag_bytes, w.replay_lag_bytes) = (b, b, b);
                    w.retained_wal = b;
                    w.replay_lag = bytes.map(|b| Duration::from_millis(b % 100_000));
                }
            }
            Step::Reply(w, age) => {
                if let Some(w) = self.pick(w) {
                    w.reply_age = age;
                    // A reply: `reply_time` changes (the engine counts
                    // silence from the poll that sees it change).
                    w.reply_time = age.map(|_| {
                        w.reply_time.unwrap_or(SystemTime::UNIX_EPOCH) + Duration::from_millis(1)
                    });
                }
            }
            Step::Flush(w, lsn) => {
                if let Some(w) = self.pick(w) {
                    w.flush_lsn = lsn.map(Lsn);
                }
            }
            Step::Server(lsn) => self.snapshot.current_lsn = lsn.map(Lsn),
            Step::Nulls(w) => {
                if let Some(w) = self.pick(w) {
                    *w = fixtures::nulled(w.clone());
                }
            }
            Step::Disappear(w) => {
                let n = self.snapshot.walsenders.len();
                if n > 0 {
                    self.snapshot.walsenders.remove(w % n);
                }
            }
            Step::Setting(i) => self.snapshot.synchronous_standby_names = SETTINGS[i].into(),
            Step::Reload(text) => {
                *self = World {
                    memory: std::mem::take(&mut self.memory),
                    shadow: std::mem::take(&mut self.shadow),
                    held: std::mem::take(&mut self.held),
                    charged: std::mem::take(&mut self.charged),
                    // An edited rule starts over rather than retrying.
                    owed: Vec::new(),
                    snapshot: self.snapshot.clone(),
                    now: self.now,
                    dry_run: self.dry_run,
                    ..World::new(text)
                }
            }
            Step::DryRun(on) => self.dry_run = on,
            Step::Outage => {
                self.memory.interrupted();
                self.held.clear();
            }
            Step::Advance(d) => {
                if let Some(t) = self.now.checked_add(d) {
                    self.now = t;
                }
            }
            Step::Poll(signals) => self.poll(&signals)?,
        }
        Ok(())
    }

    fn poll(&mut self, signals: &[Signal]) -> Result<(), TestCaseError> {
        let (policy, snapshot, now) = (&self.policy, &self.snapshot, self.now);
        // The engine's own condition check: the shadow never records, so
        // every matching rule is judged on its conditions at every poll.
        let shadow = engine::explain(policy, snapshot, &mut self.shadow, now);
        let mut holding = HashSet::new();
        for (wi, ri, verdict) in &shadow.verdicts {
            if matches!(
                verdict,
                Verdict::InGrace { .. } | Verdict::Fires(_) | Verdict::Held(_)
            ) {
                let key = self.keys[*ri].clone();
                holding.insert((snapshot.walsenders[*wi].id, key));
            }
        }
        self.held.retain(|k, _| holding.contains(k));
        for k in holding {
            self.held.entry(k).or_insert(now);
        }

        // The budget window, as the engine keeps it: under the `per` in force
        // at each poll (a reload that lengthens it does not bring back what
        // a shorter one let go).
        let per = policy.limits.per;
        self.charged
            .retain(|t| now.saturating_duration_since(*t) < per);
        self.memory.set_dry_run(self.dry_run);
        let round = engine::explain(policy, snapshot, &mut self.memory, now);
        self.check(&round)?;

        // Carry the decisions out as the daemon does.
        let mut lost = false;
        let mut owed = Vec::new();
        let mut signals = signals.iter().copied().cycle();
        for d in &round.decisions {
            let delivery = if d.action == Action::Log {
                Delivery::Done
            } else if lost {
                Delivery::NotAttempted
            } else if self.dry_run {
                Delivery::DryRun
            } else {
                match signals.next().unwrap_or(Signal::Done) {
                    Signal::Done => Delivery::Done,
                    Signal::Failed => Delivery::Failed,
                    Signal::Refused => Delivery::Final,
                    Signal::Lost => {
                        lost = true;
                        Delivery::Failed
                    }
                }
            };
            let gave_up = self.memory.record(d, delivery, &policy.limits);
            if d.action != Action::Log && delivery != Delivery::NotAttempted {
                self.charged.push(d.decided_at);
            }
            let retried = delivery == Delivery::Failed && gave_up.is_none();
            if delivery == Delivery::NotAttempted || retried {
                owed.push((d.walsender.id, d.rule.clone(), retried));
            }
        }
        if lost {
            self.memory.interrupted();
            self.held.clear();
        }
        self.owed = owed;
        Ok(())
    }

    /// The invariants, after one round.
    fn check(&self, round: &Round) -> Result<(), TestCaseError> {
        let (policy, snapshot, now) = (&self.policy, &self.snapshot, self.now);
        let kills: Vec<_> = round
            .decisions
            .iter()
            .filter(|d| d.action != Action::Log)
            .collect();

        // 1. The synchronous quorum.
        let setting = snapshot.synchronous_standby_names.trim();
        if policy.sync_guard.enabled && !snapshot.in_recovery && !setting.is_empty() {
            let required = match syncrep::parse(setting) {
                Ok(Some(spec)) => spec.num_sync,
                Ok(None) => 0,
                Err(_) => u32::MAX,
            };
            // Healthy as the engine measures silence (one clock: from the
            // poll that saw `reply_time` change; `src/clocks.rs` is tested
            // on its own), so this checks the guard's counting.
            let healthy: HashSet<i32> = snapshot
                .walsenders
                .iter()
                .zip(&round.measures)
                .filter(|(w, m)| {
                    matches!(
                        w.sync_state.as_deref(),
                        Some("sync" | "potential" | "quorum")
                    ) && w.state == Some(WalState::Streaming)
                        && m.silence
                            .is_some_and(|s| s <= policy.sync_guard.healthy_reply_within)
                })
                .map(|(w, _)| w.id.pid)
                .collect();
            let killed: HashSet<i32> = kills.iter().map(|d| d.walsender.id.pid).collect();
            let left = healthy.difference(&killed).count() as u64;
            prop_assert!(
                healthy.is_disjoint(&killed) || left >= u64::from(required),
                "quorum broken: {setting:?} needs {required}, healthy {healthy:?}, killed {killed:?}"
            );
        }

        let mut seen = HashSet::new();
        for d in &round.decisions {
            // Each (instance, rule) at most once a round.
            prop_assert!(
                seen.insert((d.walsender.id, d.rule.clone())),
                "twice: {d:?}"
            );
            // 2. Protected walsenders.
            prop_assert!(!policy.protects(&d.walsender), "acted on protected {d:?}");
            // 3. Held without a break for the grace.
            let rule = policy.rules.iter().find(|r| r.name == d.rule).unwrap();
            if d.cause == Cause::Breach && !rule.conditions.is_empty() {
                let key = (d.walsender.id, self.keys[d.rule_index].clone());
                let since = self.held.get(&key).copied();
                prop_assert!(
                    since.is_some_and(|s| now.saturating_duration_since(s) >= rule.grace),
                    "acted before its grace: {} on {:?}, held since {:?} (now {:?}), grace {:?}",
                    d.rule,
                    d.walsender.id,
                    since.map(|s| now.saturating_duration_since(s)),
                    now,
                    rule.grace
                );
            }
        }

        // 4. The budget: what was charged in the window, and this round's.
        let in_window = self
            .charged
            .iter()
            .chain(kills.iter().map(|d| &d.decided_at))
            .filter(|t| now.saturating_duration_since(**t) < policy.limits.per)
            .count();
        // (A reload may lower the budget below what was spent already: then
        // nothing more is done until the window frees.)
        prop_assert!(
            kills.is_empty() || in_window <= policy.limits.max_actions as usize,
            "budget: {in_window} in {:?} > {}",
            policy.limits.per,
            policy.limits.max_actions
        );

        // 5. Nothing owed is dropped: the instance is gone, the rule is gone
        // or protects it, or it is decided again, held, or not done.
        for (id, rule, retried) in &self.owed {
            let Some(wi) = snapshot.walsenders.iter().position(|w| w.id == *id) else {
                continue;
            };
            let Some(ri) = policy.rules.iter().position(|r| r.name == *rule) else {
                continue;
            };
            if policy.protects(&snapshot.walsenders[wi]) {
                continue;
            }
            let ours = |w: &engine::Decision| w.walsender.id == *id && w.rule == *rule;
            let again = round.decisions.iter().any(ours);
            let held = round.held.iter().any(|h| ours(&h.decision));
            let verdict = round
                .verdicts
                .iter()
                .find(|(w, r, _)| *w == wi && *r == ri)
                .map(|v| &v.2);
            if *retried {
                prop_assert!(
                    again || held || verdict.is_none(),
                    "a failed signal to {id:?} by {rule} was neither retried nor held: {verdict:?}"
                );
            } else {
                prop_assert!(
                    !matches!(verdict, Some(Verdict::Done { .. } | Verdict::GaveUp { .. })),
                    "a decision never attempted on {id:?} by {rule} counts as done: {verdict:?}"
                );
            }
        }
        Ok(())
    }
}

proptest! {
    #[test]
    fn the_engine_keeps_its_invariants(
        start in policy_text(),
        steps in prop::collection::vec(step(), 1..80),
    ) {
        let mut world = World::new(start);
        for step in steps {
            world.step(step)?;
        }
    }
}
