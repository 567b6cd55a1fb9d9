//! The drive's progress on standard error: a bar on a terminal (done / total, rate, ETA,
//! mismatches so far), a plain line every few seconds otherwise, so that logs redirected to
//! a file or a CI job stay plain text. No ANSI off a terminal or under `NO_COLOR`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use tokio_util::sync::CancellationToken;

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Display {
    /// A redrawn bar (a terminal that takes colours).
    Bar,
    /// A plain line every [`LINE_EVERY`].
    Lines,
}

/// Time between two plain progress lines.
pub const LINE_EVERY: Duration = Duration::from_secs(5);

impl Display {
    /// A bar only for a person at a terminal that takes colours (see
    /// [`crate::cli::log_colours`]); plain lines otherwise.
    pub fn choose(stderr_is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> Display {
        if crate::cli::log_colours(stderr_is_terminal, no_color) {
            Display::Bar
        } else {
            Display::Lines
        }
    }
}

/// Counters the drive's tasks update and the progress display reads.
#[derive(Debug, Default)]
pub struct Counters {
    /// Evaluations submitted.
    pub submitted: AtomicU64,
    /// Evaluations finished: judged, or not compared.
    pub done: AtomicU64,
    /// Judged as a mismatch.
    pub mismatches: AtomicU64,
}

/// One progress line: `120/2000 done, 198.5/s, 3 mismatches, ETA 9 s`.
pub fn line(counters: &Counters, total: u64, elapsed: Duration) -> String {
    let done = counters.done.load(Ordering::Relaxed);
    let submitted = counters.submitted.load(Ordering::Relaxed);
    let mismatches = counters.mismatches.load(Ordering::Relaxed);
    let seconds = elapsed.as_secs_f64();
    let rate = if seconds > 0.0 { submitted as f64 / seconds } else { 0.0 };
    let done_rate = if seconds > 0.0 { done as f64 / seconds } else { 0.0 };
    let eta = if done_rate > 0.0 {
        format!("{:.0} s", total.saturating_sub(done) as f64 / done_rate)
    } else {
        "-".to_owned()
    };
    format!("{done}/{total} done, {submitted} submitted, {rate:.1}/s, {mismatches} mismatches, ETA {eta}")
}

/// Shows progress until `stop` is cancelled, then clears the bar.
pub async fn show(display: Display, counters: Arc<Counters>, total: u64, started: Instant, stop: CancellationToken) {
    let bar = (display == Display::Bar).then(|| {
        let bar = ProgressBar::new(total);
        if let Ok(style) = ProgressStyle::with_template("{bar:30} {msg}") {
            bar.set_style(style);
        }
        bar
    });
    let every = if bar.is_some() { Duration::from_millis(250) } else { LINE_EVERY };
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        let text = line(&counters, total, started.elapsed());
        match &bar {
            Some(bar) => {
                bar.set_position(counters.done.load(Ordering::Relaxed));
                bar.set_message(text);
            }
            None => eprintln!("drive: {text}"),
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_says_done_rate_mismatches_and_eta() {
        let counters = Counters::default();
        assert_eq!(line(&counters, 10, Duration::ZERO), "0/10 done, 0 submitted, 0.0/s, 0 mismatches, ETA -");
        counters.submitted.store(400, Ordering::Relaxed);
        counters.done.store(300, Ordering::Relaxed);
        counters.mismatches.store(2, Ordering::Relaxed);
        assert_eq!(
            line(&counters, 2000, Duration::from_secs(2)),
            "300/2000 done, 400 submitted, 200.0/s, 2 mismatches, ETA 11 s"
        );
    }

    #[test]
    fn a_bar_only_for_a_terminal_that_takes_colours() {
        assert_eq!(Display::choose(true, None), Display::Bar);
        assert_eq!(Display::choose(false, None), Display::Lines);
        assert_eq!(Display::choose(true, Some(std::ffi::OsStr::new("1"))), Display::Lines);
    }
}
