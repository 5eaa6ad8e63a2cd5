//! `cargo xtask demo`: builds syncfolder, starts a server on 127.0.0.1:8080
//! (data in `.demo/server`), creates the folder `demo`, and runs two agents
//! syncing `./synced` and `./synced-2`. Ctrl-C stops everything.
//!
//! With `--observability` it also starts a private PostgreSQL (cluster kept
//! in `.demo/postgres`) that receives the event log in `files_log`, the
//! agents serve `/metrics` on 127.0.0.1:9477 and :9478, and, when the
//! `prometheus` binary is installed, a Prometheus scrapes server and agents.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use syncfolder_testkit::prometheus::ScrapeJob;
use syncfolder_testkit::tools::find_on_path;
use syncfolder_testkit::{TestPostgres, TestPrometheus, free_port};

use crate::{cargo, project_root, run_command};

/// The demo's PostgreSQL port, when free.
const DEMO_POSTGRES_PORT: u16 = 54329;
/// The agents' metrics ports.
const DEMO_AGENT_METRICS_PORTS: [u16; 2] = [9477, 9478];

struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let listen = args
        .iter()
        .position(|arg| arg == "--listen")
        .and_then(|idx| args.get(idx + 1))
        .cloned()
        .unwrap_or_else(|| "127.0.0.1:8080".to_owned());
    let observability = args.iter().any(|arg| arg == "--observability");
    run_command(cargo().args(["build", "--package", "syncfolder"]))?;
    let root = project_root();
    let binary = root.join("target/debug/syncfolder");
    let data_dir = root.join(".demo/server");
    std::fs::create_dir_all(&data_dir).context("creating .demo/server")?;
    let server_url = format!("http://{listen}");

    let postgres = if observability {
        let port = if std::net::TcpListener::bind(("127.0.0.1", DEMO_POSTGRES_PORT)).is_ok() {
            DEMO_POSTGRES_PORT
        } else {
            free_port()
        };
        eprintln!("starting PostgreSQL on 127.0.0.1:{port} (cluster in .demo/postgres)");
        Some(TestPostgres::start_kept(&root.join(".demo/postgres"), port))
    } else {
        None
    };

    let mut children = Children(Vec::new());
    let mut server = Command::new(&binary);
    server
        .args(["server", "--listen", &listen, "--data"])
        .arg(&data_dir);
    if let Some(postgres) = &postgres {
        server.args(["--postgres-url", &postgres.url()]);
    }
    children
        .0
        .push(server.spawn().context("starting the server")?);
    wait_until_healthy(&server_url)?;
    let admin_token = std::fs::read_to_string(data_dir.join("admin-token"))
        .context("reading the generated admin token")?
        .trim()
        .to_owned();

    let token_file = root.join(".demo/demo-token");
    let token = match std::fs::read_to_string(&token_file) {
        Ok(token) => token.trim().to_owned(),
        Err(_) => {
            let output = Command::new(&binary)
                .args([
                    "folder",
                    "create",
                    "demo",
                    "--server",
                    &server_url,
                    "--admin-token",
                    &admin_token,
                ])
                .stderr(Stdio::inherit())
                .output()
                .context("creating the demo folder")?;
            if !output.status.success() {
                bail!("creating the demo folder failed");
            }
            let stdout = String::from_utf8_lossy(&output.stdout);
            let token = stdout.lines().last().unwrap_or_default().trim().to_owned();
            std::fs::write(&token_file, &token).context("saving the demo token")?;
            token
        }
    };

    let agents = [("synced", "demo-1"), ("synced-2", "demo-2")];
    for ((dir, agent_id), metrics_port) in agents.into_iter().zip(DEMO_AGENT_METRICS_PORTS) {
        let path: PathBuf = root.join(dir);
        let mut agent = Command::new(&binary);
        agent
            .args([
                "agent",
                "--server",
                &server_url,
                "--folder",
                "demo",
                "--token",
                &token,
            ])
            .arg("--path")
            .arg(&path)
            .args(["--agent-id", agent_id]);
        if observability {
            agent.args(["--metrics-listen", &format!("127.0.0.1:{metrics_port}")]);
        }
        children.0.push(
            agent
                .spawn()
                .with_context(|| format!("starting the agent for {dir}"))?,
        );
    }
    let prometheus = if observability && find_on_path("prometheus").is_some() {
        let server_target = listen.clone();
        Some(TestPrometheus::start(&[
            ScrapeJob {
                name: "syncfolder-server".to_owned(),
                targets: vec![server_target],
            },
            ScrapeJob {
                name: "syncfolder-agent".to_owned(),
                targets: DEMO_AGENT_METRICS_PORTS
                    .iter()
                    .map(|port| format!("127.0.0.1:{port}"))
                    .collect(),
            },
        ]))
    } else {
        None
    };

    eprintln!(
        "\n\
         syncfolder demo is running: server {server_url}, folder \"demo\", agents on ./synced and ./synced-2\n\n\
         Try:\n  \
         echo hello > synced/hello.txt && sleep 1 && cat synced-2/hello.txt\n  \
         mkdir -p synced-2/photos && cp /etc/hostname synced-2/photos/   # appears in ./synced\n  \
         rm synced/hello.txt                                              # gone from ./synced-2\n  \
         target/debug/syncfolder history hello.txt --server {server_url} --folder demo --token $(cat .demo/demo-token)\n  \
         curl -s {server_url}/metrics | grep ^syncfolder_\n\n\
         Admin token: .demo/server/admin-token. Press Ctrl-C to stop.\n"
    );
    if let Some(postgres) = &postgres {
        eprintln!(
            "Event log (PostgreSQL files_log):\n  \
             psql {} -c 'SELECT * FROM files_log ORDER BY id DESC LIMIT 10;'\n\n\
             Agent metrics: http://127.0.0.1:{}/metrics and http://127.0.0.1:{}/metrics (readiness: /readyz)\n",
            postgres.url(),
            DEMO_AGENT_METRICS_PORTS[0],
            DEMO_AGENT_METRICS_PORTS[1]
        );
        match &prometheus {
            Some(prometheus) => eprintln!(
                "Prometheus: {}/graph?g0.expr=sum%20by%20(folder%2C%20action)%20(syncfolder_file_changes_total)\n\
                 Dashboards to import into Grafana: dashboards/syncfolder-overview.json (Prometheus {}) \
                 and dashboards/syncfolder-activity.json (PostgreSQL {})\n",
                prometheus.url(),
                prometheus.url(),
                postgres.url()
            ),
            None => eprintln!(
                "Prometheus is not installed (Debian package prometheus, or `cargo xtask deps`); \
                 no scraping in this demo.\n"
            ),
        }
    }
    // stay until Ctrl-C, which reaches the children too (same process group)
    if let Some(server) = children.0.first_mut() {
        let status = server.wait().context("waiting for the server")?;
        eprintln!("the server stopped ({status})");
    }
    Ok(())
}

fn wait_until_healthy(server_url: &str) -> anyhow::Result<()> {
    let address = server_url.trim_start_matches("http://").to_owned();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(mut stream) = std::net::TcpStream::connect(&address) {
            use std::io::{Read, Write};
            let _ = stream
                .write_all(format!("GET /healthz HTTP/1.0\r\nHost: {address}\r\n\r\n").as_bytes());
            let mut answer = String::new();
            let _ = stream.read_to_string(&mut answer);
            if answer.starts_with("HTTP/1.1 200") || answer.starts_with("HTTP/1.0 200") {
                return Ok(());
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("the server did not answer /healthz at {server_url} within 20 s")
}
