//! Lets the kernel end a busy serving thread's turn on the CPU when its share is used.
//!
//! Linux's scheduler (EEVDF, since 6.6) gives each runnable thread a slice (about a
//! millisecond, scaled with the CPU count: 1.4 ms on the two-CPU machines here), but it looks at
//! the running thread's use of it only when something calls its accounting on that CPU:
//! a wake-up there, or the timer tick (every 4 ms at HZ=250, 10 ms at HZ=100). A
//! serving thread that always has another request to serve never sleeps, so it keeps
//! the CPU until the tick while the threads waiting for that CPU (the clients it
//! answers, the upstream service on the same host) wait a tick or two: the 4 and 8 ms
//! p99 nginx and portcullis both had on two loaded CPUs, where HAProxy, which reads its
//! threads' CPU clocks, had 2.
//!
//! Reading the thread's CPU-time clock is such an accounting call (the kernel brings
//! the running thread's runtime up to date to answer it), and when the slice is used the
//! thread is rescheduled as the system call returns: other runnable threads get the CPU
//! within a slice instead of a tick. When nothing else waits, the thread simply goes
//! on. One read every [`EVERY`] requests: a system call of ~0.2 µs per 16 requests of
//! 7-15 µs each, well inside a slice.
//!
//! Measured (bench/ab, 2 CPUs, kernel 6.18, HZ 250): proxied p99 4.6 -> 2.3 ms, rejected
//! 8.0 -> 2.7 ms, req/s and CPU per request unchanged.

use std::cell::Cell;

/// Requests between two reads of the CPU clock, per serving thread.
const EVERY: u32 = 16;

/// Counts a request on this thread; every [`EVERY`]th reads the thread's CPU clock.
pub(crate) fn account() {
    thread_local! {
        static SINCE: Cell<u32> = const { Cell::new(0) };
    }
    if SINCE.try_with(due).unwrap_or(false) {
        // The value is not wanted: the read is what makes the kernel account.
        let _ = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    }
}

/// Counts one request; true on every [`EVERY`]th.
fn due(since: &Cell<u32>) -> bool {
    let n = since.get() + 1;
    since.set(if n < EVERY { n } else { 0 });
    n >= EVERY
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_is_read_once_every_sixteen_requests() {
        let since = Cell::new(0);
        let reads: Vec<usize> = (1..=64).filter(|_| due(&since)).collect();
        assert_eq!(reads, [16, 32, 48, 64]);
    }
}
