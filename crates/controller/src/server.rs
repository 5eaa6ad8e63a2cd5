//! The syncfolder server's admin API as the reconciler sees it: a narrow
//! trait ([`ServerAdmin`]) and the factory that connects to a server
//! ([`Servers`]), so tests can use an in-memory fake or a real in-process
//! server. [`HttpServers`] is the real one, over `syncfolder-client`.

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use syncfolder_core::protocol::{FolderInfo, FolderSettings, FolderSettingsPatch, TokenScope};

/// What went wrong talking to a server, sorted by what the reconciler does
/// about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServerError {
    /// Connection refused, timeout, 5xx: retry with backoff.
    #[error("cannot reach the syncfolder server at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    /// The server said no (4xx other than 404): retrying will not help until
    /// something changes, such as the admin token.
    #[error("the syncfolder server at {url} refused: {reason}")]
    Refused { url: String, reason: String },
}

impl ServerError {
    /// True when trying again later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, ServerError::Unreachable { .. })
    }
}

/// Where a folder's server is and how to administer it.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ServerTarget {
    /// Base URL, such as `http://syncfolder.syncfolder-system.svc:8080`.
    pub url: String,
    /// The admin token the server accepts.
    pub admin_token: String,
}

impl std::fmt::Debug for ServerTarget {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ServerTarget")
            .field("url", &self.url)
            .field("admin_token", &"<redacted>")
            .finish()
    }
}

/// A freshly created folder and its first read-write token.
#[derive(Clone, PartialEq, Eq)]
pub struct CreatedFolder {
    pub folder: FolderInfo,
    pub token: String,
    pub token_id: String,
}

impl std::fmt::Debug for CreatedFolder {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("CreatedFolder")
            .field("folder", &self.folder)
            .field("token", &"<redacted>")
            .field("token_id", &self.token_id)
            .finish()
    }
}

/// A new token for a folder.
#[derive(Clone, PartialEq, Eq)]
pub struct FolderToken {
    pub token: String,
    pub token_id: String,
}

impl std::fmt::Debug for FolderToken {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("FolderToken")
            .field("token", &"<redacted>")
            .field("token_id", &self.token_id)
            .finish()
    }
}

/// The admin operations the reconciler needs, on one server.
pub trait ServerAdmin: Send + Sync {
    /// The folder, or `None` when the server has no folder of that name.
    fn describe_folder(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Option<FolderInfo>, ServerError>> + Send;

    fn create_folder(
        &self,
        name: &str,
        settings: FolderSettings,
    ) -> impl Future<Output = Result<CreatedFolder, ServerError>> + Send;

    /// Sets every setting to `settings`.
    fn update_folder(
        &self,
        name: &str,
        settings: FolderSettings,
    ) -> impl Future<Output = Result<FolderInfo, ServerError>> + Send;

    /// Deletes the folder with its data; a folder already gone is success.
    fn delete_folder(&self, name: &str) -> impl Future<Output = Result<(), ServerError>> + Send;

    /// A new read-write token.
    fn create_token(
        &self,
        folder: &str,
    ) -> impl Future<Output = Result<FolderToken, ServerError>> + Send;

    /// Whether `token` still opens `folder` (false once revoked, or when the
    /// server's data was replaced under the same folder name).
    fn token_is_valid(
        &self,
        folder: &str,
        token: &str,
    ) -> impl Future<Output = Result<bool, ServerError>> + Send;

    /// Revokes a token; one already gone is success.
    fn revoke_token(
        &self,
        folder: &str,
        token_id: &str,
    ) -> impl Future<Output = Result<(), ServerError>> + Send;
}

/// Connects to servers.
pub trait Servers: Send + Sync + 'static {
    type Admin: ServerAdmin;
    fn connect(&self, target: &ServerTarget) -> Result<Self::Admin, ServerError>;
}

/// The real servers, over HTTP. Clients are kept per server and token, so
/// connections are pooled across reconciles.
#[derive(Debug, Default, Clone)]
pub struct HttpServers {
    clients: Arc<Mutex<HashMap<ServerTarget, syncfolder_client::Client>>>,
    /// CA certificates (PEM) trusted for `https://` servers, besides the system's.
    ca_cert: Option<PathBuf>,
}

impl HttpServers {
    pub fn new(ca_cert: Option<PathBuf>) -> HttpServers {
        HttpServers {
            clients: Arc::default(),
            ca_cert,
        }
    }
}

impl Servers for HttpServers {
    type Admin = HttpServerAdmin;

    fn connect(&self, target: &ServerTarget) -> Result<HttpServerAdmin, ServerError> {
        let mut clients = self
            .clients
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let client = match clients.get(target) {
            Some(client) => client.clone(),
            None => {
                let client = syncfolder_client::Client::with_ca_cert(
                    &target.url,
                    &target.admin_token,
                    self.ca_cert.as_deref(),
                )
                .map_err(|err| ServerError::Refused {
                    url: target.url.clone(),
                    reason: err.to_string(),
                })?;
                clients.insert(target.clone(), client.clone());
                client
            }
        };
        Ok(HttpServerAdmin {
            client,
            url: target.url.clone(),
        })
    }
}

/// One server's admin API over HTTP.
#[derive(Debug, Clone)]
pub struct HttpServerAdmin {
    client: syncfolder_client::Client,
    url: String,
}

impl HttpServerAdmin {
    fn error(&self, err: syncfolder_client::Error) -> ServerError {
        if err.is_transient() {
            ServerError::Unreachable {
                url: self.url.clone(),
                reason: err.to_string(),
            }
        } else {
            ServerError::Refused {
                url: self.url.clone(),
                reason: err.to_string(),
            }
        }
    }
}

fn is_not_found(err: &syncfolder_client::Error) -> bool {
    err.status() == Some(404)
}

impl ServerAdmin for HttpServerAdmin {
    async fn describe_folder(&self, name: &str) -> Result<Option<FolderInfo>, ServerError> {
        match self.client.describe_folder(name).await {
            Ok(info) => Ok(Some(info)),
            Err(err) if is_not_found(&err) => Ok(None),
            Err(err) => Err(self.error(err)),
        }
    }

    async fn create_folder(
        &self,
        name: &str,
        settings: FolderSettings,
    ) -> Result<CreatedFolder, ServerError> {
        let created = self
            .client
            .create_folder(name, settings)
            .await
            .map_err(|err| self.error(err))?;
        Ok(CreatedFolder {
            folder: created.folder,
            token: created.token,
            token_id: created.token_id,
        })
    }

    async fn update_folder(
        &self,
        name: &str,
        settings: FolderSettings,
    ) -> Result<FolderInfo, ServerError> {
        let patch = FolderSettingsPatch {
            mode: Some(settings.mode),
            retention: Some(settings.retention),
            ignore_patterns: Some(settings.ignore_patterns),
            quota_bytes: Some(settings.quota_bytes),
        };
        self.client
            .update_folder(name, patch)
            .await
            .map_err(|err| self.error(err))
    }

    async fn delete_folder(&self, name: &str) -> Result<(), ServerError> {
        match self.client.delete_folder(name).await {
            Ok(()) => Ok(()),
            Err(err) if is_not_found(&err) => Ok(()),
            Err(err) => Err(self.error(err)),
        }
    }

    async fn create_token(&self, folder: &str) -> Result<FolderToken, ServerError> {
        let created = self
            .client
            .create_token(folder, TokenScope::ReadWrite)
            .await
            .map_err(|err| self.error(err))?;
        Ok(FolderToken {
            token: created.token,
            token_id: created.token_id,
        })
    }

    async fn token_is_valid(&self, folder: &str, token: &str) -> Result<bool, ServerError> {
        // the admin client's connection pool, with the folder's token
        let client = self
            .client
            .with_token(token)
            .map_err(|err| self.error(err))?;
        match client.folder_info(folder).await {
            Ok(_) => Ok(true),
            Err(err) if matches!(err.status(), Some(401 | 403)) => Ok(false),
            Err(err) => Err(self.error(err)),
        }
    }

    async fn revoke_token(&self, folder: &str, token_id: &str) -> Result<(), ServerError> {
        match self.client.revoke_token(folder, token_id).await {
            Ok(()) => Ok(()),
            Err(err) if is_not_found(&err) => Ok(()),
            Err(err) => Err(self.error(err)),
        }
    }
}
