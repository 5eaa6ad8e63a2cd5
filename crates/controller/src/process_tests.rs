//! One whole controller replica against an in-memory Kubernetes API (every
//! request checked against the chart's RBAC) and a real syncfolder server:
//! it elects itself, makes its webhook certificate, turns ready, injects a
//! pod over verified TLS, reconciles a SyncFolder into a server folder and a
//! token Secret, and gives its Lease back on shutdown.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use kube::client::Body;
use serde_json::{Value, json};
use syncfolder_server::{Server, ServerConfig};

use super::*;
use crate::controller::CaBundleCopies;
use crate::fixtures::{assert_allowed_by_rbac, post_to_webhook};
use crate::sidecar::InjectSettings;
use crate::trust::TrustBundle;

const ADMIN_TOKEN: &str = "admin-token-for-the-process-test-0123456789";

/// Objects by API path; watches are held open and never answered.
#[derive(Default)]
struct FakeApi {
    objects: Mutex<BTreeMap<String, Value>>,
    requests: Mutex<Vec<String>>,
    next_version: Mutex<u64>,
}

impl FakeApi {
    fn object(&self, path: &str) -> Option<Value> {
        self.objects.lock().expect("lock").get(path).cloned()
    }

    fn bump(&self, object: &mut Value) {
        let mut version = self.next_version.lock().expect("lock");
        *version += 1;
        object["metadata"]["resourceVersion"] = json!(version.to_string());
    }

    fn list(&self, collection: &str, kind: &str, api_version: &str) -> Value {
        let items: Vec<Value> = self
            .objects
            .lock()
            .expect("lock")
            .iter()
            .filter(|(path, _)| {
                // `/apis/g/v/syncfolders` lists every namespace's
                let (prefix, resource) = collection.rsplit_once('/').expect("a collection path");
                path.contains(&format!("/{resource}/"))
                    && (path.starts_with(&format!("{prefix}/{resource}/"))
                        || path.starts_with(&format!("{prefix}/namespaces/")))
            })
            .map(|(_, object)| object.clone())
            .collect();
        json!({"apiVersion": api_version, "kind": kind, "metadata": {"resourceVersion": "1"}, "items": items})
    }

    async fn answer(&self, request: Request<Body>) -> Option<(StatusCode, Value)> {
        let method = request.method().clone();
        let path = request.uri().path().to_owned();
        let query = request.uri().query().unwrap_or_default().to_owned();
        assert_allowed_by_rbac(&method, &path, request.uri().query());
        self.requests
            .lock()
            .expect("lock")
            .push(format!("{method} {path}"));
        let content_type = request
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let bytes = request.into_body().collect_bytes().await.expect("body");
        let body: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).expect("JSON body")
        };
        let not_found = || {
            (
                StatusCode::NOT_FOUND,
                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found"}),
            )
        };
        let attributes = crate::rbac::attributes(&method, &path, Some(&query));
        Some(match attributes.verb.as_str() {
            "watch" => return None,
            "list" => {
                let (kind, api_version) = match attributes.resource.as_str() {
                    "syncfolders" => ("SyncFolderList", "syncfolder.io/v1alpha1"),
                    "secrets" => ("SecretList", "v1"),
                    other => panic!("unexpected list of {other}"),
                };
                (StatusCode::OK, self.list(&path, kind, api_version))
            }
            "get" => match self.object(&path) {
                Some(object) => (StatusCode::OK, object),
                None => not_found(),
            },
            "create" => {
                let mut object = body;
                if attributes.resource == "events" {
                    return Some((StatusCode::CREATED, object));
                }
                let name = object["metadata"]["name"]
                    .as_str()
                    .expect("a name")
                    .to_owned();
                let object_path = format!("{path}/{name}");
                if self.object(&object_path).is_some() {
                    return Some((
                        StatusCode::CONFLICT,
                        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "AlreadyExists", "code": 409, "message": "exists"}),
                    ));
                }
                self.bump(&mut object);
                self.objects
                    .lock()
                    .expect("lock")
                    .insert(object_path, object.clone());
                (StatusCode::CREATED, object)
            }
            "update" => {
                let mut object = body;
                self.bump(&mut object);
                self.objects
                    .lock()
                    .expect("lock")
                    .insert(path.clone(), object.clone());
                (StatusCode::OK, object)
            }
            "patch" => {
                let object_path = path.trim_end_matches("/status").to_owned();
                let mut object = match self.object(&object_path) {
                    Some(object) => object,
                    None if content_type.contains("apply-patch") => {
                        Value::Object(Default::default())
                    }
                    None => return Some(not_found()),
                };
                if content_type.contains("json-patch") {
                    // like the API server, a missing field tests equal to null
                    let operations: Vec<Value> = body
                        .as_array()
                        .expect("a JSON patch")
                        .iter()
                        .filter(|operation| {
                            !(operation["op"] == "test"
                                && operation["value"].is_null()
                                && object
                                    .pointer(operation["path"].as_str().unwrap_or_default())
                                    .is_none())
                        })
                        .cloned()
                        .collect();
                    let patch: json_patch::Patch =
                        serde_json::from_value(Value::Array(operations)).expect("a JSON patch");
                    json_patch::patch(&mut object, &patch).expect("the patch applies");
                } else {
                    json_patch::merge(&mut object, &body);
                }
                self.bump(&mut object);
                self.objects
                    .lock()
                    .expect("lock")
                    .insert(object_path, object.clone());
                (StatusCode::OK, object)
            }
            other => panic!("unexpected {other} {path}"),
        })
    }
}

fn client_for(api: Arc<FakeApi>) -> Client {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Some((request, send)) = handle.next_request().await {
            match api.answer(request).await {
                Some((status, body)) => send.send_response(
                    Response::builder()
                        .status(status)
                        .body(Body::from(serde_json::to_vec(&body).expect("json")))
                        .expect("response"),
                ),
                None => held.push(send),
            }
        }
    });
    Client::new(service, "syncfolder-system")
}

async fn start_server() -> (String, tokio::sync::oneshot::Sender<()>, tempfile::TempDir) {
    let data_dir = tempfile::tempdir().expect("temp dir");
    let mut config = ServerConfig::new("127.0.0.1:0".parse().expect("address"), data_dir.path());
    config.admin_token = Some(ADMIN_TOKEN.to_owned());
    let server = Server::bind(config).await.expect("server binds");
    let url = format!("http://{}", server.local_addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        server
            .serve(async move {
                let _ = stopped.await;
            })
            .await
            .expect("server runs");
    });
    (url, stop, data_dir)
}

fn free_address() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address")
}

async fn http_get(address: SocketAddr, path: &str) -> (StatusCode, String) {
    let stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(connection);
    let request = http::Request::get(path)
        .header(http::header::HOST, "localhost")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .expect("request");
    let response = sender.send_request(request).await.expect("response");
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

async fn post_admission(address: SocketAddr, ca_pem: &str, body: Vec<u8>) -> Value {
    let (status, body) = post_to_webhook(address, ca_pem, &body)
        .await
        .expect("the webhook's certificate verifies against the CA in its Secret");
    assert_eq!(status, StatusCode::OK);
    serde_json::from_slice(&body).expect("an AdmissionReview")
}

async fn eventually<T>(what: &str, mut probe: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_replica_leads_serves_the_webhook_and_reconciles_against_the_real_server() {
    let (server_url, _stop_server, _data) = start_server().await;
    let api = Arc::new(FakeApi::default());
    api.objects.lock().expect("lock").insert(
        "/apis/syncfolder.io/v1alpha1/namespaces/team-a/syncfolders/photos".to_owned(),
        json!({
            "apiVersion": "syncfolder.io/v1alpha1", "kind": "SyncFolder",
            "metadata": {"name": "photos", "namespace": "team-a", "uid": "6c1f7d2e-9a4b-4c8e-b1d3-5f0a2e7c9b14", "generation": 1, "resourceVersion": "1",
                         // the fake API sends no watch events, so the reconcile
                         // that adds the finalizer would not be followed by another
                         "finalizers": ["syncfolder.io/cleanup"]},
            "spec": {}
        }),
    );
    let metrics_listen = free_address();
    let webhook_listen = free_address();
    let config = ProcessConfig {
        controller: ControllerSettings {
            default_server_url: server_url.clone(),
            admin_token: ADMIN_TOKEN.to_owned(),
            status_refresh: Duration::from_secs(60),
            retry_after: Duration::from_secs(1),
            instance: Some("syncfolder-controller-abc".to_owned()),
            ca_bundle: Some(CaBundleCopies {
                config_map: "syncfolder-ca".to_owned(),
                bundle: TrustBundle::default(),
            }),
        },
        metrics_listen,
        webhook: Some(WebhookConfig {
            listen: webhook_listen,
            certificate: CertificateSource::Managed {
                secret: "syncfolder-webhook-tls".to_owned(),
                service: "syncfolder-webhook".to_owned(),
                configuration: "syncfolder-sidecar-injector".to_owned(),
            },
            inject: InjectSettings::default(),
        }),
        namespace: "syncfolder-system".to_owned(),
        pod_name: "syncfolder-controller-abc".to_owned(),
        leader_election_lease: Some("syncfolder-controller".to_owned()),
        server_ca_cert: None,
        pki: PkiConfig {
            server: Some(ServingSecret {
                secret: "syncfolder-server-tls".to_owned(),
                dns_names: vec!["syncfolder.syncfolder-system.svc".to_owned()],
            }),
            ..PkiConfig::default()
        },
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let replica = tokio::spawn(run_with_client(
        config,
        client_for(api.clone()),
        async move {
            let _ = stopped.await;
        },
    ));

    assert_eq!(
        http_get(metrics_listen_ready(metrics_listen).await, "/healthz")
            .await
            .0,
        StatusCode::OK
    );
    eventually("/readyz to answer 200", async || {
        (http_get(metrics_listen, "/readyz").await.0 == StatusCode::OK).then_some(())
    })
    .await;

    // the webhook serves the certificate whose CA it keeps in its Secret
    let secret = api
        .object("/api/v1/namespaces/syncfolder-system/secrets/syncfolder-webhook-tls")
        .expect("the certificate Secret");
    let ca_pem = String::from_utf8(
        base64::Engine::decode(
            &base64::engine::general_purpose::STANDARD,
            secret["data"]["ca.crt"].as_str().expect("ca.crt"),
        )
        .expect("base64"),
    )
    .expect("PEM");
    let review = post_admission(
        webhook_listen,
        &ca_pem,
        std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fixtures/admission/pod-create-annotated.json"
        ))
        .expect("fixture"),
    )
    .await;
    assert_eq!(review["response"]["allowed"], true);
    assert_eq!(review["response"]["patchType"], "JSONPatch");

    // the sync server's certificate comes from the same CA, whose key stays
    // in a Secret of its own
    let server_secret = api
        .object("/api/v1/namespaces/syncfolder-system/secrets/syncfolder-server-tls")
        .expect("the server's certificate Secret");
    assert_eq!(server_secret["type"], "kubernetes.io/tls");
    assert_eq!(server_secret["data"]["ca.crt"], secret["data"]["ca.crt"]);
    assert!(server_secret["data"]["tls.key"].is_string());
    let ca_secret = api
        .object("/api/v1/namespaces/syncfolder-system/secrets/syncfolder-ca")
        .expect("the CA Secret");
    assert!(ca_secret["data"]["ca.key"].is_string());
    assert!(secret["data"].get("ca.key").is_none(), "{secret}");

    // it leads, and reconciles the SyncFolder into a folder and a Secret
    let lease = api
        .object("/apis/coordination.k8s.io/v1/namespaces/syncfolder-system/leases/syncfolder-controller")
        .expect("a Lease");
    assert_eq!(lease["spec"]["holderIdentity"], "syncfolder-controller-abc");
    let token_secret = eventually("the folder's token Secret", async || {
        api.object("/api/v1/namespaces/team-a/secrets/syncfolder-photos-token")
    })
    .await;
    let folder = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        token_secret["data"]["folder"].as_str().expect("folder key"),
    )
    .expect("base64");
    assert_eq!(folder, b"team-a.photos");
    let admin = syncfolder_client::Client::new(&server_url, ADMIN_TOKEN).expect("client");
    let folders = admin.list_folders().await.expect("folders");
    assert!(
        folders.iter().any(|folder| folder.name == "team-a.photos"),
        "{folders:?}"
    );
    let status = eventually("a Ready status", async || {
        api.object("/apis/syncfolder.io/v1alpha1/namespaces/team-a/syncfolders/photos")
            .filter(|folder| folder["status"]["conditions"][0]["status"] == "True")
    })
    .await;
    assert_eq!(status["status"]["serverFolder"], "team-a.photos");
    // the SyncFolder's namespace got the CA bundle its sidecars trust
    let copy = eventually("the CA bundle in team-a", async || {
        api.object("/api/v1/namespaces/team-a/configmaps/syncfolder-ca")
    })
    .await;
    assert_eq!(copy["data"]["ca.crt"].as_str(), Some(ca_pem.as_str()));
    let requests = api.requests.lock().expect("lock").clone();
    for expected in [
        "GET /apis/syncfolder.io/v1alpha1/syncfolders",
        "GET /api/v1/secrets",
        "POST /apis/coordination.k8s.io/v1/namespaces/syncfolder-system/leases",
        "GET /apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/syncfolder-sidecar-injector",
        "PATCH /api/v1/namespaces/team-a/secrets/syncfolder-photos-token",
    ] {
        assert!(
            requests.iter().any(|request| request == expected),
            "{expected} in {requests:#?}"
        );
    }

    let (_, metrics) = http_get(metrics_listen, "/metrics").await;
    assert!(
        metrics.contains("syncfolder_controller_leader 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("syncfolder_controller_webhook_requests_total{outcome=\"injected\"} 1"),
        "{metrics}"
    );

    // shutting down gives the Lease back
    stop.send(()).expect("stop");
    tokio::time::timeout(Duration::from_secs(20), replica)
        .await
        .expect("the replica stops")
        .expect("no panic")
        .expect("no error");
    let lease = api
        .object("/apis/coordination.k8s.io/v1/namespaces/syncfolder-system/leases/syncfolder-controller")
        .expect("a Lease");
    assert_eq!(lease["spec"].get("holderIdentity"), None, "{lease}");
}

/// The health endpoint's address once it accepts connections.
async fn metrics_listen_ready(address: SocketAddr) -> SocketAddr {
    eventually("the health endpoint to listen", async || {
        tokio::net::TcpStream::connect(address)
            .await
            .ok()
            .map(|_| address)
    })
    .await
}
