//! The systemd side: the shipped units pass `systemd-analyze verify` and keep
//! their security exposure below 2.0, and the daemon speaks the notify
//! protocol (READY only once enforcing, RELOADING/READY, STOPPING, WATCHDOG)
//! to a socket the test listens on.

mod harness;

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use harness::{config, Cluster, Daemon};

/// A copy of `unit` whose ExecStart runs the freshly built binary, so
/// `verify` can check the command exists.
fn unit_copy(unit: &str, dir: &Path) -> std::path::PathBuf {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("systemd")
            .join(unit),
    )
    .unwrap();
    let path = dir.join(unit);
    std::fs::write(
        &path,
        text.replace("/usr/bin/replwarden", env!("CARGO_BIN_EXE_replwarden")),
    )
    .unwrap();
    path
}

#[test]
fn the_units_verify_and_are_hardened() {
    let dir = std::env::temp_dir().join(format!("rw-units-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    unit_copy("replwarden.service", &dir);
    unit_copy("replwarden@.service", &dir);
    for unit in ["replwarden.service", "replwarden@15-main.service"] {
        let path = dir.join(unit);
        let out = Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(&path)
            .output()
            .expect("systemd-analyze (Debian package systemd)");
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success() && said.trim().is_empty(),
            "{unit}: {said}"
        );

        let out = Command::new("systemd-analyze")
            .args(["security", "--offline=yes"])
            .arg(&path)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let score: f64 = text
            .lines()
            .find_map(|l| l.split("Overall exposure level for ").nth(1))
            .and_then(|rest| rest.split(": ").nth(1))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no exposure score in:\n{text}"));
        assert!(score < 2.0, "{unit}: exposure {score} (README records 1.1)");
        let template = std::fs::read_to_string(dir.join("replwarden@.service")).unwrap();
        assert!(template.contains("--config /etc/replwarden/%i.toml"));
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Reads every datagram that arrives within `wait`.
fn drain(socket: &UnixDatagram, wait: Duration) -> Vec<String> {
    let deadline = Instant::now() + wait;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        if let Ok(n) = socket.recv(&mut buf) {
            out.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    out
}

fn wait_datagram(socket: &UnixDatagram, what: &str, timeout: Duration, seen: &mut Vec<String>) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        let batch = drain(socket, Duration::from_millis(100));
        let found = batch.iter().any(|m| m.lines().any(|l| l == what));
        seen.extend(batch);
        if found {
            return;
        }
    }
    panic!("no {what} within {timeout:?}; got {seen:#?}");
}

#[test]
fn the_daemon_speaks_the_notify_protocol() {
    let primary = Cluster::primary("primary");
    primary.stop("fast");
    let socket_path = primary.dir.join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    let mut daemon = Daemon::start_with_env(
        &config(&primary, "replwarden", "200ms", ""),
        &[],
        &[
            ("NOTIFY_SOCKET", socket_path.to_str().unwrap()),
            ("WATCHDOG_USEC", "400000"),
        ],
    );

    // Waiting for the server: the watchdog is fed, READY is not sent.
    let early = drain(&socket, Duration::from_millis(1500));
    assert!(
        early.iter().filter(|m| m.contains("WATCHDOG=1")).count() >= 3,
        "{early:#?}"
    );
    assert!(early.iter().all(|m| !m.contains("READY=1")), "{early:#?}");
    assert!(
        early
            .iter()
            .any(|m| m.starts_with("STATUS=waiting for PostgreSQL")),
        "{early:#?}"
    );

    let mut seen = Vec::new();
    primary.start();
    wait_datagram(&socket, "READY=1", Duration::from_secs(15), &mut seen);
    assert!(
        seen.iter()
            .any(|m| m == "STATUS=enforcing on 0 walsender(s) with 0 rule(s)\n"),
        "the first good poll sets the status: {seen:#?}"
    );

    daemon.signal(libc::SIGHUP);
    let mut reload = Vec::new();
    wait_datagram(&socket, "READY=1", Duration::from_secs(5), &mut reload);
    let reloading = reload
        .iter()
        .position(|m| m.contains("RELOADING=1"))
        .expect("RELOADING=1 before READY=1");
    assert!(reload[reloading].contains("MONOTONIC_USEC="), "{reload:#?}");

    daemon.signal(libc::SIGTERM);
    let mut end = Vec::new();
    wait_datagram(&socket, "STOPPING=1", Duration::from_secs(2), &mut end);
    assert!(daemon
        .wait_exit(Duration::from_secs(2))
        .is_some_and(|s| s.success()));
}
