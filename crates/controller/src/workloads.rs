//! The YAML rewrite behind `syncfolder inject` (like `linkerd inject`):
//! multi-document YAML in, the same YAML out with a sidecar in every
//! workload that asks for one.
//!
//! A workload asks with the annotations `syncfolder.io/folder` and
//! `syncfolder.io/volume` on its pod template (or, failing that, on the
//! workload itself). Pods, Deployments, StatefulSets, DaemonSets,
//! ReplicaSets, ReplicationControllers, Jobs and CronJobs are understood,
//! also inside a `kind: List`. Every other document, and every workload that
//! does not ask, is copied byte for byte, comments included. A rewritten
//! document keeps its key order and its leading comments; comments inside it
//! are lost.
//!
//! This works offline: the SyncFolder is not looked up. The sidecar needs
//! only the folder's name (see [`crate::annotations::InjectTarget`]); if the
//! SyncFolder does not exist when the pod starts, the kubelet waits for its
//! Secret.

use std::collections::BTreeMap;

use json_patch::PatchOperation;
use serde_yaml::Value as Yaml;

use crate::annotations::InjectTarget;
use crate::inject::{InjectError, InjectSettings, plan};

/// Kinds whose pod template injection understands: API version, kind, and
/// the path from the object to its pod template (`metadata` + `spec`).
const WORKLOAD_KINDS: [(&str, &str, &[&str]); 8] = [
    ("v1", "Pod", &[]),
    ("v1", "ReplicationController", &["spec", "template"]),
    ("apps/v1", "Deployment", &["spec", "template"]),
    ("apps/v1", "StatefulSet", &["spec", "template"]),
    ("apps/v1", "DaemonSet", &["spec", "template"]),
    ("apps/v1", "ReplicaSet", &["spec", "template"]),
    ("batch/v1", "Job", &["spec", "template"]),
    (
        "batch/v1",
        "CronJob",
        &["spec", "jobTemplate", "spec", "template"],
    ),
];

/// The rewritten YAML and what was done to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InjectedWorkloads {
    /// The input with sidecars injected.
    pub yaml: String,
    /// Every workload that asked for a sidecar, in input order.
    pub workloads: Vec<WorkloadInjection>,
}

/// One workload that asked for a sidecar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadInjection {
    pub kind: String,
    pub name: String,
    /// The SyncFolder it syncs.
    pub folder: String,
    /// False when it already had exactly this sidecar.
    pub changed: bool,
}

/// Why the YAML could not be rewritten; nothing is written then.
#[derive(Debug, thiserror::Error)]
pub enum WorkloadsError {
    #[error("document {document}: not valid YAML: {source}")]
    Yaml {
        /// 1-based position in the input.
        document: usize,
        #[source]
        source: serde_yaml::Error,
    },
    #[error("document {document}: {kind} {name:?}: {source}")]
    Inject {
        document: usize,
        kind: String,
        name: String,
        #[source]
        source: InjectError,
    },
}

/// Injects the sidecar into every workload in `yaml` that asks for it.
pub fn inject_workloads(
    yaml: &str,
    settings: &InjectSettings,
) -> Result<InjectedWorkloads, WorkloadsError> {
    let mut output = String::with_capacity(yaml.len() * 2);
    let mut workloads = Vec::new();
    for (document_idx, document) in split_documents(yaml).into_iter().enumerate() {
        let document_number = document_idx + 1;
        let mut object: Yaml =
            serde_yaml::from_str(document.body).map_err(|source| WorkloadsError::Yaml {
                document: document_number,
                source,
            })?;
        let before = workloads.len();
        inject_object(&mut object, settings, &mut workloads).map_err(|(kind, name, source)| {
            WorkloadsError::Inject {
                document: document_number,
                kind,
                name,
                source,
            }
        })?;
        if workloads[before..].iter().any(|workload| workload.changed) {
            output.push_str(document.separator);
            output.push_str(leading_comments(document.body));
            let text = serde_yaml::to_string(&object).map_err(|source| WorkloadsError::Yaml {
                document: document_number,
                source,
            })?;
            output.push_str(&text);
        } else {
            output.push_str(document.separator);
            output.push_str(document.body);
        }
    }
    Ok(InjectedWorkloads {
        yaml: output,
        workloads,
    })
}

/// One document of a YAML stream: its `---` line (empty for a first
/// document without one) and the text after it.
struct Document<'a> {
    separator: &'a str,
    body: &'a str,
}

/// Splits at `---` lines. A `---` at the start of a line always starts a
/// document in YAML (block scalars are indented), so no parser is needed and
/// untouched documents keep their exact bytes.
fn split_documents(yaml: &str) -> Vec<Document<'_>> {
    let mut documents = Vec::new();
    let mut separator = "";
    let mut body_start = 0;
    let mut offset = 0;
    for line in yaml.split_inclusive('\n') {
        let content = line.trim_end_matches(['\n', '\r']);
        let is_separator =
            content == "---" || content.starts_with("--- ") || content.starts_with("---\t");
        if is_separator {
            if offset > 0 || !separator.is_empty() {
                documents.push(Document {
                    separator,
                    body: &yaml[body_start..offset],
                });
            }
            separator = line;
            body_start = offset + line.len();
        }
        offset += line.len();
    }
    if body_start < yaml.len() || !separator.is_empty() || documents.is_empty() {
        documents.push(Document {
            separator,
            body: &yaml[body_start..],
        });
    }
    documents
}

/// The comment and blank lines a document starts with.
fn leading_comments(body: &str) -> &str {
    let mut end = 0;
    for line in body.split_inclusive('\n') {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            end += line.len();
        } else {
            break;
        }
    }
    &body[..end]
}

type ObjectError = (String, String, InjectError);

fn inject_object(
    object: &mut Yaml,
    settings: &InjectSettings,
    workloads: &mut Vec<WorkloadInjection>,
) -> Result<(), ObjectError> {
    let api_version = string_at(object, &["apiVersion"]).unwrap_or_default();
    let kind = string_at(object, &["kind"]).unwrap_or_default();
    if kind == "List" {
        if let Some(Yaml::Sequence(items)) = object.get_mut("items") {
            for item in items {
                inject_object(item, settings, workloads)?;
            }
        }
        return Ok(());
    }
    let Some((_, _, template_path)) =
        WORKLOAD_KINDS
            .iter()
            .find(|(known_version, known_kind, _)| {
                *known_version == api_version && *known_kind == kind
            })
    else {
        return Ok(());
    };
    let name = string_at(object, &["metadata", "name"])
        .or_else(|| string_at(object, &["metadata", "generateName"]))
        .unwrap_or_default();
    let fail = |source: InjectError| (kind.clone(), name.clone(), source);

    let template_path: &[&str] = template_path;
    let template_annotations = annotations_at(object, &[template_path, &["metadata"]].concat());
    let target = match InjectTarget::from_annotations(&template_annotations).map_err(fail)? {
        Some(target) => target,
        None => match InjectTarget::from_annotations(&annotations_at(object, &["metadata"]))
            .map_err(fail)?
        {
            Some(target) => target,
            None => return Ok(()),
        },
    };

    let spec_path = [template_path, &["spec"]].concat();
    let pod_spec = value_at_mut(object, &spec_path).ok_or_else(|| {
        fail(InjectError::NotAPodSpec {
            reason: format!("no pod spec at .{}", spec_path.join(".")),
        })
    })?;
    let pod_spec_json = serde_json::to_value(&*pod_spec).map_err(|err| {
        fail(InjectError::NotAPodSpec {
            reason: err.to_string(),
        })
    })?;
    let operations = plan(&pod_spec_json, &target, settings).map_err(fail)?;
    apply_to_yaml(pod_spec, &operations)
        .map_err(|reason| fail(InjectError::NotAPodSpec { reason }))?;
    workloads.push(WorkloadInjection {
        kind: kind.clone(),
        name: name.clone(),
        folder: target.folder,
        changed: !operations.is_empty(),
    });
    Ok(())
}

fn value_at<'a>(object: &'a Yaml, path: &[&str]) -> Option<&'a Yaml> {
    path.iter().try_fold(object, |node, key| node.get(*key))
}

fn value_at_mut<'a>(object: &'a mut Yaml, path: &[&str]) -> Option<&'a mut Yaml> {
    path.iter().try_fold(object, |node, key| node.get_mut(*key))
}

fn string_at(object: &Yaml, path: &[&str]) -> Option<String> {
    value_at(object, path)
        .and_then(Yaml::as_str)
        .map(str::to_owned)
}

/// The string annotations of the metadata at `metadata_path`.
fn annotations_at(object: &Yaml, metadata_path: &[&str]) -> BTreeMap<String, String> {
    let Some(Yaml::Mapping(annotations)) =
        value_at(object, &[metadata_path, &["annotations"]].concat())
    else {
        return BTreeMap::new();
    };
    annotations
        .iter()
        .filter_map(|(key, value)| Some((key.as_str()?.to_owned(), value.as_str()?.to_owned())))
        .collect()
}

/// Applies `add` and `replace` operations to a YAML value, keeping the key
/// order of everything already there.
fn apply_to_yaml(root: &mut Yaml, operations: &[PatchOperation]) -> Result<(), String> {
    for operation in operations {
        let (path, value, replacing) = match operation {
            PatchOperation::Add(add) => (&add.path, &add.value, false),
            PatchOperation::Replace(replace) => (&replace.path, &replace.value, true),
            other => return Err(format!("unexpected patch operation {other}")),
        };
        let tokens: Vec<String> = path
            .tokens()
            .map(|token| token.decoded().into_owned())
            .collect();
        let Some((last, parents)) = tokens.split_last() else {
            return Err("a patch cannot replace the whole pod spec".to_owned());
        };
        let mut node = &mut *root;
        for token in parents {
            node = match node {
                Yaml::Mapping(mapping) => mapping.get_mut(token.as_str()),
                Yaml::Sequence(items) => token
                    .parse::<usize>()
                    .ok()
                    .and_then(|idx| items.get_mut(idx)),
                _ => None,
            }
            .ok_or_else(|| format!("{path} does not exist"))?;
        }
        let value = json_to_yaml(value);
        match node {
            Yaml::Mapping(mapping) => {
                mapping.insert(Yaml::String(last.clone()), value);
            }
            Yaml::Sequence(items) if last == "-" && !replacing => items.push(value),
            Yaml::Sequence(items) => {
                let idx: usize = last.parse().map_err(|_| format!("{path}: bad index"))?;
                if replacing && idx < items.len() {
                    items[idx] = value;
                } else if !replacing && idx <= items.len() {
                    items.insert(idx, value);
                } else {
                    return Err(format!("{path}: index out of range"));
                }
            }
            _ => return Err(format!("{path}: parent is not a mapping or a list")),
        }
    }
    Ok(())
}

/// JSON to YAML with `name` first in every mapping, the way Kubernetes
/// manifests are written.
fn json_to_yaml(value: &serde_json::Value) -> Yaml {
    match value {
        serde_json::Value::Object(fields) => {
            let mut mapping = serde_yaml::Mapping::new();
            if let Some(name) = fields.get("name") {
                mapping.insert(Yaml::String("name".to_owned()), json_to_yaml(name));
            }
            for (key, field) in fields.iter().filter(|(key, _)| *key != "name") {
                mapping.insert(Yaml::String(key.clone()), json_to_yaml(field));
            }
            Yaml::Mapping(mapping)
        }
        serde_json::Value::Array(items) => Yaml::Sequence(items.iter().map(json_to_yaml).collect()),
        serde_json::Value::String(text) => Yaml::String(text.clone()),
        serde_json::Value::Bool(flag) => Yaml::Bool(*flag),
        serde_json::Value::Null => Yaml::Null,
        serde_json::Value::Number(number) => {
            if let Some(integer) = number.as_i64() {
                Yaml::Number(integer.into())
            } else if let Some(integer) = number.as_u64() {
                Yaml::Number(integer.into())
            } else {
                Yaml::Number(number.as_f64().unwrap_or_default().into())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::inject::inject_value;
    use crate::sidecar::SIDECAR_NAME;

    const DEPLOYMENT: &str = "\
# the writer
apiVersion: apps/v1
kind: Deployment
metadata:
  name: writer
  namespace: team-a
spec:
  replicas: 1
  selector:
    matchLabels: {app: writer}
  template:
    metadata:
      labels: {app: writer}
      annotations:
        syncfolder.io/folder: photos
        syncfolder.io/volume: data
    spec:
      containers:
      - name: app
        image: busybox
        volumeMounts:
        - {name: data, mountPath: /data}
      volumes:
      - name: data
        emptyDir: {}
";

    const SERVICE: &str = "\
apiVersion: v1
kind: Service
metadata:
  name: writer   # a comment that must survive
spec:
  ports: [{port: 80}]
";

    fn settings() -> InjectSettings {
        InjectSettings::default()
    }

    fn parse_all(yaml: &str) -> Vec<serde_json::Value> {
        serde_yaml::Deserializer::from_str(yaml)
            .map(|document| serde_json::Value::deserialize(document).expect("yaml"))
            .filter(|value| !value.is_null())
            .collect()
    }

    use serde::Deserialize;

    /// The pod spec at `path` of `document`, injected the plain JSON way.
    fn expected_pod_spec(document: &str, path: &[&str]) -> serde_json::Value {
        let parsed: serde_json::Value = serde_yaml::from_str(document).expect("yaml");
        let mut spec = path.iter().fold(&parsed, |node, key| &node[*key]).clone();
        inject_value(&mut spec, &InjectTarget::new("photos", "data"), &settings()).expect("inject");
        spec
    }

    #[test]
    fn a_deployment_gets_the_sidecar_and_keeps_its_layout() {
        let injected = inject_workloads(DEPLOYMENT, &settings()).expect("inject");
        assert_eq!(
            injected.workloads,
            [WorkloadInjection {
                kind: "Deployment".to_owned(),
                name: "writer".to_owned(),
                folder: "photos".to_owned(),
                changed: true
            }]
        );
        let documents = parse_all(&injected.yaml);
        assert_eq!(
            documents[0]["spec"]["template"]["spec"],
            expected_pod_spec(DEPLOYMENT, &["spec", "template", "spec"])
        );
        assert!(
            injected
                .yaml
                .starts_with("# the writer\napiVersion: apps/v1\nkind: Deployment\n"),
            "{}",
            injected.yaml
        );
        assert!(
            injected
                .yaml
                .contains("  initContainers:\n      - name: syncfolder-agent\n"),
            "{}",
            injected.yaml
        );
    }

    #[test]
    fn other_documents_are_copied_byte_for_byte() {
        let yaml = format!("{SERVICE}---\n{DEPLOYMENT}--- # trailing\n{SERVICE}");
        let injected = inject_workloads(&yaml, &settings()).expect("inject");
        assert!(injected.yaml.starts_with(SERVICE), "{}", injected.yaml);
        assert!(
            injected
                .yaml
                .ends_with(&format!("--- # trailing\n{SERVICE}")),
            "{}",
            injected.yaml
        );
        assert_eq!(parse_all(&injected.yaml).len(), 3);
    }

    #[test]
    fn input_without_workloads_comes_back_unchanged() {
        for yaml in [
            "",
            "---\n",
            SERVICE,
            "# only a comment\n",
            "a: 1\n---\nb: [2]\n...\n",
        ] {
            let injected = inject_workloads(yaml, &settings()).expect("inject");
            assert_eq!(injected.yaml, yaml);
            assert!(injected.workloads.is_empty());
        }
    }

    #[test]
    fn injecting_injected_yaml_changes_nothing() {
        let once = inject_workloads(DEPLOYMENT, &settings()).expect("inject");
        let twice = inject_workloads(&once.yaml, &settings()).expect("inject");
        assert_eq!(twice.yaml, once.yaml);
        assert!(!twice.workloads[0].changed);
    }

    #[test]
    fn workloads_without_the_annotation_are_untouched() {
        let plain = DEPLOYMENT.replace("syncfolder.io/", "example.com/");
        let injected = inject_workloads(&plain, &settings()).expect("inject");
        assert_eq!(injected.yaml, plain);
        assert!(injected.workloads.is_empty());
    }

    #[test]
    fn every_workload_kind_is_found_at_its_pod_template() {
        let template = concat!(
            "    metadata:\n",
            "      annotations: {syncfolder.io/folder: photos, syncfolder.io/volume: data}\n",
            "    spec:\n",
            "      containers: [{name: app, image: busybox}]\n",
            "      volumes: [{name: data, emptyDir: {}}]\n",
        );
        let indented = |spaces: usize| -> String {
            template
                .lines()
                .map(|line| format!("{}{line}\n", " ".repeat(spaces)))
                .collect()
        };
        let cases = [
            (
                format!("apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {{name: db}}\nspec:\n  serviceName: db\n  selector: {{}}\n  template:\n{}", indented(0)),
                vec!["spec", "template", "spec"],
            ),
            (
                format!("apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {{name: agent}}\nspec:\n  selector: {{}}\n  template:\n{}", indented(0)),
                vec!["spec", "template", "spec"],
            ),
            (
                format!("apiVersion: batch/v1\nkind: Job\nmetadata: {{name: once}}\nspec:\n  template:\n{}", indented(0)),
                vec!["spec", "template", "spec"],
            ),
            (
                format!("apiVersion: batch/v1\nkind: CronJob\nmetadata: {{name: nightly}}\nspec:\n  schedule: '0 3 * * *'\n  jobTemplate:\n    spec:\n      template:\n{}", indented(4)),
                vec!["spec", "jobTemplate", "spec", "template", "spec"],
            ),
            (
                "apiVersion: v1\nkind: Pod\nmetadata:\n  name: single\n  annotations: {syncfolder.io/folder: photos, syncfolder.io/volume: data}\nspec:\n  containers: [{name: app, image: busybox}]\n  volumes: [{name: data, emptyDir: {}}]\n".to_owned(),
                vec!["spec"],
            ),
        ];
        for (yaml, path) in cases {
            let injected = inject_workloads(&yaml, &settings()).expect("inject");
            assert_eq!(injected.workloads.len(), 1, "{yaml}");
            assert!(injected.workloads[0].changed, "{yaml}");
            let document = &parse_all(&injected.yaml)[0];
            let pod_spec = path.iter().fold(document, |node, key| &node[*key]);
            assert_eq!(*pod_spec, expected_pod_spec(&yaml, &path), "{yaml}");
            assert_eq!(pod_spec["initContainers"][0]["name"], SIDECAR_NAME);
        }
    }

    #[test]
    fn annotations_on_the_workload_count_when_the_template_has_none() {
        let moved = DEPLOYMENT
            .replace("      annotations:\n        syncfolder.io/folder: photos\n        syncfolder.io/volume: data\n", "")
            .replace(
                "  namespace: team-a\n",
                "  namespace: team-a\n  annotations: {syncfolder.io/folder: photos, syncfolder.io/volume: data}\n",
            );
        let injected = inject_workloads(&moved, &settings()).expect("inject");
        assert_eq!(injected.workloads.len(), 1);
        let document = &parse_all(&injected.yaml)[0];
        assert_eq!(
            document["spec"]["template"]["spec"]["initContainers"][0]["name"],
            SIDECAR_NAME
        );
    }

    #[test]
    fn lists_are_injected_item_by_item() {
        let deployment: serde_json::Value = serde_yaml::from_str(DEPLOYMENT).expect("yaml");
        let service: serde_json::Value = serde_yaml::from_str(SERVICE).expect("yaml");
        let list = json!({"apiVersion": "v1", "kind": "List", "items": [service, deployment]});
        let yaml = serde_yaml::to_string(&list).expect("yaml");
        let injected = inject_workloads(&yaml, &settings()).expect("inject");
        let document = &parse_all(&injected.yaml)[0];
        assert_eq!(document["items"][0], service);
        assert_eq!(
            document["items"][1]["spec"]["template"]["spec"]["initContainers"][0]["name"],
            SIDECAR_NAME
        );
    }

    #[test]
    fn same_kind_in_another_api_group_is_not_a_workload() {
        let custom = DEPLOYMENT.replace(
            "apiVersion: apps/v1\nkind: Deployment",
            "apiVersion: example.com/v1\nkind: Deployment",
        );
        let injected = inject_workloads(&custom, &settings()).expect("inject");
        assert_eq!(injected.yaml, custom);
    }

    #[test]
    fn a_workload_without_the_named_volume_fails_with_its_name() {
        let broken =
            DEPLOYMENT.replace("syncfolder.io/volume: data", "syncfolder.io/volume: cache");
        let yaml = format!("{SERVICE}---\n{broken}");
        let err = inject_workloads(&yaml, &settings()).expect_err("no volume cache");
        let message = err.to_string();
        assert!(
            message.starts_with(
                "document 2: Deployment \"writer\": the pod has no volume named \"cache\""
            ),
            "{message}"
        );
    }

    #[test]
    fn broken_yaml_names_the_document() {
        let yaml = format!("{SERVICE}---\nkind: [unclosed\n");
        let err = inject_workloads(&yaml, &settings()).expect_err("bad yaml");
        assert!(
            matches!(err, WorkloadsError::Yaml { document: 2, .. }),
            "{err}"
        );
    }
}
