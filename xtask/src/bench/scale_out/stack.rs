//! The processes of case 8: PostgreSQL and Garage ([`Backends`]), server
//! replicas that keep their port and flags across restarts ([`Replica`]),
//! and the embedded default's server ([`Servers`]); agents pointed at any
//! of them are `bench/syncfolder.rs`'s.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use syncfolder_testkit::tools::find_postgres_bin_dir;
use syncfolder_testkit::{TestGarage, TestPostgres, free_port};

use super::super::http;
use super::super::measure::wait_until;
use super::super::process::Guard;
use super::super::syncfolder::{ADMIN_TOKEN, Server, create_folder};
use super::{N_REPLICAS, START_PATIENCE};

/// Runs `start`, which fails by panicking (the testkit's way), and turns
/// a panic into an error.
fn started<T>(what: &str, start: impl FnOnce() -> T) -> anyhow::Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(start)).map_err(|panic| {
        let message = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|text| (*text).to_owned()))
            .unwrap_or_default();
        anyhow!("{what} did not start: {message}")
    })
}

/// Where one stack keeps its metadata and chunks.
struct Stores {
    metadata_url: String,
    chunk_store: String,
}

/// PostgreSQL and the Garage cluster every scale-out stack of the case
/// shares, each stack with a database and a key prefix of its own.
pub(super) struct Backends {
    postgres: TestPostgres,
    garage: TestGarage,
    n_stores: usize,
}

impl Backends {
    pub(super) fn start() -> anyhow::Result<Backends> {
        find_postgres_bin_dir()
            .context("PostgreSQL's server binaries are missing: `cargo xtask deps`")?;
        let postgres = started("PostgreSQL", TestPostgres::start_durable)?;
        let garage = started("the Garage cluster", TestGarage::start)?;
        Ok(Backends {
            postgres,
            garage,
            n_stores: 0,
        })
    }

    /// An rclone `:s3:` remote on Garage node 0, as environment variables,
    /// and a fresh key in the bucket for one file.
    pub(super) fn rclone_target(&mut self, name: &str) -> (Vec<(String, String)>, String) {
        self.n_stores += 1;
        let garage = &self.garage;
        let env = [
            ("RCLONE_S3_PROVIDER", "Other".to_owned()),
            ("RCLONE_S3_ENV_AUTH", "false".to_owned()),
            ("RCLONE_S3_ENDPOINT", garage.s3_endpoint(0)),
            ("RCLONE_S3_REGION", garage.region().to_owned()),
            ("RCLONE_S3_ACCESS_KEY_ID", garage.access_key_id().to_owned()),
            (
                "RCLONE_S3_SECRET_ACCESS_KEY",
                garage.secret_access_key().to_owned(),
            ),
            ("RCLONE_S3_FORCE_PATH_STYLE", "true".to_owned()),
        ]
        .into_iter()
        .map(|(key, value)| (key.to_owned(), value))
        .collect();
        let key = format!(
            ":s3:{}/floor-{}-{}/{name}",
            garage.bucket(),
            std::process::id(),
            self.n_stores
        );
        (env, key)
    }

    /// A new database and a new key prefix in the bucket.
    fn fresh_stores(&mut self) -> anyhow::Result<Stores> {
        self.n_stores += 1;
        let database = format!("bench_{}", self.n_stores);
        let metadata_url = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.postgres.create_database(&database)
        }))
        .map_err(|_| anyhow::anyhow!("creating the database {database} failed"))?;
        Ok(Stores {
            metadata_url,
            chunk_store: format!(
                "s3://{}/bench-{}-{}",
                self.garage.bucket(),
                std::process::id(),
                self.n_stores
            ),
        })
    }

    /// [`N_REPLICAS`] replicas on a fresh database and key prefix, replica
    /// `idx` talking to Garage node `idx`, and the folder made through
    /// replica 0; returns them and the folder's read-write token.
    pub(super) fn start_replicas(
        &mut self,
        binary: &Path,
        dir: &Path,
    ) -> anyhow::Result<(Vec<Replica>, String)> {
        let stores = self.fresh_stores()?;
        let mut replicas = Vec::with_capacity(N_REPLICAS);
        for replica_idx in 0..N_REPLICAS {
            let flags = vec![
                "--metadata-url".to_owned(),
                stores.metadata_url.clone(),
                "--chunk-store".to_owned(),
                stores.chunk_store.clone(),
                "--chunk-store-endpoint".to_owned(),
                self.garage.s3_endpoint(replica_idx),
                "--chunk-store-region".to_owned(),
                self.garage.region().to_owned(),
                "--chunk-store-allow-http".to_owned(),
            ];
            let env = vec![
                (
                    "AWS_ACCESS_KEY_ID".to_owned(),
                    self.garage.access_key_id().to_owned(),
                ),
                (
                    "AWS_SECRET_ACCESS_KEY".to_owned(),
                    self.garage.secret_access_key().to_owned(),
                ),
            ];
            replicas.push(Replica::start(binary, replica_idx, dir, flags, env)?);
        }
        let token = create_folder(binary, &replicas[0].url())?;
        Ok((replicas, token))
    }
}

/// The servers one measurement's agents talk to.
pub(super) enum Servers {
    Embedded {
        server: Server,
        token: String,
    },
    ScaleOut {
        replicas: Vec<Replica>,
        token: String,
    },
}

impl Servers {
    pub(super) fn token(&self) -> &str {
        match self {
            Servers::Embedded { token, .. } | Servers::ScaleOut { token, .. } => token,
        }
    }

    /// The server agent `agent_idx` is pinned to: each its own replica.
    pub(super) fn url_for(&self, agent_idx: usize) -> String {
        match self {
            Servers::Embedded { server, .. } => server.url(),
            Servers::ScaleOut { replicas, .. } => replicas[agent_idx % replicas.len()].url(),
        }
    }

    /// The server processes: the embedded server, or every replica.
    pub(super) fn pids(&self) -> Vec<u32> {
        match self {
            Servers::Embedded { server, .. } => vec![server.pid()],
            Servers::ScaleOut { replicas, .. } => replicas
                .iter()
                .filter_map(|replica| Some(replica.guard.as_ref()?.pid()))
                .collect(),
        }
    }

    /// Fails, with the end of its log, when a replica has exited.
    pub(super) fn check_running(&mut self) -> anyhow::Result<()> {
        if let Servers::ScaleOut { replicas, .. } = self {
            for replica in replicas {
                replica.check_running()?;
            }
        }
        Ok(())
    }
}

/// One `syncfolder server` replica: its port, data directory, flags and
/// environment stay the same across restarts.
pub(super) struct Replica {
    name: String,
    binary: PathBuf,
    pub(super) port: u16,
    data_dir: PathBuf,
    log_path: PathBuf,
    flags: Vec<String>,
    env: Vec<(String, String)>,
    guard: Option<Guard>,
}

impl Replica {
    /// Starts replica `replica_idx` with its data in `dir/replica-N` and
    /// waits until it is ready.
    fn start(
        binary: &Path,
        replica_idx: usize,
        dir: &Path,
        flags: Vec<String>,
        env: Vec<(String, String)>,
    ) -> anyhow::Result<Replica> {
        let data_dir = dir.join(format!("replica-{replica_idx}"));
        std::fs::create_dir_all(&data_dir)
            .with_context(|| format!("creating {}", data_dir.display()))?;
        let mut replica = Replica {
            name: format!("syncfolder server replica {replica_idx}"),
            binary: binary.to_path_buf(),
            port: free_port(),
            data_dir,
            log_path: dir.join(format!("replica-{replica_idx}.log")),
            flags,
            env,
            guard: None,
        };
        replica.spawn()?;
        Ok(replica)
    }

    /// Starts the process (again, on the same port) and waits for `/readyz`.
    pub(super) fn spawn(&mut self) -> anyhow::Result<()> {
        let mut command = Command::new(&self.binary);
        command
            .args([
                "server",
                "--listen",
                &format!("127.0.0.1:{}", self.port),
                "--data",
            ])
            .arg(&self.data_dir)
            .args(["--admin-token", ADMIN_TOKEN])
            .args(&self.flags)
            .envs(self.env.iter().map(|(name, value)| (name, value)));
        let guard = self
            .guard
            .insert(Guard::spawn(&self.name, &mut command, &self.log_path)?);
        let port = self.port;
        wait_until(
            &format!("{} to answer /readyz", self.name),
            START_PATIENCE,
            Duration::from_millis(20),
            || {
                guard.check_running()?;
                Ok(http::get(port, "/readyz").is_ok_and(|response| response.status == 200))
            },
        )?;
        Ok(())
    }

    /// SIGTERM, and waits until the process has exited.
    pub(super) fn stop_gracefully(&mut self) -> anyhow::Result<()> {
        let guard = self
            .guard
            .as_mut()
            .with_context(|| format!("{} is not running", self.name))?;
        let status = Command::new("kill")
            .args(["-TERM", &guard.pid().to_string()])
            .status()
            .context("running kill")?;
        if !status.success() {
            bail!("kill -TERM {} failed", guard.pid());
        }
        wait_until(
            &format!("{} to exit after SIGTERM", self.name),
            START_PATIENCE,
            Duration::from_millis(20),
            || Ok(guard.check_running().is_err()),
        )?;
        self.guard = None;
        Ok(())
    }

    pub(super) fn check_running(&mut self) -> anyhow::Result<()> {
        self.guard
            .as_mut()
            .with_context(|| format!("{} is not running", self.name))?
            .check_running()
    }

    pub(super) fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}
