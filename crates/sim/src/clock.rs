//! Virtual time: the driver moves it forward; nothing else does.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use syncfolder_agent::clock::Clock;

/// Starts at a fixed moment (2026-01-01) so conflict-copy names repeat from run to run.
const EPOCH_MS: i64 = 1_767_225_600_000;

#[derive(Debug, Clone)]
pub struct SimClock {
    now_ms: Arc<AtomicI64>,
}

impl Default for SimClock {
    fn default() -> Self {
        SimClock {
            now_ms: Arc::new(AtomicI64::new(EPOCH_MS)),
        }
    }
}

impl SimClock {
    pub fn advance(&self, by: Duration) {
        self.now_ms
            .fetch_add(by.as_millis() as i64, Ordering::AcqRel);
    }

    pub fn now_ns(&self) -> i64 {
        self.now_ms.load(Ordering::Acquire) * 1_000_000
    }
}

impl Clock for SimClock {
    fn now_ms(&self) -> i64 {
        self.now_ms.load(Ordering::Acquire)
    }

    /// The engine never sleeps in a cycle; the simulated agent loop has no
    /// timers, so a sleep passes at once.
    fn sleep(&self, _duration: Duration) -> impl Future<Output = ()> + Send {
        std::future::ready(())
    }
}
