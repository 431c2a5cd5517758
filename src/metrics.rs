//! The optional Prometheus endpoint (`[metrics] listen`): what the daemon
//! measures and does, as OpenMetrics text on `GET /metrics`, served by a
//! minimal HTTP/1.1 responder (one request per connection, nothing else).

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::actions::Outcome;
use crate::engine::{Decision, HoldReason, Round};
use crate::snapshot::{Snapshot, Walsender};

type Labels = Vec<(&'static str, String)>;
type FloatGauge = Gauge<f64, AtomicU64>;

/// Every metric, cheap to clone (handles share their values).
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    lag_seconds: Family<Labels, FloatGauge>,
    lag_bytes: Family<Labels, Gauge>,
    reply_age_seconds: Family<Labels, FloatGauge>,
    reply_clock_skew_seconds: Family<Labels, FloatGauge>,
    retained_wal_bytes: Family<Labels, Gauge>,
    walsender_info: Family<Labels, Gauge>,
    walsenders: Gauge,
    hidden_walsenders: Gauge,
    rule_matches: Family<Labels, Gauge>,
    actions: Family<Labels, Counter>,
    held: Family<Labels, Counter>,
    poll_duration: Histogram,
    polls: Family<Labels, Counter>,
    connected: Gauge,
    /// 1 while the server refuses the daemon for want of a connection slot.
    locked_out: Gauge,
    reloads: Family<Labels, Counter>,
    config_info: Family<Labels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut r = Registry::with_prefix("replwarden");
        let m = Metrics {
            registry: Arc::new(Registry::default()),
            lag_seconds: Family::default(),
            lag_bytes: Family::default(),
            reply_age_seconds: Family::default(),
            reply_clock_skew_seconds: Family::default(),
            retained_wal_bytes: Family::default(),
            walsender_info: Family::default(),
            walsenders: Gauge::default(),
            hidden_walsenders: Gauge::default(),
            rule_matches: Family::default(),
            actions: Family::default(),
            held: Family::default(),
            poll_duration: Histogram::new(exponential_buckets(0.0005, 2.0, 14)),
            polls: Family::default(),
            connected: Gauge::default(),
            locked_out: Gauge::default(),
            reloads: Family::default(),
            config_info: Family::default(),
        };
        r.register(
            "walsender_lag_seconds",
            "write/flush/replay lag of each walsender (absent while NULL: caught up)",
            m.lag_seconds.clone(),
        );
        r.register(
            "walsender_lag_bytes",
            "bytes between the server's WAL position and each walsender's write/flush/replay position",
            m.lag_bytes.clone(),
        );
        r.register(
            "walsender_reply_age_seconds",
            "time since each walsender's reply_time last changed, on the daemon's clock (absent before the first reply, or while hidden)",
            m.reply_age_seconds.clone(),
        );
        r.register(
            "walsender_reply_clock_skew_seconds",
            "server time minus reply_time when reply_time changed: the client's clock behind (positive) or ahead (negative), overstated by up to one poll interval",
            m.reply_clock_skew_seconds.clone(),
        );
        r.register(
            "walsender_retained_wal_bytes",
            "WAL held back by each walsender's replication slot",
            m.retained_wal_bytes.clone(),
        );
        r.register(
            "walsender_info",
            "one series per walsender with its state and sync_state",
            m.walsender_info.clone(),
        );
        r.register(
            "walsenders",
            "walsenders seen by the last poll",
            m.walsenders.clone(),
        );
        r.register(
            "hidden_walsenders",
            "walsenders whose columns the role cannot read (no pg_monitor): nothing is done while > 0",
            m.hidden_walsenders.clone(),
        );
        r.register(
            "rule_matches",
            "walsenders each rule matched at the last poll",
            m.rule_matches.clone(),
        );
        r.register(
            "actions",
            "decisions carried out, by rule, action and outcome",
            m.actions.clone(),
        );
        r.register(
            "held",
            "actions held back by a safety guard, by rule and reason",
            m.held.clone(),
        );
        r.register(
            "poll_duration_seconds",
            "time to read and decide one poll",
            m.poll_duration.clone(),
        );
        r.register("polls", "polls by result", m.polls.clone());
        r.register(
            "connected",
            "1 while connected to PostgreSQL",
            m.connected.clone(),
        );
        r.register(
            "locked_out",
            "1 while the server refuses the daemon's connection for want of a connection slot: walsenders are not enforced",
            m.locked_out.clone(),
        );
        r.register(
            "config_reloads",
            "config reloads by result",
            m.reloads.clone(),
        );
        r.register(
            "config_info",
            "the loaded config: its path and the first 16 hex digits of the SHA-256 of its settings, password left out",
            m.config_info.clone(),
        );
        Metrics {
            registry: Arc::new(r),
            ..m
        }
    }

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }

    pub fn set_connected(&self, connected: bool) {
        self.connected.set(i64::from(connected));
    }

    pub fn set_locked_out(&self, locked_out: bool) {
        self.locked_out.set(i64::from(locked_out));
    }

    pub fn config_loaded(&self, path: &str, hash: &str) {
        self.config_info.clear();
        self.config_info
            .get_or_create(&vec![
                ("path", path.to_string()),
                ("sha256", hash.to_string()),
            ])
            .set(1);
    }

    pub fn reload(&self, ok: bool) {
        let result = if ok { "success" } else { "failure" };
        self.reloads
            .get_or_create(&vec![("result", result.to_string())])
            .inc();
    }

    pub fn poll_failed(&self) {
        self.polls
            .get_or_create(&vec![("result", "error".to_string())])
            .inc();
    }

    /// Replaces the per-walsender series with this poll's and counts it.
    pub fn polled(
        &self,
        snapshot: &Snapshot,
        round: Option<&Round>,
        rule_names: &[&str],
        took: Duration,
    ) {
        self.polls
            .get_or_create(&vec![("result", "ok".to_string())])
            .inc();
        self.poll_duration.observe(took.as_secs_f64());
        self.walsenders.set(snapshot.walsenders.len() as i64);
        self.hidden_walsenders.set(snapshot.hidden.len() as i64);
        for family in [
            &self.lag_bytes,
            &self.retained_wal_bytes,
            &self.walsender_info,
        ] {
            family.clear();
        }
        self.lag_seconds.clear();
        self.reply_age_seconds.clear();
        self.reply_clock_skew_seconds.clear();
        for (wi, ws) in snapshot.walsenders.iter().enumerate() {
            let who = identity(ws);
            let with = |key: &'static str, value: &str| {
                let mut l = who.clone();
                l.push((key, value.to_string()));
                l
            };
            for (kind, lag) in [
                ("write", ws.write_lag),
                ("flush", ws.flush_lag),
                ("replay", ws.replay_lag),
            ] {
                if let Some(lag) = lag {
                    self.lag_seconds
                        .get_or_create(&with("kind", kind))
                        .set(lag.as_secs_f64());
                }
            }
            for (kind, bytes) in [
                ("write", ws.write_lag_bytes),
                ("flush", ws.flush_lag_bytes),
                ("replay", ws.replay_lag_bytes),
            ] {
                if let Some(b) = bytes {
                    self.lag_bytes
                        .get_or_create(&with("kind", kind))
                        .set(b.0 as i64);
                }
            }
            if let Some(m) = round.and_then(|r| r.measures.get(wi)) {
                if let Some(silence) = m.silence {
                    self.reply_age_seconds
                        .get_or_create(&who)
                        .set(silence.as_secs_f64());
                }
                if let Some(skew) = m.skew_seconds {
                    self.reply_clock_skew_seconds.get_or_create(&who).set(skew);
                }
            }
            if let (Some(slot), Some(bytes)) = (&ws.slot_name, ws.retained_wal) {
                self.retained_wal_bytes
                    .get_or_create(&with("slot", slot))
                    .set(bytes.0 as i64);
            }
            let mut info = who.clone();
            info.push(("state", ws.state.clone().unwrap_or_default()));
            info.push(("sync_state", ws.sync_state.clone().unwrap_or_default()));
            self.walsender_info.get_or_create(&info).set(1);
        }
        self.rule_matches.clear();
        for name in rule_names {
            let n = round.map_or(0, |r| {
                r.verdicts
                    .iter()
                    .filter(|v| rule_names[v.1] == *name)
                    .count()
            });
            self.rule_matches
                .get_or_create(&vec![("rule", name.to_string())])
                .set(n as i64);
        }
        for held in round.map(|r| r.held.as_slice()).unwrap_or_default() {
            let reason = match held.reason {
                HoldReason::SyncQuorum { .. } => "sync_quorum",
                HoldReason::ReconnectBackoff { .. } => "reconnect_backoff",
                HoldReason::Budget { .. } => "budget",
            };
            self.held
                .get_or_create(&vec![
                    ("rule", held.decision.rule.clone()),
                    ("reason", reason.to_string()),
                ])
                .inc();
        }
    }

    pub fn acted(&self, decision: &Decision, outcome: &Outcome) {
        self.actions
            .get_or_create(&vec![
                ("rule", decision.rule.clone()),
                ("action", decision.action.to_string()),
                ("outcome", outcome.as_str().to_string()),
            ])
            .inc();
    }
}

fn identity(ws: &Walsender) -> Labels {
    vec![
        ("application_name", ws.application_name.clone()),
        ("pid", ws.id.pid.to_string()),
        ("client_addr", ws.client_addr.to_string()),
        ("user", ws.user.clone().unwrap_or_default()),
    ]
}

/// At most this many connections are served at once; more wait in the
/// kernel's listen backlog, so idle clients cannot use up the daemon's file
/// descriptors (which it needs for PostgreSQL).
const MAX_CONNECTIONS: usize = 16;
/// A connection must send its request and take the response within this,
/// or it is closed.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(5);
/// The first wait after a failed accept (e.g. out of file descriptors); it
/// doubles with each further failure, up to [`ACCEPT_BACKOFF_MAX`].
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Serves `GET /metrics` on `listener` until the task is dropped: at most
/// [`MAX_CONNECTIONS`] at a time, each for at most [`CONNECTION_TIMEOUT`],
/// backing off when accepting fails instead of retrying at once.
pub async fn serve(listener: TcpListener, metrics: Metrics) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let mut backoff = ACCEPT_BACKOFF_MIN;
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => {
                backoff = ACCEPT_BACKOFF_MIN;
                stream
            }
            Err(e) => {
                if backoff == ACCEPT_BACKOFF_MIN {
                    tracing::warn!(
                        error = %e,
                        "metrics endpoint cannot accept connections; backing off (out of file descriptors? raise LimitNOFILE)"
                    );
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                continue;
            }
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let _ = tokio::time::timeout(CONNECTION_TIMEOUT, respond(stream, &metrics)).await;
        });
    }
}

/// Reads one request head (bounded in size) and answers it.
async fn respond(mut stream: TcpStream, metrics: &Metrics) {
    let mut request = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 16 * 1024 {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
    }
    let line = request.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    let (status, content_type, body) = match (parts.next(), parts.next()) {
        (Some("GET"), Some("/metrics")) => (
            "200 OK",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics.render(),
        ),
        _ => (
            "404 Not Found",
            "text/plain",
            "replwarden serves GET /metrics\n".to_string(),
        ),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// Binds the endpoint; the error names the address.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, std::io::Error> {
    TcpListener::bind(addr).await.map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot listen on {addr} for metrics: {e}"),
        )
    })
}
