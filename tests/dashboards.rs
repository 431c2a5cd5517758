//! What ships in `contrib/` works against real data: the alerting rules
//! pass their `promtool test rules` unit tests, and a real Prometheus
//! scraping a running daemon answers every dashboard panel's and every
//! alert's expression without error (the key panels with data), and
//! evaluates every alerting rule without error.

mod harness;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use harness::{free_port, wait_until, Client, Cluster, Daemon};
use serde_json::Value;

fn contrib(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("contrib")
        .join(path)
}

#[test]
fn the_alerting_rules_pass_their_unit_tests() {
    for args in [
        vec!["check", "rules", "alerts.yml"],
        vec!["test", "rules", "alerts_test.yml"],
    ] {
        let out = Command::new("promtool")
            .args(&args)
            .current_dir(contrib("prometheus"))
            .output()
            .expect("promtool (Debian package prometheus)");
        assert!(
            out.status.success(),
            "promtool {args:?}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A Prometheus server on a loopback port with its own storage, scraping
/// one target every second and evaluating `contrib/prometheus/alerts.yml`.
struct Prometheus {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Prometheus {
    fn start(target_port: u16) -> Prometheus {
        let dir = std::env::temp_dir().join(format!("rw-prometheus-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files: ['{}']\n\
             scrape_configs:\n  - job_name: replwarden\n    static_configs:\n      - targets: ['127.0.0.1:{target_port}']\n",
            contrib("prometheus/alerts.yml").display()
        );
        std::fs::write(dir.join("prometheus.yml"), config).unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
        let child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("prometheus (Debian package prometheus)");
        let p = Prometheus { child, port, dir };
        wait_until("Prometheus to be ready", Duration::from_secs(60), || {
            p.get("/-/ready")
                .filter(|r| r.contains("Ready"))
                .map(|_| ())
        });
        p
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The body of `GET path`, or `None` while nothing listens.
    fn get(&self, path: &str) -> Option<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
        let mut text = String::new();
        s.read_to_string(&mut text).ok()?;
        text.split_once("\r\n\r\n").map(|(_, b)| b.to_string())
    }

    fn api(&self, path: &str) -> Value {
        let body = self.get(path).expect("Prometheus answers");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
    }

    /// An instant query: its result, or the error Prometheus gave.
    fn query(&self, expr: &str) -> Result<Vec<Value>, String> {
        let v = self.api(&format!("/api/v1/query?query={}", encode(expr)));
        if v["status"] != "success" {
            return Err(v.to_string());
        }
        Ok(v["data"]["result"].as_array().cloned().unwrap_or_default())
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Percent-encodes a query parameter.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Every panel target of the dashboard: (panel title, expression with the
/// dashboard's variables filled in as Grafana would for "All").
fn panel_queries() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(contrib("grafana/replwarden.json")).unwrap();
    let dashboard: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"]
                .as_str()
                .unwrap()
                .replace("$__rate_interval", "30s")
                .replace("$instance", ".*");
            out.push((panel["title"].as_str().unwrap().to_string(), expr));
        }
    }
    out
}

/// Every alert's expression in `alerts.yml` (one line each).
fn alert_queries() -> Vec<String> {
    std::fs::read_to_string(contrib("prometheus/alerts.yml"))
        .unwrap()
        .lines()
        .filter_map(|l| l.trim().strip_prefix("expr: "))
        .map(str::to_string)
        .collect()
}

/// A real run (a sync standby held by the quorum guard while WAL is
/// written, a logical slot, a client killed and coming back), scraped by
/// Prometheus: every panel and alert expression runs without error, the
/// panels of the families this run feeds have data, and every alerting
/// rule evaluates cleanly. With `REPLWARDEN_PANELS_PNG=<file>` (and
/// `REPLWARDEN_PANELS_SECONDS`, default 30) the run lasts that long and
/// the panels are drawn into the file by `contrib/grafana/render_panels.py`.
#[test]
fn prometheus_answers_every_panel_and_alert_of_a_real_run() {
    let primary = Cluster::primary("primary");
    let standby = Cluster::standby(&primary, "standby_a");
    primary.sql("ALTER SYSTEM SET synchronous_standby_names = 'standby_a'");
    primary.sql("SELECT pg_reload_conf()");
    let _logical = Client::recvlogical(&primary, "reports");
    let _victim = Client::receivewal(&primary, "victim");
    primary.wait_streaming("victim");
    let _pump = Client::wal_pump(&primary);
    // A base backup streaming at 32 kB/s, with an estimated total.
    let _backup = Client::base_backup(&primary, "nightly_backup", 32, true, true);
    let port = free_port();
    let config = format!(
        "[postgres]\nconninfo = \"{}\"\n[daemon]\ninterval = \"500ms\"\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n\
         [limits]\nreconnect_backoff = \"3s\"\n\
         [[rule]]\nname = \"block\"\napplication_name = [\"victim\"]\naction = \"terminate\"\n\
         [[rule]]\nname = \"sync_lag\"\napplication_name = [\"standby_a\"]\nreplay_lag_bytes = \"64kB\"\naction = \"terminate\"\n\
         [[rule]]\nname = \"slots\"\napplication_name = [\"reports\"]\nreplay_lag_bytes = \"1TB\"\naction = \"log\"\n",
        primary.conninfo("replwarden")
    );
    let daemon = Daemon::start(&config, &["--log-level", "info"]);
    let prometheus = Prometheus::start(port);
    let seconds: u64 = std::env::var("REPLWARDEN_PANELS_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    // Replay paused part of the time: a distance the sync rule breaches.
    std::thread::sleep(Duration::from_secs(seconds / 3));
    standby.sql("SELECT pg_wal_replay_pause()");
    daemon.wait_message(
        "held: would break synchronous quorum",
        Duration::from_secs(60),
    );
    std::thread::sleep(Duration::from_secs(seconds / 3));
    standby.sql("SELECT pg_wal_replay_resume()");
    std::thread::sleep(Duration::from_secs(seconds / 3));
    wait_until("20 scrapes", Duration::from_secs(120), || {
        let r = prometheus.query("count_over_time(up{job=\"replwarden\"}[5m]) >= 20");
        r.ok().filter(|r| !r.is_empty()).map(|_| ())
    });
    assert_eq!(
        prometheus
            .query("up{job=\"replwarden\"} == 1")
            .unwrap()
            .len(),
        1,
        "the scrape failed: {}",
        prometheus.api("/api/v1/targets")
    );

    // Every family the endpoint declares is on a panel.
    let panels = panel_queries();
    let exposition = harness::http_get(port, "/metrics");
    let families: Vec<&str> = exposition
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(families.len() >= 17, "{exposition}");
    for family in families {
        assert!(
            panels.iter().any(|(_, e)| e.contains(family)),
            "no panel shows {family}"
        );
    }
    // Every expression runs; the panels of what this run fed have data.
    // Only lag in time may be empty: PostgreSQL sets it to NULL once a
    // standby has caught up and stays idle.
    for (title, expr) in &panels {
        let result = prometheus
            .query(expr)
            .unwrap_or_else(|e| panic!("panel {title:?}: {expr}: {e}"));
        if title != "Lag (time)" {
            assert!(!result.is_empty(), "panel {title:?} has no data: {expr}");
        }
    }
    for expr in alert_queries() {
        prometheus
            .query(&expr)
            .unwrap_or_else(|e| panic!("alert {expr}: {e}"));
    }
    let rules = prometheus.api("/api/v1/rules");
    let rules: Vec<&Value> = rules["data"]["groups"][0]["rules"]
        .as_array()
        .expect("the alerts are loaded")
        .iter()
        .collect();
    assert_eq!(rules.len(), alert_queries().len());
    for rule in &rules {
        assert_eq!(rule["health"], "ok", "{rule}");
    }
    let firing = |name: &str| {
        rules
            .iter()
            .find(|r| r["name"] == name)
            .map(|r| r["state"].as_str().unwrap_or_default() == "firing")
    };
    assert_eq!(firing("ReplwardenActionTaken"), Some(true));
    assert_eq!(firing("ReplwardenDown"), Some(false));

    if let Ok(png) = std::env::var("REPLWARDEN_PANELS_PNG") {
        let out = Command::new("python3")
            .arg(contrib("grafana/render_panels.py"))
            .arg(prometheus.url())
            .arg(contrib("grafana/replwarden.json"))
            .arg(&png)
            .arg((seconds + 30).to_string())
            .output()
            .expect("python3");
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stderr),
            prometheus.log()
        );
    }
}
