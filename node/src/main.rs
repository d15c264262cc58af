//! `quorumlite`: run a node, a local dev cluster, or talk to a cluster.
//!
//! `main` stays small: parse the command line, then hand over to the
//! subcommand (`commands/`). `quorumlite --help` lists them.

mod cli;
mod commands;
mod config;
mod logging;
mod metrics;
mod server;
mod tokens;

use std::process::ExitCode;

/// mimalloc instead of glibc's malloc: with 32 clients reading, glibc's
/// malloc and free took a tenth of a node's CPU and of the bench client's
/// (`malloc_consolidate`, arena locks). SQLite keeps its own allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    allocator::purge_freed_memory_at_once();
    let (cli, matches) = cli::parse();
    commands::run(cli, &matches)
}

/// How mimalloc gives memory back to the system.
mod allocator {
    use std::ffi::{c_int, c_long};

    extern "C" {
        fn mi_option_set(option: c_int, value: c_long);
        #[cfg(test)]
        fn mi_option_get(option: c_int) -> c_long;
    }

    /// `mi_option_purge_delay` in `mi_option_e` of mimalloc 3.x (and
    /// 2.x): libmimalloc-sys 0.1.49, `c_src/mimalloc/v3/include/mimalloc.h`.
    /// The test below checks the index still names it.
    const PURGE_DELAY: c_int = 15;

    /// mimalloc purges freed pages a second after they empty, and only
    /// when the thread that freed them allocates again. A read thread that
    /// built a 64 MiB result and then went idle kept it: a node's
    /// anonymous memory stayed 225 MB above idle after one such read.
    /// Purged at once, it comes back to within a few MB (measured by
    /// `node/tests/heavy_reads.rs`; the read throughput it costs is in
    /// docs/benchmarks.md).
    pub fn purge_freed_memory_at_once() {
        // SAFETY: setting a mimalloc option is thread-safe and valid at
        // any time; PURGE_DELAY is a valid option index (tested).
        unsafe { mi_option_set(PURGE_DELAY, 0) }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn the_option_index_names_the_purge_delay() {
            // Its default is 1000 ms in 3.x, 10 in 2.x; no neighbour's is.
            // SAFETY: reading an option is always valid.
            let default = unsafe { mi_option_get(PURGE_DELAY) };
            assert!(
                [1000, 10, 0].contains(&default),
                "option {PURGE_DELAY} = {default}"
            );
            purge_freed_memory_at_once();
            // SAFETY: as above.
            assert_eq!(unsafe { mi_option_get(PURGE_DELAY) }, 0);
        }
    }
}
