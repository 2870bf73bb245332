//! Keep-alive connections to the one upstream, for one serving thread.
//!
//! Why not hyper-util's pooled client: it keys its pool by scheme and authority in a
//! hashed map behind a lock, checks connections out and back through futures of its
//! own, and rewrites every request to absolute form and back, for one fixed upstream.
//! Here a connection ([`Conn`]) sits on a stack:
//!
//! - a request takes the most recently used idle connection (its socket and buffers
//!   are warm); one that received anything while idle (the upstream closed it, or
//!   sent unasked-for bytes) is dropped and the next one tried. A request without a
//!   body and with an idempotent method is sent again on another connection when a
//!   reused one fails before any byte of a response arrives (the upstream closed it
//!   just as it was reused);
//! - the connection goes back on the stack when the response body has ended (a [`Lease`]
//!   travels with the body); one whose body was abandoned, that the upstream asked to
//!   close, whose response was not cleanly delimited, or that was upgraded, is closed
//!   instead, as HTTP/1.1 requires;
//! - idle connections beyond [`MAX_IDLE`], or idle longer than [`IDLE_TIMEOUT`], are
//!   closed.

use super::body::ProxyRequestBody;
use super::h1::{Conn, ExchangeError, ExtraFields, ResponseHead};
use http_body::Body as _;
use std::future::{poll_fn, Future as _};
use std::pin::pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::Poll;
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
    Exchange(ExchangeError),
    /// The deadline passed before the response head arrived.
    TimedOut,
}

/// The idle connections of one serving thread.
#[derive(Debug)]
pub(crate) struct Pool {
    idle: Mutex<Vec<(Conn, Instant)>>,
    /// `host:port` to connect to.
    addr: String,
    connect_timeout: Duration,
}

/// A connection on loan to one response: back to the pool when the body has ended.
#[derive(Debug)]
pub(crate) struct Lease {
    conn: Conn,
    /// When the request was sent: the connection counts as idle from then on, a little
    /// early, which saves reading the clock again when it goes back.
    sent_at: Instant,
    /// Whether the response lets the connection carry another request.
    keep_alive: bool,
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

    /// Sends the request (`parts` and `body`) on a pooled connection (or a new one) and
    /// returns the response head with the lease of its connection, through which the
    /// body is read, unless `deadline` passes first. `extra` adds header fields; `now` is
    /// the caller's reading of the clock.
    pub(crate) async fn send(
        self: &Arc<Self>,
        parts: &http::request::Parts,
        mut body: ProxyRequestBody,
        extra: &impl ExtraFields,
        now: Instant,
        deadline: tokio::time::Instant,
    ) -> Result<(ResponseHead, Lease), SendError> {
        let repeatable = body.is_end_stream() && parts.method.is_idempotent();
        loop {
            let (mut conn, reused) = match self.take_idle(now) {
                Some(conn) => (conn, true),
                None => match tokio::time::timeout_at(deadline, self.connect()).await {
                    Ok(conn) => (conn?, false),
                    Err(_) => return Err(SendError::TimedOut),
                },
            };
            // The connection's own timer (see `Conn::timer_until`), not one per request.
            let mut timer = conn.timer_until(deadline);
            let exchanged = {
                let mut exchange = pin!(conn.exchange(parts, &mut body, extra));
                poll_fn(|cx| match exchange.as_mut().poll(cx) {
                    Poll::Ready(result) => Poll::Ready(Some(result)),
                    Poll::Pending => timer.as_mut().poll(cx).map(|()| None),
                })
                .await
            };
            conn.keep_timer(timer);
            let Some(exchanged) = exchanged else {
                return Err(SendError::TimedOut);
            };
            match exchanged {
                Ok(head) => {
                    let lease = Lease {
                        conn,
                        sent_at: now,
                        keep_alive: head.keep_alive,
                        pool: self.clone(),
                    };
                    return Ok((head, lease));
                }
                // Closed just as it was reused: another connection may take it.
                Err(ExchangeError::Closed(_)) if reused && repeatable => continue,
                Err(e) => return Err(SendError::Exchange(e)),
            }
        }
    }

    fn take_idle(&self, now: Instant) -> Option<Conn> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        while let Some((mut conn, since)) = idle.pop() {
            if now.saturating_duration_since(since) < IDLE_TIMEOUT && conn.is_reusable() {
                return Some(conn);
            }
        }
        None
    }

    fn put_back(&self, conn: Conn, idle_since: Instant) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        // The oldest connection sits at the bottom, never taken while newer ones serve:
        // closed here once it has idled too long, rather than left open forever.
        if idle
            .first()
            .is_some_and(|(_, since)| idle_since.saturating_duration_since(*since) >= IDLE_TIMEOUT)
        {
            idle.remove(0);
        }
        if idle.len() < MAX_IDLE {
            idle.push((conn, idle_since));
        }
    }

    async fn connect(&self) -> Result<Conn, SendError> {
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
        Ok(Conn::new(stream))
    }
}

impl Lease {
    pub(super) fn conn(&mut self) -> &mut Conn {
        &mut self.conn
    }

    /// The response body ended: the connection may serve another request, if the
    /// response allowed it and nothing followed the body.
    pub(crate) fn release(self) {
        if self.keep_alive && self.conn.is_drained() {
            self.pool.put_back(self.conn, self.sent_at);
        }
    }

    /// The connection, for a protocol switch.
    pub(crate) fn into_conn(self) -> Conn {
        self.conn
    }
}
