//! The pure decision engine at scale: one poll of 1,000 walsenders against
//! 100 rules (target: under 1 ms). Run: `cargo bench --bench engine`.

use std::path::Path;
use std::time::{Duration, Instant};

use replwarden::config;
use replwarden::engine::{decide, Delivery, Memory};
use replwarden::fixtures::{self, at};
use replwarden::policy::Policy;
use replwarden::snapshot::{ClientAddr, Snapshot, Walsender, WalsenderId};
use replwarden::units::{ByteSize, Lsn};

fn main() {
    divan::main();
}

/// 100 rules of every kind: blocked names, lag, bytes, stale states,
/// reply age, progress; about 60 of them match each walsender (59,400
/// (walsender, rule) pairs a poll).
fn policy() -> Policy {
    let mut toml = String::from("[limits]\nmax_actions = 5\n");
    for i in 0..100 {
        let body = match i % 5 {
            0 => format!("application_name = [\"rogue_{i}_*\", \"!rogue_{i}_ok\"]\naction = \"terminate\""),
            1 => "application_name = [\"standby_*\"]\nreplay_lag = \"5m\"\nreplay_lag_bytes = \"1GB\"\ngrace = \"2m\"\naction = \"terminate\"".to_string(),
            2 => "state = [\"backup\", \"catchup\"]\nin_state_for = \"6h\"\naction = \"terminate\"".to_string(),
            3 => "client_addr = [\"10.0.0.0/8\", \"!10.9.0.0/16\"]\nno_reply_for = \"2m\"\naction = \"cancel\"\nescalate_after = \"15s\"".to_string(),
            _ => "user = [\"repl*\"]\nno_progress_for = \"1m\"\nflush_lag_bytes = \"64MB\"\naction = \"log\"".to_string(),
        };
        toml += &format!("[[rule]]\nname = \"rule-{i}\"\n{body}\n");
    }
    config::parse(Path::new("bench.toml"), &toml)
        .expect("bench policy")
        .policy
}

fn snapshot(polls: u64) -> Snapshot {
    let walsenders = (0..1000)
        .map(|i: u32| Walsender {
            id: WalsenderId {
                pid: 10_000 + i as i32,
                backend_start: at(1_700_000_000 + u64::from(i)),
            },
            age: Duration::from_secs(3600),
            application_name: format!("standby_{i}"),
            client_addr: ClientAddr::Ip(
                format!("10.{}.{}.{}", i % 20, (i / 20) % 250, i % 250)
                    .parse()
                    .unwrap(),
            ),
            state: Some(if i % 50 == 0 { "catchup" } else { "streaming" }.into()),
            sync_state: Some("async".to_string()),
            flush_lsn: Some(Lsn(0x3000_0000 + polls * 0x1000 - u64::from(i % 7) * 0x100)),
            write_lag: Some(Duration::from_millis(2)),
            flush_lag: Some(Duration::from_millis(3)),
            replay_lag: Some(Duration::from_millis(5 + u64::from(i))),
            write_lag_bytes: Some(ByteSize(128)),
            flush_lag_bytes: Some(ByteSize(256)),
            replay_lag_bytes: Some(ByteSize(4096 * u64::from(i))),
            reply_age: Some(Duration::from_millis(900)),
            reply_time: Some(at(1_800_000_000 + polls)),
            slot_name: Some(format!("slot_{i}")),
            retained_wal: Some(ByteSize(16 << 20)),
            ..fixtures::walsender(0, "")
        })
        .collect();
    Snapshot {
        current_lsn: Some(Lsn(0x3000_0000 + polls * 0x1000)),
        server_time: Some(at(1_800_000_001 + polls)),
        ..fixtures::snapshot(walsenders)
    }
}

/// One steady-state poll: memory already holds every instance, and every
/// poll reads a fresh snapshot whose positions and reply times have moved
/// on (a snapshot read once and judged again and again would make every
/// standby fall silent after two minutes of polls: from then on the
/// `no_reply_for` rules would propose 19,000 cancels a poll, which is not
/// the steady state this measures). Making each poll's snapshot is not
/// timed.
#[divan::bench(sample_count = 200)]
fn decide_1000_walsenders_100_rules(bencher: divan::Bencher) {
    let policy = policy();
    let mut memory = Memory::default();
    let t0 = Instant::now();
    for d in decide(&policy, &snapshot(2), &mut memory, t0).decisions {
        memory.record(&d, Delivery::Done, &policy.limits);
    }
    let mut poll = 2u64;
    bencher
        .with_inputs(|| {
            poll += 1;
            (snapshot(poll), t0 + Duration::from_secs(poll))
        })
        .bench_local_refs(|(snapshot, now)| decide(&policy, snapshot, &mut memory, *now));
}
