//! The loop's waits, raced against control messages, finished reloads and
//! the watchdog by one helper (issue 17 item 3): a reload that changes the
//! poll interval applies it at once, without waiting out the old one.

mod harness;

use std::time::Duration;

use harness::{config, Cluster, Daemon};

#[test]
fn a_reload_to_a_shorter_interval_does_not_wait_out_the_old_one() {
    let primary = Cluster::primary("primary");
    let daemon = Daemon::start(&config(&primary, "replwarden", "1h", ""), &[]);
    // The first tick is at once; the next would be an hour later.
    daemon.wait_message("poll done", Duration::from_secs(30));
    let mark = daemon.mark();
    daemon.write_config(&config(&primary, "replwarden", "200ms", ""));
    daemon.signal(libc::SIGHUP);
    daemon.wait_for_from(mark, "the reload", Duration::from_secs(30), |e| {
        e["message"] == "config reloaded"
    });
    // Two polls after the reload: at once, and 200 ms later.
    for poll in ["the first poll after the reload", "the next one"] {
        let from = daemon.mark();
        daemon.wait_for_from(from, poll, Duration::from_secs(30), |e| {
            e["message"] == "poll done"
        });
    }
}
