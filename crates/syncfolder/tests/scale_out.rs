//! `syncfolder server` with its metadata in PostgreSQL, as real processes:
//! the flags, where the metadata goes, and a password that never shows.

mod support;

use std::process::Command;

use support::*;
use syncfolder_testkit::TestPostgres;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn a_server_on_postgres_keeps_its_metadata_there_and_never_shows_the_password() {
    let postgres = TestPostgres::start();
    let secret_dir = tempfile::tempdir().expect("temp");
    let password_file = secret_dir.path().join("password");
    let password = "pw-never-in-a-log-4711";
    std::fs::write(&password_file, format!("{password}\n")).expect("password file");
    let server = TestServer::start_with(&[
        "--metadata-url",
        &postgres.url(),
        "--metadata-password-file",
        &password_file.to_string_lossy(),
    ]);
    server.create_folder("shared", &[]);

    let names: Vec<String> = runtime().block_on(async {
        let pool = sqlx::PgPool::connect(&postgres.url())
            .await
            .expect("connect");
        sqlx::query_scalar("SELECT name FROM folders ORDER BY name")
            .fetch_all(&pool)
            .await
            .expect("folders")
    });
    assert_eq!(names, ["shared"]);
    assert!(
        !server.data_dir.join("metadata.db").exists(),
        "no SQLite database beside the chunks"
    );
    let log = server.process.log();
    assert!(log.contains("metadata in PostgreSQL"), "{log}");
    assert!(!log.contains(password), "the password leaked into the log");
}

#[test]
fn a_metadata_url_that_is_not_postgres_or_unreachable_stops_the_server_with_a_clear_error() {
    let data = tempfile::tempdir().expect("temp");
    for (url, expected) in [
        ("mysql://sync:pw-hidden@db/meta", "not a PostgreSQL URL"),
        (
            &format!("postgres://sync:pw-hidden@127.0.0.1:{}/meta", free_port()) as &str,
            "metadata database",
        ),
    ] {
        let output = Command::new(BINARY)
            .args(["server", "--listen", "127.0.0.1:0", "--data"])
            .arg(data.path())
            .args(["--metadata-url", url])
            .env("SYNCFOLDER_LOG", "warn")
            .output()
            .expect("server");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{url}: {stderr}");
        assert!(stderr.contains(expected), "{url}: {stderr}");
        assert!(!stderr.contains("pw-hidden"), "{url}: {stderr}");
    }
}
