//! Sidecar injection, the one pure function behind both doors
//! (`syncfolder inject` and the admission webhook).
//!
//! The work is done on the pod spec as JSON and expressed as RFC 6902 JSON
//! Patch operations ([`plan`]): the webhook answers with exactly those
//! operations, the YAML rewrite applies them to the document, and
//! [`inject`] applies them to a typed [`PodSpec`]. Working on JSON means
//! fields this crate's Kubernetes types do not know (a newer cluster's)
//! pass through untouched.
//!
//! What injection does, and nothing more:
//! - upserts the init container `syncfolder-agent` (a native sidecar; see
//!   [`crate::sidecar`]): added first when absent, so the folder is in place
//!   before other init containers run; replaced where it is when it differs;
//!   left alone when it is already what the settings say;
//! - upserts the `emptyDir` volume `syncfolder-agent-tmp`.
//!
//! Injecting twice is injecting once. A sidecar read back from the API
//! server carries defaulted fields; the only ones injection does not set
//! itself (`terminationMessagePath`, `terminationMessagePolicy`) are kept
//! from the existing container, so re-injection stays a no-op.
//!
//! Architecture invariant: nothing here reads the cluster; the caller
//! decides whether the SyncFolder exists ([`InjectError::FolderNotFound`]
//! is for it to return).

use json_patch::jsonptr::{Pointer, PointerBuf};
use json_patch::{AddOperation, PatchOperation, ReplaceOperation};
use k8s_openapi::api::core::v1::PodSpec;
use serde_json::{Map, Value};

use crate::annotations::{FOLDER_ANNOTATION, InjectTarget, VOLUME_ANNOTATION};
use crate::sidecar::{AGENT_COMMAND, SIDECAR_NAME, TMP_VOLUME_NAME, sidecar_container, tmp_volume};

pub use crate::sidecar::InjectSettings;

/// Container fields the API server fills in that injection does not set;
/// an existing sidecar keeps its values for them.
const SERVER_DEFAULTED_FIELDS: [&str; 2] = ["terminationMessagePath", "terminationMessagePolicy"];

/// Why a pod cannot get its sidecar. Every message says what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InjectError {
    #[error(
        "the pod asks for SyncFolder {folder:?} ({FOLDER_ANNOTATION}) but names no volume: add the annotation {VOLUME_ANNOTATION}: <name of the pod volume to sync>"
    )]
    MissingVolumeAnnotation { folder: String },

    #[error("annotation {annotation}: {value:?} cannot be used: {reason}")]
    InvalidAnnotation {
        annotation: &'static str,
        value: String,
        reason: &'static str,
    },

    #[error(
        "the pod has no volume named {volume:?} ({VOLUME_ANNOTATION}); its volumes are: {}",
        list_or_none(.available)
    )]
    VolumeNotFound {
        volume: String,
        available: Vec<String>,
    },

    #[error(
        "SyncFolder {name:?} not found in namespace {namespace:?}: create it first, or remove the {FOLDER_ANNOTATION} annotation"
    )]
    FolderNotFound { namespace: String, name: String },

    #[error(
        "the pod already has a container named {SIDECAR_NAME:?} in {list} that is not a syncfolder sidecar: rename it"
    )]
    ContainerNameTaken { list: &'static str },

    #[error(
        "the pod already has a volume named {TMP_VOLUME_NAME:?} that is not the sidecar's emptyDir: rename it"
    )]
    VolumeNameTaken,

    #[error("not a pod spec: {reason}")]
    NotAPodSpec { reason: String },
}

fn list_or_none(names: &[String]) -> String {
    if names.is_empty() {
        "none".to_owned()
    } else {
        names.join(", ")
    }
}

/// The JSON Patch operations, with paths relative to the pod spec, that give
/// `pod_spec` the sidecar for `target`. Empty when the pod already has
/// exactly that sidecar.
pub fn plan(
    pod_spec: &Value,
    target: &InjectTarget,
    settings: &InjectSettings,
) -> Result<Vec<PatchOperation>, InjectError> {
    let pod_spec = pod_spec
        .as_object()
        .ok_or_else(|| InjectError::NotAPodSpec {
            reason: "expected an object".to_owned(),
        })?;
    let volumes = array_field(pod_spec, "volumes")?;
    let volume_names: Vec<String> = volumes
        .iter()
        .filter_map(name_of)
        .map(str::to_owned)
        .collect();
    if !volume_names.contains(&target.volume) {
        return Err(InjectError::VolumeNotFound {
            volume: target.volume.clone(),
            available: volume_names,
        });
    }
    for list in ["containers", "ephemeralContainers"] {
        if array_field(pod_spec, list)?
            .iter()
            .any(|container| name_of(container) == Some(SIDECAR_NAME))
        {
            return Err(InjectError::ContainerNameTaken { list });
        }
    }

    let sidecar = to_json(&sidecar_container(target, settings))?;
    let mut operations = Vec::new();

    let init_containers = array_field(pod_spec, "initContainers")?;
    match position_by_name(init_containers, SIDECAR_NAME) {
        Some((index, existing)) => {
            if !is_syncfolder_agent(existing) {
                return Err(InjectError::ContainerNameTaken {
                    list: "initContainers",
                });
            }
            let wanted = keep_server_defaults(sidecar, existing);
            if wanted != *existing {
                operations.push(replace(&["initContainers", &index.to_string()], wanted));
            }
        }
        None if pod_spec
            .get("initContainers")
            .is_some_and(|list| !list.is_null()) =>
        {
            operations.push(add(&["initContainers", "0"], sidecar));
        }
        None => operations.push(add(&["initContainers"], Value::Array(vec![sidecar]))),
    }

    let volume = to_json(&tmp_volume())?;
    match position_by_name(volumes, TMP_VOLUME_NAME) {
        Some((index, existing)) => {
            if !is_tmp_volume(existing) {
                return Err(InjectError::VolumeNameTaken);
            }
            if *existing != volume {
                operations.push(replace(&["volumes", &index.to_string()], volume));
            }
        }
        // the target volume exists, so `volumes` does
        None => operations.push(add(&["volumes", "-"], volume)),
    }
    Ok(operations)
}

/// Injects in place; true when `pod_spec` changed.
pub fn inject_value(
    pod_spec: &mut Value,
    target: &InjectTarget,
    settings: &InjectSettings,
) -> Result<bool, InjectError> {
    let operations = plan(pod_spec, target, settings)?;
    json_patch::patch(pod_spec, &operations).map_err(|err| InjectError::NotAPodSpec {
        reason: err.to_string(),
    })?;
    Ok(!operations.is_empty())
}

/// `pod_spec` with the sidecar for `target`; the same pod spec again when it
/// already has it.
pub fn inject(
    pod_spec: &PodSpec,
    target: &InjectTarget,
    settings: &InjectSettings,
) -> Result<PodSpec, InjectError> {
    let mut json = to_json(pod_spec)?;
    inject_value(&mut json, target, settings)?;
    serde_json::from_value(json).map_err(|err| InjectError::NotAPodSpec {
        reason: err.to_string(),
    })
}

/// The same operations with every path under `prefix` (for example
/// `/spec` for a pod, `/spec/template/spec` for a Deployment).
pub fn under(prefix: &Pointer, operations: Vec<PatchOperation>) -> Vec<PatchOperation> {
    operations
        .into_iter()
        .map(|operation| match operation {
            PatchOperation::Add(AddOperation { path, value }) => {
                PatchOperation::Add(AddOperation {
                    path: prefix.concat(&path),
                    value,
                })
            }
            PatchOperation::Replace(ReplaceOperation { path, value }) => {
                PatchOperation::Replace(ReplaceOperation {
                    path: prefix.concat(&path),
                    value,
                })
            }
            other => other,
        })
        .collect()
}

fn add(tokens: &[&str], value: Value) -> PatchOperation {
    PatchOperation::Add(AddOperation {
        path: PointerBuf::from_tokens(tokens.iter().copied()),
        value,
    })
}

fn replace(tokens: &[&str], value: Value) -> PatchOperation {
    PatchOperation::Replace(ReplaceOperation {
        path: PointerBuf::from_tokens(tokens.iter().copied()),
        value,
    })
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<Value, InjectError> {
    serde_json::to_value(value).map_err(|err| InjectError::NotAPodSpec {
        reason: err.to_string(),
    })
}

/// A list field of the pod spec; absent and `null` are empty.
fn array_field<'a>(
    pod_spec: &'a Map<String, Value>,
    field: &str,
) -> Result<&'a [Value], InjectError> {
    match pod_spec.get(field) {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(items)) => Ok(items),
        Some(_) => Err(InjectError::NotAPodSpec {
            reason: format!("{field} is not a list"),
        }),
    }
}

fn name_of(item: &Value) -> Option<&str> {
    item.get("name").and_then(Value::as_str)
}

fn position_by_name<'a>(items: &'a [Value], name: &str) -> Option<(usize, &'a Value)> {
    items
        .iter()
        .enumerate()
        .find(|(_, item)| name_of(item) == Some(name))
}

/// A container we injected (or one written to look exactly like it): it
/// runs `syncfolder agent`.
fn is_syncfolder_agent(container: &Value) -> bool {
    let Some(command) = container.get("command").and_then(Value::as_array) else {
        return false;
    };
    let program = command.first().and_then(Value::as_str).unwrap_or_default();
    let program_name = program.rsplit('/').next().unwrap_or_default();
    program_name == AGENT_COMMAND[0]
        && command.get(1).and_then(Value::as_str) == Some(AGENT_COMMAND[1])
}

fn is_tmp_volume(volume: &Value) -> bool {
    volume
        .as_object()
        .is_some_and(|fields| fields.contains_key("emptyDir") && fields.len() == 2)
}

fn keep_server_defaults(mut wanted: Value, existing: &Value) -> Value {
    if let (Some(wanted_fields), Some(existing_fields)) =
        (wanted.as_object_mut(), existing.as_object())
    {
        for field in SERVER_DEFAULTED_FIELDS {
            if let Some(value) = existing_fields.get(field) {
                wanted_fields.entry(field).or_insert_with(|| value.clone());
            }
        }
    }
    wanted
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use syncfolder_core::protocol::FolderMode;

    use super::*;
    use crate::sidecar::DATA_MOUNT_PATH;

    fn pod_spec() -> Value {
        json!({
            "containers": [{
                "name": "app",
                "image": "busybox",
                "volumeMounts": [{"name": "data", "mountPath": "/data"}]
            }],
            "volumes": [{"name": "data", "emptyDir": {}}]
        })
    }

    fn target() -> InjectTarget {
        InjectTarget::new("photos", "data")
    }

    fn injected(mut spec: Value) -> Value {
        inject_value(&mut spec, &target(), &InjectSettings::default()).expect("inject");
        spec
    }

    fn init_names(spec: &Value) -> Vec<&str> {
        spec["initContainers"]
            .as_array()
            .expect("init containers")
            .iter()
            .filter_map(name_of)
            .collect()
    }

    #[test]
    fn injection_adds_the_sidecar_and_its_tmp_volume() {
        let spec = injected(pod_spec());
        assert_eq!(init_names(&spec), [SIDECAR_NAME]);
        let sidecar = &spec["initContainers"][0];
        assert_eq!(sidecar["restartPolicy"], "Always");
        assert_eq!(sidecar["volumeMounts"][0]["name"], "data");
        assert_eq!(sidecar["volumeMounts"][0]["mountPath"], DATA_MOUNT_PATH);
        assert_eq!(
            spec["volumes"][1],
            json!({"name": TMP_VOLUME_NAME, "emptyDir": {}})
        );
        // the application is untouched
        assert_eq!(spec["containers"], pod_spec()["containers"]);
    }

    #[test]
    fn injecting_twice_is_injecting_once() {
        let once = injected(pod_spec());
        let mut twice = once.clone();
        let changed =
            inject_value(&mut twice, &target(), &InjectSettings::default()).expect("inject");
        assert!(!changed);
        assert_eq!(twice, once);
        assert!(
            plan(&once, &target(), &InjectSettings::default())
                .expect("plan")
                .is_empty()
        );
    }

    #[test]
    fn the_sidecar_goes_before_existing_init_containers() {
        let mut spec = pod_spec();
        spec["initContainers"] = json!([{"name": "migrate", "image": "busybox"}]);
        let spec = injected(spec);
        assert_eq!(init_names(&spec), [SIDECAR_NAME, "migrate"]);
    }

    #[test]
    fn changed_settings_update_the_sidecar_where_it_is() {
        let mut spec = pod_spec();
        spec["initContainers"] = json!([{"name": "migrate", "image": "busybox"}]);
        let mut spec = injected(spec);
        // someone moved it after the migration; keep that order
        let sidecar = spec["initContainers"]
            .as_array_mut()
            .expect("list")
            .remove(0);
        spec["initContainers"]
            .as_array_mut()
            .expect("list")
            .push(sidecar);

        let newer = InjectSettings {
            image: "registry.example/syncfolder:2".to_owned(),
            ..InjectSettings::default()
        };
        let operations = plan(&spec, &target(), &newer).expect("plan");
        assert_eq!(operations.len(), 1, "{operations:?}");
        assert!(
            matches!(&operations[0], PatchOperation::Replace(op) if op.path.as_str() == "/initContainers/1")
        );
        inject_value(&mut spec, &target(), &newer).expect("inject");
        assert_eq!(init_names(&spec), ["migrate", SIDECAR_NAME]);
        assert_eq!(
            spec["initContainers"][1]["image"],
            "registry.example/syncfolder:2"
        );
        assert_eq!(spec["volumes"].as_array().expect("volumes").len(), 2);
    }

    #[test]
    fn a_changed_volume_annotation_moves_the_mount() {
        let mut spec = pod_spec();
        spec["volumes"]
            .as_array_mut()
            .expect("volumes")
            .push(json!({"name": "other", "emptyDir": {}}));
        let mut spec = injected(spec);
        inject_value(
            &mut spec,
            &InjectTarget::new("photos", "other"),
            &InjectSettings::default(),
        )
        .expect("inject");
        assert_eq!(init_names(&spec), [SIDECAR_NAME]);
        assert_eq!(
            spec["initContainers"][0]["volumeMounts"][0]["name"],
            "other"
        );
    }

    #[test]
    fn fields_the_api_server_defaults_do_not_count_as_a_change() {
        let mut spec = injected(pod_spec());
        spec["initContainers"][0]["terminationMessagePath"] = json!("/dev/termination-log");
        spec["initContainers"][0]["terminationMessagePolicy"] = json!("File");
        assert!(
            plan(&spec, &target(), &InjectSettings::default())
                .expect("plan")
                .is_empty()
        );
    }

    #[test]
    fn a_missing_volume_is_refused_with_the_volumes_there_are() {
        let err = plan(
            &pod_spec(),
            &InjectTarget::new("photos", "cache"),
            &InjectSettings::default(),
        )
        .expect_err("no such volume");
        assert_eq!(
            err,
            InjectError::VolumeNotFound {
                volume: "cache".to_owned(),
                available: vec!["data".to_owned()]
            }
        );
        assert!(err.to_string().contains("its volumes are: data"), "{err}");
        let no_volumes = json!({"containers": [{"name": "app"}]});
        let err = plan(&no_volumes, &target(), &InjectSettings::default()).expect_err("no volumes");
        assert!(err.to_string().ends_with("its volumes are: none"), "{err}");
    }

    #[test]
    fn a_foreign_container_with_the_sidecars_name_is_refused() {
        let mut app_named_like_us = pod_spec();
        app_named_like_us["containers"][0]["name"] = json!(SIDECAR_NAME);
        assert_eq!(
            plan(&app_named_like_us, &target(), &InjectSettings::default()),
            Err(InjectError::ContainerNameTaken { list: "containers" })
        );

        let mut init_named_like_us = pod_spec();
        init_named_like_us["initContainers"] =
            json!([{"name": SIDECAR_NAME, "image": "busybox", "command": ["sh", "-c", "true"]}]);
        assert_eq!(
            plan(&init_named_like_us, &target(), &InjectSettings::default()),
            Err(InjectError::ContainerNameTaken {
                list: "initContainers"
            })
        );
    }

    #[test]
    fn a_hand_written_agent_sidecar_is_taken_over() {
        let mut spec = pod_spec();
        spec["initContainers"] = json!([{
            "name": SIDECAR_NAME,
            "image": "old",
            "command": ["/usr/local/bin/syncfolder", "agent"]
        }]);
        let spec = injected(spec);
        assert_eq!(init_names(&spec), [SIDECAR_NAME]);
        assert_eq!(
            spec["initContainers"][0]["image"],
            InjectSettings::default().image
        );
    }

    #[test]
    fn a_foreign_volume_with_the_tmp_name_is_refused() {
        let mut spec = pod_spec();
        spec["volumes"]
            .as_array_mut()
            .expect("volumes")
            .push(json!({"name": TMP_VOLUME_NAME, "hostPath": {"path": "/"}}));
        assert_eq!(
            plan(&spec, &target(), &InjectSettings::default()),
            Err(InjectError::VolumeNameTaken)
        );
    }

    #[test]
    fn malformed_pod_specs_are_errors_not_panics() {
        for spec in [
            json!("pod"),
            json!({"volumes": "data"}),
            json!({"volumes": [{"name": "data"}], "initContainers": {"a": 1}}),
            json!({"volumes": [{"name": "data"}], "containers": 3}),
        ] {
            assert!(
                matches!(
                    plan(&spec, &target(), &InjectSettings::default()),
                    Err(InjectError::NotAPodSpec { .. })
                ),
                "{spec}"
            );
        }
    }

    #[test]
    fn unknown_fields_of_a_newer_cluster_pass_through() {
        let mut spec = pod_spec();
        spec["someFutureField"] = json!({"enabled": true});
        spec["containers"][0]["futureContainerField"] = json!(1);
        let spec = injected(spec);
        assert_eq!(spec["someFutureField"], json!({"enabled": true}));
        assert_eq!(spec["containers"][0]["futureContainerField"], json!(1));
    }

    #[test]
    fn typed_injection_matches_json_injection() {
        let typed: PodSpec = serde_json::from_value(pod_spec()).expect("pod spec");
        let target = InjectTarget {
            mode: Some(FolderMode::SendOnly),
            ..target()
        };
        let once = inject(&typed, &target, &InjectSettings::default()).expect("inject");
        let twice = inject(&once, &target, &InjectSettings::default()).expect("inject");
        assert_eq!(once, twice);
        let mut json = pod_spec();
        inject_value(&mut json, &target, &InjectSettings::default()).expect("inject");
        assert_eq!(serde_json::to_value(&once).expect("json"), json);
        let init = once.init_containers.expect("init containers");
        assert_eq!(init.len(), 1);
        assert_eq!(init[0].restart_policy.as_deref(), Some("Always"));
    }

    #[test]
    fn operations_move_under_a_prefix() {
        let operations = plan(&pod_spec(), &target(), &InjectSettings::default()).expect("plan");
        let prefix = PointerBuf::from_tokens(["spec", "template", "spec"]);
        let paths: Vec<String> = under(&prefix, operations)
            .iter()
            .map(|operation| operation.path().to_string())
            .collect();
        assert_eq!(
            paths,
            [
                "/spec/template/spec/initContainers",
                "/spec/template/spec/volumes/-"
            ]
        );
    }
}
