//! The Kubernetes tools that need no cluster: `syncfolder crd` and
//! `syncfolder inject`.

use std::io::{Read, Write};

use anyhow::Context;
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
        metrics_port: args.metrics_port,
        startup_timeout_seconds: args.startup_timeout_seconds,
        run_as_user: args.run_as_user,
        run_as_group: args.run_as_group,
        ..InjectSettings::default()
    }
    .with_resources(&args.cpu_request, &args.memory_request, &args.memory_limit)
}
