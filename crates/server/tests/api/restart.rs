use syncfolder_core::Hash;
use syncfolder_core::protocol::{FolderInfo, TokenScope, UploadResponse};
use syncfolder_server::Limits;

use crate::harness::{TestServer, file_change, ok_json};

#[tokio::test]
async fn a_restarted_server_keeps_folders_tokens_records_chunks_and_its_admin_token() {
    let data = tempfile::tempdir().expect("temp dir");
    let first = TestServer::start_in(data.path(), Limits::default()).await;
    let folder = first.folder("docs").await;
    let read_only = first.create_token("docs", TokenScope::ReadOnly).await;
    ok_json::<UploadResponse>(folder.put_chunk(b"durable").await).await;
    let record = folder
        .commit_one(file_change("kept.txt", 0, &[b"durable"]))
        .await;
    let admin_token = first.admin_token.clone();
    let token = folder.token.clone();
    first.stop().await;

    let second = TestServer::start_in(data.path(), Limits::default()).await;
    assert_eq!(second.admin_token, admin_token);
    let folder = second.client("docs", &token);
    let feed = folder.changes(0, None, 0).await;
    assert_eq!(feed.records, vec![record.clone()]);
    let reader = second.client("docs", &read_only.token);
    let bytes = reader
        .get_chunk(&Hash::of(b"durable"))
        .await
        .bytes()
        .await
        .expect("chunk");
    assert_eq!(bytes.as_ref(), b"durable");
    let info: FolderInfo = ok_json(folder.get("").await).await;
    assert_eq!((info.latest_version, info.n_files), (1, 1));
    let next = folder
        .commit_one(file_change("kept.txt", record.version, &[b"durable"]))
        .await;
    assert_eq!(next.version, 2, "the sequence continues");
    second.stop().await;
}
