//! Time, behind a trait so that a simulation can drive the engine with a
//! virtual clock.

use std::future::Future;
use std::time::Duration;

pub trait Clock: Send + Sync + 'static {
    /// Wall-clock time, milliseconds since the Unix epoch (conflict-copy names).
    fn now_ms(&self) -> i64;
    /// Waits for `duration` of this clock's time.
    fn sleep(&self, duration: Duration) -> impl Future<Output = ()> + Send;
}

/// The real clock: `SystemTime` and tokio's timer.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since_epoch| since_epoch.as_millis() as i64)
    }

    fn sleep(&self, duration: Duration) -> impl Future<Output = ()> + Send {
        tokio::time::sleep(duration)
    }
}
