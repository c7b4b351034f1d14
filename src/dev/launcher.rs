//! Development EHR launcher (work in progress).

use std::process::ExitCode;

use crate::config::LauncherArgs;

/// `passerelle launcher`.
pub async fn run(_args: LauncherArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("the development launcher is not built yet")
}
