//! The loop: connect (waiting out a server that is down, with capped
//! backoff), poll on every tick, decide, act, log; reload on request
//! (all-or-nothing); stop on request after the statement in flight.
//!
//! Control arrives as [`Control`] messages, so `main` maps OS signals to them
//! and tests can drive the loop without signals.

use std::time::{Duration, Instant};

use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::MissedTickBehavior;
use tokio_postgres::Client;
use tracing::{debug, error, info, info_span, warn, Instrument};

use crate::actions::{is_connection_error, Outcome, Signaller};
use crate::config::{self, Config, PostgresSettings};
use crate::engine::{self, Delivery, HoldReason, Memory};
use crate::metrics::Metrics;
use crate::policy::Action;
use crate::report;
use crate::report::Severity;
use crate::service::{next_tick, Service};
use crate::snapshot::Poller;
use crate::snapshot::Preflight;
use crate::sql::{self, ServerVersion, OLDEST_MAJOR};

/// What the outside world asks of the loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    /// Re-read the config file (SIGHUP).
    Reload,
    /// Stop after the statement in flight (SIGTERM, SIGINT).
    Shutdown,
}

/// First and last wait between connection attempts.
const BACKOFF_START: Duration = Duration::from_millis(500);
const BACKOFF_CAP: Duration = Duration::from_secs(30);
/// How long a shutdown waits for the statement in flight before dropping it.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(800);
/// Client-side bound on any statement, beyond the server's
/// `statement_timeout`: a server that stops answering (SIGSTOP, a dead
/// network) cannot enforce its own timeout.
const CLIENT_MARGIN: Duration = Duration::from_secs(1);
/// The shortest gap between a poll and an extra one for a timer.
const MIN_WAKE: Duration = Duration::from_millis(10);
/// How often a persisting privilege problem is logged again.
const PRIVILEGE_REMINDER: Duration = Duration::from_secs(60);

/// An open, prepared session with the server.
pub struct Session {
    client: Client,
    /// What the role may do, read at connect.
    pub preflight: Preflight,
    pub version: ServerVersion,
    /// Which server process this is (postmaster start time and address):
    /// when it changes, nothing remembered about the old one is kept.
    pub server: String,
    poller: Poller,
    signaller: Signaller,
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
    #[error("cannot connect: {0}")]
    Connect(#[source] tokio_postgres::Error),
    #[error("connected, but setting up the session failed: {0}")]
    Setup(#[source] tokio_postgres::Error),
    #[error(
        "server version {0} is too old: replwarden supports PostgreSQL {OLDEST_MAJOR} and newer"
    )]
    TooOld(String),
    #[error("the server did not finish the connection handshake and session setup within {} (connect_timeout per host + statement_timeout + 1s): it may be hung or overloaded", crate::units::fmt_duration(*.0))]
    Hung(Duration),
}

/// Opens the daemon's one connection: `application_name=replwarden`, a
/// short `statement_timeout`, the poll and signal statements prepared.
///
/// The whole of it is bounded: `connect_timeout` only limits each TCP
/// connect, and a server that accepts the socket but never answers (a
/// stopped postmaster: the kernel still completes the handshake) would
/// otherwise hold the startup packet forever.
pub async fn connect(
    settings: &PostgresSettings,
    terminate_timeout: Duration,
) -> Result<Session, ConnectError> {
    let mut pg = settings.connect.clone();
    if pg.get_connect_timeout().is_none() {
        pg.connect_timeout(Duration::from_secs(5));
    }
    // One connect_timeout per host of a host list, as libpq allows.
    let hosts = u32::try_from(pg.get_hosts().len().max(1)).unwrap_or(u32::MAX);
    let bound = *pg.get_connect_timeout().expect("set above") * hosts
        + settings.statement_timeout
        + CLIENT_MARGIN;
    tokio::time::timeout(bound, connect_unbounded(pg, settings, terminate_timeout))
        .await
        .unwrap_or(Err(ConnectError::Hung(bound)))
}

async fn connect_unbounded(
    mut pg: tokio_postgres::Config,
    settings: &PostgresSettings,
    terminate_timeout: Duration,
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
        pg.tcp_user_timeout(settings.statement_timeout + CLIENT_MARGIN);
    }
    let tls = crate::conninfo::LazyTls(settings.verify.clone());
    let (client, connection) = pg.connect(tls).await.map_err(ConnectError::Connect)?;
    let connection = tokio::spawn(async move {
        if let Err(e) = connection.await {
            debug!(error = %e, "connection ended");
        }
    });
    let setup = async {
        client
            .batch_execute(&format!(
                "SET statement_timeout = {}; SET lock_timeout = {0}; SET idle_in_transaction_session_timeout = '60s'",
                settings.statement_timeout.as_millis().max(1)
            ))
            .await?;
        let row = client
            .query_one(
                "SELECT current_setting('server_version_num'), current_setting('server_version')",
                &[],
            )
            .await?;
        Ok::<_, tokio_postgres::Error>((row.get::<_, String>(0), row.get::<_, String>(1)))
    };
    let (number, version_text) = setup.await.map_err(ConnectError::Setup)?;
    let version = ServerVersion(number.parse().unwrap_or(0));
    if version.major() < sql::OLDEST_MAJOR {
        return Err(ConnectError::TooOld(version_text));
    }
    let server: String = client
        .query_one(sql::SERVER_IDENTITY, &[])
        .await
        .map_err(ConnectError::Setup)?
        .get(0);
    Ok(Session {
        server,
        preflight: Preflight::read(&client)
            .await
            .map_err(ConnectError::Setup)?,
        poller: Poller::prepare(&client)
            .await
            .map_err(ConnectError::Setup)?,
        signaller: Signaller::prepare(&client, terminate_timeout)
            .await
            .map_err(ConnectError::Setup)?,
        version,
        client,
        connection,
    })
}

/// Settings from the command line that override the file.
#[derive(Clone, Copy, Debug, Default)]
pub struct Overrides {
    /// `--dry-run`: signal nothing whatever the file says.
    pub dry_run: bool,
}

/// The running daemon's state.
struct Daemon {
    config: Config,
    overrides: Overrides,
    memory: Memory,
    /// When the privilege problem was last logged.
    privilege_warned: Option<Instant>,
    /// systemd notifications and watchdog.
    service: Service,
    /// Watchdog pings, at half `WatchdogSec=`; fed only while the loop runs.
    watchdog: Option<tokio::time::Interval>,
    /// What `[metrics]` serves (kept up to date even without an endpoint).
    metrics: Metrics,
    /// The server the memory is about (see `Session::server`).
    server: Option<String>,
    /// An extra poll between ticks, when a timer runs out (see
    /// `Round::wake_at`).
    wake_at: Option<tokio::time::Instant>,
}

/// What ended a phase of the loop.
enum Next {
    Reconnect,
    Stop,
}

/// Why the daemon stopped on its own.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The metrics address cannot be listened on (at start).
    #[error("cannot serve metrics: {0}")]
    Metrics(#[from] std::io::Error),
    /// The server is older than replwarden supports: waiting would not
    /// help, the deployment must change (exit 78, which systemd does not
    /// restart).
    #[error(transparent)]
    Unsupported(ConnectError),
}

/// Runs until `Control::Shutdown` (or the sender is dropped). Database
/// trouble never ends it, except a server too old to support; a metrics
/// address it cannot listen on ends it at start.
pub async fn run(
    config: Config,
    overrides: Overrides,
    mut control: UnboundedReceiver<Control>,
) -> Result<(), RunError> {
    let metrics = Metrics::new();
    metrics.config_loaded(
        &config.path.display().to_string(),
        &config.digest,
        &config.policy,
    );
    let endpoint = match config.metrics.listen {
        Some(addr) => {
            let listener = crate::metrics::bind(addr).await?;
            info!(listen = %addr, "serving metrics at /metrics");
            Some(tokio::spawn(crate::metrics::serve(
                listener,
                metrics.clone(),
            )))
        }
        None => None,
    };
    let mut daemon = Daemon {
        config,
        overrides,
        memory: Memory::default(),
        privilege_warned: None,
        service: Service::from_env(),
        watchdog: None,
        metrics,
        server: None,
        wake_at: None,
    };
    daemon.watchdog = daemon.service.watchdog_ticker();
    info!(
        config = %daemon.config.path.display(),
        rules = daemon.config.policy.rules.len(),
        interval = %crate::units::fmt_duration(daemon.config.daemon.interval),
        dry_run = daemon.dry_run(),
        "replwarden starting"
    );
    let mut unsupported = None;
    loop {
        let session = match daemon.connect_with_backoff(&mut control).await {
            Ok(Some(session)) => session,
            Ok(None) => break,
            Err(e) => {
                unsupported = Some(e);
                break;
            }
        };
        daemon.metrics.set_connected(true);
        let next = daemon.serve(&session, &mut control).await;
        daemon.metrics.set_connected(false);
        match next {
            Next::Reconnect => continue,
            Next::Stop => break,
        }
    }
    daemon.service.stopping();
    if let Some(endpoint) = endpoint {
        endpoint.abort();
    }
    if let Some(e) = unsupported {
        return Err(RunError::Unsupported(e));
    }
    info!("replwarden stopped");
    Ok(())
}

impl Daemon {
    fn dry_run(&self) -> bool {
        self.overrides.dry_run || self.config.daemon.dry_run
    }

    /// Connects, retrying with capped exponential backoff; `None` on
    /// shutdown, an error for a server too old to support.
    async fn connect_with_backoff(
        &mut self,
        control: &mut UnboundedReceiver<Control>,
    ) -> Result<Option<Session>, ConnectError> {
        let mut delay = BACKOFF_START;
        let mut attempt = 1u32;
        let waiting_since = Instant::now();
        loop {
            let target = report::redacted_conninfo(&self.config.postgres.connect);
            self.service.status(format!(
                "waiting for PostgreSQL at {target} (attempt {attempt})"
            ));
            let settings = self.config.postgres.clone();
            let terminate_timeout = self.config.policy.limits.terminate_timeout;
            let connecting = async move { connect(&settings, terminate_timeout).await };
            tokio::pin!(connecting);
            let result = loop {
                tokio::select! {
                    r = &mut connecting => break r,
                    c = control.recv() => if self.handle(c).is_some() { return Ok(None); },
                    _ = next_tick(&mut self.watchdog) => self.service.ping(),
                }
            };
            match result {
                Ok(session) => {
                    if self.server.as_ref().is_some_and(|s| *s != session.server) {
                        info!(
                            server = %session.server,
                            "a different server process (restarted, crashed or failed over): everything remembered about the old one is dropped"
                        );
                        self.memory = Memory::default();
                    }
                    self.server = Some(session.server.clone());
                    info!(
                        target_server = %target,
                        attempt,
                        down_for = %crate::units::fmt_duration(waiting_since.elapsed()),
                        server_version = session.version.0,
                        role = %session.preflight.role,
                        superuser = session.preflight.superuser,
                        "connected to PostgreSQL"
                    );
                    log_preflight(&session.preflight);
                    return Ok(Some(session));
                }
                Err(e @ ConnectError::TooOld(_)) => return Err(e),
                // Logged once per outage; each further attempt at debug.
                Err(e) if attempt == 1 => warn!(
                    target_server = %target,
                    retry_in = %crate::units::fmt_duration(delay),
                    error = %report::error_chain(&e),
                    "waiting for PostgreSQL (retrying with backoff; further attempts are logged at debug)"
                ),
                Err(e) => debug!(
                    target_server = %target,
                    attempt,
                    retry_in = %crate::units::fmt_duration(delay),
                    error = %report::error_chain(&e),
                    "still waiting for PostgreSQL"
                ),
            }
            let sleep = tokio::time::sleep(delay);
            tokio::pin!(sleep);
            loop {
                tokio::select! {
                    _ = &mut sleep => break,
                    c = control.recv() => if self.handle(c).is_some() { return Ok(None); },
                    _ = next_tick(&mut self.watchdog) => self.service.ping(),
                }
            }
            delay = (delay * 2).min(BACKOFF_CAP);
            attempt += 1;
        }
    }

    /// Handles a control message; `Some(Next)` when the loop must change
    /// course (stop, or reconnect because the connection settings changed).
    fn handle(&mut self, control: Option<Control>) -> Option<Next> {
        match control {
            None | Some(Control::Shutdown) => {
                info!("shutdown requested");
                Some(Next::Stop)
            }
            Some(Control::Reload) => {
                self.service.reloading();
                let next = self.reload();
                self.service.reloaded();
                next
            }
        }
    }

    /// All-or-nothing reload: a bad file is logged and the running policy
    /// stays; a good one replaces it, keeping the per-walsender memory.
    fn reload(&mut self) -> Option<Next> {
        let path = self.config.path.clone();
        match config::load(&path) {
            Err(errors) => {
                for e in &errors.0 {
                    error!(config = %path.display(), error = %e, "config error");
                }
                error!(
                    config = %path.display(),
                    errors = errors.0.len(),
                    "reload rejected: the running policy stays in force"
                );
                self.metrics.reload(false);
                None
            }
            Ok(new) => {
                let reconnect = new.postgres.conninfo != self.config.postgres.conninfo
                    || new.postgres.statement_timeout != self.config.postgres.statement_timeout;
                let names = |c: &Config| {
                    c.policy
                        .rules
                        .iter()
                        .map(|r| r.name.clone())
                        .collect::<Vec<_>>()
                };
                let (old_names, new_names) = (names(&self.config), names(&new));
                let added: Vec<_> = new_names
                    .iter()
                    .filter(|n| !old_names.contains(n))
                    .cloned()
                    .collect();
                let removed: Vec<_> = old_names
                    .iter()
                    .filter(|n| !new_names.contains(n))
                    .cloned()
                    .collect();
                for w in &new.postgres.warnings {
                    warn!(config = %path.display(), "{w}");
                }
                for w in &new.warnings {
                    warn!(warning = %w, "config warning");
                }
                let listen_changed = new.metrics.listen != self.config.metrics.listen;
                self.config = new;
                self.metrics.reload(true);
                self.metrics.config_loaded(
                    &path.display().to_string(),
                    &self.config.digest,
                    &self.config.policy,
                );
                if listen_changed {
                    warn!("metrics.listen changed: the endpoint moves at the next restart");
                }
                info!(
                    config = %path.display(),
                    rules = new_names.len(),
                    added = ?added,
                    removed = ?removed,
                    interval = %crate::units::fmt_duration(self.config.daemon.interval),
                    dry_run = self.dry_run(),
                    reconnect,
                    "config reloaded"
                );
                reconnect.then_some(Next::Reconnect)
            }
        }
    }

    /// Polls on every tick until the connection fails or a stop is asked.
    async fn serve(&mut self, session: &Session, control: &mut UnboundedReceiver<Control>) -> Next {
        let mut interval = self.config.daemon.interval;
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                biased;
                c = control.recv() => {
                    if let Some(next) = self.handle(c) { return next; }
                    if self.config.daemon.interval != interval {
                        interval = self.config.daemon.interval;
                        ticker = tokio::time::interval(interval);
                        ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
                    }
                }
                _ = next_tick(&mut self.watchdog) => self.service.ping(),
                _ = tick_or_wake(&mut ticker, self.wake_at) => {
                    self.wake_at = None;
                    // The poll runs to its end (every statement is bounded);
                    // a reload waits for it, a shutdown gives it
                    // SHUTDOWN_GRACE to finish the statement in flight.
                    let mut deferred = Vec::new();
                    let mut stop_by: Option<tokio::time::Instant> = None;
                    let never = tokio::time::Instant::now() + Duration::from_secs(86_400);
                    let result = {
                        let poll = self.poll_once(session).instrument(info_span!("poll"));
                        tokio::pin!(poll);
                        loop {
                            tokio::select! {
                                r = &mut poll => break Some(r),
                                c = control.recv(), if stop_by.is_none() => match c {
                                    Some(Control::Reload) => deferred.push(Control::Reload),
                                    None | Some(Control::Shutdown) => {
                                        stop_by = Some(tokio::time::Instant::now() + SHUTDOWN_GRACE);
                                    }
                                },
                                _ = tokio::time::sleep_until(stop_by.unwrap_or(never)), if stop_by.is_some() => break None,
                            }
                        }
                    };
                    if stop_by.is_some() {
                        info!(
                            finished = result.is_some(),
                            "shutdown requested during a poll"
                        );
                        return Next::Stop;
                    }
                    match result {
                        Some(Err(e)) if e.is_connection_lost() || session.client.is_closed() => {
                            error!(error = %e, "lost the connection to PostgreSQL; reconnecting");
                            return Next::Reconnect;
                        }
                        Some(Err(e)) => error!(error = %e, "poll failed; will retry at the next tick"),
                        _ => self.service.ready(),
                    }
                    for c in deferred {
                        if let Some(next) = self.handle(Some(c)) { return next; }
                    }
                    if self.config.daemon.interval != interval {
                        interval = self.config.daemon.interval;
                        ticker = tokio::time::interval(interval);
                        ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
                    }
                }
            }
        }
    }

    /// One poll: read, decide, act, log.
    async fn poll_once(&mut self, session: &Session) -> Result<(), PollError> {
        let started = Instant::now();
        let bound = self.config.postgres.statement_timeout + CLIENT_MARGIN;
        let snapshot = match bounded(bound, session.poller.poll(&session.client)).await {
            Ok(s) => s,
            Err(e) => {
                self.metrics.poll_failed();
                return Err(e);
            }
        };
        let now = Instant::now();
        let rule_names: Vec<&str> = self
            .config
            .policy
            .rules
            .iter()
            .map(|r| r.name.as_str())
            .collect();
        if !snapshot.hidden.is_empty() {
            self.metrics
                .polled(&snapshot, None, &rule_names, started.elapsed());
            if self
                .privilege_warned
                .is_none_or(|at| now.duration_since(at) >= PRIVILEGE_REMINDER)
            {
                error!(role = %snapshot.role, hidden = snapshot.hidden.len(), "{}", report::privilege_advice(&snapshot));
                self.privilege_warned = Some(now);
            }
            return Ok(());
        }
        self.privilege_warned = None;
        let round = engine::decide(&self.config.policy, &snapshot, &mut self.memory, now);
        // Never sooner than MIN_WAKE after this poll: a burst of timers
        // running out together is one poll, not many.
        self.wake_at = round
            .wake_at
            .map(|at| tokio::time::Instant::from_std(at.max(now + MIN_WAKE)));
        self.metrics
            .polled(&snapshot, Some(&round), &rule_names, started.elapsed());
        for held in &round.held {
            report::log_held(held);
        }
        let deferred: Vec<_> = round
            .held
            .iter()
            .filter(|h| matches!(h.reason, HoldReason::Budget { .. }))
            .collect();
        report::log_deferred(&deferred);
        for l in &round.loops {
            report::log_reconnect_loop(l);
        }
        for decision in &round.decisions {
            let outcome = if self.dry_run() && decision.action != Action::Log {
                Outcome::DryRun
            } else {
                let sent = bounded(
                    bound,
                    session.signaller.signal(
                        &session.client,
                        decision.action,
                        decision.walsender.id,
                    ),
                )
                .await;
                match sent {
                    Ok(outcome) => outcome,
                    Err(e) => {
                        // The connection broke mid-signal: retry on the next session.
                        self.memory
                            .record(decision, Delivery::Failed, &self.config.policy.limits);
                        return Err(e);
                    }
                }
            };
            report::log_decision(decision, &outcome);
            self.metrics.acted(decision, &outcome);
            if let Some(attempts) =
                self.memory
                    .record(decision, outcome.delivery(), &self.config.policy.limits)
            {
                report::log_gave_up(decision, attempts);
            }
        }
        self.service.status(format!(
            "{} {} walsender(s) with {} rule(s){}",
            if self.dry_run() {
                "watching (dry run)"
            } else {
                "enforcing on"
            },
            snapshot.walsenders.len(),
            self.config.policy.rules.len(),
            if snapshot.in_recovery {
                " (standby: cascading walsenders)"
            } else {
                ""
            },
        ));
        debug!(
            walsenders = snapshot.walsenders.len(),
            decisions = round.decisions.len(),
            in_recovery = snapshot.in_recovery,
            elapsed_us = started.elapsed().as_micros() as u64,
            "poll done"
        );
        Ok(())
    }
}

/// Why a poll failed.
#[derive(Debug, thiserror::Error)]
enum PollError {
    #[error("{}", report::error_chain(.0))]
    Db(#[from] tokio_postgres::Error),
    #[error("the server did not answer within {} (statement_timeout + 1s): giving up on this connection", crate::units::fmt_duration(*.0))]
    NoAnswer(Duration),
}

impl PollError {
    fn is_connection_lost(&self) -> bool {
        match self {
            PollError::Db(e) => is_connection_error(e),
            PollError::NoAnswer(_) => true,
        }
    }
}

/// Runs a statement with a client-side bound.
async fn bounded<T>(
    limit: Duration,
    statement: impl std::future::Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<T, PollError> {
    match tokio::time::timeout(limit, statement).await {
        Ok(r) => r.map_err(PollError::Db),
        Err(_) => Err(PollError::NoAnswer(limit)),
    }
}

/// Logs what the privilege preflight found (at every connect).
fn log_preflight(p: &Preflight) {
    let findings = report::preflight_findings(p);
    if findings
        .iter()
        .all(|(severity, _)| *severity != Severity::Error)
    {
        info!(role = %p.role, superuser = p.superuser, "privilege preflight passed");
    }
    for (severity, text) in findings {
        match severity {
            Severity::Error => error!(role = %p.role, event = "preflight", "{text}"),
            Severity::Warning => warn!(role = %p.role, event = "preflight", "{text}"),
        }
    }
}

/// `replwarden plan`: one poll with a fresh memory, printed; signals nothing.
pub async fn plan(config: &Config, dry_run: bool) -> Result<String, PlanError> {
    let session = connect(&config.postgres, config.policy.limits.terminate_timeout).await?;
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

/// The next tick, or `wake` if that comes first.
async fn tick_or_wake(ticker: &mut tokio::time::Interval, wake: Option<tokio::time::Instant>) {
    match wake {
        Some(at) => tokio::select! {
            _ = ticker.tick() => {}
            _ = tokio::time::sleep_until(at) => {}
        },
        None => {
            ticker.tick().await;
        }
    }
}
