//! The real tools (issue 14 item 5): Barman (`barman receive-wal`,
//! `barman backup`), Patroni with etcd (switchover, `patronictl reinit`) and
//! plain `pg_receivewal` archivers, against throwaway clusters, with the
//! protect entries the README documents (by role). Each tool runs from its
//! Debian package (`barman`, `patroni`, `etcd-server`) with its config in a
//! folder this test owns, as the `postgres` user when the tests run as
//! root. A tool that cannot start fails the test with its output: nothing
//! here passes by skipping.

mod harness;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use harness::{config, free_port, plan, wait_until, Client, Cluster, Daemon};
use serde_json::Value;

fn as_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// `program` as the `postgres` user when root (the tools refuse root or
/// must own the server's files), with `HOME` set to `home`.
fn tool(program: &str, home: &Path) -> Command {
    let mut c = if as_root() {
        harness::as_postgres(program)
    } else {
        Command::new(program)
    };
    c.env("HOME", home).current_dir(home);
    c
}

/// A folder owned by the user the tools run as.
fn owned_dir(path: &Path) -> PathBuf {
    std::fs::create_dir_all(path).expect("create folder");
    if as_root() {
        let ok = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(path)
            .status()
            .expect("chown");
        assert!(ok.success(), "chown {}", path.display());
    }
    path.to_path_buf()
}

fn output(mut cmd: Command, what: &str) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot start: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{text}",
        out.status
    );
    text
}

/// A long-running tool process, killed (with its process group) in `Drop`.
struct Running {
    child: Child,
    log: PathBuf,
    what: String,
}

impl Running {
    fn spawn(mut cmd: Command, log: PathBuf, what: &str) -> Running {
        use std::os::unix::process::CommandExt;
        let file = std::fs::File::create(&log).expect("tool log");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log"))
            .stderr(file)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("{what}: cannot start: {e}"));
        Running {
            child,
            log,
            what: what.to_string(),
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Fails the test with the tool's output if it has exited.
    fn assert_alive(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("{} exited ({status}):\n{}", self.what, self.log());
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        use nix::sys::signal::{killpg, Signal};
        let pgid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = killpg(pgid, Signal::SIGTERM);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = killpg(pgid, Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

fn actions_on(daemon: &Daemon, application_name: &str) -> Vec<Value> {
    daemon
        .actions()
        .into_iter()
        .filter(|a| a["application_name"] == application_name)
        .collect()
}

/// No reconnect-loop advice may name a role that a protected member uses.
fn assert_no_advice_against(daemon: &Daemon, role: &str) {
    for e in daemon.events() {
        if e["event"] == "reconnect_loop" {
            let hba = e["fix_hba"].as_str().unwrap_or("");
            let fix_role = e["fix_role"].as_str().unwrap_or("");
            assert!(
                !hba.contains(&format!(" {role} ")) && !fix_role.contains(&format!(" {role} ")),
                "advice that would cut off the {role} members: {e}"
            );
        }
    }
}

// ---------------------------------------------------------------- Barman

/// A Barman server `pg` for `primary`, its files under `primary.dir/barman`.
struct Barman {
    conf: PathBuf,
    home: PathBuf,
}

impl Barman {
    fn new(primary: &Cluster) -> Barman {
        let home = owned_dir(&primary.dir.join("barman"));
        owned_dir(&home.join("conf.d"));
        let conf = home.join("barman.conf");
        let user = if as_root() {
            "postgres".to_string()
        } else {
            std::env::var("USER").unwrap_or_default()
        };
        std::fs::write(
            &conf,
            format!(
                "[barman]\nbarman_home = {home}\nbarman_user = {user}\nlog_file = {home}/barman.log\nlog_level = INFO\n\
                 configuration_files_directory = {home}/conf.d\n\n\
                 [pg]\ndescription = \"replwarden field test\"\n\
                 conninfo = host=127.0.0.1 port={port} user=postgres dbname=postgres\n\
                 streaming_conninfo = host=127.0.0.1 port={port} user=streaming_barman\n\
                 backup_method = postgres\nstreaming_archiver = on\nslot_name = barman\n\
                 bandwidth_limit = 64\npath_prefix = {bin}\n",
                home = home.display(),
                port = primary.port,
                bin = primary.server_bin.display(),
            ),
        )
        .expect("barman.conf");
        owned_dir(&home);
        Barman { conf, home }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = tool("barman", &self.home);
        c.arg("-c").arg(&self.conf).args(args);
        c
    }

    /// Barman for `primary` with its own role (`streaming_barman`) and
    /// slot, and `barman receive-wal` running, once it streams.
    fn receiving(primary: &Cluster) -> (Barman, Running) {
        primary.sql("CREATE ROLE streaming_barman LOGIN REPLICATION");
        let barman = Barman::new(primary);
        output(
            barman.cmd(&["receive-wal", "--create-slot", "pg"]),
            "barman receive-wal --create-slot",
        );
        let mut receiver = Running::spawn(
            barman.cmd(&["receive-wal", "pg"]),
            barman.home.join("receive-wal.log"),
            "barman receive-wal",
        );
        wait_until(
            "barman receive-wal streaming",
            Duration::from_secs(60),
            || {
                receiver.assert_alive();
                primary
                    .walsender("barman_receive_wal")
                    .filter(|w| w.state == "streaming")
            },
        );
        (barman, receiver)
    }
}

const BARMAN_POLICY: &str = r#"
[[protect]]
user = ["streaming_barman"]

[limits]
max_actions = 100

[[rule]]
name = "unknown-receivers"
application_name = ["!pgnode*"]
action = "terminate"
"#;

#[test]
fn barman_receiver_and_backup_survive_under_protect_by_role_while_a_rogue_goes() {
    let primary = Cluster::primary("barman_primary");
    let (barman, mut receiver) = Barman::receiving(&primary);
    // Barman's setup step: a WAL switch, archived (streamed, then filed by
    // archive-wal), before it takes a backup.
    output(
        barman.cmd(&[
            "switch-wal",
            "--force",
            "--archive",
            "--archive-timeout",
            "60",
            "pg",
        ]),
        "barman switch-wal --archive",
    );
    // A base backup at 64 kB/s: in state `backup` for minutes.
    let mut backup = Running::spawn(
        barman.cmd(&["backup", "pg"]),
        barman.home.join("backup.log"),
        "barman backup",
    );
    let backup_ws = wait_until("barman backup streaming", Duration::from_secs(60), || {
        if let Ok(Some(status)) = backup.child.try_wait() {
            let check = barman.cmd(&["check", "pg"]).output().expect("barman check");
            panic!(
                "barman backup exited ({status}):\n{}\nbarman check pg:\n{}\nbarman.log:\n{}",
                backup.log(),
                String::from_utf8_lossy(&check.stdout),
                std::fs::read_to_string(barman.home.join("barman.log")).unwrap_or_default()
            );
        }
        primary
            .walsender("barman_streaming_backup")
            .filter(|w| w.state == "backup")
    });
    let receiver_ws = primary.walsender("barman_receive_wal").unwrap();
    let rogue = Client::receivewal(&primary, "rogue_copy");
    primary.wait_streaming("rogue_copy");

    let text = config(&primary, "replwarden", "200ms", BARMAN_POLICY);
    let shown = String::from_utf8_lossy(&plan(&primary, &text).stdout).into_owned();
    assert!(
        shown.contains("(user in [streaming_barman]): protects")
            && shown.contains("\"barman_receive_wal\" (user streaming_barman)")
            && shown.contains("\"barman_streaming_backup\" (user streaming_barman)"),
        "plan shows what the protect entry covers:\n{shown}"
    );
    let daemon = Daemon::start(&text, &[]);
    daemon.wait_for("the rogue terminated", Duration::from_secs(30), |e| {
        e["event"] == "action" && e["application_name"] == "rogue_copy"
    });
    // Several more polls, and the rogue's reconnect, with Barman at work.
    std::thread::sleep(Duration::from_secs(8));
    receiver.assert_alive();
    backup.assert_alive();
    let still = primary.walsenders();
    assert!(
        still
            .iter()
            .any(|w| w.pid == receiver_ws.pid && w.backend_start == receiver_ws.backend_start),
        "Barman's receiver is the same process: {:?}",
        still
            .iter()
            .map(|w| &w.application_name)
            .collect::<Vec<_>>()
    );
    assert!(
        still
            .iter()
            .any(|w| w.pid == backup_ws.pid && w.backend_start == backup_ws.backend_start),
        "Barman's backup is the same process"
    );
    for name in ["barman_receive_wal", "barman_streaming_backup", ""] {
        assert!(
            actions_on(&daemon, name).is_empty(),
            "nothing was done to {name:?}: {}",
            daemon.dump()
        );
    }
    assert_no_advice_against(&daemon, "streaming_barman");
    drop(rogue);
}

const LAG_POLICY: &str = r#"
[limits]
max_actions = 100

[[rule]]
name = "generic-lag"
flush_lag = "1s"
action = "terminate"

[[rule]]
name = "generic-replay-lag"
replay_lag = "1s"
action = "terminate"
"#;

#[test]
fn a_generic_lag_rule_leaves_barman_and_an_idle_archiver_alone() {
    let primary = Cluster::primary("lag_primary");
    let (_barman, mut receiver) = Barman::receiving(&primary);
    let _archiver = Client::receivewal(&primary, "wal_archiver");
    primary.wait_streaming("wal_archiver");
    // WAL flows for a while, then the primary goes idle: the receivers'
    // lag columns keep their last values.
    {
        let _pump = Client::wal_pump(&primary);
        std::thread::sleep(Duration::from_secs(5));
    }
    primary.sql("SELECT pg_switch_wal()");
    std::thread::sleep(Duration::from_secs(5));
    let lags = primary.sql(
        "SELECT application_name || ' ' || coalesce(flush_lag::text, 'NULL') || ' ' || coalesce(replay_lag::text, 'NULL') \
         FROM pg_stat_replication ORDER BY 1",
    );
    eprintln!("field: lags on the idle primary:\n{lags}");
    let daemon = Daemon::start(&config(&primary, "replwarden", "200ms", LAG_POLICY), &[]);
    daemon.wait_message("poll done", Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(10));
    assert!(
        daemon.actions().is_empty(),
        "healthy receivers on an idle primary are left alone (lags:\n{lags}):\n{}",
        daemon.dump()
    );
    receiver.assert_alive();
}

// ---------------------------------------------------------------- Patroni

/// etcd on loopback, free ports, its data in `dir`.
fn start_etcd(dir: &Path) -> (Running, u16) {
    let client = free_port();
    let peer = free_port();
    let data = owned_dir(&dir.join("etcd"));
    let mut c = tool("etcd", dir);
    c.args(["--name", "field", "--data-dir"]).arg(&data).args([
        "--listen-client-urls",
        &format!("http://127.0.0.1:{client}"),
        "--advertise-client-urls",
        &format!("http://127.0.0.1:{client}"),
        "--listen-peer-urls",
        &format!("http://127.0.0.1:{peer}"),
        "--initial-advertise-peer-urls",
        &format!("http://127.0.0.1:{peer}"),
        "--initial-cluster",
        &format!("field=http://127.0.0.1:{peer}"),
        "--listen-metrics-urls",
        &format!("http://127.0.0.1:{}", free_port()),
    ]);
    let mut etcd = Running::spawn(c, dir.join("etcd.log"), "etcd");
    wait_until("etcd answering", Duration::from_secs(60), || {
        etcd.assert_alive();
        std::net::TcpStream::connect(("127.0.0.1", client)).ok()
    });
    (etcd, client)
}

/// One Patroni member: its config file and ports.
struct Member {
    name: String,
    config: PathBuf,
    pg_port: u16,
}

fn member(dir: &Path, name: &str, etcd_port: u16) -> Member {
    let pg_port = free_port();
    let api_port = free_port();
    let data = dir.join(name);
    let config = dir.join(format!("{name}.yml"));
    std::fs::write(
        &config,
        format!(
            "scope: field\nname: {name}\n\
             restapi:\n  listen: 127.0.0.1:{api_port}\n  connect_address: 127.0.0.1:{api_port}\n\
             etcd3:\n  hosts: 127.0.0.1:{etcd_port}\n\
             bootstrap:\n  dcs:\n    ttl: 20\n    loop_wait: 2\n    retry_timeout: 5\n    maximum_lag_on_failover: 10485760\n\
             \x20   postgresql:\n      use_pg_rewind: false\n      parameters:\n        wal_level: logical\n        max_wal_senders: 20\n        max_replication_slots: 20\n        wal_keep_size: 128MB\n        fsync: 'off'\n\
             \x20 initdb:\n  - encoding: UTF8\n  - locale: C\n  - auth: trust\n\
             postgresql:\n  listen: 127.0.0.1:{pg_port}\n  connect_address: 127.0.0.1:{pg_port}\n  data_dir: {data}\n  bin_dir: {bin}\n\
             \x20 pgpass: {dir}/{name}.pgpass\n\
             \x20 basebackup:\n  - max-rate: '4M'\n\
             \x20 parameters:\n    unix_socket_directories: '{dir}'\n    shared_buffers: 16MB\n    wal_receiver_status_interval: 1s\n\
             \x20 authentication:\n    superuser:\n      username: postgres\n      password: field\n    replication:\n      username: replicator\n      password: field\n\
             \x20 pg_hba:\n  - local all all trust\n  - host all all 127.0.0.1/32 trust\n  - host replication all 127.0.0.1/32 trust\n",
            data = data.display(),
            dir = dir.display(),
            bin = harness::server_bins()[0].display(),
        ),
    )
    .expect("patroni config");
    owned_dir(dir);
    Member {
        name: name.to_string(),
        config,
        pg_port,
    }
}

fn start_patroni(dir: &Path, m: &Member) -> Running {
    let mut c = tool("patroni", dir);
    c.arg(&m.config);
    Running::spawn(
        c,
        dir.join(format!("{}.log", m.name)),
        &format!("patroni {}", m.name),
    )
}

fn patronictl(dir: &Path, m: &Member, args: &[&str]) -> String {
    let mut c = tool("patronictl", dir);
    c.arg("-c").arg(&m.config).args(args);
    output(c, &format!("patronictl {}", args.join(" ")))
}

/// `psql` on 127.0.0.1:`port` as postgres; `None` when it cannot connect.
fn psql(port: u16, sql: &str) -> Option<String> {
    let out = harness::psql_on(port)
        .args(["-A", "-t", "-c", sql])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn is_primary(port: u16) -> bool {
    psql(port, "SELECT NOT pg_is_in_recovery()").as_deref() == Some("t")
}

/// The walsenders on `port`: (pid, application_name, usename, state).
fn walsenders_on(port: u16) -> Vec<(i32, String, String, String)> {
    psql(
        port,
        "SELECT pid, application_name, coalesce(usename::text, ''), coalesce(state, '') FROM pg_stat_replication",
    )
    .unwrap_or_default()
    .lines()
    .filter(|l| !l.is_empty())
    .map(|l| {
        let f: Vec<&str> = l.split('|').collect();
        (f[0].parse().unwrap(), f[1].to_string(), f[2].to_string(), f[3].to_string())
    })
    .collect()
}

/// The protect entry the README documents for Patroni, and the rule that
/// killed the clone in the field: anything not named like a member.
const PATRONI_POLICY: &str = r#"
[[protect]]
user = ["replicator"]

[limits]
max_actions = 100
reconnect_backoff = "1s"
reconnect_backoff_max = "20s"

[[rule]]
name = "members-only"
application_name = ["!pgnode*"]
action = "terminate"
"#;

#[test]
fn patroni_switchover_is_followed_and_a_reinit_clone_survives() {
    let dir =
        owned_dir(&std::env::temp_dir().join(format!("rw-field-patroni-{}", std::process::id())));
    let _cleanup = Cleanup(dir.clone());
    let (_etcd, etcd_port) = start_etcd(&dir);
    let m1 = member(&dir, "pgnode1", etcd_port);
    let m2 = member(&dir, "pgnode2", etcd_port);
    let mut p1 = start_patroni(&dir, &m1);
    wait_until("pgnode1 leading", Duration::from_secs(120), || {
        p1.assert_alive();
        is_primary(m1.pg_port).then_some(())
    });
    let mut p2 = start_patroni(&dir, &m2);
    wait_until(
        "pgnode2 streaming from pgnode1",
        Duration::from_secs(120),
        || {
            p2.assert_alive();
            walsenders_on(m1.pg_port)
                .into_iter()
                .find(|w| w.1 == "pgnode2" && w.3 == "streaming")
        },
    );
    // The daemon's role, from the shipped script, and a rogue with a role of its own.
    let mut setup = harness::psql_on(m1.pg_port);
    setup
        .arg("-f")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/config/setup.sql"));
    output(setup, "config/setup.sql on the Patroni leader");
    psql(m1.pg_port, "CREATE ROLE rogue_role LOGIN REPLICATION").expect("create rogue_role");

    let conninfo = format!(
        "host=127.0.0.1,127.0.0.1 port={},{} dbname=postgres user=replwarden target_session_attrs=read-write",
        m1.pg_port, m2.pg_port
    );
    let text = format!(
        "[postgres]\nconninfo = \"{conninfo}\"\n\n[daemon]\ninterval = \"200ms\"\n\n{PATRONI_POLICY}"
    );
    // The rogue follows the leader too.
    let rogue_dir = owned_dir(&dir.join("rogue"));
    let rogue = Running::spawn(
        {
            let mut c = tool(
                &harness::bin("pg_receivewal").display().to_string(),
                &rogue_dir,
            );
            c.args(["-D"]).arg(&rogue_dir).args([
                "--no-sync",
                "-d",
                &format!(
                    "host=127.0.0.1,127.0.0.1 port={},{} user=rogue_role application_name=rogue_tool target_session_attrs=read-write",
                    m1.pg_port, m2.pg_port
                ),
            ]);
            c
        },
        dir.join("rogue.log"),
        "pg_receivewal (rogue)",
    );
    let daemon_config = dir.join("replwarden.toml");
    std::fs::write(&daemon_config, &text).unwrap();
    let shown = plan_at(&daemon_config);
    assert!(
        shown.contains("(user in [replicator]): protects")
            && shown.contains("\"pgnode2\" (user replicator)"),
        "plan shows what the protect entry covers:\n{shown}"
    );
    let daemon = Daemon::start(&text, &[]);
    daemon.wait_for(
        "the rogue terminated on pgnode1",
        Duration::from_secs(60),
        |e| e["event"] == "action" && e["application_name"] == "rogue_tool",
    );
    // It comes back (every 5 s): the loop's fix names its own role only.
    let looping = daemon.wait_for("the rogue's reconnect loop", Duration::from_secs(60), |e| {
        e["event"] == "reconnect_loop" && e["application_name"] == "rogue_tool"
    });
    assert_eq!(
        looping["fix_role"], "ALTER ROLE rogue_role NOREPLICATION;",
        "{looping}"
    );
    assert_eq!(
        looping["fix_hba"], "host replication rogue_role 127.0.0.1/32 reject",
        "{looping}"
    );

    // Switchover: the daemon follows the host list to the new leader.
    let mark = daemon.mark();
    patronictl(
        &dir,
        &m1,
        &[
            "switchover",
            "--leader",
            "pgnode1",
            "--candidate",
            "pgnode2",
            "--force",
        ],
    );
    wait_until("pgnode2 leading", Duration::from_secs(120), || {
        is_primary(m2.pg_port).then_some(())
    });
    daemon.wait_for_from(
        mark,
        "the daemon on the new leader",
        Duration::from_secs(120),
        |e| {
            e["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("a different server process"))
                && e["server"]
                    .as_str()
                    .is_some_and(|s| s.ends_with(&format!(":{}", m2.pg_port)))
        },
    );
    daemon.wait_for_from(
        mark,
        "the rogue terminated on pgnode2",
        Duration::from_secs(120),
        |e| e["event"] == "action" && e["application_name"] == "rogue_tool",
    );
    wait_until(
        "pgnode1 streaming from pgnode2",
        Duration::from_secs(120),
        || {
            walsenders_on(m2.pg_port)
                .into_iter()
                .find(|w| w.1 == "pgnode1" && w.3 == "streaming")
        },
    );

    // Reinit pgnode1: Patroni clones it with pg_basebackup as replicator
    // (at `--max-rate=4M`, set in the members' config, so that the clone
    // lasts seconds, not one poll interval: the by-name case below must see it).
    let mark = daemon.mark();
    patronictl(&dir, &m2, &["reinit", "field", "pgnode1", "--force"]);
    let clone = wait_until(
        "the reinit clone on pgnode2",
        Duration::from_secs(60),
        || {
            walsenders_on(m2.pg_port)
                .into_iter()
                .find(|w| w.1 == "pg_basebackup")
        },
    );
    assert_eq!(
        clone.2, "replicator",
        "Patroni clones as its replication role"
    );
    wait_until(
        "pgnode1 streaming again after reinit",
        Duration::from_secs(180),
        || {
            p1.assert_alive();
            walsenders_on(m2.pg_port)
                .into_iter()
                .find(|w| w.1 == "pgnode1" && w.3 == "streaming")
        },
    );
    let after: Vec<Value> = daemon.events().into_iter().skip(mark).collect();
    assert!(
        !after
            .iter()
            .any(|e| e["event"] == "action" && e["application_name"] == "pg_basebackup"),
        "the clone was never acted on: {}",
        daemon.dump()
    );
    for m in [&m1, &m2] {
        assert!(
            actions_on(&daemon, &m.name).is_empty(),
            "member {} untouched",
            m.name
        );
    }
    assert_no_advice_against(&daemon, "replicator");
    drop(daemon);

    // The field's entry, by name, does not cover the clone: the same rule
    // terminates it (why the README says to protect by role).
    let by_name = text.replace(
        "user = [\"replicator\"]",
        "application_name = [\"pgnode*\"]",
    );
    assert_ne!(by_name, text);
    let daemon = Daemon::start(&by_name, &[]);
    daemon.wait_message("poll done", Duration::from_secs(30));
    patronictl(&dir, &m2, &["reinit", "field", "pgnode1", "--force"]);
    daemon.wait_for(
        "the clone terminated under a protect entry by name",
        Duration::from_secs(60),
        |e| e["event"] == "action" && e["application_name"] == "pg_basebackup",
    );
    drop(rogue);
    drop(daemon);
    drop(p2);
    drop(p1);
}

/// `replwarden plan` with the config at `path`.
fn plan_at(path: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_replwarden"))
        .args(["plan", "--config"])
        .arg(path)
        .output()
        .expect("run replwarden plan");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Removes a folder in `Drop` (after the processes using it are gone:
/// declare it first).
struct Cleanup(PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
