//! Operating it: the Prometheus endpoint scraped for real, and libpq
//! conventions (environment, passfile, TLS) against real servers.

mod harness;

use std::time::Duration;

use harness::{free_port, wait_until, Client, Cluster, Daemon};

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
        let r = harness::http_get(port, "/metrics");
        r.contains("replwarden_actions_total{").then_some(r)
    });
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(
        text.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
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
    let text = harness::http_get(port, "/metrics");
    assert!(
        text.contains("replwarden_config_reloads_total{result=\"failure\"} 1"),
        "{text}"
    );
    assert!(harness::http_get(port, "/").starts_with("HTTP/1.1 404 Not Found"));
}

fn replwarden(
    args: &[&str],
    config: &std::path::Path,
    env: &[(&str, &str)],
) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_replwarden"))
        .args(args)
        .arg("--config")
        .arg(config)
        .env_remove("PGPASSWORD")
        .env_remove("PGPASSFILE")
        .envs(env.iter().copied())
        .output()
        .expect("run replwarden")
}

/// libpq's environment and password file, as an operator would use them;
/// the password appears in no output and no log line.
#[test]
fn passwords_from_environment_and_passfile_never_leak() {
    let primary = Cluster::primary("primary");
    primary.sql("CREATE ROLE pwuser LOGIN PASSWORD 's3cret-pw'; GRANT pg_monitor, pg_signal_backend TO pwuser");
    primary.prepend_hba("host all pwuser 127.0.0.1/32 scram-sha-256");
    let passfile = primary.write_owned(
        "pgpass",
        format!(
            "# host:port:db:user:password\n127.0.0.1:{}:*:pwuser:s3cret-pw\n",
            primary.port
        )
        .as_bytes(),
        0o600,
    );
    let config = primary.write_owned(
        "libpq.toml",
        b"[postgres]\nconninfo = \"dbname=postgres\"\n",
        0o644,
    );
    let port = primary.port.to_string();
    let env = [
        ("PGHOST", "127.0.0.1"),
        ("PGPORT", port.as_str()),
        ("PGUSER", "pwuser"),
        ("PGPASSFILE", passfile.to_str().unwrap()),
    ];

    let check = replwarden(&["check"], &config, &env);
    let text = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "{text}");
    assert!(
        text.contains(&format!("host=127.0.0.1 port={port} dbname=postgres user=pwuser password=<hidden> (password: passfile {}", passfile.display())),
        "{text}"
    );
    let plan = replwarden(&["plan"], &config, &env);
    assert!(
        plan.status.success(),
        "{}",
        String::from_utf8_lossy(&plan.stderr)
    );
    assert!(String::from_utf8_lossy(&plan.stdout).contains("connected as pwuser"));

    // PGPASSWORD wins over the passfile; a wrong one fails cleanly, unechoed.
    let mut wrong = env.to_vec();
    wrong.push(("PGPASSWORD", "not-the-s3cret"));
    let plan = replwarden(&["plan"], &config, &wrong);
    let err = String::from_utf8_lossy(&plan.stderr);
    assert_eq!(plan.status.code(), Some(1), "{err}");
    assert!(
        err.contains("password authentication failed for user \"pwuser\""),
        "{err}"
    );
    assert!(!err.contains("not-the-s3cret"));

    // A passfile others can read is ignored, with libpq's warning.
    let loose = primary.write_owned("pgpass-loose", &std::fs::read(&passfile).unwrap(), 0o644);
    let mut env_loose = env.to_vec();
    env_loose[3] = ("PGPASSFILE", loose.to_str().unwrap());
    let text =
        String::from_utf8_lossy(&replwarden(&["check"], &config, &env_loose).stdout).into_owned();
    assert!(text.contains("has group or world access"), "{text}");

    // The daemon itself, with the passfile: no password in any log line.
    let _rogue = Client::receivewal(&primary, "rogue_pw");
    primary.wait_streaming("rogue_pw");
    let rules = "[postgres]\nconninfo = \"dbname=postgres\"\n[daemon]\ninterval = \"200ms\"\n\
                 [[rule]]\nname = \"block\"\napplication_name = [\"rogue_*\"]\naction = \"terminate\"\n";
    let daemon = Daemon::start_with_env(rules, &[], &env);
    daemon.wait_for("an action as pwuser", Duration::from_secs(10), |e| {
        e["event"] == "action"
    });
    assert!(!daemon.dump().contains("s3cret"));
}

/// `sslmode` up to verify-full with a root certificate, against a server
/// that only accepts TLS for this role.
#[test]
fn tls_up_to_verify_full() {
    let primary = Cluster::primary("primary");
    let dir = primary.dir.clone();
    let openssl = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(&dir)
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    for ca in ["ca", "other-ca"] {
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN={ca}"),
            "-keyout",
            &format!("{ca}.key"),
            "-out",
            &format!("{ca}.crt"),
        ]);
    }
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        "server.key.tmp",
        "-out",
        "server.csr",
    ]);
    std::fs::write(dir.join("san.ext"), "subjectAltName=DNS:localhost\n").unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "san.ext",
        "-out",
        "server.crt.tmp",
    ]);
    let key = primary.write_owned(
        "server.key",
        &std::fs::read(dir.join("server.key.tmp")).unwrap(),
        0o600,
    );
    let crt = primary.write_owned(
        "server.crt",
        &std::fs::read(dir.join("server.crt.tmp")).unwrap(),
        0o644,
    );
    primary.append_conf(&format!(
        "ssl = on\nssl_cert_file = '{}'\nssl_key_file = '{}'\n",
        crt.display(),
        key.display()
    ));
    primary.sql("CREATE ROLE tlsuser LOGIN; GRANT pg_monitor, pg_signal_backend TO tlsuser");
    primary.prepend_hba(
        "hostnossl all tlsuser 127.0.0.1/32 reject\nhostssl all tlsuser 127.0.0.1/32 trust",
    );
    primary.restart();

    let plan = |conninfo: &str| {
        let config = primary.write_owned(
            "tls.toml",
            format!(
                "[postgres]\nconninfo = \"{conninfo} port={} user=tlsuser dbname=postgres\"\n",
                primary.port
            )
            .as_bytes(),
            0o644,
        );
        let out = replwarden(&["plan"], &config, &[]);
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let ca = dir.join("ca.crt");
    let other = dir.join("other-ca.crt");
    let (ok, err) = plan(&format!(
        "host=localhost sslmode=verify-full sslrootcert={}",
        ca.display()
    ));
    assert!(ok, "verify-full against the right CA: {err}");
    let (ok, err) = plan(&format!(
        "host=localhost sslmode=verify-full sslrootcert={}",
        other.display()
    ));
    assert!(!ok && err.contains("certificate verify failed"), "{err}");
    let (ok, err) = plan(&format!(
        "host=127.0.0.1 sslmode=verify-full sslrootcert={}",
        ca.display()
    ));
    assert!(
        !ok && err.contains("certificate verify failed"),
        "the name does not match: {err}"
    );
    let (ok, err) = plan(&format!(
        "host=127.0.0.1 sslmode=verify-ca sslrootcert={}",
        ca.display()
    ));
    assert!(ok, "verify-ca does not check the name: {err}");
    let (ok, err) = plan("host=127.0.0.1 sslmode=require");
    assert!(ok, "require without a root certificate: {err}");
    let (ok, err) = plan("host=127.0.0.1 sslmode=disable");
    assert!(
        !ok && err.contains("no encryption"),
        "the server insists on TLS: {err}"
    );
}
