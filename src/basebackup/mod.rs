//! Base backups judged by their progress: what `pg_stat_progress_basebackup`
//! (13+) shows of each walsender in state `backup`, which of its phases are
//! judged by `no_progress_for` and which are not, and how `plan` shows it.
//! Driver-free, for the pure engine; `pg.rs` reads it from the server.
//!
//! # Which phases are judged
//! `backup_streamed` is counted by the outermost sink of the backup
//! (`basebackup_progress.c`, `bbsink_progress_archive_contents`), after the
//! data has been handed on towards the client: it stops moving when the
//! client stops reading and the socket buffers are full. But the backup has
//! phases in which no byte is sent by design, however healthy it is:
//!
//! | phase | judged | why |
//! |---|---|---|
//! | `initializing` | no | before anything is sent |
//! | `waiting for checkpoint to finish` | no | the start-of-backup checkpoint; without `--checkpoint=fast` a spread one, minutes long |
//! | `estimating backup size` | no | a walk of the data directory, long on a large cluster |
//! | `streaming database files` | yes | every file read is sent |
//! | `waiting for wal archiving to finish` | no | `do_pg_backup_stop` waits for `archive_command` to archive the last segment |
//! | `transferring wal files` | yes | WAL segments (`-X fetch`) are sent through the same counter |
//! | a phase this build does not know | no | a newer server's phase: never judged rather than killed |
//!
//! The stall clock (`crate::clocks`) restarts at every poll that sees the
//! phase or `backup_streamed` change, and at every poll in a phase not
//! judged. A walsender in `backup` without a progress row (the row is not
//! there yet, the backup command has ended and the client is finishing, or
//! the role cannot read it) is not judged either.

pub mod pg;

use std::fmt;
use std::time::Duration;

use crate::snapshot::WalsenderId;
use crate::units::{fmt_duration, ByteSize};

/// `pg_stat_progress_basebackup.phase`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BackupPhase {
    Initializing,
    WaitingForCheckpoint,
    EstimatingSize,
    StreamingFiles,
    WaitingForWalArchiving,
    TransferringWal,
    /// A phase this build does not know (a newer server's).
    Unknown,
}

impl BackupPhase {
    /// Every phase PostgreSQL 13-18 shows, in the order a backup goes
    /// through them.
    pub const KNOWN: [BackupPhase; 6] = [
        BackupPhase::Initializing,
        BackupPhase::WaitingForCheckpoint,
        BackupPhase::EstimatingSize,
        BackupPhase::StreamingFiles,
        BackupPhase::WaitingForWalArchiving,
        BackupPhase::TransferringWal,
    ];

    /// PostgreSQL's text for the phase.
    pub fn as_str(self) -> &'static str {
        match self {
            BackupPhase::Initializing => "initializing",
            BackupPhase::WaitingForCheckpoint => "waiting for checkpoint to finish",
            BackupPhase::EstimatingSize => "estimating backup size",
            BackupPhase::StreamingFiles => "streaming database files",
            BackupPhase::WaitingForWalArchiving => "waiting for wal archiving to finish",
            BackupPhase::TransferringWal => "transferring wal files",
            BackupPhase::Unknown => "unknown",
        }
    }

    /// Whether a healthy backup sends bytes all through this phase, so that
    /// `backup_streamed` standing still means a stall (see the module docs).
    pub fn judged(self) -> bool {
        matches!(
            self,
            BackupPhase::StreamingFiles | BackupPhase::TransferringWal
        )
    }
}

impl From<&str> for BackupPhase {
    fn from(text: &str) -> BackupPhase {
        BackupPhase::KNOWN
            .into_iter()
            .find(|p| p.as_str() == text)
            .unwrap_or(BackupPhase::Unknown)
    }
}

impl fmt::Display for BackupPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One row of `pg_stat_progress_basebackup`, of the same process instance
/// as a walsender of the poll.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupProgress {
    /// The walsender sending the backup, `backend_start` read in the same
    /// statement as the progress: a pid reused in between is another id.
    pub id: WalsenderId,
    pub phase: BackupPhase,
    /// `backup_total`: NULL without an estimate (`--no-estimate-size`, or
    /// a client that asks for none).
    pub total: Option<ByteSize>,
    pub streamed: ByteSize,
    pub tablespaces_total: Option<i64>,
    pub tablespaces_streamed: Option<i64>,
}

/// What `no_progress_for` and `plan` see of a walsender in `backup`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backup {
    /// No progress row of that process instance: not judged.
    NoProgress,
    /// Its progress (how long it has stood still is the stall clock's
    /// [`crate::clocks::Measures::stalled`]).
    Progress {
        phase: BackupPhase,
        streamed: ByteSize,
        total: Option<ByteSize>,
    },
}

/// Why a walsender in `backup` without a progress row is not judged.
pub const NO_PROGRESS_ROW: &str = "no pg_stat_progress_basebackup row for this process (not started, finished, or not readable by the role): not judged";

/// `5.2 MiB of 1.0 GiB` / `5.2 MiB of an unknown total`.
pub fn streamed_text(streamed: ByteSize, total: Option<ByteSize>) -> String {
    match total {
        Some(total) => format!("{streamed} of {total}"),
        None => format!("{streamed} of an unknown total"),
    }
}

/// The `plan` line of a walsender in `backup`, with its progress row's
/// tablespace counts when read.
pub fn plan_line(
    backup: Backup,
    stalled: std::time::Duration,
    row: Option<&BackupProgress>,
) -> String {
    match backup {
        Backup::NoProgress => format!("base backup: {NO_PROGRESS_ROW}"),
        Backup::Progress {
            phase,
            streamed,
            total,
        } => {
            let clock = if phase.judged() {
                format!("bytes unchanged for {}", fmt_duration(stalled))
            } else {
                "bytes do not move in this phase: no_progress_for not judged".to_string()
            };
            let tablespaces = match row.map(|r| (r.tablespaces_streamed, r.tablespaces_total)) {
                // Counted from the start of streaming (0 of 0 before).
                Some((Some(done), Some(all))) if all > 0 => {
                    format!("; tablespaces {done} of {all}")
                }
                _ => String::new(),
            };
            format!(
                "base backup: phase {phase}; streamed {}{tablespaces}; {clock}",
                streamed_text(streamed, total)
            )
        }
    }
}

/// A base backup as `no_progress_for` saw it: `base backup streaming
/// database files, 5.0 MiB of 1.0 GiB, unchanged for 12s`.
pub fn backup_text(backup: Backup, stalled: Duration) -> String {
    match backup {
        Backup::NoProgress => format!("base backup: {NO_PROGRESS_ROW}"),
        Backup::Progress {
            phase,
            streamed,
            total,
        } if phase.judged() => format!(
            "base backup {phase}, {}, unchanged for {}",
            streamed_text(streamed, total),
            fmt_duration(stalled)
        ),
        Backup::Progress {
            phase,
            streamed,
            total,
        } => format!(
            "base backup {phase}, {}: bytes do not move in this phase, not judged",
            streamed_text(streamed, total)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_read_back_as_postgresql_writes_them() {
        for phase in BackupPhase::KNOWN {
            assert_eq!(BackupPhase::from(phase.as_str()), phase);
        }
        assert_eq!(BackupPhase::from("some future phase"), BackupPhase::Unknown);
        let judged: Vec<_> = BackupPhase::KNOWN
            .into_iter()
            .filter(|p| p.judged())
            .collect();
        assert_eq!(
            judged,
            [BackupPhase::StreamingFiles, BackupPhase::TransferringWal]
        );
        assert!(!BackupPhase::Unknown.judged());
    }

    #[test]
    fn plan_says_what_is_judged_and_why_not() {
        let id = WalsenderId {
            pid: 7,
            backend_start: std::time::UNIX_EPOCH,
        };
        let row = |phase, tablespaces_total| BackupProgress {
            id,
            phase,
            total: Some(ByteSize(1 << 30)),
            streamed: ByteSize(5 << 20),
            tablespaces_total: Some(tablespaces_total),
            tablespaces_streamed: Some(0),
        };
        let progress = |phase| Backup::Progress {
            phase,
            streamed: ByteSize(5 << 20),
            total: Some(ByteSize(1 << 30)),
        };
        let three = std::time::Duration::from_secs(3);
        let streaming = row(BackupPhase::StreamingFiles, 2);
        assert_eq!(
            plan_line(progress(BackupPhase::StreamingFiles), three, Some(&streaming)),
            "base backup: phase streaming database files; streamed 5.0 MiB of 1.0 GiB; tablespaces 0 of 2; bytes unchanged for 3s"
        );
        let waiting = row(BackupPhase::WaitingForCheckpoint, 0);
        assert_eq!(
            plan_line(progress(BackupPhase::WaitingForCheckpoint), three, Some(&waiting)),
            "base backup: phase waiting for checkpoint to finish; streamed 5.0 MiB of 1.0 GiB; bytes do not move in this phase: no_progress_for not judged"
        );
        assert_eq!(
            plan_line(Backup::NoProgress, three, None),
            format!("base backup: {NO_PROGRESS_ROW}")
        );
    }
}
