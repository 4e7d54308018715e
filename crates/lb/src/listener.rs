//! Listeners: the bound socket, the accept loop with its connection limit, and each client
//! connection's server (HTTP/1.1 or h2c with prior knowledge) with its watchdog for the
//! header-read and idle timeouts.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use gantry_model::elbv2::BindError;
use http::HeaderValue;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;

use crate::h1;
use crate::proxy::{self, ClientConn};
use crate::routing::CompiledListener;
use crate::workers::Workers;
use crate::Limits;

/// What a listener's connections share; `compiled` is swapped whole on a rule update, so an
/// update never disturbs an open connection.
pub struct ListenerCtx {
    pub port: u16,
    pub port_header: HeaderValue,
    pub compiled: ArcSwap<CompiledListener>,
    limits: Limits,
}

impl ListenerCtx {
    pub fn limits(&self) -> &Limits {
        &self.limits
    }
}

/// A served listener. Dropping it stops the accept loop, closes the socket and ends its
/// connections.
pub struct Listener {
    pub port: u16,
    pub local_addr: SocketAddr,
    pub ctx: Arc<ListenerCtx>,
    accept: JoinHandle<()>,
    /// The listening socket (a second descriptor of it), so that a drop can stop it at once.
    socket: std::net::TcpListener,
    /// Dropped with the listener, which tells every connection to end.
    _shutdown: watch::Sender<()>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.accept.abort();
        // The aborted task lets go of the socket only when its worker next gets to it; shutting
        // the socket down stops listening now, so the port can be bound again right away.
        let _ = socket2::SockRef::from(&self.socket).shutdown(std::net::Shutdown::Both);
    }
}

/// Binds `ip:port` now, as the OS allows (std's bind sets `SO_REUSEADDR`, so a port just
/// released by a closed listener binds again at once).
pub fn bind(ip: IpAddr, port: u16) -> Result<std::net::TcpListener, BindError> {
    let bound = std::net::TcpListener::bind(SocketAddr::new(ip, port)).map_err(|e| BindError {
        port,
        message: e.to_string(),
    })?;
    bound.set_nonblocking(true).map_err(|e| BindError {
        port,
        message: e.to_string(),
    })?;
    Ok(bound)
}

/// Starts serving a bound socket: the accept loop runs on the first worker and hands each
/// connection to the workers in turn.
pub fn start(
    bound: std::net::TcpListener,
    port: u16,
    compiled: CompiledListener,
    limits: Limits,
    workers: &Arc<Workers>,
) -> Result<Listener, BindError> {
    let error = |e: io::Error| BindError {
        port,
        message: e.to_string(),
    };
    let local_addr = bound.local_addr().map_err(error)?;
    let socket = bound.try_clone().map_err(error)?;
    let ctx = Arc::new(ListenerCtx {
        port,
        port_header: HeaderValue::from(port),
        compiled: ArcSwap::from_pointee(compiled),
        limits,
    });
    let (shutdown, shutdown_rx) = watch::channel(());
    let accept = workers.get(0).spawn(accept_loop(
        bound,
        ctx.clone(),
        workers.clone(),
        shutdown_rx,
    ));
    Ok(Listener {
        port,
        local_addr,
        ctx,
        accept,
        socket,
        _shutdown: shutdown,
    })
}

fn server_builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // The header-read timeout is the watchdog's: hyper's would also cut idle keep-alive
        // connections, which live until the listener's idle timeout.
        .header_read_timeout(None)
        .keep_alive(true)
        // Heads and small bodies copied into one buffer and written at once measured cheaper
        // than vectored writes for proxied traffic.
        .writev(false)
        .max_buf_size(limits.max_header_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_concurrent_streams)
        .max_header_list_size(limits.max_header_bytes as u32);
    builder
}

async fn accept_loop(
    bound: std::net::TcpListener,
    ctx: Arc<ListenerCtx>,
    workers: Arc<Workers>,
    shutdown: watch::Receiver<()>,
) {
    let listener = match TcpListener::from_std(bound) {
        Ok(listener) => listener,
        Err(error) => {
            tracing::error!(port = ctx.port, %error, "listener socket not usable");
            return;
        }
    };
    let permits = Arc::new(Semaphore::new(ctx.limits.max_connections_per_listener));
    let builder = Arc::new(server_builder(&ctx.limits));
    loop {
        match listener.accept().await {
            Ok((stream, remote)) => {
                let Ok(permit) = permits.clone().try_acquire_owned() else {
                    // Over the limit: closed at once rather than left in the backlog.
                    drop(stream);
                    continue;
                };
                // Moved to its worker's reactor; it stays there until it closes.
                let Ok(stream) = stream.into_std() else {
                    continue;
                };
                let ctx = ctx.clone();
                let builder = builder.clone();
                let shutdown = shutdown.clone();
                workers.next().spawn(async move {
                    if let Ok(stream) = TcpStream::from_std(stream) {
                        serve(stream, remote, ctx, &builder, shutdown).await;
                    }
                    drop(permit);
                });
            }
            Err(error) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(port = ctx.port, %error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn serve(
    stream: TcpStream,
    remote: SocketAddr,
    ctx: Arc<ListenerCtx>,
    builder: &auto::Builder<TokioExecutor>,
    mut shutdown: watch::Receiver<()>,
) {
    let _ = stream.set_nodelay(true);
    let activity = Arc::new(ConnActivity::new());
    let client = Arc::new(ClientConn {
        remote,
        remote_ip: HeaderValue::from_str(&remote.ip().to_canonical().to_string())
            .unwrap_or_else(|_| HeaderValue::from_static("0.0.0.0")),
        activity: activity.clone(),
        listener: ctx.clone(),
    });
    // Each request clones only this connection's own reference count, which stays in this
    // worker's cache, not the listener's, which every worker would bounce between cores.
    let service = {
        let client = client.clone();
        service_fn(move |request| proxy::handle(client.clone(), request))
    };
    let direct = ctx.limits.http1_forwarding;
    let connection = async move {
        let mut stream = stream;
        // HTTP/1.1 starts on the forwarding path; what it does not handle continues on
        // hyper's server, from the bytes the path had read.
        let prefix = if direct {
            match h1::serve(&mut stream, &client).await {
                h1::Served::Closed => return Ok(()),
                h1::Served::Handoff(prefix) => prefix.freeze(),
            }
        } else {
            Bytes::new()
        };
        let http2 = (!prefix.is_empty()).then(|| prefix.starts_with(HTTP2_PREFACE));
        let io = TokioIo::new(Rewind {
            prefix,
            inner: TrackedStream {
                inner: stream,
                activity: client.activity.clone(),
                http2,
            },
        });
        builder.serve_connection(io, service).await
    };
    tokio::select! {
        result = connection => {
            if let Err(error) = result {
                tracing::debug!(%remote, %error, "client connection ended with an error");
            }
        }
        why = watchdog(&activity, &ctx) => {
            tracing::debug!(%remote, why, "client connection closed");
        }
        _ = shutdown.changed() => {}
    }
}

/// The start of HTTP/2's connection preface.
const HTTP2_PREFACE: &[u8] = b"PRI * HTTP/2";

/// A stream that first gives back bytes already read from it.
struct Rewind<S> {
    prefix: Bytes,
    inner: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix.split_to(n));
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Resolves when the connection must be closed: its request headers took longer than the
/// header-read timeout, or it has been idle (no request in flight, nothing read or written)
/// for the listener's idle timeout, or with requests in flight nothing has been read or
/// written for twice the idle timeout (a client that stopped reading: its response body is no
/// longer polled, so only this sees it; the margin lets the request path's own idle timers,
/// which answer 504 or cut a stalled body, act first).
async fn watchdog(activity: &ConnActivity, ctx: &ListenerCtx) -> &'static str {
    let header_timeout = ctx.limits.header_read_timeout.as_millis() as u64;
    loop {
        let now = clock();
        let idle_timeout = ctx.compiled.load().idle_timeout.as_millis() as u64;
        let header_started = activity.header_started.load(Ordering::Acquire);
        let in_flight = activity.in_flight.load(Ordering::Acquire);
        let (deadline, why) = if header_started != 0 && in_flight == 0 {
            (
                header_started + header_timeout,
                "request headers not received within the header timeout",
            )
        } else if in_flight == 0 {
            (
                activity.last_active.load(Ordering::Acquire) + idle_timeout,
                "idle timeout",
            )
        } else {
            (
                activity.last_active.load(Ordering::Acquire) + 2 * idle_timeout,
                "no bytes either way for twice the idle timeout with a request in flight",
            )
        };
        if deadline <= now {
            return why;
        }
        // Requests do not wake the watchdog (that would cost a wake-up and a timer per
        // request); it looks again at least twice per header timeout instead, so a slow client
        // is cut between one and one and a half header timeouts.
        let wait = deadline.saturating_sub(now).min(header_timeout / 2).max(1);
        tokio::time::sleep(Duration::from_millis(wait)).await;
    }
}

/// Milliseconds since the process's first use of the clock, plus one (0 means "never").
pub(crate) fn clock() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

/// A client connection's activity, updated by its reads and its requests.
pub struct ConnActivity {
    last_active: AtomicU64,
    /// When the first byte of the next request's headers was read (0: not started).
    header_started: AtomicU64,
    in_flight: AtomicUsize,
}

impl ConnActivity {
    fn new() -> ConnActivity {
        ConnActivity {
            last_active: AtomicU64::new(clock()),
            header_started: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
        }
    }

    pub(crate) fn bytes_read(&self, http2: bool) {
        let now = clock();
        self.last_active.store(now, Ordering::Release);
        // HTTP/2 connections carry frames (pings, settings) between requests: only HTTP/1's
        // request heads are timed.
        if !http2
            && self.in_flight.load(Ordering::Acquire) == 0
            && self.header_started.load(Ordering::Acquire) == 0
        {
            self.header_started.store(now, Ordering::Release);
        }
    }

    pub(crate) fn bytes_written(&self) {
        self.last_active.store(clock(), Ordering::Release);
    }

    pub fn request_started(&self) {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.header_started.store(0, Ordering::Release);
    }

    pub fn request_ended(&self) {
        self.last_active.store(clock(), Ordering::Release);
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The client's socket, noting when bytes arrive.
struct TrackedStream {
    inner: TcpStream,
    activity: Arc<ConnActivity>,
    /// Known after the first read: whether the client opened with the HTTP/2 preface.
    http2: Option<bool>,
}

impl AsyncRead for TrackedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            let http2 = *this
                .http2
                .get_or_insert_with(|| buf.filled()[before..].starts_with(b"PRI * HTTP/2"));
            this.activity.bytes_read(http2);
        }
        polled
    }
}

impl AsyncWrite for TrackedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.bytes_written();
        }
        polled
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.bytes_written();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
