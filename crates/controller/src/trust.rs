//! The CA bundle that clients of the sync server trust, as this replica
//! knows it, and its copy in every namespace that has SyncFolders: a
//! ConfigMap the injected sidecars mount, kept current by the reconciler
//! (kubelets then update the mounted file, and the agent reads it again).
//!
//! A CA bundle holds only public certificates, so a ConfigMap (readable by
//! the namespace's users) is the right home for it. The ConfigMap stays
//! when the namespace's last SyncFolder goes: it costs nothing and may be
//! mounted by a pod still running.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::Stream;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{ObjectMeta, Patch, PatchParams};
use kube::{Api, Client};

use crate::secret::{MANAGED_BY_LABEL, MANAGER};

/// The key of the bundle in the ConfigMap (and in `kubernetes.io/tls` Secrets).
pub const CA_BUNDLE_KEY: &str = "ca.crt";

/// The bundle as this replica last learned it; `None` until it did.
#[derive(Debug, Clone)]
pub struct TrustBundle(Arc<tokio::sync::watch::Sender<Option<String>>>);

impl Default for TrustBundle {
    fn default() -> Self {
        TrustBundle(Arc::new(tokio::sync::watch::Sender::new(None)))
    }
}

impl TrustBundle {
    pub fn get(&self) -> Option<String> {
        self.0.borrow().clone()
    }

    /// Keeps `bundle`; true when it differs from what was kept.
    pub fn set(&self, bundle: String) -> bool {
        self.0.send_if_modified(|kept| {
            let changed = kept.as_ref() != Some(&bundle);
            *kept = Some(bundle);
            changed
        })
    }

    /// An item each time the bundle changes from now on.
    pub fn changes(&self) -> impl Stream<Item = ()> + Send + 'static {
        let receiver = self.0.subscribe();
        futures::stream::unfold(receiver, |mut receiver| async move {
            receiver.changed().await.ok()?;
            Some(((), receiver))
        })
    }
}

/// The ConfigMap `name` in `namespace` holding `bundle`.
pub fn desired_config_map(name: &str, namespace: &str, bundle: &str) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            labels: Some(BTreeMap::from([(
                MANAGED_BY_LABEL.to_owned(),
                MANAGER.to_owned(),
            )])),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([(
            CA_BUNDLE_KEY.to_owned(),
            bundle.to_owned(),
        )])),
        ..ConfigMap::default()
    }
}

/// Makes the ConfigMap `name` in `namespace` hold `bundle`; true when it
/// wrote (a read first, so a steady folder costs no write).
pub async fn publish_bundle(
    client: &Client,
    namespace: &str,
    name: &str,
    bundle: &str,
) -> Result<bool, kube::Error> {
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let current = config_maps.get_opt(name).await?;
    let held = current
        .as_ref()
        .and_then(|config_map| config_map.data.as_ref())
        .and_then(|data| data.get(CA_BUNDLE_KEY));
    if held.map(String::as_str) == Some(bundle) {
        return Ok(false);
    }
    config_maps
        .patch(
            name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(desired_config_map(name, namespace, bundle)),
        )
        .await?;
    tracing::info!(%namespace, config_map = %name, "wrote the CA bundle");
    Ok(true)
}

#[cfg(test)]
mod tests {
    use http::{Method, StatusCode};
    use serde_json::json;

    use super::*;
    use crate::fixtures::{api_status, play};

    const CONFIG_MAP: &str = "/api/v1/namespaces/team-a/configmaps/syncfolder-ca";

    #[tokio::test]
    async fn the_bundle_says_when_it_changed() {
        use futures::StreamExt;
        let trust = TrustBundle::default();
        let mut changes = std::pin::pin!(trust.changes());
        assert_eq!(trust.get(), None);
        assert!(trust.set("one".to_owned()));
        assert_eq!(changes.next().await, Some(()));
        assert!(!trust.set("one".to_owned()));
        assert!(trust.clone().set("two".to_owned()));
        assert_eq!(changes.next().await, Some(()));
        assert_eq!(trust.get().as_deref(), Some("two"));
    }

    #[tokio::test]
    async fn the_bundle_is_written_when_missing_or_different_and_left_alone_when_current() {
        let current = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "syncfolder-ca", "namespace": "team-a"},
            "data": {"ca.crt": "NEW"}});
        let old = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "syncfolder-ca", "namespace": "team-a"},
            "data": {"ca.crt": "OLD"}});
        let (client, server) = play(
            vec![
                (
                    Method::GET,
                    CONFIG_MAP,
                    StatusCode::NOT_FOUND,
                    api_status(404, "NotFound"),
                ),
                (
                    Method::PATCH,
                    CONFIG_MAP,
                    StatusCode::CREATED,
                    current.clone(),
                ),
                (Method::GET, CONFIG_MAP, StatusCode::OK, current.clone()),
                (Method::GET, CONFIG_MAP, StatusCode::OK, old),
                (Method::PATCH, CONFIG_MAP, StatusCode::OK, current),
            ],
            "team-a",
        );
        assert!(
            publish_bundle(&client, "team-a", "syncfolder-ca", "NEW")
                .await
                .expect("created")
        );
        assert!(
            !publish_bundle(&client, "team-a", "syncfolder-ca", "NEW")
                .await
                .expect("current")
        );
        assert!(
            publish_bundle(&client, "team-a", "syncfolder-ca", "NEW")
                .await
                .expect("updated")
        );
        // the mock answers until its client is gone
        drop(client);
        let bodies = server.await.expect("mock API server");
        assert_eq!(bodies[1]["data"]["ca.crt"], "NEW");
        assert_eq!(bodies[1]["metadata"]["labels"][MANAGED_BY_LABEL], MANAGER);
    }
}
