//! The `device-agent` command line.
//!
//! Exit status: 0 on success, 1 when the input is invalid (one line on stderr names the failed
//! check), 2 for usage errors (from the argument parser).

use std::io::Write;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use serde::Serialize;

use crate::inspect::{self, InspectError};

/// Tether device agent: passkey sign-in for devices without a screen.
#[derive(Debug, Parser)]
#[command(name = "device-agent", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Decode hybrid-transport data exactly as the agent does (interop debugging).
    #[command(subcommand)]
    Inspect(Inspect),
}

/// `inspect` subcommands.
#[derive(Debug, Subcommand)]
pub enum Inspect {
    /// Decode a FIDO:/ URL (what a QR code or a Tether push carries).
    Url {
        /// The URL, starting with FIDO:/ (any case).
        url: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Trial-decrypt a phone's BLE advert (service data under 0xFFF9 or 0xFDE2).
    Advert {
        /// The session's QR secret, 32 hex digits.
        #[arg(long = "qr-secret", value_name = "HEX")]
        qr_secret: String,
        /// The advert's service data, hex (20 bytes; longer adverts use the first 20).
        advert: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Name the tunnel server of a 16-bit domain id.
    Domain {
        /// The id, 0 to 65535.
        id: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// Runs a parsed command, writing results to `out` and the one-line error to `err`.
pub fn run(cli: Cli, out: &mut dyn Write, err: &mut dyn Write) -> ExitCode {
    let result = match cli.command {
        Command::Inspect(Inspect::Url { url, json }) => {
            inspect::url(&url).map(|r| render(&r, json, r.to_text()))
        }
        Command::Inspect(Inspect::Advert {
            qr_secret,
            advert,
            json,
        }) => inspect::advert(&qr_secret, &advert).map(|r| render(&r, json, r.to_text())),
        Command::Inspect(Inspect::Domain { id, json }) => {
            inspect::domain(&id).map(|r| render(&r, json, r.to_text()))
        }
    };
    match result {
        Ok(text) => match out.write_all(text.as_bytes()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(_) => ExitCode::FAILURE,
        },
        Err(e) => {
            let _ = writeln!(err, "error: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

fn render<T: Serialize>(report: &T, json: bool, text: String) -> String {
    if json {
        // Serializing these plain structs cannot fail.
        let mut s = serde_json::to_string_pretty(report).unwrap_or_default();
        s.push('\n');
        s
    } else {
        text
    }
}

fn one_line(e: &InspectError) -> String {
    e.to_string().replace('\n', " ")
}
