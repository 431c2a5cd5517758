//! What people read: the structured log event for each decision (the audit
//! trail, same fields in text and JSON), the `check` summary and the `plan`
//! table.

use std::fmt::Write as _;

use crate::actions::Outcome;
use crate::config::Config;
use crate::conninfo::redacted_conninfo;
use crate::engine::{evidence_line, Decision, Held, HoldReason, ReconnectLoop, Round};
use crate::logfmt::{escape_text, quoted, token};
use crate::policy::{Matchers, Policy, Rule};
use crate::snapshot::{Preflight, Snapshot, Walsender};
use crate::sql::quote_ident;
use crate::units::fmt_duration;

/// Logs one decision and its outcome as one event. Field names are stable:
/// alert on `event="action"` and `outcome`.
pub fn log_decision(decision: &Decision, outcome: &Outcome) {
    let ws = &decision.walsender;
    let detail = match outcome {
        Outcome::Refused(why) | Outcome::Failed(why) => why.as_str(),
        _ => "",
    };
    macro_rules! event {
        ($level:ident, $message:literal) => {
            tracing::$level!(
                event = "action",
                rule = %decision.rule,
                action = %decision.action,
                outcome = outcome.as_str(),
                cause = %decision.cause,
                pid = ws.id.pid,
                backend_start = %ws.id.started(),
                application_name = %ws.application_name,
                user = ws.user.as_deref().unwrap_or("NULL"),
                client_addr = %ws.client_addr,
                state = ws.state_text().unwrap_or("NULL"),
                sync_state = ws.sync_state.as_deref().unwrap_or("NULL"),
                measured = %evidence_line(&decision.evidence),
                detail,
                $message
            )
        };
    }
    match outcome {
        Outcome::Signalled => event!(warn, "walsender signalled"),
        Outcome::Terminated => event!(warn, "walsender terminated"),
        Outcome::NotExited => event!(error, "walsender signalled but did not exit in time"),
        Outcome::Unconfirmed => event!(
            warn,
            "walsender terminated; exit not confirmed (shutting down)"
        ),
        Outcome::Gone => event!(info, "walsender already gone; nothing signalled"),
        Outcome::DryRun => event!(warn, "dry run: would signal walsender"),
        Outcome::Logged => event!(warn, "rule breached (action log)"),
        Outcome::NotSignalled => event!(error, "signal not delivered"),
        Outcome::Refused(_) => event!(error, "signal refused by the server"),
        Outcome::Failed(_) => event!(error, "signal failed"),
        Outcome::Interrupted => event!(
            error,
            "connection lost while signalling; will retry the same instance after reconnecting"
        ),
        Outcome::NotAttempted => event!(
            error,
            "connection lost before this signal; will decide again after reconnecting"
        ),
    }
}

/// Who matchers are about: `application_name in [a, b] and user in [c]`.
fn matchers_summary(m: &Matchers) -> Vec<String> {
    let mut who = Vec::new();
    for (name, list) in [
        ("application_name", &m.application_name),
        ("user", &m.user),
        ("state", &m.state),
        ("sync_state", &m.sync_state),
    ] {
        if let Some(list) = list {
            who.push(format!("{name} in [{list}]"));
        }
    }
    if let Some(addrs) = &m.client_addr {
        who.push(format!("client_addr in [{addrs}]"));
    }
    who
}

/// One line per rule: `name: action when <matchers> and <conditions>`.
pub fn rule_summary(rule: &Rule) -> String {
    let who = matchers_summary(&rule.matchers);
    let when: Vec<String> = rule
        .conditions
        .iter()
        .map(|(c, limit)| format!("{} > {limit}", c.name))
        .collect();

    let mut line = format!("{}: {}", token(&rule.name), rule.action);
    line += if who.is_empty() {
        " any walsender"
    } else {
        " walsenders with "
    };
    line += &who.join(" and ");
    if when.is_empty() {
        line += " (blocked: matching is the offence)";
    } else {
        line += &format!(" when {}", when.join(" and "));
    }
    if !rule.grace.is_zero() {
        line += &format!(" for {}", fmt_duration(rule.grace));
    }
    if let Some(after) = rule.escalate_after {
        line += &format!(
            "; terminate if still alive {} after the cancel",
            fmt_duration(after)
        );
    }
    line
}

/// What `replwarden check` prints for a valid config.
pub fn check_summary(config: &Config) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}: OK",
        escape_text(&config.path.display().to_string())
    );
    let _ = writeln!(
        out,
        "poll every {}, {}; statement_timeout {}",
        fmt_duration(config.daemon.interval),
        if config.daemon.dry_run {
            "dry run (signals nothing)"
        } else {
            "enforcing"
        },
        fmt_duration(config.postgres.statement_timeout),
    );
    let pg = &config.postgres;
    let tls = match &pg.verify {
        crate::conninfo::Verify::None => format!(
            "sslmode {:?}, server certificate not checked",
            pg.connect.get_ssl_mode()
        ),
        crate::conninfo::Verify::Chain(root) => {
            format!("TLS, certificate chain checked against {}", root.display())
        }
        crate::conninfo::Verify::Full(root) => {
            format!(
                "TLS, certificate chain and host name checked against {}",
                root.display()
            )
        }
    };
    let _ = writeln!(
        out,
        "{}",
        escape_text(&format!(
            "connect: {} (password: {}; {tls})",
            redacted_conninfo(&pg.connect),
            pg.password_source
        ))
    );
    for w in &pg.warnings {
        let _ = writeln!(out, "warning: {}", escape_text(w));
    }
    for w in &config.warnings {
        let _ = writeln!(out, "warning: {}", escape_text(&w.to_string()));
    }
    let _ = writeln!(out, "{} rule(s):", config.policy.rules.len());
    for (i, rule) in config.policy.rules.iter().enumerate() {
        let _ = writeln!(out, "  {}. {}", i + 1, rule_summary(rule));
    }
    // [[slot_rule]] (crate::slots).
    out += &crate::slots::report::check_summary(&config.policy.slots);
    out
}

/// Every warning about a loaded config, one line each, for `plan` to print
/// before it connects: a password file ignored for its permissions is why
/// a connection then fails for want of a password.
pub fn config_warnings(config: &Config) -> Vec<String> {
    let pg = config.postgres.warnings.iter().map(|w| escape_text(w));
    let rules = config.warnings.iter().map(|w| escape_text(&w.to_string()));
    pg.chain(rules).collect()
}

fn opt<T: ToString>(v: &Option<T>) -> String {
    v.as_ref()
        .map_or_else(|| "NULL".to_string(), |v| v.to_string())
}

fn measured(ws: &Walsender) -> String {
    let d = |v: Option<std::time::Duration>| v.map_or_else(|| "NULL".to_string(), fmt_duration);
    format!(
        "lag write/flush/replay {}/{}/{}; bytes behind write/flush/replay {}/{}/{}; now() - reply_time {}; flush_lsn {}; slot {} retaining {}",
        d(ws.write_lag),
        d(ws.flush_lag),
        d(ws.replay_lag),
        opt(&ws.write_lag_bytes),
        opt(&ws.flush_lag_bytes),
        opt(&ws.replay_lag_bytes),
        d(ws.reply_age),
        opt(&ws.flush_lsn),
        ws.slot_name.as_deref().map_or_else(|| "NULL".to_string(), token),
        opt(&ws.retained_wal),
    )
}

/// The time lags PostgreSQL shows that no rule judges, and why.
fn unjudged_lags(m: &crate::clocks::Measures) -> Option<String> {
    use crate::clocks::{LagKind, TimeLag};
    let shown: Vec<String> = [
        ("write_lag", LagKind::Write),
        ("flush_lag", LagKind::Flush),
        ("replay_lag", LagKind::Replay),
    ]
    .into_iter()
    .filter_map(|(name, kind)| match m.lag(kind) {
        TimeLag::NotJudged(d, why) => Some(format!("{name} {} ({why})", fmt_duration(d))),
        _ => None,
    })
    .collect();
    (!shown.is_empty()).then(|| format!("time lags not real now: {}", shown.join("; ")))
}

/// Silence and skew as the engine measures them (one clock), for `plan`.
fn reply_clock(m: &crate::clocks::Measures, ws: &Walsender, snapshot: &Snapshot) -> String {
    use crate::clocks::{skew_text, SilenceFrom};
    let silence = match (m.silence, m.silence_from) {
        (Some(d), Some(SilenceFrom::Reply)) => {
            format!("{} since reply_time last changed", fmt_duration(d))
        }
        (Some(d), Some(SilenceFrom::Streaming)) => {
            format!(
                "{} (no reply yet; counted from when first seen streaming)",
                fmt_duration(d)
            )
        }
        (Some(d), _) => format!(
            "{} since first seen (a reply_time's age cannot be told on one clock)",
            fmt_duration(d)
        ),
        (None, _) => "NULL (no reply yet, not streaming)".to_string(),
    };
    let skew = match (m.skew_seconds, ws.reply_time, snapshot.server_time) {
        (Some(s), _, _) => skew_text(s),
        (None, Some(reply), Some(server)) => {
            let (sign, d) = match server.duration_since(reply) {
                Ok(d) => ("", d),
                Err(e) => ("-", e.duration()),
            };
            format!(
                "not estimated in one poll (server time minus reply_time is {sign}{}: the skew plus the time since the last reply)",
                fmt_duration(d)
            )
        }
        (None, _, _) => "not yet estimated (needs a reply seen arriving)".to_string(),
    };
    let feedback = if m.confirms_nothing {
        "; confirms no position: progress and byte lags count from when first seen streaming"
    } else {
        ""
    };
    format!("silence (daemon's clock) {silence}; reply clock skew: {skew}{feedback}")
}

/// What each `[protect]` entry covers now: the walsenders it protects, so
/// an entry that misses a tool (a clone named `pg_basebackup`, an empty
/// `application_name`) shows before a rule meets it.
fn protect_coverage(policy: &Policy, snapshot: &Snapshot) -> String {
    let mut out = String::new();
    let many = policy.protect.len() > 1;
    for (i, m) in policy.protect.iter().enumerate() {
        let name = if many {
            format!("protect[{}]", i + 1)
        } else {
            "protect".to_string()
        };
        let covered: Vec<String> = snapshot
            .walsenders
            .iter()
            .filter(|ws| m.matches(ws))
            .map(|ws| {
                format!(
                    "pid {} {} (user {})",
                    ws.id.pid,
                    quoted(&ws.application_name),
                    token(ws.user.as_deref().unwrap_or("NULL"))
                )
            })
            .collect();
        let _ = writeln!(
            out,
            "\n{name} ({}): {}",
            matchers_summary(m).join(" and "),
            if covered.is_empty() {
                "protects no walsender now".to_string()
            } else {
                format!("protects {}", covered.join(", "))
            }
        );
    }
    out
}

/// What `replwarden plan` prints: each walsender, its measured values, the
/// rules that match it and what the daemon would do now.
pub fn plan(
    config: &Config,
    preflight: &Preflight,
    snapshot: &Snapshot,
    round: &Round,
    dry_run: bool,
) -> String {
    let mut out = String::new();
    for (severity, text) in preflight_findings(preflight) {
        let _ = writeln!(
            out,
            "{}: {}",
            if severity == Severity::Error {
                "ERROR"
            } else {
                "WARNING"
            },
            escape_text(&text)
        );
    }
    let _ = writeln!(
        out,
        "server: {} at WAL {}; connected as {}; {} walsender(s); {} rule(s){}",
        if snapshot.in_recovery {
            "standby (cascading walsenders)"
        } else {
            "primary"
        },
        opt(&snapshot.current_lsn),
        token(&snapshot.role),
        snapshot.walsenders.len(),
        config.policy.rules.len(),
        if dry_run { "; dry run" } else { "" },
    );
    if !snapshot.hidden.is_empty() {
        let _ = writeln!(out, "\n{}", escape_text(&privilege_advice(snapshot)));
    }
    out += &protect_coverage(&config.policy, snapshot);
    for (wi, ws) in snapshot.walsenders.iter().enumerate() {
        let _ = writeln!(
            out,
            "\n{} {} user={} client_addr={} state={} sync_state={}",
            ws.id,
            quoted(&ws.application_name),
            ws.user
                .as_deref()
                .map_or_else(|| crate::roles::shown(None).to_string(), token),
            ws.client_addr,
            token(ws.state_text().unwrap_or("NULL")),
            token(ws.sync_state.as_deref().unwrap_or("NULL")),
        );
        let _ = writeln!(out, "  {}", measured(ws));
        if let Some(m) = round.measures.get(wi) {
            let _ = writeln!(out, "  {}", reply_clock(m, ws, snapshot));
            if let Some(backup) = m.backup {
                let _ = writeln!(
                    out,
                    "  {}",
                    crate::basebackup::plan_line(backup, m.stalled, snapshot.basebackup(ws.id))
                );
            }
        }
        if let Some(line) = round.measures.get(wi).and_then(unjudged_lags) {
            let _ = writeln!(out, "  {line}");
        }
        let mut any = false;
        for (w, ri, verdict) in &round.verdicts {
            if *w == wi {
                any = true;
                let _ = writeln!(
                    out,
                    "  rule {}: {}",
                    quoted(&config.policy.rules[*ri].name),
                    escape_text(&verdict.to_string())
                );
            }
        }
        if !any {
            let _ = writeln!(out, "  no rule matches: left alone");
        }
    }
    for l in &round.loops {
        let _ = writeln!(
            out,
            "\nreconnect loop: {} acted on {} times. {}",
            escape_text(&l.client.to_string()),
            l.actions,
            escape_text(
                &crate::advice::for_loop(l, snapshot, round, &config.policy).text(&l.client)
            )
        );
    }
    if !round.decisions.is_empty() {
        let _ = writeln!(out, "\nwould act now:");
        for d in &round.decisions {
            let _ = writeln!(
                out,
                "  {} {} ({}) by rule {}: {}",
                d.action,
                d.walsender.id,
                quoted(&d.walsender.application_name),
                quoted(&d.rule),
                escape_text(&evidence_line(&d.evidence))
            );
        }
    }
    let _ = writeln!(
        out,
        "\nnote: a block rule's grace and time in `startup` count from the walsender's start; other conditions with a time (grace, in_state_for, no_progress_for) start counting at the daemon's first poll; plan shows one poll."
    );
    out
}

/// The loud message for a role that cannot read `pg_stat_replication`.
pub fn privilege_advice(snapshot: &Snapshot) -> String {
    format!(
        "role {role:?} cannot read pg_stat_replication for {n} walsender(s) (pids {pids:?}): their state, positions and \
         client_addr read as NULL, so replwarden acts on NOTHING. Fix: GRANT pg_monitor TO {ident};",
        role = snapshot.role,
        n = snapshot.hidden.len(),
        pids = snapshot.hidden,
        ident = quote_ident(&snapshot.role),
    )
}

/// Severity of a preflight finding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

/// What the privilege preflight found that an operator must fix, worded
/// with the fix. Empty when all is well.
pub fn preflight_findings(p: &Preflight) -> Vec<(Severity, String)> {
    let mut out = Vec::new();
    let role = quote_ident(&p.role);
    if p.superuser {
        return out;
    }
    if !p.can_read {
        out.push((
            Severity::Error,
            format!(
                "role {role} lacks pg_monitor (pg_read_all_stats): it cannot read pg_stat_replication, so replwarden \
                 will act on nothing. Fix: GRANT pg_monitor TO {role};"
            ),
        ));
    }
    if !p.can_signal {
        out.push((
            Severity::Error,
            format!(
                "role {role} lacks pg_signal_backend: every cancel/terminate will be refused. \
                 Fix: GRANT pg_signal_backend TO {role};"
            ),
        ));
    }
    if !p.superuser_walsenders.is_empty() {
        out.push((
            Severity::Warning,
            format!(
                "walsenders of superuser roles cannot be signalled by {role} (only a superuser may): {}. \
                 Fix: replicate as a non-superuser role (CREATE ROLE replicator LOGIN REPLICATION; and use it in \
                 primary_conninfo / the client's connection string)",
                p.superuser_walsenders.join(", ")
            ),
        ));
    }
    out
}

/// Logs a held-back action: every time for the synchronous quorum guard
/// (the operator must see that a rule is blocked), at debug for the
/// reconnect-loop backoff (its warning comes with each action).
pub fn log_held(held: &Held) {
    let ws = &held.decision.walsender;
    match &held.reason {
        HoldReason::SyncQuorum {
            setting,
            required,
            healthy,
        } => tracing::warn!(
            event = "held",
            rule = %held.decision.rule,
            action = %held.decision.action,
            pid = ws.id.pid,
            backend_start = %ws.id.started(),
            application_name = %ws.application_name,
            sync_state = ws.sync_state.as_deref().unwrap_or("NULL"),
            synchronous_standby_names = %setting,
            required = *required,
            healthy_sync_standbys = healthy.len(),
            healthy_names = %healthy.join(","),
            measured = %evidence_line(&held.decision.evidence),
            "held: would break synchronous quorum"
        ),
        HoldReason::ReconnectBackoff { .. } => tracing::debug!(
            event = "held",
            rule = %held.decision.rule,
            pid = ws.id.pid,
            application_name = %ws.application_name,
            reason = %held.reason,
            "held: reconnect loop backoff"
        ),
        HoldReason::Budget { .. } => {}
    }
}

/// One summary line for the actions the budget deferred this round.
pub fn log_deferred(deferred: &[&Held]) {
    let Some(first) = deferred.first() else {
        return;
    };
    let HoldReason::Budget { max_actions, per } = first.reason else {
        return;
    };
    let who: Vec<String> = deferred
        .iter()
        .map(|h| {
            format!(
                "{} {} ({})",
                h.decision.action,
                h.decision.walsender.id.pid,
                h.decision.walsender.application_name
            )
        })
        .collect();
    tracing::warn!(
        event = "deferred",
        deferred = deferred.len(),
        max_actions,
        per = %fmt_duration(per),
        actions = %who.join(", "),
        "action budget exhausted: actions deferred to later polls"
    );
}

/// The warning for a client acted on again and again, with the lasting fix
/// when there is a safe one (see [`crate::advice`]): `fix_hba` and
/// `fix_role` are empty when the line would also shut out a walsender that
/// is healthy or protected.
pub fn log_reconnect_loop(l: &ReconnectLoop, snapshot: &Snapshot, round: &Round, policy: &Policy) {
    let c = &l.client;
    let advice = crate::advice::for_loop(l, snapshot, round, policy);
    tracing::warn!(
        event = "reconnect_loop",
        application_name = %c.application_name,
        client_addr = %c.client_addr,
        user = %c.user,
        actions = l.actions,
        next_wait = %fmt_duration(l.next_wait),
        fix_hba = %advice.hba.safe_line(),
        fix_role = %advice.role.safe_line(),
        advice = %advice.text(c),
        "reconnect loop: this client keeps coming back after being acted on; replwarden now waits before acting on it \
         again (next_wait); the lasting fix is in `advice`"
    );
}

/// A walsender seen without its role (dropped while it streams), once per
/// process instance.
pub fn log_dropped_role(d: &crate::roles::Dropped) {
    match &d.remembered {
        Some(role) => tracing::warn!(
            event = "dropped_role",
            pid = d.id.pid,
            backend_start = %d.id.started(),
            application_name = %d.application_name,
            user = %role,
            "the role of this walsender was dropped while it streams (usename is NULL): it is still judged as the role \
             it was seen with"
        ),
        None => tracing::warn!(
            event = "dropped_role",
            pid = d.id.pid,
            backend_start = %d.id.started(),
            application_name = %d.application_name,
            "the role of this walsender was dropped before replwarden first saw it (usename is NULL): `user` rules and \
             protect entries cannot match it; rules by application_name or client_addr still do"
        ),
    }
}

/// A failed signal that used up its retries.
pub fn log_gave_up(decision: &Decision, attempts: u32) {
    let ws = &decision.walsender;
    tracing::error!(
        event = "gave_up",
        rule = %decision.rule,
        action = %decision.action,
        attempts,
        pid = ws.id.pid,
        backend_start = %ws.id.started(),
        application_name = %ws.application_name,
        "giving up: the signal failed on every attempt; this process instance will not be signalled again"
    );
}
