//! Renders the manual pages replwarden(8) and replwarden.toml(5) and the
//! bash, zsh and fish completions from the same definitions `--help` and the
//! loader use (`src/cli.rs`, `src/keys.rs`, included here), into
//! `target/<profile>/doc-gen/`, where the .deb's assets take them from.
//!
//! A build script rather than a hidden subcommand or an xtask: `cargo deb`
//! runs `cargo build --release` itself and then collects the assets, with no
//! step in between to run anything else, so only a build script has the
//! files in place. It writes next to the binary (outside `OUT_DIR`, whose
//! name carries a hash) because cargo-deb resolves `target/release/...`
//! asset paths to the real target folder.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::CommandFactory;
use clap_mangen::roff::{bold, italic, roman, Roff};

#[allow(dead_code)]
#[path = "src/cli.rs"]
mod cli;
#[allow(dead_code)]
#[path = "src/keys.rs"]
mod keys;

fn main() -> std::io::Result<()> {
    println!("cargo:rerun-if-changed=src/cli.rs");
    println!("cargo:rerun-if-changed=src/keys.rs");
    println!("cargo:rerun-if-changed=build.rs");
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    // OUT_DIR is <target>/<profile>/build/replwarden-<hash>/out.
    let profile_dir = out_dir
        .ancestors()
        .nth(3)
        .expect("OUT_DIR is 4 levels deep");
    let dir = profile_dir.join("doc-gen");
    std::fs::create_dir_all(&dir)?;

    let mut cmd = cli::Cli::command();
    cmd.build();
    // Compressed here: cargo-deb gzips man pages it copies, not built ones.
    write_if_changed(&dir.join("replwarden.8.gz"), &gzip(&program_page(&cmd)?)?)?;
    write_if_changed(&dir.join("replwarden.toml.5.gz"), &gzip(&config_page())?)?;
    for (shell, file) in [
        (clap_complete::Shell::Bash, "replwarden.bash"),
        (clap_complete::Shell::Zsh, "_replwarden"),
        (clap_complete::Shell::Fish, "replwarden.fish"),
    ] {
        let mut text = Vec::new();
        clap_complete::generate(shell, &mut cmd, "replwarden", &mut text);
        write_if_changed(&dir.join(file), &text)?;
    }
    Ok(())
}

/// `gzip -9n`: best compression, no name or time in the header.
fn gzip(data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut encoder = flate2::GzBuilder::new().write(Vec::new(), flate2::Compression::best());
    encoder.write_all(data)?;
    encoder.finish()
}

/// Rewrites only on change, so a rebuild does not touch the files' times.
fn write_if_changed(path: &Path, content: &[u8]) -> std::io::Result<()> {
    if std::fs::read(path).is_ok_and(|old| old == content) {
        return Ok(());
    }
    std::fs::File::create(path)?.write_all(content)
}

/// A tagged paragraph per (term, meaning).
fn tagged(roff: &mut Roff, items: impl IntoIterator<Item = (String, String)>) {
    for (term, meaning) in items {
        roff.control("TP", [])
            .text([bold(term)])
            .text([roman(meaning)]);
    }
}

fn program_page(cmd: &clap::Command) -> std::io::Result<Vec<u8>> {
    let man = clap_mangen::Man::new(cmd.clone()).section("8");
    let mut out = Vec::new();
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    man.render_synopsis_section(&mut out)?;
    man.render_description_section(&mut out)?;
    man.render_options_section(&mut out)?;

    let mut roff = Roff::new();
    roff.control("SH", ["COMMANDS"]);
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        let options: Vec<String> = sub
            .get_arguments()
            .filter(|a| !a.is_global_set() && a.get_long().is_some_and(|l| l != "help"))
            .map(|a| {
                let long = a.get_long().unwrap_or_default();
                match a.get_short() {
                    Some(s) => format!("[-{s}|--{long}{}]", value_hint(a)),
                    None => format!("[--{long}{}]", value_hint(a)),
                }
            })
            .collect();
        roff.control("TP", []).text([
            bold(format!("replwarden {}", sub.get_name())),
            roman(format!(" {}", options.join(" "))),
        ]);
        roff.text([roman(
            sub.get_about().map(|a| a.to_string()).unwrap_or_default(),
        )]);
        for arg in sub.get_arguments().filter(|a| !a.is_global_set()) {
            let Some(long) = arg.get_long().filter(|l| *l != "help") else {
                continue;
            };
            let mut help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
            if let Some(default) = arg
                .get_default_values()
                .first()
                .filter(|_| arg.get_action().takes_values())
            {
                help = format!(
                    "{}. Default: {}.",
                    help.trim_end_matches('.'),
                    default.to_string_lossy()
                )
                .trim()
                .to_string();
            }
            roff.control("RS", [])
                .control("TP", [])
                .text([bold(format!("--{long}")), roman(value_hint(arg))]);
            roff.text([roman(help)]).control("RE", []);
        }
    }
    roff.control("SH", ["SIGNALS"]);
    tagged(
        &mut roff,
        cli::SIGNALS
            .iter()
            .map(|(s, m)| (s.to_string(), format!("{m}."))),
    );
    roff.control("SH", ["EXIT STATUS"]);
    tagged(
        &mut roff,
        cli::EXIT_CODES
            .iter()
            .map(|(c, m)| (c.to_string(), format!("{m}."))),
    );
    roff.control("SH", ["FILES"]);
    tagged(
        &mut roff,
        cli::FILES
            .iter()
            .map(|(f, m)| (f.to_string(), format!("{m}."))),
    );
    roff.control("SH", ["ENVIRONMENT"]);
    tagged(
        &mut roff,
        cli::ENVIRONMENT
            .iter()
            .map(|(v, m)| (v.to_string(), format!("{m}."))),
    );
    roff.control("SH", ["SEE ALSO"]);
    roff.text([
        bold("replwarden.toml"),
        roman("(5), "),
        bold("journalctl"),
        roman("(1), "),
        bold("pg_createcluster"),
        roman("(1), /usr/share/doc/replwarden/README.md"),
    ]);
    roff.to_writer(&mut out)?;
    man.render_version_section(&mut out)?;
    Ok(out)
}

fn value_hint(arg: &clap::Arg) -> String {
    match arg.get_value_names() {
        Some(names) if arg.get_num_args().is_some_and(|n| n.takes_values()) => {
            format!(
                " {}",
                names
                    .iter()
                    .map(|n| n.as_str())
                    .collect::<Vec<_>>()
                    .join(" ")
            )
        }
        _ => String::new(),
    }
}

fn config_page() -> Vec<u8> {
    let mut roff = Roff::new();
    roff.control(
        "TH",
        [
            "replwarden.toml",
            "5",
            "",
            concat!("replwarden ", env!("CARGO_PKG_VERSION")),
        ],
    );
    roff.control("SH", ["NAME"]);
    roff.text([roman("replwarden.toml - configuration of replwarden(8)")]);
    roff.control("SH", ["SYNOPSIS"]);
    roff.text([italic(cli::DEFAULT_CONFIG)]);
    roff.control("SH", ["DESCRIPTION"]);
    roff.text([roman(
        "A TOML file of tables. Durations are strings with a unit (\"250ms\", \"30s\", \"5m\", \"1h 30m\"); \
a bare number is refused. Sizes are strings like \"512MB\" or \"1GiB\" (kB, MB, GB, TB are powers of 1024, as in \
PostgreSQL). Unknown keys are errors. Check a file with replwarden check --config PATH; the running daemon \
reloads it on SIGHUP, all or nothing.",
    )]);
    roff.control("PP", []);
    roff.text([roman(
        "Each [[rule]] matches walsenders by its matchers (every matcher given must match; a value matches \
if it matches any positive pattern, or there is none, and no ! pattern) and acts when all its conditions have held \
for grace; a rule without conditions is a block rule: matching is the offence. A NULL column never satisfies a \
condition.",
    )]);
    let mut section = "";
    for key in keys::KEYS {
        if key.section != section {
            section = key.section;
            let heading = match section {
                "rule" => "[[rule]]".to_string(),
                "slot_rule" => "[[slot_rule]]".to_string(),
                "protect" => "[protect] (or [[protect]])".to_string(),
                s => format!("[{s}]"),
            };
            roff.control("SH", [heading.as_str()]);
        }
        roff.control("TP", []).text([
            bold(key.name),
            roman(format!(" (default: {})", key.default)),
        ]);
        roff.text([roman(key.meaning)]);
    }
    roff.control("SH", ["EXAMPLE"]);
    roff.text([roman(
        "/usr/share/doc/replwarden/README.md and the shipped ",
    )])
    .text([italic(cli::DEFAULT_CONFIG)])
    .text([roman(", an annotated example.")]);
    roff.control("SH", ["SEE ALSO"]);
    roff.text([bold("replwarden"), roman("(8)")]);
    roff.render().into_bytes()
}
