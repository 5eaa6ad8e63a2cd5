//! The `syncfolder` binary: parses arguments and wires the library crates
//! together. Logic lives in the libraries.

mod cli;
mod commands;
mod health_endpoint;

use clap::Parser;

use crate::cli::{Cli, Command, LogFormat};

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err:#}");
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Server(args) => commands::server::run(*args).await,
        Command::Agent(args) => commands::agent::run(args).await,
        Command::Folder(command) => commands::admin::folder(command).await,
        Command::Token(command) => commands::admin::token(command).await,
        Command::Admin(command) => commands::storage::run(command).await,
        Command::History(args) => commands::files::history(args).await,
        Command::Restore(args) => commands::files::restore(args).await,
        Command::Status(args) => commands::files::status(args).await,
        Command::Crd => commands::kubernetes::crd(),
        Command::Inject(args) => commands::kubernetes::inject(args),
        Command::Controller(args) => commands::controller::run(*args).await,
    }
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SYNCFOLDER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn,hyper=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}
