//! What the engine judges, measured so that it is real now and on one clock.
//!
//! - **Time lags only while real.** PostgreSQL's lag tracker (walsender.c,
//!   `LagTrackerRead`) refreshes a lag column at a client's reply only while
//!   the position it belongs to is behind WAL the server has sent; once the
//!   client reports that position at the end of the WAL, the reply yields
//!   "no new sample" and the column keeps its last value, for ever on an
//!   idle primary unless the client reports a replay position equal to the
//!   sent one twice in a row (then all three go NULL). A client that does
//!   not report a position (`pg_receivewal` sends 0 for replay, and for
//!   flush without a slot or `--synchronous`) gets a value measured against
//!   the oldest WAL it never confirmed. So [`time_lag`] judges a lag only
//!   when its position is reported and behind the server's WAL position;
//!   and the flush lag of a client that reports no replay position (a WAL
//!   receiver) only while it flushes what it writes (`--synchronous`):
//!   without that it flushes at segment ends, and its flush lag is the
//!   time a segment takes to fill. Nor while the value is still the one
//!   kept from a poll that saw the client with all WAL: new WAL puts its
//!   position behind at once, the value changes only at its next reply.
//! - **Silence on one clock.** `reply_time` is stamped by the client's
//!   clock. [`Observed`] remembers the value last seen and when, on the
//!   daemon's monotonic clock, it last changed: silence is the time since
//!   then. The server's clock is used only to estimate the skew (server
//!   time minus `reply_time` at the poll that saw it change).
//! - **Progress only while there is WAL to make it with**: the stall clock
//!   restarts whenever the client's position moves or has reached the
//!   server's WAL position.
//! - **A base backup's progress is its bytes**: a walsender in `backup`
//!   has no position; its stall clock restarts at every poll that sees its
//!   phase or `backup_streamed` change, or sees it in a phase where bytes
//!   do not move by design, or without a progress row
//!   ([`crate::basebackup`] says which phases are judged).
//! - **Clients that control their own feedback**: a streaming walsender
//!   that never replied, or confirms no position at all, counts from when
//!   it was first seen streaming (silence, progress, byte lags from the
//!   server's WAL position then).
//! - **A process's age at first sight** comes from the server's clock
//!   (`statement_timestamp() - backend_start`), bounded by the time since
//!   the previous poll when there was one: a walsender absent from it
//!   cannot be older, whatever the server's clock did in between.

use std::time::{Duration, Instant, SystemTime};

use crate::basebackup::{Backup, BackupPhase};
use crate::snapshot::{Snapshot, WalState, Walsender};
use crate::units::{ByteSize, Lsn};

/// Which of a walsender's positions a time lag belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LagKind {
    Write,
    Flush,
    Replay,
}

/// A time lag as the conditions may judge it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeLag {
    /// Real now: the position is behind the server's WAL and PostgreSQL
    /// refreshes the value at every reply.
    Judged(Duration),
    /// NULL: caught up (PostgreSQL cleared it) or never measured.
    Null,
    /// A value PostgreSQL shows but that says nothing about now: why.
    NotJudged(Duration, &'static str),
}

/// The client has all WAL for this position: the value is the last one
/// measured, kept by PostgreSQL.
pub const STALE: &str = "stale: the client has all WAL, not judged";
/// The client sends no such position: the value is measured against WAL it
/// never confirmed.
pub const NOT_REPORTED: &str = "not judged: the client does not report this position";

/// The position fell behind again (new WAL) but no reply has refreshed the
/// value kept from when the client had all WAL.
pub const NOT_REFRESHED: &str =
    "stale: kept from when the client had all WAL, no reply has refreshed it yet; not judged";

/// A WAL receiver that flushes behind what it has written (segment ends):
/// its flush lag is its own pace.
pub const OWN_PACE: &str =
    "not judged: a WAL receiver flushing at its own pace (without --synchronous); its write_lag is judged";

/// The time lag of `kind` as it may be judged now (see the module docs).
pub fn time_lag(ws: &Walsender, kind: LagKind) -> TimeLag {
    let (shown, behind) = match kind {
        LagKind::Write => (ws.write_lag, ws.write_lag_bytes),
        LagKind::Flush => (ws.flush_lag, ws.flush_lag_bytes),
        LagKind::Replay => (ws.replay_lag, ws.replay_lag_bytes),
    };
    let Some(shown) = shown else {
        return TimeLag::Null;
    };
    match behind {
        None => TimeLag::NotJudged(shown, NOT_REPORTED),
        Some(ByteSize(0)) => TimeLag::NotJudged(shown, STALE),
        // A WAL receiver (no replay position) flushes when it chooses:
        // without --synchronous at segment ends, so its flush position
        // trails its write position and its flush lag is the time a segment
        // takes to fill. Only one that flushes what it writes is judged.
        Some(flush) if kind == LagKind::Flush && ws.replay_lag_bytes.is_none() => {
            match ws.write_lag_bytes {
                Some(ByteSize(0)) => TimeLag::NotJudged(shown, STALE),
                Some(write) if write == flush => TimeLag::Judged(shown),
                _ => TimeLag::NotJudged(shown, OWN_PACE),
            }
        }
        Some(_) => TimeLag::Judged(shown),
    }
}

/// How old a walsender first seen now is: its age by the server's clock,
/// but never more than the time since the previous poll, which did not see
/// it (a server clock step between the two cannot age it).
pub fn first_sight_age(server_age: Duration, since_previous_poll: Option<Duration>) -> Duration {
    since_previous_poll.map_or(server_age, |bound| server_age.min(bound))
}

/// Where a walsender's silence counts from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SilenceFrom {
    /// The poll that saw `reply_time` change.
    Reply,
    /// The daemon's first sight of this `reply_time` (how old it was then
    /// cannot be told on one clock).
    FirstSight,
    /// It never replied: from when it was first seen streaming.
    Streaming,
}

/// One walsender's one-clock measurements at one poll.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Measures {
    /// Time since `reply_time` last changed, on the daemon's clock; `None`
    /// for a walsender that has not replied and is not streaming.
    pub silence: Option<Duration>,
    pub silence_from: Option<SilenceFrom>,
    /// Server time minus `reply_time`, in seconds, at the last poll that saw
    /// it change (positive: the client's clock is behind). The reply
    /// arrived at most one poll interval before, so this overstates a
    /// client that is behind by up to the interval.
    pub skew_seconds: Option<f64>,
    /// The position `no_progress_for` watches (the flush position, or the
    /// server's WAL position when first seen streaming for a client that
    /// confirms nothing) and how long it has not moved while the server
    /// had WAL beyond it.
    pub progress: Option<Lsn>,
    pub stalled: Duration,
    /// Bytes behind for write/flush/replay, for the `*_lag_bytes`
    /// conditions.
    pub lag_bytes: [Option<ByteSize>; 3],
    /// The write/flush/replay time lags as the conditions judge them.
    pub lags: [TimeLag; 3],
    /// The client confirms no position: `progress` and `lag_bytes` count
    /// from when it was first seen streaming.
    pub confirms_nothing: bool,
    /// In state `backup`: its progress, which `no_progress_for` then judges
    /// (`stalled` is how long its phase and bytes have not changed in a
    /// phase that is judged; `progress` is `None`).
    pub backup: Option<Backup>,
}

impl Measures {
    pub fn lag_bytes(&self, kind: LagKind) -> Option<ByteSize> {
        self.lag_bytes[kind as usize]
    }

    pub fn lag(&self, kind: LagKind) -> TimeLag {
        self.lags[kind as usize]
    }
}

/// What the engine remembers of one process instance's feedback.
#[derive(Debug)]
pub struct Observed {
    /// Not yet observed: the first poll sets everything.
    fresh: bool,
    /// The last `reply_time` seen and when (daemon clock) it was first seen
    /// with that value.
    reply_time: Option<SystemTime>,
    reply_seen: Instant,
    reply_from: SilenceFrom,
    skew_seconds: Option<f64>,
    /// When it was first seen in `streaming` (without a break since), and
    /// the server's WAL position then.
    streaming_since: Option<(Instant, Option<Lsn>)>,
    /// The watched position, and since when it has neither moved nor been
    /// caught up.
    progress: Option<Lsn>,
    progress_since: Instant,
    /// In `backup`: the phase and `backup_streamed` last seen.
    backup: Option<(BackupPhase, ByteSize)>,
    /// Per write/flush/replay: the lag value shown at the last poll that saw
    /// the position at the server's WAL position (PostgreSQL keeps it);
    /// cleared once a reply has refreshed it.
    kept: [Option<Duration>; 3],
}

impl Observed {
    pub fn new(now: Instant) -> Observed {
        Observed {
            fresh: true,
            reply_time: None,
            reply_seen: now,
            reply_from: SilenceFrom::FirstSight,
            skew_seconds: None,
            streaming_since: None,
            progress: None,
            progress_since: now,
            backup: None,
            kept: [None; 3],
        }
    }

    /// [`time_lag`], and not judged either while the value is still the one
    /// kept from when the client had all WAL: new WAL puts the position
    /// behind at once, but the value is refreshed only by the client's next
    /// reply.
    fn time_lag(&mut self, ws: &Walsender, kind: LagKind) -> TimeLag {
        let kept = &mut self.kept[kind as usize];
        let caught_up = match kind {
            LagKind::Write => ws.write_lag_bytes,
            LagKind::Flush => ws.flush_lag_bytes,
            LagKind::Replay => ws.replay_lag_bytes,
        } == Some(ByteSize(0));
        let lag = time_lag(ws, kind);
        match lag {
            TimeLag::NotJudged(shown, _) if caught_up => *kept = Some(shown),
            TimeLag::Judged(shown) if *kept == Some(shown) => {
                return TimeLag::NotJudged(shown, NOT_REFRESHED)
            }
            TimeLag::Judged(_) | TimeLag::Null => *kept = None,
            TimeLag::NotJudged(..) => {}
        }
        lag
    }

    /// Since when the watched position has not moved while behind.
    pub fn progress_since(&self) -> Instant {
        self.progress_since
    }

    /// Takes in one poll's row for this instance and measures it.
    pub fn observe(&mut self, ws: &Walsender, snapshot: &Snapshot, now: Instant) -> Measures {
        let current = snapshot.current_lsn;
        if ws.state == Some(WalState::Streaming) {
            self.streaming_since.get_or_insert((now, current));
        } else {
            self.streaming_since = None;
        }

        // Silence: since reply_time last changed, on the daemon's clock.
        if let Some(t) = ws.reply_time {
            if self.reply_time != Some(t) {
                if !self.fresh {
                    self.skew_seconds =
                        snapshot.server_time.map(|server| signed_seconds(server, t));
                    self.reply_from = SilenceFrom::Reply;
                }
                self.reply_time = Some(t);
                self.reply_seen = now;
            }
        }
        let (silence, silence_from) = match (self.reply_time, self.streaming_since) {
            (Some(_), _) => (
                Some(now.saturating_duration_since(self.reply_seen)),
                Some(self.reply_from),
            ),
            (None, Some((since, _))) => (
                Some(now.saturating_duration_since(since)),
                Some(SilenceFrom::Streaming),
            ),
            (None, None) => (None, None),
        };

        // A streaming client that confirms no position counts from the
        // server's position when it was first seen streaming.
        let anchor = self
            .streaming_since
            .and_then(|(_, at)| at)
            .filter(|_| current.is_some() && ws.write_lag_bytes.is_none());
        let confirms_nothing = anchor.is_some();
        let anchored = |shown: Option<ByteSize>| match anchor {
            Some(at) => Some(ByteSize(current.map_or(0, |c| c.0.saturating_sub(at.0)))),
            None => shown,
        };
        let lag_bytes = [
            anchored(ws.write_lag_bytes),
            anchored(ws.flush_lag_bytes),
            anchored(ws.replay_lag_bytes),
        ];

        // Progress: the stall clock runs only while the server has WAL
        // beyond the watched position; for a base backup, only while in a
        // phase that sends bytes and they do not change.
        let backup = (ws.state == Some(WalState::Backup)).then(|| {
            snapshot
                .basebackup(ws.id)
                .map_or(Backup::NoProgress, |p| Backup::Progress {
                    phase: p.phase,
                    streamed: p.streamed,
                    total: p.total,
                })
        });
        let progress = match backup {
            Some(_) => None,
            None => anchor.or(ws.flush_lsn),
        };
        let restart = match backup {
            Some(Backup::Progress {
                phase, streamed, ..
            }) => {
                let moved = self.backup != Some((phase, streamed));
                self.backup = Some((phase, streamed));
                moved || !phase.judged()
            }
            Some(Backup::NoProgress) => {
                self.backup = None;
                true
            }
            None => {
                let caught_up = match (progress, current) {
                    (Some(p), Some(c)) => p >= c,
                    _ => true,
                };
                progress != self.progress || caught_up
            }
        };
        if self.fresh || restart {
            self.progress = progress;
            self.progress_since = now;
        }
        let lags =
            [LagKind::Write, LagKind::Flush, LagKind::Replay].map(|kind| self.time_lag(ws, kind));
        self.fresh = false;
        Measures {
            silence,
            silence_from,
            skew_seconds: self.skew_seconds,
            progress,
            stalled: now.saturating_duration_since(self.progress_since),
            lag_bytes,
            lags,
            confirms_nothing,
            backup,
        }
    }
}

/// `a - b` in seconds, negative when `b` is later.
fn signed_seconds(a: SystemTime, b: SystemTime) -> f64 {
    match a.duration_since(b) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

/// A skew for people: `client behind by 3m 1s`.
pub fn skew_text(seconds: f64) -> String {
    let d = crate::units::fmt_duration(Duration::from_secs_f64(seconds.abs()));
    if seconds >= 0.0 {
        format!("client clock behind the server's by about {d}")
    } else {
        format!("client clock ahead of the server's by about {d}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::basebackup::BackupProgress;
    use crate::engine::{Delivery, Memory, Round, Verdict};
    use crate::fixtures::{at, policy, snapshot, walsender};
    use crate::policy::{Action, Policy};
    use crate::snapshot::WalsenderId;

    const T0: u64 = 2_000_000_000;

    /// A streaming physical standby at the server's position, replying.
    fn standby(pid: i32, app: &str) -> Walsender {
        Walsender {
            id: WalsenderId {
                pid,
                backend_start: at(T0 - 3600),
            },
            age: Duration::from_secs(3600),
            reply_age: Some(Duration::ZERO),
            reply_time: Some(at(T0)),
            ..walsender(pid, app)
        }
    }

    fn snap(server_time: u64, walsenders: Vec<Walsender>) -> Snapshot {
        Snapshot {
            server_time: Some(at(server_time)),
            ..snapshot(walsenders)
        }
    }

    /// The engine's round with every decision carried out, as the daemon
    /// reports them back.
    fn explain(p: &Policy, s: &Snapshot, m: &mut Memory, now: Instant) -> Round {
        let round = crate::engine::explain(p, s, m, now);
        for d in &round.decisions {
            m.record(d, Delivery::Done, &p.limits);
        }
        round
    }

    fn acted(round: &Round) -> Vec<(i32, String, Action)> {
        round
            .decisions
            .iter()
            .map(|d| (d.walsender.id.pid, d.rule.clone(), d.action))
            .collect()
    }

    fn whys(round: &Round) -> Vec<String> {
        round.verdicts.iter().map(|v| v.2.to_string()).collect()
    }

    const LAG_RULES: &str = "[[rule]]\nname = \"w\"\nwrite_lag = \"1m\"\naction = \"terminate\"\n\
         [[rule]]\nname = \"f\"\nflush_lag = \"1m\"\naction = \"terminate\"\n\
         [[rule]]\nname = \"r\"\nreplay_lag = \"1m\"\naction = \"terminate\"\n";

    #[test]
    fn lags_a_receiver_with_all_wal_keeps_showing_are_not_judged() {
        let p = policy(LAG_RULES);
        // pg_receivewal with a slot, no --synchronous, idle primary: it has
        // written everything, flushed to the last segment end, reports no
        // replay position; PostgreSQL goes on showing old lags.
        let mut receiver = standby(1, "barman_receive_wal");
        receiver.write_lag = Some(Duration::from_millis(7_900));
        receiver.flush_lag = Some(Duration::from_secs(741));
        receiver.replay_lag = Some(Duration::from_secs(741));
        receiver.flush_lag_bytes = Some(ByteSize(0x5000));
        receiver.flush_lsn = Some(Lsn(0x3000000 - 0x5000));
        receiver.replay_lag_bytes = None;
        // Without a slot: no flush position either.
        let mut no_slot = receiver.clone();
        no_slot.id.pid = 2;
        no_slot.flush_lag = Some(Duration::from_secs(660));
        no_slot.flush_lsn = None;
        no_slot.flush_lag_bytes = None;
        // A physical standby idle with a kept value.
        let mut idle = standby(3, "standby_idle");
        idle.replay_lag = Some(Duration::from_secs(90));
        let r = explain(
            &p,
            &snap(T0, vec![receiver, no_slot, idle]),
            &mut Memory::default(),
            Instant::now(),
        );
        assert!(r.decisions.is_empty(), "{:?}", acted(&r));
        assert_eq!(
            whys(&r),
            [
                "conditions not met: write_lag 7s 900ms (stale: the client has all WAL, not judged)",
                "conditions not met: flush_lag 12m 21s (stale: the client has all WAL, not judged)",
                "conditions not met: replay_lag 12m 21s (not judged: the client does not report this position)",
                "conditions not met: write_lag 7s 900ms (stale: the client has all WAL, not judged)",
                "conditions not met: flush_lag 11m (not judged: the client does not report this position)",
                "conditions not met: replay_lag 12m 21s (not judged: the client does not report this position)",
                "conditions not met: write_lag is NULL (caught up)",
                "conditions not met: flush_lag is NULL (caught up)",
                "conditions not met: replay_lag 1m 30s (stale: the client has all WAL, not judged)",
            ]
        );
    }

    #[test]
    fn a_standby_that_lags_while_wal_flows_is_caught_at_once() {
        let p = policy(LAG_RULES);
        let mut lagging = standby(1, "standby_slow");
        lagging.replay_lag = Some(Duration::from_secs(90));
        lagging.replay_lag_bytes = Some(ByteSize(1 << 20));
        // A receiver with --synchronous still receiving: flush follows
        // write, its flush lag is judged.
        let mut receiving = standby(2, "pg_receivewal_sync");
        receiving.flush_lag = Some(Duration::from_secs(90));
        receiving.write_lag_bytes = Some(ByteSize(1 << 20));
        receiving.flush_lag_bytes = Some(ByteSize(1 << 20));
        receiving.replay_lag_bytes = None;
        // Without --synchronous it flushes at segment ends: its write lag
        // is judged, its flush lag is not.
        let mut own_pace = receiving.clone();
        own_pace.id.pid = 3;
        own_pace.application_name = "barman_receive_wal".into();
        own_pace.write_lag = Some(Duration::from_secs(61));
        own_pace.write_lag_bytes = Some(ByteSize(4096));
        let r = explain(
            &p,
            &snap(T0, vec![lagging, receiving, own_pace]),
            &mut Memory::default(),
            Instant::now(),
        );
        assert_eq!(
            acted(&r),
            [
                (1, "r".to_string(), Action::Terminate),
                (2, "f".to_string(), Action::Terminate),
                (3, "w".to_string(), Action::Terminate)
            ]
        );
        assert!(whys(&r).contains(&format!(
            "conditions not met: flush_lag 1m 30s ({OWN_PACE})"
        )));
    }

    #[test]
    fn a_kept_lag_is_not_judged_until_a_reply_refreshes_it() {
        let p = policy("[[rule]]\nname = \"w\"\nwrite_lag = \"5s\"\naction = \"terminate\"\n");
        let t0 = Instant::now();
        let mut m = Memory::default();
        // An idle receiver showing a kept write lag of 7.9 s.
        let mut w = standby(1, "archiver");
        w.write_lag = Some(Duration::from_millis(7_900));
        w.replay_lag_bytes = None;
        let r = explain(&p, &snap(T0, vec![w.clone()]), &mut m, t0);
        assert!(r.decisions.is_empty());
        // A little WAL: the position is behind before the next reply.
        w.write_lag_bytes = Some(ByteSize(120));
        let r = explain(
            &p,
            &snap(T0 + 1, vec![w.clone()]),
            &mut m,
            t0 + Duration::from_secs(1),
        );
        assert!(r.decisions.is_empty(), "{:?}", whys(&r));
        assert_eq!(
            whys(&r),
            [format!(
                "conditions not met: write_lag 7s 900ms ({NOT_REFRESHED})"
            )]
        );
        // A reply refreshes it while still behind: real, judged.
        w.write_lag = Some(Duration::from_secs(6));
        let r = explain(
            &p,
            &snap(T0 + 2, vec![w.clone()]),
            &mut m,
            t0 + Duration::from_secs(2),
        );
        assert_eq!(acted(&r), [(1, "w".to_string(), Action::Terminate)]);
    }

    /// Polls `walsenders` every 10 s from `t0`, the server's clock reading
    /// `server(i)` at poll i, the clients replying with their own clocks.
    fn run(
        p: &Policy,
        polls: u64,
        server: impl Fn(u64) -> u64,
        walsenders: impl Fn(u64) -> Vec<Walsender>,
        sync: &str,
    ) -> (Vec<Round>, Memory) {
        let t0 = Instant::now();
        let mut m = Memory::default();
        let rounds = (0..polls)
            .map(|i| {
                let mut s = snap(server(i), walsenders(i));
                s.synchronous_standby_names = sync.to_string();
                for w in &mut s.walsenders {
                    w.reply_age = w
                        .reply_time
                        .map(|t| s.server_time.unwrap().duration_since(t).unwrap_or_default());
                }
                explain(p, &s, &mut m, t0 + Duration::from_secs(10 * i))
            })
            .collect();
        (rounds, m)
    }

    const SILENT: &str =
        "[[rule]]\nname = \"silent-standby\"\nno_reply_for = \"2m\"\naction = \"terminate\"\n";

    #[test]
    fn skewed_clients_are_not_silent_and_a_stopped_one_is() {
        let p = policy(SILENT);
        // Replying every 10 s with clocks 3 minutes behind and ahead; a
        // third stopped at poll 3 with its clock ahead (its last reply_time
        // is in the server's future).
        let (rounds, _) = run(
            &p,
            30,
            |i| T0 + 10 * i,
            |i| {
                let mut behind = standby(1, "behind");
                behind.reply_time = Some(at(T0 + 10 * i - 180));
                let mut ahead = standby(2, "ahead");
                ahead.reply_time = Some(at(T0 + 10 * i + 180));
                let mut stopped = standby(3, "stopped");
                stopped.reply_time = Some(at(T0 + 10 * i.min(3) + 180));
                vec![behind, ahead, stopped]
            },
            "",
        );
        let fired: Vec<(usize, i32)> = rounds
            .iter()
            .enumerate()
            .flat_map(|(i, r)| r.decisions.iter().map(move |d| (i, d.walsender.id.pid)))
            .collect();
        // Stopped after poll 3 (30 s): more than 2m silent at poll 16 (160 s).
        assert_eq!(fired, [(16, 3)]);
        let skews: Vec<Option<f64>> = rounds[5].measures.iter().map(|m| m.skew_seconds).collect();
        assert_eq!(skews, [Some(180.0), Some(-180.0), Some(-180.0)]);
    }

    #[test]
    fn a_server_clock_step_between_polls_changes_no_duration() {
        let p = policy(&format!(
            "{SILENT}[[rule]]\nname = \"stuck-startup\"\nstate = [\"startup\"]\nin_state_for = \"2m\"\naction = \"terminate\"\n\
             [[rule]]\nname = \"kill-sync\"\napplication_name = [\"sync_*\"]\naction = \"terminate\"\n"
        ));
        // The server's clock steps 10 minutes forward, or back, before poll 3.
        for (step, startup_caught_at) in [(600i64, 16), (-600, 17)] {
            let server = move |i: u64| {
                let t = T0 + 10 * i;
                if i >= 3 {
                    t.checked_add_signed(step).unwrap()
                } else {
                    t
                }
            };
            let (rounds, _) = run(
                &p,
                20,
                server,
                move |i| {
                    // The only synchronous standby, replying at every poll
                    // with its own clock, which does not step.
                    let mut sync = standby(1, "sync_a");
                    sync.sync_state = Some("sync".into());
                    sync.reply_time = Some(at(T0 + 10 * i));
                    let mut ws = vec![sync];
                    if i >= 4 {
                        // Started 1 s before poll 4 (after the step) and
                        // stays in startup; its age by the server's clock
                        // carries the step.
                        let mut starting = standby(2, "slow_start");
                        starting.state = Some("startup".into());
                        starting.reply_time = None;
                        starting.id.backend_start = at(T0 + 39);
                        starting.age = at(server(i))
                            .duration_since(at(T0 + 39))
                            .unwrap_or_default();
                        ws.push(starting);
                    }
                    ws
                },
                "FIRST 1 (sync_a)",
            );
            for (i, r) in rounds.iter().enumerate() {
                // The sync standby replies: never silent, always counted
                // healthy by the quorum guard.
                assert!(r.measures[0].silence.unwrap() <= Duration::from_secs(10));
                assert!(
                    r.verdicts
                        .iter()
                        .any(|v| matches!(v, (0, 2, Verdict::Held(_)))),
                    "step {step}, poll {i}: {:?}",
                    whys(r)
                );
                assert!(
                    r.decisions.iter().all(|d| d.walsender.id.pid != 1),
                    "step {step}, poll {i}: {:?}",
                    acted(r)
                );
            }
            // The startup walsender is at most 10 s old at its first sight
            // (poll 4, 40 s), whatever the server's clock says: more than
            // 2m in startup only at 160 s.
            let first = rounds
                .iter()
                .position(|r| r.decisions.iter().any(|d| d.walsender.id.pid == 2));
            assert_eq!(first, Some(startup_caught_at), "step {step}");
        }
    }

    #[test]
    fn the_stall_clock_runs_only_while_the_server_has_wal_beyond() {
        let p = policy(
            "[[rule]]\nname = \"hung\"\nno_progress_for = \"30s\"\naction = \"terminate\"\n",
        );
        let t0 = Instant::now();
        let mut m = Memory::default();
        let w = standby(1, "standby_a");
        // An hour idle, caught up.
        for i in 0..360 {
            explain(
                &p,
                &snap(T0 + 10 * i, vec![w.clone()]),
                &mut m,
                t0 + Duration::from_secs(10 * i),
            );
        }
        // One write; the poll comes before the standby's next reply.
        let mut s = snap(T0 + 3600, vec![w.clone()]);
        s.current_lsn = Some(Lsn(0x3000100));
        let r = explain(&p, &s, &mut m, t0 + Duration::from_secs(3600));
        assert!(r.decisions.is_empty(), "{:?}", whys(&r));
        // Frozen from then on: caught 30 s after the last poll that saw
        // it caught up (the write came after it).
        let r = explain(&p, &s, &mut m, t0 + Duration::from_secs(3619));
        assert!(r.decisions.is_empty());
        let r = explain(&p, &s, &mut m, t0 + Duration::from_secs(3621));
        assert_eq!(acted(&r), [(1, "hung".to_string(), Action::Terminate)]);
    }

    #[test]
    fn clients_that_never_reply_or_confirm_count_from_first_seen_streaming() {
        let p = policy(
            "[[rule]]\nname = \"silent\"\nno_reply_for = \"2m\"\naction = \"terminate\"\n\
             [[rule]]\nname = \"hung\"\nno_progress_for = \"1m\"\naction = \"terminate\"\n\
             [[rule]]\nname = \"far\"\nwrite_lag_bytes = \"1kB\"\naction = \"log\"\n",
        );
        let t0 = Instant::now();
        let mut m = Memory::default();
        // Never replied (pg_receivewal -s 0 with wal_sender_timeout = 0).
        let mut mute = standby(1, "mute");
        mute.reply_time = None;
        mute.reply_age = None;
        mute.flush_lsn = None;
        mute.write_lag_bytes = None;
        mute.flush_lag_bytes = None;
        mute.replay_lag_bytes = None;
        // Replies, but confirms LSN 0.
        let mut zero = mute.clone();
        zero.id.pid = 2;
        zero.application_name = "zero".into();
        // Not yet streaming: no clock runs.
        let mut starting = mute.clone();
        starting.id.pid = 3;
        starting.state = Some("startup".into());
        let poll = |m: &mut Memory, secs: u64, lsn: u64| {
            let mut zero = zero.clone();
            zero.reply_time = Some(at(T0 + secs));
            let mut s = snap(T0 + secs, vec![mute.clone(), zero, starting.clone()]);
            s.current_lsn = Some(Lsn(lsn));
            explain(&p, &s, m, t0 + Duration::from_secs(secs))
        };
        let r = poll(&mut m, 0, 0x3000000);
        assert!(r.decisions.is_empty());
        assert!(r.measures[0].confirms_nothing && r.measures[1].confirms_nothing);
        assert_eq!(r.measures[2].silence, None);
        // The server writes; neither client confirms anything.
        let r = poll(&mut m, 10, 0x3001000);
        let far: Vec<i32> = r.decisions.iter().map(|d| d.walsender.id.pid).collect();
        assert_eq!(
            far,
            [1, 2],
            "write_lag_bytes from the position when first seen"
        );
        let r = poll(&mut m, 71, 0x3001000);
        assert_eq!(
            acted(&r),
            [
                (1, "hung".to_string(), Action::Terminate),
                (2, "hung".to_string(), Action::Terminate)
            ]
        );
        let r = poll(&mut m, 121, 0x3001000);
        assert_eq!(acted(&r), [(1, "silent".to_string(), Action::Terminate)]);
    }

    /// A `pg_basebackup` walsender: in `backup`, no positions, no replies.
    fn backup_walsender(pid: i32) -> Walsender {
        Walsender {
            state: Some(WalState::Backup),
            flush_lsn: None,
            write_lag_bytes: None,
            flush_lag_bytes: None,
            replay_lag_bytes: None,
            reply_time: None,
            reply_age: None,
            ..standby(pid, "pg_basebackup")
        }
    }

    fn progress(ws: &Walsender, phase: BackupPhase, streamed: u64) -> BackupProgress {
        BackupProgress {
            id: ws.id,
            phase,
            total: Some(ByteSize(1 << 30)),
            streamed: ByteSize(streamed),
            tablespaces_total: Some(1),
            tablespaces_streamed: Some(0),
        }
    }

    #[test]
    fn a_base_backup_is_stalled_only_when_its_bytes_stand_still_in_a_phase_that_sends_them() {
        use crate::basebackup::NO_PROGRESS_ROW;
        let p = policy(
            "[[rule]]\nname = \"stuck-backup\"\nno_progress_for = \"30s\"\naction = \"terminate\"\n",
        );
        let t0 = Instant::now();
        let mut m = Memory::default();
        let ws = backup_walsender(1);
        let mut secs = 0;
        let mut poll = |m: &mut Memory, row: Option<BackupProgress>| {
            let mut s = snap(T0 + secs, vec![ws.clone()]);
            s.basebackups = row.into_iter().collect();
            let r = explain(&p, &s, m, t0 + Duration::from_secs(secs));
            secs += 10;
            r
        };
        // No progress row yet: never judged, and said so.
        for _ in 0..6 {
            let r = poll(&mut m, None);
            assert!(r.decisions.is_empty(), "{:?}", whys(&r));
        }
        let r = poll(&mut m, None);
        assert_eq!(
            whys(&r),
            [format!(
                "conditions not met: no_progress_for: base backup: {NO_PROGRESS_ROW}"
            )]
        );
        // A spread checkpoint, the size estimate: minutes without a byte.
        for phase in [
            BackupPhase::Initializing,
            BackupPhase::WaitingForCheckpoint,
            BackupPhase::EstimatingSize,
        ] {
            for _ in 0..30 {
                let r = poll(&mut m, Some(progress(&ws, phase, 0)));
                assert!(r.decisions.is_empty(), "{phase}: {:?}", whys(&r));
            }
        }
        // Streaming, throttled: a little every poll, for ten minutes.
        let mut streamed = 0;
        for _ in 0..60 {
            streamed += 200_000;
            let r = poll(
                &mut m,
                Some(progress(&ws, BackupPhase::StreamingFiles, streamed)),
            );
            assert!(r.decisions.is_empty(), "{:?}", whys(&r));
        }
        // The end-of-backup wait for archive_command: minutes, no bytes.
        for _ in 0..30 {
            let r = poll(
                &mut m,
                Some(progress(&ws, BackupPhase::WaitingForWalArchiving, streamed)),
            );
            assert!(r.decisions.is_empty(), "{:?}", whys(&r));
        }
        // A phase from a newer server is never judged.
        for _ in 0..10 {
            let r = poll(&mut m, Some(progress(&ws, BackupPhase::Unknown, streamed)));
            assert!(r.decisions.is_empty(), "{:?}", whys(&r));
        }
        // Transferring WAL (-X fetch), then the client stops reading: the
        // clock counts from the poll that saw the phase change.
        let r = poll(
            &mut m,
            Some(progress(&ws, BackupPhase::TransferringWal, streamed)),
        );
        assert!(r.decisions.is_empty());
        for _ in 0..2 {
            let r = poll(
                &mut m,
                Some(progress(&ws, BackupPhase::TransferringWal, streamed)),
            );
            assert!(r.decisions.is_empty(), "{:?}", whys(&r));
        }
        let r = poll(
            &mut m,
            Some(progress(&ws, BackupPhase::TransferringWal, streamed)),
        );
        assert_eq!(
            acted(&r),
            [(1, "stuck-backup".to_string(), Action::Terminate)]
        );
        assert_eq!(
            crate::engine::evidence_line(&r.decisions[0].evidence),
            "no_progress_for=base backup transferring wal files, 11.4 MiB of 1.0 GiB, unchanged for 30s (>= 30s)"
        );
    }

    #[test]
    fn a_stalled_backup_is_caught_and_a_reused_pid_lends_no_progress() {
        let p = policy(
            "[[rule]]\nname = \"stuck-backup\"\nno_progress_for = \"30s\"\naction = \"terminate\"\n",
        );
        let t0 = Instant::now();
        let mut m = Memory::default();
        let ws = backup_walsender(1);
        // A row of another process that had the same pid.
        let mut other = progress(&ws, BackupPhase::StreamingFiles, 5 << 20);
        other.id.backend_start = at(T0 - 10);
        for i in 0..10 {
            let mut s = snap(T0 + 10 * i, vec![ws.clone()]);
            s.basebackups = vec![other.clone()];
            let r = explain(&p, &s, &mut m, t0 + Duration::from_secs(10 * i));
            assert!(r.decisions.is_empty(), "{:?}", whys(&r));
            assert_eq!(r.measures[0].backup, Some(Backup::NoProgress));
        }
        // Its own row: streaming, then the client stops reading at 5.7 MB.
        let mut caught = None;
        for i in 10..30 {
            let streamed = (i - 10).min(5) * 1_200_000;
            let mut s = snap(T0 + 10 * i, vec![ws.clone()]);
            s.basebackups = vec![progress(&ws, BackupPhase::StreamingFiles, streamed)];
            let r = explain(&p, &s, &mut m, t0 + Duration::from_secs(10 * i));
            if !r.decisions.is_empty() {
                caught = Some(i);
                break;
            }
        }
        // Last moved at poll 15 (150 s): 30 s later.
        assert_eq!(caught, Some(18));
    }
}
