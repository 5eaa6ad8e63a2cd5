//! The sidecar container itself: [`InjectSettings`] (what the cluster admin
//! chooses: image, resources, ports) and the container built from them.
//!
//! The agent is configured through environment variables only (its CLI
//! reads every flag from `SYNCFOLDER_*` too): server URL, server folder name
//! and token come from the folder's Secret, the agent id from the pod's
//! name. Nothing in the container depends on the SyncFolder object beyond its
//! name, which is what lets `syncfolder inject` work offline.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource,
    HTTPGetAction, ObjectFieldSelector, Probe, ResourceRequirements, SeccompProfile,
    SecretKeySelector, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::annotations::InjectTarget;
use crate::names::{SECRET_KEY_FOLDER, SECRET_KEY_SERVER, SECRET_KEY_TOKEN, token_secret_name};

/// The sidecar's container name; injection recognises its own sidecar by it.
pub const SIDECAR_NAME: &str = "syncfolder-agent";
/// Where the synced volume is mounted in the sidecar.
pub const DATA_MOUNT_PATH: &str = "/syncfolder/data";
/// An `emptyDir` for the agent's temporary files, since its root filesystem
/// is read-only.
pub const TMP_VOLUME_NAME: &str = "syncfolder-agent-tmp";
/// Where [`TMP_VOLUME_NAME`] is mounted.
pub const TMP_MOUNT_PATH: &str = "/tmp";
/// Name of the metrics port (port names have at most 15 characters).
pub const METRICS_PORT_NAME: &str = "sf-metrics";
/// The agent's program and subcommand.
pub const AGENT_COMMAND: [&str; 2] = ["syncfolder", "agent"];
/// Period of the startup probe; `startup_timeout_seconds` is divided by it.
const STARTUP_PROBE_PERIOD_SECONDS: i32 = 2;

/// What the cluster admin chooses for every injected sidecar (the Helm
/// chart's values, passed to the controller and to `syncfolder inject`).
#[derive(Debug, Clone, PartialEq)]
pub struct InjectSettings {
    /// The syncfolder image; the same image serves every role.
    pub image: String,
    /// `IfNotPresent`, `Always` or `Never`.
    pub image_pull_policy: String,
    /// Requests and limits of the sidecar.
    pub resources: ResourceRequirements,
    /// The agent serves `/metrics`, `/healthz` and `/readyz` on this port, on
    /// every address of the pod. Change it when the application uses 9477.
    pub metrics_port: u16,
    /// How long the first full sync may take before the kubelet gives up and
    /// restarts the sidecar. The application starts only after it.
    pub startup_timeout_seconds: u32,
    /// The sidecar's user and group. `None` inherits the pod's
    /// `securityContext` (usually what you want: the agent then owns files
    /// like the application does) or else the image's non-root user.
    pub run_as_user: Option<i64>,
    pub run_as_group: Option<i64>,
}

impl Default for InjectSettings {
    fn default() -> Self {
        InjectSettings {
            image: format!("syncfolder/syncfolder:{}", env!("CARGO_PKG_VERSION")),
            image_pull_policy: "IfNotPresent".to_owned(),
            resources: ResourceRequirements {
                requests: Some(BTreeMap::from([
                    ("cpu".to_owned(), Quantity("50m".to_owned())),
                    ("memory".to_owned(), Quantity("64Mi".to_owned())),
                ])),
                limits: Some(BTreeMap::from([(
                    "memory".to_owned(),
                    Quantity("256Mi".to_owned()),
                )])),
                ..ResourceRequirements::default()
            },
            metrics_port: 9477,
            startup_timeout_seconds: 1800,
            run_as_user: None,
            run_as_group: None,
        }
    }
}

impl InjectSettings {
    /// These settings with the sidecar's CPU request, memory request and
    /// memory limit (Kubernetes quantities such as `50m`, `64Mi`).
    pub fn with_resources(
        mut self,
        cpu_request: &str,
        memory_request: &str,
        memory_limit: &str,
    ) -> Self {
        self.resources = ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".to_owned(), Quantity(cpu_request.to_owned())),
                ("memory".to_owned(), Quantity(memory_request.to_owned())),
            ])),
            limits: Some(BTreeMap::from([(
                "memory".to_owned(),
                Quantity(memory_limit.to_owned()),
            )])),
            ..ResourceRequirements::default()
        };
        self
    }
}

/// The native sidecar for `target`: an init container with
/// `restartPolicy: Always`, whose startup probe passes after the agent's
/// first full sync, so the application containers start with the folder in
/// place.
///
/// Every field the API server would otherwise default (probe timings,
/// port protocol, `fieldRef.apiVersion`, …) is set explicitly, so the
/// container read back from the API server equals this one and re-injection
/// is a no-op.
pub fn sidecar_container(target: &InjectTarget, settings: &InjectSettings) -> Container {
    let secret_name = token_secret_name(&target.folder);
    let from_secret = |key: &str| EnvVarSource {
        secret_key_ref: Some(SecretKeySelector {
            name: secret_name.clone(),
            key: key.to_owned(),
            optional: Some(false),
        }),
        ..EnvVarSource::default()
    };
    let mut env = vec![
        env_from("SYNCFOLDER_SERVER", from_secret(SECRET_KEY_SERVER)),
        env_from("SYNCFOLDER_FOLDER", from_secret(SECRET_KEY_FOLDER)),
        env_from("SYNCFOLDER_TOKEN", from_secret(SECRET_KEY_TOKEN)),
        env_value("SYNCFOLDER_PATH", DATA_MOUNT_PATH),
        env_from(
            "SYNCFOLDER_AGENT_ID",
            EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    api_version: Some("v1".to_owned()),
                    field_path: "metadata.name".to_owned(),
                }),
                ..EnvVarSource::default()
            },
        ),
        env_value(
            "SYNCFOLDER_METRICS_LISTEN",
            &format!("0.0.0.0:{}", settings.metrics_port),
        ),
        env_value("SYNCFOLDER_LOG_FORMAT", "json"),
    ];
    if let Some(mode) = target.mode {
        env.push(env_value("SYNCFOLDER_MODE", mode.as_str()));
    }

    let startup_failure_threshold = i32::try_from(
        settings
            .startup_timeout_seconds
            .div_ceil(STARTUP_PROBE_PERIOD_SECONDS.unsigned_abs())
            .max(1),
    )
    .unwrap_or(i32::MAX);

    Container {
        name: SIDECAR_NAME.to_owned(),
        image: Some(settings.image.clone()),
        image_pull_policy: Some(settings.image_pull_policy.clone()),
        command: Some(
            AGENT_COMMAND
                .iter()
                .map(|part| (*part).to_owned())
                .collect(),
        ),
        env: Some(env),
        ports: Some(vec![ContainerPort {
            name: Some(METRICS_PORT_NAME.to_owned()),
            container_port: i32::from(settings.metrics_port),
            protocol: Some("TCP".to_owned()),
            ..ContainerPort::default()
        }]),
        volume_mounts: Some(vec![
            VolumeMount {
                name: target.volume.clone(),
                mount_path: DATA_MOUNT_PATH.to_owned(),
                ..VolumeMount::default()
            },
            VolumeMount {
                name: TMP_VOLUME_NAME.to_owned(),
                mount_path: TMP_MOUNT_PATH.to_owned(),
                ..VolumeMount::default()
            },
        ]),
        startup_probe: Some(http_probe(
            "/readyz",
            settings.metrics_port,
            STARTUP_PROBE_PERIOD_SECONDS,
            startup_failure_threshold,
        )),
        liveness_probe: Some(http_probe("/healthz", settings.metrics_port, 10, 3)),
        resources: Some(settings.resources.clone()),
        security_context: Some(restricted_security_context(settings)),
        restart_policy: Some("Always".to_owned()),
        ..Container::default()
    }
}

/// The sidecar's scratch volume.
pub fn tmp_volume() -> Volume {
    Volume {
        name: TMP_VOLUME_NAME.to_owned(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Volume::default()
    }
}

fn env_value(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value.to_owned()),
        value_from: None,
    }
}

fn env_from(name: &str, source: EnvVarSource) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: None,
        value_from: Some(source),
    }
}

fn http_probe(path: &str, port: u16, period_seconds: i32, failure_threshold: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::Int(i32::from(port)),
            scheme: Some("HTTP".to_owned()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period_seconds),
        failure_threshold: Some(failure_threshold),
        timeout_seconds: Some(1),
        success_threshold: Some(1),
        ..Probe::default()
    }
}

/// The Pod Security Standards' "restricted" profile.
fn restricted_security_context(settings: &InjectSettings) -> SecurityContext {
    SecurityContext {
        run_as_non_root: Some(true),
        run_as_user: settings.run_as_user,
        run_as_group: settings.run_as_group,
        read_only_root_filesystem: Some(true),
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".to_owned()]),
            add: None,
        }),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".to_owned(),
            localhost_profile: None,
        }),
        ..SecurityContext::default()
    }
}

#[cfg(test)]
mod tests {
    use syncfolder_core::protocol::FolderMode;

    use super::*;

    fn env_names(container: &Container) -> Vec<&str> {
        container
            .env
            .iter()
            .flatten()
            .map(|env| env.name.as_str())
            .collect()
    }

    #[test]
    fn the_sidecar_is_a_native_sidecar_running_the_agent() {
        let container = sidecar_container(
            &InjectTarget::new("photos", "data"),
            &InjectSettings::default(),
        );
        assert_eq!(container.name, SIDECAR_NAME);
        assert_eq!(container.restart_policy.as_deref(), Some("Always"));
        assert_eq!(
            container.command,
            Some(vec!["syncfolder".to_owned(), "agent".to_owned()])
        );
        assert!(container.args.is_none());
        let mounts = container.volume_mounts.as_ref().expect("mounts");
        assert_eq!(mounts[0].name, "data");
        assert_eq!(mounts[0].mount_path, DATA_MOUNT_PATH);
        assert_eq!(mounts[1].name, TMP_VOLUME_NAME);
    }

    #[test]
    fn secrets_come_from_the_folders_secret_and_the_id_from_the_pod_name() {
        let container = sidecar_container(
            &InjectTarget::new("photos", "data"),
            &InjectSettings::default(),
        );
        let json = serde_json::to_value(&container).expect("json");
        let env = json["env"].as_array().expect("env");
        let by_name = |name: &str| {
            env.iter()
                .find(|entry| entry["name"] == name)
                .unwrap_or_else(|| panic!("{name} missing"))
                .clone()
        };
        for (name, key) in [
            ("SYNCFOLDER_SERVER", "server"),
            ("SYNCFOLDER_FOLDER", "folder"),
            ("SYNCFOLDER_TOKEN", "token"),
        ] {
            let entry = by_name(name);
            assert_eq!(
                entry["valueFrom"]["secretKeyRef"]["name"],
                "syncfolder-photos-token"
            );
            assert_eq!(entry["valueFrom"]["secretKeyRef"]["key"], key);
            assert!(entry.get("value").is_none(), "{name} must not be inline");
        }
        assert_eq!(
            by_name("SYNCFOLDER_AGENT_ID")["valueFrom"]["fieldRef"]["fieldPath"],
            "metadata.name"
        );
        assert_eq!(by_name("SYNCFOLDER_PATH")["value"], DATA_MOUNT_PATH);
        assert_eq!(
            by_name("SYNCFOLDER_METRICS_LISTEN")["value"],
            "0.0.0.0:9477"
        );
        assert_eq!(by_name("SYNCFOLDER_LOG_FORMAT")["value"], "json");
        assert!(!env_names(&container).contains(&"SYNCFOLDER_MODE"));
    }

    #[test]
    fn a_mode_override_becomes_the_mode_variable() {
        let target = InjectTarget {
            mode: Some(FolderMode::ReceiveOnly),
            ..InjectTarget::new("photos", "data")
        };
        let container = sidecar_container(&target, &InjectSettings::default());
        let mode = container
            .env
            .iter()
            .flatten()
            .find(|env| env.name == "SYNCFOLDER_MODE")
            .expect("mode");
        assert_eq!(mode.value.as_deref(), Some("receive-only"));
    }

    #[test]
    fn probes_watch_the_agents_health_endpoints_on_the_metrics_port() {
        let settings = InjectSettings {
            metrics_port: 9999,
            startup_timeout_seconds: 601,
            ..InjectSettings::default()
        };
        let container = sidecar_container(&InjectTarget::new("photos", "data"), &settings);
        let startup = container.startup_probe.expect("startup probe");
        let startup_get = startup.http_get.expect("http");
        assert_eq!(startup_get.path.as_deref(), Some("/readyz"));
        assert_eq!(startup_get.port, IntOrString::Int(9999));
        // 601 s at one probe every 2 s: 301 tries, never less than asked
        assert_eq!(startup.failure_threshold, Some(301));
        assert_eq!(startup.period_seconds, Some(2));
        let liveness = container.liveness_probe.expect("liveness probe");
        assert_eq!(
            liveness.http_get.expect("http").path.as_deref(),
            Some("/healthz")
        );
        assert_eq!(container.ports.expect("ports")[0].container_port, 9999);
    }

    #[test]
    fn the_security_context_is_restricted() {
        let container = sidecar_container(
            &InjectTarget::new("photos", "data"),
            &InjectSettings::default(),
        );
        let context = container.security_context.expect("security context");
        assert_eq!(context.run_as_non_root, Some(true));
        assert_eq!(context.read_only_root_filesystem, Some(true));
        assert_eq!(context.allow_privilege_escalation, Some(false));
        assert_eq!(
            context.capabilities.expect("caps").drop,
            Some(vec!["ALL".to_owned()])
        );
        assert_eq!(
            context.seccomp_profile.expect("seccomp").type_,
            "RuntimeDefault"
        );
        assert_eq!(context.privileged, None);
        assert_eq!(
            context.run_as_user, None,
            "inherits the pod's user by default"
        );
    }

    #[test]
    fn resources_come_from_the_settings() {
        let container = sidecar_container(
            &InjectTarget::new("photos", "data"),
            &InjectSettings::default(),
        );
        let resources = container.resources.expect("resources");
        assert_eq!(
            resources.requests.expect("requests")["memory"],
            Quantity("64Mi".to_owned())
        );
        assert_eq!(
            resources.limits.expect("limits")["memory"],
            Quantity("256Mi".to_owned())
        );
    }
}
