//! Conditions as data: one table row per condition — its name (the config
//! key), the kind of value its limit takes, and how it is read off the
//! subject it judges — and a rule's thresholds over such a table. The
//! config loader takes the names and kinds from the table, the engine
//! evaluates its rows, `check` and `plan` print them: adding a condition is
//! adding a row (and its doc in [`crate::keys`]).
//!
//! A table belongs to a subject type through [`Subject`]: walsender rules
//! judge a [`Sample`] and their table is [`Sample::CONDITIONS`]; slot rules
//! (`[[slot_rule]]`, see [`crate::slots`]) judge a [`SlotSample`] and their
//! table is [`SlotSample::CONDITIONS`]. Both use the same [`Condition`],
//! [`Thresholds`], [`Limit`] and [`Measured`], so the config loader, the
//! evidence and the printouts treat them alike.

use std::fmt;
use std::time::Duration;

use crate::basebackup::Backup;
use crate::clocks::{LagKind, Measures, TimeLag};
use crate::units::{fmt_duration, ByteSize, Lsn};

/// The kind of value a condition's limit is written as in the config.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `"5m"`, `"90s"`.
    Duration,
    /// `"1GB"`, `"512MB"`.
    Size,
}

/// A condition's threshold, or a value measured against one. Ordered within
/// a kind; a condition holds when its measured value is above its limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Limit {
    Time(Duration),
    Bytes(ByteSize),
}

impl Limit {
    pub fn is_zero(self) -> bool {
        match self {
            Limit::Time(d) => d.is_zero(),
            Limit::Bytes(b) => b.0 == 0,
        }
    }

    /// The duration of a [`Kind::Duration`] limit.
    pub fn time(self) -> Option<Duration> {
        match self {
            Limit::Time(d) => Some(d),
            Limit::Bytes(_) => None,
        }
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Limit::Time(d) => f.write_str(&fmt_duration(*d)),
            Limit::Bytes(b) => b.fmt(f),
        }
    }
}

/// A measured value, as a condition saw it.
#[derive(Clone, Copy, Debug)]
pub enum Measured {
    /// A value of the condition's kind.
    Value(Limit),
    /// The column is NULL; why that is.
    Null(&'static str),
    /// A value PostgreSQL shows that is not judged; why (see
    /// [`crate::clocks::time_lag`]).
    NotJudged(Duration, &'static str),
    /// `no_progress_for`: the flush position and how long it has not moved.
    Stalled {
        stalled: Duration,
        flush: Lsn,
        current: Lsn,
    },
    /// `no_progress_for`: flushed all the server has.
    CaughtUp,
    /// `no_progress_for` on a walsender in `backup`: its progress and how
    /// long its phase and bytes have not changed in a phase that is judged
    /// (see [`crate::basebackup`]).
    Backup { backup: Backup, stalled: Duration },
}

/// How a measured value shows in evidence and printouts: the value, `NULL`,
/// the time lag shown but not judged, how long the flush position stalled,
/// or `caught up`.
impl fmt::Display for Measured {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Measured::Value(v) => v.fmt(f),
            Measured::Null(_) => f.write_str("NULL"),
            Measured::NotJudged(d, _) | Measured::Stalled { stalled: d, .. } => {
                f.write_str(&fmt_duration(*d))
            }
            Measured::CaughtUp => f.write_str("caught up"),
            Measured::Backup { backup, stalled } => {
                f.write_str(&crate::basebackup::backup_text(*backup, *stalled))
            }
        }
    }
}

/// One condition read off one subject: whether it holds, and what it saw.
#[derive(Clone, Copy, Debug)]
pub struct Reading {
    pub holds: bool,
    pub measured: Measured,
}

/// One row of a condition table over subjects of type `S`.
pub struct Condition<S> {
    /// The config key, and the name in logs and printouts.
    pub name: &'static str,
    /// How the limit is written (and parsed).
    pub kind: Kind,
    /// A zero limit holds for nearly every subject: warned about at load.
    pub warn_zero: bool,
    /// Reads the condition off a subject against a limit of `kind`.
    pub read: fn(&S, Limit) -> Reading,
}

/// A type that rules judge, with its table of conditions.
pub trait Subject: Sized + 'static {
    /// Every condition, in the order the config documents them; rules
    /// evaluate and print them in this order.
    const CONDITIONS: &'static [Condition<Self>];
}

/// What must hold, all together, for a rule to act: a limit for some rows
/// of `S`'s table, kept in table order.
pub struct Thresholds<S> {
    /// (row in `S::CONDITIONS`, limit), ascending by row.
    set: Vec<(usize, Limit)>,
    subject: std::marker::PhantomData<fn(&S)>,
}

impl<S: Subject> Thresholds<S> {
    /// Sets the limit of the condition called `name`.
    ///
    /// # Panics
    /// When `S`'s table has no such condition (a programming error: names
    /// come from the table).
    pub fn set(&mut self, name: &str, limit: Limit) {
        let row = Self::row(name);
        match self.set.binary_search_by_key(&row, |(r, _)| *r) {
            Ok(at) => self.set[at].1 = limit,
            Err(at) => self.set.insert(at, (row, limit)),
        }
    }

    /// Like [`Thresholds::set`], by value.
    pub fn with(mut self, name: &str, limit: Limit) -> Self {
        self.set(name, limit);
        self
    }

    /// The limit of the condition called `name`, if the rule has it.
    ///
    /// # Panics
    /// When `S`'s table has no such condition, as [`Thresholds::set`].
    pub fn get(&self, name: &str) -> Option<Limit> {
        let row = Self::row(name);
        self.set.iter().find(|(r, _)| *r == row).map(|(_, l)| *l)
    }

    /// The conditions set, with their limits, in table order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static Condition<S>, Limit)> + '_ {
        self.set
            .iter()
            .map(|&(row, limit)| (&S::CONDITIONS[row], limit))
    }

    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }

    fn row(name: &str) -> usize {
        S::CONDITIONS
            .iter()
            .position(|c| c.name == name)
            .unwrap_or_else(|| panic!("no condition called {name:?} in the table"))
    }
}

impl<S> Default for Thresholds<S> {
    fn default() -> Self {
        Thresholds {
            set: Vec::new(),
            subject: std::marker::PhantomData,
        }
    }
}

impl<S> Clone for Thresholds<S> {
    fn clone(&self) -> Self {
        Thresholds {
            set: self.set.clone(),
            subject: std::marker::PhantomData,
        }
    }
}

impl<S> PartialEq for Thresholds<S> {
    fn eq(&self, other: &Self) -> bool {
        self.set == other.set
    }
}

impl<S> Eq for Thresholds<S> {}

impl<S: Subject> fmt::Debug for Thresholds<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.iter().map(|(c, limit)| (c.name, limit)))
            .finish()
    }
}

/// What one walsender shows in one round, on the daemon's clock: what
/// walsender rules judge.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    /// Silence, progress and lags, on one clock.
    pub measures: Measures,
    /// How long the instance has been in its state.
    pub in_state: Option<Duration>,
    /// The server's WAL position.
    pub current_lsn: Option<Lsn>,
    /// WAL its slot holds back.
    pub retained_wal: Option<ByteSize>,
}

/// `measured > limit`; a NULL (`None`) never holds.
fn above(measured: Option<Limit>, limit: Limit, null: &'static str) -> Reading {
    Reading {
        holds: measured.is_some_and(|m| m > limit),
        measured: measured.map_or(Measured::Null(null), Measured::Value),
    }
}

/// A time lag holds only when judged (see [`crate::clocks::time_lag`]).
fn time_lag(lag: TimeLag, limit: Limit) -> Reading {
    match lag {
        TimeLag::Judged(d) => above(Some(Limit::Time(d)), limit, "caught up"),
        TimeLag::Null => above(None, limit, "caught up"),
        TimeLag::NotJudged(d, why) => Reading {
            holds: false,
            measured: Measured::NotJudged(d, why),
        },
    }
}

fn bytes_behind(s: &Sample, kind: LagKind, limit: Limit) -> Reading {
    let behind = s.measures.lag_bytes(kind).map(Limit::Bytes);
    above(behind, limit, "column not reported")
}

/// The flush position has not moved for `limit` while the server had WAL
/// beyond it; for a base backup, no bytes were streamed for `limit` in a
/// phase that sends them.
fn no_progress(s: &Sample, limit: Limit) -> Reading {
    if let Some(backup) = s.measures.backup {
        let stalled = s.measures.stalled;
        let judged = matches!(backup, Backup::Progress { phase, .. } if phase.judged());
        return Reading {
            holds: judged && Limit::Time(stalled) >= limit,
            measured: Measured::Backup { backup, stalled },
        };
    }
    let measured = match (s.measures.progress, s.current_lsn) {
        (Some(flush), Some(current)) if flush < current => Measured::Stalled {
            stalled: s.measures.stalled,
            flush,
            current,
        },
        (Some(_), Some(_)) => Measured::CaughtUp,
        _ => Measured::Null("column not reported"),
    };
    Reading {
        holds: matches!(measured, Measured::Stalled { stalled, .. } if Limit::Time(stalled) >= limit),
        measured,
    }
}

impl Subject for Sample {
    const CONDITIONS: &'static [Condition<Sample>] = &[
        Condition {
            name: "write_lag",
            kind: Kind::Duration,
            warn_zero: false,
            read: |s, l| time_lag(s.measures.lag(LagKind::Write), l),
        },
        Condition {
            name: "flush_lag",
            kind: Kind::Duration,
            warn_zero: false,
            read: |s, l| time_lag(s.measures.lag(LagKind::Flush), l),
        },
        Condition {
            name: "replay_lag",
            kind: Kind::Duration,
            warn_zero: false,
            read: |s, l| time_lag(s.measures.lag(LagKind::Replay), l),
        },
        Condition {
            name: "write_lag_bytes",
            kind: Kind::Size,
            warn_zero: false,
            read: |s, l| bytes_behind(s, LagKind::Write, l),
        },
        Condition {
            name: "flush_lag_bytes",
            kind: Kind::Size,
            warn_zero: false,
            read: |s, l| bytes_behind(s, LagKind::Flush, l),
        },
        Condition {
            name: "replay_lag_bytes",
            kind: Kind::Size,
            warn_zero: false,
            read: |s, l| bytes_behind(s, LagKind::Replay, l),
        },
        Condition {
            name: "retained_wal",
            kind: Kind::Size,
            warn_zero: false,
            read: |s, l| above(s.retained_wal.map(Limit::Bytes), l, "column not reported"),
        },
        Condition {
            name: "in_state_for",
            kind: Kind::Duration,
            warn_zero: true,
            read: |s, l| above(s.in_state.map(Limit::Time), l, "state unknown"),
        },
        Condition {
            name: "no_reply_for",
            kind: Kind::Duration,
            warn_zero: true,
            read: |s, l| above(s.measures.silence.map(Limit::Time), l, "no reply yet"),
        },
        Condition {
            name: "no_progress_for",
            kind: Kind::Duration,
            warn_zero: true,
            read: no_progress,
        },
    ];
}

/// What one replication slot shows in one round, on the daemon's clock:
/// what slot rules judge.
#[derive(Clone, Copy, Debug)]
pub struct SlotSample {
    /// How long the daemon has seen it inactive; `None` while active.
    pub inactive_for: Option<Duration>,
    /// The server's WAL position minus its `restart_lsn`.
    pub retained_wal: Option<ByteSize>,
}

impl Subject for SlotSample {
    const CONDITIONS: &'static [Condition<SlotSample>] = &[
        Condition {
            name: "inactive_for",
            kind: Kind::Duration,
            warn_zero: true,
            read: |s, l| above(s.inactive_for.map(Limit::Time), l, "active"),
        },
        Condition {
            name: "retained_wal",
            kind: Kind::Size,
            warn_zero: false,
            read: |s, l| {
                above(
                    s.retained_wal.map(Limit::Bytes),
                    l,
                    "no restart_lsn, or no server position",
                )
            },
        },
    ];
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_keep_table_order_and_one_limit_per_condition() {
        let t = Thresholds::<Sample>::default()
            .with("no_progress_for", Limit::Time(Duration::from_secs(60)))
            .with("write_lag", Limit::Time(Duration::from_secs(1)))
            .with("no_progress_for", Limit::Time(Duration::from_secs(90)));
        let names: Vec<_> = t.iter().map(|(c, l)| format!("{}={l}", c.name)).collect();
        assert_eq!(names, ["write_lag=1s", "no_progress_for=1m 30s"]);
        assert_eq!(
            t.get("write_lag"),
            Some(Limit::Time(Duration::from_secs(1)))
        );
        assert_eq!(t.get("retained_wal"), None);
    }

    /// A rule of `section` giving every condition of `S`'s table, by its
    /// kind, and what its thresholds should then print.
    fn every_condition<S: Subject>(section: &str) -> (String, Vec<String>) {
        let mut toml = format!("[[{section}]]\nname = \"all\"\n");
        let mut expected = Vec::new();
        for c in S::CONDITIONS {
            let (value, shown) = match c.kind {
                Kind::Duration => ("\"5m\"", "5m"),
                Kind::Size => ("\"1GB\"", "1.0 GiB"),
            };
            toml += &format!("{} = {value}\n", c.name);
            expected.push(format!("{} > {shown}", c.name));
        }
        (toml, expected)
    }

    fn shown<S: Subject>(t: &Thresholds<S>) -> Vec<String> {
        t.iter()
            .map(|(c, limit)| format!("{} > {limit}", c.name))
            .collect()
    }

    #[test]
    fn the_config_reads_every_condition_of_the_table_by_its_kind() {
        let (toml, expected) = every_condition::<Sample>("rule");
        let policy = crate::fixtures::policy(&toml);
        assert_eq!(shown(&policy.rules[0].conditions), expected);
    }

    #[test]
    fn the_config_reads_every_slot_condition_of_the_slot_table_by_its_kind() {
        let (toml, expected) = every_condition::<SlotSample>("slot_rule");
        let policy = crate::fixtures::policy(&toml);
        assert_eq!(shown(&policy.slots.rules[0].conditions), expected);
    }

    #[test]
    fn a_measured_value_shows_as_evidence_does() {
        let shown: Vec<String> = [
            Measured::Value(Limit::Bytes(ByteSize(2048))),
            Measured::Null("column not reported"),
            Measured::NotJudged(Duration::from_secs(90), "stale"),
            Measured::Stalled {
                stalled: Duration::from_secs(60),
                flush: Lsn(1),
                current: Lsn(2),
            },
            Measured::CaughtUp,
        ]
        .iter()
        .map(ToString::to_string)
        .collect();
        assert_eq!(shown, ["2.0 KiB", "NULL", "1m 30s", "1m", "caught up"]);
    }
}
