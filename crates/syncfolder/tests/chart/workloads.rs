//! What the server and the controller run with, and what they may do.

use serde_json::{Value, json};

use crate::render::{
    EVERYTHING_ON_FULLNAME, NAMESPACE, Rendered, container, containers, env, env_value, has_env,
    identity, template, template_everything_on, template_scale_out,
};

/// Fails with every way a container breaks the Pod Security Standards'
/// "restricted" profile or runs without requests and a memory limit.
fn assert_restricted(workload: &str, pod_spec: &Value, container: &Value) {
    let name = format!("{workload} container {}", container["name"]);
    let context = &container["securityContext"];
    let pod_context = &pod_spec["securityContext"];
    let either = |key: &str| {
        if context[key].is_null() {
            pod_context[key].clone()
        } else {
            context[key].clone()
        }
    };
    assert_eq!(either("runAsNonRoot"), true, "{name}: runAsNonRoot");
    assert_eq!(
        either("seccompProfile")["type"],
        "RuntimeDefault",
        "{name}: seccomp"
    );
    assert_eq!(
        context["readOnlyRootFilesystem"], true,
        "{name}: read-only root filesystem"
    );
    assert_eq!(
        context["allowPrivilegeEscalation"], false,
        "{name}: privilege escalation"
    );
    assert_eq!(
        context["capabilities"]["drop"],
        json!(["ALL"]),
        "{name}: capabilities"
    );
    assert!(
        context["capabilities"]["add"].is_null(),
        "{name}: adds capabilities"
    );
    assert_ne!(context["privileged"], true, "{name}: privileged");
    let resources = &container["resources"];
    for pointer in ["/requests/cpu", "/requests/memory", "/limits/memory"] {
        assert!(
            resources.pointer(pointer).is_some(),
            "{name}: no resources{pointer}"
        );
    }
    let writes_tmp = container["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|mount| mount["mountPath"] == "/tmp");
    assert!(writes_tmp, "{name}: no writable /tmp on a read-only root");
}

#[test]
fn every_container_the_chart_runs_is_restricted_with_requests_and_a_memory_limit() {
    for rendered in [
        template(&[]),
        template_everything_on(),
        template_scale_out(&[]),
    ] {
        let pod_specs = rendered.pod_specs();
        assert_eq!(pod_specs.len(), 2, "server and controller");
        for (workload, pod_spec) in pod_specs {
            assert_eq!(
                pod_spec["securityContext"]["runAsUser"], 65532,
                "{workload}"
            );
            assert_eq!(
                pod_spec["securityContext"]["runAsGroup"], 65532,
                "{workload}"
            );
            assert_eq!(pod_spec["securityContext"]["fsGroup"], 65532, "{workload}");
            for container in containers(pod_spec) {
                assert_restricted(&workload, pod_spec, container);
            }
        }
    }
}

#[test]
fn the_server_runs_from_environment_alone_on_its_volume_one_pod_at_a_time() {
    let rendered = template(&[]);
    let server = rendered.get("Deployment", "syncfolder-server");
    assert_eq!(server["spec"]["replicas"], 1);
    assert_eq!(server["spec"]["strategy"]["type"], "Recreate");
    let pod_spec = &server["spec"]["template"]["spec"];
    assert_eq!(pod_spec["automountServiceAccountToken"], false);
    let container = container(server, "server");
    assert_eq!(container["command"], json!(["syncfolder", "server"]));
    assert!(container["args"].is_null(), "configured by env only");
    assert_eq!(env_value(container, "SYNCFOLDER_LISTEN"), "0.0.0.0:8080");
    assert_eq!(
        env_value(container, "SYNCFOLDER_DATA"),
        "/var/lib/syncfolder"
    );
    assert_eq!(env_value(container, "SYNCFOLDER_LOG_FORMAT"), "json");
    assert!(
        !has_env(container, "SYNCFOLDER_POSTGRES_URL"),
        "no PostgreSQL by default"
    );
    let admin_token = env(container)
        .into_iter()
        .find(|(name, _)| name == "SYNCFOLDER_ADMIN_TOKEN")
        .expect("admin token")
        .1;
    assert_eq!(
        admin_token,
        json!({"secretKeyRef": {"name": "syncfolder-admin-token", "key": "token"}})
    );
    // the data directory is the claim
    let data_mount = container["volumeMounts"]
        .as_array()
        .expect("mounts")
        .iter()
        .find(|mount| mount["mountPath"] == "/var/lib/syncfolder")
        .expect("data mount");
    let data_volume = pod_spec["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .find(|volume| volume["name"] == data_mount["name"])
        .expect("data volume");
    assert_eq!(
        data_volume["persistentVolumeClaim"]["claimName"],
        "syncfolder-server-data"
    );
    let claim = rendered.get("PersistentVolumeClaim", "syncfolder-server-data");
    assert_eq!(claim["spec"]["resources"]["requests"]["storage"], "10Gi");
    assert_eq!(
        claim["metadata"]["annotations"]["helm.sh/resource-policy"], "keep",
        "helm uninstall must not delete every synced file"
    );
    // probes and port
    assert_eq!(
        container["ports"],
        json!([{"name": "http", "containerPort": 8080, "protocol": "TCP"}])
    );
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["readinessProbe"]["httpGet"]["port"], "http");
    let service = rendered.get("Service", "syncfolder-server");
    assert_eq!(
        service["spec"]["ports"],
        json!([{"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP"}])
    );
}

#[test]
fn the_server_takes_its_postgresql_url_and_admin_token_from_the_secrets_the_user_names() {
    let rendered = template_everything_on();
    let server = rendered.get("Deployment", &format!("{EVERYTHING_ON_FULLNAME}-server"));
    let container = container(server, "server");
    let by_name = |wanted: &str| {
        env(container)
            .into_iter()
            .find(|(name, _)| name == wanted)
            .unwrap_or_else(|| panic!("{wanted} missing"))
            .1
    };
    assert_eq!(
        by_name("SYNCFOLDER_POSTGRES_URL"),
        json!({"secretKeyRef": {"name": "syncfolder-postgres", "key": "database-url"}})
    );
    assert_eq!(
        by_name("SYNCFOLDER_ADMIN_TOKEN"),
        json!({"secretKeyRef": {"name": "syncfolder-admin", "key": "token"}})
    );
    let volumes = server["spec"]["template"]["spec"]["volumes"].to_string();
    assert!(
        volumes.contains("\"claimName\":\"syncfolder-data\""),
        "{volumes}"
    );
}

#[test]
fn the_generated_admin_token_is_40_random_characters_kept_on_uninstall() {
    let first = template(&[]);
    let secret = first.get("Secret", "syncfolder-admin-token");
    assert_eq!(
        secret["metadata"]["annotations"]["helm.sh/resource-policy"],
        "keep"
    );
    let token = decode_base64(secret["data"]["token"].as_str().expect("token"));
    assert_eq!(token.len(), 40, "{token:?}");
    assert!(
        token.chars().all(|c| c.is_ascii_alphanumeric()),
        "{token:?}"
    );
    let second = template(&[]);
    let other = second.get("Secret", "syncfolder-admin-token")["data"]["token"].clone();
    assert_ne!(
        secret["data"]["token"], other,
        "each new install gets its own token (an existing one is kept through lookup)"
    );
}

fn decode_base64(text: &str) -> String {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .expect("base64");
    String::from_utf8(bytes).expect("UTF-8")
}

#[test]
fn the_controller_finds_the_server_and_its_webhook_objects_by_the_names_the_chart_gives_them() {
    let rendered = template(&[]);
    let controller = rendered.get("Deployment", "syncfolder-controller");
    let container = container(controller, "controller");
    assert_eq!(container["command"], json!(["syncfolder", "controller"]));
    assert_eq!(
        env_value(container, "SYNCFOLDER_SERVER"),
        format!("http://syncfolder-server.{NAMESPACE}.svc:8080")
    );
    rendered.get("Service", "syncfolder-server");
    assert_eq!(
        env_value(container, "SYNCFOLDER_METRICS_LISTEN"),
        "0.0.0.0:9478"
    );
    assert_eq!(
        env_value(container, "SYNCFOLDER_WEBHOOK_LISTEN"),
        "0.0.0.0:9443"
    );
    assert_eq!(
        env_value(container, "SYNCFOLDER_WEBHOOK_SECRET"),
        "syncfolder-webhook-tls"
    );
    let service_name = env_value(container, "SYNCFOLDER_WEBHOOK_SERVICE");
    let service = rendered.get("Service", &service_name);
    assert_eq!(
        service["spec"]["ports"],
        json!([{"name": "https", "port": 443, "targetPort": "webhook", "protocol": "TCP"}])
    );
    let ports = container["ports"].to_string();
    assert!(
        ports.contains("{\"containerPort\":9443,\"name\":\"webhook\""),
        "{ports}"
    );
    assert!(
        ports.contains("{\"containerPort\":9478,\"name\":\"metrics\""),
        "{ports}"
    );
    let configuration_name = env_value(container, "SYNCFOLDER_WEBHOOK_CONFIGURATION");
    let configuration = rendered.get("MutatingWebhookConfiguration", &configuration_name);
    assert_eq!(
        configuration["webhooks"][0]["clientConfig"]["service"]["name"],
        service_name
    );
    assert!(
        configuration["webhooks"][0]["clientConfig"]["caBundle"].is_null(),
        "the controller patches the CA in at run time"
    );
    assert_eq!(
        env_value(container, "SYNCFOLDER_LEADER_ELECTION_LEASE"),
        "syncfolder-controller"
    );
    for (name, field_path) in [
        ("SYNCFOLDER_NAMESPACE", "metadata.namespace"),
        ("SYNCFOLDER_POD_NAME", "metadata.name"),
    ] {
        let source = env(container)
            .into_iter()
            .find(|(key, _)| key == name)
            .unwrap_or_else(|| panic!("{name} missing"))
            .1;
        assert_eq!(source["fieldRef"]["fieldPath"], field_path);
    }
    assert!(!has_env(container, "SYNCFOLDER_WEBHOOK_CERT"));
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["readinessProbe"]["httpGet"]["port"], "metrics");
}

#[test]
fn with_cert_manager_the_controller_reads_the_certificate_from_files_and_manages_none() {
    let rendered = template_everything_on();
    let controller = rendered.get(
        "Deployment",
        &format!("{EVERYTHING_ON_FULLNAME}-controller"),
    );
    assert_eq!(controller["spec"]["replicas"], 2);
    let container = container(controller, "controller");
    assert_eq!(
        env_value(container, "SYNCFOLDER_WEBHOOK_CERT"),
        "/etc/syncfolder/webhook/tls.crt"
    );
    assert_eq!(
        env_value(container, "SYNCFOLDER_WEBHOOK_KEY"),
        "/etc/syncfolder/webhook/tls.key"
    );
    for managed in [
        "SYNCFOLDER_WEBHOOK_SECRET",
        "SYNCFOLDER_WEBHOOK_SERVICE",
        "SYNCFOLDER_WEBHOOK_CONFIGURATION",
    ] {
        assert!(!has_env(container, managed), "{managed} with cert-manager");
    }
    let mounts = container["volumeMounts"].to_string();
    assert!(
        mounts.contains("\"mountPath\":\"/etc/syncfolder/webhook\""),
        "{mounts}"
    );
    let rules = cluster_role_rules(&rendered, EVERYTHING_ON_FULLNAME);
    assert!(
        !rules.to_string().contains("admissionregistration"),
        "cert-manager injects the CA: the controller needs no access to the webhook configuration"
    );
}

fn cluster_role_rules(rendered: &Rendered, fullname: &str) -> Value {
    rendered.get("ClusterRole", &format!("{fullname}-controller"))["rules"].clone()
}

fn role_rules(rendered: &Rendered, fullname: &str) -> Value {
    rendered.get("Role", &format!("{fullname}-controller"))["rules"].clone()
}

#[test]
fn rbac_grants_the_controller_exactly_what_it_uses() {
    let rendered = template(&[]);
    assert_eq!(
        cluster_role_rules(&rendered, "syncfolder"),
        json!([
            {"apiGroups": ["syncfolder.io"], "resources": ["syncfolders"], "verbs": ["get", "list", "watch", "patch"]},
            {"apiGroups": ["syncfolder.io"], "resources": ["syncfolders/status"], "verbs": ["patch"]},
            {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list", "watch", "create", "patch"]},
            {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "create", "patch"]},
            {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]},
            {"apiGroups": ["admissionregistration.k8s.io"], "resources": ["mutatingwebhookconfigurations"],
             "resourceNames": ["syncfolder-sidecar-injector"], "verbs": ["get", "patch"]},
        ])
    );
    assert_eq!(
        role_rules(&rendered, "syncfolder"),
        json!([
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
             "resourceNames": ["syncfolder-controller"], "verbs": ["get", "update"]},
        ])
    );
    let role = rendered.get("Role", "syncfolder-controller");
    assert_eq!(role["metadata"]["namespace"], NAMESPACE);
    for binding_kind in ["ClusterRoleBinding", "RoleBinding"] {
        let binding = rendered.get(binding_kind, "syncfolder-controller");
        assert_eq!(
            binding["subjects"],
            json!([{"kind": "ServiceAccount", "name": "syncfolder-controller", "namespace": NAMESPACE}]),
            "{binding_kind}"
        );
    }
    let controller = rendered.get("Deployment", "syncfolder-controller");
    assert_eq!(
        controller["spec"]["template"]["spec"]["serviceAccountName"],
        "syncfolder-controller"
    );
    rendered.get("ServiceAccount", "syncfolder-controller");
}

#[test]
fn switching_the_webhook_or_leader_election_off_removes_what_only_they_need() {
    let rendered = template(&[
        "--set",
        "webhook.enabled=false",
        "--set",
        "controller.leaderElection.enabled=false",
    ]);
    let identities = rendered.identities();
    for gone in [
        "MutatingWebhookConfiguration/syncfolder-sidecar-injector",
        "Service/syncfolder-webhook",
        "Role/syncfolder-controller",
        "RoleBinding/syncfolder-controller",
    ] {
        assert!(
            !identities.contains(&gone.to_owned()),
            "{gone} still rendered"
        );
    }
    assert!(
        !cluster_role_rules(&rendered, "syncfolder")
            .to_string()
            .contains("admissionregistration")
    );
    let container = container(
        rendered.get("Deployment", "syncfolder-controller"),
        "controller",
    );
    for gone in [
        "SYNCFOLDER_WEBHOOK_LISTEN",
        "SYNCFOLDER_WEBHOOK_SECRET",
        "SYNCFOLDER_LEADER_ELECTION_LEASE",
    ] {
        assert!(!has_env(container, gone), "{gone} still set");
    }
}

#[test]
fn the_webhook_sees_only_annotated_pods_outside_its_namespace_and_kube_system() {
    let rendered = template(&[]);
    let configuration = rendered.get(
        "MutatingWebhookConfiguration",
        "syncfolder-sidecar-injector",
    );
    let webhooks = configuration["webhooks"].as_array().expect("webhooks");
    assert_eq!(webhooks.len(), 1);
    let webhook = &webhooks[0];
    assert_eq!(webhook["name"], "sidecar.syncfolder.io");
    assert_eq!(webhook["admissionReviewVersions"], json!(["v1"]));
    assert_eq!(webhook["sideEffects"], "None");
    assert_eq!(webhook["failurePolicy"], "Ignore");
    assert_eq!(webhook["timeoutSeconds"], 10);
    assert_eq!(webhook["reinvocationPolicy"], "Never");
    assert_eq!(webhook["clientConfig"]["service"]["path"], "/mutate");
    assert_eq!(webhook["clientConfig"]["service"]["port"], 443);
    assert_eq!(
        webhook["rules"],
        json!([{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"],
                "resources": ["pods"], "scope": "Namespaced"}])
    );
    assert_eq!(
        webhook["namespaceSelector"],
        json!({"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "NotIn",
                                      "values": [NAMESPACE, "kube-system"]}]})
    );
    assert!(webhook["objectSelector"].is_null());
    let condition = webhook["matchConditions"][0]["expression"]
        .as_str()
        .expect("a match condition");
    assert!(
        condition.contains("'syncfolder.io/folder' in object.metadata.annotations"),
        "{condition}"
    );

    let everything_on = template_everything_on();
    let webhook = &everything_on.get(
        "MutatingWebhookConfiguration",
        &format!("{EVERYTHING_ON_FULLNAME}-sidecar-injector"),
    )["webhooks"][0];
    assert_eq!(webhook["failurePolicy"], "Fail");
    assert_eq!(webhook["timeoutSeconds"], 5);
    assert_eq!(
        webhook["namespaceSelector"]["matchExpressions"][0]["values"],
        json!([NAMESPACE, "kube-system", "monitoring"])
    );
    assert_eq!(
        webhook["objectSelector"],
        json!({"matchLabels": {"syncfolder.io/inject": "true"}})
    );
}

#[test]
fn network_policies_admit_sidecars_controller_and_monitoring_to_the_server() {
    let rendered = template_everything_on();
    let server_policy = rendered.get("NetworkPolicy", &format!("{EVERYTHING_ON_FULLNAME}-server"));
    let ingress = &server_policy["spec"]["ingress"];
    assert_eq!(ingress.as_array().map(Vec::len), Some(1));
    assert_eq!(
        ingress[0]["ports"],
        json!([{"port": "http", "protocol": "TCP"}])
    );
    let sources = ingress[0]["from"].as_array().expect("from");
    assert_eq!(sources.len(), 3, "{sources:?}");
    assert_eq!(sources[0]["namespaceSelector"], json!({}));
    assert_eq!(
        sources[0]["podSelector"]["matchExpressions"][0]["key"],
        "syncfolder.io/folder"
    );
    assert_eq!(
        sources[1]["podSelector"]["matchLabels"]["app.kubernetes.io/component"],
        "controller"
    );
    assert_eq!(
        sources[2]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
        "monitoring"
    );
    let controller_policy = rendered.get(
        "NetworkPolicy",
        &format!("{EVERYTHING_ON_FULLNAME}-controller"),
    );
    let ingress = controller_policy["spec"]["ingress"]
        .as_array()
        .expect("ingress");
    let webhook_rule = ingress
        .iter()
        .find(|rule| rule["ports"][0]["port"] == "webhook")
        .expect("webhook port open");
    assert!(
        webhook_rule["from"].is_null(),
        "the API server comes from anywhere"
    );
    let metrics_rule = ingress
        .iter()
        .find(|rule| rule["ports"][0]["port"] == "metrics")
        .expect("metrics port open");
    assert!(
        metrics_rule["from"].is_array(),
        "metrics only from monitoring"
    );
    for policy in [server_policy, controller_policy] {
        assert_eq!(
            policy["spec"]["policyTypes"],
            json!(["Ingress"]),
            "{}",
            identity(policy)
        );
    }
}

/// The match condition through kube's CEL evaluator with the admission
/// variables (`object` is the pod): it must compile, and for a pod that does
/// not ask for a folder it must be false, not an error — failurePolicy Fail
/// would turn an error into refusing every pod of the cluster.
///
/// The positive case is left to `cargo xtask kind-test`: kube-cel escapes
/// every map key the way Kubernetes escapes only schema property names
/// (`syncfolder.io/folder` becomes `syncfolder__dot__io__slash__folder`), so
/// it cannot see an annotation whose key has a dot or a slash, while the API
/// server can.
#[test]
fn the_webhooks_match_condition_compiles_and_is_false_for_pods_without_the_annotation() {
    use kube::core::cel::{VapEvaluator, VapExpression};

    let rendered = template(&[]);
    let configuration = rendered.get(
        "MutatingWebhookConfiguration",
        "syncfolder-sidecar-injector",
    );
    let expression = configuration["webhooks"][0]["matchConditions"][0]["expression"]
        .as_str()
        .expect("a match condition")
        .to_owned();
    for (what, metadata) in [
        (
            "other annotations",
            json!({"name": "b", "annotations": {"team": "x"}}),
        ),
        ("no annotations at all", json!({"name": "c"})),
        (
            "only a label",
            json!({"name": "d", "labels": {"syncfolder.io/folder": "shared"}}),
        ),
    ] {
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata,
                         "spec": {"containers": [{"name": "app", "image": "busybox:1.36"}]}});
        let results = VapEvaluator::builder()
            .object(pod)
            .build()
            .evaluate(&[VapExpression {
                expression: expression.clone(),
                message: Some("not matched".to_owned()),
                message_expression: None,
            }]);
        let result = &results[0];
        assert!(!result.passed, "{what}: {result:?}");
        assert_eq!(
            result.message.as_deref(),
            Some("not matched"),
            "{what}: the condition must be false, not an error"
        );
    }
}
