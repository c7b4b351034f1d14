//! Serving connections with limits a client cannot hold open.
//!
//! `axum::serve` gives hyper no timer, so hyper's header-read timeout never
//! fires and a client that sends its headers one byte a minute (slowloris)
//! keeps a connection and its task forever. This accept loop is the one
//! axum's own documentation suggests for such settings (hyper-util's
//! connection builder with a Tokio timer, and its graceful shutdown), plus a
//! cap on open connections. Limits on requests (a deadline and the number in
//! flight) are tower layers, in [`super::router`].

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::{Layer, ServiceExt};

/// What one client may hold of the server.
#[derive(Debug, Clone, Copy)]
pub struct ServerLimits {
    /// A client must send a request's headers within this time, or its
    /// connection is closed (slowloris).
    pub header_read_timeout: Duration,
    /// A request whose response has not started after this time gets 503.
    /// The deadline ends with the response's head, so the live queue's
    /// event stream stays open.
    pub request_timeout: Duration,
    /// Requests being handled at once; later ones wait their turn (within
    /// their deadline) instead of exhausting memory or the FHIR server.
    pub max_in_flight: usize,
    /// Open connections; the next client waits to be accepted.
    pub max_connections: usize,
    /// SMART launches one client address may start per minute.
    pub launches_per_minute: u32,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            header_read_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(60),
            max_in_flight: 256,
            max_connections: 1024,
            launches_per_minute: 60,
        }
    }
}

impl From<&crate::config::ServerArgs> for ServerLimits {
    fn from(args: &crate::config::ServerArgs) -> Self {
        ServerLimits {
            header_read_timeout: Duration::from_secs(args.header_timeout_secs.max(1)),
            request_timeout: Duration::from_secs(args.request_timeout_secs.max(1)),
            max_in_flight: args.max_in_flight.max(1),
            max_connections: args.max_connections.max(1),
            launches_per_minute: args.launches_per_minute.max(1),
        }
    }
}

/// SMART launches started per client address: each one stores a pending
/// authorization and sends the browser to the EHR, so a loop of them would
/// fill the store and hammer the EHR. GCRA (governor), keyed by address;
/// [`forget_quiet_addresses`] bounds its memory.
pub type LaunchLimiter = governor::DefaultKeyedRateLimiter<std::net::IpAddr>;

pub fn launch_limiter(per_minute: u32) -> LaunchLimiter {
    let per_minute = std::num::NonZeroU32::new(per_minute.max(1)).expect("at least one");
    governor::RateLimiter::keyed(governor::Quota::per_minute(per_minute))
}

/// Seconds until `ip` may start another launch, or `None` if it may now.
pub fn launch_wait(limiter: &LaunchLimiter, ip: std::net::IpAddr) -> Option<u64> {
    limiter.check_key(&ip).err().map(|not_until| {
        use governor::clock::Clock;
        let wait = not_until.wait_time_from(governor::clock::DefaultClock::default().now());
        wait.as_secs() + 1
    })
}

/// Drop the addresses whose quota is full again (called by the sweeper).
pub fn forget_quiet_addresses(limiter: &LaunchLimiter) {
    limiter.retain_recent();
    limiter.shrink_to_fit();
}

/// The request deadline: a request whose response has not started by then
/// gets the error page (503) and its handler is dropped. It ends with the
/// response's head, so the live queue's event stream is not cut.
pub async fn deadline(
    limit: Duration,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => super::AppError::TooSlow(limit.as_secs()).into_response(),
    }
}

/// How long open connections (live queues among them) get to finish at shutdown.
const DRAIN: Duration = Duration::from_secs(5);

/// Accept connections on `listener` and serve `app` on each (HTTP/1.1 and
/// HTTP/2), until `shutdown` completes; then let open connections finish
/// their current request for a few seconds.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ServerLimits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, or a connection reset before
                    // it was accepted: wait a little rather than spin.
                    tracing::warn!(error = %e, "a connection could not be accepted");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // The peer address, for the launch rate limit (axum's `ConnectInfo`).
        let service = axum::Extension(ConnectInfo(peer))
            .layer(app.clone())
            .map_request(|req: axum::http::Request<Incoming>| req.map(axum::body::Body::new));
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout);
        builder.http2().timer(TokioTimer::new());
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), TowerToHyperService::new(service))
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(DRAIN) => {
            tracing::info!("connections still open at shutdown were closed");
        }
    }
    Ok(())
}
