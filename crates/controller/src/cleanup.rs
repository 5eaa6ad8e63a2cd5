//! Cleaning up before a SyncFolder goes: `deletionPolicy: Delete` removes
//! the server folder with its data, `Retain` keeps it and revokes the
//! Secret's token. The Secret goes with the SyncFolder (owner reference).

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::Action;

use crate::apply::resolve_server;
use crate::controller::{Context, normal, publish, warning};
use crate::crd::{DeletionPolicy, SyncFolder};
use crate::names::{server_folder_name, token_secret_name};
use crate::secret::SecretContents;
use crate::server::{ServerAdmin, Servers};
use crate::{Error, Result};

/// Honours `deletionPolicy` for a SyncFolder being deleted.
pub(crate) async fn cleanup<S: Servers>(
    sync_folder: &SyncFolder,
    context: &Context<S>,
) -> Result<Action> {
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use syncfolder_core::protocol::FolderSettings;

    use super::*;
    use crate::controller::reconcile;
    use crate::crd::SyncFolderSpec;
    use crate::fixtures::{
        FakeServers, SECRET, SERVER_FOLDER, SERVER_URL, Step, context, existing_secret, finished,
        sync_folder, within,
    };
    use crate::server::ServerError;

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
