//! What every cdlake HTTP service shares: `GET /healthz`, `GET /metrics`, the bearer token,
//! request counting, and a graceful shutdown on Ctrl-C or SIGTERM.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use cdlake_ingest::http::error;
use cdlake_ingest::metrics::{self, Metrics};
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

/// Add `/healthz`, `/metrics`, the token guard and request counting to `routes`.
pub(crate) fn finish(
    routes: Router,
    args: &HttpArgs,
    metrics: Arc<Metrics>,
    extra: Option<ExtraMetrics>,
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
}

/// Resolves on Ctrl-C or SIGTERM.
pub(crate) async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
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
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .context("HTTP server failed")
}
