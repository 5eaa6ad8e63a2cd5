//! One controller replica, everything it runs: the health and metrics
//! endpoint, the injection webhook with its certificate, leader election,
//! and (on the leader only) the reconciler.
//!
//! Every replica serves the webhook from a SyncFolder cache of its own, so
//! pods are admitted while the leader changes; only the leader writes to
//! SyncFolders, Secrets and the server.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use futures::StreamExt;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, Client};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::ca::Lifetimes;
use crate::certificate::{CaBundleWriter, service_dns_names};
use crate::controller::ControllerSettings;
use crate::leader::{LeaseLock, LeaseSettings, keep_electing};
use crate::metrics::Metrics;
use crate::pki::{Pki, PkiSettings, ServingSecret};
use crate::server::HttpServers;
use crate::trust::TrustBundle;
use crate::webhook_server::{CertificateSlot, WebhookState, router, serve_tls, tls_config};
use crate::{InjectSettings, SyncFolder};

/// How often the certificates and the CA bundle are checked.
const CERTIFICATE_CHECK: Duration = Duration::from_secs(60);
/// How soon a failed certificate check is retried.
const CERTIFICATE_RETRY: Duration = Duration::from_secs(10);

/// What one replica is told (the chart sets all of it).
#[derive(Debug, Clone)]
pub struct ProcessConfig {
    pub controller: ControllerSettings,
    /// `/metrics`, `/healthz`, `/readyz`.
    pub metrics_listen: SocketAddr,
    pub webhook: Option<WebhookConfig>,
    /// The controller's own namespace.
    pub namespace: String,
    /// This replica's name (its pod's).
    pub pod_name: String,
    /// Elect a leader through this Lease; without it this replica leads.
    pub leader_election_lease: Option<String>,
    /// CA certificates (PEM) trusted for `https://` sync servers, besides the system's.
    pub server_ca_cert: Option<PathBuf>,
    pub pki: PkiConfig,
}

/// The controller's CA and what it issues besides the webhook's certificate
/// (see `pki.rs` and `ca.rs`).
#[derive(Debug, Clone)]
pub struct PkiConfig {
    /// The Secret in the controller's namespace that holds the CA.
    pub ca_secret: String,
    /// The sync server's serving certificate, when the controller issues it.
    pub server: Option<ServingSecret>,
    pub lifetimes: Lifetimes,
}

impl Default for PkiConfig {
    fn default() -> Self {
        PkiConfig {
            ca_secret: "syncfolder-ca".to_owned(),
            server: None,
            lifetimes: Lifetimes::default(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct WebhookConfig {
    pub listen: SocketAddr,
    pub certificate: CertificateSource,
    pub inject: InjectSettings,
}

/// Where the webhook's certificate comes from.
#[derive(Debug, Clone)]
pub enum CertificateSource {
    /// PEM files kept current by someone else (cert-manager); re-read
    /// every minute.
    Files { cert: PathBuf, key: PathBuf },
    /// A certificate the controller issues from its CA, kept in a Secret,
    /// with the CA bundle written into the webhook configuration.
    Managed {
        secret: String,
        service: String,
        configuration: String,
    },
}

/// Why a replica could not start.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error(
        "no Kubernetes API access (in a pod it comes from the service account; elsewhere from KUBECONFIG)"
    )]
    Client(#[source] kube::Error),
    #[error("cannot listen on {address}: {source}")]
    Listen {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("webhook TLS: {0}")]
    Tls(#[from] rustls::Error),
}

/// Runs one replica until `shutdown` completes.
pub async fn run_process(
    config: ProcessConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ProcessError> {
    let client = Client::try_default().await.map_err(ProcessError::Client)?;
    run_with_client(config, client, shutdown).await
}

/// [`run_process`] with a given client.
pub async fn run_with_client(
    config: ProcessConfig,
    client: Client,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ProcessError> {
    let stop = CancellationToken::new();
    tokio::spawn({
        let stop = stop.clone();
        async move {
            shutdown.await;
            stop.cancel();
        }
    });
    let metrics = Metrics::new()?;
    let metrics_listener = bind(config.metrics_listen).await?;

    // the webhook: a cache, a certificate, a TLS listener
    let mut webhook_parts = None;
    if let Some(webhook) = &config.webhook {
        let listener = bind(webhook.listen).await?;
        let slot = Arc::new(CertificateSlot::default());
        let tls = tls_config(slot.clone())?;
        let cache_ready = Arc::new(AtomicBool::new(false));
        let lookup = spawn_folder_cache(&client, cache_ready.clone(), stop.clone());
        let state = WebhookState {
            lookup,
            settings: webhook.inject.clone(),
            metrics: metrics.clone(),
            cache_ready: cache_ready.clone(),
        };
        if let CertificateSource::Files { cert, key } = &webhook.certificate {
            tokio::spawn(keep_certificate_files(
                cert.clone(),
                key.clone(),
                slot.clone(),
                stop.clone(),
            ));
        }
        tokio::spawn(serve_tls(
            listener,
            tls,
            router(state),
            stop.clone().cancelled_owned(),
        ));
        webhook_parts = Some((cache_ready, slot));
        tracing::info!(listen = %webhook.listen, "serving the injection webhook");
    }

    // the certificates the controller issues from its CA
    let managed_webhook = config
        .webhook
        .as_ref()
        .and_then(|webhook| match &webhook.certificate {
            CertificateSource::Managed {
                secret,
                service,
                configuration,
            } => Some((
                ServingSecret {
                    secret: secret.clone(),
                    dns_names: service_dns_names(service, &config.namespace),
                },
                CaBundleWriter::new(client.clone(), configuration),
            )),
            CertificateSource::Files { .. } => None,
        });
    let mut serving = Vec::new();
    let mut webhook_slot = None;
    if let (Some((secret, writer)), Some((_, slot))) = (managed_webhook, &webhook_parts) {
        serving.push(secret);
        webhook_slot = Some((slot.clone(), writer));
    }
    serving.extend(config.pki.server.clone());
    if !serving.is_empty() {
        let pki = Pki::new(
            client.clone(),
            PkiSettings {
                namespace: config.namespace.clone(),
                ca_secret: config.pki.ca_secret.clone(),
                serving,
                lifetimes: config.pki.lifetimes,
            },
        );
        let trust = config
            .controller
            .ca_bundle
            .as_ref()
            .map(|copies| copies.bundle.clone());
        tokio::spawn(keep_certificates(pki, webhook_slot, trust, stop.clone()));
    }

    tokio::spawn(serve_health(
        metrics_listener,
        HealthState {
            metrics: metrics.clone(),
            webhook: webhook_parts,
        },
        stop.clone(),
    ));
    tracing::info!(listen = %config.metrics_listen, "serving /metrics, /healthz and /readyz");

    // leadership, then reconciling while leading
    let (leading_sender, mut leading) = tokio::sync::watch::channel(false);
    match &config.leader_election_lease {
        Some(lease_name) => {
            let lock = LeaseLock::new(
                client.clone(),
                LeaseSettings::new(&config.namespace, lease_name, &config.pod_name),
            );
            tokio::spawn(keep_electing(
                lock,
                leading_sender,
                stop.clone().cancelled_owned(),
            ));
        }
        // alone, this replica leads for as long as it runs (the sender
        // lives until this function returns)
        None => {
            leading_sender.send_replace(true);
        }
    }
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            changed = leading.wait_for(|leading| *leading) => if changed.is_err() { break },
        }
        metrics.leader.set(1);
        let lost = {
            let mut leading = leading.clone();
            let stop = stop.clone();
            async move {
                tokio::select! {
                    () = stop.cancelled() => {}
                    _ = leading.wait_for(|leading| !*leading) => {}
                }
            }
        };
        tracing::info!("reconciling SyncFolders");
        crate::controller::run(
            crate::controller::watch(&client),
            client.clone(),
            HttpServers::new(config.server_ca_cert.clone()),
            config.controller.clone(),
            metrics.clone(),
            lost,
        )
        .await;
        metrics.leader.set(0);
        if !stop.is_cancelled() {
            tracing::info!("no longer the leader: stopped reconciling");
        }
    }
    Ok(())
}

async fn bind(address: SocketAddr) -> Result<TcpListener, ProcessError> {
    TcpListener::bind(address)
        .await
        .map_err(|source| ProcessError::Listen { address, source })
}

/// Every SyncFolder in the cluster, in memory, for the webhook's lookups.
fn spawn_folder_cache(
    client: &Client,
    cache_ready: Arc<AtomicBool>,
    stop: CancellationToken,
) -> crate::webhook_server::FolderLookup {
    let (store, writer) = reflector::store::<SyncFolder>();
    let folders: Api<SyncFolder> = Api::all(client.clone());
    let stream = reflector(
        writer,
        watcher(folders, watcher::Config::default().any_semantic()),
    )
    .default_backoff()
    .applied_objects();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream.take_until(stop.cancelled_owned()));
        while let Some(event) = stream.next().await {
            if let Err(err) = event {
                tracing::warn!(%err, "watching SyncFolders for the webhook failed; retrying");
            }
        }
    });
    let ready_store = store.clone();
    tokio::spawn(async move {
        if ready_store.wait_until_ready().await.is_ok() {
            cache_ready.store(true, Ordering::Release);
            tracing::info!("the webhook's SyncFolder cache is loaded");
        }
    });
    Arc::new(move |namespace: &str, name: &str| {
        store
            .get(&ObjectRef::new(name).within(namespace))
            .map(|folder| folder.as_ref().clone())
    })
}

/// Reads the webhook's certificate and key from files someone else keeps
/// current (cert-manager), into `slot`, again every minute.
async fn keep_certificate_files(
    cert: PathBuf,
    key: PathBuf,
    slot: Arc<CertificateSlot>,
    stop: CancellationToken,
) {
    let read = async |path: &PathBuf| {
        tokio::fs::read(path)
            .await
            .map_err(|err| format!("{}: {err}", path.display()))
    };
    let mut loaded: Option<(Vec<u8>, Vec<u8>)> = None;
    loop {
        let outcome = match (read(&cert).await, read(&key).await) {
            (Ok(cert), Ok(key)) if loaded.as_ref() == Some(&(cert.clone(), key.clone())) => Ok(()),
            (Ok(cert), Ok(key)) => slot
                .set_pem(&cert, &key)
                .map(|()| {
                    tracing::info!("the webhook serves a new certificate");
                    loaded = Some((cert, key));
                })
                .map_err(|err| err.to_string()),
            (Err(err), _) | (_, Err(err)) => Err(err),
        };
        if !wait_for_next_check(outcome, "the webhook certificate", &stop).await {
            return;
        }
    }
}

/// Keeps the CA and the certificates it issues current, every minute: the
/// webhook's (served from `webhook`'s slot, with the bundle written into
/// the webhook configuration) and the sync server's (which the server
/// reads from its mounted Secret); the bundle goes to `trust`, from where
/// the reconciler copies it into every SyncFolder namespace.
async fn keep_certificates(
    pki: Pki,
    webhook: Option<(Arc<CertificateSlot>, CaBundleWriter)>,
    trust: Option<TrustBundle>,
    stop: CancellationToken,
) {
    let mut served: Option<String> = None;
    loop {
        let outcome = async {
            let issued = pki
                .ensure(k8s_openapi::jiff::Timestamp::now())
                .await
                .map_err(|err| err.to_string())?;
            if let Some(trust) = &trust
                && trust.set(issued.bundle.clone())
            {
                tracing::info!("the CA bundle changed; copying it into every SyncFolder namespace");
            }
            if let Some((slot, writer)) = &webhook {
                // the webhook's certificate is the first one issued
                let certificate = issued
                    .serving
                    .first()
                    .ok_or("no webhook certificate was issued")?;
                // the bundle first: the API server must trust the new CA
                // before a certificate from it is served
                writer
                    .ensure_ca_bundle(&issued.bundle)
                    .await
                    .map_err(|err| err.to_string())?;
                if served.as_ref() != Some(&certificate.cert_pem) {
                    slot.set_pem(
                        certificate.cert_pem.as_bytes(),
                        certificate.key_pem.as_bytes(),
                    )
                    .map_err(|err| err.to_string())?;
                    tracing::info!("the webhook serves a new certificate");
                    served = Some(certificate.cert_pem.clone());
                }
            }
            Ok::<(), String>(())
        }
        .await;
        if !wait_for_next_check(outcome, "the certificates", &stop).await {
            return;
        }
    }
}

/// Waits until the next check (sooner after a failure, which it logs);
/// false once the replica stops.
async fn wait_for_next_check(
    outcome: Result<(), String>,
    what: &str,
    stop: &CancellationToken,
) -> bool {
    let wait = match outcome {
        Ok(()) => CERTIFICATE_CHECK,
        Err(err) => {
            tracing::warn!(%err, "cannot keep {what} current; retrying");
            CERTIFICATE_RETRY
        }
    };
    tokio::select! {
        () = stop.cancelled() => false,
        () = tokio::time::sleep(wait) => true,
    }
}

#[derive(Clone)]
struct HealthState {
    metrics: Metrics,
    /// The webhook's cache-loaded flag and certificate, when it runs.
    webhook: Option<(Arc<AtomicBool>, Arc<CertificateSlot>)>,
}

impl HealthState {
    /// Ready once the webhook, if any, can answer: cache loaded, certificate set.
    fn ready(&self) -> bool {
        self.webhook
            .as_ref()
            .is_none_or(|(cache_ready, slot)| cache_ready.load(Ordering::Acquire) && slot.is_set())
    }
}

async fn serve_health(listener: TcpListener, state: HealthState, stop: CancellationToken) {
    let app = Router::new()
        .route(
            "/metrics",
            get(|State(state): State<HealthState>| async move { state.metrics.render() }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(|State(state): State<HealthState>| async move {
                if state.ready() {
                    (StatusCode::OK, "ready")
                } else {
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "the webhook is not ready yet",
                    )
                }
            }),
        )
        .with_state(state);
    if let Err(err) = axum::serve(listener, app)
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
    {
        tracing::error!(%err, "the health endpoint stopped");
    }
}

#[cfg(test)]
#[path = "process_tests.rs"]
mod tests;
