//! The gateway listener: accept, read the first request head ourselves, then serve the
//! connection: HTTP/1.1 with our own connection ([`connection`]) until a request needs
//! hyper's (a body, an upgrade), HTTP/2 with prior knowledge with hyper's.
//!
//! Reading the first head before hyper does lets every malformed, oversize or slow head
//! get the same problem+json answer and headers as any other gateway error (hyper would
//! answer with an empty 400 or just close). Later requests on a connection that hyper
//! serves are guarded by hyper's own `header_read_timeout` and buffer limit.

mod balance;
mod connection;
mod head;
mod request_body;
mod rewind;
mod slice;
mod timer;

pub(crate) use balance::{Balance, Handoff};
pub(crate) use request_body::RequestBody;

use crate::stack::GatewayService;
use head::{read_first_head, FirstHead};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use portcullis_tower::{HeadLines, PeerAddr};
use rewind::Rewind;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tower::ServiceExt;

/// Limits applied while reading request heads.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HeadLimits {
    pub(crate) max_header_bytes: usize,
    pub(crate) header_read_timeout: Duration,
}

/// Tracks a live connection: shutdown waits for it, and (for a client connection) its
/// serving thread counts it when connections are spread. An upgrade request carries a
/// clone in its extensions, which the tunnel holds after the `101`: a WebSocket stays a
/// connection for both (shutdown waits for it up to `shutdown_grace`), though its HTTP
/// part is over.
#[derive(Clone)]
pub(crate) struct ConnectionGuard {
    _alive: mpsc::Sender<()>,
    _counted: Option<Arc<balance::Counted>>,
}

impl ConnectionGuard {
    /// The guard, also holding the connection's place in its thread's count.
    fn counted(self, counted: balance::Counted) -> Self {
        ConnectionGuard {
            _counted: Some(Arc::new(counted)),
            ..self
        }
    }
}

/// Signals shutdown and waits for every connection to finish.
pub(crate) struct Drain {
    signal: watch::Sender<bool>,
    alive_tx: Option<mpsc::Sender<()>>,
    alive_rx: mpsc::Receiver<()>,
}

impl Drain {
    pub(crate) fn new() -> Self {
        let (signal, _) = watch::channel(false);
        let (alive_tx, alive_rx) = mpsc::channel(1);
        Drain {
            signal,
            alive_tx: Some(alive_tx),
            alive_rx,
        }
    }

    pub(crate) fn watcher(&self) -> (watch::Receiver<bool>, ConnectionGuard) {
        self.handle().watcher()
    }

    /// A handle that hands out watchers from any thread (each serving thread has one).
    pub(crate) fn handle(&self) -> DrainHandle {
        DrainHandle {
            signal: self.signal.subscribe(),
            alive: self.alive_tx.clone().unwrap_or_else(|| mpsc::channel(1).0),
        }
    }

    /// Tells connections to finish their current request and close, then waits up to
    /// `grace` for all of them. Returns whether all finished in time.
    pub(crate) async fn drain(mut self, grace: Duration) -> bool {
        let _ = self.signal.send(true);
        self.alive_tx = None;
        tokio::time::timeout(grace, self.alive_rx.recv())
            .await
            .is_ok()
    }
}

/// What a serving thread needs of the [`Drain`]: the shutdown signal, and a guard per
/// connection that keeps the drain waiting while the connection lives.
#[derive(Clone)]
pub(crate) struct DrainHandle {
    signal: watch::Receiver<bool>,
    alive: mpsc::Sender<()>,
}

impl DrainHandle {
    pub(crate) fn watcher(&self) -> (watch::Receiver<bool>, ConnectionGuard) {
        (self.signal.clone(), self.guard())
    }

    /// A guard alone, for a connection that watches its thread's channel instead.
    pub(crate) fn guard(&self) -> ConnectionGuard {
        ConnectionGuard {
            _alive: self.alive.clone(),
            _counted: None,
        }
    }
}

/// What one serving thread accepts from: the shared listener, and its inbox of
/// connections other threads accepted and passed on (see [`balance`]).
pub(crate) struct Acceptor {
    pub(crate) listener: TcpListener,
    /// This thread's number among the serving threads.
    pub(crate) thread: usize,
    pub(crate) balance: Arc<Balance>,
    pub(crate) inbox: mpsc::UnboundedReceiver<Handoff>,
}

/// Accepts connections until `shutdown` changes to true.
pub(crate) async fn accept_loop(
    acceptor: Acceptor,
    service: GatewayService,
    limits: HeadLimits,
    drain: &DrainHandle,
) {
    let Acceptor {
        listener,
        thread,
        balance,
        mut inbox,
    } = acceptor;
    let (mut shutdown, _) = drain.watcher();
    // This thread's connections watch a channel of its own, told when the drain starts.
    // A connection waiting for its next request polls its watch, and each poll locks
    // the channel's waiter list: shared by every thread, that lock and its cache line
    // would move between the cores at every request.
    let (stop_connections, connections_stop) = watch::channel(false);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let to = balance.assign(thread);
                    if to == thread {
                        (stream, peer)
                    } else {
                        let std = match stream.into_std() {
                            Ok(std) => std,
                            Err(e) => {
                                tracing::debug!(error = %e, "cannot pass a connection on");
                                balance.closed(to);
                                continue;
                            }
                        };
                        match balance.hand_to(to, (std, peer)) {
                            Ok(()) => continue,
                            // That thread has stopped (it will not be chosen again):
                            // served here after all.
                            Err((std, peer)) => {
                                balance.moved(to, thread);
                                match TcpStream::from_std(std) {
                                    Ok(stream) => (stream, peer),
                                    Err(_) => {
                                        balance.closed(thread);
                                        continue;
                                    }
                                }
                            }
                        }
                    }
                }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            Some((std, peer)) = inbox.recv() => match TcpStream::from_std(std) {
                Ok(stream) => (stream, peer),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot take over a connection");
                    balance.closed(thread);
                    continue;
                }
            },
            _ = shutdown.changed() => {
                let _ = stop_connections.send(true);
                return;
            }
        };
        let signal = connections_stop.clone();
        let guard = drain.guard();
        let guard = guard.counted(balance::Counted::new(balance.clone(), thread));
        let service = service.clone();
        tokio::spawn(serve_connection(
            stream, peer, service, limits, signal, guard,
        ));
    }
}

/// Calls the connection's stack when it is ready at once (every layer of ours is), else a
/// fresh clone of it through `oneshot`, which waits for readiness as tower requires.
/// Every request of every protocol passes here, on its serving thread: it is counted
/// for [`slice::account`].
fn call_ready(
    stack: &mut crate::stack::Stack,
    spare: &crate::stack::Stack,
    req: hyper::Request<RequestBody>,
) -> <crate::stack::Stack as tower::Service<hyper::Request<RequestBody>>>::Future {
    use std::task::{Context, Poll, Waker};
    use tower::Service;
    slice::account();
    let mut cx = Context::from_waker(Waker::noop());
    if let Poll::Ready(Ok(())) = stack.poll_ready(&mut cx) {
        return stack.call(req);
    }
    Box::pin(spare.clone().oneshot(req))
}

async fn serve_connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    service: GatewayService,
    limits: HeadLimits,
    mut shutdown: watch::Receiver<bool>,
    guard: ConnectionGuard,
) {
    let first = tokio::select! {
        first = read_first_head(&mut stream, limits) => first,
        _ = shutdown.changed() => return,
    };
    let (prefix, h2) = match first {
        FirstHead::Http1(buf) => {
            match connection::serve(stream, peer, &service, limits, &shutdown, buf).await {
                connection::Outcome::Done => return,
                connection::Outcome::HandOff(prefix, handed) => {
                    stream = handed;
                    (prefix, false)
                }
            }
        }
        FirstHead::Http2(prefix) => (prefix.freeze(), true),
        FirstHead::Closed => return,
        FirstHead::Rejected(rejection) => {
            head::answer_rejection(stream, peer, rejection, &service).await;
            return;
        }
    };
    let io = TokioIo::new(Rewind::new(prefix, stream));
    // One clone of the stack per connection, not per request: hyper asks for `Fn`, and a
    // request's call does not outlive the borrow (the future owns what it needs).
    let stack = std::cell::RefCell::new(service.stack.clone());
    let tunnel_guard = guard.clone();
    let hyper_service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(PeerAddr(peer));
        if req.headers().contains_key(hyper::header::UPGRADE) {
            req.extensions_mut().insert(tunnel_guard.clone());
        }
        let req = req.map(RequestBody::Hyper);
        let response = match stack.try_borrow_mut() {
            Ok(mut stack) => call_ready(&mut stack, &service.stack, req),
            Err(_) => Box::pin(service.stack.clone().oneshot(req)),
        };
        // hyper writes the map: the layers' head lines go in it first.
        async move {
            let mut response = response.await?;
            if let Some(lines) = response.extensions_mut().remove::<HeadLines>() {
                lines.apply_to(response.headers_mut());
            }
            Ok::<_, std::convert::Infallible>(response)
        }
    });
    if h2 {
        let conn = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
            .serve_connection(io, hyper_service);
        tokio::pin!(conn);
        tokio::select! {
            _ = conn.as_mut() => {}
            _ = shutdown.changed() => {
                conn.as_mut().graceful_shutdown();
                let _ = conn.await;
            }
        }
    } else {
        let conn = http1::Builder::new()
            .timer(timer::ConnectionTimer::default())
            .header_read_timeout(limits.header_read_timeout)
            .max_buf_size(limits.max_header_bytes.max(8192))
            .serve_connection(io, hyper_service)
            .with_upgrades();
        tokio::pin!(conn);
        tokio::select! {
            _ = conn.as_mut() => {}
            _ = shutdown.changed() => {
                conn.as_mut().graceful_shutdown();
                let _ = conn.await;
            }
        }
    }
    drop(guard);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tunnel's clone of its connection's guard keeps the connection counted on its
    /// thread, and the drain waiting, after the connection's own guard is gone.
    #[tokio::test]
    async fn a_guard_clone_keeps_the_connection_counted_and_the_drain_waiting() {
        let (balance, _inboxes) = Balance::new(2);
        let drain = Drain::new();
        // Thread 0 serves two connections: another one, and the one that upgrades.
        assert_eq!(balance.assign(0), 0);
        assert_eq!(balance.assign(0), 0);
        let (_signal, guard) = drain.watcher();
        let guard = guard.counted(balance::Counted::new(balance.clone(), 0));
        let tunnel = guard.clone();
        drop(guard);
        assert_eq!(
            balance.assign(0),
            1,
            "thread 0 still counts the tunnel: 2 against 0"
        );
        balance.closed(1);
        let drained = tokio::spawn(drain.drain(Duration::from_millis(500)));
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(tunnel);
        assert_eq!(
            balance.assign(0),
            0,
            "the tunnel's place is given back: 1 against 0"
        );
        assert!(
            drained.await.expect("drain task"),
            "the drain ends when the tunnel does"
        );
    }
}
