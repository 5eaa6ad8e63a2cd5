//! The accept loop, one for plain HTTP and TLS: a task per connection, at
//! most [`Limits::max_connections`] of them, each with deadlines on the TLS
//! handshake, on its first request and on every request's headers, so a
//! client that is slow on purpose cannot hold the server. Body stalls are
//! the router's business (`routes::router`).
//!
//! On shutdown it stops accepting, closes idle connections, lets in-flight
//! requests finish (parked long-polls are woken through the same
//! cancellation token) and, after [`SHUTDOWN_GRACE`], closes what is left.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::config::Limits;

/// How long connections may go on after shutdown begins before they are
/// closed with whatever they were doing (a client that stops reading its
/// answer would otherwise hold the shutdown forever). Kubernetes kills a pod
/// 30 s after asking it to stop.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(25);

/// What every connection task shares.
struct Shared {
    router: Router,
    tls: Option<TlsAcceptor>,
    http: auto::Builder<TokioExecutor>,
    header_timeout: Duration,
    tls_handshake_timeout: Duration,
    max_connection_age: Option<Duration>,
}

/// Accepts connections on `listener` and serves `router` on them (over TLS
/// when `tls` is given) until `shutdown` is cancelled, then drains them.
pub(crate) async fn serve(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    router: Router,
    limits: &Limits,
    shutdown: CancellationToken,
) {
    let shared = Arc::new(Shared {
        router,
        tls: tls.map(TlsAcceptor::from),
        http: http_builder(limits),
        header_timeout: limits.header_timeout,
        tls_handshake_timeout: limits.tls_handshake_timeout,
        max_connection_age: limits.max_connection_age,
    });
    let max_connections = limits.max_connections.max(1);
    let permits = Arc::new(Semaphore::new(max_connections));
    let mut connections = JoinSet::new();
    let mut at_limit = false;
    loop {
        while connections.try_join_next().is_some() {}
        let permit = match Arc::clone(&permits).try_acquire_owned() {
            Ok(permit) => {
                at_limit = false;
                permit
            }
            Err(_) => {
                if !at_limit {
                    at_limit = true;
                    tracing::warn!(
                        max_connections,
                        "connection limit reached: new connections wait until others close"
                    );
                }
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    permit = Arc::clone(&permits).acquire_owned() => match permit {
                        Ok(permit) => permit,
                        Err(_closed) => break,
                    },
                }
            }
        };
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    accept_failed(err).await;
                    continue;
                }
            },
        };
        connections.spawn(serve_connection(
            stream,
            peer,
            Arc::clone(&shared),
            shutdown.clone(),
            permit,
        ));
    }
    drop(listener);
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            n_connections = connections.len(),
            grace_secs = SHUTDOWN_GRACE.as_secs(),
            "closing connections still busy after the shutdown grace period"
        );
        connections.shutdown().await;
    }
}

/// HTTP/1.1 with a header deadline, or HTTP/2 (prior knowledge, or ALPN
/// over TLS) with keep-alive pings, whichever the client speaks.
fn http_builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        // a peer that stops answering pings is gone: drop its connection
        .keep_alive_interval(limits.header_timeout)
        .keep_alive_timeout(limits.header_timeout);
    builder
}

/// Most accept errors concern one connection; the rest (out of file
/// descriptors) pass with time, so wait a little instead of spinning.
async fn accept_failed(err: std::io::Error) {
    use std::io::ErrorKind;
    if matches!(
        err.kind(),
        ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset | ErrorKind::ConnectionRefused
    ) {
        return;
    }
    tracing::error!(%err, "accepting a connection failed; retrying in 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// One connection, holding one of the `max_connections` permits for its life.
async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    _permit: OwnedSemaphorePermit,
) {
    // answers are written whole; waiting for more to send only adds latency
    let _ = stream.set_nodelay(true);
    let Some(acceptor) = &shared.tls else {
        serve_http(stream, peer, &shared, &shutdown).await;
        return;
    };
    let handshake = tokio::time::timeout(shared.tls_handshake_timeout, acceptor.accept(stream));
    let tls_stream = tokio::select! {
        () = shutdown.cancelled() => return,
        handshake = handshake => match handshake {
            Ok(Ok(tls_stream)) => tls_stream,
            Ok(Err(err)) => {
                tracing::debug!(%peer, %err, "TLS handshake failed");
                return;
            }
            Err(_elapsed) => {
                tracing::debug!(%peer, "TLS handshake timed out");
                return;
            }
        },
    };
    serve_http(tls_stream, peer, &shared, &shutdown).await;
}

/// HTTP on an established (plain or TLS) stream until either side closes it.
async fn serve_http<I>(io: I, peer: SocketAddr, shared: &Shared, shutdown: &CancellationToken)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let started = Arc::new(AtomicBool::new(false));
    let service = {
        let started = Arc::clone(&started);
        let router = shared.router.clone();
        hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            started.store(true, Ordering::Release);
            router.clone().oneshot(request)
        })
    };
    let connection = shared.http.serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    // HTTP/1's header deadline starts once the protocol is known; this one
    // covers the bytes before that and an HTTP/2 client that never asks
    let first_request_deadline = tokio::time::sleep(shared.header_timeout);
    tokio::pin!(first_request_deadline);
    let mut waiting_for_first_request = true;
    let mut draining = false;
    // past its age a connection is closed gracefully (HTTP/2 GOAWAY; HTTP/1
    // after the request in flight), so that clients reconnect and a
    // per-connection balancer (kube-proxy) spreads them over new replicas;
    // each connection's age varies by up to a tenth, so they do not all go at once
    let max_age = shared.max_connection_age.map(|age| {
        let spread = age.mul_f64(rand::random_range(0.0..0.1));
        age.saturating_sub(spread)
    });
    let aged = tokio::time::sleep(max_age.unwrap_or(Duration::from_secs(365 * 24 * 3600)));
    tokio::pin!(aged);
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(err) = result {
                    tracing::debug!(%peer, %err, "connection ended with an error");
                }
                return;
            }
            () = &mut first_request_deadline, if waiting_for_first_request => {
                waiting_for_first_request = false;
                if !started.load(Ordering::Acquire) {
                    tracing::debug!(%peer, "no request within the header timeout; closing");
                    return;
                }
            }
            () = shutdown.cancelled(), if !draining => {
                draining = true;
                connection.as_mut().graceful_shutdown();
            }
            () = &mut aged, if !draining && max_age.is_some() => {
                tracing::debug!(%peer, "connection reached its maximum age; closing it gracefully");
                draining = true;
                connection.as_mut().graceful_shutdown();
            }
        }
    }
}
