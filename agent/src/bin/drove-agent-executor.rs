//! Stand-alone supervisor for the agent's own tests: accepts the same
//! `executor --spec FILE` arguments as the hidden `drove executor` subcommand.
#![forbid(unsafe_code)]

use clap::{Parser, Subcommand};

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    Executor(drove_agent::ExecutorArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Executor(args) => drove_agent::run_executor(args),
    }
}
