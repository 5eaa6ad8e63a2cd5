//! A throwaway Prometheus that scrapes given targets every second, with an
//! instant-query helper for tests.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::tools::required_program;
use crate::{free_port, wait_until};

/// One scrape job: a name and the `host:port` addresses serving `/metrics`.
#[derive(Debug, Clone)]
pub struct ScrapeJob {
    pub name: String,
    pub targets: Vec<String>,
}

pub struct TestPrometheus {
    dir: tempfile::TempDir,
    port: u16,
    child: Child,
    http: reqwest::blocking::Client,
}

impl std::fmt::Debug for TestPrometheus {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("TestPrometheus")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl TestPrometheus {
    /// Writes a config scraping `jobs` every second and starts Prometheus;
    /// fails the test when the binary is missing or it does not come up.
    pub fn start(jobs: &[ScrapeJob]) -> TestPrometheus {
        let program = required_program("prometheus");
        let dir = tempfile::Builder::new()
            .prefix("syncfolder-prometheus-")
            .tempdir()
            .expect("temp dir for Prometheus");
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config_yaml(jobs)).expect("writing prometheus.yml");
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log file");
        let child = Command::new(program)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .expect("starting prometheus");
        crate::install_tls_provider();
        let prometheus = TestPrometheus {
            dir,
            port,
            child,
            http: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("HTTP client"),
        };
        let url = format!("{}/-/ready", prometheus.url());
        let ready = wait_until(Duration::from_secs(60), || {
            prometheus
                .http
                .get(&url)
                .send()
                .is_ok_and(|response| response.status().is_success())
        });
        assert!(
            ready,
            "Prometheus did not become ready within 60 s; its log:\n{}",
            prometheus.log()
        );
        prometheus
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// Runs an instant query; returns the `data.result` array, or the error
    /// Prometheus gave.
    pub fn query(&self, promql: &str) -> Result<Vec<Value>, String> {
        let response = self
            .http
            .get(format!("{}/api/v1/query", self.url()))
            .query(&[("query", promql)])
            .send()
            .map_err(|err| format!("querying Prometheus: {err}"))?;
        let body: Value = response
            .json()
            .map_err(|err| format!("Prometheus answer: {err}"))?;
        if body["status"] != "success" {
            return Err(format!("Prometheus refused {promql:?}: {body}"));
        }
        Ok(body["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    }

    /// Waits until every target of every job was scraped successfully.
    pub fn wait_for_targets_up(&self, timeout: Duration) -> bool {
        wait_until(timeout, || {
            let Ok(up) = self.query("up") else {
                return false;
            };
            !up.is_empty() && up.iter().all(|series| series["value"][1] == "1")
        })
    }
}

impl Drop for TestPrometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config_yaml(jobs: &[ScrapeJob]) -> String {
    let mut yaml = String::from(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n",
    );
    for job in jobs {
        yaml.push_str(&format!(
            "  - job_name: {:?}\n    static_configs:\n      - targets: {:?}\n",
            job.name, job.targets
        ));
    }
    yaml
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_lists_every_job_and_target() {
        let yaml = config_yaml(&[
            ScrapeJob {
                name: "server".to_owned(),
                targets: vec!["127.0.0.1:1".to_owned()],
            },
            ScrapeJob {
                name: "agents".to_owned(),
                targets: vec!["127.0.0.1:2".to_owned(), "127.0.0.1:3".to_owned()],
            },
        ]);
        assert!(yaml.contains("scrape_interval: 1s"));
        assert!(yaml.contains("job_name: \"agents\""));
        assert!(yaml.contains("[\"127.0.0.1:2\", \"127.0.0.1:3\"]"));
    }
}
