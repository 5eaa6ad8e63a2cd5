//! The real syncfolder server, run in its own runtime so that a crash is a
//! crash: the runtime is dropped with every request task and all in-memory
//! state, and a restart opens the same data directory again.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use syncfolder_core::Hash;
use syncfolder_core::protocol::GcReport;
use syncfolder_server::gc::GcOptions;
use syncfolder_server::horizon::ForgetReport;
use syncfolder_server::packs::Placed;
use syncfolder_server::{AppState, Maintenance, MetadataLocation, Server, ServerConfig};

pub const ADMIN_TOKEN: &str = "sim-admin-token";

/// Where the server listens now; `None` while it is down.
#[derive(Debug, Clone, Default)]
pub struct ServerAddress {
    url: Arc<Mutex<Option<String>>>,
}

impl ServerAddress {
    pub fn get(&self) -> Option<String> {
        self.url
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .clone()
    }

    fn set(&self, url: Option<String>) {
        *self.url.lock().unwrap_or_else(|poison| poison.into_inner()) = url;
    }
}

pub struct SimServer {
    pub data_dir: PathBuf,
    metadata: MetadataLocation,
    /// Small chunks into pack files below this size (`None`: the default).
    pack_chunks_under: Option<u64>,
    runtime: Option<tokio::runtime::Runtime>,
    /// The running server's state, for the storage jobs the driver runs.
    state: Option<AppState>,
    pub address: ServerAddress,
    n_starts: u64,
}

impl SimServer {
    pub fn new(
        data_dir: PathBuf,
        metadata: MetadataLocation,
        pack_chunks_under: Option<u64>,
    ) -> SimServer {
        SimServer {
            data_dir,
            metadata,
            pack_chunks_under,
            runtime: None,
            state: None,
            address: ServerAddress::default(),
            n_starts: 0,
        }
    }

    pub fn is_up(&self) -> bool {
        self.runtime.is_some()
    }

    /// Starts the server on a fresh loopback port (blocks until it listens).
    pub fn start(&mut self) -> anyhow::Result<()> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .context("server runtime")?;
        let mut config =
            ServerConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)), self.data_dir.clone());
        config.admin_token = Some(ADMIN_TOKEN.to_owned());
        config.metadata = self.metadata.clone();
        config.pack_chunks_under = self.pack_chunks_under;
        // the driver runs the storage jobs at moments of its choosing
        config.maintenance = Maintenance {
            gc_interval: None,
            tombstone_retention: None,
            scrub_interval: None,
            ..Maintenance::default()
        };
        let handle = runtime.handle().clone();
        // bound from another thread: this one may be inside the driver's runtime
        let server = std::thread::scope(|scope| {
            scope
                .spawn(|| handle.block_on(Server::bind(config)))
                .join()
                .map_err(|_| anyhow::anyhow!("binding the server panicked"))
        })??;
        let url = format!("http://{}", server.local_addr());
        // announcement numbers from the count of starts, not the clock: runs
        // repeat, and each start's numbers stay above the last one's
        self.n_starts += 1;
        server
            .state()
            .announcements
            .number_from(self.n_starts << 32);
        self.state = Some(server.state().clone());
        runtime.spawn(server.serve(std::future::pending()));
        self.runtime = Some(runtime);
        self.address.set(Some(url));
        Ok(())
    }

    /// Runs `job` on the server's runtime with its state; `None` while it is down.
    async fn run_job<T, Fut>(&self, job: impl FnOnce(AppState) -> Fut) -> Option<anyhow::Result<T>>
    where
        T: Send + 'static,
        Fut: std::future::Future<Output = syncfolder_server::Result<T>> + Send + 'static,
    {
        let (runtime, state) = (self.runtime.as_ref()?, self.state.clone()?);
        let task = runtime.spawn(job(state));
        Some(match task.await {
            Ok(result) => result.map_err(anyhow::Error::from),
            Err(err) => Err(anyhow::anyhow!("the job's task failed: {err}")),
        })
    }

    /// Where the metadata says `hashes` are (packed ones name a pack and an
    /// offset), for the check that their bytes are there.
    pub async fn placements(&self, hashes: Vec<Hash>) -> Option<anyhow::Result<Vec<Placed>>> {
        self.run_job(|state| async move { state.db.placements(&hashes).await })
            .await
    }

    /// A garbage collection that spares no unreferenced chunk, however
    /// recently claimed (the most a collection may ever take).
    pub async fn collect_garbage(&self) -> Option<anyhow::Result<GcReport>> {
        self.run_job(|state| async move {
            let options = GcOptions {
                dry_run: false,
                claimed_before_ms: i64::MAX,
            };
            syncfolder_server::gc::collect(&state, options).await
        })
        .await
    }

    /// Forgets every tombstone now, with the history of its path (the
    /// horizon at its most forgetful).
    pub async fn forget_tombstones(&self) -> Option<anyhow::Result<ForgetReport>> {
        self.run_job(|state| async move {
            syncfolder_server::horizon::forget(
                &state,
                Some(i64::MAX),
                syncfolder_server::metadata::now_ms(),
            )
            .await
        })
        .await
    }

    /// Kills the server: no request finishes, nothing is flushed.
    pub fn crash(&mut self) {
        self.address.set(None);
        self.state = None;
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Drop for SimServer {
    fn drop(&mut self) {
        self.crash();
    }
}
