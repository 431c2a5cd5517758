//! The Debian package: built with cargo-deb from the metadata in
//! Cargo.toml, then inspected — binary, units, the example config as a
//! conffile, the setup script, and the postinst that creates the user.

use std::path::{Path, PathBuf};
use std::process::Command;

fn run(cmd: &mut Command, what: &str) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `cargo-deb`, installed into `target/tools` on first use if it is not on PATH.
fn cargo_deb(root: &Path) -> PathBuf {
    if Command::new("cargo-deb")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return PathBuf::from("cargo-deb");
    }
    let tools = root.join("target/tools");
    let installed = tools.join("bin/cargo-deb");
    if !installed.exists() {
        run(
            Command::new(env!("CARGO"))
                .args(["install", "cargo-deb", "--locked", "--root"])
                .arg(&tools),
            "cargo install cargo-deb",
        );
    }
    installed
}

#[test]
fn the_debian_package_installs_what_an_operator_needs() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    // Its own target folder: the outer `cargo test` holds the default one.
    let target = root.join("target/package");
    let out_dir = target.join("debian");
    let _ = std::fs::remove_dir_all(&out_dir);
    let built = run(
        Command::new(cargo_deb(root))
            .current_dir(root)
            .env("CARGO_TARGET_DIR", &target)
            .args(["--locked", "--output"])
            .arg(&out_dir),
        "cargo deb",
    );
    let deb = PathBuf::from(built.trim().lines().last().unwrap_or_default());
    assert!(
        deb.extension().is_some_and(|e| e == "deb"),
        "cargo deb printed {built}"
    );

    let contents = run(
        Command::new("dpkg-deb").arg("--contents").arg(&deb),
        "dpkg-deb --contents",
    );
    for path in [
        "./usr/bin/replwarden",
        "./etc/replwarden/replwarden.toml",
        "./usr/lib/systemd/system/replwarden.service",
        "./usr/lib/systemd/system/replwarden@.service",
        "./usr/share/replwarden/setup.sql",
        "./usr/share/doc/replwarden/README.md",
    ] {
        assert!(
            contents.lines().any(|l| l.ends_with(path)),
            "{path} missing from:\n{contents}"
        );
    }
    assert!(
        contents
            .lines()
            .any(|l| l.starts_with("-rwxr-xr-x") && l.ends_with("./usr/bin/replwarden")),
        "{contents}"
    );

    let control = target.join("debian/control");
    let _ = std::fs::remove_dir_all(&control);
    run(
        Command::new("dpkg-deb")
            .arg("--control")
            .arg(&deb)
            .arg(&control),
        "dpkg-deb --control",
    );
    let conffiles = std::fs::read_to_string(control.join("conffiles")).unwrap();
    assert!(
        conffiles
            .lines()
            .any(|l| l == "/etc/replwarden/replwarden.toml"),
        "{conffiles}"
    );
    let postinst = std::fs::read_to_string(control.join("postinst")).unwrap();
    assert!(postinst.contains("adduser --system --group"), "{postinst}");
    assert!(
        !postinst.contains("#DEBHELPER#"),
        "cargo-deb fills in the systemd fragment"
    );
    let fields = std::fs::read_to_string(control.join("control")).unwrap();
    assert!(fields.contains("Package: replwarden"), "{fields}");
    assert!(
        fields.contains("Depends:") && fields.contains("adduser"),
        "{fields}"
    );

    // The packaged config is the tested example, and the binary runs.
    let extracted = target.join("debian/root");
    let _ = std::fs::remove_dir_all(&extracted);
    run(
        Command::new("dpkg-deb")
            .arg("--extract")
            .arg(&deb)
            .arg(&extracted),
        "dpkg-deb --extract",
    );
    let check = run(
        Command::new(extracted.join("usr/bin/replwarden"))
            .args(["check", "--config"])
            .arg(extracted.join("etc/replwarden/replwarden.toml")),
        "the packaged binary checks the packaged config",
    );
    assert!(check.contains("4 rule(s):"), "{check}");
}
