//! Benchmarks on real clusters (not a test: numbers, not pass/fail):
//! reaction time, poll cost on the server (against walsenders and against
//! client connections), the classic psql-per-poll approach side by side,
//! and the daemon's footprint.
//!
//!   cargo bench --bench live              # everything (about 12 minutes)
//!   cargo bench --bench live -- reaction  # one part: reaction, cost, connections, classic, footprint, floor
//!   REPLWARDEN_BENCH_WALSENDERS=3 cargo bench --bench live -- connections   # 3 walsenders, not 10
//!
//! Results print as Markdown; BENCHMARKS.md keeps the last run's.

#[path = "../tests/harness/mod.rs"]
mod harness;

use std::collections::HashMap;
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use harness::{wait_until, Client, Cluster, Daemon};
use replwarden::poller::{Poller, Way};

fn main() {
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let wanted = |part: &str| only.is_empty() || only.iter().any(|o| o == part);
    println!("# replwarden live benchmarks\n");
    println!("{}\n", machine());
    if wanted("reaction") {
        reaction();
    }
    if wanted("cost") || wanted("classic") {
        cost_and_classic(wanted("cost"), wanted("classic"));
    }
    if wanted("connections") {
        connections();
    }
    if wanted("footprint") {
        footprint();
    }
    if wanted("floor") {
        floor();
    }
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let cores = thread::available_parallelism().map_or(0, |n| n.get());
    let postgres = Command::new(harness::bin("postgres"))
        .arg("--version")
        .output();
    let postgres = postgres
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    format!("Machine: {cores} cores ({cpu}); {postgres}; release build.")
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn stats(mut v: Vec<f64>) -> (f64, f64, usize) {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (percentile(&v, 50.0), percentile(&v, 99.0), v.len())
}

/// "2026-11-25 04:50:01.123 UTC [1234] app LOG:  message" → (time, pid, message).
fn log_line(line: &str) -> Option<(SystemTime, i32, &str)> {
    let ts = line.get(..23)?;
    let time = humantime::parse_rfc3339_weak(ts).ok()?;
    let open = line.find(" [")?;
    let close = line[open..].find(']')? + open;
    let pid = line[open + 2..close].parse().ok()?;
    Some((time, pid, &line[close..]))
}

/// For each pid: when its connection arrived and when it ended, from the
/// server log (log_connections/log_disconnections, millisecond stamps).
fn lifetimes(log: &str) -> HashMap<i32, (SystemTime, Option<SystemTime>, String)> {
    let mut out: HashMap<i32, (SystemTime, Option<SystemTime>, String)> = HashMap::new();
    for line in log.lines() {
        let Some((time, pid, rest)) = log_line(line) else {
            continue;
        };
        if rest.contains("connection received") {
            out.insert(pid, (time, None, String::new()));
        } else if rest.contains("replication connection authorized")
            || rest.contains("connection authorized")
        {
            if let Some(e) = out.get_mut(&pid) {
                let app = rest.split("application_name=").nth(1).unwrap_or("");
                e.2 = app.split_whitespace().next().unwrap_or("").to_string();
            }
        } else if rest.contains("disconnection:") {
            if let Some(e) = out.get_mut(&pid) {
                e.1 = Some(time);
            }
        }
    }
    out
}

/// Reaction time: from the moment a rule's grace ends (connection start +
/// grace) to the walsender's exit, per rule kind, at two intervals.
fn reaction() {
    println!("## Reaction time\n");
    println!("From the moment the rule's grace ends (walsender start + grace, both from the server log) to the walsender's exit (its disconnection line). Grace 500 ms. The blocked and stale clients (idle replication connections) reconnect as soon as they are gone; the lagging ones are `pg_receivewal` with WAL flowing, which reconnect 5 s after each kill. A block rule and time in `startup` count from the walsender's start; a lag is known from the first poll that sees it, so its reaction includes up to one interval before that poll.\n");
    println!("| interval | rule | trials | median | p99 | target p99 |");
    println!("|---|---|---|---|---|---|");
    for (interval, trials) in [("1s", 40), ("100ms", 60)] {
        let primary = Cluster::primary("primary");
        let _pump = Client::wal_pump(&primary);
        let rules = "[limits]\nmax_actions = 100000\nreconnect_backoff = \"0s\"\n\
            [[rule]]\nname = \"blocked\"\napplication_name = [\"bench_block*\"]\ngrace = \"500ms\"\naction = \"terminate\"\n\
            [[rule]]\nname = \"stale\"\napplication_name = [\"bench_stale*\"]\nstate = [\"startup\"]\nin_state_for = \"500ms\"\naction = \"terminate\"\n\
            [[rule]]\nname = \"lag\"\napplication_name = [\"bench_lag*\"]\nwrite_lag_bytes = \"1kB\"\ngrace = \"500ms\"\naction = \"terminate\"\n";
        let daemon = Daemon::start(
            &harness::config(&primary, "replwarden", interval, rules),
            &["--log-level", "info"],
        );
        daemon.wait_message("connected to PostgreSQL", Duration::from_secs(10));
        let watching_from = SystemTime::now();
        // Lagging clients: pg_receivewal reports its position every 10 s, so
        // with WAL flowing it is behind from its start; it reconnects by
        // itself 5 s after each kill, so eight of them run side by side.
        let lagging: Vec<Client> = (0..8)
            .map(|i| Client::receivewal(&primary, &format!("bench_lag{i}")))
            .collect();
        // Clients that come back at once after each kill, in parallel.
        let run = |prefix: &'static str| {
            let primary = &primary;
            move || {
                for i in 0..trials {
                    let name = format!("{prefix}{i}");
                    let _c = Client::sql_walsender(primary, &name, Duration::ZERO);
                    wait_until(
                        &format!("{name} to come and go"),
                        Duration::from_secs(30),
                        || {
                            primary
                                .server_log()
                                .contains(&format!("] {name} LOG:  disconnection"))
                                .then_some(())
                        },
                    );
                }
            }
        };
        thread::scope(|s| {
            s.spawn(run("bench_block"));
            s.spawn(run("bench_stale"));
        });
        drop(lagging);
        drop(daemon);
        let log = primary.server_log();
        let grace = Duration::from_millis(500);
        let mut by_kind: HashMap<&str, Vec<f64>> = HashMap::new();
        for (start, end, app) in lifetimes(&log).values() {
            // Only walsenders that started while the daemon watched.
            let Some(end) = end.filter(|_| *start > watching_from) else {
                continue;
            };
            let kind = if app.starts_with("bench_block") {
                "blocked name"
            } else if app.starts_with("bench_stale") {
                "stale state (in_state_for)"
            } else if app.starts_with("bench_lag") {
                "lag (write_lag_bytes)"
            } else {
                continue;
            };
            if let Ok(r) = end.duration_since(*start + grace) {
                by_kind
                    .entry(kind)
                    .or_default()
                    .push(r.as_secs_f64() * 1000.0);
            }
        }
        let target = humantime::parse_duration(interval).unwrap().as_millis() + 100;
        for kind in [
            "blocked name",
            "stale state (in_state_for)",
            "lag (write_lag_bytes)",
        ] {
            let (median, p99, n) = stats(by_kind.remove(kind).unwrap_or_default());
            println!("| {interval} | {kind} | {n} | {median:.0} ms | {p99:.0} ms | {target} ms |");
        }
    }
    println!();
}

/// An idle replication connection of our own: the startup packet with
/// `replication=database`, nothing more. Hundreds cost one socket each.
fn idle_walsender(port: u16, name: &str) -> TcpStream {
    harness::idle_connection(
        port,
        &[
            ("user", "replicator"),
            ("database", "postgres"),
            ("replication", "database"),
            ("application_name", name),
        ],
        None,
    )
}

fn cpu_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    // utime, stime, cutime, cstime are fields 14-17 (1-based): 11..15 after ')'.
    f.get(11..15)
        .map_or(0, |v| v.iter().map(|x| x.parse::<u64>().unwrap_or(0)).sum())
}

fn ticks_to_ms(t: u64) -> f64 {
    use nix::unistd::{sysconf, SysconfVar};
    let hz = sysconf(SysconfVar::CLK_TCK).unwrap().unwrap() as f64;
    t as f64 * 1000.0 / hz
}

fn self_cpu_ms() -> f64 {
    cpu_ms(nix::sys::resource::UsageWho::RUSAGE_SELF)
}

fn children_cpu_ms() -> f64 {
    cpu_ms(nix::sys::resource::UsageWho::RUSAGE_CHILDREN)
}

/// User plus system CPU time of `who`, in milliseconds.
fn cpu_ms(who: nix::sys::resource::UsageWho) -> f64 {
    let r = nix::sys::resource::getrusage(who).unwrap();
    let ms = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 * 1000.0 + t.tv_usec() as f64 / 1000.0;
    ms(r.user_time()) + ms(r.system_time())
}

/// The footprint runs' rules: the shipped example's kinds, matching
/// none of the benchmark's walsenders.
const FOUR_RULES: &str = "[[rule]]\nname = \"no-rogue-tools\"\napplication_name = [\"rogue_*\", \"adhoc_*\"]\naction = \"terminate\"\n\
    [[rule]]\nname = \"too-far-behind\"\napplication_name = [\"reporting_*\"]\nreplay_lag = \"5m\"\nreplay_lag_bytes = \"1GB\"\ngrace = \"2m\"\naction = \"terminate\"\n\
    [[rule]]\nname = \"stuck-base-backup\"\nstate = [\"backup\"]\nin_state_for = \"6h\"\naction = \"terminate\"\n\
    [[rule]]\nname = \"silent-standby\"\nno_reply_for = \"2m\"\naction = \"cancel\"\nescalate_after = \"15s\"\n";

/// Room for 500 walsenders (each `append_conf` restates the harness's
/// base settings, so this goes with every later append).
const BIG_CONF: &str = "max_wal_senders = 560\nmax_connections = 620\n";

fn big_primary() -> Cluster {
    let primary = Cluster::primary("primary");
    primary.append_conf(BIG_CONF);
    primary.restart();
    primary
}

/// Poll cost on the server at 10/100/500 walsenders, and the classic
/// psql-per-poll loop beside replwarden's persistent prepared poll.
fn cost_and_classic(cost: bool, classic: bool) {
    let primary = big_primary();
    let harness::Direct { rt, client } = primary.direct("replwarden");
    let poller = rt.block_on(Poller::prepare(&client)).unwrap();
    let backend: i32 = rt
        .block_on(client.query_one("SELECT pg_backend_pid()", &[]))
        .unwrap()
        .get(0);
    let (viewer, _) = session(&rt, &primary);
    let mut sockets = Vec::new();
    let mut rows = Vec::new();
    if cost {
        rows.push("## Poll cost on the server\n".to_string());
        rows.push("The poll query (one prepared statement: the walsender array with each walsender's identity from the activity function, the slots, the WAL position and the server clock; raw columns, distances and ages worked out by the client). Server execution time from `EXPLAIN (ANALYZE, TIMING OFF)`, median of 50, beside `SELECT * FROM pg_stat_replication` on a session of its own in the same rounds; round trip from the client (prepared, decoded into rows), 500 polls. Backends besides the walsenders: the server's own processes and these two sessions.\n".to_string());
        rows.push("| walsenders | server execution (median) | `pg_stat_replication` (same run) | round trip median | round trip p99 | server CPU per poll | target (execution) |".to_string());
        rows.push("|---|---|---|---|---|---|---|".to_string());
    }
    for (n, target) in [(10, "≤ 0.5 ms"), (100, ""), (500, "≤ 3 ms")] {
        while sockets.len() < n {
            sockets.push(idle_walsender(
                primary.port,
                &format!("idle_{}", sockets.len()),
            ));
        }
        wait_until("walsenders to register", Duration::from_secs(30), || {
            (primary
                .sql("SELECT count(*) FROM pg_stat_replication")
                .parse::<usize>()
                .ok()?
                >= n)
                .then_some(())
        });
        if n == 10 && classic {
            classic_side_by_side(&primary, &rt, &client, &poller, backend);
        }
        if !cost {
            continue;
        }
        // TIMING OFF: per-node timing reads the clock twice per row and node,
        // which on 500 rows inflates the very figure being measured.
        rt.block_on(poller.poll(&client)).unwrap();
        let explain = format!(
            "EXPLAIN (ANALYZE, TIMING OFF) {}",
            with_count(poll_text(&poller), n)
        );
        let mut exec = Vec::new();
        let mut view = Vec::new();
        for _ in 0..50 {
            view.push(execution_ms(
                &rt,
                &viewer,
                "SELECT * FROM pg_stat_replication",
            ));
            let rows = rt.block_on(client.query(explain.as_str(), &[])).unwrap();
            let ms = rows
                .iter()
                .filter_map(|r| {
                    r.get::<_, String>(0)
                        .strip_prefix("Execution Time: ")?
                        .strip_suffix(" ms")?
                        .parse()
                        .ok()
                })
                .next()
                .expect("an Execution Time line");
            exec.push(ms);
        }
        let before = cpu_ticks(backend);
        let mut rtt = Vec::new();
        for _ in 0..500 {
            let t = Instant::now();
            let snap = rt.block_on(poller.poll(&client)).unwrap();
            rtt.push(t.elapsed().as_secs_f64() * 1000.0);
            assert!(snap.walsenders.len() >= n);
        }
        let cpu = ticks_to_ms(cpu_ticks(backend) - before) / 500.0;
        let (e50, _, _) = stats(exec);
        let (v50, _, _) = stats(view);
        let (r50, r99, _) = stats(rtt);
        rows.push(format!(
            "| {n} | {e50:.3} ms | {v50:.3} ms | {r50:.3} ms | {r99:.3} ms | {cpu:.3} ms | {target} |"
        ));
    }
    for row in rows {
        println!("{row}");
    }
    println!();
}

/// What users do today — a fresh `psql` per poll running the classic
/// statement — beside replwarden's persistent prepared poll, same server,
/// same 10 walsenders.
fn classic_side_by_side(
    primary: &Cluster,
    rt: &tokio::runtime::Runtime,
    client: &tokio_postgres::Client,
    poller: &Poller,
    backend: i32,
) {
    println!("## Against a psql per poll\n");
    println!("Same server, 10 walsenders. Classic: `psql -c \"SELECT pg_terminate_backend(pid) FROM pg_stat_replication WHERE application_name = '...'\"` run afresh each poll (what cron or a shell loop does); back to back, its wall time per run is also the best poll period, hence reaction time, it can reach. replwarden: the daemon's prepared poll on its persistent connection.\n");
    let runs = 100;
    let postmaster: i32 = std::fs::read_to_string(primary.dir.join("data/postmaster.pid"))
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let server_before = cpu_ticks(postmaster);
    let client_before = children_cpu_ms();
    let t = Instant::now();
    for _ in 0..runs {
        let out = Command::new(harness::bin("psql"))
            .args(["-X", "-q", "-A", "-t", "-h", "127.0.0.1", "-U", "replwarden", "-d", "postgres", "-p"])
            .arg(primary.port.to_string())
            .args(["-c", "SELECT pg_terminate_backend(pid) FROM pg_stat_replication WHERE application_name = 'rogue_nobody'"])
            .output()
            .unwrap();
        assert!(out.status.success());
    }
    let classic_wall = t.elapsed().as_secs_f64() * 1000.0 / runs as f64;
    let classic_client = (children_cpu_ms() - client_before) / runs as f64;
    // The exited backends' CPU is added to the postmaster's children time.
    let classic_server = ticks_to_ms(cpu_ticks(postmaster) - server_before) / runs as f64;

    let polls = 2000;
    let server_before = cpu_ticks(backend);
    let client_before = self_cpu_ms();
    let t = Instant::now();
    for _ in 0..polls {
        rt.block_on(poller.poll(client)).unwrap();
    }
    let ours_wall = t.elapsed().as_secs_f64() * 1000.0 / polls as f64;
    let ours_client = (self_cpu_ms() - client_before) / polls as f64;
    let ours_server = ticks_to_ms(cpu_ticks(backend) - server_before) / polls as f64;
    println!("| per poll | classic psql | replwarden | ratio |");
    println!("|---|---|---|---|");
    println!("| wall time (= best reaction period) | {classic_wall:.2} ms | {ours_wall:.3} ms | {:.0}× |", classic_wall / ours_wall);
    println!(
        "| client CPU | {classic_client:.2} ms | {ours_client:.3} ms | {:.0}× |",
        classic_client / ours_client.max(0.001)
    );
    println!("| server CPU (backend start + query) | {classic_server:.2} ms | {ours_server:.3} ms | {:.0}× |", classic_server / ours_server.max(0.001));
    println!();
}

/// The daemon's RSS and CPU: 600 polls at 100 ms (the polls of 10 minutes
/// at 1 s) with 10 and with 500 walsenders, connected as the shipped config
/// does (Unix socket), over TCP, and over TCP with TLS (OpenSSL loaded).
fn footprint() {
    println!("## Footprint\n");
    println!("The release daemon, 4 rules (the shipped example's kinds, matching nothing), 600 polls at 100 ms = the polls of 10 minutes at 1 s. CPU per poll from /proc (user + system); at 1 s that is the share of one core. RSS is all resident pages, shared library pages included; `anon` is the daemon's own memory; PSS counts shared pages divided among the processes that map them (libcrypto's are shared with the PostgreSQL server on the same host). OpenSSL is only set up once a server agrees to TLS.\n");
    println!("| connection | walsenders | polls | RSS at end (anon / PSS) | peak RSS | CPU per poll | CPU at 1 s interval | targets |");
    println!("|---|---|---|---|---|---|---|---|");
    let primary = big_primary();
    let mut sockets = Vec::new();
    let unix = format!(
        "host={} port={} dbname=postgres user=replwarden",
        primary.dir.display(),
        primary.port
    );
    // A server with TLS (a throwaway self-signed certificate).
    let cert = primary.dir.join("server.crt");
    let key = primary.dir.join("server.key");
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("run openssl");
    assert!(made.status.success(), "openssl req: {made:?}");
    Command::new("chown")
        .arg("postgres:postgres")
        .arg(&cert)
        .arg(&key)
        .status()
        .unwrap();
    Command::new("chmod").arg("600").arg(&key).status().unwrap();
    primary.append_conf(&format!(
        "{BIG_CONF}ssl = on\nssl_cert_file = '{}'\nssl_key_file = '{}'\n",
        cert.display(),
        key.display()
    ));
    primary.restart();
    let tcp = format!("{} sslmode=disable", primary.conninfo("replwarden"));
    let tls = format!("{} sslmode=require", primary.conninfo("replwarden"));
    for (n, targets) in [(10, "RSS ≤ 10 MiB, CPU ≤ 0.1 %"), (500, "")] {
        while sockets.len() < n {
            sockets.push(idle_walsender(
                primary.port,
                &format!("idle_{}", sockets.len()),
            ));
        }
        for (connection, conninfo) in [
            ("Unix socket", &unix),
            ("TCP, no TLS", &tcp),
            ("TCP with TLS", &tls),
        ] {
            let config = format!(
                "[postgres]\nconninfo = \"{conninfo}\"\n[daemon]\ninterval = \"100ms\"\n{FOUR_RULES}"
            );
            let daemon = Daemon::start(&config, &["--log-level", "info"]);
            daemon.wait_message("connected to PostgreSQL", Duration::from_secs(10));
            thread::sleep(Duration::from_secs(1));
            let before = cpu_ticks(daemon.pid());
            let t = Instant::now();
            thread::sleep(Duration::from_secs(60));
            let polls = (t.elapsed().as_millis() / 100) as f64;
            let cpu = ticks_to_ms(cpu_ticks(daemon.pid()) - before) / polls;
            let mib = |field| harness::status_kib(daemon.pid(), field) as f64 / 1024.0;
            // Proportional set size: shared pages divided among their users.
            let pss = std::fs::read_to_string(format!("/proc/{}/smaps_rollup", daemon.pid()))
                .unwrap_or_default()
                .lines()
                .find_map(|l| {
                    l.strip_prefix("Pss:")?
                        .trim()
                        .strip_suffix(" kB")?
                        .parse::<f64>()
                        .ok()
                })
                .unwrap_or(f64::NAN)
                / 1024.0;
            println!(
                "| {connection} | {n} | {polls:.0} | {:.1} MiB ({:.1} / {pss:.1}) | {:.1} MiB | {cpu:.3} ms | {:.3} % | {targets} |",
                mib("VmRSS:"),
                mib("RssAnon:"),
                mib("VmHWM:"),
                cpu / 1000.0 * 100.0
            );
        }
    }
    println!();
}

/// An ordinary client connection (superuser, trust) that has run one
/// query, as an application's idle pooled connection has, and then idles:
/// one socket on this side, one backend on the server.
fn idle_client(port: u16) -> TcpStream {
    harness::idle_connection(
        port,
        &[
            ("user", "postgres"),
            ("database", "postgres"),
            ("application_name", "bench_client"),
        ],
        Some("SELECT 1"),
    )
}

/// A session of its own (each statement measured on its own backend, as
/// the daemon's poll is: a statement that follows `pg_stat_replication` on
/// the same backend pays for the memory the view's rows took and released).
fn session(rt: &tokio::runtime::Runtime, primary: &Cluster) -> (tokio_postgres::Client, i32) {
    let (client, conn) = rt
        .block_on(tokio_postgres::connect(
            &primary.conninfo("replwarden"),
            tokio_postgres::NoTls,
        ))
        .unwrap();
    rt.spawn(conn);
    let backend: i32 = rt
        .block_on(client.query_one("SELECT pg_backend_pid()", &[]))
        .unwrap()
        .get(0);
    (client, backend)
}

fn execution_ms(rt: &tokio::runtime::Runtime, client: &tokio_postgres::Client, sql: &str) -> f64 {
    let rows = rt
        .block_on(client.query(&format!("EXPLAIN (ANALYZE, TIMING OFF) {sql}"), &[]))
        .unwrap();
    rows.iter()
        .find_map(|r| {
            r.get::<_, String>(0)
                .strip_prefix("Execution Time: ")?
                .strip_suffix(" ms")?
                .parse()
                .ok()
        })
        .expect("an Execution Time line")
}

/// The statement the Poller's next poll runs.
fn poll_text(poller: &Poller) -> &'static str {
    match poller.next_read() {
        Way::ByPid => replwarden::sql::POLL_BY_PID,
        Way::OnePass => replwarden::sql::POLL_ONE_PASS,
    }
}

/// A poll statement as the Poller runs it after a poll of `walsenders`:
/// its parameter (how far to count backends) in the text, so that it can
/// be EXPLAINed and run like the statements beside it.
fn with_count(sql: &str, walsenders: usize) -> String {
    sql.replace("$1", &Way::backends_to_count(walsenders).to_string())
}

/// A piece of the poll, run on its own: the walsender array joined with
/// each walsender's identity by pid (what the poll cannot do without).
const LOOKUPS: &str =
    "SELECT w.pid, a.backend_start, a.usesysid, a.application_name, a.client_addr \
     FROM pg_stat_get_wal_senders() w CROSS JOIN LATERAL pg_stat_get_activity(w.pid) a";

/// CPU time a process has run, in nanoseconds (`/proc/PID/schedstat`; the
/// clock ticks of `/proc/PID/stat` are 10 ms, coarser than a poll).
fn cpu_ns(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Where the walsenders' status entries are among the clients'. Reading
/// a walsender's identity by pid walks the copied status array up to its
/// entry, so this decides what each lookup costs. On 13-16 an entry's
/// place is the backend id, the lowest free one when the process starts:
/// walsenders that connected before the clients come first, those that
/// (re)connected once the low ids were taken come after them. On 17+ it
/// is the process number, and walsenders have theirs after every client
/// slot: last, whenever they connect.
#[derive(Clone, Copy, PartialEq)]
enum Placement {
    First,
    Last,
}

/// The poll against client connections: 10, 100 and 1,000 idle clients
/// with 10 walsenders, beside `pg_stat_replication` and the floor, all
/// measured in the same run, each statement on its own session. Each
/// statement is measured two ways: interleaved with the others (its
/// session ran nothing since its previous execution while the others ran,
/// as a daemon's poll or an operator's query runs among other work: the
/// caches hold others' data), and 41 times in a row (warm caches, which
/// flatter a statement with a larger fixed part).
fn connections() {
    // Issue 18's ratio is asked for "a few" walsenders, its table for 10.
    let wanted: usize = std::env::var("REPLWARDEN_BENCH_WALSENDERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    println!("## Poll cost against client connections\n");
    print!("{wanted} idle walsenders");
    println!("; N idle client connections over TCP (each has run `SELECT 1`, as a pooled application connection has). *Walsenders first*: they connected before the clients; *last*: after them (on 13-16 a backend's status entry sits at the lowest backend id free when it starts, on 17+ walsenders' entries come after every client slot whenever they connect; a lookup by pid walks the entries up to the walsender's). Each statement on its own session. *Interleaved*: server execution from `EXPLAIN (ANALYZE, TIMING OFF)`, median of 41 rounds that run every statement once, in an order rotated each round (what a daemon's poll, or an operator's query, sees: others ran since its last execution); *in a row*: median of 41 executions one after the other on the same session (warm caches). Round trip from the client (prepared, rows fetched), median of 300 interleaved; server CPU per statement from the backend's /proc/PID/schedstat over those 300 (parse-free: bind, execute, send). *floor*: `SELECT pg_stat_get_backend_pid(1)`, which reads one entry of the copy of every backend's status entry that the first read of activity in a transaction makes (`pgstat_read_current_status`), so any statement reading activity pays that copy. *walsender array*: `SELECT * FROM pg_stat_get_wal_senders()`, which reads no activity. The poll is two prepared statements, by pid and one pass; the daemon runs one per poll, chosen from the last poll's walsender and backend counts, marked *(chosen)*. *part*: a piece of the poll on its own (the identity lookups by pid).\n");
    println!("| client connections | walsenders | statement | server execution, interleaved (median) | in a row (median) | round trip median | round trip p99 | server CPU per statement | ratio to pg_stat_replication, interleaved | in a row |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let primary = Cluster::primary("primary");
    primary.append_conf("max_connections = 1100\nmax_wal_senders = 30\n");
    primary.restart();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let by_pid = with_count(replwarden::sql::POLL_BY_PID, wanted);
    let one_pass = with_count(replwarden::sql::POLL_ONE_PASS, wanted);
    let statements: [(&str, &str); 6] = [
        ("`pg_stat_replication`", "SELECT * FROM pg_stat_replication"),
        ("replwarden's poll, by pid", &by_pid),
        ("replwarden's poll, one pass", &one_pass),
        ("part: identity lookups by pid", LOOKUPS),
        ("floor (status copy)", "SELECT pg_stat_get_backend_pid(1)"),
        ("walsender array", "SELECT * FROM pg_stat_get_wal_senders()"),
    ];
    let sessions: Vec<(tokio_postgres::Client, i32)> =
        statements.iter().map(|_| session(&rt, &primary)).collect();
    let chooser = session(&rt, &primary).0;
    let poller = rt.block_on(Poller::prepare(&chooser)).unwrap();
    let walsender_count = || {
        primary
            .sql("SELECT count(*) FROM pg_stat_get_wal_senders()")
            .parse::<usize>()
            .ok()
    };
    let connect_walsenders = || -> Vec<TcpStream> {
        let w = (0..wanted)
            .map(|i| idle_walsender(primary.port, &format!("idle_{i}")))
            .collect();
        wait_until("walsenders to register", Duration::from_secs(30), || {
            (walsender_count()? >= wanted).then_some(())
        });
        w
    };
    let mut walsenders = connect_walsenders();
    let mut clients = Vec::new();
    for (n, placement) in [
        (10, Placement::First),
        (100, Placement::First),
        (1000, Placement::First),
        (1000, Placement::Last),
    ] {
        if placement == Placement::Last {
            // The walsenders leave, clients take their ids, and they come
            // back after them; then as many clients leave.
            walsenders.clear();
            wait_until("walsenders to exit", Duration::from_secs(30), || {
                (walsender_count()? == 0).then_some(())
            });
            let extra: Vec<TcpStream> = (0..wanted).map(|_| idle_client(primary.port)).collect();
            walsenders = connect_walsenders();
            drop(extra);
        }
        while clients.len() < n {
            clients.push(idle_client(primary.port));
        }
        wait_until("the backends to settle", Duration::from_secs(30), || {
            let backends: usize = primary
                .sql("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'")
                .parse()
                .ok()?;
            // These sessions, the chooser's and this psql's besides.
            (backends <= n + statements.len() + 2).then_some(())
        });
        let count = statements.len();
        let mut exec: Vec<Vec<f64>> = vec![Vec::new(); count];
        for round in 0..41 {
            for k in 0..count {
                let i = (round + k) % count;
                exec[i].push(execution_ms(&rt, &sessions[i].0, statements[i].1));
            }
        }
        let mut in_a_row: Vec<Vec<f64>> = vec![Vec::new(); count];
        for (i, (_, sql)) in statements.iter().enumerate() {
            for _ in 0..41 {
                in_a_row[i].push(execution_ms(&rt, &sessions[i].0, sql));
            }
        }
        let mut rtt: Vec<Vec<f64>> = vec![Vec::new(); count];
        let mut cpu = vec![0u64; count];
        let prepared: Vec<tokio_postgres::Statement> = statements
            .iter()
            .zip(&sessions)
            .map(|((_, sql), (c, _))| rt.block_on(c.prepare(sql)).unwrap())
            .collect();
        for round in 0..300 {
            for k in 0..count {
                let i = (round + k) % count;
                let (client, backend) = &sessions[i];
                let before = cpu_ns(*backend);
                let t = Instant::now();
                rt.block_on(client.query(&prepared[i], &[])).unwrap();
                rtt[i].push(t.elapsed().as_secs_f64() * 1000.0);
                cpu[i] += cpu_ns(*backend) - before;
            }
        }
        rt.block_on(poller.poll(&chooser)).unwrap();
        let chosen = with_count(poll_text(&poller), wanted);
        let view = stats(exec[0].clone()).0;
        let view_in_a_row = stats(in_a_row[0].clone()).0;
        let placed = match placement {
            Placement::First => "first",
            Placement::Last => "last",
        };
        for (i, (name, sql)) in statements.iter().enumerate() {
            let name = if *sql == chosen {
                format!("{name} *(chosen)*")
            } else {
                name.to_string()
            };
            let (e50, _, _) = stats(exec[i].clone());
            let (w50, _, _) = stats(in_a_row[i].clone());
            let (r50, r99, _) = stats(rtt[i].clone());
            let cpu = cpu[i] as f64 / 300.0 / 1e6;
            println!(
                "| {n} | {placed} | {name} | {e50:.3} ms | {w50:.3} ms | {r50:.3} ms | {r99:.3} ms | {cpu:.3} ms | {:.2} | {:.2} |",
                e50 / view,
                w50 / view_in_a_row
            );
        }
    }
    println!();
}

/// Run time in nanoseconds and times scheduled in (each after a sleep or
/// a preemption) of a process or thread, from its `schedstat`.
fn schedstat(path: &str) -> (u64, u64) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let f: Vec<u64> = text
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect();
    (
        f.first().copied().unwrap_or(0),
        f.get(2).copied().unwrap_or(0),
    )
}

/// What one 100 ms tick costs a loop, in CPU milliseconds and context
/// switches, over `seconds` (the loop's own `schedstat`).
fn per_tick(path: &str, seconds: u64) -> (f64, f64) {
    let (ns0, sw0) = schedstat(path);
    thread::sleep(Duration::from_secs(seconds));
    let (ns1, sw1) = schedstat(path);
    let ticks = (seconds * 10) as f64;
    ((ns1 - ns0) as f64 / 1e6 / ticks, (sw1 - sw0) as f64 / ticks)
}

/// What a loop on its own thread does at every tick of the daemon's
/// ticker: nothing, or run the poll statement and collect its rows.
#[derive(Clone, Copy)]
enum Floor {
    Timer,
    Statement,
}

/// Starts `floor`'s loop on a thread of its own (its own single-threaded
/// runtime, as the daemon's) and returns its `schedstat` path; it stops
/// when `stop` is set.
fn floor_loop(
    floor: Floor,
    conninfo: String,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let session = match floor {
                Floor::Timer => None,
                Floor::Statement => {
                    let (client, conn) = tokio_postgres::connect(&conninfo, tokio_postgres::NoTls)
                        .await
                        .unwrap();
                    tokio::spawn(conn);
                    let statement = client.prepare(replwarden::sql::POLL_BY_PID).await.unwrap();
                    Some((client, statement))
                }
            };
            let mut ticker = replwarden::ticker::Ticker::new(Duration::from_millis(100));
            let me = std::fs::read_link("/proc/thread-self").unwrap();
            tx.send(format!(
                "{}/schedstat",
                Path::new("/proc").join(me).display()
            ))
            .unwrap();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                ticker.tick().await;
                if let Some((client, statement)) = &session {
                    let rows = client.query(statement, &[&100i64]).await.unwrap();
                    std::hint::black_box(rows);
                }
            }
        });
    });
    rx.recv().unwrap()
}

/// The daemon's CPU per poll beside the floor of any poll on this
/// machine: a loop that only waits for the same 100 ms ticker (one
/// wake-up per tick), and one that also runs the poll statement and
/// collects its rows, decoding and deciding nothing (a wake-up for the
/// tick and one for the reply, a send and a receive). Same server, same
/// 10 idle walsenders, the same Unix socket; each measured 20 s, three
/// rounds in turn.
fn floor() {
    println!("## The floor of a poll on this machine\n");
    println!("CPU per 100 ms tick (a thread's or the daemon's `schedstat`: run time, and times scheduled in), 20 s each, three rounds in turn, 10 idle walsenders, the Unix socket. *timer*: a thread of this benchmark that only waits for the daemon's ticker (`replwarden::ticker`); *statement*: one that also runs the poll statement (`sql::POLL_BY_PID`, prepared) at every tick and collects its rows, decoding and deciding nothing; *daemon*: the release daemon with the 4 rules of the footprint run.\n");
    println!("| round | loop | CPU per tick | context switches per tick |");
    println!("|---|---|---|---|");
    let primary = big_primary();
    let _walsenders: Vec<TcpStream> = (0..10)
        .map(|i| idle_walsender(primary.port, &format!("idle_{i}")))
        .collect();
    let unix = format!(
        "host={} port={} dbname=postgres user=replwarden",
        primary.dir.display(),
        primary.port
    );
    for round in 1..=3 {
        for (name, floor) in [
            ("timer", Some(Floor::Timer)),
            ("statement", Some(Floor::Statement)),
            ("daemon", None),
        ] {
            let (cpu, switches) = match floor {
                Some(floor) => {
                    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
                    let path = floor_loop(floor, unix.clone(), stop.clone());
                    thread::sleep(Duration::from_secs(1));
                    let measured = per_tick(&path, 20);
                    stop.store(true, std::sync::atomic::Ordering::Relaxed);
                    measured
                }
                None => {
                    let config = format!(
                        "[postgres]\nconninfo = \"{unix}\"\n[daemon]\ninterval = \"100ms\"\n{FOUR_RULES}"
                    );
                    let daemon = Daemon::start(&config, &["--log-level", "info"]);
                    daemon.wait_message("connected to PostgreSQL", Duration::from_secs(10));
                    thread::sleep(Duration::from_secs(1));
                    per_tick(&format!("/proc/{}/schedstat", daemon.pid()), 20)
                }
            };
            println!("| {round} | {name} | {cpu:.3} ms | {switches:.2} |");
        }
    }
    println!();
}
