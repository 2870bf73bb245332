//! Keep-alive connections to the one upstream, for one serving thread.
//!
//! Why not hyper-util's pooled client: it keys its pool by scheme and authority in a
//! hashed map behind a lock, checks connections out and back through futures of its
//! own, and rewrites every request to absolute form and back: about a tenth of the
//! gateway's instructions per proxied request, for one fixed upstream. Here a
//! connection is a hyper [`SendRequest`] on a stack:
//!
//! - a request takes the most recently used idle connection (its socket and buffers
//!   are warm), waits until it is ready, and sends; a connection the upstream closed
//!   while idle is dropped and the next one tried, and a request that never left is
//!   sent again on another connection;
//! - the connection goes back on the stack when the response body has ended (a [`Lease`]
//!   travels with the body); one whose body was abandoned, or that was upgraded, is
//!   closed instead, as HTTP/1.1 requires;
//! - idle connections beyond [`MAX_IDLE`], or idle longer than [`IDLE_TIMEOUT`], are
//!   closed.

use super::body::ProxyRequestBody;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// Idle connections kept at most (per serving thread).
const MAX_IDLE: usize = 256;
/// Idle connections older than this are closed rather than reused.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a request got no response from the upstream.
#[derive(Debug)]
pub(crate) enum SendError {
    /// No connection could be opened (refused, unreachable, connect timeout).
    Connect(String),
    /// The exchange failed after the request was handed to a connection.
    Exchange(hyper::Error),
}

/// The idle connections of one serving thread.
pub(crate) struct Pool {
    idle: Mutex<Vec<(SendRequest<ProxyRequestBody>, Instant)>>,
    /// `host:port` to connect to.
    addr: String,
    connect_timeout: Duration,
}

/// A connection on loan to one response: back to the pool when the body has ended.
pub(crate) struct Lease {
    sender: Option<SendRequest<ProxyRequestBody>>,
    pool: Arc<Pool>,
}

impl Pool {
    pub(crate) fn new(addr: String, connect_timeout: Duration) -> Arc<Self> {
        Arc::new(Pool {
            idle: Mutex::new(Vec::new()),
            addr,
            connect_timeout,
        })
    }

    /// Sends `req` on a pooled connection (or a new one) and returns the response with
    /// the lease of its connection, or `None` for the lease when the connection must
    /// not be reused.
    pub(crate) async fn send(
        self: &Arc<Self>,
        mut req: Request<ProxyRequestBody>,
    ) -> Result<(Response<Incoming>, Lease), SendError> {
        loop {
            let (mut sender, reused) = match self.take_idle() {
                Some(sender) => (sender, true),
                None => (self.connect().await?, false),
            };
            if sender.ready().await.is_err() {
                if reused {
                    continue; // closed while idle: try the next one
                }
                return Err(SendError::Connect(
                    "the upstream closed a new connection at once".into(),
                ));
            }
            match sender.try_send_request(req).await {
                Ok(res) => {
                    let lease = Lease {
                        sender: Some(sender),
                        pool: self.clone(),
                    };
                    return Ok((res, lease));
                }
                Err(mut e) => match e.take_message() {
                    // Never written: the connection went away first. Another one may
                    // take it; a new connection failing this way is an upstream error.
                    Some(back) if reused => req = back,
                    _ => return Err(SendError::Exchange(e.into_error())),
                },
            }
        }
    }

    fn take_idle(&self) -> Option<SendRequest<ProxyRequestBody>> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        while let Some((sender, since)) = idle.pop() {
            if !sender.is_closed() && since.elapsed() < IDLE_TIMEOUT {
                return Some(sender);
            }
        }
        None
    }

    fn put_back(&self, sender: SendRequest<ProxyRequestBody>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < MAX_IDLE {
            idle.push((sender, Instant::now()));
        }
    }

    async fn connect(&self) -> Result<SendRequest<ProxyRequestBody>, SendError> {
        let stream = match tokio::time::timeout(
            self.connect_timeout,
            TcpStream::connect(&self.addr),
        )
        .await
        {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => return Err(SendError::Connect(e.to_string())),
            Err(_) => {
                return Err(SendError::Connect(format!(
                    "connect timed out after {}ms",
                    self.connect_timeout.as_millis()
                )))
            }
        };
        let _ = stream.set_nodelay(true);
        let (sender, conn) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| SendError::Connect(e.to_string()))?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "upstream connection ended with an error");
            }
        });
        Ok(sender)
    }
}

impl Lease {
    /// The response body ended: the connection may serve another request.
    pub(crate) fn release(mut self) {
        if let Some(sender) = self.sender.take() {
            self.pool.put_back(sender);
        }
    }
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease").finish_non_exhaustive()
    }
}
