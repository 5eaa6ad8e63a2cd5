//! Reconciling a live SyncFolder: the server folder with the spec's
//! settings, the Secret with its token, then the status and Events (see
//! `controller.rs` for the whole sequence).

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use serde_json::json;

use crate::controller::{Context, PendingEvents, normal, publish, warning};
use crate::crd::SyncFolder;
use crate::names::{server_folder_name, token_secret_name};
use crate::secret::{MANAGER, SecretContents, desired_secret};
use crate::server::{ServerAdmin, ServerTarget, Servers};
use crate::status::{Observation, next_status};
use crate::{Error, Result};

/// Reconciles a live SyncFolder and writes its status.
pub(crate) async fn apply<S: Servers>(
    sync_folder: &SyncFolder,
    context: &Context<S>,
) -> Result<Action> {
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

/// Makes the server folder and the Secret what the spec asks for.
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

    // the Secret's token is kept while the server still accepts it
    let current_token_works = match (&new_token, &current) {
        (None, Some(contents))
            if contents.server_folder == server_folder && contents.server_url == target.url =>
        {
            let valid = admin.token_is_valid(server_folder, &contents.token).await?;
            if !valid {
                tracing::warn!(%namespace, secret = %secret_name, "the server refuses the Secret's token; replacing it");
                events.push(warning(
                    "TokenRefused",
                    "CheckToken",
                    format!("the server no longer accepts the token in Secret {secret_name}; a new one replaces it"),
                ));
            }
            valid
        }
        _ => false,
    };
    let (token, token_id) = match (new_token, &current) {
        (Some(new_token), _) => (new_token.0, Some(new_token.1)),
        (None, Some(contents)) if current_token_works => {
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
    // the CA bundle the sidecars trust the server with
    if let Some(copies) = &context.settings.ca_bundle
        && let Some(bundle) = copies.bundle.get()
    {
        crate::trust::publish_bundle(&context.client, namespace, &copies.config_map, &bundle)
            .await?;
    }
    Ok(Observation {
        folder: Some(folder),
        secret_ready: true,
        server_url: target.url,
    })
}

/// The server of `sync_folder` and the admin token for it.
pub(crate) async fn resolve_server<S: Servers>(
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use kube::api::ObjectMeta;
    use syncfolder_core::protocol::{FolderMode, FolderSettings};

    use super::*;
    use crate::controller::{error_policy, reconcile};
    use crate::crd::{SyncFolderMode, SyncFolderSpec};
    use crate::fixtures::{
        FakeServers, NAMESPACE, SECRET, SERVER_FOLDER, SERVER_URL, Step, context, existing_secret,
        finished, folder_info, ready_of, secret_text, sync_folder, within,
    };
    use crate::server::ServerError;

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
    async fn a_token_the_server_refuses_is_replaced_in_the_secret() {
        let servers = FakeServers::with_folder(FolderSettings::default());
        servers.lock().revoked_tokens.push("sf_kept".to_owned());
        let mut folder = sync_folder(SyncFolderSpec::default());
        let observation = Observation {
            folder: Some(folder_info(FolderSettings::default(), 3)),
            secret_ready: true,
            server_url: SERVER_URL.to_owned(),
        };
        let now = Time("2026-11-24T10:00:00Z".parse().expect("time"));
        folder.status = Some(next_status(&folder, SERVER_FOLDER, &Ok(observation), &now));
        let (context, verifier) = context(servers.clone());
        let verifier = verifier.run(vec![
            Step::GetSecret {
                name: SECRET,
                found: Some(Box::new(existing_secret("sf_kept", "t9"))),
            },
            Step::ApplySecret,
            Step::Event {
                reason: "TokenRefused",
            },
            Step::Event {
                reason: "TokenCreated",
            },
        ]);
        within(reconcile(Arc::new(folder), context))
            .await
            .expect("reconcile");
        let received = finished(verifier).await;
        assert_eq!(secret_text(&received[1].body, "token"), "sf_token_1");
        assert_eq!(
            servers.calls(),
            ["describe team-a.photos", "create-token team-a.photos"]
        );
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
}
