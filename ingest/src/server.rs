//! The HTTP/1.1 server under hostile clients.
//!
//! `axum::serve` installs no timer, so hyper never times out a client that
//! sends a request line and one header and then stalls: such connections
//! stay open for as long as the client likes, and enough of them exhaust
//! file descriptors. This loop serves the same router with hyper-util's
//! builder and:
//!
//! - a **header-read timeout** (hyper's timer): a connection that has not
//!   sent a whole request head within it is closed, whether it stalls in the
//!   middle of the head or idles before the first byte or between requests;
//! - a **cap on connections**: each connection holds one of
//!   `max_connections` permits; when all are taken, new connections wait in
//!   the kernel's backlog until one closes (at most the header-read timeout
//!   for a stalled one), so memory and descriptors stay bounded;
//! - a **cap on the request head**: hyper buffers at most
//!   [`MAX_HEAD_BYTES`] while reading a request line and headers, and answers
//!   431 beyond it (hyper's default is ~400 KiB, which a client could make
//!   every instance buffer per connection);
//! - the **peer's address** in each request's extensions
//!   (`axum::extract::ConnectInfo`), which the per-address budget of costly
//!   refusals keys on (`crate::request_context::guard`);
//! - graceful shutdown: on cancel, idle connections close at once and
//!   requests in work finish (each is bounded by the publish deadline).
//!
//! The body-read deadline is per route (only the entry route reads a body):
//! see `routes::entries`. HTTP/2 is not served: the L7 load balancer in front
//! speaks HTTP/1.1 to the instances, and h2 would need its own timeouts.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt as _;

/// How the listener treats its clients.
#[derive(Debug, Clone, Copy)]
pub struct ServeLimits {
    /// A request head (line + headers) must arrive within this, counted from
    /// the moment hyper starts waiting for it (new or kept-alive connection).
    pub header_read_timeout: Duration,
    /// Most connections open at once.
    pub max_connections: usize,
}

/// The most a request head (line + headers) may take; more is answered 431.
/// An entry request's head is well under 2 KiB; 16 KiB leaves room for
/// cookies a shop's domain may add. (hyper's floor is 8 KiB.)
pub const MAX_HEAD_BYTES: usize = 16 * 1024;

/// A pause after a failed `accept` (EMFILE and the like), so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Serves `router` on `listener` until `shutdown` is cancelled, then waits
/// for the open connections to finish their requests.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ServeLimits,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let mut builder = Builder::new(TokioExecutor::new()).http1_only();
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(MAX_HEAD_BYTES)
        .keep_alive(true);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let connections = TaskTracker::new();
    loop {
        let slot = tokio::select! {
            _ = shutdown.cancelled() => break,
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
        };
        if slots.available_permits() == 0 {
            metrics::counter!("firstcome_ingest_connections_saturated_total").increment(1);
        }
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(router.clone().map_request(move |mut request: Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
            request.map(Body::new)
        }));
        let builder = builder.clone();
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            let _slot = slot;
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            let served = tokio::select! {
                served = connection.as_mut() => served,
                _ = shutdown.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(error) = served {
                // Timed-out heads, resets and garbage: the client's doing.
                tracing::debug!(%error, "connection ended with an error");
            }
        });
    }
    connections.close();
    connections.wait().await;
    Ok(())
}
