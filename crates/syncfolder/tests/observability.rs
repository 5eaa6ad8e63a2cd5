//! Observability end to end, on real components: a server shipping its event
//! log to a real PostgreSQL, two agents serving `/metrics`, and a real
//! Prometheus scraping all three. Every query of every panel of both
//! dashboards runs against them (PostgreSQL SQL with Grafana's macros
//! expanded as Grafana expands them) and must return data; a dashboard that
//! names a metric the code does not export fails; `promtool check metrics`
//! passes on both `/metrics` outputs.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use serde_json::Value;
use sqlx::Row;
use support::{
    TestAgent, TestServer, free_port, http_get, random_bytes, wait_converged_or_explain, wait_for,
    write_file,
};
use syncfolder_testkit::prometheus::ScrapeJob;
use syncfolder_testkit::tools::required_program;
use syncfolder_testkit::{TestPostgres, TestPrometheus};

fn dashboards_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../dashboards")
}

fn load_dashboard(name: &str) -> Value {
    let path = dashboards_dir().join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|err| panic!("reading {}: {err}", path.display()));
    serde_json::from_str(&text)
        .unwrap_or_else(|err| panic!("{} is not JSON: {err}", path.display()))
}

/// Every (panel title, target) of a dashboard.
fn targets(dashboard: &Value) -> Vec<(String, Value)> {
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(!panels.is_empty(), "a dashboard without panels");
    panels
        .iter()
        .flat_map(|panel| {
            let title = panel["title"].as_str().unwrap_or("untitled").to_owned();
            let targets = panel["targets"].as_array().cloned().unwrap_or_default();
            assert!(!targets.is_empty(), "panel {title:?} has no query");
            targets
                .into_iter()
                .map(move |target| (title.clone(), target))
        })
        .collect()
}

/// The dashboard's `folder` variable must use the templated data source.
fn assert_templated_datasource(dashboard: &Value, kind: &str) {
    let variables = dashboard["templating"]["list"]
        .as_array()
        .expect("templating");
    assert!(
        variables
            .iter()
            .any(|var| var["type"] == "datasource" && var["query"] == kind),
        "a {kind} data source variable"
    );
    for (title, target) in targets(dashboard) {
        assert_eq!(
            target["datasource"]["uid"], "${datasource}",
            "panel {title:?} uses the data source variable"
        );
    }
}

/// PromQL as Grafana sends it with the folder variable at "All" (`.*`).
fn expand_promql(expr: &str) -> String {
    expr.replace("$__rate_interval", "30s")
        .replace("$__range", "5m")
        .replace("$__interval", "5s")
        .replace("$folder", ".*")
}

/// Grafana's PostgreSQL macros and variables, expanded the way Grafana
/// expands them: `$__timeFilter(c)` → `c BETWEEN 'from' AND 'to'`,
/// `$__timeGroup(c, i)` → `floor(extract(epoch from c)/s)*s`, `…Alias` adds
/// `AS "time"`, `$__timeFrom()`/`$__timeTo()` → quoted times, a multi-value
/// variable → its quoted values joined by commas.
fn expand_sql(sql: &str, from: &str, to: &str, interval_secs: u64, folders: &[String]) -> String {
    let folder_list = folders
        .iter()
        .map(|folder| format!("'{}'", folder.replace('\'', "''")))
        .collect::<Vec<_>>()
        .join(",");
    let mut sql = sql
        .replace("$__interval", &format!("{interval_secs}s"))
        .replace("${folder}", &folder_list)
        .replace("$folder", &folder_list);
    while let Some(start) = sql.find("$__") {
        let open = sql[start..]
            .find('(')
            .map(|idx| start + idx)
            .expect("macro (");
        let close = sql[open..]
            .find(')')
            .map(|idx| open + idx)
            .expect("macro )");
        let name = &sql[start + 3..open];
        let args: Vec<&str> = sql[open + 1..close].split(',').map(str::trim).collect();
        let seconds = |arg: &str| -> u64 {
            let arg = arg.trim_matches('\'');
            let (number, unit) = arg.split_at(arg.len() - 1);
            let number: u64 = number.parse().unwrap_or_else(|_| panic!("interval {arg}"));
            number
                * match unit {
                    "s" => 1,
                    "m" => 60,
                    "h" => 3600,
                    "d" => 86_400,
                    other => panic!("interval unit {other}"),
                }
        };
        let expansion = match name {
            "timeFilter" => format!("{} BETWEEN '{from}' AND '{to}'", args[0]),
            "timeFrom" => format!("'{from}'"),
            "timeTo" => format!("'{to}'"),
            "timeGroup" => {
                let secs = seconds(args[1]);
                format!("floor(extract(epoch from {})/{secs})*{secs}", args[0])
            }
            "timeGroupAlias" => {
                let secs = seconds(args[1]);
                format!(
                    "floor(extract(epoch from {})/{secs})*{secs} AS \"time\"",
                    args[0]
                )
            }
            other => panic!("macro $__{other} is not one the test knows how Grafana expands"),
        };
        sql.replace_range(start..=close, &expansion);
    }
    assert!(!sql.contains('$'), "an unexpanded variable in {sql}");
    sql
}

/// Metric names a PromQL expression uses.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = expr.as_bytes();
    let mut idx = 0;
    while let Some(found) = expr[idx..].find("syncfolder_") {
        let start = idx + found;
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        names.insert(expr[start..end].to_owned());
        idx = end;
    }
    names
}

/// Metric families in a text exposition, with the series names a histogram adds.
fn exported_names(exposition: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in exposition.lines() {
        let mut words = line.split_whitespace();
        if let (Some("#"), Some("TYPE"), Some(name), Some(kind)) =
            (words.next(), words.next(), words.next(), words.next())
        {
            names.insert(name.to_owned());
            if kind == "histogram" {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{suffix}"));
                }
            }
        }
    }
    names
}

fn promtool_check(exposition: &str, what: &str) {
    use std::io::Write;
    let mut child = Command::new(required_program("promtool"))
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("running promtool");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(exposition.as_bytes())
        .expect("feeding promtool");
    let output = child.wait_with_output().expect("promtool");
    assert!(
        output.status.success(),
        "promtool check metrics fails on the {what}'s /metrics:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn rfc3339(time: SystemTime) -> String {
    let secs = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // civil from days (Howard Hinnant's algorithm)
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[test]
fn every_dashboard_query_returns_data_from_a_real_sync_run() {
    let postgres = TestPostgres::start();
    let server = TestServer::start_with(&["--postgres-url", &postgres.url()]);
    let token = server.create_folder("photos", &[]);
    let dirs = tempfile::tempdir().expect("temp dir");
    let (dir_a, dir_b) = (dirs.path().join("a"), dirs.path().join("b"));
    std::fs::create_dir_all(&dir_a).expect("dir a");
    std::fs::create_dir_all(&dir_b).expect("dir b");
    let (port_a, port_b) = (free_port(), free_port());
    let metrics_arg = |port: u16| format!("127.0.0.1:{port}");
    let a = TestAgent::start_with(
        &server,
        "photos",
        &token,
        &dir_a,
        "agent-a",
        &["--metrics-listen", &metrics_arg(port_a)],
    );
    let mut b = TestAgent::start_with(
        &server,
        "photos",
        &token,
        &dir_b,
        "agent-b",
        &["--metrics-listen", &metrics_arg(port_b)],
    );
    let prometheus = TestPrometheus::start(&[
        ScrapeJob {
            name: "syncfolder-server".to_owned(),
            targets: vec![format!("127.0.0.1:{}", server.port)],
        },
        ScrapeJob {
            name: "syncfolder-agent".to_owned(),
            targets: vec![metrics_arg(port_a), metrics_arg(port_b)],
        },
    ]);
    assert!(
        prometheus.wait_for_targets_up(Duration::from_secs(60)),
        "Prometheus could not scrape the server and both agents; its log:\n{}",
        prometheus.log()
    );
    let converge = || {
        wait_converged_or_explain(
            &[&dir_a, &dir_b],
            &[&a.process.log_path, &server.process.log_path],
        )
    };

    // a day's work: uploads, an edit, a rename, a deletion and a conflict
    write_file(&dir_a.join("report.txt"), b"quarterly numbers\n");
    write_file(&dir_a.join("cats/cat.jpg"), &random_bytes(300 * 1024, 7));
    write_file(&dir_a.join("cats/dog.jpg"), &random_bytes(100 * 1024, 8));
    converge();
    write_file(&dir_b.join("report.txt"), b"quarterly numbers, revised\n");
    converge();
    std::fs::rename(dir_a.join("cats/cat.jpg"), dir_a.join("cats/kitten.jpg")).expect("rename");
    std::fs::remove_file(dir_a.join("cats/dog.jpg")).expect("delete");
    converge();
    b.stop();
    write_file(&dir_a.join("notes.txt"), b"written on a\n");
    wait_for("the server to hold notes.txt", || {
        server.metric("syncfolder_folder_files") >= 3.0
    });
    write_file(&dir_b.join("notes.txt"), b"written on b\n");
    b.restart();
    let tree = converge();
    assert!(
        tree.keys().any(|path| path.contains(".sync-conflict-")),
        "the run made a conflict copy: {:?}",
        tree.keys().collect::<Vec<_>>()
    );

    // the server knows both agents and when each last finished a sync
    let described = server.cli(&[
        "folder",
        "describe",
        "photos",
        "--admin-token",
        support::ADMIN_TOKEN,
    ]);
    let described = String::from_utf8_lossy(&described.stdout).into_owned();
    assert!(described.contains("conflict_copies=1"), "{described}");
    for agent in ["agent-a", "agent-b"] {
        let line = described
            .lines()
            .find(|line| line.starts_with(&format!("agent\t{agent}\t")))
            .unwrap_or_else(|| panic!("{agent} is not listed:\n{described}"));
        assert!(
            line.contains("connected=yes") && !line.contains("last_sync_ms=never"),
            "{line}"
        );
    }

    // agents: alive, ready after their first full sync
    for port in [port_a, port_b] {
        wait_for("an agent's /readyz to answer 200", || {
            http_get(port, "/readyz").is_some_and(|(status, _)| status == 200)
        });
        assert_eq!(
            http_get(port, "/healthz").map(|(status, _)| status),
            Some(200)
        );
    }

    // both expositions pass promtool, and together name every metric a dashboard uses
    let server_metrics = http_get(server.port, "/metrics")
        .expect("server /metrics")
        .1;
    let agent_metrics = http_get(port_a, "/metrics").expect("agent /metrics").1;
    promtool_check(&server_metrics, "server");
    promtool_check(&agent_metrics, "agent");
    let exported: BTreeSet<String> = exported_names(&server_metrics)
        .into_iter()
        .chain(exported_names(&agent_metrics))
        .collect();

    // the event log has everything: wait for the outbox to drain
    wait_for("the outbox to be shipped", || {
        server.metric("syncfolder_outbox_backlog_events") == 0.0
            && server.metric("syncfolder_outbox_shipped_events_total") > 0.0
    });
    // and Prometheus has scraped the final state
    wait_for("Prometheus to see the conflict", || {
        prometheus
            .query("syncfolder_file_changes_total{action=\"conflict\"} > 0")
            .is_ok_and(|result| !result.is_empty())
    });

    // Prometheus panels
    let overview = load_dashboard("syncfolder-overview.json");
    assert_templated_datasource(&overview, "prometheus");
    let mut n_prometheus_queries = 0;
    for (title, target) in targets(&overview) {
        let expr = target["expr"]
            .as_str()
            .unwrap_or_else(|| panic!("{title}: no expr"));
        for name in metric_names(expr) {
            assert!(
                exported.contains(&name),
                "panel {title:?} uses {name}, which neither the server nor the agent exports"
            );
        }
        let expanded = expand_promql(expr);
        // a rate needs two scrapes in its window; on a loaded machine a
        // scrape of a debug build can miss its 1 s deadline, so give it time
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let result = prometheus
                .query(&expanded)
                .unwrap_or_else(|err| panic!("panel {title:?}: {err}"));
            if !result.is_empty() {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "panel {title:?} returns no series for {expanded}"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
        n_prometheus_queries += 1;
    }
    let folder_var = expand_promql("group by (folder) (syncfolder_folder_files)");
    assert!(
        !prometheus
            .query(&folder_var)
            .expect("folder variable")
            .is_empty()
    );

    // PostgreSQL panels, over the last hour as Grafana would ask
    let activity = load_dashboard("syncfolder-activity.json");
    assert_templated_datasource(&activity, "grafana-postgresql-datasource");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let n_sql_queries = runtime.block_on(async {
        let pool = sqlx::PgPool::connect(&postgres.url())
            .await
            .expect("PostgreSQL");
        let folder_query = activity["templating"]["list"]
            .as_array()
            .expect("variables")
            .iter()
            .find(|var| var["name"] == "folder")
            .and_then(|var| var["query"].as_str())
            .expect("the folder variable's query")
            .to_owned();
        let folders: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(folder_query.clone()))
            .fetch_all(&pool)
            .await
            .expect("the folder variable's query runs");
        assert_eq!(folders, vec!["photos".to_owned()]);
        let now = SystemTime::now();
        let from = rfc3339(now - Duration::from_secs(3600));
        let to = rfc3339(now + Duration::from_secs(60));
        let mut n_queries = 0;
        for (title, target) in targets(&activity) {
            let sql = target["rawSql"]
                .as_str()
                .unwrap_or_else(|| panic!("{title}: no SQL"));
            let expanded = expand_sql(sql, &from, &to, 60, &folders);
            let rows = sqlx::query(sqlx::AssertSqlSafe(expanded.clone()))
                .fetch_all(&pool)
                .await
                .unwrap_or_else(|err| panic!("panel {title:?}: {err}\n{expanded}"));
            assert!(
                !rows.is_empty(),
                "panel {title:?} returns no rows:\n{expanded}"
            );
            if target["format"] == "time_series" {
                assert!(
                    rows[0].try_column("time").is_ok(),
                    "time series panel {title:?} returns a time column"
                );
            }
            n_queries += 1;
        }
        let actions: Vec<String> =
            sqlx::query_scalar("SELECT DISTINCT action FROM files_log ORDER BY 1")
                .fetch_all(&pool)
                .await
                .expect("actions");
        for action in ["conflict", "create", "delete", "modify", "rename"] {
            assert!(
                actions.iter().any(|logged| logged == action),
                "a {action} event in files_log: {actions:?}"
            );
        }
        n_queries
    });
    eprintln!("{n_prometheus_queries} PromQL and {n_sql_queries} SQL panel queries returned data");
}

#[test]
fn an_agent_is_alive_but_not_ready_until_its_first_sync() {
    let dirs = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let unreachable_server = format!("http://127.0.0.1:{}", free_port());
    let mut command = Command::new(support::BINARY);
    command.args([
        "agent",
        "--server",
        &unreachable_server,
        "--folder",
        "docs",
        "--token",
        "sf_0123456789abcdef_0000000000000000000000000000000000000000000000000000000000000000",
        "--path",
        &dirs.path().join("docs").to_string_lossy(),
        "--metrics-listen",
        &format!("127.0.0.1:{port}"),
    ]);
    let _agent = support::Process::spawn(command, dirs.path().join("agent.log"));
    wait_for("the agent's /healthz", || {
        http_get(port, "/healthz").is_some_and(|(status, _)| status == 200)
    });
    let (status, body) = http_get(port, "/readyz").expect("/readyz");
    assert_eq!(status, 503, "{body}");
    let metrics = http_get(port, "/metrics").expect("/metrics").1;
    let ready_line = metrics
        .lines()
        .find(|line| line.starts_with("syncfolder_agent_ready{"))
        .unwrap_or_else(|| panic!("no syncfolder_agent_ready in\n{metrics}"));
    assert!(
        ready_line.contains("folder=\"docs\"") && ready_line.ends_with(" 0"),
        "{ready_line}"
    );
}

#[test]
fn grafana_macros_expand_as_grafana_expands_them() {
    let sql = "SELECT $__timeGroupAlias(occurred_at, $__interval), count(*) FROM files_log \
               WHERE $__timeFilter(occurred_at) AND folder IN ($folder) GROUP BY 1";
    let expanded = expand_sql(
        sql,
        "2026-11-24T10:00:00Z",
        "2026-11-24T11:00:00Z",
        300,
        &["a".to_owned(), "b'c".to_owned()],
    );
    assert_eq!(
        expanded,
        "SELECT floor(extract(epoch from occurred_at)/300)*300 AS \"time\", count(*) FROM files_log \
         WHERE occurred_at BETWEEN '2026-11-24T10:00:00Z' AND '2026-11-24T11:00:00Z' \
         AND folder IN ('a','b''c') GROUP BY 1"
    );
    assert_eq!(
        rfc3339(SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_996_800)),
        "2026-11-30T00:00:00Z"
    );
}
