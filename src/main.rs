//! The `sluice` binary: parses arguments, installs logging, runs one command and turns
//! its error into an exit code.

use sluice::cli::Command;

#[tokio::main]
async fn main() {
    let (cli, settings) = match sluice::parse_cli(std::env::args_os()) {
        Ok(parsed) => parsed,
        Err(err) => {
            eprintln!("error: {err}");
            std::process::exit(err.exit_code());
        }
    };
    // Servers log what they do; client commands only warnings, unless RUST_LOG says more.
    let default_level = match cli.command {
        Command::Scheduler(_) | Command::Executor(_) => "info",
        _ => "warn",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    // Colour only on a terminal: log files and collectors get plain text.
    tracing_subscriber::fmt()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();

    if let Err(err) = sluice::execute(cli, &settings).await {
        eprintln!("error: {err}");
        std::process::exit(err.exit_code());
    }
}
