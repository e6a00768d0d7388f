use clap::Parser;

fn main() -> std::process::ExitCode {
    kar::cli::run(kar::cli::Cli::parse())
}
