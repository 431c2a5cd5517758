//! How an error is shown to people: the error and its causes on one line,
//! each cause once. replwarden's error types never write their source into
//! their own message (`#[error("cannot connect")]` with `#[source]`, not
//! `"cannot connect: {0}"`); the chain adds it.

/// An error and its causes, `: `-separated: `cannot connect: error
/// performing TLS handshake: certificate verify failed`. A cause whose
/// message is already part of the message of the error just above it is
/// not repeated: some errors of other crates write their source into their
/// own message (postgres-openssl's handshake error shows the `ssl::Error`
/// it returns as source, which shows the `ErrorStack` it returns as source).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut above = out.clone();
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !above.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        above = text;
        source = cause.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fmt;

    /// An error with a fixed message and an optional cause.
    #[derive(Debug)]
    struct Layer(&'static str, Option<Box<Layer>>);

    impl fmt::Display for Layer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Layer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|e| e as _)
        }
    }

    #[test]
    fn each_cause_is_shown_once_in_order() {
        let e = Layer(
            "cannot connect",
            Some(Box::new(Layer(
                "error performing TLS handshake",
                Some(Box::new(Layer("certificate verify failed", None))),
            ))),
        );
        assert_eq!(
            error_chain(&e),
            "cannot connect: error performing TLS handshake: certificate verify failed"
        );
    }

    /// As postgres-openssl and openssl do: a handshake error that shows its
    /// source and more, a source that shows its own source.
    #[test]
    fn a_cause_written_into_the_error_above_it_is_left_out() {
        let e = Layer(
            "error performing TLS handshake",
            Some(Box::new(Layer(
                "certificate verify failed: unable to get local issuer certificate",
                Some(Box::new(Layer(
                    "certificate verify failed",
                    Some(Box::new(Layer("certificate verify failed", None))),
                ))),
            ))),
        );
        assert_eq!(
            error_chain(&e),
            "error performing TLS handshake: certificate verify failed: unable to get local issuer certificate"
        );
    }

    /// replwarden's own errors leave their source out of their message, so
    /// the chain shows it once.
    #[test]
    fn own_errors_do_not_repeat_their_source() {
        let io = std::io::Error::new(std::io::ErrorKind::AddrInUse, "address in use");
        let e = crate::daemon::RunError::Metrics(io);
        assert_eq!(e.to_string(), "cannot serve metrics");
        assert_eq!(error_chain(&e), "cannot serve metrics: address in use");
    }
}
