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
