use std::time::Duration;

use anyhow::Context;
use syncfolder_server::{
    ChunkStoreLocation, Limits, Maintenance, MetadataLocation, ObjectStoreConfig, PostgresMetadata,
    Server, ServerConfig, ShipperConfig, TlsFiles,
};

use crate::cli::{ServerArgs, StoreArgs};

pub async fn run(args: ServerArgs) -> anyhow::Result<()> {
    raise_open_files_limit(args.max_connections);
    let limits = Limits {
        header_timeout: Duration::from_secs(args.header_timeout_seconds),
        body_timeout: Duration::from_secs(args.body_timeout_seconds),
        tls_handshake_timeout: Duration::from_secs(args.tls_handshake_timeout_seconds),
        max_connections: args.max_connections,
        max_connection_age: (!args.max_connection_age.is_zero()).then_some(args.max_connection_age),
        ..Limits::default()
    };
    // clap requires both or neither
    let tls = match (args.tls_cert, args.tls_key) {
        (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
        _ => None,
    };
    // a duration of 0 turns the job off
    let every = |interval: Duration| (!interval.is_zero()).then_some(interval);
    let maintenance = Maintenance {
        gc_interval: every(args.gc_interval),
        gc_grace: args.gc_grace,
        tombstone_retention: every(args.tombstone_retention),
        scrub_interval: every(args.scrub_interval),
        scrub_bytes_per_second: args.scrub_bytes_per_second,
        lease_ttl: args.lease_ttl,
    };
    let pack_chunks_under = args.stores.pack_chunks_under;
    let (metadata, chunk_store) = stores(args.stores)?;
    let config = ServerConfig {
        pack_chunks_under,
        listen: args.listen,
        data_dir: args.data,
        metadata,
        chunk_store,
        admin_token: args.admin_token,
        limits,
        shipper: args.postgres_url.map(ShipperConfig::new),
        tls,
        maintenance,
    };
    let server = Server::bind(config).await.context("starting the server")?;
    server
        .serve(super::shutdown_signal())
        .await
        .context("serving")?;
    Ok(())
}

/// The metadata and chunk locations the flags name (the data directory's
/// own by default).
pub fn stores(args: StoreArgs) -> anyhow::Result<(MetadataLocation, ChunkStoreLocation)> {
    let metadata = match args.metadata_url {
        None => MetadataLocation::DataDir,
        Some(url) => {
            let password = match (args.metadata_password_file, args.metadata_password) {
                (Some(file), _) => Some(
                    std::fs::read_to_string(&file)
                        .with_context(|| {
                            format!("reading the metadata password from {}", file.display())
                        })?
                        .trim_end_matches(['\r', '\n'])
                        .to_owned(),
                ),
                (None, password) => password,
            };
            MetadataLocation::Postgres(PostgresMetadata {
                password,
                max_connections: args.metadata_max_connections,
                ..PostgresMetadata::new(url)
            })
        }
    };
    let chunk_store = match args.chunk_store {
        None => ChunkStoreLocation::DataDir,
        Some(url) => {
            let mut object_store = ObjectStoreConfig::from_url(&url)?;
            object_store.endpoint = args.chunk_store_endpoint.or(object_store.endpoint);
            object_store.region = args.chunk_store_region.or(object_store.region);
            if args.chunk_store_allow_http {
                object_store.allow_http = Some(true);
            }
            ChunkStoreLocation::ObjectStore(object_store)
        }
    };
    Ok((metadata, chunk_store))
}

/// Every connection is an open file, and containers often start with a soft
/// limit of 1024: raise it to the hard limit, and say so when even that is
/// below what `--max-connections` allows.
fn raise_open_files_limit(max_connections: usize) {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        limit.current = limit.maximum;
        if let Err(err) = setrlimit(Resource::Nofile, limit) {
            tracing::warn!(%err, "could not raise the limit on open files");
        }
    }
    let current = getrlimit(Resource::Nofile).current;
    if let Some(current) = current
        && current < max_connections as u64 + 64
    {
        tracing::warn!(
            open_files_limit = current,
            max_connections,
            "the limit on open files is below --max-connections: connections past it will fail"
        );
    }
}
