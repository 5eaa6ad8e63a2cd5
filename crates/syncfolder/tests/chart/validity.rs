//! Is the chart valid: lint, Kubernetes schemas, custom resources, values schema.

use std::collections::BTreeSet;
use std::process::Command;

use serde_json::Value;
use syncfolder_testkit::chart::{CHART_DIR, KUBE_VERSION};
use syncfolder_testkit::tools::project_root;

use crate::kubernetes_validate::{validate_strictly, validator_identity};
use crate::render::{
    EVERYTHING_ON_FULLNAME, EVERYTHING_ON_VALUES, NAMESPACE, Rendered, SCALE_OUT_VALUES,
    ci_values_files, helm, identity, template, template_everything_on, template_scale_out,
    try_template,
};

/// Kinds defined by CRDs of other projects (prometheus-operator,
/// cert-manager), which `kubernetes-validate` has no schema for; they are
/// checked field by field in [`custom_resources_point_at_what_the_chart_renders`].
const CUSTOM_RESOURCE_KINDS: [&str; 5] = [
    "ServiceMonitor",
    "PodMonitor",
    "PrometheusRule",
    "Certificate",
    "Issuer",
];

fn helm_lint(extra: &[&str]) -> Result<String, String> {
    let chart = project_root().join(CHART_DIR);
    let output = Command::new(helm())
        .args(["lint", "--strict", "--kube-version", KUBE_VERSION])
        .arg(&chart)
        .args(extra)
        .output()
        .expect("run helm lint");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if output.status.success() {
        Ok(text)
    } else {
        Err(text)
    }
}

#[test]
fn helm_lint_strict_passes_with_the_defaults_and_with_every_ci_values_file() {
    let values_files = ci_values_files();
    for expected in [EVERYTHING_ON_VALUES, SCALE_OUT_VALUES] {
        assert!(
            values_files.contains(&project_root().join(expected)),
            "{expected} missing from {values_files:?}"
        );
    }
    let mut runs = vec![vec![]];
    for values in &values_files {
        runs.push(vec![
            "--values".to_owned(),
            values.to_string_lossy().into_owned(),
        ]);
    }
    for extra in runs {
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        let report = helm_lint(&extra).unwrap_or_else(|report| panic!("{extra:?}: {report}"));
        assert!(
            report.contains("1 chart(s) linted, 0 chart(s) failed"),
            "{extra:?}: {report}"
        );
        assert!(!report.contains("[WARNING]"), "{extra:?}: {report}");
    }
}

#[test]
fn helm_lint_strict_fails_on_a_broken_value() {
    let report = helm_lint(&["--set", "webhook.timeoutSeconds=0"]).expect_err("lint must fail");
    assert!(report.contains("timeoutSeconds"), "{report}");
}

/// Every object of `rendered` passes strict validation, except the custom
/// resources, which must be exactly those `expected_custom_kinds`.
fn assert_valid_for_kubernetes_1_33(rendered: &Rendered, expected_custom_kinds: &[&str]) {
    let validation = validate_strictly(&rendered.yaml);
    assert!(
        validation.errors.is_empty(),
        "objects Kubernetes 1.33 would refuse:\n{}",
        validation.errors.join("\n")
    );
    let expected_custom: BTreeSet<String> = expected_custom_kinds
        .iter()
        .map(|kind| (*kind).to_owned())
        .collect();
    assert_eq!(
        validation.kinds_without_schema, expected_custom,
        "only other projects' custom resources may go unvalidated"
    );
    let must_pass: BTreeSet<String> = rendered
        .objects
        .iter()
        .filter(|object| {
            !CUSTOM_RESOURCE_KINDS.contains(&object["kind"].as_str().unwrap_or_default())
        })
        .map(validator_identity)
        .collect();
    assert_eq!(validation.passed, must_pass, "validated objects");
}

#[test]
fn every_object_rendered_with_the_defaults_validates_strictly_against_kubernetes_1_33() {
    let rendered = template(&[]);
    assert_valid_for_kubernetes_1_33(&rendered, &[]);
    for wanted in [
        "Deployment/syncfolder-server",
        "Deployment/syncfolder-controller",
        "PersistentVolumeClaim/syncfolder-server-data",
        "Service/syncfolder-server",
        "Service/syncfolder-webhook",
        "MutatingWebhookConfiguration/syncfolder-sidecar-injector",
        "CustomResourceDefinition/syncfolders.syncfolder.io",
        "ClusterRole/syncfolder-controller",
        "Role/syncfolder-controller",
        "Secret/syncfolder-admin-token",
    ] {
        assert!(
            rendered.identities().contains(&wanted.to_owned()),
            "{wanted} missing from {:?}",
            rendered.identities()
        );
    }
}

#[test]
fn every_object_rendered_with_every_toggle_on_validates_strictly_against_kubernetes_1_33() {
    let rendered = template_everything_on();
    assert_valid_for_kubernetes_1_33(&rendered, &CUSTOM_RESOURCE_KINDS);
    let identities = rendered.identities();
    for absent in [
        "CustomResourceDefinition/syncfolders.syncfolder.io",
        "PersistentVolumeClaim/sf-server-data",
    ] {
        assert!(
            !identities.contains(&absent.to_owned()),
            "{absent} rendered although switched off"
        );
    }
    assert!(
        rendered.of_kind("Secret").is_empty(),
        "an existing admin token Secret was named: the chart must not make one"
    );
    assert_eq!(rendered.of_kind("NetworkPolicy").len(), 2);
}

#[test]
fn every_object_rendered_in_scale_out_mode_validates_strictly_against_kubernetes_1_33() {
    let rendered = template_scale_out(&[]);
    assert_valid_for_kubernetes_1_33(&rendered, &[]);
    let identities = rendered.identities();
    assert!(
        identities.contains(&"PodDisruptionBudget/syncfolder-server".to_owned()),
        "{identities:?}"
    );
    assert!(
        rendered.of_kind("PersistentVolumeClaim").is_empty(),
        "{identities:?}"
    );
}

/// A custom resource's field, or a failed test naming it.
fn field<'a>(object: &'a Value, pointer: &str) -> &'a Value {
    object
        .pointer(pointer)
        .filter(|value| !value.is_null())
        .unwrap_or_else(|| panic!("{} has no {pointer}", identity(object)))
}

fn service_port_names(rendered: &Rendered, component: &str) -> Vec<String> {
    rendered
        .of_kind("Service")
        .into_iter()
        .filter(|service| service["metadata"]["labels"]["app.kubernetes.io/component"] == component)
        .flat_map(|service| {
            service["spec"]["ports"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|port| port["name"].as_str().map(str::to_owned))
        .collect()
}

/// kubernetes-validate cannot check prometheus-operator's and cert-manager's
/// kinds; what a user would notice is that they point at nothing, so check
/// that each one names what the chart really renders.
#[test]
fn custom_resources_point_at_what_the_chart_renders() {
    let rendered = template_everything_on();
    let fullname = EVERYTHING_ON_FULLNAME;
    for kind in CUSTOM_RESOURCE_KINDS {
        for object in rendered.of_kind(kind) {
            assert!(
                ["monitoring.coreos.com/v1", "cert-manager.io/v1"]
                    .contains(&object["apiVersion"].as_str().unwrap_or_default()),
                "{}",
                identity(object)
            );
            assert_eq!(object["metadata"]["namespace"], NAMESPACE);
        }
    }

    // ServiceMonitor: selects the server's and the controller's Services, by port name
    let service_monitor = rendered.get("ServiceMonitor", fullname);
    let selector = field(service_monitor, "/spec/selector");
    let selected: Vec<&Value> = rendered
        .of_kind("Service")
        .into_iter()
        .filter(|service| selects(selector, &service["metadata"]["labels"]))
        .collect();
    let selected_names: BTreeSet<&str> = selected
        .iter()
        .filter_map(|service| service["metadata"]["name"].as_str())
        .collect();
    assert_eq!(
        selected_names,
        BTreeSet::from(["sf-server", "sf-controller"]),
        "the ServiceMonitor must scrape the server and the controller"
    );
    let endpoints = field(service_monitor, "/spec/endpoints")
        .as_array()
        .expect("endpoints");
    let scraped_ports: BTreeSet<&str> = endpoints
        .iter()
        .filter_map(|endpoint| endpoint["port"].as_str())
        .collect();
    assert_eq!(scraped_ports, BTreeSet::from(["http", "metrics"]));
    assert!(service_port_names(&rendered, "server").contains(&"http".to_owned()));
    assert!(service_port_names(&rendered, "controller").contains(&"metrics".to_owned()));
    assert!(
        endpoints
            .iter()
            .all(|endpoint| endpoint["path"] == "/metrics")
    );
    assert_eq!(
        service_monitor["metadata"]["labels"]["release"],
        "prometheus"
    );

    // PodMonitor: the sidecar's port, only in the sidecar container
    let pod_monitor = rendered.get("PodMonitor", &format!("{fullname}-sidecars"));
    let endpoint = field(pod_monitor, "/spec/podMetricsEndpoints/0");
    assert_eq!(endpoint["port"], "sf-metrics");
    assert_eq!(endpoint["path"], "/metrics");
    let keep_sidecar = &endpoint["relabelings"][0];
    assert_eq!(
        keep_sidecar["sourceLabels"][0],
        "__meta_kubernetes_pod_container_name"
    );
    assert_eq!(keep_sidecar["regex"], "syncfolder-agent");
    assert_eq!(keep_sidecar["action"], "keep");
    assert_eq!(
        field(pod_monitor, "/spec/selector/matchExpressions/0/key"),
        "syncfolder.io/folder"
    );
    assert_eq!(field(pod_monitor, "/spec/namespaceSelector/any"), true);

    // cert-manager: the Certificate covers the webhook Service and lands in
    // the Secret the controller mounts; the webhook configuration asks for its CA
    let certificate = rendered.get("Certificate", &format!("{fullname}-webhook"));
    let secret_name = field(certificate, "/spec/secretName");
    assert_eq!(secret_name, &format!("{fullname}-webhook-tls"));
    let dns_names = field(certificate, "/spec/dnsNames").to_string();
    assert!(
        dns_names.contains(&format!("\"{fullname}-webhook.{NAMESPACE}.svc\"")),
        "{dns_names}"
    );
    let issuer_name = field(certificate, "/spec/issuerRef/name")
        .as_str()
        .expect("issuer name");
    assert_eq!(field(certificate, "/spec/issuerRef/kind"), "Issuer");
    let issuer = rendered.get("Issuer", issuer_name);
    assert!(field(issuer, "/spec/selfSigned").is_object());
    let webhook_configuration = rendered.get(
        "MutatingWebhookConfiguration",
        &format!("{fullname}-sidecar-injector"),
    );
    assert_eq!(
        webhook_configuration["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
        format!("{NAMESPACE}/{fullname}-webhook")
    );
    let controller = rendered.get("Deployment", &format!("{fullname}-controller"));
    let volumes = controller["spec"]["template"]["spec"]["volumes"].to_string();
    assert!(
        volumes.contains(&format!("\"secretName\":{secret_name}")),
        "the controller must mount the Certificate's Secret: {volumes}"
    );

    // PrometheusRule: named alerts with a severity each (promtool checks the rest)
    let rule = rendered.get("PrometheusRule", fullname);
    let alerts: Vec<Value> = field(rule, "/spec/groups")
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|group| group["rules"].as_array().cloned().unwrap_or_default())
        .collect();
    assert!(alerts.len() >= 5, "{alerts:?}");
    for alert in &alerts {
        assert!(
            alert["alert"]
                .as_str()
                .is_some_and(|name| name.starts_with("SyncFolder"))
        );
        assert!(
            ["warning", "critical"].contains(&alert["labels"]["severity"].as_str().unwrap_or(""))
        );
        assert!(alert["annotations"]["summary"].is_string());
    }
}

/// Whether a Kubernetes label selector (matchLabels, matchExpressions) selects `labels`.
pub fn selects(selector: &Value, labels: &Value) -> bool {
    let label = |key: &str| labels[key].as_str();
    let labels_match = selector["matchLabels"]
        .as_object()
        .into_iter()
        .flatten()
        .all(|(key, value)| label(key) == value.as_str());
    let expressions_match = selector["matchExpressions"]
        .as_array()
        .into_iter()
        .flatten()
        .all(|expression| {
            let key = expression["key"].as_str().unwrap_or_default();
            let values: Vec<&str> = expression["values"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            match expression["operator"].as_str().unwrap_or_default() {
                "In" => label(key).is_some_and(|value| values.contains(&value)),
                "NotIn" => !label(key).is_some_and(|value| values.contains(&value)),
                "Exists" => label(key).is_some(),
                "DoesNotExist" => label(key).is_none(),
                other => panic!("unknown selector operator {other}"),
            }
        });
    labels_match && expressions_match
}

#[test]
fn the_values_schema_refuses_wrong_types_unknown_keys_and_bad_choices_with_clear_messages() {
    for (set, expected_message) in [
        (
            "controller.replicas=two",
            "at '/controller/replicas': got string, want integer",
        ),
        (
            "server.persistance.size=1Gi",
            "at '/server': additional properties 'persistance' not allowed",
        ),
        (
            "webhook.failurePolicy=Sometimes",
            "at '/webhook/failurePolicy'",
        ),
        ("sidecar.metricsPort=70000", "at '/sidecar/metricsPort'"),
        (
            "server.persistence.size=lots",
            "at '/server/persistence/size'",
        ),
        ("image.pullPolicy=Sometimes", "at '/image/pullPolicy'"),
        ("bogus=1", "additional properties 'bogus' not allowed"),
        ("server.replicas=0", "at '/server/replicas'"),
        (
            "metadata.postgres.urlSecret.nam=pg",
            "at '/metadata/postgres/urlSecret': additional properties 'nam' not allowed",
        ),
        (
            "metadata.postgres.urlSecret.name=Not_A_Secret",
            "at '/metadata/postgres/urlSecret/name'",
        ),
        ("chunks.s3.bucket=chunks/prod", "at '/chunks/s3/bucket'"),
        ("chunks.s3.endpoint=garage:3900", "at '/chunks/s3/endpoint'"),
        ("chunks.s3.allowHttp=yes", "at '/chunks/s3/allowHttp'"),
    ] {
        let err = try_template(&["--set", set]).expect_err(&format!("--set {set} must be refused"));
        assert!(
            err.contains(expected_message),
            "--set {set}: expected {expected_message:?} in:\n{err}"
        );
    }
}

#[test]
fn the_values_schema_accepts_every_value_of_values_yaml_and_closes_every_object() {
    // helm validates values.yaml against the schema on every render, so a
    // default the schema refuses shows up as a failed template
    template(&[]);
    let schema_text =
        std::fs::read_to_string(project_root().join(CHART_DIR).join("values.schema.json"))
            .expect("values.schema.json");
    let schema: Value = serde_json::from_str(&schema_text).expect("the schema is JSON");
    assert_eq!(schema["$schema"], "http://json-schema.org/draft-07/schema#");
    let mut open_objects = Vec::new();
    find_open_objects("", &schema, &mut open_objects);
    assert!(
        open_objects.is_empty(),
        "objects the schema defines without additionalProperties: {open_objects:?}"
    );
}

/// Objects with `properties` but no `additionalProperties` (an unknown key
/// would slip through there).
fn find_open_objects(path: &str, schema: &Value, open: &mut Vec<String>) {
    if let Some(properties) = schema["properties"].as_object() {
        if schema.get("additionalProperties").is_none() {
            open.push(path.to_owned());
        }
        for (name, property) in properties {
            find_open_objects(&format!("{path}/{name}"), property, open);
        }
    }
    for key in ["items", "additionalProperties"] {
        if schema[key].is_object() {
            find_open_objects(&format!("{path}/{key}"), &schema[key], open);
        }
    }
    if let Some(definitions) = schema["definitions"].as_object() {
        for (name, definition) in definitions {
            find_open_objects(&format!("#/definitions/{name}"), definition, open);
        }
    }
}

/// NOTES.txt as `helm install` prints it (a client-side dry run needs no cluster).
fn install_notes(extra: &[&str]) -> String {
    let output = Command::new(helm())
        .args(["install", "syncfolder"])
        .arg(project_root().join(CHART_DIR))
        .args(["--namespace", NAMESPACE, "--dry-run=client"])
        .args(extra)
        .output()
        .expect("run helm install --dry-run");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
        .split_once("\nNOTES:\n")
        .map(|(_, notes)| notes.to_owned())
        .unwrap_or_else(|| panic!("helm printed no NOTES:\n{stdout}"))
}

#[test]
fn the_install_notes_walk_the_user_from_a_syncfolder_to_a_synced_pod() {
    let notes = install_notes(&[]);
    for step in [
        "kubectl -n syncfolder-system rollout status deployment/syncfolder-server deployment/syncfolder-controller",
        "kind: SyncFolder",
        "kubectl get sf -A",
        "syncfolder.io/folder: shared",
        "syncfolder.io/volume: data",
        "The webhook adds the sidecar",
        "syncfolder-server:8080/metrics",
        "grafana_dashboard=1",
        "kubectl -n syncfolder-system get secret syncfolder-admin-token -o jsonpath='{.data.token}' | base64 -d",
    ] {
        assert!(notes.contains(step), "NOTES.txt lacks {step:?}:\n{notes}");
    }
    let without_webhook = install_notes(&[
        "--set",
        "webhook.enabled=false",
        "--set",
        "server.adminToken.existingSecret=my-token",
    ]);
    assert!(
        without_webhook
            .contains("syncfolder inject --image syncfolder/syncfolder:0.1.0 < deployment.yaml"),
        "{without_webhook}"
    );
    assert!(
        without_webhook.contains("get secret my-token"),
        "{without_webhook}"
    );
    assert!(
        !without_webhook.contains("The webhook adds"),
        "{without_webhook}"
    );
}

#[test]
fn the_install_notes_say_which_mode_the_server_runs_in() {
    let embedded = install_notes(&[]);
    assert!(
        embedded.contains("Embedded mode: one server replica on the claim syncfolder-server-data"),
        "{embedded}"
    );
    assert!(
        embedded.contains("metadata.postgres.urlSecret.name and chunks.s3.bucket"),
        "{embedded}"
    );
    let values = project_root()
        .join(SCALE_OUT_VALUES)
        .to_string_lossy()
        .into_owned();
    let scale_out = install_notes(&["--values", &values]);
    for line in [
        "Scale-out mode: 3 server replica(s) behind the Service",
        "PostgreSQL (URL in the Secret syncfolder-metadata)",
        "s3://syncfolder-chunks/prod at http://garage.storage.svc:3900",
        "A replica is ready only while it reaches both",
    ] {
        assert!(
            scale_out.contains(line),
            "NOTES.txt lacks {line:?}:\n{scale_out}"
        );
    }
    assert!(!scale_out.contains("Embedded mode"), "{scale_out}");
}

/// No Docker engine runs here, so the image is never built by the tests
/// (`cargo xtask kind-test` builds it); what the chart relies on is checked
/// in the Dockerfile's text.
#[test]
fn the_dockerfile_builds_one_static_non_root_image_the_chart_can_run() {
    let dockerfile =
        std::fs::read_to_string(project_root().join("Dockerfile")).expect("Dockerfile");
    let final_stage = dockerfile
        .rsplit_once("\nFROM ")
        .map(|(_, stage)| stage)
        .expect("a final stage");
    assert!(
        final_stage.starts_with("scratch"),
        "final stage: {final_stage}"
    );
    assert!(final_stage.contains("USER 65532:65532"), "non-root user");
    assert!(
        final_stage.contains("ENV PATH=/usr/local/bin"),
        "the chart's command is found on PATH"
    );
    assert!(
        !dockerfile
            .lines()
            .any(|line| line.trim_start().starts_with("ENTRYPOINT")),
        "the chart names the program itself"
    );
    assert!(dockerfile.contains("cargo build --release -p syncfolder --locked"));
    assert!(dockerfile.contains("/rootfs/usr/local/bin/syncfolder"));
    assert!(
        dockerfile.contains("-alpine AS build"),
        "a musl build stage"
    );
    let ignore =
        std::fs::read_to_string(project_root().join(".dockerignore")).expect(".dockerignore");
    for needed in ["!Cargo.toml", "!Cargo.lock", "!crates/", "!xtask/"] {
        assert!(
            ignore.lines().any(|line| line == needed),
            ".dockerignore drops {needed}"
        );
    }
}
