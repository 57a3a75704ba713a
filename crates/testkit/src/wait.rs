//! Waiting on conditions with deadlines: every wait of the harness is a poll of a condition,
//! never a sleep that hopes the condition will hold by then.

use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

/// How long a cluster may take to agree on a leader, a node to stop, etc.
pub const WAIT_TIMEOUT: Duration = Duration::from_secs(30);

/// Time between two polls of a condition.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Polls `cond` until it returns true (-> true) or `timeout` passes (-> false).
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// Polls `poll` until it says the work is done (-> true), or until its progress counter
/// stops moving for `stall` (-> false). For waits whose length is the machine's speed times
/// the work, such as catching up a backlog: a slow machine gets as long as it keeps moving,
/// a stuck one fails after `stall`. `poll` returns (done, progress); any change of progress
/// counts as movement.
pub fn wait_while_progressing(stall: Duration, mut poll: impl FnMut() -> (bool, u64)) -> bool {
    let mut last = None;
    let mut moved_at = Instant::now();
    loop {
        let (done, progress) = poll();
        if done {
            return true;
        }
        if last != Some(progress) {
            last = Some(progress);
            moved_at = Instant::now();
        } else if moved_at.elapsed() >= stall {
            return false;
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// Waits for a child to exit, up to `timeout`. `None` if it is still running.
/// Panics if the child cannot be waited for (a test harness).
pub fn wait_exit(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    try_wait_exit(child, timeout).expect("try_wait on a child")
}

/// Waits for a child to exit, up to `timeout`: `Ok(None)` if it is still running.
pub fn try_wait_exit(child: &mut Child, timeout: Duration) -> std::io::Result<Option<ExitStatus>> {
    let mut status = Ok(None);
    wait_until(timeout, || {
        status = child.try_wait();
        !matches!(status, Ok(None))
    });
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wait_that_keeps_moving_outlasts_the_stall_bound() {
        // 20 polls of 50 ms is 1 s of moving work against a 200 ms stall bound.
        let mut n = 0u64;
        let done = wait_while_progressing(Duration::from_millis(200), || {
            n += 1;
            (n == 20, n)
        });
        assert!(done);
        assert_eq!(n, 20);
    }

    #[test]
    fn a_wait_that_stops_moving_fails() {
        let mut polls = 0u64;
        let done = wait_while_progressing(Duration::from_millis(200), || {
            polls += 1;
            (false, polls.min(3))
        });
        assert!(!done);
        assert!(
            polls > 3,
            "it waited the stall bound after the last movement"
        );
    }
}
