//! The Prometheus endpoint against real servers: both exposition formats
//! pass Prometheus's own parsers, every value is the server's truth, and
//! the HTTP side behaves (methods, query strings, bare LF, silent
//! connections).

mod harness;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use harness::{free_port, wait_until, Client, Cluster, Daemon};

/// The `Accept` header Prometheus 2.42 scrapes with.
const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

/// A response: status line, headers (names lowercased) and body.
struct Response {
    status: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Sends `raw` as is and reads the response until the server closes.
fn request(port: u16, raw: &str) -> Response {
    try_request(port, raw).expect("connect to the endpoint")
}

/// [`request`], or `None` while nothing listens (the daemon is starting).
fn try_request(port: u16, raw: &str) -> Option<Response> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream.write_all(raw.as_bytes()).unwrap();
    let mut bytes = Vec::new();
    stream
        .read_to_end(&mut bytes)
        .expect("a response within 30 s");
    let text = String::from_utf8(bytes).expect("UTF-8 response");
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or_default().to_string();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Some(Response {
        status,
        headers,
        body: body.to_string(),
    })
}

fn get(port: u16, accept: Option<&str>) -> Response {
    let accept = accept.map_or(String::new(), |a| format!("Accept: {a}\r\n"));
    request(
        port,
        &format!("GET /metrics HTTP/1.1\r\nHost: localhost\r\n{accept}\r\n"),
    )
}

/// One sample of the text format.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses the samples of a text-format exposition.
fn parse(body: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in body
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line.rsplit_once(' ').expect("a value");
        let (name, mut rest) = series.split_once('{').unwrap_or((series, ""));
        let mut labels = BTreeMap::new();
        while let Some((key, after)) = rest.split_once("=\"") {
            let mut value = String::new();
            let mut chars = after.char_indices();
            let end = loop {
                match chars.next().expect("closing quote") {
                    (_, '\\') => match chars.next().expect("escape").1 {
                        'n' => value.push('\n'),
                        c => value.push(c),
                    },
                    (i, '"') => break i,
                    (_, c) => value.push(c),
                }
            };
            labels.insert(key.trim_start_matches(',').to_string(), value);
            rest = &after[end + 1..];
        }
        out.push(Sample {
            name: name.to_string(),
            labels,
            value: value.parse().expect("a float"),
        });
    }
    out
}

/// The value of the one sample of `name` whose labels include `labels`.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let found: Vec<&Sample> = samples
        .iter()
        .filter(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .collect();
    assert!(found.len() <= 1, "several samples match: {found:?}");
    found.first().map(|s| s.value)
}

fn scrape(port: u16) -> Vec<Sample> {
    let r = get(port, None);
    assert!(r.status.starts_with("HTTP/1.1 200"), "{}", r.status);
    parse(&r.body)
}

/// Successful polls so far (0 while the endpoint is not up yet).
fn polls(port: u16) -> f64 {
    try_request(port, "GET /metrics HTTP/1.0\r\n\r\n")
        .and_then(|r| {
            value(
                &parse(&r.body),
                "replwarden_polls_total",
                &[("result", "ok")],
            )
        })
        .unwrap_or(0.0)
}

/// A scratch folder for files the tools read and write.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("rw-metrics-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn run_with_stdin(mut cmd: Command, input: &str) -> (bool, String) {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

const RULES: &str = "[[rule]]\nname = \"kill\"\napplication_name = [\"victim*\"]\naction = \"terminate\"\n\
    [[rule]]\nname = \"watch\"\napplication_name = [\"dup\"]\nreplay_lag_bytes = \"1TB\"\naction = \"log\"\n\
    [[rule]]\nname = \"guarded\"\napplication_name = [\"standby_a\"]\naction = \"terminate\"\n";

fn daemon_config(primary: &Cluster, port: u16, rules: &str) -> String {
    format!(
        "[postgres]\nconninfo = \"{}\"\n[daemon]\ninterval = \"200ms\"\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n{rules}",
        primary.conninfo("replwarden")
    )
}

/// `promtool check metrics` (the text format's linter) is clean on the
/// text format, and Prometheus's OpenMetrics parser (through `promtool tsdb
/// create-blocks-from openmetrics`, which needs a timestamp on each sample)
/// takes the OpenMetrics form; each is served for the `Accept` header that
/// asks for it.
#[test]
fn both_formats_pass_prometheus_own_parsers() {
    let primary = Cluster::primary("primary");
    let _standby = Cluster::standby(&primary, "standby_a");
    let port = free_port();
    let _daemon = Daemon::start(&daemon_config(&primary, port, RULES), &[]);
    wait_until("a poll", Duration::from_secs(20), || {
        (polls(port) > 0.0).then_some(())
    });

    let text = get(port, None);
    assert_eq!(
        text.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let (ok, out) = run_with_stdin(
        {
            let mut c = Command::new("promtool");
            c.args(["check", "metrics"]);
            c
        },
        &text.body,
    );
    assert!(
        ok && out.trim().is_empty(),
        "promtool: {out}\n{}",
        text.body
    );
    for accept in ["text/plain;version=0.0.4", "*/*", "application/json"] {
        let r = get(port, Some(accept));
        assert!(
            r.header("content-type").unwrap().starts_with("text/plain"),
            "{accept}"
        );
    }

    let om = get(port, Some(PROMETHEUS_ACCEPT));
    assert_eq!(
        om.header("content-type"),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    assert!(om.body.ends_with("\n# EOF\n"), "{}", om.body);
    let stamped: String = om
        .body
        .lines()
        .map(|l| {
            if l.starts_with('#') {
                format!("{l}\n")
            } else {
                format!("{l} 1700000000\n")
            }
        })
        .collect();
    let scratch = Scratch::new("om");
    let file = scratch.0.join("metrics.om");
    std::fs::write(&file, &stamped).unwrap();
    let out = Command::new("promtool")
        .args(["tsdb", "create-blocks-from", "openmetrics"])
        .arg(&file)
        .arg(scratch.0.join("blocks"))
        .output()
        .expect("promtool");
    assert!(
        out.status.success(),
        "Prometheus's OpenMetrics parser: {}{}\n{stamped}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What `pg_stat_replication` says of each walsender: its client, state,
/// sync state, byte distances from the server's WAL position, reply age,
/// and the WAL its slot retains.
#[derive(Debug)]
struct Truth {
    client: (String, String, String),
    state: String,
    sync_state: String,
    bytes: [Option<f64>; 3],
    reply_age: Option<f64>,
    slot: Option<(String, f64)>,
}

fn truth(primary: &Cluster) -> Vec<Truth> {
    let num = |s: &str| (!s.is_empty()).then(|| s.parse::<f64>().unwrap());
    primary
        .sql(
            "SELECT r.application_name, coalesce(host(r.client_addr), 'local'), r.usename, r.state, r.sync_state, \
                    pg_current_wal_lsn() - r.write_lsn, pg_current_wal_lsn() - r.flush_lsn, pg_current_wal_lsn() - r.replay_lsn, \
                    extract(epoch FROM now() - r.reply_time), s.slot_name, pg_current_wal_lsn() - s.restart_lsn \
             FROM pg_stat_replication r LEFT JOIN pg_replication_slots s ON s.active_pid = r.pid",
        )
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split('|').collect();
            Truth {
                client: (f[0].into(), f[1].into(), f[2].into()),
                state: f[3].into(),
                sync_state: f[4].into(),
                bytes: [num(f[5]), num(f[6]), num(f[7])],
                reply_age: num(f[8]),
                slot: (!f[9].is_empty()).then(|| (f[9].to_string(), num(f[10]).unwrap())),
            }
        })
        .collect()
}

/// Compares one scrape with the server; the first difference, if any.
fn compare(samples: &[Sample], truth: &[Truth]) -> Result<(), String> {
    let count = |name: &str| samples.iter().filter(|s| s.name == name).count();
    let walsenders = value(samples, "replwarden_walsenders", &[]);
    if walsenders != Some(truth.len() as f64) || count("replwarden_walsender_info") != truth.len() {
        return Err(format!("walsenders {walsenders:?}, server {}", truth.len()));
    }
    for t in truth {
        let (app, addr, user) = &t.client;
        // Walsenders of the same client have ordinals 0, 1, …: sum them.
        let of = |name: &str, extra: &[(&str, &str)]| -> Vec<f64> {
            samples
                .iter()
                .filter(|s| {
                    s.name == name
                        && s.labels["application_name"] == *app
                        && s.labels["client_addr"] == *addr
                        && s.labels["user"] == *user
                        && extra
                            .iter()
                            .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
                })
                .map(|s| s.value)
                .collect()
        };
        let info = of(
            "replwarden_walsender_info",
            &[("state", &t.state), ("sync_state", &t.sync_state)],
        );
        if info.is_empty() {
            return Err(format!("no info series for {t:?}"));
        }
        for (kind, bytes) in ["write", "flush", "replay"].iter().zip(t.bytes) {
            let got = of("replwarden_walsender_lag_bytes", &[("kind", kind)]);
            let want: Vec<f64> = bytes.into_iter().collect();
            if !got.iter().all(|g| want.contains(g)) || got.len() < want.len().min(1) {
                return Err(format!("{app} {kind} lag bytes {got:?}, server {want:?}"));
            }
        }
        if let Some(age) = t.reply_age {
            let got = of("replwarden_walsender_reply_age_seconds", &[]);
            if !got.iter().any(|g| (g - age).abs() <= 5.0) {
                return Err(format!("{app} reply age {got:?}, server {age}"));
            }
        }
        if let Some((slot, retained)) = &t.slot {
            let got = of("replwarden_walsender_retained_wal_bytes", &[("slot", slot)]);
            if got != [*retained] {
                return Err(format!(
                    "{app} slot {slot} retains {got:?}, server {retained}"
                ));
            }
        }
    }
    Ok(())
}

/// Every value against the server's own figures: the per-walsender series
/// (two walsenders of one client kept apart by `ordinal`, a paused replay
/// for a distance that is not 0, a logical slot), how many walsenders each
/// rule matches, a walsender held by the quorum guard (one episode
/// however many polls hold it, not one per poll), polls, poll durations,
/// the connection, reloads.
#[test]
fn every_value_is_the_server_s_truth() {
    let primary = Cluster::primary("primary");
    let standby = Cluster::standby(&primary, "standby_a");
    primary.sql("ALTER SYSTEM SET synchronous_standby_names = 'standby_a'");
    primary.sql("SELECT pg_reload_conf()");
    wait_until("standby_a to be sync", Duration::from_secs(30), || {
        primary
            .sql("SELECT 1 FROM pg_stat_replication WHERE application_name = 'standby_a' AND sync_state = 'sync'")
            .contains('1')
            .then_some(())
    });
    let _dup1 = Client::receivewal(&primary, "dup");
    let _dup2 = Client::receivewal(&primary, "dup");
    let _logical = Client::recvlogical(&primary, "logical_1");
    wait_until("5 walsenders streaming", Duration::from_secs(60), || {
        (primary
            .walsenders()
            .iter()
            .filter(|w| w.state == "streaming")
            .count()
            == 4)
            .then_some(())
    });
    standby.sql("SELECT pg_wal_replay_pause()");
    primary.sql("INSERT INTO t (payload) SELECT repeat('x', 1000) FROM generate_series(1, 2000)");

    let port = free_port();
    let config = daemon_config(&primary, port, RULES);
    let daemon = Daemon::start(&config, &[]);
    // At least 10 polls that hold standby_a (the issue saw one hold counted 18 times in 10 s).
    wait_until("10 polls", Duration::from_secs(60), || {
        (polls(port) >= 10.0).then_some(())
    });
    // WAL moves now and then (the background writer logs running
    // transactions): two scrapes in a row must agree with the server.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let samples = loop {
        let samples = scrape(port);
        let agree = compare(&samples, &truth(&primary))
            .and_then(|()| compare(&scrape(port), &truth(&primary)));
        match agree {
            Ok(()) => break samples,
            Err(e) if std::time::Instant::now() > deadline => {
                panic!("the metrics never agreed with the server: {e}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    };
    let truths = truth(&primary);
    let replay = truths
        .iter()
        .find(|t| t.client.0 == "standby_a")
        .unwrap()
        .bytes[2];
    assert!(replay.unwrap() > 1_000_000.0, "replay paused: {replay:?}");
    let dups: Vec<&str> = samples
        .iter()
        .filter(|s| s.name == "replwarden_walsender_info" && s.labels["application_name"] == "dup")
        .map(|s| s.labels["ordinal"].as_str())
        .collect();
    assert_eq!(dups, ["0", "1"]);
    assert!(samples.iter().all(|s| !s.labels.contains_key("pid")));

    let rule = |name: &str, rule: &str| value(&samples, name, &[("rule", rule)]);
    assert_eq!(rule("replwarden_rule_matches", "watch"), Some(2.0));
    assert_eq!(rule("replwarden_rule_matches", "guarded"), Some(1.0));
    assert_eq!(rule("replwarden_rule_matches", "kill"), Some(0.0));
    let held = |name: &str, reason: &str| {
        value(&samples, name, &[("rule", "guarded"), ("reason", reason)])
    };
    assert_eq!(held("replwarden_walsenders_held", "sync_quorum"), Some(1.0));
    assert_eq!(held("replwarden_holds_total", "sync_quorum"), Some(1.0));
    assert_eq!(held("replwarden_holds_total", "budget"), Some(0.0));
    assert!(daemon.count_messages("held: would break synchronous quorum") >= 10);
    assert_eq!(
        primary.walsender("standby_a").map(|w| w.state),
        Some("streaming".into())
    );
    for (rule, action, outcome) in [
        ("kill", "terminate", "terminated"),
        ("watch", "log", "logged"),
        ("guarded", "terminate", "refused"),
    ] {
        assert_eq!(
            value(
                &samples,
                "replwarden_actions_total",
                &[("rule", rule), ("action", action), ("outcome", outcome)]
            ),
            Some(0.0),
            "{rule} {outcome}"
        );
    }
    assert_eq!(daemon.actions().len(), 0);

    // Polls: between the polls logged before and after a scrape; the
    // histogram counts each of them once.
    let before = daemon.count_messages("poll done");
    let samples = scrape(port);
    let after = daemon.count_messages("poll done");
    let ok = value(&samples, "replwarden_polls_total", &[("result", "ok")]).unwrap();
    assert!(
        before as f64 <= ok && ok <= after as f64 + 1.0,
        "{before} <= {ok} <= {after} + 1"
    );
    assert_eq!(
        value(&samples, "replwarden_poll_duration_seconds_count", &[]),
        Some(ok)
    );
    assert_eq!(
        value(
            &samples,
            "replwarden_poll_duration_seconds_bucket",
            &[("le", "+Inf")]
        ),
        Some(ok)
    );
    assert!(value(&samples, "replwarden_poll_duration_seconds_sum", &[]).unwrap() > 0.0);
    assert_eq!(
        value(&samples, "replwarden_polls_total", &[("result", "error")]),
        Some(0.0)
    );
    assert_eq!(
        value(&samples, "replwarden_hidden_walsenders", &[]),
        Some(0.0)
    );
    assert_eq!(
        value(&samples, "replwarden_reconnect_loops_total", &[]),
        Some(0.0)
    );
    let backends =
        primary.sql("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'replwarden'");
    assert_eq!(backends, "1");
    assert_eq!(value(&samples, "replwarden_connected", &[]), Some(1.0));
    assert_eq!(
        value(
            &samples,
            "replwarden_config_reloads_total",
            &[("result", "success")]
        ),
        Some(0.0)
    );

    // A reload that drops a rule: its gauges go, a new rule's series start at 0.
    daemon.write_config(&config.replace("name = \"watch\"", "name = \"watch2\""));
    daemon.signal(libc::SIGHUP);
    daemon.wait_message("config reloaded", Duration::from_secs(10));
    let samples = wait_until("the new rule's matches", Duration::from_secs(20), || {
        let s = scrape(port);
        (value(&s, "replwarden_rule_matches", &[("rule", "watch2")]) == Some(2.0)).then_some(s)
    });
    assert_eq!(
        value(&samples, "replwarden_rule_matches", &[("rule", "watch")]),
        None
    );
    assert_eq!(
        value(
            &samples,
            "replwarden_config_reloads_total",
            &[("result", "success")]
        ),
        Some(1.0)
    );

    // A role without pg_monitor sees the walsenders but not their columns.
    primary.sql("CREATE ROLE nomon LOGIN");
    let blind_port = free_port();
    let blind = Daemon::start(
        &daemon_config(&primary, blind_port, RULES).replace("user=replwarden", "user=nomon"),
        &["--log-level", "info"],
    );
    let samples = wait_until("a blind poll", Duration::from_secs(30), || {
        let s = try_request(blind_port, "GET /metrics HTTP/1.0\r\n\r\n").map(|r| parse(&r.body))?;
        (value(&s, "replwarden_polls_total", &[("result", "ok")]) > Some(0.0)).then_some(s)
    });
    let walsenders: f64 = primary
        .sql("SELECT count(*) FROM pg_stat_replication")
        .parse()
        .unwrap();
    assert_eq!(
        value(&samples, "replwarden_hidden_walsenders", &[]),
        Some(walsenders)
    );
    assert_eq!(value(&samples, "replwarden_walsenders", &[]), Some(0.0));
    drop(blind);

    // Polls that fail (the role may no longer run a function the poll
    // calls): counted as the log tells them.
    primary.sql("REVOKE EXECUTE ON FUNCTION pg_current_wal_lsn() FROM PUBLIC");
    daemon.wait_message("poll failed", Duration::from_secs(30));
    primary.sql("GRANT EXECUTE ON FUNCTION pg_current_wal_lsn() TO PUBLIC");
    let failed = |d: &Daemon| d.count_messages("poll failed") as f64;
    wait_until(
        "the failed polls counted as logged",
        Duration::from_secs(30),
        || {
            let before = failed(&daemon);
            let got = value(
                &scrape(port),
                "replwarden_polls_total",
                &[("result", "error")],
            );
            (before == failed(&daemon) && got == Some(before)).then_some(())
        },
    );

    // The server goes away: not connected.
    primary.stop("immediate");
    wait_until("connected 0", Duration::from_secs(30), || {
        (value(&scrape(port), "replwarden_connected", &[]) == Some(0.0)).then_some(())
    });
}

/// Actions, reconnect loops and backoff holds are counted once each, as
/// the log tells them: a client killed, back 5 s later, held by the
/// reconnect backoff (one episode per process instance, whatever the
/// number of polls), killed again (a reconnect loop).
#[test]
fn actions_loops_and_holds_are_counted_once_each() {
    let primary = Cluster::primary("primary");
    let _victim = Client::receivewal(&primary, "victim");
    let first = primary.wait_streaming("victim");
    let port = free_port();
    let config = daemon_config(
        &primary,
        port,
        &format!("[limits]\nreconnect_backoff = \"7s\"\nreconnect_backoff_max = \"1h\"\n{RULES}"),
    );
    let daemon = Daemon::start(&config, &[]);
    daemon.wait_for("a reconnect loop", Duration::from_secs(60), |e| {
        e["event"] == "reconnect_loop"
    });
    assert!(primary.walsenders().iter().all(|w| w.pid != first.pid));
    // The log and a scrape, taken when nothing happened in between.
    let (samples, events) = wait_until("a quiet scrape", Duration::from_secs(60), || {
        let before = daemon.events();
        let samples = scrape(port);
        let after = daemon.events();
        let counted = |events: &[serde_json::Value]| {
            let terminated = events
                .iter()
                .filter(|e| e["event"] == "action" && e["outcome"] == "terminated")
                .count();
            let loops = events
                .iter()
                .filter(|e| e["event"] == "reconnect_loop")
                .count();
            let mut held: Vec<i64> = events
                .iter()
                .filter(|e| e["event"] == "held" && e["message"] == "held: reconnect loop backoff")
                .filter_map(|e| e["pid"].as_i64())
                .collect();
            held.dedup();
            (terminated, loops, held.len())
        };
        (counted(&before) == counted(&after)).then(|| (samples, counted(&after)))
    });
    let (terminated, loops, held) = events;
    assert!(terminated >= 2 && loops >= 1 && held >= 1, "{events:?}");
    let kill = [("rule", "kill"), ("action", "terminate")];
    assert_eq!(
        value(
            &samples,
            "replwarden_actions_total",
            &[kill[0], kill[1], ("outcome", "terminated")]
        ),
        Some(terminated as f64)
    );
    assert_eq!(
        value(
            &samples,
            "replwarden_actions_total",
            &[kill[0], kill[1], ("outcome", "already_gone")]
        ),
        Some(0.0)
    );
    assert_eq!(
        value(&samples, "replwarden_reconnect_loops_total", &[]),
        Some(loops as f64)
    );
    assert_eq!(
        value(
            &samples,
            "replwarden_holds_total",
            &[("rule", "kill"), ("reason", "reconnect_backoff")]
        ),
        Some(held as f64)
    );
}

/// Keeps `n` connections to `port` open that send nothing, opening a new
/// one for each the server closes, until dropped.
struct SilentCrowd {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    opened: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SilentCrowd {
    fn new(port: u16, n: usize) -> SilentCrowd {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let opened = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (flag, count) = (stop.clone(), opened.clone());
        let open = move || {
            let s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
            s.set_nonblocking(true).unwrap();
            count.fetch_add(1, Ordering::SeqCst);
            s
        };
        let mut crowd: Vec<TcpStream> = (0..n).map(|_| open()).collect();
        let thread = std::thread::spawn(move || {
            // Bounded: at most 10 minutes.
            let deadline = std::time::Instant::now() + Duration::from_secs(600);
            while !flag.load(Ordering::SeqCst) && std::time::Instant::now() < deadline {
                for s in crowd.iter_mut() {
                    let mut buf = [0u8; 64];
                    match s.read(&mut buf) {
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                        _ => *s = open(),
                    }
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        SilentCrowd {
            stop,
            opened,
            thread: Some(thread),
        }
    }
}

impl Drop for SilentCrowd {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// HTTP as scrapers and people use it: any query string, HEAD, 405 for
/// other methods with `Allow`, 404 elsewhere, a request with bare LF line
/// ends; and 300 connections that send nothing, renewed as the daemon
/// closes them, neither stop the polls nor keep a scrape out, nor take
/// more than a bounded number of the daemon's file descriptors.
#[test]
fn http_is_answered_and_silent_connections_block_nothing() {
    let primary = Cluster::primary("primary");
    let port = free_port();
    let daemon = Daemon::start(
        &daemon_config(&primary, port, RULES),
        &["--log-level", "info"],
    );
    wait_until("a poll", Duration::from_secs(20), || {
        (polls(port) > 0.0).then_some(())
    });

    let r = request(port, "GET /metrics?x=1&y=2 HTTP/1.1\r\nHost: h\r\n\r\n");
    assert!(r.status.starts_with("HTTP/1.1 200"), "{}", r.status);
    assert!(r.body.contains("replwarden_polls_total"));
    let r = request(port, "HEAD /metrics HTTP/1.1\r\nHost: h\r\n\r\n");
    assert!(r.status.starts_with("HTTP/1.1 200"), "{}", r.status);
    assert!(r.body.is_empty(), "{}", r.body);
    assert!(r.header("content-length").unwrap().parse::<u64>().unwrap() > 1000);
    let r = request(
        port,
        "POST /metrics HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n",
    );
    assert!(r.status.starts_with("HTTP/1.1 405"), "{}", r.status);
    assert_eq!(r.header("allow"), Some("GET, HEAD"));
    let r = request(port, "GET /metrics HTTP/1.1\nHost: h\n\n");
    assert!(
        r.status.starts_with("HTTP/1.1 200"),
        "bare LF: {}",
        r.status
    );
    assert!(r.body.contains("replwarden_polls_total"));
    let r = request(port, "GET /other HTTP/1.1\r\nHost: h\r\n\r\n");
    assert!(r.status.starts_with("HTTP/1.1 404"), "{}", r.status);

    let crowd = SilentCrowd::new(port, 300);
    let start = polls(port);
    for _ in 0..5 {
        let before = polls(port);
        // `scrape` waits up to 30 s: far longer than a scrape takes, far
        // shorter than the 300 silent connections ahead of it would last
        // if they were served in turn (5 s each, 64 at a time).
        let samples = scrape(port);
        assert!(value(&samples, "replwarden_polls_total", &[("result", "ok")]).unwrap() >= before);
        let fds = std::fs::read_dir(format!("/proc/{}/fd", daemon.pid()))
            .unwrap()
            .count();
        assert!(fds < 100, "{fds} open file descriptors");
        std::thread::sleep(Duration::from_millis(500));
    }
    let opened = crowd.opened.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        opened > 300,
        "the daemon closed no silent connection ({opened} opened)"
    );
    wait_until("polls to go on", Duration::from_secs(30), || {
        (polls(port) >= start + 5.0).then_some(())
    });
    drop(crowd);
}
