//! Per-file tools against a server: history, restore, status.

use anyhow::Context;
use syncfolder_client::Client;
use syncfolder_core::protocol::{Content, FileRecord};

use crate::cli::{FolderAuth, HistoryArgs, RestoreArgs, StatusArgs};

fn folder_client(auth: &FolderAuth) -> anyhow::Result<Client> {
    Client::with_ca_cert(
        &auth.server.server,
        &auth.token,
        auth.server.ca_cert.as_deref(),
    )
    .context("connecting to the server")
}

fn describe(record: &FileRecord) -> String {
    match &record.content {
        None => "deleted".to_owned(),
        Some(Content::Directory) => "directory".to_owned(),
        Some(Content::Symlink { target }) => format!("symlink -> {target}"),
        Some(Content::File {
            size,
            content_hash,
            executable,
        }) => format!(
            "file {size} bytes{} sha256-of-chunks {}",
            if *executable { " executable" } else { "" },
            &content_hash.to_hex()[..16]
        ),
    }
}

pub async fn history(args: HistoryArgs) -> anyhow::Result<()> {
    let versions = folder_client(&args.auth)?
        .history(&args.auth.folder, &args.path)
        .await
        .with_context(|| format!("reading the history of {:?}", args.path))?;
    println!("VERSION\tCOMMITTED_AT_MS\tAGENT\tCONTENT");
    for record in versions {
        println!(
            "{}\t{}\t{}\t{}",
            record.version,
            record.committed_at_ms,
            record.agent_id,
            describe(&record)
        );
    }
    Ok(())
}

pub async fn restore(args: RestoreArgs) -> anyhow::Result<()> {
    let record = folder_client(&args.auth)?
        .restore(&args.auth.folder, &args.path, args.version)
        .await
        .with_context(|| format!("restoring {:?} to version {}", args.path, args.version))?;
    println!(
        "restored {} from version {} as version {} ({})",
        record.path,
        args.version,
        record.version,
        describe(&record)
    );
    Ok(())
}

pub async fn status(args: StatusArgs) -> anyhow::Result<()> {
    let info = folder_client(&args.auth)?
        .folder_info(&args.auth.folder)
        .await
        .with_context(|| format!("reading folder {:?}", args.auth.folder))?;
    super::admin::print_folder(&info);
    Ok(())
}
