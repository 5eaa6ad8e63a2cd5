//! From observations to a plan, with no IO and no clock.
//!
//! What a reconcile saw of each local path, the [`SyncState`] (base, the
//! server's records, intents) and the mode go in; a [`Planned`] comes out:
//! the actions grouped by kind of work (a [`Plan`], which the executor in
//! `execute.rs` carries out in a safe order), the state changes the
//! decisions imply by themselves (intents a crash left, settled or adopted;
//! new fingerprints of files touched without a change), and the paths to
//! look at again later. The decision for one path is
//! [`syncfolder_core::decision::decide`]'s; what the planner adds is
//! everything around it.

use std::collections::{BTreeMap, BTreeSet};

use syncfolder_core::decision::{self, Action, Observed, Versioned};
use syncfolder_core::ignore::IgnoreRules;
use syncfolder_core::protocol::{ChunkRef, Content, FileRecord, FolderMode};

use crate::local_fs::{Fingerprint, LocalKind, LocalMeta};
use crate::sync_state::{StateChanges, SyncState};

/// A local path as observed in this cycle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LocalObservation {
    pub meta: Option<LocalMeta>,
    pub content: Option<Content>,
    /// A file's chunks (hashed now, or the base's when the fingerprint matched).
    pub chunks: Vec<ChunkRef>,
    /// True when the file was hashed in this cycle.
    pub hashed: bool,
}

impl LocalObservation {
    /// Nothing is at the path.
    pub fn absent() -> LocalObservation {
        LocalObservation {
            meta: None,
            content: None,
            chunks: Vec::new(),
            hashed: false,
        }
    }
}

/// What looking at one local path found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Observation {
    Seen(LocalObservation),
    /// The entry changed while it was read, or could not be read: look again later.
    Unstable,
    /// Something that is never synced (a FIFO, socket or device) holds the path: leave it be.
    Occupied,
    /// An ignore rule covers the path (our own temp files among them): not read at all.
    Ignored,
}

/// Paths the server refused outright, with the local fingerprint and the
/// server's version at the time: not tried again until either changes.
pub(crate) type Refused = BTreeMap<String, (Option<Fingerprint>, u64)>;

/// Everything besides the observations that a plan depends on.
pub(crate) struct PlanContext<'a> {
    pub state: &'a SyncState,
    pub mode: FolderMode,
    pub agent_id: &'a str,
    pub ignore: &'a IgnoreRules,
    pub refused: &'a Refused,
    /// The clock's time, for fingerprints of files modified a moment ago.
    pub now_ms: i64,
}

/// A cycle's decisions grouped by kind of work.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Plan {
    pub record_synced: Vec<(String, LocalObservation)>,
    /// With the version each upload replaces.
    pub uploads: Vec<(String, LocalObservation, u64)>,
    pub commit_deletes: Vec<(String, u64)>,
    pub downloads: Vec<(String, LocalObservation)>,
    pub delete_local: Vec<(String, LocalObservation)>,
    pub conflicts: Vec<(String, LocalObservation)>,
}

impl Plan {
    fn add(&mut self, synced_path: String, local: LocalObservation, action: Action) {
        match action {
            Action::Nothing | Action::KeepLocal => {}
            Action::RecordSynced => self.record_synced.push((synced_path, local)),
            Action::Upload { parent_version } => {
                self.uploads.push((synced_path, local, parent_version))
            }
            Action::CommitDelete { parent_version } => {
                self.commit_deletes.push((synced_path, parent_version))
            }
            Action::Download => self.downloads.push((synced_path, local)),
            Action::DeleteLocal => self.delete_local.push((synced_path, local)),
            Action::Conflict => self.conflicts.push((synced_path, local)),
        }
    }
}

/// What the planner made of a cycle's observations.
#[derive(Debug, Default)]
pub(crate) struct Planned {
    pub plan: Plan,
    /// Applied before the plan is carried out.
    pub state_changes: StateChanges,
    /// Paths to look at again after a pause.
    pub retry: BTreeSet<String>,
}

/// Whether an ignore rule covers `synced_path`; a directory is one here,
/// or (when nothing is here) on the server.
pub(crate) fn is_ignored(
    ignore: &IgnoreRules,
    synced_path: &str,
    meta: Option<&LocalMeta>,
    remote: Option<&FileRecord>,
) -> bool {
    let is_dir = meta
        .map(|meta| meta.kind == LocalKind::Directory)
        .unwrap_or_else(|| {
            remote.is_some_and(|record| matches!(record.content, Some(Content::Directory)))
        });
    ignore.is_ignored(synced_path, is_dir)
}

/// A fingerprint fit to skip hashing next time. A file modified within the
/// last two seconds gets none: a same-size rewrite inside one timestamp
/// tick would leave its fingerprint unchanged ("racy clean", as git calls
/// it), so it is hashed once more later.
pub(crate) fn trusted_fingerprint(meta: Option<LocalMeta>, now_ms: i64) -> Option<Fingerprint> {
    let meta = meta?;
    let now_ns = i128::from(now_ms) * 1_000_000;
    let recent = now_ns - i128::from(meta.fingerprint.mtime_ns) < 2_000_000_000;
    if meta.kind == LocalKind::File && recent {
        return None;
    }
    Some(meta.fingerprint)
}

/// Plans a cycle.
pub(crate) fn plan(observations: Vec<(String, Observation)>, context: &PlanContext) -> Planned {
    let state = context.state;
    let mut planned = Planned::default();
    for (synced_path, observation) in observations {
        let local = match observation {
            Observation::Seen(local) => local,
            Observation::Unstable => {
                planned.retry.insert(synced_path);
                continue;
            }
            Observation::Occupied | Observation::Ignored => continue,
        };
        let remote = state.remote(&synced_path);
        if is_ignored(context.ignore, &synced_path, local.meta.as_ref(), remote) {
            continue;
        }
        let remote_version = remote.map_or(0, |record| record.version);
        if context.refused.get(&synced_path)
            == Some(&(local.meta.map(|meta| meta.fingerprint), remote_version))
        {
            continue;
        }
        let adopted = adopt_pending(&synced_path, &local, context, &mut planned.state_changes);
        let base = adopted
            .as_ref()
            .or_else(|| state.base(&synced_path).map(|entry| &entry.record));
        let action = decision::decide(
            Observed {
                base: base.map(|record| Versioned {
                    version: record.version,
                    content: record.content.as_ref(),
                }),
                local: local.content.as_ref(),
                remote: remote.map(|record| Versioned {
                    version: record.version,
                    content: record.content.as_ref(),
                }),
            },
            context.mode,
        );
        // a touched file with unchanged content: remember its new
        // fingerprint, skip hashing next time
        if action == Action::Nothing
            && local.hashed
            && let Some(base) = base.filter(|base| base.content == local.content)
        {
            planned.state_changes.set_base(
                base.clone(),
                trusted_fingerprint(local.meta, context.now_ms),
            );
        }
        planned.plan.add(synced_path, local, action);
    }
    planned
}

/// Settles the intent a crash left at `synced_path`, if any; returns the
/// record it adopts as the new base. After a crash between a download's
/// rename and its base update, the local file equals the intent: it is
/// that record, not a new local file. Likewise a commit whose answer was
/// lost: when the server holds exactly what this agent was committing,
/// the commit went through.
fn adopt_pending(
    synced_path: &str,
    local: &LocalObservation,
    context: &PlanContext,
    changes: &mut StateChanges,
) -> Option<FileRecord> {
    let state = context.state;
    let pending = state.pending(synced_path)?;
    changes.settle(synced_path.to_owned());
    let base_version = state.base(synced_path).map(|base| base.record.version);
    let adopted = if pending.version == 0 {
        state
            .remote(synced_path)
            .filter(|remote| {
                remote.agent_id == context.agent_id
                    && remote.content == pending.content
                    && base_version.is_none_or(|version| version < remote.version)
            })
            .cloned()
            .inspect(|remote| {
                tracing::debug!(
                    path = synced_path,
                    version = remote.version,
                    "adopting an upload committed before a restart"
                );
            })
    } else {
        let newer_than_base = base_version.is_none_or(|version| version < pending.version);
        (local.content.is_some() && local.content == pending.content && newer_than_base)
            .then(|| pending.clone())
            .inspect(|pending| {
                tracing::debug!(
                    path = synced_path,
                    version = pending.version,
                    "adopting a download completed before a restart"
                );
            })
    }?;
    // the local entry is what the base records only when it holds that content
    let fingerprint = if local.content == adopted.content {
        trusted_fingerprint(local.meta, context.now_ms)
    } else {
        None
    };
    changes.set_base(adopted.clone(), fingerprint);
    Some(adopted)
}

#[cfg(test)]
mod tests {
    use syncfolder_core::Hash;

    use super::*;
    use crate::state::StateDb;

    const NOW_MS: i64 = 1_800_000_000_000;
    /// An mtime well before [`NOW_MS`]: fingerprints of such files are trusted.
    const OLD_MTIME_NS: i64 = (NOW_MS - 60_000) * 1_000_000;

    fn file(text: &str) -> Content {
        Content::File {
            content_hash: Hash::of(text.as_bytes()),
            size: text.len() as u64,
            executable: false,
        }
    }

    fn record(path: &str, version: u64, content: Option<Content>, agent_id: &str) -> FileRecord {
        FileRecord {
            path: path.to_owned(),
            version,
            content,
            chunks: Vec::new(),
            mtime_ns: 0,
            agent_id: agent_id.to_owned(),
            committed_at_ms: 0,
        }
    }

    fn file_meta(inode: u64, mtime_ns: i64) -> LocalMeta {
        LocalMeta {
            kind: LocalKind::File,
            fingerprint: Fingerprint {
                size: 1,
                mtime_ns,
                ctime_ns: mtime_ns,
                inode,
                mode: 0o100644,
            },
        }
    }

    /// A file seen here with `text`, hashed now unless `hashed` is false.
    fn seen(text: &str, hashed: bool) -> Observation {
        Observation::Seen(LocalObservation {
            meta: Some(file_meta(7, OLD_MTIME_NS)),
            content: Some(file(text)),
            chunks: Vec::new(),
            hashed,
        })
    }

    fn absent() -> Observation {
        Observation::Seen(LocalObservation::absent())
    }

    /// A state with `base` and `remote` records and `pending` intents, as
    /// (path, version, content) rows.
    async fn state_with(
        base: &[(&str, u64, Option<&str>)],
        remote: &[(&str, u64, Option<&str>, &str)],
        pending: &[(&str, u64, Option<&str>)],
    ) -> SyncState {
        let mut state = SyncState::load(StateDb::open_in_memory().await.expect("db"))
            .await
            .expect("state");
        let mut changes = StateChanges::default();
        for (path, version, text) in base {
            changes.set_base(
                record(path, *version, text.map(file), "someone"),
                Some(file_meta(7, OLD_MTIME_NS).fingerprint),
            );
        }
        for (path, version, text, agent_id) in remote {
            changes.see_remote(record(path, *version, text.map(file), agent_id));
        }
        for (path, version, text) in pending {
            changes.intend(record(path, *version, text.map(file), "me"));
        }
        state.apply(changes).await.expect("apply");
        state
    }

    fn plan_in(
        state: &SyncState,
        mode: FolderMode,
        refused: &Refused,
        observations: Vec<(&str, Observation)>,
    ) -> Planned {
        let ignore = IgnoreRules::new(["*.tmp"]).expect("rules");
        plan(
            observations
                .into_iter()
                .map(|(path, observation)| (path.to_owned(), observation))
                .collect(),
            &PlanContext {
                state,
                mode,
                agent_id: "me",
                ignore: &ignore,
                refused,
                now_ms: NOW_MS,
            },
        )
    }

    fn base_version(state: &SyncState, path: &str) -> Option<u64> {
        state.base(path).map(|entry| entry.record.version)
    }

    fn paths<T>(rows: &[(String, T)]) -> Vec<&str> {
        rows.iter().map(|(path, _)| path.as_str()).collect()
    }

    #[tokio::test]
    async fn each_decision_lands_in_its_group_with_the_version_it_replaces() {
        let state = state_with(
            &[
                ("same", 1, Some("a")),
                ("edited", 2, Some("a")),
                ("deleted-here", 3, Some("a")),
                ("edited-there", 4, Some("a")),
                ("deleted-there", 5, Some("a")),
                ("both", 6, Some("a")),
            ],
            &[
                ("same", 1, Some("a"), "someone"),
                ("edited", 2, Some("a"), "someone"),
                ("deleted-here", 3, Some("a"), "someone"),
                ("edited-there", 8, Some("b"), "other"),
                ("deleted-there", 9, None, "other"),
                ("both", 10, Some("b"), "other"),
                ("agreed", 11, Some("c"), "other"),
                ("new-there", 12, Some("n"), "other"),
            ],
            &[],
        )
        .await;
        let planned = plan_in(
            &state,
            FolderMode::TwoWay,
            &Refused::new(),
            vec![
                ("same", seen("a", false)),
                ("edited", seen("b", true)),
                ("deleted-here", absent()),
                ("edited-there", seen("a", false)),
                ("deleted-there", seen("a", false)),
                ("both", seen("c", true)),
                ("agreed", seen("c", true)),
                ("new-there", absent()),
                ("new-here", seen("h", true)),
            ],
        );
        let plan = &planned.plan;
        assert_eq!(paths(&plan.record_synced), ["agreed"]);
        let uploads: Vec<(&str, u64)> = plan
            .uploads
            .iter()
            .map(|(path, _, parent)| (path.as_str(), *parent))
            .collect();
        assert_eq!(uploads, [("edited", 2), ("new-here", 0)]);
        assert_eq!(plan.commit_deletes, [("deleted-here".to_owned(), 3)]);
        assert_eq!(paths(&plan.downloads), ["edited-there", "new-there"]);
        assert_eq!(paths(&plan.delete_local), ["deleted-there"]);
        assert_eq!(paths(&plan.conflicts), ["both"]);
        assert!(planned.retry.is_empty());
        assert!(planned.state_changes.is_empty());
    }

    #[tokio::test]
    async fn unstable_paths_are_retried_and_ignored_or_occupied_ones_left_alone() {
        let state = state_with(&[], &[("x.tmp", 1, Some("t"), "other")], &[]).await;
        let planned = plan_in(
            &state,
            FolderMode::TwoWay,
            &Refused::new(),
            vec![
                ("changing", Observation::Unstable),
                ("fifo", Observation::Occupied),
                ("skipped", Observation::Ignored),
                // ignored by a rule the observation did not know of
                ("x.tmp", absent()),
                ("y.tmp", seen("y", true)),
            ],
        );
        assert_eq!(planned.retry, BTreeSet::from(["changing".to_owned()]));
        assert_eq!(planned.plan, Plan::default());
    }

    #[tokio::test]
    async fn a_refused_path_waits_until_the_file_or_the_servers_version_changes() {
        let state = state_with(&[], &[("r", 4, Some("s"), "other")], &[]).await;
        let fingerprint = Some(file_meta(7, OLD_MTIME_NS).fingerprint);
        let refused = Refused::from([("r".to_owned(), (fingerprint, 4))]);
        let planned = plan_in(
            &state,
            FolderMode::TwoWay,
            &refused,
            vec![("r", seen("l", true))],
        );
        assert_eq!(planned.plan, Plan::default());

        let changed = Observation::Seen(LocalObservation {
            meta: Some(file_meta(8, OLD_MTIME_NS)),
            content: Some(file("l2")),
            chunks: Vec::new(),
            hashed: true,
        });
        let planned = plan_in(&state, FolderMode::TwoWay, &refused, vec![("r", changed)]);
        assert_eq!(paths(&planned.plan.conflicts), ["r"]);
    }

    #[tokio::test]
    async fn receive_only_keeps_local_changes_and_send_only_never_downloads() {
        let state = state_with(
            &[("mine", 1, Some("a")), ("theirs", 2, Some("a"))],
            &[
                ("mine", 1, Some("a"), "someone"),
                ("theirs", 5, Some("b"), "other"),
            ],
            &[],
        )
        .await;
        let observations = || {
            vec![
                ("mine", seen("changed", true)),
                ("theirs", seen("a", false)),
                ("new-here", seen("n", true)),
            ]
        };
        let receive_only = plan_in(
            &state,
            FolderMode::ReceiveOnly,
            &Refused::new(),
            observations(),
        );
        assert!(receive_only.plan.uploads.is_empty());
        assert_eq!(paths(&receive_only.plan.downloads), ["theirs"]);

        let send_only = plan_in(
            &state,
            FolderMode::SendOnly,
            &Refused::new(),
            observations(),
        );
        assert!(send_only.plan.downloads.is_empty());
        assert_eq!(
            send_only
                .plan
                .uploads
                .iter()
                .map(|(path, _, _)| path.as_str())
                .collect::<Vec<_>>(),
            ["mine", "new-here"]
        );
    }

    #[tokio::test]
    async fn a_touched_file_with_the_same_content_gets_its_new_fingerprint_unless_just_written() {
        let mut state = state_with(
            &[("touched", 1, Some("a")), ("just-written", 2, Some("a"))],
            &[
                ("touched", 1, Some("a"), "someone"),
                ("just-written", 2, Some("a"), "someone"),
            ],
            &[],
        )
        .await;
        let recent_mtime_ns = (NOW_MS - 500) * 1_000_000;
        let planned = plan_in(
            &state,
            FolderMode::TwoWay,
            &Refused::new(),
            vec![
                (
                    "touched",
                    Observation::Seen(LocalObservation {
                        meta: Some(file_meta(9, OLD_MTIME_NS + 1)),
                        content: Some(file("a")),
                        chunks: Vec::new(),
                        hashed: true,
                    }),
                ),
                (
                    "just-written",
                    Observation::Seen(LocalObservation {
                        meta: Some(file_meta(9, recent_mtime_ns)),
                        content: Some(file("a")),
                        chunks: Vec::new(),
                        hashed: true,
                    }),
                ),
            ],
        );
        assert_eq!(planned.plan, Plan::default());
        state.apply(planned.state_changes).await.expect("apply");
        let fingerprint = |path| state.base(path).and_then(|entry| entry.fingerprint);
        assert_eq!(
            fingerprint("touched"),
            Some(file_meta(9, OLD_MTIME_NS + 1).fingerprint)
        );
        assert_eq!(
            fingerprint("just-written"),
            None,
            "racy clean: hashed again"
        );
    }

    #[tokio::test]
    async fn a_download_put_in_place_before_a_crash_is_adopted_not_uploaded() {
        let mut state = state_with(
            &[("d", 1, Some("old")), ("other", 1, Some("old"))],
            &[
                ("d", 5, Some("new"), "other"),
                ("other", 6, Some("new"), "other"),
            ],
            &[("d", 5, Some("new")), ("other", 6, Some("new"))],
        )
        .await;
        let planned = plan_in(
            &state,
            FolderMode::TwoWay,
            &Refused::new(),
            vec![
                // the rename happened: the file holds the intent's content
                ("d", seen("new", true)),
                // it did not: the intent is dropped, the download runs again
                ("other", seen("old", false)),
            ],
        );
        assert!(planned.plan.uploads.is_empty(), "{:?}", planned.plan);
        assert_eq!(paths(&planned.plan.downloads), ["other"]);
        state.apply(planned.state_changes).await.expect("apply");
        assert_eq!(base_version(&state, "d"), Some(5));
        assert_eq!(base_version(&state, "other"), Some(1));
        assert_eq!(state.pending("d"), None);
        assert_eq!(state.pending("other"), None);
    }

    #[tokio::test]
    async fn a_commit_whose_answer_was_lost_is_adopted_only_when_it_is_ours() {
        let mut state = state_with(
            &[("ours", 1, Some("old")), ("theirs", 1, Some("old"))],
            &[
                ("ours", 7, Some("sent"), "me"),
                ("theirs", 8, Some("sent"), "other"),
            ],
            &[("ours", 0, Some("sent")), ("theirs", 0, Some("sent"))],
        )
        .await;
        let planned = plan_in(
            &state,
            FolderMode::TwoWay,
            &Refused::new(),
            vec![("ours", seen("sent", true)), ("theirs", seen("sent", true))],
        );
        // ours: already the server's record, nothing to do; theirs: the same
        // content from someone else is simply recorded as synced
        assert!(planned.plan.uploads.is_empty());
        assert!(planned.plan.conflicts.is_empty());
        assert_eq!(paths(&planned.plan.record_synced), ["theirs"]);
        state.apply(planned.state_changes).await.expect("apply");
        let ours = state.base("ours").expect("base");
        assert_eq!(ours.record.version, 7);
        assert!(ours.fingerprint.is_some());
        assert_eq!(base_version(&state, "theirs"), Some(1));
        assert_eq!(state.pending("ours"), None);
        assert_eq!(state.pending("theirs"), None);
    }

    #[tokio::test]
    async fn an_adopted_commit_of_content_changed_since_is_uploaded_on_top_of_it() {
        let state = state_with(
            &[("f", 1, Some("old"))],
            &[("f", 7, Some("sent"), "me")],
            &[("f", 0, Some("sent"))],
        )
        .await;
        let planned = plan_in(
            &state,
            FolderMode::TwoWay,
            &Refused::new(),
            vec![("f", seen("edited after", true))],
        );
        let uploads: Vec<(&str, u64)> = planned
            .plan
            .uploads
            .iter()
            .map(|(path, _, parent)| (path.as_str(), *parent))
            .collect();
        assert_eq!(uploads, [("f", 7)], "no conflict with its own commit");
    }
}
