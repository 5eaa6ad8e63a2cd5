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
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde_json::json;

use crate::crd::{DeletionPolicy, SyncFolder};
use crate::metrics::Metrics;
use crate::names::{server_folder_name, token_secret_name};
use crate::secret::{MANAGED_BY_LABEL, MANAGER, SecretContents, desired_secret};
use crate::server::{ServerAdmin, ServerTarget, Servers};
use crate::status::{Observation, next_status};
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
                    FinalizerEvent::Apply(sync_folder) => apply(&sync_folder, &context).await,
                    FinalizerEvent::Cleanup(sync_folder) => cleanup(&sync_folder, &context).await,
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
type PendingEvents = Vec<Event>;

fn normal(reason: &str, action: &str, note: String) -> Event {
    Event {
        type_: EventType::Normal,
        reason: reason.to_owned(),
        note: Some(note),
        action: action.to_owned(),
        secondary: None,
    }
}

fn warning(reason: &str, action: &str, note: String) -> Event {
    Event {
        type_: EventType::Warning,
        reason: reason.to_owned(),
        note: Some(note),
        action: action.to_owned(),
        secondary: None,
    }
}

async fn apply<S: Servers>(sync_folder: &SyncFolder, context: &Context<S>) -> Result<Action> {
    let namespace = sync_folder.namespace().ok_or(Error::MissingNamespace)?;
    let name = sync_folder.name_any();
    let server_folder = server_folder_name(&namespace, &name);
    let mut events = PendingEvents::new();
    let outcome = ensure(
        sync_folder,
        &namespace,
        &server_folder,
        context,
        &mut events,
    )
    .await;

    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let status = next_status(sync_folder, &server_folder, &outcome, &now);
    let became_unready = outcome.is_err()
        && sync_folder
            .status
            .as_ref()
            .is_none_or(|previous| previous.conditions.first() != status.conditions.first());
    if sync_folder.status.as_ref() != Some(&status) {
        let api: Api<SyncFolder> = Api::namespaced(context.client.clone(), &namespace);
        api.patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": status })),
        )
        .await?;
    }
    if let (Err(err), true) = (&outcome, became_unready) {
        events.push(warning(
            crate::status::reason_for(err),
            "Reconcile",
            err.to_string(),
        ));
    }
    publish(sync_folder, context, events).await;

    match outcome {
        Ok(_) => Ok(Action::requeue(context.settings.status_refresh)),
        Err(err @ Error::Quota(_)) | Err(err @ Error::InvalidServer(_)) => {
            // not returned as an error (retrying cannot help), but counted
            context.metrics.failed(&err);
            tracing::info!(%namespace, %name, %err, "waiting for the spec to be fixed");
            Ok(Action::await_change())
        }
        Err(err) => Err(err),
    }
}

async fn ensure<S: Servers>(
    sync_folder: &SyncFolder,
    namespace: &str,
    server_folder: &str,
    context: &Context<S>,
    events: &mut PendingEvents,
) -> Result<Observation> {
    let settings = sync_folder.spec.folder_settings()?;
    let target = resolve_server(sync_folder, namespace, context).await?;
    let admin = context.servers.connect(&target)?;
    let secrets: Api<Secret> = Api::namespaced(context.client.clone(), namespace);
    let secret_name = token_secret_name(&sync_folder.name_any());
    let current = secrets
        .get_opt(&secret_name)
        .await?
        .as_ref()
        .and_then(SecretContents::read);
    let existing = admin.describe_folder(server_folder).await?;

    if sync_folder.spec.paused {
        let secret_ready = current
            .as_ref()
            .is_some_and(|contents| contents.server_folder == server_folder);
        return Ok(Observation {
            folder: existing,
            secret_ready,
            server_url: target.url,
        });
    }

    let mut new_token = None;
    let folder = match existing {
        None => {
            let created = admin.create_folder(server_folder, settings).await?;
            tracing::info!(%namespace, %server_folder, "created the server folder");
            events.push(normal(
                "FolderCreated",
                "CreateFolder",
                format!("created folder {server_folder} on {}", target.url),
            ));
            new_token = Some((created.token, created.token_id));
            created.folder
        }
        Some(info) if info.settings != settings => {
            let updated = admin.update_folder(server_folder, settings).await?;
            tracing::info!(%namespace, %server_folder, "updated the server folder's settings");
            events.push(normal(
                "SettingsUpdated",
                "UpdateFolder",
                format!("applied the spec's settings to folder {server_folder}"),
            ));
            updated
        }
        Some(info) => info,
    };

    let (token, token_id) = match (new_token, &current) {
        (Some(new_token), _) => (new_token.0, Some(new_token.1)),
        (None, Some(contents))
            if contents.server_folder == server_folder && contents.server_url == target.url =>
        {
            (contents.token.clone(), contents.token_id.clone())
        }
        (None, _) => {
            let created = admin.create_token(server_folder).await?;
            events.push(normal(
                "TokenCreated",
                "CreateToken",
                format!("created a token for folder {server_folder} in Secret {secret_name}"),
            ));
            (created.token, Some(created.token_id))
        }
    };
    let wanted = SecretContents {
        token,
        token_id,
        server_folder: server_folder.to_owned(),
        server_url: target.url.clone(),
    };
    if current.as_ref() != Some(&wanted) {
        secrets
            .patch(
                &secret_name,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(desired_secret(sync_folder, &wanted)),
            )
            .await?;
        tracing::info!(%namespace, secret = %secret_name, "wrote the folder's Secret");
    }
    Ok(Observation {
        folder: Some(folder),
        secret_ready: true,
        server_url: target.url,
    })
}

async fn cleanup<S: Servers>(sync_folder: &SyncFolder, context: &Context<S>) -> Result<Action> {
    let namespace = sync_folder.namespace().ok_or(Error::MissingNamespace)?;
    let name = sync_folder.name_any();
    let server_folder = server_folder_name(&namespace, &name);
    let target = match resolve_server(sync_folder, &namespace, context).await {
        Ok(target) => target,
        // the admin token's Secret may be deleted with the namespace before
        // us; blocking forever on it would hang the namespace's deletion
        Err(err @ (Error::AdminTokenSecret { .. } | Error::InvalidServer(_))) => {
            tracing::warn!(%namespace, %name, %err, "cannot reach the folder's server to clean up; its data stays");
            publish(
                sync_folder,
                context,
                vec![warning(
                    "CleanupSkipped",
                    "Cleanup",
                    format!("{err}; folder {server_folder} stays on the server"),
                )],
            )
            .await;
            return Ok(Action::await_change());
        }
        Err(err) => return Err(err),
    };
    let admin = context.servers.connect(&target)?;
    let event = match sync_folder.spec.deletion_policy {
        DeletionPolicy::Delete => {
            admin.delete_folder(&server_folder).await?;
            tracing::info!(%namespace, %server_folder, "deleted the server folder");
            normal(
                "FolderDeleted",
                "DeleteFolder",
                format!(
                    "deleted folder {server_folder} and its history from {}",
                    target.url
                ),
            )
        }
        DeletionPolicy::Retain => {
            let secrets: Api<Secret> = Api::namespaced(context.client.clone(), &namespace);
            let token_id = secrets
                .get_opt(&token_secret_name(&name))
                .await?
                .as_ref()
                .and_then(SecretContents::read)
                .and_then(|contents| contents.token_id);
            if let Some(token_id) = token_id {
                admin.revoke_token(&server_folder, &token_id).await?;
            }
            normal(
                "FolderRetained",
                "RetainFolder",
                format!(
                    "kept folder {server_folder} on {} (deletionPolicy Retain) and revoked its token",
                    target.url
                ),
            )
        }
    };
    publish(sync_folder, context, vec![event]).await;
    Ok(Action::await_change())
}

/// The server of `sync_folder` and the admin token for it.
async fn resolve_server<S: Servers>(
    sync_folder: &SyncFolder,
    namespace: &str,
    context: &Context<S>,
) -> Result<ServerTarget> {
    let Some(server) = &sync_folder.spec.server else {
        return Ok(ServerTarget {
            url: context.settings.default_server_url.clone(),
            admin_token: context.settings.admin_token.clone(),
        });
    };
    let url = match (&server.url, &server.service) {
        (Some(url), _) => url.clone(),
        (None, Some(service)) => format!(
            "http://{}.{}.svc:{}",
            service.name,
            service.namespace.as_deref().unwrap_or(namespace),
            service.port
        ),
        (None, None) => return Err(Error::InvalidServer("set server.url or server.service")),
    };
    let admin_token = match &server.admin_token_secret {
        None => context.settings.admin_token.clone(),
        Some(reference) => {
            let secrets: Api<Secret> = Api::namespaced(context.client.clone(), namespace);
            let missing = || Error::AdminTokenSecret {
                namespace: namespace.to_owned(),
                name: reference.name.clone(),
                key: reference.key.clone(),
            };
            let secret = secrets
                .get_opt(&reference.name)
                .await?
                .ok_or_else(missing)?;
            secret
                .data
                .as_ref()
                .and_then(|data| data.get(&reference.key))
                .and_then(|bytes| String::from_utf8(bytes.0.clone()).ok())
                .map(|token| token.trim().to_owned())
                .filter(|token| !token.is_empty())
                .ok_or_else(missing)?
        }
    };
    Ok(ServerTarget { url, admin_token })
}

/// Publishes Events; a failure is logged, never fails the reconcile.
async fn publish<S: Servers>(
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

/// Runs the controller until `shutdown` completes. Waits, with a clear log
/// line, while the CRD is not installed instead of crashing.
pub async fn run<S: Servers>(
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
    let secrets: Api<Secret> = Api::all(client.clone());
    let context = Arc::new(Context::new(client, servers, settings, metrics));
    Controller::new(folders, watcher::Config::default().any_semantic())
        .owns(
            secrets,
            watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGER}")),
        )
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, context)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => tracing::debug!(namespace = ?object.namespace, name = %object.name, "reconciled"),
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
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD as BASE64;
    use kube::api::ObjectMeta;
    use serde_json::Value;
    use syncfolder_core::protocol::{FolderMode, FolderSettings};

    use super::*;
    use crate::crd::{SyncFolderMode, SyncFolderSpec};
    use crate::fixtures::{
        FakeServers, NAMESPACE, SECRET, SERVER_FOLDER, SERVER_URL, Step, context, finished,
        folder_info, sync_folder, within,
    };
    use crate::server::ServerError;

    fn secret_text(body: &Value, key: &str) -> String {
        let encoded = body["data"][key]
            .as_str()
            .unwrap_or_else(|| panic!("no {key} in {body}"));
        String::from_utf8(BASE64.decode(encoded).expect("base64")).expect("utf-8")
    }

    /// The Secret a previous reconcile wrote for the folder.
    fn existing_secret(token: &str, token_id: &str) -> Secret {
        desired_secret(
            &sync_folder(SyncFolderSpec::default()),
            &SecretContents {
                token: token.to_owned(),
                token_id: Some(token_id.to_owned()),
                server_folder: SERVER_FOLDER.to_owned(),
                server_url: SERVER_URL.to_owned(),
            },
        )
    }

    fn ready_of(body: &Value) -> &Value {
        body["status"]["conditions"]
            .as_array()
            .expect("conditions")
            .iter()
            .find(|condition| condition["type"] == "Ready")
            .expect("a Ready condition")
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

    #[tokio::test]
    async fn a_sync_folder_becomes_a_server_folder_a_secret_and_a_ready_status() {
        let servers = FakeServers::default();
        let (context, verifier) = context(servers.clone());
        let verifier = verifier.run(vec![
            Step::GetSecret {
                name: SECRET,
                found: None,
            },
            Step::ApplySecret,
            Step::PatchStatus,
            Step::Event {
                reason: "FolderCreated",
            },
        ]);
        let spec = SyncFolderSpec {
            mode: SyncFolderMode::SendOnly,
            ignore: vec!["*.tmp".to_owned()],
            ..SyncFolderSpec::default()
        };
        let action = within(reconcile(Arc::new(sync_folder(spec)), context))
            .await
            .expect("reconcile");
        assert_eq!(action, Action::requeue(Duration::from_secs(60)));
        let received = finished(verifier).await;

        assert_eq!(
            servers.calls(),
            ["describe team-a.photos", "create team-a.photos"]
        );
        let created = servers.lock().folders[SERVER_FOLDER].clone();
        assert_eq!(created.settings.mode, FolderMode::SendOnly);
        assert_eq!(created.settings.ignore_patterns, ["*.tmp"]);
        assert_eq!(servers.lock().targets[0].url, SERVER_URL);
        assert_eq!(servers.lock().targets[0].admin_token, "sf_admin");

        let secret = &received[1].body;
        assert_eq!(secret_text(secret, "token"), "sf_token_1");
        assert_eq!(secret_text(secret, "folder"), SERVER_FOLDER);
        assert_eq!(secret_text(secret, "server"), SERVER_URL);
        assert_eq!(
            secret["metadata"]["ownerReferences"][0]["kind"],
            "SyncFolder"
        );
        assert_eq!(
            secret["metadata"]["annotations"]["syncfolder.io/token-id"],
            "t1"
        );

        let status = &received[2].body;
        assert_eq!(ready_of(status)["status"], "True");
        assert_eq!(ready_of(status)["reason"], "Ready");
        assert_eq!(status["status"]["serverFolder"], SERVER_FOLDER);
        assert_eq!(status["status"]["files"], 0);
        assert_eq!(status["status"]["observedGeneration"], 1);
    }

    #[tokio::test]
    async fn changed_settings_reach_the_server_and_the_token_is_kept() {
        let servers = FakeServers::with_folder(FolderSettings::default());
        let (context, verifier) = context(servers.clone());
        let verifier = verifier.run(vec![
            Step::GetSecret {
                name: SECRET,
                found: Some(Box::new(existing_secret("sf_kept", "t9"))),
            },
            Step::PatchStatus,
            Step::Event {
                reason: "SettingsUpdated",
            },
        ]);
        let spec: SyncFolderSpec = serde_json::from_value(serde_json::json!({
            "mode": "receive-only",
            "history": {"keepVersions": 3, "keepDays": 0},
            "quota": "1Gi"
        }))
        .expect("spec");
        within(reconcile(Arc::new(sync_folder(spec)), context))
            .await
            .expect("reconcile");
        let received = finished(verifier).await;
        assert_eq!(
            servers.calls(),
            ["describe team-a.photos", "update team-a.photos"]
        );
        let settings = servers.lock().folders[SERVER_FOLDER].settings.clone();
        assert_eq!(settings.mode, FolderMode::ReceiveOnly);
        assert_eq!(settings.retention.keep_versions, 3);
        assert_eq!(settings.retention.keep_days, 0);
        assert_eq!(settings.quota_bytes, 1 << 30);
        assert_eq!(received[1].body["status"]["files"], 3);
    }

    #[tokio::test]
    async fn a_lost_secret_gets_a_new_token() {
        let servers = FakeServers::with_folder(FolderSettings::default());
        let (context, verifier) = context(servers.clone());
        let verifier = verifier.run(vec![
            Step::GetSecret {
                name: SECRET,
                found: None,
            },
            Step::ApplySecret,
            Step::PatchStatus,
            Step::Event {
                reason: "TokenCreated",
            },
        ]);
        within(reconcile(
            Arc::new(sync_folder(SyncFolderSpec::default())),
            context,
        ))
        .await
        .expect("reconcile");
        let received = finished(verifier).await;
        assert_eq!(
            servers.calls(),
            ["describe team-a.photos", "create-token team-a.photos"]
        );
        assert_eq!(secret_text(&received[1].body, "token"), "sf_token_1");
    }

    #[tokio::test]
    async fn a_steady_folder_costs_no_writes() {
        let servers = FakeServers::with_folder(FolderSettings::default());
        let mut folder = sync_folder(SyncFolderSpec::default());
        let observation = Observation {
            folder: Some(folder_info(FolderSettings::default(), 3)),
            secret_ready: true,
            server_url: SERVER_URL.to_owned(),
        };
        let now = Time("2026-11-24T10:00:00Z".parse().expect("time"));
        folder.status = Some(next_status(&folder, SERVER_FOLDER, &Ok(observation), &now));
        let (context, verifier) = context(servers.clone());
        let verifier = verifier.run(vec![Step::GetSecret {
            name: SECRET,
            found: Some(Box::new(existing_secret("sf_kept", "t9"))),
        }]);
        within(reconcile(Arc::new(folder), context))
            .await
            .expect("reconcile");
        finished(verifier).await;
        assert_eq!(servers.calls(), ["describe team-a.photos"]);
    }

    #[tokio::test]
    async fn an_unreachable_server_is_reported_in_status_and_retried() {
        let servers = FakeServers::default();
        servers.lock().failure = Some(ServerError::Unreachable {
            url: SERVER_URL.to_owned(),
            reason: "connection refused".to_owned(),
        });
        let (context, verifier) = context(servers.clone());
        let verifier = verifier.run(vec![
            Step::GetSecret {
                name: SECRET,
                found: None,
            },
            Step::PatchStatus,
            Step::Event {
                reason: "ServerUnreachable",
            },
        ]);
        let folder = Arc::new(sync_folder(SyncFolderSpec::default()));
        let err = within(reconcile(folder.clone(), context.clone()))
            .await
            .expect_err("no server");
        assert_eq!(err.metric_label(), "server_unreachable");
        assert_eq!(
            context
                .metrics
                .reconcile_failures
                .with_label_values(&["server_unreachable"])
                .get(),
            1
        );
        assert_eq!(
            error_policy(folder, &err, context),
            Action::requeue(Duration::from_secs(30))
        );
        let received = finished(verifier).await;
        let ready = ready_of(&received[1].body);
        assert_eq!(ready["status"], "False");
        assert_eq!(ready["reason"], "ServerUnreachable");
        assert!(
            ready["message"]
                .as_str()
                .expect("message")
                .contains("connection refused")
        );
    }

    #[tokio::test]
    async fn an_invalid_quota_is_reported_without_asking_the_server() {
        let servers = FakeServers::default();
        let (context, verifier) = context(servers.clone());
        let verifier = verifier.run(vec![
            Step::PatchStatus,
            Step::Event {
                reason: "InvalidSpec",
            },
        ]);
        let spec: SyncFolderSpec =
            serde_json::from_value(serde_json::json!({"quota": "10GB"})).expect("spec");
        let action = within(reconcile(Arc::new(sync_folder(spec)), context))
            .await
            .expect("an invalid spec waits for a fix");
        assert_eq!(action, Action::await_change());
        let received = finished(verifier).await;
        let ready = ready_of(&received[0].body);
        assert_eq!(ready["reason"], "InvalidSpec");
        assert!(ready["message"].as_str().expect("message").contains("10Gi"));
        assert!(servers.calls().is_empty());
    }

    #[tokio::test]
    async fn a_paused_folder_is_described_but_not_changed() {
        let servers = FakeServers::with_folder(FolderSettings::default());
        let (context, verifier) = context(servers.clone());
        let verifier = verifier.run(vec![
            Step::GetSecret {
                name: SECRET,
                found: Some(Box::new(existing_secret("sf_kept", "t9"))),
            },
            Step::PatchStatus,
        ]);
        let spec = SyncFolderSpec {
            mode: SyncFolderMode::ReceiveOnly,
            paused: true,
            ..SyncFolderSpec::default()
        };
        within(reconcile(Arc::new(sync_folder(spec)), context))
            .await
            .expect("reconcile");
        let received = finished(verifier).await;
        assert_eq!(servers.calls(), ["describe team-a.photos"]);
        assert_eq!(ready_of(&received[1].body)["reason"], "Paused");
    }

    #[tokio::test]
    async fn a_server_given_by_service_uses_the_admin_token_from_its_secret() {
        let servers = FakeServers::default();
        let (context, verifier) = context(servers.clone());
        let admin_secret = Secret {
            metadata: ObjectMeta {
                name: Some("other-admin".to_owned()),
                namespace: Some(NAMESPACE.to_owned()),
                ..ObjectMeta::default()
            },
            data: Some(std::collections::BTreeMap::from([(
                "token".to_owned(),
                k8s_openapi::ByteString(b"sf_other_admin\n".to_vec()),
            )])),
            ..Secret::default()
        };
        let verifier = verifier.run(vec![
            Step::GetSecret {
                name: "other-admin",
                found: Some(Box::new(admin_secret)),
            },
            Step::GetSecret {
                name: SECRET,
                found: None,
            },
            Step::ApplySecret,
            Step::PatchStatus,
            Step::Event {
                reason: "FolderCreated",
            },
        ]);
        let spec: SyncFolderSpec = serde_json::from_value(serde_json::json!({
            "server": {
                "service": {"name": "syncfolder", "namespace": "storage", "port": 9000},
                "adminTokenSecret": {"name": "other-admin"}
            }
        }))
        .expect("spec");
        within(reconcile(Arc::new(sync_folder(spec)), context))
            .await
            .expect("reconcile");
        let received = finished(verifier).await;
        let target = servers.lock().targets[0].clone();
        assert_eq!(target.url, "http://syncfolder.storage.svc:9000");
        assert_eq!(target.admin_token, "sf_other_admin");
        assert_eq!(
            secret_text(&received[2].body, "server"),
            "http://syncfolder.storage.svc:9000"
        );
    }

    #[tokio::test]
    async fn deleting_with_policy_delete_removes_the_server_folder() {
        let servers = FakeServers::with_folder(FolderSettings::default());
        let (context, verifier) = context(servers.clone());
        let verifier = verifier.run(vec![
            Step::Event {
                reason: "FolderDeleted",
            },
            Step::RemoveFinalizer,
        ]);
        let mut folder = sync_folder(SyncFolderSpec {
            deletion_policy: DeletionPolicy::Delete,
            ..SyncFolderSpec::default()
        });
        folder.metadata.deletion_timestamp =
            Some(Time("2026-11-24T11:00:00Z".parse().expect("time")));
        within(reconcile(Arc::new(folder), context))
            .await
            .expect("reconcile");
        finished(verifier).await;
        assert_eq!(servers.calls(), ["delete team-a.photos"]);
        assert!(servers.lock().folders.is_empty());
    }

    #[tokio::test]
    async fn deleting_with_policy_retain_keeps_the_data_and_revokes_the_token() {
        let servers = FakeServers::with_folder(FolderSettings::default());
        let (context, verifier) = context(servers.clone());
        let verifier = verifier.run(vec![
            Step::GetSecret {
                name: SECRET,
                found: Some(Box::new(existing_secret("sf_kept", "t9"))),
            },
            Step::Event {
                reason: "FolderRetained",
            },
            Step::RemoveFinalizer,
        ]);
        let mut folder = sync_folder(SyncFolderSpec::default());
        folder.metadata.deletion_timestamp =
            Some(Time("2026-11-24T11:00:00Z".parse().expect("time")));
        within(reconcile(Arc::new(folder), context))
            .await
            .expect("reconcile");
        finished(verifier).await;
        assert_eq!(servers.calls(), ["revoke-token team-a.photos t9"]);
        assert!(servers.lock().folders.contains_key(SERVER_FOLDER));
    }

    #[tokio::test]
    async fn a_failed_cleanup_keeps_the_finalizer() {
        let servers = FakeServers::with_folder(FolderSettings::default());
        servers.lock().failure = Some(ServerError::Unreachable {
            url: SERVER_URL.to_owned(),
            reason: "timed out".to_owned(),
        });
        let (context, verifier) = context(servers.clone());
        // no RemoveFinalizer: the SyncFolder stays until cleanup succeeds
        let verifier = verifier.run(vec![]);
        let mut folder = sync_folder(SyncFolderSpec {
            deletion_policy: DeletionPolicy::Delete,
            ..SyncFolderSpec::default()
        });
        folder.metadata.deletion_timestamp =
            Some(Time("2026-11-24T11:00:00Z".parse().expect("time")));
        let err = within(reconcile(Arc::new(folder), context))
            .await
            .expect_err("server down");
        assert_eq!(err.metric_label(), "server_unreachable");
        finished(verifier).await;
    }
}
