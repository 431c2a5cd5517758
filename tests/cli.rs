//! The command line without a server: `check`, exit codes, `--help`.

use std::process::{Command, Output};

fn replwarden(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_replwarden"))
        .args(args)
        .output()
        .expect("run replwarden")
}

fn temp_config(name: &str, text: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("rw-cli-{}-{name}.toml", std::process::id()));
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn check_summarises_the_shipped_example() {
    let out = replwarden(&["check", "--config", "config/replwarden.toml"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.starts_with("config/replwarden.toml: OK\n"), "{text}");
    assert!(text.contains("4 rule(s):"), "{text}");
    assert!(text.contains(
        "2. reporting-replica-too-far-behind: terminate walsenders with application_name in [reporting_*] \
         when replay_lag > 5m and replay_lag_bytes > 1.0 GiB for 2m"
    ), "{text}");
    assert!(text.contains("1. no-rogue-tools: terminate walsenders with application_name in [rogue_*, adhoc_*] (blocked: matching is the offence)"), "{text}");
}

#[test]
fn check_reports_every_error_and_exits_78() {
    let path = temp_config(
        "bad",
        "[daemon]\ninterval = \"0s\"\n[[rule]]\nname = \"x\"\nuser = [\"a\"]\nreplay_lag = \"5\"\n",
    );
    let out = replwarden(&["check", "--config", path.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert!(err.contains("2 errors in config"), "{err}");
    assert!(
        err.contains(":2:12: daemon.interval: must be greater than zero"),
        "{err}"
    );
    assert!(
        err.contains(":6:14: rule[1].replay_lag: \"5\" has no unit"),
        "{err}"
    );
    std::fs::remove_file(path).unwrap();
}

#[test]
fn a_missing_file_is_a_config_error_and_a_password_is_never_printed() {
    let out = replwarden(&["check", "--config", "/nonexistent/replwarden.toml"]);
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("/nonexistent/replwarden.toml: cannot read config file"));

    let path = temp_config(
        "secret",
        "[postgres]\nconninfo = \"host=db.example user=rw password=s3cret\"\n",
    );
    let out = replwarden(&["check", "--config", path.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        text.contains("connect: host=db.example port=5432 user=rw password=<hidden>"),
        "{text}"
    );
    assert!(!text.contains("s3cret"));
    std::fs::remove_file(path).unwrap();
}

#[test]
fn help_teaches_the_commands_and_exit_codes() {
    let out = replwarden(&["--help"]);
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in ["run", "check", "plan", "SIGHUP", "78 invalid config"] {
        assert!(text.contains(needle), "--help lacks {needle:?}:\n{text}");
    }
    assert_eq!(replwarden(&["run", "--bogus"]).status.code(), Some(2));
}
