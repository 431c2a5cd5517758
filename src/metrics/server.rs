//! The HTTP side of the endpoint: bounded connections, one request each,
//! `GET /metrics` only, served by hyper.

use super::*;

/// At most this many connections are open at once, so that clients cannot
/// use up the daemon's file descriptors (which it needs for PostgreSQL).
/// When all are taken, a new connection makes room by closing the oldest
/// one that has not sent its request yet: silent connections cannot keep a
/// scrape out. Only when every one is being answered does accepting wait.
const MAX_CONNECTIONS: usize = 64;
/// A connection must send its request and take the response within this,
/// or it is closed.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(5);
/// The first wait after a failed accept (e.g. out of file descriptors); it
/// doubles with each further failure, up to [`ACCEPT_BACKOFF_MAX`].
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Serves `/metrics` on `listener` until the task is dropped: at most
/// [`MAX_CONNECTIONS`] at a time, each for at most [`CONNECTION_TIMEOUT`]
/// and one request, backing off when accepting fails instead of retrying
/// at once.
pub async fn serve(listener: TcpListener, metrics: Metrics) {
    let mut connections = JoinSet::new();
    // Open connections that have not sent their request, oldest first.
    let mut silent: VecDeque<(AbortHandle, Arc<AtomicBool>)> = VecDeque::new();
    let mut backoff = ACCEPT_BACKOFF_MIN;
    loop {
        while connections.try_join_next().is_some() {}
        silent.retain(|(task, asked)| !task.is_finished() && !asked.load(Ordering::Relaxed));
        if connections.len() >= MAX_CONNECTIONS && silent.is_empty() {
            connections.join_next().await;
            continue;
        }
        let stream = match listener.accept().await {
            Ok((stream, _)) => {
                backoff = ACCEPT_BACKOFF_MIN;
                stream
            }
            Err(e) => {
                if backoff == ACCEPT_BACKOFF_MIN {
                    tracing::warn!(
                        error = %e,
                        "metrics endpoint cannot accept connections; backing off (out of file descriptors? raise LimitNOFILE)"
                    );
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                continue;
            }
        };
        if connections.len() >= MAX_CONNECTIONS {
            if let Some((oldest, _)) = silent.pop_front() {
                oldest.abort();
            }
        }
        let asked = Arc::new(AtomicBool::new(false));
        let metrics = metrics.clone();
        let flag = asked.clone();
        let task = connections.spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                flag.store(true, Ordering::Relaxed);
                let response = respond(&request, &metrics);
                async move { Ok::<_, Infallible>(response) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(CONNECTION_TIMEOUT, connection).await;
        });
        silent.push_back((task, asked));
        // Let the new connection read a request that is already there
        // before more connections are accepted (and might evict it).
        tokio::task::yield_now().await;
    }
}

/// The answer to one request: the metrics for `GET` and `HEAD` of
/// `/metrics` (any query string), 405 for other methods there, 404
/// elsewhere.
fn respond(request: &Request<Incoming>, metrics: &Metrics) -> Response<Full<Bytes>> {
    let text = |status: StatusCode, body: &'static str| {
        let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
        *r.status_mut() = status;
        r.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        r
    };
    if request.uri().path() != "/metrics" {
        return text(StatusCode::NOT_FOUND, "replwarden serves /metrics\n");
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut r = text(
            StatusCode::METHOD_NOT_ALLOWED,
            "/metrics answers GET and HEAD\n",
        );
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let accept = request.headers().get(ACCEPT).and_then(|v| v.to_str().ok());
    let format = Format::negotiate(accept);
    let mut r = Response::new(Full::new(Bytes::from(metrics.render(format))));
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    r
}

/// Binds the endpoint; the error names the address.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, std::io::Error> {
    TcpListener::bind(addr).await.map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot listen on {addr} for metrics: {e}"),
        )
    })
}
