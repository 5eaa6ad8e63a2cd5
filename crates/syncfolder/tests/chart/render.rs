//! Rendering the chart with the real helm and reading what it printed.

use std::path::PathBuf;

use serde::Deserialize;
use serde_json::Value;
use syncfolder_testkit::chart::{helm_template_args, run_helm};
use syncfolder_testkit::tools::{project_root, required_tool};

/// The release and namespace every test renders for.
pub const RELEASE: &str = "syncfolder";
pub const NAMESPACE: &str = "syncfolder-system";
/// The values file that turns every toggle away from its default.
pub const EVERYTHING_ON_VALUES: &str = "charts/syncfolder/ci/everything-on-values.yaml";
/// The resource-name prefix `everything-on-values.yaml` sets (`fullnameOverride`).
pub const EVERYTHING_ON_FULLNAME: &str = "sf";
/// The values file of scale-out mode: metadata in PostgreSQL, chunks in S3,
/// three server replicas.
pub const SCALE_OUT_VALUES: &str = "charts/syncfolder/ci/scale-out-values.yaml";
/// Where the chart's example values files live; chart-testing (and the
/// lint and validation tests) take every `*-values.yaml` there.
pub const CI_VALUES_DIR: &str = "charts/syncfolder/ci";

pub fn helm() -> PathBuf {
    required_tool("helm")
}

/// The chart rendered by `helm template`, as text and as objects.
#[derive(Debug)]
pub struct Rendered {
    pub yaml: String,
    pub objects: Vec<Value>,
}

/// Renders with the chart's defaults plus `extra` helm arguments; a failure
/// fails the test with helm's message.
pub fn template(extra: &[&str]) -> Rendered {
    let yaml = try_template(extra).unwrap_or_else(|err| panic!("{err}"));
    Rendered::parse(yaml)
}

/// Renders with every toggle on.
pub fn template_everything_on() -> Rendered {
    let values = everything_on_values();
    template(&["--values", &values])
}

pub fn everything_on_values() -> String {
    project_root()
        .join(EVERYTHING_ON_VALUES)
        .to_string_lossy()
        .into_owned()
}

/// Renders in scale-out mode, plus `extra` helm arguments.
pub fn template_scale_out(extra: &[&str]) -> Rendered {
    let values = project_root()
        .join(SCALE_OUT_VALUES)
        .to_string_lossy()
        .into_owned();
    let mut args = vec!["--values", values.as_str()];
    args.extend_from_slice(extra);
    template(&args)
}

/// Every `ci/*-values.yaml` of the chart, by file name.
pub fn ci_values_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(project_root().join(CI_VALUES_DIR))
        .expect("the chart's ci directory")
        .map(|entry| entry.expect("a ci directory entry").path())
        .filter(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.ends_with("-values.yaml"))
        })
        .collect();
    files.sort();
    files
}

/// `helm template`, returning helm's error output when it refuses.
pub fn try_template(extra: &[&str]) -> Result<String, String> {
    run_helm(&helm(), &helm_template_args(RELEASE, NAMESPACE, extra))
}

/// Every YAML document of `yaml` that is not empty, as JSON.
pub fn parse_documents(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|document| Value::deserialize(document).expect("the YAML parses"))
        .filter(|object| !object.is_null())
        .collect()
}

impl Rendered {
    pub fn parse(yaml: String) -> Rendered {
        let objects = parse_documents(&yaml);
        Rendered { yaml, objects }
    }

    pub fn of_kind(&self, kind: &str) -> Vec<&Value> {
        self.objects
            .iter()
            .filter(|object| object["kind"] == kind)
            .collect()
    }

    pub fn find(&self, kind: &str, name: &str) -> Option<&Value> {
        self.objects
            .iter()
            .find(|object| object["kind"] == kind && object["metadata"]["name"] == name)
    }

    /// The object, or a failed test listing what was rendered.
    pub fn get(&self, kind: &str, name: &str) -> &Value {
        self.find(kind, name).unwrap_or_else(|| {
            panic!(
                "no {kind} {name:?} rendered; rendered: {:?}",
                self.identities()
            )
        })
    }

    /// `Kind/name` of every object.
    pub fn identities(&self) -> Vec<String> {
        self.objects.iter().map(identity).collect()
    }

    /// Every pod template (or pod spec) with the workload it belongs to.
    pub fn pod_specs(&self) -> Vec<(String, &Value)> {
        self.objects
            .iter()
            .filter_map(|object| pod_spec(object).map(|spec| (identity(object), spec)))
            .collect()
    }
}

/// `Kind/name`.
pub fn identity(object: &Value) -> String {
    format!(
        "{}/{}",
        object["kind"].as_str().unwrap_or("?"),
        object["metadata"]["name"].as_str().unwrap_or("?")
    )
}

/// The pod spec of a Pod or of a workload's pod template.
pub fn pod_spec(object: &Value) -> Option<&Value> {
    match object["kind"].as_str()? {
        "Pod" => Some(&object["spec"]),
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" => {
            Some(&object["spec"]["template"]["spec"])
        }
        _ => None,
    }
}

/// Every container of a pod spec, init containers included, by name.
pub fn containers(pod_spec: &Value) -> Vec<&Value> {
    ["initContainers", "containers"]
        .iter()
        .filter_map(|key| pod_spec[*key].as_array())
        .flatten()
        .collect()
}

/// The container named `name` of a workload.
pub fn container<'a>(workload: &'a Value, name: &str) -> &'a Value {
    let spec = pod_spec(workload).expect("a workload");
    containers(spec)
        .into_iter()
        .find(|container| container["name"] == name)
        .unwrap_or_else(|| panic!("{} has no container {name:?}", identity(workload)))
}

/// A container's environment: name to the plain value, or to the JSON of
/// its `valueFrom`.
pub fn env(container: &Value) -> Vec<(String, Value)> {
    container["env"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|entry| {
            let name = entry["name"].as_str().unwrap_or_default().to_owned();
            let value = match entry.get("value") {
                Some(value) => value.clone(),
                None => entry["valueFrom"].clone(),
            };
            (name, value)
        })
        .collect()
}

/// The plain value of an environment variable, or a failed test.
pub fn env_value(container: &Value, name: &str) -> String {
    env(container)
        .into_iter()
        .find(|(key, _)| key == name)
        .and_then(|(_, value)| value.as_str().map(str::to_owned))
        .unwrap_or_else(|| panic!("{} has no plain env {name}", container["name"]))
}

/// Whether the container sets `name` at all.
pub fn has_env(container: &Value, name: &str) -> bool {
    env(container).iter().any(|(key, _)| key == name)
}
