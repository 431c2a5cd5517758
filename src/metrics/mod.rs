//! The optional Prometheus endpoint (`[metrics] listen`): what the daemon
//! measures and does, kept in a small registry of families, exposed on
//! `GET /metrics` in the format the scraper asks for (OpenMetrics 1.0.0 or
//! the classic text format 0.0.4), served by hyper.
//!
//! This file is the registry and what feeds it; [`families`] lists the
//! families, `exposition` renders them, `server` is the HTTP side.
//!
//! # Adding a metric
//! 1. A [`Def`] constant (name without `_total`, help, kind) and its place
//!    in [`FAMILIES`] (the exposition order).
//! 2. Feed it from a method of [`Metrics`] with [`State::set`] /
//!    [`State::inc`] (one series), or [`State::replace`] (all of its series
//!    at once). The per-walsender families are made from the last poll's
//!    walsenders when the endpoint is scraped (`walsender_series`), not at
//!    every poll, with their labels from [`walsender_labels`].
//! 3. A row in the README's Metrics table, its value asserted against the
//!    server in `tests/metrics.rs`, and a panel in
//!    `contrib/grafana/replwarden.json` (`tests/dashboards.rs` fails for a
//!    family no panel shows).

use std::collections::{BTreeMap, HashSet, VecDeque};

use rustc_hash::{FxHashMap, FxHashSet};
use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ACCEPT, ALLOW, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::{AbortHandle, JoinSet};

use crate::actions::Outcome;
use crate::basebackup::Backup;
use crate::engine::{Decision, HoldReason, Round};
use crate::policy::{Action, Policy};
use crate::snapshot::{Snapshot, WalsenderId};

mod exposition;
pub mod families;
mod server;

pub use exposition::Format;
use exposition::*;
pub use families::*;
pub use server::{bind, serve};

/// A series' labels, in the order they are printed.
pub type Labels = Vec<(&'static str, String)>;

#[derive(Debug, Default)]
struct Histogram {
    /// Per bucket of [`POLL_BUCKETS`], observations at or under its bound.
    counts: [u64; POLL_BUCKETS.len()],
    sum: f64,
    count: u64,
}

/// The values of every family, and what feeding them needs to remember.
#[derive(Debug, Default)]
pub struct State {
    /// By family name (this build's constants) and, below, labels: a fast
    /// hasher, nothing a client chooses is hashed (a held pair's rule is
    /// the config's).
    series: FxHashMap<&'static str, BTreeMap<Labels, f64>>,
    poll_duration: Histogram,
    /// The (walsender, rule) pairs held at the last poll: a pair held now
    /// and not then starts a hold episode.
    held: FxHashSet<(WalsenderId, String)>,
    /// The last poll's walsenders and, for each, what the engine measured
    /// of it: the per-walsender families are made from them when the
    /// endpoint is scraped, not at every poll (making them at every poll
    /// was most of the daemon's CPU per poll). The snapshot is the poll's
    /// own, shared, not a copy.
    last_poll: Arc<Snapshot>,
    last_measures: Vec<LastMeasure>,
    /// The loaded config's rule names and, by the same index, how many
    /// walsenders each matched at the last poll that ran the engine: the
    /// `replwarden_rule_matches` series are set from them when the
    /// endpoint is scraped (setting them at every poll cost a label and a
    /// search per rule per poll).
    rule_names: Vec<String>,
    rule_matches: Vec<u32>,
}

/// What the engine measured of one walsender at the last poll, as the
/// per-walsender families show it.
#[derive(Debug, Default)]
struct LastMeasure {
    silence: Option<Duration>,
    skew_seconds: Option<f64>,
    /// A base backup's progress and how long its bytes have not moved.
    backup: Option<(Backup, Duration)>,
}

impl State {
    /// Sets one series.
    pub fn set(&mut self, def: &Def, labels: Labels, value: f64) {
        self.series
            .entry(def.name)
            .or_default()
            .insert(labels, value);
    }

    /// Adds 1 to one series (created at 0 first if new).
    pub fn inc(&mut self, def: &Def, labels: Labels) {
        *self
            .series
            .entry(def.name)
            .or_default()
            .entry(labels)
            .or_default() += 1.0;
    }

    /// Creates a series at 0 unless it exists (a counter that `rate()` and
    /// `absent()` can see before its first increment).
    fn touch(&mut self, def: &Def, labels: Labels) {
        self.series
            .entry(def.name)
            .or_default()
            .entry(labels)
            .or_default();
    }

    /// Replaces every series of a family.
    pub fn replace(&mut self, def: &Def, series: impl IntoIterator<Item = (Labels, f64)>) {
        self.series.insert(def.name, series.into_iter().collect());
    }
}

/// Every metric, cheap to clone (clones share the values).
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    state: Arc<Mutex<State>>,
}

impl Metrics {
    pub fn new() -> Metrics {
        let m = Metrics::default();
        m.with(|s| {
            for result in ["ok", "error"] {
                s.touch(&POLLS, vec![("result", result.to_string())]);
            }
            for result in ["success", "failure"] {
                s.touch(&CONFIG_RELOADS, vec![("result", result.to_string())]);
            }
            s.touch(&RECONNECT_LOOPS, vec![]);
            s.set(&CONNECTED, vec![], 0.0);
            s.set(&LOCKED_OUT, vec![], 0.0);
            s.set(&WALSENDERS, vec![], 0.0);
            s.set(&HIDDEN_WALSENDERS, vec![], 0.0);
        });
        m
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        // A panic while holding the lock cannot leave the values in a state
        // worse than stale: keep serving them.
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut state)
    }

    /// The exposition in `format`.
    pub fn render(&self, format: Format) -> String {
        self.with(|s| {
            rule_matches_series(s);
            walsender_series(s);
            render(s, format)
        })
    }

    pub fn set_connected(&self, connected: bool) {
        self.with(|s| s.set(&CONNECTED, vec![], f64::from(u8::from(connected))));
    }

    /// Whether the server refuses the daemon for want of a connection slot
    /// (see [`crate::lockout`]).
    pub fn set_locked_out(&self, locked_out: bool) {
        self.with(|s| s.set(&LOCKED_OUT, vec![], f64::from(u8::from(locked_out))));
    }

    /// A config was loaded (at start or by a reload): its identity, and
    /// every rule's series at 0 so that they exist before anything happens.
    /// The gauges of rules no longer in the config go; counters stay.
    pub fn config_loaded(&self, path: &str, hash: &str, policy: &Policy) {
        self.with(|s| {
            s.replace(
                &CONFIG_INFO,
                [(
                    vec![("path", path.to_string()), ("sha256", hash.to_string())],
                    1.0,
                )],
            );
            // The last poll's counts were for the rules before this load.
            rule_matches_series(s);
            s.rule_matches.clear();
            s.rule_names = policy.rules.iter().map(|r| r.name.clone()).collect();
            let names: HashSet<&str> = policy.rules.iter().map(|r| r.name.as_str()).collect();
            for def in [&RULE_MATCHES, &WALSENDERS_HELD] {
                if let Some(series) = s.series.get_mut(def.name) {
                    series.retain(|labels, _| names.contains(labels[0].1.as_str()));
                }
            }
            for rule in &policy.rules {
                let name = || ("rule", rule.name.clone());
                s.touch(&RULE_MATCHES, vec![name()]);
                let mut actions = vec![rule.action];
                if rule.escalate_after.is_some() {
                    actions.push(Action::Terminate);
                }
                for action in actions {
                    for outcome in possible_outcomes(action) {
                        s.touch(
                            &ACTIONS,
                            vec![
                                name(),
                                ("action", action.to_string()),
                                ("outcome", outcome.to_string()),
                            ],
                        );
                    }
                }
                if rule.action != Action::Log {
                    for reason in HOLD_REASONS {
                        let labels = vec![name(), ("reason", reason.to_string())];
                        s.touch(&WALSENDERS_HELD, labels.clone());
                        s.touch(&HOLDS, labels);
                    }
                }
            }
            // Slot rules (crate::slots) count in the same family.
            for rule in &policy.slots.rules {
                for outcome in crate::slots::pg::possible_outcomes(rule.action) {
                    s.touch(
                        &ACTIONS,
                        vec![
                            ("rule", rule.name.clone()),
                            ("action", rule.action.to_string()),
                            ("outcome", outcome.to_string()),
                        ],
                    );
                }
            }
        });
    }

    pub fn reload(&self, ok: bool) {
        let result = if ok { "success" } else { "failure" };
        self.with(|s| s.inc(&CONFIG_RELOADS, vec![("result", result.to_string())]));
    }

    pub fn poll_failed(&self) {
        self.with(|s| s.inc(&POLLS, vec![("result", "error".to_string())]));
    }

    /// A poll's figures: the per-walsender series replaced by this poll's,
    /// and, when the engine ran (`round`; not while walsenders are
    /// hidden), the rules' matches and holds.
    pub fn polled(&self, snapshot: &Arc<Snapshot>, round: Option<&Round>, took: Duration) {
        self.with(|s| {
            s.inc(&POLLS, vec![("result", "ok".to_string())]);
            let h = &mut s.poll_duration;
            let took = seconds(took);
            for (count, bound) in h.counts.iter_mut().zip(POLL_BUCKETS) {
                if took <= bound {
                    *count += 1;
                }
            }
            h.sum += took;
            h.count += 1;
            s.set(&WALSENDERS, vec![], snapshot.walsenders.len() as f64);
            s.set(&HIDDEN_WALSENDERS, vec![], snapshot.hidden.len() as f64);
            s.last_poll = Arc::clone(snapshot);
            s.last_measures.clear();
            if let Some(round) = round {
                s.last_measures
                    .extend(round.measures.iter().map(|m| LastMeasure {
                        silence: m.silence,
                        skew_seconds: m.skew_seconds,
                        backup: m.backup.map(|b| (b, m.stalled)),
                    }));
                s.rule_matches.clone_from(&round.matches);
                holds(s, round);
                for _ in &round.loops {
                    s.inc(&RECONNECT_LOOPS, vec![]);
                }
            }
        });
    }

    /// Replaces every series of each family given (the slot families,
    /// at each slot read: see `crate::slots::warden::series`).
    pub fn replace_families(&self, families: Vec<(&'static Def, Vec<(Labels, f64)>)>) {
        self.with(|s| {
            for (def, series) in families {
                s.replace(def, series);
            }
        });
    }

    /// A slot rule's decision carried out, counted in
    /// `replwarden_actions_total` with the walsender rules'.
    pub fn slot_acted(&self, rule: &str, action: &str, outcome: &str) {
        self.with(|s| {
            s.inc(
                &ACTIONS,
                vec![
                    ("rule", rule.to_string()),
                    ("action", action.to_string()),
                    ("outcome", outcome.to_string()),
                ],
            )
        });
    }

    pub fn acted(&self, decision: &Decision, outcome: &Outcome) {
        self.with(|s| {
            s.inc(
                &ACTIONS,
                vec![
                    ("rule", decision.rule.clone()),
                    ("action", decision.action.to_string()),
                    ("outcome", outcome.as_str().to_string()),
                ],
            )
        });
    }
}

/// The outcomes an action can have (the `outcome` words of
/// [`Outcome::as_str`]), for the series created at 0.
fn possible_outcomes(action: Action) -> &'static [&'static str] {
    match action {
        Action::Log => &["logged"],
        Action::Cancel => &[
            "dry_run",
            "signalled",
            "already_gone",
            "not_signalled",
            "refused",
            "failed",
        ],
        Action::Terminate => &[
            "dry_run",
            "terminated",
            "not_exited",
            "already_gone",
            "not_signalled",
            "refused",
            "failed",
        ],
    }
}

const HOLD_REASONS: [&str; 3] = ["sync_quorum", "reconnect_backoff", "budget"];

fn hold_reason(reason: &HoldReason) -> &'static str {
    match reason {
        HoldReason::SyncQuorum { .. } => HOLD_REASONS[0],
        HoldReason::ReconnectBackoff { .. } => HOLD_REASONS[1],
        HoldReason::Budget { .. } => HOLD_REASONS[2],
    }
}

/// The walsenders held now, by rule and reason, and the episodes that
/// started at this poll (a (walsender, rule) pair held now that was not
/// held at the poll before).
fn holds(s: &mut State, round: &Round) {
    // In place: the series of every (rule, reason) exist from the config's
    // load, and rebuilding the family at every poll cost more than the
    // rest of the poll's metrics.
    let now = s.series.entry(WALSENDERS_HELD.name).or_default();
    now.values_mut().for_each(|v| *v = 0.0);
    let mut held = FxHashSet::default();
    let mut episodes = Vec::new();
    for h in &round.held {
        let labels = vec![
            ("rule", h.decision.rule.clone()),
            ("reason", hold_reason(&h.reason).to_string()),
        ];
        let key = (h.decision.walsender.id, h.decision.rule.clone());
        if !s.held.contains(&key) {
            episodes.push(labels.clone());
        }
        *now.entry(labels).or_default() += 1.0;
        held.insert(key);
    }
    s.held = held;
    for labels in episodes {
        s.inc(&HOLDS, labels);
    }
}

/// The labels that name a walsender across reconnects: its client
/// (`application_name`, `client_addr`, `user`; `client_addr` is `local`
/// over a Unix socket) and `ordinal`, which tells apart walsenders of the
/// same client: 0 for the one that started first, 1 for the next, and so
/// on. Not the pid, which changes with every reconnect.
pub fn walsender_labels(snapshot: &Snapshot) -> Vec<Labels> {
    // Each walsender's key is made once (a sort by a key function makes
    // it at every comparison: the strings cloned and the address formatted
    // n log n times, 82k of a poll's 247k instructions with 10 walsenders).
    let mut keyed: Vec<(usize, (String, String, String))> = snapshot
        .walsenders
        .iter()
        .enumerate()
        .map(|(i, ws)| {
            let client = (
                ws.application_name.clone(),
                ws.client_addr.to_string(),
                ws.user.clone().unwrap_or_default(),
            );
            (i, client)
        })
        .collect();
    keyed.sort_by(|(a, ka), (b, kb)| {
        let (a, b) = (&snapshot.walsenders[*a].id, &snapshot.walsenders[*b].id);
        (ka, a.backend_start, a.pid).cmp(&(kb, b.backend_start, b.pid))
    });
    let mut labels = vec![Vec::new(); snapshot.walsenders.len()];
    let mut ordinal = 0;
    for (n, (i, key)) in keyed.iter().enumerate() {
        ordinal = if n > 0 && keyed[n - 1].1 == *key {
            ordinal + 1
        } else {
            0
        };
        let (application_name, client_addr, user) = key.clone();
        labels[*i] = vec![
            ("application_name", application_name),
            ("client_addr", client_addr),
            ("user", user),
            ("ordinal", ordinal.to_string()),
        ];
    }
    labels
}

/// `replwarden_rule_matches` from the last poll's counts.
fn rule_matches_series(s: &mut State) {
    let series = s.series.entry(RULE_MATCHES.name).or_default();
    for (name, n) in s.rule_names.iter().zip(&s.rule_matches) {
        series.insert(vec![("rule", name.clone())], f64::from(*n));
    }
}

/// Replaces the per-walsender families with the last poll's walsenders.
fn walsender_series(s: &mut State) {
    let snapshot = Arc::clone(&s.last_poll);
    let mut lag_seconds = Vec::new();
    let mut lag_bytes = Vec::new();
    let mut reply_age = Vec::new();
    let mut skew = Vec::new();
    let mut retained = Vec::new();
    let mut info = Vec::new();
    let mut backups = Vec::new();
    for (wi, (ws, who)) in snapshot
        .walsenders
        .iter()
        .zip(walsender_labels(&snapshot))
        .enumerate()
    {
        let with = |extra: &[(&'static str, &str)]| {
            let mut l = who.clone();
            l.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
            l
        };
        for (kind, lag, bytes) in [
            ("write", ws.write_lag, ws.write_lag_bytes),
            ("flush", ws.flush_lag, ws.flush_lag_bytes),
            ("replay", ws.replay_lag, ws.replay_lag_bytes),
        ] {
            if let Some(lag) = lag {
                lag_seconds.push((with(&[("kind", kind)]), seconds(lag)));
            }
            if let Some(b) = bytes {
                lag_bytes.push((with(&[("kind", kind)]), b.0 as f64));
            }
        }
        // Silence and skew as the engine measures them (one clock).
        if let Some(m) = s.last_measures.get(wi) {
            if let Some(silence) = m.silence {
                reply_age.push((who.clone(), seconds(silence)));
            }
            if let Some(seconds) = m.skew_seconds {
                skew.push((who.clone(), seconds));
            }
            if let Some(backup) = m.backup {
                backups.push((who.clone(), backup));
            }
        }
        if let (Some(slot), Some(bytes)) = (&ws.slot_name, ws.retained_wal) {
            retained.push((with(&[("slot", slot)]), bytes.0 as f64));
        }
        let state = ws.state_text().unwrap_or_default();
        let sync_state = ws.sync_state.as_deref().unwrap_or_default();
        info.push((with(&[("state", state), ("sync_state", sync_state)]), 1.0));
    }
    s.replace(&LAG_SECONDS, lag_seconds);
    s.replace(&LAG_BYTES, lag_bytes);
    s.replace(&REPLY_AGE_SECONDS, reply_age);
    s.replace(&REPLY_CLOCK_SKEW_SECONDS, skew);
    s.replace(&RETAINED_WAL_BYTES, retained);
    s.replace(&WALSENDER_INFO, info);
    basebackup_series(s, backups);
}

/// The base backup families, per walsender in `backup` with a progress row
/// (labels as for every walsender series).
fn basebackup_series(s: &mut State, backups: Vec<(Labels, (Backup, Duration))>) {
    let (mut streamed_bytes, mut total_bytes, mut phases, mut stalled_seconds) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (who, (backup, stalled)) in backups {
        let Backup::Progress {
            phase,
            streamed,
            total,
        } = backup
        else {
            continue;
        };
        streamed_bytes.push((who.clone(), streamed.0 as f64));
        if let Some(total) = total {
            total_bytes.push((who.clone(), total.0 as f64));
        }
        let mut with_phase = who.clone();
        with_phase.push(("phase", phase.to_string()));
        phases.push((with_phase, 1.0));
        // The stall clock stands at 0 in a phase that is not judged.
        stalled_seconds.push((who, seconds(stalled)));
    }
    s.replace(&BASEBACKUP_STREAMED_BYTES, streamed_bytes);
    s.replace(&BASEBACKUP_TOTAL_BYTES, total_bytes);
    s.replace(&BASEBACKUP_PHASE, phases);
    s.replace(&BASEBACKUP_STALLED_SECONDS, stalled_seconds);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{at, policy, snapshot, walsender};
    use crate::snapshot::Walsender;

    use crate::units::ByteSize;

    use std::time::Instant;

    #[test]
    fn the_format_is_negotiated_as_the_client_libraries_do() {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        for (accept, want) in [
            (None, Format::Text),
            (Some(""), Format::Text),
            (Some(prometheus), Format::OpenMetrics),
            (Some("application/openmetrics-text"), Format::OpenMetrics),
            (
                Some("text/plain;version=0.0.4;q=1,application/openmetrics-text;q=0.5"),
                Format::Text,
            ),
            (
                Some("text/plain; q=0.2, application/openmetrics-text; version=1.0.0; q=0.9"),
                Format::OpenMetrics,
            ),
            (
                Some("application/openmetrics-text; version=2.0.0"),
                Format::Text,
            ),
            (Some("application/openmetrics-text;q=0"), Format::Text),
            (Some("*/*"), Format::Text),
            (Some("application/json"), Format::Text),
            (
                Some("text/html,application/openmetrics-text;q=0.1"),
                Format::OpenMetrics,
            ),
        ] {
            assert_eq!(Format::negotiate(accept), want, "{accept:?}");
        }
    }

    #[test]
    fn numbers_are_the_shortest_text_that_round_trips() {
        for v in [2.874242, 0.1, 1e-7, 123456789.0, 0.0005, 4.096, 1.0 / 3.0] {
            let text = number(v);
            assert_eq!(text.parse::<f64>().unwrap(), v, "{text}");
            assert!(text.len() <= 18, "{text}");
        }
        assert_eq!(number(2.874242), "2.874242");
        assert_eq!(
            number(seconds(Duration::from_micros(2_874_242))),
            "2.874242"
        );
        assert_eq!(number(16777216.0), "16777216");
        assert_eq!(number(f64::INFINITY), "+Inf");
        assert_eq!(number(f64::NAN), "NaN");
    }

    #[test]
    fn every_outcome_word_is_among_the_series_created_at_zero() {
        let all: HashSet<&str> = [Action::Log, Action::Cancel, Action::Terminate]
            .into_iter()
            .flat_map(possible_outcomes)
            .copied()
            .collect();
        for o in [
            Outcome::Logged,
            Outcome::DryRun,
            Outcome::Signalled,
            Outcome::Terminated,
            Outcome::NotExited,
            Outcome::Gone,
            Outcome::NotSignalled,
            Outcome::Refused(String::new()),
            Outcome::Failed(String::new()),
        ] {
            assert!(all.contains(o.as_str()), "{}", o.as_str());
        }
    }

    fn ws(pid: i32, app: &str, started: u64) -> Walsender {
        Walsender {
            id: WalsenderId {
                pid,
                backend_start: at(started),
            },
            sync_state: Some("sync".to_string()),
            flush_lsn: None,
            write_lag: Some(Duration::from_micros(2_874_242)),
            write_lag_bytes: Some(ByteSize(10)),
            flush_lag_bytes: None,
            replay_lag_bytes: None,
            reply_time: None,
            ..walsender(pid, app)
        }
    }

    fn snap(walsenders: Vec<Walsender>) -> Snapshot {
        Snapshot {
            current_lsn: None,
            synchronous_standby_names: "s1".to_string(),
            server_time: None,
            ..snapshot(walsenders)
        }
    }

    #[test]
    fn walsenders_are_named_by_client_and_ordinal_not_pid() {
        let s = snap(vec![
            ws(30, "recv", 300),
            ws(10, "recv", 100),
            ws(20, "other", 200),
        ]);
        let ordinals: Vec<(String, String)> = walsender_labels(&s)
            .into_iter()
            .map(|l| (l[0].1.clone(), l[3].1.clone()))
            .collect();
        assert_eq!(
            ordinals,
            [
                ("recv".into(), "1".into()),
                ("recv".into(), "0".into()),
                ("other".into(), "0".into())
            ]
        );
        // A reconnect (new pid, later start) keeps the series.
        let before = walsender_labels(&snap(vec![ws(10, "recv", 100)]));
        let after = walsender_labels(&snap(vec![ws(11, "recv", 500)]));
        assert_eq!(before, after);
    }

    #[test]
    fn holds_are_a_gauge_of_now_and_a_counter_of_episodes() {
        let p = policy(
            "[[rule]]\nname = \"kill\"\napplication_name = [\"s*\"]\naction = \"terminate\"\n",
        );
        let m = Metrics::new();
        m.config_loaded("x.toml", "00", &p);
        let text = m.render(Format::Text);
        for zero in [
            "replwarden_holds_total{rule=\"kill\",reason=\"sync_quorum\"} 0\n",
            "replwarden_walsenders_held{rule=\"kill\",reason=\"budget\"} 0\n",
            "replwarden_actions_total{rule=\"kill\",action=\"terminate\",outcome=\"terminated\"} 0\n",
            "replwarden_rule_matches{rule=\"kill\"} 0\n",
            "replwarden_reconnect_loops_total 0\n",
        ] {
            assert!(text.contains(zero), "missing {zero:?} in\n{text}");
        }
        // The only sync standby: held by the quorum guard at every poll.
        let s = snap(vec![ws(1, "s1", 100)]);
        let mut memory = crate::engine::Memory::default();
        let t0 = Instant::now();
        let mut poll = |s: &Snapshot| {
            let round = crate::engine::decide(&p, s, &mut memory, t0);
            m.polled(&Arc::new(s.clone()), Some(&round), Duration::from_millis(3));
            m.render(Format::Text)
        };
        for _ in 0..5 {
            let text = poll(&s);
            assert!(
                text.contains(
                    "replwarden_walsenders_held{rule=\"kill\",reason=\"sync_quorum\"} 1\n"
                ),
                "{text}"
            );
            assert!(
                text.contains("replwarden_holds_total{rule=\"kill\",reason=\"sync_quorum\"} 1\n"),
                "{text}"
            );
            assert!(
                text.contains("replwarden_rule_matches{rule=\"kill\"} 1\n"),
                "{text}"
            );
        }
        let text = poll(&snap(vec![]));
        assert!(
            text.contains("replwarden_walsenders_held{rule=\"kill\",reason=\"sync_quorum\"} 0\n"),
            "{text}"
        );
        // Back: a second episode.
        let text = poll(&s);
        assert!(
            text.contains("replwarden_holds_total{rule=\"kill\",reason=\"sync_quorum\"} 2\n"),
            "{text}"
        );
        assert!(text.contains("replwarden_walsender_lag_seconds{application_name=\"s1\",client_addr=\"10.1.2.3\",user=\"replicator\",ordinal=\"0\",kind=\"write\"} 2.874242\n"), "{text}");
    }

    #[test]
    fn both_formats_declare_every_family_and_openmetrics_ends_with_eof() {
        let m = Metrics::new();
        m.config_loaded("a \"q\"\\\n.toml", "00", &policy(""));
        let text = m.render(Format::Text);
        let om = m.render(Format::OpenMetrics);
        for def in FAMILIES {
            let (t, o) = match def.kind {
                Kind::Counter => (format!("{}_total", def.name), def.name.to_string()),
                _ => (def.name.to_string(), def.name.to_string()),
            };
            assert!(text.contains(&format!("# HELP {t} ")), "{t}");
            assert!(text.contains(&format!("# TYPE {t} ")), "{t}");
            assert!(om.contains(&format!("# HELP {o} ")), "{o}");
            assert!(om.contains(&format!("# TYPE {o} ")), "{o}");
        }
        assert!(om.ends_with("\n# EOF\n"));
        assert!(!text.contains("# EOF"));
        assert!(text.contains("path=\"a \\\"q\\\"\\\\\\n.toml\""), "{text}");
        assert!(text.contains("replwarden_poll_duration_seconds_bucket{le=\"0.0005\"} 0\n"));
    }
}
