//! The command line: clap argument types, and the mapping from each subcommand to its library call
//! and exit code. Nothing here does work of its own.

use std::process::ExitCode;

use clap::Parser;

/// Backup and restore for Apache Kafka and its Schema Registry, into one verifiable file.
#[derive(Debug, Parser)]
#[command(name = "kar", version, about, long_about = None)]
pub struct Cli {}

/// Runs the parsed command line; errors become a message on stderr and a non-zero exit code.
pub fn run(_cli: Cli) -> ExitCode {
    ExitCode::SUCCESS
}
