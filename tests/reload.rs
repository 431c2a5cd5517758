//! Reload equivalence, on the pure engine: after a reload the engine
//! decides as if it had been started with the new policy at that moment,
//! except for what it keeps on purpose (README, Safety: "What a reload
//! keeps"). Here the rules are kept independent of each other (a budget
//! that never runs out, no reconnect backoff, no synchronous setting), so a
//! rule's decisions depend only on its own memory:
//!
//! - a rule that is new, or whose matchers, conditions or grace changed,
//!   decides exactly as it does in an engine started fresh with the new
//!   policy at the reload;
//! - a rule that did not change decides exactly as it does in an engine
//!   that never reloaded.
//!
//! Conditions measured from the engine's first sight of a state or a flush
//! position (`in_state_for`, `no_progress_for`) are left out: those clocks
//! are kept on purpose across a reload.

use std::path::Path;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use replwarden::config;
use replwarden::engine::{self, Delivery, Memory};
use replwarden::fixtures::{self, at};
use replwarden::policy::{Action, Policy};
use replwarden::snapshot::{ClientAddr, Snapshot, Walsender, WalsenderId};
use replwarden::units::{ByteSize, Lsn};

/// Rule `i`, in one of a few shapes, as TOML.
fn rule(i: usize) -> impl Strategy<Value = String> {
    (
        prop::sample::select(vec![
            "application_name = [\"s*\"]\n",
            "application_name = [\"s1\", \"s3\"]\n",
            "state = [\"streaming\"]\n",
            "",
        ]),
        prop::sample::select(vec![
            "",
            "replay_lag_bytes = \"1MB\"\n",
            "replay_lag_bytes = \"100MB\"\n",
            "no_reply_for = \"30s\"\n",
        ]),
        prop::sample::select(vec!["0s", "10s", "1m"]),
        prop::sample::select(vec!["log", "cancel", "terminate"]),
    )
        .prop_map(move |(m, c, g, a)| {
            // A state matcher without conditions dates its grace from when
            // the state was first seen: a clock kept on purpose.
            let m = if c.is_empty() && (m.is_empty() || m.starts_with("state")) {
                "application_name = [\"s2\"]\n"
            } else {
                m
            };
            format!("[[rule]]\nname = \"r{i}\"\n{m}{c}grace = \"{g}\"\naction = \"{a}\"\n")
        })
}

/// Up to four rules named r0..r5 (so that reloads keep, edit, add and
/// remove rules by name).
fn rules() -> impl Strategy<Value = String> {
    prop::sample::subsequence(vec![0usize, 1, 2, 3, 4, 5], 1..5).prop_flat_map(|names| {
        names
            .into_iter()
            .map(rule)
            .collect::<Vec<_>>()
            .prop_map(|r| r.concat())
    })
}

fn parse(rules: &str) -> Policy {
    let text = format!(
        "[limits]\nmax_actions = 1000000\nreconnect_backoff = \"0s\"\n\
         [sync_guard]\nenabled = false\n{rules}"
    );
    config::parse(Path::new("reload.toml"), &text)
        .expect("generated configs pass check")
        .policy
}

/// One poll's view of the walsenders s1..s3: lag, reply age, state.
fn poll() -> impl Strategy<Value = Vec<(u64, u64, bool)>> {
    prop::collection::vec((0u64..(200 << 20), 0u64..60, any::<bool>()), 3)
}

fn snapshot(rows: &[(u64, u64, bool)], since_t0: Duration) -> Snapshot {
    let walsenders = rows
        .iter()
        .enumerate()
        .map(|(i, &(lag, reply, streaming))| Walsender {
            id: WalsenderId {
                pid: 10 + i as i32,
                backend_start: at(1_700_000_000),
            },
            age: Duration::from_secs(3600) + since_t0,
            application_name: format!("s{}", i + 1),
            client_addr: ClientAddr::Local,
            state: Some(if streaming { "streaming" } else { "catchup" }.into()),
            flush_lsn: Some(Lsn(1 << 30)),
            write_lag_bytes: Some(ByteSize(lag)),
            flush_lag_bytes: Some(ByteSize(lag)),
            replay_lag_bytes: Some(ByteSize(lag)),
            reply_age: Some(Duration::from_secs(reply)),
            // The last reply, on the client's clock: fixed while it is silent.
            reply_time: (at(1_700_000_000) + since_t0).checked_sub(Duration::from_secs(reply)),
            ..fixtures::walsender(0, "")
        })
        .collect();
    Snapshot {
        current_lsn: Some(Lsn(1 << 30)),
        server_time: Some(at(1_700_000_000) + since_t0),
        ..fixtures::snapshot(walsenders)
    }
}

/// Decides, carries everything out, and returns what was decided as
/// comparable tuples.
fn step(
    policy: &Policy,
    memory: &mut Memory,
    s: &Snapshot,
    now: Instant,
) -> Vec<(i32, String, Action)> {
    let round = engine::decide(policy, s, memory, now);
    for d in &round.decisions {
        memory.record(d, Delivery::Done, &policy.limits);
    }
    round
        .decisions
        .iter()
        .map(|d| (d.walsender.id.pid, d.rule.clone(), d.action))
        .collect()
}

/// A rule's text, without its action: what its breach timer measures.
fn timer(rules: &str, name: &str) -> Option<String> {
    let start = rules.find(&format!("name = \"{name}\"\n"))?;
    let rest = &rules[start..];
    let end = rest.find("[[rule]]").unwrap_or(rest.len());
    Some(
        rest[..end]
            .lines()
            .filter(|l| !l.starts_with("action"))
            .collect::<Vec<_>>()
            .join("\n"),
    )
}

proptest! {
    #[test]
    fn a_reload_decides_as_a_fresh_start_except_for_what_it_keeps(
        before in rules(),
        after in rules(),
        polls in prop::collection::vec((poll(), 0u64..30), 2..30),
        reload_at in 0usize..30,
    ) {
        let (old, new) = (parse(&before), parse(&after));
        let reload_at = reload_at % polls.len();
        let t0 = Instant::now();
        let mut now = t0;
        // Reloaded at `reload_at`; never reloaded; started fresh then.
        let (mut reloaded, mut kept, mut fresh) =
            (Memory::default(), Memory::default(), Memory::default());
        for (i, (rows, wait)) in polls.iter().enumerate() {
            now += Duration::from_secs(*wait);
            let s = snapshot(rows, now - t0);
            if i < reload_at {
                step(&old, &mut reloaded, &s, now);
                step(&old, &mut kept, &s, now);
                continue;
            }
            let got = step(&new, &mut reloaded, &s, now);
            let never = step(&old, &mut kept, &s, now);
            let started = step(&new, &mut fresh, &s, now);
            for r in &new.rules {
                let name = &r.name;
                let of = |v: &[(i32, String, Action)]| {
                    v.iter().filter(|d| d.1 == *name).cloned().collect::<Vec<_>>()
                };
                let unchanged = timer(&before, name) == timer(&after, name)
                    && old.rules.iter().any(|o| o.name == *name && o.action == r.action);
                let changed = timer(&before, name) != timer(&after, name);
                if unchanged && i > 0 {
                    prop_assert_eq!(of(&got), of(&never), "unchanged rule {} at poll {}", name, i);
                } else if changed {
                    prop_assert_eq!(of(&got), of(&started), "edited rule {} at poll {}", name, i);
                }
            }
        }
    }
}
