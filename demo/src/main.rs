//! `tether-demo`: see the crate docs and `docs/demo.md`.

use std::process::ExitCode;

use clap::Parser as _;
use tether_demo::cli::{self, Cli};

fn main() -> ExitCode {
    let cli = Cli::parse();
    ExitCode::from(cli::main(cli))
}
