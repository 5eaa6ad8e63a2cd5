//! `cargo xtask manifests`: regenerates every file made from the chart, in
//! the order they depend on each other:
//!
//! 1. `charts/syncfolder/dashboards/*.json`, copies of `dashboards/*.json`
//!    (helm reads no file outside the chart);
//! 2. `manifests/syncfolder.yaml`, the chart rendered with `helm template`;
//! 3. `manifests/examples/<workload>-injected.yaml`, `syncfolder inject` of
//!    each plain example.
//!
//! The chart tests (`crates/syncfolder/tests/chart.rs`) fail when a
//! committed copy differs from what this writes; the definitions they share
//! are in `syncfolder_testkit::chart`.

use std::path::Path;

use anyhow::{Context, anyhow};
use syncfolder_testkit::chart::{
    CHART_DASHBOARDS_DIR, DASHBOARDS_DIR, EXAMPLE_WORKLOADS, INSTALL_MANIFEST_PATH, example_paths,
    json_files, render_install_manifest,
};
use syncfolder_testkit::tools::required_tool;

use crate::crdgen::syncfolder_output;
use crate::project_root;

pub fn run(_args: &[String]) -> anyhow::Result<()> {
    crate::kube_tools::ensure()?;
    copy_dashboards()?;
    write_install_manifest()?;
    write_injected_examples()
}

fn copy_dashboards() -> anyhow::Result<()> {
    let source_dir = project_root().join(DASHBOARDS_DIR);
    let chart_dir = project_root().join(CHART_DASHBOARDS_DIR);
    std::fs::create_dir_all(&chart_dir)
        .with_context(|| format!("creating {}", chart_dir.display()))?;
    for stale in json_files(&chart_dir) {
        std::fs::remove_file(&stale).with_context(|| format!("removing {}", stale.display()))?;
    }
    let sources = json_files(&source_dir);
    if sources.is_empty() {
        return Err(anyhow!("no dashboards in {}", source_dir.display()));
    }
    for source in sources {
        let name = source.file_name().context("a dashboard file name")?;
        let target = chart_dir.join(name);
        std::fs::copy(&source, &target)
            .with_context(|| format!("copying {} to {}", source.display(), target.display()))?;
        eprintln!("wrote {}", relative(&target));
    }
    Ok(())
}

fn write_install_manifest() -> anyhow::Result<()> {
    let helm = required_tool("helm");
    let manifest = render_install_manifest(&helm).map_err(|err| anyhow!(err))?;
    let path = project_root().join(INSTALL_MANIFEST_PATH);
    write(&path, &manifest)
}

fn write_injected_examples() -> anyhow::Result<()> {
    for workload in EXAMPLE_WORKLOADS {
        let (plain, injected) = example_paths(workload);
        let yaml = std::fs::read_to_string(&plain)
            .with_context(|| format!("reading the example {}", plain.display()))?;
        let rewritten = syncfolder_output(&["inject"], Some(&yaml))?;
        write(&injected, &rewritten)?;
    }
    Ok(())
}

fn write(path: &Path, contents: &str) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(path, contents).with_context(|| format!("writing {}", path.display()))?;
    eprintln!("wrote {}", relative(path));
    Ok(())
}

fn relative(path: &Path) -> String {
    path.strip_prefix(project_root())
        .unwrap_or(path)
        .display()
        .to_string()
}
