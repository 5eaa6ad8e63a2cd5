//! The webhook configuration's `caBundle`: the controller's CA bundle
//! (`pki.rs`) written into every webhook of the MutatingWebhookConfiguration
//! (and written again whenever something, such as `helm upgrade`, resets
//! it), so the API server trusts the webhook's certificate through a CA
//! renewal.

use base64::Engine;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use serde_json::json;

/// Why the bundle could not be written.
#[derive(Debug, thiserror::Error)]
pub enum CaBundleError {
    #[error("Kubernetes API request failed: {0}")]
    Kube(#[from] kube::Error),
    #[error("building the JSON patch: {0}")]
    Patch(String),
}

/// The names a Service in `namespace` is reached by, for its certificate.
pub fn service_dns_names(service: &str, namespace: &str) -> Vec<String> {
    vec![
        service.to_owned(),
        format!("{service}.{namespace}"),
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
    ]
}

/// Keeps the webhook configuration's CA bundle current.
#[derive(Clone)]
pub struct CaBundleWriter {
    configurations: Api<MutatingWebhookConfiguration>,
    configuration_name: String,
}

impl CaBundleWriter {
    pub fn new(client: Client, configuration_name: &str) -> Self {
        CaBundleWriter {
            configurations: Api::all(client),
            configuration_name: configuration_name.to_owned(),
        }
    }

    /// Writes `ca_pem` into every webhook of the configuration that lacks
    /// it. Returns false, with a warning, when the configuration does not
    /// exist (the chart's webhook is turned off).
    pub async fn ensure_ca_bundle(&self, ca_pem: &str) -> Result<bool, CaBundleError> {
        let Some(configuration) = self
            .configurations
            .get_opt(&self.configuration_name)
            .await?
        else {
            tracing::warn!(
                configuration = %self.configuration_name,
                "the MutatingWebhookConfiguration does not exist: no pod is sent to the webhook; install the chart with webhook.enabled=true"
            );
            return Ok(false);
        };
        let encoded = base64::engine::general_purpose::STANDARD.encode(ca_pem);
        let mut operations = Vec::new();
        for (webhook_idx, webhook) in configuration.webhooks.iter().flatten().enumerate() {
            if webhook
                .client_config
                .ca_bundle
                .as_ref()
                .map(|bundle| bundle.0.as_slice())
                == Some(ca_pem.as_bytes())
            {
                continue;
            }
            operations.push(json!({"op": "test", "path": format!("/webhooks/{webhook_idx}/name"), "value": webhook.name}));
            operations.push(json!({"op": "add", "path": format!("/webhooks/{webhook_idx}/clientConfig/caBundle"), "value": encoded}));
        }
        if operations.is_empty() {
            return Ok(true);
        }
        let patch: json_patch::Patch = serde_json::from_value(serde_json::Value::Array(operations))
            .map_err(|err| CaBundleError::Patch(err.to_string()))?;
        self.configurations
            .patch(
                &self.configuration_name,
                &PatchParams::default(),
                &Patch::<()>::Json(patch),
            )
            .await?;
        tracing::info!(configuration = %self.configuration_name, "wrote the webhook CA into the webhook configuration");
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use http::{Method, StatusCode};
    use serde_json::Value;

    use super::*;
    use crate::fixtures::{Exchange, api_status, play};

    const CONFIGURATION: &str = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/syncfolder-sidecar-injector";
    const CA_PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

    async fn scenario(
        exchanges: Vec<Exchange>,
        run: impl AsyncFnOnce(CaBundleWriter),
    ) -> Vec<Value> {
        let (client, server) = play(exchanges, "syncfolder-system");
        run(CaBundleWriter::new(client, "syncfolder-sidecar-injector")).await;
        server.await.expect("mock API server")
    }

    fn configuration(ca_bundle: Option<&str>) -> Value {
        let mut client_config = json!({"service": {"name": "syncfolder-webhook", "namespace": "syncfolder-system", "path": "/mutate", "port": 443}});
        if let Some(bundle) = ca_bundle {
            client_config["caBundle"] =
                json!(base64::engine::general_purpose::STANDARD.encode(bundle));
        }
        json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": "syncfolder-sidecar-injector"},
            "webhooks": [{
                "name": "sidecar.syncfolder.io",
                "clientConfig": client_config,
                "admissionReviewVersions": ["v1"],
                "sideEffects": "None",
            }]
        })
    }

    #[tokio::test]
    async fn the_ca_bundle_is_written_when_missing_and_left_alone_when_current() {
        let bodies = scenario(
            vec![
                (
                    Method::GET,
                    CONFIGURATION,
                    StatusCode::OK,
                    configuration(None),
                ),
                (
                    Method::PATCH,
                    CONFIGURATION,
                    StatusCode::OK,
                    configuration(Some(CA_PEM)),
                ),
                (
                    Method::GET,
                    CONFIGURATION,
                    StatusCode::OK,
                    configuration(Some(CA_PEM)),
                ),
                (
                    Method::GET,
                    CONFIGURATION,
                    StatusCode::NOT_FOUND,
                    api_status(404, "NotFound"),
                ),
            ],
            async |manager| {
                assert!(manager.ensure_ca_bundle(CA_PEM).await.expect("patched"));
                assert!(manager.ensure_ca_bundle(CA_PEM).await.expect("current"));
                assert!(
                    !manager
                        .ensure_ca_bundle(CA_PEM)
                        .await
                        .expect("no configuration")
                );
            },
        )
        .await;
        let patch = bodies[1].as_array().expect("a JSON patch");
        assert_eq!(
            patch[0],
            json!({"op": "test", "path": "/webhooks/0/name", "value": "sidecar.syncfolder.io"})
        );
        assert_eq!(patch[1]["path"], "/webhooks/0/clientConfig/caBundle");
        let written = base64::engine::general_purpose::STANDARD
            .decode(patch[1]["value"].as_str().expect("base64"))
            .expect("base64");
        assert_eq!(written, CA_PEM.as_bytes());
    }
}
