//! Changes and checks the metadata's unit tests share, and the database
//! they run on: SQLite in a temp dir, or, when `SYNCFOLDER_TEST_POSTGRES_URL`
//! names a PostgreSQL server (`cargo xtask test` runs these tests a second
//! time so), a database of their own on it.

use std::path::Path;

use syncfolder_core::Hash;
use syncfolder_core::hash::content_hash;
use syncfolder_core::protocol::{Change, ChunkRef, CommitResult, Content};

use super::{Db, MetadataLocation, PostgresMetadata};

/// The metadata of a test's data dir on this run's backend; a second call
/// for the same dir opens the same database (another server's handle).
pub async fn test_db(data_dir: &Path) -> Db {
    let location = match std::env::var("SYNCFOLDER_TEST_POSTGRES_URL") {
        Ok(base_url) if !base_url.is_empty() => MetadataLocation::Postgres(PostgresMetadata::new(
            postgres_database(&base_url, data_dir).await,
        )),
        _ => MetadataLocation::DataDir,
    };
    Db::connect(&location, data_dir).await.expect("db")
}

/// The URL of the database of `data_dir` on the server of `base_url`,
/// created the first time (its name kept in the data dir).
async fn postgres_database(base_url: &str, data_dir: &Path) -> String {
    use sqlx::Connection;
    let marker = data_dir.join("test-postgres-database");
    let name = match std::fs::read_to_string(&marker) {
        Ok(name) => name,
        Err(_) => {
            let name = format!("unit_{:016x}", rand::random::<u64>());
            let mut admin = sqlx::PgConnection::connect(base_url)
                .await
                .expect("connecting to the test PostgreSQL server");
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                .execute(&mut admin)
                .await
                .expect("creating a test database");
            std::fs::write(&marker, &name).expect("writing the database marker");
            name
        }
    };
    let (server, _) = base_url.rsplit_once('/').expect("a URL with a database");
    format!("{server}/{}", name.trim())
}

/// `path` becomes a file of one chunk holding `bytes`, on `parent_version`.
pub fn file(path: &str, parent_version: u64, bytes: &[u8]) -> Change {
    let chunks = vec![ChunkRef {
        hash: Hash::of(bytes),
        size: bytes.len() as u64,
    }];
    Change {
        path: path.to_owned(),
        parent_version,
        content: Some(Content::File {
            content_hash: content_hash(&chunks),
            size: bytes.len() as u64,
            executable: false,
        }),
        chunks,
        mtime_ns: 0,
    }
}

/// `path` is deleted, on `parent_version`.
pub fn tombstone(path: &str, parent_version: u64) -> Change {
    Change {
        path: path.to_owned(),
        parent_version,
        content: None,
        chunks: Vec::new(),
        mtime_ns: 0,
    }
}

/// The version a change was committed at; panics when it was not.
pub fn committed_version(result: &CommitResult) -> u64 {
    match result {
        CommitResult::Committed { record } => record.version,
        other => panic!("not committed: {other:?}"),
    }
}
