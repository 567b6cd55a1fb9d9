use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;

/// Replay and the proxy allocate many small JSON trees; mimalloc handles that pattern
/// markedly faster than the system allocator (see the README's figures).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = shadowdiff::cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SHADOWDIFF_LOG").unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(shadowdiff::cli::log_colours(
            std::io::stderr().is_terminal(),
            std::env::var_os("NO_COLOR").as_deref(),
        ))
        .init();
    match shadowdiff::cli::run(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("shadowdiff: {}", shadowdiff::cli::error_message(&error));
            ExitCode::from(shadowdiff::cli::EXIT_USAGE)
        }
    }
}
