//! Virtual time: the driver moves it forward; nothing else does. A sleep
//! waits at the [`Gate`] until the driver's time has reached its end.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use syncfolder_agent::clock::Clock;

use crate::gate::{Gate, Op};

/// Starts at a fixed moment (2026-01-01) so conflict-copy names repeat from run to run.
const EPOCH_MS: i64 = 1_767_225_600_000;

#[derive(Clone)]
pub struct SimClock {
    now_ms: Arc<AtomicI64>,
    gate: Gate,
}

impl SimClock {
    pub fn new(gate: Gate) -> SimClock {
        SimClock {
            now_ms: Arc::new(AtomicI64::new(EPOCH_MS)),
            gate,
        }
    }

    pub fn advance(&self, by: Duration) {
        self.now_ms
            .fetch_add(by.as_millis() as i64, Ordering::AcqRel);
    }

    /// Moves time forward to `until_ms` (never back).
    pub fn advance_to(&self, until_ms: i64) {
        self.now_ms.fetch_max(until_ms, Ordering::AcqRel);
    }

    pub fn now_ns(&self) -> i64 {
        self.now_ms.load(Ordering::Acquire) * 1_000_000
    }
}

impl Clock for SimClock {
    fn now_ms(&self) -> i64 {
        self.now_ms.load(Ordering::Acquire)
    }

    /// Waits at the gate until the driver's time is `duration` later than now.
    fn sleep(&self, duration: Duration) -> impl Future<Output = ()> + Send {
        let until_ms = self.now_ms() + i64::try_from(duration.as_millis()).unwrap_or(i64::MAX / 2);
        let gate = self.gate.clone();
        async move {
            gate.pass(Op::Sleep { until_ms }).await;
        }
    }
}
