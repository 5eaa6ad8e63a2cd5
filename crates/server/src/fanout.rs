//! Wake-ups between servers that share a PostgreSQL metadata database: a
//! long-poll parked on one server wakes when a commit lands on another.
//!
//! Each server sends what happened ([`Signal`]) with `pg_notify` after the
//! transaction committed (never inside it: that would serialize commits on
//! the notification queue), a few milliseconds' worth at a time in one
//! notification, and listens on one channel with a connection of its own
//! (directly to PostgreSQL, not through a transaction-mode pooler, which
//! cannot hold a `LISTEN`). Notifications are a hint, never the record: a
//! woken long-poll reads the database. So a lost one costs only latency:
//! when the listener's connection drops, every waiter is woken once, and a
//! backstop poll of the folders' sequences every [`BACKSTOP_INTERVAL`]
//! catches anything else.
//!
//! Behind [`Fanout`], another bus could replace PostgreSQL's. With SQLite
//! (one server) it does nothing.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::state::AppState;

/// The PostgreSQL channel every server listens on.
pub const CHANNEL: &str = "syncfolder_fanout";
/// How long signals gather before they go out in one notification.
pub const BATCH_WINDOW: Duration = Duration::from_millis(5);
/// How often a server compares every folder's sequence with what it
/// published, for notifications that never came.
pub const BACKSTOP_INTERVAL: Duration = Duration::from_secs(5);
/// PostgreSQL's limit on a payload is 8000 bytes; batches stay below.
const MAX_PAYLOAD_BYTES: usize = 7_000;

/// What one server tells the others.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Signal {
    /// A commit moved the folder's sequence to `seq`.
    Commit { folder_id: i64, seq: u64 },
    /// Something besides a commit for the folder's long-polls (an
    /// announcement, damage found).
    Wake { folder_id: i64 },
    /// Chunks were stored: streaming readers waiting for one look again.
    ChunksStored,
    /// The folder was deleted.
    FolderRemoved { folder_id: i64 },
}

/// One notification's payload: the sender and its signals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Payload {
    from: String,
    signals: Vec<Signal>,
}

/// The sending side; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Fanout {
    outgoing: Option<mpsc::UnboundedSender<Signal>>,
}

impl Fanout {
    /// A fan-out that tells nobody (one server).
    pub fn local() -> Fanout {
        Fanout::default()
    }

    /// A fan-out whose signals go out through `pool`; the returned receiver
    /// goes to [`send_batches`].
    pub fn postgres() -> (Fanout, mpsc::UnboundedReceiver<Signal>) {
        let (sender, receiver) = mpsc::unbounded_channel();
        (
            Fanout {
                outgoing: Some(sender),
            },
            receiver,
        )
    }

    /// Tells the other servers; never waits.
    pub fn send(&self, signal: Signal) {
        if let Some(outgoing) = &self.outgoing {
            // the sender task ends only at shutdown
            let _ = outgoing.send(signal);
        }
    }
}

/// Folds signals: the newest sequence per folder, each wake once.
fn coalesce(signals: Vec<Signal>) -> Vec<Signal> {
    let mut commits: BTreeMap<i64, u64> = BTreeMap::new();
    let mut seen: HashSet<Signal> = HashSet::new();
    let mut folded = Vec::new();
    for signal in signals {
        match signal {
            Signal::Commit { folder_id, seq } => {
                let newest = commits.entry(folder_id).or_insert(seq);
                *newest = (*newest).max(seq);
            }
            other => {
                if seen.insert(other.clone()) {
                    folded.push(other);
                }
            }
        }
    }
    commits
        .into_iter()
        .map(|(folder_id, seq)| Signal::Commit { folder_id, seq })
        .chain(folded)
        .collect()
}

/// Payloads of at most [`MAX_PAYLOAD_BYTES`] each.
fn payloads(from: &str, signals: Vec<Signal>) -> Vec<String> {
    let mut texts = Vec::new();
    let mut batch: Vec<Signal> = Vec::new();
    // each signal's JSON is under 100 bytes: a batch of that many fits
    let per_payload = MAX_PAYLOAD_BYTES / 100;
    for signal in signals {
        batch.push(signal);
        if batch.len() == per_payload {
            texts.push(payload_text(from, std::mem::take(&mut batch)));
        }
    }
    if !batch.is_empty() {
        texts.push(payload_text(from, batch));
    }
    texts
}

fn payload_text(from: &str, signals: Vec<Signal>) -> String {
    serde_json::to_string(&Payload {
        from: from.to_owned(),
        signals,
    })
    .unwrap_or_default()
}

/// Sends signals in batches until shutdown: one notification per
/// [`BATCH_WINDOW`] at most. A failed send is logged and dropped (the
/// backstop poll covers it).
pub async fn send_batches(
    pool: PgPool,
    instance_id: String,
    mut incoming: mpsc::UnboundedReceiver<Signal>,
    shutdown: CancellationToken,
) {
    loop {
        let first = tokio::select! {
            signal = incoming.recv() => match signal {
                Some(signal) => signal,
                None => return,
            },
            () = shutdown.cancelled() => return,
        };
        tokio::time::sleep(BATCH_WINDOW).await;
        let mut signals = vec![first];
        while let Ok(signal) = incoming.try_recv() {
            signals.push(signal);
        }
        for text in payloads(&instance_id, coalesce(signals)) {
            if let Err(err) = sqlx::query("SELECT pg_notify($1, $2)")
                .bind(CHANNEL)
                .bind(&text)
                .execute(&pool)
                .await
            {
                tracing::warn!(%err, "telling the other servers; they find out by polling");
            }
        }
    }
}

/// Applies another server's signals to this server's waiters.
fn apply(state: &AppState, signals: Vec<Signal>) {
    for signal in signals {
        match signal {
            Signal::Commit { folder_id, seq } => state.feed.publish(folder_id, seq),
            Signal::Wake { folder_id } => state.feed.wake(folder_id),
            Signal::ChunksStored => state.announcements.chunks_stored(),
            Signal::FolderRemoved { folder_id } => {
                state.feed.remove(folder_id);
                state.announcements.remove_folder(folder_id);
            }
        }
    }
}

/// Wakes every waiter once: something may have been missed.
fn wake_everyone(state: &AppState) {
    state.feed.wake_all();
    state.announcements.chunks_stored();
}

/// Listens for the other servers' signals until shutdown, reconnecting
/// with backoff; wakes everyone after each reconnection.
pub async fn listen(pool: PgPool, state: AppState, shutdown: CancellationToken) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let mut listener = match connect_listener(&pool).await {
            Ok(listener) => listener,
            Err(err) => {
                tracing::warn!(%err, ?backoff, "listening for the other servers' commits");
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = shutdown.cancelled() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        // whatever happened while nobody listened
        wake_everyone(&state);
        state.metrics.fanout_listener_connects.inc();
        loop {
            let notification = tokio::select! {
                notification = listener.try_recv() => notification,
                () = shutdown.cancelled() => return,
            };
            match notification {
                Ok(Some(notification)) => {
                    match serde_json::from_str::<Payload>(notification.payload()) {
                        Ok(payload) if payload.from != state.instance_id => {
                            apply(&state, payload.signals);
                        }
                        Ok(_) => {}
                        Err(err) => {
                            tracing::warn!(%err, "a fan-out payload this server cannot read")
                        }
                    }
                }
                // the connection dropped: reconnect, and wake everyone
                Ok(None) => {
                    tracing::info!("the fan-out listener lost its connection; reconnecting");
                    break;
                }
                Err(err) => {
                    tracing::warn!(%err, "the fan-out listener failed; reconnecting");
                    break;
                }
            }
        }
    }
}

async fn connect_listener(pool: &PgPool) -> sqlx::Result<PgListener> {
    let mut listener = PgListener::connect_with(pool).await?;
    // reconnection is ours (to wake everyone after it), not the listener's
    listener.ignore_pool_close_event(true);
    listener.listen(CHANNEL).await?;
    Ok(listener)
}

/// Every [`BACKSTOP_INTERVAL`], publishes each folder whose sequence in the
/// database is past what this server published: a commit whose
/// notification was lost wakes its long-polls a few seconds late, not never.
pub async fn backstop(state: AppState, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(BACKSTOP_INTERVAL) => {}
            () = shutdown.cancelled() => return,
        }
        match state.db.folder_sequences().await {
            Ok(sequences) => {
                for (folder_id, seq) in sequences {
                    if state
                        .feed
                        .published(folder_id)
                        .is_some_and(|published| published < seq)
                    {
                        state.feed.publish(folder_id, seq);
                    }
                }
            }
            Err(err) => tracing::debug!(%err, "the fan-out backstop could not read sequences"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_keeps_the_newest_sequence_per_folder_and_each_wake_once() {
        let folded = coalesce(vec![
            Signal::Commit {
                folder_id: 2,
                seq: 5,
            },
            Signal::ChunksStored,
            Signal::Commit {
                folder_id: 2,
                seq: 7,
            },
            Signal::Wake { folder_id: 1 },
            Signal::ChunksStored,
            Signal::Commit {
                folder_id: 1,
                seq: 3,
            },
            Signal::Wake { folder_id: 1 },
        ]);
        assert_eq!(
            folded,
            [
                Signal::Commit {
                    folder_id: 1,
                    seq: 3
                },
                Signal::Commit {
                    folder_id: 2,
                    seq: 7
                },
                Signal::ChunksStored,
                Signal::Wake { folder_id: 1 },
            ]
        );
    }

    #[test]
    fn payloads_stay_under_postgres_limit_and_read_back() {
        let signals: Vec<Signal> = (0..1_000)
            .map(|folder_id| Signal::Commit {
                folder_id: i64::MAX - folder_id,
                seq: u64::MAX,
            })
            .collect();
        let texts = payloads("0123456789abcdef", signals.clone());
        assert!(texts.len() > 1);
        let mut read_back = Vec::new();
        for text in &texts {
            assert!(text.len() < 8_000, "{} bytes", text.len());
            let payload: Payload = serde_json::from_str(text).expect("json");
            assert_eq!(payload.from, "0123456789abcdef");
            read_back.extend(payload.signals);
        }
        assert_eq!(read_back, signals);
    }
}
