//! The webhook's serving certificate, managed without a human: a private CA
//! and a certificate for the webhook Service, kept in a `kubernetes.io/tls`
//! Secret in the controller's namespace (so every replica serves the same
//! one), and the CA written into the MutatingWebhookConfiguration's
//! `caBundle` (and written again whenever something, such as `helm upgrade`,
//! resets it).
//!
//! Any replica may create or renew the Secret; the API server's
//! create-conflict and resourceVersion checks make one of them win and the
//! others read the winner's certificate.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine;
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use serde_json::json;

use crate::secret::{MANAGED_BY_LABEL, MANAGER};

/// How long a generated certificate is valid.
pub const VALIDITY: Duration = Duration::from_secs(5 * 365 * 24 * 3600);
/// A certificate with less than this left is replaced.
pub const RENEW_BEFORE: Duration = Duration::from_secs(365 * 24 * 3600);

const NOT_AFTER_ANNOTATION: &str = "syncfolder.io/not-after";
const DNS_NAMES_ANNOTATION: &str = "syncfolder.io/dns-names";

/// Why a certificate could not be made or kept.
#[derive(Debug, thiserror::Error)]
pub enum CertificateError {
    #[error("generating the webhook certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("Kubernetes API request failed: {0}")]
    Kube(#[from] kube::Error),
    #[error("reading the webhook certificate: {0}")]
    Pem(String),
}

/// A CA and the serving certificate it signed, in PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookCertificate {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
    pub not_after: Timestamp,
    pub dns_names: Vec<String>,
}

impl std::fmt::Debug for WebhookCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookCertificate")
            .field("not_after", &self.not_after)
            .field("dns_names", &self.dns_names)
            .finish_non_exhaustive()
    }
}

/// The names the API server may use for the webhook Service.
pub fn service_dns_names(service: &str, namespace: &str) -> Vec<String> {
    vec![
        service.to_owned(),
        format!("{service}.{namespace}"),
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
    ]
}

fn offset_time(timestamp: Timestamp) -> Result<time::OffsetDateTime, CertificateError> {
    time::OffsetDateTime::from_unix_timestamp(timestamp.as_second())
        .map_err(|err| CertificateError::Pem(err.to_string()))
}

/// A new CA and serving certificate for `dns_names`, valid from `now` for
/// [`VALIDITY`].
pub fn generate(
    dns_names: &[String],
    now: Timestamp,
) -> Result<WebhookCertificate, CertificateError> {
    let not_before = now - k8s_openapi::jiff::SignedDuration::from_secs(60);
    let not_after = now + k8s_openapi::jiff::SignedDuration::from_secs(VALIDITY.as_secs() as i64);

    let mut ca_params = CertificateParams::default();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca_params.distinguished_name = DistinguishedName::new();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "syncfolder webhook CA");
    ca_params.not_before = offset_time(not_before)?;
    ca_params.not_after = offset_time(not_after)?;
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let mut params = CertificateParams::new(dns_names.to_vec())?;
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(
        DnType::CommonName,
        dns_names.first().cloned().unwrap_or_default(),
    );
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.not_before = offset_time(not_before)?;
    params.not_after = offset_time(not_after)?;
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    Ok(WebhookCertificate {
        ca_pem: ca_cert.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        // the Secret's annotation keeps seconds
        not_after: Timestamp::from_second(not_after.as_second()).unwrap_or(not_after),
        dns_names: dns_names.to_vec(),
    })
}

impl WebhookCertificate {
    /// Still valid for [`RENEW_BEFORE`], and issued for exactly `dns_names`.
    pub fn usable_for(&self, dns_names: &[String], now: Timestamp) -> bool {
        let renew_at = self.not_after
            - k8s_openapi::jiff::SignedDuration::from_secs(RENEW_BEFORE.as_secs() as i64);
        self.dns_names == dns_names && now < renew_at
    }

    /// The certificate as the Secret holds it.
    pub fn to_secret(&self, name: &str, namespace: &str) -> Secret {
        let bytes = |text: &str| ByteString(text.as_bytes().to_vec());
        Secret {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                namespace: Some(namespace.to_owned()),
                labels: Some(BTreeMap::from([(
                    MANAGED_BY_LABEL.to_owned(),
                    MANAGER.to_owned(),
                )])),
                annotations: Some(BTreeMap::from([
                    (NOT_AFTER_ANNOTATION.to_owned(), self.not_after.to_string()),
                    (DNS_NAMES_ANNOTATION.to_owned(), self.dns_names.join(",")),
                ])),
                ..ObjectMeta::default()
            },
            type_: Some("kubernetes.io/tls".to_owned()),
            data: Some(BTreeMap::from([
                ("ca.crt".to_owned(), bytes(&self.ca_pem)),
                ("tls.crt".to_owned(), bytes(&self.cert_pem)),
                ("tls.key".to_owned(), bytes(&self.key_pem)),
            ])),
            ..Secret::default()
        }
    }

    /// The certificate a Secret holds; `None` when anything is missing, so
    /// the caller replaces it.
    pub fn from_secret(secret: &Secret) -> Option<WebhookCertificate> {
        let data = secret.data.as_ref()?;
        let text = |key: &str| {
            data.get(key)
                .and_then(|value| String::from_utf8(value.0.clone()).ok())
        };
        let annotations = secret.metadata.annotations.as_ref()?;
        Some(WebhookCertificate {
            ca_pem: text("ca.crt")?,
            cert_pem: text("tls.crt")?,
            key_pem: text("tls.key")?,
            not_after: annotations.get(NOT_AFTER_ANNOTATION)?.parse().ok()?,
            dns_names: annotations
                .get(DNS_NAMES_ANNOTATION)?
                .split(',')
                .map(str::to_owned)
                .collect(),
        })
    }
}

/// Keeps the webhook's certificate Secret and the webhook configuration's
/// CA bundle current.
#[derive(Clone)]
pub struct CertificateManager {
    secrets: Api<Secret>,
    configurations: Api<MutatingWebhookConfiguration>,
    secret_name: String,
    namespace: String,
    configuration_name: String,
    dns_names: Vec<String>,
}

impl CertificateManager {
    pub fn new(
        client: Client,
        namespace: &str,
        secret_name: &str,
        service: &str,
        configuration_name: &str,
    ) -> Self {
        CertificateManager {
            secrets: Api::namespaced(client.clone(), namespace),
            configurations: Api::all(client),
            secret_name: secret_name.to_owned(),
            namespace: namespace.to_owned(),
            configuration_name: configuration_name.to_owned(),
            dns_names: service_dns_names(service, namespace),
        }
    }

    /// The certificate to serve: the Secret's when usable, else a new one
    /// written to the Secret (or another replica's, if it wrote first).
    pub async fn ensure_certificate(
        &self,
        now: Timestamp,
    ) -> Result<WebhookCertificate, CertificateError> {
        let existing = self.secrets.get_opt(&self.secret_name).await?;
        if let Some(certificate) = existing.as_ref().and_then(WebhookCertificate::from_secret)
            && certificate.usable_for(&self.dns_names, now)
        {
            return Ok(certificate);
        }
        let certificate = generate(&self.dns_names, now)?;
        let mut secret = certificate.to_secret(&self.secret_name, &self.namespace);
        let written = match existing {
            None => self.secrets.create(&PostParams::default(), &secret).await,
            Some(existing) => {
                // a merge patch carrying the resourceVersion read fails with
                // 409 when another replica renewed it meanwhile
                secret.metadata.resource_version = existing.metadata.resource_version;
                self.secrets
                    .patch(
                        &self.secret_name,
                        &PatchParams::default(),
                        &Patch::Merge(&secret),
                    )
                    .await
            }
        };
        match written {
            Ok(_) => {
                tracing::info!(secret = %self.secret_name, not_after = %certificate.not_after, "wrote a new webhook certificate");
                Ok(certificate)
            }
            Err(kube::Error::Api(status)) if status.code == 409 => {
                // another replica wrote one first: serve that
                let secret = self.secrets.get(&self.secret_name).await?;
                WebhookCertificate::from_secret(&secret).ok_or_else(|| {
                    CertificateError::Pem(format!("Secret {} is incomplete", self.secret_name))
                })
            }
            Err(err) => Err(err.into()),
        }
    }

    /// Writes `ca_pem` into every webhook of the configuration that lacks
    /// it. Returns false, with a warning, when the configuration does not
    /// exist (the chart's webhook is turned off).
    pub async fn ensure_ca_bundle(&self, ca_pem: &str) -> Result<bool, CertificateError> {
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
            .map_err(|err| CertificateError::Pem(err.to_string()))?;
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
    use rustls_pki_types::pem::PemObject;
    use serde_json::Value;

    use super::*;
    use crate::fixtures::{Exchange, api_status, play};

    const SECRET: &str = "/api/v1/namespaces/syncfolder-system/secrets/syncfolder-webhook-tls";
    const SECRETS: &str = "/api/v1/namespaces/syncfolder-system/secrets";
    const CONFIGURATION: &str = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/syncfolder-sidecar-injector";

    fn now() -> Timestamp {
        "2026-11-24T10:00:00Z".parse().expect("time")
    }

    fn names() -> Vec<String> {
        service_dns_names("syncfolder-webhook", "syncfolder-system")
    }

    async fn scenario(
        exchanges: Vec<Exchange>,
        run: impl AsyncFnOnce(CertificateManager),
    ) -> Vec<Value> {
        let (client, server) = play(exchanges, "syncfolder-system");
        run(CertificateManager::new(
            client,
            "syncfolder-system",
            "syncfolder-webhook-tls",
            "syncfolder-webhook",
            "syncfolder-sidecar-injector",
        ))
        .await;
        server.await.expect("mock API server")
    }

    fn secret_json(certificate: &WebhookCertificate) -> Value {
        let mut secret = serde_json::to_value(
            certificate.to_secret("syncfolder-webhook-tls", "syncfolder-system"),
        )
        .expect("json");
        secret["apiVersion"] = json!("v1");
        secret["kind"] = json!("Secret");
        secret["metadata"]["resourceVersion"] = json!("41");
        secret
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

    #[test]
    fn the_serving_certificate_chains_to_the_ca_for_the_service_names() {
        let certificate = generate(&names(), Timestamp::now()).expect("certificate");
        let ca = rustls_pki_types::CertificateDer::from_pem_slice(certificate.ca_pem.as_bytes())
            .expect("CA PEM");
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca).expect("a CA certificate");
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            std::sync::Arc::new(roots),
            std::sync::Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .expect("verifier");
        let leaf =
            rustls_pki_types::CertificateDer::from_pem_slice(certificate.cert_pem.as_bytes())
                .expect("PEM");
        for name in names() {
            let server_name = rustls_pki_types::ServerName::try_from(name.clone()).expect("name");
            rustls::client::danger::ServerCertVerifier::verify_server_cert(
                verifier.as_ref(),
                &leaf,
                &[],
                &server_name,
                &[],
                rustls_pki_types::UnixTime::now(),
            )
            .unwrap_or_else(|err| panic!("{name}: {err}"));
        }
        let other = rustls_pki_types::ServerName::try_from("evil.example").expect("name");
        assert!(
            rustls::client::danger::ServerCertVerifier::verify_server_cert(
                verifier.as_ref(),
                &leaf,
                &[],
                &other,
                &[],
                rustls_pki_types::UnixTime::now()
            )
            .is_err()
        );
    }

    #[test]
    fn a_certificate_is_renewed_a_year_before_it_expires_or_when_the_names_change() {
        let certificate = generate(&names(), now()).expect("certificate");
        assert!(certificate.usable_for(&names(), now()));
        let later = now() + k8s_openapi::jiff::SignedDuration::from_hours(24 * 365 * 4 + 24);
        assert!(!certificate.usable_for(&names(), later));
        assert!(!certificate.usable_for(&service_dns_names("renamed", "syncfolder-system"), now()));
        let read_back =
            WebhookCertificate::from_secret(&certificate.to_secret("s", "n")).expect("complete");
        assert_eq!(read_back, certificate);
    }

    #[tokio::test]
    async fn the_first_replica_creates_the_certificate_secret() {
        let bodies = scenario(
            vec![
                (Method::GET, SECRET, StatusCode::NOT_FOUND, api_status(404, "NotFound")),
                (Method::POST, SECRETS, StatusCode::CREATED, json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "syncfolder-webhook-tls"}})),
            ],
            async |manager| {
                let certificate = manager.ensure_certificate(now()).await.expect("certificate");
                assert_eq!(certificate.dns_names, names());
            },
        )
        .await;
        assert_eq!(bodies[1]["type"], "kubernetes.io/tls");
        assert!(bodies[1]["data"]["tls.key"].is_string());
    }

    #[tokio::test]
    async fn a_replica_that_loses_the_race_serves_the_winners_certificate() {
        let winner = generate(&names(), now()).expect("certificate");
        let winner_json = secret_json(&winner);
        scenario(
            vec![
                (
                    Method::GET,
                    SECRET,
                    StatusCode::NOT_FOUND,
                    api_status(404, "NotFound"),
                ),
                (
                    Method::POST,
                    SECRETS,
                    StatusCode::CONFLICT,
                    api_status(409, "AlreadyExists"),
                ),
                (Method::GET, SECRET, StatusCode::OK, winner_json),
            ],
            async |manager| {
                let certificate = manager
                    .ensure_certificate(now())
                    .await
                    .expect("certificate");
                assert_eq!(certificate, winner);
            },
        )
        .await;
    }

    #[tokio::test]
    async fn a_usable_certificate_is_kept_and_an_old_one_replaced() {
        let current = generate(&names(), now()).expect("certificate");
        let current_json = secret_json(&current);
        let much_later = now() + k8s_openapi::jiff::SignedDuration::from_hours(24 * 365 * 4 + 24);
        let bodies = scenario(
            vec![
                (Method::GET, SECRET, StatusCode::OK, current_json.clone()),
                (Method::GET, SECRET, StatusCode::OK, current_json.clone()),
                (Method::PATCH, SECRET, StatusCode::OK, current_json),
            ],
            async |manager| {
                assert_eq!(
                    manager.ensure_certificate(now()).await.expect("kept"),
                    current
                );
                let renewed = manager
                    .ensure_certificate(much_later)
                    .await
                    .expect("renewed");
                assert_ne!(renewed.ca_pem, current.ca_pem);
            },
        )
        .await;
        assert_eq!(bodies[2]["metadata"]["resourceVersion"], "41");
    }

    #[tokio::test]
    async fn the_ca_bundle_is_written_when_missing_and_left_alone_when_current() {
        let certificate = generate(&names(), now()).expect("certificate");
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
                    configuration(Some(&certificate.ca_pem)),
                ),
                (
                    Method::GET,
                    CONFIGURATION,
                    StatusCode::OK,
                    configuration(Some(&certificate.ca_pem)),
                ),
                (
                    Method::GET,
                    CONFIGURATION,
                    StatusCode::NOT_FOUND,
                    api_status(404, "NotFound"),
                ),
            ],
            async |manager| {
                assert!(
                    manager
                        .ensure_ca_bundle(&certificate.ca_pem)
                        .await
                        .expect("patched")
                );
                assert!(
                    manager
                        .ensure_ca_bundle(&certificate.ca_pem)
                        .await
                        .expect("current")
                );
                assert!(
                    !manager
                        .ensure_ca_bundle(&certificate.ca_pem)
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
        assert_eq!(written, certificate.ca_pem.as_bytes());
    }
}
