use anyhow::Context;
use syncfolder_server::{Limits, Server, ServerConfig, ShipperConfig};

use crate::cli::ServerArgs;

pub async fn run(args: ServerArgs) -> anyhow::Result<()> {
    let config = ServerConfig {
        listen: args.listen,
        data_dir: args.data,
        admin_token: args.admin_token,
        limits: Limits::default(),
        shipper: args.postgres_url.map(ShipperConfig::new),
    };
    let server = Server::bind(config).await.context("starting the server")?;
    server
        .serve(super::shutdown_signal())
        .await
        .context("serving")?;
    Ok(())
}
