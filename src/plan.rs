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
    let snapshot = session
        .poller
        .poll(&session.client)
        .await
        .map_err(PlanError::Poll)?;
    let round = engine::explain(
        &config.policy,
        &snapshot,
        &mut Memory::default(),
        Instant::now(),
    );
    Ok(report::plan(
        config,
        &session.preflight,
        &snapshot,
        &round,
        dry_run,
    ))
}

/// Why `plan` could not run.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("the poll query failed: {0}")]
    Poll(#[source] tokio_postgres::Error),
}
