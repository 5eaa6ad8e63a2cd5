//! The PrometheusRule's alerts through Prometheus' own `promtool`: `check
//! rules` parses every expression, `test rules` replays series and asserts
//! which alerts fire when.

use std::process::Command;

use serde_json::Value;
use syncfolder_testkit::tools::required_program;

/// `promtool check rules` of the PrometheusRule's `spec` (a rule file).
pub fn check_rules(prometheus_rule: &Value) -> Result<String, String> {
    let dir = tempfile::tempdir().expect("temp dir");
    let rules = dir.path().join("rules.yaml");
    write_rule_file(prometheus_rule, &rules);
    run(Command::new(required_program("promtool"))
        .args(["check", "rules"])
        .arg(&rules))
}

/// `promtool test rules` with `tests` (the YAML list under `tests:` of a
/// promtool test file) against the PrometheusRule's `spec`.
pub fn test_rules(prometheus_rule: &Value, tests: &str) -> Result<String, String> {
    let dir = tempfile::tempdir().expect("temp dir");
    write_rule_file(prometheus_rule, &dir.path().join("rules.yaml"));
    let test_file = dir.path().join("tests.yaml");
    std::fs::write(
        &test_file,
        format!("rule_files: [rules.yaml]\nevaluation_interval: 1m\ntests:\n{tests}"),
    )
    .expect("write the promtool tests");
    run(Command::new(required_program("promtool"))
        .args(["test", "rules"])
        .arg(&test_file)
        .current_dir(dir.path()))
}

fn write_rule_file(prometheus_rule: &Value, path: &std::path::Path) {
    let spec = &prometheus_rule["spec"];
    assert!(
        spec["groups"]
            .as_array()
            .is_some_and(|groups| !groups.is_empty()),
        "the PrometheusRule has no groups: {prometheus_rule}"
    );
    std::fs::write(path, serde_yaml::to_string(spec).expect("rules as YAML"))
        .expect("write the rule file");
}

fn run(command: &mut Command) -> Result<String, String> {
    let output = command.output().expect("run promtool");
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
