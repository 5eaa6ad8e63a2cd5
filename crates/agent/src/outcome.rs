//! What a cycle leaves for later.

use std::collections::BTreeSet;

use crate::deletion_guard::MassDeletion;

/// What a cycle leaves for later.
#[derive(Debug, Default)]
pub struct CycleOutcome {
    /// Paths to look at again right away (conflict copies, lost CAS races).
    pub follow_up: BTreeSet<String>,
    /// Paths that failed for a passing reason (file changing, server away): retry after a pause.
    pub retry: BTreeSet<String>,
    /// Changes applied (uploads, downloads, deletes, conflicts).
    pub n_applied: usize,
    /// Set when the mass-deletion guard stopped the cycle before it did anything.
    pub mass_deletion: Option<MassDeletion>,
}
