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
    if !matches!(cli.command, cli::Command::Node(_) | cli::Command::Dev(_)) {
        // A client command whose output is piped into `head` should end
        // quietly when the pipe closes, as other Unix tools do, not panic
        // in println!. (Rust ignores SIGPIPE so that servers see EPIPE on a
        // closed socket: the node and dev keep that.)
        // SAFETY: restoring the default disposition of a signal at start,
        // before any thread exists.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    commands::run(cli, &matches)
}
