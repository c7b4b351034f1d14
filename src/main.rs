//! The `passerelle` command: `serve`, `seed`, `check`. (The demo and the
//! development EHR launcher are `passerelle-dev`, in `crates/dev`.)

use std::process::ExitCode;

use clap::Parser;
use passerelle::config::{Cli, Command};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    passerelle::telemetry::init(&cli.log.filter);
    let result = match cli.command {
        Command::Serve(args) => passerelle::http::serve(args).await,
        Command::Seed(args) => passerelle::seed::run(args).await,
        Command::Check(args) => passerelle::check::run(args).await,
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("passerelle: {err:#}");
            ExitCode::FAILURE
        }
    }
}
