//! Offline replay: fixture files through the engine, with no services at all.
//!
//! Each file is read as a stream, one line at a time, so memory does not grow with its
//! size; gzip is decompressed on the way and binary input is refused (`fixture::input`). A malformed line is counted with its file, line number and reason, and the run
//! goes on, unless `strict` asks to stop at the first one.

use std::fs::File;
use std::io::{BufRead, IsTerminal};
use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressStyle};

use crate::fixture::input::{self, InputError};
use crate::fixture::FixtureReader;
use crate::judge::engine::Engine;
use crate::judge::stats::Stats;

/// Why a replay stopped before the end of its input.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// A file could not be opened.
    #[error("cannot open {file}: {source}")]
    Open {
        /// The file.
        file: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not JSON Lines (binary, or compressed in a format not read).
    #[error("cannot replay {file}: {source}")]
    Input {
        /// The file.
        file: String,
        /// What it holds instead.
        source: InputError,
    },
    /// Reading failed part way.
    #[error("cannot read {file} after line {line}: {source}")]
    Read {
        /// The file.
        file: String,
        /// The last line read whole.
        line: u64,
        /// The OS error.
        source: std::io::Error,
    },
    /// A malformed line in strict mode.
    #[error("{file}:{line}: {reason}")]
    Malformed {
        /// The file.
        file: String,
        /// 1-based line number.
        line: u64,
        /// Why the line was refused.
        reason: String,
    },
}

/// How a replay behaves.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReplayOptions {
    /// Stop at the first malformed line.
    pub strict: bool,
    /// Show a progress line on a terminal.
    pub progress: bool,
}

/// Replays every file (`-` is standard input) into one statistics value.
pub fn replay_files(engine: &Engine, files: &[PathBuf], options: ReplayOptions) -> Result<Stats, ReplayError> {
    let mut stats = engine.new_stats();
    let bar = (options.progress && std::io::stderr().is_terminal()).then(progress_bar);
    for path in files {
        let name = path.display().to_string();
        let lines = if path == Path::new("-") {
            input::open(std::io::stdin().lock())
        } else {
            let file = File::open(path).map_err(|source| ReplayError::Open { file: name.clone(), source })?;
            input::open(file)
        };
        let lines = lines.map_err(|source| ReplayError::Input { file: name.clone(), source })?;
        replay_reader(engine, &mut stats, &name, lines, options, bar.as_ref())?;
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    Ok(stats)
}

/// Replays one stream into `stats`; `name` is how its lines are named in reports.
pub fn replay_reader<R: BufRead>(
    engine: &Engine,
    stats: &mut Stats,
    name: &str,
    reader: R,
    options: ReplayOptions,
    bar: Option<&ProgressBar>,
) -> Result<(), ReplayError> {
    let mut last_line = 0;
    let mut lines = FixtureReader::new(reader);
    // `next_ref` lends each line's evaluation from the reader's buffer until the next call:
    // nothing of a line outlives its turn, so memory stays that of one line.
    while let Some(line) = lines.next_ref() {
        let line = line.map_err(|source| ReplayError::Read { file: name.to_string(), line: last_line, source })?;
        last_line = line.number;
        match line.parsed {
            Ok(evaluation) => {
                engine.record_ref(stats, &evaluation);
            }
            Err(reason) if options.strict => {
                return Err(ReplayError::Malformed {
                    file: name.to_string(),
                    line: line.number,
                    reason: reason.to_string(),
                });
            }
            Err(reason) => stats.record_malformed(name, line.number, reason.to_string()),
        }
        if let Some(bar) = bar {
            if line.number % 16_384 == 0 {
                bar.set_message(format!("{name}: {} lines", line.number));
                bar.tick();
            }
        }
    }
    Ok(())
}

fn progress_bar() -> ProgressBar {
    let bar = ProgressBar::new_spinner();
    if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} ({elapsed})") {
        bar.set_style(style);
    }
    bar
}
