//! `cargo xtask crdgen`: writes the SyncFolder CRD that `syncfolder crd`
//! prints into the chart, where `crds.install` renders it. The controller's
//! unit test `the_committed_crd_is_the_generated_one` fails until this runs
//! after a change to `crates/controller/src/crd.rs`.

use std::process::Stdio;

use anyhow::{Context, bail};

use crate::{cargo, project_root};

/// The CRD's place in the chart (also `syncfolder_controller::crd::CRD_PATH`).
pub const CRD_PATH: &str = "charts/syncfolder/files/syncfolders.syncfolder.io.yaml";

pub fn run(_args: &[String]) -> anyhow::Result<()> {
    let crd = syncfolder_output(&["crd"], None)?;
    if !crd.contains("kind: CustomResourceDefinition") {
        bail!("`syncfolder crd` printed no CustomResourceDefinition");
    }
    let path = project_root().join(CRD_PATH);
    std::fs::write(&path, crd).with_context(|| format!("writing {}", path.display()))?;
    eprintln!("wrote {CRD_PATH}");
    Ok(())
}

/// Runs `cargo run --quiet -p syncfolder -- <args>` with `stdin` fed in and
/// returns its stdout; its stderr goes to the terminal.
pub fn syncfolder_output(args: &[&str], stdin: Option<&str>) -> anyhow::Result<String> {
    let mut command = cargo();
    command
        .args(["run", "--quiet", "-p", "syncfolder", "--"])
        .args(args)
        .current_dir(project_root())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let description = format!("syncfolder {}", args.join(" "));
    eprintln!("$ cargo run -p syncfolder -- {}", args.join(" "));
    let mut child = command
        .spawn()
        .with_context(|| format!("starting {description}"))?;
    if let Some(input) = stdin {
        use std::io::Write;
        child
            .stdin
            .take()
            .context("stdin of the child")?
            .write_all(input.as_bytes())
            .with_context(|| format!("writing to {description}"))?;
    }
    let output = child
        .wait_with_output()
        .with_context(|| format!("waiting for {description}"))?;
    if !output.status.success() {
        bail!("{description} failed ({})", output.status);
    }
    String::from_utf8(output.stdout).with_context(|| format!("{description} printed non-UTF-8"))
}
