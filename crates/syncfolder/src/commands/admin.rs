//! Folder and token administration. Commands that create a secret print it
//! alone on the last line of stdout, so scripts can take `tail -n 1`.

use anyhow::Context;
use syncfolder_client::Client;
use syncfolder_core::protocol::{FolderInfo, FolderSettings, HistoryRetention, TokenScope};

use crate::cli::{AdminAuth, FolderCommand, TokenCommand};

pub fn admin_client(auth: &AdminAuth) -> anyhow::Result<Client> {
    Client::with_ca_cert(
        &auth.server.server,
        &auth.admin_token,
        auth.server.ca_cert.as_deref(),
    )
    .context("connecting to the server")
}

pub async fn folder(command: FolderCommand) -> anyhow::Result<()> {
    match command {
        FolderCommand::Create(args) => {
            let settings = FolderSettings {
                mode: args.mode,
                retention: HistoryRetention {
                    keep_versions: args.keep_versions,
                    keep_days: args.keep_days,
                },
                ignore_patterns: args.ignore_patterns,
                quota_bytes: args.quota_bytes,
            };
            let created = admin_client(&args.auth)?
                .create_folder(&args.name, settings)
                .await
                .with_context(|| format!("creating folder {:?}", args.name))?;
            eprintln!(
                "created folder {} ({}); its read-write token (id {}) follows",
                created.folder.name, created.folder.settings.mode, created.token_id
            );
            println!("{}", created.token);
        }
        FolderCommand::List(args) => {
            for info in admin_client(&args.auth)?
                .list_folders()
                .await
                .context("listing folders")?
            {
                print_folder(&info);
            }
        }
        FolderCommand::Describe(args) => {
            let info = admin_client(&args.auth)?
                .describe_folder(&args.name)
                .await
                .with_context(|| format!("describing folder {:?}", args.name))?;
            print_folder(&info);
            for agent in &info.agents {
                println!(
                    "agent\t{}\tconnected={}\tlast_seen_ms={}\tlast_sync_ms={}",
                    agent.agent_id,
                    if agent.connected { "yes" } else { "no" },
                    agent.last_seen_ms,
                    agent
                        .last_sync_ms
                        .map_or_else(|| "never".to_owned(), |ms| ms.to_string())
                );
            }
        }
        FolderCommand::Delete(args) => {
            admin_client(&args.auth)?
                .delete_folder(&args.name)
                .await
                .with_context(|| format!("deleting folder {:?}", args.name))?;
            eprintln!("deleted folder {}", args.name);
        }
    }
    Ok(())
}

pub async fn token(command: TokenCommand) -> anyhow::Result<()> {
    match command {
        TokenCommand::Create(args) => {
            let scope = if args.read_only {
                TokenScope::ReadOnly
            } else {
                TokenScope::ReadWrite
            };
            let created = admin_client(&args.auth)?
                .create_token(&args.folder, scope)
                .await
                .with_context(|| format!("creating a token for folder {:?}", args.folder))?;
            let scope_name = if args.read_only {
                "read-only"
            } else {
                "read-write"
            };
            eprintln!(
                "created a {scope_name} token for folder {} (id {}); it follows",
                args.folder, created.token_id
            );
            println!("{}", created.token);
        }
        TokenCommand::Revoke(args) => {
            admin_client(&args.auth)?
                .revoke_token(&args.folder, &args.token_id)
                .await
                .with_context(|| format!("revoking token {}", args.token_id))?;
            eprintln!("revoked token {}", args.token_id);
        }
    }
    Ok(())
}

pub fn print_folder(info: &FolderInfo) {
    println!(
        "{}\tmode={}\tfiles={}\tbytes={}\tversion={}\tkeep_versions={}\tkeep_days={}\tconflict_copies={}\thistory_versions={}\thistory_bytes={}\tstored_bytes={}",
        info.name,
        info.settings.mode,
        info.n_files,
        info.total_bytes,
        info.latest_version,
        info.settings.retention.keep_versions,
        info.settings.retention.keep_days,
        info.n_conflict_copies,
        info.n_history_versions,
        info.history_bytes,
        info.stored_bytes
    );
}
