//! Reads base backup progress ([`crate::sql::BASEBACKUP_PROGRESS`]) into a
//! snapshot, only when the poll saw a walsender in state `backup`.

use std::time::SystemTime;

use tokio_postgres::Client;

use super::{BackupPhase, BackupProgress};
use crate::snapshot::{Snapshot, WalState, WalsenderId};
use crate::units::ByteSize;

/// Fills `snapshot.basebackups` with the progress of its walsenders in
/// `backup` (same pid and `backend_start`). Sends nothing when there is
/// none: polls without a base backup cost nothing more.
pub async fn read(client: &Client, snapshot: &mut Snapshot) -> Result<(), tokio_postgres::Error> {
    if !snapshot
        .walsenders
        .iter()
        .any(|w| w.state == Some(WalState::Backup))
    {
        return Ok(());
    }
    let rows = client.query(crate::sql::BASEBACKUP_PROGRESS, &[]).await?;
    let mut found = Vec::with_capacity(rows.len());
    for row in &rows {
        let id = WalsenderId {
            pid: row.try_get("pid")?,
            backend_start: row.try_get::<_, SystemTime>("backend_start")?,
        };
        let bytes = |n: i64| ByteSize(u64::try_from(n).unwrap_or(0));
        found.push(BackupProgress {
            id,
            phase: BackupPhase::from(row.try_get::<_, &str>("phase")?),
            total: row.try_get::<_, Option<i64>>("backup_total")?.map(bytes),
            streamed: bytes(row.try_get("backup_streamed")?),
            tablespaces_total: row.try_get("tablespaces_total")?,
            tablespaces_streamed: row.try_get("tablespaces_streamed")?,
        });
    }
    // Only the rows of this poll's walsenders in `backup`.
    found.retain(|p| {
        snapshot
            .walsenders
            .iter()
            .any(|w| w.id == p.id && w.state == Some(WalState::Backup))
    });
    snapshot.basebackups = found;
    Ok(())
}
