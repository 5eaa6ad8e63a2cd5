//! The controller's CA and serving certificates in Secrets of its own
//! namespace: the CA's Secret (the signing CA's key never leaves it) and
//! one `kubernetes.io/tls` Secret per served name set (the webhook's, the
//! sync server's), each with `ca.crt` holding the whole trust bundle.
//!
//! Every replica runs [`Pki::ensure`]; a write carries the resourceVersion
//! it read, so when two replicas race one wins and the other reads the
//! winner's at its next pass. The renewal's rules are in `ca.rs`.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client};

use crate::ca::{
    CaError, CaState, CaStep, Lifetimes, ServingCertificate, ServingStatus, SigningCa, issue,
    needs_issuing,
};
use crate::secret::{MANAGED_BY_LABEL, MANAGER};
use crate::trust::CA_BUNDLE_KEY;

const ISSUER_ANNOTATION: &str = "syncfolder.io/issuer";
const ISSUED_AT_ANNOTATION: &str = "syncfolder.io/issued-at";
const NOT_AFTER_ANNOTATION: &str = "syncfolder.io/not-after";
const DNS_NAMES_ANNOTATION: &str = "syncfolder.io/dns-names";

/// Why the certificates could not be kept.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error(transparent)]
    Ca(#[from] CaError),
    #[error("Kubernetes API request failed: {0}")]
    Kube(#[from] kube::Error),
    #[error("Secret {0} changed while this replica wrote it; reading it again at the next pass")]
    Raced(String),
}

/// A serving certificate to keep: its Secret and the names it is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServingSecret {
    pub secret: String,
    pub dns_names: Vec<String>,
}

/// What the controller keeps, and how long things live.
#[derive(Debug, Clone)]
pub struct PkiSettings {
    pub namespace: String,
    /// The CA's Secret.
    pub ca_secret: String,
    pub serving: Vec<ServingSecret>,
    pub lifetimes: Lifetimes,
}

/// What a pass left in place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    /// Every trusted CA, PEM: what clients mount as `ca.crt`.
    pub bundle: String,
    /// The serving certificates, in the order of [`PkiSettings::serving`].
    pub serving: Vec<ServingCertificate>,
}

/// Keeps the CA's Secret and the serving certificates' Secrets current.
#[derive(Clone)]
pub struct Pki {
    secrets: Api<Secret>,
    settings: PkiSettings,
}

impl Pki {
    pub fn new(client: Client, settings: PkiSettings) -> Pki {
        Pki {
            secrets: Api::namespaced(client, &settings.namespace),
            settings,
        }
    }

    /// One pass: the CA takes its next step, then every serving certificate
    /// is issued again if it must be, or given the current bundle.
    pub async fn ensure(&self, now: Timestamp) -> Result<Issued, PkiError> {
        let lifetimes = &self.settings.lifetimes;
        let ca_secret = self.secrets.get_opt(&self.settings.ca_secret).await?;
        let mut serving_secrets = Vec::new();
        for serving in &self.settings.serving {
            serving_secrets.push(self.secrets.get_opt(&serving.secret).await?);
        }
        let existing: Vec<Option<ServingCertificate>> = serving_secrets
            .iter()
            .map(|secret| secret.as_ref().and_then(serving_from_secret))
            .collect();

        let ca_state = ca_secret.as_ref().and_then(ca_from_secret);
        let statuses: Vec<ServingStatus> = existing
            .iter()
            .map(|certificate| {
                certificate.as_ref().map_or_else(
                    // none yet: it is about to be issued by the signing CA
                    || ServingStatus {
                        issuer: String::new(),
                        issued_at: now,
                    },
                    |certificate| certificate.status.clone(),
                )
            })
            .collect();
        let step = CaState::plan(ca_state.as_ref(), &statuses, now, lifetimes);
        let ca_state = match CaState::take(ca_state.as_ref(), step, now, lifetimes)? {
            None => ca_state.ok_or_else(|| PkiError::Raced(self.settings.ca_secret.clone()))?,
            Some(mut next) => {
                if step == CaStep::Create {
                    // certificates from before (the webhook's own CA of
                    // earlier versions) stay trusted through the overlap
                    next.previous = existing
                        .iter()
                        .flatten()
                        .map(|certificate| certificate.ca_bundle.clone())
                        .find(|bundle| !bundle.trim().is_empty())
                        .map(|bundle| (bundle, now));
                }
                let secret = ca_to_secret(&next, &self.settings.ca_secret);
                self.write(&self.settings.ca_secret, ca_secret, secret)
                    .await?;
                tracing::info!(secret = %self.settings.ca_secret, ?step, not_after = %next.signing.not_after, "the CA took a step");
                next
            }
        };

        let bundle = ca_state.bundle();
        let mut issued = Vec::new();
        for ((serving, secret), certificate) in self
            .settings
            .serving
            .iter()
            .zip(serving_secrets)
            .zip(existing)
        {
            let current = certificate.filter(|certificate| {
                !needs_issuing(certificate, &ca_state, &serving.dns_names, now, lifetimes)
            });
            let certificate = match current {
                Some(certificate) if certificate.ca_bundle == bundle => certificate,
                Some(certificate) => {
                    let updated = ServingCertificate {
                        ca_bundle: bundle.clone(),
                        ..certificate
                    };
                    let desired = serving_to_secret(&updated, &serving.secret);
                    self.write(&serving.secret, secret, desired).await?;
                    tracing::info!(secret = %serving.secret, "wrote the new CA bundle next to the certificate");
                    updated
                }
                None => {
                    let fresh = issue(
                        &ca_state,
                        &serving.dns_names,
                        now,
                        lifetimes.certificate_validity,
                    )?;
                    let desired = serving_to_secret(&fresh, &serving.secret);
                    self.write(&serving.secret, secret, desired).await?;
                    tracing::info!(secret = %serving.secret, not_after = %fresh.not_after, "issued a serving certificate");
                    fresh
                }
            };
            issued.push(certificate);
        }
        Ok(Issued {
            bundle,
            serving: issued,
        })
    }

    /// Creates `name`, or replaces what `existing` held if nobody changed
    /// it since it was read.
    async fn write(
        &self,
        name: &str,
        existing: Option<Secret>,
        mut desired: Secret,
    ) -> Result<(), PkiError> {
        let written = match existing {
            None => self.secrets.create(&PostParams::default(), &desired).await,
            Some(existing) => {
                // a merge patch carrying the resourceVersion read fails with
                // 409 when another replica wrote it meanwhile
                desired.metadata.resource_version = existing.metadata.resource_version;
                self.secrets
                    .patch(name, &PatchParams::default(), &Patch::Merge(&desired))
                    .await
            }
        };
        match written {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 409 => {
                Err(PkiError::Raced(name.to_owned()))
            }
            Err(err) => Err(err.into()),
        }
    }
}

fn secret(name: &str, type_: &str, data: BTreeMap<String, String>) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(BTreeMap::from([(
                MANAGED_BY_LABEL.to_owned(),
                MANAGER.to_owned(),
            )])),
            ..ObjectMeta::default()
        },
        type_: Some(type_.to_owned()),
        data: Some(
            data.into_iter()
                .map(|(key, value)| (key, ByteString(value.into_bytes())))
                .collect(),
        ),
        ..Secret::default()
    }
}

fn text(secret: &Secret, key: &str) -> Option<String> {
    secret
        .data
        .as_ref()?
        .get(key)
        .and_then(|bytes| String::from_utf8(bytes.0.clone()).ok())
}

fn signing_ca(secret: &Secret, prefix: &str) -> Option<SigningCa> {
    Some(SigningCa {
        name: text(secret, &format!("{prefix}.name"))?,
        cert_pem: text(secret, &format!("{prefix}.crt"))?,
        key_pem: text(secret, &format!("{prefix}.key"))?,
        not_after: text(secret, &format!("{prefix}.not-after"))?.parse().ok()?,
    })
}

fn signing_ca_data(ca: &SigningCa, prefix: &str) -> Vec<(String, String)> {
    vec![
        (format!("{prefix}.name"), ca.name.clone()),
        (format!("{prefix}.crt"), ca.cert_pem.clone()),
        (format!("{prefix}.key"), ca.key_pem.clone()),
        (format!("{prefix}.not-after"), ca.not_after.to_string()),
    ]
}

/// The CA's state as its Secret holds it.
pub fn ca_to_secret(state: &CaState, name: &str) -> Secret {
    // an empty value stands for none: a merge patch keeps the keys it does
    // not name, so a step that ends `next` or `previous` empties them
    let mut data: BTreeMap<String, String> = [
        "next.name",
        "next.crt",
        "next.key",
        "next.not-after",
        "next.published-at",
        "previous.crt",
        "previous.since",
    ]
    .into_iter()
    .map(|key| (key.to_owned(), String::new()))
    .collect();
    data.extend(signing_ca_data(&state.signing, "ca"));
    if let Some((next, published_at)) = &state.next {
        data.extend(signing_ca_data(next, "next"));
        data.insert("next.published-at".to_owned(), published_at.to_string());
    }
    if let Some((previous, since)) = &state.previous {
        data.insert("previous.crt".to_owned(), previous.clone());
        data.insert("previous.since".to_owned(), since.to_string());
    }
    secret(name, "Opaque", data)
}

/// The CA's state a Secret holds; `None` when the signing CA is incomplete.
pub fn ca_from_secret(secret: &Secret) -> Option<CaState> {
    let nonempty = |key: &str| text(secret, key).filter(|value| !value.is_empty());
    Some(CaState {
        signing: signing_ca(secret, "ca")?,
        next: nonempty("next.crt").and_then(|_| {
            Some((
                signing_ca(secret, "next")?,
                nonempty("next.published-at")?.parse().ok()?,
            ))
        }),
        previous: nonempty("previous.crt")
            .and_then(|previous| Some((previous, nonempty("previous.since")?.parse().ok()?))),
    })
}

/// A serving certificate as its `kubernetes.io/tls` Secret holds it.
pub fn serving_to_secret(certificate: &ServingCertificate, name: &str) -> Secret {
    let mut secret = secret(
        name,
        "kubernetes.io/tls",
        BTreeMap::from([
            ("tls.crt".to_owned(), certificate.cert_pem.clone()),
            ("tls.key".to_owned(), certificate.key_pem.clone()),
            (CA_BUNDLE_KEY.to_owned(), certificate.ca_bundle.clone()),
        ]),
    );
    secret.metadata.annotations = Some(BTreeMap::from([
        (
            ISSUER_ANNOTATION.to_owned(),
            certificate.status.issuer.clone(),
        ),
        (
            ISSUED_AT_ANNOTATION.to_owned(),
            certificate.status.issued_at.to_string(),
        ),
        (
            NOT_AFTER_ANNOTATION.to_owned(),
            certificate.not_after.to_string(),
        ),
        (
            DNS_NAMES_ANNOTATION.to_owned(),
            certificate.dns_names.join(","),
        ),
    ]));
    secret
}

/// The serving certificate a Secret holds; `None` when anything is missing.
/// A Secret of an earlier version (no issuer) reads with an empty issuer,
/// so it is issued again.
pub fn serving_from_secret(secret: &Secret) -> Option<ServingCertificate> {
    let annotations = secret.metadata.annotations.as_ref()?;
    Some(ServingCertificate {
        cert_pem: text(secret, "tls.crt")?,
        key_pem: text(secret, "tls.key")?,
        ca_bundle: text(secret, CA_BUNDLE_KEY).unwrap_or_default(),
        dns_names: annotations
            .get(DNS_NAMES_ANNOTATION)?
            .split(',')
            .map(str::to_owned)
            .collect(),
        not_after: annotations.get(NOT_AFTER_ANNOTATION)?.parse().ok()?,
        status: ServingStatus {
            issuer: annotations
                .get(ISSUER_ANNOTATION)
                .cloned()
                .unwrap_or_default(),
            issued_at: annotations
                .get(ISSUED_AT_ANNOTATION)
                .and_then(|time| time.parse().ok())
                .unwrap_or(Timestamp::UNIX_EPOCH),
        },
    })
}

#[cfg(test)]
mod tests {
    use http::{Method, StatusCode};
    use serde_json::{Value, json};

    use super::*;
    use crate::fixtures::{Exchange, api_status, play};

    const NS: &str = "syncfolder-system";
    const CA: &str = "/api/v1/namespaces/syncfolder-system/secrets/syncfolder-ca";
    const WEBHOOK: &str = "/api/v1/namespaces/syncfolder-system/secrets/syncfolder-webhook-tls";
    const SERVER: &str = "/api/v1/namespaces/syncfolder-system/secrets/syncfolder-server-tls";
    const SECRETS: &str = "/api/v1/namespaces/syncfolder-system/secrets";

    fn now() -> Timestamp {
        Timestamp::now()
    }

    fn settings() -> PkiSettings {
        PkiSettings {
            namespace: NS.to_owned(),
            ca_secret: "syncfolder-ca".to_owned(),
            serving: vec![
                ServingSecret {
                    secret: "syncfolder-webhook-tls".to_owned(),
                    dns_names: vec!["syncfolder-webhook.syncfolder-system.svc".to_owned()],
                },
                ServingSecret {
                    secret: "syncfolder-server-tls".to_owned(),
                    dns_names: vec!["syncfolder.syncfolder-system.svc".to_owned()],
                },
            ],
            lifetimes: Lifetimes::default(),
        }
    }

    async fn scenario(exchanges: Vec<Exchange>, run: impl AsyncFnOnce(Pki)) -> Vec<Value> {
        let (client, server) = play(exchanges, NS);
        run(Pki::new(client, settings())).await;
        server.await.expect("mock API server")
    }

    fn as_json(secret: &Secret) -> Value {
        let mut value = serde_json::to_value(secret).expect("json");
        value["apiVersion"] = json!("v1");
        value["kind"] = json!("Secret");
        value["metadata"]["namespace"] = json!(NS);
        value["metadata"]["resourceVersion"] = json!("41");
        value
    }

    fn from_json(value: &Value) -> Secret {
        serde_json::from_value(value.clone()).expect("a Secret")
    }

    fn not_found() -> Value {
        api_status(404, "NotFound")
    }

    #[tokio::test]
    async fn the_first_pass_makes_a_ca_and_a_certificate_for_each_service() {
        let created = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "x"}});
        let mut issued = None;
        let bodies = scenario(
            vec![
                (Method::GET, CA, StatusCode::NOT_FOUND, not_found()),
                (Method::GET, WEBHOOK, StatusCode::NOT_FOUND, not_found()),
                (Method::GET, SERVER, StatusCode::NOT_FOUND, not_found()),
                (Method::POST, SECRETS, StatusCode::CREATED, created.clone()),
                (Method::POST, SECRETS, StatusCode::CREATED, created.clone()),
                (Method::POST, SECRETS, StatusCode::CREATED, created),
            ],
            async |pki| issued = Some(pki.ensure(now()).await.expect("issued")),
        )
        .await;
        let issued = issued.expect("ran");
        let ca = ca_from_secret(&from_json(&bodies[3])).expect("a CA Secret");
        assert_eq!(ca.bundle(), issued.bundle);
        assert!(ca.next.is_none() && ca.previous.is_none());
        for (body, name) in [
            (&bodies[4], "syncfolder-webhook-tls"),
            (&bodies[5], "syncfolder-server-tls"),
        ] {
            assert_eq!(body["metadata"]["name"], name);
            assert_eq!(body["type"], "kubernetes.io/tls");
            let certificate = serving_from_secret(&from_json(body)).expect("readable");
            assert_eq!(certificate.ca_bundle, issued.bundle);
            assert_eq!(
                certificate.status.issuer,
                crate::ca::fingerprint(&ca.signing.cert_pem)
            );
        }
        assert_eq!(
            issued.serving[1].dns_names,
            ["syncfolder.syncfolder-system.svc"]
        );
    }

    #[tokio::test]
    async fn a_current_pass_writes_nothing_and_a_race_is_reported() {
        let lifetimes = Lifetimes::default();
        let ca = CaState::take(None, CaStep::Create, now(), &lifetimes)
            .expect("CA")
            .expect("created");
        let serving: Vec<Value> = settings()
            .serving
            .iter()
            .map(|serving| {
                let certificate = issue(
                    &ca,
                    &serving.dns_names,
                    now(),
                    lifetimes.certificate_validity,
                )
                .expect("certificate");
                as_json(&serving_to_secret(&certificate, &serving.secret))
            })
            .collect();
        let ca_json = as_json(&ca_to_secret(&ca, "syncfolder-ca"));
        scenario(
            vec![
                (Method::GET, CA, StatusCode::OK, ca_json.clone()),
                (Method::GET, WEBHOOK, StatusCode::OK, serving[0].clone()),
                (Method::GET, SERVER, StatusCode::OK, serving[1].clone()),
                // the server's certificate was deleted, and another replica
                // wrote a new one first
                (Method::GET, CA, StatusCode::OK, ca_json),
                (Method::GET, WEBHOOK, StatusCode::OK, serving[0].clone()),
                (Method::GET, SERVER, StatusCode::NOT_FOUND, not_found()),
                (
                    Method::POST,
                    SECRETS,
                    StatusCode::CONFLICT,
                    api_status(409, "AlreadyExists"),
                ),
            ],
            async |pki| {
                let issued = pki.ensure(now()).await.expect("current");
                assert_eq!(issued.bundle, ca.bundle());
                let raced = pki.ensure(now()).await.expect_err("raced");
                assert!(
                    matches!(raced, PkiError::Raced(ref name) if name == "syncfolder-server-tls"),
                    "{raced}"
                );
            },
        )
        .await;
    }

    #[tokio::test]
    async fn the_webhook_ca_of_earlier_versions_stays_trusted_through_the_overlap() {
        // what earlier versions kept: a CA of the webhook's own, no issuer
        let old_ca = crate::ca::new_ca(now(), Lifetimes::default().ca_validity).expect("CA");
        let mut old = as_json(&serving_to_secret(
            &issue(
                &CaState {
                    signing: old_ca.clone(),
                    next: None,
                    previous: None,
                },
                &settings().serving[0].dns_names,
                now(),
                Lifetimes::default().certificate_validity,
            )
            .expect("certificate"),
            "syncfolder-webhook-tls",
        ));
        old["metadata"]["annotations"]
            .as_object_mut()
            .expect("annotations")
            .remove(ISSUER_ANNOTATION);
        let created = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "x"}});
        let bodies = scenario(
            vec![
                (Method::GET, CA, StatusCode::NOT_FOUND, not_found()),
                (Method::GET, WEBHOOK, StatusCode::OK, old.clone()),
                (Method::GET, SERVER, StatusCode::NOT_FOUND, not_found()),
                (Method::POST, SECRETS, StatusCode::CREATED, created.clone()),
                (Method::PATCH, WEBHOOK, StatusCode::OK, old),
                (Method::POST, SECRETS, StatusCode::CREATED, created),
            ],
            async |pki| {
                let issued = pki.ensure(now()).await.expect("issued");
                assert!(issued.bundle.contains(old_ca.cert_pem.trim()));
            },
        )
        .await;
        let ca = ca_from_secret(&from_json(&bodies[3])).expect("a CA Secret");
        assert!(
            ca.previous.is_some(),
            "the old CA is kept as the previous one"
        );
        assert_eq!(bodies[4]["metadata"]["resourceVersion"], "41");
        let reissued = serving_from_secret(&from_json(&bodies[4])).expect("readable");
        assert_eq!(
            reissued.status.issuer,
            crate::ca::fingerprint(&ca.signing.cert_pem)
        );
    }
}
