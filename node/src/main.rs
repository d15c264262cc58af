//! `quorumlite`: run a node, a local dev cluster, or talk to a cluster.
//!
//! `main` stays small: parse the command line, then hand over to the
//! subcommand (`commands/`). `quorumlite --help` lists them.

mod cli;
mod commands;
mod config;
mod metrics;
mod server;

use std::process::ExitCode;

fn main() -> ExitCode {
    let (cli, matches) = cli::parse();
    commands::run(cli, &matches)
}
