//! Blocking file reads during the daemon's life are made off the runtime
//! thread (issue 17): the loop and the systemd watchdog run on one
//! thread, so a file system that hangs must not hang them. The config file
//! of a reload is read on a blocking thread (`daemon.rs`); this shows it for
//! the other file read while the daemon runs, the root certificate that
//! OpenSSL loads at every TLS connect (a reconnect, or new settings by
//! reload).

use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use replwarden::conninfo::{LazyTls, Verify};
use tokio::io::DuplexStream;
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};

/// A scratch directory, removed on drop.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test(flavor = "current_thread")]
async fn the_root_certificate_is_read_off_the_runtime_thread() {
    let scratch = Scratch(std::env::temp_dir().join(format!(
        "replwarden-offthread-{}-{:?}",
        std::process::id(),
        Instant::now()
    )));
    std::fs::create_dir_all(&scratch.0).unwrap();
    // A FIFO: opening it to read blocks until a writer comes, as a file on
    // a hung NFS mount would.
    let fifo = scratch.0.join("root.crt");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("run mkfifo");
    assert!(made.success());
    // Should the runtime thread itself be stuck in the read, this thread
    // ends it after a while (a non-blocking open fails when no one reads).
    let rescue = fifo.clone();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(20));
        let _ = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(rescue);
    });

    let (stream, _server) = tokio::io::duplex(1024);
    let mut tls = LazyTls(Verify::Chain(fifo.clone()));
    let handshake =
        MakeTlsConnect::<DuplexStream>::make_tls_connect(&mut tls, "localhost").unwrap();
    let started = Instant::now();
    let connecting = tokio::spawn(handshake.connect(stream));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_secs(10),
        "a 200 ms sleep took {waited:?}: the runtime thread was held by the read of the root certificate"
    );

    // Let the read end: an empty file holds no certificate.
    tokio::task::spawn_blocking(move || std::fs::OpenOptions::new().write(true).open(fifo))
        .await
        .unwrap()
        .unwrap();
    let result = tokio::time::timeout(Duration::from_secs(60), connecting)
        .await
        .expect("the handshake ends once the file is read")
        .unwrap();
    assert!(result.is_err(), "no root certificate, no connection");
}
