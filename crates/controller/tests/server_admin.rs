//! The reconciler's view of the server ([`HttpServerAdmin`]) against a real
//! `syncfolder-server` started in-process on port 0: every admin operation
//! once, what "not found" and "already gone" mean, and the two ways a server
//! can fail (refusing the admin token, not answering).

use syncfolder_controller::server::{HttpServers, ServerAdmin, ServerError, ServerTarget, Servers};
use syncfolder_core::protocol::{FolderMode, FolderSettings, HistoryRetention};
use syncfolder_server::{Server, ServerConfig};
use tokio::sync::oneshot;

const ADMIN_TOKEN: &str = "admin-token-for-controller-tests-0123456789";

struct TestServer {
    url: String,
    stop: oneshot::Sender<()>,
    serving: tokio::task::JoinHandle<()>,
    _data_dir: tempfile::TempDir,
}

async fn start_server() -> TestServer {
    let data_dir = tempfile::tempdir().expect("temp dir");
    let mut config = ServerConfig::new("127.0.0.1:0".parse().expect("address"), data_dir.path());
    config.admin_token = Some(ADMIN_TOKEN.to_owned());
    let server = Server::bind(config).await.expect("server binds");
    let url = format!("http://{}", server.local_addr());
    let (stop, stopped) = oneshot::channel::<()>();
    let serving = tokio::spawn(async move {
        server
            .serve(async move {
                let _ = stopped.await;
            })
            .await
            .expect("server runs");
    });
    TestServer {
        url,
        stop,
        serving,
        _data_dir: data_dir,
    }
}

fn target(url: &str, admin_token: &str) -> ServerTarget {
    ServerTarget {
        url: url.to_owned(),
        admin_token: admin_token.to_owned(),
    }
}

#[tokio::test]
async fn a_folder_goes_through_its_whole_life_on_a_real_server() {
    let server = start_server().await;
    let admin = HttpServers::default()
        .connect(&target(&server.url, ADMIN_TOKEN))
        .expect("connect");

    assert_eq!(admin.describe_folder("team-a.photos").await, Ok(None));

    let settings = FolderSettings {
        mode: FolderMode::SendOnly,
        retention: HistoryRetention {
            keep_versions: 3,
            keep_days: 0,
        },
        ignore_patterns: vec!["*.tmp".to_owned()],
        quota_bytes: 1 << 30,
    };
    let created = admin
        .create_folder("team-a.photos", settings.clone())
        .await
        .expect("create");
    assert_eq!(created.folder.settings, settings);
    assert!(!created.token.is_empty());
    let described = admin
        .describe_folder("team-a.photos")
        .await
        .expect("describe")
        .expect("the folder exists");
    assert_eq!(described.settings, settings);
    assert_eq!(described.n_files, 0);

    let changed = FolderSettings {
        mode: FolderMode::TwoWay,
        ignore_patterns: Vec::new(),
        quota_bytes: 0,
        ..settings
    };
    let updated = admin
        .update_folder("team-a.photos", changed.clone())
        .await
        .expect("update");
    assert_eq!(updated.settings, changed);

    let token = admin.create_token("team-a.photos").await.expect("token");
    assert_ne!(token.token, created.token);
    assert!(
        admin
            .token_is_valid("team-a.photos", &token.token)
            .await
            .expect("check")
    );
    admin
        .revoke_token("team-a.photos", &token.token_id)
        .await
        .expect("revoke");
    assert!(
        !admin
            .token_is_valid("team-a.photos", &token.token)
            .await
            .expect("check"),
        "a revoked token is reported as refused, not as an error"
    );
    assert!(
        !admin
            .token_is_valid("team-a.photos", "sf_not_a_token")
            .await
            .expect("check")
    );
    admin
        .revoke_token("team-a.photos", &token.token_id)
        .await
        .expect("revoking twice is fine");

    admin.delete_folder("team-a.photos").await.expect("delete");
    admin
        .delete_folder("team-a.photos")
        .await
        .expect("deleting twice is fine");
    assert_eq!(admin.describe_folder("team-a.photos").await, Ok(None));

    let _ = server.stop.send(());
    server.serving.await.expect("server stops");
}

#[tokio::test]
async fn a_wrong_admin_token_is_refused_not_retried() {
    let server = start_server().await;
    let admin = HttpServers::default()
        .connect(&target(&server.url, "not-the-admin-token"))
        .expect("connect");
    let err = admin
        .describe_folder("team-a.photos")
        .await
        .expect_err("wrong token");
    assert!(matches!(err, ServerError::Refused { .. }), "{err:?}");
    assert!(!err.is_transient());
    let _ = server.stop.send(());
}

#[tokio::test]
async fn a_server_that_does_not_answer_is_unreachable_and_retried() {
    let server = start_server().await;
    let url = server.url.clone();
    let _ = server.stop.send(());
    server.serving.await.expect("server stops");
    let admin = HttpServers::default()
        .connect(&target(&url, ADMIN_TOKEN))
        .expect("connect");
    let err = admin
        .describe_folder("team-a.photos")
        .await
        .expect_err("nobody listens");
    assert!(matches!(err, ServerError::Unreachable { .. }), "{err:?}");
    assert!(err.is_transient());
    assert!(err.to_string().contains(&url), "{err}");
}
