//! `shadowdiff drive`: the command line of [`crate::live::drive`]. Checks the flags, the
//! config and every recorded line before anything is sent; turns Ctrl-C into "submit no
//! more" (and a second one into "wait no more"); writes the report, partial or whole.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::bail;
use tokio::signal::unix::{signal, SignalKind};

use super::Output;
use crate::config::live::RecordSettings;
use crate::config::Config;
use crate::live::drive::pace::Pace;
use crate::live::drive::progress::Display;
use crate::live::drive::{self, DriveSettings, Stop, Target};
use crate::live::record::Recorder;

/// Exit code of a drive stopped by Ctrl-C or SIGTERM (128 + SIGINT), after its partial
/// report is written.
pub const EXIT_INTERRUPTED: u8 = 130;

/// Where `--to` sends the evaluations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum To {
    /// The configured shadow (Celery or HTTP), compared with the recorded legacy outcome.
    Shadow,
    /// `[legacy] url` (recovery), compared with the recorded shadow outcome.
    Legacy,
}

/// The flags of `shadowdiff drive`.
#[derive(Debug, clap::Args)]
pub struct DriveArgs {
    /// Recorded evaluations (fixture files, `.gz` too), as `serve` records them.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Config file: the shadow, the legacy service, the route, the rails and the rules.
    #[arg(long)]
    pub config: PathBuf,
    /// Evaluations per second (default: as fast as the rails allow).
    #[arg(long, conflicts_with = "speed")]
    pub rate: Option<f64>,
    /// Replay the recorded submission times this many times faster (2 = twice the recorded rate).
    #[arg(long)]
    pub speed: Option<f64>,
    /// Most evaluations in flight at once (default: `shadow.max_in_flight`).
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Where to send them.
    #[arg(long, value_enum, default_value = "shadow")]
    pub to: To,
    /// Send each with its recorded `eval_id` instead of a fresh `<id>-drive-<run>-<n>`.
    #[arg(long)]
    pub keep_ids: bool,
    /// Append each driven evaluation, as judged, to this fixture file.
    #[arg(long)]
    pub record: Option<PathBuf>,
    /// Where the report goes.
    #[command(flatten)]
    pub output: Output,
}

/// Runs `shadowdiff drive`.
pub fn run(args: DriveArgs) -> anyhow::Result<ExitCode> {
    let pace = match (args.rate, args.speed) {
        (Some(rate), _) if !(rate.is_finite() && rate > 0.0) => bail!("--rate must be above 0, got {rate}"),
        (_, Some(speed)) if !(speed.is_finite() && speed > 0.0) => bail!("--speed must be above 0, got {speed}"),
        (Some(rate), _) => Pace::Rate(rate),
        (_, Some(speed)) => Pace::Speed(speed),
        (None, None) => Pace::Unpaced,
    };
    if args.concurrency == Some(0) {
        bail!("--concurrency must be at least 1");
    }
    let target = match args.to {
        To::Shadow => Target::Shadow,
        To::Legacy => Target::Legacy,
    };
    let config = Config::load(&args.config)?;
    let problems = drive::problems(&config, target);
    if !problems.is_empty() {
        let list: Vec<String> = problems.iter().map(|p| format!("  - {p}")).collect();
        bail!("config {} cannot drive:\n{}", args.config.display(), list.join("\n"));
    }
    if target == Target::Legacy
        && !args.keep_ids
        && config.live.routes[0].eval_id_from == crate::config::live::IdSource::Response
    {
        bail!(
            "config {}: routes[0] eval_id_from = \"response\" (the API assigns ids), so --to legacy cannot send \
             fresh ids nor poll for them; add --keep-ids or use a route that reads the id from the request",
            args.config.display()
        );
    }
    let plan = drive::plan::read(&args.files, &config.live.routes[0], matches!(pace, Pace::Speed(_)))?;
    let recorder = match &args.record {
        Some(path) => Some(Arc::new(Recorder::start(RecordSettings {
            path: path.clone(),
            max_bytes: u64::MAX,
            keep: 0,
            redact: Vec::new(),
        })?)),
        None => None,
    };
    let settings = DriveSettings {
        pace,
        concurrency: args.concurrency.unwrap_or(config.live.max_in_flight),
        target,
        fresh_ids: !args.keep_ids,
        grace: config.live.shutdown_grace,
        display: Display::choose(std::io::stderr().is_terminal(), std::env::var_os("NO_COLOR").as_deref()),
    };
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = config.live.worker_threads {
        runtime.worker_threads(threads);
    }
    let runtime = runtime.enable_all().build()?;
    let files = args.files.iter().map(|f| f.display().to_string()).collect();
    let driven = runtime.block_on(async {
        let signals = Stop::default();
        watch_signals(signals.clone(), settings.grace)?;
        drive::run(config, files, plan, settings, recorder.clone(), signals).await
    })?;
    // Let the evaluations abandoned in flight go with the runtime, not hold the exit.
    runtime.shutdown_background();
    if let Some(recorder) = recorder {
        recorder.finish();
    }
    let interrupted = driven.report.drive.as_ref().is_some_and(|d| d.interrupted);
    let code = args.output.deliver(&driven.report)?;
    print!("{}", crate::report::drive::render_text(&driven.report));
    Ok(if interrupted { ExitCode::from(EXIT_INTERRUPTED) } else { code })
}

/// First SIGINT or SIGTERM: submit no more; the second: stop waiting for what is in flight.
fn watch_signals(signals: Stop, grace: std::time::Duration) -> anyhow::Result<()> {
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    tokio::spawn(async move {
        for round in 0..2 {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            if round == 0 {
                eprintln!(
                    "shadowdiff drive: stopping: no more submissions; waiting up to {} ms for those in flight \
                     (interrupt again to stop waiting)",
                    grace.as_millis()
                );
                signals.stop.cancel();
            } else {
                signals.abort.cancel();
            }
        }
    });
    Ok(())
}
