//! The accept loop shared by both listeners: plain TCP or TLS (rustls), HTTP/1.1 and
//! HTTP/2 (hyper-util's auto builder), the client address handed to handlers, and a
//! graceful stop that lets in-flight requests finish.

use super::guard::{Guarded, InFlight, Refusals};
use axum::extract::ConnectInfo;
use axum::middleware::AddExtension;
use bytes::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tower::Layer;

/// How long a stop waits for in-flight requests before closing their connections.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a connection may keep the server waiting on its client.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// For the whole of a request head to arrive (idling between requests counts).
    pub header_read: Duration,
    /// For a write to make progress: a client that stops reading an answer is cut
    /// off after this, and the upstream connection the answer came on with it.
    pub write_stall: Duration,
    /// For a request body before [`super::guard::MIN_BODY_RATE`] applies to it.
    pub body_grace: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            header_read: Duration::from_secs(30),
            write_stall: Duration::from_secs(30),
            body_grace: Duration::from_secs(30),
        }
    }
}

/// What a listener needs to speak HTTPS: the certificate and key, loaded.
#[derive(Clone)]
pub struct Tls(pub TlsAcceptor);

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tls")
    }
}

/// Loads a PEM certificate chain and private key for HTTPS.
pub fn tls_acceptor(cert: &Path, key: &Path) -> Result<Tls, String> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("cannot read the certificate {}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!("{} holds no certificate", cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("cannot read the private key {}: {e}", key.display()))?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut config = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| format!("the certificate and key do not make a usable pair: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Tls(TlsAcceptor::from(Arc::new(config))))
}

/// The admin API's per-connection service: the router, with the peer's address in
/// each request's extensions for the `ConnectInfo` extractor.
pub fn with_connect_info(
    router: axum::Router,
) -> impl Fn(SocketAddr) -> AddExtension<axum::Router, ConnectInfo<SocketAddr>> + Send + 'static {
    move |peer| axum::Extension(ConnectInfo(peer)).layer(router.clone())
}

/// A listener's own way of serving a plain-TCP connection, in place of hyper's (the
/// gateway's: `proxy::conn::serve`). It gets the timeouts and the stop signal; a connection it does not take to the end comes back, with the bytes
/// already read and the service, for hyper to serve.
pub type OwnConnections<S> = fn(TcpStream, S, Timeouts, watch::Receiver<bool>) -> Served<S>;

/// A connection served by [`OwnConnections`]: what comes back for hyper, if anything.
pub type Served<S> = Pin<Box<dyn Future<Output = Option<(Rewind, S)>> + Send>>;

/// Serves `io` with hyper (HTTP/1.1 or HTTP/2, upgrades allowed) until it closes; the
/// drain on stop waits for it through `watcher`. Every way a connection reaches hyper
/// (plain, handed over by the own loop, TLS) goes through here, and through the
/// [`super::guard`], so that malformed heads are answered in the contract's JSON.
fn with_hyper<I, S>(
    builder: &Builder<TokioExecutor>,
    (watcher, _slot): (Watcher, tokio::sync::OwnedSemaphorePermit),
    io: I,
    service: S,
    timeouts: Timeouts,
) -> impl Future<Output = ()> + Send + 'static
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: tower::Service<
            hyper::Request<hyper::body::Incoming>,
            Response = axum::response::Response,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let in_flight = InFlight::default();
    let io = Guarded::new(
        WriteDeadline::new(io, timeouts.write_stall),
        timeouts,
        in_flight.clone(),
    );
    let service = Refusals {
        inner: service,
        in_flight,
    };
    let conn = builder
        .serve_connection_with_upgrades(TokioIo::new(io), TowerToHyperService::new(service))
        .into_owned();
    async move {
        let _ = watcher.watch(conn).await;
    }
}

/// Raises the process's soft limit on open files to its hard limit (a server's
/// connections are files; the common soft default of 1,024 is reached by a few hundred
/// idle clients), and answers the limit now in force (`None`: unknown, no limit).
pub fn raise_open_files_limit() -> Option<u64> {
    #[cfg(target_os = "linux")]
    {
        use rustix::process::{getrlimit, setrlimit, Resource};
        let mut limit = getrlimit(Resource::Nofile);
        if limit.current < limit.maximum {
            let raised = rustix::process::Rlimit {
                current: limit.maximum,
                maximum: limit.maximum,
            };
            match setrlimit(Resource::Nofile, raised) {
                Ok(()) => limit = raised,
                Err(e) => tracing::warn!(error = %e, "could not raise the open-files limit"),
            }
        }
        limit.current
    }
    #[cfg(not(target_os = "linux"))]
    None
}

/// How many client connections each listener may hold at once, out of `open_files`: a
/// third each, after a reserve for the database, the upstream connections and the
/// like. So a flood of connections to one listener (say, idle ones to the admin API)
/// cannot take the files the other needs: its further clients wait in the accept queue
/// until some close, and the other listener answers as before.
pub fn connections_per_listener(open_files: Option<u64>) -> usize {
    match open_files {
        Some(n) => {
            let reserve = (n / 4).min(256);
            usize::try_from((n - reserve) / 3)
                .unwrap_or(usize::MAX)
                .max(1)
        }
        None => usize::MAX >> 4,
    }
}

/// Serves on `listener` until `stop` turns true, then drains; `service_for` makes each
/// connection's service from its peer address (an axum `Router`, or the gateway's own
/// service), and `own` serves plain-TCP connections where hyper would.
pub async fn run<S>(
    listener: TcpListener,
    service_for: impl Fn(SocketAddr) -> S,
    tls: Option<TlsAcceptor>,
    own: Option<OwnConnections<S>>,
    timeouts: Timeouts,
    max_connections: usize,
    mut stop: watch::Receiver<bool>,
) where
    S: tower::Service<
            hyper::Request<hyper::body::Incoming>,
            Response = axum::response::Response,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let graceful = GracefulShutdown::new();
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(timeouts.header_read)
        // The guard refuses heads over these first, with the contract's 431.
        .max_headers(tessera_wire::h1::MAX_HEADERS + 1)
        .max_buf_size(2 * tessera_wire::h1::MAX_HEAD_BYTES);
    let builder = Arc::new(builder);
    let slots = Arc::new(tokio::sync::Semaphore::new(max_connections));
    loop {
        // A slot first: at the cap, new clients wait in the kernel's accept queue.
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            () = async { let _ = stop.wait_for(|s| *s).await; } => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off, do not spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = async { let _ = stop.wait_for(|s| *s).await; } => break,
        };
        let _ = stream.set_nodelay(true);
        let service = service_for(peer);
        let builder = builder.clone();
        // Held for the connection's whole life, whoever serves it: the drain waits for
        // every watcher to be gone, and the slot goes back with it.
        let watcher = (graceful.watcher(), slot);
        match (&tls, own) {
            (None, Some(own)) => {
                let served = own(stream, service, timeouts, stop.clone());
                tokio::spawn(async move {
                    if let Some((io, service)) = served.await {
                        with_hyper(&builder, watcher, io, service, timeouts).await;
                    }
                });
            }
            (None, None) => {
                tokio::spawn(with_hyper(&builder, watcher, stream, service, timeouts));
            }
            (Some(acceptor), _) => {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    // A handshake is part of the first head's time.
                    let handshake =
                        tokio::time::timeout(timeouts.header_read, acceptor.accept(stream));
                    match handshake.await {
                        Ok(Ok(tls_stream)) => {
                            with_hyper(&builder, watcher, tls_stream, service, timeouts).await;
                        }
                        Ok(Err(e)) => tracing::debug!(error = %e, %peer, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        }
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("some connections were still busy after {DRAIN_TIMEOUT:?}; closing them");
    }
}

/// A connection handed to hyper after some of it was read: those bytes first, then
/// the socket.
pub struct Rewind {
    read: Bytes,
    stream: TcpStream,
}

impl Rewind {
    pub fn new(read: Bytes, stream: TcpStream) -> Self {
        Self { read, stream }
    }
}

impl AsyncRead for Rewind {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.read.is_empty() {
            return Pin::new(&mut self.stream).poll_read(cx, buf);
        }
        let n = self.read.len().min(buf.remaining());
        buf.put_slice(&self.read.split_to(n));
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Rewind {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// A connection whose writes fail with `TimedOut` once one has made no progress for
/// its `stall` time: hyper has no write timeout of its own, and a client that stops
/// reading would otherwise hold its connection, and the upstream one its answer comes
/// on, for ever. The timer exists only while a write waits.
pub struct WriteDeadline<I> {
    io: I,
    stall: Duration,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<I> WriteDeadline<I> {
    pub fn new(io: I, stall: Duration) -> Self {
        Self {
            io,
            stall,
            timer: None,
        }
    }

    /// The answer of a write-side poll, with the stall timer started, checked or
    /// cleared by it.
    fn watch<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<std::io::Result<T>>,
    ) -> Poll<std::io::Result<T>> {
        if polled.is_ready() {
            self.timer = None;
            return polled;
        }
        let stall = self.stall;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(stall)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(std::io::ErrorKind::TimedOut.into())),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for WriteDeadline<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write(cx, buf);
        self.watch(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.watch(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let polled = Pin::new(&mut self.io).poll_flush(cx);
        self.watch(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
