//! The HTTP connection layer under the router: accepts TCP connections and serves HTTP/1.1 and
//! HTTP/2 cleartext (prior knowledge) on each, with what `axum::serve` leaves at hyper's
//! defaults set for a server on the internet:
//!
//! - a client that half-closes its side after sending a request (`shutdown(SHUT_WR)`, as
//!   `curl`, `nc -N` and some proxies do) still gets its answer, and the request still runs;
//! - a connection that has not sent a whole request head within [`HEADER_READ_TIMEOUT`] is
//!   closed, so half-finished connections do not pile up;
//! - every request carries the peer's address (`axum::extract::ConnectInfo`);
//! - a failed `accept` (out of file descriptors) waits a moment instead of spinning;
//! - at most so many connections are open, in all and from one address
//!   ([`crate::limits::Connections`]); one more is answered 503 with `Retry-After` and closed.
//!
//! hyper itself answers a request head it cannot parse (400), a target too long (414) and one
//! larger than its buffer or with more than [`MAX_HEADERS`] headers (431) before any request
//! exists, with an empty body and a closed connection. [`ProblemBodies`] gives those answers a
//! problem body on their way out, as every other error answer has. Heads within hyper's bounds
//! but over the API's own limits get theirs from [`http_common::context::request_context`].

use std::future::Future;
use std::io;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode};
use http_common::Problem;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tower::ServiceExt;

use crate::limits::Connections;

/// How long a connection may take to send a whole request head.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// The most headers hyper parses in one request; the API's own limit
/// ([`http_common::context::MAX_HEADER_COUNT`]) is lower, so that a request over it gets a
/// problem body.
pub const MAX_HEADERS: usize = 2 * http_common::context::MAX_HEADER_COUNT;
/// How long a refused connection's answer may take to write.
const REFUSAL_WAIT: Duration = Duration::from_secs(1);
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
    // HTTP/2: at most 100 requests at once on one connection, and a peer that stops answering
    // pings is dropped.
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(100)
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(10));
    builder
}

/// Serves `router` on the connections `listener` accepts until `shutdown` completes; then stops
/// accepting, lets each connection finish the requests it has in flight (idle ones close) and
/// returns once every connection has closed.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    connections: Arc<Connections>,
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
        let Some(slot) = connections.admit(peer.ip()) else {
            metrics::counter!("mercato_http_refused_total", "reason" => "connections").increment(1);
            tokio::spawn(refuse(stream));
            continue;
        };
        let service = TowerToHyperService::new(router.clone().map_request(
            move |mut request: Request<Incoming>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                request.map(Body::new)
            },
        ));
        let connection = builder
            .serve_connection(ProblemBodies::new(TokioIo::new(stream)), service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// Tells a connection beyond the limits to come back later, and closes it: at most
/// [`REFUSAL_WAIT`] of the server's time.
async fn refuse(mut stream: tokio::net::TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let answer = crate::limits::refused_connection_answer();
    let _ = tokio::time::timeout(REFUSAL_WAIT, async {
        stream.write_all(&answer).await?;
        stream.shutdown().await?;
        // Closing with the client's request unread would reset the connection, and the client
        // might lose the answer before reading it: read what it sends until it closes.
        let mut sink = [0u8; 4096];
        while stream.read(&mut sink).await? > 0 {}
        Ok::<_, std::io::Error>(())
    })
    .await;
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

/// hyper's own answer to a request head it could not read: exactly this status line, then
/// `connection: close` and an empty body. The answers of the router never look like this (every
/// error answer of theirs has a problem body).
const AUTOMATIC: &[(&[u8], StatusCode)] = &[
    (
        b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n",
        StatusCode::BAD_REQUEST,
    ),
    (
        b"HTTP/1.1 414 URI Too Long\r\nconnection: close\r\ncontent-length: 0\r\n",
        StatusCode::URI_TOO_LONG,
    ),
    (
        b"HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\ncontent-length: 0\r\n",
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
    ),
];

/// What to fix, for each of hyper's automatic answers.
fn automatic_detail(status: StatusCode) -> String {
    use http_common::context::{MAX_HEADER_BYTES, MAX_HEADER_COUNT};
    match status {
        StatusCode::URI_TOO_LONG => {
            "the request target is too long: shorten the path and query".to_owned()
        }
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => format!(
            "the request head is larger than the server reads: send at most {MAX_HEADER_COUNT} \
             headers of {MAX_HEADER_BYTES} bytes in all"
        ),
        _ => "the request head could not be read: check the request line (METHOD /path HTTP/1.1), \
              that each header is `Name: value` on a line of its own ending in CRLF, and that \
              Content-Length is a number (RFC 9112)"
            .to_owned(),
    }
}

/// The answer hyper wrote for a head it could not read, with a problem body; `None` for any
/// other bytes.
fn with_problem_body(written: &[u8]) -> Option<Vec<u8>> {
    let (prefix, status) = AUTOMATIC
        .iter()
        .find(|(prefix, _)| written.starts_with(prefix))?;
    let head_end = written
        .windows(4)
        .position(|window| window == b"\r\n\r\n")?
        + 2;
    let status_line_end = written.windows(2).position(|window| window == b"\r\n")? + 2;
    let body = serde_json::to_vec(&Problem::new(
        *status,
        "malformed-request",
        automatic_detail(*status),
    ))
    .ok()?;
    let mut answer = Vec::with_capacity(written.len() + body.len() + 64);
    answer.extend_from_slice(&written[..status_line_end]);
    answer.extend_from_slice(b"connection: close\r\ncontent-type: application/problem+json\r\n");
    answer.extend_from_slice(format!("content-length: {}\r\n", body.len()).as_bytes());
    // The headers after content-length (the date), then the end of the head and the body.
    answer.extend_from_slice(&written[prefix.len()..head_end]);
    answer.extend_from_slice(b"\r\n");
    answer.extend_from_slice(&body);
    Some(answer)
}

/// A connection's byte stream that gives hyper's automatic answers (see [`AUTOMATIC`]) a problem
/// body and passes everything else through. hyper writes an answer's head in one buffer (the
/// first of a vectored write), and an automatic answer is a head alone.
struct ProblemBodies<I> {
    inner: I,
    /// An answer being written in place of hyper's: its bytes, how many are written, and how
    /// many bytes of hyper's buffer it stands for.
    replacing: Option<(Vec<u8>, usize, usize)>,
}

impl<I> ProblemBodies<I> {
    fn new(inner: I) -> Self {
        ProblemBodies {
            inner,
            replacing: None,
        }
    }
}

impl<I: hyper::rt::Read + Unpin> hyper::rt::Read for ProblemBodies<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<I: hyper::rt::Write + Unpin> hyper::rt::Write for ProblemBodies<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.replacing.is_none() {
            match with_problem_body(buf) {
                Some(answer) => this.replacing = Some((answer, 0, buf.len())),
                None => return Pin::new(&mut this.inner).poll_write(cx, buf),
            }
        }
        this.poll_replacing(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.replacing.is_none() {
            let first = bufs.iter().find(|buf| !buf.is_empty());
            match first.and_then(|first| with_problem_body(first)) {
                Some(answer) => {
                    let stands_for = bufs.iter().map(|buf| buf.len()).sum();
                    this.replacing = Some((answer, 0, stands_for));
                }
                None => return Pin::new(&mut this.inner).poll_write_vectored(cx, bufs),
            }
        }
        this.poll_replacing(cx)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl<I: hyper::rt::Write + Unpin> ProblemBodies<I> {
    /// Writes the answer that stands in for hyper's; ready with the length of hyper's bytes once
    /// it is written whole.
    fn poll_replacing(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let this = self;
        let Some((answer, written, stands_for)) = this.replacing.as_mut() else {
            return Poll::Ready(Ok(0));
        };
        // hyper offers the same buffer again after a Pending, until it is taken whole.
        while *written < answer.len() {
            let wrote = ready!(Pin::new(&mut this.inner).poll_write(cx, &answer[*written..]))?;
            if wrote == 0 {
                return Poll::Ready(Ok(0));
            }
            *written += wrote;
        }
        let stands_for = *stands_for;
        this.replacing = None;
        Poll::Ready(Ok(stands_for))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hypers_automatic_answers_get_a_problem_body_and_nothing_else_changes() {
        let automatic = b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\ndate: Thu, 03 Dec 2026 18:17:50 GMT\r\n\r\n";
        let answer = String::from_utf8(with_problem_body(automatic).expect("rewritten")).unwrap();
        let (head, body) = answer.split_once("\r\n\r\n").expect("a head and a body");
        assert!(head.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{head}");
        assert!(
            head.contains("content-type: application/problem+json"),
            "{head}"
        );
        assert!(
            head.contains("date: Thu, 03 Dec 2026 18:17:50 GMT"),
            "{head}"
        );
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{head}"
        );
        let problem: serde_json::Value = serde_json::from_str(body).expect("JSON");
        assert_eq!(problem["status"], 400);
        assert!(problem["detail"].as_str().unwrap().contains("request line"));

        for other in [
            &b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/problem+json\r\ncontent-length: 20\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
            b"{\"events\":[]}",
        ] {
            assert!(with_problem_body(other).is_none());
        }
    }
}
