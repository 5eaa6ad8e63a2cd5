//! The `SyncFolder` custom resource (`syncfolder.io/v1alpha1`): what a user
//! declares (spec), what the controller reports (status), and the CRD built
//! from both.
//!
//! Every field's doc comment becomes its description in the CRD, so
//! `kubectl explain syncfolder.spec` shows it. CEL rules
//! (`x-kubernetes-validations`) catch the mistakes a schema cannot: a quota
//! that is not a whole number of bytes, a server given twice, a server
//! changed after creation.

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, CustomResourceExt, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use syncfolder_core::protocol::{FolderMode, FolderSettings, HistoryRetention};

use crate::quota::{QuotaError, quantity_bytes};

/// A folder on the syncfolder server, kept identical in every pod that
/// mounts it through the syncfolder sidecar.
///
/// The controller creates the folder on the server with these settings, a
/// Secret `syncfolder-<name>-token` holding the folder's token (keys
/// `token`, `folder`, `server`), and keeps `status` up to date. Pods opt in
/// with the annotations `syncfolder.io/folder: <name>` and
/// `syncfolder.io/volume: <volume>`.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "syncfolder.io",
    version = "v1alpha1",
    kind = "SyncFolder",
    namespaced,
    status = "SyncFolderStatus",
    derive = "PartialEq",
    shortname = "sf",
    category = "syncfolder",
    doc = "A folder kept identical in every pod that mounts it through the syncfolder sidecar.",
    printcolumn(name = "Mode", type_ = "string", json_path = ".spec.mode"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Files", type_ = "integer", json_path = ".status.files"),
    printcolumn(name = "Bytes", type_ = "integer", json_path = ".status.bytes"),
    printcolumn(name = "Agents", type_ = "integer", json_path = ".status.connectedAgents"),
    printcolumn(name = "Conflicts", type_ = "integer", json_path = ".status.conflicts"),
    printcolumn(name = "Last Change", type_ = "date", json_path = ".status.lastChange"),
    printcolumn(
        name = "Reason",
        type_ = "string",
        priority = 1,
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason"
    ),
    printcolumn(
        name = "Server Folder",
        type_ = "string",
        priority = 1,
        json_path = ".status.serverFolder"
    ),
    printcolumn(
        name = "History",
        type_ = "integer",
        priority = 1,
        json_path = ".status.historyBytes"
    ),
    printcolumn(
        name = "Stored",
        type_ = "integer",
        priority = 1,
        json_path = ".status.storedBytes"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("size(self.metadata.name) <= 63").message(
        "a SyncFolder name has at most 63 characters: it names a Secret and labels pods"
    ),
)]
#[x_kube(validation = Rule::new(
    "has(self.server) == has(oldSelf.server) && (!has(self.server) || self.server == oldSelf.server)"
).message(
    "spec.server cannot change after creation: the folder's data lives on the first server; create a new SyncFolder instead"
))]
#[serde(rename_all = "camelCase")]
pub struct SyncFolderSpec {
    /// How agents treat their copy: `two-way` (changes flow both ways),
    /// `send-only` (the pods' copy is the truth; remote changes are not
    /// applied) or `receive-only` (pods never upload).
    #[serde(default)]
    pub mode: SyncFolderMode,

    /// Extra ignore patterns in gitignore syntax (for example `*.tmp` or
    /// `cache/`), applied by every agent on top of the folder's `.syncignore`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ignore: Vec<String>,

    /// How long the server keeps earlier versions of each file.
    #[serde(default)]
    pub history: HistorySpec,

    /// Largest total size of the folder's current files, as a Kubernetes
    /// quantity of bytes (`10Gi`, `500M`) or a plain number of bytes. Unset
    /// means no limit. Commits that would exceed it are refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "quota_schema")]
    pub quota: Option<Quantity>,

    /// What happens to the folder's data on the server when this SyncFolder
    /// is deleted: `Retain` keeps it (a new SyncFolder with the same name
    /// and namespace finds it again), `Delete` removes it with its history.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,

    /// While true the controller leaves the server folder and its Secret as
    /// they are (settings are not applied, nothing is created or deleted);
    /// status is still refreshed. Sidecars keep syncing.
    #[serde(default)]
    pub paused: bool,

    /// The syncfolder server holding this folder. Unset means the server the
    /// controller was installed with (the Helm chart's server). Cannot change
    /// after creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<ServerRef>,
}

impl SyncFolderSpec {
    /// The quota in bytes; 0 (the server's "no limit") when unset.
    pub fn quota_bytes(&self) -> Result<u64, QuotaError> {
        self.quota.as_ref().map_or(Ok(0), quantity_bytes)
    }

    /// The server folder's settings this spec asks for.
    pub fn folder_settings(&self) -> Result<FolderSettings, QuotaError> {
        Ok(FolderSettings {
            mode: self.mode.into(),
            retention: self.history.into(),
            ignore_patterns: self.ignore.clone(),
            quota_bytes: self.quota_bytes()?,
        })
    }
}

/// How agents of a folder treat their local copy. Same names as the
/// server's `FolderMode`.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum SyncFolderMode {
    /// Changes flow both ways.
    #[default]
    TwoWay,
    /// The pods' copy is the truth: agents upload and never apply remote changes.
    SendOnly,
    /// Agents never upload; they apply remote changes.
    ReceiveOnly,
}

impl From<SyncFolderMode> for FolderMode {
    fn from(mode: SyncFolderMode) -> Self {
        match mode {
            SyncFolderMode::TwoWay => FolderMode::TwoWay,
            SyncFolderMode::SendOnly => FolderMode::SendOnly,
            SyncFolderMode::ReceiveOnly => FolderMode::ReceiveOnly,
        }
    }
}

impl From<FolderMode> for SyncFolderMode {
    fn from(mode: FolderMode) -> Self {
        match mode {
            FolderMode::TwoWay => SyncFolderMode::TwoWay,
            FolderMode::SendOnly => SyncFolderMode::SendOnly,
            FolderMode::ReceiveOnly => SyncFolderMode::ReceiveOnly,
        }
    }
}

/// Retention of earlier file versions. A version is dropped once it is
/// beyond `keepVersions` newer versions *and* older than `keepDays` days;
/// 0 turns that limit off (0 and 0 keeps every version forever).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct HistorySpec {
    /// Earlier versions kept per file, whatever their age; 0 for no limit.
    #[serde(default = "default_keep_versions")]
    #[schemars(with = "i64", range(min = 0, max = 4_294_967_295_u32))]
    pub keep_versions: u32,
    /// Days an earlier version is kept, however many newer ones exist; 0 for
    /// no limit.
    #[serde(default = "default_keep_days")]
    #[schemars(with = "i64", range(min = 0, max = 4_294_967_295_u32))]
    pub keep_days: u32,
}

fn default_keep_versions() -> u32 {
    HistoryRetention::default().keep_versions
}

fn default_keep_days() -> u32 {
    HistoryRetention::default().keep_days
}

impl Default for HistorySpec {
    fn default() -> Self {
        HistoryRetention::default().into()
    }
}

impl From<HistorySpec> for HistoryRetention {
    fn from(history: HistorySpec) -> Self {
        HistoryRetention {
            keep_versions: history.keep_versions,
            keep_days: history.keep_days,
        }
    }
}

impl From<HistoryRetention> for HistorySpec {
    fn from(retention: HistoryRetention) -> Self {
        HistorySpec {
            keep_versions: retention.keep_versions,
            keep_days: retention.keep_days,
        }
    }
}

/// What deleting the SyncFolder does to the data on the server.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DeletionPolicy {
    /// Keep the folder, its files and history on the server.
    #[default]
    Retain,
    /// Delete the folder, its files and history from the server.
    Delete,
}

/// Where a syncfolder server is: a URL, or a Service in the cluster.
/// Exactly one of `url` and `service`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[x_kube(
    validation = Rule::new("has(self.url) != has(self.service)")
        .message("set exactly one of server.url and server.service")
)]
#[serde(rename_all = "camelCase")]
pub struct ServerRef {
    /// Base URL of the server, such as `https://sync.example.com`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("isURL(self) && url(self).getScheme() in ['http', 'https']")
        .message("server.url must be an http:// or https:// URL"))]
    pub url: Option<String>,

    /// A Service in the cluster in front of the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ServiceRef>,

    /// A Secret in the SyncFolder's namespace holding that server's admin
    /// token. Unset means the controller's own admin token, which only the
    /// default server accepts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_token_secret: Option<SecretKeyRef>,
}

/// A Service by name.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ServiceRef {
    /// The Service's name.
    pub name: String,
    /// The Service's namespace; unset means the SyncFolder's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The Service's port the server listens on.
    #[serde(default = "default_server_port")]
    #[schemars(with = "i32", range(min = 1, max = 65535))]
    pub port: u16,
}

fn default_server_port() -> u16 {
    8080
}

/// One key of a Secret.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// The Secret's name.
    pub name: String,
    /// The key within the Secret.
    #[serde(default = "default_token_key")]
    pub key: String,
}

fn default_token_key() -> String {
    "token".to_owned()
}

/// What the controller last saw of the folder.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SyncFolderStatus {
    /// Current state in Kubernetes condition form. `Ready` is True once the
    /// server folder exists with the spec's settings and its Secret is in
    /// place; its reason says what is wrong otherwise.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,

    /// The `metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// The folder's name on the server (`<namespace>.<name>`, shortened with
    /// a hash when longer than 63 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_folder: Option<String>,

    /// Current (not deleted) files in the folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<i64>", range(min = 0))]
    pub files: Option<u64>,

    /// Total size of the current files, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<i64>", range(min = 0))]
    pub bytes: Option<u64>,

    /// Conflict copies made since the folder was created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<i64>", range(min = 0))]
    pub conflicts: Option<u64>,

    /// Total size of the earlier file versions the server keeps as
    /// history, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<i64>", range(min = 0))]
    pub history_bytes: Option<u64>,

    /// Bytes of the distinct chunks the folder's files and history need the
    /// server to store (chunks shared with other folders count in each).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<i64>", range(min = 0))]
    pub stored_bytes: Option<u64>,

    /// Agents connected to the server for this folder right now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<i64>", range(min = 0))]
    pub connected_agents: Option<u32>,

    /// When the last change to the folder was accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_change: Option<Time>,

    /// Every agent the server knows for this folder, with its last full sync.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["agentId"]))]
    pub agents: Vec<AgentStatus>,
}

/// One agent of the folder.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AgentStatus {
    /// The agent's id: the pod's name for injected sidecars.
    pub agent_id: String,
    /// When the agent last finished a full sync.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_successful_sync: Option<Time>,
    /// The agent polled the server within the last 90 seconds.
    #[serde(default)]
    pub connected: bool,
}

/// Schema of `spec.quota`: an integer or a quantity string, whole bytes, not
/// negative. Written by hand because `Quantity`'s own schema carries a page
/// of Go documentation and no validation.
fn quota_schema(_generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "description": "Largest total size of the folder's current files, as a Kubernetes quantity of bytes (`10Gi`, `500M`) or a plain number of bytes. Unset means no limit. Commits that would exceed it are refused.",
        "x-kubernetes-int-or-string": true,
        "x-kubernetes-validations": [{
            // string() turns either form into a quantity string; `type()`
            // would read better but client-side CEL (the tests) lacks it
            "rule": "isQuantity(string(self)) && quantity(string(self)).isInteger() && quantity(string(self)).sign() >= 0",
            "message": "quota must be a whole, non-negative number of bytes, such as 10Gi, 500M or 1073741824"
        }]
    })
}

/// Where the committed CRD lives, relative to the repository's root: the
/// chart installs it from there, and a test fails when it differs from
/// [`crd_yaml`].
pub const CRD_PATH: &str = "charts/syncfolder/files/syncfolders.syncfolder.io.yaml";

/// The CRD as YAML, with a header saying where it comes from. Helm keeps it
/// on `helm uninstall` (deleting a CRD deletes every SyncFolder).
pub fn crd_yaml() -> String {
    let mut crd = SyncFolder::crd();
    crd.metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert("helm.sh/resource-policy".to_owned(), "keep".to_owned());
    // a CRD built from our own types always serializes
    let yaml = serde_yaml::to_string(&crd).expect("the SyncFolder CRD serializes to YAML");
    format!(
        "# Generated from crates/controller/src/crd.rs; do not edit.\n\
         # Regenerate: cargo xtask crdgen\n\
         {yaml}"
    )
}

#[cfg(test)]
mod tests {
    use kube::core::cel::Validator;
    use serde_json::{Value, json};

    use super::*;

    const COMMITTED_CRD: &str =
        include_str!("../../../charts/syncfolder/files/syncfolders.syncfolder.io.yaml");

    fn openapi_schema() -> Value {
        let crd = SyncFolder::crd();
        let schema = crd.spec.versions[0]
            .schema
            .as_ref()
            .and_then(|validation| validation.open_api_v3_schema.as_ref())
            .expect("the CRD has a schema");
        serde_json::to_value(schema).expect("json")
    }

    fn object(name: &str, spec: Value) -> Value {
        json!({
            "apiVersion": "syncfolder.io/v1alpha1",
            "kind": "SyncFolder",
            "metadata": {"name": name, "namespace": "default"},
            "spec": spec,
        })
    }

    /// The messages of the CEL rules that refuse `spec`, as the API server
    /// would evaluate them.
    fn refusals(spec: Value) -> Vec<String> {
        refusals_of(&object("photos", spec), None)
    }

    fn refusals_of(object: &Value, old: Option<&Value>) -> Vec<String> {
        match Validator::new().validate(&openapi_schema(), object, old) {
            Ok(()) => Vec::new(),
            Err(errors) => errors.iter().map(|error| error.message.clone()).collect(),
        }
    }

    #[test]
    fn the_committed_crd_is_the_generated_one() {
        assert!(
            COMMITTED_CRD == crd_yaml(),
            "{CRD_PATH} is stale: run cargo xtask crdgen"
        );
    }

    #[test]
    fn the_crd_yaml_reads_back_as_the_crd() {
        let read_back: k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition =
            serde_yaml::from_str(&crd_yaml()).expect("the YAML is a CRD");
        assert_eq!(read_back.spec, SyncFolder::crd().spec);
        assert_eq!(
            read_back.metadata.annotations.unwrap_or_default()["helm.sh/resource-policy"],
            "keep",
            "helm uninstall must not delete every SyncFolder with the CRD"
        );
        assert_eq!(
            read_back.metadata.name.as_deref(),
            Some("syncfolders.syncfolder.io")
        );
        assert_eq!(read_back.spec.scope, "Namespaced");
        assert_eq!(
            read_back.spec.names.short_names,
            Some(vec!["sf".to_owned()])
        );
        let version = &read_back.spec.versions[0];
        assert_eq!(version.name, "v1alpha1");
        assert!(
            version
                .subresources
                .as_ref()
                .and_then(|sub| sub.status.as_ref())
                .is_some(),
            "status subresource"
        );
        let columns: Vec<&str> = version
            .additional_printer_columns
            .iter()
            .flatten()
            .map(|column| column.name.as_str())
            .collect();
        for wanted in [
            "Mode",
            "Ready",
            "Files",
            "Bytes",
            "Agents",
            "Conflicts",
            "Last Change",
            "Age",
        ] {
            assert!(
                columns.contains(&wanted),
                "no {wanted} column in {columns:?}"
            );
        }
    }

    #[test]
    fn every_field_has_a_description() {
        fn walk(path: &str, schema: &Value, missing: &mut Vec<String>) {
            if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
                for (name, property) in properties {
                    let path = format!("{path}.{name}");
                    let described = property
                        .get("description")
                        .and_then(Value::as_str)
                        .is_some_and(|text| !text.trim().is_empty());
                    if !described {
                        missing.push(path.clone());
                    }
                    walk(&path, property, missing);
                }
            }
            if let Some(items) = schema.get("items") {
                walk(&format!("{path}[]"), items, missing);
            }
        }
        let mut missing = Vec::new();
        walk("", &openapi_schema(), &mut missing);
        assert!(
            missing.is_empty(),
            "fields without a description: {missing:?}"
        );
    }

    #[test]
    fn the_schema_uses_only_formats_kubernetes_knows() {
        let yaml = crd_yaml();
        for line in yaml
            .lines()
            .filter(|line| line.trim_start().starts_with("format:"))
        {
            let format = line.trim_start().trim_start_matches("format:").trim();
            assert!(["int32", "int64", "date-time"].contains(&format), "{line}");
        }
    }

    #[test]
    fn an_empty_spec_gets_the_servers_defaults() {
        let spec: SyncFolderSpec = serde_json::from_value(json!({})).expect("spec");
        assert_eq!(spec.mode, SyncFolderMode::TwoWay);
        assert_eq!(
            spec.history,
            HistorySpec {
                keep_versions: 10,
                keep_days: 30
            }
        );
        assert_eq!(spec.deletion_policy, DeletionPolicy::Retain);
        assert!(!spec.paused);
        assert_eq!(spec.folder_settings(), Ok(FolderSettings::default()));
        assert!(refusals(json!({})).is_empty());
    }

    #[test]
    fn the_spec_becomes_the_server_folders_settings() {
        let spec: SyncFolderSpec = serde_json::from_value(json!({
            "mode": "receive-only",
            "ignore": ["*.tmp", "cache/"],
            "history": {"keepVersions": 0, "keepDays": 7},
            "quota": "10Gi",
        }))
        .expect("spec");
        assert_eq!(
            spec.folder_settings(),
            Ok(FolderSettings {
                mode: FolderMode::ReceiveOnly,
                retention: HistoryRetention {
                    keep_versions: 0,
                    keep_days: 7
                },
                ignore_patterns: vec!["*.tmp".to_owned(), "cache/".to_owned()],
                quota_bytes: 10 << 30,
            })
        );
        let plain_bytes: SyncFolderSpec =
            serde_json::from_value(json!({"quota": 1_048_576})).expect("spec");
        assert_eq!(plain_bytes.quota_bytes(), Ok(1_048_576));
        let bad: SyncFolderSpec = serde_json::from_value(json!({"quota": "10GB"})).expect("spec");
        assert!(matches!(
            bad.folder_settings(),
            Err(QuotaError::Malformed { .. })
        ));
    }

    #[test]
    fn modes_are_spelled_like_the_servers() {
        for mode in [
            FolderMode::TwoWay,
            FolderMode::SendOnly,
            FolderMode::ReceiveOnly,
        ] {
            let ours = SyncFolderMode::from(mode);
            assert_eq!(
                serde_json::to_value(ours).expect("json"),
                serde_json::to_value(mode).expect("json")
            );
            assert_eq!(FolderMode::from(ours), mode);
        }
    }

    #[test]
    fn quotas_that_are_not_whole_bytes_are_refused_by_the_api_server() {
        for good in [
            json!("10Gi"),
            json!("500M"),
            json!(1_073_741_824),
            json!("0"),
            json!("1.5Gi"),
        ] {
            let refused = refusals(json!({"quota": good}));
            assert!(refused.is_empty(), "{good}: {refused:?}");
        }
        for bad in [
            json!("10GB"),
            json!("-1Gi"),
            json!(-5),
            json!("1500m"),
            json!("lots"),
        ] {
            let refused = refusals(json!({"quota": bad}));
            assert!(
                refused
                    .iter()
                    .any(|message| message.contains("whole, non-negative number of bytes")),
                "{bad}: {refused:?}"
            );
        }
    }

    #[test]
    fn a_server_is_a_url_or_a_service_never_both() {
        assert!(refusals(json!({"server": {"url": "https://sync.example.com"}})).is_empty());
        assert!(refusals(json!({"server": {"service": {"name": "syncfolder"}}})).is_empty());
        let both = refusals(json!({"server": {
            "url": "http://a:8080",
            "service": {"name": "syncfolder", "port": 8080}
        }}));
        assert!(
            both.iter().any(|message| message.contains("exactly one")),
            "{both:?}"
        );
        let neither = refusals(json!({"server": {}}));
        assert!(
            neither
                .iter()
                .any(|message| message.contains("exactly one")),
            "{neither:?}"
        );
        let ftp = refusals(json!({"server": {"url": "ftp://files.example.com"}}));
        assert!(
            ftp.iter()
                .any(|message| message.contains("http:// or https://")),
            "{ftp:?}"
        );
    }

    #[test]
    fn the_server_cannot_change_after_creation() {
        let old = object("photos", json!({"server": {"url": "http://a:8080"}}));
        let same = old.clone();
        assert!(refusals_of(&same, Some(&old)).is_empty());
        let moved = object("photos", json!({"server": {"url": "http://b:8080"}}));
        let refused = refusals_of(&moved, Some(&old));
        assert!(
            refused
                .iter()
                .any(|message| message.contains("cannot change")),
            "{refused:?}"
        );
        let dropped = object("photos", json!({}));
        assert!(!refusals_of(&dropped, Some(&old)).is_empty());
        // other fields may change freely
        let paused = object(
            "photos",
            json!({"server": {"url": "http://a:8080"}, "paused": true}),
        );
        assert!(refusals_of(&paused, Some(&old)).is_empty());
    }

    #[test]
    fn names_longer_than_63_characters_are_refused() {
        let long = object(&"a".repeat(64), json!({}));
        let refused = refusals_of(&long, None);
        assert!(
            refused
                .iter()
                .any(|message| message.contains("63 characters")),
            "{refused:?}"
        );
        assert!(refusals_of(&object(&"a".repeat(63), json!({})), None).is_empty());
    }
}
