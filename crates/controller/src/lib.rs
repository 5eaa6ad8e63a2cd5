//! syncfolder's Kubernetes side: the `SyncFolder` custom resource, sidecar
//! injection and the mutating admission webhook. Everything here is pure:
//! no cluster, no network, so all of it is tested with plain unit tests.
//!
//! - `crd.rs`: [`SyncFolder`] spec and status, [`crd_yaml`];
//! - `quota.rs`: `spec.quota` (a Kubernetes quantity) to bytes;
//! - `names.rs`: the server folder name and the Secret's name and keys;
//! - `annotations.rs`: `syncfolder.io/*` annotations to an [`InjectTarget`];
//! - `sidecar.rs`: [`InjectSettings`] and the sidecar container;
//! - `inject.rs`: [`inject`] and its JSON Patch [`plan`];
//! - `workloads.rs`: [`inject_workloads`], the YAML rewrite behind
//!   `syncfolder inject`;
//! - `webhook.rs`: [`admission_review`], the admission webhook's handler.
//!
//! Architecture invariant: the sidecar depends only on the SyncFolder's
//! *name*. Server URL, server folder name and token reach it through the
//! folder's Secret, written by the controller, so offline injection and the
//! webhook produce the same pod.

pub mod annotations;
pub mod crd;
pub mod inject;
pub mod names;
pub mod quota;
pub mod sidecar;
pub mod webhook;
pub mod workloads;

pub use annotations::InjectTarget;
pub use crd::{SyncFolder, SyncFolderSpec, SyncFolderStatus, crd_yaml};
pub use inject::{InjectError, inject, plan};
pub use quota::QuotaError;
pub use sidecar::InjectSettings;
pub use webhook::{AdmissionReviewResponse, WebhookError, admission_review};
pub use workloads::{InjectedWorkloads, WorkloadsError, inject_workloads};
