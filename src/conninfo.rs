//! libpq conventions on top of tokio-postgres: the `PG*` environment
//! variables, the operating-system user as the default user, the password
//! file (`passfile=`, `PGPASSFILE`, `~/.pgpass`) with libpq's matching
//! rules, `sslmode` up to `verify-full` with a root certificate, and host
//! lists split into one [`Target`] per host with libpq 14's
//! `target_session_attrs`. Resolution is pure (the environment, the file
//! reader and the OS user are parameters); TLS is set up from its result,
//! lazily.

use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::str::FromStr;

use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};
use postgres_openssl::MakeTlsConnector;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_postgres::config::{Host, SslMode as PgSslMode};
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};

/// libpq's default socket folder on Debian and most packages.
pub const DEFAULT_SOCKET_DIR: &str = "/var/run/postgresql";

/// `sslmode` as libpq knows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Allow,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl FromStr for SslMode {
    type Err = ConninfoError;
    fn from_str(s: &str) -> Result<SslMode, ConninfoError> {
        Ok(match s {
            "disable" => SslMode::Disable,
            "allow" => SslMode::Allow,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => return Err(ConninfoError::SslMode(other.to_string())),
        })
    }
}

/// How the server's certificate is checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verify {
    /// No check (sslmode below verify-ca without a root certificate).
    None,
    /// The chain, against this root certificate file.
    Chain(PathBuf),
    /// The chain and the host name.
    Full(PathBuf),
}

/// `target_session_attrs` as libpq 14+ takes it: which server of a host
/// list to settle on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SessionAttrs {
    /// The first server that accepts the connection.
    #[default]
    Any,
    /// One that accepts writes (not read-only, not a standby).
    ReadWrite,
    /// One that does not accept writes.
    ReadOnly,
    /// One not in recovery.
    Primary,
    /// One in recovery.
    Standby,
    /// A standby if any host is one, else any server.
    PreferStandby,
}

impl FromStr for SessionAttrs {
    type Err = ConninfoError;
    fn from_str(s: &str) -> Result<SessionAttrs, ConninfoError> {
        Ok(match s {
            "any" => SessionAttrs::Any,
            "read-write" => SessionAttrs::ReadWrite,
            "read-only" => SessionAttrs::ReadOnly,
            "primary" => SessionAttrs::Primary,
            "standby" => SessionAttrs::Standby,
            "prefer-standby" => SessionAttrs::PreferStandby,
            other => return Err(ConninfoError::SessionAttrs(other.to_string())),
        })
    }
}

impl fmt::Display for SessionAttrs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SessionAttrs::Any => "any",
            SessionAttrs::ReadWrite => "read-write",
            SessionAttrs::ReadOnly => "read-only",
            SessionAttrs::Primary => "primary",
            SessionAttrs::Standby => "standby",
            SessionAttrs::PreferStandby => "prefer-standby",
        })
    }
}

impl SessionAttrs {
    /// Whether a server in recovery (`in_recovery`) whose sessions are
    /// read-only by default (`read_only`) will do. For `prefer-standby`
    /// this is the first pass (a standby); [`SessionAttrs::fallback`] says
    /// whether a second pass takes any server.
    pub fn accepts(self, in_recovery: bool, read_only: bool) -> bool {
        match self {
            SessionAttrs::Any => true,
            SessionAttrs::ReadWrite => !in_recovery && !read_only,
            SessionAttrs::ReadOnly => in_recovery || read_only,
            SessionAttrs::Primary => !in_recovery,
            SessionAttrs::Standby | SessionAttrs::PreferStandby => in_recovery,
        }
    }

    /// Whether, no host having been accepted, a second pass over the list
    /// takes the first server that connects (libpq's `prefer-standby`).
    pub fn fallback(self) -> bool {
        self == SessionAttrs::PreferStandby
    }
}

/// One host of the host list (with its port and `hostaddr`), as
/// tokio-postgres connects to it.
#[derive(Clone, Debug)]
pub struct Target {
    /// `host:port` (or the socket folder and port), for logs.
    pub label: String,
    pub config: tokio_postgres::Config,
}

/// A connection target with libpq's defaults applied.
#[derive(Clone, Debug)]
pub struct Resolved {
    /// Every setting, with the whole host list (shown by `check`).
    pub config: tokio_postgres::Config,
    /// One config per host, in the order libpq tries them.
    pub targets: Vec<Target>,
    /// `target_session_attrs` (or `PGTARGETSESSIONATTRS`).
    pub session_attrs: SessionAttrs,
    pub verify: Verify,
    /// Where the password came from, for `check` (never the password).
    pub password_source: String,
    /// Things worth a warning (e.g. a password file with loose permissions).
    pub warnings: Vec<String>,
}

/// Why a connection string (with the `PG*` variables) cannot be used, and
/// what to do. No message quotes a word of the string that is not a
/// parameter name: any other word may be part of a password (see `word`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConninfoError {
    #[error("sslmode {0:?} is not one of disable, allow, prefer, require, verify-ca, verify-full")]
    SslMode(String),
    #[error("target_session_attrs {0:?} is not one of any, read-write, read-only, primary, standby, prefer-standby")]
    SessionAttrs(String),
    #[error(
        "replication= is not supported: replwarden needs an ordinary SQL session (it reads \
         pg_stat_replication and signals backends), which a replication connection cannot run; \
         remove replication= from the connection string"
    )]
    Replication,
    /// The word it follows, as `word` names it.
    #[error("missing \"=\" after {0}; a value with spaces must be in single quotes, as in password='two words'")]
    MissingEquals(String),
    /// The key of the value, as `word` names it.
    #[error("unterminated quoted value for {0}")]
    Unterminated(String),
    /// The unknown word, as `word` names it.
    #[error("unknown parameter {0}; known: {known}", known = KNOWN_PARAMS.join(", "))]
    UnknownParameter(String),
    #[error("host lists {hosts} hosts and hostaddr {addrs} addresses: give one address per host, or leave hostaddr out")]
    HostaddrCount { hosts: usize, addrs: usize },
    #[error("port lists {ports} ports for {hosts} hosts: give one port for all, or one per host")]
    PortCount { ports: usize, hosts: usize },
    /// A parameter of `KNOWN_PARAMS` whose value tokio-postgres refused.
    #[error("invalid value for {0}")]
    InvalidValue(String),
    #[error(
        "cannot be parsed (the text is not shown: it may hold a password); check its quoting: \
         key='value with spaces' pairs, or a postgresql:// URI with %-escapes"
    )]
    Unparsable,
    #[error("PGPORT {0:?} is not a port number")]
    PgPort(String),
    #[error("no user: the operating-system user has no entry in the password database; set user= in conninfo or PGUSER")]
    NoUser,
    #[error(
        "sslmode verify-ca/verify-full needs a root certificate: set sslrootcert= or PGSSLROOTCERT, \
         or put it in ~/.postgresql/root.crt"
    )]
    NoRootCertificate,
}

/// The parameters libpq knows and tokio-postgres does not; taken out of the
/// connection string before tokio-postgres parses the rest.
const LIBPQ_ONLY: &[&str] = &["sslmode", "sslrootcert", "passfile", "target_session_attrs"];
/// The parameters that say where to connect: kept apart so that each host
/// of a list gets a config of its own.
const ADDRESSING: &[&str] = &["host", "hostaddr", "port"];

/// Refuses parameters replwarden cannot honour, naming the key and why.
fn refuse_unsupported(key: &str) -> Result<(), ConninfoError> {
    match key {
        "replication" => Err(ConninfoError::Replication),
        _ => Ok(()),
    }
}

/// Every parameter name a connection string may use: tokio-postgres's and
/// [`LIBPQ_ONLY`]. Only these are ever named in an error; any other word of
/// the string may be part of a password, so errors give its position instead.
const KNOWN_PARAMS: &[&str] = &[
    "user",
    "password",
    "dbname",
    "options",
    "application_name",
    "sslmode",
    "sslnegotiation",
    "sslrootcert",
    "passfile",
    "host",
    "hostaddr",
    "port",
    "connect_timeout",
    "tcp_user_timeout",
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_retries",
    "target_session_attrs",
    "channel_binding",
    "load_balance_hosts",
];

/// How an error names the `n`th word (1-based) of a connection string:
/// by name if it is a parameter name, else by position only.
fn word(n: usize, text: &str) -> String {
    if KNOWN_PARAMS.contains(&text) {
        format!("{text:?}")
    } else {
        format!("word {n} (not shown: it may be part of a password)")
    }
}

/// Splits a key=value connection string into pairs (libpq quoting: values
/// in single quotes, `\'` and `\\` escapes).
fn split_pairs(text: &str) -> Result<Vec<(String, String)>, ConninfoError> {
    let mut pairs = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return Ok(pairs);
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            chars.next();
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.next() != Some('=') {
            return Err(ConninfoError::MissingEquals(word(pairs.len() + 1, &key)));
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'\'') {
            chars.next();
            loop {
                match chars.next() {
                    Some('\\') => value.extend(chars.next()),
                    Some('\'') => break,
                    Some(c) => value.push(c),
                    None => return Err(ConninfoError::Unterminated(word(pairs.len() + 1, &key))),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                chars.next();
                if c == '\\' {
                    value.extend(chars.next());
                } else {
                    value.push(c);
                }
            }
        }
        pairs.push((key, value));
    }
}

fn quote(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `conninfo` taken apart: the libpq-only parameters, and the rest for
/// tokio-postgres with (`full`) and without (`base`) the addressing ones.
struct Parts {
    full: String,
    base: String,
    taken: Vec<(String, String)>,
}

/// Takes the libpq-only parameters out of `conninfo` (key=value or URI
/// form), and the addressing ones out of a copy of the rest.
fn take_libpq_params(conninfo: &str) -> Result<Parts, ConninfoError> {
    let trimmed = conninfo.trim();
    if let Some(scheme) = ["postgres://", "postgresql://"]
        .into_iter()
        .find(|s| trimmed.starts_with(s))
    {
        let (before_query, query) = match trimmed.split_once('?') {
            Some((b, q)) => (b, q),
            None => (trimmed, ""),
        };
        let mut kept = Vec::new();
        let mut kept_base = Vec::new();
        let mut taken = Vec::new();
        for param in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = param.split_once('=').unwrap_or((param, ""));
            refuse_unsupported(k)?;
            if LIBPQ_ONLY.contains(&k) {
                taken.push((k.to_string(), percent_decode(v)));
            } else {
                kept.push(param);
                if !ADDRESSING.contains(&k) {
                    kept_base.push(param);
                }
            }
        }
        // The host list is the part of the authority after any `user@`.
        let after_scheme = &before_query[scheme.len()..];
        let authority_end = after_scheme.find('/').unwrap_or(after_scheme.len());
        let (authority, path) = after_scheme.split_at(authority_end);
        let userinfo = authority.rfind('@').map_or("", |at| &authority[..=at]);
        let with_query = |base: String, params: &[&str]| {
            if params.is_empty() {
                base
            } else {
                format!("{base}?{}", params.join("&"))
            }
        };
        return Ok(Parts {
            full: with_query(before_query.to_string(), &kept),
            base: with_query(format!("{scheme}{userinfo}{path}"), &kept_base),
            taken,
        });
    }
    let pairs = split_pairs(trimmed)?;
    for (k, _) in &pairs {
        refuse_unsupported(k)?;
    }
    if let Some(n) = pairs
        .iter()
        .position(|(k, _)| !KNOWN_PARAMS.contains(&k.as_str()))
    {
        return Err(ConninfoError::UnknownParameter(word(n + 1, &pairs[n].0)));
    }
    let (taken, kept): (Vec<_>, Vec<_>) = pairs
        .into_iter()
        .partition(|(k, _)| LIBPQ_ONLY.contains(&k.as_str()));
    let join = |pairs: &mut dyn Iterator<Item = &(String, String)>| {
        pairs
            .map(|(k, v)| format!("{k}={}", quote(v)))
            .collect::<Vec<_>>()
            .join(" ")
    };
    Ok(Parts {
        full: join(&mut kept.iter()),
        base: join(
            &mut kept
                .iter()
                .filter(|(k, _)| !ADDRESSING.contains(&k.as_str())),
        ),
        taken,
    })
}

/// One config per host of the host list, each `base` plus that host, its
/// port and its `hostaddr`, checked as libpq checks the lists.
fn split_hosts(
    hosts: &[Host],
    addrs: &[std::net::IpAddr],
    ports: &[u16],
    base: &tokio_postgres::Config,
) -> Result<Vec<Target>, ConninfoError> {
    if !hosts.is_empty() && !addrs.is_empty() && hosts.len() != addrs.len() {
        return Err(ConninfoError::HostaddrCount {
            hosts: hosts.len(),
            addrs: addrs.len(),
        });
    }
    let count = hosts.len().max(addrs.len());
    if ports.len() > 1 && ports.len() != count {
        return Err(ConninfoError::PortCount {
            ports: ports.len(),
            hosts: count,
        });
    }
    Ok((0..count)
        .map(|i| {
            let mut config = base.clone();
            let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
            config.port(port);
            let name = match hosts.get(i) {
                Some(Host::Tcp(h)) => {
                    config.host(h);
                    h.clone()
                }
                Some(Host::Unix(p)) => {
                    config.host_path(p);
                    p.display().to_string()
                }
                None => String::new(),
            };
            let label = match addrs.get(i) {
                Some(addr) => {
                    config.hostaddr(*addr);
                    if name.is_empty() {
                        format!("{addr}:{port}")
                    } else {
                        format!("{name} ({addr}):{port}")
                    }
                }
                None => format!("{name}:{port}"),
            };
            Target { label, config }
        })
        .collect())
}

/// The operating-system user replwarden runs as, from the password
/// database (`getpwuid(geteuid())`), as libpq finds its default user.
pub fn os_user() -> Option<String> {
    let uid = nix::unistd::geteuid();
    nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map(|u| u.name)
}

/// tokio-postgres's parse error, if it names nothing but a parameter
/// (`invalid value for option `port``); any other (an unknown option, an
/// unexpected character) could quote a piece of a password, so it is
/// replaced by a message that quotes nothing.
fn parse_error(e: &tokio_postgres::Error) -> ConninfoError {
    let cause = std::error::Error::source(e).map(|s| s.to_string());
    match cause
        .as_deref()
        .and_then(|c| c.strip_prefix("invalid value for option `"))
    {
        Some(name) if KNOWN_PARAMS.contains(&name.trim_end_matches('`')) => {
            ConninfoError::InvalidValue(name.trim_end_matches('`').to_string())
        }
        _ => ConninfoError::Unparsable,
    }
}

/// Resolves `conninfo` the way libpq would, with `env` for the `PG*`
/// variables (and `HOME`) and `read` for files; the default user is the
/// operating-system user ([`os_user`]).
pub fn resolve(
    conninfo: &str,
    env: &dyn Fn(&str) -> Option<String>,
    read: &dyn Fn(&Path) -> Option<(String, u32)>,
) -> Result<Resolved, ConninfoError> {
    resolve_as(conninfo, env, read, &os_user)
}

/// [`resolve`] with `os_user` for the operating-system user.
pub fn resolve_as(
    conninfo: &str,
    env: &dyn Fn(&str) -> Option<String>,
    read: &dyn Fn(&Path) -> Option<(String, u32)>,
    os_user: &dyn Fn() -> Option<String>,
) -> Result<Resolved, ConninfoError> {
    let parts = take_libpq_params(conninfo)?;
    let taken = parts.taken;
    let param = |name: &str| {
        taken
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    // tokio-postgres says only "invalid connection string"; `parse_error`
    // names the key from its source, never the value.
    let parse = |text: &str| tokio_postgres::Config::from_str(text).map_err(|e| parse_error(&e));
    // The addresses come from the whole string; every other setting is
    // applied to `config` (which has none) and copied to each host.
    let full = parse(&parts.full)?;
    let mut config = parse(&parts.base)?;
    let mut warnings = Vec::new();
    let mut hosts = full.get_hosts().to_vec();
    let addrs = full.get_hostaddrs().to_vec();
    let mut ports = full.get_ports().to_vec();
    if hosts.is_empty() && addrs.is_empty() {
        let list = env("PGHOST").unwrap_or_else(|| DEFAULT_SOCKET_DIR.to_string());
        hosts = list
            .split(',')
            .map(|h| match h.starts_with('/') {
                true => Host::Unix(PathBuf::from(h)),
                false => Host::Tcp(h.to_string()),
            })
            .collect();
    }
    if ports.is_empty() {
        if let Some(port) = env("PGPORT") {
            for p in port.split(',') {
                ports.push(
                    p.trim()
                        .parse()
                        .map_err(|_| ConninfoError::PgPort(p.to_string()))?,
                );
            }
        }
    }
    if config.get_user().is_none() {
        // As libpq: PGUSER, else the operating-system user (never $USER).
        let user = env("PGUSER")
            .or_else(os_user)
            .ok_or(ConninfoError::NoUser)?;
        config.user(&user);
    }
    if config.get_dbname().is_none() {
        if let Some(db) = env("PGDATABASE") {
            config.dbname(&db);
        }
    }
    if config.get_connect_timeout().is_none() {
        if let Some(t) = env("PGCONNECT_TIMEOUT").and_then(|t| t.parse::<u64>().ok()) {
            // libpq treats values below 2 as 2 seconds.
            config.connect_timeout(std::time::Duration::from_secs(t.max(2)));
        }
    }
    let session_attrs = match param("target_session_attrs").or_else(|| env("PGTARGETSESSIONATTRS"))
    {
        Some(attrs) => attrs.parse()?,
        None => SessionAttrs::Any,
    };

    let mut password_source = "none".to_string();
    if config.get_password().is_some() {
        password_source = "conninfo".to_string();
    } else if let Some(pw) = env("PGPASSWORD") {
        config.password(pw);
        password_source = "PGPASSWORD".to_string();
    } else {
        let home = env("HOME").map(PathBuf::from);
        let passfile = param("passfile")
            .or_else(|| env("PGPASSFILE"))
            .map(PathBuf::from)
            .or_else(|| home.as_ref().map(|h| h.join(".pgpass")));
        if let Some(path) = passfile {
            if let Some((contents, mode)) = read(&path) {
                if mode & 0o077 != 0 {
                    warnings.push(format!(
                        "password file {} has group or world access; permissions should be u=rw (0600) or less: ignored, as libpq does",
                        path.display()
                    ));
                } else {
                    let host = match hosts.first() {
                        Some(Host::Tcp(h)) => h.clone(),
                        Some(Host::Unix(p)) => p.display().to_string(),
                        None => String::new(),
                    };
                    let port = ports.first().copied().unwrap_or(5432).to_string();
                    let user = config.get_user().unwrap_or_default().to_string();
                    let db = config
                        .get_dbname()
                        .map_or_else(|| user.clone(), str::to_string);
                    if let Some(pw) = passfile_lookup(&contents, &host, &port, &db, &user) {
                        config.password(pw);
                        password_source = format!("passfile {}", path.display());
                    }
                }
            }
        }
    }

    let mode: SslMode = match param("sslmode").or_else(|| env("PGSSLMODE")) {
        Some(m) => m.parse()?,
        None => SslMode::Prefer,
    };
    let root = param("sslrootcert")
        .or_else(|| env("PGSSLROOTCERT"))
        .map(PathBuf::from)
        .or_else(|| {
            env("HOME")
                .map(|h| PathBuf::from(h).join(".postgresql/root.crt"))
                .filter(|p| read(p).is_some())
        });
    config.ssl_mode(match mode {
        SslMode::Disable => PgSslMode::Disable,
        SslMode::Allow | SslMode::Prefer => PgSslMode::Prefer,
        SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => PgSslMode::Require,
    });
    let verify = match (mode, root) {
        (SslMode::VerifyFull, Some(root)) => Verify::Full(root),
        (SslMode::VerifyCa, Some(root)) => Verify::Chain(root),
        // As libpq: with a root certificate, require checks the chain.
        (SslMode::Require, Some(root)) => Verify::Chain(root),
        (SslMode::VerifyCa | SslMode::VerifyFull, None) => {
            return Err(ConninfoError::NoRootCertificate)
        }
        _ => Verify::None,
    };
    let targets = split_hosts(&hosts, &addrs, &ports, &config)?;
    let mut full = config;
    for h in &hosts {
        match h {
            Host::Tcp(name) => full.host(name),
            Host::Unix(path) => full.host_path(path),
        };
    }
    for a in &addrs {
        full.hostaddr(*a);
    }
    for p in &ports {
        full.port(*p);
    }
    Ok(Resolved {
        config: full,
        targets,
        session_attrs,
        verify,
        password_source,
        warnings,
    })
}

/// Splits one passfile line into its five fields (`\:` and `\\` escape).
fn passfile_fields(line: &str) -> Option<Vec<String>> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => fields.last_mut()?.extend(chars.next()),
            ':' if fields.len() < 5 => fields.push(String::new()),
            c => fields.last_mut()?.push(c),
        }
    }
    (fields.len() == 5).then_some(fields)
}

/// libpq's passfile rule: the first line whose host, port, database and
/// user fields each equal the connection's (or are `*`) gives the password.
/// A unix-socket connection to the default socket folder also matches
/// `localhost`.
pub fn passfile_lookup(
    contents: &str,
    host: &str,
    port: &str,
    db: &str,
    user: &str,
) -> Option<String> {
    let local_default = host.is_empty() || host == DEFAULT_SOCKET_DIR;
    contents
        .lines()
        .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
        .filter_map(passfile_fields)
        .find(|f| {
            let m = |field: &str, value: &str| field == "*" || field == value;
            (m(&f[0], host) || (local_default && f[0] == "localhost"))
                && m(&f[1], port)
                && m(&f[2], db)
                && m(&f[3], user)
        })
        .map(|f| f[4].clone())
}

/// TLS for `verify`, set up only once a server has agreed to it. With
/// `sslmode=prefer` (libpq's default) against a server without TLS, over a
/// Unix socket, or with `sslmode=disable`, OpenSSL is never initialised:
/// that keeps about 4 MiB of library pages out of the daemon's memory.
#[derive(Clone, Debug)]
pub struct LazyTls(pub Verify);

impl<S> MakeTlsConnect<S> for LazyTls
where
    S: AsyncRead + AsyncWrite + Unpin + fmt::Debug + Sync + Send + 'static,
{
    type Stream = postgres_openssl::TlsStream<S>;
    type TlsConnect = LazyConnect;
    type Error = std::convert::Infallible;

    fn make_tls_connect(&mut self, domain: &str) -> Result<LazyConnect, Self::Error> {
        Ok(LazyConnect {
            verify: self.0.clone(),
            domain: domain.to_string(),
        })
    }
}

/// One TLS handshake of [`LazyTls`], OpenSSL set up (off the runtime
/// thread) when it starts.
pub struct LazyConnect {
    verify: Verify,
    domain: String,
}

impl<S> TlsConnect<S> for LazyConnect
where
    S: AsyncRead + AsyncWrite + Unpin + fmt::Debug + Sync + Send + 'static,
{
    type Stream = postgres_openssl::TlsStream<S>;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Stream, Self::Error>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            // Setting OpenSSL up reads files (the root certificate,
            // openssl.cnf): on a blocking thread, so a slow or hung file
            // system holds up neither the loop nor the watchdog.
            let verify = self.verify;
            let mut make = tokio::task::spawn_blocking(move || tls_connector(&verify)).await??;
            let handshake = MakeTlsConnect::<S>::make_tls_connect(&mut make, &self.domain)?;
            handshake.connect(stream).await
        })
    }
}

/// The OpenSSL connector for `verify`.
fn tls_connector(verify: &Verify) -> Result<MakeTlsConnector, openssl::error::ErrorStack> {
    let mut builder = SslConnector::builder(SslMethod::tls_client())?;
    match verify {
        Verify::None => builder.set_verify(SslVerifyMode::NONE),
        Verify::Chain(root) | Verify::Full(root) => {
            builder.set_ca_file(root)?;
            builder.set_verify(SslVerifyMode::PEER);
        }
    }
    let mut connector = MakeTlsConnector::new(builder.build());
    let check_host = matches!(verify, Verify::Full(_));
    connector.set_callback(move |config, _| {
        config.set_verify_hostname(check_host);
        Ok(())
    });
    Ok(connector)
}

/// The connection target without any password.
pub fn redacted_conninfo(c: &tokio_postgres::Config) -> String {
    let hosts: Vec<String> = c
        .get_hosts()
        .iter()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(name) => name.clone(),
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .collect();
    let ports: Vec<String> = c.get_ports().iter().map(|p| p.to_string()).collect();
    let mut out = format!(
        "host={} port={}",
        if hosts.is_empty() {
            "(default)".into()
        } else {
            hosts.join(",")
        },
        if ports.is_empty() {
            "5432".into()
        } else {
            ports.join(",")
        }
    );
    if let Some(db) = c.get_dbname() {
        out += &format!(" dbname={db}");
    }
    if let Some(user) = c.get_user() {
        out += &format!(" user={user}");
    }
    if c.get_password().is_some() {
        out += " password=<hidden>";
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn resolve_with(
        conninfo: &str,
        vars: &[(&str, &str)],
        files: &[(&str, &str, u32)],
    ) -> Result<Resolved, String> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let files: HashMap<PathBuf, (String, u32)> = files
            .iter()
            .map(|(p, c, m)| (PathBuf::from(p), (c.to_string(), *m)))
            .collect();
        resolve_as(
            conninfo,
            &|k| vars.get(k).cloned(),
            &|p| files.get(p).cloned(),
            &|| Some("osuser".to_string()),
        )
        .map_err(|e| e.to_string())
    }

    #[test]
    fn environment_fills_what_the_conninfo_leaves_out() {
        let r = resolve_with(
            "dbname=app",
            &[
                ("PGHOST", "db1,/tmp"),
                ("PGPORT", "6432,6433"),
                ("PGUSER", "rw"),
                ("PGDATABASE", "ignored"),
            ],
            &[],
        )
        .unwrap();
        assert_eq!(
            r.config.get_hosts(),
            [Host::Tcp("db1".into()), Host::Unix("/tmp".into())]
        );
        assert_eq!(r.config.get_ports(), [6432, 6433]);
        assert_eq!(r.config.get_user(), Some("rw"));
        assert_eq!(r.config.get_dbname(), Some("app"), "the conninfo wins");
        let r = resolve_with("", &[("USER", "someone-else")], &[]).unwrap();
        assert_eq!(
            r.config.get_hosts(),
            [Host::Unix(DEFAULT_SOCKET_DIR.into())]
        );
        assert_eq!(
            r.config.get_user(),
            Some("osuser"),
            "libpq defaults to the OS user from the password database, not $USER"
        );
        let none = resolve_as("", &|_| None, &|_| None, &|| None).unwrap_err();
        assert_eq!(none, ConninfoError::NoUser);
        let none = none.to_string();
        assert!(none.contains("set user= in conninfo or PGUSER"), "{none}");
    }

    #[test]
    fn the_os_user_comes_from_the_password_database() {
        // The test runs as some user with an entry (root or a builder).
        let name = os_user().expect("the test user has a password-database entry");
        let uid = nix::unistd::geteuid();
        let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
        assert!(
            passwd.lines().any(|l| l.starts_with(&format!("{name}:"))
                && l.split(':').nth(2) == Some(&uid.to_string())),
            "{name} is uid {uid} in /etc/passwd"
        );
    }

    #[test]
    fn host_lists_become_one_target_per_host() {
        let labels = |r: &Resolved| {
            r.targets
                .iter()
                .map(|t| t.label.clone())
                .collect::<Vec<_>>()
        };
        let r = resolve_with(
            "host=db1,db2,/tmp port=6432,6433,6434 user=u dbname=d",
            &[],
            &[],
        )
        .unwrap();
        assert_eq!(labels(&r), ["db1:6432", "db2:6433", "/tmp:6434"]);
        for t in &r.targets {
            assert_eq!(t.config.get_hosts().len(), 1);
            assert_eq!(t.config.get_ports().len(), 1);
            assert_eq!(
                (t.config.get_user(), t.config.get_dbname()),
                (Some("u"), Some("d"))
            );
        }
        let r = resolve_with("host=db1,db2 port=7000 user=u", &[], &[]).unwrap();
        assert_eq!(labels(&r), ["db1:7000", "db2:7000"], "one port for all");
        let r = resolve_with("host=a,b hostaddr=10.0.0.1,10.0.0.2 user=u", &[], &[]).unwrap();
        assert_eq!(labels(&r), ["a (10.0.0.1):5432", "b (10.0.0.2):5432"]);
        assert_eq!(
            r.targets[1].config.get_hostaddrs(),
            ["10.0.0.2".parse::<std::net::IpAddr>().unwrap()]
        );
        let r = resolve_with(
            "postgresql://rw:pw@db1:1,db2:2/app?host=db3&port=3&application_name=x",
            &[],
            &[],
        )
        .unwrap();
        assert_eq!(labels(&r), ["db1:1", "db2:2", "db3:3"]);
        assert_eq!(r.targets[2].config.get_password(), Some(&b"pw"[..]));
        assert_eq!(r.targets[2].config.get_dbname(), Some("app"));
        let r = resolve_with("user=u", &[("PGHOST", "h1,h2"), ("PGPORT", "1,2")], &[]).unwrap();
        assert_eq!(labels(&r), ["h1:1", "h2:2"]);
        assert_eq!(
            r.config.get_hosts().len(),
            2,
            "the whole list is kept for check"
        );
        let e = resolve_with("host=a,b,c port=1,2 user=u", &[], &[]).unwrap_err();
        assert!(e.contains("port lists 2 ports for 3 hosts"), "{e}");
        let e = resolve_with("host=a,b hostaddr=10.0.0.1 user=u", &[], &[]).unwrap_err();
        assert!(
            e.contains("host lists 2 hosts and hostaddr 1 addresses"),
            "{e}"
        );
    }

    #[test]
    fn target_session_attrs_as_libpq_14() {
        for (text, attrs) in [
            ("any", SessionAttrs::Any),
            ("read-write", SessionAttrs::ReadWrite),
            ("read-only", SessionAttrs::ReadOnly),
            ("primary", SessionAttrs::Primary),
            ("standby", SessionAttrs::Standby),
            ("prefer-standby", SessionAttrs::PreferStandby),
        ] {
            let r = resolve_with(
                &format!("host=a,b user=u target_session_attrs={text}"),
                &[],
                &[],
            )
            .unwrap();
            assert_eq!(r.session_attrs, attrs);
            assert_eq!(attrs.to_string(), text);
            let r = resolve_with(
                &format!("postgresql://u@a,b/?target_session_attrs={text}"),
                &[],
                &[],
            )
            .unwrap();
            assert_eq!(r.session_attrs, attrs);
        }
        let r = resolve_with("host=a user=u", &[("PGTARGETSESSIONATTRS", "standby")], &[]).unwrap();
        assert_eq!(r.session_attrs, SessionAttrs::Standby);
        let e = resolve_with("host=a user=u target_session_attrs=master", &[], &[]).unwrap_err();
        assert!(
            e.starts_with("target_session_attrs \"master\" is not one of"),
            "{e}"
        );
        // (in_recovery, read_only) of a primary, a read-only primary, a standby.
        let accepted = |a: SessionAttrs| {
            [(false, false), (false, true), (true, true)].map(|(r, o)| a.accepts(r, o))
        };
        assert_eq!(accepted(SessionAttrs::Any), [true, true, true]);
        assert_eq!(accepted(SessionAttrs::ReadWrite), [true, false, false]);
        assert_eq!(accepted(SessionAttrs::ReadOnly), [false, true, true]);
        assert_eq!(accepted(SessionAttrs::Primary), [true, true, false]);
        assert_eq!(accepted(SessionAttrs::Standby), [false, false, true]);
        assert_eq!(accepted(SessionAttrs::PreferStandby), [false, false, true]);
        assert!(SessionAttrs::PreferStandby.fallback() && !SessionAttrs::Standby.fallback());
    }

    #[test]
    fn a_replication_connection_is_refused_by_name() {
        for conninfo in [
            "host=a user=u replication=database",
            "postgresql://u@a/?replication=true",
        ] {
            let e = resolve_with(conninfo, &[], &[]).unwrap_err();
            assert!(e.starts_with("replication= is not supported"), "{e}");
        }
    }

    #[test]
    fn the_password_comes_from_conninfo_then_pgpassword_then_the_passfile() {
        let pgpass = "# comment\ndb1:5432:*:rw:from\\:file\nlocalhost:*:*:rw:local\n";
        let files = [
            ("/home/rw/.pgpass", pgpass, 0o600),
            ("/etc/pw", "*:*:*:*:custom", 0o600),
        ];
        let env = [("HOME", "/home/rw")];
        let r = resolve_with("host=db1 user=rw", &env, &files).unwrap();
        assert_eq!(r.config.get_password(), Some(&b"from:file"[..]));
        assert_eq!(r.password_source, "passfile /home/rw/.pgpass");
        let r = resolve_with("user=rw", &env, &files).unwrap();
        assert_eq!(
            r.config.get_password(),
            Some(&b"local"[..]),
            "the default socket matches localhost"
        );
        let r = resolve_with("host=db1 user=rw passfile=/etc/pw", &env, &files).unwrap();
        assert_eq!(r.config.get_password(), Some(&b"custom"[..]));
        let r = resolve_with(
            "host=db1 user=rw",
            &[("HOME", "/home/rw"), ("PGPASSFILE", "/etc/pw")],
            &files,
        )
        .unwrap();
        assert_eq!(r.config.get_password(), Some(&b"custom"[..]));
        let r = resolve_with(
            "host=db1 user=rw",
            &[("HOME", "/home/rw"), ("PGPASSWORD", "env")],
            &files,
        )
        .unwrap();
        assert_eq!(r.password_source, "PGPASSWORD");
        let r = resolve_with(
            "host=db1 user=rw password=inline",
            &[("PGPASSWORD", "env")],
            &files,
        )
        .unwrap();
        assert_eq!(r.password_source, "conninfo");
        let r = resolve_with("host=db2 user=rw", &env, &files).unwrap();
        assert_eq!(
            (r.config.get_password(), r.password_source.as_str()),
            (None, "none")
        );
    }

    #[test]
    fn a_passfile_others_can_read_is_ignored() {
        let r = resolve_with(
            "host=db1 user=rw",
            &[("HOME", "/h")],
            &[("/h/.pgpass", "*:*:*:*:pw", 0o644)],
        )
        .unwrap();
        assert_eq!(r.config.get_password(), None);
        assert!(r.warnings[0].contains("has group or world access"));
    }

    #[test]
    fn passfile_lines_follow_libpq() {
        let file = "h:5432:db:u:first\nh:5432:db:u:second\n*:*:*:*:any\nbad line\n";
        assert_eq!(
            passfile_lookup(file, "h", "5432", "db", "u").as_deref(),
            Some("first")
        );
        assert_eq!(
            passfile_lookup(file, "h", "5433", "db", "u").as_deref(),
            Some("any")
        );
        assert_eq!(
            passfile_lookup("a\\\\b:*:*:*:pw", "a\\b", "1", "d", "u").as_deref(),
            Some("pw")
        );
        assert_eq!(
            passfile_lookup("h:*:*:*:pa:ss", "h", "1", "d", "u").as_deref(),
            Some("pa:ss")
        );
        assert_eq!(
            passfile_lookup("localhost:*:*:*:pw", "/tmp", "1", "d", "u"),
            None
        );
    }

    #[test]
    fn sslmode_and_root_certificates_as_libpq() {
        let r = resolve_with(
            "host=h user=u sslmode=verify-full sslrootcert=/ca.crt",
            &[],
            &[],
        )
        .unwrap();
        assert_eq!(r.verify, Verify::Full("/ca.crt".into()));
        assert_eq!(r.config.get_ssl_mode(), PgSslMode::Require);
        let r = resolve_with(
            "host=h user=u",
            &[("PGSSLMODE", "verify-ca"), ("PGSSLROOTCERT", "/ca")],
            &[],
        )
        .unwrap();
        assert_eq!(r.verify, Verify::Chain("/ca".into()));
        let r = resolve_with(
            "host=h user=u sslmode=require",
            &[("HOME", "/h")],
            &[("/h/.postgresql/root.crt", "x", 0o600)],
        )
        .unwrap();
        assert_eq!(
            r.verify,
            Verify::Chain("/h/.postgresql/root.crt".into()),
            "require + a root cert checks the chain"
        );
        let r = resolve_with("host=h user=u sslmode=require", &[], &[]).unwrap();
        assert_eq!(r.verify, Verify::None);
        let r = resolve_with("host=h user=u sslmode=disable", &[], &[]).unwrap();
        assert_eq!(r.config.get_ssl_mode(), PgSslMode::Disable);
        assert!(resolve_with("host=h user=u sslmode=verify-full", &[], &[])
            .unwrap_err()
            .contains("root certificate"));
        assert!(resolve_with("host=h user=u sslmode=strict", &[], &[]).is_err());
    }

    #[test]
    fn quoting_and_uris() {
        let r = resolve_with(
            r"host=h user='o\'neil' password='a b\\c' sslmode = require",
            &[],
            &[],
        )
        .unwrap();
        assert_eq!(r.config.get_user(), Some("o'neil"));
        assert_eq!(r.config.get_password(), Some(&br"a b\c"[..]));
        let r = resolve_with(
            "postgresql://rw@db1:6432/app?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.crt&connect_timeout=3",
            &[],
            &[],
        )
        .unwrap();
        assert_eq!(r.verify, Verify::Full("/etc/ca.crt".into()));
        assert_eq!(r.config.get_ports(), [6432]);
        assert_eq!(
            r.config.get_connect_timeout(),
            Some(&std::time::Duration::from_secs(3))
        );
        assert!(resolve_with("host", &[], &[]).is_err());
    }

    #[test]
    fn no_part_of_a_password_is_in_a_parse_error() {
        let secret = ["Wr4rden", "S3cret!xyz", "S3cret", "xyz"];
        let cases = [
            "host=db password=Wr4rden S3cret!xyz",
            "host=db password=Wr4rden S3cret!xyz=1",
            "host=db password=Wr4rden port=5432 S3cret!xyz",
            "password='Wr4rden S3cret!xyz",
            "password=Wr4rden S3cret!xyz='x",
            "postgresql://u:Wr4rden%20S3cret!xyz@db/postgres?S3cret=xyz",
            "postgresql://u:Wr4rden S3cret!xyz@db:port/postgres",
            "host=db port=S3cret!xyz password=Wr4rden",
        ];
        for conninfo in cases {
            let e = resolve_with(conninfo, &[("USER", "u")], &[]).unwrap_err();
            for s in secret {
                assert!(!e.contains(s), "{conninfo:?} gave {e:?}");
            }
        }
        let e = resolve_with("host=db password=Wr4rden S3cret!xyz", &[], &[]).unwrap_err();
        assert!(
            e.starts_with("missing \"=\" after word 3 (not shown: it may be part of a password)"),
            "{e}"
        );
        let e = resolve_with("host=db prot=5432", &[], &[]).unwrap_err();
        assert!(e.starts_with("unknown parameter word 2"), "{e}");
        let e = resolve_with("host=db port=x", &[("USER", "u")], &[]).unwrap_err();
        assert_eq!(e, "invalid value for port");
    }

    #[test]
    fn errors_name_the_key() {
        for (conninfo, key) in [
            ("host=h user=u port=notaport", "invalid value for port"),
            (
                "host=h user=u keepalives_idle=x",
                "invalid value for keepalives_idle",
            ),
            (
                "postgresql://u@h/?connect_timeout=x",
                "invalid value for connect_timeout",
            ),
        ] {
            let e = resolve_with(conninfo, &[], &[]).unwrap_err();
            assert!(e.contains(key), "{conninfo}: {e}");
        }
    }
}
