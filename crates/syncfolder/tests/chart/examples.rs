//! `manifests/examples`: what a user applies first must be accepted.

use serde_json::{Value, json};
use syncfolder_testkit::chart::{EXAMPLE_WORKLOADS, EXAMPLES_DIR, example_paths};
use syncfolder_testkit::tools::project_root;

use crate::crd_schema::refusals;
use crate::kubernetes_validate::{validate_strictly, validator_identity};
use crate::render::{containers, env_value, parse_documents, pod_spec};

fn example_syncfolder() -> Value {
    let path = project_root()
        .join(EXAMPLES_DIR)
        .join("shared-syncfolder.yaml");
    let yaml = std::fs::read_to_string(&path).expect("the example SyncFolder");
    let mut documents = parse_documents(&yaml);
    assert_eq!(documents.len(), 1);
    documents.remove(0)
}

#[test]
fn the_example_syncfolder_is_accepted_by_the_crds_schema_and_rules() {
    let syncfolder = example_syncfolder();
    assert_eq!(syncfolder["metadata"]["name"], "shared");
    let refused = refusals(&syncfolder);
    assert!(
        refused.is_empty(),
        "the example SyncFolder is refused: {refused:?}"
    );
}

#[test]
fn the_crds_schema_refuses_what_the_api_server_would() {
    let cases: [(&str, Value, &str); 5] = [
        (
            "a misspelt field",
            json!({"delitionPolicy": "Delete"}),
            "delitionPolicy",
        ),
        ("an unknown mode", json!({"mode": "both-ways"}), "both-ways"),
        (
            "a negative history",
            json!({"history": {"keepDays": -1}}),
            "keepDays",
        ),
        (
            "a quota that is no quantity",
            json!({"quota": "lots"}),
            "quota",
        ),
        (
            "two servers at once",
            json!({"server": {"url": "https://sync.example.com", "service": {"name": "x"}}}),
            "exactly one",
        ),
    ];
    for (what, spec, expected) in cases {
        let mut syncfolder = example_syncfolder();
        for (key, value) in spec.as_object().expect("spec") {
            syncfolder["spec"][key] = value.clone();
        }
        let refused = refusals(&syncfolder).join("\n");
        assert!(
            refused.contains(expected),
            "{what}: expected a refusal mentioning {expected:?}, got {refused:?}"
        );
    }
}

#[test]
fn the_example_workloads_validate_strictly_against_kubernetes_1_33() {
    for workload in EXAMPLE_WORKLOADS {
        let (plain, injected) = example_paths(workload);
        for path in [plain, injected] {
            let yaml = std::fs::read_to_string(&path).expect("example");
            let validation = validate_strictly(&yaml);
            assert!(
                validation.errors.is_empty(),
                "{}: {:?}",
                path.display(),
                validation.errors
            );
            let expected: Vec<String> = parse_documents(&yaml)
                .iter()
                .map(validator_identity)
                .collect();
            assert_eq!(
                validation.passed.into_iter().collect::<Vec<_>>(),
                expected,
                "{}",
                path.display()
            );
        }
    }
}

#[test]
fn the_injected_examples_run_a_restricted_native_sidecar_on_the_shared_folder() {
    for workload in EXAMPLE_WORKLOADS {
        let (_, injected) = example_paths(workload);
        let yaml = std::fs::read_to_string(&injected).expect("injected example");
        let deployment = parse_documents(&yaml).remove(0);
        let spec = pod_spec(&deployment).expect("a Deployment");
        let annotations = &deployment["spec"]["template"]["metadata"]["annotations"];
        assert_eq!(annotations["syncfolder.io/folder"], "shared");
        assert_eq!(annotations["syncfolder.io/volume"], "data");
        let sidecar = spec["initContainers"]
            .as_array()
            .and_then(|init| {
                init.iter()
                    .find(|container| container["name"] == "syncfolder-agent")
            })
            .unwrap_or_else(|| panic!("{workload}: no native sidecar"));
        assert_eq!(
            sidecar["restartPolicy"], "Always",
            "{workload}: a native sidecar"
        );
        assert_eq!(sidecar["command"], json!(["syncfolder", "agent"]));
        let context = &sidecar["securityContext"];
        assert_eq!(context["runAsNonRoot"], true);
        assert_eq!(context["readOnlyRootFilesystem"], true);
        assert_eq!(context["allowPrivilegeEscalation"], false);
        assert_eq!(context["capabilities"]["drop"], json!(["ALL"]));
        assert_eq!(context["seccompProfile"]["type"], "RuntimeDefault");
        let data_mount = sidecar["volumeMounts"][0].clone();
        assert_eq!(data_mount["name"], "data");
        let token_secret = sidecar["env"].to_string();
        assert!(
            token_secret.contains("syncfolder-shared-token"),
            "{token_secret}"
        );
        let app = containers(spec)
            .into_iter()
            .find(|container| container["name"] == workload)
            .expect("the application container");
        assert!(
            app["volumeMounts"]
                .to_string()
                .contains("\"mountPath\":\"/data\"")
        );
        if workload == "reader" {
            assert_eq!(env_value(sidecar, "SYNCFOLDER_MODE"), "receive-only");
        } else {
            assert!(!sidecar["env"].to_string().contains("SYNCFOLDER_MODE"));
        }
    }
}
