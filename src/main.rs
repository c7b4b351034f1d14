//! The `passerelle` command: `serve`, `demo`, `seed`, `check`.

use std::process::ExitCode;

use clap::Parser;
use passerelle::config::{Cli, Command};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    passerelle::telemetry::init(&cli.log);
    let result = match cli.command {
        Command::Serve(args) => passerelle::http::serve(args).await,
        Command::Demo(args) => passerelle::dev::demo(args).await,
        Command::Seed(args) => passerelle::seed::run(args).await,
        Command::Check(args) => passerelle::check::run(args).await,
        Command::Launcher(args) => passerelle::dev::launcher::run(args).await,
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("passerelle: {err:#}");
            ExitCode::FAILURE
        }
    }
}
