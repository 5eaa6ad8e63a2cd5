//! Test doubles for the reconciler: a mocked Kubernetes API server that plays
//! one scenario per test (each request's method, path and body checked, in
//! order, and nothing more allowed), and an in-memory syncfolder server.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::client::Body;
use serde_json::{Value, json};
use syncfolder_core::protocol::{FolderInfo, FolderSettings};
use tokio::task::JoinHandle;

use crate::controller::{Context, ControllerSettings};
use crate::crd::{SyncFolder, SyncFolderSpec};
pub use crate::rbac::assert_allowed_by_rbac;
use crate::secret::{SecretContents, desired_secret};
use crate::server::{CreatedFolder, FolderToken, ServerAdmin, ServerError, ServerTarget, Servers};

pub const NAMESPACE: &str = "team-a";
pub const NAME: &str = "photos";
pub const SERVER_FOLDER: &str = "team-a.photos";
pub const SECRET: &str = "syncfolder-photos-token";
pub const SERVER_URL: &str = "http://syncfolder.syncfolder-system.svc:8080";

/// A SyncFolder as the API server would hand it to the controller, with
/// the finalizer already in place.
pub fn sync_folder(spec: SyncFolderSpec) -> SyncFolder {
    let mut sync_folder = SyncFolder::new(NAME, spec);
    sync_folder.metadata.namespace = Some(NAMESPACE.to_owned());
    sync_folder.metadata.uid = Some("6c1f7d2e-9a4b-4c8e-b1d3-5f0a2e7c9b14".to_owned());
    sync_folder.metadata.generation = Some(1);
    sync_folder.metadata.resource_version = Some("1001".to_owned());
    sync_folder.metadata.finalizers = Some(vec![crate::controller::FINALIZER.to_owned()]);
    sync_folder
}

/// What the in-memory server holds, and what was asked of it.
#[derive(Debug, Default)]
pub struct FakeServerState {
    pub folders: BTreeMap<String, FolderInfo>,
    /// Every admin call, as `operation folder`.
    pub calls: Vec<String>,
    /// Every server connected to.
    pub targets: Vec<ServerTarget>,
    /// When set, every call fails with it.
    pub failure: Option<ServerError>,
    /// Tokens the server no longer accepts.
    pub revoked_tokens: Vec<String>,
    next_token: u32,
}

/// An in-memory syncfolder server.
#[derive(Debug, Clone, Default)]
pub struct FakeServers {
    pub state: Arc<Mutex<FakeServerState>>,
}

impl FakeServers {
    pub fn with_folder(settings: FolderSettings) -> Self {
        let servers = FakeServers::default();
        servers
            .lock()
            .folders
            .insert(SERVER_FOLDER.to_owned(), folder_info(settings, 3));
        servers
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, FakeServerState> {
        self.state.lock().expect("fake server lock")
    }

    pub fn calls(&self) -> Vec<String> {
        self.lock().calls.clone()
    }
}

pub fn folder_info(settings: FolderSettings, n_files: u64) -> FolderInfo {
    FolderInfo {
        name: SERVER_FOLDER.to_owned(),
        settings,
        latest_version: n_files,
        n_files,
        total_bytes: n_files * 1000,
        created_at_ms: 1_700_000_000_000,
        n_conflict_copies: 0,
        last_change_ms: None,
        agents: Vec::new(),
        n_history_versions: 0,
        history_bytes: 0,
        stored_bytes: 0,
    }
}

impl Servers for FakeServers {
    type Admin = FakeServers;

    fn connect(&self, target: &ServerTarget) -> Result<FakeServers, ServerError> {
        self.lock().targets.push(target.clone());
        Ok(self.clone())
    }
}

impl FakeServers {
    fn call(
        &self,
        call: String,
    ) -> Result<std::sync::MutexGuard<'_, FakeServerState>, ServerError> {
        let mut state = self.lock();
        state.calls.push(call);
        match &state.failure {
            Some(failure) => Err(failure.clone()),
            None => Ok(state),
        }
    }

    fn next_token(state: &mut FakeServerState) -> FolderToken {
        state.next_token += 1;
        FolderToken {
            token: format!("sf_token_{}", state.next_token),
            token_id: format!("t{}", state.next_token),
        }
    }
}

impl ServerAdmin for FakeServers {
    async fn describe_folder(&self, name: &str) -> Result<Option<FolderInfo>, ServerError> {
        let state = self.call(format!("describe {name}"))?;
        Ok(state.folders.get(name).cloned())
    }

    async fn create_folder(
        &self,
        name: &str,
        settings: FolderSettings,
    ) -> Result<CreatedFolder, ServerError> {
        let mut state = self.call(format!("create {name}"))?;
        let info = FolderInfo {
            n_files: 0,
            total_bytes: 0,
            latest_version: 0,
            ..folder_info(settings, 0)
        };
        state.folders.insert(name.to_owned(), info.clone());
        let token = Self::next_token(&mut state);
        Ok(CreatedFolder {
            folder: info,
            token: token.token,
            token_id: token.token_id,
        })
    }

    async fn update_folder(
        &self,
        name: &str,
        settings: FolderSettings,
    ) -> Result<FolderInfo, ServerError> {
        let mut state = self.call(format!("update {name}"))?;
        let info = state
            .folders
            .get_mut(name)
            .ok_or_else(|| ServerError::Refused {
                url: SERVER_URL.to_owned(),
                reason: "no such folder".to_owned(),
            })?;
        info.settings = settings;
        Ok(info.clone())
    }

    async fn delete_folder(&self, name: &str) -> Result<(), ServerError> {
        let mut state = self.call(format!("delete {name}"))?;
        state.folders.remove(name);
        Ok(())
    }

    async fn token_is_valid(&self, _folder: &str, token: &str) -> Result<bool, ServerError> {
        let state = self.lock();
        match &state.failure {
            Some(failure) => Err(failure.clone()),
            None => Ok(!state.revoked_tokens.iter().any(|revoked| revoked == token)),
        }
    }

    async fn create_token(&self, folder: &str) -> Result<FolderToken, ServerError> {
        let mut state = self.call(format!("create-token {folder}"))?;
        Ok(Self::next_token(&mut state))
    }

    async fn revoke_token(&self, folder: &str, token_id: &str) -> Result<(), ServerError> {
        drop(self.call(format!("revoke-token {folder} {token_id}"))?);
        Ok(())
    }
}

pub fn settings() -> ControllerSettings {
    ControllerSettings {
        default_server_url: SERVER_URL.to_owned(),
        admin_token: "sf_admin".to_owned(),
        status_refresh: Duration::from_secs(60),
        retry_after: Duration::from_secs(30),
        instance: Some("syncfolder-controller-0".to_owned()),
        ca_bundle: None,
    }
}

/// A context whose Kubernetes client talks to the returned verifier.
pub fn context(servers: FakeServers) -> (Arc<Context<FakeServers>>, ApiServerVerifier) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, NAMESPACE);
    (
        Arc::new(Context::new(
            client,
            servers,
            settings(),
            crate::metrics::Metrics::new().expect("metrics"),
        )),
        ApiServerVerifier { handle },
    )
}

/// One request the controller is expected to make, and the answer.
#[derive(Debug)]
pub enum Step {
    /// PATCH adding the finalizer.
    AddFinalizer,
    /// PATCH removing the finalizer.
    RemoveFinalizer,
    /// GET of a Secret in the folder's namespace: found or 404.
    GetSecret {
        name: &'static str,
        found: Option<Box<Secret>>,
    },
    /// Server-side apply of the folder's Secret.
    ApplySecret,
    /// Merge patch of the SyncFolder's status.
    PatchStatus,
    /// An Event with this reason.
    Event { reason: &'static str },
}

/// A request as the API server received it.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: Method,
    pub path: String,
    pub query: String,
    pub body: Value,
}

pub struct ApiServerVerifier {
    handle: tower_test::mock::Handle<Request<Body>, Response<Body>>,
}

impl ApiServerVerifier {
    /// Plays `steps` in order, then checks that nothing else was asked once
    /// every client is dropped. Returns what was received.
    pub fn run(mut self, steps: Vec<Step>) -> JoinHandle<Vec<Received>> {
        tokio::spawn(async move {
            let mut received = Vec::new();
            for step in steps {
                let (request, send) = self
                    .handle
                    .next_request()
                    .await
                    .unwrap_or_else(|| panic!("the controller stopped before {step:?}"));
                let request = read(request).await;
                let (status, body) = answer(&step, &request);
                send.send_response(
                    Response::builder()
                        .status(status)
                        .body(Body::from(serde_json::to_vec(&body).expect("json")))
                        .expect("response"),
                );
                received.push(request);
            }
            if let Some((request, _)) = self.handle.next_request().await {
                let request = read(request).await;
                panic!(
                    "unexpected request {} {}?{} {}",
                    request.method, request.path, request.query, request.body
                );
            }
            received
        })
    }
}

async fn read(request: Request<Body>) -> Received {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let query = request.uri().query().unwrap_or_default().to_owned();
    assert_allowed_by_rbac(&method, &path, request.uri().query());
    let bytes = request
        .into_body()
        .collect_bytes()
        .await
        .expect("request body");
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).expect("a JSON request body")
    };
    Received {
        method,
        path,
        query,
        body,
    }
}

const FOLDER_PATH: &str = "/apis/syncfolder.io/v1alpha1/namespaces/team-a/syncfolders/photos";

fn answer(step: &Step, request: &Received) -> (StatusCode, Value) {
    let what = format!(
        "{step:?}: got {} {}?{}",
        request.method, request.path, request.query
    );
    match step {
        Step::AddFinalizer | Step::RemoveFinalizer => {
            assert_eq!(request.method, Method::PATCH, "{what}");
            assert_eq!(request.path, FOLDER_PATH, "{what}");
            let operations = request.body.as_array().expect("a JSON patch");
            let wanted = if matches!(step, Step::AddFinalizer) {
                "add"
            } else {
                "remove"
            };
            assert!(
                operations.iter().any(|operation| operation["op"] == wanted),
                "{what}: {}",
                request.body
            );
            (StatusCode::OK, folder_json())
        }
        Step::GetSecret { name, found } => {
            assert_eq!(request.method, Method::GET, "{what}");
            assert_eq!(
                request.path,
                format!("/api/v1/namespaces/team-a/secrets/{name}"),
                "{what}"
            );
            match found {
                Some(secret) => (StatusCode::OK, serde_json::to_value(secret).expect("json")),
                None => (
                    StatusCode::NOT_FOUND,
                    json!({
                        "kind": "Status", "apiVersion": "v1", "metadata": {},
                        "status": "Failure", "reason": "NotFound", "code": 404,
                        "message": format!("secrets \"{name}\" not found"),
                        "details": {"name": name, "kind": "secrets"}
                    }),
                ),
            }
        }
        Step::ApplySecret => {
            assert_eq!(request.method, Method::PATCH, "{what}");
            assert_eq!(
                request.path,
                format!("/api/v1/namespaces/team-a/secrets/{SECRET}"),
                "{what}"
            );
            assert!(
                request.query.contains("fieldManager=syncfolder-controller"),
                "{what}"
            );
            assert!(request.query.contains("force=true"), "{what}");
            assert_eq!(request.body["kind"], "Secret", "{what}");
            (StatusCode::OK, request.body.clone())
        }
        Step::PatchStatus => {
            assert_eq!(request.method, Method::PATCH, "{what}");
            assert_eq!(request.path, format!("{FOLDER_PATH}/status"), "{what}");
            assert!(
                request.body["status"].is_object(),
                "{what}: {}",
                request.body
            );
            let mut object = folder_json();
            object["status"] = request.body["status"].clone();
            (StatusCode::OK, object)
        }
        Step::Event { reason } => {
            assert_eq!(request.method, Method::POST, "{what}");
            assert_eq!(
                request.path, "/apis/events.k8s.io/v1/namespaces/team-a/events",
                "{what}"
            );
            assert_eq!(request.body["reason"], *reason, "{what}: {}", request.body);
            assert_eq!(request.body["regarding"]["name"], NAME, "{what}");
            (StatusCode::CREATED, request.body.clone())
        }
    }
}

fn folder_json() -> Value {
    serde_json::to_value(sync_folder(SyncFolderSpec::default())).expect("json")
}

/// Waits for the verifier, failing instead of hanging.
pub async fn finished(verifier: JoinHandle<Vec<Received>>) -> Vec<Received> {
    tokio::time::timeout(Duration::from_secs(10), verifier)
        .await
        .expect("the scenario finished in time")
        .expect("the scenario passed")
}

/// Runs a reconcile, failing instead of hanging when the scenario broke.
pub async fn within<T>(reconcile: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), reconcile)
        .await
        .expect("the reconcile finished in time")
}

/// A text value of a Secret's `data` in a request body.
pub fn secret_text(body: &Value, key: &str) -> String {
    use base64::Engine;
    let encoded = body["data"][key]
        .as_str()
        .unwrap_or_else(|| panic!("no {key} in {body}"));
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .expect("base64");
    String::from_utf8(bytes).expect("utf-8")
}

/// The Secret a previous reconcile wrote for the folder.
pub fn existing_secret(token: &str, token_id: &str) -> Secret {
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

/// The Ready condition in a status patch's body.
pub fn ready_of(body: &Value) -> &Value {
    body["status"]["conditions"]
        .as_array()
        .expect("conditions")
        .iter()
        .find(|condition| condition["type"] == "Ready")
        .expect("a Ready condition")
}

/// A Kubernetes `Status` error body, as the API server answers failures.
pub fn api_status(code: u16, reason: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason, "code": code, "message": reason})
}

/// One expected request (method and path) and the answer to it.
pub type Exchange = (Method, &'static str, StatusCode, Value);

/// A client whose API server plays `exchanges` in order, checking each
/// request's method and path and the chart's RBAC, then refuses anything
/// more. The handle yields the request bodies.
pub fn play(exchanges: Vec<Exchange>, namespace: &str) -> (Client, JoinHandle<Vec<Value>>) {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let server = tokio::spawn(async move {
        let mut bodies = Vec::new();
        for (method, path, status, answer) in exchanges {
            let (request, send) = handle.next_request().await.expect("a request");
            let received = read(request).await;
            assert_eq!((&received.method, received.path.as_str()), (&method, path));
            bodies.push(received.body);
            send.send_response(
                Response::builder()
                    .status(status)
                    .body(Body::from(serde_json::to_vec(&answer).expect("json")))
                    .expect("response"),
            );
        }
        if let Some((request, _)) = handle.next_request().await {
            panic!("unexpected request {} {}", request.method(), request.uri());
        }
        bodies
    });
    (Client::new(service, namespace), server)
}

/// POSTs `body` to the webhook at `address` the way the API server does:
/// TLS verified against `ca_pem` for the webhook Service's DNS name.
pub async fn post_to_webhook(
    address: std::net::SocketAddr,
    ca_pem: &str,
    body: &[u8],
) -> Result<(StatusCode, Vec<u8>), String> {
    use http_body_util::BodyExt;
    use rustls_pki_types::pem::PemObject;

    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls_pki_types::CertificateDer::from_pem_slice(ca_pem.as_bytes()).expect("CA"))
        .expect("root");
    let client_config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(address)
        .await
        .map_err(|err| err.to_string())?;
    let name = rustls_pki_types::ServerName::try_from("syncfolder-webhook.syncfolder-system.svc")
        .expect("name");
    let tls = tokio_rustls::TlsConnector::from(Arc::new(client_config))
        .connect(name, tcp)
        .await
        .map_err(|err| err.to_string())?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .map_err(|err| err.to_string())?;
    tokio::spawn(connection);
    let request = Request::post("/mutate")
        .header(
            http::header::HOST,
            "syncfolder-webhook.syncfolder-system.svc",
        )
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::copy_from_slice(
            body,
        )))
        .expect("request");
    let response = sender
        .send_request(request)
        .await
        .map_err(|err| err.to_string())?;
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .map_err(|err| err.to_string())?
        .to_bytes();
    Ok((status, bytes.to_vec()))
}
