//! Alerts, scraping and dashboards.

use std::collections::BTreeSet;

use serde_json::Value;
use syncfolder_testkit::chart::{DASHBOARDS_DIR, json_files};
use syncfolder_testkit::tools::project_root;

use crate::promtool::{check_rules, test_rules};
use crate::render::{EVERYTHING_ON_FULLNAME, NAMESPACE, template, template_everything_on};

/// The PrometheusRule with the default thresholds.
fn default_prometheus_rule() -> Value {
    template(&["--set", "monitoring.prometheusRule.enabled=true"])
        .get("PrometheusRule", "syncfolder")
        .clone()
}

#[test]
fn every_alert_expression_passes_promtool_check_rules() {
    for rule in [
        default_prometheus_rule(),
        template_everything_on()
            .get("PrometheusRule", EVERYTHING_ON_FULLNAME)
            .clone(),
    ] {
        let report = check_rules(&rule).unwrap_or_else(|report| panic!("{report}"));
        assert!(report.contains("SUCCESS"), "{report}");
    }
}

/// Labels of the agent series in the rule tests.
const AGENT: &str = r#"folder="default.shared""#;

#[test]
fn agent_alerts_fire_for_a_stuck_a_never_synced_and_a_halted_agent_and_not_for_a_healthy_one() {
    let tests = format!(
        r#"
  - interval: 1m
    input_series:
      # last clean sync at 60 s, then nothing
      - series: 'syncfolder_agent_last_sync_timestamp_seconds{{{AGENT},agent="stuck"}}'
        values: '60x60'
      # a clean sync every minute
      - series: 'syncfolder_agent_last_sync_timestamp_seconds{{{AGENT},agent="healthy"}}'
        values: '0+60x60'
      # started, never finished a sync
      - series: 'syncfolder_agent_last_sync_timestamp_seconds{{{AGENT},agent="starting"}}'
        values: '0x60'
      # its volume vanished at minute 2
      - series: 'syncfolder_agent_halted{{{AGENT},agent="unmounted"}}'
        values: '0 0 1x58'
    alert_rule_test:
      - eval_time: 30m
        alertname: SyncFolderAgentNotSynced
        exp_alerts: []
      - eval_time: 40m
        alertname: SyncFolderAgentNotSynced
        exp_alerts:
          - exp_labels: {{severity: warning, folder: default.shared, agent: stuck}}
            exp_annotations:
              summary: "Agent stuck of folder default.shared has not synced for a while"
              description: "Its last sync cycle that left nothing to retry ended more than 30 minutes ago. Look at the sidecar's log (container syncfolder-agent) and syncfolder_agent_errors_total."
      - eval_time: 29m
        alertname: SyncFolderAgentNeverSynced
        exp_alerts: []
      - eval_time: 35m
        alertname: SyncFolderAgentNeverSynced
        exp_alerts:
          - exp_labels: {{severity: warning, folder: default.shared, agent: starting}}
            exp_annotations:
              summary: "Agent starting of folder default.shared has not finished its first sync"
              description: "No clean sync cycle in 30 minutes since it started; the pod's application containers wait for it."
      - eval_time: 3m
        alertname: SyncFolderAgentHalted
        exp_alerts: []
      - eval_time: 10m
        alertname: SyncFolderAgentHalted
        exp_alerts:
          - exp_labels: {{severity: warning, folder: default.shared, agent: unmounted}}
            exp_annotations:
              summary: "Agent unmounted halted syncing folder default.shared"
              description: "Its directory vanished or every synced file vanished at once (an unmounted volume?). It stopped instead of deleting everything on the server and resumes when the files are back."
"#
    );
    let report =
        test_rules(&default_prometheus_rule(), &tests).unwrap_or_else(|report| panic!("{report}"));
    assert!(report.contains("SUCCESS"), "{report}");
}

#[test]
fn server_alerts_fire_when_it_is_down_unscraped_or_its_outbox_piles_up() {
    const SERVER: &str = r#"job="syncfolder-server",instance="10.0.0.7:8080""#;
    const DOWN: &str = r#"
          - exp_labels: {severity: critical}
            exp_annotations:
              summary: "The syncfolder server is down or not scraped"
              description: "Agents cannot sync while the server is away (they keep local changes and retry). Check the server pod and, if it runs, the ServiceMonitor.""#;
    let tests = format!(
        r#"
  - interval: 1m
    input_series:
      - series: 'up{{{SERVER}}}'
        values: '1 1 0x20'
      # PostgreSQL stopped answering at minute 0: the backlog grows, its oldest event ages
      - series: 'syncfolder_outbox_backlog_events{{{SERVER}}}'
        values: '0+10x60'
      - series: 'syncfolder_outbox_oldest_event_age_seconds{{{SERVER}}}'
        values: '0+60x60'
      - series: 'syncfolder_outbox_shipping_enabled{{{SERVER}}}'
        values: '1x60'
      - series: 'syncfolder_outbox_ship_errors_total{{{SERVER},kind="connect"}}'
        values: '0+1x60'
    alert_rule_test:
      - eval_time: 5m
        alertname: SyncFolderServerDown
        exp_alerts: []
      - eval_time: 10m
        alertname: SyncFolderServerDown
        exp_alerts:
          - exp_labels: {{severity: critical, job: syncfolder-server, instance: "10.0.0.7:8080"}}
            exp_annotations:
              summary: "The syncfolder server is down or not scraped"
              description: "Agents cannot sync while the server is away (they keep local changes and retry). Check the server pod and, if it runs, the ServiceMonitor."
      - eval_time: 20m
        alertname: SyncFolderOutboxBacklogGrowing
        exp_alerts: []
      - eval_time: 40m
        alertname: SyncFolderOutboxBacklogGrowing
        exp_alerts:
          - exp_labels: {{severity: warning, job: syncfolder-server, instance: "10.0.0.7:8080"}}
            exp_annotations:
              summary: "Events are piling up for PostgreSQL"
              description: "The oldest event not yet in files_log is over 15 minutes old and the backlog grows. Nothing is lost; check syncfolder_outbox_ship_errors_total and PostgreSQL."
      - eval_time: 30m
        alertname: SyncFolderOutboxShippingFailing
        exp_alerts:
          - exp_labels: {{severity: warning, job: syncfolder-server, instance: "10.0.0.7:8080", kind: connect}}
            exp_annotations:
              summary: "Shipping the event log to PostgreSQL keeps failing (connect)"
              description: "Events wait in the server's outbox and arrive once PostgreSQL answers again."
  # nobody scrapes the server at all
  - interval: 1m
    input_series:
      - series: 'up{{job="some-other-app"}}'
        values: '1x20'
    alert_rule_test:
      - eval_time: 10m
        alertname: SyncFolderServerDown
        exp_alerts:{DOWN}
  # without a PostgreSQL URL the outbox keeps events for a week: no alert
  - interval: 1m
    input_series:
      - series: 'syncfolder_outbox_backlog_events{{{SERVER}}}'
        values: '0+10x60'
      - series: 'syncfolder_outbox_oldest_event_age_seconds{{{SERVER}}}'
        values: '0+60x60'
      - series: 'syncfolder_outbox_shipping_enabled{{{SERVER}}}'
        values: '0x60'
    alert_rule_test:
      - eval_time: 40m
        alertname: SyncFolderOutboxBacklogGrowing
        exp_alerts: []
"#
    );
    let report =
        test_rules(&default_prometheus_rule(), &tests).unwrap_or_else(|report| panic!("{report}"));
    assert!(report.contains("SUCCESS"), "{report}");
}

#[test]
fn storage_alerts_fire_for_failing_collections_unrepaired_damage_and_a_filling_volume() {
    const HEALTHY: &str = r#"job="syncfolder-server",instance="10.0.0.7:8080""#;
    const SICK: &str = r#"job="syncfolder-server",instance="10.0.0.8:8080""#;
    let tests = format!(
        r#"
  - interval: 1m
    input_series:
      # one server collects fine; the other's collections fail one after another
      - series: 'syncfolder_gc_runs_total{{{HEALTHY},result="success"}}'
        values: '0+1x120'
      - series: 'syncfolder_gc_runs_total{{{HEALTHY},result="failure"}}'
        values: '0+1x120'
      - series: 'syncfolder_gc_runs_total{{{SICK},result="success"}}'
        values: '3x120'
      - series: 'syncfolder_gc_runs_total{{{SICK},result="failure"}}'
        values: '0+1x120'
      - series: 'syncfolder_damaged_chunks{{{HEALTHY}}}'
        values: '0x120'
      - series: 'syncfolder_damaged_chunks{{{SICK}}}'
        values: '0x10 3x110'
      - series: 'syncfolder_data_volume_size_bytes{{{HEALTHY}}}'
        values: '1000x120'
      - series: 'syncfolder_data_volume_free_bytes{{{HEALTHY}}}'
        values: '500x120'
      - series: 'syncfolder_data_volume_size_bytes{{{SICK}}}'
        values: '1000x120'
      - series: 'syncfolder_data_volume_free_bytes{{{SICK}}}'
        values: '500-10x45 50x75'
    alert_rule_test:
      - eval_time: 5m
        alertname: SyncFolderGarbageCollectionFailing
        exp_alerts: []
      - eval_time: 30m
        alertname: SyncFolderGarbageCollectionFailing
        exp_alerts:
          - exp_labels: {{severity: warning, job: syncfolder-server, instance: "10.0.0.8:8080"}}
            exp_annotations:
              summary: "Garbage collection keeps failing"
              description: "No collection succeeded in six hours, so deleted and superseded data keeps its space. The server log says why (garbage collection failed); syncfolder admin gc runs one by hand."
      - eval_time: 60m
        alertname: SyncFolderDamagedChunks
        exp_alerts: []
      - eval_time: 80m
        alertname: SyncFolderDamagedChunks
        exp_alerts:
          - exp_labels: {{severity: warning, job: syncfolder-server, instance: "10.0.0.8:8080"}}
            exp_annotations:
              summary: "3 stored chunks are damaged and no agent has uploaded them again"
              description: "A scrub found them corrupt or missing. Agents that hold the bytes upload them by themselves; syncfolder admin scrub --report lists the files that stay broken."
      - eval_time: 40m
        alertname: SyncFolderDataVolumeFilling
        exp_alerts: []
      - eval_time: 70m
        alertname: SyncFolderDataVolumeFilling
        exp_alerts:
          - exp_labels: {{severity: warning, job: syncfolder-server, instance: "10.0.0.8:8080"}}
            exp_annotations:
              summary: "The server's data volume is over 90% full"
              description: "Uploads fail with 507 once it is full. Grow the volume, shorten history retention, or check that garbage collection runs (syncfolder_gc_last_success_timestamp_seconds)."
"#
    );
    let report =
        test_rules(&default_prometheus_rule(), &tests).unwrap_or_else(|report| panic!("{report}"));
    assert!(report.contains("SUCCESS"), "{report}");
}

/// Every `"syncfolder_..."` string in the components' `metrics.rs`.
fn exported_metric_names() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for crate_name in ["server", "agent", "controller"] {
        let path = project_root().join(format!("crates/{crate_name}/src/metrics.rs"));
        let source = std::fs::read_to_string(&path)
            .unwrap_or_else(|err| panic!("reading {}: {err}", path.display()));
        names.extend(metric_names_in(&source, true));
    }
    names
}

/// The `syncfolder_*` names in `text`; with `quoted`, only those in double quotes.
fn metric_names_in(text: &str, quoted: bool) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(start) = rest.find("syncfolder_") {
        let candidate = &rest[start..];
        let end = candidate
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(candidate.len());
        let preceded_by_quote = rest[..start].ends_with('"');
        let followed_by_quote = candidate[end..].starts_with('"');
        if !quoted || (preceded_by_quote && followed_by_quote) {
            names.insert(candidate[..end].to_owned());
        }
        rest = &candidate[end..];
    }
    names
}

#[test]
fn alerts_name_only_metrics_the_code_exports() {
    let exported = exported_metric_names();
    assert!(
        exported.contains("syncfolder_agent_halted") && exported.len() > 30,
        "reading metrics.rs went wrong: {exported:?}"
    );
    let rule = template_everything_on()
        .get("PrometheusRule", EVERYTHING_ON_FULLNAME)
        .clone();
    let expressions: String = rule["spec"]["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|group| group["rules"].as_array().cloned().unwrap_or_default())
        .filter_map(|rule| rule["expr"].as_str().map(str::to_owned))
        .collect::<Vec<_>>()
        .join("\n");
    let used = metric_names_in(&expressions, false);
    assert!(used.len() >= 6, "{used:?}");
    let unknown: Vec<&String> = used.difference(&exported).collect();
    assert!(
        unknown.is_empty(),
        "alerts use metrics nobody exports: {unknown:?}"
    );
}

#[test]
fn dashboards_reach_grafana_as_labelled_configmaps_with_the_repositorys_json() {
    let rendered = template(&[]);
    let config_maps = rendered.of_kind("ConfigMap");
    let dashboards = json_files(&project_root().join(DASHBOARDS_DIR));
    assert_eq!(
        config_maps.len(),
        dashboards.len(),
        "one ConfigMap per dashboard"
    );
    for dashboard in dashboards {
        let file_name = dashboard
            .file_name()
            .and_then(|name| name.to_str())
            .expect("name");
        let config_map = config_maps
            .iter()
            .find(|config_map| config_map["data"].get(file_name).is_some())
            .unwrap_or_else(|| panic!("no ConfigMap carries {file_name}"));
        assert_eq!(config_map["metadata"]["labels"]["grafana_dashboard"], "1");
        assert_eq!(config_map["metadata"]["namespace"], NAMESPACE);
        let shipped: Value = serde_json::from_str(
            config_map["data"][file_name]
                .as_str()
                .expect("dashboard text"),
        )
        .expect("the ConfigMap holds JSON");
        let original: Value =
            serde_json::from_str(&std::fs::read_to_string(&dashboard).expect("dashboard"))
                .expect("dashboard JSON");
        assert_eq!(shipped, original, "{file_name}");
    }

    let everything_on = template_everything_on();
    for config_map in everything_on.of_kind("ConfigMap") {
        assert_eq!(config_map["metadata"]["namespace"], "monitoring");
        assert_eq!(
            config_map["metadata"]["annotations"]["grafana_folder"],
            "syncfolder"
        );
    }
    let relabelled = template(&[
        "--set",
        "dashboards.label=grafana-dashboards",
        "--set",
        "dashboards.labelValue=syncfolder",
    ]);
    for config_map in relabelled.of_kind("ConfigMap") {
        assert_eq!(
            config_map["metadata"]["labels"]["grafana-dashboards"],
            "syncfolder"
        );
    }
    assert!(
        template(&["--set", "dashboards.enabled=false"])
            .of_kind("ConfigMap")
            .is_empty()
    );
}
