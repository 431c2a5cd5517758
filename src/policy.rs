//! The validated policy: rules made of matchers (who a rule is about) and
//! conditions (what must hold for it to act), and the action it takes. Built
//! only by [`crate::config`]; read by [`crate::engine`]. Pure data and pure
//! matching, no I/O.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;

use crate::condition::{Sample, Thresholds};
use crate::snapshot::{ClientAddr, Walsender};

/// Everything a rule can do to a walsender that breaks it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// Log the breach and touch nothing.
    Log,
    /// `pg_cancel_backend`: for a walsender this ends the stream as well
    /// (the client reconnects), but the client logs "canceling statement".
    Cancel,
    /// `pg_terminate_backend`.
    Terminate,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Log => "log",
            Action::Cancel => "cancel",
            Action::Terminate => "terminate",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A list of patterns where `!pattern` excludes. A value matches when it
/// matches any positive pattern (or there is none) and no excluding one.
#[derive(Clone, Debug, PartialEq)]
pub struct PatternList<P> {
    pub include: Vec<P>,
    pub exclude: Vec<P>,
}

/// `a, b, !c`: the includes, then the excludes marked `!`.
impl<P: fmt::Display> fmt::Display for PatternList<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inc = self.include.iter().map(|p| (p, ""));
        let exc = self.exclude.iter().map(|p| (p, "!"));
        for (i, (p, bang)) in inc.chain(exc).enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            write!(f, "{sep}{bang}{p}")?;
        }
        Ok(())
    }
}

impl<P> PatternList<P> {
    pub fn matches_with(&self, hit: impl Fn(&P) -> bool) -> bool {
        (self.include.is_empty() || self.include.iter().any(&hit)) && !self.exclude.iter().any(hit)
    }
}

/// A glob pattern as written in the config (`rogue_*`), kept with its source
/// text for summaries.
#[derive(Clone, Debug, PartialEq)]
pub struct Glob {
    pub text: String,
    pub pattern: glob::Pattern,
}

/// Why a matcher's pattern was refused; the config loader shows it with its
/// cause (`crate::errors::error_chain`) at the pattern's file:line:col.
#[derive(Debug, thiserror::Error)]
pub enum PatternError {
    #[error("{text:?} is not a valid glob pattern")]
    Glob {
        text: String,
        #[source]
        cause: glob::PatternError,
    },
    #[error("{} has the range {from}-{to}, which is backwards and matches no character: write {to}-{from}", crate::logfmt::quoted(.text))]
    ReversedRange { text: String, from: char, to: char },
    #[error("unknown {matcher} {text:?}: use one of {}", .known.join(", "))]
    Unknown {
        matcher: String,
        text: String,
        known: &'static [&'static str],
    },
    #[error("{text:?} is not a CIDR, an IP address or \"local\" (e.g. \"10.0.0.0/8\", \"::1\", \"local\")")]
    Addr { text: String },
}

impl Glob {
    pub fn parse(text: &str) -> Result<Glob, PatternError> {
        glob::Pattern::new(text)
            .map(|pattern| Glob {
                text: text.to_string(),
                pattern,
            })
            .map_err(|cause| PatternError::Glob {
                text: text.to_string(),
                cause,
            })
    }
}

/// Bare when made of plain and glob characters only, else quoted and
/// escaped (see [`crate::logfmt`]).
impl fmt::Display for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = &self.text;
        let plain = !text.is_empty()
            && text
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-.:/@+*?[]!^".contains(c));
        if plain {
            f.write_str(text)
        } else {
            f.write_str(&crate::logfmt::quoted(text))
        }
    }
}

/// One `client_addr` pattern: a network, or `local` for unix-socket clients.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AddrPattern {
    Local,
    Net(IpNet),
}

impl AddrPattern {
    /// `"local"`, a CIDR (`"10.0.0.0/8"`, `"fd00::/8"`) or a single address.
    pub fn parse(text: &str) -> Result<AddrPattern, PatternError> {
        if text == "local" {
            return Ok(AddrPattern::Local);
        }
        if let Ok(net) = text.parse::<IpNet>() {
            return Ok(AddrPattern::Net(net.trunc()));
        }
        text.parse::<IpAddr>()
            .map(|ip| AddrPattern::Net(IpNet::from(ip)))
            .map_err(|_| PatternError::Addr {
                text: text.to_string(),
            })
    }

    fn matches(&self, addr: &ClientAddr) -> bool {
        match (self, addr) {
            (AddrPattern::Local, ClientAddr::Local) => true,
            (AddrPattern::Net(net), ClientAddr::Ip(ip)) => net.contains(ip),
            _ => false,
        }
    }
}

impl fmt::Display for AddrPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AddrPattern::Local => f.write_str("local"),
            AddrPattern::Net(net) => net.fmt(f),
        }
    }
}

/// Who a rule is about. Every matcher given must match; `None` matches all.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Matchers {
    pub application_name: Option<PatternList<Glob>>,
    pub user: Option<PatternList<Glob>>,
    pub client_addr: Option<PatternList<AddrPattern>>,
    pub state: Option<PatternList<Glob>>,
    pub sync_state: Option<PatternList<Glob>>,
}

/// Whether a glob matcher (of a rule, or a slot rule) lets `value`
/// through; no matcher (`None`) lets everything through.
pub fn glob_list_matches(list: &Option<PatternList<Glob>>, value: Option<&str>) -> bool {
    match list {
        None => true,
        // A value the server did not give (NULL) matches no pattern; only a
        // list made of exclusions alone lets it through.
        Some(list) => list.matches_with(|g| value.is_some_and(|v| g.pattern.matches(v))),
    }
}

impl Matchers {
    pub fn matches(&self, ws: &Walsender) -> bool {
        glob_list_matches(&self.application_name, Some(&ws.application_name))
            && glob_list_matches(&self.user, ws.user.as_deref())
            && glob_list_matches(&self.state, ws.state_text())
            && glob_list_matches(&self.sync_state, ws.sync_state.as_deref())
            && match &self.client_addr {
                None => true,
                Some(list) => list.matches_with(|p| p.matches(&ws.client_addr)),
            }
    }

    pub fn is_empty(&self) -> bool {
        self.application_name.is_none()
            && self.user.is_none()
            && self.client_addr.is_none()
            && self.state.is_none()
            && self.sync_state.is_none()
    }
}

/// What must hold, all together, for a rule to act: thresholds over the
/// walsender conditions of [`crate::condition`].
pub type Conditions = Thresholds<Sample>;

/// One `[[rule]]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    /// Unique; shows in every log line about the rule.
    pub name: String,
    pub matchers: Matchers,
    pub conditions: Conditions,
    /// How long the conditions must hold without a break before acting.
    pub grace: Duration,
    pub action: Action,
    /// For `cancel`: terminate the same process instance if it is still
    /// there this long after the cancel.
    pub escalate_after: Option<Duration>,
}

/// `[limits]`: how much the daemon may do, and how it backs off.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// At most this many cancels/terminates …
    pub max_actions: u32,
    /// … in any window this long; more are deferred to later polls.
    pub per: Duration,
    /// The wait before acting again on a client (application_name +
    /// client_addr + user) that came back after an action; doubles with each
    /// further action, up to `reconnect_backoff_max`. Zero disables it.
    pub reconnect_backoff: Duration,
    pub reconnect_backoff_max: Duration,
    /// How often a failed signal is retried before it is reported and left.
    pub max_retries: u32,
    /// How long a terminated process may take to exit before the kill
    /// counts as failed (`not_exited`).
    pub terminate_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_actions: 5,
            per: Duration::from_secs(60),
            reconnect_backoff: Duration::from_secs(10),
            reconnect_backoff_max: Duration::from_secs(600),
            max_retries: 3,
            terminate_timeout: Duration::from_millis(500),
        }
    }
}

/// `[sync_guard]`: never take away a synchronous standby the server needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncGuard {
    pub enabled: bool,
    /// A sync candidate counts as healthy when streaming and its last reply
    /// is at most this old.
    pub healthy_reply_within: Duration,
}

impl Default for SyncGuard {
    fn default() -> Self {
        SyncGuard {
            enabled: true,
            healthy_reply_within: Duration::from_secs(15),
        }
    }
}

/// The whole validated policy.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    /// In file order.
    pub rules: Vec<Rule>,
    /// Walsenders matching any of these are never acted on.
    pub protect: Vec<Matchers>,
    pub limits: Limits,
    pub sync_guard: SyncGuard,
    /// `[[slot_rule]]` and `[protect] slot_name`: see [`crate::slots`].
    pub slots: crate::slots::SlotPolicy,
}

impl Policy {
    pub fn protects(&self, ws: &Walsender) -> bool {
        self.protect.iter().any(|m| m.matches(ws))
    }
}
