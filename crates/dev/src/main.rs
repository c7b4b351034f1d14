//! The `passerelle-dev` command: `demo` (a local FHIR server behind the
//! development EHR launcher, seeded, with Passerelle on it) and `launcher`
//! (the development EHR in front of any FHIR server).

use std::process::ExitCode;

use clap::Parser;
use passerelle_dev::config::{Cli, Command};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    passerelle::telemetry::init(&cli.log.filter);
    let result = match cli.command {
        Command::Demo(args) => passerelle_dev::demo(args).await,
        Command::Launcher(args) => passerelle_dev::launcher::run(args).await,
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("passerelle-dev: {err:#}");
            ExitCode::FAILURE
        }
    }
}
