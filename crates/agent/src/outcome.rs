//! What a cycle leaves for later, and what a page of the change feed did.

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

/// What taking in a page of the change feed did.
#[derive(Debug, Default)]
pub struct PageTaken {
    /// Paths whose server record is news.
    pub touched: BTreeSet<String>,
    /// The engine forgot what it synced first (a listing from 0 that may
    /// leave out deletions the horizon forgot): the whole tree is due.
    pub started_afresh: bool,
}
