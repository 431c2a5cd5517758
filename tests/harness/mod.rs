//! Throwaway PostgreSQL clusters and replication clients for end-to-end
//! tests, from the local server binaries, on loopback ports with private
//! socket folders. Everything started here is stopped and removed in `Drop`
//! (which never panics).
//!
//! Binaries: `$REPLWARDEN_PG_BIN` if set, else the newest
//! `/usr/lib/postgresql/*/bin`: the default server and every client tool
//! (psql, pg_basebackup, pg_receivewal, pg_recvlogical). A cluster may run the
//! server binaries (initdb, pg_ctl, postgres) of another folder, e.g. one of
//! `$REPLWARDEN_PG_BINS` (see [`server_bins`] and [`Cluster::primary_in`]).
//! When the tests run as root (as CI does), servers and their client tools
//! run as the `postgres` system user through `setpriv`, in folders it owns;
//! `psql` (a plain client) runs as is.

#![allow(dead_code)] // each test binary uses its own part of the harness

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Where the server binaries are and who runs them.
struct Binaries {
    bin: PathBuf,
    as_postgres: bool,
}

fn binaries() -> &'static Binaries {
    static BINARIES: OnceLock<Binaries> = OnceLock::new();
    BINARIES.get_or_init(|| {
        let bin = match std::env::var_os("REPLWARDEN_PG_BIN") {
            Some(dir) => PathBuf::from(dir),
            None => {
                let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
                    .into_iter()
                    .flatten()
                    .flatten()
                    .filter_map(|e| {
                        let major = e.file_name().to_str()?.parse().ok()?;
                        let bin = e.path().join("bin");
                        bin.join("postgres").exists().then_some((major, bin))
                    })
                    .collect();
                found.sort();
                match found.pop() {
                    Some((_, bin)) => bin,
                    None => panic!(
                        "no PostgreSQL server binaries: install postgresql-15 (apt-get install postgresql-15) \
                         or set REPLWARDEN_PG_BIN to a folder holding initdb, pg_ctl and postgres"
                    ),
                }
            }
        };
        let as_postgres = nix::unistd::geteuid().is_root();
        Binaries { bin, as_postgres }
    })
}

/// The path of a tool in the default binaries' folder, where the client
/// tools are (run as the caller).
pub fn bin(name: &str) -> PathBuf {
    binaries().bin.join(name)
}

/// The server binary folders to test against: the default one, then each
/// folder of `$REPLWARDEN_PG_BINS` (colon-separated, as printed by
/// `scripts/fetch-postgres.sh`), without repeats. A listed folder without
/// `postgres` in it is an error, not something to skip.
pub fn server_bins() -> Vec<PathBuf> {
    let mut bins = vec![binaries().bin.clone()];
    if let Some(list) = std::env::var_os("REPLWARDEN_PG_BINS") {
        for dir in std::env::split_paths(&list).filter(|d| !d.as_os_str().is_empty()) {
            assert!(
                dir.join("postgres").exists(),
                "REPLWARDEN_PG_BINS: no postgres in {} (run scripts/fetch-postgres.sh)",
                dir.display()
            );
            let same = |b: &PathBuf| b.canonicalize().ok() == dir.canonicalize().ok();
            if !bins.iter().any(same) {
                bins.push(dir);
            }
        }
    }
    bins
}

/// `psql` as the superuser on the server at 127.0.0.1:`port` (one the
/// harness started, or a tool's, e.g. a Patroni member), quiet and stopping
/// at the first error.
pub fn psql_on(port: u16) -> Command {
    let mut c = Command::new("psql");
    c.args([
        "-X",
        "-q",
        "-v",
        "ON_ERROR_STOP=1",
        "-h",
        "127.0.0.1",
        "-U",
        "postgres",
        "-d",
        "postgres",
    ])
    .arg("-p")
    .arg(port.to_string())
    .env("PGCONNECT_TIMEOUT", "10");
    c
}

/// Runs `check` on every server folder of [`server_bins`], each failure
/// caught so that one report names every major that failed; `what` names
/// the test in the lines it prints. `check` says what it checked.
pub fn on_every_major(what: &str, check: impl Fn(&Path) -> String) {
    use std::panic::{catch_unwind, AssertUnwindSafe};
    let mut covered = Vec::new();
    let mut failures = Vec::new();
    for bin in server_bins() {
        let started = Instant::now();
        match catch_unwind(AssertUnwindSafe(|| check(&bin))) {
            Ok(line) => {
                let line = format!("{line} ({:.0?})", started.elapsed());
                eprintln!("{what}: {line}");
                covered.push(line);
            }
            Err(panic) => {
                let text = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                failures.push(format!("{}: {text}", bin.display()));
            }
        }
    }
    eprintln!("{what} covered:\n  {}", covered.join("\n  "));
    assert!(
        failures.is_empty(),
        "failed on {} of {} server folders:\n{}",
        failures.len(),
        covered.len() + failures.len(),
        failures.join("\n")
    );
}

/// A server-side tool (initdb, pg_ctl, pg_basebackup, …) from the default
/// folder, as the right user.
fn tool(name: &str) -> Command {
    tool_in(&binaries().bin, name)
}

/// The postmaster's pid, from its `postmaster.pid`.
pub fn postmaster_pid(cluster: &Cluster) -> i32 {
    std::fs::read_to_string(cluster.dir.join("data/postmaster.pid"))
        .expect("postmaster.pid")
        .lines()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// `program` run as the `postgres` system user (`setpriv`): what a test
/// running as root needs for PostgreSQL's tools and for clients that must
/// own the server's files.
pub fn as_postgres(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut c = Command::new("setpriv");
    c.args([
        "--reuid=postgres",
        "--regid=postgres",
        "--init-groups",
        "--",
    ])
    .arg(program);
    c
}

/// A tool from the binary folder `dir`, as the right user.
fn tool_in(dir: &Path, name: &str) -> Command {
    let b = binaries();
    let mut cmd = if b.as_postgres {
        as_postgres(dir.join(name))
    } else {
        Command::new(dir.join(name))
    };
    cmd.env("HOME", std::env::temp_dir())
        .current_dir(std::env::temp_dir());
    cmd
}

fn run(mut cmd: Command, what: &str) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot start: {e}"));
    if !out.status.success() {
        panic!(
            "{what} failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A fresh folder owned by whoever runs the servers.
fn scratch(name: &str) -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("rw-{}-{n}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch folder");
    if binaries().as_postgres {
        let mut c = Command::new("chown");
        c.args(["postgres:postgres"]).arg(&dir);
        run(c, "chown scratch folder");
    }
    dir
}

/// A free port below the ephemeral range (where an outgoing connection
/// could be holding it), different for each test process.
pub fn free_port() -> u16 {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let base = 10000 + (std::process::id() as usize % 400) * 25;
    loop {
        let port = (base + NEXT.fetch_add(1, Ordering::SeqCst) % 10000) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Sends `signal` to `pid`, ignoring a process that is already gone.
pub fn kill(pid: i32, signal: i32) {
    let signal = nix::sys::signal::Signal::try_from(signal).expect("a signal number");
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal);
}

/// Polls `check` every 100 ms until it returns `Some` or `timeout` passes.
pub fn wait_until<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// One row of `pg_stat_replication` as the tests look at it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalsenderRow {
    pub pid: i32,
    pub application_name: String,
    pub state: String,
    pub backend_start: String,
}

/// A PostgreSQL cluster in its own folder.
pub struct Cluster {
    pub name: String,
    pub dir: PathBuf,
    pub port: u16,
    /// The folder of its initdb, pg_ctl and postgres.
    pub server_bin: PathBuf,
    /// Processes stopped with SIGSTOP, continued before the cluster stops.
    frozen: Mutex<Vec<i32>>,
}

const BASE_CONF: &str = "
listen_addresses = '127.0.0.1'
wal_level = logical
max_wal_senders = 30
max_replication_slots = 30
max_connections = 60
shared_buffers = '16MB'
fsync = off
hot_standby = on
wal_sender_timeout = '60s'
wal_receiver_status_interval = '1s'
wal_retrieve_retry_interval = '1s'
log_line_prefix = '%m [%p] %a '
log_connections = on
log_disconnections = on
";

impl Cluster {
    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    /// A new primary with the roles the tests use: `replicator` (REPLICATION,
    /// not a superuser, so the daemon may signal its walsenders) and
    /// `replwarden` (pg_monitor + pg_signal_backend, the daemon's role).
    pub fn primary(name: &str) -> Cluster {
        Cluster::primary_in(&binaries().bin, name)
    }

    /// [`Cluster::primary`] with the server binaries of folder `server_bin`.
    pub fn primary_in(server_bin: &Path, name: &str) -> Cluster {
        let cluster = Cluster::initdb(server_bin, name);
        // The daemon's role comes from the shipped setup script.
        let mut setup = cluster.psql();
        setup
            .arg("-f")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/config/setup.sql"));
        run(setup, "config/setup.sql");
        cluster.sql(
            "CREATE ROLE replicator LOGIN REPLICATION;
             CREATE TABLE t (id bigserial PRIMARY KEY, payload text);
             GRANT SELECT ON t TO replicator;",
        );
        cluster
    }

    /// A new, started cluster with the test settings and nothing else.
    fn initdb(server_bin: &Path, name: &str) -> Cluster {
        let cluster = Cluster::new(server_bin, name);
        let mut init = tool_in(server_bin, "initdb");
        init.arg("-D").arg(cluster.data()).args([
            "-U",
            "postgres",
            "-A",
            "trust",
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C",
        ]);
        run(init, &format!("initdb for {name}"));
        cluster.write_conf("");
        cluster.start();
        cluster
    }

    /// A streaming standby of `upstream` (which may itself be a standby: a
    /// cascade), whose walsender on `upstream` is named `name`. With the
    /// default binaries it is made by pg_basebackup; with another major's
    /// (whose server a 15 pg_basebackup refuses from 16 on, and for which no
    /// pg_basebackup is shipped) by a low-level base backup, see
    /// [`Cluster::standby_by_copy`].
    pub fn standby(upstream: &Cluster, name: &str) -> Cluster {
        if upstream.server_bin != binaries().bin {
            return Cluster::standby_by_copy(upstream, name);
        }
        let cluster = Cluster::new(&upstream.server_bin, name);
        let mut bb = tool("pg_basebackup");
        bb.arg("-D").arg(cluster.data()).args([
            "-d",
            &format!("host=127.0.0.1 port={} user=replicator", upstream.port),
            "-X",
            "stream",
            "-c",
            "fast",
            "--no-sync",
        ]);
        run(bb, "pg_basebackup for a standby");
        cluster.follow(upstream, "")
    }

    /// Starts this copy of `upstream`'s data as its streaming standby, named
    /// after the cluster, with `extra` settings; waits until it streams.
    fn follow(self, upstream: &Cluster, extra: &str) -> Cluster {
        self.write_conf(&format!(
            "primary_conninfo = 'host=127.0.0.1 port={} user=replicator application_name={}'\n{extra}",
            upstream.port, self.name
        ));
        std::fs::write(self.data().join("standby.signal"), "").expect("standby.signal");
        self.chown(&self.data().join("standby.signal"));
        self.start();
        upstream.wait_streaming(&self.name);
        self
    }

    /// A streaming standby of the primary `upstream` made without any client
    /// tool of the server's major: a physical slot `name` reserving WAL from
    /// now, then in ONE psql session (the backup is aborted when its session
    /// ends) a non-exclusive backup start, a copy of the data folder (`\!`),
    /// the backup stop and its label written as `backup_label`. The WAL the
    /// standby needs to become consistent comes by streaming, through the
    /// slot. The functions were renamed in 15: `pg_start_backup(label, fast,
    /// exclusive)`/`pg_stop_backup(exclusive, wait_for_archive)` on 13-14,
    /// `pg_backup_start(label, fast)`/`pg_backup_stop(wait_for_archive)` on
    /// 15+. `spcmapfile` is empty without tablespaces, so no tablespace_map.
    pub fn standby_by_copy(upstream: &Cluster, name: &str) -> Cluster {
        let cluster = Cluster::new(&upstream.server_bin, name);
        upstream.sql(&format!(
            "SELECT pg_create_physical_replication_slot('{name}', true)"
        ));
        let (start, stop) = if upstream.major() >= 15 {
            (
                "pg_backup_start('replwarden', true)",
                "pg_backup_stop(false)",
            )
        } else {
            (
                "pg_start_backup('replwarden', true, false)",
                "pg_stop_backup(false, false)",
            )
        };
        let (src, dst) = (upstream.data(), cluster.data());
        let (src, dst) = (src.display(), dst.display());
        // pg_wal keeps its subfolders (archive_status, 17+: summaries);
        // pg_replslot is emptied, or the standby would carry the slots.
        let script = format!(
            "SELECT {start};\n\
             \\! cp -a {src} {dst} && rm -f {dst}/postmaster.pid {dst}/postmaster.opts && find {dst}/pg_wal -type f -delete && rm -rf {dst}/pg_replslot/* || echo COPY-FAILED\n\
             SELECT labelfile, spcmapfile FROM {stop} \\gset\n\
             \\o {dst}/backup_label\n\
             \\qecho -n :labelfile\n\
             \\o\n"
        );
        let script_path = cluster.dir.join("backup.sql");
        std::fs::write(&script_path, script).expect("write backup.sql");
        let mut backup = upstream.psql();
        backup.arg("-f").arg(&script_path);
        // psql goes on after a failed `\!` command: its output tells.
        let out = run(backup, &format!("low-level base backup for {name}"));
        assert!(
            !out.contains("COPY-FAILED"),
            "copying {src} for {name} failed:\n{out}"
        );
        cluster.chown(&cluster.data().join("backup_label"));
        cluster.follow(upstream, &format!("primary_slot_name = '{name}'\n"))
    }

    fn new(server_bin: &Path, name: &str) -> Cluster {
        Cluster {
            name: name.to_string(),
            dir: scratch(name),
            port: free_port(),
            server_bin: server_bin.to_path_buf(),
            frozen: Mutex::new(Vec::new()),
        }
    }

    /// The server's major version (e.g. 17), from `server_version_num`.
    pub fn major(&self) -> u32 {
        let num: u32 = self
            .sql("SHOW server_version_num")
            .parse()
            .expect("server_version_num");
        num / 10000
    }

    /// The server's version as it reports it (e.g. `17.10`).
    pub fn version(&self) -> String {
        self.sql("SHOW server_version")
    }

    fn chown(&self, path: &Path) {
        if binaries().as_postgres {
            let mut c = Command::new("chown");
            c.arg("postgres:postgres").arg(path);
            run(c, "chown");
        }
    }

    /// Appends the test settings (later lines win over the copied ones).
    fn write_conf(&self, extra: &str) {
        let path = self.data().join("postgresql.conf");
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .expect("open postgresql.conf");
        write!(
            f,
            "{BASE_CONF}port = {}\nunix_socket_directories = '{}'\n{extra}",
            self.port,
            self.dir.display()
        )
        .expect("write postgresql.conf");
    }

    fn pg_ctl(&self, args: &[&str]) -> Command {
        let mut c = tool_in(&self.server_bin, "pg_ctl");
        c.arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(self.log_path())
            .args(args);
        c
    }

    pub fn start(&self) {
        let out = self
            .pg_ctl(&["-w", "-t", "60", "start"])
            .output()
            .expect("run pg_ctl");
        if !out.status.success() {
            let log = self.server_log();
            let tail: Vec<&str> = log.lines().rev().take(15).collect();
            panic!(
                "start {} failed ({}):\n{}\nserver log (last lines):\n{}",
                self.name,
                out.status,
                String::from_utf8_lossy(&out.stdout),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
    }

    pub fn stop(&self, mode: &str) {
        self.thaw();
        run(
            self.pg_ctl(&["-w", "-t", "60", "-m", mode, "stop"]),
            &format!("stop {}", self.name),
        );
    }

    /// Puts `lines` at the top of pg_hba.conf (first match wins) and reloads.
    pub fn prepend_hba(&self, lines: &str) {
        let path = self.data().join("pg_hba.conf");
        let old = std::fs::read_to_string(&path).expect("read pg_hba.conf");
        std::fs::write(&path, format!("{lines}\n{old}")).expect("write pg_hba.conf");
        self.sql("SELECT pg_reload_conf()");
    }

    /// Appends settings to postgresql.conf (restart or reload to apply).
    pub fn append_conf(&self, settings: &str) {
        self.write_conf(settings);
    }

    /// Writes a file the server can read (owned by the server's user).
    pub fn write_owned(&self, name: &str, contents: &[u8], mode: u32) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = self.dir.join(name);
        std::fs::write(&path, contents).expect("write file");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
        self.chown(&path);
        path
    }

    /// `pg_ctl restart -m fast`: every session, the daemon's included, is cut.
    pub fn restart(&self) {
        run(
            self.pg_ctl(&["-w", "-t", "60", "-m", "fast", "restart"]),
            &format!("restart {}", self.name),
        );
    }

    /// `psql` as the superuser on this cluster, stopping at the first error.
    fn psql(&self) -> Command {
        psql_on(self.port)
    }

    /// Runs SQL as the superuser and returns the unaligned, tuples-only output.
    pub fn sql(&self, sql: &str) -> String {
        let mut c = self.psql();
        c.args(["-A", "-t", "-c", sql]);
        run(c, &format!("psql on {}: {sql}", self.name))
            .trim()
            .to_string()
    }

    /// A conninfo for the daemon (role `replwarden` unless said otherwise).
    pub fn conninfo(&self, user: &str) -> String {
        format!(
            "host=127.0.0.1 port={} dbname=postgres user={user}",
            self.port
        )
    }

    /// A tokio-postgres session as `user`, on a runtime of its own, for
    /// tests that send the daemon's statements themselves.
    pub fn direct(&self, user: &str) -> Direct {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let (client, connection) = rt
            .block_on(tokio_postgres::connect(
                &self.conninfo(user),
                tokio_postgres::NoTls,
            ))
            .unwrap_or_else(|e| panic!("connect as {user}: {e}"));
        rt.spawn(connection);
        Direct { rt, client }
    }

    pub fn walsenders(&self) -> Vec<WalsenderRow> {
        self.sql("SELECT pid, application_name, state, backend_start FROM pg_stat_replication ORDER BY pid")
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| {
                let f: Vec<&str> = l.split('|').collect();
                WalsenderRow {
                    pid: f[0].parse().expect("pid"),
                    application_name: f[1].to_string(),
                    state: f[2].to_string(),
                    backend_start: f[3].to_string(),
                }
            })
            .collect()
    }

    pub fn walsender(&self, application_name: &str) -> Option<WalsenderRow> {
        self.walsenders()
            .into_iter()
            .find(|w| w.application_name == application_name)
    }

    pub fn wait_walsender(&self, application_name: &str, state: &str) -> WalsenderRow {
        wait_until(
            &format!(
                "walsender {application_name} in state {state} on {}",
                self.name
            ),
            Duration::from_secs(60),
            || {
                self.walsender(application_name)
                    .filter(|w| w.state == state)
            },
        )
    }

    pub fn wait_streaming(&self, application_name: &str) -> WalsenderRow {
        self.wait_walsender(application_name, "streaming")
    }

    /// The walreceiver's pid on this standby.
    pub fn walreceiver_pid(&self) -> i32 {
        wait_until("a walreceiver", Duration::from_secs(30), || {
            self.sql("SELECT pid FROM pg_stat_wal_receiver")
                .parse()
                .ok()
        })
    }

    /// SIGSTOPs a server process of this cluster (continued again in `Drop`).
    pub fn freeze(&self, pid: i32) {
        self.frozen.lock().unwrap().push(pid);
        kill(pid, libc::SIGSTOP);
    }

    fn thaw(&self) {
        for pid in self.frozen.lock().unwrap().drain(..) {
            kill(pid, libc::SIGCONT);
        }
    }

    pub fn server_log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.thaw();
        let _ = self
            .pg_ctl(&["-w", "-t", "30", "-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A replication client process (pg_receivewal, pg_basebackup, a WAL pump),
/// killed and cleaned up in `Drop`.
pub struct Client {
    child: Child,
    dir: PathBuf,
}

impl Client {
    fn spawn(mut cmd: Command, dir: PathBuf, what: &str) -> Client {
        let log = std::fs::File::create(dir.join("client.log")).expect("client log");
        let child = cmd
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start {what}: {e}"));
        Client { child, dir }
    }

    /// `pg_receivewal` streaming from `upstream` as `application_name`
    /// (it retries every 5 s when its walsender is ended).
    pub fn receivewal(upstream: &Cluster, application_name: &str) -> Client {
        Client::receivewal_as(upstream, application_name, "replicator")
    }

    /// `pg_receivewal` connecting as `user` (e.g. the `postgres` superuser).
    pub fn receivewal_as(upstream: &Cluster, application_name: &str, user: &str) -> Client {
        let dir = scratch(application_name);
        let mut c = tool("pg_receivewal");
        c.arg("-D").arg(dir.join("wal"));
        std::fs::create_dir_all(dir.join("wal")).expect("wal dir");
        upstream.chown(&dir.join("wal"));
        c.args([
            "-d",
            &format!(
                "host=127.0.0.1 port={} user={user} application_name={application_name}",
                upstream.port
            ),
            "--no-sync",
        ]);
        Client::spawn(c, dir, "pg_receivewal")
    }

    /// A `pg_basebackup` throttled to 32 kB/s, which stays in state `backup`
    /// for many minutes.
    pub fn slow_basebackup(upstream: &Cluster, application_name: &str) -> Client {
        let dir = scratch(application_name);
        let mut c = tool("pg_basebackup");
        c.arg("-D").arg(dir.join("backup")).args([
            "-d",
            &format!(
                "host=127.0.0.1 port={} user=replicator application_name={application_name}",
                upstream.port
            ),
            "-X",
            "none",
            "-c",
            "fast",
            "--max-rate=32k",
            "--no-sync",
        ]);
        Client::spawn(c, dir, "pg_basebackup")
    }

    /// Writes a little WAL on `primary` every 100 ms for up to 10 minutes,
    /// so that lag and progress can be measured.
    pub fn wal_pump(primary: &Cluster) -> Client {
        let dir = scratch("wal-pump");
        let mut c = Command::new("psql");
        c.args([
            "-X",
            "-q",
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-p",
        ])
        .arg(primary.port.to_string())
        .arg("-c")
        .arg(
            "DO $$ BEGIN FOR i IN 1..6000 LOOP \
                 INSERT INTO t (payload) SELECT repeat('x', 200) FROM generate_series(1, 20); \
                 COMMIT; PERFORM pg_sleep(0.1); END LOOP; END $$",
        );
        Client::spawn(c, dir, "WAL pump")
    }

    /// `pg_recvlogical` (test_decoding, slot `application_name`, created if
    /// missing) streaming from `upstream`: a logical walsender in state
    /// `streaming` on every major, where a 15 pg_receivewal refuses 16+.
    /// It reconnects 5 s after its walsender is ended.
    pub fn recvlogical(upstream: &Cluster, application_name: &str) -> Client {
        let dir = scratch(application_name);
        let mut c = tool("pg_recvlogical");
        c.args([
            "-d",
            &format!(
                "host=127.0.0.1 port={} user=replicator dbname=postgres application_name={application_name}",
                upstream.port
            ),
            "-S",
            application_name,
            "--create-slot",
            "--if-not-exists",
            "--start",
            "-P",
            "test_decoding",
            "-F",
            "0",
            "-f",
            "/dev/null",
        ]);
        Client::spawn(c, dir, "pg_recvlogical")
    }

    /// A `psql` walsender (`replication=database`) that runs
    /// `SELECT pg_sleep(600)`, connecting after `delay` (perl sleeps, then
    /// execs psql: no fork in between, so the server's fork for it is the
    /// next one on the machine after the delay).
    pub fn sql_walsender(upstream: &Cluster, application_name: &str, delay: Duration) -> Client {
        let dir = scratch(application_name);
        let mut c = Command::new("perl");
        c.arg("-e")
            .arg("select(undef, undef, undef, shift @ARGV); exec @ARGV or die $!")
            .arg(delay.as_secs_f64().to_string())
            // The real binary: Debian's /usr/bin/psql wrapper forks.
            .arg(bin("psql"))
            .args(["-X", "-q"])
            .arg(format!(
                "host=127.0.0.1 port={} user=replicator dbname=postgres replication=database application_name={application_name}",
                upstream.port
            ))
            .args(["-c", "SELECT pg_sleep(600)"]);
        Client::spawn(c, dir, "psql walsender")
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("client.log")).unwrap_or_default()
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A logical subscriber cluster subscribed to `t` on `publisher`; its
/// walsender on the publisher is named `subscription`.
pub fn logical_subscriber(publisher: &Cluster, subscription: &str) -> Cluster {
    publisher.sql("CREATE PUBLICATION pub FOR TABLE t");
    let sub = Cluster::initdb(&publisher.server_bin, subscription);
    sub.sql("CREATE TABLE t (id bigserial PRIMARY KEY, payload text)");
    sub.sql(&format!(
        "CREATE SUBSCRIPTION {subscription} CONNECTION 'host=127.0.0.1 port={} user=replicator dbname=postgres' PUBLICATION pub",
        publisher.port
    ));
    publisher.wait_streaming(subscription);
    sub
}

/// The replwarden binary running as a daemon with JSON logs, its events
/// collected as they come.
pub struct Daemon {
    child: Child,
    events: Arc<Mutex<Vec<Value>>>,
    pub config_path: PathBuf,
    dir: PathBuf,
}

impl Daemon {
    pub fn start(config: &str, extra_args: &[&str]) -> Daemon {
        Daemon::start_with_env(config, extra_args, &[])
    }

    /// Starts the daemon with extra environment variables.
    pub fn start_with_env(config: &str, extra_args: &[&str], env: &[(&str, &str)]) -> Daemon {
        let dir = scratch("daemon");
        let config_path = dir.join("replwarden.toml");
        std::fs::write(&config_path, config).expect("write daemon config");
        // Debug logs unless the caller picks a level.
        let level: &[&str] = if extra_args.contains(&"--log-level") {
            &[]
        } else {
            &["--log-level", "debug"]
        };
        let mut child = Command::new(env!("CARGO_BIN_EXE_replwarden"))
            .args(["run", "--log-format", "json", "--config"])
            .arg(&config_path)
            .args(level)
            .args(extra_args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start replwarden");
        let events = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("stderr");
        let sink = events.clone();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let event = serde_json::from_str(&line).unwrap_or(Value::String(line));
                sink.lock().unwrap().push(event);
            }
        });
        Daemon {
            child,
            events,
            config_path,
            dir,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn events(&self) -> Vec<Value> {
        self.events.lock().unwrap().clone()
    }

    /// Events with `event = "action"` (one per decision).
    pub fn actions(&self) -> Vec<Value> {
        self.events()
            .into_iter()
            .filter(|e| e["event"] == "action")
            .collect()
    }

    /// The action events on replication slot `slot`.
    pub fn slot_actions(&self, slot: &str) -> Vec<Value> {
        self.actions()
            .into_iter()
            .filter(|e| e["slot_name"] == slot)
            .collect()
    }

    /// Waits for the first event (from the start) that `pred` accepts.
    pub fn wait_for(&self, what: &str, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        self.wait_for_from(0, what, timeout, pred)
    }

    /// How many events have been logged so far (a mark for `wait_for_from`).
    pub fn mark(&self) -> usize {
        self.events.lock().unwrap().len()
    }

    /// Waits for the first event after the first `from` that `pred` accepts.
    pub fn wait_for_from(
        &self,
        from: usize,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(e) = self.events().into_iter().skip(from).find(&pred) {
                return e;
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out after {timeout:?} waiting for {what}; daemon log:\n{}",
                    self.dump()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for an event whose message contains `text`.
    pub fn wait_message(&self, text: &str, timeout: Duration) -> Value {
        self.wait_for(&format!("a log line with {text:?}"), timeout, |e| {
            e["message"].as_str().is_some_and(|m| m.contains(text))
        })
    }

    pub fn count_messages(&self, text: &str) -> usize {
        self.events()
            .iter()
            .filter(|e| e["message"].as_str().is_some_and(|m| m.contains(text)))
            .count()
    }

    pub fn dump(&self) -> String {
        self.events()
            .iter()
            .filter(|e| e["message"] != "poll done")
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    }

    pub fn write_config(&self, config: &str) {
        std::fs::write(&self.config_path, config).expect("rewrite daemon config");
    }

    pub fn signal(&self, signal: i32) {
        kill(self.pid(), signal);
    }

    /// Waits for the process to exit; its status, or `None` on timeout.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A daemon config for `cluster` with the given rules.
pub fn config(cluster: &Cluster, user: &str, interval: &str, rules: &str) -> String {
    format!(
        "[postgres]\nconninfo = \"{}\"\n\n[daemon]\ninterval = \"{interval}\"\n\n{rules}",
        cluster.conninfo(user)
    )
}

/// A `kB` line of /proc/<pid>/status (`VmRSS:`, `VmHWM:`, `RssAnon:`…), in KiB.
pub fn status_kib(pid: i32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// A process's resident set size in KiB.
pub fn rss_kib(pid: i32) -> u64 {
    status_kib(pid, "VmRSS:")
}

/// `replwarden plan` with `config_text` written next to `cluster`.
pub fn plan(cluster: &Cluster, config_text: &str) -> std::process::Output {
    let path = cluster.write_owned("plan.toml", config_text.as_bytes(), 0o644);
    Command::new(env!("CARGO_BIN_EXE_replwarden"))
        .args(["plan", "--config"])
        .arg(&path)
        .output()
        .expect("run replwarden plan")
}

/// `GET path` from an HTTP endpoint on loopback (the metrics endpoint).
pub fn http_get(port: u16, path: &str) -> String {
    use std::io::Read;
    let mut stream =
        std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect to the metrics endpoint");
    write!(stream, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

/// Base backups taken by `psql` sending `BASE_BACKUP` over a replication
/// connection (the one `pg_basebackup` shipped refuses newer servers), the
/// archive thrown away. SIGSTOP to [`Client::pid`] makes it stop reading.
impl Client {
    /// `max_rate_kb` as `pg_basebackup --max-rate`; `fast` for an immediate
    /// start-of-backup checkpoint, else a spread one; `estimate` for a
    /// `backup_total` (`PROGRESS`).
    pub fn base_backup(
        upstream: &Cluster,
        application_name: &str,
        max_rate_kb: u32,
        fast: bool,
        estimate: bool,
    ) -> Client {
        // 15 has the option list; 13 and 14 only the old syntax.
        let command = if upstream.major() >= 15 {
            let mut options = vec![format!("MAX_RATE {max_rate_kb}")];
            if fast {
                options.push("CHECKPOINT 'fast'".to_string());
            }
            if estimate {
                options.push("PROGRESS".to_string());
            }
            format!("BASE_BACKUP ({})", options.join(", "))
        } else {
            format!(
                "BASE_BACKUP{}{} MAX_RATE {max_rate_kb}",
                if estimate { " PROGRESS" } else { "" },
                if fast { " FAST" } else { "" }
            )
        };
        let dir = scratch(application_name);
        let mut c = Command::new(bin("psql"));
        c.arg(format!(
            "host=127.0.0.1 port={} user=replicator replication=true application_name={application_name}",
            upstream.port
        ))
        .args(["-X", "-q", "-o", "/dev/null", "-c", &command])
        .stdin(Stdio::null());
        Client::spawn(c, dir, "psql BASE_BACKUP")
    }
}

/// A session opened by [`Cluster::direct`].
pub struct Direct {
    pub rt: tokio::runtime::Runtime,
    pub client: tokio_postgres::Client,
}

/// Reads backend messages until ReadyForQuery; panics on an ErrorResponse.
pub fn until_ready(stream: &mut TcpStream, what: &str) {
    loop {
        let mut header = [0u8; 5];
        stream
            .read_exact(&mut header)
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let len = u32::from_be_bytes(header[1..5].try_into().unwrap()) as usize;
        let mut body = vec![0u8; len - 4];
        stream
            .read_exact(&mut body)
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        match header[0] {
            b'Z' => return,
            b'E' => panic!("{what}: {}", String::from_utf8_lossy(&body)),
            _ => {}
        }
    }
}

/// A connection that has logged in (trust) with `params` (startup
/// parameters: `user`, `replication`, `application_name`...), run `query` if
/// given, and then stays idle: one socket each, no thread or process on
/// this side.
pub fn idle_connection(port: u16, params: &[(&str, &str)], query: Option<&str>) -> TcpStream {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let mut body = 196608u32.to_be_bytes().to_vec();
    for (k, v) in params {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut msg = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    msg.extend_from_slice(&body);
    stream.write_all(&msg).expect("startup");
    until_ready(&mut stream, "log in");
    if let Some(query) = query {
        let mut msg = vec![b'Q'];
        msg.extend_from_slice(&((query.len() + 5) as u32).to_be_bytes());
        msg.extend_from_slice(query.as_bytes());
        msg.push(0);
        stream.write_all(&msg).expect("query");
        until_ready(&mut stream, query);
    }
    stream
}
