//! `quorumlite bench` (placeholder until the bench lands).
#[derive(clap::Args, Debug)]
pub struct BenchArgs {}
pub fn run(_args: BenchArgs) -> std::process::ExitCode {
    std::process::ExitCode::FAILURE
}
