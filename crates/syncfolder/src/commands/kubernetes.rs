//! The Kubernetes tools that need no cluster: `syncfolder crd` and
//! `syncfolder inject`.

use std::collections::BTreeMap;
use std::io::{Read, Write};

use anyhow::Context;
use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use syncfolder_controller::InjectSettings;

use crate::cli::{InjectArgs, SidecarArgs};

pub fn crd() -> anyhow::Result<()> {
    std::io::stdout()
        .write_all(syncfolder_controller::crd_yaml().as_bytes())
        .context("writing to stdout")
}

pub fn inject(args: InjectArgs) -> anyhow::Result<()> {
    let settings = inject_settings(&args.sidecar);
    let mut input = String::new();
    std::io::stdin()
        .read_to_string(&mut input)
        .context("reading YAML from stdin")?;
    let injected = syncfolder_controller::inject_workloads(&input, &settings)?;
    std::io::stdout()
        .write_all(injected.yaml.as_bytes())
        .context("writing to stdout")?;
    for workload in &injected.workloads {
        eprintln!(
            "{} {:?}: {} (SyncFolder {:?})",
            workload.kind,
            workload.name,
            if workload.changed {
                "sidecar injected"
            } else {
                "sidecar already there"
            },
            workload.folder,
        );
    }
    if injected.workloads.is_empty() {
        eprintln!(
            "no workload asked for a sidecar: annotate the pod template with syncfolder.io/folder and syncfolder.io/volume"
        );
    }
    Ok(())
}

/// The sidecar settings the flags describe; the webhook uses the same.
pub fn inject_settings(args: &SidecarArgs) -> InjectSettings {
    InjectSettings {
        image: args.image.clone(),
        image_pull_policy: args.image_pull_policy.clone(),
        resources: ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".to_owned(), Quantity(args.cpu_request.clone())),
                ("memory".to_owned(), Quantity(args.memory_request.clone())),
            ])),
            limits: Some(BTreeMap::from([(
                "memory".to_owned(),
                Quantity(args.memory_limit.clone()),
            )])),
            ..ResourceRequirements::default()
        },
        metrics_port: args.metrics_port,
        startup_timeout_seconds: args.startup_timeout_seconds,
        run_as_user: args.run_as_user,
        run_as_group: args.run_as_group,
    }
}
