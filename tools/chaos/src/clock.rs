//! A run's clock: operation and fault times are nanoseconds since the run's epoch, the
//! [`Time`] of the checker's history.

use std::time::Instant;

use coordinate_check::Time;

/// Times relative to one epoch.
#[derive(Clone, Copy)]
pub(crate) struct Clock {
    epoch: Instant,
}

impl Clock {
    /// A clock whose epoch is now.
    pub fn start() -> Clock {
        Clock {
            epoch: Instant::now(),
        }
    }

    pub fn epoch(&self) -> Instant {
        self.epoch
    }

    /// Nanoseconds since the epoch.
    pub fn now(&self) -> Time {
        self.epoch.elapsed().as_nanos() as Time
    }
}
