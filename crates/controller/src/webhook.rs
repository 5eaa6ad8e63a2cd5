//! The mutating admission webhook's handler, as a pure function:
//! an `AdmissionReview` (`admission.k8s.io/v1`) in, the `AdmissionReview`
//! answer out. The HTTPS server around it (certificates, routing) belongs to
//! the controller's binary.
//!
//! What it answers, for a pod being created:
//! - no `syncfolder.io/folder` annotation: allowed, no patch;
//! - the SyncFolder does not exist (or is being deleted): **denied**, with a
//!   message naming the folder and namespace. Letting the pod through
//!   without a sidecar would start the application on an empty directory,
//!   and a sidecar waiting for a Secret nobody writes would hang the pod;
//!   a denial shows up at once on the ReplicaSet's events, and the
//!   ReplicaSet controller retries by itself once the SyncFolder exists;
//! - annotations that cannot work (no volume annotation, a volume the pod
//!   does not have, a foreign `syncfolder-agent` container): denied with what
//!   to change;
//! - already injected exactly so: allowed, no patch;
//! - otherwise: allowed with a base64 RFC 6902 JSON Patch which, applied to
//!   the pod, gives [`crate::inject::inject`]'s result.
//!
//! Anything that is not a pod creation is allowed untouched (the webhook
//! configuration should not send it). A body that is not an
//! `admission.k8s.io/v1` `AdmissionReview` at all is an error: the server
//! should answer it with HTTP 400.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use json_patch::jsonptr::PointerBuf;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::annotations::InjectTarget;
use crate::crd::SyncFolder;
use crate::inject::{InjectError, InjectSettings, plan, under};

/// The only admission API version served.
pub const ADMISSION_API_VERSION: &str = "admission.k8s.io/v1";

/// A body that is not an `AdmissionReview` request.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("not an {ADMISSION_API_VERSION} AdmissionReview: {reason}")]
    Malformed { reason: String },
}

/// The webhook's answer: an `AdmissionReview` holding only a response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionReviewResponse {
    pub api_version: String,
    pub kind: String,
    pub response: AdmissionResponse,
}

/// `AdmissionReview.response`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionResponse {
    /// The request's uid, echoed.
    pub uid: String,
    pub allowed: bool,
    /// Why a request was denied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<AdmissionStatus>,
    /// The RFC 6902 JSON Patch, base64-encoded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patch: Option<String>,
    /// `JSONPatch` whenever `patch` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patch_type: Option<String>,
}

/// The `metav1.Status` of a denial.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdmissionStatus {
    pub code: u16,
    pub reason: String,
    pub message: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AdmissionReviewRequest {
    api_version: String,
    kind: String,
    request: Option<AdmissionRequest>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AdmissionRequest {
    uid: String,
    kind: GroupVersionKind,
    #[serde(default)]
    sub_resource: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
    operation: String,
    #[serde(default)]
    object: Option<Value>,
}

#[derive(Deserialize)]
struct GroupVersionKind {
    #[serde(default)]
    group: String,
    kind: String,
}

/// Answers one admission request. `sync_folder(namespace, name)` looks a
/// SyncFolder up (the controller passes its reflector cache).
pub fn admission_review(
    body: &[u8],
    sync_folder: &dyn Fn(&str, &str) -> Option<SyncFolder>,
    settings: &InjectSettings,
) -> Result<AdmissionReviewResponse, WebhookError> {
    let review: AdmissionReviewRequest =
        serde_json::from_slice(body).map_err(|err| WebhookError::Malformed {
            reason: err.to_string(),
        })?;
    if review.api_version != ADMISSION_API_VERSION || review.kind != "AdmissionReview" {
        return Err(WebhookError::Malformed {
            reason: format!(
                "got apiVersion {:?}, kind {:?}",
                review.api_version, review.kind
            ),
        });
    }
    let request = review.request.ok_or_else(|| WebhookError::Malformed {
        reason: "no request".to_owned(),
    })?;
    let response = decide(&request, sync_folder, settings);
    Ok(AdmissionReviewResponse {
        api_version: ADMISSION_API_VERSION.to_owned(),
        kind: "AdmissionReview".to_owned(),
        response,
    })
}

fn decide(
    request: &AdmissionRequest,
    sync_folder: &dyn Fn(&str, &str) -> Option<SyncFolder>,
    settings: &InjectSettings,
) -> AdmissionResponse {
    let uid = request.uid.clone();
    let allow = |patch: Option<String>| AdmissionResponse {
        uid: uid.clone(),
        allowed: true,
        status: None,
        patch_type: patch.as_ref().map(|_| "JSONPatch".to_owned()),
        patch,
    };
    let deny = |code: u16, reason: &str, message: String| {
        tracing::info!(uid = %uid, %message, "refused a pod");
        AdmissionResponse {
            uid: uid.clone(),
            allowed: false,
            status: Some(AdmissionStatus {
                code,
                reason: reason.to_owned(),
                message,
            }),
            patch: None,
            patch_type: None,
        }
    };

    let is_pod_creation = request.kind.group.is_empty()
        && request.kind.kind == "Pod"
        && request.operation == "CREATE"
        && request.sub_resource.is_none();
    if !is_pod_creation {
        return allow(None);
    }
    let Some(pod) = request.object.as_ref() else {
        return deny(400, "BadRequest", "the request carries no pod".to_owned());
    };
    let annotations = string_annotations(pod);
    let target = match InjectTarget::from_annotations(&annotations) {
        Ok(Some(target)) => target,
        Ok(None) => return allow(None),
        Err(err) => return deny(400, "BadRequest", err.to_string()),
    };
    let Some(namespace) = request
        .namespace
        .as_deref()
        .or_else(|| pod.pointer("/metadata/namespace").and_then(Value::as_str))
    else {
        return deny(400, "BadRequest", "the pod has no namespace".to_owned());
    };
    match sync_folder(namespace, &target.folder) {
        None => {
            let err = InjectError::FolderNotFound {
                namespace: namespace.to_owned(),
                name: target.folder.clone(),
            };
            return deny(403, "Forbidden", err.to_string());
        }
        Some(folder) if folder.metadata.deletion_timestamp.is_some() => {
            return deny(
                403,
                "Forbidden",
                format!(
                    "SyncFolder {:?} in namespace {namespace:?} is being deleted: recreate it, or remove the annotation",
                    target.folder
                ),
            );
        }
        Some(_) => {}
    }
    let pod_spec = pod.get("spec").unwrap_or(&Value::Null);
    let operations = match plan(pod_spec, &target, settings) {
        Ok(operations) => operations,
        Err(err) => return deny(400, "BadRequest", err.to_string()),
    };
    if operations.is_empty() {
        return allow(None);
    }
    let operations = under(&PointerBuf::from_tokens(["spec"]), operations);
    match serde_json::to_vec(&operations) {
        Ok(patch) => {
            tracing::info!(
                uid = %uid,
                %namespace,
                folder = %target.folder,
                volume = %target.volume,
                "injected the syncfolder sidecar"
            );
            allow(Some(BASE64.encode(patch)))
        }
        Err(err) => deny(
            500,
            "InternalError",
            format!("cannot encode the patch: {err}"),
        ),
    }
}

fn string_annotations(pod: &Value) -> BTreeMap<String, String> {
    pod.pointer("/metadata/annotations")
        .and_then(Value::as_object)
        .map(|annotations| {
            annotations
                .iter()
                .filter_map(|(key, value)| Some((key.clone(), value.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::crd::SyncFolderSpec;
    use crate::inject::inject;
    use crate::sidecar::SIDECAR_NAME;

    const ANNOTATED: &str = include_str!("../fixtures/admission/pod-create-annotated.json");
    const PLAIN: &str = include_str!("../fixtures/admission/pod-create-plain.json");
    const MISSING_VOLUME: &str =
        include_str!("../fixtures/admission/pod-create-missing-volume.json");
    const UNKNOWN_FOLDER: &str =
        include_str!("../fixtures/admission/pod-create-unknown-folder.json");

    /// The cluster holds one SyncFolder: team-a/photos.
    fn photos_only(namespace: &str, name: &str) -> Option<SyncFolder> {
        (namespace == "team-a" && name == "photos").then(|| {
            let mut folder = SyncFolder::new("photos", SyncFolderSpec::default());
            folder.metadata.namespace = Some("team-a".to_owned());
            folder
        })
    }

    fn review(body: &str) -> AdmissionResponse {
        admission_review(body.as_bytes(), &photos_only, &InjectSettings::default())
            .expect("a valid review")
            .response
    }

    fn request_object(body: &str) -> Value {
        let review: Value = serde_json::from_str(body).expect("json");
        review["request"]["object"].clone()
    }

    fn patched(body: &str, response: &AdmissionResponse) -> Value {
        let mut pod = request_object(body);
        let patch = BASE64
            .decode(response.patch.as_ref().expect("a patch"))
            .expect("base64");
        let patch: json_patch::Patch = serde_json::from_slice(&patch).expect("a JSON patch");
        json_patch::patch(&mut pod, &patch).expect("the patch applies");
        pod
    }

    #[test]
    fn an_annotated_pod_is_patched_to_what_inject_returns() {
        let response = review(ANNOTATED);
        assert!(response.allowed);
        assert_eq!(response.uid, "5f1b6d38-4a1e-4c1e-9f8a-2b7f0c2e9d11");
        assert_eq!(response.patch_type.as_deref(), Some("JSONPatch"));
        let pod = patched(ANNOTATED, &response);

        let original = request_object(ANNOTATED);
        let typed = serde_json::from_value(original["spec"].clone()).expect("pod spec");
        let injected = inject(
            &typed,
            &InjectTarget::new("photos", "data"),
            &InjectSettings::default(),
        )
        .expect("inject");
        assert_eq!(pod["spec"], serde_json::to_value(injected).expect("json"));
        assert_eq!(pod["spec"]["initContainers"][0]["name"], SIDECAR_NAME);
        // nothing but the spec changed
        assert_eq!(pod["metadata"], original["metadata"]);
    }

    #[test]
    fn the_answer_is_an_admission_review_with_a_base64_patch() {
        let answer = admission_review(
            ANNOTATED.as_bytes(),
            &photos_only,
            &InjectSettings::default(),
        )
        .expect("valid");
        let json = serde_json::to_value(&answer).expect("json");
        assert_eq!(json["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(json["kind"], "AdmissionReview");
        assert_eq!(json["response"]["allowed"], true);
        assert_eq!(json["response"]["patchType"], "JSONPatch");
        assert!(
            json["response"]["patch"].is_string(),
            "base64 text, not a byte array"
        );
        assert!(json["response"].get("status").is_none());
        let operations: Value = serde_json::from_slice(
            &BASE64
                .decode(json["response"]["patch"].as_str().expect("text"))
                .expect("base64"),
        )
        .expect("json");
        let paths: Vec<&str> = operations
            .as_array()
            .expect("list")
            .iter()
            .filter_map(|operation| operation["path"].as_str())
            .collect();
        assert_eq!(paths, ["/spec/initContainers", "/spec/volumes/-"]);
    }

    #[test]
    fn a_pod_without_the_annotation_is_allowed_untouched() {
        let response = review(PLAIN);
        assert!(response.allowed);
        assert_eq!(response.patch, None);
        assert_eq!(response.patch_type, None);
        assert_eq!(response.uid, "a3e9c7f0-77b1-4c55-8d3e-1f2a9b6c4e02");
    }

    #[test]
    fn an_injected_pod_read_back_from_the_api_server_needs_no_patch() {
        let mut pod = patched(ANNOTATED, &review(ANNOTATED));
        // what the API server's defaulting adds to the sidecar
        pod["spec"]["initContainers"][0]["terminationMessagePath"] = json!("/dev/termination-log");
        pod["spec"]["initContainers"][0]["terminationMessagePolicy"] = json!("File");
        let mut body: Value = serde_json::from_str(ANNOTATED).expect("json");
        body["request"]["object"] = pod;
        let response = review(&body.to_string());
        assert!(response.allowed);
        assert_eq!(response.patch, None);
    }

    #[test]
    fn a_pod_with_an_outdated_sidecar_gets_it_replaced() {
        let mut pod = patched(ANNOTATED, &review(ANNOTATED));
        pod["spec"]["initContainers"][0]["image"] = json!("syncfolder/syncfolder:0.0.1");
        let mut body: Value = serde_json::from_str(ANNOTATED).expect("json");
        body["request"]["object"] = pod;
        let body = body.to_string();
        let response = review(&body);
        let repaired = patched(&body, &response);
        assert_eq!(
            repaired["spec"]["initContainers"][0]["image"],
            InjectSettings::default().image
        );
        assert_eq!(
            repaired["spec"]["initContainers"]
                .as_array()
                .expect("list")
                .len(),
            1
        );
        assert_eq!(
            repaired["spec"]["volumes"].as_array().expect("list").len(),
            3
        );
    }

    #[test]
    fn a_pod_for_an_unknown_folder_is_refused_by_name() {
        let response = review(UNKNOWN_FOLDER);
        assert!(!response.allowed);
        assert_eq!(response.patch, None);
        let status = response.status.expect("status");
        assert_eq!(status.code, 403);
        assert_eq!(
            status.message,
            "SyncFolder \"videos\" not found in namespace \"team-a\": create it first, or remove the syncfolder.io/folder annotation"
        );
    }

    #[test]
    fn the_folder_is_looked_up_in_the_pods_namespace() {
        let mut body: Value = serde_json::from_str(ANNOTATED).expect("json");
        body["request"]["namespace"] = json!("team-b");
        let response = review(&body.to_string());
        assert!(!response.allowed);
        assert!(
            response
                .status
                .expect("status")
                .message
                .contains("\"team-b\"")
        );
    }

    #[test]
    fn a_folder_being_deleted_takes_no_new_pods() {
        let deleting = |namespace: &str, name: &str| {
            photos_only(namespace, name).map(|mut folder| {
                folder.metadata.deletion_timestamp =
                    Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                        "2026-11-24T09:00:00Z".parse().expect("time"),
                    ));
                folder
            })
        };
        let response =
            admission_review(ANNOTATED.as_bytes(), &deleting, &InjectSettings::default())
                .expect("valid")
                .response;
        assert!(!response.allowed);
        assert!(
            response
                .status
                .expect("status")
                .message
                .contains("being deleted")
        );
    }

    #[test]
    fn a_pod_without_the_named_volume_is_refused_with_its_volumes() {
        let response = review(MISSING_VOLUME);
        assert!(!response.allowed);
        let status = response.status.expect("status");
        assert_eq!(status.code, 400);
        assert_eq!(
            status.message,
            "the pod has no volume named \"shared\" (syncfolder.io/volume); its volumes are: data, kube-api-access-x7k2p"
        );
    }

    #[test]
    fn a_pod_missing_the_volume_annotation_is_refused_with_the_fix() {
        let mut body: Value = serde_json::from_str(ANNOTATED).expect("json");
        body["request"]["object"]["metadata"]["annotations"]
            .as_object_mut()
            .expect("annotations")
            .remove("syncfolder.io/volume");
        let response = review(&body.to_string());
        assert!(!response.allowed);
        assert!(
            response
                .status
                .expect("status")
                .message
                .contains("add the annotation syncfolder.io/volume")
        );
    }

    #[test]
    fn other_operations_and_kinds_pass_untouched() {
        for (field, value) in [
            ("operation", json!("UPDATE")),
            (
                "kind",
                json!({"group": "apps", "version": "v1", "kind": "Deployment"}),
            ),
            ("subResource", json!("ephemeralcontainers")),
        ] {
            let mut body: Value = serde_json::from_str(ANNOTATED).expect("json");
            body["request"][field] = value;
            let response = review(&body.to_string());
            assert!(response.allowed, "{field}");
            assert_eq!(response.patch, None, "{field}");
        }
    }

    #[test]
    fn bodies_that_are_not_v1_admission_reviews_are_errors() {
        let v1beta1 = ANNOTATED.replace("admission.k8s.io/v1", "admission.k8s.io/v1beta1");
        for body in [
            "",
            "{}",
            "[1]",
            "not json",
            v1beta1.as_str(),
            r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#,
        ] {
            assert!(
                admission_review(body.as_bytes(), &photos_only, &InjectSettings::default())
                    .is_err(),
                "{body}"
            );
        }
    }

    #[test]
    fn a_malformed_pod_is_refused_not_a_panic() {
        let mut body: Value = serde_json::from_str(ANNOTATED).expect("json");
        body["request"]["object"]["spec"]["volumes"] = json!("data");
        let response = review(&body.to_string());
        assert!(!response.allowed);
        body["request"]["object"] = Value::Null;
        let response = review(&body.to_string());
        assert!(!response.allowed);
    }
}
