use std::io::IsTerminal as _;

use clap::Parser as _;
use tracer::{
    cli::{Cli, Command},
    commands,
};
use tracing_subscriber::EnvFilter;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_new(&cli.log).unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("conntracer: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Daemon(args) => runtime.block_on(commands::daemon::run(args)),
        Command::Trace(args) => runtime.block_on(commands::trace::run(args)),
        Command::Diagnose(args) => runtime.block_on(commands::diagnose::run(args)),
        Command::Check(args) => return commands::check::run(&args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("conntracer: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
