//! hyper's header read timeout on a keep-alive connection, for the price of moving one
//! deadline forward.
//!
//! hyper arms a timer for every request head it waits for and drops it once the head
//! has arrived. With hyper-util's `TokioTimer`, each request therefore registers a tokio
//! timer and removes it again: about 1.5k instructions per request (callgrind, measured
//! by taking the timeout away). [`ConnectionTimer`] keeps one tokio `Sleep` for the whole
//! connection instead. Each head moves its deadline later, which tokio does with one
//! compare-and-swap while the timer is armed (a later deadline needs no timer-wheel
//! work). When an old deadline passes while the connection is busy elsewhere, tokio
//! wakes the connection once for nothing and the next head arms the timer again.
//!
//! hyper's HTTP/1 server holds one header timer per connection at a time, which is what
//! sharing one `Sleep` relies on: give each connection its own `ConnectionTimer`, and do
//! not hand it to HTTP/2 (whose keep-alive pings keep timers of their own).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

type SharedSleep = Arc<Mutex<Option<Pin<Box<tokio::time::Sleep>>>>>;

/// The `hyper::rt::Timer` of one HTTP/1 connection (see the module documentation).
#[derive(Clone, Default)]
pub(crate) struct ConnectionTimer {
    sleep: SharedSleep,
}

impl hyper::rt::Timer for ConnectionTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        self.sleep_until(self.now() + duration)
    }

    /// tokio's clock (the same as std's, except in tests that pause time).
    fn now(&self) -> Instant {
        tokio::time::Instant::now().into_std()
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(Deadline {
            at: tokio::time::Instant::from_std(deadline),
            sleep: self.sleep.clone(),
        })
    }
}

/// One of hyper's timers: done at `at`, waiting on the connection's shared `Sleep`.
struct Deadline {
    at: tokio::time::Instant,
    sleep: SharedSleep,
}

impl Future for Deadline {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut slot = self.sleep.lock().unwrap_or_else(PoisonError::into_inner);
        let sleep = slot.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(self.at)));
        if sleep.deadline() != self.at {
            sleep.as_mut().reset(self.at);
        }
        sleep.as_mut().poll(cx)
    }
}

impl hyper::rt::Sleep for Deadline {}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::rt::Timer;

    fn now() -> Instant {
        tokio::time::Instant::now().into_std()
    }

    /// Elapsed `d` is `secs` seconds, to tokio's millisecond tick (and the few real
    /// microseconds between reading the clocks).
    fn about(d: Duration, secs: u64) -> bool {
        d >= Duration::from_secs(secs) && d < Duration::from_secs(secs) + Duration::from_millis(5)
    }

    /// A timer polled once and dropped, as hyper drops it when the head arrives in time:
    /// it leaves the shared sleep armed at its deadline.
    fn arm_and_drop(timer: &ConnectionTimer, secs: u64) {
        let mut sleep = timer.sleep(Duration::from_secs(secs));
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(sleep.as_mut().poll(&mut cx).is_pending());
    }

    #[tokio::test(start_paused = true)]
    async fn fires_at_its_deadline_and_not_before() {
        let timer = ConnectionTimer::default();
        let start = now();
        timer.sleep(Duration::from_secs(10)).await;
        assert!(about(now() - start, 10), "{:?}", now() - start);
    }

    #[tokio::test(start_paused = true)]
    async fn a_later_timer_is_not_cut_short_by_an_earlier_one() {
        let timer = ConnectionTimer::default();
        let start = now();
        arm_and_drop(&timer, 10);
        tokio::time::advance(Duration::from_secs(6)).await;
        // The next head's timer ends 16 s after the start, not at the first one's 10 s.
        timer.sleep(Duration::from_secs(10)).await;
        assert!(about(now() - start, 16), "{:?}", now() - start);
        // And once the shared sleep has fired, the next timer arms it again.
        timer.sleep(Duration::from_secs(3)).await;
        assert!(about(now() - start, 19), "{:?}", now() - start);
    }

    #[tokio::test(start_paused = true)]
    async fn an_earlier_deadline_than_the_armed_one_still_fires_on_time() {
        let timer = ConnectionTimer::default();
        let start = now();
        arm_and_drop(&timer, 60);
        timer.sleep(Duration::from_secs(2)).await;
        assert!(about(now() - start, 2), "{:?}", now() - start);
    }
}
