//! The README's first command, `scripts/demo.sh`, does what the README says:
//! the rogue client is terminated within seconds and the standby is not.

use std::net::TcpListener;
use std::process::Command;

#[test]
fn the_demo_terminates_the_rogue_client_and_cleans_up() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
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
