//! Scale-out mode (`ci/scale-out-values.yaml`): metadata in PostgreSQL,
//! chunks in S3-compatible storage, so the server keeps nothing on its own
//! volume and runs as several replicas — and the values that cannot work
//! (several replicas on one ReadWriteOnce volume) refused before anything
//! reaches the cluster.
//!
//! `runs.rs` does not start these servers: the install manifest it runs is
//! the embedded default, and scale-out needs a PostgreSQL and an object store.

use serde_json::{Value, json};

use crate::render::{
    Rendered, container, env, env_value, has_env, identity, pod_spec, template, template_scale_out,
    try_template,
};
use crate::validity::selects;

/// Every variable the scale-out values add to the server container.
const SCALE_OUT_ENV: [&str; 8] = [
    "SYNCFOLDER_METADATA_URL",
    "SYNCFOLDER_METADATA_PASSWORD",
    "SYNCFOLDER_CHUNK_STORE",
    "AWS_ENDPOINT_URL",
    "AWS_REGION",
    "AWS_ALLOW_HTTP",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
];

fn server_deployment(rendered: &Rendered) -> &Value {
    rendered.get("Deployment", "syncfolder-server")
}

/// A variable's `valueFrom`, or a failed test.
fn value_from(container: &Value, wanted: &str) -> Value {
    env(container)
        .into_iter()
        .find(|(name, _)| name == wanted)
        .unwrap_or_else(|| panic!("{wanted} missing from {}", container["env"]))
        .1
}

/// The pod volume mounted at `mount_path` in the server container.
fn volume_mounted_at<'a>(deployment: &'a Value, mount_path: &str) -> &'a Value {
    let mount = container(deployment, "server")["volumeMounts"]
        .as_array()
        .expect("mounts")
        .iter()
        .find(|mount| mount["mountPath"] == mount_path)
        .unwrap_or_else(|| panic!("nothing mounted at {mount_path}"));
    pod_spec(deployment).expect("a pod spec")["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .find(|volume| volume["name"] == mount["name"])
        .unwrap_or_else(|| panic!("no volume {}", mount["name"]))
}

#[test]
fn in_scale_out_mode_three_server_replicas_roll_one_new_pod_at_a_time_without_a_claim() {
    let rendered = template_scale_out(&[]);
    let server = server_deployment(&rendered);
    assert_eq!(server["spec"]["replicas"], 3);
    assert_eq!(
        server["spec"]["strategy"],
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}})
    );
    assert!(
        rendered.of_kind("PersistentVolumeClaim").is_empty(),
        "{:?}",
        rendered.identities()
    );
    // the data directory (admin token fallback, temp files) is the pod's own
    let container = container(server, "server");
    let data_dir = env_value(container, "SYNCFOLDER_DATA");
    let data_volume = volume_mounted_at(server, &data_dir);
    assert_eq!(data_volume["emptyDir"], json!({}), "{data_volume}");
    assert!(data_volume["persistentVolumeClaim"].is_null());
    // readiness is what keeps a replica cut off from its stores out of the Service
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert!(
        !has_env(container, "SYNCFOLDER_MAX_CONNECTION_AGE"),
        "the server's default connection age (15m) is kept"
    );
}

#[test]
fn scale_out_replicas_have_a_disruption_budget_and_spread_across_nodes_and_zones() {
    let rendered = template_scale_out(&[]);
    let server = server_deployment(&rendered);
    let pod_labels = &server["spec"]["template"]["metadata"]["labels"];

    let budget = rendered.get("PodDisruptionBudget", "syncfolder-server");
    assert_eq!(budget["spec"]["maxUnavailable"], 1);
    assert!(budget["spec"]["minAvailable"].is_null());
    assert_eq!(budget["spec"]["unhealthyPodEvictionPolicy"], "AlwaysAllow");
    assert!(selects(&budget["spec"]["selector"], pod_labels));
    let controller_labels = &rendered.get("Deployment", "syncfolder-controller")["spec"]["template"]
        ["metadata"]["labels"];
    assert!(
        !selects(&budget["spec"]["selector"], controller_labels),
        "the budget covers the server only"
    );

    let constraints = pod_spec(server).expect("a pod spec")["topologySpreadConstraints"]
        .as_array()
        .expect("topologySpreadConstraints")
        .clone();
    let keys: Vec<&str> = constraints
        .iter()
        .filter_map(|constraint| constraint["topologyKey"].as_str())
        .collect();
    assert_eq!(
        keys,
        ["kubernetes.io/hostname", "topology.kubernetes.io/zone"]
    );
    for constraint in &constraints {
        assert_eq!(constraint["maxSkew"], 1, "{constraint}");
        assert_eq!(
            constraint["whenUnsatisfiable"], "ScheduleAnyway",
            "a small cluster must still schedule every replica: {constraint}"
        );
        assert!(
            selects(&constraint["labelSelector"], pod_labels),
            "{constraint}"
        );
        assert_eq!(constraint["matchLabelKeys"], json!(["pod-template-hash"]));
    }
    assert!(
        pod_spec(server).expect("a pod spec")["affinity"].is_null(),
        "no pod anti-affinity needed"
    );

    // nodes only, unless zones are asked for
    let nodes_only = template_scale_out(&["--set", "server.topologySpread.zones=false"]);
    let constraints =
        &pod_spec(server_deployment(&nodes_only)).expect("a pod spec")["topologySpreadConstraints"];
    assert_eq!(
        constraints.as_array().map(Vec::len),
        Some(1),
        "{constraints}"
    );
    assert_eq!(constraints[0]["topologyKey"], "kubernetes.io/hostname");
}

#[test]
fn one_scale_out_replica_still_rolls_and_needs_no_disruption_budget() {
    let rendered = template_scale_out(&["--set", "server.replicas=1"]);
    let server = server_deployment(&rendered);
    assert_eq!(server["spec"]["replicas"], 1);
    assert_eq!(server["spec"]["strategy"]["type"], "RollingUpdate");
    assert!(rendered.of_kind("PodDisruptionBudget").is_empty());
    assert!(rendered.of_kind("PersistentVolumeClaim").is_empty());
}

#[test]
fn the_scale_out_server_reads_every_credential_from_the_secrets_the_user_names() {
    let rendered = template_scale_out(&[]);
    let container = container(server_deployment(&rendered), "server");
    for (name, secret, key) in [
        ("SYNCFOLDER_METADATA_URL", "syncfolder-metadata", "url"),
        (
            "SYNCFOLDER_METADATA_PASSWORD",
            "syncfolder-metadata",
            "password",
        ),
        ("AWS_ACCESS_KEY_ID", "syncfolder-s3", "access-key-id"),
        (
            "AWS_SECRET_ACCESS_KEY",
            "syncfolder-s3",
            "secret-access-key",
        ),
    ] {
        assert_eq!(
            value_from(container, name),
            json!({"secretKeyRef": {"name": secret, "key": key}}),
            "{name}"
        );
    }
    assert_eq!(
        env_value(container, "SYNCFOLDER_CHUNK_STORE"),
        "s3://syncfolder-chunks/prod",
        "the prefix loses its slashes"
    );
    assert_eq!(
        env_value(container, "AWS_ENDPOINT_URL"),
        "http://garage.storage.svc:3900"
    );
    assert_eq!(env_value(container, "AWS_REGION"), "garage");
    assert_eq!(env_value(container, "AWS_ALLOW_HTTP"), "true");
    // the event log's PostgreSQL is another setting (server.postgres)
    assert!(!has_env(container, "SYNCFOLDER_POSTGRES_URL"));
    // the chart makes no Secret for the stores: only the admin token's
    let secrets: Vec<String> = rendered
        .of_kind("Secret")
        .into_iter()
        .map(identity)
        .collect();
    assert_eq!(secrets, ["Secret/syncfolder-admin-token"]);
}

#[test]
fn the_defaults_of_the_secret_keys_and_the_store_settings_are_the_documented_ones() {
    let rendered = template(&[
        "--set",
        "metadata.postgres.urlSecret.name=pg",
        "--set",
        "chunks.s3.bucket=chunks",
        "--set",
        "chunks.s3.credentialsSecret.name=s3",
    ]);
    let server_container = container(server_deployment(&rendered), "server");
    assert_eq!(
        value_from(server_container, "SYNCFOLDER_METADATA_URL"),
        json!({"secretKeyRef": {"name": "pg", "key": "url"}})
    );
    assert_eq!(
        value_from(server_container, "AWS_ACCESS_KEY_ID"),
        json!({"secretKeyRef": {"name": "s3", "key": "accessKeyId"}})
    );
    assert_eq!(
        value_from(server_container, "AWS_SECRET_ACCESS_KEY"),
        json!({"secretKeyRef": {"name": "s3", "key": "secretAccessKey"}})
    );
    assert_eq!(
        env_value(server_container, "SYNCFOLDER_CHUNK_STORE"),
        "s3://chunks"
    );
    for unset in [
        "SYNCFOLDER_METADATA_PASSWORD",
        "AWS_ENDPOINT_URL",
        "AWS_REGION",
        "AWS_ALLOW_HTTP",
    ] {
        assert!(
            !has_env(server_container, unset),
            "{unset} set although not asked for"
        );
    }
    // without a credentials Secret the pod's own identity signs the requests
    let ambient = template(&[
        "--set",
        "metadata.postgres.urlSecret.name=pg",
        "--set",
        "chunks.s3.bucket=chunks",
    ]);
    let ambient_container = container(server_deployment(&ambient), "server");
    assert!(!has_env(ambient_container, "AWS_ACCESS_KEY_ID"));
    assert!(!has_env(ambient_container, "AWS_SECRET_ACCESS_KEY"));
}

#[test]
fn the_embedded_default_has_one_replica_on_its_claim_and_nothing_of_scale_out() {
    let rendered = template(&[]);
    let server = server_deployment(&rendered);
    assert_eq!(server["spec"]["replicas"], 1);
    assert_eq!(server["spec"]["strategy"], json!({"type": "Recreate"}));
    assert!(rendered.of_kind("PodDisruptionBudget").is_empty());
    assert!(pod_spec(server).expect("a pod spec")["topologySpreadConstraints"].is_null());
    let container = container(server, "server");
    for name in SCALE_OUT_ENV {
        assert!(!has_env(container, name), "{name} in the embedded default");
    }
    let data_volume = volume_mounted_at(server, "/var/lib/syncfolder");
    assert_eq!(
        data_volume["persistentVolumeClaim"]["claimName"],
        "syncfolder-server-data"
    );
}

/// Only one of the two stores: the volume still holds the other, so the
/// server stays one replica on its claim, replaced, never rolled.
#[test]
fn with_only_one_store_outside_the_volume_the_server_keeps_its_claim_and_one_replica() {
    for (set, present, absent) in [
        (
            "metadata.postgres.urlSecret.name=pg",
            "SYNCFOLDER_METADATA_URL",
            "SYNCFOLDER_CHUNK_STORE",
        ),
        (
            "chunks.s3.bucket=chunks",
            "SYNCFOLDER_CHUNK_STORE",
            "SYNCFOLDER_METADATA_URL",
        ),
    ] {
        let rendered = template(&["--set", set]);
        let server = server_deployment(&rendered);
        assert_eq!(server["spec"]["replicas"], 1, "{set}");
        assert_eq!(server["spec"]["strategy"]["type"], "Recreate", "{set}");
        rendered.get("PersistentVolumeClaim", "syncfolder-server-data");
        assert!(rendered.of_kind("PodDisruptionBudget").is_empty(), "{set}");
        let container = container(server, "server");
        assert!(has_env(container, present), "{set}: {present}");
        assert!(!has_env(container, absent), "{set}: {absent}");
    }
}

#[test]
fn several_replicas_without_postgresql_and_object_storage_are_refused_saying_what_to_set() {
    let volume_message =
        "server.replicas is 2, but several server replicas cannot share one ReadWriteOnce volume";
    for (extra, names_missing, names_present) in [
        (
            vec!["--set", "server.replicas=2"],
            vec!["metadata.postgres.urlSecret.name", "chunks.s3.bucket"],
            vec![],
        ),
        (
            vec![
                "--set",
                "server.replicas=2",
                "--set",
                "metadata.postgres.urlSecret.name=pg",
            ],
            vec!["chunks.s3.bucket"],
            vec!["metadata.postgres.urlSecret.name"],
        ),
        (
            vec![
                "--set",
                "server.replicas=2",
                "--set",
                "chunks.s3.bucket=chunks",
            ],
            vec!["metadata.postgres.urlSecret.name"],
            vec!["chunks.s3.bucket"],
        ),
    ] {
        let err = try_template(&extra).expect_err(&format!("{extra:?} must be refused"));
        assert!(err.contains(volume_message), "{extra:?}: {err}");
        assert!(
            err.contains("or set server.replicas to 1"),
            "{extra:?}: {err}"
        );
        for name in names_missing {
            assert!(err.contains(name), "{extra:?} must name {name}: {err}");
        }
        // helm's own message, after the command line that carries the --set values
        let message = err
            .split_once("Error: ")
            .map_or(err.as_str(), |(_, message)| message);
        for name in names_present {
            assert!(
                !message.contains(name),
                "{extra:?} names {name}, which is set: {err}"
            );
        }
    }
}

#[test]
fn store_settings_that_cannot_work_are_refused_with_what_to_change() {
    for (extra, expected) in [
        (
            vec!["--set", "chunks.s3.endpoint=https://s3.example.com"],
            "chunks.s3.endpoint is set without chunks.s3.bucket",
        ),
        (
            vec!["--set", "chunks.s3.credentialsSecret.name=s3"],
            "chunks.s3.credentialsSecret.name is set without chunks.s3.bucket",
        ),
        (
            vec![
                "--set",
                "chunks.s3.bucket=chunks",
                "--set",
                "chunks.s3.endpoint=http://garage:3900",
            ],
            "chunks.s3.endpoint http://garage:3900 is plain HTTP: set chunks.s3.allowHttp=true",
        ),
        (
            vec!["--set", "metadata.postgres.passwordSecret.name=pg"],
            "metadata.postgres.passwordSecret.name is set without metadata.postgres.urlSecret.name",
        ),
    ] {
        let err = try_template(&extra).expect_err(&format!("{extra:?} must be refused"));
        assert!(
            err.contains(expected),
            "{extra:?}: expected {expected:?} in {err}"
        );
    }
}
