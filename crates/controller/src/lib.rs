//! syncfolder's Kubernetes side: the `SyncFolder` custom resource, sidecar
//! injection, the mutating admission webhook and the reconciler. All but the
//! reconciler is pure (no cluster, no network) and tested with plain unit
//! tests; the reconciler is tested against a mocked API server
//! (`fixtures.rs`) and its server side against a real in-process server.
//!
//! - `crd.rs`: [`SyncFolder`] spec and status, [`crd_yaml`];
//! - `quota.rs`: `spec.quota` (a Kubernetes quantity) to bytes;
//! - `names.rs`: the server folder name and the Secret's name and keys;
//! - `annotations.rs`: `syncfolder.io/*` annotations to an [`InjectTarget`];
//! - `sidecar.rs`: [`InjectSettings`] and the sidecar container;
//! - `inject.rs`: [`inject`] and its JSON Patch [`plan`];
//! - `workloads.rs`: [`inject_workloads`], the YAML rewrite behind
//!   `syncfolder inject`;
//! - `webhook.rs`: [`admission_review`], the admission webhook's handler;
//! - `controller.rs`: [`controller::Context`], [`controller::reconcile`],
//!   `error_policy`, [`controller::run`]; `apply.rs` and `cleanup.rs`: the
//!   two halves of a reconcile (live and being deleted);
//! - `server.rs`: the server's admin API as a trait ([`server::Servers`]),
//!   and its HTTP implementation;
//! - `secret.rs`: the folder's Secret; `status.rs`: the next status;
//! - `metrics.rs`: the controller's Prometheus metrics;
//! - `ca.rs`, `pki.rs`: the controller's CA, its renewal, the certificates
//!   it issues and their Secrets; `certificate.rs`: the CA bundle in the
//!   webhook configuration; `trust.rs`: the bundle in every SyncFolder
//!   namespace, for the sidecars.
//!
//! Architecture invariant: the sidecar depends only on the SyncFolder's
//! *name*. Server URL, server folder name and token reach it through the
//! folder's Secret, written by the controller, so offline injection and the
//! webhook produce the same pod.

pub mod annotations;
mod apply;
pub mod ca;
pub mod certificate;
mod cleanup;
pub mod controller;
pub mod crd;
pub mod inject;
pub mod leader;
pub mod metrics;
pub mod names;
pub mod pki;
pub mod process;
pub mod quota;
pub mod secret;
pub mod server;
pub mod sidecar;
pub mod status;
pub mod trust;
pub mod webhook;
pub mod webhook_server;
pub mod workloads;

#[cfg(test)]
mod fixtures;
#[cfg(test)]
mod rbac;

pub use annotations::InjectTarget;
pub use crd::{SyncFolder, SyncFolderSpec, SyncFolderStatus, crd_yaml};
pub use inject::{InjectError, inject, plan};
pub use quota::QuotaError;
pub use sidecar::InjectSettings;
pub use webhook::{AdmissionReviewResponse, WebhookError, admission_review};
pub use workloads::{InjectedWorkloads, WorkloadsError, inject_workloads};

use server::ServerError;

/// Everything a reconcile can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API request failed: {0}")]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    Server(#[from] ServerError),
    #[error("spec.quota: {0}")]
    Quota(#[from] QuotaError),
    #[error("spec.server: {0}")]
    InvalidServer(&'static str),
    #[error(
        "spec.server.adminTokenSecret: Secret {name:?} in namespace {namespace:?} has no key {key:?}: create it with the server's admin token"
    )]
    AdminTokenSecret {
        namespace: String,
        name: String,
        key: String,
    },
    #[error("the SyncFolder has no namespace")]
    MissingNamespace,
    #[error("{0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A short kind for logs and the failure metric's label.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kubernetes",
            Error::Server(ServerError::Unreachable { .. }) => "server_unreachable",
            Error::Server(ServerError::Refused { .. }) => "server_refused",
            Error::Quota(_) | Error::InvalidServer(_) => "invalid_spec",
            Error::AdminTokenSecret { .. } => "admin_token_missing",
            Error::MissingNamespace => "invalid_object",
            Error::Finalizer(inner) => match inner.as_ref() {
                kube::runtime::finalizer::Error::ApplyFailed(err)
                | kube::runtime::finalizer::Error::CleanupFailed(err) => err.metric_label(),
                _ => "kubernetes",
            },
        }
    }
}
