//! The `psk-edge` command line.

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "psk-edge",
    version,
    about = "Edge server for cellular IoT: TLS 1.3 PSK-only SIM port, WebAssembly functions"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node: SIM port, admin port and functions, on an embedded SQLite store.
    Up(Box<psk_edge::up::UpArgs>),
    /// Act on a device through a running node's admin API.
    #[command(subcommand)]
    Device(psk_edge::commands::DeviceCommand),
    /// Tenant functions: deploy, activate (roll back), list, through the admin API.
    #[command(subcommand)]
    Function(psk_edge::commands::FunctionCommand),
    /// Accounts and their tenant keys, through the admin API.
    #[command(subcommand)]
    Account(psk_edge::commands::AccountCommand),
    /// An account's applications and their MQTT credentials, through the admin API.
    #[command(subcommand)]
    App(psk_edge::commands::AppCommand),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let mut filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,wasmtime=warn,cranelift=warn"));
    // PostgreSQL's notices ("relation … already exists, skipping" on every start) are
    // not the operator's business, whatever RUST_LOG says.
    if let Ok(quiet) = "sqlx::postgres::notice=warn".parse() {
        filter = filter.add_directive(quiet);
    }
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stdout)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!("cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Up(args) => psk_edge::up::run(*args).await,
            Command::Device(command) => psk_edge::commands::device(command).await,
            Command::Function(command) => psk_edge::commands::function(command).await,
            Command::Account(command) => psk_edge::commands::account(command).await,
            Command::App(command) => psk_edge::commands::app(command).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
