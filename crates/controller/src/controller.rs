//! The reconciler: each SyncFolder becomes a folder on its server with the
//! spec's settings, a Secret with the folder's token, and a status refreshed
//! from the server. A finalizer honours `deletionPolicy`.
//!
//! One reconcile of a live SyncFolder:
//! 1. the spec's settings (an invalid quota stops here, reported in status,
//!    and waits for the spec to change);
//! 2. the server (the controller's own, or `spec.server`) and its admin token;
//! 3. the Secret as it is, and the server folder as it is;
//! 4. unless paused: create the folder or push changed settings, make sure
//!    the Secret holds a token for it, the folder's server name and URL;
//! 5. status (written only when it changed), then Events for what changed.
//!
//! Deleting: `Delete` removes the server folder with its data; `Retain`
//! keeps it and revokes the Secret's token. The Secret itself goes with the
//! SyncFolder (owner reference). Deletion honours `deletionPolicy` even while
//! paused.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};

use crate::crd::SyncFolder;
use crate::metrics::Metrics;
use crate::secret::{MANAGED_BY_LABEL, MANAGER};
use crate::server::Servers;
use crate::{Error, Result};

/// The finalizer that lets the controller clean up before a SyncFolder goes.
pub const FINALIZER: &str = "syncfolder.io/cleanup";

/// What the controller is configured with (the Helm chart's values).
#[derive(Clone)]
pub struct ControllerSettings {
    /// The server SyncFolders without `spec.server` use.
    pub default_server_url: String,
    /// That server's admin token.
    pub admin_token: String,
    /// How often a healthy folder's status is refreshed from the server.
    pub status_refresh: Duration,
    /// How long after a failed reconcile to try again.
    pub retry_after: Duration,
    /// This controller instance in Events (its pod name).
    pub instance: Option<String>,
    /// Where the sync server's CA bundle goes in every namespace with
    /// SyncFolders; `None` when the server is not reached over TLS with a
    /// CA the controller knows.
    pub ca_bundle: Option<CaBundleCopies>,
}

/// The ConfigMap each SyncFolder's namespace gets, and the bundle it holds
/// (learned by the replica's certificate loop; nothing is written before).
#[derive(Debug, Clone)]
pub struct CaBundleCopies {
    pub config_map: String,
    pub bundle: crate::trust::TrustBundle,
}

impl std::fmt::Debug for ControllerSettings {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ControllerSettings")
            .field("default_server_url", &self.default_server_url)
            .field("admin_token", &"<redacted>")
            .field("status_refresh", &self.status_refresh)
            .field("retry_after", &self.retry_after)
            .field("instance", &self.instance)
            .field("ca_bundle", &self.ca_bundle)
            .finish()
    }
}

/// What every reconcile shares.
pub struct Context<S: Servers> {
    pub client: Client,
    pub servers: S,
    pub settings: ControllerSettings,
    pub recorder: Recorder,
    pub metrics: Metrics,
}

impl<S: Servers> Context<S> {
    pub fn new(client: Client, servers: S, settings: ControllerSettings, metrics: Metrics) -> Self {
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: MANAGER.to_owned(),
                instance: settings.instance.clone(),
            },
        );
        Context {
            client,
            servers,
            settings,
            recorder,
            metrics,
        }
    }
}

/// Reconciles one SyncFolder.
pub async fn reconcile<S: Servers>(
    sync_folder: Arc<SyncFolder>,
    context: Arc<Context<S>>,
) -> Result<Action> {
    context.metrics.reconciles.inc();
    let _timer = context.metrics.reconcile_duration.start_timer();
    let result = match sync_folder.namespace() {
        None => Err(Error::MissingNamespace),
        Some(namespace) => {
            let api: Api<SyncFolder> = Api::namespaced(context.client.clone(), &namespace);
            finalizer(&api, FINALIZER, sync_folder, |event| async {
                match event {
                    FinalizerEvent::Apply(sync_folder) => {
                        crate::apply::apply(&sync_folder, &context).await
                    }
                    FinalizerEvent::Cleanup(sync_folder) => {
                        crate::cleanup::cleanup(&sync_folder, &context).await
                    }
                }
            })
            .await
            .map_err(|err| Error::Finalizer(Box::new(err)))
        }
    };
    if let Err(err) = &result {
        context.metrics.failed(err);
    }
    result
}

/// After a failed reconcile: try again later.
pub fn error_policy<S: Servers>(
    sync_folder: Arc<SyncFolder>,
    err: &Error,
    context: Arc<Context<S>>,
) -> Action {
    tracing::warn!(
        namespace = sync_folder.namespace().unwrap_or_default(),
        name = %sync_folder.name_any(),
        kind = err.metric_label(),
        %err,
        "reconcile failed"
    );
    Action::requeue(context.settings.retry_after)
}

/// Events to publish once the reconcile has written its results.
pub(crate) type PendingEvents = Vec<Event>;

pub(crate) fn normal(reason: &str, action: &str, note: String) -> Event {
    Event {
        type_: EventType::Normal,
        reason: reason.to_owned(),
        note: Some(note),
        action: action.to_owned(),
        secondary: None,
    }
}

pub(crate) fn warning(reason: &str, action: &str, note: String) -> Event {
    Event {
        type_: EventType::Warning,
        reason: reason.to_owned(),
        note: Some(note),
        action: action.to_owned(),
        secondary: None,
    }
}

/// Publishes Events; a failure is logged, never fails the reconcile.
pub(crate) async fn publish<S: Servers>(
    sync_folder: &SyncFolder,
    context: &Context<S>,
    events: PendingEvents,
) {
    let reference = sync_folder.object_ref(&());
    for event in events {
        if let Err(err) = context.recorder.publish(&event, &reference).await {
            tracing::warn!(reason = %event.reason, %err, "cannot publish an Event");
        }
    }
}

/// The controller over SyncFolders and the Secrets they own. Build it
/// first, take [`Controller::store`] for the webhook's lookups (see
/// [`folder_lookup`]), then hand it to [`run`].
pub fn watch(client: &Client) -> Controller<SyncFolder> {
    let folders: Api<SyncFolder> = Api::all(client.clone());
    let secrets: Api<Secret> = Api::all(client.clone());
    Controller::new(folders, watcher::Config::default().any_semantic()).owns(
        secrets,
        watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGER}")),
    )
}

/// A SyncFolder lookup over the controller's cache, as the webhook's
/// [`crate::admission_review`] wants it. Answers from memory: the webhook
/// never waits on the API server.
pub fn folder_lookup(store: Store<SyncFolder>) -> impl Fn(&str, &str) -> Option<SyncFolder> {
    move |namespace: &str, name: &str| {
        store
            .get(&ObjectRef::new(name).within(namespace))
            .map(|sync_folder| sync_folder.as_ref().clone())
    }
}

/// Runs `controller` (from [`watch`]) until `shutdown` completes. Waits,
/// with a clear log line, while the CRD is not installed instead of
/// crashing.
pub async fn run<S: Servers>(
    controller: Controller<SyncFolder>,
    client: Client,
    servers: S,
    settings: ControllerSettings,
    metrics: Metrics,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let shutdown = shutdown.shared();
    let folders: Api<SyncFolder> = Api::all(client.clone());
    if !wait_for_crd(&folders, shutdown.clone()).await {
        return;
    }
    // a new CA bundle reaches every namespace now, not at the next refresh
    let controller = match &settings.ca_bundle {
        Some(copies) => controller.reconcile_all_on(copies.bundle.changes()),
        None => controller,
    };
    let context = Arc::new(Context::new(client, servers, settings, metrics));
    controller
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, context)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => {
                    tracing::debug!(namespace = ?object.namespace, name = %object.name, "reconciled")
                }
                Err(err) => tracing::debug!(%err, "reconcile did not complete"),
            }
        })
        .await;
}

/// True once the SyncFolder CRD answers; false when shut down first.
async fn wait_for_crd(
    folders: &Api<SyncFolder>,
    shutdown: impl Future<Output = ()> + Unpin,
) -> bool {
    const RETRY: Duration = Duration::from_secs(15);
    let mut shutdown = shutdown;
    loop {
        match folders.list(&ListParams::default().limit(1)).await {
            Ok(_) => return true,
            Err(kube::Error::Api(status)) if status.code == 404 => tracing::error!(
                "the SyncFolder CRD is not installed: install the chart with its CRD, or run `syncfolder crd | kubectl apply -f -`; retrying in {}s",
                RETRY.as_secs()
            ),
            Err(err) => {
                tracing::error!(%err, "cannot list SyncFolders; retrying in {}s", RETRY.as_secs())
            }
        }
        tokio::select! {
            () = &mut shutdown => return false,
            () = tokio::time::sleep(RETRY) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::SyncFolderSpec;
    use crate::fixtures::{FakeServers, Step, context, finished, sync_folder, within};

    #[test]
    fn the_webhook_finds_folders_in_the_controllers_cache_by_namespace() {
        let mut writer = kube::runtime::reflector::store::Writer::<SyncFolder>::default();
        writer.apply_watcher_event(&watcher::Event::Apply(sync_folder(
            SyncFolderSpec::default(),
        )));
        let lookup = folder_lookup(writer.as_reader());
        let found = lookup("team-a", "photos").expect("in the cache");
        assert_eq!(found.metadata.name.as_deref(), Some("photos"));
        assert!(lookup("team-b", "photos").is_none());
        assert!(lookup("team-a", "videos").is_none());
    }

    #[tokio::test]
    async fn a_new_sync_folder_first_gets_the_finalizer() {
        let servers = FakeServers::default();
        let (context, verifier) = context(servers.clone());
        let verifier = verifier.run(vec![Step::AddFinalizer]);
        let mut folder = sync_folder(SyncFolderSpec::default());
        folder.metadata.finalizers = None;
        let action = within(reconcile(Arc::new(folder), context))
            .await
            .expect("reconcile");
        assert_eq!(action, Action::await_change());
        let received = finished(verifier).await;
        assert_eq!(received[0].body[1]["value"], serde_json::json!([FINALIZER]));
        assert!(
            servers.calls().is_empty(),
            "nothing on the server before the finalizer"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_missing_crd_is_waited_for_not_a_crash() {
        const FOLDERS: &str = "/apis/syncfolder.io/v1alpha1/syncfolders";
        let (client, api_server) = crate::fixtures::play(
            vec![
                (
                    http::Method::GET,
                    FOLDERS,
                    http::StatusCode::NOT_FOUND,
                    crate::fixtures::api_status(404, "NotFound"),
                ),
                (
                    http::Method::GET,
                    FOLDERS,
                    http::StatusCode::SERVICE_UNAVAILABLE,
                    crate::fixtures::api_status(503, "ServiceUnavailable"),
                ),
                (
                    http::Method::GET,
                    FOLDERS,
                    http::StatusCode::OK,
                    serde_json::json!({"apiVersion": "syncfolder.io/v1alpha1", "kind": "SyncFolderList", "metadata": {"resourceVersion": "5"}, "items": []}),
                ),
            ],
            "syncfolder-system",
        );
        let folders: Api<SyncFolder> = Api::all(client);
        let started = tokio::time::Instant::now();
        assert!(wait_for_crd(&folders, std::future::pending::<()>().boxed()).await);
        // two failed tries, each followed by the retry delay
        assert_eq!(started.elapsed().as_secs(), 30);
        drop(folders);
        api_server.await.expect("mock API server");
    }

    #[tokio::test(start_paused = true)]
    async fn shutting_down_while_the_crd_is_missing_returns() {
        let (service, mut handle) = tower_test::mock::pair::<
            http::Request<kube::client::Body>,
            http::Response<kube::client::Body>,
        >();
        let folders: Api<SyncFolder> = Api::all(Client::new(service, "syncfolder-system"));
        tokio::spawn(async move {
            while let Some((_, send)) = handle.next_request().await {
                send.send_response(
                    http::Response::builder()
                        .status(404)
                        .body(kube::client::Body::from(
                            serde_json::to_vec(&crate::fixtures::api_status(404, "NotFound"))
                                .expect("json"),
                        ))
                        .expect("response"),
                );
            }
        });
        let shutdown = tokio::time::sleep(std::time::Duration::from_secs(40)).boxed();
        assert!(!wait_for_crd(&folders, shutdown).await);
    }
}
