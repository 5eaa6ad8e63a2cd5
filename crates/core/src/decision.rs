//! The 3-way decision table of the sync model (DESIGN.md section 2) as one
//! pure function: given what the agent last synced (*base*), what is on disk
//! (*local*) and what the server holds (*remote*), say what to do with a path.
//!
//! Contents are compared, not versions: a remote that changed and changed back
//! is "same". Absent and deleted are the same content (`None`). Versions only
//! say which parent a commit names.

use crate::protocol::{Content, FolderMode};

/// A record as the agent knows it: the server version it was committed at and
/// its content (`None`: a tombstone).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Versioned<'a> {
    pub version: u64,
    pub content: Option<&'a Content>,
}

/// The three views of one path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Observed<'a> {
    /// What the agent last synced (`None`: never synced this path).
    pub base: Option<Versioned<'a>>,
    /// What is on disk now (`None`: nothing there).
    pub local: Option<&'a Content>,
    /// The server's current record as last seen (`None`: the server has no record).
    pub remote: Option<Versioned<'a>>,
}

/// What the agent does with a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Everything agrees.
    Nothing,
    /// Local and remote hold the same content: make the remote record the new base.
    RecordSynced,
    /// Commit the local content, naming `parent_version`.
    Upload { parent_version: u64 },
    /// Commit a tombstone, naming `parent_version`.
    CommitDelete { parent_version: u64 },
    /// Write the remote content locally (after re-checking that local did not change).
    Download,
    /// Remove the local entry (after re-checking that it still equals base).
    DeleteLocal,
    /// Both sides changed differently: move the local entry to a conflict copy
    /// (which then syncs as a new path) and download the remote one.
    Conflict,
    /// Local differs but this agent may not send it (receive-only): leave it alone.
    KeepLocal,
}

fn content_of(versioned: Option<Versioned<'_>>) -> Option<&Content> {
    versioned.and_then(|versioned| versioned.content)
}

fn version_of(versioned: Option<Versioned<'_>>) -> u64 {
    versioned.map_or(0, |versioned| versioned.version)
}

/// Decides what to do with one path. Pure: no IO, no clock.
pub fn decide(observed: Observed<'_>, mode: FolderMode) -> Action {
    let base = content_of(observed.base);
    let local = observed.local;
    let remote = content_of(observed.remote);
    let remote_version = version_of(observed.remote);
    let base_version = version_of(observed.base);

    let local_changed = local != base;
    let remote_changed = remote != base;

    match mode {
        FolderMode::TwoWay => decide_two_way(
            local,
            remote,
            local_changed,
            remote_changed,
            remote_version,
            base_version,
        ),
        FolderMode::SendOnly => {
            if !local_changed {
                // remote changes are never applied; base keeps what we last sent
                return Action::Nothing;
            }
            if local == remote {
                return Action::RecordSynced;
            }
            match local {
                Some(_) => Action::Upload {
                    parent_version: remote_version,
                },
                None => Action::CommitDelete {
                    parent_version: remote_version,
                },
            }
        }
        FolderMode::ReceiveOnly => {
            if local == remote {
                return if base_version == remote_version && !local_changed {
                    Action::Nothing
                } else {
                    Action::RecordSynced
                };
            }
            if !remote_changed {
                return if local_changed {
                    Action::KeepLocal
                } else {
                    Action::Nothing
                };
            }
            match (local, remote, local_changed) {
                // local untouched: follow the server
                (_, Some(_), false) => Action::Download,
                (Some(_), None, false) => Action::DeleteLocal,
                (None, None, false) => Action::RecordSynced,
                // a local edit the server never saw: keep it, never upload it
                (Some(_), Some(_), true) => Action::Conflict,
                (None, Some(_), true) => Action::Download,
                (_, None, true) => Action::KeepLocal,
            }
        }
    }
}

fn decide_two_way(
    local: Option<&Content>,
    remote: Option<&Content>,
    local_changed: bool,
    remote_changed: bool,
    remote_version: u64,
    base_version: u64,
) -> Action {
    match (local_changed, remote_changed) {
        (false, false) => {
            if remote_version != base_version {
                // changed and changed back on the server: adopt its version
                Action::RecordSynced
            } else {
                Action::Nothing
            }
        }
        (true, false) => match local {
            Some(_) => Action::Upload {
                parent_version: remote_version,
            },
            None => Action::CommitDelete {
                parent_version: remote_version,
            },
        },
        (false, true) => match remote {
            Some(_) => Action::Download,
            None => Action::DeleteLocal,
        },
        (true, true) => {
            if local == remote {
                return Action::RecordSynced;
            }
            match (local, remote) {
                // modification beats deletion, on either side
                (None, Some(_)) => Action::Download,
                (Some(_), None) => Action::Upload {
                    parent_version: remote_version,
                },
                // the same bytes with another executable bit: no copy of
                // identical content; this side's bit wins
                (Some(local), Some(remote)) if same_bytes(local, remote) => Action::Upload {
                    parent_version: remote_version,
                },
                (Some(_), Some(_)) => Action::Conflict,
                (None, None) => Action::RecordSynced,
            }
        }
    }
}

/// Two files with the same bytes (their executable bits may differ).
fn same_bytes(left: &Content, right: &Content) -> bool {
    match (left, right) {
        (
            Content::File {
                content_hash: left, ..
            },
            Content::File {
                content_hash: right,
                ..
            },
        ) => left == right,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::hash::Hash;

    fn file(text: &str) -> Content {
        Content::File {
            content_hash: Hash::of(text.as_bytes()),
            size: text.len() as u64,
            executable: false,
        }
    }

    fn at(version: u64, content: Option<&Content>) -> Option<Versioned<'_>> {
        Some(Versioned { version, content })
    }

    /// One row of the DESIGN.md section 2 table per test, in two-way mode.
    /// `v1`/`v2`/`v3` are file contents; `base` was synced at version 3.
    macro_rules! design_table {
        (
            contents $v1:ident, $v2:ident, $v3:ident;
            $($name:ident: local $local:expr, remote $remote:expr => $action:expr;)*
        ) => {$(
            #[test]
            fn $name() {
                let ($v1, $v2, $v3) = (file("v1"), file("v2"), file("v3"));
                let _ = (&$v1, &$v2, &$v3);
                let (local, remote): (Option<&Content>, Option<Versioned<'_>>) = ($local, $remote);
                let observed = Observed { base: at(3, Some(&$v1)), local, remote };
                assert_eq!(decide(observed, FolderMode::TwoWay), $action);
            }
        )*};
    }

    design_table! {
        contents v1, v2, v3;
        a_path_nobody_touched_needs_nothing:
            local Some(&v1), remote at(3, Some(&v1)) => Action::Nothing;
        a_local_edit_is_uploaded_on_top_of_the_base_version:
            local Some(&v2), remote at(3, Some(&v1)) => Action::Upload { parent_version: 3 };
        a_remote_edit_is_downloaded:
            local Some(&v1), remote at(4, Some(&v2)) => Action::Download;
        the_same_edit_on_both_sides_is_recorded_as_synced:
            local Some(&v2), remote at(4, Some(&v2)) => Action::RecordSynced;
        different_edits_on_both_sides_are_a_conflict:
            local Some(&v2), remote at(4, Some(&v3)) => Action::Conflict;
        a_local_delete_commits_a_tombstone_on_top_of_the_base_version:
            local None, remote at(3, Some(&v1)) => Action::CommitDelete { parent_version: 3 };
        a_local_delete_loses_to_a_remote_edit:
            local None, remote at(4, Some(&v2)) => Action::Download;
        a_remote_delete_deletes_the_untouched_local_copy:
            local Some(&v1), remote at(4, None) => Action::DeleteLocal;
        a_local_edit_survives_a_remote_delete_as_a_new_version:
            local Some(&v2), remote at(4, None) => Action::Upload { parent_version: 4 };
    }

    #[test]
    fn a_new_local_path_is_uploaded_as_a_new_path() {
        let content = file("new");
        let observed = Observed {
            base: None,
            local: Some(&content),
            remote: None,
        };
        assert_eq!(
            decide(observed, FolderMode::TwoWay),
            Action::Upload { parent_version: 0 }
        );
    }

    #[test]
    fn a_remote_edit_changed_back_only_adopts_the_new_version() {
        let content = file("v1");
        let observed = Observed {
            base: at(3, Some(&content)),
            local: Some(&content),
            remote: at(5, Some(&content)),
        };
        assert_eq!(decide(observed, FolderMode::TwoWay), Action::RecordSynced);
    }

    #[test]
    fn the_same_bytes_with_another_executable_bit_is_no_conflict() {
        let base = file("v1");
        let text = file("v2");
        let executable = match text.clone() {
            Content::File {
                content_hash, size, ..
            } => Content::File {
                content_hash,
                size,
                executable: true,
            },
            other => other,
        };
        let observed = Observed {
            base: at(3, Some(&base)),
            local: Some(&executable),
            remote: at(5, Some(&text)),
        };
        assert_eq!(
            decide(observed, FolderMode::TwoWay),
            Action::Upload { parent_version: 5 }
        );
    }

    /// An owned version of [`Observed`] for proptest to generate.
    #[derive(Debug, Clone)]
    struct Case {
        base: Option<(u64, Option<Content>)>,
        local: Option<Content>,
        remote: Option<(u64, Option<Content>)>,
    }

    impl Case {
        fn observed(&self) -> Observed<'_> {
            fn versioned(record: &Option<(u64, Option<Content>)>) -> Option<Versioned<'_>> {
                record.as_ref().map(|(version, content)| Versioned {
                    version: *version,
                    content: content.as_ref(),
                })
            }
            Observed {
                base: versioned(&self.base),
                local: self.local.as_ref(),
                remote: versioned(&self.remote),
            }
        }

        fn base_content(&self) -> Option<&Content> {
            self.base.as_ref().and_then(|(_, content)| content.as_ref())
        }

        fn remote_content(&self) -> Option<&Content> {
            self.remote
                .as_ref()
                .and_then(|(_, content)| content.as_ref())
        }

        fn remote_version(&self) -> u64 {
            self.remote.as_ref().map_or(0, |(version, _)| *version)
        }

        fn local_changed(&self) -> bool {
            self.local.as_ref() != self.base_content()
        }

        /// The state after the agent carried out `action` (and the server
        /// accepted what it sent), for this path only.
        fn after(&self, action: Action) -> Case {
            let mut next = self.clone();
            let next_version = self
                .remote_version()
                .max(self.base.as_ref().map_or(0, |b| b.0))
                + 1;
            match action {
                Action::Nothing | Action::KeepLocal => {}
                Action::RecordSynced => next.base = self.remote.clone(),
                Action::Upload { .. } | Action::CommitDelete { .. } => {
                    next.remote = Some((next_version, self.local.clone()));
                    next.base = next.remote.clone();
                }
                Action::Download | Action::DeleteLocal | Action::Conflict => {
                    // a conflict moves local aside (a new path) and downloads remote
                    next.local = self.remote_content().cloned();
                    next.base = self.remote.clone();
                }
            }
            next
        }
    }

    /// Few distinct contents, so that equal ones come up often.
    fn content() -> impl Strategy<Value = Content> {
        prop_oneof![
            (0u8..3, any::<bool>()).prop_map(|(seed, executable)| Content::File {
                content_hash: Hash::of(&[seed]),
                size: u64::from(seed),
                executable,
            }),
            Just(Content::Directory),
            prop_oneof![Just("a"), Just("b")].prop_map(|target| Content::Symlink {
                target: target.to_owned()
            }),
        ]
    }

    fn record() -> impl Strategy<Value = (u64, Option<Content>)> {
        (1u64..6, proptest::option::weighted(0.8, content()))
    }

    fn case() -> impl Strategy<Value = Case> {
        (
            proptest::option::weighted(0.8, record()),
            proptest::option::weighted(0.8, content()),
            proptest::option::weighted(0.8, record()),
        )
            .prop_map(|(base, local, remote)| Case {
                base,
                local,
                remote,
            })
    }

    fn mode() -> impl Strategy<Value = FolderMode> {
        prop_oneof![
            Just(FolderMode::TwoWay),
            Just(FolderMode::SendOnly),
            Just(FolderMode::ReceiveOnly),
        ]
    }

    /// A state where both sides are edited away from a common base.
    fn edited_case() -> impl Strategy<Value = (Content, Content, u64, u64)> {
        (content(), content(), 1u64..6, 0u64..6)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn an_unsynced_local_edit_is_never_deleted_or_overwritten(case in case(), mode in mode()) {
            let action = decide(case.observed(), mode);
            if case.local_changed() {
                prop_assert_ne!(action, Action::DeleteLocal);
                if case.local.is_some() {
                    prop_assert_ne!(action, Action::Download);
                }
            }
        }

        #[test]
        fn two_way_never_sends_what_it_did_not_change(case in case()) {
            let action = decide(case.observed(), FolderMode::TwoWay);
            if !case.local_changed() {
                prop_assert!(
                    !matches!(action, Action::Upload { .. } | Action::CommitDelete { .. }),
                    "{:?}", action
                );
            }
        }

        #[test]
        fn receive_only_never_sends_and_send_only_never_applies(case in case()) {
            let received = decide(case.observed(), FolderMode::ReceiveOnly);
            prop_assert!(
                !matches!(received, Action::Upload { .. } | Action::CommitDelete { .. }),
                "{:?}", received
            );
            let sent = decide(case.observed(), FolderMode::SendOnly);
            prop_assert!(
                !matches!(sent, Action::Download | Action::DeleteLocal | Action::Conflict),
                "{:?}", sent
            );
        }

        #[test]
        fn two_way_never_calls_equal_contents_a_conflict(case in case()) {
            let action = decide(case.observed(), FolderMode::TwoWay);
            if case.local.as_ref() == case.remote_content() {
                prop_assert!(
                    matches!(action, Action::Nothing | Action::RecordSynced),
                    "{:?}", action
                );
            }
        }

        #[test]
        fn modification_beats_deletion_on_either_side(
            (base, edit, base_version, bump) in edited_case(),
            mode in mode(),
        ) {
            prop_assume!(base != edit);
            let remote_version = base_version + bump;
            // deleted here, edited there
            let observed = Observed {
                base: at(base_version, Some(&base)),
                local: None,
                remote: at(remote_version + 1, Some(&edit)),
            };
            let action = decide(observed, mode);
            match mode {
                FolderMode::TwoWay | FolderMode::ReceiveOnly => {
                    prop_assert_eq!(action, Action::Download);
                }
                // the agent's copy is the truth: its delete goes out, and
                // the server keeps the edit in the path's history
                FolderMode::SendOnly => prop_assert_eq!(
                    action,
                    Action::CommitDelete { parent_version: remote_version + 1 }
                ),
            }
            // edited here, deleted there
            let observed = Observed {
                base: at(base_version, Some(&base)),
                local: Some(&edit),
                remote: at(remote_version + 1, None),
            };
            let action = decide(observed, mode);
            match mode {
                FolderMode::TwoWay | FolderMode::SendOnly => prop_assert_eq!(
                    action,
                    Action::Upload { parent_version: remote_version + 1 }
                ),
                FolderMode::ReceiveOnly => prop_assert_eq!(action, Action::KeepLocal),
            }
        }

        #[test]
        fn uploads_and_deletes_name_the_remote_version_as_parent(case in case(), mode in mode()) {
            match decide(case.observed(), mode) {
                Action::Upload { parent_version } => {
                    prop_assert!(case.local.is_some());
                    prop_assert_eq!(parent_version, case.remote_version());
                }
                Action::CommitDelete { parent_version } => {
                    prop_assert!(case.local.is_none());
                    prop_assert_eq!(parent_version, case.remote_version());
                }
                _ => {}
            }
        }

        #[test]
        fn recording_as_synced_needs_equal_contents(case in case(), mode in mode()) {
            let action = decide(case.observed(), mode);
            if action == Action::RecordSynced {
                prop_assert_eq!(case.local.as_ref(), case.remote_content());
            }
            if action == Action::Conflict {
                prop_assert!(case.local.is_some() && case.remote_content().is_some());
                prop_assert_ne!(case.local.as_ref(), case.remote_content());
            }
            if action == Action::Nothing && mode != FolderMode::SendOnly {
                prop_assert_eq!(case.local.as_ref(), case.remote_content());
            }
        }

        #[test]
        fn one_action_brings_the_path_to_rest(case in case(), mode in mode()) {
            let action = decide(case.observed(), mode);
            let next = case.after(action);
            let next_action = decide(next.observed(), mode);
            let at_rest = match action {
                Action::KeepLocal => Action::KeepLocal,
                _ => Action::Nothing,
            };
            prop_assert_eq!(next_action, at_rest, "after {:?} from {:?}", action, case);
        }
    }
}
