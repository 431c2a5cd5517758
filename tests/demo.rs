//! The README's first command, `scripts/demo.sh`, does what the README says:
//! the rogue client is terminated within seconds and the standby is not.

use std::net::TcpListener;
use std::process::Command;

/// A free port whose successor is free too (the demo's primary and standby),
/// below the ephemeral range: a port the kernel handed out (bind to port 0)
/// often has its successor taken by an outgoing connection on a busy machine.
fn two_free_ports() -> u16 {
    let free = |p: u16| TcpListener::bind(("127.0.0.1", p)).is_ok();
    let offset = (std::process::id() % 5000) as u16 * 2;
    (0..5000u16)
        .map(|i| 20000 + (offset + 2 * i) % 10000)
        .find(|&p| free(p) && free(p + 1))
        .expect("two adjacent free ports between 20000 and 30000")
}

#[test]
fn the_demo_terminates_the_rogue_client_and_cleans_up() {
    let port = two_free_ports();
    let out = Command::new("bash")
        .arg("scripts/demo.sh")
        .env("DEMO_SECONDS", "6")
        .env("DEMO_PORT", port.to_string())
        .env("REPLWARDEN_BIN", env!("CARGO_BIN_EXE_replwarden"))
        .output()
        .expect("run scripts/demo.sh");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    let signalled: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("walsender terminated"))
        .collect();
    assert!(!signalled.is_empty(), "{text}");
    assert!(
        signalled
            .iter()
            .all(|l| l.contains("application_name=rogue_receiver")),
        "{text}"
    );
    assert!(text.contains("demo: stopped and cleaned up"), "{text}");
}
