//! libpq conventions on top of tokio-postgres: the `PG*` environment
//! variables, the password file (`passfile=`, `PGPASSFILE`, `~/.pgpass`)
//! with libpq's matching rules, and `sslmode` up to `verify-full` with a
//! root certificate. Resolution is pure (the environment and the file
//! reader are parameters); TLS is set up from its result, lazily.

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
    type Err = String;
    fn from_str(s: &str) -> Result<SslMode, String> {
        Ok(match s {
            "disable" => SslMode::Disable,
            "allow" => SslMode::Allow,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => {
                return Err(format!(
                    "sslmode {other:?} is not one of disable, allow, prefer, require, verify-ca, verify-full"
                ))
            }
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

/// A connection target with libpq's defaults applied.
#[derive(Clone, Debug)]
pub struct Resolved {
    pub config: tokio_postgres::Config,
    pub verify: Verify,
    /// Where the password came from, for `check` (never the password).
    pub password_source: String,
    /// Things worth a warning (e.g. a password file with loose permissions).
    pub warnings: Vec<String>,
}

/// The parameters libpq knows and tokio-postgres does not; taken out of the
/// connection string before tokio-postgres parses the rest.
const LIBPQ_ONLY: &[&str] = &["sslmode", "sslrootcert", "passfile"];

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
fn split_pairs(text: &str) -> Result<Vec<(String, String)>, String> {
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
            return Err(format!(
                "missing \"=\" after {}; a value with spaces must be in single quotes, as in password='two words'",
                word(pairs.len() + 1, &key)
            ));
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
                    None => {
                        return Err(format!(
                            "unterminated quoted value for {}",
                            word(pairs.len() + 1, &key)
                        ))
                    }
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

/// Takes the libpq-only parameters out of `conninfo` (key=value or URI
/// form); returns what tokio-postgres should parse and what was taken.
fn take_libpq_params(conninfo: &str) -> Result<(String, Vec<(String, String)>), String> {
    let trimmed = conninfo.trim();
    if trimmed.starts_with("postgres://") || trimmed.starts_with("postgresql://") {
        let (base, query) = match trimmed.split_once('?') {
            Some((b, q)) => (b, q),
            None => (trimmed, ""),
        };
        let mut kept = Vec::new();
        let mut taken = Vec::new();
        for param in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = param.split_once('=').unwrap_or((param, ""));
            if LIBPQ_ONLY.contains(&k) {
                taken.push((k.to_string(), percent_decode(v)));
            } else {
                kept.push(param);
            }
        }
        let rest = if kept.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        return Ok((rest, taken));
    }
    let pairs = split_pairs(trimmed)?;
    if let Some(n) = pairs
        .iter()
        .position(|(k, _)| !KNOWN_PARAMS.contains(&k.as_str()))
    {
        return Err(format!(
            "unknown parameter {}; known: {}",
            word(n + 1, &pairs[n].0),
            KNOWN_PARAMS.join(", ")
        ));
    }
    let (taken, kept): (Vec<_>, Vec<_>) = pairs
        .into_iter()
        .partition(|(k, _)| LIBPQ_ONLY.contains(&k.as_str()));
    let rest = kept
        .iter()
        .map(|(k, v)| format!("{k}={}", quote(v)))
        .collect::<Vec<_>>()
        .join(" ");
    Ok((rest, taken))
}

/// tokio-postgres's parse error, if it names nothing but a parameter
/// (`invalid value for option `port``); any other (an unknown option, an
/// unexpected character) could quote a piece of a password, so it is
/// replaced by a message that quotes nothing.
fn parse_error(e: &tokio_postgres::Error) -> String {
    let cause = std::error::Error::source(e).map(|s| s.to_string());
    match cause
        .as_deref()
        .and_then(|c| c.strip_prefix("invalid value for option `"))
    {
        Some(name) if KNOWN_PARAMS.contains(&name.trim_end_matches('`')) => {
            format!("invalid value for {}", name.trim_end_matches('`'))
        }
        _ => {
            "cannot be parsed (the text is not shown: it may hold a password); check its quoting: \
              key='value with spaces' pairs, or a postgresql:// URI with %-escapes"
                .to_string()
        }
    }
}

/// Resolves `conninfo` the way libpq would, with `env` for the `PG*`
/// variables (and `HOME`, `USER`) and `read` for files.
pub fn resolve(
    conninfo: &str,
    env: &dyn Fn(&str) -> Option<String>,
    read: &dyn Fn(&Path) -> Option<(String, u32)>,
) -> Result<Resolved, String> {
    let (rest, taken) = take_libpq_params(conninfo)?;
    let param = |name: &str| {
        taken
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let mut config = tokio_postgres::Config::from_str(&rest).map_err(|e| parse_error(&e))?;
    let mut warnings = Vec::new();

    if config.get_hosts().is_empty() {
        let hosts = env("PGHOST").unwrap_or_else(|| DEFAULT_SOCKET_DIR.to_string());
        for h in hosts.split(',') {
            config.host(h);
        }
    }
    if config.get_ports().is_empty() {
        if let Some(port) = env("PGPORT") {
            for p in port.split(',') {
                config.port(
                    p.trim()
                        .parse()
                        .map_err(|_| format!("PGPORT {p:?} is not a port number"))?,
                );
            }
        }
    }
    if config.get_user().is_none() {
        let user = env("PGUSER")
            .or_else(|| env("USER"))
            .ok_or("no user: set user= in conninfo or PGUSER")?;
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
                    let host = match config.get_hosts().first() {
                        Some(Host::Tcp(h)) => h.clone(),
                        Some(Host::Unix(p)) => p.display().to_string(),
                        None => String::new(),
                    };
                    let port = config
                        .get_ports()
                        .first()
                        .copied()
                        .unwrap_or(5432)
                        .to_string();
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
            return Err(
                "sslmode verify-ca/verify-full needs a root certificate: set sslrootcert= or PGSSLROOTCERT, \
                 or put it in ~/.postgresql/root.crt"
                    .to_string(),
            )
        }
        _ => Verify::None,
    };
    Ok(Resolved {
        config,
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

/// One TLS handshake of [`LazyTls`], OpenSSL set up when it starts.
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
            let mut make = tls_connector(&self.verify)?;
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
        resolve(conninfo, &|k| vars.get(k).cloned(), &|p| {
            files.get(p).cloned()
        })
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
        let r = resolve_with("", &[("USER", "replwarden")], &[]).unwrap();
        assert_eq!(
            r.config.get_hosts(),
            [Host::Unix(DEFAULT_SOCKET_DIR.into())]
        );
        assert_eq!(
            r.config.get_user(),
            Some("replwarden"),
            "libpq defaults to the OS user"
        );
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
}
