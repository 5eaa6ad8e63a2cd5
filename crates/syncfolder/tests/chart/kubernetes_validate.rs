//! Strict validation against the Kubernetes 1.33 OpenAPI schemas with the
//! PyPI package `kubernetes-validate` (offline: it ships the schemas).
//!
//! `--strict` refuses fields the schema does not know. It knows only
//! Kubernetes' own kinds: for a custom resource it prints a warning and
//! passes, so [`validate_strictly`] reports those separately and the tests
//! decide which kinds may be among them.

use std::collections::BTreeSet;
use std::process::Command;

use syncfolder_testkit::chart::KUBE_VERSION;
use syncfolder_testkit::tools::required_tool;

/// What `kubernetes-validate --strict` said about a multi-document YAML.
#[derive(Debug, Default)]
pub struct Validation {
    /// `kind/name` (kind in lower case, as it prints them) of every object that passed.
    pub passed: BTreeSet<String>,
    /// Every error line.
    pub errors: Vec<String>,
    /// Kinds it has no schema for.
    pub kinds_without_schema: BTreeSet<String>,
}

pub fn validate_strictly(yaml: &str) -> Validation {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("objects.yaml");
    std::fs::write(&path, yaml).expect("write the YAML to validate");
    let output = Command::new(required_tool("kubernetes-validate"))
        .args(["--kubernetes-version", KUBE_VERSION, "--strict"])
        .arg(&path)
        .output()
        .expect("run kubernetes-validate");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let mut validation = Validation::default();
    for line in stdout.lines() {
        if let Some(rest) = line.strip_prefix("INFO ") {
            let resource = rest
                .split(" passed for resource ")
                .nth(1)
                .and_then(|tail| tail.split(" against version ").next())
                .unwrap_or_else(|| panic!("unexpected kubernetes-validate line: {line}"));
            validation.passed.insert(resource.to_owned());
        } else if let Some(rest) = line.strip_prefix("WARN ") {
            let kind = rest
                .split("Couldn't find schema for kind ")
                .nth(1)
                .and_then(|tail| tail.split(' ').next())
                .unwrap_or_else(|| panic!("unexpected kubernetes-validate warning: {line}"));
            validation.kinds_without_schema.insert(kind.to_owned());
        } else if !line.trim().is_empty() {
            validation.errors.push(line.to_owned());
        }
    }
    assert_eq!(
        output.status.success(),
        validation.errors.is_empty(),
        "kubernetes-validate's exit status ({}) disagrees with its output:\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    validation
}

/// `kind/name` as kubernetes-validate prints it.
pub fn validator_identity(object: &serde_json::Value) -> String {
    format!(
        "{}/{}",
        object["kind"].as_str().unwrap_or("?").to_lowercase(),
        object["metadata"]["name"].as_str().unwrap_or("?")
    )
}
