//! Operating it: the Prometheus endpoint scraped for real, and libpq
//! conventions (environment, passfile, TLS) against real servers.

mod harness;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use harness::{free_port, wait_until, Client, Cluster, Daemon};

fn http_get(port: u16, path: &str) -> String {
    let mut stream =
        TcpStream::connect(("127.0.0.1", port)).expect("connect to the metrics endpoint");
    write!(stream, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

#[test]
fn the_metrics_endpoint_serves_what_the_daemon_sees_and_does() {
    let primary = Cluster::primary("primary");
    let _standby = Cluster::standby(&primary, "standby_a");
    let _rogue = Client::receivewal(&primary, "rogue_m");
    primary.wait_streaming("rogue_m");
    let port = free_port();
    let config = format!(
        "[postgres]\nconninfo = \"{}\"\n[daemon]\ninterval = \"200ms\"\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n\
         [[rule]]\nname = \"block\"\napplication_name = [\"rogue_*\"]\naction = \"terminate\"\n",
        primary.conninfo("replwarden")
    );
    let daemon = Daemon::start(&config, &[]);
    daemon.wait_for("the rogue to be terminated", Duration::from_secs(10), |e| {
        e["event"] == "action"
    });
    let text = wait_until("metrics after the action", Duration::from_secs(5), || {
        let r = http_get(port, "/metrics");
        r.contains("replwarden_actions_total{").then_some(r)
    });
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(
        text.contains("Content-Type: application/openmetrics-text"),
        "{text}"
    );
    for needle in [
        "replwarden_actions_total{rule=\"block\",action=\"terminate\",outcome=\"terminated\"} 1",
        "state=\"streaming\",sync_state=\"async\"} 1",
        "replwarden_walsender_info{application_name=\"standby_a\"",
        "replwarden_walsender_lag_bytes{application_name=\"standby_a\"",
        "kind=\"replay\"}",
        "replwarden_walsender_reply_age_seconds{application_name=\"standby_a\"",
        "replwarden_rule_matches{rule=\"block\"}",
        "replwarden_poll_duration_seconds_count ",
        "replwarden_polls_total{result=\"ok\"} ",
        "replwarden_connected 1",
        "replwarden_walsenders ",
        "replwarden_config_info{path=",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }

    daemon.write_config(&config.replace("interval = \"200ms\"", "interval = \"0s\""));
    daemon.signal(libc::SIGHUP);
    daemon.wait_message("reload rejected", Duration::from_secs(5));
    let text = http_get(port, "/metrics");
    assert!(
        text.contains("replwarden_config_reloads_total{result=\"failure\"} 1"),
        "{text}"
    );
    assert!(http_get(port, "/").starts_with("HTTP/1.1 404 Not Found"));
}
