//! `syncfolder admin gc|scrub|migrate`: the server's storage jobs, on
//! demand, and moving a data directory into the scale-out stores.

use anyhow::Context;
use syncfolder_core::protocol::{GcReport, ScrubReport};

use super::admin::admin_client;
use crate::cli::AdminCommand;

pub async fn run(command: AdminCommand) -> anyhow::Result<()> {
    match command {
        AdminCommand::Migrate(args) => migrate(args).await?,
        AdminCommand::Gc(args) => {
            let report = admin_client(&args.auth)?
                .collect_garbage(args.dry_run)
                .await
                .context("collecting garbage")?;
            println!("{}", gc_summary(&report));
        }
        AdminCommand::Scrub(args) if args.report => {
            let report = admin_client(&args.auth)?
                .damage_report()
                .await
                .context("reading the damage report")?;
            match report.last_scrub_ms {
                Some(ms) => eprintln!("last complete scrub ended at {ms} (ms since the epoch)"),
                None => eprintln!("no scrub has completed yet"),
            }
            if report.damaged.is_empty() {
                println!(
                    "no damaged chunks: every stored chunk checked so far is intact or was repaired"
                );
            }
            for chunk in &report.damaged {
                println!(
                    "chunk\t{}\t{}\tfound_at_ms={}\tfiles={}",
                    chunk.hash,
                    chunk.problem,
                    chunk.found_at_ms,
                    chunk.files.len()
                );
                for file in &chunk.files {
                    println!(
                        "file\t{}\t{}\tversion={}\t{}",
                        file.folder,
                        file.path,
                        file.version,
                        if file.current { "current" } else { "history" }
                    );
                }
            }
        }
        AdminCommand::Scrub(args) => {
            let report = admin_client(&args.auth)?
                .scrub(args.bytes_per_second)
                .await
                .context("scrubbing")?;
            println!("{}", scrub_summary(&report));
            for hash in &report.corrupt {
                println!("corrupt\t{hash}");
            }
            for hash in &report.missing {
                println!("missing\t{hash}");
            }
        }
    }
    Ok(())
}

/// `1.5 MiB`, `512 B`.
fn human_bytes(n_bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n_bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n_bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

fn gc_summary(report: &GcReport) -> String {
    let verb = if report.dry_run {
        "would free"
    } else {
        "freed"
    };
    let packs = if report.n_packs_rewritten + report.n_packs_deleted > 0 {
        format!(
            "; rewrote {} packs of small chunks and deleted {} ({})",
            report.n_packs_rewritten,
            report.n_packs_deleted,
            human_bytes(report.n_pack_bytes_deleted)
        )
    } else {
        String::new()
    };
    format!(
        "{verb} {} chunks ({}, {} bytes) in {:.2} s; {} of them objects without an inventory row; \
         kept {} unreferenced chunks ({}) within the grace period; {} chunks referenced; \
         forgot {} tombstones past the horizon and {} history versions{packs}",
        report.n_chunks,
        human_bytes(report.n_bytes),
        report.n_bytes,
        report.duration_ms as f64 / 1000.0,
        report.n_orphans,
        report.n_kept,
        human_bytes(report.n_kept_bytes),
        report.n_referenced,
        report.n_tombstones_forgotten,
        report.n_history_versions_dropped
    )
}

fn scrub_summary(report: &ScrubReport) -> String {
    format!(
        "checked {} chunks ({}) in {:.2} s: {} corrupt (moved to quarantine), {} missing",
        report.n_checked,
        human_bytes(report.n_bytes),
        report.duration_ms as f64 / 1000.0,
        report.corrupt.len(),
        report.missing.len()
    )
}

/// `admin migrate`: the data directory into PostgreSQL and object storage.
async fn migrate(args: crate::cli::MigrateArgs) -> anyhow::Result<()> {
    use syncfolder_server::migrate::{MigrationProgress, migrate};
    use syncfolder_server::{ChunkStoreLocation, MetadataLocation};
    let pack_chunks_under = args.stores.pack_chunks_under;
    let (metadata, chunks) = super::server::stores(args.stores)?;
    let pack_chunks_under = pack_chunks_under.unwrap_or_else(|| chunks.default_pack_chunks_under());
    let (MetadataLocation::Postgres(metadata), ChunkStoreLocation::ObjectStore(chunks)) =
        (metadata, chunks)
    else {
        anyhow::bail!(
            "admin migrate needs both --metadata-url (PostgreSQL) and --chunk-store (s3://…): \
             where the data directory's metadata and chunks go"
        );
    };
    let report = migrate(
        &args.data,
        &metadata,
        &chunks,
        pack_chunks_under,
        |progress| match progress {
            MigrationProgress::Table { name, n_new } => eprintln!("{name}: {n_new} rows copied"),
            MigrationProgress::Chunks { n_chunks, n_bytes } => {
                eprintln!("chunks: {n_chunks} copied ({n_bytes} bytes)")
            }
        },
    )
    .await
    .context("migrating")?;
    println!(
        "migrated: {} chunks ({} bytes){}; start the servers with the same --metadata-url and --chunk-store",
        report.n_chunks,
        report.n_bytes,
        if report.n_missing > 0 {
            format!(
                ", {} listed chunks had no file and await an agent's upload",
                report.n_missing
            )
        } else {
            String::new()
        }
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
    }

    #[test]
    fn a_dry_run_says_what_it_would_free() {
        let report = GcReport {
            dry_run: true,
            n_chunks: 3,
            n_bytes: 3 << 20,
            ..GcReport::default()
        };
        let summary = gc_summary(&report);
        assert!(
            summary.starts_with("would free 3 chunks (3.0 MiB, 3145728 bytes)"),
            "{summary}"
        );
        assert!(!summary.contains("packs"), "{summary}");
    }

    #[test]
    fn packs_rewritten_and_deleted_are_told_when_there_were_any() {
        let report = GcReport {
            n_packs_rewritten: 2,
            n_packs_deleted: 3,
            n_pack_bytes_deleted: 5 << 20,
            ..GcReport::default()
        };
        let summary = gc_summary(&report);
        assert!(
            summary.ends_with("; rewrote 2 packs of small chunks and deleted 3 (5.0 MiB)"),
            "{summary}"
        );
    }
}
