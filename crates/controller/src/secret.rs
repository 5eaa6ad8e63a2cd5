//! The folder's Secret, `syncfolder-<name>-token`: what the sidecar reads
//! (token, server folder name, server URL), owned by the SyncFolder so
//! Kubernetes deletes it with it.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::Resource;
use kube::api::ObjectMeta;

use crate::crd::SyncFolder;
use crate::names::{SECRET_KEY_FOLDER, SECRET_KEY_SERVER, SECRET_KEY_TOKEN, token_secret_name};

/// Label on every object the controller manages.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Its value.
pub const MANAGER: &str = "syncfolder-controller";
/// Label naming the SyncFolder a Secret belongs to.
pub const FOLDER_LABEL: &str = "syncfolder.io/folder";
/// Annotation with the server's id of the Secret's token, so deleting a
/// retained folder can revoke it.
pub const TOKEN_ID_ANNOTATION: &str = "syncfolder.io/token-id";

/// What the Secret holds.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretContents {
    pub token: String,
    pub token_id: Option<String>,
    pub server_folder: String,
    pub server_url: String,
}

impl std::fmt::Debug for SecretContents {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("SecretContents")
            .field("token", &"<redacted>")
            .field("token_id", &self.token_id)
            .field("server_folder", &self.server_folder)
            .field("server_url", &self.server_url)
            .finish()
    }
}

impl SecretContents {
    /// What an existing Secret holds; `None` when it has no usable token.
    pub fn read(secret: &Secret) -> Option<SecretContents> {
        let data = secret.data.as_ref()?;
        let text = |key: &str| {
            data.get(key)
                .and_then(|bytes| String::from_utf8(bytes.0.clone()).ok())
        };
        let token = text(SECRET_KEY_TOKEN).filter(|token| !token.is_empty())?;
        Some(SecretContents {
            token,
            token_id: secret
                .metadata
                .annotations
                .as_ref()
                .and_then(|annotations| annotations.get(TOKEN_ID_ANNOTATION))
                .cloned(),
            server_folder: text(SECRET_KEY_FOLDER).unwrap_or_default(),
            server_url: text(SECRET_KEY_SERVER).unwrap_or_default(),
        })
    }
}

/// The Secret for `folder` holding `contents`, owned by the folder.
pub fn desired_secret(folder: &SyncFolder, contents: &SecretContents) -> Secret {
    let name = folder.metadata.name.clone().unwrap_or_default();
    let data = BTreeMap::from([
        (
            SECRET_KEY_TOKEN.to_owned(),
            ByteString(contents.token.clone().into_bytes()),
        ),
        (
            SECRET_KEY_FOLDER.to_owned(),
            ByteString(contents.server_folder.clone().into_bytes()),
        ),
        (
            SECRET_KEY_SERVER.to_owned(),
            ByteString(contents.server_url.clone().into_bytes()),
        ),
    ]);
    Secret {
        metadata: ObjectMeta {
            name: Some(token_secret_name(&name)),
            namespace: folder.metadata.namespace.clone(),
            labels: Some(BTreeMap::from([
                (MANAGED_BY_LABEL.to_owned(), MANAGER.to_owned()),
                (FOLDER_LABEL.to_owned(), name),
            ])),
            annotations: contents.token_id.as_ref().map(|token_id| {
                BTreeMap::from([(TOKEN_ID_ANNOTATION.to_owned(), token_id.clone())])
            }),
            owner_references: folder.controller_owner_ref(&()).map(|owner| vec![owner]),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".to_owned()),
        data: Some(data),
        ..Secret::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::SyncFolderSpec;

    fn folder() -> SyncFolder {
        let mut folder = SyncFolder::new("photos", SyncFolderSpec::default());
        folder.metadata.namespace = Some("team-a".to_owned());
        folder.metadata.uid = Some("0f4c2a1e-0000-4000-8000-000000000001".to_owned());
        folder
    }

    fn contents() -> SecretContents {
        SecretContents {
            token: "sf_secret".to_owned(),
            token_id: Some("t1".to_owned()),
            server_folder: "team-a.photos".to_owned(),
            server_url: "http://syncfolder.syncfolder.svc:8080".to_owned(),
        }
    }

    #[test]
    fn the_secret_holds_what_the_sidecar_reads_and_is_owned_by_the_folder() {
        let secret = desired_secret(&folder(), &contents());
        assert_eq!(
            secret.metadata.name.as_deref(),
            Some("syncfolder-photos-token")
        );
        assert_eq!(secret.metadata.namespace.as_deref(), Some("team-a"));
        let data = secret.data.as_ref().expect("data");
        assert_eq!(data["token"].0, b"sf_secret");
        assert_eq!(data["folder"].0, b"team-a.photos");
        assert_eq!(data["server"].0, b"http://syncfolder.syncfolder.svc:8080");
        let owner = &secret.metadata.owner_references.as_ref().expect("owner")[0];
        assert_eq!(owner.kind, "SyncFolder");
        assert_eq!(owner.name, "photos");
        assert_eq!(owner.controller, Some(true));
        assert_eq!(SecretContents::read(&secret), Some(contents()));
    }

    #[test]
    fn a_secret_without_a_token_has_no_contents() {
        let mut secret = desired_secret(&folder(), &contents());
        secret
            .data
            .as_mut()
            .expect("data")
            .insert("token".to_owned(), ByteString(Vec::new()));
        assert_eq!(SecretContents::read(&secret), None);
        assert_eq!(SecretContents::read(&Secret::default()), None);
    }

    #[test]
    fn the_token_never_shows_in_debug_output() {
        assert!(!format!("{:?}", contents()).contains("sf_secret"));
    }
}
