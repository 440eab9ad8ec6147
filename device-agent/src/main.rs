//! `device-agent`: see the crate docs.

use std::process::ExitCode;

use clap::Parser;
use device_agent::cli::{Cli, run};

fn main() -> ExitCode {
    let cli = Cli::parse();
    run(
        cli,
        &mut std::io::stdout().lock(),
        &mut std::io::stderr().lock(),
    )
}
