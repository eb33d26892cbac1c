//! `offpath dev`'s HTTP server: the API router over TCP with the limits a server
//! reachable by slow or hostile clients needs, which `axum::serve` does not set. A
//! client must send its request headers within [`Limits::header_read`] (else the
//! connection is closed) and no gap in its body may exceed [`Limits::body_read`] (else
//! the body cannot be read: `400`), and at most [`Limits::connections`]
//! connections are served at once (more wait in the listen backlog). Slow clients
//! therefore hold a connection for seconds, not forever, and cannot stall others.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt;
use tower_http::timeout::RequestBodyTimeoutLayer;

/// How long clients may take, and how many are served at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// From a connection's start (or a keep-alive request's end) to the end of the next
    /// request's headers.
    pub header_read: Duration,
    /// Gaps while reading a request body: a body that stalls this long cannot be
    /// read, and the request is refused.
    pub body_read: Duration,
    /// Connections served at once.
    pub connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_read: Duration::from_secs(10),
            body_read: Duration::from_secs(30),
            connections: 512,
        }
    }
}

/// Serves `router` on `listener` until `shutdown` completes, then lets the requests in
/// progress finish (long-polls are at most 20 s).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let router = router.layer(RequestBodyTimeoutLayer::new(limits.body_read));
    let permits = Arc::new(Semaphore::new(limits.connections));
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read);
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = Arc::clone(&permits).acquire_owned() => permit.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors and the like: wait, do not spin.
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let service = router
            .clone()
            .map_request(|request: Request<hyper::body::Incoming>| {
                request.map(axum::body::Body::new)
            })
            .map_err(|never: Infallible| match never {});
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), TowerToHyperService::new(service))
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(error = %err, "connection ended");
            }
            drop(permit);
        });
    }
    graceful.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use axum::routing::{get, post};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    use super::*;

    /// A server on a loopback port with short limits and two connections at most.
    async fn server() -> (String, tokio::sync::oneshot::Sender<()>) {
        let router = Router::new()
            .route("/", get(|| async { "ok" }))
            .route("/echo", post(|body: String| async move { body }));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let limits = Limits {
            header_read: Duration::from_millis(500),
            body_read: Duration::from_millis(500),
            connections: 2,
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(serve(listener, router, limits, async {
            let _ = stopped.await;
        }));
        (addr, stop)
    }

    /// Sends `request` on a new connection; the whole answer, read until the server
    /// closes (at most 5 s).
    async fn exchange(addr: &str, request: &[u8]) -> String {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(request).await.unwrap();
        let mut answer = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer));
        read.await
            .expect("the server answers or closes within 5 s")
            .unwrap();
        String::from_utf8_lossy(&answer).into_owned()
    }

    /// Two clients that never finish their headers hold both connections; they are cut
    /// off after the header timeout, and a third client is then served, well within
    /// the test's bound.
    #[tokio::test]
    async fn slow_headers_are_cut_off_and_do_not_stall_others() {
        let (addr, _stop) = server().await;
        let mut slow = Vec::new();
        for _ in 0..2 {
            let mut stream = TcpStream::connect(&addr).await.unwrap();
            stream
                .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
                .await
                .unwrap();
            slow.push(stream);
        }
        let started = Instant::now();
        let answer = exchange(
            &addr,
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(
            answer.starts_with("HTTP/1.1 200") && answer.ends_with("ok"),
            "{answer}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        for mut stream in slow {
            let mut rest = Vec::new();
            let closed =
                tokio::time::timeout(Duration::from_secs(3), stream.read_to_end(&mut rest));
            closed.await.expect("a slow client is disconnected").ok();
        }
    }

    /// A body that stops arriving is refused once the body timeout passes.
    #[tokio::test]
    async fn a_stalled_body_is_refused() {
        let (addr, _stop) = server().await;
        let request = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\nConnection: close\r\n\r\nonly ten b";
        let answer = exchange(&addr, request).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
        assert!(
            answer.contains("not received within the designated timeout"),
            "{answer}"
        );
    }
}
