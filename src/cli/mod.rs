//! The command line: `replay`, `check-config`, `serve`, `drive`, and the fleet commands
//! `report`, `sampling` and `window`.

pub mod drive;
pub mod replay;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::config::Config;
use crate::judge::engine::Engine;
use crate::report::{self, Report, Source};
use replay::ReplayOptions;

#[cfg(test)]
mod tests;

/// Exit code for bad usage, unreadable input or a bad config (EX_USAGE is 64; the
/// documented contract of this tool is 2, like clap's own usage errors).
pub const EXIT_USAGE: u8 = 2;
/// Exit code of `replay --gate` when Celery is not ready.
pub const EXIT_NOT_READY: u8 = 1;

/// shadowdiff compares a legacy evaluation queue with Celery, live or from recordings.
#[derive(Debug, Parser)]
#[command(name = "shadowdiff", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Where a report goes, and whether its verdict sets the exit code.
#[derive(Debug, clap::Args)]
pub struct Output {
    /// Write the JSON report here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write the HTML report here.
    #[arg(long)]
    pub html: Option<PathBuf>,
    /// Exit 1 when the readiness gate does not pass.
    #[arg(long)]
    pub gate: bool,
}

impl Output {
    /// Writes the report where asked, prints the summary, and says how to exit.
    fn deliver(self, report: &Report) -> anyhow::Result<ExitCode> {
        if let Some(path) = self.json {
            std::fs::write(&path, report.to_json()).with_context(|| format!("cannot write {}", path.display()))?;
        }
        if let Some(path) = self.html {
            std::fs::write(&path, report::html::render(report))
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        print!("{}", report::text::render(report));
        Ok(if self.gate && !report.readiness.ready { ExitCode::from(EXIT_NOT_READY) } else { ExitCode::SUCCESS })
    }
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Compare recorded evaluations (JSON Lines fixtures) and report.
    Replay {
        /// Fixture files; `-` reads standard input.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Config file (defaults apply without one).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Where the report goes.
        #[command(flatten)]
        output: Output,
        /// Stop at the first malformed line (exit 2).
        #[arg(long)]
        strict: bool,
    },
    /// Run the sidecar proxy in front of the legacy upstream, mirroring to the shadow.
    Serve {
        /// Config file.
        #[arg(long)]
        config: PathBuf,
    },
    /// Send recorded evaluations again, at a chosen pace, to the shadow (or to legacy) and
    /// compare each new outcome with the recorded outcome of the other system.
    Drive(drive::DriveArgs),
    /// Merge every sidecar of a fleet's run into one report.
    Report {
        /// The fleet's Redis, `redis://[user:password@]host:port/db` or `rediss://…` (TLS
        /// options as query parameters, e.g. `?ssl_ca_certs=/etc/ca.pem`).
        #[arg(long)]
        fleet: String,
        /// The run to merge.
        #[arg(long, default_value = "default")]
        run: String,
        /// The comparison window (default: the run's current one).
        #[arg(long)]
        window: Option<u64>,
        /// Config whose comparison rules the instances must share (defaults without one).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Where the report goes.
        #[command(flatten)]
        output: Output,
    },
    /// Set the sampling percent of every sidecar of a fleet's run (0 rolls back at once).
    Sampling {
        /// Percent of evaluations mirrored, 0 to 100.
        percent: f64,
        /// The fleet's Redis.
        #[arg(long)]
        fleet: String,
        /// The run.
        #[arg(long, default_value = "default")]
        run: String,
    },
    /// Start a new comparison window for a fleet's run (earlier windows stay readable).
    Window {
        /// The fleet's Redis.
        #[arg(long)]
        fleet: String,
        /// The run.
        #[arg(long, default_value = "default")]
        run: String,
    },
    /// Validate a config file as `serve` would, and print every problem.
    CheckConfig {
        /// The config file.
        path: PathBuf,
    },
}

/// An error and its causes for the terminal, each said once: `cannot open x.jsonl: No such
/// file or directory (os error 2)`. Many errors already quote their source in their own
/// message (a `thiserror` `{source}`), so a cause whose text the line already holds is
/// not repeated.
pub fn error_message(error: &anyhow::Error) -> String {
    let mut message = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        let text = text.trim_end();
        if message.contains(text) {
            continue;
        }
        if !message.is_empty() {
            message.push_str(": ");
        }
        message.push_str(text);
    }
    message
}

/// Whether logs are coloured: only for a person at a terminal, and never when `NO_COLOR`
/// is set to anything but the empty string (no-color.org), so that logs redirected to a
/// file or a collector stay plain text.
pub fn log_colours(stderr_is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|value| value.is_empty())
}

/// Loads the config, or the defaults when no path is given.
pub fn load_config(path: Option<&PathBuf>) -> Result<Config, crate::config::ConfigError> {
    match path {
        Some(path) => Config::load(path),
        None => Ok(Config::default()),
    }
}

/// Runs a parsed command line; errors are the caller's to print (exit 2).
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Replay { files, config, output, strict } => {
            let engine = Engine::new(load_config(config.as_ref())?);
            let stats = replay::replay_files(&engine, &files, ReplayOptions { strict, progress: true })?;
            let source = Source { mode: "replay", files: files.iter().map(|f| f.display().to_string()).collect() };
            let report = Report::build(&engine, &stats, source);
            output.deliver(&report)
        }
        Command::Serve { config } => {
            // Everything `check-config` checks, before any port is bound.
            let loaded = Config::load_to_serve(&config)?;
            let runtime = serve_runtime()?;
            runtime.block_on(crate::live::serve::run(config, loaded))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Drive(args) => drive::run(args),
        Command::Report { fleet, run, window, config, output } => {
            let engine = Engine::new(load_config(config.as_ref())?);
            let report = small_runtime()?.block_on(async {
                let client = connect(&fleet, &run).await?;
                let window = match window {
                    Some(window) => window,
                    None => client.window().await?,
                };
                let states = client.load_all(window).await?;
                anyhow::Ok(crate::live::fleet::merged_report(
                    &engine,
                    &run,
                    window,
                    states,
                    std::time::SystemTime::now(),
                ))
            })?;
            output.deliver(&report)
        }
        Command::Sampling { percent, fleet, run } => {
            if !(0.0..=100.0).contains(&percent) {
                anyhow::bail!("sampling percent must be 0 to 100, got {percent}");
            }
            small_runtime()?
                .block_on(async { anyhow::Ok(connect(&fleet, &run).await?.set_sampling(percent).await?) })?;
            println!("run {run}: sampling {percent}% (every sidecar applies it within its snapshot_ms)");
            Ok(ExitCode::SUCCESS)
        }
        Command::Window { fleet, run } => {
            let window =
                small_runtime()?.block_on(async { anyhow::Ok(connect(&fleet, &run).await?.new_window().await?) })?;
            println!("run {run}: window {window} started");
            Ok(ExitCode::SUCCESS)
        }
        Command::CheckConfig { path } => {
            Config::load_to_serve(&path)?;
            println!("{}: ok", path.display());
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The runtime `serve` starts on: a `current_thread` one, where every task runs on the
/// thread that woke it, with no work-stealing queues and no cross-thread wake-ups (measured
/// 10-20% less CPU per proxied request than a one-worker multi-thread runtime: the README's
/// "Speed"). With `worker_threads` above 1, `serve` starts the other proxy threads itself,
/// each with a runtime of this kind and a listener of its own.
fn serve_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread().enable_all().build()?)
}

/// A one-thread runtime for the fleet commands.
fn small_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread().enable_all().build()?)
}

async fn connect(url: &str, run: &str) -> anyhow::Result<crate::live::fleet::Fleet> {
    let ttl = std::time::Duration::from_secs(7 * 24 * 3600);
    let redis = crate::celery::redis_target::RedisSpec::url(url);
    Ok(crate::live::fleet::Fleet::connect(&redis, run, ttl).await?)
}
