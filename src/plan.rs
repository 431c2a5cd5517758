//! `replwarden plan`: one poll with a fresh memory, decided and printed;
//! nothing is signalled.

use std::time::Instant;

use crate::config::Config;
use crate::engine::{self, Memory};
use crate::report;
use crate::session::{connect, ConnectError};

/// `replwarden plan`: one poll with a fresh memory, printed; signals nothing.
pub async fn plan(config: &Config, dry_run: bool) -> Result<String, PlanError> {
    let session = connect(&config.postgres).await?;
    let mut snapshot = session
        .poller
        .poll(&session.client)
        .await
        .map_err(PlanError::Poll)?;
    crate::basebackup::pg::read(&session.client, &mut snapshot)
        .await
        .map_err(PlanError::Poll)?;
    let round = engine::explain(
        &config.policy,
        &snapshot,
        &mut Memory::default(),
        Instant::now(),
    );
    let mut out = report::plan(config, &session.preflight, &snapshot, &round, dry_run);
    // Replication slots with rules (crate::slots).
    let slots = crate::slots::pg::read(&session.client, session.version)
        .await
        .map_err(PlanError::Poll)?;
    let slot_round = crate::slots::judge(
        &config.policy.slots,
        &config.policy.limits,
        &slots,
        &mut Default::default(),
        Instant::now(),
        dry_run,
    );
    out += &crate::slots::report::plan(
        &config.policy.slots,
        &session.preflight,
        &slots,
        &slot_round,
        dry_run,
    );
    Ok(out)
}

/// Why `plan` could not run.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("the poll query failed")]
    Poll(#[source] tokio_postgres::Error),
}
