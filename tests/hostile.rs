//! Hostile input, as each attack was found (issue 13): application names
//! and role names chosen to forge audit log fields and lines, over real
//! replication connections; passwords in bad connection strings; a FIFO as
//! the config file; the metrics endpoint flooded with idle connections under
//! a low file descriptor limit.

mod harness;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use harness::{free_port, wait_until, Cluster};

/// An application_name that forges fields (the server keeps printable ASCII).
const FORGED_FIELDS: &str = "x rule=fake action=terminate outcome=\"terminated\" pid=1";
/// A role name that forges a whole log line and a `plan` line.
const FORGED_LINE: &str = "e\nZ WARN poll: walsender terminated event=\"action\" rule=forged";
/// The application_name of a superuser's walsender, which the daemon's
/// privilege preflight names in its warning.
const SUPERUSER_APP: &str = "su x rule=fake outcome=\"terminated\"";
/// A role name with ANSI escapes (clear line, cursor up) and a bidi override.
const ESCAPES: &str = "\u{1b}[2K\u{1b}[1Aadmin\u{202e}gpj.exe";
/// A rule name from the config with a newline and a field look-alike.
const RULE_NAME: &str = "hostile app\nrule=forged";

/// A child process killed in `Drop`.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A scratch folder removed in `Drop`.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("rw-hostile-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch folder");
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn sql_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn toml_string(s: &str) -> String {
    serde_json::to_string(s).expect("a JSON string is a TOML basic string")
}

/// The daemon with text logs (what the systemd units use), its stderr
/// lines collected.
fn text_daemon(config: &Path) -> (Killed, Arc<Mutex<Vec<String>>>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_replwarden"))
        .args(["run", "--log-format", "text", "--config"])
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start replwarden");
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    let stderr = child.stderr.take().expect("stderr");
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    (Killed(child), lines)
}

/// One text log line read back: timestamp, level, the words before the
/// first field (span and message), and the fields in order. `None` when the
/// line is not a log line (a forged continuation would not be).
struct Line {
    level: String,
    message: String,
    fields: Vec<(String, String)>,
}

fn parse_line(line: &str) -> Option<Line> {
    let mut words = line.split_whitespace();
    let timestamp = words.next()?;
    if !(timestamp.len() > 20 && timestamp.starts_with("20") && timestamp.ends_with('Z')) {
        return None;
    }
    let level = words.next()?.to_string();
    if !["ERROR", "WARN", "INFO", "DEBUG", "TRACE"].contains(&level.as_str()) {
        return None;
    }
    let after_level = line.find(&level)? + level.len();
    let mut rest = line[after_level..].trim_start();
    let mut message = String::new();
    let mut fields = Vec::new();
    while !rest.is_empty() {
        let key_end = rest
            .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
            .unwrap_or(rest.len());
        if let Some(quoted) = rest.strip_prefix('"').filter(|_| fields.is_empty()) {
            // A message with a `=` in it is quoted.
            let (text, after) = unquote(quoted)?;
            message += &text;
            message.push(' ');
            rest = after.trim_start();
            continue;
        }
        if key_end == 0 || !rest[key_end..].starts_with('=') {
            if !fields.is_empty() {
                return None; // text after the fields: not what the daemon writes
            }
            let word_end = rest.find(' ').unwrap_or(rest.len());
            message += &rest[..word_end];
            message.push(' ');
            rest = rest[word_end..].trim_start();
            continue;
        }
        let key = rest[..key_end].to_string();
        let value = &rest[key_end + 1..];
        let (value, after) = match value.strip_prefix('"') {
            Some(quoted) => unquote(quoted)?,
            None => {
                let end = value.find(' ').unwrap_or(value.len());
                (value[..end].to_string(), &value[end..])
            }
        };
        fields.push((key, value));
        rest = after.strip_prefix(' ').unwrap_or(after);
    }
    Some(Line {
        level,
        message: message.trim_end().to_string(),
        fields,
    })
}

/// A quoted value (Rust string escapes) from after its opening quote: the
/// value and what follows the closing quote.
fn unquote(s: &str) -> Option<(String, &str)> {
    let mut out = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((out, &s[i + 1..])),
            '\\' => match chars.next()?.1 {
                'n' => out.push('\n'),
                'r' => out.push('\r'),
                't' => out.push('\t'),
                '0' => out.push('\0'),
                'u' => {
                    let (_, '{') = chars.next()? else {
                        return None;
                    };
                    let hex: String = chars
                        .by_ref()
                        .map(|(_, c)| c)
                        .take_while(|c| *c != '}')
                        .collect();
                    out.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
                }
                c => out.push(c),
            },
            c => out.push(c),
        }
    }
    None
}

#[test]
fn hostile_names_cannot_forge_log_fields_lines_or_plan_lines() {
    let primary = Cluster::primary("hostile");
    for role in [FORGED_LINE, ESCAPES] {
        primary.sql(&format!(
            "CREATE ROLE {} LOGIN REPLICATION",
            sql_ident(role)
        ));
    }
    let scratch = Scratch::new("names");
    // pg_receivewal with the field-forging application_name, as libpq takes it.
    // And one as the superuser, whose name the preflight warning quotes.
    let _receivers: Vec<Killed> = [("replicator", FORGED_FIELDS), ("postgres", SUPERUSER_APP)]
        .iter()
        .map(|(user, app)| {
            let wal = scratch.0.join(format!("wal-{user}"));
            std::fs::create_dir_all(&wal).unwrap();
            Killed(
                Command::new(harness::bin("pg_receivewal"))
                    .arg("-D")
                    .arg(&wal)
                    .args([
                        "-d",
                        &format!("host=127.0.0.1 port={} user={user}", primary.port),
                        "--no-sync",
                    ])
                    .env("PGAPPNAME", app)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("start pg_receivewal"),
            )
        })
        .collect();
    // Replication connections (psql, replication=database) as the hostile roles.
    let _sessions: Vec<Killed> = [FORGED_LINE, ESCAPES]
        .iter()
        .map(|role| {
            Killed(
                Command::new(harness::bin("psql"))
                    .args(["-X", "-q"])
                    .arg(format!(
                        "host=127.0.0.1 port={} dbname=postgres replication=database",
                        primary.port
                    ))
                    .args(["-c", "SELECT pg_sleep(600)"])
                    .env("PGUSER", role)
                    .env("PGAPPNAME", "hostile_role")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("start psql"),
            )
        })
        .collect();
    wait_until("four hostile walsenders", Duration::from_secs(60), || {
        (primary.sql("SELECT count(*) FROM pg_stat_replication") == "4").then_some(())
    });

    let config = format!(
        "{}\n[[rule]]\nname = {}\napplication_name = \"x *\"\n\n[[rule]]\nname = \"role\"\nuser = [\"e*\", {}]\n",
        harness::config(&primary, "replwarden", "200ms", ""),
        toml_string(RULE_NAME),
        toml_string(&format!("{}*", &ESCAPES[..1])),
    );
    let path = scratch.0.join("replwarden.toml");
    std::fs::write(&path, &config).unwrap();
    let (_daemon, lines) = text_daemon(&path);
    let breaches = |lines: &[String]| {
        lines
            .iter()
            .filter(|l| l.contains("rule breached (action log)"))
            .count()
    };
    wait_until("three logged breaches", Duration::from_secs(60), || {
        (breaches(&lines.lock().unwrap()) >= 3).then_some(())
    });
    let lines = lines.lock().unwrap().clone();
    let all = lines.join("\n");

    // Every line is a log line: nothing a client chose started a new one.
    for line in &lines {
        assert!(
            parse_line(line).is_some(),
            "not a log line: {line:?}\nin:\n{all}"
        );
    }
    assert!(!all.contains(['\u{1b}', '\u{202e}']), "{all}");
    let events: Vec<HashMap<String, String>> = lines
        .iter()
        .filter_map(|l| parse_line(l))
        .filter(|l| l.message.ends_with("rule breached (action log)"))
        .map(|l| {
            assert_eq!(l.level, "WARN");
            let keys: Vec<&str> = l.fields.iter().map(|(k, _)| k.as_str()).collect();
            // Exactly the fields the daemon writes, each once, in order.
            assert_eq!(
                keys,
                [
                    "event",
                    "rule",
                    "action",
                    "outcome",
                    "cause",
                    "pid",
                    "backend_start",
                    "application_name",
                    "user",
                    "client_addr",
                    "state",
                    "sync_state",
                    "measured",
                    "detail"
                ],
                "{all}"
            );
            l.fields.into_iter().collect()
        })
        .collect();
    let preflight = lines
        .iter()
        .filter_map(|l| parse_line(l))
        .find(|l| l.message == "privilege preflight warning")
        .unwrap_or_else(|| panic!("no preflight warning:\n{all}"));
    let keys: Vec<&str> = preflight.fields.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["role", "event", "finding"], "{all}");
    let finding = &preflight.fields[2].1;
    assert!(
        finding.starts_with("walsenders of superuser roles"),
        "{all}"
    );
    assert!(finding.contains(SUPERUSER_APP), "{all}");
    let by_app = events
        .iter()
        .find(|e| e["application_name"] == FORGED_FIELDS)
        .unwrap_or_else(|| panic!("no event with the forged application_name read back:\n{all}"));
    assert_eq!(by_app["rule"], RULE_NAME);
    assert_eq!(by_app["outcome"], "logged");
    assert_eq!(by_app["user"], "replicator");
    assert!(by_app["measured"].contains(FORGED_FIELDS), "{all}");
    for role in [FORGED_LINE, ESCAPES] {
        let e = events
            .iter()
            .find(|e| e["user"] == role)
            .unwrap_or_else(|| panic!("no event with user {role:?} read back:\n{all}"));
        assert_eq!(e["rule"], "role");
        assert_eq!(e["application_name"], "hostile_role");
        assert_eq!(e["event"], "action");
    }

    // plan: one header line per walsender, no forged line.
    let out = harness::plan(&primary, &config);
    let plan = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{plan}");
    assert!(!plan.contains(['\u{1b}', '\u{202e}']), "{plan}");
    assert!(
        !plan.lines().any(|l| l.starts_with("Z WARN")),
        "a forged line in plan:\n{plan}"
    );
    assert!(
        plan.contains(
            r#"user="e\nZ WARN poll: walsender terminated event=\"action\" rule=forged""#
        ),
        "{plan}"
    );
    assert!(
        plan.contains(r#"user="\u{1b}[2K\u{1b}[1Aadmin\u{202e}gpj.exe""#),
        "{plan}"
    );
    assert!(
        plan.contains(r#"rule "hostile app\nrule=forged": FIRES: log"#),
        "{plan}"
    );
    let headers = plan.lines().filter(|l| l.starts_with("pid ")).count();
    assert_eq!(headers, 4, "{plan}");
}

/// `check` and `run` on `config`, with a deadline: (exit code, all output).
fn check_and_run(config: &Path) -> Vec<(Option<i32>, String)> {
    ["check", "run"]
        .iter()
        .map(|command| {
            let child = Command::new(env!("CARGO_BIN_EXE_replwarden"))
                .args([command, "--log-format", "json", "--config"])
                .arg(config)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start replwarden");
            let pid = child.id() as i32;
            let (tx, rx) = std::sync::mpsc::channel();
            thread::spawn(move || {
                let _ = tx.send(child.wait_with_output());
            });
            match rx.recv_timeout(Duration::from_secs(60)) {
                Ok(out) => {
                    let out = out.expect("replwarden output");
                    let text = format!(
                        "{}{}",
                        String::from_utf8_lossy(&out.stdout),
                        String::from_utf8_lossy(&out.stderr)
                    );
                    (out.status.code(), text)
                }
                Err(_) => {
                    harness::kill(pid, libc::SIGKILL);
                    panic!("replwarden {command} --config {} hung", config.display());
                }
            }
        })
        .collect()
}

#[test]
fn no_part_of_a_password_appears_when_the_conninfo_is_bad() {
    let scratch = Scratch::new("password");
    for conninfo in [
        "host=127.0.0.1 dbname=postgres user=replwarden password=Wr4rden S3cret!xyz",
        "host=127.0.0.1 password=Wr4rden S3cret!xyz=1 user=u",
        "host=127.0.0.1 password='Wr4rden S3cret!xyz",
        "postgresql://u:Wr4rden S3cret!xyz@127.0.0.1:port/postgres",
    ] {
        let path = scratch.0.join("replwarden.toml");
        std::fs::write(
            &path,
            format!("[postgres]\nconninfo = {}\n", toml_string(conninfo)),
        )
        .unwrap();
        for (code, output) in check_and_run(&path) {
            assert_eq!(code, Some(78), "{conninfo:?}: {output}");
            assert!(output.contains("postgres.conninfo"), "{output}");
            for fragment in ["Wr4rden", "S3cret", "xyz"] {
                assert!(
                    !output.contains(fragment),
                    "{conninfo:?} leaked {fragment:?}: {output}"
                );
            }
        }
    }
}

#[test]
fn a_fifo_as_the_config_is_refused_not_waited_on() {
    let scratch = Scratch::new("fifo");
    let fifo = scratch.0.join("replwarden.toml");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    for (code, output) in check_and_run(&fifo) {
        assert_eq!(code, Some(78), "{output}");
        assert!(
            output.contains("not a regular file (it is a FIFO)"),
            "{output}"
        );
    }
}

/// User plus system CPU time of a process so far.
fn cpu_time(pid: i32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/<pid>/stat");
    // Fields after the command name (which may hold spaces) in parentheses.
    let after = &stat[stat.rfind(')').expect("stat format") + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    let per_second = clock_ticks_per_second();
    Duration::from_millis(ticks * 1000 / per_second)
}

#[test]
fn idle_connections_under_a_low_fd_limit_do_not_spin_the_daemon() {
    // This test opens hundreds of sockets: lift its own soft limit.
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    setrlimit(Resource::RLIMIT_NOFILE, hard.min(4096), hard).unwrap();
    let primary = Cluster::primary("fdlimit");
    let port = free_port();
    let scratch = Scratch::new("fdlimit");
    let path = scratch.0.join("replwarden.toml");
    std::fs::write(
        &path,
        format!(
            "{}\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n",
            harness::config(&primary, "replwarden", "200ms", "")
        ),
    )
    .unwrap();
    // 32 file descriptors: the daemon needs about a dozen of its own.
    let child = Command::new("prlimit")
        .arg("--nofile=32:32")
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_replwarden"))
        .args([
            "run",
            "--log-format",
            "json",
            "--log-level",
            "debug",
            "--config",
        ])
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start replwarden under prlimit");
    let pid = child.id() as i32;
    let mut daemon = Killed(child);
    let polls = Arc::new(Mutex::new(0usize));
    let log = Arc::new(Mutex::new(Vec::new()));
    {
        let (polls, log) = (polls.clone(), log.clone());
        let stderr = daemon.0.stderr.take().unwrap();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("\"poll done\"") {
                    *polls.lock().unwrap() += 1;
                } else {
                    log.lock().unwrap().push(line);
                }
            }
        });
    }
    wait_until("the first polls", Duration::from_secs(60), || {
        (*polls.lock().unwrap() >= 3).then_some(())
    });
    assert!(harness::http_get(port, "/metrics").contains("replwarden_polls_total"));

    let idle: Vec<TcpStream> = (0..400)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).expect("connect to the metrics port"))
        .collect();
    let (cpu_before, polls_before, started) =
        (cpu_time(pid), *polls.lock().unwrap(), Instant::now());
    thread::sleep(Duration::from_secs(10));
    let cpu = cpu_time(pid) - cpu_before;
    let window = started.elapsed();
    let polled = *polls.lock().unwrap() - polls_before;
    // A busy accept loop burns most of a core; an idle daemon a fraction of a percent.
    assert!(
        cpu < window / 5,
        "the daemon used {cpu:?} of CPU in {window:?} with 400 idle connections; log:\n{}",
        log.lock().unwrap().join("\n")
    );
    assert!(polled >= 10, "only {polled} polls in {window:?}");

    // Idle connections are closed by the daemon, not kept for ever.
    let mut first = &idle[0];
    first
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut buf = [0u8; 16];
    assert!(
        matches!(first.read(&mut buf), Ok(0)),
        "an idle connection was not closed"
    );
    drop(idle);
    // The endpoint answers again once the flood is gone.
    wait_until(
        "the metrics endpoint answering",
        Duration::from_secs(60),
        || {
            harness::http_get(port, "/metrics")
                .contains("replwarden_polls_total")
                .then_some(())
        },
    );
    assert!(daemon.0.try_wait().unwrap().is_none(), "the daemon exited");
}

#[test]
fn check_and_plan_warn_about_what_can_never_match_and_an_ignored_password_file() {
    let scratch = Scratch::new("warnings");
    let passfile = scratch.0.join("pgpass");
    std::fs::write(&passfile, "*:*:*:*:secret\n").unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&passfile, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let path = scratch.0.join("replwarden.toml");
    let long = "x".repeat(64);
    std::fs::write(
        &path,
        format!(
            "[postgres]\nconninfo = \"host=127.0.0.1 port={} dbname=postgres user=nobody_here\"\n\n\
             [[rule]]\nname = \"long\"\napplication_name = \"{long}\"\n",
            free_port()
        ),
    )
    .unwrap();
    let run = |command: &str| {
        Command::new(env!("CARGO_BIN_EXE_replwarden"))
            .args([command, "--config"])
            .arg(&path)
            .env("PGPASSFILE", &passfile)
            .env_remove("PGPASSWORD")
            .output()
            .expect("run replwarden")
    };
    let check = run("check");
    let text = String::from_utf8_lossy(&check.stdout);
    // Warnings leave the exit code alone.
    assert_eq!(check.status.code(), Some(0), "{text}");
    assert!(text.contains(": rule[1].application_name[1]: this pattern can never match: it needs at least 64 bytes"), "{text}");
    assert!(text.contains("has group or world access"), "{text}");
    // plan says why there is no password before it fails to connect.
    let plan = run("plan");
    let err = String::from_utf8_lossy(&plan.stderr);
    assert_eq!(plan.status.code(), Some(1), "{err}");
    assert!(
        err.contains("replwarden: warning: password file")
            && err.contains("has group or world access"),
        "{err}"
    );
    assert!(err.contains("this pattern can never match"), "{err}");
    assert!(
        !err.contains("secret") && !text.contains("secret"),
        "{err}{text}"
    );
}

#[test]
fn check_prints_one_line_per_error_whatever_the_file_holds() {
    let scratch = Scratch::new("keys");
    let path = scratch.0.join("replwarden.toml");
    std::fs::write(
        &path,
        "[daemon]\n\"x\\nZ replwarden: 0 errors\" = 1\n[[rule]]\nname = \"r\"\napplication_name = \"\\u001b[2J\\u202e[z-a]\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_replwarden"))
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .expect("run replwarden check");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 3, "{err}");
    assert_eq!(lines[0], "replwarden: 2 errors in config");
    assert!(
        lines[1].contains(r#"daemon.x\nZ replwarden: 0 errors: unknown key"#),
        "{err}"
    );
    assert!(
        lines[2]
            .contains(r#"rule[1].application_name[1]: "\u{1b}[2J\u{202e}[z-a]" has the range z-a"#),
        "{err}"
    );
    assert!(!err.contains(['\u{1b}', '\u{202e}']), "{err}");
}

/// `_SC_CLK_TCK`: the unit of the CPU times in `/proc/<pid>/stat`.
fn clock_ticks_per_second() -> u64 {
    use nix::unistd::{sysconf, SysconfVar};
    let ticks = sysconf(SysconfVar::CLK_TCK).unwrap().unwrap();
    u64::try_from(ticks).unwrap()
}
