//! Logging to the journal: when stderr is the journal (`JOURNAL_STREAM`
//! names it), `run` speaks journald's native protocol, so each event field
//! is a journal field. The journal here is a Unix datagram socket the test
//! binds and mounts over `/run/systemd/journal/socket` in a private mount
//! namespace of the daemon (`unshare -m`, so root only); the datagrams are
//! parsed as journald parses them.

mod harness;

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use harness::{config, Client, Cluster};

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// One journal entry: `NAME=value\n`, or `NAME\n` + 64-bit little-endian
/// length + value + `\n` for values with a newline.
fn parse_entry(mut data: &[u8]) -> HashMap<String, String> {
    let mut fields = HashMap::new();
    while !data.is_empty() {
        let end = data.iter().position(|&b| b == b'\n').unwrap_or(data.len());
        let line = &data[..end];
        if let Some(eq) = line.iter().position(|&b| b == b'=') {
            fields.insert(
                String::from_utf8_lossy(&line[..eq]).into_owned(),
                String::from_utf8_lossy(&line[eq + 1..]).into_owned(),
            );
            data = &data[(end + 1).min(data.len())..];
        } else {
            let name = String::from_utf8_lossy(line).into_owned();
            let rest = &data[end + 1..];
            let len = u64::from_le_bytes(rest[..8].try_into().unwrap()) as usize;
            fields.insert(
                name,
                String::from_utf8_lossy(&rest[8..8 + len]).into_owned(),
            );
            data = &rest[(8 + len + 1).min(rest.len())..];
        }
    }
    fields
}

/// A fake journal and the daemon logging to it.
struct Journal {
    dir: PathBuf,
    socket: UnixDatagram,
    daemon: Child,
    stderr: PathBuf,
}

impl Journal {
    /// Starts `replwarden run` with stderr on a file and `JOURNAL_STREAM`
    /// naming it (`stream` overrides the value) and the journal socket
    /// mounted where journald's would be.
    fn start(name: &str, config: &str, extra_args: &[&str], stream: Option<&str>) -> Journal {
        let dir = std::env::temp_dir().join(format!("rw-journal-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let socket_path = dir.join("journal.socket");
        let socket = UnixDatagram::bind(&socket_path).expect("bind the journal socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let config_path = dir.join("replwarden.toml");
        std::fs::write(&config_path, config).unwrap();
        let stderr_path = dir.join("stderr");
        let stderr = std::fs::File::create(&stderr_path).unwrap();
        let meta = stderr.metadata().unwrap();
        let journal_stream = stream
            .map(str::to_string)
            .unwrap_or_else(|| format!("{}:{}", meta.dev(), meta.ino()));
        // A tmpfs over /run hides the host's /run in the daemon's own
        // mount namespace only (unshare makes the mounts private).
        let script = r#"mount -t tmpfs tmpfs /run && mkdir -p /run/systemd/journal &&
touch /run/systemd/journal/socket && mount --bind "$1" /run/systemd/journal/socket &&
shift && exec "$@""#;
        let daemon = Command::new("unshare")
            .args(["-m", "sh", "-c", script, "sh"])
            .arg(&socket_path)
            .arg(env!("CARGO_BIN_EXE_replwarden"))
            .args(["run", "--config"])
            .arg(&config_path)
            .args(extra_args)
            .env("JOURNAL_STREAM", journal_stream)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start replwarden in its own mount namespace");
        Journal {
            dir,
            socket,
            daemon,
            stderr: stderr_path,
        }
    }

    /// Entries received until `pred` holds for one (returned) or `timeout`.
    fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&HashMap<String, String>) -> bool,
    ) -> HashMap<String, String> {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        let mut buf = vec![0u8; 1 << 16];
        while Instant::now() < deadline {
            if let Ok(n) = self.socket.recv(&mut buf) {
                let entry = parse_entry(&buf[..n]);
                if pred(&entry) {
                    return entry;
                }
                seen.push(entry);
            }
        }
        panic!(
            "no journal entry {what} within {timeout:?}; entries: {seen:#?}\nstderr: {}",
            self.stderr_text()
        );
    }

    /// The entries received within `wait`.
    fn entries_within(&self, wait: Duration) -> Vec<HashMap<String, String>> {
        let deadline = Instant::now() + wait;
        let mut seen = Vec::new();
        let mut buf = vec![0u8; 1 << 16];
        while Instant::now() < deadline {
            if let Ok(n) = self.socket.recv(&mut buf) {
                seen.push(parse_entry(&buf[..n]));
            }
        }
        seen
    }

    fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        harness::wait_until("the daemon to exit", timeout, || {
            self.daemon.try_wait().unwrap().map(|s| s.code())
        })
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn skip_unless_root(test: &str) -> bool {
    if !is_root() {
        eprintln!("{test}: skipped, needs root (a mount namespace puts the test's socket where journald's is)");
    }
    !is_root()
}

/// The decision to terminate a rogue walsender arrives as one journal
/// entry whose fields are journal fields under their own names, so
/// `journalctl -u replwarden RULE=no-rogue-tools OUTCOME=terminated` finds
/// it, at priority warning; nothing goes to stderr.
#[test]
fn decisions_reach_the_journal_as_fields() {
    if skip_unless_root("decisions_reach_the_journal_as_fields") {
        return;
    }
    let primary = Cluster::primary("journal");
    let _rogue = Client::receivewal(&primary, "rogue_journal");
    primary.wait_streaming("rogue_journal");
    let rules = r#"
[[rule]]
name = "no-rogue-tools"
application_name = ["rogue_*"]
action = "terminate"
"#;
    let journal = Journal::start(
        "fields",
        &config(&primary, "replwarden", "500ms", rules),
        &[],
        None,
    );
    let entry = journal.wait_for(
        "with RULE=no-rogue-tools OUTCOME=terminated",
        Duration::from_secs(60),
        |e| {
            e.get("RULE").map(String::as_str) == Some("no-rogue-tools")
                && e.get("OUTCOME").map(String::as_str) == Some("terminated")
        },
    );
    assert_eq!(entry["MESSAGE"], "walsender terminated", "{entry:#?}");
    assert_eq!(
        entry["PRIORITY"], "4",
        "warn is journal priority warning: {entry:#?}"
    );
    assert_eq!(entry["APPLICATION_NAME"], "rogue_journal", "{entry:#?}");
    assert_eq!(entry["ACTION"], "terminate", "{entry:#?}");
    assert_eq!(entry["EVENT"], "action", "{entry:#?}");
    assert!(entry["PID"].parse::<i32>().is_ok(), "{entry:#?}");
    assert_eq!(entry["SYSLOG_IDENTIFIER"], "replwarden", "{entry:#?}");
    assert!(
        !journal.stderr_text().contains("walsender terminated"),
        "the journal replaces stderr: {}",
        journal.stderr_text()
    );
}

/// An error is journal priority 3 (err); `--log-format` given on the command
/// line wins over the journal, and a `JOURNAL_STREAM` naming another stream
/// (inherited from a parent) does not count.
#[test]
fn log_format_wins_and_only_a_matching_stream_counts() {
    if skip_unless_root("log_format_wins_and_only_a_matching_stream_counts") {
        return;
    }
    let bad = "[daemon]\ninterval = \"0s\"\n";
    let mut native = Journal::start("native", bad, &[], None);
    let entry = native.wait_for("for the config error", Duration::from_secs(30), |e| {
        e.get("MESSAGE").map(String::as_str) == Some("config error")
    });
    assert_eq!(entry["PRIORITY"], "3", "{entry:#?}");
    assert!(entry["ERROR"].contains("daemon.interval"), "{entry:#?}");
    assert_eq!(native.wait_exit(Duration::from_secs(30)), Some(78));

    for (name, args, stream) in [
        ("given", &["--log-format", "json"][..], None),
        ("other-stream", &[][..], Some("1:1")),
    ] {
        let mut journal = Journal::start(name, bad, args, stream);
        assert_eq!(
            journal.wait_exit(Duration::from_secs(30)),
            Some(78),
            "{name}"
        );
        let text = journal.stderr_text();
        assert!(
            text.lines()
                .any(|l| l.contains(r#""message":"config error""#)),
            "{name}: JSON on stderr expected: {text}"
        );
        let entries = journal.entries_within(Duration::from_millis(500));
        assert!(entries.is_empty(), "{name}: {entries:#?}");
    }
}

#[test]
fn a_multi_line_value_is_length_prefixed() {
    let mut data = b"MESSAGE=x\nERROR\n".to_vec();
    data.extend_from_slice(&5u64.to_le_bytes());
    data.extend_from_slice(b"a\nb c\nPRIORITY=3\n");
    let e = parse_entry(&data);
    assert_eq!(e["ERROR"], "a\nb c");
    assert_eq!(e["PRIORITY"], "3");
    assert_eq!(e["MESSAGE"], "x");
}
