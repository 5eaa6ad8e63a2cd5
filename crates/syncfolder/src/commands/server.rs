use std::time::Duration;

use anyhow::Context;
use syncfolder_server::{Limits, Server, ServerConfig, ShipperConfig, TlsFiles};

use crate::cli::ServerArgs;

pub async fn run(args: ServerArgs) -> anyhow::Result<()> {
    let limits = Limits {
        header_timeout: Duration::from_secs(args.header_timeout_seconds),
        body_timeout: Duration::from_secs(args.body_timeout_seconds),
        tls_handshake_timeout: Duration::from_secs(args.tls_handshake_timeout_seconds),
        max_connections: args.max_connections,
        ..Limits::default()
    };
    // clap requires both or neither
    let tls = match (args.tls_cert, args.tls_key) {
        (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
        _ => None,
    };
    let config = ServerConfig {
        listen: args.listen,
        data_dir: args.data,
        admin_token: args.admin_token,
        limits,
        shipper: args.postgres_url.map(ShipperConfig::new),
        tls,
    };
    let server = Server::bind(config).await.context("starting the server")?;
    server
        .serve(super::shutdown_signal())
        .await
        .context("serving")?;
    Ok(())
}
