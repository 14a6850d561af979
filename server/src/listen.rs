//! The HTTP connection layer under the router: accepts TCP connections and serves HTTP/1.1 and
//! HTTP/2 cleartext (prior knowledge) on each, with what `axum::serve` leaves at hyper's
//! defaults set for a server on the internet:
//!
//! - a client that half-closes its side after sending a request (`shutdown(SHUT_WR)`, as
//!   `curl`, `nc -N` and some proxies do) still gets its answer, and the request still runs;
//! - a connection that has not sent a whole request head within [`HEADER_READ_TIMEOUT`] is
//!   closed, so half-finished connections do not pile up;
//! - every request carries the peer's address (`axum::extract::ConnectInfo`);
//! - a failed `accept` (out of file descriptors) waits a moment instead of spinning.
//!
//! hyper itself answers a request head it cannot parse (400) or one larger than its buffer or
//! with more than [`MAX_HEADERS`] headers (431), with an empty body and a closed connection:
//! there is no request yet to give a problem body to. Heads within those bounds but over the
//! API's own limits get a problem body from [`http_common::context::request_context`].

use std::future::Future;
use std::io;
use std::pin::pin;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tower::ServiceExt;

/// How long a connection may take to send a whole request head.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// The most headers hyper parses in one request; the API's own limit
/// ([`http_common::context::MAX_HEADER_COUNT`]) is lower, so that a request over it gets a
/// problem body.
pub const MAX_HEADERS: usize = 2 * http_common::context::MAX_HEADER_COUNT;
/// How long a failed `accept` waits before the next one.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// The connection settings of every served connection.
fn builder() -> Builder<TokioExecutor> {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .half_close(true)
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_headers(MAX_HEADERS);
    builder.http2().timer(TokioTimer::new());
    builder
}

/// Serves `router` on the connections `listener` accepts until `shutdown` completes; then stops
/// accepting, lets each connection finish the requests it has in flight (idle ones close) and
/// returns once every connection has closed.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let builder = builder();
    let graceful = GracefulShutdown::new();
    let mut shutdown = pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    if is_connection_error(&error) {
                        continue;
                    }
                    tracing::warn!(%error, "cannot accept a connection; retrying shortly");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(router.clone().map_request(
            move |mut request: Request<Incoming>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                request.map(Body::new)
            },
        ));
        let connection = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// Errors of one connection that was already gone when accepted: nothing to wait for.
fn is_connection_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}
