//! The loop: connect ([`crate::session`]), waiting out a server that is down
//! with capped backoff; poll on every tick, decide, act, log; reload on request
//! (all-or-nothing, the file read and parsed off the loop's thread); stop on
//! request after the statement in flight, and after the signal in flight
//! has been logged.
//!
//! Control arrives as [`Control`] messages, so `main` maps OS signals to them
//! and tests can drive the loop without signals. Every control message has
//! an effect in every phase (connecting, backing off, polling, acting):
//! README "Reliability" has the table.

use std::cell::Cell;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc::UnboundedReceiver;
use tracing::{debug, error, info, info_span, warn, Instrument};

use crate::actions::{is_connection_error, Outcome};
use crate::config::{self, Config, ConfigErrors};
use crate::engine::{self, HoldReason, Memory};
use crate::metrics::Metrics;
use crate::policy::Action;
use crate::reload::Changes;
use crate::report;
use crate::report::Severity;
use crate::service::{next_tick, ping_watchdog, Service};
use crate::session::{bounded, connect, ConnectError, Session, CLIENT_MARGIN};
use crate::snapshot::Preflight;
use crate::ticker::Ticker;

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
/// The shortest gap between a poll and an extra one for a timer.
const MIN_WAKE: Duration = Duration::from_millis(10);
/// How often a persisting privilege problem is logged again.
const PRIVILEGE_REMINDER: Duration = Duration::from_secs(60);

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
    /// Refused for want of a connection slot: since when, last warned.
    lockout: crate::lockout::Lockout,
    /// Each walsender's role from first sight, for roles dropped since.
    roles: crate::roles::Roles,
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
    /// Replication slots with rules: their memory between polls.
    slots: crate::slots::warden::Warden,
    /// The file being read and parsed for a reload, on a blocking thread
    /// so a huge or slow file holds up neither polls nor the watchdog.
    reload: Option<tokio::task::JoinHandle<Result<Config, ConfigErrors>>>,
    /// A SIGHUP came while `reload` was under way: read the file again
    /// when it is done (it may have changed since the first read began).
    reload_again: bool,
}

/// What a poll and the loop waiting on it tell each other.
#[derive(Default)]
struct PollFlags {
    /// A shutdown was asked: send no further signal.
    stop: Cell<bool>,
    /// Notified (once) with `stop`: ends the wait for a terminated
    /// walsender to exit.
    stopped: tokio::sync::Notify,
    /// A signal is in flight: wait for it, so the signal is logged (it may
    /// already have reached the walsender).
    signalling: Cell<bool>,
}

/// What ends a phase of the loop, or the wait within one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Next {
    /// New connection settings (by reload), or the connection was lost.
    Reconnect,
    Stop,
    /// A reload changed the poll interval: the ticker starts over (polling
    /// at once), without waiting out the old interval. Only the wait for a
    /// tick ends for it; other waits go on.
    NewInterval,
}

/// Why the daemon stopped on its own.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The metrics address cannot be listened on (at start).
    #[error("cannot serve metrics")]
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
        lockout: Default::default(),
        roles: Default::default(),
        service: Service::from_env(),
        watchdog: None,
        metrics,
        server: None,
        wake_at: None,
        slots: Default::default(),
        reload: None,
        reload_again: false,
    };
    daemon.watchdog = daemon.service.watchdog_ticker();
    info!(
        config = %daemon.config.path.display(),
        rules = daemon.config.policy.rules.len(),
        slot_rules = daemon.config.policy.slots.rules.len(),
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
        if next == Next::Stop {
            break;
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
    /// shutdown, an error for a server replwarden cannot work with. A
    /// reload that changes the connection settings starts over at once
    /// with the new ones.
    async fn connect_with_backoff(
        &mut self,
        control: &mut UnboundedReceiver<Control>,
    ) -> Result<Option<Session>, ConnectError> {
        let mut delay = BACKOFF_START;
        let mut attempt = 1u32;
        let waiting_since = Instant::now();
        loop {
            let target = crate::conninfo::redacted_conninfo(&self.config.postgres.connect);
            if self.lockout.lasting(Instant::now()).is_none() {
                self.service
                    .status(crate::service::status_waiting(&target, attempt));
            }
            let settings = self.config.postgres.clone();
            let mut connecting = std::pin::pin!(async move { connect(&settings).await });
            let result = loop {
                match self.race(connecting.as_mut(), control).await {
                    Ok(r) => break Some(r),
                    Err(Next::Stop) => return Ok(None),
                    Err(Next::Reconnect) => break None,
                    Err(Next::NewInterval) => {}
                }
            };
            let Some(result) = result else {
                // New connection settings: try them now.
                info!(
                    attempt,
                    "connection settings changed while connecting: connecting with the new ones"
                );
                // A new series: its first failure is logged as a warning.
                delay = BACKOFF_START;
                attempt = 1;
                continue;
            };
            match result {
                Ok(session) => {
                    self.lockout_ended();
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
                        host = %session.host,
                        attempt,
                        down_for = %crate::units::fmt_duration(waiting_since.elapsed()),
                        server_version = session.version.0,
                        role = %session.preflight.role,
                        superuser = session.preflight.superuser,
                        "connected to PostgreSQL"
                    );
                    self.slots
                        .connected(&session.preflight, &self.config.policy);
                    log_preflight(&session.preflight, self.slots.drop_warning());
                    // Whatever ended the last session (lost, or new settings
                    // by reload), nothing was seen in between: every grace
                    // starts over (README, Safety: outages).
                    self.memory.interrupted();
                    self.slots.interrupted();
                    return Ok(Some(session));
                }
                Err(e) if e.is_unsupported() => return Err(e),
                Err(e) if e.lockout().is_some() => self.locked_out(&target, attempt, &e),
                // Logged once per outage; each further attempt at debug.
                Err(e) if attempt == 1 => warn!(
                    target_server = %target,
                    retry_in = %crate::units::fmt_duration(delay),
                    error = %crate::errors::error_chain(&e),
                    "waiting for PostgreSQL (retrying with backoff; further attempts are logged at debug)"
                ),
                Err(e) => debug!(
                    target_server = %target,
                    attempt,
                    retry_in = %crate::units::fmt_duration(delay),
                    error = %crate::errors::error_chain(&e),
                    "still waiting for PostgreSQL"
                ),
            }
            let mut sleep = std::pin::pin!(tokio::time::sleep(delay));
            delay = delay.saturating_mul(2).min(BACKOFF_CAP);
            loop {
                match self.race(sleep.as_mut(), control).await {
                    Ok(()) => break,
                    Err(Next::Stop) => return Ok(None),
                    // New connection settings: no reason to wait, and a
                    // new series (attempt 1 after the increment below).
                    Err(Next::Reconnect) => {
                        delay = BACKOFF_START;
                        attempt = 0;
                        break;
                    }
                    Err(Next::NewInterval) => {}
                }
            }
            attempt += 1;
        }
    }

    /// A connection refused for want of a slot: a warning at once and then
    /// once a minute while it lasts, the `replwarden_locked_out` metric and
    /// the status line, so a lock-out is never quiet.
    fn locked_out(&mut self, target: &str, attempt: u32, e: &ConnectError) {
        let Some(refusal) = e.lockout() else {
            return;
        };
        let now = Instant::now();
        let due = self.lockout.refused(now);
        let lasting = self.lockout.lasting(now).unwrap_or_default();
        self.metrics.set_locked_out(true);
        self.service
            .status(crate::lockout::status(target, attempt, lasting, &refusal));
        if due {
            warn!(
                target_server = %target,
                attempt,
                locked_out_for = %crate::units::fmt_duration(lasting),
                reason = %refusal.reason,
                fix = %refusal.fix(),
                "locked out of PostgreSQL: every connection slot the daemon may use is taken, so walsenders are NOT \
                 enforced (repeated every minute while it lasts)"
            );
        }
    }

    /// Connected: ends a lock-out, saying for how long it lasted.
    fn lockout_ended(&mut self) {
        if let Some(lasted) = self.lockout.ended(Instant::now()) {
            self.metrics.set_locked_out(false);
            warn!(
                locked_out_for = %crate::units::fmt_duration(lasted),
                "no longer locked out of PostgreSQL: enforcing again"
            );
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
                self.start_reload();
                None
            }
        }
    }

    /// Starts reading and parsing the file on a blocking thread; its
    /// result comes back through [`reload_loaded`].
    fn start_reload(&mut self) {
        if self.reload.is_some() {
            self.reload_again = true;
            return;
        }
        self.service.reloading();
        self.reload = Some(load_off_thread(self.config.path.clone()));
    }

    /// Applies a finished load; `Some(Next::Reconnect)` when the connection
    /// settings changed.
    fn finish_reload(
        &mut self,
        loaded: Result<Result<Config, ConfigErrors>, tokio::task::JoinError>,
    ) -> Option<Next> {
        self.reload = None;
        let next = match loaded {
            Ok(loaded) => self.reload_with(loaded),
            Err(e) => {
                error!(config = %self.config.path.display(), error = %e, "reload rejected: reading the file failed; the running policy stays in force");
                self.metrics.reload(false);
                None
            }
        };
        self.service.reloaded();
        if std::mem::take(&mut self.reload_again) {
            self.start_reload();
        }
        next
    }

    /// All-or-nothing reload: a bad file is logged and the running policy
    /// stays; a good one replaces it, keeping the per-walsender memory.
    fn reload_with(&mut self, loaded: Result<Config, ConfigErrors>) -> Option<Next> {
        let path = self.config.path.clone();
        match loaded {
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
                let changes = Changes::between(&self.config, &new);
                for w in &new.postgres.warnings {
                    warn!(config = %path.display(), warning = %w, "config warning");
                }
                for w in &new.warnings {
                    warn!(warning = %w, "config warning");
                }
                self.config = new;
                self.metrics.reload(true);
                self.metrics.config_loaded(
                    &path.display().to_string(),
                    &self.config.digest,
                    &self.config.policy,
                );
                if changes.listen {
                    warn!("metrics.listen changed: the endpoint moves at the next restart");
                }
                info!(
                    config = %path.display(),
                    rules = self.config.policy.rules.len(),
                    slot_rules = self.config.policy.slots.rules.len(),
                    added = ?changes.added,
                    removed = ?changes.removed,
                    interval = %crate::units::fmt_duration(self.config.daemon.interval),
                    dry_run = self.dry_run(),
                    reconnect = changes.reconnect,
                    "config reloaded"
                );
                if changes.reconnect {
                    Some(Next::Reconnect)
                } else if changes.interval {
                    Some(Next::NewInterval)
                } else {
                    None
                }
            }
        }
    }

    /// Polls on every tick until the connection fails or a stop is asked
    /// (`Next::Reconnect` or `Next::Stop`).
    async fn serve(&mut self, session: &Session, control: &mut UnboundedReceiver<Control>) -> Next {
        let mut interval = self.config.daemon.interval;
        let mut ticker = Ticker::new(interval);
        loop {
            let next = match self
                .race(tick_or_wake(&mut ticker, self.wake_at), control)
                .await
            {
                Ok(()) => {
                    self.wake_at = None;
                    self.poll_and_wait(session, control).await
                }
                Err(next) => Some(next),
            };
            match next {
                Some(Next::NewInterval) | None => {}
                Some(next) => return next,
            }
            if self.config.daemon.interval != interval {
                interval = self.config.daemon.interval;
                ticker = Ticker::new(interval);
            }
        }
    }

    /// Runs `work` to its end while serving what comes meanwhile: control
    /// messages, finished reloads and watchdog pings (in that order of
    /// priority). `Err` when the loop must change course first (`work` is
    /// then dropped, or raced again by the caller).
    async fn race<T>(
        &mut self,
        work: impl Future<Output = T>,
        control: &mut UnboundedReceiver<Control>,
    ) -> Result<T, Next> {
        let mut work = std::pin::pin!(work);
        loop {
            let next = tokio::select! {
                biased;
                c = control.recv() => self.handle(c),
                loaded = reload_loaded(&mut self.reload) => self.finish_reload(loaded),
                _ = next_tick(&mut self.watchdog) => { self.service.ping(); None }
                out = &mut work => return Ok(out),
            };
            if let Some(next) = next {
                return Err(next);
            }
        }
    }

    /// One poll, run to its end (every statement is bounded) while the
    /// watchdog is fed. A reload asked meanwhile starts after it. A
    /// shutdown gives it SHUTDOWN_GRACE to finish the statement in flight,
    /// except that a signal statement in flight is always waited for and
    /// logged (the wait for a terminated walsender to exit ends at once:
    /// `exit_unconfirmed`), and no further signal is sent.
    async fn poll_and_wait(
        &mut self,
        session: &Session,
        control: &mut UnboundedReceiver<Control>,
    ) -> Option<Next> {
        let mut stop_by: Option<tokio::time::Instant> = None;
        let flags = PollFlags::default();
        let never = tokio::time::Instant::now() + Duration::from_secs(86_400);
        // The poll borrows the daemon: the watchdog is fed from here, and a
        // reload asked meanwhile starts loading at once (it is applied
        // after the poll).
        let mut watchdog = self.watchdog.take();
        let mut reload = self.reload.take();
        let (mut reload_started, mut reload_again) = (false, false);
        let path = self.config.path.clone();
        let result = {
            let poll = self
                .poll_once(session, &flags)
                .instrument(info_span!("poll"));
            tokio::pin!(poll);
            loop {
                tokio::select! {
                    r = &mut poll => break Some(r),
                    c = control.recv(), if !flags.stop.get() => match c {
                        Some(Control::Reload) if reload.is_some() => reload_again = true,
                        Some(Control::Reload) => {
                            reload = Some(load_off_thread(path.clone()));
                            reload_started = true;
                        }
                        None | Some(Control::Shutdown) => {
                            flags.stop.set(true);
                            flags.stopped.notify_one();
                            stop_by = Some(tokio::time::Instant::now() + SHUTDOWN_GRACE);
                        }
                    },
                    _ = next_tick(&mut watchdog) => ping_watchdog(),
                    _ = tokio::time::sleep_until(stop_by.unwrap_or(never)), if stop_by.is_some() => {
                        if !flags.signalling.get() {
                            break None;
                        }
                        // A signal is in flight: wait for it (bounded).
                        stop_by = None;
                    }
                }
            }
        };
        self.watchdog = watchdog;
        self.reload = reload;
        self.reload_again |= reload_again;
        if reload_started {
            self.service.reloading();
        }
        if flags.stop.get() {
            info!(
                finished = result.is_some(),
                "shutdown requested during a poll"
            );
            return Some(Next::Stop);
        }
        match result {
            Some(Err(e)) if e.is_connection_lost() || session.client.is_closed() => {
                error!(error = %crate::errors::error_chain(&e), "lost the connection to PostgreSQL; reconnecting");
                return Some(Next::Reconnect);
            }
            // The walsenders were read, judged and counted as a poll before
            // the slot step failed: not a failed poll (each "poll failed"
            // is one `replwarden_polls_total{result="error"}`).
            Some(Err(e @ PollError::Slots(_))) => {
                error!(error = %crate::errors::error_chain(&e), "slot step failed; will retry at the next tick")
            }
            Some(Err(e)) => {
                error!(error = %crate::errors::error_chain(&e), "poll failed; will retry at the next tick")
            }
            _ => self.service.ready(),
        }
        None
    }

    /// One poll: read, decide, act, log.
    async fn poll_once(&mut self, session: &Session, flags: &PollFlags) -> Result<(), PollError> {
        let started = Instant::now();
        let bound = self
            .config
            .postgres
            .statement_timeout
            .saturating_add(CLIENT_MARGIN);
        let read = async {
            let mut snapshot = bounded(
                bound,
                session.poller.poll(&session.client),
                PollError::NoAnswer,
            )
            .await?;
            // Base backup progress: its own statement, sent only when a
            // walsender is in `backup` (crate::basebackup).
            bounded(
                bound,
                crate::basebackup::pg::read(&session.client, &mut snapshot),
                PollError::NoAnswer,
            )
            .await?;
            Ok(snapshot)
        };
        let mut snapshot = match read.await {
            Ok(s) => s,
            Err(e) => {
                // Unseen: no condition is known to hold on through this.
                self.memory.interrupted();
                self.metrics.poll_failed();
                self.slots.unseen(&self.metrics);
                return Err(e);
            }
        };
        for dropped in self.roles.fill(&mut snapshot) {
            report::log_dropped_role(&dropped);
        }
        // Shared with the metrics (kept for the scrape), not copied.
        let snapshot = Arc::new(snapshot);
        let now = Instant::now();
        if !snapshot.hidden.is_empty() {
            self.memory.interrupted();
            self.slots.unseen(&self.metrics);
            self.metrics.polled(&snapshot, None, started.elapsed());
            if self
                .privilege_warned
                .is_none_or(|at| now.duration_since(at) >= PRIVILEGE_REMINDER)
            {
                error!(
                    role = %snapshot.role,
                    hidden = snapshot.hidden.len(),
                    advice = %report::privilege_advice(&snapshot),
                    "the role cannot read every walsender's row: acting on nothing"
                );
                self.privilege_warned = Some(now);
            }
            return Ok(());
        }
        self.privilege_warned = None;
        self.memory.set_dry_run(self.dry_run());
        let round = engine::decide(&self.config.policy, &snapshot, &mut self.memory, now);
        // Never sooner than MIN_WAKE after this poll: a burst of timers
        // running out together is one poll, not many.
        self.wake_at = round
            .wake_at
            .map(|at| tokio::time::Instant::from_std(at.max(now + MIN_WAKE)));
        self.metrics
            .polled(&snapshot, Some(&round), started.elapsed());
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
            report::log_reconnect_loop(l, &snapshot, &round, &self.config.policy);
        }
        // Every decision is reported back to the engine with what became of
        // it; after a lost connection the rest are not attempted (decided
        // again after reconnecting), never dropped.
        let mut lost = None;
        for decision in &round.decisions {
            let outcome = if decision.action == Action::Log {
                Outcome::Logged
            } else if lost.is_some() || flags.stop.get() {
                // After a lost connection, or once shutting down, nothing
                // more is sent: reported, and decided again next time.
                Outcome::NotAttempted
            } else if self.dry_run() {
                Outcome::DryRun
            } else {
                flags.signalling.set(true);
                let sent = bounded(
                    bound,
                    session.signaller.signal(
                        &session.client,
                        decision.action,
                        decision.walsender.id,
                        self.config.policy.limits.terminate_timeout,
                        flags.stopped.notified(),
                    ),
                    PollError::NoAnswer,
                )
                .await;
                flags.signalling.set(false);
                sent.unwrap_or_else(|e| {
                    lost = Some(e);
                    Outcome::Interrupted
                })
            };
            report::log_decision(decision, &outcome);
            self.metrics.acted(decision, &outcome);
            // A slot whose walsender was signalled counts as just used: no
            // slot rule drops it in this poll or soon after (crate::slots).
            if decision.action != Action::Log {
                if let Some(slot) = &decision.walsender.slot_name {
                    self.slots.walsender_signalled(slot);
                }
            }
            if let Some(attempts) =
                self.memory
                    .record(decision, outcome.delivery(), &self.config.policy.limits)
            {
                report::log_gave_up(decision, attempts);
            }
        }
        if let Some(e) = lost {
            self.memory.interrupted();
            return Err(e);
        }
        // Replication slots with rules, and the slot metrics (crate::slots).
        if crate::slots::warden::Warden::wanted(
            &self.config.policy,
            self.config.metrics.listen.is_some(),
        ) {
            let step = crate::slots::warden::Step {
                dry_run: self.dry_run(),
                bound,
                stop: &flags.stop,
                signalling: &flags.signalling,
            };
            self.slots
                .poll(
                    &session.client,
                    session.version,
                    &self.config.policy,
                    step,
                    &self.metrics,
                )
                .await?;
        }
        self.service.status(crate::service::status_polling(
            self.dry_run(),
            snapshot.walsenders.len(),
            self.config.policy.rules.len() + self.config.policy.slots.rules.len(),
            snapshot.in_recovery,
        ));
        debug!(
            walsenders = snapshot.walsenders.len(),
            decisions = round.decisions.len(),
            in_recovery = snapshot.in_recovery,
            elapsed_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
            "poll done"
        );
        Ok(())
    }
}

/// Why a poll failed.
#[derive(Debug, thiserror::Error)]
enum PollError {
    #[error(transparent)]
    Db(#[from] tokio_postgres::Error),
    #[error("the server did not answer within {} (statement_timeout + 1s): giving up on this connection", crate::units::fmt_duration(*.0))]
    NoAnswer(Duration),
    #[error(transparent)]
    Slots(#[from] crate::slots::warden::SlotError),
}

impl PollError {
    fn is_connection_lost(&self) -> bool {
        match self {
            PollError::Db(e) => is_connection_error(e),
            PollError::NoAnswer(_) => true,
            PollError::Slots(e) => e.is_connection_lost(),
        }
    }
}

/// Logs what the privilege preflight found (at every connect): one
/// verdict, with a drop slot rule the role may not carry out counted as a
/// failure like a missing grant (it was once logged after "passed").
fn log_preflight(p: &Preflight, drop_warning: Option<&str>) {
    let mut findings = report::preflight_findings(p);
    findings.extend(drop_warning.map(|w| (Severity::Error, w.to_string())));
    if findings
        .iter()
        .all(|(severity, _)| *severity != Severity::Error)
    {
        info!(role = %p.role, superuser = p.superuser, "privilege preflight passed");
    }
    for (severity, text) in findings {
        match severity {
            Severity::Error => {
                error!(role = %p.role, event = "preflight", finding = %text, "privilege preflight failed")
            }
            Severity::Warning => {
                warn!(role = %p.role, event = "preflight", finding = %text, "privilege preflight warning")
            }
        }
    }
}

/// The next tick, or `wake` if that comes first.
async fn tick_or_wake(ticker: &mut Ticker, wake: Option<tokio::time::Instant>) {
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

/// Reads and parses the config file on a blocking thread.
fn load_off_thread(
    path: std::path::PathBuf,
) -> tokio::task::JoinHandle<Result<Config, ConfigErrors>> {
    tokio::task::spawn_blocking(move || config::load(&path))
}

/// The result of the reload under way, once its file is read and parsed;
/// never without one.
async fn reload_loaded(
    pending: &mut Option<tokio::task::JoinHandle<Result<Config, ConfigErrors>>>,
) -> Result<Result<Config, ConfigErrors>, tokio::task::JoinError> {
    match pending {
        Some(handle) => handle.await,
        None => std::future::pending().await,
    }
}
