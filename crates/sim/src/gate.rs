//! The scheduler's gate: every filesystem call and every request an agent
//! makes first stops here and waits until the driver lets it through. The
//! driver lets exactly one operation go at a time and waits until its agent
//! stops at the gate again, so the whole world advances in a sequence of
//! steps that the seed alone decides: the same seed gives the same run, as
//! threads, sockets and SQLite's worker threads only ever serve one step.

use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::oneshot;

/// What one agent is about to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// A filesystem call, with the path it touches.
    Fs { call: &'static str, path: String },
    /// A request to the server.
    Remote { call: &'static str },
}

impl Op {
    pub fn is_remote(&self) -> bool {
        matches!(self, Op::Remote { .. })
    }
}

impl std::fmt::Display for Op {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Op::Fs { call, path } => write!(formatter, "fs.{call}({path})"),
            Op::Remote { call } => write!(formatter, "remote.{call}"),
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

enum Slot {
    /// Doing something other than waiting at the gate (a state DB write, a request in flight).
    Running,
    Waiting {
        op: Op,
        reply: oneshot::Sender<Verdict>,
    },
    /// Crashed, or stopped with an error.
    Gone,
}

/// Shared by the driver and the agents' filesystems and remotes.
#[derive(Clone)]
pub struct Gate {
    slots: Arc<Mutex<Vec<Slot>>>,
}

impl Gate {
    pub fn new(n_agents: usize) -> Gate {
        Gate {
            slots: Arc::new(Mutex::new((0..n_agents).map(|_| Slot::Gone).collect())),
        }
    }

    fn slots(&self) -> MutexGuard<'_, Vec<Slot>> {
        self.slots
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Waits until the driver lets `op` of agent `agent_idx` through.
    pub async fn pass(&self, agent_idx: usize, op: Op) -> Verdict {
        let (reply, verdict) = oneshot::channel();
        self.slots()[agent_idx] = Slot::Waiting { op, reply };
        match verdict.await {
            Ok(verdict) => verdict,
            // the driver crashed this agent: its task is about to be dropped
            Err(_) => std::future::pending().await,
        }
    }

    /// The operations waiting, by agent.
    pub fn waiting(&self) -> Vec<(usize, Op)> {
        self.slots()
            .iter()
            .enumerate()
            .filter_map(|(agent_idx, slot)| match slot {
                Slot::Waiting { op, .. } => Some((agent_idx, op.clone())),
                _ => None,
            })
            .collect()
    }

    /// Lets agent `agent_idx`'s waiting operation go with `verdict`.
    pub fn grant(&self, agent_idx: usize, verdict: Verdict) {
        let mut slots = self.slots();
        if let Slot::Waiting { reply, .. } = std::mem::replace(&mut slots[agent_idx], Slot::Running)
        {
            let _ = reply.send(verdict);
        }
    }

    /// True when no agent is between two gate stops.
    pub fn is_still(&self) -> bool {
        !self
            .slots()
            .iter()
            .any(|slot| matches!(slot, Slot::Running))
    }

    pub fn set_running(&self, agent_idx: usize) {
        self.slots()[agent_idx] = Slot::Running;
    }

    pub fn set_gone(&self, agent_idx: usize) {
        self.slots()[agent_idx] = Slot::Gone;
    }
}
