//! The control-path matrix (README "Reliability"): every control event —
//! SIGHUP with a good file, with a broken file, a changed `conninfo`,
//! `dry_run` flipped both ways, a changed action, a changed `[limits]`,
//! SIGTERM, SIGINT — in every phase of the loop: the server down at start,
//! a connect hanging on a stopped postmaster, polling, in the middle of a
//! confirmed kill, backing off after losing the server. Each outcome is
//! asserted from the daemon's JSON log and from the server. Also the
//! connection-string paths an operator takes: host lists with
//! `target_session_attrs`, the default user under `env -i`, values at the
//! bounds `check` enforces.

mod harness;

use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::{Duration, Instant};

use harness::{free_port, wait_until, Client, Cluster, Daemon};
use serde_json::Value;

/// Most waits: generous, for a loaded 2-core machine.
const LONG: Duration = Duration::from_secs(60);

/// A config for `conninfo` with `extra` (tables and rules) after it.
fn conf(conninfo: &str, extra: &str) -> String {
    format!("[postgres]\nconninfo = \"{conninfo}\"\n[daemon]\ninterval = \"200ms\"\n{extra}")
}

fn says(text: &'static str) -> impl Fn(&Value) -> bool {
    move |e: &Value| e["message"].as_str().is_some_and(|m| m.contains(text))
}

/// The daemon's backends on `cluster`.
fn daemon_backends(cluster: &Cluster) -> Vec<i32> {
    cluster
        .sql("SELECT pid FROM pg_stat_activity WHERE application_name = 'replwarden' ORDER BY pid")
        .lines()
        .filter_map(|l| l.parse().ok())
        .collect()
}

/// Waits until the daemon's backend is in the middle of confirming a
/// kill: its last statement, run again every few milliseconds, is the
/// look for the terminated walsender.
fn wait_confirming(cluster: &Cluster) {
    let confirming = || {
        cluster.sql(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'replwarden' \
             AND query LIKE 'SELECT 1 FROM pg_stat_activity%'",
        ) == "1"
    };
    wait_until("the daemon confirming a kill", LONG, || {
        (confirming() && {
            std::thread::sleep(Duration::from_millis(300));
            confirming()
        })
        .then_some(())
    });
}

/// Whether `pid` has a SIGTERM pending (sent, not yet handled: the
/// process is stopped).
fn sigterm_pending(pid: i32) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .filter(|l| l.starts_with("SigPnd:") || l.starts_with("ShdPnd:"))
        .filter_map(|l| u64::from_str_radix(l.split_whitespace().nth(1)?, 16).ok())
        .any(|mask| mask & (1 << (libc::SIGTERM - 1)) != 0)
}

/// Stops the daemon with `signal` and checks it exits 0 having said so.
fn stops_cleanly(daemon: &mut Daemon, signal: i32, within: Duration) {
    let mark = daemon.mark();
    daemon.signal(signal);
    let status = daemon.wait_exit(within).unwrap_or_else(|| {
        panic!(
            "still running {within:?} after the signal:\n{}",
            daemon.dump()
        )
    });
    assert!(status.success(), "exit {status:?}:\n{}", daemon.dump());
    daemon.wait_for_from(
        mark,
        "the shutdown",
        Duration::from_secs(5),
        says("shutdown requested"),
    );
    daemon.wait_for_from(mark, "the last line", Duration::from_secs(5), |e| {
        e["message"] == "replwarden stopped"
    });
}

/// Phases "server down at start" and "backing off after losing the
/// server": broken and good reloads are handled while waiting, a changed
/// `conninfo` is tried at once (it used to stop the daemon, exit 0), and
/// SIGTERM stops it.
#[test]
fn while_waiting_for_the_server() {
    let down = Cluster::primary("down");
    down.stop("fast");
    let up = Cluster::primary("up");
    let rules = "[[rule]]\nname = \"block\"\napplication_name = \"rogue_*\"\naction = \"log\"\n";
    let mut daemon = Daemon::start(&conf(&down.conninfo("replwarden"), rules), &[]);
    daemon.wait_message("waiting for PostgreSQL", LONG);

    // Broken file: rejected, still waiting.
    let mark = daemon.mark();
    daemon.write_config(&conf(
        &down.conninfo("replwarden"),
        "[daemon]\ninterval = \"soon\"\n",
    ));
    daemon.signal(libc::SIGHUP);
    daemon.wait_for_from(mark, "the rejection", LONG, says("reload rejected"));
    // Good file with dry_run, an action and [limits] changed: applied
    // (seen on the first poll once connected), still waiting.
    let changed = format!("{rules}\n[limits]\nterminate_timeout = \"1s\"\n")
        .replace("action = \"log\"", "action = \"terminate\"");
    let good = conf(&down.conninfo("replwarden"), &changed).replace(
        "interval = \"200ms\"",
        "interval = \"200ms\"\ndry_run = true",
    );
    let mark = daemon.mark();
    daemon.write_config(&good);
    daemon.signal(libc::SIGHUP);
    let reloaded = daemon.wait_for_from(mark, "the reload", LONG, says("config reloaded"));
    assert_eq!(
        (
            reloaded["reconnect"].as_bool(),
            reloaded["dry_run"].as_bool()
        ),
        (Some(false), Some(true))
    );
    assert!(
        daemon.wait_exit(Duration::from_millis(500)).is_none(),
        "{}",
        daemon.dump()
    );

    // Fixing conninfo: connects to the new server at once.
    let mark = daemon.mark();
    daemon.write_config(&good.replace(&down.conninfo("replwarden"), &up.conninfo("replwarden")));
    daemon.signal(libc::SIGHUP);
    let reloaded = daemon.wait_for_from(mark, "the reload", LONG, says("config reloaded"));
    assert_eq!(reloaded["reconnect"], true);
    let connected = daemon.wait_for_from(mark, "a connection to the fixed target", LONG, |e| {
        e["message"] == "connected to PostgreSQL"
    });
    assert_eq!(connected["host"], format!("127.0.0.1:{}", up.port));
    assert_eq!(daemon_backends(&up).len(), 1);
    // The reloaded policy is the one in force: dry run, terminate.
    let _rogue = Client::receivewal(&up, "rogue_wait");
    let action = daemon.wait_for_from(mark, "the dry-run decision", LONG, |e| {
        e["event"] == "action"
    });
    assert_eq!(
        (action["action"].as_str(), action["outcome"].as_str()),
        (Some("terminate"), Some("dry_run"))
    );

    // Lose the server: backing off. A broken reload is rejected, a good
    // one pointing at the other server (now up) connects at once.
    let mark = daemon.mark();
    up.stop("fast");
    daemon.wait_for_from(mark, "the loss", LONG, says("lost the connection"));
    daemon.wait_for_from(mark, "the backoff", LONG, says("waiting for PostgreSQL"));
    let mark = daemon.mark();
    daemon.write_config("[daemon]\ninterval = 5\n");
    daemon.signal(libc::SIGHUP);
    daemon.wait_for_from(mark, "the rejection", LONG, says("reload rejected"));
    down.start();
    let mark = daemon.mark();
    daemon.write_config(&good);
    daemon.signal(libc::SIGHUP);
    let connected = daemon.wait_for_from(mark, "a connection to the other server", LONG, |e| {
        e["message"] == "connected to PostgreSQL"
    });
    assert_eq!(connected["host"], format!("127.0.0.1:{}", down.port));

    // Backing off again, then SIGTERM: a clean stop.
    let mark = daemon.mark();
    down.stop("fast");
    daemon.wait_for_from(mark, "the backoff", LONG, says("waiting for PostgreSQL"));
    stops_cleanly(&mut daemon, libc::SIGTERM, Duration::from_secs(10));
}

/// Phase "connect hanging on a stopped postmaster" (the kernel accepts
/// the connection, nobody answers): a reload is handled, a changed
/// `conninfo` abandons the hanging attempt, SIGINT stops at once.
#[test]
fn while_a_connect_hangs_on_a_stopped_postmaster() {
    let frozen = Cluster::primary("frozen");
    let other = Cluster::primary("other");
    frozen.freeze(harness::postmaster_pid(&frozen));
    // connect_timeout=120: the hang would outlast every wait below.
    let hanging = format!("{} connect_timeout=120", frozen.conninfo("replwarden"));
    let daemon = Daemon::start(&conf(&hanging, ""), &[]);
    wait_until(
        "the daemon's connection to the frozen postmaster",
        LONG,
        || {
            let out = Command::new("ss")
                .args(["-tn", "state", "established"])
                .output()
                .ok()?;
            String::from_utf8_lossy(&out.stdout)
                .contains(&format!(":{} ", frozen.port))
                .then_some(())
        },
    );
    let mark = daemon.mark();
    daemon.write_config(&conf(&hanging, "[daemon]\ndry_run = yes\n"));
    daemon.signal(libc::SIGHUP);
    daemon.wait_for_from(mark, "the rejection", LONG, says("reload rejected"));
    let mark = daemon.mark();
    daemon.write_config(&conf(&other.conninfo("replwarden"), ""));
    daemon.signal(libc::SIGHUP);
    daemon.wait_for_from(mark, "the reload", LONG, says("config reloaded"));
    daemon.wait_for_from(
        mark,
        "the attempt abandoned",
        LONG,
        says("connection settings changed while connecting"),
    );
    let connected = daemon.wait_for_from(mark, "a connection to the other server", LONG, |e| {
        e["message"] == "connected to PostgreSQL"
    });
    assert_eq!(connected["host"], format!("127.0.0.1:{}", other.port));

    // Hanging again, then SIGINT: it does not wait for the hang.
    let mut daemon = Daemon::start(&conf(&hanging, ""), &[]);
    std::thread::sleep(Duration::from_secs(1));
    stops_cleanly(&mut daemon, libc::SIGINT, Duration::from_secs(30));
}

/// Phase "polling": a broken file keeps the policy; dry run to enforcing
/// acts on new walsenders; enforcing to dry run signals nothing more; a
/// changed action applies to new walsenders; a changed `conninfo`
/// reconnects; SIGINT stops. Durations at the bounds `check` allows run.
#[test]
fn while_polling() {
    let primary = Cluster::primary("primary");
    let rules = |dry_run: bool, watch_action: &str| {
        conf(
            &primary.conninfo("replwarden"),
            &format!(
                "dry_run = {dry_run}\n[limits]\nreconnect_backoff = \"0s\"\nmax_actions = 100\n\
                 [[rule]]\nname = \"block\"\napplication_name = \"rogue_*\"\naction = \"terminate\"\n\
                 [[rule]]\nname = \"watch\"\napplication_name = \"watch_*\"\naction = \"{watch_action}\"\n\
                 [[rule]]\nname = \"far-grace\"\napplication_name = \"far_*\"\ngrace = \"100y\"\naction = \"terminate\"\n\
                 [[rule]]\nname = \"far-conditions\"\napplication_name = \"far_*\"\nin_state_for = \"100y\"\nno_progress_for = \"100y\"\nreplay_lag = \"100y\"\nretained_wal = \"1024TB\"\n"
            ),
        )
    };
    let mut daemon = Daemon::start(&rules(true, "log"), &[]);
    daemon.wait_message("connected to PostgreSQL", LONG);
    // A walsender under the longest grace and conditions `check` allows.
    let _far = Client::receivewal(&primary, "far_1");
    let far = primary.wait_streaming("far_1");
    let _a = Client::receivewal(&primary, "rogue_a");
    primary.wait_streaming("rogue_a");
    let judged = daemon.wait_for("rogue_a judged in the dry run", LONG, |e| {
        e["event"] == "action" && e["application_name"] == "rogue_a"
    });
    assert_eq!(judged["outcome"], "dry_run");

    // A broken file: rejected, the dry run goes on.
    let mark = daemon.mark();
    daemon.write_config(&rules(true, "log").replace("action = \"terminate\"", "action = \"kill\""));
    daemon.signal(libc::SIGHUP);
    daemon.wait_for_from(mark, "the rejection", LONG, says("reload rejected"));

    // Dry run -> enforcing: a new walsender is terminated; polling goes on.
    let mark = daemon.mark();
    daemon.write_config(&rules(false, "log"));
    daemon.signal(libc::SIGHUP);
    let reloaded = daemon.wait_for_from(mark, "the reload", LONG, says("config reloaded"));
    assert_eq!(
        (
            reloaded["dry_run"].as_bool(),
            reloaded["reconnect"].as_bool()
        ),
        (Some(false), Some(false))
    );
    let _b = Client::receivewal(&primary, "rogue_b");
    let acted = daemon.wait_for_from(mark, "rogue_b terminated", LONG, |e| {
        e["event"] == "action" && e["application_name"] == "rogue_b"
    });
    assert_eq!(acted["outcome"], "terminated");
    let b = acted["pid"].as_i64().unwrap();
    assert!(primary.walsenders().iter().all(|w| i64::from(w.pid) != b));

    // A changed action (log -> terminate): applies to a new walsender.
    let _w1 = Client::receivewal(&primary, "watch_1");
    primary.wait_streaming("watch_1");
    daemon.wait_for_from(mark, "watch_1 logged", LONG, |e| {
        e["event"] == "action" && e["application_name"] == "watch_1" && e["outcome"] == "logged"
    });
    let mark = daemon.mark();
    daemon.write_config(&rules(false, "terminate"));
    daemon.signal(libc::SIGHUP);
    daemon.wait_for_from(mark, "the reload", LONG, says("config reloaded"));
    let _w2 = Client::receivewal(&primary, "watch_2");
    let acted = daemon.wait_for_from(mark, "watch_2 terminated", LONG, |e| {
        e["event"] == "action" && e["application_name"] == "watch_2"
    });
    assert_eq!(acted["outcome"], "terminated");
    let w2 = acted["pid"].as_i64().unwrap();
    assert!(primary.walsenders().iter().all(|w| i64::from(w.pid) != w2));

    // Enforcing -> dry run: a new rogue is only judged, and lives on.
    let mark = daemon.mark();
    daemon.write_config(&rules(true, "terminate"));
    daemon.signal(libc::SIGHUP);
    daemon.wait_for_from(mark, "the reload", LONG, says("config reloaded"));
    let _c = Client::receivewal(&primary, "rogue_c");
    let c = primary.wait_streaming("rogue_c");
    let judged = daemon.wait_for_from(mark, "rogue_c judged", LONG, |e| {
        e["event"] == "action" && e["application_name"] == "rogue_c"
    });
    assert_eq!(judged["outcome"], "dry_run");
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        primary.walsenders().iter().any(|w| w.pid == c.pid),
        "rogue_c was signalled"
    );
    assert!(
        primary.walsenders().iter().any(|w| w.pid == far.pid),
        "far_1 was signalled"
    );

    // A changed conninfo: a new session, the old backend gone.
    let old = daemon_backends(&primary);
    let mark = daemon.mark();
    daemon.write_config(&rules(true, "terminate").replace(
        &primary.conninfo("replwarden"),
        &format!("{} connect_timeout=7", primary.conninfo("replwarden")),
    ));
    daemon.signal(libc::SIGHUP);
    let reloaded = daemon.wait_for_from(mark, "the reload", LONG, says("config reloaded"));
    assert_eq!(reloaded["reconnect"], true);
    daemon.wait_for_from(mark, "the reconnect", LONG, |e| {
        e["message"] == "connected to PostgreSQL"
    });
    let new = wait_until("one new backend", LONG, || {
        let now = daemon_backends(&primary);
        (now.len() == 1 && now != old).then_some(now)
    });
    assert_ne!(new, old);

    stops_cleanly(&mut daemon, libc::SIGINT, Duration::from_secs(10));
    wait_until("the daemon's backend to go", LONG, || {
        daemon_backends(&primary).is_empty().then_some(())
    });
}

/// The dry run's decisions do not count as done once enforcing: a
/// walsender judged in the dry run is acted on after `dry_run = false`.
#[test]
fn flipping_to_enforcing_acts_on_walsenders_judged_in_the_dry_run() {
    let primary = Cluster::primary("primary");
    let text = |dry_run: bool| {
        conf(
            &primary.conninfo("replwarden"),
            &format!(
                "dry_run = {dry_run}\n[[rule]]\nname = \"block\"\napplication_name = \"rogue_*\"\naction = \"terminate\"\n"
            ),
        )
    };
    let daemon = Daemon::start(&text(true), &[]);
    let _a = Client::receivewal(&primary, "rogue_judged");
    let a = primary.wait_streaming("rogue_judged");
    daemon.wait_for("the dry-run decision", LONG, |e| e["event"] == "action");
    let mark = daemon.mark();
    daemon.write_config(&text(false));
    daemon.signal(libc::SIGHUP);
    let acted = daemon.wait_for_from(mark, "the terminate after the flip", LONG, |e| {
        e["event"] == "action" && e["outcome"] == "terminated"
    });
    assert_eq!(acted["pid"].as_i64(), Some(i64::from(a.pid)));
}

/// Phase "in the middle of a confirmed kill" (the walsender is stopped,
/// so the daemon waits `terminate_timeout` for it to exit): a reloaded
/// `terminate_timeout` is used for the next signal; a reload asked during
/// the kill is applied after it; the watchdog is fed throughout; SIGTERM
/// lets the signal in flight finish and logs it, then stops.
#[test]
fn in_the_middle_of_a_confirmed_kill() {
    let primary = Cluster::primary("primary");
    let text = |terminate_timeout: &str| {
        format!(
            "[postgres]\nconninfo = \"{}\"\nstatement_timeout = \"20s\"\n[daemon]\ninterval = \"200ms\"\n\
             [limits]\nterminate_timeout = \"{terminate_timeout}\"\nreconnect_backoff = \"0s\"\nmax_retries = 100\n\
             [[rule]]\nname = \"block\"\napplication_name = \"rogue_*\"\ngrace = \"3s\"\naction = \"terminate\"\n",
            primary.conninfo("replwarden")
        )
    };
    // The notify socket is read all along, as systemd does (a full socket
    // would block the daemon's sends); watchdog pings are timed.
    let socket_path = primary.dir.join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    let pings = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Instant>::new()));
    let sink = pings.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = socket.recv(&mut buf) {
            if String::from_utf8_lossy(&buf[..n]).contains("WATCHDOG=1") {
                sink.lock().unwrap().push(Instant::now());
            }
        }
    });
    let mut daemon = Daemon::start_with_env(
        &text("6s"),
        &[],
        &[
            ("NOTIFY_SOCKET", socket_path.to_str().unwrap()),
            ("WATCHDOG_USEC", "1000000"),
        ],
    );
    daemon.wait_message("connected to PostgreSQL", LONG);

    // A reloaded terminate_timeout is used at once (not after a reconnect).
    let mark = daemon.mark();
    daemon.write_config(&text("300ms"));
    daemon.signal(libc::SIGHUP);
    let reloaded = daemon.wait_for_from(mark, "the reload", LONG, says("config reloaded"));
    assert_eq!(reloaded["reconnect"], false);
    let _rogue = Client::receivewal(&primary, "rogue_frozen");
    let rogue = primary.wait_streaming("rogue_frozen");
    // Stopped within the rule's grace, before anything is sent to it.
    primary.freeze(rogue.pid);
    wait_until("the terminate sent", LONG, || {
        sigterm_pending(rogue.pid).then_some(())
    });
    let sent = Instant::now();
    let first = daemon.wait_for_from(mark, "the kill reported", LONG, |e| e["event"] == "action");
    assert_eq!(first["outcome"], "not_exited");
    assert!(
        sent.elapsed() < Duration::from_secs(5),
        "the kill waited {:?}: the reloaded 300ms was not used (6s was)",
        sent.elapsed()
    );

    // Back to 6 s: every retry (one per poll) now waits 6 s for the
    // stopped walsender. A SIGHUP in the middle of one is applied once the
    // kill is over, and the watchdog is fed while the daemon waits.
    let mark = daemon.mark();
    daemon.write_config(&text("6s"));
    daemon.signal(libc::SIGHUP);
    daemon.wait_for_from(mark, "the reload", LONG, says("config reloaded"));
    wait_confirming(&primary);
    let in_kill = daemon.mark();
    daemon.signal(libc::SIGHUP);
    let watched = Instant::now();
    std::thread::sleep(Duration::from_secs(8));
    let mut times: Vec<Instant> = pings
        .lock()
        .unwrap()
        .iter()
        .copied()
        .filter(|t| *t >= watched)
        .collect();
    times.insert(0, watched);
    times.push(Instant::now());
    let longest = times.windows(2).map(|w| w[1] - w[0]).max().unwrap();
    assert!(
        longest < Duration::from_secs(5),
        "no watchdog ping for {longest:?} (WatchdogSec=1s) during 6 s kills"
    );
    daemon.wait_for_from(in_kill, "the reload", LONG, says("config reloaded"));
    let events = daemon.events();
    let after: Vec<&Value> = events.iter().skip(in_kill).collect();
    let reload_at = after.iter().position(|e| e["message"] == "config reloaded");
    let action_at = after.iter().position(|e| e["event"] == "action");
    assert!(
        matches!((action_at, reload_at), (Some(a), Some(r)) if a < r),
        "the reload waits for the kill in flight:\n{}",
        daemon.dump()
    );

    // SIGTERM during a kill: the wait for the exit ends, the signal sent
    // is logged, nothing more is sent, and it stops.
    wait_confirming(&primary);
    let before = daemon.actions().len();
    let mark = daemon.mark();
    daemon.signal(libc::SIGTERM);
    let status = daemon
        .wait_exit(Duration::from_secs(5))
        .unwrap_or_else(|| panic!("still running 5 s after SIGTERM:\n{}", daemon.dump()));
    assert!(status.success(), "{}", daemon.dump());
    let during = daemon.wait_for_from(
        mark,
        "the stop during a poll",
        Duration::from_secs(5),
        says("shutdown requested during a poll"),
    );
    assert_eq!(during["finished"], true, "{}", daemon.dump());
    let actions = daemon.actions();
    assert_eq!(
        actions.len(),
        before + 1,
        "the kill in flight at SIGTERM is logged:\n{}",
        daemon.dump()
    );
    let last = &actions[before];
    assert_eq!(
        (last["outcome"].as_str(), last["pid"].as_i64()),
        (Some("exit_unconfirmed"), Some(i64::from(rogue.pid)))
    );
    assert!(
        primary.walsenders().iter().any(|w| w.pid == rogue.pid),
        "stopped, so still there"
    );
}

/// Host lists: `target_session_attrs` picks the server (libpq 14 values),
/// the log names the host connected to, and a failed connect over a list
/// names every host's error. The longest `statement_timeout` `check`
/// allows is one the server takes.
#[test]
fn host_lists_and_target_session_attrs() {
    let primary = Cluster::primary("primary");
    let standby = Cluster::standby(&primary, "standby");
    let dead = free_port();
    let list = |ports: &[u16], attrs: &str| {
        let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
        format!(
            "[postgres]\nconninfo = \"host={} port={} dbname=postgres user=replwarden target_session_attrs={attrs}\"\n\
             statement_timeout = \"24d 20h 31m 23s 647ms\"\n[limits]\nterminate_timeout = \"500ms\"\n",
            vec!["127.0.0.1"; ports.len()].join(","),
            ports.join(",")
        )
    };
    for (ports, attrs, want) in [
        (vec![standby.port, primary.port], "primary", primary.port),
        (vec![standby.port, primary.port], "read-write", primary.port),
        (vec![primary.port, standby.port], "standby", standby.port),
        (vec![primary.port, standby.port], "read-only", standby.port),
        (
            vec![dead, primary.port, standby.port],
            "prefer-standby",
            standby.port,
        ),
        (vec![dead, primary.port], "prefer-standby", primary.port),
        (vec![dead, primary.port], "any", primary.port),
    ] {
        let mut daemon = Daemon::start(&list(&ports, attrs), &[]);
        let connected = daemon.wait_message("connected to PostgreSQL", LONG);
        assert_eq!(
            connected["host"],
            format!("127.0.0.1:{want}"),
            "{attrs} over {ports:?}"
        );
        daemon.wait_message("privilege preflight passed", LONG);
        stops_cleanly(&mut daemon, libc::SIGTERM, Duration::from_secs(10));
    }
    // No host fits: every host's error is in the log.
    let daemon = Daemon::start(&list(&[dead, standby.port], "primary"), &[]);
    let waiting = daemon.wait_message("waiting for PostgreSQL", LONG);
    let error = waiting["error"].as_str().unwrap();
    assert!(
        error.contains(&format!("127.0.0.1:{dead}: cannot connect")),
        "{error}"
    );
    assert!(
        error.contains(&format!("127.0.0.1:{}: connected, but the server is a standby and target_session_attrs is primary", standby.port)),
        "{error}"
    );
}

fn check(text: &str, env_clear: bool) -> std::process::Output {
    let dir =
        std::env::temp_dir().join(format!("rw-control-{}-{}", std::process::id(), free_port()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("c.toml");
    std::fs::write(&path, text).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_replwarden"));
    if env_clear {
        cmd.env_clear();
    }
    let out = cmd.args(["check", "--config"]).arg(&path).output().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    out
}

/// With no `user=`, no `PGUSER` and no `$USER` (as under `env -i`), the
/// user is the operating-system user, as libpq has it.
#[test]
fn the_default_user_is_the_os_user_even_under_env_i() {
    let out = check(
        "[postgres]\nconninfo = \"host=127.0.0.1 dbname=postgres\"\n",
        true,
    );
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    let me = String::from_utf8(Command::new("id").arg("-un").output().unwrap().stdout).unwrap();
    assert!(said.contains(&format!("user={}", me.trim())), "{said}");
}

/// Connection strings `check` refuses name the key and why.
#[test]
fn connection_string_errors_name_the_key() {
    for (conninfo, expected) in [
        ("host=h user=u replication=database", "replication= is not supported"),
        ("host=h user=u target_session_attrs=master", "target_session_attrs \\\"master\\\" is not one of any, read-write, read-only, primary, standby, prefer-standby"),
    ] {
        let out = check(&format!("[postgres]\nconninfo = \"{conninfo}\"\n"), false);
        let said = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "{said}");
        assert!(said.contains("postgres.conninfo: not a valid connection string"), "{said}");
        assert!(said.contains(&expected.replace("\\\"", "\"")), "{said}");
    }
}
