//! `scripts/setup.sh`, the machine set-up the README's two commands and CI
//! run first: on a ready machine it changes nothing and says nothing; as an
//! ordinary user it prints the sudo commands for what is missing and stops
//! with exit code 2. (Installing as root is what CI's run of it proves.)

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn setup(path: Option<&Path>) -> Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/setup.sh");
    let mut cmd = Command::new("/bin/bash");
    cmd.arg(script);
    if let Some(dir) = path {
        cmd.env_clear().env("PATH", dir).env("HOME", dir);
    }
    cmd.output().expect("run scripts/setup.sh")
}

/// A folder of stand-ins: `id` says uid 1000, `apt-get` and `cargo` exist;
/// every other probed command is missing.
fn user_without_packages() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rw-setup-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for (name, body) in [
        ("id", "#!/bin/sh\necho 1000\n"),
        ("apt-get", "#!/bin/sh\nexit 0\n"),
        ("cargo", "#!/bin/sh\nexit 0\n"),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, body).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    dir
}

#[test]
fn as_a_user_it_prints_the_sudo_command_and_exits_2() {
    let dir = user_without_packages();
    let out = setup(Some(&dir));
    let _ = std::fs::remove_dir_all(&dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("sudo apt-get update && sudo apt-get install -y --no-install-recommends "),
        "{stderr}"
    );
    for package in [
        "postgresql-common",
        "npm",
        "jq",
        "lintian",
        "etcd-server",
        "faketime",
    ] {
        assert!(
            last.split_whitespace().any(|w| w == package),
            "{package} missing from: {last}"
        );
    }
    assert!(
        stderr.contains("create_main_cluster = false"),
        "PostgreSQL without a default cluster: {stderr}"
    );
}

/// Here (root, and as CI has run it) everything is installed: nothing to do,
/// so no apt-get at all.
#[test]
fn on_a_ready_machine_it_does_nothing() {
    let out = setup(None);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout.is_empty() && out.stderr.is_empty(), "{out:?}");
}
