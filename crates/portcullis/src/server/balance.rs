//! Spreads client connections over the serving threads.
//!
//! Every serving thread accepts on the one shared listener, and the kernel wakes
//! whichever thread is waiting first: that thread then accepts the whole queue. A burst
//! of new clients (a load balancer opening its pool, a benchmark's connections) can so
//! land on one thread, and keep-alive keeps them there while the other cores idle
//! (seen: 64 wrk connections all on one of two threads, half the throughput). So a
//! thread that already serves more connections than the least busy one, by more than
//! one, passes a connection it accepted to that thread instead of serving it.
//!
//! Why not `SO_REUSEPORT` listeners, one per thread: they balance by address hash, and
//! would let a second gateway started on the same port by mistake silently take half
//! the traffic instead of failing to bind.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc;

/// The count of a thread that has stopped: never the least busy.
const STOPPED: usize = usize::MAX / 2;

/// A connection handed from one serving thread to another. It travels as a std socket:
/// a tokio one is registered with the runtime that accepted it.
pub(crate) type Handoff = (std::net::TcpStream, SocketAddr);

/// The serving threads' connection counts and inboxes.
#[derive(Debug)]
pub(crate) struct Balance {
    open: Box<[AtomicUsize]>,
    inboxes: Box<[mpsc::UnboundedSender<Handoff>]>,
}

impl Balance {
    /// A balance over `threads` serving threads, with the receiving end of each one's
    /// inbox (in thread order).
    pub(crate) fn new(threads: usize) -> (Arc<Self>, Vec<mpsc::UnboundedReceiver<Handoff>>) {
        let (inboxes, receivers): (Vec<_>, Vec<_>) =
            (0..threads).map(|_| mpsc::unbounded_channel()).unzip();
        let balance = Balance {
            open: (0..threads).map(|_| AtomicUsize::new(0)).collect(),
            inboxes: inboxes.into(),
        };
        (Arc::new(balance), receivers)
    }

    /// The thread that should serve a connection `me` just accepted: `me`, unless
    /// another serves fewer connections by more than one. The chosen thread's count
    /// goes up at once, so a burst does not all go to the same idle thread.
    pub(crate) fn assign(&self, me: usize) -> usize {
        let mine = self.count(me);
        let (least, fewest) = (0..self.open.len())
            .map(|i| (i, self.count(i)))
            .min_by_key(|&(_, n)| n)
            .unwrap_or((me, mine));
        let chosen = if fewest + 1 < mine { least } else { me };
        self.open[chosen.min(self.open.len() - 1)].fetch_add(1, Ordering::Relaxed);
        chosen
    }

    /// Sends an accepted connection to thread `to`'s inbox; gives it back if that thread
    /// has stopped (shutting down, or its runtime never started), and marks the thread
    /// as full so it is not chosen again.
    pub(crate) fn hand_to(&self, to: usize, conn: Handoff) -> Result<(), Handoff> {
        let sent = match self.inboxes.get(to) {
            Some(inbox) => inbox.send(conn).map_err(|e| e.0),
            None => Err(conn),
        };
        if sent.is_err() {
            if let Some(open) = self.open.get(to) {
                open.store(STOPPED, Ordering::Relaxed);
            }
        }
        sent
    }

    /// A connection counted against thread `from` is served by thread `to` instead.
    pub(crate) fn moved(&self, from: usize, to: usize) {
        self.closed(from);
        if let Some(open) = self.open.get(to) {
            open.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A connection of thread `thread` has ended.
    pub(crate) fn closed(&self, thread: usize) {
        if let Some(open) = self.open.get(thread) {
            open.fetch_sub(1, Ordering::Relaxed);
        }
    }

    fn count(&self, thread: usize) -> usize {
        self.open
            .get(thread)
            .map_or(0, |n| n.load(Ordering::Relaxed))
    }
}

/// Counts a connection against its serving thread while it lives.
pub(crate) struct Counted {
    balance: Arc<Balance>,
    thread: usize,
}

impl Counted {
    /// For a connection already counted by [`Balance::assign`].
    pub(crate) fn new(balance: Arc<Balance>, thread: usize) -> Self {
        Counted { balance, thread }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.balance.closed(self.thread);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_on_one_thread_is_spread() {
        let (balance, _inboxes) = Balance::new(2);
        let chosen: Vec<usize> = (0..8).map(|_| balance.assign(0)).collect();
        assert_eq!(chosen, [0, 0, 1, 0, 1, 0, 1, 0]);
        assert_eq!((balance.count(0), balance.count(1)), (5, 3));
    }

    #[test]
    fn closed_connections_free_their_thread() {
        let (balance, _inboxes) = Balance::new(2);
        for _ in 0..4 {
            balance.assign(1);
        }
        assert_eq!((balance.count(0), balance.count(1)), (1, 3));
        balance.closed(1);
        balance.closed(1);
        assert_eq!(balance.assign(1), 1, "even again: thread 1 keeps its own");
        balance.closed(0);
        assert_eq!(balance.assign(1), 0, "thread 0 has room again");
    }

    #[test]
    fn a_stopped_thread_is_not_chosen_again() {
        let (balance, mut inboxes) = Balance::new(2);
        inboxes.truncate(1); // thread 1's runtime never started: its inbox is gone
        balance.assign(0);
        balance.assign(0);
        let to = balance.assign(0);
        assert_eq!(to, 1);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let conn = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let peer = conn.local_addr().unwrap();
        assert!(balance.hand_to(to, (conn, peer)).is_err(), "given back");
        balance.moved(to, 0);
        assert!(
            (0..10).all(|_| balance.assign(0) == 0),
            "thread 1 is never chosen again"
        );
    }

    #[test]
    fn one_thread_serves_everything_itself() {
        let (balance, _inboxes) = Balance::new(1);
        assert!((0..5).all(|_| balance.assign(0) == 0));
    }
}
