//! Committed files that are generated (`cargo xtask manifests`, `cargo xtask
//! crdgen`) must equal what they are generated from.

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::Value;
use syncfolder_testkit::chart::{
    CHART_DASHBOARDS_DIR, CHART_DIR, DASHBOARDS_DIR, EXAMPLE_WORKLOADS, INSTALL_MANIFEST_PATH,
    example_paths, json_files, render_install_manifest,
};
use syncfolder_testkit::tools::project_root;

use crate::BINARY;
use crate::render::{
    EVERYTHING_ON_FULLNAME, container, containers, env, parse_documents, pod_spec, template,
    template_everything_on,
};

const REGENERATE: &str = "run `cargo xtask manifests` and commit the result";

fn read(relative: &str) -> String {
    let path = project_root().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("reading {}: {err}", path.display()))
}

#[test]
fn the_install_manifest_is_the_chart_rendered_fresh() {
    let fresh =
        render_install_manifest(&crate::render::helm()).unwrap_or_else(|err| panic!("{err}"));
    let committed = read(INSTALL_MANIFEST_PATH);
    assert!(
        committed == fresh,
        "{INSTALL_MANIFEST_PATH} differs from the chart: {REGENERATE}"
    );
    // the committed file carries no admin token: its readers would all share it
    let objects = parse_documents(&committed);
    assert!(
        objects.iter().all(|object| object["kind"] != "Secret"),
        "{INSTALL_MANIFEST_PATH} must not carry a Secret"
    );
    assert!(
        committed
            .contains("kubectl -n syncfolder-system create secret generic syncfolder-admin-token")
    );
}

#[test]
fn the_charts_dashboards_are_copies_of_the_repositorys() {
    let originals = json_files(&project_root().join(DASHBOARDS_DIR));
    let copies = json_files(&project_root().join(CHART_DASHBOARDS_DIR));
    let names = |paths: &[std::path::PathBuf]| -> Vec<String> {
        paths
            .iter()
            .filter_map(|path| path.file_name()?.to_str().map(str::to_owned))
            .collect()
    };
    assert!(!originals.is_empty());
    assert_eq!(names(&originals), names(&copies), "{REGENERATE}");
    for (original, copy) in originals.iter().zip(&copies) {
        assert!(
            std::fs::read(original).ok() == std::fs::read(copy).ok(),
            "{} differs from {}: {REGENERATE}",
            copy.display(),
            original.display()
        );
    }
}

#[test]
fn the_crd_template_renders_the_committed_crd_unchanged() {
    let crd_file = read(&format!("{CHART_DIR}/files/syncfolders.syncfolder.io.yaml"));
    let rendered = template(&[]);
    let crd = rendered.get("CustomResourceDefinition", "syncfolders.syncfolder.io");
    assert_eq!(crd, &parse_documents(&crd_file)[0]);
    assert_eq!(
        crd["metadata"]["annotations"]["helm.sh/resource-policy"], "keep",
        "uninstalling must not delete every SyncFolder"
    );
    assert!(
        template(&["--set", "crds.install=false"])
            .find("CustomResourceDefinition", "syncfolders.syncfolder.io")
            .is_none()
    );
}

/// `syncfolder inject` of `yaml` with the given environment (and no other
/// `SYNCFOLDER_*` variable).
fn inject(yaml: &str, environment: &[(String, String)]) -> String {
    let mut command = Command::new(BINARY);
    command.arg("inject");
    for (name, _) in std::env::vars() {
        if name.starts_with("SYNCFOLDER_") {
            command.env_remove(name);
        }
    }
    let mut child = command
        .envs(environment.iter().map(|(name, value)| (name, value)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run syncfolder inject");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(yaml.as_bytes())
        .expect("feed syncfolder inject");
    let output = child.wait_with_output().expect("syncfolder inject");
    assert!(
        output.status.success(),
        "syncfolder inject failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("UTF-8")
}

#[test]
fn the_injected_examples_are_syncfolder_inject_of_the_plain_ones() {
    for workload in EXAMPLE_WORKLOADS {
        let (plain, injected) = example_paths(workload);
        let plain_yaml = std::fs::read_to_string(&plain).expect("plain example");
        let committed = std::fs::read_to_string(&injected).expect("injected example");
        assert!(
            inject(&plain_yaml, &[]) == committed,
            "{} is not `syncfolder inject < {}`: {REGENERATE}",
            injected.display(),
            plain.display()
        );
        // and injecting again changes nothing
        assert!(
            inject(&committed, &[]) == committed,
            "{workload}: inject is not idempotent"
        );
    }
}

/// The sidecar settings the chart gives the controller's webhook, as the
/// environment `syncfolder inject` reads.
fn sidecar_environment(controller: &Value) -> Vec<(String, String)> {
    const SIDECAR_SETTINGS: [&str; 9] = [
        "SYNCFOLDER_IMAGE",
        "SYNCFOLDER_IMAGE_PULL_POLICY",
        "SYNCFOLDER_METRICS_PORT",
        "SYNCFOLDER_STARTUP_TIMEOUT_SECONDS",
        "SYNCFOLDER_RUN_AS_USER",
        "SYNCFOLDER_RUN_AS_GROUP",
        "SYNCFOLDER_SIDECAR_CPU_REQUEST",
        "SYNCFOLDER_SIDECAR_MEMORY_REQUEST",
        "SYNCFOLDER_SIDECAR_MEMORY_LIMIT",
    ];
    env(container(controller, "controller"))
        .into_iter()
        .filter(|(name, _)| SIDECAR_SETTINGS.contains(&name.as_str()))
        .map(|(name, value)| {
            let value = value
                .as_str()
                .unwrap_or_else(|| panic!("{name} is not a plain value"))
                .to_owned();
            (name, value)
        })
        .collect()
}

#[test]
fn with_the_default_values_the_webhook_injects_what_syncfolder_inject_writes() {
    let rendered = template(&[]);
    let environment = sidecar_environment(rendered.get("Deployment", "syncfolder-controller"));
    assert_eq!(
        environment.len(),
        7,
        "run-as user and group unset: {environment:?}"
    );
    for workload in EXAMPLE_WORKLOADS {
        let (plain, injected) = example_paths(workload);
        let plain_yaml = std::fs::read_to_string(&plain).expect("plain example");
        let committed = std::fs::read_to_string(&injected).expect("injected example");
        assert!(
            inject(&plain_yaml, &environment) == committed,
            "the chart's default sidecar settings differ from syncfolder inject's defaults ({workload})"
        );
    }
}

#[test]
fn every_sidecar_value_of_the_chart_reaches_the_injected_sidecar() {
    let rendered = template_everything_on();
    let controller = rendered.get(
        "Deployment",
        &format!("{EVERYTHING_ON_FULLNAME}-controller"),
    );
    let environment = sidecar_environment(controller);
    assert_eq!(environment.len(), 9, "{environment:?}");
    let (plain, _) = example_paths("writer");
    let plain_yaml = std::fs::read_to_string(plain).expect("writer example");
    let injected = parse_documents(&inject(&plain_yaml, &environment));
    let spec = pod_spec(&injected[0]).expect("a Deployment");
    let sidecar = containers(spec)
        .into_iter()
        .find(|container| container["name"] == "syncfolder-agent")
        .expect("the sidecar");
    assert_eq!(sidecar["image"], "syncfolder/syncfolder:0.1.0-debug");
    assert_eq!(sidecar["imagePullPolicy"], "Always");
    assert_eq!(sidecar["ports"][0]["containerPort"], 19477);
    assert_eq!(sidecar["ports"][0]["name"], "sf-metrics");
    assert_eq!(sidecar["startupProbe"]["httpGet"]["port"], 19477);
    // 600 s at one probe every 2 s
    assert_eq!(sidecar["startupProbe"]["failureThreshold"], 300);
    assert_eq!(sidecar["securityContext"]["runAsUser"], 1000);
    assert_eq!(sidecar["securityContext"]["runAsGroup"], 1000);
    assert_eq!(sidecar["resources"]["requests"]["cpu"], "100m");
    assert_eq!(sidecar["resources"]["requests"]["memory"], "128Mi");
    assert_eq!(sidecar["resources"]["limits"]["memory"], "512Mi");
}

#[test]
fn the_chart_installs_the_image_of_this_version_everywhere() {
    let chart = parse_documents(&read(&format!("{CHART_DIR}/Chart.yaml"))).remove(0);
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(chart["appVersion"], version, "Chart.yaml appVersion");
    assert_eq!(chart["apiVersion"], "v2");
    assert_eq!(chart["kubeVersion"], ">=1.33.0-0");
    let image = format!("syncfolder/syncfolder:{version}");
    let rendered = template(&[]);
    for (workload, spec) in rendered.pod_specs() {
        for container in containers(spec) {
            assert_eq!(container["image"], image, "{workload}");
        }
    }
    for workload in EXAMPLE_WORKLOADS {
        let (_, injected) = example_paths(workload);
        let text = std::fs::read_to_string(injected).expect("injected example");
        assert!(
            text.contains(&format!("image: {image}")),
            "{workload}-injected.yaml"
        );
    }
}

/// Image references in the repository's deployable files name no registry
/// host: the runtime's configuration decides where images come from.
#[test]
fn no_deployable_file_names_a_registry_host() {
    let mut files = vec![project_root().join("Dockerfile")];
    for dir in [
        CHART_DIR,
        "manifests",
        "manifests/examples",
        "charts/syncfolder/templates",
        "charts/syncfolder/ci",
    ] {
        for entry in std::fs::read_dir(project_root().join(dir))
            .expect("directory")
            .flatten()
        {
            let path = entry.path();
            if path.is_file() {
                files.push(path);
            }
        }
    }
    for path in files {
        let text = std::fs::read_to_string(&path).expect("text file");
        for line in text.lines() {
            let reference = line
                .trim()
                .trim_start_matches("- ")
                .strip_prefix("image:")
                .or_else(|| line.trim().strip_prefix("FROM "))
                .or_else(|| line.trim().strip_prefix("repository:"));
            let Some(reference) = reference else { continue };
            let reference = reference.trim().trim_matches('"');
            let first_part = reference.split('/').next().unwrap_or_default();
            let names_host = reference.contains('/')
                && (first_part.contains('.')
                    || first_part.contains(':')
                    || first_part == "localhost");
            assert!(!names_host, "{}: {line}", path.display());
        }
    }
}
