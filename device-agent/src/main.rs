//! `device-agent`: see the crate docs and [`device_agent::cli`].

use std::io::IsTerminal as _;
use std::process::ExitCode;

use clap::Parser;
use device_agent::cli::{Cli, run_with};

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Unlocked handles: the spinner draws on stderr from its own thread.
    let terminal = std::io::stderr().is_terminal();
    run_with(
        cli,
        &mut std::io::stdout(),
        &mut std::io::stderr(),
        terminal,
    )
}
