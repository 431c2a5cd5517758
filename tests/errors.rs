//! Errors show each cause once: replwarden's own error types leave their
//! source out of their message, and `errors::error_chain` adds it.

use std::path::Path;

use replwarden::{config, errors::error_chain, session};

/// A loopback port nothing listens on (taken from the kernel, then freed).
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[test]
fn a_refused_connection_shows_its_cause_once() {
    let port = closed_port();
    let text = format!(
        "[postgres]\nconninfo = \"host=127.0.0.1 port={port} user=replwarden dbname=postgres \
         sslmode=disable connect_timeout=10\"\n"
    );
    let config = config::parse(Path::new("errors.toml"), &text).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let Err(e) = runtime.block_on(session::connect(&config.postgres)) else {
        panic!("connected to 127.0.0.1:{port}, where nothing listens");
    };
    assert_eq!(e.to_string(), "cannot connect", "the cause is the source's");
    let chain = error_chain(&e);
    assert!(
        chain.starts_with("cannot connect: error connecting to server: "),
        "{chain}"
    );
    let refused = std::error::Error::source(&e)
        .and_then(std::error::Error::source)
        .map(ToString::to_string)
        .expect("tokio-postgres gives the OS error as its source");
    assert_eq!(chain.matches(&refused).count(), 1, "{chain}");
}
