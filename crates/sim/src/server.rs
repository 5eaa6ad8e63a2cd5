//! The real syncfolder server, run in its own runtime so that a crash is a
//! crash: the runtime is dropped with every request task and all in-memory
//! state, and a restart opens the same data directory again.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use syncfolder_server::{Server, ServerConfig};

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
    data_dir: PathBuf,
    runtime: Option<tokio::runtime::Runtime>,
    pub address: ServerAddress,
}

impl SimServer {
    pub fn new(data_dir: PathBuf) -> SimServer {
        SimServer {
            data_dir,
            runtime: None,
            address: ServerAddress::default(),
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
        let handle = runtime.handle().clone();
        // bound from another thread: this one may be inside the driver's runtime
        let server = std::thread::scope(|scope| {
            scope
                .spawn(|| handle.block_on(Server::bind(config)))
                .join()
                .map_err(|_| anyhow::anyhow!("binding the server panicked"))
        })??;
        let url = format!("http://{}", server.local_addr());
        runtime.spawn(server.serve(std::future::pending()));
        self.runtime = Some(runtime);
        self.address.set(Some(url));
        Ok(())
    }

    /// Kills the server: no request finishes, nothing is flushed.
    pub fn crash(&mut self) {
        self.address.set(None);
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
