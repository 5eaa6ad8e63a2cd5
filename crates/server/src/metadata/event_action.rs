//! What an event of the change log says happened to a path.

/// The action of an event: its `action` column in the event log and the
/// `action` label of `syncfolder_file_changes_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventAction {
    /// A file where there was none (or only a tombstone or something else).
    Create,
    /// A file replacing a file.
    Modify,
    Delete,
    Mkdir,
    Symlink,
    /// A deletion and a creation of the same content in one batch.
    Rename,
    /// A file whose name is an agent's conflict copy.
    Conflict,
    /// An old version made current again.
    Restore,
}

impl EventAction {
    /// Every action, in the order the metrics list them.
    pub const ALL: [EventAction; 8] = [
        EventAction::Create,
        EventAction::Modify,
        EventAction::Delete,
        EventAction::Mkdir,
        EventAction::Symlink,
        EventAction::Rename,
        EventAction::Conflict,
        EventAction::Restore,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            EventAction::Create => "create",
            EventAction::Modify => "modify",
            EventAction::Delete => "delete",
            EventAction::Mkdir => "mkdir",
            EventAction::Symlink => "symlink",
            EventAction::Rename => "rename",
            EventAction::Conflict => "conflict",
            EventAction::Restore => "restore",
        }
    }
}

impl std::fmt::Display for EventAction {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn every_action_has_its_own_name() {
        let names: HashSet<&str> = EventAction::ALL
            .iter()
            .map(|action| action.as_str())
            .collect();
        assert_eq!(names.len(), EventAction::ALL.len());
        assert_eq!(EventAction::Rename.to_string(), "rename");
    }
}
