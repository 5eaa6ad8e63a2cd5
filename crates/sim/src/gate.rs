//! The scheduler's gate: every filesystem call, every request and every
//! sleep an agent makes first stops here and waits until the driver lets it
//! through. The driver lets exactly one operation go at a time and waits
//! until the world is still again, so the whole world advances in a
//! sequence of steps that the seed alone decides: the same seed gives the
//! same run, as threads, sockets and SQLite's worker threads only ever serve
//! one step.
//!
//! An agent runs two tasks, each a [`Lane`] here: the sync loop, and the
//! prefetcher that fills streamed files. A lane is still when nothing it
//! started is under way:
//! - the loop is *running* from the moment one of its operations is let
//!   through until it stops at the gate again (it writes its state DB in
//!   between, on SQLite's thread, which nothing here can see);
//! - the prefetcher keeps several operations waiting at once, and is still
//!   when its task has nothing to do until the driver (or the loop) wakes
//!   it: [`Tracked`] sees the task's wake-ups, and requests under way are
//!   counted.
//!
//! An operation given up before it was let through (a sleep that lost a
//! race to a notification) leaves the gate; the loop then runs on.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Wake, Waker};

use tokio::sync::{Notify, oneshot};

/// One of an agent's tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Lane {
    /// The sync loop: the engine's cycles, uploads and downloads.
    Loop,
    /// The prefetcher: streamed files filled as their senders upload them.
    Prefetcher,
}

tokio::task_local! {
    /// The agent and lane of the task that runs: where its operations wait.
    static HERE: (usize, Lane);
}

/// Runs `task` as agent `agent_idx`'s lane `lane`: its operations wait there.
pub fn in_lane<F: Future>(
    agent_idx: usize,
    lane: Lane,
    task: F,
) -> impl Future<Output = F::Output> {
    HERE.scope((agent_idx, lane), task)
}

/// The lane of the running task; `None` outside an agent (the driver).
pub fn current_lane() -> Option<(usize, Lane)> {
    HERE.try_with(|here| *here).ok()
}

/// What an agent is about to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// A filesystem call, with the path it touches.
    Fs { call: &'static str, path: String },
    /// A request to the server.
    Remote { call: &'static str },
    /// A timer, due at this moment of virtual time.
    Sleep { until_ms: i64 },
}

impl Op {
    pub fn is_remote(&self) -> bool {
        matches!(self, Op::Remote { .. })
    }

    /// Whether the driver may let it go at virtual time `now_ms`.
    pub fn is_due(&self, now_ms: i64) -> bool {
        match self {
            Op::Sleep { until_ms } => *until_ms <= now_ms,
            Op::Fs { .. } | Op::Remote { .. } => true,
        }
    }
}

impl std::fmt::Display for Op {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Op::Fs { call, path } => write!(formatter, "fs.{call}({path})"),
            Op::Remote { call } => write!(formatter, "remote.{call}"),
            Op::Sleep { until_ms } => write!(formatter, "sleep(until {until_ms})"),
        }
    }
}

/// What happens to a request the driver lets through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// It reaches the server and the answer comes back.
    Deliver,
    /// It never reaches the server (dropped, partition, server down).
    Drop,
    /// The server carries it out, but the answer is lost.
    LoseAnswer,
}

/// An operation waiting, as the driver sees it.
#[derive(Debug, Clone)]
pub struct Waiting {
    pub agent_idx: usize,
    pub lane: Lane,
    /// Tells it from every other operation of the run.
    pub id: u64,
    pub op: Op,
}

struct Waiter {
    id: u64,
    op: Op,
    reply: oneshot::Sender<Verdict>,
}

/// One lane of one agent, in one incarnation.
#[derive(Default)]
struct LaneState {
    /// Set while the lane's task lives; a crash ends it.
    live: bool,
    /// Bumped by each start and end: what a task of an earlier incarnation
    /// still does (dropping its futures) changes nothing here.
    epoch: u64,
    waiters: Vec<Waiter>,
    /// The loop only: let through, and not at the gate again yet.
    running: bool,
    /// Requests to the server under way.
    in_flight: u32,
    /// Set when the lane's task was woken and not polled since.
    woken: Arc<AtomicBool>,
}

impl LaneState {
    fn is_still(&self) -> bool {
        !self.live || (!self.running && self.in_flight == 0 && !self.woken.load(Ordering::Acquire))
    }
}

#[derive(Default)]
struct Lanes {
    by_lane: BTreeMap<(usize, Lane), LaneState>,
    last_id: u64,
}

/// Shared by the driver and the agents' filesystems, remotes and clocks.
#[derive(Clone, Default)]
pub struct Gate {
    lanes: Arc<Mutex<Lanes>>,
    /// Told whenever a lane may have become still: the driver waits for it
    /// instead of spinning while requests are under way.
    changed: Arc<Notify>,
}

impl Gate {
    fn lanes(&self) -> MutexGuard<'_, Lanes> {
        self.lanes
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Waits until a lane may have become still since the last call (at
    /// once when one may have meanwhile).
    pub async fn changed(&self) {
        self.changed.notified().await;
    }

    fn tell_changed(&self) {
        self.changed.notify_one();
    }

    /// A new incarnation of a lane, running; returns the flag its task's
    /// [`Tracked`] wrapper sets on wake-ups.
    pub fn start(&self, agent_idx: usize, lane: Lane) -> Arc<AtomicBool> {
        let mut lanes = self.lanes();
        let state = lanes.by_lane.entry((agent_idx, lane)).or_default();
        let woken = Arc::new(AtomicBool::new(true));
        *state = LaneState {
            live: true,
            epoch: state.epoch + 1,
            waiters: Vec::new(),
            running: lane == Lane::Loop,
            in_flight: 0,
            woken: Arc::clone(&woken),
        };
        woken
    }

    /// Ends every lane of agent `agent_idx` (crashed, or stopped with an error).
    pub fn end_agent(&self, agent_idx: usize) {
        let mut lanes = self.lanes();
        for ((lane_agent, _), state) in lanes.by_lane.iter_mut() {
            if *lane_agent == agent_idx {
                state.live = false;
                state.epoch += 1;
                state.waiters.clear();
                state.running = false;
                state.in_flight = 0;
            }
        }
    }

    /// Waits until the driver lets `op` of the running task's lane through.
    /// Outside an agent's lane (the driver's own calls) it goes at once.
    pub async fn pass(&self, op: Op) -> Verdict {
        let Some((agent_idx, lane)) = current_lane() else {
            return Verdict::Deliver;
        };
        let (reply, verdict) = oneshot::channel();
        let (id, epoch) = {
            let mut lanes = self.lanes();
            lanes.last_id += 1;
            let id = lanes.last_id;
            let state = lanes.by_lane.entry((agent_idx, lane)).or_default();
            if lane == Lane::Loop && !state.waiters.is_empty() {
                // the loop's steps are one after the other: two at once
                // would make its stillness unknowable
                panic!(
                    "agent-{agent_idx}'s loop waits for {} and {op} at once",
                    state.waiters[0].op
                );
            }
            state.waiters.push(Waiter { id, op, reply });
            state.running = false;
            (id, state.epoch)
        };
        self.tell_changed();
        let mut left = Left {
            gate: self,
            agent_idx,
            lane,
            id,
            epoch,
            granted: false,
        };
        match verdict.await {
            Ok(verdict) => {
                left.granted = true;
                verdict
            }
            // the driver ended this lane: its task is about to be dropped
            Err(_) => std::future::pending().await,
        }
    }

    /// The operations waiting, in a fixed order.
    pub fn waiting(&self) -> Vec<Waiting> {
        let lanes = self.lanes();
        let mut waiting = Vec::new();
        for ((agent_idx, lane), state) in &lanes.by_lane {
            if !state.live {
                continue;
            }
            for waiter in &state.waiters {
                waiting.push(Waiting {
                    agent_idx: *agent_idx,
                    lane: *lane,
                    id: waiter.id,
                    op: waiter.op.clone(),
                });
            }
        }
        waiting
    }

    /// Lets the waiting operation `id` go with `verdict`.
    pub fn grant(&self, id: u64, verdict: Verdict) {
        let mut lanes = self.lanes();
        for ((_, lane), state) in lanes.by_lane.iter_mut() {
            if let Some(at) = state.waiters.iter().position(|waiter| waiter.id == id) {
                let waiter = state.waiters.remove(at);
                if *lane == Lane::Loop {
                    state.running = true;
                }
                // wakes the lane's task, which marks it woken
                let _ = waiter.reply.send(verdict);
                return;
            }
        }
    }

    /// True when no lane of any agent has anything under way.
    pub fn is_still(&self) -> bool {
        self.lanes().by_lane.values().all(LaneState::is_still)
    }

    /// Counts a request of the running task's lane until the returned guard
    /// is dropped.
    pub fn request_under_way(&self) -> Option<UnderWay<'_>> {
        let (agent_idx, lane) = current_lane()?;
        let mut lanes = self.lanes();
        let state = lanes.by_lane.get_mut(&(agent_idx, lane))?;
        state.in_flight += 1;
        Some(UnderWay {
            gate: self,
            agent_idx,
            lane,
            epoch: state.epoch,
        })
    }
}

/// An operation's place at the gate while it waits: given up before it was
/// let through, it leaves, and the loop runs on without it.
struct Left<'a> {
    gate: &'a Gate,
    agent_idx: usize,
    lane: Lane,
    id: u64,
    epoch: u64,
    granted: bool,
}

impl Drop for Left<'_> {
    fn drop(&mut self) {
        if self.granted {
            return;
        }
        let mut lanes = self.gate.lanes();
        if let Some(state) = lanes.by_lane.get_mut(&(self.agent_idx, self.lane))
            && state.epoch == self.epoch
        {
            state.waiters.retain(|waiter| waiter.id != self.id);
            if self.lane == Lane::Loop {
                state.running = true;
            }
        }
        drop(lanes);
        self.gate.tell_changed();
    }
}

/// A request under way; see [`Gate::request_under_way`].
pub struct UnderWay<'a> {
    gate: &'a Gate,
    agent_idx: usize,
    lane: Lane,
    epoch: u64,
}

impl Drop for UnderWay<'_> {
    fn drop(&mut self) {
        let mut lanes = self.gate.lanes();
        if let Some(state) = lanes.by_lane.get_mut(&(self.agent_idx, self.lane))
            && state.epoch == self.epoch
        {
            state.in_flight -= 1;
        }
        drop(lanes);
        self.gate.tell_changed();
    }
}

/// A lane's task, wrapped so that the gate sees when it is woken: set on
/// every wake-up, cleared each time the task is polled.
pub struct Tracked<F> {
    task: Pin<Box<F>>,
    woken: Arc<AtomicBool>,
    gate: Gate,
}

impl<F: Future> Tracked<F> {
    /// `woken` is the flag [`Gate::start`] returned for the lane.
    pub fn new(task: F, gate: &Gate, woken: Arc<AtomicBool>) -> Tracked<F> {
        Tracked {
            task: Box::pin(task),
            woken,
            gate: gate.clone(),
        }
    }
}

struct FlagWaker {
    woken: Arc<AtomicBool>,
    inner: Waker,
}

impl Wake for FlagWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.inner.wake_by_ref();
    }
}

impl<F: Future> Future for Tracked<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<F::Output> {
        self.woken.store(false, Ordering::Release);
        let waker = Waker::from(Arc::new(FlagWaker {
            woken: Arc::clone(&self.woken),
            inner: context.waker().clone(),
        }));
        let polled = self.task.as_mut().poll(&mut Context::from_waker(&waker));
        // the task stopped where it waits: the lane may be still now
        self.gate.tell_changed();
        polled
    }
}
