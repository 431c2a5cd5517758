//! Connection exhaustion (issue 21 item 1): a role that can log in fills
//! every ordinary connection slot while a rogue streams (walsenders use
//! `max_wal_senders`, not those slots). On PostgreSQL 16+ the daemon's role,
//! made by `config/setup.sql`, holds `pg_use_reserved_connections` and gets
//! in through `reserved_connections`; on 13-15 (here 15) it cannot, and says
//! so loudly and repeatedly: a warning at once and again a minute later, the
//! `replwarden_locked_out` metric and the systemd status line, until a slot
//! frees up and it enforces again.

mod harness;

use std::os::unix::net::UnixDatagram;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use harness::{config, free_port, http_get, server_bins, wait_until, Client, Cluster, Daemon};

const BLOCK: &str = r#"
[[rule]]
name = "no-rogue"
application_name = ["rogue_*"]
action = "terminate"
"#;

/// Idle sessions of a plain role holding connection slots, ended in `Drop`.
struct Fillers(Vec<Child>);

impl Drop for Fillers {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Opens sessions as `filler` until the server refuses one for want of a
/// slot; returns them and the refusal.
fn fill_slots(cluster: &Cluster) -> (Fillers, String) {
    cluster.sql("CREATE ROLE filler LOGIN");
    let mut fillers = Fillers(Vec::new());
    for n in 1..=200 {
        let mut child = Command::new("psql")
            .args([
                "-X",
                "-q",
                "-h",
                "127.0.0.1",
                "-U",
                "filler",
                "-d",
                "postgres",
                "-p",
            ])
            .arg(cluster.port.to_string())
            .args(["-c", "SELECT pg_sleep(600)"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start psql");
        // Either it holds a slot (seen in pg_stat_activity) or it was refused.
        let refused = wait_until(
            "a filler session or its refusal",
            Duration::from_secs(30),
            || {
                if let Ok(Some(_)) = child.try_wait() {
                    return Some(true);
                }
                let held: usize = cluster
                    .sql("SELECT count(*) FROM pg_stat_activity WHERE usename = 'filler'")
                    .parse()
                    .unwrap();
                (held == n).then_some(false)
            },
        );
        if refused {
            let out = child.wait_with_output().expect("psql output");
            let text = String::from_utf8_lossy(&out.stderr).into_owned();
            assert!(
                text.contains("connection slots are reserved") || text.contains("too many clients"),
                "filler {n} failed for another reason: {text}"
            );
            return (fillers, text);
        }
        fillers.0.push(child);
    }
    panic!("200 sessions and no refusal: max_connections was not applied");
}

/// A primary of `server_bin` with few slots, a rogue streaming, every
/// ordinary slot taken.
fn exhausted(server_bin: &std::path::Path, reserved: &str) -> (Cluster, Client, Fillers) {
    let primary = Cluster::primary_in(server_bin, "primary");
    primary.append_conf(&format!(
        "max_connections = 20\nsuperuser_reserved_connections = 3\n{reserved}"
    ));
    primary.restart();
    let rogue = Client::recvlogical(&primary, "rogue_stream");
    primary.wait_streaming("rogue_stream");
    let (fillers, refusal) = fill_slots(&primary);
    eprintln!(
        "lockout: slots filled ({} sessions): {refusal}",
        fillers.0.len()
    );
    (primary, rogue, fillers)
}

fn datagrams(socket: &UnixDatagram, wait: Duration) -> Vec<String> {
    let deadline = Instant::now() + wait;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    socket
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    while Instant::now() < deadline {
        if let Ok(n) = socket.recv(&mut buf) {
            out.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    out
}

fn metric(port: u16, name: &str) -> Option<String> {
    http_get(port, "/metrics")
        .lines()
        .find(|l| l.starts_with(&format!("{name} ")))
        .map(|l| l.split_whitespace().nth(1).unwrap_or("").to_string())
}

#[test]
fn locked_out_on_15_says_so_repeatedly_and_enforces_once_a_slot_frees() {
    let bin = server_bins().remove(0);
    let (primary, _rogue, _fillers) = exhausted(&bin, "");
    assert_eq!(
        primary.major(),
        15,
        "the default binaries are PostgreSQL 15"
    );
    let rogue_pid = primary.walsender("rogue_stream").unwrap().pid;
    let port = free_port();
    let socket_path = primary.dir.join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    let text = format!(
        "{}\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n",
        config(&primary, "replwarden", "200ms", BLOCK)
    );
    let daemon = Daemon::start_with_env(
        &text,
        &["--log-level", "info"],
        &[("NOTIFY_SOCKET", socket_path.to_str().unwrap())],
    );
    let first = daemon.wait_message("locked out of PostgreSQL", Duration::from_secs(30));
    assert_eq!(first["level"], "WARN", "{first}");
    assert!(
        first["reason"]
            .as_str()
            .unwrap()
            .contains("reserved for non-replication superuser"),
        "{first}"
    );
    assert!(first["fix"].as_str().unwrap().contains("13-15"), "{first}");
    let status = wait_until(
        "the LOCKED OUT status line",
        Duration::from_secs(30),
        || {
            datagrams(&socket, Duration::from_millis(200))
                .into_iter()
                .find(|m| m.starts_with("STATUS=LOCKED OUT of PostgreSQL"))
        },
    );
    assert!(status.contains("NOT enforced"), "{status}");
    wait_until("replwarden_locked_out 1", Duration::from_secs(10), || {
        (metric(port, "replwarden_locked_out").as_deref() == Some("1")).then_some(())
    });
    // Not only the first time: again a minute later, at warning level.
    let mark = daemon.mark();
    let again = daemon.wait_for_from(
        mark,
        "the lock-out warning again",
        Duration::from_secs(120),
        |e| {
            e["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("locked out of PostgreSQL"))
        },
    );
    assert_eq!(again["level"], "WARN", "{again}");
    assert_eq!(
        primary.walsender("rogue_stream").map(|w| w.pid),
        Some(rogue_pid),
        "nothing could be enforced while locked out"
    );

    // A slot frees up: the daemon gets in and enforces.
    // (pg_sleep does not notice its client go: end the session on the server.)
    primary.sql(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'filler' ORDER BY pid LIMIT 1",
    );
    daemon.wait_message(
        "no longer locked out of PostgreSQL",
        Duration::from_secs(60),
    );
    daemon.wait_for("the rogue terminated", Duration::from_secs(30), |e| {
        e["event"] == "action" && e["application_name"] == "rogue_stream"
    });
    assert_eq!(metric(port, "replwarden_locked_out").as_deref(), Some("0"));
}

#[test]
fn on_16_and_newer_the_reserved_slot_keeps_the_daemon_in() {
    if std::env::var_os("REPLWARDEN_PG_BINS").is_none() {
        eprintln!(
            "lockout: REPLWARDEN_PG_BINS not set: no 16+ server to test (scripts/test.sh sets it)"
        );
        return;
    }
    let bin = server_bins()
        .into_iter()
        .find(|b| {
            let c = Command::new(b.join("postgres"))
                .arg("--version")
                .output()
                .unwrap();
            let v = String::from_utf8_lossy(&c.stdout).into_owned();
            v.split_whitespace()
                .nth(2)
                .and_then(|v| v.split('.').next()?.parse::<u32>().ok())
                .is_some_and(|m| m >= 16)
        })
        .expect("REPLWARDEN_PG_BINS has no PostgreSQL 16 or newer");
    let (primary, _rogue, _fillers) = exhausted(&bin, "reserved_connections = 2\n");
    assert!(primary.major() >= 16);
    let daemon = Daemon::start(&config(&primary, "replwarden", "200ms", BLOCK), &[]);
    daemon.wait_message("connected to PostgreSQL", Duration::from_secs(30));
    daemon.wait_for("the rogue terminated", Duration::from_secs(30), |e| {
        e["event"] == "action"
            && e["application_name"] == "rogue_stream"
            && e["outcome"] == "terminated"
    });
    assert_eq!(daemon.count_messages("locked out"), 0, "{}", daemon.dump());
    eprintln!(
        "lockout: PostgreSQL {} let the daemon in",
        primary.version()
    );
}
