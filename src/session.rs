//! The database session: connect (host by host, as libpq does with host
//! lists and `target_session_attrs`, each host bounded on its own), set the
//! session up (`application_name`, timeouts, version check, preflight, the
//! poll and signal statements prepared), and the errors that say why
//! connecting failed, with the hook that spots a lock-out
//! ([`crate::lockout`]). Retrying with backoff is the loop's job
//! ([`crate::daemon`]).

use std::time::Duration;

use tokio_postgres::Client;
use tracing::debug;

use crate::actions::Signaller;
use crate::config::PostgresSettings;
use crate::conninfo::{SessionAttrs, Target};
use crate::poller::Poller;
use crate::snapshot::Preflight;
use crate::sql::{self, ServerVersion, OLDEST_MAJOR};

/// Client-side bound on any statement, beyond the server's
/// `statement_timeout`: a server that stops answering (SIGSTOP, a dead
/// network) cannot enforce its own timeout.
pub(crate) const CLIENT_MARGIN: Duration = Duration::from_secs(1);

/// When `connect_timeout` is not set: libpq has none, but a daemon must not
/// wait forever on one host of a list.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// An open, prepared session with the server.
pub struct Session {
    /// The connection, for the statements below.
    pub(crate) client: Client,
    /// The host of the list this session is with (`host:port`).
    pub host: String,
    /// What the role may do, read at connect.
    pub preflight: Preflight,
    pub version: ServerVersion,
    /// Which server process this is (postmaster start time and address):
    /// when it changes, nothing remembered about the old one is kept.
    pub server: String,
    /// The poll statement, prepared on this connection.
    pub(crate) poller: Poller,
    /// The cancel/terminate statements, prepared on this connection.
    pub(crate) signaller: Signaller,
    /// The task that drives the connection; ended when the session is dropped.
    connection: tokio::task::JoinHandle<()>,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.connection.abort();
    }
}

/// Why connecting failed, worded for the log.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot connect")]
    Connect(#[source] tokio_postgres::Error),
    #[error("connected, but setting up the session failed")]
    Setup(#[source] tokio_postgres::Error),
    #[error(
        "server version {0} is too old: replwarden supports PostgreSQL {OLDEST_MAJOR} and newer"
    )]
    TooOld(String),
    #[error("the server reports server_version_num {0:?}, which is not a version number: is it PostgreSQL, and not a pooler or proxy in front of it?")]
    BadVersion(String),
    #[error("the server did not finish the connection handshake and session setup within {} (connect_timeout + statement_timeout + 1s): it may be hung or overloaded", crate::units::fmt_duration(*.0))]
    Hung(Duration),
    #[error("connected, but the server is {found} and target_session_attrs is {wanted}")]
    NotWanted {
        found: &'static str,
        wanted: SessionAttrs,
    },
    #[error("no host of the list could be used: {}", .0.iter().map(|(host, e)| format!("{host}: {}", crate::errors::error_chain(e))).collect::<Vec<_>>().join("; "))]
    EveryHost(Vec<(String, ConnectError)>),
}

impl ConnectError {
    /// A refusal for want of a connection slot, from any host of a list
    /// (see [`crate::lockout`]).
    pub(crate) fn lockout(&self) -> Option<crate::lockout::Refusal> {
        match self {
            ConnectError::EveryHost(failures) => failures.iter().find_map(|(_, e)| e.lockout()),
            e => crate::lockout::classify(e),
        }
    }

    /// A server replwarden cannot work with: waiting would not help.
    pub(crate) fn is_unsupported(&self) -> bool {
        matches!(self, ConnectError::TooOld(_) | ConnectError::BadVersion(_))
    }
}

/// Opens the daemon's one connection: `application_name=replwarden`, a
/// short `statement_timeout`, the poll and signal statements prepared.
///
/// The hosts of a host list are tried in turn (in random order with
/// `load_balance_hosts=random`), as libpq does, and the first one that
/// `target_session_attrs` accepts is kept; with `prefer-standby` and no
/// standby, a second pass takes any. Each host is bounded on its own:
/// `connect_timeout` only limits the TCP connect, and a server that accepts
/// the socket but never answers (a stopped postmaster: the kernel still
/// completes the handshake) would otherwise hold the startup packet
/// forever. A failure over a list names every host's error.
pub async fn connect(settings: &PostgresSettings) -> Result<Session, ConnectError> {
    let mut order: Vec<&Target> = settings.targets.iter().collect();
    if settings.connect.get_load_balance_hosts() == tokio_postgres::config::LoadBalanceHosts::Random
    {
        shuffle(&mut order);
    }
    let mut failures = Vec::new();
    let mut rejected = Vec::new();
    for target in &order {
        match connect_host(target, settings, settings.session_attrs).await {
            Ok(session) => return Ok(session),
            Err(e) if e.is_unsupported() => return Err(e),
            Err(e) => {
                if matches!(e, ConnectError::NotWanted { .. }) {
                    rejected.push(*target);
                }
                failures.push((target.label.clone(), e));
            }
        }
    }
    if settings.session_attrs.fallback() {
        for target in rejected {
            match connect_host(target, settings, SessionAttrs::Any).await {
                Ok(session) => return Ok(session),
                Err(e) if e.is_unsupported() => return Err(e),
                Err(e) => failures.push((target.label.clone(), e)),
            }
        }
    }
    match failures.len() {
        1 => Err(failures.remove(0).1),
        _ => Err(ConnectError::EveryHost(failures)),
    }
}

/// Shuffles `items` (Fisher-Yates, seeded from the clock: spreading
/// daemons over hosts needs no better randomness).
fn shuffle<T>(items: &mut [T]) {
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.subsec_nanos().into())
        | 1;
    for i in (1..items.len()).rev() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        // The remainder is at most i, which is a usize.
        let j = usize::try_from(seed % (i as u64 + 1)).unwrap_or(i);
        items.swap(i, j);
    }
}

/// Connects to one host, bounded as a whole (see [`connect`]).
async fn connect_host(
    target: &Target,
    settings: &PostgresSettings,
    wanted: SessionAttrs,
) -> Result<Session, ConnectError> {
    let mut pg = target.config.clone();
    if pg.get_connect_timeout().is_none() {
        pg.connect_timeout(DEFAULT_CONNECT_TIMEOUT);
    }
    let connect_timeout = pg
        .get_connect_timeout()
        .copied()
        .unwrap_or(DEFAULT_CONNECT_TIMEOUT);
    let bound = connect_timeout
        .saturating_add(settings.statement_timeout)
        .saturating_add(CLIENT_MARGIN);
    let mut session = tokio::time::timeout(bound, connect_unbounded(pg, settings, wanted))
        .await
        .unwrap_or(Err(ConnectError::Hung(bound)))?;
    session.host = target.label.clone();
    Ok(session)
}

/// The server's version from `server_version_num`.
fn server_version(number: &str, text: &str) -> Result<ServerVersion, ConnectError> {
    let version = ServerVersion(
        number
            .trim()
            .parse()
            .map_err(|_| ConnectError::BadVersion(number.to_string()))?,
    );
    if version.major() < sql::OLDEST_MAJOR {
        return Err(ConnectError::TooOld(text.to_string()));
    }
    Ok(version)
}

async fn connect_unbounded(
    mut pg: tokio_postgres::Config,
    settings: &PostgresSettings,
    wanted: SessionAttrs,
) -> Result<Session, ConnectError> {
    pg.application_name("replwarden");
    // A server that vanishes without closing the connection is noticed by
    // TCP within about 20 s even between polls (libpq keeps its defaults
    // when these are not set; a daemon should not wait two hours).
    if pg.get_keepalives_idle() == Duration::from_secs(2 * 60 * 60) {
        pg.keepalives_idle(Duration::from_secs(10));
    }
    if pg.get_keepalives_interval().is_none() {
        pg.keepalives_interval(Duration::from_secs(3));
    }
    if pg.get_keepalives_retries().is_none() {
        pg.keepalives_retries(3);
    }
    if pg.get_tcp_user_timeout().is_none() {
        // The kernel takes at most i32::MAX ms (and refuses the socket
        // beyond), which the longest statement_timeout plus 1 s exceeds.
        pg.tcp_user_timeout(
            settings
                .statement_timeout
                .saturating_add(CLIENT_MARGIN)
                .min(Duration::from_millis(i32::MAX as u64)),
        );
    }
    let tls = crate::conninfo::LazyTls(settings.verify.clone());
    let (client, connection) = pg.connect(tls).await.map_err(ConnectError::Connect)?;
    let connection = tokio::spawn(async move {
        if let Err(e) = connection.await {
            debug!(error = %crate::errors::error_chain(&e), "connection ended");
        }
    });
    let setup = async {
        client
            .batch_execute(&sql::session_setup(settings.statement_timeout))
            .await?;
        let row = client.query_one(sql::SERVER_STATE, &[]).await?;
        Ok::<_, tokio_postgres::Error>((
            row.get::<_, String>(0),
            row.get::<_, String>(1),
            row.get::<_, bool>(2),
            row.get::<_, bool>(3),
        ))
    };
    let (number, version_text, in_recovery, read_only) =
        setup.await.map_err(ConnectError::Setup)?;
    let version = server_version(&number, &version_text)?;
    if !wanted.accepts(in_recovery, read_only) {
        return Err(ConnectError::NotWanted {
            found: match (in_recovery, read_only) {
                (true, _) => "a standby",
                (false, true) => "a primary with default_transaction_read_only on",
                (false, false) => "a primary",
            },
            wanted,
        });
    }
    let server: String = client
        .query_one(sql::SERVER_IDENTITY, &[])
        .await
        .map_err(ConnectError::Setup)?
        .get(0);
    Ok(Session {
        server,
        host: String::new(),
        preflight: Preflight::read(&client)
            .await
            .map_err(ConnectError::Setup)?,
        poller: Poller::prepare(&client)
            .await
            .map_err(ConnectError::Setup)?,
        signaller: Signaller::prepare(&client)
            .await
            .map_err(ConnectError::Setup)?,
        version,
        client,
        connection,
    })
}

/// Runs one statement of the session with a bound on how long the server
/// may take to answer (`statement_timeout` plus a margin): its error, or
/// `no_answer(limit)` when the server did not answer in time.
pub async fn bounded<T, E: From<tokio_postgres::Error>>(
    limit: Duration,
    statement: impl std::future::Future<Output = Result<T, tokio_postgres::Error>>,
    no_answer: impl FnOnce(Duration) -> E,
) -> Result<T, E> {
    match tokio::time::timeout(limit, statement).await {
        Ok(r) => r.map_err(E::from),
        Err(_) => Err(no_answer(limit)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unparsable_server_version_is_reported_as_such() {
        assert!(matches!(
            server_version("unknown", "x"),
            Err(ConnectError::BadVersion(v)) if v == "unknown"
        ));
        let e = server_version("", "").unwrap_err().to_string();
        assert!(e.contains("not a version number"), "{e}");
        assert!(matches!(
            server_version("120022", "12.22"),
            Err(ConnectError::TooOld(v)) if v == "12.22"
        ));
        assert_eq!(server_version("150004", "15.4").unwrap().0, 150004);
    }
}
