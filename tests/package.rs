//! The Debian package: built with cargo-deb from the metadata in
//! Cargo.toml, then inspected — binary, units, the example config as a
//! conffile, the setup script, manual pages, completions, and the postinst
//! that creates the user — and (as root) installed for real next to a
//! cluster made the Debian way, following the README's install steps.

mod harness;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

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

/// The .deb, built once per test run in its own target folder (the outer
/// `cargo test` holds the default one).
fn deb() -> &'static Path {
    static DEB: OnceLock<PathBuf> = OnceLock::new();
    DEB.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
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
        deb
    })
}

#[test]
fn the_debian_package_installs_what_an_operator_needs() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let target = root.join("target/package");
    let deb = deb();
    let contents = run(
        Command::new("dpkg-deb").arg("--contents").arg(deb),
        "dpkg-deb --contents",
    );
    for path in [
        "./usr/bin/replwarden",
        "./etc/replwarden/replwarden.toml",
        "./usr/lib/systemd/system/replwarden.service",
        "./usr/lib/systemd/system/replwarden@.service",
        "./usr/share/replwarden/setup.sql",
        "./usr/share/doc/replwarden/README.md",
        "./usr/share/doc/replwarden/changelog.Debian.gz",
        "./usr/share/man/man8/replwarden.8.gz",
        "./usr/share/man/man5/replwarden.toml.5.gz",
        "./usr/share/bash-completion/completions/replwarden",
        "./usr/share/zsh/vendor-completions/_replwarden",
        "./usr/share/fish/vendor_completions.d/replwarden.fish",
        "./usr/share/lintian/overrides/replwarden",
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
            .arg(deb)
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
            .arg(deb)
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

    // The manual pages say what --help and the key table say.
    let page = |path: &str| {
        run(
            Command::new("gzip")
                .args(["-dc", "--"])
                .arg(extracted.join(path)),
            "gzip -dc",
        )
    };
    let program = page("usr/share/man/man8/replwarden.8.gz");
    for needle in [
        ".SH COMMANDS",
        "replwarden plan",
        ".SH SIGNALS",
        "SIGHUP",
        ".SH \"EXIT STATUS\"",
        "78",
        ".SH FILES",
        "/etc/replwarden/replwarden.toml",
        ".SH ENVIRONMENT",
        "JOURNAL_STREAM",
    ] {
        assert!(
            program.contains(needle),
            "replwarden(8) lacks {needle:?}:\n{program}"
        );
    }
    let config = page("usr/share/man/man5/replwarden.toml.5.gz");
    for key in replwarden::keys::KEYS {
        assert!(
            config.contains(&format!("\\fB{}\\fR", key.name)),
            "replwarden.toml(5) lacks {}.{}:\n{config}",
            key.section,
            key.name
        );
    }
    for (path, needle) in [
        (
            "usr/share/bash-completion/completions/replwarden",
            "complete -F",
        ),
        (
            "usr/share/zsh/vendor-completions/_replwarden",
            "#compdef replwarden",
        ),
        (
            "usr/share/fish/vendor_completions.d/replwarden.fish",
            "complete -c replwarden",
        ),
    ] {
        let text = std::fs::read_to_string(extracted.join(path)).unwrap();
        assert!(
            text.contains(needle) && text.contains("plan"),
            "{path}:\n{text}"
        );
    }
}

/// A cluster made with `pg_createcluster`, dropped (stopped first) in `Drop`.
struct DebianCluster {
    name: String,
}

impl Drop for DebianCluster {
    fn drop(&mut self) {
        let _ = Command::new("pg_dropcluster")
            .args(["--stop", "15", &self.name])
            .output();
    }
}

/// The package removed and purged in `Drop` if the test stops half-way.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = Command::new("dpkg").args(["-P", "replwarden"]).output();
    }
}

/// The files (not folders) the package ships, as absolute paths.
fn shipped_files(deb: &Path) -> Vec<PathBuf> {
    run(
        Command::new("dpkg-deb").arg("--contents").arg(deb),
        "dpkg-deb --contents",
    )
    .lines()
    .filter(|l| l.starts_with('-'))
    .filter_map(|l| l.split_whitespace().last())
    .map(|p| PathBuf::from(p.trim_start_matches('.')))
    .collect()
}

/// The README's "Install on a database host", executed literally as root
/// (as CI runs): `dpkg -i`, a cluster the Debian way, setup.sql, the peer
/// line in pg_hba.conf, the conninfo's port edited, `check`, then `plan` as
/// the service user. Then lintian finds no errors, and `dpkg -r` keeps only
/// the conffile, which `dpkg -P` removes too.
#[test]
fn the_package_installs_and_plans_against_a_debian_cluster() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!(
            "the_package_installs_and_plans_against_a_debian_cluster: skipped, needs root (dpkg -i, pg_createcluster); CI runs it as root"
        );
        return;
    }
    let deb = deb();

    let lint = Command::new("lintian")
        .args(["--allow-root", "--no-tag-display-limit"])
        .arg(deb)
        .output()
        .expect("lintian (scripts/setup.sh installs it)");
    let lint = String::from_utf8_lossy(&lint.stdout).into_owned();
    // Warnings too: the two that apply are overridden, with the reasons,
    // in debian/lintian-overrides.
    assert!(
        !lint
            .lines()
            .any(|l| l.starts_with("E:") || l.starts_with("W:")),
        "lintian errors or warnings:\n{lint}"
    );

    // A cluster the Debian way, on a free port.
    let port = harness::free_port();
    let cluster = DebianCluster {
        name: format!("rwpkg{}", std::process::id()),
    };
    run(
        Command::new("pg_createcluster").args(["15", &cluster.name, "--port", &port.to_string()]),
        "pg_createcluster",
    );
    run(
        Command::new("pg_ctlcluster").args(["15", &cluster.name, "start"]),
        "pg_ctlcluster start",
    );

    // 1. The package.
    let installed = Installed;
    run(Command::new("dpkg").arg("-i").arg(deb), "dpkg -i");
    let files = shipped_files(deb);
    for file in &files {
        assert!(file.exists(), "{} not installed", file.display());
    }
    run(
        Command::new("getent").args(["passwd", "replwarden"]),
        "the replwarden system user",
    );

    // 2. The role, and the peer line before broader ones.
    let psql = |args: &[&str]| {
        run(
            Command::new("runuser")
                .args(["-u", "postgres", "--", "psql"])
                .args(["-p", &port.to_string(), "-d", "postgres"])
                .args(args),
            "psql as postgres",
        )
    };
    psql(&["-f", "/usr/share/replwarden/setup.sql"]);
    let hba = PathBuf::from(format!("/etc/postgresql/15/{}/pg_hba.conf", cluster.name));
    let old = std::fs::read_to_string(&hba).unwrap();
    std::fs::write(&hba, format!("local postgres replwarden peer\n{old}")).unwrap();
    psql(&["-c", "SELECT pg_reload_conf();"]);

    // 3. The config: the shipped conninfo, with this cluster's port.
    let config = Path::new("/etc/replwarden/replwarden.toml");
    let shipped = std::fs::read_to_string(config).unwrap();
    assert!(shipped.contains("port=5432"), "{shipped}");
    std::fs::write(
        config,
        shipped.replace("port=5432", &format!("port={port}")),
    )
    .unwrap();
    let check = run(
        Command::new("replwarden").args(["check", "--config", "/etc/replwarden/replwarden.toml"]),
        "replwarden check",
    );
    assert!(check.contains("rule(s):"), "{check}");

    // 4. Verify with plan, as the service user.
    let plan = run(
        Command::new("runuser").args([
            "-u",
            "replwarden",
            "--",
            "replwarden",
            "plan",
            "--config",
            "/etc/replwarden/replwarden.toml",
        ]),
        "runuser -u replwarden -- replwarden plan",
    );
    assert!(plan.contains("connected as replwarden"), "{plan}");

    // Remove keeps the conffile only; purge removes it too.
    run(Command::new("dpkg").args(["-r", "replwarden"]), "dpkg -r");
    let left: Vec<_> = files.iter().filter(|f| f.exists()).collect();
    assert_eq!(left, [config], "dpkg -r leaves only the conffile");
    run(Command::new("dpkg").args(["-P", "replwarden"]), "dpkg -P");
    let left: Vec<_> = files.iter().filter(|f| f.exists()).collect();
    assert!(left.is_empty(), "dpkg -P left {left:?}");
    assert!(
        !Path::new("/etc/replwarden").exists(),
        "dpkg -P left /etc/replwarden"
    );
    drop(installed);
    drop(cluster);
}
