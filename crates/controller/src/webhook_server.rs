//! The admission webhook over HTTPS: `POST /mutate` answers with
//! [`crate::admission_review`]. The serving certificate sits in a
//! [`CertificateSlot`] that can be replaced while serving (renewal, or
//! another replica's certificate read from the Secret); until it holds one
//! the TLS handshake fails and the API server applies the webhook's
//! `failurePolicy`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;

use crate::metrics::Metrics;
use crate::{InjectSettings, SyncFolder};

/// How long a client may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest AdmissionReview accepted (a pod spec is far smaller).
const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// The certificate the webhook serves, replaceable at any time.
#[derive(Debug, Default)]
pub struct CertificateSlot {
    current: RwLock<Option<Arc<CertifiedKey>>>,
}

impl CertificateSlot {
    /// Serves `cert_pem` (the leaf first) with `key_pem` from now on.
    pub fn set_pem(&self, cert_pem: &[u8], key_pem: &[u8]) -> Result<(), rustls::Error> {
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
            .collect::<Result<_, _>>()
            .map_err(|err| rustls::Error::General(format!("certificate PEM: {err}")))?;
        if chain.is_empty() {
            return Err(rustls::Error::General(
                "no certificate in the PEM".to_owned(),
            ));
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem)
            .map_err(|err| rustls::Error::General(format!("private key PEM: {err}")))?;
        let signing_key = rustls::crypto::ring::sign::any_supported_type(&key)?;
        let certified = Arc::new(CertifiedKey::new(chain, signing_key));
        *self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(certified);
        Ok(())
    }

    pub fn is_set(&self) -> bool {
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .is_some()
    }
}

impl ResolvesServerCert for CertificateSlot {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }
}

/// TLS 1.2+ with the slot's certificate, HTTP/1.1.
pub fn tls_config(slot: Arc<CertificateSlot>) -> Result<Arc<rustls::ServerConfig>, rustls::Error> {
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_cert_resolver(slot);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A SyncFolder lookup by namespace and name (the controller's cache).
pub type FolderLookup = Arc<dyn Fn(&str, &str) -> Option<SyncFolder> + Send + Sync>;

/// What the webhook answers with.
#[derive(Clone)]
pub struct WebhookState {
    pub lookup: FolderLookup,
    pub settings: InjectSettings,
    pub metrics: Metrics,
    /// False until the SyncFolder cache has its first full list: before
    /// that every annotated pod would be refused as "not found".
    pub cache_ready: Arc<AtomicBool>,
}

pub fn router(state: WebhookState) -> Router {
    Router::new()
        .route("/mutate", post(mutate))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

async fn mutate(State(state): State<WebhookState>, body: Bytes) -> Response {
    if !state.cache_ready.load(Ordering::Acquire) {
        state.metrics.webhook_answered("unavailable");
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "the SyncFolder cache is still loading; retry",
        )
            .into_response();
    }
    match crate::admission_review(&body, state.lookup.as_ref(), &state.settings) {
        Ok(review) => {
            let outcome = match (&review.response.allowed, &review.response.patch) {
                (true, Some(_)) => "injected",
                (true, None) => "unchanged",
                (false, _) => "refused",
            };
            state.metrics.webhook_answered(outcome);
            match serde_json::to_vec(&review) {
                Ok(json) => ([(header::CONTENT_TYPE, "application/json")], json).into_response(),
                Err(err) => (StatusCode::INTERNAL_SERVER_ERROR, err.to_string()).into_response(),
            }
        }
        Err(err) => {
            state.metrics.webhook_answered("malformed");
            tracing::warn!(%err, "refused a malformed admission request");
            (StatusCode::BAD_REQUEST, err.to_string()).into_response()
        }
    }
}

/// Serves `router` over TLS on `listener` until `shutdown`.
pub async fn serve_tls(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    router: Router,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    tracing::warn!(%err, "webhook accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let acceptor = acceptor.clone();
        let service = TowerToHyperService::new(router.clone());
        tokio::spawn(async move {
            let tls_stream =
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(tls_stream)) => tls_stream,
                    Ok(Err(err)) => {
                        tracing::debug!(%err, %peer, "webhook TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "webhook TLS handshake timed out");
                        return;
                    }
                };
            if let Err(err) = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tls_stream), service)
                .await
            {
                tracing::debug!(%err, %peer, "webhook connection ended with an error");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use crate::fixtures::post_to_webhook;
    use serde_json::Value;

    use super::*;
    use crate::ca::{CaState, CaStep, Lifetimes, ServingCertificate, issue};
    use crate::certificate::service_dns_names;
    use crate::crd::SyncFolderSpec;

    fn photos(namespace: &str, name: &str) -> Option<SyncFolder> {
        (name == "photos").then(|| {
            let mut folder = SyncFolder::new(name, SyncFolderSpec::default());
            folder.metadata.namespace = Some(namespace.to_owned());
            folder
        })
    }

    struct Running {
        address: std::net::SocketAddr,
        ca_pem: String,
        slot: Arc<CertificateSlot>,
        cache_ready: Arc<AtomicBool>,
        metrics: Metrics,
        _stop: tokio::sync::oneshot::Sender<()>,
    }

    /// A certificate for the webhook Service from a CA of its own.
    fn generate() -> ServingCertificate {
        let now = k8s_openapi::jiff::Timestamp::now();
        let lifetimes = Lifetimes::default();
        let ca = CaState::take(None, CaStep::Create, now, &lifetimes)
            .expect("CA")
            .expect("created");
        issue(
            &ca,
            &service_dns_names("syncfolder-webhook", "syncfolder-system"),
            now,
            lifetimes.certificate_validity,
        )
        .expect("certificate")
    }

    async fn start() -> Running {
        let certificate = generate();
        let slot = Arc::new(CertificateSlot::default());
        slot.set_pem(
            certificate.cert_pem.as_bytes(),
            certificate.key_pem.as_bytes(),
        )
        .expect("certificate loads");
        let cache_ready = Arc::new(AtomicBool::new(true));
        let metrics = Metrics::new().expect("metrics");
        let state = WebhookState {
            lookup: Arc::new(photos),
            settings: InjectSettings::default(),
            metrics: metrics.clone(),
            cache_ready: cache_ready.clone(),
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(serve_tls(
            listener,
            tls_config(slot.clone()).expect("tls"),
            router(state),
            async move {
                let _ = stopped.await;
            },
        ));
        Running {
            address,
            ca_pem: certificate.ca_bundle,
            slot,
            cache_ready,
            metrics,
            _stop: stop,
        }
    }

    async fn post(running: &Running, body: &[u8]) -> Result<(StatusCode, Vec<u8>), String> {
        post_to_webhook(running.address, &running.ca_pem, body).await
    }

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(format!(
            "{}/fixtures/admission/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .expect("fixture")
    }

    #[tokio::test]
    async fn the_api_server_gets_a_patch_over_verified_tls() {
        let running = start().await;
        let (status, body) = post(&running, &fixture("pod-create-annotated.json"))
            .await
            .expect("the webhook answers");
        assert_eq!(status, StatusCode::OK);
        let review: Value = serde_json::from_slice(&body).expect("JSON");
        assert_eq!(review["kind"], "AdmissionReview");
        assert_eq!(review["response"]["allowed"], true);
        assert_eq!(review["response"]["patchType"], "JSONPatch");
        let (status, body) = post(&running, &fixture("pod-create-unknown-folder.json"))
            .await
            .expect("the webhook answers");
        assert_eq!(status, StatusCode::OK);
        let review: Value = serde_json::from_slice(&body).expect("JSON");
        assert_eq!(review["response"]["allowed"], false);
        let (status, _) = post(&running, b"{not json").await.expect("answers");
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let metrics = running.metrics.render();
        for outcome in ["injected", "refused", "malformed"] {
            assert!(
                metrics.contains(&format!(
                    "syncfolder_controller_webhook_requests_total{{outcome=\"{outcome}\"}} 1"
                )),
                "{outcome} counted: {metrics}"
            );
        }
    }

    #[tokio::test]
    async fn before_the_cache_is_loaded_the_webhook_answers_503_not_a_refusal() {
        let running = start().await;
        running.cache_ready.store(false, Ordering::Release);
        let (status, _) = post(&running, &fixture("pod-create-annotated.json"))
            .await
            .expect("answers");
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    }

    #[tokio::test]
    async fn a_replaced_certificate_is_served_to_the_next_connection() {
        let running = start().await;
        let other = generate();
        running
            .slot
            .set_pem(other.cert_pem.as_bytes(), other.key_pem.as_bytes())
            .expect("loads");
        let err = post(&running, &fixture("pod-create-plain.json"))
            .await
            .expect_err("the old CA no longer verifies");
        assert!(
            err.contains("certificate") || err.contains("Unknown"),
            "{err}"
        );
        let renewed = Running {
            ca_pem: other.ca_bundle,
            ..running
        };
        let (status, _) = post(&renewed, &fixture("pod-create-plain.json"))
            .await
            .expect("the new CA verifies");
        assert_eq!(status, StatusCode::OK);
    }

    #[test]
    fn a_bad_pem_is_an_error_and_keeps_the_old_certificate() {
        let slot = CertificateSlot::default();
        assert!(slot.set_pem(b"nothing", b"nothing").is_err());
        assert!(!slot.is_set());
    }
}
