//! What every cdlake HTTP service shares: `GET /healthz`, `GET /metrics`, the bearer token,
//! request counting, a graceful shutdown on Ctrl-C or SIGTERM, and the limits that keep one
//! client from holding the service: a request's headers must arrive within
//! [`HEADER_READ_TIMEOUT`], a whole request within [`request_timeout`], and a handler that
//! panics answers 500 while the process goes on serving.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use cdlake_ingest::metrics::{self, Metrics};
use cdlake_ingest::sources::error;
use subtle::ConstantTimeEq;

/// The listen address and token of an HTTP service.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct HttpArgs {
    /// Address of the HTTP server.
    #[arg(long, env = "CDLAKE_LISTEN", default_value = "127.0.0.1:8080")]
    pub(crate) listen: SocketAddr,
    /// Require `Authorization: Bearer <token>` on every endpoint but /healthz and the webhooks
    /// (which carry their own signatures).
    #[arg(long, env = "CDLAKE_TOKEN", hide_env_values = true)]
    pub(crate) token: Option<String>,
}

/// More Prometheus text for `/metrics`, rendered on each scrape (the query service's DORA
/// gauges).
pub(crate) type ExtraMetrics = Arc<
    dyn Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = String> + Send>> + Send + Sync,
>;

#[derive(Clone)]
struct Shared {
    token: Option<Arc<str>>,
    metrics: Arc<Metrics>,
}

async fn guard(State(s): State<Shared>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let open = route == "/healthz" || route.starts_with("/webhooks/");
    if let (Some(token), false) = (&s.token, open) {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        if !bool::from(given.as_bytes().ct_eq(token.as_bytes())) {
            s.metrics.inc(
                metrics::HTTP_REQUESTS,
                &[("route", &route), ("status", "401")],
            );
            let mut resp = error(
                StatusCode::UNAUTHORIZED,
                "missing or wrong bearer token: send Authorization: Bearer <the --token of this service>",
            );
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
            return resp;
        }
    }
    let resp = next.run(request).await;
    s.metrics.inc(
        metrics::HTTP_REQUESTS,
        &[("route", &route), ("status", resp.status().as_str())],
    );
    resp
}

/// Time a client has to send a request's headers (also an idle keep-alive connection's next
/// request), so slow or idle connections are closed instead of held.
pub(crate) const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Time a whole request may take before its answer starts (reading the body included): the
/// query time limit plus a margin, and at least two minutes.
pub(crate) fn request_timeout(query_timeout_secs: u64) -> Duration {
    Duration::from_secs(query_timeout_secs.saturating_add(30).max(120))
}

/// A handler that panicked answers 500 and the service goes on; one that ran past the request
/// time limit answers 503.
async fn contain(State(limit): State<Duration>, request: Request, next: Next) -> Response {
    use futures::FutureExt;
    let path = request.uri().path().to_string();
    let work = std::panic::AssertUnwindSafe(next.run(request)).catch_unwind();
    match tokio::time::timeout(limit, work).await {
        Ok(Ok(response)) => response,
        Ok(Err(panic)) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            tracing::error!(
                path,
                panic = what,
                "A request handler panicked; the service goes on."
            );
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the request failed inside cdlake; the server log has the details. Retry, and report it if it persists",
            )
        }
        Err(_) => {
            tracing::warn!(path, "A request ran past the request time limit.");
            let mut resp = error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the request took longer than {} s; retry", limit.as_secs()),
            );
            resp.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
            resp
        }
    }
}

/// Add `/healthz`, `/metrics`, the token guard, request counting and the request limits to
/// `routes`.
pub(crate) fn finish(
    routes: Router,
    args: &HttpArgs,
    metrics: Arc<Metrics>,
    extra: Option<ExtraMetrics>,
    request_limit: Duration,
) -> Router {
    let shared = Shared {
        token: args.token.as_deref().map(Arc::from),
        metrics: metrics.clone(),
    };
    routes
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/metrics",
            get(move || {
                let metrics = metrics.clone();
                let extra = extra.clone();
                async move {
                    let mut text = metrics.render();
                    if let Some(extra) = extra {
                        text.push_str(&extra().await);
                    }
                    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
                }
            }),
        )
        .route_layer(middleware::from_fn_with_state(shared, guard))
        .layer(middleware::from_fn_with_state(request_limit, contain))
}

/// Resolves on Ctrl-C or SIGTERM. The handlers are installed when this is called, not when
/// the future is first polled, so a signal that comes right after a service says it listens
/// stops it cleanly instead of killing it.
pub(crate) fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    let mut unix = {
        use tokio::signal::unix::{SignalKind, signal};
        (
            signal(SignalKind::terminate()).ok(),
            signal(SignalKind::interrupt()).ok(),
        )
    };
    async move {
        #[cfg(unix)]
        {
            let (term, int) = &mut unix;
            let recv = |s: &mut Option<tokio::signal::unix::Signal>| {
                let s = s.take();
                async move {
                    match s {
                        Some(mut s) => {
                            s.recv().await;
                        }
                        None => std::future::pending::<()>().await,
                    }
                }
            };
            tokio::select! {
                _ = recv(term) => {}
                _ = recv(int) => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// [`shutdown_signal`], then `stop` set: what the front ends watch (the live tails end, the
/// Postgres listener stops) while running requests finish.
pub(crate) fn shutdown_signal_then(
    stop: Arc<tokio::sync::watch::Sender<bool>>,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let signal = shutdown_signal();
    async move {
        signal.await;
        stop.send_replace(true);
    }
}

/// Without a token, only a loopback address may be used: anyone who can reach the port could
/// otherwise read the history and post events.
pub(crate) fn check_exposure(
    what: &str,
    listen: SocketAddr,
    token: Option<&str>,
) -> anyhow::Result<()> {
    if token.is_none() {
        if !listen.ip().is_loopback() {
            anyhow::bail!(
                "refusing to serve {what} on {listen} without --token (CDLAKE_TOKEN): anyone who reaches it could read and write. Set a token, or listen on 127.0.0.1"
            );
        }
        eprintln!("No --token: {what} listens on loopback ({listen}) only.");
    }
    Ok(())
}

/// Bind and serve until `shutdown` resolves.
pub(crate) async fn serve(
    app: Router,
    listen: SocketAddr,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {listen}: is another cdlake running there? Pass --listen ADDR"
            )
        })?;
    let addr = listener.local_addr()?;
    eprintln!("Listening on http://{addr}");
    serve_listener(app, listener, shutdown).await;
    Ok(())
}

/// Serve HTTP/1 (and HTTP/2) on `listener` with the header read timeout, until `shutdown`
/// resolves; then let running requests finish.
async fn serve_listener(
    app: Router,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto::Builder;
    use hyper_util::service::TowerToHyperService;

    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let builder = Arc::new(builder);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    let mut connections = tokio::task::JoinSet::new();
    loop {
        // Reap the connections that ended, so the set holds only open ones.
        while connections.try_join_next().is_some() {}
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "HTTP accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let builder = builder.clone();
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let conn = graceful.watch(conn);
        connections.spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "HTTP connection ended");
            }
        });
    }
    // Running requests finish, for up to 10 s; then the connections still open (an SSE tail,
    // which never ends by itself) are closed, so nothing they hold (the router, and with it
    // the writer of `cdlake standalone`) outlives the service.
    let _ = tokio::time::timeout(GRACE, graceful.shutdown()).await;
    connections.abort_all();
    while connections.join_next().await.is_some() {}
}

/// How long running requests may go on once the service is asked to stop.
const GRACE: Duration = Duration::from_secs(10);

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_handler_answers_500_and_the_service_goes_on() {
        let routes = Router::new().route(
            "/boom",
            get(|| async {
                if true {
                    panic!("a bug");
                }
                "unreachable"
            }),
        );
        let args = HttpArgs {
            listen: "127.0.0.1:0".parse().expect("address"),
            token: None,
        };
        let app = finish(
            routes,
            &args,
            Arc::new(Metrics::new()),
            None,
            Duration::from_secs(5),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve_listener(app, listener, async {
            let _ = stopped.await;
        }));
        let client = reqwest::Client::new();
        let resp = client
            .get(format!("http://{addr}/boom"))
            .send()
            .await
            .expect("an answer, not a dropped connection");
        assert_eq!(resp.status().as_u16(), 500);
        let body: serde_json::Value = resp.json().await.expect("json");
        assert!(
            body["error"]
                .as_str()
                .is_some_and(|e| e.contains("server log"))
        );
        let ok = client
            .get(format!("http://{addr}/healthz"))
            .send()
            .await
            .expect("still serving");
        assert_eq!(ok.status().as_u16(), 200);
        let _ = stop.send(());
        server.await.expect("server ends");
    }

    #[tokio::test]
    async fn a_slow_client_is_closed_after_the_header_read_timeout() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let args = HttpArgs {
            listen: "127.0.0.1:0".parse().expect("address"),
            token: None,
        };
        let app = finish(
            Router::new(),
            &args,
            Arc::new(Metrics::new()),
            None,
            Duration::from_secs(5),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        tokio::spawn(serve_listener(app, listener, std::future::pending()));
        let mut slow = tokio::net::TcpStream::connect(addr).await.expect("connect");
        slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            .await
            .expect("write");
        let started = std::time::Instant::now();
        let mut buf = Vec::new();
        let read = tokio::time::timeout(
            HEADER_READ_TIMEOUT + Duration::from_secs(10),
            slow.read_to_end(&mut buf),
        )
        .await;
        assert!(read.is_ok(), "the server closed the connection");
        assert!(
            started.elapsed() >= HEADER_READ_TIMEOUT - Duration::from_secs(1),
            "not before the timeout: {:?}",
            started.elapsed()
        );
    }
}
