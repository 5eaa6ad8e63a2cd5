//! Starting and stopping a server: open the data directory, read the TLS
//! files, bind, serve (through `accept.rs`) until the shutdown future
//! resolves, then finish in-flight requests.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::accept;
use crate::admin_token;
use crate::announcements::Announcements;
use crate::auth::sha256;
use crate::chunk_store::{ChunkStore, LooseChunkStore};
use crate::config::{ChunkStoreLocation, ServerConfig};
use crate::error::{Error, Result};
use crate::feed::Feed;
use crate::metadata::Db;
use crate::metrics::Metrics;
use crate::presence::Presence;
use crate::routes::router;
use crate::shipper::Shipper;
use crate::state::AppState;

/// A bound, not yet serving, server.
pub struct Server {
    listener: TcpListener,
    local_addr: SocketAddr,
    tls: Option<Arc<rustls::ServerConfig>>,
    admin_token: String,
    state: AppState,
    shipper: Option<Shipper>,
    /// Signals for the other servers, to send once serving (shared metadata).
    fanout_outgoing: Option<tokio::sync::mpsc::UnboundedReceiver<crate::fanout::Signal>>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Server")
            .field("local_addr", &self.local_addr)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Reads the TLS certificate and key (when configured), opens (or
    /// creates) the data directory, runs the metadata migrations, loads or
    /// generates the admin token, and binds the listener.
    pub async fn bind(config: ServerConfig) -> Result<Server> {
        let tls = config
            .tls
            .as_ref()
            .map(syncfolder_tls::server_config)
            .transpose()
            .map_err(|err| Error::Config(err.to_string()))?;
        let data_dir = config.data_dir.clone();
        std::fs::create_dir_all(&data_dir).map_err(Error::io(format!(
            "creating the data directory {}",
            data_dir.display()
        )))?;
        let chunk_store: Arc<dyn ChunkStore> = match &config.chunk_store {
            ChunkStoreLocation::DataDir => {
                let store_dir = data_dir.clone();
                Arc::new(
                    tokio::task::spawn_blocking(move || LooseChunkStore::open(&store_dir))
                        .await
                        .map_err(|err| Error::Internal(format!("opening the chunk store: {err}")))?
                        .map_err(Error::io("opening the chunk store"))?,
                )
            }
            ChunkStoreLocation::ObjectStore(object_store) => {
                Arc::new(crate::ObjectChunkStore::open(object_store)?)
            }
        };
        let pack_chunks_under = config
            .pack_chunks_under
            .unwrap_or_else(|| config.chunk_store.default_pack_chunks_under());
        let db = Db::connect(&config.metadata, &data_dir)
            .await?
            .with_lease_ttl(config.maintenance.lease_ttl);
        let admin_token = admin_token::load_or_create(&data_dir, config.admin_token.as_deref())?;
        let metrics = Metrics::new().map_err(|err| Error::Internal(format!("metrics: {err}")))?;
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(Error::io(format!("binding {}", config.listen)))?;
        let local_addr = listener
            .local_addr()
            .map_err(Error::io("reading the bound address"))?;
        tracing::info!(
            %local_addr,
            tls = tls.is_some(),
            data_dir = %data_dir.display(),
            "server bound"
        );
        if let Some(ms) = db
            .meta(crate::scrub::LAST_COMPLETED_KEY)
            .await?
            .and_then(|text| text.parse::<f64>().ok())
        {
            metrics.scrub_last_completed.set(ms / 1000.0);
        }
        let metrics = Arc::new(metrics);
        let outbox_wake = Arc::new(Notify::new());
        let shipper = match config.shipper {
            Some(shipper_config) => Some(
                Shipper::new(
                    db.clone(),
                    shipper_config,
                    Arc::clone(&metrics),
                    Arc::clone(&outbox_wake),
                )
                .await?,
            ),
            None => None,
        };
        let (fanout, fanout_outgoing) = if db.is_shared() {
            let (fanout, outgoing) = crate::fanout::Fanout::postgres();
            (fanout, Some(outgoing))
        } else {
            (crate::fanout::Fanout::local(), None)
        };
        let instance_id = format!("{:016x}", rand::random::<u64>());
        let gauges_lease = Arc::new(tokio::sync::Mutex::new(crate::singleton::Singleton::new(
            db.clone(),
            crate::routes::health::GAUGES_LEASE,
            &instance_id,
        )));
        let state = AppState {
            db,
            fanout,
            gauges_lease,
            chunk_store,
            feed: Arc::new(Feed::default()),
            announcements: Arc::new(Announcements::default()),
            metrics,
            presence: Arc::new(Presence::default()),
            outbox_wake,
            limits: Arc::new(config.limits),
            pack_chunks_under,
            admin_token_sha256: sha256(admin_token.as_bytes()),
            shutdown: CancellationToken::new(),
            maintenance: Arc::new(config.maintenance),
            instance_id,
        };
        Ok(Server {
            listener,
            local_addr,
            tls,
            admin_token,
            state,
            shipper,
            fanout_outgoing,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// True when the server speaks HTTPS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    /// The shared state, for embedding the router elsewhere.
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` resolves, then stops accepting, wakes parked
    /// long-polls, lets in-flight requests finish and closes the database.
    pub async fn serve(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<()> {
        let Server {
            listener,
            tls,
            state,
            shipper,
            fanout_outgoing,
            ..
        } = self;
        let cancel = state.shutdown.clone();
        let background = CancellationToken::new();
        let mut tasks = Vec::new();
        if let (Some(outgoing), Some(pool)) = (fanout_outgoing, state.db.postgres_pool()) {
            tasks.push(tokio::spawn(crate::fanout::send_batches(
                pool.clone(),
                state.instance_id.clone(),
                outgoing,
                background.clone(),
            )));
            tasks.push(tokio::spawn(crate::fanout::listen(
                pool.clone(),
                state.clone(),
                background.clone(),
            )));
            tasks.push(tokio::spawn(crate::fanout::backstop(
                state.clone(),
                background.clone(),
            )));
            tasks.push(tokio::spawn(crate::presence::share_periodically(
                state.clone(),
                background.clone(),
            )));
        }
        tasks.push(tokio::spawn(crate::outbox::prune_periodically(
            state.db.clone(),
            shipper.is_some(),
            state.instance_id.clone(),
            background.clone(),
        )));
        if let Some(shipper) = shipper {
            tasks.push(tokio::spawn(
                shipper.run(state.instance_id.clone(), background.clone()),
            ));
        }
        let maintenance = Arc::clone(&state.maintenance);
        if let Some(interval) = maintenance.gc_interval {
            tasks.push(tokio::spawn(crate::maintenance::reclaim_periodically(
                state.clone(),
                interval,
                background.clone(),
            )));
        }
        if let Some(interval) = maintenance.scrub_interval {
            tasks.push(tokio::spawn(crate::scrub::scrub_periodically(
                state.clone(),
                interval,
                maintenance.scrub_bytes_per_second,
                background.clone(),
            )));
        }
        let signal = async move {
            shutdown.await;
            tracing::info!("shutting down: finishing in-flight requests");
            cancel.cancel();
        };
        let app = router(state.clone());
        let serving = accept::serve(listener, tls, app, &state.limits, state.shutdown.clone());
        tokio::join!(signal, serving);
        background.cancel();
        for task in tasks {
            let _ = task.await;
        }
        state.db.close().await;
        tracing::info!("server stopped");
        Ok(())
    }
}
