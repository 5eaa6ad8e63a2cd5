//! `cargo xtask kind-test [--keep]`: everything the chart promises, on a real
//! cluster. Builds the image, creates a kind cluster (Kubernetes
//! [`NODE_IMAGE`]), loads the image, installs the chart, applies the
//! examples (the webhook injects the sidecars), writes a file in the writer
//! pod and waits for it in the reader pod, deletes the reader pod and checks
//! the file is there again when its replacement starts, checks the
//! SyncFolder's status and Events, and deletes the cluster, also when a step
//! fails (`--keep` keeps it for a look).
//!
//! Needs docker (with a running engine), kind, kubectl and helm; when one is
//! missing it names every missing one and fails.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use syncfolder_testkit::chart::{CHART_DIR, EXAMPLES_DIR};
use syncfolder_testkit::tools::find_tool;

use crate::project_root;

/// The programs kind-test drives.
const REQUIRED_TOOLS: [&str; 4] = ["docker", "kind", "kubectl", "helm"];
/// The oldest Kubernetes the chart supports.
const NODE_IMAGE: &str = "kindest/node:v1.33.1";
const CLUSTER_NAME: &str = "syncfolder-kind-test";
const IMAGE_REPOSITORY: &str = "syncfolder/syncfolder";
const IMAGE_TAG: &str = "kind-test";
const NAMESPACE: &str = "syncfolder-system";
/// Where the examples run.
const EXAMPLES_NAMESPACE: &str = "default";
const TEST_FILE: &str = "kind-test.txt";
const TEST_CONTENT: &str = "written in the writer pod";
const PATIENCE: Duration = Duration::from_secs(300);

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let keep_cluster = args.iter().any(|arg| arg == "--keep");
    let tools = Tools::find()?;
    tools.check_docker_engine()?;
    build_image(&tools)?;
    let cluster = Cluster::create(&tools, keep_cluster)?;
    let outcome = run_scenario(&cluster);
    if let Err(err) = &outcome {
        eprintln!("kind-test failed: {err:#}\n--- what the cluster looked like ---");
        cluster.dump_diagnostics();
    }
    drop(cluster);
    outcome?;
    println!(
        "kind-test: the chart installs, injects, syncs and restores on Kubernetes {NODE_IMAGE}"
    );
    Ok(())
}

/// The programs found, or an error naming every one that is missing.
struct Tools {
    docker: PathBuf,
    kind: PathBuf,
    kubectl: PathBuf,
    helm: PathBuf,
}

impl Tools {
    fn find() -> anyhow::Result<Tools> {
        Self::find_with(find_tool)
    }

    fn find_with(lookup: impl Fn(&str) -> Option<PathBuf>) -> anyhow::Result<Tools> {
        let missing = missing_tools(|name| lookup(name).is_some());
        if !missing.is_empty() {
            bail!(
                "kind-test needs {} and cannot find {} (neither on the PATH nor in target/tools): \
                 install them (`cargo xtask deps` installs helm and kubectl; docker and kind come \
                 from their own packages)",
                REQUIRED_TOOLS.join(", "),
                missing.join(", ")
            );
        }
        let path = |name: &str| lookup(name).context(format!("{name} vanished"));
        Ok(Tools {
            docker: path("docker")?,
            kind: path("kind")?,
            kubectl: path("kubectl")?,
            helm: path("helm")?,
        })
    }

    fn check_docker_engine(&self) -> anyhow::Result<()> {
        let answers = Command::new(&self.docker)
            .args(["info", "--format", "{{.ServerVersion}}"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        if !answers {
            bail!(
                "docker is installed but no Docker engine answers (`docker info` fails): start one"
            );
        }
        Ok(())
    }
}

/// The names in [`REQUIRED_TOOLS`] that `is_present` does not find, in order.
fn missing_tools(is_present: impl Fn(&str) -> bool) -> Vec<&'static str> {
    REQUIRED_TOOLS
        .into_iter()
        .filter(|name| !is_present(name))
        .collect()
}

fn build_image(tools: &Tools) -> anyhow::Result<()> {
    capture(
        Command::new(&tools.docker)
            .args(["build", "--tag", &image(), "."])
            .current_dir(project_root()),
    )
    .map(drop)
}

fn image() -> String {
    format!("{IMAGE_REPOSITORY}:{IMAGE_TAG}")
}

/// The kind cluster; deleted when dropped unless asked to keep it.
struct Cluster<'a> {
    tools: &'a Tools,
    keep: bool,
}

impl<'a> Cluster<'a> {
    fn create(tools: &'a Tools, keep: bool) -> anyhow::Result<Cluster<'a>> {
        // a cluster left by an earlier run with --keep
        let _ =
            capture(Command::new(&tools.kind).args(["delete", "cluster", "--name", CLUSTER_NAME]));
        capture(Command::new(&tools.kind).args([
            "create",
            "cluster",
            "--name",
            CLUSTER_NAME,
            "--image",
            NODE_IMAGE,
            "--wait",
            "180s",
        ]))?;
        let cluster = Cluster { tools, keep };
        capture(Command::new(&tools.kind).args([
            "load",
            "docker-image",
            &image(),
            "--name",
            CLUSTER_NAME,
        ]))?;
        Ok(cluster)
    }

    fn context() -> String {
        format!("kind-{CLUSTER_NAME}")
    }

    fn kubectl(&self, namespace: &str, args: &[&str]) -> anyhow::Result<String> {
        capture(
            Command::new(&self.tools.kubectl)
                .args(["--context", &Self::context(), "--namespace", namespace])
                .args(args)
                .current_dir(project_root()),
        )
    }

    fn helm(&self, args: &[&str]) -> anyhow::Result<String> {
        capture(
            Command::new(&self.tools.helm)
                .args(["--kube-context", &Self::context()])
                .args(args)
                .current_dir(project_root()),
        )
    }

    fn dump_diagnostics(&self) {
        for (namespace, args) in [
            (
                NAMESPACE,
                vec!["get", "all,sf,secrets,leases", "-o", "wide"],
            ),
            (
                EXAMPLES_NAMESPACE,
                vec!["get", "all,sf,events", "-o", "wide"],
            ),
            (EXAMPLES_NAMESPACE, vec!["describe", "pods"]),
            (
                NAMESPACE,
                vec!["logs", "deployment/syncfolder-controller", "--tail", "100"],
            ),
            (
                NAMESPACE,
                vec!["logs", "deployment/syncfolder-server", "--tail", "100"],
            ),
        ] {
            match self.kubectl(namespace, &args) {
                Ok(output) => eprintln!("{output}"),
                Err(err) => eprintln!("{err:#}"),
            }
        }
    }
}

impl Drop for Cluster<'_> {
    fn drop(&mut self) {
        if self.keep {
            eprintln!(
                "keeping the cluster: kubectl --context {}; delete it with kind delete cluster --name {CLUSTER_NAME}",
                Self::context()
            );
            return;
        }
        if let Err(err) = capture(Command::new(&self.tools.kind).args([
            "delete",
            "cluster",
            "--name",
            CLUSTER_NAME,
        ])) {
            eprintln!("deleting the kind cluster failed: {err:#}");
        }
    }
}

fn run_scenario(cluster: &Cluster) -> anyhow::Result<()> {
    install_chart(cluster)?;
    apply_examples(cluster)?;
    let writer_pod = running_pod(cluster, "writer")?;
    let reader_pod = running_pod(cluster, "reader")?;

    cluster.kubectl(
        EXAMPLES_NAMESPACE,
        &[
            "exec",
            &writer_pod,
            "-c",
            "writer",
            "--",
            "sh",
            "-c",
            &format!("printf '%s' '{TEST_CONTENT}' > /data/{TEST_FILE}"),
        ],
    )?;
    wait_for(
        "the file written in the writer pod to appear in the reader pod",
        || Ok(read_test_file(cluster, &reader_pod)?.as_deref() == Some(TEST_CONTENT)),
    )?;

    cluster.kubectl(
        EXAMPLES_NAMESPACE,
        &["delete", "pod", &reader_pod, "--wait=true"],
    )?;
    let new_reader_pod = running_pod(cluster, "reader")?;
    if new_reader_pod == reader_pod {
        bail!("the reader pod {reader_pod} was not replaced");
    }
    // the startup probe holds the application until the first full sync:
    // once the new pod is ready the file must already be there
    let restored = read_test_file(cluster, &new_reader_pod)?;
    if restored.as_deref() != Some(TEST_CONTENT) {
        bail!(
            "the new reader pod {new_reader_pod} started without {TEST_FILE} (found {restored:?})"
        );
    }

    check_status_and_events(cluster)
}

fn install_chart(cluster: &Cluster) -> anyhow::Result<()> {
    let set = |pair: &str| ["--set".to_owned(), pair.to_owned()];
    let mut args: Vec<String> = [
        "install",
        "syncfolder",
        CHART_DIR,
        "--namespace",
        NAMESPACE,
        "--create-namespace",
        "--wait",
        "--timeout",
        "5m",
    ]
    .iter()
    .map(|arg| (*arg).to_owned())
    .collect();
    for pair in [
        format!("image.repository={IMAGE_REPOSITORY}"),
        format!("image.tag={IMAGE_TAG}"),
        "image.pullPolicy=Never".to_owned(),
        "sidecar.imagePullPolicy=Never".to_owned(),
    ] {
        args.extend(set(&pair));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    cluster.helm(&args).map(drop)
}

fn apply_examples(cluster: &Cluster) -> anyhow::Result<()> {
    for example in ["shared-syncfolder.yaml", "writer.yaml", "reader.yaml"] {
        let path = format!("{EXAMPLES_DIR}/{example}");
        cluster.kubectl(EXAMPLES_NAMESPACE, &["apply", "-f", &path])?;
    }
    cluster.kubectl(
        EXAMPLES_NAMESPACE,
        &[
            "wait",
            "--for=condition=Ready",
            "syncfolder/shared",
            "--timeout=180s",
        ],
    )?;
    for deployment in ["deployment/writer", "deployment/reader"] {
        cluster.kubectl(
            EXAMPLES_NAMESPACE,
            &["rollout", "status", deployment, "--timeout=300s"],
        )?;
    }
    Ok(())
}

/// The name of the Ready pod of an example Deployment (label `app=<name>`),
/// after checking the webhook gave it the sidecar.
fn running_pod(cluster: &Cluster, app: &str) -> anyhow::Result<String> {
    let mut pod = String::new();
    wait_for(&format!("one ready {app} pod"), || {
        let names = cluster.kubectl(
            EXAMPLES_NAMESPACE,
            &[
                "get",
                "pods",
                "-l",
                &format!("app={app}"),
                "--field-selector",
                "status.phase=Running",
                "-o",
                "jsonpath={range .items[*]}{.metadata.name}{\" \"}{.metadata.deletionTimestamp}{\" \"}{.status.conditions[?(@.type==\"Ready\")].status}{\"\\n\"}{end}",
            ],
        )?;
        // "<name> <deletionTimestamp, empty unless terminating> <Ready status>"
        let ready: Vec<&str> = names
            .lines()
            .filter_map(
                |line| match line.split(' ').collect::<Vec<_>>().as_slice() {
                    [name, "", "True"] => Some(*name),
                    _ => None,
                },
            )
            .collect();
        if let [only] = ready.as_slice() {
            pod = (*only).to_owned();
            return Ok(true);
        }
        Ok(false)
    })?;
    let init_containers = cluster.kubectl(
        EXAMPLES_NAMESPACE,
        &[
            "get",
            "pod",
            &pod,
            "-o",
            "jsonpath={.spec.initContainers[*].name}",
        ],
    )?;
    if !init_containers
        .split_whitespace()
        .any(|name| name == "syncfolder-agent")
    {
        bail!(
            "the webhook did not inject the sidecar into {pod} (init containers: {init_containers:?})"
        );
    }
    Ok(pod)
}

fn read_test_file(cluster: &Cluster, pod: &str) -> anyhow::Result<Option<String>> {
    let path = format!("/data/{TEST_FILE}");
    let output = Command::new(&cluster.tools.kubectl)
        .args([
            "--context",
            &Cluster::context(),
            "--namespace",
            EXAMPLES_NAMESPACE,
            "exec",
            pod,
            "-c",
            "reader",
            "--",
            "cat",
            &path,
        ])
        .output()
        .context("running kubectl exec")?;
    Ok(output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).into_owned()))
}

fn check_status_and_events(cluster: &Cluster) -> anyhow::Result<()> {
    let jsonpath = |path: &str| {
        cluster.kubectl(
            EXAMPLES_NAMESPACE,
            &[
                "get",
                "syncfolder",
                "shared",
                "-o",
                &format!("jsonpath={path}"),
            ],
        )
    };
    wait_for(
        "status.files of SyncFolder shared to count the file",
        || {
            Ok(jsonpath("{.status.files}")?
                .trim()
                .parse::<u64>()
                .unwrap_or(0)
                >= 1)
        },
    )?;
    let ready = jsonpath("{.status.conditions[?(@.type==\"Ready\")].status}")?;
    if ready.trim() != "True" {
        bail!("SyncFolder shared is not Ready: {ready:?}");
    }
    let events = cluster.kubectl(
        EXAMPLES_NAMESPACE,
        &[
            "get",
            "events",
            "--field-selector",
            "involvedObject.kind=SyncFolder,involvedObject.name=shared",
            "-o",
            "name",
        ],
    )?;
    if events.trim().is_empty() {
        bail!("the controller recorded no Event for SyncFolder shared");
    }
    Ok(())
}

/// Polls `condition` every 2 s for up to [`PATIENCE`]; errors count as "not yet".
fn wait_for(what: &str, mut condition: impl FnMut() -> anyhow::Result<bool>) -> anyhow::Result<()> {
    let deadline = Instant::now() + PATIENCE;
    let mut last_error = None;
    while Instant::now() < deadline {
        match condition() {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(err) => last_error = Some(err),
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    match last_error {
        Some(err) => Err(err.context(format!("timed out waiting for {what}"))),
        None => bail!("timed out waiting for {what}"),
    }
}

/// Runs a command, echoing it, and returns its stdout.
fn capture(command: &mut Command) -> anyhow::Result<String> {
    let description = format!("{command:?}");
    eprintln!("$ {description}");
    let output = command
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("starting {description}"))?;
    if !output.status.success() {
        bail!("{description} failed ({})", output.status);
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_missing_tool_is_named_in_order() {
        let present = ["kubectl"];
        assert_eq!(
            missing_tools(|name| present.contains(&name)),
            vec!["docker", "kind", "helm"]
        );
    }

    #[test]
    fn nothing_is_missing_when_everything_is_found() {
        assert!(missing_tools(|_| true).is_empty());
    }

    #[test]
    fn the_error_names_each_missing_tool_and_only_those() {
        let found = |name: &str| {
            ["kubectl", "helm"]
                .contains(&name)
                .then(|| PathBuf::from(name))
        };
        let err = Tools::find_with(found)
            .err()
            .expect("docker and kind are missing");
        let message = format!("{err:#}");
        assert!(message.contains("cannot find docker, kind "), "{message}");
        assert!(!message.contains("cannot find docker, kind, "), "{message}");
    }

    #[test]
    fn all_tools_found_is_no_error() {
        let tools = Tools::find_with(|name| Some(PathBuf::from(format!("/opt/bin/{name}"))))
            .expect("nothing missing");
        assert_eq!(tools.kind, PathBuf::from("/opt/bin/kind"));
        assert_eq!(tools.helm, PathBuf::from("/opt/bin/helm"));
    }
}
