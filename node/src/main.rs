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

/// mimalloc instead of glibc's malloc: with 32 clients reading, glibc's
/// malloc and free took a tenth of a node's CPU and of the bench client's
/// (`malloc_consolidate`, arena locks). SQLite keeps its own allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let (cli, matches) = cli::parse();
    commands::run(cli, &matches)
}
