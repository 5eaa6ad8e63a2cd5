use std::time::Duration;

use anyhow::Context;
use syncfolder_agent::{Agent, AgentConfig};

use crate::cli::AgentArgs;
use crate::health_endpoint;

pub async fn run(args: AgentArgs) -> anyhow::Result<()> {
    let mut config = AgentConfig::new(
        &args.auth.server.server,
        &args.auth.folder,
        &args.auth.token,
        args.path,
    );
    config.ca_cert = args.auth.server.ca_cert;
    config.state_dir = args.state_dir;
    config.agent_id = args.agent_id;
    config.mode = args.mode;
    config.rescan_interval = Duration::from_secs(args.rescan_interval.max(1));
    config.debounce = Duration::from_millis(args.debounce_ms);
    config.parallelism = args.parallelism.max(1);
    config.watch = !args.no_watch;
    config.max_delete_percent = args.max_delete_percent;
    let agent = Agent::new(config);
    let endpoint = match args.metrics_listen {
        Some(addr) => Some(
            health_endpoint::start(addr, agent.stats())
                .await
                .with_context(|| format!("serving metrics on {addr}"))?,
        ),
        None => None,
    };
    let result = agent
        .run(super::shutdown_signal())
        .await
        .context("agent stopped");
    if let Some(endpoint) = endpoint {
        endpoint.abort();
    }
    result
}
