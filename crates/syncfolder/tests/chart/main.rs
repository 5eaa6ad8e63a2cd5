//! The Helm chart, checked with the real tools (`cargo xtask deps` installs
//! them into `target/tools`; a missing one fails, never skips):
//!
//! - `validity.rs`: `helm lint --strict`, strict Kubernetes 1.33 validation
//!   of every rendered object (`kubernetes-validate`), checks of the custom
//!   resources it cannot validate, `values.schema.json` refusing bad values;
//! - `workloads.rs`: what server and controller run with — environment,
//!   probes, secure defaults, RBAC, the webhook configuration;
//! - `monitoring.rs`: alerts through `promtool`, metric names, dashboards;
//! - `generated.rs`: committed files equal what they are generated from
//!   (install manifest, dashboards, injected examples, CRD template), and the
//!   webhook's sidecar settings equal `syncfolder inject`'s;
//! - `examples.rs`: the example SyncFolder against the CRD's schema and the
//!   example workloads against Kubernetes';
//! - `scale_out.rs`: scale-out mode (PostgreSQL metadata, S3 chunks, several
//!   server replicas) and the values it refuses;
//! - `runs.rs`: what the chart says is what runs — the rendered server and
//!   the injected sidecars as real processes, syncing a file.
//!
//! Support: `render.rs` (helm template), `kubernetes_validate.rs`,
//! `crd_schema.rs`, `promtool.rs`, and the integration tests' `support`
//! (processes, ports, waiting).

mod crd_schema;
mod kubernetes_validate;
mod promtool;
mod render;
#[path = "../support/mod.rs"]
mod support;

mod examples;
mod generated;
mod monitoring;
mod runs;
mod scale_out;
mod validity;
mod workloads;

/// The `syncfolder` binary these tests run (`syncfolder inject`).
pub const BINARY: &str = env!("CARGO_BIN_EXE_syncfolder");
