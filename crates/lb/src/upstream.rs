//! Connections to one target, per worker: keep-alive HTTP/1.1 connections in a small LIFO pool
//! of hyper's connection handles (no pool key hashing, no checkout futures), or for HTTP/2
//! targets hyper-util's pooled client, which multiplexes on one h2c connection.

use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use gantry_model::elbv2::TargetProtocolVersion;
use hyper::body::Incoming;

use crate::proxy::RequestBody;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;

/// How long an idle pooled connection is kept.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Idle connections kept per target and worker; more are closed when they come back.
const MAX_IDLE: usize = 512;
/// ALB's limit for connecting to a target; past it the client gets a 504.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A failed forward.
pub struct ForwardError {
    /// Whether the target is to blame (refused, reset, closed early, not HTTP), as opposed to
    /// the client (its request body broke off).
    pub target_at_fault: bool,
    /// The target could not be reached in time (504 rather than 502).
    pub timed_out: bool,
    pub message: String,
}

/// The HTTP/1.1 connection a response came on; it goes back to its pool when the response
/// body has been read to the end.
pub struct Lease(SendRequest<RequestBody>);

/// One worker's way to a target.
pub enum Upstream {
    Http1(Http1Pool),
    /// Boxed: the client is several times the size of the pool.
    Http2(Box<Client<HttpConnector, RequestBody>>),
}

pub struct Http1Pool {
    addr: SocketAddr,
    idle: Mutex<Vec<(SendRequest<RequestBody>, Instant)>>,
    /// Idle keep-alive connections of the HTTP/1.1 forwarding path (`h1`), which reads and
    /// writes them itself.
    raw: Mutex<Vec<(TcpStream, Instant)>>,
}

impl Upstream {
    pub fn new(addr: SocketAddr, protocol: TargetProtocolVersion) -> Upstream {
        match protocol {
            TargetProtocolVersion::Http1 => Upstream::Http1(Http1Pool {
                addr,
                idle: Mutex::new(Vec::new()),
                raw: Mutex::new(Vec::new()),
            }),
            TargetProtocolVersion::Http2 => {
                let mut connector = HttpConnector::new();
                connector.set_nodelay(true);
                connector.set_connect_timeout(Some(Duration::from_secs(10)));
                let client = Client::builder(TokioExecutor::new())
                    .pool_timer(TokioTimer::new())
                    .timer(TokioTimer::new())
                    .pool_idle_timeout(IDLE_TIMEOUT)
                    .http2_only(true)
                    .build(connector);
                Upstream::Http2(Box::new(client))
            }
        }
    }

    /// Sends `request` (whose URI is already absolute, for HTTP/2's `:authority`).
    pub async fn send(
        &self,
        request: http::Request<RequestBody>,
    ) -> Result<(http::Response<Incoming>, Option<Lease>), ForwardError> {
        match self {
            Upstream::Http1(pool) => pool.send(request).await,
            Upstream::Http2(client) => client
                .request(request)
                .await
                .map(|response| (response, None))
                .map_err(|error| ForwardError {
                    target_at_fault: error.is_connect() || hyper_fault(&error),
                    timed_out: false,
                    message: error.to_string(),
                }),
        }
    }

    /// Takes back the connection of a response read to its end.
    pub fn release(&self, lease: Lease) {
        if let Upstream::Http1(pool) = self {
            pool.put(lease.0);
        }
    }
}

impl Http1Pool {
    fn lock(&self) -> MutexGuard<'_, Vec<(SendRequest<RequestBody>, Instant)>> {
        self.idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    async fn send(
        &self,
        request: http::Request<RequestBody>,
    ) -> Result<(http::Response<Incoming>, Option<Lease>), ForwardError> {
        let mut request = request;
        // HTTP/1.1 targets get the origin form (`GET /path?query`): the absolute form is for
        // proxies, and many servers (busybox httpd among them) refuse it.
        if let Some(path_and_query) = request.uri().path_and_query().cloned() {
            *request.uri_mut() = http::Uri::from(path_and_query);
        }
        // A pooled connection the target closed meanwhile gives the request back unsent; it
        // is then sent on the next one, and at last on a new connection.
        loop {
            let (mut sender, fresh) = match self.take_idle().await {
                Some(sender) => (sender, false),
                None => (self.connect().await?, true),
            };
            match sender.try_send_request(request).await {
                Ok(response) => return Ok((response, Some(Lease(sender)))),
                Err(mut failed) => match failed.take_message() {
                    Some(unsent) if !fresh => request = unsent,
                    _ => {
                        let error = failed.into_error();
                        return Err(ForwardError {
                            target_at_fault: !(error.is_user() || error.is_body_write_aborted()),
                            timed_out: false,
                            message: error.to_string(),
                        });
                    }
                },
            }
        }
    }

    /// The most recently used idle connection that is still open and ready.
    async fn take_idle(&self) -> Option<SendRequest<RequestBody>> {
        loop {
            let (mut sender, _) = self.lock().pop()?;
            if sender.is_closed() {
                continue;
            }
            // Normally ready at once; a connection still finishing its last message is
            // waited for, and one that closes meanwhile is skipped.
            if sender.ready().await.is_ok() {
                return Some(sender);
            }
        }
    }

    async fn connect(&self) -> Result<SendRequest<RequestBody>, ForwardError> {
        let refused = |error: std::io::Error| ForwardError {
            target_at_fault: true,
            timed_out: false,
            message: error.to_string(),
        };
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(self.addr))
            .await
            .map_err(|_| ForwardError {
                target_at_fault: true,
                timed_out: true,
                message: "connecting to the target timed out".to_string(),
            })?
            .map_err(refused)?;
        stream.set_nodelay(true).map_err(refused)?;
        let (sender, connection) = http1::Builder::new()
            // One flattened write per message measured cheaper than vectored writes.
            .writev(false)
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|error| ForwardError {
                target_at_fault: true,
                timed_out: false,
                message: error.to_string(),
            })?;
        // Runs on this worker; it ends when the target closes the connection or when the
        // pool lets go of the sender.
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(sender)
    }

    /// The most recently used idle raw connection that the target has not closed meanwhile.
    ///
    /// A close (or anything else the target sent while idle) shows as read readiness, which
    /// the reactor has already recorded: a connection without it is taken without a syscall.
    /// The forwarding path reads each response with a short read, which clears readiness.
    pub fn take_raw(&self) -> Option<TcpStream> {
        loop {
            let (stream, _) = lock_raw(&self.raw).pop()?;
            let ready = read_ready_now(&stream);
            if !ready {
                return Some(stream);
            }
            let mut probe = [0u8; 1];
            match stream.try_read(&mut probe) {
                // Nothing after all: the readiness was stale.
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                    return Some(stream)
                }
                // Closed, failed, or bytes nobody asked for: not usable.
                _ => continue,
            }
        }
    }

    /// A new connection for the forwarding path.
    pub async fn connect_raw(&self) -> Result<TcpStream, ForwardError> {
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(self.addr))
            .await
            .map_err(|_| ForwardError {
                target_at_fault: true,
                timed_out: true,
                message: "connecting to the target timed out".to_string(),
            })?
            .map_err(|error| ForwardError {
                target_at_fault: true,
                timed_out: false,
                message: error.to_string(),
            })?;
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }

    /// Takes back a raw connection whose last response was read to its end.
    pub fn put_raw(&self, stream: TcpStream) {
        let now = Instant::now();
        let mut idle = lock_raw(&self.raw);
        let expired = idle
            .iter()
            .take_while(|(_, since)| now.duration_since(*since) > IDLE_TIMEOUT)
            .count();
        idle.drain(..expired);
        if idle.len() < MAX_IDLE {
            idle.push((stream, now));
        }
    }

    fn put(&self, sender: SendRequest<RequestBody>) {
        if sender.is_closed() {
            return;
        }
        let now = Instant::now();
        let mut idle = self.lock();
        // The oldest sit at the bottom: close the ones idle too long.
        let expired = idle
            .iter()
            .take_while(|(_, since)| now.duration_since(*since) > IDLE_TIMEOUT)
            .count();
        idle.drain(..expired);
        if idle.len() < MAX_IDLE {
            idle.push((sender, now));
        }
    }
}

fn lock_raw(raw: &Mutex<Vec<(TcpStream, Instant)>>) -> MutexGuard<'_, Vec<(TcpStream, Instant)>> {
    raw.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Whether the reactor has recorded read readiness (data or a close) for `stream`, without
/// waiting and without a syscall.
fn read_ready_now(stream: &TcpStream) -> bool {
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    stream.poll_read_ready(&mut cx).is_ready()
}

/// Whether a legacy client's error is the target's doing rather than the client's.
fn hyper_fault(error: &hyper_util::client::legacy::Error) -> bool {
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if let Some(hyper_error) = cause.downcast_ref::<hyper::Error>() {
            return !(hyper_error.is_user() || hyper_error.is_body_write_aborted());
        }
        source = cause.source();
    }
    true
}
